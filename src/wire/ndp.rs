//! Neighbour Discovery (RFC 4861): neighbour solicitations and advertisements, their
//! link-layer address options, and the frames xlb sends.
//!
//! NDP is IPv6's ARP, carried in ICMPv6. xlb answers solicitations for its VIPs and local
//! addresses, resolves backends and gateways with solicitations from the box's own address
//! (never a VIP), and announces VIPs with unsolicited advertisements. [`NdpPacket`] views an
//! ICMPv6 message of type 135 or 136: the 8-byte ICMPv6 header (the advertisement's R/S/O
//! flags live in its bytes 4..8), the 16-byte target address, then options.
//!
//! Options are type, length in units of 8 bytes, and data. [`NdpOptions`] walks them; an
//! option of length 0 is [`WireError::ZeroLengthOption`] (RFC 4861 §4.6: "Nodes MUST
//! silently discard an ND packet that contains an option with length zero" — it would also
//! make the walk stand still), one that runs past the message is [`WireError::Truncated`].
//! Each step advances at least 8 bytes, so the walk is bounded by the message's length.
//!
//! Not checked by `new_checked`, because they need the IPv6 header, but required by RFC 4861
//! §7.1 of whoever accepts an NDP message: [`NdpPacket::validate`] checks them (the hop limit
//! is 255, [`HOP_LIMIT`]: the message was not forwarded; the target is not multicast; a
//! solicitation from `::` goes to a solicited-node group and carries no source link-layer
//! option; an advertisement to a multicast address is not marked solicited), and
//! [`NdpPacket::verify_checksum`] the ICMPv6 checksum.
//!
//! Writers: [`write_neighbor_solicit`] and [`write_neighbor_advert`] write a whole Ethernet
//! frame (Ethernet, IPv6, ICMPv6, one link-layer option: [`FRAME_LEN`] bytes) with the
//! checksum filled in; [`solicited_node`] and [`multicast_mac`] give the addresses a
//! solicitation is sent to.
//!
//! Invariant: once [`NdpPacket::new_checked`] has returned `Ok`, the buffer holds the header
//! and the target, the type is 135 or 136 with code 0, and every option has a non-zero length
//! and lies inside the buffer, so [`NdpPacket::options`] yields no error. No accessor panics in
//! any case (see the [`wire`](super) module docs).

use std::net::Ipv6Addr;

use super::checksum;
use super::ethernet::{self, EtherType, EthernetFrame, MacAddr};
use super::icmpv6::{self, icmpv6_type};
use super::ipv4::ip_proto;
use super::ipv6::{self, Ipv6Packet};
use super::{Result, WireError, read_array, read_u8, write_array, write_u8};

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const FLAGS: usize = 4;
    pub const TARGET: Field = 8..24;
    pub const OPTIONS: usize = 24;

    /// In an option (offsets from its start).
    pub const OPT_TYPE: usize = 0;
    pub const OPT_LEN: usize = 1;
    pub const OPT_LINK_ADDR: Field = 2..8;
}

/// The length of a neighbour solicitation or advertisement without options.
pub const MIN_LEN: usize = field::OPTIONS;

/// The hop limit every NDP message is sent with, and must arrive with (RFC 4861 §7.1).
pub const HOP_LIMIT: u8 = 255;

/// NDP option types (RFC 4861 §4.6) xlb reads or writes.
pub mod option_type {
    /// The sender's link-layer address (in a solicitation).
    pub const SOURCE_LINK_ADDR: u8 = 1;
    /// The target's link-layer address (in an advertisement).
    pub const TARGET_LINK_ADDR: u8 = 2;
}

/// The length of a link-layer address option for Ethernet: type, length 1, six bytes of MAC.
pub const LINK_ADDR_OPTION_LEN: usize = 8;

/// The length of the message [`write_neighbor_solicit`] and [`write_neighbor_advert`] write.
pub const MESSAGE_LEN: usize = MIN_LEN + LINK_ADDR_OPTION_LEN;

/// The length of the frames [`write_neighbor_solicit`] and [`write_neighbor_advert`] write.
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + MESSAGE_LEN;

/// The length of the frames [`write_dad_probe`] writes (no link-layer address option).
pub const PROBE_FRAME_LEN: usize = FRAME_LEN - LINK_ADDR_OPTION_LEN;

const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// All nodes on the link, `ff02::1`: where unsolicited advertisements go (RFC 4861 §7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The solicited-node multicast address of `addr` (RFC 4291 §2.7.1): `ff02::1:ff00:0/104`
/// with the low 24 bits of `addr`. A solicitation for `addr` is sent there.
#[inline]
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let prefix = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0).to_bits();
    Ipv6Addr::from_bits(prefix | (addr.to_bits() & 0x00ff_ffff))
}

