//! The per-core poll loop: receive a batch, run it through the pipeline, transmit, repeat.
//!
//! A worker owns one [`Pipeline`] and the [`Port`]s of the queues it serves (one or more
//! queues of one or more interfaces; frames the worker sends on its own leave by its first
//! port on the interface). It never blocks on another thread and takes no lock: control reaches it
//! through a channel it drains between batches ([`ControlMsg`]: a new snapshot, a neighbour
//! learned from snooped ARP, "announce the VIPs"), and it reports its counters through
//! another channel a few times a second ([`CoreReport`]), dropping a report rather than
//! waiting when control is slow.
//!
//! One iteration:
//! 1. read the clock; apply pending control messages (between batches, so a batch sees one
//!    snapshot), and read the clock again only if there were any (a snapshot swap may take a
//!    while; an empty channel is a couple of loads);
//! 2. that reading is the batch's `now`, for the pipeline, `maintain` and the report cadence;
//! 3. for each port: receive up to [`BATCH`] frames, `process_batch`, send frames back out
//!    in place, copy frames leaving by another interface into that port;
//! 4. send what the pipeline emitted on its own (ARP requests, released frames);
//! 5. flush every port (submit TX, kick the kernel if it asks, reclaim, refill);
//! 6. every millisecond, `maintain` (expire flows, held frames and stale neighbours, send
//!    paced ARP); every [`REPORT_EVERY`], report, and sooner (after [`EARLY_REPORT_AFTER`])
//!    when the pipeline has asked ARP for a next hop since the last report: control relays
//!    snooped ARP only for next hops someone needs, and learns from the report which ones a
//!    core is asking for, so the answer reaches the core within milliseconds.
//!
//! **Housekeeping never holds up frames that are already waiting, for long.** Step 6 comes
//! after the flush, so what a batch transmits has left before any housekeeping starts (and
//! before the worker waits when idle). An iteration in which a port delivered a full batch
//! ([`BATCH`] frames: its receive ring very likely holds more) puts off housekeeping that is
//! due, so the frames behind it are received first; it is put off for at most
//! [`MAX_DEFERRED_BATCHES`] full batches in a row, then runs anyway, so that expiry and
//! reports go on under sustained overload ([`housekeeping`] decides; [`Worker::deferrals`]
//! counts each piece put off). Each piece is bounded on its own: `maintain` examines a
//! fixed slice of each table ([`Pipeline::maintain`]) and the report copies counters and a
//! fixed-size histogram. Measured under load (bench/results/stall-2026-12-06.md): `maintain`
//! about 3 µs at the median and 5–25 µs at p99 with 65k flows, the report about 9 µs; what
//! a batch waits for besides is its own transmit (the kick) and the scheduler.
//!
//! An iteration that received frames reads the clock once more after step 5 and records
//! how long steps 3 to 5 took (from the reading of step 2) in [`BatchLatency`], a histogram
//! kept since the worker started
//! (never reset, so a report control misses loses nothing; control turns successive
//! reports into recent quantiles). Recording is a few arithmetic operations on a
//! preallocated array: no allocation, and values beyond the range are clamped, not refused.
//!
//! Clock reads are the loop's main fixed cost per iteration (a vDSO call, `clock_gettime`,
//! where the clock source allows; a system call where it does not): an iteration reads the
//! clock once, twice if it received frames, once more if control messages were applied
//! ([`Worker::clock_reads`] counts them). The rest of what an iteration does besides
//! forwarding is a few dozen instructions (the control channel's empty check, the cadence
//! comparisons, the latency record); `maintain` runs only when a millisecond has passed
//! since the last (about 24k instructions with 65k tracked flows, mostly the connection
//! table's sweep), and the report only every [`REPORT_EVERY`] (about 15–30k, mostly copying
//! the latency histogram). `cargo bench --bench worker` measures all of it with callgrind.
//!
//! When nothing arrives for a while the worker waits on its sockets ([`Port::wait_any`]), so an
//! idle appliance does not burn its cores; `busy_poll` keeps it spinning for benchmarks.
//!
//! The loop is generic over [`Port`] so tests drive it with in-memory ports.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender, TrySendError};

use crate::dataplane::{Pipeline, Verdict};
use crate::report::{BATCH, BatchLatency, CoreReport, PortStats, Stat};
use crate::snapshot::{IfaceId, Snapshot};
use crate::time::{Instant, MonotonicClock};
use crate::wire::MacAddr;

