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

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::arp::{self, Hold, Learned, NeighborTable};
use crate::conntrack::{
    Conntrack, ConntrackReader, Direction, Flow, FlowState, InsertError, PortRange, Prepared,
};
use crate::flow::{FlowKey, ForwardMode, Proto};
use crate::hash::{flow_hash, table_hash};
use crate::report::{BATCH, Counters, DropReason, Stat};
use crate::sched::{PickContext, SchedState};
use crate::snapshot::{IfaceId, Owned, Route, Snapshot};
use crate::time::Instant;
use crate::wire::checksum;
use crate::wire::icmp::icmp_type;
use crate::wire::ipv4::ip_proto;
use crate::wire::{
    ArpOperation, ArpPacket, EtherType, EthernetFrame, IcmpPacket, Ipv4Packet, MacAddr, TcpFlags,
    TcpPacket, UdpPacket, WireError,
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

/// Where a frame to one backend or client goes: its Ethernet addresses (the next hop's MAC,
/// then the egress interface's) and the egress interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hop {
    addrs: [u8; 12],
    egress: IfaceId,
}

/// A [`Hop`] in a per-core cache, or none (the next hop's MAC or the egress is unknown):
/// 16 bytes, aligned, so a hit is a flag test and two loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
struct HopSlot {
    addrs: [u8; 12],
    egress: IfaceId,
    known: bool,
}

impl HopSlot {
    const UNKNOWN: HopSlot = HopSlot { addrs: [0; 12], egress: IfaceId(0), known: false };

    #[inline]
    fn of(hop: Option<Hop>) -> HopSlot {
        match hop {
            Some(Hop { addrs, egress }) => HopSlot { addrs, egress, known: true },
            None => HopSlot::UNKNOWN,
        }
    }

    #[inline(always)]
    fn hop(self) -> Option<Hop> {
        self.known.then_some(Hop { addrs: self.addrs, egress: self.egress })
    }
}

/// An entry of the per-core cache of the way to clients: the client's address and its hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientHop {
    client: Ipv4Addr,
    hop: Hop,
}

/// Entries of the cache of on-link clients' hops (direct-mapped by client address; a power
/// of two). Clients behind a gateway do not use it: they all share the gateway's hop. A miss
/// costs a neighbour lookup, so a cache this small (a few KiB, in L1) pays as long as most
/// on-link replies go to fewer clients than this at a time; a collision is just a refill.
const CLIENT_HOP_SLOTS: usize = 256;

/// The slot of `client` in the client hop cache: the top bits of a Fibonacci hash.
#[inline]
fn client_hop_slot(client: Ipv4Addr) -> usize {
    let hash = u64::from(client.to_bits()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (hash >> (64 - CLIENT_HOP_SLOTS.trailing_zeros())) as usize
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

/// An ARP frame xlb sends on control's request, paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PacedArp {
    /// A gratuitous ARP announcing that the address is here.
    Announce(Ipv4Addr),
    /// An RFC 5227 probe: does another host answer for the address?
    Probe(Ipv4Addr),
}

/// What [`classify`] made of a frame: the common case (TCP or UDP in IPv4 without options,
/// whole, with a right header checksum, sent to the ingress interface's MAC) by who it is
/// for, or anything else. A classified frame goes straight to [`CoreState::transport`],
/// its 5-tuple read again at fixed offsets ([`plain_transport_at`]), the checks not redone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Not the common case: [`CoreState::process`] checks it step by step.
    Other,
    /// To a VIP.
    ToVip,
    /// To a FullNAT local address.
    ToLocal,
    /// To no address of xlb's, from a NAT backend: maybe a reply.
    FromNatBackend,
}

impl Class {
    /// The class of a TCP/UDP packet the step-by-step checks took, by the owner of its
    /// destination (`None`: from a NAT backend, to no address of xlb's).
    #[inline]
    fn of_owner(owned: Option<Owned>) -> Class {
        match owned {
            Some(Owned::Vip) => Class::ToVip,
            Some(Owned::Local) => Class::ToLocal,
            Some(Owned::Interface(_)) => Class::Other,
            None => Class::FromNatBackend,
        }
    }
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

/// The next hops the snapshot sends to (backends' and gateways'): never evicted from the
/// neighbour table.
fn needed_next_hops(snapshot: &Snapshot) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let backends = snapshot.backends.iter().map(|b| b.route.next_hop);
    backends.chain(snapshot.interfaces.iter().filter_map(|i| i.gateway))
}

/// True for a MAC a reply can go to: not broadcast, multicast or all-zero.
#[inline]
fn is_unicast(mac: MacAddr) -> bool {
    !mac.is_multicast() && mac != MacAddr::ZERO
}

/// True for an ARP sender address no reply may go to: broadcast, multicast, loopback, or
/// the directed broadcast of an interface's subnet. (0.0.0.0 is an RFC 5227 probe: fine.)
fn unreplyable_sender(snapshot: &Snapshot, ip: Ipv4Addr) -> bool {
    ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_loopback()
        || snapshot.interfaces.iter().any(|i| {
            let host_bits = u32::MAX.checked_shr(u32::from(i.prefix_len)).unwrap_or(0);
            i.prefix_len < 31 && i.contains(ip) && ip.to_bits() & host_bits == host_bits
        })
}

/// Whether service `new` of `after` schedules exactly as service `old` of `before`: the
/// same kind over the same backends (by identity and weight, in the same order).
fn same_schedule(before: &Snapshot, old: usize, after: &Snapshot, new: usize) -> bool {
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

fn sched_states(snapshot: &Snapshot, slot: CoreSlot) -> Vec<SchedState> {
    snapshot
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| SchedState::new(s.backends.len(), (u64::from(slot.index) << 32) | i as u64))
        .collect()
}

/// Forgets a flow's share of its backend's active count (found by identity: the snapshot
/// may have renumbered the backends since the flow began).
fn release_backend(snapshot: &Snapshot, active: &mut [u32], flow: &Flow) {
    if let Some(count) = snapshot.backend_of_flow(flow).and_then(|index| active.get_mut(index)) {
        *count = count.saturating_sub(1);
    }
}

