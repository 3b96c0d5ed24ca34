//! What a frame is: [`classify`] recognises the common frame in one pass over fixed
//! offsets, and the parsers give the [`Transport`] view (5-tuple and TCP flags) of a TCP/UDP
//! packet, checked step by step ([`transport`]), read again at fixed offsets
//! ([`plain_transport_at`]) or quoted in an ICMP error ([`quoted_transport`]).
//!
//! Invariants: the fast parsers only accept; what they accept the step-by-step checks accept
//! too, with the same [`Transport`] (a property test holds them to it). Nothing here writes
//! to the frame.

use std::net::Ipv4Addr;

use crate::conntrack::{Probe4, Quiet};
use crate::family::{Family, V4};
use crate::flow::{FlowKey, Proto};
use crate::hash::{TableSecret, table_hash, table_hash_wire};
use crate::snapshot::{
    OWNER_INTERFACE, OWNER_LOCAL, OWNER_NONE, OWNER_VIP, Owned, OwnerCode, OwnerLookup, Snapshot,
};
use crate::wire::checksum;
use crate::wire::ipv4::ip_proto;
use crate::wire::{EtherType, Ipv4Packet, MacAddr, TcpPacket, UdpPacket};

use super::ETH_LEN;

/// What [`classify`] made of a frame: the common case (TCP or UDP in IPv4 without options,
/// whole, with a right header checksum, sent to the ingress interface's MAC) by who it is
/// for, or anything else. A classified frame goes straight to [`CoreState::transport`],
/// its 5-tuple read again at fixed offsets ([`plain_transport_at`]), the checks not redone.
///
/// [`CoreState::transport`]: super::CoreState::transport
///
/// The classes of the owned addresses are numbered as the snapshot's owner table numbers
/// its owners (`Other` is the box's own address's: the kernel's), so a code becomes a
/// class without a translation ([`Class::of_owner_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Class {
    /// Not the common case: [`CoreState::process`] checks it step by step.
    ///
    /// [`CoreState::process`]: super::CoreState::process
    Other = OWNER_INTERFACE,
    /// To a VIP.
    ToVip = OWNER_VIP,
    /// To a FullNAT local address.
    ToLocal = OWNER_LOCAL,
    /// To no address of xlb's, from a NAT backend: maybe a reply.
    FromNatBackend = OWNER_NONE,
    /// IPv6 that looks like TCP or UDP without extension headers, sent to the ingress
    /// interface's MAC: checked step by step as [`Class::Other`] is, its connection-table
    /// lookup (in IPv6's table, for the key read at fixed offsets: `v6::parse::guess_key`)
    /// prepared with the batch's, so its cache misses overlap as IPv4's do.
    Ipv6,
}

impl Class {
    /// True for the classes of IPv4's common frame, which [`classify`] checked and
    /// [`plain_transport_at`] reads again.
    #[inline(always)]
    pub(super) fn is_plain_ipv4(self) -> bool {
        matches!(self, Class::ToVip | Class::ToLocal | Class::FromNatBackend)
    }

    /// The class of a TCP/UDP packet the step-by-step checks took, by the owner of its
    /// destination (`None`: from a NAT backend, to no address of xlb's).
    #[inline]
    pub(super) fn of_owner(owned: Option<Owned>) -> Class {
        match owned {
            Some(Owned::Vip) => Class::ToVip,
            Some(Owned::Local) => Class::ToLocal,
            Some(Owned::Interface(_)) => Class::Other,
            None => Class::FromNatBackend,
        }
    }

    /// The class of a frame to an address the owner table holds, by its code with the
    /// batch's `vip_codes` ([`vip_codes`]) applied: what [`Class::of_owner`] says of the
    /// owner, a VIP's class the batch's. The code's two bits are the class's number (the
    /// table never answers [`OWNER_NONE`], which would read as `FromNatBackend`).
    #[inline(always)]
    fn of_owner_code(code: OwnerCode) -> Class {
        match code & 3 {
            OWNER_INTERFACE => Class::Other,
            OWNER_VIP => Class::ToVip,
            OWNER_LOCAL => Class::ToLocal,
            _ => Class::FromNatBackend,
        }
    }
}

