//! The packet pipeline and the drivers that feed it.
//!
//! [`Pipeline::process`] is the one place a packet decision is made; `io/` holds the drivers
//! (pcap replay now, AF_XDP next) that call it. See [`pipeline`] for the contract.
//!
//! Only what the appliance runs (`xlb run`, `xlb replay`) lives here; the benchmark's programs
//! (the null forwarder among them) are in [`crate::bench`].
//!
//! The dataplane never imports control. It reads the [`Snapshot`](crate::snapshot::Snapshot)
//! control builds and publishes [`CoreReport`](crate::report::CoreReport)s control reads, both
//! defined in modules of their own ([`crate::snapshot`], [`crate::report`]); its I/O set-up
//! logs through [`crate::log`]. A test of the crate's layers (`layers`) scans every file
//! under `src/dataplane/` and fails listing each line that names the control module (test
//! modules excepted: they may build a fixture snapshot from config text).

pub mod io;
pub mod pipeline;
pub mod worker;

pub use pipeline::{CoreSlot, Pipeline, Verdict};
// The pipeline's interface is made of these (`process` takes an `IfaceId`, a verdict names
// one or a `DropReason`, `process_batch` takes up to `BATCH` frames, its counters are read
// by `Stat` and per backend): drivers, tests and benchmarks find them here with the
// pipeline. The crate itself names them where they are defined.
pub use crate::report::{BATCH, BackendCounters, DropReason, Stat};
pub use crate::snapshot::IfaceId;

use crate::report::Counters;

impl Counters {
    /// Counts a verdict other than `Tx` (pass, drop by reason, held, encapsulated); out of line, so the
    /// forwarding path, which counts its `Tx` verdicts a batch at a time, stays small. Here,
    /// beside [`Verdict`], so that the counters (in [`crate::report`]) need not know it.
    #[cold]
    #[inline(never)]
    pub(crate) fn count_other(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Tx(_) => self.add(Stat::TxPackets, 1),
            Verdict::Pass => self.add(Stat::PassPackets, 1),
            Verdict::Drop(reason) => self.drop(reason),
            Verdict::Held => self.add(Stat::HeldPackets, 1),
            Verdict::Encapsulated => self.add(Stat::TunnelledPackets, 1),
        }
    }
}
