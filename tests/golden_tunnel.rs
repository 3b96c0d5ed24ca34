//! Golden cases of tunnel mode (issue 14): a table of (description, input frame, verdict,
//! frames emitted), run against the real pipeline like `tests/golden.rs`.
//!
//! The wrapped frames wanted are built here with etherparse (its own header checksums), from
//! the outer format the tunnel module documents: outer IPv4 with the inner TOS and DF, TTL
//! 64, identification one more per generated packet (1, 2, ... on a fresh pipeline),
//! protocol 4 (IPIP) or 17 with a UDP header to the GUE port (source port 49152 + 14 bits of
//! the pinned flow hash, checksum 0), then the client's packet unchanged. The per-flow parts
//! (the outer source inside `tunnel_source`, GUE's source port) come from the pinned flow
//! hash, `xlb::hash::flow_hash`, whose values its own tests pin; two flows are checked to
//! differ.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, UdpHeader};
use xlb::control::{Config, Snapshot};
use xlb::dataplane::{CoreSlot, DropReason, Pipeline, Verdict};
use xlb::flow::{FlowKey, Proto, TunnelSource};
use xlb::hash::flow_hash;
use xlb::testkit::{self, ACK, Host, PSH_ACK, SYN};
use xlb::wire::MacAddr;

#[path = "golden/harness.rs"]
mod harness;
use harness::{Case, Expect, Step, Want, step};

const LB: Host = Host::new([0x02, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
const GATEWAY: Host = Host::new([0x02, 0, 0, 0, 0, 0x01], [10, 1, 1, 1]);
const CLIENT: Host = Host::new([0x02, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
/// A real server on the link.
const RS1: Host = Host::new([0x02, 0, 0, 0, 0, 0x11], [10, 1, 1, 11]);
/// A real server in another subnet, behind the gateway.
const RS_FAR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
/// Tunnel VIPs: IPIP, and GUE.
const VIP_IPIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 110);
const VIP_GUE: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 111);
const PREFIX: TunnelSource =
    TunnelSource { network: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)), prefix_len: 24 };
const CPORT: u16 = 40000;

const CONFIG: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
mac = "02:00:00:00:00:10"
gateway = "10.1.1.1"

[conntrack]
capacity = 4096