/// Whether `addr` is a solicited-node multicast address (`ff02::1:ff00:0/104`).
#[inline]
pub fn is_solicited_node(addr: Ipv6Addr) -> bool {
    solicited_node(addr) == addr
}

/// The Ethernet multicast address of an IPv6 multicast address (RFC 2464 §7): `33:33`
/// followed by its low 32 bits. For [`solicited_node`] addresses, `33:33:ff:XX:XX:XX`.
#[inline]
pub fn multicast_mac(addr: Ipv6Addr) -> MacAddr {
    let [.., a, b, c, d] = addr.octets();
    MacAddr([0x33, 0x33, a, b, c, d])
}

/// The flags of a neighbour advertisement (RFC 4861 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdvertFlags {
    /// R: the sender is a router. xlb is not.
    pub router: bool,
    /// S: an answer to a solicitation (clear in unsolicited advertisements).
    pub solicited: bool,
    /// O: the advertisement should override a cached link-layer address.
    pub override_cache: bool,
}

impl AdvertFlags {
    #[inline]
    fn bits(self) -> u8 {
        (if self.router { FLAG_ROUTER } else { 0 })
            | (if self.solicited { FLAG_SOLICITED } else { 0 })
            | (if self.override_cache { FLAG_OVERRIDE } else { 0 })
    }
}

view! {
    /// A view over a neighbour solicitation or advertisement (the ICMPv6 message).
    NdpPacket
}

impl<T: AsRef<[u8]>> NdpPacket<T> {
    /// The length of a message without options.
    pub const MIN_LEN: usize = MIN_LEN;

    /// Wraps a buffer holding a whole neighbour solicitation or advertisement (the ICMPv6
    /// message, nothing after it), checking in this order: at least 24 bytes
    /// ([`WireError::Truncated`]), type 135 or 136 ([`WireError::Unsupported`]), code 0
    /// ([`WireError::Malformed`]), every option of non-zero length
    /// ([`WireError::ZeroLengthOption`]) and inside the buffer (`Truncated`). The checksum is
    /// not verified: that is [`NdpPacket::verify_checksum`]'s job.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < MIN_LEN {
            return Err(WireError::Truncated);
        }
        if !matches!(
            packet.msg_type(),
            icmpv6_type::NEIGHBOR_SOLICIT | icmpv6_type::NEIGHBOR_ADVERT
        ) {
            return Err(WireError::Unsupported);
        }
        if packet.code() != 0 {
            return Err(WireError::Malformed);
        }
        for option in packet.options() {
            option?;
        }
        Ok(packet)
    }

    /// The ICMPv6 type: 135 (solicitation) or 136 (advertisement) in a checked packet.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::TYPE)
    }

    /// The ICMPv6 code (0 in a checked packet).
    #[inline]
    pub fn code(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::CODE)
    }

    /// Whether this is a neighbour solicitation.
    #[inline]
    pub fn is_solicit(&self) -> bool {
        self.msg_type() == icmpv6_type::NEIGHBOR_SOLICIT
    }

    /// Whether this is a neighbour advertisement.
    #[inline]
    pub fn is_advert(&self) -> bool {
        self.msg_type() == icmpv6_type::NEIGHBOR_ADVERT
    }

    /// The target address: the address being resolved, or advertised.
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::TARGET))
    }

    /// An advertisement's R/S/O flags (meaningless in a solicitation, whose byte 4 is
    /// reserved).
    #[inline]
    pub fn advert_flags(&self) -> AdvertFlags {
        let bits = read_u8(self.buffer.as_ref(), field::FLAGS);
        AdvertFlags {
            router: bits & FLAG_ROUTER != 0,
            solicited: bits & FLAG_SOLICITED != 0,
            override_cache: bits & FLAG_OVERRIDE != 0,
        }
    }

    /// The options, walked (see the module docs).
    #[inline]
    pub fn options(&self) -> NdpOptions<'_> {
        NdpOptions { rest: self.buffer.as_ref().get(field::OPTIONS..).unwrap_or(&[]) }
    }

    /// The link-layer address in the first option of `kind` that is an Ethernet address
    /// (length 1); `None` if there is none or the options are bad.
    #[inline]
    fn link_addr(&self, kind: u8) -> Option<MacAddr> {
        self.options()
            .map_while(|option| option.ok())
            .find(|option| option.kind == kind)
            .and_then(|option| option.link_addr())
    }

    /// The source link-layer address option's MAC (solicitations carry one unless sent from
    /// the unspecified address).
    #[inline]
    pub fn source_link_addr(&self) -> Option<MacAddr> {
        self.link_addr(option_type::SOURCE_LINK_ADDR)
    }

    /// The target link-layer address option's MAC (advertisements carry one).
    #[inline]
    pub fn target_link_addr(&self) -> Option<MacAddr> {
        self.link_addr(option_type::TARGET_LINK_ADDR)
    }

    /// Whether the ICMPv6 checksum over the pseudo-header (`src`, `dst`) is right.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::verifies_v6(src, dst, ip_proto::ICMPV6, self.buffer.as_ref())
    }

    /// The validity checks of RFC 4861 §7.1.1 (solicitations) and §7.1.2 (advertisements)
    /// that need the IPv6 header's `hop_limit`, `src` and `dst` ([`WireError::Malformed`] if
    /// one fails): hop limit 255, a target that is not multicast; a solicitation from the
    /// unspecified address (duplicate address detection) is sent to a solicited-node group
    /// and has no source link-layer option; an advertisement sent to a multicast address
    /// has the solicited flag clear. The checksum is [`NdpPacket::verify_checksum`]'s.
    #[inline]
    pub fn validate(&self, hop_limit: u8, src: Ipv6Addr, dst: Ipv6Addr) -> Result<()> {
        let valid = hop_limit == HOP_LIMIT
            && !self.target_addr().is_multicast()
            && match self.is_solicit() {
                true => {
                    !src.is_unspecified()
                        || (is_solicited_node(dst) && self.source_link_addr().is_none())
                }
                false => !dst.is_multicast() || !self.advert_flags().solicited,
            };
        if valid { Ok(()) } else { Err(WireError::Malformed) }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdpPacket<T> {
    /// Sets the ICMPv6 type.
    #[inline]
    pub fn set_msg_type(&mut self, msg_type: u8) {
        write_u8(self.buffer.as_mut(), field::TYPE, msg_type);
    }

    /// Sets the ICMPv6 code.
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        write_u8(self.buffer.as_mut(), field::CODE, code);
    }

    /// Sets bytes 4..8: an advertisement's flags, the rest reserved (zero).
    #[inline]
    pub fn set_advert_flags(&mut self, flags: AdvertFlags) {
        let buffer = self.buffer.as_mut();
        write_array(buffer, 4..8, [flags.bits(), 0, 0, 0]);
    }

    /// Sets the target address.
    #[inline]
    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        write_array(self.buffer.as_mut(), field::TARGET, addr.octets());
    }

    /// Recomputes the ICMPv6 checksum over the pseudo-header (`src`, `dst`) and the buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        icmpv6::Icmpv6Packet::new_unchecked(self.buffer.as_mut()).fill_checksum(src, dst);
    }
}

