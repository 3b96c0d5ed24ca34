//! IPv6 headers (RFC 8200) and a bounded walk over their extension headers.
//!
//! [`Ipv6Packet`] views a buffer that starts with the 40-byte fixed header. The packet ends
//! at `40 + payload_len`; bytes after it (Ethernet padding) are tolerated and excluded from
//! [`Ipv6Packet::payload`]. IPv6 has no header checksum: rewriting an address changes only
//! the upper layer's checksum (its pseudo-header), which is the caller's job with
//! [`update_addr_v6`](super::checksum::update_addr_v6);
//! [`Ipv6Packet::rewrite_src_addr`] and [`Ipv6Packet::rewrite_dst_addr`] return the old
//! address for that.
//!
//! # Extension headers
//!
//! [`Ipv6Packet::ext_headers`] walks the chain from the fixed header's next-header field;
//! [`Ipv6Packet::upper_layer`] runs that walk to its end and gives the upper-layer protocol,
//! its offset and the fragment header's fields ([`UpperLayer`]). The walk knows the four
//! headers of RFC 8200 §4 whose length it can read and past which a node looks for ports:
//! hop-by-hop options (0), routing (43), fragment (44, always 8 bytes) and destination
//! options (60), each `(length + 1) × 8` bytes. Decisions, so a packet never surprises it:
//!
//! - **Hop-by-hop must come first** (RFC 8200 §4.1); one anywhere else is
//!   [`WireError::Malformed`].
//! - **At most one fragment header**; a second is `Malformed` (a fragment of a fragment is
//!   not a packet xlb can reason about).
//! - **ESP (50) and AH (51) end the walk** as upper-layer protocols, like TCP: ESP's next
//!   header is encrypted, and a balancer that rewrote an AH-protected packet would break its
//!   integrity check anyway, so neither is a header to look past. The same holds for every
//!   other number, the rarely used extension headers of RFC 7045 (mobility 135, HIP 139,
//!   shim6 140, experimental 253/254) included: they end the walk as "upper layers" xlb
//!   has no service for.
//! - **No next header (59) ends the walk** with protocol 59 and nothing after it.
//! - **Bounded**: more than [`MAX_EXT_HEADERS`] headers, or headers ending more than
//!   [`MAX_EXT_BYTES`] bytes into the payload, is [`WireError::ExtHeaderChainTooLong`]; a
//!   header that runs past the payload is [`WireError::Truncated`]. Each step advances at least
//!   8 bytes, so even without the bounds the walk would end; with them it costs at most a
//!   handful of reads whatever the packet says (RFC 7112 asks for the whole chain in the
//!   first fragment, and RFC 9098 reports that real networks drop long chains anyway).
//! - **Jumbograms** (RFC 2675, payload length 0 and a jumbo option) do not exist on the
//!   links xlb serves: the payload length is taken literally.
//!
//! Invariant: once [`Ipv6Packet::new_checked`] has returned `Ok`, the version is 6 and the
//! buffer holds `40 + payload_len` bytes, so [`Ipv6Packet::payload`] is exactly that range.
//! No accessor panics in any case (see the [`wire`](super) module docs), and the walk stays
//! inside [`Ipv6Packet::payload`] (clamped to the buffer).

use std::net::Ipv6Addr;

use super::ipv4::ip_proto;
use super::{
    Result, WireError, clamped, clamped_mut, read_array, read_u8, read_u16, read_u32, write_array,
    write_u8, write_u16, write_u32,
};

mod field {
    use crate::wire::Field;

    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;

    /// In an extension header (offsets from its start).
    pub const EXT_NEXT_HEADER: usize = 0;
    pub const EXT_LEN: usize = 1;
    /// In a routing header.
    pub const ROUTING_SEGMENTS_LEFT: usize = 3;
    /// In a fragment header: offset (13 bits) << 3 | reserved (2) | more fragments (1).
    pub const FRAG_OFF_M: Field = 2..4;
    pub const FRAG_IDENT: Field = 4..8;
}

/// The length of the IPv6 fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The most extension headers [`Ipv6Packet::ext_headers`] walks before giving up. RFC 8200
/// §4.1's recommended order has at most six (destination options twice); two more for slack.
pub const MAX_EXT_HEADERS: usize = 8;

/// How far into the payload the extension headers may reach (the end of the last one), in
/// bytes, before the walk gives up. Generous for real chains (a routing header with a few
/// segments, some options), small enough to bound the work.
pub const MAX_EXT_BYTES: usize = 1024;

/// The length of an IPv6 fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// Whether `next_header` names an extension header the walk looks past (see the module
/// docs for why ESP, AH and the RFC 7045 rarities are not among them).
#[inline]
pub fn is_walked_ext_header(next_header: u8) -> bool {
    matches!(
        next_header,
        ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::FRAGMENT | ip_proto::DEST_OPTIONS
    )
}

