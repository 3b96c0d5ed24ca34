//! The new-flow step, once for both families: a packet to a VIP that no tracked flow took is
//! scheduled to a backend of its service and tracked in its family's connection table, or
//! (DR) forwarded by the service's fallback Maglev table alone. IPv4's `new_flow`
//! ([`super::flows`]) and IPv6's `new_flow6` ([`super::v6::flows`]) call
//! [`CoreState::schedule`] with the way they send the flow's first packet (IPv4 through its
//! hop caches), which it calls on the flow where it built it (no copy of the flow handed
//! back); [`Tables`] picks the family's connection table in [`CoreState`].
//!
//! Invariants:
//! - A TCP packet that opens nothing (no SYN, or SYN with ACK or RST) is never tracked: DR
//!   and tunnel forward it statelessly, NAT and FullNAT drop it (`no_flow`).
//! - A persistent service's new connection goes where its client's template says, if it has
//!   one; the scheduler is asked only otherwise ([`persistence::pick`]).
//! - Maglev, the stateless fallback and the FullNAT local port take the pinned flow hash
//!   ([`flow_hash`]), which every box and build agrees on; the connection table's lookup
//!   ([`Prepared`]) takes its own keyed hash.
//! - A flow counts in its backend's connections ([`ConnectionCount`]) once, in the state its
//!   insert gave it (inactive: a SYN or UDP), from when its insert succeeds; a flow evicted
//!   to make room (or a port reused) gives it back in the state it had then, its backend
//!   found by identity. Connection-counting schedulers see the box's sum: this core's
//!   counts plus the other cores' last reported, IPVS's active and inactive apart.
//! - A DR or tunnel flow the table refuses (flood, full) still goes to a backend,
//!   statelessly; NAT and FullNAT drop it (`flood`, `conntrack_full`).
//! - The code is generic over the family and monomorphised: nothing branches on the family
//!   at run time, and IPv4's instance is the code IPv4 ran before the fold.

use crate::conntrack::{ConnectionCount, Conntrack, Flow, InsertError, Layout, Prepared};
use crate::family::{Family, V4, V6};
use crate::flow::{FlowKey, ForwardMode};
use crate::hash::flow_hash;
use crate::report::{DropReason, Stat};
use crate::sched::PickContext;
use crate::snapshot::{Indexed, Snapshot};
use crate::time::Instant;

use super::flows::{opened, release_backend};
use super::{CoreState, TCP_ACK, TCP_RST, TCP_SYN, Verdict, persistence};

/// A family the pipeline keeps a connection table for, [`V4`] or [`V6`]: where that table
/// is in a core's state.
pub(super) trait Tables: Indexed + Layout {
    /// The family's connection table and the backends' connection counts (shared by both
    /// families), borrowed together so an eviction can give its share back.
    fn tables(core: &mut CoreState) -> (&mut Conntrack<Self>, &mut [ConnectionCount]);
}

impl Tables for V4 {
    #[inline(always)]
    fn tables(core: &mut CoreState) -> (&mut Conntrack<V4>, &mut [ConnectionCount]) {
        (&mut core.conntrack, &mut core.connections)
    }
}

impl Tables for V6 {
    #[inline(always)]
    fn tables(core: &mut CoreState) -> (&mut Conntrack<V6>, &mut [ConnectionCount]) {
        (&mut core.v6.conntrack, &mut core.connections)
    }
}

/// How a new flow's first packet is sent once [`CoreState::schedule`] has its flow: its
/// family's way. A trait whose method is inlined rather than a closure: LLVM kept the
/// closure out of line, a call (and the flow's address) per new flow.
pub(super) trait FirstPacket<F: Family> {
    /// Sends the first packet on `flow`, whose backend's index in the snapshot is
    /// `backend`: the verdict.
    fn send(self, core: &mut CoreState, flow: &Flow<F>, backend: usize) -> Verdict;
}

