//! How each address family's flows are packed into a record's words ([`Layout`]), and how a
//! lookup compares a key with them (a family's probe).
//!
//! # IPv4: four words (the record is one cache line)
//!
//! | word | bits 63..32 | bits 31..0 |
//! | --- | --- | --- |
//! | 0 | client address | VIP |
//! | 1 | backend address | local address |
//! | 2 | client port, vport | backend port, local port |
//! | 3 | address change (63..48), service (47..32) | backend (31..16), protocol code (15..8), forwarding code (7..0) |
//!
//! # IPv6: ten words (the record is two cache lines)
//!
//! | word | holds |
//! | --- | --- |
//! | 0, 1 | VIP |
//! | 2, 3 | client address |
//! | 4, 5 | local address |
//! | 6, 7 | backend address |
//! | 8 | the ports, as IPv4's word 2 |
//! | 9 | the codes and hints, as IPv4's word 3, and the address change (63..48) |
//!
//! Invariants, for both families:
//! - An address is stored as its bytes in memory order ([`addr_word`], [`addr_words`]), so
//!   the words' little-endian bytes are [`Flow`]'s `repr(C)` layout field for field (except
//!   the two codes): unpacking copies whole words and the compiler needs no shuffling
//!   (checked at compile time in `table.rs`'s tests). Flow words live only in this process's
//!   memory, so their byte order is nobody else's business.
//! - [`Layout::unpack`] inverts [`Layout::pack`] and refuses codes `pack` never writes; the
//!   protocol code is never 0, so a zeroed record's words are no flow.
//! - IPv6 only: the address change (the top 16 bits of word 9) is derived from the flow's
//!   addresses and forwarding mode at [`Layout::pack`] ([`with_change`]): the
//!   one's-complement change NAT or FullNAT makes to a packet's addresses in the original
//!   direction, folded to 16 bits, so a settled hit patches its checksum with it instead of
//!   reading the old addresses and summing all eight words ([`Words6::address_change`]).
//!   `unpack` does not read it back (it is no field of [`Flow`]); tested against the change
//!   of the addresses a packet of either direction carries and leaves with.
//! - IPv4 likewise keeps the address change in word 3's top 16 bits ([`Words4::address_change`]),
//!   but [`Layout::pack`] leaves them 0: [`Layout::pack_translating`] adds the change, and
//!   only the insert of a flow with a reply key (NAT, FullNAT) calls it (the change's
//!   computation in `pack` made the insert of a DR flow dearer than the hit saves,
//!   `bench/results/nat-2026-12-06b.md`). Every record is written by that insert, so every
//!   NAT or FullNAT record carries its change.
//! - IPv4 only: a NAT record's local address and port are its client's, as the pipeline
//!   opens every NAT flow (`opened`, called with the client's by `schedule` and
//!   `stateless`): every record of a flow with a reply key is written by
//!   [`Layout::pack_translating`], which sets them so whatever the flow says (they are no
//!   field NAT uses). So NAT's reply key (backend to client) is FullNAT's (backend to local)
//!   read from the same words, and so is NAT's original translation (client, which is
//!   local, to backend): the probe compare and [`Words4::translated_wire`] read both modes'
//!   alike, with no test of which. (IPv6 reads NAT's own fields: made FullNAT's there, its
//!   settled hit grew, `bench/results/nat-2026-12-06c.md`, Round 2.)
//! - A probe matches the words of a flow in a direction exactly when the flow's key in that
//!   direction is the probe's key (property-tested against keys built field by field, for
//!   both families, with keys that differ from a flow's in one address's high or low half).

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Direction, Flow};
use crate::family::{V4, V6};
use crate::flow::{FlowKey, ForwardMode, Proto};
use crate::hash::FlowHash;
use crate::wire::checksum::Delta;

/// A record's flow words: `[u64; N]`, with its atomic counterpart `[AtomicU64; N]`.
pub trait WordArray: Copy + Eq + Debug + Send + Sync + 'static {
    /// The words as a record stores them.
    type Atomic: Debug + Send + Sync + 'static;

    /// Atomic words holding zeros (a free record's).
    fn zeroed() -> Self::Atomic;
    /// Every word, with Relaxed loads (the seqlock in `table.rs` orders them).
    fn load(atomic: &Self::Atomic) -> Self;
    /// Stores every word with Relaxed stores (inside the owner's write section).
    fn store(self, atomic: &Self::Atomic);
}

impl<const N: usize> WordArray for [u64; N] {
    type Atomic = [AtomicU64; N];

    fn zeroed() -> [AtomicU64; N] {
        std::array::from_fn(|_| AtomicU64::new(0))
    }

    #[inline(always)]
    fn load(atomic: &[AtomicU64; N]) -> [u64; N] {
        let mut words = [0; N];
        for (word, atomic) in words.iter_mut().zip(atomic) {
            *word = atomic.load(Ordering::Relaxed);
        }
        words
    }

    #[inline(always)]
    fn store(self, atomic: &[AtomicU64; N]) {
        for (word, value) in atomic.iter().zip(self) {
            word.store(value, Ordering::Relaxed);
        }
    }
}

/// What a connection table needs of an address family: how a [`Flow`] of the family is
/// packed into a record's words and how a key is compared with them, beside the family's
/// two hashes ([`FlowHash`]). Implemented for [`V4`] and [`V6`] only ([`crate::family::Family`]
/// is sealed); `Conntrack<F>` and its reader take any `F: Layout`.
pub trait Layout: FlowHash {
    /// The packed flow: `[u64; 4]` for IPv4, `[u64; 10]` for IPv6 (see the module docs).
    type Words: WordArray;
    /// A key laid out the way [`Layout::pack`] stores a flow's fields, so a lookup compares
    /// a record with a key in a few word comparisons.
    type Probe: Copy + Eq + Debug + Send + Sync;

    /// The flow's words.
    fn pack(flow: &Flow<Self>) -> Self::Words;
    /// [`Layout::pack`] of a NAT or FullNAT flow with its address change (see the module
    /// docs): what the insert of a flow with a reply key stores. IPv6's `pack` stores it
    /// already; IPv4's adds it here only, so a DR flow's insert does not carry the test.
    fn pack_translating(flow: &Flow<Self>) -> Self::Words;
    /// The inverse of [`Layout::pack`] (and of [`Layout::pack_translating`]); None for bit
    /// patterns `pack` never produces.
    fn unpack(words: &Self::Words) -> Option<Flow<Self>>;
    /// The probe of `key`.
    fn probe(key: &FlowKey<Self>) -> Self::Probe;
    /// True if the flow packed in `words` has `probe`'s key in `direction` (the record must
    /// also be live: the caller checks its state). Same answer as comparing with
    /// `Layout::direction_key` (a test-only reference), without building a key.
    fn matches(probe: &Self::Probe, words: &Self::Words, direction: Direction) -> bool;
    /// The flow's key in `direction`, taken from the words field by field: the reference
    /// [`Layout::matches`] is tested against. None for the reply direction of a DR flow and
    /// for words `pack` never produces.
    #[cfg(test)]
    fn direction_key(words: &Self::Words, direction: Direction) -> Option<FlowKey<Self>>;
}

