//! Malformed traffic (issue 6): the corpus of [`xlb::testkit::malformed`] with good DR flows
//! interleaved, written to a capture and replayed by the real `xlb replay` binary. Every
//! frame must get a verdict (the counters sum to the frames), every malformed frame the
//! verdict its label says, and every good frame must be forwarded whole to its flow's real
//! server. The per-class table is golden (`tests/golden/malformed.md`; `XLB_BLESS=1`
//! rewrites it).
//!
//! As root, every frame also runs through the appliance's real XDP program
//! (`BPF_PROG_TEST_RUN`), which must steer to xlb exactly the frames labelled `steered`
//! (`lab/malformed` relies on the labels to account for what it injects).
//!
//! The IPv6 classes (issue 12, [`xlb::testkit::malformed::v6`]) get the same three checks
//! under the IPv6 DR lab's config (`tests/golden/malformed6.md`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use serde_json::Value;

use xlb::control::{Config, Snapshot};
use xlb::dataplane::io::afxdp::steer::{SteerProgram, SteerRules};
use xlb::dataplane::io::replay::verdict_name;
use xlb::testkit::captures::{self, Frame};
use xlb::testkit::malformed::{
    Case, Class, DR_LAB, DR_LAB_BACKENDS, DR_LAB_CONFIG, FORWARDED, corpus, good_flow,
};

/// A scratch directory, removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xlb-malformed-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One frame of the replayed capture: a corpus case, or frame `step` of good flow `flow`.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Case(usize),
    Good { flow: usize },
}

/// Rounds of the corpus in the capture (each on client ports of its own).
const ROUNDS: u16 = 2;

/// The corpus `ROUNDS` times, with a good frame after every malformed one (see
/// [`interleave`]).
fn capture() -> (Vec<Case>, Vec<Frame>, Vec<Origin>) {
    let cases: Vec<Case> = (0..ROUNDS).flat_map(|round| corpus(&DR_LAB, round)).collect();
    let case_frames = cases.iter().map(|case| case.frame.clone()).collect();
    let (timed, origins) =
        interleave(case_frames, |flow| good_flow(&DR_LAB, 50000 + flow as u16, flow % 3 == 2));
    (cases, timed, origins)
}

/// `case_frames` with a good frame after each one, timed 100 µs apart: good flow `n` is
/// `good_flow(n)` (TCP connections of five frames each and, every third flow, a UDP query).
fn interleave(
    case_frames: Vec<Vec<u8>>,
    good_flow: impl Fn(usize) -> Vec<Vec<u8>>,
) -> (Vec<Frame>, Vec<Origin>) {
    let mut good = Vec::new();
    let mut flow = 0;
    while good.len() < case_frames.len() {
        for frame in good_flow(flow) {
            good.push((flow, frame));
        }
        flow += 1;
    }
    let mut frames = Vec::new();
    let mut origins = Vec::new();
    let mut good = good.into_iter();
    for (index, frame) in case_frames.into_iter().enumerate() {
        frames.push(frame);
        origins.push(Origin::Case(index));
        if let Some((flow, frame)) = good.next() {
            frames.push(frame);
            origins.push(Origin::Good { flow });
        }
    }
    for (flow, frame) in good {
        frames.push(frame);
        origins.push(Origin::Good { flow });
    }
    let timed = frames
        .into_iter()
        .enumerate()
        .map(|(i, frame)| {
            (Duration::from_secs(1_795_478_400) + Duration::from_micros(100 * i as u64), frame)
        })
        .collect();
    (timed, origins)
}

/// What `xlb replay` made of a capture.
struct Replayed {
    summary: Value,
    /// One per frame, as `--verdicts` spells them.
    verdicts: Vec<String>,
    /// The frames it transmitted (`--out`).
    written: Vec<Vec<u8>>,
}

impl Replayed {
    fn n(&self, key: &str) -> u64 {
        self.summary[key].as_u64().unwrap_or_else(|| panic!("{key} in {}", self.summary))
    }
}

