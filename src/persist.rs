//! Persistence templates (IPVS's `ipvsadm -p [timeout] -M netmask`): while a template for
//! (service, masked client address) lives, every new connection of that client — on any
//! core, whatever the service's scheduler — goes to the real server the template names.
//!
//! # Why a shared table
//!
//! xlb runs one worker per queue, and RSS spreads one client's connections (different
//! source ports) over the queues: per-core templates would send them to different real
//! servers. A deterministic choice without state (hash the masked client address over the
//! live backends, as `sh` or Maglev do) keeps a client on one server only while the set of
//! backends and their weights do not move, and it cannot follow what `rr`, `wrr`, `lc` or
//! `wlc` picked for the first connection. IPVS's templates remember the pick itself; so does
//! this table, which every worker reads and writes without a lock.
//!
//! # The table
//!
//! A fixed power-of-two array of slots (64 bytes each), allocated once. A key hashes (keyed with a
//! per-table seed, so a client cannot aim at a slot) to a home slot and may live in any of
//! the [`WINDOW`] slots from there (wrapping). A slot's `word` says what it holds:
//! `0` (never used), or the key's 47-bit tag and a 16-bit version, with the top bit
//! [`BUSY`] set while one worker writes the slot.
//!
//! - **Claim**: a worker that finds no live template for its key claims, by one CAS from
//!   the word it saw, the first slot of the window that holds its own key's dead or stale
//!   template, else the first that is free or expired; it writes the fields and publishes
//!   them by storing the word without `BUSY` (Release). A claim bumps the version.
//! - **Read**: a word without `BUSY` and with the key's tag is loaded (Acquire); the fields
//!   are read; the word is loaded again: a changed word (a claim in between) means a torn
//!   read, which is retried. Service and client are compared in full (the tag only
//!   narrows), so two keys never share a template.
//! - **Racing inserts** of one key: both look at the same window and CAS the same first
//!   free slot; one wins, the other sees the winner's `BUSY` word with its key's tag, waits
//!   for it (a bounded spin: the winner writes five words) and follows what it published.
//!   If the winner is preempted for the whole spin, the waiter schedules on its own without
//!   a template ([`Claim::Busy`], counted). Left over is a narrower race: a slot earlier in
//!   the window expires between the two scans, so the two claim different slots; then the
//!   two racing connections may go to different servers, and every later lookup follows
//!   the earlier slot of the window (reads scan in window order), so the client settles on
//!   one server from its next connection on.
//! - **Refresh**: each new connection that follows a template pushes its expiry to
//!   `now + timeout` (`fetch_max`: never backwards); so does control's walk of the
//!   connection tables for every template that still has a connection
//!   ([`Templates::keep_alive`]), so a template lives while it has connections, then
//!   `timeout`, as IPVS's.
//!
//! # Invariants
//!
//! - Bounded: the table never grows; a key is only ever placed in its own window.
//! - A live template (expiry in the future) is never evicted by another key. When a key's
//!   window holds [`WINDOW`] live templates of other keys, the claim is refused
//!   ([`Claim::Full`], counted by the caller) and the connection is scheduled without a
//!   template. So a flood of random source addresses can fill free slots for `timeout`
//!   seconds but cannot push out the templates clients already have; new clients whose
//!   window is full go unpersisted until templates expire.
//! - Expiry is lazy: an expired slot is free for any key's claim; nothing sweeps.
//! - The table knows addresses and ports, not snapshots: whether the real server a
//!   template names still serves (it is still in the service, and not down by health check)
//!   is the caller's to judge, by identity, after every read ([`Templates::replace`] when
//!   it does not).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hash::{hash2, mix64};
use crate::time::Instant;

/// Slots a key may live in, from its home slot on.
pub const WINDOW: usize = 8;
/// The slot count [`Templates::with_default_capacity`] allocates (64 bytes each: 4 MiB).
pub const DEFAULT_CAPACITY: usize = 1 << 16;
/// The top bit of a slot's word: a worker is writing the slot.
pub const BUSY: u64 = 1 << 63;
const TAG_BITS: u64 = (1 << 47) - 1;
const VERSION_SHIFT: u32 = 47;
const VERSION_MASK: u64 = 0xffff;
/// How long a worker waits for another to publish the slot it is writing (spin rounds).
const SPINS: usize = 4096;
/// Scans of the window before a claim that keeps losing its CAS gives up.
const ATTEMPTS: usize = 4;