/// The code [`Layout::pack`] stores for a protocol (never 0).
const fn proto_code(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => 1,
        Proto::Udp => 2,
    }
}

/// The protocol of a code [`proto_code`] gives.
const fn code_proto(code: u8) -> Option<Proto> {
    match code {
        1 => Some(Proto::Tcp),
        2 => Some(Proto::Udp),
        _ => None,
    }
}

/// The codes [`Layout::pack`] stores for forwarding modes.
const FORWARD_DR: u8 = 1;
/// See [`FORWARD_DR`].
const FORWARD_NAT: u8 = 2;
/// See [`FORWARD_DR`].
const FORWARD_FULL_NAT: u8 = 3;
/// See [`FORWARD_DR`].
const FORWARD_TUNNEL: u8 = 4;

const fn forward_code(forward: ForwardMode) -> u8 {
    match forward {
        ForwardMode::Dr => FORWARD_DR,
        ForwardMode::Nat => FORWARD_NAT,
        ForwardMode::FullNat => FORWARD_FULL_NAT,
        ForwardMode::Tunnel => FORWARD_TUNNEL,
    }
}

const fn code_forward(code: u8) -> Option<ForwardMode> {
    match code {
        FORWARD_DR => Some(ForwardMode::Dr),
        FORWARD_NAT => Some(ForwardMode::Nat),
        FORWARD_FULL_NAT => Some(ForwardMode::FullNat),
        FORWARD_TUNNEL => Some(ForwardMode::Tunnel),
        _ => None,
    }
}

/// The ports word: `client_port << 48 | vport << 32 | backend_port << 16 | local_port`
/// (IPv4's word 2, IPv6's word 8).
#[inline(always)]
fn ports_word<F: Layout>(flow: &Flow<F>) -> u64 {
    u64::from(flow.client_port) << 48
        | u64::from(flow.vport) << 32
        | u64::from(flow.backend_port) << 16
        | u64::from(flow.local_port)
}

/// The codes-and-hints word without its address change: `service << 32 | backend << 16 |
/// proto << 8 | forward` (IPv4's word 3, IPv6's word 9; [`with_change`] adds the change).
#[inline(always)]
fn meta_word<F: Layout>(flow: &Flow<F>) -> u64 {
    let proto = u64::from(proto_code(flow.proto));
    let forward = u64::from(forward_code(flow.forward));
    u64::from(flow.service) << 32 | u64::from(flow.backend) << 16 | proto << 8 | forward
}

/// Where the codes-and-hints word keeps the address change (its top 16 bits).
const CHANGE_SHIFT: u32 = 48;

/// `meta` (a [`meta_word`]) with the flow's address change in its top 16 bits: `change`'s,
/// for a NAT or FullNAT flow; 0 for DR and tunnel flows (their addresses stay). The change
/// is what NAT or FullNAT does to the addresses of a packet of the flow in the original
/// direction, as the one's-complement sum of RFC 1624's `~m + m'` over the addresses'
/// 16-bit words in memory order (as the rewrites sum them), folded to 16 bits
/// ([`Delta::folded`]): NAT's destination, VIP to backend; FullNAT's too, and its source,
/// client to local address. The reply's change is its opposite (the reply's old addresses
/// are the original's new ones, swapped, and its new ones the original's old ones):
/// `!change` ([`direction_change`]). `change` runs out of line (cold: the compiler lays the
/// insert out for DR flows, the common ones) and only for NAT and FullNAT.
#[inline(always)]
fn with_change(meta: u64, change: impl FnOnce() -> u16) -> u64 {
    // NAT's and FullNAT's codes are the two with bit 1 set: a test of the code already in
    // `meta`, not another match on the mode.
    const _: () = assert!(
        FORWARD_NAT & 2 != 0
            && FORWARD_FULL_NAT & 2 != 0
            && FORWARD_DR & 2 == 0
            && FORWARD_TUNNEL & 2 == 0
    );
    if meta & 2 != 0 { meta | u64::from(change()) << CHANGE_SHIFT } else { meta }
}

/// The change [`Layout::pack`] stored in a codes-and-hints word, for a packet of
/// `direction` (see [`with_change`]).
#[inline(always)]
fn direction_change(meta: u64, direction: Direction) -> Delta {
    let change = (meta >> CHANGE_SHIFT) as u16;
    Delta::of_folded(match direction {
        Direction::Original => change,
        Direction::Reply => !change,
    })
}

/// The address change ([`with_change`]) of an IPv6 NAT or FullNAT flow, each address's
/// change summed as IPv6's rewrite sums it (its two 64-bit words in memory order). Takes
/// the flow where it lies: the insert of a DR flow keeps its words in registers.
#[cold]
#[inline(never)]
fn address_change6(flow: &Flow<V6>) -> u16 {
    let change = |delta: Delta, old: Ipv6Addr, new: Ipv6Addr| {
        let ([old0, old1], [new0, new1]) = (addr_words(old), addr_words(new));
        delta.u64(old0, new0).u64(old1, new1)
    };
    let to_backend = change(Delta::NONE, flow.vip, flow.backend_addr);
    let change = match flow.forward {
        ForwardMode::FullNat => change(to_backend, flow.client_addr, flow.local_addr),
        _ => to_backend,
    };
    change.folded()
}

/// The address change ([`with_change`]) of an IPv4 NAT or FullNAT flow, summed as IPv4's
/// rewrite sums it (both addresses as one 64-bit word in memory order, the source's first:
/// the IPv4 header's bytes 12..20). Out of line, as [`address_change6`].
#[cold]
#[inline(never)]
fn address_change4(flow: &Flow<V4>) -> u16 {
    let wire = |src: Ipv4Addr, dst: Ipv4Addr| {
        let mut bytes = [0; 8];
        bytes[..4].copy_from_slice(&src.octets());
        bytes[4..].copy_from_slice(&dst.octets());
        u64::from_ne_bytes(bytes)
    };
    let source = match flow.forward {
        ForwardMode::FullNat => flow.local_addr,
        _ => flow.client_addr,
    };
    let old = wire(flow.client_addr, flow.vip);
    Delta::NONE.u64(old, wire(source, flow.backend_addr)).folded()
}

/// The ports a flow's packets carry in `direction`, from its ports word, as a probe holds
/// them (`src_port << 16 | dst_port`); None for the reply direction of DR or an unknown
/// forwarding code. Original: client port, vport. NAT reply: backend port, client port.
/// FullNAT reply: backend port, local port.
#[inline(always)]
fn direction_ports(ports: u64, forward: u8, direction: Direction) -> Option<u32> {
    match (direction, forward) {
        (Direction::Original, _) => Some((ports >> 32) as u32),
        (Direction::Reply, FORWARD_NAT) => {
            Some((ports as u32 & 0xffff_0000) | (ports >> 48) as u32)
        }
        (Direction::Reply, FORWARD_FULL_NAT) => Some(ports as u32),
        (Direction::Reply, _) => None,
    }
}