/// The mask a batch applies to the owner table's codes: all of them while the box forwards
/// for its VIPs (`vip` is [`Class::ToVip`]), else all but the VIP's bit, which makes a VIP's
/// code the box's own address's: [`Class::Other`], as `vip` is then.
#[inline(always)]
fn vip_codes(vip: Class) -> OwnerCode {
    const { assert!(OWNER_VIP & OWNER_LOCAL == 0 && OWNER_VIP & !1 == OWNER_INTERFACE) };
    if vip == Class::ToVip { OWNER_VIP | OWNER_LOCAL } else { OWNER_LOCAL }
}

/// The L4 view the pipeline needs of a TCP/UDP packet of family `F` (IPv4 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transport<F: Family = V4> {
    pub(super) key: FlowKey<F>,
    pub(super) tcp_flags: Option<u8>,
}

impl<F: Family> Transport<F> {
    /// The view of the packet an ICMP error quotes: its addresses and protocol, and the
    /// first 4 bytes of its TCP/UDP header (`ports`); no flags.
    #[inline]
    pub(super) fn quoted(src: F::Addr, dst: F::Addr, proto: Proto, ports: &[u8]) -> Option<Self> {
        let ports = ports.first_chunk::<4>()?;
        Some(Transport {
            key: FlowKey {
                src_addr: src,
                dst_addr: dst,
                src_port: u16::from_be_bytes([ports[0], ports[1]]),
                dst_port: u16::from_be_bytes([ports[2], ports[3]]),
                proto,
            },
            tcp_flags: None,
        })
    }
}

/// Recognises the common frame in one pass over fixed offsets: TCP or UDP in IPv4
/// ([`plain_segment`]) sent to `mac` (the ingress interface's), for a VIP or local address,
/// or from a NAT backend (maybe a reply); with the connection tables' hash of its 5-tuple
/// under `secret` (the IPv4 table's). A frame to a VIP gets `vip`: [`Class::ToVip`] while
/// the box forwards for its VIPs, [`Class::Other`] while it does not (a VRRP standby; the
/// step-by-step checks then drop it as `standby`), so the fleet's answer costs nothing per
/// frame beyond the owner lookup's (`owners`, the snapshot's owner table). [`Class::Other`]
/// for anything else (a broadcast, ARP, ICMP, the box's own address, traffic that is not
/// xlb's, anything malformed): [`CoreState::process`] then checks it step by step. Whatever
/// this classifies, those checks would have taken to [`CoreState::transport`] with the same
/// arguments. An IPv6 frame to `mac` that seems to be TCP or UDP is [`Class::Ipv6`], with
/// the hash under `secret6` (IPv6's table's) of the key it seems to carry: only a guess,
/// checked step by step like `Other`.
///
/// [`CoreState::process`]: super::CoreState::process
/// [`CoreState::transport`]: super::CoreState::transport
#[inline(always)]
pub(super) fn classify(
    snapshot: &Snapshot,
    owners: OwnerLookup<'_>,
    secret: &TableSecret,
    secret6: &TableSecret,
    vip: Class,
    mac: MacAddr,
    frame: &[u8],
) -> (Class, u64) {
    // The shortest common frame (a UDP header right after IPv4's 20 bytes): one length
    // check for every fixed offset read below; anything shorter is nothing `classify`
    // recognises (IPv6's guess needs more still).
    let Some(head) = frame.first_chunk::<{ ETH_LEN + 20 + 8 }>() else {
        return (Class::Other, 0);
    };
    // The destination MAC and the source's first two bytes in one load, the latter
    // shifted out.
    let Some(first) = head.first_chunk::<8>() else {
        return (Class::Other, 0);
    };
    if (u64::from_le_bytes(*first) ^ mac_word(mac)) << 16 != 0 {
        return (Class::Other, 0);
    }
    // The ethertype as the frame carries it (16-bit compares): IPv6, IPv4; anything else
    // is not a frame `classify` recognises. IPv4's version and header length (0x45) are
    // `plain_segment`'s first test.
    let ethertype = u16::from_ne_bytes([head[12], head[13]]);
    if ethertype == EtherType::IPV6.to_be() {
        return guess_ipv6(secret6, frame);
    }
    if ethertype != EtherType::IPV4.to_be() {
        return (Class::Other, 0);
    }
    let (Some(header), Some(packet)) = (head[ETH_LEN..].first_chunk::<20>(), frame.get(ETH_LEN..))
    else {
        return (Class::Other, 0);
    };
    // The addresses and ports as they lie: the hash takes them so, no key is built.
    let Some((_, segment)) = plain_segment(header, packet) else {
        return (Class::Other, 0);
    };
    let (Some(addrs), Some(ports)) = (header[12..].first_chunk::<8>(), segment.first_chunk())
    else {
        return (Class::Other, 0);
    };
    let src = Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
    let dst = [addrs[4], addrs[5], addrs[6], addrs[7]];
    let class = match owners.code(dst) {
        Some(code) => Class::of_owner_code(code & vip_codes(vip)),
        None if snapshot.owner_table().is_complete() => {
            if snapshot.is_nat_backend(src) {
                Class::FromNatBackend
            } else {
                Class::Other
            }
        }
        // Past the table's room: the owned map answers.
        None => match snapshot.owned(Ipv4Addr::from(dst)) {
            Some(Owned::Vip) => vip,
            Some(owned @ (Owned::Local | Owned::Interface(_))) => Class::of_owner(Some(owned)),
            None if snapshot.is_nat_backend(src) => Class::FromNatBackend,
            None => Class::Other,
        },
    };
    // The protocol byte itself (TCP's or UDP's number, `plain_segment` checked which).
    (class, table_hash_wire(secret, addrs, ports, header[9]))
}

