//! The malformed-frame corpus's IPv6 classes (issue 12): frames truncated at every offset,
//! payload lengths larger and smaller than the frame, extension-header chains that never
//! end, and bad version nibbles, each labelled with the verdict xlb must give it.
//!
//! Kept apart from the IPv4 corpus ([`super::corpus`]), whose classes, frames and golden
//! table stay as they are: these frames go to the IPv6 DR lab (`lab/dr6`) and are replayed
//! under [`DR_LAB6_CONFIG`] (`tests/malformed.rs`, golden table
//! `tests/golden/malformed6.md`).
//!
//! Labels are spelled as `xlb replay --verdicts` spells verdicts (`tx:0`, `pass`,
//! `drop:<reason>`), not as [`crate::dataplane::Verdict`] values: some name a drop reason
//! the IPv6 pipeline adds (`ipv6_ext_headers`). The expected verdicts follow the IPv6
//! contract (issue 12) and, where it is silent, what IPv4 does with the same fault:
//! - cut anywhere before the end of the fixed header: `drop:truncated`, as IPv4 cut inside
//!   its header;
//! - a payload length beyond the frame (a frame cut after the fixed header, or a length
//!   grown): `drop:truncated`, as IPv4's total length beyond the frame (and
//!   [`crate::wire::Ipv6Packet::new_checked`]'s `Truncated`);
//! - a payload length short of the TCP/UDP header, or of the UDP length: `drop:bad_l4_header`,
//!   as IPv4's total length cutting the L4 header; bytes past the payload length are
//!   Ethernet padding (forwarded, as IPv4's junk after the packet);
//! - extension header chains to a VIP: a well-formed chain of hop-by-hop (first),
//!   destination options and routing headers with segments left 0, within the walk's
//!   bounds, before TCP or UDP: forwarded (`tx:0`, the chain kept); one that runs past the
//!   payload or puts hop-by-hop anywhere but first: `drop:bad_ipv6_ext_header`; one past
//!   the walk's bounds (8 headers, 1024 bytes — a header claiming more counts as past them):
//!   `drop:ipv6_ext_chain_too_long`; a routing header with segments left:
//!   `drop:ipv6_segments_left`; "no next header" after a chain: `drop:unsupported_proto`;
//! - a version nibble other than 6 under the IPv6 EtherType: `drop:bad_ip_version`, as IPv4;
//! - fragments behind hop-by-hop (issue 15), as IPv4's: a first fragment with its ports or
//!   an atomic fragment `tx:0`; a later fragment with no first `drop:fragment_no_first`; a
//!   first fragment without its ports, of ICMPv6, or TCP at offset 1 `drop:fragment`; one
//!   cut inside its fragment header (by the payload length) `drop:bad_ipv6_ext_header`.
//!
//! `steered` labels what the IPv6 steering program should hand to xlb: a whole fixed header
//! (54 bytes with Ethernet) addressed to the VIP, whatever follows it.
//!
//! Invariants: the corpus is a pure function of its [`Endpoints6`] and round; every frame of
//! one round uses client ports of its own ([`Endpoints6::port`]), disjoint from other rounds'.

use std::net::Ipv6Addr;

use super::super::{
    ACK, FIN_ACK, Flags, Host6, PSH_ACK, SYN, ext_header, icmpv6_echo, tcp6, udp6, with_ext_headers,
};
use crate::wire::MacAddr;

/// Client ports each round may use.
const PORTS_PER_ROUND: u16 = 400;

/// The first client port of round 0 (above the IPv4 corpus's ports).
const FIRST_PORT: u16 = 20000;

/// Who the frames are from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints6 {
    /// The balancer's interface: its MAC and the box's own IPv6 address (never a VIP).
    pub lb: Host6,
    pub client: Host6,
    /// A VIP with a TCP service on `tcp_port` and a UDP service on `udp_port`.
    pub vip: Ipv6Addr,
    pub tcp_port: u16,
    pub udp_port: u16,
}

impl Endpoints6 {
    /// The client port of frame `index` of `round`.
    pub fn port(&self, round: u16, index: u16) -> u16 {
        FIRST_PORT + (round % super::MAX_ROUNDS) * PORTS_PER_ROUND + index % PORTS_PER_ROUND
    }
}