[[neighbor]]
ip = "10.1.1.1"
mac = "02:00:00:00:00:01"
[[neighbor]]
ip = "10.1.1.20"
mac = "02:00:00:00:00:20"
[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:00:00:00:11"

# IPIP, TCP, from a prefix, to a real server behind the gateway.
[[service]]
vip = "10.1.1.110"
port = 80
forward = "tunnel"
tunnel_source = "10.9.0.0/24"
[[service.backend]]
addr = "192.0.2.11"

# IPIP, UDP, from the interface's address, to a real server on the link.
[[service]]
vip = "10.1.1.110"
port = 53
proto = "udp"
forward = "tunnel"
[[service.backend]]
addr = "10.1.1.11"

# GUE, TCP, default port, behind the gateway.
[[service]]
vip = "10.1.1.111"
port = 80
forward = "tunnel"
encap = "gue"
[[service.backend]]
addr = "192.0.2.11"

# GUE, UDP, port 5555, on the link.
[[service]]
vip = "10.1.1.111"
port = 53
proto = "udp"
forward = "tunnel"
encap = "gue"
gue_port = 5555
[[service.backend]]
addr = "10.1.1.11"
"#;

/// How a wanted frame is wrapped.
#[derive(Clone, Copy)]
enum Wrap {
    Ipip,
    Gue(u16),
}

/// The client's frame `inner` (Ethernet and all) as the pipeline wraps it for `flow`:
/// Ethernet from the box to `next_hop`, outer IPv4 from `src` to `dst` with identification
/// `ident`, then (GUE) UDP, then the inner IP packet.
fn wrapped(
    inner: &[u8],
    wrap: Wrap,
    next_hop: MacAddr,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    ident: u16,
    flow: &FlowKey,
) -> Vec<u8> {
    let packet = &inner[14..];
    let udp_len = match wrap {
        Wrap::Ipip => 0,
        Wrap::Gue(_) => 8,
    };
    let protocol = match wrap {
        Wrap::Ipip => IpNumber::IPV4,
        Wrap::Gue(_) => IpNumber::UDP,
    };
    let mut ip =
        Ipv4Header::new((udp_len + packet.len()) as u16, 64, protocol, src.octets(), dst.octets())
            .expect("fits");
    ip.identification = ident;
    ip.dont_fragment = packet[6] & 0x40 != 0;
    ip.dscp = etherparse::IpDscp::try_new(packet[1] >> 2).unwrap();
    ip.ecn = etherparse::IpEcn::try_new(packet[1] & 3).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = Vec::new();
    Ethernet2Header { source: LB.mac.0, destination: next_hop.0, ether_type: EtherType::IPV4 }
        .write(&mut out)
        .unwrap();
    ip.write(&mut out).unwrap();
    if let Wrap::Gue(port) = wrap {
        let source_port = 49152 | ((flow_hash(flow) >> 32) as u16 & 0x3fff);
        UdpHeader {
            source_port,
            destination_port: port,
            length: (8 + packet.len()) as u16,
            checksum: 0,
        }
        .write(&mut out)
        .unwrap();
    }
    out.extend_from_slice(packet);
    out
}

fn key(vip: Ipv4Addr, port: u16, client_port: u16, proto: Proto) -> FlowKey {
    FlowKey { src_addr: CLIENT.ip, dst_addr: vip, src_port: client_port, dst_port: port, proto }
}

/// A step whose frame is wrapped: verdict `Encapsulated` (forwarded, not a drop), `emitted`
/// out.
fn tunnelled(what: &'static str, input: Vec<u8>, emitted: Vec<u8>) -> Step {
    step(what, input, Want::Is(Verdict::Encapsulated), Expect::Nothing).emits(vec![emitted])
}

/// ICMP fragmentation needed from `vip` to the client about `inner`, announcing `mtu`.
fn frag_needed(inner: &[u8], vip: Ipv4Addr, mtu: u16, ident: u16) -> Vec<u8> {
    let quote = &inner[14..14 + 28];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let sum = icmp.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut ip =
        Ipv4Header::new(icmp.len() as u16, 64, IpNumber::ICMP, vip.octets(), CLIENT.ip.octets())
            .unwrap();
    ip.identification = ident;
    ip.dont_fragment = false;
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = Vec::new();
    Ethernet2Header { source: LB.mac.0, destination: CLIENT.mac.0, ether_type: EtherType::IPV4 }
        .write(&mut out)
        .unwrap();
    ip.write(&mut out).unwrap();
    out.extend_from_slice(&icmp);
    out
}

fn cases() -> Vec<Case> {
    let payload = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n";
    let dns = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00";
    let tcp = |vip, port, flags, data: &[u8]| {
        testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, port), (vip, 80), flags, data)
    };
    let udp = |vip, port, data: &[u8]| {
        testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, port), (vip, 53), data)
    };
    let ipip_tcp = key(VIP_IPIP, 80, CPORT, Proto::Tcp);
    let ipip_tcp2 = key(VIP_IPIP, 80, CPORT + 1, Proto::Tcp);
    let from_prefix = |flow: &FlowKey| PREFIX.source_v4(flow_hash(flow)).unwrap();
    let syn = tcp(VIP_IPIP, CPORT, SYN, &[]);
    let data = tcp(VIP_IPIP, CPORT, PSH_ACK, payload);
    let syn2 = tcp(VIP_IPIP, CPORT + 1, SYN, &[]);
    let ipip_udp = key(VIP_IPIP, 53, CPORT, Proto::Udp);
    let query = udp(VIP_IPIP, CPORT, dns);
    let gue_tcp = key(VIP_GUE, 80, CPORT, Proto::Tcp);
    let gue_tcp2 = key(VIP_GUE, 80, CPORT + 1, Proto::Tcp);
    let gue_syn = tcp(VIP_GUE, CPORT, SYN, &[]);
    let gue_syn2 = tcp(VIP_GUE, CPORT + 1, SYN, &[]);
    let gue_udp = key(VIP_GUE, 53, CPORT, Proto::Udp);
    let gue_query = udp(VIP_GUE, CPORT, dns);
    // 20 + 8 + 1452 = 1480 bytes: 1500 wrapped in IPIP, the MTU exactly; one more is too big.
    let fits = udp(VIP_IPIP, CPORT, &[0x5a; 1452]);
    let big = udp(VIP_IPIP, CPORT, &[0x5a; 1453]);
    let mut big_no_df = big.clone();
    big_no_df[14 + 6] &= !0x40;
    let big_no_df = testkit::with_ttl(big_no_df, 64);
    // GUE adds 28: 1472 bytes is the most.
    let gue_big = udp(VIP_GUE, CPORT, &[0x5a; 1445]);
    let gateway = GATEWAY.mac;
    vec![
        Case {
            name: "ipip: a tcp flow wrapped from the prefix to a real server behind the gateway",
            steps: vec![
                tunnelled(
                    "SYN: outer IPv4 to 192.0.2.11 via the gateway's MAC, protocol 4",
                    syn.clone(),
                    wrapped(
                        &syn,
                        Wrap::Ipip,
                        gateway,
                        (from_prefix(&ipip_tcp), RS_FAR),
                        1,
                        &ipip_tcp,
                    ),
                ),
                tunnelled(
                    "data on the tracked flow: same outer source, next identification",
                    data.clone(),
                    wrapped(
                        &data,
                        Wrap::Ipip,
                        gateway,
                        (from_prefix(&ipip_tcp), RS_FAR),
                        2,
                        &ipip_tcp,
                    ),
                ),
                tunnelled(
                    "a second flow: another address of the prefix",
                    syn2.clone(),
                    wrapped(
                        &syn2,
                        Wrap::Ipip,
                        gateway,
                        (from_prefix(&ipip_tcp2), RS_FAR),
                        3,
                        &ipip_tcp2,
                    ),
                ),
            ],
        },
        Case {
            name: "ipip: udp from the interface's address to a real server on the link",
            steps: vec![tunnelled(
                "query: outer to rs1's own MAC, from 10.1.1.10",
                query.clone(),
                wrapped(&query, Wrap::Ipip, RS1.mac, (LB.ip, RS1.ip), 1, &ipip_udp),
            )],
        },
        Case {
            name: "gue: tcp in udp to 6080, the source port from the flow hash",
            steps: vec![
                tunnelled(
                    "SYN: UDP 6080, checksum 0, no GUE header",
                    gue_syn.clone(),
                    wrapped(&gue_syn, Wrap::Gue(6080), gateway, (LB.ip, RS_FAR), 1, &gue_tcp),
                ),
                tunnelled(
                    "a second flow: another source port",
                    gue_syn2.clone(),
                    wrapped(&gue_syn2, Wrap::Gue(6080), gateway, (LB.ip, RS_FAR), 2, &gue_tcp2),
                ),
                tunnelled(
                    "an ACK of no tracked flow: stateless, as DR, still wrapped",
                    tcp(VIP_GUE, CPORT + 2, ACK, &[]),
                    wrapped(
                        &tcp(VIP_GUE, CPORT + 2, ACK, &[]),
                        Wrap::Gue(6080),
                        gateway,
                        (LB.ip, RS_FAR),
                        3,
                        &key(VIP_GUE, 80, CPORT + 2, Proto::Tcp),
                    ),
                ),
            ],
        },
        Case {
            name: "gue: udp to the configured port, on the link",
            steps: vec![tunnelled(
                "query: UDP 5555",
                gue_query.clone(),
                wrapped(&gue_query, Wrap::Gue(5555), RS1.mac, (LB.ip, RS1.ip), 1, &gue_udp),
            )],
        },
        Case {
            name: "mtu: a wrapped packet must fit 1500",
            steps: vec![
                tunnelled(
                    "1480 bytes: 1500 wrapped, sent",
                    fits.clone(),
                    wrapped(&fits, Wrap::Ipip, RS1.mac, (LB.ip, RS1.ip), 1, &ipip_udp),
                ),
                step(
                    "1481 bytes with DF: fragmentation needed, MTU 1480, from the VIP",
                    big.clone(),
                    Want::DropNamed("tunnel_frag_needed"),
                    Expect::Nothing,
                )
                .emits(vec![frag_needed(&big, VIP_IPIP, 1480, 2)]),
                step(
                    "1481 bytes without DF: cut as a router would (1456 + 5 bytes), each wrapped",
                    big_no_df.clone(),
                    Want::Is(Verdict::Encapsulated),
                    Expect::Nothing,
                )
                .emits(
                    piece(&big_no_df, 0, 1456, true)
                        .into_iter()
                        .chain(piece(&big_no_df, 1456, 5, false))
                        .zip([3, 4])
                        .map(|(cut, ident)| {
                            wrapped(&cut, Wrap::Ipip, RS1.mac, (LB.ip, RS1.ip), ident, &ipip_udp)
                        })
                        .collect(),
                ),
                step(
                    "gue: 1473 bytes with DF: MTU 1472",
                    gue_big.clone(),
                    Want::DropNamed("tunnel_frag_needed"),
                    Expect::Nothing,
                )
                .emits(vec![frag_needed(&gue_big, VIP_GUE, 1472, 5)]),
            ],
        },
        Case {
            name: "malformed and truncated frames to a tunnel VIP are counted drops",
            steps: malformed(&syn),
        },
        Case {
            name: "fragments: an ipip datagram's fragments follow the first, each wrapped whole",
            steps: fragments_wrapped(udp(VIP_IPIP, CPORT, &[7; 40]), Wrap::Ipip, &ipip_udp),
        },
        Case {
            name: "fragments: a gue datagram's fragments follow the first, each wrapped whole",
            steps: fragments_wrapped(udp(VIP_GUE, CPORT, &[7; 40]), Wrap::Gue(5555), &gue_udp),
        },
        Case {
            name: "fragments: a later fragment before its first is dropped, counted",
            steps: vec![step(
                "second fragment first",
                testkit::fragmented(&udp(VIP_IPIP, CPORT, &[7; 40]), 0x77, 16).swap_remove(1),
                Want::DropNamed("fragment_no_first"),
                Expect::Nothing,
            )],
        },
        Case {
            name: "fragments: a fragment too big for the tunnel is cut again, its flag kept",
            steps: {
                // 3000 bytes of UDP data in two fragments: 1600 bytes (1620 > 1480) and 1408.
                let pieces = testkit::fragmented(&udp(VIP_IPIP, CPORT, &[9; 3000]), 0x99, 1600);
                let (first, second) = (pieces[0].clone(), pieces[1].clone());
                let first_cut = piece(&first, 0, 1456, true)
                    .into_iter()
                    .chain(piece(&first, 1456, 144, true))
                    .zip([1, 2])
                    .map(|(cut, ident)| {
                        wrapped(&cut, Wrap::Ipip, RS1.mac, (LB.ip, RS1.ip), ident, &ipip_udp)
                    })
                    .collect();
                vec![
                    step(
                        "the first fragment (1620 bytes): cut into 1456 + 144, more fragments on both",
                        first,
                        Want::Is(Verdict::Encapsulated),
                        Expect::Nothing,
                    )
                    .emits(first_cut),
                    tunnelled(
                        "the last fragment (1428 bytes) fits: wrapped whole",
                        second.clone(),
                        wrapped(&second, Wrap::Ipip, RS1.mac, (LB.ip, RS1.ip), 3, &ipip_udp),
                    ),
                ]
            },
        },
    ]
}

