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
    // Every window measures its own offered load (the report shows it for each).
    if line["probe"]["offered_mpps"].as_f64().is_none_or(|mpps| mpps <= 0.0) {
        problems.push(format!("{name}: no offered load measured: {}", line["probe"]));
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
        r#"{"row":"null","proto":"udp","busy_poll":{"on":false,"napi":"","rx_packets":0},"sink":{"traffic":true,"window":{"good":5},"total_bad":0,"total":{}},"gen":{"sent":9},"probe":{"offered_mpps":0.9}}"#,
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
    assert_eq!(window_problems(&bad).len(), 6, "and no busy_poll record, no probe");
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

/// Runs `bench/sidebyside_report.py --where ROW DIR SINK_JSON 1` on the files `files` (name,
/// contents) in a fresh directory; its stdout, or None where python3 is missing.
fn where_section(row: &str, files: &[(&str, &str)], sink: &str) -> Option<String> {
    report_tool(row, &["--where", row, "{dir}", sink, "1"], files).map(|(stdout, _)| stdout)
}

/// The profile step's raw files, as perf and xlb write them, become the row's "Where the time
/// goes": threads with their hottest functions, syscalls per good frame, per received frame
/// and per receive batch, frames per batch and their distribution. The quick mode profiles
/// nothing, so this is what checks that path before a full run.
#[test]
fn profile_files_become_per_frame_and_per_batch_figures() {
    let perf_stat = "# started on Sat Dec  5 18:16:59 2026\n\n\
        xlb-worker-0-900,1800,,raw_syscalls:sys_enter,2000000000,100.00,,\n\
        xlb-900,200,,raw_syscalls:sys_enter,2000000000,100.00,,\n\
        xlb-worker-0-900,1500,,syscalls:sys_enter_sendto,2000000000,100.00,,\n\
        xlb-worker-0-900,100,,syscalls:sys_enter_poll,2000000000,100.00,,\n\
        xlb-worker-0-900,0,,syscalls:sys_enter_recvfrom,2000000000,100.00,,\n\
        xlb-900,<not counted>,,syscalls:sys_enter_futex,0,0,,\n";
    let before = "# HELP xlb_port_rx_packets_total Frames.\n\
        xlb_port_rx_packets_total{core=\"0\",interface=\"lg\"} 1000\n\
        xlb_port_tx_packets_total{core=\"0\",interface=\"ls\"} 1000\n\
        xlb_port_batches_total{core=\"0\",interface=\"lg\"} 50\n\
        xlb_port_rx_batches_by_size_total{core=\"0\",interface=\"lg\",size=\"1\"} 50\n\
        xlb_port_rx_batches_by_size_total{core=\"0\",interface=\"lg\",size=\"32-63\"} 50\n";
    let after = "xlb_port_rx_packets_total{core=\"0\",interface=\"lg\"} 101000\n\
        xlb_port_tx_packets_total{core=\"0\",interface=\"ls\"} 91000\n\
        xlb_port_batches_total{core=\"0\",interface=\"lg\"} 5050\n\
        xlb_port_send_no_frame_total{core=\"0\",interface=\"ls\"} 10000\n\
        xlb_port_rx_batches_by_size_total{core=\"0\",interface=\"lg\",size=\"1\"} 1050\n\
        xlb_port_rx_batches_by_size_total{core=\"0\",interface=\"lg\",size=\"32-63\"} 4050\n";
    let files = [
        ("seconds", "2\n"),
        ("comm.txt", "    57.00%  napi/xlb-1-lg-8\n    36.00%  xlb-worker-0\n"),
        ("symbols.txt", "    20.00%  [k] memcpy\n"),
        ("threads.txt", "    57.00%     812:napi/xlb-1-lg-8\n    36.00%     900:xlb-worker-0\n"),
        (
            "thread-900.txt",
            "    30.00%  xlb  [.] xlb::dataplane::pipeline::Pipeline::process_batch\n",
        ),
        ("syscalls.csv", perf_stat),
        ("metrics.before", before),
        ("metrics.before.t", "1700000000.0\n"),
        ("metrics.after", after),
        ("metrics.after.t", "1700000001.0\n"),
    ];
    // 0.1 Mpps of good frames over 2 s: 200k frames; xlb received 100k frames/s in 5k batches/s.
    let Some(text) = where_section("xlb-dr", &files, r#"{"mpps":0.1}"#) else { return };
    for expected in [
        "### xlb-dr (UDP, peak): core 1, 2 s of the window",
        "- 36.00% 900:xlb-worker-0",
        "xlb::dataplane::pipeline::Pipeline::process_batch",
        "| sendto | 1500 | 750 | 0.0075 | 0.0075 | 0.150 |",
        "| poll | 100 | 50 | 0.0005 | 0.0005 | 0.010 |",
        "| other | 400 | 200 | 0.0020 | 0.0020 | 0.040 |",
        "| all | 2000 | 1,000 | 0.0100 | 0.0100 | 0.200 |",
        "**20.0 frames per batch**",
        "xlb_port_send_no_frame_total: +10,000",
        "| 1 | 1,000 | 20.0% |",
        "| 32-63 | 4,000 | 80.0% |",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // What could not be measured says so, and the rest still comes out.
    let files = [("seconds", "2\n"), ("syscalls.skipped", "no forwarding process\n")];
    let Some(text) = where_section("kernel-fwd", &files, r#"{"mpps":0.5}"#) else { return };
    assert!(text.contains("Not counted: no forwarding process."), "{text}");
    let Some(text) = where_section("null", &[("skipped", "perf is not installed\n")], "{}") else {
        return;
    };
    assert!(text.contains("Not profiled: perf is not installed."), "{text}");
    let files = [("seconds", "1\n"), ("syscalls.csv", perf_stat), ("metrics.after", "")];
    let Some(text) = where_section("xlb-nat", &files, r#"{"mpps":0.1}"#) else { return };
    assert!(text.contains("| sendto | 1500 | 1,500 | 0.0150 | – | – |"), "{text}");
    assert!(text.contains("No metrics: the scrape failed."), "{text}");
}

/// Runs `bench/sidebyside_report.py ARGS` with the files `files` (name, contents) in a fresh
/// directory whose path replaces `{dir}` in ARGS; (stdout, the files afterwards), or None
/// where python3 is missing.
fn report_tool(tag: &str, args: &[&str], files: &[(&str, &str)]) -> Option<(String, Vec<String>)> {
    let dir = std::env::temp_dir().join(format!("xlb-report-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).expect("fixture");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench").join("sidebyside_report.py");
    let args: Vec<String> =
        args.iter().map(|a| a.replace("{dir}", &dir.to_string_lossy())).collect();
    let out = match Command::new("python3").arg(&script).args(&args).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: python3: {e}");
            return None;
        }
    };
    let after = files
        .iter()
        .map(|(name, _)| std::fs::read_to_string(dir.join(name)).expect("the file is still there"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some((String::from_utf8_lossy(&out.stdout).into_owned(), after))
}

/// Two samples of a window, as `window_sample` writes them, become its probe: the offered load
/// from the generator's veth (frames its peer took plus those dropped for a full ring, per
/// second), each core's time by kind, each thread's share on a CPU and waiting, what no
/// listed thread accounts for, and each core's canary loop after the window.
#[test]
fn window_samples_become_offered_load_and_core_shares() {
    // 2 s apart; /proc/stat in ticks of 10 ms: 200 ticks a core.
    let before = "t 100.0\ngen_tx 1000 500\ncpu0 1000 0 1000 1000 0 0 0 0 0 0\n\
        cpu1 1000 0 1000 1000 0 0 0 0 0 0\non 0 gen sink_napi\non 1 lb_napi fwd\n\
        thread gen 1000000000 0 10\nthread sink_napi 0 0 0\nthread lb_napi 0 0 0\n";
    // Core 0: 100 user + 60 system + 40 steal; core 1: 150 user + 50 idle.
    let after = "t 102.0\ngen_tx 1801000 200500\ncpu0 1100 0 1060 1000 0 0 0 40 0 0\n\
        cpu1 1150 0 1000 1050 0 0 0 0 0 0\non 0 gen sink_napi\non 1 lb_napi fwd\n\
        thread gen 2200000000 400000000 30\nthread sink_napi 400000000 2000000 500\n\
        thread lb_napi 1000000000 200000000 90\nspeed 0 27.5\nspeed 1 0\n";
    let Some((stdout, _)) =
        report_tool("window", &["--window", "{dir}/a", "{dir}/b"], &[("a", before), ("b", after)])
    else {
        return;
    };
    let probe: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let expected = serde_json::json!({
        "seconds": 2.0,
        "offered_mpps": 1.0,
        "taken_mpps": 0.9,
        "cores": {
            "0": {"user": 0.5, "system": 0.3, "idle": 0.0, "irq": 0.0, "softirq": 0.0, "steal": 0.2, "other": 0.2},
            "1": {"user": 0.75, "system": 0.0, "idle": 0.25, "irq": 0.0, "softirq": 0.0, "steal": 0.0, "other": 0.25},
        },
        "threads": {
            "gen": {"cpu": 0.6, "wait": 0.2, "slices": 20},
            "sink_napi": {"cpu": 0.2, "wait": 0.001, "slices": 500},
            "lb_napi": {"cpu": 0.5, "wait": 0.1, "slices": 90},
        },
        // Core 1's canary failed (0): left out.
        "loop_ns": {"0": 27.5},
    });
    assert_eq!(probe, expected);
    // A sample that is missing (the sink never opened its window) gives no probe.
    let Some((stdout, _)) =
        report_tool("window-missing", &["--window", "{dir}/a", "{dir}/none"], &[("a", before)])
    else {
        return;
    };
    assert_eq!(stdout.trim(), "null");
}

/// Peak windows whose offered load differs by more than the tolerance, either way, from their
/// row's reference (same protocol; the median of the upper half of its windows) are marked
/// refused in place, and so are those after which a core's canary loop took more than 1.3
/// times its median over the run (a slow vCPU), each with its reason; xlb's DR, NAT and
/// FullNAT rows are judged against the null forwarder's reference where their own is lower
/// (the VM's slow state, however alike their own windows), so their fast windows are kept
/// and the slow ones refused; each row gets back the windows it lacks; a latency window (a
/// load) is never refused, and every other row is judged against its own best only.
#[test]
fn windows_offered_off_their_rows_reference_are_refused_and_redone() {
    // (row, proto, load, offered Mpps, core 1's canary loop ns, the reason it is refused)
    // Core 0's loop is 20 ns in every window; core 1's median over the run is 30 ns.
    type Window = (&'static str, &'static str, &'static str, f64, f64, Option<&'static str>);
    let table: [Window; 21] = [
        // Reference: the mean of the best two, 1.275; 95% of it, 1.211.
        ("null", "udp", "null", 1.30, 30.0, None),
        ("null", "udp", "null", 0.73, 30.0, Some("offered load")),
        ("null", "udp", "null", 1.25, 30.0, None),
        ("null", "tcp", "null", 0.73, 30.0, None),
        ("nft-dnat", "udp", "null", 0.45, 30.0, None),
        // 39 ns is just within 1.3 times 30; 40 is not.
        ("nft-dnat", "udp", "null", 0.44, 39.0, None),
        ("nft-dnat", "udp", "null", 0.45, 40.0, Some("slow core 1")),
        ("nft-dnat", "udp", "null", 0.20, 50.0, Some("offered load; slow core 1")),
        // One lucky window does not get the others refused: of four, the third best, 0.61;
        // it is refused itself (more than 5% above).
        ("kernel-fwd", "udp", "null", 0.60, 30.0, None),
        ("kernel-fwd", "udp", "null", 0.745, 30.0, Some("offered load")),
        ("kernel-fwd", "udp", "null", 0.61, 30.0, None),
        ("kernel-fwd", "udp", "null", 0.62, 30.0, None),
        // A latency window is never refused, however slow its core.
        ("xlb-dr", "udp", "0.5", 0.10, 60.0, None),
        // Three alike windows in the slow state: their row's reference (0.76) is below
        // null's (1.275), which judges them instead: refused (06g); the fast one is kept.
        ("xlb-dr", "udp", "null", 0.75, 30.0, Some("offered below null")),
        ("xlb-dr", "udp", "null", 1.27, 30.0, None),
        ("xlb-dr", "udp", "null", 0.74, 30.0, Some("offered below null")),
        ("xlb-dr", "udp", "null", 0.76, 30.0, Some("offered below null")),
        // 1.22 is within 5% of null's 1.275 and of xlb NAT's own reference, 1.26.
        ("xlb-nat", "udp", "null", 1.22, 30.0, None),
        ("xlb-nat", "udp", "null", 1.30, 30.0, None),
        // Offered more than null is no slow state; the -bp rows are never held to null.
        ("xlb-fullnat", "udp", "null", 1.40, 30.0, None),
        ("xlb-dr-bp", "udp", "null", 0.77, 30.0, None),
    ];
    let raw: String = table
        .iter()
        .map(|(row, proto, load, offered, loop_ns, _)| {
            format!(
                "{{\"row\":\"{row}\",\"proto\":\"{proto}\",\"load\":{load},\"gen\":{{\"mpps\":9}},\"probe\":{{\"offered_mpps\":{offered},\"loop_ns\":{{\"0\":20,\"1\":{loop_ns}}}}}}}\n"
            )
        })
        .collect();
    let Some((stdout, after)) = report_tool(
        "refuse",
        &["--refuse", "{dir}/raw.jsonl", "0.05", "3"],
        &[("raw.jsonl", &raw)],
    ) else {
        return;
    };
    let windows: Vec<serde_json::Value> =
        after[0].lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(windows.len(), table.len());
    for ((row, proto, load, offered, _, refused), window) in table.iter().zip(&windows) {
        let context = format!("{row} {proto} load {load} offered {offered}: {window}");
        assert_eq!(window["refused"].as_bool().unwrap_or(false), refused.is_some(), "{context}");
        assert_eq!(window["refused_why"].as_str(), *refused, "{context}");
    }
    // null udp and nft-dnat udp kept 2 of 3 (nft-dnat 2 of 4), null tcp 1 of 3, kernel-fwd
    // udp 3 of 4, xlb-dr udp 1 of 4, xlb-nat udp 2, xlb-fullnat and xlb-dr-bp udp 1.
    let mut redo: Vec<&str> = stdout.lines().collect();
    redo.sort_unstable();
    let mut expected = ["tcp null", "tcp null", "udp nft-dnat", "udp null"].to_vec();
    expected.extend(["udp xlb-dr"; 2]);
    expected.extend(["udp xlb-dr-bp", "udp xlb-dr-bp", "udp xlb-fullnat", "udp xlb-fullnat"]);
    expected.push("udp xlb-nat");
    expected.sort_unstable();
    assert_eq!(redo, expected);
}
