//! The `xlb` command.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xlb::control::Config;
use xlb::control::ipvsadm::{self, Command as CtlCommand};
use xlb::control::socket::{self, Request};
use xlb::daemon::{self, RunOptions};
use xlb::dataplane::io::afxdp::steer::XdpMode;
use xlb::dataplane::io::replay::{self, ReplaySummary};
use xlb::snapshot::Snapshot;
use xlb::tuning::BusyPollMode;

mod man;

/// xlb: a kernel-bypass layer-4 load balancer (LVS/IPVS in user space).
#[derive(Debug, Parser)]
#[command(name = "xlb", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the load balancer on AF_XDP sockets until SIGINT or SIGTERM (needs root).
    Run {
        /// The config (TOML). Interface MACs are read from the devices.
        #[arg(long)]
        config: PathBuf,
        /// Worker cores, one per queue (default: one per queue, at most one per core).
        #[arg(long)]
        cores: Option<usize>,
        /// Create this file (holding xlb's PID) once xlb forwards.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// XDP attach mode: native or generic (default: native, else generic).
        #[arg(long, value_parser = parse_xdp_mode)]
        xdp_mode: Option<XdpMode>,
        /// Bind AF_XDP sockets in copy mode without trying zero-copy.
        #[arg(long)]
        copy: bool,
        /// Keep the workers spinning when idle, for dedicated cores (default: wait when
        /// idle). Busy polling spins anyway.
        #[arg(long)]
        spin: bool,
        /// Preferred busy polling, each worker running its queues' NAPI itself: auto (where
        /// the kernel linked a NAPI to every socket, else interrupt mode with a warning), on,
        /// off. Overrides the config's `dataplane.busy_poll`. Busy polling keeps each worker's core at
        /// 100% even when idle.
        #[arg(long, value_name = "auto|on|off", conflicts_with = "no_busy_poll")]
        busy_poll: Option<BusyPollMode>,
        /// Same as --busy-poll off.
        #[arg(long)]
        no_busy_poll: bool,
        /// Where the kernel linked no NAPI to a socket (veth), busy-poll the device's NAPI
        /// through a UDP socket on this port instead, once a datagram sent to the port
        /// arrived through the device (xlb waits up to 3 s at start for one per device).
        /// Overrides the config's `dataplane.busy_poll_marker`.
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        busy_poll_marker: Option<u16>,
        /// Log a line of figures per core every SECS seconds.
        #[arg(long, value_name = "SECS")]
        stats_every: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9477).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Log lines at this level and above: error, warn, info, debug.
        #[arg(long, default_value = "info")]
        log_level: xlb::log::Level,
        /// Log lines as text (RFC 3339 UTC timestamp first; under systemd, with stderr on
        /// the journal, `<priority>` prefixes and no timestamp) or json (one object a line).
        #[arg(long, value_name = "text|json", default_value = "text")]
        log_format: xlb::log::FormatChoice,
        /// The control socket for `xlb ctl` (default /run/xlb/xlb.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Name the TAP devices that hand passed frames to the kernel PREFIX0, PREFIX1...
        /// (by the interfaces' order in the config; default: xlb<ifindex>-<interface>).
        #[arg(long, value_name = "PREFIX")]
        tap_prefix: Option<String>,
        /// Where health verdicts and runtime weights are kept across restarts (default:
        /// xlb.state next to the control socket).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// Replay a capture through the packet pipeline, offline, and write what it transmits.
    Replay {
        /// The config (TOML); interfaces need a `mac`.
        #[arg(long)]
        config: PathBuf,
        /// Input capture (pcap or pcapng; Ethernet, or `tcpdump -i any`'s LINUX_SLL/SLL2).
        #[arg(long)]
        pcap: PathBuf,
        /// Output capture (pcap, Ethernet): every frame the pipeline transmits, in order.
        #[arg(long)]
        out: PathBuf,
        /// Print one JSON object with the counts instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write every input frame's verdict to this file, one line each, in order
        /// (`tx:0`, `pass`, `drop:<reason>`, `held`).
        #[arg(long, value_name = "FILE")]
        verdicts: Option<PathBuf>,
    },
    /// Validate a config and print what xlb would do with it.
    Check {
        /// The config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// A second config: also print, per service, how many Maglev slots (the share of
        /// flows) changing from --config to this one would move to another real server.
        #[arg(long, value_name = "NEW_CONFIG")]
        against: Option<PathBuf>,
    },
    /// Benchmark parts, run inside the namespaces of `bench/sidebyside` (needs root).
    Bench {
        #[command(subcommand)]
        command: xlb::bench::BenchCommand,
    },
    /// Send an ipvsadm command to a running xlb: `xlb ctl -L -n`, `xlb ctl -A -t VIP:80 -s rr`,
    /// `xlb ctl -S > rules`, `xlb ctl -R < rules` (`xlb ctl -h` lists the commands). A
    /// symlink named `ipvsadm` to xlb runs `xlb ctl`.
    #[command(disable_help_flag = true)]
    Ctl {
        /// The control socket of `xlb run`, here or anywhere among the ipvsadm arguments
        /// (default: $XLB_SOCKET, else /run/xlb/xlb.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// ipvsadm's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "IPVSADM_ARGS")]
        args: Vec<String>,
    },
    /// On a real server of a tunnel-mode service: strip the IPIP and GUE that xlb sends to
    /// this host with an XDP program and hand the inner packets (to the VIP on lo) to the
    /// kernel, where the ipip and fou modules are missing (needs root). Runs until SIGINT or
    /// SIGTERM, then detaches and prints its counters.
    Decap {
        /// The device the tunnelled packets arrive on.
        #[arg(long, value_name = "IFACE")]
        dev: String,
        /// GUE's UDP destination port (0: GUE off, IPIP only).
        #[arg(long, value_name = "PORT", default_value_t = xlb::dataplane::io::afxdp::decap::DEFAULT_GUE_PORT)]
        gue_port: u16,
        /// An outer destination address to decapsulate for (repeatable; default: the
        /// device's addresses, read again every second).
        #[arg(long = "addr", value_name = "ADDR")]
        addrs: Vec<std::net::IpAddr>,
        /// XDP attach mode: native or generic (default: native, else generic).
        #[arg(long, value_parser = parse_xdp_mode)]
        mode: Option<XdpMode>,
        /// Attach so the program stays after xlb exits (until --remove), and exit.
        #[arg(long, conflicts_with_all = ["remove", "stats"])]
        detach: bool,
        /// Remove the program --detach left on the device.
        #[arg(long, conflicts_with = "stats")]
        remove: bool,
        /// Print the counters of the program attached to the device, and exit.
        #[arg(long)]
        stats: bool,
    },
    /// Write the man pages xlb(8) and xlb-ctl(8), generated from this command line, into a
    /// directory (packaging/build-deb.sh does).
    #[command(hide = true)]
    Man {
        /// The directory to write xlb.8 and xlb-ctl.8 into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the malformed-frame corpus (issue 6) as the DR lab's client would send it: a
    /// pcap, and one label line per frame on stdout (for lab/malformed).
    #[command(hide = true)]
    Corpus {
        /// The capture to write.
        #[arg(long)]
        out: PathBuf,
        /// Rounds of the corpus, each on client ports of its own (at most 100).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
        rounds: u16,
        /// The balancer's MAC (default: the placeholder of xlb's own tests).
        #[arg(long)]
        lb_mac: Option<xlb::wire::MacAddr>,
        /// The client's MAC (default: the placeholder of xlb's own tests).
        #[arg(long)]
        client_mac: Option<xlb::wire::MacAddr>,
    },
}

