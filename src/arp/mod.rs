//! ARP: the neighbour table, packets held while a next hop resolves, and the ARP frames xlb
//! writes itself.
//!
//! xlb answers ARP for its VIPs and FullNAT local addresses, and resolves the MACs of its
//! backends and next hops itself. Its ARP requests always carry the box's *own interface
//! address* as the sender, never a VIP. That is the bug the seed's LVS lab hit: a real server
//! holding the VIP on `lo` drops an ARP request whose sender is an address it owns itself
//! (`fib_validate_source` → `inet_lookup_ifaddr_rcu`, unless `accept_local=1`), so the
//! director never learns its MAC. With the box's own address as sender, backends configured
//! the textbook way (VIP on `lo`, `arp_ignore=1`, `arp_announce=2`) answer.
//!
//! Invariants:
//! - Nothing here allocates after construction: the neighbour table is created with its
//!   capacity and stops learning when full (counted by the caller); the hold queue is one
//!   buffer allocated up front.
//! - A packet is never lost silently: it is either held (at most [`HOLD_PER_NEIGHBOR`] per
//!   unresolved next hop), or the caller drops it with its own counted reason.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::addr_map::AddrMap;
use crate::dataplane::IfaceId;
use crate::time::Instant;
use crate::wire::{ArpOperation, ArpPacket, EtherType, EthernetFrame, MacAddr};

/// Packets held per unresolved next hop (Linux holds a few too: `unres_qlen`).
pub const HOLD_PER_NEIGHBOR: usize = 4;
/// Next hops that may be unresolved at once, per core.
pub const MAX_PENDING_NEIGHBORS: usize = 64;
/// Largest frame that can be held (bigger ones are dropped with their own reason).
pub const MAX_HELD_FRAME: usize = 2048;
/// An unresolved next hop is asked again at most this often.
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Held packets of a next hop that does not answer are released as drops after this long.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(3);
/// Length of an Ethernet frame carrying an IPv4 ARP packet (without padding).
pub const ARP_FRAME_LEN: usize = EthernetFrame::<&[u8]>::HEADER_LEN + ArpPacket::<&[u8]>::LEN;

/// One neighbour: its MAC, and whether it came from the config (then it is never replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: MacAddr,
    pub updated: Instant,
    pub is_static: bool,
}

/// What [`NeighborTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Updated,
    Unchanged,
    /// A static entry exists; the ARP was ignored.
    Static,
    /// The table is full; nothing was learned.
    Full,
}

/// IPv4 address → MAC, bounded.
#[derive(Debug, Clone)]
pub struct NeighborTable {
    entries: AddrMap<Neighbor>,
    generation: u64,
}

impl NeighborTable {
    pub fn with_capacity(capacity: usize) -> Self {
        NeighborTable { entries: AddrMap::with_capacity(capacity), generation: 0 }
    }

    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(ip).map(|n| n.mac)
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<Neighbor> {
        self.entries.get(ip)
    }

    /// Adds or replaces a static entry (from `[[neighbor]]`).
    pub fn insert_static(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        let neighbor = Neighbor { mac, updated: Instant::ZERO, is_static: true };
        if self.entries.get(ip) != Some(neighbor) && self.entries.insert(ip, neighbor) {
            self.generation += 1;
        }
    }

    /// Records what an ARP packet said about `ip`.
    pub fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: MacAddr) -> Learned {
        if let Some(entry) = self.entries.get_mut(ip) {
            if entry.is_static {
                return Learned::Static;
            }
            entry.updated = now;
            if entry.mac == mac {
                return Learned::Unchanged;
            }
            entry.mac = mac;
            self.generation += 1;
            return Learned::Updated;
        }
        if !self.entries.insert(ip, Neighbor { mac, updated: now, is_static: false }) {
            return Learned::Full;
        }
        self.generation += 1;
        Learned::New
    }

    /// Changes whenever an entry is added or its MAC changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, Neighbor)> + '_ {
        self.entries.iter()
    }
}

