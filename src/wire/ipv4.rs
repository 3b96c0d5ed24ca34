//! IPv4 headers (RFC 791), with the header-checksum updates NAT and forwarding need.
//!
//! [`Ipv4Packet`] views a buffer that starts with an IPv4 header. The packet proper ends at
//! the total-length field; bytes after it (Ethernet padding of short frames) are tolerated
//! and excluded from [`Ipv4Packet::payload`]. Options are skipped over, never interpreted.
//!
//! Rewrites keep the header checksum right without re-summing the header: addresses and the
//! TTL go through the RFC 1624 helpers in [`checksum`], whose results equal
//! a full recompute whenever the old checksum was right (the header's first byte is never
//! zero, so the -0 case of RFC 1624 §3 cannot arise).
//!
//! Invariant: once [`Ipv4Packet::new_checked`] has returned `Ok`, the version is 4, the
//! header length is at least 20, and the buffer holds `total_len >= header_len` bytes, so
//! [`Ipv4Packet::payload`] is exactly `header_len..total_len`. No accessor panics in any
//! case (see the [`wire`](super) module docs): after a setter writes an inconsistent length,
//! the payload is clamped to the buffer.

use std::net::Ipv4Addr;

use super::checksum;
use super::{
    Result, WireError, clamped, clamped_mut, read_array, read_u8, read_u16, write_array, write_u8,
    write_u16,
};