fn main() -> ExitCode {
    // `xlb run`'s handlers go in before anything else, argument parsing included, so the
    // window in which a SIGHUP (or SIGTERM) during start-up takes its default action (kill)
    // is only what precedes `main`. Other commands keep the default actions.
    let run_signals =
        std::env::args_os().nth(1).is_some_and(|arg| arg == "run").then(RunSignals::install);
    // Called as `ipvsadm` (a symlink to xlb): every argument is ipvsadm's, as `xlb ctl`'s.
    let called = std::env::args_os().next().map(PathBuf::from);
    if called.as_deref().and_then(Path::file_name).is_some_and(|name| name == "ipvsadm") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return ctl_exit(run_ctl(None, args));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            cores,
            ready_file,
            xdp_mode,
            copy,
            spin,
            busy_poll,
            no_busy_poll,
            busy_poll_marker,
            stats_every,
            metrics,
            log_level,
            log_format,
            socket,
            tap_prefix,
            state,
        } => {
            xlb::log::init(log_level, log_format);
            let options = RunOptions {
                metrics,
                socket,
                state,
                config,
                cores,
                ready_file,
                xdp_mode,
                force_copy: copy,
                spin,
                busy_poll: if no_busy_poll { Some(BusyPollMode::Off) } else { busy_poll },
                busy_poll_marker,
                record_dir: None,
                stats_every: stats_every.map(Duration::from_secs),
                tap_prefix,
                reload: None,
            };
            let result = match run_signals {
                Some(Ok(signals)) => run_daemon(&options, signals),
                Some(Err(error)) => Err(error),
                None => RunSignals::install().and_then(|signals| run_daemon(&options, signals)),
            };
            // The reason `xlb run` stops is a log line like the others (timestamp, journal
            // priority, JSON).
            if let Err(error) = result {
                xlb::log::error!("{}", xlb::log::Causes(&error));
                return ExitCode::from(2);
            }
            Ok(())
        }
        Command::Replay { config, pcap, out, json, verdicts } => {
            run_replay(&config, &pcap, &out, json, verdicts.as_deref())
        }
        Command::Corpus { out, rounds, lb_mac, client_mac } => {
            run_corpus(&out, rounds, lb_mac, client_mac)
        }
        Command::Check { config, against } => run_check(&config, against.as_deref()),
        Command::Man { out } => man::write_pages(Cli::command(), &out),
        Command::Decap { dev, gue_port, addrs, mode, detach, remove, stats } => {
            run_decap(xlb::decap::DecapOptions {
                dev,
                gue_port: (gue_port != 0).then_some(gue_port),
                addrs,
                mode,
                action: match (detach, remove, stats) {
                    (true, _, _) => xlb::decap::DecapAction::Detach,
                    (_, true, _) => xlb::decap::DecapAction::Remove,
                    (_, _, true) => xlb::decap::DecapAction::Stats,
                    _ => xlb::decap::DecapAction::Run,
                },
            })
        }
        Command::Bench { command } => run_bench(command),
        Command::Ctl { socket, args } => return ctl_exit(run_ctl(socket, args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xlb: {}", xlb::log::Causes(&error));
            ExitCode::from(2)
        }
    }
}

