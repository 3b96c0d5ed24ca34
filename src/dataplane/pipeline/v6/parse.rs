//! What an IPv6 frame is: the step-by-step checks of the fixed header, each refusal with its
//! exact drop reason ([`check`]), the TCP/UDP view of a packet ([`Transport6`]) and of the
//! packet an ICMPv6 error quotes ([`quoted_transport`]).
//!
//! Invariants: nothing here writes to the frame. What [`check`] accepts is IPv6 with no
//! extension header (the upper layer right after the 40-byte fixed header, at [`L4`]), all
//! of it in the frame (`40 + payload length` bytes; Ethernet padding after it is allowed),
//! and, for TCP and UDP, the whole L4 header within the payload: so the rewrites read and
//! write at fixed offsets. Extension headers are not walked: a packet whose next header is
//! one is refused as such (`ipv6_ext_headers`, a fragment header directly as `fragment`),
//! which costs one compare whatever the chain says.

use std::net::Ipv6Addr;
use std::ops::Range;

use crate::family::V6;
use crate::flow::{FlowKey, Proto};
use crate::report::DropReason;
use crate::wire::ipv4::ip_proto;
use crate::wire::{Ipv6Packet, WireError};

use super::super::ETH_LEN;
use super::super::classify::{Transport, l4_header};

/// Where the IPv6 fixed header ends and the upper layer starts in a frame [`check`] took.
pub(in crate::dataplane::pipeline) const L4: usize = ETH_LEN + 40;

/// Offsets of the IPv6 fixed header's fields in a frame.
pub(in crate::dataplane::pipeline) mod at {
    use super::ETH_LEN;
    #[cfg_attr(not(test), allow(dead_code))]
    pub const PAYLOAD_LEN: usize = ETH_LEN + 4;
    pub const NEXT_HEADER: usize = ETH_LEN + 6;
    pub const HOP_LIMIT: usize = ETH_LEN + 7;
    pub const SRC_ADDR: usize = ETH_LEN + 8;
    pub const DST_ADDR: usize = ETH_LEN + 24;
}

/// The L4 view the pipeline needs of an IPv6 TCP/UDP packet.
pub(in crate::dataplane::pipeline) type Transport6 = Transport<V6>;

/// What [`check`] found after the fixed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) enum Upper6 {
    /// TCP or UDP with its whole header in the payload.
    Transport(Transport6),
    /// An ICMPv6 message: its bytes in the frame (the payload, padding excluded).
    Icmp(Range<usize>),
}

/// Reads a 16-byte address at `offset` of `frame` (the caller checked the length).
#[inline]
fn addr_at(frame: &[u8], offset: usize) -> Option<Ipv6Addr> {
    let bytes: [u8; 16] = frame.get(offset..offset + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(bytes))
}

/// Source and destination of the IPv6 packet in `frame`; None if the frame cannot hold a
/// fixed header (dropped as `truncated` whoever it is for: its owner cannot be known).
#[inline]
pub(in crate::dataplane::pipeline) fn addresses(frame: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    if frame.len() < L4 {
        return None;
    }
    Some((addr_at(frame, at::SRC_ADDR)?, addr_at(frame, at::DST_ADDR)?))
}

/// The next header and first upper-layer byte of a frame's IPv6 packet, read without any
/// check: the NDP step's cue (next header 58, type 135 or 136); `parse` judges the rest.
#[inline]
pub(in crate::dataplane::pipeline) fn next_header_and_type(frame: &[u8]) -> (u8, Option<u8>) {
    (frame.get(at::NEXT_HEADER).copied().unwrap_or(0), frame.get(L4).copied())
}

