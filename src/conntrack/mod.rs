//! Per-core connection tracking: lock-free, bounded, flood-aware.
//!
//! A [`Conntrack`] remembers, for each flow a worker core has scheduled, which backend it went
//! to and how far its TCP connection has got, so every later packet of the flow reaches the
//! same backend and NAT replies can be rewritten back.
//!
//! # Per-core tables, readable by every core
//!
//! Each worker owns one `Conntrack` and is the only core that writes it (`&mut self`). Katran
//! (per-CPU LRU maps), DPVS (per-lcore connection tables) and Maglev (per-packet-thread
//! tables) do the same: with RSS keeping a flow on one queue, a per-core table has no
//! cross-core cache-line traffic on the hot path. The one packet that needs another core's
//! table is a NAT/FullNAT *reply* that RSS delivered to a different queue than its request;
//! for it, [`Conntrack::reader`] hands out [`ConntrackReader`]s (`Clone + Send + Sync`) that
//! other cores use to look a key up in this table without a lock.
//!
//! # Storage
//!
//! Everything is allocated in [`Conntrack::new`]; nothing is allocated afterwards, so memory is
//! bounded by the configuration. Every shared word is an atomic; the only `unsafe` is the
//! prefetch hint of "Batches".
//!
//! - **Records**: exactly `capacity` flow records, each one 64-byte cache line of `AtomicU64`
//!   words holding the whole [`Flow`], its TCP state, its last-seen time and a seqlock version
//!   (IPv4; IPv6 in "Address families" below).
//!   Free records sit on the owner's free list, so `len() <= capacity` by construction. Beside
//!   them, owner-only, the eviction queues (see "Full tables and floods").
//! - **Index**: a set-associative table of 16-slot buckets (one cache line each). A key's hash
//!   ([`crate::hash::table_hash`]) picks one bucket and nothing probes beyond it. A slot is a
//!   32-bit word: a fingerprint of the hash, the direction, and a record index. A flow has one
//!   slot per direction it can be seen in: DR only the original direction
//!   (`client:port -> vip:port`), NAT and FullNAT also the reply direction (see
//!   [`Flow::reply_key`]). Keys are never stored: a lookup compares the fingerprint, then the
//!   key with the record's packed flow words for the slot's direction (three word compares
//!   for IPv4, six for IPv6: a family's probe, `layout.rs`). Removing or evicting a flow
//!   frees its record and both its slots. Beside each bucket the owner keeps its occupancy
//!   (16 bits, one per slot, exact): the owner's scans (a batch's record pass past the
//!   bucket's first four slots, the insert's free slot, the sweep) read only used slots.
//!
//! `table.rs` has the word layouts, the seqlock protocol and the orderings. The index has four
//! slots per flow of capacity (rounded up to a power of two of buckets), so a table full of
//! NAT flows is at most half-loaded: a set-associative table with no probing refuses inserts
//! into full buckets long before it is full overall. The sizes were chosen by measurement
//! (`conntrack_fill_report`: 100 000 random all-NAT flows filling `capacity`): 16-slot
//! buckets with 4 slots per flow refused 0.013 % of the inserts (89 bytes per flow of
//! capacity); 2 slots per flow, 5.4 % (78 bytes); with 64-bit slots, 8-slot buckets refused
//! 0.36 % and 4-slot buckets 3.4 %. Pure DR tables never met a full bucket.
//!
//! This layout refines the one first planned, where every index slot was a 64-byte line
//! holding its own copy of the flow (with the state in the original direction's copy and a
//! link between the two): that design measured 357 bytes per flow, 62–78 ns per `track` hit
//! at 100 000 flows (its 33 MiB did not fit the L3 cache), 147 ns per DR insert and 282 ns per
//! NAT insert, against the figures under "Speed" below. Storing a flow once also keeps one
//! copy of its state, so the two directions need no link to stay in step.
//!
//! # Keyed placement
//!
//! The hash that picks a key's bucket and fingerprint ([`Conntrack::hash`]) is
//! [`crate::hash::table_hash`] keyed with the table's [`TableSecret`], given at construction
//! ([`ConntrackConfig::secret`]): a daemon's tables all get [`TableSecret::process`], 128
//! bits drawn from the OS once per process, so one core's hash finds a flow in another
//! core's table, and the owner reads the secret from its own struct (two loads per hash, no
//! global). With a public hash, a client that reads the code could choose source ports
//! (and addresses) whose flows share one bucket: 16 completed handshakes, which "Full
//! tables and floods" never evicts, pin it full, and every NAT/FullNAT flow of anyone else
//! whose key lands there is refused (`refused_full`); shared fingerprints also lengthen
//! lookups. Under an unknown secret the client cannot find such keys. Only placement is
//! keyed: backends are picked by the unkeyed, pinned [`crate::hash::flow_hash`], which must
//! agree across boxes and restarts. Tests and benchmarks that must place flows the same way
//! every run use [`TableSecret::fixed`].
//!
//! # Address families
//!
//! The table is generic over the address family ([`Layout`], implemented for
//! [`crate::family::V4`] and [`crate::family::V6`]): `Conntrack<V4>` (the default, so
//! `Conntrack` is IPv4's table) and `Conntrack<V6>` are separate tables, as Katran keeps
//! separate maps; a flow never moves between them. The code is written once and
//! monomorphised, so nothing on the packet path branches on the family. What differs is the
//! record's flow words (`layout.rs`): IPv4 packs a flow into 4 words and its record stays
//! the one cache line described here, bit for bit; IPv6 packs it into 10 (the four 16-byte
//! addresses alone are 8 words), so its record is two cache lines (`repr(align(64))`, 128
//! bytes: version, 10 flow words, state, last-seen, positions, then padding). Two lines
//! because one cannot hold four IPv6 addresses beside the seqlock and state words, and
//! nothing smaller would do: a record must hold the whole flow for a reader to copy it
//! under the seqlock, and keys are compared against the record, never stored in the index.
//! A hit therefore reads three lines instead of two (the batch prefetches both record
//! lines), and IPv6's table costs 128 instead of 64 bytes per record. Everything else (the
//! index, the seqlock protocol, the owner's quick path, the flood policy, the queues, the
//! sweep) is the same code.
//!
//! # Concurrency
//!
//! The owner is the only writer of the flow words, the versions, the index slots and the
//! free list; it writes a record under the record's seqlock and publishes its slots after
//! (Release). Since it never looks a record up from inside its own write section, the owner
//! reads records with plain loads, without the seqlock. A reader copies a record under the seqlock, retries a bounded number of times
//! while the owner is mid-write, and otherwise reports a miss. Readers change only two words
//! of a live record, each with an atomic read-modify-write: the state (a compare-and-swap that
//! only succeeds within the generation the reader saw, so it can never change the state of a
//! flow that has replaced the one it looked up) and last-seen (`fetch_max`). Two benign races
//! remain, by design:
//! - a reader's `fetch_max` of last-seen can land on a record the owner reused a moment
//!   earlier; it then marks the new flow as seen "now", which it just was;
//! - the owner refreshes last-seen with a plain store (no locked instruction on its hot
//!   path), which can overwrite a reader's refresh made at the same moment with its own
//!   equally recent timestamp.
//!
//! A reader that read a record just before the owner removed the flow may still return that
//! flow (the lookup happened before the removal), but its state transition then fails and it
//! reports a miss. The embryonic count is an atomic changed only by whoever moves a flow into
//! or out of `SynSeen`; the owner's removal swaps the state word, so the count stays exact
//! even against a reader's racing transition. A `ConntrackReader` keeps the storage alive
//! (`Arc`) even if the owner drops it.
//!
//! # TCP state and timeouts
//!
//! Each flow has one [`FlowState`], shared by its two directions, driven by the flags of each
//! packet (see `tcp.rs`; IPVS-like, simplified). Each state has its own timeout
//! ([`Timeouts`]: IPVS's established/FIN/UDP values and DPVS's SYN value). A flow whose last
//! packet is older than its state's timeout is *expired*: lookups treat it as a miss. Expired
//! flows are physically removed by [`Conntrack::sweep`] (a few buckets per poll iteration, so
//! there is no timer wheel), by [`Conntrack::insert`] when it needs the slot or the key, and by
//! [`Conntrack::remove`]; every removal is reported to the caller so it can keep per-backend
//! connection counts. ([`Conntrack::track`] leaves an expired entry where it is because it has
//! no way to report the removal; the insert that usually follows the miss removes it.)
//!
//! # Full tables and floods
//!
//! A flood of spoofed packets must churn only flood entries: real clients keep being served
//! in every forwarding mode, and a flow that has shown it is real is never evicted. What
//! counts as shown: a TCP handshake completed (the client's ACK, which a spoofer that never
//! sees the SYN-ACK cannot time; xlb does not check sequence numbers, so this is the IPVS
//! level of proof, not a SYN cookie's), or a UDP flow's backend having answered. So the
//! *evictable* flows are the embryonic TCP flows (`SynSeen`) and the *unreplied* UDP flows
//! (no packet seen from the backend yet; a DR flow, whose replies bypass xlb, stays
//! unreplied for life and is evictable: in DR an evicted UDP flow is scheduled again by
//! its next packet). Everything else is kept until it expires.
//!
//! The owner keeps the evictable flows in first-in-first-out queues, one per class
//! (`queues.rs`; an owner-only array of links beside the records, 12 bytes per record, so
//! the shared records and their layout are unchanged). Readers on other cores never touch
//! them: when a reader moves a flow out of its class (a completed handshake, a UDP reply
//! arriving on another core), the owner re-files it when it meets it at a queue's head, at
//! most [`SETTLE_LIMIT`] per victim search, so one insert does bounded work. Evicting is
//! the same removal as expiry (the record is cleared under its seqlock, then its slots
//! unpublished): a reader that found the flow just before sees it gone, never a torn
//! record.
//!
//! The rules, in the order an insert applies them:
//! 1. **The SYN bound.** At most `max_embryonic` flows are embryonic. At the bound, a new DR
//!    SYN is refused with [`InsertError::Flood`] (`refused_flood`): the caller forwards it
//!    by stateless consistent hashing (Katran's policy), which never breaks a handshake. NAT
//!    and FullNAT cannot translate without state, so there the new SYN takes the place of
//!    the oldest embryonic flow (`evicted_embryonic`). Under a flood of R SYNs a second, a
//!    real client's embryonic flow then lives about `max_embryonic / R` seconds: its
//!    handshake completes if its round trip is shorter (4096 at 200 000 SYNs/s: 20 ms).
//! 2. **A full table** (every record in use) gives up, in this order: an expired flow with a
//!    slot in one of the new flow's buckets (`expired`); the older, by last-seen, of the
//!    oldest embryonic flow and the oldest unreplied UDP flow (`evicted_embryonic`,
//!    `evicted_udp`); while UDP flows hold more than half the table, the oldest *replied* UDP
//!    flow (`evicted_udp`: a spoofed UDP flood to a server that answers everyone, DNS say,
//!    makes replied flows too, and UDP must not starve TCP). Else the insert is refused with
//!    [`InsertError::Full`] (`refused_full`).
//! 3. **A full bucket** (the set-associative index refuses a key whose bucket's 16 slots are
//!    taken, rare with 4 slots per flow) gives up an expired flow in it, else its least
//!    recently seen evictable flow; else `Full`.
//!
//! FullNAT's local ports follow the same rule ([`Conntrack::allocate_local_port`]): when
//! every candidate port is held, the least recently seen evictable holder gives its port
//! back, so a flood cannot exhaust the port pool while real flows wait.
//!
//! The limits this policy leaves: a SYN flood at rate R can still deny a NAT client whose
//! handshake takes longer than `max_embryonic / R` (only a SYN proxy answering with cookies,
//! as DPVS's does, would remove that); a spoofer that sends SYN then ACK for the same tuple
//! completes a "handshake" xlb accepts (the pipeline never inserts a TCP packet without SYN,
//! so this takes two packets per entry, and such flows are held for the established
//! timeout); and an eviction made for an insert that a full bucket then refuses is not
//! undone (rule 1 or 2 before rule 3; rare, counted).
//!
//! # Speed
//!
//! `conntrack_speed_report` (an ignored test: `cargo test --release --lib
//! conntrack_speed_report -- --ignored --nocapture`) measured, on this project's 2-vCPU AMD
//! EPYC (Zen 5) KVM guest shared with other jobs, with 100 000 flows and keys in random order
//! (three runs): DR insert 35–41 ns, `track` hit 40–41 ns, miss 13–14 ns; NAT insert 68–70 ns,
//! hit 38–40 ns, a reader's hit on the reply key 48–51 ns; 89 bytes of table per flow of
//! capacity (101 since the eviction queues' 12 bytes per record). A hit among 1 000 cache-resident flows takes 20 ns. A random hit at 100 000
//! flows is two dependent cache misses (the index line, then the record line, in 8.5 MiB that
//! does not fit the 2 MiB L2), which is what keeps it above 30 ns when packets are looked up
//! one at a time.
//!
//! The eviction queues (issue 10) left these figures alone: side by side on the 2-vCPU AMD
//! EPYC guest, heavily shared that day (so every figure ran 1.5–3 times the above), the
//! report gave, before / after, DR insert 169 / 147 ns, hit 115 / 104 ns (cache-resident
//! 34 / 28 ns), miss 26 / 24 ns; NAT insert 99 / 106 ns, hit 80 / 72 ns: noise, not a
//! trend. A hit adds one well-predicted branch (did the packet move the flow's eviction
//! class?), an embryonic or UDP insert one queue push.
//!
//! An owner's hit is answered by a quick path (`table::Table::owner_quick`, issue 11): the
//! candidate slot the batch found (or one scan of the bucket), one read of the record's
//! words, the timeout looked up by the state word's code, and a test that the packet leaves
//! the flow as it is (no SYN, FIN or RST on a TCP flow past the handshake; any packet of a
//! replied UDP flow or the original direction of an unreplied one). Only then is last-seen
//! refreshed and the [`Hit`] built. The few packets per connection that may move the state
//! (or mark a UDP flow replied) go, having changed nothing, to the general path
//! (`track`, out of line), which gives the same answer it always did.
//!
//! # Batches
//!
//! A poll loop gets packets in batches (64 here) and overlaps their cache misses the way
//! DPDK's `rte_hash_lookup_bulk` and VPP's quad loops do. The pipeline runs three passes
//! over a batch (its IPv4 frames and, in IPv6's table, its IPv6 TCP/UDP frames): (1) hash every frame's key and [`Conntrack::prefetch_bucket`]; (2)
//! [`Conntrack::prepare`] each: read the bucket (by now in flight or arrived), find the first
//! slot with the key's fingerprint, prefetch the record it names and keep that slot in the
//! returned [`Prepared`]; (3) process the frames, [`Conntrack::track_prepared`] starting from
//! the kept slot instead of scanning the bucket again ([`Conntrack::track_settled`] is the
//! same lookup with its hits split: a packet that leaves its flow exactly as it was comes
//! back as [`Tracking::Settled`], the flow and the direction alone, which the pipeline
//! forwards without building and testing a [`Hit`]; every other hit is `Moved`). A bucket
//! and a record are one cache line each, so a hit costs two lines, both requested a whole
//! batch ahead.
//!
//! The prefetches are `prefetcht0` (`table::prefetch`, the one `unsafe` outside the AF_XDP
//! module: a hint that cannot fault). They replace loads sent to `black_box`, which started
//! the same lines but held up retirement until each arrived, so a pass overlapped only as
//! many misses as the reorder buffer held; with them, the record pass, which used to cost
//! more than it saved, pays.
//!
//! What a batch prepared can be stale by the time its frame is processed: an earlier frame
//! of the same batch may have inserted a flow into the bucket, or evicted the flow and reused
//! its record. So the kept slot is only a guess: it is used only if its record is live and
//! has the key in the slot's direction (keys are unique among indexed records, so that is
//! the flow a scan would find); otherwise the bucket is scanned as before. A key whose
//! bucket had no slot with its fingerprint is known absent without a second scan (a miss:
//! the new-flow path) only while no slot has been published into its bucket since
//! [`Conntrack::begin_batch`] (one bit per bucket modulo 1024, cleared per batch). Every
//! answer is the one [`Conntrack::track`] gives at that moment; the model-based property
//! tests check it with lookups prepared many operations earlier. The insert that follows a
//! miss ([`Conntrack::insert_prepared`]) reuses the same proof: a key known absent is not
//! looked up again before its slots are chosen (its reply key, if any, always is).

