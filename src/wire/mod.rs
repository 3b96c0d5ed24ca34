//! Zero-copy views over the packets xlb reads and rewrites, and the checksums that go with
//! them.
//!
//! One file per protocol — [`ethernet`], [`arp`], [`ipv4`], [`ipv6`], [`tcp`], [`udp`],
//! [`icmp`], [`icmpv6`], [`ndp`] — each
//! with a `Packet<T: AsRef<[u8]>>`-style view in the manner of smoltcp's `wire` module:
//! getters on any `T: AsRef<[u8]>`, setters on `T: AsRef<[u8]> + AsMut<[u8]>`, field offsets
//! as range constants in a private `mod field`. A view owns nothing: wrap a `&[u8]` or a
//! `&mut [u8]` borrowed from a UMEM frame, read or rewrite it in place, drop the view.
//! [`checksum`] holds the RFC 1071 sums and the RFC 1624 incremental updates NAT uses.
//!
//! # Invariants
//!
//! - **No panic, whatever the bytes.** Every accessor goes through the bounds-checked helpers
//!   below: a field that lies outside the buffer reads as zero and a write to it is dropped;
//!   a payload whose bounds (from the header) lie outside the buffer is clamped to it. So not
//!   only does no getter or setter panic once `new_checked` has returned `Ok` (the smoltcp
//!   contract), none panics on a view made with `new_unchecked` either, nor after a setter
//!   wrote a nonsensical length. `new_checked` is what guarantees the values are meaningful.
//! - **No allocation, no copy.** Views borrow; payload accessors return sub-slices.
//! - **Bounded walks.** The two variable-length chains — IPv6 extension headers and NDP
//!   options — are walked by iterators that advance by at least 8 bytes a step, stop at the
//!   buffer's end, and (for extension headers) give up after [`ipv6::MAX_EXT_HEADERS`]
//!   headers or [`ipv6::MAX_EXT_BYTES`] bytes: no input makes them loop or panic.
//! - **IPv6**: the pipeline's IPv6 steps (`dataplane::pipeline::v6`) read the fixed header
//!   at fixed offsets and walk extension headers with [`ipv6::ExtHeaders`] (`v6::parse`), as
//!   do NDP, the steering program's tests and the fuzzers.
//!
//! Everything is `#[inline]`: these are a few loads and stores each, and the pipeline calls
//! them per packet.

use core::ops::Range;

/// Declares a view type: the struct wrapping a buffer `T`, `new_unchecked`, `into_inner`
/// and `AsRef<[u8]>`. Each protocol file adds `new_checked`, the getters and the setters.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<T> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it. Accessors still never panic: fields beyond
            /// a short buffer read as zero and writes to them are dropped.
            #[inline]
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Gives the buffer back.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]>> AsRef<[u8]> for $name<T> {
            /// The whole buffer, as wrapped.
            #[inline]
            fn as_ref(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndp;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket};
pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use icmp::IcmpPacket;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use ndp::NdpPacket;
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;

/// Why a view refused a buffer. Small, `Copy`, no allocation: the pipeline turns it into a
/// counted drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header, or than a length field says it is.
    Truncated,
    /// The IP version field is not 4.
    BadVersion,
    /// A header-length field is below the protocol's minimum.
    BadHeaderLen,
    /// A total-length field is shorter than the header it includes.
    BadTotalLen,
    /// A well-formed packet of a kind xlb does not handle (e.g. ARP for a non-Ethernet link).
    Unsupported,
    /// Any other inconsistency between fields.
    Malformed,
    /// An IPv6 extension-header chain longer than xlb walks ([`ipv6::MAX_EXT_HEADERS`]
    /// headers or [`ipv6::MAX_EXT_BYTES`] bytes).
    ExtHeaderChainTooLong,
    /// An NDP option whose length field is 0 (RFC 4861 §4.6: the packet must be discarded).
    ZeroLengthOption,
}

