//! Golden cases: a table of (description, input frames, expected output frames, expected
//! verdict), run against the real pipeline, Katran-fixture style.
//!
//! Expected frames are built with etherparse (full checksum computation), the pipeline
//! patches checksums incrementally: a byte-for-byte match checks both. Each case runs on a
//! fresh pipeline; its steps run in order, so a case can open a flow and then use it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use xlb::control::{Config, Snapshot};
use xlb::dataplane::{CoreSlot, DropReason, IfaceId, Pipeline, Stat, Verdict};
use xlb::fleet::VrrpState;
use xlb::testkit::{self, ACK, FIN_ACK, Host, PSH_ACK, RST, SYN, SYN_ACK, routed, with_ttl};
use xlb::time::Instant;
use xlb::wire::MacAddr;

#[path = "golden/harness.rs"]
mod harness;
use harness::{Case, Expect, Input, Step, step};

// The seed's lab: one L2 segment 10.1.1.0/24, a gateway at .1, the box at .10.
const LB: Host = Host::new([0x02, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
const GATEWAY: Host = Host::new([0x02, 0, 0, 0, 0, 0x01], [10, 1, 1, 1]);
const CLIENT: Host = Host::new([0x02, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
const RS1: Host = Host::new([0x02, 0, 0, 0, 0, 0x11], [10, 1, 1, 11]);
const RS2: Host = Host::new([0x02, 0, 0, 0, 0, 0x12], [10, 1, 1, 12]);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VIP_DR: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);
const VIP_NAT: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 101);
const VIP_FULLNAT: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 102);
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 200);
const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 13);
const UNRESOLVED_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x13]);
const CPORT: u16 = 40000;
// The second arm, eth1 (10.3.3.0/24), and the NAT backend behind it.
const LB_ARM2: MacAddr = MacAddr([0x02, 0, 0, 0, 0x03, 0x10]);
const RS_ARM2: Host = Host::new([0x02, 0, 0, 0, 0x03, 0x31], [10, 3, 3, 31]);
const VIP_NAT_ARMS: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 105);
const ETH1: Verdict = Verdict::Tx(IfaceId(1));

const CONFIG: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
mac = "02:00:00:00:00:10"
gateway = "10.1.1.1"

[[interface]]
name = "eth1"
addr = "10.3.3.10/24"
mac = "02:00:00:00:03:10"

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
[[neighbor]]
ip = "10.1.1.12"
mac = "02:00:00:00:00:12"

[[service]]
vip = "10.1.1.100"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"

[[service]]
vip = "10.1.1.100"
port = 53
proto = "udp"
forward = "dr"
[[service.backend]]
addr = "10.1.1.12"

[[service]]
vip = "10.1.1.101"
port = 80
forward = "nat"
scheduler = "wrr"
[[service.backend]]
addr = "10.1.1.11"
port = 8080

[[service]]
vip = "10.1.1.101"
port = 53
proto = "udp"
forward = "nat"
[[service.backend]]
addr = "10.1.1.12"
port = 5353

[[service]]
vip = "10.1.1.102"
port = 80
forward = "fullnat"
local_addrs = ["10.1.1.200"]
[[service.backend]]
addr = "10.1.1.12"
port = 8080

[[service]]
vip = "10.1.1.102"
port = 53
proto = "udp"
forward = "fullnat"
local_addrs = ["10.1.1.200"]
[[service.backend]]
addr = "10.1.1.11"
port = 5353

[[service]]
vip = "10.1.1.103"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.13"

[[service]]
vip = "10.1.1.104"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"
weight = 0

# Two-armed NAT: clients on eth0, the backend behind eth1.
[[service]]
vip = "10.1.1.105"
port = 80
forward = "nat"
[[service.backend]]
addr = "10.3.3.31"
port = 8080

[[neighbor]]
ip = "10.3.3.31"
mac = "02:00:00:00:03:31"
"#;

const TX: Verdict = Verdict::Tx(IfaceId(0));

fn vip(addr: Ipv4Addr, port: u16) -> (Ipv4Addr, u16) {
    (addr, port)
}

fn client() -> (Ipv4Addr, u16) {
    (CLIENT.ip, CPORT)
}