const fn lab6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)
}

/// The IPv6 DR lab's addresses (`lab/dr6`): client 2001:db8:1::100, lb 2001:db8:1::2, VIP
/// 2001:db8:1::10 with TCP :80 and UDP :53. The MACs are placeholders.
pub const DR_LAB6: Endpoints6 = Endpoints6 {
    lb: Host6::new([0x02, 0, 0, 0, 0, 0x02], lab6(0x2)),
    client: Host6::new([0x02, 0, 0, 0, 0, 0x64], lab6(0x100)),
    vip: lab6(0x10),
    tcp_port: 80,
    udp_port: 53,
};

/// The IPv6 DR lab's config as `xlb replay` runs it: [`DR_LAB6`]'s MAC and addresses on the
/// interface, the real servers' MACs as static neighbours.
pub const DR_LAB6_CONFIG: &str = r#"
# The IPv6 DR lab (lab/dr6) for xlb replay: testkit::malformed::v6::DR_LAB6_CONFIG.
[[interface]]
name = "lb"
addr = "10.1.1.2/24"
addr6 = "2001:db8:1::2/64"
mac = "02:00:00:00:00:02"

[[neighbor]]
ip = "2001:db8:1::11"
mac = "02:00:00:00:00:11"

[[neighbor]]
ip = "2001:db8:1::12"
mac = "02:00:00:00:00:12"

[[service]]
vip = "2001:db8:1::10"
port = 80
proto = "tcp"
scheduler = "rr"
forward = "dr"
  [[service.backend]]
  addr = "2001:db8:1::11"
  [[service.backend]]
  addr = "2001:db8:1::12"

[[service]]
vip = "2001:db8:1::10"
port = 53
proto = "udp"
scheduler = "rr"
forward = "dr"
  [[service.backend]]
  addr = "2001:db8:1::11"
  [[service.backend]]
  addr = "2001:db8:1::12"
"#;

/// The real servers of [`DR_LAB6_CONFIG`]: (address, MAC).
pub const DR_LAB6_BACKENDS: [(Ipv6Addr, MacAddr); 2] = [
    (lab6(0x11), MacAddr([0x02, 0, 0, 0, 0, 0x11])),
    (lab6(0x12), MacAddr([0x02, 0, 0, 0, 0, 0x12])),
];

/// The IPv6 classes of issue 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class6 {
    Truncated,
    PayloadLen,
    ExtChain,
    Version,
    Fragment,
}

impl Class6 {
    pub const ALL: [Class6; 5] = [
        Class6::Truncated,
        Class6::PayloadLen,
        Class6::ExtChain,
        Class6::Version,
        Class6::Fragment,
    ];

    /// The class's name in tables and label files.
    pub const fn name(self) -> &'static str {
        match self {
            Class6::Truncated => "ipv6_truncated",
            Class6::PayloadLen => "ipv6_payload_len",
            Class6::ExtChain => "ipv6_ext_chain",
            Class6::Version => "ipv6_version",
            Class6::Fragment => "ipv6_fragment",
        }
    }
}

/// One frame of the IPv6 corpus and what must become of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case6 {
    pub class: Class6,
    /// What is wrong with it, in a few words.
    pub what: String,
    pub frame: Vec<u8>,
    /// The verdict under [`DR_LAB6_CONFIG`], as `xlb replay --verdicts` spells it.
    pub verdict: &'static str,
    /// Whether the steering program should hand it to xlb.
    pub steered: bool,
}

/// A frame forwarded to a real server (DR: out of the interface it came in).
pub const FORWARDED: &str = "tx:0";
const TRUNCATED: &str = "drop:truncated";
const BAD_L4: &str = "drop:bad_l4_header";
const BAD_EXT_HEADER: &str = "drop:bad_ipv6_ext_header";
const EXT_CHAIN_TOO_LONG: &str = "drop:ipv6_ext_chain_too_long";
const SEGMENTS_LEFT: &str = "drop:ipv6_segments_left";
const FRAGMENT: &str = "drop:fragment";
const FRAGMENT_NO_FIRST: &str = "drop:fragment_no_first";
const UNSUPPORTED: &str = "drop:unsupported_proto";
const BAD_VERSION: &str = "drop:bad_ip_version";

