//! The IPv6 flow step: connection lookup (here, or on another core for replies), scheduling
//! and tracking of new flows, forwarding a tracked packet for its direction, and ICMPv6
//! echo and errors about flows — IPv4's `flows` and `icmp` steps on IPv6's own connection
//! table (`Conntrack<V6>`), with the per-service and per-backend state (scheduler state,
//! connection counts, counters) shared with IPv4 by the snapshot's indices.
//!
//! Invariants (as IPv4's): a packet that reaches this step passed [`super::parse::check`]
//! (its whole TCP/UDP header in the frame, at the offset the checks found: after the
//! extension headers, if any, which are forwarded as they are). A TCP packet that opens
//! nothing is never tracked (DR forwards it by the service's Maglev table alone; NAT and
//! FullNAT drop it). A flow's connection counts move as IPv4's do (taken at its insert,
//! moved with its state, given back when it goes; its backend found by identity). Packets that only name a
//! flow (ICMPv6 errors, replies from the wrong side) read it with [`CoreState::peek6`],
//! which neither refreshes nor moves it; an error is never answered with an error.

use std::net::Ipv6Addr;
use std::ops::Range;

use crate::conntrack::{Direction, Flow, FlowState, Hit, Prepared, Tracking, Words6};
use crate::family::V6;
use crate::flow::{FlowKey, ForwardMode};
use crate::report::{DropReason, Stat};
use crate::snapshot::{IfaceId, Owned, Route, Snapshot};
use crate::time::Instant;
use crate::wire::icmpv6::{self, icmpv6_type};

use super::super::flows::{backend_of, rescheduled, syn_again_to_drained, translate};
use super::super::neighbors::{Hop, HopSlot, hop_to};
use super::super::schedule::FirstPacket;
use super::super::{CoreState, Verdict, reject};
use super::parse::{
    L4, Plain6, Quote6, Transport6, addresses, guess_key, plain_at, quoted_transport,
};
use super::rewrite::{
    ErrorTranslation, decrement_hop_limit, echo_reply, route_settled, route_transport,
    translate_error,
};

/// Who an IPv6 TCP/UDP packet the checks took is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) enum Class6 {
    ToVip,
    ToLocal,
    /// To no address of xlb's, from a NAT backend: maybe a reply.
    FromNatBackend,
}

impl Class6 {
    /// The class by the owner of the destination (`None`: from a NAT backend); None for the
    /// box's own address (the kernel's).
    pub fn of_owner(owned: Option<Owned>) -> Option<Class6> {
        match owned {
            Some(Owned::Vip) => Some(Class6::ToVip),
            Some(Owned::Local) => Some(Class6::ToLocal),
            Some(Owned::Interface(_)) => None,
            None => Some(Class6::FromNatBackend),
        }
    }
}

impl CoreState {
    /// Finds the flow a key belongs to (`prepared`: its lookup, by the batch or not), here
    /// or (for replies) on another core: as IPv4's `track`, a packet that leaves its flow as
    /// it is comes back `Settled` (the flow and its direction alone), a hit on another core
    /// `Moved`.
    #[inline(always)]
    fn track6(
        &mut self,
        now: Instant,
        key: &FlowKey<V6>,
        prepared: Prepared,
        tcp_flags: Option<u8>,
        maybe_reply: bool,
    ) -> Tracking<V6> {
        let hash = prepared.hash();
        match self.v6.conntrack.track_settled(now, key, prepared, tcp_flags) {
            Tracking::Miss if maybe_reply => {}
            tracked => return tracked,
        }
        for peer in &self.v6.peers {
            if let Some(hit) = peer.track_hashed(now, key, hash, tcp_flags) {
                self.counters.add(Stat::CrossCoreHits, 1);
                return Tracking::Moved(hit);
            }
        }
        Tracking::Miss
    }

    /// [`CoreState::track6`] that changes nothing (see the module docs).
    pub(in crate::dataplane::pipeline) fn peek6(
        &self,
        now: Instant,
        key: &FlowKey<V6>,
        hash: u64,
    ) -> Option<Hit<V6>> {
        self.v6
            .conntrack
            .peek_hashed(now, key, hash)
            .or_else(|| self.v6.peers.iter().find_map(|peer| peer.peek_hashed(now, key, hash)))
    }

