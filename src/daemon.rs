//! `xlb run`: the appliance. Binds AF_XDP sockets, attaches xlb's steering program, starts
//! one pinned worker per queue, and runs the control loop until SIGINT or SIGTERM.
//!
//! Start-up, in order (any failure undoes what was done, by drop, and names the step):
//! 1. read and validate the config; lock the control socket and every interface (see
//!    [`crate::instance`]: a second `xlb run` on either stops here, before it
//!    changes anything); read each interface's index, MAC and queue count from the device
//!    (a `mac` in the config must match it); read the state file the previous run
//!    kept ([`crate::control::state`]): its health verdicts and `xlb ctl` weights are resumed,
//!    and backends it does not know are probed once before the first snapshot (bounded by
//!    the probe timeout), so a restart never admits a backend the previous run had out;
//! 2. per interface: load the steering program, remove a stale one a killed run left behind,
//!    attach it (native XDP, else generic, with a warning naming why native was refused)
//!    and give it the addresses xlb owns;
//! 3. per worker k (one per queue, at most one per core): bind queue k of every interface
//!    that has it, zero-copy if offered else copy, and put the socket in that interface's
//!    XSKMAP;
//! 4. preferred busy polling ([`busypoll::start`]): give back the device settings a killed
//!    run left; unless it is off, set the busy-poll options on every socket and, where the
//!    kernel linked a NAPI to every one (or it is forced on), tune the devices (given back
//!    when `run` returns, however it returns) and have the workers spin and drive their
//!    NAPI; otherwise one warning names why and the sockets stay in interrupt mode;
//! 5. start the workers pinned to their cores, bind the control socket (and the metrics
//!    server), say ready (log line, `--ready-file` holding the PID and removed when `run`
//!    returns, and `READY=1` to systemd: [`crate::notify`]), probe for every VIP and local
//!    address (RFC 5227, as `arping -D` does; IPv6 ones by RFC 4862 duplicate address
//!    detection) and, after [`PROBE_WAIT`], announce (gratuitous ARP, unsolicited neighbour
//!    advertisements) those no other host answered for; a VIP another host answers for
//!    is not announced, and an error line names it and the MAC.
//!
//! Signals: `xlb run` installs its SIGINT, SIGTERM and SIGHUP handlers before anything
//! else (see [`RunOptions::reload`]), so a signal during start-up is a request (stop, or
//! reload once the control loop runs), never the default action that kills xlb. A reload
//! is bracketed by `RELOADING=1` and `READY=1` to systemd, and a stop starts with
//! `STOPPING=1`.
//!
//! Workers and control talk through crossbeam channels only: control never blocks a worker
//! (workers `try_send` their reports and `try_recv` their messages; control never waits on a
//! channel, so no waker lock is ever taken).
//!
//! The control loop stops xlb with an error when an interface it runs on is deleted or
//! re-created (checked every second: its XDP program and sockets went with it).
//!
//! The control loop (this thread) gathers the workers' reports, relays the ARP the steering
//! program snooped about next hops xlb needs to every worker (see
//! [`crate::control::neighbors`]: backends, gateways, and next hops a worker reports it is
//! asking for; nothing else), logs other hosts' claims on its addresses (rate-limited), and
//! logs a line of figures now and then. Reports are summed by backend identity
//! ([`stats::Ledger`]), each read through the snapshot it was indexed by, so listings, `-Z`,
//! `--rate` and metrics carry over every change. The state file is rewritten (atomically)
//! whenever a health verdict or a runtime weight changes. On a signal it stops
//! the workers, closes the sockets, detaches the programs (the kernel would also do that if
//! xlb were killed: they are attached through bpf links), gives the devices back their
//! busy-poll settings (a killed xlb cannot: the next run does), and prints the
//! `ipvsadm -L -n --stats` table on stdout.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{Context, bail};
use crossbeam::channel::{Receiver, Sender};

use crate::conntrack::ConntrackConfig;
use crate::control::config::Config;
use crate::control::health::HealthMonitor;
use crate::control::health::PassiveEvent;
use crate::control::ipvsadm::{self, ListView, Outcome, ServiceId};
use crate::control::neighbors::{NeighborRelay, Wanted};
use crate::control::probe_routes::{self, ProbeRoutes};
use crate::control::socket::{self, CtlServer, Request, Response};
use crate::control::state::{self, Kept, State};
use crate::control::stats;
use crate::control::tunnel_probe::{ProbeDevice, TunnelProbes};
use crate::control::vip_routes::{self, VipRoutes};
use crate::control::{http, metrics};
use crate::dataplane::io::afxdp::busypoll;
use crate::dataplane::io::afxdp::groups::SolicitedGroups;
use crate::dataplane::io::afxdp::netdev::Netdev;
use crate::dataplane::io::afxdp::steer::{
    Attachment, SteerError, SteerProgram, SteerRules, XdpMode,
};
use crate::dataplane::io::afxdp::tap::{self, Tap, Tun};
use crate::dataplane::io::afxdp::xsk::{self, XskConfig, XskPort};
use crate::dataplane::pipeline::Table6;
use crate::dataplane::worker::{ControlMsg, Worker, WorkerOptions};
use crate::dataplane::{CoreSlot, Pipeline};
use crate::family::{V4, V6};
use crate::fleet::{self, Presence, VrrpState};
use crate::instance;
use crate::log::{Causes, error, info, warn};
use crate::report::{BackendCounters, CoreReport, PassiveCounters, PortStats, Stat};
use crate::sched::SchedulerKind;
use crate::snapshot::{BackendId, IfaceId, Owned, Snapshot};
use crate::time::MonotonicClock;
use crate::tuning::BusyPollMode;
use crate::wire::MacAddr;

/// How often control reads what the steering programs snooped.
const ARP_POLL_EVERY: Duration = Duration::from_millis(10);
/// How long control waits for another host to answer the ARP probes (and IPv6 duplicate
/// address detection probes) for a VIP before it announces it (RFC 5227 waits 1–2 s per
/// probe, RFC 4862 one RetransTimer of 1 s; a host on the same segment answers within
/// milliseconds).
pub const PROBE_WAIT: Duration = Duration::from_millis(500);

/// Options of `xlb run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Workers (one per queue and core); default: as many as the interfaces have queues,
    /// at most the cores available.
    pub cores: Option<usize>,
    /// Created once xlb is ready to forward.
    pub ready_file: Option<PathBuf>,
    /// Force this XDP mode (default: native, else generic).
    pub xdp_mode: Option<XdpMode>,
    /// Bind in copy mode without trying zero-copy.
    pub force_copy: bool,
    /// Keep polling when idle (dedicated cores), busy polling or not.
    pub spin: bool,
    /// Preferred busy polling ([`busypoll`]): where it engages (None: the default, auto),
    /// always, or never.
    pub busy_poll: Option<BusyPollMode>,
    /// The UDP port of the busy-poll marker sockets ([`busypoll::start`]); overrides the
    /// config's `dataplane.busy_poll_marker` (None: the config's, if any).
    pub busy_poll_marker: Option<u16>,
    /// Where the devices' settings before busy polling are recorded (default
    /// [`instance::LOCK_DIR`]).
    pub record_dir: Option<PathBuf>,
    /// Log a line of figures this often.
    pub stats_every: Option<Duration>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    pub metrics: Option<std::net::SocketAddr>,
    /// The control socket `xlb ctl` talks to (default [`socket::DEFAULT_SOCKET`]).
    pub socket: Option<PathBuf>,
    /// Name the TAP devices `PREFIX<k>` (k: the interface's position in the config) instead
    /// of after their interface ([`tap::tap_name`]); tests use it to name what they create.
    pub tap_prefix: Option<String>,
    /// Set by SIGHUP: the caller registers it before anything else, so that a SIGHUP during
    /// start-up cannot kill xlb (None: `run` registers one when the control loop starts).
    pub reload: Option<Arc<AtomicBool>>,
    /// The state file (default: [`state::DEFAULT_FILE_NAME`] next to the control socket).
    pub state: Option<PathBuf>,
}

/// Why xlb refuses to start on `netdev`, whose MTU lets in frames longer than one AF_XDP
/// buffer, when the kernel refused `what` multi-buffer needs: the MTU, the reason, the fix.
fn jumbo_refusal(netdev: &Netdev, what: &str, error: &dyn std::fmt::Display) -> String {
    format!(
        "{}: MTU {} lets in frames of up to {} bytes, longer than an AF_XDP buffer holds ({}); \
         that needs multi-buffer XDP, but {what} failed: {error}. Lower the MTU to {} or less \
         (ip link set {} mtu {}), or run a kernel and driver with multi-buffer AF_XDP",
        netdev.name,
        netdev.mtu,
        netdev.max_frame(),
        xsk::MAX_RX_FRAME,
        xsk::MAX_RX_FRAME - 18,
        netdev.name,
        xsk::MAX_RX_FRAME - 18
    )
}

/// One interface xlb runs on.
struct Link {
    netdev: Netdev,
    steer: SteerProgram,
    /// Kept for its drop (detach); declared after `steer`'s users so it goes last.
    attachment: Option<Attachment>,
    mode: XdpMode,
    /// Where the interface's ports hand the frames the pipeline passes to the kernel; None
    /// if it could not be made (they are then counted as lost, and a warning says why).
    tap: Option<Arc<Tap>>,
}

