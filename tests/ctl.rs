//! `xlb ctl` as an operator runs it: the real binary against a control socket served by
//! [`ipvsadm::handle`] on a thread, the way `xlb run`'s control loop serves it; and
//! `xlb check --against`.
//!
//! The control plane under bad input (issue 6): malformed requests written raw to the
//! socket each get an error response and change nothing (`-S` before and after, and the
//! config the handler ends with); and, as root, a user other than root cannot connect at all
//! (skipped when not root, unless `XLB_REQUIRE_ROOT_TESTS=1`).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use xlb::control::ipvsadm::{self, CtlState, Daemon, ListOptions, ListView, ServiceId};
use xlb::control::socket::{CtlServer, MAX_REQUEST, REQUEST_DEADLINE, Request, Response};
use xlb::control::{Config, Snapshot};
use xlb::dataplane::BackendCounters;
use xlb::fleet::{FleetMode, VrrpState};
use xlb::testkit::root_or_skip;

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
    vrrp: VrrpState,
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
    fn fleet(&mut self, set: Option<VrrpState>) -> String {
        self.vrrp = set.unwrap_or(self.vrrp);
        xlb::fleet::describe(self.snapshot.fleet, self.vrrp)
    }
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
            let mut state =
                CtlState { config, daemon: FakeDaemon { snapshot, vrrp: VrrpState::Standby } };
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

/// keepalived's notify scripts: `xlb ctl --active`, `--standby` and `--fleet` through the
/// socket; a box not in `vrrp` mode refuses a state (exit 1) and says its mode.
#[test]
fn ctl_sets_and_shows_the_vrrp_state_through_the_socket() {
    let scratch = Scratch::new("fleet");
    let vrrp = Config { fleet: FleetMode::Vrrp, ..example("dr.toml") };
    let served = Served::start(&scratch, vrrp);
    assert_eq!(served.ok("--fleet", None), "fleet mode vrrp, state standby\n");
    assert_eq!(served.ok("--active", None), "fleet mode vrrp, state active\n");
    assert_eq!(served.ok("--fleet", None), "fleet mode vrrp, state active\n");
    assert_eq!(served.ok("--standby", None), "fleet mode vrrp, state standby\n");
    let output = served.ctl("--active -t 10.1.1.100:80", None);
    assert_eq!(output.status.code(), Some(2), "a bad command line, caught before the daemon");
    drop(served);

    let scratch = Scratch::new("fleet-standalone");
    let served = Served::start(&scratch, example("dr.toml"));
    let output = served.ctl("--standby", None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs [fleet] mode = \"vrrp\""), "{stderr}");
    assert_eq!(served.ok("--fleet", None), "fleet mode standalone\n");
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

/// Runs `program` (the xlb binary or a symlink to it) with `args`, optionally with
/// `XLB_SOCKET` set, and returns what it printed.
fn run_as(program: &Path, args: &[&str], env_socket: Option<&Path>) -> Output {
    let mut command = Command::new(program);
    command.args(args).env_remove("XLB_SOCKET");
    if let Some(socket) = env_socket {
        command.env("XLB_SOCKET", socket);
    }
    command.stdin(Stdio::null()).output().expect("runs")
}

