//! Hashing shared by the schedulers and the connection tables.
//!
//! Two hashes of a 5-tuple, for two jobs, and only one of them keyed:
//!
//! - [`flow_hash`] picks a flow's backend (Maglev, stateless DR, a FullNAT local port). It
//!   is a pure function of the 5-tuple with fixed constants, pinned across builds, with no
//!   per-process seed. That is a requirement, not an accident: two xlb boxes behind ECMP, or
//!   one box before and after a restart, must map the same flow to the same Maglev slot
//!   (Maglev, NSDI'16 §3.4; Katran relies on the same property).
//! - [`table_hash`] places a flow in the connection tables, which every packet looks up, so
//!   it is cheaper, and it is keyed by a [`TableSecret`]: 128 secret bits drawn from the OS
//!   once per process ([`TableSecret::process`]). No table outlives its process, so nothing
//!   needs its values to be stable; what they must not be is predictable. With a public
//!   hash, a client who reads this code chooses source ports (and addresses, if it has
//!   several) whose flows share one 16-slot bucket: 16 completed TCP connections, which the
//!   flood policy never evicts, then fill that bucket, and every NAT flow of anyone else
//!   whose key lands there is refused (`refused_full`); keys sharing a fingerprint also
//!   lengthen lookups. Under a secret the attacker does not know which keys collide. Every
//!   core of one process uses the same secret (cores look flows up in each other's tables
//!   with the hash they computed themselves); each table holds it, given at construction
//!   (`crate::conntrack::ConntrackConfig::secret`), so the hot path reads it from the
//!   table's owner, never from a global. Benchmarks and tests that need the same placement
//!   on every run use [`TableSecret::fixed`].
//!
//! [`flow_hash`]'s mixer is the 64-bit finaliser of MurmurHash3 / SplitMix64 applied over
//! 64-bit words, which passes avalanche tests and costs a few multiplications per word. A
//! new flow computes both hashes; a packet of a tracked flow only [`table_hash`].
//!
//! Both work on either family's key ([`FlowHash`], implemented for [`V4`] and [`V6`]). IPv4's
//! `flow_hash` values are what they were before IPv6 existed; IPv6's `flow_hash` is pinned by
//! a test of its own from its first version. The two families never share a table or a
//! Maglev lookup, so their hashes need not agree on anything.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::net::Ipv6Addr;
use std::sync::OnceLock;

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
    fn table_hash(secret: &TableSecret, key: &FlowKey<Self>) -> u64;
}

/// The hash of a flow's 5-tuple: the input to Maglev, to stateless DR forwarding and to the
/// choice of a FullNAT local port. Pinned across builds, for each family (see the module
/// docs).
#[inline]
pub fn flow_hash<F: FlowHash>(key: &FlowKey<F>) -> u64 {
    F::flow_hash(key)
}

/// The connection tables' hash of a 5-tuple under `secret` (the table's: every table of
/// one process has the same, see the module docs), for the lookup every packet makes: for
/// IPv4, one 64×64→128-bit multiply folded to 64 bits, then one multiply and two
/// shift-XORs to spread its halves into each other (about a third of [`flow_hash`]'s instructions); for IPv6 one more
/// folded multiply, which first brings the two 128-bit addresses down to one word.
///
/// The multiply's two factors are the key's words XORed with the secret's two factors
/// (a wyhash-style `mum`): which keys share a bucket or a fingerprint depends on the
/// secret, so someone who knows only the code cannot aim keys at one bucket. Unlike
/// [`flow_hash`] it is not pinned across builds or processes. IPv4's words are the key's
/// bytes loaded as a packet carries them ([`table_hash_wire`]), so the fields that vary
/// between the flows of one service (client address and port) sit in the low half of
/// either factor, their low-order bytes highest in it (an address's last byte at bits
/// 24..32 or 56..64, a port's at 8..16); the folded product mixes both halves, and the final multiply carries every bit of the folded product into the high half (the
/// fingerprint bits, 32 and up), which is then XORed into the low half (the bucket bits).
/// That last shift and XOR is what keying needed: without it the bucket is the low bits of
/// a product, which only the low bits of the folded product reach, and the old fixed
/// factors had been picked to pass; random secrets left up to 460 of 16,384 buckets empty
/// (random keys: 300 ± 17). A test holds the spread of both to that of random keys, for
/// both families and several secrets (fixed and drawn per run). Every secret's
/// factors are odd and have their top bit set ([`TableSecret`] forces both), so no 5-tuple
/// zeroes the ports factor's high half (the ports fill only its low 40 bits), and no client
/// can zero the address factor's without knowing the secret.
#[inline]
pub fn table_hash<F: FlowHash>(secret: &TableSecret, key: &FlowKey<F>) -> u64 {
    F::table_hash(secret, key)
}

/// The secret that keys [`table_hash`]: the factors of its multiplies, odd and with their
/// top bit set whatever they were derived from. One per process
/// ([`TableSecret::process`]); [`TableSecret::fixed`] for runs that must place flows the
/// same way every time. `Debug` shows no bits of it (snapshots, which carry it, are logged).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TableSecret {
    /// The factor XORed into the addresses' word.
    a: u64,
    /// The factor XORed into the ports' word.
    b: u64,
}