fn cases() -> Vec<Case> {
    let payload = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n";
    let dns = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00";
    let dr_syn = testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 80), SYN, &[]);
    let nat_syn = testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT, 80), SYN, &[]);
    let fullnat_syn = testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_FULLNAT, 80), SYN, &[]);
    let nat_reply_to_client = testkit::tcp(RS1.mac, LB.mac, (RS1.ip, 8080), client(), SYN_ACK, &[]);
    let to_arm2 = |flags| {
        routed(testkit::tcp(LB_ARM2, RS_ARM2.mac, client(), (RS_ARM2.ip, 8080), flags, &[]))
    };
    let nat_query = testkit::udp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT, 53), dns);
    let nat_query_to_rs2 = routed(testkit::udp(LB.mac, RS2.mac, client(), (RS2.ip, 5353), dns));
    // A client-side error about a NAT answer: anyone can send one.
    let forged_error = testkit::icmp_port_unreachable(
        CLIENT.mac,
        LB.mac,
        CLIENT.ip,
        VIP_NAT,
        &testkit::udp(LB.mac, CLIENT.mac, vip(VIP_NAT, 53), client(), b"answer"),
    );
    vec![
        Case {
            name: "dr: tcp flow keeps its backend; only MACs change",
            steps: vec![
                step(
                    "SYN to the VIP goes to rs1, IP packet untouched",
                    dr_syn.clone(),
                    TX,
                    Expect::Frame(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        vip(VIP_DR, 80),
                        SYN,
                        &[],
                    )),
                ),
                step(
                    "data on the tracked flow",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 80), PSH_ACK, payload),
                    TX,
                    Expect::Frame(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        vip(VIP_DR, 80),
                        PSH_ACK,
                        payload,
                    )),
                ),
                step(
                    "FIN on the tracked flow",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 80), FIN_ACK, &[]),
                    TX,
                    Expect::Frame(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        vip(VIP_DR, 80),
                        FIN_ACK,
                        &[],
                    )),
                ),
            ],
        },
        Case {
            name: "dr: udp",
            steps: vec![step(
                "datagram to VIP:53 goes to rs2 unchanged but for MACs",
                testkit::udp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 53), dns),
                TX,
                Expect::Frame(testkit::udp(LB.mac, RS2.mac, client(), vip(VIP_DR, 53), dns)),
            )],
        },
        Case {
            name: "dr: mid-stream pickup (after a restart) forwards a non-SYN packet",
            steps: vec![step(
                "ACK with no flow",
                testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 80), ACK, &[]),
                TX,
                Expect::Frame(testkit::tcp(LB.mac, RS1.mac, client(), vip(VIP_DR, 80), ACK, &[])),
            )],
        },
        Case {
            name: "nat: a mid-stream packet with no flow cannot be translated",
            steps: vec![step(
                "ACK to the NAT VIP with no flow",
                testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT, 80), ACK, &[]),
                Verdict::Drop(DropReason::NoFlow),
                Expect::Nothing,
            )],
        },
        Case {
            name: "nat: both directions of a tcp flow",
            steps: vec![
                step(
                    "SYN: DNAT to rs1:8080",
                    nat_syn.clone(),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        (RS1.ip, 8080),
                        SYN,
                        &[],
                    ))),
                ),
                step(
                    "SYN-ACK from rs1: SNAT back to the VIP, towards the client",
                    nat_reply_to_client.clone(),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        CLIENT.mac,
                        vip(VIP_NAT, 80),
                        client(),
                        SYN_ACK,
                        &[],
                    ))),
                ),
                step(
                    "request data",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT, 80), PSH_ACK, payload),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        (RS1.ip, 8080),
                        PSH_ACK,
                        payload,
                    ))),
                ),
                step(
                    "response data",
                    testkit::tcp(
                        RS1.mac,
                        LB.mac,
                        (RS1.ip, 8080),
                        client(),
                        PSH_ACK,
                        b"HTTP/1.0 200 OK\r\n\r\nrs1",
                    ),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        CLIENT.mac,
                        vip(VIP_NAT, 80),
                        client(),
                        PSH_ACK,
                        b"HTTP/1.0 200 OK\r\n\r\nrs1",
                    ))),
                ),
                step(
                    "RST from the client",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT, 80), RST, &[]),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        (RS1.ip, 8080),
                        RST,
                        &[],
                    ))),
                ),
            ],
        },
        Case {
            name: "nat: a client beyond the gateway gets its replies through the gateway",
            steps: vec![
                step(
                    "SYN from a remote client",
                    testkit::tcp(GATEWAY.mac, LB.mac, (REMOTE, 5555), vip(VIP_NAT, 80), SYN, &[]),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        (REMOTE, 5555),
                        (RS1.ip, 8080),
                        SYN,
                        &[],
                    ))),
                ),
                step(
                    "SYN-ACK goes to the gateway's MAC",
                    testkit::tcp(RS1.mac, LB.mac, (RS1.ip, 8080), (REMOTE, 5555), SYN_ACK, &[]),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        GATEWAY.mac,
                        vip(VIP_NAT, 80),
                        (REMOTE, 5555),
                        SYN_ACK,
                        &[],
                    ))),
                ),
            ],
        },
        Case {
            name: "nat: udp both directions, a routing hop: TTL one less, TTL 1 expires (issue 10)",
            steps: vec![
                step(
                    "query: DNAT to rs2:5353, TTL 64 -> 63",
                    nat_query.clone(),
                    TX,
                    Expect::Frame(nat_query_to_rs2.clone()),
                ),
                step(
                    "answer: SNAT back to VIP:53, TTL 64 -> 63",
                    testkit::udp(RS2.mac, LB.mac, (RS2.ip, 5353), client(), b"answer"),
                    TX,
                    Expect::Frame(routed(testkit::udp(
                        LB.mac,
                        CLIENT.mac,
                        vip(VIP_NAT, 53),
                        client(),
                        b"answer",
                    ))),
                ),
                step(
                    "a query on the flow with TTL 1 expires here",
                    with_ttl(nat_query.clone(), 1),
                    Verdict::Drop(DropReason::TtlExceeded),
                    Expect::Nothing,
                ),
                step(
                    "an answer with TTL 1 expires here",
                    with_ttl(testkit::udp(RS2.mac, LB.mac, (RS2.ip, 5353), client(), b"x"), 1),
                    Verdict::Drop(DropReason::TtlExceeded),
                    Expect::Nothing,
                ),
                step(
                    "TTL 2 still goes, with 1 left",
                    with_ttl(nat_query.clone(), 2),
                    TX,
                    Expect::Frame(with_ttl(
                        testkit::udp(LB.mac, RS2.mac, client(), (RS2.ip, 5353), dns),
                        1,
                    )),
                ),
            ],
        },
        Case {
            name: "nat: a backend's own traffic that is no reply goes to the kernel",
            steps: vec![step(
                "rs1 talks to someone on its own",
                testkit::tcp(RS1.mac, LB.mac, (RS1.ip, 33000), (REMOTE, 443), SYN, &[]),
                Verdict::Pass,
                Expect::Nothing,
            )],
        },
        Case {
            name: "dr: an L2 forward keeps the TTL, even 1 (as IPVS DR does)",
            steps: vec![step(
                "SYN with TTL 1 to the DR VIP goes to rs1 untouched",
                with_ttl(dr_syn.clone(), 1),
                TX,
                Expect::Frame(with_ttl(
                    testkit::tcp(LB.mac, RS1.mac, client(), vip(VIP_DR, 80), SYN, &[]),
                    1,
                )),
            )],
        },
        Case {
            name: "nat: forged icmp errors do not keep an idle flow alive (issue 10)",
            steps: vec![
                step(
                    "query at 1 s opens a udp flow (udp_timeout 300 s)",
                    nat_query.clone(),
                    TX,
                    Expect::Frame(nat_query_to_rs2.clone()),
                )
                .at(1),
                step(
                    "at 200 s an error about the flow's answer is still forwarded to rs2",
                    forged_error.clone(),
                    TX,
                    Expect::Frame(routed(testkit::icmp_port_unreachable(
                        LB.mac,
                        RS2.mac,
                        CLIENT.ip,
                        RS2.ip,
                        &testkit::udp(LB.mac, CLIENT.mac, (RS2.ip, 5353), client(), b"answer"),
                    ))),
                )
                .at(200),
                step(
                    "at 400 s the flow has expired (300 s after its last packet): no flow",
                    forged_error.clone(),
                    Verdict::Drop(DropReason::IcmpNoFlow),
                    Expect::Nothing,
                )
                .at(400),
            ],
        },
        Case {
            name: "nat, two arms: a reply must come from the backend's side (issue 10)",
            steps: vec![
                step(
                    "SYN from the client side: DNAT to the backend behind eth1",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT_ARMS, 80), SYN, &[]),
                    ETH1,
                    Expect::Frame(to_arm2(SYN)),
                ),
                step(
                    "a forged RST 'from the backend' arriving on the client side is dropped",
                    testkit::tcp(CLIENT.mac, LB.mac, (RS_ARM2.ip, 8080), client(), RST, &[]),
                    Verdict::Drop(DropReason::ReplyWrongInterface),
                    Expect::Nothing,
                ),
                step(
                    "the real SYN-ACK from eth1 is translated: the flow was left as it was",
                    testkit::tcp(RS_ARM2.mac, LB_ARM2, (RS_ARM2.ip, 8080), client(), SYN_ACK, &[]),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        CLIENT.mac,
                        vip(VIP_NAT_ARMS, 80),
                        client(),
                        SYN_ACK,
                        &[],
                    ))),
                )
                .on(IfaceId(1)),
                step(
                    "data from the client after the forged RST still reaches the backend",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT_ARMS, 80), ACK, &[]),
                    ETH1,
                    Expect::Frame(to_arm2(ACK)),
                ),
            ],
        },
        Case {
            name: "fullnat: both directions of a tcp flow",
            steps: vec![
                step(
                    "SYN: DNAT to rs2:8080, SNAT to a local address:port",
                    fullnat_syn.clone(),
                    TX,
                    Expect::WithLocalPort(Box::new(|port| {
                        routed({
                            testkit::tcp(LB.mac, RS2.mac, (LOCAL, port), (RS2.ip, 8080), SYN, &[])
                        })
                    })),
                ),
                step(
                    "SYN-ACK from rs2 to the local address: back to VIP -> client",
                    Input::ToLocalPort(Box::new(|port| {
                        testkit::tcp(RS2.mac, LB.mac, (RS2.ip, 8080), (LOCAL, port), SYN_ACK, &[])
                    })),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        CLIENT.mac,
                        vip(VIP_FULLNAT, 80),
                        client(),
                        SYN_ACK,
                        &[],
                    ))),
                ),
                step(
                    "data from the client",
                    testkit::tcp(
                        CLIENT.mac,
                        LB.mac,
                        client(),
                        vip(VIP_FULLNAT, 80),
                        PSH_ACK,
                        payload,
                    ),
                    TX,
                    Expect::WithLocalPort(Box::new(move |port| {
                        routed({
                            testkit::tcp(
                                LB.mac,
                                RS2.mac,
                                (LOCAL, port),
                                (RS2.ip, 8080),
                                PSH_ACK,
                                payload,
                            )
                        })
                    })),
                ),
            ],
        },
        Case {
            name: "fullnat: udp both directions",
            steps: vec![
                step(
                    "query: to rs1:5353 from the local address",
                    testkit::udp(CLIENT.mac, LB.mac, client(), vip(VIP_FULLNAT, 53), dns),
                    TX,
                    Expect::WithLocalPort(Box::new(move |port| {
                        routed({
                            testkit::udp(LB.mac, RS1.mac, (LOCAL, port), (RS1.ip, 5353), dns)
                        })
                    })),
                ),
                step(
                    "answer: back to VIP:53 -> client",
                    Input::ToLocalPort(Box::new(|port| {
                        testkit::udp(RS1.mac, LB.mac, (RS1.ip, 5353), (LOCAL, port), b"answer")
                    })),
                    TX,
                    Expect::Frame(routed(testkit::udp(
                        LB.mac,
                        CLIENT.mac,
                        vip(VIP_FULLNAT, 53),
                        client(),
                        b"answer",
                    ))),
                ),
            ],
        },
        Case {
            name: "fullnat: a reply to the local address with no flow is dropped",
            steps: vec![step(
                "stray segment to the local address",
                testkit::tcp(RS2.mac, LB.mac, (RS2.ip, 8080), (LOCAL, 2000), ACK, &[]),
                Verdict::Drop(DropReason::NoFlow),
                Expect::Nothing,
            )],
        },
        Case {
            name: "arp: requests for a VIP and a local address are answered; the box's own is the kernel's",
            steps: vec![
                step(
                    "who-has VIP",
                    testkit::padded(testkit::arp(
                        true,
                        CLIENT.mac,
                        CLIENT.ip,
                        MacAddr::ZERO,
                        VIP_DR,
                    )),
                    TX,
                    Expect::Frame(testkit::padded(testkit::arp(
                        false, LB.mac, VIP_DR, CLIENT.mac, CLIENT.ip,
                    ))),
                ),
                step(
                    "who-has local address",
                    testkit::arp(true, RS2.mac, RS2.ip, MacAddr::ZERO, LOCAL),
                    TX,
                    Expect::Frame(testkit::arp(false, LB.mac, LOCAL, RS2.mac, RS2.ip)),
                ),
                step(
                    "who-has the box's own address",
                    testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, LB.ip),
                    Verdict::Pass,
                    Expect::Nothing,
                ),
                step(
                    "who-has some other host",
                    testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, RS1.ip),
                    Verdict::Pass,
                    Expect::Nothing,
                ),
                step(
                    "gratuitous ARP from someone else claiming the VIP is a counted conflict",
                    testkit::arp(true, RS1.mac, VIP_DR, MacAddr::ZERO, VIP_DR),
                    Verdict::Drop(DropReason::ArpConflict),
                    Expect::Nothing,
                ),
                step(
                    "an ARP reply from someone else claiming the VIP is a counted conflict",
                    testkit::arp(false, RS1.mac, VIP_DR, LB.mac, LB.ip),
                    Verdict::Drop(DropReason::ArpConflict),
                    Expect::Nothing,
                ),
                step(
                    "someone else claiming the local address while asking for the VIP",
                    testkit::arp(true, RS2.mac, LOCAL, MacAddr::ZERO, VIP_DR),
                    Verdict::Drop(DropReason::ArpConflict),
                    Expect::Nothing,
                ),
                step(
                    "an RFC 5227 probe (sender 0.0.0.0) for the VIP is answered to the prober",
                    testkit::arp(true, CLIENT.mac, Ipv4Addr::UNSPECIFIED, MacAddr::ZERO, VIP_DR),
                    TX,
                    Expect::Frame(testkit::arp(
                        false,
                        LB.mac,
                        VIP_DR,
                        CLIENT.mac,
                        Ipv4Addr::UNSPECIFIED,
                    )),
                ),
            ],
        },
        Case {
            name: "arp: requests from senders no reply may go to are dropped, counted",
            steps: vec![
                step(
                    "who-has VIP from the broadcast Ethernet address",
                    with_eth_src(
                        testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, VIP_DR),
                        MacAddr::BROADCAST,
                    ),
                    Verdict::Drop(DropReason::ArpBadSender),
                    Expect::Nothing,
                ),
                step(
                    "who-has VIP from a multicast MAC",
                    testkit::arp(
                        true,
                        MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
                        CLIENT.ip,
                        MacAddr::ZERO,
                        VIP_DR,
                    ),
                    Verdict::Drop(DropReason::ArpBadSender),
                    Expect::Nothing,
                ),
                step(
                    "who-has VIP whose ARP sender MAC is broadcast (Ethernet source unicast)",
                    with_eth_src(
                        testkit::arp(true, MacAddr::BROADCAST, CLIENT.ip, MacAddr::ZERO, VIP_DR),
                        CLIENT.mac,
                    ),
                    Verdict::Drop(DropReason::ArpBadSender),
                    Expect::Nothing,
                ),
                step(
                    "who-has VIP from sender 255.255.255.255",
                    testkit::arp(true, CLIENT.mac, Ipv4Addr::BROADCAST, MacAddr::ZERO, VIP_DR),
                    Verdict::Drop(DropReason::ArpBadSender),
                    Expect::Nothing,
                ),
                step(
                    "who-has VIP from the subnet's broadcast address",
                    testkit::arp(
                        true,
                        CLIENT.mac,
                        Ipv4Addr::new(10, 1, 1, 255),
                        MacAddr::ZERO,
                        VIP_DR,
                    ),
                    Verdict::Drop(DropReason::ArpBadSender),
                    Expect::Nothing,
                ),
                step(
                    "who-has VIP from a multicast sender address",
                    testkit::arp(
                        true,
                        CLIENT.mac,
                        Ipv4Addr::new(224, 0, 0, 1),
                        MacAddr::ZERO,
                        VIP_DR,
                    ),
                    Verdict::Drop(DropReason::ArpBadSender),
                    Expect::Nothing,
                ),
            ],
        },
        Case {
            name: "arp: unknown backend MAC: hold, ask from the box's own address, release on reply",
            steps: vec![
                Step {
                    what: "SYN to a VIP whose backend's MAC is unknown is held",
                    input: testkit::tcp(
                        CLIENT.mac,
                        LB.mac,
                        client(),
                        vip(Ipv4Addr::new(10, 1, 1, 103), 80),
                        SYN,
                        &[],
                    )
                    .into(),
                    verdict: Verdict::Held.into(),
                    output: Expect::Nothing,
                    emitted: vec![testkit::arp(true, LB.mac, LB.ip, MacAddr::ZERO, UNRESOLVED)],
                    ingress: IfaceId(0),
                    at_secs: None,
                },
                step(
                    "a second packet is held without asking again",
                    testkit::tcp(
                        CLIENT.mac,
                        LB.mac,
                        client(),
                        vip(Ipv4Addr::new(10, 1, 1, 103), 80),
                        ACK,
                        &[],
                    ),
                    Verdict::Held,
                    Expect::Nothing,
                ),
                Step {
                    what: "the backend's reply releases both, in order",
                    input: testkit::arp(false, UNRESOLVED_MAC, UNRESOLVED, LB.mac, LB.ip).into(),
                    verdict: Verdict::Pass.into(),
                    output: Expect::Nothing,
                    emitted: vec![
                        testkit::tcp(
                            LB.mac,
                            UNRESOLVED_MAC,
                            client(),
                            vip(Ipv4Addr::new(10, 1, 1, 103), 80),
                            SYN,
                            &[],
                        ),
                        testkit::tcp(
                            LB.mac,
                            UNRESOLVED_MAC,
                            client(),
                            vip(Ipv4Addr::new(10, 1, 1, 103), 80),
                            ACK,
                            &[],
                        ),
                    ],
                    ingress: IfaceId(0),
                    at_secs: None,
                },
                step(
                    "now the MAC is known: sent at once",
                    testkit::tcp(
                        CLIENT.mac,
                        LB.mac,
                        client(),
                        vip(Ipv4Addr::new(10, 1, 1, 103), 80),
                        PSH_ACK,
                        payload,
                    ),
                    TX,
                    Expect::Frame(testkit::tcp(
                        LB.mac,
                        UNRESOLVED_MAC,
                        client(),
                        vip(Ipv4Addr::new(10, 1, 1, 103), 80),
                        PSH_ACK,
                        payload,
                    )),
                ),
            ],
        },
        Case {
            name: "icmp: echo to a VIP is answered",
            steps: vec![
                step(
                    "ping the VIP",
                    testkit::icmp_echo(
                        CLIENT.mac,
                        LB.mac,
                        CLIENT.ip,
                        VIP_DR,
                        61,
                        false,
                        b"abcdefgh",
                    ),
                    TX,
                    Expect::Frame(testkit::icmp_echo(
                        LB.mac,
                        CLIENT.mac,
                        VIP_DR,
                        CLIENT.ip,
                        64,
                        true,
                        b"abcdefgh",
                    )),
                ),
                step(
                    "an echo reply to a VIP is not ours to answer",
                    testkit::icmp_echo(CLIENT.mac, LB.mac, CLIENT.ip, VIP_DR, 64, true, b""),
                    Verdict::Drop(DropReason::UnsupportedIcmp),
                    Expect::Nothing,
                ),
            ],
        },
        Case {
            name: "icmp: frag-needed from the client side reaches the DR flow's backend",
            steps: vec![
                step(
                    "open the flow",
                    dr_syn.clone(),
                    TX,
                    Expect::Frame(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        vip(VIP_DR, 80),
                        SYN,
                        &[],
                    )),
                ),
                step(
                    "a router tells the VIP its reply was too big",
                    testkit::icmp_frag_needed(
                        GATEWAY.mac,
                        LB.mac,
                        GATEWAY.ip,
                        VIP_DR,
                        1400,
                        &testkit::tcp(
                            RS1.mac,
                            GATEWAY.mac,
                            vip(VIP_DR, 80),
                            client(),
                            ACK,
                            &[0; 64],
                        ),
                        8,
                    ),
                    TX,
                    Expect::Frame(testkit::icmp_frag_needed(
                        LB.mac,
                        RS1.mac,
                        GATEWAY.ip,
                        VIP_DR,
                        1400,
                        &testkit::tcp(
                            RS1.mac,
                            GATEWAY.mac,
                            vip(VIP_DR, 80),
                            client(),
                            ACK,
                            &[0; 64],
                        ),
                        8,
                    )),
                ),
            ],
        },
        Case {
            name: "icmp: frag-needed from a NAT backend reaches the client, translated",
            steps: vec![
                step(
                    "open the flow",
                    nat_syn.clone(),
                    TX,
                    Expect::Frame(routed(testkit::tcp(
                        LB.mac,
                        RS1.mac,
                        client(),
                        (RS1.ip, 8080),
                        SYN,
                        &[],
                    ))),
                ),
                step(
                    "rs1 says the client's packet was too big",
                    testkit::icmp_frag_needed(
                        RS1.mac,
                        LB.mac,
                        RS1.ip,
                        CLIENT.ip,
                        1400,
                        &testkit::tcp(LB.mac, RS1.mac, client(), (RS1.ip, 8080), PSH_ACK, &[0; 64]),
                        20,
                    ),
                    TX,
                    Expect::Frame(routed(testkit::icmp_frag_needed(
                        LB.mac,
                        CLIENT.mac,
                        VIP_NAT,
                        CLIENT.ip,
                        1400,
                        &testkit::tcp(
                            LB.mac,
                            RS1.mac,
                            client(),
                            vip(VIP_NAT, 80),
                            PSH_ACK,
                            &[0; 64],
                        ),
                        20,
                    ))),
                ),
            ],
        },
        Case {
            name: "icmp: frag-needed from a FullNAT backend reaches the client about VIP:port",
            steps: vec![
                step(
                    "open the flow",
                    fullnat_syn.clone(),
                    TX,
                    Expect::WithLocalPort(Box::new(|port| {
                        routed({
                            testkit::tcp(LB.mac, RS2.mac, (LOCAL, port), (RS2.ip, 8080), SYN, &[])
                        })
                    })),
                ),
                step(
                    "rs2 says xlb's packet from the local address was too big",
                    Input::ToLocalPort(Box::new(|port| {
                        testkit::icmp_frag_needed(
                            RS2.mac,
                            LB.mac,
                            RS2.ip,
                            LOCAL,
                            1400,
                            &testkit::tcp(
                                LB.mac,
                                RS2.mac,
                                (LOCAL, port),
                                (RS2.ip, 8080),
                                PSH_ACK,
                                &[0; 64],
                            ),
                            20,
                        )
                    })),
                    TX,
                    Expect::Frame(routed(testkit::icmp_frag_needed(
                        LB.mac,
                        CLIENT.mac,
                        VIP_FULLNAT,
                        CLIENT.ip,
                        1400,
                        &testkit::tcp(
                            LB.mac,
                            RS2.mac,
                            client(),
                            vip(VIP_FULLNAT, 80),
                            PSH_ACK,
                            &[0; 64],
                        ),
                        20,
                    ))),
                ),
            ],
        },
        Case {
            name: "icmp: an error about no tracked flow",
            steps: vec![step(
                "frag-needed to the VIP about nothing we know",
                testkit::icmp_frag_needed(
                    GATEWAY.mac,
                    LB.mac,
                    GATEWAY.ip,
                    VIP_DR,
                    1400,
                    &testkit::tcp(RS1.mac, GATEWAY.mac, vip(VIP_DR, 80), (REMOTE, 1), ACK, &[]),
                    8,
                ),
                Verdict::Drop(DropReason::IcmpNoFlow),
                Expect::Nothing,
            )],
        },
        Case {
            name: "pass-through: what is not xlb's goes to the kernel",
            steps: vec![
                step(
                    "ssh to the box's own address",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), (LB.ip, 22), SYN, &[]),
                    Verdict::Pass,
                    Expect::Nothing,
                ),
                step(
                    "traffic for another host",
                    testkit::udp(CLIENT.mac, LB.mac, client(), (REMOTE, 53), dns),
                    Verdict::Pass,
                    Expect::Nothing,
                ),
                step(
                    "a frame for another MAC",
                    testkit::tcp(CLIENT.mac, RS1.mac, client(), vip(VIP_DR, 80), SYN, &[]),
                    Verdict::Pass,
                    Expect::Nothing,
                ),
                step("IPv6", ipv6_frame(), Verdict::Pass, Expect::Nothing),
            ],
        },
        Case {
            name: "services: unknown port, drained backends",
            steps: vec![
                step(
                    "VIP on a port with no service",
                    testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 443), SYN, &[]),
                    Verdict::Drop(DropReason::NoService),
                    Expect::Nothing,
                ),
                step(
                    "every backend drained (weight 0)",
                    testkit::tcp(
                        CLIENT.mac,
                        LB.mac,
                        client(),
                        vip(Ipv4Addr::new(10, 1, 1, 104), 80),
                        SYN,
                        &[],
                    ),
                    Verdict::Drop(DropReason::NoBackend),
                    Expect::Nothing,
                ),
            ],
        },
        Case {
            name: "malformed: every bad frame to a VIP gets a counted drop",
            steps: malformed_steps(&dr_syn),
        },
    ]
}

