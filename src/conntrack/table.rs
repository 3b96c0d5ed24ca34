//! The table's storage: a slab of flow records, each one cache line of `AtomicU64` words for
//! IPv4 and two for IPv6, guarded by a seqlock, and a set-associative index of buckets whose
//! slots point at records. Everything here is generic over the family's [`Layout`] (the flow
//! words and how a key is compared with them, `layout.rs`); nothing else differs.
//!
//! # Who writes what
//!
//! The [`Table`] is shared (`Arc`) between its owner [`Conntrack`](super::Conntrack) and any
//! number of [`ConntrackReader`](super::ConntrackReader)s. Only the owner calls the writer
//! methods ([`Table::write_record`], [`Table::clear_record`], [`Table::publish`],
//! [`Table::unpublish`]); `Conntrack` is not `Clone` and calls them from `&mut self` methods
//! only, so each of the words they store has exactly one writer. Readers only ever do atomic
//! read-modify-writes on two words of a record: `state` (a compare-and-swap inside one
//! generation) and `last_seen` (`fetch_max`).
//!
//! # The seqlock
//!
//! Write (owner): `version` odd (Relaxed) → `fence(Release)` → field stores (Relaxed) →
//! `version` even (Release). Read ([`Record::snapshot`]): `version` (Acquire) → skip if odd →
//! field loads (Relaxed) → `fence(Acquire)` → `version` again (Relaxed) → accept only if
//! unchanged. If a field load saw a store made after the odd version, the writer's Release
//! fence synchronises with the reader's Acquire fence, so the second version load sees the odd
//! value (or a later one) and the copy is thrown away (H.-J. Boehm, "Can seqlocks get along
//! with programming language memory models?", MSPC 2012, figure 6).
//!
//! # Generations
//!
//! The even version a record has while it holds one flow is that flow's *generation*. The
//! `state` word carries it (`generation << 8 | state code`), so a reader's compare-and-swap
//! computed from a snapshot fails if the owner has since removed the flow or put another one
//! in the record: a reader can never move a stranger's TCP state.
//!
//! # Index slots
//!
//! A slot is one `AtomicU32`: `fingerprint << (r + 1) | direction << r | record index`, where
//! `r` is the number of bits the table's record indices need (17 for 100 000 records, at most
//! 28), and the fingerprint takes the remaining `31 - r` bits (at least 3) of the key's hash;
//! 0 means free (fingerprints are never 0). Sixteen slots fill one cache line, so a lookup
//! reads one line of the index and then only the records whose fingerprint matches — the
//! layout of DPDK `rte_hash` (signatures and key indices in the bucket, keys in a separate
//! store). A slot is only a hint: the reader always checks the key derived from the record's
//! flow, so a slot that still points at a record the owner has just reused yields a miss,
//! never a wrong hit.
//!
//! Beside the buckets, the owner keeps each bucket's *occupancy* (one `u16`, bit `i` set iff
//! slot `i` is not 0), exact because [`Table::publish`] and [`Table::unpublish`], the only
//! stores of slots, keep it so. Only the owner reads it: its record pass tests a bucket's
//! first four slots directly and then only the used ones among the rest, so a key with no
//! slot (a new flow) is not compared with every free slot; its insert and sweep find free
//! and used slots from it. Readers scan the slots as before.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use crossbeam::utils::CachePadded;

use super::layout::{Layout, WordArray};
use super::queues::Class;
use super::tcp::{FIN, RST, SYN};
use super::{Direction, Flow, FlowState, Hit};
use crate::flow::FlowKey;

/// Slots per bucket: the set associativity. Sixteen 4-byte slots are one cache line.
pub(super) const BUCKET_SLOTS: usize = 16;

/// The slots at the front of a bucket the record pass ([`RecordPass::prefetch_record`])
/// tests one by one before it turns to the bucket's occupancy for the rest: a key that has
/// a slot is nearly always in one of these (slots fill from the front, and a table holds
/// a few flows a bucket), and testing them directly costs a hit no more than before the
/// occupancy existed; a key with no slot (a new flow) then tests only the rest's used
/// slots, usually none, instead of every one of them.
const LEADING_SLOTS: usize = 4;

/// How often a reader retries a record it found mid-write before calling it a miss. The
/// owner's write section is a dozen stores, so a couple of retries always suffice unless the
/// owner was descheduled inside it.
const READ_RETRIES: usize = 16;

/// How often a transition retries after losing a compare-and-swap to another core's.
const CAS_ATTEMPTS: usize = 8;

/// The generation bits a `state` word keeps (56: a record would need 2^55 reuses to wrap).
const GENERATION_MASK: u64 = u64::MAX >> 8;

/// The most record index bits an index slot gives up (leaving at least 3 fingerprint bits).
const MAX_RECORD_BITS: u32 = 28;

/// `positions` value of a flow without a reply slot (DR).
const NO_POSITION: u64 = u32::MAX as u64;

/// One flow: exactly one cache line for IPv4 (four flow words), so a hit reads one line of
/// records, and two for IPv6 (ten flow words: four 16-byte addresses do not fit in one line
/// beside the version, state, last-seen and positions); either way the owner's writes never
/// share a line with another flow.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Record<F: Layout> {
    /// Seqlock version; its even values are generations. Written only by the owner (odd in
    /// `begin_write`, even in `end_write` with Release); the even store pairs with the Acquire
    /// load in `snapshot`.
    version: AtomicU64,
    /// The flow, packed by [`Layout::pack`]. Written only by the owner inside a write section.
    words: <F::Words as WordArray>::Atomic,
    /// `generation << 8 | state code`, code 0 meaning "free record" (and code 6 a UDP flow
    /// whose backend has answered, see `UDP_REPLIED_CODE`). Stored by the owner
    /// inside a write section; compare-and-swapped by any core's `track` within the
    /// generation it read.
    state: AtomicU64,
    /// When the flow last had a packet, in nanoseconds. Stored by the owner (in a write
    /// section, or on its own hits); raised with `fetch_max` by readers.
    last_seen: AtomicU64,
    /// The index positions (bucket * BUCKET_SLOTS + slot) of the flow's original and reply
    /// slots: `original << 32 | reply` (`NO_POSITION` for none). Written only by the owner
    /// inside a write section; only the owner reads it.
    positions: AtomicU64,
}

impl<F: Layout> Default for Record<F> {
    /// A free record (state code 0).
    fn default() -> Self {
        Record {
            version: AtomicU64::new(0),
            words: F::Words::zeroed(),
            state: AtomicU64::new(0),
            last_seen: AtomicU64::new(0),
            positions: AtomicU64::new(0),
        }
    }
}

/// A consistent copy of a record, taken under the seqlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordView<F: Layout> {
    /// The (even) version the copy was taken at: the flow's generation.
    pub generation: u64,
    words: F::Words,
    /// The raw state word (`generation << 8 | code`), the expected value for a CAS.
    pub state_word: u64,
    pub last_seen: u64,
}

impl<F: Layout> RecordView<F> {
    /// The flow's state; None for a free record.
    pub fn state(&self) -> Option<FlowState> {
        state_from_code(self.state_word)
    }

    /// The eviction class of the flow (None for a free record and for TCP flows past the
    /// handshake).
    pub fn class(&self) -> Option<Class> {
        match self.state_word as u8 {
            UDP_REPLIED_CODE => Some(Class::Replied),
            code if code == state_code(FlowState::Udp) => Some(Class::Unreplied),
            code if code == state_code(FlowState::SynSeen) => Some(Class::Embryonic),
            _ => None,
        }
    }

    /// True for a UDP flow whose backend has not answered yet.
    #[inline]
    pub fn is_unreplied(&self) -> bool {
        self.state_word as u8 == state_code(FlowState::Udp)
    }

    /// True unless the record is free.
    #[inline]
    pub fn is_live(&self) -> bool {
        // The codes `state_from_code` decodes.
        matches!(self.state_word as u8, 1..=UDP_REPLIED_CODE)
    }

    /// The flow; None for a free record.
    pub fn flow(&self) -> Option<Flow<F>> {
        self.state()?;
        F::unpack(&self.words)
    }

    /// The flow's key in `direction`, computed from the packed words. None for a free
    /// record, and for the reply direction of a DR flow. The reference [`Layout::matches`]
    /// is tested against.
    #[cfg(test)]
    pub fn key(&self, direction: Direction) -> Option<FlowKey<F>> {
        self.state()?;
        F::direction_key(&self.words, direction)
    }
}