impl fmt::Debug for TableSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TableSecret(..)")
    }
}

impl TableSecret {
    /// Bits every factor has: the lowest (odd) and the highest.
    const FORCED: u64 = 1 << 63 | 1;

    /// The secret whose factors are `words` with bits 0 and 63 set (the other 124 bits are
    /// the words' own). For secrets chosen elsewhere: the OS's bits, or a benchmark's
    /// constants.
    pub const fn from_words(words: [u64; 2]) -> TableSecret {
        TableSecret { a: words[0] | Self::FORCED, b: words[1] | Self::FORCED }
    }

    /// A secret fixed by `seed` (each factor mixed from it), the same in every process: for
    /// benchmarks (instruction counts that do not change between runs) and tests (failures
    /// that replay). Never for a box that serves clients.
    pub const fn fixed(seed: u64) -> TableSecret {
        Self::from_words([mix64(seed), mix64(seed ^ K1)])
    }

    /// A fresh secret of 128 bits from the OS (`/dev/urandom`: the kernel's CSPRNG, the
    /// source `getrandom(2)` reads).
    pub fn from_os() -> io::Result<TableSecret> {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let (a, b) = bytes.split_at(8);
        let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or_default());
        Ok(Self::from_words([word(a), word(b)]))
    }

    /// This process's secret: drawn from the OS ([`TableSecret::from_os`]) the first time
    /// it is asked for, then the same for every caller. Read when tables are built (control
    /// puts it in every snapshot's connection-table config), never on the packet path. If
    /// `/dev/urandom` cannot be read (a chroot without it), std's `RandomState`, which std
    /// keys from the OS's random source itself, supplies the bits instead.
    pub fn process() -> TableSecret {
        static SECRET: OnceLock<TableSecret> = OnceLock::new();
        *SECRET.get_or_init(|| {
            Self::from_os().unwrap_or_else(|_| {
                let state = std::collections::hash_map::RandomState::new();
                let word = |n: u64| {
                    let mut hasher = state.build_hasher();
                    hasher.write_u64(n);
                    hasher.finish()
                };
                Self::from_words([word(0), word(1)])
            })
        })
    }
}

/// The ports and protocol as one word, the layout IPv6's [`table_hash`] multiplies (IPv4's
/// takes the ports as the packet carries them: [`table_hash_wire`]).
#[inline(always)]
fn table_ports(key: &FlowKey<V6>) -> u64 {
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

    /// [`table_hash_wire`] of the key's bytes as a packet carries them.
    #[inline]
    fn table_hash(secret: &TableSecret, key: &FlowKey<V4>) -> u64 {
        let (src, dst) = (key.src_addr.octets(), key.dst_addr.octets());
        let addrs = [src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3]];
        let (src_port, dst_port) = (key.src_port.to_be_bytes(), key.dst_port.to_be_bytes());
        let ports = [src_port[0], src_port[1], dst_port[0], dst_port[1]];
        table_hash_wire(secret, &addrs, &ports, key.proto.number())
    }
}

