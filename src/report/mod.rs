//! What workers publish and control reads: a core's counters ([`Counters`]: totals by
//! [`Stat`], drops by [`DropReason`], per backend [`BackendCounters`] and
//! [`PassiveCounters`]), its ports' I/O figures ([`PortStats`]) and its batch latency
//! ([`BatchLatency`]), sent together as one [`CoreReport`] a few times a second.
//!
//! This module is shared ground, like [`crate::snapshot`]: the dataplane fills these types
//! and control sums, stores and prints them, so they live in neither, and this module
//! imports neither `control` nor `dataplane`, and the dataplane never imports control (the
//! crate's `layers` tests hold both to it). [`BATCH`] is here because the batch-size
//! histogram of [`PortStats`] is sized by it.
//!
//! Invariants: the counters a core reports are written by that core only (its pipeline,
//! its worker, its ports), as plain integers; control works on copies that arrived by
//! channel, never on a worker's own. Counting is a few arithmetic operations on arrays
//! allocated up front: no allocation on the hot path, and out-of-range batch sizes and
//! latencies are clamped, never refused.

use std::net::Ipv4Addr;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::snapshot::IfaceId;

pub mod counters;

pub use counters::{BackendCounters, Counters, DropReason, PassiveCounters, Stat};

/// Frames a worker receives at once and [`crate::dataplane::Pipeline::process_batch`]
/// prefetches for together; the last bucket of [`PortStats::rx_batch_sizes`] is full
/// batches of it.
pub const BATCH: usize = 64;

/// A port's I/O counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Receive calls that returned frames.
    pub batches: u64,
    /// Frames dropped because the TX ring was full.
    pub tx_ring_full: u64,
    /// Frames to send with no free frame to copy them into.
    pub send_no_frame: u64,
    /// Frames to send larger than a UMEM frame.
    pub send_too_big: u64,
    /// Flushes that had to kick the kernel to transmit (each makes one or more
    /// [`PortStats::tx_kicks`]).
    pub tx_wakeups: u64,
    /// Transmit kicks (`sendto` calls): at least one per flush that needs one, more while the
    /// kernel stops early with frames still on the TX ring (bounded per flush).
    pub tx_kicks: u64,
    /// Kicks the kernel answered EAGAIN: it stopped early (its per-call budget, a full
    /// completion ring, a busy driver queue) and frames may remain on the TX ring.
    pub tx_kick_again: u64,
    /// Kicks the kernel answered EBUSY: in copy mode the driver dropped a frame (its
    /// completion comes back, the frame never left).
    pub tx_kick_dropped: u64,
    /// Kicks that failed otherwise (ENOBUFS: no memory for an skb; ENETDOWN: the interface
    /// is down; anything else).
    pub tx_kick_errors: u64,
    /// Copy-mode flushes that ended with frames still on the TX ring (kick bound reached,
    /// or an error): the next flush or wait sends them.
    pub tx_backlog_flushes: u64,
    /// Frames on the TX ring, not yet taken by the kernel, at the end of the last flush (a
    /// gauge, not a count).
    pub tx_backlog: u64,
    /// Fill-ring wakeups (`poll` with a zero timeout) when the kernel asked for one.
    pub rx_wakeups: u64,
    /// Waits for frames (`poll(2)` in [`Port::wait`](crate::dataplane::worker::Port::wait)
    /// and [`Port::wait_any`](crate::dataplane::worker::Port::wait_any); one `poll` over
    /// several ports is counted once, on the first).
    pub waits: u64,
    /// Receive batches by size: index `i` counts batches of `2^i ..= 2^(i+1) - 1` frames
    /// (the last, [`BATCH`] itself, is full batches). Their sum is `batches`.
    pub rx_batch_sizes: [u64; BATCH_SIZE_BUCKETS],
    /// Frames the pipeline passed that were handed to the kernel (AF_XDP: written to the
    /// interface's TAP device).
    pub pass_reinjected: u64,
    /// Frames the pipeline passed that the kernel refused (the TAP write failed): lost.
    pub pass_reinject_failed: u64,
    /// Frames the pipeline passed that the port had no way to hand to the kernel (no TAP
    /// device): lost, never counted as delivered.
    pub pass_unreinjectable: u64,
    /// Frames the kernel dropped on their way into the receive ring (AF_XDP's
    /// `XDP_STATISTICS` `rx_dropped`): e.g. a full receive ring, or frames longer than a UMEM
    /// frame on a socket without multi-buffer.
    pub rx_kernel_dropped: u64,
    /// Multi-buffer AF_XDP: received packets dropped because they spanned more buffers than
    /// a packet may ([`crate::dataplane::io::afxdp::xsk::MAX_PACKET_BUFFERS`]) or arrived cut
    /// off.
    pub rx_too_many_buffers: u64,
}

