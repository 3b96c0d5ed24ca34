//! TCP segment headers (RFC 9293).
//!
//! [`TcpPacket`] views a whole segment — the IPv4 payload — because the checksum covers all
//! of it: [`TcpPacket::fill_checksum`] and [`TcpPacket::verify_checksum`] take the length for
//! the pseudo-header from the buffer. NAT does not re-sum the segment: it updates the
//! checksum with [`checksum::update_addr`] (pseudo-header addresses) and
//! [`checksum::update_u16`] (ports). Options are exposed as bytes, not parsed.
//!
//! Invariant: once [`TcpPacket::new_checked`] has returned `Ok`, the buffer holds the whole
//! header, options included (data offset between 5 and 15 words). No accessor panics in any
//! case (see the [`wire`](super) module docs).

use core::fmt;
use core::ops::{BitOr, BitOrAssign};
use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::ip_proto;
use super::{
    Result, WireError, clamped, read_u8, read_u16, read_u32, write_u8, write_u16, write_u32,
};

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// The length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = field::URGENT.end;

/// The eight TCP control bits (byte 13 of the header).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronise sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// The acknowledgment number is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// The urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    const NAMES: [(TcpFlags, &'static str); 8] = [
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::CWR, "CWR"),
    ];

    /// Whether every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no bit is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The raw byte.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    /// The set flags' names in bit order, joined by `|`: `SYN|ACK`; `(none)` if empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