fn ipv6_frame() -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(CLIENT.mac.0, LB.mac.0)
        .ipv6(
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(1, 2);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"x").unwrap();
    frame
}

/// Sets a byte of the IPv4 header and fixes the header checksum (so only that fault shows).
fn with_ip_byte(frame: &[u8], offset: usize, value: u8) -> Vec<u8> {
    let mut frame = frame.to_vec();
    frame[14 + offset] = value;
    fix_ip_checksum(&mut frame);
    frame
}

fn fix_ip_checksum(frame: &mut [u8]) {
    let header_len = usize::from(frame[14] & 0x0f) * 4;
    let header_len = header_len.clamp(20, frame.len() - 14);
    frame[24] = 0;
    frame[25] = 0;
    let mut sum = 0u32;
    for pair in frame[14..14 + header_len].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !(sum as u16);
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());
}

fn malformed_steps(syn: &[u8]) -> Vec<Step> {
    let drop = |what, input, reason| step(what, input, Verdict::Drop(reason), Expect::Nothing);
    let mut bad_checksum = syn.to_vec();
    bad_checksum[24] ^= 0xff;
    let mut options = syn.to_vec();
    // IHL 6 with a 4-byte NOP option, total length grown by 4.
    options.splice(34..34, [1u8, 1, 1, 1]);
    options[14] = 0x46;
    let total = u16::from_be_bytes([options[16], options[17]]) + 4;
    options[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut options);
    let mut tcp_offset = syn.to_vec();
    tcp_offset[14 + 20 + 12] = 0x30; // data offset 3 words (< 5)
    let mut udp_len = testkit::udp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 53), b"abc");
    udp_len[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes());
    vec![
        drop("an empty frame", Vec::new(), DropReason::Truncated),
        drop("half an Ethernet header", syn[..7].to_vec(), DropReason::Truncated),
        drop("IPv4 cut inside its header", syn[..14 + 12].to_vec(), DropReason::Truncated),
        drop("TCP cut inside its header", syn[..14 + 20 + 10].to_vec(), DropReason::Truncated),
        drop("IP version 5", with_ip_byte(syn, 0, 0x55), DropReason::BadIpVersion),
        drop("IHL below 5", with_ip_byte(syn, 0, 0x44), DropReason::BadIpHeaderLen),
        drop(
            "total length below the header",
            with_ip_byte(&with_ip_byte(syn, 2, 0), 3, 10),
            DropReason::BadIpTotalLen,
        ),
        drop("total length beyond the frame", with_ip_byte(syn, 3, 200), DropReason::Truncated),
        drop("bad header checksum", bad_checksum, DropReason::BadIpChecksum),
        step(
            "more-fragments set: a first fragment, balanced as its flow's packet",
            with_ip_byte(syn, 6, 0x20),
            TX,
            Expect::Frame(with_macs(&with_ip_byte(syn, 6, 0x20), LB.mac, RS1.mac)),
        ),
        drop(
            "a fragment offset, its first fragment not seen (another IP identification)",
            with_ip_byte(&with_ip_byte(syn, 7, 0x10), 5, 0x77),
            DropReason::FragmentNoFirst,
        ),
        drop("IP options", options, DropReason::IpOptions),
        drop("TCP data offset below 5", tcp_offset, DropReason::BadL4Header),
        drop("UDP length beyond the datagram", udp_len, DropReason::BadL4Header),
        drop(
            "an IP protocol we do not balance (GRE)",
            with_ip_byte(syn, 9, 47),
            DropReason::UnsupportedProto,
        ),
        drop(
            "an ARP request for the VIP cut short",
            testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, VIP_DR)[..30].to_vec(),
            DropReason::BadArp,
        ),
    ]
}