impl PortStats {
    pub fn add(&mut self, other: &PortStats) {
        self.rx_packets += other.rx_packets;
        self.tx_packets += other.tx_packets;
        self.batches += other.batches;
        self.tx_ring_full += other.tx_ring_full;
        self.send_no_frame += other.send_no_frame;
        self.send_too_big += other.send_too_big;
        self.tx_wakeups += other.tx_wakeups;
        self.tx_kicks += other.tx_kicks;
        self.tx_kick_again += other.tx_kick_again;
        self.tx_kick_dropped += other.tx_kick_dropped;
        self.tx_kick_errors += other.tx_kick_errors;
        self.tx_backlog_flushes += other.tx_backlog_flushes;
        self.tx_backlog += other.tx_backlog;
        self.rx_wakeups += other.rx_wakeups;
        self.waits += other.waits;
        for (sum, count) in self.rx_batch_sizes.iter_mut().zip(&other.rx_batch_sizes) {
            *sum += count;
        }
        self.pass_reinjected += other.pass_reinjected;
        self.pass_reinject_failed += other.pass_reinject_failed;
        self.pass_unreinjectable += other.pass_unreinjectable;
        self.rx_kernel_dropped += other.rx_kernel_dropped;
        self.rx_too_many_buffers += other.rx_too_many_buffers;
    }
}

/// How many buckets [`PortStats::rx_batch_sizes`] has: one per power of two up to [`BATCH`].
pub const BATCH_SIZE_BUCKETS: usize = BATCH.ilog2() as usize + 1;
const _: () = assert!(BATCH.is_power_of_two(), "a full batch has the last bucket to itself");

/// The bucket of [`PortStats::rx_batch_sizes`] a batch of `frames` (1 ..= [`BATCH`]) is
/// counted in: `floor(log2(frames))`, so a full batch has the last bucket to itself. Out of
/// range sizes are clamped (0 to the first bucket, more than `BATCH` to the last), never a
/// panic.
#[inline]
pub fn batch_size_bucket(frames: usize) -> usize {
    (frames.max(1).ilog2() as usize).min(BATCH_SIZE_BUCKETS - 1)
}

/// The smallest batch size bucket `index` of [`PortStats::rx_batch_sizes`] counts.
pub fn batch_size_bucket_floor(index: usize) -> usize {
    1 << index
}

impl PortStats {
    /// Counts one received batch of `frames` frames (per batch, not per frame).
    #[inline]
    pub fn count_batch(&mut self, frames: usize) {
        self.rx_packets += frames as u64;
        self.batches += 1;
        self.rx_batch_sizes[batch_size_bucket(frames)] += 1;
    }
}

/// How long a worker's non-empty iterations took (receive, process, transmit, flush), in
/// nanoseconds, since the worker started.
///
/// Cumulative on purpose: reports travel by `try_send` and may be dropped, and a cumulative
/// histogram lets control compute the quantiles of any interval by subtracting an earlier
/// one. Resolution is two significant figures (1%) from 1 ns to [`BatchLatency::MAX_NS`];
/// longer iterations are counted as `MAX_NS`.
#[derive(Debug, Clone)]
pub struct BatchLatency {
    histogram: Histogram<u64>,
    sum_ns: u64,
}

impl BatchLatency {
    /// The largest duration told apart (10 s); the histogram is sized for it once.
    pub const MAX_NS: u64 = 10_000_000_000;
    const SIGNIFICANT_FIGURES: u8 = 2;

    /// An empty histogram (about 28 KiB, allocated here only).
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, Self::MAX_NS, Self::SIGNIFICANT_FIGURES)
            .expect("constant bounds are valid: 1 <= low, 2 * low <= high, sigfig <= 5");
        BatchLatency { histogram, sum_ns: 0 }
    }

    /// Counts one iteration that took `elapsed`. No allocation, no panic.
    #[inline]
    pub fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(ns);
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// The iterations counted so far, by duration in nanoseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// How many iterations were counted.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Their total duration, in nanoseconds (exact, unclamped, saturating).
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }
}

