//! Bad input never panics the pipeline, every frame gets exactly one counted verdict, and a
//! frame passed to the kernel leaves unchanged.
//!
//! Arbitrary bytes almost never get past the Ethernet destination check, so most frames here
//! are built to reach deep into the pipeline and then damaged: addressed to the balancer's MAC
//! (sometimes broadcast or another MAC), IPv4 or ARP, from clients, a remote client behind the
//! gateway and the backends, to every VIP (DR, NAT, FullNAT, one drained), the FullNAT local
//! addresses, the box's own address and others, on the services' ports and others, with
//! valid checksums; then a header byte is set (IP checksum fixed or not), a byte flipped or
//! the frame cut. Backends answer what xlb sent them (addresses and ports swapped), so
//! replies of NAT and FullNAT flows are translated too, and time jumps so that flows and held
//! frames expire.
//!
//! The IPv6 generator does the same on a dual-stack box with the same services on IPv6
//! VIPs: TCP, UDP, ICMPv6 echo and errors, neighbour solicitations (unicast, to the
//! solicited-node group, duplicate address detection probes, claims from a VIP) and
//! advertisements (of the sender, or claiming a VIP), next headers xlb does not forward;
//! damaged in the fixed header (version, payload length, next header, hop limit), the upper
//! layer, by a flip or a cut, or by extension headers inserted (hop-by-hop, routing,
//! destination options — forwarded, one or a few — fragment, routing with segments left,
//! ESP, a length past the payload, chains of up to 40: counted drops). Backends answer,
//! solicited hosts advertise themselves. On top of IPv4's checks: a transmitted IPv6 frame
//! whose TCP, UDP or ICMPv6 checksum was valid is still valid (translations patch the
//! pseudo-header, after the extension headers if any), NDP
//! xlb sends has valid checksums, and the IPv6 connection, neighbour and hold tables stay
//! within their bounds.
//!
//! Each frame's verdict is counted by the test itself and compared with the pipeline's
//! counters by kind and by drop reason ([`VerdictTally`]); `the_generator_reaches_every_stage`
//! checks, with a fixed seed, that the generated frames of both families do reach
//! transmission, new flows, translated replies, ARP, NDP and ICMP answers and each drop
//! reason the configs allow ([`UNREACHED`] lists the others, and why).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use xlb::control::{Config, Snapshot};
use xlb::dataplane::{CoreSlot, DropReason, IfaceId, Pipeline, Stat, Verdict};
use xlb::testkit::{
    self, ACK, FIN_ACK, Flags, Host, Host6, PSH_ACK, RST, SYN, SYN_ACK, VerdictTally,
    multicast_mac, neighbor_advertisement, neighbor_solicitation,
};
use xlb::time::Instant;
use xlb::wire::MacAddr;

const LB: Host = Host::new([0x02, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
const GATEWAY: Host = Host::new([0x02, 0, 0, 0, 0, 0x01], [10, 1, 1, 1]);
const CLIENT: Host = Host::new([0x02, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
const CLIENT2: Host = Host::new([0x02, 0, 0, 0, 0, 0x21], [10, 1, 1, 21]);
/// A client behind the gateway: its frames come from the gateway's MAC.
const REMOTE: Host = Host { mac: GATEWAY.mac, ip: Ipv4Addr::new(192, 0, 2, 7) };
/// A backend with a static neighbour entry.
const RS1: Host = Host::new([0x02, 0, 0, 0, 0, 0x11], [10, 1, 1, 11]);
/// A backend whose MAC xlb must ask for (frames to it are held).
const RS3: Host = Host::new([0x02, 0, 0, 0, 0, 0x13], [10, 1, 1, 13]);
/// The pipeline's neighbour table size per family (`NEIGHBOR_CAPACITY` in the pipeline).
const NEIGHBOR_CAPACITY: usize = 4096;
/// The most frames one family's hold queue keeps.
const MAX_HELD: usize = xlb::arp::HOLD_PER_NEIGHBOR * xlb::arp::MAX_PENDING_NEIGHBORS;
const OTHER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);

const VIP_DR: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);
const VIP_NAT: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 101);
const VIP_FULLNAT: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 102);
const VIP_DRAINED: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 103);

const CONFIG: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
mac = "02:00:00:00:00:10"
gateway = "10.1.1.1"

[conntrack]
capacity = 4096

[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:00:00:00:11"

[[service]]
vip = "10.1.1.100"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"
[[service.backend]]
addr = "10.1.1.13"

[[service]]
vip = "10.1.1.101"
port = 80
forward = "nat"
scheduler = "wlc"
[[service.backend]]
addr = "10.1.1.11"
port = 8080

[[service]]
vip = "10.1.1.102"
port = 53
proto = "udp"
forward = "fullnat"
scheduler = "rr"
local_addrs = ["10.1.1.200", "10.1.1.201"]
[[service.backend]]
addr = "10.1.1.11"
port = 5353

[[service]]
vip = "10.1.1.102"
port = 80
forward = "fullnat"
local_addrs = ["10.1.1.200", "10.1.1.201"]
[[service.backend]]
addr = "10.1.1.11"
port = 8080

[[service]]
vip = "10.1.1.103"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"
weight = 0
"#;

fn pipeline() -> Pipeline {
    let config = Config::parse(CONFIG, "robustness.toml").unwrap();
    Pipeline::new(Arc::new(Snapshot::build(&config, 1).unwrap()), CoreSlot::SINGLE)
}

/// Who sends a generated frame.
const SOURCES: [Host; 5] = [CLIENT, CLIENT2, REMOTE, RS1, RS3];
/// Where free-form IPv4 frames and ARP go.
const DESTINATIONS: [Ipv4Addr; 9] = [
    VIP_DR,
    VIP_NAT,
    VIP_FULLNAT,
    VIP_DRAINED,
    Ipv4Addr::new(10, 1, 1, 200),
    Ipv4Addr::new(10, 1, 1, 201),
    LB.ip,
    CLIENT.ip,
    Ipv4Addr::new(10, 1, 1, 50),
];
/// Ports of both ends: the services', the backends', a few client ports.
const PORTS: [u16; 8] = [80, 53, 443, 8080, 5353, 40000, 40001, 1024];
const TCP_FLAGS: [Flags; 6] = [SYN, ACK, PSH_ACK, FIN_ACK, RST, SYN_ACK];

/// What a generated frame is before it is damaged.
#[derive(Debug, Clone)]
enum Kind {
    Tcp {
        flags: usize,
    },
    Udp,
    /// An echo request, or (`reply`) an echo reply, which xlb does not answer.
    IcmpEcho {
        reply: bool,
    },
    /// A frag-needed error quoting a packet of the flow from the destination to the source.
    IcmpError {
        udp: bool,
    },
    /// ARP to the destination; with `claim`, the sender claims the destination's address
    /// (another host taking a VIP: a conflict xlb counts).
    Arp {
        request: bool,
        claim: bool,
    },
    /// IPv4 with a protocol xlb does not balance (GRE).
    Gre,
}

/// A generated frame before damage: a [`Kind`] of IPv4 frame from a [`Host`], or (with
/// [`Kind6`], [`Host6`]) an IPv6 one ([`Shape6`]).
#[derive(Debug, Clone)]
struct Shape<K = Kind, H: Sender = Host> {
    kind: K,
    dst_mac: MacAddr,
    from: H,
    src: (H::Addr, u16),
    dst: (H::Addr, u16),
    payload: usize,
    /// Received on an interface the snapshot does not have (1) rather than its only one (0).
    ingress: u8,
}

/// Who sends generated frames: a [`Host`] or a [`Host6`].
trait Sender: Copy + std::fmt::Debug + 'static {
    type Addr: Copy + std::fmt::Debug + 'static;
    fn ip(&self) -> Self::Addr;
}

