//! `Pipeline::process(now, ingress, frame) -> Verdict`: the one place a packet decision is
//! made.
//!
//! A pipeline belongs to one worker core. It reads an immutable [`Snapshot`] and owns that
//! core's connection table, scheduler state, neighbour table, hold queue and counters. The
//! AF_XDP worker, pcap replay, tests, benchmarks and fuzzers all drive this same function.
//!
//! Contract:
//! - Pure: no syscalls, locks, clock reads, allocation or logging inside `process`. `now`
//!   comes from the caller.
//! - Every frame gets exactly one [`Verdict`], and every verdict is counted
//!   (`rx == tx + pass + drop + held`). Malformed input is a counted drop or a pass, never a
//!   panic.
//! - Rewrites happen in place; the frame keeps its length. Checksums are updated
//!   incrementally (RFC 1624), each once per packet for all its changes (NAT's TTL included).
//! - The common frame (TCP or UDP in IPv4 without options, whole, header checksum right, to
//!   the ingress interface's MAC, for an address xlb owns or from a NAT backend) is
//!   recognised in one pass over fixed offsets (`classify`; for a batch, all frames
//!   before any is processed) and goes straight to its flow; everything else goes through
//!   the step-by-step checks, which give each malformed frame its exact drop reason. Both
//!   ways reach the same verdict, bytes and counters (a property test holds them to it).
//!   Every packet that reaches the flow step is IPv4 without options with its whole TCP or
//!   UDP header in the frame, so the rewrites read and write at fixed offsets.
//! - Counters are the core's own plain integers; a batch counts its received frames and
//!   bytes and its `Tx` verdicts once, at its end.
//! - Frames the pipeline sends on its own (ARP requests, frames released once their next
//!   hop resolves, gratuitous ARP) go to a bounded queue the driver empties with
//!   [`Pipeline::drain_emitted`] after each frame or batch.
//!
//! What it does, by destination:
//! - ARP for a VIP or FullNAT local address: answered with the box's MAC, to the requester's
//!   unicast MAC. ARP from a sender no reply may go to (a broadcast, multicast or zero MAC; a
//!   broadcast, multicast, loopback or subnet-broadcast address) is dropped as
//!   `arp_bad_sender`; an RFC 5227 probe (sender 0.0.0.0 from a unicast MAC) is answered, to
//!   that MAC with target 0.0.0.0 as Linux does, so a host probing for a VIP learns it is in
//!   use. ARP from another host whose sender address is a VIP or local address is a conflict:
//!   dropped as `arp_conflict` and counted in `arp_conflicts` (control logs it).
//! - Neighbours: ARP that names us (requests for our addresses, replies to the box) teaches
//!   the neighbour table about senders on the ingress interface's subnet; held frames for
//!   that neighbour are released. The table is bounded and never full for a next hop the
//!   snapshot needs (see [`crate::arp::NeighborTable`]); other neighbours are evicted
//!   oldest-first and forgotten after [`arp::NEIGHBOR_STALE`].
//! - Gratuitous ARP and RFC 5227 probes (control asks for them) leave paced, at most half the
//!   emit queue per round, so any number of VIPs is announced without crowding out the ARP
//!   requests of the data path.
//! - TCP/UDP to a service VIP:port: connection lookup; on a miss the service's scheduler picks
//!   a backend and the flow is tracked; then DR (MAC rewrite only), NAT (DNAT) or FullNAT
//!   (DNAT + SNAT to a local address:port).
//! - Replies of NAT backends and replies to FullNAT local addresses: translated back to
//!   VIP:port towards the client. With several interfaces, a reply must arrive on the
//!   interface its backend is reached by; one from another side (forged by a client) is
//!   dropped as `reply_wrong_interface` before it can refresh, advance or close the flow.
//! - ICMP echo to a VIP or local address: answered. ICMP errors about a tracked flow: sent on
//!   to that flow's peer, translated. An error only reads the flow: it never refreshes its
//!   last-seen time nor moves its state, so forged errors cannot keep an idle flow alive.
//! - Anything else: `Pass` to the kernel.
//!
//! NAT and FullNAT are routing hops: every packet they forward (ICMP errors included) leaves
//! with its IPv4 TTL one less (checksum patched incrementally), and one that arrives with
//! TTL 0 or 1 is dropped as `ttl_exceeded` (no ICMP time exceeded is sent). DR is an L2
//! forward, as in IPVS: the IP packet, TTL included, is left as it is.
//!
//! Layout: this module holds [`Pipeline`], its API and the per-core state `CoreState`
//! with the steps every packet takes (`process`, the batch, the step-by-step IPv4 checks);
//! the steps' concerns live in submodules that each add to `CoreState`:
//! `classify` (what a frame is: the one-pass classification and the
//! TCP/UDP views), `flows` (connection lookup, scheduling, forwarding a tracked packet),
//! `neighbors` (ARP, the neighbour table, held frames, the hop caches), `rewrite` (the
//! in-place NAT, TTL, quote and echo rewrites), `icmp` (echo and errors about flows) and
//! `emit` (the queue of frames the pipeline sends on its own).

mod classify;
mod emit;
mod flows;
mod icmp;
mod neighbors;
mod rewrite;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::arp::{self, NeighborTable};
use crate::conntrack::{Conntrack, ConntrackReader, PortRange, Prepared};
use crate::hash::table_hash;
use crate::report::{BATCH, Counters, DropReason, Stat};
use crate::sched::SchedState;
use crate::snapshot::{IfaceId, Owned, Snapshot};
use crate::time::Instant;
use crate::wire::ipv4::ip_proto;
use crate::wire::{EtherType, EthernetFrame, Ipv4Packet, MacAddr, TcpFlags, WireError};

use classify::{Class, classify, plain_transport_at, transport};
use emit::EmitQueue;
use flows::{release_backend, same_schedule, sched_states};
use neighbors::{
    CLIENT_HOP_SLOTS, ClientHop, HopSlot, PacedArp, is_unicast, needed_next_hops, subnets,
    unreplyable_sender,
};

/// What to do with a frame after [`Pipeline::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out of this interface.
    Tx(IfaceId),
    /// Not xlb's: hand it to the kernel unchanged.
    Pass,
    /// Dropped, for this reason.
    Drop(DropReason),
    /// Kept until the next hop's MAC is known (an ARP request was queued); it will come out
    /// of [`Pipeline::drain_emitted`], or be counted as expired.
    Held,
}

/// Which worker a pipeline serves, out of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreSlot {
    pub index: u16,
    pub count: u16,
}

impl CoreSlot {
    pub const SINGLE: CoreSlot = CoreSlot { index: 0, count: 1 };

