//! ICMPv6 messages (RFC 4443), as far as a load balancer needs them.
//!
//! xlb answers echo requests to its IPv6 VIPs, relays error messages about tracked flows to
//! the right peer — above all Packet Too Big (type 2), which carries the next-hop MTU in
//! bytes 4..8 and on which IPv6 path MTU discovery (RFC 8201) depends, since IPv6 routers
//! never fragment — and speaks NDP, whose messages are ICMPv6 too (see [`ndp`](super::ndp)).
//! [`Icmpv6Packet`] views the 8-byte header (type, code, checksum and 4 type-specific bytes)
//! and the body after it.
//!
//! Unlike ICMPv4, the checksum covers the IPv6 pseudo-header (RFC 4443 §2.3): source,
//! destination, the message length and next header 58. So [`Icmpv6Packet::verify_checksum`]
//! and [`Icmpv6Packet::fill_checksum`] take the addresses, and the message is the whole buffer
//! (wrap exactly the upper-layer bytes, e.g. [`Ipv6Packet::upper_layer_payload`]).
//!
//! Invariant: once [`Icmpv6Packet::new_checked`] has returned `Ok`, the buffer holds the
//! 8-byte header. No accessor panics in any case (see the [`wire`](super) module docs).
//!
//! [`Ipv6Packet::upper_layer_payload`]: super::Ipv6Packet::upper_layer_payload

use std::net::Ipv6Addr;

use super::checksum;
use super::ipv4::ip_proto;
use super::{Result, WireError, read_u8, read_u16, read_u32, write_u8, write_u16, write_u32};

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const REST_OF_HEADER: Field = 4..8;
    pub const BODY: usize = 8;
}

/// The length of an ICMPv6 header: type, code, checksum and 4 type-specific bytes.
pub const HEADER_LEN: usize = field::BODY;

/// ICMPv6 message types (IANA "ICMPv6 Parameters") xlb handles.
pub mod icmpv6_type {
    /// Destination unreachable (error).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (error); the MTU is in bytes 4..8.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (error): hop limit or reassembly.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (error); a pointer to the offending octet is in bytes 4..8.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request (ping).
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation (NDP; left to the kernel).
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement (NDP; left to the kernel).
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation (NDP).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement (NDP).
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect (NDP).
    pub const REDIRECT: u8 = 137;
}

/// Whether messages of this type are errors, which quote the packet that caused them: types
/// 0 to 127 (RFC 4443 §2.1). An error is never answered with an error (§2.4 e.1).
#[inline]
pub fn is_error(msg_type: u8) -> bool {
    msg_type < 128
}

