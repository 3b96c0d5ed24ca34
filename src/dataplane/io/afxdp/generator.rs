//! The benchmark's traffic generator: xlb's `xlb_gen` XDP program (`gen.bpf.c`) run by
//! `BPF_PROG_RUN` in the kernel's live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, 5.18), the
//! way xdp-tools' xdp-trafficgen and the kernel selftest `xdp_do_redirect.c` drive it.
//!
//! One syscall sends up to `repeat` frames: the kernel copies the [`FrameSpec`] template
//! into page-pool pages, runs the program on each (which gives the frame its flow and a
//! timestamp, fixing checksums incrementally), and sends what it returns `XDP_TX` for out of
//! the test run's ingress device, in batches. On veth the peer must accept XDP frames (an XDP
//! program or GRO on it). One core does several Mpps this way; an AF_XDP TX generator on veth
//! does about one.
//!
//! Knobs, ready for a SYN flood: [`GenConfig`] (flows cycled through, or random spoofed
//! sources over an address and port span), [`GenLimits`] (a packet count, a time bound, a
//! rate cap). The rate cap sends small chunks (about 20 µs worth, at most 64 frames) on a
//! schedule, sleeping when the next chunk is far and yielding when near, so latency runs are
//! not bursts.
//!
//! Invariants: the config map's value is the 20-byte `struct gen_config`, checked at load;
//! [`FrameSpec::build`] makes frames with valid checksums and a plain 20-byte IPv4 header,
//! which is what the program's fixed offsets assume.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::bpf::{self, Aligned, Map, Object};
use super::steer::SteerError;
use crate::flow::Proto;
use crate::testkit;
use crate::wire::MacAddr;

static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/gen.bpf.o")));

/// The smallest Ethernet frame without its FCS: "64-byte packets" on the wire.
pub const MIN_FRAME: usize = 60;
/// Where the stamp goes in a TCP frame: the sequence number (a SYN's is arbitrary).
const TCP_STAMP_OFFSET: u16 = 14 + 20 + 4;
/// Where the stamp goes in a UDP frame: the first payload bytes.
const UDP_STAMP_OFFSET: u16 = 14 + 20 + 8;
/// Frames per live test-run batch when not rate-capped (the kernel's NAPI weight).
const BATCH: u32 = 64;
/// Frames per syscall when not rate-capped: a few ms of work, so limits are checked often.
const CHUNK: u64 = 16_384;

/// Where the generator stamps a frame of `proto` and the sink reads it back.
pub fn stamp_offset(proto: Proto) -> u16 {
    match proto {
        Proto::Tcp => TCP_STAMP_OFFSET,
        Proto::Udp => UDP_STAMP_OFFSET,
    }
}

/// The template frame: the flow's fixed parts (the program varies the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP frames are SYNs.
    pub proto: Proto,
    /// Frame length without FCS, at least [`MIN_FRAME`] (zero padding or UDP payload).
    pub size: usize,
}

impl FrameSpec {
    /// The frame, with valid checksums: a TCP SYN (padded) or a UDP datagram whose payload
    /// fills the frame.
    pub fn build(&self) -> Vec<u8> {
        let size = self.size.max(MIN_FRAME);
        let src = (self.src, self.src_port);
        let dst = (self.dst, self.dst_port);
        let mut frame = match self.proto {
            Proto::Tcp => testkit::tcp(self.src_mac, self.dst_mac, src, dst, testkit::SYN, &[]),
            Proto::Udp => {
                let payload = vec![0u8; size.saturating_sub(14 + 20 + 8)];
                testkit::udp(self.src_mac, self.dst_mac, src, dst, &payload)
            }
        };
        if frame.len() < size {
            frame.resize(size, 0);
        }
        frame
    }
}

/// Which flows the frames carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenConfig {
    /// Flows to cycle through, frame n being flow n mod `flows`; 0: a random source per
    /// frame (spoofed addresses among `src_span`, ports among `port_span`).
    pub flows: u32,
    /// The first source address.
    pub src_addr: Ipv4Addr,
    /// Random mode: how many addresses from `src_addr` to draw from.
    pub src_span: u32,
    /// The first source port.
    pub src_port: u16,
    /// Source ports per address (counter mode: flow i uses port `src_port + i % port_span`
    /// of address `src_addr + i / port_span`).
    pub port_span: u16,
    /// Stamp each frame for latency at this offset ([`stamp_offset`]); None: no stamp.
    pub stamp_offset: Option<u16>,
}

