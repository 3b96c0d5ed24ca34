//! The benchmark's sink: xlb's `xlb_sink` XDP program (`bpf/sink.bpf.c`) on the receiving
//! veth. It checks every IPv4 frame against what the row under test should deliver
//! ([`SinkExpect`]), counts good and bad (and why) in per-CPU counters, records the latency
//! of good frames from the generator's stamp into a per-CPU histogram, and drops them;
//! anything else (ARP) is counted as `other` and passed to the kernel.
//!
//! User space reads the maps into a [`SinkSample`]; the difference of two samples is what
//! arrived in between, and its buckets feed an hdrhistogram ([`latency_histogram`]) for
//! p50/p99/p999.
//!
//! Histogram buckets (mirrored from the C source): 1 µs wide below 1 ms (bucket = µs), 1 ms
//! wide from 1 ms to 99 ms (bucket 999 + ms), one for 100 ms and more. A bucket counts as
//! its midpoint.
//!
//! Invariants: the config value is the 28-byte `struct sink_config`, map layouts are checked
//! at load, and per-CPU values are read with room for every possible CPU.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::os::fd::RawFd;

use hdrhistogram::Histogram;

use crate::dataplane::io::afxdp::bpf::{self, Aligned, Map, Object};
use crate::dataplane::io::afxdp::steer::{Attachment, SteerError, XdpMode, attach_program};
use crate::flow::Proto;
use crate::wire::MacAddr;

static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/sink.bpf.o")));

/// 1 µs buckets below this many µs.
const LAT_FINE: usize = 1000;
/// Buckets in all (`LAT_BUCKETS` in the C source).
pub const LAT_BUCKETS: usize = 1100;
/// Counters (`enum sink_stat`).
const STAT_COUNT: usize = 8;

/// What the row under test should deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkExpect {
    /// The sink's own MAC (the forwarder's next hop).
    pub dst_mac: MacAddr,
    pub proto: Proto,
    /// Destination addresses (a VIP, or the backends).
    pub dst: RangeInclusive<Ipv4Addr>,
    /// Source addresses (the clients, or the FullNAT local addresses).
    pub src: RangeInclusive<Ipv4Addr>,
    /// Destination port; 0: any.
    pub dst_port: u16,
    /// Where the generator's stamp is; None: no latency.
    pub stamp_offset: Option<u16>,
}

impl SinkExpect {
    /// `struct sink_config` as the program reads it (host byte order).
    fn encode(&self) -> [u8; 28] {
        let mut value = [0u8; 28];
        value[0..6].copy_from_slice(&self.dst_mac.0);
        value[6] = self.proto.number();
        for (at, addr) in [
            (8, self.dst.start()),
            (12, self.dst.end()),
            (16, self.src.start()),
            (20, self.src.end()),
        ] {
            value[at..at + 4].copy_from_slice(&u32::from(*addr).to_ne_bytes());
        }
        value[24..26].copy_from_slice(&self.dst_port.to_ne_bytes());
        value[26..28].copy_from_slice(&self.stamp_offset.unwrap_or(0).to_ne_bytes());
        value
    }
}

/// The sink's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkCounts {
    /// Frames that were what the row should deliver.
    pub good: u64,
    /// Frames that are not IPv4 (passed to the kernel).
    pub other: u64,
    /// IPv4 frames too short, or with IP options.
    pub bad_short: u64,
    pub bad_mac: u64,
    pub bad_proto: u64,
    pub bad_dst: u64,
    pub bad_src: u64,
    pub bad_port: u64,
}

impl SinkCounts {
    fn from_array(values: [u64; STAT_COUNT]) -> SinkCounts {
        let [good, other, bad_short, bad_mac, bad_proto, bad_dst, bad_src, bad_port] = values;
        SinkCounts { good, other, bad_short, bad_mac, bad_proto, bad_dst, bad_src, bad_port }
    }

    fn to_array(self) -> [u64; STAT_COUNT] {
        [
            self.good,
            self.other,
            self.bad_short,
            self.bad_mac,
            self.bad_proto,
            self.bad_dst,
            self.bad_src,
            self.bad_port,
        ]
    }

    /// IPv4 frames that were not what the row should deliver.
    pub fn bad(&self) -> u64 {
        self.to_array()[2..].iter().sum()
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &SinkCounts) -> SinkCounts {
        let (now, then) = (self.to_array(), earlier.to_array());
        SinkCounts::from_array(std::array::from_fn(|i| now[i].saturating_sub(then[i])))
    }
}

/// The sink's counters and latency buckets at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSample {
    pub counts: SinkCounts,
    /// Good frames per latency bucket ([`LAT_BUCKETS`]).
    pub latency: Vec<u64>,
}