view! {
    /// A view over an IPv6 packet.
    Ipv6Packet
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// The length of the IPv6 fixed header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer that holds a whole IPv6 packet, checking in this order: at least 40
    /// bytes ([`WireError::Truncated`]), version 6 ([`WireError::BadVersion`]), the payload
    /// length within the buffer (`Truncated`). Bytes past the payload are allowed. The
    /// extension headers are not walked: that is [`Ipv6Packet::upper_layer`]'s job.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if packet.version() != 6 {
            return Err(WireError::BadVersion);
        }
        if len < HEADER_LEN + usize::from(packet.payload_len()) {
            return Err(WireError::Truncated);
        }
        Ok(packet)
    }

    /// Wraps the packet an ICMPv6 error quotes ([`Icmpv6Packet::invoking_packet`]): as much
    /// of it as fit in the error (RFC 4443 §2.4 c), so its payload length may claim more than
    /// the buffer holds. Checks only 40 bytes ([`WireError::Truncated`]) and version 6
    /// ([`WireError::BadVersion`]); [`Ipv6Packet::payload`] is then what was quoted, and
    /// [`Ipv6Packet::upper_layer`] walks it (a chain cut short by the quote is `Truncated`).
    ///
    /// [`Icmpv6Packet::invoking_packet`]: super::Icmpv6Packet::invoking_packet
    #[inline]
    pub fn new_quoted(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if packet.version() != 6 {
            return Err(WireError::BadVersion);
        }
        Ok(packet)
    }

    #[inline]
    fn ver_tc_flow(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// The version field (6 in a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    /// The traffic class: DSCP in the high six bits, ECN in the low two.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// The payload length: everything after the fixed header, extension headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// The fixed header's next-header field: the first extension header or the upper layer.
    #[inline]
    pub fn next_header(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::NEXT_HEADER)
    }

    /// The hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::HOP_LIMIT)
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The fixed header (clamped to the buffer).
    #[inline]
    pub fn header(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), 0, HEADER_LEN)
    }

    /// The payload: bytes `40..40 + payload_len`, clamped to the buffer. Extension headers
    /// are part of it.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), HEADER_LEN, HEADER_LEN + usize::from(self.payload_len()))
    }

    /// The extension headers, walked from the fixed header (see the module docs).
    #[inline]
    pub fn ext_headers(&self) -> ExtHeaders<'_> {
        ExtHeaders::new(self.next_header(), self.payload())
    }

    /// Walks the extension headers to the upper layer (see the module docs).
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        UpperLayer::find(self.next_header(), self.payload())
    }

    /// The upper-layer packet: the payload from `upper.offset` on (empty if out of range).
    #[inline]
    pub fn upper_layer_payload(&self, upper: &UpperLayer) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        clamped(self.buffer.as_ref(), upper.offset, end)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    fn set_ver_tc_flow(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, value);
    }

    /// Sets the version field (6 for IPv6), keeping traffic class and flow label.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let rest = self.ver_tc_flow() & 0x0fff_ffff;
        self.set_ver_tc_flow((u32::from(version & 0x0f) << 28) | rest);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, class: u8) {
        let rest = self.ver_tc_flow() & 0xf00f_ffff;
        self.set_ver_tc_flow(rest | (u32::from(class) << 20));
    }

    /// Sets the flow label (the high 12 bits of `label` are ignored).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let rest = self.ver_tc_flow() & 0xfff0_0000;
        self.set_ver_tc_flow(rest | (label & 0x000f_ffff));
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    /// Sets the fixed header's next-header field.
    #[inline]
    pub fn set_next_header(&mut self, next_header: u8) {
        write_u8(self.buffer.as_mut(), field::NEXT_HEADER, next_header);
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        write_u8(self.buffer.as_mut(), field::HOP_LIMIT, hop_limit);
    }

    /// Decrements the hop limit. A hop limit of 0 is left alone: a router drops such a packet
    /// (or answers time-exceeded) before it gets here, and wrapping to 255 would give it a
    /// new life. (No checksum to update: IPv6 has none in its header.)
    #[inline]
    pub fn decrement_hop_limit(&mut self) {
        let hop_limit = self.hop_limit();
        self.set_hop_limit(hop_limit.saturating_sub(1));
    }

    /// Sets the source address (no checksum is updated: see the module docs).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        write_array(self.buffer.as_mut(), field::SRC_ADDR, addr.octets());
    }

    /// Sets the destination address (no checksum is updated: see the module docs).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        write_array(self.buffer.as_mut(), field::DST_ADDR, addr.octets());
    }

    /// Sets the source address and returns the old one, for the upper layer's checksum
    /// update ([`checksum::update_addr_v6`](super::checksum::update_addr_v6)).
    #[inline]
    pub fn rewrite_src_addr(&mut self, new: Ipv6Addr) -> Ipv6Addr {
        let old = self.src_addr();
        self.set_src_addr(new);
        old
    }

    /// Sets the destination address and returns the old one, for the upper layer's checksum
    /// update.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, new: Ipv6Addr) -> Ipv6Addr {
        let old = self.dst_addr();
        self.set_dst_addr(new);
        old
    }

    /// The payload, writable: bytes `40..40 + payload_len`, clamped to the buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }

    /// The upper-layer packet, writable: the payload from `upper.offset` on.
    #[inline]
    pub fn upper_layer_payload_mut(&mut self, upper: &UpperLayer) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        clamped_mut(self.buffer.as_mut(), upper.offset, end)
    }
}

