//! IPv6 through the pipeline: the per-family steps of issue 12, beside IPv4's.
//!
//! IPv4's one-pass classification stays IPv4-only; an IPv6 frame gets two things of the hot
//! path. Its connection-table lookup is prepared with the batch's (the key guessed at fixed
//! offsets, `parse::guess_key`: bucket and record requested a batch ahead, `Class::Ipv6`):
//! without it every IPv6 hit waited for two dependent cache misses (the bucket, then the
//! record), 10× slower than IPv4's hit for 2× the instructions. And its common packet (TCP
//! or UDP without extension headers, checked at fixed offsets: `parse::plain_at`) takes a
//! settled way like IPv4's (`flows::CoreState::settled_hit6`: the flow's packed words, one
//! line per backend with its identity and cached hop, [`Core6::backend_lines`]); anything
//! else goes the step-by-step way, like IPv4's uncommon frames, the flow step starting from
//! the prepared lookup when the key it checked has that hash ([`Core6::prepared`]). The
//! steps: [`step`] (who the frame is for),
//! [`parse`] (the fixed header's checks with their exact drop reasons, the TCP/UDP view),
//! [`flows`] (connection lookup, scheduling, forwarding, ICMPv6 echo and errors; a tunnel
//! flow's packets are wrapped in IPv6 by `super::tunnel`),
//! [`rewrite`] (NAT and FullNAT translation with the hop limit, echo replies, translated
//! ICMPv6 errors) and [`ndp`] (neighbour discovery for xlb's addresses, resolution of next
//! hops, hold and release).
//!
//! State: [`Core6`], one per core beside IPv4's tables: IPv6's own connection table
//! (`Conntrack<V6>`, two cache lines a flow) and its peers on the other cores, neighbour
//! table and hold queue. IPv6's table is sized by the start's `[conntrack]`, as IPv4's, once
//! the box serves IPv6 (small until then, [`ConntrackConfig::for_ipv6`]); a reload that
//! adds the first IPv6 service grows it ([`Table6`]) — while the box served no IPv6 the
//! small table held no flow (flows are made for services only), so nothing is lost. The
//! per-service and per-backend state (scheduler state, connection
//! counts, counters) and the emit queue are shared with IPv4: the snapshot indexes services
//! and backends of both families in one list.
//!
//! What IPv6 the pipeline forwards: TCP, UDP and ICMPv6 directly after the fixed header,
//! or after a chain of hop-by-hop (first only), destination options and routing headers
//! with segments left 0, walked within the payload and the walk's bounds ([`parse`]); the
//! chain is forwarded as it is, and the rewrites work at the TCP/UDP header's offset the
//! checks found (NAT replies, ICMPv6 errors and their quotes alike). The common packet,
//! with no extension header, never walks: its next header is matched first. Fragments
//! (a fragment header in the chain) follow their first fragment's flow, as IPv4's
//! (`super::fragments`); an atomic fragment is a whole packet. A packet to a VIP with a
//! routing header whose
//! segments left is not 0 as `ipv6_segments_left` (the VIP is not its final destination);
//! with ESP, AH or a rarer extension header as `ipv6_ext_headers` (IPVS and Katran do not
//! balance those either); a malformed chain as `bad_ipv6_ext_header`, one past the walk's
//! bounds as `ipv6_ext_chain_too_long`. One merely from a NAT backend is passed instead.

pub(super) mod flows;
pub(super) mod ndp;
pub(super) mod parse;
pub(super) mod rewrite;
pub(super) mod step;

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};

use crate::arp::{HoldQueue, NeighborTable};
use crate::conntrack::{BackendWords6, Conntrack, ConntrackConfig, ConntrackReader, Prepared};
use crate::family::V6;
use crate::snapshot::Snapshot;

use super::neighbors::{BackendLine, HopSlot};

/// One core's IPv6 state (see the module docs).
#[derive(Debug)]
pub(super) struct Core6 {
    pub conntrack: Conntrack<V6>,
    /// Other cores' IPv6 tables, for replies RSS delivered here.
    pub peers: Vec<ConntrackReader<V6>>,
    pub neighbors: NeighborTable<V6>,
    pub hold: HoldQueue<V6>,
    /// Unsolicited advertisements and probes waiting for room in the emit queue (control
    /// asked).
    pub paced: VecDeque<ndp::Paced6>,
    /// The lookup the batch prepared in `conntrack` for the frame being processed, if it
    /// was [`super::classify::Class::Ipv6`] (else, and after the frame, None): the lookup of
    /// the key [`parse::guess_key`] read at fixed offsets. The flow step takes it, without
    /// hashing the key again, when the checks found the TCP/UDP header at those offsets (no
    /// extension headers: then the key they read is the guessed one, byte for byte; see
    /// `flows::CoreState::transport6`).
    pub prepared: Option<Prepared>,
    /// Per backend of the snapshot, IPv4's [`BackendLine`] for IPv6's settled hits: the
    /// backend's identity as IPv6 flow words carry it ([`BackendWords6::NONE`] for an IPv4
    /// backend) and its cached hop from `neighbors`, valid while `hops_generation` matches
    /// their generation (`u64::MAX` after a snapshot change: refill before use).
    pub backend_lines: Vec<BackendLine<BackendWords6>>,
    /// The hop of replies to clients on no interface's IPv6 subnet (the default gateway's),
    /// filled with the backends' lines and valid while they are.
    pub gateway_hop: HopSlot,
    pub hops_generation: u64,
}

