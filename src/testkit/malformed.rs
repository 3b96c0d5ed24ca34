//! A corpus of malformed frames, each labelled with its class and the verdict xlb must give
//! it (issue 6: "every frame gets a counted verdict").
//!
//! Every frame is addressed as a client of the DR lab (`lab/dr`, `lab/malformed`) would
//! address it: from the client's MAC and address to the balancer's MAC (or broadcast) and the
//! VIP. The classes are those of the issue: frames truncated at every header boundary, bad
//! IHL and total length, IP options, fragments, bad checksums, nonsense TCP flag
//! combinations, VLAN tags, oversized frames, ARP with odd lengths and opcodes; and a few
//! others a balancer meets (unknown protocols, ICMP it does not balance, no service).
//!
//! Each [`Case`] carries two labels:
//! - [`Case::verdict`]: what [`crate::dataplane::Pipeline::process`] gives it under
//!   [`DR_LAB_CONFIG`] (`xlb replay` checks this frame by frame, `tests/malformed.rs`);
//! - [`Case::steered`]: whether the appliance's XDP program (`steer.bpf.c`, with the DR lab's
//!   rules) hands it to xlb at all, or passes it to the kernel first (malformed VLAN tags,
//!   ARP that is not an Ethernet/IPv4 request for a VIP, anything shorter than an IPv4
//!   header). The root
//!   test runs every frame through the real program (`BPF_PROG_TEST_RUN`) to check it.
//!
//! Invariants: the corpus is a pure function of its [`Endpoints`] and round; every frame of
//! one round uses client ports of its own ([`Endpoints::port`]), so rounds replayed one after
//! another never meet each other's flows; ARP frames only ever speak for the client (its
//! real address and MAC), so injecting them teaches no one a wrong neighbour.

use std::net::Ipv4Addr;

pub mod v6;

use super::{ACK, Flags, Host, SYN, arp, icmp_echo, icmp_port_unreachable, padded, tcp, udp};
use crate::dataplane::Verdict;
use crate::report::DropReason;
use crate::snapshot::IfaceId;
use crate::wire::{MacAddr, checksum};

/// The most rounds [`corpus`] builds distinct ports for.
pub const MAX_ROUNDS: u16 = 100;

/// Client ports each round may use.
const PORTS_PER_ROUND: u16 = 400;

/// The first client port of round 0.
const FIRST_PORT: u16 = 20000;

/// Who the frames are from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The balancer's interface: its MAC and the box's own address (never a VIP).
    pub lb: Host,
    /// The client that sends the corpus.
    pub client: Host,
    /// A VIP with a TCP service on `tcp_port` and a UDP service on `udp_port`.
    pub vip: Ipv4Addr,
    pub tcp_port: u16,
    pub udp_port: u16,
}

impl Endpoints {
    /// The client port of frame `index` of `round`.
    pub fn port(&self, round: u16, index: u16) -> u16 {
        FIRST_PORT + (round % MAX_ROUNDS) * PORTS_PER_ROUND + index % PORTS_PER_ROUND
    }
}

/// The DR lab's addresses (`lab/dr`): client 10.1.1.100, lb 10.1.1.2, VIP 10.1.1.10 with
/// TCP :80 and UDP :53. The MACs are placeholders; a lab passes its own.
pub const DR_LAB: Endpoints = Endpoints {
    lb: Host::new([0x02, 0, 0, 0, 0, 0x02], [10, 1, 1, 2]),
    client: Host::new([0x02, 0, 0, 0, 0, 0x64], [10, 1, 1, 100]),
    vip: Ipv4Addr::new(10, 1, 1, 10),
    tcp_port: 80,
    udp_port: 53,
};

/// The DR lab's config as `xlb replay` runs it: [`DR_LAB`]'s MAC on the interface, and the
/// real servers' MACs as static neighbours (the running lab learns them by ARP).
pub const DR_LAB_CONFIG: &str = r#"
# The DR lab (lab/dr, lab/malformed) for xlb replay: testkit::malformed::DR_LAB_CONFIG.
[[interface]]
name = "lb"
addr = "10.1.1.2/24"
mac = "02:00:00:00:00:02"

[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:00:00:00:11"

[[neighbor]]
ip = "10.1.1.12"
mac = "02:00:00:00:00:12"

[[service]]
vip = "10.1.1.10"
port = 80
proto = "tcp"
scheduler = "rr"
forward = "dr"
  [[service.backend]]
  addr = "10.1.1.11"
  [[service.backend]]
  addr = "10.1.1.12"

[[service]]
vip = "10.1.1.10"
port = 53
proto = "udp"
scheduler = "rr"
forward = "dr"
  [[service.backend]]
  addr = "10.1.1.11"
  [[service.backend]]
  addr = "10.1.1.12"
"#;

/// The real servers of [`DR_LAB_CONFIG`]: (address, MAC).
pub const DR_LAB_BACKENDS: [(Ipv4Addr, MacAddr); 2] = [
    (Ipv4Addr::new(10, 1, 1, 11), MacAddr([0x02, 0, 0, 0, 0, 0x11])),
    (Ipv4Addr::new(10, 1, 1, 12), MacAddr([0x02, 0, 0, 0, 0, 0x12])),
];

/// The classes of the issue, and `other` for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Truncated,
    BadIhl,
    BadTotalLen,
    IpOptions,
    Fragment,
    BadChecksum,
    TcpFlags,
    Vlan,
    Oversized,
    Arp,
    Other,
}