/// What [`HoldQueue::hold`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held; the caller should send an ARP request for the next hop now.
    HeldAskNow,
    /// Held; a request went out recently.
    Held,
    /// This next hop already holds [`HOLD_PER_NEIGHBOR`] packets.
    QueueFull,
    /// [`MAX_PENDING_NEIGHBORS`] next hops are unresolved already.
    TooManyPending,
    /// The frame is larger than [`MAX_HELD_FRAME`].
    TooLarge,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    next_hop: Ipv4Addr,
    egress: IfaceId,
    first_held: Instant,
    last_request: Instant,
    held: usize,
    lens: [usize; HOLD_PER_NEIGHBOR],
}

/// Frames waiting for a next hop's MAC. One buffer, allocated once.
#[derive(Debug)]
pub struct HoldQueue {
    pending: Vec<Option<Pending>>,
    buffer: Vec<u8>,
    held_total: usize,
}

impl Default for HoldQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl HoldQueue {
    pub fn new() -> Self {
        HoldQueue {
            pending: vec![None; MAX_PENDING_NEIGHBORS],
            buffer: vec![0; MAX_PENDING_NEIGHBORS * HOLD_PER_NEIGHBOR * MAX_HELD_FRAME],
            held_total: 0,
        }
    }

    /// Frames held right now.
    pub fn len(&self) -> usize {
        self.held_total
    }

    pub fn is_empty(&self) -> bool {
        self.held_total == 0
    }

    fn slot_range(pending_index: usize, frame_index: usize) -> std::ops::Range<usize> {
        let start = (pending_index * HOLD_PER_NEIGHBOR + frame_index) * MAX_HELD_FRAME;
        start..start + MAX_HELD_FRAME
    }

    /// Holds a copy of `frame` until `next_hop` (reached through `egress`) resolves.
    pub fn hold(
        &mut self,
        now: Instant,
        next_hop: Ipv4Addr,
        egress: IfaceId,
        frame: &[u8],
    ) -> Hold {
        if frame.len() > MAX_HELD_FRAME {
            return Hold::TooLarge;
        }
        let existing = self.pending.iter().position(|p| p.is_some_and(|p| p.next_hop == next_hop));
        let index = match existing {
            Some(index) => index,
            None => match self.pending.iter().position(Option::is_none) {
                Some(free) => {
                    self.pending[free] = Some(Pending {
                        next_hop,
                        egress,
                        first_held: now,
                        last_request: now,
                        held: 0,
                        lens: [0; HOLD_PER_NEIGHBOR],
                    });
                    free
                }
                None => return Hold::TooManyPending,
            },
        };
        let Some(pending) = self.pending[index].as_mut() else {
            return Hold::TooManyPending;
        };
        if pending.held >= HOLD_PER_NEIGHBOR {
            return Hold::QueueFull;
        }
        let frame_index = pending.held;
        pending.lens[frame_index] = frame.len();
        pending.held += 1;
        let ask = if existing.is_none() {
            true
        } else if now.saturating_duration_since(pending.last_request) >= REQUEST_INTERVAL {
            pending.last_request = now;
            true
        } else {
            false
        };
        let range = Self::slot_range(index, frame_index);
        self.buffer[range.start..range.start + frame.len()].copy_from_slice(frame);
        self.held_total += 1;
        if ask { Hold::HeldAskNow } else { Hold::Held }
    }

    /// Hands every frame held for `next_hop` to `release` (egress interface, frame bytes to
    /// complete and send), in arrival order, and forgets them. Returns how many.
    pub fn release(
        &mut self,
        next_hop: Ipv4Addr,
        mut release: impl FnMut(IfaceId, &mut [u8]),
    ) -> usize {
        let Some(index) =
            self.pending.iter().position(|p| p.is_some_and(|p| p.next_hop == next_hop))
        else {
            return 0;
        };
        let Some(pending) = self.pending[index].take() else { return 0 };
        for frame_index in 0..pending.held {
            let range = Self::slot_range(index, frame_index);
            let len = pending.lens[frame_index];
            release(pending.egress, &mut self.buffer[range.start..range.start + len]);
        }
        self.held_total -= pending.held;
        pending.held
    }