/// `mac` as the low 48 bits of a little-endian word: a frame's first 8 bytes loaded so
/// (`u64::from_le_bytes`), shifted left by 16, equal it shifted so exactly when the frame
/// is sent to `mac`.
#[inline(always)]
fn mac_word(mac: MacAddr) -> u64 {
    let m = mac.0;
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

/// [`classify`] of an IPv6 frame: [`Class::Ipv6`] and its guessed key's hash, or `Other`.
/// Inlined: a call out of the batch loop made its registers move around it for every IPv6
/// frame.
#[inline(always)]
fn guess_ipv6(secret6: &TableSecret, frame: &[u8]) -> (Class, u64) {
    match super::v6::parse::guess_key(frame) {
        Some(key) => (Class::Ipv6, table_hash(secret6, &key)),
        None => (Class::Other, 0),
    }
}

/// The TCP/UDP view of a frame [`classify`] accepted, read again at the fixed offsets of
/// IPv4 without options (no check is redone: the frame has not changed since). None only
/// for a frame too short to be one (never, for a classified frame).
#[inline(always)]
pub(super) fn plain_transport_at(frame: &[u8]) -> Option<Transport> {
    let head = frame.first_chunk::<{ ETH_LEN + 20 + 8 }>()?;
    let (proto, tcp_flags) = if head[ETH_LEN + 9] == ip_proto::TCP {
        (Proto::Tcp, Some(*frame.get(ETH_LEN + 20 + 13)?))
    } else {
        (Proto::Udp, None)
    };
    let at = |offset: usize| [head[offset], head[offset + 1], head[offset + 2], head[offset + 3]];
    let ports = at(ETH_LEN + 20);
    Some(Transport {
        key: FlowKey {
            src_addr: Ipv4Addr::from(at(ETH_LEN + 12)),
            dst_addr: Ipv4Addr::from(at(ETH_LEN + 16)),
            src_port: u16::from_be_bytes([ports[0], ports[1]]),
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
            proto,
        },
        tcp_flags,
    })
}

/// What the settled hit looks a classified frame's flow up with: the probe of its 5-tuple
/// ([`Probe4::of_wire`] of the bytes [`plain_transport_at`] reads), without the
/// [`Transport`] built first, if the frame is quiet ([`Quiet`]: UDP, or TCP without SYN,
/// FIN and RST, tested where the flags are read). None for a noisy one (the settled hit
/// leaves it to the general way) and for a frame too short to be one (never, for a
/// classified frame).
#[inline(always)]
pub(super) fn plain_probe_at(frame: &[u8]) -> Option<Quiet<Probe4>> {
    // One length test for a frame as long as a whole TCP header's: the common case (every
    // TCP segment, most datagrams); a shorter one can only be a datagram.
    let Some(head) = frame.first_chunk::<{ ETH_LEN + 20 + 20 }>() else {
        let head = frame.first_chunk::<{ ETH_LEN + 20 + 8 }>()?;
        if head[ETH_LEN + 9] == ip_proto::TCP {
            return None;
        }
        return Quiet::new(probe_of_head(head, Proto::Udp)?, None);
    };
    // Each protocol's own branch: the flags are tested where they are read.
    if head[ETH_LEN + 9] == ip_proto::TCP {
        let flags = head[ETH_LEN + 20 + 13];
        Quiet::new(probe_of_head(head, Proto::Tcp)?, Some(flags))
    } else {
        Quiet::new(probe_of_head(head, Proto::Udp)?, None)
    }
}

/// [`Probe4::of_wire`] of the addresses and ports in `head`, a frame's first bytes: None
/// only if it ends before its transport header's ports (never for the heads above, whose
/// length the compiler knows: no test is left).
#[inline(always)]
fn probe_of_head<const N: usize>(head: &[u8; N], proto: Proto) -> Option<Probe4> {
    let addrs = head.get(ETH_LEN + 12..)?.first_chunk::<8>()?;
    let ports = head.get(ETH_LEN + 20..)?.first_chunk::<4>()?;
    Some(Probe4::of_wire(addrs, ports, proto))
}

/// The TCP/UDP view of the common packet, checked in one pass over fixed offsets
/// ([`plain_segment`]). `header` is the first 20 bytes of `packet`.
///
/// None for anything else, which the step-by-step checks then judge (and drop with their
/// exact reason): this only accepts, and what it accepts they accept too, with the same
/// [`Transport`] ([`transport`] on `packet[20..total_len]`). [`classify`] reads the same
/// bytes without building the view.
#[cfg(test)]
fn plain_transport(header: &[u8; 20], packet: &[u8]) -> Option<Transport> {
    let (proto, segment) = plain_segment(header, packet)?;
    let ports = segment.first_chunk::<4>()?;
    Some(Transport {
        key: FlowKey {
            src_addr: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
            dst_addr: Ipv4Addr::new(header[16], header[17], header[18], header[19]),
            src_port: u16::from_be_bytes([ports[0], ports[1]]),
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
            proto,
        },
        tcp_flags: (proto == Proto::Tcp).then(|| segment[13]),
    })
}

/// The checks of the common packet in one pass over fixed offsets: IPv4 without options
/// (first byte 0x45), all of it in the buffer (`total_len` ≥ 20), not a fragment, a right
/// header checksum, then a whole TCP header or UDP datagram. Its protocol and its segment
/// (`packet[20..total_len]`, which starts with that header); None for anything else.
/// `header` is the first 20 bytes of `packet`.
#[inline(always)]
fn plain_segment<'a>(header: &[u8; 20], packet: &'a [u8]) -> Option<(Proto, &'a [u8])> {
    // Bytes 0..8 as a little-endian word: version and header length (byte 0) must be 0x45,
    // the flags' MF bit and the fragment offset (the low 6 bits of byte 6 and byte 7) zero.
    const VERSION_AND_FRAGMENT: u64 = 0xff3f_0000_0000_00ff;
    const VERSION_4_NO_OPTIONS: u64 = 0x45;
    let (first, _) = header.split_first_chunk::<8>()?;
    if u64::from_le_bytes(*first) & VERSION_AND_FRAGMENT != VERSION_4_NO_OPTIONS {
        return None;
    }
    // `total_len` ≥ 20 and within the buffer in one compare: below 20, the segment's
    // length wraps past any buffer's.
    let segment_len = usize::from(u16::from_be_bytes([header[2], header[3]])).wrapping_sub(20);
    let segment = packet.get(20..)?.get(..segment_len)?;
    if !checksum::verifies(header) {
        return None;
    }
    let proto = match header[9] {
        ip_proto::TCP => {
            let tcp = segment.first_chunk::<20>()?;
            let header_len = usize::from(tcp[12] >> 4) * 4;
            if header_len < 20 || header_len > segment.len() {
                return None;
            }
            Proto::Tcp
        }
        ip_proto::UDP => {
            let udp = segment.first_chunk::<8>()?;
            let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            if len < 8 || len > segment.len() {
                return None;
            }
            Proto::Udp
        }
        _ => return None,
    };
    Some((proto, segment))
}

