//! Neighbours: ARP for xlb's addresses, the neighbour table's learning, paced gratuitous
//! ARP and probes, refreshes of backends' next hops, the hold queue's release, and the
//! per-core hop caches that give a frame its Ethernet header and egress.
//!
//! Invariants: only ARP that names us (or refreshes a known neighbour) from a sender on the
//! ingress interface's subnet is learned; a sender no reply may go to is never learned or
//! answered; another host claiming a VIP or local address is a counted conflict. Paced ARP
//! takes at most [`PACED_ARP_ROOM`] of the emit queue. Where the fleet mode makes the box
//! silent for its VIPs ([`crate::fleet`]), nothing is answered, probed or announced for a
//! VIP and another host's ARP from a VIP is passed, not a conflict; local addresses are
//! unaffected. The hop caches are valid while
//! `hops_generation` matches the neighbour table's generation and hold only hops whose next
//! hop's MAC is known; a miss falls back to [`CoreState::send`], which holds the frame and
//! asks (from the box's own address, never a VIP).

use std::net::Ipv4Addr;

use crate::arp::{self, Hold, Learned, NeighborTable};
use crate::conntrack::{BackendWords, Direction, Flow, Words4};
use crate::family::{Family, V4};
use crate::report::{DropReason, Stat};
use crate::snapshot::{IfaceId, Owned, Route, Snapshot};
use crate::time::Instant;
use crate::wire::{ArpOperation, ArpPacket, EthernetFrame, MacAddr, WireError};

use super::vlan;
use super::{CoreState, ETH_LEN, NEIGHBOR_REFRESH, PACED_ARP_ROOM, REFRESH_PER_SCAN, Verdict};

/// Where a frame to one backend or client goes: its Ethernet addresses (the next hop's MAC,
/// then the egress interface's) and the egress interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hop {
    pub(super) addrs: [u8; 12],
    pub(super) egress: IfaceId,
}

/// A [`Hop`] in a per-core cache, or none (the next hop's MAC or the egress is unknown):
/// 16 bytes, aligned, so a hit is a flag test and two loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub(super) struct HopSlot {
    addrs: [u8; 12],
    egress: IfaceId,
    known: bool,
}

impl HopSlot {
    pub(super) const UNKNOWN: HopSlot =
        HopSlot { addrs: [0; 12], egress: IfaceId(0), known: false };

    #[inline]
    pub(super) fn of(hop: Option<Hop>) -> HopSlot {
        match hop {
            Some(Hop { addrs, egress }) => HopSlot { addrs, egress, known: true },
            None => HopSlot::UNKNOWN,
        }
    }

    #[inline(always)]
    pub(super) fn hop(self) -> Option<Hop> {
        self.known.then_some(Hop { addrs: self.addrs, egress: self.egress })
    }
}

/// What a settled hit needs of its backend, in one cache line per backend of the snapshot:
/// the backend's identity as flow words carry it (filled once per snapshot, so a flow's
/// backend hint is confirmed by comparing words, without the snapshot's identity table) and
/// its cached hop (filled with the hop cache, [`CoreState::backend_hop`]). `Id` is the
/// identity's layout: IPv4's [`BackendWords`] (these lines), or IPv6's
/// ([`crate::conntrack::BackendWords6`], the lines of `v6::Core6`, filled from IPv6's
/// neighbour table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub(super) struct BackendLine<Id = BackendWords> {
    pub(super) hop: HopSlot,
    pub(super) identity: Id,
}

impl BackendLine {
    /// The line of backend `index` of `snapshot`, its hop unknown ([`BackendWords::NONE`]
    /// for an IPv6 backend: the IPv4 hit path never names one).
    fn of(snapshot: &Snapshot, index: usize) -> BackendLine {
        let identity = match snapshot.family::<V4>().backend_id(index) {
            Some(id) => BackendWords::new(id.vip, id.vport, id.proto, id.addr, id.port),
            None => BackendWords::NONE,
        };
        BackendLine { hop: HopSlot::UNKNOWN, identity }
    }

    /// One line per backend of `snapshot`, in its order.
    pub(super) fn all(snapshot: &Snapshot) -> Vec<BackendLine> {
        (0..snapshot.backends.len()).map(|index| BackendLine::of(snapshot, index)).collect()
    }
}

/// The cached hop of the backend the flow of `words` was scheduled to, from the backend
/// `lines` ([`CoreState::cached_backend_hop`]'s): when its backend hint still names that
/// backend (checked on the words against its line) and its hop is known; None otherwise.
#[inline(always)]
pub(super) fn named_hop(lines: &[BackendLine], words: Words4) -> Option<Hop> {
    let line = lines.get(words.backend_hint())?;
    if !line.identity.names(words) {
        return None;
    }
    line.hop.hop()
}