    /// This core's share of the FullNAT local ports (1024–65535, split evenly), so that
    /// two cores never pick the same local address:port.
    pub fn local_ports(self) -> PortRange {
        let count = u32::from(self.count.max(1));
        let index = u32::from(self.index.min(self.count.saturating_sub(1)));
        let span = (65535 - 1024 + 1) / count;
        let first = 1024 + index * span;
        let last = if index + 1 == count { 65535 } else { first + span - 1 };
        PortRange { first: first as u16, last: last as u16 }
    }
}

const ETH_LEN: usize = EthernetFrame::<&[u8]>::HEADER_LEN;
const TCP_SYN: u8 = TcpFlags::SYN.0;
const TCP_ACK: u8 = TcpFlags::ACK.0;
const TCP_RST: u8 = TcpFlags::RST.0;
/// Frames the pipeline may queue on its own between two drains.
const EMIT_CAPACITY: usize = 64;
const EMIT_FRAME: usize = arp::MAX_HELD_FRAME;
/// Neighbours one core may know.
const NEIGHBOR_CAPACITY: usize = 4096;
/// Conntrack buckets examined per [`Pipeline::maintain`] call.
const SWEEP_BUDGET: usize = 64;
/// A learned next hop of a backend not heard from for this long is asked again (from the
/// box's own address), so its MAC stays current even if it never speaks ARP on its own.
pub const NEIGHBOR_REFRESH: Duration = Duration::from_secs(30);
/// Neighbour-table slots [`Pipeline::maintain`] examines for staleness per call (the whole
/// table of 8192 slots is swept about every 130 calls, well under a second).
const NEIGHBOR_EXPIRE_BUDGET: usize = 64;
/// Frames of paced ARP (announcements, probes) the emit queue may hold at once: half, so
/// the data path's requests and released frames keep room.
const PACED_ARP_ROOM: usize = EMIT_CAPACITY / 2;
/// How often core 0 looks for next hops to refresh.
const REFRESH_SCAN_EVERY: Duration = Duration::from_secs(1);
/// Refresh requests per scan, at most (the rest wait for the next scan).
const REFRESH_PER_SCAN: usize = EMIT_CAPACITY / 4;

/// One core's packet pipeline.
#[derive(Debug)]
pub struct Pipeline {
    snapshot: Arc<Snapshot>,
    core: CoreState,
}

#[derive(Debug)]
struct CoreState {
    slot: CoreSlot,
    conntrack: Conntrack,
    /// Other cores' tables, for replies RSS delivered here.
    peers: Vec<ConntrackReader>,
    /// Per service. A snapshot swap keeps a service's state when the service is unchanged
    /// (same scheduler, same backends by identity and weight), so `rr` goes on from where it
    /// was and `random` does not repeat its picks.
    sched: Vec<SchedState>,
    /// Tracked flows per backend on this core (lc, wlc, lt): every state counts, as the
    /// scheduler's load (IPVS's `ActiveConn` / `InActConn` split is for listings, which
    /// count from the connection tables).
    active: Vec<u32>,
    /// Measured response time per backend in µs (lt), indexed like the snapshot's backends:
    /// the snapshot's at a swap, then what control sends ([`Pipeline::set_response_times`])
    /// without a new snapshot.
    response_time_us: Vec<u32>,
    neighbors: NeighborTable,
    /// The Ethernet header and egress of a frame to each backend, looked up once per
    /// neighbour-table change (and per snapshot) rather than once per packet; valid while
    /// `hops_generation` matches the neighbour table's. None while the next hop's MAC
    /// or the egress interface is unknown.
    backend_hops: Vec<HopSlot>,
    /// The same for replies to clients (NAT, FullNAT). Through the gateway: the default
    /// route's hop, computed with the backends'. On-link: the clients replies went to lately,
    /// filled on a miss, direct-mapped ([`CLIENT_HOP_SLOTS`] entries), emptied when
    /// `hops_generation` moves. Only hops whose next hop's MAC is known are cached.
    gateway_hop: HopSlot,
    client_hops: Box<[Option<ClientHop>]>,
    /// The snapshot's interfaces' subnets as (network, mask), in order: whether a client is
    /// on-link without recomputing each mask ([`Interface::contains`]).
    ///
    /// [`Interface::contains`]: crate::snapshot::Interface::contains
    subnets: Box<[(u32, u32)]>,
    /// The neighbour-table generation both hop caches were filled at; `u64::MAX` after a
    /// snapshot change (refill before use).
    hops_generation: u64,
    hold: arp::HoldQueue,
    emit: EmitQueue,
    /// Gratuitous ARP and probes waiting for room in `emit` (control asked for them).
    paced_arp: std::collections::VecDeque<PacedArp>,
    counters: Counters,
    /// When core 0 last looked for next hops to refresh.
    last_refresh_scan: Instant,
}

impl Pipeline {
    /// A pipeline for one core. Allocates everything it will ever use.
    pub fn new(snapshot: Arc<Snapshot>, slot: CoreSlot) -> Self {
        let mut neighbors = NeighborTable::with_capacity(NEIGHBOR_CAPACITY);
        neighbors.set_needed(needed_next_hops(&snapshot));
        for (ip, mac) in &snapshot.static_neighbors {
            neighbors.insert_static(*ip, *mac);
        }
        let core = CoreState {
            slot,
            conntrack: Conntrack::new(&snapshot.conntrack),
            peers: Vec::new(),
            sched: sched_states(&snapshot, slot),
            active: vec![0; snapshot.backends.len()],
            response_time_us: snapshot.response_time_us.clone(),
            neighbors,
            backend_hops: vec![HopSlot::UNKNOWN; snapshot.backends.len()],
            gateway_hop: HopSlot::UNKNOWN,
            client_hops: vec![None; CLIENT_HOP_SLOTS].into_boxed_slice(),
            subnets: subnets(&snapshot),
            hops_generation: u64::MAX,
            hold: arp::HoldQueue::new(),
            emit: EmitQueue::new(),
            paced_arp: std::collections::VecDeque::new(),
            counters: Counters::new(snapshot.backends.len()),
            last_refresh_scan: Instant::ZERO,
        };
        Pipeline { snapshot, core }
    }