/// What a worker asks a port to run over a received batch: the frames, and a verdict slot
/// for each.
pub type ProcessBatch<'a> = dyn FnMut(&mut [&mut [u8]], &mut [Verdict]) + 'a;

/// One receive/transmit queue of one interface, as a worker drives it.
pub trait Port {
    /// Receives up to [`BATCH`] frames and calls `process` once on them (frames and a verdict
    /// slot each). Afterwards frames whose verdict is `Tx(own)` go back out of this port in
    /// place; frames for another interface are handed to `forward` (to be copied); frames
    /// passed (`Pass`) are handed to the kernel if the port can (AF_XDP: through its TAP
    /// device) and counted either way ([`PortStats::pass_reinjected`] or one of the two lost
    /// counts); the rest are recycled. Returns how many frames arrived.
    fn poll(
        &mut self,
        process: &mut ProcessBatch<'_>,
        own: IfaceId,
        forward: &mut dyn FnMut(IfaceId, &[u8]),
    ) -> usize;

    /// Copies `frame` out to be transmitted at the next flush; false (counted) if there is
    /// no room.
    fn send(&mut self, frame: &[u8]) -> bool;

    /// Submits what is queued, reclaims what was sent and gets ready to receive more.
    fn flush(&mut self);

    /// Waits at most `timeout` for frames to arrive.
    fn wait(&mut self, timeout: Duration);

    /// Waits at most `timeout` for frames to arrive on any of `ports` (a worker serving
    /// several). The default waits on the only port, or sleeps 100 µs when there are several;
    /// a port type that can wait on many at once overrides it.
    fn wait_any(ports: &mut [(IfaceId, Self)], timeout: Duration)
    where
        Self: Sized,
    {
        match ports {
            [(_, only)] => only.wait(timeout),
            _ => std::thread::sleep(timeout.min(Duration::from_micros(100))),
        }
    }

    /// The port's own counters.
    fn stats(&self) -> PortStats;
}

/// What control tells a worker.
#[derive(Debug, Clone)]
pub enum ControlMsg {
    /// Switch to this snapshot (between batches).
    Snapshot(Arc<Snapshot>),
    /// ARP seen on the wire said `ip` is at `mac`.
    Neighbor(Ipv4Addr, MacAddr),
    /// Send gratuitous ARP for these VIPs and local addresses (paced).
    Announce(Vec<Ipv4Addr>),
    /// NDP seen on the wire said `ip` is at `mac` ([`Pipeline::learn_neighbor6`]).
    Neighbor6(std::net::Ipv6Addr, MacAddr),
    /// Send unsolicited neighbour advertisements for these IPv6 VIPs and local addresses
    /// (paced, [`Pipeline::announce6`]).
    Announce6(Vec<std::net::Ipv6Addr>),
    /// Send an RFC 5227 probe for each of these addresses (paced): control then waits for
    /// another host's answer before announcing them.
    Probe(Vec<Ipv4Addr>),
    /// Send a duplicate address detection probe for each of these IPv6 addresses (paced,
    /// [`Pipeline::probe6`]): control then waits for another host's advertisement of one
    /// before announcing them.
    Probe6(Vec<std::net::Ipv6Addr>),
    /// Measured response times for the least-time scheduler, indexed like the backends of
    /// the snapshot of that generation (no new snapshot: scheduler state and tables stay).
    ResponseTimes { generation: u64, times: Arc<[u32]> },
    /// The other cores' connection counts per backend (IPVS's active and inactive, summed),
    /// indexed like the backends of the snapshot of that generation ([`Pipeline::set_peer_load`]): lc, wlc, sed, nq and lt
    /// count over the whole box.
    PeerLoad { generation: u64, others: Arc<[crate::conntrack::ConnectionCount]> },
    /// The VRRP state keepalived gave the box (`xlb ctl --active`/`--standby`); control
    /// follows a change to active with `Announce` for the VIPs.
    VrrpState(crate::fleet::VrrpState),
    /// A grown IPv6 connection table and its peers (a reload added the first IPv6 service),
    /// sent before that reload's snapshot ([`Pipeline::grow_conntrack6`]).
    Conntrack6(crate::dataplane::pipeline::Table6),
}

/// How often a worker reports.
pub const REPORT_EVERY: Duration = Duration::from_millis(100);
/// A report goes out this soon after the pipeline asked ARP for a next hop.
pub const EARLY_REPORT_AFTER: Duration = Duration::from_millis(2);
const MAINTAIN_EVERY: Duration = Duration::from_millis(1);
/// Full batches in a row for which due housekeeping may wait (see the module docs).
pub const MAX_DEFERRED_BATCHES: u32 = 16;
/// Empty rounds before an idle worker starts waiting.
const SPIN_ROUNDS: u32 = 256;
const IDLE_WAIT: Duration = Duration::from_millis(1);

