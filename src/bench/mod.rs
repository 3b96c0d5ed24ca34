//! `xlb bench`: the parts of the side-by-side benchmark (`bench/sidebyside`) that run inside
//! its namespaces. Each is a bounded program that prints progress on stderr and one JSON
//! object on stdout:
//!
//! - `gen`: the traffic generator ([`generator`]: `BPF_PROG_RUN` live frames, several Mpps
//!   on one core; where the kernel refuses them, frames made in user space and sent by
//!   AF_XDP, [`txgen`]), bounded in packets and time, optionally rate-capped;
//! - `sink`: the checking sink ([`sink`]) on the receiving veth: waits for traffic, lets it
//!   settle, then measures a window: good and bad frames, Mpps, latency percentiles, and the
//!   busy time of the forwarding cores per packet (from `/proc/stat`);
//! - `null`: the null forwarder ([`null`]) on AF_XDP sockets: the I/O ceiling;
//! - `redirect`: XDP native redirect between the same veths ([`redirect`]): the kernel's
//!   fast path;
//! - `nft`: prints the nftables ruleset of the kernel DNAT row, written the way kube-proxy's
//!   nftables mode writes a service ([`nft_ruleset`]).
//!
//! Nothing here runs per packet: the per-packet work is in the XDP programs and the
//! forwarders.
//!
//! What lives here and why: every program only the benchmark runs ([`generator`], [`sink`],
//! [`redirect`] and their XDP programs under `bpf/`, which `build.rs` compiles as it does
//! the steering program; the [`null`] forwarder), so that the dataplane, and
//! `dataplane/io/afxdp/` in particular, holds only what `xlb run` runs. The appliance's
//! pieces the benchmark shares (AF_XDP sockets, the steering program, XDP attachment,
//! busy polling, the worker's `Port`) stay in the dataplane and are used from here.
//!
//! No `unsafe` here (the crate denies it outside `dataplane::io::afxdp`): the programs are
//! opened, loaded, attached, configured and test-run through the safe libbpf wrappers of
//! `afxdp`'s `bpf` module and `steer::attach_program`, which hold every `unsafe` block
//! with its `// SAFETY:` note.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use self::generator::{Fallback, FrameSpec, GenConfig, GenLimits, GenPath, Generator};
use self::null::NullForwarder;
use self::redirect::Redirect;
use self::sink::{Sink, SinkCounts, SinkExpect, SinkSample};
use crate::dataplane::io::afxdp::busypoll;
use crate::dataplane::io::afxdp::netdev::Netdev;
use crate::dataplane::io::afxdp::steer::{self, FamilyRules, SteerProgram, SteerRules, XdpMode};
use crate::dataplane::io::afxdp::xsk::{XskConfig, XskPort};
use crate::flow::Proto;
use crate::tuning::BusyPollMode;
use crate::wire::MacAddr;
use crate::wire::ethernet::parse_mac;

pub mod generator;
pub mod null;
pub mod redirect;
pub mod sink;
pub mod txgen;

/// `xlb bench`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Send 64-byte UDP or TCP SYN frames over many flows (BPF_PROG_RUN live frames; AF_XDP
    /// where the kernel refuses them).
    Gen(GenArgs),
    /// Check, count and time what arrives on an interface, over a measurement window.
    Sink(SinkArgs),
    /// Forward frames from one interface to another on AF_XDP, rewriting only MACs.
    Null(ForwardArgs),
    /// Forward frames from one interface to another with XDP native redirect.
    Redirect(ForwardArgs),
    /// Print the kube-proxy-style nftables DNAT ruleset for one service.
    Nft(NftArgs),
}