fn parse_xdp_mode(text: &str) -> Result<XdpMode, String> {
    match text {
        "native" | "drv" => Ok(XdpMode::Native),
        "generic" | "skb" => Ok(XdpMode::Generic),
        other => Err(format!("{other:?}: expected native or generic")),
    }
}

/// `xlb run`'s signal flags: SIGINT and SIGTERM stop it, SIGHUP asks for a reload once the
/// control loop runs. Installed first thing in `main`: a SIGHUP (or SIGTERM) during start-up
/// must not kill xlb with its default action.
struct RunSignals {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl RunSignals {
    fn install() -> anyhow::Result<RunSignals> {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, stop.clone())
                .context("installing signal handlers")?;
        }
        let reload = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
            .context("installing the SIGHUP handler")?;
        Ok(RunSignals { stop, reload })
    }
}

fn run_daemon(options: &RunOptions, signals: RunSignals) -> anyhow::Result<()> {
    xlb::tuning::reexec_with_huge_pages();
    let options = RunOptions { reload: Some(signals.reload), ..options.clone() };
    let summary = daemon::run(&options, signals.stop)?;
    print!("{}", summary.ipvsadm_stats());
    Ok(())
}

fn run_decap(options: xlb::decap::DecapOptions) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    Ok(xlb::decap::run(&options, &stop)?)
}