/// An entry of the per-core cache of the way to clients: the client's address and its hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClientHop {
    client: Ipv4Addr,
    hop: Hop,
}

/// Entries of the cache of on-link clients' hops (direct-mapped by client address; a power
/// of two). Clients behind a gateway do not use it: they all share the gateway's hop. A miss
/// costs a neighbour lookup, so a cache this small (a few KiB, in L1) pays as long as most
/// on-link replies go to fewer clients than this at a time; a collision is just a refill.
pub(super) const CLIENT_HOP_SLOTS: usize = 256;

/// The slot of `client` in the client hop cache: the top bits of a Fibonacci hash (of the
/// address as a number: clients that differ in the last octet spread).
#[inline(always)]
fn client_hop_slot(client: Ipv4Addr) -> usize {
    let hash = u64::from(client.to_bits()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (hash >> (64 - CLIENT_HOP_SLOTS.trailing_zeros())) as usize
}

/// An ARP frame xlb sends on control's request, paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PacedArp {
    /// A gratuitous ARP announcing that the address is here.
    Announce(Ipv4Addr),
    /// An RFC 5227 probe: does another host answer for the address?
    Probe(Ipv4Addr),
}

impl CoreState {
    #[inline(never)]
    pub(super) fn arp(
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
        let answer_vips = self.presence.answer_vips;
        let ours = match target {
            Some(Owned::Vip) => answer_vips,
            Some(Owned::Local) => true,
            _ => false,
        };

        // Another host says it holds an address of ours (a typo'd config, a stolen VIP):
        // never learned, never answered, counted for control to log. Our own announcement
        // looped back is the kernel's. A VIP this box is silent for is not claimed here: a
        // peer of the fleet may announce it.
        let sender = snapshot.owned(sender_ip);
        if sender == Some(Owned::Vip) && !answer_vips {
            return Verdict::Pass;
        }
        if matches!(sender, Some(Owned::Vip | Owned::Local)) {
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
    pub(super) fn learn(&mut self, snapshot: &Snapshot, now: Instant, ip: Ipv4Addr, mac: MacAddr) {
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
    pub(super) fn queue_paced(&mut self, requests: impl Iterator<Item = PacedArp>) {
        for request in requests {
            if !self.paced_arp.contains(&request) {
                self.paced_arp.push_back(request);
            }
        }
    }

    /// Moves paced ARP into the emit queue while it has [`PACED_ARP_ROOM`]. An address that
    /// is no longer a VIP or local address of the snapshot is skipped.
    pub(super) fn send_paced_arp(&mut self, snapshot: &Snapshot) {
        while self.emit.len() < PACED_ARP_ROOM {
            let Some(request) = self.paced_arp.pop_front() else { return };
            let (PacedArp::Announce(ip) | PacedArp::Probe(ip)) = request;
            match snapshot.owned(ip) {
                Some(Owned::Local) => {}
                Some(Owned::Vip) if self.presence.answer_vips => {}
                // Gone from the snapshot, or a VIP this box is silent for (`crate::fleet`).
                _ => continue,
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
    pub(super) fn refresh_neighbors(&mut self, snapshot: &Snapshot, now: Instant) {
        let mut asked = [Ipv4Addr::UNSPECIFIED; REFRESH_PER_SCAN];
        let mut count = 0;
        for route in snapshot.family::<V4>().backend_routes() {
            let next_hop = route.next_hop;
            let Some(neighbor) = self.neighbors.get(next_hop) else { continue };
            if neighbor.is_static
                || now.saturating_duration_since(neighbor.updated) < NEIGHBOR_REFRESH
                || asked[..count].contains(&next_hop)
            {
                continue;
            }
            let Some(interface) = snapshot.interfaces.get(route.egress.index()) else {
                continue;
            };
            let sent = self.emit.push_with(route.egress, |buffer| {
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
            if emit.push_held(egress, held) {
                counters.add(Stat::ReleasedPackets, 1);
            } else {
                counters.add(Stat::EmitOverflow, 1);
            }
        });
    }

    /// Sends a frame already translated for `direction` of `flow` to its next hop: the
    /// flow's backend (`backend` is its index, when still in the snapshot) or its client.
    #[inline]
    pub(super) fn deliver(
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
                (Some(snapshot.family::<V4>().backend_route(index)), Some(index))
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
    /// changed since they were filled. Always inlined: the hit path's callers (`forward`)
    /// must not pay a call because tunnel mode calls it too.
    #[inline(always)]
    pub(super) fn backend_hop(&mut self, snapshot: &Snapshot, index: usize) -> Option<Hop> {
        if self.hops_generation != self.neighbors.generation() {
            self.refresh_hops(snapshot);
        }
        self.backend_lines.get(index)?.hop.hop()
    }

    /// The index of the backend the flow of `words` was scheduled to, when its hint still
    /// names that backend (checked on the words against the backend's line); None for a
    /// backend renumbered away or gone (the general way then decides).
    #[inline(always)]
    pub(super) fn named_backend(&self, words: Words4) -> Option<usize> {
        let index = words.backend_hint();
        self.backend_lines.get(index)?.identity.names(words).then_some(index)
    }

    /// The settled hit's [`CoreState::backend_hop`] of the flow of `words`: its backend's
    /// index and hop, when the flow's backend hint still names that backend (checked on the
    /// words against the backend's line) and its hop is cached; None otherwise (a backend
    /// renumbered away or gone, an unknown hop: the general way then decides). From the hop
    /// caches as they are: the caller has refreshed them since the neighbour table last
    /// changed ([`CoreState::refresh_stale_hops`]).
    #[inline(always)]
    pub(super) fn cached_backend_hop(&self, words: Words4) -> Option<(usize, Hop)> {
        Some((words.backend_hint(), named_hop(&self.backend_lines, words)?))
    }

    /// Refreshes the hop caches if the neighbour table changed since they were filled.
    #[inline(always)]
    pub(super) fn refresh_stale_hops(&mut self, snapshot: &Snapshot) {
        if self.hops_generation != self.neighbors.generation() {
            self.refresh_hops(snapshot);
        }
    }

    /// The way to `client` (the destination of a reply), as `Snapshot::route` and the
    /// neighbour table give it: the default gateway's cached hop unless the client is on an
    /// interface's subnet; else the client's own, from the on-link cache or looked up (and
    /// cached). None when there is no route or the next hop's MAC is unknown (`deliver`
    /// then drops, or holds the frame and asks). Always inlined: a reply's settled hit pays
    /// no call for it (the on-link cache's miss is out of line).
    #[inline(always)]
    pub(super) fn client_hop(&mut self, snapshot: &Snapshot, client: Ipv4Addr) -> Option<Hop> {
        self.settled_client_hop::<false>(snapshot, client)
    }

    /// [`CoreState::client_hop`]; with `HOPS_FRESH`, the caller has refreshed the hop caches
    /// since the neighbour table last changed (a batch's settled run), so the generations
    /// are not compared again.
    #[inline(always)]
    pub(super) fn settled_client_hop<const HOPS_FRESH: bool>(
        &mut self,
        snapshot: &Snapshot,
        client: Ipv4Addr,
    ) -> Option<Hop> {
        if !HOPS_FRESH {
            self.refresh_stale_hops(snapshot);
        }
        // In memory order, as `subnets` keeps them: no byte swap.
        let bits = u32::from_ne_bytes(client.octets());
        if !self.subnets.hold(bits) {
            return self.gateway_hop.hop();
        }
        match self.client_hops.get(client_hop_slot(client))? {
            Some(cached) if cached.client == client => Some(cached.hop),
            _ => self.fill_client_hop(snapshot, client),
        }
    }

    /// [`CoreState::client_hop`]'s miss in the on-link cache: the hop looked up and cached.
    #[inline(never)]
    fn fill_client_hop(&mut self, snapshot: &Snapshot, client: Ipv4Addr) -> Option<Hop> {
        let hop = hop_to(snapshot, &self.neighbors, snapshot.route(client)?)?;
        *self.client_hops.get_mut(client_hop_slot(client))? = Some(ClientHop { client, hop });
        Some(hop)
    }

    /// Fills the per-backend cache and the gateway's hop from the neighbour table and the
    /// snapshot's interfaces, and empties the on-link client cache.
    #[cold]
    fn refresh_hops(&mut self, snapshot: &Snapshot) {
        for (line, &route) in
            self.backend_lines.iter_mut().zip(snapshot.family::<V4>().backend_routes())
        {
            line.hop = HopSlot::of(hop_to(snapshot, &self.neighbors, route));
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
    pub(super) fn send(
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
        match vlan::hold(&mut self.hold, now, route.next_hop, route.egress, frame, self.emit.tags())
        {
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
}

/// The next hops the snapshot sends to (backends' and gateways'): never evicted from the
/// neighbour table.
pub(super) fn needed_next_hops(snapshot: &Snapshot) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let backends = snapshot.family::<V4>().backend_routes().iter().map(|r| r.next_hop);
    backends.chain(snapshot.interfaces.iter().filter_map(|i| i.gateway))
}

/// True for a MAC a reply can go to: not broadcast, multicast or all-zero.
#[inline]
pub(super) fn is_unicast(mac: MacAddr) -> bool {
    !mac.is_multicast() && mac != MacAddr::ZERO
}

/// True for an ARP sender address no reply may go to: broadcast, multicast, loopback, or
/// the directed broadcast of an interface's subnet. (0.0.0.0 is an RFC 5227 probe: fine.)
pub(super) fn unreplyable_sender(snapshot: &Snapshot, ip: Ipv4Addr) -> bool {
    ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_loopback()
        || snapshot.interfaces.iter().any(|i| {
            let host_bits = u32::MAX.checked_shr(u32::from(i.prefix_len)).unwrap_or(0);
            i.prefix_len < 31 && i.contains(ip) && ip.to_bits() & host_bits == host_bits
        })
}

/// The subnets of the snapshot's interfaces, as [`CoreState::subnets`] keeps them: network
/// and mask in memory order (an address's bytes as `u32::from_ne_bytes` reads them), so a
/// client's address is tested as it lies, without a byte swap (a mask and a comparison
/// mean the same in either order).
pub(super) fn subnets(snapshot: &Snapshot) -> Subnets {
    let memory = |bits: u32| u32::from_ne_bytes(bits.to_be_bytes());
    let all: Vec<(u32, u32)> = snapshot
        .interfaces
        .iter()
        .map(|interface| {
            let mask = interface.mask();
            (memory(interface.addr.to_bits() & mask), memory(mask))
        })
        .collect();
    Subnets::new(&all)
}

/// The interfaces' subnets as (network, mask) in memory order ([`subnets`]), the first one
/// apart: a box with one interface (the common one) tests a client against it with no loop,
/// no length and no pointer to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Subnets {
    /// The first interface's subnet; [`Subnets::NO_SUBNET`] when there is no interface.
    first: (u32, u32),
    /// The other interfaces', in order.
    rest: Box<[(u32, u32)]>,
}

impl Subnets {
    /// A (network, mask) that holds no address: every address masked with 0 is 0, not 1.
    const NO_SUBNET: (u32, u32) = (1, 0);

    /// The subnets `all`, (network, mask) each, in order.
    fn new(all: &[(u32, u32)]) -> Subnets {
        match all.split_first() {
            Some((&first, rest)) => Subnets { first, rest: rest.into() },
            None => Subnets { first: Subnets::NO_SUBNET, rest: Box::default() },
        }
    }

    /// True if the address whose bytes, read with `u32::from_ne_bytes`, are `bits` is on
    /// one of the subnets.
    #[inline(always)]
    pub(super) fn hold(&self, bits: u32) -> bool {
        let (network, mask) = self.first;
        bits & mask == network || self.rest.iter().any(|&(network, mask)| bits & mask == network)
    }
}

/// The way along `route`, if its egress interface exists and its next hop's MAC is known.
pub(super) fn hop_to<F: Family>(
    snapshot: &Snapshot,
    neighbors: &NeighborTable<F>,
    route: Route<F>,
) -> Option<Hop> {
    let interface = snapshot.interfaces.get(route.egress.index())?;
    let mac = neighbors.lookup(route.next_hop)?;
    let mut addrs = [0; 12];
    addrs[..6].copy_from_slice(&mac.0);
    addrs[6..].copy_from_slice(&interface.mac.0);
    Some(Hop { addrs, egress: route.egress })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;
    use crate::testkit::Host;

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

    proptest::proptest! {
        /// `Subnets::hold` is the scan of every subnet in order it replaces: for none, one or
        /// several subnets of any prefix length (overlapping or not, /0 included) and any
        /// address, near a subnet's or not.
        #[test]
        fn subnets_hold_what_the_scan_of_every_subnet_holds(
            nets in proptest::collection::vec(
                (proptest::prelude::any::<u32>(), 0u32..=32), 0..4,
            ),
            near in proptest::prelude::any::<(proptest::sample::Index, u32)>(),
            far in proptest::prelude::any::<u32>(),
        ) {
            let all: Vec<(u32, u32)> = nets
                .iter()
                .map(|&(addr, prefix)| {
                    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                    (addr & mask, mask)
                })
                .collect();
            let subnets = Subnets::new(&all);
            // An address inside a subnet, but for its low bits (`near.1`), and any address.
            let inside = all.get(near.0.index(all.len().max(1))).map(|&(net, _)| net ^ near.1);
            for bits in inside.into_iter().chain([far, 0, 1, u32::MAX]) {
                let scanned = all.iter().any(|&(network, mask)| bits & mask == network);
                proptest::prop_assert_eq!(subnets.hold(bits), scanned, "{:#x}", bits);
            }
        }
    }
}
