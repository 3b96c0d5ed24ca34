//! A stable-Rust fuzzer for xlb's parsers: the wire views, `Pipeline::process` and the config.
//!
//! cargo-fuzz needs a nightly toolchain (`-Zsanitizer`), so this is a plain program: a
//! deterministic generator of inputs (seed frames and texts, then mutations of them) feeding
//! each target, with every input run under `catch_unwind` and a watchdog thread for hangs.
//!
//! Usage: `cargo bench --bench fuzz -- [--target wire|pipeline|config|all] [--inputs N]
//! [--seed S]` (defaults: all, 10 000 000 per target, seed 1). Under `cargo test` (no
//! `--bench` argument, as `scripts/test` runs it in CI) it runs every target for 100 000
//! inputs in the dev profile.
//!
//! Targets:
//! - `wire`: every view's `new_checked` and accessors over the frame and each header offset
//!   (Ethernet, ARP, IPv4, TCP, UDP, ICMP and the packet an ICMP error quotes; IPv6 with its
//!   extension-header walk, ICMPv6, NDP and the packet an ICMPv6 error quotes), the setters
//!   the pipeline uses on a copy, the NDP writers, and the checksum helpers. Oracles: a
//!   filled checksum verifies, an incremental address rewrite keeps a valid IPv4 header
//!   checksum valid and a valid TCP/UDP/ICMPv6 checksum over IPv6 valid, the extension-header
//!   walk stays within its bounds, a checked NDP packet's options all parse, and the frames
//!   the NDP writers make parse back with a valid checksum.
//! - `pipeline`: three pipelines (three cores' slots, each other's conntrack peers) on one
//!   snapshot with DR, NAT and FullNAT services of both families, two dual-stack interfaces,
//!   static neighbours and unresolved ones; the state lives across inputs. Frames go through `process` or, one
//!   round in sixteen, a `process_batch` of up to 70 frames. Time advances with every input
//!   (sometimes by minutes), `maintain` runs every 512 inputs, ARP requests the pipelines
//!   emit are sometimes answered with `learn_neighbor` (neighbour solicitations with
//!   `learn_neighbor6`). Oracle: every frame gets exactly one
//!   counted verdict — the pipeline's counters (frames, bytes, each verdict kind and drop
//!   reason) equal the verdicts the harness saw returned, checked at every `maintain` and at
//!   the end; a `Tx` names an existing interface.
//! - `config`: `Config::parse` on mutated TOML texts (line and value mutations as well as
//!   bytes); a config that parses must build a `Snapshot` without panicking and read back
//!   from `to_toml` to an equal config.
//!
//! Seeds: the frames of the golden replay cases' kinds, built with `xlb::testkit`, the frames
//! of `examples/seed-dr.pcap`, IPv6 frames (TCP, UDP, extension headers the pipeline forwards
//! and refuses, a fragment, ICMPv6
//! echo and Packet Too Big, NDP; built with etherparse and the NDP writers, to the
//! snapshot's IPv6 VIP), `examples/*.toml`, the test configs and the string literals of
//! the config module's tests.
//!
//! Determinism: input `i` of a target is a pure function of (seed, target, i) and the seed
//! corpus, so a run can be repeated exactly, and the watchdog regenerates a hanging input to
//! save it. A panic or a hang writes the input to `fuzz/crashes/<target>-<hash>.bin` (a batch
//! as 2-byte big-endian lengths, each followed by its frame) and the program exits non-zero.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

use xlb::control::{Config, Snapshot};
use xlb::dataplane::{CoreSlot, IfaceId, Pipeline, Stat, Verdict};
use xlb::testkit::{self, ACK, FIN_ACK, Host, PSH_ACK, RST, SYN, SYN_ACK, VerdictTally};
use xlb::time::Instant;
use xlb::wire::ipv4::ip_proto;
use xlb::wire::ipv6::{self, ExtHeaders};
use xlb::wire::ndp::{self, AdvertFlags};
use xlb::wire::{
    ArpPacket, EtherType, EthernetFrame, IcmpPacket, Icmpv6Packet, Ipv4Packet, Ipv6Packet, MacAddr,
    NdpPacket, TcpPacket, UdpPacket, checksum, icmpv6,
};

/// Inputs per target in a full run (the issue's figure).
const FULL_INPUTS: u64 = 10_000_000;
/// Inputs per target in the CI smoke run.
const SMOKE_INPUTS: u64 = 100_000;
/// An input that runs longer than this is reported as a hang.
const HANG: Duration = Duration::from_secs(1);
/// Pipelines (cores) in the pipeline target.
const CORES: u16 = 3;
/// Inputs between two `maintain` calls.
const MAINTAIN_EVERY: u64 = 512;

// ---------------------------------------------------------------------------------------------
// Randomness