/// `frame` with its Ethernet source replaced.
/// `frame` from `src` to `dst` (a DR forward).
fn with_macs(frame: &[u8], src: MacAddr, dst: MacAddr) -> Vec<u8> {
    let mut frame = frame.to_vec();
    frame[..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
    frame
}

/// Issue 15's fragments: a UDP datagram to a VIP cut in three, each mode, and a NAT and a
/// FullNAT reply cut in three; the first fragment is balanced, the later ones follow it
/// (DR: MACs only; NAT and FullNAT: the addresses and TTL, the L4 checksum updated in the
/// first fragment alone, the whole datagram's); a later fragment before its first is a
/// counted drop.
fn fragment_cases() -> Vec<Case> {
    const IDENT: u16 = 0x4242;
    let payload: Vec<u8> = (0..40u8).collect();
    let query = |to: (Ipv4Addr, u16)| {
        testkit::fragmented(&testkit::udp(CLIENT.mac, LB.mac, client(), to, &payload), IDENT, 16)
    };
    let steps = |what: [&'static str; 3], inputs: Vec<Vec<u8>>, outputs: Vec<Expect>| {
        inputs
            .into_iter()
            .zip(outputs)
            .zip(what)
            .map(|((input, output), what)| step(what, input, TX, output))
            .collect()
    };
    let each = |frames: Vec<Vec<u8>>| frames.into_iter().map(Expect::Frame).collect::<Vec<_>>();
    let names = ["first fragment (the ports)", "second fragment", "last fragment"];
    let dr = query(vip(VIP_DR, 53));
    let dr_out = testkit::fragmented(
        &testkit::udp(LB.mac, RS2.mac, client(), vip(VIP_DR, 53), &payload),
        IDENT,
        16,
    );
    let nat_out = testkit::fragmented(
        &routed(testkit::udp(LB.mac, RS2.mac, client(), (RS2.ip, 5353), &payload)),
        IDENT,
        16,
    );
    let fullnat_out = |index: usize| -> Box<dyn Fn(u16) -> Vec<u8>> {
        let payload = payload.clone();
        Box::new(move |port| {
            let whole =
                routed(testkit::udp(LB.mac, RS1.mac, (LOCAL, port), (RS1.ip, 5353), &payload));
            testkit::fragmented(&whole, IDENT, 16).swap_remove(index)
        })
    };
    let fullnat_outputs = vec![
        Expect::WithLocalPort(fullnat_out(0)),
        Expect::AtLocalPort(fullnat_out(1)),
        Expect::AtLocalPort(fullnat_out(2)),
    ];
    // The replies, in fragments: from the NAT backend to the client, and from the FullNAT
    // backend to the local address.
    let small = b"q";
    let nat_reply = testkit::fragmented(
        &testkit::udp(RS2.mac, LB.mac, (RS2.ip, 5353), client(), &payload),
        IDENT,
        16,
    );
    let to_client = |from: Ipv4Addr| {
        testkit::fragmented(
            &routed(testkit::udp(LB.mac, CLIENT.mac, vip(from, 53), client(), &payload)),
            IDENT,
            16,
        )
    };
    let mut nat_reply_steps = vec![step(
        "a whole query opens the flow",
        testkit::udp(CLIENT.mac, LB.mac, client(), vip(VIP_NAT, 53), small),
        TX,
        Expect::Frame(routed(testkit::udp(LB.mac, RS2.mac, client(), (RS2.ip, 5353), small))),
    )];
    nat_reply_steps.extend(steps(names, nat_reply, each(to_client(VIP_NAT))));
    let fullnat_reply = |index: usize| -> Box<dyn Fn(u16) -> Vec<u8>> {
        let payload = payload.clone();
        Box::new(move |port| {
            let whole = testkit::udp(RS1.mac, LB.mac, (RS1.ip, 5353), (LOCAL, port), &payload);
            testkit::fragmented(&whole, IDENT, 16).swap_remove(index)
        })
    };
    let mut fullnat_reply_steps = vec![step(
        "a whole query opens the flow",
        testkit::udp(CLIENT.mac, LB.mac, client(), vip(VIP_FULLNAT, 53), small),
        TX,
        Expect::WithLocalPort(Box::new(move |port| {
            routed(testkit::udp(LB.mac, RS1.mac, (LOCAL, port), (RS1.ip, 5353), small))
        })),
    )];
    for (index, (what, expected)) in names.iter().zip(to_client(VIP_FULLNAT)).enumerate() {
        let input = Input::ToLocalPort(fullnat_reply(index));
        fullnat_reply_steps.push(step(what, input, TX, Expect::Frame(expected)));
    }
    let mut early = query(vip(VIP_DR, 53));
    vec![
        Case {
            name: "fragments: a NAT reply's fragments follow the first, translated back",
            steps: nat_reply_steps,
        },
        Case {
            name: "fragments: a FullNAT reply's fragments follow the first, translated back",
            steps: fullnat_reply_steps,
        },
        Case {
            name: "fragments: a DR datagram's fragments follow the first",
            steps: steps(names, dr, each(dr_out)),
        },
        Case {
            name: "fragments: a NAT datagram's fragments follow the first, translated",
            steps: steps(names, query(vip(VIP_NAT, 53)), each(nat_out)),
        },
        Case {
            name: "fragments: a FullNAT datagram's fragments follow the first, translated",
            steps: steps(names, query(vip(VIP_FULLNAT, 53)), fullnat_outputs),
        },
        Case {
            name: "fragments: a later fragment before its first is dropped, counted",
            steps: vec![step(
                "second fragment first",
                early.swap_remove(1),
                Verdict::Drop(DropReason::FragmentNoFirst),
                Expect::Nothing,
            )],
        },
    ]
}

#[test]
fn fragment_golden_cases() {
    let (steps_run, failures) = harness::run(fragment_cases(), pipeline);
    assert_eq!(steps_run, 18);
    assert!(failures.is_empty(), "fragment step(s) failed:\n{}", failures.join("\n"));
    let (steps_run, _, failures) = harness::run_tagged(fragment_cases, pipeline);
    assert_eq!(steps_run, 54);
    assert!(failures.is_empty(), "tagged fragment step(s) failed:\n{}", failures.join("\n"));
}

fn with_eth_src(mut frame: Vec<u8>, src: MacAddr) -> Vec<u8> {
    frame[6..12].copy_from_slice(&src.0);
    frame
}

fn pipeline() -> Pipeline {
    let config = Config::parse(CONFIG, "golden.toml").expect("golden config is valid");
    let snapshot = Snapshot::build(&config, 1).expect("golden snapshot builds");
    Pipeline::new(Arc::new(snapshot), CoreSlot::SINGLE)
}

#[test]
fn golden_cases() {
    let (steps_run, failures) = harness::run(cases(), pipeline);
    assert!(steps_run > 50, "the table ran {steps_run} steps");
    assert!(
        failures.is_empty(),
        "{} golden step(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every golden case again with every frame VLAN-tagged (802.1Q, 802.1ad over 802.1Q, a
/// priority tag): DR, NAT and FullNAT both ways, ARP for a VIP answered tagged, the ARP
/// request a held frame asks and the frame released tagged, ICMP, malformed frames; the
/// same verdicts, and the same bytes with the tags kept.
#[test]
fn golden_cases_tagged() {
    let (steps_run, left_out, failures) = harness::run_tagged(cases, pipeline);
    assert!(steps_run > 150, "the tagged tables ran {steps_run} steps");
    assert!(left_out <= 3, "{left_out} cases left out (a frame too short to tag)");
    assert!(
        failures.is_empty(),
        "{} tagged golden step(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The golden config in fleet mode `mode`, its pipeline in VRRP state `state`.
fn fleet_pipeline(mode: &str, state: VrrpState) -> Pipeline {
    let text = format!("[fleet]\nmode = \"{mode}\"\n{CONFIG}");
    let config = Config::parse(&text, "golden.toml").expect("golden config is valid");
    let snapshot = Snapshot::build(&config, 1).expect("golden snapshot builds");
    let mut pipeline = Pipeline::new(Arc::new(snapshot), CoreSlot::SINGLE);
    pipeline.set_vrrp_state(state);
    pipeline
}

/// A fleet of boxes (`[fleet] mode`): ARP for a VIP is answered by a standalone box and a
/// VRRP active, passed unanswered by a BGP box and a VRRP standby; traffic to the VIP is
/// forwarded except by a standby, which drops it as `standby`; the FullNAT local address
/// (the box's own) is answered in every mode.
#[test]
fn fleet_golden_cases() {
    let who_has_vip = || testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, VIP_DR);
    let vip_answer = || testkit::arp(false, LB.mac, VIP_DR, CLIENT.mac, CLIENT.ip);
    let who_has_local = || testkit::arp(true, RS2.mac, RS2.ip, MacAddr::ZERO, LOCAL);
    let local_answer = || testkit::arp(false, LB.mac, LOCAL, RS2.mac, RS2.ip);
    let peer_claims_vip = || testkit::arp(true, RS1.mac, VIP_DR, MacAddr::ZERO, VIP_DR);
    let dr_syn = || testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 80), SYN, &[]);
    let dr_syn_out = || testkit::tcp(LB.mac, RS1.mac, client(), vip(VIP_DR, 80), SYN, &[]);
    let speaking = |name| Case {
        name,
        steps: vec![
            step("who-has VIP is answered", who_has_vip(), TX, Expect::Frame(vip_answer())),
            step("who-has local address", who_has_local(), TX, Expect::Frame(local_answer())),
            step(
                "another host claiming the VIP is a conflict",
                peer_claims_vip(),
                Verdict::Drop(DropReason::ArpConflict),
                Expect::Nothing,
            ),
            step("SYN to the VIP is forwarded", dr_syn(), TX, Expect::Frame(dr_syn_out())),
        ],
    };
    let silent = |name, forwarded: bool| Case {
        name,
        steps: vec![
            step("who-has VIP is passed", who_has_vip(), Verdict::Pass, Expect::Nothing),
            step("who-has local address", who_has_local(), TX, Expect::Frame(local_answer())),
            step("a peer announcing the VIP", peer_claims_vip(), Verdict::Pass, Expect::Nothing),
            if forwarded {
                step("SYN routed to the box", dr_syn(), TX, Expect::Frame(dr_syn_out()))
            } else {
                step("SYN dropped", dr_syn(), Verdict::Drop(DropReason::Standby), Expect::Nothing)
            },
        ],
    };
    let cases = [
        (speaking("standalone"), "standalone", VrrpState::Standby),
        (silent("bgp", true), "bgp", VrrpState::Standby),
        (speaking("vrrp active"), "vrrp", VrrpState::Active),
        (silent("vrrp standby", false), "vrrp", VrrpState::Standby),
    ];
    let (mut steps_run, mut failures) = (0, Vec::new());
    for (case, mode, state) in cases {
        let (steps, found) = harness::run(vec![case], || fleet_pipeline(mode, state));
        steps_run += steps;
        failures.extend(found);
    }
    assert_eq!(steps_run, 16);
    assert!(failures.is_empty(), "fleet step(s) failed:\n{}", failures.join("\n"));
}

/// A flood of ACKs from spoofed sources is forwarded by consistent hashing and never enters
/// the connection table, so it cannot push established flows out.
#[test]
fn ack_flood_is_forwarded_statelessly_and_never_tracked() {
    let mut pipeline = pipeline();
    let mut syn = testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 80), SYN, &[]);
    assert_eq!(pipeline.process(Instant::from_secs(1), IfaceId(0), &mut syn), TX);
    let tracked = pipeline.conntrack().len();
    for i in 0..10_000u32 {
        let spoofed = (Ipv4Addr::from_bits(0xc633_6400 + i), 1024 + (i % 50_000) as u16);
        let mut ack = testkit::tcp(CLIENT.mac, LB.mac, spoofed, vip(VIP_DR, 80), ACK, &[]);
        assert_eq!(pipeline.process(Instant::from_secs(2), IfaceId(0), &mut ack), TX);
    }
    assert_eq!(pipeline.conntrack().len(), tracked, "the flood added no flow");
    assert_eq!(pipeline.counters().get(Stat::StatelessPackets), 10_000);
    let mut data = testkit::tcp(CLIENT.mac, LB.mac, client(), vip(VIP_DR, 80), PSH_ACK, b"x");
    assert_eq!(pipeline.process(Instant::from_secs(3), IfaceId(0), &mut data), TX);
    assert_eq!(pipeline.counters().get(Stat::StatelessPackets), 10_000, "the real flow is tracked");
}