    /// Swaps to a new snapshot between batches. Tracked flows survive: they carry their
    /// backend's address and are re-validated against the new snapshot as they are seen.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        let core = &mut self.core;
        core.neighbors.set_needed(needed_next_hops(&snapshot));
        for (ip, mac) in &snapshot.static_neighbors {
            core.neighbors.insert_static(*ip, *mac);
        }
        let mut old_states = std::mem::take(&mut core.sched);
        core.sched = sched_states(&snapshot, core.slot);
        for (index, service) in snapshot.services.iter().enumerate() {
            let old = self.snapshot.service_at(service.vip, service.port, service.proto);
            if let Some(old) = old
                && same_schedule(&self.snapshot, old, &snapshot, index)
                && let Some(state) = old_states.get_mut(old)
            {
                core.sched[index] = std::mem::replace(state, SchedState::new(0, 0));
            }
        }
        core.response_time_us = snapshot.response_time_us.clone();
        let mut active = vec![0; snapshot.backends.len()];
        let mut backends = vec![Default::default(); snapshot.backends.len()];
        let mut passive = vec![Default::default(); snapshot.backends.len()];
        // Carry per-backend state over to backends that are still there, by identity.
        for (old_index, old) in self.snapshot.backends.iter().enumerate() {
            if let Some(new_index) = snapshot.backend_at(&old.id) {
                active[new_index] = core.active.get(old_index).copied().unwrap_or(0);
                backends[new_index] =
                    core.counters.backends.get(old_index).copied().unwrap_or_default();
                passive[new_index] =
                    core.counters.passive.get(old_index).copied().unwrap_or_default();
            }
        }
        core.active = active;
        core.counters.backends = backends;
        core.counters.passive = passive;
        core.backend_hops = vec![HopSlot::UNKNOWN; snapshot.backends.len()];
        core.subnets = subnets(&snapshot);
        core.hops_generation = u64::MAX;
        self.snapshot = snapshot;
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// New measured response times for the least-time scheduler, indexed like the backends
    /// of snapshot `generation`; ignored unless that is the snapshot this core runs (control
    /// sends them after the snapshot they belong to, so a newer one has its own). Copies
    /// into the buffer the snapshot swap allocated: no allocation.
    pub fn set_response_times(&mut self, generation: u64, times: &[u32]) {
        if generation == self.snapshot.generation && times.len() == self.core.response_time_us.len()
        {
            self.core.response_time_us.copy_from_slice(times);
        }
    }

    /// Lets this core find replies in other cores' tables.
    pub fn set_peers(&mut self, peers: Vec<ConntrackReader>) {
        self.core.peers = peers;
    }

    /// A read handle on this core's connection table, for the other cores.
    pub fn conntrack_reader(&self) -> ConntrackReader {
        self.core.conntrack.reader()
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.core.conntrack
    }

    pub fn counters(&self) -> &Counters {
        &self.core.counters
    }

    pub fn neighbors(&self) -> &NeighborTable {
        &self.core.neighbors
    }

    /// Tracked flows per backend on this core (indexed like the snapshot's backends).
    pub fn active_flows(&self) -> &[u32] {
        &self.core.active
    }

    /// Frames held for unresolved neighbours right now.
    pub fn held(&self) -> usize {
        self.core.hold.len()
    }

    /// Next hops this core is asking for (frames are held for them), for control to relay
    /// the ARP that answers.
    pub fn unresolved(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.core.hold.unresolved().map(|(ip, _)| ip)
    }

    /// Processes one frame received on `ingress`, rewriting it in place.
    #[inline]
    pub fn process(&mut self, now: Instant, ingress: IfaceId, frame: &mut [u8]) -> Verdict {
        let (class, hash) = match self.snapshot.interfaces.get(ingress.index()) {
            Some(interface) => classify(&self.snapshot, interface.mac, frame),
            None => (Class::Other, 0),
        };
        let counters = &mut self.core.counters;
        counters.add(Stat::RxPackets, 1);
        counters.add(Stat::RxBytes, frame.len() as u64);
        let verdict = self.process_classified(now, ingress, frame, class, Prepared::new(hash));
        if let Verdict::Tx(_) = verdict {
            self.core.counters.add(Stat::TxPackets, 1);
        }
        verdict
    }

    /// [`Pipeline::process`] once the frame is classified: the common case straight to its
    /// flow, anything else through the step-by-step checks. `lookup` is the prepared lookup of a
    /// classified frame's 5-tuple. Counts the verdict unless it is `Tx`: the caller counts
    /// received frames and bytes and transmitted frames (a batch once for all its frames).
    #[inline(always)]
    fn process_classified(
        &mut self,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        class: Class,
        lookup: Prepared,
    ) -> Verdict {
        let core = &mut self.core;
        let snapshot = &*self.snapshot;
        let transport = match class {
            Class::Other => None,
            _ => plain_transport_at(frame),
        };
        let verdict = match transport {
            Some(transport) => {
                core.transport(snapshot, now, ingress, frame, class, transport, lookup)
            }
            None => core.process(snapshot, now, ingress, frame),
        };
        if !matches!(verdict, Verdict::Tx(_)) {
            core.counters.count_other(verdict);
        }
        verdict
    }

    /// Processes a batch of frames received on `ingress`, as a poll loop gets them: the same
    /// verdicts, in the same order, as calling [`Pipeline::process`] on each frame.
    ///
    /// First it classifies every frame (`classify`: the checks of the common case, the
    /// owner of the destination, the connection tables' hash) and starts loading the connection-table
    /// bucket each will look in; then it reads each bucket and starts loading the record it
    /// names ([`CoreState::prepare_lookups`], DPDK's `rte_hash_lookup_bulk`, VPP's quad
    /// loop), so that the batch's cache misses overlap instead of following one another;
    /// then it processes the frames in order. Classifying ahead is sound because it reads
    /// only the frame and the snapshot, which nothing changes within a batch (a frame is
    /// rewritten only when its own turn comes). `verdicts[i]` is the verdict of `frames[i]`;
    /// frames beyond `verdicts.len()` are left alone.
    pub fn process_batch(
        &mut self,
        now: Instant,
        ingress: IfaceId,
        frames: &mut [&mut [u8]],
        verdicts: &mut [Verdict],
    ) {
        let count = frames.len().min(verdicts.len());
        let mac = self.snapshot.interfaces.get(ingress.index()).map(|interface| interface.mac);
        for (frames, verdicts) in
            frames[..count].chunks_mut(BATCH).zip(verdicts[..count].chunks_mut(BATCH))
        {
            let mut classes = [Class::Other; BATCH];
            let mut lookups = [Prepared::new(0); BATCH];
            self.core.conntrack.begin_batch();
            if let Some(mac) = mac {
                for ((class, lookup), frame) in classes.iter_mut().zip(&mut lookups).zip(&*frames) {
                    let hash;
                    (*class, hash) = classify(&self.snapshot, mac, frame);
                    if *class != Class::Other {
                        self.core.conntrack.prefetch_bucket(hash);
                        *lookup = Prepared::new(hash);
                    }
                }
                self.core.prepare_lookups(&classes[..frames.len()], &mut lookups);
            }
            let (mut bytes, mut transmitted) = (0, 0);
            for (((frame, verdict), class), lookup) in
                frames.iter_mut().zip(verdicts.iter_mut()).zip(classes).zip(lookups)
            {
                bytes += frame.len() as u64;
                *verdict = self.process_classified(now, ingress, frame, class, lookup);
                transmitted += u64::from(matches!(verdict, Verdict::Tx(_)));
            }
            let counters = &mut self.core.counters;
            counters.add(Stat::RxPackets, frames.len() as u64);
            counters.add(Stat::RxBytes, bytes);
            counters.add(Stat::TxPackets, transmitted);
        }
    }