    /// An IPv6 TCP/UDP packet for a VIP or local address, or from a NAT backend; its TCP/UDP
    /// header at `l4` in the frame.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::dataplane::pipeline) fn transport6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        class: Class6,
        transport: Transport6,
        l4: usize,
    ) -> Verdict {
        let key = transport.key;
        // The batch's lookup (`Class::Ipv6`: prepared for the key guessed at fixed offsets)
        // is this key's when the TCP/UDP header is where the guess read it: the same bytes,
        // so the same hash, not computed again. Any other (extension headers) is dropped,
        // unused, and the key hashed.
        let prepared = match self.v6.prepared.take() {
            Some(prepared) if l4 == L4 => prepared,
            _ => Prepared::new(self.v6.conntrack.hash(&key)),
        };
        let hash = prepared.hash();
        debug_assert_eq!(hash, self.v6.conntrack.hash(&key), "the prepared lookup is this key's");
        let maybe_reply = class != Class6::ToVip;
        if maybe_reply
            && snapshot.interfaces.len() > 1
            && snapshot.family::<V6>().route(key.src_addr).is_some_and(|r| r.egress != ingress)
            && self.peek6(now, &key, hash).is_some_and(|hit| hit.direction == Direction::Reply)
        {
            return Verdict::Drop(DropReason::ReplyWrongInterface);
        }
        let hit = match self.track6(now, &key, prepared, transport.tcp_flags, maybe_reply) {
            // The common packet: straight on, unless its backend was taken out (rare).
            Tracking::Settled { direction, flow } => {
                if backend_of(snapshot, &flow).is_none()
                    && rescheduled(snapshot, class == Class6::ToVip, &flow, direction)
                {
                    let counted = Stat::RescheduledFlows;
                    return self.schedule_anew6(snapshot, now, frame, transport, l4, hash, counted);
                }
                return self.forward6(snapshot, now, frame, l4, &flow, direction);
            }
            Tracking::Moved(hit) => Some(hit),
            Tracking::Miss => None,
        };
        if let Some(hit) = hit {
            if hit.state == FlowState::SynSeen || hit.state != hit.previous {
                self.count_moved(snapshot, &hit);
                if hit.state == FlowState::SynSeen
                    && matches!(hit.previous, FlowState::Closing | FlowState::Closed)
                    && class == Class6::ToVip
                {
                    let reused = Stat::ReusedFlows;
                    return self.schedule_anew6(snapshot, now, frame, transport, l4, hash, reused);
                }
                self.passive_sign(snapshot, &hit, transport.tcp_flags);
            }
            if class == Class6::ToVip && syn_again_to_drained(snapshot, &hit, transport.tcp_flags) {
                let redirected = Stat::RedirectedSyns;
                return self.schedule_anew6(snapshot, now, frame, transport, l4, hash, redirected);
            }
            if backend_of(snapshot, &hit.flow).is_none()
                && rescheduled(snapshot, class == Class6::ToVip, &hit.flow, hit.direction)
            {
                let counted = Stat::RescheduledFlows;
                return self.schedule_anew6(snapshot, now, frame, transport, l4, hash, counted);
            }
            return self.forward6(snapshot, now, frame, l4, &hit.flow, hit.direction);
        }
        match class {
            Class6::ToVip => self.new_flow6(snapshot, now, frame, transport, l4, prepared),
            Class6::ToLocal => Verdict::Drop(DropReason::NoFlow),
            Class6::FromNatBackend => Verdict::Pass,
        }
    }

    /// IPv4's `schedule_anew` for IPv6: the client's packet scheduled anew, its old flow
    /// forgotten and counted as `counted` (a reused port's SYN, or a flow whose backend its
    /// health check took out: [`rescheduled`]). `hash` is the key's.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn schedule_anew6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        transport: Transport6,
        l4: usize,
        hash: u64,
        counted: Stat,
    ) -> Verdict {
        self.forget_counted::<V6>(snapshot, &transport.key, counted);
        self.new_flow6(snapshot, now, frame, transport, l4, Prepared::new(hash))
    }

    /// IPv6's [`CoreState::settled_hit`]: the common packet's whole way, straight through.
    /// A frame the batch took as [`super::super::classify::Class::Ipv6`] (`prepared`: its
    /// lookup in IPv6's table) that holds TCP or UDP without extension headers (checked at
    /// fixed offsets: [`plain_at`]) to a VIP this box forwards for (or, with one arm, to a
    /// local address or from a NAT backend), whose prepared candidate slot holds its flow,
    /// which the packet leaves as it is: tunnelled, or forwarded by DR, NAT or FullNAT to a
    /// backend still at its index whose hop is cached, or to a client whose next hop's MAC
    /// is known; and the first packet to a VIP of a key the batch proved absent (a new
    /// flow: [`CoreState::new_flow6`]). Some verdict for those, the same verdict, bytes and counters the
    /// step-by-step way ([`CoreState::transport6`] after `ipv6`'s checks) gives; None,
    /// having changed nothing that way would not change the same (a last-seen refresh to
    /// `now`, which it repeats), for anything else: the caller then takes that way.
    #[inline(always)]
    pub(in crate::dataplane::pipeline) fn settled_hit6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        prepared: &Prepared,
    ) -> Option<Verdict> {
        let Plain6 { probe, tcp_flags, src, dst } = plain_at(frame)?;
        let six = snapshot.family::<V6>();
        // `ipv6`'s owner test: a standby's VIPs, the box's own addresses and traffic that
        // is not xlb's take the step-by-step way (and its verdicts).
        let to_vip = match six.owned(dst) {
            Some(Owned::Vip) if self.presence.forward_vips => true,
            Some(Owned::Local) => false,
            None if six.is_nat_backend(src) => false,
            _ => return None,
        };
        // A possible reply with several arms is judged by the arm it came in on.
        if !to_vip && snapshot.interfaces.len() > 1 {
            return None;
        }
        let Some((direction, words)) = self.v6.conntrack.settled(now, &probe, prepared, tcp_flags)
        else {
            // A new flow's first packet, its key proved absent by the batch: `transport6`
            // would find no flow here nor look for one elsewhere (not a reply).
            if to_vip && self.v6.conntrack.known_absent(prepared) {
                let transport = Transport6 { key: guess_key(frame)?, tcp_flags };
                return Some(self.new_flow6(snapshot, now, frame, transport, L4, *prepared));
            }
            return None;
        };
        if words.is_dr() {
            let (backend, hop) = self.settled_backend_hop6(snapshot, words)?;
            self.count_forwarded(Some(backend), Direction::Original, frame.len() as u64);
            *frame.first_chunk_mut::<12>()? = hop.addrs;
            return Some(Verdict::Tx(hop.egress));
        }
        if words.is_tunnel() {
            return self.settled_tunnel(snapshot, now, frame, &words.flow()?);
        }
        // As IPv4's settled hit: the new addresses and ports, and their change, read in each
        // direction's arm, where the direction is a constant.
        let (backend, hop, (addrs, ports), change) = match direction {
            Direction::Original => {
                let (backend, hop) = self.settled_backend_hop6(snapshot, words)?;
                let change = words.address_change(Direction::Original);
                (backend, hop, words.translated_wire(Direction::Original), change)
            }
            Direction::Reply => {
                let backend = self.named_backend6(words)?;
                let hop = self.client_hop6(snapshot, words.client_addr())?;
                let change = words.address_change(Direction::Reply);
                (backend, hop, words.translated_wire(Direction::Reply), change)
            }
        };
        if !route_settled(frame, words.proto()?, addrs, ports, change) {
            return Some(Verdict::Drop(DropReason::TtlExceeded));
        }
        self.count_forwarded(Some(backend), direction, frame.len() as u64);
        *frame.first_chunk_mut::<12>()? = hop.addrs;
        Some(Verdict::Tx(hop.egress))
    }

    /// The index of the backend the IPv6 flow of `words` was scheduled to, when its hint
    /// still names that backend (IPv4's `named_backend`).
    #[inline(always)]
    fn named_backend6(&self, words: Words6) -> Option<usize> {
        let index = words.backend_hint();
        self.v6.backend_lines.get(index)?.identity.names(words).then_some(index)
    }

    /// IPv4's `cached_backend_hop`, the caches refreshed first, for an IPv6 flow: its
    /// backend's index and cached hop, when the flow's hint still names that backend and the
    /// hop is known.
    #[inline(always)]
    fn settled_backend_hop6(&mut self, snapshot: &Snapshot, words: Words6) -> Option<(usize, Hop)> {
        if self.v6.hops_generation != self.v6.neighbors.generation() {
            self.refresh_hops6(snapshot);
        }
        let index = words.backend_hint();
        let line = self.v6.backend_lines.get(index)?;
        if !line.identity.names(words) {
            return None;
        }
        Some((index, line.hop.hop()?))
    }

    /// The way to `client` (a reply's destination) as `deliver6` finds it: its route and
    /// its next hop's MAC; None when either is unknown (that way then drops, or holds the
    /// frame and asks). A client on no interface's IPv6 subnet takes the default gateway's
    /// hop, cached with the backends' (`Core6::gateway_hop`, refilled when IPv6's neighbour
    /// table or the snapshot changes); an on-link one is looked up (`on_link_hop6`).
    #[inline(always)]
    fn client_hop6(&mut self, snapshot: &Snapshot, client: Ipv6Addr) -> Option<Hop> {
        if self.v6.hops_generation != self.v6.neighbors.generation() {
            self.refresh_hops6(snapshot);
        }
        let subnets = snapshot.family::<V6>().subnets();
        if !subnets.iter().any(|(_, subnet)| subnet.contains(client)) {
            return self.v6.gateway_hop.hop();
        }
        self.on_link_hop6(snapshot, client)
    }

    /// [`CoreState::client_hop6`] of a client on an interface's subnet: its route (that
    /// interface, the client itself as the next hop) and its MAC, looked up.
    #[inline(never)]
    fn on_link_hop6(&self, snapshot: &Snapshot, client: Ipv6Addr) -> Option<Hop> {
        let route = snapshot.family::<V6>().route(client)?;
        if route.next_hop.is_unspecified() {
            return None;
        }
        hop_to(snapshot, &self.v6.neighbors, route)
    }

    /// Fills the IPv6 backends' hops and the default gateway's from IPv6's neighbour table
    /// (`deliver6`'s way: the route, its next hop's MAC, the egress interface's MAC). The
    /// gateway's route is `route`'s for an address on no subnet: the first interface with
    /// an IPv6 gateway.
    #[cold]
    fn refresh_hops6(&mut self, snapshot: &Snapshot) {
        let six = &mut self.v6;
        let routed = |route: Route<V6>| match route.next_hop.is_unspecified() {
            true => None,
            false => hop_to(snapshot, &six.neighbors, route),
        };
        for (line, &route) in
            six.backend_lines.iter_mut().zip(snapshot.family::<V6>().backend_routes())
        {
            line.hop = HopSlot::of(routed(route));
        }
        let gateway = snapshot.family::<V6>().subnets().iter().find_map(|&(egress, subnet)| {
            subnet.gateway.map(|next_hop| Route { egress, next_hop })
        });
        six.gateway_hop = HopSlot::of(gateway.and_then(routed));
        six.hops_generation = six.neighbors.generation();
    }

    /// A packet to a VIP that no tracked flow took: scheduled and tracked by both families'
    /// step ([`CoreState::schedule`]), forwarded. `prepared` is the lookup of its key that
    /// missed (by the batch or not); its TCP/UDP header is at `l4`.
    #[inline(never)]
    fn new_flow6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        transport: Transport6,
        l4: usize,
        prepared: Prepared,
    ) -> Verdict {
        let (key, tcp_flags) = (&transport.key, transport.tcp_flags);
        let first = FirstForward6 { snapshot, now, frame, l4 };
        self.schedule::<V6>(snapshot, now, key, tcp_flags, prepared, first)
    }

    /// Rewrites a tracked packet (its TCP/UDP header at `l4`) for its direction (NAT,
    /// FullNAT: a routing hop) and sends it to its next hop; a tunnel flow's packet is
    /// wrapped whole instead ([`CoreState::tunnel`]).
    fn forward6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        l4: usize,
        flow: &Flow<V6>,
        direction: Direction,
    ) -> Verdict {
        if flow.forward == ForwardMode::Tunnel {
            return self.tunnel(snapshot, now, frame, flow);
        }
        if flow.forward != ForwardMode::Dr {
            let (src, dst) = translate(flow, direction);
            if !route_transport(frame, flow.proto, l4, src, dst) {
                return Verdict::Drop(DropReason::TtlExceeded);
            }
        }
        let backend = backend_of(snapshot, flow);
        self.count_forwarded(backend, direction, frame.len() as u64);
        self.deliver6(snapshot, now, frame, flow, direction, backend)
    }

    /// Sends a frame translated for `direction` of `flow` to its next hop: the flow's backend
    /// (`backend` is its index, when still in the snapshot) or its client.
    pub(in crate::dataplane::pipeline) fn deliver6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<V6>,
        direction: Direction,
        backend: Option<usize>,
    ) -> Verdict {
        let six = snapshot.family::<V6>();
        let route = match (direction, backend) {
            (Direction::Original, Some(index)) => Some(six.backend_route(index)),
            (Direction::Original, None) => six.route(flow.backend_addr),
            (Direction::Reply, _) => six.route(flow.client_addr),
        };
        let Some(route) = route.filter(|route| !route.next_hop.is_unspecified()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let (emit, counters) = (&mut self.emit, &mut self.counters);
        self.v6.send(snapshot, now, frame, route.egress, route.next_hop, emit, counters)
    }

    /// ICMPv6 to a VIP or local address, or from a NAT backend: echo requests answered,
    /// errors about a tracked flow sent on translated (see the module docs).
    pub(in crate::dataplane::pipeline) fn icmp6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        owned: Option<Owned>,
        icmp: Range<usize>,
    ) -> Verdict {
        if icmp.len() < icmpv6::HEADER_LEN {
            return reject(owned, DropReason::Truncated);
        }
        match frame[icmp.start] {
            icmpv6_type::ECHO_REQUEST if owned.is_some() => {
                echo_reply(frame, icmp);
                self.counters.add(Stat::IcmpEchoReplies, 1);
                Verdict::Tx(ingress)
            }
            kind if icmpv6::is_error(kind) => self.icmp6_error(snapshot, now, frame, owned, icmp),
            _ => reject(owned, DropReason::UnsupportedIcmp),
        }
    }

    /// An ICMPv6 error quotes a packet that went the *other* way: the flow is found by the
    /// quote reversed; the error travels like a packet of that direction, its quote
    /// translated as the reverse of the same translation.
    fn icmp6_error(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        owned: Option<Owned>,
        icmp: Range<usize>,
    ) -> Verdict {
        // An error about no TCP/UDP packet (one about an ICMPv6 error included) names no
        // flow.
        let Some(Quote6 { transport: quoted, l4: quoted_l4 }) =
            quoted_transport(&frame[icmp.clone()])
        else {
            return reject(owned, DropReason::IcmpNoFlow);
        };
        let key = quoted.key.reversed();
        let Some(hit) = self.peek6(now, &key, self.v6.conntrack.hash(&key)) else {
            return reject(owned, DropReason::IcmpNoFlow);
        };
        let flow = hit.flow;
        // DR and tunnel leave the packet as it is (the quote names the VIP already); NAT and
        // FullNAT route it and translate it.
        if !flow.forward.keeps_packet() {
            if !decrement_hop_limit(frame) {
                return Verdict::Drop(DropReason::TtlExceeded);
            }
            let (src, dst) = translate(&flow, hit.direction);
            let outer_src = addresses(frame).map(|(src, _)| src);
            let how = ErrorTranslation {
                // From the translated source if the error came from the flow's peer itself
                // (a router's address is left alone).
                outer_src: (outer_src == Some(key.src_addr)).then_some(src.0),
                outer_dst: dst.0,
                proto: flow.proto,
                quoted_l4,
                quote_src: dst,
                quote_dst: src,
            };
            translate_error(frame, icmp.clone(), &how);
        }
        self.counters.add(Stat::IcmpErrorsForwarded, 1);
        let backend = backend_of(snapshot, &flow);
        // No route, address unreachable, port unreachable (codes 0, 3, 4): about the
        // backend; not "administratively prohibited" or "beyond scope", about the path.
        let unreachable = frame[icmp.start] == icmpv6_type::DEST_UNREACHABLE
            && matches!(frame[icmp.start + 1], 0 | 3 | 4);
        if unreachable {
            self.count_unreachable(backend, hit.direction);
        }
        // A tunnel flow's real server is reached through the tunnel only (a tunnel flow has
        // no other direction: replies never come back).
        if flow.forward == ForwardMode::Tunnel {
            return self.encapsulate6(snapshot, now, frame, &flow);
        }
        self.deliver6(snapshot, now, frame, &flow, hit.direction, backend)
    }
}

