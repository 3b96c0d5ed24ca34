//! The kernel's way back in: one TAP device per interface, into which the AF_XDP driver
//! writes the frames the pipeline passes (`Verdict::Pass`), so that the kernel receives them
//! as if they had arrived on a NIC. DPVS's KNI does the same for the frames DPDK took.
//!
//! Why it is needed: a frame the steering program redirected into an AF_XDP socket cannot be
//! handed back to the kernel's receive path (XDP_PASS is decided before the redirect). Most of
//! what xlb is given is its own, but not all: in NAT the program steers every packet from a
//! backend's service address:port, because in XDP a reply cannot be told from the backend's
//! own traffic from that port (a DNS server's query from :53 to an upstream, an NTP server's
//! from :123); the pipeline, which holds the flows, finds no flow and passes it. Without a
//! way back such a frame vanished while counted as "pass".
//!
//! What the kernel then does with a frame written here is what it would have done had the
//! frame arrived on the interface, with three differences the device is set up for:
//! - it arrives on the TAP, which carries the interface's MAC (so frames addressed to the
//!   interface are the host's, not `PACKET_OTHERHOST`) and MTU, no address, `NOARP`, and no
//!   IPv6 (`disable_ipv6`): the kernel never routes anything out of it, and sends nothing
//!   on it on its own (whatever it did send would be read by no one and dropped at the
//!   device's queue);
//! - reverse-path filtering sees the TAP as the ingress: its own `rp_filter` is set to 0,
//!   but the kernel applies the larger of the device's and `all`'s, so with
//!   `net.ipv4.conf.all.rp_filter = 1` (strict) the kernel drops reinjected frames from
//!   sources it routes elsewhere; the daemon warns about that at start;
//! - a frame it forwards leaves by the route's interface, so no ICMP redirect is sent (the
//!   ingress differs from the egress). Forwarding needs `net.ipv4.ip_forward = 1`, as on any
//!   NAT gateway (backends route their own traffic through it).
//!
//! Invariants:
//! - The device is created with `IFF_TUN_EXCL`: an existing device of the same name (someone
//!   else's, or a persistent one) is never attached to; creation fails instead.
//! - It is not persistent: it disappears when its fd closes, so a killed xlb leaves nothing.
//! - [`Tap::inject`] never blocks (the fd is non-blocking) and writes whole frames only: one
//!   `write(2)` is one frame, safe from several worker threads at once.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::dataplane::io::afxdp::netdev::Netdev;

/// The longest interface name the kernel takes (`IFNAMSIZ` less the NUL).
pub const MAX_NAME: usize = libc::IFNAMSIZ - 1;

/// Why a TAP device could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// A name the kernel cannot take.
    #[error("TAP name {name:?}: at most {MAX_NAME} bytes, no '/', ':' or whitespace")]
    BadName { name: String },
    /// A system call failed.
    #[error("TAP {name}: {what}: {source}")]
    Os { name: String, what: &'static str, source: io::Error },
}

/// The TAP device's name for `interface` (index `ifindex`, position `position` in the
/// config): `PREFIX<position>` when a prefix is given (tests name everything they create
/// `xlb-<pid>-…`), else `xlb<ifindex>-<interface>` cut to [`MAX_NAME`] bytes (unique, as the
/// index is).
pub fn tap_name(
    prefix: Option<&str>,
    interface: &str,
    ifindex: u32,
    position: usize,
) -> Result<String, TapError> {
    let name = match prefix {
        Some(prefix) => format!("{prefix}{position}"),
        None => {
            let mut name = format!("xlb{ifindex}-{interface}");
            while name.len() > MAX_NAME {
                name.pop();
            }
            name
        }
    };
    let bad = |c: char| c == '/' || c == ':' || c.is_whitespace();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(bad) {
        return Err(TapError::BadName { name });
    }
    Ok(name)
}

