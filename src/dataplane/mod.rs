//! The packet pipeline and the drivers that feed it.
//!
//! [`Pipeline::process`] is the one place a packet decision is made; `io/` holds the drivers
//! (pcap replay now, AF_XDP next) that call it. See [`pipeline`] for the contract.
//!
//! Only what the appliance runs (`xlb run`, `xlb replay`) lives here; the benchmark's programs
//! (the null forwarder among them) are in [`crate::bench`].

pub mod counters;
pub mod io;
pub mod pipeline;
pub mod worker;

pub use counters::{BackendCounters, Counters, DropReason, PassiveCounters, Stat};
pub use pipeline::{BATCH, CoreSlot, IfaceId, Pipeline, Verdict};