/// A flag SIGINT and SIGTERM raise (`xlb bench`, `xlb decap`).
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

fn run_bench(command: xlb::bench::BenchCommand) -> anyhow::Result<()> {
    xlb::bench::run(command, stop_on_signals()?)
}

fn load_snapshot(path: &Path) -> anyhow::Result<Snapshot> {
    let config = Config::load(path)?;
    Snapshot::build(&config, 1).with_context(|| format!("{}", path.display()))
}

fn run_replay(
    config: &Path,
    pcap: &Path,
    out: &Path,
    json: bool,
    verdicts: Option<&Path>,
) -> anyhow::Result<()> {
    let snapshot = Arc::new(load_snapshot(config)?);
    let input = File::open(pcap).with_context(|| format!("opening {}", pcap.display()))?;
    let output = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut output = BufWriter::new(output);
    // Verdicts are written as they come, like the frames: memory does not grow with the capture.
    let mut verdict_file = match verdicts {
        Some(path) => Some((
            BufWriter::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ),
            path,
        )),
        None => None,
    };
    let mut verdict_error = None;
    let summary = replay::replay(snapshot.clone(), BufReader::new(input), &mut output, |outcome| {
        if let Some((file, _)) = &mut verdict_file
            && verdict_error.is_none()
            && let Err(e) = writeln!(file, "{}", replay::outcome_name(outcome))
        {
            verdict_error = Some(e);
        }
    })
    .with_context(|| format!("replaying {}", pcap.display()))?;
    output.flush().with_context(|| format!("writing {}", out.display()))?;
    if let Some((mut file, path)) = verdict_file {
        match verdict_error {
            Some(e) => Err(e),
            None => file.flush(),
        }
        .with_context(|| format!("writing {}", path.display()))?;
    }
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    if json {
        serde_json::to_writer(&mut stdout, &summary)?;
        writeln!(stdout)?;
    } else {
        print_replay(&mut stdout, &snapshot, &summary, pcap, out)?;
    }
    Ok(())
}

/// `xlb corpus`: the malformed-frame corpus for the DR lab, `rounds` times over.
fn run_corpus(
    out: &Path,
    rounds: u16,
    lb_mac: Option<xlb::wire::MacAddr>,
    client_mac: Option<xlb::wire::MacAddr>,
) -> anyhow::Result<()> {
    use xlb::testkit::{captures, malformed};
    let mut endpoints = malformed::DR_LAB;
    endpoints.lb.mac = lb_mac.unwrap_or(endpoints.lb.mac);
    endpoints.client.mac = client_mac.unwrap_or(endpoints.client.mac);
    let cases: Vec<malformed::Case> =
        (0..rounds).flat_map(|round| malformed::corpus(&endpoints, round)).collect();
    let frames: Vec<captures::Frame> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| (Duration::from_millis(i as u64), case.frame.clone()))
        .collect();
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = BufWriter::new(file);
    captures::write_pcap(&frames, &mut writer).with_context(|| format!("{}", out.display()))?;
    writer.flush().with_context(|| format!("writing {}", out.display()))?;
    print!("{}", malformed::labels(&cases));
    Ok(())
}