impl SinkSample {
    /// What arrived since `earlier`.
    pub fn since(&self, earlier: &SinkSample) -> SinkSample {
        SinkSample {
            counts: self.counts.since(&earlier.counts),
            latency: self
                .latency
                .iter()
                .zip(earlier.latency.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }
}

/// The bucket of a latency of `ns` nanoseconds (the C source's `latency_bucket`).
pub fn latency_bucket(ns: u32) -> usize {
    let us = (ns / 1000) as usize;
    if us < LAT_FINE {
        return us;
    }
    let ms = us / 1000;
    if ms < LAT_BUCKETS - LAT_FINE { LAT_FINE - 1 + ms } else { LAT_BUCKETS - 1 }
}

/// The latency a bucket stands for, in nanoseconds: its midpoint (the last, open bucket:
/// its lower bound).
pub fn bucket_value_ns(bucket: usize) -> u64 {
    if bucket < LAT_FINE {
        bucket as u64 * 1000 + 500
    } else if bucket < LAT_BUCKETS - 1 {
        (bucket - (LAT_FINE - 1)) as u64 * 1_000_000 + 500_000
    } else {
        (LAT_BUCKETS - LAT_FINE) as u64 * 1_000_000
    }
}

/// An hdrhistogram (nanoseconds, 3 significant figures) of the buckets' counts.
pub fn latency_histogram(buckets: &[u64]) -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, 10_000_000_000, 3)
        .expect("constant bounds are valid: 1 <= low, 2 * low <= high, sigfig <= 5");
    for (bucket, &count) in buckets.iter().enumerate() {
        if count > 0 {
            histogram.saturating_record_n(bucket_value_ns(bucket), count);
        }
    }
    histogram
}

/// The loaded sink program.
#[derive(Debug)]
pub struct Sink {
    program_fd: RawFd,
    config: Map<4, 28>,
    stats: Map<4, 8>,
    latency: Map<4, 8>,
    /// Owns the program and maps (closed on drop, after any [`Attachment`] of it).
    _object: Object,
}

impl Sink {
    /// Loads `xlb_sink` (the verifier runs here). Needs `CAP_BPF`.
    pub fn load() -> Result<Sink, SteerError> {
        let object = Object::open(OBJECT, "sink.bpf.o")?;
        let config = object.map(c"sink_config", 1)?;
        let stats = object.map(c"sink_stats", STAT_COUNT)?;
        let latency = object.map(c"sink_latency", LAT_BUCKETS)?;
        object.load()?;
        Ok(Sink {
            program_fd: object.program_fd(c"xlb_sink")?,
            config: object.loaded(config)?,
            stats: object.loaded(stats)?,
            latency: object.loaded(latency)?,
            _object: object,
        })
    }

    /// Sets what the row should deliver.
    pub fn expect(&self, expect: &SinkExpect) -> Result<(), SteerError> {
        self.config.update(&0u32.to_ne_bytes(), &expect.encode())
    }

    /// Attaches the sink to interface `ifindex` (detached when the result drops).
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<Attachment, SteerError> {
        attach_program(self.program_fd, ifindex, mode)
    }

    /// The counters and latency buckets now, summed over CPUs.
    pub fn sample(&self) -> Result<SinkSample, SteerError> {
        let mut per_cpu = vec![0u8; 8 * bpf::possible_cpus()?];
        let mut read = |map: &Map<4, 8>, index: usize| -> Result<u64, SteerError> {
            per_cpu.fill(0);
            map.lookup_into(&(index as u32).to_ne_bytes(), &mut per_cpu)?;
            Ok(bpf::sum_per_cpu(&per_cpu))
        };
        let mut counts = [0u64; STAT_COUNT];
        for (index, count) in counts.iter_mut().enumerate() {
            *count = read(&self.stats, index)?;
        }
        let latency =
            (0..LAT_BUCKETS).map(|bucket| read(&self.latency, bucket)).collect::<Result<_, _>>()?;
        Ok(SinkSample { counts: SinkCounts::from_array(counts), latency })
    }

