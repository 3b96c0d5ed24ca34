//! ICMPv4 messages (RFC 792), as far as a load balancer needs them.
//!
//! xlb answers echo requests to its VIPs and must relay error messages — above all
//! "fragmentation needed" (type 3, code 4, RFC 1191), which carries the next-hop MTU in
//! bytes 6..8 and quotes the offending packet's IP header and first 8 transport bytes in its
//! payload — to the right backend. [`IcmpPacket`] views the 8-byte header (type, code,
//! checksum and the 4 type-specific bytes) and the payload after it; the checksum covers the
//! whole message, which is the whole buffer.
//!
//! Invariant: once [`IcmpPacket::new_checked`] has returned `Ok`, the buffer holds the
//! 8-byte header. No accessor panics in any case (see the [`wire`](super) module docs).

use super::checksum;
use super::{Result, WireError, read_u8, read_u16, read_u32, write_u8, write_u16, write_u32};

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const REST_OF_HEADER: Field = 4..8;
    pub const PAYLOAD: usize = 8;
}

/// The length of an ICMP header: type, code, checksum and 4 type-specific bytes.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// ICMPv4 message types (IANA "ICMP Type Numbers") xlb handles.
pub mod icmp_type {
    /// Echo reply (ping answer).
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable; code 4 is "fragmentation needed".
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, RFC 6633), still an error message.
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request (ping).
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (TTL or reassembly).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

/// The destination-unreachable code for "fragmentation needed and DF set" (RFC 1191 path
/// MTU discovery); the next-hop MTU is in the low 16 bits of the rest of the header.
pub const FRAG_NEEDED_CODE: u8 = 4;

/// Whether messages of this type are ICMP errors, which quote the packet that caused them
/// (destination unreachable, source quench, redirect, time exceeded, parameter problem).
#[inline]
pub fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        icmp_type::DEST_UNREACHABLE
            | icmp_type::SOURCE_QUENCH
            | icmp_type::REDIRECT
            | icmp_type::TIME_EXCEEDED
            | icmp_type::PARAM_PROBLEM
    )
}