/// IPv4's [`table_hash`] of a 5-tuple as an IPv4 packet carries it: `addrs` the source and
/// destination addresses (the header's bytes 12..20), `ports` the source and destination
/// ports (the TCP/UDP header's first 4 bytes), `proto` the protocol number. The words are
/// those bytes loaded as they lie (little-endian: no byte swap on the hot path, which hashes
/// the frame's bytes directly), the ports' word with the protocol above them (bits 32..40).
#[inline(always)]
pub fn table_hash_wire(secret: &TableSecret, addrs: &[u8; 8], ports: &[u8; 4], proto: u8) -> u64 {
    let addrs = u64::from_le_bytes(*addrs);
    let ports = u64::from(u32::from_le_bytes(*ports)) | u64::from(proto) << 32;
    let folded = folded_product(addrs ^ secret.a, ports ^ secret.b);
    let mixed = (folded ^ (folded >> 32)).wrapping_mul(K1);
    mixed ^ (mixed >> 32)
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
    fn table_hash(secret: &TableSecret, key: &FlowKey<V6>) -> u64 {
        let fold = |addr: Ipv6Addr| {
            let (high, low) = halves(addr);
            low ^ high.rotate_left(32)
        };
        let addrs = folded_product(fold(key.src_addr) ^ secret.a, fold(key.dst_addr) ^ secret.b);
        let folded = folded_product(addrs ^ secret.a, table_ports(key) ^ secret.b);
        let mixed = (folded ^ (folded >> 32)).wrapping_mul(K1);
        mixed ^ (mixed >> 32)
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

    /// How `table_hash` under `secret` spreads `keys` over 2^`bits` buckets by its low bits
    /// (the bucket) and by bits 32.. (the fingerprint): (most keys in one bucket, empty
    /// buckets), each way.
    fn spread<F: FlowHash>(
        secret: &TableSecret,
        keys: &[FlowKey<F>],
        bits: u32,
    ) -> [(usize, usize); 2] {
        let mask = (1u64 << bits) - 1;
        [0, 32].map(|shift| {
            let mut loads = vec![0usize; 1 << bits];
            for key in keys {
                loads[((table_hash(secret, key) >> shift) & mask) as usize] += 1;
            }
            (*loads.iter().max().unwrap(), loads.iter().filter(|&&load| load == 0).count())
        })
    }

    /// The secrets the spread tests try: two fixed ones, this process's, and a fresh one
    /// from the OS (the last two differ from run to run: a failure prints its factors).
    fn secrets() -> [TableSecret; 4] {
        [
            TableSecret::fixed(1),
            TableSecret::fixed(2),
            TableSecret::process(),
            TableSecret::from_os().expect("/dev/urandom"),
        ]
    }

    /// 65,536 keys in each pattern over 2^14 buckets: 4 per bucket on average. Random keys
    /// leave about e^-4 = 1.8% of the buckets empty (300 ± 17) and put at most about 14 in
    /// one. Under every secret of [`secrets`].
    fn assert_spread_like_random<F: FlowHash>(patterns: &[(&str, Vec<FlowKey<F>>)]) {
        for secret in secrets() {
            for (name, keys) in patterns {
                assert_eq!(keys.len(), 65536, "{name}");
                for (bits, (most, empty)) in
                    ["bucket", "fingerprint"].iter().zip(spread(&secret, keys, 14))
                {
                    assert!(
                        most <= 20 && empty <= 400,
                        "{name}, {bits}: {most} in one bucket, {empty} empty (secret {:#x}, {:#x})",
                        secret.a,
                        secret.b
                    );
                }
            }
        }
    }

    /// Every secret's factors keep the constants' properties: odd, top bit set.
    #[test]
    fn every_secret_has_odd_factors_with_the_top_bit_set() {
        let words = [[0, 0], [u64::MAX, u64::MAX], [2, 1 << 62]];
        let made = words.map(TableSecret::from_words);
        for secret in made.iter().chain(&secrets()) {
            for factor in [secret.a, secret.b] {
                assert_eq!(factor & TableSecret::FORCED, TableSecret::FORCED, "{factor:#x}");
            }
        }
        // The other bits are the words' own; fixed secrets differ by seed; Debug hides them.
        assert_eq!(made[2], TableSecret { a: 1 << 63 | 3, b: 1 << 63 | 1 << 62 | 1 });
        assert_ne!(TableSecret::fixed(1), TableSecret::fixed(2));
        assert_eq!(TableSecret::process(), TableSecret::process());
        assert_eq!(format!("{:?}", TableSecret::fixed(1)), "TableSecret(..)");
    }

    /// The attack keying stops: knowing the hash, a client picks 64 of its own keys (8
    /// addresses, any source port) that share one bucket of a 4096-bucket table (capacity
    /// 16,384 flows) under secret A; under another secret (another process's) they spread
    /// like any keys: no bucket gets more than a few, none the 16 that would fill it. An
    /// unkeyed hash would put all 64 in one bucket again. For both families.
    #[test]
    fn keys_aimed_at_one_bucket_under_one_secret_spread_under_another() {
        fn aim<F: FlowHash>(
            client: impl Fn(u32) -> F::Addr,
            vip: F::Addr,
            a: &TableSecret,
        ) -> Vec<FlowKey<F>> {
            let attack: Vec<FlowKey<F>> = (0..8u32)
                .flat_map(|host| (0..=u16::MAX).map(move |port| (host, port)))
                .map(|(host, port)| key(client(host), port, vip, 80))
                .filter(|key| table_hash(a, key) & 4095 == 0)
                .take(64)
                .collect();
            assert_eq!(attack.len(), 64);
            attack
        }
        fn assert_spread<F: FlowHash>(attack: &[FlowKey<F>], a: &TableSecret, b: &TableSecret) {
            assert_eq!(spread(a, attack, 12)[0].0, 64, "aimed at one bucket under A");
            let [(most, _), (most_tags, _)] = spread(b, attack, 12);
            assert!(most <= 4, "{most} of the 64 in one bucket under B");
            assert!(most_tags <= 4, "{most_tags} of the 64 share a fingerprint under B");
        }
        for (a, b) in [
            (TableSecret::fixed(1), TableSecret::fixed(2)),
            (TableSecret::fixed(3), TableSecret::process()),
        ] {
            let attack =
                aim::<V4>(|i| Ipv4Addr::from(0xc633_6400 + i), Ipv4Addr::new(10, 1, 1, 100), &a);
            assert_spread(&attack, &a, &b);
            let net = 0x2001_0db8_u128 << 96;
            let attack = aim::<V6>(
                |i| Ipv6Addr::from_bits(net | 0x10 << 64 | u128::from(i)),
                Ipv6Addr::from_bits(net | 0x100),
                &a,
            );
            assert_spread(&attack, &a, &b);
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
        let secret = TableSecret::fixed(1);
        assert_ne!(table_hash(&secret, &one), table_hash(&secret, &one.reversed()));
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
        let secret = TableSecret::fixed(1);
        assert_ne!(table_hash(&secret, &one), table_hash(&secret, &one.reversed()));
    }
}
