//! [`OwnerTable`]: what xlb owns at an IPv4 destination, for the batch's first pass (the
//! dataplane's `classify`), in one probe of one word in the common case.
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
//! Invariants:
//! - Built once, with its snapshot, from the owned map's entries (VIPs first, then local
//!   addresses, then the interfaces' own); never changed after.
//! - It holds at most `SLOTS / 2` entries, so at least half its slots are empty and every
//!   probe ends. Past that many owned addresses the rest are in the owned map only, and
//!   [`OwnerTable::is_complete`] says false: a miss then means "ask the owned map", not
//!   "not owned".
//! - Linear probing: an entry sits in the run of occupied slots that starts at its key's
//!   home (or in a run that home's run joins).
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

/// What xlb owns at each IPv4 address it owns, for the first pass (see the module docs).
#[derive(Clone)]
pub struct OwnerTable {
    slots: Box<[u64; OwnerTable::SLOTS]>,
    complete: bool,
}

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
    /// The table's fixed number of slots (a power of two; 32 KiB of words).
    pub const SLOTS: usize = 4096;

    /// The table of `owned` (each address once, as the owned map holds them): every entry
    /// if there are at most `SLOTS / 2`, else the first `SLOTS / 2` of them in the order
    /// VIPs, local addresses, interface addresses (then [`OwnerTable::is_complete`] is
    /// false).
    pub fn new(owned: impl IntoIterator<Item = (Ipv4Addr, Owned)>) -> OwnerTable {
        let mut entries: Vec<(Ipv4Addr, Owned)> = owned.into_iter().collect();
        entries.sort_by_key(|&(ip, owned)| (owned_rank(owned), ip));
        let limit = Self::SLOTS / 2;
        let complete = entries.len() <= limit;
        let mut occupied = vec![false; Self::SLOTS];
        let mut slots = Box::new([0u64; Self::SLOTS]);
        for &(ip, owned) in entries.iter().take(limit) {
            let key = key_of(ip);
            let mut index = home(key);
            while occupied[index] {
                index = (index + 1) % Self::SLOTS;
            }
            occupied[index] = true;
            slots[index] = word(key, owner_code(owned));
        }
        for index in 0..Self::SLOTS {
            if !occupied[index] {
                slots[index] = word(filler(&occupied, index), EMPTY);
            }
        }
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

    /// True when the table holds every address of the snapshot's owned map, so that a miss
    /// means "not owned".
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The number of entries (empty slots not counted).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|&&word| (word >> 32) as OwnerCode != EMPTY).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An [`OwnerTable`]'s slots, borrowed: [`OwnerTable::code`] with the slots' address in
/// hand.
#[derive(Clone, Copy)]
pub struct OwnerLookup<'a> {
    slots: &'a [u64; OwnerTable::SLOTS],
}