impl Class {
    /// Every class, in the order the corpus lists them.
    pub const ALL: [Class; 11] = [
        Class::Truncated,
        Class::BadIhl,
        Class::BadTotalLen,
        Class::IpOptions,
        Class::Fragment,
        Class::BadChecksum,
        Class::TcpFlags,
        Class::Vlan,
        Class::Oversized,
        Class::Arp,
        Class::Other,
    ];

    /// The class's name in tables and label files.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Truncated => "truncated",
            Class::BadIhl => "bad_ihl",
            Class::BadTotalLen => "bad_total_len",
            Class::IpOptions => "ip_options",
            Class::Fragment => "fragment",
            Class::BadChecksum => "bad_checksum",
            Class::TcpFlags => "tcp_flags",
            Class::Vlan => "vlan",
            Class::Oversized => "oversized",
            Class::Arp => "arp",
            Class::Other => "other",
        }
    }
}

/// One frame of the corpus and what must become of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub class: Class,
    /// What is wrong with it, in a few words.
    pub what: String,
    pub frame: Vec<u8>,
    /// The pipeline's verdict under [`DR_LAB_CONFIG`].
    pub verdict: Verdict,
    /// Whether the XDP program gives it to xlb (else the kernel gets it, and xlb never
    /// counts it).
    pub steered: bool,
}

/// The verdict of a frame forwarded to a real server (DR: out of the interface it came in).
pub const FORWARDED: Verdict = Verdict::Tx(IfaceId(0));

const fn drop(reason: DropReason) -> Verdict {
    Verdict::Drop(reason)
}

const ETH: usize = 14;
const IP: usize = ETH;
const L4: usize = ETH + 20;
const URG: u8 = 0x20;

