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
//!   Every packet that reaches the flow step is IPv4 without options (or IPv6, `v6`, its
//!   TCP/UDP header right after the fixed header or after a bounded chain of hop-by-hop,
//!   destination options and routing headers, at the offset its checks found and carry)
//!   with its whole TCP or UDP header in the frame, so the rewrites read and write at known
//!   offsets.
//! - Counters are the core's own plain integers; a batch counts its received frames and
//!   bytes and its `Tx` verdicts once, at its end.
//! - Frames the pipeline sends on its own (ARP requests, frames released once their next
//!   hop resolves, gratuitous ARP) go to a bounded queue the driver empties with
//!   [`Pipeline::drain_emitted`] after each frame or batch.
//!
//! What it does, by destination:
//! - Fleets ([`crate::fleet`]): where the snapshot's fleet mode and the VRRP state say the
//!   box is silent for its VIPs (`bgp`, a `vrrp` standby), ARP for a VIP is passed to the
//!   kernel unanswered, VIPs are neither probed for nor announced, and another host's ARP
//!   from a VIP is no conflict; a `vrrp` standby also drops the VIPs' traffic (`standby`).
//!   Local addresses are never affected.
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
//!   a backend (a persistent service's client follows its template first, in the table all
//!   cores share: `persistence`, [`crate::persist`]) and the flow is tracked; then DR (MAC rewrite only), NAT (DNAT) or FullNAT
//!   (DNAT + SNAT to a local address:port), or tunnel (`tunnel`: the packet wrapped in
//!   IPIP or GUE to the real server; the wrapped copy leaves through the emit queue, as the
//!   frame cannot grow in place, and the frame's verdict is `Encapsulated`: forwarded, counted
//!   in `tunnelled_packets`, not a drop).
//! - Replies of NAT backends and replies to FullNAT local addresses: translated back to
//!   VIP:port towards the client. With several interfaces, a reply must arrive on the
//!   interface its backend is reached by; one from another side (forged by a client) is
//!   dropped as `reply_wrong_interface` before it can refresh, advance or close the flow.
//! - ICMP echo to a VIP or local address: answered. ICMP errors about a tracked flow: sent on
//!   to that flow's peer, translated. An error only reads the flow: it never refreshes its
//!   last-seen time nor moves its state, so forged errors cannot keep an idle flow alive.
//! - IPv6 (`v6`): the same for IPv6 VIPs and local addresses, its common packet by a settled
//!   way like IPv4's (`settled_hit6`), anything else step by step, on per-core IPv6 tables; NDP takes ARP's
//!   place (solicitations for VIPs and local addresses answered, to their solicited-node
//!   groups too; next hops solicited from the interface's own IPv6 address). Hop-by-hop,
//!   destination options and routing headers (segments left 0) before TCP, UDP or ICMPv6
//!   are walked (bounded) and forwarded as they are; a routing header with segments left,
//!   ESP, AH and the rarer extension headers, malformed chains and chains past the walk's
//!   bounds are counted drops (`v6::parse`).
//! - Fragments (`fragments`), IPv4 and IPv6, to a VIP and the replies: the first fragment
//!   balanced as its flow's packet, the later ones following it by the datagram's
//!   identification (no reassembly); tunnel VIPs' fragments wrapped one by one.
//! - Anything else: `Pass` to the kernel.
//!
//! NAT and FullNAT are routing hops: every packet they forward (ICMP errors included) leaves
//! with its IPv4 TTL (IPv6 hop limit) one less (checksum patched incrementally), and one
//! that arrives with 0 or 1 is dropped as `ttl_exceeded` (no ICMP time exceeded is sent).
//! DR is an L2 forward, as in IPVS: the IP packet, TTL included, is left as it is.
//!
//! Layout: this module holds [`Pipeline`], its API and the per-core state `CoreState`
//! with the steps every packet takes (`process`, the batch, the step-by-step IPv4 checks);
//! the steps' concerns live in submodules that each add to `CoreState`:
//! `classify` (what a frame is: the one-pass classification and the
//! TCP/UDP views), `flows` (connection lookup, scheduling, forwarding a tracked packet),
//! `neighbors` (ARP, the neighbour table, held frames, the hop caches), `rewrite` (the
//! in-place NAT, TTL, quote and echo rewrites), `icmp` (echo and errors about flows) and
//! `emit` (the queue of frames the pipeline sends on its own), `tunnel` (tunnel mode's
//! encapsulation and its MTU answers), and `v6` (IPv6's steps and per-core state).

mod classify;
mod emit;
mod flows;
mod fragments;
mod icmp;
mod neighbors;
mod persistence;
mod rewrite;
mod schedule;
mod tunnel;
mod v6;
mod vlan;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::arp::{self, NeighborTable};
use crate::conntrack::{
    CandidateSlot, ConnectionCount, Conntrack, ConntrackReader, PortRange, Prepared,
};
use crate::family::{V4, V6};
use crate::fleet::{Presence, VrrpState};
use crate::persist::Templates;
use crate::report::{BATCH, Counters, DropReason, Stat};
use crate::sched::SchedState;
use crate::snapshot::{IfaceId, Owned, Snapshot};
use crate::time::Instant;
use crate::wire::ipv4::ip_proto;
use crate::wire::{EtherType, EthernetFrame, Ipv4Packet, MacAddr, TcpFlags, WireError};

