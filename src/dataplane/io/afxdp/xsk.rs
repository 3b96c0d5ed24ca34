//! One AF_XDP socket bound to one (interface, queue), with a UMEM of its own, driven in
//! batches.
//!
//! **UMEM per socket, not shared.** Each socket belongs to exactly one worker core, so a
//! private UMEM needs no synchronisation at all, keeps a core's frames in its own memory, and
//! lets a socket be torn down on its own. A shared UMEM would only save a copy when a frame
//! leaves by another interface than it came in on (NAT and FullNAT with two arms); on
//! copy-mode devices (veth) the kernel copies every frame anyway, and one-armed DR, the
//! common case, never crosses. Frames that do cross are copied into the other socket's
//! UMEM.
//!
//! Frame ownership (every frame is in exactly one place): the fill ring, the RX ring, the
//! worker's hands during a batch, the TX ring until its completion comes back, or `free`.
//! A received frame the pipeline transmits on the same interface goes back out in place,
//! without a copy; every other received frame returns to `free` at once.
//!
//! A frame the pipeline passes (`Verdict::Pass`, not xlb's) cannot go back to the kernel
//! from an AF_XDP socket, so it is copied into the interface's TAP device
//! ([`super::tap`]), which hands it to the kernel's receive path; then its frame is freed
//! like the others. Every such frame is counted once: `pass_reinjected`, or, as lost,
//! `pass_reinject_failed` (the kernel refused the write) or `pass_unreinjectable` (the port
//! has no TAP device). None is lost uncounted.
//!
//! Rings are used in batches, with `need_wakeup`: the kernel is kicked (`sendto`, `poll`)
//! only when it says it needs it; except under preferred busy polling
//! ([`super::busypoll`]), where every receive first calls into the socket (`recvfrom`,
//! non-blocking) so that the kernel runs the queue's NAPI in the worker's thread; into the
//! port's marker socket instead where the kernel linked no NAPI to the AF_XDP socket and a
//! marker carries the device's ([`super::marker`], veth).
//!
//! **Transmit keeps up.** In copy mode one `sendto` makes the kernel send at most its TX
//! budget of frames (32 by default) and answer EAGAIN for the rest, which stay on the TX
//! ring. Two things keep a flush from leaving frames behind: at open, copy-mode sockets ask
//! for a budget of [`TX_BUDGET`] (`XDP_MAX_TX_SKB_BUDGET`, Linux 6.17+; an older kernel's
//! refusal is logged once and the socket works with the default); and a flush kicks again
//! while the kernel answers EAGAIN or EBUSY and frames remain on the ring, at most
//! [`MAX_KICKS`] times ([`kick_again`]). What the kernel answered is counted per kick
//! ([`Kick`]: `tx_kicks`, `tx_kick_again`, `tx_kick_dropped`, `tx_kick_errors`), and a flush
//! that still leaves frames on the ring is counted (`tx_backlog_flushes`, `tx_backlog`), so a
//! transmit shortfall cannot hide behind the `send_no_frame` or `tx_ring_full` drops it
//! causes later. Frames left on the ring are not lost: the next flush's kick, or the idle
//! `poll`, sends them. A copy-mode flush with nothing on the ring does not kick at all
//! (completions come back from the kernel's skb destructors, not from kicks); zero-copy
//! kicks while completions are outstanding, as libxdp's samples do.
//!
//! Every syscall is counted per call, never per frame: `tx_kicks`, `rx_wakeups` (fill-ring
//! wakeups), `waits` (`poll(2)` when idle); and each received batch once by size
//! (`rx_batch_sizes`).
//!
//! **Frames longer than a UMEM frame (jumbo MTUs).** A socket opened with
//! [`XskConfig::multi_buffer`] is bound with `XDP_USE_SG` (Linux 6.6+; the steering program
//! is loaded with `BPF_F_XDP_HAS_FRAGS`): the kernel then hands a packet longer than
//! [`MAX_RX_FRAME`] as several descriptors, `XDP_PKT_CONTD` on all but the last. A batch
//! holding no such packet takes the ordinary path unchanged. Otherwise [`split_packets`]
//! groups the batch: runs of single-buffer packets are processed as a batch, each
//! multi-buffer packet alone, gathered into a scratch buffer allocated at open
//! ([`MAX_PACKET_BUFFERS`] frames' worth), where the pipeline rewrites it in place (its
//! length unchanged). Sent back on the same port it is copied back into its own
//! descriptors, which go out as one packet; sent by another port, [`Port::send`] splits it
//! over as many descriptors as it needs (or counts `send_too_big` without multi-buffer);
//! passed, the TAP gets it whole. A packet of more than [`MAX_PACKET_BUFFERS`] buffers, or
//! cut off by the end of what the ring held, is dropped and counted
//! (`rx_too_many_buffers`). On a multi-buffer socket a flush puts only whole packets on
//! the TX ring ([`whole_packets`]): what does not fit is counted per packet as
//! `tx_ring_full`, never split across flushes.
//!
//! Every `unsafe` call here is an xsk-rs ring or UMEM access or one of three plain syscalls
//! on the socket's own descriptor (`setsockopt`, `sendto`, `poll`); the invariant the ring
//! accesses rely on is the ownership rule above (a descriptor passed in belongs to this
//! socket's UMEM and to user space at that moment).

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::umem::frame::DataMut;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::dataplane::Verdict;
use crate::dataplane::worker::{Port, ProcessBatch};
use crate::log::warn;
use crate::report::{BATCH, PortStats};
use crate::snapshot::IfaceId;

use super::tap::Tap;

/// How the socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The NIC DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies frames in and out (all that veth offers).
    Copy,
}

impl std::fmt::Display for BindMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        })
    }
}

/// Sizes of one socket.
#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    /// UMEM frames (4 KiB each, libxdp's default).
    pub frames: u32,
    /// Entries in each of the four rings.
    pub ring: u32,
    /// Ask for zero-copy first (falls back to copy); false binds in copy mode directly.
    pub try_zero_copy: bool,
    /// Bind with `XDP_USE_SG` (multi-buffer, Linux 6.6+): packets longer than
    /// [`MAX_RX_FRAME`] arrive and leave over several descriptors. For an interface whose
    /// MTU lets in such frames; a kernel or driver that refuses it fails the open.
    pub multi_buffer: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig { frames: 4096, ring: 2048, try_zero_copy: true, multi_buffer: false }
    }
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("{interface} queue {queue}: {what}: {source}")]
    Os { interface: String, queue: u32, what: &'static str, source: io::Error },
    #[error("{interface} queue {queue}: bad sizes: {detail}")]
    Config { interface: String, queue: u32, detail: String },
}