mod layout;
mod queues;
mod table;
mod tcp;
#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::family::{Family, V4, V6};
use crate::flow::{FlowKey, ForwardMode, Proto};
use crate::hash::{TableSecret, table_hash};
use crate::time::Instant;

pub use layout::{BackendWords, BackendWords6, Layout, Probe4, Probe6, WordArray, Words4, Words6};

use queues::{Class, Queues};
pub use table::quiet;
use table::{Access, BUCKET_SLOTS, Quick, SlotRef, TIMEOUT_ENTRIES, Table, timeout_index};

/// How long a flow may stay idle in each state before it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// SYN seen, handshake not completed.
    pub tcp_syn: Duration,
    /// Handshake completed (or picked up mid-stream).
    pub tcp_established: Duration,
    /// A FIN seen in either direction.
    pub tcp_closing: Duration,
    /// A RST seen in either direction.
    pub tcp_closed: Duration,
    /// Any UDP flow.
    pub udp: Duration,
}

impl Default for Timeouts {
    /// 30 s, 900 s, 120 s, 10 s, 300 s: IPVS's established, FIN-wait and UDP timeouts and
    /// DPVS's SYN timeout (IPVS's 60 s SYN-RECV holds flood entries twice as long).
    fn default() -> Self {
        Timeouts {
            tcp_syn: Duration::from_secs(30),
            tcp_established: Duration::from_secs(900),
            tcp_closing: Duration::from_secs(120),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(300),
        }
    }
}

impl Timeouts {
    /// The timeout of a state.
    pub const fn of(&self, state: FlowState) -> Duration {
        match state {
            FlowState::SynSeen => self.tcp_syn,
            FlowState::Established => self.tcp_established,
            FlowState::Closing => self.tcp_closing,
            FlowState::Closed => self.tcp_closed,
            FlowState::Udp => self.udp,
        }
    }

    /// In nanoseconds, indexed by `table::timeout_index` (index 0, "no flow", is 0).
    fn as_nanos_table(&self) -> [u64; TIMEOUT_ENTRIES] {
        let mut table = [0; TIMEOUT_ENTRIES];
        for state in FlowState::ALL {
            if let Some(entry) = table.get_mut(timeout_index(state)) {
                *entry = u64::try_from(self.of(state).as_nanos()).unwrap_or(u64::MAX);
            }
        }
        table
    }
}