/// One extension header met by the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader {
    /// Which header this is: one of the numbers [`is_walked_ext_header`] accepts.
    pub kind: u8,
    /// Its next-header field.
    pub next_header: u8,
    /// Its offset from the start of the IPv6 header.
    pub offset: usize,
    /// Its length in bytes (a multiple of 8).
    pub len: usize,
    /// A routing header's segments-left field (RFC 8200 §4.4: how many listed nodes are
    /// still to be visited; not 0, the destination address is not the final one); 0 for
    /// any other header.
    pub segments_left: u8,
}

/// An iterator over the extension headers of a payload, bounded as the module docs say. It
/// yields each header, or one error and then nothing. It ends (yields `None`) at the first
/// next-header value that is not a walked extension header; [`ExtHeaders::protocol`] and
/// [`ExtHeaders::offset`] then give the upper layer.
#[derive(Debug, Clone)]
pub struct ExtHeaders<'a> {
    payload: &'a [u8],
    next_header: u8,
    /// Offset of the next header from the start of the payload.
    at: usize,
    count: usize,
    done: bool,
}

impl<'a> ExtHeaders<'a> {
    /// Walks `payload` (everything after the IPv6 fixed header), whose first header is
    /// `next_header`.
    #[inline]
    pub fn new(next_header: u8, payload: &'a [u8]) -> Self {
        ExtHeaders { payload, next_header, at: 0, count: 0, done: false }
    }

    /// The next-header value where the walk stands: after a walk that ended without an
    /// error, the upper-layer protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.next_header
    }

    /// Where the walk stands, from the start of the IPv6 header: after a walk that ended
    /// without an error, the upper layer's offset.
    #[inline]
    pub fn offset(&self) -> usize {
        HEADER_LEN + self.at
    }

    #[inline]
    fn step(&mut self) -> Result<ExtHeader> {
        let kind = self.next_header;
        if kind == ip_proto::HOP_BY_HOP && self.count > 0 {
            return Err(WireError::Malformed);
        }
        if self.count == MAX_EXT_HEADERS {
            return Err(WireError::ExtHeaderChainTooLong);
        }
        let rest = self.payload.get(self.at..).unwrap_or(&[]);
        if rest.len() < 2 {
            return Err(WireError::Truncated);
        }
        let len = match kind {
            ip_proto::FRAGMENT => FRAGMENT_HEADER_LEN,
            _ => (usize::from(read_u8(rest, field::EXT_LEN)) + 1) * 8,
        };
        if self.at + len > MAX_EXT_BYTES {
            return Err(WireError::ExtHeaderChainTooLong);
        }
        if rest.len() < len {
            return Err(WireError::Truncated);
        }
        let header = ExtHeader {
            kind,
            next_header: read_u8(rest, field::EXT_NEXT_HEADER),
            offset: HEADER_LEN + self.at,
            len,
            segments_left: match kind {
                ip_proto::ROUTING => read_u8(rest, field::ROUTING_SEGMENTS_LEFT),
                _ => 0,
            },
        };
        self.next_header = header.next_header;
        self.at += len;
        self.count += 1;
        Ok(header)
    }
}

impl Iterator for ExtHeaders<'_> {
    type Item = Result<ExtHeader>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || !is_walked_ext_header(self.next_header) {
            self.done = true;
            return None;
        }
        let step = self.step();
        self.done = step.is_err();
        Some(step)
    }
}

/// The fields of an IPv6 fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The fragment's offset in the original payload, in bytes (a multiple of 8).
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more_frags: bool,
    /// The identification.
    pub ident: u32,
}

impl Fragment {
    /// Whether this is a real fragment (not an RFC 6946 atomic fragment, offset 0 and M
    /// clear, which holds the whole packet). Only the first fragment holds the upper-layer
    /// header.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.offset != 0 || self.more_frags
    }
}

/// Where the upper layer of an IPv6 packet starts, as [`Ipv6Packet::upper_layer`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol: TCP, UDP, ICMPv6, no next header, ESP, AH or anything else
    /// that is not a walked extension header.
    pub protocol: u8,
    /// Its offset from the start of the IPv6 header (40 with no extension headers). In a
    /// fragment with a non-zero offset, what lies there is a piece of the upper-layer packet,
    /// not its header.
    pub offset: usize,
    /// The fragment header's fields, if the chain has one.
    pub fragment: Option<Fragment>,
    /// How many extension headers precede the upper layer.
    pub ext_headers: usize,
}