const ETH: usize = 14;
const IP: usize = ETH;
/// The end of the fixed header: where the upper layer (or the first extension header) is.
const L4: usize = ETH + 40;
const PAYLOAD_LEN: usize = IP + 4;
#[cfg(test)]
const NEXT_HEADER: usize = IP + 6;

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const DEST_OPTIONS: u8 = 60;
const FRAGMENT_HEADER: u8 = 44;
const NO_NEXT_HEADER: u8 = 59;

fn set_payload_len(frame: &mut [u8], len: u16) {
    frame[PAYLOAD_LEN..PAYLOAD_LEN + 2].copy_from_slice(&len.to_be_bytes());
}

fn payload_len(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[PAYLOAD_LEN], frame[PAYLOAD_LEN + 1]])
}

/// `frame` with `chain` (`(kind, len)` extension headers of `(len + 1) * 8` bytes:
/// [`ext_header`]'s padding or zeros) between the fixed header and the upper layer, each
/// pointing to the next, the last to `last_next`; the payload length grows to agree.
fn with_chain(frame: &[u8], chain: &[(u8, u8)], last_next: u8) -> Vec<u8> {
    let headers: Vec<(u8, Vec<u8>)> =
        chain.iter().map(|&(kind, len)| (kind, ext_header(kind, len))).collect();
    let refs: Vec<(u8, &[u8])> = headers.iter().map(|(k, h)| (*k, h.as_slice())).collect();
    let mut out = with_ext_headers(frame, &refs);
    if let Some((_, last)) = headers.last() {
        let added: usize = headers.iter().map(|(_, h)| h.len()).sum();
        out[L4 + added - last.len()] = last_next;
    }
    out
}

/// The IPv6 corpus for `endpoints`, round `round` (rounds use distinct client ports, up to
/// [`super::MAX_ROUNDS`]; later rounds wrap around).
pub fn corpus(endpoints: &Endpoints6, round: u16) -> Vec<Case6> {
    let mut corpus = Corpus { endpoints: *endpoints, round, cases: Vec::new() };
    corpus.truncated();
    corpus.payload_len();
    corpus.ext_chains();
    corpus.version();
    corpus.fragments();
    corpus.cases
}

struct Corpus {
    endpoints: Endpoints6,
    round: u16,
    cases: Vec<Case6>,
}

impl Corpus {
    fn port(&self) -> u16 {
        self.endpoints.port(self.round, self.cases.len() as u16)
    }

    /// Adds a case; steered when the frame holds a whole fixed header to the VIP.
    fn add(
        &mut self,
        class: Class6,
        what: impl Into<String>,
        frame: Vec<u8>,
        verdict: &'static str,
    ) {
        let vip = self.endpoints.vip.octets();
        let steered =
            frame.len() >= L4 && frame[12..14] == [0x86, 0xdd] && frame[IP + 24..IP + 40] == vip;
        self.cases.push(Case6 { class, what: what.into(), frame, verdict, steered });
    }

    fn tcp_to(&self, port: u16, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let e = &self.endpoints;
        tcp6(e.client.mac, e.lb.mac, (e.client.ip, self.port()), (e.vip, port), flags, payload)
    }

    /// A SYN from a fresh client port to the TCP service (74 bytes: 14 + 40 + 20).
    fn syn(&self) -> Vec<u8> {
        self.tcp_to(self.endpoints.tcp_port, SYN, &[])
    }

    /// A query from a fresh client port to the UDP service (14 + 40 + 8 + 12 bytes).
    fn query(&self) -> Vec<u8> {
        let e = &self.endpoints;
        let payload = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        udp6(e.client.mac, e.lb.mac, (e.client.ip, self.port()), (e.vip, e.udp_port), &payload)
    }

    fn echo(&self) -> Vec<u8> {
        let e = &self.endpoints;
        icmpv6_echo(e.client.mac, e.lb.mac, e.client.ip, e.vip, 64, false, b"xlb corpus")
    }

