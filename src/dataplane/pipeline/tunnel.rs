//! Tunnel mode (`forward = "tunnel"`, LVS's IP TUN, Katran's mode): the client's IP
//! packet is kept whole and wrapped in an outer header to the real server, which
//! decapsulates it, holds the VIP and answers the client directly (as in DR, replies never
//! come back: the flow is tracked in its original direction only).
//!
//! The outer packet, byte for byte:
//! - Ethernet: to the next hop of the real server (on-link: its own MAC; else the egress
//!   interface's `gateway`'s, the same hop resolution and caches as every other
//!   destination), from the egress interface's MAC, type IPv4.
//! - IPv4, 20 bytes, no options: TOS copied from the inner packet (DSCP and ECN, RFC 2003
//!   §3.1 and RFC 6040's normal mode), total length inner + overhead, identification from a
//!   per-core counter (one more per generated packet), DF copied from the inner packet, no
//!   fragment offset, TTL 64, protocol 4 (IPIP) or 17 (GUE), header checksum filled,
//!   destination the real server, source: the service's `tunnel_source` prefix, else the
//!   egress interface's, else the interface's own address; a prefix's host bits come from
//!   the flow's pinned hash ([`crate::hash::flow_hash`]), so one flow always has one outer
//!   source (on every box of a fleet) and flows spread over the real server's receive
//!   queues (Katran's way).
//! - GUE only: UDP, 8 bytes: source port 49152 + (bits 32–45 of the flow hash), so flows
//!   spread by the UDP port too; destination `gue_port` (default 6080); length 8 + inner;
//!   checksum 0 (RFC 768 allows no checksum over IPv4; the inner packet carries its own).
//!   No GUE header: this is GUE's variant 1, direct IP-in-UDP (draft-ietf-intarea-gue §4:
//!   the first nibble of the payload, 4, is the inner IP version), which is what Linux's
//!   `fou` with `ipproto 4` (no `-gue`) decodes.
//! - Then the inner IPv4 packet, unchanged (its TTL too: as DR, tunnel is no routing hop),
//!   up to its total length (Ethernet padding is not carried). The one exception: a TCP SYN
//!   of a service with `mss_clamp` has its MSS option lowered to that value, TCP checksum
//!   patched incrementally (counted in `mss_clamped`).
//!
//! Frames grow by 20 (IPIP) or 28 (GUE) bytes, and a frame handed to the pipeline keeps its
//! length (it is a slice of a receive buffer), so the wrapped packet is written into the
//! emit queue ([`super::emit`], or the hold queue while the next hop's MAC is unknown) and
//! the received frame ends there with the verdict [`Verdict::Encapsulated`]: forwarded,
//! not dropped.
//!
//! Accounting (an operator reads a forwarded tunnel packet as forwarded, never in the drop
//! counters): a wrapped packet queued to leave is counted once in `tunnelled_packets`
//! (verdict `Encapsulated`) and once more, as the frame that actually goes on the wire, in
//! `emitted_packets`; one held for its next hop is `held_packets` (verdict `Held`), then
//! `released_packets` or `held_expired`, as any held frame. `tx_packets` counts frames sent
//! in place, so tunnel traffic is not in it: the forwarded total is `tx_packets +
//! tunnelled_packets`. The drop reasons of tunnel mode are real drops: too big
//! (`tunnel_frag_needed`, `tunnel_too_big`) and no room in the emit queue
//! (`tunnel_emit_full`). The copy costs a memcpy of the packet; growing the frame in place
//! would need headroom in every driver's buffers (the AF_XDP UMEM has it, replay's vectors
//! and the `&mut [u8]` interface do not), for no gain in the counts.
//!
//! IPv6 (issue 12): an IPv6 service's packets are wrapped in IPv6, never across families
//! (config refuses 4in6 and 6in4), byte for byte:
//! - Ethernet type IPv6, to the next hop of the real server (the IPv6 neighbour table: a
//!   packet whose next hop is unknown is wrapped, then held while it is solicited).
//! - IPv6, 40 bytes, no extension headers: traffic class copied from the inner packet (RFC
//!   2473 §6.5, RFC 6040), flow label the top 20 bits of the flow's pinned hash, never 0
//!   (one flow, one label; flows spread over ECMP paths, Katran's way), payload length the
//!   inner packet's plus 0 or 8, next header 41 (IPv6-in-IPv6, RFC 2473: IPVS's tunnel mode for IPv6, what
//!   Linux's ip6tnl decodes) or 17 (GUE), hop limit 64, destination the real server, source
//!   the service's IPv6 `tunnel_source` prefix with host bits from the flow hash (its low 64
//!   bits; prefixes are /64 to /128), else the egress interface's `addr6`.
//! - GUE only: UDP as IPv4's (source port from the flow hash, destination `gue_port`),
//!   with its checksum computed over the IPv6 pseudo-header and the whole datagram: a zero
//!   UDP checksum over IPv6 is dropped by default by Linux receivers (RFC 6935/6936 allow it
//!   only where a tunnel endpoint is configured for it), and 0 is sent as 0xffff.
//! - The inner IPv6 packet as received (40 + payload length bytes), with the same MSS clamp
//!   as IPv4 for a SYN whose TCP header follows the fixed header directly (the MSS is in no
//!   pseudo-header: the incremental patch is the same).
//!
//! Frames grow by 40 (IPv6-in-IPv6) or 48 (GUE) bytes. One that would exceed the egress MTU
//! gets an ICMPv6 Packet Too Big (type 2, from the VIP, MTU = the limit less the overhead,
//! quoting as much of the packet as keeps the message within 1280 bytes, RFC 4443) and is
//! dropped as `tunnel_frag_needed`, as IPv4's with DF (IPv6 routers never fragment); with the
//! client's next hop unknown, as `tunnel_too_big`. A fragment too big for the tunnel is
//! answered the same way: the client's stack lowers its path MTU and sends smaller
//! fragments. (RFC 2473 §7.1 would let the entry point fragment the outer packet of an
//! inner one of at most 1280 bytes; xlb does not, so a 1280-byte inner packet needs an
//! egress MTU of 1320 (1328 with GUE), which every IPv6 link that carries a tunnel has.)
//!
//! MTU: a wrapped packet must fit the egress interface's `mtu` (and an emit slot:
//! [`super::EMIT_FRAME`] less the Ethernet header). A bigger one is not sent broken: with
//! DF set, the client gets ICMP fragmentation needed (type 3 code 4, from the VIP, next-hop
//! MTU = the limit less the overhead, quoting the packet's IP header and 8 bytes) and the
//! packet is dropped as `tunnel_frag_needed` (with the client's next hop not known yet, as
//! `tunnel_too_big`); without DF — a fragment, or a whole packet a router on the way would
//! fragment — it is cut as that router would ([`CoreState::refragment`]): inner fragments
//! of the same identification that fit, each wrapped in a whole outer packet (never an
//! outer fragment: `xlb decap` passes those to the kernel, and the kernel's ipip and fou
//! receive paths take whole outer packets and reassemble the inner datagram after
//! decapsulation, as they would after a router's fragmentation).
//!
//! Fragments (`super::fragments`): every fragment of a tunnel flow's datagram is wrapped as
//! a packet of its own (the first picks the real server; later ones follow it by the
//! datagram's identification), with the outer DF copied from it (clear: DF is never set on
//! a fragment).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::conntrack::{Direction, Flow};
use crate::family::{Family, V4, V6};
use crate::flow::{Encap, Proto, Tunnel};
use crate::hash::flow_hash;
use crate::report::{DropReason, Stat};
use crate::snapshot::{Indexed, Interface, Route, Snapshot};
use crate::time::Instant;
use crate::wire::checksum;
use crate::wire::icmp::icmp_type;
use crate::wire::icmpv6::icmpv6_type;
use crate::wire::ipv4::ip_proto;
use crate::wire::{EtherType, IcmpPacket, Icmpv6Packet, Ipv4Packet, Ipv6Packet};