/// What one piece of housekeeping (`maintain`, the report) does in an iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Housekeeping {
    /// Not due yet.
    Wait,
    /// Due, but a port delivered a full batch: the frames behind it go first.
    Defer,
    /// Due, and run now.
    Run,
}

/// Whether a piece of housekeeping due once `since_last >= every` runs in this iteration:
/// not while a full batch was received (`backlog`), unless it was already put off for
/// [`MAX_DEFERRED_BATCHES`] iterations in a row (`deferred`).
pub fn housekeeping(
    since_last: Duration,
    every: Duration,
    backlog: bool,
    deferred: u32,
) -> Housekeeping {
    if since_last < every {
        Housekeeping::Wait
    } else if backlog && deferred < MAX_DEFERRED_BATCHES {
        Housekeeping::Defer
    } else {
        Housekeeping::Run
    }
}

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    pub core: u16,
    /// Never wait: spin even when idle (benchmarks on dedicated cores).
    pub busy_poll: bool,
}

/// Frames leaving by another interface than they came in on, copied between a port's poll
/// and the other port's send. Fixed size, allocated once.
#[derive(Debug)]
struct Staging {
    bytes: Vec<u8>,
    frames: Vec<(IfaceId, usize, usize)>,
    overflow: u64,
}

impl Staging {
    const CAPACITY: usize = 2 * BATCH * 2048;

    fn new() -> Self {
        Staging {
            bytes: Vec::with_capacity(Self::CAPACITY),
            frames: Vec::with_capacity(4 * BATCH),
            overflow: 0,
        }
    }

    fn push(&mut self, egress: IfaceId, frame: &[u8]) {
        if self.bytes.len() + frame.len() > Self::CAPACITY
            || self.frames.len() == self.frames.capacity()
        {
            self.overflow += 1;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(frame);
        self.frames.push((egress, start, frame.len()));
    }
}

/// One core's poll loop.
pub struct Worker<P: Port> {
    pipeline: Pipeline,
    /// The queues this worker serves, with their interface.
    ports: Vec<(IfaceId, P)>,
    /// Indexed by [`IfaceId`]: which of `ports` sends frames out of that interface.
    egress_port: Vec<Option<usize>>,
    control: Receiver<ControlMsg>,
    reports: Sender<CoreReport>,
    clock: MonotonicClock,
    options: WorkerOptions,
    staging: Staging,
    unroutable: u64,
    latency: BatchLatency,
    last_maintain: Instant,
    last_report: Instant,
    /// The pipeline's `arp_requests_sent` at the last report.
    requests_reported: u64,
    idle_rounds: u32,
    clock_reads: u64,
    /// Iterations in a row that put off `maintain`, and the report ([`housekeeping`]).
    maintain_deferred: u32,
    report_deferred: u32,
    /// Every time a piece of housekeeping was put off ([`Worker::deferrals`]).
    deferrals: u64,
}

impl<P: Port> std::fmt::Debug for Worker<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("core", &self.options.core)
            .field("ports", &self.ports.len())
            .finish_non_exhaustive()
    }
}