/// The size and policy of one core's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// The most flows the table holds (clamped to [`ConntrackConfig::MAX_CAPACITY`]).
    pub capacity: usize,
    /// The most embryonic (`SynSeen`) flows inserts may create: the SYN-flood bound.
    pub max_embryonic: usize,
    /// Idle timeouts per state.
    pub timeouts: Timeouts,
    /// The secret that keys the table's hash ([`crate::hash::table_hash`]): the same for
    /// every table of the process, since cores look flows up in each other's tables with
    /// the hash they computed (see "Keyed placement" in the module docs).
    pub secret: TableSecret,
}

impl ConntrackConfig {
    /// The largest capacity a table accepts: 2^28 flows (20 GiB of table; record indices
    /// must leave room for a fingerprint in a 32-bit index slot).
    pub const MAX_CAPACITY: usize = 1 << 28;

    /// `capacity` flows, half of them at most embryonic, default timeouts, this process's
    /// secret ([`TableSecret::process`]).
    pub fn with_capacity(capacity: usize) -> Self {
        ConntrackConfig {
            capacity,
            max_embryonic: capacity / 2,
            timeouts: Timeouts::default(),
            secret: TableSecret::process(),
        }
    }

    /// The IPv6 table's capacity on a core whose first snapshot has no IPv6 service: small
    /// (half a MiB), so an IPv4-only box does not pay for a table it never uses; a reload
    /// that adds the first IPv6 service runs with it until a restart.
    pub const IPV6_IDLE_CAPACITY: usize = 4096;

    /// The config of a core's IPv6 table beside this one: the same when the box serves IPv6
    /// (`serves_ipv6`: its config has an IPv6 service), else [`Self::IPV6_IDLE_CAPACITY`]
    /// flows at most.
    pub fn for_ipv6(self, serves_ipv6: bool) -> ConntrackConfig {
        if serves_ipv6 {
            return self;
        }
        let capacity = self.capacity.min(Self::IPV6_IDLE_CAPACITY);
        ConntrackConfig { capacity, max_embryonic: self.max_embryonic.min(capacity), ..self }
    }
}

/// What the table remembers about a flow: both directions' addresses (of family `F`, IPv4 by
/// default), and which service and backend it was scheduled to.
///
/// `repr(C)` in the order of a record's flow words (`layout.rs`), little-endian. IPv4: word
/// 0 is `vip`, `client_addr`; word 1 `local_addr`, `backend_addr`; word 2 the four ports;
/// word 3 the forwarding and protocol codes, `backend`, `service`. IPv6: two words per
/// address in the same order, then the same ports word and codes word. A hit then copies the
/// record's words into its `Flow` nearly whole instead of field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Flow<F: Family = V4> {
    pub vip: F::Addr,
    pub client_addr: F::Addr,
    /// FullNAT: the local address and port xlb uses towards the backend. Otherwise unused (set to client's).
    pub local_addr: F::Addr,
    pub backend_addr: F::Addr,
    pub local_port: u16,
    pub backend_port: u16,
    pub vport: u16,
    pub client_port: u16,
    pub forward: ForwardMode,
    pub proto: Proto,
    /// Snapshot indices of the service and backend that created the flow: hints the caller validates.
    pub backend: u16,
    pub service: u16,
}

impl<F: Family> Flow<F> {
    /// client:cport -> vip:vport
    pub fn original_key(&self) -> FlowKey<F> {
        FlowKey {
            src_addr: self.client_addr,
            dst_addr: self.vip,
            src_port: self.client_port,
            dst_port: self.vport,
            proto: self.proto,
        }
    }

    /// DR, tunnel: None. NAT: backend:bport -> client:cport. FullNAT: backend:bport -> local:lport.
    pub fn reply_key(&self) -> Option<FlowKey<F>> {
        let (dst_addr, dst_port) = match self.forward {
            ForwardMode::Dr | ForwardMode::Tunnel => return None,
            ForwardMode::Nat => (self.client_addr, self.client_port),
            ForwardMode::FullNat => (self.local_addr, self.local_port),
        };
        Some(FlowKey {
            src_addr: self.backend_addr,
            dst_addr,
            src_port: self.backend_port,
            dst_port,
            proto: self.proto,
        })
    }
}

// By hand: a derive would ask `F: Hash` of the family marker, which has no values to hash.
impl<F: Family> Hash for Flow<F> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.vip.hash(state);
        self.client_addr.hash(state);
        self.local_addr.hash(state);
        self.backend_addr.hash(state);
        self.local_port.hash(state);
        self.backend_port.hash(state);
        self.vport.hash(state);
        self.client_port.hash(state);
        self.forward.hash(state);
        self.proto.hash(state);
        self.backend.hash(state);
        self.service.hash(state);
    }
}

/// Which way a tracked packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to VIP.
    Original,
    /// Backend to client (NAT) or to xlb's local address (FullNAT).
    Reply,
}

/// The state of a flow (see the module docs for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// TCP: a SYN seen, the handshake not completed (embryonic).
    SynSeen,
    /// TCP: handshake completed, or the flow was picked up mid-stream.
    Established,
    /// TCP: a FIN seen.
    Closing,
    /// TCP: a RST seen.
    Closed,
    /// UDP.
    Udp,
}

impl FlowState {
    /// Every state, in the order of the lifecycle.
    pub const ALL: [FlowState; 5] = [
        FlowState::SynSeen,
        FlowState::Established,
        FlowState::Closing,
        FlowState::Closed,
        FlowState::Udp,
    ];

    /// Whether a flow in this state is one of its backend's *active* connections as IPVS
    /// counts them (`ActiveConn`): an established TCP connection. Every other state is
    /// *inactive* (`InActConn`): the handshake (IPVS's SYN_RECV), the close (FIN_WAIT,
    /// TIME_WAIT, CLOSE...) and every UDP flow. IPVS binds every new connection inactive
    /// (`ip_vs_bind_dest`: the destination's `conn_flags` carry `IP_VS_CONN_F_INACTIVE`)
    /// and `set_tcp_state` (`ip_vs_proto_tcp.c`) moves a TCP connection to active when it
    /// enters ESTABLISHED and back when it leaves it; UDP never moves. The one definition:
    /// the schedulers' counts ([`ConnectionCount`]), `ipvsadm -L -n` and the metrics all
    /// use it.
    pub const fn is_active(self) -> bool {
        matches!(self, FlowState::Established)
    }
}

/// One backend's connections on one core as IPVS counts them: active (established TCP) and
/// inactive (the rest, [`FlowState::is_active`]), moved by the flows' inserts, state
/// changes and removals.
///
/// A core counts the changes *it* makes: the owner of a flow counts its insert and its
/// removal (in the state the flow has then, whoever moved it in between), and a core that
/// moves a flow of another core's table (a NAT reply RSS delivered to it) counts that move.
/// So one core's figures mean nothing alone and drift without bound (the mover's up, the
/// owner's down): only the sum over a box's cores is a count. The arithmetic therefore
/// wraps (two's complement, [`ConnectionCount::plus`] too): the sum is exact whatever each
/// part did, and nothing overflows or panics. [`ConnectionCount::loads`] reads a sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCount {
    pub active: i32,
    pub inactive: i32,
}

impl ConnectionCount {
    /// One more flow in `state` (an insert).
    #[inline]
    pub fn open(&mut self, state: FlowState) {
        let slot = self.slot(state);
        *slot = slot.wrapping_add(1);
    }

    /// One flow in `state` less (a removal).
    #[inline]
    pub fn close(&mut self, state: FlowState) {
        let slot = self.slot(state);
        *slot = slot.wrapping_sub(1);
    }

    /// A flow moved from `previous` to `next`.
    #[inline]
    pub fn moved(&mut self, previous: FlowState, next: FlowState) {
        if previous.is_active() != next.is_active() {
            self.close(previous);
            self.open(next);
        }
    }

    /// Both counts added, wrapping (see the type's docs).
    #[inline]
    #[must_use]
    pub const fn plus(self, other: ConnectionCount) -> ConnectionCount {
        ConnectionCount {
            active: self.active.wrapping_add(other.active),
            inactive: self.inactive.wrapping_add(other.inactive),
        }
    }

    /// Both counts less `other`'s, wrapping.
    #[inline]
    #[must_use]
    pub const fn minus(self, other: ConnectionCount) -> ConnectionCount {
        ConnectionCount {
            active: self.active.wrapping_sub(other.active),
            inactive: self.inactive.wrapping_sub(other.inactive),
        }
    }

    /// A box-wide sum as the schedulers read it: (active, inactive), a negative figure as 0.
    /// A sum goes below zero only for a backend removed and added again while flows of its
    /// first life lived (their removals are counted against the second), or for a moment
    /// while the cores run different snapshots; it never reads as a huge load.
    #[inline]
    pub const fn loads(self) -> (u32, u32) {
        (
            if self.active < 0 { 0 } else { self.active as u32 },
            if self.inactive < 0 { 0 } else { self.inactive as u32 },
        )
    }

    fn slot(&mut self, state: FlowState) -> &mut i32 {
        if state.is_active() { &mut self.active } else { &mut self.inactive }
    }
}

/// A tracked packet's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<F: Family = V4> {
    /// The direction of the packet that was looked up.
    pub direction: Direction,
    pub flow: Flow<F>,
    /// The state after this packet.
    pub state: FlowState,
    /// The state before this packet.
    pub previous: FlowState,
}

/// What [`Conntrack::track_settled`] found: [`Conntrack::track_prepared`]'s answer split by
/// whether the packet could matter to anything but forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking<F: Family = V4> {
    /// A live flow this packet leaves exactly as it was (past the handshake, or UDP; no
    /// transition, no first reply): its [`Hit`] would have `state == previous` and a state
    /// other than [`FlowState::SynSeen`], so it is the flow and the direction only. The
    /// common packet, answered from one read of the record.
    Settled { direction: Direction, flow: Flow<F> },
    /// Any other hit (the packet may have moved the flow's state; see [`Hit`]).
    Moved(Hit<F>),
    /// No live flow.
    Miss,
}