/// What every link's steering program recorded from `protocol` (ARP, NDP) with `read`; a
/// link whose map cannot be read is logged and skipped.
fn snooped<A>(
    links: &[Link],
    protocol: &str,
    read: impl Fn(&SteerProgram) -> Result<Vec<(A, MacAddr, u64)>, SteerError>,
) -> Vec<(A, MacAddr, u64)> {
    let mut entries = Vec::new();
    for link in links {
        match read(&link.steer) {
            Ok(seen) => entries.extend(seen),
            Err(error) => warn!("{}: reading snooped {protocol}: {error}", link.netdev.name),
        }
    }
    entries
}

/// Per link, the solicited-node groups of the IPv6 addresses `snapshot` announces there,
/// joined so its NIC lets solicitations for them through (None: no socket could hold them,
/// and a warning said why). A failure is logged, not fatal: a NIC may pass the groups
/// anyway (promiscuous, or a veth).
fn sync_groups(groups: &mut [Option<SolicitedGroups>], links: &[Link], snapshot: &Snapshot) {
    let announced = snapshot.family::<V6>().announced();
    for (index, (groups, link)) in groups.iter_mut().zip(links).enumerate() {
        let Some(groups) = groups else { continue };
        let here = announced.iter().filter(|&&(_, iface)| iface == IfaceId(index as u8));
        if let Err(error) = groups.sync(here.map(|&(addr, _)| addr)) {
            warn!("{}: {error} (solicitations for that group may not reach xlb)", link.netdev.name);
        }
    }
}

/// What a run did, for the caller to print.
#[derive(Debug)]
pub struct RunSummary {
    pub snapshot: Arc<Snapshot>,
    pub reports: Vec<CoreReport>,
    /// How xlb ran: workers, and per interface the XDP and socket modes.
    pub modes: String,
}

impl RunSummary {
    /// The `ipvsadm -L -n --stats` table over all cores.
    pub fn ipvsadm_stats(&self) -> String {
        let current = self.reports.iter().filter(|r| r.generation == self.snapshot.generation);
        let totals = stats::sum_backends(
            self.snapshot.backends.len(),
            current.map(|r| r.counters.backends.as_slice()),
        );
        format!(
            "xlb {} ({})\n{}",
            env!("CARGO_PKG_VERSION"),
            self.modes,
            stats::ipvsadm_stats(&self.snapshot, &totals)
        )
    }
}

