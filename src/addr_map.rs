//! `AddrMap`: address → small value, for lookups on every packet, one map per family.
//!
//! The pipeline asks "what does xlb own at this destination?" and "what is this next hop's
//! MAC?" for every frame. A general-purpose hash map spends more on hashing and probing
//! metadata than those questions are worth, so this is a fixed-capacity open-addressing
//! table with linear probing and a multiplicative hash of the key (the address's bits; see
//! [`Family::hash`]). The family is a type parameter, IPv4 by default: each family gets its
//! own monomorphised code, and IPv4's is what it was before the map was generic.
//!
//! Invariants:
//! - The capacity is fixed at construction (a power of two, at least twice the number of
//!   entries it may hold), so probes are short, always end at an empty slot, and nothing
//!   allocates afterwards.
//! - Removal shifts the entries that follow back into the hole (backward-shift deletion,
//!   as for any linear-probing table), so no tombstone ever lengthens a probe. The owned
//!   addresses of a snapshot are never removed (a new snapshot builds a new map); the
//!   neighbour table removes stale and evicted neighbours.

use crate::family::{Family, V4};

/// One slot: empty, or an address's key and its value.
type Slot<V, F> = Option<(<F as Family>::Key, V)>;

/// A fixed-capacity map from an address of family `F` (IPv4 unless named) to `V`.
#[derive(Debug, Clone)]
pub struct AddrMap<V, F: Family = V4> {
    slots: Box<[Slot<V, F>]>,
    shift: u32,
    len: usize,
    limit: usize,
}

impl<V: Copy> AddrMap<V> {
    /// An IPv4 map that holds up to `entries` addresses ([`AddrMap::new`] for any family;
    /// this one needs no annotation where nothing else names the family).
    pub fn with_capacity(entries: usize) -> Self {
        Self::new(entries)
    }
}

impl<V: Copy, F: Family> AddrMap<V, F> {
    /// A map that holds up to `entries` addresses.
    pub fn new(entries: usize) -> Self {
        let size = (entries.max(4) * 2).next_power_of_two();
        AddrMap {
            slots: vec![None; size].into_boxed_slice(),
            shift: 64 - size.trailing_zeros(),
            len: 0,
            limit: entries,
        }
    }

    #[inline]
    fn home(&self, key: F::Key) -> usize {
        (F::hash(key) >> self.shift) as usize
    }

    /// The value at `ip`.
    #[inline]
    pub fn get(&self, ip: F::Addr) -> Option<V> {
        let key = F::key(ip);
        let mask = self.slots.len() - 1;
        let mut index = self.home(key);
        loop {
            match self.slots[index] {
                Some((k, value)) if k == key => return Some(value),
                Some(_) => index = (index + 1) & mask,
                None => return None,
            }
        }
    }

    /// A mutable reference to the value at `ip`.
    pub fn get_mut(&mut self, ip: F::Addr) -> Option<&mut V> {
        let key = F::key(ip);
        let mask = self.slots.len() - 1;
        let mut index = self.home(key);
        loop {
            match self.slots[index] {
                Some((k, _)) if k == key => return self.slots[index].as_mut().map(|(_, v)| v),
                Some(_) => index = (index + 1) & mask,
                None => return None,
            }
        }
    }

    /// Inserts or replaces. Returns false (and changes nothing) when the map is full.
    pub fn insert(&mut self, ip: F::Addr, value: V) -> bool {
        let key = F::key(ip);
        let mask = self.slots.len() - 1;
        let mut index = self.home(key);
        loop {
            match &mut self.slots[index] {
                Some((k, v)) if *k == key => {
                    *v = value;
                    return true;
                }
                Some(_) => index = (index + 1) & mask,
                empty @ None => {
                    if self.len >= self.limit {
                        return false;
                    }
                    *empty = Some((key, value));
                    self.len += 1;
                    return true;
                }
            }
        }
    }

    /// Removes the entry at `ip`, if any, and returns its value.
    pub fn remove(&mut self, ip: F::Addr) -> Option<V> {
        let key = F::key(ip);
        let mask = self.slots.len() - 1;
        let mut hole = self.home(key);
        let removed = loop {
            match self.slots[hole] {
                Some((k, value)) if k == key => break value,
                Some(_) => hole = (hole + 1) & mask,
                None => return None,
            }
        };
        self.slots[hole] = None;
        self.len -= 1;
        // Move back every entry of the run after the hole whose home is not between the
        // hole and its slot (cyclically): its probe would otherwise stop at the hole.
        let mut index = (hole + 1) & mask;
        while let Some((k, _)) = self.slots[index] {
            let home = self.home(k);
            let distance_to_hole = hole.wrapping_sub(home) & mask;
            let distance_to_slot = index.wrapping_sub(home) & mask;
            if distance_to_hole < distance_to_slot {
                self.slots[hole] = self.slots[index].take();
                hole = index;
            }
            index = (index + 1) & mask;
        }
        Some(removed)
    }

