//! `xlb replay` on captures written by other tools: scapy (crafted frames, checked again by
//! scapy on the way out) and tcpdump (real kernel traffic captured in a namespace of the
//! test's own).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CONFIG: &str = "tests/interop/interop.toml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file in this run's scratch directory, removed (with the directory, once empty) when
/// the test that made it ends, pass or fail.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("xlb-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir.join(name))
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// `xlb replay --json --verdicts` of `input`: the summary, whose counts must be the verdicts
/// the replay wrote, frame by frame, by kind and by drop reason.
fn replay_json(input: &Path, output: &Path) -> Value {
    let verdicts = output.with_extension("verdicts");
    let out = run(
        env!("CARGO_BIN_EXE_xlb"),
        &[
            "replay",
            "--config",
            CONFIG,
            "--pcap",
            input.to_str().unwrap(),
            "--out",
            output.to_str().unwrap(),
            "--json",
            "--verdicts",
            verdicts.to_str().unwrap(),
        ],
    );
    let lines = std::fs::read_to_string(&verdicts).unwrap_or_default();
    let _ = std::fs::remove_file(&verdicts);
    assert!(out.status.success(), "xlb replay: {}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(summary["packets"], lines.lines().count(), "one verdict per frame: {summary}");
    for kind in ["tx", "pass", "drop", "held"] {
        let returned = lines.lines().filter(|v| v.split(':').next() == Some(kind)).count();
        assert_eq!(summary[kind], returned, "{kind}: {summary}");
    }
    let mut drops = std::collections::BTreeMap::<&str, u64>::new();
    for reason in lines.lines().filter_map(|v| v.strip_prefix("drop:")) {
        *drops.entry(reason).or_default() += 1;
    }
    assert_eq!(summary["drop_reasons"], serde_json::to_value(&drops).unwrap(), "{summary}");
    summary
}

#[test]
fn scapy_written_capture_replays_and_scapy_accepts_the_output() {
    let input = scratch("scapy-in.pcap");
    let output = scratch("scapy-out.pcap");
    let script = "tests/interop/scapy_frames.py";
    let written = run("python3", &[script, "write", input.to_str().unwrap()]);
    assert!(
        written.status.success(),
        "scapy could not write the capture (bash scripts/setup installs scapy): {}",
        String::from_utf8_lossy(&written.stderr)
    );
    let summary = replay_json(&input, &output);
    let n = |key: &str| summary[key].as_u64().unwrap();
    assert_eq!(n("packets"), 29, "{summary}");
    assert_eq!(summary["drop_reasons"]["fragment"], 1, "{summary}");
    assert_eq!(summary["drop_reasons"]["ip_options"], 1, "{summary}");
    assert_eq!(n("pass"), 1, "ssh to the box: {summary}");
    let checked = run("python3", &[script, "check", output.to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "scapy rejected xlb's output:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// A network namespace of this test's own, deleted (with the veths in it) on drop, even
/// when the test fails.
struct Netns {
    name: String,
}

impl Netns {
    fn create(purpose: &str) -> Netns {
        let name = format!("xlb-{}-{purpose}", std::process::id());
        let out = run("ip", &["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    fn exec(&self, command: &str) -> Output {
        let out = run("ip", &["netns", "exec", &self.name, "bash", "-c", command]);
        assert!(
            out.status.success(),
            "in {}: {command}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Ends a child we started, by its PID, on drop.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tcpdump_capture_of_real_kernel_traffic_replays() {
    if !xlb::testkit::root_or_skip("tcpdump capture replay (a network namespace)") {
        return;
    }
    let ns = Netns::create("tcpdump");
    // Both ends of the veth live in our namespace: `cli` is a real kernel client, `xlb0`
    // stands where xlb's interface would be; tcpdump records what arrives there.
    ns.exec(
        "ip link add cli numtxqueues 1 numrxqueues 1 type veth peer name xlb0 numtxqueues 1 numrxqueues 1 \
         && ip link set xlb0 address 02:00:0a:01:01:02 \
         && ip link set cli address 02:00:0a:01:01:14 \
         && ip addr add 10.1.1.20/24 dev cli \
         && ip link set lo up && ip link set cli up && ip link set xlb0 up \
         && ip neigh replace 10.1.1.10 lladdr 02:00:0a:01:01:02 dev cli nud permanent",
    );
    let capture = scratch("tcpdump-in.pcap");
    let mut tcpdump =
        Reaper(ns.spawn(&["tcpdump", "-i", "xlb0", "-U", "-n", "-w", capture.to_str().unwrap()]));
    // Wait until tcpdump is listening (it says so on stderr), at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !capture.exists() || std::fs::metadata(&capture).map(|m| m.len()).unwrap_or(0) < 24 {
        if Instant::now() >= deadline || tcpdump.0.try_wait().ok().flatten().is_some() {
            let _ = tcpdump.0.kill();
            let mut stderr = String::new();
            if let Some(mut pipe) = tcpdump.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("tcpdump did not start (bash scripts/setup installs it): {stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Real traffic from the kernel: TCP connects (SYNs, retransmitted), UDP datagrams, and an
    // ARP for some other host. Every command is bounded in time.
    ns.exec(
        "for i in 1 2 3; do echo query$i > /dev/udp/10.1.1.10/53; done; \
         for port in 41001 41002 41003; do \
           timeout 2 python3 -c \"import socket; s=socket.socket(); s.bind(('10.1.1.20', $port)); s.settimeout(0.3); s.connect_ex(('10.1.1.10', 80))\"; \
         done; \
         echo hello > /dev/udp/10.1.1.99/9; true",
    );
    std::thread::sleep(Duration::from_millis(1000));
    let _ = tcpdump.0.kill();
    let _ = tcpdump.0.wait();

    let output = scratch("tcpdump-out.pcap");
    let summary = replay_json(&capture, &output);
    let n = |key: &str| summary[key].as_u64().unwrap();
    assert!(n("packets") >= 7, "{summary}");
    let http: u64 = ["10.1.1.11:80", "10.1.1.12:80"]
        .iter()
        .map(|b| summary["backends"][b]["connections"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(http, 3, "three TCP connections (retransmits hit the tracked flows): {summary}");
    assert_eq!(summary["backends"]["10.1.1.12:53"]["connections"], 3, "{summary}");
    // tcpdump reads what xlb wrote, and sees the SYNs going to the real servers' MACs.
    let decoded = run("tcpdump", &["-nner", output.to_str().unwrap()]);
    assert!(decoded.status.success(), "tcpdump -r: {}", String::from_utf8_lossy(&decoded.stderr));
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert!(
        text.contains("02:00:0a:01:01:02 > 02:00:0a:01:01:0b")
            || text.contains("02:00:0a:01:01:02 > 02:00:0a:01:01:0c"),
        "{text}"
    );
    assert!(text.contains("10.1.1.10.80: Flags [S]"), "{text}");
}
