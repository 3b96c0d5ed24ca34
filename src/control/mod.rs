//! The control side: configuration and building from it the snapshots workers read, health
//! checks, statistics, Prometheus metrics, the ipvsadm-style control socket, and which
//! snooped ARP reaches the workers.
//!
//! Control talks to the workers only through shared types: it builds a
//! [`Snapshot`] ([`snapshot`] adds `Snapshot::build` from a
//! [`Config`]) and reads [`CoreReport`](crate::report::CoreReport)s; the daemon runs the
//! workers and carries both between them. The dataplane never imports control.

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
pub mod tunnel_probe;
pub mod vip_routes;

// The snapshot built from a `Config`: tests and benchmarks write
// `xlb::control::{Config, Snapshot}` and read it as that pair.
pub use crate::snapshot::Snapshot;
pub use config::Config;