fn print_replay(
    w: &mut impl Write,
    snapshot: &Snapshot,
    summary: &ReplaySummary,
    pcap: &Path,
    out: &Path,
) -> std::io::Result<()> {
    writeln!(
        w,
        "xlb replay: {} frames from {} -> {} frames in {}",
        summary.packets,
        pcap.display(),
        summary.written,
        out.display()
    )?;
    writeln!(
        w,
        "  verdicts: tx {}  pass {}  drop {}  held {}  encapsulated {}   (sent on its own: {})",
        summary.tx, summary.pass, summary.drop, summary.held, summary.encapsulated, summary.emitted
    )?;
    if !summary.drop_reasons.is_empty() {
        let reasons: Vec<String> =
            summary.drop_reasons.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
        writeln!(w, "  drops: {}", reasons.join(", "))?;
    }
    if !summary.skipped.is_empty() {
        let reasons: Vec<String> =
            summary.skipped.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
        writeln!(w, "  skipped (not frames xlb receives): {}", reasons.join(", "))?;
    }
    writeln!(w)?;
    writeln!(w, "Prot LocalAddress:Port Scheduler Forward")?;
    writeln!(
        w,
        "  -> RemoteAddress:Port      Weight    Conns   InPkts  OutPkts  InBytes OutBytes"
    )?;
    for service in &snapshot.services {
        writeln!(
            w,
            "{:<4} {}:{} {} {}",
            service.proto.name().to_uppercase(),
            service.vip,
            service.port,
            service.scheduler.kind(),
            service.forward
        )?;
        for backend in &snapshot.backends[service.backends.clone()] {
            let key = format!("{}:{}", backend.addr, backend.port);
            let figures = summary.backends.get(&key).cloned().unwrap_or_default();
            writeln!(
                w,
                "  -> {:<22} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
                key,
                backend.weight,
                figures.connections,
                figures.in_packets,
                figures.out_packets,
                figures.in_bytes,
                figures.out_bytes
            )?;
        }
    }
    Ok(())
}

fn run_check(path: &Path, against: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    writeln!(w, "{}: ok", path.display())?;
    for interface in &config.interfaces {
        writeln!(
            w,
            "interface {} {}/{}{}",
            interface.name,
            interface.addr,
            interface.prefix_len,
            interface.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
        )?;
        if let Some(v6) = interface.ipv6 {
            writeln!(
                w,
                "interface {} {}/{}{}",
                interface.name,
                v6.addr,
                v6.prefix_len,
                v6.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
            )?;
        }
    }
    // The whole config is built as `run` builds it, both families' services with their
    // Maglev tables.
    let snapshot = plan(&config)?;
    // `run` uses one worker per queue, at most one per core: the cores bound it.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let estimate = config.memory_estimate(cores);
    if let Some(total) = xlb::tuning::memory_total() {
        estimate.check(total).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
    }
    writeln!(w, "memory {estimate}")?;
    for service_config in &config.services {
        let (vip, port, proto) = (service_config.vip, service_config.port, service_config.proto);
        let Some(index) = snapshot.service_at_ip(vip, port, proto) else {
            anyhow::bail!("{}: not in the plan", xlb::control::config::endpoint(vip, port));
        };
        let service = &snapshot.services[index];
        writeln!(
            w,
            "service {} {} scheduler {} forward {}{}{}",
            service.proto,
            xlb::control::config::endpoint(service.vip, service.port),
            service.scheduler.kind(),
            service.forward,
            if service.local_addrs.is_empty() {
                String::new()
            } else {
                let addrs: Vec<String> =
                    service.local_addrs.iter().map(|a| a.to_string()).collect();
                format!(" local {}", addrs.join(","))
            },
            service.tunnel.map(tunnel_plan).unwrap_or_default()
        )?;
        if service_config.health.via_vip {
            writeln!(w, "  {}", via_vip_plan(service_config))?;
        }
        let shares = service.fallback.shares(service.backends.len());
        let size = service.fallback.size().max(1);
        // For other schedulers the Maglev table is the stateless fallback (flows conntrack
        // refuses): say so, so the share is not read as the scheduler's.
        let table = if service.scheduler.kind().is_maglev() {
            "maglev share"
        } else {
            "fallback maglev share"
        };
        for (backend, slots) in snapshot.backends[service.backends.clone()].iter().zip(shares) {
            writeln!(
                w,
                "  -> {} weight {} {table} {:.2}% ({} of {} slots)",
                xlb::control::config::endpoint(backend.addr, backend.port),
                backend.weight,
                100.0 * slots as f64 / size as f64,
                slots,
                size
            )?;
        }
    }
    if let Some(new_path) = against {
        let new =
            plan(&Config::load(new_path)?).with_context(|| format!("{}", new_path.display()))?;
        writeln!(w)?;
        writeln!(w, "{} -> {}:", path.display(), new_path.display())?;
        write!(w, "{}", flow_moves(&snapshot, &new))?;
    }
    w.flush()?;
    Ok(())
}

