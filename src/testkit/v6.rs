//! IPv6 frame builders (issue 12), built with `etherparse` like the IPv4 ones: TCP and UDP
//! segments, ICMPv6 echo and errors, and NDP neighbour solicitations and advertisements.
//!
//! Every builder writes a whole Ethernet frame with checksums computed in full (the ICMPv6
//! and transport checksums over the IPv6 pseudo-header), hop limit 64 unless a builder takes
//! one.

use std::net::Ipv6Addr;

use etherparse::{Icmpv6Type, PacketBuilder, icmpv6::DestUnreachableCode};

use super::{Flags, write_segment};
use crate::wire::MacAddr;

/// The offset of the hop limit in an Ethernet frame carrying IPv6.
const HOP_LIMIT_AT: usize = 14 + 7;

/// One end of an IPv6 TCP or UDP packet: MAC and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host6 {
    pub mac: MacAddr,
    pub ip: Ipv6Addr,
}

impl Host6 {
    pub const fn new(mac: [u8; 6], ip: Ipv6Addr) -> Host6 {
        Host6 { mac: MacAddr(mac), ip }
    }
}

/// A TCP segment in IPv6 in an Ethernet frame, L2 from `src_mac` to `dst_mac`.
pub fn tcp6(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 64240);
    write_segment(builder, flags, payload)
}

/// A UDP datagram in IPv6 in an Ethernet frame.
pub fn udp6(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("writing to a Vec cannot fail");
    frame
}

/// `frame` (Ethernet, IPv6) with hop limit `hop_limit` (IPv6 has no header checksum, and
/// the hop limit is not in the pseudo-header: nothing else changes).
pub fn with_hop_limit(mut frame: Vec<u8>, hop_limit: u8) -> Vec<u8> {
    frame[HOP_LIMIT_AT] = hop_limit;
    frame
}

/// `frame` (Ethernet, IPv6) as a router forwards it: hop limit one less.
pub fn routed6(frame: Vec<u8>) -> Vec<u8> {
    let hop_limit = frame[HOP_LIMIT_AT];
    with_hop_limit(frame, hop_limit - 1)
}

/// The offsets of the next-header and payload-length fields, and of what follows the fixed
/// header, in an Ethernet frame carrying IPv6.
const NEXT_HEADER_AT: usize = 14 + 6;
const PAYLOAD_LEN_AT: usize = 14 + 4;
const UPPER_AT: usize = 14 + 40;

/// An extension header of `kind` with `len` as its length field (`(len + 1) * 8` bytes):
/// for hop-by-hop and destination options one PadN option over the rest (RFC 8200 §4.2),
/// for a routing header type 0 with segments left 0 (then zeros). Its next-header byte is
/// [`with_ext_headers`]'s to set.
pub fn ext_header(kind: u8, len: u8) -> Vec<u8> {
    let size = (usize::from(len) + 1) * 8;
    let mut header = vec![0u8; size];
    header[1] = len;
    if kind != 43 {
        header[2] = 1;
        header[3] = (size - 4) as u8;
    }
    header
}

/// `frame` (Ethernet, IPv6) with `chain` — (next-header number, whole header: a multiple of
/// 8 bytes, its first byte overwritten) — inserted after the fixed header in order, each
/// header's next-header byte naming the one after it and the last one's the frame's upper
/// layer; the payload length grows to match. The upper layer's checksum stays valid: its
/// pseudo-header (addresses, upper-layer length, protocol) is unchanged.
pub fn with_ext_headers(frame: &[u8], chain: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = frame[..UPPER_AT].to_vec();
    let mut next_at = NEXT_HEADER_AT;
    for (kind, header) in chain {
        assert!(header.len() >= 8 && header.len() % 8 == 0, "a whole extension header");
        let upper = out[next_at];
        out[next_at] = *kind;
        next_at = out.len();
        out.extend_from_slice(header);
        out[next_at] = upper;
    }
    let added = out.len() - UPPER_AT;
    out.extend_from_slice(&frame[UPPER_AT..]);
    let at = PAYLOAD_LEN_AT..PAYLOAD_LEN_AT + 2;
    let len = u16::from_be_bytes([out[at.start], out[at.start + 1]]) + added as u16;
    out[at].copy_from_slice(&len.to_be_bytes());
    out
}