use super::flows::backend_of;
use super::{CoreState, EMIT_CAPACITY, EMIT_FRAME, ETH_LEN, TCP_SYN, Verdict};

/// The outer IPv4 TTL, and the outer IPv6 hop limit.
pub(super) const OUTER_TTL: u8 = 64;
/// The outer header of IPv4 (no options) and of IPv6 (no extension headers).
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
/// An ICMPv6 error quotes as much of the packet as keeps it within IPv6's minimum MTU
/// (RFC 4443 §2.4 c): 1280 less its IPv6 and ICMPv6 headers.
const QUOTED_V6: usize = 1280 - IPV6_HEADER - 8;
/// GUE's UDP source ports: the dynamic range (RFC 6335), 49152 + 14 bits of the flow hash.
const GUE_SOURCE_PORTS: u16 = 49152;
/// Bytes of the offending packet an ICMP error quotes after its IP header (RFC 792).
const QUOTED_PAYLOAD: usize = 8;

/// A core's tunnel state: a buffer to wrap a packet in while its next hop is resolved, and
/// the identification counter of the packets it generates.
#[derive(Debug)]
pub(super) struct TunnelState {
    scratch: Box<[u8]>,
    /// Where a piece of a packet too big for the tunnel is cut before it is wrapped.
    piece: Box<[u8]>,
    ident: u16,
}

impl TunnelState {
    pub(super) fn new() -> Self {
        let buffer = || vec![0; EMIT_FRAME].into_boxed_slice();
        TunnelState { scratch: buffer(), piece: buffer(), ident: 0 }
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }
}

/// What [`CoreState::plan`] found for a packet to wrap.
struct Plan<'s, F: Family> {
    settings: Tunnel,
    /// The flow's backend, if still in the snapshot.
    backend: Option<usize>,
    /// The inner IP packet's length.
    inner_len: usize,
    route: Route<F>,
    /// The egress interface.
    interface: &'s Interface,
}

/// Why [`CoreState::plan`] found no way to wrap a packet as it is.
enum Planned<'s, F: Family> {
    Drop(DropReason),
    /// The wrapped packet would exceed the egress: `mtu` is the most the inner may be.
    TooBig {
        plan: Plan<'s, F>,
        mtu: usize,
    },
}

/// The outer header fields of one wrapped packet.
#[derive(Debug, Clone, Copy)]
struct Outer {
    encap: Encap,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    source_port: u16,
}

impl Outer {
    /// The outer header of `flow`'s packets with `settings`, leaving by `interface`
    /// (identification 0: [`CoreState::wrap`] gives each packet the core's next).
    fn of(settings: &Tunnel, interface: &Interface, flow: &Flow) -> Outer {
        let hash = flow_hash(&flow.original_key());
        Outer {
            encap: settings.encap,
            src: settings
                .source
                .or(interface.tunnel_source)
                .and_then(|prefix| prefix.source_v4(hash))
                .unwrap_or(interface.addr),
            dst: flow.backend_addr,
            ident: 0,
            source_port: gue_source_port(hash),
        }
    }
}

/// A family tunnel mode wraps packets of, [`V4`] or [`V6`] (sealed, as [`Indexed`]): how
/// a packet of its flows is wrapped.
pub(super) trait Tunnelled: Indexed {
    /// The outer IP header's length (no options, no extension headers).
    const OUTER_HEADER: usize;
    /// The length of the IP packet in `frame`, if the frame holds it whole.
    fn inner_len(frame: &[u8]) -> Option<usize>;
    /// Lowers the MSS of a SYN in the IP packet `packet` ([`clamp_mss`]); true if it did.
    fn clamp_mss(packet: &mut [u8], mss: u16) -> bool;
    /// [`CoreState::encapsulate`] or [`CoreState::encapsulate6`].
    fn encapsulate(
        core: &mut CoreState,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<Self>,
    ) -> Verdict;
}

impl Tunnelled for V4 {
    const OUTER_HEADER: usize = IPV4_HEADER;

    #[inline(always)]
    fn inner_len(frame: &[u8]) -> Option<usize> {
        inner_len(frame)
    }

    #[inline(always)]
    fn clamp_mss(packet: &mut [u8], mss: u16) -> bool {
        clamp_mss(packet, mss)
    }

    #[inline(always)]
    fn encapsulate(
        core: &mut CoreState,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
    ) -> Verdict {
        core.encapsulate(snapshot, now, frame, flow)
    }
}

impl Tunnelled for V6 {
    const OUTER_HEADER: usize = IPV6_HEADER;

    #[inline(always)]
    fn inner_len(frame: &[u8]) -> Option<usize> {
        inner_len6(frame)
    }

    #[inline(always)]
    fn clamp_mss(packet: &mut [u8], mss: u16) -> bool {
        clamp_mss6(packet, mss)
    }

    #[inline(always)]
    fn encapsulate(
        core: &mut CoreState,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<V6>,
    ) -> Verdict {
        core.encapsulate6(snapshot, now, frame, flow)
    }
}

impl CoreState {
    /// A packet of a tunnel flow towards its real server: counted for its backend, then
    /// wrapped in its family's outer header ([`Tunnelled::encapsulate`]).
    #[inline(never)]
    pub(super) fn tunnel<F: Tunnelled>(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<F>,
    ) -> Verdict {
        let backend = backend_of(snapshot, flow);
        self.count_forwarded(backend, Direction::Original, frame.len() as u64);
        F::encapsulate(self, snapshot, now, frame, flow)
    }

    /// [`CoreState::tunnel`] for a settled hit: None (the general way, which reschedules
    /// it) for a flow whose backend its health check took out of the service
    /// ([`Snapshot::reschedules`]).
    #[inline(always)]
    pub(super) fn settled_tunnel<F: Tunnelled>(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<F>,
    ) -> Option<Verdict> {
        let backend = backend_of(snapshot, flow);
        if backend.is_none() && snapshot.reschedules(flow) {
            return None;
        }
        self.count_forwarded(backend, Direction::Original, frame.len() as u64);
        Some(F::encapsulate(self, snapshot, now, frame, flow))
    }

