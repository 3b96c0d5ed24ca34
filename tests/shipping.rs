//! What an operator installing the package meets: `xlb run`'s log formats and start-up
//! line, the example config the package installs, and the man pages generated from the CLI.
//! None of these need root: `xlb run` stops at the config before it touches anything.

use std::path::Path;
use std::process::{Command, Output};

fn xlb(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xlb"));
    command.args(args).env("XLB_NO_HUGEPAGES", "1").env_remove("JOURNAL_STREAM");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running xlb")
}

fn missing_config() -> String {
    std::env::temp_dir()
        .join(format!("xlb-shipping-{}-missing.toml", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn run_logs_a_timestamped_start_up_line_with_version_and_config_then_why_it_stopped() {
    let config = missing_config();
    let out = xlb(&["run", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let version = env!("CARGO_PKG_VERSION");
    for (line, rest) in lines.iter().zip([
        format!("xlb: info: xlb {version} starting, config {config}"),
        format!("xlb: error: {config}: "),
    ]) {
        let (stamp, text) = line.split_once(' ').expect("a timestamp, then the line");
        // RFC 3339 UTC to the millisecond: 2026-12-06T00:58:53.123Z
        assert_eq!(stamp.len(), 24, "{line}");
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{line}");
        assert!(text.starts_with(&rest), "{line}");
    }
}

#[test]
fn run_logs_one_json_object_per_line() {
    let config = missing_config();
    let out = xlb(&["run", "--config", &config, "--log-format", "json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let objects: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    assert_eq!(objects.len(), 2, "{stderr}");
    assert_eq!(objects[0]["level"], "info");
    assert!(objects[0]["msg"].as_str().unwrap().contains(&format!("config {config}")));
    assert_eq!(objects[1]["level"], "error");
    assert!(objects.iter().all(|o| o["ts"].as_str().is_some_and(|ts| ts.ends_with('Z'))));
    let refused = xlb(&["run", "--config", &config, "--log-format", "yaml"], &[]);
    assert_eq!(refused.status.code(), Some(2), "clap refuses an unknown format");
}

#[test]
fn the_packaged_example_config_passes_check() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/xlb.toml");
    let out = xlb(&["check", "--config", config.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_pages_are_generated_for_xlb_and_xlb_ctl() {
    let dir = std::env::temp_dir().join(format!("xlb-shipping-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = xlb(&["man", "--out", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let xlb_8 = read("xlb.8");
    let version = env!("CARGO_PKG_VERSION");
    assert!(xlb_8.contains(&format!(".TH xlb 8  \"xlb {version}\"")), "{xlb_8}");
    for word in [".SS \"xlb run\"", ".SS \"xlb check\"", ".SS \"xlb ctl\"", "log\\-format"] {
        assert!(xlb_8.contains(word), "xlb.8 lacks {word}");
    }
    // Issue 14: the real servers' decapsulator has its section and options.
    for word in [".SS \"xlb decap\"", "gue\\-port", "\\-\\-detach"] {
        assert!(xlb_8.contains(word), "xlb.8 lacks {word}");
    }
    assert!(!xlb_8.contains("corpus"), "hidden subcommands stay out of the page");
    let ctl_8 = read("xlb-ctl.8");
    assert!(ctl_8.contains(&format!(".TH xlb-ctl 8  \"xlb {version}\"")), "{ctl_8}");
    for verb in ["\\-A", "\\-L", "\\-R", "\\-\\-socket"] {
        assert!(ctl_8.contains(verb), "xlb-ctl.8 lacks {verb}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A network namespace of the test's own with a bridge device in it (bridges have no
/// native XDP, so xlb falls back to generic XDP), deleted on drop with what ran in it.
struct BridgeLab {
    ns: String,
    device: String,
    scratch: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl BridgeLab {
    fn new() -> BridgeLab {
        let pid = std::process::id();
        let lab = BridgeLab {
            ns: format!("xlb-{pid}-ship"),
            device: format!("xb{pid}"),
            scratch: std::env::temp_dir().join(format!("xlb-{pid}-ship")),
            child: None,
        };
        std::fs::create_dir_all(&lab.scratch).unwrap();
        let ns = lab.ns.as_str();
        let device = lab.device.as_str();
        for args in [
            vec!["netns", "add", ns],
            vec!["-n", ns, "link", "set", "lo", "up"],
            vec!["-n", ns, "link", "add", device, "type", "bridge"],
            vec!["-n", ns, "addr", "add", "10.9.0.2/24", "dev", device],
            vec!["-n", ns, "link", "set", device, "up"],
        ] {
            let status = Command::new("ip").args(&args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        }
        lab
    }
}

impl Drop for BridgeLab {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Issue 15 (shipping): under `NOTIFY_SOCKET`, `xlb run` says READY=1 (with its PID) when
/// the ready file appears, which is when the control socket is up; RELOADING=1 then READY=1
/// around a SIGHUP; STOPPING=1 on SIGTERM; the ready file is gone after exit. And the log
/// says why native XDP was refused when it falls back to generic.
#[test]
fn run_notifies_systemd_and_logs_the_generic_fallback() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    if !xlb::testkit::root_or_skip("run_notifies_systemd_and_logs_the_generic_fallback") {
        return;
    }
    let mut lab = BridgeLab::new();
    let dir = lab.scratch.clone();
    let config = dir.join("xlb.toml");
    std::fs::write(
        &config,
        format!(
            "[[interface]]\nname = \"{}\"\naddr = \"10.9.0.2/24\"\n[conntrack]\ncapacity = 4096\n\
             [[service]]\nvip = \"10.9.0.10\"\nport = 80\nproto = \"tcp\"\n\
             [service.health]\ncheck = \"none\"\n[[service.backend]]\naddr = \"10.9.0.11\"\n",
            lab.device
        ),
    )
    .unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (ready, socket, log) = (dir.join("ready"), dir.join("xlb.sock"), dir.join("log"));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns, env!("CARGO_BIN_EXE_xlb"), "run", "--cores", "1"])
        .args(["--config", &path(&config), "--ready-file", &path(&ready)])
        .args(["--socket", &path(&socket), "--state", &path(&dir.join("state"))])
        .args(["--tap-prefix", &format!("xt{}-", std::process::id())])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("XLB_NO_HUGEPAGES", "1")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    lab.child = Some(child);
    let receive = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let first = receive();
    assert!(first.starts_with(&format!("READY=1\nMAINPID={pid}\n")), "{first:?}");
    assert!(ready.exists(), "READY=1 comes with the ready file");
    assert!(socket.exists(), "the control socket is up before the ready file and READY=1");
    let signal = |name: &str| {
        assert!(Command::new("kill").args([name, &pid.to_string()]).status().unwrap().success())
    };
    signal("-HUP");
    assert!(receive().starts_with("RELOADING=1\n"));
    let again = receive();
    assert!(
        again.starts_with(&format!("READY=1\nMAINPID={pid}\nSTATUS=ready: config generation")),
        "{again:?}"
    );
    signal("-TERM");
    assert!(receive().starts_with("STOPPING=1\n"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = lab.child.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "xlb did not stop in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    lab.child = None;
    assert!(status.success(), "{status:?}");
    assert!(!ready.exists(), "the ready file is removed on exit");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!("xlb: warn: {}: native XDP refused (", lab.device))
            && log.contains("falling back to generic XDP"),
        "{log}"
    );
    assert!(log.contains("XDP Generic mode"), "{log}");
}
