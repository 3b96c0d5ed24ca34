//! UDP datagrams (RFC 768).
//!
//! [`UdpPacket`] views a buffer starting with the 8-byte header; the datagram ends at the
//! length field, and bytes after it are ignored. Checksum 0 means "not computed" (allowed
//! over IPv4): it verifies, and NAT leaves it 0 ([`checksum::update_udp_addr`],
//! [`checksum::update_udp_u16`]). A computed checksum of 0 goes on the wire as 0xffff.
//!
//! Invariant: once [`UdpPacket::new_checked`] has returned `Ok`, the buffer holds the
//! header and `8 <= len() <= buffer length`, so [`UdpPacket::payload`] is exactly `8..len`.
//! No accessor panics in any case (see the [`wire`](super) module docs).

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::ip_proto;
use super::{Result, WireError, clamped, clamped_mut, read_u16, write_u16};

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// The length of a UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

view! {
    /// A view over a UDP datagram.
    UdpPacket
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// The length of a UDP header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer holding a whole datagram: at least 8 bytes ([`WireError::Truncated`]),
    /// a length field of at least 8 ([`WireError::BadTotalLen`]) and no more than the buffer
    /// (`Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let buffer_len = packet.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(packet.len());
        if len < HEADER_LEN {
            return Err(WireError::BadTotalLen);
        }
        if len > buffer_len {
            return Err(WireError::Truncated);
        }
        Ok(packet)
    }

    /// The source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// The destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header and payload in bytes.
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a wire field, not a container
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The checksum as it is on the wire (0: none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload: bytes `8..len`, clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// The datagram the checksum covers: bytes `0..len`, clamped to the buffer.
    #[inline]
    fn datagram(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), 0, usize::from(self.len()))
    }

    /// The checksum's partial sum over the pseudo-header and the datagram.
    #[inline]
    fn full_sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let pseudo = checksum::pseudo_header_sum(src, dst, ip_proto::UDP, self.len());
        checksum::sum(self.datagram(), pseudo)
    }

    /// Whether the checksum over the pseudo-header (`src`, `dst`) and the datagram is right;
    /// a checksum of 0 means none was computed and verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || checksum::fold(self.full_sum(src, dst)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (the checksum is not updated).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port (the checksum is not updated).
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the checksum (0: none).
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// The payload, writable: bytes `8..len`, clamped to the buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }

    /// Computes the checksum over the pseudo-header (`src`, `dst`) and the datagram and
    /// writes it; a result of 0 is written as 0xffff, since 0 would mean "no checksum".
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let checksum = match checksum::finish(self.full_sum(src, dst)) {
            0 => 0xffff,
            checksum => checksum,
        };
        self.set_checksum(checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::UdpHeader;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 20);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 10);

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let header =
            UdpHeader::with_ipv4_checksum(5353, 53, &ipv4(payload.len()), payload).unwrap();
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn ipv4(payload_len: usize) -> etherparse::Ipv4Header {
        let len = (HEADER_LEN + payload_len) as u16;
        etherparse::Ipv4Header::new(len, 64, etherparse::IpNumber::UDP, SRC.octets(), DST.octets())
            .unwrap()
    }

    #[test]
    fn getters_on_a_known_datagram() {
        let bytes = datagram(b"query");
        let udp = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(udp.src_port(), 5353);
        assert_eq!(udp.dst_port(), 53);
        assert_eq!(udp.len(), 13);
        assert_eq!(udp.checksum(), u16::from_be_bytes([bytes[6], bytes[7]]));
        assert_eq!(udp.payload(), b"query");
        assert!(udp.verify_checksum(SRC, DST));
        assert!(!udp.verify_checksum(SRC, Ipv4Addr::new(10, 1, 1, 11)));
    }

    #[test]
    fn setters_round_trip() {
        let mut bytes = datagram(b"query");
        bytes.extend_from_slice(&[0; 3]); // trailing bytes: not part of the datagram
        let mut udp = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        udp.set_src_port(1);
        udp.set_dst_port(2);
        udp.payload_mut().copy_from_slice(b"QUERY");
        udp.set_len(12);
        udp.fill_checksum(SRC, DST);
        assert_eq!((udp.src_port(), udp.dst_port(), udp.len()), (1, 2, 12));
        assert_eq!(udp.payload(), b"QUER");
        assert!(udp.verify_checksum(SRC, DST));
        let (header, _) = UdpHeader::from_slice(&bytes).unwrap();
        let expected = header.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), b"QUER").unwrap();
        assert_eq!(header.checksum, expected);

        let mut udp = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        udp.set_checksum(0);
        assert!(udp.verify_checksum(SRC, Ipv4Addr::UNSPECIFIED), "0 means no checksum");
    }

    #[test]
    fn computed_zero_is_written_as_ffff() {
        // Choose the source port that makes the sum fold to 0xffff.
        let mut bytes = datagram(b"x");
        let mut udp = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        udp.set_src_port(0);
        udp.fill_checksum(SRC, DST);
        let port = udp.checksum();
        udp.set_src_port(port);
        udp.fill_checksum(SRC, DST);
        assert_eq!(udp.checksum(), 0xffff);
        assert!(udp.verify_checksum(SRC, DST));
        let (header, payload) = UdpHeader::from_slice(&bytes).unwrap();
        let expected = header.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), payload).unwrap();
        assert_eq!(expected, 0xffff);
    }

    #[test]
    fn new_checked_errors() {
        let good = datagram(b"abc");
        let check = |bytes: &[u8]| UdpPacket::new_checked(bytes).map(|_| ());
        assert_eq!(check(&good), Ok(()));
        assert_eq!(check(&good[..7]), Err(WireError::Truncated));
        assert_eq!(check(&good[..10]), Err(WireError::Truncated)); // length says 11
        let mut bad = good.clone();
        bad[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(check(&bad), Err(WireError::BadTotalLen));
        bad[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&bad[..]).unwrap().payload().is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = bytes;
            match UdpPacket::new_checked(&mut bytes[..]) {
                Ok(mut udp) => {
                    prop_assert_eq!(udp.payload().len() + HEADER_LEN, usize::from(udp.len()));
                    let _ = (udp.src_port(), udp.dst_port(), udp.checksum());
                    let _ = udp.verify_checksum(SRC, DST);
                    udp.fill_checksum(SRC, DST);
                    prop_assert!(udp.verify_checksum(SRC, DST));
                    prop_assert_ne!(udp.checksum(), 0);
                    udp.set_len(u16::MAX);
                    let len = udp.as_ref().len();
                    prop_assert_eq!(udp.payload().len(), len - HEADER_LEN);
                    prop_assert_eq!(udp.payload_mut().len(), len - HEADER_LEN);
                    let _ = udp.verify_checksum(SRC, DST);
                }
                Err(_) => {
                    let udp = UdpPacket::new_unchecked(&bytes[..]);
                    let _ = (udp.payload(), udp.len(), udp.verify_checksum(SRC, DST));
                }
            }
        }

        #[test]
        fn fill_and_verify_agree_with_etherparse(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flip in any::<u16>(),
        ) {
            let mut bytes = datagram(&payload);
            let mut udp = UdpPacket::new_checked(&mut bytes[..]).unwrap();
            let oracle = udp.checksum();
            udp.fill_checksum(SRC, DST);
            prop_assert_eq!(udp.checksum(), oracle);
            let stored = oracle ^ flip;
            udp.set_checksum(stored);
            prop_assert_eq!(udp.verify_checksum(SRC, DST), stored == 0 || stored == oracle);
        }
    }
}
