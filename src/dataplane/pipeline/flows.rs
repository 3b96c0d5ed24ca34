//! The flow step: connection lookup (here, or on another core for replies), scheduling and
//! tracking of new flows, and forwarding a tracked packet for its direction.
//!
//! Invariants: a packet that reaches this step is TCP or UDP in IPv4 without options with
//! its whole L4 header in the frame. A TCP packet that opens nothing is never tracked (DR
//! forwards it by the service's Maglev table alone; NAT and FullNAT drop it). A flow
//! counts in its backend's connections ([`ConnectionCount`], IPVS's active or inactive by
//! its state) once from its insert, moves between the two with its state (only hits that
//! moved it, never a settled one: `count_moved`) and is given back once when it goes, in
//! the state it had (its backend found by identity: the snapshot may have renumbered
//! them).
//! Packets that only name a flow (ICMP errors, replies from the wrong side) read it with
//! [`CoreState::peek`], which neither refreshes nor moves it. A packet that leaves its
//! flow's state as it is (`Tracking::Settled`: past the handshake or UDP, no transition)
//! goes straight to the rewrite; only the other hits (handshake packets, transitions, hits
//! on another core's table) go through the reopen and passive-health checks
//! (`forward_moved`), which would let a settled hit through unchanged anyway.

use crate::conntrack::{
    CandidateSlot, ConnectionCount, Direction, Flow, FlowState, Hit, Prepared, Tracking, Words4,
};
use crate::family::{Family, V4};
use crate::flow::{FlowKey, ForwardMode};
use crate::report::{BackendCounters, DropReason, Stat};
use crate::sched::SchedState;
use crate::snapshot::{IfaceId, Indexed, Snapshot};
use crate::time::Instant;

use super::classify::{Class, Transport, plain_probe_at, plain_transport_at};
use super::neighbors::{BackendLine, named_hop};
use super::rewrite::{route_settled, route_transport};
use super::schedule::FirstPacket;
use super::{CoreSlot, CoreState, TCP_ACK, TCP_RST, TCP_SYN, Verdict};

impl CoreState {
    /// Finds the flow a key belongs to, here or (for replies) on another core. A hit on
    /// another core is `Moved` (its state checked as any hit's may be).
    #[inline(always)]
    fn track(
        &mut self,
        now: Instant,
        key: &FlowKey,
        prepared: Prepared,
        tcp_flags: Option<u8>,
        maybe_reply: bool,
    ) -> Tracking {
        match self.conntrack.track_settled(now, key, prepared, tcp_flags) {
            Tracking::Miss if maybe_reply => self.track_peers(now, key, prepared.hash(), tcp_flags),
            tracked => tracked,
        }
    }

    /// [`CoreState::track`] on the other cores' tables (a reply whose flow another core owns).
    #[inline(never)]
    fn track_peers(
        &mut self,
        now: Instant,
        key: &FlowKey,
        hash: u64,
        tcp_flags: Option<u8>,
    ) -> Tracking {
        for peer in &self.peers {
            if let Some(hit) = peer.track_hashed(now, key, hash, tcp_flags) {
                self.counters.add(Stat::CrossCoreHits, 1);
                return Tracking::Moved(hit);
            }
        }
        Tracking::Miss
    }

    /// [`CoreState::track`] that changes nothing (no last-seen refresh, no state move): for
    /// packets that name a flow without being part of it (ICMP errors, which anyone can
    /// forge; replies from the wrong side).
    #[inline(never)]
    pub(super) fn peek(
        &self,
        now: Instant,
        key: &FlowKey,
        hash: u64,
    ) -> Option<crate::conntrack::Hit> {
        self.conntrack
            .peek_hashed(now, key, hash)
            .or_else(|| self.peers.iter().find_map(|peer| peer.peek_hashed(now, key, hash)))
    }

    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transport(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        class: Class,
        transport: Transport,
        prepared: Prepared,
    ) -> Verdict {
        let key = transport.key;
        let hash = prepared.hash();
        debug_assert_eq!(hash, self.conntrack.hash(&key), "the hash is this key's");
        debug_assert_ne!(class, Class::Other, "the step-by-step checks took the frame");
        let maybe_reply = class != Class::ToVip;
        // With several arms, a reply comes in where its backend is reached (the way xlb sends
        // to it). One from elsewhere is forged on the client side: judged without letting it
        // refresh, advance or close the flow.
        if maybe_reply
            && snapshot.interfaces.len() > 1
            && snapshot.route(key.src_addr).is_some_and(|route| route.egress != ingress)
            && self.peek(now, &key, hash).is_some_and(|hit| hit.direction == Direction::Reply)
        {
            return Verdict::Drop(DropReason::ReplyWrongInterface);
        }
        match self.track(now, &key, prepared, transport.tcp_flags, maybe_reply) {
            // The common packet: straight on, unless its backend was taken out (rare).
            Tracking::Settled { direction, flow } => {
                let backend = backend_of(snapshot, &flow);
                if backend.is_none()
                    && rescheduled(snapshot, class == Class::ToVip, &flow, direction)
                {
                    let counted = Stat::RescheduledFlows;
                    return self
                        .schedule_anew(snapshot, now, ingress, frame, transport, hash, counted);
                }
                return self.forward_to(snapshot, now, frame, &flow, direction, backend);
            }
            Tracking::Moved(hit) => {
                return self.forward_moved(snapshot, now, ingress, frame, class, transport, &hit);
            }
            Tracking::Miss => {}
        }
        match class {
            Class::ToVip => self.new_flow(snapshot, now, ingress, frame, transport, prepared),
            Class::ToLocal => Verdict::Drop(DropReason::NoFlow),
            Class::FromNatBackend | Class::Other | Class::Ipv6 => Verdict::Pass,
        }
    }

    /// The common packet's whole way, straight through: a classified frame (`class` not
    /// [`Class::Other`], `prepared` its batch's lookup) whose prepared candidate slot holds
    /// its flow, which the packet leaves as it is: tunnelled, or forwarded by DR, NAT or
    /// FullNAT to a backend still at its index, or to a client, whose next hop is cached;
    /// and the first packet to a VIP of a key the batch proved absent (a new flow). Some
    /// verdict for those (the tunnel's, `Tx`, NAT's `ttl_exceeded` drop, the new flow's),
    /// the same verdict, bytes and counters [`CoreState::transport`] gives; None, having changed nothing the general way would
    /// not change the same (a last-seen refresh to `now`, which it repeats), for anything
    /// else: the caller then takes the general way. Kept apart so that the common packet
    /// meets none of the other cases' tests (replies on another arm, other cores' tables,
    /// reopened flows, passive health signs, unresolved next hops).
    #[inline(always)]
    pub(super) fn settled_hit(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        class: Class,
        prepared: &Prepared,
    ) -> Option<Verdict> {
        match self.settled_first(snapshot, now, ingress, frame, class, prepared) {
            SettledFirst::Answered(verdict) => Some(verdict),
            SettledFirst::General => None,
            SettledFirst::LookUp => {
                self.settled_flow_hit::<false>(snapshot, now, frame, prepared.candidate())
            }
        }
    }

