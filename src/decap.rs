//! `xlb decap`: the real server's side of tunnel mode (`forward = "tunnel"`). It attaches
//! the XDP program of [`crate::dataplane::io::afxdp::decap`] to a device, which strips IPIP
//! and GUE addressed to this host and hands the inner packet (to the VIP on `lo`) to the
//! kernel's stack: the alternative to an `ipip` or `fou` device where those modules are
//! missing.
//!
//! Lifetime: by default the program is attached through a BPF link and stays while the
//! command runs; SIGINT or SIGTERM (or the process dying, even by SIGKILL) detaches it, so
//! a supervisor (systemd) owns it as it owns `xlb run`. The counters are printed on exit.
//! `--detach` attaches it the old way (netlink) and exits: it stays, with the addresses
//! and port of that moment, until `xlb decap --remove --dev IF` (or `ip link set dev IF
//! xdp off`). `--stats` prints the counters of whichever is attached.
//!
//! Invariants:
//! - The local addresses are exactly `--addr` when given; otherwise the device's own
//!   addresses (both families, link-local left out), read again every second while the
//!   command runs, so an address added later is decapsulated for too.
//! - The program is never attached over another one (the kernel refuses; the error says
//!   so), and `--remove` removes only a program named `xlb_decap`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataplane::io::afxdp::decap::{self, DecapProgram, DecapStats};
use crate::dataplane::io::afxdp::netdev::{Netdev, NetdevError};
use crate::dataplane::io::afxdp::steer::{SteerError, XdpMode};

/// How often the device's addresses are read again (when no `--addr` is given).
const REFRESH: Duration = Duration::from_secs(1);

/// What `xlb decap` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecapOptions {
    /// The device the tunnelled packets arrive on.
    pub dev: String,
    /// GUE's UDP destination port; `None`: GUE off (IPIP only).
    pub gue_port: Option<u16>,
    /// The outer destinations to decapsulate for; empty: the device's addresses.
    pub addrs: Vec<IpAddr>,
    /// The attach mode; `None`: native if the driver has it, else generic.
    pub mode: Option<XdpMode>,
    /// What to do.
    pub action: DecapAction,
}

/// The forms of `xlb decap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapAction {
    /// Attach and run until a signal, then detach and print the counters.
    Run,
    /// Attach so the program stays after the command, and exit.
    Detach,
    /// Remove a program `Detach` left.
    Remove,
    /// Print the counters of the program attached to the device.
    Stats,
}

/// Why `xlb decap` failed.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    #[error(transparent)]
    Device(#[from] NetdevError),
    #[error("{dev}: {error}")]
    Bpf { dev: String, error: SteerError },
    #[error("{dev}: no xlb_decap program attached")]
    NotAttached { dev: String },
    #[error("{dev}: no address to decapsulate for (the device has none; give --addr)")]
    NoAddress { dev: String },
    #[error("{dev}: the device is gone")]
    DeviceGone { dev: String },
}