/// What a template is for: a service and a client's masked address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// The service's tag ([`service_tag`]), unique per VIP:port/proto.
    pub service: u64,
    /// The client address with the service's mask applied, as an integer (IPv4 in the low
    /// 32 bits).
    pub client: u128,
}

/// The real server a template names: its address (as [`TemplateKey::client`]) and port,
/// and where it was in the snapshot that made the template (a hint; the caller checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chosen {
    pub addr: u128,
    pub port: u16,
    pub hint: u32,
}

/// One template slot: one cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot {
    /// 0, or tag | version << 47 (| [`BUSY`] while written). Written by the claiming
    /// worker (CAS to `BUSY`, then a Release store that publishes the fields); every reader
    /// loads it with Acquire before the fields and again after them.
    word: AtomicU64,
    /// The expiry in nanoseconds ([`Instant`]): written by the claimer, pushed forward by
    /// any worker that follows the template (`fetch_max`).
    expires: AtomicU64,
    /// The fields below are written only while `word` has [`BUSY`].
    service: AtomicU64,
    client: [AtomicU64; 2],
    backend: [AtomicU64; 2],
    /// port | hint << 16.
    meta: AtomicU64,
}

/// What [`Templates::find_or_claim`] found.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Claim {
    /// A live template: follow it (after checking its real server still serves; then
    /// [`Templates::refresh`]).
    Follow(Found),
    /// No live template; this worker holds a slot for the key: pick a real server and
    /// [`Templates::fill`] it, or [`Templates::abandon`] it.
    Claimed(Claimed),
    /// Another worker is writing this key's template and did not finish in time.
    Busy,
    /// Every slot of the key's window holds another key's live template.
    Full,
}

/// A live template as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub chosen: Chosen,
    slot: usize,
    word: u64,
}

/// A slot this worker claimed (its word has [`BUSY`]): fill or abandon it.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Claimed {
    slot: usize,
    word: u64,
}

/// A live template, for listings (`xlb ctl -L -c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: TemplateKey,
    pub chosen: Chosen,
    /// Time until it expires.
    pub remaining: Duration,
}

/// A service's persistence as configured (`persistence = 300`, `persistence_mask`;
/// ipvsadm's `-p 300 -M 255.255.255.0`): how long a template outlives its last new
/// connection, and how many leading bits of the client address it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: Duration,
    /// 1 to 32 (IPv4) or 128 (IPv6); the family's full length by default (IPVS's
    /// 255.255.255.255 and /128).
    pub prefix_len: u8,
}

impl Persistence {
    /// `ipvsadm -p` without a value (ipvsadm's default: 300 seconds).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    /// ipvsadm's largest `-p`: 31 days.
    pub const MAX_TIMEOUT_SECS: u64 = 31 * 86_400;
}

/// A snapshot service's persistence: its timeout, its client mask for the service's family
/// (as an integer, IPv4 in the low 32 bits) and its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePersistence {
    pub timeout: Duration,
    /// The configured mask's length (for listings).
    pub prefix_len: u8,
    pub mask: u128,
    pub service: u64,
}

impl ServicePersistence {
    /// For the service at `vip`:`port`/`proto` (its protocol number).
    pub fn new(vip: std::net::IpAddr, port: u16, proto: u8, p: Persistence) -> Self {
        let (vip, bits) = match vip {
            std::net::IpAddr::V4(vip) => (u128::from(vip.to_bits()), 32u32),
            std::net::IpAddr::V6(vip) => (vip.to_bits(), 128),
        };
        let kept = u32::from(p.prefix_len).min(bits);
        let full = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        let mask = full & !(full >> kept);
        let service = service_tag(vip, port, proto);
        ServicePersistence { timeout: p.timeout, prefix_len: p.prefix_len, mask, service }
    }

    /// The template key of a client (its address as an integer).
    #[inline]
    pub fn key(&self, client: u128) -> TemplateKey {
        TemplateKey { service: self.service, client: client & self.mask }
    }
}

/// The shared template table (module docs).
#[derive(Debug)]
pub struct Templates {
    slots: Box<[Slot]>,
    mask: usize,
    seed: u64,
}

/// The tag of a service, from its VIP (as an integer), port and protocol number: what
/// [`TemplateKey::service`] holds.
pub fn service_tag(vip: u128, port: u16, proto: u8) -> u64 {
    hash2(
        0x7065_7273_6973_7421,
        (vip >> 64) as u64 ^ mix64(vip as u64),
        u64::from(port) << 8 | u64::from(proto),
    )
}