impl Sender for Host {
    type Addr = Ipv4Addr;
    fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

impl Sender for Host6 {
    type Addr = Ipv6Addr;
    fn ip(&self) -> Ipv6Addr {
        self.ip
    }
}

/// Damage done to a frame once built (offsets past its end do nothing).
#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Sets a byte of the IPv4 header, then fixes the header checksum or not.
    IpByte {
        offset: usize,
        value: u8,
        fix_checksum: bool,
    },
    /// Sets a byte of the TCP, UDP or ICMP header (flags, data offset, length, type).
    L4Byte {
        offset: usize,
        value: u8,
    },
    Flip {
        at: usize,
        xor: u8,
    },
    /// Four bytes of IPv4 options (NOPs) inserted, IHL and total length grown to match, the
    /// header checksum fixed.
    Options,
    Cut {
        at: usize,
    },
    /// The IPv4 TTL set (0 to 2: expiring in a routing hop), the header checksum fixed.
    Ttl(u8),
}

/// One step of a generated sequence: `S` describes a frame, `D` how it is damaged
/// ([`Shape`] and [`Damage`] for IPv4, [`Shape6`] and [`Damage6`] for IPv6).
#[derive(Debug, Clone)]
enum Op<S = Shape, D = Damage> {
    Send(S, D),
    /// The backend that got the last frame xlb sent to one answers it: MACs, addresses and
    /// ports swapped (a NAT or FullNAT reply).
    Reply {
        flags: usize,
        damage: D,
    },
    /// The host xlb last asked for (ARP request or neighbour solicitation) answers, if it
    /// exists.
    Answer,
    /// Time jumps this many milliseconds (flows, held frames and neighbours expire).
    Wait(u64),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        40 => (0..TCP_FLAGS.len()).prop_map(|flags| Kind::Tcp { flags }),
        20 => Just(Kind::Udp),
        8 => any::<bool>().prop_map(|reply| Kind::IcmpEcho { reply }),
        8 => any::<bool>().prop_map(|udp| Kind::IcmpError { udp }),
        10 => (any::<bool>(), prop_oneof![5 => Just(false), 1 => Just(true)])
            .prop_map(|(request, claim)| Kind::Arp { request, claim }),
        4 => Just(Kind::Gre),
    ]
}

/// The services of the config: VIP, port, UDP.
const SERVICES: [(Ipv4Addr, u16, bool); 5] = [
    (VIP_DR, 80, false),
    (VIP_NAT, 80, false),
    (VIP_FULLNAT, 53, true),
    (VIP_FULLNAT, 80, false),
    (VIP_DRAINED, 80, false),
];
/// Client ports of flows to the services (few, so that flows meet again).
const CLIENT_PORTS: [u16; 3] = [40000, 40001, 40002];

/// A frame of a client's flow to a service: SYNs mostly, then the rest of a connection.
fn service_shape() -> impl Strategy<Value = Shape> {
    service_shape_of(&SERVICES, &SOURCES, |icmp_error, udp, flags| match (icmp_error, udp) {
        // The client tells that a packet of the flow was too big for it.
        (true, udp) => Kind::IcmpError { udp },
        (false, true) => Kind::Udp,
        (false, false) => Kind::Tcp { flags },
    })
}

/// A frame of one of the first three `sources`' flows to one of `services` (VIP, port,
/// UDP), of the kind `kind` gives for (an ICMP error, UDP, TCP flags).
fn service_shape_of<K: Clone + std::fmt::Debug, H: Sender>(
    services: &'static [(H::Addr, u16, bool)],
    sources: &'static [H],
    kind: fn(bool, bool, usize) -> K,
) -> impl Strategy<Value = Shape<K, H>> {
    (
        0..services.len(),
        0..3usize,
        0..CLIENT_PORTS.len(),
        prop_oneof![4 => Just(0usize), 4 => 1..TCP_FLAGS.len()],
        prop_oneof![3 => Just(0usize), 1 => 1..48usize],
        prop_oneof![9 => Just(false), 1 => Just(true)],
    )
        .prop_map(move |(service, client, port, flags, payload, icmp_error)| {
            let (vip, vport, udp) = services[service];
            let from = sources[client];
            Shape {
                kind: kind(icmp_error, udp, flags),
                dst_mac: LB.mac,
                from,
                src: (from.ip(), CLIENT_PORTS[port]),
                dst: (vip, vport),
                payload,
                ingress: 0,
            }
        })
}

/// Any kind of frame, from anyone to anything of [`DESTINATIONS`], on any of [`PORTS`].
fn free_shape() -> impl Strategy<Value = Shape> {
    let dst_mac =
        prop_oneof![17 => Just(LB.mac), 2 => Just(MacAddr::BROADCAST), 1 => Just(OTHER_MAC)];
    free_shape_of(kind(), dst_mac, &SOURCES, &DESTINATIONS)
}

/// Any frame of `kind` to `dst_mac`, from any of `sources` to any of `destinations`, on any
/// of [`PORTS`], now and then on an unknown interface.
fn free_shape_of<K: Clone + std::fmt::Debug, H: Sender>(
    kind: impl Strategy<Value = K>,
    dst_mac: impl Strategy<Value = MacAddr>,
    sources: &'static [H],
    destinations: &'static [H::Addr],
) -> impl Strategy<Value = Shape<K, H>> {
    (
        kind,
        dst_mac,
        0..sources.len(),
        0..destinations.len(),
        0..PORTS.len(),
        0..PORTS.len(),
        prop_oneof![3 => Just(0usize), 1 => 1..48usize],
        prop_oneof![29 => Just(0u8), 1 => Just(1u8)],
    )
        .prop_map(move |(kind, dst_mac, src, dst, src_port, dst_port, payload, ingress)| {
            let from = sources[src];
            Shape {
                kind,
                dst_mac,
                from,
                src: (from.ip(), PORTS[src_port]),
                dst: (destinations[dst], PORTS[dst_port]),
                payload,
                ingress,
            }
        })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![3 => service_shape(), 2 => free_shape()]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        11 => Just(Damage::None),
        3 => (0..20usize, any::<u8>(), any::<bool>())
            .prop_map(|(offset, value, fix_checksum)| Damage::IpByte { offset, value, fix_checksum }),
        2 => (0..20usize, any::<u8>()).prop_map(|(offset, value)| Damage::L4Byte { offset, value }),
        2 => (0..100usize, 1..=255u8).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        2 => (0..80usize).prop_map(|at| Damage::Cut { at }),
        1 => Just(Damage::Options),
        1 => (0..=2u8).prop_map(Damage::Ttl),
    ]
}

/// Sequences of frames of `shape`, damaged by `damage`, replies, answers and waits.
fn ops_of<S: Clone + std::fmt::Debug, D: Clone + std::fmt::Debug, DS: Strategy<Value = D>>(
    shape: impl Strategy<Value = S>,
    damage: impl Fn() -> DS,
) -> impl Strategy<Value = Vec<Op<S, D>>> {
    let op = prop_oneof![
        16 => (shape, damage()).prop_map(|(shape, damage)| Op::Send(shape, damage)),
        6 => (0..TCP_FLAGS.len(), damage()).prop_map(|(flags, damage)| Op::Reply { flags, damage }),
        2 => Just(Op::Answer),
        1 => prop_oneof![1..5_000u64, 5_000..400_000u64].prop_map(Op::Wait),
    ];
    prop::collection::vec(op, 1..60)
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    ops_of(shape(), damage)
}

/// A frame a generator describes, before damage.
trait Generated {
    fn build(&self) -> Vec<u8>;
    fn ingress(&self) -> IfaceId;
}

/// Damage done to a built frame.
trait Harm {
    fn apply(&self, frame: &mut Vec<u8>);
}

impl Generated for Shape {
    fn build(&self) -> Vec<u8> {
        build(self)
    }

    fn ingress(&self) -> IfaceId {
        IfaceId(self.ingress)
    }
}

impl Harm for Damage {
    fn apply(&self, frame: &mut Vec<u8>) {
        apply(self, frame);
    }
}

