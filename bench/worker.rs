//! The worker loop around the pipeline, in instructions: what one iteration of
//! [`Worker::step`] costs besides forwarding (issue 11 §1).
//!
//! `cargo bench --bench worker` runs itself under `valgrind --tool=callgrind` (collection on
//! only inside `measured_loop`), once with a full batch of [`BATCH`] UDP datagrams of
//! established DR flows on every iteration and once with empty polls, and prints per
//! iteration: the whole step, the pipeline's `process_batch` and the rest (the loop's own
//! work), then each function the loop calls (clock reads, control channel, `maintain`,
//! report, batch-latency record...) with its calls and instructions per call. Instruction
//! counts do not depend on the machine or its load; how often the time-driven work runs
//! does (under callgrind an iteration takes ~50× longer, so `maintain` runs far more often
//! per iteration than natively): read those rows per call, and multiply by their native
//! cadence (`maintain` 1000/s, report 10/s).
//!
//! The port is in memory ([`BenchPort`]): it copies each frame from a template into a fixed
//! batch buffer (as a NIC's RX delivers a fresh frame) and counts what the verdicts say; it
//! makes no system call, so the figures are xlb's own instructions only. Clock reads go
//! through glibc's `clock_gettime`: natively a vDSO call (no system call where the clock
//! source is `tsc`), under valgrind a real system call, so their instruction count here is
//! the wrapper's, not the native cost.
//!
//! Under `cargo test --benches` (no `--bench` argument) it only checks that the loop
//! forwards every frame.

use std::collections::HashMap;
#[path = "callgrind.rs"]
mod callgrind;

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use xlb::control::{Config, Snapshot};
use xlb::dataplane::worker::{ControlMsg, Port, ProcessBatch, Worker, WorkerOptions};
use xlb::dataplane::{BATCH, CoreSlot, IfaceId, Pipeline, Verdict};
use xlb::report::{CoreReport, PortStats};
use xlb::testkit;
use xlb::time::MonotonicClock;
use xlb::wire::MacAddr;

const LB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x20]);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const BACKENDS: u8 = 4;
/// Distinct flows the port cycles through (the side-by-side's generator uses 65536).
const FLOWS: usize = 65_536;
const FRAME_LEN: usize = 60;

fn snapshot() -> Arc<Snapshot> {
    let mut text = format!(
        "[[interface]]\nname = \"eth0\"\naddr = \"10.0.0.1/16\"\nmac = \"{LB_MAC}\"\ngateway = \"10.0.2.1\"\n\n"
    );
    for i in 1..=BACKENDS {
        text += &format!("[[neighbor]]\nip = \"10.0.1.{i}\"\nmac = \"02:00:00:00:01:{i:02x}\"\n");
    }
    text += &format!("[[neighbor]]\nip = \"10.0.2.1\"\nmac = \"{CLIENT_MAC}\"\n");
    text += &format!(
        "\n[[service]]\nvip = \"{VIP}\"\nport = 80\nproto = \"udp\"\nforward = \"dr\"\nscheduler = \"maglev\"\n"
    );
    for i in 1..=BACKENDS {
        text += &format!("[[service.backend]]\naddr = \"10.0.1.{i}\"\nport = 80\n");
    }
    let config = Config::parse(&text, "bench.toml").expect("bench config");
    Arc::new(Snapshot::build(&config, 1).expect("bench snapshot"))
}

/// An in-memory port: every poll delivers `per_poll` datagrams copied from the templates.
struct BenchPort {
    templates: Vec<[u8; FRAME_LEN]>,
    next: usize,
    /// Frames a poll delivers (0: every poll is empty).
    per_poll: usize,
    batch: Box<[[u8; FRAME_LEN]; BATCH]>,
    verdicts: [Verdict; BATCH],
    stats: PortStats,
    queued: u64,
}

impl BenchPort {
    fn new(per_poll: usize) -> Self {
        let templates = (0..FLOWS)
            .map(|i| {
                let client = Ipv4Addr::new(172, 16, (i / 250) as u8, 1 + (i % 250) as u8);
                let frame = testkit::udp(
                    CLIENT_MAC,
                    LB_MAC,
                    (client, 1024u16.wrapping_add(i as u16)),
                    (VIP, 80),
                    &[0; 18],
                );
                frame.try_into().expect("60-byte frames")
            })
            .collect();
        BenchPort {
            templates,
            next: 0,
            per_poll: per_poll.min(BATCH),
            batch: Box::new([[0; FRAME_LEN]; BATCH]),
            verdicts: [Verdict::Pass; BATCH],
            stats: PortStats::default(),
            queued: 0,
        }
    }
}

