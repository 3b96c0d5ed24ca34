//! Prometheus text exposition (format 0.0.4) of what the workers report.
//!
//! [`render`] is a pure function from plain data ([`MetricsView`]: the snapshot, per-backend
//! counters summed over cores, each core's [`CoreReport`] and batch-latency summary) to the
//! text a `GET /metrics` returns; [`crate::control::http`] serves it. Control renders about
//! once a second; the HTTP thread only copies the latest text, so a scrape never reaches a
//! worker.
//!
//! Names. Where node_exporter's IPVS collector (`collector/ipvs_linux.go`) has a metric, xlb
//! uses its name, type and labels, so dashboards and alerts written for a kernel IPVS box keep
//! working: the unlabelled totals `node_ipvs_{connections,incoming_packets,outgoing_packets,
//! incoming_bytes,outgoing_bytes}_total` (`/proc/net/ip_vs_stats`), and per backend the gauges
//! `node_ipvs_backend_{connections_active,connections_inactive,weight}` labelled
//! `local_address, local_port, remote_address, remote_port, proto, local_mark` (proto in
//! capitals as `/proc/net/ip_vs` writes it, `local_mark` empty: xlb has no fwmark services).
//! Everything else is `xlb_*`: per service and per backend counters (which node_exporter does
//! not export), per core pipeline counters (one family per [`Stat`], drops by `reason`), the
//! AF_XDP port counters per core and interface (the kernel's drops before the receive ring
//! included; the syscalls — transmit kicks and what the kernel answered, fill-ring wakeups,
//! idle waits —, receive batches by size, and the frames left on the TX ring), the batch
//! latency as a summary, and what control counts itself
//! ([`ControlFigures`]): `xlb ctl` clients served and dropped (`xlb_ctl_*`), scrapes this
//! server refused (`xlb_metrics_connections_refused_total`), and per monitored backend its
//! health checks (`xlb_health_*_total`, probes brought forward by passive signs included,
//! and `xlb_backend_state{state}`, one series per [`BackendState`] set to 1 for the one the
//! backend is in: a backend down by its check is told from one the operator drained, which
//! `node_ipvs_backend_weight`, 0 for both, cannot),
//! and the box's part in a fleet (`xlb_fleet_state{mode, state}`).
//!
//! Invariants (checked by the tests with a small parser of the format):
//! - every family has one `# HELP` and one `# TYPE` line, followed by all its samples
//!   (families are never interleaved), and no (name, label set) appears twice;
//! - counter families end in `_total` and only ever grow, across changes too: per backend
//!   counters follow the backend's identity over a reload, and the per service and
//!   node_exporter totals keep what backends that left had counted ([`Ledger`]), so
//!   deleting a service or a backend never lowers them (a backend that comes back starts a
//!   new series from 0, which Prometheus reads as the reset it is); the health counters
//!   follow the backend's identity in the health monitor the same way, whether or not the
//!   snapshot holds the backend (`on_failure = "remove"`);
//! - label values are escaped (`\\`, `\"`, `\n`), HELP text too (`\\`, `\n`);
//! - per core families list every core of the view, sorted by core, and every drop reason,
//!   zeros included, so `rate()` sees a series from its first scrape.
//!
//! Rates (`ipvsadm --rate`) are not exported: Prometheus derives them with `rate()`.
//!
//! Batch latency: workers keep a cumulative histogram ([`BatchLatency`]); [`LatencyWindow`]
//! subtracts the histogram seen a few renders ago to give quantiles over a recent window (like
//! a Prometheus client's summary, whose quantiles slide while `_sum` and `_count` are
//! cumulative). An empty window gives `NaN` quantiles, as client libraries do.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::conntrack::ConntrackStats;
use crate::control::health::{BackendKey, BackendState, BackendStatus, HealthCounters, ServiceKey};
use crate::control::socket::CtlStats;
pub use crate::control::stats::BackendConnections;
use crate::control::stats::Ledger;
use crate::fleet::{FleetMode, VrrpState};
use crate::report::{
    BATCH, BATCH_SIZE_BUCKETS, BackendCounters, BatchLatency, CoreReport, DropReason, PortStats,
    Stat, batch_size_bucket_floor,
};
use crate::snapshot::Snapshot;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The quantiles of the batch-latency summary.
pub const QUANTILES: [f64; 3] = [0.5, 0.99, 0.999];

/// Batch-latency quantiles over a window, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyQuantiles {
    /// Batches in the window (at least 1).
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl LatencyQuantiles {
    /// The quantiles of `histogram`; `None` if it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<LatencyQuantiles> {
        if histogram.is_empty() {
            return None;
        }
        Some(LatencyQuantiles {
            count: histogram.len(),
            p50_ns: histogram.value_at_quantile(QUANTILES[0]),
            p99_ns: histogram.value_at_quantile(QUANTILES[1]),
            p999_ns: histogram.value_at_quantile(QUANTILES[2]),
            max_ns: histogram.max(),
        })
    }

    fn at(&self, quantile_index: usize) -> u64 {
        match quantile_index {
            0 => self.p50_ns,
            1 => self.p99_ns,
            _ => self.p999_ns,
        }
    }
}

/// One core's batch latency: cumulative count and sum, recent quantiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Batches since the worker started.
    pub count: u64,
    /// Their total duration, in nanoseconds.
    pub sum_ns: u64,
    /// Quantiles over the recent window; `None` if no batch ran in it.
    pub window: Option<LatencyQuantiles>,
}

impl LatencySummary {
    /// Count and sum of `latency`, quantiles over all of it (no window).
    pub fn cumulative(latency: &BatchLatency) -> LatencySummary {
        LatencySummary {
            count: latency.count(),
            sum_ns: latency.sum_ns(),
            window: LatencyQuantiles::of(latency.histogram()),
        }
    }
}

/// Turns the cumulative histograms of successive reports into quantiles over the last few
/// renders, per core. Control keeps one and calls [`LatencyWindow::summarize`] once per core
/// per render.
#[derive(Debug)]
pub struct LatencyWindow {
    renders: usize,
    /// Per core, the cumulative histograms of the last `renders` calls, oldest first.
    history: HashMap<u16, VecDeque<Histogram<u64>>>,
}

impl LatencyWindow {
    /// Renders in the default window: 10, ten seconds at one render a second.
    pub const DEFAULT_RENDERS: usize = 10;

    /// Quantiles over the batches of the last `renders` calls (at least 1).
    pub fn new(renders: usize) -> Self {
        LatencyWindow { renders: renders.max(1), history: HashMap::new() }
    }

    /// The summary of `core`'s latency now, its quantiles over the batches recorded since
    /// the `renders`-th previous call for that core (or since the worker started).
    pub fn summarize(&mut self, core: u16, latency: &BatchLatency) -> LatencySummary {
        let current = latency.histogram();
        let history = self.history.entry(core).or_default();
        let full = history.len() >= self.renders;
        let oldest = history.front().filter(|oldest| full && oldest.len() <= current.len());
        let window = match oldest {
            Some(oldest) => {
                let mut recent = current.clone();
                // Cannot fail for two histograms of one worker (same bounds, the earlier one
                // counted no more in any bucket); were it to, the whole history is a window.
                match recent.subtract(oldest) {
                    Ok(()) => LatencyQuantiles::of(&recent),
                    Err(_) => LatencyQuantiles::of(current),
                }
            }
            None => LatencyQuantiles::of(current),
        };
        if history.len() >= self.renders {
            history.pop_front();
        }
        history.push_back(current.clone());
        LatencySummary { count: latency.count(), sum_ns: latency.sum_ns(), window }
    }

    /// Forgets cores that are not in `cores` (a worker that is gone).
    pub fn retain(&mut self, cores: &[u16]) {
        self.history.retain(|core, _| cores.contains(core));
    }
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self::new(Self::DEFAULT_RENDERS)
    }
}

/// One core's figures.
#[derive(Debug, Clone, Copy)]
pub struct CoreMetrics<'a> {
    pub report: &'a CoreReport,
    pub latency: LatencySummary,
    /// The core's connection table counters, when the report carries them.
    pub conntrack: Option<ConntrackStats>,
}

/// What control counts itself, not the workers. The default has counted nothing and
/// monitors no backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControlFigures<'a> {
    /// The control socket's clients ([`crate::control::socket::CtlServer::stats`]).
    pub ctl: CtlStats,
    /// Connections the metrics server answered 503
    /// ([`crate::control::http::MetricsServer::refused`]).
    pub metrics_refused: u64,
    /// Every backend the health monitor follows, with its counts
    /// ([`crate::control::health::HealthMonitor::status`]).
    pub health: &'a [BackendStatus],
    /// Every AF_XDP socket's busy-poll state.
    pub busy_poll: &'a [BusyPollFigures],
    /// `TcpExt: BusyPollRxPackets` of xlb's network namespace (None: unreadable).
    pub busy_poll_rx_packets: Option<u64>,
    /// The config's fleet mode and the VRRP state keepalived last gave ([`crate::fleet`]).
    pub fleet: (FleetMode, VrrpState),
}

