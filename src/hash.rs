//! Deterministic hashing shared by the schedulers and the connection tables.
//!
//! Every function here is a pure function of its input with fixed constants: no per-process
//! random seed. That is a requirement, not an accident: two xlb boxes behind ECMP, or one box
//! before and after a restart, must map the same flow to the same Maglev slot (Maglev,
//! NSDI'16 §3.4; Katran relies on the same property).
//!
//! The mixer is the 64-bit finaliser of MurmurHash3 / SplitMix64 applied over 64-bit words,
//! which passes avalanche tests and costs a few multiplications per word.
//!
//! Two hashes of a 5-tuple, for two jobs: [`flow_hash`] picks a flow's backend (Maglev,
//! stateless DR) and is pinned across builds; [`table_hash`] places a flow in the connection
//! tables, which every packet looks up, so it is cheaper and is not pinned (no table outlives
//! its process). A new flow computes both; a packet of a tracked flow only the second.
//!
//! Both work on either family's key ([`FlowHash`], implemented for [`V4`] and [`V6`]). IPv4's
//! values are what they were before IPv6 existed; IPv6's `flow_hash` is pinned by a test of
//! its own from its first version. The two families never share a table or a Maglev
//! lookup, so their hashes need not agree on anything.

use std::net::Ipv6Addr;

use crate::family::{Family, V4, V6};
use crate::flow::FlowKey;

const K1: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finaliser: a bijective, well-avalanching mix of one word.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes two words with a seed.
#[inline]
pub const fn hash2(seed: u64, a: u64, b: u64) -> u64 {
    mix64(mix64(seed ^ a.wrapping_mul(K1)) ^ b)
}

/// Hashes a byte string with a seed (used off the hot path: backend identities for Maglev).
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix64(seed ^ (bytes.len() as u64).wrapping_mul(K1));
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word)).wrapping_add(K1);
    }
    mix64(h)
}

/// The two hashes of a 5-tuple, per address family (see [`flow_hash`] and [`table_hash`],
/// which call them). Implemented for [`V4`] and [`V6`] only: [`Family`] is sealed.
pub trait FlowHash: Family {
    /// See [`flow_hash`].
    fn flow_hash(key: &FlowKey<Self>) -> u64;
    /// See [`table_hash`].
    fn table_hash(key: &FlowKey<Self>) -> u64;
}

/// The hash of a flow's 5-tuple: the input to Maglev, to stateless DR forwarding and to the
/// choice of a FullNAT local port. Pinned across builds, for each family (see the module
/// docs).
#[inline]
pub fn flow_hash<F: FlowHash>(key: &FlowKey<F>) -> u64 {
    F::flow_hash(key)
}

/// The connection tables' hash of a 5-tuple, for the lookup every packet makes: for IPv4,
/// one 64×64→128-bit multiply folded to 64 bits, then one multiply to spread its halves
/// into each other (about a third of [`flow_hash`]'s instructions); for IPv6 one more
/// folded multiply, which first brings the two 128-bit addresses down to one word.
///
/// Unlike [`flow_hash`] it is not pinned across builds: a table never outlives its process,
/// and every core of one process (whose tables look up each other's flows) runs the same
/// code. The fields that vary between the flows of one service (client address and port)
/// sit in the low bits of both factors, and the final multiply carries every bit of the
/// folded product into the fingerprint bits (32 and up), the bucket bits (the lowest) from
/// both halves: a test holds the spread of both to that of random keys, for both families.
/// The constants are odd and have their top bits set, so no 5-tuple zeroes a factor's high
/// half. Like [`flow_hash`] it is unkeyed: someone who reads this code can aim many keys at
/// one bucket, which the table's bounded buckets and eviction policy are built to survive.
#[inline]
pub fn table_hash<F: FlowHash>(key: &FlowKey<F>) -> u64 {
    F::table_hash(key)
}

/// The factors of [`table_hash`]'s multiplies.
const TABLE_A: u64 = 0xa076_1d64_78bd_642f;
/// See [`TABLE_A`].
const TABLE_B: u64 = 0xe703_7ed1_a0b4_28db;

/// The ports and protocol as one word, the layout both families' [`table_hash`] multiply.
#[inline(always)]
fn table_ports<F: Family>(key: &FlowKey<F>) -> u64 {
    (u64::from(key.dst_port) << 24)
        | (u64::from(key.proto.number()) << 16)
        | u64::from(key.src_port)
}