impl<P: Port> Worker<P> {
    pub fn new(
        pipeline: Pipeline,
        ports: Vec<(IfaceId, P)>,
        control: Receiver<ControlMsg>,
        reports: Sender<CoreReport>,
        clock: MonotonicClock,
        options: WorkerOptions,
    ) -> Self {
        let now = clock.now();
        let interfaces = ports.iter().map(|(iface, _)| iface.index() + 1).max().unwrap_or(0);
        let mut egress_port = vec![None; interfaces];
        for (position, (iface, _)) in ports.iter().enumerate() {
            egress_port[iface.index()].get_or_insert(position);
        }
        Worker {
            pipeline,
            ports,
            egress_port,
            control,
            reports,
            clock,
            options,
            staging: Staging::new(),
            unroutable: 0,
            latency: BatchLatency::new(),
            last_maintain: now,
            last_report: now,
            requests_reported: 0,
            idle_rounds: 0,
            clock_reads: 0,
            maintain_deferred: 0,
            report_deferred: 0,
            deferrals: 0,
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Runs until `stop` is set, then reports one last time and returns that report.
    pub fn run(mut self, stop: &AtomicBool) -> CoreReport {
        while !stop.load(Ordering::Relaxed) {
            let received = self.step();
            if received > 0 || self.options.busy_poll {
                self.idle_rounds = 0;
                continue;
            }
            self.idle_rounds = self.idle_rounds.saturating_add(1);
            if self.idle_rounds >= SPIN_ROUNDS {
                self.idle();
            }
        }
        let report = self.report();
        let _ = self.reports.try_send(report.clone());
        report
    }

    /// One iteration of the loop; returns the frames received.
    pub fn step(&mut self) -> usize {
        let mut now = self.now();
        if self.apply_control(now) {
            // A message may have taken a while (a snapshot swap): the batch gets a fresh time.
            now = self.now();
        }

        let mut received = 0;
        let mut backlog = false;
        let Worker { pipeline, ports, staging, .. } = self;
        for (own, port) in ports.iter_mut() {
            let own = *own;
            let frames = port.poll(
                &mut |frames, verdicts| pipeline.process_batch(now, own, frames, verdicts),
                own,
                &mut |egress, frame| staging.push(egress, frame),
            );
            backlog |= frames >= BATCH;
            received += frames;
        }
        self.pipeline.drain_emitted(|egress, frame| self.staging.push(egress, frame));
        self.send_staged();
        for (_, port) in &mut self.ports {
            port.flush();
        }
        if received > 0 {
            let finished = self.now();
            self.latency.record(finished.saturating_duration_since(now));
        }

        let since_maintain = now.saturating_duration_since(self.last_maintain);
        match housekeeping(since_maintain, MAINTAIN_EVERY, backlog, self.maintain_deferred) {
            Housekeeping::Wait => {}
            Housekeeping::Defer => {
                self.maintain_deferred += 1;
                self.deferrals += 1;
            }
            Housekeeping::Run => {
                self.pipeline.maintain(now);
                self.last_maintain = now;
                self.maintain_deferred = 0;
            }
        }
        let since_report = now.saturating_duration_since(self.last_report);
        let asked = self.pipeline.counters().get(Stat::ArpRequestsSent) > self.requests_reported;
        let report_every = if asked { EARLY_REPORT_AFTER } else { REPORT_EVERY };
        match housekeeping(since_report, report_every, backlog, self.report_deferred) {
            Housekeeping::Wait => {}
            Housekeeping::Defer => {
                self.report_deferred += 1;
                self.deferrals += 1;
            }
            Housekeeping::Run => self.send_report(now),
        }
        received
    }

    /// Sends a report (a slow control thread misses it rather than slowing the worker).
    fn send_report(&mut self, now: Instant) {
        self.report_deferred = 0;
        self.requests_reported = self.pipeline.counters().get(Stat::ArpRequestsSent);
        let report = self.report();
        if let Err(TrySendError::Disconnected(_)) = self.reports.try_send(report) {
            // Control is gone; nothing to do but keep forwarding until told to stop.
        }
        self.last_report = now;
    }

    /// Applies every pending control message, stamped `now`; true if there was any.
    fn apply_control(&mut self, now: Instant) -> bool {
        let mut applied = false;
        while let Ok(message) = self.control.try_recv() {
            applied = true;
            match message {
                ControlMsg::Snapshot(snapshot) => self.pipeline.set_snapshot(snapshot),
                ControlMsg::Neighbor(ip, mac) => self.pipeline.learn_neighbor(now, ip, mac),
                ControlMsg::Announce(addrs) => self.pipeline.announce(&addrs),
                ControlMsg::Neighbor6(ip, mac) => self.pipeline.learn_neighbor6(now, ip, mac),
                ControlMsg::Announce6(addrs) => self.pipeline.announce6(&addrs),
                ControlMsg::Probe(addrs) => self.pipeline.probe(&addrs),
                ControlMsg::Probe6(addrs) => self.pipeline.probe6(&addrs),
                ControlMsg::VrrpState(state) => self.pipeline.set_vrrp_state(state),
                ControlMsg::Conntrack6(table) => self.pipeline.grow_conntrack6(&table),
                ControlMsg::ResponseTimes { generation, times } => {
                    self.pipeline.set_response_times(generation, &times);
                }
                ControlMsg::PeerLoad { generation, others } => {
                    self.pipeline.set_peer_load(generation, &others);
                }
            }
        }
        applied
    }

    /// Reads the clock (and counts the read: see [`Worker::clock_reads`]).
    #[inline]
    fn now(&mut self) -> Instant {
        self.clock_reads += 1;
        self.clock.now()
    }

    /// How many times this worker's iterations have read the clock: once each, once more after
    /// an iteration that received frames (its latency) and once more when control messages
    /// were applied (the module docs say why).
    pub fn clock_reads(&self) -> u64 {
        self.clock_reads
    }

    /// How many times a due `maintain` or report was put off because a full batch had just
    /// arrived (each piece, each iteration, counted once).
    pub fn deferrals(&self) -> u64 {
        self.deferrals
    }

    fn send_staged(&mut self) {
        for &(egress, start, len) in &self.staging.frames {
            let frame = &self.staging.bytes[start..start + len];
            match self.egress_port.get(egress.index()).copied().flatten() {
                Some(position) => {
                    self.ports[position].1.send(frame);
                }
                None => self.unroutable += 1,
            }
        }
        self.unroutable += std::mem::take(&mut self.staging.overflow);
        self.staging.frames.clear();
        self.staging.bytes.clear();
    }

    fn idle(&mut self) {
        P::wait_any(&mut self.ports, IDLE_WAIT);
    }

    /// This worker's figures now.
    pub fn report(&self) -> CoreReport {
        CoreReport {
            core: self.options.core,
            generation: self.pipeline.snapshot().generation,
            counters: self.pipeline.counters().clone(),
            ports: self.ports.iter().map(|(iface, port)| (*iface, port.stats())).collect(),
            flows: self.pipeline.conntrack().len() + self.pipeline.conntrack6().len(),
            embryonic: self.pipeline.conntrack().embryonic()
                + self.pipeline.conntrack6().embryonic(),
            connections: self.pipeline.connections().to_vec(),
            conntrack: self.pipeline.conntrack().stats(),
            neighbors: self.pipeline.neighbors().len() + self.pipeline.neighbors6().len(),
            held: self.pipeline.held(),
            unresolved: self.pipeline.unresolved().collect(),
            unresolved6: self.pipeline.unresolved6().collect(),
            unroutable: self.unroutable,
            housekeeping_deferred: self.deferrals,
            latency: self.latency.clone(),
        }
    }
}

/// An in-memory [`Port`] for tests of the loops that drive ports.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::{Port, ProcessBatch};
    use crate::dataplane::Verdict;
    use crate::report::{BATCH, PortStats};
    use crate::snapshot::IfaceId;

    /// A port backed by queues: `inbox` is what arrives, `wire` what was transmitted.
    #[derive(Debug, Default)]
    pub(crate) struct MemPort {
        pub(crate) inbox: VecDeque<Vec<u8>>,
        pub(crate) pending: Vec<Vec<u8>>,
        pub(crate) wire: Vec<Vec<u8>>,
        pub(crate) stats: PortStats,
    }

    impl Port for MemPort {
        fn poll(
            &mut self,
            process: &mut ProcessBatch<'_>,
            own: IfaceId,
            forward: &mut dyn FnMut(IfaceId, &[u8]),
        ) -> usize {
            let count = self.inbox.len().min(BATCH);
            let mut batch: Vec<Vec<u8>> = self.inbox.drain(..count).collect();
            let mut verdicts = vec![Verdict::Pass; count];
            {
                let mut frames: Vec<&mut [u8]> = batch.iter_mut().map(|f| &mut f[..]).collect();
                process(&mut frames, &mut verdicts);
            }
            for (frame, verdict) in batch.into_iter().zip(verdicts) {
                match verdict {
                    Verdict::Tx(egress) if egress == own => self.pending.push(frame),
                    Verdict::Tx(egress) => forward(egress, &frame),
                    _ => {}
                }
            }
            self.stats.rx_packets += count as u64;
            count
        }

        fn send(&mut self, frame: &[u8]) -> bool {
            self.pending.push(frame.to_vec());
            true
        }

        fn flush(&mut self) {
            self.stats.tx_packets += self.pending.len() as u64;
            self.wire.append(&mut self.pending);
        }

        fn wait(&mut self, _: Duration) {}

        fn stats(&self) -> PortStats {
            self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::MemPort;
    use super::*;
    use crate::control::Config;
    use crate::dataplane::CoreSlot;
    use crate::testkit;

    fn worker(
        config: &str,
        ports: usize,
    ) -> (Worker<MemPort>, Sender<ControlMsg>, Receiver<CoreReport>) {
        let config = Config::parse(config, "test.toml").expect("config");
        let snapshot = Arc::new(Snapshot::build(&config, 1).expect("snapshot"));
        let pipeline = Pipeline::new(snapshot, CoreSlot::SINGLE);
        let (control_tx, control_rx) = crossbeam::channel::unbounded();
        let (report_tx, report_rx) = crossbeam::channel::bounded(16);
        let ports = (0..ports).map(|i| (IfaceId(i as u8), MemPort::default())).collect();
        let options = WorkerOptions { core: 0, busy_poll: true };
        let worker =
            Worker::new(pipeline, ports, control_rx, report_tx, MonotonicClock::start(), options);
        (worker, control_tx, report_rx)
    }

    const ONE_ARM: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.2/24"
        mac = "02:00:0a:01:01:02"

        [[service]]
        vip = "10.1.1.10"
        port = 80
        proto = "tcp"
        scheduler = "rr"
        forward = "dr"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 80
    "#;

    const CLIENT: testkit::Host = testkit::Host::new([2, 0, 10, 1, 1, 100], [10, 1, 1, 100]);
    const LB: testkit::Host = testkit::Host::new([2, 0, 10, 1, 1, 2], [10, 1, 1, 2]);
    const RS: testkit::Host = testkit::Host::new([2, 0, 10, 1, 1, 11], [10, 1, 1, 11]);
    const VIP: [u8; 4] = [10, 1, 1, 10];

    fn syn(sport: u16) -> Vec<u8> {
        testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, sport), (VIP.into(), 80), testkit::SYN, &[])
    }

    #[test]
    fn holds_until_snooped_arp_then_forwards_in_place() {
        let (mut worker, control, _) = worker(ONE_ARM, 1);
        worker.ports[0].1.inbox.push_back(syn(40000));
        assert_eq!(worker.step(), 1);
        // The backend's MAC is unknown: the SYN is held and an ARP request goes out from the
        // box's own address.
        let wire = std::mem::take(&mut worker.ports[0].1.wire);
        assert_eq!(wire.len(), 1, "one ARP request");
        assert_eq!(&wire[0][12..14], &[0x08, 0x06]);
        assert_eq!(&wire[0][28..32], &LB.ip.octets(), "ARP sender is the box, not the VIP");
        assert_eq!(worker.pipeline().held(), 1);

        // Control relays what the steering program snooped: the held SYN leaves.
        control.send(ControlMsg::Neighbor(RS.ip, RS.mac)).unwrap();
        worker.step();
        let wire = std::mem::take(&mut worker.ports[0].1.wire);
        assert_eq!(wire.len(), 1);
        assert_eq!(&wire[0][0..6], &RS.mac.0, "DR: to the backend's MAC");
        assert_eq!(worker.pipeline().held(), 0);

        // Later packets of the flow go straight out, rewritten in place.
        worker.ports[0].1.inbox.push_back(syn(40001));
        worker.step();
        let wire = std::mem::take(&mut worker.ports[0].1.wire);
        assert_eq!(wire.len(), 1);
        assert_eq!(&wire[0][0..6], &RS.mac.0);
        assert_eq!(&wire[0][6..12], &LB.mac.0);
    }

    /// IPv6: a held SYN's next hop is reported in `unresolved6`; the neighbour control
    /// relays (`Neighbor6`) releases it; `Announce6` sends an unsolicited advertisement.
    #[test]
    fn ipv6_neighbours_are_relayed_and_vips_announced() {
        const DR6: &str = r#"
            [[interface]]
            name = "eth0"
            addr = "10.1.1.2/24"
            addr6 = "2001:db8:1::2/64"
            mac = "02:00:0a:01:01:02"
            [conntrack]
            capacity = 1024
            [[service]]
            vip = "2001:db8:1::10"
            port = 80
            forward = "dr"
            [[service.backend]]
            addr = "2001:db8:1::11"
        "#;
        let v6 = |last| std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last);
        let (mut worker, control, _) = worker(DR6, 1);
        let syn = testkit::tcp6(
            CLIENT.mac,
            LB.mac,
            (v6(0x100), 40000),
            (v6(0x10), 80),
            testkit::SYN,
            &[],
        );
        worker.ports[0].1.inbox.push_back(syn);
        worker.step();
        let wire = std::mem::take(&mut worker.ports[0].1.wire);
        assert_eq!(wire, vec![testkit::neighbor_solicitation(LB.mac, v6(2), v6(0x11), None)]);
        assert_eq!(worker.report().unresolved6, vec![v6(0x11)]);
        control.send(ControlMsg::Neighbor6(v6(0x11), RS.mac)).unwrap();
        worker.step();
        let wire = std::mem::take(&mut worker.ports[0].1.wire);
        assert_eq!(wire.len(), 1);
        assert_eq!(&wire[0][0..6], &RS.mac.0, "DR: to the backend's MAC");
        assert!(worker.report().unresolved6.is_empty());
        control.send(ControlMsg::Announce6(vec![v6(0x10)])).unwrap();
        worker.step();
        let wire = std::mem::take(&mut worker.ports[0].1.wire);
        assert_eq!(wire.len(), 1, "one unsolicited advertisement");
        assert_eq!(wire[0][54], 136);
    }