/// `flow` as [`Layout::pack_translating`] stores it: a NAT flow's local address and port
/// set to its client's (the invariant of the module docs; the pipeline opens every NAT
/// flow so already), any other flow as it is.
#[inline(always)]
fn local_is_client(flow: &Flow<V4>) -> Flow<V4> {
    match flow.forward {
        ForwardMode::Nat => {
            Flow { local_addr: flow.client_addr, local_port: flow.client_port, ..*flow }
        }
        ForwardMode::Dr | ForwardMode::FullNat | ForwardMode::Tunnel => *flow,
    }
}

/// The ports a NAT or FullNAT packet of `direction` leaves with, from its flow's ports word,
/// as the TCP/UDP header's first four bytes read with `u32::from_ne_bytes` (both families'
/// `translated_wire`): NAT's original (client port, backend port), FullNAT's original (local
/// port, backend port), either's reply (vport, client port); the flow's own ports for any
/// other mode.
#[inline(always)]
fn translated_ports(ports: u64, forward: u8, direction: Direction) -> u32 {
    let numbers = match (forward, direction) {
        (FORWARD_NAT, Direction::Original) => {
            ((ports >> 48) as u32) << 16 | (ports >> 16) as u32 & 0xffff
        }
        (FORWARD_FULL_NAT, Direction::Original) => (ports as u32).rotate_left(16),
        (_, Direction::Original) => (ports >> 32) as u32,
        (_, Direction::Reply) => ((ports >> 32) as u32).rotate_left(16),
    };
    numbers.to_be()
}