/// The frame a shape describes, undamaged (valid checksums).
fn build(shape: &Shape) -> Vec<u8> {
    let Shape { from, src, dst, dst_mac, .. } = *shape;
    let payload = vec![0x5a; shape.payload];
    match shape.kind {
        Kind::Tcp { flags } => {
            testkit::tcp(from.mac, dst_mac, src, dst, TCP_FLAGS[flags], &payload)
        }
        Kind::Udp => testkit::udp(from.mac, dst_mac, src, dst, &payload),
        Kind::IcmpEcho { reply } => {
            testkit::icmp_echo(from.mac, dst_mac, src.0, dst.0, 64, reply, &payload)
        }
        Kind::IcmpError { udp } => {
            let quoted = if udp {
                testkit::udp(LB.mac, from.mac, dst, src, &payload)
            } else {
                testkit::tcp(LB.mac, from.mac, dst, src, ACK, &payload)
            };
            testkit::icmp_frag_needed(from.mac, dst_mac, src.0, dst.0, 1400, &quoted, 8)
        }
        Kind::Arp { request, claim } => {
            let sender = if claim { dst.0 } else { src.0 };
            let mut frame = testkit::arp(request, from.mac, sender, LB.mac, dst.0);
            // A request to the box's MAC is a unicast refresh.
            frame[..6].copy_from_slice(&dst_mac.0);
            frame
        }
        Kind::Gre => {
            let mut frame = testkit::udp(from.mac, dst_mac, src, dst, &payload);
            frame[14 + 9] = 47;
            fix_ip_checksum(&mut frame);
            frame
        }
    }
}

fn fix_ip_checksum(frame: &mut [u8]) {
    if frame.len() < 34 {
        return;
    }
    frame[24..26].fill(0);
    let header_len = (usize::from(frame[14] & 0x0f) * 4).clamp(20, frame.len() - 14);
    let checksum =
        xlb::wire::checksum::finish(xlb::wire::checksum::sum(&frame[14..14 + header_len], 0));
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());
}

fn apply(damage: &Damage, frame: &mut Vec<u8>) {
    match *damage {
        Damage::None => {}
        Damage::IpByte { offset, value, fix_checksum } => {
            if let Some(byte) = frame.get_mut(14 + offset) {
                *byte = value;
                if fix_checksum {
                    fix_ip_checksum(frame);
                }
            }
        }
        Damage::L4Byte { offset, value } => {
            let header_len = frame.get(14).map_or(20, |b| usize::from(b & 0x0f) * 4);
            if let Some(byte) = frame.get_mut(14 + header_len + offset) {
                *byte = value;
            }
        }
        Damage::Flip { at, xor } => {
            if let Some(byte) = frame.get_mut(at) {
                *byte ^= xor;
            }
        }
        Damage::Cut { at } => frame.truncate(at),
        Damage::Ttl(ttl) => {
            if frame.len() >= 34 {
                frame[14 + 8] = ttl;
                fix_ip_checksum(frame);
            }
        }
        Damage::Options => {
            if frame.len() >= 34 && frame[14] == 0x45 {
                frame.splice(34..34, [1u8, 1, 1, 1]);
                frame[14] = 0x46;
                let total = u16::from_be_bytes([frame[16], frame[17]]).wrapping_add(4);
                frame[16..18].copy_from_slice(&total.to_be_bytes());
                fix_ip_checksum(frame);
            }
        }
    }
}

/// The answer of the backend that got `sent` (a TCP or UDP frame xlb sent to it, IPv4 or
/// IPv6).
fn reply_to(sent: &[u8], flags: Flags) -> Option<Vec<u8>> {
    let packet = etherparse::SlicedPacket::from_ethernet(sent).ok()?;
    let (src, dst): (IpAddr, IpAddr) = match packet.net? {
        etherparse::NetSlice::Ipv4(ip) => {
            (ip.header().source_addr().into(), ip.header().destination_addr().into())
        }
        etherparse::NetSlice::Ipv6(ip) => {
            (ip.header().source_addr().into(), ip.header().destination_addr().into())
        }
        _ => return None,
    };
    let backend_mac = MacAddr(sent[..6].try_into().ok()?);
    let (sport, dport, tcp) = match packet.transport? {
        etherparse::TransportSlice::Tcp(tcp) => (tcp.source_port(), tcp.destination_port(), true),
        etherparse::TransportSlice::Udp(udp) => (udp.source_port(), udp.destination_port(), false),
        _ => return None,
    };
    Some(match (src, dst, tcp) {
        (IpAddr::V4(src), IpAddr::V4(dst), true) => {
            testkit::tcp(backend_mac, LB.mac, (dst, dport), (src, sport), flags, b"reply")
        }
        (IpAddr::V4(src), IpAddr::V4(dst), false) => {
            testkit::udp(backend_mac, LB.mac, (dst, dport), (src, sport), b"reply")
        }
        (IpAddr::V6(src), IpAddr::V6(dst), true) => {
            testkit::tcp6(backend_mac, LB.mac, (dst, dport), (src, sport), flags, b"reply")
        }
        (IpAddr::V6(src), IpAddr::V6(dst), false) => {
            testkit::udp6(backend_mac, LB.mac, (dst, dport), (src, sport), b"reply")
        }
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// IPv6: the same box, dual-stack, with the same services on IPv6 VIPs. Frames of every kind
// the IPv6 steps handle (TCP, UDP, ICMPv6 echo and errors, neighbour solicitations and
// advertisements, next headers xlb does not forward), damaged in the fixed header (version,
// payload length, next header, hop limit), the upper layer, by a flip or a cut, or by
// extension headers inserted (forwarded: hop-by-hop, routing, destination options; refused:
// fragment, segments left, ESP, a length past the payload, chains past the walk's bound).

const fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)
}
const LB6: Host6 = Host6 { mac: LB.mac, ip: v6(0x10) };
const GATEWAY6: Host6 = Host6 { mac: GATEWAY.mac, ip: v6(0x1) };
const CLIENT6: Host6 = Host6 { mac: CLIENT.mac, ip: v6(0x20) };
const CLIENT6_2: Host6 = Host6 { mac: CLIENT2.mac, ip: v6(0x21) };
/// A client behind the gateway.
const REMOTE6: Host6 =
    Host6 { mac: GATEWAY.mac, ip: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 7) };
/// A backend with a static neighbour entry.
const RS1_6: Host6 = Host6 { mac: RS1.mac, ip: v6(0x11) };
/// A backend xlb must solicit for.
const RS3_6: Host6 = Host6 { mac: RS3.mac, ip: v6(0x13) };

const VIP6_DR: Ipv6Addr = v6(0x100);
const VIP6_NAT: Ipv6Addr = v6(0x101);
const VIP6_FULLNAT: Ipv6Addr = v6(0x102);
const VIP6_DRAINED: Ipv6Addr = v6(0x103);

/// [`CONFIG`]'s interface with an IPv6 address and gateway beside its IPv4 ones.
const INTERFACE6: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
addr6 = "2001:db8:1::10/64"
mac = "02:00:00:00:00:10"
gateway = "10.1.1.1"
gateway6 = "2001:db8:1::1"
"#;

/// The dual-stack box: [`CONFIG`] with its services, backends, local addresses and
/// neighbours moved from 10.1.1.x to 2001:db8:1::x (10.1.1.100 becomes 2001:db8:1::100,
/// [`VIP6_DR`]), on [`INTERFACE6`].
fn config6() -> String {
    let rest = &CONFIG[CONFIG.find("[conntrack]").expect("CONFIG has a [conntrack] table")..];
    format!("{INTERFACE6}\n{}", rest.replace("\"10.1.1.", "\"2001:db8:1::"))
}

fn pipeline6() -> Pipeline {
    let config = Config::parse(&config6(), "robustness6.toml").unwrap();
    Pipeline::new(Arc::new(Snapshot::build(&config, 1).unwrap()), CoreSlot::SINGLE)
}