    /// What both families do before writing the outer header: the service's settings, the
    /// inner packet's length, the MSS clamp (counted), the route to the real server and its
    /// interface. `Err(Planned::TooBig)` when the wrapped packet would not fit the egress
    /// (`mtu`: the most the inner packet may be; the plan otherwise); `Err(Planned::Drop)` for a packet
    /// that cannot go at all.
    #[inline(always)]
    fn plan<'s, F: Tunnelled>(
        &mut self,
        snapshot: &'s Snapshot,
        frame: &mut [u8],
        flow: &Flow<F>,
    ) -> Result<Plan<'s, F>, Planned<'s, F>> {
        let backend = backend_of(snapshot, flow);
        let Some(settings) = settings_of(snapshot, flow, backend) else {
            return Err(Planned::Drop(DropReason::NoService));
        };
        let Some(inner_len) = F::inner_len(frame) else {
            return Err(Planned::Drop(DropReason::Truncated));
        };
        if let Some(mss) = settings.mss_clamp
            && F::clamp_mss(&mut frame[ETH_LEN..ETH_LEN + inner_len], mss)
        {
            self.counters.add(Stat::MssClamped, 1);
        }
        let index = snapshot.family::<F>();
        let route = match backend {
            Some(backend) => Some(index.backend_route(backend)),
            None => index.route(flow.backend_addr),
        };
        let Some(route) = route.filter(|route| route.next_hop != F::UNSPECIFIED) else {
            return Err(Planned::Drop(DropReason::NoRoute));
        };
        let Some(interface) = snapshot.interfaces.get(route.egress.index()) else {
            return Err(Planned::Drop(DropReason::NoRoute));
        };
        let overhead = settings.encap.overhead(F::OUTER_HEADER);
        let limit = usize::from(interface.mtu).min(EMIT_FRAME - ETH_LEN);
        let plan = Plan { settings, backend, inner_len, route, interface };
        if inner_len + overhead > limit {
            return Err(Planned::TooBig { plan, mtu: limit - overhead });
        }
        Ok(plan)
    }

    /// Wraps the IPv4 packet in `frame` for `flow`'s real server and queues it (see the
    /// module docs); `frame` itself ends here. Also the way ICMP errors about a tunnel flow
    /// reach its real server.
    pub(super) fn encapsulate(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
    ) -> Verdict {
        let Plan { settings, backend, inner_len, route, interface } =
            match self.plan(snapshot, frame, flow) {
                Ok(plan) => plan,
                Err(Planned::Drop(reason)) => return Verdict::Drop(reason),
                Err(Planned::TooBig { plan, mtu }) => {
                    return self.too_big(snapshot, now, frame, flow, plan, mtu);
                }
            };
        let outer = Outer::of(&settings, interface, flow);
        let inner = &frame[ETH_LEN..ETH_LEN + inner_len];
        self.wrap(snapshot, now, inner, outer, route, backend)
    }

    /// Wraps the IPv4 packet `inner` in `outer` (its identification the core's next) and
    /// queues it to `route`'s next hop, or holds it while the next hop is resolved. Inlined
    /// (and the queue's `push_with` into it): with two callers (this and
    /// [`CoreState::refragment`]) both went out of line, 44 instructions a tunnel hit.
    #[inline(always)]
    fn wrap(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        inner: &[u8],
        outer: Outer,
        route: Route<V4>,
        backend: Option<usize>,
    ) -> Verdict {
        let outer = Outer { ident: self.tunnel.next_ident(), ..outer };
        // The common case: the next hop is known, the wrapped packet is written straight
        // into the emit queue.
        if let Some(hop) = backend.and_then(|index| self.backend_hop(snapshot, index)) {
            let pushed = self
                .emit
                .push_with(hop.egress, |slot| write_encapsulated(slot, &hop.addrs, &outer, inner));
            return self.queued(pushed);
        }
        // Otherwise wrap it aside and let `send` resolve the next hop (or hold the wrapped
        // packet until it answers).
        let mut scratch = std::mem::take(&mut self.tunnel.scratch);
        let len = write_encapsulated(&mut scratch, &[0; 12], &outer, inner);
        let verdict = match self.send(snapshot, now, &mut scratch[..len], route, backend) {
            Verdict::Tx(egress) => {
                let pushed = self.emit.push(egress, &scratch[..len]);
                self.queued(pushed)
            }
            other => other,
        };
        self.tunnel.scratch = scratch;
        verdict
    }

    /// The verdict of a frame whose wrapped copy was (or, the queue full, was not) queued.
    fn queued(&mut self, pushed: bool) -> Verdict {
        if pushed {
            Verdict::Encapsulated
        } else {
            self.counters.add(Stat::EmitOverflow, 1);
            Verdict::Drop(DropReason::TunnelEmitFull)
        }
    }

    /// A packet too big to wrap: with DF, ICMP fragmentation needed to the client, from the
    /// VIP, announcing `mtu` (with the client's next hop unknown, dropped); without DF, cut
    /// into fragments that fit, each wrapped ([`CoreState::refragment`]).
    #[cold]
    fn too_big(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
        plan: Plan<'_, V4>,
        mtu: usize,
    ) -> Verdict {
        let inner = &frame[ETH_LEN..ETH_LEN + plan.inner_len];
        let dont_fragment = inner[6] & 0x40 != 0;
        if !dont_fragment {
            return self.refragment(snapshot, now, frame, flow, plan, mtu);
        }
        let Some(hop) = self.client_hop(snapshot, flow.client_addr) else {
            return Verdict::Drop(DropReason::TunnelTooBig);
        };
        let ident = self.tunnel.next_ident();
        let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
        let pushed = self.emit.push_with(hop.egress, |slot| {
            write_frag_needed(slot, &hop.addrs, flow.vip, inner, mtu, ident)
        });
        if !pushed {
            self.counters.add(Stat::EmitOverflow, 1);
            return Verdict::Drop(DropReason::TunnelTooBig);
        }
        Verdict::Drop(DropReason::TunnelFragNeeded)
    }
}

impl CoreState {
    /// An IPv4 packet or fragment without DF too big to wrap (`inner_len` bytes, at most
    /// `mtu` fit): cut as a router on the way would cut it (RFC 791), into fragments of the
    /// same identification whose data is a multiple of 8 bytes and at most `mtu` less the
    /// header, each wrapped as a packet of its own. The real server's kernel reassembles
    /// them after decapsulation, whole packets' pieces and pieces of fragments alike (a
    /// fragment's pieces keep its offset and its more-fragments flag on the last). Counted
    /// once in `tunnel_refragmented`; the verdict is the last piece's (all are queued, or
    /// none: `tunnel_emit_full` when the queue has no room for every piece).
    #[cold]
    fn refragment(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
        plan: Plan<'_, V4>,
        mtu: usize,
    ) -> Verdict {
        let Plan { settings, backend, inner_len, route, interface } = plan;
        let inner = &frame[ETH_LEN..ETH_LEN + inner_len];
        // Options would need RFC 791's copy rules: never here (the checks refuse them).
        let header_len = usize::from(inner[0] & 0x0f) * 4;
        let piece = mtu.saturating_sub(header_len) / 8 * 8;
        if header_len != IPV4_HEADER || piece == 0 {
            return Verdict::Drop(DropReason::TunnelTooBig);
        }
        let data = &inner[header_len..];
        let pieces = data.len().div_ceil(piece);
        if self.emit.len() + pieces > EMIT_CAPACITY {
            self.counters.add(Stat::EmitOverflow, 1);
            return Verdict::Drop(DropReason::TunnelEmitFull);
        }
        let flags_offset = u16::from_be_bytes([inner[6], inner[7]]);
        let (offset, more) = (flags_offset & 0x1fff, flags_offset & 0x2000 != 0);
        let outer = Outer::of(&settings, interface, flow);
        self.counters.add(Stat::TunnelRefragmented, 1);
        let mut buffer = std::mem::take(&mut self.tunnel.piece);
        let mut verdict = Verdict::Drop(DropReason::TunnelTooBig);
        for (index, chunk) in data.chunks(piece).enumerate() {
            let len = header_len + chunk.len();
            let cut = &mut buffer[..len];
            cut[..header_len].copy_from_slice(&inner[..header_len]);
            cut[header_len..].copy_from_slice(chunk);
            let mut ip = Ipv4Packet::new_unchecked(&mut *cut);
            ip.set_total_len(len as u16);
            ip.set_more_frags(more || index + 1 < pieces);
            let Ok(at) = u16::try_from(usize::from(offset) * 8 + index * piece) else {
                // Past the largest datagram: no fragment can say where this goes.
                verdict = Verdict::Drop(DropReason::TunnelTooBig);
                break;
            };
            ip.set_frag_offset(at);
            ip.fill_checksum();
            verdict = self.wrap(snapshot, now, cut, outer, route, backend);
            if !matches!(verdict, Verdict::Encapsulated | Verdict::Held) {
                break;
            }
        }
        self.tunnel.piece = buffer;
        verdict
    }