/// The UDP datagram `datagram` (to a tunnel VIP's port 53 on the link) in three fragments,
/// each wrapped as it is for `flow`'s real server, identifications 1, 2, 3.
fn fragments_wrapped(datagram: Vec<u8>, wrap: Wrap, flow: &FlowKey) -> Vec<Step> {
    let names = ["first fragment (the ports)", "second fragment", "last fragment"];
    let pieces = testkit::fragmented(&datagram, 0x4242, 16);
    pieces
        .into_iter()
        .zip(names)
        .zip(1..)
        .map(|((fragment, what), ident)| {
            let out = wrapped(&fragment, wrap, RS1.mac, (LB.ip, RS1.ip), ident, flow);
            tunnelled(what, fragment, out)
        })
        .collect()
}

/// `len` bytes from `from` of the data of the IPv4 packet (or fragment) in `frame`, as a
/// fragment of its own: its header copied, total length, offset (the packet's plus `from`)
/// and more-fragments flag (`more`) set, checksum computed anew.
fn piece(frame: &[u8], from: usize, len: usize, more: bool) -> Option<Vec<u8>> {
    let mut out = frame[..34].to_vec();
    out.extend_from_slice(frame.get(34 + from..34 + from + len)?);
    out[16..18].copy_from_slice(&(20 + len as u16).to_be_bytes());
    let offset = (u16::from_be_bytes([frame[20], frame[21]]) & 0x1fff) + (from / 8) as u16;
    let flags = u16::from_be_bytes([frame[20], frame[21]]) & 0x4000 | if more { 0x2000 } else { 0 };
    out[20..22].copy_from_slice(&(flags | offset).to_be_bytes());
    let ttl = out[22];
    Some(testkit::with_ttl(out, ttl))
}