    /// [`CoreState::settled_hit`] up to its lookup: whether the frame is one it looks up
    /// ([`CoreState::settled_flow_hit`]), else its answer (a new flow's first packet) or
    /// None ([`SettledFirst::General`]). A batch runs the frames it would look up in a loop
    /// of their own ([`super::Pipeline::settled_run`]).
    #[inline(always)]
    pub(super) fn settled_first(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        class: Class,
        prepared: &Prepared,
    ) -> SettledFirst {
        // A possible reply with several arms is judged by the arm it came in on (`transport`).
        if class != Class::ToVip && snapshot.interfaces.len() > 1 {
            return SettledFirst::General;
        }
        // No slot with the key's fingerprint when the batch looked: no flow to settle (the
        // settled lookup would miss), so no probe is built.
        if !prepared.has_candidate() {
            // A new flow's first packet, its key proved absent by the batch: `transport`
            // would find no flow here nor look for one elsewhere (not a reply).
            if class == Class::ToVip
                && let Some(absent) = self.conntrack.proved_absent(prepared)
                && let Some(transport) = plain_transport_at(frame)
            {
                return SettledFirst::Answered(
                    self.new_flow(snapshot, now, ingress, frame, transport, absent),
                );
            }
            return SettledFirst::General;
        }
        SettledFirst::LookUp
    }

    /// [`CoreState::settled_hit`] of a frame it would look up: classified for IPv4
    /// (`class` not [`Class::Other`] nor [`Class::Ipv6`]), to a VIP or on a one-armed box,
    /// its lookup's candidate slot `candidate` ([`Prepared::candidate`]). The same answer,
    /// and the same changes (none but a last-seen refresh when it answers None).
    #[inline(always)]
    pub(super) fn settled_flow_hit<const HOPS_FRESH: bool>(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        candidate: CandidateSlot,
    ) -> Option<Verdict> {
        let probe = plain_probe_at(frame)?;
        let (direction, words) = self.conntrack.settled_candidate(now, &probe, candidate)?;
        self.settled_words_hit::<HOPS_FRESH, false>(snapshot, now, frame, direction, words)
    }

    /// [`CoreState::settled_flow_hit`] from its lookup's answer on: the flow's `words` and
    /// the packet's `direction`. A batch's run ([`super::Pipeline::settled_run`]) looks its
    /// frames up itself, with the table's shape read once
    /// ([`crate::conntrack::SettledLookup`]), and calls this with `HOPS_FRESH` (the hop
    /// caches refreshed before the run: nothing in it changes the neighbour table, so no
    /// arm tests them again) and `DR_ANSWERED` (the run answers its DR hits itself,
    /// [`settled_dr_hit`], its mode tested first: a flow here is not DR).
    #[inline(always)]
    pub(super) fn settled_words_hit<const HOPS_FRESH: bool, const DR_ANSWERED: bool>(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        direction: Direction,
        words: Words4,
    ) -> Option<Verdict> {
        // Every mode but tunnel reads what it needs from the flow's words: the backend's
        // line confirms the backend (and gives the hop, to the backend), NAT's rewrite takes
        // its addresses and ports where they lie. DR first (the common packet: only ever the
        // original direction, a DR flow has no reply slot; only the MACs change).
        debug_assert!(!(DR_ANSWERED && words.is_dr()), "the caller answers DR hits itself");
        if !DR_ANSWERED && words.is_dr() {
            if !HOPS_FRESH {
                self.refresh_stale_hops(snapshot);
            }
            return settled_dr_hit(&self.backend_lines, &mut self.counters.backends, frame, words);
        }
        if words.is_tunnel() {
            return self.settled_tunnel(snapshot, now, frame, &words.flow()?);
        }
        // The new addresses and ports, and their change, read in each direction's arm, where
        // the direction is a constant: a reply's are the same for NAT and FullNAT, with no
        // test of the mode. `HOPS_FRESH` spares both arms the hop caches' generation test,
        // as it spares DR's.
        let (backend, hop, (addrs, ports), change) = match direction {
            Direction::Original => {
                if !HOPS_FRESH {
                    self.refresh_stale_hops(snapshot);
                }
                let (backend, hop) = self.cached_backend_hop(words)?;
                let change = words.address_change(Direction::Original);
                (backend, hop, words.translated_wire(Direction::Original), change)
            }
            Direction::Reply => {
                let backend = self.named_backend(words)?;
                let hop = self.settled_client_hop::<HOPS_FRESH>(snapshot, words.client_addr())?;
                let change = words.address_change(Direction::Reply);
                (backend, hop, words.translated_wire(Direction::Reply), change)
            }
        };
        if !route_settled(frame, words.proto()?, addrs, ports, change) {
            return Some(Verdict::Drop(DropReason::TtlExceeded));
        }
        self.count_forwarded(Some(backend), direction, frame.len() as u64);
        let header = frame.first_chunk_mut::<12>()?;
        *header = hop.addrs;
        Some(Verdict::Tx(hop.egress))
    }