    fn truncated(&mut self) {
        let class = Class6::Truncated;
        // Cut with every length field left as it was: the frame ends before what it claims.
        for cut in 0..self.syn().len() {
            let within = match cut {
                0..ETH => "Ethernet",
                ETH..L4 => "the IPv6 fixed header",
                _ => "TCP",
            };
            let what = format!("TCP SYN cut at {cut} bytes (in {within})");
            self.add(class, what, self.syn()[..cut].to_vec(), TRUNCATED);
        }
        for cut in L4..self.query().len() {
            let frame = self.query()[..cut].to_vec();
            let what = format!("UDP query cut at {cut} bytes (payload length beyond it)");
            self.add(class, what, frame, TRUNCATED);
        }
        for cut in [L4, L4 + 4, L4 + 7, L4 + 12] {
            let frame = self.echo()[..cut].to_vec();
            self.add(class, format!("ICMPv6 echo cut at {cut} bytes"), frame, TRUNCATED);
        }
    }

    fn payload_len(&mut self) {
        let class = Class6::PayloadLen;
        // Larger than the frame: as a cut frame.
        for len in [21u16, 40, 1500, 65535] {
            let mut frame = self.syn();
            set_payload_len(&mut frame, len);
            let what = format!("TCP SYN, payload length {len}, beyond the 20 bytes there");
            self.add(class, what, frame, TRUNCATED);
        }
        let mut frame = self.query();
        set_payload_len(&mut frame, 21);
        self.add(
            class,
            "UDP query, payload length 21, beyond the 20 bytes there",
            frame,
            TRUNCATED,
        );
        // Smaller than the frame: what follows is padding, and the L4 header is cut short.
        for len in [0u16, 1, 8, 19] {
            let mut frame = self.syn();
            set_payload_len(&mut frame, len);
            let what = format!("TCP SYN, payload length {len}: the TCP header cut short");
            self.add(class, what, frame, BAD_L4);
        }
        for len in [0u16, 7] {
            let mut frame = self.query();
            set_payload_len(&mut frame, len);
            let what = format!("UDP query, payload length {len}: the UDP header cut short");
            self.add(class, what, frame, BAD_L4);
        }
        let mut frame = self.query();
        set_payload_len(&mut frame, 16);
        let what = "UDP query, payload length 16: the UDP length (20) beyond it";
        self.add(class, what, frame, BAD_L4);
        // Smaller than the frame, the packet whole: the rest is padding, forwarded as it is.
        let mut frame = self.syn();
        frame.extend_from_slice(&[0xee; 26]);
        self.add(class, "TCP SYN with 26 bytes after the packet (padding)", frame, FORWARDED);
        let mut frame = self.tcp_to(self.endpoints.tcp_port, ACK, b"0123456789");
        let len = payload_len(&frame) - 10;
        set_payload_len(&mut frame, len);
        let what = "TCP ACK with 10 bytes of data outside its payload length (padding)";
        self.add(class, what, frame, FORWARDED);
    }

