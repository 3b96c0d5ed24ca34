//! A raw `AF_PACKET` socket that sends whole Ethernet frames out of one interface: the
//! traffic generator's last way out where the kernel refuses `BPF_PROG_RUN`'s live frames
//! and no AF_XDP socket opens either (`crate::bench::generator`; its AF_XDP sender,
//! `crate::bench::txgen`, comes first). One `sendto` per frame, so it is slower than live
//! frames by an order of magnitude; it exists so that a lab still floods, not to benchmark.
//!
//! Invariants: the socket's protocol is 0, so it receives nothing; every frame goes to the
//! interface named at creation, as the caller built it (Ethernet header included).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;

use socket2::{Domain, Socket, Type};

/// Sends frames out of one interface. Needs `CAP_NET_RAW`.
#[derive(Debug)]
pub struct FrameSender {
    socket: OwnedFd,
    ifindex: u32,
}

impl FrameSender {
    /// A sender out of interface `ifindex` (in this thread's network namespace).
    pub fn new(ifindex: u32) -> io::Result<FrameSender> {
        // Protocol 0: the socket takes in no frame.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        Ok(FrameSender { socket: socket.into(), ifindex })
    }

    /// Sends `frame` as it is. `ENOBUFS` (the device's queue is full) is an error the
    /// caller may count and go on from.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_ll is a valid value of the plain C struct.
        let mut to: libc::sockaddr_ll = unsafe { mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = i32::try_from(self.ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        to.sll_halen = 6;
        if let Some(destination) = frame.get(..6) {
            to.sll_addr[..6].copy_from_slice(destination);
        }
        // SAFETY: `frame` and `to` outlive the call, and their lengths are the ones given.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                ptr::from_ref(&to).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
