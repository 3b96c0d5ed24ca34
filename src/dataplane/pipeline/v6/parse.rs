//! What an IPv6 frame is: the step-by-step checks of the fixed header and of the extension
//! headers before the upper layer, each refusal with its exact drop reason ([`check`]), the
//! TCP/UDP view of a packet ([`Transport6`], with the upper layer's offset beside it) and of
//! the packet an ICMPv6 error quotes ([`quoted_transport`]).
//!
//! Invariants: nothing here writes to the frame. What [`check`] accepts is IPv6 all of
//! whose payload is in the frame (`40 + payload length` bytes; Ethernet padding after it is
//! allowed), with TCP, UDP or ICMPv6 as its upper layer — right after the 40-byte fixed
//! header (at [`L4`]), or after a chain of hop-by-hop (only first, RFC 8200 §4.1),
//! destination options and routing headers whose segments left is 0 — and, for TCP and UDP,
//! the whole L4 header within the payload. The upper layer's offset comes with the view
//! ([`Upper6`]), so the rewrites read and write there; the extension headers are left as
//! they are (none is in a checksum, and the upper-layer length of the pseudo-header is the
//! payload length less the chain, which no rewrite changes).
//!
//! The walk ([`crate::wire::ipv6::ExtHeaders`]) is bounded: at most
//! [`MAX_EXT_HEADERS`](crate::wire::ipv6::MAX_EXT_HEADERS) headers, ending within
//! [`MAX_EXT_BYTES`](crate::wire::ipv6::MAX_EXT_BYTES) bytes of the payload, each within the
//! payload; so it costs a handful of reads whatever the chain says. The common packet (TCP,
//! UDP or ICMPv6 directly) never walks: its next header is matched first, one compare as
//! before extension headers were walked. A fragment header (after any of the walked
//! headers, or directly) ends the walk of a later fragment ([`Upper6::Fragment`]: its
//! identification and offset); the walk goes on after it in a first fragment, to the
//! TCP/UDP header whose ports (TCP: the whole header) must be there, and after it in an
//! atomic fragment (offset 0, no more fragments: a whole packet, RFC 6946). What a VIP
//! refuses, in the chain's order:
//! - a first fragment without its ports, or of ICMPv6 or another upper layer, or a second
//!   fragment header after a first fragment's: `fragment` (`super::super::fragments`);
//! - a routing header with segments left > 0: `ipv6_segments_left` (the VIP is not the
//!   packet's final destination, RFC 8200 §4.4: not xlb's to balance);
//! - ESP, AH, mobility, HIP, shim6 or an experimental header (ending the chain or directly):
//!   `ipv6_ext_headers` (a balancer can neither read past ESP nor rewrite under AH);
//! - a header past the payload, or hop-by-hop not first: `bad_ipv6_ext_header`;
//! - a chain longer than the walk's bounds: `ipv6_ext_chain_too_long`;
//! - anything else after the chain (no next header 59 included): `unsupported_proto`.
//!
//! Hop-by-hop options are not processed: they are for routers, and a VIP is an end host.

use std::net::Ipv6Addr;
use std::ops::Range;

use crate::conntrack::Probe6;
use crate::family::V6;
use crate::flow::{FlowKey, Proto};
use crate::report::DropReason;
use crate::wire::ipv4::ip_proto;
use crate::wire::ipv6::ExtHeaders;
use crate::wire::{Ipv6Packet, WireError};

use super::super::ETH_LEN;
use super::super::classify::{Transport, fragment_l4_header, l4_header};

/// Where the IPv6 fixed header ends in a frame: the upper layer of a packet without
/// extension headers, the first extension header of one with them.
pub(in crate::dataplane::pipeline) const L4: usize = ETH_LEN + 40;

/// Offsets of the IPv6 fixed header's fields in a frame.
pub(in crate::dataplane::pipeline) mod at {
    use super::ETH_LEN;
    pub const PAYLOAD_LEN: usize = ETH_LEN + 4;
    pub const NEXT_HEADER: usize = ETH_LEN + 6;
    pub const HOP_LIMIT: usize = ETH_LEN + 7;
    pub const SRC_ADDR: usize = ETH_LEN + 8;
    pub const DST_ADDR: usize = ETH_LEN + 24;
}

/// The L4 view the pipeline needs of an IPv6 TCP/UDP packet.
pub(in crate::dataplane::pipeline) type Transport6 = Transport<V6>;

/// What [`check`] found after the fixed header (and its extension headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) enum Upper6 {
    /// TCP or UDP with its whole header in the payload, starting at `l4` in the frame
    /// ([`L4`] without extension headers).
    Transport { transport: Transport6, l4: usize },
    /// An ICMPv6 message: its bytes in the frame (to the payload's end, padding excluded).
    Icmp(Range<usize>),
    /// A fragment of a datagram (RFC 8200 §4.5), not an atomic one (those are whole
    /// packets: walked past).
    Fragment(Fragment6),
}

