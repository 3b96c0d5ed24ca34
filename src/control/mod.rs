//! The control side: configuration and the snapshots workers read, health checks,
//! statistics, Prometheus metrics, the ipvsadm-style control socket, and which
//! snooped ARP reaches the workers.

pub mod config;
pub mod health;
pub mod http;
pub mod ipvsadm;
pub mod metrics;
pub mod neighbors;
pub mod probe_routes;
pub mod snapshot;
pub mod socket;
pub mod state;
pub mod stats;

pub use crate::snapshot::Snapshot;
pub use config::Config;