use classify::{Class, classify, plain_probe_at, plain_transport_at, transport};
use emit::EmitQueue;
use flows::{SettledFirst, release_backend, same_schedule, sched_states};
use neighbors::{
    BackendLine, CLIENT_HOP_SLOTS, ClientHop, HopSlot, PacedArp, Subnets, is_unicast,
    needed_next_hops, subnets, unreplyable_sender,
};
use v6::Core6;
pub use v6::Table6;

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
    /// Forwarded wrapped (tunnel mode): the packet, encapsulated for its real server, was
    /// written into the emit queue and leaves from [`Pipeline::drain_emitted`]; the received
    /// frame itself is done with (the driver recycles it as it would a dropped one). Counted
    /// in `tunnelled_packets`, never as a drop.
    Encapsulated,
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
/// Frames the pipeline may queue on its own between two drains: room for a few batches of
/// tunnelled packets (each leaves from here, `tunnel`) besides ARP.
const EMIT_CAPACITY: usize = 4 * BATCH;
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
/// Frames of paced ARP (announcements, probes) the emit queue may hold at once: a few dozen,
/// so the data path's requests, released frames and tunnelled packets keep room.
const PACED_ARP_ROOM: usize = 32;
/// How often core 0 looks for next hops to refresh.
const REFRESH_SCAN_EVERY: Duration = Duration::from_secs(1);
/// Refresh requests per scan, at most (the rest wait for the next scan).
const REFRESH_PER_SCAN: usize = 16;

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
    /// Persistence templates, shared by every core ([`Pipeline::set_templates`]).
    templates: Arc<Templates>,
    /// Per service. A snapshot swap keeps a service's state when the service is unchanged
    /// (same scheduler, same backends by identity and weight), so `rr` goes on from where it
    /// was and `random` does not repeat its picks.
    sched: Vec<SchedState>,
    /// Per backend (indexed like the snapshot's), IPVS's active and inactive connections
    /// as this core moves them ([`ConnectionCount`]: established TCP active, every other
    /// state and UDP inactive): a flow's insert, each state change across that line that
    /// this core makes (on its own flows, or on another core's NAT flow whose reply RSS
    /// sent here) and the flow's removal (expiry, eviction, port reuse) in the state it
    /// had then. The load lc, wlc, sed, nq and lt read, summed with `peer_connections`.
    connections: Vec<ConnectionCount>,
    /// The other cores' [`ConnectionCount`]s summed, as of control's last round of their
    /// reports (every [`crate::dataplane::worker::REPORT_EVERY`]), indexed like the
    /// snapshot's backends; zero after a swap until control sends the new snapshot's
    /// ([`Pipeline::set_peer_load`]). The schedulers see `connections + peer_connections`:
    /// a box-wide count, the other cores' part at most a report round (and control's
    /// loop) old.
    peer_connections: Vec<ConnectionCount>,
    /// Where a connection-counting pick writes the box-wide active and inactive counts
    /// (allocated with the snapshot: no allocation per pick).
    box_active: Vec<u32>,
    box_inactive: Vec<u32>,
    /// Measured response time per backend in µs (lt), indexed like the snapshot's backends:
    /// the snapshot's at a swap, then what control sends ([`Pipeline::set_response_times`])
    /// without a new snapshot.
    response_time_us: Vec<u32>,
    neighbors: NeighborTable,
    /// Per backend of the snapshot, one line ([`BackendLine`]): its identity as flow words
    /// carry it (per snapshot), and the Ethernet header and egress of a frame to it, looked
    /// up once per neighbour-table change (and per snapshot) rather than once per packet;
    /// the hop is valid while `hops_generation` matches the neighbour table's, and none
    /// while the next hop's MAC or the egress interface is unknown.
    backend_lines: Vec<BackendLine>,
    /// The same for replies to clients (NAT, FullNAT). Through the gateway: the default
    /// route's hop, computed with the backends'. On-link: the clients replies went to lately,
    /// filled on a miss, direct-mapped ([`CLIENT_HOP_SLOTS`] entries), emptied when
    /// `hops_generation` moves. Only hops whose next hop's MAC is known are cached.
    gateway_hop: HopSlot,
    client_hops: Box<[Option<ClientHop>]>,
    /// The snapshot's interfaces' subnets as (network, mask), in order, both in memory order
    /// ([`subnets`]): whether a client is on-link without recomputing each mask
    /// ([`Interface::contains`]) or swapping the client's bytes.
    ///
    /// [`Interface::contains`]: crate::snapshot::Interface::contains
    subnets: Subnets,
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
    /// The VRRP state control last gave (`vrrp` mode; standby until told), kept across
    /// snapshots.
    vrrp: VrrpState,
    /// Whether this box answers ARP for, announces and forwards to its VIPs: the snapshot's
    /// fleet mode in `vrrp`'s state ([`crate::fleet`]). Local addresses are always answered.
    presence: Presence,
    /// IPv6's connection table, neighbours and held frames (the per-service and per-backend
    /// state above, and the emit queue, are shared: the snapshot indexes both families in
    /// one list).
    v6: Core6,
    /// Tunnel mode's buffer and outer identification counter.
    tunnel: tunnel::TunnelState,
    /// The datagrams whose first fragment went to a VIP's flow, for their later fragments.
    fragments: fragments::FragmentTable<V4>,
    /// The same for IPv6 datagrams.
    fragments6: fragments::FragmentTable<V6>,
}

impl Pipeline {
    /// A pipeline for one core. Allocates everything it will ever use.
    pub fn new(snapshot: Arc<Snapshot>, slot: CoreSlot) -> Self {
        let mut neighbors = NeighborTable::with_capacity(NEIGHBOR_CAPACITY);
        neighbors.set_needed(needed_next_hops(&snapshot));
        for (ip, mac) in snapshot.family::<V4>().static_neighbors() {
            neighbors.insert_static(*ip, *mac);
        }
        let core = CoreState {
            slot,
            conntrack: Conntrack::new(&snapshot.conntrack),
            peers: Vec::new(),
            templates: Arc::new(templates_for(&snapshot)),
            sched: sched_states(&snapshot, slot),
            connections: vec![ConnectionCount::default(); snapshot.backends.len()],
            peer_connections: vec![ConnectionCount::default(); snapshot.backends.len()],
            box_active: vec![0; snapshot.backends.len()],
            box_inactive: vec![0; snapshot.backends.len()],
            response_time_us: snapshot.response_time_us.clone(),
            neighbors,
            backend_lines: BackendLine::all(&snapshot),
            gateway_hop: HopSlot::UNKNOWN,
            client_hops: vec![None; CLIENT_HOP_SLOTS].into_boxed_slice(),
            subnets: subnets(&snapshot),
            hops_generation: u64::MAX,
            hold: arp::HoldQueue::new(),
            emit: EmitQueue::new(),
            paced_arp: std::collections::VecDeque::new(),
            counters: Counters::new(snapshot.backends.len()),
            last_refresh_scan: Instant::ZERO,
            vrrp: VrrpState::Standby,
            presence: snapshot.fleet.presence(VrrpState::Standby),
            v6: Core6::new(&snapshot, NEIGHBOR_CAPACITY),
            tunnel: tunnel::TunnelState::new(),
            fragments: fragments::FragmentTable::new(),
            fragments6: fragments::FragmentTable::new(),
        };
        let mut pipeline = Pipeline { snapshot, core };
        pipeline.core.v6.set_snapshot(&pipeline.snapshot);
        pipeline
    }