/// The IPv6 packet of `frame` (with no extension headers) cut into fragments (RFC 8200
/// §4.5) of `chunk` bytes of its upper layer (a multiple of 8), identification `ident`:
/// each a whole frame of the fixed header, `before` (the per-fragment headers, as
/// [`with_ext_headers`] takes them), a fragment header whose next header is the upper
/// layer's, and its piece; the payload length of each.
pub fn fragmented6(frame: &[u8], before: &[(u8, &[u8])], ident: u32, chunk: usize) -> Vec<Vec<u8>> {
    assert!(chunk > 0 && chunk.is_multiple_of(8), "fragments are cut at multiples of 8 bytes");
    let upper = &frame[UPPER_AT..];
    let count = upper.len().div_ceil(chunk);
    upper
        .chunks(chunk)
        .enumerate()
        .map(|(index, piece)| {
            let more = u16::from(index + 1 < count);
            let offset_flags = ((index * chunk / 8) as u16) << 3 | more;
            let mut header = [0u8; 8];
            header[2..4].copy_from_slice(&offset_flags.to_be_bytes());
            header[4..].copy_from_slice(&ident.to_be_bytes());
            let mut chain = before.to_vec();
            chain.push((44, &header));
            let mut fragment = with_ext_headers(&frame[..UPPER_AT], &chain);
            fragment.extend_from_slice(piece);
            let len = (fragment.len() - UPPER_AT) as u16;
            fragment[PAYLOAD_LEN_AT..PAYLOAD_LEN_AT + 2].copy_from_slice(&len.to_be_bytes());
            fragment
        })
        .collect()
}

/// Writes an ICMPv6 message of `icmp_type` from `src` to `dst` with `payload`.
fn icmpv6(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp_type: Icmpv6Type,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), hop_limit)
        .icmpv6(icmp_type);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("writing to a Vec cannot fail");
    frame
}

/// An ICMPv6 echo request (`reply` false) or reply, id 0x1234, sequence 7.
pub fn icmpv6_echo(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    reply: bool,
    payload: &[u8],
) -> Vec<u8> {
    let echo = etherparse::IcmpEchoHeader { id: 0x1234, seq: 7 };
    let icmp_type = if reply { Icmpv6Type::EchoReply(echo) } else { Icmpv6Type::EchoRequest(echo) };
    icmpv6(src_mac, dst_mac, src, dst, hop_limit, icmp_type, payload)
}

/// The IPv6 packet inside `quoted_frame` (an Ethernet frame), cut to its fixed header and
/// first `quote_l4_bytes` bytes after it.
fn quote(quoted_frame: &[u8], quote_l4_bytes: usize) -> &[u8] {
    let ip = &quoted_frame[14..];
    &ip[..(40 + quote_l4_bytes).min(ip.len())]
}

/// An ICMPv6 Packet Too Big from `src` to `dst` quoting the IPv6 packet inside
/// `quoted_frame`: its fixed header and first `quote_l4_bytes` bytes.
pub fn icmpv6_packet_too_big(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    mtu: u32,
    quoted_frame: &[u8],
    quote_l4_bytes: usize,
) -> Vec<u8> {
    let quoted = quote(quoted_frame, quote_l4_bytes);
    icmpv6(src_mac, dst_mac, src, dst, 64, Icmpv6Type::PacketTooBig { mtu }, quoted)
}

/// An ICMPv6 port unreachable from `src` to `dst` quoting `quoted_frame`'s IPv6 header and
/// the first 8 bytes after it.
pub fn icmpv6_port_unreachable(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    quoted_frame: &[u8],
) -> Vec<u8> {
    let quoted = quote(quoted_frame, 8);
    let icmp_type = Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port);
    icmpv6(src_mac, dst_mac, src, dst, 64, icmp_type, quoted)
}

/// The solicited-node multicast address of `ip` (RFC 4291 2.7.1): `ff02::1:ffXX:XXXX` with
/// the low 24 bits of `ip`.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let low = ip.to_bits() & 0x00ff_ffff;
    Ipv6Addr::from_bits(0xff02_0000_0000_0000_0000_0001_ff00_0000 | low)
}

/// The Ethernet multicast MAC of an IPv6 multicast address (RFC 2464 7): `33:33` and its
/// low 32 bits.
pub fn multicast_mac(ip: Ipv6Addr) -> MacAddr {
    let [.., a, b, c, d] = ip.octets();
    MacAddr([0x33, 0x33, a, b, c, d])
}

/// A neighbour solicitation for `target` from `src_ip` (`::` for duplicate address
/// detection, which carries no source link-layer option) with `src_mac`, to `dst_ip`: the
/// target's solicited-node group (`None`, sent to its multicast MAC) or a unicast address
/// and MAC (`Some`, as a neighbour confirming reachability sends it). Hop limit 255, as
/// RFC 4861 requires.
pub fn neighbor_solicitation(
    src_mac: MacAddr,
    src_ip: Ipv6Addr,
    target: Ipv6Addr,
    unicast_to: Option<(Ipv6Addr, MacAddr)>,
) -> Vec<u8> {
    let (dst_ip, dst_mac) = unicast_to.unwrap_or_else(|| {
        let group = solicited_node(target);
        (group, multicast_mac(group))
    });
    let mut body = target.octets().to_vec();
    if !src_ip.is_unspecified() {
        // Option 1, source link-layer address, 8 bytes long.
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&src_mac.0);
    }
    let icmp_type = Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] };
    icmpv6(src_mac, dst_mac, src_ip, dst_ip, 255, icmp_type, &body)
}