impl Templates {
    /// A table of `capacity` slots (rounded up to a power of two, at least [`WINDOW`]),
    /// keyed with `seed`.
    pub fn new(capacity: usize, seed: u64) -> Templates {
        let capacity = capacity.max(WINDOW).next_power_of_two();
        let slots = (0..capacity).map(|_| Slot::default()).collect();
        Templates { slots, mask: capacity - 1, seed }
    }

    /// [`DEFAULT_CAPACITY`] slots keyed with a seed from the OS (std's `RandomState`).
    pub fn with_default_capacity() -> Templates {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x7465_6d70);
        Templates::new(DEFAULT_CAPACITY, hasher.finish())
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The key's home slot and tag.
    #[inline]
    fn place(&self, key: &TemplateKey) -> (usize, u64) {
        let hash = hash2(self.seed ^ key.service, (key.client >> 64) as u64, key.client as u64);
        let tag = (hash & TAG_BITS).max(1);
        ((mix64(hash) as usize) & self.mask, tag)
    }

    /// Reads slot `index` whose word was `word` (no [`BUSY`]): its key and choice, or
    /// `None` if a claim changed it meanwhile.
    #[inline]
    fn read(&self, index: usize, word: u64) -> Option<(TemplateKey, Chosen)> {
        let slot = &self.slots[index];
        let key = TemplateKey {
            service: slot.service.load(Ordering::Relaxed),
            client: join(&slot.client),
        };
        let meta = slot.meta.load(Ordering::Relaxed);
        let chosen =
            Chosen { addr: join(&slot.backend), port: meta as u16, hint: (meta >> 16) as u32 };
        // Pairs with the claimer's Release fence after its CAS: if a field load above saw a
        // claim's write, this load of the word sees that claim's word (or a later one).
        std::sync::atomic::fence(Ordering::Acquire);
        (slot.word.load(Ordering::Relaxed) == word).then_some((key, chosen))
    }

    /// Looks for `key`'s live template; claims a slot for it when there is none (module
    /// docs: claim, racing inserts, full windows).
    pub fn find_or_claim(&self, now: Instant, key: &TemplateKey) -> Claim {
        let (home, tag) = self.place(key);
        let now = now.as_nanos();
        'attempt: for _ in 0..ATTEMPTS {
            // The first free or expired slot, and this key's own dead template if any.
            let mut free: Option<(usize, u64)> = None;
            let mut own: Option<(usize, u64)> = None;
            for step in 0..WINDOW {
                let index = (home + step) & self.mask;
                let slot = &self.slots[index];
                // Pairs with the Release store that publishes a claim's fields.
                let word = slot.word.load(Ordering::Acquire);
                if word == 0 {
                    free.get_or_insert((index, word));
                    continue;
                }
                let expired = slot.expires.load(Ordering::Relaxed) <= now;
                if word & TAG_BITS != tag {
                    if expired && word & BUSY == 0 {
                        free.get_or_insert((index, word));
                    }
                    continue;
                }
                if word & BUSY != 0 {
                    // Another worker writes a template with this tag: wait for it, then
                    // look again (it is this key's, most likely).
                    self.wait(index, word);
                    continue 'attempt;
                }
                let Some((found, chosen)) = self.read(index, word) else { continue 'attempt };
                if found != *key {
                    if expired {
                        free.get_or_insert((index, word));
                    }
                    continue;
                }
                if !expired {
                    return Claim::Follow(Found { chosen, slot: index, word });
                }
                own.get_or_insert((index, word));
            }
            let Some((index, seen)) = own.or(free) else { return Claim::Full };
            match self.claim(index, seen, tag) {
                Some(claimed) => return Claim::Claimed(claimed),
                None => continue 'attempt,
            }
        }
        Claim::Busy
    }