/// A key's lookup as a batch's passes left it: its hash and the index slot its bucket
/// offered (see "Batches" in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    hash: u64,
    /// The first slot word of the key's bucket with the key's fingerprint when the batch
    /// looked, 0 for none: a guess, checked against the record's key before it is used.
    candidate: u32,
    /// The batch the lookup was prepared in (`Conntrack::batch`), `u64::MAX` for a lookup
    /// nothing was prepared for. Within that batch, a candidate of 0 proves the key absent
    /// until a slot is published into its bucket.
    batch: u64,
    /// Proved absent just now ([`Conntrack::proved_absent`]): the insert that follows
    /// skips the proof.
    absent: bool,
}

impl Prepared {
    /// A lookup nothing was prepared for but the hash (= [`Conntrack::hash`] of the
    /// key).
    #[inline]
    pub const fn new(hash: u64) -> Prepared {
        Prepared { hash, candidate: 0, batch: u64::MAX, absent: false }
    }

    /// The key's [`Conntrack::hash`].
    #[inline]
    pub const fn hash(self) -> u64 {
        self.hash
    }

    /// True if the batch found a slot with the key's fingerprint in its bucket (a
    /// candidate to check); false if it found none, or nothing was prepared: then the
    /// settled lookup ([`Conntrack::<V4>::settled`]) misses.
    #[inline(always)]
    pub const fn has_candidate(&self) -> bool {
        self.candidate != 0
    }

    /// The slot the batch found for the key, alone: what the settled lookup
    /// ([`Conntrack::<V4>::settled_candidate`]) reads of a lookup.
    #[inline(always)]
    pub const fn candidate(&self) -> CandidateSlot {
        CandidateSlot(self.candidate)
    }
}

/// The probe `P` ([`Probe4`], [`Probe6`]) of a quiet packet ([`quiet`]: a UDP datagram, or
/// a TCP segment with none of SYN, FIN and RST): the only packets the settled lookup
/// ([`Conntrack::<V4>::settled_candidate`]) answers, taken where the flags are read so that
/// they are tested once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiet<P>(P);

impl<P> Quiet<P> {
    /// `probe`, of a packet with `tcp_flags` (None for UDP), if that packet is quiet.
    #[inline(always)]
    pub fn new(probe: P, tcp_flags: Option<u8>) -> Option<Quiet<P>> {
        quiet(tcp_flags).then_some(Quiet(probe))
    }
}

/// A prepared lookup's candidate slot ([`Prepared::candidate`]): the first slot word of the
/// key's bucket with the key's fingerprint when the batch looked, or none. A batch's record
/// pass keeps one per frame ([`Preparer::candidate`]: 4 bytes a frame instead of a
/// [`Prepared`]'s 24) and builds a frame's lookup from it when the frame needs one
/// ([`Conntrack::prepared`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CandidateSlot(u32);

impl CandidateSlot {
    /// No slot: the settled lookup misses.
    pub const NONE: CandidateSlot = CandidateSlot(0);

    /// True if there is a slot to check.
    #[inline(always)]
    pub const fn is_some(self) -> bool {
        self.0 != 0
    }
}

/// A batch's record pass over one table ([`Conntrack::preparer`]): its
/// [`Preparer::prepare`] is [`Conntrack::prepare`], with the table's shape and the batch read
/// once for all the batch's keys (kept in registers by the loop over them). Borrows the
/// table: nothing changes it while the pass runs.
#[derive(Clone, Copy)]
pub struct Preparer<'a, F: Layout> {
    pass: table::RecordPass<'a, F>,
    batch: u64,
}

impl<F: Layout> Preparer<'_, F> {
    /// [`Conntrack::prepare`] of `hash`.
    #[inline(always)]
    pub fn prepare(&self, hash: u64) -> Prepared {
        let candidate = self.pass.prefetch_record(hash);
        Prepared { hash, candidate, batch: self.batch, absent: false }
    }

    /// [`Preparer::prepare`] of `hash` without building the lookup: its candidate slot
    /// alone (the same reads and the same record load started), for a batch that keeps
    /// one word per frame and builds the lookup later with [`Conntrack::prepared`].
    #[inline(always)]
    pub fn candidate(&self, hash: u64) -> CandidateSlot {
        CandidateSlot(self.pass.prefetch_record(hash))
    }
}

impl<F: Layout> fmt::Debug for Preparer<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Preparer").field("batch", &self.batch).finish_non_exhaustive()
    }
}

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InsertError {
    /// The table is at capacity, or a bucket the flow needs is full, and no flow the rules
    /// of "Full tables and floods" may give up is there.
    Full,
    /// A new embryonic DR flow while `max_embryonic` embryonic flows exist (DR only: NAT and
    /// FullNAT evict the oldest embryonic flow instead, unless there is none to evict).
    Flood,
    /// A live flow already has the original or the reply key.
    Exists,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Counters of one table's outcomes, kept by its owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// Flows inserted.
    pub inserted: u64,
    /// Expired flows removed (by `sweep`, or by `insert` needing their room or key).
    pub expired: u64,
    /// Live embryonic flows evicted to make room (or to keep within `max_embryonic`).
    pub evicted_embryonic: u64,
    /// Live UDP flows evicted to make room: unreplied ones, or replied ones while UDP holds
    /// more than half the table.
    pub evicted_udp: u64,
    /// Inserts refused with [`InsertError::Full`].
    pub refused_full: u64,
    /// Inserts refused with [`InsertError::Flood`].
    pub refused_flood: u64,
    /// Flows removed by [`Conntrack::remove`].
    pub removed: u64,
}

/// How many candidates [`Conntrack::allocate_local_port`] tries before giving up.
const LOCAL_PORT_CANDIDATES: u64 = 64;

/// How many flows that left their eviction class behind the owner's back (a reader moved
/// them) one victim search re-files before it gives up: bounds the work of one insert.
const SETTLE_LIMIT: usize = 32;

/// Index slots allocated per flow of capacity (see "Storage" in the module docs).
const SLOTS_PER_FLOW: usize = 4;

/// Words of `Conntrack::published`: 4096 buckets' bits. A batch of 64 DR inserts sets at
/// most 64 of them, so a later key of the batch is still proved absent at least 63 times in
/// 64 (with 1024 bits, 3% of a batch of new flows, 6,116 in 200,000, took the general way for
/// nothing, about 100 instructions each; with 256 bits, a quarter of a batch's last keys).
/// Clearing the 512 bytes costs each batch a few vector stores.
const PUBLISHED_WORDS: usize = 64;

/// The word and bit of `Conntrack::published` that stand for `bucket`.
#[inline(always)]
fn published_bit(bucket: usize) -> (usize, u64) {
    ((bucket / 64) % PUBLISHED_WORDS, 1 << (bucket % 64))
}

/// Why a flow leaves the table (which counter it goes to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    Expired,
    EvictedEmbryonic,
    EvictedUdp,
    Removed,
}

/// How an insert may use an index slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotUse {
    Free,
    /// Points at an expired flow's record (or at a free record: a stale slot).
    Expired(usize),
    /// Points at the record of a live evictable flow (embryonic, or unreplied UDP) last
    /// seen at this time.
    Evictable(usize, u64),
    /// Points at a live flow past the handshake.
    Busy,
}

/// An index slot an insert will take, and the flow (record) it must evict first, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    position: usize,
    evict: Option<(usize, Removal)>,
}

/// One core's connection table of family `F`'s flows (IPv4 by default; `Conntrack<V6>` for
/// IPv6). Only its owner writes it; other cores read it through a [`ConntrackReader`].
pub struct Conntrack<F: Layout = V4> {
    table: Arc<Table<F>>,
    /// The secret of [`Conntrack::hash`], from the config (readers get a copy).
    secret: TableSecret,
    max_embryonic: usize,
    /// Free records, used as a stack. Allocated once with room for every record, so pushing
    /// never allocates.
    free: Vec<u32>,
    stats: ConntrackStats,
    /// The next bucket `sweep` examines.
    sweep_cursor: usize,
    /// The evictable flows, oldest first (see "Full tables and floods").
    queues: Queues,
    /// The batch [`Conntrack::begin_batch`] last began (see [`Prepared`]).
    batch: u64,
    /// The buckets (modulo 1024, one bit each) a slot was published into since the batch
    /// began: a key whose bucket had no slot with its fingerprint when its lookup was
    /// prepared, and whose bit is still clear, is still absent.
    published: [u64; PUBLISHED_WORDS],
}

impl Conntrack<V4> {
    /// The straight way of the common packet ([`Table::owner_settled`]): the flow (packed,
    /// [`Words4`]) and the direction of a key whose prepared candidate slot holds its live
    /// flow, when the packet leaves that flow as it is (last-seen refreshed). None, having
    /// changed nothing, for anything else (no candidate, a stale one, an expired flow, a
    /// packet that may move the state): the caller then asks [`Conntrack::track_settled`],
    /// which answers it. Whatever this answers, `track_settled` would have answered
    /// `Settled` with the same flow ([`Words4::flow`]) and direction.
    ///
    /// `probe` is the key's: [`Probe4::of_wire`] of the packet's bytes, or [`Layout::probe`].
    #[inline(always)]
    pub fn settled(
        &self,
        now: Instant,
        probe: &Probe4,
        prepared: &Prepared,
        tcp_flags: Option<u8>,
    ) -> Option<(Direction, Words4)> {
        self.settled_candidate(now, &Quiet::new(*probe, tcp_flags)?, prepared.candidate())
    }