/// Runs the appliance until `stop` is set (the binary wires it to SIGINT and SIGTERM).
pub fn run(options: &RunOptions, stop: Arc<AtomicBool>) -> anyhow::Result<RunSummary> {
    let config_path = std::path::absolute(&options.config).unwrap_or(options.config.clone());
    info!("xlb {} starting, config {}", env!("CARGO_PKG_VERSION"), config_path.display());
    let mut config = Config::load(&options.config)?;
    // Before anything changes: a second instance on these interfaces or this socket stops
    // here, leaving the running one's routes, rules and programs alone.
    let socket_path =
        options.socket.clone().unwrap_or_else(|| PathBuf::from(socket::DEFAULT_SOCKET));
    let _locks = instance::lock_instance(
        Path::new(instance::LOCK_DIR),
        &socket_path,
        config.interfaces.iter().map(|i| i.name.as_str()),
    )?;
    let mut netdevs = Vec::new();
    for interface in &mut config.interfaces {
        let netdev = Netdev::open(&interface.name)?;
        match interface.mac {
            Some(mac) if mac != netdev.mac.0 => bail!(
                "interface {}: the config says mac {} but the device's is {}",
                interface.name,
                MacAddr(mac),
                netdev.mac
            ),
            _ => interface.mac = Some(netdev.mac.0),
        }
        netdevs.push(netdev);
    }
    // DR probes through the VIP need their policy routes before the first probe.
    let mut probe_routes = ProbeRoutes::new().with_tunnels(TunnelProbes::new(
        Box::new(|name| {
            Ok(Box::new(Tun::create(name).map_err(io::Error::other)?) as Box<dyn ProbeDevice>)
        }),
        tap::wait_readable,
    ));
    if let Err(error) = probe_routes.sync(&probe_routes::wanted(&config)) {
        warn!("routes for DR probes through the VIP: {error}");
    }
    // What the previous process left: health verdicts and runtime weights, by identity.
    let socket_path =
        options.socket.clone().unwrap_or_else(|| PathBuf::from(socket::DEFAULT_SOCKET));
    let state_path = options.state.clone().unwrap_or_else(|| state::default_path(&socket_path));
    let kept = load_state(&state_path);
    let file_weights = config_weights(&config);
    restore_weights(&mut config, &kept);
    // Health checks start now, from the kept verdicts; a backend with a check and no kept
    // verdict waits for its first probe (not long: see `await_first_probes`).
    let mut health = HealthMonitor::new(&config);
    health.resume(|(vip, vport, proto), (addr, port)| {
        kept.backends.get(&BackendId { vip, vport, proto, addr, port }).map(|k| k.up)
    });
    await_first_probes(&mut health);
    let snapshot = Arc::new(
        build_snapshot(&config, &health, 1)
            .with_context(|| options.config.display().to_string())?,
    );
    let rules = SteerRules::from_snapshot(&snapshot);

    let mut links = Vec::new();
    for netdev in netdevs {
        // Frames longer than one AF_XDP buffer: multi-buffer XDP and AF_XDP, or no start.
        let multi_buffer = netdev.max_frame() > xsk::MAX_RX_FRAME;
        let steer = SteerProgram::load_with(multi_buffer).map_err(|error| {
            let what = "loading the XDP program with BPF_F_XDP_HAS_FRAGS (Linux 5.18+)";
            if multi_buffer {
                anyhow::anyhow!(jumbo_refusal(&netdev, what, &error))
            } else {
                anyhow::Error::new(error).context("loading the XDP steering program")
            }
        })?;
        if crate::dataplane::io::afxdp::steer::remove_stale(netdev.ifindex)
            .with_context(|| format!("{}: removing a stale xlb XDP program", netdev.name))?
        {
            warn!("{}: removed the XDP program a previous xlb left attached", netdev.name);
        }
        let (attachment, mode) = match options.xdp_mode {
            Some(mode) => (steer.attach(netdev.ifindex, mode), mode),
            // Native, else generic; the log says why native was refused (generic XDP is the
            // kernel's slow path, and AF_XDP runs in copy mode on it).
            None => match steer.attach(netdev.ifindex, XdpMode::Native) {
                Ok(attachment) => (Ok(attachment), XdpMode::Native),
                Err(native) => {
                    warn!(
                        "{}: native XDP refused ({native}): falling back to generic XDP \
                         (slower; AF_XDP in copy mode)",
                        netdev.name
                    );
                    (steer.attach(netdev.ifindex, XdpMode::Generic), XdpMode::Generic)
                }
            },
        };
        let attachment =
            attachment.with_context(|| format!("{}: attaching the XDP program", netdev.name))?;
        steer
            .set_rules(&rules.for_interface(&snapshot, IfaceId(links.len() as u8)))
            .with_context(|| format!("{}: steering rules", netdev.name))?;
        info!("{}: XDP {:?} mode, {} rx queue(s)", netdev.name, mode, netdev.rx_queues);
        if multi_buffer {
            info!(
                "{}: MTU {} lets in frames of up to {} bytes, longer than an AF_XDP buffer \
                 ({}): multi-buffer XDP and AF_XDP (XDP_USE_SG), up to {} buffers a packet",
                netdev.name,
                netdev.mtu,
                netdev.max_frame(),
                xsk::MAX_RX_FRAME,
                xsk::MAX_PACKET_BUFFERS
            );
        }
        let tap = open_tap(options, &netdev, links.len());
        links.push(Link { netdev, steer, attachment: Some(attachment), mode, tap });
    }
    let mut groups: Vec<Option<SolicitedGroups>> = links
        .iter()
        .map(|link| {
            SolicitedGroups::new(link.netdev.ifindex)
                .map_err(|error| {
                    warn!("{}: no socket for solicited-node groups: {error}", link.netdev.name);
                })
                .ok()
        })
        .collect();
    sync_groups(&mut groups, &links, &snapshot);
    if links.iter().any(|l| l.tap.is_some()) && tap::strict_rp_filter() {
        warn!(
            "net.ipv4.conf.all.rp_filter is 1 (strict): the kernel drops frames xlb hands back \
             to it through its TAP devices when it routes their source elsewhere (a NAT \
             backend's own traffic); set it to 0 or 2"
        );
    }

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let max_queues = links.iter().map(|l| l.netdev.rx_queues as usize).max().unwrap_or(1);
    let workers = options.cores.unwrap_or(max_queues.min(cores.len().max(1))).clamp(1, max_queues);
    // Before the tables are allocated: a config the machine cannot hold is refused with
    // the figures, not left to the allocator (or the OOM killer).
    let estimate = config.memory_estimate(workers);
    if let Some(total) = crate::tuning::memory_total() {
        estimate
            .check(total)
            .map_err(|why| anyhow::anyhow!("{}: {why}", options.config.display()))?;
    }
    info!("memory: {estimate}");
    if workers < max_queues {
        info!("{max_queues} queue(s) on {workers} worker(s): some workers serve several");
    }
    if let Some(asked) = options.cores
        && asked > max_queues
    {
        warn!(
            "{asked} cores asked, but no interface has more than {max_queues} queue(s): running {workers}"
        );
    }

    // Sockets: every queue of every interface is served, queue q by worker q % workers.
    let xsk_config = XskConfig { try_zero_copy: !options.force_copy, ..XskConfig::default() };
    let mut modes = vec![format!("{workers} worker(s)")];
    let mut ports_per_worker: Vec<Vec<(IfaceId, XskPort)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (index, link) in links.iter().enumerate() {
        for queue in 0..link.netdev.rx_queues {
            let worker = queue as usize % workers;
            let multi_buffer = link.netdev.max_frame() > xsk::MAX_RX_FRAME;
            let config = XskConfig { multi_buffer, ..xsk_config };
            let mut port = match XskPort::open(&link.netdev.name, queue, config) {
                Err(error) if multi_buffer => {
                    let what = "binding the AF_XDP socket with XDP_USE_SG (Linux 6.6+)";
                    return Err(anyhow::anyhow!(jumbo_refusal(&link.netdev, what, &error)));
                }
                opened => opened?,
            };
            if let Some(tap) = &link.tap {
                port.set_reinject(tap.clone());
            }
            link.steer
                .set_socket(queue, port.fd())
                .with_context(|| format!("{} queue {queue}: XSKMAP", link.netdev.name))?;
            info!(
                "{} queue {queue}: AF_XDP socket bound ({} mode, XDP {:?}), worker {worker}",
                link.netdev.name,
                port.mode(),
                link.mode
            );
            if queue == 0 {
                modes.push(format!(
                    "{}: XDP {:?}, AF_XDP {} mode, {} queue(s)",
                    link.netdev.name,
                    link.mode,
                    port.mode(),
                    link.netdev.rx_queues
                ));
            }
            ports_per_worker[worker].push((IfaceId(index as u8), port));
        }
    }

    // Preferred busy polling, where the kernel linked a NAPI to every socket; `_tuning`
    // gives the devices their settings back when `run` returns, however it returns.
    let record_dir =
        options.record_dir.clone().unwrap_or_else(|| PathBuf::from(instance::LOCK_DIR));
    let devices: Vec<&str> = links.iter().map(|l| l.netdev.name.as_str()).collect();
    let mut sockets: Vec<(usize, &mut XskPort)> =
        ports_per_worker.iter_mut().flatten().map(|(iface, port)| (iface.index(), port)).collect();
    let mode = options.busy_poll.unwrap_or(config.dataplane.busy_poll);
    let marker = options.busy_poll_marker.or(config.dataplane.busy_poll_marker);
    let (busy, _tuning) = busypoll::start(mode, &record_dir, &devices, &mut sockets, marker);
    modes.push(format!("busy polling {}", if busy.busy_poll() { "on" } else { "off" }));
    let busy_poll_ports: Vec<BusyPollPort> = ports_per_worker
        .iter()
        .flatten()
        .map(|(iface, port)| BusyPollPort {
            interface: links[iface.index()].netdev.name.clone(),
            queue: port.queue(),
            fd: port.napi_fd(),
            marker: port.napi_fd() != port.fd(),
            engaged: busy.busy_poll(),
        })
        .collect();

    // Pipelines, each able to read the others' connection tables.
    let clock = MonotonicClock::start();
    let mut pipelines: Vec<Pipeline> = (0..workers)
        .map(|k| {
            Pipeline::new(snapshot.clone(), CoreSlot { index: k as u16, count: workers as u16 })
        })
        .collect();
    let readers: Vec<_> = pipelines.iter().map(Pipeline::conntrack_reader).collect();
    let readers6: Vec<_> = pipelines.iter().map(Pipeline::conntrack_reader6).collect();
    let ipv6_table =
        (snapshot.conntrack, pipelines.first().map_or(0, |p| p.conntrack6().capacity()));
    for (k, pipeline) in pipelines.iter_mut().enumerate() {
        let peers =
            readers.iter().enumerate().filter(|&(j, _)| j != k).map(|(_, r)| r.clone()).collect();
        pipeline.set_peers(peers);
        let peers =
            readers6.iter().enumerate().filter(|&(j, _)| j != k).map(|(_, r)| r.clone()).collect();
        pipeline.set_peers6(peers);
    }
    // One persistence template table for every core: RSS spreads a client's connections
    // over the cores, its template must be one (crate::persist).
    let templates = Arc::new(crate::persist::Templates::with_default_capacity());
    for pipeline in &mut pipelines {
        pipeline.set_templates(Arc::clone(&templates));
    }

    let worker_stop = Arc::new(AtomicBool::new(false));
    let (report_tx, report_rx) = crossbeam::channel::bounded::<CoreReport>(64);
    let mut controls: Vec<Sender<ControlMsg>> = Vec::new();
    let mut handles: Vec<JoinHandle<CoreReport>> = Vec::new();
    for (k, (pipeline, ports)) in pipelines.into_iter().zip(ports_per_worker).enumerate() {
        let (control_tx, control_rx) = crossbeam::channel::unbounded();
        controls.push(control_tx);
        // Under busy polling the worker never sleeps: it is the one that runs the NAPI
        // (WorkerOptions::busy_poll means "spin when idle").
        let spin = options.spin || busy.busy_poll();
        let options = WorkerOptions { core: k as u16, busy_poll: spin };
        let worker = Worker::new(pipeline, ports, control_rx, report_tx.clone(), clock, options);
        let core = (!cores.is_empty()).then(|| cores[k % cores.len()]);
        let stop = worker_stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("xlb-worker-{k}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                worker.run(&stop)
            })
            .context("starting a worker thread")?;
        handles.push(handle);
    }
    drop(report_tx);

    let latest: http::Latest = Arc::new(std::sync::Mutex::new(String::new()));
    let metrics_server = match options.metrics {
        Some(addr) => {
            let server = http::serve(addr, latest.clone())
                .with_context(|| format!("serving metrics on {addr}"))?;
            info!("metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let ctl = CtlServer::bind(&socket_path)
        .with_context(|| format!("control socket {}", socket_path.display()))?;
    info!("control socket {} (xlb ctl)", socket_path.display());
    // Ready once the sockets, the workers and the control socket are up: the log line, the
    // ready file (removed when `run` returns) and systemd's READY=1 say so together.
    let ready = format!("ready: {} worker(s), {} service(s)", workers, snapshot.services.len());
    info!("{ready}");
    let _ready_file = options.ready_file.as_deref().map(ReadyFile::create).transpose()?;
    crate::notify::ready(&ready);
    let reload = match &options.reload {
        Some(reload) => reload.clone(),
        None => {
            let reload = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
                .context("installing the SIGHUP handler")?;
            reload
        }
    };
    let mut control = ControlLoop {
        options,
        links: &links,
        groups,
        controls: &controls,
        reports: report_rx,
        latest: HashMap::new(),
        relay: NeighborRelay::new(),
        relay6: NeighborRelay::new(),
        probing: None,
        snapshot: Arc::clone(&snapshot),
        config,
        health,
        last_response_times: StdInstant::now(),
        last_peer_load: StdInstant::now(),
        metrics: metrics_server.as_ref().map(|server| (latest, server)),
        window: metrics::LatencyWindow::default(),
        last_render: StdInstant::now(),
        ledger: stats::Ledger::new(Arc::clone(&snapshot)),
        zeroed: HashMap::new(),
        rate_samples: (None, None),
        connections: (StdInstant::now(), Vec::new()),
        tables: stats::Tables { v4: readers, v6: readers6 },
        ipv6_table,
        templates,
        last_keepalive: StdInstant::now(),
        clock,
        probe_routes,
        last_link_check: StdInstant::now(),
        lost: None,
        busy_poll: busy_poll_ports,
        busy_check: busy
            .busy_poll()
            .then(|| (busypoll::EngagementCheck::default(), StdInstant::now())),
        state_path,
        file_weights,
        stored_state: String::new(),
        vrrp: VrrpState::Standby,
        silent_claims: HashMap::new(),
        vip_routes: None,
    };
    control.save_state();
    control.follow_route_export()?;
    control.sync_vip_routes();
    let owned: Vec<Ipv4Addr> =
        control.snapshot.announced_addrs().into_iter().map(|(ip, _)| ip).collect();
    let owned6: Vec<Ipv6Addr> =
        control.snapshot.family::<V6>().announced().into_iter().map(|(ip, _)| ip).collect();
    if control.config.fleet != fleet::FleetMode::Standalone {
        info!("{}", fleet::describe(control.config.fleet, control.vrrp));
    }
    control.start_probe(owned, owned6);
    control.run(&stop, &reload, &ctl);
    if control.vip_routes.take().is_some() {
        // Before the workers stop: the routers move the VIPs' flows to the other boxes.
        info!("VIP routes withdrawn (their device closed)");
    }
    let lost = control.lost.take();
    crate::notify::stopping(lost.as_deref().unwrap_or("stopping"));
    drop(ctl);
    let snapshot = control.snapshot.clone();

    worker_stop.store(true, Ordering::Relaxed);
    let mut finals = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(report) => finals.push(report),
            Err(_) => error!("a worker thread panicked"),
        }
    }
    for link in &mut links {
        drop(link.attachment.take());
    }
    drop(metrics_server);
    info!("stopped: sockets closed, XDP programs detached");
    let summary = RunSummary { snapshot, reports: finals, modes: modes.join("; ") };
    log_figures(&summary.reports);
    if let Some(why) = lost {
        bail!("{why}");
    }
    Ok(summary)
}