impl Default for BatchLatency {
    fn default() -> Self {
        Self::new()
    }
}

/// What a worker tells control.
#[derive(Debug, Clone)]
pub struct CoreReport {
    pub core: u16,
    /// Generation of the snapshot the counters are indexed by.
    pub generation: u64,
    pub counters: Counters,
    /// Per port: its interface and figures.
    pub ports: Vec<(IfaceId, PortStats)>,
    pub flows: usize,
    /// Of them, TCP flows in SYN state (the SYN-flood bound's count; may include expired
    /// ones not yet swept).
    pub embryonic: usize,
    /// This core's part of the box's active and inactive connections per backend (indexed
    /// like the snapshot's backends; [`crate::conntrack::ConnectionCount`]: only the sum
    /// over the cores is a count).
    pub connections: Vec<crate::conntrack::ConnectionCount>,
    /// The connection table's own counters (inserts, evictions, flood refusals...).
    pub conntrack: crate::conntrack::ConntrackStats,
    pub neighbors: usize,
    pub held: usize,
    /// Next hops this core is asking for (at most [`crate::arp::MAX_PENDING_NEIGHBORS`]):
    /// control relays the ARP that answers them.
    pub unresolved: Vec<Ipv4Addr>,
    /// IPv6 next hops this core is asking for: control relays the NDP that answers them.
    pub unresolved6: Vec<std::net::Ipv6Addr>,
    /// Frames that were to leave by an interface this worker has no port on, or that did
    /// not fit the staging area.
    pub unroutable: u64,
    /// Times a due `maintain` or report was put off behind a full batch (each piece, each
    /// iteration, counted once; see `dataplane::worker`'s module docs).
    pub housekeeping_deferred: u64,
    /// Durations of the non-empty iterations since the worker started (cumulative).
    pub latency: BatchLatency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_latency_clamps_instead_of_failing() {
        let mut latency = BatchLatency::new();
        latency.record(Duration::from_secs(3600));
        latency.record(Duration::ZERO);
        latency.record(Duration::from_micros(5));
        assert_eq!(latency.count(), 3);
        assert_eq!(latency.sum_ns(), 3_600_000_005_000);
        // The hour is clamped to the top of the range (within its 1% bucket).
        let max = latency.histogram().max();
        assert!((BatchLatency::MAX_NS..=BatchLatency::MAX_NS / 100 * 101).contains(&max), "{max}");
        let p50 = latency.histogram().value_at_quantile(0.5);
        assert!((4_950..=5_050).contains(&p50), "5 µs within 1%: {p50}");
    }

    #[test]
    fn batch_sizes_fall_in_power_of_two_buckets_and_sum_to_the_batches() {
        assert_eq!(BATCH_SIZE_BUCKETS, 7, "1, 2-3, 4-7, 8-15, 16-31, 32-63, 64");
        let expect = [(1, 0), (2, 1), (3, 1), (4, 2), (7, 2), (8, 3), (31, 4), (32, 5), (63, 5)];
        for (frames, bucket) in expect {
            assert_eq!(batch_size_bucket(frames), bucket, "{frames} frames");
        }
        assert_eq!(batch_size_bucket(BATCH), BATCH_SIZE_BUCKETS - 1, "a full batch");
        assert_eq!(batch_size_bucket(BATCH - 1), BATCH_SIZE_BUCKETS - 2, "full only at BATCH");
        assert_eq!(batch_size_bucket(0), 0, "clamped, no panic");
        assert_eq!(batch_size_bucket(usize::MAX), BATCH_SIZE_BUCKETS - 1, "clamped, no panic");
        for index in 0..BATCH_SIZE_BUCKETS {
            assert_eq!(batch_size_bucket(batch_size_bucket_floor(index)), index);
        }

        let mut stats = PortStats::default();
        for frames in 1..=BATCH {
            stats.count_batch(frames);
        }
        assert_eq!(stats.batches, BATCH as u64);
        assert_eq!(stats.rx_packets, (BATCH * (BATCH + 1) / 2) as u64);
        assert_eq!(stats.rx_batch_sizes, [1, 2, 4, 8, 16, 32, 1]);
        let mut sum = stats;
        sum.add(&stats);
        assert_eq!(sum.rx_batch_sizes.iter().sum::<u64>(), sum.batches, "sums add up");
    }
}
