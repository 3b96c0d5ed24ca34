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
//! - Nothing here allocates on the packet path: the neighbour table is created with its
//!   capacity (only [`NeighborTable::set_needed`], called per snapshot, may grow a buffer);
//!   the hold queue is one buffer allocated up front.
//! - The neighbour table is bounded and evicts: the next hops the snapshot needs (backends,
//!   gateways) and static entries always have room; every other neighbour is evicted when a
//!   newer one needs its room, or forgotten after [`NEIGHBOR_STALE`] of silence. Who gets
//!   learned at all is the caller's policy (see `dataplane::pipeline` and `daemon`).
//! - The neighbour table and the hold queue are generic over the address [`Family`], IPv4
//!   unless named: IPv6's neighbours (resolved by [`crate::ndp`]) live in a
//!   `NeighborTable<V6>` and `HoldQueue<V6>` of their own, with the same rules, and IPv4's
//!   code is what it was before they were generic. The frames written here are ARP's, IPv4's.
//! - A packet is never lost silently: it is either held (at most [`HOLD_PER_NEIGHBOR`] per
//!   unresolved next hop), or the caller drops it with its own counted reason.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::addr_map::AddrMap;
use crate::family::{Family, V4};
use crate::snapshot::IfaceId;
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
/// A learned neighbour that no backend or gateway needs is forgotten when nothing was heard
/// from it for this long (Linux's `gc_stale_time` is 60 s; a client forgotten too early only
/// costs one held frame and one request).
pub const NEIGHBOR_STALE: Duration = Duration::from_secs(300);
/// Length of an Ethernet frame carrying an IPv4 ARP packet (without padding).
pub const ARP_FRAME_LEN: usize = EthernetFrame::<&[u8]>::HEADER_LEN + ArpPacket::<&[u8]>::LEN;

/// Slots a full table looks at for a neighbour to evict (a bounded scan, so learning stays
/// O(1) under an ARP storm; the table's slots are at most half full, so about half as many
/// entries are candidates).
pub const EVICTION_SCAN: usize = 32;

/// One neighbour: its MAC, when it was last heard from, and whether it came from the
/// config (then it is never replaced, evicted or aged out).
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
    /// New, in the room of the oldest neighbour nobody needs, which was evicted.
    NewEvicting,
    Updated,
    Unchanged,
    /// A static entry exists; the ARP was ignored.
    Static,
    /// The table is full of neighbours that are needed or static; nothing was learned.
    Full,
}

/// Address (of family `F`, IPv4 unless named) → MAC, bounded, with eviction.
///
/// Some neighbours are *needed*: the next hops the running snapshot sends to (backends,
/// gateways), given by [`NeighborTable::set_needed`]. Static and needed entries are never
/// evicted nor aged out. Every other entry (a client that asked for a VIP, say) is learned
/// while there is room, pushed out by a newer one when the table is full (the oldest of the
/// [`EVICTION_SCAN`] slots after a moving cursor), and forgotten by [`NeighborTable::expire`]
/// after [`NEIGHBOR_STALE`] of silence. So a storm of ARP from other hosts can only churn
/// the unneeded entries: a needed next hop always finds room (a full scan, if the bounded
/// one finds no victim).
#[derive(Debug, Clone)]
pub struct NeighborTable<F: Family = V4> {
    entries: AddrMap<Neighbor, F>,
    /// Sorted, deduplicated.
    needed: Vec<F::Addr>,
    /// Where the next eviction scan starts.
    evict_cursor: usize,
    /// Where the next [`NeighborTable::expire`] call resumes.
    expire_cursor: usize,
    generation: u64,
}

impl NeighborTable {
    /// An IPv4 table ([`NeighborTable::new`] for any family; this one needs no annotation
    /// where nothing else names the family).
    pub fn with_capacity(capacity: usize) -> Self {
        Self::new(capacity)
    }
}

impl<F: Family> NeighborTable<F> {
    /// A table that holds up to `capacity` neighbours.
    pub fn new(capacity: usize) -> Self {
        NeighborTable {
            entries: AddrMap::new(capacity),
            needed: Vec::new(),
            evict_cursor: 0,
            expire_cursor: 0,
            generation: 0,
        }
    }

    #[inline]
    pub fn lookup(&self, ip: F::Addr) -> Option<MacAddr> {
        self.entries.get(ip).map(|n| n.mac)
    }

    pub fn get(&self, ip: F::Addr) -> Option<Neighbor> {
        self.entries.get(ip)
    }

    /// Sets the next hops that must never be evicted (called when a snapshot arrives, not
    /// per packet: it reuses its buffer, but may grow it).
    pub fn set_needed(&mut self, needed: impl IntoIterator<Item = F::Addr>) {
        self.needed.clear();
        self.needed.extend(needed);
        self.needed.sort_unstable();
        self.needed.dedup();
    }