/// What `xlb check` says of a tunnel service's wrapping: ` encap ipip`, ` encap gue port
/// 6080`, then the outer source prefix (else the egress interface's) and the MSS clamp.
fn tunnel_plan(tunnel: xlb::flow::Tunnel) -> String {
    let mut plan = format!(" encap {}", tunnel.encap.name());
    if let xlb::flow::Encap::Gue { port } = tunnel.encap {
        plan.push_str(&format!(" port {port}"));
    }
    match tunnel.source {
        Some(prefix) => plan.push_str(&format!(" source {prefix}")),
        None => plan.push_str(" source interface"),
    }
    if let Some(mss) = tunnel.mss_clamp {
        plan.push_str(&format!(" mss_clamp {mss}"));
    }
    plan
}

/// What `xlb check` says of probes through the VIP: where they go and how.
fn via_vip_plan(service: &xlb::control::config::ServiceConfig) -> String {
    let how = match service.tunnel {
        Some(tunnel) => format!(
            "wrapped {} by xlb, through a TUN device per real server ({}...)",
            tunnel.encap.name(),
            xlb::control::tunnel_probe::DEVICE_PREFIX
        ),
        None => "a policy route per real server (VIP via RIP onlink)".to_string(),
    };
    format!("health probes {}:{} through each real server: {how}", service.vip, service.port)
}

/// A snapshot of `config` built without requiring MACs: `check` is also for `run` configs.
fn plan(config: &Config) -> anyhow::Result<Snapshot> {
    let mut config = config.clone();
    for (i, interface) in config.interfaces.iter_mut().enumerate() {
        interface.mac.get_or_insert([0x02, 0, 0, 0, 0, i as u8]);
    }
    Ok(Snapshot::build(&config, 1)?)
}