/// Runs `xlb decap` as `options` say; `stop` (SIGINT, SIGTERM) ends [`DecapAction::Run`].
/// What it reports goes to stdout.
pub fn run(options: &DecapOptions, stop: &Arc<AtomicBool>) -> Result<(), DecapError> {
    let device = Netdev::open(&options.dev)?;
    let dev = device.name.clone();
    let bpf = |error: SteerError| DecapError::Bpf { dev: dev.clone(), error };
    match options.action {
        DecapAction::Stats => {
            let stats = decap::attached_stats(device.ifindex).map_err(bpf)?;
            let stats = stats.ok_or_else(|| DecapError::NotAttached { dev: dev.clone() })?;
            print!("{}", format_stats(&dev, &stats));
            return Ok(());
        }
        DecapAction::Remove => {
            if !decap::remove_detached(device.ifindex).map_err(bpf)? {
                return Err(DecapError::NotAttached { dev });
            }
            println!("xlb decap: removed from {dev}");
            return Ok(());
        }
        DecapAction::Run | DecapAction::Detach => {}
    }

    let program = DecapProgram::load().map_err(bpf)?;
    program.set_gue_port(options.gue_port).map_err(bpf)?;
    let mut addrs = wanted_addrs(options).map_err(bpf)?;
    if addrs.is_empty() {
        return Err(DecapError::NoAddress { dev });
    }
    program.set_local_addrs(&addrs).map_err(bpf)?;
    let gue = options.gue_port.map_or("GUE off".to_string(), |port| format!("GUE port {port}"));

    if options.action == DecapAction::Detach {
        let ((), mode) =
            attach_in(options.mode, |mode| program.attach_detached(device.ifindex, mode))
                .map_err(bpf)?;
        println!(
            "xlb decap: attached to {dev} ({mode:?}, detached: stays until --remove), \
             for {}; {gue}",
            list(&addrs)
        );
        return Ok(());
    }

    let (attachment, mode) =
        attach_in(options.mode, |mode| program.attach(device.ifindex, mode)).map_err(bpf)?;
    println!("xlb decap: attached to {dev} ({mode:?}), for {}; {gue}", list(&addrs));
    let mut refreshed = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if !device.is_present() {
            return Err(DecapError::DeviceGone { dev });
        }
        if options.addrs.is_empty() && refreshed.elapsed() >= REFRESH {
            refreshed = Instant::now();
            let now = wanted_addrs(options).map_err(bpf)?;
            if now != addrs {
                program.set_local_addrs(&now).map_err(bpf)?;
                println!("xlb decap: {dev} now decapsulates for {}", list(&now));
                addrs = now;
            }
        }
    }
    drop(attachment);
    print!("{}", format_stats(&dev, &program.stats().map_err(bpf)?));
    Ok(())
}

/// Attaches with `attach` in `mode`, or when none is given natively if the driver can,
/// else generically; returns what `attach` did and the mode.
fn attach_in<T>(
    mode: Option<XdpMode>,
    attach: impl Fn(XdpMode) -> Result<T, SteerError>,
) -> Result<(T, XdpMode), SteerError> {
    match mode {
        Some(mode) => attach(mode).map(|done| (done, mode)),
        None => attach(XdpMode::Native)
            .map(|done| (done, XdpMode::Native))
            .or_else(|_| attach(XdpMode::Generic).map(|done| (done, XdpMode::Generic))),
    }
}

/// `--addr`, or the device's addresses.
fn wanted_addrs(options: &DecapOptions) -> Result<Vec<IpAddr>, SteerError> {
    if options.addrs.is_empty() {
        decap::device_addrs(&options.dev)
    } else {
        let mut addrs = options.addrs.clone();
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }
}

fn list(addrs: &[IpAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The counters as `xlb decap` prints them: a heading, then `name count` a line.
pub fn format_stats(dev: &str, stats: &DecapStats) -> String {
    let mut text = format!("xlb decap {dev}: {} decapsulated\n", stats.decapsulated());
    for (name, count) in stats.named() {
        text.push_str(&format!("{name} {count}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_print_one_counter_a_line() {
        let stats =
            DecapStats { ipip: 3, gue: 2, passed: 9, malformed: 1, ..DecapStats::default() };
        let text = format_stats("eth0", &stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "xlb decap eth0: 5 decapsulated");
        assert_eq!(&lines[1..4], ["ipip 3", "ip6 0", "gue 2"]);
        assert!(lines.contains(&"malformed 1") && lines.contains(&"passed 9"), "{text}");
        assert_eq!(lines.len(), 9);
    }

    #[test]
    fn given_addresses_are_used_sorted_and_once() {
        let options = DecapOptions {
            dev: "eth0".into(),
            gue_port: Some(6080),
            addrs: vec![
                "10.0.0.2".parse().unwrap(),
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
            ],
            mode: None,
            action: DecapAction::Run,
        };
        let addrs = wanted_addrs(&options).unwrap();
        assert_eq!(list(&addrs), "10.0.0.1, 10.0.0.2");
    }
}
