//! In-place rewrites of an IPv6 frame: NAT/FullNAT address and port translation with the
//! hop limit of a routed packet, ICMPv6 echo replies, and the translation of an ICMPv6 error
//! (its quoted packet and its own checksum).
//!
//! Invariants: the frame keeps its length. The frames rewritten here are ones the IPv6
//! checks took ([`super::parse::check`]): the TCP/UDP header is where they found it (at
//! [`L4`], or after the extension headers, which are never touched: none is in a checksum),
//! and so is a quoted one ([`super::parse::quoted_transport`]); a frame too short for what
//! a rewrite touches is left alone.
//! IPv6 has no header checksum: an address change patches the checksums whose
//! pseudo-header covers it (TCP, UDP, ICMPv6), incrementally (RFC 1624), each once per
//! packet for all its changes; the hop limit is in no checksum. A UDP checksum is never
//! left 0 (RFC 8200 §8.1: 0 is invalid in IPv6): a sum that comes out as 0 is written
//! 0xffff, and a received 0 is patched as a number like any other (the receiver drops that
//! packet anyway, as it would have dropped it untranslated). NAT and FullNAT are routing
//! hops: the packets they forward leave with their hop limit one less, and one that arrives
//! with 0 or 1 is refused here (the caller drops it as `ttl_exceeded`). DR never calls
//! these: an L2 forward.

use std::net::Ipv6Addr;
use std::ops::Range;

use crate::flow::Proto;
use crate::wire::checksum::{self, Delta};
use crate::wire::icmpv6::icmpv6_type;

use super::parse::{L4, at};

/// Offsets in a TCP or UDP header.
mod segment {
    pub const PORTS: usize = 0;
    pub const UDP_CHECKSUM: usize = 6;
    pub const TCP_CHECKSUM: usize = 16;
}

/// Where the checksum of a `proto` header is, from its start.
#[inline]
fn checksum_offset(proto: Proto) -> usize {
    match proto {
        Proto::Tcp => segment::TCP_CHECKSUM,
        Proto::Udp => segment::UDP_CHECKSUM,
    }
}

/// The hop limit a packet xlb answers itself leaves with (echo replies), as IPv4's TTL.
const REPLY_HOP_LIMIT: u8 = 64;

#[inline]
fn read_addr(bytes: &[u8], offset: usize) -> Ipv6Addr {
    let mut octets = [0; 16];
    if let Some(field) = bytes.get(offset..offset + 16) {
        octets.copy_from_slice(field);
    }
    Ipv6Addr::from(octets)
}

