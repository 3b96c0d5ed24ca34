//! In-place rewrites of a frame: NAT/FullNAT address and port translation, the TTL of a
//! routed packet, the packet quoted in an ICMP error, and echo replies.
//!
//! Invariants: the frame keeps its length; checksums are updated incrementally (RFC 1624),
//! each once per packet for all its changes, on 16-bit words in memory order (the same
//! bytes as the update in network order). NAT and FullNAT are routing hops: every packet
//! they forward leaves with its TTL one less, and one that arrives with TTL 0 or 1 is
//! refused here (the caller drops it as `ttl_exceeded`). DR never calls these: it is an L2
//! forward.

use std::net::Ipv4Addr;

use crate::flow::Proto;
use crate::wire::checksum;
use crate::wire::icmp::icmp_type;
use crate::wire::{EthernetFrame, IcmpPacket, Ipv4Packet};

use super::ETH_LEN;

/// Decrements the TTL of the IPv4 packet in `frame` as a router does, patching the header
/// checksum incrementally (RFC 1624, on the (TTL, protocol) word in memory order as
/// [`rewrite_transport`] explains). False, and the frame untouched, if the TTL is 0 or 1:
/// the packet expires here. (A frame too short to hold a header never gets here: it was
/// refused on the way in; it is left alone.)
#[inline]
pub(super) fn decrement_ttl(frame: &mut [u8]) -> bool {
    let Some(header) = frame.get_mut(ETH_LEN..ETH_LEN + 20) else {
        return true;
    };
    let ttl = header[8];
    if ttl <= 1 {
        return false;
    }
    let old = u16::from_ne_bytes([header[8], header[9]]);
    header[8] = ttl - 1;
    let new = u16::from_ne_bytes([header[8], header[9]]);
    let checksum = u16::from_ne_bytes([header[10], header[11]]);
    let patched = checksum::Delta::NONE.u16(old, new).apply(checksum);
    header[10..12].copy_from_slice(&patched.to_ne_bytes());
    true
}

/// Rewrites source and destination of the TCP/UDP packet in `frame` where they differ,
/// updating the IPv4 and L4 checksums incrementally (RFC 1624), one [`checksum::Delta`] per
/// checksum. The TTL is left as it is.
///
/// The checksum arithmetic runs on 16-bit words as they sit in memory (the machine's byte
/// order) instead of swapping each to network order and back: a one's-complement sum of
/// byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)), and the only special values
/// an update knows, 0 and 0xffff, are their own swaps. So the bytes written are exactly
/// those of the same update done in network order (`reference_rewrite_transport` in the
/// tests).
#[cfg_attr(not(test), allow(dead_code))]
#[inline]
fn rewrite_transport(frame: &mut [u8], proto: Proto, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) {
    rewrite_plain(frame, proto, src, dst, false);
}

