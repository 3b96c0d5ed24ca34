//! Health probes through the VIP for tunnel services (`forward = "tunnel"`, `via_vip =
//! true`): the probe to VIP:port is wrapped like the service's traffic (IPIP or GUE) and sent
//! to each real server, so a real server that lost its VIP or its decapsulator fails the
//! check even though its own address still answers.
//!
//! The kernel cannot wrap (this box may have no `ipip`/`fou` module), so xlb does it in user
//! space:
//! - The probe socket carries the real server's mark ([`probe_mark`]), as for DR; the
//!   policy rule of [`crate::control::probe_routes`] sends it to the real server's table,
//!   which routes the VIP to a TUN device of that real server ([`device_name`]: `xlbp` and
//!   the address in hex), with the box's address as source. A TUN carries no mark, so the
//!   device is what names the real server: one device per real server, whatever the number
//!   of its services.
//! - [`TunnelProbes`] holds the devices (non-persistent: gone with the process, routes
//!   included) and one thread that reads them. Each packet read is matched by its
//!   destination (VIP, protocol, port) to a service of that real server, whose encap says
//!   how it leaves: IPIP through a raw socket of protocol 4 (the kernel adds the outer header,
//!   source from its route to the real server), GUE (direct IP-in-UDP) as the payload of a UDP
//!   datagram to the real server's `gue_port`. Anything else read is dropped.
//! - The real server unwraps it and answers from the VIP to the box's address directly; that
//!   answer belongs to the kernel (xlb's XDP program passes traffic to the box's own
//!   address), so the probe socket completes as any other.
//!
//! Invariants: a device exists before a route names it and goes only after its routes are
//! removed ([`crate::control::probe_routes::ProbeRoutes::sync`] orders it); the relay thread
//! runs while at least one device is open and stops (joined) when [`TunnelProbes`] drops.
//! IPv4 only, as `via_vip` is (the config refuses it on IPv6 services).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::control::config::Config;
use crate::control::health::probe_mark;
use crate::flow::{Encap, ForwardMode};
use crate::log::warn;

/// The name prefix of xlb's tunnel probe devices.
pub const DEVICE_PREFIX: &str = "xlbp";

/// The TUN device of tunnel probes to real server `rip`: `xlbp` and the address in 8 hex
/// digits (12 characters, within `IFNAMSIZ`).
pub fn device_name(rip: Ipv4Addr) -> String {
    format!("{DEVICE_PREFIX}{:08x}", rip.to_bits())
}

/// A real server's tunnel services probed through the VIP: (VIP, IP protocol number,
/// port) to the service's encap.
pub type Services = BTreeMap<(Ipv4Addr, u8, u16), Encap>;

/// What `config` needs: every real server of every tunnel service with `via_vip`, with
/// those services. (The probe's mark and table are [`probe_mark`] of the key.)
pub fn wanted(config: &Config) -> BTreeMap<Ipv4Addr, Services> {
    let mut wanted: BTreeMap<Ipv4Addr, Services> = BTreeMap::new();
    for service in &config.services {
        let (IpAddr::V4(vip), Some(tunnel)) = (service.vip, service.tunnel) else { continue };
        if service.forward != ForwardMode::Tunnel || !service.health.via_vip {
            continue;
        }
        for backend in &service.backends {
            let IpAddr::V4(rip) = backend.addr else { continue };
            let key = (vip, service.proto.number(), service.port);
            wanted.entry(rip).or_default().insert(key, tunnel.encap);
        }
    }
    debug_assert!(wanted.keys().all(|rip| probe_mark(*rip) == rip.to_bits()));
    wanted
}

/// The encap of the service `packet` (an IPv4 packet read from a real server's device) is
/// for, if it is one of `services`' (TCP or UDP to the VIP:port, first fragment).
pub fn encap_for(packet: &[u8], services: &Services) -> Option<Encap> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    if packet[0] >> 4 != 4 || header_len < 20 || packet.len() < header_len + 4 {
        return None;
    }
    let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
    if fragment_offset != 0 {
        return None;
    }
    let proto = packet[9];
    let vip = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let port = u16::from_be_bytes([packet[header_len + 2], packet[header_len + 3]]);
    services.get(&(vip, proto, port)).copied()
}

/// The sockets that send wrapped probes: a raw IPIP socket (opened on first use: it needs
/// `CAP_NET_RAW`) and a UDP socket for GUE.
#[derive(Debug, Default)]
pub struct Sender {
    ipip: Option<Socket>,
    udp: Option<UdpSocket>,
}