struct ControlLoop<'a> {
    /// Every socket's busy-poll state, for metrics.
    busy_poll: Vec<BusyPollPort>,
    /// While busy polling: the check that it receives, and when it last looked.
    busy_check: Option<(busypoll::EngagementCheck, StdInstant)>,
    options: &'a RunOptions,
    links: &'a [Link],
    /// Per link, its solicited-node groups (see [`sync_groups`]).
    groups: Vec<Option<SolicitedGroups>>,
    controls: &'a [Sender<ControlMsg>],
    reports: Receiver<CoreReport>,
    latest: HashMap<u16, CoreReport>,
    /// Which snooped ARP the workers hear about; other hosts' claims on our addresses.
    relay: NeighborRelay,
    /// The same for snooped NDP.
    relay6: NeighborRelay<V6>,
    /// VIPs and local addresses probed for and not yet announced.
    probing: Option<Probing>,
    /// The snapshot the workers run (or are switching to), and the config it came from.
    snapshot: Arc<Snapshot>,
    config: Config,
    /// Health checks: the snapshot runs `health.effective(&config)`.
    health: HealthMonitor,
    /// When response times last reached the workers (a snapshot carries them too).
    last_response_times: StdInstant,
    /// When the other cores' connection counts last reached the workers (lc, wlc, sed, nq,
    /// lt count over the box: [`ControlLoop::send_peer_load`]).
    last_peer_load: StdInstant,
    /// Where the HTTP thread finds the latest `/metrics` text, and the server (for its
    /// refused count) (None: no `--metrics`).
    metrics: Option<(http::Latest, &'a http::MetricsServer)>,
    window: metrics::LatencyWindow,
    last_render: StdInstant,
    /// Per-backend counters by identity over cores on different snapshots, and what
    /// backends that left had counted (listings and metrics).
    ledger: stats::Ledger,
    /// `-Z`: per backend, by identity, the counters at the time they were zeroed (a change
    /// keeps them; a backend that leaves loses its own).
    zeroed: HashMap<BackendId, BackendCounters>,
    /// The two latest samples of the summed counters, for `--rate`.
    rate_samples: (Option<RateSample>, Option<RateSample>),
    /// Current connections per backend of the running snapshot (IPVS's ActiveConn and
    /// InActConn), counted from the connection tables for the metrics, and when.
    connections: (StdInstant, Vec<stats::BackendConnections>),
    /// Every core's connection tables (both families), read lock-free for `-L -n -c` and
    /// the connection counts.
    tables: stats::Tables,
    /// The start's `[conntrack]` (both families' tables keep its size, as IPv4's always
    /// has) and the IPv6 tables' capacity now: small until the box serves IPv6
    /// ([`Table6::grown`]).
    ipv6_table: (ConntrackConfig, usize),
    /// The cores' shared persistence templates, listed by `-L -n -c` too.
    templates: Arc<crate::persist::Templates>,
    /// When the templates that still have connections were last kept alive.
    last_keepalive: StdInstant,
    clock: MonotonicClock,
    /// Policy routes for DR health probes through the VIP (removed on drop).
    probe_routes: ProbeRoutes,
    last_link_check: StdInstant,
    /// Why xlb must stop (an interface it runs on is gone), once that happens.
    lost: Option<String>,
    /// Where health verdicts and runtime weights are kept for the next process.
    state_path: PathBuf,
    /// The weight the config file gives each backend (the running config's may differ by
    /// `xlb ctl`): kept with the running weight, so a changed file wins over a kept weight.
    file_weights: HashMap<BackendId, u32>,
    /// The state file's text as last written (nothing is written while it does not change).
    stored_state: String,
    /// The VRRP state `xlb ctl --active`/`--standby` gave (what it means depends on the
    /// config's fleet mode: [`crate::fleet`]); standby at start, kept across reloads.
    vrrp: VrrpState,
    /// Other hosts' ARP from a VIP that the steering programs had recorded when the box
    /// last began to speak for its VIPs (a peer's announcements while this box was silent):
    /// old news, not conflicts.
    silent_claims: HashMap<Ipv4Addr, (MacAddr, u64)>,
    /// `[fleet] route_table`: the VIP routes bird2 exports (None: not configured).
    vip_routes: Option<VipRoutes<Tun>>,
}

/// The `--ready-file`: holds xlb's PID while it runs, removed when `run` returns (an
/// `xlb run` that was killed leaves it: the next one overwrites it).
#[derive(Debug)]
struct ReadyFile(PathBuf);

impl ReadyFile {
    fn create(path: &Path) -> anyhow::Result<ReadyFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(ReadyFile(path.to_path_buf()))
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How often control checks that the interfaces are still there.
const LINK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The most passive events of one kind passed on per backend and report.
const MAX_PASSIVE_EVENTS: u64 = 64;

/// The most connection entries `xlb ctl -L -n -c` lists.
const MAX_LISTED_CONNECTIONS: usize = 100_000;

/// Addresses probed for (RFC 5227) and waiting for [`PROBE_WAIT`] before their announcement.
#[derive(Debug)]
struct Probing {
    /// When the first of them was probed: a claim seen since then is an answer.
    since: StdInstant,
    /// When the last of them may be announced.
    until: StdInstant,
    addrs: Vec<Ipv4Addr>,
    /// IPv6 VIPs and local addresses waiting with them (probed by duplicate address
    /// detection: a claim is another host's NDP naming one of them, snooped since `since`).
    addrs6: Vec<Ipv6Addr>,
}

/// Summed per-backend counters at one moment, by identity.
#[derive(Debug, Clone)]
struct RateSample {
    at: StdInstant,
    totals: HashMap<BackendId, BackendCounters>,
}

/// How often the metrics count current connections from the connection tables (a walk of
/// every record: control-side work that grows with the tables' capacity).
const CONNECTIONS_EVERY: Duration = Duration::from_secs(2);

/// How often control walks the connection tables to keep alive the persistence templates
/// that still have connections (a walk of every record, as [`CONNECTIONS_EVERY`]'s).
const TEMPLATE_KEEPALIVE_EVERY: Duration = Duration::from_secs(2);

impl ControlLoop<'_> {
    fn run(&mut self, stop: &AtomicBool, reload: &AtomicBool, ctl: &CtlServer) {
        let stats_every = self.options.stats_every;
        let mut last_stats = StdInstant::now();
        while !stop.load(Ordering::Relaxed) && self.lost.is_none() {
            std::thread::sleep(ARP_POLL_EVERY);
            self.check_links();
            if reload.swap(false, Ordering::Relaxed) {
                crate::notify::reloading("reloading the config (SIGHUP)");
                let status = match self.reload() {
                    Ok(()) => format!("ready: config generation {}", self.snapshot.generation),
                    Err(error) => {
                        error!("reload refused, nothing changed: {}", Causes(&error));
                        format!("ready: reload refused, nothing changed: {}", Causes(&error))
                    }
                };
                crate::notify::ready(&status);
            }
            let reports: Vec<CoreReport> = self.reports.try_iter().collect();
            for report in reports {
                self.observe_passive(&report);
                self.latest.insert(report.core, report);
            }
            self.send_peer_load();
            self.check_busy_poll();
            self.relay_arp();
            self.finish_probe();
            self.check_health();
            self.render_metrics(ctl.stats());
            self.keep_templates_alive();
            self.sample_rates();
            ctl.poll(|request| self.handle_ctl(request));
            if let Some(every) = stats_every
                && last_stats.elapsed() >= every
            {
                last_stats = StdInstant::now();
                let reports: Vec<CoreReport> = self.latest.values().cloned().collect();
                log_figures(&reports);
            }
        }
    }

    /// While busy polling, checks once a second that the kernel's busy-poll count rises as
    /// frames arrive ([`busypoll::EngagementCheck`]); warns once if it does not.
    fn check_busy_poll(&mut self) {
        let Some((check, last)) = &mut self.busy_check else { return };
        if last.elapsed() < LINK_CHECK_EVERY {
            return;
        }
        *last = StdInstant::now();
        let Some(polled) = busypoll::busy_poll_rx_packets() else { return };
        let received: u64 =
            self.latest.values().flat_map(|r| r.ports.iter()).map(|(_, p)| p.rx_packets).sum();
        if let Some(warning) = check.observe(received, polled) {
            warn!("{warning}");
        }
    }

    /// Stops xlb (with an error) when an interface it runs on was deleted or re-created:
    /// its XDP program and sockets went with it, so nothing more arrives. Restarting xlb
    /// once the interface is back is the supervisor's job.
    fn check_links(&mut self) {
        if self.last_link_check.elapsed() < LINK_CHECK_EVERY {
            return;
        }
        self.last_link_check = StdInstant::now();
        if let Some(link) = self.links.iter().find(|l| !l.netdev.is_present()) {
            let why = format!(
                "interface {} (ifindex {}) is gone: deleted or re-created, it took xlb's XDP \
                 program and sockets with it; stopping (restart xlb once it is back)",
                link.netdev.name, link.netdev.ifindex
            );
            error!("{why}");
            self.lost = Some(why);
        }
    }

