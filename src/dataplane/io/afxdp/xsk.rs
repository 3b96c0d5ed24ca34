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
//! Every `unsafe` call here is an xsk-rs ring or UMEM access; the invariant they all rely on
//! is the ownership rule above (a descriptor passed in belongs to this socket's UMEM and to
//! user space at that moment).

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::umem::frame::DataMut;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::dataplane::worker::{Port, PortStats, ProcessBatch};
use crate::dataplane::{BATCH, IfaceId, Verdict};

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
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig { frames: 4096, ring: 2048, try_zero_copy: true }
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

/// The longest frame a UMEM frame receives: the frame size (xsk-rs's default, libxdp's
/// `XSK_UMEM__DEFAULT_FRAME_SIZE`, 4096 bytes) less the kernel's `XDP_PACKET_HEADROOM` (256). The kernel drops a longer one before the
/// ring (counted in `XDP_STATISTICS` `rx_dropped`, reported as
/// [`PortStats::rx_kernel_dropped`]).
pub const MAX_RX_FRAME: u32 = 4096 - 256;

/// Frames kept out of the fill ring for frames the worker sends on its own.
const SEND_RESERVE: usize = 256;
/// How long to keep retrying a bind that fails with EBUSY (the previous owner of the queue
/// may still be closing).
const BUSY_RETRY_FOR: Duration = Duration::from_secs(3);

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
    /// Frames on the TX ring whose completion has not come back.
    tx_in_flight: usize,
    ring: usize,
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
            .map_err(|e| err("creating the UMEM", io::Error::other(e.to_string())))?;
        let name = interface.parse().map_err(|_| bad("interface name has a NUL".into()))?;

        let modes: &[BindMode] = if config.try_zero_copy {
            &[BindMode::ZeroCopy, BindMode::Copy]
        } else {
            &[BindMode::Copy]
        };
        let mut last_error = None;
        for &mode in modes {
            let bind = BindFlags::XDP_USE_NEED_WAKEUP
                | match mode {
                    BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
                    BindMode::Copy => BindFlags::XDP_COPY,
                };
            let socket_config = SocketConfig::builder()
                .rx_queue_size(ring)
                .tx_queue_size(ring)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(bind)
                .build();
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
                            rx_descs: vec![FrameDesc::default(); BATCH],
                            tx_ready: Vec::with_capacity(config.ring as usize),
                            tx_in_flight: 0,
                            ring: config.ring as usize,
                            reinject: None,
                            drive_napi: false,
                            marker: None,
                            stats: PortStats::default(),
                        };
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
        Err(err("binding", last_error.unwrap_or_else(|| io::Error::other("no bind mode left"))))
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
        if self.fill.needs_wakeup() {
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
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
        let received = unsafe { self.rx.consume(&mut descs) };
        if received == 0 {
            self.rx_descs = descs;
            if self.fill.needs_wakeup() {
                let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
            }
            return 0;
        }
        self.stats.rx_packets += received as u64;
        self.stats.batches += 1;
        let mut verdicts = [Verdict::Pass; BATCH];
        {
            let mut views: [Option<DataMut<'_>>; BATCH] = std::array::from_fn(|_| None);
            for (view, desc) in views.iter_mut().zip(descs[..received].iter_mut()) {
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
                    Verdict::Pass => match &self.reinject {
                        Some(tap) => match tap.inject(frame) {
                            Ok(()) => self.stats.pass_reinjected += 1,
                            Err(_) => self.stats.pass_reinject_failed += 1,
                        },
                        None => self.stats.pass_unreinjectable += 1,
                    },
                    _ => {}
                }
            }
        }
        for (desc, verdict) in descs[..received].iter().zip(&verdicts[..received]) {
            match *verdict {
                Verdict::Tx(egress) if egress == own => self.tx_ready.push(*desc),
                _ => self.free.push(*desc),
            }
        }
        self.rx_descs = descs;
        received
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        let Some(mut desc) = self.free.pop() else {
            self.stats.send_no_frame += 1;
            return false;
        };
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
        if self.tx_in_flight > 0 && self.tx.needs_wakeup() {
            self.stats.tx_wakeups += 1;
            let _ = self.tx.wakeup();
        }
        self.reclaim();
        self.refill();
        debug_assert!(self.tx_in_flight <= self.ring + BATCH);
    }

    fn wait(&mut self, timeout: Duration) {
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
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
