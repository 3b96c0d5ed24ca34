//! The golden tables' harness, shared by `tests/golden.rs` (IPv4) and `tests/golden6.rs`
//! (IPv6, dual stack): a case is a list of steps, each an input frame, the verdict wanted,
//! the frame wanted out and the frames the pipeline must emit on its own right after it.
//!
//! Invariants of [`run`]: each case runs on a fresh pipeline, its steps in order; every step
//! is checked in full and every difference reported (the run goes on to the next step); a
//! frame passed to the kernel must be byte for byte what was received; after each case, the
//! pipeline's counters must equal the verdicts it returned (by kind and drop reason).

// Each table uses its own part of the harness.
#![allow(dead_code)]

use xlb::dataplane::{CoreSlot, DropReason, IfaceId, Pipeline, Verdict};
use xlb::testkit::VerdictTally;
use xlb::time::Instant;

/// The verdict a step wants.
pub enum Want {
    Is(Verdict),
    /// A drop whose reason is named so (looked up by name through `DropReason::ALL`, so a
    /// table compiles before the reason exists).
    DropNamed(&'static str),
    /// A drop with either of two named reasons (where the contract allows both).
    DropEither(&'static str, &'static str),
    /// Dropped, for whatever counted reason.
    AnyDrop,
    /// Neither passed to the kernel nor transmitted in place: the answer comes out of
    /// `drain_emitted` (it does not fit the frame it answers).
    NotPassNorTx,
}

impl From<Verdict> for Want {
    fn from(verdict: Verdict) -> Want {
        Want::Is(verdict)
    }
}

/// The drop reason named `name`, if the build has it.
pub fn reason_named(name: &str) -> Option<DropReason> {
    DropReason::ALL.iter().copied().find(|reason| reason.name() == name)
}

impl Want {
    /// `None` if `verdict` is what is wanted, else why not.
    pub fn check(&self, verdict: Verdict) -> Option<String> {
        let ok = match self {
            Want::Is(want) => verdict == *want,
            Want::DropNamed(name) => match reason_named(name) {
                Some(reason) => verdict == Verdict::Drop(reason),
                None => {
                    return Some(format!(
                        "verdict {verdict:?}; no DropReason is named `{name}` in this build"
                    ));
                }
            },
            Want::DropEither(a, b) => {
                let reasons: Vec<_> = [a, b].iter().filter_map(|n| reason_named(n)).collect();
                if reasons.is_empty() {
                    return Some(format!("verdict {verdict:?}; neither `{a}` nor `{b}` exists"));
                }
                reasons.iter().any(|reason| verdict == Verdict::Drop(*reason))
            }
            Want::AnyDrop => matches!(verdict, Verdict::Drop(_)),
            Want::NotPassNorTx => !matches!(verdict, Verdict::Pass | Verdict::Tx(_)),
        };
        (!ok).then(|| format!("verdict {verdict:?}, expected {}", self.describe()))
    }

    fn describe(&self) -> String {
        match self {
            Want::Is(verdict) => format!("{verdict:?}"),
            Want::DropNamed(name) => format!("Drop({name})"),
            Want::DropEither(a, b) => format!("Drop({a} or {b})"),
            Want::AnyDrop => "a counted Drop".to_string(),
            Want::NotPassNorTx => "neither Pass nor Tx (answered by an emitted frame)".to_string(),
        }
    }
}

/// What a step expects the pipeline to transmit for its input frame.
pub enum Expect {
    /// Exactly this frame.
    Frame(Vec<u8>),
    /// A FullNAT frame whose local port the pipeline chose: built once the port is known.
    WithLocalPort(Box<dyn Fn(u16) -> Vec<u8>>),
    /// A frame built with the local port an earlier step of the case found (a later
    /// fragment of a FullNAT datagram: it has no ports to read the local port from).
    AtLocalPort(Box<dyn Fn(u16) -> Vec<u8>>),
    Nothing,
}

/// A step's input frame.
pub enum Input {
    Frame(Vec<u8>),
    /// A FullNAT reply, addressed to the local port the pipeline chose earlier in the case.
    ToLocalPort(Box<dyn Fn(u16) -> Vec<u8>>),
}

impl From<Vec<u8>> for Input {
    fn from(frame: Vec<u8>) -> Input {
        Input::Frame(frame)
    }
}

pub struct Step {
    pub what: &'static str,
    pub input: Input,
    pub verdict: Want,
    pub output: Expect,
    /// Frames the pipeline sends on its own right after this one.
    pub emitted: Vec<Vec<u8>>,
    /// The interface the frame arrives on (default eth0).
    pub ingress: IfaceId,
    /// When it arrives, in seconds (default: 1 s plus a millisecond per step).
    pub at_secs: Option<u64>,
}

pub fn step(
    what: &'static str,
    input: impl Into<Input>,
    verdict: impl Into<Want>,
    output: Expect,
) -> Step {
    Step {
        what,
        input: input.into(),
        verdict: verdict.into(),
        output,
        emitted: Vec::new(),
        ingress: IfaceId(0),
        at_secs: None,
    }
}

impl Step {
    /// This step's frame arrives on `ingress`.
    pub fn on(self, ingress: IfaceId) -> Step {
        Step { ingress, ..self }
    }

