//! The benchmark's traffic generator: xlb's `xlb_gen` XDP program (`bpf/gen.bpf.c`) run by
//! `BPF_PROG_RUN` in the kernel's live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, 5.18), the
//! way xdp-tools' xdp-trafficgen and the kernel selftest `xdp_do_redirect.c` drive it.
//!
//! One syscall runs the program `repeat` times: the kernel copies the [`FrameSpec`] template
//! into page-pool pages, runs the program on each (which gives the frame its flow and a
//! timestamp, fixing checksums incrementally), and sends what it returns `XDP_TX` for out of
//! the test run's ingress device, in batches. On veth the peer must accept XDP frames (an XDP
//! program or GRO on it). One core does several Mpps this way.
//!
//! Knobs, ready for a SYN flood: [`GenConfig`] (flows cycled through, or random spoofed
//! sources over an address and port span), [`GenLimits`] (a packet count, a time bound, a
//! rate cap). The program itself keeps the packet limit and the rate cap (a run before the
//! next frame is due emits nothing), so a capped generator spins its core and its frames
//! leave evenly, not in bursts; calls last about half a second each, because each sets up
//! a page pool at a cost of tens of milliseconds.
//!
//! Where the kernel refuses live frames (some 6.18 builds answer `EPERM` even to root), the
//! first call says so on stderr and the generator falls back to its AF_XDP sender
//! ([`super::txgen`], [`Fallback::Afxdp`]): the same frames made in user space (template
//! written once per UMEM frame, then the source and stamp rewritten in place with
//! incremental checksums), sent from an AF_XDP socket's TX ring on queue 0 of the device in
//! batches of one kick each; the same flows, stamps, packet limit, time bound and even
//! pacing. Where that socket does not open either, the program runs on one frame at a time
//! (not live) and each frame it makes leaves through an `AF_PACKET` socket
//! ([`crate::dataplane::io::afxdp::packet`], [`Fallback::BpfPacket`]): an order of
//! magnitude fewer frames a second. The report says which (`fallback`); `--fallback`
//! (`GenPath::Only`) forces one where live frames work, to measure or test it.
//!
//! Invariants: the config map's value is the 40-byte `struct gen_config`, checked at load;
//! [`FrameSpec::build`] makes frames with valid checksums and a plain 20-byte IPv4 header,
//! which is what the program's fixed offsets assume.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataplane::io::afxdp::bpf::{self, Aligned, Map, Object};
use crate::dataplane::io::afxdp::netdev::Netdev;
use crate::dataplane::io::afxdp::packet::FrameSender;
use crate::dataplane::io::afxdp::steer::SteerError;
use crate::dataplane::io::afxdp::xsk::{XskConfig, XskPort};
use crate::flow::Proto;
use crate::testkit;
use crate::wire::MacAddr;

use super::txgen;

static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/gen.bpf.o")));