/// A neighbour advertisement for `target` with its link-layer address `target_mac` (option
/// 2), from `src` to `dst`, the solicited flag as given, the override flag set, the router
/// flag clear. Hop limit 255.
pub fn neighbor_advertisement(
    src: (MacAddr, Ipv6Addr),
    dst: (MacAddr, Ipv6Addr),
    target: Ipv6Addr,
    target_mac: MacAddr,
    solicited: bool,
) -> Vec<u8> {
    let flags = if solicited { 0x60 } else { 0x20 };
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&target_mac.0);
    let icmp_type = Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8: [flags, 0, 0, 0] };
    icmpv6(src.0, dst.0, src.1, dst.1, 255, icmp_type, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x20);
    const B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);
    const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x20]);
    const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);

    #[test]
    fn segments_parse_back_with_their_addresses_and_ports() {
        let frame = tcp6(MAC_A, MAC_B, (A, 40000), (B, 80), super::super::SYN, b"hi");
        let packet = SlicedPacket::from_ethernet(&frame).expect("parses");
        let Some(NetSlice::Ipv6(ip)) = packet.net else { panic!("not IPv6") };
        assert_eq!(ip.header().source_addr(), A);
        assert_eq!(ip.header().destination_addr(), B);
        let Some(TransportSlice::Tcp(tcp)) = packet.transport else { panic!("not TCP") };
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (40000, 80));
        let routed = routed6(frame.clone());
        assert_eq!(routed[HOP_LIMIT_AT], 63);
        assert_eq!(routed[..HOP_LIMIT_AT], frame[..HOP_LIMIT_AT]);
    }

    /// The chain lands between the fixed header and the upper layer, etherparse reads it
    /// through to the UDP datagram, and the datagram's checksum is still right.
    #[test]
    fn extension_headers_go_between_the_fixed_header_and_the_upper_layer() {
        let frame = udp6(MAC_A, MAC_B, (A, 5000), (B, 53), b"query");
        let (hop, routing, dest) = (ext_header(0, 0), ext_header(43, 0), ext_header(60, 1));
        let chain: [(u8, &[u8]); 3] = [(0, &hop), (43, &routing), (60, &dest)];
        let chained = with_ext_headers(&frame, &chain);
        assert_eq!(chained.len(), frame.len() + 32);
        assert_eq!(
            (chained[NEXT_HEADER_AT], chained[UPPER_AT], chained[UPPER_AT + 8]),
            (0, 43, 60)
        );
        assert_eq!(chained[UPPER_AT + 16], 17, "the last header names the upper layer");
        assert_eq!(chained[UPPER_AT + 8 + 3], 0, "segments left 0");
        let packet = SlicedPacket::from_ethernet(&chained).expect("parses");
        let Some(NetSlice::Ipv6(ip)) = packet.net else { panic!("not IPv6") };
        let ip = ip.header().to_header();
        assert_eq!(usize::from(ip.payload_length), chained.len() - UPPER_AT);
        let Some(TransportSlice::Udp(udp)) = packet.transport else { panic!("not UDP") };
        assert_eq!((udp.source_port(), udp.destination_port()), (5000, 53));
        let checksum = udp.to_header().calc_checksum_ipv6(&ip, udp.payload()).unwrap();
        assert_eq!(udp.checksum(), checksum);
    }

    #[test]
    fn solicitations_go_to_the_solicited_node_group_with_their_source_option() {
        let group = solicited_node(B);
        assert_eq!(group, "ff02::1:ff00:100".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(group), MacAddr([0x33, 0x33, 0xff, 0, 1, 0]));
        let frame = neighbor_solicitation(MAC_A, A, B, None);
        assert_eq!(frame[..6], multicast_mac(group).0);
        assert_eq!(frame[HOP_LIMIT_AT], 255);
        // Ethernet 14 + IPv6 40 + ICMPv6 8 + target 16 + option 8.
        assert_eq!(frame.len(), 86);
        assert_eq!(frame[54], 135);
        assert_eq!(frame[78..86], [1, 1, 2, 0, 0, 0, 0, 0x20]);
        let probe = neighbor_solicitation(MAC_A, Ipv6Addr::UNSPECIFIED, B, None);
        assert_eq!(probe.len(), 78);
        let advert = neighbor_advertisement((MAC_B, B), (MAC_A, A), B, MAC_B, true);
        assert_eq!((advert[54], advert[58]), (136, 0x60));
        assert_eq!(advert[78..86], [2, 1, 2, 0, 0, 0, 0, 0x10]);
    }
}
