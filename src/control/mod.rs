//! Configuration and the snapshots workers read.

pub mod config;
pub mod ipvsadm;
pub mod snapshot;
pub mod socket;
pub mod stats;

pub use config::Config;
pub use snapshot::Snapshot;