    /// CAS slot `index` from `seen` to this key's busy word.
    #[inline]
    fn claim(&self, index: usize, seen: u64, tag: u64) -> Option<Claimed> {
        let version = ((seen >> VERSION_SHIFT) + 1) & VERSION_MASK;
        let word = BUSY | version << VERSION_SHIFT | tag;
        self.slots[index]
            .word
            .compare_exchange(seen, word, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        // Orders the field stores of `fill` after the BUSY word (a seqlock's writer side):
        // a reader that sees one of them sees the word changed on its second load.
        std::sync::atomic::fence(Ordering::Release);
        Some(Claimed { slot: index, word })
    }

    /// Spins (bounded) while slot `index` still has the busy `word`.
    fn wait(&self, index: usize, word: u64) {
        for _ in 0..SPINS {
            if self.slots[index].word.load(Ordering::Acquire) != word {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Writes the claimed slot's template and publishes it, to expire at `expires`.
    pub fn fill(&self, claimed: Claimed, key: &TemplateKey, chosen: Chosen, expires: Instant) {
        let slot = &self.slots[claimed.slot];
        slot.service.store(key.service, Ordering::Relaxed);
        split(&slot.client, key.client);
        split(&slot.backend, chosen.addr);
        slot.meta.store(u64::from(chosen.port) | u64::from(chosen.hint) << 16, Ordering::Relaxed);
        slot.expires.store(expires.as_nanos(), Ordering::Relaxed);
        // Pairs with the Acquire loads of readers: the fields above are visible to whoever
        // sees the word without BUSY.
        slot.word.store(claimed.word & !BUSY, Ordering::Release);
    }

    /// Gives a claimed slot up (no real server to name): it is free again.
    pub fn abandon(&self, claimed: Claimed) {
        self.slots[claimed.slot].expires.store(0, Ordering::Relaxed);
        // Pairs with the readers' Acquire loads; a free slot has no fields to read.
        self.slots[claimed.slot].word.store(0, Ordering::Release);
    }

    /// A followed template lives until at least `expires` (IPVS restarts a template's
    /// timer with each connection it controls). A template claimed again meanwhile is left
    /// alone.
    pub fn refresh(&self, found: &Found, expires: Instant) {
        let slot = &self.slots[found.slot];
        if slot.word.load(Ordering::Relaxed) == found.word {
            slot.expires.fetch_max(expires.as_nanos(), Ordering::Relaxed);
        }
    }

    /// A template whose real server no longer serves: claims its slot again for a new
    /// pick (or, if another worker got there first, whatever [`Templates::find_or_claim`]
    /// finds now).
    pub fn replace(&self, now: Instant, key: &TemplateKey, found: &Found) -> Claim {
        match self.claim(found.slot, found.word, found.word & TAG_BITS) {
            Some(claimed) => Claim::Claimed(claimed),
            None => match self.find_or_claim(now, key) {
                // Still the stale one (a refresh raced the CAS): give up on persistence
                // for this connection rather than loop.
                Claim::Follow(again) if again.chosen == found.chosen => Claim::Busy,
                other => other,
            },
        }
    }

    /// A template that still has connections lives on (IPVS keeps a template while it
    /// controls connections): `key`'s template, if it names `chosen`'s real server (address
    /// and port), expires no earlier than `expires`. An expired template not yet claimed
    /// again comes back. Returns whether there was one. For control's periodic walk of the
    /// connection tables, not the packet path.
    pub fn keep_alive(&self, key: &TemplateKey, chosen: &Chosen, expires: Instant) -> bool {
        let (home, tag) = self.place(key);
        for step in 0..WINDOW {
            let index = (home + step) & self.mask;
            let word = self.slots[index].word.load(Ordering::Acquire);
            if word & (BUSY | TAG_BITS) != tag {
                continue;
            }
            let Some((found, named)) = self.read(index, word) else { continue };
            if found == *key && named.addr == chosen.addr && named.port == chosen.port {
                self.slots[index].expires.fetch_max(expires.as_nanos(), Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Every live template at `now`, in slot order (for listings; a template being written
    /// is left out).
    pub fn entries(&self, now: Instant) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let word = slot.word.load(Ordering::Acquire);
            let expires = slot.expires.load(Ordering::Relaxed);
            if word == 0 || word & BUSY != 0 || expires <= now.as_nanos() {
                continue;
            }
            if let Some((key, chosen)) = self.read(index, word) {
                let remaining = Duration::from_nanos(expires - now.as_nanos());
                entries.push(Entry { key, chosen, remaining });
            }
        }
        entries
    }
}

fn join(words: &[AtomicU64; 2]) -> u128 {
    u128::from(words[0].load(Ordering::Relaxed)) << 64
        | u128::from(words[1].load(Ordering::Relaxed))
}

fn split(words: &[AtomicU64; 2], value: u128) {
    words[0].store((value >> 64) as u64, Ordering::Relaxed);
    words[1].store(value as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