    /// Wraps the IPv6 packet in `frame` for `flow`'s real server in an outer IPv6 header
    /// (see the module docs) and queues it, or holds it while the next hop is solicited;
    /// `frame` itself ends here. Also the way ICMPv6 errors about an IPv6 tunnel flow reach
    /// its real server.
    pub(super) fn encapsulate6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<V6>,
    ) -> Verdict {
        let Plan { settings, inner_len, route, interface, .. } =
            match self.plan(snapshot, frame, flow) {
                Ok(plan) => plan,
                Err(Planned::Drop(reason)) => return Verdict::Drop(reason),
                Err(Planned::TooBig { plan, mtu }) => {
                    return self.too_big6(snapshot, frame, flow, plan.inner_len, mtu);
                }
            };
        let hash = flow_hash(&flow.original_key());
        let source = settings.source.and_then(|prefix| prefix.source_v6(hash));
        let Some(src) = source.or(interface.ipv6.map(|side| side.addr)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let outer = Outer6 {
            encap: settings.encap,
            src,
            dst: flow.backend_addr,
            flow_label: flow_label(hash),
            source_port: gue_source_port(hash),
        };
        let inner = &frame[ETH_LEN..ETH_LEN + inner_len];
        let mut scratch = std::mem::take(&mut self.tunnel.scratch);
        let len = write_encapsulated6(&mut scratch, &outer, inner);
        let (emit, counters) = (&mut self.emit, &mut self.counters);
        let wrapped = &mut scratch[..len];
        let verdict = match self.v6.send(
            snapshot,
            now,
            wrapped,
            route.egress,
            route.next_hop,
            emit,
            counters,
        ) {
            Verdict::Tx(egress) => {
                let pushed = self.emit.push(egress, wrapped);
                self.queued(pushed)
            }
            other => other,
        };
        self.tunnel.scratch = scratch;
        verdict
    }

    /// An IPv6 packet too big to wrap: ICMPv6 Packet Too Big to the client, from the VIP,
    /// announcing `mtu` (IPv6 routers never fragment, so there is no DF to look at); with
    /// the client's next hop unknown, or no room to send it, dropped as too big.
    #[cold]
    fn too_big6(
        &mut self,
        snapshot: &Snapshot,
        frame: &[u8],
        flow: &Flow<V6>,
        inner_len: usize,
        mtu: usize,
    ) -> Verdict {
        let inner = &frame[ETH_LEN..ETH_LEN + inner_len];
        let hop = snapshot.family::<V6>().route(flow.client_addr).and_then(|route| {
            let mac = self.v6.neighbors.lookup(route.next_hop)?;
            let link = snapshot.interfaces.get(route.egress.index())?;
            Some((route.egress, mac, link.mac))
        });
        let Some((egress, client_mac, own_mac)) = hop else {
            return Verdict::Drop(DropReason::TunnelTooBig);
        };
        let mut addrs = [0; 12];
        addrs[..6].copy_from_slice(&client_mac.0);
        addrs[6..].copy_from_slice(&own_mac.0);
        let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
        let pushed = self
            .emit
            .push_with(egress, |slot| write_packet_too_big(slot, &addrs, flow.vip, inner, mtu));
        if !pushed {
            self.counters.add(Stat::EmitOverflow, 1);
            return Verdict::Drop(DropReason::TunnelTooBig);
        }
        Verdict::Drop(DropReason::TunnelFragNeeded)
    }
}

/// The tunnel settings of `flow`'s service (by its backend `backend`, when still in the
/// snapshot, else by its VIP): `None` if the service is gone or no longer a tunnel.
fn settings_of<F: Indexed>(
    snapshot: &Snapshot,
    flow: &Flow<F>,
    backend: Option<usize>,
) -> Option<Tunnel> {
    let service = match backend {
        Some(index) => snapshot.backends.get(index).map(|b| b.service),
        None => snapshot.family::<F>().service_at(flow.vip, flow.vport, flow.proto),
    };
    service.and_then(|index| snapshot.services.get(index)).and_then(|s| s.tunnel)
}

/// GUE's UDP source port of a flow with hash `hash`: 49152 + bits 32–45 of it.
#[inline]
fn gue_source_port(hash: u64) -> u16 {
    GUE_SOURCE_PORTS | ((hash >> 32) as u16 & 0x3fff)
}

/// The outer IPv6 flow label of a flow with hash `hash`: its top 20 bits, never 0 (RFC 6437:
/// 0 says "no label", and routers would not spread on it).
#[inline]
fn flow_label(hash: u64) -> u32 {
    ((hash >> 44) as u32).max(1)
}

/// The IPv6 packet's length in `frame` (fixed header and payload length), if the frame holds
/// it whole.
fn inner_len6(frame: &[u8]) -> Option<usize> {
    let header = frame.get(ETH_LEN..ETH_LEN + IPV6_HEADER)?;
    let total = IPV6_HEADER + usize::from(u16::from_be_bytes([header[4], header[5]]));
    (ETH_LEN + total <= frame.len()).then_some(total)
}

/// The outer header fields of one packet wrapped in IPv6.
#[derive(Debug, Clone, Copy)]
struct Outer6 {
    encap: Encap,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    flow_label: u32,
    source_port: u16,
}

