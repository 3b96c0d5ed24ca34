//! `xlb run` end to end, for what the labs do not show: several queues served by several
//! workers (with NAT replies arriving on another queue than their flow's), a config reload
//! under SIGHUP (on one worker serving both queues of each interface; bad configs of several
//! kinds refused whole, the table and the traffic unchanged), and a killed xlb leaving
//! nothing attached and a restart binding at once.
//!
//! Root only (network namespaces, XDP, AF_XDP). Each test builds its own namespaces named
//! `xlb-<pid>-<test>-…`, removed by a guard on every exit path, panics included. Traffic is
//! UDP request/response from `lab/udp.py`, bounded in count and time.
//!
//! Topology (NAT, two arms, two queues on every veth):
//!
//! ```text
//!   client 10.2.0.100 ── ethc [lb: xlb, 10.2.0.2 | 10.3.0.2] ethr ── rs 10.3.0.11 :5001 :5002
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use xlb::testkit::root_or_skip;

fn sh(args: &[&str]) -> Output {
    let output = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The namespaces of one test, deleted on drop (and the processes started in them killed).
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    scratch: PathBuf,
}

impl Lab {
    fn new(test: &str) -> Lab {
        let prefix = format!("xlb-{}-{test}", std::process::id());
        let scratch = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        Lab { prefix, namespaces: Vec::new(), children: Vec::new(), scratch }
    }

    fn ns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        sh(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// A veth with two queues each end between `a` (named `a_if`) and `b` (`b_if`), up,
    /// checksum offload off (AF_XDP must see whole checksums).
    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        let q = ["numtxqueues", "2", "numrxqueues", "2"];
        let mut args = vec!["ip", "-n", a, "link", "add", a_if];
        args.extend_from_slice(&q);
        args.extend_from_slice(&["type", "veth", "peer", "name", b_if]);
        args.extend_from_slice(&q);
        args.extend_from_slice(&["netns", b]);
        sh(&args);
        for (ns, ifname) in [(a, a_if), (b, b_if)] {
            sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
            self.exec(ns, &["ethtool", "-K", ifname, "tx", "off", "gso", "off", "tso", "off"]);
        }
    }

