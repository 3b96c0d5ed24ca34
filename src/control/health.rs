//! Health checks: which real servers may take new flows, and how fast they answer.
//!
//! A [`HealthMonitor`] keeps a small state machine per (service, backend) whose service has
//! a check, and runs their probes on a small pool of threads (see "Probes"). The daemon's
//! control loop calls [`HealthMonitor::poll`] each round (every 10 ms): it starts the probes
//! that are due and, when it reports [`Transition`]s, the daemon builds a snapshot from
//! [`HealthMonitor::effective`] and fills its `response_time_us` from
//! [`HealthMonitor::response_times`]. Nothing here runs on the packet path: probes are
//! blocking socket calls with timeouts, on their own threads, and the data plane only ever
//! sees the effective config.
//!
//! # The state machine (keepalived's, per backend of each service)
//!
//! - A backend starts **up**, as keepalived starts real servers without `alpha`: a new
//!   service serves at once, and a dead backend is out after `fall` probes. Except when the
//!   daemon starts: [`HealthMonitor::resume`] puts every backend in the state the previous
//!   process left it in (the state file, [`crate::control::state`]), and a backend with a
//!   check that the file does not know starts **unknown**: down (not schedulable, outside
//!   the Maglev tables) until its first probe, which brings it up if it passes and leaves it
//!   down (then `rise` probes are needed) if it fails. A restart therefore never counts a
//!   backend up that the previous process had out, which would move established DR flows.
//! - Up → **down** after `fall` consecutive failed probes, and only so.
//! - Down → up after `rise` consecutive successful probes, and only so.
//! - A successful probe resets the failure counts (active and passive), a failed probe the
//!   success count. An up backend's success count and a down backend's failure count are
//!   kept only to report them.
//! - Every transition is returned once by [`HealthMonitor::poll`] and counted in
//!   [`HealthCounters`] (the monitor's totals and the backend's own).
//! - [`HealthMonitor::reconfigure`] keeps the state of every (service, backend) still in the
//!   config. If the service's health settings changed, that backend is probed again at once
//!   and its consecutive counts reset, but it stays up or down until the new probes say
//!   otherwise. Results of probes started under the old settings are ignored (each
//!   settings generation of an entry has its own prober id).
//!
//! # Passive signs only bring a probe forward
//!
//! The data plane counts what the traffic says of each backend ([`PassiveEvent`]): a
//! client's SYN sent again on a flow the backend has not answered, an RST or an ICMP
//! unreachable from the backend, a handshake answered. None of this is sound evidence on its
//! own: a client controls every packet it sends; it can resend a SYN at will (one client
//! resending a bare SYN on 16 ports, ~112 packets, used to take every backend out) and make
//! a healthy backend answer RSTs (segments for connections it has aborted). So **the traffic decides only when a backend is
//! probed, never what the probe concludes** (HAProxy's `observe layer4` with
//! `on-error fastinter`):
//!
//! - `passive_fall` bad signs in a row (no handshake answered between them, summed over all
//!   clients) make an up backend **suspect**: its next probe starts at once, and while it
//!   stays suspect its probes follow each other every [`early_probe_gap`] (the check's
//!   `timeout`, at least [`MIN_EARLY_PROBE_GAP`], at most `interval`) instead of every
//!   `interval`.
//! - A passing probe clears the suspicion (and the passive count): probes go back to
//!   `interval`. `fall` failing probes in a row take the backend down, as they always do;
//!   the transition's reason names the passive sign that brought the probes forward.
//! - So a lying client can at most cause extra probes: never more than one probe of a
//!   backend (per service) per [`early_probe_gap`], whatever it sends, and a healthy backend
//!   passes them. A hung or resetting backend is still taken out within about
//!   `fall × early_probe_gap` of the first signs, however long `interval` is.
//! - With `check = "none"` there is no probe to bring forward, and passive signs are only
//!   counted: they never take a backend down. Requiring signs from many distinct client
//!   addresses would not make them sound: source addresses are free to forge towards a VIP
//!   (a SYN needs no answer to be counted), and the memory to tell them apart would be one
//!   more table to fill. `passive_fall = 0` turns passive checks off.
//!
//! # Probes
//!
//! Backends are keyed and probed by [`IpAddr`] and [`SocketAddr`]: an IPv6 backend is probed
//! as an IPv4 one is (an IPv6 socket, `Host: [addr]` for HTTP), except through the VIP
//! (`via_vip`, IPv4 only: the config refuses it for IPv6 services).
//!
//! - `tcp`: a connect to the backend's address and port within `timeout`.
//! - `http`: a connect, `GET <http_path> HTTP/1.0` written by hand, and the status line read
//!   back; the status must equal `http_status`. The whole exchange must fit in `timeout`.
//! - `udp`: `udp_payload` sent from a connected socket; any reply within `timeout` passes. An
//!   ICMP port unreachable makes the socket's receive fail with "connection refused", which
//!   fails the probe at once (keepalived's `UDP_CHECK`).
//! - `https`: a TLS handshake (rustls) and the `http` exchange over it (keepalived's
//!   `SSL_GET`): no SNI and any certificate unless `tls_server_name` / `tls_verify` say
//!   otherwise ([`probe_https`]).
//! - `icmp`: an echo request to the backend's address and its reply ([`probe_icmp`]).
//! - `script`: a command, exit 0 passing, killed at `timeout` ([`probe_script`]).
//! - `dns`: a query over UDP, rcode NOERROR (and `dns_expect`) passing ([`probe_dns`]);
//!   the answer is read within its bytes, whatever they are.
//!
//! [`HealthMonitor::poll`] hands each due probe to a pool of at most [`MAX_PROBE_THREADS`]
//! threads, started as probes are waiting and never more than that, whatever the number of
//! backends (1000 backends do not make 1000 threads). A (service, backend) has at most one
//! probe queued or running; its next one is due `interval` (or [`early_probe_gap`]) after
//! the start of the last. A probe holds its thread for at most `timeout`, so with more
//! backends hanging at once than threads, probes queue (first in, first out) and start late,
//! never lost: a pool of `n` threads keeps up with any number of backends as long as
//! `hanging backends × timeout / interval ≤ n`. The pool's threads are not joined when the
//! monitor goes: each ends after the probe it is running.
//!
//! The measured time of each successful probe (connect, or the full HTTP/UDP exchange) is
//! smoothed as TCP smooths its RTT (RFC 6298: `srtt = 7/8 srtt + 1/8 sample`, the first
//! sample taken as is) and is what the least-time (`lt`) scheduler reads.
//!
//! # DR: probing what clients use (not done)
//!
//! A DR real server answers clients on the VIP (held on its `lo`), but the probes above go to
//! its own address. Whether the service also answers on the VIP is only seen by sending a
//! packet to VIP:port with the real server's MAC as destination, as the data plane does. Two
//! ways to do that, neither done here:
//!
//! 1. Kernel sockets with policy routing: per backend, a mark (`SO_MARK`, needs
//!    `CAP_NET_ADMIN`), an `ip rule fwmark N table N`, and in table N a route `VIP via
//!    <backend addr> dev <if> onlink`. The VIP must not be local to the xlb box's kernel, and
//!    the real server's SYN-ACK (source VIP, to the box's interface address) must reach the
//!    kernel rather than the AF_XDP socket: the steering program already passes traffic for
//!    the interface address to the kernel.
//! 2. A crafted SYN sent through the AF_XDP socket with the backend's MAC, its SYN-ACK
//!    recognised by the pipeline (a dedicated source port range) and answered with an RST:
//!    no kernel state, but it needs a hook in the data plane.
//!
//! Until then a DR backend's health is its own address's; a service bound to 0.0.0.0 (the
//! usual case) answers on both.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use crossbeam::channel::{self, Receiver, Sender};

use crate::control::config::{
    BackendConfig, Config, HealthCheckKind, HealthConfig, OnFailure, is_prime,
};
use crate::flow::Proto;
use crate::snapshot::BackendId;

/// A service as health checks name it: (VIP, port, protocol).
pub type ServiceKey = (IpAddr, u16, Proto);

/// A backend as health checks name it: (address, port).
pub type BackendKey = (IpAddr, u16);

/// A backend of a service went down or came back up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The service, (vip, port, proto).
    pub service: ServiceKey,
    /// The backend, (addr, port).
    pub backend: BackendKey,
    /// True if it came up, false if it went down.
    pub up: bool,
    /// Why, for the log: the counts and the last probe's or observation's outcome.
    pub reason: String,
}

impl fmt::Display for Transition {
    /// `10.1.1.100:80/tcp: backend 10.1.1.11:80 down: 3 consecutive failed tcp checks, ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (vip, port, proto) = self.service;
        let (addr, backend_port) = self.backend;
        let state = if self.up { "up" } else { "down" };
        write!(f, "{vip}:{port}/{proto}: backend {addr}:{backend_port} {state}: {}", self.reason)
    }
}

/// What the data plane saw of a backend's traffic (passive health checking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveEvent {
    /// The client sent its SYN again on a flow the backend had not answered (the client's
    /// retransmission timer ran out; seen in every forwarding mode).
    SynUnanswered,
    /// The backend answered a SYN with an RST.
    Rst,
    /// An ICMP destination unreachable came back for traffic sent to the backend.
    IcmpUnreachable,
    /// The backend answered a handshake (its SYN-ACK, or the client's ACK completing the
    /// handshake): clears the passive count (not a suspicion: only a probe clears that).
    Answered,
}

impl PassiveEvent {
    /// How the event reads in a transition's reason.
    pub const fn describe(self) -> &'static str {
        match self {
            PassiveEvent::SynUnanswered => "a SYN went unanswered",
            PassiveEvent::Rst => "an RST answered a SYN",
            PassiveEvent::IcmpUnreachable => "an ICMP unreachable came back",
            PassiveEvent::Answered => "the backend answered",
        }
    }
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the check's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The socket call failed (refused, unreachable, reset...).
    #[error("{0}")]
    Io(String),
    /// An HTTP answer with another status than expected.
    #[error("HTTP status {got}, expected {expected}")]
    Status {
        /// The status the server sent.
        got: u16,
        /// The check's `http_status`.
        expected: u16,
    },
    /// The answer to an HTTP check did not start with an HTTP status line.
    #[error("not an HTTP status line: {0:?}")]
    NotHttp(String),
    /// A `script` check's command could not run, or exited with another status than 0.
    #[error("script: {0}")]
    Script(String),
    /// A `dns` check's answer was an error, not an answer, or lacked `dns_expect`.
    #[error("DNS: {0}")]
    Dns(String),
    /// An `https` check's TLS handshake failed, or its settings could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A probe's outcome: the time it took, or why it failed.
pub type ProbeResult = Result<Duration, ProbeError>;

/// Transition and probe counts, for one backend or summed over all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Probes that passed.
    pub probes_ok: u64,
    /// Probes that failed.
    pub probes_failed: u64,
    /// Passive observations received (all kinds).
    pub passive_events: u64,
    /// Times passive signs made an up backend suspect and brought its next probe forward.
    pub early_probes: u64,
    /// Up → down transitions.
    pub went_down: u64,
    /// Down → up transitions.
    pub came_up: u64,
}

/// One backend's state machine (see the module docs). Pure: it counts results, reads no
/// clock and does no I/O, so tests drive it with made-up results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    up: bool,
    /// Not probed yet since the daemon started, and no kept verdict: down until the first
    /// probe says otherwise.
    unknown: bool,
    successes: u32,
    failures: u32,
    passive_failures: u32,
    /// The bad sign that made the backend suspect (`passive_fall` of them in a row while up):
    /// its probes run early until one passes or it goes down.
    suspect: Option<PassiveEvent>,
    /// Smoothed response time in µs; 0 until the first successful probe.
    response_time_us: u32,
}

impl Default for BackendHealth {
    fn default() -> Self {
        BackendHealth::new()
    }
}

impl BackendHealth {
    /// A backend not probed yet: up, no counts, response time unknown.
    pub const fn new() -> BackendHealth {
        BackendHealth {
            up: true,
            unknown: false,
            successes: 0,
            failures: 0,
            passive_failures: 0,
            suspect: None,
            response_time_us: 0,
        }
    }

    /// A backend with no verdict yet, at the daemon's start: down until its first probe.
    pub const fn unknown() -> BackendHealth {
        BackendHealth { up: false, unknown: true, ..BackendHealth::new() }
    }

    /// Whether the backend may take new flows.
    pub const fn is_up(&self) -> bool {
        self.up
    }

    /// Whether it waits for its first probe (see [`BackendHealth::unknown`]).
    pub const fn is_unknown(&self) -> bool {
        self.unknown
    }

    /// Consecutive successful probes so far.
    pub const fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failed probes so far.
    pub const fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether passive signs made the backend suspect: its probes run early (module docs).
    pub const fn is_suspect(&self) -> bool {
        self.suspect.is_some()
    }

    /// The smoothed response time in µs (0 = no successful probe yet).
    pub const fn response_time_us(&self) -> u32 {
        self.response_time_us
    }