    /// This step's frame arrives at `secs` seconds.
    pub fn at(self, secs: u64) -> Step {
        Step { at_secs: Some(secs), ..self }
    }

    /// The pipeline also emits these frames, in this order, right after this step.
    pub fn emits(self, emitted: Vec<Vec<u8>>) -> Step {
        Step { emitted, ..self }
    }
}

pub struct Case {
    pub name: &'static str,
    pub steps: Vec<Step>,
}

pub fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join("")
}

/// The local port of a FullNAT frame the pipeline sent to a backend: IPv4 (its header's
/// length) or IPv6 (after its hop-by-hop, destination options, routing and fragment headers,
/// if any: a first fragment), VLAN tags skipped.
pub fn source_port(frame: &[u8]) -> u16 {
    let mut tags = 0;
    while matches!(frame[12 + tags..14 + tags], [0x81, 0x00] | [0x88, 0xa8]) {
        tags += 4;
    }
    let frame = &frame[tags..];
    let header_len = match frame[12..14] {
        [0x86, 0xdd] => {
            let (mut next, mut len) = (frame[14 + 6], 40);
            while matches!(next, 0 | 43 | 44 | 60) {
                let fragment = next == 44;
                next = frame[14 + len];
                len += if fragment { 8 } else { (usize::from(frame[14 + len + 1]) + 1) * 8 };
            }
            len
        }
        _ => usize::from(frame[14] & 0x0f) * 4,
    };
    u16::from_be_bytes([frame[14 + header_len], frame[15 + header_len]])
}

/// Runs `cases`, each on a fresh `pipeline()`; returns how many steps ran and every
/// difference found, one line (or a few) each.
pub fn run(cases: Vec<Case>, pipeline: impl Fn() -> Pipeline) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut steps_run = 0;
    for case in cases {
        let mut pipeline = pipeline();
        let mut local_port: Option<u16> = None;
        let mut tally = VerdictTally::default();
        for (index, step) in case.steps.into_iter().enumerate() {
            steps_run += 1;
            let where_ = format!("{} / step {} ({})", case.name, index + 1, step.what);
            let mut frame = match &step.input {
                Input::Frame(frame) => frame.clone(),
                Input::ToLocalPort(build) => match local_port {
                    Some(port) => build(port),
                    None => {
                        failures.push(format!("{where_}: no local port (the request step failed)"));
                        continue;
                    }
                },
            };
            let now = match step.at_secs {
                Some(secs) => Instant::from_secs(secs),
                None => Instant::from_millis(1_000 + index as u64),
            };
            let input = frame.clone();
            let verdict = pipeline.process(now, step.ingress, &mut frame);
            tally.record(input.len(), verdict);
            let mut emitted = Vec::new();
            pipeline.drain_emitted(|_, bytes| emitted.push(bytes.to_vec()));
            // The kernel gets what was received, byte for byte.
            if verdict == Verdict::Pass && frame != input {
                failures.push(format!(
                    "{where_}: passed to the kernel changed:\n   got {}\n  sent {}",
                    hex(&frame),
                    hex(&input)
                ));
            }
            if emitted != step.emitted {
                let got: Vec<_> = emitted.iter().map(|f| hex(f)).collect();
                let want: Vec<_> = step.emitted.iter().map(|f| hex(f)).collect();
                failures.push(format!("{where_}: emitted\n   got {got:?}\n  want {want:?}"));
            }
            if let Some(wrong) = step.verdict.check(verdict) {
                failures.push(format!("{where_}: {wrong}"));
                continue;
            }
            let expected = match &step.output {
                Expect::Frame(expected) => Some(expected.clone()),
                Expect::WithLocalPort(build) => {
                    let port = source_port(&frame);
                    let range = CoreSlot::SINGLE.local_ports();
                    if !(range.first..=range.last).contains(&port) {
                        failures.push(format!("{where_}: local port {port} out of range"));
                    }
                    if local_port.is_some_and(|known| known != port) {
                        failures.push(format!("{where_}: the flow changed its local port"));
                    }
                    local_port = Some(port);
                    Some(build(port))
                }
                Expect::AtLocalPort(build) => match local_port {
                    Some(port) => Some(build(port)),
                    None => {
                        failures.push(format!("{where_}: no local port (an earlier step failed)"));
                        continue;
                    }
                },
                Expect::Nothing => None,
            };
            if let Some(expected) = expected
                && frame != expected
            {
                failures.push(format!(
                    "{where_}:\n   got {}\n  want {}",
                    hex(&frame),
                    hex(&expected)
                ));
            }
        }
        if let Err(wrong) = tally.check(pipeline.counters()) {
            failures.push(format!(
                "{}: counters differ from the verdicts returned:\n{wrong}",
                case.name
            ));
        }
    }
    (steps_run, failures)
}

