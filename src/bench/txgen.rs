//! The traffic generator's fallback where the kernel refuses `BPF_PROG_RUN` live frames
//! ([`super::generator`]): the frames `xlb_gen` would make, made in user space and sent by
//! an AF_XDP socket's TX ring ([`XskPort`], copy mode on veth).
//!
//! Each UMEM frame gets the template once, the first time it is used; from then on every
//! send rewrites in place only what `gen.bpf.c` changes (the source address and port, and
//! the stamp) and updates the checksums incrementally (RFC 1624) from the values the frame
//! holds, as the program does. Frames go on the TX ring in batches of [`BATCH`] and leave
//! with one kick (`sendto`) per batch (the socket's per-kick budget is raised to
//! [`crate::dataplane::io::afxdp::xsk::TX_BUDGET`] where the kernel allows it, so one kick sends a batch); completions
//! are reclaimed at every flush.
//!
//! The knobs are the program's, kept the same way:
//! - flows: [`FrameMaker`] walks flow `n mod flows` exactly as [`GenConfig::source_of`]
//!   models the program, or draws random sources over the same spans (a SYN flood);
//! - stamps: the low 32 bits of `CLOCK_MONOTONIC` nanoseconds (the clock of
//!   `bpf_ktime_get_ns()`, which the sink reads), in host order at the config's offset; one
//!   clock read per batch, so the frames of a batch (which leave with one kick) share it;
//! - the packet limit: no more frames are queued than the limit, and the run ends only once
//!   every queued frame has left (completions back), so a limit is sent exactly;
//! - the rate cap: [`Pacer`] releases the frames due by now, at most [`PACED_BATCH`] at a
//!   time, and the loop spins between them, so frames leave evenly, not in bursts; a sender
//!   that falls behind by more than [`CATCH_UP_NS`] goes on from now, as the program does.
//!
//! Invariants: the template is a plain IPv4 frame ([`FrameMaker::new`] checks: 20-byte
//! header, TCP or UDP, the stamp inside the frame and past the ports); every frame the
//! maker writes has valid IPv4 and TCP/UDP checksums; a UDP checksum of 0 (none) stays 0.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataplane::io::afxdp::bpf::monotonic_ns;
use crate::dataplane::io::afxdp::xsk::XskPort;
use crate::dataplane::worker::Port;
use crate::wire::checksum::Delta;

use super::generator::{GenConfig, GenLimits, GenReport};

/// Frames per kick without a rate cap: the live generator's batch (the kernel's NAPI
/// weight). Measured on veth (6.18, copy mode, `bench/results/generator-2026-12-06.md`):
/// 32 to 128 send alike; 256, a whole veth receive ring per kick, sent about half as many
/// in the one pair of runs compared, with the worst latency.
pub const BATCH: usize = 64;
/// Most frames released at once under a rate cap (what is due leaves at once, in order).
pub const PACED_BATCH: usize = 8;
/// How far behind its schedule a capped sender may fall before it goes on from now
/// (`gen.bpf.c`'s `CATCH_UP_NS`: a burst of at most 200 µs worth).
pub const CATCH_UP_NS: u64 = 200_000;
/// How long the end of a run waits for frames still on the TX ring to leave.
pub const DRAIN_FOR: Duration = Duration::from_millis(500);

const ETH_LEN: usize = 14;
const IP_SUM: usize = ETH_LEN + 10;
const IP_SRC: usize = ETH_LEN + 12;
const L4: usize = ETH_LEN + 20;

/// Makes the generator's frames from a template: the flow walk, the stamp and the checksums
/// of `xlb_gen`, in user space.
#[derive(Debug, Clone)]
pub struct FrameMaker {
    template: Vec<u8>,
    config: GenConfig,
    /// Where the L4 checksum is (TCP or UDP), and whether it is in use (UDP's may be 0).
    l4_sum: usize,
    l4_has_sum: bool,
    /// Where the stamp goes (None: no stamp).
    stamp_at: Option<usize>,
    /// The next frame's number: the flow counter.
    next: u64,
    /// Random mode's xorshift64* state (never zero).
    random: u64,
}

