//! Statistics as operators read them: `ipvsadm -L -n --stats` tables.
//!
//! Pure formatting over a snapshot and per-backend counters summed over cores, so `xlb run`
//! (at exit), `xlb replay` and `xlb ctl` print the same table. Columns and alignment follow
//! ipvsadm's, with exact numbers (ipvsadm's `--exact`), so an operator's eye and scripts that
//! split on whitespace recognise them. A service's figures are the sum of its backends'.
//! `--rate` has the same layout with per-second figures ([`BackendRates`]), which the caller
//! derives from two samples of the counters.
//!
//! # State follows identity
//!
//! A change (a service deleted, a backend added or removed by a health check) renumbers the
//! snapshot's backends, and the cores switch to the new snapshot one after another. So
//! counters are summed by [`BackendId`], each core's report read through the snapshot it was
//! indexed by ([`Ledger`]): a listing right after a change shows every core's figures, not
//! zeros until every core has reported again. The [`Ledger`] also keeps what backends that
//! left had counted, per service, so a service's and the box's totals never go down (what
//! Prometheus would read as a counter reset), and it counts a backend that comes back only
//! from reports of snapshots that have it again (a core drops a backend's counters when it
//! leaves). Current connections are counted the way IPVS counts them, from the connection
//! tables ([`count_connections`]): `ActiveConn` is established TCP, `InActConn` every other
//! state (SYN_RECV, FIN_WAIT, CLOSE, UDP). Both families' tables are read: every core has
//! an IPv4 and an IPv6 table ([`Tables`]), and counts, `-L -n -c` entries and the metrics
//! include the flows of both.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::conntrack::{ConnectionCount, ConntrackReader, Flow, FlowState, Layout};
use crate::control::config::endpoint;
use crate::control::ipvsadm::ConnEntry;
use crate::family::{Family, V4, V6};
use crate::flow::Proto;
use crate::report::{BackendCounters, CoreReport};
use crate::snapshot::{BackendId, Indexed, Snapshot};
use crate::time::Instant;

/// A backend's current connections as IPVS counts them: active = TCP established, inactive =
/// every other state (UDP included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendConnections {
    pub active: u64,
    pub inactive: u64,
}

/// Counts `flows` (with their states) per backend of `snapshot`, by identity; flows of
/// backends the snapshot no longer has are left out.
pub fn count_connections<F: Indexed>(
    snapshot: &Snapshot,
    counts: &mut [BackendConnections],
    flow: &Flow<F>,
    state: FlowState,
) {
    let Some(count) = snapshot.backend_of_flow(flow).and_then(|index| counts.get_mut(index)) else {
        return;
    };
    if state.is_active() {
        count.active += 1;
    } else {
        count.inactive += 1;
    }
}

/// Read handles on every core's connection tables, IPv4's and IPv6's (core order), for the
/// listings and metrics that count from the tables.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub v4: Vec<ConntrackReader<V4>>,
    pub v6: Vec<ConntrackReader<V6>>,
}

impl Tables {
    /// Current connections per backend of `snapshot` as IPVS counts them (established TCP
    /// active, the rest inactive), over both families' tables of every core.
    pub fn count(&self, snapshot: &Snapshot, now: Instant) -> Vec<BackendConnections> {
        let mut counts = vec![BackendConnections::default(); snapshot.backends.len()];
        count_in(snapshot, &mut counts, &self.v4, now);
        count_in(snapshot, &mut counts, &self.v6, now);
        counts
    }

    /// Live flows of every core, IPv4's then IPv6's, as `ipvsadm -L -n -c` lists them: at
    /// most `limit` entries.
    pub fn entries(&self, now: Instant, limit: usize) -> Vec<ConnEntry> {
        let mut entries = Vec::new();
        entries_in(&mut entries, &self.v4, now, limit);
        entries_in(&mut entries, &self.v6, now, limit);
        entries
    }
}

/// [`Tables::count`] over one family's tables.
fn count_in<F: Indexed + Layout>(
    snapshot: &Snapshot,
    counts: &mut [BackendConnections],
    readers: &[ConntrackReader<F>],
    now: Instant,
) {
    for reader in readers {
        reader.visit(now, |flow, state, _| {
            count_connections(snapshot, counts, &flow, state);
            true
        });
    }
}