impl GenConfig {
    /// `struct gen_config` as the program reads it (host byte order).
    fn encode(&self) -> [u8; 20] {
        let mut value = [0u8; 20];
        value[0..4].copy_from_slice(&self.flows.to_ne_bytes());
        value[4..8].copy_from_slice(&u32::from(self.src_addr).to_ne_bytes());
        value[8..12].copy_from_slice(&self.src_span.max(1).to_ne_bytes());
        value[12..14].copy_from_slice(&self.src_port.to_ne_bytes());
        value[14..16].copy_from_slice(&self.port_span.max(1).to_ne_bytes());
        value[16..18].copy_from_slice(&self.stamp_offset.unwrap_or(0).to_ne_bytes());
        value
    }

    /// The source (address, port) of the frame the program numbers `n` in counter mode
    /// (None in random mode): the model of the program's walk.
    pub fn source_of(&self, n: u64) -> Option<(Ipv4Addr, u16)> {
        if self.flows == 0 {
            return None;
        }
        let span = u64::from(self.port_span.max(1));
        let flow = n % u64::from(self.flows);
        let port = u64::from(self.src_port) + flow % span;
        let addr = u64::from(u32::from(self.src_addr)) + flow / span;
        Some((Ipv4Addr::from(addr as u32), port as u16))
    }

    /// The highest source address a frame can carry.
    pub fn last_src_addr(&self) -> Ipv4Addr {
        let first = u32::from(self.src_addr);
        let extra = if self.flows == 0 {
            self.src_span.max(1) - 1
        } else {
            (self.flows - 1) / u32::from(self.port_span.max(1))
        };
        Ipv4Addr::from(first.saturating_add(extra))
    }
}

/// When to stop. Every run is bounded: in packets, in time, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenLimits {
    /// Frames to send at most.
    pub packets: u64,
    /// How long to send at most.
    pub duration: Duration,
    /// Frames per second at most (None: as fast as the core goes).
    pub rate: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenReport {
    /// Frames the program ran on (and returned `XDP_TX` for).
    pub sent: u64,
    /// Time since the first frame.
    pub elapsed: Duration,
    /// `BPF_PROG_RUN` calls made.
    pub calls: u64,
}

impl GenReport {
    /// Millions of frames per second.
    pub fn mpps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// How many frames a rate-capped run sends per call: about 20 µs worth, 1 to 64.
pub fn paced_chunk(rate: u64) -> u64 {
    (rate / 50_000).clamp(1, u64::from(BATCH))
}

/// How long until `sent` frames are due at `rate` per second, `elapsed` into the run
/// (zero: send now).
pub fn pace_wait(sent: u64, rate: u64, elapsed: Duration) -> Duration {
    let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
    due.saturating_sub(elapsed)
}

/// The loaded generator program.
#[derive(Debug)]
pub struct Generator {
    program_fd: RawFd,
    config: Map<4, 20>,
    count: Map<4, 8>,
    /// Owns the program and maps (closed on drop).
    _object: Object,
}

impl Generator {
    /// Loads `xlb_gen` (the verifier runs here). Needs `CAP_BPF`.
    pub fn load() -> Result<Generator, SteerError> {
        let object = Object::open(&OBJECT.0, "gen.bpf.o")?;
        let config = object.map(c"gen_config", 1)?;
        let count = object.map(c"gen_count", 1)?;
        object.load()?;
        Ok(Generator {
            program_fd: object.program_fd(c"xlb_gen")?,
            config: object.loaded(config)?,
            count: object.loaded(count)?,
            _object: object,
        })
    }

    /// Sets the flows and stamping of the frames to come.
    pub fn configure(&self, config: &GenConfig) -> Result<(), SteerError> {
        self.config.update(&0u32.to_ne_bytes(), &config.encode())
    }