    /// Counts a probe's result. Returns the new state and the reason if it changed.
    pub fn record_probe(
        &mut self,
        result: &ProbeResult,
        settings: &HealthConfig,
    ) -> Option<(bool, String)> {
        let first = std::mem::replace(&mut self.unknown, false);
        match result {
            Ok(took) => {
                self.failures = 0;
                self.passive_failures = 0;
                self.suspect = None;
                self.successes = self.successes.saturating_add(1);
                self.smooth(*took);
                if first {
                    self.up = true;
                    let reason =
                        format!("first {} check passed in {} µs", settings.check, micros(*took));
                    return Some((true, reason));
                }
                if !self.up && self.successes >= settings.rise {
                    self.up = true;
                    let reason = format!(
                        "{} consecutive successful {} checks, last in {} µs",
                        self.successes,
                        settings.check,
                        micros(*took)
                    );
                    return Some((true, reason));
                }
            }
            Err(error) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if first {
                    return Some((
                        false,
                        format!("first {} check failed: {error}", settings.check),
                    ));
                }
                if self.up && self.failures >= settings.fall {
                    self.up = false;
                    let mut reason = format!(
                        "{} consecutive failed {} checks, last: {error}",
                        self.failures, settings.check
                    );
                    if let Some(sign) = self.suspect.take() {
                        let _ = write!(
                            reason,
                            " (probed early after {} bad passive signs, last: {})",
                            self.passive_failures,
                            sign.describe()
                        );
                    }
                    return Some((false, reason));
                }
            }
        }
        None
    }

    /// Counts a passive observation; it never changes the state (module docs). Returns true
    /// when it made the backend suspect, so its next probe should start at once.
    pub fn record_passive(&mut self, event: PassiveEvent, settings: &HealthConfig) -> bool {
        if event == PassiveEvent::Answered {
            self.passive_failures = 0;
            return false;
        }
        self.passive_failures = self.passive_failures.saturating_add(1);
        let acts = settings.passive_fall > 0 && settings.check != HealthCheckKind::None;
        if self.up
            && acts
            && self.suspect.is_none()
            && self.passive_failures >= settings.passive_fall
        {
            self.suspect = Some(event);
            return true;
        }
        false
    }

    /// Forgets the consecutive counts (new settings) but keeps the state and response time.
    fn restart_counts(&mut self) {
        self.successes = 0;
        self.failures = 0;
        self.passive_failures = 0;
        self.suspect = None;
    }

    /// RFC 6298's smoothing with alpha = 1/8; the first sample is taken as is.
    fn smooth(&mut self, took: Duration) {
        let sample = micros(took).max(1);
        self.response_time_us = match self.response_time_us {
            0 => sample,
            srtt => {
                let smoothed = (u64::from(srtt) * 7 + u64::from(sample)) / 8;
                u32::try_from(smoothed).unwrap_or(u32::MAX).max(1)
            }
        };
    }
}

/// A duration in whole µs, saturating at `u32::MAX` (71 minutes).
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The state of one backend of one service, as [`HealthMonitor::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// The service.
    pub service: ServiceKey,
    /// The backend.
    pub backend: BackendKey,
    /// Its weight in the config, as the operator set it (the snapshot's is 0 while the
    /// check has it down).
    pub weight: u32,
    /// Its state machine.
    pub health: BackendHealth,
    /// Its counts.
    pub counters: HealthCounters,
}

impl BackendStatus {
    /// Why the backend takes new flows or not (see [`BackendState`]).
    pub const fn state(&self) -> BackendState {
        if self.health.is_unknown() {
            BackendState::Unknown
        } else if !self.health.is_up() {
            BackendState::Down
        } else if self.weight == 0 {
            BackendState::Drained
        } else {
            BackendState::Up
        }
    }
}

/// A backend's state apart from its weight, as `xlb ctl -L --health` and the
/// `xlb_backend_state` metric show it. The check's verdict comes first: a backend the
/// operator drained (weight 0) whose check fails shows `down`, which is what still holds
/// when the operator gives it its weight back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Its check passes (or it has none) and its weight is above 0: it takes new flows.
    Up,
    /// The operator set its weight to 0 (config, `-e -w 0`); its check passes or it has none.
    Drained,
    /// Its check failed `fall` times in a row: drained or removed (`on_failure`).
    Down,
    /// At the daemon's start, no verdict kept and no probe yet: out until its first probe.
    Unknown,
}

impl BackendState {
    /// Every state, in the order listings and metrics give them.
    pub const ALL: [BackendState; 4] =
        [BackendState::Up, BackendState::Drained, BackendState::Down, BackendState::Unknown];

    /// Its name in listings and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Drained => "drained",
            BackendState::Down => "down",
            BackendState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most threads probing at once, whatever the number of backends (module docs, "Probes").
pub const MAX_PROBE_THREADS: usize = 16;

/// The shortest time between the starts of two probes of one backend brought forward by
/// passive signs (module docs, "Passive signs only bring a probe forward").
pub const MIN_EARLY_PROBE_GAP: Duration = Duration::from_millis(100);

/// The time between the starts of a suspect backend's probes: the check's `timeout` (one
/// probe after the other), at least [`MIN_EARLY_PROBE_GAP`], at most its `interval`.
pub fn early_probe_gap(settings: &HealthConfig) -> Duration {
    settings.timeout.max(MIN_EARLY_PROBE_GAP).min(settings.interval)
}

/// A probe for the pool to run.
#[derive(Debug)]
struct ProbeJob {
    prober: u64,
    service: ServiceKey,
    backend: BackendKey,
    target: SocketAddr,
    mark: Option<u32>,
    settings: HealthConfig,
}

/// A result from the pool.
#[derive(Debug)]
struct ProbeReport {
    prober: u64,
    service: ServiceKey,
    backend: BackendKey,
    result: ProbeResult,
}

/// The probing threads: at most [`MAX_PROBE_THREADS`], started while probes wait for one.
/// When the monitor goes, each thread ends after the probe it is running (its result has
/// nowhere to go) or, if idle, at once (`jobs` is gone).
#[derive(Debug)]
struct ProbePool {
    jobs: Sender<ProbeJob>,
    queue: Receiver<ProbeJob>,
    /// Threads started.
    threads: usize,
    /// Jobs sent whose result has not come back (of every prober id, current or not).
    outstanding: usize,
}

impl ProbePool {
    fn new() -> ProbePool {
        let (jobs, queue) = channel::unbounded();
        ProbePool { jobs, queue, threads: 0, outstanding: 0 }
    }

    /// Queues `job`, starting a thread if every thread is busy and the pool may grow.
    fn run(&mut self, job: ProbeJob, results: &Sender<ProbeReport>) {
        self.outstanding += 1;
        let _ = self.jobs.send(job);
        if self.threads >= self.outstanding.min(MAX_PROBE_THREADS) {
            return;
        }
        let (queue, results) = (self.queue.clone(), results.clone());
        let spawned = thread::Builder::new()
            .name(format!("xlb-health-{}", self.threads))
            .spawn(move || probe_worker(&queue, &results));
        match spawned {
            Ok(_) => self.threads += 1,
            // The jobs wait for the threads there are, or for the next attempt.
            Err(error) => eprintln!("xlb: error: health: cannot start a probe thread: {error}"),
        }
    }
}

/// A pool thread: runs probes until the monitor goes.
fn probe_worker(queue: &Receiver<ProbeJob>, results: &Sender<ProbeReport>) {
    while let Ok(job) = queue.recv() {
        let result = probe_service(Some(job.service), job.target, job.mark, &job.settings);
        let report =
            ProbeReport { prober: job.prober, service: job.service, backend: job.backend, result };
        if results.send(report).is_err() {
            return;
        }
    }
}

/// One backend of one service.
#[derive(Debug)]
struct Entry {
    settings: HealthConfig,
    /// The backend's weight in the config (reported, never used to decide).
    weight: u32,
    health: BackendHealth,
    counters: HealthCounters,
    /// The id results of this entry's probes carry; it changes with the settings, and
    /// results with another are ignored.
    prober: u64,
    /// When the next probe is due (None: `check = "none"`, never).
    due: Option<StdInstant>,
    /// When the last probe started.
    started: Option<StdInstant>,
    /// Whether a probe is queued or running.
    in_flight: bool,
}

impl Entry {
    /// When the first probe under these settings is due: `now`, unless there is no check.
    fn first_due(&self, now: StdInstant) -> Option<StdInstant> {
        (self.settings.check != HealthCheckKind::None).then_some(now)
    }

    /// When the probe after the one that started at `started` is due.
    fn next_due(&self, started: StdInstant) -> Option<StdInstant> {
        if self.settings.check == HealthCheckKind::None {
            return None;
        }
        let gap = if self.health.is_suspect() {
            early_probe_gap(&self.settings)
        } else {
            self.settings.interval
        };
        Some(started + gap)
    }
}

/// Health checks for every backend of every service (see the module docs).
#[derive(Debug)]
pub struct HealthMonitor {
    entries: HashMap<(ServiceKey, BackendKey), Entry>,
    results_tx: Sender<ProbeReport>,
    results: Receiver<ProbeReport>,
    /// Transitions from `observe` and `reconfigure`, returned by the next `poll`.
    pending: Vec<Transition>,
    counters: HealthCounters,
    next_prober: u64,
    /// None for monitors driven only by `record` and `observe` (tests, replay).
    pool: Option<ProbePool>,
}

impl HealthMonitor {
    /// Probes every backend of every service of `config` that has a check, from the first
    /// [`HealthMonitor::poll`] on.
    pub fn new(config: &Config) -> HealthMonitor {
        HealthMonitor::build(config, Some(ProbePool::new()))
    }

    /// A monitor that runs no probes: its backends move only by [`HealthMonitor::record`]
    /// (tests, pcap replay, probes run elsewhere).
    pub fn without_probers(config: &Config) -> HealthMonitor {
        HealthMonitor::build(config, None)
    }

    fn build(config: &Config, pool: Option<ProbePool>) -> HealthMonitor {
        let (results_tx, results) = channel::unbounded();
        let mut monitor = HealthMonitor {
            entries: HashMap::new(),
            results_tx,
            results,
            pending: Vec::new(),
            counters: HealthCounters::default(),
            next_prober: 0,
            pool,
        };
        monitor.reconfigure(config);
        monitor
    }

    /// Follows a new config: backends that left are forgotten (their results ignored), new
    /// ones start up, unchanged ones keep their state; see the module docs for changed
    /// settings. New and changed ones are probed at the next `poll`.
    pub fn reconfigure(&mut self, config: &Config) {
        let mut old = std::mem::take(&mut self.entries);
        let now = StdInstant::now();
        for service in &config.services {
            let service_key = (service.vip, service.port, service.proto);
            for backend in &service.backends {
                let key = (service_key, (backend.addr, backend.port));
                let mut entry = match old.remove(&key) {
                    Some(entry) if entry.settings == service.health => entry,
                    Some(mut entry) => {
                        entry.health.restart_counts();
                        entry.settings = service.health.clone();
                        entry.prober = self.next_prober;
                        entry.due = entry.first_due(now);
                        entry.in_flight = false;
                        if entry.settings.check == HealthCheckKind::None && !entry.health.up {
                            entry.health.up = true;
                            entry.health.unknown = false;
                            let reason = "health checks turned off".to_string();
                            self.transition(key, &mut entry.counters, true, reason);
                        }
                        entry
                    }
                    None => {
                        let mut entry = Entry {
                            settings: service.health.clone(),
                            weight: backend.weight,
                            health: BackendHealth::new(),
                            counters: HealthCounters::default(),
                            prober: self.next_prober,
                            due: None,
                            started: None,
                            in_flight: false,
                        };
                        entry.due = entry.first_due(now);
                        entry
                    }
                };
                entry.weight = backend.weight;
                self.next_prober += 1;
                self.entries.insert(key, entry);
            }
        }
    }

    /// At the daemon's start, before the first [`HealthMonitor::poll`]: every backend takes
    /// the verdict `kept` has for it (the previous process's, from the state file); one
    /// without a kept verdict whose service has a check starts unknown (module docs).
    pub fn resume(&mut self, kept: impl Fn(ServiceKey, BackendKey) -> Option<bool>) {
        for ((service, backend), entry) in &mut self.entries {
            match kept(*service, *backend) {
                Some(up) => entry.health.up = up,
                None if entry.settings.check != HealthCheckKind::None => {
                    entry.health = BackendHealth::unknown();
                }
                None => {}
            }
        }
    }

    /// How many backends still wait for their first probe.
    pub fn unknown_count(&self) -> usize {
        self.entries.values().filter(|e| e.health.unknown).count()
    }

    /// The longest probe timeout over the backends that wait for their first probe.
    pub fn first_probe_timeout(&self) -> Duration {
        let unknown = self.entries.values().filter(|e| e.health.unknown);
        unknown.map(|e| e.settings.timeout).max().unwrap_or_default()
    }

    /// Gathers the probe results that arrived since the last call and starts the probes
    /// that are due (never blocks); returns the transitions since the last call, each once,
    /// in the order they happened.
    pub fn poll(&mut self) -> Vec<Transition> {
        while let Ok(report) = self.results.try_recv() {
            if let Some(pool) = &mut self.pool {
                pool.outstanding = pool.outstanding.saturating_sub(1);
            }
            let key = (report.service, report.backend);
            let Some(entry) = self.entries.get_mut(&key) else { continue };
            if entry.prober != report.prober {
                continue;
            }
            entry.in_flight = false;
            self.record(report.service, report.backend, report.result);
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.due = entry.started.and_then(|started| entry.next_due(started));
            }
        }
        self.start_due_probes();
        std::mem::take(&mut self.pending)
    }

    /// Hands every due probe to the pool, in key order (the order of the config file's
    /// services and backends is not kept here, but the order is stable).
    fn start_due_probes(&mut self) {
        let Some(pool) = &mut self.pool else { return };
        let now = StdInstant::now();
        let mut due: Vec<(ServiceKey, BackendKey)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.in_flight && e.due.is_some_and(|due| due <= now))
            .map(|(key, _)| *key)
            .collect();
        due.sort_unstable_by_key(|((vip, port, proto), (addr, backend_port))| {
            (*vip, *port, proto.number(), *addr, *backend_port)
        });
        for key in due {
            let Some(entry) = self.entries.get_mut(&key) else { continue };
            let (service, backend) = key;
            // DR `via_vip`: what clients use, the VIP:port, routed to this real server by the
            // policy route its mark selects (see `probe_mark`; IPv4 only: the config refuses
            // `via_vip` on an IPv6 service).
            let (target, mark) = match (entry.settings.via_vip, backend.0) {
                (true, IpAddr::V4(rip)) => {
                    (SocketAddr::new(service.0, service.1), Some(probe_mark(rip)))
                }
                _ => (SocketAddr::new(backend.0, backend.1), None),
            };
            entry.in_flight = true;
            entry.started = Some(now);
            let job = ProbeJob {
                prober: entry.prober,
                service,
                backend,
                target,
                mark,
                settings: entry.settings.clone(),
            };
            pool.run(job, &self.results_tx);
        }
    }

    /// How many probe threads the monitor has started (at most [`MAX_PROBE_THREADS`]).
    pub fn probe_threads(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.threads)
    }

    /// Counts one probe result for a backend of a service, as a probe's result from the pool
    /// is; a (service, backend) not in the config is ignored. Transitions go to the next
    /// `poll`.
    pub fn record(&mut self, service: ServiceKey, backend: BackendKey, result: ProbeResult) {
        let key = (service, backend);
        let Some(mut entry) = self.entries.remove(&key) else { return };
        if result.is_ok() {
            entry.counters.probes_ok += 1;
            self.counters.probes_ok += 1;
        } else {
            entry.counters.probes_failed += 1;
            self.counters.probes_failed += 1;
        }
        if let Some((up, reason)) = entry.health.record_probe(&result, &entry.settings) {
            self.transition(key, &mut entry.counters, up, reason);
        }
        self.entries.insert(key, entry);
    }

    /// Counts what the data plane saw of `backend`'s traffic, in every service it serves. It
    /// never takes a backend down: a backend it makes suspect is probed at once (no sooner
    /// than [`early_probe_gap`] after its last probe started), then every
    /// [`early_probe_gap`] until a probe passes (module docs).
    pub fn observe(&mut self, backend: BackendKey, event: PassiveEvent) {
        for ((_, b), entry) in &mut self.entries {
            if *b != backend {
                continue;
            }
            entry.counters.passive_events += 1;
            self.counters.passive_events += 1;
            if entry.health.record_passive(event, &entry.settings) {
                entry.counters.early_probes += 1;
                self.counters.early_probes += 1;
                // In flight: its result schedules the next one early.
                if !entry.in_flight {
                    let now = StdInstant::now();
                    let gap = early_probe_gap(&entry.settings);
                    let soonest = entry.started.map_or(now, |started| (started + gap).max(now));
                    entry.due = Some(entry.due.map_or(soonest, |due| due.min(soonest)));
                }
            }
        }
    }

    fn transition(
        &mut self,
        (service, backend): (ServiceKey, BackendKey),
        counters: &mut HealthCounters,
        up: bool,
        reason: String,
    ) {
        for counts in [&mut *counters, &mut self.counters] {
            if up {
                counts.came_up += 1;
            } else {
                counts.went_down += 1;
            }
        }
        self.pending.push(Transition { service, backend, up, reason });
    }

    /// Whether a backend of a service is up; a pair the monitor does not know counts as up.
    pub fn is_up(&self, service: ServiceKey, backend: BackendKey) -> bool {
        self.entries.get(&(service, backend)).is_none_or(|e| e.health.up)
    }

    /// The totals over every backend since the monitor started.
    pub fn counters(&self) -> HealthCounters {
        self.counters
    }

    /// Every (service, backend) with its state and counts, sorted by service then backend.
    pub fn status(&self) -> Vec<BackendStatus> {
        let mut all: Vec<BackendStatus> = self
            .entries
            .iter()
            .map(|((service, backend), entry)| BackendStatus {
                service: *service,
                backend: *backend,
                weight: entry.weight,
                health: entry.health.clone(),
                counters: entry.counters,
            })
            .collect();
        all.sort_unstable_by_key(|s| {
            (s.service.0, s.service.1, s.service.2.number(), s.backend.0, s.backend.1)
        });
        all
    }

    /// The config the data plane should run: `config` with down backends drained or removed
    /// and sorry servers standing in for services with no healthy backend (module docs).
    pub fn effective(&self, config: &Config) -> Config {
        let mut effective = config.clone();
        for service in &mut effective.services {
            let service_key = (service.vip, service.port, service.proto);
            let up = |b: &BackendConfig| self.is_up(service_key, (b.addr, b.port));
            let serving = service.backends.iter().any(|b| b.weight > 0 && up(b));
            match service.health.on_failure {
                OnFailure::Drain => {
                    for backend in service.backends.iter_mut().filter(|b| !up(b)) {
                        backend.weight = 0;
                        backend.down = true;
                    }
                }
                OnFailure::Remove => service.backends.retain(up),
            }
            if let Some(sorry) = service.health.sorry_server.filter(|_| !serving) {
                service.backends.push(BackendConfig {
                    addr: sorry.ip(),
                    port: sorry.port(),
                    weight: 1,
                    down: false,
                });
                if service.maglev_table_size < service.backends.len() {
                    service.maglev_table_size = next_prime(service.backends.len());
                }
            }
        }
        effective
    }

    /// The backends of `config` its health checks took out of their service
    /// (`on_failure = "remove"` and down): their flows are rescheduled on their client's next
    /// packet ([`crate::snapshot::Snapshot::reschedules`]), as IPVS's `expire_nodest_conn`
    /// has it, rather than kept on a server that failed. A drained one (`on_failure =
    /// "drain"`, the default) keeps its flows.
    pub fn removed(&self, config: &Config) -> Vec<BackendId> {
        config
            .services
            .iter()
            .filter(|service| service.health.on_failure == OnFailure::Remove)
            .flat_map(|service| {
                let key = (service.vip, service.port, service.proto);
                service.backends.iter().filter(move |b| !self.is_up(key, (b.addr, b.port))).map(
                    move |b| BackendId {
                        vip: service.vip,
                        vport: service.port,
                        proto: service.proto,
                        addr: b.addr,
                        port: b.port,
                    },
                )
            })
            .collect()
    }

    /// The smoothed response time in µs of every backend of `config` (normally the one
    /// [`HealthMonitor::effective`] returned), in snapshot order: services in order, each
    /// one's backends in order. 0 means unknown (no successful probe yet, or a sorry server).
    pub fn response_times(&self, config: &Config) -> Vec<u32> {
        config
            .services
            .iter()
            .flat_map(|service| {
                let service_key = (service.vip, service.port, service.proto);
                service.backends.iter().map(move |b| {
                    self.entries
                        .get(&(service_key, (b.addr, b.port)))
                        .map_or(0, |e| e.health.response_time_us)
                })
            })
            .collect()
    }
}