/// Issue 15: `--socket` anywhere on the line and `XLB_SOCKET`; `xlb ctl -h` lists the verbs;
/// a symlink named `ipvsadm` to xlb is `xlb ctl`; refusals begin `xlb ctl:`.
#[test]
fn ctl_takes_its_socket_anywhere_and_answers_as_ipvsadm() {
    let scratch = Scratch::new("habits");
    let served = Served::start(&scratch, example("dr.toml"));
    let xlb = Path::new(env!("CARGO_BIN_EXE_xlb"));
    let socket = served.path.to_str().unwrap();
    let listed = |output: Output| {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.starts_with("IP Virtual Server version 1.2.1 (size="), "{text}");
        assert!(text.contains("TCP  10.1.1.100:80 maglev\n"), "{text}");
    };
    listed(run_as(xlb, &["ctl", "-L", "-n", "--socket", socket], None));
    listed(run_as(xlb, &["ctl", "-L", &format!("--socket={socket}"), "-n"], None));
    listed(run_as(xlb, &["ctl", "-L", "-n"], Some(&served.path)));
    // --socket wins over XLB_SOCKET.
    let absent = scratch.0.join("absent.sock");
    listed(run_as(xlb, &["ctl", "-Ln", "--socket", socket], Some(&absent)));

    // -h: the verbs, not clap's help.
    let help = run_as(xlb, &["ctl", "-h"], None);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for verb in ["-A|-E", "-a|-e", "-L|-l", "-S", "-R", "-C", "-Z", "--nosort"] {
        assert!(help.contains(verb), "{verb} not in {help}");
    }

    // A symlink named ipvsadm.
    let bin = scratch.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let ipvsadm = bin.join("ipvsadm");
    std::os::unix::fs::symlink(xlb, &ipvsadm).unwrap();
    listed(run_as(&ipvsadm, &["-L", "-n"], Some(&served.path)));
    listed(run_as(&ipvsadm, &["--socket", socket], None));
    let help = run_as(&ipvsadm, &["-h"], None);
    assert!(String::from_utf8_lossy(&help.stdout).contains("-A|-E"));

    // Refusals begin `xlb ctl:`, whether the daemon refuses or the command line is bad.
    let refused = run_as(&ipvsadm, &["-D", "-t", "10.1.1.99:80"], Some(&served.path));
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("xlb ctl: service 10.1.1.99:80/tcp does not exist"), "{stderr}");
    let bad = run_as(xlb, &["ctl", "-A", "-t", "10.1.1.99:80", "-s", "fifo"], Some(&served.path));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("xlb ctl: -s fifo"));
    let nowhere = run_as(xlb, &["ctl", "-L", "-n"], Some(&absent));
    assert!(String::from_utf8_lossy(&nowhere.stderr).starts_with("xlb ctl: cannot talk to xlb"));
    // -R names the line and shows it.
    let output = served.ctl("-R", Some("-D -t 10.1.1.100:80\n\n-D -t 10.1.1.99:80\n"));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "xlb ctl: line 3 (-D -t 10.1.1.99:80): service 10.1.1.99:80/tcp does not exist (-A adds it)\n"
    );
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

/// What a client other than `xlb ctl` might write on the control socket: bytes, and whether
/// it then closes its side (else it holds the connection open, silent).
struct Raw {
    what: &'static str,
    bytes: Vec<u8>,
    close_write: bool,
}

impl Raw {
    fn line(what: &'static str, bytes: &[u8]) -> Raw {
        let mut bytes = bytes.to_vec();
        bytes.push(b'\n');
        Raw { what, bytes, close_write: true }
    }

    /// A well-formed request line: JSON of `args` and `stdin`.
    fn request(what: &'static str, args: &[&str], stdin: Option<&str>) -> Raw {
        let request = Request {
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(str::to_string),
        };
        Raw::line(what, &serde_json::to_vec(&request).unwrap())
    }