/// splitmix64: small, fast, and good enough to drive mutations.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// The generator of input `index` of `target` in a run with `seed`.
    fn for_input(seed: u64, target: Target, index: u64) -> Rng {
        Rng(xlb::hash::hash2(seed, target as u64, index))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        xlb::hash::mix64(self.0)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability 1/`n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Targets and seeds

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Wire = 1,
    Pipeline = 2,
    Config = 3,
}

impl Target {
    const ALL: [Target; 3] = [Target::Wire, Target::Pipeline, Target::Config];

    fn name(self) -> &'static str {
        match self {
            Target::Wire => "wire",
            Target::Pipeline => "pipeline",
            Target::Config => "config",
        }
    }
}

// The pipeline target's network: eth0 10.1.1.0/24 (clients, DR real servers, the seed-dr
// capture's lab), eth1 10.3.0.0/24 (NAT and FullNAT real servers).
const LB0: Host = Host::new([0x02, 0, 0x0a, 0x01, 0x01, 0x02], [10, 1, 1, 2]);
const LB1: Host = Host::new([0x02, 0, 0, 0, 0x03, 0x02], [10, 3, 0, 2]);
const CLIENT: Host = Host::new([0x02, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
const GATEWAY: Host = Host::new([0x02, 0, 0x0a, 0x01, 0x01, 0x01], [10, 1, 1, 1]);
const RS1: Host = Host::new([0x02, 0, 0x0a, 0x01, 0x01, 0x0b], [10, 1, 1, 11]);
const RS12: Host = Host::new([0x02, 0, 0x0a, 0x01, 0x01, 0x0c], [10, 1, 1, 12]);
const NAT1: Host = Host::new([0x02, 0, 0, 0, 0x03, 0x0b], [10, 3, 0, 11]);
const NAT2: Host = Host::new([0x02, 0, 0, 0, 0x03, 0x0c], [10, 3, 0, 12]);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VIP_DR: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 10);
const VIP_NAT: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 101);
const VIP_FULLNAT: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 102);
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 200);

/// Backends that never answer ARP: frames for them are held, then given up.
const SILENT: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 1, 13), Ipv4Addr::new(10, 3, 0, 13)];

/// A snapshot with every forward mode, two interfaces, static neighbours, neighbours learned
/// from ARP and silent ones.
const PIPELINE_CONFIG: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.2/24"
mac = "02:00:0a:01:01:02"
gateway = "10.1.1.1"
addr6 = "2001:db8:1:1::2/64"
gateway6 = "2001:db8:1:1::1"

[[interface]]
name = "eth1"
addr = "10.3.0.2/24"
mac = "02:00:00:00:03:02"
addr6 = "2001:db8:3::2/64"

[conntrack]
capacity = 4096

[[neighbor]]
ip = "10.1.1.1"
mac = "02:00:0a:01:01:01"
[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:0a:01:01:0b"
[[neighbor]]
ip = "10.3.0.11"
mac = "02:00:00:00:03:0b"

[[service]]
vip = "10.1.1.10"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"
[[service.backend]]
addr = "10.1.1.12"
[[service.backend]]
addr = "10.1.1.13"

[[service]]
vip = "10.1.1.10"
port = 53
proto = "udp"
forward = "dr"
scheduler = "sh"
[[service.backend]]
addr = "10.1.1.12"

[[service]]
vip = "10.1.1.101"
port = 80
forward = "nat"
scheduler = "wlc"
[[service.backend]]
addr = "10.3.0.11"
port = 8080
[[service.backend]]
addr = "10.3.0.12"
port = 8080
weight = 3
[[service.backend]]
addr = "10.3.0.13"
port = 8080

[[service]]
vip = "10.1.1.101"
port = 53
proto = "udp"
forward = "nat"
scheduler = "rr"
[[service.backend]]
addr = "10.3.0.11"
port = 5353

[[service]]
vip = "10.1.1.102"
port = 80
forward = "fullnat"
scheduler = "lc"
local_addrs = ["10.3.0.200", "10.3.0.201"]
[[service.backend]]
addr = "10.3.0.11"
port = 8080
[[service.backend]]
addr = "10.3.0.12"
port = 8080

[[service]]
vip = "10.1.1.102"
port = 53
proto = "udp"
forward = "fullnat"
local_addrs = ["10.3.0.200"]
[[service.backend]]
addr = "10.3.0.11"
port = 5353

# IPv6: the VIP of the IPv6 seed frames in every mode (NDP resolves the backends).
[[neighbor]]
ip = "2001:db8:1:1::11"
mac = "02:00:0a:01:01:0b"

[[service]]
vip = "2001:db8:1:1::10"
port = 80
forward = "dr"
[[service.backend]]
addr = "2001:db8:1:1::11"
[[service.backend]]
addr = "2001:db8:1:1::13"

[[service]]
vip = "2001:db8:1:1::10"
port = 53
proto = "udp"
forward = "nat"
scheduler = "sh"
[[service.backend]]
addr = "2001:db8:3::11"
port = 5353

[[service]]
vip = "2001:db8:1:1::10"
port = 443
forward = "fullnat"
local_addrs = ["2001:db8:3::200"]
[[service.backend]]
addr = "2001:db8:3::11"
port = 8443
"#;

/// Good frames of every kind the golden cases feed: flows of each forward mode in both
/// directions, ARP, ICMP echo and errors, ssh to the box, a fragment.
fn golden_frames() -> Vec<Vec<u8>> {
    let payload = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n";
    let dns = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00";
    let client = (CLIENT.ip, 40000);
    let dr = (VIP_DR, 80);
    let nat = (VIP_NAT, 80);
    let fullnat = (VIP_FULLNAT, 80);
    let c = CLIENT.mac;
    let lb = LB0.mac;
    let dr_syn = testkit::tcp(c, lb, client, dr, SYN, &[]);
    let nat_syn = testkit::tcp(c, lb, client, nat, SYN, &[]);
    let nat_reply = testkit::tcp(NAT1.mac, LB1.mac, (NAT1.ip, 8080), client, SYN_ACK, &[]);
    let mut frames = vec![
        dr_syn.clone(),
        testkit::tcp(c, lb, client, dr, PSH_ACK, payload),
        testkit::tcp(c, lb, client, dr, FIN_ACK, &[]),
        testkit::tcp(c, lb, client, dr, RST, &[]),
        testkit::tcp(c, lb, client, dr, ACK, &[]),
        testkit::tcp(GATEWAY.mac, lb, (REMOTE, 33000), dr, SYN, &[]),
        testkit::udp(c, lb, client, (VIP_DR, 53), dns),
        nat_syn.clone(),
        testkit::tcp(c, lb, client, nat, PSH_ACK, payload),
        nat_reply.clone(),
        testkit::tcp(NAT2.mac, LB1.mac, (NAT2.ip, 8080), client, ACK, payload),
        testkit::udp(c, lb, client, (VIP_NAT, 53), dns),
        testkit::udp(NAT1.mac, LB1.mac, (NAT1.ip, 5353), client, dns),
        testkit::tcp(c, lb, client, fullnat, SYN, &[]),
        testkit::tcp(c, lb, client, fullnat, PSH_ACK, payload),
        testkit::tcp(NAT1.mac, LB1.mac, (NAT1.ip, 8080), (LOCAL, 1024), SYN_ACK, &[]),
        testkit::tcp(NAT2.mac, LB1.mac, (NAT2.ip, 8080), (LOCAL, 22869), ACK, &[]),
        testkit::udp(c, lb, client, (VIP_FULLNAT, 53), dns),
        testkit::udp(NAT1.mac, LB1.mac, (NAT1.ip, 5353), (LOCAL, 1025), dns),
        testkit::tcp(c, lb, client, (LB0.ip, 22), SYN, &[]),
        testkit::tcp(c, lb, client, (Ipv4Addr::new(10, 1, 1, 99), 80), SYN, &[]),
        testkit::arp(true, c, CLIENT.ip, MacAddr::ZERO, VIP_DR),
        testkit::arp(true, c, CLIENT.ip, MacAddr::ZERO, LB0.ip),
        testkit::arp(true, NAT1.mac, NAT1.ip, MacAddr::ZERO, LOCAL),
        testkit::arp(false, RS12.mac, RS12.ip, lb, LB0.ip),
        testkit::arp(false, NAT2.mac, NAT2.ip, LB1.mac, LB1.ip),
        testkit::icmp_echo(c, lb, CLIENT.ip, VIP_DR, 64, false, b"xlb-ping"),
        testkit::icmp_echo(c, lb, CLIENT.ip, VIP_FULLNAT, 1, false, b"ttl"),
        testkit::icmp_echo(c, lb, CLIENT.ip, LB0.ip, 64, true, b"reply"),
        testkit::icmp_frag_needed(GATEWAY.mac, lb, GATEWAY.ip, VIP_DR, 1400, &dr_syn, 8),
        testkit::icmp_frag_needed(c, lb, CLIENT.ip, VIP_NAT, 1400, &nat_syn, 28),
        testkit::icmp_frag_needed(NAT1.mac, LB1.mac, NAT1.ip, CLIENT.ip, 1400, &nat_reply, 8),
        testkit::icmp_port_unreachable(c, lb, CLIENT.ip, NAT1.ip, &nat_reply),
        testkit::padded(testkit::tcp(c, lb, client, dr, ACK, &[])),
    ];
    let mut fragment = testkit::udp(c, lb, client, (VIP_DR, 53), &[0; 32]);
    fragment[14 + 6] = 0x20;
    frames.push(fragment);
    frames.extend(seed_capture());
    frames.extend(ipv6_frames());
    frames
}

// The IPv6 seeds' addresses: a client and a VIP on the DR network's IPv6 prefix.
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 0x20);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 0x10);
const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 2);

/// IPv6 frames of the kinds an IPv6 service meets: TCP and UDP to a VIP, with extension
/// headers, a fragment, ICMPv6 echo and Packet Too Big, neighbour solicitation and
/// advertisement.
fn ipv6_frames() -> Vec<Vec<u8>> {
    use etherparse::{IcmpEchoHeader, Icmpv6Type, PacketBuilder};
    let (c, lb) = (CLIENT.mac.octets(), LB0.mac.octets());
    let (client, vip) = (CLIENT6.octets(), VIP6.octets());
    let build = |builder: etherparse::PacketBuilderStep<etherparse::IpHeaders>, kind: u8| {
        let payload = b"GET / HTTP/1.1\r\n\r\n";
        let mut out = Vec::new();
        match kind {
            0 => {
                let b = builder.tcp(40000, 80, 1, 64240).syn();
                b.write(&mut out, &[]).expect("tcp");
            }
            1 => {
                let b = builder.tcp(40000, 80, 2, 64240).ack(1).psh();
                b.write(&mut out, payload).expect("tcp");
            }
            2 => builder.udp(40000, 53).write(&mut out, b"\x12\x34\x01\x00").expect("udp"),
            _ => {
                let echo = Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 });
                builder.icmpv6(echo).write(&mut out, b"xlb-ping6").expect("icmpv6");
            }
        }
        out
    };
    let base = || PacketBuilder::ethernet2(c, lb).ipv6(client, vip, 64);
    let mut frames: Vec<Vec<u8>> = (0..4).map(|kind| build(base(), kind)).collect();
    // The SYN behind hop-by-hop and destination options, and as the first fragment.
    let syn = frames[0].clone();
    let with_ext = |next: u8, ext: &[u8]| {
        let mut frame = syn.clone();
        let (l3, l4) = (14, 54);
        frame[l3 + 6] = next;
        frame.splice(l4..l4, ext.iter().copied());
        let len = (frame.len() - l3 - 40) as u16;
        frame[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
        frame
    };
    let hop_dest =
        [ip_proto::DEST_OPTIONS, 0, 1, 4, 0, 0, 0, 0, ip_proto::TCP, 0, 1, 4, 0, 0, 0, 0];
    frames.push(with_ext(ip_proto::HOP_BY_HOP, &hop_dest));
    frames.push(with_ext(ip_proto::FRAGMENT, &[ip_proto::TCP, 0, 0, 1, 0, 0, 0x12, 0x34]));
    // The chains the pipeline forwards: a routing header (segments left 0) before the UDP
    // query, hop-by-hop, destination options and routing before the request.
    let routing = testkit::ext_header(ip_proto::ROUTING, 1);
    let (hop, dest) = (testkit::ext_header(ip_proto::HOP_BY_HOP, 0), testkit::ext_header(60, 2));
    frames.push(testkit::with_ext_headers(&frames[2], &[(ip_proto::ROUTING, &routing)]));
    let chain =
        [(ip_proto::HOP_BY_HOP, &hop[..]), (60, &dest[..]), (ip_proto::ROUTING, &routing[..])];
    frames.push(testkit::with_ext_headers(&frames[1], &chain));
    // Packet Too Big from a router about the VIP's reply to the client.
    let reply =
        PacketBuilder::ethernet2(lb, c).ipv6(vip, client, 64).tcp(80, 40000, 9, 64240).ack(2);
    let mut quoted = Vec::new();
    reply.write(&mut quoted, &[0; 64]).expect("reply");
    let router = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 1).octets();
    let mut ptb = Vec::new();
    PacketBuilder::ethernet2(GATEWAY.mac.octets(), lb)
        .ipv6(router, vip, 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut ptb, &quoted[14..])
        .expect("packet too big");
    frames.push(ptb);
    // NDP: a solicitation for the VIP from the client, the box's answer, and the box asking.
    let mut buffer = [0u8; ndp::FRAME_LEN];
    ndp::write_neighbor_solicit(&mut buffer, CLIENT.mac, CLIENT6, VIP6).expect("solicit");
    frames.push(buffer.to_vec());
    let flags = AdvertFlags { router: false, solicited: true, override_cache: true };
    ndp::write_neighbor_advert(&mut buffer, LB0.mac, VIP6, (CLIENT.mac, CLIENT6), flags)
        .expect("advert");
    frames.push(buffer.to_vec());
    ndp::write_neighbor_solicit(&mut buffer, LB0.mac, LB6, CLIENT6).expect("solicit");
    frames.push(buffer.to_vec());
    frames
}

/// The frames of `examples/seed-dr.pcap` (regenerated from the code that made it, if the
/// file cannot be read).
fn seed_capture() -> Vec<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/seed-dr.pcap");
    let from_file = std::fs::File::open(&path).ok().and_then(|file| {
        let mut reader = pcap_file::pcap::PcapReader::new(file).ok()?;
        let mut frames = Vec::new();
        while let Some(packet) = reader.next_packet() {
            frames.push(packet.ok()?.data.into_owned());
        }
        Some(frames)
    });
    from_file.unwrap_or_else(|| {
        testkit::captures::seed_dr_lab().into_iter().map(|(_, frame)| frame).collect()
    })
}

/// Config texts: the bundled examples, the pipeline's, and the string literals of the config
/// module's tests (fragments as well as whole files: splicing joins them).
fn config_seeds() -> Vec<String> {
    let mut seeds: Vec<String> = vec![
        include_str!("../examples/dr.toml").into(),
        include_str!("../examples/nat.toml").into(),
        include_str!("../examples/fullnat.toml").into(),
        include_str!("../examples/seed-dr.toml").into(),
        include_str!("../tests/interop/interop.toml").into(),
        PIPELINE_CONFIG.into(),
    ];
    let source = include_str!("../src/control/config.rs");
    let tests = source.find("mod tests").map_or(source, |at| &source[at..]);
    // The tests' fragments mostly lack an interface: give them the tests' own.
    let iface =
        "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\nmac = \"02:00:00:00:00:01\"\n";
    for literal in string_literals(tests).into_iter().filter(|s| s.contains('=')) {
        if !literal.contains("[[interface]]") {
            seeds.push(format!("{iface}{literal}"));
        }
        seeds.push(literal);
    }
    seeds
}

/// The string literals of Rust source text, `"..."` (common escapes resolved, line
/// continuations joined) and `r#"..."#`.
fn string_literals(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"r#\"") {
            let body = &source[i + 3..];
            let end = body.find("\"#").unwrap_or(body.len());
            out.push(body[..end].to_string());
            i += 3 + end + 2;
        } else if bytes[i] == b'"' && (i == 0 || bytes[i - 1] != b'\'') {
            let mut text = String::new();
            let mut chars = source[i + 1..].char_indices();
            let mut end = source.len() - i - 1;
            while let Some((at, ch)) = chars.next() {
                match ch {
                    '"' => {
                        end = at + 1;
                        break;
                    }
                    '\\' => match chars.next().map(|(_, escaped)| escaped) {
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        Some('\n') => {
                            // A line continuation: skip the next line's indentation.
                            let rest = chars.as_str();
                            let skip = rest.len() - rest.trim_start().len();
                            for _ in 0..rest[..skip].chars().count() {
                                chars.next();
                            }
                        }
                        Some(other) => text.push(other),
                        None => {}
                    },
                    other => text.push(other),
                }
            }
            out.push(text);
            i += 1 + end;
        } else {
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Frame mutations

const INTERESTING_U8: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, 0x0f, 0xf0, 5, 6, 17];
const INTERESTING_U16: [u16; 14] =
    [0, 1, 0x7fff, 0x8000, 0xffff, 14, 20, 28, 40, 60, 576, 1500, 1514, 9000];
const ETHERTYPES: [u16; 6] =
    [EtherType::IPV4, EtherType::ARP, EtherType::VLAN, EtherType::QINQ, EtherType::IPV6, 0x0600];
const ADDRS: [Ipv4Addr; 14] = [
    VIP_DR,
    VIP_NAT,
    VIP_FULLNAT,
    LOCAL,
    Ipv4Addr::new(10, 3, 0, 201),
    LB0.ip,
    LB1.ip,
    CLIENT.ip,
    RS1.ip,
    RS12.ip,
    NAT1.ip,
    NAT2.ip,
    Ipv4Addr::BROADCAST,
    Ipv4Addr::UNSPECIFIED,
];
const PORTS: [u16; 10] = [80, 53, 8080, 5353, 1024, 1025, 22869, 65535, 0, 40000];

/// Offsets of the headers in a frame as far as it parses: (L3, L4).
fn layout(frame: &[u8]) -> (usize, Option<usize>) {
    let mut l3 = 14;
    let mut ethertype = u16::from_be_bytes([byte(frame, 12), byte(frame, 13)]);
    while (ethertype == EtherType::VLAN || ethertype == EtherType::QINQ) && l3 + 4 <= frame.len() {
        ethertype = u16::from_be_bytes([byte(frame, l3 + 2), byte(frame, l3 + 3)]);
        l3 += 4;
    }
    if ethertype == EtherType::IPV6 {
        let upper = frame.get(l3..).and_then(|bytes| Ipv6Packet::new_checked(bytes).ok());
        let offset = upper.and_then(|ip| ip.upper_layer().ok()).map_or(40, |u| u.offset);
        return (l3, Some(l3 + offset));
    }
    if ethertype != EtherType::IPV4 {
        return (l3, None);
    }
    let ihl = usize::from(byte(frame, l3) & 0x0f) * 4;
    (l3, Some(l3 + ihl.max(20)))
}

fn byte(frame: &[u8], at: usize) -> u8 {
    frame.get(at).copied().unwrap_or(0)
}

fn set_byte(frame: &mut [u8], at: usize, value: u8) {
    if let Some(b) = frame.get_mut(at) {
        *b = value;
    }
}

fn set_u16(frame: &mut [u8], at: usize, value: u16) {
    let [hi, lo] = value.to_be_bytes();
    set_byte(frame, at, hi);
    set_byte(frame, at + 1, lo);
}

fn set_addr(frame: &mut [u8], at: usize, addr: Ipv4Addr) {
    for (i, b) in addr.octets().into_iter().enumerate() {
        set_byte(frame, at + i, b);
    }
}

/// Applies one random mutation to `frame`; `other` is a second seed for splicing.
fn mutate_frame(rng: &mut Rng, frame: &mut Vec<u8>, other: &[u8]) {
    let len = frame.len();
    let (l3, l4) = layout(frame);
    let l4v = l4.unwrap_or(l3 + 20);
    match rng.below(21) {
        0 | 1 => {
            for _ in 0..=rng.below(8) {
                if len > 0 {
                    let at = rng.below(len);
                    frame[at] ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            if len > 0 {
                let at = rng.below(len);
                frame[at] = *rng.pick(&INTERESTING_U8);
            }
        }
        3 => {
            let value = match rng.below(4) {
                0 => len as u16,
                1 => (len as u16).wrapping_sub(14),
                2 => (len as u16).wrapping_add(1),
                _ => *rng.pick(&INTERESTING_U16),
            };
            set_u16(frame, rng.below(len.max(1)), value);
        }
        4 | 5 => {
            // Truncation at a header boundary (or just around it).
            let cuts =
                [0, 6, 12, 13, 14, l3, l3 + 1, l3 + 19, l3 + 20, l4v, l4v + 8, l4v + 13, l4v + 20];
            let cut = rng.pick(&cuts) + if rng.one_in(4) { rng.below(3) } else { 0 };
            frame.truncate(cut.min(len));
        }
        6 => {
            let extra = match rng.below(3) {
                0 => rng.below(64),
                1 => 1514usize.saturating_sub(len),
                _ => rng.below(9000),
            };
            let fill = if rng.one_in(2) { 0 } else { rng.byte() };
            frame.extend(std::iter::repeat_n(fill, extra));
        }
        7 => {
            // Splice: a prefix of this frame, a suffix of the other.
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            frame.truncate(cut);
            frame.extend_from_slice(&other[from..]);
        }
        8 => {
            // IHL and version.
            let v = if rng.one_in(4) { rng.byte() >> 4 } else { 4 };
            set_byte(frame, l3, (v << 4) | rng.below(16) as u8);
        }
        9 => {
            let value = match rng.below(3) {
                0 => len.saturating_sub(l3) as u16,
                1 => (len.saturating_sub(l3) as u16).wrapping_add(rng.below(40) as u16),
                _ => *rng.pick(&INTERESTING_U16),
            };
            set_u16(frame, l3 + 2, value);
        }
        10 => {
            // Fragment bits and offset, TTL, protocol.
            match rng.below(3) {
                0 => set_u16(frame, l3 + 6, *rng.pick(&[0x2000, 0x0001, 0x4000, 0x3fff, 0x1fff])),
                1 => set_byte(frame, l3 + 8, *rng.pick(&[0, 1, 2, 255])),
                _ => set_byte(frame, l3 + 9, *rng.pick(&[1, 6, 17, 0, 47, 255])),
            }
        }
        11 => {
            // TCP data offset and flags.
            if rng.one_in(2) {
                set_byte(frame, l4v + 12, (rng.below(16) as u8) << 4);
            } else {
                set_byte(
                    frame,
                    l4v + 13,
                    *rng.pick(&[0x02, 0x12, 0x10, 0x11, 0x04, 0x14, 0x18, 0, 0xff, 0x03, 0x06]),
                );
            }
        }
        12 => {
            // UDP length, ICMP type and code.
            if rng.one_in(2) {
                set_u16(frame, l4v + 4, *rng.pick(&INTERESTING_U16));
            } else {
                set_byte(frame, l4v, *rng.pick(&[0, 3, 8, 11, 12, 5, 4, 255]));
                set_byte(frame, l4v + 1, *rng.pick(&[0, 1, 3, 4, 255]));
            }
        }
        13 => {
            // ARP: hardware and protocol lengths, opcode, types.
            match rng.below(3) {
                0 => set_byte(frame, 14 + 4, *rng.pick(&[0, 6, 7, 255])),
                1 => set_byte(frame, 14 + 5, *rng.pick(&[0, 4, 5, 255])),
                _ => set_u16(frame, 14 + 6, *rng.pick(&[0, 1, 2, 3, 0xffff])),
            }
        }
        14 => set_u16(frame, 12, *rng.pick(&ETHERTYPES)),
        15 => {
            // VLAN tag insertion.
            if len >= 12 {
                let tpid = if rng.one_in(4) { EtherType::QINQ } else { EtherType::VLAN };
                let tci = rng.next() as u16;
                let tag = [(tpid >> 8) as u8, tpid as u8, (tci >> 8) as u8, tci as u8];
                frame.splice(12..12, tag);
            }
        }
        16 => {
            // Addresses: the network's interesting ones, in IP or ARP fields.
            let at = *rng.pick(&[l3 + 12, l3 + 16, 14 + 14, 14 + 24, l4v + 8 + 12, l4v + 8 + 16]);
            set_addr(frame, at, *rng.pick(&ADDRS));
        }
        17 => {
            let at = *rng.pick(&[l4v, l4v + 2, l4v + 8 + 20, l4v + 8 + 22]);
            set_u16(frame, at, *rng.pick(&PORTS));
        }
        18 => {
            // MACs: broadcast, multicast, zero, ours.
            let mac = *rng.pick(&[
                MacAddr::BROADCAST,
                MacAddr::ZERO,
                MacAddr([1, 0, 0x5e, 0, 0, 1]),
                LB0.mac,
                LB1.mac,
            ]);
            let at = if rng.one_in(2) { 0 } else { 6 };
            for (i, b) in mac.0.into_iter().enumerate() {
                set_byte(frame, at + i, b);
            }
        }
        19 => {
            // IPv6: payload length, next headers, an extension header's length, the hop
            // limit, an NDP option's length.
            let next = [0, 43, 44, 50, 51, 58, 59, 60, 6, 17, 135, 255];
            match rng.below(5) {
                0 => {
                    let value = match rng.below(3) {
                        0 => len.saturating_sub(l3 + 40) as u16,
                        1 => {
                            (len.saturating_sub(l3 + 40) as u16).wrapping_add(rng.below(16) as u16)
                        }
                        _ => *rng.pick(&INTERESTING_U16),
                    };
                    set_u16(frame, l3 + 4, value);
                }
                1 => set_byte(frame, l3 + 6, *rng.pick(&next)),
                2 => {
                    let at = l3 + 40 + 8 * rng.below(4);
                    if rng.one_in(2) {
                        set_byte(frame, at, *rng.pick(&next));
                    } else {
                        set_byte(frame, at + 1, *rng.pick(&[0, 1, 2, 255]));
                    }
                }
                3 => set_byte(frame, l3 + 7, *rng.pick(&[0, 1, 64, 255])),
                _ => set_byte(frame, l4v + 24 + 1, *rng.pick(&[0, 1, 2, 255])),
            }
        }
        _ => {
            // Random bytes over a random range.
            if len > 0 {
                let at = rng.below(len);
                for b in frame[at..].iter_mut().take(1 + rng.below(16)) {
                    *b = rng.byte();
                }
            }
        }
    }
}

/// Recomputes the IPv4 header checksum and the TCP/UDP/ICMP checksum, so that mutated frames
/// get past checksum verification.
fn fix_checksums(frame: &mut [u8]) {
    let (l3, _) = layout(frame);
    let Some(ip_bytes) = frame.get_mut(l3..) else { return };
    if let Ok(mut ip) = Ipv6Packet::new_checked(&mut *ip_bytes) {
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Ok(upper) = ip.upper_layer() else { return };
        let field = match upper.protocol {
            6 => 16..18,
            17 => 6..8,
            58 => 2..4,
            _ => return,
        };
        let l4 = ip.upper_layer_payload_mut(&upper);
        if let Some(slot) = l4.get_mut(field.clone()) {
            slot.fill(0);
            let sum = checksum::compute_v6(src, dst, upper.protocol, l4);
            l4[field].copy_from_slice(&sum.to_be_bytes());
        }
        return;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(ip_bytes) else { return };
    ip.fill_checksum();
    let (src, dst, protocol) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
    let payload = ip.payload_mut();
    match protocol {
        6 => {
            if let Ok(mut tcp) = TcpPacket::new_checked(payload) {
                tcp.fill_checksum(src, dst);
            }
        }
        17 => {
            if let Ok(mut udp) = UdpPacket::new_checked(payload) {
                udp.fill_checksum(src, dst);
            }
        }
        1 => {
            if let Ok(mut icmp) = IcmpPacket::new_checked(payload) {
                icmp.fill_checksum();
            }
        }
        _ => {}
    }
}

/// One fuzz frame: random bytes, a seed as is, or a seed with one to four mutations.
fn gen_frame(rng: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    match rng.below(32) {
        0 => {
            let len = rng.below(128);
            out.extend((0..len).map(|_| rng.byte()));
        }
        1 | 2 => out.extend_from_slice(rng.pick::<Vec<u8>>(seeds)),
        _ => {
            out.extend_from_slice(rng.pick::<Vec<u8>>(seeds));
            for _ in 0..=rng.below(4) {
                let other = rng.pick(seeds);
                mutate_frame(rng, out, other);
            }
            if rng.one_in(2) {
                fix_checksums(out);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The wire target

/// Runs every view over `frame` at every header offset; returns a value folded from what it
/// read so the reads are not optimised away.
fn run_wire(frame: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut fold = |v: u64| acc = acc.rotate_left(5) ^ v;
    let (l3, l4) = layout(frame);
    let offsets = [0, 14, l3, l4.unwrap_or(34)];
    for &at in &offsets {
        let Some(bytes) = frame.get(at..) else { continue };
        if let Ok(eth) = EthernetFrame::new_checked(bytes) {
            fold(u64::from(eth.ethertype()));
            fold(u64::from(eth.dst_addr().is_multicast()) + u64::from(eth.src_addr().0[5]));
            fold(eth.payload().len() as u64);
        }
        if let Ok(arp) = ArpPacket::new_checked(bytes) {
            fold(u64::from(arp.hardware_type()) ^ u64::from(arp.protocol_type()));
            fold(u64::from(arp.hardware_len()) ^ u64::from(arp.protocol_len()));
            fold(u64::from(u16::from(arp.operation())));
            fold(
                u64::from(arp.sender_proto_addr().to_bits())
                    ^ u64::from(arp.target_proto_addr().to_bits()),
            );
            fold(u64::from(arp.sender_hw_addr().0[0]) ^ u64::from(arp.target_hw_addr().0[5]));
        }
        fold_ipv4(bytes, &mut fold, 0);
        wire_l4(bytes, Ipv4Addr::new(10, 1, 1, 20), Ipv4Addr::new(10, 1, 1, 10), &mut fold);
        fold_ipv6(bytes, &mut fold, 0);
        wire_icmpv6(bytes, CLIENT6, VIP6, &mut fold, 1);
    }
    rewrite_ipv6(frame, l3, &mut fold);
    // The setters the pipeline uses, on a copy, with their checksum oracles.
    let mut copy = frame.to_vec();
    if let Some(ip_bytes) = copy.get_mut(l3..)
        && let Ok(mut ip) = Ipv4Packet::new_checked(ip_bytes)
    {
        let valid = ip.verify_checksum();
        let old = ip.rewrite_src_addr(Ipv4Addr::new(10, 3, 0, 200));
        ip.rewrite_dst_addr(old);
        ip.decrement_ttl();
        assert!(!valid || ip.verify_checksum(), "an incremental rewrite broke the IPv4 checksum");
        ip.fill_checksum();
        assert!(ip.verify_checksum(), "a filled IPv4 checksum does not verify");
        let (src, dst, protocol) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
        let payload = ip.payload_mut();
        if protocol == 6
            && let Ok(mut tcp) = TcpPacket::new_checked(&mut *payload)
        {
            tcp.fill_checksum(src, dst);
            assert!(tcp.verify_checksum(src, dst), "a filled TCP checksum does not verify");
        }
        if protocol == 17
            && let Ok(mut udp) = UdpPacket::new_checked(&mut *payload)
        {
            udp.fill_checksum(src, dst);
            assert!(udp.verify_checksum(src, dst), "a filled UDP checksum does not verify");
        }
        if protocol == 1
            && let Ok(mut icmp) = IcmpPacket::new_checked(&mut *payload)
        {
            icmp.fill_checksum();
            assert!(icmp.verify_checksum(), "a filled ICMP checksum does not verify");
        }
    }
    // The checksum helpers on arbitrary data.
    let word = |at: usize| u16::from_be_bytes([byte(frame, at), byte(frame, at + 1)]);
    let dword = |at: usize| {
        u32::from_be_bytes([
            byte(frame, at),
            byte(frame, at + 1),
            byte(frame, at + 2),
            byte(frame, at + 3),
        ])
    };
    let sum = checksum::sum(frame, dword(0));
    fold(u64::from(checksum::fold(sum)) ^ u64::from(checksum::finish(sum)));
    fold(u64::from(checksum::verifies(frame)));
    let (a, b) = (Ipv4Addr::from_bits(dword(4)), Ipv4Addr::from_bits(dword(8)));
    fold(u64::from(checksum::pseudo_header_sum(a, b, byte(frame, 2), word(6))));
    let c = word(12);
    fold(u64::from(checksum::update_u16(c, word(14), word(16))));
    fold(u64::from(checksum::update_u32(c, dword(14), dword(18))));
    fold(u64::from(checksum::update_addr(c, a, b)));
    fold(u64::from(checksum::update_udp_u16(c, word(14), word(16))));
    fold(u64::from(checksum::update_udp_addr(c, a, b)));
    let delta = checksum::Delta::NONE.u16(word(14), word(16)).u32(dword(18), dword(22)).addr(a, b);
    fold(u64::from(delta.apply(c)) ^ u64::from(delta.apply_udp(c)));
    let v6 = |at: usize| {
        Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| {
            byte(frame, (at + i) % frame.len().max(1))
        }))
    };
    let (a6, b6) = (v6(8), v6(24));
    fold(u64::from(checksum::pseudo_header_sum_v6(a6, b6, byte(frame, 6), dword(4))));
    fold(u64::from(checksum::verifies_v6(a6, b6, byte(frame, 6), frame)));
    fold(u64::from(checksum::compute_v6(a6, b6, byte(frame, 6), frame)));
    fold(u64::from(checksum::update_addr_v6(c, a6, b6)));
    fold(u64::from(checksum::update_udp_addr_v6(c, a6, b6)));
    fold(u64::from(checksum::Delta::NONE.addr_v6(a6, b6).u16(word(14), word(16)).apply(c)));
    // The incremental update agrees with a full recomputation.
    if frame.len() >= 24 {
        let mut data = frame[..24].to_vec();
        data[10] = 0;
        data[11] = 0;
        let full = checksum::finish(checksum::sum(&data, 0));
        data[10..12].copy_from_slice(&full.to_be_bytes());
        let new = word(20);
        let old = u16::from_be_bytes([data[0], data[1]]);
        data[0..2].copy_from_slice(&new.to_be_bytes());
        let updated = checksum::update_u16(full, old, new);
        data[10..12].copy_from_slice(&updated.to_be_bytes());
        // All-zero data has no valid one's-complement checksum to keep (its sum is +0, a
        // checksum can only make it -0 by being 0xffff, and RFC 1624 yields +0): skip it.
        let zero = data.iter().enumerate().all(|(i, b)| i == 10 || i == 11 || *b == 0);
        assert!(zero || checksum::verifies(&data), "update_u16 disagrees with a full checksum");
    }
    acc
}

/// The IPv4 view's accessors, and the packet an ICMP error quotes (one level deep).
fn fold_ipv4(bytes: &[u8], fold: &mut impl FnMut(u64), depth: u8) {
    let Ok(ip) = Ipv4Packet::new_checked(bytes) else { return };
    fold(u64::from(ip.version()) ^ ip.header_len() as u64 ^ u64::from(ip.has_options()));
    fold(u64::from(ip.dscp_ecn()) ^ u64::from(ip.total_len()) ^ u64::from(ip.ident()));
    fold(u64::from(ip.dont_frag()) ^ u64::from(ip.more_frags()) ^ u64::from(ip.frag_offset()));
    fold(u64::from(ip.is_fragment()) ^ u64::from(ip.ttl()) ^ u64::from(ip.protocol()));
    fold(u64::from(ip.checksum()) ^ u64::from(ip.verify_checksum()));
    fold(u64::from(ip.src_addr().to_bits()) ^ u64::from(ip.dst_addr().to_bits()));
    fold(ip.header().len() as u64 ^ ip.options().len() as u64 ^ ip.payload().len() as u64);
    wire_l4(ip.payload(), ip.src_addr(), ip.dst_addr(), fold);
    if depth == 0
        && ip.protocol() == 1
        && let Ok(icmp) = IcmpPacket::new_checked(ip.payload())
        && icmp.is_error()
    {
        fold_ipv4(icmp.payload(), fold, 1);
    }
}

/// The IPv6 view's accessors and extension-header walk, and the upper layer's views; the
/// packet an ICMPv6 error quotes, one level deep.
fn fold_ipv6(bytes: &[u8], fold: &mut impl FnMut(u64), depth: u8) {
    let ip = match depth {
        0 => Ipv6Packet::new_checked(bytes),
        _ => Ipv6Packet::new_quoted(bytes),
    };
    let Ok(ip) = ip else { return };
    fold(u64::from(ip.version()) ^ u64::from(ip.traffic_class()) ^ u64::from(ip.flow_label()));
    fold(u64::from(ip.payload_len()) ^ u64::from(ip.next_header()) ^ u64::from(ip.hop_limit()));
    fold((ip.src_addr().to_bits() ^ ip.dst_addr().to_bits()) as u64);
    fold(ip.header().len() as u64 ^ ip.payload().len() as u64);
    let mut walk = ip.ext_headers();
    let mut walked = 0;
    for header in walk.by_ref() {
        walked += 1;
        match header {
            Ok(h) => {
                assert!(ipv6::is_walked_ext_header(h.kind), "walked a non-extension header");
                assert!(h.offset + h.len <= 40 + ip.payload().len(), "a header past the payload");
                fold(u64::from(h.kind) ^ u64::from(h.next_header) ^ (h.offset ^ h.len) as u64);
            }
            Err(e) => fold(e as u64),
        }
    }
    assert!(walked <= ipv6::MAX_EXT_HEADERS + 1, "the extension-header walk is unbounded");
    fold(u64::from(walk.protocol()) ^ walk.offset() as u64);
    let Ok(upper) = ip.upper_layer() else { return };
    assert!(upper.offset <= 40 + ipv6::MAX_EXT_BYTES, "the walk went past its byte bound");
    assert!(!ipv6::is_walked_ext_header(upper.protocol), "the walk stopped at an extension");
    if let Some(fragment) = upper.fragment {
        fold(
            u64::from(fragment.offset) ^ u64::from(fragment.more_frags) ^ u64::from(fragment.ident),
        );
        fold(u64::from(fragment.is_fragment()));
    }
    let l4 = ip.upper_layer_payload(&upper);
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    fold(u64::from(checksum::verifies_v6(src, dst, upper.protocol, l4)));
    match upper.protocol {
        ip_proto::TCP | ip_proto::UDP => {
            wire_l4(l4, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, fold);
        }
        ip_proto::ICMPV6 => wire_icmpv6(l4, src, dst, fold, depth),
        _ => {}
    }
    // An unused extension-header walk over the same payload from another start.
    fold(ExtHeaders::new(ip_proto::DEST_OPTIONS, ip.payload()).count() as u64);
}

/// The ICMPv6 and NDP views' accessors over `bytes`; an error's invoking packet is walked
/// while `depth` is 0.
fn wire_icmpv6(bytes: &[u8], src: Ipv6Addr, dst: Ipv6Addr, fold: &mut impl FnMut(u64), depth: u8) {
    if let Ok(icmp) = Icmpv6Packet::new_checked(bytes) {
        fold(u64::from(icmp.msg_type()) ^ u64::from(icmp.code()) ^ u64::from(icmp.checksum()));
        fold(u64::from(icmp.echo_ident()) ^ u64::from(icmp.echo_seq_no()) ^ u64::from(icmp.mtu()));
        fold(u64::from(icmp.pointer()) ^ icmp.body().len() as u64);
        fold(
            u64::from(icmp.verify_checksum(src, dst))
                ^ u64::from(icmpv6::is_error(icmp.msg_type())),
        );
        if depth == 0
            && let Some(invoking) = icmp.invoking_packet()
        {
            fold_ipv6(invoking, fold, 1);
        }
    }
    match NdpPacket::new_checked(bytes) {
        Ok(ndp) => {
            assert!(ndp.options().all(|o| o.is_ok()), "a checked NDP packet has a bad option");
            fold(u64::from(ndp.is_solicit()) ^ u64::from(ndp.is_advert()) ^ u64::from(ndp.code()));
            fold(ndp.target_addr().to_bits() as u64);
            let flags = ndp.advert_flags();
            fold(
                u64::from(flags.router)
                    ^ u64::from(flags.solicited)
                    ^ u64::from(flags.override_cache),
            );
            fold(u64::from(ndp.source_link_addr().map_or(0, |m| m.0[5])));
            fold(u64::from(ndp.target_link_addr().map_or(0, |m| m.0[0])));
            fold(u64::from(ndp.verify_checksum(src, dst)));
        }
        Err(e) => {
            let ndp = NdpPacket::new_unchecked(bytes);
            fold(
                e as u64
                    ^ ndp.options().count() as u64
                    ^ u64::from(ndp.source_link_addr().is_some()),
            );
        }
    }
}

/// The IPv6 setters on a copy, with their checksum oracle: rewriting both addresses with an
/// incremental update keeps a valid TCP, UDP or ICMPv6 checksum valid. And the NDP writers,
/// fed the frame's addresses: what they write parses back and verifies.
fn rewrite_ipv6(frame: &[u8], l3: usize, fold: &mut impl FnMut(u64)) {
    let mut copy = frame.to_vec();
    let Some(ip_bytes) = copy.get_mut(l3..) else { return };
    let Ok(mut ip) = Ipv6Packet::new_checked(ip_bytes) else { return };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.decrement_hop_limit();
    let mut buffer = [0u8; ndp::FRAME_LEN];
    let mac = MacAddr([2, 0, 0, 0, 0, (dst.to_bits() >> 8) as u8]);
    let written = ndp::write_neighbor_solicit(&mut buffer, mac, dst, src).expect("room for a NS");
    check_written_ndp(&buffer[..written], dst, ndp::solicited_node(src), fold);
    let flags = AdvertFlags { router: false, solicited: !src.is_multicast(), override_cache: true };
    let written =
        ndp::write_neighbor_advert(&mut buffer, mac, dst, (MacAddr::BROADCAST, src), flags)
            .expect("room for a NA");
    check_written_ndp(&buffer[..written], dst, src, fold);
    let Ok(upper) = ip.upper_layer() else { return };
    let field = match upper.protocol {
        ip_proto::TCP => 16..18,
        ip_proto::UDP => 6..8,
        ip_proto::ICMPV6 => 2..4,
        _ => return,
    };
    let valid = checksum::verifies_v6(src, dst, upper.protocol, ip.upper_layer_payload(&upper));
    let (new_src, new_dst) = (VIP6, Ipv6Addr::from_bits(src.to_bits().rotate_left(8)));
    ip.rewrite_src_addr(new_src);
    ip.rewrite_dst_addr(new_dst);
    let l4 = ip.upper_layer_payload_mut(&upper);
    let Some(slot) = l4.get_mut(field) else { return };
    let old = u16::from_be_bytes([slot[0], slot[1]]);
    let delta = checksum::Delta::NONE.addr_v6(src, new_src).addr_v6(dst, new_dst);
    slot.copy_from_slice(&delta.apply(old).to_be_bytes());
    let after = checksum::verifies_v6(new_src, new_dst, upper.protocol, l4);
    assert!(!valid || after, "an incremental IPv6 rewrite broke the upper-layer checksum");
    fold(u64::from(after));
}

/// A frame the NDP writers wrote parses as Ethernet, IPv6 and NDP, with a valid checksum.
fn check_written_ndp(frame: &[u8], src: Ipv6Addr, dst: Ipv6Addr, fold: &mut impl FnMut(u64)) {
    let eth = EthernetFrame::new_checked(frame).expect("a written NDP frame has Ethernet");
    assert_eq!(eth.ethertype(), EtherType::IPV6);
    let ip = Ipv6Packet::new_checked(eth.payload()).expect("a written NDP frame has IPv6");
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (src, dst, ndp::HOP_LIMIT));
    let upper = ip.upper_layer().expect("a written NDP frame has no extension headers");
    let message = ip.upper_layer_payload(&upper);
    let packet = NdpPacket::new_checked(message).expect("a written NDP message parses");
    assert!(packet.verify_checksum(src, dst), "a written NDP message's checksum is wrong");
    fold(u64::from(packet.msg_type()));
}

/// The TCP, UDP and ICMP views' accessors over `bytes`.
fn wire_l4(bytes: &[u8], src: Ipv4Addr, dst: Ipv4Addr, fold: &mut impl FnMut(u64)) {
    if let Ok(tcp) = TcpPacket::new_checked(bytes) {
        fold(u64::from(tcp.src_port()) ^ u64::from(tcp.dst_port()) ^ u64::from(tcp.seq_number()));
        fold(u64::from(tcp.ack_number()) ^ tcp.header_len() as u64 ^ u64::from(tcp.flags().bits()));
        fold(u64::from(tcp.window()) ^ u64::from(tcp.checksum()) ^ u64::from(tcp.urgent()));
        fold(tcp.options().len() as u64 ^ tcp.payload().len() as u64);
        fold(u64::from(tcp.verify_checksum(src, dst)));
        let flags = tcp.flags();
        fold(u64::from(flags.contains(xlb::wire::TcpFlags::SYN)) ^ u64::from(flags.is_empty()));
    }
    if let Ok(udp) = UdpPacket::new_checked(bytes) {
        fold(u64::from(udp.src_port()) ^ u64::from(udp.dst_port()) ^ u64::from(udp.len()));
        fold(u64::from(udp.checksum()) ^ udp.payload().len() as u64);
        fold(u64::from(udp.verify_checksum(src, dst)));
    }
    if let Ok(icmp) = IcmpPacket::new_checked(bytes) {
        fold(u64::from(icmp.msg_type()) ^ u64::from(icmp.code()) ^ u64::from(icmp.is_error()));
        fold(
            u64::from(icmp.checksum())
                ^ u64::from(icmp.echo_ident())
                ^ u64::from(icmp.echo_seq_no()),
        );
        fold(u64::from(icmp.rest_of_header()) ^ icmp.payload().len() as u64);
        fold(
            u64::from(icmp.verify_checksum())
                ^ u64::from(xlb::wire::icmp::is_error(icmp.msg_type())),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline target

/// The pipelines of the pipeline target and their clock.
struct Cores {
    pipelines: Vec<Pipeline>,
    now: Instant,
    /// ARP requests the pipelines emitted: (asked address, which pipeline).
    asked: Vec<(Ipv4Addr, usize)>,
    /// Neighbour solicitations the pipelines emitted: (target, which pipeline).
    asked6: Vec<(Ipv6Addr, usize)>,
    frames: Vec<Vec<u8>>,
    verdicts: Vec<Verdict>,
    /// Per pipeline: the frames handed in and the verdicts returned, counted here rather than
    /// read back from the pipeline's own counters, so the check below can fail.
    tallies: Vec<VerdictTally>,
}

impl Cores {
    fn new() -> Cores {
        let config = Config::parse(PIPELINE_CONFIG, "fuzz.toml").expect("the fuzz config parses");
        let snapshot = Arc::new(Snapshot::build(&config, 1).expect("the fuzz config builds"));
        let mut pipelines: Vec<Pipeline> = (0..CORES)
            .map(|index| Pipeline::new(snapshot.clone(), CoreSlot { index, count: CORES }))
            .collect();
        let readers: Vec<_> = pipelines.iter().map(Pipeline::conntrack_reader).collect();
        let readers6: Vec<_> = pipelines.iter().map(Pipeline::conntrack_reader6).collect();
        for (i, pipeline) in pipelines.iter_mut().enumerate() {
            let peers = readers.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| r.clone());
            pipeline.set_peers(peers.collect());
            let peers =
                readers6.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| r.clone());
            pipeline.set_peers6(peers.collect());
            let addrs: Vec<_> = snapshot.announced_addrs().into_iter().map(|(ip, _)| ip).collect();
            pipeline.announce(&addrs);
            let six = snapshot.family::<xlb::family::V6>().announced();
            pipeline.announce6(&six.into_iter().map(|(ip, _)| ip).collect::<Vec<_>>());
        }
        Cores {
            pipelines,
            now: Instant::from_secs(1_000),
            asked: Vec::new(),
            asked6: Vec::new(),
            frames: Vec::new(),
            verdicts: Vec::new(),
            tallies: vec![VerdictTally::default(); usize::from(CORES)],
        }
    }

    /// Runs input `index`: generates its frames into `self.frames` and processes them.
    fn run(&mut self, rng: &mut Rng, seeds: &[Vec<u8>], index: u64) {
        let (core, ingress, step) = input_header(rng);
        self.now = self.now.saturating_add(step);
        gen_frames(rng, seeds, &mut self.frames);
        let count = self.frames.len();
        let pipeline = &mut self.pipelines[core];
        let tally = &mut self.tallies[core];
        if count == 1 {
            let len = self.frames[0].len();
            let verdict = pipeline.process(self.now, ingress, &mut self.frames[0]);
            check_verdict(verdict);
            tally.record(len, verdict);
        } else {
            self.verdicts.clear();
            self.verdicts.resize(count, Verdict::Pass);
            let mut frames: Vec<&mut [u8]> =
                self.frames.iter_mut().map(|frame| frame.as_mut_slice()).collect();
            pipeline.process_batch(self.now, ingress, &mut frames, &mut self.verdicts);
            self.verdicts.iter().copied().for_each(check_verdict);
            for (frame, verdict) in self.frames.iter().zip(&self.verdicts) {
                tally.record(frame.len(), *verdict);
            }
        }
        let (asked, asked6) = (&mut self.asked, &mut self.asked6);
        pipeline.drain_emitted(|_, emitted| {
            if let Ok(eth) = EthernetFrame::new_checked(emitted)
                && let Ok(arp) = ArpPacket::new_checked(eth.payload())
                && arp.operation() == xlb::wire::ArpOperation::Request
                && asked.len() < 64
            {
                asked.push((arp.target_proto_addr(), core));
            }
            if let Ok(xlb::ndp::Ndp::Solicit(solicit)) = xlb::ndp::parse(emitted)
                && asked6.len() < 64
            {
                asked6.push((solicit.target, core));
            }
        });
        // Sometimes a neighbour answers, unless it is a silent one.
        if rng.one_in(8)
            && let Some((ip, at)) = self.asked.pop()
            && !SILENT.contains(&ip)
        {
            let mac = MacAddr([0x02, 0, 0, 0, rng.byte(), rng.byte()]);
            self.pipelines[at].learn_neighbor(self.now, ip, mac);
            self.pipelines[at].drain_emitted(|_, _| {});
        }
        // The same for IPv6 (2001:db8:1:1::13 never answers).
        if rng.one_in(8)
            && let Some((ip, at)) = self.asked6.pop()
            && ip != Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 0x13)
        {
            let mac = MacAddr([0x02, 0, 0, 0, rng.byte(), rng.byte()]);
            self.pipelines[at].learn_neighbor6(self.now, ip, mac);
            self.pipelines[at].drain_emitted(|_, _| {});
        }
        if index % MAINTAIN_EVERY == MAINTAIN_EVERY - 1 {
            for (pipeline, tally) in self.pipelines.iter_mut().zip(&self.tallies) {
                pipeline.maintain(self.now);
                pipeline.drain_emitted(|_, _| {});
                check_counted(pipeline, tally);
            }
        }
    }

    /// The input's frames as saved in a crash file.
    fn input_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in &self.frames {
            out.extend_from_slice(&(frame.len() as u16).to_be_bytes());
            out.extend_from_slice(frame);
        }
        out
    }
}

/// A pipeline input's pipeline, ingress interface and time step (always the same draws).
fn input_header(rng: &mut Rng) -> (usize, IfaceId, Duration) {
    let core = rng.below(usize::from(CORES));
    let ingress = IfaceId(if rng.one_in(4) { 1 } else { 0 });
    let big = rng.one_in(4096);
    let small = rng.below(2_000_000) as u64;
    (core, ingress, Duration::from_nanos(if big { 120_000_000_000 } else { small }))
}

/// A pipeline input's frames: usually one, one input in sixteen a batch of up to 70.
fn gen_frames(rng: &mut Rng, seeds: &[Vec<u8>], frames: &mut Vec<Vec<u8>>) {
    let count = if rng.one_in(16) { 1 + rng.below(70) } else { 1 };
    frames.resize_with(count, Vec::new);
    for frame in frames.iter_mut() {
        gen_frame(rng, seeds, frame);
    }
}

fn check_verdict(verdict: Verdict) {
    if let Verdict::Tx(iface) = verdict {
        assert!(iface.index() < 2, "Tx on an interface that does not exist: {iface:?}");
    }
}

/// Every frame got exactly one counted verdict: the pipeline's counters (frames, bytes, each
/// kind of verdict, each drop reason) equal what the harness saw it return.
fn check_counted(pipeline: &Pipeline, tally: &VerdictTally) {
    if let Err(wrong) = tally.check(pipeline.counters()) {
        panic!("the pipeline's counters disagree with its verdicts:\n{wrong}");
    }
}

// ---------------------------------------------------------------------------------------------
// The config target

const VALUES: [&str; 24] = [
    "\"\"",
    "0",
    "-1",
    "65535",
    "65536",
    "4294967296",
    "18446744073709551616",
    "1e999",
    "nan",
    "true",
    "[]",
    "{}",
    "[\"10.1.1.200\"]",
    "\"10.1.1.256\"",
    "\"10.1.1.10/33\"",
    "\"0.0.0.0/0\"",
    "\"02:00:00:00:00:00\"",
    "\"ff:ff:ff:ff:ff:ff\"",
    "\"dr\"",
    "\"fullnat\"",
    "\"maglev\"",
    "\"udp\"",
    "\"1.5s\"",
    "\"é\u{0}\"",
];
const HEADERS: [&str; 8] = [
    "[[service]]",
    "[[service.backend]]",
    "[[interface]]",
    "[[neighbor]]",
    "[conntrack]",
    "[service.health]",
    "[service]",
    "[[conntrack]]",
];

/// One mutated config text.
fn gen_config(rng: &mut Rng, seeds: &[String], out: &mut String) {
    out.clear();
    out.push_str(rng.pick::<String>(seeds));
    if rng.one_in(8) {
        return;
    }
    // Mostly one mutation, so that a fair share of the texts stays valid and reaches
    // `Snapshot::build` and `to_toml`.
    let mutations = if rng.one_in(4) { 2 + rng.below(3) } else { 1 };
    for _ in 0..mutations {
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        let n = lines.len();
        match rng.below(10) {
            0 if n > 0 => {
                lines.remove(rng.below(n));
            }
            1 if n > 0 => {
                let line = lines[rng.below(n)].clone();
                lines.insert(rng.below(n + 1), line);
            }
            2 if n > 1 => lines.swap(rng.below(n), rng.below(n)),
            3 => {
                // Splice in lines of another seed.
                let other: Vec<&str> = rng.pick(seeds).lines().collect();
                let from = rng.below(other.len() + 1);
                let to = (from + 1 + rng.below(8)).min(other.len());
                let at = rng.below(n + 1);
                for (k, line) in other[from..to].iter().enumerate() {
                    lines.insert(at + k, (*line).to_string());
                }
            }
            4 | 5 if n > 0 => {
                // A value replaced.
                let i = rng.below(n);
                if let Some(eq) = lines[i].find('=') {
                    let value = rng.pick(&VALUES);
                    lines[i] = format!("{}= {value}", &lines[i][..eq]);
                }
            }
            6 => lines.insert(rng.below(n + 1), (*rng.pick(&HEADERS)).to_string()),
            7 if n > 0 => {
                // A key renamed to another seen key.
                let i = rng.below(n);
                let j = rng.below(n);
                if let (Some(a), Some(b)) = (lines[i].find('='), lines[j].find('=')) {
                    let key = lines[j][..b].to_string();
                    lines[i] = format!("{key}{}", &lines[i][a..]);
                }
            }
            _ => {
                // Bytes: flips, insertions, deletions; invalid UTF-8 is replaced.
                let mut bytes = std::mem::take(out).into_bytes();
                let len = bytes.len();
                match rng.below(3) {
                    0 if len > 0 => bytes[rng.below(len)] ^= 1 << rng.below(8),
                    1 => bytes.insert(rng.below(len + 1), *rng.pick(b"[]\"'=#\n\\.{},0-")),
                    _ if len > 0 => {
                        let at = rng.below(len);
                        bytes.drain(at..(at + 1 + rng.below(8)).min(len));
                    }
                    _ => {}
                }
                *out = String::from_utf8_lossy(&bytes).into_owned();
                continue;
            }
        }
        *out = lines.join("\n");
        out.push('\n');
    }
}

/// Parses; a config that parses builds a snapshot and reads back from `to_toml` unchanged.
fn run_config(text: &str) -> bool {
    let Ok(config) = Config::parse(text, "fuzz.toml") else { return false };
    let _ = black_box(Snapshot::build(&config, 1));
    let written = config.to_toml();
    let again = Config::parse(&written, "written.toml")
        .unwrap_or_else(|error| panic!("to_toml wrote a config that does not parse: {error}"));
    assert_eq!(again, config, "to_toml does not read back to the same config");
    true
}

// ---------------------------------------------------------------------------------------------
// The driver

/// The seed corpus of every target.
#[derive(Debug)]
struct Corpus {
    frames: Vec<Vec<u8>>,
    configs: Vec<String>,
}

/// Input `index` of `target`, regenerated (for the watchdog: the pipeline target's state is
/// not, but its frames are).
fn regenerate(corpus: &Corpus, seed: u64, target: Target, index: u64) -> Vec<u8> {
    let mut rng = Rng::for_input(seed, target, index);
    match target {
        Target::Wire => {
            let mut frame = Vec::new();
            gen_frame(&mut rng, &corpus.frames, &mut frame);
            frame
        }
        Target::Pipeline => {
            let _ = input_header(&mut rng);
            let mut frames = Vec::new();
            gen_frames(&mut rng, &corpus.frames, &mut frames);
            let mut out = Vec::new();
            for frame in &frames {
                out.extend_from_slice(&(frame.len() as u16).to_be_bytes());
                out.extend_from_slice(frame);
            }
            out
        }
        Target::Config => {
            let mut text = String::new();
            gen_config(&mut rng, &corpus.configs, &mut text);
            text.into_bytes()
        }
    }
}

/// Writes a crashing or hanging input; returns its path.
fn save(target: Target, input: &[u8]) -> PathBuf {
    let dir = std::env::var_os("XLB_FUZZ_CRASH_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashes"),
        PathBuf::from,
    );
    let _ = std::fs::create_dir_all(&dir);
    let hash = xlb::hash::hash_bytes(0, input);
    let path = dir.join(format!("{}-{hash:016x}.bin", target.name()));
    if let Err(error) = std::fs::write(&path, input) {
        eprintln!("fuzz: cannot write {}: {error}", path.display());
    }
    path
}

/// What the watchdog watches: the target and input under way, and since when.
struct Watch {
    target: AtomicU64,
    index: AtomicU64,
    /// Nanoseconds since `epoch` at which the input started; `u64::MAX` when idle.
    started: AtomicU64,
    epoch: WallClock,
}

impl Watch {
    fn begin(&self, index: u64) {
        self.index.store(index, Ordering::Relaxed);
        self.started.store(self.epoch.elapsed().as_nanos() as u64, Ordering::Release);
    }
}

fn watchdog(watch: Arc<Watch>, corpus: Arc<Corpus>, seed: u64) {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let started = watch.started.load(Ordering::Acquire);
        if started == u64::MAX {
            continue;
        }
        let now = watch.epoch.elapsed().as_nanos() as u64;
        if now.saturating_sub(started) > HANG.as_nanos() as u64 {
            let index = watch.index.load(Ordering::Relaxed);
            let target = match watch.target.load(Ordering::Relaxed) {
                1 => Target::Wire,
                2 => Target::Pipeline,
                _ => Target::Config,
            };
            let input = regenerate(&corpus, seed, target, index);
            let path = save(target, &input);
            eprintln!(
                "fuzz {}: HANG: input {index} (seed {seed}) has run for more than {HANG:?}; \
                 saved to {}",
                target.name(),
                path.display()
            );
            std::process::exit(3);
        }
    }
}

/// Runs `inputs` inputs of `target`; returns whether none panicked.
/// Faults to inject, to check the harness itself: a panic or a 2 s stall at an input index.
#[derive(Debug, Clone, Copy, Default)]
struct Inject {
    panic_at: Option<u64>,
    hang_at: Option<u64>,
}

fn fuzz(
    target: Target,
    inputs: u64,
    seed: u64,
    corpus: &Corpus,
    watch: &Watch,
    inject: Inject,
) -> bool {
    watch.target.store(target as u64, Ordering::Relaxed);
    let start = WallClock::now();
    let mut last_report = start;
    let mut last_count = 0;
    let mut cores = (target == Target::Pipeline).then(Cores::new);
    let mut frame = Vec::new();
    let mut text = String::new();
    let mut sink = 0u64;
    let mut parsed = 0u64;
    for index in 0..inputs {
        watch.begin(index);
        let mut rng = Rng::for_input(seed, target, index);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            match target {
                Target::Wire => {
                    gen_frame(&mut rng, &corpus.frames, &mut frame);
                    sink ^= run_wire(&frame);
                }
                Target::Pipeline => {
                    let cores = cores.as_mut().expect("pipeline state");
                    cores.run(&mut rng, &corpus.frames, index);
                }
                Target::Config => {
                    gen_config(&mut rng, &corpus.configs, &mut text);
                    parsed += u64::from(run_config(&text));
                }
            }
            if inject.panic_at == Some(index) {
                panic!("injected panic at input {index}");
            }
            if inject.hang_at == Some(index) {
                std::thread::sleep(2 * HANG);
            }
        }));
        if outcome.is_err() {
            watch.started.store(u64::MAX, Ordering::Release);
            let input = match target {
                Target::Wire => frame.clone(),
                Target::Pipeline => cores.as_ref().map(Cores::input_bytes).unwrap_or_default(),
                Target::Config => text.clone().into_bytes(),
            };
            let path = save(target, &input);
            eprintln!(
                "fuzz {}: PANIC on input {index} (seed {seed}); saved to {}",
                target.name(),
                path.display()
            );
            return false;
        }
        if index % 256 == 0 {
            let now = WallClock::now();
            if now - last_report >= Duration::from_secs(1) {
                let rate = (index - last_count) as f64 / (now - last_report).as_secs_f64();
                println!("fuzz {}: {index} inputs, {rate:.0} inputs/s", target.name());
                last_report = now;
                last_count = index;
            }
        }
    }
    watch.started.store(u64::MAX, Ordering::Release);
    let mut ok = true;
    if let Some(cores) = &cores {
        for (pipeline, tally) in cores.pipelines.iter().zip(&cores.tallies) {
            if let Err(wrong) = tally.check(pipeline.counters()) {
                eprintln!("fuzz pipeline: the counters disagree with the verdicts:\n{wrong}");
                ok = false;
            }
        }
        let total = |stat| cores.pipelines.iter().map(|p| p.counters().get(stat)).sum::<u64>();
        println!(
            "fuzz pipeline: frames rx {} tx {} pass {} drop {} held {} (released {}, given up {}), \
             flows {}, tracked at the end {}",
            total(Stat::RxPackets),
            total(Stat::TxPackets),
            total(Stat::PassPackets),
            total(Stat::DropPackets),
            total(Stat::HeldPackets),
            total(Stat::ReleasedPackets),
            total(Stat::HeldExpired),
            total(Stat::NewFlows),
            cores.pipelines.iter().map(|p| p.conntrack().len()).sum::<usize>(),
        );
    }
    black_box(sink);
    let elapsed = start.elapsed().as_secs_f64();
    let extra = if target == Target::Config { format!(", {parsed} parsed") } else { String::new() };
    println!(
        "fuzz {}: {inputs} inputs in {elapsed:.1} s ({:.0} inputs/s), crashes: {}, hangs: 0, \
         seed {seed}{extra}",
        target.name(),
        inputs as f64 / elapsed.max(1e-9),
        u8::from(!ok),
    );
    ok
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
    };
    let full = args.iter().any(|a| a == "--bench");
    let inputs: u64 = value("--inputs")
        .map(|n| n.replace('_', "").parse().expect("--inputs takes a number"))
        .unwrap_or(if full { FULL_INPUTS } else { SMOKE_INPUTS });
    let seed: u64 = value("--seed").map(|n| n.parse().expect("--seed takes a number")).unwrap_or(1);
    let targets: Vec<Target> =
        match value("--target").unwrap_or("all") {
            "all" => Target::ALL.to_vec(),
            name => vec![*Target::ALL.iter().find(|t| t.name() == name).unwrap_or_else(|| {
                panic!("unknown target {name:?}: wire, pipeline, config or all")
            })],
        };
    let at = |flag: &str| value(flag).map(|n| n.parse::<u64>().expect("an input index"));
    let inject = Inject { panic_at: at("--inject-panic-at"), hang_at: at("--inject-hang-at") };
    let corpus = Arc::new(Corpus { frames: golden_frames(), configs: config_seeds() });
    println!(
        "fuzz: {} seed frames, {} seed configs, {inputs} inputs per target, seed {seed}",
        corpus.frames.len(),
        corpus.configs.len()
    );
    let watch = Arc::new(Watch {
        target: AtomicU64::new(0),
        index: AtomicU64::new(0),
        started: AtomicU64::new(u64::MAX),
        epoch: WallClock::now(),
    });
    {
        let (watch, corpus) = (watch.clone(), corpus.clone());
        std::thread::spawn(move || watchdog(watch, corpus, seed));
    }
    // Panics are caught and reported with their input; keep the default message (it names
    // the place) but only once per run.
    let mut failed = false;
    for target in targets {
        failed |= !fuzz(target, inputs, seed, &corpus, &watch, inject);
    }
    if failed {
        std::process::exit(1);
    }
    if !full && inject.panic_at.is_none() && inject.hang_at.is_none() {
        check_harness();
    }
}