    /// Frames the program has run on so far.
    pub fn generated(&self) -> Result<u64, SteerError> {
        let mut value = [0u8; 8];
        self.count.lookup_into(&0u32.to_ne_bytes(), &mut value)?;
        Ok(u64::from_ne_bytes(value))
    }

    /// Runs the program once on `frame` (not live) and returns the frame it made, for
    /// tests; counts as one generated frame.
    pub fn make_one(&self, frame: &[u8]) -> Result<Vec<u8>, SteerError> {
        let mut out = vec![0u8; frame.len() + 256];
        let run = bpf::test_run(self.program_fd, frame, 0, 0, &mut out)?;
        out.truncate(run.out_len);
        Ok(out)
    }

    /// Sends copies of `frame` out of interface `ifindex` (in this thread's network
    /// namespace) until a limit is reached or `stop` is set; calls `progress` about once a
    /// second.
    pub fn run(
        &self,
        frame: &[u8],
        ifindex: u32,
        limits: &GenLimits,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(&GenReport),
    ) -> Result<GenReport, SteerError> {
        let started = Instant::now();
        let first = self.generated()?;
        let mut report = GenReport::default();
        let mut last_progress = started;
        let chunk = limits.rate.map_or(CHUNK, paced_chunk);
        while report.sent < limits.packets && !stop.load(Ordering::Relaxed) {
            let elapsed = started.elapsed();
            if elapsed >= limits.duration {
                break;
            }
            if let Some(rate) = limits.rate {
                let wait = pace_wait(report.sent, rate, elapsed);
                if wait > Duration::from_micros(200) {
                    std::thread::sleep(wait - Duration::from_micros(100));
                    continue;
                } else if !wait.is_zero() {
                    std::thread::yield_now();
                    continue;
                }
            }
            let repeat = chunk.min(limits.packets - report.sent) as u32;
            bpf::test_run_live(self.program_fd, frame, ifindex, repeat, BATCH.min(repeat))?;
            report.calls += 1;
            // The kernel stops early on a pending signal: count what the program really ran.
            report.sent = if limits.rate.is_some() {
                report.sent + u64::from(repeat)
            } else {
                self.generated()? - first
            };
            report.elapsed = started.elapsed();
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                progress(&report);
            }
        }
        report.sent = self.generated()? - first;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    use super::*;

    const SPEC: FrameSpec = FrameSpec {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        src: Ipv4Addr::new(10, 100, 0, 1),
        dst: Ipv4Addr::new(10, 10, 0, 100),
        src_port: 1024,
        dst_port: 80,
        proto: Proto::Udp,
        size: MIN_FRAME,
    };

    #[test]
    fn templates_are_minimal_frames_with_the_stamp_inside_the_l4_checksum() {
        for proto in [Proto::Tcp, Proto::Udp] {
            let frame = FrameSpec { proto, ..SPEC }.build();
            assert_eq!(frame.len(), MIN_FRAME, "{proto:?}");
            assert!(usize::from(stamp_offset(proto)) + 4 <= frame.len());
            let packet = SlicedPacket::from_ethernet(&frame).expect("parses");
            assert!(matches!(packet.net, Some(NetSlice::Ipv4(_))));
        }
    }

    #[test]
    fn config_encodes_as_the_program_reads_it() {
        let config = GenConfig {
            flows: 1000,
            src_addr: Ipv4Addr::new(10, 100, 0, 1),
            src_span: 0,
            src_port: 1024,
            port_span: 0,
            stamp_offset: Some(42),
        };
        let value = config.encode();
        assert_eq!(u32::from_ne_bytes(value[0..4].try_into().unwrap()), 1000);
        assert_eq!(u32::from_ne_bytes(value[4..8].try_into().unwrap()), 0x0a64_0001);
        assert_eq!(u32::from_ne_bytes(value[8..12].try_into().unwrap()), 1, "spans at least 1");
        assert_eq!(u16::from_ne_bytes(value[12..14].try_into().unwrap()), 1024);
        assert_eq!(u16::from_ne_bytes(value[14..16].try_into().unwrap()), 1);
        assert_eq!(u16::from_ne_bytes(value[16..18].try_into().unwrap()), 42);
    }

