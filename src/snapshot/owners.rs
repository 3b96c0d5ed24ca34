//! [`OwnerTable`]: what xlb owns at an IPv4 destination, and whether an IPv4 source is a
//! NAT backend, for the batch's first pass (the dataplane's `classify`), in one probe of one
//! word in the common case.
//!
//! The snapshot's owned map ([`FamilyIndex::owned`](super::FamilyIndex::owned), an
//! [`AddrMap`](crate::addr_map::AddrMap) whose keys the neighbour table and persistence
//! share) answers everyone else. This table answers the same question for every frame of a
//! batch with less work: it is keyed by the address's four bytes as they lie in the frame
//! (loaded in the machine's order: no byte swap), each slot is one word (the key in its low
//! 32 bits, the owner's [`OwnerCode`] above them), and its size is fixed
//! ([`OwnerTable::SLOTS`], a power of two), so a key's home slot is the top bits of one
//! multiplication, needs no bounds check, and the table's shape is nothing to load.
//!
//! The table has two parts of `SLOTS` slots each, one allocation, built and probed alike:
//! the owners (the owned map's addresses and their [`OwnerCode`]s) and the NAT backends (the
//! snapshot's `is_nat_backend` set: a packet from one to no address of xlb's may be a reply).
//! An address may be in both (a VIP that is also a NAT backend): each part answers its own
//! question, so a first pass asks the owners about the destination first and the NAT
//! backends about the source only when the destination is not owned, as it did of the owned
//! map and `is_nat_backend`.
//!
//! Invariants:
//! - Built once, with its snapshot, from the owned map's entries (VIPs first, then local
//!   addresses, then the interfaces' own) and the NAT backends' addresses; never changed
//!   after.
//! - Each part holds at most `SLOTS / 2` entries, so at least half its slots are empty and
//!   every probe ends. Past that many owned addresses (or NAT backends) the rest are in the
//!   snapshot's maps only, and [`OwnerTable::is_complete`] says false: a miss then means
//!   "ask the snapshot's maps", not "not owned" or "not a NAT backend".
//! - Linear probing (in each part): an entry sits in the run of occupied slots that starts
//!   at its key's home (or in a run that home's run joins).
//! - Every empty slot holds a filler key no probe that reaches the slot can be looking for:
//!   the filler's home lies outside the run of occupied slots that ends at the slot. So a
//!   probe knows the key it looks for by the key alone (a hit is one compare), and only a
//!   mismatch looks at whether the slot is empty.

use std::fmt;
use std::net::Ipv4Addr;

use super::Owned;

/// What [`OwnerTable::code`] says xlb owns at an address: the number the dataplane's
/// first pass takes for its class (`Class`'s discriminants are these).
pub type OwnerCode = u8;

/// The box's own interface address.
pub const OWNER_INTERFACE: OwnerCode = 0;
/// A VIP.
pub const OWNER_VIP: OwnerCode = 1;
/// A FullNAT local address.
pub const OWNER_LOCAL: OwnerCode = 2;
/// An empty slot's code, never answered (a probe that meets it has missed): the one value
/// of two bits that is no owner's.
pub const OWNER_NONE: OwnerCode = 3;
const EMPTY: OwnerCode = OWNER_NONE;

/// The code of `owned`.
#[inline]
pub const fn owner_code(owned: Owned) -> OwnerCode {
    match owned {
        Owned::Interface(_) => OWNER_INTERFACE,
        Owned::Vip => OWNER_VIP,
        Owned::Local => OWNER_LOCAL,
    }
}

/// What xlb owns at each IPv4 address it owns, and which addresses are NAT backends, for
/// the first pass (see the module docs).
#[derive(Clone)]
pub struct OwnerTable {
    slots: Box<Slots>,
    complete: bool,
}

/// One part's slots.
type Part = [u64; OwnerTable::SLOTS];

/// The table's two parts, in one allocation: a batch keeps one address for both.
#[derive(Clone)]
#[repr(C)]
struct Slots {
    owners: Part,
    nat_backends: Part,
}