view! {
    /// A view over an ICMPv4 message.
    IcmpPacket
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// The length of an ICMP header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer holding at least the 8-byte header (else [`WireError::Truncated`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// The message type; compare with [`icmp_type`].
    #[inline]
    pub fn msg_type(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::TYPE)
    }

    /// The code, whose meaning depends on the type.
    #[inline]
    pub fn code(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::CODE)
    }

    /// Whether this message is an error (see [`is_error`]).
    #[inline]
    pub fn is_error(&self) -> bool {
        is_error(self.msg_type())
    }

    /// The checksum as it is on the wire.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The identifier of an echo request or reply.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// The sequence number of an echo request or reply.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Bytes 4..8, whose meaning depends on the type: e.g. for "fragmentation needed", unused
    /// high 16 bits and the next-hop MTU in the low 16.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST_OF_HEADER)
    }

    /// Everything after the header: echo data, or the quoted packet of an error.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD..).unwrap_or(&[])
    }

    /// Whether the checksum over the whole message is right. (Either form of zero verifies.)
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref(), 0)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, msg_type: u8) {
        write_u8(self.buffer.as_mut(), field::TYPE, msg_type);
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        write_u8(self.buffer.as_mut(), field::CODE, code);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, ident);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, seq_no: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, seq_no);
    }

    /// Sets bytes 4..8.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST_OF_HEADER, value);
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::PAYLOAD..).unwrap_or(&mut [])
    }

    /// Recomputes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let checksum = checksum::finish(checksum::sum(self.buffer.as_ref(), 0));
        self.set_checksum(checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type, icmpv4};
    use proptest::prelude::*;

    fn message(kind: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
        let header = Icmpv4Header::with_checksum(kind, payload);
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn getters_on_an_echo_request() {
        let echo = IcmpEchoHeader { id: 0x1234, seq: 7 };
        let bytes = message(Icmpv4Type::EchoRequest(echo), b"ping!");
        let icmp = IcmpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(icmp.msg_type(), icmp_type::ECHO_REQUEST);
        assert_eq!(icmp.code(), 0);
        assert!(!icmp.is_error());
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 7));
        assert_eq!(icmp.rest_of_header(), 0x1234_0007);
        assert_eq!(icmp.payload(), b"ping!");
        assert_eq!(icmp.checksum(), u16::from_be_bytes([bytes[2], bytes[3]]));
        assert!(icmp.verify_checksum());
    }

    #[test]
    fn getters_on_a_fragmentation_needed_error() {
        let kind = Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        );
        let quoted = [0x45u8; 28];
        let bytes = message(kind, &quoted);
        let icmp = IcmpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(icmp.msg_type(), icmp_type::DEST_UNREACHABLE);
        assert_eq!(icmp.code(), FRAG_NEEDED_CODE);
        assert!(icmp.is_error());
        assert_eq!(icmp.rest_of_header() & 0xffff, 1400);
        assert_eq!(icmp.payload(), &quoted);
        assert!(icmp.verify_checksum());
    }

    #[test]
    fn setters_round_trip() {
        let echo = IcmpEchoHeader { id: 1, seq: 2 };
        let mut bytes = message(Icmpv4Type::EchoRequest(echo), b"data");
        let mut icmp = IcmpPacket::new_checked(&mut bytes[..]).unwrap();
        // Turn the request into its reply, as xlb does for pings to a VIP.
        icmp.set_msg_type(icmp_type::ECHO_REPLY);
        icmp.set_code(0);
        icmp.set_echo_ident(3);
        icmp.set_echo_seq_no(4);
        icmp.payload_mut()[0] = b'D';
        icmp.fill_checksum();
        assert_eq!((icmp.msg_type(), icmp.code()), (icmp_type::ECHO_REPLY, 0));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (3, 4));
        assert_eq!(icmp.payload(), b"Data");
        assert!(icmp.verify_checksum());
        let expected = message(Icmpv4Type::EchoReply(IcmpEchoHeader { id: 3, seq: 4 }), b"Data");
        assert_eq!(bytes, expected);

        let mut icmp = IcmpPacket::new_checked(&mut bytes[..]).unwrap();
        icmp.set_rest_of_header(0xdead_beef);
        assert_eq!(icmp.rest_of_header(), 0xdead_beef);
        assert!(!icmp.verify_checksum());
        icmp.set_checksum(0);
        assert_eq!(icmp.checksum(), 0);
    }

    #[test]
    fn new_checked_errors() {
        assert_eq!(IcmpPacket::new_checked(&[0u8; 7][..]).unwrap_err(), WireError::Truncated);
        assert!(IcmpPacket::new_checked(&[0u8; 8][..]).unwrap().payload().is_empty());
    }

    #[test]
    fn error_types() {
        let errors: Vec<u8> = (0..=u8::MAX).filter(|&t| is_error(t)).collect();
        assert_eq!(errors, [3, 4, 5, 11, 12]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = bytes;
            match IcmpPacket::new_checked(&mut bytes[..]) {
                Ok(mut icmp) => {
                    prop_assert_eq!(icmp.payload().len() + HEADER_LEN, icmp.as_ref().len());
                    let _ = (icmp.msg_type(), icmp.code(), icmp.checksum(), icmp.is_error());
                    let _ = (icmp.echo_ident(), icmp.echo_seq_no(), icmp.rest_of_header());
                    // Even all-zero data verifies after a fill: its checksum is 0xffff.
                    icmp.fill_checksum();
                    prop_assert!(icmp.verify_checksum());
                    let _ = icmp.payload_mut();
                }
                Err(e) => prop_assert_eq!(e, WireError::Truncated),
            }
        }

        #[test]
        fn fill_checksum_agrees_with_etherparse(
            id in any::<u16>(),
            seq in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let echo = IcmpEchoHeader { id, seq };
            let expected = message(Icmpv4Type::EchoRequest(echo), &payload);
            let mut bytes = expected.clone();
            let mut icmp = IcmpPacket::new_checked(&mut bytes[..]).unwrap();
            prop_assert!(icmp.verify_checksum());
            icmp.set_checksum(0x5a5a);
            icmp.fill_checksum();
            prop_assert_eq!(bytes, expected);
        }
    }
}