/// The VLAN tags the tagged runs put on every frame ([`run_tagged`]): an 802.1Q tag
/// (VLAN 10, priority 3), an 802.1ad service tag over an 802.1Q one (100 over 10), and a
/// priority tag (VLAN 0, priority 5).
pub const TAG_SETS: [(&str, &[u8]); 3] = [
    ("802.1Q VLAN 10", &[0x81, 0x00, 0x60, 0x0a]),
    ("802.1ad 100 + 802.1Q 10", &[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x0a]),
    ("priority tag (VLAN 0)", &[0x81, 0x00, 0xa0, 0x00]),
];

/// `frame` with `tags` after its MACs (a frame too short for MACs and an EtherType is
/// returned as it is).
pub fn with_tags(frame: &[u8], tags: &[u8]) -> Vec<u8> {
    if frame.len() < 14 {
        return frame.to_vec();
    }
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(tags);
    out.extend_from_slice(&frame[12..]);
    out
}

/// `case` with `tags` on every frame: received, transmitted and emitted (a VLAN-tagged
/// frame is answered and forwarded with its tags, and what the pipeline emits while it
/// processes one carries them too); None when a frame it receives is too short to carry
/// tags (its verdict is about the Ethernet header itself).
pub fn tagged_case(case: Case, label: &str, tags: &'static [u8]) -> Option<Case> {
    let mut steps = Vec::new();
    for step in case.steps {
        let input = match step.input {
            Input::Frame(frame) if frame.len() < 14 => return None,
            Input::Frame(frame) => Input::Frame(with_tags(&frame, tags)),
            Input::ToLocalPort(build) => {
                Input::ToLocalPort(Box::new(move |port| with_tags(&build(port), tags)))
            }
        };
        let output = match step.output {
            Expect::Frame(frame) => Expect::Frame(with_tags(&frame, tags)),
            Expect::WithLocalPort(build) => {
                Expect::WithLocalPort(Box::new(move |port| with_tags(&build(port), tags)))
            }
            Expect::AtLocalPort(build) => {
                Expect::AtLocalPort(Box::new(move |port| with_tags(&build(port), tags)))
            }
            Expect::Nothing => Expect::Nothing,
        };
        let emitted = step.emitted.iter().map(|frame| with_tags(frame, tags)).collect();
        steps.push(Step { input, output, emitted, ..step });
    }
    let name = Box::leak(format!("{} [{label}]", case.name).into_boxed_str());
    Some(Case { name, steps })
}

/// Runs every case of `cases()` once per tag set of [`TAG_SETS`], each frame tagged
/// ([`tagged_case`]); returns the steps run, the cases left out (a frame too short to tag)
/// and every difference found.
pub fn run_tagged(
    cases: impl Fn() -> Vec<Case>,
    pipeline: impl Fn() -> Pipeline,
) -> (usize, usize, Vec<String>) {
    let (mut steps_run, mut left_out, mut failures) = (0, 0, Vec::new());
    for (label, tags) in TAG_SETS {
        let all = cases();
        let total = all.len();
        let tagged: Vec<Case> =
            all.into_iter().filter_map(|case| tagged_case(case, label, tags)).collect();
        left_out += total - tagged.len();
        let (steps, found) = run(tagged, &pipeline);
        steps_run += steps;
        failures.extend(found);
    }
    (steps_run, left_out, failures)
}