impl UpperLayer {
    /// Walks `payload` from `next_header` to the upper layer (see the module docs).
    #[inline]
    pub fn find(next_header: u8, payload: &[u8]) -> Result<UpperLayer> {
        let mut walk = ExtHeaders::new(next_header, payload);
        let mut fragment = None;
        let mut count = 0;
        for header in walk.by_ref() {
            let header = header?;
            count += 1;
            if header.kind != ip_proto::FRAGMENT {
                continue;
            }
            if fragment.is_some() {
                return Err(WireError::Malformed);
            }
            let start = header.offset - HEADER_LEN;
            let bytes = clamped(payload, start, start + FRAGMENT_HEADER_LEN);
            let off_m = read_u16(bytes, field::FRAG_OFF_M);
            fragment = Some(Fragment {
                offset: off_m & 0xfff8,
                more_frags: off_m & 1 != 0,
                ident: read_u32(bytes, field::FRAG_IDENT),
            });
        }
        Ok(UpperLayer {
            protocol: walk.protocol(),
            offset: walk.offset(),
            fragment,
            ext_headers: count,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use etherparse::{
        IpFragOffset, IpNumber, Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
    };
    use proptest::prelude::*;

    /// Serialises an etherparse header followed by `payload`, with the payload length set.
    pub(in crate::wire) fn build(mut header: Ipv6Header, payload: &[u8]) -> Vec<u8> {
        header.payload_length = payload.len() as u16;
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// A header with the given next header and addresses, every other field zero but the
    /// hop limit (64).
    pub(in crate::wire) fn header(next_header: u8, src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Header {
        Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: IpNumber(next_header),
            hop_limit: 64,
            source: src.octets(),
            destination: dst.octets(),
        }
    }

    /// An extension header of `kind` (not fragment) with `words` 8-byte units and `next`.
    fn raw_ext(next: u8, words: usize, fill: u8) -> Vec<u8> {
        let payload = vec![fill; words * 8 - 2];
        Ipv6RawExtHeader::new_raw(IpNumber(next), &payload).unwrap().to_bytes().to_vec()
    }

    fn frag_ext(next: u8, offset_units: u16, more: bool, ident: u32) -> Vec<u8> {
        let offset = IpFragOffset::try_new(offset_units).unwrap();
        Ipv6FragmentHeader::new(IpNumber(next), offset, more, ident).to_bytes().to_vec()
    }

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    fn known() -> Vec<u8> {
        let mut h = header(ip_proto::UDP, SRC, DST);
        h.traffic_class = 0xb8;
        h.flow_label = Ipv6FlowLabel::try_new(0x12345).unwrap();
        build(h, &[0xaa; 12])
    }

    #[test]
    fn getters_on_a_known_packet() {
        let bytes = known();
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0xb8);
        assert_eq!(ip.flow_label(), 0x12345);
        assert_eq!(ip.payload_len(), 12);
        assert_eq!(ip.next_header(), ip_proto::UDP);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (SRC, DST));
        assert_eq!(ip.header(), &bytes[..40]);
        assert_eq!(ip.payload(), &[0xaa; 12]);
        let upper = ip.upper_layer().unwrap();
        assert_eq!(
            upper,
            UpperLayer { protocol: ip_proto::UDP, offset: 40, fragment: None, ext_headers: 0 }
        );
        assert_eq!(ip.upper_layer_payload(&upper), &[0xaa; 12]);
        assert_eq!(ip.ext_headers().count(), 0);
    }

    #[test]
    fn setters_round_trip() {
        let mut bytes = known();
        bytes.extend_from_slice(&[0; 4]);
        let mut ip = Ipv6Packet::new_unchecked(&mut bytes[..]);
        ip.set_version(6);
        ip.set_traffic_class(0x03);
        ip.set_flow_label(0xfff_ffff);
        ip.set_payload_len(16);
        ip.set_next_header(ip_proto::TCP);
        ip.set_hop_limit(2);
        assert_eq!(ip.rewrite_src_addr(Ipv6Addr::LOCALHOST), SRC);
        assert_eq!(ip.rewrite_dst_addr(SRC), DST);
        ip.decrement_hop_limit();
        ip.payload_mut().fill(0x55);
        assert_eq!((ip.version(), ip.traffic_class(), ip.flow_label()), (6, 0x03, 0xf_ffff));
        assert_eq!((ip.payload_len(), ip.next_header(), ip.hop_limit()), (16, ip_proto::TCP, 1));
        assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv6Addr::LOCALHOST, SRC));
        assert_eq!(ip.payload(), &[0x55; 16]);
        ip.decrement_hop_limit();
        ip.decrement_hop_limit();
        assert_eq!(ip.hop_limit(), 0, "a hop limit of 0 stays 0");
        // etherparse agrees with every field.
        let (h, rest) = Ipv6Header::from_slice(&bytes).unwrap();
        assert_eq!((h.traffic_class, h.flow_label.value(), h.payload_length), (3, 0xf_ffff, 16));
        assert_eq!((h.next_header, h.hop_limit), (IpNumber::TCP, 0));
        assert_eq!((h.source_addr(), h.destination_addr()), (Ipv6Addr::LOCALHOST, SRC));
        assert_eq!(rest, &[0x55; 16]);
    }