/// A TAP device the kernel receives reinjected frames from.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates TAP `name` with `parent`'s MAC and MTU, no IPv6, `NOARP`, `rp_filter` 0, and
    /// brings it up. Needs `CAP_NET_ADMIN`.
    pub fn create(name: &str, parent: &Netdev) -> Result<Tap, TapError> {
        let os = |what: &'static str| {
            let name = name.to_string();
            move |source: io::Error| TapError::Os { name, what, source }
        };
        let file = create_device(name, libc::IFF_TAP)?;
        let tap = Tap { file, name: name.to_string() };
        // Before the device is up: no IPv6 address, router solicitation or MLD report.
        tap.sysctl("ipv6", "disable_ipv6", "1").or_else(|e| match e {
            // A kernel without IPv6 has no such knob, and nothing to disable.
            TapError::Os { ref source, .. } if source.kind() == io::ErrorKind::NotFound => Ok(()),
            e => Err(e),
        })?;
        tap.sysctl("ipv4", "rp_filter", "0")?;
        let control = control_socket().map_err(os("socket for interface ioctls"))?;
        let mut request = ifreq(name);
        let mut hwaddr: libc::sockaddr =
            libc::sockaddr { sa_family: libc::ARPHRD_ETHER, sa_data: [0; 14] };
        for (to, from) in hwaddr.sa_data.iter_mut().zip(parent.mac.0) {
            *to = from as libc::c_char;
        }
        request.ifr_ifru.ifru_hwaddr = hwaddr;
        interface_ioctl(&control, libc::SIOCSIFHWADDR, &mut request)
            .map_err(os("SIOCSIFHWADDR (the interface's MAC)"))?;
        if let Some(mtu) = parent_mtu(&parent.name) {
            let mut request = ifreq(name);
            request.ifr_ifru.ifru_mtu = mtu;
            interface_ioctl(&control, libc::SIOCSIFMTU, &mut request)
                .map_err(os("SIOCSIFMTU (the interface's MTU)"))?;
        }
        bring_up(name, &control)?;
        Ok(tap)
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands `frame` to the kernel's receive path, as if it arrived on the device. Fails
    /// (never blocks) if the kernel refuses it: the device is down (`EIO`), the frame is
    /// malformed or too short (`EINVAL`), memory is short.
    #[inline]
    pub fn inject(&self, frame: &[u8]) -> io::Result<()> {
        let written = (&self.file).write(frame)?;
        if written != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "frame written in part"));
        }
        Ok(())
    }

    /// Writes `value` to `/proc/sys/net/FAMILY/conf/NAME/KEY` (this network namespace's).
    fn sysctl(&self, family: &str, key: &'static str, value: &str) -> Result<(), TapError> {
        let path = format!("/proc/sys/net/{family}/conf/{}/{key}", self.name);
        std::fs::write(&path, value).map_err(|source| TapError::Os {
            name: self.name.clone(),
            what: key,
            source,
        })
    }
}

/// A TUN device whose routes live exactly as long as the process: xlb's VIP routes point at
/// one (`[fleet] route_table`, control's `vip_routes`; nothing reads it), tunnel health
/// probes are routed into others (control's `tunnel_probe` reads them with
/// [`Tun::read_packet`]). Not persistent: when the fd closes — xlb stops, or is killed — the
/// kernel deletes the device and every route through it. Up, `NOARP`, no IPv6.
#[derive(Debug)]
pub struct Tun {
    _file: File,
    name: String,
}

impl Tun {
    /// Creates TUN `name` (never attaching to an existing device: `IFF_TUN_EXCL`) and
    /// brings it up. Needs `CAP_NET_ADMIN`.
    pub fn create(name: &str) -> Result<Tun, TapError> {
        let os = |what: &'static str| {
            let name = name.to_string();
            move |source: io::Error| TapError::Os { name, what, source }
        };
        let bad = |c: char| c == '/' || c == ':' || c.is_whitespace();
        if name.is_empty() || name.chars().any(bad) {
            return Err(TapError::BadName { name: name.to_string() });
        }
        let file = create_device(name, libc::IFF_TUN)?;
        let ipv6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        if let Err(source) = std::fs::write(&ipv6, "1")
            && source.kind() != io::ErrorKind::NotFound
        {
            return Err(os("disable_ipv6")(source));
        }
        let control = control_socket().map_err(os("socket for interface ioctls"))?;
        bring_up(name, &control)?;
        Ok(Tun { _file: file, name: name.to_string() })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one IP packet the kernel routed into the device; `WouldBlock` when none is
    /// waiting (the device never blocks).
    pub fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self._file).read(buf)
    }

    /// The device's file descriptor (for [`wait_readable`]).
    pub fn fd(&self) -> RawFd {
        self._file.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable, or `timeout` passed (sleeps when `fds` is empty).
pub fn wait_readable(fds: &[RawFd], timeout: Duration) {
    let mut polled: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `polled` is a live array of `polled.len()` pollfd entries for the call; poll
    // only writes their `revents`.
    let _ = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, millis) };
}