    #[test]
    fn pacing_sends_small_chunks_on_schedule() {
        assert_eq!(paced_chunk(10_000), 1);
        assert_eq!(paced_chunk(1_000_000), 20);
        assert_eq!(paced_chunk(100_000_000), 64);
        assert_eq!(pace_wait(0, 1000, Duration::ZERO), Duration::ZERO);
        assert_eq!(pace_wait(10, 1000, Duration::from_millis(4)), Duration::from_millis(6));
        assert_eq!(pace_wait(10, 1000, Duration::from_millis(40)), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn counter_mode_stays_within_its_source_range(
            flows in 1u32..100_000, port_span in 1u16..=u16::MAX, n in any::<u64>(),
        ) {
            let config = GenConfig {
                flows,
                src_addr: Ipv4Addr::new(10, 100, 0, 0),
                src_span: 1,
                src_port: 0,
                port_span,
                stamp_offset: None,
            };
            let (addr, port) = config.source_of(n).unwrap();
            prop_assert!(addr >= config.src_addr && addr <= config.last_src_addr());
            prop_assert!(port < port_span);
            prop_assert_eq!(config.source_of(n + u64::from(flows)), Some((addr, port)));
        }
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Whether `frame`'s IPv4 and L4 checksums verify.
    fn checksums_ok(frame: &[u8]) -> bool {
        let packet = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(NetSlice::Ipv4(ip)) = packet.net else { return false };
        let header = ip.header().to_header();
        let ip_ok = header.calc_header_checksum() == header.header_checksum;
        let l4_ok = match packet.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let expected = tcp.to_header().calc_checksum_ipv4(&header, tcp.payload());
                expected.ok() == Some(tcp.checksum())
            }
            Some(TransportSlice::Udp(udp)) => {
                let expected = udp.to_header().calc_checksum_ipv4(&header, udp.payload());
                expected.ok() == Some(udp.checksum())
            }
            _ => false,
        };
        ip_ok && l4_ok
    }

    #[test]
    fn program_walks_flows_stamps_and_keeps_checksums_valid() {
        if !root() {
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        let generator = Generator::load().expect("load");
        for proto in [Proto::Tcp, Proto::Udp] {
            let config = GenConfig {
                flows: 3,
                src_addr: Ipv4Addr::new(10, 100, 0, 1),
                src_span: 1,
                src_port: 2000,
                port_span: 2,
                stamp_offset: Some(stamp_offset(proto)),
            };
            generator.configure(&config).unwrap();
            let before = generator.generated().unwrap();
            // Live mode feeds the program what it left in the page: chain the outputs.
            let mut frame = FrameSpec { proto, ..SPEC }.build();
            let mut sources = Vec::new();
            for _ in 0..6 {
                frame = generator.make_one(&frame).unwrap();
                assert_eq!(frame.len(), MIN_FRAME);
                assert!(checksums_ok(&frame), "{proto:?}: checksums after the rewrite");
                let offset = usize::from(stamp_offset(proto));
                assert_ne!(&frame[offset..offset + 4], &[0, 0, 0, 0], "stamped");
                let addr = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
                sources.push((addr, u16::from_be_bytes([frame[34], frame[35]])));
            }
            let n = generator.generated().unwrap() - before;
            assert_eq!(n, 6);
            let expected: Vec<_> =
                (before..before + 6).map(|i| config.source_of(i).unwrap()).collect();
            assert_eq!(sources, expected, "{proto:?}");
        }
        // Random mode: sources stay within their spans.
        let config = GenConfig {
            flows: 0,
            src_addr: Ipv4Addr::new(10, 200, 0, 0),
            src_span: 256,
            src_port: 1024,
            port_span: 1000,
            stamp_offset: None,
        };
        generator.configure(&config).unwrap();
        let mut frame = FrameSpec { proto: Proto::Tcp, ..SPEC }.build();
        for _ in 0..20 {
            frame = generator.make_one(&frame).unwrap();
            assert!(checksums_ok(&frame));
            let addr = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
            let port = u16::from_be_bytes([frame[34], frame[35]]);
            assert!(addr >= config.src_addr && addr <= config.last_src_addr(), "{addr}");
            assert!((1024..2024).contains(&port), "{port}");
        }
    }
}