/// One NDP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpOption<'a> {
    /// The option type; compare with [`option_type`].
    pub kind: u8,
    /// The whole option, type and length bytes included (a multiple of 8 bytes).
    pub bytes: &'a [u8],
}

impl NdpOption<'_> {
    /// The MAC of a link-layer address option for Ethernet (8 bytes long); `None` for any
    /// other length (another link type).
    #[inline]
    pub fn link_addr(&self) -> Option<MacAddr> {
        (self.bytes.len() == LINK_ADDR_OPTION_LEN)
            .then(|| MacAddr(read_array::<6>(self.bytes, field::OPT_LINK_ADDR)))
    }
}

/// An iterator over NDP options: each option, or one error and then nothing.
#[derive(Debug, Clone)]
pub struct NdpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> NdpOptions<'a> {
    /// Walks `options` (the bytes after a message's fixed part).
    #[inline]
    pub fn new(options: &'a [u8]) -> Self {
        NdpOptions { rest: options }
    }
}

impl<'a> Iterator for NdpOptions<'a> {
    type Item = Result<NdpOption<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.rest);
        if rest.len() < 2 {
            return Some(Err(WireError::Truncated));
        }
        let len = usize::from(read_u8(rest, field::OPT_LEN)) * 8;
        if len == 0 {
            return Some(Err(WireError::ZeroLengthOption));
        }
        let Some((bytes, tail)) = rest.split_at_checked(len) else {
            return Some(Err(WireError::Truncated));
        };
        self.rest = tail;
        Some(Ok(NdpOption { kind: read_u8(bytes, field::OPT_TYPE), bytes }))
    }
}