/// The smallest prime at least `n` (Maglev tables must be prime-sized).
fn next_prime(n: usize) -> usize {
    (n.max(2)..).find(|&k| is_prime(k as u64)).unwrap_or(n)
}

/// Runs the check `settings` asks for against `target` once; `check = "none"` always passes.
pub fn probe(target: impl Into<SocketAddr>, settings: &HealthConfig) -> ProbeResult {
    probe_marked(target.into(), None, settings)
}

/// The firewall mark (and routing table) of probes through the VIP to the real server
/// `rip`: the address itself, so every real server has its own and it never changes.
pub fn probe_mark(rip: Ipv4Addr) -> u32 {
    rip.to_bits()
}

/// [`probe`] from sockets carrying `mark` (SO_MARK), so a policy route can pick the path.
pub fn probe_marked(target: SocketAddr, mark: Option<u32>, settings: &HealthConfig) -> ProbeResult {
    probe_service(None, target, mark, settings)
}

/// [`probe_marked`] for a backend of `service`, which a script check finds in its
/// environment (`XLB_VIP`, `XLB_VIP_PORT`, `XLB_PROTO`).
fn probe_service(
    service: Option<ServiceKey>,
    target: SocketAddr,
    mark: Option<u32>,
    settings: &HealthConfig,
) -> ProbeResult {
    let timeout = settings.timeout;
    match settings.check {
        HealthCheckKind::None => Ok(Duration::ZERO),
        HealthCheckKind::Tcp => probe_tcp_marked(target, mark, timeout),
        HealthCheckKind::Http => {
            probe_http_marked(target, mark, &settings.http_path, settings.http_status, timeout)
        }
        HealthCheckKind::Udp => {
            probe_udp_marked(target, mark, settings.udp_payload.as_bytes(), timeout)
        }
        HealthCheckKind::Icmp => probe_icmp_marked(target.ip(), mark, timeout),
        HealthCheckKind::Script => probe_script(&settings.script, target, service, timeout),
        HealthCheckKind::Dns => probe_dns_marked(target, mark, settings),
        HealthCheckKind::Https => probe_https_marked(target, mark, settings),
    }
}

/// A TCP connection to `target` within `timeout`, from a socket with `mark` if any.
fn connect_tcp(target: SocketAddr, mark: Option<u32>, timeout: Duration) -> io::Result<TcpStream> {
    let Some(mark) = mark else {
        return TcpStream::connect_timeout(&target, timeout);
    };
    let domain = socket2::Domain::for_address(target);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.set_mark(mark)?;
    socket.connect_timeout(&target.into(), timeout)?;
    Ok(socket.into())
}

/// A TCP connect within `timeout`; returns the time it took.
pub fn probe_tcp(target: impl Into<SocketAddr>, timeout: Duration) -> ProbeResult {
    probe_tcp_marked(target.into(), None, timeout)
}

fn probe_tcp_marked(target: SocketAddr, mark: Option<u32>, timeout: Duration) -> ProbeResult {
    let started = StdInstant::now();
    let stream = connect_tcp(target, mark, timeout).map_err(|e| io_error(&e, timeout))?;
    let took = started.elapsed();
    drop(stream);
    Ok(took)
}

/// `GET path HTTP/1.0`, expecting `status` on the status line, all within `timeout`; returns
/// the time from connect to status line.
pub fn probe_http(
    target: impl Into<SocketAddr>,
    path: &str,
    status: u16,
    timeout: Duration,
) -> ProbeResult {
    probe_http_marked(target.into(), None, path, status, timeout)
}

fn probe_http_marked(
    target: SocketAddr,
    mark: Option<u32>,
    path: &str,
    status: u16,
    timeout: Duration,
) -> ProbeResult {
    let started = StdInstant::now();
    let mut stream = connect_tcp(target, mark, timeout).map_err(|e| io_error(&e, timeout))?;
    let host = http_host(target.ip(), None);
    http_get(&mut stream, &host, path, status, started, timeout)
}

/// The `Host` header's value: `name`, else the address (an IPv6 one bracketed, RFC 9110
/// §7.2, RFC 3986's IP-literal).
fn http_host(ip: IpAddr, name: Option<&str>) -> String {
    match (name, ip) {
        (Some(name), _) => name.to_string(),
        (None, IpAddr::V4(ip)) => ip.to_string(),
        (None, IpAddr::V6(ip)) => format!("[{ip}]"),
    }
}

/// A stream over a TCP connection whose timeouts can be set: the connection itself, or
/// TLS over it.
trait OverTcp: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl OverTcp for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// `GET path HTTP/1.0` on `stream` and its status line, which must be `status`, all by
/// `timeout` after `started`; returns the time from `started` to the status line.
fn http_get(
    stream: &mut impl OverTcp,
    host: &str,
    path: &str,
    status: u16,
    started: StdInstant,
    timeout: Duration,
) -> ProbeResult {
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: xlb-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .tcp()
        .set_write_timeout(Some(time_left(started, timeout)?))
        .map_err(|e| io_error(&e, timeout))?;
    stream
        .tcp()
        .set_read_timeout(Some(time_left(started, timeout)?))
        .map_err(|e| io_error(&e, timeout))?;
    stream.write_all(request.as_bytes()).map_err(|e| io_error(&e, timeout))?;
    stream.flush().map_err(|e| io_error(&e, timeout))?;
    // The status line is short; 512 bytes is plenty and bounds what a bad server can send.
    let mut answer = [0u8; 512];
    let mut have = 0;
    while !answer[..have].contains(&b'\n') && have < answer.len() {
        let wait = time_left(started, timeout)?;
        stream.tcp().set_read_timeout(Some(wait)).map_err(|e| io_error(&e, timeout))?;
        match stream.read(&mut answer[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(&e, timeout)),
        }
    }
    let took = started.elapsed();
    let got = parse_status_line(&answer[..have])?;
    if got == status { Ok(took) } else { Err(ProbeError::Status { got, expected: status }) }
}

/// A TLS handshake with `target` and `GET http_path` over it, expecting `http_status`, all
/// within the timeout (keepalived's `SSL_GET`), with rustls (ring's cryptography).
///
/// As keepalived's, by default no SNI is sent and any certificate passes (the handshake
/// itself must: its signatures are checked). `tls_server_name` sends that name as SNI and
/// `Host`; `tls_verify` checks the certificate chain against `tls_ca_file` (read at each
/// probe) and the name in it: `tls_server_name`, else the backend's address.
pub fn probe_https(target: impl Into<SocketAddr>, settings: &HealthConfig) -> ProbeResult {
    probe_https_marked(target.into(), None, settings)
}

fn probe_https_marked(
    target: SocketAddr,
    mark: Option<u32>,
    settings: &HealthConfig,
) -> ProbeResult {
    let timeout = settings.timeout;
    let started = StdInstant::now();
    let tls_error = |what: &str, e: &dyn fmt::Display| ProbeError::Tls(format!("{what}: {e}"));
    let config = tls_client_config(settings)?;
    let name = match &settings.tls_server_name {
        Some(name) => rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| tls_error("server name", &e))?,
        None => rustls::pki_types::ServerName::IpAddress(target.ip().into()),
    };
    let connection =
        rustls::ClientConnection::new(config, name).map_err(|e| tls_error("client", &e))?;
    let tcp = connect_tcp(target, mark, timeout).map_err(|e| io_error(&e, timeout))?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let host = http_host(target.ip(), settings.tls_server_name.as_deref());
    http_get(&mut stream, &host, &settings.http_path, settings.http_status, started, timeout)
}