    fn spawn(&mut self, ns: &str, args: &[&str], stdout: Stdio, stderr: Stdio) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn in namespace");
        self.children.push(child);
        self.children.len() - 1
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The NAT topology above; returns (lab, client ns, lb ns).
fn nat_lab(test: &str) -> (Lab, String, String) {
    let mut lab = Lab::new(test);
    let client = lab.ns("client");
    let lb = lab.ns("lb");
    let rs = lab.ns("rs");
    lab.veth(&client, "eth0", &lb, "ethc");
    lab.veth(&rs, "eth0", &lb, "ethr");
    sh(&["ip", "-n", &client, "addr", "add", "10.2.0.100/24", "dev", "eth0"]);
    sh(&["ip", "-n", &client, "route", "add", "default", "via", "10.2.0.2"]);
    sh(&["ip", "-n", &lb, "addr", "add", "10.2.0.2/24", "dev", "ethc"]);
    sh(&["ip", "-n", &lb, "addr", "add", "10.3.0.2/24", "dev", "ethr"]);
    // Two real servers as two ports of one namespace.
    sh(&["ip", "-n", &rs, "addr", "add", "10.3.0.11/24", "dev", "eth0"]);
    sh(&["ip", "-n", &rs, "route", "add", "default", "via", "10.3.0.2"]);
    let udp = repo().join("lab/udp.py");
    let udp = udp.to_str().expect("utf-8 path");
    for (name, port) in [("rs1", "5001"), ("rs2", "5002")] {
        lab.spawn(
            &rs,
            &["python3", udp, "serve", "--name", name, "--port", port],
            Stdio::null(),
            Stdio::null(),
        );
    }
    (lab, client, lb)
}

/// The NAT service with backends 10.3.0.11:`port` for each port given (5001 is rs1, 5002 rs2).
fn nat_config(backends: &[u16]) -> String {
    let mut text = String::from(
        r#"
[[interface]]
name = "ethc"
addr = "10.2.0.2/24"

[[interface]]
name = "ethr"
addr = "10.3.0.2/24"

[[service]]
vip = "10.2.0.10"
port = 53
proto = "udp"
forward = "nat"
scheduler = "rr"
"#,
    );
    for port in backends {
        text.push_str(&format!("[[service.backend]]\naddr = \"10.3.0.11\"\nport = {port}\n"));
    }
    text
}

/// Starts `xlb run` in `lb` and waits (bounded) until it is ready; returns the child's index.
fn start_xlb(lab: &mut Lab, lb: &str, config: &Path, cores: &str, tag: &str) -> usize {
    start_xlb_with(lab, lb, config, cores, tag, &[])
}

/// [`start_xlb`] with more `xlb run` arguments.
fn start_xlb_with(
    lab: &mut Lab,
    lb: &str,
    config: &Path,
    cores: &str,
    tag: &str,
    extra: &[&str],
) -> usize {
    let ready = lab.scratch.join(format!("ready-{tag}"));
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::File::create(lab.scratch.join(format!("xlb-{tag}.log"))).expect("log");
    let out = std::fs::File::create(lab.scratch.join(format!("xlb-{tag}.out"))).expect("out");
    let socket = lab.scratch.join(format!("ctl-{tag}.sock"));
    let mut args = vec![
        env!("CARGO_BIN_EXE_xlb"),
        "run",
        "--config",
        config.to_str().expect("utf-8"),
        "--cores",
        cores,
        "--ready-file",
        ready.to_str().expect("utf-8"),
        "--socket",
        socket.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let index = lab.spawn(lb, &args, out.into(), log.into());
    let started = Instant::now();
    while !ready.exists() {
        if let Ok(Some(status)) = lab.children[index].try_wait() {
            panic!(
                "xlb exited early ({status}): {}",
                read(&lab.scratch.join(format!("xlb-{tag}.log")))
            );
        }
        assert!(started.elapsed() < Duration::from_secs(15), "xlb not ready in 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    index
}

/// Sends SIGTERM and waits (bounded) for a clean exit; returns (stdout, stderr).
fn stop_xlb(lab: &mut Lab, index: usize, tag: &str) -> (String, String) {
    let pid = lab.children[index].id().to_string();
    // `ip netns exec` execs xlb, so the child's PID is xlb's.
    sh(&["kill", "-TERM", &pid]);
    let started = Instant::now();
    loop {
        if let Some(status) = lab.children[index].try_wait().expect("wait") {
            assert!(status.success(), "xlb exited with {status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "xlb did not stop in 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        read(&lab.scratch.join(format!("xlb-{tag}.out"))),
        read(&lab.scratch.join(format!("xlb-{tag}.log"))),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `count` UDP request/responses from the client to the VIP; returns who answered each
/// ("rs1", "rs2", or "fail …").
fn ask(lab: &Lab, client: &str, count: usize) -> Vec<String> {
    let udp = repo().join("lab/udp.py");
    let output = lab.exec(
        client,
        &[
            "timeout",
            "60",
            "python3",
            udp.to_str().expect("utf-8"),
            "ask",
            "--addr",
            "10.2.0.10",
            "--port",
            "53",
            "--count",
            &count.to_string(),
            "--timeout",
            "1",
        ],
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| match line.strip_prefix("ok ") {
            Some(rest) => rest.split_whitespace().next().unwrap_or("").to_string(),
            None => line.to_string(),
        })
        .collect()
}

/// The number after `key` in xlb's per-core figures line of `core`.
fn figure(log: &str, core: usize, key: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(&format!("core {core}: rx ")))
        .unwrap_or_else(|| panic!("no figures for core {core} in:\n{log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == key).unwrap_or_else(|| panic!("no {key} in {line}"));
    words[at + 1].parse().expect("a number")
}

#[test]
fn two_queues_two_workers_and_nat_replies_found_across_cores() {
    if !root_or_skip("two_queues_two_workers") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("mq");
    let config = lab.scratch.join("xlb.toml");
    std::fs::write(&config, nat_config(&[5001, 5002])).unwrap();
    let xlb = start_xlb(&mut lab, &lb, &config, "2", "mq");
    let answers = ask(&lab, &client, 60);
    let (table, log) = stop_xlb(&mut lab, xlb, "mq");

    let failed: Vec<&String> = answers.iter().filter(|a| !a.starts_with("rs")).collect();
    assert!(failed.is_empty(), "failed requests {failed:?}\n{log}");
    assert_eq!(answers.len(), 60);
    assert!(log.contains("ethc queue 1: AF_XDP socket bound"), "{log}");
    assert!(log.contains("ready: 2 worker(s)"), "{log}");
    // Both workers received frames; replies whose queue differed from their request's were
    // found in the other core's table.
    assert!(figure(&log, 0, "rx") > 0 && figure(&log, 1, "rx") > 0, "{log}");
    let cross = figure(&log, 0, "cross-core") + figure(&log, 1, "cross-core");
    assert!(cross > 0, "no reply crossed cores in 60 flows:\n{log}");
    assert!(table.contains("UDP  10.2.0.10:53"), "{table}");
    let conns: u64 = table
        .lines()
        .filter(|l| l.trim_start().starts_with("->") && l.contains(':'))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    assert_eq!(conns, 60, "{table}");
}

#[test]
fn sighup_applies_a_new_config_and_a_bad_one_changes_nothing() {
    if !root_or_skip("sighup") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("hup");
    let config = lab.scratch.join("xlb.toml");
    std::fs::write(&config, nat_config(&[5001])).unwrap();
    let metrics = ["--metrics", "127.0.0.1:9100"];
    let xlb = start_xlb_with(&mut lab, &lb, &config, "1", "hup", &metrics);
    let answers = ask(&lab, &client, 5);
    assert!(answers.iter().all(|a| a == "rs1"), "{answers:?}");

    // Prometheus text, inside the lb's namespace (rendered once a second).
    std::thread::sleep(Duration::from_millis(1300));
    let scrape = lab.exec(&lb, &["curl", "-s", "--max-time", "2", "http://127.0.0.1:9100/metrics"]);
    let text = String::from_utf8_lossy(&scrape.stdout);
    assert!(text.contains("\nnode_ipvs_connections_total 5\n"), "{text}");
    assert!(
        text.contains(r#"node_ipvs_backend_weight{local_address="10.2.0.10",local_port="53",remote_address="10.3.0.11",remote_port="5001",proto="UDP",local_mark=""} 1"#),
        "{text}"
    );
    assert!(text.contains("xlb_batch_duration_seconds{core=\"0\",quantile=\"0.99\"}"), "{text}");

    let pid = lab.children[xlb].id().to_string();
    std::fs::write(&config, nat_config(&[5002])).unwrap();
    sh(&["kill", "-HUP", &pid]);
    std::thread::sleep(Duration::from_millis(300));
    let answers = ask(&lab, &client, 5);
    assert!(answers.iter().all(|a| a == "rs2"), "new flows follow the reload: {answers:?}");

    // Bad configs, each refused whole: the table (`-S -n`) and the traffic stay as they were.
    let saved = ctl(&lab, "hup", &["-S", "-n"], None);
    assert_eq!(saved.0, 0, "{saved:?}");
    let good = nat_config(&[5002]);
    let bad = [
        ("not TOML", "this is not toml".to_string()),
        ("an unknown scheduler", good.replace("scheduler = \"rr\"", "scheduler = \"fastest\"")),
        (
            "a backend that is no address",
            good.replace("addr = \"10.3.0.11\"", "addr = \"10.3.0.300\""),
        ),
        ("another interface", good.replace("name = \"ethr\"", "name = \"eth9\"")),
        ("binary junk", String::from_utf8_lossy(&[0xff, 0x00, 0xfe, 0x5b, 0x5b]).into_owned()),
    ];
    for (count, (what, text)) in bad.iter().enumerate() {
        assert_ne!(text, &good, "{what}: the config must change");
        std::fs::write(&config, text).unwrap();
        sh(&["kill", "-HUP", &pid]);
        let log = lab.scratch.join("xlb-hup.log");
        let started = Instant::now();
        while read(&log).matches("reload refused, nothing changed").count() <= count {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what}: not refused:\n{}",
                read(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let answers = ask(&lab, &client, 5);
        assert!(answers.iter().all(|a| a == "rs2"), "{what} changes nothing: {answers:?}");
        assert_eq!(ctl(&lab, "hup", &["-S", "-n"], None), saved, "{what}: the table changed");
    }
    let (_, log) = stop_xlb(&mut lab, xlb, "hup");
    assert!(log.contains("config applied (config file re-read): generation 2"), "{log}");
    assert_eq!(log.matches("reload refused, nothing changed").count(), bad.len(), "{log}");
    assert!(!log.contains("generation 3"), "no bad config was applied:\n{log}");
}

#[test]
fn a_killed_xlb_leaves_no_xdp_program_and_a_restart_binds_at_once() {
    if !root_or_skip("killed") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("kill");
    let config = lab.scratch.join("xlb.toml");
    std::fs::write(&config, nat_config(&[5001])).unwrap();
    let xlb = start_xlb(&mut lab, &lb, &config, "2", "first");
    let link =
        |lab: &Lab| String::from_utf8_lossy(&lab.exec(&lb, &["ip", "link"]).stdout).into_owned();
    assert!(link(&lab).contains("xdp"), "attached while running");
    lab.children[xlb].kill().expect("SIGKILL");
    lab.children[xlb].wait().expect("reaped");
    let after = link(&lab);
    assert!(!after.contains("xdp"), "a killed xlb left an XDP program:\n{after}");

    // Straight away: the queues may still be closing (EBUSY is retried).
    let again = start_xlb(&mut lab, &lb, &config, "2", "second");
    let answers = ask(&lab, &client, 10);
    assert!(answers.iter().all(|a| a == "rs1"), "{answers:?}");
    stop_xlb(&mut lab, again, "second");
    assert!(!link(&lab).contains("xdp"), "a stopped xlb left an XDP program");
}

#[test]
fn a_failed_backend_is_drained_after_fall_and_rejoins_after_rise() {
    if !root_or_skip("health") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("health");
    let config = lab.scratch.join("xlb.toml");
    // UDP checks every 200 ms: down after 2 failures, back after 2 successes.
    let health =
        "[service.health]\ncheck = \"udp\"\ninterval = 0.2\ntimeout = 0.1\nrise = 2\nfall = 2\n";
    let text = nat_config(&[5001, 5002]).replacen(
        "[[service.backend]]",
        &format!("{health}\n[[service.backend]]"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let xlb = start_xlb(&mut lab, &lb, &config, "1", "health");
    let answers = ask(&lab, &client, 10);
    assert!(answers.iter().filter(|a| *a == "rs1").count() >= 3, "{answers:?}");

    // rs1's server goes away (its child index in `nat_lab` is 0).
    lab.children[0].kill().expect("stop rs1");
    lab.children[0].wait().expect("reaped");
    std::thread::sleep(Duration::from_millis(1500));
    let answers = ask(&lab, &client, 20);
    assert!(
        answers.iter().all(|a| a == "rs2"),
        "after detection only rs2, no failures: {answers:?}"
    );

    // rs1 comes back and takes its share again.
    let udp = repo().join("lab/udp.py");
    let rs = format!("{}-rs", lab.prefix);
    lab.spawn(
        &rs,
        &["python3", udp.to_str().unwrap(), "serve", "--name", "rs1", "--port", "5001"],
        Stdio::null(),
        Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let answers = ask(&lab, &client, 20);
    assert!(answers.iter().all(|a| a.starts_with("rs")), "{answers:?}");
    assert!(answers.iter().filter(|a| *a == "rs1").count() >= 5, "rs1 rejoined: {answers:?}");
    let (_, log) = stop_xlb(&mut lab, xlb, "health");
    assert!(log.contains("warn: health:"), "the down transition is logged:\n{log}");
    assert!(log.contains("info: health:"), "the up transition is logged:\n{log}");
}

/// `xlb ctl` against this lab's running xlb; returns (status, stdout, stderr).
fn ctl(lab: &Lab, tag: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let socket = lab.scratch.join(format!("ctl-{tag}.sock"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["ctl", "--socket", socket.to_str().expect("utf-8")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xlb ctl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or("").as_bytes()).expect("write stdin");
    drop(input);
    let output = child.wait_with_output().expect("xlb ctl ran");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The operator's session of issue 4: add a service and its servers at run time, watch
/// `--stats`, drain one, save, clear and restore — and a refused change changes nothing.
#[test]
fn an_operator_session_through_xlb_ctl() {
    if !root_or_skip("ctl") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("ctl");
    let config = lab.scratch.join("xlb.toml");
    let interfaces_only = nat_config(&[]);
    let interfaces_only = &interfaces_only[..interfaces_only.find("[[service]]").unwrap()];
    std::fs::write(&config, interfaces_only).unwrap();
    let xlb = start_xlb(&mut lab, &lb, &config, "1", "ctl");
    let ok = |(status, out, err): (i32, String, String)| {
        assert_eq!(status, 0, "stdout {out}\nstderr {err}");
        out
    };

    ok(ctl(&lab, "ctl", &["-A", "-u", "10.2.0.10:53", "-s", "rr"], None));
    for port in ["5001", "5002"] {
        let server = format!("10.3.0.11:{port}");
        ok(ctl(&lab, "ctl", &["-a", "-u", "10.2.0.10:53", "-r", &server, "-m", "-w", "1"], None));
    }
    let answers = ask(&lab, &client, 10);
    assert_eq!(answers.iter().filter(|a| *a == "rs1").count(), 5, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| *a == "rs2").count(), 5, "{answers:?}");

    // -c lists the ten UDP flows, from the connection tables themselves.
    let conns = ok(ctl(&lab, "ctl", &["-L", "-n", "-c"], None));
    let flows = conns
        .lines()
        .filter(|l| {
            l.starts_with("UDP") && l.contains(" 10.2.0.100:") && l.contains(" 10.2.0.10:53 ")
        })
        .count();
    assert_eq!(flows, 10, "{conns}");

    std::thread::sleep(Duration::from_millis(300)); // a worker report (every 100 ms)
    let stats = ok(ctl(&lab, "ctl", &["-L", "-n", "--stats"], None));
    let service = stats.lines().find(|l| l.starts_with("UDP  10.2.0.10:53")).expect(&stats);
    assert_eq!(service.split_whitespace().nth(2), Some("10"), "{stats}");

    // Drain rs1: new flows go to rs2 only.
    ok(ctl(
        &lab,
        "ctl",
        &["-e", "-u", "10.2.0.10:53", "-r", "10.3.0.11:5001", "-m", "-w", "0"],
        None,
    ));
    let answers = ask(&lab, &client, 6);
    assert!(answers.iter().all(|a| a == "rs2"), "{answers:?}");

    // A refused change (DR server on a NAT service) leaves everything as it was.
    let saved = ok(ctl(&lab, "ctl", &["-S", "-n"], None));
    let (status, _, err) =
        ctl(&lab, "ctl", &["-a", "-u", "10.2.0.10:53", "-r", "10.3.0.11:5003", "-g"], None);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("forwards by nat"), "{err}");
    assert_eq!(ok(ctl(&lab, "ctl", &["-S", "-n"], None)), saved);

    // -C then -R restores the same table.
    ok(ctl(&lab, "ctl", &["-C"], None));
    assert!(ask(&lab, &client, 2).iter().all(|a| a.starts_with("fail")), "no service after -C");
    ok(ctl(&lab, "ctl", &["-R"], Some(&saved)));
    assert_eq!(ok(ctl(&lab, "ctl", &["-S", "-n"], None)), saved);
    let answers = ask(&lab, &client, 4);
    assert!(answers.iter().all(|a| a == "rs2"), "drained rs1 stays drained: {answers:?}");
    stop_xlb(&mut lab, xlb, "ctl");
}

/// Issue 10, item 4: accounting follows each backend's identity through routine changes.
/// Two UDP services; the first is deleted (`-D`), which renumbers the second's backends.
/// `-L -n` counts UDP flows as InActConn (IPVS: only established TCP is active), `--stats`
/// right after the change still shows the counters, the flows' expiry gives every count
/// back, and `-Z` survives a later change.
#[test]
fn accounting_follows_backends_through_a_deleted_service() {
    if !root_or_skip("accounting") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("acct");
    let config = lab.scratch.join("xlb.toml");
    let second = nat_config(&[5001, 5002]);
    let at = second.find("[[service]]").unwrap();
    // The first service: :54, one backend; then the lab's :53 service over rs1 and rs2.
    let text = format!(
        "{}[conntrack]\nudp_timeout = 2\n\n[[service]]\nvip = \"10.2.0.10\"\nport = 54\n\
         proto = \"udp\"\nforward = \"nat\"\n[[service.backend]]\naddr = \"10.3.0.11\"\n\
         port = 5001\n\n{}",
        &second[..at],
        &second[at..]
    );
    std::fs::write(&config, text).unwrap();
    let xlb = start_xlb(&mut lab, &lb, &config, "1", "acct");
    let ok = |(status, out, err): (i32, String, String)| {
        assert_eq!(status, 0, "stdout {out}\nstderr {err}");
        out
    };
    // (ActiveConn, InActConn) of rs1 and rs2 in the :53 service, from `-L -n`.
    let connections = |listing: &str| -> Vec<(u64, u64)> {
        let service = listing.find("UDP  10.2.0.10:53").expect(listing);
        ["10.3.0.11:5001", "10.3.0.11:5002"]
            .iter()
            .map(|server| {
                let line = listing[service..].lines().find(|l| l.contains(server)).expect(listing);
                let words: Vec<u64> =
                    line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
                (words[words.len() - 2], words[words.len() - 1])
            })
            .collect()
    };
    let conns = |stats: &str| -> String {
        let line = stats.lines().find(|l| l.starts_with("UDP  10.2.0.10:53")).expect(stats);
        line.split_whitespace().nth(2).unwrap_or("").to_string()
    };

    let answers = ask(&lab, &client, 10);
    assert_eq!(answers.iter().filter(|a| *a == "rs1" || *a == "rs2").count(), 10, "{answers:?}");
    let listing = ok(ctl(&lab, "acct", &["-L", "-n"], None));
    assert_eq!(connections(&listing), [(0, 5), (0, 5)], "UDP flows are inactive\n{listing}");
    std::thread::sleep(Duration::from_millis(300)); // a worker report (every 100 ms)

    ok(ctl(&lab, "acct", &["-D", "-u", "10.2.0.10:54"], None));
    let stats = ok(ctl(&lab, "acct", &["-L", "-n", "--stats"], None));
    assert_eq!(conns(&stats), "10", "right after the change\n{stats}");

    // The flows expire (udp_timeout 2 s) and give their counts back.
    std::thread::sleep(Duration::from_secs(4));
    let listing = ok(ctl(&lab, "acct", &["-L", "-n"], None));
    assert_eq!(connections(&listing), [(0, 0), (0, 0)], "after expiry\n{listing}");
    let answers = ask(&lab, &client, 4);
    assert_eq!(answers.iter().filter(|a| *a == "rs1").count(), 2, "rr after expiry: {answers:?}");

    // -Z, then a change elsewhere: the zeroed counters stay zeroed.
    std::thread::sleep(Duration::from_millis(300));
    ok(ctl(&lab, "acct", &["-Z"], None));
    ok(ctl(
        &lab,
        "acct",
        &["-e", "-u", "10.2.0.10:53", "-r", "10.3.0.11:5002", "-m", "-w", "2"],
        None,
    ));
    std::thread::sleep(Duration::from_millis(300));
    let stats = ok(ctl(&lab, "acct", &["-L", "-n", "--stats"], None));
    assert_eq!(conns(&stats), "0", "-Z kept across a change\n{stats}");
    stop_xlb(&mut lab, xlb, "acct");
}

/// Issue 10, item 5: a least-time service gets its response times without a new snapshot
/// (before, it republished the whole config every second, resetting every core's
/// scheduler state, rebuilding every table and clearing `-Z`).
#[test]
fn a_least_time_service_does_not_republish_the_snapshot() {
    if !root_or_skip("lt_publish") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("lt");
    let config = lab.scratch.join("xlb.toml");
    std::fs::write(&config, nat_config(&[5001, 5002]).replace("\"rr\"", "\"lt\"")).unwrap();
    let xlb = start_xlb_with(&mut lab, &lb, &config, "1", "lt", &["--metrics", "127.0.0.1:9100"]);
    let answers = ask(&lab, &client, 4);
    assert!(answers.iter().all(|a| a == "rs1" || a == "rs2"), "{answers:?}");
    std::thread::sleep(Duration::from_millis(3000));
    // Rendered once a second; a render waited for every core to run the latest snapshot.
    let mut generation = None;
    for _ in 0..30 {
        let url = "http://127.0.0.1:9100/metrics";
        let scrape = lab.exec(&lb, &["curl", "-s", "--max-time", "2", url]);
        let text = String::from_utf8_lossy(&scrape.stdout).into_owned();
        generation =
            text.lines().find_map(|l| l.strip_prefix("xlb_config_generation ")).map(str::to_string);
        if generation.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let generation = generation.expect("no metrics rendered within 6 s");
    assert_eq!(generation, "1", "the snapshot was republished");
    let (_, log) = stop_xlb(&mut lab, xlb, "lt");
    assert!(!log.contains("config applied"), "{log}");
}

/// A state file saying the TCP service 10.2.0.10:80's backends 10.3.0.11:`ports` were up in
/// the previous run (weight 1), so `xlb run --state` admits them at once instead of probing
/// them first; returns its path.
fn kept_up(lab: &Lab, ports: &[u16]) -> String {
    let path = lab.scratch.join("xlb.state");
    let lines: String = ports
        .iter()
        .map(|port| format!("backend 10.2.0.10:80/tcp 10.3.0.11:{port} up weight 1 1\n"))
        .collect();
    std::fs::write(&path, lines).expect("state file");
    path.to_str().expect("utf-8").to_string()
}

/// Passive health checks: a backend whose port is closed resets every connection; after
/// `passive_fall` resets it is taken out without waiting for an active probe.
/// Python's HTTP server in `ns` on 0.0.0.0:`port`, serving "web\n" at `/`.
fn serve_web(lab: &mut Lab, ns: &str, port: &str) {
    let web = lab.scratch.join(format!("web-{port}"));
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("index.html"), "web\n").unwrap();
    // 0.0.0.0: a named address costs a reverse DNS lookup that times out here.
    let directory = web.to_str().expect("utf-8").to_string();
    let serve =
        ["python3", "-m", "http.server", "--bind", "0.0.0.0", "--directory", &directory, port];
    lab.spawn(ns, &serve, Stdio::null(), Stdio::null());
}

/// One GET of the NAT lab's VIP from `client`, within `max_time` seconds: true if "web\n"
/// came back.
fn fetch_web(client: &str, max_time: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", client, "curl", "-sS", "--max-time", max_time])
        .arg("http://10.2.0.10/")
        .output()
        .expect("curl");
    out.status.success() && out.stdout == b"web\n"
}

/// A hung backend: its listener's accept queue is full, so its kernel drops every new SYN
/// and the clients send theirs again. xlb counts each SYN sent again on an unanswered flow;
/// `passive_fall` of them take the backend out long before the 30 s active probe would.
#[test]
fn a_backend_that_never_answers_syns_is_taken_out_by_passive_checks() {
    if !root_or_skip("passive_syn") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("psyn");
    let rs = format!("{}-rs", lab.prefix);
    serve_web(&mut lab, &rs, "5080");
    // Listen with a backlog of 0 and never accept; one local connection fills the queue.
    let hung = "import socket, time\n\
                s = socket.socket()\n\
                s.bind(('0.0.0.0', 6001))\n\
                s.listen(0)\n\
                c = socket.create_connection(('127.0.0.1', 6001))\n\
                print('full', flush=True)\n\
                time.sleep(120)\n";
    lab.spawn(&rs, &["python3", "-c", hung], Stdio::null(), Stdio::null());
    let config = lab.scratch.join("xlb.toml");
    let text = nat_config(&[]).replace("port = 53\nproto = \"udp\"", "port = 80\nproto = \"tcp\"")
        + "[service.health]\ncheck = \"tcp\"\ninterval = 30\ntimeout = 1\nfall = 3\npassive_fall = 3\n\
           [[service.backend]]\naddr = \"10.3.0.11\"\nport = 6001\n\
           [[service.backend]]\naddr = \"10.3.0.11\"\nport = 5080\n";
    std::fs::write(&config, text).unwrap();
    let started = Instant::now();
    let listening =
        |port: &str| String::from_utf8_lossy(&lab.exec(&rs, &["ss", "-ltn"]).stdout).contains(port);
    while !(listening(":5080") && listening(":6001")) {
        assert!(started.elapsed() < Duration::from_secs(20), "the servers never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both backends were up in the previous run (the state file): the hung one is admitted
    // without a first probe, and its traffic has to take it out.
    let state = kept_up(&lab, &[6001, 5080]);
    let xlb = start_xlb_with(&mut lab, &lb, &config, "1", "psyn", &["--state", &state]);

    // Each request to the hung backend waits past the client's first SYN retransmission (1 s).
    let curl = || fetch_web(&client, "1.6");
    let mut early_failures = 0;
    for _ in 0..12 {
        if !curl() {
            early_failures += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300)); // a report and a health round
    let late: Vec<bool> = (0..10).map(|_| curl()).collect();
    let (_, log) = stop_xlb(&mut lab, xlb, "psyn");
    assert!(
        late.iter().all(|ok| *ok),
        "after the passive fall every request works: {late:?}\n{log}"
    );
    assert!((3..=6).contains(&early_failures), "{early_failures} early failures\n{log}");
    assert!(
        log.contains("warn: health:")
            && log.contains("10.3.0.11:6001")
            && log.contains("a SYN went unanswered"),
        "{log}"
    );
}

#[test]
fn a_backend_that_resets_connections_is_taken_out_by_passive_checks() {
    if !root_or_skip("passive") {
        return;
    }
    let (mut lab, client, lb) = nat_lab("passive");
    let rs = format!("{}-rs", lab.prefix);
    serve_web(&mut lab, &rs, "5080");
    // 10.3.0.11:6000 has nothing listening: its kernel answers every SYN with a RST. The
    // active probe runs only every 30 s, so what takes it out is the traffic.
    let config = lab.scratch.join("xlb.toml");
    let text = nat_config(&[]).replace("port = 53\nproto = \"udp\"", "port = 80\nproto = \"tcp\"")
        + "[service.health]\ncheck = \"tcp\"\ninterval = 30\ntimeout = 1\nfall = 3\npassive_fall = 3\n\
           [[service.backend]]\naddr = \"10.3.0.11\"\nport = 6000\n\
           [[service.backend]]\naddr = \"10.3.0.11\"\nport = 5080\n";
    std::fs::write(&config, text).unwrap();
    // Both backends were up in the previous run (the state file), so the closed port is
    // admitted without a first probe.
    let state = kept_up(&lab, &[6000, 5080]);
    let xlb = start_xlb_with(&mut lab, &lb, &config, "1", "passive", &["--state", &state]);
    let started = Instant::now();
    while !String::from_utf8_lossy(&lab.exec(&rs, &["ss", "-ltn"]).stdout).contains(":5080") {
        assert!(started.elapsed() < Duration::from_secs(20), "the HTTP server never listened");
        std::thread::sleep(Duration::from_millis(100));
    }

    let curl = || fetch_web(&client, "2");
    let mut early_failures = 0;
    for _ in 0..10 {
        if !curl() {
            early_failures += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // a report and a health round
    let late: Vec<bool> = (0..10).map(|_| curl()).collect();
    let (_, log) = stop_xlb(&mut lab, xlb, "passive");
    assert!(
        late.iter().all(|ok| *ok),
        "after the passive fall every request works: {late:?}\n{log}"
    );
    assert!((1..=5).contains(&early_failures), "{early_failures} early failures\n{log}");
    assert!(log.contains("warn: health:") && log.contains("10.3.0.11:6000"), "{log}");
}