    /// One `xlb ctl` request: a change goes through [`ControlLoop::publish`] (all or
    /// nothing), a listing is filled from the workers' latest reports.
    fn handle_ctl(&mut self, request: Request) -> Response {
        match ipvsadm::decide(&self.config, &request) {
            Outcome::Reply(response) => response,
            Outcome::Apply { config, reply } => {
                let command = request.args.join(" ");
                match self.publish(*config, &format!("xlb ctl {command}")) {
                    Ok(()) => {
                        self.save_state();
                        reply
                    }
                    Err(error) => Response::failure(
                        1,
                        &format!("refused, nothing changed: {}", Causes(&error)),
                    ),
                }
            }
            Outcome::List(options) => {
                let view = self.list_view(options);
                Response::success(ipvsadm::list(&self.snapshot, &view))
            }
            Outcome::Zero(service) => {
                self.zero(service);
                Response::success(String::new())
            }
            Outcome::Fleet(set) => {
                if let Some(state) = set {
                    self.set_vrrp_state(state);
                }
                Response::success(format!("{}\n", fleet::describe(self.config.fleet, self.vrrp)))
            }
        }
    }

    /// Makes the box active or standby (`vrrp` mode: `decide` refused the others): every
    /// worker first, then, on becoming active, gratuitous ARP for every VIP at once (paced
    /// by core 0), so the switches and routers move the VIPs here without waiting for a
    /// probe.
    fn set_vrrp_state(&mut self, state: VrrpState) {
        let was = self.presence();
        self.vrrp = state;
        for control in self.controls {
            let _ = control.send(ControlMsg::VrrpState(state));
        }
        info!("{} (xlb ctl)", fleet::describe(self.config.fleet, state));
        if self.presence().answer_vips && !was.answer_vips {
            let vips = self.vips();
            self.silent_claims = snooped(self.links, "ARP", SteerProgram::arp_seen)
                .into_iter()
                .filter(|(ip, _, _)| vips.contains(ip))
                .map(|(ip, mac, seen)| (ip, (mac, seen)))
                .collect();
            info!("announcing {} VIP(s) with gratuitous ARP", vips.len());
            let _ = self.controls[0].send(ControlMsg::Announce(vips));
            let index = self.snapshot.family::<V6>();
            let vips6: Vec<Ipv6Addr> = index
                .announced()
                .into_iter()
                .map(|(ip, _)| ip)
                .filter(|ip| index.owned(*ip) == Some(Owned::Vip))
                .collect();
            if !vips6.is_empty() {
                info!(
                    "announcing {} IPv6 VIP(s) with unsolicited neighbour advertisements",
                    vips6.len()
                );
                let _ = self.controls[0].send(ControlMsg::Announce6(vips6));
            }
        }
    }

    /// What the box does for its VIPs: the running config's fleet mode in the VRRP state.
    fn presence(&self) -> Presence {
        self.snapshot.fleet.presence(self.vrrp)
    }

    /// The running snapshot's VIPs (not its local addresses).
    fn vips(&self) -> Vec<Ipv4Addr> {
        let announced = self.snapshot.announced_addrs().into_iter().map(|(ip, _)| ip);
        announced.filter(|ip| self.snapshot.owned(*ip) == Some(Owned::Vip)).collect()
    }

    /// Per-backend counters summed over every core by identity (a core still on the
    /// previous snapshot counts too), indexed like the running snapshot.
    fn totals(&self) -> Vec<BackendCounters> {
        self.ledger.totals(self.latest.values())
    }

    /// [`ControlLoop::totals`] by identity.
    fn totals_by_id(&self) -> HashMap<BackendId, BackendCounters> {
        let ids = self.snapshot.backends.iter().map(|b| b.id);
        ids.zip(self.totals()).collect()
    }

    fn list_view(&self, options: ipvsadm::ListOptions) -> ListView {
        let mut counters = self.totals();
        for (counter, backend) in counters.iter_mut().zip(&self.snapshot.backends) {
            if let Some(zero) = self.zeroed.get(&backend.id) {
                *counter = since(zero, counter);
            }
        }
        let connections = self.count_connections();
        let active = connections.iter().map(|c| c.active).collect();
        let inactive = connections.iter().map(|c| c.inactive).collect();
        let rates = match &self.rate_samples {
            (Some(before), Some(after)) => self
                .snapshot
                .backends
                .iter()
                .map(|backend| {
                    let (Some(b), Some(a)) =
                        (before.totals.get(&backend.id), after.totals.get(&backend.id))
                    else {
                        return stats::BackendRates::default();
                    };
                    stats::BackendRates::between(b, a, after.at - before.at)
                })
                .collect(),
            _ => Vec::new(),
        };
        let connections = if options.format == ipvsadm::ListFormat::Connections {
            self.connections()
        } else {
            Vec::new()
        };
        let health = if options.format == ipvsadm::ListFormat::Health {
            self.health.status()
        } else {
            Vec::new()
        };
        ListView { options, counters, active, inactive, rates, connections, health }
    }

    /// Current connections per backend of the running snapshot as IPVS counts them
    /// (established TCP active, the rest inactive), from every core's tables.
    fn count_connections(&self) -> Vec<stats::BackendConnections> {
        self.tables.count(&self.snapshot, self.clock.now())
    }

    /// Every [`TEMPLATE_KEEPALIVE_EVERY`], while a service is persistent: each template
    /// that still has a connection (an IPv4 flow of its service and client, to its real
    /// server) in a core's table lives on until at least `persistence` plus one period from
    /// now ([`crate::persist::Templates::keep_alive`]): IPVS keeps a template while it
    /// controls connections.
    fn keep_templates_alive(&mut self) {
        if self.last_keepalive.elapsed() < TEMPLATE_KEEPALIVE_EVERY
            || self.snapshot.services.iter().all(|s| s.persistence.is_none())
        {
            return;
        }
        self.last_keepalive = StdInstant::now();
        let now = self.clock.now();
        keep_alive_templates(&self.snapshot, &self.templates, &self.tables.v4, now);
        keep_alive_templates(&self.snapshot, &self.templates, &self.tables.v6, now);
    }

    /// Live flows of every core, both families, as `ipvsadm -L -n -c` lists them, and the
    /// persistence templates.
    fn connections(&self) -> Vec<ipvsadm::ConnEntry> {
        let now = self.clock.now();
        let mut entries = self.tables.entries(now, MAX_LISTED_CONNECTIONS);
        let templates = self.templates.entries(now);
        entries.extend(ipvsadm::template_entries(&self.snapshot, &templates));
        entries.truncate(MAX_LISTED_CONNECTIONS);
        entries
    }

    /// `-Z`: from now on the listed counters start from zero (the workers' own counters,
    /// which Prometheus reads, keep counting). Kept by identity across changes.
    fn zero(&mut self, service: Option<ServiceId>) {
        let totals = self.totals();
        for (backend, counters) in self.snapshot.backends.iter().zip(totals) {
            let id = backend.id;
            let chosen = service
                .as_ref()
                .is_none_or(|s| s.vip == id.vip && s.port == id.vport && s.proto == id.proto);
            if chosen {
                self.zeroed.insert(id, counters);
            }
        }
    }

    /// Keeps the two latest samples, two seconds apart, for `--rate` (by identity: a change
    /// in between leaves the rates of the backends that stayed).
    fn sample_rates(&mut self) {
        let due =
            self.rate_samples.1.as_ref().is_none_or(|s| s.at.elapsed() >= Duration::from_secs(2));
        if due {
            let sample = RateSample { at: StdInstant::now(), totals: self.totals_by_id() };
            self.rate_samples = (self.rate_samples.1.take(), Some(sample));
        }
    }

    /// Passive health checks: what the traffic said about each backend since this core's
    /// previous report (resets, ICMP unreachables, SYNs sent again unanswered, handshakes
    /// answered) goes to the health monitor; a backend that crosses its `passive_fall` is
    /// probed at once, and only failed probes take it down (see `control::health`).
    fn observe_passive(&mut self, report: &CoreReport) {
        let Some(previous) = self.latest.get(&report.core) else { return };
        if previous.generation != report.generation || report.generation != self.snapshot.generation
        {
            return;
        }
        let deltas: Vec<(usize, PassiveCounters)> = report
            .counters
            .passive
            .iter()
            .zip(&previous.counters.passive)
            .enumerate()
            .map(|(index, (now, before))| {
                (
                    index,
                    PassiveCounters {
                        answered: now.answered.saturating_sub(before.answered),
                        unanswered: now.unanswered.saturating_sub(before.unanswered),
                        resets: now.resets.saturating_sub(before.resets),
                        unreachable: now.unreachable.saturating_sub(before.unreachable),
                    },
                )
            })
            .filter(|(_, delta)| *delta != PassiveCounters::default())
            .collect();
        for (index, delta) in deltas {
            let Some(backend) = self.snapshot.backends.get(index) else { continue };
            let key = (backend.addr, backend.port);
            // Bad signs first, then one "answered": a backend that answers anything is not
            // failing every connection.
            for _ in 0..delta.resets.min(MAX_PASSIVE_EVENTS) {
                self.health.observe(key, PassiveEvent::Rst);
            }
            for _ in 0..delta.unreachable.min(MAX_PASSIVE_EVENTS) {
                self.health.observe(key, PassiveEvent::IcmpUnreachable);
            }
            for _ in 0..delta.unanswered.min(MAX_PASSIVE_EVENTS) {
                self.health.observe(key, PassiveEvent::SynUnanswered);
            }
            if delta.answered > 0 {
                self.health.observe(key, PassiveEvent::Answered);
            }
        }
    }