/// What [`check`] read of a fragment: its fragment header, and for the first fragment
/// (offset 0) the TCP/UDP view of its upper layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) struct Fragment6 {
    /// The datagram's identification.
    pub ident: u32,
    /// The fragment offset, in 8-byte units.
    pub offset: u16,
    /// The fragment header's next header (a later fragment's only clue to what it carries).
    pub next_header: u8,
    /// The first fragment's TCP/UDP view and its header's offset in the frame (its ports and
    /// the TCP header whole, a UDP header's length not checked against the fragment: it is
    /// the whole datagram's); None for a later fragment.
    pub first: Option<(Transport6, usize)>,
}

/// The flow an ICMPv6 error quotes ([`quoted_transport`]), and where the quoted TCP/UDP
/// header starts in the error's message (48 without extension headers in the quote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) struct Quote6 {
    pub transport: Transport6,
    pub l4: usize,
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

/// The key of the TCP/UDP packet without extension headers that `frame` seems to hold,
/// read at fixed offsets with no check at all: a batch's guess, so that its connection-table
/// lookup starts a whole batch ahead (see `Pipeline::process_batch`). None for anything
/// else (another next header, a frame too short for the ports). A wrong guess costs only
/// the lookup: the flow step uses a prepared lookup only if its hash is that of the key
/// [`check`] found.
#[inline(always)]
pub(in crate::dataplane::pipeline) fn guess_key(frame: &[u8]) -> Option<FlowKey<V6>> {
    let head = frame.first_chunk::<{ L4 + 4 }>()?;
    let proto = match head[at::NEXT_HEADER] {
        ip_proto::TCP => Proto::Tcp,
        ip_proto::UDP => Proto::Udp,
        _ => return None,
    };
    let addr = |offset: usize| {
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&head[offset..offset + 16]);
        Ipv6Addr::from(bytes)
    };
    Some(FlowKey {
        src_addr: addr(at::SRC_ADDR),
        dst_addr: addr(at::DST_ADDR),
        src_port: u16::from_be_bytes([head[L4], head[L4 + 1]]),
        dst_port: u16::from_be_bytes([head[L4 + 2], head[L4 + 3]]),
        proto,
    })
}

/// What the settled hit reads of an IPv6 frame at fixed offsets ([`plain_at`]): the
/// probe of its 5-tuple, its TCP flags, and its addresses (for the owner of the
/// destination). A new flow's first packet reads its key after the miss ([`guess_key`]:
/// the same bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) struct Plain6 {
    pub probe: Probe6,
    pub tcp_flags: Option<u8>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
}

/// The common IPv6 packet checked in one pass over fixed offsets, as IPv4's
/// `plain_transport`: version 6, the payload within the frame, TCP or UDP directly after
/// the fixed header (no extension header: so no fragment), a whole TCP header or UDP
/// datagram within the payload; its probe ([`Probe6::of_wire`]), flags and addresses.
/// None for anything else, which [`check`] then judges: this only accepts, and what it
/// accepts `check` accepts too, as `Upper6::Transport` at [`L4`] with the same key and
/// flags (held to it by `settled_ipv6_hits_give_what_the_step_by_step_way_gives`).
#[inline(always)]
pub(in crate::dataplane::pipeline) fn plain_at(frame: &[u8]) -> Option<Plain6> {
    let head = frame.first_chunk::<L4>()?;
    if head[ETH_LEN] >> 4 != 6 {
        return None;
    }
    let payload_len =
        usize::from(u16::from_be_bytes([head[at::PAYLOAD_LEN], head[at::PAYLOAD_LEN + 1]]));
    let segment = frame.get(L4..L4 + payload_len)?;
    let (proto, tcp_flags) = match head[at::NEXT_HEADER] {
        ip_proto::TCP => {
            let tcp = segment.first_chunk::<20>()?;
            let header_len = usize::from(tcp[12] >> 4) * 4;
            if header_len < 20 || header_len > segment.len() {
                return None;
            }
            (Proto::Tcp, Some(tcp[13]))
        }
        ip_proto::UDP => {
            let udp = segment.first_chunk::<8>()?;
            let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            if len < 8 || len > segment.len() {
                return None;
            }
            (Proto::Udp, None)
        }
        _ => return None,
    };
    let addrs = head[at::SRC_ADDR..].first_chunk::<32>()?;
    let ports = segment.first_chunk::<4>()?;
    let (src, dst) = addrs.split_at(16);
    Some(Plain6 {
        probe: Probe6::of_wire(addrs, ports, proto),
        tcp_flags,
        src: Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?),
        dst: Ipv6Addr::from(<[u8; 16]>::try_from(dst).ok()?),
    })
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

/// The extension headers the pipeline walks past to the upper layer: hop-by-hop,
/// destination options and routing (the fragment header, which the walk also knows, is
/// refused when met).
#[inline]
fn is_forwarded_ext_header(next_header: u8) -> bool {
    matches!(next_header, ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::DEST_OPTIONS)
}