impl FrameMaker {
    /// A maker of frames like `template` (a frame of [`super::generator::FrameSpec::build`])
    /// with the flows and stamp of `config`, numbering frames from `first`; `seed` seeds
    /// random mode. An error says what the template lacks.
    pub fn new(
        template: &[u8],
        config: GenConfig,
        first: u64,
        seed: u64,
    ) -> Result<FrameMaker, String> {
        if template.len() < L4 + 20 {
            return Err(format!("a {}-byte template: too short for the generator", template.len()));
        }
        if template[12..14] != [0x08, 0x00] || template[ETH_LEN] != 0x45 {
            return Err("the template is not IPv4 with a 20-byte header".into());
        }
        let l4_sum = match template[ETH_LEN + 9] {
            6 => L4 + 16,
            17 => L4 + 6,
            other => return Err(format!("the template's protocol is {other}, not TCP or UDP")),
        };
        let l4_has_sum = l4_sum == L4 + 16 || template[l4_sum..l4_sum + 2] != [0, 0];
        let stamp_at = match config.stamp_offset.map(usize::from) {
            None => None,
            Some(at) if at >= L4 + 4 && at + 4 <= template.len() && at % 2 == 0 => Some(at),
            Some(at) => {
                return Err(format!(
                    "stamp offset {at}: not an even offset past the ports and inside a {}-byte \
                     frame",
                    template.len()
                ));
            }
        };
        Ok(FrameMaker {
            template: template.to_vec(),
            config,
            l4_sum,
            l4_has_sum,
            stamp_at,
            next: first,
            random: seed | 1,
        })
    }

    /// The frames' length.
    pub fn len(&self) -> usize {
        self.template.len()
    }

    /// Never: a template is at least a minimal frame.
    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }

    /// Frames made so far, counting from `first`.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The next source (address, port): the program's walk in counter mode, a draw over the
    /// spans in random mode.
    fn next_source(&mut self) -> (Ipv4Addr, u16) {
        let n = self.next;
        self.next += 1;
        if let Some(source) = self.config.source_of(n) {
            return source;
        }
        // xorshift64* (Vigna): the high bits are the good ones.
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        let draw = self.random.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let addr_span = u64::from(self.config.src_span.max(1));
        let port_span = u64::from(self.config.port_span.max(1));
        let addr = u32::from(self.config.src_addr).wrapping_add(((draw >> 32) % addr_span) as u32);
        let port = self.config.src_port.wrapping_add(((draw & 0xffff_ffff) % port_span) as u16);
        (Ipv4Addr::from(addr), port)
    }

    /// Makes the next frame in `frame`, stamped `stamp`: `frame` holds the last frame this
    /// maker made there, or anything else (a fresh UMEM frame's zeros), which is told by its
    /// Ethernet header and gets the template first. False, and `frame` untouched, if it is
    /// not [`FrameMaker::len`] bytes long.
    pub fn make(&mut self, frame: &mut [u8], stamp: u32) -> bool {
        if frame.len() != self.template.len() {
            return false;
        }
        if frame[..ETH_LEN] != self.template[..ETH_LEN] {
            frame.copy_from_slice(&self.template);
        }
        let (addr, port) = self.next_source();
        let word = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
        let old_addr = u32::from_be_bytes([
            frame[IP_SRC],
            frame[IP_SRC + 1],
            frame[IP_SRC + 2],
            frame[IP_SRC + 3],
        ]);
        let old_port = word(L4);
        let moved = Delta::NONE.u32(old_addr, u32::from(addr));
        let ip_sum = moved.apply(word(IP_SUM));
        let mut l4 = moved.u16(old_port, port);
        let old_l4_sum = word(self.l4_sum);
        frame[IP_SUM..IP_SUM + 2].copy_from_slice(&ip_sum.to_be_bytes());
        frame[IP_SRC..IP_SRC + 4].copy_from_slice(&addr.octets());
        frame[L4..L4 + 2].copy_from_slice(&port.to_be_bytes());
        if let Some(at) = self.stamp_at {
            let old = u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
            let bytes = stamp.to_ne_bytes();
            l4 = l4.u32(old, u32::from_be_bytes(bytes));
            frame[at..at + 4].copy_from_slice(&bytes);
        }
        if self.l4_has_sum {
            let sum =
                if self.l4_sum == L4 + 6 { l4.apply_udp(old_l4_sum) } else { l4.apply(old_l4_sum) };
            frame[self.l4_sum..self.l4_sum + 2].copy_from_slice(&sum.to_be_bytes());
        }
        true
    }
}