    /// Hands every frame the pipeline queued on its own to `send`, oldest first.
    pub fn drain_emitted(&mut self, send: impl FnMut(IfaceId, &[u8])) -> usize {
        let sent = self.core.emit.drain(send);
        self.core.counters.add(Stat::EmittedPackets, sent as u64);
        sent
    }

    /// Housekeeping between batches: expires a slice of the connection table and gives up
    /// on neighbours that never answered.
    pub fn maintain(&mut self, now: Instant) {
        let core = &mut self.core;
        let snapshot = &*self.snapshot;
        let active = &mut core.active;
        let expired = core.conntrack.sweep(now, SWEEP_BUDGET, |flow| {
            release_backend(snapshot, active, flow);
        });
        core.counters.add(Stat::ExpiredFlows, expired as u64);
        let given_up = core.hold.expire(now);
        core.counters.add(Stat::HeldExpired, given_up as u64);
        let forgotten = core.neighbors.expire(now, NEIGHBOR_EXPIRE_BUDGET);
        core.counters.add(Stat::NeighborsEvicted, forgotten as u64);
        core.send_paced_arp(snapshot);
        if core.slot.index == 0
            && now.saturating_duration_since(core.last_refresh_scan) >= REFRESH_SCAN_EVERY
        {
            core.last_refresh_scan = now;
            core.refresh_neighbors(snapshot, now);
        }
    }

    /// Teaches the neighbour table what an ARP frame seen outside the pipeline said: the
    /// AF_XDP driver's steering program records ARP on its way to the kernel, so the kernel
    /// keeps its replies and xlb still learns. Control relays only what xlb needs (next hops
    /// of the snapshot, next hops a core asked for); a sender off every interface's subnet,
    /// or one no reply may go to, is ignored here too. Frames held for `ip` are released.
    pub fn learn_neighbor(&mut self, now: Instant, ip: Ipv4Addr, mac: MacAddr) {
        let core = &mut self.core;
        let on_link = self.snapshot.interfaces.iter().any(|i| i.contains(ip));
        if ip.is_unspecified()
            || !on_link
            || !is_unicast(mac)
            || unreplyable_sender(&self.snapshot, ip)
        {
            core.counters.add(Stat::NeighborsIgnored, 1);
            return;
        }
        core.learn(&self.snapshot, now, ip, mac);
    }

    /// Queues a gratuitous ARP for each of `addrs` that is a VIP or local address of the
    /// snapshot (control asks at start and when one is added, once no other host answered a
    /// probe for it), so switches and neighbours learn where they live. Paced: they leave a
    /// few dozen per round, however many there are.
    pub fn announce(&mut self, addrs: &[Ipv4Addr]) {
        self.core.queue_paced(addrs.iter().map(|ip| PacedArp::Announce(*ip)));
        self.core.send_paced_arp(&self.snapshot);
    }

    /// Queues an RFC 5227 probe for each of `addrs` that is a VIP or local address (see
    /// [`arp::write_probe`]); paced like [`Pipeline::announce`].
    pub fn probe(&mut self, addrs: &[Ipv4Addr]) {
        self.core.queue_paced(addrs.iter().map(|ip| PacedArp::Probe(*ip)));
        self.core.send_paced_arp(&self.snapshot);
    }
}

/// Maps a view's refusal of an IPv4 header to a drop reason.
fn ip_drop_reason(error: WireError) -> DropReason {
    match error {
        WireError::BadVersion => DropReason::BadIpVersion,
        WireError::BadHeaderLen => DropReason::BadIpHeaderLen,
        WireError::BadTotalLen => DropReason::BadIpTotalLen,
        _ => DropReason::Truncated,
    }
}

/// A packet to an address we own is dropped with `reason`; one merely *from* a NAT
/// backend (maybe a reply) is not ours to judge, so the kernel gets it.
#[inline]
fn reject(owned: Option<Owned>, reason: DropReason) -> Verdict {
    if owned.is_some() { Verdict::Drop(reason) } else { Verdict::Pass }
}

impl CoreState {
    #[inline]
    fn process(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
    ) -> Verdict {
        let Some(interface) = snapshot.interfaces.get(ingress.index()) else {
            return Verdict::Drop(DropReason::UnknownInterface);
        };
        let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        let dst = eth.dst_addr();
        if dst != interface.mac && !dst.is_broadcast() {
            return Verdict::Pass;
        }
        match eth.ethertype() {
            EtherType::IPV4 => self.ipv4(snapshot, now, ingress, frame),
            EtherType::ARP => self.arp(snapshot, now, ingress, frame),
            _ => Verdict::Pass,
        }
    }

    /// The step-by-step checks of an IPv4 packet, each with its exact drop reason (the
    /// common case never gets here: [`classify()`] took it).
    #[inline(never)]
    fn ipv4(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
    ) -> Verdict {
        let packet = &frame[ETH_LEN..];
        let Some(header) = packet.first_chunk::<20>() else {
            return Verdict::Drop(DropReason::Truncated);
        };
        let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
        let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
        let owned = match snapshot.owned(dst) {
            Some(Owned::Interface(_)) => return Verdict::Pass,
            Some(owned) => Some(owned),
            None if snapshot.is_nat_backend(src) => None,
            None => return Verdict::Pass,
        };
        let ip = match Ipv4Packet::new_checked(packet) {
            Ok(ip) => ip,
            Err(error) => return reject(owned, ip_drop_reason(error)),
        };
        if !ip.verify_checksum() {
            return reject(owned, DropReason::BadIpChecksum);
        }
        if ip.is_fragment() {
            return reject(owned, DropReason::Fragment);
        }
        if ip.has_options() {
            return reject(owned, DropReason::IpOptions);
        }
        let l4_start = ETH_LEN + ip.header_len();
        let l4_end = ETH_LEN + usize::from(ip.total_len());
        match ip.protocol() {
            ip_proto::TCP | ip_proto::UDP => {
                match transport(src, dst, ip.protocol(), &frame[l4_start..l4_end]) {
                    Some(transport) => {
                        let lookup = Prepared::new(table_hash(&transport.key));
                        let class = Class::of_owner(owned);
                        self.transport(snapshot, now, ingress, frame, class, transport, lookup)
                    }
                    None => reject(owned, DropReason::BadL4Header),
                }
            }
            ip_proto::ICMP => self.icmp(snapshot, now, ingress, frame, owned, l4_start..l4_end),
            _ => reject(owned, DropReason::UnsupportedProto),
        }
    }