/// Opens `/dev/net/tun` (non-blocking) and creates device `name` of `kind` (`IFF_TAP` or
/// `IFF_TUN`), never attaching to an existing one (`IFF_TUN_EXCL`) and without packet
/// information headers. Not persistent: it goes when the returned file closes.
fn create_device(name: &str, kind: libc::c_int) -> Result<File, TapError> {
    let os = |what: &'static str| {
        let name = name.to_string();
        move |source: io::Error| TapError::Os { name, what, source }
    };
    if name.len() > MAX_NAME {
        return Err(TapError::BadName { name: name.to_string() });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(os("opening /dev/net/tun"))?;
    let mut request = ifreq(name);
    request.ifr_ifru.ifru_flags = (kind | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as i16;
    // SAFETY: TUNSETIFF reads (and writes back) one `ifreq`, which lives across the call;
    // the fd is the open tun control device.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if ret < 0 {
        return Err(os("TUNSETIFF (creating the device)")(io::Error::last_os_error()));
    }
    Ok(file)
}

/// Sets device `name` up and `NOARP`, through `control` (a socket for interface ioctls).
fn bring_up(name: &str, control: &OwnedFd) -> Result<(), TapError> {
    let os = |what: &'static str| {
        let name = name.to_string();
        move |source: io::Error| TapError::Os { name, what, source }
    };
    let mut request = ifreq(name);
    interface_ioctl(control, libc::SIOCGIFFLAGS, &mut request).map_err(os("SIOCGIFFLAGS"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_NOARP) as i16;
    interface_ioctl(control, libc::SIOCSIFFLAGS, &mut request)
        .map_err(os("SIOCSIFFLAGS (up, noarp)"))
}

/// Whether the kernel's reverse-path filter is strict for every interface
/// (`net.ipv4.conf.all.rp_filter = 1`): then it drops reinjected frames whose source it
/// routes by another interface than the TAP, whatever the TAP's own setting.
pub fn strict_rp_filter() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
        .is_ok_and(|value| value.trim() == "1")
}

/// The MTU of device `name`, from sysfs.
fn parent_mtu(name: &str) -> Option<i32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu")).ok()?.trim().parse().ok()
}

/// An `ifreq` naming `name` (which fits: checked by the callers), everything else zero.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain data (a name array and a union of plain data): all-zero is a
    // valid value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME)) {
        *to = from as libc::c_char;
    }
    request
}

/// A datagram socket to issue interface ioctls on.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One interface ioctl (`SIOC[GS]IF…`) with `request`.
fn interface_ioctl(
    socket: &OwnedFd,
    request_code: libc::Ioctl,
    request: &mut libc::ifreq,
) -> io::Result<()> {
    // SAFETY: the SIOC[GS]IF* requests read and write one `ifreq`, which lives across the
    // call; `socket` is an open socket.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), request_code, request as *mut libc::ifreq) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_follow_the_interface() {
        assert_eq!(tap_name(None, "eth0", 2, 0).unwrap(), "xlb2-eth0");
        assert_eq!(tap_name(None, "enp129s0f0np0", 12, 1).unwrap(), "xlb12-enp129s0f");
        assert_eq!(tap_name(Some("xlb-4242-"), "eth0", 2, 1).unwrap(), "xlb-4242-1");
        assert!(matches!(
            tap_name(Some("xlb-4242424242-"), "eth0", 2, 0),
            Err(TapError::BadName { .. })
        ));
        assert!(matches!(tap_name(Some("a/b"), "eth0", 2, 0), Err(TapError::BadName { .. })));
    }
}