const SOURCES6: [Host6; 5] = [CLIENT6, CLIENT6_2, REMOTE6, RS1_6, RS3_6];
/// Where free-form IPv6 frames and NDP go: the VIPs, the local addresses, the box's own
/// address, a client, an address nobody has, a link-local one, all nodes.
const DESTINATIONS6: [Ipv6Addr; 11] = [
    VIP6_DR,
    VIP6_NAT,
    VIP6_FULLNAT,
    VIP6_DRAINED,
    v6(0x200),
    v6(0x201),
    LB6.ip,
    CLIENT6.ip,
    v6(0x50),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x20),
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
];
const SERVICES6: [(Ipv6Addr, u16, bool); 5] = [
    (VIP6_DR, 80, false),
    (VIP6_NAT, 80, false),
    (VIP6_FULLNAT, 53, true),
    (VIP6_FULLNAT, 80, false),
    (VIP6_DRAINED, 80, false),
];

/// What a generated IPv6 frame is before it is damaged.
#[derive(Debug, Clone)]
enum Kind6 {
    Tcp {
        flags: usize,
    },
    Udp,
    Echo {
        reply: bool,
    },
    /// Packet Too Big (or port unreachable) quoting a packet of the flow from the
    /// destination to the source.
    Error {
        udp: bool,
        too_big: bool,
    },
    /// A solicitation for the destination: a duplicate address detection probe (from `::`),
    /// to the solicited-node group or unicast; with `claim`, from the destination itself
    /// (another host using a VIP: a conflict).
    Solicit {
        dad: bool,
        multicast: bool,
        claim: bool,
    },
    /// An advertisement of the sender itself, or (`claim`) of the destination.
    Advert {
        claim: bool,
        solicited: bool,
    },
    /// A next header xlb does not forward: no next header (59), or GRE (47).
    Other {
        gre: bool,
    },
}

type Shape6 = Shape<Kind6, Host6>;

/// Extension headers the damage inserts (8 bytes each; the first byte becomes the next
/// header): hop-by-hop with a router alert, a type 0 routing header (segments left 0),
/// destination options with padding — forwarded, one or a few; hostile past the walk's
/// bound of 8, or hop-by-hop twice — then a first fragment, an atomic fragment, a segment
/// routing header with segments left 1, destination options whose length (2048 bytes) runs
/// past any payload here, and ESP.
const EXT_HEADERS: [(u8, [u8; 8]); 8] = [
    (0, [0, 0, 5, 2, 0, 0, 1, 0]),
    (43, [0, 0, 0, 0, 0, 0, 0, 0]),
    (60, [0, 0, 1, 4, 0, 0, 0, 0]),
    (44, [0, 0, 0, 1, 0, 0, 0, 7]),
    (44, [0, 0, 0, 0, 0, 0, 0, 7]),
    (43, [0, 0, 4, 1, 0, 0, 0, 0]),
    (60, [0, 255, 1, 4, 0, 0, 0, 0]),
    (50, [0, 0, 0x10, 1, 0, 0, 0, 1]),
];

/// Damage done to an IPv6 frame once built (offsets past its end do nothing).
#[derive(Debug, Clone)]
enum Damage6 {
    None,
    /// Sets a byte of the fixed header.
    IpByte {
        offset: usize,
        value: u8,
    },
    /// Sets a byte of what follows the fixed header.
    L4Byte {
        offset: usize,
        value: u8,
    },
    Flip {
        at: usize,
        xor: u8,
    },
    Cut {
        at: usize,
    },
    HopLimit(u8),
    /// The payload length moved by this much.
    PayloadLen(i16),
    /// `count` extension headers of [`EXT_HEADERS`] `kind` inserted after the fixed header
    /// (payload length grown to match).
    Ext {
        kind: usize,
        count: usize,
    },
}

fn kind6() -> impl Strategy<Value = Kind6> {
    prop_oneof![
        30 => (0..TCP_FLAGS.len()).prop_map(|flags| Kind6::Tcp { flags }),
        15 => Just(Kind6::Udp),
        8 => any::<bool>().prop_map(|reply| Kind6::Echo { reply }),
        8 => (any::<bool>(), any::<bool>()).prop_map(|(udp, too_big)| Kind6::Error { udp, too_big }),
        14 => (any::<bool>(), any::<bool>(), prop_oneof![5 => Just(false), 1 => Just(true)])
            .prop_map(|(dad, multicast, claim)| Kind6::Solicit { dad, multicast, claim }),
        8 => (prop_oneof![3 => Just(false), 1 => Just(true)], any::<bool>())
            .prop_map(|(claim, solicited)| Kind6::Advert { claim, solicited }),
        3 => any::<bool>().prop_map(|gre| Kind6::Other { gre }),
    ]
}

/// A frame of a client's flow to an IPv6 service.
fn service_shape6() -> impl Strategy<Value = Shape6> {
    service_shape_of(&SERVICES6, &SOURCES6, |icmp_error, udp, flags| match (icmp_error, udp) {
        (true, udp) => Kind6::Error { udp, too_big: true },
        (false, true) => Kind6::Udp,
        (false, false) => Kind6::Tcp { flags },
    })
}

