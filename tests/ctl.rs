//! `xlb ctl` as an operator runs it: the real binary against a control socket served by
//! [`ipvsadm::handle`] on a thread, the way `xlb run`'s control loop serves it; and
//! `xlb check --against`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use xlb::control::ipvsadm::{self, CtlState, Daemon, ListOptions, ListView, ServiceId};
use xlb::control::socket::CtlServer;
use xlb::control::{Config, Snapshot};
use xlb::dataplane::BackendCounters;

/// A scratch directory, removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xlb-ctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stands in for `xlb run`: installs snapshots, reports made-up figures.
struct FakeDaemon {
    snapshot: Snapshot,
}

impl Daemon for FakeDaemon {
    fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    fn view(&mut self, options: &ListOptions) -> ListView {
        let n = self.snapshot.backends.len();
        ListView {
            options: *options,
            counters: vec![
                BackendCounters {
                    connections: 5,
                    in_packets: 50,
                    in_bytes: 5000,
                    out_packets: 0,
                    out_bytes: 0
                };
                n
            ],
            active: vec![2; n],
            inactive: vec![1; n],
            ..ListView::default()
        }
    }
    fn install(&mut self, config: &Config) -> Result<(), String> {
        self.snapshot = Snapshot::build(config, self.snapshot.generation + 1)
            .map_err(|error| error.to_string())?;
        Ok(())
    }
    fn zero(&mut self, _service: Option<ServiceId>) {}
}

/// A control socket served on a thread until dropped.
struct Served {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Config>>,
}

impl Served {
    fn start(scratch: &Scratch, config: Config) -> Served {
        let path = scratch.0.join("run").join("xlb.sock");
        let server = CtlServer::bind(&path).expect("binds");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let snapshot = Snapshot::build(&config, 1).unwrap();
            let mut state = CtlState { config, daemon: FakeDaemon { snapshot } };
            while !stopping.load(Ordering::Relaxed) {
                server.poll(|request| ipvsadm::handle(&mut state, request));
                std::thread::sleep(Duration::from_millis(2));
            }
            state.config
        });
        Served { path, stop, thread: Some(thread) }
    }

    fn ctl(&self, args: &str, stdin: Option<&str>) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xlb"));
        command.arg("ctl").arg("--socket").arg(&self.path).args(args.split_whitespace());
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("xlb runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &str, stdin: Option<&str>) -> String {
        let output = self.ctl(args, stdin);
        assert!(
            output.status.success(),
            "xlb ctl {args}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Stops serving and returns the config the handler ended with.
    fn finish(mut self) -> Config {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn example(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    Config::load(&path).unwrap()
}

#[test]
fn ctl_changes_lists_saves_and_restores_through_the_socket() {
    let scratch = Scratch::new("round-trip");
    let original = example("dr.toml");
    let served = Served::start(&scratch, original.clone());

    let listing = served.ok("-L -n", None);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines[1], "Prot LocalAddress:Port Scheduler Flags");
    assert_eq!(lines[3], "TCP  10.1.1.100:80 maglev");
    assert!(lines[4].starts_with("  -> 10.1.1.11:80                 Route   2      2          1"));

    served.ok("-A -t 10.1.1.101:443 -s wrr", None);
    served.ok("-a -t 10.1.1.101:443 -r 10.1.1.11 -g -w 3", None);
    let listing = served.ok("-Ln -t 10.1.1.101:443", None);
    assert!(listing.contains("TCP  10.1.1.101:443 wrr\n"), "{listing}");
    assert!(listing.contains("  -> 10.1.1.11:443"), "{listing}");
    let stats = served.ok("-L -n --stats", None);
    assert!(stats.contains("Conns   InPkts  OutPkts  InBytes OutBytes"), "{stats}");

    // A refused change says why, exits 1 and changes nothing.
    let output = served.ctl("-a -t 10.1.1.101:443 -r 10.1.1.12:8443 -m", None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("service 10.1.1.101:443/tcp forwards by dr; xlb sets the forwarding"),
        "{stderr}"
    );
    // A bad command line is caught before the daemon, exit 2.
    let output = served.ctl("-A -t 10.1.1.101:443 -s nope", None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("-s nope"));

    // -S, -C, -R: the same services again.
    let saved = served.ok("-S -n", None);
    assert!(saved.contains("-a -t 10.1.1.101:443 -r 10.1.1.11:443 -g -w 3\n"), "{saved}");
    served.ok("-C", None);
    assert_eq!(served.ok("-S", None), "");
    served.ok("-R", Some(&saved));
    assert_eq!(served.ok("-S -n", None), saved);
    // A restore with one bad line changes nothing.
    let output = served.ctl("-R", Some("-D -t 10.1.1.101:443\n-D -t 10.1.1.99:80\n"));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(served.ok("-S -n", None), saved);

    served.ok("-D -t 10.1.1.101:443", None);
    assert_eq!(served.finish().services, original.services);
}

#[test]
fn ctl_without_a_daemon_says_so() {
    let scratch = Scratch::new("absent");
    let output = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["ctl", "--socket"])
        .arg(scratch.0.join("xlb.sock"))
        .args(["-L", "-n"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is `xlb run` running?"));
}

#[test]
fn check_against_counts_the_maglev_slots_that_move() {
    let scratch = Scratch::new("check");
    std::fs::create_dir_all(&scratch.0).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The 2:1:0 web service becomes 2:2:0: the second server's share goes from a third to a
    // half, so a sixth of the slots move.
    let text = std::fs::read_to_string(dir.join("examples/dr.toml")).unwrap();
    let changed = text.replacen(
        "addr = \"10.1.1.12\"\n  weight = 1",
        "addr = \"10.1.1.12\"\n  weight = 2",
        1,
    );
    assert_ne!(changed, text);
    let new = scratch.0.join("new.toml");
    std::fs::write(&new, changed).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .current_dir(dir)
        .args(["check", "--config", "examples/dr.toml", "--against"])
        .arg(&new)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let web = stdout.lines().find(|l| l.starts_with("service tcp 10.1.1.100:80: ")).unwrap();
    let moved: u64 = web.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!((10_000..11_500).contains(&moved), "{web}");
    assert!(
        stdout.contains("service udp 10.1.1.100:53: 0 of 65537 slots move (0.00%)"),
        "{stdout}"
    );
}