impl Sender {
    /// Sends `packet` (a whole IPv4 packet) to `rip` wrapped as `encap`: IPIP (the kernel
    /// writes the outer header, protocol 4) or GUE (the packet is the UDP payload to
    /// `rip:port`).
    pub fn send(&mut self, encap: Encap, rip: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
        match encap {
            Encap::Ipip => {
                if self.ipip.is_none() {
                    let protocol = Protocol::from(libc::IPPROTO_IPIP);
                    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(protocol))?;
                    // Never read: keep what the kernel copies to it (every IPIP packet the box
                    // receives) small.
                    socket.set_recv_buffer_size(1)?;
                    self.ipip = Some(socket);
                }
                let to = SocketAddr::V4(SocketAddrV4::new(rip, 0));
                self.ipip.as_ref().map_or(Ok(0), |s| s.send_to(packet, &to.into()))?;
            }
            Encap::Gue { port } => {
                if self.udp.is_none() {
                    self.udp = Some(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?);
                }
                self.udp.as_ref().map_or(Ok(0), |s| s.send_to(packet, (rip, port)))?;
            }
        }
        Ok(())
    }
}

/// A device the relay reads (the daemon's TUN): one IP packet per read, never blocking
/// (`WouldBlock` when empty).
pub trait ProbeDevice: Send + Sync {
    /// Reads one packet into `buf`.
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// The file descriptor to wait on.
    fn fd(&self) -> RawFd;
}

/// Creates the device of the given name.
pub type OpenDevice = Box<dyn Fn(&str) -> io::Result<Box<dyn ProbeDevice>> + Send>;
/// Waits until one of the descriptors is readable or the time is up.
pub type WaitReadable = fn(&[RawFd], Duration);

struct Entry {
    device: Arc<dyn ProbeDevice>,
    services: Arc<Services>,
}

type Table = Arc<Mutex<BTreeMap<Ipv4Addr, Entry>>>;

/// The tunnel probe devices of this process and the thread that relays what they carry.
pub struct TunnelProbes {
    open: OpenDevice,
    wait: WaitReadable,
    table: Table,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TunnelProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rips: Vec<Ipv4Addr> =
            self.table.lock().map(|t| t.keys().copied().collect()).unwrap_or_default();
        f.debug_struct("TunnelProbes").field("real_servers", &rips).finish()
    }
}

/// How long the relay waits before it looks at the table again.
const WAIT: Duration = Duration::from_millis(100);

impl TunnelProbes {
    /// No device yet; `open` creates them, `wait` waits on them.
    pub fn new(open: OpenDevice, wait: WaitReadable) -> TunnelProbes {
        TunnelProbes { open, wait, table: Arc::default(), stop: Arc::default(), thread: None }
    }

    /// Opens the devices of `wanted` that are not open yet and takes its services; starts
    /// the relay. Errors name the device; what opened stays.
    pub fn open(&mut self, wanted: &BTreeMap<Ipv4Addr, Services>) -> Result<(), String> {
        let mut errors = Vec::new();
        {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            for (rip, services) in wanted {
                if let Some(entry) = table.get_mut(rip) {
                    entry.services = Arc::new(services.clone());
                    continue;
                }
                let name = device_name(*rip);
                match (self.open)(&name) {
                    Ok(device) => {
                        let entry = Entry {
                            device: Arc::from(device),
                            services: Arc::new(services.clone()),
                        };
                        table.insert(*rip, entry);
                    }
                    Err(e) => errors.push(format!("tunnel probe device {name}: {e}")),
                }
            }
        }
        if self.thread.is_none() && !wanted.is_empty() {
            let (table, stop, wait) = (self.table.clone(), self.stop.clone(), self.wait);
            let thread = std::thread::Builder::new()
                .name("xlb-tunnel-probes".into())
                .spawn(move || relay(&table, &stop, wait))
                .map_err(|e| format!("tunnel probe relay thread: {e}"));
            match thread {
                Ok(thread) => self.thread = Some(thread),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Closes the devices of real servers `wanted` no longer has.
    pub fn close_unwanted(&mut self, wanted: &BTreeMap<Ipv4Addr, Services>) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|rip, _| wanted.contains_key(rip));
    }

    /// The names of the open devices.
    pub fn devices(&self) -> Vec<String> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.keys().map(|rip| device_name(*rip)).collect()
    }
}