// Persistence (`persistence = 300`, ipvsadm's `-p 300`): a client's new connections follow
// its template, whatever the scheduler.

const VIP_RR: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 110);
const VIP_WRR: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 111);
const VIP_MH: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 112);
/// CLIENT's neighbour in its /24 (the rr service's mask).
const NEIGHBOUR: Host = Host::new([0x02, 0, 0, 0, 0, 0x21], [10, 1, 1, 21]);

/// Three persistent DR services over rs1 and rs2 (rr with a /24 mask, wrr, Maglev), or the
/// same without persistence.
fn persistent_config(persistent: bool) -> String {
    let service = |vip: Ipv4Addr, scheduler: &str, extra: &str| {
        let persistence =
            if persistent { format!("persistence = 300\n{extra}") } else { String::new() };
        format!(
            "[[service]]\nvip = \"{vip}\"\nport = 80\nscheduler = \"{scheduler}\"\n{persistence}\
             [[service.backend]]\naddr = \"10.1.1.11\"\n[[service.backend]]\naddr = \"10.1.1.12\"\n"
        )
    };
    let interface = CONFIG.split("[[service]]").next().expect("the interfaces and neighbours");
    format!(
        "{interface}{}{}{}",
        service(VIP_RR, "rr", "persistence_mask = \"255.255.255.0\"\n"),
        service(VIP_WRR, "wrr", ""),
        service(VIP_MH, "maglev", ""),
    )
}