/// An IPv4 address as a flow word stores it: its four bytes in memory order, so packing and
/// unpacking (and a lookup's probe) move an `Ipv4Addr` without swapping its bytes.
#[inline(always)]
const fn addr_word(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The inverse of [`addr_word`].
#[inline(always)]
const fn word_addr(word: u32) -> Ipv4Addr {
    let [a, b, c, d] = word.to_ne_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// An IPv6 address as two flow words: its sixteen bytes in memory order (the first word
/// holds bytes 0..8 on a little-endian machine), as [`addr_word`] keeps IPv4's.
#[inline(always)]
const fn addr_words(addr: Ipv6Addr) -> [u64; 2] {
    let bits = u128::from_ne_bytes(addr.octets());
    [bits as u64, (bits >> 64) as u64]
}

/// The inverse of [`addr_words`].
#[inline(always)]
fn words_addr(words: [u64; 2]) -> Ipv6Addr {
    let bits = u128::from(words[1]) << 64 | u128::from(words[0]);
    Ipv6Addr::from(bits.to_ne_bytes())
}

/// IPv4's probe: the fields of a key in the layout of the flow words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe4 {
    /// `src_addr << 32 | dst_addr`: the layout of flow word 0 (client, vip) and word 1
    /// (backend, local).
    addrs: u64,
    /// `src_port << 16 | dst_port`: the layout of the high half of flow word 2 (client port,
    /// vport) and of its low half (backend port, local port).
    ports: u32,
    /// The protocol code `pack` stores in bits 8..16 of flow word 3.
    proto: u8,
}

impl Probe4 {
    /// The probe of the key a packet of IPv4 without options carries, from its bytes as they
    /// lie: `addrs` its source and destination addresses (header bytes 12..20), `ports` the
    /// first four bytes of its TCP or UDP header, `proto` its protocol. The same as
    /// [`Layout::probe`] of the key read from those bytes, without the key built first
    /// (tested).
    #[inline(always)]
    pub fn of_wire(addrs: &[u8; 8], ports: &[u8; 4], proto: Proto) -> Probe4 {
        // Both addresses in one load: in the machine's order the eight bytes are
        // `addr_word(src) << 32 | addr_word(dst)` on a big-endian machine, and that with its
        // halves swapped on a little-endian one.
        let both = u64::from_ne_bytes(*addrs);
        Probe4 {
            addrs: if cfg!(target_endian = "little") { both.rotate_left(32) } else { both },
            ports: u32::from_be_bytes(*ports),
            proto: proto_code(proto),
        }
    }
}

/// The high 32 bits of a word.
const HIGH_HALF: u64 = 0xffff_ffff_0000_0000;

impl Layout for V4 {
    type Words = [u64; 4];
    type Probe = Probe4;

    /// Four words whose little-endian bytes are [`Flow`]'s `repr(C)` layout field for field,
    /// except the two codes of word 3 (forwarding mode, protocol).
    fn pack(flow: &Flow<V4>) -> [u64; 4] {
        let addrs =
            |a: Ipv4Addr, b: Ipv4Addr| u64::from(addr_word(a)) << 32 | u64::from(addr_word(b));
        [
            addrs(flow.client_addr, flow.vip),
            addrs(flow.backend_addr, flow.local_addr),
            ports_word(flow),
            meta_word(flow),
        ]
    }

    #[inline(always)]
    fn pack_translating(flow: &Flow<V4>) -> [u64; 4] {
        let flow = &local_is_client(flow);
        let [addrs, servers, ports, meta] = V4::pack(flow);
        [addrs, servers, ports, with_change(meta, || address_change4(flow))]
    }

    fn unpack(words: &[u64; 4]) -> Option<Flow<V4>> {
        let high = |w: u64| word_addr((w >> 32) as u32);
        let low = |w: u64| word_addr(w as u32);
        let proto = match (words[3] >> 8) as u8 {
            1 => Proto::Tcp,
            2 => Proto::Udp,
            _ => return None,
        };
        let forward = match words[3] as u8 {
            FORWARD_DR => ForwardMode::Dr,
            FORWARD_NAT => ForwardMode::Nat,
            FORWARD_FULL_NAT => ForwardMode::FullNat,
            FORWARD_TUNNEL => ForwardMode::Tunnel,
            _ => return None,
        };
        Some(Flow {
            proto,
            forward,
            client_addr: high(words[0]),
            vip: low(words[0]),
            backend_addr: high(words[1]),
            local_addr: low(words[1]),
            client_port: (words[2] >> 48) as u16,
            vport: (words[2] >> 32) as u16,
            backend_port: (words[2] >> 16) as u16,
            local_port: words[2] as u16,
            service: (words[3] >> 32) as u16,
            backend: (words[3] >> 16) as u16,
        })
    }

    #[inline]
    fn probe(key: &FlowKey<V4>) -> Probe4 {
        Probe4 {
            addrs: u64::from(addr_word(key.src_addr)) << 32 | u64::from(addr_word(key.dst_addr)),
            ports: u32::from(key.src_port) << 16 | u32::from(key.dst_port),
            proto: proto_code(key.proto),
        }
    }

    #[inline]
    fn matches(probe: &Probe4, words: &[u64; 4], direction: Direction) -> bool {
        let [addrs, servers, ports, meta] = *words;
        if (meta >> 8) as u8 != probe.proto {
            return false;
        }
        let (addrs, ports) = match (direction, meta as u8) {
            // client:cport -> vip:vport
            (Direction::Original, _) => (addrs, (ports >> 32) as u32),
            // FullNAT: backend:bport -> local:lport; NAT: backend:bport -> client:cport,
            // which a NAT record's local address and port are (the module docs' invariant).
            (Direction::Reply, FORWARD_NAT | FORWARD_FULL_NAT) => (servers, ports as u32),
            (Direction::Reply, _) => return false,
        };
        addrs == probe.addrs && ports == probe.ports
    }

    #[cfg(test)]
    fn direction_key(words: &[u64; 4], direction: Direction) -> Option<FlowKey<V4>> {
        let [addrs, servers, ports, meta] = *words;
        let proto = code_proto((meta >> 8) as u8)?;
        let high = |w: u64| (w >> 32) as u32;
        let port = |shift: u32| (ports >> shift) as u16;
        let ((src_addr, src_port), (dst_addr, dst_port)) = match (direction, meta as u8) {
            // client:cport -> vip:vport
            (Direction::Original, _) => ((high(addrs), port(48)), (addrs as u32, port(32))),
            // NAT: backend:bport -> client:cport
            (Direction::Reply, 2) => ((high(servers), port(16)), (high(addrs), port(48))),
            // FullNAT: backend:bport -> local:lport
            (Direction::Reply, 3) => ((high(servers), port(16)), (servers as u32, port(0))),
            (Direction::Reply, _) => return None,
        };
        Some(FlowKey {
            src_addr: word_addr(src_addr),
            dst_addr: word_addr(dst_addr),
            src_port,
            dst_port,
            proto,
        })
    }
}

/// An IPv4 flow's packed words as the settled hit gets them ([`super::Conntrack::settled`]):
/// the few fields that hit reads, taken from the words where they lie, instead of a whole
/// [`Flow`] unpacked (and spilled) for every packet. [`Words4::flow`] unpacks when more is
/// needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words4([u64; 4]);

impl Words4 {
    /// The words of a flow (`pack`'s).
    #[inline(always)]
    pub(super) const fn new(words: [u64; 4]) -> Words4 {
        Words4(words)
    }

    /// True for a DR flow (one that only has an original direction, rewritten at L2 alone).
    #[inline(always)]
    pub fn is_dr(self) -> bool {
        self.0[3] as u8 == FORWARD_DR
    }

    /// The index of the backend the flow was scheduled to, in the snapshot of then: a hint,
    /// confirmed with [`BackendWords::names`].
    #[inline(always)]
    pub fn backend_hint(self) -> usize {
        usize::from((self.0[3] >> 16) as u16)
    }

    /// True for a tunnel-mode flow.
    #[inline(always)]
    pub fn is_tunnel(self) -> bool {
        self.0[3] as u8 == FORWARD_TUNNEL
    }

    /// The client's address.
    #[inline(always)]
    pub fn client_addr(self) -> Ipv4Addr {
        word_addr((self.0[0] >> 32) as u32)
    }

    /// The protocol (None for words `pack` never writes).
    #[inline(always)]
    pub fn proto(self) -> Option<Proto> {
        code_proto((self.0[3] >> 8) as u8)
    }

    /// The source and destination (address, port) a NAT or FullNAT packet of `direction`
    /// leaves with, read from the words: NAT's original (client, backend), FullNAT's
    /// original (local, backend), either's reply (VIP, client); the flow's own key for any
    /// other mode (DR and tunnel packets keep their addresses). The same as the pipeline's
    /// `translate` of the unpacked flow.
    #[inline(always)]
    pub fn translated(self, direction: Direction) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
        let [addrs, servers, ports, meta] = self.0;
        let high = |w: u64| word_addr((w >> 32) as u32);
        let low = |w: u64| word_addr(w as u32);
        let client = (high(addrs), (ports >> 48) as u16);
        let vip = (low(addrs), (ports >> 32) as u16);
        let backend = (high(servers), (ports >> 16) as u16);
        let local = (low(servers), ports as u16);
        match (meta as u8, direction) {
            (FORWARD_NAT, Direction::Original) => (client, backend),
            (FORWARD_FULL_NAT, Direction::Original) => (local, backend),
            (_, Direction::Original) => (client, vip),
            (_, Direction::Reply) => (vip, client),
        }
    }

    /// [`Words4::translated`] as the rewrite writes it: the eight bytes of the source and
    /// destination addresses (the IPv4 header's bytes 12..20) and the four of the source and
    /// destination ports (the TCP/UDP header's first four), each read as `from_ne_bytes`
    /// would. Taken from the words with whole-word moves (their addresses are already in
    /// memory order): no address or port is assembled byte by byte.
    #[inline(always)]
    pub fn translated_wire(self, direction: Direction) -> (u64, u32) {
        let [addrs, servers, ports, meta] = self.0;
        // Little-endian: the source's word in the low half. `addrs` is client << 32 | VIP,
        // `servers` backend << 32 | local (NAT's local is its client: the module docs'
        // invariant).
        let little = match (meta as u8, direction) {
            (FORWARD_NAT | FORWARD_FULL_NAT, Direction::Original) => servers,
            (_, Direction::Original) => addrs.rotate_left(32),
            (_, Direction::Reply) => addrs,
        };
        let addrs = if cfg!(target_endian = "big") { little.rotate_left(32) } else { little };
        // `translated_ports`, NAT's original read as FullNAT's (its local port is its
        // client's).
        let ports = match (meta as u8, direction) {
            (FORWARD_NAT | FORWARD_FULL_NAT, Direction::Original) => (ports as u32).rotate_left(16),
            (_, Direction::Original) => (ports >> 32) as u32,
            (_, Direction::Reply) => ((ports >> 32) as u32).rotate_left(16),
        };
        (addrs, ports.to_be())
    }

    /// The change of [`Words4::translated_wire`]'s addresses from those a packet of
    /// `direction` carries (the flow's key in that direction), as IPv4's rewrite sums it:
    /// stored by [`Layout::pack_translating`] (see [`with_change`]), so the hit neither
    /// reads the old addresses nor sums them. 0 for DR and tunnel flows.
    #[inline(always)]
    pub fn address_change(self, direction: Direction) -> Delta {
        direction_change(self.0[3], direction)
    }

    /// The flow ([`Layout::unpack`]).
    #[inline(always)]
    pub fn flow(self) -> Option<Flow<V4>> {
        V4::unpack(&self.0)
    }
}