/// The CI smoke run also checks that the harness catches what it is for: it runs itself with
/// an injected panic and an injected stall, and expects each to be reported, saved, and to
/// end the run with a failure.
fn check_harness() {
    let dir = std::env::temp_dir().join(format!("xlb-fuzz-check-{}", std::process::id()));
    let run = |flag: &str| {
        let _ = std::fs::remove_dir_all(&dir);
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(["--target", "wire", "--inputs", "100", flag, "42"])
            .env("XLB_FUZZ_CRASH_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the fuzzer runs itself");
        let saved = std::fs::read_dir(&dir).map_or(0, |entries| entries.count());
        (status.code(), saved)
    };
    let expected_input =
        regenerate(&Corpus { frames: golden_frames(), configs: Vec::new() }, 1, Target::Wire, 42);
    assert_eq!(run("--inject-panic-at"), (Some(1), 1), "an injected panic is not reported");
    let saved = std::fs::read_dir(&dir).expect("crash dir").next().expect("a file").expect("entry");
    assert_eq!(std::fs::read(saved.path()).expect("saved input"), expected_input);
    assert_eq!(run("--inject-hang-at"), (Some(3), 1), "an injected hang is not reported");
    let _ = std::fs::remove_dir_all(&dir);
    println!("fuzz: harness check: an injected panic and an injected hang are caught and saved");
}