    /// Slots in the table (entries sit anywhere in `0..slot_count()`), for scans that
    /// visit a few slots at a time.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The entry in slot `index`, if any (None past the end too).
    pub fn slot(&self, index: usize) -> Option<(F::Addr, V)> {
        self.slots.get(index).copied().flatten().map(|(k, v)| (F::addr(k), v))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (F::Addr, V)> + '_ {
        self.slots.iter().flatten().map(|(k, v)| (F::addr(*k), *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::V6;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn full_map_refuses_and_keeps_what_it_has() {
        let mut map = AddrMap::with_capacity(4);
        for i in 0..4u32 {
            assert!(map.insert(Ipv4Addr::from_bits(i), i));
        }
        assert!(!map.insert(Ipv4Addr::from_bits(99), 99));
        assert!(map.insert(Ipv4Addr::from_bits(2), 20), "replacing needs no room");
        assert_eq!(map.get(Ipv4Addr::from_bits(2)), Some(20));
        assert_eq!(map.get(Ipv4Addr::from_bits(99)), None);
        assert_eq!(map.len(), 4);
        *map.get_mut(Ipv4Addr::from_bits(3)).unwrap() = 30;
        assert_eq!(map.get(Ipv4Addr::from_bits(3)), Some(30));
    }

    /// Runs `ops` (remove or insert `key`'s address) on a map and a `HashMap`, which must agree.
    fn inserts_and_removes_agree<F: Family>(
        ops: Vec<(bool, u16, u8)>,
        addr: impl Fn(u16) -> F::Addr,
    ) -> Result<(), TestCaseError> {
        let mut map = AddrMap::<u8, F>::new(400);
        let mut model = HashMap::new();
        for (remove, key, value) in ops {
            let ip = addr(key);
            if remove {
                prop_assert_eq!(map.remove(ip), model.remove(&ip));
            } else {
                prop_assert!(map.insert(ip, value));
                model.insert(ip, value);
            }
            prop_assert_eq!(map.len(), model.len());
        }
        for (ip, value) in &model {
            prop_assert_eq!(map.get(*ip), Some(*value));
        }
        let in_slots = (0..map.slot_count()).filter_map(|i| map.slot(i)).count();
        prop_assert_eq!(in_slots, model.len());
        Ok(())
    }

    proptest! {
        #[test]
        fn agrees_with_a_hash_map_under_inserts_and_removes(
            ops in prop::collection::vec((any::<bool>(), any::<u16>(), any::<u8>()), 0..400)
        ) {
            // Few keys, clustered in the hash space, so that runs form and wrap.
            inserts_and_removes_agree::<V4>(ops, |key| {
                Ipv4Addr::from_bits(u32::from(key % 64) << 26 | u32::from(key % 7))
            })?;
        }

        #[test]
        fn ipv6_agrees_with_a_hash_map_under_inserts_and_removes(
            ops in prop::collection::vec((any::<bool>(), any::<u16>(), any::<u8>()), 0..400)
        ) {
            // Both halves clustered so that they fold to seven hashes: long colliding runs.
            inserts_and_removes_agree::<V6>(ops, |key| {
                let half = u64::from(key % 64) << 58;
                Ipv6Addr::from_bits(u128::from(half) << 64 | u128::from(half ^ u64::from(key % 7)))
            })?;
        }

        #[test]
        fn agrees_with_a_hash_map(ops in prop::collection::vec((any::<u16>(), any::<u8>()), 0..300)) {
            // Keys from a small space so that they collide and repeat.
            let mut map = AddrMap::with_capacity(400);
            let mut model = HashMap::new();
            for (key, value) in ops {
                let ip = Ipv4Addr::from_bits(u32::from(key % 512) << 20);
                prop_assert!(map.insert(ip, value));
                model.insert(ip, value);
            }
            prop_assert_eq!(map.len(), model.len());
            for (ip, value) in &model {
                prop_assert_eq!(map.get(*ip), Some(*value));
            }
            prop_assert_eq!(map.iter().count(), model.len());
            prop_assert_eq!(map.get(Ipv4Addr::new(1, 2, 3, 4)), None);
        }
    }
}