/// The smallest Ethernet frame without its FCS: "64-byte packets" on the wire.
pub const MIN_FRAME: usize = 60;
/// Where the stamp goes in a TCP frame: the sequence number (a SYN's is arbitrary).
const TCP_STAMP_OFFSET: u16 = 14 + 20 + 4;
/// Where the stamp goes in a UDP frame: the first payload bytes.
const UDP_STAMP_OFFSET: u16 = 14 + 20 + 8;
/// `struct gen_config`'s size.
const CONFIG_SIZE: usize = 40;
/// Runs per live test-run batch (the kernel's NAPI weight); rate-capped runs use smaller
/// batches, so what is due leaves sooner.
const BATCH: u32 = 64;
const PACED_BATCH: u32 = 8;
/// How long one `BPF_PROG_RUN` call should last. Each call sets up and tears down a page
/// pool, which costs tens of milliseconds here (mostly waiting), so calls must be long;
/// limits are checked between calls, and the time bound is kept to within about this.
const CALL_TARGET: Duration = Duration::from_millis(500);
/// Runs in the first call, and the bounds of later ones.
const FIRST_REPEAT: u64 = 1 << 16;
const MIN_REPEAT: u64 = 1 << 12;
const MAX_REPEAT: u64 = 1 << 28;

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
    /// `struct gen_config` as the program reads it (host byte order), with a rate cap of
    /// one frame per `interval_ns` (0: none) and no frame once the counter reaches `limit`
    /// (0: no limit).
    fn encode(&self, interval_ns: u64, limit: u64) -> [u8; CONFIG_SIZE] {
        let mut value = [0u8; CONFIG_SIZE];
        value[0..4].copy_from_slice(&self.flows.to_ne_bytes());
        value[4..8].copy_from_slice(&u32::from(self.src_addr).to_ne_bytes());
        value[8..12].copy_from_slice(&self.src_span.max(1).to_ne_bytes());
        value[12..14].copy_from_slice(&self.src_port.to_ne_bytes());
        value[14..16].copy_from_slice(&self.port_span.max(1).to_ne_bytes());
        value[16..18].copy_from_slice(&self.stamp_offset.unwrap_or(0).to_ne_bytes());
        // Restore the template in every frame.
        value[18..20].copy_from_slice(&1u16.to_ne_bytes());
        value[24..32].copy_from_slice(&interval_ns.to_ne_bytes());
        value[32..40].copy_from_slice(&limit.to_ne_bytes());
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
    /// The AF_XDP fallback's socket send buffer, bytes (None: the kernel's default,
    /// `net.core.wmem_default`). In copy mode every frame in flight is an skb charged to it
    /// until the receiver frees it, so it bounds the frames in flight: with the default
    /// (212992) about one veth ring of 64-byte frames, and the sender then goes at the pace
    /// of its peer's receive NAPI, not its own.
    pub send_buffer: Option<u32>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenReport {
    /// Frames the program ran on (and returned `XDP_TX` for).
    pub sent: u64,
    /// Time since the first frame.
    pub elapsed: Duration,
    /// `BPF_PROG_RUN` live calls made; in a fallback, its rounds (AF_XDP: batches put on
    /// the TX ring; AF_PACKET: rounds of single runs).
    pub calls: u64,
    /// Which fallback sent the frames because the kernel refused live frames (None: live
    /// frames; see [`Generator::run`]).
    pub fallback: Option<Fallback>,
    /// Frames a fallback made that did not leave (AF_XDP: dropped by the driver or a full
    /// TX ring; AF_PACKET: refused by the device's queue, `ENOBUFS`).
    pub not_sent: u64,
}

/// How frames leave where the kernel refuses live frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Fallback {
    /// Frames made in user space ([`super::txgen`]) and sent by an AF_XDP socket's TX ring:
    /// over a million a second on one core.
    Afxdp,
    /// The program run on one frame at a time (not live) and each frame sent by an
    /// `AF_PACKET` socket: an order of magnitude slower; where no AF_XDP socket opens.
    BpfPacket,
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Afxdp => "afxdp",
            Fallback::BpfPacket => "bpf-packet",
        }
    }
}

/// How [`Generator::run`] sends: live frames first (falling back where the kernel refuses
/// them), or one fallback forced (to measure or test it where live frames work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenPath {
    #[default]
    Auto,
    Only(Fallback),
}

