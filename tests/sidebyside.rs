//! `bench/sidebyside` end to end, in its tiny bounded mode (`--quick`: one 1-second window
//! per row, no latency runs, no profiles): every row (xlb DR, NAT and FullNAT, the null
//! forwarder, xlb DR and the null forwarder with busy polling forced on, kernel forwarding, nftables DNAT, XDP redirect), over UDP and TCP, must get
//! frames to the sink, every frame the sink saw must be what the row should deliver, the
//! script must print its PASS line and leave none of its namespaces behind. No rate is
//! asserted: the machine's two cores are shared. The busy-polling rows must engage (a NAPI
//! id on the receiving socket, through a marker on veth, and BusyPollRxPackets rising).
//!
//! Root only (network namespaces, XDP, AF_XDP): skipped with a message otherwise, unless
//! `XLB_REQUIRE_ROOT_TESTS=1`, when not being root is a failure.

use std::path::Path;
use std::process::Command;

/// The run is stopped after this (SIGTERM: its trap still cleans up).
const TIMEOUT_SECONDS: &str = "400";

const ROWS: [&str; 9] = [
    "xlb-dr",
    "xlb-nat",
    "xlb-fullnat",
    "null",
    "xlb-dr-bp",
    "null-bp",
    "kernel-fwd",
    "nft-dnat",
    "xdp-redirect",
];

fn may_run() -> bool {
    xlb::testkit::root_or_skip("bench/sidebyside")
}

/// The `xlb-<pid>` prefix the script prints on its first line.
fn prefix_of(stdout: &str) -> Option<&str> {
    let prefix = stdout.split("prefix ").nth(1)?.split_whitespace().next()?;
    let pid = prefix.strip_prefix("xlb-")?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(prefix)
}

/// Problems with one window's JSON line, as `bench/sidebyside --quick` prints them.
fn window_problems(line: &serde_json::Value) -> Vec<String> {
    let name = format!("{} {}", line["row"], line["proto"]);
    let sink = &line["sink"];
    let mut problems = Vec::new();
    if sink["traffic"] != true {
        problems.push(format!("{name}: no frame reached the sink"));
    }
    if sink["window"]["good"].as_u64().unwrap_or(0) == 0 {
        problems.push(format!("{name}: no good frame in the window"));
    }
    if sink["total_bad"].as_u64() != Some(0) {
        problems.push(format!("{name}: bad frames: {}", sink["total"]));
    }
    if line["gen"]["sent"].as_u64().unwrap_or(0) == 0 {
        problems.push(format!("{name}: the generator sent nothing"));
    }
    // The AF_XDP rows ran in the busy-poll mode their name says (-bp: forced on).
    let row = line["row"].as_str().unwrap_or("");
    if row.starts_with("xlb-") || row.starts_with("null") {
        let on = &line["busy_poll"]["on"];
        if on.as_bool() != Some(row.ends_with("-bp")) {
            problems.push(format!("{name}: busy polling on = {on}, not what the row says"));
        }
    }
    // And busy polling engaged there: the receiving socket (lg) has a NAPI id (on veth, its
    // marker's) and the kernel's BusyPollRxPackets rose.
    if row.ends_with("-bp") {
        let napi = line["busy_poll"]["napi"].as_str().unwrap_or("");
        let lg = napi.split(',').find(|s| s.split(':').next().is_some_and(|i| i.ends_with("-lg")));
        if lg.and_then(|s| s.rsplit('=').next()).is_none_or(|id| id == "0" || id.is_empty()) {
            problems.push(format!("{name}: the receiving socket has no NAPI id: {napi:?}"));
        }
        if line["busy_poll"]["rx_packets"].as_u64().unwrap_or(0) == 0 {
            problems.push(format!("{name}: BusyPollRxPackets did not rise"));
        }
    }
    problems
}

#[test]
fn window_lines_are_judged() {
    let good: serde_json::Value = serde_json::from_str(
        r#"{"row":"null","proto":"udp","busy_poll":{"on":false,"napi":"","rx_packets":0},"sink":{"traffic":true,"window":{"good":5},"total_bad":0,"total":{}},"gen":{"sent":9}}"#,
    )
    .unwrap();
    assert!(window_problems(&good).is_empty());
    let mut bp = good.clone();
    bp["row"] = "null-bp".into();
    assert_eq!(window_problems(&bp).len(), 3, "null-bp ran without busy polling, unengaged");
    bp["busy_poll"]["on"] = true.into();
    assert_eq!(window_problems(&bp).len(), 2, "on, but no NAPI id and no busy-polled frame");
    bp["busy_poll"]["napi"] = "xlb-9-lg:0=0,xlb-9-ls:0=0".into();
    bp["busy_poll"]["rx_packets"] = 1200.into();
    assert_eq!(window_problems(&bp).len(), 1, "the receiving socket has no NAPI id");
    bp["busy_poll"]["napi"] = "xlb-9-lg:0=2130,xlb-9-ls:0=0".into();
    assert!(window_problems(&bp).is_empty(), "{:?}", window_problems(&bp));
    let bad: serde_json::Value = serde_json::from_str(
        r#"{"row":"null","proto":"udp","sink":{"traffic":false,"window":{"good":0},"total_bad":2,"total":{}},"gen":{"sent":0}}"#,
    )
    .unwrap();
    assert_eq!(window_problems(&bad).len(), 5, "and no busy_poll record");
    assert_eq!(prefix_of("lab sidebyside: prefix xlb-77 (namespaces"), Some("xlb-77"));
    assert_eq!(prefix_of("lab sidebyside: prefix xlb-7x (namespaces"), None);
}

#[test]
fn sidebyside_quick_every_row_delivers_only_good_frames() {
    if !may_run() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench").join("sidebyside");
    let out = Command::new("timeout")
        .args([TIMEOUT_SECONDS, "bash"])
        .arg(&script)
        .args(["--quick", "--protos", "udp tcp"])
        .env("XLB", env!("CARGO_BIN_EXE_xlb"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let transcript =
        format!("--- stdout\n{stdout}--- stderr\n{}", String::from_utf8_lossy(&out.stderr));
    let prefix = prefix_of(&stdout).unwrap_or_else(|| panic!("no prefix printed\n{transcript}"));
    let netns = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let left = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .count();
    assert_eq!(left, 0, "namespaces left behind\n{transcript}");
    let windows: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let mut problems: Vec<String> = windows.iter().flat_map(window_problems).collect();
    for proto in ["udp", "tcp"] {
        for row in ROWS {
            if !windows.iter().any(|w| w["row"] == row && w["proto"] == proto) {
                problems.push(format!("{row} {proto}: no window"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n{transcript}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && last.starts_with("lab sidebyside: PASS ("),
        "{}\n{transcript}",
        out.status
    );
}