/// IPv6's way to send a new flow's first packet ([`FirstPacket`]): as any tracked packet
/// of the flow ([`CoreState::forward6`]; its TCP/UDP header at `l4`).
struct FirstForward6<'a> {
    snapshot: &'a Snapshot,
    now: Instant,
    frame: &'a mut [u8],
    l4: usize,
}

impl FirstPacket<V6> for FirstForward6<'_> {
    #[inline(always)]
    fn send(self, core: &mut CoreState, flow: &Flow<V6>, _backend: usize) -> Verdict {
        let FirstForward6 { snapshot, now, frame, l4 } = self;
        core.forward6(snapshot, now, frame, l4, flow, Direction::Original)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::sync::Arc;

    use super::super::super::testutil::{counter_differences, step_by_step};
    use super::super::super::{CoreSlot, Pipeline, Table6, Verdict};
    use super::super::parse::L4;
    use crate::report::{DropReason, Stat};
    use crate::snapshot::{IfaceId, Snapshot};
    use crate::testkit::{self, ACK, Host6, SYN, SYN_ACK, routed6};
    use crate::time::Instant;

    const fn v6(net: u16, last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, last)
    }
    const LB: Host6 = Host6::new([2, 0, 0, 0, 0, 0x10], v6(1, 0x10));
    const LB_B: Host6 = Host6::new([2, 0, 0, 0, 0, 0xb0], v6(2, 0x10));
    const CLIENT: Host6 = Host6::new([2, 0, 0, 0, 0, 0x20], v6(1, 0x20));
    const RS: Host6 = Host6::new([2, 0, 0, 0, 0, 0x11], v6(2, 0x11));
    const VIP: Ipv6Addr = v6(1, 0x100);

    /// Two arms: clients on eth0 (2001:db8:1::/64), the NAT backend on eth1 (2001:db8:2::/64).
    fn two_arms() -> Arc<Snapshot> {
        let config = crate::control::Config::parse(TWO_ARMS, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, 1).expect("builds"))
    }

    /// [`two_arms`]'s config.
    const TWO_ARMS: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