impl Port for BenchPort {
    fn poll(
        &mut self,
        process: &mut ProcessBatch<'_>,
        own: IfaceId,
        forward: &mut dyn FnMut(IfaceId, &[u8]),
    ) -> usize {
        let count = self.per_poll;
        if count == 0 {
            return 0;
        }
        for slot in &mut self.batch[..count] {
            *slot = self.templates[self.next];
            self.next = (self.next + 1) % self.templates.len();
        }
        let mut slots = self.batch.iter_mut();
        let mut frames: [&mut [u8]; BATCH] =
            std::array::from_fn(|_| slots.next().map(|s| s.as_mut_slice()).unwrap_or_default());
        process(&mut frames[..count], &mut self.verdicts[..count]);
        for (frame, verdict) in frames[..count].iter().zip(&self.verdicts[..count]) {
            match *verdict {
                Verdict::Tx(egress) if egress == own => self.queued += 1,
                Verdict::Tx(egress) => forward(egress, frame),
                _ => {}
            }
        }
        self.stats.rx_packets += count as u64;
        self.stats.batches += 1;
        count
    }

    fn send(&mut self, _: &[u8]) -> bool {
        self.queued += 1;
        true
    }

    fn flush(&mut self) {
        self.stats.tx_packets += std::mem::take(&mut self.queued);
    }

    fn wait(&mut self, _: Duration) {}

    fn stats(&self) -> PortStats {
        self.stats
    }
}

struct Bench {
    worker: Worker<BenchPort>,
    _control: Sender<ControlMsg>,
    reports: Receiver<CoreReport>,
}

/// Clock reads before the measured loop: the clock's origin, the flows' opening time and
/// [`Worker::new`].
const SETUP_CLOCK_READS: u64 = 3;

/// A worker over one port delivering `per_poll` frames a poll, every flow established.
fn prepare(per_poll: usize) -> Bench {
    let (control, control_rx) = crossbeam::channel::unbounded();
    // Bounded like the daemon's, and drained by the bench so that no report is lost.
    let (report_tx, reports) = crossbeam::channel::bounded(1024);
    let clock = MonotonicClock::start();
    let mut pipeline = Pipeline::new(snapshot(), CoreSlot::SINGLE);
    let port = BenchPort::new(per_poll);
    let mut verdicts = [Verdict::Pass; BATCH];
    let opened = clock.now();
    for chunk in port.templates.chunks(BATCH) {
        let mut copies: Vec<[u8; FRAME_LEN]> = chunk.to_vec();
        let mut slots: Vec<&mut [u8]> = copies.iter_mut().map(|c| c.as_mut_slice()).collect();
        pipeline.process_batch(opened, IfaceId(0), &mut slots, &mut verdicts);
        assert!(
            verdicts[..chunk.len()].iter().all(|v| matches!(v, Verdict::Tx(_))),
            "setup forwards"
        );
    }
    let options = WorkerOptions { core: 0, busy_poll: true };
    let worker =
        Worker::new(pipeline, vec![(IfaceId(0), port)], control_rx, report_tx, clock, options);
    Bench { worker, _control: control, reports }
}

/// The measured loop: `iterations` calls of [`Worker::step`]; returns the frames received.
#[inline(never)]
fn measured_loop(bench: &mut Bench, iterations: usize) -> usize {
    let mut received = 0;
    for _ in 0..iterations {
        received += bench.worker.step();
        // Control's side: take the reports (outside the worker, as the control thread would).
        while bench.reports.try_recv().is_ok() {}
    }
    received
}

/// Per function name: (calls, inclusive instructions).
type Calls = HashMap<String, (u64, u64)>;

/// Calls and inclusive instructions per function called inside the collected region, from
/// a callgrind output file (name-compressed or not).
fn callees(text: &str) -> (u64, Calls) {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut resolve = |spec: &str| -> String {
        let spec = spec.trim();
        if let Some(rest) = spec.strip_prefix('(') {
            let (id, name) = rest.split_once(')').unwrap_or((rest, ""));
            let name = name.trim();
            if name.is_empty() {
                return names.get(id).cloned().unwrap_or_default();
            }
            names.insert(id.to_string(), name.to_string());
            return name.to_string();
        }
        spec.to_string()
    };
    let mut out: Calls = HashMap::new();
    let mut total = 0;
    let mut callee = String::new();
    let mut pending: Option<u64> = None;
    for line in text.lines() {
        if let Some(calls) = pending.take() {
            let cost: u64 =
                line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let entry = out.entry(callee.clone()).or_default();
            entry.0 += calls;
            entry.1 += cost;
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            callee = resolve(spec);
        } else if let Some(spec) = line.strip_prefix("fn=") {
            resolve(spec);
        } else if let Some(calls) = line.strip_prefix("calls=") {
            pending = calls.split_whitespace().next().and_then(|c| c.parse().ok());
        } else if let Some(sum) = line.strip_prefix("summary:").or(line.strip_prefix("totals:")) {
            total = sum.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(total);
        }
    }
    (total, out)
}