/// Options of `xlb bench gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// The interface to send by (its peer must accept XDP frames: an XDP program or GRO).
    #[arg(long)]
    pub dev: String,
    /// Destination MAC (the forwarder's receiving interface).
    #[arg(long, value_parser = mac)]
    pub dst_mac: MacAddr,
    /// Destination address.
    #[arg(long)]
    pub dst: Ipv4Addr,
    #[arg(long, default_value_t = 80)]
    pub dst_port: u16,
    /// The first source address.
    #[arg(long, default_value = "10.100.0.1")]
    pub src: Ipv4Addr,
    /// The first source port.
    #[arg(long, default_value_t = 1024)]
    pub src_port: u16,
    /// Flows to cycle through (0: a random spoofed source per frame, a SYN flood).
    #[arg(long, default_value_t = 65536)]
    pub flows: u32,
    /// Source ports per source address.
    #[arg(long, default_value_t = 16384)]
    pub port_span: u16,
    /// Random mode: source addresses to draw from.
    #[arg(long, default_value_t = 65536)]
    pub src_span: u32,
    /// udp, or tcp (SYNs).
    #[arg(long, default_value = "udp", value_parser = proto)]
    pub proto: Proto,
    /// Frames to send at most.
    #[arg(long, default_value_t = 100_000_000)]
    pub packets: u64,
    /// Seconds to send at most.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Frames per second at most (default: as fast as one core goes).
    #[arg(long)]
    pub rate: Option<u64>,
    /// The AF_XDP fallback's socket send buffer in bytes (default: the kernel's,
    /// net.core.wmem_default). Copy mode charges every frame in flight to it, so the default
    /// holds about one veth ring of small frames and the sender goes at its peer's pace.
    #[arg(long)]
    pub send_buffer: Option<u32>,
    /// Frame size without FCS (60: 64 bytes on the wire).
    #[arg(long, default_value_t = generator::MIN_FRAME)]
    pub size: usize,
    /// Send by this fallback even where the kernel runs live frames (default: live frames,
    /// and afxdp where the kernel refuses them).
    #[arg(long, value_enum)]
    pub fallback: Option<Fallback>,
}

/// Options of `xlb bench sink`.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// The interface to check (the sink program is attached there, native mode).
    #[arg(long)]
    pub dev: String,
    /// udp or tcp.
    #[arg(long, default_value = "udp", value_parser = proto)]
    pub proto: Proto,
    /// Expected destination addresses: A or A-B.
    #[arg(long, value_parser = addr_range)]
    pub dst: (Ipv4Addr, Ipv4Addr),
    /// Expected source addresses: A or A-B.
    #[arg(long, value_parser = addr_range)]
    pub src: (Ipv4Addr, Ipv4Addr),
    /// Expected destination port (0: any).
    #[arg(long, default_value_t = 0)]
    pub dst_port: u16,
    /// Expected destination MAC (default: the interface's).
    #[arg(long, value_parser = mac)]
    pub dst_mac: Option<MacAddr>,
    /// Seconds to wait for the first good frame.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Seconds of traffic before the window opens.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds the window lasts.
    #[arg(long, default_value_t = 5.0)]
    pub measure: f64,
    /// CPUs whose busy time is charged to the forwarding (comma list, e.g. 1).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Create this file once the sink is attached.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Options of `xlb bench null` and `xlb bench redirect`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Where frames arrive.
    #[arg(long)]
    pub rx: String,
    /// Where frames leave.
    #[arg(long)]
    pub tx: String,
    /// Destination MAC of the frames that leave (the sink's).
    #[arg(long, value_parser = mac)]
    pub dst_mac: MacAddr,
    /// null: the address whose frames the steering program hands to the socket (the VIP).
    #[arg(long, default_value = "0.0.0.0")]
    pub vip: Ipv4Addr,
    /// Seconds to run at most (SIGTERM ends it sooner).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Create this file once forwarding.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// null: preferred busy polling, as `xlb run --busy-poll` (auto, on, off).
    #[arg(long, value_name = "auto|on|off", default_value = "auto")]
    pub busy_poll: BusyPollMode,
    /// null: the busy-poll marker UDP port, as `xlb run --busy-poll-marker`.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub busy_poll_marker: Option<u16>,
}

/// Options of `xlb bench nft`.
#[derive(Debug, clap::Args)]
pub struct NftArgs {
    #[arg(long)]
    pub vip: Ipv4Addr,
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    #[arg(long, default_value = "udp", value_parser = proto)]
    pub proto: Proto,
    /// Backends, ADDR:PORT, repeated.
    #[arg(long = "backend", required = true)]
    pub backends: Vec<std::net::SocketAddrV4>,
}

