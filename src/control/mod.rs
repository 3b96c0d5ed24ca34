//! The control side: configuration and the snapshots workers read, health checks,
//! statistics, Prometheus metrics and logging.

pub mod config;
pub mod health;
pub mod http;
pub mod log;
pub mod metrics;
pub mod snapshot;
pub mod stats;

pub use config::Config;
pub use snapshot::Snapshot;