/// One AF_XDP socket's preferred busy polling
/// ([`crate::dataplane::io::afxdp::busypoll`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyPollFigures {
    pub interface: String,
    pub queue: u32,
    /// Busy polling is on and the kernel linked a NAPI to the socket.
    pub engaged: bool,
    /// The NAPI id busy polling drives: the socket's own, or its marker's (0: none).
    pub napi_id: u32,
    /// The id is a marker socket's ([`crate::dataplane::io::afxdp::marker`]: veth).
    pub marker: bool,
}

/// Everything [`render`] reads.
#[derive(Debug, Clone, Copy)]
pub struct MetricsView<'a> {
    pub snapshot: &'a Snapshot,
    /// Per backend counters summed over every core by identity (see [`Ledger::totals`]),
    /// indexed like `snapshot.backends`.
    pub backends: &'a [BackendCounters],
    /// Current connections per backend, indexed like `snapshot.backends`; empty if unknown
    /// (then `node_ipvs_backend_connections_{active,inactive}` are left out).
    pub backend_connections: &'a [BackendConnections],
    /// What backends that left each service had counted, indexed like `snapshot.services`
    /// (empty: nothing left); added to the per service totals.
    pub retired_services: &'a [BackendCounters],
    /// What every backend that left had counted; added to node_exporter's totals.
    pub retired_total: BackendCounters,
    /// In any order; rendered sorted by core.
    pub cores: &'a [CoreMetrics<'a>],
    /// Control's own counters.
    pub control: ControlFigures<'a>,
}

/// Renders the reports control holds: sums the backends of every core by identity through
/// `ledger` (whatever snapshot each core runs: right after a change some still run the
/// previous one), adds what retired backends counted, summarizes each core's latency
/// through `window`, and calls [`render`]. `connections` is indexed like the ledger's
/// snapshot's backends (empty: unknown).
pub fn render_reports(
    ledger: &Ledger,
    reports: &[CoreReport],
    window: &mut LatencyWindow,
    connections: &[BackendConnections],
    control: ControlFigures<'_>,
) -> String {
    let snapshot = ledger.snapshot();
    let backends = ledger.totals(reports);
    let retired: Vec<BackendCounters> =
        snapshot.services.iter().map(|s| ledger.retired(s.vip, s.port, s.proto)).collect();
    let cores: Vec<CoreMetrics<'_>> = reports
        .iter()
        .map(|report| CoreMetrics {
            report,
            latency: window.summarize(report.core, &report.latency),
            conntrack: Some(report.conntrack),
        })
        .collect();
    let ids: Vec<u16> = reports.iter().map(|r| r.core).collect();
    window.retain(&ids);
    render(&MetricsView {
        snapshot,
        backends: &backends,
        backend_connections: connections,
        retired_services: &retired,
        retired_total: ledger.retired_total(),
        cores: &cores,
        control,
    })
}