/// How a lookup may read records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// The table's owner, outside its write sections: plain loads, no seqlock.
    Owner,
    /// Any other core: copies under the seqlock ([`Record::snapshot`]).
    Reader,
}

impl<F: Layout> Record<F> {
    /// A consistent copy of the record, or None if the owner kept it mid-write through every
    /// retry. Safe from any thread; never fails on the owner's thread.
    #[inline]
    pub fn snapshot(&self) -> Option<RecordView<F>> {
        for _ in 0..READ_RETRIES {
            // Pairs with the Release store of the even version in `end_write`.
            let generation = self.version.load(Ordering::Acquire);
            if generation & 1 == 0 {
                let view = self.load_fields(generation);
                // Pairs with the fence(Release) after the odd version store in `begin_write`.
                fence(Ordering::Acquire);
                if self.version.load(Ordering::Relaxed) == generation {
                    return Some(view);
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Owner only: the record as it is, without the seqlock. Exact because only the owner
    /// writes the version and the flow words, and it never reads a record from inside one of
    /// its own write sections (they all open and close within one `&mut Conntrack` call).
    /// Readers' RMWs of `state` and `last_seen` are single atomic words, so a plain load sees
    /// either value whole.
    #[inline]
    pub fn owner_view(&self) -> RecordView<F> {
        // Only the owner stores `version` and `words`, so these loads see its own last stores.
        self.load_fields(self.version.load(Ordering::Relaxed))
    }

    /// The record's fields as they are (Relaxed loads), labelled with `generation`; the
    /// callers above say why the copy is consistent.
    #[inline]
    fn load_fields(&self, generation: u64) -> RecordView<F> {
        RecordView {
            generation,
            words: F::Words::load(&self.words),
            state_word: self.state.load(Ordering::Relaxed),
            last_seen: self.last_seen.load(Ordering::Relaxed),
        }
    }

    /// A consistent copy of the record, read the way `access` allows.
    #[inline]
    pub fn view(&self, access: Access) -> Option<RecordView<F>> {
        match access {
            Access::Owner => Some(self.owner_view()),
            Access::Reader => self.snapshot(),
        }
    }

    /// Owner only: the index positions of the flow's original slot and reply slot.
    pub fn positions(&self) -> (usize, Option<usize>) {
        // Only the owner stores `positions`, so this load sees its own last store.
        let positions = self.positions.load(Ordering::Relaxed);
        let reply = positions & NO_POSITION;
        ((positions >> 32) as usize, (reply != NO_POSITION).then_some(reply as usize))
    }

    /// Owner only: opens a write section; returns the generation the record will have after.
    fn begin_write(&self) -> u64 {
        // Only the owner stores `version`, so this load sees its own last store.
        let version = self.version.load(Ordering::Relaxed) | 1;
        self.version.store(version, Ordering::Relaxed);
        // Pairs with the fence(Acquire) in `snapshot`: a reader that sees any store below
        // also sees the odd version.
        fence(Ordering::Release);
        version.wrapping_add(1)
    }

    /// Owner only: closes the write section opened by `begin_write`.
    fn end_write(&self, generation: u64) {
        // Pairs with the Acquire load in `snapshot`.
        self.version.store(generation, Ordering::Release);
    }

    /// Advances the state of the flow from `expected`, the state word of a snapshot of
    /// generation `generation`, with `step`. Returns (previous, new) states, or None if the
    /// flow is no longer there (the generation moved on).
    ///
    /// Lost races with other cores' transitions are retried a bounded number of times; after
    /// that the packet leaves the state as it found it (a later packet redoes the transition).
    pub fn advance(
        &self,
        generation: u64,
        mut expected: u64,
        step: impl Fn(FlowState) -> FlowState,
    ) -> Option<(FlowState, FlowState)> {
        for _ in 0..CAS_ATTEMPTS {
            if expected >> 8 != generation & GENERATION_MASK {
                return None;
            }
            let previous = state_from_code(expected)?;
            let next = step(previous);
            if next == previous {
                return Some((previous, next));
            }
            // No ordering needed: the word itself names the generation it belongs to.
            match self.state.compare_exchange_weak(
                expected,
                state_word(generation, next),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((previous, next)),
                Err(actual) => expected = actual,
            }
        }
        let current = state_from_code(expected)?;
        Some((current, current))
    }

    /// Marks the UDP flow of generation `generation`, whose state word was `expected`
    /// (unreplied), as replied. A compare-and-swap like [`Record::advance`]'s: it fails, and
    /// changes nothing, if the flow is gone or another core marked it first.
    pub fn mark_replied(&self, generation: u64, expected: u64) {
        if expected >> 8 == generation & GENERATION_MASK {
            let replied = expected & !0xff | u64::from(UDP_REPLIED_CODE);
            // No ordering needed, as in `advance`: the word names its generation.
            let _ = self.state.compare_exchange(
                expected,
                replied,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Raises `last_seen` from `seen` (a snapshot's value) to `now`. The owner stores (no
    /// locked instruction on its hot path); a reader uses `fetch_max`.
    ///
    /// Benign races, both documented in the module docs of `conntrack`: the owner's store can
    /// overwrite a reader's concurrent refresh, but only with its own timestamp of the same
    /// moment; a reader's `fetch_max` can land on a record the owner has just reused, which
    /// only makes the brand-new flow look as fresh as it already is.
    pub fn touch(&self, seen: u64, now: u64, owner: bool) {
        if now > seen {
            if owner {
                self.last_seen.store(now, Ordering::Relaxed);
            } else {
                self.last_seen.fetch_max(now, Ordering::Relaxed);
            }
        }
    }
}

/// Packs a generation and a state into a `state` word.
fn state_word(generation: u64, state: FlowState) -> u64 {
    (generation & GENERATION_MASK) << 8 | u64::from(state_code(state))
}

const fn state_code(state: FlowState) -> u8 {
    match state {
        FlowState::SynSeen => 1,
        FlowState::Established => 2,
        FlowState::Closing => 3,
        FlowState::Closed => 4,
        FlowState::Udp => 5,
    }
}

/// The code of a UDP flow whose backend has answered ([`FlowState::Udp`]'s code, 5, means
/// no answer seen yet). Set only by [`Record::mark_replied`]; the state machine never
/// moves a UDP flow, so no other transition touches it.
const UDP_REPLIED_CODE: u8 = 6;

/// The state in a `state` word's low byte; None for a free record (0).
fn state_from_code(word: u64) -> Option<FlowState> {
    match word as u8 {
        1 => Some(FlowState::SynSeen),
        2 => Some(FlowState::Established),
        3 => Some(FlowState::Closing),
        4 => Some(FlowState::Closed),
        5 | UDP_REPLIED_CODE => Some(FlowState::Udp),
        _ => None,
    }
}

/// Index into a timeout table: 0 for "no flow", then the state codes.
pub(super) const fn timeout_index(state: FlowState) -> usize {
    state_code(state) as usize
}

/// Number of entries a timeout table indexed by [`timeout_index`] needs.
pub(super) const TIMEOUT_ENTRIES: usize = 6;

/// Entries of [`Table`]'s code-indexed timeouts: every value of the low three bits of a
/// state word's code (codes are 0..=6).
const CODE_ENTRIES: usize = 8;

/// The codes of TCP states past the handshake (`Established`, `Closing`, `Closed`) as a bit
/// set: the states a packet without SYN, FIN or RST leaves as they are.
const SETTLED_TCP_CODES: u8 = 1 << 2 | 1 << 3 | 1 << 4;

/// True if a packet seen in `direction` with `tcp_flags` leaves a flow whose state word has
/// code `code` exactly as it is: no TCP transition (`tcp::next_state` returns the state)
/// and no first reply of a UDP flow. A short cut for the owner's hit path; false only means
/// "take the general path" (tested against it for every code, direction and flag byte).
#[inline(always)]
const fn leaves_as_is(code: u8, direction: Direction, tcp_flags: Option<u8>) -> bool {
    if code == UDP_REPLIED_CODE {
        return true;
    }
    if code == state_code(FlowState::Udp) {
        return matches!(direction, Direction::Original);
    }
    let settled = code < 8 && SETTLED_TCP_CODES >> code & 1 != 0;
    match tcp_flags {
        Some(flags) => settled && flags & (SYN | FIN | RST) == 0,
        None => settled,
    }
}

/// Entries of [`Table`]'s settled-age limits: every (code's low three bits, direction) of
/// [`settled_index`].
const SETTLED_ENTRIES: usize = CODE_ENTRIES * 2;

/// True if `tcp_flags` hold none of SYN, FIN and RST (the only part of the flags
/// [`leaves_as_is`] reads), or there are none (UDP): a packet the settled hit
/// ([`Table::owner_settled`]) may answer. A noisy one takes the general path, which the
/// settled hit may always leave a packet to.
#[inline(always)]
pub const fn quiet(tcp_flags: Option<u8>) -> bool {
    match tcp_flags {
        Some(flags) => flags & (SYN | FIN | RST) == 0,
        None => true,
    }
}

/// The index into [`Table`]'s settled-age limits of a quiet packet ([`quiet`]) seen in
/// `direction` on a record whose state word has code `code`: the code's low three bits and
/// the direction.
#[inline(always)]
fn settled_index(code: u8, direction: Direction) -> usize {
    usize::from(code & 7) | usize::from(direction == Direction::Reply) << 3
}

/// The settled-age limit of `settled_index(code, direction)`: one more than the code's
/// timeout when the code is a state's and a quiet packet ([`quiet`]) leaves it as it is
/// ([`leaves_as_is`]), else 0 (no age is below it). `timeouts` are the code-indexed ones.
fn settled_limit(timeouts: &[u64; CODE_ENTRIES], index: usize) -> u64 {
    let code = (index & 7) as u8;
    let direction = if index & 8 != 0 { Direction::Reply } else { Direction::Original };
    let live = state_from_code(u64::from(code)).is_some();
    match live && leaves_as_is(code, direction, None) {
        true => timeouts[usize::from(code)].saturating_add(1),
        false => 0,
    }
}

/// What the owner's quick lookup ([`Table::owner_quick`]) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quick<F: Layout> {
    /// A live flow whose state the packet leaves as it is; last-seen refreshed.
    Hit(Hit<F>),
    /// No live flow has the key, or it has expired.
    Miss,
    /// The packet may move the flow's state: nothing was changed, the general path decides.
    Slow,
}

/// Asks the CPU to start loading the cache lines `value` spans (one for a bucket or an IPv4
/// record, two for an IPv6 record), and returns at once (x86-64 `prefetcht0`; elsewhere
/// nothing). Batches use it so their packets' cache misses
/// overlap (see "Batches" in the module docs of `conntrack`).
#[inline(always)]
pub(super) fn prefetch<T>(value: &T) {
    prefetch_in(std::slice::from_ref(value), 0);
}

/// [`prefetch`] of `items[index]`, with no bounds check: an index past the end hints an
/// address outside the slice, which costs a wasted line at most (the first pass prefetches
/// the bucket `hash & mask` of `mask + 1` buckets, always inside, without a compare and a
/// branch saying so).
///
/// The one `unsafe` outside the AF_XDP module, accepted as this single function: a load
/// used as a prefetch (what this module did before) holds up retirement until its line
/// arrives, which caps how many misses a batch overlaps.
#[inline(always)]
#[allow(unsafe_code)]
pub(super) fn prefetch_in<T>(items: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..std::mem::size_of::<T>().div_ceil(64) {
        let address = items.as_ptr().wrapping_add(index).cast::<i8>().wrapping_add(line * 64);
        // SAFETY: `_mm_prefetch` only hints the cache: it never faults, reads nothing into a
        // register and writes nothing, so no address could make it undefined behaviour (the
        // address is computed with wrapping arithmetic, never dereferenced). Its `sse`
        // target feature is part of the x86-64 baseline, present on every CPU this code can
        // run on.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (items, index);
}

/// One cache line of index slots.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Bucket {
    /// Written only by the owner ([`Table::publish`] with Release, [`Table::unpublish`]);
    /// read by everyone with Acquire (pairing with `publish`), and always confirmed against
    /// the record's key.
    slots: [AtomicU32; BUCKET_SLOTS],
}

/// A decoded, non-empty index slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotRef {
    pub tag: u32,
    pub direction: Direction,
    pub record: usize,
}

/// How a table packs a [`SlotRef`] into 32 bits: the record index in the low `record_bits`
/// bits, the direction above it, the fingerprint in the rest. Every mask and shift a lookup
/// uses is computed once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotFormat {
    record_bits: u32,
    /// `(1 << record_bits) - 1`.
    record_mask: u32,
    /// `1 << record_bits`.
    direction_bit: u32,
    /// `record_bits + 1`: where the fingerprint starts.
    tag_shift: u32,
    /// `u32::MAX << tag_shift`: the fingerprint bits of a slot word.
    tag_mask: u32,
}

impl SlotFormat {
    /// The format for a table of `records` records.
    fn for_records(records: usize) -> SlotFormat {
        let needed = usize::BITS - records.saturating_sub(1).leading_zeros();
        let record_bits = needed.clamp(1, MAX_RECORD_BITS);
        SlotFormat {
            record_bits,
            record_mask: (1 << record_bits) - 1,
            direction_bit: 1 << record_bits,
            tag_shift: record_bits + 1,
            tag_mask: u32::MAX << (record_bits + 1),
        }
    }

    fn record_mask(self) -> u32 {
        self.record_mask
    }

    /// A nonzero fingerprint of `hash`, from bits the bucket index does not use.
    fn tag(self, hash: u64) -> u32 {
        ((hash >> 32) as u32 >> self.tag_shift).max(1)
    }

    /// The mask of a slot word's fingerprint bits, and the fingerprint of `hash` in place
    /// under it: a slot has that fingerprint iff `word & mask == bits`. The same as
    /// `tag(hash) << tag_shift` (the hash's high word under the mask, or the lowest
    /// fingerprint, 1, where that is 0) without the shifts.
    #[inline(always)]
    fn tag_bits(self, hash: u64) -> (u32, u32) {
        let bits = ((hash >> 32) as u32 & self.tag_mask).max(self.direction_bit << 1);
        (self.tag_mask, bits)
    }

    /// The direction bit of a slot word.
    #[inline]
    fn direction(self, word: u32) -> Direction {
        if word & self.direction_bit != 0 { Direction::Reply } else { Direction::Original }
    }

    fn decode(self, word: u32) -> Option<SlotRef> {
        (word != 0).then_some(SlotRef {
            tag: word >> self.tag_shift,
            direction: self.direction(word),
            record: (word & self.record_mask()) as usize,
        })
    }

    fn encode(self, slot: SlotRef) -> u32 {
        let direction = match slot.direction {
            Direction::Original => 0,
            Direction::Reply => 1 << self.record_bits,
        };
        slot.tag << self.tag_shift | direction | (slot.record as u32 & self.record_mask())
    }
}

/// The fixed-size table shared by an owner and its readers.
#[derive(Debug)]
pub(super) struct Table<F: Layout> {
    buckets: Box<[Bucket]>,
    /// Owner only: bucket `b`'s used slots, one bit per slot (bit `i` set iff slot `i` of
    /// bucket `b` is not 0), kept exact by [`Table::publish`] and [`Table::unpublish`], the
    /// only stores of slots. The owner's scans read it instead of every slot word of a
    /// bucket (a new flow's record pass, the insert's free slot, the sweep). Atomic only
    /// because the table is shared; readers never read it (they scan the slots), and only
    /// the owner stores it, so Relaxed loads see its own last stores.
    occupancy: Box<[AtomicU16]>,
    records: Box<[Record<F>]>,
    format: SlotFormat,
    /// `buckets.len() - 1`; the bucket count is a power of two.
    bucket_mask: u64,
    /// Timeouts in nanoseconds, indexed by [`timeout_index`].
    timeouts: [u64; TIMEOUT_ENTRIES],
    /// The same timeouts indexed by a state word's code (`state_word as u8 & 7`): the hit
    /// path reads its timeout without decoding the state first. Codes that are no state (0,
    /// 7) have 0; callers check liveness first.
    code_timeouts: [u64; CODE_ENTRIES],
    /// For the settled hit ([`Table::owner_settled`]), indexed by [`settled_index`]: the
    /// age (nanoseconds since last seen) below which a packet leaves its flow as it is,
    /// one test for liveness, timeout and [`leaves_as_is`] ([`settled_limit`]: 0, which no
    /// age is below, for a free record and for a packet that may move the state). A
    /// timeout of `u64::MAX` nanoseconds counts as one less (no clock reads that far).
    settled_ages: [u64; SETTLED_ENTRIES],
    /// Flows in `SynSeen`. Changed by whichever core moves a flow into or out of `SynSeen`
    /// (the owner on insert and removal, any core in `track`), always by an atomic RMW, so it
    /// is exact. Padded: the owner bumps it on every embryonic insert.
    embryonic: CachePadded<AtomicUsize>,
}

/// The table's shape as [`Table::prefetch_record`] needs it, copied out of the table once for
/// a batch's record pass ([`Table::record_pass`]): a loop over the batch's keys then keeps it
/// in registers instead of reading the table's fields again for each key (the slots' atomic
/// loads keep the compiler from hoisting those reads itself).
#[derive(Clone, Copy)]
pub(super) struct RecordPass<'a, F: Layout> {
    buckets: &'a [Bucket],
    occupancy: &'a [AtomicU16],
    records: &'a [Record<F>],
    format: SlotFormat,
    bucket_mask: u64,
}

impl<F: Layout> RecordPass<'_, F> {
    /// [`Table::prefetch_record`]: the bucket's first [`LEADING_SLOTS`] slots one by one,
    /// then its other used slots as the occupancy names them, in slot order: the first slot
    /// with the fingerprint, as a scan of every slot finds it (a free slot, 0, has none).
    #[inline(always)]
    pub fn prefetch_record(&self, hash: u64) -> u32 {
        let index = (hash & self.bucket_mask) as usize;
        let Some(bucket) = self.buckets.get(index) else {
            return 0;
        };
        let (tag_mask, tag_bits) = self.format.tag_bits(hash);
        let word = 'found: {
            for slot in &bucket.slots[..LEADING_SLOTS] {
                let word = slot.load(Ordering::Relaxed);
                if word & tag_mask == tag_bits {
                    break 'found word;
                }
            }
            // Only the owner runs the record pass (`Conntrack::prepare`) and stores the
            // occupancy, so this load sees its own last store.
            let mut used = self.occupancy.get(index).map_or(0, |used| used.load(Ordering::Relaxed))
                & !((1 << LEADING_SLOTS) - 1);
            while used != 0 {
                let slot = used.trailing_zeros() as usize;
                used &= used - 1;
                let word = bucket.slots.get(slot).map_or(0, |slot| slot.load(Ordering::Relaxed));
                if word & tag_mask == tag_bits {
                    break 'found word;
                }
            }
            return 0;
        };
        if let Some(record) = self.records.get((word & self.format.record_mask()) as usize) {
            prefetch(record);
        }
        word
    }
}

/// The table's shape as the settled hit ([`Table::owner_settled`]) needs it, copied out of
/// the table once for a batch's run of settled hits ([`Table::settled_pass`]): its loop then
/// keeps it at hand instead of reading the table's fields again for each frame (the
/// records' atomic loads keep the compiler from hoisting those reads itself).
#[derive(Clone, Copy)]
pub(super) struct SettledPass<'a, F: Layout> {
    records: &'a [Record<F>],
    format: SlotFormat,
    settled_ages: &'a [u64; SETTLED_ENTRIES],
}

impl<F: Layout> SettledPass<'_, F> {
    /// [`Table::owner_quick`] on the candidate slot alone (for the key of `probe`), for the
    /// common packet's straight way: the flow's words and the direction when `candidate`
    /// points at the live, unexpired flow with the key and the packet leaves that flow as it
    /// is (last-seen refreshed, as `owner_quick`'s hit does); None for anything else, having
    /// changed nothing, so the caller asks `owner_quick` (which scans the bucket and tells a
    /// miss from a move). A hit here is the hit `owner_quick` would give: the same slot check
    /// comes first there (here the key is compared before liveness, which the settled-age
    /// limit of a free record's code refuses: the same answer). The words are handed out packed (the caller reads what it needs
    /// of them); they are words `pack` wrote, as any live record's.
    ///
    /// Only for a quiet packet ([`quiet`]: the settled-age limits are a quiet packet's); the
    /// callers answer None for the others (a packet with SYN, FIN or RST may move a TCP
    /// flow: the general path's).
    #[inline(always)]
    pub fn owner_settled(
        &self,
        now: u64,
        probe: &F::Probe,
        candidate: u32,
    ) -> Option<(Direction, F::Words)> {
        if candidate == 0 {
            return None;
        }
        let record = self.records.get((candidate & self.format.record_mask()) as usize)?;
        // Each direction its own copy of the rest: the key compare and the settled-age limit
        // with the direction known.
        match self.format.direction(candidate) {
            Direction::Original => self.settled_record(now, probe, record, Direction::Original),
            Direction::Reply => self.settled_record(now, probe, record, Direction::Reply),
        }
    }