    #[test]
    fn new_checked_errors() {
        let good = known();
        let check = |bytes: &[u8]| Ipv6Packet::new_checked(bytes).map(|_| ());
        assert_eq!(check(&good), Ok(()));
        for cut in 0..good.len() {
            assert_eq!(check(&good[..cut]), Err(WireError::Truncated), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = 0x45;
        assert_eq!(check(&bad), Err(WireError::BadVersion));
        // A payload length one byte beyond the buffer.
        let mut bad = good.clone();
        bad[4..6].copy_from_slice(&13u16.to_be_bytes());
        assert_eq!(check(&bad), Err(WireError::Truncated));
        bad[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(check(&bad), Err(WireError::Truncated));
        // Shorter than the buffer: padding, excluded from the payload.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 14]);
        assert_eq!(Ipv6Packet::new_checked(&padded[..]).unwrap().payload(), &[0xaa; 12]);
        bad[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(Ipv6Packet::new_checked(&bad[..]).unwrap().payload(), &[0xaa; 4]);
    }

    /// hop-by-hop, destination options, routing, fragment, destination options, then TCP.
    fn full_chain() -> Vec<u8> {
        let mut payload = raw_ext(ip_proto::DEST_OPTIONS, 1, 0);
        payload.extend(raw_ext(ip_proto::ROUTING, 2, 1));
        payload.extend(raw_ext(ip_proto::FRAGMENT, 3, 2));
        payload.extend(frag_ext(ip_proto::DEST_OPTIONS, 0, true, 0xdead_beef));
        payload.extend(raw_ext(ip_proto::TCP, 1, 3));
        payload.extend_from_slice(&[0x77; 20]);
        build(header(ip_proto::HOP_BY_HOP, SRC, DST), &payload)
    }

    #[test]
    fn walks_a_full_chain() {
        let bytes = full_chain();
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        let headers: Vec<ExtHeader> = ip.ext_headers().map(|h| h.unwrap()).collect();
        let kinds: Vec<(u8, usize, usize)> =
            headers.iter().map(|h| (h.kind, h.offset, h.len)).collect();
        assert_eq!(
            kinds,
            [
                (ip_proto::HOP_BY_HOP, 40, 8),
                (ip_proto::DEST_OPTIONS, 48, 16),
                (ip_proto::ROUTING, 64, 24),
                (ip_proto::FRAGMENT, 88, 8),
                (ip_proto::DEST_OPTIONS, 96, 8),
            ]
        );
        // The routing header's fourth byte (its fill, 2) is its segments left.
        let segments_left: Vec<u8> = headers.iter().map(|h| h.segments_left).collect();
        assert_eq!(segments_left, [0, 0, 2, 0, 0]);
        let upper = ip.upper_layer().unwrap();
        assert_eq!(upper.protocol, ip_proto::TCP);
        assert_eq!(upper.offset, 104);
        assert_eq!(upper.ext_headers, 5);
        let fragment = upper.fragment.unwrap();
        assert_eq!(fragment, Fragment { offset: 0, more_frags: true, ident: 0xdead_beef });
        assert!(fragment.is_fragment());
        assert_eq!(ip.upper_layer_payload(&upper), &[0x77; 20]);
    }

    #[test]
    fn a_chain_truncated_anywhere_is_an_error_not_a_panic() {
        let bytes = full_chain();
        for cut in 40..104 {
            // Cut the buffer and claim a payload that ends there: the walk must refuse.
            let mut short = bytes[..cut].to_vec();
            short[4..6].copy_from_slice(&((cut - 40) as u16).to_be_bytes());
            let ip = Ipv6Packet::new_checked(&short[..]).unwrap();
            assert_eq!(ip.upper_layer(), Err(WireError::Truncated), "cut at {cut}");
            // The buffer long, the payload length short: the same (the walk stays inside the
            // payload).
            let mut long = bytes.clone();
            long[4..6].copy_from_slice(&((cut - 40) as u16).to_be_bytes());
            let ip = Ipv6Packet::new_checked(&long[..]).unwrap();
            assert_eq!(ip.upper_layer(), Err(WireError::Truncated), "length cut at {cut}");
        }
    }

    #[test]
    fn fragment_fields_and_atomic_fragments() {
        let mut payload = frag_ext(ip_proto::UDP, 185, false, 7);
        payload.extend_from_slice(&[0; 8]);
        let bytes = build(header(ip_proto::FRAGMENT, SRC, DST), &payload);
        let upper = Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
        let fragment = upper.fragment.unwrap();
        assert_eq!(fragment, Fragment { offset: 1480, more_frags: false, ident: 7 });
        assert!(fragment.is_fragment());
        assert_eq!((upper.protocol, upper.offset), (ip_proto::UDP, 48));
        let atomic =
            build(header(ip_proto::FRAGMENT, SRC, DST), &frag_ext(ip_proto::UDP, 0, false, 9));
        let upper = Ipv6Packet::new_checked(&atomic[..]).unwrap().upper_layer().unwrap();
        assert!(!upper.fragment.unwrap().is_fragment());
        // Two fragment headers: refused.
        let mut payload = frag_ext(ip_proto::FRAGMENT, 0, true, 1);
        payload.extend(frag_ext(ip_proto::UDP, 0, true, 2));
        let bytes = build(header(ip_proto::FRAGMENT, SRC, DST), &payload);
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.upper_layer(), Err(WireError::Malformed));
    }

    #[test]
    fn a_quoted_packet_is_walked_as_far_as_it_goes() {
        // A 1500-byte TCP packet behind destination options, quoted in 1232 bytes.
        let mut payload = raw_ext(ip_proto::TCP, 1, 0);
        payload.extend_from_slice(&[0x11; 1452]);
        let packet = build(header(ip_proto::DEST_OPTIONS, SRC, DST), &payload);
        let quote = &packet[..1232];
        assert_eq!(Ipv6Packet::new_checked(quote).unwrap_err(), WireError::Truncated);
        let ip = Ipv6Packet::new_quoted(quote).unwrap();
        assert_eq!((ip.payload_len(), ip.payload().len()), (1460, 1192));
        let upper = ip.upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset), (ip_proto::TCP, 48));
        assert_eq!(ip.upper_layer_payload(&upper).len(), 1184);
        // Cut inside the extension header: the walk says so.
        let ip = Ipv6Packet::new_quoted(&packet[..44]).unwrap();
        assert_eq!(ip.upper_layer(), Err(WireError::Truncated));
        assert_eq!(Ipv6Packet::new_quoted(&packet[..39]).unwrap_err(), WireError::Truncated);
        let mut v4 = packet.clone();
        v4[0] = 0x45;
        assert_eq!(Ipv6Packet::new_quoted(&v4[..]).unwrap_err(), WireError::BadVersion);
    }

    #[test]
    fn hop_by_hop_only_first() {
        let mut payload = raw_ext(ip_proto::HOP_BY_HOP, 1, 0);
        payload.extend(raw_ext(ip_proto::TCP, 1, 0));
        let bytes = build(header(ip_proto::DEST_OPTIONS, SRC, DST), &payload);
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.upper_layer(), Err(WireError::Malformed));
        // The iterator yields the good header, then the error, then nothing.
        let mut walk = ip.ext_headers();
        assert!(walk.next().unwrap().is_ok());
        assert_eq!(walk.next(), Some(Err(WireError::Malformed)));
        assert_eq!(walk.next(), None);
    }