/// What a failed UMEM creation reports: xsk-rs's reason with the errno it carries (its
/// `Display` shows only the reason), and for the errors the kernel gives when the UMEM's
/// pinned pages exceed `RLIMIT_MEMLOCK` (charged unless the process has `CAP_IPC_LOCK`)
/// what the limit is and how to raise it, since that is how an operator meets it: a
/// container or service manager that cannot or did not raise the default 8 MiB.
fn umem_error(error: &xsk_rs::umem::UmemCreateError, frames: u32) -> io::Error {
    use std::error::Error as _;
    let reason = error.to_string();
    let Some(os) = error.source().and_then(|s| s.downcast_ref::<io::Error>()) else {
        return io::Error::other(reason);
    };
    let hint = match os.raw_os_error() {
        Some(libc::EPERM | libc::ENOMEM | libc::ENOBUFS) => {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit writes one `rlimit` into the struct it is handed, which
            // lives on this stack frame for the whole call.
            let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            let now = if !read {
                "unknown".to_string()
            } else if limit.rlim_cur == libc::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                format!("{:.1} MiB", mib(limit.rlim_cur))
            };
            format!(
                " (the UMEM pins {:.1} MiB, charged to RLIMIT_MEMLOCK, now {now}, unless xlb has \
                 CAP_IPC_LOCK: raise the limit (`ulimit -l unlimited`, LimitMEMLOCK=infinity in \
                 a systemd unit) or grant CAP_IPC_LOCK)",
                mib(u64::from(frames) * 4096)
            )
        }
        _ => String::new(),
    };
    io::Error::new(os.kind(), format!("{reason}: {os}{hint}"))
}

/// The longest frame a UMEM frame receives: the frame size (xsk-rs's default, libxdp's
/// `XSK_UMEM__DEFAULT_FRAME_SIZE`, 4096 bytes) less the kernel's `XDP_PACKET_HEADROOM`
/// (256). A longer one takes several buffers on a multi-buffer socket
/// ([`XskConfig::multi_buffer`]); on any other the kernel drops it before the ring (counted
/// in `XDP_STATISTICS` `rx_dropped`, reported as [`PortStats::rx_kernel_dropped`]).
pub const MAX_RX_FRAME: u32 = 4096 - 256;

/// Most descriptors one packet may span on a multi-buffer socket: the kernel's
/// `MAX_SKB_FRAGS` (17) plus the first buffer, as the AF_XDP documentation bounds it. A
/// longer packet is dropped, counted.
pub const MAX_PACKET_BUFFERS: usize = 18;

/// `XDP_PKT_CONTD` in a descriptor's options: more buffers of this packet follow.
const XDP_PKT_CONTD: u32 = 1;

/// How a received batch's descriptors group into packets ([`split_packets`]); ranges index
/// the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// Consecutive packets of one buffer each.
    Singles(std::ops::Range<usize>),
    /// One packet over several buffers (at most [`MAX_PACKET_BUFFERS`]).
    Multi(std::ops::Range<usize>),
    /// One packet dropped: more than [`MAX_PACKET_BUFFERS`] buffers, or its last buffer
    /// not in the batch (the next batch then opens with the rest of it).
    Dropped(std::ops::Range<usize>),
    /// The rest of a packet dropped in an earlier batch: freed, not counted again.
    Remainder(std::ops::Range<usize>),
}

/// Groups a batch's descriptors into packets from each one's `XDP_PKT_CONTD` (`more`, in
/// ring order) into `spans` (cleared first). `skipping`: the previous batch ended inside a
/// packet (dropped), whose remaining buffers open this one. Returns whether this batch
/// ends inside a packet in turn.
pub fn split_packets(more: &[bool], skipping: bool, spans: &mut Vec<Span>) -> bool {
    spans.clear();
    let n = more.len();
    let mut at = 0;
    if skipping {
        while at < n && more[at] {
            at += 1;
        }
        if at == n {
            if n > 0 {
                spans.push(Span::Remainder(0..n));
            }
            return true;
        }
        at += 1;
        spans.push(Span::Remainder(0..at));
    }
    while at < n {
        let start = at;
        while at < n && more[at] {
            at += 1;
        }
        if at == n {
            spans.push(Span::Dropped(start..n));
            return true;
        }
        at += 1;
        match at - start {
            1 => match spans.last_mut() {
                Some(Span::Singles(run)) if run.end == start => run.end = at,
                _ => spans.push(Span::Singles(start..at)),
            },
            buffers if buffers > MAX_PACKET_BUFFERS => spans.push(Span::Dropped(start..at)),
            _ => spans.push(Span::Multi(start..at)),
        }
    }
    false
}

/// How many of the `queued` descriptors for TX (`more(i)`: the i-th has `XDP_PKT_CONTD`) go on
/// a ring with `room` free entries without splitting a packet: the longest prefix that
/// fits and ends on a packet's last buffer.
pub fn whole_packets(queued: usize, room: usize, more: impl Fn(usize) -> bool) -> usize {
    let fits = queued.min(room);
    (0..fits).rev().find(|&i| !more(i)).map_or(0, |last| last + 1)
}

/// The buffers a frame of `len` bytes takes when sent: one per [`MAX_RX_FRAME`] bytes
/// started (one at least).
pub fn buffers_for(len: usize) -> usize {
    len.div_ceil(MAX_RX_FRAME as usize).max(1)
}

/// Frames kept out of the fill ring for frames the worker sends on its own.
const SEND_RESERVE: usize = 256;
/// How long to keep retrying a bind that fails with EBUSY (the previous owner of the queue
/// may still be closing).
const BUSY_RETRY_FOR: Duration = Duration::from_secs(3);

/// The socket option that sets how many frames one copy-mode `sendto` may send
/// (`include/uapi/linux/if_xdp.h`, Linux 6.17+; not in `libc` yet). The kernel accepts 32
/// up to the TX ring's size (EACCES otherwise); older kernels answer ENOPROTOOPT.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// The kernel's own copy-mode TX budget, what a socket has when it cannot be raised.
pub const DEFAULT_TX_BUDGET: u32 = 32;
/// The copy-mode TX budget asked for at open (capped at the TX ring's size): several
/// receive batches' worth, so one kick sends a flush's frames.
pub const TX_BUDGET: u32 = 256;
/// Most transmit kicks per flush while the kernel stops early with frames on the TX ring.
pub const MAX_KICKS: u32 = 8;
/// Set once a refusal of [`XDP_MAX_TX_SKB_BUDGET`] has been logged (one line per process,
/// not one per socket).
static BUDGET_REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// What the kernel answered one transmit kick (`sendto(fd, NULL, 0, MSG_DONTWAIT)`), as
/// `net/xdp/xsk.c` (`__xsk_sendmsg`, `__xsk_generic_xmit`) gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// 0: copy mode went through the TX ring until it was empty (or the device has no such
    /// TX queue); zero-copy woke the driver, which sends on its own.
    Done,
    /// EAGAIN: the kernel stopped early with frames left on the ring, on its per-call budget,
    /// a full completion ring, a busy driver queue (frame put back) or an skb allocation
    /// that may succeed later. Kicking again sends more.
    Again,
    /// EBUSY: the driver dropped the frame it was given (`NET_XMIT_DROP`; its completion
    /// comes back, the frame never left) and the kernel stopped there. Kicking again sends
    /// the rest.
    Dropped,
    /// Anything else: ENOBUFS (no memory for an skb), ENETDOWN (interface down), ENXIO (not
    /// bound), or an errno the kernel should not give. Kicking again now would not help.
    Failed,
}