/// The rate cap: which frames are due, one per `interval_ns`, on the schedule `gen.bpf.c`
/// keeps (a sender more than [`CATCH_UP_NS`] behind goes on from now, its next frame one
/// interval after the ones it releases now).
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    interval_ns: u64,
    /// When the next frame is due (None: before the first).
    next_ns: Option<u64>,
}

impl Pacer {
    /// One frame per `interval_ns` (0: no cap).
    pub fn new(interval_ns: u64) -> Pacer {
        Pacer { interval_ns, next_ns: None }
    }

    /// How many of at most `max` frames may leave at `now_ns`; they count as sent.
    pub fn due(&mut self, now_ns: u64, max: usize) -> usize {
        if self.interval_ns == 0 {
            return max;
        }
        let next = self.next_ns.unwrap_or(now_ns);
        if now_ns < next || max == 0 {
            self.next_ns = Some(next);
            return 0;
        }
        let behind = (now_ns - next) / self.interval_ns + 1;
        let count = behind.min(max as u64);
        let after = next.saturating_add(count * self.interval_ns);
        // Far behind: on from now (the frames just released left now), not in a burst.
        let resumed = now_ns.saturating_add(self.interval_ns);
        self.next_ns =
            Some(if after.saturating_add(CATCH_UP_NS) < now_ns { resumed } else { after });
        count as usize
    }
}

/// Sends frames of `maker` through `port` until `limits` or `stop` end the run, adding to
/// `report` (`sent`: frames put on the TX ring; `not_sent`: those the kernel or the ring
/// refused, see [`refused`]); calls `progress` about once a second. Ends once every frame
/// queued has left (or after [`DRAIN_FOR`]).
pub fn run(
    port: &mut XskPort,
    maker: &mut FrameMaker,
    limits: &GenLimits,
    stop: &AtomicBool,
    report: &mut GenReport,
    progress: &mut dyn FnMut(&GenReport),
) {
    let interval = super::generator::interval_ns(limits.rate);
    let batch = if interval > 0 { PACED_BATCH } else { BATCH };
    let mut pacer = Pacer::new(interval);
    let started = Instant::now();
    let mut last_progress = started;
    let first_sent = port.stats().tx_packets;
    let len = maker.len();
    let mut sent = 0u64;
    while sent < limits.packets && !stop.load(Ordering::Relaxed) {
        let now = monotonic_ns();
        let left = usize::try_from(limits.packets - sent).unwrap_or(usize::MAX);
        let due = pacer.due(now, batch.min(left));
        if due > 0 {
            port.send_in_place(due, len, &mut |frame| {
                maker.make(frame, now as u32);
            });
            port.flush();
            report.calls += 1;
            sent = port.stats().tx_packets - first_sent;
        } else {
            std::hint::spin_loop();
        }
        // One clock read per batch above; the time bound and progress every 64 batches.
        if report.calls.is_multiple_of(64) || due == 0 {
            let elapsed = started.elapsed();
            if elapsed >= limits.duration {
                break;
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                report.sent = sent;
                report.elapsed = elapsed;
                progress(report);
            }
        }
    }
    let draining = Instant::now();
    while port.tx_pending() > 0 && draining.elapsed() < DRAIN_FOR {
        port.flush();
        std::thread::sleep(Duration::from_micros(100));
    }
    let stats = port.stats();
    report.sent = stats.tx_packets - first_sent;
    report.not_sent = refused(&stats);
    report.elapsed = started.elapsed();
}