    /// True if `ip` is a next hop of the running snapshot.
    pub fn is_needed(&self, ip: F::Addr) -> bool {
        self.needed.binary_search(&ip).is_ok()
    }

    fn evictable(&self, ip: F::Addr, neighbor: &Neighbor) -> bool {
        !neighbor.is_static && !self.is_needed(ip)
    }

    /// Adds or replaces a static entry (from `[[neighbor]]`), evicting a learned one if the
    /// table is full.
    pub fn insert_static(&mut self, ip: F::Addr, mac: MacAddr) {
        let neighbor = Neighbor { mac, updated: Instant::ZERO, is_static: true };
        if self.entries.get(ip) == Some(neighbor) {
            return;
        }
        if self.entries.insert(ip, neighbor)
            || (self.evict(true).is_some() && self.entries.insert(ip, neighbor))
        {
            self.generation += 1;
        }
    }

    /// Records what ARP (or, in an IPv6 table, NDP) said about `ip`.
    pub fn learn(&mut self, now: Instant, ip: F::Addr, mac: MacAddr) -> Learned {
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
        let neighbor = Neighbor { mac, updated: now, is_static: false };
        let learned = if self.entries.insert(ip, neighbor) {
            Learned::New
        } else if self.evict(self.is_needed(ip)).is_some() && self.entries.insert(ip, neighbor) {
            Learned::NewEvicting
        } else {
            return Learned::Full;
        };
        self.generation += 1;
        learned
    }

    /// Removes the oldest evictable entry among the next [`EVICTION_SCAN`] slots (all of
    /// them if `thorough`), and returns its address.
    fn evict(&mut self, thorough: bool) -> Option<F::Addr> {
        let slots = self.entries.slot_count();
        let scan = if thorough { slots } else { EVICTION_SCAN.min(slots) };
        let mut oldest: Option<(F::Addr, Instant)> = None;
        for step in 0..scan {
            let Some((ip, neighbor)) = self.entries.slot((self.evict_cursor + step) % slots) else {
                continue;
            };
            if self.evictable(ip, &neighbor) && oldest.is_none_or(|(_, t)| neighbor.updated < t) {
                oldest = Some((ip, neighbor.updated));
            }
        }
        self.evict_cursor = (self.evict_cursor + EVICTION_SCAN) % slots;
        let (ip, _) = oldest?;
        self.entries.remove(ip);
        self.generation += 1;
        Some(ip)
    }

    /// Looks at the next `budget` slots and forgets the evictable neighbours not heard from
    /// for [`NEIGHBOR_STALE`]; returns how many. Called between batches, a few slots at a
    /// time, so the whole table is swept every few hundred calls.
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        let slots = self.entries.slot_count();
        let mut forgotten = 0;
        for _ in 0..budget.min(slots) {
            let index = self.expire_cursor;
            self.expire_cursor = (self.expire_cursor + 1) % slots;
            let Some((ip, neighbor)) = self.entries.slot(index) else { continue };
            if self.evictable(ip, &neighbor)
                && now.saturating_duration_since(neighbor.updated) >= NEIGHBOR_STALE
            {
                self.entries.remove(ip);
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            self.generation += 1;
        }
        forgotten
    }

    /// Changes whenever an entry is added, removed or its MAC changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (F::Addr, Neighbor)> + '_ {
        self.entries.iter()
    }
}

/// What [`HoldQueue::hold`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held; the caller should ask for the next hop now (ARP request, neighbour
    /// solicitation).
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
struct Pending<F: Family> {
    next_hop: F::Addr,
    egress: IfaceId,
    first_held: Instant,
    last_request: Instant,
    held: usize,
    lens: [usize; HOLD_PER_NEIGHBOR],
}

/// Frames waiting for a next hop's MAC. One buffer, allocated once.
#[derive(Debug)]
pub struct HoldQueue<F: Family = V4> {
    pending: Vec<Option<Pending<F>>>,
    buffer: Vec<u8>,
    held_total: usize,
}

impl HoldQueue {
    /// An IPv4 hold queue (`HoldQueue::<F>::default()` for any family; this one needs no
    /// annotation where nothing else names the family).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<F: Family> Default for HoldQueue<F> {
    fn default() -> Self {
        HoldQueue {
            pending: vec![None; MAX_PENDING_NEIGHBORS],
            buffer: vec![0; MAX_PENDING_NEIGHBORS * HOLD_PER_NEIGHBOR * MAX_HELD_FRAME],
            held_total: 0,
        }
    }
}