/// A backend's identity (VIP, vport, protocol, address, port: `FamilyBackendId`'s fields)
/// laid out as IPv4 flow words carry it, so that whether a flow was scheduled to that
/// backend is three masked comparisons of its words ([`BackendWords::names`]), not a flow
/// unpacked and an identity built and compared field by field. [`BackendWords::NONE`]
/// names no flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendWords {
    /// `backend address << 32 | VIP` (word 1's high half, word 0's low half).
    addrs: u64,
    /// `vport << 32 | backend port << 16` (word 2 under [`BackendWords::PORTS`]).
    ports: u64,
    /// The protocol code in place (word 3 under [`BackendWords::PROTO`]).
    proto: u64,
}

impl BackendWords {
    /// The vport and backend port bits of word 2.
    const PORTS: u64 = 0x0000_ffff_ffff_0000;
    /// The protocol code's bits of word 3.
    const PROTO: u64 = 0xff00;
    /// Names no flow: no flow's words have protocol code 0.
    pub const NONE: BackendWords = BackendWords { addrs: 0, ports: 0, proto: 0 };

    /// The identity of the backend `addr:port` of service `vip:vport/proto`.
    pub fn new(vip: Ipv4Addr, vport: u16, proto: Proto, addr: Ipv4Addr, port: u16) -> Self {
        BackendWords {
            addrs: u64::from(addr_word(addr)) << 32 | u64::from(addr_word(vip)),
            ports: u64::from(vport) << 32 | u64::from(port) << 16,
            proto: u64::from(proto_code(proto)) << 8,
        }
    }

    /// True if the flow of `words` was scheduled to this backend: the same answer as
    /// comparing its `FamilyBackendId::of_flow` with this backend's.
    #[inline(always)]
    pub fn names(&self, words: Words4) -> bool {
        let [addrs, servers, ports, meta] = words.0;
        let addrs = (servers & HIGH_HALF | addrs & !HIGH_HALF) ^ self.addrs;
        let ports = (ports & Self::PORTS) ^ self.ports;
        let proto = (meta & Self::PROTO) ^ self.proto;
        addrs | ports | proto == 0
    }
}

/// IPv6's probe: the fields of a key in the layout of the flow words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe6 {
    /// The source address as [`addr_words`] stores it.
    src: [u64; 2],
    /// The destination address, likewise.
    dst: [u64; 2],
    /// `src_port << 16 | dst_port`, as [`Probe4`]'s.
    ports: u32,
    /// The protocol code `pack` stores in bits 8..16 of flow word 9.
    proto: u8,
}

impl Probe6 {
    /// The probe of the key a packet of IPv6 without extension headers carries, from its
    /// bytes as they lie: `addrs` its source and destination addresses (fixed header bytes
    /// 8..40), `ports` the first four bytes of its TCP or UDP header, `proto` its protocol.
    /// The same as [`Layout::probe`] of the key read from those bytes, without the key
    /// built first (tested), as [`Probe4::of_wire`] is IPv4's.
    #[inline(always)]
    pub fn of_wire(addrs: &[u8; 32], ports: &[u8; 4], proto: Proto) -> Probe6 {
        let (src, dst) = addrs.split_at(16);
        let words = |bytes: &[u8]| {
            let mut octets = [0; 16];
            octets.copy_from_slice(bytes);
            let bits = u128::from_ne_bytes(octets);
            [bits as u64, (bits >> 64) as u64]
        };
        Probe6 {
            src: words(src),
            dst: words(dst),
            ports: u32::from_be_bytes(*ports),
            proto: proto_code(proto),
        }
    }
}

/// The two words of address `n` (0: VIP, 1: client, 2: local, 3: backend) of IPv6 flow words.
#[inline(always)]
fn address(words: &[u64; 10], n: usize) -> [u64; 2] {
    [words[2 * n], words[2 * n + 1]]
}

/// Where IPv6 flow words keep each address (see [`address`]).
const VIP: usize = 0;
/// See [`VIP`].
const CLIENT: usize = 1;
/// See [`VIP`].
const LOCAL: usize = 2;
/// See [`VIP`].
const BACKEND: usize = 3;

/// The addresses (source, destination) a flow's packets carry in `direction`, as
/// [`direction_ports`] gives their ports: where in IPv6 flow words to find them.
#[inline(always)]
fn direction_addresses(forward: u8, direction: Direction) -> Option<(usize, usize)> {
    match (direction, forward) {
        (Direction::Original, _) => Some((CLIENT, VIP)),
        (Direction::Reply, FORWARD_NAT) => Some((BACKEND, CLIENT)),
        (Direction::Reply, FORWARD_FULL_NAT) => Some((BACKEND, LOCAL)),
        (Direction::Reply, _) => None,
    }
}

impl Layout for V6 {
    type Words = [u64; 10];
    type Probe = Probe6;

    /// Ten words: the four addresses (VIP, client, local, backend: [`Flow`]'s `repr(C)`
    /// order, bytes in memory order), then IPv4's ports word and codes-and-hints word.
    #[inline(always)]
    fn pack(flow: &Flow<V6>) -> [u64; 10] {
        let [vip0, vip1] = addr_words(flow.vip);
        let [client0, client1] = addr_words(flow.client_addr);
        let [local0, local1] = addr_words(flow.local_addr);
        let [backend0, backend1] = addr_words(flow.backend_addr);
        let meta = with_change(meta_word(flow), || address_change6(flow));
        [vip0, vip1, client0, client1, local0, local1, backend0, backend1, ports_word(flow), meta]
    }

    #[inline(always)]
    fn pack_translating(flow: &Flow<V6>) -> [u64; 10] {
        V6::pack(flow)
    }

    #[inline(always)]
    fn unpack(words: &[u64; 10]) -> Option<Flow<V6>> {
        let [.., ports, meta] = *words;
        let addr = |n| words_addr(address(words, n));
        Some(Flow {
            proto: code_proto((meta >> 8) as u8)?,
            forward: code_forward(meta as u8)?,
            vip: addr(VIP),
            client_addr: addr(CLIENT),
            local_addr: addr(LOCAL),
            backend_addr: addr(BACKEND),
            client_port: (ports >> 48) as u16,
            vport: (ports >> 32) as u16,
            backend_port: (ports >> 16) as u16,
            local_port: ports as u16,
            service: (meta >> 32) as u16,
            backend: (meta >> 16) as u16,
        })
    }

    #[inline(always)]
    fn probe(key: &FlowKey<V6>) -> Probe6 {
        Probe6 {
            src: addr_words(key.src_addr),
            dst: addr_words(key.dst_addr),
            ports: u32::from(key.src_port) << 16 | u32::from(key.dst_port),
            proto: proto_code(key.proto),
        }
    }

    #[inline(always)]
    fn matches(probe: &Probe6, words: &[u64; 10], direction: Direction) -> bool {
        let [.., ports, meta] = *words;
        if (meta >> 8) as u8 != probe.proto {
            return false;
        }
        let (Some(ports), Some((src, dst))) = (
            direction_ports(ports, meta as u8, direction),
            direction_addresses(meta as u8, direction),
        ) else {
            return false;
        };
        ports == probe.ports && address(words, src) == probe.src && address(words, dst) == probe.dst
    }