/// Writes an NDP frame: Ethernet, IPv6 (hop limit 255), the message and, with
/// `option_kind`, one Ethernet link-layer address option of that kind carrying `src_mac`
/// ([`FRAME_LEN`] bytes; [`PROBE_FRAME_LEN`] without the option).
fn write_frame(
    buffer: &mut [u8],
    (src_mac, dst_mac): (MacAddr, MacAddr),
    (src_ip, dst_ip): (Ipv6Addr, Ipv6Addr),
    msg_type: u8,
    flags: AdvertFlags,
    target: Ipv6Addr,
    option_kind: Option<u8>,
) -> Result<usize> {
    let len = if option_kind.is_some() { FRAME_LEN } else { PROBE_FRAME_LEN };
    let frame = buffer.get_mut(..len).ok_or(WireError::Truncated)?;
    frame.fill(0);
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(EtherType::IPV6);
    let mut ip = Ipv6Packet::new_unchecked(eth.payload_mut());
    ip.set_version(6);
    ip.set_payload_len((len - ethernet::HEADER_LEN - ipv6::HEADER_LEN) as u16);
    ip.set_next_header(ip_proto::ICMPV6);
    ip.set_hop_limit(HOP_LIMIT);
    ip.set_src_addr(src_ip);
    ip.set_dst_addr(dst_ip);
    let message = ip.payload_mut();
    let mut ndp = NdpPacket::new_unchecked(&mut *message);
    ndp.set_msg_type(msg_type);
    ndp.set_advert_flags(flags);
    ndp.set_target_addr(target);
    if let Some(option_kind) = option_kind {
        write_u8(message, MIN_LEN + field::OPT_TYPE, option_kind);
        write_u8(message, MIN_LEN + field::OPT_LEN, 1);
        let link = MIN_LEN + field::OPT_LINK_ADDR.start..MIN_LEN + field::OPT_LINK_ADDR.end;
        write_array(message, link, src_mac.octets());
    }
    NdpPacket::new_unchecked(message).fill_checksum(src_ip, dst_ip);
    Ok(len)
}

/// Writes into `buffer` (at least [`PROBE_FRAME_LEN`] bytes, else [`WireError::Truncated`])
/// a duplicate address detection probe for `target` (RFC 4862 §5.4.2): a neighbour
/// solicitation from `::` and `our_mac` to `target`'s solicited-node multicast address and
/// MAC, without a source link-layer address option (RFC 4861 §7.1.1 forbids one from `::`).
/// Returns the frame's length.
pub fn write_dad_probe(buffer: &mut [u8], our_mac: MacAddr, target: Ipv6Addr) -> Result<usize> {
    let group = solicited_node(target);
    write_frame(
        buffer,
        (our_mac, multicast_mac(group)),
        (Ipv6Addr::UNSPECIFIED, group),
        icmpv6_type::NEIGHBOR_SOLICIT,
        AdvertFlags::default(),
        target,
        None,
    )
}