impl Kick {
    /// Classifies `sendto`'s result: `Ok` for a return of 0 or more, else its errno.
    pub fn of(result: Result<(), i32>) -> Kick {
        match result {
            Ok(()) => Kick::Done,
            Err(libc::EAGAIN) => Kick::Again,
            Err(libc::EBUSY) => Kick::Dropped,
            Err(_) => Kick::Failed,
        }
    }

    /// Counts this answer in `stats` (the kick itself included).
    pub fn count(self, stats: &mut PortStats) {
        stats.tx_kicks += 1;
        match self {
            Kick::Done => {}
            Kick::Again => stats.tx_kick_again += 1,
            Kick::Dropped => stats.tx_kick_dropped += 1,
            Kick::Failed => stats.tx_kick_errors += 1,
        }
    }
}

/// Whether a flush kicks again after `kick`, having made `kicks` so far, with `left` frames
/// still on the TX ring: only when the kernel stopped early (EAGAIN, EBUSY), something is
/// left, and fewer than [`MAX_KICKS`] kicks were made.
pub fn kick_again(kick: Kick, kicks: u32, left: usize) -> bool {
    matches!(kick, Kick::Again | Kick::Dropped) && left > 0 && kicks < MAX_KICKS
}

/// One AF_XDP socket and its UMEM.
pub struct XskPort {
    interface: String,
    queue: u32,
    mode: BindMode,
    umem: Umem,
    fill: FillQueue,
    comp: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    /// Frames owned by user space and unused.
    free: Vec<FrameDesc>,
    /// Scratch for one received batch.
    rx_descs: Vec<FrameDesc>,
    /// Frames to put on the TX ring at the next flush.
    tx_ready: Vec<FrameDesc>,
    /// Bound with `XDP_USE_SG`: packets may span several descriptors.
    multi_buffer: bool,
    /// Multi-buffer only: one packet gathered from its buffers
    /// (`MAX_PACKET_BUFFERS * MAX_RX_FRAME` bytes, allocated at open); empty otherwise.
    scratch: Vec<u8>,
    /// Multi-buffer only: the spans of the batch being handled.
    spans: Vec<Span>,
    /// Multi-buffer only: the last batch ended inside a packet, whose rest is dropped.
    rx_skipping: bool,
    /// Frames on the TX ring whose completion has not come back.
    tx_in_flight: usize,
    ring: usize,
    /// Frames one copy-mode kick may send ([`TX_BUDGET`] if the kernel took it, else its
    /// default).
    tx_budget: u32,
    /// Where frames the pipeline passes go: the interface's TAP device, shared by the ports
    /// of that interface. None: they are counted as `pass_unreinjectable` and dropped.
    reinject: Option<Arc<Tap>>,
    /// Preferred busy polling is on: every poll calls into the socket so that the kernel
    /// runs the queue's NAPI in the worker's thread ([`super::busypoll`]).
    drive_napi: bool,
    /// Where the kernel linked no NAPI to this socket: the marker socket whose NAPI the
    /// worker drives instead ([`super::marker`]).
    marker: Option<super::marker::Marker>,
    stats: PortStats,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("interface", &self.interface)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .field("free", &self.free.len())
            .field("tx_in_flight", &self.tx_in_flight)
            .finish()
    }
}

impl XskPort {
    /// Binds a socket to `interface` queue `queue`, zero-copy if the driver offers it, else
    /// copy mode, with `need_wakeup`. No XDP program is loaded: xlb's own steering program
    /// must be attached and given [`XskPort::fd`] for this queue. EBUSY (the queue is still
    /// being released by a previous socket) is retried with backoff for a few seconds.
    pub fn open(interface: &str, queue: u32, config: XskConfig) -> Result<XskPort, XskError> {
        let err = |what: &'static str, source: io::Error| XskError::Os {
            interface: interface.to_string(),
            queue,
            what,
            source,
        };
        let bad =
            |detail: String| XskError::Config { interface: interface.to_string(), queue, detail };
        let ring = QueueSize::new(config.ring).map_err(|e| bad(e.to_string()))?;
        let frames = NonZeroU32::new(config.frames).ok_or_else(|| bad("zero frames".into()))?;
        if (config.frames as usize) < 2 * SEND_RESERVE || config.frames < config.ring {
            return Err(bad(format!(
                "{} frames is too few for rings of {} (need at least the ring size and {})",
                config.frames,
                config.ring,
                2 * SEND_RESERVE
            )));
        }
        let umem_config = UmemConfig::builder()
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let (umem, free) = Umem::new(umem_config, frames, false)
            .map_err(|e| err("creating the UMEM", umem_error(&e, config.frames)))?;
        let name = interface.parse().map_err(|_| bad("interface name has a NUL".into()))?;