    /// Forgets next hops unresolved for longer than [`HOLD_TIMEOUT`]; returns how many
    /// frames were given up.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for slot in &mut self.pending {
            if let Some(p) = slot
                && now.saturating_duration_since(p.first_held) >= HOLD_TIMEOUT
            {
                expired += p.held;
                *slot = None;
            }
        }
        self.held_total -= expired;
        expired
    }

    /// Next hops still waiting, with the interface to ask on.
    pub fn unresolved(&self) -> impl Iterator<Item = (Ipv4Addr, IfaceId)> + '_ {
        self.pending.iter().flatten().map(|p| (p.next_hop, p.egress))
    }
}

/// Turns the ARP request in `frame` into the reply saying `target_ip` is at `our_mac`, in
/// place. The frame keeps its length (padding included).
pub fn answer_request(frame: &mut [u8], our_mac: MacAddr) {
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    let requester_mac = eth.src_addr();
    eth.set_dst_addr(requester_mac);
    eth.set_src_addr(our_mac);
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    let requester_ip = arp.sender_proto_addr();
    let requester_hw = arp.sender_hw_addr();
    let target_ip = arp.target_proto_addr();
    arp.set_operation(ArpOperation::Reply);
    arp.set_sender_hw_addr(our_mac);
    arp.set_sender_proto_addr(target_ip);
    arp.set_target_hw_addr(requester_hw);
    arp.set_target_proto_addr(requester_ip);
}