/// Runs `xlb replay` over `frames` under `config` (text), in `scratch`; checks that it
/// succeeded (else fails with `refused` and its stderr) and gave one counted verdict per
/// frame, with nothing held or asked (static neighbours).
fn replay(scratch: &Scratch, config: &str, frames: &[Frame], refused: &str) -> Replayed {
    let config_path = scratch.0.join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let input = scratch.0.join("corpus.pcap");
    captures::write_pcap(frames, std::fs::File::create(&input).unwrap()).unwrap();
    let out = scratch.0.join("out.pcap");
    let verdicts_path = scratch.0.join("verdicts.txt");
    let output = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["replay", "--json", "--config"])
        .arg(&config_path)
        .arg("--pcap")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--verdicts")
        .arg(&verdicts_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{refused}{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let verdicts: Vec<String> =
        std::fs::read_to_string(&verdicts_path).unwrap().lines().map(str::to_string).collect();
    let replayed = Replayed { summary, verdicts, written: read_pcap(&out) };
    let n = |key| replayed.n(key);
    let summary = &replayed.summary;
    assert_eq!(n("packets"), frames.len() as u64);
    assert_eq!(n("packets"), n("tx") + n("pass") + n("drop") + n("held"), "{summary}");
    assert_eq!((n("held"), n("emitted")), (0, 0), "static neighbours: nothing held or asked");
    assert_eq!(replayed.verdicts.len(), frames.len());
    assert_eq!(replayed.written.len() as u64, n("tx"));
    replayed
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut reader = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        frames.push(packet.unwrap().data.into_owned());
    }
    frames
}

/// The golden per-class table: frames, how many the XDP program steers to xlb (the labels,
/// which the root test checks against the real program), and the verdicts `xlb replay` gave
/// them (`verdicts[i]` is the replay's verdict of `cases[i]`).
fn class_table(cases: &[Case], verdicts: &[&str]) -> String {
    let mut out = String::from(
        "| class | frames | steered to xlb by XDP | pipeline verdicts (xlb replay) |\n|---|---:|---:|---|\n",
    );
    for class in Class::ALL {
        let of_class: Vec<&Case> = cases.iter().filter(|c| c.class == class).collect();
        let mut by_verdict: BTreeMap<&str, usize> = BTreeMap::new();
        for (case, verdict) in cases.iter().zip(verdicts) {
            if case.class == class {
                *by_verdict.entry(verdict).or_default() += 1;
            }
        }
        let verdicts: Vec<String> = by_verdict.iter().map(|(v, n)| format!("{v} {n}")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            class.name(),
            of_class.len(),
            of_class.iter().filter(|c| c.steered).count(),
            verdicts.join(", ")
        ));
    }
    out.push_str(&format!(
        "| all | {} | {} | |\n",
        cases.len(),
        cases.iter().filter(|c| c.steered).count()
    ));
    out
}