impl<F: Family> HoldQueue<F> {
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
    pub fn hold(&mut self, now: Instant, next_hop: F::Addr, egress: IfaceId, frame: &[u8]) -> Hold {
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
        next_hop: F::Addr,
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
    pub fn unresolved(&self) -> impl Iterator<Item = (F::Addr, IfaceId)> + '_ {
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

/// An RFC 5227 ARP probe for `ip` (as `arping -D` sends): a broadcast request from sender
/// address 0.0.0.0, so that no host's cache learns anything from it, and any host that
/// holds `ip` answers.
pub fn write_probe(buffer: &mut [u8], our_mac: MacAddr, ip: Ipv4Addr) -> usize {
    write_arp(buffer, ArpOperation::Request, our_mac, Ipv4Addr::UNSPECIFIED, MacAddr::ZERO, ip)
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
        // Full: a newcomer takes the room of the learned entry, never the static one.
        let ip3 = Ipv4Addr::new(10, 0, 0, 3);
        assert_eq!(table.learn(Instant::ZERO, ip3, MAC_A), Learned::NewEvicting);
        assert_eq!(table.len(), 2);
        assert_eq!((table.lookup(ip1), table.lookup(ip2)), (Some(MAC_A), None));
        // Once everything left is static or needed, nothing more is learned.
        table.set_needed([ip3]);
        assert_eq!(table.learn(Instant::ZERO, ip2, MAC_A), Learned::Full);
        assert_eq!((table.lookup(ip1), table.lookup(ip3)), (Some(MAC_A), Some(MAC_A)));
    }

    /// The storm: 5000 unrelated senders fill a 4096-entry table; a backend next hop
    /// learned afterwards still gets in, and so does a static entry.
    #[test]
    fn a_needed_neighbor_gets_room_in_a_table_full_of_strangers() {
        let mut table = NeighborTable::with_capacity(4096);
        let backend = Ipv4Addr::new(10, 1, 1, 11);
        table.set_needed([backend, Ipv4Addr::new(10, 1, 1, 1)]);
        let mut learned = 0;
        for i in 0..5000u32 {
            let at = Instant::from_millis(u64::from(i));
            let stranger = Ipv4Addr::from_bits(0x0a02_0000 + i);
            if table.learn(at, stranger, MAC_B) != Learned::Full {
                learned += 1;
            }
        }
        assert_eq!(table.len(), 4096, "bounded");
        assert!(learned > 4096, "strangers evict strangers ({learned} learned)");
        let later = Instant::from_secs(10);
        assert!(matches!(table.learn(later, backend, MAC_A), Learned::NewEvicting));
        assert_eq!(table.lookup(backend), Some(MAC_A));
        let configured = Ipv4Addr::new(10, 1, 1, 12);
        table.insert_static(configured, MAC_A);
        assert_eq!(table.lookup(configured), Some(MAC_A));
        // Another storm cannot push them out.
        for i in 0..10_000u32 {
            table.learn(later, Ipv4Addr::from_bits(0x0a03_0000 + i), MAC_B);
        }
        assert_eq!((table.lookup(backend), table.lookup(configured)), (Some(MAC_A), Some(MAC_A)));
        assert_eq!(table.len(), 4096);
    }

    /// Eviction takes the oldest of the scanned entries, and expiry forgets only stale,
    /// unneeded, learned entries.
    #[test]
    fn stale_entries_expire_and_the_oldest_is_evicted_first() {
        let mut table = NeighborTable::with_capacity(8);
        let ip = |i: u32| Ipv4Addr::from_bits(0x0a00_0000 + i);
        table.insert_static(ip(0), MAC_A);
        table.set_needed([ip(1)]);
        table.learn(Instant::ZERO, ip(1), MAC_A);
        for i in 2..8 {
            table.learn(Instant::from_secs(u64::from(i)), ip(i), MAC_B);
        }
        // The table has 16 slots, fewer than one scan: the oldest learned one (ip 2) goes.
        assert_eq!(table.learn(Instant::from_secs(9), ip(9), MAC_B), Learned::NewEvicting);
        assert_eq!(table.lookup(ip(2)), None);
        assert!(table.lookup(ip(3)).is_some());

        let generation = table.generation();
        let stale = Instant::from_secs(5).saturating_add(NEIGHBOR_STALE);
        let forgotten = table.expire(stale, 1_000);
        assert_eq!(forgotten, 3, "ip 3, 4, 5 are stale");
        assert!(table.generation() > generation, "hop caches must refill");
        assert_eq!(table.lookup(ip(5)), None);
        assert!(table.lookup(ip(6)).is_some());
        assert!(table.lookup(ip(0)).is_some() && table.lookup(ip(1)).is_some());
        assert_eq!(table.len(), 5);
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