    /// Swaps to a new snapshot between batches. Tracked flows survive: they carry their
    /// backend's address and are re-validated against the new snapshot as they are seen.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        let core = &mut self.core;
        core.neighbors.set_needed(needed_next_hops(&snapshot));
        for (ip, mac) in snapshot.family::<V4>().static_neighbors() {
            core.neighbors.insert_static(*ip, *mac);
        }
        let mut old_states = std::mem::take(&mut core.sched);
        core.sched = sched_states(&snapshot, core.slot);
        for (index, service) in snapshot.services.iter().enumerate() {
            let old = self.snapshot.service_at_ip(service.vip, service.port, service.proto);
            if let Some(old) = old
                && same_schedule(&self.snapshot, old, &snapshot, index)
                && let Some(state) = old_states.get_mut(old)
            {
                core.sched[index] = std::mem::replace(state, SchedState::new(0, 0));
            }
        }
        core.response_time_us = snapshot.response_time_us.clone();
        let mut connections = vec![ConnectionCount::default(); snapshot.backends.len()];
        let mut backends = vec![Default::default(); snapshot.backends.len()];
        let mut passive = vec![Default::default(); snapshot.backends.len()];
        // Carry per-backend state over to backends that are still there, by identity.
        for (old_index, old) in self.snapshot.backends.iter().enumerate() {
            if let Some(new_index) = snapshot.backend_at(&old.id) {
                connections[new_index] =
                    core.connections.get(old_index).copied().unwrap_or_default();
                backends[new_index] =
                    core.counters.backends.get(old_index).copied().unwrap_or_default();
                passive[new_index] =
                    core.counters.passive.get(old_index).copied().unwrap_or_default();
            }
        }
        core.connections = connections;
        core.peer_connections = vec![ConnectionCount::default(); snapshot.backends.len()];
        core.box_active = vec![0; snapshot.backends.len()];
        core.box_inactive = vec![0; snapshot.backends.len()];
        core.counters.backends = backends;
        core.counters.passive = passive;
        core.backend_lines = BackendLine::all(&snapshot);
        core.subnets = subnets(&snapshot);
        core.hops_generation = u64::MAX;
        core.presence = snapshot.fleet.presence(core.vrrp);
        core.v6.set_snapshot(&snapshot);
        // A table this core alone holds, too small for the persistence the new snapshot
        // asks for (the pipeline began without): the full size. Shared tables stay shared.
        if core.templates.capacity() < crate::persist::DEFAULT_CAPACITY
            && Arc::strong_count(&core.templates) == 1
            && snapshot.services.iter().any(|s| s.persistence.is_some())
        {
            core.templates = Arc::new(templates_for(&snapshot));
        }
        self.snapshot = snapshot;
    }

    /// Sets the VRRP state keepalived gave the box (through control); it changes what the
    /// pipeline does only in `vrrp` mode, and survives snapshot swaps. Becoming active does
    /// not announce by itself: control follows with [`Pipeline::announce`].
    pub fn set_vrrp_state(&mut self, state: VrrpState) {
        self.core.vrrp = state;
        self.core.presence = self.snapshot.fleet.presence(state);
    }

    pub fn vrrp_state(&self) -> VrrpState {
        self.core.vrrp
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

    /// The other cores' connections per backend (control sums their latest reports),
    /// indexed like the backends of snapshot `generation`; ignored unless that is the
    /// snapshot this core runs, as [`Pipeline::set_response_times`]. Copies into the buffer
    /// the snapshot swap allocated: no allocation.
    pub fn set_peer_load(&mut self, generation: u64, others: &[ConnectionCount]) {
        let peers = &mut self.core.peer_connections;
        if generation == self.snapshot.generation && others.len() == peers.len() {
            peers.copy_from_slice(others);
        }
    }

    /// Lets this core find replies in other cores' tables.
    ///
    /// Panics if a peer's table is keyed with another secret than this core's (the tables
    /// of one process share one: a reply would hash to another bucket there).
    pub fn set_peers(&mut self, peers: Vec<ConntrackReader>) {
        let secret = self.core.conntrack.secret();
        assert!(peers.iter().all(|peer| peer.secret() == secret), "peers keyed alike");
        self.core.peers = peers;
    }

    /// Makes this core use `templates` for persistence: give every core of a process the
    /// same table, so that a client's connections on any core follow one template.
    pub fn set_templates(&mut self, templates: Arc<Templates>) {
        self.core.templates = templates;
    }

    /// The persistence templates this core uses (for listings and for sharing).
    pub fn templates(&self) -> &Arc<Templates> {
        &self.core.templates
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

    /// This core's part of the box's active and inactive connections per backend (indexed
    /// like the snapshot's backends; see [`ConnectionCount`]: alone, it is not a count).
    pub fn connections(&self) -> &[ConnectionCount] {
        &self.core.connections
    }

    /// Frames held for unresolved neighbours right now.
    pub fn held(&self) -> usize {
        self.core.hold.len() + self.core.v6.hold.len()
    }

    /// Next hops this core is asking for (frames are held for them), for control to relay
    /// the ARP that answers.
    pub fn unresolved(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.core.hold.unresolved().map(|(ip, _)| ip)
    }

    /// IPv6's twin of [`Pipeline::learn_neighbor`]: what an NDP message seen outside the
    /// pipeline said (the AF_XDP driver relays NDP the steering program recorded). A
    /// neighbour on no interface's link (its IPv6 prefix, or link-local), or one with a MAC
    /// no reply may go to, is ignored. Frames held for `ip` are released.
    pub fn learn_neighbor6(&mut self, now: Instant, ip: Ipv6Addr, mac: MacAddr) {
        let core = &mut self.core;
        let (emit, counters) = (&mut core.emit, &mut core.counters);
        core.v6.learn(&*self.snapshot, now, ip, mac, emit, counters);
    }

    /// IPv6's twin of [`Pipeline::announce`]: an unsolicited neighbour advertisement for each
    /// of `addrs` that is a VIP or local address of the snapshot, paced.
    pub fn announce6(&mut self, addrs: &[Ipv6Addr]) {
        self.queue_paced6(addrs.iter().map(|ip| v6::ndp::Paced6::Announce(*ip)));
    }

    /// IPv6's twin of [`Pipeline::probe`]: a duplicate address detection probe (RFC 4862,
    /// from `::` to the solicited-node group, see [`crate::ndp::write_probe`]) for each of
    /// `addrs` that is a VIP or local address of the snapshot, paced.
    pub fn probe6(&mut self, addrs: &[Ipv6Addr]) {
        self.queue_paced6(addrs.iter().map(|ip| v6::ndp::Paced6::Probe(*ip)));
    }

    fn queue_paced6(&mut self, requests: impl Iterator<Item = v6::ndp::Paced6>) {
        let core = &mut self.core;
        core.v6.queue_paced(requests);
        let side =
            v6::step::Fleet6 { snapshot: &self.snapshot, answer_vips: core.presence.answer_vips };
        core.v6.send_paced(&side, &mut core.emit, &mut core.counters);
    }

    /// IPv6 next hops this core is asking for (frames are held for them), for control to
    /// relay the NDP that answers.
    pub fn unresolved6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.core.v6.hold.unresolved().map(|(ip, _)| ip)
    }

    pub fn neighbors6(&self) -> &NeighborTable<V6> {
        &self.core.v6.neighbors
    }

    /// Lets this core find IPv6 replies in other cores' tables.
    /// Panics as [`Pipeline::set_peers`] does.
    pub fn set_peers6(&mut self, peers: Vec<ConntrackReader<V6>>) {
        let secret = self.core.v6.conntrack.secret();
        assert!(peers.iter().all(|peer| peer.secret() == secret), "IPv6 peers keyed alike");
        self.core.v6.peers = peers;
    }

    /// A read handle on this core's IPv6 connection table, for the other cores.
    pub fn conntrack_reader6(&self) -> ConntrackReader<V6> {
        self.core.v6.conntrack.reader()
    }

    pub fn conntrack6(&self) -> &Conntrack<V6> {
        &self.core.v6.conntrack
    }

    /// Takes a grown IPv6 connection table and its peers ([`Table6`]: a reload added the
    /// first IPv6 service). The table it replaces holds no flow (it was the small one of a
    /// box that served no IPv6, and flows are made for services only); if it does, or the
    /// grown table is keyed unlike its peers, the core refuses (counted in
    /// [`Stat::Ipv6TableRefused`]) and keeps its table, taking only the new peers (the
    /// other cores' tables now). A table already taken is ignored.
    pub fn grow_conntrack6(&mut self, table: &Table6) {
        let Some((table, peers)) = table.take() else { return };
        let keyed_alike = |secret| peers.iter().all(|peer| peer.secret() == secret);
        if self.core.v6.conntrack.is_empty() && keyed_alike(table.secret()) {
            self.core.v6.conntrack = table;
        } else {
            self.core.counters.add(Stat::Ipv6TableRefused, 1);
        }
        if keyed_alike(self.core.v6.conntrack.secret()) {
            self.core.v6.peers = peers;
        }
    }

    /// Processes one frame received on `ingress`, rewriting it in place.
    #[inline]
    pub fn process(&mut self, now: Instant, ingress: IfaceId, frame: &mut [u8]) -> Verdict {
        let (class, hash) = match self.snapshot.interfaces.get(ingress.index()) {
            Some(interface) => {
                let (secret, vip) = (self.core.conntrack.secret(), self.core.vip_class());
                let secret6 = self.core.v6.conntrack.secret();
                let owners = self.snapshot.owner_table().lookup();
                classify(&self.snapshot, owners, &secret, &secret6, vip, interface.mac, frame)
            }
            None => (Class::Other, 0),
        };
        let counters = &mut self.core.counters;
        counters.add(Stat::RxPackets, 1);
        counters.add(Stat::RxBytes, frame.len() as u64);
        // Prepared as a batch prepares its lookups, so a single frame takes the same ways.
        let lookup = self.core.prepare_lookup(class, hash);
        let verdict = self.process_classified(now, ingress, frame, class, &lookup);
        if let Verdict::Tx(_) = verdict {
            self.core.counters.add(Stat::TxPackets, 1);
        }
        verdict
    }

    /// [`Pipeline::process`] once the frame is classified: the common case straight to its
    /// flow (a settled hit on its prepared slot: [`CoreState::settled_hit`]), anything else
    /// through [`Pipeline::process_general`]. `lookup` is the prepared lookup of a
    /// classified frame's 5-tuple. Counts the verdict unless it is `Tx`: the caller counts
    /// received frames and bytes and transmitted frames (a batch once for all its frames).
    #[inline(always)]
    fn process_classified(
        &mut self,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        class: Class,
        lookup: &Prepared,
    ) -> Verdict {
        if class.is_plain_ipv4() {
            let core = &mut self.core;
            match core.settled_hit(&self.snapshot, now, ingress, frame, class, lookup) {
                Some(verdict @ Verdict::Tx(_)) => return verdict,
                Some(verdict) => {
                    core.counters.count_other(verdict);
                    return verdict;
                }
                None => {}
            }
        }
        self.process_general(now, ingress, frame, class, *lookup)
    }

    /// [`Pipeline::process_classified`] of every frame but IPv4's settled hits: IPv6's
    /// ([`CoreState::settled_hit6`]: here, so that IPv4's loop is not touched), a
    /// classified frame to its flow's general step ([`CoreState::transport`]), anything
    /// else through the step-by-step checks. Out of line: keeps the common packet's loop
    /// short.
    #[inline(never)]
    fn process_general(
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
            Class::Ipv6 => {
                // IPv6's common packet straight to its flow; else the step-by-step way, the
                // prepared lookup taken by the IPv6 flow step if the frame holds the key it
                // was guessed for.
                if let Some(verdict) = core.settled_hit6(snapshot, now, frame, &lookup) {
                    return core.count_general(verdict);
                }
                core.v6.prepared = Some(lookup);
                None
            }
            _ => plain_transport_at(frame),
        };
        // A VRRP standby never forwards for the VIPs: `classify` left their frames `Other`
        // ([`CoreState::vip_class`]), and the step-by-step checks drop them as `standby`.
        let verdict = match transport {
            Some(transport) => {
                core.transport(snapshot, now, ingress, frame, class, transport, lookup)
            }
            None => core.process(snapshot, now, ingress, frame),
        };
        // A guess never outlives its frame (nor the table it was prepared in).
        core.v6.prepared = None;
        core.count_general(verdict)
    }

    /// Processes a batch of frames received on `ingress`, as a poll loop gets them: the same
    /// verdicts, in the same order, as calling [`Pipeline::process`] on each frame.
    ///
    /// First it classifies every frame (`classify`: the checks of the common case, the
    /// owner of the destination, the connection tables' hash) and starts loading the connection-table
    /// bucket each will look in; then it reads each bucket and starts loading the record it
    /// names ([`CoreState::prepare_candidates`], DPDK's `rte_hash_lookup_bulk`, VPP's quad
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
            let mut hashes = [0; BATCH];
            self.core.conntrack.begin_batch();
            self.core.v6.conntrack.begin_batch();
            // Read once per batch: the tables' secrets, the fleet's answer for VIPs, the owner
            // table's slots.
            let (secret, vip) = (self.core.conntrack.secret(), self.core.vip_class());
            let secret6 = self.core.v6.conntrack.secret();
            let owners = self.snapshot.owner_table().lookup();
            // The batch's received bytes, taken where the first pass reads each frame (no
            // frame's length changes as it is processed).
            let mut bytes = 0;
            if let Some(mac) = mac {
                for ((class, hash), frame) in classes.iter_mut().zip(&mut hashes).zip(&*frames) {
                    bytes += frame.len() as u64;
                    (*class, *hash) =
                        classify(&self.snapshot, owners, &secret, &secret6, vip, mac, frame);
                    match *class {
                        Class::Other => continue,
                        Class::Ipv6 => self.core.v6.conntrack.prefetch_bucket(*hash),
                        _ => self.core.conntrack.prefetch_bucket(*hash),
                    }
                }
            } else {
                bytes = frames.iter().map(|frame| frame.len() as u64).sum();
            }
            // The second pass keeps one word per frame, its candidate slot (its lookup is
            // built from it when the frame needs one, `prepared_lookup`).
            let mut candidates = Candidates::default();
            self.core.prepare_candidates(&classes, &hashes, &mut candidates);
            // The frames in order: each run of frames `settled_hit` looks up (with a
            // candidate slot) in a loop of its own (`settled_run`), every other frame one by
            // one. A frame a run refused goes the general way once a run started on it
            // refuses it as its first frame.
            let mut run = Tally::default();
            // The run for the box's arms, chosen once per batch.
            let settled_run = match self.snapshot.interfaces.len() > 1 {
                true => Self::settled_run::<true>,
                false => Self::settled_run::<false>,
            };
            let mut transmitted = 0;
            let count = frames.len().min(verdicts.len()).min(BATCH);
            let (frames, verdicts) = (&mut frames[..count], &mut verdicts[..count]);
            let mut index = 0;
            while index < count {
                let class = classes[index];
                let frame = &mut *frames[index];
                let verdict = match class.is_plain_ipv4() {
                    true => match self.core.settled_first(
                        &self.snapshot,
                        now,
                        ingress,
                        frame,
                        class,
                        &self.core.prepared_lookup(class, hashes[index], &candidates, index),
                    ) {
                        SettledFirst::LookUp => {
                            let start = index;
                            let four = &candidates.four;
                            index = settled_run(
                                self, now, frames, verdicts, &classes, four, index, &mut run,
                            );
                            // The frame the run stopped at starts over: another run if the run
                            // only stopped there (a frame it does not take), and this way
                            // again if it refused it (the same lookup, the same answer, a
                            // last-seen refresh to the same `now`; rare).
                            if index > start {
                                continue;
                            }
                            // Refused by the run as its first frame (it tests what
                            // `settled_first` tested: were they ever to disagree, the same):
                            // the general way, straight.
                            let Some(frame) = frames.get_mut(index) else { break };
                            let class = classes[index];
                            let lookup =
                                self.core.prepared_lookup(class, hashes[index], &candidates, index);
                            self.process_general(now, ingress, frame, class, lookup)
                        }
                        SettledFirst::Answered(verdict) => self.core.count_general(verdict),
                        SettledFirst::General => {
                            let lookup =
                                self.core.prepared_lookup(class, hashes[index], &candidates, index);
                            self.process_general(now, ingress, frame, class, lookup)
                        }
                    },
                    false => {
                        let lookup =
                            self.core.prepared_lookup(class, hashes[index], &candidates, index);
                        self.process_general(now, ingress, frame, class, lookup)
                    }
                };
                let Some(slot) = verdicts.get_mut(index) else { break };
                *slot = verdict;
                transmitted += u64::from(matches!(verdict, Verdict::Tx(_)));
                index += 1;
            }
            let transmitted = transmitted + run.transmitted - run.not_transmitted;
            let counters = &mut self.core.counters;
            counters.add(Stat::RxPackets, frames.len() as u64);
            counters.add(Stat::RxBytes, bytes);
            counters.add(Stat::TxPackets, transmitted);
        }
    }

    /// A run of a batch's settled hits, from frame `start`: [`CoreState::settled_flow_hit`]
    /// of each frame in order, its verdict written and tallied (and counted as
    /// [`Pipeline::process_classified`] counts it), while the frames are ones
    /// [`CoreState::settled_hit`] would look up (IPv4, to a VIP unless the box has one
    /// arm, with a candidate slot: [`run_candidate`]) and it answers them. Returns the first
    /// frame it did not process: one it does not take, or one it refused
    /// (`settled_flow_hit` would answer None: the general way, [`Pipeline::process_general`],
    /// takes it; the caller finds out by starting a run on it again, which refuses it at
    /// once). Out of line: the common frames' loop keeps its values in registers, the
    /// general way's apart. The hop caches are refreshed once, before the run: nothing in it
    /// changes the neighbour table. A DR hit (the common frame) is answered here, its mode
    /// tested first ([`flows::settled_dr_hit`]); the other modes' by `settled_words_hit`.
    ///
    /// `SEVERAL_ARMS`: whether the snapshot has several interfaces (the caller's test, so
    /// that a one-armed box's loop does not test it per frame).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn settled_run<const SEVERAL_ARMS: bool>(
        &mut self,
        now: Instant,
        frames: &mut [&mut [u8]],
        verdicts: &mut [Verdict],
        classes: &[Class; BATCH],
        candidates: &[CandidateSlot; BATCH],
        start: usize,
        tally: &mut Tally,
    ) -> usize {
        let snapshot = &*self.snapshot;
        debug_assert_eq!(SEVERAL_ARMS, snapshot.interfaces.len() > 1);
        let core = &mut self.core;
        core.refresh_stale_hops(snapshot);
        // The table's shape read once for the run (nothing in it replaces the table).
        let table = core.conntrack.settled_table();
        let settled = table.lookup();
        let count = frames.len().min(verdicts.len()).min(BATCH);
        let (frames, verdicts) = (&mut frames[..count], &mut verdicts[..count]);
        let mut index = start;
        while index < count {
            let candidate = run_candidate(candidates, classes, SEVERAL_ARMS, index);
            if !candidate.is_some() {
                break;
            }
            let frame = &mut *frames[index];
            let hit = plain_probe_at(frame)
                .and_then(|probe| settled.settled_candidate(now, &probe, candidate));
            let Some((direction, words)) = hit else {
                break;
            };
            // DR first (the common frame), tested here: its answer is always a transmit.
            if words.is_dr() {
                let (lines, backend_counters) = (&core.backend_lines, &mut core.counters.backends);
                let Some(answer) = flows::settled_dr_hit(lines, backend_counters, frame, words)
                else {
                    break;
                };
                verdicts[index] = answer;
                index += 1;
                continue;
            }
            let Some(answer) =
                core.settled_words_hit::<true, true>(snapshot, now, frame, direction, words)
            else {
                break;
            };
            verdicts[index] = answer;
            if !matches!(answer, Verdict::Tx(_)) {
                tally.not_transmitted += 1;
                core.counters.count_other(answer);
            }
            index += 1;
        }
        tally.transmitted += (index - start) as u64;
        index
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
        let connections = &mut core.connections;
        let expired = core.conntrack.sweep(now, SWEEP_BUDGET, |flow, state| {
            release_backend(snapshot, connections, flow, state);
        });
        core.counters.add(Stat::ExpiredFlows, expired as u64);
        let given_up = core.hold.expire(now);
        core.counters.add(Stat::HeldExpired, given_up as u64);
        let forgotten = core.neighbors.expire(now, NEIGHBOR_EXPIRE_BUDGET);
        core.counters.add(Stat::NeighborsEvicted, forgotten as u64);
        core.send_paced_arp(snapshot);
        // The same for IPv6, skipping what is empty (an IPv4-only box pays next to nothing).
        let six = &mut core.v6;
        if !six.conntrack.is_empty() {
            let connections = &mut core.connections;
            let expired = six.conntrack.sweep(now, SWEEP_BUDGET, |flow, state| {
                release_backend(snapshot, connections, flow, state);
            });
            core.counters.add(Stat::ExpiredFlows, expired as u64);
        }
        if !six.hold.is_empty() {
            core.counters.add(Stat::HeldExpired, six.hold.expire(now) as u64);
        }
        if !six.neighbors.is_empty() {
            let forgotten = six.neighbors.expire(now, NEIGHBOR_EXPIRE_BUDGET);
            core.counters.add(Stat::NeighborsEvicted, forgotten as u64);
        }
        if !six.paced.is_empty() {
            let side = v6::step::Fleet6 { snapshot, answer_vips: core.presence.answer_vips };
            six.send_paced(&side, &mut core.emit, &mut core.counters);
        }
        if core.slot.index == 0
            && now.saturating_duration_since(core.last_refresh_scan) >= REFRESH_SCAN_EVERY
        {
            core.last_refresh_scan = now;
            core.refresh_neighbors(snapshot, now);
            let next_hops = Core6::next_hops(snapshot);
            core.v6.refresh(snapshot, now, next_hops, &mut core.emit, &mut core.counters);
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

/// What a batch's runs of settled hits add to its transmitted frames: `transmitted` less
/// `not_transmitted` (a run counts its frames as transmitted, and the few that are not
/// apart).
#[derive(Debug, Default)]
struct Tally {
    transmitted: u64,
    not_transmitted: u64,
}

/// A batch's candidate slots (the record pass's, [`CoreState::prepare_candidates`]): frame
/// `i`'s in its family's array, none in the other's (and in both for a frame of
/// [`Class::Other`]). One word per frame; its lookup is built from it
/// ([`CoreState::prepared_lookup`]) when the frame needs one.
struct Candidates {
    /// IPv4's: what a batch's run of settled hits reads ([`run_candidate`]).
    four: [CandidateSlot; BATCH],
    six: [CandidateSlot; BATCH],
}

impl Default for Candidates {
    fn default() -> Self {
        Candidates { four: [CandidateSlot::NONE; BATCH], six: [CandidateSlot::NONE; BATCH] }
    }
}

/// The candidate slot a batch's run of settled hits ([`Pipeline::settled_run`]) checks for
/// frame `i`, `four` the batch's IPv4 candidates ([`Candidates::four`]), on a box with
/// `several_arms` or not: its candidate if [`CoreState::settled_first`] would look the frame
/// up (IPv4, with a candidate; to a VIP unless the box has one arm: a possible reply with
/// several arms is judged by the arm it came in on), else none. IPv4's array holds none for
/// any other family's frame, so a one-armed box tests one word.
#[inline(always)]
fn run_candidate(
    four: &[CandidateSlot; BATCH],
    classes: &[Class; BATCH],
    several_arms: bool,
    i: usize,
) -> CandidateSlot {
    let candidate = four.get(i).copied().unwrap_or(CandidateSlot::NONE);
    if several_arms && classes.get(i) != Some(&Class::ToVip) {
        return CandidateSlot::NONE;
    }
    candidate
}

/// The template table a pipeline starts with: the full size when a service of `snapshot`
/// is persistent, else a token one ([`Pipeline::set_snapshot`] grows it when persistence
/// arrives; the daemon gives every core one shared full-size table).
fn templates_for(snapshot: &Snapshot) -> Templates {
    match snapshot.services.iter().any(|s| s.persistence.is_some()) {
        true => Templates::with_default_capacity(),
        false => Templates::new(crate::persist::WINDOW, 0),
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
    /// The class [`classify()`] gives a frame to a VIP: [`Class::ToVip`] while the box
    /// forwards for its VIPs, else [`Class::Other`], so that the step-by-step checks drop it
    /// as `standby` (the fleet's answer, tested once per batch instead of once per frame).
    #[inline]
    fn vip_class(&self) -> Class {
        if self.presence.forward_vips { Class::ToVip } else { Class::Other }
    }

    /// `verdict`, counted as [`Pipeline::process_general`]'s are: all but `Tx` (the caller
    /// counts those).
    #[inline(always)]
    fn count_general(&mut self, verdict: Verdict) -> Verdict {
        if !matches!(verdict, Verdict::Tx(_)) {
            self.counters.count_other(verdict);
        }
        verdict
    }

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
        let ethertype = eth.ethertype();
        if vlan::is_tag(ethertype) {
            return self.tagged(snapshot, now, ingress, frame);
        }
        if dst != interface.mac && !dst.is_broadcast() {
            // NDP for xlb's IPv6 addresses comes to their solicited-node groups.
            if ethertype == EtherType::IPV6 && dst.is_multicast() {
                return self.ipv6_multicast(snapshot, now, ingress, frame);
            }
            return Verdict::Pass;
        }
        match ethertype {
            EtherType::IPV4 => self.ipv4(snapshot, now, ingress, frame),
            EtherType::ARP => self.arp(snapshot, now, ingress, frame),
            EtherType::IPV6 => self.ipv6(snapshot, now, ingress, frame),
            _ => Verdict::Pass,
        }
    }

    /// A VLAN-tagged frame (`vlan`): processed as the untagged frame its MACs make when
    /// moved over its tags, every frame emitted meanwhile tagged alike, then given its MACs
    /// and tags back (the tags kept, whatever the verdict).
    #[inline(never)]
    fn tagged(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
    ) -> Verdict {
        let tags = match vlan::Tags::parse(frame) {
            Ok(tags) => tags,
            Err(reason) => return Verdict::Drop(reason),
        };
        vlan::untag(frame, &tags);
        let outer = self.emit.set_tags(tags);
        // The view's EtherType is not a TPID (`Tags::parse` read past every tag): this
        // does not come back here.
        let verdict = self.process(snapshot, now, ingress, &mut frame[tags.len()..]);
        self.emit.set_tags(outer);
        vlan::retag(frame, &tags);
        verdict
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
            Some(Owned::Vip) if !self.presence.forward_vips => {
                return Verdict::Drop(DropReason::Standby);
            }
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
        if ip.has_options() {
            return reject(owned, DropReason::IpOptions);
        }
        if ip.is_fragment() {
            // Fragments follow their first fragment's flow (`fragments`): to a VIP, and the
            // replies to a FullNAT local address or from a NAT backend.
            let total_len = usize::from(ip.total_len());
            let class = Class::of_owner(owned);
            return self.fragment(snapshot, now, ingress, frame, total_len, class);
        }
        let l4_start = ETH_LEN + ip.header_len();
        let l4_end = ETH_LEN + usize::from(ip.total_len());
        match ip.protocol() {
            ip_proto::TCP | ip_proto::UDP => {
                match transport(src, dst, ip.protocol(), &frame[l4_start..l4_end]) {
                    Some(transport) => {
                        let lookup = Prepared::new(self.conntrack.hash(&transport.key));
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
    /// loading the record it names: the candidate slot of the frame of class `classes[i]`
    /// whose key hashes to `hashes[i]`, kept in its family's array of `candidates` (none
    /// for [`Class::Other`]); [`CoreState::prepared_lookup`] builds its lookup from it.
    #[inline]
    fn prepare_candidates(
        &self,
        classes: &[Class; BATCH],
        hashes: &[u64; BATCH],
        candidates: &mut Candidates,
    ) {
        // Each table's shape read once for the batch ([`Conntrack::preparer`]).
        let (four, six) = (self.conntrack.preparer(), self.v6.conntrack.preparer());
        let slots = candidates.four.iter_mut().zip(&mut candidates.six);
        for ((class, hash), (four_slot, six_slot)) in classes.iter().zip(hashes).zip(slots) {
            match class {
                Class::Other => {}
                Class::Ipv6 => *six_slot = six.candidate(*hash),
                _ => *four_slot = four.candidate(*hash),
            }
        }
    }

    /// The lookup of frame `i` of a batch, of class `class` and whose key hashes to `hash`,
    /// from its candidate slot in `candidates` ([`CoreState::prepare_candidates`]): what
    /// [`CoreState::prepare_lookup`] gave it when the record pass read its bucket.
    #[inline(always)]
    fn prepared_lookup(
        &self,
        class: Class,
        hash: u64,
        candidates: &Candidates,
        i: usize,
    ) -> Prepared {
        let slot = |slots: &[CandidateSlot; BATCH]| slots.get(i).copied().unwrap_or_default();
        match class {
            Class::Other => Prepared::new(hash),
            Class::Ipv6 => self.v6.conntrack.prepared(hash, slot(&candidates.six)),
            _ => self.conntrack.prepared(hash, slot(&candidates.four)),
        }
    }

    /// The lookup of a frame of class `class` whose key hashes to `hash`, prepared in the
    /// table of its family: IPv6's for [`Class::Ipv6`], none for [`Class::Other`].
    #[inline(always)]
    fn prepare_lookup(&self, class: Class, hash: u64) -> Prepared {
        match class {
            Class::Other => Prepared::new(hash),
            Class::Ipv6 => self.v6.conntrack.prepare(hash),
            _ => self.conntrack.prepare(hash),
        }
    }
}

/// Fixtures the pipeline's tests share: the hosts and snapshots of a one-service box.
#[cfg(test)]
mod testutil {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use crate::snapshot::Snapshot;
    use crate::testkit::Host;

    /// `frame` through the step-by-step checks of `slow` alone (never a prepared lookup),
    /// counted as [`super::Pipeline::process`] counts it: the reference the prepared ways
    /// are held to.
    pub(super) fn step_by_step(
        slow: &mut super::Pipeline,
        snapshot: &Snapshot,
        now: crate::time::Instant,
        ingress: crate::snapshot::IfaceId,
        frame: &mut [u8],
    ) -> super::Verdict {
        let core = &mut slow.core;
        core.counters.add(crate::report::Stat::RxPackets, 1);
        core.counters.add(crate::report::Stat::RxBytes, frame.len() as u64);
        let verdict = core.process(snapshot, now, ingress, frame);
        core.counters.count_other(verdict);
        verdict
    }

    /// The counters (stats and drop reasons) on which two pipelines differ, by name.
    pub(super) fn counter_differences(a: &super::Pipeline, b: &super::Pipeline) -> Vec<String> {
        use crate::report::{DropReason, Stat};
        let stats = Stat::ALL.iter().filter(|s| a.counters().get(**s) != b.counters().get(**s));
        let drops =
            DropReason::ALL.iter().filter(|r| a.counters().drops(**r) != b.counters().drops(**r));
        stats.map(ToString::to_string).chain(drops.map(|r| format!("{r:?}"))).collect()
    }

    // The hosts of the one-service snapshots below (`one_service_snapshot`).
    pub(super) const LB: Host = Host::new([2, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
    pub(super) const CLIENT: Host = Host::new([2, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
    pub(super) const RS: Host = Host::new([2, 0, 0, 0, 0, 0x11], [10, 1, 1, 11]);
    pub(super) const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 1, 1, 100), 80);

    /// One interface (10.1.1.10/24 with `mac`, then the lines `interface_extra`) and one
    /// service, 10.1.1.100:80 forwarded by `forward` to 10.1.1.11:`backend_port`.
    pub(super) fn one_service_snapshot(
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
    pub(super) fn dr_snapshot(mac: &str) -> Arc<Snapshot> {
        one_service_snapshot(mac, "", "dr", 80)
    }

    /// A NAT service on an interface with `mac` and a gateway, its one backend's MAC static.
    pub(super) fn nat_snapshot(mac: &str) -> Arc<Snapshot> {
        let extra = "gateway = \"10.1.1.1\"\n\n[[neighbor]]\nip = \"10.1.1.11\"\nmac = \"02:00:00:00:00:11\"\n";
        one_service_snapshot(mac, extra, "nat", 8080)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

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
            let expected = step_by_step(&mut slow, &snapshot, now, IfaceId(0), &mut stepwise);
            proptest::prop_assert_eq!(verdict, expected);
            proptest::prop_assert_eq!(&frame, &stepwise);
            proptest::prop_assert_eq!(counter_differences(&fast, &slow), Vec::<String>::new());
        }

        /// The record pass keeps one word per frame: whatever the frames' classes and
        /// whether their keys have a flow (a candidate slot), on a box with one arm or two,
        /// each frame's lookup built from it is the one preparing the frame alone gives
        /// (`prepare_lookup`), and a batch's run takes exactly the frames `process_batch`
        /// would hand it: a frame has a run candidate ([`run_candidate`]) if and only if it
        /// is plain IPv4 and [`CoreState::settled_first`] would look it up, and that
        /// candidate is its lookup's.
        #[test]
        fn a_batch_keeps_its_lookups_in_one_word_per_frame(
            two_arms in proptest::prelude::any::<bool>(),
            frames in proptest::collection::vec(
                (0..5usize, proptest::prelude::any::<bool>(), proptest::prelude::any::<u64>()),
                BATCH,
            ),
        ) {
            use crate::flow::{FlowKey, Proto};
            use crate::testkit::{self, SYN};
            let second_arm =
                "\n[[interface]]\nname = \"eth1\"\naddr = \"10.2.2.10/24\"\nmac = \"02:00:00:00:00:30\"\n";
            let extra = if two_arms { second_arm } else { "" };
            let snapshot = one_service_snapshot(&LB.mac.to_string(), extra, "dr", 80);
            proptest::prop_assert_eq!(snapshot.interfaces.len() > 1, two_arms);
            let now = Instant::from_secs(1);
            let mut pipeline = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
            let mut syn = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, &[]);
            pipeline.process(now, IfaceId(0), &mut syn);
            let key = FlowKey {
                src_addr: CLIENT.ip,
                dst_addr: VIP.0,
                src_port: 4000,
                dst_port: VIP.1,
                proto: Proto::Tcp,
            };
            let tracked = pipeline.core.conntrack.hash(&key);
            let all =
                [Class::Other, Class::ToVip, Class::ToLocal, Class::FromNatBackend, Class::Ipv6];
            let classes: [Class; BATCH] = std::array::from_fn(|i| all[frames[i].0]);
            let hashes: [u64; BATCH] =
                std::array::from_fn(|i| if frames[i].1 { tracked } else { frames[i].2 });
            let core = &mut pipeline.core;
            // IPv6's batch number ahead of IPv4's: a lookup built in the other family's table
            // would differ.
            core.conntrack.begin_batch();
            core.v6.conntrack.begin_batch();
            core.v6.conntrack.begin_batch();
            let mut candidates = Candidates::default();
            core.prepare_candidates(&classes, &hashes, &mut candidates);
            let mut found = false;
            for (i, (class, hash)) in classes.iter().zip(hashes).enumerate() {
                let lookup = core.prepared_lookup(*class, hash, &candidates, i);
                proptest::prop_assert_eq!(lookup, core.prepare_lookup(*class, hash));
                found |= class.is_plain_ipv4() && hash == tracked && lookup.has_candidate();
                // No frame: a new flow's first packet is then not answered (no transport).
                let looked_up = class.is_plain_ipv4()
                    && matches!(
                        core.settled_first(&snapshot, now, IfaceId(0), &mut [], *class, &lookup),
                        SettledFirst::LookUp
                    );
                let expected = if looked_up { lookup.candidate() } else { CandidateSlot::NONE };
                let run = run_candidate(&candidates.four, &classes, two_arms, i);
                proptest::prop_assert_eq!(run, expected, "{:?}, {:?}", class, lookup);
            }
            let tracked_ipv4 = frames.iter().any(|f| f.1 && all[f.0].is_plain_ipv4());
            proptest::prop_assert_eq!(found, tracked_ipv4, "the tracked key has its candidate");
        }
    }
}