    #[test]
    fn chains_that_never_end_or_run_too_long_are_refused() {
        // Destination options pointing at destination options, filling the payload: the
        // walk stops after MAX_EXT_HEADERS, whatever the payload holds.
        let mut payload = Vec::new();
        for _ in 0..64 {
            payload.extend(raw_ext(ip_proto::DEST_OPTIONS, 1, 0));
        }
        let bytes = build(header(ip_proto::DEST_OPTIONS, SRC, DST), &payload);
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.upper_layer(), Err(WireError::ExtHeaderChainTooLong));
        assert_eq!(ip.ext_headers().count(), MAX_EXT_HEADERS + 1);
        // Exactly MAX_EXT_HEADERS headers, then TCP: fine.
        let mut payload = Vec::new();
        for i in 0..MAX_EXT_HEADERS {
            let next =
                if i + 1 == MAX_EXT_HEADERS { ip_proto::TCP } else { ip_proto::DEST_OPTIONS };
            payload.extend(raw_ext(next, 1, 0));
        }
        let bytes = build(header(ip_proto::DEST_OPTIONS, SRC, DST), &payload);
        let upper = Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset), (ip_proto::TCP, 40 + 8 * MAX_EXT_HEADERS));
        // A chain that never ends because it runs out of payload: truncated.
        let bytes = build(header(ip_proto::DEST_OPTIONS, SRC, DST), &payload[..8 * 3]);
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.upper_layer(), Err(WireError::Truncated));
        // One header longer than MAX_EXT_BYTES (255 units = 2048 bytes), present in full.
        let mut payload = raw_ext(ip_proto::TCP, 256, 0);
        payload.extend_from_slice(&[0; 20]);
        let bytes = build(header(ip_proto::HOP_BY_HOP, SRC, DST), &payload);
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.upper_layer(), Err(WireError::ExtHeaderChainTooLong));
    }

    #[test]
    fn esp_ah_and_no_next_header_end_the_walk() {
        for protocol in [ip_proto::ESP, ip_proto::AH, ip_proto::NO_NEXT_HEADER, 135, 253] {
            let mut payload = raw_ext(protocol, 1, 0);
            payload.extend_from_slice(&[0xff; 16]);
            let bytes = build(header(ip_proto::DEST_OPTIONS, SRC, DST), &payload);
            let upper = Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
            assert_eq!((upper.protocol, upper.offset, upper.ext_headers), (protocol, 48, 1));
        }
        // No next header directly after the fixed header, with nothing after it.
        let bytes = build(header(ip_proto::NO_NEXT_HEADER, SRC, DST), &[]);
        let upper = Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset), (ip_proto::NO_NEXT_HEADER, 40));
    }

    /// A chain of walked extension headers as etherparse writes them: hop-by-hop only first,
    /// the rest in any order, at most one fragment header.
    fn chain_strategy() -> impl Strategy<Value = (u8, Vec<u8>, Option<(u16, bool, u32)>)> {
        (
            any::<bool>(),
            proptest::collection::vec((0u8..2, 1usize..4, any::<u8>()), 0..5),
            proptest::option::of((
                0u16..0x2000,
                any::<bool>(),
                any::<u32>(),
                any::<prop::sample::Index>(),
            )),
            prop::sample::select(vec![
                ip_proto::TCP,
                ip_proto::UDP,
                ip_proto::ICMPV6,
                59,
                50,
                51,
                200,
            ]),
        )
            .prop_map(|(hop, middle, fragment, upper)| {
                // The kinds in order, then each header pointing at the next.
                let mut kinds: Vec<(u8, usize, u8)> = Vec::new();
                if hop {
                    kinds.push((ip_proto::HOP_BY_HOP, 1, 0));
                }
                for (kind, words, fill) in middle {
                    let kind = if kind == 0 { ip_proto::ROUTING } else { ip_proto::DEST_OPTIONS };
                    kinds.push((kind, words, fill));
                }
                if let Some((_, _, _, at)) = fragment {
                    let at = at.index(kinds.len() + 1).max(usize::from(hop));
                    kinds.insert(at, (ip_proto::FRAGMENT, 1, 0));
                }
                let first = kinds.first().map_or(upper, |k| k.0);
                let mut bytes = Vec::new();
                for (i, &(kind, words, fill)) in kinds.iter().enumerate() {
                    let next = kinds.get(i + 1).map_or(upper, |k| k.0);
                    if kind == ip_proto::FRAGMENT {
                        let (offset, more, ident, _) = fragment.unwrap();
                        bytes.extend(frag_ext(next, offset, more, ident));
                    } else {
                        bytes.extend(raw_ext(next, words, fill));
                    }
                }
                (first, bytes, fragment.map(|(o, m, i, _)| (o, m, i)))
            })
    }

    proptest! {
        #[test]
        fn the_walk_agrees_with_etherparse(
            (first, chain, fragment) in chain_strategy(),
            src in any::<u128>(),
            dst in any::<u128>(),
            upper_bytes in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut payload = chain.clone();
            payload.extend_from_slice(&upper_bytes);
            let bytes = build(header(first, Ipv6Addr::from_bits(src), Ipv6Addr::from_bits(dst)), &payload);
            let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
            let (oracle, rest) = Ipv6Header::from_slice(&bytes).unwrap();
            prop_assert_eq!(ip.src_addr(), oracle.source_addr());
            prop_assert_eq!(ip.dst_addr(), oracle.destination_addr());
            prop_assert_eq!(ip.payload(), rest);
            let ours = ip.upper_layer().unwrap();
            prop_assert_eq!(ours.offset, 40 + chain.len());
            // etherparse skips AH too; the walk stops at it (see the module docs).
            if ours.protocol != ip_proto::AH {
                let (protocol, upper) =
                    Ipv6Header::skip_all_header_extensions_in_slice(rest, oracle.next_header)
                        .unwrap();
                prop_assert_eq!(ours.protocol, protocol.0);
                prop_assert_eq!(ours.offset, bytes.len() - upper.len());
            }
            let expected = fragment.map(|(offset, more_frags, ident)| Fragment { offset: offset * 8, more_frags, ident });
            prop_assert_eq!(ours.fragment, expected);
            prop_assert_eq!(ip.upper_layer_payload(&ours), &upper_bytes[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = bytes;
            if let Some(first) = bytes.first_mut() {
                *first = 0x60 | (*first & 0x0f); // mostly version 6, to get past new_checked
            }
            match Ipv6Packet::new_checked(&mut bytes[..]) {
                Ok(mut ip) => {
                    prop_assert_eq!(ip.payload().len(), usize::from(ip.payload_len()));
                    let _ = (ip.traffic_class(), ip.flow_label(), ip.next_header(), ip.hop_limit());
                    let _ = (ip.src_addr(), ip.dst_addr(), ip.header());
                    let walked = ip.ext_headers().count();
                    prop_assert!(walked <= MAX_EXT_HEADERS + 1);
                    if let Ok(upper) = ip.upper_layer() {
                        prop_assert!(upper.offset <= 40 + usize::from(ip.payload_len()));
                        prop_assert!(upper.offset <= 40 + MAX_EXT_BYTES);
                        prop_assert!(!is_walked_ext_header(upper.protocol));
                        let _ = ip.upper_layer_payload_mut(&upper);
                    }
                    ip.decrement_hop_limit();
                    ip.rewrite_src_addr(Ipv6Addr::LOCALHOST);
                    ip.set_payload_len(u16::MAX);
                    prop_assert_eq!(ip.payload().len(), ip.as_ref().len() - 40);
                    let _ = ip.upper_layer();
                }
                Err(_) => {
                    let ip = Ipv6Packet::new_unchecked(&bytes[..]);
                    let _ = (ip.payload(), ip.header(), ip.src_addr(), ip.upper_layer());
                }
            }
        }
    }
}

/// TCP, UDP and ICMPv6 over IPv6: the checksum helpers agree with etherparse's, and a NAT
/// rewrite (addresses in the IPv6 header, ports in the transport header, every checksum
/// updated incrementally) leaves the bytes etherparse builds for the rewritten packet.
#[cfg(test)]
mod upper_layer_checksums {
    use super::tests::{build, header};
    use super::*;
    use crate::wire::checksum::{self, Delta};
    use crate::wire::{TcpPacket, UdpPacket};
    use etherparse::{IpNumber, Ipv6RawExtHeader, TcpHeader, UdpHeader};
    use proptest::prelude::*;

    /// Optional destination options in front of the upper layer, to move its offset.
    fn with_options(protocol: u8, options: bool, upper: &[u8]) -> (u8, Vec<u8>) {
        let mut payload = Vec::new();
        let first = if options {
            let raw = Ipv6RawExtHeader::new_raw(IpNumber(protocol), &[1, 4, 0, 0, 0, 0]).unwrap();
            payload.extend_from_slice(&raw.to_bytes());
            ip_proto::DEST_OPTIONS
        } else {
            protocol
        };
        payload.extend_from_slice(upper);
        (first, payload)
    }

    fn tcp_segment(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ports: (u16, u16),
        seq: u32,
        data: &[u8],
    ) -> Vec<u8> {
        let mut tcp = TcpHeader::new(ports.0, ports.1, seq, 64240);
        tcp.syn = seq.is_multiple_of(2);
        tcp.ack = !tcp.syn;
        tcp.checksum = tcp.calc_checksum_ipv6_raw(src.octets(), dst.octets(), data).unwrap();
        let mut out = tcp.to_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    fn udp_datagram(src: Ipv6Addr, dst: Ipv6Addr, ports: (u16, u16), data: &[u8]) -> Vec<u8> {
        let udp = UdpHeader::with_ipv6_checksum(
            ports.0,
            ports.1,
            &etherparse::Ipv6Header {
                source: src.octets(),
                destination: dst.octets(),
                ..header(ip_proto::UDP, src, dst)
            },
            data,
        )
        .unwrap();
        let mut out = udp.to_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    /// The packet etherparse builds: IPv6, maybe destination options, then `upper`.
    fn packet(protocol: u8, options: bool, src: Ipv6Addr, dst: Ipv6Addr, upper: &[u8]) -> Vec<u8> {
        let (first, payload) = with_options(protocol, options, upper);
        build(header(first, src, dst), &payload)
    }

    /// FullNAT on an IPv6 packet the way a pipeline would: no full recompute anywhere.
    fn nat(bytes: &mut [u8], to: (Ipv6Addr, Ipv6Addr, u16, u16)) {
        let mut ip = Ipv6Packet::new_checked(bytes).unwrap();
        let upper = ip.upper_layer().unwrap();
        let old_src = ip.rewrite_src_addr(to.0);
        let old_dst = ip.rewrite_dst_addr(to.1);
        let addrs = Delta::NONE.addr_v6(old_src, to.0).addr_v6(old_dst, to.1);
        let l4 = ip.upper_layer_payload_mut(&upper);
        match upper.protocol {
            ip_proto::TCP => {
                let mut tcp = TcpPacket::new_checked(l4).unwrap();
                let delta = addrs.u16(tcp.src_port(), to.2).u16(tcp.dst_port(), to.3);
                tcp.set_src_port(to.2);
                tcp.set_dst_port(to.3);
                tcp.set_checksum(delta.apply(tcp.checksum()));
            }
            ip_proto::UDP => {
                let mut udp = UdpPacket::new_checked(l4).unwrap();
                let delta = addrs.u16(udp.src_port(), to.2).u16(udp.dst_port(), to.3);
                udp.set_src_port(to.2);
                udp.set_dst_port(to.3);
                udp.set_checksum(delta.apply_udp(udp.checksum()));
            }
            _ => unreachable!(),
        }
    }

    fn addr() -> impl Strategy<Value = Ipv6Addr> {
        any::<u128>().prop_map(Ipv6Addr::from_bits)
    }

    proptest! {
        #[test]
        fn tcp_checksums_and_nat_match_etherparse(
            (src, dst, new_src, new_dst) in (addr(), addr(), addr(), addr()),
            ports in any::<(u16, u16, u16, u16)>(),
            seq in any::<u32>(),
            options in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let segment = tcp_segment(src, dst, (ports.0, ports.1), seq, &data);
            let mut bytes = packet(ip_proto::TCP, options, src, dst, &segment);
            {
                let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
                let upper = ip.upper_layer().unwrap();
                prop_assert_eq!(upper.protocol, ip_proto::TCP);
                let l4 = ip.upper_layer_payload(&upper);
                prop_assert!(checksum::verifies_v6(src, dst, ip_proto::TCP, l4));
                let mut zeroed = l4.to_vec();
                zeroed[16..18].fill(0);
                let ours = checksum::compute_v6(src, dst, ip_proto::TCP, &zeroed);
                prop_assert_eq!(ours, u16::from_be_bytes([l4[16], l4[17]]));
            }
            nat(&mut bytes, (new_src, new_dst, ports.2, ports.3));
            let segment = tcp_segment(new_src, new_dst, (ports.2, ports.3), seq, &data);
            prop_assert_eq!(bytes, packet(ip_proto::TCP, options, new_src, new_dst, &segment));
        }

        #[test]
        fn udp_checksums_and_nat_match_etherparse(
            (src, dst, new_src, new_dst) in (addr(), addr(), addr(), addr()),
            ports in any::<(u16, u16, u16, u16)>(),
            options in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let datagram = udp_datagram(src, dst, (ports.0, ports.1), &data);
            let mut bytes = packet(ip_proto::UDP, options, src, dst, &datagram);
            {
                let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
                let upper = ip.upper_layer().unwrap();
                let l4 = ip.upper_layer_payload(&upper);
                prop_assert!(checksum::verifies_v6(src, dst, ip_proto::UDP, l4));
                let mut zeroed = l4.to_vec();
                zeroed[6..8].fill(0);
                let ours = match checksum::compute_v6(src, dst, ip_proto::UDP, &zeroed) {
                    0 => 0xffff,
                    sum => sum,
                };
                prop_assert_eq!(ours, u16::from_be_bytes([l4[6], l4[7]]));
            }
            nat(&mut bytes, (new_src, new_dst, ports.2, ports.3));
            let datagram = udp_datagram(new_src, new_dst, (ports.2, ports.3), &data);
            prop_assert_eq!(bytes, packet(ip_proto::UDP, options, new_src, new_dst, &datagram));
        }
    }
}