#[test]
fn replay_gives_every_malformed_frame_its_verdict_and_forwards_every_good_one() {
    let scratch = Scratch::new("replay");
    let (cases, frames, origins) = capture();
    let run = replay(&scratch, DR_LAB_CONFIG, &frames, "");
    let (summary, verdicts) = (&run.summary, &run.verdicts);
    let n = |key: &str| run.n(key);

    // The counters agree with the verdicts the replay returned, by kind and drop reason.
    let mut returned: BTreeMap<&str, u64> = BTreeMap::new();
    let mut returned_drops: BTreeMap<String, u64> = BTreeMap::new();
    for verdict in verdicts {
        let kind = verdict.split(':').next().unwrap_or_default();
        *returned.entry(kind).or_default() += 1;
        if let Some(reason) = verdict.strip_prefix("drop:") {
            *returned_drops.entry(reason.to_string()).or_default() += 1;
        }
    }
    for kind in ["tx", "pass", "drop", "held"] {
        assert_eq!(n(kind), returned.get(kind).copied().unwrap_or(0), "{kind}: {summary}");
    }
    assert_eq!(returned.values().sum::<u64>(), n("packets"), "no other verdict: {returned:?}");
    let drops: BTreeMap<String, u64> =
        serde_json::from_value(summary["drop_reasons"].clone()).unwrap();
    assert_eq!(drops, returned_drops, "drop counters by reason against the verdicts returned");

    // The per-class table of round 0, from the verdicts the replay gave.
    let round0 = corpus(&DR_LAB, 0);
    let mut replayed = vec![""; round0.len()];
    for (origin, verdict) in origins.iter().zip(verdicts) {
        if let Origin::Case(index) = origin
            && *index < round0.len()
        {
            replayed[*index] = verdict;
        }
    }
    let table = class_table(&round0, &replayed);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/malformed.md");
    let header = "# Malformed-frame corpus: verdicts by class\n\nGenerated by `XLB_BLESS=1 cargo test --test malformed` from `xlb::testkit::malformed` \
                  (one round, under the DR lab's config): the verdicts are those `xlb replay --verdicts` gave each frame; \
                  steering is the corpus's label, checked against the real XDP program as root.\n\n";
    let text = format!("{header}{table}");
    if std::env::var("XLB_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(
        committed,
        text,
        "the per-class table changed: XLB_BLESS=1 rewrites {}",
        golden.display()
    );

    // Each malformed frame: its label.
    let mut wrong = Vec::new();
    let mut expected_drops: BTreeMap<String, u64> = BTreeMap::new();
    for (origin, verdict) in origins.iter().zip(verdicts) {
        if let Origin::Case(index) = origin {
            let case = &cases[*index];
            let label = verdict_name(case.verdict);
            if *verdict != label {
                wrong.push(format!(
                    "{}: {}: {verdict}, labelled {label}",
                    case.class.name(),
                    case.what
                ));
            }
            if let Some(reason) = label.strip_prefix("drop:") {
                *expected_drops.entry(reason.to_string()).or_default() += 1;
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(drops, expected_drops, "every drop is a malformed frame's, by its reason");

    // Each good frame: forwarded whole, only the MACs rewritten, to its flow's one backend.
    let mut sent = run.written.iter();
    let mut backend_of_flow: HashMap<usize, [u8; 6]> = HashMap::new();
    let mut good = 0;
    for ((origin, verdict), (_, frame)) in origins.iter().zip(verdicts).zip(&frames) {
        if !verdict.starts_with("tx:") {
            continue;
        }
        let out = sent.next().expect("a written frame per tx verdict");
        let Origin::Good { flow } = origin else { continue };
        good += 1;
        assert_eq!(verdict, &verdict_name(FORWARDED));
        assert_eq!(&out[6..12], &DR_LAB.lb.mac.0, "from the balancer's MAC");
        assert_eq!(&out[12..], &frame[12..], "DR rewrites nothing but the MACs");
        let backend: [u8; 6] = out[..6].try_into().unwrap();
        assert!(DR_LAB_BACKENDS.iter().any(|(_, mac)| mac.0 == backend));
        assert_eq!(*backend_of_flow.entry(*flow).or_insert(backend), backend, "flow {flow} moved");
    }
    let good_frames = origins.iter().filter(|o| matches!(o, Origin::Good { .. })).count();
    assert_eq!(good, good_frames, "every good frame was forwarded");
    let per_backend =
        DR_LAB_BACKENDS.map(|(_, mac)| backend_of_flow.values().filter(|b| **b == mac.0).count());
    assert!(per_backend.iter().all(|n| *n > 0), "both real servers got flows: {per_backend:?}");
}

/// The largest frame `BPF_PROG_TEST_RUN` takes for XDP (a page, less head- and tailroom).
const TEST_RUN_MAX: usize = 3000;

#[test]
fn the_xdp_program_steers_exactly_the_frames_labelled_steered() {
    if !xlb::testkit::root_or_skip("xdp steering labels (BPF_PROG_TEST_RUN)") {
        return;
    }
    let config = Config::parse(DR_LAB_CONFIG, "dr-lab.toml").unwrap();
    let snapshot = Snapshot::build(&config, 1).unwrap();
    let labelled = corpus(&DR_LAB, 0)
        .into_iter()
        .map(|case| (format!("{}: {}", case.class.name(), case.what), case.frame, case.steered));
    check_steering(snapshot, labelled);
}

/// Runs each `(what, frame, steered)` through the real steering program with `snapshot`'s
/// rules; fails naming every frame it steers otherwise than labelled.
fn check_steering(snapshot: Snapshot, labelled: impl Iterator<Item = (String, Vec<u8>, bool)>) {
    let program = SteerProgram::load().expect("loads (root)");
    program.set_rules(&SteerRules::from_snapshot(&Arc::new(snapshot))).unwrap();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (what, frame, labelled) in labelled {
        // Shorter than an Ethernet header or longer than a page: never on a 1500-MTU wire
        // (lab/malformed counts them as not delivered), and not what a test run takes.
        if frame.len() < 14 || frame.len() > TEST_RUN_MAX {
            continue;
        }
        // No socket is bound, so a frame the program steers comes back XDP_PASS counted as
        // `no_socket`; a frame it leaves to the kernel is counted as `passed`.
        let before = program.stats().unwrap();
        program.test_run(&frame, 0).unwrap();
        let after = program.stats().unwrap();
        let steered = after.no_socket == before.no_socket + 1;
        assert_eq!(after.no_socket + after.passed, before.no_socket + before.passed + 1);
        if steered != labelled {
            wrong.push(format!("{what}: steered {steered}, labelled {labelled}"));
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "{} frame(s):\n{}", wrong.len(), wrong.join("\n"));
    assert!(checked > 100, "{checked} frames checked");
}

/// The IPv6 classes (issue 12), replayed by `xlb replay` under the IPv6 DR lab's config with
/// good IPv6 DR flows interleaved: each malformed frame gets its label, every frame a counted
/// verdict, every good frame is forwarded whole to its flow's one real server. The per-class
/// table of the labels is golden (`tests/golden/malformed6.md`; `XLB_BLESS=1` rewrites it).
/// Every frame must get its label.
#[test]
fn replay_gives_every_malformed_ipv6_frame_its_verdict_and_forwards_every_good_one() {
    use xlb::testkit::malformed::v6::{self as m6, Class6, DR_LAB6, DR_LAB6_CONFIG};
    let scratch = Scratch::new("replay6");
    let cases = m6::corpus(&DR_LAB6, 0);

    // The golden table, from the labels (the replay must then give each frame its label).
    let mut table = String::from(
        "| class | frames | steered to xlb | expected verdicts |\n|---|---:|---:|---|\n",
    );
    for class in Class6::ALL {
        let of_class: Vec<_> = cases.iter().filter(|c| c.class == class).collect();
        let mut by_verdict: BTreeMap<&str, usize> = BTreeMap::new();
        for case in &of_class {
            *by_verdict.entry(case.verdict).or_default() += 1;
        }
        let verdicts: Vec<String> = by_verdict.iter().map(|(v, n)| format!("{v} {n}")).collect();
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            class.name(),
            of_class.len(),
            of_class.iter().filter(|c| c.steered).count(),
            verdicts.join(", ")
        ));
    }
    let header = "# Malformed-frame corpus, IPv6 classes: expected verdicts by class\n\nGenerated by `XLB_BLESS=1 cargo test --test malformed` from `xlb::testkit::malformed::v6` \
                  (one round, under the IPv6 DR lab's config): the labels, which `xlb replay --verdicts` must give each frame.\n\n";
    let text = format!("{header}{table}");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/malformed6.md");
    if std::env::var("XLB_BLESS").as_deref() == Ok("1") {
        std::fs::write(&golden, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(
        committed,
        text,
        "the IPv6 class table changed: XLB_BLESS=1 rewrites {}",
        golden.display()
    );

    let case_frames = cases.iter().map(|case| case.frame.clone()).collect();
    let (frames, origins) =
        interleave(case_frames, |flow| m6::good_flow(&DR_LAB6, 50000 + flow as u16, flow % 3 == 2));
    let replayed = replay(
        &scratch,
        DR_LAB6_CONFIG,
        &frames,
        "xlb replay refused or failed the IPv6 DR lab:\n",
    );
    let verdicts = &replayed.verdicts;

    // Each malformed frame: its label; the drop counters: exactly the labelled drops.
    let mut wrong = Vec::new();
    let mut expected_drops: BTreeMap<String, u64> = BTreeMap::new();
    for (origin, verdict) in origins.iter().zip(verdicts) {
        match origin {
            Origin::Case(index) => {
                let case = &cases[*index];
                if verdict != case.verdict {
                    wrong.push(format!(
                        "{}: {}: {verdict}, labelled {}",
                        case.class.name(),
                        case.what,
                        case.verdict
                    ));
                }
                if let Some(reason) = case.verdict.strip_prefix("drop:") {
                    *expected_drops.entry(reason.to_string()).or_default() += 1;
                }
            }
            Origin::Good { flow } => {
                if verdict != m6::FORWARDED {
                    wrong.push(format!("good flow {flow}: {verdict}, not forwarded"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} frame(s) got another verdict:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let drops: BTreeMap<String, u64> =
        serde_json::from_value(replayed.summary["drop_reasons"].clone()).unwrap();
    assert_eq!(drops, expected_drops, "drop counters by reason against the labels");

    // Each good frame: forwarded whole, only the MACs rewritten, to its flow's one backend.
    let mut sent = replayed.written.iter();
    let mut backend_of_flow: HashMap<usize, [u8; 6]> = HashMap::new();
    for ((origin, verdict), (_, frame)) in origins.iter().zip(verdicts).zip(&frames) {
        if !verdict.starts_with("tx:") {
            continue;
        }
        let out = sent.next().expect("a written frame per tx verdict");
        let Origin::Good { flow } = origin else { continue };
        assert_eq!(&out[6..12], &DR_LAB6.lb.mac.0, "from the balancer's MAC");
        assert_eq!(&out[12..], &frame[12..], "DR rewrites nothing but the MACs");
        let backend: [u8; 6] = out[..6].try_into().unwrap();
        assert!(m6::DR_LAB6_BACKENDS.iter().any(|(_, mac)| mac.0 == backend));
        assert_eq!(*backend_of_flow.entry(*flow).or_insert(backend), backend, "flow {flow} moved");
    }
    let per_backend = m6::DR_LAB6_BACKENDS
        .map(|(_, mac)| backend_of_flow.values().filter(|b| **b == mac.0).count());
    assert!(per_backend.iter().all(|n| *n > 0), "both real servers got flows: {per_backend:?}");
}

/// The IPv6 classes straight through the pipeline (no replay binary): each frame its label,
/// and the counters agree with the verdicts returned. Refused at `Snapshot::build` until the
/// IPv6 data path lands (the test says so).
#[test]
fn the_pipeline_gives_every_malformed_ipv6_frame_its_label() {
    use xlb::dataplane::{CoreSlot, IfaceId, Pipeline};
    use xlb::testkit::malformed::v6::{self as m6, DR_LAB6, DR_LAB6_CONFIG};
    let config = Config::parse(DR_LAB6_CONFIG, "dr-lab6.toml").expect("parses");
    let snapshot = Snapshot::build(&config, 1)
        .unwrap_or_else(|e| panic!("Snapshot::build refuses the IPv6 DR lab: {e}"));
    let mut pipeline = Pipeline::new(Arc::new(snapshot), CoreSlot::SINGLE);
    let mut tally = xlb::testkit::VerdictTally::default();
    let mut wrong = Vec::new();
    for (i, case) in m6::corpus(&DR_LAB6, 0).iter().enumerate() {
        let mut frame = case.frame.clone();
        let now = xlb::time::Instant::from_millis(i as u64);
        let verdict = pipeline.process(now, IfaceId(0), &mut frame);
        tally.record(case.frame.len(), verdict);
        pipeline.drain_emitted(|_, _| {});
        if verdict_name(verdict) != case.verdict {
            wrong.push(format!(
                "{}: {}: {}, labelled {}",
                case.class.name(),
                case.what,
                verdict_name(verdict),
                case.verdict
            ));
        }
        if verdict == xlb::dataplane::Verdict::Pass && frame != case.frame {
            wrong.push(format!("{}: passed, but changed", case.what));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} frame(s) got another verdict:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    if let Err(wrong) = tally.check(pipeline.counters()) {
        panic!("the counters differ from the verdicts returned:\n{wrong}");
    }
}

/// As root: the steering program hands xlb exactly the IPv6 frames labelled `steered` (a
/// whole fixed header to the VIP).
#[test]
fn the_xdp_program_steers_exactly_the_ipv6_frames_labelled_steered() {
    use xlb::testkit::malformed::v6::{self as m6, DR_LAB6, DR_LAB6_CONFIG};
    if !xlb::testkit::root_or_skip("xdp steering labels of the IPv6 corpus (BPF_PROG_TEST_RUN)") {
        return;
    }
    let config = Config::parse(DR_LAB6_CONFIG, "dr-lab6.toml").unwrap();
    let snapshot = Snapshot::build(&config, 1)
        .unwrap_or_else(|e| panic!("Snapshot::build refuses the IPv6 DR lab: {e}"));
    let labelled = m6::corpus(&DR_LAB6, 0)
        .into_iter()
        .map(|case| (format!("{}: {}", case.class.name(), case.what), case.frame, case.steered));
    check_steering(snapshot, labelled);
}