    fn ext_chains(&mut self) {
        let class = Class6::ExtChain;
        let syn = self.syn();
        // Chains whose headers all fit, but whose last header points past the frame's end:
        // the payload length ends where the chain does.
        let open: [(&str, &[(u8, u8)]); 4] = [
            ("hop-by-hop, next header destination options, then nothing", &[(HOP_BY_HOP, 0)]),
            ("one destination options header pointing to another", &[(DEST_OPTIONS, 0)]),
            ("a routing header pointing to another", &[(ROUTING, 0)]),
            (
                "hop-by-hop, routing, destination options, each pointing on",
                &[(HOP_BY_HOP, 0), (ROUTING, 0), (DEST_OPTIONS, 1)],
            ),
        ];
        for (what, chain) in open {
            let mut frame = with_chain(&syn, chain, DEST_OPTIONS);
            // Drop the TCP header: the chain runs to the frame's end.
            frame.truncate(frame.len() - 20);
            let len = payload_len(&frame) - 20;
            set_payload_len(&mut frame, len);
            let what = format!("{what} (chained to the frame's end)");
            self.add(class, what, frame, BAD_EXT_HEADER);
        }
        let mut frame = with_chain(&syn, &[(HOP_BY_HOP, 0)], DEST_OPTIONS);
        frame.truncate(frame.len() - 20);
        // The payload length says more than the frame holds: refused before any chain.
        self.add(
            class,
            "hop-by-hop pointing on, the payload length still claiming the TCP header",
            frame,
            TRUNCATED,
        );
        // A header whose length runs past the frame (and past the walk's byte bound).
        let mut frame = with_chain(&syn, &[(HOP_BY_HOP, 0)], 6);
        frame[L4 + 1] = 255;
        let what = "hop-by-hop claiming 2048 bytes in a short frame";
        self.add(class, what, frame, EXT_CHAIN_TOO_LONG);
        // A header whose length runs past the payload, within the byte bound.
        let mut frame = with_chain(&self.query(), &[(DEST_OPTIONS, 0)], 17);
        frame[L4 + 1] = 4;
        let what = "destination options claiming 40 bytes, 28 left in the payload";
        self.add(class, what, frame, BAD_EXT_HEADER);
        // Longer than the walk's bounds (8 headers, 1024 bytes), all in the frame.
        let nine = [(DEST_OPTIONS, 0); 9];
        let frame = with_chain(&syn, &nine, 6);
        self.add(class, "nine destination options headers, then TCP", frame, EXT_CHAIN_TOO_LONG);
        let forty = [(ROUTING, 0); 40];
        let frame = with_chain(&self.query(), &forty, 17);
        self.add(class, "forty routing headers, then UDP", frame, EXT_CHAIN_TOO_LONG);
        let frame = with_chain(&syn, &[(DEST_OPTIONS, 127), (DEST_OPTIONS, 1)], 6);
        let what = "destination options past 1024 bytes, then TCP";
        self.add(class, what, frame, EXT_CHAIN_TOO_LONG);
        // Chains that end, but not in anything balanced.
        let frame = with_chain(&syn, &[(DEST_OPTIONS, 0), (HOP_BY_HOP, 0)], 6);
        self.add(class, "hop-by-hop not first, then TCP", frame, BAD_EXT_HEADER);
        let mut frame = with_chain(&syn, &[(HOP_BY_HOP, 0)], NO_NEXT_HEADER);
        frame.truncate(frame.len() - 20);
        let len = payload_len(&frame) - 20;
        set_payload_len(&mut frame, len);
        self.add(class, "hop-by-hop, then no next header (59)", frame, UNSUPPORTED);
        let mut frame = with_chain(&syn, &[(ROUTING, 0)], 6);
        frame[L4 + 3] = 1;
        let what = "a routing header with segments left 1 (the VIP not the destination)";
        self.add(class, what, frame, SEGMENTS_LEFT);
        let mut frame = with_chain(&syn, &[(HOP_BY_HOP, 0), (FRAGMENT_HEADER, 0)], 6);
        // Offset 0, more fragments, identification 7.
        frame[L4 + 8 + 1..L4 + 16].copy_from_slice(&[0, 0, 1, 0, 0, 0, 7]);
        // A first fragment with the whole TCP header: balanced (issue 15).
        self.add(class, "hop-by-hop, then a first fragment of TCP", frame, FORWARDED);
        // Well-formed chains: forwarded, the chain kept.
        let frame = with_chain(&self.query(), &[(DEST_OPTIONS, 0)], 17);
        self.add(class, "a well-formed destination options header before UDP", frame, FORWARDED);
        let frame = with_chain(&syn, &[(HOP_BY_HOP, 0), (DEST_OPTIONS, 1), (ROUTING, 0)], 6);
        let what = "a well-formed chain (hop-by-hop, destination options, routing) before TCP";
        self.add(class, what, frame, FORWARDED);
        let frame = with_chain(&syn, &[(DEST_OPTIONS, 0); 8], 6);
        let what =
            "a well-formed chain of eight destination options headers (the bound) before TCP";
        self.add(class, what, frame, FORWARDED);
    }