#[inline]
pub(super) fn transport(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    segment: &[u8],
) -> Option<Transport> {
    let (proto, src_port, dst_port, tcp_flags) = l4_header(protocol, segment)?;
    Some(Transport {
        key: FlowKey { src_addr: src, dst_addr: dst, src_port, dst_port, proto },
        tcp_flags,
    })
}

/// Protocol, ports and TCP flags of the TCP or UDP header at the start of `segment` (IP
/// protocol `protocol`, either family): None unless it holds a whole TCP header or UDP
/// datagram.
#[inline]
pub(super) fn l4_header(protocol: u8, segment: &[u8]) -> Option<(Proto, u16, u16, Option<u8>)> {
    match protocol {
        ip_proto::TCP => {
            let tcp = TcpPacket::new_checked(segment).ok()?;
            Some((Proto::Tcp, tcp.src_port(), tcp.dst_port(), Some(tcp.flags().0)))
        }
        ip_proto::UDP => {
            let udp = UdpPacket::new_checked(segment).ok()?;
            Some((Proto::Udp, udp.src_port(), udp.dst_port(), None))
        }
        _ => None,
    }
}

/// [`l4_header`] of a first fragment's `segment` (either family): the whole TCP header (its
/// flags; RFC 1858 and RFC 7112 want it in the first fragment), or the UDP header's 8 bytes,
/// whose length field is the whole datagram's and is not checked against the fragment.
#[inline]
pub(super) fn fragment_l4_header(
    protocol: u8,
    segment: &[u8],
) -> Option<(Proto, u16, u16, Option<u8>)> {
    match protocol {
        ip_proto::TCP => l4_header(protocol, segment),
        ip_proto::UDP => {
            let udp = segment.first_chunk::<8>()?;
            let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
            Some((Proto::Udp, port(0), port(2), None))
        }
        _ => None,
    }
}

