//! `xlb replay` and `xlb check` as a user runs them: the real binary, the bundled capture.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pcap_file::pcap::PcapReader;
use serde_json::Value;

fn xlb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("xlb runs")
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
    let dir = std::env::temp_dir().join(format!("xlb-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir.join(name))
}

/// `xlb replay` of the bundled seed-lab capture, writing to `out`; it must succeed.
fn replay_seed_lab(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let mut args =
        vec!["replay", "--config", "examples/seed-dr.toml", "--pcap", "examples/seed-dr.pcap"];
    args.extend(["--out", out]);
    args.extend(extra);
    let output = xlb(&args);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = PcapReader::new(file).unwrap();
    assert_eq!(reader.header().datalink, pcap_file::DataLink::ETHERNET);
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        frames.push(packet.unwrap().data.into_owned());
    }
    frames
}

#[test]
fn bundled_captures_are_what_the_generator_writes() {
    for (path, frames) in xlb::testkit::captures::bundled() {
        let mut expected = Vec::new();
        xlb::testkit::captures::write_pcap(&frames, &mut expected).unwrap();
        let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        assert!(
            committed == expected,
            "{path} is stale: run `cargo run --example make_captures` and commit it"
        );
    }
}

#[test]
fn replay_of_the_seed_lab_balances_and_counts_every_frame() {
    let out = scratch("seed-dr-out.pcap");
    let output = replay_seed_lab(&out, &["--json"]);
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let n = |key: &str| summary[key].as_u64().unwrap_or_else(|| panic!("{key} in {summary}"));
    let input_frames = read_pcap(Path::new("examples/seed-dr.pcap")).len() as u64;
    assert_eq!(n("packets"), input_frames);
    assert_eq!(n("packets"), n("tx") + n("pass") + n("drop") + n("held"), "one verdict per frame");
    assert_eq!(read_pcap(&out).len() as u64, n("written"));
    assert_eq!(n("written"), n("tx") + n("emitted"));
    assert_eq!(summary["drop_reasons"]["fragment"], 1, "{summary}");
    // ssh to the box, ARP for the box, and the real servers' two ARP replies (learned by
    // xlb, and left to the kernel too, which shares the box's address).
    assert_eq!(n("pass"), 4, "{summary}");
    // Both real servers took a fair share of the 41 HTTP connections.
    for backend in ["10.1.1.11:80", "10.1.1.12:80"] {
        let connections = summary["backends"][backend]["connections"].as_u64().unwrap();
        assert!((10..=31).contains(&connections), "{backend}: {connections} of 41 connections");
    }
    let http: u64 = ["10.1.1.11:80", "10.1.1.12:80"]
        .iter()
        .map(|b| summary["backends"][b]["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(http, 41);
    // xlb asked for each real server once, from its own address, and answered ARP for the VIP.
    assert_eq!(summary["stats"]["arp_requests_sent"], 2, "{summary}");
    assert_eq!(summary["stats"]["arp_replies_sent"], 1, "{summary}");
    assert_eq!(summary["stats"]["icmp_echo_replies"], 1, "{summary}");
}

#[test]
fn replay_prints_an_ipvsadm_like_table() {
    let out = scratch("seed-dr-table.pcap");
    let output = replay_seed_lab(&out, &[]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("TCP  10.1.1.10:80 maglev dr"), "{text}");
    assert!(text.contains("-> 10.1.1.11:80"), "{text}");
    assert!(text.contains("-> 10.1.1.12:80"), "{text}");
    assert!(text.contains("drops: fragment 1"), "{text}");
}

#[test]
fn a_bad_config_names_the_key_and_line_and_exits_2() {
    let config = scratch("bad.toml");
    std::fs::write(
        &config,
        "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.2/24\"\nmac = \"02:00:00:00:00:01\"\n\n[[service]]\nvip = \"10.1.1.10\"\nport = 80\nscheduler = \"fastest\"\n",
    )
    .unwrap();
    let output = xlb(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 9"), "{stderr}");
    assert!(stderr.contains("scheduler"), "{stderr}");
    assert!(stderr.contains("maglev"), "the accepted names are listed: {stderr}");
}

#[test]
fn a_missing_or_foreign_capture_is_a_clear_error() {
    let out = scratch("never.pcap");
    let output = xlb(&[
        "replay",
        "--config",
        "examples/seed-dr.toml",
        "--pcap",
        "/nonexistent.pcap",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.pcap"));

    let garbage = scratch("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture at all").unwrap();
    let output = xlb(&[
        "replay",
        "--config",
        "examples/seed-dr.toml",
        "--pcap",
        garbage.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("reading the input capture"));
}

#[test]
fn check_prints_the_plan_with_maglev_shares() {
    let output = xlb(&["check", "--config", "examples/seed-dr.toml"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("service tcp 10.1.1.10:80 scheduler maglev forward dr"), "{text}");
    // Two equal backends: each holds about half of the 65537 slots.
    assert!(text.contains("maglev share 50.00%") || text.contains("maglev share 49.99%"), "{text}");
}

/// Issue 10 (minor c): `xlb check` prints what the tables will take, and refuses a config
/// whose connection tables alone need more than the machine has, with the figures.
#[test]
fn check_states_the_memory_and_refuses_more_than_the_machine_has() {
    let output = xlb(&["check", "--config", "examples/seed-dr.toml"]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("memory about "), "{text}");
    let Some(total) = xlb::tuning::memory_total() else { return };
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-dr.toml"),
    )
    .unwrap();
    // The largest capacity accepted: far more than any test machine holds on its cores.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    if xlb::conntrack::Conntrack::memory_for(1 << 28) as u64 * cores <= total {
        return;
    }
    let dir = std::env::temp_dir().join(format!("xlb-check-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.toml");
    std::fs::write(&path, format!("{base}\n[conntrack]\ncapacity = {}\n", 1u64 << 28)).unwrap();
    let output = xlb(&["check", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the config needs about"), "{stderr}");
    assert!(stderr.contains("GiB per worker core"), "{stderr}");
    assert!(stderr.contains("more than this machine's"), "{stderr}");
}

/// The README's run command (`scripts/demo`) replays files that exist.
#[test]
fn the_demo_script_names_files_that_exist() {
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"))
            .unwrap();
    let words: Vec<&str> = script.split_whitespace().collect();
    let mut named = 0;
    for pair in words.windows(2) {
        if pair[0] == "--config" || pair[0] == "--pcap" {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(pair[1]);
            assert!(path.exists(), "scripts/demo names {} which does not exist", pair[1]);
            named += 1;
        }
    }
    assert_eq!(named, 2, "scripts/demo passes --config and --pcap");
}