    /// Runs the program once on `frame` (not attached), for tests: true if it dropped it.
    pub fn test_one(&self, frame: &[u8]) -> Result<bool, SteerError> {
        Ok(bpf::test_run(self.program_fd, frame, 0, 0, &mut [])?.retval == 1)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dataplane::io::afxdp::bpf::tests::root;
    use crate::testkit;

    #[test]
    fn buckets_are_fine_below_a_millisecond_then_coarse() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(999), 0);
        assert_eq!(latency_bucket(1_000), 1);
        assert_eq!(latency_bucket(999_999), 999);
        assert_eq!(latency_bucket(1_000_000), 1000);
        assert_eq!(latency_bucket(99_999_999), 1098);
        assert_eq!(latency_bucket(100_000_000), LAT_BUCKETS - 1);
        assert_eq!(latency_bucket(u32::MAX), LAT_BUCKETS - 1);
        assert_eq!(bucket_value_ns(0), 500);
        assert_eq!(bucket_value_ns(1000), 1_500_000);
        assert_eq!(bucket_value_ns(LAT_BUCKETS - 1), 100_000_000);
    }

    proptest! {
        #[test]
        fn a_bucket_stands_for_a_value_within_it(ns in 0u32..100_000_000) {
            let value = bucket_value_ns(latency_bucket(ns));
            let width = if ns < 1_000_000 { 1_000 } else { 1_000_000 };
            prop_assert!(value.abs_diff(u64::from(ns)) <= width, "{} -> {}", ns, value);
        }
    }

    #[test]
    fn percentiles_come_from_bucket_counts() {
        let mut buckets = vec![0u64; LAT_BUCKETS];
        buckets[10] = 900; // 10.5 µs
        buckets[50] = 90; // 50.5 µs
        buckets[1002] = 10; // 3.5 ms
        let histogram = latency_histogram(&buckets);
        assert_eq!(histogram.len(), 1000);
        let within = |value: u64, want: u64| value.abs_diff(want) <= want / 500;
        assert!(within(histogram.value_at_quantile(0.5), 10_500));
        assert!(within(histogram.value_at_quantile(0.95), 50_500));
        assert!(within(histogram.value_at_quantile(0.999), 3_500_000));
    }

    #[test]
    fn samples_subtract() {
        let earlier = SinkSample {
            counts: SinkCounts { good: 5, bad_dst: 1, ..SinkCounts::default() },
            latency: vec![1, 2, 3],
        };
        let later = SinkSample {
            counts: SinkCounts { good: 15, bad_dst: 1, other: 2, ..SinkCounts::default() },
            latency: vec![1, 5, 3],
        };
        let delta = later.since(&earlier);
        assert_eq!(delta.counts.good, 10);
        assert_eq!(delta.counts.bad(), 0);
        assert_eq!(delta.counts.other, 2);
        assert_eq!(delta.latency, vec![0, 3, 0]);
        assert_eq!(later.counts.bad(), 1);
    }

    #[test]
    fn per_cpu_maps_refuse_buffers_without_room_for_every_cpu() {
        if !root() {
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        let sink = Sink::load().expect("load");
        let key = 0u32.to_ne_bytes();
        let needed = 8 * bpf::possible_cpus().unwrap();
        // The short buffer is the front of a longer one, so that what the kernel would write
        // past its end shows (and lands in memory the test owns).
        let mut buffer = vec![0xaa_u8; needed + 8];
        let short = sink.stats.lookup_into(&key, &mut buffer[..needed - 1]);
        assert!(short.is_err(), "{}-byte buffer, {needed}-byte values: {short:?}", needed - 1);
        assert!(buffer.iter().all(|&byte| byte == 0xaa), "the kernel wrote into a refused buffer");
        assert!(sink.stats.lookup_into(&key, &mut buffer[..needed]).unwrap());
        let update = sink.stats.update(&key, &[0; 8]);
        assert!(update.is_err(), "one value for a per-CPU map: {update:?}");
    }

    #[test]
    fn program_tells_good_frames_from_bad_and_passes_arp() {
        if !root() {
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        let sink = Sink::load().expect("load");
        let lb = MacAddr([2, 0, 0, 0, 0, 3]);
        let me = MacAddr([2, 0, 0, 0, 0, 4]);
        let vip = Ipv4Addr::new(10, 10, 0, 100);
        let client = Ipv4Addr::new(10, 100, 0, 1);
        sink.expect(&SinkExpect {
            dst_mac: me,
            proto: Proto::Udp,
            dst: vip..=vip,
            src: client..=Ipv4Addr::new(10, 100, 0, 255),
            dst_port: 80,
            stamp_offset: Some(42),
        })
        .unwrap();
        let udp =
            |dst_mac, src, dst, port| testkit::udp(lb, dst_mac, (src, 1), (dst, port), &[0; 18]);
        let cases = [
            ("good", udp(me, client, vip, 80), true),
            ("another MAC", udp(lb, client, vip, 80), true),
            ("another destination", udp(me, client, client, 80), true),
            ("another source", udp(me, vip, vip, 80), true),
            ("another port", udp(me, client, vip, 81), true),
            ("TCP", testkit::tcp(lb, me, (client, 1), (vip, 80), testkit::SYN, &[]), true),
            ("ARP", testkit::arp(true, lb, client, MacAddr::ZERO, vip), false),
        ];
        let before = sink.sample().unwrap();
        for (what, frame, dropped) in &cases {
            assert_eq!(sink.test_one(frame).unwrap(), *dropped, "{what}");
        }
        let delta = sink.sample().unwrap().since(&before);
        let want = SinkCounts {
            good: 1,
            other: 1,
            bad_mac: 1,
            bad_dst: 1,
            bad_src: 1,
            bad_port: 1,
            bad_proto: 1,
            bad_short: 0,
        };
        assert_eq!(delta.counts, want);
        assert_eq!(delta.latency.iter().sum::<u64>(), 1, "the good frame's latency counted");
    }
}