    /// Refreshes the `/metrics` text once a second (the HTTP thread only copies it).
    fn render_metrics(&mut self, ctl: socket::CtlStats) {
        let Some((latest, server)) = &self.metrics else { return };
        if self.last_render.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_render = StdInstant::now();
        if self.connections.1.len() != self.snapshot.backends.len()
            || self.connections.0.elapsed() >= CONNECTIONS_EVERY
        {
            self.connections = (StdInstant::now(), self.count_connections());
        }
        let reports: Vec<CoreReport> = self.latest.values().cloned().collect();
        let health = self.health.status();
        let busy_poll: Vec<metrics::BusyPollFigures> =
            self.busy_poll.iter().map(BusyPollPort::figures).collect();
        let control = metrics::ControlFigures {
            ctl,
            metrics_refused: server.refused(),
            health: &health,
            busy_poll: &busy_poll,
            busy_poll_rx_packets: busypoll::busy_poll_rx_packets(),
            fleet: (self.config.fleet, self.vrrp),
        };
        let text = metrics::render_reports(
            &self.ledger,
            &reports,
            &mut self.window,
            &self.connections.1,
            control,
        );
        *latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = text;
    }

    /// Publishes the effective config again when a backend went up or down. While a
    /// least-time service needs fresh response times, sends them once a second in a small
    /// message instead (a new snapshot would reset every core's scheduler state and rebuild
    /// every table). A transition is logged once the workers have been sent the snapshot
    /// that applies it, so whoever reads the log line can count on it.
    fn check_health(&mut self) {
        let transitions = self.health.poll();
        if transitions.is_empty() {
            self.send_response_times();
            return;
        }
        let config = self.config.clone();
        if let Err(error) = self.publish(config, "health") {
            error!("applying health state failed, nothing changed: {}", Causes(&error));
        }
        self.save_state();
        for transition in &transitions {
            if transition.up {
                info!("health: {transition}");
            } else {
                warn!("health: {transition}");
            }
        }
    }

    /// Once a second while a service uses `lt`: the smoothed probe times, indexed like the
    /// running snapshot's backends, to every worker.
    fn send_response_times(&mut self) {
        let uses_lt = self.config.services.iter().any(|s| s.scheduler == SchedulerKind::Lt);
        if !uses_lt || self.last_response_times.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_response_times = StdInstant::now();
        let effective = self.health.effective(&self.config);
        let times: Arc<[u32]> = self.health.response_times(&effective).into();
        if times.len() != self.snapshot.backends.len() {
            return;
        }
        let generation = self.snapshot.generation;
        for control in self.controls {
            let _ = control.send(ControlMsg::ResponseTimes { generation, times: times.clone() });
        }
    }

    /// Every report round (at most every [`worker::REPORT_EVERY`]) while a service counts
    /// connections and there are several cores: to each core, the sum of the other cores'
    /// connection counts per backend (IPVS's active and inactive,
    /// [`crate::conntrack::ConnectionCount`]) from their latest reports on the running
    /// snapshot (a core still on an older one, or not yet reported, counts 0 until it does).
    fn send_peer_load(&mut self) {
        let counts = self.config.services.iter().any(|s| s.scheduler.counts_connections());
        if !counts
            || self.controls.len() < 2
            || self.last_peer_load.elapsed() < crate::dataplane::worker::REPORT_EVERY
        {
            return;
        }
        self.last_peer_load = StdInstant::now();
        let generation = self.snapshot.generation;
        let backends = self.snapshot.backends.len();
        let loads =
            stats::peer_loads(self.latest.values(), generation, backends, self.controls.len());
        for (control, others) in self.controls.iter().zip(loads) {
            let _ = control.send(ControlMsg::PeerLoad { generation, others });
        }
    }

    /// SIGHUP: re-reads the config file and publishes it.
    fn reload(&mut self) -> anyhow::Result<()> {
        let config = Config::load(&self.options.config)?;
        if config.dataplane != self.config.dataplane {
            let marker = config.dataplane.busy_poll_marker;
            warn!(
                "dataplane changed (busy_poll {:?}, busy_poll_marker {}): it applies at the \
                 next start of xlb",
                config.dataplane.busy_poll.to_string(),
                marker.map_or_else(|| "none".to_string(), |port| port.to_string())
            );
        }
        let weights = config_weights(&config);
        self.publish(config, "config file re-read")?;
        // The tables are the start's (both families'): a changed size or timeout waits.
        if self.snapshot.conntrack != self.ipv6_table.0 {
            warn!(
                "conntrack changed (capacity, max_embryonic or timeouts): the connection tables \
                 keep the start's until xlb restarts"
            );
        }
        self.file_weights = weights;
        self.save_state();
        Ok(())
    }

    /// Writes the state file if what it keeps changed: every backend's health verdict and
    /// running weight (see [`crate::control::state`]). A failure is logged, once per
    /// message, and changes nothing else.
    fn save_state(&mut self) {
        let mut kept = State::default();
        for service in &self.config.services {
            for backend in &service.backends {
                // Always an IPv4 backend: the running config built a snapshot (see `run`).
                let Ok(id) = BackendId::of_config(service, backend) else { continue };
                let up = self.health.is_up(
                    (service.vip, service.port, service.proto),
                    (backend.addr, backend.port),
                );
                let config_weight = self.file_weights.get(&id).copied().unwrap_or(backend.weight);
                kept.backends.insert(id, Kept { up, config_weight, weight: backend.weight });
            }
        }
        let text = kept.render();
        if text == self.stored_state {
            return;
        }
        match kept.store(&self.state_path) {
            Ok(()) => self.stored_state = text,
            Err(error) => {
                // Remember the failure as the text, so the same failure is logged once.
                warn!("{error}: the next start will not know the current health and weights");
                self.stored_state = text;
            }
        }
    }

    /// Makes `config` the running one, atomically for every worker: checked completely
    /// first (interfaces unchanged, snapshot builds, steering maps have room), so an error
    /// changes nothing; then the steering rules, then every worker switches between two
    /// batches. VIPs that are new are announced with gratuitous ARP.
    fn publish(&mut self, mut config: Config, why: &str) -> anyhow::Result<()> {
        let names: Vec<&str> = config.interfaces.iter().map(|i| i.name.as_str()).collect();
        let running: Vec<&str> = self.links.iter().map(|l| l.netdev.name.as_str()).collect();
        if names != running {
            bail!("the interfaces changed ({running:?} -> {names:?}); that needs a restart");
        }
        for (interface, link) in config.interfaces.iter_mut().zip(self.links) {
            if interface.mac.is_some_and(|mac| mac != link.netdev.mac.0) {
                bail!("interface {}: the config's mac is not the device's", interface.name);
            }
            interface.mac = Some(link.netdev.mac.0);
        }
        let generation = self.snapshot.generation + 1;
        let snapshot = Arc::new(build_snapshot(&config, &self.health, generation)?);
        let rules = SteerRules::from_snapshot(&snapshot);
        // Every arm's rules are checked before any map changes (each is a part of `rules`).
        let per_link: Vec<SteerRules> = (0..self.links.len())
            .map(|index| rules.for_interface(&snapshot, IfaceId(index as u8)))
            .collect();
        for (link, rules) in self.links.iter().zip(&per_link) {
            rules.check_fits().with_context(|| format!("{}: steering rules", link.netdev.name))?;
        }
        for (link, rules) in self.links.iter().zip(&per_link) {
            link.steer
                .set_rules(rules)
                .with_context(|| format!("{}: steering rules", link.netdev.name))?;
        }
        sync_groups(&mut self.groups, self.links, &snapshot);
        let (start, running) = &mut self.ipv6_table;
        if let Some(grown) = Table6::grown(start, *running, &snapshot, self.controls.len()) {
            *running = start.capacity;
            info!("IPv6 connection tables grown to {} flows per core", start.capacity);
            self.tables.v6 = grown.iter().map(Table6::reader).collect();
            for (control, table) in self.controls.iter().zip(grown) {
                let _ = control.send(ControlMsg::Conntrack6(table));
            }
        }
        for control in self.controls {
            let _ = control.send(ControlMsg::Snapshot(snapshot.clone()));
        }
        let was_answering = self.presence().answer_vips;
        let old_addrs = if snapshot.fleet.presence(self.vrrp).answer_vips && !was_answering {
            // A reload that makes the box speak for its VIPs (a mode change): all are new.
            Vec::new()
        } else {
            self.snapshot.announced_addrs()
        };
        let new_addrs: Vec<Ipv4Addr> = snapshot
            .announced_addrs()
            .into_iter()
            .filter(|a| !old_addrs.contains(a))
            .map(|(ip, _)| ip)
            .collect();
        let old_addrs6 = self.snapshot.family::<V6>().announced();
        let new_addrs6: Vec<Ipv6Addr> = snapshot
            .family::<V6>()
            .announced()
            .into_iter()
            .filter(|a| !old_addrs6.contains(a))
            .map(|(ip, _)| ip)
            .collect();
        if config != self.config {
            if let Err(error) = self.probe_routes.sync(&probe_routes::wanted(&config)) {
                warn!("routes for DR probes through the VIP: {error}");
            }
            self.health.reconfigure(&config);
        }
        self.last_response_times = StdInstant::now();
        info!(
            "config applied ({why}): generation {generation}, {} service(s), {} backend(s)",
            snapshot.services.len(),
            snapshot.backends.len()
        );
        // Counters follow identity: the ledger retires what left and reads each core's
        // reports through its own snapshot; `-Z` and rates keep the backends that stayed.
        self.ledger.publish(snapshot.clone(), self.latest.values());
        self.zeroed.retain(|id, _| snapshot.backend_at(id).is_some());
        self.snapshot = snapshot;
        self.config = config;
        self.start_probe(new_addrs, new_addrs6);
        if let Err(error) = self.follow_route_export() {
            error!("VIP routes: {error:#}: none is exported until a reload succeeds in this");
        }
        self.sync_vip_routes();
        Ok(())
    }