impl GenReport {
    /// Millions of frames per second.
    pub fn mpps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// The rate cap as the program takes it: nanoseconds between frames (0: no cap).
pub fn interval_ns(rate: Option<u64>) -> u64 {
    rate.map_or(0, |rate| (1_000_000_000 / rate.max(1)).max(1))
}

/// The runs of the next call: the last call's `repeat` scaled so that the next lasts about
/// [`CALL_TARGET`], within bounds.
pub fn next_repeat(repeat: u64, took: Duration) -> u64 {
    let scale = CALL_TARGET.as_secs_f64() / took.as_secs_f64().max(1e-6);
    ((repeat as f64 * scale.min(16.0)) as u64).clamp(MIN_REPEAT, MAX_REPEAT)
}

/// The loaded generator program.
#[derive(Debug)]
pub struct Generator {
    program_fd: RawFd,
    config: Map<4, CONFIG_SIZE>,
    state: Map<4, 16>,
    template: Map<4, MIN_FRAME>,
    /// The flows and stamping last configured.
    flows: std::cell::Cell<Option<GenConfig>>,
    /// Owns the program and maps (closed on drop).
    _object: Object,
}

impl Generator {
    /// Loads `xlb_gen` (the verifier runs here). Needs `CAP_BPF`.
    pub fn load() -> Result<Generator, SteerError> {
        let object = Object::open(OBJECT, "gen.bpf.o")?;
        let config = object.map(c"gen_config", 1)?;
        let state = object.map(c"gen_state", 1)?;
        let template = object.map(c"gen_template", 1)?;
        object.load()?;
        Ok(Generator {
            program_fd: object.program_fd(c"xlb_gen")?,
            config: object.loaded(config)?,
            state: object.loaded(state)?,
            template: object.loaded(template)?,
            flows: std::cell::Cell::new(None),
            _object: object,
        })
    }

    /// Sets the frames to come: every one starts from the first [`MIN_FRAME`] bytes of
    /// `frame` (the program restores them in each), with the flows and stamping of `config`.
    pub fn configure(&self, frame: &[u8], config: &GenConfig) -> Result<(), SteerError> {
        let Some(Ok(template)) = frame.get(..MIN_FRAME).map(<[u8; MIN_FRAME]>::try_from) else {
            return Err(SteerError::Object(format!(
                "a {}-byte frame: the generator sends frames of at least {MIN_FRAME}",
                frame.len()
            )));
        };
        self.template.update(&0u32.to_ne_bytes(), &template)?;
        self.flows.set(Some(*config));
        self.config.update(&0u32.to_ne_bytes(), &config.encode(0, 0))
    }

    /// Frames the program has run on so far.
    pub fn generated(&self) -> Result<u64, SteerError> {
        let mut value = [0u8; 16];
        self.state.lookup_into(&0u32.to_ne_bytes(), &mut value)?;
        Ok(u64::from_ne_bytes(value[..8].try_into().unwrap_or_default()))
    }

    /// Runs the program once on `frame` (not live) and returns the frame it made, for
    /// tests; counts as one generated frame.
    pub fn make_one(&self, frame: &[u8]) -> Result<Vec<u8>, SteerError> {
        let mut out = vec![0u8; frame.len() + 256];
        let run = bpf::test_run(self.program_fd, frame, 0, 0, &mut out)?;
        out.truncate(run.out_len);
        Ok(out)
    }