    fn version(&mut self) {
        let class = Class6::Version;
        for version in [0u8, 4, 5, 7, 15] {
            let mut frame = self.syn();
            frame[IP] = (version << 4) | (frame[IP] & 0x0f);
            let what = format!("TCP SYN, IP version {version} under the IPv6 EtherType");
            self.add(class, what, frame, BAD_VERSION);
        }
        let mut frame = self.query();
        frame[IP] = 0x40 | (frame[IP] & 0x0f);
        self.add(class, "UDP query, IP version 4 under the IPv6 EtherType", frame, BAD_VERSION);
        let mut frame = self.echo();
        frame[IP] = 0x70 | (frame[IP] & 0x0f);
        self.add(class, "ICMPv6 echo, IP version 7", frame, BAD_VERSION);
    }

    /// `frame` (no extension headers) as a fragment behind hop-by-hop: a fragment header
    /// with `offset_flags` (offset in 8-byte units << 3, more-fragments in bit 0) and the
    /// frame's client port as its identification (each case a datagram of its own).
    fn fragment(&self, frame: &[u8], offset_flags: u16) -> Vec<u8> {
        let mut header = [0u8; 8];
        header[2..4].copy_from_slice(&offset_flags.to_be_bytes());
        let port = [frame[L4], frame[L4 + 1]];
        header[6..8].copy_from_slice(&port);
        let hop_by_hop = ext_header(HOP_BY_HOP, 0);
        with_ext_headers(frame, &[(HOP_BY_HOP, &hop_by_hop), (FRAGMENT_HEADER, &header)])
    }

    /// Fragments (issue 15): a first fragment with its ports is balanced, an atomic one is
    /// a whole packet, a later one with no first before it is `fragment_no_first`; a first
    /// fragment without its ports, of ICMPv6, or TCP at offset 1 is `fragment`; a first
    /// fragment cut at every offset of its fragment and UDP headers (the frame, or the
    /// payload length) is a counted drop.
    fn fragments(&mut self) {
        let class = Class6::Fragment;
        const MORE: u16 = 1;
        let frame = self.fragment(&self.query(), MORE);
        self.add(class, "UDP: first fragment behind hop-by-hop", frame, FORWARDED);
        let frame = self.fragment(&self.syn(), MORE);
        self.add(class, "TCP: first fragment behind hop-by-hop", frame, FORWARDED);
        let frame = self.fragment(&self.syn(), 0);
        self.add(class, "TCP: atomic fragment (offset 0, no more)", frame, FORWARDED);
        let frame = self.fragment(&self.query(), 185 << 3 | MORE);
        self.add(class, "UDP: middle fragment, no first (offset 185)", frame, FRAGMENT_NO_FIRST);
        let frame = self.fragment(&self.query(), 8191 << 3);
        let what = "UDP: last fragment at the largest offset, no first";
        self.add(class, what, frame, FRAGMENT_NO_FIRST);
        let frame = self.fragment(&self.syn(), 1 << 3 | MORE);
        let what = "TCP: fragment at offset 1 (overlapping the TCP header, RFC 1858)";
        self.add(class, what, frame, FRAGMENT);
        let frame = self.fragment(&self.echo(), MORE);
        self.add(class, "ICMPv6 echo: first fragment", frame, FRAGMENT);
        // The fragment header starts at L4 + 8, the UDP header at L4 + 16.
        for cut in L4 + 8..L4 + 24 {
            let within = if cut < L4 + 16 { "fragment" } else { "UDP" };
            let frame = self.fragment(&self.query(), MORE)[..cut].to_vec();
            let what = format!("UDP first fragment cut at {cut} bytes (in its {within} header)");
            self.add(class, what, frame, TRUNCATED);
            let mut frame = self.fragment(&self.query(), MORE);
            set_payload_len(&mut frame, (cut - L4) as u16);
            let verdict = if cut < L4 + 16 { BAD_EXT_HEADER } else { FRAGMENT };
            let what =
                format!("UDP first fragment, payload length {}: its {within} header cut", cut - L4);
            self.add(class, what, frame, verdict);
        }
    }
}