/// Any kind of IPv6 frame, from anyone to anything of [`DESTINATIONS6`].
fn free_shape6() -> impl Strategy<Value = Shape6> {
    let all_nodes = multicast_mac(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
    let dst_mac = prop_oneof![17 => Just(LB.mac), 2 => Just(all_nodes), 1 => Just(OTHER_MAC)];
    free_shape_of(kind6(), dst_mac, &SOURCES6, &DESTINATIONS6)
}

fn shape6() -> impl Strategy<Value = Shape6> {
    prop_oneof![3 => service_shape6(), 2 => free_shape6()]
}

fn damage6() -> impl Strategy<Value = Damage6> {
    prop_oneof![
        11 => Just(Damage6::None),
        3 => (prop_oneof![Just(0usize), Just(4), Just(5), Just(6), Just(7), 0..40usize], any::<u8>())
            .prop_map(|(offset, value)| Damage6::IpByte { offset, value }),
        2 => (0..24usize, any::<u8>()).prop_map(|(offset, value)| Damage6::L4Byte { offset, value }),
        2 => (0..120usize, 1..=255u8).prop_map(|(at, xor)| Damage6::Flip { at, xor }),
        2 => (0..100usize).prop_map(|at| Damage6::Cut { at }),
        1 => prop_oneof![0..=2u8, Just(254u8)].prop_map(Damage6::HopLimit),
        1 => prop_oneof![-9..=9i16, Just(i16::MAX)].prop_map(Damage6::PayloadLen),
        2 => (0..EXT_HEADERS.len(), prop_oneof![3 => Just(1usize), 1 => 2..40usize])
            .prop_map(|(kind, count)| Damage6::Ext { kind, count }),
    ]
}

fn ops6() -> impl Strategy<Value = Vec<Op<Shape6, Damage6>>> {
    ops_of(shape6(), damage6)
}

impl Generated for Shape6 {
    fn build(&self) -> Vec<u8> {
        let Shape6 { from, src, dst, dst_mac, .. } = *self;
        let payload = vec![0x5a; self.payload];
        match self.kind {
            Kind6::Tcp { flags } => {
                testkit::tcp6(from.mac, dst_mac, src, dst, TCP_FLAGS[flags], &payload)
            }
            Kind6::Udp => testkit::udp6(from.mac, dst_mac, src, dst, &payload),
            Kind6::Echo { reply } => {
                testkit::icmpv6_echo(from.mac, dst_mac, src.0, dst.0, 64, reply, &payload)
            }
            Kind6::Error { udp, too_big } => {
                let quoted = if udp {
                    testkit::udp6(LB.mac, from.mac, dst, src, &payload)
                } else {
                    testkit::tcp6(LB.mac, from.mac, dst, src, ACK, &payload)
                };
                if too_big {
                    testkit::icmpv6_packet_too_big(
                        from.mac, dst_mac, src.0, dst.0, 1280, &quoted, 8,
                    )
                } else {
                    testkit::icmpv6_port_unreachable(from.mac, dst_mac, src.0, dst.0, &quoted)
                }
            }
            Kind6::Solicit { dad, multicast, claim } => {
                let source = match (dad, claim) {
                    (true, _) => Ipv6Addr::UNSPECIFIED,
                    (false, true) => dst.0,
                    (false, false) => src.0,
                };
                let unicast = (!multicast).then_some((dst.0, dst_mac));
                neighbor_solicitation(from.mac, source, dst.0, unicast)
            }
            Kind6::Advert { claim, solicited } => {
                let target = if claim { dst.0 } else { src.0 };
                neighbor_advertisement(
                    (from.mac, src.0),
                    (dst_mac, dst.0),
                    target,
                    from.mac,
                    solicited,
                )
            }
            Kind6::Other { gre } => {
                let mut frame = testkit::udp6(from.mac, dst_mac, src, dst, &payload);
                frame[NEXT_HEADER6] = if gre { 47 } else { 59 };
                frame
            }
        }
    }

    fn ingress(&self) -> IfaceId {
        IfaceId(self.ingress)
    }
}

const NEXT_HEADER6: usize = 14 + 6;
const PAYLOAD_LEN6: usize = 14 + 4;
const UPPER6: usize = 14 + 40;

impl Harm for Damage6 {
    fn apply(&self, frame: &mut Vec<u8>) {
        match *self {
            Damage6::None => {}
            Damage6::IpByte { offset, value } => {
                if let Some(byte) = frame.get_mut(14 + offset) {
                    *byte = value;
                }
            }
            Damage6::L4Byte { offset, value } => {
                if let Some(byte) = frame.get_mut(UPPER6 + offset) {
                    *byte = value;
                }
            }
            Damage6::Flip { at, xor } => {
                if let Some(byte) = frame.get_mut(at) {
                    *byte ^= xor;
                }
            }
            Damage6::Cut { at } => frame.truncate(at),
            Damage6::HopLimit(hop_limit) => {
                if let Some(byte) = frame.get_mut(14 + 7) {
                    *byte = hop_limit;
                }
            }
            Damage6::PayloadLen(delta) => {
                if frame.len() >= UPPER6 {
                    let at = PAYLOAD_LEN6..PAYLOAD_LEN6 + 2;
                    let len = u16::from_be_bytes([frame[at.start], frame[at.start + 1]]);
                    frame[at].copy_from_slice(&len.wrapping_add_signed(delta).to_be_bytes());
                }
            }
            Damage6::Ext { kind, count } => {
                if frame.len() < UPPER6 {
                    return;
                }
                let (code, header) = EXT_HEADERS[kind];
                for _ in 0..count {
                    let mut header = header;
                    header[0] = frame[NEXT_HEADER6];
                    frame.splice(UPPER6..UPPER6, header);
                    frame[NEXT_HEADER6] = code;
                    let at = PAYLOAD_LEN6..PAYLOAD_LEN6 + 2;
                    let len = u16::from_be_bytes([frame[at.start], frame[at.start + 1]]);
                    frame[at].copy_from_slice(&len.wrapping_add(8).to_be_bytes());
                }
            }
        }
    }
}

/// Whether the TCP, UDP or ICMPv6 checksum of an IPv6 frame (upper layer right after the
/// fixed header, or after hop-by-hop, destination options and routing headers) verifies
/// over the pseudo-header; `None` for anything else, or a payload length the frame cannot
/// hold. A UDP checksum of 0 ("none") is invalid in IPv6.
fn upper_checksum_ok6(frame: &[u8]) -> Option<bool> {
    if frame.get(12..14)? != [0x86, 0xdd] || frame.len() < UPPER6 {
        return None;
    }
    let payload_len = u16::from_be_bytes([frame[PAYLOAD_LEN6], frame[PAYLOAD_LEN6 + 1]]);
    let payload_end = UPPER6 + usize::from(payload_len);
    let (mut next, mut at) = (frame[NEXT_HEADER6], UPPER6);
    while matches!(next, 0 | 43 | 60) {
        let header = frame.get(at..at + 2)?;
        next = header[0];
        at += (usize::from(header[1]) + 1) * 8;
    }
    let min = match next {
        6 => 20,
        17 => 8,
        58 => 4,
        _ => return None,
    };
    let upper = frame.get(at..payload_end)?;
    if upper.len() < min {
        return None;
    }
    if next == 17 && upper[6..8] == [0, 0] {
        return Some(false);
    }
    let len = upper.len() as u64;
    let mut sum: u64 = len + u64::from(next);
    for word in frame[22..UPPER6].chunks(2).chain(upper.chunks(2)) {
        sum += u64::from(u16::from_be_bytes([word[0], word.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Some(sum == 0xffff)
}

/// A pipeline driven by a test, which checks every verdict as it comes and counts them.
struct Driver {
    pipeline: Pipeline,
    tally: VerdictTally,
    now: u64,
    /// The last frame xlb sent to a backend (for [`Op::Reply`]).
    to_backend: Option<Vec<u8>>,
    /// The address xlb last asked for, by ARP or NDP (for [`Op::Answer`], [`Op6::Answer`]).
    asked: Option<IpAddr>,
    /// IPv6 frames with extension headers (their checksum valid) sent on with it still
    /// valid: the forwarded chains.
    ext_tx: u64,
}

impl Driver {
    fn new() -> Driver {
        Driver::with(pipeline())
    }

    fn with(pipeline: Pipeline) -> Driver {
        Driver {
            pipeline,
            tally: VerdictTally::default(),
            now: 1_000,
            to_backend: None,
            asked: None,
            ext_tx: 0,
        }
    }

    /// Processes one frame and checks what must hold of any verdict.
    fn frame(&mut self, ingress: IfaceId, mut frame: Vec<u8>) -> Result<Verdict, TestCaseError> {
        self.now += 1;
        let now = Instant::from_millis(self.now);
        let input = frame.clone();
        let verdict = self.pipeline.process(now, ingress, &mut frame);
        self.tally.record(input.len(), verdict);
        prop_assert_eq!(frame.len(), input.len(), "the frame keeps its length");
        match verdict {
            Verdict::Pass => prop_assert!(frame == input, "a passed frame is unchanged"),
            Verdict::Tx(egress) => {
                prop_assert_eq!(egress, IfaceId(0));
                check_ip_checksum(&frame)?;
                if upper_checksum_ok6(&input) == Some(true) {
                    prop_assert_eq!(
                        upper_checksum_ok6(&frame),
                        Some(true),
                        "a valid IPv6 upper-layer checksum stays valid: {:02x?} became {:02x?}",
                        input,
                        frame
                    );
                    if matches!(input[NEXT_HEADER6], 0 | 43 | 60) {
                        self.ext_tx += 1;
                    }
                }
                if frame[..6] == RS1.mac.0 {
                    self.to_backend = Some(frame);
                }
            }
            Verdict::Drop(_) | Verdict::Held | Verdict::Encapsulated => {}
        }
        let mut emitted = Vec::new();
        self.pipeline.drain_emitted(|_, f| emitted.push(f.to_vec()));
        for frame in emitted {
            check_ip_checksum(&frame)?;
            if frame[..6] == RS1.mac.0 || frame[..6] == RS3.mac.0 {
                self.to_backend = Some(frame);
            } else if frame[12..14] == [0x08, 0x06] && frame[21] == 1 {
                self.asked = Some(Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]).into());
            } else if frame[12..14] == [0x86, 0xdd] && frame[20] == 58 {
                // xlb's own NDP (answers, solicitations, probes) has valid checksums.
                prop_assert_eq!(upper_checksum_ok6(&frame), Some(true), "emitted {:02x?}", frame);
                let source: [u8; 16] = frame[22..38].try_into().unwrap();
                if frame[54] == 135 && !Ipv6Addr::from(source).is_unspecified() {
                    let target: [u8; 16] = frame[62..78].try_into().unwrap();
                    self.asked = Some(Ipv6Addr::from(target).into());
                }
            }
        }
        self.pipeline.maintain(now);
        Ok(verdict)
    }

    fn run<S: Generated, D: Harm>(&mut self, op: &Op<S, D>) -> Result<(), TestCaseError> {
        match op {
            Op::Send(shape, damage) => {
                let mut frame = shape.build();
                damage.apply(&mut frame);
                self.frame(shape.ingress(), frame)?;
            }
            Op::Reply { flags, damage } => {
                if let Some(mut frame) =
                    self.to_backend.as_deref().and_then(|sent| reply_to(sent, TCP_FLAGS[*flags]))
                {
                    damage.apply(&mut frame);
                    self.frame(IfaceId(0), frame)?;
                }
            }
            Op::Answer => {
                let host = [RS3, CLIENT, CLIENT2, GATEWAY]
                    .into_iter()
                    .find(|h| Some(IpAddr::from(h.ip)) == self.asked);
                let host6 = [RS3_6, CLIENT6, CLIENT6_2, GATEWAY6]
                    .into_iter()
                    .find(|h| Some(IpAddr::from(h.ip)) == self.asked);
                if let Some(host) = host {
                    self.frame(IfaceId(0), testkit::arp(false, host.mac, host.ip, LB.mac, LB.ip))?;
                } else if let Some(host) = host6 {
                    let lb = (LB.mac, LB6.ip);
                    let answer =
                        neighbor_advertisement((host.mac, host.ip), lb, host.ip, host.mac, true);
                    self.frame(IfaceId(0), answer)?;
                }
            }
            Op::Wait(ms) => {
                self.now += ms;
                self.pipeline.maintain(Instant::from_millis(self.now));
            }
        }
        Ok(())
    }

    /// The IPv6 tables stay within their bounds: connections within the table's capacity,
    /// neighbours within [`NEIGHBOR_CAPACITY`], held frames within the hold queue's.
    fn check_bounded6(&self) -> Result<(), TestCaseError> {
        let conntrack = self.pipeline.conntrack6();
        prop_assert!(conntrack.len() <= conntrack.capacity(), "{} flows", conntrack.len());
        prop_assert!(self.pipeline.neighbors6().len() <= NEIGHBOR_CAPACITY);
        prop_assert!(self.pipeline.held() <= 2 * MAX_HELD);
        Ok(())
    }

    /// The pipeline's counters agree with the verdicts it returned.
    fn check_counted(&self) -> Result<(), TestCaseError> {
        self.tally.check(self.pipeline.counters()).map_err(TestCaseError::fail)
    }
}

/// A transmitted or emitted IPv4 frame has a valid header checksum.
fn check_ip_checksum(frame: &[u8]) -> Result<(), TestCaseError> {
    if frame.get(12..14) != Some(&[0x08, 0x00]) {
        return Ok(());
    }
    let header = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]);
    prop_assert!(header.is_ok(), "a sent IPv4 frame parses: {:?}", header.err());
    if let Ok(header) = header {
        // Summed over the bytes as sent (RFC 1071: a valid header sums to 0xffff), not over
        // etherparse's `Ipv4Header`, which drops the reserved flag bit a client may set.
        let bytes = header.slice();
        let mut sum: u32 =
            bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        prop_assert_eq!(sum, 0xffff, "IPv4 header checksum of {:02x?}", bytes);
    }
    Ok(())
}

/// Good frames of every kind the pipeline handles.
fn seeds() -> Vec<Vec<u8>> {
    let client = (CLIENT.ip, 40000);
    let dr = (VIP_DR, 80);
    let nat = (VIP_NAT, 80);
    let fullnat = (VIP_FULLNAT, 53);
    let dr_ack = testkit::tcp(RS1.mac, LB.mac, dr, client, ACK, &[0; 40]);
    vec![
        testkit::tcp(CLIENT.mac, LB.mac, client, dr, SYN, &[]),
        testkit::tcp(CLIENT.mac, LB.mac, client, nat, SYN, b"hello"),
        testkit::tcp(RS1.mac, LB.mac, (RS1.ip, 8080), client, SYN_ACK, &[]),
        testkit::udp(CLIENT.mac, LB.mac, client, fullnat, b"query"),
        testkit::udp(
            RS1.mac,
            LB.mac,
            (RS1.ip, 5353),
            (Ipv4Addr::new(10, 1, 1, 200), 1024),
            b"answer",
        ),
        testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, dr.0),
        testkit::arp(false, RS3.mac, RS3.ip, LB.mac, LB.ip),
        testkit::icmp_echo(CLIENT.mac, LB.mac, CLIENT.ip, dr.0, 64, false, b"ping"),
        testkit::icmp_frag_needed(CLIENT.mac, LB.mac, CLIENT.ip, dr.0, 1400, &dr_ack, 8),
        testkit::icmp_frag_needed(RS1.mac, LB.mac, RS1.ip, CLIENT.ip, 1400, &dr_ack, 28),
    ]
}