/// Writes into `buffer` (at least [`FRAME_LEN`] bytes, else [`WireError::Truncated`]) a
/// neighbour solicitation for `target`, asked from the box's own address `our_ip` (never a
/// VIP) and MAC, sent to `target`'s solicited-node multicast address and MAC, with a source
/// link-layer address option. Returns the frame's length.
pub fn write_neighbor_solicit(
    buffer: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Result<usize> {
    let group = solicited_node(target);
    write_frame(
        buffer,
        (our_mac, multicast_mac(group)),
        (our_ip, group),
        icmpv6_type::NEIGHBOR_SOLICIT,
        AdvertFlags::default(),
        target,
        Some(option_type::SOURCE_LINK_ADDR),
    )
}

/// Writes into `buffer` (at least [`FRAME_LEN`] bytes, else [`WireError::Truncated`]) a
/// neighbour advertisement that `target` (a VIP or local address, also the IPv6 source) is
/// at `our_mac`, to `dst_ip` at `dst_mac`, with `flags` and a target link-layer address
/// option. An answer goes to the solicitation's source with `solicited` set; an unsolicited
/// one (or the answer to a solicitation from `::`, RFC 4861 §7.2.4) to [`ALL_NODES`] at
/// `multicast_mac(ALL_NODES)` without it. Returns the frame's length.
pub fn write_neighbor_advert(
    buffer: &mut [u8],
    our_mac: MacAddr,
    target: Ipv6Addr,
    (dst_mac, dst_ip): (MacAddr, Ipv6Addr),
    flags: AdvertFlags,
) -> Result<usize> {
    write_frame(
        buffer,
        (our_mac, dst_mac),
        (target, dst_ip),
        icmpv6_type::NEIGHBOR_ADVERT,
        flags,
        target,
        Some(option_type::TARGET_LINK_ADDR),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::UpperLayer;
    use etherparse::icmpv6::{NdpOptionSlice, NeighborAdvertisementHeader};
    use etherparse::{
        EtherType as EpEtherType, Ethernet2Header, Icmpv6Header, Icmpv6Slice, Icmpv6Type,
        Ipv6Header,
    };
    use proptest::prelude::*;

    const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const OUR_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xab, 0xcd10);
    const PEER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
    const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x20]);

    /// An NDP message built by etherparse: the ICMPv6 header with its checksum, then the
    /// target and `options`.
    fn message(
        kind: Icmpv6Type,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        target: Ipv6Addr,
        options: &[u8],
    ) -> Vec<u8> {
        let mut body = target.octets().to_vec();
        body.extend_from_slice(options);
        let header = Icmpv6Header::with_checksum(kind, src.octets(), dst.octets(), &body).unwrap();
        let mut out = header.to_bytes().to_vec();
        out.extend(body);
        out
    }

    fn link_option(kind: u8, mac: MacAddr) -> Vec<u8> {
        let mut out = vec![kind, 1];
        out.extend_from_slice(&mac.octets());
        out
    }

    #[test]
    fn solicited_node_addresses() {
        let group = solicited_node(VIP);
        assert_eq!(group, "ff02::1:ffab:cd10".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(group), MacAddr([0x33, 0x33, 0xff, 0xab, 0xcd, 0x10]));
        assert_eq!(multicast_mac(ALL_NODES), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        assert!(group.is_multicast());
        assert!(multicast_mac(group).is_multicast());
    }

    #[test]
    fn validate_checks_what_needs_the_ip_header() {
        let group = solicited_node(VIP);
        let sll = link_option(option_type::SOURCE_LINK_ADDR, PEER_MAC);
        let ns = |src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, options: &[u8]| {
            message(Icmpv6Type::NeighborSolicitation, src, dst, target, options)
        };
        let check = |bytes: &[u8], hop_limit: u8, src: Ipv6Addr, dst: Ipv6Addr| {
            NdpPacket::new_checked(bytes).unwrap().validate(hop_limit, src, dst)
        };
        let bad = Err(WireError::Malformed);
        let good = ns(PEER, group, VIP, &sll);
        assert_eq!(check(&good, 255, PEER, group), Ok(()));
        assert_eq!(check(&good, 254, PEER, group), bad, "forwarded");
        let multicast_target = ns(PEER, group, ALL_NODES, &sll);
        assert_eq!(check(&multicast_target, 255, PEER, group), bad);
        // Duplicate address detection: from ::, to the group, no source link-layer option.
        let dad = ns(Ipv6Addr::UNSPECIFIED, group, VIP, &[]);
        assert_eq!(check(&dad, 255, Ipv6Addr::UNSPECIFIED, group), Ok(()));
        assert_eq!(check(&dad, 255, Ipv6Addr::UNSPECIFIED, VIP), bad, "unicast DAD");
        let dad_with_option = ns(Ipv6Addr::UNSPECIFIED, group, VIP, &sll);
        assert_eq!(check(&dad_with_option, 255, Ipv6Addr::UNSPECIFIED, group), bad);
        // Advertisements: solicited ones go to unicast addresses.
        let header =
            |solicited| NeighborAdvertisementHeader { router: false, solicited, r#override: true };
        let tll = link_option(option_type::TARGET_LINK_ADDR, PEER_MAC);
        for (solicited, dst, expected) in [
            (true, OUR_IP, Ok(())),
            (true, ALL_NODES, bad),
            (false, ALL_NODES, Ok(())),
            (false, OUR_IP, Ok(())),
        ] {
            let kind = Icmpv6Type::NeighborAdvertisement(header(solicited));
            let na = message(kind, PEER, dst, PEER, &tll);
            assert_eq!(check(&na, 255, PEER, dst), expected, "solicited {solicited} to {dst}");
        }
        assert!(is_solicited_node(group));
        assert!(!is_solicited_node(ALL_NODES));
        assert!(!is_solicited_node(VIP));
    }

    #[test]
    fn getters_on_a_solicitation() {
        let options = link_option(option_type::SOURCE_LINK_ADDR, PEER_MAC);
        let group = solicited_node(VIP);
        let bytes = message(Icmpv6Type::NeighborSolicitation, PEER, group, VIP, &options);
        let ndp = NdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(ndp.is_solicit() && !ndp.is_advert());
        assert_eq!((ndp.msg_type(), ndp.code()), (135, 0));
        assert_eq!(ndp.target_addr(), VIP);
        assert_eq!(ndp.source_link_addr(), Some(PEER_MAC));
        assert_eq!(ndp.target_link_addr(), None);
        assert!(ndp.verify_checksum(PEER, group));
        assert!(!ndp.verify_checksum(PEER, VIP));
    }

    #[test]
    fn getters_on_an_advertisement() {
        let flags =
            NeighborAdvertisementHeader { router: false, solicited: true, r#override: true };
        let mut options = vec![99, 2];
        options.extend_from_slice(&[0xee; 14]); // an unknown option first: skipped
        options.extend(link_option(option_type::TARGET_LINK_ADDR, PEER_MAC));
        let kind = Icmpv6Type::NeighborAdvertisement(flags);
        let bytes = message(kind, PEER, OUR_IP, PEER, &options);
        let ndp = NdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(ndp.is_advert());
        assert_eq!(
            ndp.advert_flags(),
            AdvertFlags { router: false, solicited: true, override_cache: true }
        );
        assert_eq!(ndp.target_addr(), PEER);
        assert_eq!(ndp.target_link_addr(), Some(PEER_MAC));
        assert_eq!(ndp.source_link_addr(), None);
        let kinds: Vec<(u8, usize)> =
            ndp.options().map(|o| o.unwrap()).map(|o| (o.kind, o.bytes.len())).collect();
        assert_eq!(kinds, [(99, 16), (2, 8)]);
        assert!(ndp.verify_checksum(PEER, OUR_IP));
    }

    #[test]
    fn new_checked_errors() {
        let options = link_option(option_type::SOURCE_LINK_ADDR, PEER_MAC);
        let good = message(Icmpv6Type::NeighborSolicitation, PEER, OUR_IP, VIP, &options);
        let check = |bytes: &[u8]| NdpPacket::new_checked(bytes).map(|_| ());
        assert_eq!(check(&good), Ok(()));
        for cut in 0..good.len() {
            // Cut inside the fixed part or inside the option: both truncated. (A cut exactly
            // at 24 leaves a message without options, which is fine.)
            let expected = if cut == MIN_LEN { Ok(()) } else { Err(WireError::Truncated) };
            assert_eq!(check(&good[..cut]), expected, "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = icmpv6_type::ECHO_REQUEST;
        assert_eq!(check(&bad), Err(WireError::Unsupported));
        let mut bad = good.clone();
        bad[1] = 1;
        assert_eq!(check(&bad), Err(WireError::Malformed));
        // An option of length 0, first or after a good one.
        let mut bad = good.clone();
        bad[MIN_LEN + 1] = 0;
        assert_eq!(check(&bad), Err(WireError::ZeroLengthOption));
        let mut bad = good.clone();
        bad.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(check(&bad), Err(WireError::ZeroLengthOption));
        // An option claiming more than there is.
        let mut bad = good.clone();
        bad[MIN_LEN + 1] = 2;
        assert_eq!(check(&bad), Err(WireError::Truncated));
        // The unchecked view of a bad packet still answers, with no link address.
        let ndp = NdpPacket::new_unchecked(&bad[..]);
        assert_eq!(ndp.source_link_addr(), None);
        assert_eq!(ndp.options().last(), Some(Err(WireError::Truncated)));
    }

    /// The frame's layers, parsed by etherparse.
    fn parse(frame: &[u8]) -> (Ethernet2Header, Ipv6Header, Icmpv6Slice<'_>) {
        let (eth, rest) = Ethernet2Header::from_slice(frame).unwrap();
        let (ip, rest) = Ipv6Header::from_slice(rest).unwrap();
        (eth, ip, Icmpv6Slice::from_slice(rest).unwrap())
    }

    #[test]
    fn a_written_solicitation_is_what_etherparse_expects() {
        let mut buffer = [0xa5u8; 128];
        let len = write_neighbor_solicit(&mut buffer, OUR_MAC, OUR_IP, VIP).unwrap();
        assert_eq!(len, FRAME_LEN);
        let frame = &buffer[..len];
        let (eth, ip, icmp) = parse(frame);
        let group = solicited_node(VIP);
        assert_eq!(eth.destination, [0x33, 0x33, 0xff, 0xab, 0xcd, 0x10]);
        assert_eq!((eth.source, eth.ether_type), (OUR_MAC.octets(), EpEtherType::IPV6));
        assert_eq!((ip.source_addr(), ip.destination_addr()), (OUR_IP, group));
        assert_eq!((ip.hop_limit, ip.next_header.0, ip.payload_length), (255, 58, 32));
        assert_eq!(icmp.icmp_type(), Icmpv6Type::NeighborSolicitation);
        assert!(icmp.is_checksum_valid(OUR_IP.octets(), group.octets()));
        // The same message etherparse builds from the same fields.
        let option = link_option(option_type::SOURCE_LINK_ADDR, OUR_MAC);
        let expected = message(Icmpv6Type::NeighborSolicitation, OUR_IP, group, VIP, &option);
        assert_eq!(icmp.slice(), &expected[..]);
        let payload = match icmp.payload_slice().unwrap() {
            etherparse::icmpv6::Icmpv6PayloadSlice::NeighborSolicitation(p) => p,
            other => panic!("not a solicitation: {other:?}"),
        };
        assert_eq!(payload.target_address(), VIP);
        let options: Vec<_> = payload.options_iterator().map(|o| o.unwrap()).collect();
        match options.as_slice() {
            [NdpOptionSlice::SourceLinkLayerAddress(o)] => {
                assert_eq!(o.link_layer_address(), &OUR_MAC.octets());
            }
            other => panic!("options {other:?}"),
        }
        // And our own views read it back.
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        let upper = ip.upper_layer().unwrap();
        assert_eq!(upper, UpperLayer { protocol: 58, offset: 40, fragment: None, ext_headers: 0 });
        let ndp = NdpPacket::new_checked(ip.upper_layer_payload(&upper)).unwrap();
        assert_eq!((ndp.target_addr(), ndp.source_link_addr()), (VIP, Some(OUR_MAC)));
        assert!(ndp.verify_checksum(OUR_IP, group));
        assert_eq!(ndp.validate(ip.hop_limit(), OUR_IP, group), Ok(()));
        // Too small a buffer: refused, untouched.
        let mut small = [0u8; FRAME_LEN - 1];
        assert_eq!(
            write_neighbor_solicit(&mut small, OUR_MAC, OUR_IP, VIP),
            Err(WireError::Truncated)
        );
        assert_eq!(small, [0; FRAME_LEN - 1]);
    }

    #[test]
    fn a_written_advertisement_is_what_etherparse_expects() {
        let mut buffer = [0u8; FRAME_LEN];
        let flags = AdvertFlags { router: false, solicited: true, override_cache: true };
        let len =
            write_neighbor_advert(&mut buffer, OUR_MAC, VIP, (PEER_MAC, PEER), flags).unwrap();
        let (eth, ip, icmp) = parse(&buffer[..len]);
        assert_eq!((eth.destination, eth.source), (PEER_MAC.octets(), OUR_MAC.octets()));
        assert_eq!((ip.source_addr(), ip.destination_addr(), ip.hop_limit), (VIP, PEER, 255));
        let header =
            NeighborAdvertisementHeader { router: false, solicited: true, r#override: true };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::NeighborAdvertisement(header));
        let option = link_option(option_type::TARGET_LINK_ADDR, OUR_MAC);
        let kind = Icmpv6Type::NeighborAdvertisement(header);
        assert_eq!(icmp.slice(), &message(kind, VIP, PEER, VIP, &option)[..]);
        let ndp = NdpPacket::new_checked(icmp.slice()).unwrap();
        assert_eq!((ndp.advert_flags(), ndp.target_link_addr()), (flags, Some(OUR_MAC)));
        assert_eq!(ndp.validate(ip.hop_limit, VIP, PEER), Ok(()));
        // Unsolicited, to all nodes.
        let unsolicited = AdvertFlags { override_cache: true, ..AdvertFlags::default() };
        let all_nodes = (multicast_mac(ALL_NODES), ALL_NODES);
        write_neighbor_advert(&mut buffer, OUR_MAC, VIP, all_nodes, unsolicited).unwrap();
        let (eth, ip, icmp) = parse(&buffer);
        assert_eq!(eth.destination, [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(ip.destination_addr(), ALL_NODES);
        assert!(icmp.is_checksum_valid(VIP.octets(), ALL_NODES.octets()));
        let ndp = NdpPacket::new_checked(icmp.slice()).unwrap();
        assert_eq!(ndp.validate(ip.hop_limit, VIP, ALL_NODES), Ok(()));
    }

    proptest! {
        #[test]
        fn parse_agrees_with_etherparse(
            solicit in any::<bool>(),
            flags in any::<(bool, bool, bool)>(),
            target in any::<u128>(),
            src in any::<u128>(),
            options in proptest::collection::vec(
                (prop::sample::select(vec![1u8, 2, 14, 99, 200]), 1usize..4, any::<[u8; 6]>()), 0..4),
        ) {
            let (target, src) = (Ipv6Addr::from_bits(target), Ipv6Addr::from_bits(src));
            let mut option_bytes = Vec::new();
            for &(kind, units, fill) in &options {
                option_bytes.extend([kind, units as u8]);
                option_bytes.extend(fill.iter().cycle().take(units * 8 - 2));
            }
            let kind = match solicit {
                true => Icmpv6Type::NeighborSolicitation,
                false => Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
                    router: flags.0, solicited: flags.1, r#override: flags.2,
                }),
            };
            let bytes = message(kind, src, OUR_IP, target, &option_bytes);
            let ndp = NdpPacket::new_checked(&bytes[..]).unwrap();
            prop_assert!(ndp.verify_checksum(src, OUR_IP));
            prop_assert_eq!(ndp.is_solicit(), solicit);
            prop_assert_eq!(ndp.target_addr(), target);
            if !solicit {
                prop_assert_eq!(
                    ndp.advert_flags(),
                    AdvertFlags { router: flags.0, solicited: flags.1, override_cache: flags.2 }
                );
            }
            let oracle = Icmpv6Slice::from_slice(&bytes).unwrap();
            let oracle_options: Vec<NdpOptionSlice<'_>> = match oracle.payload_slice().unwrap() {
                etherparse::icmpv6::Icmpv6PayloadSlice::NeighborSolicitation(p) => {
                    prop_assert_eq!(p.target_address(), target);
                    p.options_iterator().map(|o| o.unwrap()).collect()
                }
                etherparse::icmpv6::Icmpv6PayloadSlice::NeighborAdvertisement(p) => {
                    prop_assert_eq!(p.target_address(), target);
                    p.options_iterator().map(|o| o.unwrap()).collect()
                }
                other => panic!("{other:?}"),
            };
            let ours: Vec<NdpOption<'_>> = ndp.options().map(|o| o.unwrap()).collect();
            prop_assert_eq!(ours.len(), oracle_options.len());
            for (ours, theirs) in ours.iter().zip(&oracle_options) {
                prop_assert_eq!(ours.bytes, theirs.as_bytes());
                prop_assert_eq!(ours.kind, theirs.option_type().0);
            }
            let first_source = oracle_options.iter().find_map(|o| match o {
                NdpOptionSlice::SourceLinkLayerAddress(s) => Some(s.link_layer_address()),
                _ => None,
            });
            let expected = first_source.and_then(|mac| <[u8; 6]>::try_from(mac).ok()).map(MacAddr);
            prop_assert_eq!(ndp.source_link_addr(), expected);
        }

        #[test]
        fn writers_round_trip(
            our_mac in any::<[u8; 6]>(),
            our_ip in any::<u128>(),
            target in any::<u128>(),
            flags in any::<(bool, bool, bool)>(),
        ) {
            let (mac, ip, target) = (MacAddr(our_mac), Ipv6Addr::from_bits(our_ip), Ipv6Addr::from_bits(target));
            let mut frame = [0u8; FRAME_LEN];
            write_neighbor_solicit(&mut frame, mac, ip, target).unwrap();
            let (_, header, icmp) = parse(&frame);
            prop_assert!(icmp.is_checksum_valid(ip.octets(), solicited_node(target).octets()));
            prop_assert_eq!(header.destination_addr(), solicited_node(target));
            let ndp = NdpPacket::new_checked(icmp.slice()).unwrap();
            prop_assert_eq!((ndp.target_addr(), ndp.source_link_addr()), (target, Some(mac)));
            let flags = AdvertFlags { router: flags.0, solicited: flags.1, override_cache: flags.2 };
            write_neighbor_advert(&mut frame, mac, target, (PEER_MAC, ip), flags).unwrap();
            let (_, _, icmp) = parse(&frame);
            prop_assert!(icmp.is_checksum_valid(target.octets(), ip.octets()));
            let ndp = NdpPacket::new_checked(icmp.slice()).unwrap();
            prop_assert_eq!((ndp.advert_flags(), ndp.target_link_addr()), (flags, Some(mac)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let mut bytes = bytes;
            if bytes.len() > 1 {
                bytes[0] = 135 + (bytes[0] & 1);
                bytes[1] &= 0x01;
            }
            let checked = NdpPacket::new_checked(&bytes[..]).is_ok();
            let mut ndp = NdpPacket::new_unchecked(&mut bytes[..]);
            let walked = ndp.options().count();
            prop_assert!(walked <= ndp.as_ref().len() / 8 + 1);
            if checked {
                prop_assert!(ndp.options().all(|o| o.is_ok()));
            }
            let _ = (ndp.target_addr(), ndp.advert_flags(), ndp.source_link_addr(), ndp.target_link_addr());
            ndp.set_advert_flags(AdvertFlags::default());
            ndp.set_target_addr(Ipv6Addr::LOCALHOST);
            ndp.fill_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
            if ndp.as_ref().len() >= 4 {
                prop_assert!(ndp.verify_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED));
            }
        }
    }
}
