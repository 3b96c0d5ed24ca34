//! NDP: the neighbour discovery xlb does itself for IPv6, as [`crate::arp`] does ARP for
//! IPv4.
//!
//! Why a module of its own, named `ndp`: it is to [`crate::wire::ndp`] (the zero-copy view of
//! the messages) what [`crate::arp`] is to [`crate::wire::arp`] — what xlb *does* with the
//! protocol: which messages it accepts, how it answers, what it sends, what it learns. The
//! tables are shared: IPv6 neighbours live in a [`NeighborTable<V6>`] and frames waiting for
//! one in a [`HoldQueue<V6>`](crate::arp::HoldQueue), the same family-generic types ARP uses
//! (see [`crate::family`]), with the same bounds, eviction and hold-and-release.
//!
//! The pure functions here mirror ARP's: [`parse`] accepts a frame only if RFC 4861 §7.1
//! lets a node act on it (everything else is a [`Refused`] the caller drops, silently as the
//! RFC says, but counted); [`answer_solicit`] writes the advertisement that answers a
//! solicitation for an address xlb owns (compare [`arp::answer_request`]);
//! [`write_solicit`] asks for a backend's or gateway's MAC from the box's own address (compare
//! [`arp::write_request`]); [`write_probe`] asks whether another host already has a VIP
//! before xlb announces it (duplicate address detection, RFC 4862 §5.4; compare
//! [`arp::write_probe`]); [`write_unsolicited`] announces a VIP coming up (compare
//! [`arp::write_gratuitous`]); [`learn`] records what a message says about a neighbour.
//!
//! What stays the caller's, as it is for ARP in the pipeline: whether a target is an address
//! xlb owns, and what to do with a message whose *source* is one (another host claiming a
//! VIP: count it and drop it, never learn it, as ARP conflicts are).
//!
//! The pipeline's NDP step (`dataplane::pipeline::v6::ndp`) calls these: it decides which
//! targets are xlb's, counts conflicts, and holds and releases frames.
//!
//! Invariants:
//! - Every frame written here is a whole Ethernet + IPv6 + ICMPv6 frame of [`NDP_FRAME_LEN`]
//!   bytes ([`PROBE_FRAME_LEN`] for a probe, which carries no link-layer option), hop limit
//!   255, with its checksum; a buffer shorter than that is refused
//!   ([`WireError::Truncated`]) and left untouched.
//! - A probe comes from `::` (the address is not ours yet as far as the link knows) to the
//!   address's solicited-node group; an advertisement naming the address in answer is
//!   another host's claim, which the caller treats as any other (a conflict).
//! - Solicitations xlb sends come from the box's own address, never a VIP: a real server
//!   that holds the VIP on `lo` would take a solicitation from it as coming from itself (the
//!   seed's ARP bug, see [`crate::arp`]).
//! - Advertisements xlb sends set the override flag: the addresses it answers for are its own
//!   (VIPs and local addresses), not anycast or proxied ones (RFC 4861 §7.2.4), so a cached
//!   MAC left over from a previous owner is replaced.
//! - Nothing is learned from a message that fails [`parse`], from a multicast link-layer
//!   address, or from a solicitation sent from `::` (duplicate address detection names no
//!   neighbour).

use std::net::Ipv6Addr;

use crate::arp::{Learned, NeighborTable};
use crate::family::V6;
use crate::time::Instant;
use crate::wire::ipv4::ip_proto;
use crate::wire::ndp::{self as wire_ndp, ALL_NODES, AdvertFlags, multicast_mac};
use crate::wire::{EtherType, EthernetFrame, Ipv6Packet, MacAddr, NdpPacket, WireError};

#[cfg(doc)]
use crate::arp;

/// Length of every NDP frame xlb writes (one link-layer address option, no padding).
pub const NDP_FRAME_LEN: usize = wire_ndp::FRAME_LEN;

/// Why [`parse`] refused a frame: it is not a neighbour solicitation or advertisement a node
/// may act on (RFC 4861 §7.1 says to discard it silently; the caller counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not an IPv6 frame (ethertype {0:#06x})")]
    NotIpv6(u16),
    #[error("bad IPv6 packet: {0}")]
    Ipv6(WireError),
    #[error("not ICMPv6 (next header {0})")]
    NotIcmpv6(u8),
    #[error("NDP in a fragment (RFC 6980)")]
    Fragment,
    #[error("not a well-formed neighbour solicitation or advertisement: {0}")]
    Message(WireError),
    #[error("bad ICMPv6 checksum from {src} to {dst}")]
    Checksum { src: Ipv6Addr, dst: Ipv6Addr },
    /// [`NdpPacket::validate`] failed: hop limit not 255, a multicast target, a duplicate
    /// address detection probe not to a solicited-node group or carrying a source
    /// link-layer option, a solicited advertisement to a multicast address.
    #[error("fails RFC 4861 §7.1 (hop limit {hop_limit}, from {src} to {dst}, target {target})")]
    Invalid { hop_limit: u8, src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr },
}