/// Writes an ARP frame into `buffer` (at least [`ARP_FRAME_LEN`] bytes) and returns its
/// length. A request is broadcast with an all-zero target MAC.
pub fn write_arp(
    buffer: &mut [u8],
    operation: ArpOperation,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> usize {
    let frame = &mut buffer[..ARP_FRAME_LEN];
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    let dst = if operation == ArpOperation::Request { MacAddr::BROADCAST } else { target_mac };
    eth.set_dst_addr(dst);
    eth.set_src_addr(sender_mac);
    eth.set_ethertype(EtherType::ARP);
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    arp.fill_header();
    arp.set_operation(operation);
    arp.set_sender_hw_addr(sender_mac);
    arp.set_sender_proto_addr(sender_ip);
    arp.set_target_hw_addr(target_mac);
    arp.set_target_proto_addr(target_ip);
    ARP_FRAME_LEN
}

/// An ARP request for `target_ip`, asked from the box's own address.
pub fn write_request(
    buffer: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> usize {
    write_arp(buffer, ArpOperation::Request, our_mac, our_ip, MacAddr::ZERO, target_ip)
}

/// A gratuitous ARP announcing that `ip` (a VIP or local address) is at `our_mac`: a
/// broadcast request whose sender and target address are both `ip`.
pub fn write_gratuitous(buffer: &mut [u8], our_mac: MacAddr, ip: Ipv4Addr) -> usize {
    write_arp(buffer, ArpOperation::Request, our_mac, ip, MacAddr::ZERO, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn learn_respects_static_entries_and_capacity() {
        let mut table = NeighborTable::with_capacity(2);
        let ip1 = Ipv4Addr::new(10, 0, 0, 1);
        let ip2 = Ipv4Addr::new(10, 0, 0, 2);
        table.insert_static(ip1, MAC_A);
        assert_eq!(table.learn(Instant::ZERO, ip1, MAC_B), Learned::Static);
        assert_eq!(table.lookup(ip1), Some(MAC_A));
        let generation = table.generation();
        assert_eq!(table.learn(Instant::ZERO, ip2, MAC_A), Learned::New);
        assert!(table.generation() > generation);
        assert_eq!(table.learn(Instant::ZERO, ip2, MAC_A), Learned::Unchanged);
        assert_eq!(table.learn(Instant::ZERO, ip2, MAC_B), Learned::Updated);
        assert_eq!(table.lookup(ip2), Some(MAC_B));
        assert_eq!(table.learn(Instant::ZERO, Ipv4Addr::new(10, 0, 0, 3), MAC_A), Learned::Full);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn hold_asks_once_per_interval_and_releases_in_order() {
        let mut queue = HoldQueue::new();
        let hop = Ipv4Addr::new(10, 0, 0, 9);
        let t0 = Instant::from_secs(1);
        assert_eq!(queue.hold(t0, hop, IfaceId(0), &[1, 1, 1]), Hold::HeldAskNow);
        assert_eq!(queue.hold(t0, hop, IfaceId(0), &[2, 2]), Hold::Held);
        let later = t0.saturating_add(REQUEST_INTERVAL);
        assert_eq!(queue.hold(later, hop, IfaceId(0), &[3]), Hold::HeldAskNow);
        assert_eq!(queue.hold(later, hop, IfaceId(0), &[4]), Hold::Held);
        assert_eq!(queue.hold(later, hop, IfaceId(0), &[5]), Hold::QueueFull);
        assert_eq!(queue.len(), 4);
        let mut seen = Vec::new();
        assert_eq!(queue.release(hop, |_, frame| seen.push(frame.to_vec())), 4);
        assert_eq!(seen, vec![vec![1, 1, 1], vec![2, 2], vec![3], vec![4]]);
        assert!(queue.is_empty());
        assert_eq!(queue.release(hop, |_, _| panic!("nothing is held")), 0);
    }

    #[test]
    fn hold_bounds_pending_next_hops_and_expires_them() {
        let mut queue = HoldQueue::new();
        for i in 0..MAX_PENDING_NEIGHBORS {
            let hop = Ipv4Addr::from_bits(0x0a00_0000 + i as u32);
            assert_eq!(queue.hold(Instant::ZERO, hop, IfaceId(0), &[0; 60]), Hold::HeldAskNow);
        }
        let extra = Ipv4Addr::new(10, 9, 9, 9);
        assert_eq!(queue.hold(Instant::ZERO, extra, IfaceId(0), &[0; 60]), Hold::TooManyPending);
        assert_eq!(queue.hold(Instant::ZERO, extra, IfaceId(0), &[0; 4000]), Hold::TooLarge);
        assert_eq!(queue.expire(Instant::ZERO.saturating_add(HOLD_TIMEOUT)), MAX_PENDING_NEIGHBORS);
        assert!(queue.is_empty());
        assert_eq!(queue.hold(Instant::ZERO, extra, IfaceId(0), &[0; 60]), Hold::HeldAskNow);
    }

    #[test]
    fn requests_come_from_the_box_address_and_answers_swap_roles() {
        let our_ip = Ipv4Addr::new(10, 1, 1, 10);
        let backend = Ipv4Addr::new(10, 1, 1, 11);
        let mut buffer = [0u8; 64];
        let len = write_request(&mut buffer, MAC_A, our_ip, backend);
        assert_eq!(len, 42);
        let eth = EthernetFrame::new_checked(&buffer[..len]).unwrap();
        assert_eq!(eth.dst_addr(), MacAddr::BROADCAST);
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.operation(), ArpOperation::Request);
        assert_eq!(arp.sender_proto_addr(), our_ip);
        assert_eq!(arp.target_proto_addr(), backend);

        // The backend's own request for our address, answered in place.
        let mut request = [0u8; 60];
        write_request(&mut request, MAC_B, backend, our_ip);
        answer_request(&mut request, MAC_A);
        let eth = EthernetFrame::new_checked(&request[..]).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr()), (MAC_B, MAC_A));
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.operation(), ArpOperation::Reply);
        assert_eq!((arp.sender_hw_addr(), arp.sender_proto_addr()), (MAC_A, our_ip));
        assert_eq!((arp.target_hw_addr(), arp.target_proto_addr()), (MAC_B, backend));
    }
}