/// [`Tables::entries`] over one family's tables, until `entries` holds `limit`.
fn entries_in<F: Layout>(
    entries: &mut Vec<ConnEntry>,
    readers: &[ConntrackReader<F>],
    now: Instant,
    limit: usize,
) {
    for reader in readers {
        let left = limit.saturating_sub(entries.len());
        for (flow, state, expires_ns) in reader.entries(now, left) {
            entries.push(conn_entry(&flow, state, expires_ns));
        }
    }
}

/// A flow as `-L -n -c` lists it: IPVS's state names, addresses of either family.
pub fn conn_entry<F: Family>(flow: &Flow<F>, state: FlowState, expires_ns: u64) -> ConnEntry {
    let state = match state {
        FlowState::SynSeen => "SYN_RECV",
        FlowState::Established => "ESTABLISHED",
        FlowState::Closing => "FIN_WAIT",
        FlowState::Closed => "CLOSE",
        FlowState::Udp => "UDP",
    };
    ConnEntry {
        proto: flow.proto,
        expire_secs: expires_ns / 1_000_000_000,
        state: state.to_string(),
        client: SocketAddr::new(F::ip(flow.client_addr), flow.client_port),
        r#virtual: SocketAddr::new(F::ip(flow.vip), flow.vport),
        destination: SocketAddr::new(F::ip(flow.backend_addr), flow.backend_port),
    }
}

/// A service as the ledger names it: VIP, port, protocol.
type ServiceKey = (IpAddr, u16, Proto);

/// Per-backend counters by identity over cores that may run different snapshots, and the
/// totals of backends that left (module docs).
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The snapshot control runs now (listings and metrics are indexed like it).
    current: Arc<Snapshot>,
    /// Older snapshots some core's latest report may still be indexed by, by generation.
    previous: HashMap<u64, Arc<Snapshot>>,
    /// The generation from which each current backend is counted: reports of older
    /// snapshots count for it only if it was in them without a break.
    since: HashMap<BackendId, u64>,
    /// What backends that left had counted, per service.
    retired: HashMap<ServiceKey, BackendCounters>,
}

impl Ledger {
    /// A ledger for the first snapshot.
    pub fn new(snapshot: Arc<Snapshot>) -> Ledger {
        let since = snapshot.backends.iter().map(|b| (b.id, 0)).collect();
        Ledger { current: snapshot, previous: HashMap::new(), since, retired: HashMap::new() }
    }

    /// The snapshot listings are indexed by.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.current
    }

    /// Counters per backend of the current snapshot, summed over `reports` by identity.
    pub fn totals<'a>(
        &self,
        reports: impl IntoIterator<Item = &'a CoreReport>,
    ) -> Vec<BackendCounters> {
        let mut totals = vec![BackendCounters::default(); self.current.backends.len()];
        for report in reports {
            let Some(snapshot) = self.indexed_by(report.generation) else { continue };
            for (backend, counters) in snapshot.backends.iter().zip(&report.counters.backends) {
                let Some(index) = self.current.backend_at(&backend.id) else { continue };
                if self.since.get(&backend.id).is_some_and(|&since| report.generation >= since) {
                    totals[index].add(counters);
                }
            }
        }
        totals
    }

    /// Moves to `snapshot`: backends that left retire with what `reports` (every core's
    /// latest) say they counted; backends that (re)appear are counted from this generation
    /// on. Forgets the snapshots older than every report.
    pub fn publish<'a>(
        &mut self,
        snapshot: Arc<Snapshot>,
        reports: impl IntoIterator<Item = &'a CoreReport> + Clone,
    ) {
        let totals = self.totals(reports.clone());
        for (backend, counters) in self.current.backends.iter().zip(&totals) {
            if snapshot.backend_at(&backend.id).is_none() {
                let service = (backend.id.vip, backend.id.vport, backend.id.proto);
                self.retired.entry(service).or_default().add(counters);
                self.since.remove(&backend.id);
            }
        }
        for backend in &snapshot.backends {
            self.since.entry(backend.id).or_insert(snapshot.generation);
        }
        let old = std::mem::replace(&mut self.current, snapshot);
        self.previous.insert(old.generation, old);
        // Cores only move forward: a snapshot older than every core's latest report is
        // never read again; newer ones may be (a core can report one published in between).
        if let Some(oldest) = reports.into_iter().map(|r| r.generation).min() {
            self.previous.retain(|&generation, _| generation >= oldest);
        }
    }

    /// What the backends that left service `vip:port/proto` had counted.
    pub fn retired(&self, vip: IpAddr, port: u16, proto: Proto) -> BackendCounters {
        self.retired.get(&(vip, port, proto)).copied().unwrap_or_default()
    }

    /// What every backend that left had counted.
    pub fn retired_total(&self) -> BackendCounters {
        let mut total = BackendCounters::default();
        for counters in self.retired.values() {
            total.add(counters);
        }
        total
    }

    fn indexed_by(&self, generation: u64) -> Option<&Snapshot> {
        if generation == self.current.generation {
            return Some(&self.current);
        }
        self.previous.get(&generation).map(|s| &**s)
    }
}