/// A neighbour solicitation that passed [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicit {
    /// The Ethernet source of the frame.
    pub eth_src: MacAddr,
    /// The IPv6 source: the solicitor, or `::` for duplicate address detection.
    pub src: Ipv6Addr,
    /// The IPv6 destination: the target's solicited-node group, or the target itself (a
    /// unicast solicitation that checks a cached entry).
    pub dst: Ipv6Addr,
    /// The address being resolved.
    pub target: Ipv6Addr,
    /// The solicitor's MAC, from the source link-layer address option.
    pub source_link_addr: Option<MacAddr>,
}

/// A neighbour advertisement that passed [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    pub eth_src: MacAddr,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The address advertised.
    pub target: Ipv6Addr,
    pub flags: AdvertFlags,
    /// The target's MAC, from the target link-layer address option.
    pub target_link_addr: Option<MacAddr>,
}

/// A neighbour discovery message xlb may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ndp {
    Solicit(Solicit),
    Advert(Advert),
}

impl Ndp {
    /// The address the message is about (resolved or advertised).
    pub fn target(&self) -> Ipv6Addr {
        match self {
            Ndp::Solicit(s) => s.target,
            Ndp::Advert(a) => a.target,
        }
    }

    /// What the message says about a neighbour, as (address, MAC): a solicitation names its
    /// source (RFC 4861 §7.2.3), unless sent from `::`; an advertisement its target (§7.2.5).
    /// `None` without a link-layer option, or with a multicast MAC in it.
    pub fn neighbor(&self) -> Option<(Ipv6Addr, MacAddr)> {
        let (ip, mac) = match *self {
            Ndp::Solicit(s) if s.src.is_unspecified() => return None,
            Ndp::Solicit(s) => (s.src, s.source_link_addr?),
            Ndp::Advert(a) => (a.target, a.target_link_addr?),
        };
        mac.is_unicast().then_some((ip, mac))
    }
}

/// Reads an Ethernet frame as a neighbour solicitation or advertisement, refusing (in this
/// order) what is not IPv6, a bad IPv6 packet or extension-header chain, what is not ICMPv6,
/// a fragment, what is not a well-formed solicitation or advertisement
/// ([`NdpPacket::new_checked`]), a bad checksum, and what RFC 4861 §7.1 says to discard
/// ([`NdpPacket::validate`]).
pub fn parse(frame: &[u8]) -> Result<Ndp, Refused> {
    let eth = EthernetFrame::new_checked(frame).map_err(Refused::Ipv6)?;
    if eth.ethertype() != EtherType::IPV6 {
        return Err(Refused::NotIpv6(eth.ethertype()));
    }
    let ip = Ipv6Packet::new_checked(eth.payload()).map_err(Refused::Ipv6)?;
    let upper = ip.upper_layer().map_err(Refused::Ipv6)?;
    if upper.protocol != ip_proto::ICMPV6 {
        return Err(Refused::NotIcmpv6(upper.protocol));
    }
    if upper.fragment.is_some() {
        return Err(Refused::Fragment);
    }
    let ndp = NdpPacket::new_checked(ip.upper_layer_payload(&upper)).map_err(Refused::Message)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if !ndp.verify_checksum(src, dst) {
        return Err(Refused::Checksum { src, dst });
    }
    let target = ndp.target_addr();
    ndp.validate(ip.hop_limit(), src, dst).map_err(|_| Refused::Invalid {
        hop_limit: ip.hop_limit(),
        src,
        dst,
        target,
    })?;
    let eth_src = eth.src_addr();
    Ok(match ndp.is_solicit() {
        true => Ndp::Solicit(Solicit {
            eth_src,
            src,
            dst,
            target,
            source_link_addr: ndp.source_link_addr(),
        }),
        false => Ndp::Advert(Advert {
            eth_src,
            src,
            dst,
            target,
            flags: ndp.advert_flags(),
            target_link_addr: ndp.target_link_addr(),
        }),
    })
}