/// Recomputes the IPv4 header checksum over the header length the frame claims (as far as
/// the frame goes).
pub fn fix_ip_checksum(frame: &mut [u8]) {
    let Some(&ver_ihl) = frame.get(IP) else { return };
    let end = (IP + usize::from(ver_ihl & 0x0f) * 4).min(frame.len());
    if end < IP + 12 {
        return;
    }
    frame[IP + 10] = 0;
    frame[IP + 11] = 0;
    let sum = checksum::finish(checksum::sum(&frame[IP..end], 0));
    frame[IP + 10..IP + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Sets the IPv4 total length and fixes the header checksum.
fn set_total_len(frame: &mut [u8], total: u16) {
    frame[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(frame);
}

/// Inserts IPv4 options (a multiple of 4 bytes) after the 20-byte header, fixing IHL, total
/// length and checksum. The TCP/UDP checksum does not cover them.
fn with_ip_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    let mut out = frame[..L4].to_vec();
    out.extend_from_slice(options);
    out.extend_from_slice(&frame[L4..]);
    out[IP] = 0x40 | ((20 + options.len()) / 4) as u8;
    let total = u16::from_be_bytes([frame[IP + 2], frame[IP + 3]]) + options.len() as u16;
    set_total_len(&mut out, total);
    out
}

/// Inserts an 802.1Q-style tag (`tpid`, `tci`) after the MACs.
fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for (tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// Edits a copy of `frame` with `edit`, then fixes the IPv4 header checksum.
fn edited(frame: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = frame.to_vec();
    edit(&mut out);
    fix_ip_checksum(&mut out);
    out
}

/// The corpus for `endpoints`, round `round` (rounds use distinct client ports, up to
/// [`MAX_ROUNDS`]; later rounds wrap around).
pub fn corpus(endpoints: &Endpoints, round: u16) -> Vec<Case> {
    let mut corpus = Corpus { endpoints: *endpoints, round, cases: Vec::new() };
    corpus.truncated();
    corpus.bad_ihl();
    corpus.bad_total_len();
    corpus.ip_options();
    corpus.fragments();
    corpus.bad_checksums();
    corpus.tcp_flags();
    corpus.vlan();
    corpus.oversized();
    corpus.arp();
    corpus.other();
    corpus.cases
}

struct Corpus {
    endpoints: Endpoints,
    round: u16,
    cases: Vec<Case>,
}

impl Corpus {
    /// A fresh client port for the next case.
    fn port(&self) -> u16 {
        self.endpoints.port(self.round, self.cases.len() as u16)
    }

    fn add(&mut self, class: Class, what: impl Into<String>, frame: Vec<u8>, verdict: Verdict) {
        self.push(class, what, frame, verdict, true);
    }

    fn push(
        &mut self,
        class: Class,
        what: impl Into<String>,
        frame: Vec<u8>,
        verdict: Verdict,
        steered: bool,
    ) {
        self.cases.push(Case { class, what: what.into(), frame, verdict, steered });
    }

    /// A TCP segment with `flags` from a fresh client port to VIP:`port`.
    fn tcp_to(&self, port: u16, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let e = &self.endpoints;
        tcp(e.client.mac, e.lb.mac, (e.client.ip, self.port()), (e.vip, port), flags, payload)
    }

    /// A SYN from a fresh client port to the TCP service (54 bytes: 14 + 20 + 20).
    fn syn(&self) -> Vec<u8> {
        self.tcp_to(self.endpoints.tcp_port, SYN, &[])
    }

    /// A query from a fresh client port to the UDP service (14 + 20 + 8 + 12 bytes).
    fn query(&self) -> Vec<u8> {
        let e = &self.endpoints;
        let payload = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        udp(e.client.mac, e.lb.mac, (e.client.ip, self.port()), (e.vip, e.udp_port), &payload)
    }

    fn echo(&self) -> Vec<u8> {
        let e = &self.endpoints;
        icmp_echo(e.client.mac, e.lb.mac, e.client.ip, e.vip, 64, false, b"xlb corpus")
    }

    /// An ARP request from the client (its real address and MAC) for `target`.
    fn arp_request(&self, target: Ipv4Addr) -> Vec<u8> {
        let e = &self.endpoints;
        arp(true, e.client.mac, e.client.ip, MacAddr::ZERO, target)
    }

    fn truncated(&mut self) {
        use DropReason::Truncated;
        let class = Class::Truncated;
        // Cut with every length field left as it was: the frame ends before what it claims.
        // The XDP program needs a whole IPv4 header (34 bytes) to see the VIP.
        let syn_cuts = [0, 1, 6, 12, 13, 14, 15, 20, 26, 33, 34, 35, 38, 46, 53];
        for cut in syn_cuts {
            let within = match cut {
                0..14 => "Ethernet",
                14..34 => "IPv4",
                _ => "TCP",
            };
            let what = format!("TCP SYN cut at {cut} bytes (in {within})");
            self.push(class, what, self.syn()[..cut].to_vec(), drop(Truncated), cut >= L4);
        }
        for cut in [34, 38, 41, 45] {
            let frame = self.query()[..cut].to_vec();
            self.add(class, format!("UDP query cut at {cut} bytes"), frame, drop(Truncated));
        }
        // Cut, and the IPv4 total length made to agree (checksum fixed): the L4 header is
        // what is short.
        let agreeing: [(&str, &[usize], DropReason); 3] = [
            ("TCP header", &[0, 1, 12, 19], DropReason::BadL4Header),
            ("UDP header", &[0, 4, 7], DropReason::BadL4Header),
            ("ICMP echo", &[0, 4, 7], Truncated),
        ];
        for (what, lengths, reason) in agreeing {
            for &l4 in lengths {
                let whole = match what {
                    "TCP header" => self.syn(),
                    "UDP header" => self.query(),
                    _ => self.echo(),
                };
                let mut frame = whole[..L4 + l4].to_vec();
                set_total_len(&mut frame, 20 + l4 as u16);
                let what = format!("{what} of {l4} bytes, IPv4 length agreeing");
                self.add(class, what, frame, drop(reason));
            }
        }
        // ARP: the XDP program steers only whole Ethernet/IPv4 ARP packets.
        for cut in [14, 20, 41] {
            let frame = self.arp_request(self.endpoints.vip)[..cut].to_vec();
            let what = format!("ARP request for the VIP cut at {cut} bytes");
            self.push(class, what, frame, drop(DropReason::BadArp), false);
        }
    }

    fn bad_ihl(&mut self) {
        let class = Class::BadIhl;
        for ihl in 0..5u8 {
            let frame = edited(&self.syn(), |f| f[IP] = 0x40 | ihl);
            self.add(class, format!("IHL {ihl}"), frame, drop(DropReason::BadIpHeaderLen));
        }
        let frame = edited(&self.syn(), |f| f[IP] = 0x4f);
        self.add(
            class,
            "IHL 15: a 60-byte header in a 40-byte packet",
            frame,
            drop(DropReason::Truncated),
        );
        let frame = edited(&self.syn(), |f| f[IP] = 0x46);
        self.add(
            class,
            "IHL 6: the TCP header's first word read as options",
            frame,
            drop(DropReason::IpOptions),
        );
        let frame = edited(&self.tcp_to(self.endpoints.tcp_port, SYN, &[0u8; 60]), |f| {
            f[IP] = 0x4f;
        });
        self.add(class, "IHL 15 over 60 bytes of payload", frame, drop(DropReason::IpOptions));
        for version in [0u8, 6, 15] {
            let frame = edited(&self.syn(), |f| f[IP] = (version << 4) | 5);
            self.add(class, format!("IP version {version}"), frame, drop(DropReason::BadIpVersion));
        }
    }

    fn bad_total_len(&mut self) {
        use DropReason::{BadIpTotalLen, BadL4Header, Truncated};
        let class = Class::BadTotalLen;
        for total in [0u16, 1, 19] {
            let mut frame = self.syn();
            set_total_len(&mut frame, total);
            self.add(class, format!("IPv4 total length {total}"), frame, drop(BadIpTotalLen));
        }
        for (total, verdict) in [(20u16, drop(BadL4Header)), (39, drop(BadL4Header))] {
            let mut frame = self.syn();
            set_total_len(&mut frame, total);
            let what = format!("IPv4 total length {total}: the TCP header cut short");
            self.add(class, what, frame, verdict);
        }
        for total in [41u16, 1500, 65535] {
            let mut frame = self.syn();
            set_total_len(&mut frame, total);
            let what = format!("IPv4 total length {total}, beyond the 40 bytes there");
            self.add(class, what, frame, drop(Truncated));
        }
        let frame = padded(self.syn());
        self.add(class, "Ethernet padding after the packet (60-byte frame)", frame, FORWARDED);
        let mut frame = self.syn();
        frame.extend_from_slice(&[0xee; 100]);
        self.add(class, "100 bytes of junk after the packet", frame, FORWARDED);
        for udp_len in [0u16, 7] {
            let mut frame = self.query();
            frame[L4 + 4..L4 + 6].copy_from_slice(&udp_len.to_be_bytes());
            self.add(class, format!("UDP length {udp_len}"), frame, drop(BadL4Header));
        }
        let mut frame = self.query();
        frame[L4 + 4..L4 + 6].copy_from_slice(&21u16.to_be_bytes());
        self.add(class, "UDP length 21, beyond the 20 bytes there", frame, drop(BadL4Header));
        let mut frame = self.query();
        frame[L4 + 4..L4 + 6].copy_from_slice(&8u16.to_be_bytes());
        self.add(class, "UDP length 8, shorter than the datagram", frame, FORWARDED);
    }

    fn ip_options(&mut self) {
        let class = Class::IpOptions;
        let options: [(&str, &[u8]); 5] = [
            ("four NOPs", &[1, 1, 1, 1]),
            ("end of options", &[0, 0, 0, 0]),
            ("router alert", &[0x94, 4, 0, 0]),
            ("record route, room for one address", &[7, 7, 4, 0, 0, 0, 0, 0]),
            ("an option longer than the header", &[0x44, 0xff, 5, 0]),
        ];
        for (what, bytes) in options {
            let frame = with_ip_options(&self.syn(), bytes);
            self.add(class, format!("TCP SYN with {what}"), frame, drop(DropReason::IpOptions));
        }
        let frame = with_ip_options(&self.query(), &[1, 1, 1, 1]);
        self.add(class, "UDP query with four NOPs", frame, drop(DropReason::IpOptions));
        let frame = with_ip_options(&self.syn(), &[0x44; 40]);
        self.add(class, "40 bytes of options (IHL 15)", frame, drop(DropReason::IpOptions));
        let mut frame = with_ip_options(&self.syn(), &[1, 1, 1, 1]);
        frame[IP + 10] ^= 0x01;
        self.add(
            class,
            "options and a wrong header checksum",
            frame,
            drop(DropReason::BadIpChecksum),
        );
    }

    fn fragments(&mut self) {
        use DropReason::{Fragment, FragmentNoFirst};
        let class = Class::Fragment;
        // Each fragment its own IP identification, so none follows another case's first
        // fragment (a first fragment to a VIP is balanced; later ones follow it).
        let fragment = |f: &mut Vec<u8>, value: u16, ident: u16| {
            f[IP + 4..IP + 6].copy_from_slice(&ident.to_be_bytes());
            f[IP + 6..IP + 8].copy_from_slice(&value.to_be_bytes());
        };
        let cases: [(&str, u16, Verdict); 6] = [
            ("first fragment (more fragments, offset 0)", 0x2000, FORWARDED),
            (
                "middle fragment, no first (more fragments, offset 185)",
                0x2000 | 185,
                drop(FragmentNoFirst),
            ),
            ("last fragment, no first (offset 185)", 185, drop(FragmentNoFirst)),
            (
                "fragment at offset 1 (overlapping the TCP header, RFC 1858)",
                0x2000 | 1,
                drop(Fragment),
            ),
            ("don't fragment: a whole packet", 0x4000, FORWARDED),
            ("the reserved flag: a whole packet", 0x8000, FORWARDED),
        ];
        for (index, (what, value, verdict)) in cases.into_iter().enumerate() {
            let frame = edited(&self.syn(), |f| fragment(f, value, 0x0f00 + index as u16));
            self.add(class, format!("TCP: {what}"), frame, verdict);
        }
        let frame = edited(&self.query(), |f| fragment(f, 0x2000, 0x0f10));
        self.add(class, "UDP: first fragment", frame, FORWARDED);
        let frame = edited(&self.query(), |f| fragment(f, 0x1fff, 0x0f11));
        self.add(
            class,
            "UDP: last fragment at the largest offset, no first",
            frame,
            drop(FragmentNoFirst),
        );
    }

    fn bad_checksums(&mut self) {
        let class = Class::BadChecksum;
        let mut frame = self.syn();
        frame[IP + 11] ^= 0x01;
        self.add(class, "IPv4 header checksum off by one", frame, drop(DropReason::BadIpChecksum));
        let mut frame = self.query();
        frame[IP + 10] ^= 0xff;
        frame[IP + 11] ^= 0xff;
        self.add(class, "IPv4 header checksum inverted", frame, drop(DropReason::BadIpChecksum));
        // L4 checksums are the real server's to check (IPVS and Katran leave them alone too).
        let mut frame = self.syn();
        frame[L4 + 17] ^= 0x01;
        self.add(class, "TCP checksum wrong (the real server drops it)", frame, FORWARDED);
        let mut frame = self.query();
        frame[L4 + 7] ^= 0x01;
        self.add(class, "UDP checksum wrong (the real server drops it)", frame, FORWARDED);
        let mut frame = self.query();
        frame[L4 + 6..L4 + 8].copy_from_slice(&[0, 0]);
        self.add(class, "UDP checksum 0 (none)", frame, FORWARDED);
        let mut frame = self.echo();
        frame[L4 + 2] ^= 0x01;
        self.add(class, "ICMP echo with a wrong checksum (answered)", frame, FORWARDED);
    }

    fn tcp_flags(&mut self) {
        let class = Class::TcpFlags;
        let vport = self.endpoints.tcp_port;
        // DR forwards what opens nothing by Maglev alone (untracked); what carries SYN
        // without ACK or RST opens a tracked flow. Either way the real server judges it.
        let cases: [(&str, u8); 10] = [
            ("no flags (null scan)", 0),
            ("FIN PSH URG (Christmas tree)", 0x01 | 0x08 | URG),
            ("every flag", 0xff),
            ("SYN FIN", 0x03),
            ("SYN RST", 0x06),
            ("SYN FIN RST", 0x07),
            ("SYN URG", 0x02 | URG),
            ("RST alone, no flow", 0x04),
            ("FIN alone, no flow", 0x01),
            ("ECE CWR alone", 0xc0),
        ];
        for (what, flags) in cases {
            let frame = edited(&self.tcp_to(vport, ACK, &[]), |f| f[L4 + 13] = flags);
            self.add(class, format!("TCP {what}"), frame, FORWARDED);
        }
        let frame = edited(&self.syn(), |f| f[L4 + 12] = 0x40);
        self.add(class, "TCP data offset 4", frame, drop(DropReason::BadL4Header));
        let frame = edited(&self.syn(), |f| f[L4 + 12] = 0xf0);
        self.add(
            class,
            "TCP data offset 15, beyond the segment",
            frame,
            drop(DropReason::BadL4Header),
        );
    }

    fn vlan(&mut self) {
        let class = Class::Vlan;
        // Tagged frames are served through their untagged view, the tags kept (the DR
        // forward and the ARP answer leave tagged); the steering program hands them to xlb.
        let cases: [(&str, &[(u16, u16)]); 3] = [
            ("802.1Q VLAN 7", &[(0x8100, 7)]),
            ("802.1Q priority tag (VLAN 0)", &[(0x8100, 0xa000)]),
            ("802.1ad QinQ 100/7", &[(0x88a8, 100), (0x8100, 7)]),
        ];
        for (what, tags) in cases {
            let frame = tagged(&self.syn(), tags);
            self.add(class, format!("TCP SYN with {what}"), frame, FORWARDED);
        }
        let frame = tagged(&self.query(), &[(0x8100, 7)]);
        self.add(class, "UDP query with 802.1Q VLAN 7", frame, FORWARDED);
        let frame = tagged(&self.arp_request(self.endpoints.vip), &[(0x8100, 7)]);
        self.add(class, "ARP request for the VIP with 802.1Q VLAN 7", frame, FORWARDED);
        // Malformed tags: counted drops; the steering program leaves them to the kernel
        // (it parses two whole tags at most).
        let drop = |reason| Verdict::Drop(reason);
        let three = tagged(&self.syn(), &[(0x88a8, 100), (0x8100, 7), (0x8100, 8)]);
        self.push(
            class,
            "TCP SYN with three tags",
            three,
            drop(DropReason::VlanTooManyTags),
            false,
        );
        let cut = tagged(&self.syn(), &[(0x8100, 7)])[..15].to_vec();
        self.push(class, "cut inside its 802.1Q tag", cut, drop(DropReason::VlanTruncated), false);
        let cut = tagged(&self.syn(), &[(0x88a8, 100), (0x8100, 7)])[..19].to_vec();
        self.push(
            class,
            "cut inside its inner tag (802.1ad 100 over 802.1Q)",
            cut,
            drop(DropReason::VlanTruncated),
            false,
        );
    }

    fn oversized(&mut self) {
        let class = Class::Oversized;
        let vport = self.endpoints.tcp_port;
        // The pipeline has no MTU: a frame that reached it is judged by its headers. On a
        // wire, a frame over the interface's MTU never reaches xlb (the lab says which).
        for (what, payload) in [
            ("1514 bytes (a full 1500-byte packet)", 1460),
            ("1600 bytes (over a 1500 MTU)", 1546),
            ("9014 bytes (a jumbo frame)", 8960),
        ] {
            let frame = self.tcp_to(vport, ACK, &vec![0x55; payload]);
            self.add(class, format!("TCP ACK of {what}"), frame, FORWARDED);
        }
        let e = self.endpoints;
        let big = udp(
            e.client.mac,
            e.lb.mac,
            (e.client.ip, self.port()),
            (e.vip, e.udp_port),
            &[0x33; 1472],
        );
        self.add(class, "UDP of 1514 bytes", big, FORWARDED);
        let mut frame = self.syn();
        frame.resize(4000, 0xaa);
        self.add(class, "a 40-byte SYN in a 4000-byte frame", frame, FORWARDED);
    }

    fn arp(&mut self) {
        let class = Class::Arp;
        let vip = self.endpoints.vip;
        let request = self.arp_request(vip);
        self.add(class, "request for the VIP (the good one)", request.clone(), FORWARDED);
        self.add(
            class,
            "request for the VIP, padded to 60 bytes",
            padded(request.clone()),
            FORWARDED,
        );
        let mut long = request.clone();
        long.extend_from_slice(&[0xab; 30]);
        self.add(class, "request for the VIP with 30 bytes of junk after it", long, FORWARDED);
        let mut unicast = request.clone();
        unicast[..6].copy_from_slice(&self.endpoints.lb.mac.0);
        self.add(class, "request for the VIP sent unicast to xlb", unicast, FORWARDED);
        // Not Ethernet/IPv4 or not a request or reply: the kernel's (the XDP program passes
        // it, and so would the pipeline).
        let odd: [(&str, usize, &[u8]); 8] = [
            ("hardware length 8", ETH + 4, &[8]),
            ("protocol length 6", ETH + 5, &[6]),
            ("hardware type 6 (IEEE 802)", ETH, &[0, 6]),
            ("protocol type IPv6", ETH + 2, &[0x86, 0xdd]),
            ("opcode 0", ETH + 6, &[0, 0]),
            ("opcode 3 (RARP request)", ETH + 6, &[0, 3]),
            ("opcode 4 (RARP reply)", ETH + 6, &[0, 4]),
            ("opcode 65535", ETH + 6, &[0xff, 0xff]),
        ];
        for (what, at, bytes) in odd {
            let mut frame = request.clone();
            frame[at..at + bytes.len()].copy_from_slice(bytes);
            self.push(class, format!("for the VIP, {what}"), frame, Verdict::Pass, false);
        }
        let e = self.endpoints;
        let reply = arp(false, e.client.mac, e.client.ip, e.lb.mac, e.lb.ip);
        self.push(class, "a reply to xlb nobody asked for", reply, Verdict::Pass, false);
        let own = self.arp_request(e.lb.ip);
        self.push(class, "request for the box's own address", own, Verdict::Pass, false);
        let gratuitous = arp(true, e.client.mac, vip, MacAddr::ZERO, vip);
        self.add(
            class,
            "gratuitous request claiming the VIP",
            gratuitous,
            drop(DropReason::ArpConflict),
        );
        let probe = arp(true, e.client.mac, Ipv4Addr::UNSPECIFIED, MacAddr::ZERO, vip);
        self.add(class, "probe for the VIP (sender 0.0.0.0): defended", probe, FORWARDED);
    }

    fn other(&mut self) {
        let class = Class::Other;
        let e = self.endpoints;
        let frame = self.tcp_to(e.tcp_port + 1, SYN, &[]);
        self.add(class, "TCP SYN to a port with no service", frame, drop(DropReason::NoService));
        let frame = edited(&self.query(), |f| f[L4 + 3] = f[L4 + 3].wrapping_add(1));
        self.add(class, "UDP to a port with no service", frame, drop(DropReason::NoService));
        let frame = edited(&self.syn(), |f| f[IP + 9] = 47);
        self.add(class, "GRE to the VIP", frame, drop(DropReason::UnsupportedProto));
        let frame = edited(&self.syn(), |f| f[IP + 9] = 132);
        self.add(class, "SCTP to the VIP", frame, drop(DropReason::UnsupportedProto));
        self.add(class, "ICMP echo request to the VIP (answered)", self.echo(), FORWARDED);
        let mut timestamp = self.echo();
        timestamp[L4] = 13;
        self.add(
            class,
            "ICMP timestamp request to the VIP",
            timestamp,
            drop(DropReason::UnsupportedIcmp),
        );
        let quoted =
            tcp(e.lb.mac, e.client.mac, (e.vip, e.tcp_port), (e.client.ip, self.port()), ACK, &[]);
        let error = icmp_port_unreachable(e.client.mac, e.lb.mac, e.client.ip, e.vip, &quoted);
        self.add(class, "ICMP unreachable about no flow", error, drop(DropReason::IcmpNoFlow));
        let mut short = icmp_port_unreachable(e.client.mac, e.lb.mac, e.client.ip, e.vip, &quoted);
        short.truncate(L4 + 8 + 10);
        set_total_len(&mut short, 20 + 8 + 10);
        self.add(class, "ICMP unreachable quoting 10 bytes", short, drop(DropReason::Truncated));
        let mut broadcast = self.syn();
        broadcast[..6].copy_from_slice(&MacAddr::BROADCAST.0);
        self.add(class, "TCP SYN to the VIP, Ethernet broadcast", broadcast, FORWARDED);
        let mut elsewhere = self.syn();
        elsewhere[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        self.add(class, "TCP SYN to the VIP for another MAC", elsewhere, Verdict::Pass);
        let land = edited(&self.syn(), |f| f[IP + 12..IP + 16].copy_from_slice(&e.vip.octets()));
        self.add(class, "TCP SYN from the VIP to the VIP (land)", land, FORWARDED);
        let ttl0 = edited(&self.syn(), |f| f[IP + 8] = 0);
        self.add(class, "TCP SYN with TTL 0 (DR leaves TTL alone)", ttl0, FORWARDED);
        let mut ipv6 = self.syn();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        self.push(class, "IPv4 bytes under the IPv6 EtherType", ipv6, Verdict::Pass, false);
        let mut unknown = self.syn();
        unknown[12..14].copy_from_slice(&[0x88, 0xb5]);
        self.push(class, "an experimental EtherType", unknown, Verdict::Pass, false);
        let own = tcp(e.client.mac, e.lb.mac, (e.client.ip, self.port()), (e.lb.ip, 22), SYN, &[]);
        self.push(class, "TCP SYN to the box's own address", own, Verdict::Pass, false);
    }
}

/// A good DR flow of the lab, for interleaving with the corpus: a TCP connection to the
/// service (SYN, ACK, request, FIN, ACK) from `port`, or (`udp`) one query from it.
pub fn good_flow(endpoints: &Endpoints, port: u16, udp_flow: bool) -> Vec<Vec<u8>> {
    let e = endpoints;
    let from = (e.client.ip, port);
    if udp_flow {
        let query = [0x40, 0x41, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        return vec![udp(e.client.mac, e.lb.mac, from, (e.vip, e.udp_port), &query)];
    }
    let to = (e.vip, e.tcp_port);
    let request = format!("GET /{port} HTTP/1.1\r\nHost: {}\r\n\r\n", e.vip);
    vec![
        tcp(e.client.mac, e.lb.mac, from, to, SYN, &[]),
        tcp(e.client.mac, e.lb.mac, from, to, ACK, &[]),
        tcp(e.client.mac, e.lb.mac, from, to, super::PSH_ACK, request.as_bytes()),
        tcp(e.client.mac, e.lb.mac, from, to, super::FIN_ACK, &[]),
        tcp(e.client.mac, e.lb.mac, from, to, ACK, &[]),
    ]
}

/// One line per case for the labs: `index class steered verdict what`, tab-separated
/// (verdicts spelled as `xlb replay` spells them: `tx:0`, `pass`, `drop:<reason>`).
pub fn labels(cases: &[Case]) -> String {
    let mut out = String::from("index\tclass\tsteered\tverdict\twhat\n");
    for (index, case) in cases.iter().enumerate() {
        out.push_str(&format!(
            "{index}\t{}\t{}\t{}\t{}\n",
            case.class.name(),
            if case.steered { "yes" } else { "no" },
            crate::dataplane::io::replay::verdict_name(case.verdict),
            case.what
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::control::Config;
    use crate::dataplane::{CoreSlot, Pipeline};
    use crate::snapshot::Snapshot;
    use crate::time::Instant;

    fn pipeline() -> Pipeline {
        let config = Config::parse(DR_LAB_CONFIG, "dr-lab.toml").unwrap();
        Pipeline::new(Arc::new(Snapshot::build(&config, 1).unwrap()), CoreSlot::SINGLE)
    }

    #[test]
    fn every_case_gets_its_labelled_verdict() {
        let mut pipeline = pipeline();
        let cases = corpus(&DR_LAB, 0);
        let mut wrong = Vec::new();
        let mut tally = crate::testkit::VerdictTally::default();
        for (i, case) in cases.iter().enumerate() {
            let mut frame = case.frame.clone();
            let verdict = pipeline.process(Instant::from_millis(i as u64), IfaceId(0), &mut frame);
            tally.record(case.frame.len(), verdict);
            if verdict == Verdict::Pass && frame != case.frame {
                wrong.push(format!("{}: {}: passed, but changed", case.class.name(), case.what));
            }
            pipeline.drain_emitted(|_, _| {});
            if verdict != case.verdict {
                wrong.push(format!(
                    "{}: {}: {verdict:?}, labelled {:?}",
                    case.class.name(),
                    case.what,
                    case.verdict
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert_eq!(tally.frames, cases.len() as u64);
        if let Err(wrong) = tally.check(pipeline.counters()) {
            panic!("the counters differ from the verdicts returned:\n{wrong}");
        }
    }

    #[test]
    fn every_class_is_there_and_rounds_use_ports_of_their_own() {
        let cases = corpus(&DR_LAB, 0);
        for class in Class::ALL {
            assert!(cases.iter().filter(|c| c.class == class).count() >= 3, "{}", class.name());
        }
        assert!(cases.len() <= usize::from(PORTS_PER_ROUND), "rounds would share ports");
        let ports = |round| -> HashSet<u16> {
            (0..PORTS_PER_ROUND).map(|i| DR_LAB.port(round, i)).collect()
        };
        assert!(ports(0).is_disjoint(&ports(1)));
        assert!(ports(MAX_ROUNDS - 1).iter().all(|p| *p >= FIRST_PORT));
        // Rounds differ only in their ports: the same classes and verdicts.
        let other = corpus(&DR_LAB, 7);
        assert_eq!(other.len(), cases.len());
        for (a, b) in cases.iter().zip(&other) {
            assert_eq!(
                (a.class, &a.what, a.verdict, a.steered),
                (b.class, &b.what, b.verdict, b.steered)
            );
        }
    }

    #[test]
    fn arp_frames_speak_only_for_the_client() {
        for case in corpus(&DR_LAB, 0) {
            let frame = &case.frame;
            if frame.get(12..14) == Some(&[0x08, 0x06][..]) && frame.len() >= ETH + 28 {
                let sender_mac = &frame[ETH + 8..ETH + 14];
                let sender_ip = Ipv4Addr::new(
                    frame[ETH + 14],
                    frame[ETH + 15],
                    frame[ETH + 16],
                    frame[ETH + 17],
                );
                assert_eq!(sender_mac, DR_LAB.client.mac.0, "{}", case.what);
                assert!(
                    [DR_LAB.client.ip, DR_LAB.vip, Ipv4Addr::UNSPECIFIED].contains(&sender_ip),
                    "{}",
                    case.what
                );
            }
            // Source MACs the lab's bridge forwards (a multicast or zero one it drops).
            if frame.len() >= 12 {
                assert_eq!(&frame[6..12], DR_LAB.client.mac.0, "{}", case.what);
            }
        }
    }

    #[test]
    fn good_flows_are_forwarded_whole_to_one_backend() {
        let mut pipeline = pipeline();
        for (i, port) in (50000..50010).enumerate() {
            let mut backends = HashSet::new();
            for frame in good_flow(&DR_LAB, port, i % 3 == 0) {
                let mut out = frame.clone();
                assert_eq!(
                    pipeline.process(Instant::from_millis(i as u64), IfaceId(0), &mut out),
                    FORWARDED
                );
                assert_eq!(&out[6..12], DR_LAB.lb.mac.0);
                assert_eq!(&out[12..], &frame[12..], "DR rewrites only the MACs");
                backends.insert(out[..6].to_vec());
            }
            assert_eq!(backends.len(), 1);
            assert!(DR_LAB_BACKENDS.iter().any(|(_, mac)| backends.contains(mac.0.as_slice())));
        }
    }

    #[test]
    fn labels_have_one_line_per_case() {
        let cases = corpus(&DR_LAB, 0);
        let text = labels(&cases);
        assert_eq!(text.lines().count(), cases.len() + 1);
        assert!(text.lines().nth(1).unwrap().starts_with("0\ttruncated\tno\tdrop:truncated\t"));
    }
}