/// The step-by-step checks of an IPv6 packet after its addresses (see the module docs), in
/// this order: version 6 (`bad_ip_version`), the payload within the frame (`truncated`, as
/// IPv4's total length beyond the frame; a shorter one leaves padding), the next header:
/// TCP or UDP with a whole header (`bad_l4_header`), ICMPv6, a chain of walked extension
/// headers or a fragment header ([`after_ext_headers`]), another extension header
/// (`ipv6_ext_headers`), anything else (`unsupported_proto`).
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
            upper_transport(ip.src_addr(), ip.dst_addr(), protocol, frame, L4..end)
        }
        ip_proto::ICMPV6 => Ok(Upper6::Icmp(L4..end)),
        next if is_forwarded_ext_header(next) || next == ip_proto::FRAGMENT => {
            after_ext_headers(ip.src_addr(), ip.dst_addr(), next, frame, end)
        }
        next if is_ext_header(next) => Err(DropReason::Ipv6ExtHeaders),
        _ => Err(DropReason::UnsupportedProto),
    }
}

/// The TCP/UDP view of the upper layer at `upper` in `frame` (`bad_l4_header` unless it
/// holds a whole TCP header or UDP datagram).
#[inline(always)]
fn upper_transport(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    protocol: u8,
    frame: &[u8],
    upper: Range<usize>,
) -> Result<Upper6, DropReason> {
    let l4 = upper.start;
    match transport(src, dst, protocol, &frame[upper]) {
        Some(transport) => Ok(Upper6::Transport { transport, l4 }),
        None => Err(DropReason::BadL4Header),
    }
}

/// The upper layer after the extension headers a packet's chain starts with (`first`, one
/// of [`is_forwarded_ext_header`]'s or the fragment header), its payload ending at `end` in
/// `frame`: walked within the payload and the walk's bounds, each refusal with its reason;
/// a fragment's fragment header read ([`Upper6::Fragment`]; see the module docs).
/// Out of line: the common packet never comes here.
#[inline(never)]
fn after_ext_headers(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    first: u8,
    frame: &[u8],
    end: usize,
) -> Result<Upper6, DropReason> {
    let mut walk = ExtHeaders::new(first, &frame[L4..end]);
    // The identification of a first fragment's datagram, once its fragment header is met.
    let mut first_fragment = None;
    for header in walk.by_ref() {
        match header {
            Ok(header) if header.kind == ip_proto::FRAGMENT => {
                let at = ETH_LEN + header.offset;
                let field = |i: usize| frame[at + i];
                let offset_flags = u16::from_be_bytes([field(2), field(3)]);
                let (offset, more) = (offset_flags >> 3, offset_flags & 1 != 0);
                let ident = u32::from_be_bytes([field(4), field(5), field(6), field(7)]);
                match (offset, more) {
                    // Atomic (RFC 6946): the whole datagram, walked on as a packet.
                    (0, false) => {}
                    // A second fragment header in a first fragment's chain.
                    _ if first_fragment.is_some() => return Err(DropReason::Fragment),
                    (0, true) => first_fragment = Some((ident, header.next_header)),
                    (offset, _) => {
                        let next_header = header.next_header;
                        let fragment = Fragment6 { ident, offset, next_header, first: None };
                        return Ok(Upper6::Fragment(fragment));
                    }
                }
            }
            Ok(header) if header.segments_left != 0 => {
                return Err(DropReason::Ipv6SegmentsLeft);
            }
            Ok(_) => {}
            Err(WireError::ExtHeaderChainTooLong) => {
                return Err(DropReason::Ipv6ExtChainTooLong);
            }
            // Past the payload (`Truncated`), or hop-by-hop not first (`Malformed`).
            Err(_) => return Err(DropReason::BadIpv6ExtHeader),
        }
    }
    let l4 = ETH_LEN + walk.offset();
    if let Some((ident, next_header)) = first_fragment {
        // The ports must be in the first fragment (RFC 7112: its whole header chain is);
        // ICMPv6 and other upper layers in fragments are not balanced.
        let Some(view) = fragment_l4_header(walk.protocol(), &frame[l4..end]) else {
            return Err(DropReason::Fragment);
        };
        let (proto, src_port, dst_port, tcp_flags) = view;
        let key = FlowKey { src_addr: src, dst_addr: dst, src_port, dst_port, proto };
        let transport = Transport6 { key, tcp_flags };
        let first = Some((transport, l4));
        return Ok(Upper6::Fragment(Fragment6 { ident, offset: 0, next_header, first }));
    }
    match walk.protocol() {
        protocol @ (ip_proto::TCP | ip_proto::UDP) => {
            upper_transport(src, dst, protocol, frame, l4..end)
        }
        ip_proto::ICMPV6 => Ok(Upper6::Icmp(l4..end)),
        next if is_ext_header(next) => Err(DropReason::Ipv6ExtHeaders),
        _ => Err(DropReason::UnsupportedProto),
    }
}

/// The TCP/UDP view of `segment` (the upper layer), sent from `src` to `dst`: None unless
/// it holds a whole TCP header or UDP datagram.
#[inline]
fn transport(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, segment: &[u8]) -> Option<Transport6> {
    let (proto, src_port, dst_port, tcp_flags) = l4_header(protocol, segment)?;
    Some(Transport6 {
        key: FlowKey { src_addr: src, dst_addr: dst, src_port, dst_port, proto },
        tcp_flags,
    })
}