fn persistent_pipeline(persistent: bool) -> Pipeline {
    let config = Config::parse(&persistent_config(persistent), "persist.toml").expect("valid");
    let snapshot = Snapshot::build(&config, 1).expect("the snapshot builds");
    Pipeline::new(Arc::new(snapshot), CoreSlot::SINGLE)
}

/// Which real server (its MAC) a pipeline sends a SYN of `from` to `to`:80 to.
fn sent_to(pipeline: &mut Pipeline, at: u64, from: (Ipv4Addr, u16), to: Ipv4Addr) -> MacAddr {
    let mut syn = testkit::tcp(CLIENT.mac, LB.mac, from, vip(to, 80), SYN, &[]);
    assert_eq!(pipeline.process(Instant::from_secs(at), IfaceId(0), &mut syn), TX);
    MacAddr(syn[..6].try_into().expect("a MAC"))
}

/// Two source ports of CLIENT that Maglev, without persistence, sends to different real
/// servers (probed on a pipeline without persistence), and the first one's server.
fn maglev_ports_apart() -> (u16, u16, Host) {
    let mut probe = persistent_pipeline(false);
    let first = sent_to(&mut probe, 1, (CLIENT.ip, CPORT), VIP_MH);
    let second = (CPORT + 1..CPORT + 200)
        .find(|&port| sent_to(&mut probe, 1, (CLIENT.ip, port), VIP_MH) != first)
        .expect("Maglev spreads ports over both real servers");
    (CPORT, second, if first == RS1.mac { RS1 } else { RS2 })
}