/// Writes into `buffer` the advertisement answering `solicit`, whose target the caller found
/// to be an address xlb owns (a VIP or local address) reached at `our_mac`, and returns its
/// length. Solicited, with the override flag and the target link-layer option, to the
/// solicitor at the MAC of its source link-layer option (the frame's Ethernet source if it
/// sent none); to all nodes and not solicited if the solicitation came from `::` (duplicate
/// address detection, RFC 4861 §7.2.4).
///
/// `buffer` may be the solicitation's own frame (answered in place) when it holds
/// [`NDP_FRAME_LEN`] bytes: `solicit` owns everything it needs. Refused, writing nothing:
/// a buffer too short ([`WireError::Truncated`]), or a solicitor whose MAC is not unicast
/// ([`WireError::Unsupported`]: the answer would go to a group).
pub fn answer_solicit(
    buffer: &mut [u8],
    solicit: &Solicit,
    our_mac: MacAddr,
) -> Result<usize, WireError> {
    let (to, solicited) = if solicit.src.is_unspecified() {
        ((multicast_mac(ALL_NODES), ALL_NODES), false)
    } else {
        let mac = solicit.source_link_addr.unwrap_or(solicit.eth_src);
        if !mac.is_unicast() {
            return Err(WireError::Unsupported);
        }
        ((mac, solicit.src), true)
    };
    let flags = AdvertFlags { router: false, solicited, override_cache: true };
    wire_ndp::write_neighbor_advert(buffer, our_mac, solicit.target, to, flags)
}