addr6 = "2001:db8:1::10/64"
mac = "02:00:00:00:00:10"
[[interface]]
name = "eth1"
addr = "10.1.2.10/24"
addr6 = "2001:db8:2::10/64"
mac = "02:00:00:00:00:b0"
[conntrack]
capacity = 8192
[[neighbor]]
ip = "2001:db8:1::20"
mac = "02:00:00:00:00:20"
[[neighbor]]
ip = "2001:db8:2::11"
mac = "02:00:00:00:00:11"
[[service]]
vip = "2001:db8:1::100"
port = 80
forward = "nat"
[[service.backend]]
addr = "2001:db8:2::11"
port = 8080
"#;

    /// Two cores on `snapshot`, each with the other's IPv6 table as its peer.
    fn two_peered_cores(snapshot: &Arc<Snapshot>) -> Vec<Pipeline> {
        let mut cores: Vec<Pipeline> = (0..2)
            .map(|index| Pipeline::new(snapshot.clone(), CoreSlot { index, count: 2 }))
            .collect();
        let readers: Vec<_> = cores.iter().map(Pipeline::conntrack_reader6).collect();
        for (index, core) in cores.iter_mut().enumerate() {
            let peers = readers.iter().enumerate().filter(|(i, _)| *i != index);
            core.set_peers6(peers.map(|(_, r)| r.clone()).collect());
        }
        cores
    }

    /// A NAT flow opened on core 0 is answered on core 1 (RSS put the reply there): found
    /// in core 0's table, translated; a reply forged on the client's arm is dropped before
    /// it touches the flow.
    #[test]
    fn replies_cross_cores_and_forged_ones_are_refused() {
        let snapshot = two_arms();
        let mut cores = two_peered_cores(&snapshot);
        let now = Instant::from_secs(1);
        let mut syn = testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), (VIP, 80), SYN, b"");
        assert_eq!(cores[0].process(now, IfaceId(0), &mut syn), Verdict::Tx(IfaceId(1)));
        let answer =
            |mac| testkit::tcp6(RS.mac, mac, (RS.ip, 8080), (CLIENT.ip, 4000), SYN_ACK, b"");
        // Forged: the backend's address, from the clients' side.
        let mut forged = answer(LB.mac);
        let verdict = cores[1].process(now, IfaceId(0), &mut forged);
        assert_eq!(verdict, Verdict::Drop(DropReason::ReplyWrongInterface));
        let mut reply = answer(LB_B.mac);
        assert_eq!(cores[1].process(now, IfaceId(1), &mut reply), Verdict::Tx(IfaceId(0)));
        let expected =
            routed6(testkit::tcp6(LB.mac, CLIENT.mac, (VIP, 80), (CLIENT.ip, 4000), SYN_ACK, b""));
        assert_eq!(reply, expected);
        assert_eq!(cores[1].counters().get(Stat::CrossCoreHits), 1);
        let mut ack = testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), (VIP, 80), ACK, b"");
        assert_eq!(cores[0].process(now, IfaceId(0), &mut ack), Verdict::Tx(IfaceId(1)));
    }

    /// A one-arm NAT box whose clients are behind the IPv6 gateway 2001:db8:1::1, its
    /// interface's MAC `mac`.
    fn behind_gateway(mac: &str) -> Arc<Snapshot> {
        let text = format!(
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n\
             addr6 = \"2001:db8:1::10/64\"\ngateway6 = \"2001:db8:1::1\"\nmac = \"{mac}\"\n\
             [[neighbor]]\nip = \"2001:db8:1::11\"\nmac = \"02:00:00:00:00:11\"\n\
             [[service]]\nvip = \"2001:db8:1::100\"\nport = 80\nforward = \"nat\"\n\
             [[service.backend]]\naddr = \"2001:db8:1::11\"\nport = 8080\n"
        );
        let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, 1).expect("builds"))
    }

    /// Replies to a client behind the gateway take the gateway's cached hop, which follows
    /// the neighbour table and the snapshot: held until the gateway's MAC is learned, then
    /// sent to it, to its new MAC at once when it moves, and from a new snapshot's interface
    /// MAC at once.
    #[test]
    fn the_gateway_hop_of_replies_follows_neighbors_and_snapshots() {
        use crate::testkit::{PSH_ACK, neighbor_advertisement};
        use crate::wire::MacAddr;
        let gateway = (MacAddr([2, 0, 0, 0, 0, 0x01]), v6(1, 1));
        let client = (Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 7), 4000);
        let lb_ip = v6(1, 0x10);
        let mut pipeline = Pipeline::new(behind_gateway("02:00:00:00:00:10"), CoreSlot::SINGLE);
        let now = Instant::from_secs(1);
        let request = |pipeline: &mut Pipeline, flags| {
            let mut frame = testkit::tcp6(gateway.0, LB.mac, client, (VIP, 80), flags, b"");
            assert_eq!(pipeline.process(now, IfaceId(0), &mut frame), Verdict::Tx(IfaceId(0)));
        };
        let answer = |pipeline: &mut Pipeline, lb: MacAddr, flags| {
            let mut frame = testkit::tcp6(RS.mac, lb, (v6(1, 0x11), 8080), client, flags, b"x");
            let verdict = pipeline.process(now, IfaceId(0), &mut frame);
            (verdict, frame[0..6].to_vec(), frame[6..12].to_vec())
        };
        let reply = |pipeline: &mut Pipeline, lb: MacAddr| answer(pipeline, lb, PSH_ACK);
        // The handshake, the backend's SYN-ACK held until the gateway's MAC is learned:
        // the replies after it are settled hits.
        request(&mut pipeline, SYN);
        assert_eq!(answer(&mut pipeline, LB.mac, SYN_ACK).0, Verdict::Held);
        let learn = |pipeline: &mut Pipeline, mac: MacAddr| {
            let mut frame =
                neighbor_advertisement((mac, gateway.1), (LB.mac, lb_ip), gateway.1, mac, true);
            pipeline.process(now, IfaceId(0), &mut frame);
            pipeline.drain_emitted(|_, _| {});
        };
        learn(&mut pipeline, gateway.0);
        request(&mut pipeline, ACK);
        let sent = |next_hop: MacAddr, lb: MacAddr| {
            (Verdict::Tx(IfaceId(0)), next_hop.0.to_vec(), lb.0.to_vec())
        };
        for _ in 0..2 {
            assert_eq!(reply(&mut pipeline, LB.mac), sent(gateway.0, LB.mac));
        }
        // The gateway moves: the next reply goes to its new MAC.
        let moved = MacAddr([2, 0, 0, 0, 9, 9]);
        learn(&mut pipeline, moved);
        assert_eq!(reply(&mut pipeline, LB.mac), sent(moved, LB.mac));
        // A new snapshot: the interface's new MAC is the source at once.
        let new_lb = MacAddr([2, 0, 0, 0, 0, 0x99]);
        pipeline.set_snapshot(behind_gateway("02:00:00:00:00:99"));
        assert_eq!(reply(&mut pipeline, new_lb), sent(moved, new_lb));
    }

    proptest::proptest! {
        /// A frame whose lookup was prepared from the key guessed at fixed offsets (what
        /// `process` and a batch do for `Class::Ipv6`) gets what the step-by-step way,
        /// which never prepares, gives it: the same verdicts, bytes and counters for a
        /// sequence of requests and replies of a few flows (opening, hits, closing, reopening),
        /// damaged or not (next header, lengths, addresses, ports: wrong guesses), on both arms.
        #[test]
        fn guessed_lookups_give_what_the_step_by_step_way_gives(
            packets in proptest::collection::vec(
                (0u16..3, 0usize..4, proptest::prelude::any::<bool>(),
                 proptest::option::of((14usize..80, proptest::prelude::any::<u8>()))),
                1..40,
            ),
        ) {
            use crate::testkit::{FIN_ACK, RST};
            let snapshot = two_arms();
            let now = Instant::from_secs(1);
            let mut fast = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
            let mut slow = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
            for (port, flags, reply, damage) in packets {
                let client = (CLIENT.ip, 4000 + port);
                let flags = [SYN, ACK, FIN_ACK, RST][flags];
                let (mut frame, ingress) = if reply {
                    (testkit::tcp6(RS.mac, LB_B.mac, (RS.ip, 8080), client, flags, b"x"), 1)
                } else {
                    (testkit::tcp6(CLIENT.mac, LB.mac, client, (VIP, 80), flags, b"x"), 0)
                };
                if let Some((at, byte)) = damage
                    && let Some(slot) = frame.get_mut(at)
                {
                    *slot = byte;
                }
                let mut stepwise = frame.clone();
                let verdict = fast.process(now, IfaceId(ingress), &mut frame);
                let expected =
                    step_by_step(&mut slow, &snapshot, now, IfaceId(ingress), &mut stepwise);
                proptest::prop_assert_eq!(verdict, expected);
                proptest::prop_assert_eq!(&frame, &stepwise);
            }
            proptest::prop_assert_eq!(counter_differences(&fast, &slow), Vec::<String>::new());
            proptest::prop_assert_eq!(fast.conntrack6().len(), slow.conntrack6().len());
        }
    }

    /// One arm serving IPv6 by DR, NAT and FullNAT (backends' and the client's MACs
    /// static) and by DR to a backend whose MAC is unknown; `variant` 1 renumbers the
    /// backends (one inserted ahead of each) and moves the NAT service's backend to another
    /// port, `variant` 2 leaves only the FullNAT and the unresolved DR services.
    fn one_arm(variant: u8) -> Arc<Snapshot> {
        let mut text = String::from(
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n\
             addr6 = \"2001:db8:1::10/64\"\nmac = \"02:00:00:00:00:10\"\n\
             [conntrack]\ncapacity = 8192\n",
        );
        for (ip, mac) in [("20", "20"), ("11", "11"), ("12", "12"), ("14", "14")] {
            text += &format!(
                "[[neighbor]]\nip = \"2001:db8:1::{ip}\"\nmac = \"02:00:00:00:00:{mac}\"\n"
            );
        }
        let extra = |text: &mut String| {
            if variant == 1 {
                *text += "[[service.backend]]\naddr = \"2001:db8:1::14\"\nweight = 0\n";
            }
        };
        if variant != 2 {
            text += "[[service]]\nvip = \"2001:db8:1::100\"\nport = 80\nforward = \"dr\"\n";
            extra(&mut text);
            text += "[[service.backend]]\naddr = \"2001:db8:1::11\"\n";
            text += "[[service]]\nvip = \"2001:db8:1::101\"\nport = 80\nforward = \"nat\"\n";
            extra(&mut text);
            let port = if variant == 1 { 8081 } else { 8080 };
            text += &format!("[[service.backend]]\naddr = \"2001:db8:1::11\"\nport = {port}\n");
        }
        text += "[[service]]\nvip = \"2001:db8:1::102\"\nport = 80\nforward = \"fullnat\"\n\
                 local_addrs = [\"2001:db8:1::200\"]\n";
        extra(&mut text);
        text += "[[service.backend]]\naddr = \"2001:db8:1::12\"\nport = 8080\n";
        text += "[[service]]\nvip = \"2001:db8:1::103\"\nport = 80\nforward = \"dr\"\n\
                 [[service.backend]]\naddr = \"2001:db8:1::13\"\n";
        let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, u64::from(variant) + 1).expect("builds"))
    }

    proptest::proptest! {
        /// IPv6's settled hit (`settled_hit6`, which `process` and a batch take for
        /// `Class::Ipv6`) gives what the step-by-step way gives: the same verdicts, bytes,
        /// emitted frames, counters, connection counts and table, for random packets of a
        /// few DR, NAT (both directions) and FullNAT (both directions) flows, TCP and UDP,
        /// including the ones it must refuse: handshakes and state changes (SYN, FIN, RST),
        /// flows expired (time jumps past their timeouts), backends renumbered, moved or
        /// gone (snapshot swaps), a hop not yet resolved (a backend without a known MAC),
        /// extension headers, fragments, VLAN tags, hop limit 1, damaged bytes.
        #[test]
        fn settled_ipv6_hits_give_what_the_step_by_step_way_gives(
            packets in proptest::collection::vec(
                (0usize..4, 0u16..3, proptest::prelude::any::<bool>(), 0usize..10, 0usize..10,
                 0usize..12, (14usize..90, proptest::prelude::any::<u8>())),
                1..48,
            ),
            swaps in proptest::collection::vec((0usize..48, 0u8..3), 0..3),
        ) {
            use crate::testkit::{FIN_ACK, PSH_ACK, RST, ext_header, fragmented6, with_ext_headers, with_hop_limit};
            let host = |last: u16| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last);
            let mac = |last: u8| crate::wire::MacAddr([2, 0, 0, 0, 0, last]);
            let snapshots = [one_arm(0), one_arm(1), one_arm(2)];
            let mut now = Instant::from_secs(1);
            let mut fast = Pipeline::new(snapshots[0].clone(), CoreSlot::SINGLE);
            let mut slow = Pipeline::new(snapshots[0].clone(), CoreSlot::SINGLE);
            let mut current = 0;
            // The local port each FullNAT flow went out with (its replies come back to it).
            let mut local_ports = [0u16; 3];
            // Every flow opened first (SYN, then ACK: established), so that most of the
            // random packets are hits.
            let opening = (0..3).flat_map(|mode| {
                (0..3).flat_map(move |port| [0, 1].map(|flags| (mode, port, false, flags, 0, 0, (0, 0))))
            });
            let packets: Vec<_> = opening.chain(packets).collect();
            for (index, (mode, port, reply, flags, variant, wait, damage)) in packets.into_iter().enumerate() {
                if let Some(&(_, to)) = swaps.iter().find(|(at, _)| *at == index) {
                    current = usize::from(to);
                    fast.set_snapshot(snapshots[current].clone());
                    slow.set_snapshot(snapshots[current].clone());
                }
                let client = (host(0x20), 4000 + port);
                let udp = flags == 5;
                let flags = [SYN, ACK, PSH_ACK, FIN_ACK, RST, ACK, ACK, PSH_ACK, ACK, ACK][flags];
                let (src, dst, src_mac) = match (mode, reply) {
                    (1, true) => ((host(0x11), 8080), client, mac(0x11)),
                    (2, true) => ((host(0x12), 8080), (host(0x200), local_ports[usize::from(port)]), mac(0x12)),
                    (mode, _) => (client, (host(0x100 + mode as u16), 80), mac(0x20)),
                };
                let mut frame = match udp {
                    true => testkit::udp6(src_mac, LB.mac, src, dst, b"payload"),
                    false => testkit::tcp6(src_mac, LB.mac, src, dst, flags, b"payload"),
                };
                match variant {
                    1 => frame = with_ext_headers(&frame, &[(0, &ext_header(0, 0))]),
                    2 => frame = fragmented6(&frame, &[], 7, 8).swap_remove(0),
                    3 => {
                        frame.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
                    }
                    4 => frame = with_hop_limit(frame, 1),
                    5 => {
                        if let Some(slot) = frame.get_mut(damage.0) {
                            *slot = damage.1;
                        }
                    }
                    _ => {}
                }
                let mut stepwise = frame.clone();
                let verdict = fast.process(now, IfaceId(0), &mut frame);
                let expected = step_by_step(&mut slow, &snapshots[current], now, IfaceId(0), &mut stepwise);
                proptest::prop_assert_eq!(verdict, expected);
                proptest::prop_assert_eq!(&frame, &stepwise);
                if mode == 2 && !reply && verdict == Verdict::Tx(IfaceId(0)) && frame.len() > L4 + 2 {
                    local_ports[usize::from(port)] = u16::from_be_bytes([frame[L4], frame[L4 + 1]]);
                }
                let (mut sent_fast, mut sent_slow) = (Vec::new(), Vec::new());
                fast.drain_emitted(|iface, bytes| sent_fast.push((iface, bytes.to_vec())));
                slow.drain_emitted(|iface, bytes| sent_slow.push((iface, bytes.to_vec())));
                proptest::prop_assert_eq!(sent_fast, sent_slow);
                let seconds = [0, 0, 0, 0, 0, 0, 0, 0, 1, 30, 400, 4000][wait];
                now = Instant::from_nanos(now.as_nanos() + seconds * 1_000_000_000);
                fast.maintain(now);
                slow.maintain(now);
            }
            proptest::prop_assert_eq!(counter_differences(&fast, &slow), Vec::<String>::new());
            proptest::prop_assert_eq!(&fast.counters().backends, &slow.counters().backends);
            proptest::prop_assert_eq!(&fast.counters().passive, &slow.counters().passive);
            proptest::prop_assert_eq!(fast.connections(), slow.connections());
            proptest::prop_assert_eq!(fast.conntrack6().len(), slow.conntrack6().len());
            let (entries_fast, entries_slow) = (
                fast.conntrack6().reader().entries(now, 100),
                slow.conntrack6().reader().entries(now, 100),
            );
            proptest::prop_assert_eq!(format!("{entries_fast:?}"), format!("{entries_slow:?}"));
        }
    }

    /// An IPv4-only box keeps a small IPv6 table (its IPv4 one has 100000 flows); one with
    /// an IPv6 service takes the configured capacity.
    #[test]
    fn the_ipv6_table_is_sized_by_the_first_snapshot() {
        let text = "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n\
                    mac = \"02:00:00:00:00:10\"\n[conntrack]\ncapacity = 100000\n\
                    [[service]]\nvip = \"10.1.1.100\"\nport = 80\n\
                    [[service.backend]]\naddr = \"10.1.1.11\"\n";
        let config = crate::control::Config::parse(text, "test.toml").expect("valid");
        let four = Arc::new(Snapshot::build(&config, 1).expect("builds"));
        let pipeline = Pipeline::new(four, CoreSlot::SINGLE);
        assert!(
            pipeline.conntrack6().capacity()
                <= 2 * crate::conntrack::ConntrackConfig::IPV6_IDLE_CAPACITY
        );
        let pipeline = Pipeline::new(two_arms(), CoreSlot::SINGLE);
        assert!(pipeline.conntrack6().capacity() >= 8192);
    }

    /// A reload that adds the first IPv6 service grows every core's IPv6 table to the
    /// start's `[conntrack]` size, as IPv4's (issue 12: it kept the 4096-flow start-up table
    /// until a restart), with the cores' new tables as each other's peers: a reply RSS puts
    /// on the other core is found. A later reload grows nothing.
    #[test]
    fn a_reload_adding_ipv6_grows_the_ipv6_tables() {
        let ipv4_only = TWO_ARMS.split("[[service]]").next().unwrap().to_string()
            + "[[service]]\nvip = \"10.1.1.100\"\nport = 80\n\
               [[service.backend]]\naddr = \"10.1.2.11\"\n";
        let config = crate::control::Config::parse(&ipv4_only, "test.toml").expect("valid");
        let start = Arc::new(Snapshot::build(&config, 1).expect("builds"));
        let mut cores = two_peered_cores(&start);
        let small = cores[0].conntrack6().capacity();
        assert!(small < 8192);
        // What the daemon's reload does: grown tables first, then the snapshot.
        let reloaded = two_arms();
        let grown = Table6::grown(&start.conntrack, small, &reloaded, 2).expect("grows");
        for (core, table) in cores.iter_mut().zip(&grown) {
            core.grow_conntrack6(table);
            core.set_snapshot(reloaded.clone());
        }
        for core in &cores {
            assert!(core.conntrack6().capacity() >= 8192, "{}", core.conntrack6().capacity());
        }
        assert!(Table6::grown(&start.conntrack, 8192, &reloaded, 2).is_none());
        assert!(grown[0].take().is_none(), "taken once");
        let now = Instant::from_secs(1);
        let mut syn = testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), (VIP, 80), SYN, b"");
        assert_eq!(cores[0].process(now, IfaceId(0), &mut syn), Verdict::Tx(IfaceId(1)));
        let mut reply =
            testkit::tcp6(RS.mac, LB_B.mac, (RS.ip, 8080), (CLIENT.ip, 4000), SYN_ACK, b"");
        assert_eq!(cores[1].process(now, IfaceId(1), &mut reply), Verdict::Tx(IfaceId(0)));
        assert_eq!(grown[0].reader().entries(now, 10).len(), 1, "control reads the new table");
    }

    /// A core whose IPv6 table holds flows refuses a grown table (counted) and keeps its
    /// flows: the grow is for a box that served no IPv6, never a reason to lose connections.
    #[test]
    fn a_core_with_ipv6_flows_refuses_a_grown_table() {
        let snapshot = two_arms();
        let mut core = Pipeline::new(snapshot.clone(), CoreSlot { index: 0, count: 1 });
        let now = Instant::from_secs(1);
        let mut syn = testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), (VIP, 80), SYN, b"");
        assert_eq!(core.process(now, IfaceId(0), &mut syn), Verdict::Tx(IfaceId(1)));
        let capacity = core.conntrack6().capacity();
        let grown = Table6::grown(&snapshot.conntrack, 0, &snapshot, 1).expect("grows from 0");
        core.grow_conntrack6(&grown[0]);
        assert_eq!(core.counters().get(Stat::Ipv6TableRefused), 1);
        assert_eq!(core.conntrack6().capacity(), capacity);
        assert_eq!(core.conntrack6().len(), 1, "the flow is kept");
        let mut reply =
            testkit::tcp6(RS.mac, LB_B.mac, (RS.ip, 8080), (CLIENT.ip, 4000), SYN_ACK, b"");
        assert_eq!(core.process(now, IfaceId(1), &mut reply), Verdict::Tx(IfaceId(0)));
    }

    /// IPv6 NAT shows the backend's side as IPv4's does: its answer, its reset and an
    /// ICMPv6 port unreachable from it count for passive health checks (a Packet Too Big,
    /// about the path, does not), and the error reaches the client translated.
    #[test]
    fn passive_signs_of_an_ipv6_backend_are_counted() {
        use crate::report::PassiveCounters;
        use crate::testkit::RST;
        let snapshot = two_arms();
        let mut pipeline = Pipeline::new(snapshot, CoreSlot::SINGLE);
        let now = Instant::from_secs(1);
        let mut send = |frame: &mut Vec<u8>, iface| pipeline.process(now, IfaceId(iface), frame);
        let client = |port, flags| {
            testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, port), (VIP, 80), flags, b"")
        };
        let backend = |port, flags| {
            testkit::tcp6(RS.mac, LB_B.mac, (RS.ip, 8080), (CLIENT.ip, port), flags, b"")
        };
        for (mut frame, iface) in [(client(4001, SYN), 0), (backend(4001, SYN_ACK), 1)] {
            assert_eq!(send(&mut frame, iface), Verdict::Tx(IfaceId(1 - iface)));
        }
        for (mut frame, iface) in [(client(4002, SYN), 0), (backend(4002, RST), 1)] {
            assert_eq!(send(&mut frame, iface), Verdict::Tx(IfaceId(1 - iface)));
        }
        let mut syn = client(4003, SYN);
        assert_eq!(send(&mut syn, 0), Verdict::Tx(IfaceId(1)));
        let mut error = testkit::icmpv6_port_unreachable(RS.mac, LB_B.mac, RS.ip, CLIENT.ip, &syn);
        assert_eq!(send(&mut error, 1), Verdict::Tx(IfaceId(0)));
        let mut mtu =
            testkit::icmpv6_packet_too_big(RS.mac, LB_B.mac, RS.ip, CLIENT.ip, 1280, &syn, 8);
        assert_eq!(send(&mut mtu, 1), Verdict::Tx(IfaceId(0)));
        let passive = pipeline.counters().passive[0];
        let expected = PassiveCounters { answered: 1, unanswered: 0, resets: 1, unreachable: 1 };
        assert_eq!(passive, expected);
        assert_eq!(pipeline.counters().get(Stat::IcmpErrorsForwarded), 2);
    }

    /// A DR flow the IPv6 table refuses (full of established flows) still goes to a
    /// backend, by the service's Maglev table alone, as IPv4's does.
    #[test]
    fn a_refused_ipv6_dr_flow_is_forwarded_statelessly() {
        let text = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
addr6 = "2001:db8:1::10/64"
mac = "02:00:00:00:00:10"
[conntrack]
capacity = 2
[[neighbor]]
ip = "2001:db8:1::11"
mac = "02:00:00:00:00:11"
[[service]]
vip = "2001:db8:1::100"
port = 80
forward = "dr"
[[service.backend]]
addr = "2001:db8:1::11"
"#;
        let config = crate::control::Config::parse(text, "test.toml").expect("valid");
        let mut pipeline =
            Pipeline::new(Arc::new(Snapshot::build(&config, 1).expect("builds")), CoreSlot::SINGLE);
        let now = Instant::from_secs(1);
        for port in 4000..4010 {
            for flags in [SYN, ACK] {
                let mut frame =
                    testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, port), (VIP, 80), flags, b"");
                assert_eq!(pipeline.process(now, IfaceId(0), &mut frame), Verdict::Tx(IfaceId(0)));
                assert_eq!(&frame[..6], &[2, 0, 0, 0, 0, 0x11], "to the backend");
            }
        }
        assert!(pipeline.conntrack6().len() <= 2);
        assert!(pipeline.counters().get(Stat::StatelessPackets) > 0);
    }

    /// An IPv6 client's bare SYN on an embryonic or established flow is scheduled anew once
    /// its backend is drained, as IPv4's (`a_clients_syn_on_a_flow_of_a_drained_backend_is_
    /// scheduled_anew`); before, it goes where the flow says.
    #[test]
    fn ipv6_a_clients_syn_on_a_flow_of_a_drained_backend_is_scheduled_anew() {
        use testkit::{ACK, SYN};
        let snapshot = |weight_of_11: u32, generation| {
            let text = format!(
                "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n\
                 addr6 = \"2001:db8:1::10/64\"\nmac = \"02:00:00:00:00:10\"\n\
                 [[neighbor]]\nip = \"2001:db8:1::11\"\nmac = \"02:00:00:00:00:11\"\n\
                 [[neighbor]]\nip = \"2001:db8:1::12\"\nmac = \"02:00:00:00:00:12\"\n\
                 [[service]]\nvip = \"2001:db8:1::100\"\nport = 80\nforward = \"dr\"\n\
                 scheduler = \"rr\"\n\
                 [[service.backend]]\naddr = \"2001:db8:1::11\"\nweight = {weight_of_11}\n\
                 [[service.backend]]\naddr = \"2001:db8:1::12\"\n"
            );
            let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
            Arc::new(Snapshot::build(&config, generation).expect("builds"))
        };
        let now = Instant::from_secs(1);
        let send = |pipeline: &mut Pipeline, port, flags| {
            let mut frame =
                testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, port), (VIP, 80), flags, b"");
            assert_eq!(pipeline.process(now, IfaceId(0), &mut frame), Verdict::Tx(IfaceId(0)));
            frame[5]
        };
        let mut pipeline = Pipeline::new(snapshot(1, 1), CoreSlot::SINGLE);
        let embryonic = (5000..).find(|&port| send(&mut pipeline, port, SYN) == 0x11).unwrap();
        let established = (6000..).find(|&port| send(&mut pipeline, port, SYN) == 0x11).unwrap();
        assert_eq!(send(&mut pipeline, established, ACK), 0x11);
        for port in [embryonic, established] {
            assert_eq!(send(&mut pipeline, port, SYN), 0x11, "{port}: .11 taking connections");
        }
        pipeline.set_snapshot(snapshot(0, 2));
        for port in [embryonic, established] {
            for flags in [SYN, ACK, SYN] {
                assert_eq!(send(&mut pipeline, port, flags), 0x12, "{port} {flags:?}");
            }
        }
        assert_eq!(pipeline.counters().get(Stat::RedirectedSyns), 2);
    }

    /// An IPv6 flow whose backend its health check took out of the service is scheduled
    /// anew on its client's next packet, as IPv4's (`flows_of_a_backend_its_health_check_
    /// removed_are_rescheduled`); one whose backend the operator removed stays.
    #[test]
    fn ipv6_flows_of_a_backend_its_health_check_removed_are_rescheduled() {
        use crate::flow::Proto;
        use crate::snapshot::BackendId;
        let snapshot = |backends: &[u16]| {
            let mut text = String::from(
                "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n\
                 addr6 = \"2001:db8:1::10/64\"\nmac = \"02:00:00:00:00:10\"\n\
                 [[neighbor]]\nip = \"2001:db8:1::11\"\nmac = \"02:00:00:00:00:11\"\n\
                 [[neighbor]]\nip = \"2001:db8:1::12\"\nmac = \"02:00:00:00:00:12\"\n\
                 [[service]]\nvip = \"2001:db8:1::100\"\nport = 53\nproto = \"udp\"\n\
                 forward = \"dr\"\n",
            );
            for backend in backends {
                text += &format!("[[service.backend]]\naddr = \"2001:db8:1::{backend:x}\"\n");
            }
            let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
            Snapshot::build(&config, 1).expect("builds")
        };
        let now = Instant::from_secs(1);
        let ask = |pipeline: &mut Pipeline, port| {
            let mut frame = testkit::udp6(CLIENT.mac, LB.mac, (CLIENT.ip, port), (VIP, 53), b"q");
            assert_eq!(pipeline.process(now, IfaceId(0), &mut frame), Verdict::Tx(IfaceId(0)));
            frame[5]
        };
        for (by_health, expected) in [(false, 0x11), (true, 0x12)] {
            let mut pipeline = Pipeline::new(Arc::new(snapshot(&[0x11, 0x12])), CoreSlot::SINGLE);
            let port = (5000..).find(|&port| ask(&mut pipeline, port) == 0x11).unwrap();
            let mut after = snapshot(&[0x12]);
            if by_health {
                after.set_rescheduled([BackendId {
                    vip: VIP.into(),
                    vport: 53,
                    proto: Proto::Udp,
                    addr: v6(1, 0x11).into(),
                    port: 53,
                }]);
            }
            pipeline.set_snapshot(Arc::new(after));
            for round in 0..3 {
                assert_eq!(ask(&mut pipeline, port), expected, "{by_health}, {round}");
            }
            let rescheduled = pipeline.counters().get(Stat::RescheduledFlows);
            assert_eq!(rescheduled, u64::from(by_health));
        }
    }
}