fn persistence_cases() -> Vec<Case> {
    let syn_from = |from: (Ipv4Addr, u16), to: Ipv4Addr| {
        testkit::tcp(CLIENT.mac, LB.mac, from, vip(to, 80), SYN, &[])
    };
    let to_rs = |rs: Host, from: (Ipv4Addr, u16), to: Ipv4Addr| {
        Expect::Frame(testkit::tcp(LB.mac, rs.mac, from, vip(to, 80), SYN, &[]))
    };
    let (mh_first, mh_second, mh_rs) = maglev_ports_apart();
    let port = |n: u16| (CLIENT.ip, CPORT + n);
    vec![
        Case {
            name: "persistence: rr keeps a client's second connection on its first real server",
            steps: vec![
                step(
                    "first connection: rr picks rs1",
                    syn_from(port(0), VIP_RR),
                    TX,
                    to_rs(RS1, port(0), VIP_RR),
                ),
                step(
                    "second connection, another port: rs1 again (rr alone: rs2)",
                    syn_from(port(1), VIP_RR),
                    TX,
                    to_rs(RS1, port(1), VIP_RR),
                ),
                step(
                    "a neighbour in the client's /24 (the mask): rs1 too",
                    syn_from((NEIGHBOUR.ip, CPORT), VIP_RR),
                    TX,
                    to_rs(RS1, (NEIGHBOUR.ip, CPORT), VIP_RR),
                ),
                step(
                    "a client outside the /24: its own template, rr's next pick",
                    syn_from((REMOTE, CPORT), VIP_RR),
                    TX,
                    to_rs(RS2, (REMOTE, CPORT), VIP_RR),
                ),
            ],
        },
        Case {
            name: "persistence: wrr likewise",
            steps: vec![
                step(
                    "first connection: wrr picks rs2",
                    syn_from(port(0), VIP_WRR),
                    TX,
                    to_rs(RS2, port(0), VIP_WRR),
                ),
                step(
                    "second connection: rs2 again",
                    syn_from(port(1), VIP_WRR),
                    TX,
                    to_rs(RS2, port(1), VIP_WRR),
                ),
                step(
                    "third connection: rs2 again",
                    syn_from(port(2), VIP_WRR),
                    TX,
                    to_rs(RS2, port(2), VIP_WRR),
                ),
                step(
                    "the /32 mask: a neighbour is another client (wrr's next pick)",
                    syn_from((NEIGHBOUR.ip, CPORT), VIP_WRR),
                    TX,
                    to_rs(RS1, (NEIGHBOUR.ip, CPORT), VIP_WRR),
                ),
            ],
        },
        Case {
            name: "persistence: maglev follows the template, not the flow hash",
            steps: vec![
                step(
                    "first connection",
                    syn_from((CLIENT.ip, mh_first), VIP_MH),
                    TX,
                    to_rs(mh_rs, (CLIENT.ip, mh_first), VIP_MH),
                ),
                step(
                    "a port Maglev alone sends to the other real server",
                    syn_from((CLIENT.ip, mh_second), VIP_MH),
                    TX,
                    to_rs(mh_rs, (CLIENT.ip, mh_second), VIP_MH),
                ),
            ],
        },
        Case {
            name: "persistence: a template lives 300 s after the client's last new connection",
            steps: vec![
                step("at 1 s: rs1", syn_from(port(0), VIP_RR), TX, to_rs(RS1, port(0), VIP_RR))
                    .at(1),
                step(
                    "at 200 s: rs1, the template now lives to 500 s",
                    syn_from(port(1), VIP_RR),
                    TX,
                    to_rs(RS1, port(1), VIP_RR),
                )
                .at(200),
                step("at 499 s: rs1", syn_from(port(2), VIP_RR), TX, to_rs(RS1, port(2), VIP_RR))
                    .at(499),
                step(
                    "at 800 s: expired, rr's next pick",
                    syn_from(port(3), VIP_RR),
                    TX,
                    to_rs(RS2, port(3), VIP_RR),
                )
                .at(800),
                step(
                    "at 801 s: the new template",
                    syn_from(port(4), VIP_RR),
                    TX,
                    to_rs(RS2, port(4), VIP_RR),
                )
                .at(801),
            ],
        },
    ]
}