    /// Sends the bytes and returns everything the server wrote before it closed.
    fn exchange(&self, path: &Path) -> Vec<u8> {
        let mut stream = UnixStream::connect(path).expect("connects");
        stream.set_read_timeout(Some(REQUEST_DEADLINE * 3)).unwrap();
        // The server may answer (and close) before it has read everything: ignore EPIPE.
        let _ = stream.write_all(&self.bytes);
        if self.close_write {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        reply
    }
}

#[test]
fn malformed_control_requests_are_refused_and_change_nothing() {
    let scratch = Scratch::new("malformed");
    let original = example("dr.toml");
    let served = Served::start(&scratch, original.clone());
    let saved = served.ok("-S -n", None);
    let listed = served.ok("-L -n", None);

    let mut huge = vec![b'x'; MAX_REQUEST + 1];
    huge.push(b'\n');
    let many_args: Vec<&str> = vec!["-L"; 50_000];
    let cases = vec![
        Raw::line("garbage text", b"hello xlb, please clear everything"),
        Raw::line("binary", &[0x00, 0xff, 0xfe, 0x80, 0x01, 0x9c, 0x00, 0x7f]),
        Raw::line("an empty line", b""),
        Raw { what: "a line over the size limit", bytes: huge, close_write: true },
        Raw {
            what: "an unterminated line, then end of stream",
            bytes: br#"{"args":["-C"],"stdin":nu"#.to_vec(),
            close_write: true,
        },
        Raw::line("args of the wrong type", br#"{"args":"-C","stdin":null}"#),
        Raw::line("no args", br#"{"stdin":"-C"}"#),
        Raw::line("a request and trailing junk", br#"{"args":["-C"],"stdin":null} -C"#),
        Raw::line("two requests on one line", br#"{"args":["-C"]}{"args":["-C"]}"#),
        Raw::line("JSON, not an object", b"[1, 2, 3]"),
        Raw::request("an unknown verb", &["--frobnicate", "-t", "10.1.1.100:80"], None),
        Raw::request("no verb", &[], None),
        Raw::request("a NUL in an argument", &["-C\0"], None),
        Raw::request("thousands of verbs", &many_args, None),
        Raw::request("a bad address", &["-A", "-t", "10.1.1.300:80", "-s", "rr"], None),
        Raw::request("a port out of range", &["-A", "-t", "10.1.1.101:99999", "-s", "rr"], None),
        Raw::request(
            "a server that is no address",
            &["-a", "-t", "10.1.1.100:80", "-r", "rs1.example", "-g"],
            None,
        ),
        Raw::request("an unknown scheduler", &["-E", "-t", "10.1.1.100:80", "-s", "fastest"], None),
        Raw::request(
            "a negative weight",
            &["-e", "-t", "10.1.1.100:80", "-r", "10.1.1.11", "-w", "-1"],
            None,
        ),
        Raw::request("no such service", &["-D", "-t", "10.9.9.9:80"], None),
        Raw::request(
            "a half-valid -R batch",
            &["-R"],
            Some(
                "-C\n-A -t 10.1.1.101:443 -s wrr\n-a -t 10.1.1.101:443 -r 10.1.1.11 -g -w 3\n-a -t 10.1.1.101:443 -r 10.1.1.999 -g\n",
            ),
        ),
        Raw::request("-R of binary junk", &["-R"], Some("\u{0}\u{1}\u{fffd}-C\u{0}")),
    ];
    // One client says half a request and then nothing: dropped after the deadline, with no
    // answer, while every other client is served.
    let silent = {
        let path = served.path.clone();
        std::thread::spawn(move || {
            let raw = Raw {
                what: "half a request, then silence",
                bytes: br#"{"args":["-C"],"#.to_vec(),
                close_write: false,
            };
            let started = std::time::Instant::now();
            (raw.exchange(&path), started.elapsed())
        })
    };
    for case in &cases {
        let reply = case.exchange(&served.path);
        let text = String::from_utf8_lossy(&reply);
        let response: Response = serde_json::from_str(text.trim_end())
            .unwrap_or_else(|e| panic!("{}: no response line ({e}): {text:?}", case.what));
        assert!(
            response.status == 1 || response.status == 2,
            "{}: status {} ({response:?})",
            case.what,
            response.status
        );
        assert!(response.stdout.is_empty(), "{}: {response:?}", case.what);
        assert!(!response.stderr.trim().is_empty(), "{}: says why", case.what);
        assert_eq!(served.ok("-S -n", None), saved, "{} changed the table", case.what);
    }
    let (reply, waited) = silent.join().unwrap();
    assert!(reply.is_empty(), "a silent client gets no answer: {reply:?}");
    assert!(waited >= REQUEST_DEADLINE, "dropped only after the deadline ({waited:?})");
    assert!(waited < REQUEST_DEADLINE * 3, "but dropped ({waited:?})");

    assert_eq!(served.ok("-S -n", None), saved);
    assert_eq!(served.ok("-L -n", None), listed);
    assert_eq!(served.finish(), original, "the handler ends with the config it started with");
}

/// `xlb ctl ARGS` as user and group 65534 (nobody), without supplementary groups.
fn ctl_as_nobody(socket: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_xlb"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv runs")
}

#[test]
fn a_user_other_than_root_cannot_use_the_control_socket() {
    if !root_or_skip("a_user_other_than_root_cannot_use_the_control_socket") {
        return;
    }
    let scratch = Scratch::new("nonroot");
    let original = example("dr.toml");
    let served = Served::start(&scratch, original.clone());
    let socket = served.path.clone();
    let dir = socket.parent().unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    let owner = |path: &Path| std::fs::metadata(path).unwrap().uid();
    assert_eq!((mode(&socket), owner(&socket)), (0o600, 0), "the socket: 0600, root's");
    assert_eq!((mode(dir), owner(dir)), (0o700, 0), "its directory: 0700, root's");
    let saved = served.ok("-S -n", None);

    // The binary itself runs for nobody (so a refusal below is the socket's, not exec's).
    let help = ctl_as_nobody(&socket, &["-h"]);
    assert!(help.status.success(), "{}", String::from_utf8_lossy(&help.stderr));

    let refused = |why: &str| {
        for args in [&["-L", "-n"][..], &["-C"], &["-A", "-t", "10.1.1.101:80", "-s", "rr"]] {
            let output = ctl_as_nobody(&socket, args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{why}: xlb ctl {args:?}: {stderr}");
            assert!(stderr.contains("Permission denied"), "{why}: {stderr}");
            assert!(stderr.contains("only root may connect"), "{why}: {stderr}");
            assert!(output.stdout.is_empty(), "{why}");
        }
    };
    refused("the directory keeps nobody out");
    // With the directories open to all, the socket's own mode still refuses.
    for open in [dir, &scratch.0] {
        std::fs::set_permissions(open, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    refused("the socket's mode keeps nobody out");

    assert_eq!(served.ok("-S -n", None), saved);
    assert_eq!(served.finish(), original);
}