impl WireError {
    /// A short static description, also used by `Display`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated packet",
            WireError::BadVersion => "bad IP version",
            WireError::BadHeaderLen => "bad header length",
            WireError::BadTotalLen => "bad total length",
            WireError::Unsupported => "unsupported packet",
            WireError::Malformed => "malformed packet",
            WireError::ExtHeaderChainTooLong => "IPv6 extension-header chain too long",
            WireError::ZeroLengthOption => "NDP option of length 0",
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for WireError {}

/// The result of checking a buffer against a view's requirements.
pub type Result<T> = core::result::Result<T, WireError>;

/// A field's byte range within its header.
type Field = Range<usize>;

// The byte helpers every view is built on. None of them can panic: out-of-range reads yield
// zeros and out-of-range writes do nothing (see the module invariants).

/// Reads the `N` bytes at `field`, or zeros if they are not all inside `buf`.
#[inline]
fn read_array<const N: usize>(buf: &[u8], field: Field) -> [u8; N] {
    buf.get(field).and_then(|bytes| bytes.first_chunk::<N>()).copied().unwrap_or([0; N])
}

/// Writes `value` at `field` if the field lies inside `buf`.
#[inline]
fn write_array<const N: usize>(buf: &mut [u8], field: Field, value: [u8; N]) {
    if let Some(dst) = buf.get_mut(field).and_then(|bytes| bytes.first_chunk_mut::<N>()) {
        *dst = value;
    }
}

#[inline]
fn read_u8(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

#[inline]
fn write_u8(buf: &mut [u8], at: usize, value: u8) {
    if let Some(byte) = buf.get_mut(at) {
        *byte = value;
    }
}

#[inline]
fn read_u16(buf: &[u8], field: Field) -> u16 {
    u16::from_be_bytes(read_array(buf, field))
}

#[inline]
fn write_u16(buf: &mut [u8], field: Field, value: u16) {
    write_array(buf, field, value.to_be_bytes());
}

#[inline]
fn read_u32(buf: &[u8], field: Field) -> u32 {
    u32::from_be_bytes(read_array(buf, field))
}

#[inline]
fn write_u32(buf: &mut [u8], field: Field, value: u32) {
    write_array(buf, field, value.to_be_bytes());
}

/// `buf[start..end]`, clamped into the buffer (`end` is raised to `start` if below it).
#[inline]
fn clamped(buf: &[u8], start: usize, end: usize) -> &[u8] {
    let start = start.min(buf.len());
    let end = end.clamp(start, buf.len());
    buf.get(start..end).unwrap_or(&[])
}

/// The `&mut` twin of [`clamped`].
#[inline]
fn clamped_mut(buf: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let start = start.min(buf.len());
    let end = end.clamp(start, buf.len());
    buf.get_mut(start..end).unwrap_or(&mut [])
}

/// Cross-view properties: what the NAT pipeline does to a packet — rewrite addresses with the
/// IPv4 view, patch the TCP/UDP checksum incrementally, rewrite ports — must leave exactly
/// the bytes etherparse would build for the rewritten packet, checksums included.
#[cfg(test)]
mod tests {
    use super::checksum::{update_addr, update_u16, update_udp_addr, update_udp_u16};
    use super::ipv4::ip_proto;
    use super::ipv4::tests::{build, header_strategy};
    use super::*;
    use etherparse::{Ipv4Header, TcpHeader, TcpOptions, UdpHeader};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// The new addresses and ports of a FullNAT rewrite (any of them may equal the old one).
    #[derive(Debug, Clone, Copy)]
    struct Rewrite {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        src_port: u16,
        dst_port: u16,
    }

    fn rewrite_strategy() -> impl Strategy<Value = Rewrite> {
        (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(
            |(src, dst, src_port, dst_port)| Rewrite {
                src: Ipv4Addr::from_bits(src),
                dst: Ipv4Addr::from_bits(dst),
                src_port,
                dst_port,
            },
        )
    }

    fn tcp_strategy() -> impl Strategy<Value = TcpHeader> {
        (
            (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
            (any::<u8>(), any::<u16>(), any::<u16>()),
            (0usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4)),
        )
            .prop_map(|((sport, dport, seq, ack), (flags, window, urgent), options)| {
                let mut tcp = TcpHeader::new(sport, dport, seq, window);
                tcp.acknowledgment_number = ack;
                tcp.urgent_pointer = urgent;
                let bit = |b: u8| flags & b != 0;
                (tcp.fin, tcp.syn, tcp.rst, tcp.psh) = (bit(0x01), bit(0x02), bit(0x04), bit(0x08));
                (tcp.ack, tcp.urg, tcp.ece, tcp.cwr) = (bit(0x10), bit(0x20), bit(0x40), bit(0x80));
                tcp.options = TcpOptions::try_from_slice(&options).unwrap();
                tcp
            })
    }

    /// An IPv4/TCP packet with both checksums right, built by etherparse.
    fn tcp_packet(ip: &Ipv4Header, tcp: &TcpHeader, payload: &[u8]) -> Vec<u8> {
        let mut tcp = tcp.clone();
        tcp.checksum = tcp.calc_checksum_ipv4_raw(ip.source, ip.destination, payload).unwrap();
        let mut segment = tcp.to_bytes().to_vec();
        segment.extend_from_slice(payload);
        build(ip.clone(), &segment)
    }

    /// An IPv4/UDP packet built by etherparse; `checksum` false sends none (0).
    fn udp_packet(ip: &Ipv4Header, udp: &UdpHeader, payload: &[u8], checksum: bool) -> Vec<u8> {
        let mut udp = udp.clone();
        udp.length = (8 + payload.len()) as u16;
        udp.checksum = match checksum {
            true => udp.calc_checksum_ipv4_raw(ip.source, ip.destination, payload).unwrap(),
            false => 0,
        };
        let mut datagram = udp.to_bytes().to_vec();
        datagram.extend_from_slice(payload);
        build(ip.clone(), &datagram)
    }

    /// FullNAT on a TCP packet the way the pipeline does it: no full recompute anywhere.
    fn nat_tcp(frame: &mut [u8], to: Rewrite) -> Result<()> {
        let mut ip = Ipv4Packet::new_checked(frame)?;
        let old_src = ip.rewrite_src_addr(to.src);
        let old_dst = ip.rewrite_dst_addr(to.dst);
        let mut tcp = TcpPacket::new_checked(ip.payload_mut())?;
        let mut sum = tcp.checksum();
        sum = update_addr(sum, old_src, to.src);
        sum = update_addr(sum, old_dst, to.dst);
        sum = update_u16(sum, tcp.src_port(), to.src_port);
        sum = update_u16(sum, tcp.dst_port(), to.dst_port);
        tcp.set_src_port(to.src_port);
        tcp.set_dst_port(to.dst_port);
        tcp.set_checksum(sum);
        Ok(())
    }

    /// The same for UDP, with the helpers that keep "no checksum" as 0.
    fn nat_udp(frame: &mut [u8], to: Rewrite) -> Result<()> {
        let mut ip = Ipv4Packet::new_checked(frame)?;
        let old_src = ip.rewrite_src_addr(to.src);
        let old_dst = ip.rewrite_dst_addr(to.dst);
        let mut udp = UdpPacket::new_checked(ip.payload_mut())?;
        let mut sum = udp.checksum();
        sum = update_udp_addr(sum, old_src, to.src);
        sum = update_udp_addr(sum, old_dst, to.dst);
        sum = update_udp_u16(sum, udp.src_port(), to.src_port);
        sum = update_udp_u16(sum, udp.dst_port(), to.dst_port);
        udp.set_src_port(to.src_port);
        udp.set_dst_port(to.dst_port);
        udp.set_checksum(sum);
        Ok(())
    }

    fn rewritten_ip(ip: &Ipv4Header, to: Rewrite) -> Ipv4Header {
        let mut ip = ip.clone();
        ip.source = to.src.octets();
        ip.destination = to.dst.octets();
        ip
    }

    #[test]
    fn nat_on_a_known_syn() {
        let ip = Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, [192, 0, 2, 7], [10, 0, 0, 100])
            .unwrap();
        let mut tcp = TcpHeader::new(40000, 80, 1, 64240);
        tcp.syn = true;
        let mut frame = tcp_packet(&ip, &tcp, &[]);
        let to = Rewrite {
            src: Ipv4Addr::new(10, 0, 1, 1),
            dst: Ipv4Addr::new(10, 0, 2, 5),
            src_port: 61000,
            dst_port: 8080,
        };
        nat_tcp(&mut frame, to).unwrap();
        let (expected_tcp, expected_ip) = {
            let mut tcp = tcp.clone();
            (tcp.source_port, tcp.destination_port) = (61000, 8080);
            (tcp, rewritten_ip(&ip, to))
        };
        assert_eq!(frame, tcp_packet(&expected_ip, &expected_tcp, &[]));
        let ip = Ipv4Packet::new_checked(&frame[..]).unwrap();
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert_eq!(tcp.flags(), TcpFlags::SYN);
    }

    proptest! {
        #[test]
        fn tcp_nat_matches_a_full_recompute(
            ip in header_strategy(ip_proto::TCP),
            tcp in tcp_strategy(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            to in rewrite_strategy(),
        ) {
            let mut frame = tcp_packet(&ip, &tcp, &payload);
            nat_tcp(&mut frame, to).unwrap();

            // Oracle 1: etherparse's own checksum computations over the rewritten packet.
            let (parsed_ip, segment) = Ipv4Header::from_slice(&frame).unwrap();
            let (parsed_tcp, data) = TcpHeader::from_slice(segment).unwrap();
            prop_assert_eq!(parsed_ip.header_checksum, parsed_ip.calc_header_checksum());
            prop_assert_eq!(
                parsed_tcp.checksum,
                parsed_tcp.calc_checksum_ipv4(&parsed_ip, data).unwrap()
            );
            // Oracle 2: the packet etherparse builds from the rewritten fields, byte for byte.
            let mut expected_tcp = tcp.clone();
            expected_tcp.source_port = to.src_port;
            expected_tcp.destination_port = to.dst_port;
            let expected = tcp_packet(&rewritten_ip(&ip, to), &expected_tcp, &payload);
            prop_assert_eq!(&frame, &expected);
            // And our own verifiers agree.
            let view = Ipv4Packet::new_checked(&frame[..]).unwrap();
            prop_assert!(view.verify_checksum());
            let segment = TcpPacket::new_checked(view.payload()).unwrap();
            prop_assert!(segment.verify_checksum(to.src, to.dst));
            prop_assert_eq!(segment.payload(), &payload[..]);
        }

        #[test]
        fn udp_nat_matches_a_full_recompute(
            ip in header_strategy(ip_proto::UDP),
            ports in any::<(u16, u16)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            with_checksum in any::<bool>(),
            to in rewrite_strategy(),
        ) {
            let udp = UdpHeader { source_port: ports.0, destination_port: ports.1, length: 0, checksum: 0 };
            let mut frame = udp_packet(&ip, &udp, &payload, with_checksum);
            nat_udp(&mut frame, to).unwrap();

            let (parsed_ip, datagram) = Ipv4Header::from_slice(&frame).unwrap();
            let (parsed_udp, data) = UdpHeader::from_slice(datagram).unwrap();
            prop_assert_eq!(parsed_ip.header_checksum, parsed_ip.calc_header_checksum());
            let oracle = match with_checksum {
                true => parsed_udp.calc_checksum_ipv4(&parsed_ip, data).unwrap(),
                false => 0,
            };
            prop_assert_eq!(parsed_udp.checksum, oracle);
            let expected_udp =
                UdpHeader { source_port: to.src_port, destination_port: to.dst_port, ..udp };
            let expected = udp_packet(&rewritten_ip(&ip, to), &expected_udp, &payload, with_checksum);
            prop_assert_eq!(&frame, &expected);
            let view = Ipv4Packet::new_checked(&frame[..]).unwrap();
            prop_assert!(view.verify_checksum());
            let datagram = UdpPacket::new_checked(view.payload()).unwrap();
            prop_assert!(datagram.verify_checksum(to.src, to.dst));
            prop_assert_eq!(datagram.payload(), &payload[..]);
        }

        #[test]
        fn tcp_verify_checksum_agrees_with_etherparse(
            ip in header_strategy(ip_proto::TCP),
            tcp in tcp_strategy(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flip in any::<u16>(),
        ) {
            let mut frame = tcp_packet(&ip, &tcp, &payload);
            let mut view = Ipv4Packet::new_checked(&mut frame[..]).unwrap();
            let (src, dst) = (view.src_addr(), view.dst_addr());
            let mut segment = TcpPacket::new_checked(view.payload_mut()).unwrap();
            let computed = segment.checksum();
            let stored = computed ^ flip;
            segment.set_checksum(stored);
            // Bit-for-bit equality, except that 0xffff is the same number as a computed 0.
            let same_number = stored == computed || (computed == 0 && stored == 0xffff);
            prop_assert_eq!(segment.verify_checksum(src, dst), same_number);
        }
    }
}