#[test]
fn persistence_golden_cases() {
    let (steps_run, failures) = harness::run(persistence_cases(), || persistent_pipeline(true));
    assert_eq!(steps_run, 15);
    assert!(failures.is_empty(), "persistence step(s) failed:\n{}", failures.join("\n"));
}

/// The config with rs1 (10.1.1.11) of every service changed by `edit` (its
/// `[[service.backend]]` text).
fn with_rs1(edit: &str) -> Arc<Snapshot> {
    let text = persistent_config(true).replace("[[service.backend]]\naddr = \"10.1.1.11\"\n", edit);
    let config = Config::parse(&text, "persist.toml").expect("valid");
    Arc::new(Snapshot::build(&config, 2).expect("the snapshot builds"))
}

/// A template survives a weight change, even to 0 (a drained real server keeps its
/// persistent clients, as IPVS's with `expire_quiescent_template` = 0), and dies with its
/// real server's removal: the next connection gets a new pick and a new template.
#[test]
fn persistence_survives_weights_and_dies_with_its_real_server() {
    let mut pipeline = persistent_pipeline(true);
    let port = |n: u16| (CLIENT.ip, CPORT + n);
    assert_eq!(sent_to(&mut pipeline, 1, port(0), VIP_RR), RS1.mac);
    pipeline.set_snapshot(with_rs1("[[service.backend]]\naddr = \"10.1.1.11\"\nweight = 5\n"));
    assert_eq!(sent_to(&mut pipeline, 2, port(1), VIP_RR), RS1.mac, "weight 5");
    pipeline.set_snapshot(with_rs1("[[service.backend]]\naddr = \"10.1.1.11\"\nweight = 0\n"));
    assert_eq!(sent_to(&mut pipeline, 3, port(2), VIP_RR), RS1.mac, "drained: still rs1");
    assert_eq!(sent_to(&mut pipeline, 3, (REMOTE, CPORT), VIP_RR), RS2.mac, "no new client");
    pipeline.set_snapshot(with_rs1(""));
    assert_eq!(sent_to(&mut pipeline, 4, port(3), VIP_RR), RS2.mac, "rs1 removed: a new pick");
    pipeline.set_snapshot(with_rs1("[[service.backend]]\naddr = \"10.1.1.11\"\n"));
    assert_eq!(sent_to(&mut pipeline, 5, port(4), VIP_RR), RS2.mac, "the new template holds");
    // Followed: ports 1, 2 and 4 (port 3 replaced the dead template).
    assert_eq!(pipeline.counters().get(Stat::PersistentFollowed), 3);
}

/// A real server down by health check (drained by the health monitor, `down` in the
/// effective config) loses its templates, unlike one the operator drained.
#[test]
fn persistence_dies_with_a_real_server_down_by_health_check() {
    let mut pipeline = persistent_pipeline(true);
    let port = |n: u16| (CLIENT.ip, CPORT + n);
    assert_eq!(sent_to(&mut pipeline, 1, port(0), VIP_RR), RS1.mac);
    let mut config = Config::parse(&persistent_config(true), "persist.toml").expect("valid");
    for backend in config.services.iter_mut().flat_map(|s| &mut s.backends) {
        if backend.addr == std::net::IpAddr::V4(RS1.ip) {
            (backend.weight, backend.down) = (0, true);
        }
    }
    pipeline.set_snapshot(Arc::new(Snapshot::build(&config, 2).expect("the snapshot builds")));
    assert_eq!(sent_to(&mut pipeline, 2, port(1), VIP_RR), RS2.mac, "down: a new pick");
    pipeline.set_snapshot(with_rs1("[[service.backend]]\naddr = \"10.1.1.11\"\n"));
    assert_eq!(
        sent_to(&mut pipeline, 3, port(2), VIP_RR),
        RS2.mac,
        "back up: the new template holds"
    );
}

/// Two cores share one template table (as the daemon sets them up): a client's second
/// connection, which RSS gave to the other core, follows the template the first core made,
/// where that core's own scheduler would have picked another real server.
#[test]
fn persistence_holds_across_cores_sharing_one_table() {
    let two = |index| {
        let config = Config::parse(&persistent_config(true), "persist.toml").expect("valid");
        let snapshot = Arc::new(Snapshot::build(&config, 1).expect("the snapshot builds"));
        Pipeline::new(snapshot, CoreSlot { index, count: 2 })
    };
    let (mut first, mut second, mut alone) = (two(0), two(1), two(1));
    second.set_templates(Arc::clone(first.templates()));
    // What core 1 on its own would pick for the client's second connection.
    let unshared = sent_to(&mut alone, 2, (CLIENT.ip, CPORT + 1), VIP_RR);
    // Core 0 serves other clients (other /24s) until rr's next pick is the other server.
    let mut last = sent_to(&mut first, 1, (REMOTE, CPORT), VIP_RR);
    if last != unshared {
        last = sent_to(&mut first, 1, (Ipv4Addr::new(198, 51, 100, 7), CPORT), VIP_RR);
    }
    assert_eq!(last, unshared);
    let chosen = sent_to(&mut first, 1, (CLIENT.ip, CPORT), VIP_RR);
    assert_ne!(chosen, unshared, "core 1 on its own would pick another real server");
    assert_eq!(sent_to(&mut second, 2, (CLIENT.ip, CPORT + 1), VIP_RR), chosen);
}
