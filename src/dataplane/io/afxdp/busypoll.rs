//! Preferred busy polling: the worker runs its queue's NAPI itself, so one thread per core
//! does all the work (receive, forward, transmit), as in DPDK, instead of sharing its core
//! with the kernel's receive softirq or NAPI thread.
//!
//! What it takes (kernel `Documentation/networking/napi.rst`, "preferred busy polling"):
//! - on each AF_XDP socket, `SO_PREFER_BUSY_POLL` 1, `SO_BUSY_POLL` [`BUSY_POLL_USECS`] and
//!   `SO_BUSY_POLL_BUDGET` [`BUSY_POLL_BUDGET`] ([`set_socket_options`]);
//! - on each device, `napi_defer_hard_irqs` [`DEFER_HARD_IRQS`] and `gro_flush_timeout`
//!   [`GRO_FLUSH_TIMEOUT_NS`] ([`DeviceTuning`]): interrupts stay masked while the
//!   application polls, and the timer re-arms them if it stops;
//! - a worker that calls into the socket every iteration ([`drive`]: `recvfrom` with
//!   `MSG_DONTWAIT`), never sleeps, and so keeps its core at 100% even when idle.
//!
//! **It engages only if the kernel linked a NAPI to the socket.** The kernel busy-polls the
//! NAPI whose id the socket carries (`SO_INCOMING_NAPI_ID`, [`napi_id`]); every option
//! above is accepted when that id is 0, and nothing is polled: veth (which does not link
//! its queues to its NAPI) reads 0, and a worker spinning there only takes the core from
//! the receive thread. [`decide`] turns the ids read after binding into a [`Decision`]:
//! busy polling when every socket has one ([`BusyPollMode::Auto`], the default), else one
//! warning naming the socket and the fallback (interrupt mode: the kernel's NAPI receives,
//! the worker waits when idle, the device's settings are left alone). [`BusyPollMode::On`]
//! keeps it on regardless (copy mode on a NIC links the id only when the first frame
//! arrives), [`BusyPollMode::Off`] never tries. The kernel counts the frames busy polling
//! received in `/proc/net/netstat` `TcpExt: BusyPollRxPackets` ([`busy_poll_rx_packets`]),
//! per network namespace: the runtime proof that it engaged.
//!
//! **The device settings are always given back.** [`DeviceTuning::apply`] first records
//! the previous values in a file next to xlb's instance locks, then writes the new ones;
//! dropping it (a normal stop, SIGTERM or SIGINT, an error on the way up, a panic) writes
//! the previous values back and removes the record. A run killed with SIGKILL cannot, so
//! the next `xlb run` on that device restores what the record says before anything else
//! ([`recover`]), whatever its own mode. The settings only delay interrupts, never lose
//! frames, so a device left tuned between the two keeps working, at a latency cost.
//!
//! While busy polling, control checks now and then that the counter rises as frames arrive
//! ([`EngagementCheck`]) and warns once if it does not.
//!
//! **Where the AF_XDP socket has no NAPI id, a marker may stand in** ([`super::marker`]), only
//! when the operator names a marker port (`--busy-poll-marker PORT`, config
//! `dataplane.busy_poll_marker`): on veth (kernel 6.18)
//! the device's NAPI has an id once native XDP or GRO is on, but veth registers its XDP
//! receive queue with NAPI id 0, so the AF_XDP socket never gets one; a UDP socket on the
//! device that received a datagram there carries it, and the worker drives that socket
//! instead ([`XskPort::napi_fd`]). The probe then names the marker ([`SocketProbe::marker`]);
//! the decision is the same. The device tuning is what makes it engage (measured: without
//! `napi_defer_hard_irqs`/`gro_flush_timeout`, under 0.1% of the frames were busy-polled).

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::marker::{MARKER_WAIT, Marker};
use super::xsk::XskPort;
use crate::log::{info, warn};
use crate::tuning::BusyPollMode;