    #[cfg(test)]
    fn direction_key(words: &[u64; 10], direction: Direction) -> Option<FlowKey<V6>> {
        let [.., ports, meta] = *words;
        let proto = code_proto((meta >> 8) as u8)?;
        let port = |shift: u32| (ports >> shift) as u16;
        let ((src, src_port), (dst, dst_port)) = match (direction, meta as u8) {
            (Direction::Original, _) => ((CLIENT, port(48)), (VIP, port(32))),
            (Direction::Reply, 2) => ((BACKEND, port(16)), (CLIENT, port(48))),
            (Direction::Reply, 3) => ((BACKEND, port(16)), (LOCAL, port(0))),
            (Direction::Reply, _) => return None,
        };
        Some(FlowKey {
            src_addr: words_addr(address(words, src)),
            dst_addr: words_addr(address(words, dst)),
            src_port,
            dst_port,
            proto,
        })
    }
}

/// An IPv6 flow's packed words as the settled hit gets them (`Conntrack::<V6>::settled`):
/// [`Words4`]'s accessors on IPv6's layout, the fields read where they lie instead of a
/// whole [`Flow`] unpacked for every packet. [`Words6::flow`] unpacks when more is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words6([u64; 10]);

impl Words6 {
    /// The words of a flow (`pack`'s).
    #[inline(always)]
    pub(super) const fn new(words: [u64; 10]) -> Words6 {
        Words6(words)
    }

    /// The codes-and-hints word (IPv4's word 3).
    #[inline(always)]
    const fn meta(self) -> u64 {
        self.0[9]
    }

    /// True for a DR flow (see [`Words4::is_dr`]).
    #[inline(always)]
    pub fn is_dr(self) -> bool {
        self.meta() as u8 == FORWARD_DR
    }

    /// True for a tunnel-mode flow.
    #[inline(always)]
    pub fn is_tunnel(self) -> bool {
        self.meta() as u8 == FORWARD_TUNNEL
    }

    /// The backend index the flow was scheduled to (a hint: see [`Words4::backend_hint`]),
    /// confirmed with [`BackendWords6::names`].
    #[inline(always)]
    pub fn backend_hint(self) -> usize {
        usize::from((self.meta() >> 16) as u16)
    }

    /// The client's address.
    #[inline(always)]
    pub fn client_addr(self) -> Ipv6Addr {
        words_addr(address(&self.0, CLIENT))
    }

    /// The protocol (None for words `pack` never writes).
    #[inline(always)]
    pub fn proto(self) -> Option<Proto> {
        code_proto((self.meta() >> 8) as u8)
    }

    /// [`Words4::translated`] on IPv6's words: the same as the pipeline's `translate` of
    /// the unpacked flow.
    #[inline(always)]
    pub fn translated(self, direction: Direction) -> ((Ipv6Addr, u16), (Ipv6Addr, u16)) {
        let ports = self.0[8];
        let addr = |n| words_addr(address(&self.0, n));
        let client = (addr(CLIENT), (ports >> 48) as u16);
        let vip = (addr(VIP), (ports >> 32) as u16);
        match (self.meta() as u8, direction) {
            (FORWARD_NAT, Direction::Original) => (client, (addr(BACKEND), (ports >> 16) as u16)),
            (FORWARD_FULL_NAT, Direction::Original) => {
                ((addr(LOCAL), ports as u16), (addr(BACKEND), (ports >> 16) as u16))
            }
            (_, Direction::Original) => (client, vip),
            (_, Direction::Reply) => (vip, client),
        }
    }

    /// [`Words6::translated`] as the rewrite writes it, as [`Words4::translated_wire`] is
    /// IPv4's: the source and destination addresses as four 8-byte chunks in the order they
    /// lie in the header (bytes 8..40), each read as `u64::from_ne_bytes` would, and the
    /// ports as the TCP/UDP header's first four bytes read as `u32::from_ne_bytes`. The
    /// addresses are the words as they are (already in memory order).
    #[inline(always)]
    pub fn translated_wire(self, direction: Direction) -> ([u64; 4], u32) {
        let (ports, forward) = (self.0[8], self.meta() as u8);
        let (src, dst) = match (forward, direction) {
            (FORWARD_NAT, Direction::Original) => (CLIENT, BACKEND),
            (FORWARD_FULL_NAT, Direction::Original) => (LOCAL, BACKEND),
            (_, Direction::Original) => (CLIENT, VIP),
            (_, Direction::Reply) => (VIP, CLIENT),
        };
        // `addr_words` keeps bytes 0..8 in the first word on a little-endian machine, in
        // the second on a big-endian one.
        let chunks = |n: usize| match address(&self.0, n) {
            [first, second] if cfg!(target_endian = "big") => [second, first],
            words => words,
        };
        let ([s0, s1], [d0, d1]) = (chunks(src), chunks(dst));
        ([s0, s1, d0, d1], translated_ports(ports, forward, direction))
    }

    /// The change of [`Words6::translated_wire`]'s addresses from those a packet of
    /// `direction` carries (the flow's key in that direction), as IPv6's rewrite sums it:
    /// stored at [`Layout::pack`] (see [`with_change`]), so the hit neither reads the old
    /// addresses nor sums them.
    #[inline(always)]
    pub fn address_change(self, direction: Direction) -> Delta {
        direction_change(self.meta(), direction)
    }

    /// The flow ([`Layout::unpack`]).
    #[inline(always)]
    pub fn flow(self) -> Option<Flow<V6>> {
        V6::unpack(&self.0)
    }
}

/// [`BackendWords`] for IPv6: a backend's identity (VIP, vport, protocol, address, port)
/// laid out as IPv6 flow words carry it, so that whether a flow was scheduled to that
/// backend is a few word comparisons ([`BackendWords6::names`]). 48 bytes: with a cached
/// hop, one cache line per backend. [`BackendWords6::NONE`] names no flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendWords6 {
    /// The VIP's words (flow words 0 and 1).
    vip: [u64; 2],
    /// The backend address's words (flow words 6 and 7).
    addr: [u64; 2],
    /// `vport << 32 | backend port << 16` (word 8 under [`BackendWords::PORTS`]).
    ports: u64,
    /// The protocol code in place (word 9 under [`BackendWords::PROTO`]).
    proto: u64,
}

impl BackendWords6 {
    /// Names no flow: no flow's words have protocol code 0.
    pub const NONE: BackendWords6 = BackendWords6 { vip: [0; 2], addr: [0; 2], ports: 0, proto: 0 };