/// Width of the `LocalAddress:Port` column, as ipvsadm prints it.
const ADDR_WIDTH: usize = 33;

/// Sums per-backend counters of several cores; every slice is indexed like
/// `snapshot.backends` (reports of another snapshot generation must be left out).
pub fn sum_backends<'a>(
    backends: usize,
    cores: impl IntoIterator<Item = &'a [BackendCounters]>,
) -> Vec<BackendCounters> {
    let mut total = vec![BackendCounters::default(); backends];
    for core in cores {
        for (sum, counters) in total.iter_mut().zip(core) {
            sum.add(counters);
        }
    }
    total
}

/// The column titles of `ipvsadm -L -n --stats`.
pub const STATS_TITLES: [&str; 5] = ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"];

/// The column titles of `ipvsadm -L -n --rate`.
pub const RATE_TITLES: [&str; 5] = ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"];

/// One real server's rates per second, as `ipvsadm -L -n --rate` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendRates {
    /// New connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub in_pps: u64,
    /// Packets per second from the real server (0 in DR: replies bypass xlb).
    pub out_pps: u64,
    /// Bytes per second from clients.
    pub in_bps: u64,
    /// Bytes per second from the real server.
    pub out_bps: u64,
}

impl BackendRates {
    /// The rates between two samples of one real server's counters taken `elapsed` apart.
    /// A counter that went backwards (zeroed in between) counts as no traffic; an `elapsed`
    /// of zero gives zero rates.
    pub fn between(
        before: &BackendCounters,
        after: &BackendCounters,
        elapsed: Duration,
    ) -> BackendRates {
        let nanos = elapsed.as_nanos();
        let rate = |before: u64, after: u64| -> u64 {
            let delta = u128::from(after.saturating_sub(before));
            (delta * 1_000_000_000)
                .checked_div(nanos)
                .map_or(0, |rate| u64::try_from(rate).unwrap_or(u64::MAX))
        };
        BackendRates {
            cps: rate(before.connections, after.connections),
            in_pps: rate(before.in_packets, after.in_packets),
            out_pps: rate(before.out_packets, after.out_packets),
            in_bps: rate(before.in_bytes, after.in_bytes),
            out_bps: rate(before.out_bytes, after.out_bytes),
        }
    }

    /// The five figures in `--rate` column order.
    pub fn row(&self) -> [u64; 5] {
        [self.cps, self.in_pps, self.out_pps, self.in_bps, self.out_bps]
    }
}

/// The five figures of `--stats` in column order.
pub fn stats_row(c: &BackendCounters) -> [u64; 5] {
    [c.connections, c.in_packets, c.out_packets, c.in_bytes, c.out_bytes]
}

/// The `ipvsadm -L -n --stats` table: one line per service, then one per real server.
pub fn ipvsadm_stats(snapshot: &Snapshot, backends: &[BackendCounters]) -> String {
    let rows: Vec<[u64; 5]> = backends.iter().map(stats_row).collect();
    ipvsadm_table(snapshot, STATS_TITLES, &rows, None)
}

/// The `ipvsadm -L -n --rate` table; `rates` is indexed like `snapshot.backends`.
pub fn ipvsadm_rate(snapshot: &Snapshot, rates: &[BackendRates]) -> String {
    let rows: Vec<[u64; 5]> = rates.iter().map(BackendRates::row).collect();
    ipvsadm_table(snapshot, RATE_TITLES, &rows, None)
}