impl OwnerLookup<'_> {
    /// [`OwnerTable::code`].
    #[inline(always)]
    pub fn code(self, dst: [u8; 4]) -> Option<OwnerCode> {
        let key = u32::from_ne_bytes(dst);
        let mut index = home(key);
        let mut word = self.slots[index];
        // The home slot's key is the common answer: the loop is for runs and misses.
        while word as u32 != key {
            if (word >> 32) as OwnerCode == EMPTY {
                return None;
            }
            index = (index + 1) % OwnerTable::SLOTS;
            word = self.slots[index];
        }
        Some((word >> 32) as OwnerCode)
    }
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
    use std::collections::HashMap;

    fn owned_of(kind: u8) -> Owned {
        match kind % 3 {
            0 => Owned::Vip,
            1 => Owned::Local,
            _ => Owned::Interface(IfaceId(kind)),
        }
    }

    /// Every key a test asks the table about: the entries, their neighbours, every slot's
    /// key (the fillers included: the keys most likely to fool a probe) and `extra`.
    fn questions(
        table: &OwnerTable,
        entries: &HashMap<Ipv4Addr, Owned>,
        extra: &[u32],
    ) -> Vec<u32> {
        let mut keys: Vec<u32> = table.slots.iter().map(|&word| word as u32).collect();
        for ip in entries.keys() {
            let key = key_of(*ip);
            keys.extend([key, key.wrapping_add(1), key.wrapping_sub(1), key ^ 0x8000_0000]);
        }
        keys.extend_from_slice(extra);
        keys
    }

    /// `table` answers like the owned map `entries`: the right code for an entry it holds,
    /// None for an address not owned, and (complete) for every owned one a code.
    fn agrees(
        table: &OwnerTable,
        entries: &HashMap<Ipv4Addr, Owned>,
        extra: &[u32],
    ) -> Result<(), TestCaseError> {
        let mut held = 0;
        for key in questions(table, entries, extra) {
            let ip = Ipv4Addr::from(key.to_ne_bytes());
            let expected = entries.get(&ip).map(|&owned| owner_code(owned));
            let answer = table.code(key.to_ne_bytes());
            if table.is_complete() || answer.is_some() {
                prop_assert_eq!(answer, expected, "{}", ip);
            }
        }
        for (ip, owned) in entries {
            if let Some(code) = table.code(ip.octets()) {
                prop_assert_eq!(code, owner_code(*owned));
                held += 1;
            }
        }
        prop_assert_eq!(held, table.len());
        prop_assert_eq!(table.is_complete(), entries.len() <= OwnerTable::SLOTS / 2);
        prop_assert_eq!(table.len(), entries.len().min(OwnerTable::SLOTS / 2));
        Ok(())
    }

    fn table_of(entries: &HashMap<Ipv4Addr, Owned>) -> OwnerTable {
        OwnerTable::new(entries.iter().map(|(&ip, &owned)| (ip, owned)))
    }

    #[test]
    fn empty_table_owns_nothing() {
        let table = OwnerTable::new([]);
        assert!(table.is_complete() && table.is_empty());
        for key in [0u32, 1, u32::MAX, 0x0a01_0164] {
            assert_eq!(table.code(key.to_ne_bytes()), None);
        }
        assert_eq!(format!("{table:?}"), "OwnerTable { entries: 0, complete: true }");
    }

    #[test]
    fn codes_are_the_owners() {
        let table = OwnerTable::new([
            (Ipv4Addr::new(10, 1, 1, 100), Owned::Vip),
            (Ipv4Addr::new(10, 1, 1, 200), Owned::Local),
            (Ipv4Addr::new(10, 1, 1, 10), Owned::Interface(IfaceId(0))),
            (Ipv4Addr::UNSPECIFIED, Owned::Vip),
        ]);
        assert_eq!(table.code([10, 1, 1, 100]), Some(OWNER_VIP));
        assert_eq!(table.code([10, 1, 1, 200]), Some(OWNER_LOCAL));
        assert_eq!(table.code([10, 1, 1, 10]), Some(OWNER_INTERFACE));
        assert_eq!(table.code([0, 0, 0, 0]), Some(OWNER_VIP));
        assert_eq!(table.code([10, 1, 1, 11]), None);
        assert_eq!(table.len(), 4);
    }

    /// More owned addresses than the table holds: the VIPs take the room first, the rest
    /// miss (the owned map answers for them), and the table says it is not complete.
    #[test]
    fn past_half_the_slots_the_vips_come_first() {
        let half = OwnerTable::SLOTS / 2;
        let vips = (0..half as u32).map(|n| (Ipv4Addr::from_bits(0x0a00_0000 + n), Owned::Vip));
        let others = (0..10u32).map(|n| (Ipv4Addr::from_bits(0x0b00_0000 + n), Owned::Local));
        let table = OwnerTable::new(others.chain(vips));
        assert!(!table.is_complete());
        assert_eq!(table.len(), half);
        assert_eq!(table.code([10, 0, 0, 7]), Some(OWNER_VIP));
        assert_eq!(table.code([11, 0, 0, 7]), None);
    }

    proptest! {
        /// Addresses clustered in the home space (runs form, join and wrap), of every kind,
        /// up to past the table's room: the table answers as the owned map does.
        #[test]
        fn agrees_with_the_owned_map(
            entries in prop::collection::hash_map(
                (0u32..4096).prop_map(|n| {
                    // Few distinct homes: the top byte varies over 16 values, the rest small.
                    Ipv4Addr::from_bits(((n % 16) << 28) | (n / 16))
                }),
                any::<u8>().prop_map(owned_of),
                0..2200,
            ),
            extra in prop::collection::vec(any::<u32>(), 0..64),
        ) {
            agrees(&table_of(&entries), &entries, &extra)?;
        }

        /// Keys that share a home (the same product's top bits): long runs from one home.
        #[test]
        fn agrees_on_one_home(
            count in 0usize..300,
            kind in any::<u8>(),
            extra in prop::collection::vec(any::<u32>(), 0..64),
        ) {
            static SHARING: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
            let sharing = SHARING.get_or_init(|| {
                let target = home(0x0a01_0164);
                (0..=u32::MAX).filter(|&key| home(key) == target).take(300).collect()
            });
            let entries: HashMap<Ipv4Addr, Owned> = sharing[..count]
                .iter()
                .map(|&key| (Ipv4Addr::from(key.to_ne_bytes()), owned_of(kind)))
                .collect();
            agrees(&table_of(&entries), &entries, &extra)?;
        }
    }
}