/// The code of a NAT backend's entry in its part (any code but the empty slots').
const NAT_BACKEND: OwnerCode = 0;

/// The multiplier of a key's home (Fibonacci hashing in 32 bits: the top bits of the
/// product; one multiplication by an immediate).
const FIBONACCI: u32 = 0x9e37_79b9;

/// A key's home slot: the top bits of its 32-bit product with [`FIBONACCI`].
#[inline(always)]
fn home(key: u32) -> usize {
    (key.wrapping_mul(FIBONACCI) >> (32 - OwnerTable::SLOTS.trailing_zeros())) as usize
}

/// The key of `ip`: its bytes as they lie in a frame, loaded in the machine's order.
#[inline(always)]
fn key_of(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// A slot's word: `key` in the low 32 bits, `code` above.
#[inline(always)]
const fn word(key: u32, code: OwnerCode) -> u64 {
    key as u64 | (code as u64) << 32
}

impl OwnerTable {
    /// Each part's fixed number of slots (a power of two; 32 KiB of words).
    pub const SLOTS: usize = 4096;

    /// The table of `owned` (each address once, as the owned map holds them) and of
    /// `nat_backends` (each address once): every entry of a part if there are at most
    /// `SLOTS / 2`, else the first `SLOTS / 2` of them (owners in the order VIPs, local
    /// addresses, interface addresses; NAT backends by address); then
    /// [`OwnerTable::is_complete`] is false.
    pub fn new(
        owned: impl IntoIterator<Item = (Ipv4Addr, Owned)>,
        nat_backends: impl IntoIterator<Item = Ipv4Addr>,
    ) -> OwnerTable {
        let mut owned: Vec<(Ipv4Addr, Owned)> = owned.into_iter().collect();
        owned.sort_by_key(|&(ip, owned)| (owned_rank(owned), ip));
        let mut nat_backends: Vec<Ipv4Addr> = nat_backends.into_iter().collect();
        nat_backends.sort();
        let limit = Self::SLOTS / 2;
        let complete = owned.len() <= limit && nat_backends.len() <= limit;
        let slots = Box::new(Slots {
            owners: part(owned.iter().take(limit).map(|&(ip, owned)| (ip, owner_code(owned)))),
            nat_backends: part(nat_backends.iter().take(limit).map(|&ip| (ip, NAT_BACKEND))),
        });
        OwnerTable { slots, complete }
    }

    /// What xlb owns at the IPv4 address whose bytes (as they lie in a frame) are `dst`:
    /// its [`OwnerCode`], or None when the table holds no entry for it (not owned, if the
    /// table [is complete](OwnerTable::is_complete)).
    #[inline(always)]
    pub fn code(&self, dst: [u8; 4]) -> Option<OwnerCode> {
        self.lookup().code(dst)
    }

    /// The table's slots, to look up many addresses through (a batch takes them once).
    #[inline(always)]
    pub fn lookup(&self) -> OwnerLookup<'_> {
        OwnerLookup { slots: &self.slots }
    }

    /// True if the table holds `src` (an IPv4 address's bytes as they lie in a frame) as a
    /// NAT backend: not a NAT backend when false, if the table [is
    /// complete](OwnerTable::is_complete).
    #[inline(always)]
    pub fn is_nat_backend(&self, src: [u8; 4]) -> bool {
        self.lookup().is_nat_backend(src)
    }

    /// True when the table holds every address of the snapshot's owned map and every NAT
    /// backend, so that a miss in either part means "not owned" or "not a NAT backend".
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The number of owners' entries (empty slots not counted).
    pub fn len(&self) -> usize {
        entries(&self.slots.owners)
    }

    /// The number of NAT backends' entries.
    pub fn nat_backends_len(&self) -> usize {
        entries(&self.slots.nat_backends)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An [`OwnerTable`]'s slots, borrowed: [`OwnerTable::code`] and
/// [`OwnerTable::is_nat_backend`] with the slots' address in hand.
#[derive(Clone, Copy)]
pub struct OwnerLookup<'a> {
    slots: &'a Slots,
}

impl OwnerLookup<'_> {
    /// [`OwnerTable::code`].
    #[inline(always)]
    pub fn code(self, dst: [u8; 4]) -> Option<OwnerCode> {
        probe(&self.slots.owners, u32::from_ne_bytes(dst))
    }

    /// [`OwnerTable::is_nat_backend`].
    #[inline(always)]
    pub fn is_nat_backend(self, src: [u8; 4]) -> bool {
        probe(&self.slots.nat_backends, u32::from_ne_bytes(src)).is_some()
    }
}