// asm-generic socket option numbers (every Linux architecture xlb builds for); libc does not
// name the last three for Linux.
const SO_BUSY_POLL: libc::c_int = 46;
const SO_INCOMING_NAPI_ID: libc::c_int = 56;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// How long one busy-poll call may spin in the kernel, in microseconds.
pub const BUSY_POLL_USECS: u32 = 20;
/// Frames one busy-poll call may take from the NAPI (at least a worker's batch).
pub const BUSY_POLL_BUDGET: u32 = 64;
/// Interrupts the device keeps masked after a NAPI poll that found work.
pub const DEFER_HARD_IRQS: u32 = 2;
/// The timer that re-enables the device's processing if the application stops polling.
pub const GRO_FLUSH_TIMEOUT_NS: u64 = 200_000;

const _: () = assert!(BUSY_POLL_BUDGET as usize >= crate::report::BATCH);

/// What one socket said after the options were set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketProbe {
    pub interface: String,
    pub queue: u32,
    /// The NAPI id (0: none linked), or why the options or the id could not be had.
    pub napi_id: Result<u32, String>,
    /// The id is that of a marker socket on this UDP port ([`super::marker`]), not the
    /// AF_XDP socket's own.
    pub marker: Option<u16>,
}

/// Why busy polling is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// The operator said so (`--busy-poll off`, `--no-busy-poll`, config `busy_poll = "off"`).
    Disabled,
    /// The kernel linked no NAPI to this socket.
    NoNapi { interface: String, queue: u32 },
    /// The kernel refused a socket option (an old kernel, or busy polling compiled out).
    SocketOption { interface: String, queue: u32, error: String },
    /// A device setting could not be written.
    Device { interface: String, error: String },
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Disabled => f.write_str("turned off"),
            Fallback::NoNapi { interface, queue } => write!(
                f,
                "{interface} queue {queue}: the kernel linked no NAPI to the AF_XDP socket \
                 (SO_INCOMING_NAPI_ID 0: the driver does not tie its queues to a NAPI, as veth, \
                 or copy mode before the first frame), so there is nothing to busy-poll (on veth, \
                 --busy-poll-marker PORT or busy_poll_marker = PORT polls the device's NAPI \
                 through a UDP socket once a datagram to that port arrived through it)"
            ),
            Fallback::SocketOption { interface, queue, error } => {
                write!(
                    f,
                    "{interface} queue {queue}: setting the busy-poll socket options: {error}"
                )
            }
            Fallback::Device { interface, error } => {
                write!(f, "{interface}: writing napi_defer_hard_irqs/gro_flush_timeout: {error}")
            }
        }
    }
}

/// What the sockets and devices run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Busy polling; `unlinked` lists the sockets without a NAPI id yet (only under
    /// [`BusyPollMode::On`]).
    BusyPoll { unlinked: Vec<(String, u32)> },
    /// Interrupt mode, and why.
    Interrupt(Fallback),
}

impl Decision {
    pub fn busy_poll(&self) -> bool {
        matches!(self, Decision::BusyPoll { .. })
    }
}

/// The decision for `mode` given what every socket said (empty: no socket was asked,
/// which only [`BusyPollMode::Off`] does). Under `Auto`, every socket needs a NAPI id, its
/// own or a marker's, unless at least one marker got one: then those without are listed as
/// unlinked.
pub fn decide(mode: BusyPollMode, probes: &[SocketProbe]) -> Decision {
    if mode == BusyPollMode::Off {
        return Decision::Interrupt(Fallback::Disabled);
    }
    // A marker that got an id shows the operator set up the workaround: sockets left without
    // one (a device no marker datagram reached, as a transmit-only one) are then only warned
    // about, as under `On`.
    let marked = probes.iter().any(|p| p.marker.is_some());
    let mut unlinked = Vec::new();
    for probe in probes {
        match &probe.napi_id {
            Err(error) => {
                return Decision::Interrupt(Fallback::SocketOption {
                    interface: probe.interface.clone(),
                    queue: probe.queue,
                    error: error.clone(),
                });
            }
            Ok(0) if mode == BusyPollMode::Auto && !marked => {
                return Decision::Interrupt(Fallback::NoNapi {
                    interface: probe.interface.clone(),
                    queue: probe.queue,
                });
            }
            Ok(0) => unlinked.push((probe.interface.clone(), probe.queue)),
            Ok(_) => {}
        }
    }
    Decision::BusyPoll { unlinked }
}