#[inline]
fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    bytes.get(offset..offset + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

#[inline]
fn write_u16(bytes: &mut [u8], offset: usize, value: u16) {
    if let Some(field) = bytes.get_mut(offset..offset + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
}

/// Writes `new` at `offset` where it differs from what is there, and adds the change to
/// `delta`.
#[inline]
fn set_addr(bytes: &mut [u8], offset: usize, new: Ipv6Addr, delta: Delta) -> Delta {
    let old = read_addr(bytes, offset);
    if old == new {
        return delta;
    }
    if let Some(field) = bytes.get_mut(offset..offset + 16) {
        field.copy_from_slice(&new.octets());
    }
    delta.addr_v6(old, new)
}

/// Sets the two ports at `offset` and adds their change to `delta`.
#[inline]
fn set_ports(bytes: &mut [u8], offset: usize, src: u16, dst: u16, delta: Delta) -> Delta {
    let (old_src, old_dst) = (read_u16(bytes, offset), read_u16(bytes, offset + 2));
    write_u16(bytes, offset, src);
    write_u16(bytes, offset + 2, dst);
    delta.u16(old_src, src).u16(old_dst, dst)
}

/// `checksum` updated by `delta` for `proto`: a UDP checksum of IPv6 is never 0.
#[inline]
fn patched(proto: Proto, checksum: u16, delta: Delta) -> u16 {
    match (proto, delta.apply(checksum)) {
        (Proto::Udp, 0) => 0xffff,
        (_, new) => new,
    }
}

/// Decrements the hop limit of the IPv6 packet in `frame` as a router does. False, and the
/// frame untouched, if it is 0 or 1: the packet expires here.
#[inline]
pub(in crate::dataplane::pipeline) fn decrement_hop_limit(frame: &mut [u8]) -> bool {
    match frame.get_mut(at::HOP_LIMIT) {
        Some(hop_limit) if *hop_limit <= 1 => false,
        Some(hop_limit) => {
            *hop_limit -= 1;
            true
        }
        None => true,
    }
}

/// What NAT and FullNAT do to a later fragment of an IPv6 datagram they forward
/// (`fragments`): the hop limit one less and the addresses set to `src` and `dst`; nothing
/// after the fixed header (a later fragment has no ports, and the L4 checksum, in the first
/// fragment, was updated there; IPv6 has no header checksum). False, and the frame
/// untouched, if the hop limit is 0 or 1.
pub(in crate::dataplane::pipeline) fn route_addresses6(
    frame: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> bool {
    if !decrement_hop_limit(frame) {
        return false;
    }
    for (offset, addr) in [(at::SRC_ADDR, src), (at::DST_ADDR, dst)] {
        if let Some(field) = frame.get_mut(offset..offset + 16) {
            field.copy_from_slice(&addr.octets());
        }
    }
    true
}

/// What NAT and FullNAT do to an IPv6 packet they forward, its TCP/UDP header at `l4` in
/// the frame: the hop limit one less, then source and destination (address and port) set
/// to `src` and `dst`, the TCP or UDP checksum patched once for all of it (the addresses
/// are in its pseudo-header). False, and the frame untouched, if the hop limit is 0 or 1;
/// the frame untouched too if it cannot hold a fixed header before `l4` and the TCP/UDP
/// header's ports and checksum after it.
#[inline]
pub(in crate::dataplane::pipeline) fn route_transport(
    frame: &mut [u8],
    proto: Proto,
    l4: usize,
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
) -> bool {
    let octets = [src.0.octets(), dst.0.octets()];
    let chunk = |i: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&octets[i / 2][8 * (i % 2)..8 * (i % 2) + 8]);
        u64::from_ne_bytes(bytes)
    };
    let ports = (u32::from(src.1) << 16 | u32::from(dst.1)).to_be();
    route_wire(frame, proto, l4, ([chunk(0), chunk(1), chunk(2), chunk(3)], ports, None))
}

/// [`route_transport`] of a packet without extension headers (its TCP/UDP header at
/// [`L4`]), inlined into the settled hit, the new addresses and ports given as they are
/// written (`Words6::translated_wire`: the 32 address bytes as four `u64::from_ne_bytes`
/// chunks, the four port bytes as one `u32::from_ne_bytes`), and `address_change`, the
/// change from the addresses the packet carries to `addrs` (`Words6::address_change`,
/// stored with the flow: the packet's addresses are its key's), so the old addresses are
/// neither read nor summed.
#[inline(always)]
pub(in crate::dataplane::pipeline) fn route_settled(
    frame: &mut [u8],
    proto: Proto,
    addrs: [u64; 4],
    ports: u32,
    address_change: Delta,
) -> bool {
    route_wire(frame, proto, L4, (addrs, ports, Some(address_change)))
}

/// The new addresses and ports as they are written (see [`route_settled`]), and the change
/// of the addresses when known (None: read from the frame).
type NewWire = ([u64; 4], u32, Option<Delta>);

/// [`route_transport`] with the new addresses and ports as they are written (see
/// [`route_settled`]).
#[inline(always)]
fn route_wire(frame: &mut [u8], proto: Proto, l4: usize, new: NewWire) -> bool {
    let Some((ip, segment)) = frame.split_at_mut_checked(l4) else { return true };
    match proto {
        Proto::Tcp => route_segment::<{ segment::TCP_CHECKSUM + 2 }>(ip, segment, false, new),
        Proto::Udp => route_segment::<{ segment::UDP_CHECKSUM + 2 }>(ip, segment, true, new),
    }
}

/// [`route_wire`] on the frame split at the TCP/UDP header: `ip` (the fixed header and any
/// extension headers) and `segment`, of which the first `N` bytes (through the checksum,
/// UDP's when `udp`) are rewritten. Both are taken as fixed-size arrays first, so every
/// offset is a constant and no access is checked again. The addresses are read (unless
/// their change is given), written and summed as four 64-bit words and the ports as one 32-bit word, on words in memory
/// order (IPv4's `rewrite` explains why that writes the bytes of the network-order update),
/// changed or not: a word that stays as it is adds `~m + m`, zero in one's complement, and
/// an update's result depends only on its sum's value.
#[inline(always)]
fn route_segment<const N: usize>(
    ip: &mut [u8],
    segment: &mut [u8],
    udp: bool,
    (new_addrs, new_ports, address_change): NewWire,
) -> bool {
    let (Some(ip), Some(segment)) = (ip.first_chunk_mut::<L4>(), segment.first_chunk_mut::<N>())
    else {
        return true;
    };
    if !decrement_hop_limit(ip) {
        return false;
    }
    let mut delta = address_change.unwrap_or(Delta::NONE);
    for (i, new) in new_addrs.into_iter().enumerate() {
        let at = at::SRC_ADDR + 8 * i;
        if address_change.is_none() {
            let mut old = [0; 8];
            old.copy_from_slice(&ip[at..at + 8]);
            delta = delta.u64(u64::from_ne_bytes(old), new);
        }
        ip[at..at + 8].copy_from_slice(&new.to_ne_bytes());
    }
    let mut old_ports = [0; 4];
    old_ports.copy_from_slice(&segment[segment::PORTS..segment::PORTS + 4]);
    segment[segment::PORTS..segment::PORTS + 4].copy_from_slice(&new_ports.to_ne_bytes());
    delta = delta.u32(u32::from_ne_bytes(old_ports), new_ports);
    let checksum_at = if udp { segment::UDP_CHECKSUM } else { segment::TCP_CHECKSUM };
    let Some(field) = segment.get_mut(checksum_at..checksum_at + 2) else { return true };
    let old = u16::from_ne_bytes([field[0], field[1]]);
    // A UDP checksum of IPv6 is never 0 (0 and 0xffff are their own byte swaps).
    let new = match (udp, delta.apply(old)) {
        (true, 0) => 0xffff,
        (_, new) => new,
    };
    field.copy_from_slice(&new.to_ne_bytes());
    true
}

/// Turns the ICMPv6 echo request in `frame` (its message at `icmp`) into its reply in
/// place, as IPv4's: MACs and addresses swapped, hop limit 64, type 129, checksum patched
/// (swapping the pseudo-header's two addresses leaves its sum as it is).
pub(in crate::dataplane::pipeline) fn echo_reply(frame: &mut [u8], icmp: Range<usize>) {
    if frame.len() < L4 || icmp.start + 4 > frame.len() {
        return;
    }
    let (macs, rest) = frame.split_at_mut(12);
    let (dst_mac, src_mac) = macs.split_at_mut(6);
    dst_mac.swap_with_slice(src_mac);
    let addrs = &mut rest[at::SRC_ADDR - 12..at::DST_ADDR + 16 - 12];
    let (src, dst) = addrs.split_at_mut(16);
    src.swap_with_slice(dst);
    frame[at::HOP_LIMIT] = REPLY_HOP_LIMIT;
    let code = frame[icmp.start + 1];
    let old = u16::from_be_bytes([icmpv6_type::ECHO_REQUEST, code]);
    let new = u16::from_be_bytes([icmpv6_type::ECHO_REPLY, code]);
    frame[icmp.start] = icmpv6_type::ECHO_REPLY;
    let checksum = checksum::update_u16(read_u16(frame, icmp.start + 2), old, new);
    write_u16(frame, icmp.start + 2, checksum);
}

/// How an ICMPv6 error about a flow is translated: the outer packet's new destination
/// (and source, when the error came from the flow's peer itself), and the quoted packet's
/// new source and destination (it went the other way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) struct ErrorTranslation {
    pub outer_src: Option<Ipv6Addr>,
    pub outer_dst: Ipv6Addr,
    pub proto: Proto,
    /// Where the quoted TCP/UDP header starts in the error's message (48 with no
    /// extension headers in the quote).
    pub quoted_l4: usize,
    pub quote_src: (Ipv6Addr, u16),
    pub quote_dst: (Ipv6Addr, u16),
}