fn mac(text: &str) -> Result<MacAddr, String> {
    parse_mac(text).map(MacAddr).map_err(|_| format!("{text:?} is not a MAC address"))
}

fn proto(text: &str) -> Result<Proto, String> {
    match text {
        "udp" => Ok(Proto::Udp),
        "tcp" => Ok(Proto::Tcp),
        other => Err(format!("{other:?}: expected udp or tcp")),
    }
}

/// `A` or `A-B`.
fn addr_range(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let parse = |s: &str| s.trim().parse::<Ipv4Addr>().map_err(|e| format!("{s:?}: {e}"));
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last {
        return Err(format!("{text:?}: the range ends before it starts"));
    }
    Ok((first, last))
}

/// Runs one `xlb bench` subcommand; `stop` is set by SIGINT/SIGTERM.
pub fn run(command: BenchCommand, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let json = match command {
        BenchCommand::Gen(args) => serde_json::to_string(&run_gen(&args, &stop)?)?,
        BenchCommand::Sink(args) => serde_json::to_string(&run_sink(&args, &stop)?)?,
        BenchCommand::Null(args) => serde_json::to_string(&run_null(&args, &stop)?)?,
        BenchCommand::Redirect(args) => serde_json::to_string(&run_redirect(&args, &stop)?)?,
        BenchCommand::Nft(args) => {
            let backends: Vec<_> = args.backends.iter().map(|b| (*b.ip(), b.port())).collect();
            print!("{}", nft_ruleset(args.vip, args.port, args.proto, &backends));
            return Ok(());
        }
    };
    println!("{json}");
    Ok(())
}

/// What `xlb bench gen` did.
#[derive(Debug, Serialize)]
pub struct GenSummary {
    pub sent: u64,
    pub seconds: f64,
    pub mpps: f64,
    pub calls: u64,
    /// Which fallback sent the frames (`afxdp`, `bpf-packet`), or null: live frames (see
    /// [`generator`]).
    pub fallback: Option<&'static str>,
    /// Frames the fallback made that did not leave.
    pub not_sent: u64,
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.clamp(0.0, 86_400.0))
}

fn run_gen(args: &GenArgs, stop: &AtomicBool) -> anyhow::Result<GenSummary> {
    let dev = Netdev::open(&args.dev)?;
    let generator = Generator::load().context("loading the generator program")?;
    let stamp_offset = generator::stamp_offset(args.proto);
    let frame = FrameSpec {
        src_mac: dev.mac,
        dst_mac: args.dst_mac,
        src: args.src,
        dst: args.dst,
        src_port: args.src_port,
        dst_port: args.dst_port,
        proto: args.proto,
        size: args.size,
    }
    .build();
    let config = GenConfig {
        flows: args.flows,
        src_addr: args.src,
        src_span: args.src_span,
        src_port: args.src_port,
        port_span: args.port_span,
        stamp_offset: Some(stamp_offset),
    };
    generator.configure(&frame, &config)?;
    let limits = GenLimits {
        packets: args.packets,
        duration: seconds(args.seconds),
        rate: args.rate,
        send_buffer: args.send_buffer,
    };
    eprintln!(
        "gen: {} {} frames of {} bytes to {}:{} by {}, {} flows, at most {} frames, {:.1} s{}",
        args.proto,
        if args.proto == Proto::Tcp { "SYN" } else { "datagram" },
        frame.len(),
        args.dst,
        args.dst_port,
        args.dev,
        if args.flows == 0 { "random".to_string() } else { args.flows.to_string() },
        args.packets,
        limits.duration.as_secs_f64(),
        args.rate.map(|r| format!(", at most {r} frames/s")).unwrap_or_default()
    );
    let path = args.fallback.map_or(GenPath::Auto, GenPath::Only);
    let report = generator.run(&frame, &dev, &limits, path, stop, &mut |report| {
        eprintln!(
            "gen: {:.1} s, {} frames, {:.2} Mpps",
            report.elapsed.as_secs_f64(),
            report.sent,
            report.mpps()
        );
    })?;
    eprintln!(
        "gen: done: {} frames in {:.2} s, {:.2} Mpps{}",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.mpps(),
        match report.fallback {
            Some(Fallback::Afxdp) => format!(" (by AF_XDP; {} did not leave)", report.not_sent),
            Some(Fallback::BpfPacket) => {
                format!(" (through AF_PACKET; {} refused by the device's queue)", report.not_sent)
            }
            None => String::new(),
        }
    );
    Ok(GenSummary {
        sent: report.sent,
        seconds: report.elapsed.as_secs_f64(),
        mpps: report.mpps(),
        calls: report.calls,
        fallback: report.fallback.map(Fallback::name),
        not_sent: report.not_sent,
    })
}