    /// [`Conntrack::<V4>::settled`] of a quiet packet's probe ([`Quiet`]; the settled lookup
    /// answers None for the others) and a lookup's candidate slot alone
    /// ([`Prepared::candidate`]): the same answer.
    #[inline(always)]
    pub fn settled_candidate(
        &self,
        now: Instant,
        probe: &Quiet<Probe4>,
        candidate: CandidateSlot,
    ) -> Option<(Direction, Words4)> {
        let (direction, words) = self.table.owner_settled(now.as_nanos(), &probe.0, candidate.0)?;
        Some((direction, Words4::new(words)))
    }

    /// A handle on the table for a batch's run of settled hits: its
    /// [`SettledTable::lookup`] reads the table's shape once for the whole run.
    #[inline(always)]
    pub fn settled_table(&self) -> SettledTable {
        SettledTable(Arc::clone(&self.table))
    }
}

/// A handle on an IPv4 connection table for a batch's run of settled hits
/// ([`Conntrack::<V4>::settled_table`]): the run keeps it (not the [`Conntrack`]) while it
/// changes its core's other state. Only last-seen refreshes go through it.
pub struct SettledTable(Arc<Table<V4>>);

impl SettledTable {
    /// The table's shape as [`SettledLookup::settled_candidate`] needs it, read once.
    #[inline(always)]
    pub fn lookup(&self) -> SettledLookup<'_> {
        SettledLookup(self.0.settled_pass())
    }
}

impl fmt::Debug for SettledTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettledTable").finish_non_exhaustive()
    }
}

/// A run's settled lookup ([`SettledTable::lookup`]): the table's shape read once.
#[derive(Clone, Copy)]
pub struct SettledLookup<'a>(table::SettledPass<'a, V4>);

impl SettledLookup<'_> {
    /// [`Conntrack::<V4>::settled_candidate`]: the same answer and the same refresh.
    #[inline(always)]
    pub fn settled_candidate(
        &self,
        now: Instant,
        probe: &Quiet<Probe4>,
        candidate: CandidateSlot,
    ) -> Option<(Direction, Words4)> {
        let (direction, words) = self.0.owner_settled(now.as_nanos(), &probe.0, candidate.0)?;
        Some((direction, Words4::new(words)))
    }
}

impl fmt::Debug for SettledLookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettledLookup").finish_non_exhaustive()
    }
}

impl Conntrack<V6> {
    /// [`Conntrack::<V4>::settled`] of IPv6's table: the flow (packed, [`Words6`]) and the
    /// direction of a key whose prepared candidate slot holds its live flow, when the packet
    /// leaves that flow as it is (last-seen refreshed); None, having changed nothing,
    /// otherwise. `probe` is the key's ([`Probe6::of_wire`] or [`Layout::probe`]).
    #[inline(always)]
    pub fn settled(
        &self,
        now: Instant,
        probe: &Probe6,
        prepared: &Prepared,
        tcp_flags: Option<u8>,
    ) -> Option<(Direction, Words6)> {
        if !quiet(tcp_flags) {
            return None;
        }
        let (direction, words) =
            self.table.owner_settled(now.as_nanos(), probe, prepared.candidate)?;
        Some((direction, Words6::new(words)))
    }
}