/// Frames a port counted as sent that never left: the driver dropped one
/// (`tx_kick_dropped`: the kernel answered a kick EBUSY), or the TX ring was full
/// (`tx_ring_full`: freed, never on the ring). A frame without a free UMEM frame is not
/// made at all (the loop tries again after the next reclaim).
pub fn refused(stats: &crate::report::PortStats) -> u64 {
    stats.tx_ring_full + stats.tx_kick_dropped
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;
    use crate::bench::generator::tests::{SPEC, checksums_ok};
    use crate::bench::generator::{
        Fallback, FrameSpec, GenPath, Generator, MIN_FRAME, stamp_offset,
    };
    use crate::dataplane::io::afxdp::netdev::Netdev;
    use crate::dataplane::io::afxdp::testns::Netns;
    use crate::flow::Proto;
    use crate::wire::MacAddr;

    fn counter_config(proto: Proto) -> GenConfig {
        GenConfig {
            flows: 5,
            src_addr: Ipv4Addr::new(10, 100, 0, 1),
            src_span: 1,
            src_port: 2000,
            port_span: 2,
            stamp_offset: Some(stamp_offset(proto)),
        }
    }

    fn source(frame: &[u8]) -> (Ipv4Addr, u16) {
        let addr = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
        (addr, u16::from_be_bytes([frame[34], frame[35]]))
    }

    /// The program's walk, stamp and checksums, whether a buffer is fresh (zeros: gets the
    /// template) or holds the maker's last frame (rewritten in place), as UMEM frames are.
    #[test]
    fn frames_walk_the_flows_with_stamps_and_valid_checksums_fresh_or_reused() {
        for proto in [Proto::Tcp, Proto::Udp] {
            for size in [MIN_FRAME, 200] {
                let template = FrameSpec { proto, size, ..SPEC }.build();
                let config = counter_config(proto);
                let mut maker = FrameMaker::new(&template, config, 7, 1).unwrap();
                assert_eq!(maker.len(), template.len());
                let mut buffers = [vec![0u8; template.len()], vec![0u8; template.len()]];
                for i in 0..12u64 {
                    let buffer = &mut buffers[(i % 2) as usize];
                    let stamp = 0x0102_0304u32.wrapping_mul(i as u32 + 1);
                    assert!(maker.make(buffer, stamp));
                    assert!(checksums_ok(buffer), "{proto:?} {size} frame {i}");
                    assert_eq!(source(buffer), config.source_of(7 + i).unwrap(), "{proto:?}");
                    let at = usize::from(stamp_offset(proto));
                    assert_eq!(buffer[at..at + 4], stamp.to_ne_bytes(), "stamped in host order");
                    assert_eq!(buffer[..24], template[..24], "{proto:?}: only sources change");
                }
                assert_eq!(maker.next(), 19);
            }
        }
    }

    #[test]
    fn random_sources_stay_within_their_spans_and_vary() {
        let config = GenConfig {
            flows: 0,
            src_addr: Ipv4Addr::new(10, 200, 0, 0),
            src_span: 256,
            src_port: 1024,
            port_span: 1000,
            stamp_offset: None,
        };
        let template = FrameSpec { proto: Proto::Tcp, ..SPEC }.build();
        let mut maker = FrameMaker::new(&template, config, 0, 42).unwrap();
        let mut frame = vec![0u8; template.len()];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            assert!(maker.make(&mut frame, 0));
            assert!(checksums_ok(&frame));
            let (addr, port) = source(&frame);
            assert!(addr >= config.src_addr && addr <= config.last_src_addr(), "{addr}");
            assert!((1024..2024).contains(&port), "{port}");
            assert_eq!(frame[38..42], template[38..42], "no stamp configured");
            seen.insert((addr, port));
        }
        assert!(seen.len() > 150, "random sources: {} distinct of 200", seen.len());
    }

    #[test]
    fn a_udp_datagram_without_checksum_keeps_none() {
        let mut template = SPEC.build();
        template[40..42].fill(0);
        let mut maker = FrameMaker::new(&template, counter_config(Proto::Udp), 0, 1).unwrap();
        let mut frame = vec![0u8; template.len()];
        for _ in 0..4 {
            maker.make(&mut frame, 0xdead_beef);
            assert_eq!(frame[40..42], [0, 0]);
        }
    }

    #[test]
    fn bad_templates_and_buffers_are_refused() {
        let udp = SPEC.build();
        let mut ipv6 = udp.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut options = udp.clone();
        options[14] = 0x46;
        let mut icmp = udp.clone();
        icmp[23] = 1;
        let stamp = |offset| GenConfig { stamp_offset: Some(offset), ..counter_config(Proto::Udp) };
        let cases: [(&str, &[u8], GenConfig, &str); 6] = [
            ("runt", &udp[..53], counter_config(Proto::Udp), "too short"),
            ("IPv6", &ipv6, counter_config(Proto::Udp), "not IPv4"),
            ("IP options", &options, counter_config(Proto::Udp), "20-byte header"),
            ("ICMP", &icmp, counter_config(Proto::Udp), "protocol is 1"),
            ("stamp over the ports", &udp, stamp(34), "stamp offset 34"),
            ("stamp past the end", &udp, stamp(58), "stamp offset 58"),
        ];
        for (name, template, config, why) in cases {
            let error = FrameMaker::new(template, config, 0, 1).expect_err(name);
            assert!(error.contains(why), "{name}: {error}");
        }
        let mut maker = FrameMaker::new(&udp, counter_config(Proto::Udp), 0, 1).unwrap();
        let mut short = vec![9u8; udp.len() - 1];
        assert!(!maker.make(&mut short, 0), "a buffer of the wrong length");
        assert!(short.iter().all(|&b| b == 9), "left untouched");
        assert_eq!(maker.next(), 0, "and no frame counted");
    }

    #[test]
    fn the_pacer_releases_what_is_due_and_never_bursts_past_catch_up() {
        let mut free = Pacer::new(0);
        assert_eq!(free.due(5, 64), 64, "no cap: a whole batch");
        // One frame per 1000 ns from the first call at t = 10_000.
        let mut pacer = Pacer::new(1000);
        let steps: [(u64, usize, usize); 8] = [
            (10_000, 8, 1), // the first frame leaves at once
            (10_500, 8, 0), // the next is due at 11_000
            (11_000, 8, 1), // due
            (14_999, 8, 3), // 12, 13 and 14 µs
            (15_000, 0, 0), // room for none: not counted
            (15_000, 8, 1), // still due
            (30_000, 8, 8), // behind: at most a batch...
            (30_000, 8, 7), // ... and the rest of what is due
        ];
        for (i, (now, max, expected)) in steps.into_iter().enumerate() {
            assert_eq!(pacer.due(now, max), expected, "step {i} at {now}");
        }
        // Far behind (> CATCH_UP_NS): the schedule restarts from now, no catch-up burst.
        let mut late = Pacer::new(1000);
        assert_eq!(late.due(0, 8), 1);
        assert_eq!(late.due(1_000_000, 8), 8);
        assert_eq!(late.due(1_000_000, 8), 0, "the missed frames are not sent in a burst");
        assert_eq!(late.due(1_001_000, 8), 1);
    }

    /// The fallback where live frames are refused, end to end on a veth pair: exactly the
    /// packet limit leaves, at no more than the rate cap (frame n's stamp is at least n
    /// intervals after the first's), every datagram with valid checksums (the peer's kernel
    /// verifies them before a socket gets one; `InCsumErrors` stays 0), from the sources
    /// the config names.
    #[test]
    fn the_afxdp_fallback_sends_the_limit_paced_valid_from_the_configured_flows() {
        if !crate::testkit::root_or_skip("the_afxdp_fallback_sends_the_limit_paced") {
            return;
        }
        let netns = Netns::create(format!("xlb-{}-txgen", std::process::id()));
        let sysctls = [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ];
        for sysctl in sysctls {
            netns.run("ip", &["netns", "exec", &netns.name, "sysctl", "-qw", sysctl]);
        }
        netns.ip(&["link", "add", "name", "gena", "type", "veth", "peer", "name", "genb"]);
        netns.ip(&["addr", "add", "10.10.0.100/24", "dev", "genb"]);
        netns.ip(&["link", "set", "gena", "up"]);
        netns.ip(&["link", "set", "genb", "up"]);
        let snmp_udp = |field: &str| -> u64 {
            let snmp = netns.run("ip", &["netns", "exec", &netns.name, "cat", "/proc/net/snmp"]);
            let mut lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
            let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
            let at = names.split_whitespace().position(|name| name == field).unwrap();
            values.split_whitespace().nth(at).unwrap().parse().unwrap()
        };
        // Read with `ip` (sysfs shows the test process's namespace, not the thread's).
        let device = |name: &str| -> Netdev {
            let links: serde_json::Value =
                serde_json::from_str(&netns.ip(&["-j", "link", "show", name])).expect("ip -j");
            let mac = links[0]["address"].as_str().expect("a MAC");
            let mac = crate::wire::ethernet::parse_mac(mac).expect("a MAC");
            let ifindex = links[0]["ifindex"].as_u64().expect("an ifindex");
            let ifindex = u32::try_from(ifindex).expect("an ifindex");
            Netdev { name: name.into(), ifindex, mac: MacAddr(mac), rx_queues: 1, mtu: 1500 }
        };
        let limit = 300u64;
        let rate = 20_000u64; // 50 µs apart: 15 ms of frames
        let config = GenConfig {
            flows: 1000,
            src_addr: Ipv4Addr::new(10, 100, 0, 1),
            src_span: 1,
            src_port: 1024,
            port_span: 100,
            stamp_offset: Some(stamp_offset(Proto::Udp)),
        };
        let (report, datagrams) = std::thread::scope(|scope| {
            // The peer reads as the frames come (its receive buffer holds fewer than the
            // limit).
            let (ready, bound) = std::sync::mpsc::channel();
            let netns = &netns;
            let peer = scope.spawn(move || {
                netns.enter();
                let socket = UdpSocket::bind("10.10.0.100:80").expect("the peer's socket");
                socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                ready.send(()).unwrap();
                let mut datagrams = Vec::new();
                let mut buffer = [0u8; 64];
                while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                    datagrams.push((from, buffer[..len].to_vec()));
                }
                datagrams
            });
            bound.recv().expect("the peer is bound");
            let generator = scope.spawn(|| {
                netns.enter();
                let generator = Generator::load().expect("load");
                let (gena, genb) = (device("gena"), device("genb"));
                let frame = FrameSpec { src_mac: gena.mac, dst_mac: genb.mac, ..SPEC }.build();
                generator.configure(&frame, &config).unwrap();
                let limits = GenLimits {
                    packets: limit,
                    duration: Duration::from_secs(20),
                    rate: Some(rate),
                    // Raised as bench/sidebyside does (the socket must take it).
                    send_buffer: Some(4 << 20),
                };
                let stop = AtomicBool::new(false);
                generator
                    .run(&frame, &gena, &limits, GenPath::Only(Fallback::Afxdp), &stop, &mut |_| {})
                    .expect("run")
            });
            let report = generator.join().expect("the generator thread");
            (report, peer.join().expect("the peer thread"))
        });
        assert_eq!(report.fallback, Some(Fallback::Afxdp));
        assert_eq!((report.sent, report.not_sent), (limit, 0));
        assert_eq!(snmp_udp("RcvbufErrors"), 0, "the peer kept up");
        assert_eq!(datagrams.len() as u64, limit, "exactly the limit reached the peer");
        assert_eq!(snmp_udp("InCsumErrors"), 0);
        let interval = super::super::generator::interval_ns(Some(rate));
        let mut stamps = vec![None; limit as usize];
        for (from, payload) in &datagrams {
            let std::net::SocketAddr::V4(from) = from else { panic!("{from}") };
            // Counter mode over 1000 flows: frame n (n < 1000) is flow n.
            let n = (u32::from(*from.ip()) - u32::from(config.src_addr)) as u64 * 100
                + u64::from(from.port() - 1024);
            assert_eq!(config.source_of(n), Some((*from.ip(), from.port())), "flow {n}");
            let slot = &mut stamps[n as usize];
            assert!(slot.is_none(), "frame {n} twice");
            *slot = Some(u32::from_ne_bytes(payload[..4].try_into().unwrap()));
        }
        let first = stamps[0].expect("frame 0");
        for (n, stamp) in stamps.iter().enumerate() {
            let after = u64::from(stamp.expect("every frame").wrapping_sub(first));
            assert!(after >= n as u64 * interval, "frame {n} left {after} ns after the first");
        }
    }
}