/// What to show of a callgrind run: rows whose name contains one of these.
const SHOWN: [(&str, &str); 12] = [
    ("Worker<P>::step", "Worker::step (whole iteration)"),
    ("Pipeline::process_batch", "  Pipeline::process_batch"),
    (
        "BenchPort as xlb::dataplane::worker::Port>::poll",
        "  port poll (bench copy, incl. process_batch)",
    ),
    ("clock_gettime", "  clock_gettime (valgrind: a syscall; natively vDSO)"),
    ("Receiver<T>>::try_recv", "  control channel try_recv"),
    ("Pipeline::maintain", "  Pipeline::maintain"),
    ("Worker<P>::report", "  Worker::report (build)"),
    ("Sender<T>>::try_send", "  report try_send"),
    ("BatchLatency::record", "  BatchLatency::record"),
    ("Pipeline::drain_emitted", "  Pipeline::drain_emitted"),
    ("Worker<P>::send_staged", "  Worker::send_staged"),
    ("drop_in_place<xlb::report::CoreReport>", "  drop of a report (control's side)"),
];

fn callgrind(per_poll: usize, iterations: usize) -> Option<(u64, Calls)> {
    let text = callgrind::run_child(
        &format!("worker-{per_poll}"),
        &[&per_poll.to_string(), &iterations.to_string()],
    )?;
    Some(callees(&text))
}

fn print(per_poll: usize, iterations: usize, total: u64, calls: &Calls) {
    println!(
        "\n{} ({iterations} iterations, {} frames each): {:.0} instructions/iteration in measured_loop",
        if per_poll == 0 { "empty polls" } else { "full batches" },
        per_poll,
        total as f64 / iterations as f64
    );
    println!("  {:<56} {:>9} {:>14} {:>12}", "function", "calls", "instr/call", "instr/iter");
    for (pattern, label) in SHOWN {
        let (count, cost) = calls
            .iter()
            .filter(|(name, _)| name.contains(pattern))
            .fold((0, 0), |(n, c), (_, (cn, cc))| (n + cn, c + cc));
        // Callgrind counts calls from the start, collected or not: setup opens the flows
        // through the pipeline directly, not through the loop, and these are its calls.
        let count = match pattern {
            // Once per iteration by construction (setup's calls may be inlined or not).
            "Pipeline::process_batch" => iterations as u64,
            "clock_gettime" => count.saturating_sub(SETUP_CLOCK_READS),
            _ => count,
        };
        if count == 0 || cost == 0 {
            continue;
        }
        println!(
            "  {:<56} {:>9} {:>14.0} {:>12.1}",
            label,
            count,
            cost as f64 / count as f64,
            cost as f64 / iterations as f64
        );
    }
    let process = calls
        .iter()
        .filter(|(n, _)| n.contains("Pipeline::process_batch"))
        .map(|(_, c)| c.1)
        .sum::<u64>();
    let timed = ["Pipeline::maintain", "Worker<P>::report", "Sender<T>>::try_send"];
    let periodic = calls
        .iter()
        .filter(|(n, _)| timed.iter().any(|t| n.contains(t)))
        .map(|(_, c)| c.1)
        .sum::<u64>();
    let rest = total.saturating_sub(process + periodic);
    let per_frame = if per_poll > 0 {
        format!(", {:.1} per frame", rest as f64 / (iterations * per_poll) as f64)
    } else {
        String::new()
    };
    println!(
        "  besides process_batch: {:.0} instructions/iteration periodic (maintain, report: their \
         cadence is in time, and under callgrind time runs ~50x slower), {:.0} the rest (the loop \
         and the in-memory port's copy of each frame){per_frame}",
        periodic as f64 / iterations as f64,
        rest as f64 / iterations as f64,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(position) = args.iter().position(|a| a == "--callgrind-child") {
        let number = |offset: usize| -> usize { args[position + offset].parse().expect("a count") };
        let mut bench = prepare(number(1));
        black_box(measured_loop(&mut bench, number(2)));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches`: the loop forwards every frame of every iteration.
        let mut bench = prepare(BATCH);
        let before = bench.worker.report().ports[0].1;
        assert_eq!(measured_loop(&mut bench, 100), 100 * BATCH);
        let after = bench.worker.report().ports[0].1;
        assert_eq!(
            after.tx_packets - before.tx_packets,
            (100 * BATCH) as u64,
            "every frame forwarded"
        );
        println!("worker bench: smoke check passed");
        return;
    }
    let iterations = if args.iter().any(|a| a == "--quick") { 2_000 } else { 20_000 };
    for per_poll in [BATCH, 0] {
        match callgrind(per_poll, iterations) {
            Some((total, calls)) => print(per_poll, iterations, total, &calls),
            None => println!("callgrind failed or is not installed (valgrind --tool=callgrind)"),
        }
    }
}