    /// Makes the VIP routes follow the running config's `[fleet] route_table` and
    /// `route_device` ([`vip_routes::change`]): at start, and after every publish.
    fn follow_route_export(&mut self) -> anyhow::Result<()> {
        let running = self.vip_routes.as_ref().map(VipRoutes::settings);
        match vip_routes::change(running, self.config.fleet_routes.as_ref()) {
            vip_routes::Change::Keep => {}
            vip_routes::Change::Stop => {
                self.vip_routes = None;
                info!("VIP routes withdrawn: no route_table in the config (their device closed)");
            }
            vip_routes::Change::Start { settings, replacing } => {
                if replacing {
                    // Closed first: the new device may take the old one's name.
                    self.vip_routes = None;
                    info!("VIP routes withdrawn: route_table or route_device changed");
                }
                let device = Tun::create(&settings.device).context("[fleet] route_device")?;
                let routes = VipRoutes::new(&settings, device);
                info!(
                    "VIP routes: table {} through {} (gone when xlb exits)",
                    settings.table,
                    routes.device()
                );
                self.vip_routes = Some(routes);
            }
        }
        Ok(())
    }

    /// Routes the VIPs the running snapshot can serve, withdraws the others
    /// ([`vip_routes`]); logs what changed.
    fn sync_vip_routes(&mut self) {
        let Some(routes) = &mut self.vip_routes else { return };
        match routes.sync(&vip_routes::wanted(&self.snapshot)) {
            Ok((added, removed)) => {
                for vip in added {
                    info!("VIP route {vip}/32 added (a backend takes new flows)");
                }
                for vip in removed {
                    info!("VIP route {vip}/32 withdrawn (no backend takes new flows)");
                }
            }
            Err(error) => warn!("VIP routes: {error}"),
        }
    }

    /// Tells every worker about ARP the steering programs saw since last time, about next
    /// hops xlb needs only; logs (rate-limited) MAC changes and other hosts' claims.
    fn relay_arp(&mut self) {
        let mut entries = snooped(self.links, "ARP", SteerProgram::arp_seen);
        entries.retain(|(ip, mac, seen)| self.silent_claims.get(ip) != Some(&(*mac, *seen)));
        let unresolved = self
            .latest
            .values()
            .filter(|r| r.generation == self.snapshot.generation)
            .flat_map(|r| r.unresolved.iter().copied());
        let mut wanted = Wanted::<V4>::new(&self.snapshot, unresolved);
        if !self.presence().answer_vips {
            // Peers of the fleet announce the VIPs: not a conflict for a silent box.
            wanted.owned.retain(|ip| self.snapshot.owned(*ip) != Some(Owned::Vip));
        }
        let observed = self.relay.observe(StdInstant::now(), &wanted, &entries);
        for (level, line) in &observed.lines {
            crate::log::write(*level, format_args!("{line}"));
        }
        for (ip, mac) in observed.relay {
            for control in self.controls {
                let _ = control.send(ControlMsg::Neighbor(ip, mac));
            }
        }
        self.relay_ndp();
    }

    /// [`relay_arp`](Self::relay_arp) for IPv6: what the steering programs saw in NDP.
    fn relay_ndp(&mut self) {
        let entries = snooped(self.links, "NDP", SteerProgram::ndp_seen);
        let unresolved = self
            .latest
            .values()
            .filter(|r| r.generation == self.snapshot.generation)
            .flat_map(|r| r.unresolved6.iter().copied());
        let mut wanted = Wanted::<V6>::new(&self.snapshot, unresolved);
        if !self.presence().answer_vips {
            let index = self.snapshot.family::<V6>();
            wanted.owned.retain(|ip| index.owned(*ip) != Some(Owned::Vip));
        }
        let observed = self.relay6.observe(StdInstant::now(), &wanted, &entries);
        for (level, line) in &observed.lines {
            crate::log::write(*level, format_args!("{line}"));
        }
        for (ip, mac) in observed.relay {
            for control in self.controls {
                let _ = control.send(ControlMsg::Neighbor6(ip, mac));
            }
        }
    }

    /// Sends RFC 5227 probes for `addrs` (new VIPs and local addresses), and RFC 4862
    /// duplicate address detection probes for `addrs6` (new IPv6 ones: a solicitation from
    /// `::` to each one's solicited-node group); they are announced after [`PROBE_WAIT`]
    /// unless another host answers (ARP from the address, an advertisement naming it; see
    /// [`ControlLoop::finish_probe`]).
    fn start_probe(&mut self, mut addrs: Vec<Ipv4Addr>, mut addrs6: Vec<Ipv6Addr>) {
        // A box silent for its VIPs probes and announces only its local addresses.
        if !self.presence().answer_vips {
            addrs.retain(|ip| self.snapshot.owned(*ip) != Some(Owned::Vip));
            addrs6.retain(|ip| self.snapshot.family::<V6>().owned(*ip) != Some(Owned::Vip));
        }
        if addrs.is_empty() && addrs6.is_empty() {
            return;
        }
        // Claims already in the steering maps are old news, not answers to this probe.
        self.relay_arp();
        let now = StdInstant::now();
        if !addrs.is_empty() {
            let _ = self.controls[0].send(ControlMsg::Probe(addrs.clone()));
        }
        if !addrs6.is_empty() {
            let _ = self.controls[0].send(ControlMsg::Probe6(addrs6.clone()));
        }
        let probing = self.probing.get_or_insert(Probing {
            since: now,
            until: now,
            addrs: Vec::new(),
            addrs6: Vec::new(),
        });
        probing.until = now + PROBE_WAIT;
        probing.addrs.extend(addrs);
        probing.addrs6.extend(addrs6);
    }

    /// Once the probes had time to be answered: announces the addresses no other host
    /// claimed, and refuses (an error line each) to announce the others.
    fn finish_probe(&mut self) {
        let Some(probing) = self.probing.take_if(|p| StdInstant::now() >= p.until) else { return };
        let claimed = self.relay.claimed_since(probing.since, &probing.addrs);
        for (ip, mac) in &claimed {
            error!(
                "{ip}: another host ({mac}) answers ARP for it; not announcing it (a VIP or local address must be xlb's alone: check the config and that host)"
            );
        }
        let announce: Vec<Ipv4Addr> =
            probing.addrs.into_iter().filter(|ip| !claimed.iter().any(|(c, _)| c == ip)).collect();
        if !announce.is_empty() {
            info!("announcing {} address(es) with gratuitous ARP", announce.len());
            let _ = self.controls[0].send(ControlMsg::Announce(announce));
        }
        let claimed = self.relay6.claimed_since(probing.since, &probing.addrs6);
        for (ip, mac) in &claimed {
            error!(
                "{ip}: another host ({mac}) claims it in NDP; not announcing it (a VIP or local address must be xlb's alone: check the config and that host)"
            );
        }
        let announce: Vec<Ipv6Addr> =
            probing.addrs6.into_iter().filter(|ip| !claimed.iter().any(|(c, _)| c == ip)).collect();
        if !announce.is_empty() {
            info!(
                "announcing {} IPv6 address(es) with unsolicited neighbour advertisements",
                announce.len()
            );
            let _ = self.controls[0].send(ControlMsg::Announce6(announce));
        }
    }
}

/// What `after` counted since `before` (zero where a counter went backwards).
fn since(before: &BackendCounters, after: &BackendCounters) -> BackendCounters {
    BackendCounters {
        connections: after.connections.saturating_sub(before.connections),
        in_packets: after.in_packets.saturating_sub(before.in_packets),
        in_bytes: after.in_bytes.saturating_sub(before.in_bytes),
        out_packets: after.out_packets.saturating_sub(before.out_packets),
        out_bytes: after.out_bytes.saturating_sub(before.out_bytes),
    }
}

