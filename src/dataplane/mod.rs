//! The packet pipeline and the drivers that feed it.
//!
//! [`Pipeline::process`] is the one place a packet decision is made; `io/` holds the drivers
//! (pcap replay now, AF_XDP next) that call it. See [`pipeline`] for the contract.

pub mod counters;
pub mod io;
pub mod null;
pub mod pipeline;
pub mod worker;

pub use counters::{BackendCounters, Counters, DropReason, PassiveCounters, Stat};
pub use pipeline::{BATCH, CoreSlot, Pipeline, Verdict};
// The pipeline's interface is made of it (`process` takes one, `Verdict::Tx` names one);
// drivers, tests and benchmarks find it here with the pipeline.
pub use crate::snapshot::IfaceId;
