//! Address families: the per-family facts the tables need, chosen at compile time.
//!
//! xlb keeps separate tables per address family (as Katran keeps separate maps) and writes
//! the code that walks them once: [`crate::addr_map::AddrMap`], [`crate::arp::NeighborTable`]
//! and [`crate::arp::HoldQueue`] take a [`Family`] type parameter, [`V4`] or [`V6`], and are
//! monomorphised for each, so nothing on the packet path branches on the family of a field.
//!
//! Invariants:
//! - The trait is sealed: [`V4`] and [`V6`] are its only implementations, so code generic over
//!   a family knows every case.
//! - IPv4 is the default family of every generic table, and its facts are exactly what the
//!   tables used before they were generic (the key is the address as a `u32`, hashed by one
//!   multiplication), so IPv4's generated code is unchanged.
//! - A key is the address's bits, one to one ([`Family::key`] and [`Family::addr`] are
//!   inverses), so comparing keys is comparing addresses.

use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::EtherType;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::V4 {}
    impl Sealed for super::V6 {}
}

/// The multiplier of Fibonacci hashing: 2^64 / φ, rounded to odd.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

/// An address family: IPv4 ([`V4`]) or IPv6 ([`V6`]). Sealed.
pub trait Family: sealed::Sealed + Copy + Eq + Debug + Send + Sync + 'static {
    /// The address type.
    type Addr: Copy + Eq + Ord + Hash + Debug + Display + Send + Sync + 'static;
    /// The address as an integer, as the tables store and compare it.
    /// Widened to `u128` (`into`), it is the address as persistence templates key it.
    type Key: Copy + Eq + Debug + Send + Sync + Into<u128> + 'static;

    /// The family's name, for messages.
    const NAME: &'static str;
    /// The EtherType of the family's packets.
    const ETHERTYPE: u16;
    /// The unspecified address (`0.0.0.0`, `::`): a sender that has no address yet.
    const UNSPECIFIED: Self::Addr;

    /// `addr`'s key.
    fn key(addr: Self::Addr) -> Self::Key;
    /// The address whose key is `key`.
    fn addr(key: Self::Key) -> Self::Addr;
    /// A 64-bit hash of `key` whose *top* bits are well mixed (take them with a shift).
    fn hash(key: Self::Key) -> u64;
    /// `addr` as a `std` address of either family (for the edges: logs, reports).
    fn ip(addr: Self::Addr) -> IpAddr;
}

/// IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V4 {}

/// IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V6 {}

impl Family for V4 {
    type Addr = Ipv4Addr;
    type Key = u32;

    const NAME: &'static str = "IPv4";
    const ETHERTYPE: u16 = EtherType::IPV4;
    const UNSPECIFIED: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    #[inline]
    fn key(addr: Ipv4Addr) -> u32 {
        addr.to_bits()
    }

    #[inline]
    fn addr(key: u32) -> Ipv4Addr {
        Ipv4Addr::from_bits(key)
    }

    /// Fibonacci hashing: the top bits of a multiplication by 2^64/φ.
    #[inline]
    fn hash(key: u32) -> u64 {
        u64::from(key).wrapping_mul(FIBONACCI)
    }

    #[inline]
    fn ip(addr: Ipv4Addr) -> IpAddr {
        IpAddr::V4(addr)
    }
}

impl Family for V6 {
    type Addr = Ipv6Addr;
    type Key = u128;

    const NAME: &'static str = "IPv6";
    const ETHERTYPE: u16 = EtherType::IPV6;
    const UNSPECIFIED: Ipv6Addr = Ipv6Addr::UNSPECIFIED;

    #[inline]
    fn key(addr: Ipv6Addr) -> u128 {
        addr.to_bits()
    }

    #[inline]
    fn addr(key: u128) -> Ipv6Addr {
        Ipv6Addr::from_bits(key)
    }

    /// The two halves folded together (the interface identifier mixed with the prefix), then
    /// IPv4's Fibonacci hashing of the 64-bit fold. Addresses of one /64 differ only in the
    /// low half, which the fold keeps whole.
    #[inline]
    fn hash(key: u128) -> u64 {
        ((key >> 64) as u64 ^ key as u64).wrapping_mul(FIBONACCI)
    }

    #[inline]
    fn ip(addr: Ipv6Addr) -> IpAddr {
        IpAddr::V6(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipv4_keeps_the_hash_the_tables_always_used() {
        let addr = Ipv4Addr::new(10, 1, 1, 11);
        assert_eq!(V4::hash(V4::key(addr)), u64::from(addr.to_bits()).wrapping_mul(FIBONACCI));
        assert_eq!(V4::ip(V4::UNSPECIFIED), IpAddr::from([0, 0, 0, 0]));
        assert_eq!(V6::ip(V6::UNSPECIFIED), "::".parse::<IpAddr>().unwrap());
    }

    /// Hosts of one /64 (the usual IPv6 neighbours, differing only in their low bits)
    /// spread over a small table's slots.
    #[test]
    fn ipv6_neighbours_of_one_prefix_spread() {
        let shift = 64 - 6; // a 64-slot table
        let slots = |hashes: &mut dyn Iterator<Item = u64>| {
            let mut used = [false; 64];
            hashes.for_each(|h| used[(h >> shift) as usize] = true);
            used.iter().filter(|u| **u).count()
        };
        let prefix = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0).to_bits();
        let v6 = slots(&mut (1..=32u128).map(|host| V6::hash(prefix | host)));
        assert!(v6 >= 24, "32 hosts share only {v6} of 64 slots");
    }

    proptest! {
        #[test]
        fn keys_and_addresses_are_one_to_one(v4 in any::<u32>(), v6 in any::<u128>()) {
            prop_assert_eq!(V4::key(V4::addr(v4)), v4);
            prop_assert_eq!(V6::key(V6::addr(v6)), v6);
            prop_assert_eq!(V4::ip(V4::addr(v4)), IpAddr::V4(Ipv4Addr::from_bits(v4)));
            prop_assert_eq!(V6::ip(V6::addr(v6)), IpAddr::V6(Ipv6Addr::from_bits(v6)));
        }
    }
}