    /// [`SettledPass::owner_settled`] of the record its candidate names, seen in `direction`.
    #[inline(always)]
    fn settled_record(
        &self,
        now: u64,
        probe: &F::Probe,
        record: &Record<F>,
        direction: Direction,
    ) -> Option<(Direction, F::Words)> {
        // The owner's plain loads, as `check_slot`'s owner view; a free record's stale
        // words may match, its code's limit (0) then refuses it.
        let words = F::Words::load(&record.words);
        if !F::matches(probe, &words, direction) {
            return None;
        }
        let (state_word, last_seen) =
            (record.state.load(Ordering::Relaxed), record.last_seen.load(Ordering::Relaxed));
        let limit = self.settled_ages[settled_index(state_word as u8, direction)];
        if now.saturating_sub(last_seen) >= limit {
            return None;
        }
        record.touch(last_seen, now, true);
        Some((direction, words))
    }
}

/// Where a key was found: the direction, the record and a copy of it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Found<'a, F: Layout> {
    pub direction: Direction,
    /// The record's index.
    pub index: usize,
    pub record: &'a Record<F>,
    pub view: RecordView<F>,
}

impl<F: Layout> Table<F> {
    /// The most records a table can have (record indices fit in 28 bits).
    pub const MAX_RECORDS: usize = 1 << MAX_RECORD_BITS;

