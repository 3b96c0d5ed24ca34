//! `xlb replay` on captures written by other tools: scapy (crafted frames, checked again by
//! scapy on the way out) and tcpdump (real kernel traffic captured in a namespace of the
//! test's own); the same in IPv6 (issue 12); and tunnel mode (issue 14), its IPIP and GUE output
//! checked by scapy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CONFIG: &str = "tests/interop/interop.toml";
/// The same for IPv6 (issue 12).
const CONFIG6: &str = "tests/interop/interop6.toml";
/// Tunnel services, IPIP and GUE (issue 14).
const CONFIG_TUNNEL: &str = "tests/interop/interop_tunnel.toml";
const CONFIG_TUNNEL6: &str = "tests/interop/interop_tunnel6.toml";

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
        // The directory is this scratch file's own (its siblings, such as a replay's
        // verdicts file, go with it): a directory shared by the tests running in parallel
        // could be removed, empty, just before another test's tcpdump writes into it.
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A file `name` in a directory of its own (`xlb-interop-PID-NAME`), removed on drop.
fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("xlb-interop-{}-{name}", std::process::id()));
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

/// `xlb replay --json --verdicts` of `input` under `config`: the summary, whose counts must be
/// the verdicts the replay wrote, frame by frame, by kind and by drop reason.
fn replay_json(config: &str, input: &Path, output: &Path) -> Value {
    let verdicts = output.with_extension("verdicts");
    let out = run(
        env!("CARGO_BIN_EXE_xlb"),
        &[
            "replay",
            "--config",
            config,
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
    assert!(
        out.status.success(),
        "xlb replay --config {config}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let skipped = lines.lines().filter(|v| v.starts_with("skip:")).count();
    let skipped_counted: u64 =
        summary["skipped"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    assert_eq!(skipped as u64, skipped_counted, "one skip line per skipped frame: {summary}");
    assert_eq!(
        summary["packets"],
        lines.lines().count() - skipped,
        "one verdict per frame the pipeline saw: {summary}"
    );
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
    let summary = scapy_round_trip("tests/interop/scapy_frames.py", CONFIG, "scapy", &[]);
    let n = |key: &str| summary[key].as_u64().unwrap();
    assert_eq!(n("packets"), 30, "{summary}");
    assert_eq!(summary["drop_reasons"]["fragment_no_first"], 1, "{summary}");
    assert_eq!(summary["drop_reasons"]["ip_options"], 1, "{summary}");
    assert_eq!(n("pass"), 1, "ssh to the box: {summary}");
}

/// `script write` a capture, `xlb replay` it under `config`, `script check` what xlb
/// transmitted (which must pass), then each of `more_checks` (`script MODE OUTPUT`, which
/// must pass too); the replay's summary.
fn scapy_round_trip(script: &str, config: &str, name: &str, more_checks: &[&str]) -> Value {
    let input = scratch(&format!("{name}-in.pcap"));
    let output = scratch(&format!("{name}-out.pcap"));
    let written = run("python3", &[script, "write", input.to_str().unwrap()]);
    assert!(
        written.status.success(),
        "scapy could not write the capture (bash scripts/setup installs scapy): {}",
        String::from_utf8_lossy(&written.stderr)
    );
    let summary = replay_json(config, &input, &output);
    for mode in std::iter::once(&"check").chain(more_checks) {
        let checked = run("python3", &[script, mode, output.to_str().unwrap()]);
        assert!(
            checked.status.success(),
            "scapy {mode} of xlb's output failed:\n{}{}\n{summary}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    summary
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

/// A namespace of this test's own where both ends of a veth live: `cli` (10.1.1.20) is a
/// real kernel client, `xlb0` stands where xlb's interface would be (the VIP 10.1.1.10's
/// MAC); tcpdump records what arrives there.
fn client_namespace(purpose: &str) -> Netns {
    let ns = Netns::create(purpose);
    ns.exec(
        "ip link add cli numtxqueues 1 numrxqueues 1 type veth peer name xlb0 numtxqueues 1 numrxqueues 1 \
         && ip link set xlb0 address 02:00:0a:01:01:02 \
         && ip link set cli address 02:00:0a:01:01:14 \
         && ip addr add 10.1.1.20/24 dev cli \
         && ip link set lo up && ip link set cli up && ip link set xlb0 up \
         && ip neigh replace 10.1.1.10 lladdr 02:00:0a:01:01:02 dev cli nud permanent",
    );
    ns
}

/// Ends a child we started, by its PID, on drop.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tcpdump recording what arrives on `xlb0` in `ns` into `capture`, once it listens (at most
/// 10 s).
fn start_tcpdump(ns: &Netns, capture: &Scratch) -> Reaper {
    start_tcpdump_with(ns, capture, &["-i", "xlb0"])
}

/// tcpdump with `args` (the interface, the link type) recording into `capture`.
fn start_tcpdump_with(ns: &Netns, capture: &Scratch, args: &[&str]) -> Reaper {
    let mut command = vec!["tcpdump"];
    command.extend_from_slice(args);
    command.extend_from_slice(&["-U", "-n", "-w", capture.to_str().unwrap()]);
    let mut tcpdump = Reaper(ns.spawn(&command));
    // Wait until tcpdump is listening (it says so on stderr), at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !capture.exists() || std::fs::metadata(capture).map(|m| m.len()).unwrap_or(0) < 24 {
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
    tcpdump
}

#[test]
fn tcpdump_capture_of_real_kernel_traffic_replays() {
    if !xlb::testkit::root_or_skip("tcpdump capture replay (a network namespace)") {
        return;
    }
    let ns = client_namespace("tcpdump");
    let capture = scratch("tcpdump-in.pcap");
    let mut tcpdump = start_tcpdump(&ns, &capture);
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
    let summary = replay_json(CONFIG, &capture, &output);
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

/// Issue 15: what `tcpdump -i any` writes (Linux cooked frames, `LINUX_SLL2` by default and
/// `LINUX_SLL` with `-y`) replays like the capture of the interface itself: the same
/// connections to the same backends, the frames the namespace sent skipped as `outgoing`.
#[test]
fn tcpdump_any_capture_replays_like_the_interface_capture() {
    if !xlb::testkit::root_or_skip("tcpdump -i any capture replay (a network namespace)") {
        return;
    }
    let ns = client_namespace("any");
    let captures = [
        ("iface", scratch("any-iface.pcap"), vec!["-i", "xlb0"]),
        ("sll2", scratch("any-sll2.pcap"), vec!["-i", "any", "-y", "LINUX_SLL2"]),
        ("sll", scratch("any-sll.pcap"), vec!["-i", "any", "-y", "LINUX_SLL"]),
    ];
    let mut running: Vec<Reaper> =
        captures.iter().map(|(_, file, args)| start_tcpdump_with(&ns, file, args)).collect();
    ns.exec(
        "for i in 1 2 3; do echo query$i > /dev/udp/10.1.1.10/53; done; \
         for port in 41001 41002 41003; do \
           timeout 2 python3 -c \"import socket; s=socket.socket(); s.bind(('10.1.1.20', $port)); s.settimeout(0.3); s.connect_ex(('10.1.1.10', 80))\"; \
         done; true",
    );
    std::thread::sleep(Duration::from_millis(1000));
    for tcpdump in &mut running {
        let _ = tcpdump.0.kill();
        let _ = tcpdump.0.wait();
    }
    let summaries: Vec<(&str, Value)> = captures
        .iter()
        .map(|(name, file, _)| {
            (*name, replay_json(CONFIG, file, &scratch(&format!("any-{name}-out.pcap"))))
        })
        .collect();
    let connections = |summary: &Value| -> Vec<u64> {
        ["10.1.1.11:80", "10.1.1.12:80", "10.1.1.12:53"]
            .iter()
            .map(|b| summary["backends"][b]["connections"].as_u64().unwrap_or(0))
            .collect()
    };
    let (_, iface) = &summaries[0];
    assert_eq!(connections(iface).iter().sum::<u64>(), 6, "3 TCP + 3 UDP: {iface}");
    for (name, summary) in &summaries[1..] {
        assert_eq!(connections(summary), connections(iface), "{name}: {summary}");
        assert_eq!(summary["tx"], iface["tx"], "{name}: the same frames forwarded: {summary}");
        let outgoing = summary["skipped"]["outgoing"].as_u64().unwrap_or(0);
        assert!(outgoing >= 6, "{name}: what cli sent is skipped as outgoing: {summary}");
    }
}

/// Issue 12: an IPv6 capture written by scapy (NDP, DR, NAT both ways, FullNAT, ICMPv6 echo,
/// extension headers — a first fragment (issue 15), hop-by-hop, routing and destination
/// options forwarded in DR and NAT both ways — the box's own address) replays, and scapy accepts
/// xlb's output: fresh checksums (past the extension headers), hop limits (DR untouched,
/// NAT and FullNAT one less), the advertisement's flags and option.
#[test]
fn scapy_written_ipv6_capture_replays_and_scapy_accepts_the_output() {
    let summary = scapy_round_trip("tests/interop/scapy_frames6.py", CONFIG6, "scapy6", &[]);
    let n = |key: &str| summary[key].as_u64().unwrap();
    assert_eq!(n("packets"), 32, "{summary}");
    // Nothing is dropped: the first fragment, the hop-by-hop, routing and destination
    // options headers are forwarded (scapy checked them, and the checksums after them).
    assert_eq!(summary["drop_reasons"], serde_json::json!({}), "{summary}");
    assert_eq!(n("pass"), 1, "ssh to the box: {summary}");
}

/// Issue 14: a capture written by scapy to IPIP and GUE services (TCP SYNs and data, UDP,
/// eight flows each, packets at the MTU and one byte over it, with and without DF) replays,
/// and scapy accepts xlb's output: outer checksums as scapy computes them, the client's packet
/// byte for byte inside, outer sources and GUE source ports per flow, MACs of the real server
/// or the gateway, fragmentation needed for the too-big DF packets (tests/interop/scapy_tunnel.py);
/// and the check rejects broken copies of that output.
#[test]
fn scapy_written_tunnel_capture_replays_and_scapy_accepts_the_output() {
    // `mutants`: the check must also reject each of a list of broken copies of the output
    // (inner TTL, outer checksum, one source for all flows, a gateway's MAC, ...).
    let summary = scapy_round_trip(
        "tests/interop/scapy_tunnel.py",
        CONFIG_TUNNEL,
        "scapy-tunnel",
        &["mutants"],
    );
    let n = |key: &str| summary[key].as_u64().unwrap();
    // Per VIP: 8 flows of SYN and data, 8 UDP queries, 3 at or over the MTU.
    assert_eq!(n("packets"), 54, "{summary}");
    // The two too big without DF are cut in two, each piece wrapped (issue 15).
    assert_eq!(n("encapsulated"), 52, "{summary}");
    assert_eq!(summary["drop_reasons"]["tunnel_frag_needed"], 2, "{summary}");
    assert_eq!(summary["drop_reasons"].get("tunnel_too_big"), None, "{summary}");
    assert_eq!(n("emitted"), 56, "50 wrapped, 2 cut in two, the two answers: {summary}");
    assert_eq!(n("written"), 56, "{summary}");
}

/// Issue 12: the same for IPv6 tunnel services (tests/interop/scapy_tunnel6.py): IPv6-in-IPv6
/// and GUE over IPv6 (its UDP checksum as scapy computes it over the IPv6 pseudo-header),
/// the client's packet byte for byte inside, traffic class copied, flow labels, outer sources
/// and GUE source ports per flow, Packet Too Big for the too-big packets; and the check
/// rejects broken copies of that output.
#[test]
fn scapy_written_ipv6_tunnel_capture_replays_and_scapy_accepts_the_output() {
    let summary = scapy_round_trip(
        "tests/interop/scapy_tunnel6.py",
        CONFIG_TUNNEL6,
        "scapy-tunnel6",
        &["mutants"],
    );
    let n = |key: &str| summary[key].as_u64().unwrap();
    // Per VIP: 8 flows of SYN and data, 8 UDP queries, 2 at or over the MTU.
    assert_eq!(n("packets"), 52, "{summary}");
    assert_eq!(n("encapsulated"), 50, "{summary}");
    assert_eq!(summary["drop_reasons"]["tunnel_frag_needed"], 2, "{summary}");
    assert_eq!(n("emitted"), 52, "the wrapped packets and the two answers: {summary}");
    assert_eq!(n("written"), 52, "{summary}");
}

/// Issue 12: real IPv6 traffic from the kernel (TCP connects, UDP datagrams, and whatever a
/// link coming up sends: router solicitations, MLD reports, duplicate address detection),
/// captured by tcpdump, replays: the connections reach the real servers, the rest is the
/// kernel's.
#[test]
fn tcpdump_capture_of_real_ipv6_kernel_traffic_replays() {
    if !xlb::testkit::root_or_skip("tcpdump IPv6 capture replay (a network namespace)") {
        return;
    }
    let ns = Netns::create("tcpdump6");
    ns.exec(
        "ip link add cli numtxqueues 1 numrxqueues 1 type veth peer name xlb0 numtxqueues 1 numrxqueues 1 \
         && ip link set xlb0 address 02:00:0a:01:01:02 \
         && ip link set cli address 02:00:0a:01:01:14 \
         && ip -6 addr add 2001:db8:1::20/64 dev cli nodad \
         && ip link set lo up && ip link set cli up && ip link set xlb0 up \
         && ip -6 neigh replace 2001:db8:1::10 lladdr 02:00:0a:01:01:02 dev cli nud permanent",
    );
    let capture = scratch("tcpdump6-in.pcap");
    let mut tcpdump = start_tcpdump(&ns, &capture);
    ns.exec(
        "timeout 5 python3 -c \"
import socket
for i in range(3):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b'query%d' % i, ('2001:db8:1::10', 53))
for port in (41001, 41002, 41003):
    s = socket.socket(socket.AF_INET6)
    s.bind(('2001:db8:1::20', port))
    s.settimeout(0.3)
    s.connect_ex(('2001:db8:1::10', 80))
\"; true",
    );
    std::thread::sleep(Duration::from_millis(1000));
    let _ = tcpdump.0.kill();
    let _ = tcpdump.0.wait();

    let output = scratch("tcpdump6-out.pcap");
    let summary = replay_json(CONFIG6, &capture, &output);
    let n = |key: &str| summary[key].as_u64().unwrap();
    assert!(n("packets") >= 6, "{summary}");
    // Backends as `xlb replay` names them, brackets or not.
    let connections = |backend: &str| -> u64 {
        let Some(backends) = summary["backends"].as_object() else { return 0 };
        backends
            .iter()
            .filter(|(name, _)| name.replace(['[', ']'], "") == backend)
            .map(|(_, stats)| stats["connections"].as_u64().unwrap_or(0))
            .sum()
    };
    let http = connections("2001:db8:1::11:80") + connections("2001:db8:1::12:80");
    assert_eq!(http, 3, "three TCP connections (retransmits hit the tracked flows): {summary}");
    assert_eq!(connections("2001:db8:1::12:53"), 3, "{summary}");
    let decoded = run("tcpdump", &["-nner", output.to_str().unwrap()]);
    assert!(decoded.status.success(), "tcpdump -r: {}", String::from_utf8_lossy(&decoded.stderr));
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert!(
        text.contains("02:00:0a:01:01:02 > 02:00:0a:01:01:0b")
            || text.contains("02:00:0a:01:01:02 > 02:00:0a:01:01:0c"),
        "{text}"
    );
    assert!(text.contains("2001:db8:1::10.80: Flags [S]"), "{text}");
}