view! {
    /// A view over a TCP segment: header and payload.
    TcpPacket
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// The length of a TCP header without options.
    pub const MIN_HEADER_LEN: usize = MIN_HEADER_LEN;

    /// Wraps a buffer holding a whole TCP header: at least 20 bytes
    /// ([`WireError::Truncated`]), a data offset of at least 5 words
    /// ([`WireError::BadHeaderLen`]), and all of the header it announces (`Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = packet.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if len < header_len {
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

    /// The sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// The acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes: the data offset × 4, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(read_u8(self.buffer.as_ref(), field::DATA_OFFSET) >> 4) * 4
    }

    /// The control bits.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(read_u8(self.buffer.as_ref(), field::FLAGS))
    }

    /// The receive window.
    #[inline]
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// The checksum as it is on the wire.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options, between the fixed header and the payload (clamped to the buffer).
    #[inline]
    pub fn options(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), MIN_HEADER_LEN, self.header_len())
    }

    /// The data after the header, to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let buffer = self.buffer.as_ref();
        clamped(buffer, self.header_len(), buffer.len())
    }

    /// The pseudo-header sum for this segment between `src` and `dst`.
    #[inline]
    fn pseudo_header_sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let length = u16::try_from(self.buffer.as_ref().len()).unwrap_or(u16::MAX);
        checksum::pseudo_header_sum(src, dst, ip_proto::TCP, length)
    }

    /// Whether the checksum over the pseudo-header (`src`, `dst`) and the whole segment is
    /// right. (Either form of zero verifies.)
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let sum = checksum::sum(self.buffer.as_ref(), self.pseudo_header_sum(src, dst));
        checksum::fold(sum) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, seq);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, ack);
    }

    /// Sets the header length in bytes, keeping the reserved bits and NS. It should be a
    /// multiple of 4 from 20 to 60; other values are rounded down and wrapped into 4 bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let low = read_u8(self.buffer.as_ref(), field::DATA_OFFSET) & 0x0f;
        let offset = ((len / 4) & 0x0f) as u8;
        write_u8(self.buffer.as_mut(), field::DATA_OFFSET, (offset << 4) | low);
    }

    /// Sets the control bits.
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        write_u8(self.buffer.as_mut(), field::FLAGS, flags.0);
    }

    /// Sets the receive window.
    #[inline]
    pub fn set_window(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, window);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, urgent: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, urgent);
    }

    /// The data after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }

    /// Full checksum over pseudo-header + segment (for crafting and for tests).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = self.pseudo_header_sum(src, dst);
        let checksum = checksum::finish(checksum::sum(self.buffer.as_ref(), pseudo));
        self.set_checksum(checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{TcpHeader, TcpOptionElement};
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 20);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 10);

    /// A SYN with an MSS option and four payload bytes, checksum from etherparse.
    fn syn() -> Vec<u8> {
        let mut header = TcpHeader::new(40000, 80, 0x0102_0304, 64240);
        header.syn = true;
        header.ece = true;
        header.acknowledgment_number = 0x0a0b_0c0d;
        header.urgent_pointer = 0x7777;
        header.set_options(&[TcpOptionElement::MaximumSegmentSize(1460)]).unwrap();
        let payload = [1, 2, 3, 4];
        header.checksum =
            header.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), &payload).unwrap();
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn getters_on_a_known_segment() {
        let bytes = syn();
        let tcp = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(tcp.src_port(), 40000);
        assert_eq!(tcp.dst_port(), 80);
        assert_eq!(tcp.seq_number(), 0x0102_0304);
        assert_eq!(tcp.ack_number(), 0x0a0b_0c0d);
        assert_eq!(tcp.header_len(), 24);
        assert_eq!(tcp.options(), &[2, 4, 0x05, 0xb4]);
        assert_eq!(tcp.flags(), TcpFlags::SYN | TcpFlags::ECE);
        assert_eq!(tcp.window(), 64240);
        assert_eq!(tcp.urgent(), 0x7777);
        assert_eq!(tcp.payload(), &[1, 2, 3, 4]);
        assert!(tcp.verify_checksum(SRC, DST));
        assert!(!tcp.verify_checksum(DST, Ipv4Addr::new(10, 1, 1, 21)));
    }

    #[test]
    fn setters_round_trip() {
        let mut bytes = syn();
        let mut tcp = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        tcp.set_src_port(1);
        tcp.set_dst_port(2);
        tcp.set_seq_number(3);
        tcp.set_ack_number(4);
        tcp.set_flags(TcpFlags::FIN | TcpFlags::ACK);
        tcp.set_window(5);
        tcp.set_urgent(6);
        tcp.set_header_len(20);
        tcp.payload_mut()[0] = 0xee;
        tcp.fill_checksum(SRC, DST);
        assert_eq!((tcp.src_port(), tcp.dst_port()), (1, 2));
        assert_eq!((tcp.seq_number(), tcp.ack_number()), (3, 4));
        assert_eq!(tcp.flags(), TcpFlags::FIN | TcpFlags::ACK);
        assert_eq!((tcp.window(), tcp.urgent()), (5, 6));
        assert_eq!(tcp.header_len(), 20);
        assert_eq!(tcp.payload()[0], 0xee);
        assert_eq!(tcp.payload().len(), 8);
        assert!(tcp.verify_checksum(SRC, DST));
        // etherparse reads the same fields and agrees on the checksum.
        let (header, payload) = TcpHeader::from_slice(&bytes).unwrap();
        assert_eq!((header.source_port, header.destination_port), (1, 2));
        assert!(header.fin && header.ack && !header.syn);
        let expected = header.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), payload).unwrap();
        assert_eq!(header.checksum, expected);
    }

    #[test]
    fn new_checked_errors() {
        let good = syn();
        let check = |bytes: &[u8]| TcpPacket::new_checked(bytes).map(|_| ());
        assert_eq!(check(&good), Ok(()));
        assert_eq!(check(&good[..19]), Err(WireError::Truncated));
        assert_eq!(check(&good[..23]), Err(WireError::Truncated)); // options cut short
        let mut bad = good.clone();
        bad[12] = 0x40;
        assert_eq!(check(&bad), Err(WireError::BadHeaderLen));
        bad[12] = 0xf0;
        assert_eq!(check(&bad), Err(WireError::Truncated));
    }

    #[test]
    fn flags_debug_and_contains() {
        assert_eq!(format!("{:?}", TcpFlags::SYN | TcpFlags::ACK), "SYN|ACK");
        assert_eq!(format!("{:?}", TcpFlags(0xff)), "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR");
        assert_eq!(format!("{}", TcpFlags::RST), "RST");
        assert_eq!(format!("{:?}", TcpFlags::default()), "(none)");
        let synack = TcpFlags::SYN | TcpFlags::ACK;
        assert!(synack.contains(TcpFlags::SYN));
        assert!(synack.contains(synack));
        assert!(!TcpFlags::SYN.contains(synack));
        assert!(synack.intersects(TcpFlags::ACK | TcpFlags::FIN));
        assert!(!synack.intersects(TcpFlags::FIN | TcpFlags::RST));
        let mut flags = TcpFlags::default();
        assert!(flags.is_empty());
        flags |= TcpFlags::CWR;
        assert_eq!(flags.bits(), 0x80);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = bytes;
            match TcpPacket::new_checked(&mut bytes[..]) {
                Ok(mut tcp) => {
                    let header_len = tcp.header_len();
                    prop_assert!((20..=60).contains(&header_len));
                    prop_assert_eq!(tcp.payload().len() + header_len, tcp.as_ref().len());
                    prop_assert_eq!(tcp.options().len() + 20, header_len);
                    let _ = (tcp.src_port(), tcp.dst_port(), tcp.seq_number(), tcp.ack_number());
                    let _ = (tcp.flags(), tcp.window(), tcp.checksum(), tcp.urgent());
                    tcp.fill_checksum(SRC, DST);
                    prop_assert!(tcp.verify_checksum(SRC, DST));
                    tcp.set_header_len(60);
                    let len = tcp.as_ref().len();
                    prop_assert_eq!(tcp.options().len(), len.min(60) - 20);
                    prop_assert_eq!(tcp.payload().len(), len.saturating_sub(60));
                    prop_assert_eq!(tcp.payload_mut().len(), len.saturating_sub(60));
                }
                Err(_) => {
                    let tcp = TcpPacket::new_unchecked(&bytes[..]);
                    let _ = (tcp.payload(), tcp.options(), tcp.flags(), tcp.verify_checksum(SRC, DST));
                }
            }
        }
    }
}