/// An ipvsadm figures table (`--stats` or `--rate`, by `titles`): a service line carries
/// the sum of its real servers' rows. `rows` is indexed like `snapshot.backends` (a missing
/// row counts as zeros); `only` restricts the table to one service index, as
/// `ipvsadm -L -t VIP:port` does. Services and real servers come in the snapshot's order.
pub fn ipvsadm_table(
    snapshot: &Snapshot,
    titles: [&str; 5],
    rows: &[[u64; 5]],
    only: Option<usize>,
) -> String {
    let order: Vec<(usize, Vec<usize>)> = (snapshot.services.iter().enumerate())
        .filter(|(index, _)| only.is_none_or(|only| only == *index))
        .map(|(index, service)| (index, service.backends.clone().collect()))
        .collect();
    ipvsadm_table_in(snapshot, titles, rows, &order)
}

/// [`ipvsadm_table`] in a given order: each service index with its real servers' indices
/// into `snapshot.backends` (`ipvsadm -L` sorts them, see `crate::control::ipvsadm`).
/// Indices out of range are skipped.
pub fn ipvsadm_table_in(
    snapshot: &Snapshot,
    titles: [&str; 5],
    rows: &[[u64; 5]],
    order: &[(usize, Vec<usize>)],
) -> String {
    let mut out = String::new();
    let [a, b, c, d, e] = titles;
    let _ = writeln!(
        out,
        "{:<ADDR_WIDTH$} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}",
        "Prot LocalAddress:Port"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for (index, backends) in order {
        let Some(service) = snapshot.services.get(*index) else { continue };
        let row_of = |backend: usize| rows.get(backend).copied().unwrap_or_default();
        let mut total = [0u64; 5];
        for backend in service.backends.clone() {
            for (sum, figure) in total.iter_mut().zip(row_of(backend)) {
                *sum = sum.saturating_add(figure);
            }
        }
        // `endpoint`: an IPv6 address in brackets, as ipvsadm prints it (issue 12).
        let name = format!(
            "{:<4} {}",
            service.proto.to_string().to_uppercase(),
            endpoint(service.vip, service.port)
        );
        row(&mut out, &name, &total);
        for &backend in backends {
            let Some(entry) = snapshot.backends.get(backend) else { continue };
            let name = format!("  -> {}", endpoint(entry.addr, entry.port));
            row(&mut out, &name, &row_of(backend));
        }
    }
    out
}

fn row(out: &mut String, name: &str, figures: &[u64; 5]) {
    let [a, b, c, d, e] = figures;
    let _ = writeln!(out, "{name:<ADDR_WIDTH$} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}");
}

/// For each of `cores` cores (worker indices), the other cores' connections per backend
/// of snapshot `generation` (`backends` of them), from `reports` (each core's latest): a
/// report of another generation, or of another length, counts nothing (its core is on
/// another snapshot: its indices are not these). Sums wrap, as [`ConnectionCount`]'s parts
/// do: the total less a core's own part is exactly the others' sum.
pub fn peer_loads<'r>(
    reports: impl IntoIterator<Item = &'r CoreReport>,
    generation: u64,
    backends: usize,
    cores: usize,
) -> Vec<Arc<[ConnectionCount]>> {
    let current: Vec<&CoreReport> = reports
        .into_iter()
        .filter(|r| r.generation == generation && r.connections.len() == backends)
        .collect();
    let mut total = vec![ConnectionCount::default(); backends];
    for report in &current {
        for (sum, count) in total.iter_mut().zip(&report.connections) {
            *sum = sum.plus(*count);
        }
    }
    (0..cores)
        .map(|core| match current.iter().find(|r| usize::from(r.core) == core) {
            Some(own) => total.iter().zip(&own.connections).map(|(t, o)| t.minus(*o)).collect(),
            None => total.clone().into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Config;
    use std::net::Ipv4Addr;

    const TWO_SERVICES: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.2/24"
        mac = "02:00:0a:01:01:02"

        [[service]]
        vip = "10.1.1.10"
        port = 80
        proto = "tcp"
        forward = "dr"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 80
        [[service.backend]]
        addr = "10.1.1.12"
        port = 80

        [[service]]
        vip = "10.1.1.10"
        port = 53
        proto = "udp"
        forward = "dr"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 53
    "#;

    #[test]
    fn prints_ipvsadm_columns_with_service_totals() {
        let config = Config::parse(TWO_SERVICES, "t.toml").unwrap();
        let snapshot = Snapshot::build(&config, 1).unwrap();
        let core = |conns| BackendCounters {
            connections: conns,
            in_packets: conns * 5,
            in_bytes: conns * 300,
            out_packets: 0,
            out_bytes: 0,
        };
        let a = [core(3), core(4), core(1)];
        let b = [core(2), core(0), core(0)];
        let total = sum_backends(3, [&a[..], &b[..]]);
        let table = ipvsadm_stats(&snapshot, &total);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
        );
        assert_eq!(lines[1], "  -> RemoteAddress:Port");
        let fields = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(fields(lines[2]), ["TCP", "10.1.1.10:80", "9", "45", "0", "2700", "0"]);
        assert_eq!(fields(lines[3]), ["->", "10.1.1.11:80", "5", "25", "0", "1500", "0"]);
        assert_eq!(fields(lines[4]), ["->", "10.1.1.12:80", "4", "20", "0", "1200", "0"]);
        assert_eq!(fields(lines[5]), ["UDP", "10.1.1.10:53", "1", "5", "0", "300", "0"]);
        assert_eq!(lines.len(), 7);
        // The numbers line up under their headers.
        assert_eq!(lines[2].len(), lines[0].len());
        assert_eq!(lines[3].len(), lines[0].len());
    }

    fn core_report(core: u16, generation: u64, connections: &[u64]) -> CoreReport {
        let mut counters = crate::report::Counters::new(connections.len());
        for (counters, &n) in counters.backends.iter_mut().zip(connections) {
            counters.connections = n;
        }
        CoreReport {
            core,
            generation,
            counters,
            ports: Vec::new(),
            flows: 0,
            embryonic: 0,
            connections: Vec::new(),
            conntrack: Default::default(),
            neighbors: 0,
            held: 0,
            unroutable: 0,
            housekeeping_deferred: 0,
            latency: Default::default(),
            unresolved: Vec::new(),
            unresolved6: Vec::new(),
        }
    }

    /// A service deleted before another renumbers its backends: counters follow identity,
    /// whichever snapshot each core still runs, and the deleted service's count is retired.
    #[test]
    fn the_ledger_sums_by_identity_across_snapshots() {
        let config = Config::parse(TWO_SERVICES, "t.toml").unwrap();
        let mut ledger = Ledger::new(Arc::new(Snapshot::build(&config, 1).unwrap()));
        let reports = [core_report(0, 1, &[3, 4, 1]), core_report(1, 1, &[2, 0, 6])];
        let connections = |totals: Vec<BackendCounters>| -> Vec<u64> {
            totals.iter().map(|c| c.connections).collect()
        };
        assert_eq!(connections(ledger.totals(&reports)), [5, 4, 7]);
        let udp_at = TWO_SERVICES
            .find("[[service]]\n        vip = \"10.1.1.10\"\n        port = 53")
            .unwrap();
        let tcp_at = TWO_SERVICES.find("[[service]]").unwrap();
        let udp_only = format!("{}{}", &TWO_SERVICES[..tcp_at], &TWO_SERVICES[udp_at..]);
        let udp_only = Snapshot::build(&Config::parse(&udp_only, "t.toml").unwrap(), 2).unwrap();
        ledger.publish(Arc::new(udp_only), &reports);
        // Right after the change both cores still run generation 1: no zeros.
        assert_eq!(connections(ledger.totals(&reports)), [7]);
        let tcp = ledger.retired(Ipv4Addr::new(10, 1, 1, 10).into(), 80, Proto::Tcp);
        assert_eq!((tcp.connections, ledger.retired_total().connections), (9, 9));
        // Core 0 switches (its UDP backend's counters carried over to index 0).
        let mixed = [core_report(0, 2, &[2]), core_report(1, 1, &[2, 0, 6])];
        assert_eq!(connections(ledger.totals(&mixed)), [8]);
        // Another change before any core reported generation 2: a report of generation 2
        // that arrives after it still counts.
        let mut again = (**ledger.snapshot()).clone();
        again.generation = 3;
        ledger.publish(Arc::new(again), &reports);
        assert_eq!(connections(ledger.totals(&mixed)), [8]);
    }

    /// IPVS's ActiveConn is established TCP; every other state is InActConn.
    #[test]
    fn connections_count_as_ipvs_counts_them() {
        let snapshot = Snapshot::build(&Config::parse(TWO_SERVICES, "t.toml").unwrap(), 1).unwrap();
        let flow = |port: u16, proto: Proto, backend: usize| {
            let b = &snapshot.backends[backend];
            Flow::<V4> {
                proto,
                forward: crate::flow::ForwardMode::Dr,
                client_addr: Ipv4Addr::new(10, 1, 1, 100),
                client_port: 4000,
                vip: Ipv4Addr::new(10, 1, 1, 10),
                vport: port,
                backend_addr: snapshot.family::<V4>().backend_addr(backend),
                backend_port: b.port,
                local_addr: Ipv4Addr::new(10, 1, 1, 100),
                local_port: 4000,
                service: 0,
                // A stale hint: the flow is found by identity.
                backend: 7,
            }
        };
        let mut counts = vec![BackendConnections::default(); 3];
        for (flow, state) in [
            (flow(80, Proto::Tcp, 0), FlowState::Established),
            (flow(80, Proto::Tcp, 0), FlowState::Established),
            (flow(80, Proto::Tcp, 0), FlowState::Closing),
            (flow(80, Proto::Tcp, 1), FlowState::SynSeen),
            (flow(53, Proto::Udp, 2), FlowState::Udp),
            // Not a backend of this snapshot (deleted): left out.
            (flow(81, Proto::Tcp, 0), FlowState::Established),
        ] {
            count_connections(&snapshot, &mut counts, &flow, state);
        }
        let pairs: Vec<(u64, u64)> = counts.iter().map(|c| (c.active, c.inactive)).collect();
        assert_eq!(pairs, [(2, 1), (0, 1), (0, 1)]);
    }

    #[test]
    fn rates_are_per_second_and_never_negative() {
        let sample = |n: u64| BackendCounters {
            connections: n,
            in_packets: 2 * n,
            in_bytes: 100 * n,
            out_packets: n,
            out_bytes: 50 * n,
        };
        let half_second = Duration::from_millis(500);
        let rates = BackendRates::between(&sample(10), &sample(15), half_second);
        assert_eq!(rates.row(), [10, 20, 10, 1000, 500]);
        assert_eq!(
            rates,
            BackendRates { cps: 10, in_pps: 20, out_pps: 10, in_bps: 1000, out_bps: 500 }
        );
        // Zeroed in between (-Z): no negative rates; no time: no rates.
        assert_eq!(
            BackendRates::between(&sample(15), &sample(1), half_second),
            BackendRates::default()
        );
        assert_eq!(
            BackendRates::between(&sample(1), &sample(15), Duration::ZERO),
            BackendRates::default()
        );
    }

    /// `-L -n -c` and the connection counts read both families' tables: an IPv6 NAT flow is
    /// listed ipvsadm's way (`[2001:db8:1::20]:4000`) beside an IPv4 one, and counted for
    /// its backend (issue 12: only IPv4 flows were listed and counted).
    #[test]
    fn ipv6_flows_are_listed_and_counted() {
        use crate::control::ipvsadm::{self, ListFormat, ListOptions, ListView};
        use crate::dataplane::{CoreSlot, IfaceId, Pipeline, Verdict};
        use crate::testkit::{self, ACK, SYN};
        use crate::wire::MacAddr;
        let text = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
addr6 = "2001:db8:1::10/64"
mac = "02:00:00:00:00:10"
[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:00:00:00:11"
[[neighbor]]
ip = "2001:db8:1::11"
mac = "02:00:00:00:00:11"
[[neighbor]]
ip = "2001:db8:1::20"
mac = "02:00:00:00:00:20"
[[service]]
vip = "10.1.1.100"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"
[[service]]
vip = "2001:db8:1::100"
port = 80
forward = "nat"
[[service.backend]]
addr = "2001:db8:1::11"
port = 8080
"#;
        let config = Config::parse(text, "t.toml").unwrap();
        let snapshot = Arc::new(Snapshot::build(&config, 1).unwrap());
        let mut pipeline = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
        let now = Instant::from_secs(1);
        let (lb, client) = (MacAddr([2, 0, 0, 0, 0, 0x10]), MacAddr([2, 0, 0, 0, 0, 0x20]));
        let client6: std::net::Ipv6Addr = "2001:db8:1::20".parse().unwrap();
        let vip6: std::net::Ipv6Addr = "2001:db8:1::100".parse().unwrap();
        for flags in [SYN, ACK] {
            let mut frame = testkit::tcp6(client, lb, (client6, 4000), (vip6, 80), flags, b"");
            assert_eq!(pipeline.process(now, IfaceId(0), &mut frame), Verdict::Tx(IfaceId(0)));
        }
        let client4 = Ipv4Addr::new(10, 1, 1, 20);
        let vip4 = (Ipv4Addr::new(10, 1, 1, 100), 80);
        let mut syn = testkit::tcp(client, lb, (client4, 5000), vip4, SYN, b"");
        assert_eq!(pipeline.process(now, IfaceId(0), &mut syn), Verdict::Tx(IfaceId(0)));
        let tables = Tables {
            v4: vec![pipeline.conntrack_reader()],
            v6: vec![pipeline.conntrack_reader6()],
        };
        let counts = tables.count(&snapshot, now);
        assert_eq!(
            counts,
            [
                BackendConnections { active: 0, inactive: 1 },
                BackendConnections { active: 1, inactive: 0 },
            ]
        );
        let options = ListOptions { format: ListFormat::Connections, ..ListOptions::default() };
        let view =
            ListView { options, connections: tables.entries(now, 10), ..ListView::default() };
        let listing = ipvsadm::list(&snapshot, &view);
        let six = format!(
            "TCP 15:00  ESTABLISHED {:<18} {:<18} {}",
            "[2001:db8:1::20]:4000", "[2001:db8:1::100]:80", "[2001:db8:1::11]:8080"
        );
        assert!(listing.lines().any(|line| line == six), "{listing}");
        let four = "TCP 00:30  SYN_RECV    10.1.1.20:5000     10.1.1.100:80      10.1.1.11:80";
        assert!(listing.lines().any(|line| line == four), "{listing}");
        assert_eq!(listing.lines().count(), 4, "{listing}");
    }

    #[test]
    fn each_core_gets_the_other_cores_flows_of_its_snapshot() {
        let count = |(active, inactive): (i32, i32)| ConnectionCount { active, inactive };
        let report = |core, generation, counts: &[(i32, i32)]| CoreReport {
            connections: counts.iter().copied().map(count).collect(),
            ..core_report(core, generation, &[0; 3])
        };
        let reports = [
            // Core 0 moved 4 of core 1's flows on the first backend out of ESTABLISHED
            // (NAT replies RSS sent it): its inactive part is below zero.
            report(0, 7, &[(1, -4), (2, 0), (3, 1)]),
            report(1, 7, &[(10, 6), (20, 0), (30, 2)]),
            report(2, 6, &[(100, 100); 3]), // still on the old snapshot: counts nothing
            report(3, 7, &[(5, 5)]),        // another length: counts nothing
        ];
        let loads = peer_loads(&reports, 7, 3, 5);
        let pairs = |load: &[ConnectionCount]| -> Vec<(i32, i32)> {
            load.iter().map(|c| (c.active, c.inactive)).collect()
        };
        assert_eq!(pairs(&loads[0]), [(10, 6), (20, 0), (30, 2)]);
        assert_eq!(pairs(&loads[1]), [(1, -4), (2, 0), (3, 1)]);
        // Cores with no report of this snapshot get everyone's.
        for (core, load) in loads.iter().enumerate().skip(2) {
            assert_eq!(pairs(load), [(11, 2), (22, 0), (33, 3)], "core {core}");
        }
        assert!(peer_loads(&[], 7, 2, 2).iter().all(|l| pairs(l) == [(0, 0), (0, 0)]));
        // Parts that wrapped still sum exactly.
        let reports = [report(0, 7, &[(i32::MAX, 0)]), report(1, 7, &[(i32::MIN + 5, 0)])];
        let loads = peer_loads(&reports, 7, 1, 3);
        assert_eq!(pairs(&loads[2]), [(4, 0)]);
        assert_eq!(loads[2][0].loads(), (4, 0));
        assert_eq!(pairs(&loads[0]), [(i32::MIN + 5, 0)]);
    }
}