impl Core6 {
    /// A core's IPv6 state for `snapshot`: the connection table of `snapshot.conntrack`'s
    /// size if it has an IPv6 service, else a small one
    /// ([`ConntrackConfig::for_ipv6`]).
    pub fn new(snapshot: &Snapshot, neighbor_capacity: usize) -> Core6 {
        let serves_ipv6 = snapshot.services.iter().any(|service| service.vip.is_ipv6());
        Core6::with_capacities(&snapshot.conntrack.for_ipv6(serves_ipv6), neighbor_capacity)
    }

    pub fn with_capacities(conntrack: &ConntrackConfig, neighbor_capacity: usize) -> Core6 {
        Core6 {
            conntrack: Conntrack::new(conntrack),
            peers: Vec::new(),
            neighbors: NeighborTable::new(neighbor_capacity),
            hold: HoldQueue::default(),
            paced: VecDeque::new(),
            prepared: None,
            backend_lines: Vec::new(),
            gateway_hop: HopSlot::UNKNOWN,
            hops_generation: u64::MAX,
        }
    }

    /// The next hops `snapshot` sends IPv6 to (backends' and gateways'), with their egress:
    /// never evicted from the neighbour table, refreshed while in use.
    pub fn next_hops(
        snapshot: &Snapshot,
    ) -> impl Iterator<Item = (Ipv6Addr, crate::snapshot::IfaceId)> + '_ {
        let six = snapshot.family::<V6>();
        let backends = six
            .backend_routes()
            .iter()
            .filter(|route| !route.next_hop.is_unspecified())
            .map(|route| (route.next_hop, route.egress));
        let gateways =
            six.subnets().iter().filter_map(|(egress, subnet)| Some((subnet.gateway?, *egress)));
        backends.chain(gateways)
    }

    /// Takes `snapshot`'s IPv6 neighbours (the next hops it needs, its static entries) and
    /// its backends' lines (their hops unknown until the next settled hit refills them).
    pub fn set_snapshot(&mut self, snapshot: &Snapshot) {
        self.backend_lines = backend_lines6(snapshot);
        self.hops_generation = u64::MAX;
        self.neighbors.set_needed(Core6::next_hops(snapshot).map(|(ip, _)| ip));
        for (ip, mac) in snapshot.family::<V6>().static_neighbors() {
            self.neighbors.insert_static(*ip, *mac);
        }
    }
}

/// One [`BackendLine`] per backend of `snapshot`, in its order: IPv6 backends' identities,
/// [`BackendWords6::NONE`] for IPv4's; no hop known.
fn backend_lines6(snapshot: &Snapshot) -> Vec<BackendLine<BackendWords6>> {
    let six = snapshot.family::<V6>();
    let line = |index: usize| {
        let identity = match six.backend_id(index) {
            Some(id) if !id.vip.is_unspecified() => {
                BackendWords6::new(id.vip, id.vport, id.proto, id.addr, id.port)
            }
            _ => BackendWords6::NONE,
        };
        BackendLine { hop: HopSlot::UNKNOWN, identity }
    };
    (0..snapshot.backends.len()).map(line).collect()
}

/// A grown IPv6 connection table on its way from control to one core, with the other cores'
/// grown tables as its peers: a reload that adds the first IPv6 service gives each core a
/// table of the start's `[conntrack]` size ([`Table6::grown`]), built by control (not on the
/// worker) and sent before that reload's snapshot, so every core's peers are the new tables.
/// The table is taken once ([`Table6::take`]); the message that carries it may be cloned.
#[derive(Debug, Clone)]
pub struct Table6 {
    table: Arc<Mutex<Option<Conntrack<V6>>>>,
    reader: ConntrackReader<V6>,
    peers: Vec<ConntrackReader<V6>>,
}

impl Table6 {
    /// The tables `cores` cores need for `snapshot` when their IPv6 tables hold `running`
    /// flows and `start` is the `[conntrack]` the process started with: `None` when the
    /// running size is already the one `snapshot` asks for (or more: tables never shrink,
    /// as IPv4's never change).
    pub fn grown(
        start: &ConntrackConfig,
        running: usize,
        snapshot: &Snapshot,
        cores: usize,
    ) -> Option<Vec<Table6>> {
        let serves_ipv6 = snapshot.services.iter().any(|service| service.vip.is_ipv6());
        let config = start.for_ipv6(serves_ipv6);
        if config.capacity <= running {
            return None;
        }
        let tables: Vec<Conntrack<V6>> = (0..cores).map(|_| Conntrack::new(&config)).collect();
        let readers: Vec<ConntrackReader<V6>> = tables.iter().map(Conntrack::reader).collect();
        let grown = tables.into_iter().enumerate().map(|(index, table)| {
            let peers = readers.iter().enumerate().filter(|(other, _)| *other != index);
            Table6 {
                reader: readers[index].clone(),
                table: Arc::new(Mutex::new(Some(table))),
                peers: peers.map(|(_, reader)| reader.clone()).collect(),
            }
        });
        Some(grown.collect())
    }

    /// A read handle on the table (for control's listings).
    pub fn reader(&self) -> ConntrackReader<V6> {
        self.reader.clone()
    }

    /// The table and its peers; the table once only (`None` after).
    pub fn take(&self) -> Option<(Conntrack<V6>, Vec<ConntrackReader<V6>>)> {
        let table = self.table.lock().ok()?.take()?;
        Some((table, self.peers.clone()))
    }
}