/// The 5-tuple of the packet an ICMPv6 error quotes (`icmp` is the whole message), and where
/// its TCP/UDP header is: its fixed header, the extension headers after it walked as the
/// pipeline walks them (bounded, within the quote: a quote may end anywhere after its
/// first bytes, RFC 4443 §2.4 c), then TCP or UDP with at least the 8 bytes with the
/// ports. A quoted first (or atomic) fragment is walked past its fragment header: its
/// ports are there (a Packet Too Big about a big datagram quotes its first fragment). None
/// otherwise: a chain cut short by the quote, a later fragment (no ports), or an upper
/// layer that is not TCP or UDP (an ICMPv6 one — an error about an error — names no flow).
pub(in crate::dataplane::pipeline) fn quoted_transport(icmp: &[u8]) -> Option<Quote6> {
    const QUOTE: usize = 8;
    let quote = icmp.get(QUOTE..)?;
    let ip = Ipv6Packet::new_quoted(quote).ok()?;
    let mut walk = ip.ext_headers();
    for header in walk.by_ref() {
        let header = header.ok()?;
        if header.kind == ip_proto::FRAGMENT {
            let offset = quote.get(header.offset + 2..header.offset + 4)?;
            if u16::from_be_bytes([offset[0], offset[1]]) >> 3 != 0 {
                return None;
            }
        }
    }
    let proto = Proto::from_number(walk.protocol())?;
    let l4 = QUOTE + walk.offset();
    let transport = Transport::quoted(ip.src_addr(), ip.dst_addr(), proto, icmp.get(l4..l4 + 8)?)?;
    Some(Quote6 { transport, l4 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, ACK, Host6, SYN, ext_header, with_ext_headers};
    use crate::wire::ipv6::{MAX_EXT_BYTES, MAX_EXT_HEADERS};

    const A: Host6 =
        Host6::new([2, 0, 0, 0, 0, 0x20], Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20));
    const B: Host6 =
        Host6::new([2, 0, 0, 0, 0, 0x10], Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));

    fn syn() -> Vec<u8> {
        testkit::tcp6(A.mac, B.mac, (A.ip, 40000), (B.ip, 80), SYN, b"")
    }

    fn query() -> Vec<u8> {
        testkit::udp6(A.mac, B.mac, (A.ip, 5000), (B.ip, 53), b"query")
    }

    /// `frame` with an 8-byte extension header `kind` inserted after the fixed header (a
    /// routing header with segments left 0; any other kind padded or zero).
    fn with_ext(frame: &[u8], kind: u8) -> Vec<u8> {
        with_ext_headers(frame, &[(kind, &ext_header(kind, 0))])
    }

    /// `frame` with `chain` ((kind, length field) headers) inserted after the fixed header.
    fn with_chain(frame: &[u8], chain: &[(u8, u8)]) -> Vec<u8> {
        let headers: Vec<(u8, Vec<u8>)> =
            chain.iter().map(|&(kind, len)| (kind, ext_header(kind, len))).collect();
        let refs: Vec<(u8, &[u8])> = headers.iter().map(|(k, h)| (*k, h.as_slice())).collect();
        with_ext_headers(frame, &refs)
    }

    fn transport_at(frame: &[u8]) -> (FlowKey<V6>, usize) {
        match check(frame) {
            Ok(Upper6::Transport { transport, l4 }) => (transport.key, l4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcp_udp_and_icmpv6_are_taken_with_their_views() {
        let frame = syn();
        let Ok(Upper6::Transport { transport: t, l4 }) = check(&frame) else { panic!("refused") };
        let key = FlowKey {
            src_addr: A.ip,
            dst_addr: B.ip,
            src_port: 40000,
            dst_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(t, Transport6 { key, tcp_flags: Some(crate::wire::TcpFlags::SYN.0) });
        assert_eq!(l4, L4);
        assert_eq!(addresses(&frame), Some((A.ip, B.ip)));
        let Ok(Upper6::Transport { transport: t, .. }) = check(&query()) else { panic!() };
        assert_eq!((t.key.proto, t.key.dst_port, t.tcp_flags), (Proto::Udp, 53, None));
        let echo = testkit::icmpv6_echo(A.mac, B.mac, A.ip, B.ip, 64, false, b"abcd");
        assert_eq!(check(&echo), Ok(Upper6::Icmp(L4..echo.len())));
        // Ethernet padding after the payload is allowed and left out.
        let mut padded = echo.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(check(&padded), Ok(Upper6::Icmp(L4..echo.len())));
    }

    /// Every refusal of the fixed header, with its reason.
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
        // Cut anywhere: a counted refusal, never a panic.
        for cut in 0..good.len() {
            let frame = &good[..cut];
            if cut < L4 {
                assert_eq!(addresses(frame), None);
            }
            assert!(check(frame).is_err(), "cut at {cut}");
        }
    }

    /// Each extension header kind directly after the fixed header, before TCP, UDP and
    /// ICMPv6, and after a destination options header: walked past (hop-by-hop, routing
    /// with segments left 0, destination options) or refused with its reason.
    #[test]
    fn every_extension_header_kind_has_its_verdict() {
        let mut routing_on = ext_header(43, 0);
        routing_on[3] = 1;
        let esp = [0u8; 8];
        type Want = Result<(), DropReason>;
        let table: [(&str, u8, &[u8], Want, Want); 11] = [
            ("hop-by-hop", 0, &ext_header(0, 0), Ok(()), Err(DropReason::BadIpv6ExtHeader)),
            ("destination options", 60, &ext_header(60, 0), Ok(()), Ok(())),
            ("routing, segments left 0", 43, &ext_header(43, 0), Ok(()), Ok(())),
            (
                "routing, segments left 1",
                43,
                &routing_on,
                Err(DropReason::Ipv6SegmentsLeft),
                Err(DropReason::Ipv6SegmentsLeft),
            ),
            ("esp", 50, &esp, Err(DropReason::Ipv6ExtHeaders), Err(DropReason::Ipv6ExtHeaders)),
            ("ah", 51, &esp, Err(DropReason::Ipv6ExtHeaders), Err(DropReason::Ipv6ExtHeaders)),
            (
                "mobility",
                135,
                &esp,
                Err(DropReason::Ipv6ExtHeaders),
                Err(DropReason::Ipv6ExtHeaders),
            ),
            ("hip", 139, &esp, Err(DropReason::Ipv6ExtHeaders), Err(DropReason::Ipv6ExtHeaders)),
            ("shim6", 140, &esp, Err(DropReason::Ipv6ExtHeaders), Err(DropReason::Ipv6ExtHeaders)),
            (
                "experimental 253",
                253,
                &esp,
                Err(DropReason::Ipv6ExtHeaders),
                Err(DropReason::Ipv6ExtHeaders),
            ),
            (
                "experimental 254",
                254,
                &esp,
                Err(DropReason::Ipv6ExtHeaders),
                Err(DropReason::Ipv6ExtHeaders),
            ),
        ];
        let echo = testkit::icmpv6_echo(A.mac, B.mac, A.ip, B.ip, 64, false, b"abcd");
        let dest = ext_header(60, 0);
        for (what, kind, header, first, second) in table {
            for frame in [syn(), query(), echo.clone()] {
                let direct = with_ext_headers(&frame, &[(kind, header)]);
                let after = with_ext_headers(&frame, &[(60, &dest), (kind, header)]);
                for (chained, want, headers) in [(direct, first, 8), (after, second, 16)] {
                    let got = check(&chained);
                    match (want, got) {
                        (Ok(()), Ok(Upper6::Transport { transport, l4 })) => {
                            assert_eq!(l4, L4 + headers, "{what}");
                            assert_eq!(
                                Ok(transport),
                                check(&frame).map(|u| match u {
                                    Upper6::Transport { transport, .. } => transport,
                                    other => panic!("{what}: TCP/UDP became {other:?}"),
                                })
                            );
                        }
                        (Ok(()), Ok(Upper6::Icmp(range))) => {
                            assert_eq!(range, L4 + headers..chained.len(), "{what}");
                        }
                        (want, got) => assert_eq!(got.map(|_| ()), want, "{what} ({headers})"),
                    }
                }
            }
        }
        // A chain that ends in "no next header" or a protocol xlb does not balance.
        let mut no_next = with_ext(&syn(), 0);
        no_next[L4] = 59;
        assert_eq!(check(&no_next), Err(DropReason::UnsupportedProto));
        no_next[L4] = 132;
        assert_eq!(check(&no_next), Err(DropReason::UnsupportedProto));
    }

    /// A datagram in fragments, with destination options before the fragment header: the
    /// first fragment names its flow and where its TCP/UDP header is; the later ones name
    /// their datagram and offset only; an atomic fragment is the whole packet.
    #[test]
    fn fragments_are_read_by_their_fragment_header() {
        let dest = ext_header(60, 0);
        let whole = testkit::udp6(A.mac, B.mac, (A.ip, 5000), (B.ip, 53), &[7; 40]);
        let (key, _) = transport_at(&whole);
        let pieces = testkit::fragmented6(&whole, &[(60, &dest)], 0x0102_0304, 16);
        assert_eq!(pieces.len(), 3);
        let fragment = |frame: &[u8]| match check(frame) {
            Ok(Upper6::Fragment(fragment)) => fragment,
            other => panic!("not a fragment: {other:?}"),
        };
        let first = fragment(&pieces[0]);
        let transport = Transport6 { key, tcp_flags: None };
        assert_eq!(first.first, Some((transport, L4 + 8 + 8)));
        assert_eq!((first.ident, first.offset, first.next_header), (0x0102_0304, 0, 17));
        for (index, piece) in pieces.iter().enumerate().skip(1) {
            let later = fragment(piece);
            assert_eq!(
                (later.ident, later.offset, later.first),
                (0x0102_0304, index as u16 * 2, None)
            );
        }
        // Atomic (offset 0, no more fragments): the whole packet, its header after the chain.
        let atomic = with_ext_headers(&whole, &[(60, &dest), (44, &[0, 0, 0, 0, 0, 0, 0, 9])]);
        assert_eq!(check(&atomic), Ok(Upper6::Transport { transport, l4: L4 + 16 }));
        // A TCP first fragment: its flags read as a whole packet's.
        let syn = testkit::tcp6(A.mac, B.mac, (A.ip, 40000), (B.ip, 80), SYN, &[1; 64]);
        let syn_pieces = testkit::fragmented6(&syn, &[], 1, 48);
        let Ok(Upper6::Transport { transport: syn_view, .. }) = check(&syn) else { panic!() };
        assert_eq!(fragment(&syn_pieces[0]).first, Some((syn_view, L4 + 8)));
    }

    /// A first fragment that does not hold its ports (UDP's 8 bytes, TCP's whole header),
    /// one of ICMPv6, and a second fragment header in a first fragment's chain are refused
    /// as `fragment`; every fragment cut at every offset is a counted refusal, never a panic.
    #[test]
    fn fragments_cut_short_are_refused() {
        let whole = testkit::udp6(A.mac, B.mac, (A.ip, 5000), (B.ip, 53), &[7; 40]);
        let mut short = testkit::fragmented6(&whole, &[], 5, 16).swap_remove(0);
        short[at::PAYLOAD_LEN..at::PAYLOAD_LEN + 2].copy_from_slice(&(8u16 + 7).to_be_bytes());
        assert_eq!(check(&short), Err(DropReason::Fragment), "UDP header cut");
        let syn_first = testkit::fragmented6(&syn(), &[], 5, 16).swap_remove(0);
        assert_eq!(check(&syn_first), Err(DropReason::Fragment), "TCP header cut");
        let echo = testkit::icmpv6_echo(A.mac, B.mac, A.ip, B.ip, 64, false, &[1; 32]);
        let echo_first = testkit::fragmented6(&echo, &[], 5, 16).swap_remove(0);
        assert_eq!(check(&echo_first), Err(DropReason::Fragment), "ICMPv6");
        let first_header = [0, 0, 0, 1, 0, 0, 0, 5];
        let twice = with_ext_headers(&whole, &[(44, &first_header), (44, &first_header)]);
        assert_eq!(check(&twice), Err(DropReason::Fragment), "two fragment headers");
        let dest = ext_header(60, 0);
        for piece in testkit::fragmented6(&whole, &[(60, &dest)], 5, 16) {
            for cut in 0..piece.len() {
                let mut frame = piece.clone();
                frame.truncate(cut);
                if cut >= L4 {
                    assert_eq!(check(&frame), Err(DropReason::Truncated), "cut at {cut}");
                    let mut short = piece.clone();
                    let len = (cut - L4) as u16;
                    short[at::PAYLOAD_LEN..at::PAYLOAD_LEN + 2].copy_from_slice(&len.to_be_bytes());
                    let _ = check(&short);
                }
            }
        }
    }

    /// The recommended order of RFC 8200 §4.1 in full, and repeated headers: walked to the
    /// TCP header, its view the one without the chain.
    #[test]
    fn chains_are_walked_to_their_upper_layer() {
        let frame = syn();
        let (key, _) = transport_at(&frame);
        let chains: [&[(u8, u8)]; 4] = [
            &[(0, 0), (60, 1), (43, 2), (60, 0)],
            &[(60, 0), (60, 3), (43, 0), (43, 1)],
            &[(0, 30)],
            &[(43, 0); MAX_EXT_HEADERS],
        ];
        for chain in chains {
            let chained = with_chain(&frame, chain);
            let len: usize = chain.iter().map(|(_, len)| (usize::from(*len) + 1) * 8).sum();
            assert_eq!(transport_at(&chained), (key, L4 + len), "{chain:?}");
        }
    }

    /// Beyond the walk's bounds (one header too many; a header ending past the byte bound),
    /// a header running past the payload, hop-by-hop after another header, a TCP header
    /// cut short after the chain: each a counted refusal.
    #[test]
    fn hostile_chains_are_counted_refusals() {
        let frame = syn();
        let too_many = with_chain(&frame, &[(60, 0); MAX_EXT_HEADERS + 1]);
        assert_eq!(check(&too_many), Err(DropReason::Ipv6ExtChainTooLong));
        let loop_of_60s = with_chain(&frame, &[(60, 0); 40]);
        assert_eq!(check(&loop_of_60s), Err(DropReason::Ipv6ExtChainTooLong));
        // 1024 bytes of headers is the most; one more 8-byte unit is past it.
        let words = MAX_EXT_BYTES / 8;
        let at_bound =
            with_chain(&frame, &[(60, (words / 2 - 1) as u8), (60, (words / 2 - 1) as u8)]);
        assert_eq!(transport_at(&at_bound).1, L4 + MAX_EXT_BYTES);
        let past_bound =
            with_chain(&frame, &[(60, (words / 2 - 1) as u8), (60, (words / 2) as u8)]);
        assert_eq!(check(&past_bound), Err(DropReason::Ipv6ExtChainTooLong));
        // A length field past the payload.
        let mut long = with_ext(&frame, 60);
        long[L4 + 1] = 3;
        assert_eq!(check(&long), Err(DropReason::BadIpv6ExtHeader));
        let hop_by_hop_second = with_chain(&frame, &[(60, 0), (0, 0)]);
        assert_eq!(check(&hop_by_hop_second), Err(DropReason::BadIpv6ExtHeader));
        // The payload length cuts the TCP header after a whole chain.
        let mut cut_tcp = with_ext(&frame, 0);
        cut_tcp[at::PAYLOAD_LEN..at::PAYLOAD_LEN + 2].copy_from_slice(&[0, 8 + 19]);
        assert_eq!(check(&cut_tcp), Err(DropReason::BadL4Header));
    }

    /// A chained packet cut at every offset — the frame (the payload length beyond it) or
    /// the payload length (the frame whole, the rest padding) — is refused with the reason
    /// of where the cut falls, never a panic.
    #[test]
    fn a_chain_cut_at_every_offset_is_refused() {
        let chained = with_chain(&query(), &[(0, 0), (43, 1), (60, 0)]);
        let upper = L4 + 8 + 16 + 8;
        for cut in 0..chained.len() {
            let frame = &chained[..cut];
            let want = if cut < L4 { None } else { Some(Err(DropReason::Truncated)) };
            if let Some(want) = want {
                assert_eq!(check(frame), want, "frame cut at {cut}");
            }
            if cut < L4 {
                continue;
            }
            let mut short = chained.clone();
            let len = (cut - L4) as u16;
            short[at::PAYLOAD_LEN..at::PAYLOAD_LEN + 2].copy_from_slice(&len.to_be_bytes());
            let want =
                if cut < upper { DropReason::BadIpv6ExtHeader } else { DropReason::BadL4Header };
            assert_eq!(check(&short), Err(want), "payload cut at {cut}");
        }
        assert!(matches!(check(&chained), Ok(Upper6::Transport { l4, .. }) if l4 == upper));
    }

    proptest::proptest! {
        /// A fragment header of any field values (offset, flags, identification) behind
        /// any of the walked headers, the packet's payload length anything up to the frame's:
        /// never a panic; a fragment read is the header's fields, and a first fragment's
        /// TCP/UDP header (at the offset it names) lies within the payload.
        #[test]
        fn any_fragment_header_is_read_or_refused(
            udp in proptest::prelude::any::<bool>(),
            before in proptest::collection::vec(proptest::sample::select(vec![0u8, 60, 43]), 0..3),
            offset_flags in proptest::prelude::any::<u16>(),
            ident in proptest::prelude::any::<u32>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let frame = match udp {
                true => testkit::udp6(A.mac, B.mac, (A.ip, 5000), (B.ip, 53), &payload),
                false => testkit::tcp6(A.mac, B.mac, (A.ip, 40000), (B.ip, 80), ACK, &payload),
            };
            let headers: Vec<(u8, Vec<u8>)> = before.iter().map(|&kind| (kind, ext_header(kind, 0))).collect();
            let mut fragment = [0u8; 8];
            fragment[2..4].copy_from_slice(&offset_flags.to_be_bytes());
            fragment[4..].copy_from_slice(&ident.to_be_bytes());
            let mut chain: Vec<(u8, &[u8])> = headers.iter().map(|(k, h)| (*k, h.as_slice())).collect();
            chain.push((44, &fragment));
            let mut packet = with_ext_headers(&frame, &chain);
            let len = cut.index(packet.len() - L4 + 1);
            packet[at::PAYLOAD_LEN..at::PAYLOAD_LEN + 2].copy_from_slice(&(len as u16).to_be_bytes());
            let end = L4 + len;
            match check(&packet) {
                Ok(Upper6::Fragment(read)) => {
                    proptest::prop_assert_eq!(read.ident, ident);
                    proptest::prop_assert_eq!(read.offset, offset_flags >> 3);
                    proptest::prop_assert!(offset_flags & 1 == 1 || read.offset != 0, "an atomic fragment is a packet");
                    if let Some((transport, l4)) = read.first {
                        proptest::prop_assert_eq!(read.offset, 0);
                        proptest::prop_assert!(l4 + 8 <= end);
                        proptest::prop_assert_eq!(transport.key.src_addr, A.ip);
                    }
                }
                Ok(Upper6::Transport { l4, .. }) => {
                    proptest::prop_assert_eq!(offset_flags & 0xfff9, 0, "only an atomic fragment is a packet");
                    proptest::prop_assert!(l4 <= end);
                }
                Ok(Upper6::Icmp(_)) => proptest::prop_assert!(false, "TCP/UDP read as ICMPv6"),
                Err(_) => {}
            }
        }

        /// The view of a packet with any chain in RFC 8200's recommended order (hop-by-hop,
        /// destination options, routing with segments left 0, destination options; each
        /// there or not, of any length, with any option bytes) agrees with etherparse's:
        /// the same addresses, ports and protocol, and the TCP/UDP header where etherparse
        /// finds it.
        #[test]
        fn the_view_agrees_with_etherparse(
            udp in proptest::prelude::any::<bool>(),
            chain in proptest::collection::vec((proptest::prelude::any::<bool>(), 0u8..4, proptest::prelude::any::<u8>()), 4),
            ports in proptest::prelude::any::<(u16, u16)>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
        ) {
            use etherparse::{SlicedPacket, TransportSlice};
            let frame = match udp {
                true => testkit::udp6(A.mac, B.mac, (A.ip, ports.0), (B.ip, ports.1), &payload),
                false => testkit::tcp6(A.mac, B.mac, (A.ip, ports.0), (B.ip, ports.1), ACK, &payload),
            };
            let kinds = [0u8, 60, 43, 60];
            let headers: Vec<(u8, Vec<u8>)> = kinds
                .iter()
                .zip(&chain)
                .filter(|(_, (present, _, _))| *present)
                .map(|(&kind, &(_, len, fill))| {
                    let mut header = ext_header(kind, len);
                    // Option bytes (or routing data) of any value: not parsed.
                    for byte in header.iter_mut().skip(if kind == 43 { 4 } else { 2 }) {
                        *byte = fill;
                    }
                    (kind, header)
                })
                .collect();
            let refs: Vec<(u8, &[u8])> = headers.iter().map(|(k, h)| (*k, h.as_slice())).collect();
            let chained = with_ext_headers(&frame, &refs);
            let (key, l4) = transport_at(&chained);
            let oracle = SlicedPacket::from_ethernet(&chained).expect("etherparse parses it");
            let (proto, src_port, dst_port, header) = match oracle.transport {
                Some(TransportSlice::Tcp(tcp)) => (Proto::Tcp, tcp.source_port(), tcp.destination_port(), tcp.slice().as_ptr()),
                Some(TransportSlice::Udp(udp)) => (Proto::Udp, udp.source_port(), udp.destination_port(), udp.slice().as_ptr()),
                other => panic!("etherparse found {other:?}"),
            };
            proptest::prop_assert_eq!(key, FlowKey { src_addr: A.ip, dst_addr: B.ip, src_port, dst_port, proto });
            proptest::prop_assert_eq!(l4, header as usize - chained.as_ptr() as usize);
        }
    }

    #[test]
    fn a_quoted_packet_names_its_flow_unless_it_is_not_tcp_or_udp() {
        let frame = testkit::tcp6(A.mac, B.mac, (A.ip, 40000), (B.ip, 80), ACK, &[0; 64]);
        let error = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &frame, 8);
        let icmp = &error[L4..];
        let quoted = quoted_transport(icmp).expect("names a flow");
        assert_eq!((quoted.transport.key, quoted.l4), (transport_at(&frame).0, 48));
        assert_eq!(quoted_transport(&icmp[..icmp.len() - 1]), None, "ports cut short");
        let echo = testkit::icmpv6_echo(A.mac, B.mac, A.ip, B.ip, 64, true, &[0; 16]);
        let about_echo = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &echo, 16);
        assert_eq!(quoted_transport(&about_echo[L4..]), None, "about ICMPv6: no flow");
    }

    /// A quote with extension headers is walked (within the quote) to its TCP/UDP header;
    /// one cut inside its chain, with a fragment header, or past the walk's bounds names no
    /// flow.
    #[test]
    fn a_quote_with_extension_headers_is_walked() {
        let frame = testkit::tcp6(A.mac, B.mac, (A.ip, 40000), (B.ip, 80), ACK, &[0; 64]);
        let key = transport_at(&frame).0;
        let chained = with_chain(&frame, &[(0, 0), (60, 1), (43, 0)]);
        let error =
            testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &chained, 32 + 20);
        let icmp = &error[L4..];
        let quoted = quoted_transport(icmp).expect("names a flow");
        assert_eq!((quoted.transport.key, quoted.l4), (key, 8 + 40 + 32));
        for cut in 8 + 40..quoted.l4 + 4 {
            assert_eq!(quoted_transport(&icmp[..cut]), None, "quote cut at {cut}");
        }
        let fragment = with_chain(&frame, &[(60, 0), (44, 0)]);
        let error = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &fragment, 1000);
        assert_eq!(quoted_transport(&error[L4..]), None, "a later fragment: no flow");
        let dest = ext_header(60, 0);
        let first = with_ext_headers(&frame, &[(60, &dest), (44, &[0, 0, 0, 1, 0, 0, 0, 9])]);
        let error = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &first, 1000);
        let quoted = quoted_transport(&error[L4..]).expect("a first fragment names its flow");
        assert_eq!((quoted.transport.key, quoted.l4), (key, 8 + 40 + 16));
        let long = with_chain(&frame, &[(60, 0); MAX_EXT_HEADERS + 1]);
        let error = testkit::icmpv6_packet_too_big(B.mac, A.mac, B.ip, A.ip, 1280, &long, 1000);
        assert_eq!(quoted_transport(&error[L4..]), None, "past the walk's bounds: no flow");
    }
}