/// What `xlb bench sink` measured.
#[derive(Debug, Serialize)]
pub struct SinkSummary {
    /// Whether a good frame arrived before the timeout.
    pub traffic: bool,
    /// Seconds the window lasted.
    pub seconds: f64,
    /// Good frames per second in the window, in millions.
    pub mpps: f64,
    /// Counts in the window.
    pub window: SinkCounts,
    /// Counts since the sink was attached (bad frames anywhere in the run show here).
    pub total: SinkCounts,
    pub total_bad: u64,
    /// Latency of the window's good frames, µs (None: no stamped frame).
    pub latency_us: Option<LatencySummary>,
    /// Busy time of `cpus` in the window per good frame, µs (None: no `--cpus`).
    pub cpu_us_per_packet: Option<f64>,
    pub cpus: Vec<usize>,
}

/// Latency percentiles, µs.
#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn latency_summary(buckets: &[u64]) -> Option<LatencySummary> {
    let histogram = sink::latency_histogram(buckets);
    if histogram.is_empty() {
        return None;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Some(LatencySummary {
        count: histogram.len(),
        p50: us(histogram.value_at_quantile(0.50)),
        p99: us(histogram.value_at_quantile(0.99)),
        p999: us(histogram.value_at_quantile(0.999)),
        max: us(histogram.max()),
    })
}