/// Writes into `buffer` a solicitation for `target` (a backend or gateway) from the box's
/// own address `our_ip` and MAC, to `target`'s solicited-node group, and returns its length
/// ([`WireError::Truncated`] if `buffer` is shorter than [`NDP_FRAME_LEN`]).
pub fn write_solicit(
    buffer: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Result<usize, WireError> {
    wire_ndp::write_neighbor_solicit(buffer, our_mac, our_ip, target)
}

/// Length of the duplicate address detection probes [`write_probe`] writes.
pub const PROBE_FRAME_LEN: usize = wire_ndp::PROBE_FRAME_LEN;

/// Writes into `buffer` a duplicate address detection probe for `ip` (a VIP or local address
/// about to be announced, RFC 4862 §5.4.2): a solicitation from `::` and `our_mac` to `ip`'s
/// solicited-node group, without a source link-layer option. Another host that has `ip`
/// answers with an advertisement to all nodes. Returns its length ([`WireError::Truncated`]
/// if `buffer` is shorter than [`PROBE_FRAME_LEN`]).
pub fn write_probe(buffer: &mut [u8], our_mac: MacAddr, ip: Ipv6Addr) -> Result<usize, WireError> {
    wire_ndp::write_dad_probe(buffer, our_mac, ip)
}

/// Writes into `buffer` an unsolicited advertisement that `ip` (a VIP or local address
/// coming up) is at `our_mac`: to all nodes, override set, solicited clear (RFC 4861
/// §7.2.6). Returns its length ([`WireError::Truncated`] if `buffer` is too short).
pub fn write_unsolicited(
    buffer: &mut [u8],
    our_mac: MacAddr,
    ip: Ipv6Addr,
) -> Result<usize, WireError> {
    let flags = AdvertFlags { router: false, solicited: false, override_cache: true };
    wire_ndp::write_neighbor_advert(
        buffer,
        our_mac,
        ip,
        (multicast_mac(ALL_NODES), ALL_NODES),
        flags,
    )
}

/// Records in `table` what `ndp` says about a neighbour ([`Ndp::neighbor`]) and returns the
/// neighbour with what the table did; `None` if nothing was recorded.
///
/// Who is worth a place is the caller's policy, as for ARP: `wanted` when the message is a
/// solicitation for an address xlb owns (it is about to answer, RFC 4861 §7.2.3) or an
/// advertisement for a next hop xlb is resolving (frames are held for it). Otherwise only
/// neighbours already in the table, or needed by the snapshot, are refreshed (an unsolicited
/// advertisement creates no entry, §7.2.5). An advertisement with the override flag clear
/// does not replace a MAC the table already has (§7.2.5: it only confirms).
pub fn learn(
    table: &mut NeighborTable<V6>,
    now: Instant,
    ndp: &Ndp,
    wanted: bool,
) -> Option<(Ipv6Addr, MacAddr, Learned)> {
    let (ip, mac) = ndp.neighbor()?;
    let known = table.get(ip);
    if !wanted && known.is_none() && !table.is_needed(ip) {
        return None;
    }
    if let (Ndp::Advert(advert), Some(known)) = (ndp, known)
        && !advert.flags.override_cache
        && known.mac != mac
    {
        return None;
    }
    Some((ip, mac, table.learn(now, ip, mac)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arp::{Hold, HoldQueue};
    use crate::snapshot::IfaceId;
    use crate::wire::ndp::{option_type, solicited_node};
    use etherparse::icmpv6::NeighborAdvertisementHeader;
    use etherparse::{
        EtherType as EpEtherType, Ethernet2Header, Icmpv6Header, Icmpv6Slice, Icmpv6Type, IpNumber,
        Ipv6FragmentHeader, Ipv6Header,
    };

    const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const OUR_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xab, 0xcd10);
    const PEER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
    const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x20]);
    const OTHER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x21]);

    /// How a test frame is built (etherparse writes every byte of it).
    struct Spec {
        eth_src: MacAddr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        kind: Icmpv6Type,
        target: Ipv6Addr,
        options: Vec<u8>,
        /// A fragment header (offset 0, no more fragments) before the ICMPv6 message.
        fragment: bool,
    }

    impl Spec {
        fn solicit(src: Ipv6Addr, target: Ipv6Addr, options: Vec<u8>) -> Spec {
            Spec {
                eth_src: PEER_MAC,
                src,
                dst: solicited_node(target),
                hop_limit: 255,
                kind: Icmpv6Type::NeighborSolicitation,
                target,
                options,
                fragment: false,
            }
        }

        fn advert(solicited: bool, override_cache: bool, options: Vec<u8>) -> Spec {
            let header = NeighborAdvertisementHeader {
                router: false,
                solicited,
                r#override: override_cache,
            };
            Spec {
                eth_src: PEER_MAC,
                src: PEER,
                dst: OUR_IP,
                hop_limit: 255,
                kind: Icmpv6Type::NeighborAdvertisement(header),
                target: PEER,
                options,
                fragment: false,
            }
        }

        fn frame(&self) -> Vec<u8> {
            let mut body = self.target.octets().to_vec();
            body.extend_from_slice(&self.options);
            let (src, dst) = (self.src.octets(), self.dst.octets());
            let icmp = Icmpv6Header::with_checksum(self.kind, src, dst, &body).unwrap();
            let mut message = icmp.to_bytes().to_vec();
            message.extend(body);
            let mut ext = Vec::new();
            let mut next = IpNumber::IPV6_ICMP;
            if self.fragment {
                ext = Ipv6FragmentHeader::new(IpNumber::IPV6_ICMP, 0.try_into().unwrap(), false, 7)
                    .to_bytes()
                    .to_vec();
                next = IpNumber::IPV6_FRAGMENTATION_HEADER;
            }
            let ip = Ipv6Header {
                payload_length: (ext.len() + message.len()) as u16,
                next_header: next,
                hop_limit: self.hop_limit,
                source: src,
                destination: dst,
                ..Default::default()
            };
            let eth = Ethernet2Header {
                source: self.eth_src.octets(),
                destination: multicast_mac(self.dst).octets(),
                ether_type: EpEtherType::IPV6,
            };
            let mut frame = eth.to_bytes().to_vec();
            frame.extend(ip.to_bytes());
            frame.extend(ext);
            frame.extend(message);
            frame
        }
    }

    fn link_option(kind: u8, mac: MacAddr) -> Vec<u8> {
        let mut out = vec![kind, 1];
        out.extend_from_slice(&mac.octets());
        out
    }

    fn sll(mac: MacAddr) -> Vec<u8> {
        link_option(option_type::SOURCE_LINK_ADDR, mac)
    }

    fn tll(mac: MacAddr) -> Vec<u8> {
        link_option(option_type::TARGET_LINK_ADDR, mac)
    }

    fn solicit(spec: &Spec) -> Solicit {
        match parse(&spec.frame()) {
            Ok(Ndp::Solicit(s)) => s,
            other => panic!("not a solicitation: {other:?}"),
        }
    }

    /// An advertisement written here, read back by etherparse: (Ethernet, IPv6, flags,
    /// target, target link-layer address), after checking its checksum and length.
    fn read_advert(
        frame: &[u8],
    ) -> (Ethernet2Header, Ipv6Header, NeighborAdvertisementHeader, Ipv6Addr, [u8; 6]) {
        assert_eq!(frame.len(), NDP_FRAME_LEN);
        let (eth, rest) = Ethernet2Header::from_slice(frame).unwrap();
        let (ip, rest) = Ipv6Header::from_slice(rest).unwrap();
        assert_eq!(
            (ip.hop_limit, ip.next_header, ip.payload_length),
            (255, IpNumber::IPV6_ICMP, 32)
        );
        let icmp = Icmpv6Slice::from_slice(rest).unwrap();
        assert!(icmp.is_checksum_valid(ip.source, ip.destination));
        let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
            panic!("not an advertisement: {:?}", icmp.icmp_type());
        };
        let payload = match icmp.payload_slice().unwrap() {
            etherparse::icmpv6::Icmpv6PayloadSlice::NeighborAdvertisement(p) => p,
            other => panic!("{other:?}"),
        };
        let options: Vec<_> = payload.options_iterator().map(|o| o.unwrap()).collect();
        let mac = match options.as_slice() {
            [etherparse::icmpv6::NdpOptionSlice::TargetLinkLayerAddress(o)] => {
                <[u8; 6]>::try_from(o.link_layer_address()).unwrap()
            }
            other => panic!("options {other:?}"),
        };
        (eth, ip, flags, payload.target_address(), mac)
    }

    #[test]
    fn a_solicitation_for_a_vip_is_answered_to_the_solicitor() {
        let spec = Spec::solicit(PEER, VIP, sll(PEER_MAC));
        let ns = solicit(&spec);
        assert_eq!(
            ns,
            Solicit {
                eth_src: PEER_MAC,
                src: PEER,
                dst: solicited_node(VIP),
                target: VIP,
                source_link_addr: Some(PEER_MAC)
            }
        );
        let mut buffer = [0u8; 128];
        let len = answer_solicit(&mut buffer, &ns, OUR_MAC).unwrap();
        let (eth, ip, flags, target, mac) = read_advert(&buffer[..len]);
        assert_eq!((eth.destination, eth.source), (PEER_MAC.octets(), OUR_MAC.octets()));
        assert_eq!(eth.ether_type, EpEtherType::IPV6);
        assert_eq!((ip.source_addr(), ip.destination_addr()), (VIP, PEER));
        let expected =
            NeighborAdvertisementHeader { router: false, solicited: true, r#override: true };
        assert_eq!((flags, target, mac), (expected, VIP, OUR_MAC.octets()));
        // And our own parser takes the answer as the solicitor would.
        let Ok(Ndp::Advert(na)) = parse(&buffer[..len]) else { panic!("answer refused") };
        assert_eq!(
            (na.target, na.target_link_addr, na.flags.solicited),
            (VIP, Some(OUR_MAC), true)
        );
    }

    #[test]
    fn answered_in_place_in_the_solicitations_own_frame() {
        let spec = Spec::solicit(PEER, VIP, sll(PEER_MAC));
        let mut frame = spec.frame();
        assert_eq!(frame.len(), NDP_FRAME_LEN);
        let ns = solicit(&spec);
        let mut expected = [0u8; NDP_FRAME_LEN];
        answer_solicit(&mut expected, &ns, OUR_MAC).unwrap();
        assert_eq!(answer_solicit(&mut frame, &ns, OUR_MAC), Ok(NDP_FRAME_LEN));
        assert_eq!(frame, expected);
    }

    #[test]
    fn without_a_source_option_the_answer_goes_to_the_ethernet_source() {
        // A unicast solicitation (checking a cached entry) may omit the option.
        let mut spec = Spec::solicit(PEER, VIP, Vec::new());
        spec.dst = VIP;
        spec.eth_src = OTHER_MAC;
        let ns = solicit(&spec);
        let mut buffer = [0u8; NDP_FRAME_LEN];
        let len = answer_solicit(&mut buffer, &ns, OUR_MAC).unwrap();
        let (eth, ip, ..) = read_advert(&buffer[..len]);
        assert_eq!((eth.destination, ip.destination_addr()), (OTHER_MAC.octets(), PEER));
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes() {
        let ns = solicit(&Spec::solicit(Ipv6Addr::UNSPECIFIED, VIP, Vec::new()));
        let mut buffer = [0u8; NDP_FRAME_LEN];
        let len = answer_solicit(&mut buffer, &ns, OUR_MAC).unwrap();
        let (eth, ip, flags, target, mac) = read_advert(&buffer[..len]);
        assert_eq!(eth.destination, [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!((ip.source_addr(), ip.destination_addr()), (VIP, ALL_NODES));
        let expected =
            NeighborAdvertisementHeader { router: false, solicited: false, r#override: true };
        assert_eq!((flags, target, mac), (expected, VIP, OUR_MAC.octets()));
        assert_eq!(Ndp::Solicit(ns).neighbor(), None, "DAD names no neighbour");
    }

    #[test]
    fn answers_are_refused_to_a_group_or_into_a_short_buffer() {
        let ns = solicit(&Spec::solicit(PEER, VIP, sll(multicast_mac(ALL_NODES))));
        let mut buffer = [0u8; NDP_FRAME_LEN];
        assert_eq!(answer_solicit(&mut buffer, &ns, OUR_MAC), Err(WireError::Unsupported));
        let ns = solicit(&Spec::solicit(PEER, VIP, sll(PEER_MAC)));
        let mut short = [0u8; NDP_FRAME_LEN - 1];
        assert_eq!(answer_solicit(&mut short, &ns, OUR_MAC), Err(WireError::Truncated));
        assert_eq!(short, [0; NDP_FRAME_LEN - 1], "untouched");
    }

    #[test]
    fn solicitations_ask_from_the_box_address_to_the_solicited_node_group() {
        let mut buffer = [0u8; NDP_FRAME_LEN];
        let len = write_solicit(&mut buffer, OUR_MAC, OUR_IP, PEER).unwrap();
        let (eth, rest) = Ethernet2Header::from_slice(&buffer[..len]).unwrap();
        let (ip, rest) = Ipv6Header::from_slice(rest).unwrap();
        let group = solicited_node(PEER);
        assert_eq!(eth.destination, [0x33, 0x33, 0xff, 0, 0, 0x20]);
        assert_eq!((ip.source_addr(), ip.destination_addr()), (OUR_IP, group));
        let icmp = Icmpv6Slice::from_slice(rest).unwrap();
        assert_eq!(icmp.icmp_type(), Icmpv6Type::NeighborSolicitation);
        assert!(icmp.is_checksum_valid(ip.source, ip.destination));
        // The backend's view of it: a solicitation naming the box.
        let Ok(ndp) = parse(&buffer[..len]) else { panic!("refused") };
        assert_eq!(ndp.target(), PEER);
        assert_eq!(ndp.neighbor(), Some((OUR_IP, OUR_MAC)));
    }

    #[test]
    fn a_vip_coming_up_is_announced_to_all_nodes() {
        let mut buffer = [0u8; NDP_FRAME_LEN];
        let len = write_unsolicited(&mut buffer, OUR_MAC, VIP).unwrap();
        let (eth, ip, flags, target, mac) = read_advert(&buffer[..len]);
        assert_eq!((eth.destination, eth.source), ([0x33, 0x33, 0, 0, 0, 1], OUR_MAC.octets()));
        assert_eq!((ip.source_addr(), ip.destination_addr()), (VIP, ALL_NODES));
        let expected =
            NeighborAdvertisementHeader { router: false, solicited: false, r#override: true };
        assert_eq!((flags, target, mac), (expected, VIP, OUR_MAC.octets()));
        assert!(parse(&buffer[..len]).is_ok(), "valid for its receivers");
    }

    /// A probe is what a host's stack sends for a tentative address: from `::` to the
    /// solicited-node group, hop limit 255, no option (byte for byte etherparse's frame), and
    /// what receivers accept; a buffer one byte short is refused untouched.
    #[test]
    fn a_vip_is_probed_from_the_unspecified_address_to_its_solicited_node_group() {
        let mut buffer = [0xaau8; NDP_FRAME_LEN];
        let len = write_probe(&mut buffer, OUR_MAC, VIP).unwrap();
        assert_eq!(len, PROBE_FRAME_LEN);
        assert_eq!(len, NDP_FRAME_LEN - 8);
        let want = crate::testkit::neighbor_solicitation(OUR_MAC, Ipv6Addr::UNSPECIFIED, VIP, None);
        assert_eq!(buffer[..len], want[..]);
        let Ok(Ndp::Solicit(probe)) = parse(&buffer[..len]) else { panic!("refused") };
        assert_eq!(
            (probe.src, probe.dst, probe.target),
            (Ipv6Addr::UNSPECIFIED, solicited_node(VIP), VIP)
        );
        assert_eq!(Ndp::Solicit(probe).neighbor(), None, "a probe names no neighbour");
        let mut short = [0x55u8; PROBE_FRAME_LEN - 1];
        assert_eq!(write_probe(&mut short, OUR_MAC, VIP), Err(WireError::Truncated));
        assert!(short.iter().all(|b| *b == 0x55));
    }

    /// Every case RFC 4861 §7.1 (and RFC 6980 for fragments) says to discard, and every
    /// frame that is not NDP at all.
    #[test]
    fn refusals() {
        let group = solicited_node(VIP);
        let base = || Spec::solicit(PEER, VIP, sll(PEER_MAC));
        assert!(parse(&base().frame()).is_ok());
        let invalid = |spec: &Spec| Refused::Invalid {
            hop_limit: spec.hop_limit,
            src: spec.src,
            dst: spec.dst,
            target: spec.target,
        };
        let mut cases: Vec<(&str, Spec, Option<Refused>)> = Vec::new();
        let mut forwarded = base();
        forwarded.hop_limit = 254;
        cases.push(("hop limit 254: forwarded", forwarded, None));
        cases.push(("multicast target", Spec::solicit(PEER, ALL_NODES, sll(PEER_MAC)), None));
        let mut dad_unicast = Spec::solicit(Ipv6Addr::UNSPECIFIED, VIP, Vec::new());
        dad_unicast.dst = VIP;
        cases.push(("DAD to a unicast address", dad_unicast, None));
        let dad_with_option = Spec::solicit(Ipv6Addr::UNSPECIFIED, VIP, sll(PEER_MAC));
        cases.push(("DAD with a source link-layer option", dad_with_option, None));
        let mut solicited_to_group = Spec::advert(true, true, tll(PEER_MAC));
        solicited_to_group.dst = ALL_NODES;
        cases.push(("solicited advertisement to a group", solicited_to_group, None));
        let mut fragment = base();
        fragment.fragment = true;
        cases.push(("in a fragment", fragment, Some(Refused::Fragment)));
        for (name, spec, expected) in cases {
            let expected = expected.unwrap_or_else(|| invalid(&spec));
            assert_eq!(parse(&spec.frame()), Err(expected), "{name}");
        }

        let good = base().frame();
        let icmp = 14 + 40;
        let refused = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut frame = good.clone();
            edit(&mut frame);
            parse(&frame).unwrap_err()
        };
        assert_eq!(refused(&|f| f[icmp + 2] ^= 1), Refused::Checksum { src: PEER, dst: group });
        assert_eq!(refused(&|f| f[icmp + 1] = 1), Refused::Message(WireError::Malformed), "code");
        assert_eq!(
            refused(&|f| f[icmp] = 128),
            Refused::Message(WireError::Unsupported),
            "an echo request"
        );
        assert_eq!(refused(&|f| f[icmp + 25] = 0), Refused::Message(WireError::ZeroLengthOption));
        assert_eq!(refused(&|f| f[14 + 6] = 17), Refused::NotIcmpv6(17));
        assert_eq!(refused(&|f| f[12..14].copy_from_slice(&[8, 6])), Refused::NotIpv6(0x0806));
        assert_eq!(refused(&|f| f[14] = 0x45), Refused::Ipv6(WireError::BadVersion));
        // Truncated anywhere: never accepted, never a panic.
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        // The message cut short inside its option (payload length says so).
        let short = refused(&|f| {
            f[14 + 5] -= 4;
            f.truncate(f.len() - 4);
        });
        assert_eq!(short, Refused::Message(WireError::Truncated));
    }

    #[test]
    fn learning_follows_the_rfc_and_the_callers_policy() {
        let mut table = NeighborTable::<V6>::new(16);
        let now = Instant::from_secs(1);
        // A solicitation for a VIP: the solicitor is learned (xlb is about to answer).
        let ns = Ndp::Solicit(solicit(&Spec::solicit(PEER, VIP, sll(PEER_MAC))));
        assert_eq!(learn(&mut table, now, &ns, false), None, "not wanted, not known");
        assert_eq!(learn(&mut table, now, &ns, true), Some((PEER, PEER_MAC, Learned::New)));
        assert_eq!(table.lookup(PEER), Some(PEER_MAC));
        // Known now: refreshed even when not wanted.
        let later = Instant::from_secs(2);
        assert_eq!(
            learn(&mut table, later, &ns, false),
            Some((PEER, PEER_MAC, Learned::Unchanged))
        );
        assert_eq!(table.get(PEER).map(|n| n.updated), Some(later));
        // An advertisement with override clear confirms but does not replace.
        let keep = Ndp::Advert(parse_advert(Spec::advert(true, false, tll(OTHER_MAC))));
        assert_eq!(learn(&mut table, later, &keep, true), None);
        assert_eq!(table.lookup(PEER), Some(PEER_MAC));
        // With override set, it replaces.
        let replace = Ndp::Advert(parse_advert(Spec::advert(true, true, tll(OTHER_MAC))));
        assert_eq!(
            learn(&mut table, later, &replace, false),
            Some((PEER, OTHER_MAC, Learned::Updated))
        );
        assert_eq!(table.lookup(PEER), Some(OTHER_MAC));
        // Nothing from DAD, from an advertisement without its option, or a group MAC.
        let dad = Ndp::Solicit(solicit(&Spec::solicit(Ipv6Addr::UNSPECIFIED, VIP, Vec::new())));
        assert_eq!(learn(&mut table, later, &dad, true), None);
        let bare = Ndp::Advert(parse_advert(Spec::advert(true, true, Vec::new())));
        assert_eq!(learn(&mut table, later, &bare, true), None);
        let group_mac =
            Ndp::Advert(parse_advert(Spec::advert(true, true, tll(multicast_mac(ALL_NODES)))));
        assert_eq!(learn(&mut table, later, &group_mac, true), None);
        // A needed next hop is learned from an unsolicited advertisement; a static entry
        // is never overwritten.
        let gateway = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        table.set_needed([gateway]);
        let mut spec = Spec::advert(false, true, tll(PEER_MAC));
        (spec.src, spec.target, spec.dst) = (gateway, gateway, ALL_NODES);
        let unsolicited = Ndp::Advert(parse_advert(spec));
        assert_eq!(
            learn(&mut table, later, &unsolicited, false),
            Some((gateway, PEER_MAC, Learned::New))
        );
        table.insert_static(gateway, OTHER_MAC);
        assert_eq!(
            learn(&mut table, later, &unsolicited, false),
            Some((gateway, PEER_MAC, Learned::Static))
        );
        assert_eq!(table.lookup(gateway), Some(OTHER_MAC));
    }

    proptest::proptest! {
        /// Any bytes at all (a good frame with some flipped, or cut): no panic, and what is
        /// accepted etherparse reads as ICMPv6 NDP with a valid checksum and hop limit 255.
        #[test]
        fn parse_never_panics_and_accepts_only_valid_ndp(
            flips in proptest::collection::vec((0usize..96, proptest::prelude::any::<u8>()), 0..4),
            cut in 0usize..100,
            advert in proptest::prelude::any::<bool>(),
        ) {
            let spec = match advert {
                true => Spec::advert(false, true, tll(PEER_MAC)),
                false => Spec::solicit(PEER, VIP, sll(PEER_MAC)),
            };
            let mut frame = spec.frame();
            for (at, value) in flips {
                if let Some(byte) = frame.get_mut(at) {
                    *byte ^= value;
                }
            }
            frame.truncate(cut);
            if let Ok(ndp) = parse(&frame) {
                let (_, rest) = Ethernet2Header::from_slice(&frame).unwrap();
                let (ip, rest) = Ipv6Header::from_slice(rest).unwrap();
                proptest::prop_assert_eq!(ip.hop_limit, 255);
                let message = &rest[..usize::from(ip.payload_length)];
                let icmp = Icmpv6Slice::from_slice(message).unwrap();
                proptest::prop_assert!(icmp.is_checksum_valid(ip.source, ip.destination));
                proptest::prop_assert_eq!(ndp.target(), Ipv6Addr::from(<[u8; 16]>::try_from(&message[8..24]).unwrap()));
            }
        }
    }

    fn parse_advert(spec: Spec) -> Advert {
        match parse(&spec.frame()) {
            Ok(Ndp::Advert(a)) => a,
            other => panic!("not an advertisement: {other:?}"),
        }
    }

    /// Frames for an unresolved IPv6 backend are held, a solicitation goes out from the box's
    /// address, and the advertisement that answers it releases them in order.
    #[test]
    fn hold_and_release_with_ipv6_next_hops() {
        let mut table = NeighborTable::<V6>::new(16);
        let mut hold = HoldQueue::<V6>::default();
        let backend = PEER;
        table.set_needed([backend]);
        let t0 = Instant::from_secs(1);
        assert_eq!(table.lookup(backend), None);
        assert_eq!(hold.hold(t0, backend, IfaceId(0), &[1; 70]), Hold::HeldAskNow);
        assert_eq!(hold.hold(t0, backend, IfaceId(0), &[2; 80]), Hold::Held);
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21);
        assert_eq!(hold.hold(t0, other, IfaceId(1), &[3; 60]), Hold::HeldAskNow);
        assert_eq!(
            hold.unresolved().collect::<Vec<_>>(),
            [(backend, IfaceId(0)), (other, IfaceId(1))]
        );
        let mut ask = [0u8; NDP_FRAME_LEN];
        write_solicit(&mut ask, OUR_MAC, OUR_IP, backend).unwrap();
        // The backend answers the box.
        let answer = Spec::advert(true, true, tll(PEER_MAC));
        let ndp = Ndp::Advert(parse_advert(answer));
        let asked = hold.unresolved().any(|(hop, _)| hop == ndp.target());
        let (ip, mac, learned) = learn(&mut table, t0, &ndp, asked).unwrap();
        assert_eq!((ip, mac, learned), (backend, PEER_MAC, Learned::New));
        let mut released = Vec::new();
        assert_eq!(hold.release(ip, |egress, frame| released.push((egress, frame.to_vec()))), 2);
        assert_eq!(released, [(IfaceId(0), vec![1; 70]), (IfaceId(0), vec![2; 80])]);
        assert_eq!(hold.len(), 1, "the other next hop still waits");
        assert_eq!(hold.expire(t0.saturating_add(crate::arp::HOLD_TIMEOUT)), 1);
        assert!(hold.is_empty());
    }
}