/// Translates the ICMPv6 error in `frame` (its message at `icmp`, quoting TCP or UDP at
/// `how.quoted_l4` of the message, after the quoted fixed header and its extension headers:
/// [`super::parse::quoted_transport`] took it) in place. The quoted header's addresses and
/// the quoted ports are set, the quoted TCP/UDP checksum is patched when the quote holds it,
/// and the error's own checksum is patched for every change in its message and in its
/// pseudo-header (the outer addresses). The quoted extension headers are left as they are.
/// The hop limit is the caller's ([`decrement_hop_limit`]).
pub(in crate::dataplane::pipeline) fn translate_error(
    frame: &mut [u8],
    icmp: Range<usize>,
    how: &ErrorTranslation,
) {
    let quoted_l4 = how.quoted_l4;
    if frame.len() < L4 || icmp.end > frame.len() || icmp.start + quoted_l4 + 8 > icmp.end {
        return;
    }
    // The outer addresses are only in the pseudo-header of the error's checksum.
    let mut outer = Delta::NONE;
    if let Some(src) = how.outer_src {
        outer = set_addr(frame, at::SRC_ADDR, src, outer);
    }
    outer = set_addr(frame, at::DST_ADDR, how.outer_dst, outer);
    // The quote is part of the error's message: every change in it is the message's too.
    // Its fields all sit at even offsets of the message (extension headers are multiples of
    // 8 bytes), so their words are the message's.
    let message = &mut frame[icmp.clone()];
    let quote = 8;
    let mut addrs = set_addr(message, quote + 8, how.quote_src.0, Delta::NONE);
    addrs = set_addr(message, quote + 24, how.quote_dst.0, addrs);
    let ports = set_ports(message, quoted_l4, how.quote_src.1, how.quote_dst.1, Delta::NONE);
    let mut body = addrs.and(ports);
    let checksum_at = quoted_l4 + checksum_offset(how.proto);
    if message.len() >= checksum_at + 2 {
        let old = read_u16(message, checksum_at);
        let new = patched(how.proto, old, addrs.and(ports));
        write_u16(message, checksum_at, new);
        body = body.u16(old, new);
    }
    let new = outer.and(body).apply(read_u16(message, 2));
    write_u16(message, 2, new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, ACK, Host6, PSH_ACK, routed6, with_hop_limit};
    use crate::wire::MacAddr;

    const fn v6(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)
    }
    const LB: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
    const CLIENT: Host6 = Host6::new([2, 0, 0, 0, 0, 0x20], v6(0x20));
    const RS: Host6 = Host6::new([2, 0, 0, 0, 0, 0x11], v6(0x11));
    const VIP: Ipv6Addr = v6(0x100);
    const LOCAL: Ipv6Addr = v6(0x200);

    fn segment(udp: bool, src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), payload: &[u8]) -> Vec<u8> {
        match udp {
            true => testkit::udp6(CLIENT.mac, LB, src, dst, payload),
            false => testkit::tcp6(CLIENT.mac, LB, src, dst, PSH_ACK, payload),
        }
    }

    /// Extension-header chains the rewrites are tested behind: none, hop-by-hop, and
    /// hop-by-hop, routing (segments left 0), destination options.
    fn chain(which: u8) -> Vec<(u8, Vec<u8>)> {
        let all = [
            (0, testkit::ext_header(0, 0)),
            (43, testkit::ext_header(43, 1)),
            (60, testkit::ext_header(60, 0)),
        ];
        match which {
            0 => Vec::new(),
            1 => all[..1].to_vec(),
            _ => all.to_vec(),
        }
    }

    /// `frame` with `chain` after its fixed header; and where its TCP/UDP header is then.
    fn behind(frame: Vec<u8>, chain: &[(u8, Vec<u8>)]) -> (Vec<u8>, usize) {
        let refs: Vec<(u8, &[u8])> = chain.iter().map(|(k, h)| (*k, h.as_slice())).collect();
        let len: usize = chain.iter().map(|(_, h)| h.len()).sum();
        (testkit::with_ext_headers(&frame, &refs), L4 + len)
    }

    proptest::proptest! {
        /// The incremental rewrite leaves exactly the bytes of the translated packet built
        /// with full checksums (etherparse), one hop later: any addresses and ports, TCP and
        /// UDP, source or destination kept, behind no extension header or a chain of them
        /// (left as they are); a UDP checksum is never 0.
        #[test]
        fn route_transport_is_the_translated_packet_one_hop_on(
            udp in proptest::prelude::any::<bool>(),
            addrs in proptest::prelude::any::<[u128; 4]>(),
            ports in proptest::prelude::any::<[u16; 4]>(),
            keep in 0u8..3,
            hop_limit in 2u8..=255,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            which in 0u8..3,
        ) {
            let ip = Ipv6Addr::from_bits;
            let (a, b) = ((ip(addrs[0]), ports[0]), (ip(addrs[1]), ports[1]));
            let src = if keep == 1 { a } else { (ip(addrs[2]), ports[2]) };
            let dst = if keep == 2 { b } else { (ip(addrs[3]), ports[3]) };
            let chain = chain(which);
            let (frame, l4) = behind(segment(udp, a, b, &payload), &chain);
            let mut frame = with_hop_limit(frame, hop_limit);
            let (expected, _) = behind(segment(udp, src, dst, &payload), &chain);
            let expected = with_hop_limit(expected, hop_limit - 1);
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            proptest::prop_assert!(route_transport(&mut frame, proto, l4, src, dst));
            // etherparse writes a TCP checksum that sums to 0xffff as 0xffff or 0: compare
            // the value, then the rest byte for byte.
            let at = l4 + checksum_offset(proto);
            let (got, want) = (read_u16(&frame, at), read_u16(&expected, at));
            proptest::prop_assert!(got == want || (!udp && got | want == 0xffff && got & want == 0));
            if udp {
                proptest::prop_assert_ne!(got, 0);
            }
            proptest::prop_assert_eq!(&frame[..at], &expected[..at]);
            proptest::prop_assert_eq!(&frame[at + 2..], &expected[at + 2..]);
        }
    }

    #[test]
    fn hop_limit_0_or_1_expires_untouched() {
        for hop_limit in [0, 1] {
            let frame = with_hop_limit(segment(false, (CLIENT.ip, 1), (VIP, 80), b""), hop_limit);
            let mut rewritten = frame.clone();
            let to = (RS.ip, 8080);
            assert!(!route_transport(&mut rewritten, Proto::Tcp, L4, (CLIENT.ip, 1), to));
            assert_eq!(rewritten, frame);
        }
    }

    #[test]
    fn echo_replies_swap_ends_and_patch_the_checksum() {
        let mut frame = testkit::icmpv6_echo(CLIENT.mac, LB, CLIENT.ip, VIP, 61, false, b"abc");
        let end = frame.len();
        echo_reply(&mut frame, L4..end);
        assert_eq!(frame, testkit::icmpv6_echo(LB, CLIENT.mac, VIP, CLIENT.ip, 64, true, b"abc"));
    }

    /// The three translations the pipeline makes, each checked against the error built
    /// from the already-translated packets with full checksums; the quoted packet with no
    /// extension header or a chain of them (left as they are).
    #[test]
    fn errors_are_translated_outer_and_quote() {
        let client = (CLIENT.ip, 40000);
        for (which, udp) in [0, 1, 2].into_iter().flat_map(|w| [(w, false), (w, true)]) {
            let chain = chain(which);
            let chain_len: usize = chain.iter().map(|(_, h)| h.len()).sum();
            let quoted = |src, dst| {
                let segment = match udp {
                    true => testkit::udp6(LB, RS.mac, src, dst, &[7; 64]),
                    false => testkit::tcp6(LB, RS.mac, src, dst, ACK, &[7; 64]),
                };
                behind(segment, &chain).0
            };
            let packet_too_big = |from: Host6, to: Ipv6Addr, quoted: &[u8], mac: MacAddr| {
                let quote_len = chain_len + 20;
                testkit::icmpv6_packet_too_big(from.mac, mac, from.ip, to, 1280, quoted, quote_len)
            };
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let what = format!("{proto:?} behind {chain_len} bytes of extension headers");
            // NAT: the backend says the client's packet (to it) was too big; the client is to
            // hear it from the VIP about a packet to the VIP.
            let mut frame = packet_too_big(RS, CLIENT.ip, &quoted(client, (RS.ip, 8080)), LB);
            let expected = packet_too_big(
                Host6 { mac: RS.mac, ip: VIP },
                CLIENT.ip,
                &quoted(client, (VIP, 80)),
                LB,
            );
            let end = frame.len();
            let how = ErrorTranslation {
                outer_src: Some(VIP),
                outer_dst: CLIENT.ip,
                proto,
                quoted_l4: 8 + 40 + chain_len,
                quote_src: client,
                quote_dst: (VIP, 80),
            };
            translate_error(&mut frame, L4..end, &how);
            assert_eq!(frame, expected, "nat, {what}");
            // FullNAT: about the packet from the local address:port; to the client now.
            let mut frame = packet_too_big(RS, LOCAL, &quoted((LOCAL, 2000), (RS.ip, 8080)), LB);
            translate_error(&mut frame, L4..end, &how);
            assert_eq!(frame, expected, "fullnat, {what}");
            // A router's address is left as it is; the destination still changes.
            let router = Host6 { mac: RS.mac, ip: v6(1) };
            let mut frame =
                packet_too_big(router, LOCAL, &quoted((LOCAL, 2000), (RS.ip, 8080)), LB);
            let how = ErrorTranslation { outer_src: None, ..how };
            translate_error(&mut frame, L4..end, &how);
            let expected = packet_too_big(router, CLIENT.ip, &quoted(client, (VIP, 80)), LB);
            assert_eq!(frame, expected, "from a router, {what}");
        }
        // One hop on (NAT): the hop limit is the only other change.
        let tcp = |src, dst| testkit::tcp6(LB, RS.mac, src, dst, ACK, &[7; 64]);
        let packet_too_big = |quoted: &[u8]| {
            testkit::icmpv6_packet_too_big(RS.mac, LB, RS.ip, CLIENT.ip, 1280, quoted, 20)
        };
        let mut frame = packet_too_big(&tcp(client, (RS.ip, 8080)));
        assert!(decrement_hop_limit(&mut frame));
        assert_eq!(frame, routed6(packet_too_big(&tcp(client, (RS.ip, 8080)))));
    }
}
