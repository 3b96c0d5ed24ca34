//! Neighbours: ARP for xlb's addresses, the neighbour table's learning, paced gratuitous
//! ARP and probes, refreshes of backends' next hops, the hold queue's release, and the
//! per-core hop caches that give a frame its Ethernet header and egress.
//!
//! Invariants: only ARP that names us (or refreshes a known neighbour) from a sender on the
//! ingress interface's subnet is learned; a sender no reply may go to is never learned or
//! answered; another host claiming a VIP or local address is a counted conflict. Paced ARP
//! takes at most [`PACED_ARP_ROOM`] of the emit queue. The hop caches are valid while
//! `hops_generation` matches the neighbour table's generation and hold only hops whose next
//! hop's MAC is known; a miss falls back to [`CoreState::send`], which holds the frame and
//! asks (from the box's own address, never a VIP).

use std::net::Ipv4Addr;

use crate::arp::{self, Hold, Learned, NeighborTable};
use crate::conntrack::{Direction, Flow};
use crate::report::{DropReason, Stat};
use crate::snapshot::{IfaceId, Owned, Route, Snapshot};
use crate::time::Instant;
use crate::wire::{ArpOperation, ArpPacket, EthernetFrame, MacAddr, WireError};

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
pub(super) struct ClientHop {
    client: Ipv4Addr,
    hop: Hop,
}

/// Entries of the cache of on-link clients' hops (direct-mapped by client address; a power
/// of two). Clients behind a gateway do not use it: they all share the gateway's hop. A miss
/// costs a neighbour lookup, so a cache this small (a few KiB, in L1) pays as long as most
/// on-link replies go to fewer clients than this at a time; a collision is just a refill.
pub(super) const CLIENT_HOP_SLOTS: usize = 256;

/// The slot of `client` in the client hop cache: the top bits of a Fibonacci hash.
#[inline]
pub(super) fn client_hop_slot(client: Ipv4Addr) -> usize {
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
    pub(super) fn refresh_neighbors(&mut self, snapshot: &Snapshot, now: Instant) {
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
    pub(super) fn backend_hop(&mut self, snapshot: &Snapshot, index: usize) -> Option<Hop> {
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
    pub(super) fn client_hop(&mut self, snapshot: &Snapshot, client: Ipv4Addr) -> Option<Hop> {
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
}

/// The next hops the snapshot sends to (backends' and gateways'): never evicted from the
/// neighbour table.
pub(super) fn needed_next_hops(snapshot: &Snapshot) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let backends = snapshot.backends.iter().map(|b| b.route.next_hop);
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

/// The subnets of the snapshot's interfaces, as [`CoreState::subnets`] keeps them.
pub(super) fn subnets(snapshot: &Snapshot) -> Box<[(u32, u32)]> {
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