/// What NAT and FullNAT do to a packet they forward, as a router does: the TTL one less and
/// [`rewrite_transport`], with each checksum patched once for all of it. False, and the
/// frame untouched, if the TTL is 0 or 1: the packet expires here. Out of line: the general
/// way's callers (a new flow's first packet among them) keep their code small; the settled
/// hit inlines [`route_settled`].
#[inline(never)]
pub(super) fn route_transport(
    frame: &mut [u8],
    proto: Proto,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> bool {
    rewrite_plain(frame, proto, src, dst, true)
}

/// [`route_transport`] inlined into the settled hit, the new addresses and ports given as
/// they are written (`Words4::translated_wire`: the eight address bytes and the four port
/// bytes, each read with `from_ne_bytes`), and `address_change`, the change from the
/// addresses the packet carries to `addrs` (`Words4::address_change`, stored with the flow:
/// the packet's addresses are its key's), so the old addresses are neither read nor summed.
#[inline(always)]
pub(super) fn route_settled(
    frame: &mut [u8],
    proto: Proto,
    addrs: u64,
    ports: u32,
    address_change: checksum::Delta,
) -> bool {
    rewrite_wire(frame, proto, (addrs, ports, Some(address_change)), true)
}

/// The new addresses and ports as they are written (see [`route_settled`]), and the change
/// of the addresses when known (None: read from the frame).
type NewWire = (u64, u32, Option<checksum::Delta>);

/// What NAT and FullNAT do to a later fragment of a datagram they forward (`fragments`): the
/// TTL one less and the addresses set to `src` and `dst`, the IPv4 checksum patched once for
/// all of it; nothing past the IPv4 header (a later fragment has no ports, and the L4
/// checksum, in the first fragment, was updated there). False, and the frame untouched, if
/// the TTL is 0 or 1.
pub(super) fn route_addresses(frame: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    let Some(head) = frame.get_mut(..plain::PORTS) else {
        return true;
    };
    let ttl = head[plain::TTL];
    if ttl <= 1 {
        return false;
    }
    let half = |head: &[u8], at: usize| u16::from_ne_bytes([head[at], head[at + 1]]);
    let old = half(head, plain::TTL);
    head[plain::TTL] = ttl - 1;
    let mut ip = checksum::Delta::NONE.u16(old, half(head, plain::TTL));
    for (at, addr) in [(plain::SRC_ADDR, src), (plain::DST_ADDR, dst)] {
        let old = u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        head[at..at + 4].copy_from_slice(&addr.octets());
        ip = ip.u32(old, u32::from_ne_bytes(addr.octets()));
    }
    let patched = ip.apply(half(head, plain::IP_CHECKSUM));
    head[plain::IP_CHECKSUM..plain::IP_CHECKSUM + 2].copy_from_slice(&patched.to_ne_bytes());
    true
}

/// Offsets in a frame of IPv4 without options (every packet [`CoreState::transport`] takes:
/// one with options is dropped before it) and of the TCP or UDP header after it.
///
/// [`CoreState::transport`]: super::CoreState::transport
mod plain {
    use super::ETH_LEN;
    pub const TTL: usize = ETH_LEN + 8;
    pub const IP_CHECKSUM: usize = ETH_LEN + 10;
    pub const SRC_ADDR: usize = ETH_LEN + 12;
    pub const DST_ADDR: usize = ETH_LEN + 16;
    pub const PORTS: usize = ETH_LEN + 20;
    pub const UDP_CHECKSUM: usize = PORTS + 6;
    pub const TCP_CHECKSUM: usize = PORTS + 16;
}

/// [`rewrite_transport`], and the TTL's decrement (see [`route_transport`]) when `route`, at
/// the fixed offsets of IPv4 without options. The frame is one [`CoreState::transport`]
/// took, so it holds the whole TCP or UDP header; a frame too short for one (never seen
/// here) is left alone. Inlined into the forwarding path: the call cost NAT and FullNAT a
/// tenth of their hit path's instructions.
///
/// [`CoreState::transport`]: super::CoreState::transport
#[inline(always)]
fn rewrite_plain(
    frame: &mut [u8],
    proto: Proto,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    route: bool,
) -> bool {
    let mut addrs = [0; 8];
    addrs[..4].copy_from_slice(&src.0.octets());
    addrs[4..].copy_from_slice(&dst.0.octets());
    let ports = u32::from(src.1) << 16 | u32::from(dst.1);
    rewrite_wire(frame, proto, (u64::from_ne_bytes(addrs), ports.to_be(), None), route)
}

/// [`rewrite_plain`] with the new addresses and ports as they are written, and their change
/// when known (see [`route_settled`]).
#[inline(always)]
fn rewrite_wire(frame: &mut [u8], proto: Proto, new: NewWire, route: bool) -> bool {
    match proto {
        Proto::Tcp => rewrite_fixed::<{ plain::TCP_CHECKSUM + 2 }>(
            frame,
            plain::TCP_CHECKSUM,
            false,
            new,
            route,
        ),
        Proto::Udp => rewrite_fixed::<{ plain::UDP_CHECKSUM + 2 }>(
            frame,
            plain::UDP_CHECKSUM,
            true,
            new,
            route,
        ),
    }
}

/// [`rewrite_plain`] on the frame's first `N` bytes, through the L4 checksum at `l4_checksum`
/// (UDP's when `udp`): every offset a constant, no access checked again. The addresses are
/// written and summed as one 64-bit word, the ports as one 32-bit word, changed or not: a
/// word that stays as it is adds `~m + m`, which is zero in one's-complement arithmetic,
/// and an update's result depends only on its sum's value (RFC 1624's eqn. 3 and
/// [`checksum::Delta`] map either zero to the same checksum), so the bytes are those of the
/// update of the changed words alone (`reference_rewrite_transport` in the tests). The old
/// addresses are not read when their change is given (the settled hit's).
#[inline(always)]
fn rewrite_fixed<const N: usize>(
    frame: &mut [u8],
    l4_checksum: usize,
    udp: bool,
    (new_addrs, new_ports, address_change): NewWire,
    route: bool,
) -> bool {
    let Some(head) = frame.first_chunk_mut::<N>() else {
        return true;
    };
    let mut ip = checksum::Delta::NONE;
    if route {
        let ttl = head[plain::TTL];
        if ttl <= 1 {
            return false;
        }
        // The TTL shares its 16-bit word with the protocol: that word, in memory order,
        // goes down by the value of a 1 in its first byte (no borrow: the TTL is at least 2).
        head[plain::TTL] = ttl - 1;
        ip = ip.u16(u16::from_ne_bytes([1, 0]), 0);
    }
    let addrs_at = plain::SRC_ADDR..plain::DST_ADDR + 4;
    let old_addrs = || {
        let mut old = [0; 8];
        old.copy_from_slice(&head[addrs_at.clone()]);
        u64::from_ne_bytes(old)
    };
    // The addresses are in the pseudo-header the L4 checksum covers too.
    let addrs = address_change.unwrap_or_else(|| checksum::Delta::NONE.u64(old_addrs(), new_addrs));
    // A routed packet's header changes (its TTL), whatever its addresses do.
    if route || old_addrs() != new_addrs {
        head[addrs_at].copy_from_slice(&new_addrs.to_ne_bytes());
        let old = u16::from_ne_bytes([head[plain::IP_CHECKSUM], head[plain::IP_CHECKSUM + 1]]);
        let patched = ip.and(addrs).apply(old);
        head[plain::IP_CHECKSUM..plain::IP_CHECKSUM + 2].copy_from_slice(&patched.to_ne_bytes());
    }
    let ports_at = plain::PORTS..plain::PORTS + 4;
    let mut old_ports = [0; 4];
    old_ports.copy_from_slice(&head[ports_at.clone()]);
    head[ports_at].copy_from_slice(&new_ports.to_ne_bytes());
    // One update for all the changes: the same bits as one update per change in a row.
    let l4 = addrs.u32(u32::from_ne_bytes(old_ports), new_ports);
    if let Some(field) = head.get_mut(l4_checksum..l4_checksum + 2) {
        let old = u16::from_ne_bytes([field[0], field[1]]);
        let new = if udp { l4.apply_udp(old) } else { l4.apply(old) };
        field.copy_from_slice(&new.to_ne_bytes());
    }
    true
}

/// Rewrites the packet quoted in an ICMP error: addresses (with the quoted header's checksum)
/// and ports, and the quoted L4 checksum when enough of it is there.
pub(super) fn rewrite_quote(
    quote: &mut [u8],
    proto: Proto,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) {
    let header_len = usize::from(quote[0] & 0x0f) * 4;
    let mut ip = Ipv4Packet::new_unchecked(&mut *quote);
    let old_src = ip.src_addr();
    let old_dst = ip.dst_addr();
    if old_src != src.0 {
        ip.rewrite_src_addr(src.0);
    }
    if old_dst != dst.0 {
        ip.rewrite_dst_addr(dst.0);
    }
    let segment = &mut quote[header_len..];
    let memory = |addr: Ipv4Addr| u32::from_ne_bytes(addr.octets());
    let addrs = checksum::Delta::NONE
        .u32(memory(old_src), memory(src.0))
        .u32(memory(old_dst), memory(dst.0));
    rewrite_ports(segment, proto, addrs, src.1, dst.1);
}

/// Sets the ports of a TCP/UDP header at the start of `segment` and patches its checksum for
/// the port changes and `addrs`, the change of the addresses in its pseudo-header, summed
/// over words in memory order (see [`rewrite_transport`]). A quoted segment may be cut
/// short: its checksum is patched only when present.
#[inline]
fn rewrite_ports(
    segment: &mut [u8],
    proto: Proto,
    addrs: checksum::Delta,
    src_port: u16,
    dst_port: u16,
) {
    if segment.len() < 8 {
        return;
    }
    let Some(ports) = segment.first_chunk_mut::<4>() else {
        return;
    };
    let old_src_port = u16::from_ne_bytes([ports[0], ports[1]]);
    let old_dst_port = u16::from_ne_bytes([ports[2], ports[3]]);
    let (src_port, dst_port) = (src_port.to_be(), dst_port.to_be());
    ports[0..2].copy_from_slice(&src_port.to_ne_bytes());
    ports[2..4].copy_from_slice(&dst_port.to_ne_bytes());
    let checksum_at = match proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
    };
    let Some(field) = segment.get_mut(checksum_at..checksum_at + 2) else {
        return;
    };
    let old = u16::from_ne_bytes([field[0], field[1]]);
    // One update for all the changes: the same bits as one update per change in a row.
    let delta = addrs.u16(old_src_port, src_port).u16(old_dst_port, dst_port);
    let new = match proto {
        Proto::Tcp => delta.apply(old),
        Proto::Udp => delta.apply_udp(old),
    };
    field.copy_from_slice(&new.to_ne_bytes());
}