        let modes: &[BindMode] = if config.try_zero_copy {
            &[BindMode::ZeroCopy, BindMode::Copy]
        } else {
            &[BindMode::Copy]
        };
        let mut last_error = None;
        for &mode in modes {
            let mut bind = BindFlags::XDP_USE_NEED_WAKEUP
                | match mode {
                    BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
                    BindMode::Copy => BindFlags::XDP_COPY,
                };
            if config.multi_buffer {
                bind |= BindFlags::XDP_USE_SG;
            }
            let socket_config = SocketConfig::builder()
                .rx_queue_size(ring)
                .tx_queue_size(ring)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(bind)
                .build();
            if config.multi_buffer
                && let Some(refusal) = super::fault::refused_io(super::fault::Step::Bind)
            {
                last_error = Some(refusal);
                continue;
            }
            let started = StdInstant::now();
            let mut backoff = Duration::from_millis(20);
            loop {
                // SAFETY: the UMEM is not shared with any other socket (each port makes its
                // own), so the shared-UMEM double-free hazard xsk-rs warns of cannot arise;
                // and XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD is set regardless.
                match unsafe { Socket::new(socket_config, &umem, &name, queue) } {
                    Ok((tx, rx, Some((fill, comp)))) => {
                        let mut port = XskPort {
                            interface: interface.to_string(),
                            queue,
                            mode,
                            umem,
                            fill,
                            comp,
                            rx,
                            tx,
                            free,
                            // A multi-buffer batch may run past BATCH to its last packet's end.
                            rx_descs: vec![
                                FrameDesc::default();
                                BATCH
                                    + if config.multi_buffer {
                                        MAX_PACKET_BUFFERS
                                    } else {
                                        0
                                    }
                            ],
                            tx_ready: Vec::with_capacity(config.ring as usize),
                            multi_buffer: config.multi_buffer,
                            scratch: if config.multi_buffer {
                                vec![0; MAX_PACKET_BUFFERS * MAX_RX_FRAME as usize]
                            } else {
                                Vec::new()
                            },
                            spans: Vec::new(),
                            rx_skipping: false,
                            tx_in_flight: 0,
                            ring: config.ring as usize,
                            tx_budget: DEFAULT_TX_BUDGET,
                            reinject: None,
                            drive_napi: false,
                            marker: None,
                            stats: PortStats::default(),
                        };
                        if mode == BindMode::Copy {
                            port.raise_tx_budget();
                        }
                        port.refill();
                        return Ok(port);
                    }
                    Ok((_, _, None)) => {
                        return Err(err(
                            "binding",
                            io::Error::other("no fill/completion rings for a fresh UMEM"),
                        ));
                    }
                    Err(e) => {
                        let os = std::error::Error::source(&e)
                            .and_then(|s| s.downcast_ref::<io::Error>());
                        let busy = os.and_then(io::Error::raw_os_error) == Some(libc::EBUSY);
                        if busy && started.elapsed() < BUSY_RETRY_FOR {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_millis(250));
                            continue;
                        }
                        last_error = Some(match os.and_then(io::Error::raw_os_error) {
                            Some(code) => io::Error::from_raw_os_error(code),
                            None => io::Error::other(e.to_string()),
                        });
                        break;
                    }
                }
            }
        }
        let what = if config.multi_buffer {
            "binding with XDP_USE_SG (multi-buffer AF_XDP: Linux 6.6+, and the driver's support)"
        } else {
            "binding"
        };
        Err(err(what, last_error.unwrap_or_else(|| io::Error::other("no bind mode left"))))
    }

    /// Whether the socket is bound with `XDP_USE_SG` (packets over several descriptors).
    pub fn multi_buffer(&self) -> bool {
        self.multi_buffer
    }

    pub fn mode(&self) -> BindMode {
        self.mode
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Hands the frames the pipeline passes to the kernel through `tap` from now on.
    pub fn set_reinject(&mut self, tap: Arc<Tap>) {
        self.reinject = Some(tap);
    }

    /// Sets the busy-poll socket options, calls into the socket once (which links a
    /// zero-copy socket to its NAPI) and returns the NAPI id the kernel linked (0: none).
    /// The port drives the NAPI itself only once [`XskPort::set_drive_napi`] says so.
    pub fn enable_busy_poll(&mut self) -> io::Result<u32> {
        super::busypoll::set_socket_options(self.fd())?;
        super::busypoll::drive(self.fd());
        super::busypoll::napi_id(self.fd())
    }

    /// Whether every [`Port::poll`] calls into the socket first (busy polling engaged), or
    /// the socket is put back in interrupt mode (options cleared).
    pub fn set_drive_napi(&mut self, drive: bool) -> io::Result<()> {
        self.drive_napi = drive;
        if drive { Ok(()) } else { super::busypoll::clear_socket_options(self.fd()) }
    }

    /// The NAPI id the kernel linked to the socket (0: none yet), or that its marker
    /// carries.
    pub fn napi_id(&self) -> io::Result<u32> {
        super::busypoll::napi_id(self.napi_fd())
    }

    /// Busy-polls the NAPI `marker` carries instead of the socket's own (none linked).
    pub fn set_marker(&mut self, marker: super::marker::Marker) {
        self.marker = Some(marker);
    }

    /// The descriptor whose NAPI busy polling drives: the marker's if there is one, else the
    /// socket's own.
    pub fn napi_fd(&self) -> RawFd {
        self.marker.as_ref().map_or_else(|| self.fd(), |m| m.fd())
    }

    /// The socket's descriptor, for the steering program's XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Frames one copy-mode transmit kick may send: [`TX_BUDGET`] (or the TX ring's size if
    /// smaller) when the kernel took it, else the kernel's default, 32.
    pub fn tx_budget(&self) -> u32 {
        self.tx_budget
    }

    /// Sets the socket's send buffer to `bytes` (`SO_SNDBUFFORCE`, past `net.core.wmem_max`;
    /// needs CAP_NET_ADMIN; the kernel doubles it for its bookkeeping, as for `SO_SNDBUF`).
    /// In copy mode every frame in flight is an skb charged to it until the receiver frees
    /// it, so it bounds the frames in flight (the benchmark's generator raises it so that it
    /// sends at its own pace, not its peer's).
    pub fn set_send_buffer(&mut self, bytes: u32) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a plain setsockopt on this socket's own open descriptor; the kernel reads
        // exactly `size_of::<c_int>()` bytes from `value`, a live local.
        let ret = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// The socket's send buffer in bytes as the kernel keeps it (`SO_SNDBUF`: twice what was
    /// set).
    pub fn send_buffer(&self) -> io::Result<u32> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a plain getsockopt on this socket's own open descriptor; the kernel writes
        // at most `len` bytes into `value`, a live local, and `len` is a live local too.
        let ret = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if ret == 0 {
            u32::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Asks the kernel to send up to [`TX_BUDGET`] frames per copy-mode kick instead of 32.
    /// A kernel that refuses (before 6.17: ENOPROTOOPT) leaves the default; the first
    /// refusal in the process is logged, and the socket works either way (a flush kicks
    /// again while frames remain, see [`kick_again`]).
    fn raise_tx_budget(&mut self) {
        let budget = TX_BUDGET.min(self.ring as u32);
        // SAFETY: a plain setsockopt on this socket's own open descriptor; the kernel reads
        // exactly `size_of::<u32>()` bytes from `budget`, a live local.
        let ret = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_XDP,
                XDP_MAX_TX_SKB_BUDGET,
                (&budget as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            self.tx_budget = budget;
        } else if !BUDGET_REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
            warn!(
                "{} queue {}: the kernel refused a copy-mode TX budget of {budget} frames per \
                 kick (XDP_MAX_TX_SKB_BUDGET, Linux 6.17+): {}; sending with its default of \
                 {DEFAULT_TX_BUDGET} and kicking again while frames remain",
                self.interface,
                self.queue,
                io::Error::last_os_error()
            );
        }
    }

    /// Queues up to `count` frames of `len` bytes made in place, for senders that make their
    /// own frames (the benchmark's generator): each is a free UMEM frame handed to `make`
    /// holding what it held when it last left (this socket's own earlier frame, or zeros the
    /// first time: UMEM frames are never written by the kernel in transmit), so `make` need
    /// rewrite only what changes. The frames go on the TX ring at the next
    /// [`Port::flush`]; returns how many were queued, fewer when free frames run out
    /// (counted in `send_no_frame`) or `len` exceeds a frame (`send_too_big`, none queued).
    pub fn send_in_place(
        &mut self,
        count: usize,
        len: usize,
        make: &mut dyn FnMut(&mut [u8]),
    ) -> usize {
        for queued in 0..count {
            let Some(mut desc) = self.free.pop() else {
                self.stats.send_no_frame += 1;
                return queued;
            };
            let made = {
                // SAFETY: `desc` came from `free`: a frame of this UMEM owned by user space
                // alone until it is produced to the TX ring at the next flush.
                let mut data = unsafe { self.umem.data_mut(&mut desc) };
                let mut cursor = data.cursor();
                let fits = cursor.buf_len() >= len;
                if fits {
                    // The frame's length, over the bytes it still holds.
                    cursor.set_pos(len);
                    make(data.contents_mut());
                }
                fits
            };
            if !made {
                self.free.push(desc);
                self.stats.send_too_big += 1;
                return queued;
            }
            self.tx_ready.push(desc);
        }
        count
    }

    /// Frames queued or on the TX ring whose completion has not come back: zero once
    /// everything sent has left.
    pub fn tx_pending(&self) -> usize {
        self.tx_ready.len() + self.tx_in_flight
    }

    /// Frames on the TX ring the kernel has not taken yet (reads the kernel's consumer
    /// position: exact).
    fn tx_left(&mut self) -> usize {
        self.ring.saturating_sub(self.tx.nb_free_exact() as usize)
    }

    /// One transmit kick, counted.
    fn kick(&mut self) -> Kick {
        // SAFETY: a zero-length sendto with no buffer and no address on this socket's own
        // open descriptor: the kernel reads no user memory (AF_XDP takes the frames from the
        // TX ring, which this socket owns).
        let ret = unsafe {
            libc::sendto(self.fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0)
        };
        let kick = Kick::of(if ret < 0 {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        });
        kick.count(&mut self.stats);
        kick
    }

    /// Kicks until the TX ring is drained or [`kick_again`] says stop (see [`drain_tx`]);
    /// counts a copy-mode flush that leaves frames behind (in zero-copy the driver takes
    /// them from the ring on its own time, so frames there after a kick are no shortfall).
    fn kick_until_drained(&mut self) {
        let left = drain_tx(self);
        self.stats.tx_backlog = left as u64;
        if left > 0 && self.mode == BindMode::Copy {
            self.stats.tx_backlog_flushes += 1;
        }
    }

    /// Moves completed TX frames back to `free`.
    fn reclaim(&mut self) {
        let mut done = [FrameDesc::default(); BATCH];
        while self.tx_in_flight > 0 {
            // SAFETY: completions carry descriptors of frames this socket put on its TX
            // ring, all in this socket's UMEM.
            let n = unsafe { self.comp.consume(&mut done) };
            if n == 0 {
                break;
            }
            self.tx_in_flight = self.tx_in_flight.saturating_sub(n);
            self.free.extend_from_slice(&done[..n]);
        }
    }

    /// Gives the kernel free frames to receive into, keeping a reserve for sends.
    fn refill(&mut self) {
        let spare = self.free.len().saturating_sub(SEND_RESERVE);
        if spare == 0 {
            return;
        }
        let room = self.fill.nb_free(spare as u32) as usize;
        let count = spare.min(room);
        if count == 0 {
            return;
        }
        let start = self.free.len() - count;
        // SAFETY: the descriptors come from `free`: frames of this UMEM owned by user space
        // and used nowhere else. Once produced they belong to the kernel until RX returns
        // them, so they are removed from `free` right after.
        let produced = unsafe { self.fill.produce(&self.free[start..]) };
        self.free.truncate(start + (count - produced));
        self.wake_fill();
    }

    /// Wakes the kernel to fill the receive ring if it asks for it (a `poll` that does not
    /// wait), counted.
    fn wake_fill(&mut self) {
        if self.fill.needs_wakeup() {
            self.stats.rx_wakeups += 1;
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }
}

/// What [`drain_tx`] drives: a socket's TX ring and its kernel (a simulated one in tests).
trait TxKicker {
    /// One `sendto`, counted.
    fn kick(&mut self) -> Kick;
    /// Frames on the TX ring the kernel has not taken.
    fn left(&mut self) -> usize;
    /// Takes completions back (a full completion ring stops the kernel too).
    fn reclaim(&mut self);
}

impl TxKicker for XskPort {
    fn kick(&mut self) -> Kick {
        XskPort::kick(self)
    }
    fn left(&mut self) -> usize {
        self.tx_left()
    }
    fn reclaim(&mut self) {
        XskPort::reclaim(self)
    }
}

/// Kicks until the kernel has taken the TX ring's frames, it fails, or [`MAX_KICKS`]
/// kicks were made ([`kick_again`]), reclaiming completions between kicks; returns the
/// frames left on the ring.
fn drain_tx(tx: &mut impl TxKicker) -> usize {
    let mut kicks = 0;
    loop {
        let kick = tx.kick();
        kicks += 1;
        let left = tx.left();
        if !kick_again(kick, kicks, left) {
            return left;
        }
        tx.reclaim();
    }
}

/// Hands a frame the pipeline passed to the kernel through `reinject`, counted either way.
fn pass_to_kernel(reinject: &Option<Arc<Tap>>, stats: &mut PortStats, frame: &[u8]) {
    match reinject {
        Some(tap) => match tap.inject(frame) {
            Ok(()) => stats.pass_reinjected += 1,
            Err(_) => stats.pass_reinject_failed += 1,
        },
        None => stats.pass_unreinjectable += 1,
    }
}

impl XskPort {
    /// Runs the pipeline on `descs`, at most [`BATCH`] packets of one buffer each, just
    /// consumed from RX, and disposes of each by its verdict.
    fn process_singles(
        &mut self,
        descs: &mut [FrameDesc],
        process: &mut ProcessBatch<'_>,
        own: IfaceId,
        forward: &mut dyn FnMut(IfaceId, &[u8]),
    ) {
        let received = descs.len();
        debug_assert!(received <= BATCH);
        let mut verdicts = [Verdict::Pass; BATCH];
        {
            let mut views: [Option<DataMut<'_>>; BATCH] = std::array::from_fn(|_| None);
            for (view, desc) in views.iter_mut().zip(descs.iter_mut()) {
                // SAFETY: each descriptor names a distinct frame of this UMEM that user space
                // owns (just consumed from RX), so the mutable views never alias, and the
                // UMEM outlives them (it is borrowed from `self`).
                *view = Some(unsafe { self.umem.data_mut(desc) });
            }
            let mut frames: [&mut [u8]; BATCH] = std::array::from_fn(|_| <&mut [u8]>::default());
            for (frame, view) in frames.iter_mut().zip(views.iter_mut().flatten()) {
                *frame = view.contents_mut();
            }
            process(&mut frames[..received], &mut verdicts[..received]);
            for (frame, verdict) in frames[..received].iter().zip(&verdicts[..received]) {
                match *verdict {
                    Verdict::Tx(egress) if egress != own => forward(egress, frame),
                    Verdict::Pass => pass_to_kernel(&self.reinject, &mut self.stats, frame),
                    _ => {}
                }
            }
        }
        for (desc, verdict) in descs.iter().zip(&verdicts[..received]) {
            match *verdict {
                Verdict::Tx(egress) if egress == own => self.tx_ready.push(*desc),
                _ => self.free.push(*desc),
            }
        }
    }

    /// Runs the pipeline on one packet over several buffers (`descs`, at most
    /// [`MAX_PACKET_BUFFERS`], just consumed from RX): gathered into the scratch buffer,
    /// rewritten there in place, then copied back into its own buffers and queued whole
    /// (sent on this port), handed whole to `forward` or the TAP, or freed.
    fn process_multi(
        &mut self,
        descs: &mut [FrameDesc],
        process: &mut ProcessBatch<'_>,
        own: IfaceId,
        forward: &mut dyn FnMut(IfaceId, &[u8]),
    ) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut len = 0;
        let mut fits = true;
        for desc in descs.iter() {
            // SAFETY: the descriptor names a frame of this UMEM that user space owns (just
            // consumed from RX); the view is read and dropped at once.
            let data = unsafe { self.umem.data(desc) };
            let part = data.contents();
            match scratch.get_mut(len..len + part.len()) {
                Some(to) => to.copy_from_slice(part),
                None => fits = false,
            }
            len += part.len();
        }
        let verdict = if fits {
            let mut verdicts = [Verdict::Pass];
            process(&mut [&mut scratch[..len]], &mut verdicts);
            Some(verdicts[0])
        } else {
            // Not reachable while the kernel keeps a buffer within MAX_RX_FRAME; counted.
            self.stats.rx_too_many_buffers += 1;
            None
        };
        match verdict {
            Some(Verdict::Tx(egress)) if egress == own => {
                let last = descs.len() - 1;
                let mut at = 0;
                for (i, desc) in descs.iter_mut().enumerate() {
                    {
                        // SAFETY: as above; the pipeline's rewrite goes back into the buffer
                        // it came from, the same number of bytes.
                        let mut data = unsafe { self.umem.data_mut(desc) };
                        let part = data.contents_mut();
                        part.copy_from_slice(&scratch[at..at + part.len()]);
                        at += part.len();
                    }
                    desc.set_options(if i < last { XDP_PKT_CONTD } else { 0 });
                }
                self.tx_ready.extend_from_slice(descs);
            }
            verdict => {
                match verdict {
                    Some(Verdict::Tx(egress)) => forward(egress, &scratch[..len]),
                    Some(Verdict::Pass) => {
                        pass_to_kernel(&self.reinject, &mut self.stats, &scratch[..len])
                    }
                    _ => {}
                }
                self.free.extend_from_slice(descs);
            }
        }
        self.scratch = scratch;
    }

    /// The multi-buffer receive path: completes a packet the batch's bound cut (the kernel
    /// publishes a packet's buffers together), groups the batch ([`split_packets`]) and
    /// handles each span; a batch of single-buffer packets only takes the ordinary path.
    /// Returns the packets received.
    fn poll_multi(
        &mut self,
        descs: &mut [FrameDesc],
        mut received: usize,
        process: &mut ProcessBatch<'_>,
        own: IfaceId,
        forward: &mut dyn FnMut(IfaceId, &[u8]),
    ) -> usize {
        while received < descs.len() && descs[received - 1].has_more_frames() {
            // SAFETY: as for the batch: descriptors of this UMEM's frames, user space's now.
            let more = unsafe { self.rx.consume(&mut descs[received..received + 1]) };
            if more == 0 {
                break;
            }
            received += more;
        }
        if !self.rx_skipping && !descs[..received].iter().any(FrameDesc::has_more_frames) {
            self.stats.count_batch(received);
            self.process_singles(&mut descs[..received], process, own, forward);
            return received;
        }
        let mut more = [false; BATCH + MAX_PACKET_BUFFERS];
        for (more, desc) in more.iter_mut().zip(&descs[..received]) {
            *more = desc.has_more_frames();
        }
        let mut spans = std::mem::take(&mut self.spans);
        self.rx_skipping = split_packets(&more[..received], self.rx_skipping, &mut spans);
        let packets = spans
            .iter()
            .map(|span| match span {
                Span::Singles(run) => run.len(),
                Span::Multi(_) | Span::Dropped(_) => 1,
                Span::Remainder(_) => 0,
            })
            .sum();
        if packets > 0 {
            self.stats.count_batch(packets);
        }
        for span in &spans {
            match span.clone() {
                Span::Singles(run) => self.process_singles(&mut descs[run], process, own, forward),
                Span::Multi(packet) => {
                    self.process_multi(&mut descs[packet], process, own, forward)
                }
                Span::Dropped(packet) => {
                    self.stats.rx_too_many_buffers += 1;
                    self.free.extend_from_slice(&descs[packet]);
                }
                Span::Remainder(rest) => self.free.extend_from_slice(&descs[rest]),
            }
        }
        self.spans = spans;
        packets
    }

    /// Queues `frame` (longer than one buffer) over as many free buffers as it needs,
    /// `XDP_PKT_CONTD` on all but the last; multi-buffer sockets only.
    fn send_multi(&mut self, frame: &[u8]) -> bool {
        let needed = buffers_for(frame.len());
        if needed > MAX_PACKET_BUFFERS {
            self.stats.send_too_big += 1;
            return false;
        }
        if self.free.len() < needed {
            self.stats.send_no_frame += 1;
            return false;
        }
        let queued = self.tx_ready.len();
        for (i, part) in frame.chunks(MAX_RX_FRAME as usize).enumerate() {
            let Some(mut desc) = self.free.pop() else { break };
            let written = {
                // SAFETY: `desc` came from `free`: a frame of this UMEM owned by user space.
                let mut data = unsafe { self.umem.data_mut(&mut desc) };
                let mut cursor = data.cursor();
                cursor.set_pos(0);
                io::Write::write_all(&mut cursor, part).is_ok()
            };
            desc.set_options(if i + 1 < needed { XDP_PKT_CONTD } else { 0 });
            if !written {
                // Not reachable (a part is at most one buffer); the frame is refused whole.
                self.free.push(desc);
                let partial = self.tx_ready.split_off(queued);
                self.free.extend_from_slice(&partial);
                self.stats.send_too_big += 1;
                return false;
            }
            self.tx_ready.push(desc);
        }
        true
    }

    /// Puts the queued descriptors on the TX ring, whole packets only ([`whole_packets`]);
    /// the packets that do not fit are dropped, counted per packet as `tx_ring_full`.
    fn produce_whole_packets(&mut self) {
        let queued = self.tx_ready.len();
        let room = self.tx.nb_free(queued as u32) as usize;
        let fits = whole_packets(queued, room, |i| self.tx_ready[i].has_more_frames());
        // SAFETY: every descriptor in `tx_ready` is a frame of this UMEM owned by user
        // space, holding a whole packet's part; once produced it belongs to the kernel until
        // its completion comes back through `reclaim`.
        let produced = unsafe { self.tx.produce(&self.tx_ready[..fits]) };
        let packets = |descs: &[FrameDesc]| descs.iter().filter(|d| !d.has_more_frames()).count();
        self.tx_in_flight += produced;
        self.stats.tx_packets += packets(&self.tx_ready[..produced]) as u64;
        self.stats.tx_ring_full += packets(&self.tx_ready[produced..]) as u64;
        self.free.extend_from_slice(&self.tx_ready[produced..]);
        self.tx_ready.clear();
    }
}

impl Port for XskPort {
    fn poll(
        &mut self,
        process: &mut ProcessBatch<'_>,
        own: IfaceId,
        forward: &mut dyn FnMut(IfaceId, &[u8]),
    ) -> usize {
        if self.drive_napi {
            super::busypoll::drive(self.napi_fd());
        }
        let mut descs = std::mem::take(&mut self.rx_descs);
        // SAFETY: RX hands out descriptors of frames in this socket's UMEM, which user space
        // owns from now until they are produced to TX or back to the fill ring.
        let received = unsafe { self.rx.consume(&mut descs[..BATCH]) };
        if received == 0 {
            self.rx_descs = descs;
            self.wake_fill();
            return 0;
        }
        let received = if self.multi_buffer {
            self.poll_multi(&mut descs, received, process, own, forward)
        } else {
            self.stats.count_batch(received);
            self.process_singles(&mut descs[..received], process, own, forward);
            received
        };
        self.rx_descs = descs;
        received
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        if self.multi_buffer && frame.len() > MAX_RX_FRAME as usize {
            return self.send_multi(frame);
        }
        let Some(mut desc) = self.free.pop() else {
            self.stats.send_no_frame += 1;
            return false;
        };
        // A freed receive buffer may still carry XDP_PKT_CONTD.
        desc.set_options(0);
        let written = {
            // SAFETY: `desc` came from `free`: a frame of this UMEM owned by user space alone.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            let mut cursor = data.cursor();
            cursor.set_pos(0);
            io::Write::write_all(&mut cursor, frame).is_ok()
        };
        if !written {
            self.free.push(desc);
            self.stats.send_too_big += 1;
            return false;
        }
        self.tx_ready.push(desc);
        true
    }

    fn flush(&mut self) {
        if self.multi_buffer && !self.tx_ready.is_empty() {
            self.produce_whole_packets();
        }
        if !self.tx_ready.is_empty() {
            // SAFETY: every descriptor in `tx_ready` is a frame of this UMEM owned by user
            // space, holding a whole frame; once produced it belongs to the kernel until its
            // completion comes back through `reclaim`.
            let produced = unsafe { self.tx.produce(&self.tx_ready) };
            self.tx_in_flight += produced;
            self.stats.tx_packets += produced as u64;
            if produced < self.tx_ready.len() {
                // The TX ring is full: the rest are dropped, counted, and their frames freed.
                self.stats.tx_ring_full += (self.tx_ready.len() - produced) as u64;
                self.free.extend_from_slice(&self.tx_ready[produced..]);
            }
            self.tx_ready.clear();
        }
        if self.tx_in_flight == 0 {
            self.stats.tx_backlog = 0;
        } else if self.tx.needs_wakeup() {
            // Copy mode: a kick only sends what is on the ring. Zero-copy: the driver may
            // need one to complete what it sent.
            if self.mode == BindMode::ZeroCopy || self.tx_left() > 0 {
                self.stats.tx_wakeups += 1;
                self.kick_until_drained();
            } else {
                self.stats.tx_backlog = 0;
            }
        }
        self.reclaim();
        self.refill();
        debug_assert!(self.tx_in_flight <= self.ring + BATCH);
    }

    fn wait(&mut self, timeout: Duration) {
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        self.stats.waits += 1;
        let _ = self.rx.poll(millis);
    }

    /// One `poll(2)` on every port's socket: the first frame on any of them ends the wait
    /// (a worker serving two interfaces would otherwise sleep blind).
    fn wait_any(ports: &mut [(IfaceId, Self)], timeout: Duration) {
        const MAX: usize = 16;
        let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX];
        for (slot, (_, port)) in fds.iter_mut().zip(ports.iter()) {
            *slot = libc::pollfd { fd: port.fd(), events: libc::POLLIN, revents: 0 };
        }
        // One syscall, counted once: on the first port.
        if let Some((_, first)) = ports.first_mut() {
            first.stats.waits += 1;
        }
        let count = ports.len().min(MAX);
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `count` (at most MAX) initialised pollfd entries
        // holding the ports' open socket fds; poll only writes their `revents`.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), count as libc::nfds_t, millis) };
    }

    fn stats(&self) -> PortStats {
        let mut stats = self.stats;
        // One getsockopt per report; the kernel's count is cumulative, like ours.
        if let Ok(kernel) = self.rx.fd().xdp_statistics() {
            stats.rx_kernel_dropped = kernel.rx_dropped();
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::io::afxdp::testns::Netns;

    /// A copy-mode kernel as `__xsk_generic_xmit` behaves: each kick sends up to `budget`
    /// frames and answers EAGAIN if frames remain; `script` overrides the answers in turn.
    struct FakeKernel {
        ring: usize,
        budget: usize,
        script: Vec<Result<(), i32>>,
        stats: PortStats,
        reclaims: u32,
    }

    impl FakeKernel {
        fn new(ring: usize, budget: usize) -> Self {
            FakeKernel {
                ring,
                budget,
                script: Vec::new(),
                stats: PortStats::default(),
                reclaims: 0,
            }
        }
    }

    impl TxKicker for FakeKernel {
        fn kick(&mut self) -> Kick {
            let answer = if self.script.is_empty() {
                let sent = self.ring.min(self.budget);
                self.ring -= sent;
                if self.ring > 0 { Err(libc::EAGAIN) } else { Ok(()) }
            } else {
                self.script.remove(0)
            };
            let kick = Kick::of(answer);
            kick.count(&mut self.stats);
            kick
        }
        fn left(&mut self) -> usize {
            self.ring
        }
        fn reclaim(&mut self) {
            self.reclaims += 1;
        }
    }

    /// `XDP_PKT_CONTD` flags from a picture: one letter a buffer, `m` for "more follow",
    /// `l` for a packet's last (or only) buffer.
    fn flags(picture: &str) -> Vec<bool> {
        picture.chars().filter(|c| !c.is_whitespace()).map(|c| c == 'm').collect()
    }

    #[test]
    fn a_batch_groups_into_runs_of_single_buffer_packets_and_whole_multi_buffer_packets() {
        use Span::*;
        let too_long = format!("{}l", "m".repeat(MAX_PACKET_BUFFERS));
        let longest = format!("{}l", "m".repeat(MAX_PACKET_BUFFERS - 1));
        // (picture, skipping, spans, ends inside a packet)
        let cases: Vec<(&str, bool, Vec<Span>, bool)> = vec![
            ("", false, vec![], false),
            ("lll", false, vec![Singles(0..3)], false),
            ("l mml ll", false, vec![Singles(0..1), Multi(1..4), Singles(4..6)], false),
            ("ml ml", false, vec![Multi(0..2), Multi(2..4)], false),
            ("l mm", false, vec![Singles(0..1), Dropped(1..3)], true),
            ("ml l", true, vec![Remainder(0..2), Singles(2..3)], false),
            ("l l", true, vec![Remainder(0..1), Singles(1..2)], false),
            ("mmm", true, vec![Remainder(0..3)], true),
            ("", true, vec![], true),
            (&longest, false, vec![Multi(0..MAX_PACKET_BUFFERS)], false),
            (&too_long, false, vec![Dropped(0..MAX_PACKET_BUFFERS + 1)], false),
        ];
        let mut spans = vec![Singles(7..9)];
        for (picture, skipping, want, cut) in cases {
            let ends_inside = split_packets(&flags(picture), skipping, &mut spans);
            assert_eq!(spans, want, "{picture:?} skipping {skipping}");
            assert_eq!(ends_inside, cut, "{picture:?} skipping {skipping}");
        }
    }

    #[test]
    fn tx_takes_whole_packets_only() {
        // (queued, room, descriptors that go on the ring)
        let cases = [
            ("lll", 8, 3),
            ("lll", 2, 2),
            ("mml l", 4, 4),
            ("mml l", 3, 3),
            ("mml l", 2, 0),
            ("l mml", 3, 1),
            ("mml mml", 5, 3),
            ("", 4, 0),
            ("l", 0, 0),
        ];
        for (picture, room, want) in cases {
            let more = flags(picture);
            assert_eq!(whole_packets(more.len(), room, |i| more[i]), want, "{picture:?} {room}");
        }
    }

    #[test]
    fn a_frame_takes_one_buffer_per_buffer_length_started() {
        let buffer = MAX_RX_FRAME as usize;
        for (len, want) in [(0, 1), (60, 1), (buffer, 1), (buffer + 1, 2), (9018, 3)] {
            assert_eq!(buffers_for(len), want, "{len} bytes");
        }
        assert!(buffers_for(65535 + 18) <= MAX_PACKET_BUFFERS, "the largest IP packet fits");
    }

    #[test]
    fn errnos_mean_what_the_kernel_says() {
        assert_eq!(Kick::of(Ok(())), Kick::Done);
        assert_eq!(Kick::of(Err(libc::EAGAIN)), Kick::Again);
        assert_eq!(Kick::of(Err(libc::EBUSY)), Kick::Dropped);
        for errno in [libc::ENOBUFS, libc::ENETDOWN, libc::ENXIO, libc::EOPNOTSUPP, 0] {
            assert_eq!(Kick::of(Err(errno)), Kick::Failed, "errno {errno}");
        }
        let mut stats = PortStats::default();
        for kick in [Kick::Done, Kick::Again, Kick::Again, Kick::Dropped, Kick::Failed] {
            kick.count(&mut stats);
        }
        assert_eq!(
            (stats.tx_kicks, stats.tx_kick_again, stats.tx_kick_dropped, stats.tx_kick_errors),
            (5, 2, 1, 1)
        );
    }

    #[test]
    fn kicks_again_only_while_the_kernel_stopped_early_with_frames_left() {
        assert!(kick_again(Kick::Again, 1, 32));
        assert!(kick_again(Kick::Dropped, 1, 32), "EBUSY: one frame dropped, the rest go");
        assert!(!kick_again(Kick::Again, 1, 0), "nothing left");
        assert!(!kick_again(Kick::Done, 1, 32), "the kernel says done (e.g. no such queue)");
        assert!(!kick_again(Kick::Failed, 1, 32), "ENETDOWN, ENOBUFS: not now");
        assert!(kick_again(Kick::Again, MAX_KICKS - 1, 32));
        assert!(!kick_again(Kick::Again, MAX_KICKS, 32), "bounded");
    }

    /// The transmit cap of issue 11: with the kernel's default budget one kick sends 32 of a
    /// flush's 64 frames; the flush kicks again until the ring is empty.
    #[test]
    fn a_flush_drains_the_ring_at_the_default_budget() {
        let mut kernel = FakeKernel::new(64, DEFAULT_TX_BUDGET as usize);
        assert_eq!(drain_tx(&mut kernel), 0, "nothing left on the ring");
        assert_eq!((kernel.stats.tx_kicks, kernel.stats.tx_kick_again), (2, 1));
        assert_eq!(kernel.reclaims, 1, "completions reclaimed between kicks");

        // With the raised budget one kick sends it all.
        let mut kernel = FakeKernel::new(200, TX_BUDGET as usize);
        assert_eq!(drain_tx(&mut kernel), 0);
        assert_eq!((kernel.stats.tx_kicks, kernel.stats.tx_kick_again), (1, 0));
    }

    #[test]
    fn a_flush_stops_at_the_kick_bound_and_on_errors_and_says_what_is_left() {
        let mut kernel = FakeKernel::new(1000, 32);
        assert_eq!(drain_tx(&mut kernel), 1000 - 32 * MAX_KICKS as usize);
        assert_eq!(kernel.stats.tx_kicks, u64::from(MAX_KICKS));
        assert_eq!(kernel.stats.tx_kick_again, u64::from(MAX_KICKS));

        let mut kernel = FakeKernel::new(100, 32);
        kernel.script = vec![Err(libc::EBUSY), Err(libc::ENETDOWN)];
        assert_eq!(drain_tx(&mut kernel), 100, "down: left for later");
        assert_eq!(
            (kernel.stats.tx_kicks, kernel.stats.tx_kick_dropped, kernel.stats.tx_kick_errors),
            (2, 1, 1)
        );

        let mut kernel = FakeKernel::new(100, 32);
        kernel.script = vec![Ok(())];
        assert_eq!(drain_tx(&mut kernel), 100, "done with frames left: no kick loop");
        assert_eq!(kernel.stats.tx_kicks, 1);
    }

    /// At open a copy-mode socket takes the raised TX budget (Linux 6.17+); where the
    /// kernel refuses it (here: a TX ring smaller than the kernel's least budget, 32) the
    /// socket opens all the same with the default, and the refusal is logged once.
    #[test]
    fn copy_mode_sockets_raise_the_tx_budget_and_open_without_it() {
        if !crate::testkit::root_or_skip("xsk_tx_budget") {
            return;
        }
        let netns = Netns::create(format!("xlb-{}-xsk", std::process::id()));
        netns.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]);
        netns.ip(&["link", "set", "veth0", "up"]);
        netns.ip(&["link", "set", "veth1", "up"]);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut version = release.split(['.', '-']).map(|n| n.parse::<u32>().unwrap_or(0));
        let has_option = (version.next().unwrap_or(0), version.next().unwrap_or(0)) >= (6, 17);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    netns.enter();
                    let copy = XskConfig { try_zero_copy: false, ..XskConfig::default() };
                    let port = XskPort::open("veth0", 0, copy).expect("open");
                    assert_eq!(port.mode(), BindMode::Copy);
                    if has_option {
                        assert_eq!(port.tx_budget(), TX_BUDGET, "kernel {release}");
                    }
                    let small = XskConfig {
                        frames: 512,
                        ring: 16,
                        try_zero_copy: false,
                        multi_buffer: false,
                    };
                    let port = XskPort::open("veth1", 0, small).expect("opens with the default");
                    assert_eq!(port.tx_budget(), DEFAULT_TX_BUDGET);
                    assert!(BUDGET_REFUSAL_LOGGED.load(Ordering::Relaxed), "logged");
                })
                .join()
                .expect("the namespace thread");
        });
    }
}