impl Drop for TunnelProbes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The relay loop: wait for packets on the devices, send each one wrapped to its real
/// server, until `stop`.
fn relay(table: &Table, stop: &AtomicBool, wait: WaitReadable) {
    let mut sender = Sender::default();
    let mut buf = vec![0u8; 65536];
    let mut last_error = None;
    while !stop.load(Ordering::Relaxed) {
        let entries: Vec<(Ipv4Addr, Arc<dyn ProbeDevice>, Arc<Services>)> = {
            let table = table.lock().unwrap_or_else(|e| e.into_inner());
            table.iter().map(|(rip, e)| (*rip, e.device.clone(), e.services.clone())).collect()
        };
        let fds: Vec<RawFd> = entries.iter().map(|(_, device, _)| device.fd()).collect();
        wait(&fds, WAIT);
        for (rip, device, services) in &entries {
            while let Ok(len) = device.read_packet(&mut buf) {
                let packet = &buf[..len];
                let Some(encap) = encap_for(packet, services) else { continue };
                if let Err(e) = sender.send(encap, *rip, packet) {
                    // Logged once per kind of error: the probes fail and say so anyway.
                    let text = e.to_string();
                    if last_error.as_ref() != Some(&text) {
                        warn!("tunnel probe to {rip} ({}): {text}", encap.name());
                        last_error = Some(text);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn packet(proto: u8, dst: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 1, 1, 2];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x9c, 0x40]);
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    /// A service of `forward` over two real servers: one behind the gateway (tunnel; on the
    /// link for DR, which cannot route), one on the link.
    fn config(forward: &str, encap: &str) -> Config {
        let far = if forward == "tunnel" { "10.2.0.11" } else { "10.1.1.11" };
        let text = format!(
            r#"
[[interface]]
name = "eth0"
addr = "10.1.1.2/24"
gateway = "10.1.1.1"

[[service]]
vip = "10.1.1.10"
port = 80
forward = "{forward}"
{encap}
  [service.health]
  check = "tcp"
  via_vip = true
  [[service.backend]]
  addr = "{far}"
  [[service.backend]]
  addr = "10.1.1.12"
"#
        );
        Config::parse(&text, "t.toml").unwrap()
    }

    #[test]
    fn tunnel_services_probing_through_the_vip_want_a_device_per_real_server() {
        let gue = wanted(&config("tunnel", "encap = \"gue\"\ngue_port = 5555"));
        let services =
            Services::from([((Ipv4Addr::new(10, 1, 1, 10), 6, 80), Encap::Gue { port: 5555 })]);
        assert_eq!(
            gue,
            BTreeMap::from([
                (Ipv4Addr::new(10, 1, 1, 12), services.clone()),
                (Ipv4Addr::new(10, 2, 0, 11), services),
            ])
        );
        assert!(wanted(&config("dr", "")).is_empty(), "DR probes use routes, not devices");
        assert_eq!(device_name(Ipv4Addr::new(10, 2, 0, 11)), "xlbp0a02000b");
    }

    #[test]
    fn packets_find_their_service_by_vip_protocol_and_port() {
        let vip = Ipv4Addr::new(10, 1, 1, 10);
        let services = Services::from([
            ((vip, 6, 80), Encap::Ipip),
            ((vip, 17, 53), Encap::Gue { port: 6080 }),
        ]);
        assert_eq!(encap_for(&packet(6, [10, 1, 1, 10], 80), &services), Some(Encap::Ipip));
        assert_eq!(
            encap_for(&packet(17, [10, 1, 1, 10], 53), &services),
            Some(Encap::Gue { port: 6080 })
        );
        assert_eq!(encap_for(&packet(17, [10, 1, 1, 10], 80), &services), None, "protocol");
        assert_eq!(encap_for(&packet(6, [10, 1, 1, 11], 80), &services), None, "address");
        assert_eq!(encap_for(&packet(6, [10, 1, 1, 10], 81), &services), None, "port");
        let mut later_fragment = packet(6, [10, 1, 1, 10], 80);
        later_fragment[7] = 1;
        assert_eq!(encap_for(&later_fragment, &services), None);
        let full = packet(6, [10, 1, 1, 10], 80);
        for len in 0..24 {
            assert_eq!(encap_for(&full[..len], &services), None, "truncated to {len}");
        }
        let mut v6 = full.clone();
        v6[0] = 0x65;
        assert_eq!(encap_for(&v6, &services), None);
    }

    /// GUE: the probe packet, byte for byte, is the UDP payload to the real server's port.
    #[test]
    fn gue_probes_are_the_payload_of_a_datagram_to_the_gue_port() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = server.local_addr().unwrap().port();
        let probe = packet(6, [10, 1, 1, 10], 80);
        let mut sender = Sender::default();
        sender.send(Encap::Gue { port }, Ipv4Addr::LOCALHOST, &probe).unwrap();
        let mut buf = [0u8; 256];
        let (len, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &probe[..]);
    }

    /// A stand-in for a TUN device: one end of a datagram socket pair (one packet per
    /// read, never blocking), the test writing into the other.
    struct FakeDevice(std::os::unix::net::UnixDatagram);

    impl ProbeDevice for FakeDevice {
        fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.recv(buf)
        }

        fn fd(&self) -> RawFd {
            std::os::fd::AsRawFd::as_raw_fd(&self.0)
        }
    }

    /// The relay end to end, without root: a packet the kernel would have routed into the
    /// real server's device leaves as GUE to that real server; one for no service of it is
    /// dropped; closing the real server's device stops its relaying.
    #[test]
    fn the_relay_sends_what_a_real_servers_device_carries_wrapped_to_it() {
        use std::os::unix::net::UnixDatagram;
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = server.local_addr().unwrap().port();
        let vip = Ipv4Addr::new(10, 1, 1, 10);
        let rip = Ipv4Addr::LOCALHOST;
        let wanted = BTreeMap::from([(rip, Services::from([((vip, 6, 80), Encap::Gue { port })]))]);
        let peers: Arc<Mutex<Vec<(String, UnixDatagram)>>> = Arc::default();
        let opened = peers.clone();
        let open: OpenDevice = Box::new(move |name| {
            let (device, peer) = UnixDatagram::pair()?;
            device.set_nonblocking(true)?;
            opened.lock().unwrap().push((name.to_string(), peer));
            Ok(Box::new(FakeDevice(device)) as Box<dyn ProbeDevice>)
        });
        let nap: WaitReadable =
            |_, timeout| std::thread::sleep(timeout.min(Duration::from_millis(5)));
        let mut probes = TunnelProbes::new(open, nap);
        probes.open(&wanted).unwrap();
        assert_eq!(probes.devices(), vec![device_name(rip)]);
        {
            let peers = peers.lock().unwrap();
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].0, "xlbp7f000001");
            peers[0].1.send(&packet(6, [10, 1, 1, 10], 81)).unwrap();
            peers[0].1.send(&packet(6, [10, 1, 1, 10], 80)).unwrap();
        }
        let mut buf = [0u8; 256];
        let (len, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &packet(6, [10, 1, 1, 10], 80)[..], "only the service's probe");
        // Opening again with the same real server keeps its device.
        probes.open(&wanted).unwrap();
        assert_eq!(peers.lock().unwrap().len(), 1);
        probes.close_unwanted(&BTreeMap::new());
        assert!(probes.devices().is_empty());
        drop(probes);
    }

    /// IPIP: what leaves is an outer IPv4 header of protocol 4 to the real server, then the
    /// probe packet byte for byte. Needs root (raw sockets); on loopback.
    #[test]
    fn ipip_probes_leave_with_an_outer_header_of_protocol_4() {
        if !crate::testkit::root_or_skip("ipip_probes_leave_with_an_outer_header_of_protocol_4") {
            return;
        }
        let protocol = Protocol::from(libc::IPPROTO_IPIP);
        let listener = Socket::new(Domain::IPV4, Type::RAW, Some(protocol)).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut probe = packet(6, [10, 1, 1, 10], 80);
        // A marker only this test sends, to tell its packet from any other on loopback.
        probe[4..6].copy_from_slice(&std::process::id().to_be_bytes()[2..]);
        let mut sender = Sender::default();
        sender.send(Encap::Ipip, Ipv4Addr::LOCALHOST, &probe).unwrap();
        let mut buf = [0u8; 2048];
        loop {
            let len = std::io::Read::read(&mut &listener, &mut buf).unwrap();
            let got = &buf[..len];
            if got.len() != 20 + probe.len() || got[20..] != probe[..] {
                continue;
            }
            assert_eq!(got[0], 0x45, "outer IPv4, 20 bytes");
            assert_eq!(got[9], 4, "protocol IPIP");
            assert_eq!(&got[16..20], &[127, 0, 0, 1], "to the real server");
            assert_eq!(usize::from(u16::from_be_bytes([got[2], got[3]])), 20 + probe.len());
            break;
        }
    }
}