/// Turns an echo request into its reply in place: addresses and MACs swapped, type 0, TTL
/// reset, checksums patched.
pub(super) fn echo_reply(frame: &mut [u8], icmp_range: std::ops::Range<usize>) {
    {
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        let (src, dst) = (eth.src_addr(), eth.dst_addr());
        eth.set_src_addr(dst);
        eth.set_dst_addr(src);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        // Swapping two 16-bit-aligned words leaves the one's-complement sum unchanged.
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        let old_ttl_word = u16::from_be_bytes([ip.ttl(), ip.protocol()]);
        ip.set_ttl(64);
        let new_ttl_word = u16::from_be_bytes([64, ip.protocol()]);
        let c = checksum::update_u16(ip.checksum(), old_ttl_word, new_ttl_word);
        ip.set_checksum(c);
    }
    let mut icmp = IcmpPacket::new_unchecked(&mut frame[icmp_range]);
    let code = icmp.code();
    let old = u16::from_be_bytes([icmp_type::ECHO_REQUEST, code]);
    let new = u16::from_be_bytes([icmp_type::ECHO_REPLY, code]);
    icmp.set_msg_type(icmp_type::ECHO_REPLY);
    let c = checksum::update_u16(icmp.checksum(), old, new);
    icmp.set_checksum(c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;
    use crate::wire::ipv4::ip_proto;

    /// A TCP ACK or UDP datagram from `a` to `b` carrying `payload`: a packet to rewrite.
    fn rewrite_case(udp: bool, a: (Ipv4Addr, u16), b: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
        use crate::testkit::{self, ACK};
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        if udp {
            testkit::udp(mac, mac, a, b, payload)
        } else {
            testkit::tcp(mac, mac, a, b, ACK, payload)
        }
    }

    /// The rewrite as the RFC 1624 updates in network byte order, through the IPv4 view:
    /// the reference for [`rewrite_transport`]'s arithmetic in memory order.
    fn reference_rewrite_transport(
        frame: &mut [u8],
        proto: Proto,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
    ) {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
        let (old_src, old_dst) = (ip.src_addr(), ip.dst_addr());
        if old_src != src.0 {
            ip.rewrite_src_addr(src.0);
        }
        if old_dst != dst.0 {
            ip.rewrite_dst_addr(dst.0);
        }
        let segment = ip.payload_mut();
        let (old_src_port, old_dst_port) = (
            u16::from_be_bytes([segment[0], segment[1]]),
            u16::from_be_bytes([segment[2], segment[3]]),
        );
        segment[0..2].copy_from_slice(&src.1.to_be_bytes());
        segment[2..4].copy_from_slice(&dst.1.to_be_bytes());
        let at = if proto == Proto::Tcp { 16 } else { 6 };
        let old = u16::from_be_bytes([segment[at], segment[at + 1]]);
        let mut new = old;
        for (old_addr, new_addr) in [(old_src, src.0), (old_dst, dst.0)] {
            if old_addr != new_addr {
                new = match proto {
                    Proto::Tcp => checksum::update_addr(new, old_addr, new_addr),
                    Proto::Udp => checksum::update_udp_addr(new, old_addr, new_addr),
                };
            }
        }
        for (old_port, new_port) in [(old_src_port, src.1), (old_dst_port, dst.1)] {
            new = match proto {
                Proto::Tcp => checksum::update_u16(new, old_port, new_port),
                Proto::Udp => checksum::update_udp_u16(new, old_port, new_port),
            };
        }
        segment[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }

    proptest::proptest! {
        /// The NAT rewrite writes exactly the bytes of the same updates done one at a time
        /// in network order, and leaves checksums a full recompute agrees with: any
        /// addresses and ports (kept or changed), TCP and UDP (with and without a checksum).
        #[test]
        fn rewrite_transport_is_the_network_order_update(
            udp in proptest::prelude::any::<bool>(),
            no_udp_checksum in proptest::prelude::any::<bool>(),
            addrs in proptest::prelude::any::<[u32; 4]>(),
            ports in proptest::prelude::any::<[u16; 4]>(),
            keep in 0u8..4,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
        ) {
            let ip = Ipv4Addr::from_bits;
            let (a, b) = ((ip(addrs[0]), ports[0]), (ip(addrs[1]), ports[1]));
            let mut frame = rewrite_case(udp, a, b, &payload);
            if udp && no_udp_checksum {
                frame[ETH_LEN + 26..ETH_LEN + 28].fill(0);
            }
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            // Sometimes the source or the destination stays as it is (DNAT or SNAT alone).
            let src = if keep == 1 { a } else { (ip(addrs[2]), ports[2]) };
            let dst = if keep == 2 { b } else { (ip(addrs[3]), ports[3]) };
            let mut expected = frame.clone();
            reference_rewrite_transport(&mut expected, proto, src, dst);
            rewrite_transport(&mut frame, proto, src, dst);
            proptest::prop_assert_eq!(&frame, &expected);
            let ip_header = Ipv4Packet::new_checked(&frame[ETH_LEN..]).unwrap();
            proptest::prop_assert!(ip_header.verify_checksum());
            let segment = &frame[ETH_LEN + 20..];
            let protocol = if udp { ip_proto::UDP } else { ip_proto::TCP };
            let pseudo = checksum::pseudo_header_sum(src.0, dst.0, protocol, segment.len() as u16);
            let udp_without = udp && no_udp_checksum;
            proptest::prop_assert!(
                udp_without || checksum::fold(checksum::sum(segment, pseudo)) == 0xffff
            );
            if udp_without {
                proptest::prop_assert_eq!(&segment[6..8], &[0, 0]);
            }
        }
    }

    proptest::proptest! {
        /// The settled hit's rewrite, given the change of the addresses instead of reading
        /// them (any value of it: 0 or 0xffff for a zero), writes exactly the bytes
        /// `route_transport` writes, and refuses what it refuses.
        #[test]
        fn route_settled_with_the_change_is_route_transport(
            udp in proptest::prelude::any::<bool>(),
            ttl in 0u8..4,
            l4_checksum in proptest::option::of(proptest::prelude::any::<u16>()),
            addrs in proptest::prelude::any::<[u32; 4]>(),
            ports in proptest::prelude::any::<[u16; 4]>(),
            other_zero in proptest::prelude::any::<bool>(),
        ) {
            let ip = Ipv4Addr::from_bits;
            let (a, b) = ((ip(addrs[0]), ports[0]), (ip(addrs[1]), ports[1]));
            let mut frame = rewrite_case(udp, a, b, b"payload");
            frame[ETH_LEN + 8] = ttl;
            Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]).fill_checksum();
            let at = ETH_LEN + 20 + if udp { 6 } else { 16 };
            if let Some(checksum) = l4_checksum {
                frame[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
            }
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let (src, dst) = ((ip(addrs[2]), ports[2]), (ip(addrs[3]), ports[3]));
            let wire = |s: (Ipv4Addr, u16), d: (Ipv4Addr, u16)| {
                let mut bytes = [0; 8];
                bytes[..4].copy_from_slice(&s.0.octets());
                bytes[4..].copy_from_slice(&d.0.octets());
                u64::from_ne_bytes(bytes)
            };
            let (old, new) = (wire(a, b), wire(src, dst));
            let change = checksum::Delta::NONE.u64(old, new).folded();
            // Both representatives of a zero change update alike.
            let change = match change {
                0 | 0xffff if other_zero => !change,
                _ => change,
            };
            let new_ports = (u32::from(src.1) << 16 | u32::from(dst.1)).to_be();
            let mut expected = frame.clone();
            let forwarded = route_transport(&mut expected, proto, src, dst);
            let settled = route_settled(
                &mut frame,
                proto,
                new,
                new_ports,
                checksum::Delta::of_folded(change),
            );
            proptest::prop_assert_eq!(settled, forwarded);
            proptest::prop_assert_eq!(&frame, &expected);
        }
    }

    proptest::proptest! {
        /// NAT's one-pass TTL decrement and rewrite writes exactly the bytes of the TTL's
        /// own update followed by the rewrite's (in network order), and refuses a TTL of 0
        /// or 1 without touching the frame; any old checksums, the other zero included.
        #[test]
        fn route_transport_is_the_ttl_then_the_rewrite(
            udp in proptest::prelude::any::<bool>(),
            ttl in proptest::prelude::any::<u8>(),
            ip_checksum in proptest::option::of(proptest::prelude::any::<u16>()),
            l4_checksum in proptest::option::of(proptest::prelude::any::<u16>()),
            addrs in proptest::prelude::any::<[u32; 4]>(),
            ports in proptest::prelude::any::<[u16; 4]>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
        ) {
            let ip = Ipv4Addr::from_bits;
            let (a, b) = ((ip(addrs[0]), ports[0]), (ip(addrs[1]), ports[1]));
            let mut frame = rewrite_case(udp, a, b, &payload);
            frame[ETH_LEN + 8] = ttl;
            Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]).fill_checksum();
            if let Some(checksum) = ip_checksum {
                frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&checksum.to_be_bytes());
            }
            let at = ETH_LEN + 20 + if udp { 6 } else { 16 };
            if let Some(checksum) = l4_checksum {
                frame[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
            }
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let (src, dst) = ((ip(addrs[2]), ports[2]), (ip(addrs[3]), ports[3]));
            let mut expected = frame.clone();
            let forwarded = decrement_ttl(&mut expected);
            if forwarded {
                reference_rewrite_transport(&mut expected, proto, src, dst);
            }
            proptest::prop_assert_eq!(route_transport(&mut frame, proto, src, dst), forwarded);
            proptest::prop_assert_eq!(&frame, &expected);
        }
    }
}
