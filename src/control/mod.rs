//! Configuration and the snapshots workers read.

pub mod config;
pub mod http;
pub mod log;
pub mod metrics;
pub mod snapshot;
pub mod stats;

pub use config::Config;
pub use snapshot::Snapshot;