    /// The second connection-table pass of a batch, before any frame is processed: reads the
    /// bucket of every classified frame (its load started by the first pass) and starts
    /// loading the record it names, remembering the slot in `lookups[i]`.
    #[inline]
    fn prepare_lookups(&mut self, classes: &[Class], lookups: &mut [Prepared; BATCH]) {
        for (class, lookup) in classes.iter().zip(lookups.iter_mut()) {
            if *class != Class::Other {
                *lookup = self.conntrack.prepare(lookup.hash());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::neighbors::client_hop_slot;
    use super::*;
    use crate::flow::Proto;
    use crate::testkit::Host;
    use crate::wire::{ArpOperation, ArpPacket};

    // The hosts of the one-service snapshots below (`one_service_snapshot`).
    const LB: Host = Host::new([2, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
    const CLIENT: Host = Host::new([2, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
    const RS: Host = Host::new([2, 0, 0, 0, 0, 0x11], [10, 1, 1, 11]);
    const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 1, 1, 100), 80);

    #[test]
    fn local_port_ranges_partition_the_space() {
        for count in 1..=8u16 {
            let mut next = 1024u32;
            for index in 0..count {
                let range = CoreSlot { index, count }.local_ports();
                assert_eq!(u32::from(range.first), next);
                assert!(range.last >= range.first);
                next = u32::from(range.last) + 1;
            }
            assert_eq!(next, 65536);
        }
    }

    /// One interface (10.1.1.10/24 with `mac`, then the lines `interface_extra`) and one
    /// service, 10.1.1.100:80 forwarded by `forward` to 10.1.1.11:`backend_port`.
    fn one_service_snapshot(
        mac: &str,
        interface_extra: &str,
        forward: &str,
        backend_port: u16,
    ) -> Arc<Snapshot> {
        let text = format!(
            r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
mac = "{mac}"
{interface_extra}
[[service]]
vip = "10.1.1.100"
port = 80
forward = "{forward}"
scheduler = "rr"
[[service.backend]]
addr = "10.1.1.11"
port = {backend_port}
"#
        );
        let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, 1).expect("builds"))
    }

    /// A DR service with one backend whose MAC is not configured, on an interface with `mac`.
    fn dr_snapshot(mac: &str) -> Arc<Snapshot> {
        one_service_snapshot(mac, "", "dr", 80)
    }

    /// The per-backend cache of the hit path follows the neighbour table and the snapshot:
    /// held until the backend's MAC is learned, then sent with the learned MAC, and with a
    /// new snapshot's interface MAC at once.
    #[test]
    fn backend_hop_cache_follows_neighbors_and_snapshots() {
        use crate::testkit::{self, ACK, SYN};
        let mut pipeline = Pipeline::new(dr_snapshot("02:00:00:00:00:10"), CoreSlot::SINGLE);
        let now = Instant::from_nanos(1);
        let packet = |flags| testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, flags, b"x");
        let macs = |frame: &[u8]| (frame[0..6].to_vec(), frame[6..12].to_vec());

        let mut syn = packet(SYN);
        assert_eq!(pipeline.process(now, IfaceId(0), &mut syn), Verdict::Held);
        let mut ack = packet(ACK);
        assert_eq!(pipeline.process(now, IfaceId(0), &mut ack), Verdict::Held);
        pipeline.drain_emitted(|_, _| {});

        let mut reply = testkit::arp(false, RS.mac, RS.ip, LB.mac, LB.ip);
        pipeline.process(now, IfaceId(0), &mut reply);
        let mut released = Vec::new();
        pipeline.drain_emitted(|_, frame| released.push(macs(frame)));
        assert_eq!(released, vec![(RS.mac.0.to_vec(), LB.mac.0.to_vec()); 2]);

        let mut ack = packet(ACK);
        assert_eq!(pipeline.process(now, IfaceId(0), &mut ack), Verdict::Tx(IfaceId(0)));
        assert_eq!(macs(&ack), (RS.mac.0.to_vec(), LB.mac.0.to_vec()));

        // Same flow, new snapshot: the interface's new MAC is the source at once.
        pipeline.set_snapshot(dr_snapshot("02:00:00:00:00:99"));
        let mut ack = packet(ACK);
        assert_eq!(pipeline.process(now, IfaceId(0), &mut ack), Verdict::Pass, "old LB MAC");
        ack[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x99]);
        assert_eq!(pipeline.process(now, IfaceId(0), &mut ack), Verdict::Tx(IfaceId(0)));
        assert_eq!(macs(&ack), (RS.mac.0.to_vec(), vec![2, 0, 0, 0, 0, 0x99]));
    }

    /// A backend's MAC learned long ago is asked for again, from the box's own address, by
    /// core 0 only, once per neighbour per scan; an answer stops the asking.
    #[test]
    fn stale_backend_neighbors_are_refreshed_from_the_box_address() {
        let rs = Ipv4Addr::new(10, 1, 1, 11);
        let rs_mac = MacAddr([2, 0, 0, 0, 0, 0x11]);
        let requests = |pipeline: &mut Pipeline| {
            let mut asked = Vec::new();
            pipeline.drain_emitted(|_, frame| {
                let arp = ArpPacket::new_checked(&frame[ETH_LEN..]).expect("ARP");
                assert_eq!(arp.operation(), ArpOperation::Request);
                assert_eq!(arp.sender_proto_addr(), Ipv4Addr::new(10, 1, 1, 10), "box address");
                asked.push(arp.target_proto_addr());
            });
            asked
        };
        let mut core0 = Pipeline::new(dr_snapshot("02:00:00:00:00:10"), CoreSlot::SINGLE);
        let mut core1 =
            Pipeline::new(dr_snapshot("02:00:00:00:00:10"), CoreSlot { index: 1, count: 2 });
        let learned = Instant::from_secs(1);
        core0.learn_neighbor(learned, rs, rs_mac);
        core1.learn_neighbor(learned, rs, rs_mac);

        core0.maintain(Instant::from_secs(20));
        assert_eq!(requests(&mut core0), Vec::<Ipv4Addr>::new(), "still fresh");
        core0.maintain(Instant::from_secs(32));
        assert_eq!(requests(&mut core0), vec![rs]);
        core0.maintain(Instant::from_millis(32_500));
        assert_eq!(requests(&mut core0), Vec::<Ipv4Addr>::new(), "one scan per second");
        core0.learn_neighbor(Instant::from_secs(33), rs, rs_mac);
        core0.maintain(Instant::from_secs(35));
        assert_eq!(requests(&mut core0), Vec::<Ipv4Addr>::new(), "answered");

        core1.maintain(Instant::from_secs(40));
        assert_eq!(requests(&mut core1), Vec::<Ipv4Addr>::new(), "only core 0 asks");
    }

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

    /// A NAT service on an interface with `mac` and a gateway, its one backend's MAC static.
    fn nat_snapshot(mac: &str) -> Arc<Snapshot> {
        let extra = "gateway = \"10.1.1.1\"\n\n[[neighbor]]\nip = \"10.1.1.11\"\nmac = \"02:00:00:00:00:11\"\n";
        one_service_snapshot(mac, extra, "nat", 8080)
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

    /// Replies go out through the client hop caches exactly as `deliver` would send them:
    /// held until the next hop's MAC is learned (the gateway for a remote client, the client
    /// itself on the subnet), then with the learned MAC, a relearned MAC at once, and a new
    /// snapshot's interface MAC at once; clients whose cache slots collide each keep theirs.
    #[test]
    fn client_hop_caches_follow_neighbors_and_snapshots() {
        use crate::testkit::{self, ACK, SYN};
        const GATEWAY: Host = Host::new([2, 0, 0, 0, 0, 0x01], [10, 1, 1, 1]);
        let mut pipeline = Pipeline::new(nat_snapshot("02:00:00:00:00:10"), CoreSlot::SINGLE);
        let now = Instant::from_nanos(1);
        let macs = |frame: &[u8]| (frame[0..6].to_vec(), frame[6..12].to_vec());
        // Two remote clients and on-link clients, two of them in the same cache slot.
        let on_link: Vec<Ipv4Addr> = (20..=255).map(|i| Ipv4Addr::new(10, 1, 1, i)).collect();
        let first = on_link[0];
        let twin = *on_link[1..]
            .iter()
            .find(|ip| client_hop_slot(**ip) == client_hop_slot(first))
            .expect("256 addresses fill 256 slots with a collision");
        let clients = [Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(198, 51, 100, 9), first, twin];
        let client_mac = |ip: Ipv4Addr| MacAddr([2, 0, 0, 0, 1, ip.octets()[3]]);
        for client in clients {
            let mut syn = testkit::tcp(client_mac(client), LB.mac, (client, 4000), VIP, SYN, b"");
            assert_eq!(pipeline.process(now, IfaceId(0), &mut syn), Verdict::Tx(IfaceId(0)));
        }
        let reply = |pipeline: &mut Pipeline, client: Ipv4Addr| {
            let mut frame = testkit::tcp(RS.mac, LB.mac, (RS.ip, 8080), (client, 4000), ACK, b"x");
            (pipeline.process(now, IfaceId(0), &mut frame), macs(&frame))
        };
        let sent = |next_hop: MacAddr, lb: MacAddr| {
            (Verdict::Tx(IfaceId(0)), (next_hop.0.to_vec(), lb.0.to_vec()))
        };
        for client in clients {
            assert_eq!(reply(&mut pipeline, client).0, Verdict::Held, "{client}");
        }
        pipeline.drain_emitted(|_, _| {});

        let learn = |pipeline: &mut Pipeline, ip: Ipv4Addr, mac: MacAddr| {
            let mut frame = testkit::arp(false, mac, ip, LB.mac, LB.ip);
            pipeline.process(now, IfaceId(0), &mut frame);
            pipeline.drain_emitted(|_, _| {});
        };
        learn(&mut pipeline, GATEWAY.ip, GATEWAY.mac);
        for client in clients {
            learn(&mut pipeline, client, client_mac(client));
        }
        for _ in 0..2 {
            for client in clients {
                let hop = if on_link.contains(&client) { client_mac(client) } else { GATEWAY.mac };
                assert_eq!(reply(&mut pipeline, client), sent(hop, LB.mac), "{client}");
            }
        }
        // The gateway and a client move: the caches follow at once.
        let moved = MacAddr([2, 0, 0, 0, 9, 9]);
        learn(&mut pipeline, GATEWAY.ip, moved);
        learn(&mut pipeline, first, moved);
        assert_eq!(reply(&mut pipeline, clients[0]), sent(moved, LB.mac));
        assert_eq!(reply(&mut pipeline, first), sent(moved, LB.mac));
        assert_eq!(reply(&mut pipeline, twin), sent(client_mac(twin), LB.mac));

        // A new snapshot: the interface's new MAC is the source at once.
        let new_lb = MacAddr([2, 0, 0, 0, 0, 0x99]);
        pipeline.set_snapshot(nat_snapshot("02:00:00:00:00:99"));
        let mut frame = testkit::tcp(RS.mac, new_lb, (RS.ip, 8080), (first, 4000), ACK, b"x");
        assert_eq!(pipeline.process(now, IfaceId(0), &mut frame), Verdict::Tx(IfaceId(0)));
        assert_eq!(macs(&frame), (moved.0.to_vec(), new_lb.0.to_vec()));
        let mut frame = testkit::tcp(RS.mac, new_lb, (RS.ip, 8080), (clients[1], 4000), ACK, b"x");
        assert_eq!(pipeline.process(now, IfaceId(0), &mut frame), Verdict::Tx(IfaceId(0)));
        assert_eq!(macs(&frame), (moved.0.to_vec(), new_lb.0.to_vec()));
    }

    proptest::proptest! {
        /// The one-pass classification of the common frame agrees with the step-by-step
        /// path on everything: a DR and a NAT flow's packets, intact and damaged anywhere in
        /// their first 60 bytes (then the header checksum made right again or not), cut
        /// short or padded, get the same verdict, the same bytes out and the same counters
        /// from `process` as from the step-by-step checks alone.
        #[test]
        fn classified_frames_take_the_step_by_step_path(
            nat in proptest::prelude::any::<bool>(),
            reply in proptest::prelude::any::<bool>(),
            udp in proptest::prelude::any::<bool>(),
            damage in proptest::collection::vec((0usize..60, proptest::prelude::any::<u8>()), 0..3),
            fix_checksum in proptest::prelude::any::<bool>(),
            cut in 0usize..24,
            pad in 0usize..4,
        ) {
            use crate::testkit::{self, ACK, SYN};
            let snapshot = if nat {
                one_service_snapshot(&LB.mac.to_string(), "", "nat", 8080)
            } else {
                one_service_snapshot(&LB.mac.to_string(), "", "dr", 80)
            };
            let now = Instant::from_secs(1);
            let mut fast = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
            let mut slow = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
            for pipeline in [&mut fast, &mut slow] {
                pipeline.learn_neighbor(now, RS.ip, RS.mac);
                pipeline.learn_neighbor(now, CLIENT.ip, CLIENT.mac);
                let mut syn = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, &[]);
                proptest::prop_assert!(matches!(pipeline.process(now, IfaceId(0), &mut syn), Verdict::Tx(_)));
                let mut open = testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, b"hi");
                pipeline.process(now, IfaceId(0), &mut open);
            }
            let backend = (RS.ip, if nat { 8080 } else { 80 });
            let (from, to, src_mac) = if reply && nat {
                (backend, (CLIENT.ip, 4000), RS.mac)
            } else {
                ((CLIENT.ip, 4000), VIP, CLIENT.mac)
            };
            let mut frame = if udp {
                testkit::udp(src_mac, LB.mac, from, to, b"payload")
            } else {
                testkit::tcp(src_mac, LB.mac, from, to, ACK, b"payload")
            };
            for (at, byte) in &damage {
                if let Some(slot) = frame.get_mut(*at) {
                    *slot = *byte;
                }
            }
            let ihl = usize::from(frame[ETH_LEN] & 0x0f) * 4;
            if fix_checksum && ihl >= 20 && frame.len() >= ETH_LEN + ihl {
                Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]).fill_checksum();
            }
            frame.truncate(frame.len().saturating_sub(cut));
            frame.resize(frame.len() + pad, 0);
            let mut stepwise = frame.clone();
            let verdict = fast.process(now, IfaceId(0), &mut frame);
            let expected = {
                let core = &mut slow.core;
                core.counters.add(Stat::RxPackets, 1);
                core.counters.add(Stat::RxBytes, stepwise.len() as u64);
                let verdict = core.process(&snapshot, now, IfaceId(0), &mut stepwise);
                core.counters.count_other(verdict);
                verdict
            };
            proptest::prop_assert_eq!(verdict, expected);
            proptest::prop_assert_eq!(&frame, &stepwise);
            for stat in Stat::ALL {
                proptest::prop_assert_eq!(fast.counters().get(*stat), slow.counters().get(*stat));
            }
            for reason in DropReason::ALL {
                proptest::prop_assert_eq!(fast.counters().drops(*reason), slow.counters().drops(*reason));
            }
        }
    }

    /// A /16 segment (so thousands of senders are on-link), the box at 10.1.0.10, and a DR
    /// service 10.1.1.100:80 whose backend 10.1.1.11 has no configured MAC; `vips` more DR
    /// services 10.1.2.x:80 with the same backend.
    fn segment_snapshot(vips: u32) -> Arc<Snapshot> {
        let mut text = String::from(
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.0.10/16\"\nmac = \"02:00:00:00:00:10\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"dr\"\n\
             [[service.backend]]\naddr = \"10.1.1.11\"\n",
        );
        for i in 0..vips {
            let vip = Ipv4Addr::from_bits(0x0a01_0200 + i);
            text += &format!(
                "[[service]]\nvip = \"{vip}\"\nport = 80\nforward = \"dr\"\n\
                 [[service.backend]]\naddr = \"10.1.1.11\"\n"
            );
        }
        let config = crate::control::Config::parse(&text, "test.toml").expect("valid");
        Arc::new(Snapshot::build(&config, 1).expect("builds"))
    }

    /// The 5000 hosts of an ARP storm, all on the segment.
    fn storm_senders() -> impl Iterator<Item = (Ipv4Addr, MacAddr)> {
        (0..5000u32).map(|i| {
            let ip = Ipv4Addr::from_bits(0x0a01_6400 + i);
            let [_, _, a, b] = i.to_be_bytes();
            (ip, MacAddr([2, 0x55, 0, 0, a, b]))
        })
    }

    /// A SYN to the first service is sent to the backend's MAC.
    fn reaches_backend(pipeline: &mut Pipeline, now: Instant, port: u16) -> bool {
        let lb = MacAddr([2, 0, 0, 0, 0, 0x10]);
        let mut syn =
            crate::testkit::tcp(CLIENT.mac, lb, (CLIENT.ip, port), VIP, crate::testkit::SYN, b"");
        pipeline.process(now, IfaceId(0), &mut syn) == Verdict::Tx(IfaceId(0))
            && syn[0..6] == RS.mac.0
    }

    /// Gratuitous ARP of 5000 other hosts, relayed to a core, does not keep a backend added
    /// later from being resolved.
    #[test]
    fn a_relayed_arp_storm_leaves_room_for_a_backend() {
        let mut pipeline = Pipeline::new(segment_snapshot(0), CoreSlot::SINGLE);
        for (ip, mac) in storm_senders() {
            pipeline.learn_neighbor(Instant::from_secs(1), ip, mac);
        }
        assert!(pipeline.neighbors().len() <= NEIGHBOR_CAPACITY);
        pipeline.learn_neighbor(Instant::from_secs(2), RS.ip, RS.mac);
        assert_eq!(pipeline.neighbors().lookup(RS.ip), Some(RS.mac), "the backend resolves");
        assert!(reaches_backend(&mut pipeline, Instant::from_secs(2), 4000));
    }

    /// 5000 hosts asking for the VIP are answered (and learned: they are clients), and a
    /// backend that answers xlb's request afterwards still resolves.
    #[test]
    fn arp_requests_from_5000_hosts_leave_room_for_a_backend() {
        let mut pipeline = Pipeline::new(segment_snapshot(0), CoreSlot::SINGLE);
        let lb = MacAddr([2, 0, 0, 0, 0, 0x10]);
        let box_ip = Ipv4Addr::new(10, 1, 0, 10);
        for (ip, mac) in storm_senders() {
            let mut request = crate::testkit::arp(true, mac, ip, MacAddr::ZERO, VIP.0);
            let verdict = pipeline.process(Instant::from_secs(1), IfaceId(0), &mut request);
            assert_eq!(verdict, Verdict::Tx(IfaceId(0)), "{ip} is answered");
        }
        let mut reply = crate::testkit::arp(false, RS.mac, RS.ip, lb, box_ip);
        pipeline.process(Instant::from_secs(2), IfaceId(0), &mut reply);
        assert_eq!(pipeline.neighbors().lookup(RS.ip), Some(RS.mac), "the backend resolves");
        assert!(reaches_backend(&mut pipeline, Instant::from_secs(2), 4000));
    }

    /// A learned neighbour no backend or gateway needs is forgotten once stale; a backend's
    /// is kept however old.
    #[test]
    fn stale_neighbors_nobody_needs_are_forgotten() {
        let mut pipeline = Pipeline::new(segment_snapshot(0), CoreSlot { index: 1, count: 2 });
        pipeline.learn_neighbor(Instant::from_secs(1), CLIENT.ip, CLIENT.mac);
        pipeline.learn_neighbor(Instant::from_secs(1), RS.ip, RS.mac);
        let mut now = Instant::from_secs(2);
        for _ in 0..1000 {
            pipeline.maintain(now);
            now = now.saturating_add(Duration::from_millis(1));
        }
        assert_eq!(pipeline.neighbors().lookup(CLIENT.ip), Some(CLIENT.mac), "still fresh");
        let mut now = Instant::from_secs(1).saturating_add(arp::NEIGHBOR_STALE);
        for _ in 0..1000 {
            pipeline.maintain(now);
            now = now.saturating_add(Duration::from_millis(1));
        }
        assert_eq!(pipeline.neighbors().lookup(CLIENT.ip), None, "stale, forgotten");
        assert_eq!(pipeline.neighbors().lookup(RS.ip), Some(RS.mac), "a backend's is kept");
        assert!(pipeline.counters().get(Stat::NeighborsEvicted) >= 1);
    }

    /// Every VIP is announced, however many: the emit queue holds 64 frames, so the
    /// announcements are paced over the next few rounds.
    #[test]
    fn every_vip_is_announced_paced() {
        let snapshot = segment_snapshot(199);
        let addrs: Vec<Ipv4Addr> = snapshot.announced_addrs().iter().map(|(ip, _)| *ip).collect();
        assert_eq!(addrs.len(), 200);
        let mut pipeline = Pipeline::new(snapshot, CoreSlot::SINGLE);
        pipeline.announce(&addrs);
        let mut announced = std::collections::BTreeSet::new();
        let mut now = Instant::from_secs(1);
        for _ in 0..20 {
            pipeline.drain_emitted(|_, frame| {
                let arp = ArpPacket::new_checked(&frame[ETH_LEN..]).expect("ARP");
                assert_eq!(arp.sender_proto_addr(), arp.target_proto_addr(), "gratuitous");
                announced.insert(arp.sender_proto_addr());
            });
            pipeline.maintain(now);
            now = now.saturating_add(Duration::from_millis(1));
        }
        assert_eq!(announced.len(), 200, "all VIPs announced");
        assert_eq!(pipeline.counters().get(Stat::GratuitousArpSent), 200);
        assert_eq!(pipeline.counters().get(Stat::EmitOverflow), 0);
    }

    /// A probe is an RFC 5227 one (sender 0.0.0.0, broadcast); another host's claim on the
    /// VIP is counted; relayed senders off the segment are not learned.
    #[test]
    fn probes_conflicts_and_off_segment_senders() {
        let mut pipeline = Pipeline::new(segment_snapshot(0), CoreSlot::SINGLE);
        pipeline.probe(&[VIP.0, Ipv4Addr::new(10, 1, 0, 10)]);
        let mut probes = Vec::new();
        pipeline.drain_emitted(|_, frame| probes.push(frame.to_vec()));
        assert_eq!(probes.len(), 1, "only owned addresses are probed");
        let lb = MacAddr([2, 0, 0, 0, 0, 0x10]);
        assert_eq!(
            probes[0],
            crate::testkit::arp(true, lb, Ipv4Addr::UNSPECIFIED, MacAddr::ZERO, VIP.0)
        );
        assert_eq!(pipeline.counters().get(Stat::ArpProbesSent), 1);

        let mut answer = crate::testkit::arp(false, RS.mac, VIP.0, lb, Ipv4Addr::UNSPECIFIED);
        let verdict = pipeline.process(Instant::from_secs(1), IfaceId(0), &mut answer);
        assert_eq!(verdict, Verdict::Drop(DropReason::ArpConflict));
        assert_eq!(pipeline.counters().get(Stat::ArpConflicts), 1);
        assert_eq!(pipeline.neighbors().lookup(VIP.0), None, "a claim teaches nothing");

        pipeline.learn_neighbor(Instant::from_secs(1), Ipv4Addr::new(192, 0, 2, 1), RS.mac);
        pipeline.learn_neighbor(Instant::from_secs(1), Ipv4Addr::new(10, 1, 255, 255), RS.mac);
        assert_eq!(pipeline.counters().get(Stat::NeighborsIgnored), 2);
        assert!(pipeline.neighbors().is_empty());
    }

    /// DR services at 10.1.1.100:80 and 10.1.1.101:80 with the given backends (last octets,
    /// port 80), each backend's MAC static; a small connection table.
    fn services_snapshot(services: &[(u8, &[u8])], generation: u64) -> Arc<Snapshot> {
        scheduled_snapshot("rr", services, generation)
    }

    /// [`services_snapshot`] with another scheduler.
    fn scheduled_snapshot(
        scheduler: &str,
        services: &[(u8, &[u8])],
        generation: u64,
    ) -> Arc<Snapshot> {
        let mut text = String::from(
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\nmac = \"02:00:00:00:00:10\"\n\
             [conntrack]\ncapacity = 64\n",
        );
        for octet in 11..=14 {
            text += &format!(
                "[[neighbor]]\nip = \"10.1.1.{octet}\"\nmac = \"02:00:00:00:00:{octet}\"\n"
            );
        }
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
        assert_eq!(pipeline.active_flows()[position(&before, 101, 11)], 3);

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
            let left = 4002 - port;
            assert_eq!(pipeline.active_flows()[own], left as u32, "after {port} ended");
            let others: u32 = (0..snapshot.backends.len())
                .filter(|&i| i != own)
                .map(|i| pipeline.active_flows()[i])
                .sum();
            assert_eq!(others, 0);
        }
    }

    /// The backend (last octet of its MAC) a new flow from `port` to 10.1.1.100:80 goes to.
    fn picked(pipeline: &mut Pipeline, port: u16) -> u8 {
        use crate::testkit::{self, SYN};
        let vip = (Ipv4Addr::new(10, 1, 1, 100), 80);
        let mut frame = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, port), vip, SYN, b"");
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
}