    /// A hit that may have moved its flow: handshake packets and state changes (a few per
    /// connection) may reopen the flow or tell something of the backend's health; the rest
    /// go on as settled ones do. Out of line: keeps the common packet's path short.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn forward_moved(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        class: Class,
        transport: Transport,
        hit: &crate::conntrack::Hit,
    ) -> Verdict {
        if hit.state == FlowState::SynSeen || hit.state != hit.previous {
            self.count_moved(snapshot, hit);
            if hit.state == FlowState::SynSeen
                && matches!(hit.previous, FlowState::Closing | FlowState::Closed)
                && class == Class::ToVip
            {
                let hash = self.conntrack.hash(&transport.key);
                let reused = Stat::ReusedFlows;
                return self.schedule_anew(snapshot, now, ingress, frame, transport, hash, reused);
            }
            self.passive_sign(snapshot, hit, transport.tcp_flags);
        }
        if class == Class::ToVip && syn_again_to_drained(snapshot, hit, transport.tcp_flags) {
            let hash = self.conntrack.hash(&transport.key);
            let redirected = Stat::RedirectedSyns;
            return self.schedule_anew(snapshot, now, ingress, frame, transport, hash, redirected);
        }
        let backend = backend_of(snapshot, &hit.flow);
        if backend.is_none()
            && rescheduled(snapshot, class == Class::ToVip, &hit.flow, hit.direction)
        {
            let hash = self.conntrack.hash(&transport.key);
            let counted = Stat::RescheduledFlows;
            return self.schedule_anew(snapshot, now, ingress, frame, transport, hash, counted);
        }
        self.forward_to(snapshot, now, frame, &hit.flow, hit.direction, backend)
    }

    /// What a handshake packet or a state change tells about the backend's health (passive
    /// health checks):
    /// - answered: the backend's SYN-ACK (NAT, FullNAT), or the client's ACK that completes
    ///   the handshake (every mode: the client only sends it once the backend answered, so
    ///   DR, which never sees the backend's side, sees this);
    /// - unanswered: the client sent its SYN again while the flow is still embryonic — its
    ///   retransmission timer ran out with no answer (every mode; each retransmission counts);
    /// - reset: the backend's RST (NAT, FullNAT).
    #[cold]
    pub(super) fn passive_sign<F: Indexed>(
        &mut self,
        snapshot: &Snapshot,
        hit: &crate::conntrack::Hit<F>,
        tcp_flags: Option<u8>,
    ) {
        let Some(flags) = tcp_flags else { return };
        let Some(index) = backend_of(snapshot, &hit.flow) else { return };
        let Some(passive) = self.counters.passive.get_mut(index) else { return };
        let handshake = flags & (TCP_SYN | TCP_ACK | TCP_RST);
        let embryonic = hit.previous == FlowState::SynSeen;
        match hit.direction {
            Direction::Reply
                if hit.state == FlowState::Closed && hit.previous != FlowState::Closed =>
            {
                passive.resets += 1;
            }
            Direction::Reply if embryonic && handshake == TCP_SYN | TCP_ACK => {
                passive.answered += 1;
            }
            Direction::Original if embryonic && hit.state == FlowState::Established => {
                passive.answered += 1;
            }
            Direction::Original if embryonic && handshake == TCP_SYN => {
                passive.unanswered += 1;
            }
            _ => {}
        }
    }

    /// A client's packet scheduled anew, its old flow forgotten and counted as `counted`
    /// ([`CoreState::forget_counted`]):
    /// - a client SYN on a closing or closed flow's 5-tuple (the client reused its port): a
    ///   new connection, as IPVS's default `conn_reuse_mode` has it, so it counts as a
    ///   connection and may go to another backend (not under weight 0);
    /// - a client's packet of a flow whose backend its health check took out of the service
    ///   ([`rescheduled`]; a TCP segment that opens nothing then goes as any such: DR by the
    ///   service's table, NAT and FullNAT drop it).
    ///
    /// `hash` is the key's.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn schedule_anew(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        transport: Transport,
        hash: u64,
        counted: Stat,
    ) -> Verdict {
        self.forget_counted::<V4>(snapshot, &transport.key, counted);
        self.new_flow(snapshot, now, ingress, frame, transport, Prepared::new(hash))
    }

    /// Out of line: keeps the hit path (which calls it on a miss) small. `prepared` is the
    /// lookup of `transport.key` that just missed (its hash is `self.conntrack.hash(&transport.key)`):
    /// the insert starts from what it proved. The scheduling is both families' step
    /// ([`CoreState::schedule`]); the first packet goes on IPv4's way (the hop caches).
    #[inline(never)]
    fn new_flow(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        _ingress: IfaceId,
        frame: &mut [u8],
        transport: Transport,
        prepared: Prepared,
    ) -> Verdict {
        let (key, tcp_flags) = (&transport.key, transport.tcp_flags);
        let first = FirstToBackend { snapshot, now, frame };
        self.schedule::<V4>(snapshot, now, key, tcp_flags, prepared, first)
    }

    /// Rewrites a tracked packet for its direction and sends it to its next hop; `backend`
    /// is the flow's in this snapshot ([`backend_of`] the flow).
    #[inline(always)]
    fn forward_to(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
        direction: Direction,
        backend: Option<usize>,
    ) -> Verdict {
        // DR leaves the IP packet as it is: only the Ethernet header changes (an L2 forward,
        // as IPVS DR: the TTL too). NAT and FullNAT route: the TTL goes down by one, and a
        // packet that arrives with 1 expires here.
        if flow.forward != ForwardMode::Dr {
            if flow.forward == ForwardMode::Tunnel {
                return self.tunnel(snapshot, now, frame, flow);
            }
            let (src, dst) = translate(flow, direction);
            if !route_transport(frame, flow.proto, src, dst) {
                return Verdict::Drop(DropReason::TtlExceeded);
            }
        }
        self.count_forwarded(backend, direction, frame.len() as u64);
        // The common case, to a backend or client whose next hop is known: what `deliver`
        // and `send` would do, from the hop caches alone.
        let hop = match direction {
            Direction::Original => backend.and_then(|index| self.backend_hop(snapshot, index)),
            Direction::Reply => self.client_hop(snapshot, flow.client_addr),
        };
        if let Some(hop) = hop
            && let Some(header) = frame.first_chunk_mut::<12>()
        {
            *header = hop.addrs;
            return Verdict::Tx(hop.egress);
        }
        self.deliver(snapshot, now, frame, flow, direction, backend)
    }
}

/// What [`CoreState::settled_first`] made of a frame.
pub(super) enum SettledFirst {
    /// Answered without a lookup (a new flow's first packet).
    Answered(Verdict),
    /// Not one [`CoreState::settled_hit`] answers: the general way takes it.
    General,
    /// One [`CoreState::settled_flow_hit`] looks up.
    LookUp,
}

/// IPv4's way to send a new flow's first packet ([`FirstPacket`]): forwarded to the
/// backend just picked from this snapshot, its index known (no check of its identity).
struct FirstToBackend<'a> {
    snapshot: &'a Snapshot,
    now: Instant,
    frame: &'a mut [u8],
}

impl FirstPacket<V4> for FirstToBackend<'_> {
    #[inline(always)]
    fn send(self, core: &mut CoreState, flow: &Flow, backend: usize) -> Verdict {
        let FirstToBackend { snapshot, now, frame } = self;
        core.forward_to(snapshot, now, frame, flow, Direction::Original, Some(backend))
    }
}

impl CoreState {
    /// Counts a flow just tracked in `state`: a new flow, one more connection of its
    /// backend (inactive, IPVS's way, until its handshake completes; UDP for good).
    #[inline(always)]
    pub(super) fn count_new_flow(&mut self, backend_index: usize, state: FlowState) {
        self.counters.add(Stat::NewFlows, 1);
        if let Some(count) = self.connections.get_mut(backend_index) {
            count.open(state);
        }
        if let Some(counters) = self.counters.backend(backend_index) {
            counters.connections += 1;
        }
    }

    /// Counts a forwarded packet of `bytes` for its backend (when still in the snapshot):
    /// in towards it, out from it.
    #[inline(always)]
    pub(super) fn count_forwarded(
        &mut self,
        backend: Option<usize>,
        direction: Direction,
        bytes: u64,
    ) {
        if let Some(counters) = backend.and_then(|index| self.counters.backend(index)) {
            match direction {
                Direction::Original => {
                    counters.in_packets += 1;
                    counters.in_bytes += bytes;
                }
                Direction::Reply => {
                    counters.out_packets += 1;
                    counters.out_bytes += bytes;
                }
            }
        }
    }

    /// Counts an ICMP(v6) "unreachable" about the backend's side of a flow, for passive
    /// health checks: only one that came back from the backend (`direction` Reply).
    pub(super) fn count_unreachable(&mut self, backend: Option<usize>, direction: Direction) {
        if direction == Direction::Reply
            && let Some(passive) = backend.and_then(|i| self.counters.passive.get_mut(i))
        {
            passive.unreachable += 1;
        }
    }
}

/// A DR flow's settled hit ([`CoreState::settled_words_hit`]'s DR part), from the backend
/// lines and the per-backend counters as slices (a batch's run,
/// [`super::Pipeline::settled_run`], borrows them from its core for its DR hits alone): the
/// flow's backend and its cached hop ([`named_hop`]), the frame's MACs rewritten, counted
/// in towards the backend (as [`CoreState::count_forwarded`] counts the original
/// direction). None when the line does not name the backend, its hop is unknown or the
/// frame is shorter than its MACs (the general way then decides). The caller has refreshed
/// the hop caches ([`CoreState::refresh_stale_hops`]).
#[inline(always)]
pub(super) fn settled_dr_hit(
    lines: &[BackendLine],
    counters: &mut [BackendCounters],
    frame: &mut [u8],
    words: Words4,
) -> Option<Verdict> {
    let hop = named_hop(lines, words)?;
    // The MACs written before the counters are added: the hop is then used at once, not
    // kept (on the stack) across the counters' update.
    let header = frame.first_chunk_mut::<12>()?;
    *header = hop.addrs;
    if let Some(counters) = counters.get_mut(words.backend_hint()) {
        counters.in_packets += 1;
        counters.in_bytes += frame.len() as u64;
    }
    Some(Verdict::Tx(hop.egress))
}

