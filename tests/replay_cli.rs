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

/// A scratch file of this run's, removed when the test that made it ends, pass or fail.
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
    }
}

/// A file named for this run and `name` in the temporary directory. No shared directory:
/// tests run in parallel, and one test removing a directory it thought empty raced another
/// test about to write into it.
fn scratch(name: &str) -> Scratch {
    Scratch(std::env::temp_dir().join(format!("xlb-test-{}-{name}", std::process::id())))
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
    let verdicts = scratch("seed-dr-verdicts.txt");
    let output = replay_seed_lab(&out, &["--json", "--verdicts", verdicts.to_str().unwrap()]);
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let n = |key: &str| summary[key].as_u64().unwrap_or_else(|| panic!("{key} in {summary}"));
    let input_frames = read_pcap(Path::new("examples/seed-dr.pcap")).len() as u64;
    assert_eq!(n("packets"), input_frames);
    // The counters against the verdicts the replay returned, one line per frame.
    let verdicts = std::fs::read_to_string(&*verdicts).unwrap();
    assert_eq!(verdicts.lines().count() as u64, input_frames, "one verdict per frame");
    for kind in ["tx", "pass", "drop", "held"] {
        let returned = verdicts.lines().filter(|v| v.split(':').next() == Some(kind)).count();
        assert_eq!(n(kind), returned as u64, "{kind}: {summary}");
    }
    // The capture's last frame is a UDP first fragment to the VIP: balanced (issue 15), so
    // nothing is dropped.
    assert_eq!(verdicts.lines().last(), Some("tx:0"), "{verdicts}");
    assert!(!verdicts.lines().any(|v| v.starts_with("drop")), "{verdicts}");
    assert_eq!(read_pcap(&out).len() as u64, n("written"));
    assert_eq!(n("written"), n("tx") + n("emitted"));
    assert_eq!(summary["drop_reasons"], serde_json::json!({}), "{summary}");
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
    assert!(!text.contains("drops:"), "the first fragment is balanced, not dropped: {text}");
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

/// A busy-poll marker port must be one a datagram can be sent to: 0 (which would bind an
/// ephemeral port nobody knows) is refused before anything starts, as the config refuses it.
#[test]
fn a_busy_poll_marker_port_of_zero_is_refused() {
    for args in [
        &["run", "--busy-poll-marker", "0", "--config", "/nonexistent"][..],
        &[
            "bench",
            "null",
            "--busy-poll-marker",
            "0",
            "--rx",
            "a",
            "--tx",
            "b",
            "--dst-mac",
            "02:00:00:00:00:01",
            "--vip",
            "10.0.0.1",
        ][..],
    ] {
        let output = xlb(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--busy-poll-marker"), "{args:?}: {stderr}");
    }
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

/// Issue 12: an IPv6 service is planned by `xlb check` beside the IPv4 ones and forwarded:
/// `replay` runs a config with one (the capture's IPv4 traffic goes through as before).
#[test]
fn ipv6_services_are_planned_and_replayed() {
    let config = scratch("dual.toml");
    std::fs::write(
        &config,
        "[[interface]]\nname = \"xlb-none0\"\naddr = \"10.1.1.2/24\"\n\
         addr6 = \"2001:db8:1::2/64\"\nmac = \"02:00:00:00:00:01\"\n\
         [[service]]\nvip = \"10.1.1.10\"\nport = 80\n\
         [[service.backend]]\naddr = \"10.1.1.11\"\n\
         [[service]]\nvip = \"2001:db8:1::10\"\nport = 80\nscheduler = \"wlc\"\n\
         [[service.backend]]\naddr = \"2001:db8:1::11\"\nweight = 2\n\
         [[service]]\nvip = \"2001:db8:1::10\"\nport = 443\nforward = \"tunnel\"\n\
         encap = \"gue\"\ntunnel_source = \"2001:db8:9::/64\"\n\
         [[service.backend]]\naddr = \"2001:db8:1::12\"\n",
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let output = xlb(&["check", "--config", path]);
    let text = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("interface xlb-none0 2001:db8:1::2/64\n"), "{text}");
    assert!(text.contains("service tcp 10.1.1.10:80 scheduler maglev forward dr\n"), "{text}");
    // IPv6 services with their Maglev shares, as IPv4's.
    assert!(
        text.contains(
            "service tcp [2001:db8:1::10]:80 scheduler wlc forward dr\n  -> [2001:db8:1::11]:80 \
             weight 2 fallback maglev share 100.00% (65537 of 65537 slots)\n"
        ),
        "{text}"
    );
    // An IPv6 tunnel service (issue 12) with its wrapping.
    assert!(
        text.contains(
            "service tcp [2001:db8:1::10]:443 scheduler maglev forward tunnel encap gue port \
             6080 source 2001:db8:9::/64\n  -> [2001:db8:1::12]:443 weight 1 maglev share \
             100.00% (65537 of 65537 slots)\n"
        ),
        "{text}"
    );
    assert!(!text.contains("not forwarded"), "{text}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    // --against compares IPv6 services too: a second real server on :80 takes about a
    // third of its slots (weight 1 beside 2); :443 and the IPv4 service are unchanged.
    let new = scratch("dual-new.toml");
    let changed = std::fs::read_to_string(&config).unwrap().replace(
        "addr = \"2001:db8:1::11\"\nweight = 2\n",
        "addr = \"2001:db8:1::11\"\nweight = 2\n[[service.backend]]\naddr = \"2001:db8:1::13\"\n",
    );
    std::fs::write(&new, changed).unwrap();
    let output = xlb(&["check", "--config", path, "--against", new.to_str().unwrap()]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let web = text.lines().find(|l| l.starts_with("service tcp [2001:db8:1::10]:80: ")).unwrap();
    let moved: u64 = web.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!((19_000..26_000).contains(&moved), "{web}");
    for unchanged in ["service tcp [2001:db8:1::10]:443: 0 of", "service tcp 10.1.1.10:80: 0 of"] {
        assert!(text.contains(unchanged), "{text}");
    }

    let out = scratch("dual-out.pcap");
    let output = xlb(&[
        "replay",
        "--config",
        path,
        "--pcap",
        "examples/seed-dr.pcap",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(out.exists(), "the output is written");
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

/// A DR service whose backends' MACs are known: every frame of [`write_stream_capture`] is
/// forwarded, and nothing is held.
const STREAM_CONFIG: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.2/24"
mac = "02:00:0a:01:01:02"
gateway = "10.1.1.1"

[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:0a:01:01:0b"
[[neighbor]]
ip = "10.1.1.12"
mac = "02:00:0a:01:01:0c"

[[service]]
vip = "10.1.1.10"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"
[[service.backend]]
addr = "10.1.1.12"
"#;

/// `frames` frames of 20 TCP connections to the VIP (a SYN each, then data of 300 bytes),
/// written one at a time.
fn write_stream_capture(path: &Path, frames: u32) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use xlb::testkit::{self, ACK, Host, SYN};
    let lb = xlb::wire::MacAddr([0x02, 0, 0x0a, 0x01, 0x01, 0x02]);
    let client = Host::new([0x02, 0, 0x0a, 0x01, 0x01, 0x64], [10, 1, 1, 100]);
    let vip = (std::net::Ipv4Addr::new(10, 1, 1, 10), 80);
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let header = PcapHeader { datalink: pcap_file::DataLink::ETHERNET, ..PcapHeader::default() };
    let mut writer = PcapWriter::with_header(file, header).unwrap();
    for i in 0..frames {
        let from = (client.ip, 40000 + (i % 20) as u16);
        let frame = if i < 20 {
            testkit::tcp(client.mac, lb, from, vip, SYN, &[])
        } else {
            testkit::tcp(client.mac, lb, from, vip, ACK, &[0x61; 300])
        };
        let at = std::time::Duration::from_secs(1_795_478_400)
            + std::time::Duration::from_micros(u64::from(i));
        writer.write_packet(&PcapPacket::new(at, frame.len() as u32, &frame)).unwrap();
    }
}

/// Runs `xlb replay --json --verdicts` and watches its peak resident set (`VmHWM`) while it
/// runs: the summary and the largest peak seen, in KiB.
fn replay_peak_kib(config: &Path, pcap: &Path, out: &Path, verdicts: &Path) -> (Value, u64) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .arg("replay")
        .arg("--json")
        .arg("--config")
        .arg(config)
        .arg("--pcap")
        .arg(pcap)
        .arg("--out")
        .arg(out)
        .arg("--verdicts")
        .arg(verdicts)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xlb runs");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_path)
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    (serde_json::from_str(&stdout).expect("one JSON object"), peak)
}

/// `xlb replay` streams the capture (read, process, write one frame at a time): its peak
/// memory on 200 000 frames (about 65 MB) is that on 20 000, within 4 MiB (reading the whole
/// capture first took 80 MiB more).
#[test]
fn replay_memory_does_not_grow_with_the_capture() {
    let config = scratch("stream.toml");
    std::fs::write(&config, STREAM_CONFIG).unwrap();
    let out = scratch("stream-out.pcap");
    let verdicts = scratch("stream-verdicts.txt");
    let mut peaks = Vec::new();
    for frames in [20_000u32, 200_000] {
        let input = scratch(&format!("stream-{frames}.pcap"));
        write_stream_capture(&input, frames);
        let (summary, peak) = replay_peak_kib(&config, &input, &out, &verdicts);
        assert_eq!(summary["packets"], frames, "{summary}");
        assert_eq!(summary["tx"], frames, "{summary}");
        assert_eq!(read_pcap(&out).len() as u64, u64::from(frames));
        let lines = std::fs::read_to_string(&*verdicts).unwrap();
        assert_eq!(lines.lines().count() as u64, u64::from(frames));
        assert!(lines.lines().all(|v| v == "tx:0"));
        peaks.push(peak);
    }
    eprintln!(
        "xlb replay peak RSS: {} KiB on 20 000 frames, {} KiB on 200 000",
        peaks[0], peaks[1]
    );
    assert!(peaks[0] > 0, "VmHWM was read");
    assert!(
        peaks[1] < peaks[0] + 4 * 1024,
        "peak RSS grew from {} KiB to {} KiB with the capture",
        peaks[0],
        peaks[1]
    );
}