fn run_sink(args: &SinkArgs, stop: &AtomicBool) -> anyhow::Result<SinkSummary> {
    let dev = Netdev::open(&args.dev)?;
    let sink = Sink::load().context("loading the sink program")?;
    sink.expect(&SinkExpect {
        dst_mac: args.dst_mac.unwrap_or(dev.mac),
        proto: args.proto,
        dst: args.dst.0..=args.dst.1,
        src: args.src.0..=args.src.1,
        dst_port: args.dst_port,
        stamp_offset: Some(generator::stamp_offset(args.proto)),
    })?;
    let _attachment = sink
        .attach(dev.ifindex, XdpMode::Native)
        .with_context(|| format!("{}: attaching the sink", args.dev))?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
    }
    let start = sink.sample()?;
    let waited = Instant::now();
    let mut traffic = false;
    while !stop.load(Ordering::Relaxed) && waited.elapsed() < seconds(args.timeout) {
        if sink.sample()?.counts.good > start.counts.good {
            traffic = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut window = (start.clone(), start.clone(), Duration::ZERO);
    let mut busy = None;
    if traffic {
        sleep_unless(stop, seconds(args.warmup));
        let (first, cpu_first, opened) = (sink.sample()?, cpu_busy_ns(&args.cpus), Instant::now());
        eprintln!("sink: traffic on {}, window of {:.1} s opened", args.dev, args.measure);
        let mut last = first.clone();
        while !stop.load(Ordering::Relaxed) && opened.elapsed() < seconds(args.measure) {
            sleep_unless(
                stop,
                seconds(args.measure).saturating_sub(opened.elapsed()).min(Duration::from_secs(1)),
            );
            let now = sink.sample()?;
            let delta = now.since(&last);
            eprintln!(
                "sink: {:.1} s: {} good, {} bad in the last interval",
                opened.elapsed().as_secs_f64(),
                delta.counts.good,
                delta.counts.bad()
            );
            last = now;
        }
        let elapsed = opened.elapsed();
        busy = cpu_first.zip(cpu_busy_ns(&args.cpus)).map(|(a, b)| b.saturating_sub(a));
        window = (first, last, elapsed);
    } else {
        eprintln!("sink: no good frame on {} within {:.1} s", args.dev, args.timeout);
    }
    let end = sink.sample()?;
    let (first, last, elapsed) = window;
    let delta: SinkSample = last.since(&first);
    let total = end.counts.since(&start.counts);
    let good = delta.counts.good;
    Ok(SinkSummary {
        traffic,
        seconds: elapsed.as_secs_f64(),
        mpps: good as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6,
        window: delta.counts,
        total,
        total_bad: total.bad(),
        latency_us: latency_summary(&delta.latency),
        cpu_us_per_packet: busy.filter(|_| good > 0).map(|ns| ns as f64 / 1000.0 / good as f64),
        cpus: args.cpus.clone(),
    })
}

fn sleep_unless(stop: &AtomicBool, duration: Duration) {
    let until = Instant::now() + duration;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// `/proc/stat` counts in USER_HZ, which is 100 on every architecture Linux runs xlb on.
const NS_PER_TICK: u64 = 10_000_000;

/// Busy time (user, nice, system, irq, softirq, steal) of `cpus` from `/proc/stat`, in
/// nanoseconds; None if `cpus` is empty or a CPU is missing.
fn cpu_busy_ns(cpus: &[usize]) -> Option<u64> {
    if cpus.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    cpus.iter().map(|&cpu| busy_ticks(&text, cpu)).sum::<Option<u64>>().map(|t| t * NS_PER_TICK)
}

/// CPU `cpu`'s busy ticks in `/proc/stat` text: every field but idle (4th) and iowait (5th).
pub fn busy_ticks(proc_stat: &str, cpu: usize) -> Option<u64> {
    let name = format!("cpu{cpu}");
    let line = proc_stat.lines().find(|line| line.split_whitespace().next() == Some(&name))?;
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
    if fields.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    Some(fields[..8].iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum())
}

/// What `xlb bench null` and `xlb bench redirect` did.
#[derive(Debug, Serialize)]
pub struct ForwardSummary {
    pub seconds: f64,
    /// Frames forwarded (null; the redirect program does not count).
    pub forwarded: Option<u64>,
    pub dropped: Option<u64>,
    /// How the interfaces were driven.
    pub mode: String,
}

fn run_null(args: &ForwardArgs, stop: &AtomicBool) -> anyhow::Result<ForwardSummary> {
    let (rx, tx) = (Netdev::open(&args.rx)?, Netdev::open(&args.tx)?);
    let steer = SteerProgram::load().context("loading the steering program")?;
    steer::remove_stale(rx.ifindex)?;
    let (_attachment, xdp_mode) = steer.attach_best(rx.ifindex)?;
    steer.set_rules(&SteerRules {
        v4: FamilyRules { dst: vec![args.vip], ..FamilyRules::default() },
        ..SteerRules::default()
    })?;
    let mut rx_port = XskPort::open(&rx.name, 0, XskConfig::default())?;
    steer.set_socket(0, rx_port.fd())?;
    let mut tx_port = XskPort::open(&tx.name, 0, XskConfig::default())?;
    // As `xlb run` does; `_tuning` gives the devices their settings back on return.
    let devices = [rx.name.as_str(), tx.name.as_str()];
    let record_dir = PathBuf::from(crate::instance::LOCK_DIR);
    let (busy, _tuning) = busypoll::start(
        args.busy_poll,
        &record_dir,
        &devices,
        &mut [(0, &mut rx_port), (1, &mut tx_port)],
        args.busy_poll_marker,
    );
    let mode = format!(
        "XDP {xdp_mode:?}, AF_XDP {} mode, busy polling {}",
        rx_port.mode(),
        if busy.busy_poll() { "on" } else { "off" }
    );
    let mut null =
        NullForwarder::new(rx_port, tx_port, args.dst_mac, tx.mac).with_spin(busy.busy_poll());
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
    }
    eprintln!("null: {} -> {} ({mode}), at most {:.0} s", rx.name, tx.name, args.seconds);
    let started = Instant::now();
    let stats = null.run(stop, seconds(args.seconds));
    Ok(ForwardSummary {
        seconds: started.elapsed().as_secs_f64(),
        forwarded: Some(stats.forwarded),
        dropped: Some(stats.dropped),
        mode,
    })
}

fn run_redirect(args: &ForwardArgs, stop: &AtomicBool) -> anyhow::Result<ForwardSummary> {
    let (rx, tx) = (Netdev::open(&args.rx)?, Netdev::open(&args.tx)?);
    let redirect = Redirect::load().context("loading the redirect program")?;
    redirect.configure(tx.ifindex, args.dst_mac, tx.mac)?;
    let _attachment = redirect.attach(rx.ifindex, XdpMode::Native)?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
    }
    eprintln!("redirect: {} -> {} (XDP native), at most {:.0} s", rx.name, tx.name, args.seconds);
    let started = Instant::now();
    sleep_unless(stop, seconds(args.seconds));
    Ok(ForwardSummary {
        seconds: started.elapsed().as_secs_f64(),
        forwarded: None,
        dropped: None,
        mode: "XDP native".into(),
    })
}