impl<F: Layout> fmt::Debug for Conntrack<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("capacity", &self.capacity())
            .field("max_embryonic", &self.max_embryonic)
            .field("len", &self.len())
            .field("embryonic", &self.embryonic())
            .field("buckets", &self.table.bucket_count())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<F: Layout> Conntrack<F> {
    /// Allocates the whole table (see "Storage" in the module docs for its size).
    pub fn new(config: &ConntrackConfig) -> Self {
        let capacity = config.capacity.min(ConntrackConfig::MAX_CAPACITY);
        let buckets = capacity.saturating_mul(SLOTS_PER_FLOW).div_ceil(BUCKET_SLOTS);
        let table = Table::new(capacity, buckets, config.timeouts.as_nanos_table());
        // Popped from the end: records are handed out in index order.
        let free = (0..table.record_count() as u32).rev().collect();
        Conntrack {
            table: Arc::new(table),
            secret: config.secret,
            max_embryonic: config.max_embryonic,
            free,
            stats: ConntrackStats::default(),
            sweep_cursor: 0,
            queues: Queues::new(capacity),
            batch: 0,
            published: [0; PUBLISHED_WORDS],
        }
    }

    /// The hash this table places `key` by: [`crate::hash::table_hash`] under the table's
    /// secret. Every `hash` argument of this table and its readers is this value.
    #[inline(always)]
    pub fn hash(&self, key: &FlowKey<F>) -> u64 {
        table_hash(&self.secret, key)
    }

    /// The secret the table's hash is keyed with (the config's).
    pub fn secret(&self) -> TableSecret {
        self.secret
    }

    /// Looks `key` up; on a hit refreshes last-seen, advances the TCP state with `tcp_flags`
    /// (None for UDP) and returns the flow. Expired = miss.
    pub fn track(
        &mut self,
        now: Instant,
        key: &FlowKey<F>,
        tcp_flags: Option<u8>,
    ) -> Option<Hit<F>> {
        self.track_hashed(now, key, self.hash(key), tcp_flags)
    }

    /// [`Conntrack::track`] with the flow hash already computed: `hash` must be
    /// [`Conntrack::hash`]`(key)` (another value finds nothing; it never finds another
    /// key's flow).
    #[inline]
    pub fn track_hashed(
        &mut self,
        now: Instant,
        key: &FlowKey<F>,
        hash: u64,
        tcp_flags: Option<u8>,
    ) -> Option<Hit<F>> {
        self.track_prepared(now, key, Prepared::new(hash), tcp_flags)
    }

    /// [`Conntrack::track`] of a key whose lookup a batch prepared ([`Conntrack::prepare`],
    /// or [`Prepared::new`] with its hash). The same answer as `track`, whatever the batch
    /// did to the table since the lookup was prepared.
    ///
    /// The hit path of every packet: a packet that leaves its flow's state as it is (all but
    /// a few per connection) is answered from one read of the record
    /// ([`Table::owner_quick`]); the rest take the general path, out of line.
    #[inline(always)]
    pub fn track_prepared(
        &mut self,
        now: Instant,
        key: &FlowKey<F>,
        prepared: Prepared,
        tcp_flags: Option<u8>,
    ) -> Option<Hit<F>> {
        match self.quick(now, key, prepared, tcp_flags) {
            Quick::Hit(hit) => Some(hit),
            Quick::Miss => None,
            Quick::Slow => self.track_moving(now, key, prepared.hash, tcp_flags),
        }
    }

    /// [`Conntrack::track_prepared`], its hits split ([`Tracking`]): a packet that leaves its
    /// flow as it is comes back as the flow and its direction alone, so that the caller
    /// forwards it without a [`Hit`] to build and test. The same lookup, the same effect on
    /// the table.
    #[inline(always)]
    pub fn track_settled(
        &mut self,
        now: Instant,
        key: &FlowKey<F>,
        prepared: Prepared,
        tcp_flags: Option<u8>,
    ) -> Tracking<F> {
        match self.quick(now, key, prepared, tcp_flags) {
            Quick::Hit(hit) => Tracking::Settled { direction: hit.direction, flow: hit.flow },
            Quick::Miss => Tracking::Miss,
            Quick::Slow => match self.track_moving(now, key, prepared.hash, tcp_flags) {
                Some(hit) => Tracking::Moved(hit),
                None => Tracking::Miss,
            },
        }
    }

    /// The owner's one-read lookup both of those start with ([`Table::owner_quick`]).
    #[inline(always)]
    fn quick(
        &self,
        now: Instant,
        key: &FlowKey<F>,
        prepared: Prepared,
        tcp_flags: Option<u8>,
    ) -> Quick<F> {
        self.table.owner_quick(
            now.as_nanos(),
            key,
            prepared.hash,
            prepared.candidate,
            || self.known_absent(&prepared),
            tcp_flags,
        )
    }

    /// The general owner lookup, for the packets that may move their flow's state.
    #[inline(never)]
    fn track_moving(
        &mut self,
        now: Instant,
        key: &FlowKey<F>,
        hash: u64,
        tcp_flags: Option<u8>,
    ) -> Option<Hit<F>> {
        let tracked = track(&self.table, now, key, hash, tcp_flags, Access::Owner)?;
        if tracked.moved {
            self.settle(tracked.record);
        }
        Some(tracked.hit)
    }

    /// The second pass of a batch (after [`Conntrack::prefetch_bucket`] for every key):
    /// reads the bucket of `hash` (= [`Conntrack::hash`] of the key), starts loading
    /// the record its fingerprint names, and remembers that slot, so that
    /// [`Conntrack::track_prepared`] starts from it instead of scanning the bucket again.
    /// Changes nothing.
    #[inline]
    pub fn prepare(&self, hash: u64) -> Prepared {
        self.preparer().prepare(hash)
    }

    /// The lookup [`Conntrack::prepare`] of `hash` gives in this batch, from the candidate
    /// slot a batch's record pass found for it ([`Preparer::candidate`], called since the
    /// batch began): the same [`Prepared`].
    #[inline(always)]
    pub fn prepared(&self, hash: u64, candidate: CandidateSlot) -> Prepared {
        Prepared { hash, candidate: candidate.0, batch: self.batch, absent: false }
    }

    /// [`Conntrack::prepare`] for a batch's keys: what it reads of the table and of the
    /// batch, read once.
    #[inline(always)]
    pub fn preparer(&self) -> Preparer<'_, F> {
        Preparer { pass: self.table.record_pass(), batch: self.batch }
    }

    /// Starts a batch: lookups prepared from here on may prove a key absent without a
    /// second scan of its bucket (see [`Prepared`]); those prepared before may not. Call it
    /// before a batch's [`Conntrack::prepare`] pass; calling it at any other time (or never)
    /// only costs scans.
    #[inline]
    pub fn begin_batch(&mut self) {
        self.batch = self.batch.wrapping_add(1) % u64::MAX;
        self.published = [0; PUBLISHED_WORDS];
    }

    /// True if the key of `prepared` is known to be absent without scanning its bucket:
    /// prepared in this batch, no slot with its fingerprint then, none published into its
    /// bucket since.
    #[inline(always)]
    pub fn known_absent(&self, prepared: &Prepared) -> bool {
        let (word, bit) = published_bit(self.table.place(prepared.hash).0);
        prepared.candidate == 0
            && prepared.batch == self.batch
            && self.published.get(word).is_some_and(|bits| bits & bit == 0)
    }

    /// `prepared` marked as proved absent when [`Conntrack::known_absent`] says so, for an
    /// insert of its key that follows at once, before anything is published (the new-flow
    /// step): that insert skips the proof it would repeat. None otherwise.
    #[inline(always)]
    pub fn proved_absent(&self, prepared: &Prepared) -> Option<Prepared> {
        self.known_absent(prepared).then_some(Prepared { absent: true, ..*prepared })
    }

    fn mark_published(&mut self, position: usize) {
        let (word, bit) = published_bit(position / BUCKET_SLOTS);
        if let Some(bits) = self.published.get_mut(word) {
            *bits |= bit;
        }
    }

    /// Looks `key` up (`hash` = [`Conntrack::hash`]`(key)`) and changes nothing: no
    /// last-seen refresh, no TCP state move (`state` and `previous` are the current state).
    /// For packets that may name a flow but must not keep it alive or move it (ICMP errors,
    /// which anyone can forge). Expired = miss.
    #[inline]
    pub fn peek_hashed(&self, now: Instant, key: &FlowKey<F>, hash: u64) -> Option<Hit<F>> {
        peek(&self.table, now, key, hash, Access::Owner)
    }

    /// Starts loading the index bucket `hash` maps to (first pass over a batch); see
    /// "Batches" in the module docs. Harmless for any hash.
    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        self.table.prefetch_bucket(hash);
    }

    /// Starts loading the record the bucket names for `key` (second pass), if any. `hash` is
    /// `self.hash(key)`; the key itself is not read here: before the record line arrives,
    /// the fingerprint in the bucket is all there is to go by (so an unknown key usually
    /// loads nothing, and a rare fingerprint collision loads another flow's record).
    #[inline]
    pub fn prefetch_record(&self, key: &FlowKey<F>, hash: u64) {
        let _ = key;
        let _ = self.table.prefetch_record(hash);
    }

    /// Inserts a new flow. `tcp_flags` of its first packet set the initial state (returned:
    /// the caller counts the flow [`ConnectionCount`]'s way). Entries it evicts are passed to
    /// `on_remove` with the state they had when removed (the caller keeps per-backend
    /// connection counts).
    ///
    /// An expired entry holding one of the flow's keys is removed (and reported) first; a
    /// live one makes the insert fail with [`InsertError::Exists`]. Then the rules of "Full
    /// tables and floods" make room; a refused insert has evicted nothing but expired flows
    /// and the flows those rules gave up before a later rule refused it.
    pub fn insert(
        &mut self,
        now: Instant,
        flow: Flow<F>,
        tcp_flags: Option<u8>,
        on_remove: impl FnMut(&Flow<F>, FlowState),
    ) -> Result<FlowState, InsertError> {
        let hash = self.hash(&flow.original_key());
        self.insert_hashed(now, flow, hash, tcp_flags, on_remove)
    }

    /// [`Conntrack::insert`] with `hash` = [`Conntrack::hash`]`(&flow.original_key())`
    /// already computed (by the lookup that missed). Another value places the flow where no
    /// lookup of its key looks.
    pub fn insert_hashed(
        &mut self,
        now: Instant,
        flow: Flow<F>,
        hash: u64,
        tcp_flags: Option<u8>,
        on_remove: impl FnMut(&Flow<F>, FlowState),
    ) -> Result<FlowState, InsertError> {
        match flow.reply_key() {
            None => self.insert_checked::<false>(now, &flow, hash, false, tcp_flags, on_remove),
            Some(_) => self.insert_checked::<true>(now, &flow, hash, false, tcp_flags, on_remove),
        }
    }

    /// [`Conntrack::insert`] of the flow whose original key a batch looked up with
    /// `prepared` (its hash is the original key's): the same answer, without scanning the
    /// original key's bucket again when the batch proved the key absent (see [`Prepared`]),
    /// as it did for the lookup that missed just before (the new-flow path). The flow is
    /// borrowed: the caller forwards the packet with it next.
    pub fn insert_prepared(
        &mut self,
        now: Instant,
        flow: &Flow<F>,
        prepared: Prepared,
        tcp_flags: Option<u8>,
        on_remove: impl FnMut(&Flow<F>, FlowState),
    ) -> Result<FlowState, InsertError> {
        let absent = prepared.absent || self.known_absent(&prepared);
        debug_assert!(!prepared.absent || self.known_absent(&prepared), "still absent");
        let hash = prepared.hash;
        // One instance per shape: the DR or tunnel flow (no reply key, one slot) carries
        // none of the reply slot's work.
        match flow.reply_key() {
            None => self.insert_checked::<false>(now, flow, hash, absent, tcp_flags, on_remove),
            Some(_) => self.insert_checked::<true>(now, flow, hash, absent, tcp_flags, on_remove),
        }
    }

    /// The insert; `original_absent` says the original key is known to have no slot.
    /// `REPLY` is whether the flow has a reply key ([`Flow::reply_key`]): the callers
    /// choose the instance by it.
    #[inline]
    fn insert_checked<const REPLY: bool>(
        &mut self,
        now: Instant,
        flow: &Flow<F>,
        hash: u64,
        original_absent: bool,
        tcp_flags: Option<u8>,
        mut on_remove: impl FnMut(&Flow<F>, FlowState),
    ) -> Result<FlowState, InsertError> {
        debug_assert_eq!(hash, self.hash(&flow.original_key()), "the original key's hash");
        debug_assert_eq!(REPLY, flow.reply_key().is_some(), "the instance of the flow's shape");
        let now = now.as_nanos();
        let original = (flow.original_key(), hash);
        let reply = if REPLY { flow.reply_key().map(|key| (key, self.hash(&key))) } else { None };
        let checked = (!original_absent).then_some(original);
        for (key, hash) in checked.into_iter().chain(reply) {
            if let Some(found) = self.table.find(&key, hash, Access::Owner) {
                if !self.table.is_expired(now, &found.view) {
                    return Err(InsertError::Exists);
                }
                self.evict(found.index, Removal::Expired, &mut on_remove);
            }
        }

        let state = tcp::initial_state(flow.proto, tcp_flags);
        if state == FlowState::SynSeen && self.embryonic() >= self.max_embryonic {
            // DR has a stateless answer for the refused flow; NAT and FullNAT have none.
            let victim = match flow.forward {
                ForwardMode::Dr | ForwardMode::Tunnel => None,
                ForwardMode::Nat | ForwardMode::FullNat => self.oldest(Class::Embryonic),
            };
            let Some(victim) = victim else {
                self.stats.refused_flood += 1;
                return Err(InsertError::Flood);
            };
            let reason = self.removal_of(victim, now);
            self.evict(victim, reason, &mut on_remove);
        }

        let (original_bucket, original_tag) = self.table.place(original.1);
        let reply_place = reply.map(|(_, hash)| self.table.place(hash));
        if self.free.is_empty() {
            let victim = self
                .expired_in(original_bucket, now)
                .or_else(|| reply_place.and_then(|(bucket, _)| self.expired_in(bucket, now)))
                .or_else(|| self.queue_victim(now));
            match victim {
                Some((record, reason)) => {
                    self.evict(record, reason, &mut on_remove);
                }
                None => return self.refuse_full(),
            }
        }

        let Some(original_candidate) = self.choose(original_bucket, None, now) else {
            return self.refuse_full();
        };
        let reply_slot = match reply_place {
            None => None,
            Some((bucket, tag)) => {
                match self.choose(bucket, Some(original_candidate.position), now) {
                    Some(candidate) => Some((candidate, tag)),
                    None => return self.refuse_full(),
                }
            }
        };
        for candidate in
            std::iter::once(original_candidate).chain(reply_slot.map(|(candidate, _)| candidate))
        {
            if let Some((record, reason)) = candidate.evict {
                // A no-op if both candidates pointed at the same flow.
                self.evict(record, reason, &mut on_remove);
            }
        }
        let Some(record) = self.free.pop().map(|record| record as usize) else {
            return self.refuse_full();
        };

        let positions =
            (original_candidate.position, reply_slot.map(|(candidate, _)| candidate.position));
        self.table.write_record::<REPLY>(record, flow, state, now, positions);
        match state {
            FlowState::SynSeen => self.queues.push_unlinked(record, Class::Embryonic),
            FlowState::Udp => self.queues.push_unlinked(record, Class::Unreplied),
            FlowState::Established | FlowState::Closing | FlowState::Closed => {}
        }
        let original_slot = SlotRef { tag: original_tag, direction: Direction::Original, record };
        self.table.publish(original_candidate.position, original_slot);
        self.mark_published(original_candidate.position);
        if let Some((candidate, tag)) = reply_slot {
            let reply_slot = SlotRef { tag, direction: Direction::Reply, record };
            self.table.publish(candidate.position, reply_slot);
            self.mark_published(candidate.position);
        }
        self.stats.inserted += 1;
        Ok(state)
    }

    /// True if a live (unexpired) entry has this key.
    pub fn contains(&self, now: Instant, key: &FlowKey<F>) -> bool {
        self.table
            .find(key, self.hash(key), Access::Owner)
            .is_some_and(|found| !self.table.is_expired(now.as_nanos(), &found.view))
    }

    /// FullNAT source selection: finds (local_addr, port) with port in `range` such that the
    /// reply key backend:bport -> local:port is not live in this table. Starts at `start_hint`
    /// (e.g. the flow hash) and tries at most a bounded number of candidates (64, across
    /// the addresses: consecutive candidates alternate addresses, then move to the next
    /// port). When every candidate is held by a live flow, the port of the least recently
    /// seen evictable one among them (embryonic, or unreplied UDP) is taken back: that flow
    /// is evicted and reported to `on_remove`, so a flood cannot hold the port pool any more
    /// than it can hold the table. None when every candidate is held by a flow that may not
    /// be evicted (the caller counts a drop).
    #[allow(clippy::too_many_arguments)]
    pub fn allocate_local_port(
        &mut self,
        now: Instant,
        proto: Proto,
        backend_addr: F::Addr,
        backend_port: u16,
        local_addrs: &[F::Addr],
        range: PortRange,
        start_hint: u64,
        mut on_remove: impl FnMut(&Flow<F>, FlowState),
    ) -> Option<(F::Addr, u16)> {
        let addrs = local_addrs.len() as u64;
        let ports = u64::from(range.last.checked_sub(range.first)?) + 1;
        let total = addrs.checked_mul(ports).filter(|&total| total > 0)?;
        let start = start_hint % total;
        let now_nanos = now.as_nanos();
        // The least recently seen evictable holder of a candidate: (last seen, record, port).
        let mut oldest: Option<(u64, usize, (F::Addr, u16))> = None;
        for i in 0..LOCAL_PORT_CANDIDATES.min(total) {
            let candidate = (start + i) % total;
            let Some(&addr) = local_addrs.get((candidate % addrs) as usize) else { continue };
            let Some(port) = u16::try_from(candidate / addrs)
                .ok()
                .and_then(|offset| range.first.checked_add(offset))
            else {
                continue;
            };
            let key = FlowKey {
                src_addr: backend_addr,
                dst_addr: addr,
                src_port: backend_port,
                dst_port: port,
                proto,
            };
            let Some(found) = self.table.find(&key, self.hash(&key), Access::Owner) else {
                return Some((addr, port));
            };
            if self.table.is_expired(now_nanos, &found.view) {
                return Some((addr, port));
            }
            let evictable = matches!(found.view.class(), Some(Class::Embryonic | Class::Unreplied));
            if evictable && oldest.is_none_or(|(seen, ..)| found.view.last_seen < seen) {
                oldest = Some((found.view.last_seen, found.index, (addr, port)));
            }
        }
        let (_, record, local) = oldest?;
        let reason = self.removal_of(record, now_nanos);
        self.evict(record, reason, &mut on_remove)?;
        Some(local)
    }

    /// Removes the flow with this key (both directions), expired or not. Returns it and the
    /// state it had when removed.
    pub fn remove(&mut self, key: &FlowKey<F>) -> Option<(Flow<F>, FlowState)> {
        let found = self.table.find(key, self.hash(key), Access::Owner)?;
        let mut state = None;
        let flow = self.evict(found.index, Removal::Removed, &mut |_, s| state = Some(s))?;
        Some((flow, state?))
    }

    /// Incremental expiry: examines at most `max_buckets` buckets from a cursor, removes expired
    /// flows (reporting each to `on_remove`), returns how many it removed. The worker calls it
    /// every poll iteration with a small budget, so there is no timer wheel.
    pub fn sweep(
        &mut self,
        now: Instant,
        max_buckets: usize,
        mut on_remove: impl FnMut(&Flow<F>, FlowState),
    ) -> usize {
        let now = now.as_nanos();
        let buckets = self.table.bucket_count();
        let mut removed = 0;
        for _ in 0..max_buckets.min(buckets) {
            let bucket = self.sweep_cursor % buckets;
            self.sweep_cursor = (bucket + 1) % buckets;
            // Free slots need no look (`classify` says Free); a slot an eviction below frees
            // meanwhile (the other slot of a flow, in the same bucket) is looked at and found
            // free, as before.
            let mut used = self.table.used_slots(bucket);
            while used != 0 {
                let position = bucket * BUCKET_SLOTS + used.trailing_zeros() as usize;
                used &= used - 1;
                if let SlotUse::Expired(record) = self.classify(position, now) {
                    if self.evict(record, Removal::Expired, &mut on_remove).is_some() {
                        removed += 1;
                    } else {
                        // A slot pointing at a free record: cannot happen while the owner
                        // keeps slots and records in step, but costs nothing to repair.
                        self.table.unpublish(position);
                    }
                }
            }
        }
        removed
    }

    /// Live flows (may include not-yet-swept expired ones).
    pub fn len(&self) -> usize {
        self.table.record_count() - self.free.len()
    }

    /// True if the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flows in `SynSeen` (may include not-yet-swept expired ones).
    pub fn embryonic(&self) -> usize {
        self.table.embryonic()
    }

    /// The most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.table.record_count()
    }

    /// The owner's counters.
    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// A handle other cores use to look flows up in this table.
    pub fn reader(&self) -> ConntrackReader<F> {
        ConntrackReader { table: Arc::clone(&self.table), secret: self.secret }
    }

    /// Bytes allocated for the table (reported by benchmarks: memory per flow).
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.queues.memory_bytes()
    }

    /// What [`Conntrack::memory_bytes`] of a table of `capacity` flows of this family will
    /// be, without allocating it: `Conntrack::<V6>::memory_for_capacity(c)`
    /// ([`Conntrack::memory_for`] is IPv4's).
    pub fn memory_for_capacity(capacity: usize) -> usize {
        let capacity = capacity.min(ConntrackConfig::MAX_CAPACITY);
        let buckets = capacity.saturating_mul(SLOTS_PER_FLOW).div_ceil(BUCKET_SLOTS);
        Table::<F>::memory_for(capacity, buckets)
            + capacity * std::mem::size_of::<u32>()
            + Queues::memory_for(capacity)
    }

    fn refuse_full(&mut self) -> Result<FlowState, InsertError> {
        self.stats.refused_full += 1;
        Err(InsertError::Full)
    }

    /// How an insert may use the index slot at `position` at `now`.
    fn classify(&self, position: usize, now: u64) -> SlotUse {
        let Some(slot) = self.table.slot_ref(position) else {
            return SlotUse::Free;
        };
        // The owner's snapshot never fails: nobody else writes records.
        let Some(view) = self.table.record(slot.record).and_then(|record| record.snapshot()) else {
            return SlotUse::Busy;
        };
        if self.table.is_expired(now, &view) {
            SlotUse::Expired(slot.record)
        } else if let Some(Class::Embryonic | Class::Unreplied) = view.class() {
            SlotUse::Evictable(slot.record, view.last_seen)
        } else {
            SlotUse::Busy
        }
    }

    /// An expired flow with a slot in `bucket`, to be removed.
    fn expired_in(&self, bucket: usize, now: u64) -> Option<(usize, Removal)> {
        (bucket * BUCKET_SLOTS..(bucket + 1) * BUCKET_SLOTS).find_map(|position| {
            match self.classify(position, now) {
                SlotUse::Expired(record) if self.table.record(record)?.owner_view().is_live() => {
                    Some((record, Removal::Expired))
                }
                _ => None,
            }
        })
    }

    /// The flow a full table gives up for a new one, table-wide: the older (by last-seen) of
    /// the oldest embryonic flow and the oldest unreplied UDP flow; when there are neither
    /// and UDP flows hold more than half the table, the oldest replied UDP flow.
    fn queue_victim(&mut self, now: u64) -> Option<(usize, Removal)> {
        let embryonic = self.oldest(Class::Embryonic);
        let unreplied = self.oldest(Class::Unreplied);
        let seen = |table: &Table<F>, record: usize| {
            table.record(record).map_or(0, |record| record.owner_view().last_seen)
        };
        let victim = match (embryonic, unreplied) {
            (Some(embryonic), Some(unreplied)) => {
                if seen(&self.table, unreplied) < seen(&self.table, embryonic) {
                    unreplied
                } else {
                    embryonic
                }
            }
            (Some(victim), None) | (None, Some(victim)) => victim,
            (None, None) if self.udp_flows() * 2 > self.capacity() => {
                self.oldest(Class::Replied)?
            }
            (None, None) => return None,
        };
        Some((victim, self.removal_of(victim, now)))
    }

    /// UDP flows in the table (exact: every UDP flow is on one of the two UDP queues).
    fn udp_flows(&self) -> usize {
        self.queues.len(Class::Unreplied) + self.queues.len(Class::Replied)
    }

    /// The flow longest in `class`, re-filing on the way (at most [`SETTLE_LIMIT`]) the
    /// flows at the head of its queue that a reader moved out of it.
    fn oldest(&mut self, class: Class) -> Option<usize> {
        for _ in 0..SETTLE_LIMIT {
            let head = self.queues.oldest(class)?;
            if self.class_now(head) == Some(class) {
                return Some(head);
            }
            self.settle(head);
        }
        None
    }

    /// The eviction class the flow in `record` is in now.
    fn class_now(&self, record: usize) -> Option<Class> {
        self.table.record(record)?.owner_view().class()
    }

    /// Puts the flow in `record` on the queue of the class it is in now (at the tail if it
    /// changed class), or on none.
    fn settle(&mut self, record: usize) {
        let class = self.class_now(record);
        if self.queues.class_of(record) != class {
            match class {
                Some(class) => self.queues.push(record, class),
                None => {
                    self.queues.remove(record);
                }
            }
        }
    }

    /// The counter an eviction of the flow in `record` goes to.
    fn removal_of(&self, record: usize, now: u64) -> Removal {
        let Some(view) = self.table.record(record).map(|record| record.owner_view()) else {
            return Removal::Expired;
        };
        if self.table.is_expired(now, &view) {
            Removal::Expired
        } else if view.class() == Some(Class::Embryonic) {
            Removal::EvictedEmbryonic
        } else {
            Removal::EvictedUdp
        }
    }

    /// The slot of `bucket` (other than `exclude`) whose flow may be evicted: an expired one,
    /// else the least recently seen evictable one (embryonic, or unreplied UDP).
    #[inline(never)]
    fn victim(&self, bucket: usize, exclude: Option<usize>, now: u64) -> Option<Candidate> {
        let mut oldest: Option<(u64, Candidate)> = None;
        for position in bucket * BUCKET_SLOTS..(bucket + 1) * BUCKET_SLOTS {
            if Some(position) == exclude {
                continue;
            }
            match self.classify(position, now) {
                SlotUse::Expired(record) => {
                    return Some(Candidate { position, evict: Some((record, Removal::Expired)) });
                }
                SlotUse::Evictable(record, seen) if oldest.is_none_or(|(old, _)| seen < old) => {
                    let evict = Some((record, self.removal_of(record, now)));
                    oldest = Some((seen, Candidate { position, evict }));
                }
                SlotUse::Free | SlotUse::Evictable(..) | SlotUse::Busy => {}
            }
        }
        oldest.map(|(_, candidate)| candidate)
    }

    /// The slot of `bucket` (other than `exclude`) an insert takes: a free one, else a victim.
    #[inline(always)]
    fn choose(&self, bucket: usize, exclude: Option<usize>, now: u64) -> Option<Candidate> {
        self.table
            .free_position(bucket, exclude)
            .map(|position| Candidate { position, evict: None })
            .or_else(|| self.victim(bucket, exclude, now))
    }

    /// Removes the flow in `record` (its record and both index slots), counts it under
    /// `reason` and reports it with the state it had at that moment (taken by the same swap
    /// that frees the record, so a reader's racing transition is either in it or failed).
    /// None if the record is already free.
    fn evict(
        &mut self,
        record: usize,
        reason: Removal,
        on_remove: &mut impl FnMut(&Flow<F>, FlowState),
    ) -> Option<Flow<F>> {
        let slot = self.table.record(record)?;
        let view = slot.snapshot()?;
        let (flow, seen_state) = (view.flow()?, view.state()?);
        let (original, reply) = slot.positions();
        for position in std::iter::once(original).chain(reply) {
            if self.table.slot_ref(position).is_some_and(|slot| slot.record == record) {
                self.table.unpublish(position);
            }
        }
        let state = self.table.clear_record(record).unwrap_or(seen_state);
        self.queues.remove(record);
        self.free.push(record as u32);
        match reason {
            Removal::Expired => self.stats.expired += 1,
            Removal::EvictedEmbryonic => self.stats.evicted_embryonic += 1,
            Removal::EvictedUdp => self.stats.evicted_udp += 1,
            Removal::Removed => self.stats.removed += 1,
        }
        on_remove(&flow, state);
        Some(flow)
    }
}