/// Starts busy polling on `sockets` (each with the index of its device in `devices`), as
/// `xlb run` and `xlb bench null` do: gives back the device settings a killed run left
/// (whatever `mode`), then, unless `mode` is off, sets the socket options, decides from the
/// NAPI ids ([`decide`]) and, if busy polling, tunes every device (a device that refuses
/// makes it fall back) and tells the sockets to drive their NAPI. Logs the outcome: one
/// warning when it falls back, naming why. `record_dir`: see [`record_path`]. The tunings
/// restore the devices when dropped.
pub fn start(
    mode: BusyPollMode,
    record_dir: &Path,
    devices: &[&str],
    sockets: &mut [(usize, &mut XskPort)],
    marker_port: Option<u16>,
) -> (Decision, Vec<DeviceTuning>) {
    let sysfs = |name: &str| Path::new("/sys/class/net").join(name);
    for name in devices {
        match recover(&sysfs(name), &record_path(record_dir, name)) {
            Ok(Some(restored)) => warn!(
                "{name}: gave back the settings a killed xlb left for busy polling ({})",
                restored.iter().map(|(s, v)| format!("{s}={v}")).collect::<Vec<_>>().join(" ")
            ),
            Ok(None) => {}
            Err(error) => warn!("{name}: busy polling: {error}"),
        }
    }
    let mut probes = Vec::new();
    if mode != BusyPollMode::Off {
        for (device, port) in sockets.iter_mut() {
            probes.push(SocketProbe {
                interface: devices[*device].to_string(),
                queue: port.queue(),
                napi_id: port.enable_busy_poll().map_err(|e| e.to_string()),
                marker: None,
            });
        }
    }
    let markers = if mode == BusyPollMode::Off {
        Vec::new()
    } else {
        marker_port.map_or_else(Vec::new, |port| open_markers(port, &mut probes, sockets))
    };
    let mut decision = decide(mode, &probes);
    let mut tuning = Vec::new();
    if decision.busy_poll() {
        for name in devices {
            match DeviceTuning::apply(
                &sysfs(name),
                &record_path(record_dir, name),
                &device_values(),
            ) {
                Ok(applied) => tuning.push(applied),
                Err(error) => {
                    decision = Decision::Interrupt(Fallback::Device {
                        interface: name.to_string(),
                        error: error.to_string(),
                    });
                    tuning.clear();
                    break;
                }
            }
        }
    }
    if decision.busy_poll() {
        for (index, marker) in markers {
            sockets[index].1.set_marker(marker);
        }
    }
    if !probes.is_empty() {
        for (_, port) in sockets.iter_mut() {
            if let Err(error) = port.set_drive_napi(decision.busy_poll()) {
                warn!(
                    "{} queue {}: busy-poll socket options: {error}",
                    port.interface(),
                    port.queue()
                );
            }
        }
    }
    let ids = probes
        .iter()
        .map(|p| {
            let via = p.marker.map(|port| format!(" through marker UDP port {port}"));
            format!(
                "{} queue {} NAPI {}{}",
                p.interface,
                p.queue,
                p.napi_id.as_ref().unwrap_or(&0),
                via.unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    match &decision {
        Decision::BusyPoll { unlinked } if unlinked.is_empty() => {
            info!(
                "busy polling: on ({ids}); each worker runs its queues' NAPI and keeps its core busy"
            )
        }
        Decision::BusyPoll { unlinked } => warn!(
            "busy polling: on (--busy-poll on, or a marker engaged it), but the kernel linked no \
             NAPI to {} yet: \
             nothing is busy-polled there until it does, and the worker spins anyway ({ids})",
            unlinked.iter().map(|(i, q)| format!("{i} queue {q}")).collect::<Vec<_>>().join(", ")
        ),
        Decision::Interrupt(Fallback::Disabled) => info!("busy polling: off (as configured)"),
        Decision::Interrupt(why) => warn!(
            "busy polling: not engaged: {why}; running in interrupt mode instead (the kernel's \
             NAPI receives, workers wait when idle, napi_defer_hard_irqs and gro_flush_timeout \
             untouched); --no-busy-poll silences this, --busy-poll on forces it"
        ),
    }
    (decision, tuning)
}

/// The workaround for sockets the kernel linked no NAPI to ([`super::marker`]): for every
/// probe that read id 0 on a device with no other socket, opens a marker on UDP `port`, waits
/// (all devices together, at most [`MARKER_WAIT`]) for a datagram to mark it, and puts the
/// marker's id in the probe. Returns the markers that got an id, with the index of their
/// socket in `sockets`; warns for each device that got none.
fn open_markers(
    port: u16,
    probes: &mut [SocketProbe],
    sockets: &[(usize, &mut XskPort)],
) -> Vec<(usize, Marker)> {
    let mut opened = Vec::new();
    for (index, probe) in probes.iter().enumerate() {
        if probe.napi_id != Ok(0) {
            continue;
        }
        let device = sockets[index].0;
        if sockets.iter().filter(|(d, _)| *d == device).count() != 1 {
            // Said once per device, at its first socket.
            if sockets.iter().position(|(d, _)| *d == device) != Some(index) {
                continue;
            }
            warn!(
                "{}: busy polling through a marker needs a single xlb socket on the device \
                 (a marker carries the NAPI of one receive queue); not tried",
                probe.interface
            );
            continue;
        }
        match Marker::open(&probe.interface, port) {
            Ok(marker) => opened.push((index, marker)),
            Err(error) => {
                warn!("{}: busy-poll marker on UDP port {port}: {error}", probe.interface)
            }
        }
    }
    let deadline = std::time::Instant::now() + MARKER_WAIT;
    let mut marked = Vec::new();
    for (index, marker) in opened {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match marker.wait_for_napi(left) {
            Ok(id) if id != 0 => {
                probes[index].napi_id = Ok(id);
                probes[index].marker = Some(port);
                marked.push((index, marker));
            }
            Ok(_) => warn!(
                "{}: no datagram reached busy-poll marker UDP port {port} through the device \
                 within {} s, so it carries no NAPI id",
                marker.device(),
                MARKER_WAIT.as_secs()
            ),
            Err(error) => {
                warn!("{}: busy-poll marker on UDP port {port}: {error}", marker.device())
            }
        }
    }
    marked
}

fn setsockopt_u32(fd: RawFd, option: libc::c_int, value: u32) -> io::Result<()> {
    let value = value as libc::c_int;
    // SAFETY: `value` is a live c_int and the length passed is its size; the kernel only
    // reads it. A bad fd is an error return, not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets the three busy-poll options on socket `fd`.
pub fn set_socket_options(fd: RawFd) -> io::Result<()> {
    setsockopt_u32(fd, SO_PREFER_BUSY_POLL, 1)?;
    setsockopt_u32(fd, SO_BUSY_POLL, BUSY_POLL_USECS)?;
    setsockopt_u32(fd, SO_BUSY_POLL_BUDGET, BUSY_POLL_BUDGET)
}

/// Takes them off again (interrupt mode): the kernel's own `poll` then never spins.
pub fn clear_socket_options(fd: RawFd) -> io::Result<()> {
    setsockopt_u32(fd, SO_PREFER_BUSY_POLL, 0)?;
    setsockopt_u32(fd, SO_BUSY_POLL, 0)
}

/// The NAPI id the kernel linked to socket `fd` (0: none).
pub fn napi_id(fd: RawFd) -> io::Result<u32> {
    let mut value: libc::c_uint = 0;
    let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` is `value`'s size; the kernel writes at
    // most `len` bytes into `value` and the length back into `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_INCOMING_NAPI_ID,
            (&mut value as *mut libc::c_uint).cast(),
            &mut len,
        )
    };
    if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

/// One non-blocking `recvfrom` on socket `fd`: with busy polling set, the kernel runs the
/// socket's NAPI in this thread (receive and, in zero-copy, transmit) before returning.
/// Errors (EAGAIN above all) say nothing and are ignored.
#[inline]
pub fn drive(fd: RawFd) {
    // SAFETY: a zero-length receive into no buffer: the kernel writes nothing to user
    // memory; the address arguments are null, which recvfrom allows.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

/// `TcpExt: BusyPollRxPackets` in `/proc/net/netstat` text: frames busy polling received
/// in this network namespace (None: not there, or not a number).
pub fn parse_busy_poll_rx_packets(netstat: &str) -> Option<u64> {
    let mut lines = netstat.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        let (Some(("TcpExt", names)), Some(("TcpExt", values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        let position = names.split_whitespace().position(|n| n == "BusyPollRxPackets")?;
        return values.split_whitespace().nth(position)?.parse().ok();
    }
    None
}

/// [`parse_busy_poll_rx_packets`] of this namespace's `/proc/net/netstat`.
pub fn busy_poll_rx_packets() -> Option<u64> {
    parse_busy_poll_rx_packets(&fs::read_to_string("/proc/net/netstat").ok()?)
}

/// Frames xlb must have received between two looks before a BusyPollRxPackets that did not
/// move means busy polling is not receiving.
pub const CHECK_AFTER_FRAMES: u64 = 10_000;

/// The runtime proof that busy polling engaged: while it is on, the kernel's
/// BusyPollRxPackets must rise as xlb receives. Fed the frames the sockets received so far
/// and the counter, now and then; says so once when at least [`CHECK_AFTER_FRAMES`] frames
/// arrived since the last look and the kernel counted none of them as busy-polled.
#[derive(Debug, Default)]
pub struct EngagementCheck {
    last: Option<(u64, u64)>,
    warned: bool,
}

impl EngagementCheck {
    /// Returns the warning, the first time the check fails (None ever after).
    pub fn observe(&mut self, received: u64, busy_polled: u64) -> Option<String> {
        let Some((frames, polled)) = self.last else {
            self.last = Some((received, busy_polled));
            return None;
        };
        let arrived = received.saturating_sub(frames);
        if arrived < CHECK_AFTER_FRAMES {
            return None; // wait for more traffic; keep the older baseline
        }
        self.last = Some((received, busy_polled));
        if busy_polled > polled || self.warned {
            return None;
        }
        self.warned = true;
        Some(format!(
            "busy polling is on but not receiving: {arrived} frames arrived and the kernel's \
             TcpExt BusyPollRxPackets did not move ({busy_polled}); the kernel's NAPI is \
             receiving them while the workers spin beside it (run with --no-busy-poll)"
        ))
    }
}

/// The device settings busy polling changes, in the order they are written.
pub const DEVICE_SETTINGS: [&str; 2] = ["napi_defer_hard_irqs", "gro_flush_timeout"];

/// The values xlb writes, in [`DEVICE_SETTINGS`] order.
pub fn device_values() -> [String; 2] {
    [DEFER_HARD_IRQS.to_string(), GRO_FLUSH_TIMEOUT_NS.to_string()]
}

/// Why the device settings could not be read, written or recorded.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error("{path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: io::Error },
    #[error("{path} line {line}: {detail} (the record of a killed xlb; removed)")]
    Record { path: PathBuf, line: usize, detail: String },
}

fn io_error(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> TuningError {
    let path = path.to_path_buf();
    move |source| TuningError::Io { path, what, source }
}

/// Where the record of device `name`'s previous settings is kept, in `dir` (xlb uses
/// [`crate::instance::LOCK_DIR`]); per network namespace, like the instance locks.
pub fn record_path(dir: &Path, name: &str) -> PathBuf {
    crate::instance::interface_lock_path(dir, name).with_extension("busypoll")
}

fn read_setting(device: &Path, setting: &str) -> Result<String, TuningError> {
    let path = device.join(setting);
    fs::read_to_string(&path)
        .map(|text| text.trim().to_string())
        .map_err(io_error(&path, "reading"))
}

fn write_setting(device: &Path, setting: &str, value: &str) -> Result<(), TuningError> {
    let path = device.join(setting);
    fs::write(&path, value).map_err(io_error(&path, "writing"))
}

/// Reads a record: one `setting=value` line per [`DEVICE_SETTINGS`] entry, values decimal.
fn parse_record(path: &Path, text: &str) -> Result<Vec<(&'static str, String)>, TuningError> {
    let bad = |line: usize, detail: String| TuningError::Record {
        path: path.to_path_buf(),
        line,
        detail,
    };
    let mut settings = Vec::new();
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (name, value) =
            line.split_once('=').ok_or_else(|| bad(index + 1, format!("{line:?}: no '='")))?;
        let setting = DEVICE_SETTINGS
            .iter()
            .find(|s| **s == name.trim())
            .ok_or_else(|| bad(index + 1, format!("unknown setting {:?}", name.trim())))?;
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(index + 1, format!("{setting} = {value:?} is not a number")));
        }
        settings.push((*setting, value.to_string()));
    }
    Ok(settings)
}

/// Gives device `device` (its sysfs directory) back the settings a killed run recorded in
/// `record`, and removes the record. Returns what was restored (None: there was no record).
/// A record that cannot be read is removed and reported, the device left as it is.
pub fn recover(
    device: &Path,
    record: &Path,
) -> Result<Option<Vec<(&'static str, String)>>, TuningError> {
    let text = match fs::read_to_string(record) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(record, "reading")(e)),
    };
    let settings = match parse_record(record, &text) {
        Ok(settings) => settings,
        Err(error) => {
            let _ = fs::remove_file(record);
            return Err(error);
        }
    };
    for (setting, value) in &settings {
        write_setting(device, setting, value)?;
    }
    fs::remove_file(record).map_err(io_error(record, "removing"))?;
    Ok(Some(settings))
}

/// A device's busy-poll settings, applied; dropping it writes the previous values back.
#[derive(Debug)]
pub struct DeviceTuning {
    device: PathBuf,
    record: PathBuf,
    /// The values before, in [`DEVICE_SETTINGS`] order; empty once restored.
    previous: Vec<(&'static str, String)>,
}

impl DeviceTuning {
    /// Records the current values of [`DEVICE_SETTINGS`] of `device` (its sysfs directory,
    /// `/sys/class/net/NAME`) in `record` (written whole, then renamed into place), then
    /// writes `values`. On any failure what was written is put back and the record removed.
    pub fn apply(
        device: &Path,
        record: &Path,
        values: &[String; 2],
    ) -> Result<DeviceTuning, TuningError> {
        let mut previous = Vec::new();
        for setting in DEVICE_SETTINGS {
            previous.push((setting, read_setting(device, setting)?));
        }
        let text: String = previous.iter().map(|(s, v)| format!("{s}={v}\n")).collect();
        if let Some(dir) = record.parent() {
            fs::create_dir_all(dir).map_err(io_error(dir, "creating"))?;
        }
        let partial = record.with_extension("busypoll.new");
        fs::write(&partial, text).map_err(io_error(&partial, "writing"))?;
        fs::rename(&partial, record).map_err(io_error(record, "renaming into place"))?;
        let tuning = DeviceTuning { device: device.to_path_buf(), record: record.into(), previous };
        for (setting, value) in DEVICE_SETTINGS.iter().zip(values) {
            // On error `tuning` drops and puts back every setting (rewriting an unchanged
            // one is harmless).
            write_setting(device, setting, value)?;
        }
        Ok(tuning)
    }

    /// Writes the previous values back and removes the record (once; later calls do
    /// nothing). The record stays if a value could not be written back, for the next run.
    pub fn restore(&mut self) -> Result<(), TuningError> {
        if self.previous.is_empty() {
            return Ok(());
        }
        for (setting, value) in &self.previous {
            write_setting(&self.device, setting, value)?;
        }
        self.previous.clear();
        fs::remove_file(&self.record).map_err(io_error(&self.record, "removing"))
    }

    /// The values the device had before.
    pub fn previous(&self) -> &[(&'static str, String)] {
        &self.previous
    }
}

impl Drop for DeviceTuning {
    fn drop(&mut self) {
        if let Err(error) = self.restore() {
            crate::log::warn!("busy polling: giving the device its settings back: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("xlb-busypoll-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let device = base.join("sys/class/net/eth9");
        fs::create_dir_all(&device).unwrap();
        fs::write(device.join("napi_defer_hard_irqs"), "0\n").unwrap();
        fs::write(device.join("gro_flush_timeout"), "20000\n").unwrap();
        let record = base.join("run/netns-1-eth9.busypoll");
        (base, device, record)
    }

    fn read(device: &Path, setting: &str) -> String {
        fs::read_to_string(device.join(setting)).unwrap().trim().to_string()
    }

    #[test]
    fn applies_records_and_restores_on_drop() {
        let (base, device, record) = scratch("drop");
        let tuning = DeviceTuning::apply(&device, &record, &device_values()).unwrap();
        assert_eq!(read(&device, "napi_defer_hard_irqs"), "2");
        assert_eq!(read(&device, "gro_flush_timeout"), "200000");
        assert_eq!(
            fs::read_to_string(&record).unwrap(),
            "napi_defer_hard_irqs=0\ngro_flush_timeout=20000\n",
            "the previous values are on disk before anything changes"
        );
        drop(tuning);
        assert_eq!(read(&device, "napi_defer_hard_irqs"), "0");
        assert_eq!(read(&device, "gro_flush_timeout"), "20000");
        assert!(!record.exists(), "a clean stop leaves no record");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_failed_write_puts_back_what_was_written() {
        let (base, device, record) = scratch("fail");
        // The second setting cannot be written (a directory stands in its place).
        fs::remove_file(device.join("gro_flush_timeout")).unwrap();
        fs::create_dir(device.join("gro_flush_timeout")).unwrap();
        let error = DeviceTuning::apply(&device, &record, &device_values()).unwrap_err();
        assert!(error.to_string().contains("gro_flush_timeout"), "{error}");
        assert_eq!(read(&device, "napi_defer_hard_irqs"), "0", "the first one is put back");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn the_next_run_restores_what_a_killed_run_recorded() {
        let (base, device, record) = scratch("killed");
        let tuning = DeviceTuning::apply(&device, &record, &device_values()).unwrap();
        std::mem::forget(tuning); // SIGKILL: no destructor runs
        assert_eq!(read(&device, "gro_flush_timeout"), "200000");
        let restored = recover(&device, &record).unwrap().expect("a record");
        assert_eq!(restored.len(), 2);
        assert_eq!(read(&device, "napi_defer_hard_irqs"), "0");
        assert_eq!(read(&device, "gro_flush_timeout"), "20000");
        assert!(!record.exists());
        assert_eq!(recover(&device, &record).unwrap(), None, "nothing left to restore");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_bad_record_is_refused_named_and_removed() {
        let (base, device, record) = scratch("bad");
        fs::create_dir_all(record.parent().unwrap()).unwrap();
        for text in ["rps_cpus=ff\n", "gro_flush_timeout=1; reboot\n", "napi_defer_hard_irqs\n"] {
            fs::write(&record, text).unwrap();
            let error = recover(&device, &record).unwrap_err();
            assert!(error.to_string().contains("line 1"), "{error}");
            assert!(!record.exists());
            assert_eq!(read(&device, "gro_flush_timeout"), "20000", "nothing written");
        }
        fs::remove_dir_all(base).unwrap();
    }

    fn probe(interface: &str, queue: u32, napi_id: Result<u32, String>) -> SocketProbe {
        SocketProbe { interface: interface.into(), queue, napi_id, marker: None }
    }

    #[test]
    fn decides_by_the_napi_ids() {
        let linked = [probe("eth0", 0, Ok(8193)), probe("eth0", 1, Ok(8194))];
        assert_eq!(decide(BusyPollMode::Auto, &linked), Decision::BusyPoll { unlinked: vec![] });
        assert_eq!(decide(BusyPollMode::Off, &linked), Decision::Interrupt(Fallback::Disabled));

        let veth = [probe("eth0", 0, Ok(8193)), probe("veth1", 0, Ok(0))];
        let decision = decide(BusyPollMode::Auto, &veth);
        assert_eq!(
            decision,
            Decision::Interrupt(Fallback::NoNapi { interface: "veth1".into(), queue: 0 })
        );
        let Decision::Interrupt(why) = decision else { unreachable!() };
        assert!(why.to_string().contains("SO_INCOMING_NAPI_ID 0"), "{why}");
        assert_eq!(
            decide(BusyPollMode::On, &veth),
            Decision::BusyPoll { unlinked: vec![("veth1".into(), 0)] }
        );

        let refused = [probe("eth0", 0, Err("Protocol not available".into()))];
        for mode in [BusyPollMode::Auto, BusyPollMode::On] {
            assert!(matches!(
                decide(mode, &refused),
                Decision::Interrupt(Fallback::SocketOption { .. })
            ));
        }
    }

    #[test]
    fn a_marker_that_got_an_id_engages_auto() {
        let mut marked = probe("lg", 0, Ok(2104));
        marked.marker = Some(7777);
        // The receiving device marked, the transmit-only one not: busy polling, the latter
        // listed as unlinked.
        let probes = [marked.clone(), probe("ls", 0, Ok(0))];
        assert_eq!(
            decide(BusyPollMode::Auto, &probes),
            Decision::BusyPoll { unlinked: vec![("ls".into(), 0)] }
        );
        assert_eq!(decide(BusyPollMode::Off, &probes), Decision::Interrupt(Fallback::Disabled));
        // No marker got an id: the fallback as without markers.
        let unmarked = [probe("lg", 0, Ok(0)), probe("ls", 0, Ok(0))];
        assert_eq!(
            decide(BusyPollMode::Auto, &unmarked),
            Decision::Interrupt(Fallback::NoNapi { interface: "lg".into(), queue: 0 })
        );
    }

    #[test]
    fn warns_once_when_frames_arrive_and_busy_polling_counts_none() {
        let mut check = EngagementCheck::default();
        assert_eq!(check.observe(0, 100), None, "the first look is the baseline");
        assert_eq!(check.observe(5_000, 100), None, "too few frames to judge");
        assert_eq!(check.observe(20_000, 30_000), None, "rising: engaged");
        let warning = check.observe(40_000, 30_000).expect("20000 frames, none busy-polled");
        assert!(warning.contains("20000 frames"), "{warning}");
        assert_eq!(check.observe(80_000, 30_000), None, "once");
        let mut idle = EngagementCheck::default();
        for _ in 0..10 {
            assert_eq!(idle.observe(0, 0), None, "no traffic: nothing to judge");
        }
    }

    #[test]
    fn reads_the_busy_poll_counter() {
        let text = "TcpExt: SyncookiesSent BusyPollRxPackets TCPAutoCorking\n\
                    TcpExt: 0 1234 5\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_busy_poll_rx_packets(text), Some(1234));
        assert_eq!(parse_busy_poll_rx_packets("IpExt: A\nIpExt: 1\n"), None);
        assert_eq!(parse_busy_poll_rx_packets("TcpExt: BusyPollRxPackets\nTcpExt: x\n"), None);
        // This kernel's own file has it.
        if let Ok(text) = fs::read_to_string("/proc/net/netstat") {
            assert!(parse_busy_poll_rx_packets(&text).is_some(), "{text}");
        }
    }

    #[test]
    fn options_on_a_udp_socket_and_its_napi_id() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        // SO_BUSY_POLL above net.core.busy_read needs CAP_NET_ADMIN; xlb runs as root.
        if set_socket_options(fd).is_ok() {
            clear_socket_options(fd).unwrap();
        }
        assert_eq!(napi_id(fd).unwrap(), 0, "loopback links no NAPI");
        drive(fd); // EAGAIN, ignored
        assert!(napi_id(-1).is_err());
    }
}