/// ring's cryptography for TLS. rustls 0.23.48 deprecates it for lacking post-quantum key
/// exchange; a health probe carries no secret worth harvesting for later decryption, and
/// ring builds with a C compiler alone, where aws-lc-rs needs cmake and far more build time.
#[allow(deprecated)]
fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client side of an `https` check: ring's cryptography, TLS 1.2 and 1.3, and either
/// the trusted CAs of `tls_ca_file` or [`AnyCertificate`].
fn tls_client_config(settings: &HealthConfig) -> Result<Arc<rustls::ClientConfig>, ProbeError> {
    let provider = tls_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Tls(e.to_string()))?;
    let mut config = if settings.tls_verify {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let file = &settings.tls_ca_file;
        let unreadable = |e: &dyn fmt::Display| ProbeError::Tls(format!("CA file {file}: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .map_err(|e| unreadable(&e))?
            .collect::<Result<_, _>>()
            .map_err(|e| unreadable(&e))?;
        let (added, _) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            return Err(unreadable(&"no CA certificate in it"));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.enable_sni = settings.tls_server_name.is_some();
    Ok(Arc::new(config))
}

/// keepalived's `SSL_GET` without `verify`: any certificate is taken, but the handshake's
/// signatures are still checked against it (a server must hold the key of what it sends).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signed: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, certificate, signed, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signed: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, certificate, signed, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The status code of `HTTP/1.x NNN ...` at the start of `answer`.
fn parse_status_line(answer: &[u8]) -> Result<u16, ProbeError> {
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim_end().to_string();
    let mut words = line.split(' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    let valid_code = code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit());
    match code.parse::<u16>() {
        Ok(code) if version.starts_with("HTTP/1.") && valid_code => Ok(code),
        _ => Err(ProbeError::NotHttp(line.chars().take(64).collect())),
    }
}

/// Sends `payload` from a connected UDP socket and waits up to `timeout` for any reply;
/// returns the round trip. An ICMP port unreachable fails it as "connection refused".
pub fn probe_udp(target: impl Into<SocketAddr>, payload: &[u8], timeout: Duration) -> ProbeResult {
    probe_udp_marked(target.into(), None, payload, timeout)
}

fn probe_udp_marked(
    target: SocketAddr,
    mark: Option<u32>,
    payload: &[u8],
    timeout: Duration,
) -> ProbeResult {
    let started = StdInstant::now();
    let fail = |e: io::Error| io_error(&e, timeout);
    let socket = connect_udp(target, mark).map_err(fail)?;
    socket.set_read_timeout(Some(timeout)).map_err(fail)?;
    socket.send(payload).map_err(fail)?;
    let mut reply = [0u8; 1500];
    loop {
        match socket.recv(&mut reply) {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
}

/// A UDP socket connected to `target`, bound to the unspecified address of its family,
/// with `mark` if any.
fn connect_udp(target: SocketAddr, mark: Option<u32>) -> io::Result<UdpSocket> {
    let any = match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = match mark {
        None => UdpSocket::bind(any)?,
        Some(mark) => {
            let domain = socket2::Domain::for_address(target);
            let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
            socket.set_mark(mark)?;
            socket.bind(&any.into())?;
            socket.into()
        }
    };
    socket.connect(target)?;
    Ok(socket)
}

/// A number for each probe that needs one (ICMP sequence and identifier, DNS query id),
/// mixed with the process id so two daemons' probes are told apart.
fn probe_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The time left of `timeout` since `started`, or the timeout error once none is.
fn time_left(started: StdInstant, timeout: Duration) -> Result<Duration, ProbeError> {
    timeout
        .checked_sub(started.elapsed())
        .filter(|left| !left.is_zero())
        .ok_or(ProbeError::Timeout(timeout))
}

/// An ICMP echo request to `addr` and its reply within `timeout` (keepalived's
/// `PING_CHECK`); returns the round trip.
///
/// From an unprivileged ICMP datagram socket when `net.ipv4.ping_group_range` admits the
/// process's group (the kernel then picks the identifier and matches replies), else from a
/// raw socket (`CAP_NET_RAW`), whose replies are matched here by identifier, sequence and
/// payload: a raw socket sees every ICMP message to the host, the request itself on
/// loopback included.
pub fn probe_icmp(addr: IpAddr, timeout: Duration) -> ProbeResult {
    probe_icmp_marked(addr, None, timeout)
}

fn probe_icmp_marked(addr: IpAddr, mark: Option<u32>, timeout: Duration) -> ProbeResult {
    use socket2::{Domain, Protocol, Socket, Type};
    let started = StdInstant::now();
    let fail = |e: io::Error| io_error(&e, timeout);
    let (domain, protocol) = match addr {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(socket) => (socket, false),
        Err(_) => (Socket::new(domain, Type::RAW, Some(protocol)).map_err(fail)?, true),
    };
    if let Some(mark) = mark {
        socket.set_mark(mark).map_err(fail)?;
    }
    socket.connect(&SocketAddr::new(addr, 0).into()).map_err(fail)?;
    let token = probe_token();
    let echo =
        EchoRequest { v6: addr.is_ipv6(), id: (token >> 16) as u16, seq: token as u16, token };
    (&socket).write_all(&echo.packet()).map_err(fail)?;
    let mut reply = [0u8; 1500];
    loop {
        socket.set_read_timeout(Some(time_left(started, timeout)?)).map_err(fail)?;
        let n = match (&socket).read(&mut reply) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        };
        // A raw IPv4 socket hands over the IP header too; an ICMPv6 one never does.
        let message = match (raw, addr) {
            (true, IpAddr::V4(_)) => {
                let header = usize::from(reply[0] & 0x0f) * 4;
                reply.get(header.max(20)..n).unwrap_or_default()
            }
            _ => &reply[..n],
        };
        if echo.answered_by(message, !raw) {
            return Ok(started.elapsed());
        }
    }
}

/// An ICMP or ICMPv6 echo request of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EchoRequest {
    v6: bool,
    id: u16,
    seq: u16,
    /// The payload: 8 bytes the reply must echo.
    token: u64,
}

impl EchoRequest {
    /// The ICMP message: type, code, checksum, identifier, sequence, payload. The checksum
    /// is ICMP's (RFC 792); for ICMPv6 the kernel computes it (it covers a pseudo-header).
    fn packet(&self) -> [u8; 16] {
        let mut packet = [0u8; 16];
        packet[0] = if self.v6 { 128 } else { 8 };
        packet[4..6].copy_from_slice(&self.id.to_be_bytes());
        packet[6..8].copy_from_slice(&self.seq.to_be_bytes());
        packet[8..].copy_from_slice(&self.token.to_be_bytes());
        if !self.v6 {
            let checksum = internet_checksum(&packet);
            packet[2..4].copy_from_slice(&checksum.to_be_bytes());
        }
        packet
    }

    /// True if `message` (an ICMP message, any bytes) is this request's echo reply. A
    /// datagram socket's identifier is the kernel's, so `any_id` skips it.
    fn answered_by(&self, message: &[u8], any_id: bool) -> bool {
        let reply_type = if self.v6 { 129 } else { 0 };
        let Some(header) = message.first_chunk::<16>() else { return false };
        header[0] == reply_type
            && header[1] == 0
            && (any_id || header[4..6] == self.id.to_be_bytes())
            && header[6..8] == self.seq.to_be_bytes()
            && header[8..16] == self.token.to_be_bytes()
    }
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Runs `argv` (no shell) with the backend in its environment (`XLB_BACKEND_ADDR`,
/// `XLB_BACKEND_PORT`, and with its `service` `XLB_VIP`, `XLB_VIP_PORT`, `XLB_PROTO`),
/// stdin, stdout and stderr on /dev/null; exit status 0 within `timeout` passes
/// (keepalived's `MISC_CHECK`). At `timeout` the command is killed (SIGKILL) and reaped,
/// and the probe fails; a command that starts children of its own (`sh -c` without
/// `exec`) should end them, as only the command itself is killed.
pub fn probe_script(
    argv: &[String],
    target: SocketAddr,
    service: Option<ServiceKey>,
    timeout: Duration,
) -> ProbeResult {
    use std::process::{Command, Stdio};
    let started = StdInstant::now();
    let Some((program, args)) = argv.split_first() else {
        return Err(ProbeError::Script("no command".into()));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("XLB_BACKEND_ADDR", target.ip().to_string())
        .env("XLB_BACKEND_PORT", target.port().to_string());
    if let Some((vip, port, proto)) = service {
        command
            .env("XLB_VIP", vip.to_string())
            .env("XLB_VIP_PORT", port.to_string())
            .env("XLB_PROTO", proto.name());
    }
    let mut child =
        command.spawn().map_err(|e| ProbeError::Script(format!("cannot run {program}: {e}")))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(started.elapsed()),
            Ok(Some(status)) => return Err(ProbeError::Script(format!("{program}: {status}"))),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Timeout(timeout));
            }
            // The next look within 5 ms, and never past the timeout.
            Ok(None) => thread::sleep(
                SCRIPT_POLL
                    .min(timeout.saturating_sub(started.elapsed()))
                    .max(Duration::from_micros(100)),
            ),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Script(format!("{program}: {e}")));
            }
        }
    }
}

/// How often a running script check is looked at.
const SCRIPT_POLL: Duration = Duration::from_millis(5);

/// A DNS query for `settings.dns_name` of type `settings.dns_type` over UDP, expecting an
/// answer with its id, rcode NOERROR and, with `dns_expect`, that address in an A or AAAA
/// record of the answer section (keepalived's `DNS_CHECK`). Answers with another id (late
/// ones, forged ones) are skipped until `timeout`; see [`check_dns_answer`] for the parsing.
pub fn probe_dns(target: impl Into<SocketAddr>, settings: &HealthConfig) -> ProbeResult {
    probe_dns_marked(target.into(), None, settings)
}

fn probe_dns_marked(target: SocketAddr, mark: Option<u32>, settings: &HealthConfig) -> ProbeResult {
    let timeout = settings.timeout;
    let started = StdInstant::now();
    let fail = |e: io::Error| io_error(&e, timeout);
    let id = probe_token() as u16;
    let query = dns_query(id, &settings.dns_name, settings.dns_type)?;
    let socket = connect_udp(target, mark).map_err(fail)?;
    socket.send(&query).map_err(fail)?;
    let mut answer = [0u8; 4096];
    loop {
        socket.set_read_timeout(Some(time_left(started, timeout)?)).map_err(fail)?;
        let n = match socket.recv(&mut answer) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        };
        match check_dns_answer(&answer[..n], id, settings.dns_expect) {
            DnsVerdict::OtherId => {}
            DnsVerdict::Passed => return Ok(started.elapsed()),
            DnsVerdict::Failed(why) => return Err(ProbeError::Dns(why)),
        }
    }
}

/// A DNS query (RFC 1035 §4.1): header with `id` and RD, one question `name`, `qtype`, IN.
fn dns_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, ProbeError> {
    if let Some(problem) = crate::control::config::dns_name_problem(name) {
        return Err(ProbeError::Dns(format!("cannot ask {name:?}: {problem}")));
    }
    let mut query = Vec::with_capacity(18 + name.len());
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|label| !label.is_empty()) {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&qtype.to_be_bytes());
    query.extend_from_slice(&1u16.to_be_bytes());
    Ok(query)
}

/// What a datagram says to a DNS check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DnsVerdict {
    /// Not an answer to this query (too short, or another id): wait for the next.
    OtherId,
    /// The check passes.
    Passed,
    /// The check fails, for this reason.
    Failed(String),
}

/// Reads `answer`, any bytes from the network: never indexes past its end, follows no
/// compression pointer (a name ends at one), and reads at most as many records as its
/// header claims and its bytes hold, so a hostile answer costs at most one pass over it.
fn check_dns_answer(answer: &[u8], id: u16, expect: Option<IpAddr>) -> DnsVerdict {
    let Some(header) = answer.first_chunk::<12>() else { return DnsVerdict::OtherId };
    if header[0..2] != id.to_be_bytes() {
        return DnsVerdict::OtherId;
    }
    let word = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let (flags, questions, answers) = (word(2), word(4), word(6));
    if flags & 0x8000 == 0 {
        return DnsVerdict::Failed("a query came back, not an answer".into());
    }
    let rcode = flags & 0x000f;
    if rcode != 0 {
        const NAMES: [&str; 6] =
            ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];
        let name = NAMES.get(usize::from(rcode)).copied().unwrap_or("error");
        return DnsVerdict::Failed(format!("rcode {rcode} ({name})"));
    }
    let Some(expect) = expect else { return DnsVerdict::Passed };
    let missing = || DnsVerdict::Failed(format!("no record of {expect} in the answer"));
    let mut at = 12;
    for _ in 0..questions {
        let Some(end) = skip_dns_name(answer, at) else { return missing() };
        at = end + 4;
    }
    for _ in 0..answers {
        let Some(end) = skip_dns_name(answer, at) else { return missing() };
        let Some(fixed) = answer.get(end..end + 10) else { return missing() };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let Some(data) = answer.get(end + 10..end + 10 + length) else { return missing() };
        let found = match (rtype, data.len()) {
            (1, 4) => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            (28, 16) => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        if found == Some(expect) {
            return DnsVerdict::Passed;
        }
        at = end + 10 + length;
    }
    missing()
}

/// The offset just past the name at `at` in `message`: labels up to a zero byte, or up to
/// a compression pointer (2 bytes, not followed). `None` if it runs past the end or holds a
/// reserved label type.
fn skip_dns_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *message.get(at)?;
        match length & 0xc0 {
            0x00 if length == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(length),
            0xc0 => return message.get(at + 1).map(|_| at + 2),
            _ => return None,
        }
    }
}