/// Whether `next_header` is an IPv6 extension header (IANA's "IPv6 Extension Header Types":
/// hop-by-hop 0, routing 43, fragment 44, ESP 50, AH 51, destination options 60, mobility
/// 135, HIP 139, shim6 140, experimental 253 and 254). ESP and AH count: a balancer can
/// neither read past ESP nor rewrite under AH.
#[inline]
fn is_ext_header(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// The step-by-step checks of an IPv6 packet after its addresses (see the module docs), in
/// this order: version 6 (`bad_ip_version`), the payload within the frame (`truncated`, as
/// IPv4's total length beyond the frame; a shorter one leaves padding), the next header: TCP or UDP with a whole header (`bad_l4_header`),
/// ICMPv6, a fragment header (`fragment`), another extension header (`ipv6_ext_headers`),
/// anything else (`unsupported_proto`).
pub(in crate::dataplane::pipeline) fn check(frame: &[u8]) -> Result<Upper6, DropReason> {
    let packet = frame.get(ETH_LEN..).unwrap_or(&[]);
    let ip = match Ipv6Packet::new_checked(packet) {
        Ok(ip) => ip,
        Err(WireError::BadVersion) => return Err(DropReason::BadIpVersion),
        // Too short for the fixed header (never, after `addresses`), or for the payload
        // length it claims: cut short, as IPv4's total length beyond the frame.
        Err(_) => return Err(DropReason::Truncated),
    };
    let end = L4 + usize::from(ip.payload_len());
    match ip.next_header() {
        protocol @ (ip_proto::TCP | ip_proto::UDP) => {
            transport(ip.src_addr(), ip.dst_addr(), protocol, &frame[L4..end])
                .map(Upper6::Transport)
                .ok_or(DropReason::BadL4Header)
        }
        ip_proto::ICMPV6 => Ok(Upper6::Icmp(L4..end)),
        ip_proto::FRAGMENT => Err(DropReason::Fragment),
        next if is_ext_header(next) => Err(DropReason::Ipv6ExtHeaders),
        _ => Err(DropReason::UnsupportedProto),
    }
}

/// The TCP/UDP view of `segment` (everything after the fixed header), sent from `src` to
/// `dst`: None unless it holds a whole TCP header or UDP datagram.
#[inline]
fn transport(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, segment: &[u8]) -> Option<Transport6> {
    let (proto, src_port, dst_port, tcp_flags) = l4_header(protocol, segment)?;
    Some(Transport6 {
        key: FlowKey { src_addr: src, dst_addr: dst, src_port, dst_port, proto },
        tcp_flags,
    })
}

/// The 5-tuple of the packet an ICMPv6 error quotes (`icmp` is the whole message): its fixed
/// header, TCP or UDP directly after it (a quoted packet with extension headers, or an
/// ICMPv6 one — an error about an error — names no flow), and at least the 8 bytes with the
/// ports. None otherwise.
pub(in crate::dataplane::pipeline) fn quoted_transport(icmp: &[u8]) -> Option<Transport6> {
    let quote = icmp.get(8..)?;
    let ip = Ipv6Packet::new_quoted(quote).ok()?;
    let proto = Proto::from_number(ip.next_header())?;
    Transport::quoted(ip.src_addr(), ip.dst_addr(), proto, quote.get(40..48)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, ACK, Host6, SYN};

    const A: Host6 =
        Host6::new([2, 0, 0, 0, 0, 0x20], Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20));
    const B: Host6 =
        Host6::new([2, 0, 0, 0, 0, 0x10], Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));

    fn syn() -> Vec<u8> {
        testkit::tcp6(A.mac, B.mac, (A.ip, 40000), (B.ip, 80), SYN, b"")
    }

    /// `frame` with an 8-byte extension header `kind` inserted after the fixed header.
    fn with_ext(frame: &[u8], kind: u8) -> Vec<u8> {
        let mut out = frame[..L4].to_vec();
        let next = out[at::NEXT_HEADER];
        out[at::NEXT_HEADER] = kind;
        let mut header = [0u8; 8];
        header[0] = next;
        if kind == 0 || kind == 60 {
            header[2] = 1; // PadN over the rest
            header[3] = 4;
        }
        out.extend_from_slice(&header);
        out.extend_from_slice(&frame[L4..]);
        let len = u16::from_be_bytes([out[at::PAYLOAD_LEN], out[at::PAYLOAD_LEN + 1]]) + 8;
        out[at::PAYLOAD_LEN..at::PAYLOAD_LEN + 2].copy_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn tcp_udp_and_icmpv6_are_taken_with_their_views() {
        let frame = syn();
        let Ok(Upper6::Transport(t)) = check(&frame) else { panic!("refused") };
        let key = FlowKey {
            src_addr: A.ip,
            dst_addr: B.ip,
            src_port: 40000,
            dst_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(t, Transport6 { key, tcp_flags: Some(crate::wire::TcpFlags::SYN.0) });
        assert_eq!(addresses(&frame), Some((A.ip, B.ip)));
        let udp = testkit::udp6(A.mac, B.mac, (A.ip, 5000), (B.ip, 53), b"q");
        let Ok(Upper6::Transport(t)) = check(&udp) else { panic!("refused") };
        assert_eq!((t.key.proto, t.key.dst_port, t.tcp_flags), (Proto::Udp, 53, None));
        let echo = testkit::icmpv6_echo(A.mac, B.mac, A.ip, B.ip, 64, false, b"abcd");
        assert_eq!(check(&echo), Ok(Upper6::Icmp(L4..echo.len())));
        // Ethernet padding after the payload is allowed and left out.
        let mut padded = echo.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(check(&padded), Ok(Upper6::Icmp(L4..echo.len())));
    }

    /// Every refusal, with its reason.
    #[test]
    fn refusals_have_their_exact_reasons() {
        let good = syn();
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut frame = good.clone();
            f(&mut frame);
            check(&frame)
        };
        assert_eq!(edit(&|f| f[ETH_LEN] = 0x45), Err(DropReason::BadIpVersion));
        assert_eq!(edit(&|f| f[at::PAYLOAD_LEN + 1] += 1), Err(DropReason::Truncated));
        assert_eq!(edit(&|f| f.truncate(f.len() - 1)), Err(DropReason::Truncated));
        // The payload ends inside the TCP header.
        assert_eq!(
            edit(&|f| f[at::PAYLOAD_LEN..at::PAYLOAD_LEN + 2].copy_from_slice(&[0, 12])),
            Err(DropReason::BadL4Header)
        );
        assert_eq!(edit(&|f| f[at::NEXT_HEADER] = 59), Err(DropReason::UnsupportedProto));
        assert_eq!(edit(&|f| f[at::NEXT_HEADER] = 132), Err(DropReason::UnsupportedProto));
        assert_eq!(check(&with_ext(&good, 44)), Err(DropReason::Fragment));
        for kind in [0, 43, 60, 51] {
            assert_eq!(check(&with_ext(&good, kind)), Err(DropReason::Ipv6ExtHeaders), "{kind}");
        }
        // Cut anywhere: a counted refusal, never a panic.
        for cut in 0..good.len() {
            let frame = &good[..cut];
            if cut < L4 {
                assert_eq!(addresses(frame), None);
            }
            assert!(check(frame).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_quoted_packet_names_its_flow_unless_it_is_not_tcp_or_udp() {
        let frame = testkit::tcp6(A.mac, B.mac, (A.ip, 40000), (B.ip, 80), ACK, &[0; 64]);
        let error = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &frame, 8);
        let icmp = &error[L4..];
        let quoted = quoted_transport(icmp).expect("names a flow");
        assert_eq!(quoted.key, check_key(&frame));
        assert_eq!(quoted_transport(&icmp[..icmp.len() - 1]), None, "ports cut short");
        let echo = testkit::icmpv6_echo(A.mac, B.mac, A.ip, B.ip, 64, true, &[0; 16]);
        let about_echo = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &echo, 16);
        assert_eq!(quoted_transport(&about_echo[L4..]), None, "about ICMPv6: no flow");
        let ext = with_ext(&frame, 60);
        let about_ext = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &ext, 16);
        assert_eq!(quoted_transport(&about_ext[L4..]), None, "extension headers: no flow");
    }

    fn check_key(frame: &[u8]) -> FlowKey<V6> {
        match check(frame) {
            Ok(Upper6::Transport(t)) => t.key,
            other => panic!("{other:?}"),
        }
    }
}