/// `a × b` as a 128-bit product, its halves folded together.
#[inline(always)]
fn folded_product(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl FlowHash for V4 {
    #[inline]
    fn flow_hash(key: &FlowKey<V4>) -> u64 {
        let addrs = (u64::from(key.src_addr.to_bits()) << 32) | u64::from(key.dst_addr.to_bits());
        let ports = (u64::from(key.src_port) << 24)
            | (u64::from(key.dst_port) << 8)
            | u64::from(key.proto.number());
        hash2(0x786c_625f_666c_6f77, addrs, ports)
    }

    #[inline]
    fn table_hash(key: &FlowKey<V4>) -> u64 {
        let addrs = (u64::from(key.dst_addr.to_bits()) << 32) | u64::from(key.src_addr.to_bits());
        let folded = folded_product(addrs ^ TABLE_A, table_ports(key) ^ TABLE_B);
        (folded ^ (folded >> 32)).wrapping_mul(K1)
    }
}

/// An IPv6 address as two words: (network prefix, interface identifier).
#[inline(always)]
const fn halves(addr: Ipv6Addr) -> (u64, u64) {
    let bits = addr.to_bits();
    ((bits >> 64) as u64, bits as u64)
}

impl FlowHash for V6 {
    /// Every word of the 5-tuple through [`hash2`] in turn (source, destination, then the
    /// ports and protocol laid out as IPv4's), from a seed of its own.
    #[inline]
    fn flow_hash(key: &FlowKey<V6>) -> u64 {
        let (src_high, src_low) = halves(key.src_addr);
        let (dst_high, dst_low) = halves(key.dst_addr);
        let ports = (u64::from(key.src_port) << 24)
            | (u64::from(key.dst_port) << 8)
            | u64::from(key.proto.number());
        let h = hash2(0x786c_625f_666c_6636, src_high, src_low);
        let h = hash2(h, dst_high, dst_low);
        mix64(h ^ ports)
    }

    /// Each address folded to a word (its prefix turned by half a word first, so a
    /// subnet number and an interface identifier that differ in the same low bits do not
    /// cancel), the two words multiplied together, the folded product multiplied with the
    /// ports as IPv4's are, then IPv4's final spread.
    #[inline]
    fn table_hash(key: &FlowKey<V6>) -> u64 {
        let fold = |addr: Ipv6Addr| {
            let (high, low) = halves(addr);
            low ^ high.rotate_left(32)
        };
        let addrs = folded_product(fold(key.src_addr) ^ TABLE_A, fold(key.dst_addr) ^ TABLE_B);
        let folded = folded_product(addrs ^ TABLE_A, table_ports(key) ^ TABLE_B);
        (folded ^ (folded >> 32)).wrapping_mul(K1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Proto;
    use std::net::Ipv4Addr;

    #[test]
    fn flow_hash_is_stable_across_builds() {
        // Fixed values: if one changes, every deployed Maglev mapping changes with it (and two
        // boxes or two builds behind ECMP would disagree), so they are pinned as literals.
        let key = FlowKey::<V4> {
            src_addr: Ipv4Addr::new(10, 1, 1, 20),
            dst_addr: Ipv4Addr::new(10, 1, 1, 10),
            src_port: 40000,
            dst_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(flow_hash(&key), 0x88ec_6941_4a44_4837);
        assert_ne!(flow_hash(&key), flow_hash(&key.reversed()));
        assert_eq!(hash_bytes(1, b"abc"), 0x3115_577f_dbe5_7b8d);
        assert_ne!(hash_bytes(1, b"abc"), hash_bytes(2, b"abc"));
        assert_ne!(hash_bytes(1, b"abc"), hash_bytes(1, b"abd"));
    }

    /// IPv6's flow hash is pinned from its first version, as IPv4's is.
    #[test]
    fn ipv6_flow_hash_is_stable_across_builds() {
        let key = FlowKey::<V6> {
            src_addr: "2001:db8::20".parse().unwrap(),
            dst_addr: "2001:db8::10".parse().unwrap(),
            src_port: 40000,
            dst_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(flow_hash(&key), 0x65b8_adfb_4971_fd15);
        assert_ne!(flow_hash(&key), flow_hash(&key.reversed()));
        assert_ne!(flow_hash(&key), flow_hash(&FlowKey { proto: Proto::Udp, ..key }));
        // Every half of both addresses counts.
        for bit in [0, 63, 64, 127] {
            let flip = |addr: Ipv6Addr| Ipv6Addr::from_bits(addr.to_bits() ^ 1 << bit);
            assert_ne!(
                flow_hash(&key),
                flow_hash(&FlowKey { src_addr: flip(key.src_addr), ..key })
            );
            assert_ne!(
                flow_hash(&key),
                flow_hash(&FlowKey { dst_addr: flip(key.dst_addr), ..key })
            );
        }
    }

    /// How `table_hash` spreads `keys` over 2^14 buckets by its low bits (the bucket) and by
    /// bits 32.. (the fingerprint): (most keys in one bucket, empty buckets), each way.
    fn spread<F: FlowHash>(keys: &[FlowKey<F>]) -> [(usize, usize); 2] {
        const BITS: u32 = 14;
        let mask = (1u64 << BITS) - 1;
        [0, 32].map(|shift| {
            let mut loads = vec![0usize; 1 << BITS];
            for key in keys {
                loads[((table_hash(key) >> shift) & mask) as usize] += 1;
            }
            (*loads.iter().max().unwrap(), loads.iter().filter(|&&load| load == 0).count())
        })
    }

    /// 65,536 keys in each pattern: 4 per bucket on average. Random keys leave about e^-4 =
    /// 1.8% of the buckets empty (300 ± 17) and put at most about 14 in one.
    fn assert_spread_like_random<F: FlowHash>(patterns: &[(&str, Vec<FlowKey<F>>)]) {
        for (name, keys) in patterns {
            assert_eq!(keys.len(), 65536, "{name}");
            for (bits, (most, empty)) in ["bucket", "fingerprint"].iter().zip(spread(keys)) {
                assert!(
                    most <= 20 && empty <= 400,
                    "{name}, {bits}: {most} in one bucket, {empty} empty"
                );
            }
        }
    }

    /// A TCP key.
    fn key<F: Family>(
        src_addr: F::Addr,
        src_port: u16,
        dst_addr: F::Addr,
        dst_port: u16,
    ) -> FlowKey<F> {
        FlowKey { src_addr, dst_addr, src_port, dst_port, proto: Proto::Tcp }
    }

    #[test]
    fn table_hash_spreads_the_flows_of_one_service_like_random() {
        let vip = Ipv4Addr::new(10, 1, 1, 100);
        let backend = Ipv4Addr::new(10, 1, 1, 11);
        let key = key::<V4>;
        let client = |i: u32| Ipv4Addr::from(0x0a10_0000 + i);
        // (A single folded multiply, without the final mix, left 452 empty for the first
        // pattern's buckets and 597 for the NAT replies' fingerprints.)
        assert_spread_like_random(&[
            (
                "clients in one /16, one port",
                (0..65536).map(|i| key(client(i), 40000, vip, 80)).collect(),
            ),
            (
                "one client, every port",
                (0..65536).map(|p| key(client(1), p as u16, vip, 80)).collect(),
            ),
            (
                "256 clients × 256 ports",
                (0..65536)
                    .map(|i| key(client(i >> 8), 40000 + (i & 255) as u16, vip, 80))
                    .collect(),
            ),
            (
                "NAT replies to those clients",
                (0..65536)
                    .map(|i| key(backend, 8080, client(i >> 8), 40000 + (i & 255) as u16))
                    .collect(),
            ),
            (
                "FullNAT replies to local ports",
                (0..65536)
                    .map(|i| {
                        key(
                            backend,
                            8080,
                            Ipv4Addr::new(10, 1, 1, 200 + (i >> 14) as u8),
                            1024 + (i & 16383) as u16,
                        )
                    })
                    .collect(),
            ),
        ]);
        let one = key(client(1), 40000, vip, 80);
        assert_ne!(table_hash(&one), table_hash(&one.reversed()));
    }

    /// The same for IPv6, with clients of one /64 (differing in the interface identifier's
    /// low bits), clients of many /64s (the same interface identifier, differing in the
    /// subnet number), and random-looking (privacy) interface identifiers.
    #[test]
    fn table_hash_spreads_the_ipv6_flows_of_one_service_like_random() {
        let net = |subnet: u32| 0x2001_0db8_0000_0000_u128 << 64 | u128::from(subnet) << 64;
        let vip = Ipv6Addr::from_bits(net(0) | 0x100);
        let backend = Ipv6Addr::from_bits(net(1) | 0x11);
        let key = key::<V6>;
        let one_64 = |i: u32| Ipv6Addr::from_bits(net(0x10) | u128::from(i));
        let many_64 = |i: u32| Ipv6Addr::from_bits(net(0x1_0000 + i) | 1);
        let private = |i: u32| Ipv6Addr::from_bits(net(0x10) | u128::from(mix64(u64::from(i))));
        let local = |i: u32| Ipv6Addr::from_bits(net(2) | u128::from(i));
        assert_spread_like_random(&[
            (
                "clients of one /64, one port",
                (0..65536).map(|i| key(one_64(i), 40000, vip, 80)).collect(),
            ),
            (
                "clients of many /64s, one port",
                (0..65536).map(|i| key(many_64(i), 40000, vip, 80)).collect(),
            ),
            (
                "privacy addresses, one port",
                (0..65536).map(|i| key(private(i), 40000, vip, 80)).collect(),
            ),
            (
                "one client, every port",
                (0..65536).map(|p| key(one_64(1), p as u16, vip, 80)).collect(),
            ),
            (
                "256 clients of one /64 × 256 ports",
                (0..65536)
                    .map(|i| key(one_64(i >> 8), 40000 + (i & 255) as u16, vip, 80))
                    .collect(),
            ),
            (
                "256 /64s × 256 ports",
                (0..65536)
                    .map(|i| key(many_64(i >> 8), 40000 + (i & 255) as u16, vip, 80))
                    .collect(),
            ),
            (
                "NAT replies to clients of one /64",
                (0..65536)
                    .map(|i| key(backend, 8080, one_64(i >> 8), 40000 + (i & 255) as u16))
                    .collect(),
            ),
            (
                "NAT replies to clients of many /64s",
                (0..65536)
                    .map(|i| key(backend, 8080, many_64(i >> 8), 40000 + (i & 255) as u16))
                    .collect(),
            ),
            (
                "FullNAT replies to local ports",
                (0..65536)
                    .map(|i| key(backend, 8080, local(200 + (i >> 14)), 1024 + (i & 16383) as u16))
                    .collect(),
            ),
        ]);
        let one = key(one_64(1), 40000, vip, 80);
        assert_ne!(table_hash(&one), table_hash(&one.reversed()));
    }
}