/// The nftables ruleset of the kernel DNAT row: one service `vip:port/proto` balanced over
/// `backends` the way kube-proxy's nftables mode writes it (a `services` verdict map keyed
/// by address . protocol . port, a per-service chain choosing an endpoint with `numgen
/// random mod N`, one endpoint chain each doing `dnat to`), in a table of its own. Loading
/// it with `nft -f` replaces nothing else.
pub fn nft_ruleset(vip: Ipv4Addr, port: u16, proto: Proto, backends: &[(Ipv4Addr, u16)]) -> String {
    let mut out = String::from("table ip xlb-bench {\n");
    let service = format!("service-{}-{port}", proto);
    for (index, (addr, backend_port)) in backends.iter().enumerate() {
        out.push_str(&format!(
            "\tchain endpoint-{index} {{\n\t\tmeta l4proto {proto} dnat to {addr}:{backend_port}\n\t}}\n"
        ));
    }
    let endpoints: Vec<String> =
        (0..backends.len()).map(|index| format!("{index} : goto endpoint-{index}")).collect();
    out.push_str(&format!(
        "\tchain {service} {{\n\t\tnumgen random mod {} vmap {{ {} }}\n\t}}\n",
        backends.len().max(1),
        endpoints.join(", ")
    ));
    out.push_str(&format!(
        "\tmap service-ips {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = {{ {vip} . {proto} . {port} : goto {service} }}\n\t}}\n"
    ));
    out.push_str(
        "\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n",
    );
    out.push_str(
        "\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n",
    );
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_ruleset_is_kube_proxy_shaped() {
        let backends = [(Ipv4Addr::new(10, 20, 0, 11), 8080), (Ipv4Addr::new(10, 20, 0, 12), 8080)];
        let text = nft_ruleset(Ipv4Addr::new(10, 10, 0, 100), 80, Proto::Udp, &backends);
        assert!(text.starts_with("table ip xlb-bench {\n") && text.ends_with("}\n"));
        assert!(text.contains("meta l4proto udp dnat to 10.20.0.11:8080"));
        assert!(text.contains("meta l4proto udp dnat to 10.20.0.12:8080"));
        assert!(
            text.contains("numgen random mod 2 vmap { 0 : goto endpoint-0, 1 : goto endpoint-1 }")
        );
        assert!(text.contains("elements = { 10.10.0.100 . udp . 80 : goto service-udp-80 }"));
        assert!(text.contains("type nat hook prerouting priority dstnat"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn proc_stat_busy_time_leaves_out_idle_and_iowait() {
        let text = "cpu  10 0 10 1000 5 0 0 0 0 0\n\
                    cpu0 4 0 4 500 2 0 0 0 0 0\n\
                    cpu1 6 1 6 500 3 2 3 1 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(busy_ticks(text, 0), Some(8));
        assert_eq!(busy_ticks(text, 1), Some(6 + 1 + 6 + 2 + 3 + 1));
        assert_eq!(busy_ticks(text, 2), None);
        assert_eq!(busy_ticks("cpu1 1 2\n", 1), None, "short lines are refused");
    }

    #[test]
    fn address_ranges_parse() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 9);
        assert_eq!(addr_range("10.0.0.1"), Ok((a, a)));
        assert_eq!(addr_range("10.0.0.1-10.0.0.9"), Ok((a, b)));
        assert!(addr_range("10.0.0.9-10.0.0.1").is_err());
        assert!(addr_range("nope").is_err());
    }
}