/// A mutation of a good frame: flip some bytes, then maybe cut it short.
#[derive(Debug, Clone)]
struct Mutation {
    seed: usize,
    flips: Vec<(usize, u8)>,
    cut: Option<usize>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        0..10usize,
        prop::collection::vec((0..120usize, any::<u8>()), 0..6),
        prop::option::of(0..120usize),
    )
        .prop_map(|(seed, flips, cut)| Mutation { seed, flips, cut })
}

fn mutated(seeds: &[Vec<u8>], m: &Mutation) -> Vec<u8> {
    let mut frame = seeds[m.seed].clone();
    for &(at, value) in &m.flips {
        if let Some(byte) = frame.get_mut(at) {
            *byte ^= value;
        }
    }
    if let Some(cut) = m.cut {
        frame.truncate(cut);
    }
    frame
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..20)) {
        let mut driver = Driver::new();
        for frame in frames {
            driver.frame(IfaceId(0), frame)?;
        }
        driver.check_counted()?;
    }

    #[test]
    fn mutated_good_frames_never_panic(mutations in prop::collection::vec(mutation(), 1..30)) {
        let seeds = seeds();
        let mut driver = Driver::new();
        // Open some flows first so that mutations hit tracked paths too.
        for seed in &seeds {
            driver.frame(IfaceId(0), seed.clone())?;
        }
        for m in &mutations {
            driver.frame(IfaceId(0), mutated(&seeds, m))?;
        }
        driver.check_counted()?;
    }

    /// A good frame passes through the pipeline twice (as another core's copy would): the
    /// outcome is the same both times and the checksums of what it sends stay valid.
    #[test]
    fn transmitted_frames_keep_valid_ip_checksums(seed in 0..10usize) {
        let mut pipeline = pipeline();
        let mut frame = seeds()[seed].clone();
        if let Verdict::Tx(_) = pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame) {
            let packet = etherparse::SlicedPacket::from_ethernet(&frame);
            prop_assert!(packet.is_ok(), "transmitted frame parses: {:?}", packet.err());
            if let Ok(etherparse::SlicedPacket { net: Some(etherparse::NetSlice::Ipv4(ip)), .. }) = packet {
                let header = ip.header().to_header();
                prop_assert_eq!(header.header_checksum, header.calc_header_checksum());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Generated sequences (frames that reach deep, damaged; backends' replies; time
    /// jumps): every verdict checked as it comes, every one counted.
    #[test]
    fn generated_traffic_is_handled_and_counted(ops in ops()) {
        let mut driver = Driver::new();
        for op in &ops {
            driver.run(op)?;
        }
        driver.check_counted()?;
    }

    /// The same with IPv6 sequences at the IPv6 services, and the IPv6 tables stay within
    /// their bounds.
    #[test]
    fn generated_ipv6_traffic_is_handled_and_counted(ops in ops6()) {
        let mut driver = Driver::with(pipeline6());
        for op in &ops {
            driver.run(op)?;
            driver.check_bounded6()?;
        }
        driver.check_counted()?;
    }
}

/// `process_batch` is `process` on each frame in order: same verdicts, same bytes out,
/// same frames sent on its own, same counters — and those counters are the verdicts it
/// returned.
fn batch_is_one_by_one(make: fn() -> Pipeline, frames: Vec<Vec<u8>>) -> Result<(), TestCaseError> {
    let now = Instant::from_secs(5);
    let mut one_by_one = make();
    let mut singles = frames.clone();
    let single_verdicts: Vec<Verdict> =
        singles.iter_mut().map(|f| one_by_one.process(now, IfaceId(0), f)).collect();
    let mut single_emitted = Vec::new();
    one_by_one.drain_emitted(|_, f| single_emitted.push(f.to_vec()));

    let mut batched = make();
    let mut batch = frames.clone();
    let mut refs: Vec<&mut [u8]> = batch.iter_mut().map(|f| f.as_mut_slice()).collect();
    let mut verdicts = vec![Verdict::Pass; refs.len()];
    batched.process_batch(now, IfaceId(0), &mut refs, &mut verdicts);
    let mut batch_emitted = Vec::new();
    batched.drain_emitted(|_, f| batch_emitted.push(f.to_vec()));

    let mut tally = VerdictTally::default();
    for ((frame, verdict), out) in frames.iter().zip(&verdicts).zip(&batch) {
        tally.record(frame.len(), *verdict);
        if *verdict == Verdict::Pass {
            prop_assert!(out == frame, "a passed frame is unchanged");
        }
    }
    tally.check(batched.counters()).map_err(TestCaseError::fail)?;
    prop_assert_eq!(verdicts, single_verdicts);
    prop_assert_eq!(batch, singles);
    prop_assert_eq!(batch_emitted, single_emitted);
    for stat in Stat::ALL {
        prop_assert_eq!(
            batched.counters().get(*stat),
            one_by_one.counters().get(*stat),
            "{}",
            stat
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_batch_is_the_frames_one_by_one(
        frames in prop::collection::vec(
            prop_oneof![
                (shape(), damage()).prop_map(|(shape, damage)| {
                    let mut frame = build(&shape);
                    apply(&damage, &mut frame);
                    frame
                }),
                mutation().prop_map(|m| mutated(&seeds(), &m)),
            ],
            1..150,
        )
    ) {
        batch_is_one_by_one(pipeline, frames)?;
    }

    /// The same for IPv6 frames (and a few IPv4 ones) on the dual-stack box.
    #[test]
    fn an_ipv6_batch_is_the_frames_one_by_one(
        frames in prop::collection::vec(
            prop_oneof![
                5 => (shape6(), damage6()).prop_map(|(shape, damage)| {
                    let mut frame = shape.build();
                    damage.apply(&mut frame);
                    frame
                }),
                1 => (shape(), damage()).prop_map(|(shape, damage)| {
                    let mut frame = build(&shape);
                    apply(&damage, &mut frame);
                    frame
                }),
            ],
            1..150,
        )
    ) {
        batch_is_one_by_one(pipeline6, frames)?;
    }
}

/// Drop reasons the configs above cannot produce from frames this small, and why.
const UNREACHED: [DropReason; 12] = [
    // One interface: a reply cannot arrive on another arm than its backend's.
    DropReason::ReplyWrongInterface,
    // One local port pool of 64512 ports per local address; sequences are far shorter.
    DropReason::NoLocalPort,
    // 4096 entries, never filled by 60 frames.
    DropReason::ConntrackFull,
    DropReason::Flood,
    // The gateway routes everything.
    DropReason::NoRoute,
    // Held frames are at most ~150 bytes (the limit is 2048).
    DropReason::NeighborFrameTooLarge,
    // A standalone box (no `[fleet]`): never a VRRP standby.
    DropReason::Standby,
    // No tunnel service in the config: tests/golden_tunnel.rs and the tunnel module's tests
    // reach these.
    DropReason::TunnelFragNeeded,
    DropReason::TunnelTooBig,
    DropReason::TunnelEmitFull,
    // The generators write no VLAN tags: the vlan module's tables, the tagged golden runs
    // and the malformed corpus reach these.
    DropReason::VlanTruncated,
    DropReason::VlanTooManyTags,
];

/// What 400 generated sequences of one generator did, summed.
struct Reached {
    total: VerdictTally,
    stats: [u64; Stat::COUNT],
    replies: u64,
    /// Frames with extension headers forwarded ([`Driver::ext_tx`]).
    ext_tx: u64,
}

impl Reached {
    fn run<S: Generated, D: Harm>(
        strategy: impl Strategy<Value = Vec<Op<S, D>>>,
        make: fn() -> Pipeline,
    ) -> Reached {
        let mut runner = TestRunner::deterministic();
        let mut reached = Reached {
            total: VerdictTally::default(),
            stats: [0; Stat::COUNT],
            replies: 0,
            ext_tx: 0,
        };
        for _ in 0..400 {
            let ops = strategy.new_tree(&mut runner).unwrap().current();
            let mut driver = Driver::with(make());
            for op in &ops {
                driver.run(op).unwrap();
            }
            driver.check_counted().unwrap();
            let counters = driver.pipeline.counters();
            for stat in Stat::ALL {
                reached.stats[*stat as usize] += counters.get(*stat);
            }
            reached.replies += counters.backends.iter().map(|b| b.out_packets).sum::<u64>();
            reached.ext_tx += driver.ext_tx;
            reached.total.add(&driver.tally);
        }
        reached
    }

    fn stat(&self, stat: Stat) -> u64 {
        self.stats[stat as usize]
    }

    fn share(&self, n: u64) -> f64 {
        n as f64 / self.total.frames as f64
    }

    fn report(&self) -> String {
        let total = &self.total;
        format!(
            "{} frames: tx {:.2}, pass {:.2}, held {:.2}, new flows {:.2}, replies {}, \
             stats {:?}, drops {:?}",
            total.frames,
            self.share(total.tx),
            self.share(total.pass),
            self.share(total.held),
            self.share(self.stat(Stat::NewFlows)),
            self.replies,
            Stat::ALL
                .iter()
                .map(|s| (s.name(), self.stat(*s)))
                .filter(|(_, n)| *n > 0)
                .collect::<Vec<_>>(),
            DropReason::ALL
                .iter()
                .map(|r| (r.name(), total.drops(*r)))
                .filter(|(_, n)| *n > 0)
                .collect::<Vec<_>>(),
        )
    }

    /// What every generator must reach: enough frames, a good share transmitted, new flows
    /// and replies, held frames, and each of `stats`.
    fn check(&self, stats: &[Stat]) {
        let report = self.report();
        let total = &self.total;
        println!("{report}");
        assert!(total.frames > 5_000, "{report}");
        assert!(self.share(total.tx) >= 0.15, "transmitted: {report}");
        assert!(
            self.share(total.tx + total.held) >= 0.25,
            "a quarter transmitted or held: {report}"
        );
        assert!(self.share(self.stat(Stat::NewFlows)) >= 0.1, "new flows: {report}");
        assert!(self.share(total.pass) <= 0.4, "at most 40% goes to the kernel: {report}");
        assert!(total.held > 0, "frames held for an unresolved backend: {report}");
        assert!(self.replies >= 100, "NAT and FullNAT replies translated back: {report}");
        for s in stats {
            assert!(self.stat(*s) > 0, "{s} never happened: {report}");
        }
    }
}

/// With a fixed seed, the generators' frames reach every stage of the pipeline: a good
/// share is transmitted, opens flows and is translated back, and every drop reason the
/// configs allow occurs, IPv4's and IPv6's (a generator whose frames stop at the Ethernet
/// check fails this).
#[test]
fn the_generator_reaches_every_stage() {
    let four = Reached::run(ops(), pipeline);
    four.check(&[
        Stat::ArpRepliesSent,
        Stat::ArpRequestsSent,
        Stat::NeighborsLearned,
        Stat::ReleasedPackets,
        Stat::HeldExpired,
        Stat::IcmpEchoReplies,
        Stat::IcmpErrorsForwarded,
        Stat::StatelessPackets,
        Stat::ExpiredFlows,
        Stat::ReusedFlows,
    ]);
    let six = Reached::run(ops6(), pipeline6);
    six.check(&[
        Stat::NdpAdvertsSent,
        Stat::NdpSolicitsSent,
        Stat::NdpConflicts,
        Stat::NeighborsLearned,
        Stat::ReleasedPackets,
        Stat::HeldExpired,
        Stat::IcmpEchoReplies,
        Stat::IcmpErrorsForwarded,
        Stat::StatelessPackets,
        Stat::ExpiredFlows,
        Stat::ReusedFlows,
    ]);
    for reason in DropReason::ALL.iter().filter(|r| !UNREACHED.contains(r)) {
        assert!(
            four.total.drops(*reason) + six.total.drops(*reason) > 0,
            "no frame dropped as {reason}: IPv4 {}; IPv6 {}",
            four.report(),
            six.report()
        );
    }
    for reason in [
        DropReason::Ipv6ExtHeaders,
        DropReason::Ipv6SegmentsLeft,
        DropReason::Ipv6ExtChainTooLong,
        DropReason::BadIpv6ExtHeader,
        DropReason::BadNdp,
        DropReason::NdpConflict,
        DropReason::NdpAnswerEmitted,
        DropReason::Fragment,
        DropReason::TtlExceeded,
        DropReason::BadIpVersion,
        // A payload length beyond the frame is `truncated` (IPv6 has no header length).
        DropReason::Truncated,
        DropReason::BadL4Header,
        DropReason::UnsupportedProto,
        DropReason::IcmpNoFlow,
    ] {
        assert!(six.total.drops(reason) > 0, "no IPv6 frame dropped as {reason}: {}", six.report());
    }
    // Extension headers the pipeline walks past are forwarded, their checksum kept valid.
    assert!(six.ext_tx >= 20, "{} frames with extension headers forwarded", six.ext_tx);
}

/// A deterministic xorshift64 stream (no seed from the clock: a failure repeats).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// An address on the box's link (2001:db8:1::/64) and a unicast, locally administered
    /// MAC, both random.
    fn neighbor(&mut self) -> (Ipv6Addr, MacAddr) {
        let ip = Ipv6Addr::from_bits(v6(0).to_bits() | u128::from(self.next()));
        let [a, b, c, d, e, ..] = self.next().to_le_bytes();
        (ip, MacAddr([0x02, a, b, c, d, e]))
    }
}

/// An NS flood from random sources and MACs on the link: solicitations for strangers teach
/// nothing and are passed; 100k at a VIP (a quarter duplicate address detection probes) are
/// each answered once — in place, or (probes) by at most one emitted frame, the emit queue
/// bounding what a batch sends on its own — the neighbour table stays within its capacity,
/// the next hops the snapshot needs (a relayed backend, a static one) survive, and the box
/// still forwards to them without asking.
#[test]
fn a_solicitation_flood_at_an_ipv6_vip_keeps_state_and_answers_bounded() {
    const BATCH: usize = 64;
    const EMIT_CAPACITY: usize = 64;
    let mut pipeline = pipeline6();
    let mut tally = VerdictTally::default();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut ms = 1_000;
    let mut now = Instant::from_millis(ms);
    pipeline.learn_neighbor6(now, RS3_6.ip, RS3_6.mac);
    pipeline.drain_emitted(|_, _| {});
    let before = pipeline.neighbors6().len();

    let mut run = |pipeline: &mut Pipeline, frames: &mut Vec<Vec<u8>>, now: Instant| {
        let inputs = frames.clone();
        let mut refs: Vec<&mut [u8]> = frames.iter_mut().map(|f| f.as_mut_slice()).collect();
        let mut verdicts = vec![Verdict::Pass; refs.len()];
        pipeline.process_batch(now, IfaceId(0), &mut refs, &mut verdicts);
        for (input, verdict) in inputs.iter().zip(&verdicts) {
            tally.record(input.len(), *verdict);
        }
        let mut emitted = Vec::new();
        pipeline.drain_emitted(|_, frame| emitted.push(frame.to_vec()));
        pipeline.maintain(now);
        (inputs, verdicts, emitted)
    };

    // Solicitations for addresses that are not xlb's: passed, nothing learned or sent.
    for _ in 0..20_000 / BATCH {
        let mut frames: Vec<Vec<u8>> = (0..BATCH)
            .map(|_| {
                let (src, mac) = rng.neighbor();
                let (stranger, _) = rng.neighbor();
                neighbor_solicitation(mac, src, stranger, None)
            })
            .collect();
        let (_, verdicts, emitted) = run(&mut pipeline, &mut frames, now);
        assert!(verdicts.iter().all(|v| *v == Verdict::Pass), "{verdicts:?}");
        assert!(emitted.is_empty(), "{} frames sent for strangers", emitted.len());
        ms += 1;
        now = Instant::from_millis(ms);
    }
    assert_eq!(pipeline.neighbors6().len(), before, "strangers' solicitations teach nothing");

    // 100k at the DR VIP (whole batches).
    let batches = 100_000usize.div_ceil(BATCH);
    for batch in 0..batches {
        let mut frames: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| {
                let (src, mac) = rng.neighbor();
                let src = if (batch + i) % 4 == 0 { Ipv6Addr::UNSPECIFIED } else { src };
                neighbor_solicitation(mac, src, VIP6_DR, None)
            })
            .collect();
        let (inputs, verdicts, emitted) = run(&mut pipeline, &mut frames, now);
        assert!(emitted.len() <= EMIT_CAPACITY, "{} frames emitted by one batch", emitted.len());
        let mut answers = emitted.len();
        for ((input, output), verdict) in inputs.iter().zip(&frames).zip(&verdicts) {
            match verdict {
                Verdict::Tx(_) => {
                    answers += 1;
                    assert_eq!(output[..6], input[6..12], "answered to the solicitor's MAC");
                    assert_eq!(output[54], 136, "an advertisement");
                }
                Verdict::Drop(DropReason::NdpAnswerEmitted) => {}
                other => panic!("a solicitation for the VIP got {other:?}"),
            }
        }
        assert!(answers <= BATCH, "{answers} answers to {BATCH} solicitations");
        assert!(pipeline.neighbors6().len() <= NEIGHBOR_CAPACITY);
        ms += 1;
        now = Instant::from_millis(ms);
    }
    tally.check(pipeline.counters()).unwrap();
    let counters = pipeline.counters();
    assert_eq!(
        counters.get(Stat::NdpAdvertsSent) + counters.get(Stat::EmitOverflow),
        (batches * BATCH) as u64,
        "one answer per solicitation for the VIP"
    );
    assert!(counters.get(Stat::NeighborsEvicted) > 0, "strangers pushed out of a full table");
    let neighbors = pipeline.neighbors6();
    assert_eq!(neighbors.lookup(RS3_6.ip), Some(RS3_6.mac), "a needed next hop survives");
    assert_eq!(neighbors.lookup(RS1_6.ip), Some(RS1_6.mac), "a static neighbour survives");

    // Both DR backends are still reached without a solicitation.
    for port in CLIENT_PORTS.iter().chain(&PORTS) {
        let mut syn =
            testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT6.ip, *port), (VIP6_DR, 80), SYN, &[]);
        let verdict = pipeline.process(now, IfaceId(0), &mut syn);
        assert_eq!(verdict, Verdict::Tx(IfaceId(0)), "SYN from port {port}");
        assert!(syn[..6] == RS1.mac.0 || syn[..6] == RS3.mac.0, "{:02x?}", &syn[..6]);
    }
}