fn malformed(syn: &[u8]) -> Vec<Step> {
    let drop = |what, input: Vec<u8>, reason| {
        step(what, input, Want::Is(Verdict::Drop(reason)), Expect::Nothing)
    };
    let with_byte = |offset: usize, value: u8| {
        let mut frame = syn.to_vec();
        frame[14 + offset] = value;
        frame
    };
    vec![
        drop("half an Ethernet header", syn[..7].to_vec(), DropReason::Truncated),
        drop("IPv4 cut inside its header", syn[..14 + 12].to_vec(), DropReason::Truncated),
        drop("TCP cut inside its header", syn[..14 + 20 + 10].to_vec(), DropReason::Truncated),
        drop("total length beyond the frame", with_byte(3, 200), DropReason::Truncated),
        drop("IHL below 5", with_byte(0, 0x44), DropReason::BadIpHeaderLen),
    ]
}

fn pipeline() -> Pipeline {
    let config = Config::parse(CONFIG, "golden_tunnel.toml").expect("the config is valid");
    let snapshot = Snapshot::build(&config, 1).expect("the snapshot builds");
    Pipeline::new(Arc::new(snapshot), CoreSlot::SINGLE)
}

/// Every case of the table again with every frame VLAN-tagged (802.1Q, 802.1ad over
/// 802.1Q, a priority tag): the same verdicts, the same bytes with the tags kept, and what
/// the pipeline emits meanwhile tagged alike.
#[test]
fn golden_tunnel_cases_tagged() {
    let (steps_run, left_out, failures) = harness::run_tagged(cases, pipeline);
    assert!(steps_run > 30, "the tagged tables ran {steps_run} steps");
    assert!(left_out <= 3, "{left_out} cases left out (a frame too short to tag)");
    assert!(failures.is_empty(), "{} step(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn golden_tunnel_cases() {
    let (steps_run, failures) = harness::run(cases(), pipeline);
    assert!(steps_run >= 18, "the table ran {steps_run} steps");
    assert!(failures.is_empty(), "{} step(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn two_flows_differ_in_their_outer_variation() {
    let one = key(VIP_IPIP, 80, CPORT, Proto::Tcp);
    let two = key(VIP_IPIP, 80, CPORT + 1, Proto::Tcp);
    assert_ne!(PREFIX.source_v4(flow_hash(&one)), PREFIX.source_v4(flow_hash(&two)));
    let port = |flow: &FlowKey| (flow_hash(flow) >> 32) as u16 & 0x3fff;
    let (one, two) = (key(VIP_GUE, 80, CPORT, Proto::Tcp), key(VIP_GUE, 80, CPORT + 1, Proto::Tcp));
    assert_ne!(port(&one), port(&two));
}

/// IPv6 tunnel mode (issue 12): IPv6-in-IPv6 (next header 41) and GUE over IPv6, with the
/// outer format the tunnel module documents: traffic class copied from the inner packet,
/// flow label the top 20 bits of the pinned flow hash (never 0), hop limit 64, the outer
/// source from the service's IPv6 `tunnel_source` (host bits the flow hash's low 64) or the
/// interface's `addr6`, GUE's UDP checksum computed over the IPv6 pseudo-header (here by
/// etherparse, independently of xlb's checksum code).
mod six {
    use std::net::Ipv6Addr;
    use std::sync::Arc;

    use etherparse::{
        EtherType, Ethernet2Header, IpNumber, Ipv6FlowLabel, Ipv6Header, PacketBuilder,
        TcpOptionElement, UdpHeader,
    };
    use xlb::control::{Config, Snapshot};
    use xlb::dataplane::{CoreSlot, DropReason, Pipeline, Verdict};
    use xlb::family::V6;
    use xlb::flow::{FlowKey, Proto, TunnelSource};
    use xlb::hash::flow_hash;
    use xlb::testkit::{self, ACK, Host6, PSH_ACK, SYN};
    use xlb::wire::MacAddr;

    use super::harness::{self, Case, Expect, Step, Want, step};
    use super::{Wrap, tunnelled};

    const fn v6(net: u16, last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, last)
    }
    const LB: Host6 = Host6::new([0x02, 0, 0, 0, 0, 0x10], v6(1, 0x10));
    const GATEWAY: Host6 = Host6::new([0x02, 0, 0, 0, 0, 0x01], v6(1, 0x1));
    const CLIENT: Host6 = Host6::new([0x02, 0, 0, 0, 0, 0x20], v6(1, 0x20));
    /// A real server on the link.
    const RS1: Host6 = Host6::new([0x02, 0, 0, 0, 0, 0x11], v6(1, 0x11));
    /// A real server in another subnet, behind the IPv6 gateway.
    const RS_FAR: Ipv6Addr = v6(2, 0x11);
    const VIP_IPIP: Ipv6Addr = v6(1, 0x110);
    const VIP_GUE: Ipv6Addr = v6(1, 0x111);
    const CPORT: u16 = 40000;

    const CONFIG: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
addr6 = "2001:db8:1::10/64"
gateway6 = "2001:db8:1::1"
mac = "02:00:00:00:00:10"

[conntrack]
capacity = 4096

[[neighbor]]
ip = "2001:db8:1::1"
mac = "02:00:00:00:00:01"
[[neighbor]]
ip = "2001:db8:1::20"
mac = "02:00:00:00:00:20"
[[neighbor]]
ip = "2001:db8:1::11"
mac = "02:00:00:00:00:11"

# IPv6-in-IPv6, TCP, from a prefix, to a real server behind the gateway, MSS clamped.
[[service]]
vip = "2001:db8:1::110"
port = 80
forward = "tunnel"
tunnel_source = "2001:db8:9::/64"
mss_clamp = 1380
[[service.backend]]
addr = "2001:db8:2::11"

# IPv6-in-IPv6, UDP, from the interface's addr6, to a real server on the link.
[[service]]
vip = "2001:db8:1::110"
port = 53
proto = "udp"
forward = "tunnel"
[[service.backend]]
addr = "2001:db8:1::11"

# GUE over IPv6, TCP, default port, behind the gateway.
[[service]]
vip = "2001:db8:1::111"
port = 80
forward = "tunnel"
encap = "gue"
[[service.backend]]
addr = "2001:db8:2::11"

# GUE over IPv6, UDP, port 5555, on the link.
[[service]]
vip = "2001:db8:1::111"
port = 53
proto = "udp"
forward = "tunnel"
encap = "gue"
gue_port = 5555
[[service.backend]]
addr = "2001:db8:1::11"
"#;

    fn prefix() -> TunnelSource {
        TunnelSource { network: v6(9, 0).into(), prefix_len: 64 }
    }

    fn key(vip: Ipv6Addr, port: u16, client_port: u16, proto: Proto) -> FlowKey<V6> {
        FlowKey { src_addr: CLIENT.ip, dst_addr: vip, src_port: client_port, dst_port: port, proto }
    }

    /// The client's frame `inner` as the pipeline wraps it in IPv6 for `flow`: Ethernet from
    /// the box to `next_hop`, outer IPv6 from `src` to `dst`, (GUE) UDP with its checksum,
    /// then the inner IPv6 packet.
    fn wrapped(
        inner: &[u8],
        wrap: Wrap,
        next_hop: MacAddr,
        (src, dst): (Ipv6Addr, Ipv6Addr),
        flow: &FlowKey<V6>,
    ) -> Vec<u8> {
        let packet = &inner[14..];
        let hash = flow_hash(flow);
        let (udp_len, next_header) = match wrap {
            Wrap::Ipip => (0, IpNumber::IPV6),
            Wrap::Gue(_) => (8, IpNumber::UDP),
        };
        let label = ((hash >> 44) as u32).max(1);
        let ip = Ipv6Header {
            traffic_class: (packet[0] << 4) | (packet[1] >> 4),
            flow_label: Ipv6FlowLabel::try_new(label).unwrap(),
            payload_length: (udp_len + packet.len()) as u16,
            next_header,
            hop_limit: 64,
            source: src.octets(),
            destination: dst.octets(),
        };
        let mut out = Vec::new();
        Ethernet2Header { source: LB.mac.0, destination: next_hop.0, ether_type: EtherType::IPV6 }
            .write(&mut out)
            .unwrap();
        ip.write(&mut out).unwrap();
        if let Wrap::Gue(port) = wrap {
            let source_port = 49152 | ((hash >> 32) as u16 & 0x3fff);
            let udp = UdpHeader::with_ipv6_checksum(source_port, port, &ip, packet).unwrap();
            assert_ne!(udp.checksum, 0, "etherparse computed a checksum");
            udp.write(&mut out).unwrap();
        }
        out.extend_from_slice(packet);
        out
    }

    /// A SYN from the client to `vip`:80 from `client_port` with an MSS option of `mss`
    /// (after a NOP when `nop`: the value at an odd offset), checksum computed by etherparse.
    fn syn_with_mss(vip: Ipv6Addr, client_port: u16, mss: u16, nop: bool) -> Vec<u8> {
        let mut options = vec![];
        if nop {
            options.push(TcpOptionElement::Noop);
        }
        options.push(TcpOptionElement::MaximumSegmentSize(mss));
        let builder = PacketBuilder::ethernet2(CLIENT.mac.0, LB.mac.0)
            .ipv6(CLIENT.ip.octets(), vip.octets(), 64)
            .tcp(client_port, 80, 1000, 64240)
            .syn()
            .options(&options)
            .expect("options fit");
        let mut frame = Vec::new();
        builder.write(&mut frame, &[]).unwrap();
        frame
    }

    /// `frame` (Ethernet, IPv6) with traffic class `class` (in no checksum).
    fn with_traffic_class(mut frame: Vec<u8>, class: u8) -> Vec<u8> {
        frame[14] = (frame[14] & 0xf0) | (class >> 4);
        frame[15] = (frame[15] & 0x0f) | (class << 4);
        frame
    }

    /// ICMPv6 Packet Too Big from `vip` to the client about `inner`, announcing `mtu`,
    /// quoting as much as fits 1280 bytes (built by etherparse).
    fn packet_too_big(inner: &[u8], vip: Ipv6Addr, mtu: u32) -> Vec<u8> {
        let quoted_l4 = 1280 - 40 - 8 - 40;
        testkit::icmpv6_packet_too_big(LB.mac, CLIENT.mac, vip, CLIENT.ip, mtu, inner, quoted_l4)
    }

    fn cases() -> Vec<Case> {
        let payload = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n";
        let dns = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00";
        let tcp = |vip, port, flags, data: &[u8]| {
            testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, port), (vip, 80), flags, data)
        };
        let udp = |vip, port, data: &[u8]| {
            testkit::udp6(CLIENT.mac, LB.mac, (CLIENT.ip, port), (vip, 53), data)
        };
        let from_prefix = |flow: &FlowKey<V6>| prefix().source_v6(flow_hash(flow)).unwrap();
        let ipip_tcp = key(VIP_IPIP, 80, CPORT, Proto::Tcp);
        let ipip_tcp2 = key(VIP_IPIP, 80, CPORT + 1, Proto::Tcp);
        let ipip_tcp3 = key(VIP_IPIP, 80, CPORT + 2, Proto::Tcp);
        // The SYN as the client sends it (MSS 1440), and as it must arrive (MSS 1380, its
        // checksum computed afresh by etherparse).
        let syn = syn_with_mss(VIP_IPIP, CPORT, 1440, false);
        let syn_clamped = syn_with_mss(VIP_IPIP, CPORT, 1380, false);
        let syn_odd = syn_with_mss(VIP_IPIP, CPORT + 2, 1440, true);
        let syn_odd_clamped = syn_with_mss(VIP_IPIP, CPORT + 2, 1380, true);
        let syn_low = syn_with_mss(VIP_IPIP, CPORT + 1, 1200, false);
        let data = with_traffic_class(tcp(VIP_IPIP, CPORT, PSH_ACK, payload), 0xb9);
        let ipip_udp = key(VIP_IPIP, 53, CPORT, Proto::Udp);
        let query = udp(VIP_IPIP, CPORT, dns);
        let gue_tcp = key(VIP_GUE, 80, CPORT, Proto::Tcp);
        let gue_tcp2 = key(VIP_GUE, 80, CPORT + 1, Proto::Tcp);
        let gue_syn = tcp(VIP_GUE, CPORT, SYN, &[]);
        let gue_syn2 = tcp(VIP_GUE, CPORT + 1, SYN, &[]);
        let gue_ack = tcp(VIP_GUE, CPORT + 2, ACK, &[]);
        let gue_udp = key(VIP_GUE, 53, CPORT, Proto::Udp);
        let gue_query = udp(VIP_GUE, CPORT, dns);
        // 40 + 8 + 1412 = 1460 bytes: 1500 wrapped in IPv6, the MTU exactly; one more is too
        // big. GUE adds 48: 1452 is the most.
        let fits = udp(VIP_IPIP, CPORT, &[0x5a; 1412]);
        let big = udp(VIP_IPIP, CPORT, &[0x5a; 1413]);
        let gue_fits = udp(VIP_GUE, CPORT, &[0x5a; 1404]);
        let gue_big = udp(VIP_GUE, CPORT, &[0x5a; 1405]);
        let gateway = GATEWAY.mac;
        vec![
            Case {
                name: "ipv6 ipip: tcp from the prefix to a real server behind the gateway",
                steps: vec![
                    tunnelled(
                        "SYN: outer IPv6 next header 41 via the gateway, MSS 1440 clamped to 1380",
                        syn.clone(),
                        wrapped(
                            &syn_clamped,
                            Wrap::Ipip,
                            gateway,
                            (from_prefix(&ipip_tcp), RS_FAR),
                            &ipip_tcp,
                        ),
                    ),
                    tunnelled(
                        "data with traffic class 0xb9: copied to the outer header",
                        data.clone(),
                        wrapped(
                            &data,
                            Wrap::Ipip,
                            gateway,
                            (from_prefix(&ipip_tcp), RS_FAR),
                            &ipip_tcp,
                        ),
                    ),
                    tunnelled(
                        "a second flow, MSS 1200 (below the clamp, left), another source",
                        syn_low.clone(),
                        wrapped(
                            &syn_low,
                            Wrap::Ipip,
                            gateway,
                            (from_prefix(&ipip_tcp2), RS_FAR),
                            &ipip_tcp2,
                        ),
                    ),
                    tunnelled(
                        "a third flow, MSS after a NOP (odd offset), clamped",
                        syn_odd.clone(),
                        wrapped(
                            &syn_odd_clamped,
                            Wrap::Ipip,
                            gateway,
                            (from_prefix(&ipip_tcp3), RS_FAR),
                            &ipip_tcp3,
                        ),
                    ),
                ],
            },
            Case {
                name: "ipv6 ipip: udp from the interface's addr6 to a real server on the link",
                steps: vec![tunnelled(
                    "query: outer to rs1's own MAC, from 2001:db8:1::10",
                    query.clone(),
                    wrapped(&query, Wrap::Ipip, RS1.mac, (LB.ip, RS1.ip), &ipip_udp),
                )],
            },
            Case {
                name: "ipv6 gue: tcp in udp to 6080 with its checksum, per-flow source port",
                steps: vec![
                    tunnelled(
                        "SYN: UDP 6080 over IPv6, checksum computed, no GUE header",
                        gue_syn.clone(),
                        wrapped(&gue_syn, Wrap::Gue(6080), gateway, (LB.ip, RS_FAR), &gue_tcp),
                    ),
                    tunnelled(
                        "a second flow: another source port and flow label",
                        gue_syn2.clone(),
                        wrapped(&gue_syn2, Wrap::Gue(6080), gateway, (LB.ip, RS_FAR), &gue_tcp2),
                    ),
                    tunnelled(
                        "an ACK of no tracked flow: stateless, as DR, still wrapped",
                        gue_ack.clone(),
                        wrapped(
                            &gue_ack,
                            Wrap::Gue(6080),
                            gateway,
                            (LB.ip, RS_FAR),
                            &key(VIP_GUE, 80, CPORT + 2, Proto::Tcp),
                        ),
                    ),
                ],
            },
            Case {
                name: "ipv6 gue: udp to the configured port, on the link",
                steps: vec![tunnelled(
                    "query: UDP 5555",
                    gue_query.clone(),
                    wrapped(&gue_query, Wrap::Gue(5555), RS1.mac, (LB.ip, RS1.ip), &gue_udp),
                )],
            },
            Case {
                name: "ipv6 mtu: a wrapped packet must fit 1500, else Packet Too Big",
                steps: vec![
                    tunnelled(
                        "1460 bytes: 1500 wrapped, sent",
                        fits.clone(),
                        wrapped(&fits, Wrap::Ipip, RS1.mac, (LB.ip, RS1.ip), &ipip_udp),
                    ),
                    step(
                        "1461 bytes: Packet Too Big, MTU 1460, from the VIP, 1280 bytes at most",
                        big.clone(),
                        Want::DropNamed("tunnel_frag_needed"),
                        Expect::Nothing,
                    )
                    .emits(vec![packet_too_big(&big, VIP_IPIP, 1460)]),
                    tunnelled(
                        "gue: 1452 bytes: 1500 wrapped, sent",
                        gue_fits.clone(),
                        wrapped(&gue_fits, Wrap::Gue(5555), RS1.mac, (LB.ip, RS1.ip), &gue_udp),
                    ),
                    step(
                        "gue: 1453 bytes: Packet Too Big, MTU 1452",
                        gue_big.clone(),
                        Want::DropNamed("tunnel_frag_needed"),
                        Expect::Nothing,
                    )
                    .emits(vec![packet_too_big(&gue_big, VIP_GUE, 1452)]),
                ],
            },
            Case {
                name: "malformed and truncated IPv6 frames to a tunnel VIP are counted drops",
                steps: malformed(&tcp(VIP_IPIP, CPORT, SYN, &[])),
            },
            Case {
                name: "ipv6 fragments: an ip6ip6 datagram's fragments follow the first, wrapped whole",
                steps: fragments_wrapped(udp(VIP_IPIP, CPORT, &[7; 40]), Wrap::Ipip, &ipip_udp),
            },
            Case {
                name: "ipv6 fragments: a gue datagram's fragments follow the first, wrapped whole",
                steps: fragments_wrapped(udp(VIP_GUE, CPORT, &[7; 40]), Wrap::Gue(5555), &gue_udp),
            },
            Case {
                name: "ipv6 fragments: one too big for the tunnel gets Packet Too Big",
                steps: {
                    // 1600 bytes of data in fragments of 1456: the first is 40 + 8 + 1456 = 1504.
                    let pieces =
                        testkit::fragmented6(&udp(VIP_IPIP, CPORT, &[9; 1600]), &[], 5, 1456);
                    vec![
                        step(
                            "the first fragment (1504 bytes): Packet Too Big, MTU 1460",
                            pieces[0].clone(),
                            Want::DropNamed("tunnel_frag_needed"),
                            Expect::Nothing,
                        )
                        .emits(vec![packet_too_big(&pieces[0], VIP_IPIP, 1460)]),
                        step(
                            "the last, its first not forwarded",
                            pieces[1].clone(),
                            Want::DropNamed("fragment_no_first"),
                            Expect::Nothing,
                        ),
                    ]
                },
            },
        ]
    }

    /// The UDP datagram `datagram` (to a tunnel VIP's port 53 on the link) in three
    /// fragments behind destination options, each wrapped as it is for `flow`'s real server.
    fn fragments_wrapped(datagram: Vec<u8>, wrap: Wrap, flow: &FlowKey<V6>) -> Vec<Step> {
        let names = ["first fragment (the ports)", "second fragment", "last fragment"];
        let dest = testkit::ext_header(60, 0);
        let pieces = testkit::fragmented6(&datagram, &[(60, &dest)], 0x4242_0001, 16);
        pieces
            .into_iter()
            .zip(names)
            .map(|(fragment, what)| {
                let out = wrapped(&fragment, wrap, RS1.mac, (LB.ip, RS1.ip), flow);
                tunnelled(what, fragment, out)
            })
            .collect()
    }

    fn malformed(syn: &[u8]) -> Vec<Step> {
        let drop = |what, input: Vec<u8>, reason| {
            step(what, input, Want::Is(Verdict::Drop(reason)), Expect::Nothing)
        };
        let mut long = syn.to_vec();
        long[14 + 5] += 40; // payload length beyond the frame
        vec![
            drop("half an Ethernet header", syn[..7].to_vec(), DropReason::Truncated),
            drop(
                "IPv6 cut inside its fixed header",
                syn[..14 + 30].to_vec(),
                DropReason::Truncated,
            ),
            drop("TCP cut inside its header", syn[..14 + 40 + 10].to_vec(), DropReason::Truncated),
            drop("payload length beyond the frame", long, DropReason::Truncated),
        ]
    }

    fn pipeline() -> Pipeline {
        let config = Config::parse(CONFIG, "golden_tunnel6.toml").expect("the config is valid");
        let snapshot = Snapshot::build(&config, 1).expect("the snapshot builds");
        Pipeline::new(Arc::new(snapshot), CoreSlot::SINGLE)
    }

    #[test]
    fn golden_tunnel6_cases() {
        let (steps_run, failures) = harness::run(cases(), pipeline);
        assert!(steps_run >= 17, "the table ran {steps_run} steps");
        assert!(failures.is_empty(), "{} step(s) failed:\n{}", failures.len(), failures.join("\n"));
    }

    /// Two flows differ in every per-flow part of the outer packet: source address, GUE
    /// source port, flow label (so ECMP on the path and the real server's RSS spread them).
    #[test]
    fn two_ipv6_flows_differ_in_their_outer_variation() {
        let one = flow_hash(&key(VIP_GUE, 80, CPORT, Proto::Tcp));
        let two = flow_hash(&key(VIP_GUE, 80, CPORT + 1, Proto::Tcp));
        assert_ne!(prefix().source_v6(one), prefix().source_v6(two));
        assert_ne!((one >> 32) as u16 & 0x3fff, (two >> 32) as u16 & 0x3fff);
        assert_ne!(one >> 44, two >> 44);
    }
}