/// The state the previous process kept (empty if none or unreadable: logged).
fn load_state(path: &std::path::Path) -> State {
    match State::load(path) {
        Ok((kept, skipped)) => {
            for line in skipped {
                warn!("state file {}: {line} (skipped)", path.display());
            }
            if !kept.backends.is_empty() {
                info!(
                    "state file {}: health verdicts and weights of {} backend(s) kept",
                    path.display(),
                    kept.backends.len()
                );
            }
            kept
        }
        Err(error) => {
            warn!("{error}: starting without kept health verdicts and weights");
            State::default()
        }
    }
}

/// Each backend's weight in `config`, by identity.
fn config_weights(config: &Config) -> HashMap<BackendId, u32> {
    let mut weights = HashMap::new();
    for service in &config.services {
        // A backend not of its service's family has no identity (the snapshot refuses it).
        for backend in &service.backends {
            if let Ok(id) = BackendId::of_config(service, backend) {
                weights.insert(id, backend.weight);
            }
        }
    }
    weights
}

/// Gives each backend the weight the previous process ran it with (`xlb ctl -e ... -w N`),
/// unless the config file changed its weight since (then the file wins).
fn restore_weights(config: &mut Config, kept: &State) {
    for service in &mut config.services {
        // A backend not of its service's family has no identity (the snapshot refuses it).
        let ids: Vec<Option<BackendId>> =
            service.backends.iter().map(|b| BackendId::of_config(service, b).ok()).collect();
        for (backend, id) in service.backends.iter_mut().zip(ids) {
            let Some(id) = id else { continue };
            if let Some(kept) = kept.backends.get(&id)
                && kept.config_weight == backend.weight
                && kept.weight != backend.weight
            {
                info!(
                    "{id}: weight {} kept from the previous run (config: {})",
                    kept.weight, backend.weight
                );
                backend.weight = kept.weight;
            }
        }
    }
}

/// Waits, before the first snapshot, for the first probe of every backend that has no kept
/// verdict (a probe's timeout at most, plus a little), so xlb starts with them admitted or
/// not rather than with none admitted. Transitions are logged.
fn await_first_probes(health: &mut HealthMonitor) {
    if health.unknown_count() == 0 {
        return;
    }
    let deadline = StdInstant::now() + health.first_probe_timeout() + Duration::from_millis(200);
    loop {
        for transition in health.poll() {
            if transition.up {
                info!("health: {transition}");
            } else {
                warn!("health: {transition}");
            }
        }
        if health.unknown_count() == 0 || StdInstant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let unknown = health.unknown_count();
    if unknown > 0 {
        warn!(
            "health: {unknown} backend(s) not probed yet: not admitted until their first probe passes"
        );
    }
}

/// The snapshot the workers run: the operator's config as health checks leave it (failed
/// backends drained or removed, a sorry server when none is healthy; the removed ones'
/// flows rescheduled), with measured response times for the least-time scheduler.
fn build_snapshot(
    config: &Config,
    health: &HealthMonitor,
    generation: u64,
) -> Result<Snapshot, crate::control::snapshot::SnapshotError> {
    let effective = health.effective(config);
    let mut snapshot = Snapshot::build(&effective, generation)?;
    snapshot.response_time_us = health.response_times(&effective);
    snapshot.set_rescheduled(health.removed(config));
    Ok(snapshot)
}

/// The TAP device through which `netdev`'s ports hand passed frames to the kernel (the
/// interface at `position` in the config). A failure is logged, not fatal: xlb still forwards
/// what it owns, and counts what it could not hand back as `pass_unreinjectable`.
/// One socket's busy-poll state as control sees it: it reads the NAPI id through `fd` (the
/// AF_XDP socket's, or its marker's) while the workers run (the sockets are closed only
/// after they have stopped).
struct BusyPollPort {
    interface: String,
    queue: u32,
    fd: std::os::fd::RawFd,
    /// `fd` is the socket's marker's ([`busypoll`]: veth), not the AF_XDP socket's.
    marker: bool,
    /// Busy polling was turned on for it.
    engaged: bool,
}

impl BusyPollPort {
    /// Engaged means turned on and linked to a NAPI (without one the kernel polls nothing).
    fn figures(&self) -> metrics::BusyPollFigures {
        let napi_id = busypoll::napi_id(self.fd).unwrap_or(0);
        metrics::BusyPollFigures {
            interface: self.interface.clone(),
            queue: self.queue,
            engaged: self.engaged && napi_id != 0,
            napi_id,
            marker: self.marker,
        }
    }
}

fn open_tap(options: &RunOptions, netdev: &Netdev, position: usize) -> Option<Arc<Tap>> {
    let made = tap::tap_name(options.tap_prefix.as_deref(), &netdev.name, netdev.ifindex, position)
        .and_then(|name| Tap::create(&name, netdev));
    match made {
        Ok(tap) => {
            info!("{}: frames xlb passes reach the kernel through TAP {}", netdev.name, tap.name());
            Some(Arc::new(tap))
        }
        Err(error) => {
            warn!(
                "{}: {error}; frames xlb passes (not its own, e.g. a NAT backend's own traffic \
                 from its service port) are dropped and counted as pass_unreinjectable",
                netdev.name
            );
            None
        }
    }
}

/// One line of figures per core, to stderr.
fn log_figures(reports: &[CoreReport]) {
    let mut reports: Vec<&CoreReport> = reports.iter().collect();
    reports.sort_by_key(|r| r.core);
    for r in reports {
        let mut io = PortStats::default();
        for (_, port) in &r.ports {
            io.add(port);
        }
        let c = &r.counters;
        info!(
            "core {}: rx {} tx {} tunnelled {} (wire {}) pass {} reinjected {} reinject-failed {} unreinjectable {} drop {} held {} | flows {} cross-core {} neighbours {} | tx-ring-full {} no-frame {} unroutable {} kernel-dropped {} | batches {} tx-kicks {} kick-again {} kick-dropped {} kick-errors {} backlog-flushes {} rx-wakeups {} waits {}",
            r.core,
            c.get(Stat::RxPackets),
            c.get(Stat::TxPackets),
            c.get(Stat::TunnelledPackets),
            io.tx_packets,
            c.get(Stat::PassPackets),
            io.pass_reinjected,
            io.pass_reinject_failed,
            io.pass_unreinjectable,
            c.drop_reasons().map(|(_, n)| n).sum::<u64>(),
            r.held,
            r.flows,
            c.get(Stat::CrossCoreHits),
            r.neighbors,
            io.tx_ring_full,
            io.send_no_frame,
            r.unroutable,
            io.rx_kernel_dropped,
            io.batches,
            io.tx_kicks,
            io.tx_kick_again,
            io.tx_kick_dropped,
            io.tx_kick_errors,
            io.tx_backlog_flushes,
            io.rx_wakeups,
            io.waits
        );
        let drops: Vec<String> =
            c.drop_reasons().filter(|&(_, n)| n > 0).map(|(why, n)| format!("{why} {n}")).collect();
        if !drops.is_empty() {
            info!("core {}: drops: {}", r.core, drops.join(", "));
        }
    }
}

/// [`ControlLoop::keep_templates_alive`] over one family's tables: each live flow of a
/// persistent service keeps its client's template to its real server alive.
fn keep_alive_templates<F: crate::conntrack::Layout + crate::snapshot::Indexed>(
    snapshot: &Snapshot,
    templates: &crate::persist::Templates,
    readers: &[crate::conntrack::ConntrackReader<F>],
    now: crate::time::Instant,
) {
    let services = snapshot.family::<F>();
    for reader in readers {
        reader.visit(now, |flow, _, _| {
            let service = services.service_at(flow.vip, flow.vport, flow.proto);
            if let Some(p) = service.and_then(|i| snapshot.services[i].persistence) {
                let key = p.key(F::key(flow.client_addr).into());
                let chosen = crate::persist::Chosen {
                    addr: F::key(flow.backend_addr).into(),
                    port: flow.backend_port,
                    hint: 0,
                };
                let until = now.saturating_add(p.timeout + TEMPLATE_KEEPALIVE_EVERY);
                templates.keep_alive(&key, &chosen, until);
            }
            true
        });
    }
}

/// Tunnel health probes read the TUN devices the daemon opens for them (control never
/// imports the data plane).
impl ProbeDevice for Tun {
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        Tun::read_packet(self, buf)
    }

    fn fd(&self) -> std::os::fd::RawFd {
        Tun::fd(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the kernel refuses multi-buffer, the refusal names the interface, its MTU, the
    /// frame length it lets in, what failed and why, and the MTU that works without it.
    #[test]
    fn a_jumbo_refusal_names_the_mtu_the_reason_and_the_fix() {
        let netdev = Netdev {
            name: "eth7".into(),
            ifindex: 7,
            mac: crate::wire::MacAddr([2, 0, 0, 0, 0, 7]),
            rx_queues: 1,
            mtu: 9000,
        };
        let what = "binding the AF_XDP socket with XDP_USE_SG (Linux 6.6+)";
        let error = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        let text = jumbo_refusal(&netdev, what, &error);
        for part in [
            "eth7: MTU 9000 lets in frames of up to 9018 bytes",
            "(3840)",
            "XDP_USE_SG (Linux 6.6+) failed: Operation not supported",
            "Lower the MTU to 3822 or less (ip link set eth7 mtu 3822)",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }
}