view! {
    /// A view over an ICMPv6 message.
    Icmpv6Packet
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// The length of an ICMPv6 header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer holding at least the 8-byte header (else [`WireError::Truncated`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// The message type; compare with [`icmpv6_type`].
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

    /// Bytes 4..8, whose meaning depends on the type.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST_OF_HEADER)
    }

    /// The MTU of a Packet Too Big message (bytes 4..8; meaningless for other types).
    #[inline]
    pub fn mtu(&self) -> u32 {
        self.rest_of_header()
    }

    /// The pointer of a Parameter Problem message: the offset of the offending octet in the
    /// invoking packet (bytes 4..8; meaningless for other types).
    #[inline]
    pub fn pointer(&self) -> u32 {
        self.rest_of_header()
    }

    /// Everything after the header: echo data, NDP fields, or an error's invoking packet.
    #[inline]
    pub fn body(&self) -> &[u8] {
        self.buffer.as_ref().get(field::BODY..).unwrap_or(&[])
    }

    /// The invoking packet an error message quotes — as much of it as fits (RFC 4443 §2.4
    /// c), starting with its IPv6 header; view it with
    /// [`Ipv6Packet::new_quoted`](super::Ipv6Packet::new_quoted) — or `None` if this is not
    /// an error.
    #[inline]
    pub fn invoking_packet(&self) -> Option<&[u8]> {
        self.is_error().then(|| self.body())
    }

    /// Whether the checksum over the IPv6 pseudo-header (`src`, `dst`, the buffer's length,
    /// next header 58) and the message is right. (Either form of zero verifies.)
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::verifies_v6(src, dst, ip_proto::ICMPV6, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
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

    /// Sets the MTU of a Packet Too Big message.
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        self.set_rest_of_header(mtu);
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::BODY..).unwrap_or(&mut [])
    }

    /// Recomputes the checksum over the pseudo-header (`src`, `dst`) and the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let checksum = checksum::compute_v6(src, dst, ip_proto::ICMPV6, self.buffer.as_ref());
        self.set_checksum(checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IcmpEchoHeader, Icmpv6Header, Icmpv6Slice, Icmpv6Type, icmpv6};
    use proptest::prelude::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    /// A message built by etherparse, checksum included.
    fn message(kind: Icmpv6Type, src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> Vec<u8> {
        let header = Icmpv6Header::with_checksum(kind, src.octets(), dst.octets(), body).unwrap();
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn getters_on_an_echo_request() {
        let echo = IcmpEchoHeader { id: 0x1234, seq: 7 };
        let bytes = message(Icmpv6Type::EchoRequest(echo), SRC, DST, b"ping6");
        let icmp = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.code()), (icmpv6_type::ECHO_REQUEST, 0));
        assert!(!icmp.is_error());
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 7));
        assert_eq!(icmp.rest_of_header(), 0x1234_0007);
        assert_eq!(icmp.body(), b"ping6");
        assert_eq!(icmp.invoking_packet(), None);
        assert!(icmp.verify_checksum(SRC, DST));
        assert!(!icmp.verify_checksum(DST, SRC.to_bits().wrapping_add(1).into()));
    }

    #[test]
    fn getters_on_a_packet_too_big() {
        let quoted = [0x60u8; 48];
        let bytes = message(Icmpv6Type::PacketTooBig { mtu: 1280 }, SRC, DST, &quoted);
        let icmp = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.code()), (icmpv6_type::PACKET_TOO_BIG, 0));
        assert!(icmp.is_error());
        assert_eq!(icmp.mtu(), 1280);
        assert_eq!(icmp.invoking_packet(), Some(&quoted[..]));
        assert!(icmp.verify_checksum(SRC, DST));
        let problem = Icmpv6Type::ParameterProblem(icmpv6::ParameterProblemHeader {
            code: icmpv6::ParameterProblemCode::UnrecognizedNextHeader,
            pointer: 6,
        });
        let bytes = message(problem, SRC, DST, &quoted);
        let icmp = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.code(), icmp.pointer()), (4, 1, 6));
        assert!(icmp.verify_checksum(SRC, DST));
    }

    #[test]
    fn an_echo_request_becomes_its_reply() {
        let echo = IcmpEchoHeader { id: 1, seq: 2 };
        let mut bytes = message(Icmpv6Type::EchoRequest(echo), SRC, DST, b"data");
        let mut icmp = Icmpv6Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.set_msg_type(icmpv6_type::ECHO_REPLY);
        icmp.set_code(0);
        icmp.set_echo_ident(3);
        icmp.set_echo_seq_no(4);
        icmp.body_mut()[0] = b'D';
        icmp.fill_checksum(DST, SRC);
        assert!(icmp.verify_checksum(DST, SRC));
        let expected =
            message(Icmpv6Type::EchoReply(IcmpEchoHeader { id: 3, seq: 4 }), DST, SRC, b"Data");
        assert_eq!(bytes, expected);
        let mut icmp = Icmpv6Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.set_mtu(9000);
        assert_eq!(icmp.mtu(), 9000);
        assert!(!icmp.verify_checksum(DST, SRC));
    }

    #[test]
    fn new_checked_errors() {
        for len in 0..8 {
            let bytes = vec![0u8; len];
            assert_eq!(Icmpv6Packet::new_checked(&bytes[..]).unwrap_err(), WireError::Truncated);
        }
        assert!(Icmpv6Packet::new_checked(&[0u8; 8][..]).unwrap().body().is_empty());
    }

    #[test]
    fn error_types() {
        assert!((0..=127).all(is_error));
        assert!(!(128..=255).any(is_error));
    }

    fn type_strategy() -> impl Strategy<Value = Icmpv6Type> {
        prop_oneof![
            (any::<u16>(), any::<u16>())
                .prop_map(|(id, seq)| Icmpv6Type::EchoRequest(IcmpEchoHeader { id, seq })),
            (any::<u16>(), any::<u16>())
                .prop_map(|(id, seq)| Icmpv6Type::EchoReply(IcmpEchoHeader { id, seq })),
            any::<u32>().prop_map(|mtu| Icmpv6Type::PacketTooBig { mtu }),
            Just(Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)),
            Just(Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port)),
            Just(Icmpv6Type::NeighborSolicitation),
        ]
    }

    proptest! {
        #[test]
        fn parse_and_checksums_agree_with_etherparse(
            kind in type_strategy(),
            src in any::<u128>(),
            dst in any::<u128>(),
            body in proptest::collection::vec(any::<u8>(), 0..96),
            flip in any::<u16>(),
        ) {
            let (src, dst) = (Ipv6Addr::from_bits(src), Ipv6Addr::from_bits(dst));
            let expected = message(kind, src, dst, &body);
            let mut bytes = expected.clone();
            let oracle = Icmpv6Slice::from_slice(&expected).unwrap();
            let mut icmp = Icmpv6Packet::new_checked(&mut bytes[..]).unwrap();
            prop_assert_eq!(icmp.msg_type(), oracle.type_u8());
            prop_assert_eq!(icmp.code(), oracle.code_u8());
            prop_assert_eq!(icmp.checksum(), oracle.checksum());
            prop_assert_eq!(icmp.rest_of_header().to_be_bytes(), oracle.bytes5to8());
            prop_assert_eq!(icmp.body(), oracle.payload());
            prop_assert!(icmp.verify_checksum(src, dst));
            prop_assert!(oracle.is_checksum_valid(src.octets(), dst.octets()));
            // Our fill writes etherparse's checksum, bit for bit.
            icmp.set_checksum(0x5a5a);
            icmp.fill_checksum(src, dst);
            prop_assert_eq!(&bytes, &expected);
            // A wrong checksum fails both (unless it is the other zero).
            let stored = oracle.checksum() ^ flip;
            bytes[2..4].copy_from_slice(&stored.to_be_bytes());
            let ours = Icmpv6Packet::new_checked(&bytes[..]).unwrap().verify_checksum(src, dst);
            let theirs = Icmpv6Slice::from_slice(&bytes).unwrap()
                .is_checksum_valid(src.octets(), dst.octets());
            let other_zero = (stored == 0xffff && oracle.checksum() == 0)
                || (stored == 0 && oracle.checksum() == 0xffff);
            prop_assert_eq!(ours, theirs || other_zero);
        }

        #[test]
        fn address_rewrites_keep_the_checksum_right(
            src in any::<u128>(),
            dst in any::<u128>(),
            new_dst in any::<u128>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (src, dst, new_dst) =
                (Ipv6Addr::from_bits(src), Ipv6Addr::from_bits(dst), Ipv6Addr::from_bits(new_dst));
            let echo = Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 });
            let mut bytes = message(echo, src, dst, &body);
            let mut icmp = Icmpv6Packet::new_checked(&mut bytes[..]).unwrap();
            let updated = checksum::update_addr_v6(icmp.checksum(), dst, new_dst);
            icmp.set_checksum(updated);
            prop_assert!(icmp.verify_checksum(src, new_dst));
            prop_assert_eq!(bytes, message(echo, src, new_dst, &body));
        }

        #[test]
        fn translating_a_packet_too_big_matches_etherparse(
            (router, vip, client, backend) in (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>()),
            ports in any::<(u16, u16)>(),
            mtu in 1280u32..9000,
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // A router tells the VIP that its reply to the client was too big; NAT sends the
            // error on to the backend: the outer destination and the quoted source become the
            // backend's, every checksum (outer ICMPv6, quoted TCP) updated incrementally.
            let [router, vip, client, backend] =
                [router, vip, client, backend].map(Ipv6Addr::from_bits);
            let error = |quoted_src: Ipv6Addr, dst: Ipv6Addr| {
                let mut quoted = Vec::new();
                etherparse::PacketBuilder::ipv6(quoted_src.octets(), client.octets(), 64)
                    .tcp(ports.0, ports.1, 1, 1024)
                    .ack(1)
                    .write(&mut quoted, &data)
                    .unwrap();
                message(Icmpv6Type::PacketTooBig { mtu }, router, dst, &quoted)
            };
            let mut bytes = error(vip, vip);
            let mut icmp = Icmpv6Packet::new_checked(&mut bytes[..]).unwrap();
            prop_assert_eq!(icmp.mtu(), mtu);
            let outer = icmp.checksum();
            let quoted = icmp.body_mut();
            let mut ip = crate::wire::Ipv6Packet::new_quoted(&mut *quoted).unwrap();
            let upper = ip.upper_layer().unwrap();
            let old_src = ip.rewrite_src_addr(backend);
            let tcp = ip.upper_layer_payload_mut(&upper);
            let old_tcp = u16::from_be_bytes([tcp[16], tcp[17]]);
            let new_tcp = checksum::update_addr_v6(old_tcp, old_src, backend);
            tcp[16..18].copy_from_slice(&new_tcp.to_be_bytes());
            let delta = checksum::Delta::NONE
                .addr_v6(vip, backend) // the outer pseudo-header's destination
                .addr_v6(old_src, backend) // the quoted source, in the body
                .u16(old_tcp, new_tcp); // the quoted checksum, in the body
            icmp.set_checksum(delta.apply(outer));
            prop_assert!(icmp.verify_checksum(router, backend));
            prop_assert_eq!(bytes, error(backend, backend));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = bytes;
            match Icmpv6Packet::new_checked(&mut bytes[..]) {
                Ok(mut icmp) => {
                    prop_assert_eq!(icmp.body().len() + HEADER_LEN, icmp.as_ref().len());
                    let _ = (icmp.msg_type(), icmp.code(), icmp.checksum(), icmp.is_error());
                    let _ = (icmp.echo_ident(), icmp.echo_seq_no(), icmp.mtu(), icmp.pointer());
                    let _ = icmp.invoking_packet();
                    icmp.fill_checksum(Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST);
                    prop_assert!(icmp.verify_checksum(Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST));
                    let _ = icmp.body_mut();
                }
                Err(e) => prop_assert_eq!(e, WireError::Truncated),
            }
        }
    }
}