impl Conntrack {
    /// What [`Conntrack::memory_bytes`] of an IPv4 table of `capacity` flows will be,
    /// without allocating it (for config checks: a typo must not reach the allocator).
    pub fn memory_for(capacity: usize) -> usize {
        Self::memory_for_capacity(capacity)
    }
}

/// A lock-free, read-mostly handle on another core's [`Conntrack`].
#[derive(Clone)]
pub struct ConntrackReader<F: Layout = V4> {
    table: Arc<Table<F>>,
    /// The owner's secret.
    secret: TableSecret,
}

impl<F: Layout> fmt::Debug for ConntrackReader<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConntrackReader")
            .field("buckets", &self.table.bucket_count())
            .field("embryonic", &self.table.embryonic())
            .finish()
    }
}

impl<F: Layout> ConntrackReader<F> {
    /// Lock-free lookup in the owner's table from another core; refreshes last-seen and TCP
    /// state atomically on a hit.
    pub fn track(&self, now: Instant, key: &FlowKey<F>, tcp_flags: Option<u8>) -> Option<Hit<F>> {
        self.track_hashed(now, key, table_hash(&self.secret, key), tcp_flags)
    }

    /// The secret of the owner's table ([`Conntrack::secret`]): a core that hands this reader
    /// a hash it computed must have computed it under this secret.
    pub fn secret(&self) -> TableSecret {
        self.secret
    }