    /// A table of `records` records (at most [`Table::MAX_RECORDS`]) and `buckets` index
    /// buckets (rounded up to a power of two, at least one).
    pub fn new(records: usize, buckets: usize, timeouts: [u64; TIMEOUT_ENTRIES]) -> Table<F> {
        let buckets = buckets.max(1).next_power_of_two();
        let records = records.min(Self::MAX_RECORDS);
        let code_timeouts = std::array::from_fn(|code| {
            state_from_code(code as u64)
                .and_then(|state| timeouts.get(timeout_index(state)).copied())
                .unwrap_or(0)
        });
        Table {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            occupancy: (0..buckets).map(|_| AtomicU16::new(0)).collect(),
            records: (0..records).map(|_| Record::default()).collect(),
            format: SlotFormat::for_records(records),
            bucket_mask: buckets as u64 - 1,
            timeouts,
            code_timeouts,
            settled_ages: std::array::from_fn(|index| settled_limit(&code_timeouts, index)),
            embryonic: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
            + std::mem::size_of_val(&*self.occupancy)
            + std::mem::size_of_val(&*self.records)
    }

    /// What [`Table::memory_bytes`] of `Table::new(records, buckets, _)` will be, without
    /// allocating it.
    pub fn memory_for(records: usize, buckets: usize) -> usize {
        let buckets = buckets.max(1).checked_next_power_of_two().unwrap_or(usize::MAX);
        let records = records.min(Self::MAX_RECORDS);
        buckets
            .saturating_mul(std::mem::size_of::<Bucket>() + std::mem::size_of::<AtomicU16>())
            .saturating_add(records * std::mem::size_of::<Record<F>>())
    }

    pub fn embryonic(&self) -> usize {
        self.embryonic.load(Ordering::Relaxed)
    }

    /// The bucket a key hash selects and the fingerprint its slot carries (never 0).
    pub fn place(&self, hash: u64) -> (usize, u32) {
        ((hash & self.bucket_mask) as usize, self.format.tag(hash))
    }

    pub fn record(&self, index: usize) -> Option<&Record<F>> {
        self.records.get(index)
    }

    fn slot(&self, position: usize) -> Option<&AtomicU32> {
        self.buckets.get(position / BUCKET_SLOTS)?.slots.get(position % BUCKET_SLOTS)
    }

    /// The index slot at `position` (bucket * BUCKET_SLOTS + slot), None when free.
    pub fn slot_ref(&self, position: usize) -> Option<SlotRef> {
        // Pairs with the Release store in `publish`.
        self.format.decode(self.slot(position)?.load(Ordering::Acquire))
    }

    /// Owner only: the slots of `bucket` in use, one bit per slot (bit `i`: slot `i`); 0
    /// for a bucket out of range. The bucket's occupancy, so a caller that looks at every
    /// used slot (the sweep) skips the free ones without reading them.
    #[inline]
    pub fn used_slots(&self, bucket: usize) -> u32 {
        // Only the owner stores the occupancy, so this load sees its own last store.
        self.occupancy.get(bucket).map_or(0, |used| u32::from(used.load(Ordering::Relaxed)))
    }

    /// Owner only: the position of the first free slot of `bucket` other than `exclude`
    /// (None if the bucket is full or out of range), from the bucket's occupancy.
    #[inline(always)]
    pub fn free_position(&self, bucket: usize, exclude: Option<usize>) -> Option<usize> {
        let first = bucket * BUCKET_SLOTS;
        // The slot of this bucket to pass over, as a bit (none for another bucket's).
        let skip = exclude.map_or(0, |position| {
            let slot = position.wrapping_sub(first);
            if slot < BUCKET_SLOTS { 1 << slot } else { 0 }
        });
        let free = !(self.used_slots(bucket) | skip) & ((1 << BUCKET_SLOTS) - 1);
        (free != 0 && bucket < self.buckets.len()).then(|| first + free.trailing_zeros() as usize)
    }

    /// True if every bucket's occupancy names exactly its slots that are not 0 (the
    /// owner's invariant; tests check it after every operation).
    #[cfg(test)]
    pub fn occupancy_is_exact(&self) -> bool {
        self.buckets.iter().enumerate().all(|(bucket, slots)| {
            let used = slots.slots.iter().enumerate().fold(0, |used, (i, slot)| {
                used | u32::from(slot.load(Ordering::Relaxed) != 0) << i
            });
            used == self.used_slots(bucket)
        })
    }

    /// What [`Table::prefetch_record`] must return: the first slot word of `hash`'s bucket
    /// with `hash`'s fingerprint, found by testing every slot (0 for none).
    #[cfg(test)]
    pub fn first_with_fingerprint(&self, hash: u64) -> u32 {
        let (tag_mask, tag_bits) = self.format.tag_bits(hash);
        self.buckets.get((hash & self.bucket_mask) as usize).map_or(0, |bucket| {
            bucket
                .slots
                .iter()
                .map(|slot| slot.load(Ordering::Relaxed))
                .find(|word| word & tag_mask == tag_bits)
                .unwrap_or(0)
        })
    }

    /// True if a flow whose record snapshot is `view` had its last packet longer ago than
    /// its state's timeout. A last-seen in the future (another core's clock) is not expired.
    pub fn is_expired(&self, now: u64, view: &RecordView<F>) -> bool {
        let timeout = match view.state() {
            Some(state) => self.timeouts.get(timeout_index(state)).copied().unwrap_or(0),
            None => return true,
        };
        now.saturating_sub(view.last_seen) > timeout
    }

    /// Time left before a live, unexpired flow expires (None when it is free or expired).
    pub fn expires_in(&self, now: u64, view: &RecordView<F>) -> Option<u64> {
        let timeout = self.timeouts.get(timeout_index(view.state()?)).copied().unwrap_or(0);
        let idle = now.saturating_sub(view.last_seen);
        (idle <= timeout).then(|| timeout - idle)
    }

    /// Finds the flow that has `key` (live or expired), reading records as `access` allows.
    /// `hash` must be the table's hash of `key` (`Conntrack::hash`; any other value finds
    /// nothing or another key's slots, which the key comparison rejects).
    ///
    /// One pass over the bucket's slots comparing fingerprints, and for a matching slot one
    /// copy of its record compared with the key as packed words ([`Layout::probe`]).
    #[inline]
    pub fn find(&self, key: &FlowKey<F>, hash: u64, access: Access) -> Option<Found<'_, F>> {
        self.find_probe(&F::probe(key), hash, access)
    }