/// Writes the IPv6-wrapped packet into `slot` (an emit-sized buffer the caller checked it
/// fits), Ethernet addresses left zero for the neighbour step to fill: type IPv6, the outer
/// header of `outer` (traffic class copied from the inner packet), GUE's UDP header with its
/// checksum computed (RFC 6935/6936: receivers drop a zero UDP checksum over IPv6 unless
/// configured not to), then `inner`. Returns the frame's length.
fn write_encapsulated6(slot: &mut [u8], outer: &Outer6, inner: &[u8]) -> usize {
    let (udp_len, next_header) = match outer.encap {
        Encap::Ipip => (0, ip_proto::IPV6_IN_IP),
        Encap::Gue { .. } => (8, ip_proto::UDP),
    };
    let inner_start = ETH_LEN + IPV6_HEADER + udp_len;
    let total = inner_start + inner.len();
    slot[..12].fill(0);
    slot[12..ETH_LEN].copy_from_slice(&EtherType::IPV6.to_be_bytes());
    let traffic_class = (inner[0] << 4) | (inner[1] >> 4);
    let fields = Header6 {
        traffic_class,
        flow_label: outer.flow_label,
        next_header,
        hop_limit: OUTER_TTL,
        src: outer.src,
        dst: outer.dst,
    };
    write_header6(&mut slot[ETH_LEN..total], &fields);
    slot[inner_start..total].copy_from_slice(inner);
    if let Encap::Gue { port } = outer.encap {
        let datagram = &mut slot[ETH_LEN + IPV6_HEADER..total];
        datagram[0..2].copy_from_slice(&outer.source_port.to_be_bytes());
        datagram[2..4].copy_from_slice(&port.to_be_bytes());
        let udp_len = datagram.len() as u16;
        datagram[4..6].copy_from_slice(&udp_len.to_be_bytes());
        datagram[6..8].copy_from_slice(&[0, 0]);
        let sum = match checksum::compute_v6(outer.src, outer.dst, ip_proto::UDP, datagram) {
            0 => 0xffff,
            sum => sum,
        };
        datagram[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    total
}

/// The fields of an IPv6 fixed header the pipeline generates.
struct Header6 {
    traffic_class: u8,
    flow_label: u32,
    next_header: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
}

/// Writes a 40-byte IPv6 header of `fields` at the start of `packet` (the whole packet: the
/// payload length is what follows the header).
fn write_header6(packet: &mut [u8], fields: &Header6) {
    let payload_len = (packet.len() - IPV6_HEADER) as u16;
    let mut ip = Ipv6Packet::new_unchecked(&mut packet[..IPV6_HEADER]);
    ip.set_version(6);
    ip.set_traffic_class(fields.traffic_class);
    ip.set_flow_label(fields.flow_label);
    ip.set_payload_len(payload_len);
    ip.set_next_header(fields.next_header);
    ip.set_hop_limit(fields.hop_limit);
    ip.set_src_addr(fields.src);
    ip.set_dst_addr(fields.dst);
}

/// Writes ICMPv6 Packet Too Big (RFC 4443 §3.2, type 2 code 0) about `inner` from `vip` to
/// its source into `slot`, announcing `mtu` and quoting as much of `inner` as keeps the
/// message within 1280 bytes. Hop limit 64 (as xlb's echo replies). Returns the frame's
/// length.
fn write_packet_too_big(
    slot: &mut [u8],
    addrs: &[u8; 12],
    vip: Ipv6Addr,
    inner: &[u8],
    mtu: u32,
) -> usize {
    let quote = &inner[..inner.len().min(QUOTED_V6)];
    let icmp_start = ETH_LEN + IPV6_HEADER;
    let total = icmp_start + 8 + quote.len();
    slot[..12].copy_from_slice(addrs);
    slot[12..ETH_LEN].copy_from_slice(&EtherType::IPV6.to_be_bytes());
    let mut client = [0; 16];
    client.copy_from_slice(&inner[8..24]);
    let client = Ipv6Addr::from(client);
    let fields = Header6 {
        traffic_class: 0,
        flow_label: 0,
        next_header: ip_proto::ICMPV6,
        hop_limit: OUTER_TTL,
        src: vip,
        dst: client,
    };
    write_header6(&mut slot[ETH_LEN..total], &fields);
    let icmp = &mut slot[icmp_start..total];
    icmp[8..].copy_from_slice(quote);
    let mut message = Icmpv6Packet::new_unchecked(icmp);
    message.set_msg_type(icmpv6_type::PACKET_TOO_BIG);
    message.set_code(0);
    message.set_mtu(mtu);
    message.fill_checksum(vip, client);
    total
}

/// The IPv4 packet's length in `frame` (its total length), if the frame holds it whole and
/// it holds its header.
fn inner_len(frame: &[u8]) -> Option<usize> {
    let header = frame.get(ETH_LEN..ETH_LEN + 20)?;
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    (total >= 20 && ETH_LEN + total <= frame.len()).then_some(total)
}

/// Writes the wrapped packet into `slot` (an emit slot: [`EMIT_FRAME`] bytes, which the
/// caller checked it fits): Ethernet addresses `addrs` (destination, source), the outer
/// header(s) of `outer`, then `inner`. Returns the frame's length.
fn write_encapsulated(slot: &mut [u8], addrs: &[u8; 12], outer: &Outer, inner: &[u8]) -> usize {
    let udp_len = match outer.encap {
        Encap::Ipip => 0,
        Encap::Gue { .. } => 8,
    };
    let inner_start = ETH_LEN + 20 + udp_len;
    let total = inner_start + inner.len();
    slot[..12].copy_from_slice(addrs);
    slot[12..ETH_LEN].copy_from_slice(&0x0800u16.to_be_bytes());
    let protocol = match outer.encap {
        Encap::Ipip => ip_proto::IPIP,
        Encap::Gue { .. } => ip_proto::UDP,
    };
    let fields = Header {
        tos: inner[1],
        ident: outer.ident,
        dont_fragment: inner[6] & 0x40 != 0,
        protocol,
        src: outer.src,
        dst: outer.dst,
    };
    write_header(&mut slot[ETH_LEN..total], &fields);
    if let Encap::Gue { port } = outer.encap {
        let udp = &mut slot[ETH_LEN + 20..inner_start];
        udp[0..2].copy_from_slice(&outer.source_port.to_be_bytes());
        udp[2..4].copy_from_slice(&port.to_be_bytes());
        udp[4..6].copy_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
    }
    slot[inner_start..total].copy_from_slice(inner);
    total
}

/// The fields of an IPv4 header the pipeline generates (no options, not a fragment, TTL
/// [`OUTER_TTL`]).
struct Header {
    tos: u8,
    ident: u16,
    dont_fragment: bool,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// Writes a 20-byte IPv4 header of `fields` at the start of `packet` (the whole packet: its
/// length is the total length), checksum filled.
fn write_header(packet: &mut [u8], fields: &Header) {
    let total_len = packet.len() as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut packet[..20]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_dscp_ecn(fields.tos);
    ip.set_total_len(total_len);
    ip.set_ident(fields.ident);
    ip.set_dont_frag(fields.dont_fragment);
    ip.set_more_frags(false);
    ip.set_frag_offset(0);
    ip.set_ttl(OUTER_TTL);
    ip.set_protocol(fields.protocol);
    ip.set_src_addr(fields.src);
    ip.set_dst_addr(fields.dst);
    ip.fill_checksum();
}

/// Writes ICMP fragmentation needed (RFC 792 type 3 code 4, RFC 1191's next-hop MTU) about
/// `inner` from `vip` to its source into `slot`, quoting its IP header and 8 bytes. Returns
/// the frame's length.
fn write_frag_needed(
    slot: &mut [u8],
    addrs: &[u8; 12],
    vip: Ipv4Addr,
    inner: &[u8],
    mtu: u16,
    ident: u16,
) -> usize {
    let quote = &inner[..inner.len().min(20 + QUOTED_PAYLOAD)];
    let icmp_start = ETH_LEN + 20;
    let total = icmp_start + 8 + quote.len();
    slot[..12].copy_from_slice(addrs);
    slot[12..ETH_LEN].copy_from_slice(&0x0800u16.to_be_bytes());
    let client = Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]);
    let fields = Header {
        tos: 0,
        ident,
        dont_fragment: false,
        protocol: ip_proto::ICMP,
        src: vip,
        dst: client,
    };
    write_header(&mut slot[ETH_LEN..total], &fields);
    let icmp = &mut slot[icmp_start..total];
    icmp[0] = icmp_type::DEST_UNREACHABLE;
    icmp[1] = 4;
    icmp[2..6].copy_from_slice(&[0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(quote);
    IcmpPacket::new_unchecked(icmp).fill_checksum();
    total
}

/// Lowers the MSS option of a TCP SYN (SYN or SYN-ACK) in the IPv4 packet `packet` to
/// `mss` where it is higher, patching the TCP checksum incrementally; true if it changed.
/// Anything else (not TCP, no SYN, no MSS option, a malformed option list) is left alone.
fn clamp_mss(packet: &mut [u8], mss: u16) -> bool {
    // A later fragment holds no TCP header (its first bytes are the datagram's data).
    let later_fragment = |packet: &[u8]| packet[6] & 0x1f != 0 || packet[7] != 0;
    if packet.len() < 20 || packet[9] != Proto::Tcp.number() || later_fragment(packet) {
        return false;
    }
    let ip_header = usize::from(packet[0] & 0x0f) * 4;
    packet.get_mut(ip_header..).is_some_and(|segment| clamp_segment_mss(segment, mss))
}

/// [`clamp_mss`] of the IPv6 packet `packet`: TCP directly after the fixed header (a TCP
/// segment behind extension headers is left alone, as every other packet that is not a
/// plain SYN). The MSS is in no pseudo-header, so the patch is the same as IPv4's.
fn clamp_mss6(packet: &mut [u8], mss: u16) -> bool {
    if packet.len() < IPV6_HEADER || packet[6] != Proto::Tcp.number() {
        return false;
    }
    clamp_segment_mss(&mut packet[IPV6_HEADER..], mss)
}

/// The TCP part of [`clamp_mss`]: `segment` is the TCP header and what follows it.
fn clamp_segment_mss(segment: &mut [u8], mss: u16) -> bool {
    if segment.len() < 20 || segment[13] & TCP_SYN == 0 {
        return false;
    }
    let header = (usize::from(segment[12] >> 4) * 4).min(segment.len());
    let mut at = 20;
    while at < header {
        match segment[at] {
            0 => return false,
            1 => at += 1,
            kind => {
                let Some(&len) = segment.get(at + 1) else { return false };
                let len = usize::from(len);
                if len < 2 || at + len > header {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let value = at + 2;
                    let old = u16::from_be_bytes([segment[value], segment[value + 1]]);
                    if old <= mss {
                        return false;
                    }
                    patch_u16(segment, value, mss);
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

/// Writes `value` at `offset` of a TCP segment (two bytes inside it), patching its checksum
/// (bytes 16–17) incrementally (RFC 1624) on the 16-bit words the two bytes fall in: one
/// word at an even offset, two at an odd one.
fn patch_u16(segment: &mut [u8], offset: usize, value: u16) {
    let word = |segment: &[u8], at: usize| {
        u16::from_be_bytes([segment[at], segment.get(at + 1).copied().unwrap_or(0)])
    };
    let mut sum = u16::from_be_bytes([segment[16], segment[17]]);
    let first = offset & !1;
    let last = (offset + 1) & !1;
    let old = [word(segment, first), word(segment, last)];
    segment[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
    sum = checksum::update_u16(sum, old[0], word(segment, first));
    if last != first {
        sum = checksum::update_u16(sum, old[1], word(segment, last));
    }
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::*;
    use crate::dataplane::{CoreSlot, Pipeline};
    use crate::flow::{FlowKey, TunnelSource};
    use crate::snapshot::IfaceId;
    use crate::testkit::{self, ACK, Host, SYN};

    const LB: Host = Host::new([2, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
    const CLIENT: Host = Host::new([2, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
    const ROUTER: Host = Host::new([2, 0, 0, 0, 0, 0x01], [10, 1, 1, 1]);
    /// A real server behind the router.
    const RS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
    const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 1, 1, 100), 80);
    const PREFIX: TunnelSource =
        TunnelSource { network: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)), prefix_len: 24 };

    /// One interface (gateway 10.1.1.1, `interface_extra` lines) and a tunnel service on
    /// 10.1.1.100:80 (`proto`, `service_extra` lines) to 192.0.2.11, behind the gateway.
    fn snapshot(interface_extra: &str, proto: &str, service_extra: &str) -> Arc<Snapshot> {
        let text = format!(
            r#"
            [[interface]]
            name = "eth0"
            addr = "10.1.1.10/24"
            mac = "{}"
            gateway = "10.1.1.1"
            {interface_extra}
            [[service]]
            vip = "10.1.1.100"
            port = 80
            proto = "{proto}"
            forward = "tunnel"
            {service_extra}
            [[service.backend]]
            addr = "192.0.2.11"
            "#,
            LB.mac
        );
        let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, 1).expect("builds"))
    }

    fn pipeline(snapshot: Arc<Snapshot>, now: Instant) -> Pipeline {
        let mut pipeline = Pipeline::new(snapshot, CoreSlot::SINGLE);
        pipeline.learn_neighbor(now, ROUTER.ip, ROUTER.mac);
        pipeline.learn_neighbor(now, CLIENT.ip, CLIENT.mac);
        pipeline
    }

    fn emitted(pipeline: &mut Pipeline) -> Vec<(IfaceId, Vec<u8>)> {
        let mut frames = Vec::new();
        pipeline.drain_emitted(|egress, frame| frames.push((egress, frame.to_vec())));
        frames
    }

    fn key(client_port: u16, proto: Proto) -> FlowKey {
        FlowKey {
            src_addr: CLIENT.ip,
            dst_addr: VIP.0,
            src_port: client_port,
            dst_port: VIP.1,
            proto,
        }
    }

    /// Checks the outer Ethernet and IPv4 headers of a wrapped frame (to the router, from
    /// the box, TTL 64, DF as the inner's, checksum right, to the real server) and returns
    /// (outer source, protocol, the bytes after the outer IPv4 header).
    fn outer(frame: &[u8]) -> (Ipv4Addr, u8, &[u8]) {
        assert_eq!(&frame[..6], &ROUTER.mac.0, "to the gateway's MAC");
        assert_eq!(&frame[6..12], &LB.mac.0);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        let ip = Ipv4Packet::new_checked(&frame[ETH_LEN..]).expect("an IPv4 header");
        assert!(ip.verify_checksum(), "outer header checksum");
        assert_eq!(ip.header_len(), 20);
        assert_eq!(usize::from(ip.total_len()), frame.len() - ETH_LEN);
        assert_eq!(ip.ttl(), OUTER_TTL);
        assert_eq!(ip.dst_addr(), RS);
        assert!(!ip.more_frags() && ip.frag_offset() == 0);
        (ip.src_addr(), ip.protocol(), &frame[ETH_LEN + 20..])
    }

    #[test]
    fn ipip_wraps_the_whole_packet_from_the_prefix_to_the_real_server_via_the_gateway() {
        let now = Instant::from_secs(1);
        let mut pipeline = pipeline(snapshot("", "tcp", "tunnel_source = \"10.9.0.0/24\""), now);
        let mut syn = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, b"hello");
        let inner = syn[ETH_LEN..].to_vec();
        let verdict = pipeline.process(now, IfaceId(0), &mut syn);
        assert_eq!(verdict, Verdict::Encapsulated);
        let frames = emitted(&mut pipeline);
        assert_eq!(frames.len(), 1);
        let (egress, frame) = &frames[0];
        assert_eq!(*egress, IfaceId(0));
        let (source, protocol, rest) = outer(frame);
        assert_eq!(protocol, ip_proto::IPIP);
        assert_eq!(source, PREFIX.source_v4(flow_hash(&key(4000, Proto::Tcp))).unwrap());
        assert_eq!(rest, &inner[..], "the client's packet, unchanged (its TTL too)");
        let ip = Ipv4Packet::new_checked(&frame[ETH_LEN..]).unwrap();
        assert!(ip.dont_frag(), "DF copied from the inner packet");
        // The flow is tracked: the next packet goes the same way, counted for the backend.
        let mut ack = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, ACK, b"more");
        assert_eq!(pipeline.process(now, IfaceId(0), &mut ack), Verdict::Encapsulated);
        let next = emitted(&mut pipeline);
        assert_eq!(outer(&next[0].1).0, source, "one flow, one outer source");
        let ident = |frame: &[u8]| Ipv4Packet::new_unchecked(&frame[ETH_LEN..]).ident();
        assert_ne!(ident(frame), ident(&next[0].1), "a new identification per packet");
        assert_eq!(pipeline.counters().backends[0].in_packets, 2);
        // Forwarded, not dropped: counted as tunnelled, each copy as emitted.
        assert_eq!(pipeline.counters().get(Stat::TunnelledPackets), 2);
        assert_eq!(pipeline.counters().get(Stat::EmittedPackets), 2);
        assert_eq!(pipeline.counters().get(Stat::DropPackets), 0);
        assert_eq!(pipeline.counters().get(Stat::NewFlows), 1);
    }

    #[test]
    fn gue_wraps_in_udp_to_the_port_with_a_per_flow_source_port() {
        let now = Instant::from_secs(1);
        let mut pipeline = pipeline(snapshot("", "udp", "encap = \"gue\""), now);
        let mut seen = Vec::new();
        for client_port in [4000, 4001] {
            let mut datagram =
                testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, client_port), VIP, b"query");
            let inner = datagram[ETH_LEN..].to_vec();
            assert_eq!(pipeline.process(now, IfaceId(0), &mut datagram), Verdict::Encapsulated);
            let frames = emitted(&mut pipeline);
            let (source, protocol, rest) = outer(&frames[0].1);
            assert_eq!(source, LB.ip, "no prefix: the interface's own address");
            assert_eq!(protocol, ip_proto::UDP);
            let source_port = u16::from_be_bytes([rest[0], rest[1]]);
            let hash = flow_hash(&key(client_port, Proto::Udp));
            assert_eq!(source_port, 49152 | ((hash >> 32) as u16 & 0x3fff));
            assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 6080);
            assert_eq!(usize::from(u16::from_be_bytes([rest[4], rest[5]])), 8 + inner.len());
            assert_eq!(&rest[6..8], &[0, 0], "no UDP checksum (RFC 768, IPv4)");
            assert_eq!(&rest[8..], &inner[..], "direct IP-in-UDP: no GUE header");
            seen.push(source_port);
        }
        assert_ne!(seen[0], seen[1], "two flows, two source ports");
    }

    #[test]
    fn two_flows_leave_from_two_addresses_of_the_prefix() {
        let now = Instant::from_secs(1);
        // The interface's prefix, as the service sets none.
        let mut pipeline = pipeline(snapshot("tunnel_source = \"10.9.0.0/24\"", "tcp", ""), now);
        let mut sources = Vec::new();
        for client_port in [4000, 4001] {
            let mut syn = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, client_port), VIP, SYN, &[]);
            pipeline.process(now, IfaceId(0), &mut syn);
            let frames = emitted(&mut pipeline);
            let source = outer(&frames[0].1).0;
            assert_eq!(source, PREFIX.source_v4(flow_hash(&key(client_port, Proto::Tcp))).unwrap());
            sources.push(source);
        }
        assert_ne!(sources[0], sources[1]);
    }

    #[test]
    fn too_big_with_df_is_answered_with_fragmentation_needed_and_without_df_cut_to_fit() {
        let now = Instant::from_secs(1);
        let mut pipeline = pipeline(snapshot("mtu = 1000", "udp", ""), now);
        // 20 + 8 + 952 = 980 inner bytes: 1000 wrapped, which fits exactly.
        let mut fits = testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, &[7; 952]);
        assert_eq!(pipeline.process(now, IfaceId(0), &mut fits), Verdict::Encapsulated);
        assert_eq!(emitted(&mut pipeline)[0].1.len(), ETH_LEN + 1000);
        let mut big = testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, &[7; 953]);
        let inner = big[ETH_LEN..].to_vec();
        assert_eq!(
            pipeline.process(now, IfaceId(0), &mut big),
            Verdict::Drop(DropReason::TunnelFragNeeded)
        );
        let frames = emitted(&mut pipeline);
        assert_eq!(frames.len(), 1);
        let answer = &frames[0].1;
        assert_eq!(&answer[..6], &CLIENT.mac.0, "back to the client");
        assert_eq!(&answer[6..12], &LB.mac.0);
        let ip = Ipv4Packet::new_checked(&answer[ETH_LEN..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.protocol()), (VIP.0, CLIENT.ip, 1));
        let icmp = &answer[ETH_LEN + 20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1000 - 20, "the MTU less IPIP's 20");
        assert!(IcmpPacket::new_checked(icmp).unwrap().verify_checksum());
        assert_eq!(&icmp[8..], &inner[..28], "the IP header and 8 bytes quoted");
        // Without DF: cut into fragments that fit (960 + 1 bytes of data), each wrapped; the
        // pieces put back together by their offsets are the packet's data.
        let data: Vec<u8> = (0..953u32).map(|i| i as u8).collect();
        let mut fragmentable = testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, &data);
        fragmentable[ETH_LEN + 6] &= !0x40;
        let mut fragmentable = testkit::with_ttl(fragmentable, 64);
        let inner = fragmentable[ETH_LEN..].to_vec();
        assert_eq!(pipeline.process(now, IfaceId(0), &mut fragmentable), Verdict::Encapsulated);
        assert_eq!(pipeline.counters().get(Stat::TunnelRefragmented), 1);
        let frames = emitted(&mut pipeline);
        assert_eq!(frames.len(), 2);
        let mut reassembled = vec![0u8; inner.len() - 20];
        for (index, (_, frame)) in frames.iter().enumerate() {
            assert!(frame.len() <= ETH_LEN + 1000, "fits the MTU");
            let outer = Ipv4Packet::new_checked(&frame[ETH_LEN..]).unwrap();
            assert!(outer.verify_checksum());
            assert!(!outer.dont_frag() && !outer.is_fragment(), "the outer packets are whole");
            let piece = Ipv4Packet::new_checked(&frame[ETH_LEN + 20..]).unwrap();
            assert!(piece.verify_checksum());
            assert_eq!(&frame[ETH_LEN + 20 + 4..ETH_LEN + 20 + 6], &inner[4..6], "ident kept");
            assert_eq!(&frame[ETH_LEN + 20 + 12..ETH_LEN + 20 + 20], &inner[12..20]);
            assert_eq!(piece.more_frags(), index == 0);
            let at = usize::from(piece.frag_offset());
            let body = &frame[ETH_LEN + 40..ETH_LEN + 20 + usize::from(piece.total_len())];
            assert_eq!(
                body.len().is_multiple_of(8),
                index == 0,
                "only the last piece is not whole words"
            );
            reassembled[at..at + body.len()].copy_from_slice(body);
        }
        assert_eq!(reassembled, inner[20..]);
    }

    #[test]
    fn an_unknown_next_hop_holds_the_wrapped_packet_until_it_answers() {
        let now = Instant::from_secs(1);
        let mut pipeline = Pipeline::new(snapshot("", "tcp", ""), CoreSlot::SINGLE);
        let mut syn = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, &[]);
        let inner = syn[ETH_LEN..].to_vec();
        assert_eq!(pipeline.process(now, IfaceId(0), &mut syn), Verdict::Held);
        let asked = emitted(&mut pipeline);
        assert_eq!(asked.len(), 1, "an ARP request for the gateway");
        assert_eq!(&asked[0].1[12..14], &[0x08, 0x06]);
        pipeline.learn_neighbor(now, ROUTER.ip, ROUTER.mac);
        let released = emitted(&mut pipeline);
        assert_eq!(released.len(), 1);
        let (_, protocol, rest) = outer(&released[0].1);
        assert_eq!((protocol, rest), (ip_proto::IPIP, &inner[..]));
    }

    /// A SYN with an MSS option, as TCP stacks send it (after a NOP when `nop`, so the
    /// value sits at an odd offset).
    fn syn_with_mss(mss: u16, nop: bool) -> Vec<u8> {
        use etherparse::{PacketBuilder, TcpOptionElement};
        let mut options = vec![];
        if nop {
            options.push(TcpOptionElement::Noop);
        }
        options.push(TcpOptionElement::MaximumSegmentSize(mss));
        let builder = PacketBuilder::ethernet2(CLIENT.mac.0, LB.mac.0)
            .ipv4(CLIENT.ip.octets(), VIP.0.octets(), 64)
            .tcp(4000, VIP.1, 1000, 64240)
            .syn()
            .options(&options)
            .expect("options fit");
        let mut frame = Vec::new();
        builder.write(&mut frame, &[]).expect("writes");
        frame
    }

    fn tcp_checksum_ok(packet: &[u8]) -> bool {
        let segment = &packet[20..];
        let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let pseudo = checksum::pseudo_header_sum(src, dst, 6, segment.len() as u16);
        checksum::fold(checksum::sum(segment, pseudo)) == 0xffff
    }

    #[test]
    fn mss_clamp_lowers_the_mss_of_syns_and_fixes_the_checksum() {
        for nop in [false, true] {
            let now = Instant::from_secs(1);
            let mut pipeline = pipeline(snapshot("", "tcp", "mss_clamp = 1400"), now);
            let mut syn = syn_with_mss(1460, nop);
            assert!(tcp_checksum_ok(&syn[ETH_LEN..]));
            pipeline.process(now, IfaceId(0), &mut syn);
            let frames = emitted(&mut pipeline);
            let inner = outer(&frames[0].1).2;
            let at = 20 + 20 + usize::from(nop);
            assert_eq!(&inner[at..at + 4], &[2, 4, 0x05, 0x78], "MSS 1400 (nop: {nop})");
            assert!(tcp_checksum_ok(inner), "checksum patched (nop: {nop})");
            assert_eq!(pipeline.counters().get(Stat::MssClamped), 1);
            // A lower MSS is left as it is.
            let mut low = syn_with_mss(1200, nop);
            low[ETH_LEN + 20] = 0x0f; // another client port, another flow
            let mut low = testkit::with_ttl(low, 64);
            pipeline.process(now, IfaceId(0), &mut low);
            assert_eq!(pipeline.counters().get(Stat::MssClamped), 1);
        }
    }

    #[test]
    fn mss_clamp_leaves_malformed_option_lists_alone() {
        let mut syn = syn_with_mss(1460, false);
        let packet = &mut syn[ETH_LEN..];
        packet[20 + 21] = 9; // the MSS option's length runs past the header
        let copy = packet.to_vec();
        assert!(!clamp_mss(packet, 1400));
        assert_eq!(packet, &copy[..]);
        assert!(!clamp_mss(&mut [0x45; 10], 1400), "a short packet");
        let mut ack = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, ACK, &[]);
        assert!(!clamp_mss(&mut ack[ETH_LEN..], 1400), "no SYN");
    }

    mod six {
        use std::net::Ipv6Addr;
        use std::sync::Arc;

        use super::super::*;
        use crate::dataplane::{CoreSlot, Pipeline};
        use crate::snapshot::IfaceId;
        use crate::testkit::{self, Host6, SYN};

        const fn v6(net: u16, last: u16) -> Ipv6Addr {
            Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, last)
        }
        const LB: Host6 = Host6::new([2, 0, 0, 0, 0, 0x10], v6(1, 0x10));
        const CLIENT: Host6 = Host6::new([2, 0, 0, 0, 0, 0x20], v6(1, 0x20));
        const ROUTER: Host6 = Host6::new([2, 0, 0, 0, 0, 0x01], v6(1, 0x1));
        /// A real server behind the router.
        const RS: Ipv6Addr = v6(2, 0x11);
        const VIP: (Ipv6Addr, u16) = (v6(1, 0x100), 80);

        /// An IPv6 IPIP service on 2001:db8:1::100:80 to 2001:db8:2::11 behind the gateway.
        fn pipeline() -> Pipeline {
            let text = r#"
                [[interface]]
                name = "eth0"
                addr = "10.1.1.10/24"
                addr6 = "2001:db8:1::10/64"
                gateway6 = "2001:db8:1::1"
                mac = "02:00:00:00:00:10"
                [[service]]
                vip = "2001:db8:1::100"
                port = 80
                forward = "tunnel"
                [[service.backend]]
                addr = "2001:db8:2::11"
                "#;
            let config = crate::control::Config::parse(text, "test.toml").expect("valid");
            let snapshot = Arc::new(Snapshot::build(&config, 1).expect("builds"));
            Pipeline::new(snapshot, CoreSlot::SINGLE)
        }

        fn emitted(pipeline: &mut Pipeline) -> Vec<Vec<u8>> {
            let mut frames = Vec::new();
            pipeline.drain_emitted(|_, frame| frames.push(frame.to_vec()));
            frames
        }

        /// The outer IPv6 header of a wrapped frame: to the router's MAC, next header 41, to
        /// the real server; returns the inner packet.
        fn inner(frame: &[u8]) -> &[u8] {
            assert_eq!(&frame[..6], &ROUTER.mac.0, "to the gateway's MAC");
            assert_eq!(&frame[12..14], &[0x86, 0xdd]);
            let ip = Ipv6Packet::new_checked(&frame[ETH_LEN..]).expect("an IPv6 header");
            assert_eq!((ip.next_header(), ip.hop_limit(), ip.dst_addr()), (41, 64, RS));
            assert_eq!(ip.src_addr(), LB.ip, "no prefix: the interface's addr6");
            &frame[ETH_LEN + IPV6_HEADER..]
        }

        /// With the gateway's MAC unknown, the wrapped packet is held and the gateway
        /// solicited from the box's own address; its advertisement releases it.
        #[test]
        fn an_unknown_ipv6_next_hop_holds_the_wrapped_packet_until_it_answers() {
            let now = Instant::from_secs(1);
            let mut pipeline = pipeline();
            let mut syn = testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, &[]);
            let packet = syn[ETH_LEN..].to_vec();
            assert_eq!(pipeline.process(now, IfaceId(0), &mut syn), Verdict::Held);
            let asked = emitted(&mut pipeline);
            assert_eq!(asked.len(), 1, "a neighbour solicitation for the gateway");
            let solicitation = Ipv6Packet::new_checked(&asked[0][ETH_LEN..]).unwrap();
            assert_eq!((solicitation.next_header(), solicitation.src_addr()), (58, LB.ip));
            pipeline.learn_neighbor6(now, ROUTER.ip, ROUTER.mac);
            let released = emitted(&mut pipeline);
            assert_eq!(released.len(), 1);
            assert_eq!(&released[0][6..12], &LB.mac.0);
            assert_eq!(inner(&released[0]), &packet[..]);
        }

        /// An ICMPv6 error about a tunnel flow (a Packet Too Big from a router on the
        /// client's side, quoting the real server's answer from the VIP) reaches the real
        /// server through the tunnel, unchanged inside.
        #[test]
        fn an_icmpv6_error_about_a_tunnel_flow_is_wrapped_to_its_real_server() {
            let now = Instant::from_secs(1);
            let mut pipeline = pipeline();
            pipeline.learn_neighbor6(now, ROUTER.ip, ROUTER.mac);
            let mut syn = testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, &[]);
            assert_eq!(pipeline.process(now, IfaceId(0), &mut syn), Verdict::Encapsulated);
            emitted(&mut pipeline);
            let answer =
                testkit::tcp6(LB.mac, CLIENT.mac, VIP, (CLIENT.ip, 4000), testkit::SYN_ACK, &[]);
            let mut error = testkit::icmpv6_packet_too_big(
                ROUTER.mac, LB.mac, ROUTER.ip, VIP.0, 1280, &answer, 8,
            );
            let packet = error[ETH_LEN..].to_vec();
            assert_eq!(pipeline.process(now, IfaceId(0), &mut error), Verdict::Encapsulated);
            let frames = emitted(&mut pipeline);
            assert_eq!(frames.len(), 1);
            assert_eq!(inner(&frames[0]), &packet[..]);
            assert_eq!(pipeline.counters().get(Stat::IcmpErrorsForwarded), 1);
        }
    }
}