impl CoreState {
    /// Schedules a packet `key` to a VIP that no tracked flow took (see the module docs)
    /// and sends it: `send` gets the flow its packet goes on as (tracked, or DR's stateless
    /// one) and that flow's backend's index in `snapshot` (the one just picked), and makes
    /// the verdict; a packet dropped here is `Drop` with the reason, `send` not called.
    /// `prepared` is the lookup of `key` that just missed: the insert starts from what it
    /// proved.
    #[inline(always)]
    pub(super) fn schedule<F: Tables>(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        key: &FlowKey<F>,
        tcp_flags: Option<u8>,
        prepared: Prepared,
        send: impl FirstPacket<F>,
    ) -> Verdict {
        let hash = flow_hash(key);
        let index = snapshot.family::<F>();
        let Some(service_index) = index.service_at(key.dst_addr, key.dst_port, key.proto) else {
            return Verdict::Drop(DropReason::NoService);
        };
        let service = &snapshot.services[service_index];
        let range = service.backends.clone();
        // A TCP packet that opens nothing (no SYN) is never tracked: otherwise a flood of
        // spoofed ACKs would fill the table with flows that look established and are never
        // evicted. DR forwards it by consistent hashing alone, so a connection picked up
        // mid-stream (after a restart) stays on its backend; NAT and FullNAT cannot
        // translate without state.
        let opens = tcp_flags.is_none_or(|flags| flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN);
        if !opens {
            return match service.forward {
                ForwardMode::Dr | ForwardMode::Tunnel => {
                    self.stateless(snapshot, key, service_index, hash, send)
                }
                ForwardMode::Nat | ForwardMode::FullNat => Verdict::Drop(DropReason::NoFlow),
            };
        }
        let Some(state) = self.sched.get_mut(service_index) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        // The common service, without persistence and scheduled by Maglev, picks here: the
        // same pick `persistence::pick` would make through `schedule`, without building the
        // closure or calling it (its several callers there keep it out of line).
        // A persistent service's client follows its template first ([`persistence`]).
        let pick = match (&service.persistence, service.scheduler.maglev_table()) {
            (None, Some(table)) => table.lookup(hash),
            _ => {
                let (own, peers) = (&self.connections, &self.peer_connections);
                let (box_active, box_inactive) = (&mut self.box_active, &mut self.box_inactive);
                let schedule = || match service.scheduler.maglev_table() {
                    // What `pick` does for Maglev, which needs only the flow hash (the common
                    // scheduler): no context to build, no call.
                    Some(table) => table.lookup(hash),
                    None => {
                        // The box-wide counts: this core's and the other cores' as last reported
                        // (only the schedulers that count connections read them).
                        let (active, inactive) = match (
                            box_active.get_mut(range.clone()),
                            box_inactive.get_mut(range.clone()),
                        ) {
                            (Some(active), Some(inactive))
                                if service.scheduler.kind().counts_connections() =>
                            {
                                let own = own.get(range.clone()).unwrap_or(&[]);
                                let peers = peers.get(range.clone()).unwrap_or(&[]);
                                for (i, (a, n)) in
                                    active.iter_mut().zip(inactive.iter_mut()).enumerate()
                                {
                                    let mine = own.get(i).copied().unwrap_or_default();
                                    (*a, *n) = mine
                                        .plus(peers.get(i).copied().unwrap_or_default())
                                        .loads();
                                }
                                (&*active, &*inactive)
                            }
                            _ => (&[][..], &[][..]),
                        };
                        let context = PickContext {
                            flow_hash: hash,
                            client: F::ip(key.src_addr),
                            active,
                            inactive,
                            response_time_us: self
                                .response_time_us
                                .get(range.clone())
                                .unwrap_or(&[]),
                        };
                        service.scheduler.pick(state, &context)
                    }
                };
                let client: u128 = F::key(key.src_addr).into();
                let (templates, counters) = (&*self.templates, &mut self.counters);
                persistence::pick(templates, snapshot, now, service, client, counters, schedule)
            }
        };
        let Some(pick) = pick else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let backend_index = range.start + pick;
        let Some(backend) = index.backend_id(backend_index) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let backend = (backend.addr, backend.port);
        let local = if service.forward == ForwardMode::FullNat {
            let ports = self.slot.local_ports();
            let (conntrack, active) = F::tables(self);
            match conntrack.allocate_local_port(
                now,
                key.proto,
                backend.0,
                backend.1,
                index.local_addrs(service_index),
                ports,
                hash,
                |evicted, state| release_backend(snapshot, active, evicted, state),
            ) {
                Some(local) => local,
                None => return Verdict::Drop(DropReason::NoLocalPort),
            }
        } else {
            (key.src_addr, key.src_port)
        };
        let flow = opened(key, service.forward, backend, local, (service_index, backend_index));
        // The packet opens (tested above): for the initial state the insert derives from its
        // flags (`SynSeen` for TCP, `Udp` for UDP), a SYN's flags are its own, and a constant
        // lets that derivation fold away.
        let opening_flags = tcp_flags.map(|_| TCP_SYN);
        let (conntrack, active) = F::tables(self);
        let inserted =
            conntrack.insert_prepared(now, &flow, prepared, opening_flags, |evicted, state| {
                release_backend(snapshot, active, evicted, state);
            });
        match inserted {
            Ok(state) => self.count_new_flow(backend_index, state),
            Err(_) if service.forward.keeps_packet() => {
                return self.stateless(snapshot, key, service_index, hash, send);
            }
            Err(InsertError::Flood) => return Verdict::Drop(DropReason::Flood),
            Err(InsertError::Full | InsertError::Exists) => {
                return Verdict::Drop(DropReason::ConntrackFull);
            }
        }
        send.send(self, &flow, backend_index)
    }

