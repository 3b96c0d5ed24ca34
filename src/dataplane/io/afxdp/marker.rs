//! Busy polling a device's NAPI through a marker socket, for drivers that link no NAPI to
//! their AF_XDP sockets (veth): the workaround, kept apart from the honest path.
//!
//! The kernel busy-polls the NAPI whose id a socket carries. An AF_XDP socket on veth
//! (kernel 6.18) never carries one (veth registers its XDP receive queue with NAPI id 0),
//! but veth's NAPI has an id (with native XDP or GRO on), and an ordinary UDP socket that
//! receives a datagram through it takes that id (`sk_mark_napi_id_once`). A worker that
//! calls `recvfrom(MSG_DONTWAIT)` on that UDP socket, with the busy-poll options set and its
//! receive queue empty, makes the kernel run the veth NAPI in the worker's thread: the NAPI
//! runs the XDP program, which redirects into the AF_XDP socket as usual.
//!
//! Invariants:
//! - **The honest path comes first.** [`super::busypoll::start`] opens a marker only for a
//!   device whose AF_XDP socket reads NAPI id 0, only when the operator named a marker port
//!   (`--busy-poll-marker PORT`), and only for a device with a single xlb socket (veth has
//!   one NAPI per receive queue, and a marker carries the NAPI of the queue its datagram
//!   came through).
//! - **The datagrams come from outside.** xlb cannot send through the peer of its own
//!   device; the marker socket ([`Marker::open`]: UDP, bound to the device with
//!   `SO_BINDTODEVICE` and to `0.0.0.0:PORT`) waits at start, at most [`MARKER_WAIT`], for a
//!   datagram that arrived through the device (the steering program passes it: it is not
//!   for a VIP). Whoever sends to any address of the device at that port marks it: the
//!   operator, a monitor, `bench/sidebyside` (its generator and sink namespaces send one
//!   every 50 ms until xlb is ready). No datagram in time: busy polling falls back as it
//!   does without a NAPI id, with a warning saying so.
//! - **It is engaged only with the device tuned.** The NAPI must stay in the worker's hands
//!   between calls: `napi_defer_hard_irqs` and `gro_flush_timeout` on the device (set by
//!   [`super::busypoll::DeviceTuning`], as for any busy polling) keep veth's notification
//!   masked after a busy poll, so the peer's transmit does not hand the NAPI back to the
//!   softirq or the NAPI thread. Measured on veth, kernel 6.18: with them, `TcpExt:
//!   BusyPollRxPackets` rose by 85% (threaded NAPI) to 96% (softirq) of the frames the
//!   AF_XDP socket received; without them, by under 0.1%.
//! - The counter understates: each call polls the NAPI twice (the busy poll, counted, then
//!   `busy_poll_stop`'s poll, which re-arms the device and is not counted), so frames that
//!   second poll takes are busy-polled but not counted; one request at a time it counts
//!   every frame. It also counts frames the socket's full ring then dropped.
//! - Every datagram that reaches the marker is drained by the worker's calls (zero-length
//!   receives), so its queue stays empty, which busy polling needs.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::busypoll;

/// How long the start waits for a marker datagram on each device.
pub const MARKER_WAIT: Duration = Duration::from_secs(3);

/// A UDP socket bound to one device and port, through which the device's NAPI is busy-polled
/// once a datagram marked it.
#[derive(Debug)]
pub struct Marker {
    socket: UdpSocket,
    device: String,
    port: u16,
}

impl Marker {
    /// Opens the marker of `device` on UDP `port` (any address of the device), with the
    /// busy-poll options set. A port already taken on the device is an error.
    pub fn open(device: &str, port: u16) -> io::Result<Marker> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        // Bound to the device before the port: markers of several devices share the port,
        // and a socket of someone else's on it (unbound to a device) makes this fail
        // (EADDRINUSE) rather than share or steal its datagrams.
        socket.bind_device(Some(device.as_bytes()))?;
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
        let socket: UdpSocket = socket.into();
        busypoll::set_socket_options(socket.as_raw_fd())?;
        Ok(Marker { socket, device: device.to_string(), port })
    }

    /// Waits at most `wait` for a datagram through the device, draining what arrives, and
    /// returns the NAPI id the socket then carries (0: none came, or the device has no
    /// NAPI).
    pub fn wait_for_napi(&self, wait: Duration) -> io::Result<u32> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 64];
        loop {
            let id = busypoll::napi_id(self.fd())?;
            let left = deadline.saturating_duration_since(Instant::now());
            if id != 0 || left.is_zero() {
                self.socket.set_nonblocking(true)?;
                while self.socket.recv(&mut buf).is_ok() {}
                return Ok(id);
            }
            self.socket.set_read_timeout(Some(left.min(Duration::from_millis(50))))?;
            match self.socket.recv(&mut buf) {
                Ok(_) => {}
                // A signal (the test harness's, or SIGHUP to `xlb run`) interrupting the
                // wait is not a failure: the loop waits again until its deadline.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_datagram_the_marker_carries_no_napi() {
        // Loopback has no NAPI, and nothing is sent: the wait ends at its bound with id 0.
        let Ok(marker) = Marker::open("lo", 0) else {
            eprintln!("skipped: SO_BINDTODEVICE needs CAP_NET_RAW");
            return;
        };
        let started = Instant::now();
        assert_eq!(marker.wait_for_napi(Duration::from_millis(120)).unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_millis(120));
        assert_eq!(marker.device(), "lo");
        // The port is the marker's alone on that device.
        let port = marker.socket.local_addr().unwrap().port();
        let taken = Marker::open("lo", port).unwrap_err();
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse, "{taken}");
    }
}