    /// A core that asks ARP for a next hop reports it within milliseconds, not at the next
    /// regular report: control relays snooped ARP only for next hops someone asks for.
    #[test]
    fn a_next_hop_asked_for_is_reported_early() {
        let (mut worker, _control, reports) = worker(ONE_ARM, 1);
        worker.ports[0].1.inbox.push_back(syn(40000));
        worker.step();
        let started = std::time::Instant::now();
        let report = loop {
            worker.step();
            if let Ok(report) = reports.try_recv() {
                break report;
            }
            assert!(started.elapsed() < REPORT_EVERY, "no early report");
        };
        assert_eq!(report.unresolved, vec![RS.ip]);
    }

    #[test]
    fn reports_counters_and_applies_snapshots_between_batches() {
        let (mut worker, control, reports) = worker(ONE_ARM, 1);
        control.send(ControlMsg::Neighbor(RS.ip, RS.mac)).unwrap();
        for sport in 0..10 {
            worker.ports[0].1.inbox.push_back(syn(41000 + sport));
        }
        assert_eq!(worker.step(), 10);
        let report = worker.report();
        assert_eq!(report.counters.backends[0].connections, 10);
        assert_eq!(report.ports[0].1.tx_packets, 10);

        let mut config = Config::parse(ONE_ARM, "test.toml").unwrap();
        config.services[0].backends[0].weight = 0;
        let drained = Arc::new(Snapshot::build(&config, 2).unwrap());
        control.send(ControlMsg::Snapshot(drained)).unwrap();
        worker.ports[0].1.inbox.push_back(syn(42000));
        worker.step();
        assert_eq!(worker.pipeline().snapshot().generation, 2);
        // A drained service with no other backend refuses the new flow.
        assert_eq!(worker.report().counters.backends[0].connections, 10);

        let stop = AtomicBool::new(true);
        let last = worker.run(&stop);
        assert_eq!(last.generation, 2);
        assert!(reports.try_iter().count() >= 1, "the final report is sent");
    }