    /// The identity of the backend `addr:port` of service `vip:vport/proto`.
    pub fn new(vip: Ipv6Addr, vport: u16, proto: Proto, addr: Ipv6Addr, port: u16) -> Self {
        BackendWords6 {
            vip: addr_words(vip),
            addr: addr_words(addr),
            ports: u64::from(vport) << 32 | u64::from(port) << 16,
            proto: u64::from(proto_code(proto)) << 8,
        }
    }

    /// True if the flow of `words` was scheduled to this backend: the same answer as
    /// comparing its `FamilyBackendId::of_flow` with this backend's.
    #[inline(always)]
    pub fn names(&self, words: Words6) -> bool {
        let w = words.0;
        let vip = (w[VIP * 2] ^ self.vip[0]) | (w[VIP * 2 + 1] ^ self.vip[1]);
        let addr = (w[BACKEND * 2] ^ self.addr[0]) | (w[BACKEND * 2 + 1] ^ self.addr[1]);
        let ports = (w[8] & BackendWords::PORTS) ^ self.ports;
        let proto = (w[9] & BackendWords::PROTO) ^ self.proto;
        vip | addr | ports | proto == 0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::table::tests::arb_flow;
    use super::*;

    proptest! {
        /// What a settled hit reads from the words is what the unpacked flow says: its mode,
        /// backend hint, client, protocol, and the addresses and ports a packet of either
        /// direction leaves with (the pipeline's `translate`, spelt out field by field).
        #[test]
        fn words4_read_what_the_flow_says(flow in arb_flow::<V4>(), reply in any::<bool>()) {
            let words = Words4::new(V4::pack(&flow));
            prop_assert_eq!(words.flow(), Some(flow));
            prop_assert_eq!(words.is_dr(), flow.forward == ForwardMode::Dr);
            prop_assert_eq!(words.is_tunnel(), flow.forward == ForwardMode::Tunnel);
            prop_assert_eq!(words.backend_hint(), usize::from(flow.backend));
            prop_assert_eq!(words.client_addr(), flow.client_addr);
            prop_assert_eq!(words.proto(), Some(flow.proto));
            let client = (flow.client_addr, flow.client_port);
            let vip = (flow.vip, flow.vport);
            let backend = (flow.backend_addr, flow.backend_port);
            let local = (flow.local_addr, flow.local_port);
            let (direction, expected) = match (reply, flow.forward) {
                (true, _) => (Direction::Reply, (vip, client)),
                (false, ForwardMode::Nat) => (Direction::Original, (client, backend)),
                (false, ForwardMode::FullNat) => (Direction::Original, (local, backend)),
                (false, ForwardMode::Dr | ForwardMode::Tunnel) => (Direction::Original, (client, vip)),
            };
            prop_assert_eq!(words.translated(direction), expected);
            let ((src, src_port), (dst, dst_port)) = expected;
            let mut addrs = [0; 8];
            addrs[..4].copy_from_slice(&src.octets());
            addrs[4..].copy_from_slice(&dst.octets());
            let mut ports = [0; 4];
            ports[..2].copy_from_slice(&src_port.to_be_bytes());
            ports[2..].copy_from_slice(&dst_port.to_be_bytes());
            prop_assert_eq!(
                words.translated_wire(direction),
                (u64::from_ne_bytes(addrs), u32::from_ne_bytes(ports))
            );
        }

        /// A backend's words name exactly the flows whose VIP, vport, protocol, backend
        /// address and backend port are its own: the flow's own backend, and that backend
        /// with one of those fields changed (an address in one bit at either end) or with
        /// every other field of the flow changed; `NONE` names none.
        #[test]
        fn backend_words_name_exactly_the_flows_backend(
            flow in arb_flow::<V4>(),
            other in arb_flow::<V4>(),
            change in 0..8usize,
        ) {
            let words = Words4::new(V4::pack(&flow));
            let flip = |addr: Ipv4Addr, bit: u32| Ipv4Addr::from_bits(addr.to_bits() ^ 1 << bit);
            let (mut vip, mut vport, mut proto, mut addr, mut port) =
                (flow.vip, flow.vport, flow.proto, flow.backend_addr, flow.backend_port);
            match change {
                0 => vip = flip(vip, 0),
                1 => vip = flip(vip, 31),
                2 => addr = flip(addr, 0),
                3 => addr = flip(addr, 31),
                4 => vport ^= 0x8000,
                5 => port ^= 1,
                6 => proto = if proto == Proto::Tcp { Proto::Udp } else { Proto::Tcp },
                _ => {}
            }
            let own = change == 7;
            prop_assert_eq!(BackendWords::new(vip, vport, proto, addr, port).names(words), own);
            // Everything but the backend's identity differs: still its backend.
            let unrelated = Flow {
                vip: flow.vip,
                vport: flow.vport,
                proto: flow.proto,
                backend_addr: flow.backend_addr,
                backend_port: flow.backend_port,
                ..other
            };
            let identity = BackendWords::new(flow.vip, flow.vport, flow.proto, flow.backend_addr, flow.backend_port);
            prop_assert!(identity.names(Words4::new(V4::pack(&unrelated))));
            prop_assert!(!BackendWords::NONE.names(words));
        }

        /// The address change a settled IPv6 hit adds ([`Words6::address_change`]) has the
        /// value of the change from the addresses a packet of the direction carries (the
        /// flow's key's) to those it leaves with ([`Words6::translated_wire`]'s), summed as
        /// the rewrite would sum them: the same value in one's complement, so the same
        /// update. Zero for DR and tunnel flows (their packets keep their addresses).
        #[test]
        fn words6_address_change_is_the_packets(flow in arb_flow::<V6>(), reply in any::<bool>()) {
            let direction = if reply { Direction::Reply } else { Direction::Original };
            let words = V6::pack(&flow);
            if let Some(key) = V6::direction_key(&words, direction) {
                let mut octets = [0; 32];
                octets[..16].copy_from_slice(&key.src_addr.octets());
                octets[16..].copy_from_slice(&key.dst_addr.octets());
                let (new, _) = Words6::new(words).translated_wire(direction);
                let mut whole = Delta::NONE;
                for (chunk, new) in octets.chunks_exact(8).zip(new) {
                    let mut old = [0; 8];
                    old.copy_from_slice(chunk);
                    whole = whole.u64(u64::from_ne_bytes(old), new);
                }
                let stored = Words6::new(words).address_change(direction);
                prop_assert_eq!(stored.folded() % 0xffff, whole.folded() % 0xffff);
                if matches!(flow.forward, ForwardMode::Dr | ForwardMode::Tunnel) {
                    prop_assert_eq!(stored, Delta::NONE);
                }
            }
        }

        /// A NAT flow's local address and port, whatever they are, are stored as its
        /// client's ([`Layout::pack_translating`]: the invariant its reply compare and
        /// translation read); any other flow is stored as it is.
        #[test]
        fn words4_nat_local_is_the_client(
            flow in arb_flow::<V4>(),
            local in any::<(u32, u16)>(),
        ) {
            let flow = Flow { local_addr: Ipv4Addr::from_bits(local.0), local_port: local.1, ..flow };
            let expected = match flow.forward {
                ForwardMode::Nat => {
                    Flow { local_addr: flow.client_addr, local_port: flow.client_port, ..flow }
                }
                _ => flow,
            };
            prop_assert_eq!(V4::unpack(&V4::pack_translating(&flow)), Some(expected));
        }

        /// The address change a settled IPv4 hit adds ([`Words4::address_change`], stored by
        /// [`Layout::pack_translating`]) has the value of the change from the addresses a
        /// packet of the direction carries (the flow's key's) to those it leaves with
        /// ([`Words4::translated_wire`]'s), summed as the rewrite sums them (one 64-bit
        /// word in memory order); 0 for DR and tunnel flows, and `pack` (a DR flow's
        /// insert) stores none; the words read back as the flow all the same.
        #[test]
        fn words4_address_change_is_the_packets(flow in arb_flow::<V4>(), reply in any::<bool>()) {
            let direction = if reply { Direction::Reply } else { Direction::Original };
            let words = V4::pack_translating(&flow);
            prop_assert_eq!(V4::unpack(&words), Some(flow));
            prop_assert_eq!(V4::pack(&flow)[3] >> CHANGE_SHIFT, 0);
            if let Some(key) = V4::direction_key(&words, direction) {
                let mut old = [0; 8];
                old[..4].copy_from_slice(&key.src_addr.octets());
                old[4..].copy_from_slice(&key.dst_addr.octets());
                let (new, _) = Words4::new(words).translated_wire(direction);
                let whole = Delta::NONE.u64(u64::from_ne_bytes(old), new);
                let stored = Words4::new(words).address_change(direction);
                prop_assert_eq!(stored.folded() % 0xffff, whole.folded() % 0xffff);
                if matches!(flow.forward, ForwardMode::Dr | ForwardMode::Tunnel) {
                    prop_assert_eq!(stored, Delta::NONE);
                }
            }
        }

        /// [`Words6`] reads what the unpacked IPv6 flow says, as [`Words4`] does IPv4's.
        #[test]
        fn words6_read_what_the_flow_says(flow in arb_flow::<V6>(), reply in any::<bool>()) {
            let words = Words6::new(V6::pack(&flow));
            prop_assert_eq!(words.flow(), Some(flow));
            prop_assert_eq!(words.is_dr(), flow.forward == ForwardMode::Dr);
            prop_assert_eq!(words.is_tunnel(), flow.forward == ForwardMode::Tunnel);
            prop_assert_eq!(words.backend_hint(), usize::from(flow.backend));
            prop_assert_eq!(words.client_addr(), flow.client_addr);
            prop_assert_eq!(words.proto(), Some(flow.proto));
            let client = (flow.client_addr, flow.client_port);
            let vip = (flow.vip, flow.vport);
            let backend = (flow.backend_addr, flow.backend_port);
            let local = (flow.local_addr, flow.local_port);
            let (direction, expected) = match (reply, flow.forward) {
                (true, _) => (Direction::Reply, (vip, client)),
                (false, ForwardMode::Nat) => (Direction::Original, (client, backend)),
                (false, ForwardMode::FullNat) => (Direction::Original, (local, backend)),
                (false, ForwardMode::Dr | ForwardMode::Tunnel) => (Direction::Original, (client, vip)),
            };
            prop_assert_eq!(words.translated(direction), expected);
            let ((src, src_port), (dst, dst_port)) = expected;
            let octets = [src.octets(), dst.octets()].concat();
            let chunk = |i: usize| {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&octets[8 * i..8 * i + 8]);
                u64::from_ne_bytes(bytes)
            };
            let mut ports = [0; 4];
            ports[..2].copy_from_slice(&src_port.to_be_bytes());
            ports[2..].copy_from_slice(&dst_port.to_be_bytes());
            prop_assert_eq!(
                words.translated_wire(direction),
                ([chunk(0), chunk(1), chunk(2), chunk(3)], u32::from_ne_bytes(ports))
            );
        }

        /// [`BackendWords6`] names exactly the IPv6 flows of its backend's identity: one bit
        /// changed at either end of either half of an address, a port or the protocol, and
        /// it does not; every other field of the flow changed, and it still does.
        #[test]
        fn backend_words6_name_exactly_the_flows_backend(
            flow in arb_flow::<V6>(),
            other in arb_flow::<V6>(),
            change in 0..12usize,
        ) {
            let words = Words6::new(V6::pack(&flow));
            let flip = |addr: Ipv6Addr, bit: u32| Ipv6Addr::from_bits(addr.to_bits() ^ 1 << bit);
            let (mut vip, mut vport, mut proto, mut addr, mut port) =
                (flow.vip, flow.vport, flow.proto, flow.backend_addr, flow.backend_port);
            match change {
                0 => vip = flip(vip, 0),
                1 => vip = flip(vip, 63),
                2 => vip = flip(vip, 64),
                3 => vip = flip(vip, 127),
                4 => addr = flip(addr, 0),
                5 => addr = flip(addr, 63),
                6 => addr = flip(addr, 64),
                7 => addr = flip(addr, 127),
                8 => vport ^= 0x8000,
                9 => port ^= 1,
                10 => proto = if proto == Proto::Tcp { Proto::Udp } else { Proto::Tcp },
                _ => {}
            }
            let own = change == 11;
            prop_assert_eq!(BackendWords6::new(vip, vport, proto, addr, port).names(words), own);
            let unrelated = Flow {
                vip: flow.vip,
                vport: flow.vport,
                proto: flow.proto,
                backend_addr: flow.backend_addr,
                backend_port: flow.backend_port,
                ..other
            };
            let identity = BackendWords6::new(flow.vip, flow.vport, flow.proto, flow.backend_addr, flow.backend_port);
            prop_assert!(identity.names(Words6::new(V6::pack(&unrelated))));
            prop_assert!(!BackendWords6::NONE.names(words));
        }

        /// [`Probe6::of_wire`] of a packet's bytes is the probe of the key read from them.
        #[test]
        fn probe6_of_wire_is_the_probe_of_the_key(
            src in any::<u128>(),
            dst in any::<u128>(),
            ports in any::<[u8; 4]>(),
            udp in any::<bool>(),
        ) {
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let mut addrs = [0; 32];
            addrs[..16].copy_from_slice(&src.to_be_bytes());
            addrs[16..].copy_from_slice(&dst.to_be_bytes());
            let key = FlowKey {
                src_addr: Ipv6Addr::from_bits(src),
                dst_addr: Ipv6Addr::from_bits(dst),
                src_port: u16::from_be_bytes([ports[0], ports[1]]),
                dst_port: u16::from_be_bytes([ports[2], ports[3]]),
                proto,
            };
            prop_assert_eq!(Probe6::of_wire(&addrs, &ports, proto), V6::probe(&key));
        }
    }
}