/// The Prometheus text exposition of `view`.
pub fn render(view: &MetricsView<'_>) -> String {
    let mut out = Exposition::default();
    let snapshot = view.snapshot;
    let mut cores: Vec<&CoreMetrics<'_>> = view.cores.iter().collect();
    cores.sort_by_key(|c| c.report.core);
    let core_ids: Vec<String> = cores.iter().map(|c| c.report.core.to_string()).collect();

    out.family("xlb_build_info", Kind::Gauge, "xlb's version; always 1.");
    out.sample("xlb_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1u64);
    out.family(
        "xlb_config_generation",
        Kind::Gauge,
        "Generation of the configuration control runs (1 at start, +1 per reload applied).",
    );
    out.sample("xlb_config_generation", &[], snapshot.generation);

    // node_exporter's IPVS totals: the sums over every backend, those that left included.
    let mut total = view.retired_total;
    for counters in view.backends {
        total.add(counters);
    }
    for (field, help, read) in IPVS_TOTALS {
        let name = format!("node_ipvs_{field}_total");
        out.family(&name, Kind::Counter, help);
        out.sample(&name, &[], read(&total));
    }

    // Per backend: node_exporter's gauges, then xlb's counters.
    let backend_labels: Vec<[(&str, String); 6]> = snapshot
        .backends
        .iter()
        .map(|backend| {
            let service = snapshot.services.get(backend.service).map(|s| (s.vip, s.port, s.proto));
            ipvs_labels(service, (backend.addr, backend.port))
        })
        .collect();
    if view.backend_connections.len() == snapshot.backends.len() {
        type Pick = fn(&BackendConnections) -> u64;
        let gauges: [(&str, &str, Pick); 2] = [
            (
                "node_ipvs_backend_connections_active",
                "The current active connections by local and remote address.",
                |c| c.active,
            ),
            (
                "node_ipvs_backend_connections_inactive",
                "The current inactive connections by local and remote address.",
                |c| c.inactive,
            ),
        ];
        for (name, help, pick) in gauges {
            out.family(name, Kind::Gauge, help);
            for (labels, connections) in backend_labels.iter().zip(view.backend_connections) {
                out.sample(name, &borrow(labels), pick(connections));
            }
        }
    }
    out.family(
        "node_ipvs_backend_weight",
        Kind::Gauge,
        "The current backend weight by local and remote address.",
    );
    for (labels, backend) in backend_labels.iter().zip(&snapshot.backends) {
        out.sample("node_ipvs_backend_weight", &borrow(labels), u64::from(backend.weight));
    }
    for (field, help, read) in IPVS_TOTALS {
        let name = format!("xlb_backend_{field}_total");
        out.family(&name, Kind::Counter, &format!("{help} Per backend."));
        for (index, labels) in backend_labels.iter().enumerate() {
            let counters = view.backends.get(index).copied().unwrap_or_default();
            out.sample(&name, &borrow(labels), read(&counters));
        }
    }

    // Per service: the sums of its backends.
    let services: Vec<([(&str, String); 3], BackendCounters)> = snapshot
        .services
        .iter()
        .enumerate()
        .map(|(index, service)| {
            let mut sum = view.retired_services.get(index).copied().unwrap_or_default();
            for counters in view.backends.get(service.backends.clone()).unwrap_or_default() {
                sum.add(counters);
            }
            let labels = [
                ("local_address", service.vip.to_string()),
                ("local_port", service.port.to_string()),
                ("proto", service.proto.name().to_uppercase()),
            ];
            (labels, sum)
        })
        .collect();
    for (field, help, read) in IPVS_TOTALS {
        let name = format!("xlb_service_{field}_total");
        out.family(&name, Kind::Counter, &format!("{help} Per virtual service."));
        for (labels, counters) in &services {
            out.sample(&name, &borrow(labels), read(counters));
        }
    }

    // Per core: the pipeline's counters, drops by reason, tables.
    for &stat in Stat::ALL {
        let name = format!("xlb_core_{}_total", stat.name());
        out.family(&name, Kind::Counter, stat_help(stat));
        for (core, id) in cores.iter().zip(&core_ids) {
            out.sample(&name, &[("core", id)], core.report.counters.get(stat));
        }
    }
    out.family("xlb_core_drops_total", Kind::Counter, "Frames dropped, by reason.");
    for (core, id) in cores.iter().zip(&core_ids) {
        for &reason in DropReason::ALL {
            let drops = core.report.counters.drops(reason);
            out.sample("xlb_core_drops_total", &[("core", id), ("reason", reason.name())], drops);
        }
    }
    type CoreFigure = fn(&CoreReport) -> u64;
    let tables: [(&str, Kind, &str, CoreFigure); 7] = [
        ("xlb_core_conntrack_flows", Kind::Gauge, "Flows in the core's connection table.", |r| {
            r.flows as u64
        }),
        (
            "xlb_core_conntrack_embryonic",
            Kind::Gauge,
            "TCP flows in SYN state in the core's connection table (bounded by max_embryonic).",
            |r| r.embryonic as u64,
        ),
        ("xlb_core_neighbors", Kind::Gauge, "Entries in the core's neighbour table.", |r| {
            r.neighbors as u64
        }),
        (
            "xlb_core_held_frames",
            Kind::Gauge,
            "Frames held now, waiting for their next hop's MAC.",
            |r| r.held as u64,
        ),
        (
            "xlb_core_unroutable_total",
            Kind::Counter,
            "Frames to leave by an interface the core has no port on, or that overflowed its \
             staging area.",
            |r| r.unroutable,
        ),
        (
            "xlb_core_housekeeping_deferred_total",
            Kind::Counter,
            "Times due housekeeping (expiry sweep, report) waited behind a full receive batch.",
            |r| r.housekeeping_deferred,
        ),
        (
            "xlb_core_snapshot_generation",
            Kind::Gauge,
            "Generation of the configuration snapshot the core runs.",
            |r| r.generation,
        ),
    ];
    for (name, kind, help, figure) in tables {
        out.family(name, kind, help);
        for (core, id) in cores.iter().zip(&core_ids) {
            out.sample(name, &[("core", id)], figure(core.report));
        }
    }
    if cores.iter().any(|c| c.conntrack.is_some()) {
        for (field, help, read) in CONNTRACK {
            let name = format!("xlb_core_conntrack_{field}_total");
            out.family(&name, Kind::Counter, help);
            for (core, id) in cores.iter().zip(&core_ids) {
                if let Some(conntrack) = &core.conntrack {
                    out.sample(&name, &[("core", id)], read(conntrack));
                }
            }
        }
    }

    // Per core and interface: the AF_XDP ports (a worker serving several queues of one
    // interface reports their sum).
    let mut ports: Vec<(&str, &str, PortStats)> = Vec::new();
    for (core, id) in cores.iter().zip(&core_ids) {
        for (iface, stats) in &core.report.ports {
            let interface =
                snapshot.interfaces.get(iface.index()).map(|i| i.name.as_str()).unwrap_or("");
            match ports.iter_mut().find(|(c, i, _)| *c == id.as_str() && *i == interface) {
                Some((_, _, sum)) => sum.add(stats),
                None => ports.push((id, interface, *stats)),
            }
        }
    }
    for (field, help, read) in PORT {
        let name = format!("xlb_port_{field}_total");
        out.family(&name, Kind::Counter, help);
        for (core, interface, stats) in &ports {
            out.sample(&name, &[("core", core), ("interface", interface)], read(stats));
        }
    }
    let name = "xlb_port_rx_batches_by_size_total";
    out.family(
        name,
        Kind::Counter,
        "Receive batches by frames in the batch: size is a power-of-two range (\"64\" is a \
         full batch); they sum to xlb_port_batches_total.",
    );
    let sizes: Vec<String> = (0..BATCH_SIZE_BUCKETS)
        .map(|index| {
            let low = batch_size_bucket_floor(index);
            let high = (2 * low - 1).min(BATCH);
            if low == high { low.to_string() } else { format!("{low}-{high}") }
        })
        .collect();
    for (core, interface, stats) in &ports {
        for (size, count) in sizes.iter().zip(&stats.rx_batch_sizes) {
            out.sample(name, &[("core", core), ("interface", interface), ("size", size)], *count);
        }
    }
    let name = "xlb_port_tx_backlog_frames";
    out.family(
        name,
        Kind::Gauge,
        "Frames left on the TX ring, not yet taken by the kernel, after the last flush.",
    );
    for (core, interface, stats) in &ports {
        out.sample(name, &[("core", core), ("interface", interface)], stats.tx_backlog);
    }

    // Preferred busy polling, per socket, and the kernel's count of what it received.
    let busy = view.control.busy_poll;
    for (name, help, read) in [
        (
            "xlb_busy_poll_engaged",
            "1 if the worker runs the socket's NAPI itself (busy polling on and a NAPI linked).",
            (|b: &BusyPollFigures| u64::from(b.engaged)) as fn(&BusyPollFigures) -> u64,
        ),
        (
            "xlb_busy_poll_napi_id",
            "The NAPI id busy polling drives for the socket: linked to the AF_XDP socket, or to \
             its marker socket (0: none).",
            |b| u64::from(b.napi_id),
        ),
        (
            "xlb_busy_poll_marker",
            "1 if the NAPI is driven through a marker UDP socket (--busy-poll-marker: the \
             driver links none to the AF_XDP socket, as veth).",
            |b| u64::from(b.marker),
        ),
    ] {
        out.family(name, Kind::Gauge, help);
        for port in busy {
            let queue = port.queue.to_string();
            out.sample(name, &[("interface", &port.interface), ("queue", &queue)], read(port));
        }
    }
    if let Some(packets) = view.control.busy_poll_rx_packets {
        let name = "xlb_busy_poll_rx_packets_total";
        out.family(
            name,
            Kind::Counter,
            "Frames busy polling received in xlb's network namespace (TcpExt BusyPollRxPackets).",
        );
        out.sample(name, &[], packets);
    }

    // The box's part in a fleet.
    let name = "xlb_fleet_state";
    out.family(
        name,
        Kind::Gauge,
        "1 for the state the box is in, 0 for the other: active (answers ARP for its VIPs \
         where the mode lets it, and forwards) or standby (a VRRP standby: silent, not \
         forwarding). A standalone or bgp box is always active.",
    );
    let (mode, vrrp) = view.control.fleet;
    let state = if mode.presence(vrrp).forward_vips { "active" } else { "standby" };
    for candidate in ["active", "standby"] {
        out.sample(
            name,
            &[("mode", mode.name()), ("state", candidate)],
            u64::from(candidate == state),
        );
    }

    // Control's own clients and health checks.
    let ctl = &view.control.ctl;
    let name = "xlb_ctl_requests_served_total";
    out.family(name, Kind::Counter, "xlb ctl requests answered in full.");
    out.sample(name, &[], ctl.served);
    let name = "xlb_ctl_clients_dropped_total";
    out.family(
        name,
        Kind::Counter,
        "xlb ctl clients dropped, by reason: slow_request (no whole request in time), \
         slow_reader (did not read its response in time), overflow (too many clients waiting).",
    );
    for (reason, dropped) in [
        ("slow_request", ctl.slow_requests),
        ("slow_reader", ctl.slow_readers),
        ("overflow", ctl.overflow),
    ] {
        out.sample(name, &[("reason", reason)], dropped);
    }
    let name = "xlb_metrics_connections_refused_total";
    out.family(
        name,
        Kind::Counter,
        "Connections to the metrics server answered 503 because its most connections were \
         being served.",
    );
    out.sample(name, &[], view.control.metrics_refused);
    let health_labels: Vec<[(&str, String); 6]> =
        view.control.health.iter().map(|s| ipvs_labels(Some(s.service), s.backend)).collect();
    for (field, help, read) in HEALTH {
        let name = format!("xlb_health_{field}_total");
        out.family(&name, Kind::Counter, help);
        for (labels, status) in health_labels.iter().zip(view.control.health) {
            out.sample(&name, &borrow(labels), read(&status.counters));
        }
    }
    let name = "xlb_backend_state";
    out.family(
        name,
        Kind::Gauge,
        "The backend's state apart from its weight, 1 for the one it is in: up, drained (weight \
         0 set by the operator), down (by its health check), unknown (no probe yet).",
    );
    for (labels, status) in health_labels.iter().zip(view.control.health) {
        for state in BackendState::ALL {
            let [a, b, c, d, e, f] = borrow(labels);
            let labels = [a, b, c, d, e, f, ("state", state.name())];
            out.sample(name, &labels, u64::from(status.state() == state));
        }
    }

    // Batch latency.
    let name = "xlb_batch_duration_seconds";
    out.family(
        name,
        Kind::Summary,
        "Time a worker took per non-empty iteration (receive, process, transmit, flush); \
         quantiles over the last few seconds.",
    );
    for (core, id) in cores.iter().zip(&core_ids) {
        let latency = &core.latency;
        for (index, quantile) in QUANTILES.iter().enumerate() {
            let value = latency.window.map_or(f64::NAN, |w| seconds(w.at(index)));
            out.sample(name, &[("core", id), ("quantile", &quantile.to_string())], value);
        }
        out.sample(&format!("{name}_sum"), &[("core", id)], seconds(latency.sum_ns));
        out.sample(&format!("{name}_count"), &[("core", id)], latency.count);
    }
    let max = "xlb_batch_duration_max_seconds";
    out.family(max, Kind::Gauge, "Longest non-empty iteration over the last few seconds.");
    for (core, id) in cores.iter().zip(&core_ids) {
        let value = core.latency.window.map_or(f64::NAN, |w| seconds(w.max_ns));
        out.sample(max, &[("core", id)], value);
    }
    out.text
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// node_exporter's labels of a backend of a service (empty service labels if the service
/// is unknown). Addresses are written as node_exporter writes them: IPv6 unbracketed
/// (`2001:db8::10`), the port in its own label.
fn ipvs_labels(service: Option<ServiceKey>, backend: BackendKey) -> [(&'static str, String); 6] {
    [
        ("local_address", service.map(|s| s.0.to_string()).unwrap_or_default()),
        ("local_port", service.map(|s| s.1.to_string()).unwrap_or_default()),
        ("remote_address", backend.0.to_string()),
        ("remote_port", backend.1.to_string()),
        ("proto", service.map(|s| s.2.name().to_uppercase()).unwrap_or_default()),
        ("local_mark", String::new()),
    ]
}

fn borrow<'a, const N: usize>(labels: &'a [(&'a str, String); N]) -> [(&'a str, &'a str); N] {
    labels.each_ref().map(|(name, value)| (*name, value.as_str()))
}

/// One exported field of a struct of counters: its name in the family's name, its HELP
/// text, and how to read it.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

/// node_exporter's names and HELP texts.
const IPVS_TOTALS: [Field<BackendCounters>; 5] = [
    ("connections", "The total number of connections made.", |c| c.connections),
    ("incoming_packets", "The total number of incoming packets.", |c| c.in_packets),
    ("outgoing_packets", "The total number of outgoing packets.", |c| c.out_packets),
    ("incoming_bytes", "The total amount of incoming data.", |c| c.in_bytes),
    ("outgoing_bytes", "The total amount of outgoing data.", |c| c.out_bytes),
];

const CONNTRACK: [Field<ConntrackStats>; 7] = [
    ("inserted", "Flows inserted in the core's connection table.", |c| c.inserted),
    ("expired", "Expired flows removed from the core's connection table.", |c| c.expired),
    (
        "evicted_embryonic",
        "Live embryonic flows evicted to make room or to keep within max_embryonic.",
        |c| c.evicted_embryonic,
    ),
    (
        "evicted_udp",
        "Live UDP flows evicted to make room (unreplied ones; replied ones while UDP holds \
         more than half the table).",
        |c| c.evicted_udp,
    ),
    (
        "refused_full",
        "Flows refused because the table or their bucket held no flow that may be evicted.",
        |c| c.refused_full,
    ),
    ("refused_flood", "DR SYNs refused by the SYN bound (forwarded statelessly).", |c| {
        c.refused_flood
    }),
    ("removed", "Flows removed explicitly (port reuse).", |c| c.removed),
];

const PORT: [Field<PortStats>; 19] = [
    ("rx_packets", "Frames received by the core's AF_XDP sockets on the interface.", |p| {
        p.rx_packets
    }),
    ("tx_packets", "Frames transmitted by the core's AF_XDP sockets on the interface.", |p| {
        p.tx_packets
    }),
    ("batches", "Receive calls that returned frames.", |p| p.batches),
    ("tx_ring_full", "Frames dropped because the TX ring was full.", |p| p.tx_ring_full),
    ("send_no_frame", "Frames to send with no free UMEM frame to copy them into.", |p| {
        p.send_no_frame
    }),
    ("send_too_big", "Frames to send larger than a UMEM frame.", |p| p.send_too_big),
    ("tx_wakeups", "Flushes that had to kick the kernel to transmit.", |p| p.tx_wakeups),
    ("tx_kicks", "Transmit kicks (sendto calls), one or more per flush that needs one.", |p| {
        p.tx_kicks
    }),
    (
        "tx_kick_again",
        "Transmit kicks the kernel answered EAGAIN (it stopped early, frames may remain on \
         the TX ring).",
        |p| p.tx_kick_again,
    ),
    (
        "tx_kick_dropped",
        "Transmit kicks the kernel answered EBUSY (copy mode: the driver dropped a frame).",
        |p| p.tx_kick_dropped,
    ),
    ("tx_kick_errors", "Transmit kicks that failed otherwise (ENOBUFS, ENETDOWN, ...).", |p| {
        p.tx_kick_errors
    }),
    (
        "tx_backlog_flushes",
        "Copy-mode flushes that ended with frames still on the TX ring (kick bound reached or an \
         error).",
        |p| p.tx_backlog_flushes,
    ),
    ("rx_wakeups", "Fill-ring wakeups (poll without waiting) the kernel asked for.", |p| {
        p.rx_wakeups
    }),
    ("waits", "Waits for frames when idle (poll calls).", |p| p.waits),
    ("pass_reinjected", "Passed frames handed to the kernel through the TAP device.", |p| {
        p.pass_reinjected
    }),
    ("pass_reinject_failed", "Passed frames the kernel refused at the TAP device: lost.", |p| {
        p.pass_reinject_failed
    }),
    ("pass_unreinjectable", "Passed frames with no TAP device to reach the kernel: lost.", |p| {
        p.pass_unreinjectable
    }),
    (
        "rx_kernel_dropped",
        "Frames the kernel dropped before the receive ring (e.g. longer than a UMEM frame).",
        |p| p.rx_kernel_dropped,
    ),
    (
        "rx_too_many_buffers",
        "Multi-buffer packets dropped: more buffers than a packet may span, or cut off.",
        |p| p.rx_too_many_buffers,
    ),
];

/// The health monitor's counts per backend.
const HEALTH: [Field<HealthCounters>; 6] = [
    ("probes_ok", "Health probes of the backend that passed.", |h| h.probes_ok),
    ("probes_failed", "Health probes of the backend that failed.", |h| h.probes_failed),
    (
        "passive_events",
        "Passive signs seen in the backend's traffic (RST, ICMP unreachable, SYN resent \
         unanswered, handshake answered).",
        |h| h.passive_events,
    ),
    (
        "early_probes",
        "Times passive signs made the up backend suspect and brought its next probe forward.",
        |h| h.early_probes,
    ),
    ("went_down", "Times health checks took the backend down.", |h| h.went_down),
    ("came_up", "Times health checks brought the backend up.", |h| h.came_up),
];

/// HELP text of a per-core [`Stat`] family.
fn stat_help(stat: Stat) -> &'static str {
    match stat {
        Stat::RxPackets => "Frames the pipeline processed.",
        Stat::RxBytes => "Bytes of the frames the pipeline processed.",
        Stat::TxPackets => "Frames the pipeline sent out (verdict Tx).",
        Stat::PassPackets => {
            "Frames the pipeline passed (not xlb's); on AF_XDP, what became of them is in \
             xlb_port_pass_reinjected_total and the two lost counts."
        }
        Stat::DropPackets => "Frames dropped, all reasons.",
        Stat::HeldPackets => "Frames held waiting for a neighbour's MAC.",
        Stat::ReleasedPackets => "Held frames sent once their neighbour resolved.",
        Stat::HeldExpired => "Held frames given up because their neighbour never answered.",
        Stat::TunnelledPackets => {
            "Frames forwarded wrapped for a tunnel real server (their copy is also emitted)."
        }
        Stat::TunnelRefragmented => {
            "Tunnelled IPv4 packets without DF too big for the tunnel, cut into fragments that fit."
        }
        Stat::EmittedPackets => "Frames the pipeline sent on its own (ARP, released frames).",
        Stat::EmitOverflow => "Frames the pipeline wanted to send on its own but had no room for.",
        Stat::ArpRepliesSent => "ARP replies sent.",
        Stat::ArpRequestsSent => "ARP requests sent.",
        Stat::GratuitousArpSent => "Gratuitous ARP sent.",
        Stat::NeighborsLearned => "Neighbours learned.",
        Stat::NeighborTableFull => "Neighbours not learned because the table was full.",
        Stat::NeighborsEvicted => "Learned neighbours evicted (table full, or stale).",
        Stat::NeighborsIgnored => "Relayed ARP not learned (sender off-subnet or not unicast).",
        Stat::ArpConflicts => "ARP from another host claiming a VIP or local address.",
        Stat::ArpProbesSent => "ARP probes sent for a VIP before announcing it.",
        Stat::NdpAdvertsSent => "Neighbour advertisements answering solicitations for VIPs.",
        Stat::NdpSolicitsSent => "Neighbour solicitations sent for next hops.",
        Stat::UnsolicitedNdpSent => "Unsolicited neighbour advertisements sent for VIPs.",
        Stat::NdpConflicts => "NDP from another host claiming a VIP or local address.",
        Stat::NdpProbesSent => "Duplicate address detection probes sent for a VIP.",
        Stat::IcmpEchoReplies => "ICMP echo replies sent for VIPs.",
        Stat::IcmpErrorsForwarded => "ICMP errors forwarded to the flow's backend or client.",
        Stat::NewFlows => "Connections scheduled to a backend.",
        Stat::ReusedFlows => "SYNs reopening a closing or closed flow, scheduled anew.",
        Stat::RescheduledFlows => {
            "Flows scheduled anew: their backend was removed by its health check."
        }
        Stat::RedirectedSyns => {
            "Client SYNs on a live flow of a drained or down backend, scheduled anew."
        }
        Stat::StatelessPackets => "DR packets forwarded by consistent hashing alone.",
        Stat::CrossCoreHits => "Packets whose flow was found in another core's table.",
        Stat::MssClamped => "TCP SYNs of tunnel services whose MSS was lowered to mss_clamp.",
        Stat::ExpiredFlows => "Flows expired.",
        Stat::PersistentFollowed => "New connections sent where their persistence template said.",
        Stat::PersistentTableFull => {
            "New connections of persistent services scheduled without a template (table full)."
        }
        Stat::PersistentBusy => {
            "New connections of persistent services scheduled without a template (another \
             core was writing it)."
        }
        Stat::Ipv6TableRefused => "Grown IPv6 connection tables a core refused (held flows).",
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// A sample's value: counters print as integers, the rest as Prometheus floats.
trait SampleValue {
    fn write(&self, out: &mut String);
}

impl SampleValue for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// The text being built.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl SampleValue) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label_value(value));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        value.write(&mut self.text);
        self.text.push('\n');
    }
}

/// A label value as the text format writes it: `\` as `\\`, `"` as `\"`, newline as `\n`.
pub fn escape_label_value(value: &str) -> String {
    escape(value, true)
}

/// HELP text as the text format writes it: `\` as `\\`, newline as `\n`.
pub fn escape_help(help: &str) -> String {
    escape(help, false)
}

fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Config, stats};
    use crate::report::Counters;
    use crate::snapshot::IfaceId;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    /// One sample line, parsed.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    impl Sample {
        fn label(&self, name: &str) -> Option<&str> {
            self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
    }

    fn is_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(name: &str) -> bool {
        is_metric_name(name) && !name.contains(':') && !name.starts_with("__")
    }

    /// Parses `"...` (after the opening quote) up to the closing quote; returns the value
    /// and the rest after the quote.
    fn unescape_quoted(text: &str) -> Result<(String, &str), String> {
        let mut value = String::new();
        let mut chars = text.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => return Ok((value, &text[at + 1..])),
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                '\n' => return Err("raw newline in a label value".into()),
                c => value.push(c),
            }
        }
        Err("unterminated label value".into())
    }

    fn parse_value(text: &str) -> Result<f64, String> {
        match text {
            "NaN" => Ok(f64::NAN),
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            _ => text.parse::<f64>().map_err(|e| format!("value {text:?}: {e}")),
        }
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..end];
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = rest.find('=').ok_or("label without =")?;
                let label = &rest[..eq];
                if !is_label_name(label) {
                    return Err(format!("bad label name {label:?}"));
                }
                let quoted = rest[eq + 1..].strip_prefix('"').ok_or("unquoted label value")?;
                let (value, after) = unescape_quoted(quoted)?;
                if labels.iter().any(|(l, _)| l == label) {
                    return Err(format!("label {label} twice"));
                }
                labels.push((label.to_string(), value));
                rest = after.strip_prefix(',').unwrap_or(after);
                if !rest.starts_with('}') && !after.starts_with(',') {
                    return Err("labels not separated by ,".into());
                }
            }
        }
        let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
        Ok(Sample { name: name.to_string(), labels, value: parse_value(value)? })
    }

    /// A small checker of the text format: panics naming the line that breaks a rule of the
    /// module's invariants; returns the samples.
    fn check(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "the text ends with a newline");
        let mut samples = Vec::new();
        let mut helped = HashSet::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut seen = HashSet::new();
        for (number, line) in text.lines().enumerate() {
            let fail = |why: &str| -> ! { panic!("line {}: {why}: {line:?}", number + 1) };
            if let Some(help) = line.strip_prefix("# HELP ") {
                let (name, text) = help.split_once(' ').unwrap_or_else(|| fail("empty HELP"));
                if !is_metric_name(name) || !helped.insert(name.to_string()) {
                    fail("bad or repeated HELP");
                }
                if text.replace("\\\\", "").replace("\\n", "").contains('\\') {
                    fail("bad escape in HELP");
                }
                if let Some(previous) = current.replace(name.to_string()) {
                    done.insert(previous);
                }
            } else if let Some(kind) = line.strip_prefix("# TYPE ") {
                let (name, kind) = kind.split_once(' ').unwrap_or_else(|| fail("no type"));
                if current.as_deref() != Some(name) || types.contains_key(name) {
                    fail("TYPE not right after its HELP, or repeated");
                }
                if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind) {
                    fail("unknown type");
                }
                if kind == "counter" && !name.ends_with("_total") {
                    fail("a counter's name ends in _total");
                }
                types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with('#') || line.is_empty() {
                fail("stray comment or empty line");
            } else {
                let sample = parse_sample(line).unwrap_or_else(|why| fail(&why));
                let family = match current.as_deref() {
                    Some(f) if types.contains_key(f) => f.to_string(),
                    _ => fail("a sample before its family's TYPE"),
                };
                let base = if types[&family] == "summary" {
                    let base = sample
                        .name
                        .strip_suffix("_sum")
                        .or_else(|| sample.name.strip_suffix("_count"))
                        .unwrap_or(&sample.name);
                    if base == sample.name && sample.label("quantile").is_none() {
                        fail("a summary sample without a quantile");
                    }
                    base.to_string()
                } else {
                    sample.name.clone()
                };
                if base != family || done.contains(&base) {
                    fail("a sample outside its family's block");
                }
                if types[&family] == "counter" && (sample.value.is_nan() || sample.value < 0.0) {
                    fail("a counter is a non-negative number");
                }
                let mut key = sample.labels.clone();
                key.sort();
                if !seen.insert((sample.name.clone(), key)) {
                    fail("a repeated series");
                }
                samples.push(sample);
            }
        }
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(l, v)| s.label(l) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    const CONFIG: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.2/24"
        mac = "02:00:0a:01:01:02"

        [[service]]
        vip = "10.1.1.10"
        port = 80
        proto = "tcp"
        forward = "nat"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 8080
        weight = 3
        [[service.backend]]
        addr = "10.1.1.12"
        port = 8080

        [[service]]
        vip = "10.1.1.10"
        port = 53
        proto = "udp"
        forward = "dr"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 53
    "#;

    fn snapshot() -> Snapshot {
        Snapshot::build(&Config::parse(CONFIG, "t.toml").unwrap(), 1).unwrap()
    }

    fn backend(connections: u64) -> BackendCounters {
        BackendCounters {
            connections,
            in_packets: connections * 10,
            in_bytes: connections * 1000,
            out_packets: connections * 8,
            out_bytes: connections * 9000,
        }
    }

    fn report(core: u16, backends: [u64; 3]) -> CoreReport {
        let mut counters = Counters::new(3);
        counters.backends = backends.map(backend).to_vec();
        counters.add(Stat::RxPackets, 100 + u64::from(core));
        counters.drop(DropReason::NoService);
        counters.drop(DropReason::NoService);
        let port = PortStats { rx_packets: 100, tx_packets: 90, batches: 7, ..Default::default() };
        let mut latency = BatchLatency::new();
        for micros in 1..=100 {
            latency.record(Duration::from_micros(micros));
        }
        CoreReport {
            core,
            generation: 1,
            counters,
            // Two queues of one interface on this core: reported as their sum.
            ports: vec![(IfaceId(0), port), (IfaceId(0), port)],
            flows: 5,
            embryonic: 1,
            connections: vec![crate::conntrack::ConnectionCount { active: 1, inactive: 0 }; 3],
            conntrack: ConntrackStats::default(),
            neighbors: 2,
            held: 1,
            unresolved: Vec::new(),
            unresolved6: Vec::new(),
            unroutable: 0,
            housekeeping_deferred: 3,
            latency,
        }
    }

    /// A view of `cores` with `backends`' counters: no connections known, nothing retired,
    /// nothing counted by control.
    fn view_of<'a>(
        snapshot: &'a Snapshot,
        backends: &'a [BackendCounters],
        cores: &'a [CoreMetrics<'a>],
    ) -> MetricsView<'a> {
        MetricsView {
            snapshot,
            backends,
            backend_connections: &[],
            retired_services: &[],
            retired_total: BackendCounters::default(),
            cores,
            control: ControlFigures::default(),
        }
    }

    fn render_two_cores(conntrack: Option<ConntrackStats>) -> String {
        let snapshot = snapshot();
        // Given out of order: rendered sorted.
        let reports = [report(1, [2, 0, 1]), report(0, [3, 4, 0])];
        let totals = stats::sum_backends(3, reports.iter().map(|r| r.counters.backends.as_slice()));
        let cores: Vec<CoreMetrics<'_>> = reports
            .iter()
            .map(|report| CoreMetrics {
                report,
                latency: LatencySummary::cumulative(&report.latency),
                conntrack,
            })
            .collect();
        let view = view_of(&snapshot, &totals, &cores);
        render(&view)
    }

    #[test]
    fn ipv6_addresses_are_unbracketed_in_labels_as_node_exporter_writes_them() {
        let vip: std::net::IpAddr = "2001:db8::10".parse().unwrap();
        let labels = ipvs_labels(
            Some((vip, 80, crate::flow::Proto::Tcp)),
            ("2001:db8::11".parse().unwrap(), 8080),
        );
        assert_eq!(
            borrow(&labels),
            [
                ("local_address", "2001:db8::10"),
                ("local_port", "80"),
                ("remote_address", "2001:db8::11"),
                ("remote_port", "8080"),
                ("proto", "TCP"),
                ("local_mark", ""),
            ]
        );
    }

    /// An IPv6 backend's figures reach its labels by identity through the ledger (the
    /// daemon's path), its addresses unbracketed, beside the IPv4 service's.
    #[test]
    fn ipv6_backends_are_exported_with_unbracketed_labels() {
        let dual = CONFIG.replace(
            "mac = \"02:00:0a:01:01:02\"\n",
            "mac = \"02:00:0a:01:01:02\"\naddr6 = \"2001:db8:1::2/64\"\n",
        ) + "[[service]]\nvip = \"2001:db8:1::10\"\nport = 80\nforward = \"nat\"\n\
             [[service.backend]]\naddr = \"2001:db8:1::11\"\nport = 8080\nweight = 4\n";
        let snapshot =
            Arc::new(Snapshot::build(&Config::parse(&dual, "t.toml").unwrap(), 1).unwrap());
        assert_eq!(snapshot.backends.len(), 4);
        let ledger = Ledger::new(snapshot);
        let mut report = report(0, [1, 2, 3]);
        report.counters.backends.push(backend(7));
        let text = render_reports(
            &ledger,
            &[report],
            &mut LatencyWindow::default(),
            &[],
            ControlFigures::default(),
        );
        let samples = check(&text);
        let labels = [
            ("local_address", "2001:db8:1::10"),
            ("local_port", "80"),
            ("remote_address", "2001:db8:1::11"),
            ("remote_port", "8080"),
            ("proto", "TCP"),
        ];
        assert_eq!(find(&samples, "node_ipvs_backend_weight", &labels).value, 4.0);
        let value = |name: &str| find(&samples, name, &labels).value;
        assert_eq!(value("xlb_backend_connections_total"), 7.0);
        assert_eq!(value("xlb_backend_incoming_bytes_total"), 7000.0);
        let service = [("local_address", "2001:db8:1::10"), ("local_port", "80")];
        assert_eq!(find(&samples, "xlb_service_connections_total", &service).value, 7.0);
        assert!(!text.contains("[2001:"), "IPv6 labels are unbracketed:\n{text}");
        // The IPv4 backends keep theirs.
        let four = [("remote_address", "10.1.1.12"), ("remote_port", "8080")];
        assert_eq!(find(&samples, "xlb_backend_connections_total", &four).value, 2.0);
    }

    #[test]
    fn golden_snippets() {
        let text = render_two_cores(None);
        check(&text);
        let labels = r#"local_address="10.1.1.10",local_port="80",remote_address="10.1.1.11",remote_port="8080",proto="TCP",local_mark="""#;
        let expected = [
            "# HELP node_ipvs_connections_total The total number of connections made.\n\
             # TYPE node_ipvs_connections_total counter\n\
             node_ipvs_connections_total 10\n"
                .to_string(),
            format!(
                "# TYPE node_ipvs_backend_weight gauge\n\
                 node_ipvs_backend_weight{{{labels}}} 3\n"
            ),
            format!("xlb_backend_incoming_bytes_total{{{labels}}} 5000\n"),
            "# TYPE xlb_service_connections_total counter\n\
             xlb_service_connections_total{local_address=\"10.1.1.10\",local_port=\"80\",proto=\"TCP\"} 9\n\
             xlb_service_connections_total{local_address=\"10.1.1.10\",local_port=\"53\",proto=\"UDP\"} 1\n"
                .to_string(),
            "xlb_core_rx_packets_total{core=\"0\"} 100\n\
             xlb_core_rx_packets_total{core=\"1\"} 101\n"
                .to_string(),
            "xlb_core_drops_total{core=\"0\",reason=\"truncated\"} 0\n".to_string(),
            "xlb_core_drops_total{core=\"1\",reason=\"no_service\"} 2\n".to_string(),
            "xlb_core_housekeeping_deferred_total{core=\"0\"} 3\n\
             xlb_core_housekeeping_deferred_total{core=\"1\"} 3\n"
                .to_string(),
            "xlb_port_rx_packets_total{core=\"0\",interface=\"eth0\"} 200\n\
             xlb_port_rx_packets_total{core=\"1\",interface=\"eth0\"} 200\n"
                .to_string(),
            // 1 to 100 µs: quantiles are the top of their 1% bucket (50 µs -> 50.175 µs).
            "xlb_batch_duration_seconds{core=\"0\",quantile=\"0.5\"} 0.000050175\n\
             xlb_batch_duration_seconds{core=\"0\",quantile=\"0.99\"} 0.000099327\n\
             xlb_batch_duration_seconds{core=\"0\",quantile=\"0.999\"} 0.000100351\n\
             xlb_batch_duration_seconds_sum{core=\"0\"} 0.00505\n\
             xlb_batch_duration_seconds_count{core=\"0\"} 100\n"
                .to_string(),
        ];
        for snippet in expected {
            assert!(text.contains(&snippet), "missing:\n{snippet}\nin:\n{text}");
        }
        // Nothing xlb does not know is made up: no connection gauges, no conntrack counters.
        assert!(!text.contains("node_ipvs_backend_connections_active"));
        assert!(!text.contains("xlb_core_conntrack_inserted_total"));
    }

    #[test]
    fn every_family_parses_and_per_core_families_cover_every_core() {
        let text = render_two_cores(Some(ConntrackStats { inserted: 4, ..Default::default() }));
        let samples = check(&text);
        let named = |name: &str| samples.iter().filter(|s| s.name == name).count();
        assert_eq!(named("xlb_core_drops_total"), 2 * DropReason::COUNT);
        for stat in Stat::ALL {
            assert_eq!(named(&format!("xlb_core_{}_total", stat.name())), 2, "{stat}");
        }
        assert_eq!(named("node_ipvs_backend_weight"), 3);
        assert_eq!(named("xlb_core_conntrack_inserted_total"), 2);
        assert_eq!(
            find(&samples, "xlb_core_conntrack_inserted_total", &[("core", "1")]).value,
            4.0
        );
        // The totals are the sums of the backends.
        let backends: f64 = samples
            .iter()
            .filter(|s| s.name == "xlb_backend_outgoing_bytes_total")
            .map(|s| s.value)
            .sum();
        assert_eq!(find(&samples, "node_ipvs_outgoing_bytes_total", &[]).value, backends);
        assert_eq!(backends, 10.0 * 9000.0);
    }

    #[test]
    fn backend_connections_are_exported_when_known() {
        let snapshot = snapshot();
        let totals = vec![BackendCounters::default(); 3];
        let connections = [
            BackendConnections { active: 7, inactive: 1 },
            BackendConnections::default(),
            BackendConnections { active: 0, inactive: 4 },
        ];
        let view =
            MetricsView { backend_connections: &connections, ..view_of(&snapshot, &totals, &[]) };
        let samples = check(&render(&view));
        let udp = [("proto", "UDP"), ("remote_address", "10.1.1.11"), ("local_port", "53")];
        assert_eq!(find(&samples, "node_ipvs_backend_connections_inactive", &udp).value, 4.0);
        let tcp = [("proto", "TCP"), ("remote_address", "10.1.1.11"), ("local_port", "80")];
        assert_eq!(find(&samples, "node_ipvs_backend_connections_active", &tcp).value, 7.0);
        assert_eq!(find(&samples, "node_ipvs_backend_weight", &tcp).value, 3.0);
    }

    /// What control counts itself, and the kernel's drops before the receive ring, reach
    /// Prometheus: `xlb ctl` clients served and dropped by reason, scrapes refused, and the
    /// health counts of every monitored backend, one the snapshot left out included.
    #[test]
    fn control_health_and_kernel_drop_counters_are_exported() {
        use crate::control::health::BackendHealth;
        use crate::flow::Proto;
        use std::net::Ipv4Addr;

        let snapshot = snapshot();
        let mut core = report(0, [0; 3]);
        // Two queues of one interface: their sum.
        core.ports[0].1.rx_kernel_dropped = 3;
        core.ports[1].1.rx_kernel_dropped = 4;
        let cores =
            [CoreMetrics { report: &core, latency: LatencySummary::default(), conntrack: None }];
        let web = (Ipv4Addr::new(10, 1, 1, 10).into(), 80, Proto::Tcp);
        let status = |backend, counters| BackendStatus {
            service: web,
            backend,
            weight: 1,
            health: BackendHealth::new(),
            counters,
        };
        let mut health = [
            status(
                (Ipv4Addr::new(10, 1, 1, 11).into(), 8080),
                HealthCounters {
                    probes_ok: 40,
                    probes_failed: 3,
                    early_probes: 2,
                    ..Default::default()
                },
            ),
            // Down and removed from the snapshot (`on_failure = "remove"`): still counted.
            status(
                (Ipv4Addr::new(10, 1, 1, 12).into(), 8080),
                HealthCounters {
                    passive_events: 9,
                    early_probes: 1,
                    went_down: 1,
                    ..Default::default()
                },
            ),
        ];
        health[1].health = BackendHealth::unknown();
        let totals = vec![BackendCounters::default(); 3];
        let busy_poll = [
            BusyPollFigures {
                interface: "eth0".into(),
                queue: 0,
                engaged: true,
                napi_id: 8193,
                marker: true,
            },
            BusyPollFigures {
                interface: "eth0".into(),
                queue: 1,
                engaged: false,
                napi_id: 0,
                marker: false,
            },
        ];
        let view = MetricsView {
            control: ControlFigures {
                ctl: CtlStats { served: 12, slow_requests: 1, slow_readers: 5, overflow: 2 },
                metrics_refused: 6,
                health: &health,
                busy_poll: &busy_poll,
                busy_poll_rx_packets: Some(4321),
                fleet: (FleetMode::Vrrp, VrrpState::Active),
            },
            ..view_of(&snapshot, &totals, &cores)
        };
        let samples = check(&render(&view));
        let value = |name: &str, labels: &[(&str, &str)]| find(&samples, name, labels).value;
        assert_eq!(value("xlb_ctl_requests_served_total", &[]), 12.0);
        let dropped = "xlb_ctl_clients_dropped_total";
        assert_eq!(value(dropped, &[("reason", "slow_request")]), 1.0);
        assert_eq!(value(dropped, &[("reason", "slow_reader")]), 5.0);
        assert_eq!(value(dropped, &[("reason", "overflow")]), 2.0);
        assert_eq!(value("xlb_metrics_connections_refused_total", &[]), 6.0);
        let queue0 = [("interface", "eth0"), ("queue", "0")];
        let queue1 = [("interface", "eth0"), ("queue", "1")];
        assert_eq!(value("xlb_busy_poll_engaged", &queue0), 1.0);
        assert_eq!(value("xlb_busy_poll_napi_id", &queue0), 8193.0);
        assert_eq!(value("xlb_busy_poll_engaged", &queue1), 0.0);
        assert_eq!(value("xlb_busy_poll_napi_id", &queue1), 0.0);
        assert_eq!(value("xlb_busy_poll_marker", &queue0), 1.0);
        assert_eq!(value("xlb_busy_poll_marker", &queue1), 0.0);
        assert_eq!(value("xlb_busy_poll_rx_packets_total", &[]), 4321.0);
        let fleet = |state| [("mode", "vrrp"), ("state", state)];
        assert_eq!(value("xlb_fleet_state", &fleet("active")), 1.0);
        assert_eq!(value("xlb_fleet_state", &fleet("standby")), 0.0);
        let port = [("core", "0"), ("interface", "eth0")];
        assert_eq!(value("xlb_port_rx_kernel_dropped_total", &port), 7.0);
        let a = [
            ("local_address", "10.1.1.10"),
            ("local_port", "80"),
            ("proto", "TCP"),
            ("remote_address", "10.1.1.11"),
            ("remote_port", "8080"),
            ("local_mark", ""),
        ];
        assert_eq!(value("xlb_health_early_probes_total", &a), 2.0);
        assert_eq!(value("xlb_health_probes_ok_total", &a), 40.0);
        assert_eq!(value("xlb_health_probes_failed_total", &a), 3.0);
        let b = [("remote_address", "10.1.1.12"), ("local_port", "80")];
        assert_eq!(value("xlb_health_early_probes_total", &b), 1.0);
        assert_eq!(value("xlb_health_passive_events_total", &b), 9.0);
        assert_eq!(value("xlb_health_went_down_total", &b), 1.0);
        assert_eq!(value("xlb_health_came_up_total", &b), 0.0);
        let early = samples.iter().filter(|s| s.name == "xlb_health_early_probes_total");
        assert_eq!(early.count(), 2, "one series per monitored backend");
        // The state apart from the weight: one series per state, 1 for the backend's.
        let state = |backend: &'static str, state: &'static str| {
            value("xlb_backend_state", &[("remote_address", backend), ("state", state)])
        };
        assert_eq!([state("10.1.1.11", "up"), state("10.1.1.11", "down")], [1.0, 0.0]);
        assert_eq!([state("10.1.1.12", "unknown"), state("10.1.1.12", "up")], [1.0, 0.0]);
        let states = samples.iter().filter(|s| s.name == "xlb_backend_state");
        assert_eq!(states.count(), 8, "every state of every monitored backend");
        // Nothing counted yet: every family is there, at 0, and health has no series.
        let text = render(&MetricsView { control: ControlFigures::default(), ..view });
        let samples = check(&text);
        let standalone = |state| [("mode", "standalone"), ("state", state)];
        assert_eq!(find(&samples, "xlb_fleet_state", &standalone("active")).value, 1.0);
        assert_eq!(find(&samples, "xlb_fleet_state", &standalone("standby")).value, 0.0);
        assert_eq!(find(&samples, dropped, &[("reason", "overflow")]).value, 0.0);
        assert!(text.contains("# TYPE xlb_health_early_probes_total counter\n"));
        assert!(!samples.iter().any(|s| s.name.starts_with("xlb_health_")));
    }

    /// The port's syscall counters, its batch sizes and its TX backlog: per core and
    /// interface, two queues summed, the batch sizes summing to the batches.
    #[test]
    fn port_syscalls_batch_sizes_and_tx_backlog_are_exported() {
        let snapshot = snapshot();
        let mut core = report(0, [0; 3]);
        for (queue, (_, port)) in core.ports.iter_mut().enumerate() {
            let queue = queue as u64;
            port.tx_kicks = 10 + queue;
            port.tx_kick_again = 3;
            port.tx_kick_dropped = 1;
            port.tx_kick_errors = 2;
            port.tx_backlog_flushes = 1;
            port.tx_backlog = 5 + queue;
            port.rx_wakeups = 4;
            port.waits = 6;
            port.rx_batch_sizes = [1, 0, 0, 0, 0, 2, 4];
            port.batches = 7;
        }
        let cores =
            [CoreMetrics { report: &core, latency: LatencySummary::default(), conntrack: None }];
        let totals = vec![BackendCounters::default(); 3];
        let samples = check(&render(&view_of(&snapshot, &totals, &cores)));
        let port = [("core", "0"), ("interface", "eth0")];
        let value = |name: &str| find(&samples, name, &port).value;
        assert_eq!(value("xlb_port_tx_kicks_total"), 21.0);
        assert_eq!(value("xlb_port_tx_kick_again_total"), 6.0);
        assert_eq!(value("xlb_port_tx_kick_dropped_total"), 2.0);
        assert_eq!(value("xlb_port_tx_kick_errors_total"), 4.0);
        assert_eq!(value("xlb_port_tx_backlog_flushes_total"), 2.0);
        assert_eq!(value("xlb_port_rx_wakeups_total"), 8.0);
        assert_eq!(value("xlb_port_waits_total"), 12.0);
        assert_eq!(value("xlb_port_tx_backlog_frames"), 11.0);
        let sizes: Vec<(&str, f64)> = samples
            .iter()
            .filter(|s| s.name == "xlb_port_rx_batches_by_size_total")
            .map(|s| (s.label("size").unwrap_or(""), s.value))
            .collect();
        assert_eq!(
            sizes,
            [
                ("1", 2.0),
                ("2-3", 0.0),
                ("4-7", 0.0),
                ("8-15", 0.0),
                ("16-31", 0.0),
                ("32-63", 4.0),
                ("64", 8.0)
            ]
        );
        let sum: f64 = sizes.iter().map(|(_, count)| count).sum();
        assert_eq!(sum, value("xlb_port_batches_total"), "the sizes sum to the batches");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("line\nbreak"), r"line\nbreak");
        assert_eq!(escape_help("say \"hi\"\\\n"), r#"say "hi"\\\n"#);
        // An interface with an awkward name still gives a valid exposition, and the parsed
        // label is the name.
        let mut snapshot = snapshot();
        let name = "we\"ird\\na\nme";
        snapshot.interfaces[0].name = name.to_string();
        let reports = [report(0, [0; 3])];
        let cores = [CoreMetrics {
            report: &reports[0],
            latency: LatencySummary::default(),
            conntrack: None,
        }];
        let totals = vec![BackendCounters::default(); 3];
        let view = view_of(&snapshot, &totals, &cores);
        let samples = check(&render(&view));
        assert_eq!(
            find(&samples, "xlb_port_batches_total", &[("core", "0")]).label("interface"),
            Some(name)
        );
        // No batch yet: quantiles are NaN, count 0.
        assert!(
            find(&samples, "xlb_batch_duration_seconds", &[("quantile", "0.99")]).value.is_nan()
        );
        assert_eq!(find(&samples, "xlb_batch_duration_seconds_count", &[]).value, 0.0);
    }

    #[test]
    fn the_checker_rejects_what_it_should() {
        let bad = [
            "x_total 1\n", // no TYPE
            "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"1\"} 1\nx_total{a=\"1\"} 2\n", // repeat
            "# HELP x h\n# TYPE x gauge\nx 1\n# HELP y h\n# TYPE y gauge\ny 1\nx{a=\"b\"} 2\n", // interleaved
            "# HELP x h\n# TYPE x gauge\nx{a=\"b\\t\"} 1\n", // bad escape
            "# HELP x h\n# TYPE x counter\nx 1\n",           // counter without _total
            "# HELP x h\n# TYPE x gauge\nx{a=\"b\"}1\n",     // no space
            "# HELP x h\n# TYPE x summary\nx{core=\"0\"} 1\n", // no quantile
            "# HELP x h\n# TYPE x gauge\nx one\n",           // not a number
        ];
        for text in bad {
            let caught = std::panic::catch_unwind(|| check(text));
            assert!(caught.is_err(), "accepted: {text:?}");
        }
        let good = "# HELP x h\n# TYPE x summary\nx{quantile=\"0.5\"} NaN\nx_sum 0\nx_count 0\n";
        assert_eq!(check(good).len(), 3);
    }

    fn latency_of(micros: &[u64]) -> BatchLatency {
        let mut latency = BatchLatency::new();
        for &m in micros {
            latency.record(Duration::from_micros(m));
        }
        latency
    }

    #[test]
    fn latency_window_reports_recent_batches_only() {
        let mut window = LatencyWindow::new(2);
        let mut latency = latency_of(&[1; 1000]);
        let first = window.summarize(0, &latency);
        assert_eq!(first.window.unwrap().count, 1000);
        // 100 slow batches after: the window of the last render holds only them.
        for _ in 0..100 {
            latency.record(Duration::from_millis(1));
        }
        let second = window.summarize(0, &latency);
        assert_eq!(second.count, 1100, "count and sum stay cumulative");
        let recent = second.window.unwrap();
        assert_eq!(recent.count, 1100, "the window reaches back 2 renders: to the start");
        for _ in 0..10 {
            latency.record(Duration::from_millis(2));
        }
        let third = window.summarize(0, &latency).window.unwrap();
        assert_eq!(third.count, 110, "the first render's batches left the window");
        assert!((990_000..=1_010_000).contains(&third.p50_ns), "{third:?}");
        assert!((1_980_000..=2_020_000).contains(&third.p99_ns), "{third:?}");
        // Idle for two renders: nothing in the window.
        window.summarize(0, &latency);
        assert_eq!(window.summarize(0, &latency).window, None);
        // Cores are kept apart.
        assert_eq!(window.summarize(1, &latency_of(&[5])).window.unwrap().count, 1);
    }

    /// Right after a change some cores still report the previous snapshot: their figures
    /// count at once, by identity (no zeros, no gap in the series).
    #[test]
    fn render_reports_reads_each_core_through_its_own_snapshot() {
        let mut ledger = Ledger::new(Arc::new(snapshot()));
        let mut window = LatencyWindow::default();
        let mut reports = vec![report(0, [1, 0, 0]), report(1, [1, 0, 0])];
        let text = render_reports(&ledger, &reports, &mut window, &[], ControlFigures::default());
        assert_eq!(find(&check(&text), "node_ipvs_connections_total", &[]).value, 2.0);
        let mut next = snapshot();
        next.generation = 2;
        ledger.publish(Arc::new(next), &reports);
        reports[1].generation = 2;
        let text = render_reports(&ledger, &reports, &mut window, &[], ControlFigures::default());
        assert_eq!(find(&check(&text), "node_ipvs_connections_total", &[]).value, 2.0);
    }

    /// `xlb ctl -D` of a service: node_exporter's totals and the remaining service's
    /// counters never go down (Prometheus would read a reset), and what a core still on the
    /// old snapshot reports counts at once.
    #[test]
    fn counters_never_decrease_when_a_service_is_deleted() {
        let before = snapshot();
        let mut ledger = Ledger::new(Arc::new(before));
        let mut window = LatencyWindow::default();
        let reports = [report(0, [3, 4, 5])];
        let text = render_reports(&ledger, &reports, &mut window, &[], ControlFigures::default());
        let total = |text: &str| find(&check(text), "node_ipvs_connections_total", &[]).value;
        let udp = [("local_port", "53"), ("proto", "UDP")];
        let udp_total =
            |text: &str| find(&check(text), "xlb_service_connections_total", &udp).value;
        assert_eq!((total(&text), udp_total(&text)), (12.0, 5.0));
        let udp_at =
            CONFIG.find("[[service]]\n        vip = \"10.1.1.10\"\n        port = 53").unwrap();
        let after =
            Snapshot::build(&Config::parse(&CONFIG[..udp_at], "t.toml").unwrap(), 2).unwrap();
        assert_eq!(after.backends.len(), 2);
        ledger.publish(Arc::new(after), &reports);
        // The core switched and carried its backends' counters over; one more connection.
        let mut switched = report(0, [3, 5, 0]);
        switched.generation = 2;
        switched.counters.backends.truncate(2);
        let text = render_reports(
            &ledger,
            &[switched.clone()],
            &mut window,
            &[],
            ControlFigures::default(),
        );
        assert_eq!(total(&text), 13.0, "the deleted service's 5 are kept");
        // The service comes back: its backend counts anew, from the cores that have it again
        // (a core still on generation 2 dropped it), and the totals still never go down.
        let with_udp =
            Arc::new(Snapshot::build(&Config::parse(CONFIG, "t.toml").unwrap(), 3).unwrap());
        ledger.publish(with_udp, [&switched]);
        let text = render_reports(
            &ledger,
            &[switched.clone()],
            &mut window,
            &[],
            ControlFigures::default(),
        );
        assert_eq!((total(&text), udp_total(&text)), (13.0, 5.0));
        let mut back = report(0, [3, 5, 1]);
        back.generation = 3;
        let text = render_reports(&ledger, &[back], &mut window, &[], ControlFigures::default());
        assert_eq!((total(&text), udp_total(&text)), (14.0, 6.0));
    }

    proptest! {
        #[test]
        fn label_escaping_round_trips(value in any::<String>()) {
            let escaped = escape_label_value(&value);
            let quoted = format!("{escaped}\"");
            let (parsed, rest) = unescape_quoted(&quoted).unwrap();
            prop_assert_eq!(parsed, value);
            prop_assert_eq!(rest, "");
        }

        #[test]
        fn any_counters_render_valid_text(
            backends in proptest::collection::vec(any::<[u32; 5]>(), 3),
            drops in any::<u8>(),
            held in 0usize..100,
        ) {
            let snapshot = snapshot();
            let totals: Vec<BackendCounters> = backends
                .iter()
                .map(|b| BackendCounters {
                    connections: u64::from(b[0]),
                    in_packets: u64::from(b[1]),
                    in_bytes: u64::from(b[2]),
                    out_packets: u64::from(b[3]),
                    out_bytes: u64::from(b[4]),
                })
                .collect();
            let mut core = report(0, [0; 3]);
            for _ in 0..drops {
                core.counters.drop(DropReason::Flood);
            }
            core.held = held;
            let cores = [CoreMetrics {
                report: &core,
                latency: LatencySummary::cumulative(&core.latency),
                conntrack: None,
            }];
            let view = view_of(&snapshot, &totals, &cores);
            let samples = check(&render(&view));
            let connections: u64 = totals.iter().map(|b| b.connections).sum();
            prop_assert_eq!(
                find(&samples, "node_ipvs_connections_total", &[]).value,
                connections as f64
            );
            prop_assert_eq!(
                find(&samples, "xlb_core_drops_total", &[("reason", "flood")]).value,
                f64::from(drops)
            );
        }
    }
}