    #[inline(always)]
    fn find_probe(&self, probe: &F::Probe, hash: u64, access: Access) -> Option<Found<'_, F>> {
        let bucket = (hash & self.bucket_mask) as usize;
        let (tag_mask, tag_bits) = self.format.tag_bits(hash);
        for slot in &self.buckets.get(bucket)?.slots {
            // Pairs with the Release store in `publish`.
            let word = slot.load(Ordering::Acquire);
            // Free slots (0) have fingerprint 0, which no key has.
            if word & tag_mask != tag_bits {
                continue;
            }
            if let Some(found) = self.check_slot(probe, word, access) {
                return Some(found);
            }
        }
        None
    }

    /// The record the slot word `word` points at, if it holds a live flow that has `probe`'s
    /// key in the slot's direction. Any word is harmless: 0 or a stale word finds nothing
    /// (the key is always compared).
    #[inline(always)]
    fn check_slot(&self, probe: &F::Probe, word: u32, access: Access) -> Option<Found<'_, F>> {
        if word == 0 {
            return None;
        }
        let index = (word & self.format.record_mask()) as usize;
        let record = self.records.get(index)?;
        let view = record.view(access)?;
        let direction = self.format.direction(word);
        (view.is_live() && F::matches(probe, &view.words, direction)).then_some(Found {
            direction,
            index,
            record,
            view,
        })
    }

    /// The owner's lookup of a packet's flow, done entirely when the packet leaves the flow's
    /// state as it is (nearly every packet): [`Quick::Hit`] with last-seen refreshed, or
    /// [`Quick::Miss`]. Packets that may move the state get [`Quick::Slow`], having changed
    /// nothing, for the general path to redo. Same answers as that path
    /// (`super::track`), with the record read once and its state decoded once.
    ///
    /// `candidate` is a slot word [`Table::prefetch_record`] returned for this key's hash
    /// earlier in the batch (0: none). It is only a guess: it is tried first and, unless it
    /// points at a live record with the key, the bucket is scanned as usual, so a candidate
    /// made stale by the batch's earlier packets (an insert, an eviction) costs a scan, never
    /// a wrong answer. `known_absent` (asked only when the candidate fails) says the caller knows the key has no slot (the batch
    /// saw none with its fingerprint and nothing was published into its bucket since): then
    /// a failed candidate is a miss without a scan.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn owner_quick(
        &self,
        now: u64,
        key: &FlowKey<F>,
        hash: u64,
        candidate: u32,
        known_absent: impl FnOnce() -> bool,
        tcp_flags: Option<u8>,
    ) -> Quick<F> {
        let probe = F::probe(key);
        let found = match self.check_slot(&probe, candidate, Access::Owner) {
            Some(found) => found,
            None if known_absent() => return Quick::Miss,
            None => match self.find_probe(&probe, hash, Access::Owner) {
                Some(found) => found,
                None => return Quick::Miss,
            },
        };
        let view = &found.view;
        let code = view.state_word as u8;
        // `find` returned a live record, so the code is a state's.
        let timeout = self.code_timeouts[usize::from(code & 7)];
        if now.saturating_sub(view.last_seen) > timeout {
            return Quick::Miss;
        }
        if !leaves_as_is(code, found.direction, tcp_flags) {
            return Quick::Slow;
        }
        let (Some(flow), Some(state)) = (F::unpack(&view.words), state_from_code(view.state_word))
        else {
            return Quick::Miss;
        };
        found.record.touch(view.last_seen, now, true);
        Quick::Hit(Hit { direction: found.direction, flow, state, previous: state })
    }

    /// [`Table::owner_quick`] on the candidate slot alone (for the key of `probe`), for the
    /// common packet's straight way: [`SettledPass::owner_settled`] with the table's shape
    /// read for this packet alone.
    #[inline(always)]
    pub fn owner_settled(
        &self,
        now: u64,
        probe: &F::Probe,
        candidate: u32,
    ) -> Option<(Direction, F::Words)> {
        self.settled_pass().owner_settled(now, probe, candidate)
    }

    /// What [`Table::owner_settled`] reads of the table, read once (for a batch's run of
    /// settled hits).
    #[inline(always)]
    pub fn settled_pass(&self) -> SettledPass<'_, F> {
        SettledPass {
            records: &self.records,
            format: self.format,
            settled_ages: &self.settled_ages,
        }
    }

    /// [`Table::find`] from any thread (tests).
    #[cfg(test)]
    pub fn lookup(&self, key: &FlowKey<F>, hash: u64) -> Option<Found<'_, F>> {
        self.find(key, hash, Access::Reader)
    }

    /// Starts loading the index bucket `hash` selects ([`prefetch`]).
    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        prefetch_in(&self.buckets, self.place(hash).0);
    }

    /// Starts loading the record of the first slot of the bucket `hash` selects that
    /// carries `hash`'s fingerprint (none for most unknown keys), and returns that slot's
    /// word (0 for none): the candidate [`Table::owner_quick`] tries first. Reads the
    /// bucket, which a [`Table::prefetch_bucket`] earlier in the batch has started loading.
    /// A fingerprint collision ahead of the key's own slot (rare: 2^-14 per occupied slot
    /// at 100 000 records) only makes this the wrong line and the wrong candidate.
    #[inline]
    pub fn prefetch_record(&self, hash: u64) -> u32 {
        self.record_pass().prefetch_record(hash)
    }

    /// What [`Table::prefetch_record`] reads of the table, read once (for a batch's record
    /// pass).
    #[inline(always)]
    pub fn record_pass(&self) -> RecordPass<'_, F> {
        RecordPass {
            buckets: &self.buckets,
            occupancy: &self.occupancy,
            records: &self.records,
            format: self.format,
            bucket_mask: self.bucket_mask,
        }
    }

    /// Moves a flow into or out of `SynSeen` in the embryonic count.
    pub fn count_transition(&self, previous: Option<FlowState>, next: Option<FlowState>) {
        let embryonic = Some(FlowState::SynSeen);
        match (previous == embryonic, next == embryonic) {
            (false, true) => {
                self.embryonic.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.embryonic.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Owner only: writes `flow` into the free record `index`; with its address change
    /// when `TRANSLATING` ([`Layout::pack_translating`]: a flow with a reply key).
    #[inline]
    pub fn write_record<const TRANSLATING: bool>(
        &self,
        index: usize,
        flow: &Flow<F>,
        state: FlowState,
        now: u64,
        positions: (usize, Option<usize>),
    ) {
        let Some(record) = self.record(index) else {
            return;
        };
        let generation = record.begin_write();
        let words = if TRANSLATING { F::pack_translating(flow) } else { F::pack(flow) };
        words.store(&record.words);
        let reply = positions.1.map_or(NO_POSITION, |reply| reply as u64 & NO_POSITION);
        record.positions.store((positions.0 as u64) << 32 | reply, Ordering::Relaxed);
        record.last_seen.store(now, Ordering::Relaxed);
        // Counted before the record becomes visible, so no reader's transition out of
        // `SynSeen` can be counted first.
        self.count_transition(None, Some(state));
        record.state.store(state_word(generation, state), Ordering::Relaxed);
        record.end_write(generation);
    }

    /// Owner only: frees record `index`. Returns the state the flow had, taken atomically
    /// with respect to readers' transitions so the embryonic count stays exact.
    pub fn clear_record(&self, index: usize) -> Option<FlowState> {
        let record = self.record(index)?;
        let generation = record.begin_write();
        // The swap makes any reader's pending CAS on the old generation fail.
        let free = (generation & GENERATION_MASK) << 8;
        let old = state_from_code(record.state.swap(free, Ordering::Relaxed));
        record.positions.store(0, Ordering::Relaxed);
        record.end_write(generation);
        self.count_transition(old, None);
        old
    }

    /// Owner only: points the free slot at `position` to a record.
    pub fn publish(&self, position: usize, slot: SlotRef) {
        if let Some(word) = self.slot(position) {
            // Pairs with the Acquire loads in `lookup` and `slot_ref`: whoever sees the slot
            // sees the record written before it.
            word.store(self.format.encode(slot), Ordering::Release);
            self.set_occupied(position, true);
        }
    }

    /// Owner only: frees the slot at `position`.
    pub fn unpublish(&self, position: usize) {
        if let Some(word) = self.slot(position) {
            word.store(0, Ordering::Relaxed);
            self.set_occupied(position, false);
        }
    }

    /// Owner only: records in its bucket's occupancy whether the slot at `position` (in
    /// range) is used. A slot word `encode` made is never 0.
    fn set_occupied(&self, position: usize, used: bool) {
        if let Some(occupancy) = self.occupancy.get(position / BUCKET_SLOTS) {
            let bit = 1 << (position % BUCKET_SLOTS);
            // Only the owner stores the occupancy: a load and a store, no read-modify-write.
            let old = occupancy.load(Ordering::Relaxed);
            occupancy.store(if used { old | bit } else { old & !bit }, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::family::{Family, V4, V6};
    use crate::flow::{ForwardMode, Proto};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// What the layout tests need of a family: arbitrary addresses, and an address with one
    /// bit flipped.
    pub(in crate::conntrack) trait Arbitrary: Layout {
        fn arb_addr(bits: u128) -> Self::Addr;
        fn flip(addr: Self::Addr, bit: u32) -> Self::Addr;
        /// The bits a mutation flips: both ends of every word an address spans.
        const BITS: &'static [u32];
    }

    impl Arbitrary for V4 {
        fn arb_addr(bits: u128) -> Ipv4Addr {
            Ipv4Addr::from_bits(bits as u32)
        }
        fn flip(addr: Ipv4Addr, bit: u32) -> Ipv4Addr {
            Ipv4Addr::from_bits(addr.to_bits() ^ 1 << bit)
        }
        const BITS: &'static [u32] = &[0, 31];
    }

    impl Arbitrary for V6 {
        fn arb_addr(bits: u128) -> Ipv6Addr {
            Ipv6Addr::from_bits(bits)
        }
        fn flip(addr: Ipv6Addr, bit: u32) -> Ipv6Addr {
            Ipv6Addr::from_bits(addr.to_bits() ^ 1 << bit)
        }
        const BITS: &'static [u32] = &[0, 63, 64, 127];
    }

    /// Any flow of family `F`, in any forwarding mode.
    pub(in crate::conntrack) fn arb_flow<F: Arbitrary>() -> impl Strategy<Value = Flow<F>> {
        const MODES: [ForwardMode; 4] =
            [ForwardMode::Dr, ForwardMode::Nat, ForwardMode::FullNat, ForwardMode::Tunnel];
        (any::<bool>(), 0..4usize, any::<[u128; 4]>(), any::<[u16; 4]>(), any::<(u16, u16)>())
            .prop_map(|(tcp, forward, addrs, ports, (service, backend))| {
                let flow = Flow {
                    proto: if tcp { Proto::Tcp } else { Proto::Udp },
                    forward: MODES[forward],
                    client_addr: F::arb_addr(addrs[0]),
                    vip: F::arb_addr(addrs[1]),
                    backend_addr: F::arb_addr(addrs[2]),
                    local_addr: F::arb_addr(addrs[3]),
                    client_port: ports[0],
                    vport: ports[1],
                    backend_port: ports[2],
                    local_port: ports[3],
                    service,
                    backend,
                };
                // A NAT flow's local address and port are its client's: the pipeline opens
                // every NAT flow so (`opened` from `schedule` and `stateless`), and
                // `pack_translating` stores them so (layout.rs's invariant).
                match flow.forward {
                    ForwardMode::Nat => {
                        Flow { local_addr: flow.client_addr, local_port: flow.client_port, ..flow }
                    }
                    _ => flow,
                }
            })
    }

    fn pack_round_trips<F: Arbitrary>(flow: Flow<F>) -> Result<(), TestCaseError> {
        prop_assert_eq!(F::unpack(&F::pack(&flow)), Some(flow));
        Ok(())
    }

    fn keys_derived_from_packed_words_match_the_flows<F: Arbitrary>(
        flow: Flow<F>,
    ) -> Result<(), TestCaseError> {
        let view = RecordView::<F> {
            generation: 2,
            words: F::pack(&flow),
            state_word: state_word(2, FlowState::Udp),
            last_seen: 0,
        };
        prop_assert_eq!(view.key(Direction::Original), Some(flow.original_key()));
        prop_assert_eq!(view.key(Direction::Reply), flow.reply_key());
        let free = RecordView { state_word: 2 << 8, ..view };
        prop_assert_eq!(free.key(Direction::Original), None);
        Ok(())
    }

    /// The flow's own keys, another flow's keys, and each key with one field changed (an
    /// address in one bit at either end of each of its words, a port, the protocol, the
    /// direction): a probe matches exactly the key derived from the record.
    fn probes_match_exactly_the_keys_derived_from_records<F: Arbitrary>(
        flow: Flow<F>,
        other: Flow<F>,
        reply: bool,
        mutate: usize,
    ) -> Result<(), TestCaseError> {
        let words = F::pack(&flow);
        let direction = if reply { Direction::Reply } else { Direction::Original };
        let view = RecordView::<F> {
            generation: 2,
            words,
            state_word: state_word(2, FlowState::Udp),
            last_seen: 0,
        };
        let mut candidates = vec![flow.original_key(), other.original_key()];
        candidates.extend(flow.reply_key());
        candidates.extend(other.reply_key());
        let bits = F::BITS.len();
        let near: Vec<FlowKey<F>> = candidates
            .iter()
            .map(|key| {
                let mut key = *key;
                match mutate {
                    m if m < bits => key.src_addr = F::flip(key.src_addr, F::BITS[m]),
                    m if m < 2 * bits => key.dst_addr = F::flip(key.dst_addr, F::BITS[m - bits]),
                    m if m == 2 * bits => key.src_port ^= 1,
                    m if m == 2 * bits + 1 => key.dst_port ^= 0x8000,
                    m if m == 2 * bits + 2 => {
                        key.proto = if key.proto == Proto::Tcp { Proto::Udp } else { Proto::Tcp }
                    }
                    _ => key = key.reversed(),
                }
                key
            })
            .collect();
        for key in candidates.iter().chain(&near) {
            prop_assert_eq!(
                F::matches(&F::probe(key), &view.words, direction),
                view.key(direction) == Some(*key),
                "{} {:?}",
                key,
                direction
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn pack_round_trips_v4(flow in arb_flow::<V4>()) {
            pack_round_trips(flow)?;
        }

        #[test]
        fn pack_round_trips_v6(flow in arb_flow::<V6>()) {
            pack_round_trips(flow)?;
        }

        #[test]
        fn keys_derived_from_packed_words_match_the_flows_v4(flow in arb_flow::<V4>()) {
            keys_derived_from_packed_words_match_the_flows(flow)?;
        }

        #[test]
        fn keys_derived_from_packed_words_match_the_flows_v6(flow in arb_flow::<V6>()) {
            keys_derived_from_packed_words_match_the_flows(flow)?;
        }

        #[test]
        fn probes_match_exactly_the_keys_derived_from_records_v4(
            flow in arb_flow::<V4>(),
            other in arb_flow::<V4>(),
            reply in any::<bool>(),
            mutate in 0..8usize,
        ) {
            probes_match_exactly_the_keys_derived_from_records(flow, other, reply, mutate)?;
        }

        #[test]
        fn probes_match_exactly_the_keys_derived_from_records_v6(
            flow in arb_flow::<V6>(),
            other in arb_flow::<V6>(),
            reply in any::<bool>(),
            mutate in 0..12usize,
        ) {
            probes_match_exactly_the_keys_derived_from_records(flow, other, reply, mutate)?;
        }

        #[test]
        fn slot_refs_round_trip(
            records in 1..=Table::<V4>::MAX_RECORDS,
            hash in any::<u64>(),
            reply in any::<bool>(),
            record in any::<usize>(),
        ) {
            let format = SlotFormat::for_records(records);
            let slot = SlotRef {
                tag: format.tag(hash),
                direction: if reply { Direction::Reply } else { Direction::Original },
                record: record % records,
            };
            let shift = format.record_bits + 1;
            prop_assert_eq!(format.tag_bits(hash), (u32::MAX << shift, format.tag(hash) << shift));
            prop_assert!(format.record_bits + 1 + 3 <= u32::BITS);
            prop_assert!(records <= 1 << format.record_bits);
            prop_assert_ne!(format.encode(slot), 0);
            prop_assert_eq!(format.decode(format.encode(slot)), Some(slot));
        }
    }

    /// A pair of IPv6 flows whose addresses differ only in the high or only in the low half
    /// of one address: their packed words, probes and keys differ.
    #[test]
    fn ipv6_words_keep_both_halves_of_every_address() {
        let base = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10);
        let flow = Flow::<V6> {
            proto: Proto::Tcp,
            forward: ForwardMode::FullNat,
            client_addr: base,
            vip: Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1),
            backend_addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 3, 0, 0, 0, 1),
            local_addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 4, 0, 0, 0, 1),
            client_port: 40000,
            vport: 80,
            backend_port: 8080,
            local_port: 5000,
            service: 1,
            backend: 2,
        };
        let words = V6::pack(&flow);
        for bit in [0, 63, 64, 127] {
            let flip = |addr: Ipv6Addr| Ipv6Addr::from_bits(addr.to_bits() ^ 1 << bit);
            for other in [
                Flow { client_addr: flip(flow.client_addr), ..flow },
                Flow { vip: flip(flow.vip), ..flow },
                Flow { backend_addr: flip(flow.backend_addr), ..flow },
                Flow { local_addr: flip(flow.local_addr), ..flow },
            ] {
                assert_ne!(V6::pack(&other), words, "bit {bit}");
                assert_eq!(V6::unpack(&V6::pack(&other)), Some(other));
                for direction in [Direction::Original, Direction::Reply] {
                    let key = |f: &Flow<V6>| match direction {
                        Direction::Original => Some(f.original_key()),
                        Direction::Reply => f.reply_key(),
                    };
                    let (mine, theirs) = (key(&flow).unwrap(), key(&other).unwrap());
                    assert!(V6::matches(&V6::probe(&mine), &words, direction));
                    // The original key ignores the backend and local addresses; the FullNAT
                    // reply, the client and the VIP.
                    assert_eq!(V6::matches(&V6::probe(&theirs), &words, direction), mine == theirs);
                }
            }
        }
        assert_eq!(V6::NAME, "IPv6");
    }

    // An IPv4 flow record is one cache line, so a hit reads one line of records; an IPv6
    // record is two (checked at compile time, so a field added to `Record` cannot silently
    // split the one or spill out of the other).
    const _: () = assert!(
        std::mem::size_of::<Record<V4>>() == 64
            && std::mem::align_of::<Record<V4>>() == 64
            && std::mem::size_of::<Record<V6>>() == 128
            && std::mem::align_of::<Record<V6>>() == 64
            && std::mem::size_of::<Bucket>() == 64
            && std::mem::align_of::<Bucket>() == 64
    );

    // `Flow` is laid out as `pack` orders its words (little-endian), so a hit copies words
    // 0 to 2 (IPv6: 0 to 8) whole (offsets: word * 8 + byte): the unpacking's speed depends
    // on it, its correctness does not.
    const _: () = {
        use std::mem::offset_of;
        assert!(
            offset_of!(Flow<V4>, vip) == 0
                && offset_of!(Flow<V4>, client_addr) == 4
                && offset_of!(Flow<V4>, local_addr) == 8
                && offset_of!(Flow<V4>, backend_addr) == 12
                && offset_of!(Flow<V4>, local_port) == 16
                && offset_of!(Flow<V4>, backend_port) == 18
                && offset_of!(Flow<V4>, vport) == 20
                && offset_of!(Flow<V4>, client_port) == 22
                && offset_of!(Flow<V4>, forward) == 24
                && offset_of!(Flow<V4>, proto) == 25
                && offset_of!(Flow<V4>, backend) == 26
                && offset_of!(Flow<V4>, service) == 28
        );
        assert!(
            offset_of!(Flow<V6>, vip) == 0
                && offset_of!(Flow<V6>, client_addr) == 16
                && offset_of!(Flow<V6>, local_addr) == 32
                && offset_of!(Flow<V6>, backend_addr) == 48
                && offset_of!(Flow<V6>, local_port) == 64
                && offset_of!(Flow<V6>, backend_port) == 66
                && offset_of!(Flow<V6>, vport) == 68
                && offset_of!(Flow<V6>, client_port) == 70
                && offset_of!(Flow<V6>, forward) == 72
                && offset_of!(Flow<V6>, proto) == 73
                && offset_of!(Flow<V6>, backend) == 74
                && offset_of!(Flow<V6>, service) == 76
        );
    };

    #[test]
    fn the_quick_path_takes_only_packets_that_move_nothing() {
        let directions = [Direction::Original, Direction::Reply];
        let mut quick = 0;
        for code in 0..=u8::MAX {
            for direction in directions {
                for flags in (0..=u8::MAX).map(Some).chain([None]) {
                    if !leaves_as_is(code, direction, flags) {
                        continue;
                    }
                    quick += 1;
                    let state = state_from_code(u64::from(code));
                    let state = state.unwrap_or_else(|| panic!("code {code} is a state's"));
                    assert_eq!(
                        super::super::tcp::next_state(state, direction, flags),
                        state,
                        "{code} {direction:?} {flags:?}"
                    );
                    let first_reply =
                        direction == Direction::Reply && code == state_code(FlowState::Udp);
                    assert!(!first_reply, "{flags:?}");
                }
            }
        }
        // Established, Closing, Closed: 2 directions x (32 flag bytes without SYN, FIN, RST
        // + no flags); unreplied UDP: 1 direction x 257; replied UDP: 2 x 257.
        assert_eq!(quick, 3 * 2 * 33 + 257 + 2 * 257);
        // And the short cut is taken for the common packets.
        assert!(leaves_as_is(state_code(FlowState::Established), Direction::Reply, Some(0x10)));
        assert!(!leaves_as_is(state_code(FlowState::SynSeen), Direction::Original, Some(0x10)));
    }

    #[test]
    fn settled_ages_are_liveness_timeout_and_leaves_as_is() {
        let timeouts = [0, 10, 20, 30, 40, u64::MAX];
        let table = Table::<V4>::new(1, 1, timeouts);
        // Every code a state word holds (0 for a free record, 1..=6 for the states; 7 never).
        for code in 0..CODE_ENTRIES as u8 {
            for direction in [Direction::Original, Direction::Reply] {
                for flags in (0..=u8::MAX).map(Some).chain([None]) {
                    let limit = table.settled_ages[settled_index(code, direction)];
                    let settles = state_from_code(u64::from(code)).is_some()
                        && leaves_as_is(code, direction, flags);
                    let timeout = table.code_timeouts[usize::from(code & 7)];
                    for age in [0, 1, 9, 10, 11, 40, 41, u64::MAX - 1] {
                        let want = settles && age <= timeout;
                        let settled = quiet(flags) && age < limit;
                        // A quiet packet exactly as the general path; a noisy one never (it
                        // may move a TCP flow; the general path takes it).
                        assert_eq!(
                            settled,
                            want && quiet(flags),
                            "{code} {direction:?} {flags:?} {age}"
                        );
                        // What a noisy packet gives up is only a UDP flow's codes (5, 6) with TCP
                        // flags, which a TCP packet's probe never matches (the protocol).
                        assert!(quiet(flags) || !leaves_as_is(code, direction, flags) || code >= 5);
                    }
                }
            }
        }
    }

    #[test]
    fn code_timeouts_are_the_state_timeouts() {
        let timeouts = [0, 1, 2, 3, 4, 5];
        let table = Table::<V4>::new(1, 1, timeouts);
        for code in 0..CODE_ENTRIES as u64 {
            let want = state_from_code(code).map_or(0, |state| timeouts[timeout_index(state)]);
            assert_eq!(table.code_timeouts[code as usize], want, "code {code}");
        }
    }

    #[test]
    fn records_and_buckets_are_one_cache_line() {
        assert_eq!(std::mem::size_of::<Record<V4>>(), 64);
        assert_eq!(std::mem::align_of::<Record<V4>>(), 64);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(SlotFormat::for_records(100_000).record_bits, 17);
        assert_eq!(SlotFormat::for_records(1).record_bits, 1);
        assert_eq!(SlotFormat::for_records(1 << 20).record_bits, 20);
    }

    #[test]
    fn state_codes_round_trip_and_zero_is_a_free_record() {
        for state in FlowState::ALL {
            assert_eq!(state_from_code(state_word(42, state)), Some(state));
            assert!(timeout_index(state) < TIMEOUT_ENTRIES);
        }
        assert_eq!(state_from_code(42 << 8), None);
    }

    #[test]
    fn free_position_is_the_first_free_slot_but_the_excluded_one() {
        let table = Table::<V4>::new(64, 2, [0; TIMEOUT_ENTRIES]);
        let slot = |record| SlotRef { tag: 1, direction: Direction::Original, record };
        // Bucket 1's first two slots taken.
        table.publish(BUCKET_SLOTS, slot(1));
        table.publish(BUCKET_SLOTS + 1, slot(2));
        let first_free = BUCKET_SLOTS + 2;
        assert_eq!(table.free_position(1, None), Some(first_free));
        assert_eq!(table.free_position(1, Some(first_free)), Some(first_free + 1));
        // Excluding a taken slot or another bucket's changes nothing.
        assert_eq!(table.free_position(1, Some(BUCKET_SLOTS)), Some(first_free));
        assert_eq!(table.free_position(1, Some(2)), Some(first_free));
        assert_eq!(table.free_position(0, Some(first_free)), Some(0));
        assert_eq!(table.free_position(0, Some(0)), Some(1));
        // The bucket's last free slot, excluded, leaves none; a bucket out of range has none.
        let last = 2 * BUCKET_SLOTS - 1;
        for position in first_free..last {
            table.publish(position, slot(3));
        }
        assert_eq!(table.free_position(1, None), Some(last));
        assert_eq!(table.free_position(1, Some(last)), None);
        assert_eq!(table.free_position(2, None), None);
    }

    #[test]
    fn write_and_clear_move_generations_and_fail_stale_transitions() {
        let table = Table::<V4>::new(4, 1, [0; TIMEOUT_ENTRIES]);
        let flow = Flow {
            proto: Proto::Tcp,
            forward: ForwardMode::Nat,
            client_addr: Ipv4Addr::new(10, 0, 0, 1),
            vip: Ipv4Addr::new(10, 0, 0, 2),
            backend_addr: Ipv4Addr::new(10, 0, 0, 3),
            local_addr: Ipv4Addr::new(10, 0, 0, 1),
            client_port: 1000,
            vport: 80,
            backend_port: 80,
            local_port: 1000,
            service: 1,
            backend: 2,
        };
        let record = table.record(3).unwrap();
        assert_eq!(record.snapshot().unwrap().flow(), None);
        table.write_record::<false>(3, &flow, FlowState::SynSeen, 7, (5, Some(6)));
        let view = record.snapshot().unwrap();
        assert_eq!(view.flow(), Some(flow));
        assert_eq!(view.state(), Some(FlowState::SynSeen));
        assert_eq!((view.last_seen, record.positions()), (7, (5, Some(6))));
        assert_eq!(view.key(Direction::Original), Some(flow.original_key()));
        assert_eq!(view.key(Direction::Reply), flow.reply_key());
        assert_eq!(table.embryonic(), 1);

        assert_eq!(table.clear_record(3), Some(FlowState::SynSeen));
        assert_eq!(table.embryonic(), 0);
        let cleared = record.snapshot().unwrap();
        assert_eq!(cleared.flow(), None);
        assert!(cleared.generation > view.generation);
        // A transition computed from the old snapshot must not apply to the freed record.
        assert_eq!(record.advance(view.generation, view.state_word, |_| FlowState::Closed), None);
        assert_eq!(record.snapshot().unwrap().state(), None);

        // A lookup through a slot that still points at the freed record misses.
        let key = flow.original_key();
        let (bucket, tag) =
            table.place(crate::hash::table_hash(&crate::hash::TableSecret::fixed(1), &key));
        let slot = SlotRef { tag, direction: Direction::Original, record: 3 };
        table.publish(bucket * BUCKET_SLOTS, slot);
        assert!(
            table
                .lookup(&key, crate::hash::table_hash(&crate::hash::TableSecret::fixed(1), &key))
                .is_none()
        );
        table.write_record::<false>(3, &flow, FlowState::Udp, 9, (bucket * BUCKET_SLOTS, None));
        let found = table
            .lookup(&key, crate::hash::table_hash(&crate::hash::TableSecret::fixed(1), &key))
            .unwrap();
        assert_eq!(
            (found.index, found.view.flow(), found.direction),
            (3, Some(flow), Direction::Original)
        );
        // The reply key is not indexed (no reply slot published).
        let reply = flow.reply_key().unwrap();
        assert!(
            table
                .lookup(
                    &reply,
                    crate::hash::table_hash(&crate::hash::TableSecret::fixed(1), &reply)
                )
                .is_none()
        );
        table.unpublish(bucket * BUCKET_SLOTS);
        assert!(
            table
                .lookup(&key, crate::hash::table_hash(&crate::hash::TableSecret::fixed(1), &key))
                .is_none()
        );
    }
}