/// A socket error as a probe error: the timeout kinds say which timeout ran out.
fn io_error(error: &io::Error, timeout: Duration) -> ProbeError {
    match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProbeError::Timeout(timeout),
        _ => ProbeError::Io(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use proptest::prelude::*;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 100));
    const WEB: ServiceKey = (VIP, 80, Proto::Tcp);
    const A: BackendKey = (IpAddr::V4(Ipv4Addr::new(10, 1, 1, 11)), 80);
    const B: BackendKey = (IpAddr::V4(Ipv4Addr::new(10, 1, 1, 12)), 80);
    const C: BackendKey = (IpAddr::V4(Ipv4Addr::new(10, 1, 1, 13)), 80);
    const SHORT: Duration = Duration::from_millis(300);

    /// A DR config: one web service on VIP:80 with `health` as its `[service.health]` body,
    /// backends A, B, C (C with `c_weight`), and `extra` appended.
    fn config(health: &str, c_weight: u32, extra: &str) -> Config {
        let text = format!(
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\nmac = \"02:00:00:00:00:01\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\nmaglev_table_size = 3\n\
             [service.health]\n{health}\n\
             [[service.backend]]\naddr = \"10.1.1.11\"\n\
             [[service.backend]]\naddr = \"10.1.1.12\"\nweight = 2\n\
             [[service.backend]]\naddr = \"10.1.1.13\"\nweight = {c_weight}\n{extra}"
        );
        Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn rise2_fall3() -> HealthConfig {
        HealthConfig { rise: 2, fall: 3, ..HealthConfig::default() }
    }

    fn ok() -> ProbeResult {
        Ok(Duration::from_micros(500))
    }

    fn refused() -> ProbeResult {
        Err(ProbeError::Io("connection refused".into()))
    }

    /// Feeds `results` to a fresh state machine; returns the transitions as (index, up).
    fn run(settings: &HealthConfig, results: &[bool]) -> Vec<(usize, bool)> {
        let mut health = BackendHealth::new();
        let mut seen = Vec::new();
        for (i, &passed) in results.iter().enumerate() {
            let result = if passed { ok() } else { refused() };
            if let Some((up, _)) = health.record_probe(&result, settings) {
                assert_eq!(up, health.is_up());
                seen.push((i, up));
            }
        }
        seen
    }

    #[test]
    fn fall_failures_take_a_backend_down_and_rise_successes_bring_it_back() {
        let settings = rise2_fall3();
        let mut health = BackendHealth::new();
        assert!(health.is_up());
        assert_eq!(health.record_probe(&refused(), &settings), None);
        assert_eq!(health.record_probe(&refused(), &settings), None);
        let (up, reason) = health.record_probe(&refused(), &settings).unwrap();
        assert!(!up && !health.is_up());
        assert_eq!(reason, "3 consecutive failed tcp checks, last: connection refused");
        // Down stays down, without another transition.
        assert_eq!(health.record_probe(&refused(), &settings), None);
        assert_eq!(health.record_probe(&ok(), &settings), None);
        let (up, reason) = health.record_probe(&ok(), &settings).unwrap();
        assert!(up && health.is_up());
        assert_eq!(reason, "2 consecutive successful tcp checks, last in 500 µs");
        assert_eq!((health.successes(), health.failures()), (2, 0));
    }

    /// At the daemon's start a backend keeps the previous process's verdict; one with no
    /// verdict waits for its first probe (down, so outside the data plane's tables), which
    /// brings it up at once or leaves it down until `rise` probes pass.
    #[test]
    fn a_restart_resumes_kept_verdicts_and_probes_unknown_backends_first() {
        let checked = config("check = \"tcp\"\nrise = 2\nfall = 3", 1, "");
        let mut monitor = HealthMonitor::without_probers(&checked);
        monitor.resume(|_, backend| {
            (backend == B).then_some(false).or((backend == A).then_some(true))
        });
        assert!(monitor.is_up(WEB, A), "kept up");
        assert!(!monitor.is_up(WEB, B), "kept down");
        assert!(!monitor.is_up(WEB, C), "unknown: down until probed");
        assert_eq!(monitor.unknown_count(), 1);
        let weights = |monitor: &HealthMonitor| -> Vec<u32> {
            monitor.effective(&checked).services[0].backends.iter().map(|b| b.weight).collect()
        };
        assert_eq!(weights(&monitor), [1, 0, 0]);
        // A kept-down backend needs `rise` probes, as ever; the unknown one needs one.
        monitor.record(WEB, B, ok());
        monitor.record(WEB, C, ok());
        assert_eq!(monitor.unknown_count(), 0);
        let transitions = monitor.poll();
        assert_eq!(transitions.len(), 1);
        assert_eq!((transitions[0].backend, transitions[0].up), (C, true));
        assert!(transitions[0].reason.starts_with("first tcp check passed"), "{transitions:?}");
        assert_eq!(weights(&monitor), [1, 0, 1]);
        // An unknown backend whose first probe fails is down until `rise` probes pass.
        let mut health = BackendHealth::unknown();
        let settings = rise2_fall3();
        let (up, reason) = health.record_probe(&refused(), &settings).unwrap();
        assert!(!up && reason.starts_with("first tcp check failed"), "{reason}");
        assert_eq!(health.record_probe(&ok(), &settings), None);
        assert!(health.record_probe(&ok(), &settings).is_some_and(|(up, _)| up));
        // Without a check there is nothing to wait for.
        let unchecked = config("check = \"none\"", 1, "");
        let mut monitor = HealthMonitor::without_probers(&unchecked);
        monitor.resume(|_, _| None);
        assert!(monitor.is_up(WEB, C));
        assert_eq!(monitor.unknown_count(), 0);
    }

    /// `-L --health` and the metrics tell a backend down by its check from one the operator
    /// drained (weight 0), and both from one waiting for its first probe; a weight change
    /// is followed without touching the check's state.
    #[test]
    fn status_tells_down_by_check_from_drained_by_the_operator() {
        let checked = config("check = \"tcp\"\nrise = 1\nfall = 1", 0, "");
        let mut monitor = HealthMonitor::without_probers(&checked);
        monitor.resume(|_, backend| (backend != B).then_some(true));
        monitor.record(WEB, A, refused());
        let states = |monitor: &HealthMonitor| -> Vec<(BackendKey, u32, BackendState)> {
            monitor.status().iter().map(|s| (s.backend, s.weight, s.state())).collect()
        };
        use BackendState::{Down, Drained, Unknown, Up};
        assert_eq!(states(&monitor), [(A, 1, Down), (B, 2, Unknown), (C, 0, Drained)]);
        monitor.record(WEB, B, ok());
        let restored = config("check = \"tcp\"\nrise = 1\nfall = 1", 5, "");
        monitor.reconfigure(&restored);
        assert_eq!(states(&monitor), [(A, 1, Down), (B, 2, Up), (C, 5, Up)]);
        let names: Vec<&str> = BackendState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["up", "drained", "down", "unknown"]);
    }

    #[test]
    fn flapping_below_the_thresholds_changes_nothing() {
        let settings = rise2_fall3();
        // Two failures, a success, two failures...: never three in a row.
        let flapping: Vec<bool> = (0..30).map(|i| i % 3 == 2).collect();
        assert_eq!(run(&settings, &flapping), []);
        // Once down, single successes between failures never bring it back.
        let mut down_then_flapping = vec![false; 3];
        down_then_flapping.extend((0..30).map(|i| i % 2 == 0));
        assert_eq!(run(&settings, &down_then_flapping), [(2, false)]);
    }

    #[test]
    fn response_time_is_smoothed_like_srtt() {
        let settings = HealthConfig::default();
        let mut health = BackendHealth::new();
        assert_eq!(health.response_time_us(), 0);
        health.record_probe(&Ok(Duration::from_micros(800)), &settings);
        assert_eq!(health.response_time_us(), 800);
        health.record_probe(&Ok(Duration::from_micros(1600)), &settings);
        assert_eq!(health.response_time_us(), 900); // 7/8 * 800 + 1/8 * 1600
        health.record_probe(&refused(), &settings);
        assert_eq!(health.response_time_us(), 900, "a failure is no sample");
        health.record_probe(&Ok(Duration::ZERO), &settings);
        assert!(health.response_time_us() >= 1, "0 would read as unknown");
    }

    #[test]
    fn passive_signs_never_take_a_backend_down_they_make_it_suspect() {
        let settings = HealthConfig { passive_fall: 3, ..rise2_fall3() };
        let mut health = BackendHealth::new();
        assert!(!health.record_passive(PassiveEvent::Rst, &settings));
        assert!(!health.record_passive(PassiveEvent::SynUnanswered, &settings));
        // An answer clears the count.
        assert!(!health.record_passive(PassiveEvent::Answered, &settings));
        assert!(!health.record_passive(PassiveEvent::Rst, &settings));
        assert!(!health.record_passive(PassiveEvent::Rst, &settings));
        assert!(!health.is_suspect());
        assert!(health.record_passive(PassiveEvent::IcmpUnreachable, &settings), "3 in a row");
        assert!(health.is_suspect() && health.is_up());
        // A burst, as one client can send at will: suspect once, still up, no transition.
        for _ in 0..112 {
            assert!(!health.record_passive(PassiveEvent::SynUnanswered, &settings));
        }
        assert!(health.is_up());
        // An answer does not clear the suspicion; a passing probe does, and the count.
        health.record_passive(PassiveEvent::Answered, &settings);
        assert!(health.is_suspect());
        assert_eq!(health.record_probe(&ok(), &settings), None);
        assert!(!health.is_suspect());
        health.record_passive(PassiveEvent::Rst, &settings);
        health.record_passive(PassiveEvent::Rst, &settings);
        assert!(!health.is_suspect(), "the count started again");
    }

    #[test]
    fn a_suspect_backend_goes_down_only_after_fall_failed_probes() {
        let settings = HealthConfig { passive_fall: 5, ..rise2_fall3() };
        let mut health = BackendHealth::new();
        for _ in 0..5 {
            health.record_passive(PassiveEvent::SynUnanswered, &settings);
        }
        assert!(health.is_suspect());
        assert_eq!(health.record_probe(&refused(), &settings), None);
        assert_eq!(health.record_probe(&refused(), &settings), None);
        let (up, reason) = health.record_probe(&refused(), &settings).unwrap();
        assert!(!up && !health.is_up() && !health.is_suspect());
        assert_eq!(
            reason,
            "3 consecutive failed tcp checks, last: connection refused (probed early after 5 \
             bad passive signs, last: a SYN went unanswered)"
        );
        // A down backend is not made suspect: its probes already decide when it comes back.
        for _ in 0..10 {
            assert!(!health.record_passive(PassiveEvent::Rst, &settings));
        }
        assert!(!health.is_suspect());
        assert_eq!(health.record_probe(&ok(), &settings), None);
        assert!(health.record_probe(&ok(), &settings).is_some_and(|(up, _)| up));
    }

    #[test]
    fn passive_checks_are_off_at_zero_and_without_an_active_check() {
        for settings in [
            HealthConfig { passive_fall: 0, ..HealthConfig::default() },
            HealthConfig {
                passive_fall: 1,
                check: HealthCheckKind::None,
                ..HealthConfig::default()
            },
        ] {
            let mut health = BackendHealth::new();
            for _ in 0..100 {
                assert!(!health.record_passive(PassiveEvent::SynUnanswered, &settings));
            }
            assert!(health.is_up() && !health.is_suspect());
        }
    }

    proptest! {
        /// Against a model that looks at the last `fall` / `rise` results instead of counting.
        #[test]
        fn the_state_follows_the_last_rise_or_fall_results(
            results in proptest::collection::vec(any::<bool>(), 0..200),
            rise in 1u32..5,
            fall in 1u32..5,
        ) {
            let settings = HealthConfig { rise, fall, ..HealthConfig::default() };
            let mut model_up = true;
            let mut expected = Vec::new();
            for i in 0..results.len() {
                let window = |n: u32| {
                    let n = n as usize;
                    i + 1 >= n && results[i + 1 - n..=i].iter().all(|&r| r != model_up)
                };
                if window(if model_up { fall } else { rise }) {
                    model_up = !model_up;
                    expected.push((i, model_up));
                }
            }
            prop_assert_eq!(run(&settings, &results), expected);
        }
    }

    #[test]
    fn poll_returns_each_transition_once_and_counts_it() {
        let config = config("rise = 2\nfall = 3", 1, "");
        let mut monitor = HealthMonitor::without_probers(&config);
        assert_eq!(monitor.poll(), []);
        for _ in 0..3 {
            monitor.record(WEB, A, refused());
        }
        monitor.record(WEB, B, ok());
        let transitions = monitor.poll();
        assert_eq!(transitions.len(), 1);
        let down = &transitions[0];
        assert_eq!((down.service, down.backend, down.up), (WEB, A, false));
        assert_eq!(
            down.to_string(),
            "10.1.1.100:80/tcp: backend 10.1.1.11:80 down: 3 consecutive failed tcp checks, \
             last: connection refused"
        );
        assert_eq!(monitor.poll(), [], "reported once");
        monitor.record(WEB, A, ok());
        monitor.record(WEB, A, ok());
        assert!(monitor.poll().iter().all(|t| t.up && t.backend == A));
        let totals = monitor.counters();
        assert_eq!(
            totals,
            HealthCounters {
                probes_ok: 3,
                probes_failed: 3,
                passive_events: 0,
                early_probes: 0,
                went_down: 1,
                came_up: 1
            }
        );
        let status = monitor.status();
        assert_eq!(status.iter().map(|s| s.backend).collect::<Vec<_>>(), [A, B, C]);
        assert_eq!(status[0].counters.went_down, 1);
        assert_eq!(
            status[1].counters,
            HealthCounters { probes_ok: 1, ..HealthCounters::default() }
        );
        // Unknown pairs are ignored.
        monitor.record(WEB, (IpAddr::from([10, 1, 1, 99]), 80), refused());
        monitor.record((VIP, 443, Proto::Tcp), A, refused());
        assert_eq!(monitor.counters(), totals);
    }

    #[test]
    fn results_of_stopped_probers_are_ignored() {
        let config = config("fall = 1", 1, "");
        let mut monitor = HealthMonitor::without_probers(&config);
        let stale = ProbeReport { prober: 7, service: WEB, backend: A, result: refused() };
        monitor.results_tx.send(stale).unwrap();
        assert_eq!(monitor.poll(), []);
        assert!(monitor.is_up(WEB, A));
    }

    #[test]
    fn observations_reach_every_service_of_the_backend_and_never_take_it_down() {
        let udp = "[[service]]\nvip = \"10.1.1.100\"\nport = 80\nproto = \"udp\"\n\
                   [service.health]\ncheck = \"udp\"\npassive_fall = 2\n\
                   [[service.backend]]\naddr = \"10.1.1.11\"\n";
        let config = config("passive_fall = 2\ninterval = 30\nfall = 1", 1, udp);
        let dns = (VIP, 80, Proto::Udp);
        let mut monitor = HealthMonitor::without_probers(&config);
        // As if the first probes had run and passed a moment ago: next ones in 30 s.
        let started = StdInstant::now();
        for entry in monitor.entries.values_mut() {
            entry.started = Some(started);
            entry.due = Some(started + entry.settings.interval);
        }
        monitor.observe(A, PassiveEvent::IcmpUnreachable);
        monitor.observe(B, PassiveEvent::Answered);
        monitor.observe(A, PassiveEvent::IcmpUnreachable);
        // A burst of bad signs, as one client can send: nothing goes down.
        for _ in 0..112 {
            monitor.observe(A, PassiveEvent::SynUnanswered);
        }
        assert_eq!(monitor.poll(), []);
        let suspect: Vec<(ServiceKey, bool, bool)> = monitor
            .status()
            .iter()
            .filter(|s| s.backend == A)
            .map(|s| (s.service, s.health.is_up(), s.health.is_suspect()))
            .collect();
        assert_eq!(suspect, [(WEB, true, true), (dns, true, true)]);
        // Both probes were brought forward from 30 s to one early gap after the last start.
        for service in [WEB, dns] {
            let entry = &monitor.entries[&(service, A)];
            assert_eq!(entry.due, Some(started + early_probe_gap(&entry.settings)));
        }
        assert_eq!(monitor.counters().passive_events, 2 + 1 + 2 * 112 + 2);
        assert_eq!(monitor.counters().early_probes, 2, "once per suspicion, not per sign");
        // What takes it out is its probes failing (fall = 1 here).
        monitor.record(WEB, A, refused());
        let down = monitor.poll();
        assert_eq!(down.len(), 1);
        assert!(down[0].reason.contains("probed early"), "{}", down[0]);
        assert!(monitor.is_up(dns, A));
    }

    #[test]
    fn reconfigure_keeps_the_state_of_unchanged_backends() {
        let before = config("fall = 1\nrise = 3", 1, "");
        let mut monitor = HealthMonitor::without_probers(&before);
        monitor.record(WEB, A, refused());
        monitor.record(WEB, B, ok());
        monitor.record(WEB, B, Ok(Duration::from_micros(100)));
        assert_eq!(monitor.poll().len(), 1);
        // Weights change, C leaves: A stays down, B keeps its counts and response time.
        let mut after = before.clone();
        after.services[0].backends[1].weight = 5;
        after.services[0].backends.pop();
        monitor.reconfigure(&after);
        assert!(!monitor.is_up(WEB, A));
        assert_eq!(monitor.status().len(), 2);
        let b = &monitor.status()[1];
        assert_eq!((b.health.successes(), b.counters.probes_ok), (2, 2));
        // C comes back fresh: up, no counts.
        monitor.reconfigure(&before);
        let c = &monitor.status()[2];
        assert!(c.health.is_up());
        assert_eq!(c.counters, HealthCounters::default());
        // New settings restart the counts but keep the state.
        monitor.record(WEB, A, ok());
        monitor.record(WEB, A, ok());
        let changed = config("fall = 1\nrise = 2", 1, "");
        monitor.reconfigure(&changed);
        assert!(!monitor.is_up(WEB, A));
        monitor.record(WEB, A, ok());
        assert_eq!(monitor.poll(), [], "the counts restarted: one success of two");
        monitor.record(WEB, A, ok());
        assert!(monitor.poll()[0].up);
        // Turning checks off brings a down backend back, as a counted transition.
        monitor.record(WEB, B, refused());
        assert_eq!(monitor.poll().len(), 1);
        monitor.reconfigure(&config("check = \"none\"", 1, ""));
        let transitions = monitor.poll();
        assert_eq!(transitions.len(), 1);
        assert_eq!((transitions[0].backend, transitions[0].up), (B, true));
        assert_eq!(transitions[0].reason, "health checks turned off");
        assert_eq!(monitor.counters().came_up, 2);
    }

    fn weights(config: &Config) -> Vec<(BackendKey, u32)> {
        config.services[0].backends.iter().map(|b| ((b.addr, b.port), b.weight)).collect()
    }

    #[test]
    fn effective_drains_down_backends() {
        let config = config("fall = 1", 1, "");
        let mut monitor = HealthMonitor::without_probers(&config);
        assert_eq!(monitor.effective(&config), config, "all up: the config as is");
        monitor.record(WEB, B, refused());
        let effective = monitor.effective(&config);
        assert_eq!(weights(&effective), [(A, 1), (B, 0), (C, 1)]);
        assert_eq!(effective.services[0].health, config.services[0].health);
        assert_eq!(monitor.removed(&config), [], "a drained backend keeps its flows");
        Snapshot::build(&effective, 1).unwrap();
    }

    #[test]
    fn effective_removes_down_backends_when_asked() {
        let config = config("fall = 1\non_failure = \"remove\"", 1, "");
        let mut monitor = HealthMonitor::without_probers(&config);
        monitor.record(WEB, A, refused());
        monitor.record(WEB, C, refused());
        assert_eq!(weights(&monitor.effective(&config)), [(B, 2)]);
        // Their flows are rescheduled (the snapshot has them; see `Snapshot::reschedules`).
        let id = |(addr, port): BackendKey| BackendId {
            vip: WEB.0,
            vport: WEB.1,
            proto: WEB.2,
            addr,
            port,
        };
        assert_eq!(monitor.removed(&config), [id(A), id(C)]);
        monitor.record(WEB, B, refused());
        let effective = monitor.effective(&config);
        assert_eq!(weights(&effective), []);
        assert_eq!(monitor.removed(&config), [id(A), id(B), id(C)]);
        Snapshot::build(&effective, 1).unwrap();
    }

    #[test]
    fn the_sorry_server_serves_only_while_no_backend_is_healthy() {
        const SORRY: BackendKey = (IpAddr::V4(Ipv4Addr::new(10, 1, 1, 30)), 80);
        // C has weight 0 (drained by the operator): up, but it serves nothing.
        let drain = config("fall = 1\nsorry_server = \"10.1.1.30\"", 0, "");
        let mut monitor = HealthMonitor::without_probers(&drain);
        monitor.record(WEB, A, refused());
        assert_eq!(weights(&monitor.effective(&drain)), [(A, 0), (B, 2), (C, 0)]);
        monitor.record(WEB, B, refused());
        let effective = monitor.effective(&drain);
        // Drained backends stay for their flows; the table (3) grows to a prime that fits 4.
        assert_eq!(weights(&effective), [(A, 0), (B, 0), (C, 0), (SORRY, 1)]);
        assert_eq!(effective.services[0].maglev_table_size, 5);
        let snapshot = Snapshot::build(&effective, 1).unwrap();
        assert_eq!(monitor.response_times(&effective), [0; 4]);
        assert_eq!(snapshot.backends.len(), 4);
        // One success of rise 2 is not enough; two are.
        monitor.record(WEB, B, ok());
        assert_eq!(weights(&monitor.effective(&drain)).len(), 4);
        monitor.record(WEB, B, ok());
        assert_eq!(weights(&monitor.effective(&drain)), [(A, 0), (B, 2), (C, 0)]);

        let remove =
            config("fall = 1\non_failure = \"remove\"\nsorry_server = \"10.1.1.30\"", 1, "");
        let mut monitor = HealthMonitor::without_probers(&remove);
        for backend in [A, B, C] {
            monitor.record(WEB, backend, refused());
        }
        let effective = monitor.effective(&remove);
        assert_eq!(weights(&effective), [(SORRY, 1)]);
        assert_eq!(effective.services[0].maglev_table_size, 3);
        Snapshot::build(&effective, 1).unwrap();
    }

    #[test]
    fn response_times_follow_snapshot_order() {
        let udp = "[[service]]\nvip = \"10.1.1.101\"\nport = 53\nproto = \"udp\"\n\
                   [service.health]\ncheck = \"udp\"\n\
                   [[service.backend]]\naddr = \"10.1.1.12\"\n";
        let config = config("", 1, udp);
        let mut monitor = HealthMonitor::without_probers(&config);
        monitor.record(WEB, C, Ok(Duration::from_micros(300)));
        monitor.record(WEB, A, Ok(Duration::from_micros(100)));
        let dns = (IpAddr::from([10, 1, 1, 101]), 53, Proto::Udp);
        monitor.record(dns, (B.0, 53), Ok(Duration::from_micros(40)));
        assert_eq!(monitor.response_times(&config), [100, 0, 300, 40]);
        let effective = monitor.effective(&config);
        let mut snapshot = Snapshot::build(&effective, 1).unwrap();
        snapshot.response_time_us = monitor.response_times(&effective);
        assert_eq!(snapshot.response_time_us.len(), snapshot.backends.len());
    }

    /// IPv6 backends' verdicts and response times reach the snapshot by identity, as IPv4
    /// ones do: a down one is drained, its Maglev share given to the others, and the
    /// sorry server takes over when none is up.
    #[test]
    fn ipv6_verdicts_reach_the_snapshot_by_identity() {
        use crate::family::V6;
        let web6 = "[[service]]\nvip = \"2001:db8:1::100\"\nport = 80\nforward = \"nat\"\nmaglev_table_size = 7\n\
                    [service.health]\nfall = 1\nsorry_server = \"[2001:db8:1::30]:80\"\n\
                    [[service.backend]]\naddr = \"2001:db8:1::11\"\n\
                    [[service.backend]]\naddr = \"2001:db8:1::12\"\n";
        let mut config = config("", 1, web6);
        config.interfaces[0].ipv6 = Some(crate::control::config::Ipv6Interface {
            addr: "2001:db8:1::10".parse().unwrap(),
            prefix_len: 64,
            gateway: None,
        });
        let service: ServiceKey = ("2001:db8:1::100".parse().unwrap(), 80, Proto::Tcp);
        let first: BackendKey = ("2001:db8:1::11".parse().unwrap(), 80);
        let second: BackendKey = ("2001:db8:1::12".parse().unwrap(), 80);
        let mut monitor = HealthMonitor::without_probers(&config);
        monitor.record(service, second, Ok(Duration::from_micros(70)));
        monitor.record(service, first, refused());
        let effective = monitor.effective(&config);
        let mut snapshot = Snapshot::build(&effective, 1).unwrap();
        snapshot.response_time_us = monitor.response_times(&effective);
        let id = |(addr, port): BackendKey| BackendId {
            vip: service.0,
            vport: 80,
            proto: Proto::Tcp,
            addr,
            port,
        };
        let (down, up) = (snapshot.backend_at(&id(first)), snapshot.backend_at(&id(second)));
        let (down, up) = (down.unwrap(), up.unwrap());
        assert_eq!((snapshot.backends[down].weight, snapshot.backends[up].weight), (0, 1));
        assert_eq!(snapshot.response_time_us[up], 70);
        let vip6 = "2001:db8:1::100".parse().unwrap();
        let index = snapshot.family::<V6>().service_at(vip6, 80, Proto::Tcp);
        let fallback = &snapshot.services[index.unwrap()].fallback;
        assert_eq!(fallback.shares(2), [0, 7], "the down backend holds no slot");
        // Both down: the IPv6 sorry server serves.
        monitor.record(service, second, refused());
        let effective = monitor.effective(&config);
        let snapshot = Snapshot::build(&effective, 2).unwrap();
        let sorry = id(("2001:db8:1::30".parse().unwrap(), 80));
        let sorry = snapshot.backend_at(&sorry).expect("the sorry server is a backend");
        assert_eq!(snapshot.backends[sorry].weight, 1);
    }

    #[test]
    fn next_prime_finds_the_smallest_prime_at_least_n() {
        let primes: Vec<usize> = [0, 1, 2, 3, 4, 8, 14, 65_536].map(next_prime).to_vec();
        assert_eq!(primes, [2, 2, 2, 3, 5, 11, 17, 65_537]);
    }

    // Probes against real sockets on 127.0.0.1.

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    /// A TCP listener on 127.0.0.1 and its port.
    fn listen() -> (TcpListener, u16) {
        let listener = TcpListener::bind(local(0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// A port nothing listens on (TCP and UDP): bound, then released.
    fn closed_port() -> u16 {
        listen().1
    }

    #[test]
    fn tcp_probe_passes_with_a_listener_and_fails_without() {
        let (listener, port) = listen();
        let took = probe_tcp(local(port), SHORT).unwrap();
        assert!(took < SHORT);
        drop(listener);
        match probe_tcp(local(port), SHORT) {
            Err(ProbeError::Io(why)) => assert!(why.contains("refused"), "{why}"),
            other => panic!("expected refused, got {other:?}"),
        }
    }

    /// A one-thread HTTP server answering one connection per entry of `answers` with it
    /// (`None`: accept and say nothing); returns its port and the request lines it read.
    fn http_server(answers: Vec<Option<&'static str>>) -> (u16, JoinHandle<Vec<String>>) {
        let (listener, port) = listen();
        let server = thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let n = stream.read(&mut request).unwrap();
                let text = String::from_utf8_lossy(&request[..n]).to_string();
                requests.push(text.lines().next().unwrap_or_default().to_string());
                match answer {
                    Some(answer) => stream.write_all(answer.as_bytes()).unwrap(),
                    // Hold the connection open past the probe's timeout.
                    None => thread::sleep(SHORT * 2),
                }
            }
            requests
        });
        (port, server)
    }

    #[test]
    fn http_probe_checks_the_status_line() {
        let answers = vec![
            Some("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Some("HTTP/1.1 500 Internal Server Error\r\n\r\n"),
            Some("SSH-2.0-OpenSSH_9.6\r\n"),
            Some(""),
            None,
        ];
        let (port, server) = http_server(answers);
        let target = local(port);
        assert!(probe_http(target, "/healthz", 200, SHORT).is_ok());
        assert_eq!(
            probe_http(target, "/healthz", 200, SHORT),
            Err(ProbeError::Status { got: 500, expected: 200 })
        );
        assert_eq!(
            probe_http(target, "/", 200, SHORT),
            Err(ProbeError::NotHttp("SSH-2.0-OpenSSH_9.6".into()))
        );
        assert_eq!(probe_http(target, "/", 200, SHORT), Err(ProbeError::NotHttp(String::new())));
        assert_eq!(probe_http(target, "/", 200, SHORT), Err(ProbeError::Timeout(SHORT)));
        let requests = server.join().unwrap();
        assert_eq!(requests[0], "GET /healthz HTTP/1.0");
        assert_eq!(requests[2], "GET / HTTP/1.0");
        assert!(matches!(probe_http(target, "/", 200, SHORT), Err(ProbeError::Io(_))));
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Ok(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 404\n"), Ok(404));
        for bad in [&b"HTTP/2 200\r\n"[..], b"HTTP/1.1 20x\r\n", b"HTTP/1.1 2000\r\n", b"\xff\xfe"]
        {
            assert!(matches!(parse_status_line(bad), Err(ProbeError::NotHttp(_))), "{bad:?}");
        }
    }

    #[test]
    fn udp_probe_needs_a_reply() {
        let echo = UdpSocket::bind(local(0)).unwrap();
        let port = echo.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, peer) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], peer).unwrap();
            buf[..n].to_vec()
        });
        assert!(probe_udp(local(port), b"ping", SHORT).is_ok());
        assert_eq!(server.join().unwrap(), b"ping");
        // A bound socket that never answers: a timeout.
        let silent = UdpSocket::bind(local(0)).unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        assert_eq!(probe_udp(local(silent_port), b"", SHORT), Err(ProbeError::Timeout(SHORT)));
        // A closed port: the ICMP port unreachable fails the probe at once.
        let started = StdInstant::now();
        match probe_udp(local(closed_port()), b"", SHORT) {
            Err(ProbeError::Io(why)) => assert!(why.contains("refused"), "{why}"),
            other => panic!("expected refused, got {other:?}"),
        }
        assert!(started.elapsed() < SHORT);
    }

    /// IPv6 backends are probed like IPv4 ones (a connect to `[addr]:port`, a datagram from
    /// an IPv6 socket, `Host: [addr]`), through the monitor's pool as well. Skipped where
    /// the host has no IPv6 loopback.
    #[test]
    fn ipv6_backends_are_probed_like_ipv4_ones() {
        let loopback = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0));
        let Ok(listener) = TcpListener::bind(loopback) else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let target = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        assert!(probe_tcp(target, SHORT).is_ok());
        let server = thread::spawn(move || {
            // The TCP probe's connection first (closed without a byte), then the HTTP one.
            loop {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let n = stream.read(&mut request).unwrap_or(0);
                if n > 0 {
                    stream.write_all(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
                    return String::from_utf8_lossy(&request[..n]).to_string();
                }
            }
        });
        assert!(probe_http(target, "/", 200, SHORT).is_ok());
        let request = server.join().unwrap();
        assert!(request.contains("\r\nHost: [::1]\r\n"), "{request}");
        let echo = UdpSocket::bind(loopback).unwrap();
        let udp_target = echo.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, peer) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], peer).unwrap();
        });
        assert!(probe_udp(udp_target, b"ping", SHORT).is_ok());
        server.join().unwrap();

        // The monitor: an IPv6 service's backend is probed and counted up.
        let (listener, port) = {
            let listener = TcpListener::bind(loopback).unwrap();
            let port = listener.local_addr().unwrap().port();
            (listener, port)
        };
        let text = format!(
            "[[interface]]\nname = \"lo\"\naddr = \"127.0.0.1/8\"\n\
             [[service]]\nvip = \"2001:db8:1::100\"\nport = 80\nforward = \"nat\"\n\
             [service.health]\ninterval = 0.02\ntimeout = 0.02\nfall = 1\n\
             [[service.backend]]\naddr = \"::1\"\nport = {port}\n"
        );
        let config = Config::parse(&text, "test.toml").unwrap();
        let service = (config.services[0].vip, 80, Proto::Tcp);
        let backend = (IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), port);
        let mut monitor = HealthMonitor::new(&config);
        let started = StdInstant::now();
        while monitor.counters().probes_ok == 0 && started.elapsed() < Duration::from_secs(5) {
            monitor.poll();
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(monitor.counters().probes_failed, 0, "{:?}", monitor.counters());
        assert!(monitor.counters().probes_ok > 0 && monitor.is_up(service, backend));
        drop(listener);
        let started = StdInstant::now();
        let mut down = Vec::new();
        while down.is_empty() && started.elapsed() < Duration::from_secs(5) {
            down = monitor.poll();
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(down.len(), 1, "{down:?}");
        assert_eq!((down[0].backend, down[0].up), (backend, false));
        // The effective config drains it, in its own family.
        assert_eq!(monitor.effective(&config).services[0].backends[0].weight, 0);
    }

    #[test]
    fn probe_dispatches_on_the_check() {
        let (_listener, port) = listen();
        let settings = |check| HealthConfig { check, timeout: SHORT, ..HealthConfig::default() };
        assert!(probe(local(port), &settings(HealthCheckKind::Tcp)).is_ok());
        assert_eq!(
            probe(local(closed_port()), &settings(HealthCheckKind::None)),
            Ok(Duration::ZERO)
        );
        assert!(probe(local(closed_port()), &settings(HealthCheckKind::Udp)).is_err());
        assert!(probe(local(closed_port()), &settings(HealthCheckKind::Http)).is_err());
    }

    // The keepalived kinds: script (MISC_CHECK), dns (DNS_CHECK), icmp (PING_CHECK).

    fn sh(script: &str) -> Vec<String> {
        ["/bin/sh", "-c", script].map(String::from).to_vec()
    }

    /// A path under the temp dir named for this process and `what`, removed first.
    fn scratch(what: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("xlb-{}-{what}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// Exit 0 passes, another status fails with it, a command that cannot start fails
    /// saying so, and the backend and service are in the command's environment.
    #[test]
    fn script_check_passes_on_exit_0_and_sees_the_backend() {
        let target = SocketAddr::from(([10, 1, 1, 11], 8080));
        let timeout = Duration::from_secs(30);
        let expected = "test \"$XLB_BACKEND_ADDR $XLB_BACKEND_PORT $XLB_VIP $XLB_VIP_PORT \
                        $XLB_PROTO\" = '10.1.1.11 8080 10.1.1.100 80 tcp'";
        assert!(probe_script(&sh(expected), target, Some(WEB), timeout).is_ok());
        assert!(probe_script(&sh(expected), target, None, timeout).is_err(), "no VIP given");
        let failed = probe_script(&sh("exit 3"), target, Some(WEB), timeout);
        assert!(matches!(&failed, Err(ProbeError::Script(why)) if why.contains('3')), "{failed:?}");
        let missing = ["/nonexistent/xlb-check".to_string()];
        let failed = probe_script(&missing, target, Some(WEB), timeout);
        assert!(
            matches!(&failed, Err(ProbeError::Script(why)) if why.contains("cannot run")),
            "{failed:?}"
        );
        assert!(probe_script(&[], target, Some(WEB), timeout).is_err());
    }

    /// A command still running at the timeout fails the probe and is killed and reaped: its
    /// process is gone when the probe returns.
    #[test]
    fn script_check_kills_a_command_at_its_timeout() {
        let pid_file = scratch("script-pid");
        let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
        let target = SocketAddr::from(([127, 0, 0, 1], 1));
        let result = probe_script(&sh(&script), target, None, SHORT);
        assert_eq!(result, Err(ProbeError::Timeout(SHORT)));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let _ = std::fs::remove_file(&pid_file);
        let proc_dir = format!("/proc/{}", pid.trim());
        assert!(!pid.trim().is_empty() && !std::path::Path::new(&proc_dir).exists(), "{proc_dir}");
    }

    /// A DNS answer to `query` (a query this module built): same id, QR set, `rcode`, the
    /// question copied, then `records` as (type, rdata) under a pointer to the question's name.
    fn dns_answer(query: &[u8], rcode: u8, records: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut answer = query[..2].to_vec();
        answer.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
        answer.extend_from_slice(&(records.len() as u16).to_be_bytes());
        answer.extend_from_slice(&[0, 0, 0, 0]);
        answer.extend_from_slice(&query[12..]);
        for (rtype, data) in records {
            answer.extend_from_slice(&[0xc0, 12]);
            answer.extend_from_slice(&rtype.to_be_bytes());
            answer.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            answer.extend_from_slice(&(data.len() as u16).to_be_bytes());
            answer.extend_from_slice(data);
        }
        answer
    }

    /// A DNS server on 127.0.0.1 answering each query it gets with `answers(query)` (all of
    /// them, in order), for `queries` queries; its port and thread.
    fn dns_server(
        queries: usize,
        answers: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (u16, JoinHandle<Vec<Vec<u8>>>) {
        let socket = UdpSocket::bind(local(0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buffer = [0u8; 512];
            for _ in 0..queries {
                let (n, from) = socket.recv_from(&mut buffer).unwrap();
                for answer in answers(&buffer[..n]) {
                    socket.send_to(&answer, from).unwrap();
                }
                seen.push(buffer[..n].to_vec());
            }
            seen
        });
        (port, server)
    }

    #[test]
    fn dns_check_wants_noerror_and_the_expected_address() {
        let a = |ip: [u8; 4]| (1u16, ip.to_vec());
        let settings = |expect: Option<[u8; 4]>| HealthConfig {
            check: HealthCheckKind::Dns,
            timeout: Duration::from_secs(30),
            dns_name: "www.example.com".into(),
            dns_type: 1,
            dns_expect: expect.map(IpAddr::from),
            ..HealthConfig::default()
        };
        // A late answer (another id) first is skipped; then NOERROR with two A records.
        let (port, server) = dns_server(4, move |query| {
            let mut stale = dns_answer(query, 0, &[a([192, 0, 2, 66])]);
            stale[0] ^= 0xff;
            vec![stale, dns_answer(query, 0, &[(5, vec![0]), a([192, 0, 2, 1]), a([192, 0, 2, 2])])]
        });
        assert!(probe_dns(local(port), &settings(None)).is_ok());
        assert!(probe_dns(local(port), &settings(Some([192, 0, 2, 2]))).is_ok());
        let missing = probe_dns(local(port), &settings(Some([192, 0, 2, 66])));
        assert!(matches!(&missing, Err(ProbeError::Dns(why)) if why.contains("no record")));
        // The root's NS by default: the query on the wire.
        let defaults = HealthConfig { check: HealthCheckKind::Dns, ..settings(None) };
        let defaults =
            HealthConfig { dns_name: ".".into(), dns_type: 2, dns_expect: None, ..defaults };
        assert!(probe_dns(local(port), &defaults).is_ok());
        let seen = server.join().unwrap();
        assert_eq!(&seen[0][2..], b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        assert_eq!(&seen[3][12..], b"\x00\x00\x02\x00\x01");
        // NXDOMAIN fails, whatever the records.
        let (port, server) = dns_server(1, |query| vec![dns_answer(query, 3, &[])]);
        let failed = probe_dns(local(port), &settings(None));
        assert!(
            matches!(&failed, Err(ProbeError::Dns(why)) if why.contains("NXDOMAIN")),
            "{failed:?}"
        );
        server.join().unwrap();
        // Nobody listening: refused (ICMP port unreachable), at once.
        assert!(matches!(
            probe_dns(local(closed_udp_port()), &settings(None)),
            Err(ProbeError::Io(_))
        ));
    }

    fn closed_udp_port() -> u16 {
        UdpSocket::bind(local(0)).unwrap().local_addr().unwrap().port()
    }

    /// Hostile answers: truncated anywhere, records claiming more bytes than there are,
    /// counts above what the datagram holds, reserved label types: a failure (or, short of a
    /// header, no answer), never a panic or an address read out of bounds.
    #[test]
    fn dns_answers_are_read_within_their_bytes() {
        let expect = Some(IpAddr::from([192, 0, 2, 1]));
        let query = dns_query(7, "example.com", 1).unwrap();
        let good = dns_answer(&query, 0, &[(1, vec![192, 0, 2, 1])]);
        assert_eq!(check_dns_answer(&good, 7, expect), DnsVerdict::Passed);
        assert_eq!(check_dns_answer(&good, 8, expect), DnsVerdict::OtherId);
        for cut in 0..good.len() {
            let verdict = check_dns_answer(&good[..cut], 7, expect);
            let expected = if cut < 12 { DnsVerdict::OtherId } else { verdict.clone() };
            assert!(matches!(verdict, DnsVerdict::OtherId | DnsVerdict::Failed(_)), "{cut}");
            assert_eq!(verdict, expected);
        }
        let mut long = good.clone();
        let at = long.len() - 6;
        long[at..at + 2].copy_from_slice(&[0xff, 0xff]);
        assert!(matches!(check_dns_answer(&long, 7, expect), DnsVerdict::Failed(_)));
        let mut many = good.clone();
        many[6..8].copy_from_slice(&[0xff, 0xff]);
        many[4..6].copy_from_slice(&[0xff, 0xff]);
        assert!(matches!(check_dns_answer(&many, 7, expect), DnsVerdict::Failed(_)));
        let mut reserved = good;
        reserved[12] = 0x80;
        assert!(matches!(check_dns_answer(&reserved, 7, expect), DnsVerdict::Failed(_)));
        let query_back = query.clone();
        assert!(matches!(check_dns_answer(&query_back, 7, None), DnsVerdict::Failed(_)));
    }

    proptest! {
        #[test]
        fn any_bytes_as_a_dns_answer_are_read_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            expect in any::<Option<[u8; 4]>>(),
        ) {
            let id = u16::from_be_bytes([bytes.first().copied().unwrap_or(0), bytes.get(1).copied().unwrap_or(0)]);
            let verdict = check_dns_answer(&bytes, id, expect.map(IpAddr::from));
            prop_assert!(bytes.len() >= 12 || verdict == DnsVerdict::OtherId);
        }
    }

    /// The echo request carries a valid ICMP checksum, and only its own reply answers it:
    /// not the request itself (a raw socket sees it on loopback), not another probe's or
    /// another program's reply, not a truncated one.
    #[test]
    fn echo_replies_are_matched_to_their_request() {
        let echo = EchoRequest { v6: false, id: 0x1234, seq: 7, token: 0x0102_0304_0506_0708 };
        let request = echo.packet();
        assert_eq!(internet_checksum(&request), 0, "a valid checksum sums to 0");
        assert_eq!((request[0], &request[4..8]), (8, &[0x12, 0x34, 0, 7][..]));
        let mut reply = request;
        reply[0] = 0;
        assert!(echo.answered_by(&reply, false));
        assert!(!echo.answered_by(&request, false), "the request is no reply");
        assert!(!echo.answered_by(&reply[..15], false));
        let mut other = reply;
        other[15] ^= 1;
        assert!(!echo.answered_by(&other, false), "another token");
        let mut other_id = reply;
        other_id[4] ^= 1;
        assert!(!echo.answered_by(&other_id, false), "another identifier");
        assert!(echo.answered_by(&other_id, true), "a datagram socket's id is the kernel's");
        let echo6 = EchoRequest { v6: true, ..echo };
        let mut reply6 = echo6.packet();
        assert_eq!(reply6[0], 128);
        reply6[0] = 129;
        assert!(echo6.answered_by(&reply6, false) && !echo.answered_by(&reply6, false));
    }

    /// A real echo to loopback (a raw socket needs CAP_NET_RAW unless ping_group_range
    /// admits us).
    #[test]
    fn icmp_check_is_answered_by_loopback() {
        if !crate::testkit::root_or_skip("icmp_check_is_answered_by_loopback") {
            return;
        }
        let timeout = Duration::from_secs(30);
        assert!(probe_icmp(IpAddr::V4(Ipv4Addr::LOCALHOST), timeout).is_ok());
        assert!(probe_icmp(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), timeout).is_ok());
        let settings =
            HealthConfig { check: HealthCheckKind::Icmp, timeout, ..HealthConfig::default() };
        assert!(probe(local(closed_port()), &settings).is_ok(), "the port is not probed");
    }

    /// A TLS server on 127.0.0.1 with a certificate for `localhost` and 127.0.0.1 signed by
    /// itself, answering `connections` connections with `answer` after the request's head;
    /// its port, its certificate in PEM, and its thread (the SNI each client sent).
    fn https_server(
        connections: usize,
        answer: &'static str,
    ) -> (u16, String, JoinHandle<Vec<Option<String>>>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let provider = tls_provider();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        let config = Arc::new(config);
        let (listener, port) = listen();
        let server = thread::spawn(move || {
            let mut names = Vec::new();
            for _ in 0..connections {
                let (tcp, _) = listener.accept().unwrap();
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                names.push(tls.conn.server_name().map(String::from));
                let _ = tls.write_all(answer.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
            names
        });
        (port, cert.pem(), server)
    }

    /// keepalived's SSL_GET: by default any certificate and no SNI, the status checked; with
    /// `tls_verify`, the certificate must chain to `tls_ca_file` and hold the name (or the
    /// address); a plain-HTTP server fails the handshake.
    #[test]
    fn https_check_handshakes_and_wants_the_status() {
        let ca_file = scratch("https-ca.pem");
        let (port, pem, server) = https_server(5, "HTTP/1.0 204 No Content\r\n\r\n");
        std::fs::write(&ca_file, &pem).unwrap();
        let settings = HealthConfig {
            check: HealthCheckKind::Https,
            timeout: Duration::from_secs(30),
            http_status: 204,
            ..HealthConfig::default()
        };
        assert!(probe_https(local(port), &settings).is_ok());
        let other_status = HealthConfig { http_status: 200, ..settings.clone() };
        assert_eq!(
            probe_https(local(port), &other_status),
            Err(ProbeError::Status { got: 204, expected: 200 })
        );
        let ca = ca_file.display().to_string();
        let verified = |name: Option<&str>| HealthConfig {
            tls_verify: true,
            tls_ca_file: ca.clone(),
            tls_server_name: name.map(String::from),
            ..settings.clone()
        };
        assert!(probe_https(local(port), &verified(Some("localhost"))).is_ok());
        assert!(probe_https(local(port), &verified(None)).is_ok(), "the address is in it");
        let wrong_name = probe_https(local(port), &verified(Some("www.example.com")));
        assert!(matches!(wrong_name, Err(ProbeError::Io(_))), "{wrong_name:?}");
        // Another CA: this one's certificate is not trusted by the other's.
        let (other_port, _, other_server) = https_server(1, "HTTP/1.0 204 No Content\r\n\r\n");
        let untrusted = probe_https(local(other_port), &verified(Some("localhost")));
        assert!(untrusted.is_err(), "{untrusted:?}");
        // SNI only with a name: none by default, "localhost" when given.
        let names = server.join().unwrap();
        assert_eq!(names[0], None);
        assert_eq!(names[2].as_deref(), Some("localhost"));
        other_server.join().unwrap();
        // A CA file that is not there fails the probe, saying so.
        let missing = HealthConfig { tls_ca_file: "/nonexistent/ca.pem".into(), ..verified(None) };
        assert!(
            matches!(probe_https(local(port), &missing), Err(ProbeError::Tls(why)) if why.contains("/nonexistent"))
        );
        // Plain HTTP is no TLS server.
        let (listener, plain_port) = listen();
        let plain = thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let _ = tcp.write_all(b"HTTP/1.0 204 No Content\r\n\r\n");
        });
        assert!(probe_https(local(plain_port), &settings).is_err());
        plain.join().unwrap();
        let _ = std::fs::remove_file(&ca_file);
    }

    /// The whole loop with a script check: its verdict follows a flag file, down after
    /// `fall` failures and up after `rise` passes.
    #[test]
    fn probers_follow_a_script_down_and_up() {
        let flag = scratch("script-flag");
        std::fs::write(&flag, b"").unwrap();
        let text = format!(
            "[[interface]]\nname = \"lo\"\naddr = \"127.0.0.1/8\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"nat\"\n\
             [service.health]\ncheck = \"script\"\nscript = [\"/bin/sh\", \"-c\", \"test -e {}\"]\n\
             interval = 0.1\ntimeout = 0.1\nrise = 2\nfall = 2\n\
             [[service.backend]]\naddr = \"127.0.0.1\"\nport = 9\n",
            flag.display()
        );
        let config = Config::parse(&text, "test.toml").unwrap();
        let backend = (IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
        let mut monitor = HealthMonitor::new(&config);
        let wait_for = |monitor: &mut HealthMonitor, up: bool| {
            let started = StdInstant::now();
            while started.elapsed() < Duration::from_secs(10) {
                monitor.poll();
                let state = monitor.status()[0].state();
                if state == if up { BackendState::Up } else { BackendState::Down } {
                    return state;
                }
                thread::sleep(Duration::from_millis(5));
            }
            monitor.status()[0].state()
        };
        assert_eq!(wait_for(&mut monitor, true), BackendState::Up);
        std::fs::remove_file(&flag).unwrap();
        assert_eq!(wait_for(&mut monitor, false), BackendState::Down);
        assert_eq!(monitor.effective(&config).services[0].backends[0].weight, 0);
        std::fs::write(&flag, b"").unwrap();
        assert_eq!(wait_for(&mut monitor, true), BackendState::Up);
        let _ = std::fs::remove_file(&flag);
        assert_eq!(monitor.status()[0].backend, backend);
    }

    /// The whole loop with real prober threads: a listener goes away and comes back.
    #[test]
    fn probers_follow_a_listener_down_and_up() {
        let (listener, port) = listen();
        let text = format!(
            "[[interface]]\nname = \"lo\"\naddr = \"127.0.0.1/8\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"nat\"\nscheduler = \"lt\"\n\
             [service.health]\ninterval = 0.02\ntimeout = 0.02\nrise = 2\nfall = 2\n\
             [[service.backend]]\naddr = \"127.0.0.1\"\nport = {port}\n"
        );
        let config = Config::parse(&text, "test.toml").unwrap();
        let backend = (IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let mut monitor = HealthMonitor::new(&config);
        let wait_for = |monitor: &mut HealthMonitor, up: bool| {
            let started = StdInstant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if let Some(t) = monitor.poll().into_iter().find(|t| t.backend == backend) {
                    assert_eq!(t.up, up, "{t}");
                    return started.elapsed();
                }
                thread::sleep(Duration::from_millis(10));
            }
            panic!("no transition to up = {up} within 5 s");
        };
        while monitor.counters().probes_ok == 0 {
            monitor.poll();
            thread::sleep(Duration::from_millis(10));
        }
        assert!(monitor.response_times(&config)[0] > 0);
        drop(listener);
        let detected = wait_for(&mut monitor, false);
        assert_eq!(weights(&monitor.effective(&config)), [(backend, 0)]);
        let listener = TcpListener::bind(local(port)).unwrap();
        let recovered = wait_for(&mut monitor, true);
        assert_eq!(weights(&monitor.effective(&config)), [(backend, 1)]);
        eprintln!("down detected in {detected:?}, recovery in {recovered:?} (interval 20 ms)");
        // A config without the backend stops its prober: after the probe in flight, if any,
        // nothing more arrives.
        let mut empty = config.clone();
        empty.services[0].backends.clear();
        monitor.reconfigure(&empty);
        thread::sleep(Duration::from_millis(50));
        monitor.poll();
        thread::sleep(Duration::from_millis(100));
        assert!(monitor.results.is_empty(), "{} results after the stop", monitor.results.len());
        drop(listener);
    }

    /// One service on 127.0.0.1 with `health` as its `[service.health]` body and the backends
    /// given.
    fn local_config(health: &str, backends: &[BackendKey]) -> Config {
        let mut text = format!(
            "[[interface]]\nname = \"lo\"\naddr = \"127.0.0.1/8\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"nat\"\n\
             [service.health]\n{health}\n"
        );
        for (addr, port) in backends {
            text.push_str(&format!("[[service.backend]]\naddr = \"{addr}\"\nport = {port}\n"));
        }
        Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Polls `monitor` every 5 ms, observing `sign` (if any) 10 times a round, as a client
    /// sending bursts would, for `time`; returns the transitions.
    fn poll_for(
        monitor: &mut HealthMonitor,
        time: Duration,
        burst: Option<(BackendKey, PassiveEvent)>,
    ) -> Vec<Transition> {
        let started = StdInstant::now();
        let mut transitions = Vec::new();
        while started.elapsed() < time {
            if let Some((backend, sign)) = burst {
                for _ in 0..10 {
                    monitor.observe(backend, sign);
                }
            }
            transitions.extend(monitor.poll());
            thread::sleep(Duration::from_millis(5));
        }
        transitions
    }

    /// Real probes: bursts of bad signs against a healthy backend only bring its probes
    /// forward, at most one per early gap; against a dead one, its probes fail and take it out
    /// within about `fall` early gaps, though `interval` is 30 s.
    #[test]
    fn passive_bursts_bring_probes_forward_at_a_bounded_rate() {
        let (listener, port) = listen();
        let health = "interval = 30\ntimeout = 0.1\nrise = 2\nfall = 3\npassive_fall = 5";
        let backend = (IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let config = local_config(health, &[backend]);
        let gap = early_probe_gap(&config.services[0].health);
        assert_eq!(gap, Duration::from_millis(100));
        let mut monitor = HealthMonitor::new(&config);
        let first = poll_for(&mut monitor, Duration::from_millis(200), None);
        assert_eq!((first, monitor.counters().probes_ok), (vec![], 1), "the first probe");
        // One second of bursts (2000 bad signs): healthy, so every early probe passes.
        let unanswered = Some((backend, PassiveEvent::SynUnanswered));
        let transitions = poll_for(&mut monitor, Duration::from_secs(1), unanswered);
        assert_eq!(transitions, []);
        assert!(monitor.is_up((VIP, 80, Proto::Tcp), backend));
        let probes = monitor.counters().probes_ok - 1;
        // Without the signs: none in that second. With them: one per gap at most, plus one
        // for the rounding of the 5 ms polls.
        assert!((3..=11).contains(&probes), "{probes} early probes in 1 s");
        // Each suspicion brought one probe forward; the last one's may still be running.
        let early = monitor.counters().early_probes;
        assert!((probes..=probes + 1).contains(&early), "{early} suspicions, {probes} probes");
        assert_eq!(monitor.counters().probes_failed, 0);

        // Once the bursts stop, the last early probe passes and clears the suspicion.
        assert_eq!(poll_for(&mut monitor, Duration::from_millis(300), None), []);
        assert!(!monitor.status()[0].health.is_suspect());

        // The backend dies: the same signs now lead to three failed probes, and it is out.
        drop(listener);
        let started = StdInstant::now();
        let mut transitions = Vec::new();
        while transitions.is_empty() && started.elapsed() < Duration::from_secs(2) {
            let resets = Some((backend, PassiveEvent::Rst));
            transitions = poll_for(&mut monitor, Duration::from_millis(5), resets);
        }
        let taken_out = started.elapsed();
        // The first probe at once, then two more an early gap apart: 200 ms and polling.
        assert!(taken_out < Duration::from_millis(600), "out in {taken_out:?}");
        assert_eq!(transitions.len(), 1, "{transitions:?}");
        assert!(!transitions[0].up);
        assert!(transitions[0].reason.contains("an RST answered a SYN"), "{}", transitions[0]);
        eprintln!("a dead backend under passive signs: out in {taken_out:?} (interval 30 s)");
    }

    /// 1000 backends share a pool of at most `MAX_PROBE_THREADS` threads (it was one thread
    /// each), and every one of them is probed.
    #[test]
    fn a_thousand_backends_do_not_make_a_thousand_threads() {
        let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
        let before = threads();
        // A port nothing listens on, on 1000 loopback addresses: each probe is refused at once.
        let port = closed_port();
        let backends: Vec<BackendKey> = (0..1000u32)
            .map(|i| (IpAddr::V4(Ipv4Addr::from_bits(0x7f01_0000 + i)), port))
            .collect();
        let config = local_config("interval = 30\ntimeout = 0.5", &backends);
        let mut monitor = HealthMonitor::new(&config);
        let started = StdInstant::now();
        let mut most = 0;
        while monitor.counters().probes_ok + monitor.counters().probes_failed < 1000 {
            assert!(started.elapsed() < Duration::from_secs(20), "{:?}", monitor.counters());
            monitor.poll();
            most = most.max(threads());
            thread::sleep(Duration::from_millis(5));
        }
        assert!(monitor.probe_threads() <= MAX_PROBE_THREADS, "{}", monitor.probe_threads());
        // Other tests run beside this one with threads of their own: a bound, not an equality.
        assert!(most < before + 200, "{most} threads in the process (was {before})");
        eprintln!(
            "1000 backends probed in {:?} by {} threads",
            started.elapsed(),
            monitor.probe_threads()
        );
    }
}