/// The code of `key`'s entry in `part`, or None.
#[inline(always)]
fn probe(part: &Part, key: u32) -> Option<OwnerCode> {
    let mut index = home(key);
    let mut word = part[index];
    // The home slot's key is the common answer: the loop is for runs and misses.
    while word as u32 != key {
        if (word >> 32) as OwnerCode == EMPTY {
            return None;
        }
        index = (index + 1) % OwnerTable::SLOTS;
        word = part[index];
    }
    Some((word >> 32) as OwnerCode)
}

/// One part of the table holding `entries` (at most `SLOTS / 2`, each address once), the
/// empty slots filled with their fillers.
fn part(entries: impl Iterator<Item = (Ipv4Addr, OwnerCode)>) -> Part {
    let mut occupied = vec![false; OwnerTable::SLOTS];
    let mut slots = [0u64; OwnerTable::SLOTS];
    for (ip, code) in entries {
        let key = key_of(ip);
        let mut index = home(key);
        while occupied[index] {
            index = (index + 1) % OwnerTable::SLOTS;
        }
        occupied[index] = true;
        slots[index] = word(key, code);
    }
    for index in 0..OwnerTable::SLOTS {
        if !occupied[index] {
            slots[index] = word(filler(&occupied, index), EMPTY);
        }
    }
    slots
}

/// The number of entries of `part` (empty slots not counted).
fn entries(part: &Part) -> usize {
    part.iter().filter(|&&word| (word >> 32) as OwnerCode != EMPTY).count()
}

impl fmt::Debug for OwnerLookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerLookup").finish_non_exhaustive()
    }
}

impl fmt::Debug for OwnerTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerTable")
            .field("entries", &self.len())
            .field("nat_backends", &self.nat_backends_len())
            .field("complete", &self.complete)
            .finish()
    }
}

/// The order entries take a table's room in when there is not room for all: VIPs (the
/// destinations of most traffic), local addresses (FullNAT's replies), the box's own.
fn owned_rank(owned: Owned) -> u8 {
    match owned {
        Owned::Vip => 0,
        Owned::Local => 1,
        Owned::Interface(_) => 2,
    }
}