    /// Sends copies of `frame` out of `dev` (in this thread's network namespace) until a
    /// limit is reached or `stop` is set; calls `progress` about once a second. The packet
    /// limit and rate cap are kept by the program; the time bound between calls (each about
    /// [`CALL_TARGET`]). A signal ends a call early (`EINTR`).
    ///
    /// Where the kernel refuses live frames (the first call fails with `EPERM`,
    /// `EOPNOTSUPP`), or `path` forces it, the frames leave by a fallback, said on stderr:
    /// the AF_XDP sender ([`super::txgen`]: the same flows, stamps, limit and even pacing,
    /// made in user space), or where its socket does not open, the program run frame by
    /// frame and sent through `AF_PACKET` ([`Fallback::BpfPacket`]).
    pub fn run(
        &self,
        frame: &[u8],
        dev: &Netdev,
        limits: &GenLimits,
        path: GenPath,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(&GenReport),
    ) -> Result<GenReport, SteerError> {
        let flows = self
            .flows
            .get()
            .ok_or_else(|| SteerError::Object("the generator runs only once configured".into()))?;
        let first = self.generated()?;
        if path == GenPath::Only(Fallback::Afxdp) {
            match self.run_afxdp(frame, dev, &flows, first, limits, stop, progress)? {
                Some(report) => return Ok(report),
                None => eprintln!("gen: sending single runs through AF_PACKET instead"),
            }
        }
        let ifindex = dev.ifindex;
        let limit = first.saturating_add(limits.packets).max(1);
        let interval = interval_ns(limits.rate);
        self.config.update(&0u32.to_ne_bytes(), &flows.encode(interval, limit))?;
        let batch = if interval > 0 { PACED_BATCH } else { BATCH };
        let started = Instant::now();
        let mut report = GenReport::default();
        let mut last_progress = started;
        let mut repeat = FIRST_REPEAT;
        let packet_sender = || {
            FrameSender::new(ifindex)
                .map_err(|error| SteerError::Object(format!("an AF_PACKET socket: {error}")))
        };
        let mut sender = None;
        if let GenPath::Only(_) = path {
            sender = Some(packet_sender()?);
            report.fallback = Some(Fallback::BpfPacket);
        }
        while report.sent < limits.packets
            && !stop.load(Ordering::Relaxed)
            && started.elapsed() < limits.duration
        {
            let call = Instant::now();
            match &sender {
                Some(sender) => self.run_copies(frame, sender, CALL_TARGET, &mut report)?,
                None => {
                    match bpf::test_run_live(self.program_fd, frame, ifindex, repeat as u32, batch)
                    {
                        Ok(()) => {}
                        Err(error) if error.errno() == Some(libc::EINTR) => {}
                        Err(error) if report.calls == 0 && refuses_live_frames(&error) => {
                            // Nothing was generated: the fallback starts from `first`.
                            eprintln!(
                                "gen: the kernel refuses live frames ({error}); making the frames \
                                 in user space and sending them by an AF_XDP socket instead"
                            );
                            if let Some(report) =
                                self.run_afxdp(frame, dev, &flows, first, limits, stop, progress)?
                            {
                                self.config.update(&0u32.to_ne_bytes(), &flows.encode(0, 0))?;
                                return Ok(report);
                            }
                            eprintln!(
                                "gen: sending each frame the program makes through an AF_PACKET \
                                 socket instead (about ten times slower)"
                            );
                            sender = Some(packet_sender()?);
                            report.fallback = Some(Fallback::BpfPacket);
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            repeat = next_repeat(repeat, call.elapsed());
            report.calls += 1;
            report.sent = self.generated()? - first;
            report.elapsed = started.elapsed();
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                progress(&report);
            }
        }
        // Stop emitting, whatever happens to the program next.
        self.config.update(&0u32.to_ne_bytes(), &flows.encode(0, 0))?;
        report.sent = self.generated()? - first;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The AF_XDP fallback ([`super::txgen`]): frames like `frame` with the flows of
    /// `flows`, numbered from `first`, out of queue 0 of `dev`. None (and why on stderr)
    /// where the socket does not open (an old kernel, a locked-memory limit).
    #[allow(clippy::too_many_arguments)]
    fn run_afxdp(
        &self,
        frame: &[u8],
        dev: &Netdev,
        flows: &GenConfig,
        first: u64,
        limits: &GenLimits,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(&GenReport),
    ) -> Result<Option<GenReport>, SteerError> {
        let seed = bpf::monotonic_ns() ^ u64::from(std::process::id());
        let mut maker = txgen::FrameMaker::new(frame, *flows, first, seed)
            .map_err(|error| SteerError::Object(format!("the AF_XDP generator: {error}")))?;
        let mut port = match XskPort::open(&dev.name, 0, XskConfig::default()) {
            Ok(port) => port,
            Err(error) => {
                eprintln!("gen: no AF_XDP socket ({error})");
                return Ok(None);
            }
        };
        if let Some(bytes) = limits.send_buffer {
            port.set_send_buffer(bytes).map_err(|error| {
                SteerError::Object(format!(
                    "the AF_XDP generator's send buffer of {bytes} bytes: {error}"
                ))
            })?;
        }
        eprintln!(
            "gen: sending by AF_XDP on {} queue 0 ({} mode, {} frames per kick, send buffer {} bytes)",
            dev.name,
            port.mode(),
            port.tx_budget(),
            port.send_buffer()
                .map_or_else(|error| format!("unknown: {error}"), |bytes| bytes.to_string())
        );
        let mut report = GenReport { fallback: Some(Fallback::Afxdp), ..GenReport::default() };
        txgen::run(&mut port, &mut maker, limits, stop, &mut report, progress);
        Ok(Some(report))
    }

    /// The fallback of [`Generator::run`] where live frames are refused, for about `budget`:
    /// the program runs on one frame at a time (not live: it still gives each its flow, its
    /// stamp and its pacing), and what it returns `XDP_TX` for leaves through `sender`. A
    /// frame the device's queue had no room for (`ENOBUFS`) is counted in
    /// [`GenReport::not_sent`], not retried.
    fn run_copies(
        &self,
        frame: &[u8],
        sender: &FrameSender,
        budget: Duration,
        report: &mut GenReport,
    ) -> Result<(), SteerError> {
        const XDP_TX: u32 = 3;
        let mut out = vec![0u8; frame.len() + 256];
        let started = Instant::now();
        while started.elapsed() < budget {
            for _ in 0..COPIES_BETWEEN_CLOCK_READS {
                let run = bpf::test_run(self.program_fd, frame, 0, 0, &mut out)?;
                if run.retval != XDP_TX {
                    continue;
                }
                match sender.send(&out[..run.out_len]) {
                    Ok(()) => {}
                    Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => {
                        report.not_sent += 1;
                    }
                    Err(error) => {
                        return Err(SteerError::Object(format!("sending a frame: {error}")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `error` says this kernel does not run live frames at all (some kernels refuse
/// `BPF_F_TEST_XDP_LIVE_FRAMES` with `EPERM` even to root), rather than that this call failed.
fn refuses_live_frames(error: &SteerError) -> bool {
    matches!(error.errno(), Some(libc::EPERM | libc::EOPNOTSUPP | ENOTSUPP))
}

/// The kernel's internal "not supported" (524), which BPF commands may return as it is.
const ENOTSUPP: i32 = 524;
/// Frames [`Generator::run_copies`] makes between two reads of the clock.
const COPIES_BETWEEN_CLOCK_READS: u32 = 64;

#[cfg(test)]
pub(super) mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    use super::*;
    use crate::dataplane::io::afxdp::bpf::tests::root;
    use crate::dataplane::io::afxdp::testns::Netns;

    pub(crate) const SPEC: FrameSpec = FrameSpec {
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
        let value = config.encode(1000, 7);
        assert_eq!(u32::from_ne_bytes(value[0..4].try_into().unwrap()), 1000);
        assert_eq!(u32::from_ne_bytes(value[4..8].try_into().unwrap()), 0x0a64_0001);
        assert_eq!(u32::from_ne_bytes(value[8..12].try_into().unwrap()), 1, "spans at least 1");
        assert_eq!(u16::from_ne_bytes(value[12..14].try_into().unwrap()), 1024);
        assert_eq!(u16::from_ne_bytes(value[14..16].try_into().unwrap()), 1);
        assert_eq!(u16::from_ne_bytes(value[16..18].try_into().unwrap()), 42);
        assert_eq!(u16::from_ne_bytes(value[18..20].try_into().unwrap()), 1, "restore");
        assert_eq!(u64::from_ne_bytes(value[24..32].try_into().unwrap()), 1000);
        assert_eq!(u64::from_ne_bytes(value[32..40].try_into().unwrap()), 7);
    }

    #[test]
    fn calls_are_sized_to_last_about_half_a_second() {
        assert_eq!(interval_ns(None), 0);
        assert_eq!(interval_ns(Some(1_000_000)), 1000);
        assert_eq!(interval_ns(Some(0)), 1_000_000_000, "no division by zero");
        assert_eq!(interval_ns(Some(u64::MAX)), 1);
        assert_eq!(next_repeat(1 << 16, Duration::from_millis(250)), 1 << 17);
        assert_eq!(next_repeat(1 << 16, Duration::ZERO), 1 << 20, "grows at most 16x a call");
        assert_eq!(next_repeat(1 << 12, Duration::from_secs(10)), MIN_REPEAT);
        assert_eq!(next_repeat(MAX_REPEAT, Duration::from_millis(1)), MAX_REPEAT);
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

    /// Whether `frame`'s IPv4 and L4 checksums verify.
    pub(crate) fn checksums_ok(frame: &[u8]) -> bool {
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

    /// The fallback where live frames are refused: every frame the program makes (and
    /// returns `XDP_TX` for) leaves through the AF_PACKET socket and reaches the veth peer,
    /// and none after the program's limit.
    #[test]
    fn the_fallback_sends_each_frame_the_program_makes() {
        if !root() {
            eprintln!("skipped: loading BPF and a namespace need root");
            return;
        }
        let netns = Netns::create(format!("xlb-{}-gen", std::process::id()));
        // No IPv6 on the veths: their router solicitations would be counted as ours.
        let sysctl = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"];
        netns.run("ip", &["netns", "exec", &netns.name, "sysctl", "-qw", sysctl[0], sysctl[1]]);
        netns.ip(&["link", "add", "name", "gena", "type", "veth", "peer", "name", "genb"]);
        netns.ip(&["link", "set", "gena", "up"]);
        netns.ip(&["link", "set", "genb", "up"]);
        let rx_packets = || -> u64 {
            let out = netns.ip(&["-s", "-j", "link", "show", "genb"]);
            let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
            links[0]["stats64"]["rx"]["packets"].as_u64().expect("rx packets")
        };
        let links: serde_json::Value =
            serde_json::from_str(&netns.ip(&["-j", "link", "show", "gena"])).expect("ip -j");
        let ifindex = links[0]["ifindex"].as_u64().and_then(|i| u32::try_from(i).ok());
        let ifindex = ifindex.expect("gena's ifindex");
        let before = rx_packets();
        let limit = 100;
        let made = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    netns.enter();
                    let generator = Generator::load().expect("load");
                    let config = GenConfig {
                        flows: 0,
                        src_addr: Ipv4Addr::new(10, 200, 0, 1),
                        src_span: 256,
                        src_port: 1024,
                        port_span: 1024,
                        stamp_offset: None,
                    };
                    let frame = FrameSpec { proto: Proto::Tcp, ..SPEC }.build();
                    generator.configure(&frame, &config).unwrap();
                    let first = generator.generated().unwrap();
                    let encoded = config.encode(0, first + limit);
                    generator.config.update(&0u32.to_ne_bytes(), &encoded).unwrap();
                    let sender = FrameSender::new(ifindex).expect("AF_PACKET socket");
                    let mut report = GenReport::default();
                    let budget = Duration::from_millis(200);
                    generator.run_copies(&frame, &sender, budget, &mut report).unwrap();
                    assert_eq!(report.not_sent, 0);
                    generator.generated().unwrap() - first
                })
                .join()
                .expect("generator thread")
        });
        assert_eq!(made, limit, "the program's limit holds in the fallback");
        assert_eq!(rx_packets() - before, limit, "every frame made reached the peer");
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
            let template = FrameSpec { proto, ..SPEC }.build();
            generator.configure(&template, &config).unwrap();
            let before = generator.generated().unwrap();
            // Live mode feeds the program what the page last held: chain the outputs, and
            // scribble over the headers as a forwarder would.
            let mut frame = template.clone();
            let mut sources = Vec::new();
            for _ in 0..6 {
                frame[..12].fill(0xee);
                frame[22] = 1;
                frame = generator.make_one(&frame).unwrap();
                assert_eq!(&frame[..12], &template[..12], "MACs restored");
                assert_eq!(frame[22], template[22], "TTL restored");
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
        let mut frame = FrameSpec { proto: Proto::Tcp, ..SPEC }.build();
        generator.configure(&frame, &config).unwrap();
        assert!(generator.configure(&frame[..59], &config).is_err(), "runts are refused");
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