/// The flow a packet `key` to a VIP opens: its client and VIP from the key, its backend
/// address:port, its local address:port (FullNAT; else the client's), its service and
/// backend indices (hints).
#[inline(always)]
pub(super) fn opened<F: Family>(
    key: &FlowKey<F>,
    forward: ForwardMode,
    backend: (F::Addr, u16),
    local: (F::Addr, u16),
    (service, backend_index): (usize, usize),
) -> Flow<F> {
    Flow {
        proto: key.proto,
        forward,
        client_addr: key.src_addr,
        client_port: key.src_port,
        vip: key.dst_addr,
        vport: key.dst_port,
        backend_addr: backend.0,
        backend_port: backend.1,
        local_addr: local.0,
        local_port: local.1,
        service: service as u16,
        backend: backend_index as u16,
    }
}

/// Whether service `new` of `after` schedules exactly as service `old` of `before`: the
/// same kind over the same backends (by identity and weight, in the same order).
pub(super) fn same_schedule(before: &Snapshot, old: usize, after: &Snapshot, new: usize) -> bool {
    let (Some(old_service), Some(new_service)) =
        (before.services.get(old), after.services.get(new))
    else {
        return false;
    };
    let weighed = |snapshot: &Snapshot, service: usize| {
        snapshot.service_backends(service).iter().map(|b| (b.id, b.weight)).collect::<Vec<_>>()
    };
    old_service.scheduler.kind() == new_service.scheduler.kind()
        && weighed(before, old) == weighed(after, new)
}

pub(super) fn sched_states(snapshot: &Snapshot, slot: CoreSlot) -> Vec<SchedState> {
    snapshot
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| SchedState::new(s.backends.len(), (u64::from(slot.index) << 32) | i as u64))
        .collect()
}

/// Forgets a flow removed in `state` from its backend's connections (found by identity: the
/// snapshot may have renumbered the backends since the flow began; a backend gone has no
/// count left to change).
pub(super) fn release_backend<F: Indexed>(
    snapshot: &Snapshot,
    connections: &mut [ConnectionCount],
    flow: &Flow<F>,
    state: FlowState,
) {
    let index = snapshot.backend_of_flow(flow);
    if let Some(count) = index.and_then(|index| connections.get_mut(index)) {
        count.close(state);
    }
}

impl CoreState {
    /// A hit that moved its flow from one state to another: across IPVS's active/inactive
    /// line, its backend's counts move with it (on this core's counts, whichever core's
    /// table holds the flow: see [`ConnectionCount`]). Only for hits that moved (never a
    /// settled one).
    #[inline]
    pub(super) fn count_moved<F: Indexed>(&mut self, snapshot: &Snapshot, hit: &Hit<F>) {
        if hit.previous.is_active() != hit.state.is_active()
            && let Some(index) = backend_of(snapshot, &hit.flow)
            && let Some(count) = self.connections.get_mut(index)
        {
            count.moved(hit.previous, hit.state);
        }
    }
}

/// The flow's backend index in this snapshot, by its hint or, once renumbered, its identity.
#[inline]
pub(super) fn backend_of<F: Indexed>(snapshot: &Snapshot, flow: &Flow<F>) -> Option<usize> {
    snapshot.backend_of_flow(flow)
}

/// True if a packet of `flow` (to a VIP if `to_vip`, going `direction`), whose backend is in
/// the snapshot no more, is to be scheduled anew: a client's packet to a VIP, the backend
/// taken out by its health check ([`Snapshot::reschedules`]). Any other packet of a flow whose
/// backend is gone goes where the flow says (an operator's removal lets flows finish, as
/// IPVS's by default).
#[inline]
pub(super) fn rescheduled<F: Indexed>(
    snapshot: &Snapshot,
    to_vip: bool,
    flow: &Flow<F>,
    direction: Direction,
) -> bool {
    to_vip && direction == Direction::Original && snapshot.reschedules(flow)
}

/// True if `hit` is a client's bare SYN on a flow it did not reopen (embryonic: the
/// handshake not completed; or established) whose backend is drained (weight 0) or down:
/// its packet is then scheduled anew ([`Stat::RedirectedSyns`]), so a drained backend gets
/// no new connection through an old entry, as IPVS's with `expire_nodest_conn` has it. The
/// client sends such a SYN only when it has no connection on that flow to keep: a
/// retransmission the backend never answered, or a new connection from a port the client
/// used before for one the backend refused or reset. In DR that RST goes straight to the
/// client, so the flow here stays embryonic or established (lab operate once sent such a
/// SYN to the stopped, drained rs1). A spoofer who knows the 5-tuple gains nothing new: a
/// forged RST then SYN already reopens any flow (`conn_reuse_mode`).
#[inline]
pub(super) fn syn_again_to_drained<F: Indexed>(
    snapshot: &Snapshot,
    hit: &crate::conntrack::Hit<F>,
    tcp_flags: Option<u8>,
) -> bool {
    tcp_flags.is_some_and(|flags| flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN)
        && hit.direction == Direction::Original
        && matches!(hit.previous, FlowState::SynSeen | FlowState::Established)
        && hit.state == hit.previous
        && drained(snapshot, &hit.flow)
}

/// True if `flow`'s backend is in the snapshot drained (weight 0) or down.
#[cold]
fn drained<F: Indexed>(snapshot: &Snapshot, flow: &Flow<F>) -> bool {
    backend_of(snapshot, flow)
        .and_then(|index| snapshot.backends.get(index))
        .is_some_and(|backend| backend.weight == 0 || backend.down)
}