/// How many Maglev slots (the share of new and untracked flows) each service's change
/// would move to another real server. Every service has a Maglev table (its scheduler's, or
/// the stateless fallback conntrack uses when it refuses a flow), built from the real
/// servers' addresses and ports, so a slot "moves" when its real server's address:port
/// differs. Tables of different sizes are compared over 2^16 sample flow hashes.
/// Established flows stay where conntrack put them either way.
fn flow_moves(old: &Snapshot, new: &Snapshot) -> String {
    const SAMPLES: u64 = 1 << 16;
    let mut out = String::new();
    let name = |s: &xlb::snapshot::Service| {
        format!("service {} {}", s.proto, xlb::control::config::endpoint(s.vip, s.port))
    };
    let backend_at =
        |snapshot: &Snapshot, service: &xlb::snapshot::Service, slot: Option<usize>| {
            slot.and_then(|i| snapshot.backends.get(service.backends.start + i))
                .map(|b| (b.addr, b.port))
        };
    for service in &new.services {
        let Some(before) = old.service_at_ip(service.vip, service.port, service.proto) else {
            out.push_str(&format!("{}: new service\n", name(service)));
            continue;
        };
        let before = &old.services[before];
        let (moved, total) = if before.fallback.size() == service.fallback.size() {
            let slots = before.fallback.slots().iter().zip(service.fallback.slots());
            let moved = slots
                .filter(|&(&a, &b)| {
                    let slot = |s: u32| (s != u32::MAX).then_some(s as usize);
                    backend_at(old, before, slot(a)) != backend_at(new, service, slot(b))
                })
                .count() as u64;
            (moved, service.fallback.size() as u64)
        } else {
            let moved = (0..SAMPLES)
                .map(|i| xlb::hash::mix64(i ^ 0x9e37_79b9_7f4a_7c15))
                .filter(|&hash| {
                    backend_at(old, before, before.fallback.lookup(hash))
                        != backend_at(new, service, service.fallback.lookup(hash))
                })
                .count() as u64;
            (moved, SAMPLES)
        };
        let unit = if before.fallback.size() == service.fallback.size() {
            "slots"
        } else {
            "sampled flows"
        };
        out.push_str(&format!(
            "{}: {moved} of {total} {unit} move ({:.2}%)\n",
            name(service),
            100.0 * moved as f64 / total.max(1) as f64
        ));
    }
    for service in &old.services {
        if new.service_at_ip(service.vip, service.port, service.proto).is_none() {
            out.push_str(&format!("{}: removed (its flows end)\n", name(service)));
        }
    }
    out
}

/// `xlb ctl`'s exit: its own, or 2 with the reason after `xlb ctl: `.
fn ctl_exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("{}{error:#}", ipvsadm::REFUSAL_PREFIX);
        ExitCode::from(2)
    })
}

/// `xlb ctl`: takes `--socket` from anywhere in the arguments (else `socket`, else
/// `$XLB_SOCKET`, else the default), checks the command line here (so a typo needs no
/// daemon), sends it to the daemon with stdin for `-R`, and reproduces the daemon's output
/// and exit status.
fn run_ctl(socket: Option<PathBuf>, mut args: Vec<String>) -> anyhow::Result<ExitCode> {
    let socket_path = match ipvsadm::take_socket(&mut args) {
        Ok(Some(path)) if socket.is_some() => {
            eprintln!("{}--socket given twice ({path} and before)", ipvsadm::REFUSAL_PREFIX);
            return Ok(ExitCode::from(2));
        }
        Ok(found) => found
            .map(PathBuf::from)
            .or(socket)
            .or_else(|| std::env::var_os(ipvsadm::SOCKET_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(socket::DEFAULT_SOCKET)),
        Err(error) => {
            eprintln!("{}{error}", ipvsadm::REFUSAL_PREFIX);
            return Ok(ExitCode::from(error.status() as u8));
        }
    };
    let socket_path = socket_path.as_path();
    if args.is_empty() {
        // A bare `ipvsadm` lists.
        args = vec!["-L".to_string(), "-n".to_string()];
    }
    let stdin = match ipvsadm::parse(&args) {
        Ok(CtlCommand::Help) => {
            print!("{}", ipvsadm::HELP);
            return Ok(ExitCode::SUCCESS);
        }
        Ok(CtlCommand::Restore(_)) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the commands to restore from stdin")?;
            Some(text)
        }
        Ok(_) => None,
        Err(error) => {
            eprintln!("{}{error}", ipvsadm::REFUSAL_PREFIX);
            return Ok(ExitCode::from(error.status() as u8));
        }
    };
    let response = socket::call(socket_path, &Request { args, stdin }).with_context(|| {
        format!(
            "cannot talk to xlb at {} (is `xlb run` running? only root may connect)",
            socket_path.display()
        )
    })?;
    print!("{}", response.stdout);
    eprint!("{}", response.stderr);
    std::io::stdout().flush()?;
    Ok(ExitCode::from(u8::try_from(response.status).unwrap_or(1)))
}