/// A good IPv6 DR flow of the lab: a TCP connection to the service (SYN, ACK, request, FIN,
/// ACK) from `port`, or (`udp_flow`) one query from it.
pub fn good_flow(endpoints: &Endpoints6, port: u16, udp_flow: bool) -> Vec<Vec<u8>> {
    let e = endpoints;
    let from = (e.client.ip, port);
    if udp_flow {
        let query = [0x40, 0x41, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        return vec![udp6(e.client.mac, e.lb.mac, from, (e.vip, e.udp_port), &query)];
    }
    let to = (e.vip, e.tcp_port);
    let request = format!("GET /{port} HTTP/1.1\r\nHost: [{}]\r\n\r\n", e.vip);
    vec![
        tcp6(e.client.mac, e.lb.mac, from, to, SYN, &[]),
        tcp6(e.client.mac, e.lb.mac, from, to, ACK, &[]),
        tcp6(e.client.mac, e.lb.mac, from, to, PSH_ACK, request.as_bytes()),
        tcp6(e.client.mac, e.lb.mac, from, to, FIN_ACK, &[]),
        tcp6(e.client.mac, e.lb.mac, from, to, ACK, &[]),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::wire::Ipv6Packet;

    #[test]
    fn every_class_is_there_and_rounds_use_ports_of_their_own() {
        let cases = corpus(&DR_LAB6, 0);
        for class in Class6::ALL {
            assert!(cases.iter().filter(|c| c.class == class).count() >= 5, "{}", class.name());
        }
        assert!(cases.len() <= usize::from(PORTS_PER_ROUND), "rounds would share ports");
        let ports = |round| -> HashSet<u16> {
            (0..PORTS_PER_ROUND).map(|i| DR_LAB6.port(round, i)).collect()
        };
        assert!(ports(0).is_disjoint(&ports(1)));
        let other = corpus(&DR_LAB6, 7);
        assert_eq!(other.len(), cases.len());
        for (a, b) in cases.iter().zip(&other) {
            assert_eq!(
                (a.class, &a.what, a.verdict, a.steered),
                (b.class, &b.what, b.verdict, b.steered)
            );
        }
    }

    /// Each frame has the fault its class names, checked with the wire view (and the good
    /// ones none): a fault the corpus meant to build but did not would label nothing.
    #[test]
    fn each_frame_has_the_fault_its_class_names() {
        for case in corpus(&DR_LAB6, 0) {
            let frame = &case.frame;
            let ip = frame.get(IP..).map(Ipv6Packet::new_checked);
            let what = &case.what;
            match case.class {
                Class6::Truncated => {
                    assert!(frame.len() < L4 || matches!(ip, Some(Err(_))), "{what}: not cut short")
                }
                Class6::Version => assert_ne!(frame[IP] >> 4, 6, "{what}"),
                Class6::ExtChain => {
                    assert!(
                        [HOP_BY_HOP, ROUTING, DEST_OPTIONS].contains(&frame[NEXT_HEADER]),
                        "{what}: no extension header first"
                    );
                    if let Some(Ok(ip)) = &ip {
                        assert!(
                            ip.upper_layer().is_err()
                                || case.what.contains("well-formed")
                                || case.what.contains("no next header")
                                || case.what.contains("segments left")
                                || case.what.contains("fragment"),
                            "{what}: the chain ends"
                        );
                    }
                }
                Class6::Fragment => {
                    let chain = (frame[NEXT_HEADER], frame[L4]);
                    assert_eq!(chain, (HOP_BY_HOP, FRAGMENT_HEADER), "{what}: not a fragment");
                }
                Class6::PayloadLen => {
                    let claimed = usize::from(payload_len(frame));
                    assert_ne!(claimed, frame.len() - L4, "{what}: the payload length agrees");
                }
            }
            if case.verdict == FORWARDED {
                let Some(Ok(ip)) = ip else { panic!("{what}: forwarded, but not whole") };
                let upper = ip.upper_layer().map(|u| u.protocol);
                assert!(matches!(upper, Ok(6 | 17)), "{what}: {upper:?}");
            }
        }
    }

    #[test]
    fn good_flows_are_whole_ipv6_segments_to_the_vip() {
        for udp in [false, true] {
            for frame in good_flow(&DR_LAB6, 50000, udp) {
                let ip = Ipv6Packet::new_checked(&frame[IP..]).expect("whole");
                assert_eq!(ip.dst_addr(), DR_LAB6.vip);
                assert_eq!(usize::from(ip.payload_len()), frame.len() - L4);
            }
        }
    }
}