/// Source and destination a packet of `direction` leaves with.
#[inline]
#[allow(clippy::type_complexity)]
pub(super) fn translate<F: Family>(
    flow: &Flow<F>,
    direction: Direction,
) -> ((F::Addr, u16), (F::Addr, u16)) {
    let client = (flow.client_addr, flow.client_port);
    let vip = (flow.vip, flow.vport);
    let backend = (flow.backend_addr, flow.backend_port);
    let local = (flow.local_addr, flow.local_port);
    match (flow.forward, direction) {
        (ForwardMode::Dr | ForwardMode::Tunnel, Direction::Original) => (client, vip),
        (ForwardMode::Dr | ForwardMode::Tunnel, Direction::Reply) => (vip, client),
        (ForwardMode::Nat, Direction::Original) => (client, backend),
        (ForwardMode::Nat, Direction::Reply) => (vip, client),
        (ForwardMode::FullNat, Direction::Original) => (local, backend),
        (ForwardMode::FullNat, Direction::Reply) => (vip, client),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;
    use crate::flow::Proto;

    /// A client that reuses its port after closing a connection opens a new one: counted as
    /// a connection and scheduled anew (IPVS's `conn_reuse_mode`); a SYN retransmitted on a
    /// live flow is not.
    #[test]
    fn a_syn_reusing_a_closed_flows_port_is_a_new_connection() {
        use crate::testkit::{self, ACK, FIN_ACK, RST, SYN};
        let extra = "[[neighbor]]\nip = \"10.1.1.11\"\nmac = \"02:00:00:00:00:11\"\n";
        let mut pipeline = Pipeline::new(
            one_service_snapshot("02:00:00:00:00:10", extra, "dr", 80),
            CoreSlot::SINGLE,
        );
        let mut send = |flags| {
            let mut frame = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, flags, b"");
            pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame)
        };
        for flags in [SYN, SYN, ACK, FIN_ACK, SYN, ACK, RST, SYN] {
            assert_eq!(send(flags), Verdict::Tx(IfaceId(0)));
        }
        let counters = pipeline.counters();
        assert_eq!(counters.backends[0].connections, 3, "opened, reopened after FIN and RST");
        assert_eq!(counters.get(Stat::ReusedFlows), 2);
        assert_eq!(pipeline.conntrack().len(), 1);
    }

    /// NAT lets xlb see the backend's side: a first answer, a reset and an ICMP
    /// unreachable from the backend are counted for passive health checks, once each; a
    /// client's SYN sent again on an unanswered flow counts as unanswered.
    #[test]
    fn passive_signs_of_a_backend_are_counted() {
        use crate::report::PassiveCounters;
        use crate::testkit::{self, ACK, RST, SYN, SYN_ACK};
        let mut pipeline = Pipeline::new(nat_snapshot("02:00:00:00:00:10"), CoreSlot::SINGLE);
        pipeline.learn_neighbor(Instant::from_nanos(1), CLIENT.ip, CLIENT.mac);
        let now = Instant::from_secs(1);
        let mut send = |frame: &mut Vec<u8>| pipeline.process(now, IfaceId(0), frame);
        let client =
            |port, flags| testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, port), VIP, flags, b"");
        let backend = |port, flags| {
            testkit::tcp(RS.mac, LB.mac, (RS.ip, 8080), (CLIENT.ip, port), flags, b"")
        };
        // Flow 1 is answered (twice: counted once); flow 2 is reset.
        for mut frame in [client(4001, SYN), backend(4001, SYN_ACK), backend(4001, ACK)] {
            assert_eq!(send(&mut frame), Verdict::Tx(IfaceId(0)));
        }
        for mut frame in [client(4002, SYN), backend(4002, RST)] {
            assert_eq!(send(&mut frame), Verdict::Tx(IfaceId(0)));
        }
        // Flow 3: the backend's host says the port is unreachable (about the SYN xlb sent).
        let mut syn = client(4003, SYN);
        assert_eq!(send(&mut syn), Verdict::Tx(IfaceId(0)));
        let mut error = testkit::icmp_port_unreachable(RS.mac, LB.mac, RS.ip, CLIENT.ip, &syn);
        assert_eq!(send(&mut error), Verdict::Tx(IfaceId(0)));
        // Fragmentation needed is about the path, not the backend: not counted.
        let mut mtu = testkit::icmp_frag_needed(RS.mac, LB.mac, RS.ip, CLIENT.ip, 1400, &syn, 8);
        assert_eq!(send(&mut mtu), Verdict::Tx(IfaceId(0)));
        // Flow 4: the client's retransmission timer runs out twice.
        for mut frame in [client(4004, SYN), client(4004, SYN), client(4004, SYN)] {
            assert_eq!(send(&mut frame), Verdict::Tx(IfaceId(0)));
        }
        let passive = pipeline.counters().passive[0];
        let expected = PassiveCounters { answered: 1, unanswered: 2, resets: 1, unreachable: 1 };
        assert_eq!(passive, expected);
    }

    /// DR never sees the backend's side, yet the client's side tells: the ACK that completes
    /// a handshake means the backend answered; a SYN sent again means it did not (yet).
    #[test]
    fn passive_signs_in_dr_come_from_the_client_side() {
        use crate::report::PassiveCounters;
        use crate::testkit::{self, ACK, FIN_ACK, SYN};
        let mut pipeline = Pipeline::new(dr_snapshot("02:00:00:00:00:10"), CoreSlot::SINGLE);
        pipeline.learn_neighbor(Instant::from_nanos(1), RS.ip, RS.mac);
        let now = Instant::from_secs(1);
        let mut send = |frame: &mut Vec<u8>| pipeline.process(now, IfaceId(0), frame);
        let client =
            |port, flags| testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, port), VIP, flags, b"");
        let frames = [
            // Answered: the handshake completes; later packets and the close say nothing.
            client(5001, SYN),
            client(5001, ACK),
            client(5001, ACK),
            client(5001, FIN_ACK),
            // Unanswered once, then answered.
            client(5002, SYN),
            client(5002, SYN),
            client(5002, ACK),
            // A SYN on an established flow is not a retransmission of an unanswered one.
            client(5001, SYN),
        ];
        for mut frame in frames {
            assert_eq!(send(&mut frame), Verdict::Tx(IfaceId(0)));
        }
        let passive = pipeline.counters().passive[0];
        let expected = PassiveCounters { answered: 2, unanswered: 1, resets: 0, unreachable: 0 };
        assert_eq!(passive, expected);
    }

    /// DR services at 10.1.1.100:80 and 10.1.1.101:80 with the given backends (last octets,
    /// port 80), each backend's MAC static; a small connection table.
    fn services_snapshot(services: &[(u8, &[u8])], generation: u64) -> Arc<Snapshot> {
        scheduled_snapshot("rr", services, generation)
    }

    /// A config's start: one interface 10.1.1.10/24 (MAC ...:10), a 64-flow table and a
    /// neighbour 10.1.1.N (MAC ...:N) for each N of `octets`.
    fn box_with_neighbors(octets: std::ops::RangeInclusive<u8>) -> String {
        let mut text = String::from(
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\nmac = \"02:00:00:00:00:10\"\n\
             [conntrack]\ncapacity = 64\n",
        );
        for octet in octets {
            text += &format!(
                "[[neighbor]]\nip = \"10.1.1.{octet}\"\nmac = \"02:00:00:00:00:{octet}\"\n"
            );
        }
        text
    }

    /// [`services_snapshot`] with another scheduler.
    fn scheduled_snapshot(
        scheduler: &str,
        services: &[(u8, &[u8])],
        generation: u64,
    ) -> Arc<Snapshot> {
        let mut text = box_with_neighbors(11..=14);
        for (vip, backends) in services {
            text += &format!(
                "[[service]]\nvip = \"10.1.1.{vip}\"\nport = 80\nforward = \"dr\"\nscheduler = \"{scheduler}\"\n"
            );
            for backend in *backends {
                text += &format!("[[service.backend]]\naddr = \"10.1.1.{backend}\"\nport = 80\n");
            }
        }
        let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, generation).expect("builds"))
    }

    /// Per-backend state follows the backend's identity (its service's VIP:port/proto and its
    /// address:port), not its position: after a change renumbers the backends, a flow's
    /// packets count for its own backend (not for another service's backend of the same
    /// address that took its old index), and its end gives its backend's active count back.
    #[test]
    fn backend_accounting_follows_identity_across_renumbering() {
        use crate::testkit::{self, ACK, RST, SYN};
        let second_vip = (Ipv4Addr::new(10, 1, 1, 101), 80);
        let position = |snapshot: &Snapshot, vip: u8, backend: u8| {
            let service =
                snapshot.service_at(Ipv4Addr::new(10, 1, 1, vip), 80, Proto::Tcp).unwrap();
            snapshot.services[service]
                .backends
                .clone()
                .find(|&i| snapshot.backends[i].addr == Ipv4Addr::new(10, 1, 1, backend))
                .unwrap()
        };
        // Renumbered twice: a backend of the same address lands on the second service's
        // index, then the first service is deleted.
        let before = services_snapshot(&[(100, &[12, 11]), (101, &[11])], 1);
        let inserted = services_snapshot(&[(100, &[12, 13, 11]), (101, &[11])], 2);
        let deleted = services_snapshot(&[(101, &[11])], 3);
        let mut pipeline = Pipeline::new(before.clone(), CoreSlot::SINGLE);
        let send = |pipeline: &mut Pipeline, port, flags| {
            let mut frame =
                testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, port), second_vip, flags, b"x");
            pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame)
        };
        for port in 4000..4003 {
            assert_eq!(send(&mut pipeline, port, SYN), Verdict::Tx(IfaceId(0)));
            assert_eq!(send(&mut pipeline, port, ACK), Verdict::Tx(IfaceId(0)));
        }
        let connections = pipeline.connections()[position(&before, 101, 11)];
        assert_eq!(connections, ConnectionCount { active: 3, inactive: 0 });

        for (snapshot, port) in [(&inserted, 4000), (&deleted, 4001)] {
            pipeline.set_snapshot(snapshot.clone());
            let own = position(snapshot, 101, 11);
            let in_packets = |p: &Pipeline, i: usize| p.counters().backends[i].in_packets;
            let (own_before, all_before): (u64, u64) = (
                in_packets(&pipeline, own),
                (0..snapshot.backends.len()).map(|i| in_packets(&pipeline, i)).sum(),
            );
            assert_eq!(send(&mut pipeline, port, ACK), Verdict::Tx(IfaceId(0)));
            assert_eq!(in_packets(&pipeline, own), own_before + 1, "counted for its backend");
            let all: u64 = (0..snapshot.backends.len()).map(|i| in_packets(&pipeline, i)).sum();
            assert_eq!(all, all_before + 1, "and for no other");
            // The client resets the flow; it expires and gives its active count back.
            assert_eq!(send(&mut pipeline, port, RST), Verdict::Tx(IfaceId(0)));
            for second in 2..40 {
                pipeline.maintain(Instant::from_secs(second * 10));
            }
            let left = 4002 - i32::from(port);
            let connections = pipeline.connections()[own];
            assert_eq!(connections, ConnectionCount { active: left, inactive: 0 }, "{port}");
            let others = (0..snapshot.backends.len()).filter(|&i| i != own);
            assert!(others.map(|i| pipeline.connections()[i]).all(|c| c == Default::default()));
        }
    }

    /// A flow whose backend its health check took out of the service (`on_failure =
    /// "remove"`: [`Snapshot::reschedules`]) is scheduled anew on its client's next packet,
    /// and counted, as IPVS's `expire_nodest_conn` has it, in DR and tunnel mode alike (the
    /// tunnel's settled hit leaves it to the general way): a UDP client with a fixed port (a
    /// resolver) moves to a live backend and stays there; a TCP segment that opens nothing
    /// goes by the service's table (to a live backend, which resets it). A flow whose
    /// backend the operator removed goes on where it was, as IPVS's by default.
    #[test]
    fn flows_of_a_backend_its_health_check_removed_are_rescheduled() {
        use crate::snapshot::BackendId;
        use crate::testkit::{self, ACK, SYN};
        let vip = (Ipv4Addr::new(10, 1, 1, 100), 80);
        let snapshot = |forward: &str, backends: &[u8]| {
            let mut text = box_with_neighbors(11..=12);
            for proto in ["tcp", "udp"] {
                text += &format!(
                    "[[service]]\nvip = \"10.1.1.100\"\nport = 80\nproto = \"{proto}\"\n\
                     forward = \"{forward}\"\n"
                );
                for backend in backends {
                    text += &format!("[[service.backend]]\naddr = \"10.1.1.{backend}\"\n");
                }
            }
            let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
            Snapshot::build(&config, 1).expect("builds")
        };
        let gone = |proto| BackendId {
            vip: vip.0.into(),
            vport: 80,
            proto,
            addr: Ipv4Addr::new(10, 1, 1, 11).into(),
            port: 80,
        };
        // The last octet of the backend in the snapshot whose packets in rose by one: the
        // packet's; 0 for none (a backend no longer in the snapshot).
        let went = |pipeline: &mut Pipeline, mut frame: Vec<u8>| {
            let in_packets = |p: &Pipeline| -> Vec<u64> {
                p.counters().backends.iter().map(|b| b.in_packets).collect()
            };
            let before = in_packets(pipeline);
            let verdict = pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame);
            assert!(matches!(verdict, Verdict::Tx(_) | Verdict::Encapsulated), "{verdict:?}");
            pipeline.drain_emitted(|_, _| {});
            let after = in_packets(pipeline);
            let rose = (0..after.len()).find(|&i| after[i] > before[i]);
            rose.map_or(0, |i| match pipeline.snapshot().backends[i].addr {
                std::net::IpAddr::V4(addr) => addr.octets()[3],
                std::net::IpAddr::V6(_) => 0,
            })
        };
        let udp = |port| testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, port), vip, b"q");
        let tcp =
            |port, flags| testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, port), vip, flags, b"");
        for forward in ["dr", "tunnel"] {
            // (removed by its health check, where the flows' next packets go)
            for (by_health, expected) in [(false, 0), (true, 12)] {
                let case = format!("{forward}, by health: {by_health}");
                let before = Arc::new(snapshot(forward, &[11, 12]));
                let mut pipeline = Pipeline::new(before, CoreSlot::SINGLE);
                let udp_port = (5000..).find(|&port| went(&mut pipeline, udp(port)) == 11).unwrap();
                let tcp_port = (6000..).find(|&port| went(&mut pipeline, tcp(port, SYN)) == 11);
                let tcp_port = tcp_port.unwrap();
                assert_eq!(went(&mut pipeline, tcp(tcp_port, ACK)), 11, "{case}");
                let mut after = snapshot(forward, &[12]);
                if by_health {
                    after.set_rescheduled([gone(Proto::Udp), gone(Proto::Tcp)]);
                }
                pipeline.set_snapshot(Arc::new(after));
                for round in 0..3 {
                    assert_eq!(went(&mut pipeline, udp(udp_port)), expected, "{case}: {round}");
                    let ack = tcp(tcp_port, ACK);
                    assert_eq!(went(&mut pipeline, ack), expected, "{case}: {round}");
                }
                // UDP's once (its new flow settles on 12); TCP's once (its ACK opens none).
                let rescheduled = pipeline.counters().get(Stat::RescheduledFlows);
                assert_eq!(rescheduled, if by_health { 2 } else { 0 }, "{case}");
            }
        }
    }

    /// A DR rr service 10.1.1.100:80 (with the `service` settings) over 10.1.1.11, of
    /// weight `weight_of_11`, and 10.1.1.12.
    fn drained_pair(service: &str, weight_of_11: u32, generation: u64) -> Arc<Snapshot> {
        let mut text = box_with_neighbors(11..=12);
        text += &format!(
            "[[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"dr\"\n\
             scheduler = \"rr\"\n{service}[[service.backend]]\naddr = \"10.1.1.11\"\n\
             port = 80\nweight = {weight_of_11}\n[[service.backend]]\naddr = \"10.1.1.12\"\n\
             port = 80\n"
        );
        let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, generation).expect("builds"))
    }

    /// A client's bare SYN on an embryonic or established flow goes where the flow says while
    /// its backend takes connections (a retransmission; a SYN does not reset a live flow),
    /// and is scheduled anew once that backend is drained (weight 0): the client has no
    /// connection there to keep. In DR a backend's RST goes straight to the client, so a
    /// port the client reuses after a refused or reset connection still finds the old flow
    /// here (lab operate once sent such a SYN to the stopped, drained backend). The drained
    /// backend's established flows keep it for everything else.
    #[test]
    fn a_clients_syn_on_a_flow_of_a_drained_backend_is_scheduled_anew() {
        use crate::testkit::{ACK, FIN_ACK, SYN, SYN_ACK};
        let snapshot = |weight_of_11, generation| drained_pair("", weight_of_11, generation);
        let mut pipeline = Pipeline::new(snapshot(1, 1), CoreSlot::SINGLE);
        let mut on_11 = |from: u16, established: bool| {
            let port = (from..).find(|&port| picked(&mut pipeline, port) == 0x11).unwrap();
            if established {
                assert_eq!(send_to_vip(&mut pipeline, port, ACK), 0x11);
            }
            port
        };
        let (embryonic, established, kept) =
            (on_11(5000, false), on_11(6000, true), on_11(7000, true));
        // Taking connections: the SYNs go where their flows say.
        for port in [embryonic, established] {
            assert_eq!(send_to_vip(&mut pipeline, port, SYN), 0x11, "{port}");
        }
        assert_eq!(pipeline.counters().get(Stat::RedirectedSyns), 0);
        pipeline.set_snapshot(snapshot(0, 2));
        // Drained: each SYN goes to .12, and its flow stays there.
        for (port, redirected) in [(embryonic, 1), (established, 2)] {
            assert_eq!(send_to_vip(&mut pipeline, port, SYN), 0x12, "{port}");
            assert_eq!(pipeline.counters().get(Stat::RedirectedSyns), redirected);
            for flags in [SYN, ACK, ACK] {
                assert_eq!(send_to_vip(&mut pipeline, port, flags), 0x12, "{port} {flags:?}");
            }
        }
        // The other established flow stays on .11 (a SYN-ACK opens nothing).
        for flags in [ACK, SYN_ACK, ACK, FIN_ACK] {
            assert_eq!(send_to_vip(&mut pipeline, kept, flags), 0x11, "{flags:?}");
        }
        assert_eq!(pipeline.counters().get(Stat::RedirectedSyns), 2);
        // The moved flows' connections given back by .11 and counted on .12.
        let connections = pipeline.connections().to_vec();
        let index = |octet| {
            let addr = std::net::IpAddr::from(Ipv4Addr::new(10, 1, 1, octet));
            pipeline.snapshot().backends.iter().position(|b| b.addr == addr).unwrap()
        };
        assert_eq!(connections[index(11)], ConnectionCount { active: 0, inactive: 1 });
        assert_eq!(connections[index(12)].active, 2);
    }

    /// A persistent service's drained backend keeps its persistent clients (IPVS's
    /// `expire_quiescent_template` at 0): the SYN scheduled anew follows the client's
    /// template back to it.
    #[test]
    fn a_syn_scheduled_anew_follows_its_clients_template() {
        use crate::testkit::SYN;
        let persistent = "persistence = 300\n";
        let snapshot =
            |weight_of_11, generation| drained_pair(persistent, weight_of_11, generation);
        let mut pipeline = Pipeline::new(snapshot(1, 1), CoreSlot::SINGLE);
        assert_eq!(picked(&mut pipeline, 5000), 0x11, "rr's first pick: the template's");
        pipeline.set_snapshot(snapshot(0, 2));
        assert_eq!(send_to_vip(&mut pipeline, 5000, SYN), 0x11);
        assert_eq!(pipeline.counters().get(Stat::RedirectedSyns), 1);
    }

    /// The backend (last octet of its MAC) a new flow from `port` to 10.1.1.100:80 goes to.
    fn picked(pipeline: &mut Pipeline, port: u16) -> u8 {
        send_to_vip(pipeline, port, crate::testkit::SYN)
    }

    /// [`picked`], the client's ACK following (the connection established: active).
    fn picked_established(pipeline: &mut Pipeline, port: u16) -> u8 {
        let backend = picked(pipeline, port);
        assert_eq!(send_to_vip(pipeline, port, crate::testkit::ACK), backend);
        backend
    }

    /// The backend (last octet of the MAC) a packet with `flags` from `port` to
    /// 10.1.1.100:80 goes to.
    fn send_to_vip(pipeline: &mut Pipeline, port: u16, flags: crate::testkit::Flags) -> u8 {
        let vip = (Ipv4Addr::new(10, 1, 1, 100), 80);
        let mut frame = crate::testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, port), vip, flags, b"");
        assert_eq!(
            pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame),
            Verdict::Tx(IfaceId(0))
        );
        frame[5]
    }

    /// A snapshot swap keeps the scheduler state of a service it leaves unchanged: `rr`
    /// goes on with the next backend instead of starting over (issue 10: every republish
    /// sent the next flow to the same backend again).
    #[test]
    fn an_unchanged_service_keeps_its_scheduler_state_across_a_swap() {
        let services: &[(u8, &[u8])] = &[(100, &[11, 12, 13])];
        let mut pipeline = Pipeline::new(services_snapshot(services, 1), CoreSlot::SINGLE);
        let mut seen = vec![picked(&mut pipeline, 5000), picked(&mut pipeline, 5001)];
        pipeline.set_snapshot(services_snapshot(services, 2));
        seen.push(picked(&mut pipeline, 5002));
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, [0x11, 0x12, 0x13], "rr over three backends: {seen:x?}");
        // A changed service starts over (its backends changed), and still picks validly.
        pipeline.set_snapshot(services_snapshot(&[(100, &[11, 12])], 3));
        assert!([0x11, 0x12].contains(&picked(&mut pipeline, 5003)));
    }

    /// Response times reach the least-time scheduler without a new snapshot.
    #[test]
    fn least_time_follows_response_times_without_a_snapshot() {
        let snapshot = scheduled_snapshot("lt", &[(100, &[11, 12])], 1);
        let mut pipeline = Pipeline::new(snapshot, CoreSlot::SINGLE);
        pipeline.set_response_times(1, &[1000, 10]);
        assert_eq!(picked(&mut pipeline, 6000), 0x12);
        pipeline.set_response_times(1, &[10, 1000]);
        assert_eq!(picked(&mut pipeline, 6001), 0x11);
        // Times for another generation, or of another length, are not this snapshot's.
        pipeline.set_response_times(2, &[1000, 10]);
        pipeline.set_response_times(1, &[1000]);
        assert_eq!(picked(&mut pipeline, 6002), 0x11);
        assert_eq!(pipeline.snapshot().generation, 1);
    }

    /// lc and wlc weigh connections as IPVS does (`active * 256 + inactive`), with the
    /// counts moving with the TCP states: a backend holding 20 closing connections (FIN
    /// seen: IPVS's FIN_WAIT/TIME_WAIT, inactive) is less loaded than one holding a single
    /// established one. Counting every flow alike (as xlb did) would pick the other way.
    #[test]
    fn lc_and_wlc_weigh_closing_connections_as_ipvs_does() {
        use crate::testkit::FIN_ACK;
        for kind in ["lc", "wlc"] {
            let first = scheduled_snapshot(kind, &[(100, &[11])], 1);
            let mut pipeline = Pipeline::new(first, CoreSlot::SINGLE);
            for port in 9000..9020 {
                assert_eq!(picked_established(&mut pipeline, port), 0x11, "{kind}");
                assert_eq!(send_to_vip(&mut pipeline, port, FIN_ACK), 0x11, "{kind}");
            }
            assert_eq!(pipeline.connections(), [ConnectionCount { active: 0, inactive: 20 }]);
            // .12 joins: its first connection (0 against 20) ...
            let both = scheduled_snapshot(kind, &[(100, &[11, 12])], 2);
            let index = |octet| {
                let addr = std::net::IpAddr::from(Ipv4Addr::new(10, 1, 1, octet));
                both.backends.iter().position(|b| b.addr == addr)
            };
            let (eleven, twelve) = (index(11).unwrap(), index(12).unwrap());
            pipeline.set_snapshot(both);
            assert_eq!(picked_established(&mut pipeline, 9100), 0x12, "{kind}");
            // ... established, costs 256; .11's twenty closing ones cost 20.
            assert_eq!(pipeline.connections()[eleven], ConnectionCount { active: 0, inactive: 20 });
            assert_eq!(pipeline.connections()[twelve], ConnectionCount { active: 1, inactive: 0 });
            assert_eq!(picked(&mut pipeline, 9101), 0x11, "{kind}");
            assert_eq!(picked(&mut pipeline, 9102), 0x11, "{kind}");
            // The SYNs count inactive until their handshakes complete.
            assert_eq!(pipeline.connections()[eleven], ConnectionCount { active: 0, inactive: 22 });
            assert_eq!(send_to_vip(&mut pipeline, 9101, crate::testkit::ACK), 0x11);
            assert_eq!(pipeline.connections()[eleven], ConnectionCount { active: 1, inactive: 21 });
        }
    }

    /// A two-core NAT box: (the snapshot, core 0, core 1), each core reading the other's
    /// table for replies; tables of 64 flows (one `maintain` sweeps them whole).
    fn two_core_nat() -> (Arc<Snapshot>, Pipeline, Pipeline) {
        let extra = "gateway = \"10.1.1.1\"\n[[neighbor]]\nip = \"10.1.1.11\"\n\
                     mac = \"02:00:00:00:00:11\"\n[conntrack]\ncapacity = 64\n";
        let snapshot = one_service_snapshot("02:00:00:00:00:10", extra, "nat", 8080);
        let mut cores =
            [0, 1].map(|index| Pipeline::new(snapshot.clone(), CoreSlot { index, count: 2 }));
        let readers = [cores[1].conntrack_reader(), cores[0].conntrack_reader()];
        for (core, reader) in cores.iter_mut().zip(readers) {
            core.set_peers(vec![reader]);
        }
        let [zero, one] = cores;
        (snapshot, zero, one)
    }

    proptest::proptest! {
        /// What the schedulers read is what `-L -n` and the metrics show: after any packets
        /// of a few NAT connections (either side, any flags, each landing on either core, so
        /// replies move flows another core owns), with time passing and expired flows swept,
        /// the cores' connection counts summed equal the count of the tables by
        /// [`FlowState::is_active`] (`stats::Tables::count`).
        #[test]
        fn the_schedulers_counts_are_the_listings_counts(
            packets in proptest::collection::vec(
                (0..2usize, proptest::prelude::any::<bool>(), 0..6u16, 0..6usize, 0..4usize),
                1..80,
            ),
        ) {
            use crate::testkit::{self, ACK, FIN_ACK, PSH_ACK, RST, SYN, SYN_ACK};
            let (snapshot, zero, one) = two_core_nat();
            let mut cores = [zero, one];
            let tables = crate::control::stats::Tables {
                v4: cores.iter().map(Pipeline::conntrack_reader).collect(),
                v6: Vec::new(),
            };
            let mut now = Instant::from_secs(1);
            for (core, from_backend, port, flags, wait) in packets {
                let flags = [SYN, SYN_ACK, ACK, PSH_ACK, FIN_ACK, RST][flags];
                let (client, backend) = ((CLIENT.ip, 5000 + port), (RS.ip, 8080));
                let mut frame = if from_backend {
                    testkit::tcp(RS.mac, LB.mac, backend, client, flags, b"")
                } else {
                    testkit::tcp(CLIENT.mac, LB.mac, client, VIP, flags, b"")
                };
                cores[core].process(now, IfaceId(0), &mut frame);
                now = Instant::from_nanos(now.as_nanos() + [0, 0, 30, 400][wait] * 1_000_000_000);
                for core in &mut cores {
                    core.maintain(now);
                }
                let summed = cores[0].connections()[0].plus(cores[1].connections()[0]);
                let listed = tables.count(&snapshot, now)[0];
                proptest::prop_assert_eq!(
                    (i64::from(summed.active), i64::from(summed.inactive)),
                    (listed.active as i64, listed.inactive as i64)
                );
            }
        }
    }

    /// `active` established connections per backend, none inactive.
    fn established(active: &[i32]) -> Vec<ConnectionCount> {
        active.iter().map(|&active| ConnectionCount { active, inactive: 0 }).collect()
    }

    /// lc, wlc, sed and nq count the other cores' flows too (control sends them): a core
    /// with no flows of its own still sends a new one to the backend the box loads least,
    /// and schedulers that count nothing are not moved by it.
    #[test]
    fn connection_counting_schedulers_count_the_other_cores_flows() {
        for kind in ["lc", "wlc", "sed", "nq"] {
            let snapshot = scheduled_snapshot(kind, &[(100, &[11, 12])], 1);
            let mut pipeline = Pipeline::new(snapshot, CoreSlot { index: 0, count: 2 });
            // The other core holds 5 connections on .11: this core's first goes to .12 ...
            pipeline.set_peer_load(1, &established(&[5, 0]));
            assert_eq!(picked_established(&mut pipeline, 7000), 0x12, "{kind}");
            // ... and so do the next four (.12 then has this core's 5 against .11's 5).
            for port in 7001..7005 {
                assert_eq!(picked_established(&mut pipeline, port), 0x12, "{kind}: port {port}");
            }
            // The other way round: the other core's load moves to .12.
            pipeline.set_peer_load(1, &established(&[0, 20]));
            for port in 7005..7010 {
                assert_eq!(picked_established(&mut pipeline, port), 0x11, "{kind}: port {port}");
            }
            // Another generation's, or another length's, counts are not this snapshot's.
            pipeline.set_peer_load(2, &established(&[0, 100]));
            pipeline.set_peer_load(1, &established(&[0]));
            assert_eq!(pipeline.core.peer_connections, established(&[0, 20]), "{kind}");
            // A swap forgets the others' counts until control sends the new snapshot's.
            pipeline.set_snapshot(scheduled_snapshot(kind, &[(100, &[11, 12])], 2));
            assert_eq!(pipeline.core.peer_connections, established(&[0, 0]), "{kind}");
        }
        // rr counts nothing: the others' load does not move it.
        let snapshot = scheduled_snapshot("rr", &[(100, &[11, 12])], 1);
        let mut pipeline = Pipeline::new(snapshot, CoreSlot { index: 0, count: 2 });
        pipeline.set_peer_load(1, &established(&[1000, 0]));
        let picks: Vec<u8> = (8000..8004).map(|port| picked(&mut pipeline, port)).collect();
        assert_eq!(picks.iter().filter(|&&b| b == 0x11).count(), 2, "rr: {picks:x?}");
    }
}