    /// Clock reads are the loop's fixed cost: one per iteration, one more to time a batch,
    /// one more only when control messages were applied before it.
    #[test]
    fn an_iteration_reads_the_clock_once_and_once_more_per_batch_or_message() {
        let (mut worker, control, _) = worker(ONE_ARM, 1);
        control.send(ControlMsg::Neighbor(RS.ip, RS.mac)).unwrap();
        worker.step();
        assert_eq!(worker.clock_reads(), 2, "a control message: read again after it");
        worker.step();
        assert_eq!(worker.clock_reads(), 3, "an empty iteration reads the clock once");
        worker.ports[0].1.inbox.push_back(syn(44000));
        assert_eq!(worker.step(), 1);
        assert_eq!(worker.clock_reads(), 5, "a batch: once more, for its latency");
        assert_eq!(worker.report().latency.count(), 1);
        assert_eq!(worker.ports[0].1.wire.len(), 1, "the SYN went out");
    }

    /// Without ARP to ask for, a worker reports every `REPORT_EVERY`, not sooner.
    #[test]
    fn reports_regularly_and_not_before_report_every() {
        // Taken before the worker exists: its clock (and so its first report's due time)
        // starts when it is built, so `started` is never later than the worker's start.
        let started = std::time::Instant::now();
        let (mut worker, _control, reports) = worker(ONE_ARM, 1);
        let mut iterations = 0u64;
        let report = loop {
            worker.step();
            iterations += 1;
            if let Ok(report) = reports.try_recv() {
                break report;
            }
            assert!(started.elapsed() < 50 * REPORT_EVERY, "no regular report");
        };
        assert!(started.elapsed() >= REPORT_EVERY, "reported early: {:?}", started.elapsed());
        assert!(iterations > 1, "not on every iteration");
        assert!(report.unresolved.is_empty());
        assert!(reports.try_recv().is_err(), "one report, not one per iteration");
    }