/// A filler key for the empty slot `empty`: the first key whose home lies outside the run
/// of occupied slots that ends at `empty` (`empty` included), so that no probe reaching
/// `empty` looks for it (a probe reaches the empty slot that ends its home's run, and no
/// other). `occupied` has an empty slot, at `empty`.
fn filler(occupied: &[bool], empty: usize) -> u32 {
    let slots = occupied.len();
    let mut run = 0;
    while occupied[(empty + slots - run - 1) % slots] {
        run += 1;
    }
    // Homes at distance `0..=run` behind `empty` are in the run: at most half the slots,
    // so a key outside it comes within a few tries.
    (0..=u32::MAX).find(|&key| (empty + slots - home(key)) % slots > run).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::IfaceId;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn owned_of(kind: u8) -> Owned {
        match kind % 3 {
            0 => Owned::Vip,
            1 => Owned::Local,
            _ => Owned::Interface(IfaceId(kind)),
        }
    }

    /// What the snapshot's maps say: the owned map's entries and the NAT backends.
    struct Model {
        owned: HashMap<Ipv4Addr, Owned>,
        nat_backends: HashSet<Ipv4Addr>,
    }

    /// Every key a test asks the table about: the entries, their neighbours, every slot's
    /// key of both parts (the fillers included: the keys most likely to fool a probe) and
    /// `extra`.
    fn questions(table: &OwnerTable, model: &Model, extra: &[u32]) -> Vec<u32> {
        let slots = table.slots.owners.iter().chain(&table.slots.nat_backends);
        let mut keys: Vec<u32> = slots.map(|&word| word as u32).collect();
        for ip in model.owned.keys().chain(&model.nat_backends) {
            let key = key_of(*ip);
            keys.extend([key, key.wrapping_add(1), key.wrapping_sub(1), key ^ 0x8000_0000]);
        }
        keys.extend_from_slice(extra);
        keys
    }

    /// `table` answers like the snapshot's maps `model`: the right code for an owned
    /// address it holds, None for an address not owned, and (complete) for every owned one
    /// a code; true for a NAT backend it holds, false for an address that is not one, and
    /// (complete) true for every NAT backend. Each part holds as many entries as it has
    /// room for.
    fn agrees(table: &OwnerTable, model: &Model, extra: &[u32]) -> Result<(), TestCaseError> {
        for key in questions(table, model, extra) {
            let ip = Ipv4Addr::from(key.to_ne_bytes());
            let expected = model.owned.get(&ip).map(|&owned| owner_code(owned));
            let answer = table.code(key.to_ne_bytes());
            if table.is_complete() || answer.is_some() {
                prop_assert_eq!(answer, expected, "{}", ip);
            }
            let nat_backend = table.is_nat_backend(key.to_ne_bytes());
            if table.is_complete() || nat_backend {
                prop_assert_eq!(nat_backend, model.nat_backends.contains(&ip), "{}", ip);
            }
        }
        let mut held = 0;
        for (ip, owned) in &model.owned {
            if let Some(code) = table.code(ip.octets()) {
                prop_assert_eq!(code, owner_code(*owned));
                held += 1;
            }
        }
        prop_assert_eq!(held, table.len());
        let held = model.nat_backends.iter().filter(|ip| table.is_nat_backend(ip.octets()));
        prop_assert_eq!(held.count(), table.nat_backends_len());
        let room = OwnerTable::SLOTS / 2;
        let (owned, nat_backends) = (model.owned.len(), model.nat_backends.len());
        prop_assert_eq!(table.is_complete(), owned <= room && nat_backends <= room);
        prop_assert_eq!(table.len(), owned.min(room));
        prop_assert_eq!(table.nat_backends_len(), nat_backends.min(room));
        Ok(())
    }

    fn table_of(model: &Model) -> OwnerTable {
        OwnerTable::new(
            model.owned.iter().map(|(&ip, &owned)| (ip, owned)),
            model.nat_backends.iter().copied(),
        )
    }

    #[test]
    fn empty_table_owns_nothing() {
        let table = OwnerTable::new([], []);
        assert!(table.is_complete() && table.is_empty());
        for key in [0u32, 1, u32::MAX, 0x0a01_0164] {
            assert_eq!(table.code(key.to_ne_bytes()), None);
            assert!(!table.is_nat_backend(key.to_ne_bytes()));
        }
        assert_eq!(
            format!("{table:?}"),
            "OwnerTable { entries: 0, nat_backends: 0, complete: true }"
        );
    }

    /// Each part answers its own question: an address both owned and a NAT backend is
    /// both, an owned address is no NAT backend, and a NAT backend is not owned.
    #[test]
    fn codes_are_the_owners() {
        let table = OwnerTable::new(
            [
                (Ipv4Addr::new(10, 1, 1, 100), Owned::Vip),
                (Ipv4Addr::new(10, 1, 1, 200), Owned::Local),
                (Ipv4Addr::new(10, 1, 1, 10), Owned::Interface(IfaceId(0))),
                (Ipv4Addr::UNSPECIFIED, Owned::Vip),
            ],
            [Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 100)],
        );
        assert_eq!(table.code([10, 1, 1, 100]), Some(OWNER_VIP));
        assert_eq!(table.code([10, 1, 1, 200]), Some(OWNER_LOCAL));
        assert_eq!(table.code([10, 1, 1, 10]), Some(OWNER_INTERFACE));
        assert_eq!(table.code([0, 0, 0, 0]), Some(OWNER_VIP));
        assert_eq!(table.code([10, 1, 1, 11]), None);
        assert!(table.is_nat_backend([10, 1, 1, 11]) && table.is_nat_backend([10, 1, 1, 100]));
        assert!(!table.is_nat_backend([10, 1, 1, 200]) && !table.is_nat_backend([0, 0, 0, 0]));
        assert_eq!((table.len(), table.nat_backends_len()), (4, 2));
    }

    /// More owned addresses than the table holds: the VIPs take the room first, the rest
    /// miss (the owned map answers for them), and the table says it is not complete.
    #[test]
    fn past_half_the_slots_the_vips_come_first() {
        let half = OwnerTable::SLOTS / 2;
        let vips = (0..half as u32).map(|n| (Ipv4Addr::from_bits(0x0a00_0000 + n), Owned::Vip));
        let others = (0..10u32).map(|n| (Ipv4Addr::from_bits(0x0b00_0000 + n), Owned::Local));
        let table = OwnerTable::new(others.chain(vips), [Ipv4Addr::new(10, 1, 1, 11)]);
        assert!(!table.is_complete());
        assert_eq!(table.len(), half);
        assert_eq!(table.code([10, 0, 0, 7]), Some(OWNER_VIP));
        assert_eq!(table.code([11, 0, 0, 7]), None);
        assert!(table.is_nat_backend([10, 1, 1, 11]));
    }

    /// More NAT backends than the table holds: the table is not complete (the snapshot's
    /// NAT backends answer a miss), though every owned address is in it.
    #[test]
    fn past_half_the_slots_of_nat_backends_the_table_is_not_complete() {
        let half = OwnerTable::SLOTS / 2;
        let backends = (0..=half as u32).map(|n| Ipv4Addr::from_bits(0x0a00_0000 + n));
        let table = OwnerTable::new([(Ipv4Addr::new(10, 1, 1, 100), Owned::Vip)], backends);
        assert!(!table.is_complete());
        assert_eq!((table.len(), table.nat_backends_len()), (1, half));
        assert_eq!(table.code([10, 1, 1, 100]), Some(OWNER_VIP));
        assert!(table.is_nat_backend([10, 0, 0, 0]) && !table.is_nat_backend([10, 1, 1, 100]));
    }

    /// Addresses clustered in the home space (runs form, join and wrap).
    fn clustered() -> impl Strategy<Value = Ipv4Addr> {
        // Few distinct homes: the top byte varies over 16 values, the rest small.
        (0u32..4096).prop_map(|n| Ipv4Addr::from_bits(((n % 16) << 28) | (n / 16)))
    }

    proptest! {
        /// Owned addresses and NAT backends clustered in the home space, of every kind,
        /// overlapping, up to past the table's room: the table answers as the snapshot's
        /// maps do.
        #[test]
        fn agrees_with_the_owned_map_and_the_nat_backends(
            owned in prop::collection::hash_map(
                clustered(), any::<u8>().prop_map(owned_of), 0..2200,
            ),
            nat_backends in prop::collection::hash_set(clustered(), 0..2200),
            extra in prop::collection::vec(any::<u32>(), 0..64),
        ) {
            let model = Model { owned, nat_backends };
            agrees(&table_of(&model), &model, &extra)?;
        }

        /// Keys that share a home (the same product's top bits): long runs from one home,
        /// in either part or both.
        #[test]
        fn agrees_on_one_home(
            count in 0usize..300,
            nat_count in 0usize..300,
            kind in any::<u8>(),
            extra in prop::collection::vec(any::<u32>(), 0..64),
        ) {
            static SHARING: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
            let sharing = SHARING.get_or_init(|| {
                let target = home(0x0a01_0164);
                (0..=u32::MAX).filter(|&key| home(key) == target).take(300).collect()
            });
            let ip = |key: &u32| Ipv4Addr::from(key.to_ne_bytes());
            let model = Model {
                owned: sharing[..count].iter().map(|key| (ip(key), owned_of(kind))).collect(),
                nat_backends: sharing[300 - nat_count..].iter().map(ip).collect(),
            };
            agrees(&table_of(&model), &model, &extra)?;
        }
    }
}
