//! Time as the pipeline sees it: a monotonic count of nanoseconds handed in by the caller.
//!
//! The pipeline never reads a clock. The AF_XDP worker passes a monotonic reading taken once
//! per batch; pcap replay passes the capture's timestamps; tests pass whatever they like. So
//! the same input always produces the same output.

use std::time::Duration;

/// A point in time, in nanoseconds since an arbitrary origin chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    pub const ZERO: Instant = Instant { nanos: 0 };

    pub const fn from_nanos(nanos: u64) -> Self {
        Instant { nanos }
    }

    pub const fn from_secs(secs: u64) -> Self {
        Instant { nanos: secs.saturating_mul(1_000_000_000) }
    }

    pub const fn from_millis(millis: u64) -> Self {
        Instant { nanos: millis.saturating_mul(1_000_000) }
    }

    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    pub const fn saturating_add(self, d: Duration) -> Instant {
        let add = d.as_nanos();
        let add = if add > u64::MAX as u128 { u64::MAX } else { add as u64 };
        Instant { nanos: self.nanos.saturating_add(add) }
    }
}

/// The monotonic clock a live driver reads once per batch and hands to the pipeline.
///
/// Copies share their origin, so every worker and the control thread of one process agree on
/// what an [`Instant`] means (conntrack entries are read across cores).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn start() -> Self {
        MonotonicClock { origin: std::time::Instant::now() }
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.origin.elapsed().as_nanos().min(u64::MAX as u128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_since_saturates() {
        let a = Instant::from_secs(5);
        let b = Instant::from_secs(7);
        assert_eq!(b.saturating_duration_since(a), Duration::from_secs(2));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(a.saturating_add(Duration::from_millis(1500)), Instant::from_millis(6500));
    }

    #[test]
    fn monotonic_clock_copies_share_their_origin() {
        let clock = MonotonicClock::start();
        let copy = clock;
        let first = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        let second = copy.now();
        assert!(second.saturating_duration_since(first) >= Duration::from_millis(2));
    }
}