    /// Up to `limit` live flows of this table with their state and the nanoseconds left
    /// before they expire, in record order (`ipvsadm -L -n -c`). Read lock-free like every
    /// reader access: a record the owner is rewriting at that moment is skipped, so under
    /// churn the list is a close picture, not an atomic one. Walks the whole record array:
    /// for the control side, never the hot path.
    pub fn entries(&self, now: Instant, limit: usize) -> Vec<(Flow<F>, FlowState, u64)> {
        let mut entries = Vec::new();
        if limit == 0 {
            return entries;
        }
        self.visit(now, |flow, state, left| {
            entries.push((flow, state, left));
            entries.len() < limit
        });
        entries
    }

    /// Calls `visit` with every live flow, its state and the nanoseconds it has left, as
    /// [`ConntrackReader::entries`] lists them, without collecting them (connection counts
    /// per backend); stops when `visit` returns false.
    pub fn visit(&self, now: Instant, mut visit: impl FnMut(Flow<F>, FlowState, u64) -> bool) {
        let now = now.as_nanos();
        for index in 0..self.table.record_count() {
            let Some(view) = self.table.record(index).and_then(|r| r.view(Access::Reader)) else {
                continue;
            };
            let (Some(flow), Some(state), Some(left)) =
                (view.flow(), view.state(), self.table.expires_in(now, &view))
            else {
                continue;
            };
            if !visit(flow, state, left) {
                return;
            }
        }
    }

    /// [`Conntrack::peek_hashed`] from another core: changes nothing.
    #[inline]
    pub fn peek_hashed(&self, now: Instant, key: &FlowKey<F>, hash: u64) -> Option<Hit<F>> {
        peek(&self.table, now, key, hash, Access::Reader)
    }

    /// [`ConntrackReader::track`] with `hash` = [`Conntrack::hash`]`(key)` already
    /// computed.
    #[inline]
    pub fn track_hashed(
        &self,
        now: Instant,
        key: &FlowKey<F>,
        hash: u64,
        tcp_flags: Option<u8>,
    ) -> Option<Hit<F>> {
        track(&self.table, now, key, hash, tcp_flags, Access::Reader).map(|tracked| tracked.hit)
    }
}

/// [`track`] without its side effects: the flow and its current state, nothing written.
#[inline]
fn peek<F: Layout>(
    table: &Table<F>,
    now: Instant,
    key: &FlowKey<F>,
    hash: u64,
    access: Access,
) -> Option<Hit<F>> {
    let found = table.find(key, hash, access)?;
    if table.is_expired(now.as_nanos(), &found.view) {
        return None;
    }
    let state = found.view.state()?;
    Some(Hit { direction: found.direction, flow: found.view.flow()?, state, previous: state })
}

/// The lookup both the owner and readers run; `access` selects how records are read and
/// how last-seen is refreshed.
///
/// A hit whose state does not move (most packets of an established flow) changes one word
/// (last-seen, only if time moved) and takes no locked instruction on the owner's side.
#[inline(always)]
fn track<F: Layout>(
    table: &Table<F>,
    now: Instant,
    key: &FlowKey<F>,
    hash: u64,
    tcp_flags: Option<u8>,
    access: Access,
) -> Option<Tracked<F>> {
    let now = now.as_nanos();
    let found = table.find(key, hash, access)?;
    let view = &found.view;
    if table.is_expired(now, view) {
        return None;
    }
    let flow = view.flow()?;
    let current = view.state()?;
    let step = |state| tcp::next_state(state, found.direction, tcp_flags);
    let mut moved = false;
    let (previous, state) = if step(current) == current {
        if found.direction == Direction::Reply && view.is_unreplied() {
            // The backend answered: the flow is no longer a candidate for eviction.
            found.record.mark_replied(view.generation, view.state_word);
            moved = true;
        }
        // What `advance` would return without touching the state word.
        (current, current)
    } else {
        let transition = found.record.advance(view.generation, view.state_word, step)?;
        table.count_transition(Some(transition.0), Some(transition.1));
        moved = transition.0 != transition.1;
        transition
    };
    found.record.touch(view.last_seen, now, access == Access::Owner);
    let hit = Hit { direction: found.direction, flow, state, previous };
    Some(Tracked { hit, record: found.index, moved })
}

/// What [`track`] found, and what the owner needs to keep its queues in step.
struct Tracked<F: Layout> {
    hit: Hit<F>,
    /// The flow's record.
    record: usize,
    /// True if this packet may have changed the flow's eviction class (a state transition,
    /// or a UDP flow's first reply).
    moved: bool,
}