    /// DR (or tunnel) without a tracked flow: the service's weighted Maglev table alone picks the backend
    /// (by the pinned flow hash `hash`), so every packet of the flow, on any core and after
    /// any restart, agrees. Counted as a stateless packet, then sent by `send` as
    /// [`CoreState::schedule`] does. Out of line (the rare way): `schedule`,
    /// inlined into each family's new-flow step, keeps only the tracked way's code.
    #[inline(never)]
    fn stateless<F: Family + Indexed>(
        &mut self,
        snapshot: &Snapshot,
        key: &FlowKey<F>,
        service_index: usize,
        hash: u64,
        send: impl FirstPacket<F>,
    ) -> Verdict {
        let service = &snapshot.services[service_index];
        let Some(pick) = service.fallback.lookup(hash) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let backend_index = service.backends.start + pick;
        let Some(backend) = snapshot.family::<F>().backend_id(backend_index) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let flow = opened(
            key,
            service.forward,
            (backend.addr, backend.port),
            (key.src_addr, key.src_port),
            (service_index, backend_index),
        );
        self.counters.add(Stat::StatelessPackets, 1);
        send.send(self, &flow, backend_index)
    }

    /// Forgets `key`'s flow so that its packet is scheduled anew (its backend's connection
    /// count given back, in the state it had), counted as `counted`:
    /// - [`Stat::ReusedFlows`]: a client SYN on a closing or closed flow's 5-tuple (the
    ///   client reused its port);
    /// - [`Stat::RescheduledFlows`]: a client's packet of a flow whose backend its health
    ///   check took out of the service ([`Snapshot::reschedules`]).
    pub(super) fn forget_counted<F: Tables>(
        &mut self,
        snapshot: &Snapshot,
        key: &FlowKey<F>,
        counted: Stat,
    ) {
        let (conntrack, connections) = F::tables(self);
        if let Some((old, state)) = conntrack.remove(key) {
            release_backend(snapshot, connections, &old, state);
        }
        self.counters.add(counted, 1);
    }
}