    #[test]
    fn housekeeping_waits_behind_a_full_batch_but_not_for_long() {
        let ms = Duration::from_millis;
        let max = MAX_DEFERRED_BATCHES;
        // (since the last run, every, full batch received, put off in a row) -> what happens
        let cases = [
            (ms(0), ms(1), false, 0, Housekeeping::Wait),
            (ms(0), ms(1), true, max, Housekeeping::Wait),
            (ms(1), ms(1), false, 0, Housekeeping::Run),
            (ms(5), ms(1), false, max - 1, Housekeeping::Run),
            (ms(1), ms(1), true, 0, Housekeeping::Defer),
            (ms(99), ms(100), true, 0, Housekeeping::Wait),
            (ms(150), ms(100), true, max - 1, Housekeeping::Defer),
            (ms(150), ms(100), true, max, Housekeeping::Run),
            (ms(150), ms(100), true, u32::MAX, Housekeeping::Run),
        ];
        for (since, every, backlog, deferred, expected) in cases {
            assert_eq!(
                housekeeping(since, every, backlog, deferred),
                expected,
                "{since:?} since the last, every {every:?}, backlog {backlog}, put off {deferred}"
            );
        }
    }

    /// Due housekeeping (here the report, observable) waits while full batches arrive, for
    /// at most `MAX_DEFERRED_BATCHES` of them; after a batch that is not full it runs at once.
    #[test]
    fn due_housekeeping_lets_waiting_frames_go_first_for_a_bounded_number_of_batches() {
        let (mut worker, control, reports) = worker(ONE_ARM, 1);
        control.send(ControlMsg::Neighbor(RS.ip, RS.mac)).unwrap();
        assert_eq!(worker.step(), 0);
        let _ = reports.try_iter().count();
        let batches = MAX_DEFERRED_BATCHES as usize + 2;
        for sport in 0..(batches * BATCH) as u16 {
            worker.ports[0].1.inbox.push_back(syn(1024 + sport));
        }
        // Both `maintain` and the report are due from now on.
        std::thread::sleep(REPORT_EVERY);
        for batch in 1..=u64::from(MAX_DEFERRED_BATCHES) {
            assert_eq!(worker.step(), BATCH);
            assert!(reports.try_recv().is_err(), "reported behind full batch {batch}");
            assert_eq!(worker.deferrals(), 2 * batch, "maintain and the report put off");
        }
        assert_eq!(worker.step(), BATCH);
        let report = reports.try_recv().expect("the report, put off no longer");
        assert_eq!(report.ports[0].1.tx_packets, ((batches - 1) * BATCH) as u64);
        assert_eq!(worker.deferrals(), 2 * u64::from(MAX_DEFERRED_BATCHES));
        assert_eq!(report.housekeeping_deferred, worker.deferrals(), "the report carries them");

        assert_eq!(worker.step(), BATCH);
        let deferrals = worker.deferrals();
        worker.ports[0].1.inbox.push_back(syn(1000));
        std::thread::sleep(REPORT_EVERY);
        assert_eq!(worker.step(), 1);
        assert!(reports.try_recv().is_ok(), "a batch that is not full: no waiting");
        assert_eq!(worker.deferrals(), deferrals);
    }

    #[test]
    fn batch_latency_counts_non_empty_iterations_cumulatively() {
        let (mut worker, _, _) = worker(ONE_ARM, 1);
        assert_eq!(worker.step(), 0);
        assert_eq!(worker.report().latency.count(), 0, "an empty iteration is not a batch");
        worker.ports[0].1.inbox.push_back(syn(43000));
        assert_eq!(worker.step(), 1);
        let first = worker.report().latency;
        assert_eq!(first.count(), 1);
        assert!(first.sum_ns() > 0, "a batch takes some time");
        worker.step();
        for sport in 1..4 {
            worker.ports[0].1.inbox.push_back(syn(43000 + sport));
            worker.step();
        }
        // Reports do not reset it: the second report still holds the first batch.
        let second = worker.report().latency;
        assert_eq!(second.count(), 4);
        assert!(second.sum_ns() >= first.sum_ns());
    }

    #[test]
    fn frames_for_an_interface_without_a_port_are_counted() {
        let (mut worker, _, _) = worker(ONE_ARM, 1);
        worker.staging.push(IfaceId(3), &[0u8; 60]);
        worker.send_staged();
        assert_eq!(worker.report().unroutable, 1);
    }
}