/// The 5-tuple of the packet an ICMP error quotes (its IPv4 header and first 8 bytes).
pub(super) fn quoted_transport(icmp: &[u8]) -> Option<Transport> {
    let quote = icmp.get(8..)?;
    let header_len = usize::from(*quote.first()? & 0x0f) * 4;
    if quote.first()? >> 4 != 4 || header_len < 20 || quote.len() < header_len + 8 {
        return None;
    }
    let ip = Ipv4Packet::new_unchecked(quote);
    let proto = Proto::from_number(ip.protocol())?;
    Transport::quoted(ip.src_addr(), ip.dst_addr(), proto, &quote[header_len..header_len + 8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{IfaceId, owner_code};

    /// The owner table's codes, with the batch's VIP mask applied, are the classes
    /// `classify` gave the owners before the table (the owned map's answer, a VIP's the
    /// batch's), forwarding or standing by.
    #[test]
    fn owner_codes_are_the_owners_classes() {
        for vip in [Class::ToVip, Class::Other] {
            for owned in [Owned::Vip, Owned::Local, Owned::Interface(IfaceId(0))] {
                let expected = match owned {
                    Owned::Vip => vip,
                    _ => Class::of_owner(Some(owned)),
                };
                assert_eq!(Class::of_owner_code(owner_code(owned) & vip_codes(vip)), expected);
            }
        }
    }

    /// The step-by-step checks of `CoreState::ipv4` for a TCP/UDP packet, as one function.
    fn checked_transport(packet: &[u8]) -> Option<Transport> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        if !ip.verify_checksum() || ip.is_fragment() || ip.has_options() {
            return None;
        }
        let segment = packet.get(ip.header_len()..usize::from(ip.total_len()))?;
        transport(ip.src_addr(), ip.dst_addr(), ip.protocol(), segment)
    }

    proptest::proptest! {
        /// The one-pass check accepts the common packets, and whatever it accepts the
        /// step-by-step checks accept too, with the same view: damaged headers (any byte of
        /// the first 48 set to anything, with the header checksum made right again or not:
        /// versions, options, fragments, lengths, L4 header lengths) and cut or padded
        /// buffers included.
        #[test]
        fn plain_transport_accepts_only_what_the_full_checks_accept(
            udp in proptest::prelude::any::<bool>(),
            flags in 0u8..=0x3f,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            damage in proptest::collection::vec((0usize..48, proptest::prelude::any::<u8>()), 0..3),
            fix_checksum in proptest::prelude::any::<bool>(),
            cut in proptest::option::of(1usize..8),
            pad in 0usize..8,
        ) {
            use crate::testkit::{self, Flags};
            let mac = MacAddr([2, 0, 0, 0, 0, 1]);
            let (a, b) = ((Ipv4Addr::new(10, 0, 0, 1), 1234), (Ipv4Addr::new(10, 0, 0, 2), 80));
            let frame = if udp {
                testkit::udp(mac, mac, a, b, &payload)
            } else {
                let flags = Flags {
                    fin: flags & 1 != 0,
                    syn: flags & 2 != 0,
                    rst: flags & 4 != 0,
                    psh: flags & 8 != 0,
                    ack: flags & 16 != 0,
                };
                testkit::tcp(mac, mac, a, b, flags, &payload)
            };
            let mut packet = frame[ETH_LEN..].to_vec();
            let intact = plain_transport(packet.first_chunk().unwrap(), &packet);
            proptest::prop_assert!(intact.is_some());
            proptest::prop_assert_eq!(intact, checked_transport(&packet));
            for (at, byte) in &damage {
                if let Some(slot) = packet.get_mut(*at) {
                    *slot = *byte;
                }
            }
            if fix_checksum && packet.len() >= usize::from(packet[0] & 0x0f) * 4 {
                Ipv4Packet::new_unchecked(&mut packet[..]).fill_checksum();
            }
            packet.truncate(packet.len().saturating_sub(cut.unwrap_or(0)));
            packet.resize(packet.len() + pad, 0);
            if let Some(header) = packet.first_chunk::<20>() {
                let fast = plain_transport(header, &packet);
                if fast.is_some() {
                    proptest::prop_assert_eq!(fast, checked_transport(&packet));
                }
            }
        }

        /// The settled hit's probe of a frame is the probe of the key the general way reads
        /// from it, for TCP and UDP frames of any addresses and ports; none for a TCP segment
        /// with SYN, FIN or RST.
        #[test]
        fn plain_probe_is_the_probe_of_the_plain_key(
            udp in proptest::prelude::any::<bool>(),
            addrs in proptest::prelude::any::<(u32, u32)>(),
            ports in proptest::prelude::any::<(u16, u16)>(),
            flags in proptest::prelude::any::<u8>(),
        ) {
            use crate::conntrack::Layout;
            use crate::testkit::{self, Flags};
            use crate::wire::TcpFlags;
            let mac = MacAddr([2, 0, 0, 0, 0, 1]);
            let a = (Ipv4Addr::from_bits(addrs.0), ports.0);
            let b = (Ipv4Addr::from_bits(addrs.1), ports.1);
            let mut frame = if udp {
                testkit::udp(mac, mac, a, b, b"x")
            } else {
                testkit::tcp(mac, mac, a, b, Flags::default(), b"x")
            };
            if !udp {
                frame[ETH_LEN + 20 + 13] = flags;
            }
            let transport = plain_transport_at(&frame).expect("a whole frame");
            let expected = Quiet::new(V4::probe(&transport.key), transport.tcp_flags);
            let noisy = !udp && flags & (TcpFlags::SYN.0 | TcpFlags::FIN.0 | TcpFlags::RST.0) != 0;
            proptest::prop_assert_eq!(expected.is_none(), noisy);
            proptest::prop_assert_eq!(plain_probe_at(&frame), expected);
        }
    }
}