mod field {
    use crate::wire::Field;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const TTL_PROTOCOL: Field = 8..10;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// The length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = field::DST_ADDR.end;

/// The longest IPv4 header: IHL 15, 40 bytes of options.
pub const MAX_HEADER_LEN: usize = 60;

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers") xlb looks at, in IPv4's
/// protocol field and IPv6's next-header fields alike.
pub mod ip_proto {
    /// IPv6 hop-by-hop options (RFC 8200 §4.3); only directly after the IPv6 header.
    pub const HOP_BY_HOP: u8 = 0;
    /// Internet Control Message Protocol.
    pub const ICMP: u8 = 1;
    /// IPv4 in IPv4 (RFC 2003): tunnel mode's IPIP encapsulation.
    pub const IPIP: u8 = 4;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// IPv6 encapsulation (RFC 2473): tunnel mode's IPv6-in-IPv6.
    pub const IPV6_IN_IP: u8 = 41;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// IPv6 routing header (RFC 8200 §4.4).
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header (RFC 8200 §4.5).
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload (RFC 4303).
    pub const ESP: u8 = 50;
    /// Authentication header (RFC 4302).
    pub const AH: u8 = 51;
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header" (RFC 8200 §4.7): nothing follows.
    pub const NO_NEXT_HEADER: u8 = 59;
    /// IPv6 destination options (RFC 8200 §4.6).
    pub const DEST_OPTIONS: u8 = 60;
}

const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

view! {
    /// A view over an IPv4 packet.
    Ipv4Packet
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// The length of an IPv4 header without options.
    pub const MIN_HEADER_LEN: usize = MIN_HEADER_LEN;

    /// Wraps a buffer that holds a whole IPv4 packet, checking in this order: at least 20
    /// bytes ([`WireError::Truncated`]), version 4 ([`WireError::BadVersion`]), IHL at least 5
    /// ([`WireError::BadHeaderLen`]), the whole header present (`Truncated`), total length
    /// covering the header ([`WireError::BadTotalLen`]), the whole packet present
    /// (`Truncated`). Bytes past the total length are allowed.
    ///
    /// The checksum is not verified: that is [`Ipv4Packet::verify_checksum`]'s job.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if packet.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = packet.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if len < header_len {
            return Err(WireError::Truncated);
        }
        let total_len = usize::from(packet.total_len());
        if total_len < header_len {
            return Err(WireError::BadTotalLen);
        }
        if len < total_len {
            return Err(WireError::Truncated);
        }
        Ok(packet)
    }

    /// The version field (4 in a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// The header length in bytes: IHL × 4, between 20 and 60 in a checked packet.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(read_u8(self.buffer.as_ref(), field::VER_IHL) & 0x0f) * 4
    }

    /// Whether the header carries options (IHL > 5).
    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > MIN_HEADER_LEN
    }

    /// The DSCP and ECN byte (formerly type of service).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::DSCP_ECN)
    }

    /// The total length of the packet, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    fn flags_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// The don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DONT_FRAG != 0
    }

    /// The more-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MORE_FRAGS != 0
    }

    /// The fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & FRAG_OFFSET_MASK) * 8
    }

    /// Whether this is a fragment of a larger datagram: more-fragments set or a non-zero
    /// offset. Only the first fragment carries the transport header.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MORE_FRAGS | FRAG_OFFSET_MASK) != 0
    }

    /// The time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::TTL)
    }

    /// The protocol of the payload; compare with [`ip_proto`].
    #[inline]
    pub fn protocol(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// The header checksum as it is on the wire.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The header, options included (clamped to the buffer).
    #[inline]
    pub fn header(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), 0, self.header_len())
    }

    /// The options, between the fixed header and the payload (often empty).
    #[inline]
    pub fn options(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), MIN_HEADER_LEN, self.header_len())
    }

    /// The payload: bytes `header_len..total_len`, clamped to the buffer. Padding after the
    /// total length is not included.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), self.header_len(), usize::from(self.total_len()))
    }

    /// Whether the header checksum is right. (Either form of zero verifies.)
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(self.header())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version field (4 for IPv4), keeping the IHL.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let ihl = read_u8(self.buffer.as_ref(), field::VER_IHL) & 0x0f;
        write_u8(self.buffer.as_mut(), field::VER_IHL, (version << 4) | ihl);
    }

    /// Sets the header length in bytes, keeping the version. It should be a multiple of 4
    /// from 20 to 60; other values are rounded down and wrapped into the 4-bit field.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let version = read_u8(self.buffer.as_ref(), field::VER_IHL) & 0xf0;
        let ihl = ((len / 4) & 0x0f) as u8;
        write_u8(self.buffer.as_mut(), field::VER_IHL, version | ihl);
    }

    /// Sets the DSCP and ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        write_u8(self.buffer.as_mut(), field::DSCP_ECN, value);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    #[inline]
    fn set_flag(&mut self, flag: u16, on: bool) {
        let value = self.flags_offset();
        let value = if on { value | flag } else { value & !flag };
        write_u16(self.buffer.as_mut(), field::FLG_OFF, value);
    }

    /// Sets or clears the don't-fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, on: bool) {
        self.set_flag(FLAG_DONT_FRAG, on);
    }

    /// Sets or clears the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        self.set_flag(FLAG_MORE_FRAGS, on);
    }

    /// Sets the fragment offset in bytes; it should be a multiple of 8 (the low three bits
    /// are dropped).
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16) {
        let flags = self.flags_offset() & !FRAG_OFFSET_MASK;
        write_u16(self.buffer.as_mut(), field::FLG_OFF, flags | (offset / 8));
    }

    /// Sets the time to live (the checksum is not updated: see
    /// [`Ipv4Packet::decrement_ttl`]).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        write_u8(self.buffer.as_mut(), field::TTL, ttl);
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        write_u8(self.buffer.as_mut(), field::PROTOCOL, protocol);
    }

    /// Sets the header checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the source address (the checksum is not updated: see
    /// [`Ipv4Packet::rewrite_src_addr`]).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        write_array(self.buffer.as_mut(), field::SRC_ADDR, addr.octets());
    }

    /// Sets the destination address (the checksum is not updated: see
    /// [`Ipv4Packet::rewrite_dst_addr`]).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        write_array(self.buffer.as_mut(), field::DST_ADDR, addr.octets());
    }

    /// Recomputes the header checksum from scratch (for crafting packets).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let checksum = checksum::finish(checksum::sum(self.header(), 0));
        self.set_checksum(checksum);
    }

    /// The payload, writable: bytes `header_len..total_len`, clamped to the buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        clamped_mut(self.buffer.as_mut(), start, end)
    }

    /// Rewrites the source address and updates the header checksum incrementally (RFC 1624).
    /// Returns the old address.
    #[inline]
    pub fn rewrite_src_addr(&mut self, new: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr();
        self.set_src_addr(new);
        self.set_checksum(checksum::update_addr(self.checksum(), old, new));
        old
    }

    /// Rewrites the destination address and updates the header checksum incrementally
    /// (RFC 1624). Returns the old address.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, new: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr();
        self.set_dst_addr(new);
        self.set_checksum(checksum::update_addr(self.checksum(), old, new));
        old
    }

    /// Decrements TTL with an incremental checksum update (RFC 1624/1141). A TTL of 0 is
    /// left alone: a router drops such a packet (or answers time-exceeded) before it gets
    /// here, and wrapping to 255 would give it a new life.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let old = read_u16(self.buffer.as_ref(), field::TTL_PROTOCOL);
        if old >> 8 == 0 {
            return;
        }
        let new = old - 0x0100;
        write_u16(self.buffer.as_mut(), field::TTL_PROTOCOL, new);
        self.set_checksum(checksum::update_u16(self.checksum(), old, new));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use etherparse::{IpDscp, IpEcn, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options};
    use proptest::prelude::*;

    /// Serialises an etherparse header followed by `payload`, with the checksum computed.
    pub(in crate::wire) fn build(mut header: Ipv4Header, payload: &[u8]) -> Vec<u8> {
        header.total_len = (header.header_len() + payload.len()) as u16;
        header.header_checksum = header.calc_header_checksum();
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// A proptest strategy for IPv4 headers with every field random, options included.
    pub(in crate::wire) fn header_strategy(protocol: u8) -> impl Strategy<Value = Ipv4Header> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            (0u8..64, 0u8..4, any::<u16>(), any::<bool>()),
            (any::<bool>(), 0u16..0x2000),
            (0usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4)),
        )
            .prop_map(
                move |(src, dst, ttl, (dscp, ecn, ident, df), (mf, offset), options)| {
                    let mut header = Ipv4Header::new(0, ttl, IpNumber(protocol), src, dst).unwrap();
                    header.dscp = IpDscp::try_new(dscp).unwrap();
                    header.ecn = IpEcn::try_new(ecn).unwrap();
                    header.identification = ident;
                    header.dont_fragment = df;
                    header.more_fragments = mf;
                    header.fragment_offset = IpFragOffset::try_new(offset).unwrap();
                    header.options = Ipv4Options::try_from(&options[..]).unwrap();
                    header
                },
            )
    }

    fn known() -> Vec<u8> {
        let mut header =
            Ipv4Header::new(0, 64, IpNumber::UDP, [10, 1, 1, 20], [10, 1, 1, 10]).unwrap();
        header.identification = 0x1234;
        header.dscp = IpDscp::try_new(46).unwrap();
        header.ecn = IpEcn::try_new(1).unwrap();
        build(header, &[0xaa; 12])
    }

    #[test]
    fn getters_on_a_known_packet() {
        let bytes = known();
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert!(!ip.has_options());
        assert!(ip.options().is_empty());
        assert_eq!(ip.total_len(), 32);
        assert_eq!(ip.ident(), 0x1234);
        assert_eq!(ip.dscp_ecn(), (46 << 2) | 1);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert!(!ip.is_fragment());
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), ip_proto::UDP);
        assert_eq!(ip.checksum(), u16::from_be_bytes([bytes[10], bytes[11]]));
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 1, 1, 20));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 1, 1, 10));
        assert_eq!(ip.header(), &bytes[..20]);
        assert_eq!(ip.payload(), &[0xaa; 12]);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn setters_round_trip() {
        let mut bytes = known();
        bytes.extend_from_slice(&[0; 8]); // room for options
        let mut ip = Ipv4Packet::new_unchecked(&mut bytes[..]);
        ip.set_version(4);
        ip.set_header_len(24);
        ip.set_total_len(40);
        ip.set_ident(7);
        ip.set_dscp_ecn(0xff);
        ip.set_dont_frag(false);
        ip.set_more_frags(true);
        ip.set_frag_offset(1480);
        ip.set_ttl(3);
        ip.set_protocol(ip_proto::TCP);
        ip.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        ip.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        ip.fill_checksum();
        ip.payload_mut().fill(0x55);
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 24);
        assert!(ip.has_options());
        assert_eq!(ip.options().len(), 4);
        assert_eq!(ip.total_len(), 40);
        assert_eq!(ip.ident(), 7);
        assert_eq!(ip.dscp_ecn(), 0xff);
        assert!(!ip.dont_frag());
        assert!(ip.more_frags());
        assert_eq!(ip.frag_offset(), 1480);
        assert!(ip.is_fragment());
        assert_eq!(ip.ttl(), 3);
        assert_eq!(ip.protocol(), ip_proto::TCP);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        assert_eq!(ip.payload(), &[0x55; 16]);
        assert!(ip.verify_checksum());
        // etherparse agrees with every field.
        let (header, _) = Ipv4Header::from_slice(&bytes).unwrap();
        assert_eq!(header.header_len(), 24);
        assert_eq!((header.identification, header.time_to_live), (7, 3));
        assert_eq!((header.dont_fragment, header.more_fragments), (false, true));
        assert_eq!(header.fragment_offset.value(), 1480 / 8);
        assert_eq!(header.calc_header_checksum(), header.header_checksum);

        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_more_frags(false);
        assert!(ip.is_fragment(), "a non-zero offset alone makes a fragment");
        ip.set_frag_offset(0);
        assert!(!ip.is_fragment());
        ip.set_more_frags(true);
        assert!(ip.is_fragment());
        assert_eq!(ip.frag_offset(), 0);
    }

    #[test]
    fn new_checked_errors() {
        let good = known();
        let check = |bytes: &[u8]| Ipv4Packet::new_checked(bytes).map(|_| ());
        assert_eq!(check(&good), Ok(()));
        assert_eq!(check(&good[..19]), Err(WireError::Truncated));
        let mut bad = good.clone();
        bad[0] = 0x65;
        assert_eq!(check(&bad), Err(WireError::BadVersion));
        bad[0] = 0x44;
        assert_eq!(check(&bad), Err(WireError::BadHeaderLen));
        bad[0] = 0x4f; // 60-byte header in a 32-byte buffer
        assert_eq!(check(&bad), Err(WireError::Truncated));
        let mut bad = good.clone();
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(check(&bad), Err(WireError::BadTotalLen));
        bad[2..4].copy_from_slice(&33u16.to_be_bytes());
        assert_eq!(check(&bad), Err(WireError::Truncated));
        // Ethernet padding after the packet is allowed and excluded from the payload.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 14]);
        let ip = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(ip.payload(), &[0xaa; 12]);
    }

    #[test]
    fn inconsistent_lengths_after_setters_clamp_the_payload() {
        let mut bytes = known();
        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_total_len(u16::MAX);
        assert_eq!(ip.payload().len(), 12);
        ip.set_total_len(4);
        assert!(ip.payload().is_empty());
        ip.set_header_len(60);
        assert!(ip.payload_mut().is_empty());
        assert_eq!(ip.header().len(), 32);
        ip.fill_checksum();
        assert!(ip.verify_checksum());
    }

    #[test]
    fn decrement_ttl_stops_at_zero() {
        let mut bytes = known();
        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_ttl(1);
        ip.fill_checksum();
        ip.decrement_ttl();
        assert_eq!(ip.ttl(), 0);
        assert!(ip.verify_checksum());
        let before = ip.as_ref().to_vec();
        ip.decrement_ttl();
        assert_eq!(ip.as_ref(), &before[..]);
    }

    #[test]
    fn rewrite_from_a_zero_checksum_and_its_other_form() {
        // Pick the ident that makes the header sum fold to 0xffff: the checksum is then
        // 0x0000, and 0xffff also verifies. Either way a rewrite must give the recompute.
        let mut bytes = known();
        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_src_addr(Ipv4Addr::BROADCAST);
        ip.set_ident(0);
        ip.fill_checksum();
        let ident = ip.checksum(); // = 0xffff - fold(sum): adding it makes the sum ≡ 0.
        ip.set_ident(ident);
        ip.fill_checksum();
        assert_eq!(ip.checksum(), 0);
        for stored in [0x0000, 0xffff] {
            let mut copy = bytes.clone();
            let mut ip = Ipv4Packet::new_checked(&mut copy[..]).unwrap();
            ip.set_checksum(stored);
            assert!(ip.verify_checksum());
            // 255.255.255.255 -> 0.0.0.0 changes the sum by -2 * 0xffff ≡ 0, so the checksum
            // stays 0x0000; from a stored 0xffff, eqn. 3 computed naively sums to exactly 0
            // and would give 0xffff.
            ip.rewrite_src_addr(Ipv4Addr::UNSPECIFIED);
            assert_eq!(ip.checksum(), 0);
            // A rewrite to the same address must not flip the checksum to the other zero.
            ip.set_checksum(stored);
            ip.rewrite_dst_addr(ip.dst_addr());
            assert_eq!(ip.checksum(), 0);
            ip.rewrite_src_addr(Ipv4Addr::new(192, 168, 77, 1));
            ip.decrement_ttl();
            let incremental = ip.checksum();
            ip.fill_checksum();
            assert_eq!(incremental, ip.checksum());
        }
    }

    proptest! {
        #[test]
        fn rewrites_match_a_full_recompute(
            header in header_strategy(ip_proto::TCP),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            new_src in any::<[u8; 4]>(),
            new_dst in any::<[u8; 4]>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(header.source), Ipv4Addr::from(header.destination));
            let mut bytes = build(header, &payload);
            let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
            prop_assert!(ip.verify_checksum());
            let old_src = ip.rewrite_src_addr(Ipv4Addr::from(new_src));
            let old_dst = ip.rewrite_dst_addr(Ipv4Addr::from(new_dst));
            ip.decrement_ttl();
            prop_assert!(ip.verify_checksum());
            let ttl = ip.ttl();
            let (after, rest) = Ipv4Header::from_slice(&bytes).unwrap();
            prop_assert_eq!(Ipv4Addr::from(after.source), Ipv4Addr::from(new_src));
            prop_assert_eq!(Ipv4Addr::from(after.destination), Ipv4Addr::from(new_dst));
            prop_assert_eq!(after.time_to_live, ttl);
            prop_assert_eq!(after.header_checksum, after.calc_header_checksum());
            prop_assert_eq!(rest, &payload[..]);
            prop_assert_eq!((old_src, old_dst), (src, dst));
        }

        #[test]
        fn verify_checksum_agrees_with_etherparse(
            header in header_strategy(ip_proto::UDP),
            flip in any::<u16>(),
        ) {
            let mut bytes = build(header, &[]);
            let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
            let stored = ip.checksum() ^ flip;
            ip.set_checksum(stored);
            let verified = ip.verify_checksum();
            let (parsed, _) = Ipv4Header::from_slice(&bytes).unwrap();
            let computed = parsed.calc_header_checksum();
            // etherparse compares bit for bit; one's-complement arithmetic has two zeros, so
            // a stored 0xffff where the recompute gives 0x0000 verifies too.
            let same_number = stored == computed || (computed == 0 && stored == 0xffff);
            prop_assert_eq!(verified, same_number);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = bytes;
            match Ipv4Packet::new_checked(&mut bytes[..]) {
                Ok(mut ip) => {
                    let bytes_len = ip.as_ref().len();
                    let header_len = ip.header_len();
                    prop_assert!((20..=60).contains(&header_len));
                    prop_assert_eq!(ip.payload().len(), usize::from(ip.total_len()) - header_len);
                    let _ = (ip.version(), ip.dscp_ecn(), ip.ident(), ip.dont_frag());
                    let _ = (ip.more_frags(), ip.frag_offset(), ip.is_fragment(), ip.ttl());
                    let _ = (ip.protocol(), ip.checksum(), ip.src_addr(), ip.dst_addr());
                    let _ = (ip.options(), ip.has_options(), ip.verify_checksum());
                    ip.decrement_ttl();
                    ip.rewrite_src_addr(Ipv4Addr::LOCALHOST);
                    ip.rewrite_dst_addr(Ipv4Addr::BROADCAST);
                    ip.fill_checksum();
                    prop_assert!(ip.verify_checksum());
                    ip.set_header_len(usize::MAX);
                    ip.set_total_len(u16::MAX);
                    prop_assert_eq!(ip.header().len(), ip.as_ref().len().min(60));
                    prop_assert_eq!(ip.options().len(), ip.header().len() - 20);
                    prop_assert_eq!(ip.payload().len(), ip.as_ref().len().saturating_sub(60));
                    prop_assert_eq!(ip.payload_mut().len(), bytes_len.saturating_sub(60));
                }
                Err(_) => {
                    let ip = Ipv4Packet::new_unchecked(&bytes[..]);
                    let _ = (ip.payload(), ip.header(), ip.src_addr(), ip.verify_checksum());
                }
            }
        }
    }
}