/// The L4 view the pipeline needs of a TCP/UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transport {
    key: FlowKey,
    tcp_flags: Option<u8>,
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

    #[inline(never)]
    fn arp(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
    ) -> Verdict {
        let Some(interface) = snapshot.interfaces.get(ingress.index()) else {
            return Verdict::Drop(DropReason::UnknownInterface);
        };
        let eth_src = EthernetFrame::new_unchecked(&*frame).src_addr();
        let arp = match ArpPacket::new_checked(&frame[ETH_LEN..]) {
            Ok(arp) => arp,
            Err(WireError::Unsupported) => return Verdict::Pass,
            Err(_) => return Verdict::Drop(DropReason::BadArp),
        };
        let operation = arp.operation();
        let (sender_ip, sender_mac) = (arp.sender_proto_addr(), arp.sender_hw_addr());
        let target = snapshot.owned(arp.target_proto_addr());
        let ours = matches!(target, Some(Owned::Vip | Owned::Local));

        // Another host says it holds an address of ours (a typo'd config, a stolen VIP):
        // never learned, never answered, counted for control to log. Our own announcement
        // looped back is the kernel's.
        if matches!(snapshot.owned(sender_ip), Some(Owned::Vip | Owned::Local)) {
            if snapshot.interfaces.iter().any(|i| i.mac == sender_mac && i.mac == eth_src) {
                return Verdict::Pass;
            }
            self.counters.add(Stat::ArpConflicts, 1);
            return Verdict::Drop(DropReason::ArpConflict);
        }
        // A reply would go to a broadcast or multicast address: not ours to answer or learn.
        if !is_unicast(eth_src)
            || !is_unicast(sender_mac)
            || unreplyable_sender(snapshot, sender_ip)
        {
            return if ours { Verdict::Drop(DropReason::ArpBadSender) } else { Verdict::Pass };
        }

        // Learn from ARP that names us (a client asking for a VIP, a reply to the box), and
        // refresh what we already know from any ARP; only senders on this interface's
        // subnet can be next hops.
        let known = self.neighbors.get(sender_ip).is_some();
        if !sender_ip.is_unspecified()
            && interface.contains(sender_ip)
            && (target.is_some() || known)
        {
            self.learn(snapshot, now, sender_ip, sender_mac);
        }

        if operation == ArpOperation::Request && ours {
            arp::answer_request(frame, interface.mac);
            self.counters.add(Stat::ArpRepliesSent, 1);
            return Verdict::Tx(ingress);
        }
        Verdict::Pass
    }

    /// Records `ip` at `mac`, counts what the table did, and releases frames held for it.
    fn learn(&mut self, snapshot: &Snapshot, now: Instant, ip: Ipv4Addr, mac: MacAddr) {
        match self.neighbors.learn(now, ip, mac) {
            learned @ (Learned::New | Learned::NewEvicting | Learned::Updated) => {
                self.counters.add(Stat::NeighborsLearned, 1);
                if learned == Learned::NewEvicting {
                    self.counters.add(Stat::NeighborsEvicted, 1);
                }
                self.release_held(snapshot, ip, mac);
            }
            Learned::Full => self.counters.add(Stat::NeighborTableFull, 1),
            Learned::Unchanged | Learned::Static => {}
        }
    }

    /// Queues paced ARP, once each (a request already queued is not queued again).
    fn queue_paced(&mut self, requests: impl Iterator<Item = PacedArp>) {
        for request in requests {
            if !self.paced_arp.contains(&request) {
                self.paced_arp.push_back(request);
            }
        }
    }

    /// Moves paced ARP into the emit queue while it has [`PACED_ARP_ROOM`]. An address that
    /// is no longer a VIP or local address of the snapshot is skipped.
    fn send_paced_arp(&mut self, snapshot: &Snapshot) {
        while self.emit.len() < PACED_ARP_ROOM {
            let Some(request) = self.paced_arp.pop_front() else { return };
            let (PacedArp::Announce(ip) | PacedArp::Probe(ip)) = request;
            if !matches!(snapshot.owned(ip), Some(Owned::Vip | Owned::Local)) {
                continue;
            }
            let Some(route) = snapshot.route(ip) else { continue };
            let Some(interface) = snapshot.interfaces.get(route.egress.index()) else { continue };
            let mac = interface.mac;
            let pushed = self.emit.push_with(route.egress, |buffer| match request {
                PacedArp::Announce(_) => arp::write_gratuitous(buffer, mac, ip),
                PacedArp::Probe(_) => arp::write_probe(buffer, mac, ip),
            });
            let stat = match (pushed, request) {
                (false, _) => Stat::EmitOverflow,
                (true, PacedArp::Announce(_)) => Stat::GratuitousArpSent,
                (true, PacedArp::Probe(_)) => Stat::ArpProbesSent,
            };
            self.counters.add(stat, 1);
        }
    }

    /// Asks again for backends' next hops learned more than [`NEIGHBOR_REFRESH`] ago. Only
    /// core 0 asks: the answer reaches every core (the driver relays snooped ARP).
    fn refresh_neighbors(&mut self, snapshot: &Snapshot, now: Instant) {
        let mut asked = [Ipv4Addr::UNSPECIFIED; REFRESH_PER_SCAN];
        let mut count = 0;
        for backend in &snapshot.backends {
            let next_hop = backend.route.next_hop;
            let Some(neighbor) = self.neighbors.get(next_hop) else { continue };
            if neighbor.is_static
                || now.saturating_duration_since(neighbor.updated) < NEIGHBOR_REFRESH
                || asked[..count].contains(&next_hop)
            {
                continue;
            }
            let Some(interface) = snapshot.interfaces.get(backend.route.egress.index()) else {
                continue;
            };
            let sent = self.emit.push_with(backend.route.egress, |buffer| {
                arp::write_request(buffer, interface.mac, interface.addr, next_hop)
            });
            if !sent {
                self.counters.add(Stat::EmitOverflow, 1);
                break;
            }
            self.counters.add(Stat::ArpRequestsSent, 1);
            asked[count] = next_hop;
            count += 1;
            if count == REFRESH_PER_SCAN {
                break;
            }
        }
    }

    /// Sends the frames held for `next_hop`, now that its MAC is known.
    fn release_held(&mut self, snapshot: &Snapshot, next_hop: Ipv4Addr, mac: MacAddr) {
        let emit = &mut self.emit;
        let counters = &mut self.counters;
        self.hold.release(next_hop, |egress, held| {
            let mut eth = EthernetFrame::new_unchecked(&mut *held);
            eth.set_dst_addr(mac);
            if let Some(interface) = snapshot.interfaces.get(egress.index()) {
                eth.set_src_addr(interface.mac);
            }
            if emit.push(egress, held) {
                counters.add(Stat::ReleasedPackets, 1);
            } else {
                counters.add(Stat::EmitOverflow, 1);
            }
        });
    }

    /// The step-by-step checks of an IPv4 packet, each with its exact drop reason (the
    /// common case never gets here: [`classify`] took it).
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

    /// Finds the flow a key belongs to, here or (for replies) on another core.
    #[inline(always)]
    fn track(
        &mut self,
        now: Instant,
        key: &FlowKey,
        prepared: Prepared,
        tcp_flags: Option<u8>,
        maybe_reply: bool,
    ) -> Option<crate::conntrack::Hit> {
        if let Some(hit) = self.conntrack.track_prepared(now, key, prepared, tcp_flags) {
            return Some(hit);
        }
        if maybe_reply {
            let hash = prepared.hash();
            for peer in &self.peers {
                if let Some(hit) = peer.track_hashed(now, key, hash, tcp_flags) {
                    self.counters.add(Stat::CrossCoreHits, 1);
                    return Some(hit);
                }
            }
        }
        None
    }

    /// [`CoreState::track`] that changes nothing (no last-seen refresh, no state move): for
    /// packets that name a flow without being part of it (ICMP errors, which anyone can
    /// forge; replies from the wrong side).
    #[inline(never)]
    fn peek(&self, now: Instant, key: &FlowKey, hash: u64) -> Option<crate::conntrack::Hit> {
        self.conntrack
            .peek_hashed(now, key, hash)
            .or_else(|| self.peers.iter().find_map(|peer| peer.peek_hashed(now, key, hash)))
    }

    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn transport(
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
        debug_assert_eq!(hash, table_hash(&key), "the hash is this key's");
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
        if let Some(hit) = self.track(now, &key, prepared, transport.tcp_flags, maybe_reply) {
            // Handshake packets and state changes (a few per connection) may reopen the flow
            // or tell something of the backend's health; the rest go straight on.
            if hit.state == FlowState::SynSeen || hit.state != hit.previous {
                if hit.state == FlowState::SynSeen
                    && matches!(hit.previous, FlowState::Closing | FlowState::Closed)
                    && class == Class::ToVip
                {
                    return self.reopen(snapshot, now, ingress, frame, transport, hash);
                }
                self.passive_sign(snapshot, &hit, transport.tcp_flags);
            }
            return self.forward(snapshot, now, frame, &hit.flow, hit.direction);
        }
        match class {
            Class::ToVip => self.new_flow(snapshot, now, ingress, frame, transport, prepared),
            Class::ToLocal => Verdict::Drop(DropReason::NoFlow),
            Class::FromNatBackend | Class::Other => Verdict::Pass,
        }
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
    fn passive_sign(
        &mut self,
        snapshot: &Snapshot,
        hit: &crate::conntrack::Hit,
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

    /// A client SYN on a closing or closed flow's 5-tuple (the client reused its port): a new
    /// connection, as IPVS's default `conn_reuse_mode` has it. The old flow goes (its
    /// backend's active count with it) and the SYN is scheduled like any new flow, so it
    /// counts as a connection and may go to another backend (not under weight 0).
    #[inline(never)]
    fn reopen(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        transport: Transport,
        hash: u64,
    ) -> Verdict {
        if let Some(old) = self.conntrack.remove(&transport.key) {
            release_backend(snapshot, &mut self.active, &old);
        }
        self.counters.add(Stat::ReusedFlows, 1);
        self.new_flow(snapshot, now, ingress, frame, transport, Prepared::new(hash))
    }

    /// Out of line: keeps the hit path (which calls it on a miss) small. `prepared` is the
    /// lookup of `transport.key` that just missed (its hash is `table_hash(&transport.key)`):
    /// the insert starts from what it proved.
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
        let key = transport.key;
        // The lookup's hash is the connection table's; Maglev, stateless DR and the FullNAT
        // local port take the pinned flow hash, which every box and build agrees on.
        let hash = flow_hash(&key);
        let Some(service_index) = snapshot.service_at(key.dst_addr, key.dst_port, key.proto) else {
            return Verdict::Drop(DropReason::NoService);
        };
        let service = &snapshot.services[service_index];
        let range = service.backends.clone();
        // A TCP packet that opens nothing (no SYN) is never tracked: otherwise a flood of
        // spoofed ACKs would fill the table with flows that look established and are never
        // evicted. DR forwards it by consistent hashing alone, so a connection picked up
        // mid-stream (after a restart) stays on its backend; NAT and FullNAT cannot
        // translate without state.
        let opens = transport
            .tcp_flags
            .is_none_or(|flags| flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN);
        if !opens {
            return match service.forward {
                ForwardMode::Dr => {
                    self.forward_stateless(snapshot, now, frame, &key, service_index, hash)
                }
                ForwardMode::Nat | ForwardMode::FullNat => Verdict::Drop(DropReason::NoFlow),
            };
        }
        let Some(state) = self.sched.get_mut(service_index) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let pick = match service.scheduler.maglev_table() {
            // What `pick` does for Maglev, which needs only the flow hash (the common
            // scheduler): no context to build, no call.
            Some(table) => table.lookup(hash),
            None => {
                let context = PickContext {
                    flow_hash: hash,
                    client: key.src_addr,
                    active: self.active.get(range.clone()).unwrap_or(&[]),
                    response_time_us: self.response_time_us.get(range.clone()).unwrap_or(&[]),
                };
                service.scheduler.pick(state, &context)
            }
        };
        let Some(pick) = pick else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let backend_index = range.start + pick;
        let Some(backend) = snapshot.backends.get(backend_index) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let (local_addr, local_port) = if service.forward == ForwardMode::FullNat {
            let active = &mut self.active;
            match self.conntrack.allocate_local_port(
                now,
                key.proto,
                backend.addr,
                backend.port,
                &service.local_addrs,
                self.slot.local_ports(),
                hash,
                |evicted| release_backend(snapshot, active, evicted),
            ) {
                Some(local) => local,
                None => return Verdict::Drop(DropReason::NoLocalPort),
            }
        } else {
            (key.src_addr, key.src_port)
        };
        let flow = Flow {
            proto: key.proto,
            forward: service.forward,
            client_addr: key.src_addr,
            client_port: key.src_port,
            vip: key.dst_addr,
            vport: key.dst_port,
            backend_addr: backend.addr,
            backend_port: backend.port,
            local_addr,
            local_port,
            service: service_index as u16,
            backend: backend_index as u16,
        };
        let active = &mut self.active;
        let inserted =
            self.conntrack.insert_prepared(now, &flow, prepared, transport.tcp_flags, |evicted| {
                release_backend(snapshot, active, evicted);
            });
        match inserted {
            Ok(_) => {
                self.counters.add(Stat::NewFlows, 1);
                if let Some(count) = self.active.get_mut(backend_index) {
                    *count += 1;
                }
                if let Some(counters) = self.counters.backend(backend_index) {
                    counters.connections += 1;
                }
            }
            Err(_) if service.forward == ForwardMode::Dr => {
                return self.forward_stateless(snapshot, now, frame, &key, service_index, hash);
            }
            Err(InsertError::Flood) => return Verdict::Drop(DropReason::Flood),
            Err(InsertError::Full | InsertError::Exists) => {
                return Verdict::Drop(DropReason::ConntrackFull);
            }
        }
        self.forward(snapshot, now, frame, &flow, Direction::Original)
    }

    /// DR without a tracked flow: the service's weighted Maglev table alone picks the backend,
    /// so every packet of the flow, on any core and after any restart, agrees.
    fn forward_stateless(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        key: &FlowKey,
        service_index: usize,
        hash: u64,
    ) -> Verdict {
        let service = &snapshot.services[service_index];
        let Some(pick) = service.fallback.lookup(hash) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let backend_index = service.backends.start + pick;
        let Some(backend) = snapshot.backends.get(backend_index) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let flow = Flow {
            proto: key.proto,
            forward: ForwardMode::Dr,
            client_addr: key.src_addr,
            client_port: key.src_port,
            vip: key.dst_addr,
            vport: key.dst_port,
            backend_addr: backend.addr,
            backend_port: backend.port,
            local_addr: key.src_addr,
            local_port: key.src_port,
            service: service_index as u16,
            backend: backend_index as u16,
        };
        self.counters.add(Stat::StatelessPackets, 1);
        self.forward(snapshot, now, frame, &flow, Direction::Original)
    }

    /// Rewrites a tracked packet for its direction and sends it to its next hop.
    #[inline(always)]
    fn forward(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
        direction: Direction,
    ) -> Verdict {
        // DR leaves the IP packet as it is: only the Ethernet header changes (an L2 forward,
        // as IPVS DR: the TTL too). NAT and FullNAT route: the TTL goes down by one, and a
        // packet that arrives with 1 expires here.
        if flow.forward != ForwardMode::Dr {
            let (src, dst) = translate(flow, direction);
            if !route_transport(frame, flow.proto, src, dst) {
                return Verdict::Drop(DropReason::TtlExceeded);
            }
        }
        let bytes = frame.len() as u64;
        let backend = backend_of(snapshot, flow);
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

    /// Sends a frame already translated for `direction` of `flow` to its next hop: the
    /// flow's backend (`backend` is its index, when still in the snapshot) or its client.
    #[inline]
    fn deliver(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
        direction: Direction,
        backend: Option<usize>,
    ) -> Verdict {
        let (route, backend) = match (direction, backend) {
            (Direction::Original, Some(index)) => {
                (Some(snapshot.backends[index].route), Some(index))
            }
            (Direction::Original, None) => (snapshot.route(flow.backend_addr), None),
            (Direction::Reply, _) => (snapshot.route(flow.client_addr), None),
        };
        match route {
            Some(route) => self.send(snapshot, now, frame, route, backend),
            None => Verdict::Drop(DropReason::NoRoute),
        }
    }

    /// The cached way to backend `index`, refreshing the caches first if the neighbour table
    /// changed since they were filled.
    #[inline]
    fn backend_hop(&mut self, snapshot: &Snapshot, index: usize) -> Option<Hop> {
        if self.hops_generation != self.neighbors.generation() {
            self.refresh_hops(snapshot);
        }
        self.backend_hops.get(index)?.hop()
    }

    /// The way to `client` (the destination of a reply), as `Snapshot::route` and the
    /// neighbour table give it: the default gateway's cached hop unless the client is on an
    /// interface's subnet; else the client's own, from the on-link cache or looked up (and
    /// cached). None when there is no route or the next hop's MAC is unknown (`deliver`
    /// then drops, or holds the frame and asks).
    #[inline]
    fn client_hop(&mut self, snapshot: &Snapshot, client: Ipv4Addr) -> Option<Hop> {
        if self.hops_generation != self.neighbors.generation() {
            self.refresh_hops(snapshot);
        }
        let bits = client.to_bits();
        if !self.subnets.iter().any(|&(network, mask)| bits & mask == network) {
            return self.gateway_hop.hop();
        }
        let entry = self.client_hops.get_mut(client_hop_slot(client))?;
        match *entry {
            Some(cached) if cached.client == client => Some(cached.hop),
            _ => {
                let hop = hop_to(snapshot, &self.neighbors, snapshot.route(client)?)?;
                *entry = Some(ClientHop { client, hop });
                Some(hop)
            }
        }
    }

    /// Fills the per-backend cache and the gateway's hop from the neighbour table and the
    /// snapshot's interfaces, and empties the on-link client cache.
    #[cold]
    fn refresh_hops(&mut self, snapshot: &Snapshot) {
        for (hop, backend) in self.backend_hops.iter_mut().zip(&snapshot.backends) {
            *hop = HopSlot::of(hop_to(snapshot, &self.neighbors, backend.route));
        }
        // The route of an address on no interface's subnet: `Snapshot::route` gives the
        // first interface with a gateway.
        let gateway = snapshot.interfaces.iter().enumerate().find_map(|(index, interface)| {
            let next_hop = interface.gateway?;
            Some(Route { egress: IfaceId(index as u8), next_hop })
        });
        self.gateway_hop =
            HopSlot::of(gateway.and_then(|route| hop_to(snapshot, &self.neighbors, route)));
        self.client_hops.fill(None);
        self.hops_generation = self.neighbors.generation();
    }

    /// The MAC of `route`'s next hop; through the per-backend cache when the route is a
    /// backend's.
    #[inline]
    fn next_hop_mac(
        &mut self,
        snapshot: &Snapshot,
        route: Route,
        backend: Option<usize>,
    ) -> Option<MacAddr> {
        let Some(index) = backend else {
            return self.neighbors.lookup(route.next_hop);
        };
        let hop = self.backend_hop(snapshot, index)?;
        let mut mac = [0; 6];
        mac.copy_from_slice(&hop.addrs[..6]);
        Some(MacAddr(mac))
    }

    /// Fills in the Ethernet header towards `route`, or holds the frame and asks for the next
    /// hop's MAC.
    #[inline]
    fn send(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        route: Route,
        backend: Option<usize>,
    ) -> Verdict {
        let Some(interface) = snapshot.interfaces.get(route.egress.index()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let next_hop_mac = self.next_hop_mac(snapshot, route, backend);
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        eth.set_src_addr(interface.mac);
        if let Some(mac) = next_hop_mac {
            eth.set_dst_addr(mac);
            return Verdict::Tx(route.egress);
        }
        match self.hold.hold(now, route.next_hop, route.egress, frame) {
            Hold::HeldAskNow => {
                let asked = self.emit.push_with(route.egress, |buffer| {
                    arp::write_request(buffer, interface.mac, interface.addr, route.next_hop)
                });
                let stat = if asked { Stat::ArpRequestsSent } else { Stat::EmitOverflow };
                self.counters.add(stat, 1);
                Verdict::Held
            }
            Hold::Held => Verdict::Held,
            Hold::QueueFull | Hold::TooManyPending => Verdict::Drop(DropReason::NeighborHoldFull),
            Hold::TooLarge => Verdict::Drop(DropReason::NeighborFrameTooLarge),
        }
    }

    #[inline(never)]
    fn icmp(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        owned: Option<Owned>,
        icmp_range: std::ops::Range<usize>,
    ) -> Verdict {
        let Ok(icmp) = IcmpPacket::new_checked(&frame[icmp_range.clone()]) else {
            return reject(owned, DropReason::Truncated);
        };
        match icmp.msg_type() {
            icmp_type::ECHO_REQUEST if owned.is_some() => {
                echo_reply(frame, icmp_range);
                self.counters.add(Stat::IcmpEchoReplies, 1);
                Verdict::Tx(ingress)
            }
            kind if crate::wire::icmp::is_error(kind) => {
                self.icmp_error(snapshot, now, frame, owned, icmp_range)
            }
            _ => reject(owned, DropReason::UnsupportedIcmp),
        }
    }

    /// An ICMP error quotes a packet (its header and 8 bytes) that went the *other* way. The
    /// flow is found by that quote reversed; the error then travels like a packet of that
    /// direction, and the quote is translated as the reverse of the same translation.
    fn icmp_error(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        owned: Option<Owned>,
        icmp_range: std::ops::Range<usize>,
    ) -> Verdict {
        let Some(quoted) = quoted_transport(&frame[icmp_range.clone()]) else {
            return reject(owned, DropReason::Truncated);
        };
        let key = quoted.key.reversed();
        // Anyone can send an error quoting a flow: it is forwarded, but it neither keeps the
        // flow alive nor moves its state.
        let Some(hit) = self.peek(now, &key, table_hash(&key)) else {
            return reject(owned, DropReason::IcmpNoFlow);
        };
        let flow = hit.flow;
        if flow.forward != ForwardMode::Dr && !decrement_ttl(frame) {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let (src, dst) = translate(&flow, hit.direction);
        // Outer header: to the translated destination; from the translated source if the
        // error came from the flow's peer itself (a router's address is left alone).
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
            if ip.dst_addr() != dst.0 {
                ip.rewrite_dst_addr(dst.0);
            }
            if ip.src_addr() == key.src_addr && ip.src_addr() != src.0 {
                ip.rewrite_src_addr(src.0);
            }
        }
        // The quoted packet went the other way: its source is our destination and vice versa.
        let quote_start = icmp_range.start + 8;
        rewrite_quote(&mut frame[quote_start..icmp_range.end], flow.proto, dst, src);
        let icmp_range_start = icmp_range.start;
        let mut icmp = IcmpPacket::new_unchecked(&mut frame[icmp_range]);
        icmp.fill_checksum();
        self.counters.add(Stat::IcmpErrorsForwarded, 1);
        let backend = backend_of(snapshot, &flow);
        // Network, host, protocol or port unreachable (codes 0-3); not "fragmentation
        // needed" or "prohibited", which are about the path.
        let unreachable = frame.get(icmp_range_start) == Some(&icmp_type::DEST_UNREACHABLE)
            && frame.get(icmp_range_start + 1).is_some_and(|code| *code <= 3);
        if unreachable
            && hit.direction == Direction::Reply
            && let Some(passive) = backend.and_then(|i| self.counters.passive.get_mut(i))
        {
            passive.unreachable += 1;
        }
        self.deliver(snapshot, now, frame, &flow, hit.direction, backend)
    }
}

/// The subnets of the snapshot's interfaces, as [`CoreState::subnets`] keeps them.
fn subnets(snapshot: &Snapshot) -> Box<[(u32, u32)]> {
    snapshot
        .interfaces
        .iter()
        .map(|interface| (interface.addr.to_bits() & interface.mask(), interface.mask()))
        .collect()
}

/// The way along `route`, if its egress interface exists and its next hop's MAC is known.
fn hop_to(snapshot: &Snapshot, neighbors: &NeighborTable, route: Route) -> Option<Hop> {
    let interface = snapshot.interfaces.get(route.egress.index())?;
    let mac = neighbors.lookup(route.next_hop)?;
    let mut addrs = [0; 12];
    addrs[..6].copy_from_slice(&mac.0);
    addrs[6..].copy_from_slice(&interface.mac.0);
    Some(Hop { addrs, egress: route.egress })
}

/// The flow's backend index in this snapshot, by its hint or, once renumbered, its identity.
#[inline]
fn backend_of(snapshot: &Snapshot, flow: &Flow) -> Option<usize> {
    snapshot.backend_of_flow(flow)
}

/// Source and destination a packet of `direction` leaves with.
#[inline]
fn translate(flow: &Flow, direction: Direction) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let client = (flow.client_addr, flow.client_port);
    let vip = (flow.vip, flow.vport);
    let backend = (flow.backend_addr, flow.backend_port);
    let local = (flow.local_addr, flow.local_port);
    match (flow.forward, direction) {
        (ForwardMode::Dr, Direction::Original) => (client, vip),
        (ForwardMode::Dr, Direction::Reply) => (vip, client),
        (ForwardMode::Nat, Direction::Original) => (client, backend),
        (ForwardMode::Nat, Direction::Reply) => (vip, client),
        (ForwardMode::FullNat, Direction::Original) => (local, backend),
        (ForwardMode::FullNat, Direction::Reply) => (vip, client),
    }
}

/// Recognises the common frame in one pass over fixed offsets: TCP or UDP in IPv4
/// ([`plain_transport`]) sent to `mac` (the ingress interface's), for a VIP or local address,
/// or from a NAT backend (maybe a reply); with the connection tables' hash of its 5-tuple. [`Class::Other`]
/// for anything else (a broadcast, ARP, ICMP, the box's own address, traffic that is not
/// xlb's, anything malformed): [`CoreState::process`] then checks it step by step. Whatever
/// this classifies, those checks would have taken to [`CoreState::transport`] with the same
/// arguments.
#[inline(always)]
fn classify(snapshot: &Snapshot, mac: MacAddr, frame: &[u8]) -> (Class, u64) {
    let Some((eth, packet)) = frame.split_first_chunk::<ETH_LEN>() else {
        return (Class::Other, 0);
    };
    let Some(header) = packet.first_chunk::<20>() else {
        return (Class::Other, 0);
    };
    if eth[..6] != mac.0 || eth[12..14] != EtherType::IPV4.to_be_bytes() {
        return (Class::Other, 0);
    }
    let Some(transport) = plain_transport(header, packet) else {
        return (Class::Other, 0);
    };
    let class = match snapshot.owned(transport.key.dst_addr) {
        Some(Owned::Vip) => Class::ToVip,
        Some(Owned::Local) => Class::ToLocal,
        Some(Owned::Interface(_)) => Class::Other,
        None if snapshot.is_nat_backend(transport.key.src_addr) => Class::FromNatBackend,
        None => Class::Other,
    };
    (class, table_hash(&transport.key))
}

/// The TCP/UDP view of a frame [`classify`] accepted, read again at the fixed offsets of
/// IPv4 without options (no check is redone: the frame has not changed since). None only
/// for a frame too short to be one (never, for a classified frame).
#[inline(always)]
fn plain_transport_at(frame: &[u8]) -> Option<Transport> {
    let head = frame.first_chunk::<{ ETH_LEN + 20 + 8 }>()?;
    let (proto, tcp_flags) = if head[ETH_LEN + 9] == ip_proto::TCP {
        (Proto::Tcp, Some(*frame.get(ETH_LEN + 20 + 13)?))
    } else {
        (Proto::Udp, None)
    };
    let at = |offset: usize| [head[offset], head[offset + 1], head[offset + 2], head[offset + 3]];
    let ports = at(ETH_LEN + 20);
    Some(Transport {
        key: FlowKey {
            src_addr: Ipv4Addr::from(at(ETH_LEN + 12)),
            dst_addr: Ipv4Addr::from(at(ETH_LEN + 16)),
            src_port: u16::from_be_bytes([ports[0], ports[1]]),
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
            proto,
        },
        tcp_flags,
    })
}

/// The TCP/UDP view of the common packet, checked in one pass over fixed offsets: IPv4
/// without options (first byte 0x45), all of it in the buffer (`total_len` ≥ 20), not a
/// fragment, a right header checksum, then a whole TCP header or UDP datagram. `header` is
/// the first 20 bytes of `packet`.
///
/// None for anything else, which the step-by-step checks then judge (and drop with their
/// exact reason): this only accepts, and what it accepts they accept too, with the same
/// [`Transport`] ([`transport`] on `packet[20..total_len]`).
#[inline(always)]
fn plain_transport(header: &[u8; 20], packet: &[u8]) -> Option<Transport> {
    const VERSION_4_NO_OPTIONS: u8 = 0x45;
    const MORE_FRAGMENTS_OR_OFFSET: u16 = 0x3fff;
    if header[0] != VERSION_4_NO_OPTIONS {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let segment = packet.get(20..total_len)?;
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    if flags_offset & MORE_FRAGMENTS_OR_OFFSET != 0 || !checksum::verifies(header) {
        return None;
    }
    let (proto, tcp_flags) = match header[9] {
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
    let ports = segment.first_chunk::<4>()?;
    Some(Transport {
        key: FlowKey {
            src_addr: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
            dst_addr: Ipv4Addr::new(header[16], header[17], header[18], header[19]),
            src_port: u16::from_be_bytes([ports[0], ports[1]]),
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
            proto,
        },
        tcp_flags,
    })
}

#[inline]
fn transport(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> Option<Transport> {
    let (proto, src_port, dst_port, tcp_flags) = match protocol {
        ip_proto::TCP => {
            let tcp = TcpPacket::new_checked(segment).ok()?;
            (Proto::Tcp, tcp.src_port(), tcp.dst_port(), Some(tcp.flags().0))
        }
        ip_proto::UDP => {
            let udp = UdpPacket::new_checked(segment).ok()?;
            (Proto::Udp, udp.src_port(), udp.dst_port(), None)
        }
        _ => return None,
    };
    Some(Transport {
        key: FlowKey { src_addr: src, dst_addr: dst, src_port, dst_port, proto },
        tcp_flags,
    })
}

/// The 5-tuple of the packet an ICMP error quotes (its IPv4 header and first 8 bytes).
fn quoted_transport(icmp: &[u8]) -> Option<Transport> {
    let quote = icmp.get(8..)?;
    let header_len = usize::from(*quote.first()? & 0x0f) * 4;
    if quote.first()? >> 4 != 4 || header_len < 20 || quote.len() < header_len + 8 {
        return None;
    }
    let ip = Ipv4Packet::new_unchecked(quote);
    let ports = &quote[header_len..header_len + 8];
    let proto = Proto::from_number(ip.protocol())?;
    Some(Transport {
        key: FlowKey {
            src_addr: ip.src_addr(),
            dst_addr: ip.dst_addr(),
            src_port: u16::from_be_bytes([ports[0], ports[1]]),
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
            proto,
        },
        tcp_flags: None,
    })
}

/// Decrements the TTL of the IPv4 packet in `frame` as a router does, patching the header
/// checksum incrementally (RFC 1624, on the (TTL, protocol) word in memory order as
/// [`rewrite_transport`] explains). False, and the frame untouched, if the TTL is 0 or 1:
/// the packet expires here. (A frame too short to hold a header never gets here: it was
/// refused on the way in; it is left alone.)
#[inline]
fn decrement_ttl(frame: &mut [u8]) -> bool {
    let Some(header) = frame.get_mut(ETH_LEN..ETH_LEN + 20) else {
        return true;
    };
    let ttl = header[8];
    if ttl <= 1 {
        return false;
    }
    let old = u16::from_ne_bytes([header[8], header[9]]);
    header[8] = ttl - 1;
    let new = u16::from_ne_bytes([header[8], header[9]]);
    let checksum = u16::from_ne_bytes([header[10], header[11]]);
    let patched = checksum::Delta::NONE.u16(old, new).apply(checksum);
    header[10..12].copy_from_slice(&patched.to_ne_bytes());
    true
}

/// Rewrites source and destination of the TCP/UDP packet in `frame` where they differ,
/// updating the IPv4 and L4 checksums incrementally (RFC 1624), one [`checksum::Delta`] per
/// checksum. The TTL is left as it is.
///
/// The checksum arithmetic runs on 16-bit words as they sit in memory (the machine's byte
/// order) instead of swapping each to network order and back: a one's-complement sum of
/// byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)), and the only special values
/// an update knows, 0 and 0xffff, are their own swaps. So the bytes written are exactly
/// those of the same update done in network order (`reference_rewrite_transport` in the
/// tests).
#[cfg_attr(not(test), allow(dead_code))]
#[inline]
fn rewrite_transport(frame: &mut [u8], proto: Proto, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) {
    rewrite_plain(frame, proto, src, dst, false);
}

/// What NAT and FullNAT do to a packet they forward, as a router does: the TTL one less and
/// [`rewrite_transport`], with each checksum patched once for all of it. False, and the
/// frame untouched, if the TTL is 0 or 1: the packet expires here.
#[inline]
fn route_transport(
    frame: &mut [u8],
    proto: Proto,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> bool {
    rewrite_plain(frame, proto, src, dst, true)
}

/// Offsets in a frame of IPv4 without options (every packet [`CoreState::transport`] takes:
/// one with options is dropped before it) and of the TCP or UDP header after it.
mod plain {
    use super::ETH_LEN;
    pub const TTL: usize = ETH_LEN + 8;
    pub const IP_CHECKSUM: usize = ETH_LEN + 10;
    pub const SRC_ADDR: usize = ETH_LEN + 12;
    pub const DST_ADDR: usize = ETH_LEN + 16;
    pub const PORTS: usize = ETH_LEN + 20;
    pub const UDP_CHECKSUM: usize = PORTS + 6;
    pub const TCP_CHECKSUM: usize = PORTS + 16;
    /// Up to the end of a UDP header, the shortest L4 header.
    pub const MIN_LEN: usize = PORTS + 8;
}

/// [`rewrite_transport`], and the TTL's decrement (see [`route_transport`]) when `route`, at
/// the fixed offsets of IPv4 without options. The frame is one [`CoreState::transport`]
/// took, so it holds the whole TCP or UDP header; a frame too short for one (never seen
/// here) is left alone. Inlined into the forwarding path: the call cost NAT and FullNAT a
/// tenth of their hit path's instructions.
#[inline(always)]
fn rewrite_plain(
    frame: &mut [u8],
    proto: Proto,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    route: bool,
) -> bool {
    let Some(head) = frame.first_chunk_mut::<{ plain::MIN_LEN }>() else {
        return true;
    };
    let word = |head: &[u8; plain::MIN_LEN], at: usize| {
        u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]])
    };
    let half =
        |head: &[u8; plain::MIN_LEN], at: usize| u16::from_ne_bytes([head[at], head[at + 1]]);
    let mut ip = checksum::Delta::NONE;
    let mut changed = route;
    if route {
        let ttl = head[plain::TTL];
        if ttl <= 1 {
            return false;
        }
        // The TTL shares its 16-bit word with the protocol.
        let old = half(head, plain::TTL);
        head[plain::TTL] = ttl - 1;
        ip = ip.u16(old, half(head, plain::TTL));
    }
    // The addresses are in the pseudo-header the L4 checksum covers too.
    let mut addrs = checksum::Delta::NONE;
    for (at, addr) in [(plain::SRC_ADDR, src.0), (plain::DST_ADDR, dst.0)] {
        let (old, new) = (word(head, at), u32::from_ne_bytes(addr.octets()));
        if old != new {
            head[at..at + 4].copy_from_slice(&addr.octets());
            addrs = addrs.u32(old, new);
            changed = true;
        }
    }
    if changed {
        let patched = ip.and(addrs).apply(half(head, plain::IP_CHECKSUM));
        head[plain::IP_CHECKSUM..plain::IP_CHECKSUM + 2].copy_from_slice(&patched.to_ne_bytes());
    }
    let old_ports = word(head, plain::PORTS);
    head[plain::PORTS..plain::PORTS + 2].copy_from_slice(&src.1.to_be_bytes());
    head[plain::PORTS + 2..plain::PORTS + 4].copy_from_slice(&dst.1.to_be_bytes());
    // One update for all the changes: the same bits as one update per change in a row.
    let l4 = addrs.u32(old_ports, word(head, plain::PORTS));
    let l4_checksum = match proto {
        Proto::Tcp => plain::TCP_CHECKSUM,
        Proto::Udp => plain::UDP_CHECKSUM,
    };
    if let Some(field) = frame.get_mut(l4_checksum..l4_checksum + 2) {
        let old = u16::from_ne_bytes([field[0], field[1]]);
        let new = match proto {
            Proto::Tcp => l4.apply(old),
            Proto::Udp => l4.apply_udp(old),
        };
        field.copy_from_slice(&new.to_ne_bytes());
    }
    true
}

/// Rewrites the packet quoted in an ICMP error: addresses (with the quoted header's checksum)
/// and ports, and the quoted L4 checksum when enough of it is there.
fn rewrite_quote(quote: &mut [u8], proto: Proto, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) {
    let header_len = usize::from(quote[0] & 0x0f) * 4;
    let mut ip = Ipv4Packet::new_unchecked(&mut *quote);
    let old_src = ip.src_addr();
    let old_dst = ip.dst_addr();
    if old_src != src.0 {
        ip.rewrite_src_addr(src.0);
    }
    if old_dst != dst.0 {
        ip.rewrite_dst_addr(dst.0);
    }
    let segment = &mut quote[header_len..];
    let memory = |addr: Ipv4Addr| u32::from_ne_bytes(addr.octets());
    let addrs = checksum::Delta::NONE
        .u32(memory(old_src), memory(src.0))
        .u32(memory(old_dst), memory(dst.0));
    rewrite_ports(segment, proto, addrs, src.1, dst.1);
}

/// Sets the ports of a TCP/UDP header at the start of `segment` and patches its checksum for
/// the port changes and `addrs`, the change of the addresses in its pseudo-header, summed
/// over words in memory order (see [`rewrite_transport`]). A quoted segment may be cut
/// short: its checksum is patched only when present.
#[inline]
fn rewrite_ports(
    segment: &mut [u8],
    proto: Proto,
    addrs: checksum::Delta,
    src_port: u16,
    dst_port: u16,
) {
    if segment.len() < 8 {
        return;
    }
    let Some(ports) = segment.first_chunk_mut::<4>() else {
        return;
    };
    let old_src_port = u16::from_ne_bytes([ports[0], ports[1]]);
    let old_dst_port = u16::from_ne_bytes([ports[2], ports[3]]);
    let (src_port, dst_port) = (src_port.to_be(), dst_port.to_be());
    ports[0..2].copy_from_slice(&src_port.to_ne_bytes());
    ports[2..4].copy_from_slice(&dst_port.to_ne_bytes());
    let checksum_at = match proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
    };
    let Some(field) = segment.get_mut(checksum_at..checksum_at + 2) else {
        return;
    };
    let old = u16::from_ne_bytes([field[0], field[1]]);
    // One update for all the changes: the same bits as one update per change in a row.
    let delta = addrs.u16(old_src_port, src_port).u16(old_dst_port, dst_port);
    let new = match proto {
        Proto::Tcp => delta.apply(old),
        Proto::Udp => delta.apply_udp(old),
    };
    field.copy_from_slice(&new.to_ne_bytes());
}

/// Turns an echo request into its reply in place: addresses and MACs swapped, type 0, TTL
/// reset, checksums patched.
fn echo_reply(frame: &mut [u8], icmp_range: std::ops::Range<usize>) {
    {
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        let (src, dst) = (eth.src_addr(), eth.dst_addr());
        eth.set_src_addr(dst);
        eth.set_dst_addr(src);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        // Swapping two 16-bit-aligned words leaves the one's-complement sum unchanged.
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        let old_ttl_word = u16::from_be_bytes([ip.ttl(), ip.protocol()]);
        ip.set_ttl(64);
        let new_ttl_word = u16::from_be_bytes([64, ip.protocol()]);
        let c = checksum::update_u16(ip.checksum(), old_ttl_word, new_ttl_word);
        ip.set_checksum(c);
    }
    let mut icmp = IcmpPacket::new_unchecked(&mut frame[icmp_range]);
    let code = icmp.code();
    let old = u16::from_be_bytes([icmp_type::ECHO_REQUEST, code]);
    let new = u16::from_be_bytes([icmp_type::ECHO_REPLY, code]);
    icmp.set_msg_type(icmp_type::ECHO_REPLY);
    let c = checksum::update_u16(icmp.checksum(), old, new);
    icmp.set_checksum(c);
}

/// Frames the pipeline sends on its own, in one buffer allocated up front.
#[derive(Debug)]
struct EmitQueue {
    buffer: Vec<u8>,
    frames: Vec<(IfaceId, usize)>,
}

impl EmitQueue {
    fn new() -> Self {
        EmitQueue {
            buffer: vec![0; EMIT_CAPACITY * EMIT_FRAME],
            frames: Vec::with_capacity(EMIT_CAPACITY),
        }
    }

    /// Queues a frame written by `write` (which returns its length). False when full.
    fn push_with(&mut self, egress: IfaceId, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let index = self.frames.len();
        if index >= EMIT_CAPACITY {
            return false;
        }
        let slot = &mut self.buffer[index * EMIT_FRAME..(index + 1) * EMIT_FRAME];
        let len = write(slot).min(EMIT_FRAME);
        self.frames.push((egress, len));
        true
    }

    fn push(&mut self, egress: IfaceId, frame: &[u8]) -> bool {
        if frame.len() > EMIT_FRAME {
            return false;
        }
        self.push_with(egress, |slot| {
            slot[..frame.len()].copy_from_slice(frame);
            frame.len()
        })
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn drain(&mut self, mut send: impl FnMut(IfaceId, &[u8])) -> usize {
        let count = self.frames.len();
        for (index, (egress, len)) in self.frames.iter().enumerate() {
            send(*egress, &self.buffer[index * EMIT_FRAME..index * EMIT_FRAME + len]);
        }
        self.frames.clear();
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Host;

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

    /// The step-by-step checks of `CoreState::ipv4` for a TCP/UDP packet, as one function.
    fn checked_transport(packet: &[u8]) -> Option<Transport> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        if !ip.verify_checksum() || ip.is_fragment() || ip.has_options() {
            return None;
        }
        let segment = packet.get(ip.header_len()..usize::from(ip.total_len()))?;
        transport(ip.src_addr(), ip.dst_addr(), ip.protocol(), segment)
    }

    proptest::proptest! {
        /// The one-pass check accepts the common packets, and whatever it accepts the
        /// step-by-step checks accept too, with the same view: damaged headers (any byte of
        /// the first 48 set to anything, with the header checksum made right again or not:
        /// versions, options, fragments, lengths, L4 header lengths) and cut or padded
        /// buffers included.
        #[test]
        fn plain_transport_accepts_only_what_the_full_checks_accept(
            udp in proptest::prelude::any::<bool>(),
            flags in 0u8..=0x3f,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            damage in proptest::collection::vec((0usize..48, proptest::prelude::any::<u8>()), 0..3),
            fix_checksum in proptest::prelude::any::<bool>(),
            cut in proptest::option::of(1usize..8),
            pad in 0usize..8,
        ) {
            use crate::testkit::{self, Flags};
            let mac = MacAddr([2, 0, 0, 0, 0, 1]);
            let (a, b) = ((Ipv4Addr::new(10, 0, 0, 1), 1234), (Ipv4Addr::new(10, 0, 0, 2), 80));
            let frame = if udp {
                testkit::udp(mac, mac, a, b, &payload)
            } else {
                let flags = Flags {
                    fin: flags & 1 != 0,
                    syn: flags & 2 != 0,
                    rst: flags & 4 != 0,
                    psh: flags & 8 != 0,
                    ack: flags & 16 != 0,
                };
                testkit::tcp(mac, mac, a, b, flags, &payload)
            };
            let mut packet = frame[ETH_LEN..].to_vec();
            let intact = plain_transport(packet.first_chunk().unwrap(), &packet);
            proptest::prop_assert!(intact.is_some());
            proptest::prop_assert_eq!(intact, checked_transport(&packet));
            for (at, byte) in &damage {
                if let Some(slot) = packet.get_mut(*at) {
                    *slot = *byte;
                }
            }
            if fix_checksum && packet.len() >= usize::from(packet[0] & 0x0f) * 4 {
                Ipv4Packet::new_unchecked(&mut packet[..]).fill_checksum();
            }
            packet.truncate(packet.len().saturating_sub(cut.unwrap_or(0)));
            packet.resize(packet.len() + pad, 0);
            if let Some(header) = packet.first_chunk::<20>() {
                let fast = plain_transport(header, &packet);
                if fast.is_some() {
                    proptest::prop_assert_eq!(fast, checked_transport(&packet));
                }
            }
        }
    }

    /// A TCP ACK or UDP datagram from `a` to `b` carrying `payload`: a packet to rewrite.
    fn rewrite_case(udp: bool, a: (Ipv4Addr, u16), b: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
        use crate::testkit::{self, ACK};
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        if udp {
            testkit::udp(mac, mac, a, b, payload)
        } else {
            testkit::tcp(mac, mac, a, b, ACK, payload)
        }
    }

    /// The rewrite as the RFC 1624 updates in network byte order, through the IPv4 view:
    /// the reference for [`rewrite_transport`]'s arithmetic in memory order.
    fn reference_rewrite_transport(
        frame: &mut [u8],
        proto: Proto,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
    ) {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
        let (old_src, old_dst) = (ip.src_addr(), ip.dst_addr());
        if old_src != src.0 {
            ip.rewrite_src_addr(src.0);
        }
        if old_dst != dst.0 {
            ip.rewrite_dst_addr(dst.0);
        }
        let segment = ip.payload_mut();
        let (old_src_port, old_dst_port) = (
            u16::from_be_bytes([segment[0], segment[1]]),
            u16::from_be_bytes([segment[2], segment[3]]),
        );
        segment[0..2].copy_from_slice(&src.1.to_be_bytes());
        segment[2..4].copy_from_slice(&dst.1.to_be_bytes());
        let at = if proto == Proto::Tcp { 16 } else { 6 };
        let old = u16::from_be_bytes([segment[at], segment[at + 1]]);
        let mut new = old;
        for (old_addr, new_addr) in [(old_src, src.0), (old_dst, dst.0)] {
            if old_addr != new_addr {
                new = match proto {
                    Proto::Tcp => checksum::update_addr(new, old_addr, new_addr),
                    Proto::Udp => checksum::update_udp_addr(new, old_addr, new_addr),
                };
            }
        }
        for (old_port, new_port) in [(old_src_port, src.1), (old_dst_port, dst.1)] {
            new = match proto {
                Proto::Tcp => checksum::update_u16(new, old_port, new_port),
                Proto::Udp => checksum::update_udp_u16(new, old_port, new_port),
            };
        }
        segment[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }

    proptest::proptest! {
        /// The NAT rewrite writes exactly the bytes of the same updates done one at a time
        /// in network order, and leaves checksums a full recompute agrees with: any
        /// addresses and ports (kept or changed), TCP and UDP (with and without a checksum).
        #[test]
        fn rewrite_transport_is_the_network_order_update(
            udp in proptest::prelude::any::<bool>(),
            no_udp_checksum in proptest::prelude::any::<bool>(),
            addrs in proptest::prelude::any::<[u32; 4]>(),
            ports in proptest::prelude::any::<[u16; 4]>(),
            keep in 0u8..4,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
        ) {
            let ip = Ipv4Addr::from_bits;
            let (a, b) = ((ip(addrs[0]), ports[0]), (ip(addrs[1]), ports[1]));
            let mut frame = rewrite_case(udp, a, b, &payload);
            if udp && no_udp_checksum {
                frame[ETH_LEN + 26..ETH_LEN + 28].fill(0);
            }
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            // Sometimes the source or the destination stays as it is (DNAT or SNAT alone).
            let src = if keep == 1 { a } else { (ip(addrs[2]), ports[2]) };
            let dst = if keep == 2 { b } else { (ip(addrs[3]), ports[3]) };
            let mut expected = frame.clone();
            reference_rewrite_transport(&mut expected, proto, src, dst);
            rewrite_transport(&mut frame, proto, src, dst);
            proptest::prop_assert_eq!(&frame, &expected);
            let ip_header = Ipv4Packet::new_checked(&frame[ETH_LEN..]).unwrap();
            proptest::prop_assert!(ip_header.verify_checksum());
            let segment = &frame[ETH_LEN + 20..];
            let protocol = if udp { ip_proto::UDP } else { ip_proto::TCP };
            let pseudo = checksum::pseudo_header_sum(src.0, dst.0, protocol, segment.len() as u16);
            let udp_without = udp && no_udp_checksum;
            proptest::prop_assert!(
                udp_without || checksum::fold(checksum::sum(segment, pseudo)) == 0xffff
            );
            if udp_without {
                proptest::prop_assert_eq!(&segment[6..8], &[0, 0]);
            }
        }
    }

    proptest::proptest! {
        /// NAT's one-pass TTL decrement and rewrite writes exactly the bytes of the TTL's
        /// own update followed by the rewrite's (in network order), and refuses a TTL of 0
        /// or 1 without touching the frame; any old checksums, the other zero included.
        #[test]
        fn route_transport_is_the_ttl_then_the_rewrite(
            udp in proptest::prelude::any::<bool>(),
            ttl in proptest::prelude::any::<u8>(),
            ip_checksum in proptest::option::of(proptest::prelude::any::<u16>()),
            l4_checksum in proptest::option::of(proptest::prelude::any::<u16>()),
            addrs in proptest::prelude::any::<[u32; 4]>(),
            ports in proptest::prelude::any::<[u16; 4]>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
        ) {
            let ip = Ipv4Addr::from_bits;
            let (a, b) = ((ip(addrs[0]), ports[0]), (ip(addrs[1]), ports[1]));
            let mut frame = rewrite_case(udp, a, b, &payload);
            frame[ETH_LEN + 8] = ttl;
            Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]).fill_checksum();
            if let Some(checksum) = ip_checksum {
                frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&checksum.to_be_bytes());
            }
            let at = ETH_LEN + 20 + if udp { 6 } else { 16 };
            if let Some(checksum) = l4_checksum {
                frame[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
            }
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let (src, dst) = ((ip(addrs[2]), ports[2]), (ip(addrs[3]), ports[3]));
            let mut expected = frame.clone();
            let forwarded = decrement_ttl(&mut expected);
            if forwarded {
                reference_rewrite_transport(&mut expected, proto, src, dst);
            }
            proptest::prop_assert_eq!(route_transport(&mut frame, proto, src, dst), forwarded);
            proptest::prop_assert_eq!(&frame, &expected);
        }

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

    #[test]
    fn emit_queue_is_bounded_and_drains_in_order() {
        let mut queue = EmitQueue::new();
        for i in 0..EMIT_CAPACITY {
            assert!(queue.push(IfaceId(0), &[i as u8; 3]));
        }
        assert!(!queue.push(IfaceId(0), &[0; 3]));
        let mut seen = Vec::new();
        assert_eq!(queue.drain(|_, frame| seen.push(frame[0])), EMIT_CAPACITY);
        assert_eq!(seen, (0..EMIT_CAPACITY as u8).collect::<Vec<_>>());
        assert_eq!(queue.drain(|_, _| panic!("empty")), 0);
    }
}
