//! The TOML configuration: parse it, validate it, and say exactly what is wrong and where.
//!
//! [`Config::parse`] turns the text of a config file into a [`Config`] whose every value has
//! been checked, or into one [`ConfigError`] that names the file, the line, the key (as a path
//! such as `service[1].backend[0].weight`), the value as written and what was expected, the
//! way an operator who knows `ipvsadm` and keepalived would want to read it.
//!
//! # How
//!
//! Parsing is two steps. First serde and the `toml` crate read the text into private `Raw*`
//! structs whose leaves are [`toml::Spanned`]`<`[`toml::Value`]`>`: syntax errors, duplicate
//! keys, unknown keys (`#[serde(deny_unknown_fields)]` on every table) and a value where a
//! table belongs are caught there, as [`ConfigError::Syntax`] with the `toml` crate's message,
//! line and column. Leaves are untyped on purpose, so that a wrong type (`port = "80"`) is
//! reported by the second step like any other bad value, with its full key path. That second
//! step converts and checks every value against the rules below, keeping each value's byte
//! span to recover its line: a bad value is [`ConfigError::Invalid`] at the value's line, an
//! absent required key [`ConfigError::Missing`] at its table's header. Validation stops at the
//! first error, in file order.
//!
//! # Invariants of a [`Config`] returned by [`Config::parse`]
//!
//! - There is at least one interface; interface names are unique, 1 to 15 bytes (Linux's
//!   `IFNAMSIZ`); prefixes are 0 to 32; a gateway lies inside its interface's subnet and is
//!   not the interface's own address. MACs, where given, are unicast and not all zeros.
//!   Neighbour addresses are unique.
//! - Addresses are [`IpAddr`]s at this edge (issue 12): `vip`, backend `addr`,
//!   `local_addrs`, `sorry_server` and a neighbour's `ip` may be IPv6. An interface has one
//!   IPv4 address (`addr`, required, as before) and at most one IPv6 address (`addr6`,
//!   prefix 0 to 128, with an optional `gateway6` inside its subnet or link-local, never
//!   the interface's own; no `gateway6` without `addr6`).
//! - A service is one family: its backends, local addresses and sorry server are of its
//!   `vip`'s family (NAT64 and NAT46 are refused, naming the service and the address).
//!   `via_vip` (DR and tunnel services) is IPv4 only (its policy routes are). Tunnel mode
//!   wraps in the service's family only (IPv4 in IPv4, IPv6 in IPv6; 4in6 and 6in4 are
//!   refused with the backend or `tunnel_source` of the other family).
//! - Every address (`vip`, `addr`, `ip`, `gateway`, `local_addrs`) is unicast: not 0.0.0.0,
//!   not 255.255.255.255, not multicast; an IPv6 one is not `::`, not multicast, not
//!   IPv4-mapped, and not link-local (fe80::/10, which only an interface can scope) except
//!   for `gateway6` and a neighbour's `ip`.
//! - The addresses xlb answers ARP for are no other host's: a `vip` or a FullNAT
//!   `local_addrs` entry is not loopback (127.0.0.0/8), not the network or broadcast address
//!   of an interface's subnet (prefixes up to /30), and not an interface's own address, a
//!   gateway, a static neighbour, a real server or a sorry server of any service; a local
//!   address is also no service's `vip`. The error names both uses (and the other's line).
//!   For IPv6 the same holds with the loopback `::1` and an interface subnet's
//!   subnet-router anycast address (its all-zeros host, RFC 4291 §2.6.1, up to /126) in
//!   place of loopback, network and broadcast; xlb will answer NDP for them as it answers
//!   ARP.
//! - `dataplane.busy_poll` is one of "auto", "on", "off" (default "auto");
//!   `dataplane.busy_poll_marker`, where given, is a UDP port 1 to 65535 (busy polling
//!   through marker sockets where an AF_XDP socket has no NAPI id: veth).
//! - `fleet.mode` is one of "standalone", "bgp", "vrrp" (default "standalone"; see
//!   [`crate::fleet`]).
//! - Conntrack: `1 <= max_embryonic <= capacity <=` [`MAX_CONNTRACK_CAPACITY`]; every timeout is
//!   at least one second.
//! - Services are unique by (vip, port, proto); ports are 1 to 65535; backends are unique by
//!   (addr, port) within a service; weights are 0 to 65535 (0 drains, as in ipvsadm).
//! - `local_addrs` is non-empty and duplicate-free for FullNAT and empty otherwise.
//! - Tunnel (`forward = "tunnel"`, issues 14 and 12) serves both families; its keys
//!   (`encap` "ipip" or "gue", `gue_port`, `tunnel_source`, `mss_clamp`) are refused on
//!   other modes, and `ServiceConfig::tunnel` is `Some` exactly for tunnel services. A
//!   `tunnel_source` is a prefix written with its host bits zero: an IPv4 one /8 to /32,
//!   not in 0/8, 127/8 or multicast and above (an interface's is IPv4 only), or, for an IPv6
//!   service, an IPv6 one /64 to /128, not link-local, multicast, loopback, `::` or
//!   IPv4-mapped; a service's prefix is of its VIP's family. Tunnel backends listen on the service
//!   port (the packet is not rewritten) and may be anywhere routed. An interface's `mtu` is
//!   576 to 9216 (default 1500); `mss_clamp` is 536 to 9176 and TCP only.
//! - DR backends listen on the service port and sit on a directly connected subnet: DR
//!   rewrites only the destination MAC (LVS's "gatewaying"), so it can neither change the port
//!   nor cross a router.
//! - `persistence` is 1 to 2678400 seconds (ipvsadm's 31 days); `persistence_mask` comes
//!   only with it: a dotted IPv4 netmask of leading ones or a prefix length of the VIP's
//!   family (1 to 32, 1 to 128), by default the whole address.
//! - `maglev_table_size` is a prime, at least the number of backends and at most
//!   [`MAX_MAGLEV_TABLE_SIZE`] (Maglev, NSDI'16 §3.4, needs a prime table size so that every
//!   backend's permutation visits every slot); all services' tables together hold at most
//!   [`MAX_TOTAL_MAGLEV_SLOTS`]. What the tables take on a machine is
//!   [`Config::memory_estimate`], which `xlb check` and `xlb run` compare with its memory.
//! - Health: `rise, fall >= 1`; [`MIN_HEALTH_TIMEOUT`] `<= timeout <= interval`,
//!   `interval >=` [`MIN_HEALTH_INTERVAL`]; `http_path` and `http_status` only
//!   with `check = "http"`, `udp_payload` only with `check = "udp"`; `script` (a non-empty
//!   argv, its first word an absolute path) with and only with `check = "script"`;
//!   `dns_name` (labels of 1 to 63 bytes, at most 253), `dns_type` (one of [`DNS_TYPES`])
//!   and `dns_expect` (an address of the family `dns_type` A or AAAA asks) only with
//!   `check = "dns"`. A `sorry_server` is a
//!   unicast address that is none of the service's backends; in DR it listens on the service
//!   port on a directly connected subnet, like a DR backend.
//!
//! The format itself is a contract (DESIGN.md, "Contracts"); `examples/*.toml` show one
//! config per forward mode, and a test parses each.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use crate::conntrack::{Conntrack, ConntrackConfig};
use crate::fleet::{FleetMode, RouteExport};
use crate::flow::{Encap, ForwardMode, Proto, Tunnel, TunnelSource};
use crate::persist::Persistence;
use crate::sched::{SH_TABLE_SIZE, SchedulerKind};
use crate::tuning::BusyPollMode;
use crate::wire::ethernet::parse_mac;

/// A MAC address as the config holds it. (The integrator converts it to `wire::MacAddr`.)
pub type Mac = [u8; 6];

/// The Maglev lookup table size used when a service does not set `maglev_table_size`: the
/// smaller of the two primes the Maglev paper evaluates (NSDI'16 §5.3).
pub const DEFAULT_MAGLEV_TABLE_SIZE: usize = 65_537;

/// The largest `maglev_table_size` accepted: the largest prime below 2^24. Each service holds
/// one table entry per slot, and a table a hundred times the number of backends already
/// keeps their shares within 1% of each other (NSDI'16 §3.4), so a larger table only costs
/// memory (and the bound keeps `is_prime` and allocation cheap).
pub const MAX_MAGLEV_TABLE_SIZE: usize = 16_777_213;

/// The largest conntrack `capacity` accepted (flows per core): the largest table conntrack
/// can build, 2^28 flows (about 21 GiB per core), so that no capacity is silently clamped.
/// Whether the machine can hold the tables is [`MemoryEstimate`]'s question.
pub const MAX_CONNTRACK_CAPACITY: usize = ConntrackConfig::MAX_CAPACITY;

/// The most Maglev slots all services' tables may hold together: 2^26, 256 MiB of tables
/// (twice that while a change is published). 1,000 services at the default size fit.
pub const MAX_TOTAL_MAGLEV_SLOTS: usize = 1 << 26;

/// The shortest health-check `interval` accepted. A prober sleeps this long between
/// probes; a nanosecond made each prober thread spin (135% CPU for two backends).
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(10);

/// The shortest health-check `timeout` accepted.
pub const MIN_HEALTH_TIMEOUT: Duration = Duration::from_millis(1);

/// What a config will allocate, as [`Config::memory_estimate`] figures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// One core's connection table, in bytes.
    pub conntrack_per_core: usize,
    /// Worker cores, each with its own table.
    pub cores: usize,
    /// Every service's Maglev tables (its scheduler's and the fallback), in bytes.
    pub maglev: usize,
}

impl MemoryEstimate {
    /// The most the tables take at once: every core's connection table, and the Maglev
    /// tables twice (the running snapshot and the one being published).
    pub fn total(&self) -> usize {
        self.conntrack_per_core.saturating_mul(self.cores).saturating_add(self.maglev * 2)
    }

    /// Refuses an estimate above `available` bytes (the machine's memory), with the figures.
    pub fn check(&self, available: u64) -> Result<(), String> {
        if self.total() as u64 > available {
            return Err(format!(
                "the config needs {self}, more than this machine's {}: lower conntrack.capacity (flows per core), the cores, or maglev_table_size",
                mib(available as usize)
            ));
        }
        Ok(())
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "about {} (conntrack {} per worker core x {}, Maglev tables {} x 2 while a change \
             is published)",
            mib(self.total()),
            mib(self.conntrack_per_core),
            self.cores,
            mib(self.maglev)
        )
    }
}

/// Bytes as MiB (or GiB past 10 GiB), one decimal.
fn mib(bytes: usize) -> String {
    let mib = bytes as f64 / f64::from(1u32 << 20);
    if mib >= 10.0 * 1024.0 { format!("{:.1} GiB", mib / 1024.0) } else { format!("{mib:.1} MiB") }
}

impl ServiceConfig {
    /// The Maglev slots this service's tables hold: the fallback table always, plus the
    /// scheduler's own for `maglev` (or `mh`) and `sh`.
    pub fn maglev_slots(&self) -> usize {
        let own = match self.scheduler {
            SchedulerKind::Maglev | SchedulerKind::Mh => self.maglev_table_size,
            SchedulerKind::Sh => SH_TABLE_SIZE,
            _ => 0,
        };
        self.maglev_table_size + own
    }
}

/// The whole configuration, validated (see the module docs for the invariants).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The box's interfaces, in file order; never empty.
    pub interfaces: Vec<InterfaceConfig>,
    /// Static neighbour entries, in file order.
    pub neighbors: Vec<NeighborConfig>,
    /// Connection-tracking sizes and timeouts.
    pub conntrack: ConntrackSettings,
    /// How the data plane runs (read at start-up only).
    pub dataplane: DataplaneSettings,
    /// How the box takes part in a fleet (`[fleet] mode`, default standalone; see
    /// [`crate::fleet`]).
    pub fleet: FleetMode,
    /// `[fleet] route_table` (bgp mode): a /32 route per VIP it can serve, for bird2 to
    /// export ([`crate::control::vip_routes`]).
    pub fleet_routes: Option<RouteExport>,
    /// The virtual services, in file order.
    pub services: Vec<ServiceConfig>,
}

/// One `[[interface]]`: a port of the box and its own address on that link.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceConfig {
    /// The device name, e.g. `eth0`.
    pub name: String,
    /// The box's own address on this interface (the ARP sender address xlb uses).
    pub addr: Ipv4Addr,
    /// The subnet's prefix length, 0 to 32.
    pub prefix_len: u8,
    /// The interface's MAC. Optional here: replay requires it, a running xlb reads the device.
    pub mac: Option<Mac>,
    /// The next hop for addresses off this subnet, if any; always inside the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// The box's IPv6 address on this interface, if any (`addr6`, with `gateway6`).
    pub ipv6: Option<Ipv6Interface>,
    /// The link's MTU (`mtu`, default [`InterfaceConfig::DEFAULT_MTU`]): what a tunnelled
    /// packet leaving here must fit in.
    pub mtu: u16,
    /// The outer source prefix of tunnel services leaving by this interface that set none
    /// (`tunnel_source`); none: the interface's own address.
    pub tunnel_source: Option<TunnelSource>,
}

/// An interface's IPv6 side: `addr6 = "2001:db8:1::10/64"` and `gateway6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Interface {
    /// The box's own IPv6 address on the link: unicast, not link-local (the kernel keeps
    /// its own fe80::/10 address), not IPv4-mapped.
    pub addr: Ipv6Addr,
    /// The subnet's prefix length, 0 to 128.
    pub prefix_len: u8,
    /// The IPv6 next hop, if any: inside the subnet, or link-local (what routers
    /// advertise), never the interface's own address.
    pub gateway: Option<Ipv6Addr>,
}

impl Ipv6Interface {
    /// Whether `ip` is on this subnet.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = prefix_mask6(self.prefix_len);
        ip.to_bits() & mask == self.addr.to_bits() & mask
    }
}

impl InterfaceConfig {
    /// Ethernet's MTU, the default `mtu`.
    pub const DEFAULT_MTU: u16 = 1500;

    /// The subnet mask for `prefix_len` (a `prefix_len` above 32 counts as 32).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix_len))
    }

    /// Whether `ip` is on one of this interface's subnets, of its family (directly
    /// reachable, no gateway needed).
    pub fn contains(&self, ip: impl Into<IpAddr>) -> bool {
        match ip.into() {
            IpAddr::V4(ip) => {
                let mask = prefix_mask(self.prefix_len);
                u32::from(ip) & mask == u32::from(self.addr) & mask
            }
            IpAddr::V6(ip) => self.ipv6.is_some_and(|v6| v6.contains(ip)),
        }
    }

    /// `eth0 10.1.1.10/24`, with `2001:db8:1::10/64` after it when the interface has one:
    /// how messages name the subnets an interface reaches.
    fn subnets(&self) -> String {
        match self.ipv6 {
            Some(v6) => format!(
                "{} {}/{} {}/{}",
                self.name, self.addr, self.prefix_len, v6.addr, v6.prefix_len
            ),
            None => format!("{} {}/{}", self.name, self.addr, self.prefix_len),
        }
    }
}

/// One static `[[neighbor]]` entry: an address (IPv4 or IPv6) and the MAC that answers for it.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighborConfig {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC (unicast).
    pub mac: Mac,
}

/// The `[dataplane]` table: how `xlb run` drives its sockets. Read when xlb starts; a
/// reload that changes it is warned about and applies at the next start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataplaneSettings {
    /// Preferred busy polling (`busy_poll = "auto" | "on" | "off"`, default auto); the
    /// command line's `--busy-poll`/`--no-busy-poll` override it.
    pub busy_poll: BusyPollMode,
    /// The UDP port of the busy-poll marker sockets (`busy_poll_marker = PORT`; none by
    /// default); the command line's `--busy-poll-marker` overrides it.
    pub busy_poll_marker: Option<u16>,
}

/// The `[conntrack]` table: per-core table size, SYN-flood bound and timeouts.
///
/// Timeouts are whole seconds in the file, as `ipvsadm --set` takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ConntrackSettings {
    /// Flows per core.
    pub capacity: usize,
    /// At most this many half-open (embryonic) flows per core; beyond it conntrack's SYN-flood
    /// policy applies.
    pub max_embryonic: usize,
    /// A TCP flow that has seen a SYN but no reply yet.
    pub tcp_syn_timeout: Duration,
    /// An established TCP flow with no traffic.
    pub tcp_established_timeout: Duration,
    /// A TCP flow after the first FIN.
    pub tcp_closing_timeout: Duration,
    /// A TCP flow after an RST or the last ACK.
    pub tcp_closed_timeout: Duration,
    /// A UDP flow with no traffic.
    pub udp_timeout: Duration,
}

impl ConntrackSettings {
    /// The default capacity: a million flows per core.
    pub const DEFAULT_CAPACITY: usize = 1_000_000;
}

impl Default for ConntrackSettings {
    /// A million flows per core, half of them embryonic at most, and LVS's timeouts:
    /// SYN 30 s, established 900 s, closing 120 s, closed 10 s, UDP 300 s.
    fn default() -> Self {
        ConntrackSettings {
            capacity: Self::DEFAULT_CAPACITY,
            max_embryonic: Self::DEFAULT_CAPACITY / 2,
            tcp_syn_timeout: Duration::from_secs(30),
            tcp_established_timeout: Duration::from_secs(900),
            tcp_closing_timeout: Duration::from_secs(120),
            tcp_closed_timeout: Duration::from_secs(10),
            udp_timeout: Duration::from_secs(300),
        }
    }
}

/// One `[[service]]`: a virtual IP and port and the real servers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The virtual IP, IPv4 or IPv6: the service's family, which its backends, local
    /// addresses and sorry server share.
    pub vip: IpAddr,
    /// The virtual port, 1 to 65535.
    pub port: u16,
    /// TCP or UDP (default TCP).
    pub proto: Proto,
    /// The scheduler (default Maglev).
    pub scheduler: SchedulerKind,
    /// The forwarding mode (default DR).
    pub forward: ForwardMode,
    /// FullNAT's source address pool; non-empty for FullNAT, empty otherwise.
    pub local_addrs: Vec<IpAddr>,
    /// The Maglev lookup table size: prime, at least the number of backends.
    pub maglev_table_size: usize,
    /// Health-check settings (defaults from [`HealthConfig::for_proto`]).
    pub health: HealthConfig,
    /// The real servers, in file order (possibly none, as with `ipvsadm -A` alone).
    pub backends: Vec<BackendConfig>,
    /// `persistence` (seconds) and `persistence_mask`: ipvsadm's `-p` and `-M` (None: off).
    pub persistence: Option<Persistence>,
    /// How packets are wrapped: `Some` exactly when `forward` is tunnel.
    pub tunnel: Option<Tunnel>,
}

/// One `[[service.backend]]`: a real server.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// The real server's address, of its service's family.
    pub addr: IpAddr,
    /// Its port (default: the service port; always the service port in DR).
    pub port: u16,
    /// Its weight, 0 to 65535 (default 1); 0 drains it: no new flows, existing ones continue.
    pub weight: u32,
    /// Down by health check: no config key (always false in a file); set by the health
    /// monitor's effective config, so the snapshot can tell it from a drain
    /// ([`crate::snapshot::Backend::down`]).
    pub down: bool,
}

/// A service's `[service.health]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// What probe to send.
    pub check: HealthCheckKind,
    /// Time between probes.
    pub interval: Duration,
    /// How long a probe may take; never more than `interval`.
    pub timeout: Duration,
    /// Consecutive successes that bring a failed backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
    /// The path an HTTP check requests.
    pub http_path: String,
    /// The status an HTTP check expects.
    pub http_status: u16,
    /// What happens to a backend that fails.
    pub on_failure: OnFailure,
    /// The datagram a UDP check sends (default empty); any reply within `timeout` passes.
    pub udp_payload: String,
    /// Consecutive bad passive observations (a SYN the backend never answered, an RST to a
    /// SYN, an ICMP unreachable) that bring a backend's probes forward (they never take it
    /// out by themselves: see `control::health`); 0 turns passive checks off.
    pub passive_fall: u32,
    /// The real server that takes new flows while no backend is healthy, if any
    /// (keepalived's `sorry_server`); written `"addr:port"` or `"addr"` (the service port).
    pub sorry_server: Option<SocketAddr>,
    /// DR only: probe what clients use, the VIP:port, sent to each real server's MAC (a
    /// policy route per real server, selected by the probe socket's mark), instead of the
    /// real server's own address.
    pub via_vip: bool,
    /// `check = "script"`: the command and its arguments, run without a shell (write
    /// `["/bin/sh", "-c", "..."]` for one); exit status 0 passes.
    pub script: Vec<String>,
    /// `check = "dns"`: the name asked (default `"."`, the root).
    pub dns_name: String,
    /// `check = "dns"`: the query type asked (default NS), one of [`DNS_TYPES`].
    pub dns_type: u16,
    /// `check = "dns"`: an address the answer must hold as an A or AAAA record; without
    /// one, an answer with rcode NOERROR passes.
    pub dns_expect: Option<IpAddr>,
    /// `check = "https"`: the server name sent (SNI) and, with `tls_verify`, the name the
    /// certificate must hold; none by default (no SNI, as keepalived's `SSL_GET`), when a
    /// verified certificate must hold the backend's address.
    pub tls_server_name: Option<String>,
    /// `check = "https"`: verify the server's certificate against `tls_ca_file` (default
    /// off, as keepalived's `SSL_GET`: any certificate passes, the handshake must).
    pub tls_verify: bool,
    /// `check = "https"` with `tls_verify`: the PEM file of the trusted CAs, read at each
    /// probe (default [`DEFAULT_TLS_CA_FILE`]).
    pub tls_ca_file: String,
}

/// The CA bundle a verifying `https` check trusts by default (Debian's `ca-certificates`).
pub const DEFAULT_TLS_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The DNS query types a `check = "dns"` may ask, by name (RFC 1035 §3.2.2, RFC 3596,
/// RFC 2782).
pub const DNS_TYPES: [(&str, u16); 9] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
];

/// The name of DNS query type `number` in [`DNS_TYPES`] (`"TYPE<n>"` for another).
pub fn dns_type_name(number: u16) -> String {
    DNS_TYPES
        .iter()
        .find(|(_, n)| *n == number)
        .map_or_else(|| format!("TYPE{number}"), |(name, _)| (*name).to_string())
}

/// Why `name` cannot be asked in a DNS query, if it cannot: labels of 1 to 63 bytes
/// separated by dots, an optional final dot, at most 253 bytes; `"."` is the root.
pub fn dns_name_problem(name: &str) -> Option<&'static str> {
    if name == "." {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Some("a name of 1 to 253 bytes");
    }
    if name.split('.').any(|label| label.is_empty() || label.len() > 63) {
        return Some("labels of 1 to 63 bytes between dots");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("printable ASCII (IDNs in their xn-- form)");
    }
    None
}

impl HealthConfig {
    /// The default `passive_fall`: five bad observations in a row.
    pub const DEFAULT_PASSIVE_FALL: u32 = 5;
}

impl HealthConfig {
    /// The defaults for a service of protocol `proto`: a TCP connect check for TCP services,
    /// none for UDP ones (a UDP probe needs a payload the service understands), and
    /// otherwise as [`HealthConfig::default`].
    pub fn for_proto(proto: Proto) -> HealthConfig {
        let check = match proto {
            Proto::Tcp => HealthCheckKind::Tcp,
            Proto::Udp => HealthCheckKind::None,
        };
        HealthConfig { check, ..HealthConfig::default() }
    }
}

impl Default for HealthConfig {
    /// The defaults of a TCP service: a TCP connect check every 2 s with a 1 s timeout,
    /// rise 2, fall 3, `GET /` expecting 200 (for HTTP checks), drain on failure, an empty UDP
    /// payload, passive fall 5, no sorry server.
    fn default() -> Self {
        HealthConfig {
            check: HealthCheckKind::Tcp,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            http_path: "/".to_string(),
            http_status: 200,
            on_failure: OnFailure::Drain,
            udp_payload: String::new(),
            passive_fall: Self::DEFAULT_PASSIVE_FALL,
            sorry_server: None,
            via_vip: false,
            script: Vec::new(),
            dns_name: ".".to_string(),
            dns_type: 2,
            dns_expect: None,
            tls_server_name: None,
            tls_verify: false,
            tls_ca_file: DEFAULT_TLS_CA_FILE.to_string(),
        }
    }
}

/// The kind of health probe (`check = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// No checks: backends are always up.
    None,
    /// A TCP connect to the backend's port.
    Tcp,
    /// An HTTP GET of `http_path`, expecting `http_status`.
    Http,
    /// A UDP probe (keepalived's `UDP_CHECK`).
    Udp,
    /// An ICMP (ICMPv6) echo request to the backend's address, answered by an echo reply
    /// (keepalived's `PING_CHECK`); the port is not probed.
    Icmp,
    /// A command run with the backend in its environment, exit status 0 passing
    /// (keepalived's `MISC_CHECK`).
    Script,
    /// A DNS query over UDP, answered with rcode NOERROR (and `dns_expect`, if set)
    /// (keepalived's `DNS_CHECK`).
    Dns,
    /// A TLS handshake and an HTTP GET of `http_path`, expecting `http_status`
    /// (keepalived's `SSL_GET`).
    Https,
}

impl HealthCheckKind {
    /// Every kind, in the order the error messages list them.
    pub const ALL: [HealthCheckKind; 8] = [
        HealthCheckKind::Tcp,
        HealthCheckKind::Http,
        HealthCheckKind::Https,
        HealthCheckKind::Udp,
        HealthCheckKind::Icmp,
        HealthCheckKind::Script,
        HealthCheckKind::Dns,
        HealthCheckKind::None,
    ];

    /// The name used in the config.
    pub const fn name(self) -> &'static str {
        match self {
            HealthCheckKind::None => "none",
            HealthCheckKind::Tcp => "tcp",
            HealthCheckKind::Http => "http",
            HealthCheckKind::Udp => "udp",
            HealthCheckKind::Icmp => "icmp",
            HealthCheckKind::Script => "script",
            HealthCheckKind::Dns => "dns",
            HealthCheckKind::Https => "https",
        }
    }
}

impl HealthCheckKind {
    /// True for the checks that GET `http_path` and expect `http_status`: http and https.
    pub const fn gets(self) -> bool {
        matches!(self, HealthCheckKind::Http | HealthCheckKind::Https)
    }
}

impl fmt::Display for HealthCheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with a backend whose health check fails (`on_failure = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Set its weight to 0: no new flows, established ones finish (keepalived's `inhibit_on_failure`).
    Drain,
    /// Take it out of the service: its flows are rescheduled.
    Remove,
}

impl OnFailure {
    /// Every policy, in the order the error messages list them.
    pub const ALL: [OnFailure; 2] = [OnFailure::Drain, OnFailure::Remove];

    /// The name used in the config.
    pub const fn name(self) -> &'static str {
        match self {
            OnFailure::Drain => "drain",
            OnFailure::Remove => "remove",
        }
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a config was rejected. Every variant names the file; all but `Io` name the line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// TOML syntax, unknown key, duplicate key, a value where a table belongs: the toml
    /// crate's message, with the column and (where it knows it) the table it was reading.
    /// `line` is 0 only if the toml crate gave no position.
    #[error("{path}: line {line}: {message}")]
    Syntax {
        /// The file, as given to [`Config::parse`].
        path: String,
        /// 1-based line.
        line: usize,
        /// What the toml crate said, plus the column.
        message: String,
    },
    /// A value that parses but is wrong: names the key, the value, what was expected, and the line.
    #[error("{path}: line {line}: {key} = {value}: {expected}")]
    Invalid {
        /// The file, as given to [`Config::parse`].
        path: String,
        /// 1-based line of the value.
        line: usize,
        /// The key as a path, e.g. `service[1].backend[0].weight`.
        key: String,
        /// The value as TOML would write it, e.g. `"10.1.1.300"` or `70000`.
        value: String,
        /// What was expected instead, and why where it is not obvious.
        expected: String,
    },
    /// A required key or table is absent.
    #[error("{path}: line {line}: {key} is missing: {expected}")]
    Missing {
        /// The file, as given to [`Config::parse`].
        path: String,
        /// 1-based line of the table that lacks the key (1 for a missing top-level table).
        line: usize,
        /// The missing key as a path, e.g. `service[0].vip`.
        key: String,
        /// What it should hold.
        expected: String,
    },
    /// The file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's reason.
        message: String,
    },
}

impl Config {
    /// Parses and validates the text of a config file. `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let cx = Context { text, path };
        let raw: RawConfig = toml::from_str(text).map_err(|error| cx.syntax(error))?;
        cx.config(raw)
    }

    /// Reads the file at `path` and parses it with [`Config::parse`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Io { path: shown.clone(), message: error.to_string() })?;
        Config::parse(&text, &shown)
    }

    /// What the tables of this config take on `cores` worker cores (each core's IPv4 and
    /// IPv6 connection tables, see [`ConntrackConfig::for_ipv6`]).
    pub fn memory_estimate(&self, cores: usize) -> MemoryEstimate {
        let slots: usize = self.services.iter().map(ServiceConfig::maglev_slots).sum();
        let serves_ipv6 = self.services.iter().any(|service| service.vip.is_ipv6());
        let ipv6 =
            ConntrackConfig::with_capacity(self.conntrack.capacity).for_ipv6(serves_ipv6).capacity;
        MemoryEstimate {
            conntrack_per_core: Conntrack::memory_for(self.conntrack.capacity)
                .saturating_add(Conntrack::<crate::family::V6>::memory_for_capacity(ipv6)),
            cores,
            maglev: slots.saturating_mul(std::mem::size_of::<u32>()),
        }
    }

    /// The first interface whose subnet contains `ip`, if any.
    pub fn interface_for(&self, ip: impl Into<IpAddr>) -> Option<&InterfaceConfig> {
        let ip = ip.into();
        self.interfaces.iter().find(|interface| interface.contains(ip))
    }

    /// The config as a file, every key written: [`Config::parse`] reads it back to an equal
    /// config whenever this one is valid (durations are written exactly, in seconds with up
    /// to nine decimals).
    pub fn to_toml(&self) -> String {
        use std::fmt::Write as _;
        let quoted = |text: &str| Value::String(text.to_string()).to_string();
        let mac = |m: Mac| quoted(&m.map(|b| format!("{b:02x}")).join(":"));
        let mut out = String::new();
        for i in &self.interfaces {
            let _ = writeln!(out, "[[interface]]\nname = {}", quoted(&i.name));
            let _ = writeln!(out, "addr = \"{}/{}\"", i.addr, i.prefix_len);
            if let Some(m) = i.mac {
                let _ = writeln!(out, "mac = {}", mac(m));
            }
            if let Some(g) = i.gateway {
                let _ = writeln!(out, "gateway = \"{g}\"");
            }
            if let Some(v6) = i.ipv6 {
                let _ = writeln!(out, "addr6 = \"{}/{}\"", v6.addr, v6.prefix_len);
                if let Some(g) = v6.gateway {
                    let _ = writeln!(out, "gateway6 = \"{g}\"");
                }
            }
            if i.mtu != InterfaceConfig::DEFAULT_MTU {
                let _ = writeln!(out, "mtu = {}", i.mtu);
            }
            if let Some(source) = i.tunnel_source {
                let _ = writeln!(out, "tunnel_source = \"{source}\"");
            }
        }
        for n in &self.neighbors {
            let _ = writeln!(out, "[[neighbor]]\nip = \"{}\"\nmac = {}", n.ip, mac(n.mac));
        }
        let ct = &self.conntrack;
        let _ = writeln!(
            out,
            "[conntrack]\ncapacity = {}\nmax_embryonic = {}\ntcp_syn_timeout = {}\n\
             tcp_established_timeout = {}\ntcp_closing_timeout = {}\ntcp_closed_timeout = {}\n\
             udp_timeout = {}",
            ct.capacity,
            ct.max_embryonic,
            ct.tcp_syn_timeout.as_secs(),
            ct.tcp_established_timeout.as_secs(),
            ct.tcp_closing_timeout.as_secs(),
            ct.tcp_closed_timeout.as_secs(),
            ct.udp_timeout.as_secs()
        );
        let _ = writeln!(
            out,
            "[dataplane]\nbusy_poll = \"{}\"",
            self.dataplane.busy_poll.choice_name()
        );
        if let Some(port) = self.dataplane.busy_poll_marker {
            let _ = writeln!(out, "busy_poll_marker = {port}");
        }
        let _ = writeln!(out, "[fleet]\nmode = \"{}\"", self.fleet.name());
        if let Some(routes) = &self.fleet_routes {
            let _ = writeln!(
                out,
                "route_table = {}\nroute_device = \"{}\"",
                routes.table, routes.device
            );
        }
        for s in &self.services {
            let addrs: Vec<String> = s.local_addrs.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(
                out,
                "[[service]]\nvip = \"{}\"\nport = {}\nproto = \"{}\"\nscheduler = \"{}\"\n\
                 forward = \"{}\"\nlocal_addrs = [{}]\nmaglev_table_size = {}",
                s.vip,
                s.port,
                s.proto,
                s.scheduler,
                s.forward,
                addrs.join(", "),
                s.maglev_table_size
            );
            if let Some(p) = s.persistence {
                let _ = writeln!(out, "persistence = {}", p.timeout.as_secs());
                let _ = writeln!(out, "persistence_mask = {}", p.prefix_len);
            }
            if let Some(tunnel) = &s.tunnel {
                let _ = writeln!(out, "encap = \"{}\"", tunnel.encap.name());
                if let Encap::Gue { port } = tunnel.encap {
                    let _ = writeln!(out, "gue_port = {port}");
                }
                if let Some(source) = tunnel.source {
                    let _ = writeln!(out, "tunnel_source = \"{source}\"");
                }
                if let Some(mss) = tunnel.mss_clamp {
                    let _ = writeln!(out, "mss_clamp = {mss}");
                }
            }
            let h = &s.health;
            let _ = writeln!(
                out,
                "[service.health]\ncheck = \"{}\"\ninterval = {}\ntimeout = {}\nrise = {}\n\
                 fall = {}\non_failure = \"{}\"",
                h.check,
                seconds_text(h.interval),
                seconds_text(h.timeout),
                h.rise,
                h.fall,
                h.on_failure
            );
            if h.check.gets() {
                let _ = writeln!(
                    out,
                    "http_path = {}\nhttp_status = {}",
                    quoted(&h.http_path),
                    h.http_status
                );
            }
            if h.check == HealthCheckKind::Udp {
                let _ = writeln!(out, "udp_payload = {}", quoted(&h.udp_payload));
            }
            if h.check == HealthCheckKind::Https {
                if let Some(name) = &h.tls_server_name {
                    let _ = writeln!(out, "tls_server_name = {}", quoted(name));
                }
                if h.tls_verify {
                    let _ = writeln!(
                        out,
                        "tls_verify = true\ntls_ca_file = {}",
                        quoted(&h.tls_ca_file)
                    );
                }
            }
            if h.check == HealthCheckKind::Script {
                let argv: Vec<String> = h.script.iter().map(|arg| quoted(arg)).collect();
                let _ = writeln!(out, "script = [{}]", argv.join(", "));
            }
            if h.check == HealthCheckKind::Dns {
                let _ = writeln!(
                    out,
                    "dns_name = {}\ndns_type = \"{}\"",
                    quoted(&h.dns_name),
                    dns_type_name(h.dns_type)
                );
                if let Some(expect) = h.dns_expect {
                    let _ = writeln!(out, "dns_expect = \"{expect}\"");
                }
            }
            let _ = writeln!(out, "passive_fall = {}", h.passive_fall);
            if let Some(sorry) = h.sorry_server {
                let _ = writeln!(out, "sorry_server = \"{sorry}\"");
            }
            if h.via_vip {
                let _ = writeln!(out, "via_vip = true");
            }
            for b in &s.backends {
                let _ = writeln!(
                    out,
                    "[[service.backend]]\naddr = \"{}\"\nport = {}\nweight = {}",
                    b.addr, b.port, b.weight
                );
            }
        }
        out
    }

    /// Checks that this config meets every invariant of a config file (see the module docs),
    /// by the very code that checks a file: it is rendered with [`Config::to_toml`] and
    /// parsed back. An error's `key` names the offending value as a path
    /// (`service[1].backend[0].port`), indexed like `self`; its path is `<config>` and its
    /// line is a line of the rendered text, not of any file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Config::parse(&self.to_toml(), VALIDATED).map(|_| ())
    }
}

/// The path [`Config::validate`] parses under: its lines are of rendered text, so messages
/// leave them out where they point at another value.
const VALIDATED: &str = "<config>";

/// The prefix length of a dotted IPv4 netmask of leading ones (`255.255.255.0` is 24);
/// `None` for anything else (0.0.0.0 included: a mask keeps at least one bit).
pub fn netmask_prefix(text: &str) -> Option<u8> {
    let mask = text.parse::<Ipv4Addr>().ok()?.to_bits();
    let len = mask.leading_ones();
    (len > 0 && mask.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// A duration as TOML seconds, exactly: an integer, or a float with up to nine decimals.
pub(crate) fn seconds_text(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        return duration.as_secs().to_string();
    }
    let fraction = format!("{nanos:09}");
    format!("{}.{}", duration.as_secs(), fraction.trim_end_matches('0'))
}

/// Whether `n` is prime, by trial division (n is at most [`MAX_MAGLEV_TABLE_SIZE`] here, so
/// this is a few thousand divisions).
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut divisor = 5u64;
    while divisor.saturating_mul(divisor) <= n {
        if n.is_multiple_of(divisor) || n.is_multiple_of(divisor + 2) {
            return false;
        }
        divisor += 6;
    }
    true
}

/// The netmask of a prefix length, as a host-order `u32`; lengths above 32 count as 32.
fn prefix_mask(prefix_len: u8) -> u32 {
    let host_bits = 32u32.saturating_sub(u32::from(prefix_len));
    u32::MAX.checked_shl(host_bits).unwrap_or(0)
}

/// The IPv6 netmask of a prefix length, as a `u128`; lengths above 128 count as 128.
fn prefix_mask6(prefix_len: u8) -> u128 {
    let host_bits = 128u32.saturating_sub(u32::from(prefix_len));
    u128::MAX.checked_shl(host_bits).unwrap_or(0)
}

/// `10.1.1.100:80` or `[2001:db8::100]:80`: an address and port as ipvsadm and xlb's
/// messages write them (IPv6 in brackets, so the port's colon is not the address's).
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// `"IPv4"` or `"IPv6"`.
pub fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// A name in a closed set (`proto`, `scheduler`, `forward`, `check`, `on_failure`).
trait Choice: Copy + 'static {
    const ALL: &'static [Self];
    fn choice_name(self) -> &'static str;
    fn from_choice_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|choice| choice.choice_name() == name)
    }
}

/// `Choice` for types whose `name()` is the config's name.
macro_rules! choice_by_name {
    ($($kind:ty => $all:expr),* $(,)?) => {$(
        impl Choice for $kind {
            const ALL: &'static [Self] = $all;
            fn choice_name(self) -> &'static str {
                self.name()
            }
        }
    )*};
}

choice_by_name! {
    Proto => &[Proto::Tcp, Proto::Udp],
    ForwardMode => &[ForwardMode::Dr, ForwardMode::Nat, ForwardMode::FullNat, ForwardMode::Tunnel],
    HealthCheckKind => &HealthCheckKind::ALL,
    OnFailure => &OnFailure::ALL,
    FleetMode => &FleetMode::ALL,
}

impl Choice for BusyPollMode {
    const ALL: &'static [Self] = &[BusyPollMode::Auto, BusyPollMode::On, BusyPollMode::Off];
    fn choice_name(self) -> &'static str {
        match self {
            BusyPollMode::Auto => "auto",
            BusyPollMode::On => "on",
            BusyPollMode::Off => "off",
        }
    }
}

impl Choice for SchedulerKind {
    const ALL: &'static [Self] = &SchedulerKind::ALL;
    fn choice_name(self) -> &'static str {
        self.name()
    }
    /// `mh` is a kind of its own (Maglev under ipvsadm's name, shown back as given).
    fn from_choice_name(name: &str) -> Option<Self> {
        SchedulerKind::from_str(name).ok()
    }
}

// What the file holds before validation. Leaves are untyped (see the module docs).

type Leaf = Option<Spanned<Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    interface: Vec<Spanned<RawInterface>>,
    #[serde(default)]
    neighbor: Vec<Spanned<RawNeighbor>>,
    conntrack: Option<RawConntrack>,
    dataplane: Option<RawDataplane>,
    fleet: Option<RawFleet>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    mode: Leaf,
    route_table: Leaf,
    route_device: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    busy_poll: Leaf,
    busy_poll_marker: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Leaf,
    addr: Leaf,
    mac: Leaf,
    gateway: Leaf,
    addr6: Leaf,
    gateway6: Leaf,
    mtu: Leaf,
    tunnel_source: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbor {
    ip: Leaf,
    mac: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    capacity: Leaf,
    max_embryonic: Leaf,
    tcp_syn_timeout: Leaf,
    tcp_established_timeout: Leaf,
    tcp_closing_timeout: Leaf,
    tcp_closed_timeout: Leaf,
    udp_timeout: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    vip: Leaf,
    port: Leaf,
    proto: Leaf,
    scheduler: Leaf,
    forward: Leaf,
    local_addrs: Option<Spanned<Vec<Spanned<Value>>>>,
    maglev_table_size: Leaf,
    encap: Leaf,
    gue_port: Leaf,
    tunnel_source: Leaf,
    mss_clamp: Leaf,
    health: Option<RawHealth>,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
    persistence: Leaf,
    persistence_mask: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    check: Leaf,
    interval: Leaf,
    timeout: Leaf,
    rise: Leaf,
    fall: Leaf,
    http_path: Leaf,
    http_status: Leaf,
    on_failure: Leaf,
    udp_payload: Leaf,
    passive_fall: Leaf,
    sorry_server: Leaf,
    via_vip: Leaf,
    script: Option<Spanned<Vec<Spanned<Value>>>>,
    dns_name: Leaf,
    dns_type: Leaf,
    dns_expect: Leaf,
    tls_server_name: Leaf,
    tls_verify: Leaf,
    tls_ca_file: Leaf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    addr: Leaf,
    port: Leaf,
    weight: Leaf,
}

const EXPECT_IP: &str = "a unicast IPv4 or IPv6 address, like \"10.1.1.100\" or \
                        \"2001:db8::100\" (not multicast, unspecified, IPv4-mapped or, for \
                        IPv6, link-local)";
const EXPECT_IPV4: &str = "a unicast IPv4 address, like \"10.1.1.1\"";
const EXPECT_IPV6: &str = "a unicast IPv6 address, like \"2001:db8:1::1\"";
const EXPECT_CIDR: &str = "the box's own IPv4 address and prefix length, like \"10.1.1.10/24\" \
                           (prefix 0 to 32; an IPv6 address goes in addr6)";
const EXPECT_CIDR6: &str = "the box's own IPv6 address and prefix length, like \
                            \"2001:db8:1::10/64\" (prefix 0 to 128; unicast, not link-local)";
const EXPECT_MAC: &str = "a unicast MAC address, like \"02:00:00:00:00:01\" (six hex bytes \
                          separated by ':' or '-'; not multicast, not all zeros)";
const EXPECT_PORT: &str = "a port number, an integer from 1 to 65535";

/// The text being parsed and its name, to turn spans into lines and build errors.
struct Context<'a> {
    text: &'a str,
    path: &'a str,
}

impl Context<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let bytes = self.text.as_bytes();
        let before = bytes.get(..offset).unwrap_or(bytes);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        let tail = before.get(line_start..).unwrap_or_default();
        let column = tail.iter().filter(|&&b| b & 0xC0 != 0x80).count() + 1;
        (line, column)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.line_column(span.start).0
    }

    fn syntax(&self, error: toml::de::Error) -> ConfigError {
        // Without the input, the error's Display ends with the table it was reading.
        let mut bare = error.clone();
        bare.set_input(None);
        let table = bare.to_string().lines().last().and_then(|last| {
            let table = last.strip_prefix("in `")?.strip_suffix('`')?;
            Some(table.to_string())
        });
        let mut message = error.message().trim_end().to_string();
        if let Some(table) = &table
            && message.starts_with("invalid type: map, expected a sequence")
        {
            message.push_str(&format!(": write [[{table}]], with double brackets"));
        }
        let Some(span) = error.span() else {
            return ConfigError::Syntax { path: self.path.to_string(), line: 0, message };
        };
        let (line, column) = self.line_column(span.start);
        match table {
            Some(table) => message.push_str(&format!(" (in {table}, column {column})")),
            None => message.push_str(&format!(" (column {column})")),
        }
        ConfigError::Syntax { path: self.path.to_string(), line, message }
    }

    fn invalid_at(
        &self,
        key: &str,
        span: &Range<usize>,
        value: String,
        expected: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: self.line(span),
            key: key.to_string(),
            value,
            expected: expected.into(),
        }
    }

    fn invalid(&self, key: &str, at: &Spanned<Value>, expected: impl Into<String>) -> ConfigError {
        self.invalid_at(key, &at.span(), at.get_ref().to_string(), expected)
    }

    /// `invalid` at `leaf`, for checks made after conversion (duplicates), when the key is
    /// known to be present; should it not be, at its table.
    fn invalid_leaf(
        &self,
        key: &str,
        leaf: &Leaf,
        table: &Range<usize>,
        expected: String,
    ) -> ConfigError {
        match leaf {
            Some(at) => self.invalid(key, at, expected),
            None => self.invalid_at(key, table, String::new(), expected),
        }
    }

    fn missing(&self, key: &str, table: &Range<usize>, expected: &str) -> ConfigError {
        ConfigError::Missing {
            path: self.path.to_string(),
            line: self.line(table),
            key: key.to_string(),
            expected: expected.to_string(),
        }
    }

    fn required<'v>(
        &self,
        leaf: &'v Leaf,
        key: &str,
        table: &Range<usize>,
        expected: &str,
    ) -> Result<&'v Spanned<Value>, ConfigError> {
        leaf.as_ref().ok_or_else(|| self.missing(key, table, expected))
    }

    fn string<'v>(
        &self,
        key: &str,
        at: &'v Spanned<Value>,
        expected: &str,
    ) -> Result<&'v str, ConfigError> {
        at.get_ref().as_str().ok_or_else(|| self.invalid(key, at, expected))
    }

    /// An integer from `min` to `max` (which `T` must hold), as a `T`.
    fn integer<T: TryFrom<i64>>(
        &self,
        key: &str,
        at: &Spanned<Value>,
        min: i64,
        max: i64,
        expected: &str,
    ) -> Result<T, ConfigError> {
        at.get_ref()
            .as_integer()
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.invalid(key, at, expected))
    }

    fn port(&self, key: &str, at: &Spanned<Value>) -> Result<u16, ConfigError> {
        self.integer(key, at, 1, 65_535, EXPECT_PORT)
    }

    fn ipv4(&self, key: &str, at: &Spanned<Value>) -> Result<Ipv4Addr, ConfigError> {
        self.string(key, at, EXPECT_IPV4)?
            .parse::<Ipv4Addr>()
            .ok()
            .filter(|ip| is_unicast(*ip))
            .ok_or_else(|| self.invalid(key, at, EXPECT_IPV4))
    }

    /// An IPv6 next hop: unicast, link-local allowed (routers advertise those).
    fn ipv6_gateway(&self, key: &str, at: &Spanned<Value>) -> Result<Ipv6Addr, ConfigError> {
        self.string(key, at, EXPECT_IPV6)?
            .parse::<Ipv6Addr>()
            .ok()
            .filter(|ip| is_host6(*ip, true))
            .ok_or_else(|| self.invalid(key, at, EXPECT_IPV6))
    }

    /// A host's address of either family (see [`is_host`]); `link_local` admits IPv6
    /// link-local addresses (a static neighbour: the gateway's).
    fn ip(&self, key: &str, at: &Spanned<Value>, link_local: bool) -> Result<IpAddr, ConfigError> {
        self.string(key, at, EXPECT_IP)?
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| is_host(*ip, link_local))
            .ok_or_else(|| self.invalid(key, at, EXPECT_IP))
    }

    /// `addr` of a service's address list (backend, local address, sorry server) must be of
    /// the family of the service's `vip`: xlb does not translate between families.
    fn same_family(
        &self,
        key: &str,
        at: &Spanned<Value>,
        service: &ServiceName,
        forward: ForwardMode,
        addr: IpAddr,
    ) -> Result<(), ConfigError> {
        if addr.is_ipv4() == service.vip.is_ipv4() {
            return Ok(());
        }
        let translation = match (service.vip.is_ipv6(), forward) {
            (true, ForwardMode::Tunnel) => {
                "6in4 (IPv6 packets in an IPv4 tunnel) is not supported: a tunnel's outer header \
                 is of its service's family"
            }
            (false, ForwardMode::Tunnel) => {
                "4in6 (IPv4 packets in an IPv6 tunnel) is not supported: a tunnel's outer header \
                 is of its service's family"
            }
            (true, _) => "NAT64 (IPv6 clients to IPv4 real servers) is not supported",
            (false, _) => "NAT46 (IPv4 clients to IPv6 real servers) is not supported",
        };
        Err(self.invalid(
            key,
            at,
            format!(
                "an {} address, as service {} is {}: {translation}",
                family_name(service.vip),
                service,
                family_name(service.vip),
            ),
        ))
    }

    fn mac(&self, key: &str, at: &Spanned<Value>) -> Result<Mac, ConfigError> {
        parse_mac(self.string(key, at, EXPECT_MAC)?)
            .ok()
            .filter(|mac| mac[0] & 1 == 0 && *mac != [0; 6])
            .ok_or_else(|| self.invalid(key, at, EXPECT_MAC))
    }

    fn choice<T: Choice>(&self, key: &str, at: &Spanned<Value>) -> Result<T, ConfigError> {
        let expected = || {
            let names: Vec<String> =
                T::ALL.iter().map(|choice| format!("\"{}\"", choice.choice_name())).collect();
            format!("one of {}", names.join(", "))
        };
        at.get_ref()
            .as_str()
            .and_then(T::from_choice_name)
            .ok_or_else(|| self.invalid(key, at, expected()))
    }

    fn optional_choice<T: Choice>(
        &self,
        key: &str,
        leaf: &Leaf,
        default: T,
    ) -> Result<T, ConfigError> {
        optional(leaf, default, |at| self.choice(key, at))
    }

    /// Seconds as a float or an integer, more than zero (the health-check times).
    fn seconds(&self, key: &str, at: &Spanned<Value>) -> Result<Duration, ConfigError> {
        let secs = match at.get_ref() {
            Value::Float(secs) => Some(*secs),
            Value::Integer(secs) => Some(*secs as f64),
            _ => None,
        };
        // Rounded to the nearest nanosecond, so that 1.234 means 1.234 s, not 1.233999999 s.
        secs.map(|secs| (secs * 1e9).round())
            .filter(|nanos| *nanos >= 1.0 && *nanos < u64::MAX as f64)
            .map(|nanos| Duration::from_nanos(nanos as u64))
            .ok_or_else(|| self.invalid(key, at, "a number of seconds greater than 0, like 2.0"))
    }

    /// `[fleet] route_table` and `route_device`: only in `bgp` mode.
    fn fleet_routes(
        &self,
        mode: FleetMode,
        table: &RawFleet,
    ) -> Result<Option<RouteExport>, ConfigError> {
        const EXPECT_TABLE: &str = "a routing table number from 1 to 4294967295, not 253, 254 \
                                    or 255 (default, main, local), with mode = \"bgp\"";
        const EXPECT_DEVICE: &str =
            "an interface name of 1 to 15 bytes, no '/', ':' or whitespace, with route_table";
        let Some(at) = &table.route_table else {
            return match &table.route_device {
                Some(at) => Err(self.invalid("fleet.route_device", at, EXPECT_DEVICE)),
                None => Ok(None),
            };
        };
        let number: u32 =
            self.integer("fleet.route_table", at, 1, u32::MAX.into(), EXPECT_TABLE)?;
        if matches!(number, 253..=255) || mode != FleetMode::Bgp {
            return Err(self.invalid("fleet.route_table", at, EXPECT_TABLE));
        }
        let device = match &table.route_device {
            Some(at) => {
                let name = self.string("fleet.route_device", at, EXPECT_DEVICE)?;
                let bad = |c: char| c == '/' || c == ':' || c.is_whitespace();
                if name.is_empty() || name.len() > 15 || name.chars().any(bad) {
                    return Err(self.invalid("fleet.route_device", at, EXPECT_DEVICE));
                }
                name.to_string()
            }
            None => RouteExport::DEFAULT_DEVICE.to_string(),
        };
        Ok(Some(RouteExport { table: number, device }))
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.interface.is_empty() {
            return Err(self.missing(
                "interface",
                &(0..0),
                "at least one [[interface]] table with the box's name, addr and mac",
            ));
        }
        let mut interfaces: Vec<InterfaceConfig> = Vec::with_capacity(raw.interface.len());
        for (index, table) in raw.interface.iter().enumerate() {
            let interface = self.interface(&format!("interface[{index}]"), table)?;
            if let Some(earlier) = interfaces.iter().position(|i| i.name == interface.name) {
                let expected = format!("a name not already used: interface[{earlier}] has it");
                let key = format!("interface[{index}].name");
                return Err(self.invalid_leaf(
                    &key,
                    &table.get_ref().name,
                    &table.span(),
                    expected,
                ));
            }
            interfaces.push(interface);
        }

        let mut neighbors: Vec<NeighborConfig> = Vec::with_capacity(raw.neighbor.len());
        for (index, table) in raw.neighbor.iter().enumerate() {
            let key = format!("neighbor[{index}]");
            let span = table.span();
            let entry = table.get_ref();
            let ip_at = self.required(&entry.ip, &format!("{key}.ip"), &span, EXPECT_IP)?;
            let ip = self.ip(&format!("{key}.ip"), ip_at, true)?;
            let mac_at = self.required(&entry.mac, &format!("{key}.mac"), &span, EXPECT_MAC)?;
            let mac = self.mac(&format!("{key}.mac"), mac_at)?;
            if let Some(earlier) = neighbors.iter().position(|n| n.ip == ip) {
                return Err(self.invalid(
                    &format!("{key}.ip"),
                    ip_at,
                    format!("an address not already listed: neighbor[{earlier}] has it"),
                ));
            }
            neighbors.push(NeighborConfig { ip, mac });
        }

        let conntrack = match &raw.conntrack {
            Some(table) => self.conntrack(table)?,
            None => ConntrackSettings::default(),
        };

        let mut services: Vec<ServiceConfig> = Vec::with_capacity(raw.service.len());
        for (index, table) in raw.service.iter().enumerate() {
            let key = format!("service[{index}]");
            let service = self.service(&key, table, &interfaces)?;
            let same = |s: &ServiceConfig| {
                s.vip == service.vip && s.port == service.port && s.proto == service.proto
            };
            if let Some(earlier) = services.iter().position(same) {
                let expected = format!(
                    "a service not already defined: {} {} is service[{earlier}]",
                    service.proto,
                    endpoint(service.vip, service.port)
                );
                let key = format!("{key}.vip");
                return Err(self.invalid_leaf(&key, &table.get_ref().vip, &table.span(), expected));
            }
            let slots: usize = services.iter().map(ServiceConfig::maglev_slots).sum::<usize>()
                + service.maglev_slots();
            if slots > MAX_TOTAL_MAGLEV_SLOTS {
                let raw = table.get_ref();
                let expected = format!(
                    "a smaller table: the Maglev tables of service[0] to service[{index}] would \
                     hold {slots} slots ({}), more than the {MAX_TOTAL_MAGLEV_SLOTS} ({}) all \
                     services may take together",
                    mib(slots * 4),
                    mib(MAX_TOTAL_MAGLEV_SLOTS * 4)
                );
                let key = format!("{key}.maglev_table_size");
                return Err(self.invalid_leaf(
                    &key,
                    &raw.maglev_table_size,
                    &table.span(),
                    expected,
                ));
            }
            services.push(service);
        }

        let dataplane = match &raw.dataplane {
            Some(table) => DataplaneSettings {
                busy_poll: self.optional_choice(
                    "dataplane.busy_poll",
                    &table.busy_poll,
                    BusyPollMode::default(),
                )?,
                busy_poll_marker: optional(&table.busy_poll_marker, None, |at| {
                    self.port("dataplane.busy_poll_marker", at).map(Some)
                })?,
            },
            None => DataplaneSettings::default(),
        };

        let (fleet, fleet_routes) = match &raw.fleet {
            Some(table) => {
                let mode = self.optional_choice("fleet.mode", &table.mode, FleetMode::default())?;
                (mode, self.fleet_routes(mode, table)?)
            }
            None => (FleetMode::default(), None),
        };

        let config =
            Config { interfaces, neighbors, conntrack, dataplane, fleet, fleet_routes, services };
        self.address_conflicts(&raw, &config)?;
        Ok(config)
    }

    /// ", line N" of a span, for a message about another value (nothing for a rendered
    /// config, whose lines are no file's).
    fn at_line(&self, span: &Range<usize>) -> String {
        if self.path == VALIDATED { String::new() } else { format!(", line {}", self.line(span)) }
    }

    /// The addresses xlb answers ARP for (VIPs and FullNAT local addresses) must be no other
    /// host's and no special address: a typo there takes over another host's traffic, or
    /// leaves a service dead. Checked after everything else, in file order: each VIP against
    /// the hosts the config names (the interfaces' own addresses and gateways, static
    /// neighbours, real servers, sorry servers), then each local address against those and
    /// every VIP. Two services may share a VIP (other ports) or a local address.
    fn address_conflicts(&self, raw: &RawConfig, config: &Config) -> Result<(), ConfigError> {
        struct Use {
            addr: IpAddr,
            what: String,
        }
        let mut hosts: Vec<Use> = Vec::new();
        for (index, (interface, table)) in config.interfaces.iter().zip(&raw.interface).enumerate()
        {
            let table = table.get_ref();
            let line = |leaf: &Leaf| leaf.as_ref().map(|at| self.at_line(&at.span()));
            hosts.push(Use {
                addr: interface.addr.into(),
                what: format!(
                    "interface[{index}] {}'s own address{}",
                    interface.name,
                    line(&table.addr).unwrap_or_default()
                ),
            });
            if let Some(gateway) = interface.gateway {
                hosts.push(Use {
                    addr: gateway.into(),
                    what: format!(
                        "the gateway of interface[{index}] {}{}",
                        interface.name,
                        line(&table.gateway).unwrap_or_default()
                    ),
                });
            }
            if let Some(v6) = interface.ipv6 {
                hosts.push(Use {
                    addr: v6.addr.into(),
                    what: format!(
                        "interface[{index}] {}'s own IPv6 address{}",
                        interface.name,
                        line(&table.addr6).unwrap_or_default()
                    ),
                });
                if let Some(gateway) = v6.gateway {
                    hosts.push(Use {
                        addr: gateway.into(),
                        what: format!(
                            "the IPv6 gateway of interface[{index}] {}{}",
                            interface.name,
                            line(&table.gateway6).unwrap_or_default()
                        ),
                    });
                }
            }
        }
        for (index, (neighbor, table)) in config.neighbors.iter().zip(&raw.neighbor).enumerate() {
            let line = table.get_ref().ip.as_ref().map(|at| self.at_line(&at.span()));
            hosts.push(Use {
                addr: neighbor.ip,
                what: format!("static neighbor[{index}]{}", line.unwrap_or_default()),
            });
        }
        let name =
            |index: usize, s: &ServiceConfig| format!("service[{index}] ({})", ServiceName::of(s));
        for (index, (service, table)) in config.services.iter().zip(&raw.service).enumerate() {
            let table = table.get_ref();
            for (b, (backend, backend_table)) in
                service.backends.iter().zip(&table.backend).enumerate()
            {
                let line = backend_table.get_ref().addr.as_ref().map(|at| self.at_line(&at.span()));
                hosts.push(Use {
                    addr: backend.addr,
                    what: format!(
                        "real server {} (backend[{b}]) of {}{}",
                        endpoint(backend.addr, backend.port),
                        name(index, service),
                        line.unwrap_or_default()
                    ),
                });
            }
            if let Some(sorry) = service.health.sorry_server {
                let line = table
                    .health
                    .as_ref()
                    .and_then(|h| h.sorry_server.as_ref())
                    .map(|at| self.at_line(&at.span()));
                hosts.push(Use {
                    addr: sorry.ip(),
                    what: format!(
                        "the sorry server {sorry} of {}{}",
                        name(index, service),
                        line.unwrap_or_default()
                    ),
                });
            }
        }
        let special = |addr: IpAddr| -> Option<String> {
            let addr = match addr {
                IpAddr::V4(addr) => addr,
                IpAddr::V6(addr) => return special6(&config.interfaces, addr),
            };
            if addr.is_loopback() {
                return Some("a loopback address (127.0.0.0/8)".into());
            }
            for (index, i) in config.interfaces.iter().enumerate() {
                if i.prefix_len > 30 || !i.contains(addr) {
                    continue;
                }
                let network = u32::from(i.addr) & prefix_mask(i.prefix_len);
                let subnet = format!("{}/{}", Ipv4Addr::from(network), i.prefix_len);
                if u32::from(addr) == network {
                    return Some(format!(
                        "the network address of interface[{index}] {}'s subnet {subnet}",
                        i.name
                    ));
                }
                if u32::from(addr) == network | !prefix_mask(i.prefix_len) {
                    return Some(format!(
                        "the broadcast address of interface[{index}] {}'s subnet {subnet}",
                        i.name
                    ));
                }
            }
            None
        };
        let refuse = |key: String, at: &Spanned<Value>, addr: IpAddr, role: &str, other: &str| {
            // IPv6's neighbour discovery is NDP (which xlb will answer as it answers ARP).
            let arp = if addr.is_ipv6() { "NDP" } else { "ARP" };
            self.invalid(
                &key,
                at,
                format!(
                    "an address no other host uses: it is also {other}, and xlb answers {arp} for \
                     a {role}, taking that address's traffic"
                ),
            )
        };
        let mut vips: Vec<Use> = Vec::new();
        for (index, (service, table)) in config.services.iter().zip(&raw.service).enumerate() {
            let key = format!("service[{index}].vip");
            let Some(at) = table.get_ref().vip.as_ref() else { continue };
            if let Some(why) = special(service.vip) {
                return Err(refuse(key, at, service.vip, "VIP", &why));
            }
            if let Some(host) = hosts.iter().find(|h| h.addr == service.vip) {
                return Err(refuse(key, at, service.vip, "VIP", &host.what));
            }
            vips.push(Use {
                addr: service.vip,
                what: format!("the vip of {}{}", name(index, service), self.at_line(&at.span())),
            });
        }
        for (index, (service, table)) in config.services.iter().zip(&raw.service).enumerate() {
            let Some(list) = table.get_ref().local_addrs.as_ref() else { continue };
            for (l, (addr, at)) in service.local_addrs.iter().zip(list.get_ref()).enumerate() {
                let key = format!("service[{index}].local_addrs[{l}]");
                if let Some(why) = special(*addr) {
                    return Err(refuse(key, at, *addr, "FullNAT local address", &why));
                }
                if let Some(other) = hosts.iter().chain(&vips).find(|h| h.addr == *addr) {
                    return Err(refuse(key, at, *addr, "FullNAT local address", &other.what));
                }
            }
        }
        Ok(())
    }

    fn interface(
        &self,
        key: &str,
        table: &Spanned<RawInterface>,
    ) -> Result<InterfaceConfig, ConfigError> {
        let span = table.span();
        let raw = table.get_ref();

        let name_key = format!("{key}.name");
        let expect_name = "a device name of 1 to 15 bytes, no spaces or '/', like \"eth0\"";
        let name_at = self.required(&raw.name, &name_key, &span, expect_name)?;
        let name = self.string(&name_key, name_at, expect_name)?;
        let name_ok = (1..=15).contains(&name.len())
            && !name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/');
        if !name_ok {
            return Err(self.invalid(&name_key, name_at, expect_name));
        }

        let addr_key = format!("{key}.addr");
        let addr_at = self.required(&raw.addr, &addr_key, &span, EXPECT_CIDR)?;
        let cidr_text = self.string(&addr_key, addr_at, EXPECT_CIDR)?;
        let (addr, prefix_len) = cidr::<Ipv4Addr>(cidr_text, 32)
            .filter(|(addr, _)| is_unicast(*addr))
            .ok_or_else(|| self.invalid(&addr_key, addr_at, EXPECT_CIDR))?;

        let mac = match &raw.mac {
            Some(at) => Some(self.mac(&format!("{key}.mac"), at)?),
            None => None,
        };

        let mut interface = InterfaceConfig {
            name: name.to_string(),
            addr,
            prefix_len,
            mac,
            gateway: None,
            ipv6: None,
            mtu: optional(&raw.mtu, InterfaceConfig::DEFAULT_MTU, |at| {
                let expected = "an MTU from 576 to 9216 bytes (default 1500)";
                self.integer(&format!("{key}.mtu"), at, 576, 9216, expected)
            })?,
            tunnel_source: match &raw.tunnel_source {
                Some(at) => {
                    Some(self.interface_tunnel_source(&format!("{key}.tunnel_source"), at)?)
                }
                None => None,
            },
        };
        if let Some(at) = &raw.gateway {
            let gateway_key = format!("{key}.gateway");
            let gateway = self.ipv4(&gateway_key, at)?;
            if !interface.contains(gateway) || gateway == addr {
                return Err(self.invalid(
                    &gateway_key,
                    at,
                    format!(
                        "an address inside {}/{} other than the interface's own: the next hop \
                         must be directly reachable",
                        Ipv4Addr::from(u32::from(addr) & prefix_mask(prefix_len)),
                        prefix_len
                    ),
                ));
            }
            interface.gateway = Some(gateway);
        }
        interface.ipv6 = self.interface6(key, raw)?;
        Ok(interface)
    }

    /// An interface's `addr6` and `gateway6` (`gateway6` only with `addr6`).
    fn interface6(
        &self,
        key: &str,
        raw: &RawInterface,
    ) -> Result<Option<Ipv6Interface>, ConfigError> {
        let Some(addr_at) = &raw.addr6 else {
            return match &raw.gateway6 {
                Some(at) => Err(self.invalid(
                    &format!("{key}.gateway6"),
                    at,
                    "nothing without addr6: an IPv6 next hop needs the interface's IPv6 address",
                )),
                None => Ok(None),
            };
        };
        let addr_key = format!("{key}.addr6");
        let (addr, prefix_len) =
            cidr::<Ipv6Addr>(self.string(&addr_key, addr_at, EXPECT_CIDR6)?, 128)
                .filter(|(addr, _)| is_host6(*addr, false))
                .ok_or_else(|| self.invalid(&addr_key, addr_at, EXPECT_CIDR6))?;
        let mut v6 = Ipv6Interface { addr, prefix_len, gateway: None };
        if let Some(at) = &raw.gateway6 {
            let gateway_key = format!("{key}.gateway6");
            let gateway = self.ipv6_gateway(&gateway_key, at)?;
            let on_link = v6.contains(gateway) || gateway.is_unicast_link_local();
            if !on_link || gateway == addr {
                let network = Ipv6Addr::from_bits(addr.to_bits() & prefix_mask6(prefix_len));
                return Err(self.invalid(
                    &gateway_key,
                    at,
                    format!(
                        "a link-local address or one inside {network}/{prefix_len} other than \
                         the interface's own: the next hop must be directly reachable"
                    ),
                ));
            }
            v6.gateway = Some(gateway);
        }
        Ok(Some(v6))
    }

    fn conntrack(&self, raw: &RawConntrack) -> Result<ConntrackSettings, ConfigError> {
        let defaults = ConntrackSettings::default();
        let max = i64::try_from(MAX_CONNTRACK_CAPACITY).unwrap_or(i64::MAX);
        let expected = format!("a number of flows per core from 1 to {max}");
        let capacity = optional(&raw.capacity, defaults.capacity, |at| {
            self.integer("conntrack.capacity", at, 1, max, &expected)
        })?;
        let limit = i64::try_from(capacity).unwrap_or(i64::MAX);
        let expected = format!(
            "from 1 to the capacity ({capacity}): half-open flows are a share of the table (set \
             it to the capacity for no separate limit)"
        );
        // Rounded up by default, so that a capacity of 1 still admits a new flow.
        let max_embryonic = optional(&raw.max_embryonic, capacity.div_ceil(2), |at| {
            self.integer("conntrack.max_embryonic", at, 1, limit, &expected)
        })?;
        let timeout = |name: &str, leaf: &Leaf, default: Duration| {
            optional(leaf, default, |at| {
                let expected = "a whole number of seconds, at least 1";
                let secs = self.integer(&format!("conntrack.{name}"), at, 1, i64::MAX, expected)?;
                Ok(Duration::from_secs(secs))
            })
        };
        Ok(ConntrackSettings {
            capacity,
            max_embryonic,
            tcp_syn_timeout: timeout(
                "tcp_syn_timeout",
                &raw.tcp_syn_timeout,
                defaults.tcp_syn_timeout,
            )?,
            tcp_established_timeout: timeout(
                "tcp_established_timeout",
                &raw.tcp_established_timeout,
                defaults.tcp_established_timeout,
            )?,
            tcp_closing_timeout: timeout(
                "tcp_closing_timeout",
                &raw.tcp_closing_timeout,
                defaults.tcp_closing_timeout,
            )?,
            tcp_closed_timeout: timeout(
                "tcp_closed_timeout",
                &raw.tcp_closed_timeout,
                defaults.tcp_closed_timeout,
            )?,
            udp_timeout: timeout("udp_timeout", &raw.udp_timeout, defaults.udp_timeout)?,
        })
    }

    fn service(
        &self,
        key: &str,
        table: &Spanned<RawService>,
        interfaces: &[InterfaceConfig],
    ) -> Result<ServiceConfig, ConfigError> {
        let span = table.span();
        let raw = table.get_ref();

        let vip_key = format!("{key}.vip");
        let vip = self.ip(&vip_key, self.required(&raw.vip, &vip_key, &span, EXPECT_IP)?, false)?;
        let port_key = format!("{key}.port");
        let port =
            self.port(&port_key, self.required(&raw.port, &port_key, &span, EXPECT_PORT)?)?;
        let proto = self.optional_choice(&format!("{key}.proto"), &raw.proto, Proto::Tcp)?;
        let scheduler = self.optional_choice(
            &format!("{key}.scheduler"),
            &raw.scheduler,
            SchedulerKind::Maglev,
        )?;
        let forward_key = format!("{key}.forward");
        let forward = self.optional_choice(&forward_key, &raw.forward, ForwardMode::Dr)?;

        let name = ServiceName { proto, vip, port };
        let tunnel = self.tunnel(key, raw, forward, &name)?;
        let local_addrs = self.local_addrs(key, raw, forward, &span, &name)?;
        let health = match &raw.health {
            Some(health) => {
                let target = SorryTarget { name: &name, forward, interfaces };
                self.health(&format!("{key}.health"), health, proto, &target)?
            }
            None => HealthConfig::for_proto(proto),
        };

        let mut backends: Vec<BackendConfig> = Vec::with_capacity(raw.backend.len());
        for (index, backend_table) in raw.backend.iter().enumerate() {
            let backend_key = format!("{key}.backend[{index}]");
            let backend = self.backend(&backend_key, backend_table, &name, forward, interfaces)?;
            let same = |b: &BackendConfig| b.addr == backend.addr && b.port == backend.port;
            if let Some(earlier) = backends.iter().position(same) {
                let expected = format!(
                    "a real server not already in this service: {} is backend[{earlier}]",
                    endpoint(backend.addr, backend.port)
                );
                let addr = &backend_table.get_ref().addr;
                let key = format!("{backend_key}.addr");
                return Err(self.invalid_leaf(&key, addr, &backend_table.span(), expected));
            }
            backends.push(backend);
        }
        if let Some(sorry) = health.sorry_server
            && let Some(index) =
                backends.iter().position(|b| b.addr == sorry.ip() && b.port == sorry.port())
            && let Some(at) = raw.health.as_ref().and_then(|h| h.sorry_server.as_ref())
        {
            let expected = format!(
                "a real server that is not one of the service's backends: {sorry} is \
                 backend[{index}], and a sorry server only serves while every backend is down"
            );
            return Err(self.invalid(&format!("{key}.health.sorry_server"), at, expected));
        }

        let table_size_key = format!("{key}.maglev_table_size");
        let (maglev_table_size, size_span, size_value) = match &raw.maglev_table_size {
            Some(at) => {
                let expected = format!("a prime from 2 to {MAX_MAGLEV_TABLE_SIZE}, like 65537");
                let max = i64::try_from(MAX_MAGLEV_TABLE_SIZE).unwrap_or(i64::MAX);
                let n: u64 = self.integer(&table_size_key, at, 2, max, &expected)?;
                let n = usize::try_from(n)
                    .ok()
                    .filter(|_| is_prime(n))
                    .ok_or_else(|| self.invalid(&table_size_key, at, expected))?;
                (n, at.span(), at.get_ref().to_string())
            }
            None => (
                DEFAULT_MAGLEV_TABLE_SIZE,
                span.clone(),
                format!("{DEFAULT_MAGLEV_TABLE_SIZE} (the default)"),
            ),
        };
        if maglev_table_size < backends.len() {
            return Err(self.invalid_at(
                &table_size_key,
                &size_span,
                size_value,
                format!(
                    "a prime at least the number of backends ({}): every backend needs a slot",
                    backends.len()
                ),
            ));
        }

        let persistence = self.persistence(key, raw, vip)?;
        Ok(ServiceConfig {
            vip,
            port,
            proto,
            scheduler,
            forward,
            local_addrs,
            maglev_table_size,
            health,
            backends,
            persistence,
            tunnel,
        })
    }

    /// `persistence` (1 to 31 days in seconds) and `persistence_mask` (only with
    /// `persistence`): a dotted IPv4 netmask of leading ones, or a prefix length of the
    /// VIP's family (default: the whole address, as IPVS's 255.255.255.255 and /128).
    fn persistence(
        &self,
        key: &str,
        raw: &RawService,
        vip: IpAddr,
    ) -> Result<Option<Persistence>, ConfigError> {
        let max_len: u8 = if vip.is_ipv4() { 32 } else { 128 };
        let mask_key = format!("{key}.persistence_mask");
        let Some(at) = &raw.persistence else {
            return match &raw.persistence_mask {
                Some(mask) => Err(self.invalid(
                    &mask_key,
                    mask,
                    "no persistence_mask without persistence (the seconds a client's template lives)",
                )),
                None => Ok(None),
            };
        };
        let max = Persistence::MAX_TIMEOUT_SECS;
        let expected = format!("seconds from 1 to {max} (31 days), like 300");
        let secs: u64 =
            self.integer(&format!("{key}.persistence"), at, 1, max as i64, &expected)?;
        let prefix_len = match &raw.persistence_mask {
            None => max_len,
            Some(mask) => {
                let expected = if vip.is_ipv4() {
                    "a netmask of leading ones like \"255.255.255.0\", or a prefix length from 1 to 32"
                } else {
                    "a prefix length from 1 to 128 (an IPv6 service's mask)"
                };
                match mask.get_ref() {
                    Value::Integer(_) => {
                        self.integer(&mask_key, mask, 1, i64::from(max_len), expected)?
                    }
                    Value::String(text) if vip.is_ipv4() => netmask_prefix(text)
                        .ok_or_else(|| self.invalid(&mask_key, mask, expected))?,
                    _ => return Err(self.invalid(&mask_key, mask, expected)),
                }
            }
        };
        Ok(Some(Persistence { timeout: Duration::from_secs(secs), prefix_len }))
    }

    /// A tunnel service's settings; the tunnel keys are refused on other modes, and a
    /// `tunnel_source` of the other family than the service's.
    fn tunnel(
        &self,
        key: &str,
        raw: &RawService,
        forward: ForwardMode,
        service: &ServiceName,
    ) -> Result<Option<Tunnel>, ConfigError> {
        if forward != ForwardMode::Tunnel {
            let keys = [
                ("encap", &raw.encap),
                ("gue_port", &raw.gue_port),
                ("tunnel_source", &raw.tunnel_source),
                ("mss_clamp", &raw.mss_clamp),
            ];
            if let Some((name, Some(at))) = keys.into_iter().find(|(_, leaf)| leaf.is_some()) {
                return Err(self.invalid(
                    &format!("{key}.{name}"),
                    at,
                    format!(
                        "no {name}: it is a tunnel setting, and service {service} forwards by \
                         {forward} (set forward = \"tunnel\" to wrap packets)"
                    ),
                ));
            }
            return Ok(None);
        }
        let encap_key = format!("{key}.encap");
        let gue = match &raw.encap {
            None => false,
            Some(at) => match at.get_ref().as_str() {
                Some("ipip") => false,
                Some("gue") => true,
                _ => return Err(self.invalid(&encap_key, at, "one of \"ipip\", \"gue\"")),
            },
        };
        let port_key = format!("{key}.gue_port");
        let encap = match (&raw.gue_port, gue) {
            (Some(at), false) => {
                let expected = "no gue_port: encap is \"ipip\" (set encap = \"gue\" for GUE)";
                return Err(self.invalid(&port_key, at, expected));
            }
            (Some(at), true) => Encap::Gue { port: self.port(&port_key, at)? },
            (None, true) => Encap::Gue { port: Encap::GUE_PORT },
            (None, false) => Encap::Ipip,
        };
        let source = match &raw.tunnel_source {
            Some(at) => {
                let source_key = format!("{key}.tunnel_source");
                let source = self.tunnel_source(&source_key, at)?;
                if source.network.is_ipv4() != service.vip.is_ipv4() {
                    let family = family_name(service.vip);
                    let expected = format!(
                        "an {family} prefix: service {service} is {family}, and a tunnel's outer \
                         header is of its service's family (4in6 and 6in4 are not supported)"
                    );
                    return Err(self.invalid(&source_key, at, expected));
                }
                Some(source)
            }
            None => None,
        };
        let mss_key = format!("{key}.mss_clamp");
        let mss_clamp = match &raw.mss_clamp {
            Some(at) if service.proto != Proto::Tcp => {
                let expected = format!("no mss_clamp: service {service} is not TCP");
                return Err(self.invalid(&mss_key, at, expected));
            }
            Some(at) => {
                let expected = "an MSS from 536 to 9176 bytes";
                Some(self.integer(&mss_key, at, 536, 9176, expected)?)
            }
            None => None,
        };
        Ok(Some(Tunnel { encap, source, mss_clamp }))
    }

    /// A tunnel's outer source prefix: `"10.9.0.0/24"`, /8 to /32, host bits zero, of
    /// addresses a host may send from.
    fn tunnel_source(&self, key: &str, at: &Spanned<Value>) -> Result<TunnelSource, ConfigError> {
        let text = self.string(key, at, TUNNEL_SOURCE_EXPECTED)?;
        parse_tunnel_source(text).ok_or_else(|| self.invalid(key, at, TUNNEL_SOURCE_EXPECTED))
    }

    /// An interface's `tunnel_source`: an IPv4 prefix only (the default of its IPv4 tunnel
    /// services; an IPv6 service sets its own, else leaves from the interface's `addr6`).
    fn interface_tunnel_source(
        &self,
        key: &str,
        at: &Spanned<Value>,
    ) -> Result<TunnelSource, ConfigError> {
        let expected = "an IPv4 prefix /8 to /32 with its host bits zero, like \"10.9.0.0/24\", \
                        that the network routes to this box (an IPv6 tunnel service sets its \
                        own IPv6 tunnel_source; without one it leaves from addr6)";
        self.tunnel_source(key, at)
            .ok()
            .filter(|source| source.network.is_ipv4())
            .ok_or_else(|| self.invalid(key, at, expected))
    }

    fn local_addrs(
        &self,
        key: &str,
        raw: &RawService,
        forward: ForwardMode,
        span: &Range<usize>,
        service: &ServiceName,
    ) -> Result<Vec<IpAddr>, ConfigError> {
        let list_key = format!("{key}.local_addrs");
        let given = raw.local_addrs.as_ref();
        let entries = given.map_or(&[][..], |list| list.get_ref().as_slice());
        match forward {
            ForwardMode::FullNat if entries.is_empty() => {
                let expected = "a non-empty list of addresses, like [\"10.1.1.200\"]: FullNAT \
                                rewrites the client's source to one of these local addresses";
                return Err(match given {
                    Some(list) => self.invalid_at(&list_key, &list.span(), "[]".into(), expected),
                    // Absent: point at `forward = "fullnat"`, the line that asks for it.
                    None => {
                        let forward_span = raw.forward.as_ref().map_or(span.clone(), Spanned::span);
                        self.missing(&list_key, &forward_span, expected)
                    }
                });
            }
            ForwardMode::Dr | ForwardMode::Nat if !entries.is_empty() => {
                let list = given.map_or_else(String::new, |list| render_list(list.get_ref()));
                return Err(self.invalid_at(
                    &list_key,
                    &given.map_or(span.clone(), Spanned::span),
                    list,
                    format!(
                        "no local_addrs: they are FullNAT's source pool, and this service's \
                         forward is \"{forward}\""
                    ),
                ));
            }
            _ => {}
        }
        let mut addrs = Vec::with_capacity(entries.len());
        for (index, at) in entries.iter().enumerate() {
            let entry_key = format!("{list_key}[{index}]");
            let addr = self.ip(&entry_key, at, false)?;
            self.same_family(&entry_key, at, service, forward, addr)?;
            if let Some(earlier) = addrs.iter().position(|a| *a == addr) {
                return Err(self.invalid(
                    &entry_key,
                    at,
                    format!("an address not already in the list: local_addrs[{earlier}] has it"),
                ));
            }
            addrs.push(addr);
        }
        Ok(addrs)
    }

    fn health(
        &self,
        key: &str,
        raw: &RawHealth,
        proto: Proto,
        target: &SorryTarget<'_>,
    ) -> Result<HealthConfig, ConfigError> {
        let defaults = HealthConfig::for_proto(proto);
        let check = self.optional_choice(&format!("{key}.check"), &raw.check, defaults.check)?;
        let interval = optional(&raw.interval, defaults.interval, |at| {
            let interval_key = format!("{key}.interval");
            let interval = self.seconds(&interval_key, at)?;
            if interval < MIN_HEALTH_INTERVAL {
                let expected = format!(
                    "at least {} s: probing more often finds nothing sooner and only burns CPU",
                    MIN_HEALTH_INTERVAL.as_secs_f64()
                );
                return Err(self.invalid(&interval_key, at, expected));
            }
            Ok(interval)
        })?;
        // An interval shorter than the default timeout shortens the default timeout with it.
        let timeout = optional(&raw.timeout, defaults.timeout.min(interval), |at| {
            let timeout_key = format!("{key}.timeout");
            let timeout = self.seconds(&timeout_key, at)?;
            if timeout < MIN_HEALTH_TIMEOUT {
                let expected = format!(
                    "at least {} s: no probe is answered sooner",
                    MIN_HEALTH_TIMEOUT.as_secs_f64()
                );
                return Err(self.invalid(&timeout_key, at, expected));
            }
            if timeout > interval {
                let expected = format!(
                    "at most the interval ({} s): a probe must finish before the next one starts",
                    interval.as_secs_f64()
                );
                return Err(self.invalid(&timeout_key, at, expected));
            }
            Ok(timeout)
        })?;
        let count = |name: &str, leaf: &Leaf, default: u32| {
            optional(leaf, default, |at| {
                let expected = "a count of consecutive probes, from 1 to 4294967295";
                self.integer(&format!("{key}.{name}"), at, 1, i64::from(u32::MAX), expected)
            })
        };
        let rise = count("rise", &raw.rise, defaults.rise)?;
        let fall = count("fall", &raw.fall, defaults.fall)?;

        let http_only = |name: &str, at: &Spanned<Value>| {
            self.invalid(
                &format!("{key}.{name}"),
                at,
                format!(
                    "nothing: {name} applies only to check = \"http\" or \"https\", and this \
                     check is \"{check}\""
                ),
            )
        };
        let http_path = match &raw.http_path {
            Some(at) if !check.gets() => return Err(http_only("http_path", at)),
            Some(at) => {
                let path_key = format!("{key}.http_path");
                let expected = "an absolute path with no spaces, like \"/healthz\"";
                let path = self.string(&path_key, at, expected)?;
                let path_ok = path.starts_with('/')
                    && !path.chars().any(|c| c.is_whitespace() || c.is_control());
                if !path_ok {
                    return Err(self.invalid(&path_key, at, expected));
                }
                path.to_string()
            }
            None => defaults.http_path,
        };
        let http_status = match &raw.http_status {
            Some(at) if !check.gets() => return Err(http_only("http_status", at)),
            Some(at) => {
                let expected = "an HTTP status code from 100 to 599, like 200";
                self.integer(&format!("{key}.http_status"), at, 100, 599, expected)?
            }
            None => defaults.http_status,
        };
        let on_failure = self.optional_choice(
            &format!("{key}.on_failure"),
            &raw.on_failure,
            defaults.on_failure,
        )?;
        let udp_payload = match &raw.udp_payload {
            Some(at) if check != HealthCheckKind::Udp => {
                return Err(self.invalid(
                    &format!("{key}.udp_payload"),
                    at,
                    format!(
                        "nothing: udp_payload applies only to check = \"udp\", and this check \
                         is \"{check}\""
                    ),
                ));
            }
            Some(at) => self
                .string(&format!("{key}.udp_payload"), at, "a string, the datagram to send")?
                .to_string(),
            None => defaults.udp_payload,
        };
        let passive_fall = optional(&raw.passive_fall, defaults.passive_fall, |at| {
            let expected = "a count of consecutive bad observations, from 0 (off) to 4294967295";
            self.integer(&format!("{key}.passive_fall"), at, 0, i64::from(u32::MAX), expected)
        })?;
        let sorry_server = match &raw.sorry_server {
            Some(at) => Some(self.sorry_server(&format!("{key}.sorry_server"), at, target)?),
            None => None,
        };
        let via_vip = match &raw.via_vip {
            Some(at) => {
                let via_key = format!("{key}.via_vip");
                let value = at
                    .get_ref()
                    .as_bool()
                    .ok_or_else(|| self.invalid(&via_key, at, "true or false"))?;
                let through_vip = matches!(target.forward, ForwardMode::Dr | ForwardMode::Tunnel);
                if value && (!through_vip || check == HealthCheckKind::None) {
                    return Err(self.invalid(
                        &via_key,
                        at,
                        "false: probing through the VIP is for DR and tunnel services with a \
                         check",
                    ));
                }
                if value && check == HealthCheckKind::Script {
                    return Err(self.invalid(
                        &via_key,
                        at,
                        "false: a script check's command makes its own connections, which the \
                         probe socket's mark cannot route through the VIP",
                    ));
                }
                if value && target.name.vip.is_ipv6() {
                    return Err(self.invalid(
                        &via_key,
                        at,
                        "false: probing through the VIP (policy routes per real server) is IPv4 \
                         only (its policy routes are)",
                    ));
                }
                value
            }
            None => false,
        };
        let (script, dns_name, dns_type, dns_expect) = self.check_settings(key, raw, check)?;
        let (tls_server_name, tls_verify, tls_ca_file) = self.tls_settings(key, raw, check)?;
        Ok(HealthConfig {
            check,
            interval,
            timeout,
            rise,
            fall,
            http_path,
            http_status,
            on_failure,
            udp_payload,
            passive_fall,
            sorry_server,
            via_vip,
            script,
            dns_name,
            dns_type,
            dns_expect,
            tls_server_name,
            tls_verify,
            tls_ca_file,
        })
    }

    /// The settings of `check = "https"`: `tls_server_name`, `tls_verify`, `tls_ca_file`,
    /// each refused under another check.
    fn tls_settings(
        &self,
        key: &str,
        raw: &RawHealth,
        check: HealthCheckKind,
    ) -> Result<(Option<String>, bool, String), ConfigError> {
        let https_only = |name: &str, leaf: &Leaf| match leaf {
            Some(at) if check != HealthCheckKind::Https => Err(self.invalid(
                &format!("{key}.{name}"),
                at,
                format!(
                    "nothing: {name} applies only to check = \"https\", and this check is \
                     \"{check}\""
                ),
            )),
            _ => Ok(()),
        };
        https_only("tls_server_name", &raw.tls_server_name)?;
        https_only("tls_verify", &raw.tls_verify)?;
        https_only("tls_ca_file", &raw.tls_ca_file)?;
        let tls_server_name = match &raw.tls_server_name {
            Some(at) => {
                let name_key = format!("{key}.tls_server_name");
                let expected = "a DNS name, like \"www.example.com\" (sent as SNI)";
                let name = self.string(&name_key, at, expected)?;
                let valid = rustls::pki_types::ServerName::try_from(name).is_ok()
                    && name.parse::<IpAddr>().is_err();
                if !valid {
                    return Err(self.invalid(&name_key, at, expected));
                }
                Some(name.to_string())
            }
            None => None,
        };
        let tls_verify = match &raw.tls_verify {
            Some(at) => at
                .get_ref()
                .as_bool()
                .ok_or_else(|| self.invalid(&format!("{key}.tls_verify"), at, "true or false"))?,
            None => false,
        };
        let tls_ca_file = match &raw.tls_ca_file {
            Some(at) => {
                let file_key = format!("{key}.tls_ca_file");
                let expected = "the absolute path of a PEM file of CA certificates, with \
                                tls_verify = true";
                let path = self.string(&file_key, at, expected)?;
                if !path.starts_with('/') || path.contains('\0') || !tls_verify {
                    return Err(self.invalid(&file_key, at, expected));
                }
                path.to_string()
            }
            None => DEFAULT_TLS_CA_FILE.to_string(),
        };
        Ok((tls_server_name, tls_verify, tls_ca_file))
    }

    /// The settings of `check = "script"` (`script`) and `check = "dns"` (`dns_name`,
    /// `dns_type`, `dns_expect`), each refused under another check.
    fn check_settings(
        &self,
        key: &str,
        raw: &RawHealth,
        check: HealthCheckKind,
    ) -> Result<(Vec<String>, String, u16, Option<IpAddr>), ConfigError> {
        let defaults = HealthConfig::default();
        let only_at = |name: &str, span: &Range<usize>, value: String, kind: HealthCheckKind| {
            self.invalid_at(
                &format!("{key}.{name}"),
                span,
                value,
                format!(
                    "nothing: {name} applies only to check = \"{kind}\", and this check is \"{check}\""
                ),
            )
        };
        let only = |name: &str, at: &Spanned<Value>, kind: HealthCheckKind| {
            only_at(name, &at.span(), at.get_ref().to_string(), kind)
        };
        let script_key = format!("{key}.script");
        let script = match &raw.script {
            Some(list) if check != HealthCheckKind::Script => {
                let value = format!("[{} argument(s)]", list.get_ref().len());
                return Err(only_at("script", &list.span(), value, HealthCheckKind::Script));
            }
            Some(list) => {
                let expected = "the command's absolute path, then its arguments, like \
                                [\"/usr/lib/xlb/check-db\", \"--quick\"] (no shell: \
                                [\"/bin/sh\", \"-c\", \"...\"] for one)";
                let mut argv = Vec::new();
                for (index, at) in list.get_ref().iter().enumerate() {
                    let arg = self.string(&format!("{script_key}[{index}]"), at, expected)?;
                    let usable = !arg.contains('\0') && (index > 0 || arg.starts_with('/'));
                    if !usable {
                        return Err(self.invalid(&format!("{script_key}[{index}]"), at, expected));
                    }
                    argv.push(arg.to_string());
                }
                if argv.is_empty() {
                    return Err(self.invalid_at(&script_key, &list.span(), "[]".into(), expected));
                }
                argv
            }
            None if check == HealthCheckKind::Script => {
                // The check is "script", so it was written (the default is never a script).
                let expected = "\"script\" with the command beside it: script = \
                                [\"/path/to/check\", \"arg\"...]";
                return Err(match &raw.check {
                    Some(at) => self.invalid(&format!("{key}.check"), at, expected),
                    None => self.invalid_at(&script_key, &(0..0), String::new(), expected),
                });
            }
            None => Vec::new(),
        };
        let dns_name = match &raw.dns_name {
            Some(at) if check != HealthCheckKind::Dns => {
                return Err(only("dns_name", at, HealthCheckKind::Dns));
            }
            Some(at) => {
                let name_key = format!("{key}.dns_name");
                let expected = "a domain name, like \"example.com\" or \".\" (the root)";
                let name = self.string(&name_key, at, expected)?;
                if let Some(problem) = dns_name_problem(name) {
                    return Err(self.invalid(&name_key, at, format!("{expected}: {problem}")));
                }
                name.to_string()
            }
            None => defaults.dns_name,
        };
        let dns_type = match &raw.dns_type {
            Some(at) if check != HealthCheckKind::Dns => {
                return Err(only("dns_type", at, HealthCheckKind::Dns));
            }
            Some(at) => {
                let names: Vec<&str> = DNS_TYPES.iter().map(|(name, _)| *name).collect();
                let expected = format!("one of {}", names.join(", "));
                let text = self.string(&format!("{key}.dns_type"), at, &expected)?;
                let found = DNS_TYPES.iter().find(|(name, _)| name.eq_ignore_ascii_case(text));
                match found {
                    Some((_, number)) => *number,
                    None => return Err(self.invalid(&format!("{key}.dns_type"), at, expected)),
                }
            }
            None => defaults.dns_type,
        };
        let dns_expect = match &raw.dns_expect {
            Some(at) if check != HealthCheckKind::Dns => {
                return Err(only("dns_expect", at, HealthCheckKind::Dns));
            }
            Some(at) => {
                let expect_key = format!("{key}.dns_expect");
                let expected = match dns_type {
                    1 => "an IPv4 address, the A record the answer must hold",
                    28 => "an IPv6 address, the AAAA record the answer must hold",
                    _ => "nothing: dns_expect needs dns_type = \"A\" or \"AAAA\"",
                };
                let text = self.string(&expect_key, at, expected)?;
                match text.parse::<IpAddr>() {
                    Ok(addr @ IpAddr::V4(_)) if dns_type == 1 => Some(addr),
                    Ok(addr @ IpAddr::V6(_)) if dns_type == 28 => Some(addr),
                    _ => return Err(self.invalid(&expect_key, at, expected)),
                }
            }
            None => None,
        };
        Ok((script, dns_name, dns_type, dns_expect))
    }

    /// `"addr:port"` or `"addr"` (the service port), held to a DR backend's rules in DR.
    fn sorry_server(
        &self,
        key: &str,
        at: &Spanned<Value>,
        target: &SorryTarget<'_>,
    ) -> Result<SocketAddr, ConfigError> {
        let expected = "a unicast address and port, like \"10.1.1.30:80\" or \
                        \"[2001:db8::30]:80\", or an address alone (the service port)";
        let text = self.string(key, at, expected)?;
        let port = target.name.port;
        let sorry = match text.parse::<SocketAddr>() {
            Ok(sorry) => sorry,
            Err(_) => SocketAddr::new(
                text.parse::<IpAddr>().map_err(|_| self.invalid(key, at, expected))?,
                port,
            ),
        };
        // A scope (`[fe80::1%2]:80`) names an interface by number: not one of the config's.
        let scoped =
            matches!(sorry, SocketAddr::V6(v6) if v6.scope_id() != 0 || v6.flowinfo() != 0);
        if !is_host(sorry.ip(), false) || sorry.port() == 0 || scoped {
            return Err(self.invalid(key, at, expected));
        }
        self.same_family(key, at, target.name, target.forward, sorry.ip())?;
        if target.forward == ForwardMode::Dr {
            if sorry.port() != port {
                let expected = format!(
                    "the service port {port}: in DR the sorry server is reached like a backend, \
                     by its MAC alone"
                );
                return Err(self.invalid(key, at, expected));
            }
            if !target.interfaces.iter().any(|i| i.contains(sorry.ip())) {
                return Err(self.invalid(
                    key,
                    at,
                    "an address on a directly connected subnet: in DR the sorry server must be \
                     on the same link, like a backend",
                ));
            }
        }
        Ok(sorry)
    }

    fn backend(
        &self,
        key: &str,
        table: &Spanned<RawBackend>,
        service: &ServiceName,
        forward: ForwardMode,
        interfaces: &[InterfaceConfig],
    ) -> Result<BackendConfig, ConfigError> {
        let span = table.span();
        let raw = table.get_ref();
        let service_port = service.port;
        let addr_key = format!("{key}.addr");
        let addr_at = self.required(&raw.addr, &addr_key, &span, EXPECT_IP)?;
        let addr = self.ip(&addr_key, addr_at, false)?;
        self.same_family(&addr_key, addr_at, service, forward, addr)?;
        let port = match &raw.port {
            Some(at) => {
                let port_key = format!("{key}.port");
                let port = self.port(&port_key, at)?;
                if forward == ForwardMode::Dr && port != service_port {
                    return Err(self.invalid(
                        &port_key,
                        at,
                        format!(
                            "the service port {service_port}: DR rewrites only the destination \
                             MAC, so it cannot change ports (use forward = \"nat\" or \
                             \"fullnat\" to map ports)"
                        ),
                    ));
                }
                if forward == ForwardMode::Tunnel && port != service_port {
                    return Err(self.invalid(
                        &port_key,
                        at,
                        format!(
                            "the service port {service_port}: tunnel mode wraps the client's \
                             packet unchanged, so it cannot change ports"
                        ),
                    ));
                }
                port
            }
            None => service_port,
        };
        if forward == ForwardMode::Dr && !interfaces.iter().any(|i| i.contains(addr)) {
            let subnets: Vec<String> = interfaces.iter().map(InterfaceConfig::subnets).collect();
            return Err(self.invalid(
                &addr_key,
                addr_at,
                format!(
                    "an address on a directly connected subnet ({}): DR rewrites only the \
                     destination MAC, so the real server must be on the same link",
                    subnets.join(", ")
                ),
            ));
        }
        let weight = optional(&raw.weight, 1, |at| {
            let expected = "a weight from 0 to 65535 (0 drains the real server)";
            self.integer(&format!("{key}.weight"), at, 0, 65_535, expected)
        })?;
        Ok(BackendConfig { addr, port, weight, down: false })
    }
}

/// What a sorry server is checked against: the service it stands in for.
struct SorryTarget<'a> {
    name: &'a ServiceName,
    forward: ForwardMode,
    interfaces: &'a [InterfaceConfig],
}

/// `parse` applied to the value if the key is present, else `default`.
fn optional<T>(
    leaf: &Leaf,
    default: T,
    parse: impl FnOnce(&Spanned<Value>) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    leaf.as_ref().map_or(Ok(default), parse)
}

/// Whether an address can be a host's: not 0.0.0.0, not the limited broadcast, not multicast.
fn is_unicast(ip: Ipv4Addr) -> bool {
    !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast()
}

/// Whether an IPv6 address can be a host's: not `::`, not multicast (ff00::/8, IPv6's
/// broadcast), not IPv4-mapped (`::ffff:10.1.1.1` is an IPv4 host written as IPv6: write it
/// as IPv4), and not link-local (fe80::/10: meaningless without an interface to scope it)
/// unless `link_local` admits it (a next hop, a static neighbour).
fn is_host6(ip: Ipv6Addr, link_local: bool) -> bool {
    !ip.is_unspecified()
        && !ip.is_multicast()
        && ip.to_ipv4_mapped().is_none()
        && (link_local || !ip.is_unicast_link_local())
}

/// [`is_unicast`] or [`is_host6`], by family.
fn is_host(ip: IpAddr, link_local: bool) -> bool {
    match ip {
        IpAddr::V4(ip) => is_unicast(ip),
        IpAddr::V6(ip) => is_host6(ip, link_local),
    }
}

/// What makes an IPv6 address no VIP or local address (the counterpart of IPv4's loopback,
/// network and broadcast checks): the loopback `::1`, and the subnet-router anycast
/// address (the subnet's all-zeros host, RFC 4291 §2.6.1, which routers answer) of an
/// interface's IPv6 subnet of up to /126.
fn special6(interfaces: &[InterfaceConfig], addr: Ipv6Addr) -> Option<String> {
    if addr.is_loopback() {
        return Some("the loopback address ::1".into());
    }
    for (index, i) in interfaces.iter().enumerate() {
        let Some(v6) = i.ipv6.filter(|v6| v6.prefix_len <= 126 && v6.contains(addr)) else {
            continue;
        };
        let network = v6.addr.to_bits() & prefix_mask6(v6.prefix_len);
        if addr.to_bits() == network {
            return Some(format!(
                "the subnet-router anycast address of interface[{index}] {}'s subnet {}/{}",
                i.name,
                Ipv6Addr::from_bits(network),
                v6.prefix_len
            ));
        }
    }
    None
}

/// `ADDR/PREFIX` with a prefix of 0 to `max` written in digits only (`u8::from_str` would
/// also take "+24").
/// What a tunnel's outer source prefix must be (config `tunnel_source`, ctl
/// `--tunnel-source`).
pub const TUNNEL_SOURCE_EXPECTED: &str = "an IPv4 prefix /8 to /32 with its host bits zero, \
    like \"10.9.0.0/24\", that the network routes to this box (not in 0.0.0.0/8, 127.0.0.0/8, \
    multicast or above), or for an IPv6 service an IPv6 prefix /64 to /128 with its host bits \
    zero, like \"2001:db8:9::/64\" (not link-local, multicast, loopback, unspecified or \
    IPv4-mapped)";

/// A tunnel's outer source prefix: `"10.9.0.0/24"`, /8 to /32, or `"2001:db8:9::/64"`, /64
/// to /128 (the flow hash's 64 bits fill the host part), host bits zero, of addresses a host
/// may send from ([`TUNNEL_SOURCE_EXPECTED`]).
pub fn parse_tunnel_source(text: &str) -> Option<TunnelSource> {
    if let Some((network, prefix_len)) = cidr::<Ipv6Addr>(text, 128) {
        let host_mask = u128::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        let usable = prefix_len >= 64
            && network.to_bits() & host_mask == 0
            && !network.is_unspecified()
            && !network.is_loopback()
            && !network.is_multicast()
            && !network.is_unicast_link_local()
            && network.to_ipv4_mapped().is_none();
        return usable.then_some(TunnelSource { network: network.into(), prefix_len });
    }
    let (network, prefix_len) = cidr::<Ipv4Addr>(text, 32).filter(|(network, prefix_len)| {
        let first = network.octets()[0];
        *prefix_len >= 8
            && network.to_bits() & !prefix_mask(*prefix_len) == 0
            && first != 0
            && first != 127
            && first < 224
    })?;
    Some(TunnelSource { network: network.into(), prefix_len })
}

fn cidr<A: FromStr>(text: &str, max: u8) -> Option<(A, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let addr = addr.parse::<A>().ok()?;
    let prefix = Some(prefix)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max)?;
    Some((addr, prefix))
}

/// How messages name a service: `tcp 10.1.1.100:80`, `tcp [2001:db8::100]:80`.
struct ServiceName {
    proto: Proto,
    vip: IpAddr,
    port: u16,
}

impl ServiceName {
    fn of(service: &ServiceConfig) -> ServiceName {
        ServiceName { proto: service.proto, vip: service.vip, port: service.port }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proto, endpoint(self.vip, self.port))
    }
}

fn render_list(list: &[Spanned<Value>]) -> String {
    let items: Vec<String> = list.iter().map(|at| at.get_ref().to_string()).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    const PATH: &str = "test.toml";

    const IFACE: &str = "[[interface]]\n\
                         name = \"eth0\"\n\
                         addr = \"10.1.1.10/24\"\n\
                         mac = \"02:00:00:00:00:01\"\n";

    /// A config with the standard interface followed by `rest`.
    fn with_iface(rest: &str) -> String {
        format!("{IFACE}\n{rest}")
    }

    /// A config with the standard interface and one service whose body is `body`.
    fn service(body: &str) -> String {
        with_iface(&format!("[[service]]\nvip = \"10.1.1.100\"\nport = 80\n{body}"))
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, PATH)
    }

    /// The 1-based line of the only occurrence of `marker` in `text`.
    fn line_of(text: &str, marker: &str) -> usize {
        let at = text.find(marker).unwrap_or_else(|| panic!("{marker:?} not in the text"));
        assert_eq!(text.matches(marker).count(), 1, "{marker:?} is ambiguous");
        text[..at].matches('\n').count() + 1
    }

    /// Asserts `text` fails as `Invalid` at `key`, on the line of `marker`, with the key and
    /// the line in the message; returns the `expected` part.
    fn assert_invalid(text: &str, key: &str, marker: &str) -> String {
        let error = parse(text).expect_err("the config should be rejected");
        let shown = error.to_string();
        let ConfigError::Invalid { path, line, key: got_key, expected, .. } = error else {
            panic!("expected Invalid at {key}, got {error:?}");
        };
        assert_eq!(got_key, key, "{shown}");
        assert_eq!(line, line_of(text, marker), "{shown}");
        assert_eq!(path, PATH);
        assert!(shown.starts_with(&format!("{PATH}: line {line}: {key} = ")), "{shown}");
        expected
    }

    fn assert_missing(text: &str, key: &str, marker: &str) {
        match parse(text) {
            Err(ConfigError::Missing { line, key: got_key, .. }) => {
                assert_eq!(got_key, key);
                assert_eq!(line, line_of(text, marker));
            }
            other => panic!("expected Missing {key}, got {other:?}"),
        }
    }

    /// Asserts `text` fails as `Syntax` on the line of `marker` with `words` in the message.
    fn assert_syntax(text: &str, marker: &str, words: &[&str]) {
        let error = parse(text).expect_err("the config should be rejected");
        let shown = error.to_string();
        let ConfigError::Syntax { line, message, .. } = error else {
            panic!("expected Syntax, got {error:?}");
        };
        assert_eq!(line, line_of(text, marker), "{shown}");
        for word in words {
            assert!(message.contains(word), "{word:?} not in {shown}");
        }
    }

    #[test]
    fn examples_parse() {
        let dr = parse(include_str!("../../examples/dr.toml")).expect("dr.toml");
        assert!(dr.services.iter().all(|s| s.forward == ForwardMode::Dr));
        assert_eq!(dr.services.len(), 2);
        assert_eq!(dr.neighbors.len(), 2);
        assert_eq!(dr.services[0].health.http_path, "/healthz");
        assert_eq!(dr.services[0].backends[2].weight, 0);
        assert_eq!(dr.services[1].proto, Proto::Udp);

        let nat = parse(include_str!("../../examples/nat.toml")).expect("nat.toml");
        assert_eq!(nat.interfaces.len(), 2);
        assert!(nat.services.iter().all(|s| s.forward == ForwardMode::Nat));
        assert_eq!(nat.services[0].backends[0].port, 8080);
        assert_eq!(nat.services[0].health.on_failure, OnFailure::Remove);

        let fullnat = parse(include_str!("../../examples/fullnat.toml")).expect("fullnat.toml");
        assert!(fullnat.services.iter().all(|s| s.forward == ForwardMode::FullNat));
        assert_eq!(
            fullnat.services[0].local_addrs,
            [IpAddr::from([10, 1, 1, 200]), IpAddr::from([10, 1, 1, 201])]
        );
        assert_eq!(fullnat.conntrack.max_embryonic, 1_000_000);
    }

    #[test]
    fn tunnel_services_parse_with_their_defaults_and_round_trip() {
        let text = with_iface(
            "mtu = 9000\ntunnel_source = \"10.9.0.0/24\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"tunnel\"\n\
             [[service.backend]]\naddr = \"192.0.2.11\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 53\nproto = \"udp\"\n\
             forward = \"tunnel\"\nencap = \"gue\"\ntunnel_source = \"10.9.1.0/28\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 443\nforward = \"tunnel\"\n\
             encap = \"gue\"\ngue_port = 5555\nmss_clamp = 1400\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 8080\n",
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.interfaces[0].mtu, 9000);
        let prefix = |a: [u8; 4], len| Some(TunnelSource { network: a.into(), prefix_len: len });
        assert_eq!(config.interfaces[0].tunnel_source, prefix([10, 9, 0, 0], 24));
        let tunnels: Vec<Option<Tunnel>> = config.services.iter().map(|s| s.tunnel).collect();
        assert_eq!(
            tunnels,
            [
                Some(Tunnel { encap: Encap::Ipip, source: None, mss_clamp: None }),
                Some(Tunnel {
                    encap: Encap::Gue { port: 6080 },
                    source: prefix([10, 9, 1, 0], 28),
                    mss_clamp: None
                }),
                Some(Tunnel {
                    encap: Encap::Gue { port: 5555 },
                    source: None,
                    mss_clamp: Some(1400)
                }),
                None,
            ]
        );
        // Tunnel backends may be anywhere routed (no directly-connected rule, unlike DR).
        assert_eq!(config.services[0].backends[0].addr, IpAddr::from([192, 0, 2, 11]));
        assert_eq!(Config::parse(&config.to_toml(), "again").expect("round trip"), config);
        assert_eq!(parse(&with_iface("")).expect("valid").interfaces[0].mtu, 1500);
    }

    #[test]
    fn tunnel_settings_are_refused_by_name_where_they_do_not_fit() {
        let expected = assert_invalid(&service("encap = \"gue\"\n"), "service[0].encap", "encap");
        assert!(expected.contains("tunnel setting"), "{expected}");
        let expected = assert_invalid(
            &service("forward = \"tunnel\"\nencap = \"vxlan\"\n"),
            "service[0].encap",
            "encap",
        );
        assert!(expected.contains("\"ipip\", \"gue\""), "{expected}");
        let expected = assert_invalid(
            &service("forward = \"tunnel\"\ngue_port = 6080\n"),
            "service[0].gue_port",
            "gue_port",
        );
        assert!(expected.contains("encap is \"ipip\""), "{expected}");
        for bad in ["10.9.0.1/24", "10.9.0.0/7", "127.0.0.0/8", "224.0.0.0/8", "10.9.0.0", "x"] {
            let text = service(&format!("forward = \"tunnel\"\ntunnel_source = \"{bad}\"\n"));
            let expected = assert_invalid(&text, "service[0].tunnel_source", "tunnel_source");
            assert!(expected.contains("host bits zero"), "{bad}: {expected}");
        }
        let text = with_iface("tunnel_source = \"10.9.0.0/33\"\n");
        assert_invalid(&text, "interface[0].tunnel_source", "tunnel_source");
        assert_invalid(&with_iface("mtu = 100\n"), "interface[0].mtu", "mtu");
        let expected = assert_invalid(
            &service("proto = \"udp\"\nforward = \"tunnel\"\nmss_clamp = 1400\n"),
            "service[0].mss_clamp",
            "mss_clamp",
        );
        assert!(expected.contains("not TCP"), "{expected}");
        let text = service(
            "forward = \"tunnel\"\n[[service.backend]]\naddr = \"192.0.2.11\"\nport = 8080\n",
        );
        let expected = assert_invalid(&text, "service[0].backend[0].port", "port = 8080");
        assert!(expected.contains("tunnel mode wraps"), "{expected}");
    }

    /// An IPv6 tunnel service (issue 12): IPIP or GUE over IPv6, its own IPv6 prefix, round
    /// trip; a prefix or real server of the other family (4in6, 6in4) refused by name, as
    /// bad IPv6 prefixes and an IPv6 prefix on an interface.
    #[test]
    fn ipv6_tunnel_services_parse_and_other_families_are_refused() {
        let text = service6(
            "forward = \"tunnel\"\nencap = \"gue\"\ntunnel_source = \"2001:db8:9::/64\"\n\
             mss_clamp = 1380\n[[service.backend]]\naddr = \"2001:db8:2::11\"\n",
        );
        let config = parse(&text).expect("valid");
        let network: Ipv6Addr = "2001:db8:9::".parse().unwrap();
        let expected = Tunnel {
            encap: Encap::Gue { port: 6080 },
            source: Some(TunnelSource { network: network.into(), prefix_len: 64 }),
            mss_clamp: Some(1380),
        };
        assert_eq!(config.services[0].tunnel, Some(expected));
        assert_eq!(Config::parse(&config.to_toml(), "again").expect("round trip"), config);
        parse(&service6("forward = \"tunnel\"\n")).expect("IPIP, from addr6");
        let text = service6("forward = \"tunnel\"\ntunnel_source = \"10.9.0.0/24\"\n");
        let expected = assert_invalid(&text, "service[0].tunnel_source", "10.9.0.0/24");
        assert!(expected.contains("an IPv6 prefix") && expected.contains("6in4"), "{expected}");
        let text = service("forward = \"tunnel\"\ntunnel_source = \"2001:db8:9::/64\"\n");
        let expected = assert_invalid(&text, "service[0].tunnel_source", "2001:db8:9::/64");
        assert!(expected.contains("an IPv4 prefix") && expected.contains("4in6"), "{expected}");
        let text = service6("forward = \"tunnel\"\n[[service.backend]]\naddr = \"192.0.2.11\"\n");
        let expected = assert_invalid(&text, "service[0].backend[0].addr", "192.0.2.11");
        assert!(expected.contains("6in4"), "{expected}");
        let text = service("forward = \"tunnel\"\n[[service.backend]]\naddr = \"2001:db8::11\"\n");
        let expected = assert_invalid(&text, "service[0].backend[0].addr", "2001:db8::11");
        assert!(expected.contains("4in6"), "{expected}");
        for bad in
            ["2001:db8:9::1/64", "2001:db8::/48", "fe80::/64", "ff02::/64", "::1/128", "::/64"]
        {
            let text = service6(&format!("forward = \"tunnel\"\ntunnel_source = \"{bad}\"\n"));
            let expected = assert_invalid(&text, "service[0].tunnel_source", "tunnel_source");
            assert!(expected.contains("/64 to /128"), "{bad}: {expected}");
        }
        let text = format!("{IFACE6}tunnel_source = \"2001:db8:9::/64\"\n");
        let expected = assert_invalid(&text, "interface[0].tunnel_source", "tunnel_source");
        assert!(expected.contains("its own IPv6 tunnel_source"), "{expected}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_when_it_cannot() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let config = Config::load(&dir.join("fullnat.toml")).expect("load");
        assert_eq!(config.services.len(), 1);

        let missing = dir.join("no-such-config.toml");
        match Config::load(&missing) {
            Err(ConfigError::Io { path, message }) => {
                assert_eq!(path, missing.display().to_string());
                assert!(!message.is_empty());
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse(&service("[[service.backend]]\naddr = \"10.1.1.11\"\n")).unwrap();
        assert_eq!(
            config.interfaces,
            [InterfaceConfig {
                name: "eth0".into(),
                addr: Ipv4Addr::new(10, 1, 1, 10),
                prefix_len: 24,
                mac: Some([2, 0, 0, 0, 0, 1]),
                gateway: None,
                ipv6: None,
                mtu: InterfaceConfig::DEFAULT_MTU,
                tunnel_source: None,
            }]
        );
        assert!(config.neighbors.is_empty());
        assert_eq!(config.conntrack, ConntrackSettings::default());
        assert_eq!(
            config.services,
            [ServiceConfig {
                vip: IpAddr::from([10, 1, 1, 100]),
                port: 80,
                proto: Proto::Tcp,
                scheduler: SchedulerKind::Maglev,
                forward: ForwardMode::Dr,
                local_addrs: vec![],
                maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
                health: HealthConfig::default(),
                backends: vec![BackendConfig {
                    addr: IpAddr::from([10, 1, 1, 11]),
                    port: 80,
                    weight: 1,
                    down: false,
                }],
                persistence: None,
                tunnel: None,
            }]
        );
    }

    #[test]
    fn default_settings_match_the_contract() {
        let ct = ConntrackSettings::default();
        assert_eq!((ct.capacity, ct.max_embryonic), (1_000_000, 500_000));
        let timeouts = [
            ct.tcp_syn_timeout,
            ct.tcp_established_timeout,
            ct.tcp_closing_timeout,
            ct.tcp_closed_timeout,
            ct.udp_timeout,
        ];
        assert_eq!(timeouts.map(|t| t.as_secs()), [30, 900, 120, 10, 300]);

        let health = HealthConfig::default();
        assert_eq!(health.check, HealthCheckKind::Tcp);
        assert_eq!(
            (health.interval, health.timeout),
            (Duration::from_secs(2), Duration::from_secs(1))
        );
        assert_eq!((health.rise, health.fall), (2, 3));
        assert_eq!((health.http_path.as_str(), health.http_status), ("/", 200));
        assert_eq!(health.on_failure, OnFailure::Drain);
        assert_eq!(HealthConfig::for_proto(Proto::Tcp), health);
        assert_eq!(HealthConfig::for_proto(Proto::Udp).check, HealthCheckKind::None);
    }

    #[test]
    fn udp_services_default_to_no_health_check() {
        let config = parse(&service("proto = \"udp\"\n")).unwrap();
        assert_eq!(config.services[0].health.check, HealthCheckKind::None);
        let config =
            parse(&service("proto = \"udp\"\n[service.health]\ncheck = \"udp\"\n")).unwrap();
        assert_eq!(config.services[0].health.check, HealthCheckKind::Udp);
    }

    #[test]
    fn bad_addresses_name_their_key() {
        let text = with_iface("[[service]]\nvip = \"10.1.1.300\"\nport = 80\n");
        let expected = assert_invalid(&text, "service[0].vip", "10.1.1.300");
        assert!(expected.contains("IPv4"));
        assert!(parse(&text).unwrap_err().to_string().contains("\"10.1.1.300\""));

        for vip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "10.1.1", "::1"] {
            let text = with_iface(&format!("[[service]]\nvip = \"{vip}\"\nport = 80\n"));
            assert_invalid(&text, "service[0].vip", &format!("vip = \"{vip}\""));
        }
        let text = service(
            "[[service.backend]]\naddr = \"10.1.1.11\"\n[[service.backend]]\naddr = \"ten\"\n",
        );
        assert_invalid(&text, "service[0].backend[1].addr", "\"ten\"");
        let text = with_iface("[[neighbor]]\nip = \"10.1.1.x\"\nmac = \"02:00:00:00:00:09\"\n");
        assert_invalid(&text, "neighbor[0].ip", "10.1.1.x");
        let text =
            service("forward = \"fullnat\"\nlocal_addrs = [\"10.1.1.200\",\n \"10.1.1.2001\"]\n");
        assert_invalid(&text, "service[0].local_addrs[1]", "10.1.1.2001");
        let text =
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\ngateway = \"10.1.1.256\"\n";
        assert_invalid(text, "interface[0].gateway", "10.1.1.256");
    }

    #[test]
    fn interface_addr_is_cidr_with_prefix_up_to_32() {
        for bad in [
            "10.1.1.10/33",
            "10.1.1.10",
            "10.1.1.10/",
            "10.1.1.10/+24",
            "10.1.1.10/24/1",
            "0.0.0.0/0",
        ] {
            let text = format!("[[interface]]\nname = \"eth0\"\naddr = \"{bad}\"\n");
            let expected = assert_invalid(&text, "interface[0].addr", bad);
            assert!(expected.contains("10.1.1.10/24"), "{expected}");
        }
        for (cidr, prefix_len) in [("10.1.1.10/0", 0), ("10.1.1.10/32", 32), ("10.1.1.10/08", 8)] {
            let text = format!("[[interface]]\nname = \"eth0\"\naddr = \"{cidr}\"\n");
            assert_eq!(parse(&text).unwrap().interfaces[0].prefix_len, prefix_len);
        }
    }

    #[test]
    fn macs_are_checked_and_optional_on_interfaces() {
        let text =
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\nmac = \"02:00:00:00:00\"\n";
        let expected = assert_invalid(text, "interface[0].mac", "02:00:00:00:00");
        assert!(expected.contains("02:00:00:00:00:01"));
        let text = with_iface("[[neighbor]]\nip = \"10.1.1.11\"\nmac = \"01:00:5e:00:00:01\"\n");
        assert_invalid(&text, "neighbor[0].mac", "01:00:5e");
        let text = with_iface("[[neighbor]]\nip = \"10.1.1.11\"\nmac = \"00:00:00:00:00:00\"\n");
        assert_invalid(&text, "neighbor[0].mac", "00:00:00:00:00:00");
        let text = "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n";
        assert_eq!(parse(text).unwrap().interfaces[0].mac, None);
        let text = with_iface("[[neighbor]]\nip = \"10.1.1.11\"\n");
        assert_missing(&text, "neighbor[0].mac", "[[neighbor]]");
    }

    #[test]
    fn ports_are_1_to_65535() {
        for bad in ["0", "65536", "-1", "\"80\"", "80.0"] {
            let text = with_iface(&format!("[[service]]\nvip = \"10.1.1.100\"\nport = {bad}\n"));
            let expected = assert_invalid(&text, "service[0].port", &format!("port = {bad}"));
            assert!(expected.contains("1 to 65535"), "{expected}");
        }
        let text =
            service("forward = \"nat\"\n[[service.backend]]\naddr = \"10.2.2.2\"\nport = 0\n");
        assert_invalid(&text, "service[0].backend[0].port", "port = 0");
        let config =
            parse(&with_iface("[[service]]\nvip = \"10.1.1.100\"\nport = 65535\n")).unwrap();
        assert_eq!(config.services[0].port, 65535);
    }

    #[test]
    fn unknown_names_list_the_accepted_ones() {
        let cases: [(&str, &str, &[&str]); 4] = [
            ("proto = \"sctp\"\n", "service[0].proto", &["\"tcp\"", "\"udp\""]),
            ("forward = \"tun\"\n", "service[0].forward", &["\"dr\"", "\"nat\"", "\"fullnat\""]),
            (
                "scheduler = \"fifo\"\n",
                "service[0].scheduler",
                &[
                    "\"maglev\"",
                    "\"wrr\"",
                    "\"rr\"",
                    "\"sh\"",
                    "\"random\"",
                    "\"wrandom\"",
                    "\"lc\"",
                    "\"wlc\"",
                    "\"lt\"",
                    "\"sed\"",
                    "\"nq\"",
                    "\"mh\"",
                ],
            ),
            ("scheduler = 5\n", "service[0].scheduler", &["\"maglev\""]),
        ];
        for (body, key, names) in cases {
            let text = service(body);
            let expected = assert_invalid(&text, key, body.trim_end());
            for name in names {
                assert!(expected.contains(name), "{name} not in {expected}");
            }
        }
        let text = service("[service.health]\ncheck = \"ping\"\n");
        let expected = assert_invalid(&text, "service[0].health.check", "ping");
        assert_eq!(
            expected,
            "one of \"tcp\", \"http\", \"https\", \"udp\", \"icmp\", \"script\", \"dns\", \
             \"none\""
        );
        let text = service("[service.health]\non_failure = \"kill\"\n");
        let expected = assert_invalid(&text, "service[0].health.on_failure", "kill");
        assert_eq!(expected, "one of \"drain\", \"remove\"");
    }

    #[test]
    fn every_scheduler_name_and_the_mh_alias_parse() {
        for kind in SchedulerKind::ALL {
            let config = parse(&service(&format!("scheduler = \"{kind}\"\n"))).unwrap();
            assert_eq!(config.services[0].scheduler, kind);
        }
        let config = parse(&service("scheduler = \"mh\"\n")).unwrap();
        assert_eq!(config.services[0].scheduler, SchedulerKind::Mh);
    }

    #[test]
    fn duplicate_services_are_rejected_but_not_other_protocols() {
        let text = service("[[service]]\nvip = \"10.1.1.100\" # again\nport = 80\n");
        let expected = assert_invalid(&text, "service[1].vip", "# again");
        assert!(expected.contains("service[0]"), "{expected}");
        let text = service("[[service]]\nvip = \"10.1.1.100\"\nport = 80\nproto = \"udp\"\n");
        assert_eq!(parse(&text).unwrap().services.len(), 2);
    }

    #[test]
    fn duplicate_backends_are_rejected_but_not_other_ports() {
        let text = service(
            "[[service.backend]]\naddr = \"10.1.1.11\"\n[[service.backend]]\naddr = \"10.1.1.11\" # again\n",
        );
        let expected = assert_invalid(&text, "service[0].backend[1].addr", "# again");
        assert!(expected.contains("backend[0]"), "{expected}");
        let text = service(
            "forward = \"nat\"\n\
             [[service.backend]]\naddr = \"10.2.2.2\"\nport = 8080\n\
             [[service.backend]]\naddr = \"10.2.2.2\"\nport = 8081\n",
        );
        assert_eq!(parse(&text).unwrap().services[0].backends.len(), 2);
    }

    /// Issue 10, item 8: a VIP or FullNAT local address that is another host's (or a
    /// special address) is refused, naming both uses and the other's line.
    #[test]
    fn vips_and_local_addresses_may_not_be_another_hosts() {
        let text = |vip: &str, local: &str| {
            format!(
                "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\ngateway = \"10.1.1.1\"\n\
                 [[neighbor]]\nip = \"10.1.1.50\"\nmac = \"02:00:00:00:00:50\"\n\
                 [[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"nat\"\n\
                 [service.health]\nsorry_server = \"10.1.1.30:80\"\n\
                 [[service.backend]]\naddr = \"10.1.1.11\"\nport = 8080\n\
                 [[service]]\nvip = \"{vip}\"\nport = 81\nforward = \"fullnat\"\n\
                 local_addrs = [\"{local}\"]\n\
                 [[service.backend]]\naddr = \"10.1.1.12\"\n"
            )
        };
        let fine = text("10.1.1.101", "10.1.1.200");
        parse(&fine).expect("distinct addresses are fine");
        // (vip, local address, the key at fault, words of the other use, its line's marker)
        let cases = [
            (
                "10.1.1.11",
                "10.1.1.200",
                "vip",
                "real server 10.1.1.11:8080 (backend[0]) of service[0] (tcp 10.1.1.100:80)",
                Some("addr = \"10.1.1.11\""),
            ),
            (
                "10.1.1.12",
                "10.1.1.200",
                "vip",
                "real server 10.1.1.12:81 (backend[0]) of service[1]",
                Some("addr = \"10.1.1.12\""),
            ),
            (
                "10.1.1.1",
                "10.1.1.200",
                "vip",
                "the gateway of interface[0] eth0",
                Some("gateway = "),
            ),
            ("10.1.1.50", "10.1.1.200", "vip", "static neighbor[0]", Some("ip = ")),
            (
                "10.1.1.30",
                "10.1.1.200",
                "vip",
                "the sorry server 10.1.1.30:80 of service[0]",
                Some("sorry_server = "),
            ),
            (
                "10.1.1.10",
                "10.1.1.200",
                "vip",
                "interface[0] eth0's own address",
                Some("addr = \"10.1.1.10/24\""),
            ),
            (
                "10.1.1.0",
                "10.1.1.200",
                "vip",
                "the network address of interface[0] eth0's subnet 10.1.1.0/24",
                None,
            ),
            (
                "10.1.1.255",
                "10.1.1.200",
                "vip",
                "the broadcast address of interface[0] eth0's subnet 10.1.1.0/24",
                None,
            ),
            ("127.0.0.1", "10.1.1.200", "vip", "a loopback address", None),
            (
                "10.1.1.101",
                "10.1.1.10",
                "local_addrs[0]",
                "interface[0] eth0's own address",
                Some("addr = \"10.1.1.10/24\""),
            ),
            (
                "10.1.1.101",
                "10.1.1.100",
                "local_addrs[0]",
                "the vip of service[0] (tcp 10.1.1.100:80)",
                Some("vip = \"10.1.1.100\""),
            ),
            (
                "10.1.1.101",
                "10.1.1.101",
                "local_addrs[0]",
                "the vip of service[1] (tcp 10.1.1.101:81)",
                Some("vip = \"10.1.1.101\""),
            ),
            (
                "10.1.1.101",
                "10.1.1.11",
                "local_addrs[0]",
                "real server 10.1.1.11:8080",
                Some("addr = \"10.1.1.11\""),
            ),
            (
                "10.1.1.101",
                "10.1.1.1",
                "local_addrs[0]",
                "the gateway of interface[0] eth0",
                Some("gateway = "),
            ),
            ("10.1.1.101", "10.1.1.255", "local_addrs[0]", "the broadcast address", None),
            ("10.1.1.101", "127.0.0.53", "local_addrs[0]", "a loopback address", None),
        ];
        for (vip, local, key, other, other_marker) in cases {
            let text = text(vip, local);
            let marker = if key == "vip" {
                format!("vip = \"{vip}\"\nport = 81")
            } else {
                format!("local_addrs = [\"{local}\"]")
            };
            let expected = assert_invalid(&text, &format!("service[1].{key}"), &marker);
            assert!(expected.contains(other), "{vip} {local}: {expected}");
            if let Some(other_marker) = other_marker {
                // The other use's line, where the marker is not ambiguous with the value.
                let line = text
                    .lines()
                    .position(|l| l.contains(other_marker) && !marker.starts_with(l))
                    .map(|at| at + 1)
                    .expect("marker");
                assert!(expected.contains(&format!(", line {line}")), "{vip} {local}: {expected}");
            }
            assert!(expected.contains("xlb answers ARP for a "), "{expected}");
            assert!(!expected.contains("  "), "a run of spaces in: {expected}");
        }
        // Not unicast at all: refused by the address check itself.
        for vip in ["0.0.0.0", "255.255.255.255", "224.0.0.1"] {
            let text = text(vip, "10.1.1.200");
            let expected = assert_invalid(&text, "service[1].vip", &format!("vip = \"{vip}\""));
            assert!(expected.contains("unicast"), "{expected}");
        }
        // A config built in code (as `xlb ctl` builds it) gets the same answer from
        // `validate`, without lines that would point into rendered text.
        let mut config = parse(&fine).unwrap();
        config.services[1].vip = "10.1.1.11".parse().unwrap();
        let ConfigError::Invalid { key, expected, .. } = config.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(key, "service[1].vip");
        assert!(expected.contains("real server 10.1.1.11:8080"), "{expected}");
        assert!(!expected.contains("line"), "{expected}");
    }

    #[test]
    fn local_addrs_belong_to_fullnat_only() {
        let text = service("forward = \"fullnat\"\n");
        assert_missing(&text, "service[0].local_addrs", "fullnat");
        let shown = parse(&text).unwrap_err().to_string();
        assert!(shown.contains("non-empty") && shown.contains("FullNAT"), "{shown}");
        let text = service("forward = \"fullnat\"\nlocal_addrs = []\n");
        assert_invalid(&text, "service[0].local_addrs", "local_addrs = []");
        for mode in ["dr", "nat"] {
            let text = service(&format!("forward = \"{mode}\"\nlocal_addrs = [\"10.1.1.200\"]\n"));
            let expected = assert_invalid(&text, "service[0].local_addrs", "local_addrs");
            assert!(expected.contains(&format!("\"{mode}\"")), "{expected}");
        }
        let text = service("local_addrs = [\"10.1.1.200\"]\n");
        assert_invalid(&text, "service[0].local_addrs", "local_addrs");
        let text =
            service("forward = \"fullnat\"\nlocal_addrs = [\"10.1.1.200\", \"10.1.1.200\"]\n");
        assert_invalid(&text, "service[0].local_addrs[1]", "local_addrs");
    }

    #[test]
    fn dr_cannot_change_ports_or_cross_a_router() {
        let text = service("[[service.backend]]\naddr = \"10.1.1.11\"\nport = 8080\n");
        let expected = assert_invalid(&text, "service[0].backend[0].port", "8080");
        assert!(expected.contains("DR") && expected.contains("cannot change ports"), "{expected}");
        let text = service("[[service.backend]]\naddr = \"10.1.1.11\"\nport = 80\n");
        assert!(parse(&text).is_ok());

        let text = service("[[service.backend]]\naddr = \"10.9.9.9\"\n");
        let expected = assert_invalid(&text, "service[0].backend[0].addr", "10.9.9.9");
        assert!(expected.contains("eth0 10.1.1.10/24"), "{expected}");
        let text =
            service("forward = \"nat\"\n[[service.backend]]\naddr = \"10.9.9.9\"\nport = 8080\n");
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn persistence_takes_seconds_and_a_netmask_or_prefix() {
        let config = parse(&service("persistence = 300\npersistence_mask = \"255.255.255.0\"\n"));
        let expected = Persistence { timeout: Duration::from_secs(300), prefix_len: 24 };
        assert_eq!(config.unwrap().services[0].persistence, Some(expected));
        let config = parse(&service("persistence = 300\npersistence_mask = 24\n")).unwrap();
        assert_eq!(config.services[0].persistence, Some(expected));
        assert_eq!(Config::parse(&config.to_toml(), "again").unwrap(), config);
        let config = parse(&service("persistence = 60\n")).unwrap();
        assert_eq!(config.services[0].persistence.map(|p| p.prefix_len), Some(32));
        assert_eq!(parse(&service("")).unwrap().services[0].persistence, None);
        for bad in ["0", "2678401", "\"300\"", "-1"] {
            let text = service(&format!("persistence = {bad}\n"));
            let expected = assert_invalid(&text, "service[0].persistence", "persistence");
            assert!(expected.contains("seconds"), "{expected}");
        }
        for bad in ["\"255.0.255.0\"", "\"0.0.0.0\"", "33", "0", "\"24\"", "\"ffff::\""] {
            let text = service(&format!("persistence = 300\npersistence_mask = {bad}\n"));
            let expected = assert_invalid(&text, "service[0].persistence_mask", "persistence_mask");
            assert!(expected.contains("netmask"), "{expected}");
        }
        let text = service("persistence_mask = 24\n");
        let expected = assert_invalid(&text, "service[0].persistence_mask", "persistence_mask");
        assert!(expected.contains("without persistence"), "{expected}");
    }

    #[test]
    fn maglev_table_size_is_a_prime_no_smaller_than_the_backends() {
        for bad in ["65536", "1", "0", "-7", "16777259", "\"big\""] {
            let text = service(&format!("maglev_table_size = {bad}\n"));
            let expected =
                assert_invalid(&text, "service[0].maglev_table_size", "maglev_table_size");
            assert!(expected.contains("prime"), "{expected}");
        }
        let backends = "[[service.backend]]\naddr = \"10.1.1.11\"\n\
                        [[service.backend]]\naddr = \"10.1.1.12\"\n\
                        [[service.backend]]\naddr = \"10.1.1.13\"\n";
        let text = service(&format!("maglev_table_size = 2\n{backends}"));
        let expected = assert_invalid(&text, "service[0].maglev_table_size", "maglev_table_size");
        assert!(expected.contains("(3)"), "{expected}");
        let config = parse(&service(&format!("maglev_table_size = 3\n{backends}"))).unwrap();
        assert_eq!(config.services[0].maglev_table_size, 3);
        let text = service(&format!("maglev_table_size = {MAX_MAGLEV_TABLE_SIZE}\n"));
        assert_eq!(parse(&text).unwrap().services[0].maglev_table_size, MAX_MAGLEV_TABLE_SIZE);
    }

    #[test]
    fn is_prime_knows_the_table_sizes() {
        let primes =
            [2, 3, 5, 7, 13, 251, 65_537, 655_373, 1_000_003, MAX_MAGLEV_TABLE_SIZE as u64];
        for p in primes {
            assert!(is_prime(p), "{p}");
        }
        for n in [0, 1, 4, 9, 25, 49, 65_536, 1_000_001, 16_777_216, 16_777_215] {
            assert!(!is_prime(n), "{n}");
        }
        // The next prime after the maximum is out of range, so the maximum is the largest
        // prime below 2^24.
        assert!(((MAX_MAGLEV_TABLE_SIZE as u64 + 1)..(1 << 24)).all(|n| !is_prime(n)));
    }

    #[test]
    fn interfaces_are_required_and_checked() {
        let error = parse("# nothing\n").unwrap_err();
        assert!(matches!(&error, ConfigError::Missing { key, line: 1, .. } if key == "interface"));
        assert!(error.to_string().contains("[[interface]]"));

        let text =
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\ngateway = \"10.1.2.1\"\n";
        let expected = assert_invalid(text, "interface[0].gateway", "gateway");
        assert!(expected.contains("10.1.1.0/24"), "{expected}");
        let text =
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\ngateway = \"10.1.1.10\"\n";
        assert_invalid(text, "interface[0].gateway", "gateway");
        let text =
            "[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\ngateway = \"10.1.1.1\"\n";
        assert_eq!(parse(text).unwrap().interfaces[0].gateway, Some(Ipv4Addr::new(10, 1, 1, 1)));

        let text = "[[interface]]\naddr = \"10.1.1.10/24\"\n";
        assert_missing(text, "interface[0].name", "[[interface]]");
        let text = "[[interface]] # here\nname = \"eth0\"\n";
        assert_missing(text, "interface[0].addr", "# here");
        for name in ["\"\"", "\"a-very-long-name\"", "\"eth 0\"", "\"a/b\"", "0"] {
            let text = format!("[[interface]]\nname = {name}\naddr = \"10.1.1.10/24\"\n");
            assert_invalid(&text, "interface[0].name", &format!("name = {name}"));
        }
        let text = with_iface("[[interface]]\nname = \"eth0\" # twice\naddr = \"10.2.2.10/24\"\n");
        assert_invalid(&text, "interface[1].name", "# twice");
        let text = with_iface(
            "[[neighbor]]\nip = \"10.1.1.11\"\nmac = \"02:00:00:00:00:02\"\n\
             [[neighbor]]\nip = \"10.1.1.11\" # twice\nmac = \"02:00:00:00:00:03\"\n",
        );
        assert_invalid(&text, "neighbor[1].ip", "# twice");
    }

    #[test]
    fn required_service_keys_point_at_their_table() {
        let text = with_iface("[[service]] # this one\nport = 80\n");
        assert_missing(&text, "service[0].vip", "# this one");
        let text = with_iface("[[service]] # this one\nvip = \"10.1.1.100\"\n");
        assert_missing(&text, "service[0].port", "# this one");
        let text = service("[[service.backend]] # this one\nweight = 1\n");
        assert_missing(&text, "service[0].backend[0].addr", "# this one");
        let shown = parse(&text).unwrap_err().to_string();
        assert!(shown.contains("service[0].backend[0].addr is missing"), "{shown}");
    }

    #[test]
    fn weights_are_0_to_65535() {
        for bad in ["65536", "-1", "1.5", "\"1\""] {
            let text =
                service(&format!("[[service.backend]]\naddr = \"10.1.1.11\"\nweight = {bad}\n"));
            let expected = assert_invalid(&text, "service[0].backend[0].weight", "weight");
            assert!(expected.contains("0 to 65535"), "{expected}");
        }
        for weight in [0, 65535] {
            let text =
                service(&format!("[[service.backend]]\naddr = \"10.1.1.11\"\nweight = {weight}\n"));
            assert_eq!(parse(&text).unwrap().services[0].backends[0].weight, weight);
        }
    }

    #[test]
    fn conntrack_sizes_and_timeouts_are_checked() {
        let text = with_iface("[conntrack]\ncapacity = 0\n");
        assert_invalid(&text, "conntrack.capacity", "capacity");
        let text = with_iface("[conntrack]\ncapacity = 2000000000\n");
        assert_invalid(&text, "conntrack.capacity", "capacity");
        let text = with_iface("[conntrack]\ncapacity = 10\nmax_embryonic = 11\n");
        let expected = assert_invalid(&text, "conntrack.max_embryonic", "max_embryonic");
        assert!(expected.contains("(10)"), "{expected}");
        let text = with_iface("[conntrack]\nmax_embryonic = 0\n");
        assert_invalid(&text, "conntrack.max_embryonic", "max_embryonic");
        for key in [
            "tcp_syn_timeout",
            "tcp_established_timeout",
            "tcp_closing_timeout",
            "tcp_closed_timeout",
            "udp_timeout",
        ] {
            for bad in ["0", "-5", "2.5", "\"30s\""] {
                let text = with_iface(&format!("[conntrack]\n{key} = {bad}\n"));
                assert_invalid(&text, &format!("conntrack.{key}"), key);
            }
        }
        let text = with_iface("[conntrack]\ncapacity = 7\nudp_timeout = 1\n");
        let ct = parse(&text).unwrap().conntrack;
        assert_eq!((ct.capacity, ct.max_embryonic), (7, 4));
        assert_eq!(ct.udp_timeout, Duration::from_secs(1));
        assert_eq!(ct.tcp_syn_timeout, Duration::from_secs(30));
        let text = with_iface("[conntrack]\ncapacity = 1\n");
        assert_eq!(parse(&text).unwrap().conntrack.max_embryonic, 1);
    }

    #[test]
    fn fleet_mode_is_standalone_bgp_or_vrrp() {
        use crate::fleet::FleetMode;
        assert_eq!(parse(&with_iface("")).unwrap().fleet, FleetMode::Standalone);
        for mode in FleetMode::ALL {
            let config = parse(&with_iface(&format!("[fleet]\nmode = \"{mode}\"\n"))).unwrap();
            assert_eq!(config.fleet, mode);
            assert_eq!(parse(&config.to_toml()).unwrap().fleet, mode, "round trip");
        }
        let text = with_iface("[fleet]\nmode = \"anycast\"\n");
        let message = assert_invalid(&text, "fleet.mode", "anycast");
        assert!(message.contains("\"standalone\", \"bgp\", \"vrrp\""), "{message}");
        let text = with_iface("[fleet]\nannounce = false\n");
        assert!(parse(&text).unwrap_err().to_string().contains("announce"));
    }

    #[test]
    fn fleet_route_table_is_for_bgp_mode() {
        use crate::fleet::RouteExport;
        let bgp = |extra: &str| with_iface(&format!("[fleet]\nmode = \"bgp\"\n{extra}"));
        assert_eq!(parse(&bgp("")).unwrap().fleet_routes, None);
        let config = parse(&bgp("route_table = 100\n")).unwrap();
        let expected = RouteExport { table: 100, device: RouteExport::DEFAULT_DEVICE.into() };
        assert_eq!(config.fleet_routes, Some(expected));
        assert_eq!(parse(&config.to_toml()).unwrap().fleet_routes, config.fleet_routes);
        let config = parse(&bgp("route_table = 7\nroute_device = \"vips0\"\n")).unwrap();
        assert_eq!(config.fleet_routes, Some(RouteExport { table: 7, device: "vips0".into() }));
        for bad in ["0", "254", "4294967296", "\"main\""] {
            assert_invalid(
                &bgp(&format!("route_table = {bad}\n")),
                "fleet.route_table",
                "route_table",
            );
        }
        let vrrp = with_iface("[fleet]\nmode = \"vrrp\"\nroute_table = 100\n");
        assert_invalid(&vrrp, "fleet.route_table", "route_table");
        for bad in ["\"\"", "\"a/b\"", "\"sixteen-bytes-xx\""] {
            let text = bgp(&format!("route_table = 1\nroute_device = {bad}\n"));
            assert_invalid(&text, "fleet.route_device", "route_device");
        }
        assert_invalid(&bgp("route_device = \"v\"\n"), "fleet.route_device", "route_device");
    }

    #[test]
    fn dataplane_busy_poll_is_auto_on_or_off() {
        assert_eq!(parse(&with_iface("")).unwrap().dataplane.busy_poll, BusyPollMode::Auto);
        for (text, mode) in
            [("auto", BusyPollMode::Auto), ("on", BusyPollMode::On), ("off", BusyPollMode::Off)]
        {
            let config =
                parse(&with_iface(&format!("[dataplane]\nbusy_poll = \"{text}\"\n"))).unwrap();
            assert_eq!(config.dataplane.busy_poll, mode);
            assert_eq!(parse(&config.to_toml()).unwrap().dataplane.busy_poll, mode, "round trip");
        }
        for bad in ["\"yes\"", "true", "1"] {
            let text = with_iface(&format!("[dataplane]\nbusy_poll = {bad}\n"));
            let expected = assert_invalid(&text, "dataplane.busy_poll", "busy_poll");
            assert!(expected.contains("\"auto\", \"on\", \"off\""), "{expected}");
        }
        let text = with_iface("[dataplane]\nbusy_poll_marker = 7777\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.dataplane.busy_poll_marker, Some(7777));
        assert_eq!(parse(&config.to_toml()).unwrap().dataplane, config.dataplane, "round trip");
        assert_eq!(parse(&with_iface("")).unwrap().dataplane.busy_poll_marker, None);
        for bad in ["0", "65536", "-1", "\"7777\"", "true"] {
            let text = with_iface(&format!("[dataplane]\nbusy_poll_marker = {bad}\n"));
            assert_invalid(&text, "dataplane.busy_poll_marker", "busy_poll_marker");
        }
        let text = with_iface("[dataplane]\nbusy_pol = \"on\"\n");
        assert!(parse(&text).unwrap_err().to_string().contains("busy_pol"), "unknown keys refused");
    }

    /// Issue 10 (minor c): configs that need gigabytes are refused with the figure: the
    /// Maglev tables of all services together, a capacity past the largest table, and an
    /// estimate above the machine's memory.
    #[test]
    fn configs_that_need_gigabytes_are_refused_with_the_figure() {
        // 40 services with the largest table each: 1.3 billion slots (5 GiB, twice).
        let mut text = with_iface("");
        for i in 0..40 {
            let _ = write!(
                text,
                "[[service]]\nvip = \"10.1.2.{i}\"\nport = 80\nmaglev_table_size = {MAX_MAGLEV_TABLE_SIZE} # {i}\n"
            );
        }
        // The fourth service's table is the one that no longer fits (4 x 2 x 16.7M > 2^26).
        let expected = assert_invalid(
            &text,
            "service[2].maglev_table_size",
            &format!("maglev_table_size = {MAX_MAGLEV_TABLE_SIZE} # 2\n"),
        );
        assert!(expected.contains("100663278 slots (384.0 MiB)"), "{expected}");
        // A capacity past the largest table conntrack builds (it used to be clamped).
        let text = with_iface(&format!("[conntrack]\ncapacity = {}\n", 1u64 << 30));
        let expected = assert_invalid(&text, "conntrack.capacity", "capacity");
        assert!(expected.contains(&format!("to {}", 1 << 28)), "{expected}");
        // Within the limits, but more than a machine holds: the estimate says how much.
        let text = with_iface(&format!("[conntrack]\ncapacity = {}\n", 1 << 28));
        let config = parse(&text).unwrap();
        let estimate = config.memory_estimate(2);
        // IPv4's table, and the small IPv6 one of a box with no IPv6 service.
        let idle6 = Conntrack::<crate::family::V6>::memory_for_capacity(
            ConntrackConfig::IPV6_IDLE_CAPACITY,
        );
        assert_eq!(estimate.conntrack_per_core, Conntrack::memory_for(1 << 28) + idle6);
        assert!(estimate.total() > 40 << 30, "{estimate}");
        let why = estimate.check(23 << 30).unwrap_err();
        let per_core = estimate.conntrack_per_core as f64 / f64::from(1u32 << 30);
        assert!(why.contains(&format!("conntrack {per_core:.1} GiB per worker core x 2")), "{why}");
        assert!(why.contains("this machine's 23.0 GiB"), "{why}");
        // With an IPv6 service, IPv6's table takes the capacity too (two cache lines a flow).
        let dual = format!(
            "{}addr6 = \"2001:db8:1::2/64\"\n[conntrack]\ncapacity = 4096\n\
             [[service]]\nvip = \"2001:db8:1::10\"\nport = 80\n\
             [[service.backend]]\naddr = \"2001:db8:1::11\"\n",
            with_iface("")
        );
        let estimate = parse(&dual).unwrap().memory_estimate(1);
        let both =
            Conntrack::memory_for(4096) + Conntrack::<crate::family::V6>::memory_for_capacity(4096);
        assert_eq!(estimate.conntrack_per_core, both);
        // The defaults fit a small machine.
        let small = parse(&service("")).unwrap().memory_estimate(2);
        assert!(small.check(1 << 30).is_ok(), "{small}");
        assert_eq!(small.maglev, 2 * DEFAULT_MAGLEV_TABLE_SIZE * 4);
    }

    #[test]
    fn health_settings_are_checked() {
        let cases = [
            ("rise = 0", "rise"),
            ("fall = 0", "fall"),
            ("fall = 4294967296", "fall"),
            ("interval = 0", "interval"),
            ("interval = -1.0", "interval"),
            ("interval = nan", "interval"),
            ("interval = inf", "interval"),
            ("interval = \"2s\"", "interval"),
            ("interval = 0.000000001", "interval"),
            ("interval = 0.009", "interval"),
            ("interval = 1\ntimeout = 0.0000001", "timeout"),
            ("timeout = 0.0", "timeout"),
            ("interval = 1.0\ntimeout = 1.5", "timeout"),
            ("http_path = \"/x\"", "http_path"),
            ("http_status = 204", "http_status"),
            ("check = \"http\"\nhttp_path = \"healthz\"", "http_path"),
            ("check = \"http\"\nhttp_path = \"/a b\"", "http_path"),
            ("check = \"http\"\nhttp_status = 600", "http_status"),
            ("check = \"http\"\nhttp_status = 99", "http_status"),
        ];
        for (body, key) in cases {
            let text = service(&format!("[service.health]\n{body}\n"));
            let marker = body.lines().last().unwrap();
            assert_invalid(&text, &format!("service[0].health.{key}"), marker);
        }
        let text = service("[service.health]\ncheck = \"tcp\"\nhttp_path = \"/x\"\n");
        let expected = assert_invalid(&text, "service[0].health.http_path", "http_path");
        assert!(expected.contains("check = \"http\""), "{expected}");
        let text = service("[service.health]\ninterval = 1\ntimeout = 1.5\n");
        let expected = assert_invalid(&text, "service[0].health.timeout", "timeout");
        assert!(expected.contains("interval (1 s)"), "{expected}");
    }

    /// The keepalived kinds: icmp alone, script with its argv, dns with its defaults (the
    /// root's NS) or a name, type and expected address; each round-trips through the TOML.
    #[test]
    fn icmp_script_and_dns_settings_parse() {
        let health = |body: &str| parse(&service(body)).map(|mut c| c.services.remove(0).health);
        let got = health("[service.health]\ncheck = \"icmp\"\n").unwrap();
        assert_eq!(got.check, HealthCheckKind::Icmp);
        let got = health(
            "[service.health]\ncheck = \"script\"\n\
             script = [\"/bin/sh\", \"-c\", \"exec nc -z \\\"$XLB_BACKEND_ADDR\\\" 5432\"]\n",
        )
        .unwrap();
        assert_eq!(got.script, ["/bin/sh", "-c", "exec nc -z \"$XLB_BACKEND_ADDR\" 5432"]);
        let got = health("proto = \"udp\"\n[service.health]\ncheck = \"dns\"\n").unwrap();
        assert_eq!((got.dns_name.as_str(), got.dns_type, got.dns_expect), (".", 2, None));
        let got = health(
            "proto = \"udp\"\n[service.health]\ncheck = \"dns\"\ndns_name = \"www.example.com.\"\n\
             dns_type = \"aaaa\"\ndns_expect = \"2001:db8::1\"\n",
        )
        .unwrap();
        assert_eq!(
            (got.dns_name.as_str(), dns_type_name(got.dns_type)),
            ("www.example.com.", "AAAA".into())
        );
        assert_eq!(got.dns_expect, Some("2001:db8::1".parse().unwrap()));
        for body in [
            "check = \"script\"\nscript = [\"/usr/lib/xlb/check\", \"a b\", \"\\\"q\\\"\"]",
            "check = \"dns\"\ndns_name = \"example.org\"\ndns_type = \"A\"\ndns_expect = \"192.0.2.1\"",
            "check = \"icmp\"",
            "check = \"https\"\nhttp_path = \"/up\"\ntls_server_name = \"www.example.com\"\n\
             tls_verify = true\ntls_ca_file = \"/etc/xlb/ca.pem\"",
            "check = \"https\"",
        ] {
            let config = parse(&service(&format!("[service.health]\n{body}\n"))).unwrap();
            assert_eq!(Config::parse(&config.to_toml(), PATH).unwrap(), config, "{body}");
        }
    }

    #[test]
    fn icmp_script_and_dns_settings_are_checked() {
        for (body, key, marker) in [
            (
                "script = [\"/bin/true\"]",
                "script",
                "nothing: script applies only to check = \"script\"",
            ),
            ("check = \"script\"\nscript = []", "script", "absolute path"),
            ("check = \"script\"\nscript = [\"true\"]", "script[0]", "absolute path"),
            ("check = \"script\"\nscript = [\"/bin/true\", 1]", "script[1]", "absolute path"),
            ("check = \"script\"", "check", "script = ["),
            ("dns_name = \"example.com\"", "dns_name", "nothing: dns_name applies only"),
            ("check = \"icmp\"\ndns_type = \"A\"", "dns_type", "this check is \"icmp\""),
            ("check = \"dns\"\ndns_name = \"a..b\"", "dns_name", "labels of 1 to 63 bytes"),
            ("check = \"dns\"\ndns_name = \"a b\"", "dns_name", "printable ASCII"),
            ("check = \"dns\"\ndns_name = \"\"", "dns_name", "1 to 253 bytes"),
            ("check = \"dns\"\ndns_type = \"AXFR\"", "dns_type", "one of A, NS"),
            ("check = \"dns\"\ndns_expect = \"192.0.2.1\"", "dns_expect", "needs dns_type"),
            (
                "check = \"dns\"\ndns_type = \"A\"\ndns_expect = \"2001:db8::1\"",
                "dns_expect",
                "an IPv4 address",
            ),
            (
                "check = \"dns\"\ndns_type = \"A\"\ndns_expect = \"nope\"",
                "dns_expect",
                "an IPv4 address",
            ),
            ("check = \"ping\"", "check", "icmp"),
            (
                "check = \"script\"\nscript = [\"/bin/true\"]\nvia_vip = true",
                "via_vip",
                "its own connections",
            ),
            ("tls_verify = true", "tls_verify", "applies only to check = \"https\""),
            (
                "check = \"http\"\ntls_server_name = \"a.b\"",
                "tls_server_name",
                "only to check = \"https\"",
            ),
            ("check = \"https\"\ntls_server_name = \"10.1.1.11\"", "tls_server_name", "a DNS name"),
            ("check = \"https\"\ntls_server_name = \"a b\"", "tls_server_name", "a DNS name"),
            ("check = \"https\"\ntls_verify = \"yes\"", "tls_verify", "true or false"),
            (
                "check = \"https\"\ntls_ca_file = \"/etc/ca.pem\"",
                "tls_ca_file",
                "with tls_verify = true",
            ),
            (
                "check = \"https\"\ntls_verify = true\ntls_ca_file = \"ca.pem\"",
                "tls_ca_file",
                "absolute path",
            ),
            ("check = \"dns\"\nhttp_status = 204", "http_status", "check = \"http\" or \"https\""),
        ] {
            let text = service(&format!("[service.health]\n{body}\n"));
            let Err(ConfigError::Invalid { key: got, expected, line, .. }) = parse(&text) else {
                panic!("{body}: expected Invalid, got {:?}", parse(&text));
            };
            assert_eq!(got, format!("service[0].health.{key}"), "{body}");
            assert!(expected.contains(marker), "{body}: {expected}");
            let line_key = key.split('[').next().unwrap_or(key);
            assert_eq!(line, line_of(&text, &format!("{line_key} =")), "{body}");
        }
        let long = format!("check = \"dns\"\ndns_name = \"{}.com\"", "a".repeat(64));
        let text = service(&format!("[service.health]\n{long}\n"));
        assert_invalid(&text, "service[0].health.dns_name", "dns_name");
    }

    #[test]
    fn passive_udp_and_sorry_settings_parse() {
        let health = |body: &str| parse(&service(body)).map(|mut c| c.services.remove(0).health);
        let defaults = health("").unwrap();
        assert_eq!(defaults.passive_fall, 5);
        assert_eq!((defaults.udp_payload.as_str(), defaults.sorry_server), ("", None));
        let text = "proto = \"udp\"\n[service.health]\ncheck = \"udp\"\nudp_payload = \"ping\"\n\
                    passive_fall = 0\nsorry_server = \"10.1.1.30\"\n";
        let got = health(text).unwrap();
        assert_eq!(got.udp_payload, "ping");
        assert_eq!(got.passive_fall, 0);
        // An address alone means the service port (80 in `service`).
        assert_eq!(got.sorry_server, Some("10.1.1.30:80".parse().unwrap()));
        let got = health("[service.health]\nsorry_server = \"10.1.1.30:80\"\n").unwrap();
        assert_eq!(got.sorry_server, Some("10.1.1.30:80".parse().unwrap()));
    }

    #[test]
    fn passive_udp_and_sorry_settings_are_checked() {
        for (body, key, marker) in [
            ("udp_payload = \"x\"", "udp_payload", "nothing: udp_payload"),
            ("passive_fall = -1", "passive_fall", "from 0 (off)"),
            ("sorry_server = \"10.1.1.300:80\"", "sorry_server", "a unicast address"),
            ("sorry_server = \"224.0.0.1:80\"", "sorry_server", "a unicast address"),
            ("sorry_server = \"10.1.1.30:0\"", "sorry_server", "a unicast address"),
            ("sorry_server = 80", "sorry_server", "a unicast address"),
            // DR: the service port, on a connected subnet.
            ("sorry_server = \"10.1.1.30:8080\"", "sorry_server", "the service port 80"),
            ("sorry_server = \"192.0.2.30:80\"", "sorry_server", "directly connected"),
        ] {
            let text = service(&format!("[service.health]\n{body}\n"));
            let Err(ConfigError::Invalid { key: got, expected, line, .. }) = parse(&text) else {
                panic!("{body}: expected Invalid, got {:?}", parse(&text));
            };
            assert_eq!(got, format!("service[0].health.{key}"), "{body}");
            assert!(expected.contains(marker), "{body}: {expected}");
            assert_eq!(line, line_of(&text, key), "{body}");
        }
        // A sorry server that is one of the backends never stands in for anything.
        let text = service(
            "[service.health]\nsorry_server = \"10.1.1.11:80\"\n\
             [[service.backend]]\naddr = \"10.1.1.11\"\n",
        );
        let Err(ConfigError::Invalid { key, expected, .. }) = parse(&text) else {
            panic!("expected Invalid, got {:?}", parse(&text));
        };
        assert_eq!(key, "service[0].health.sorry_server");
        assert!(expected.contains("backend[0]"), "{expected}");
    }

    #[test]
    fn health_settings_parse() {
        let text = service(
            "[service.health]\ncheck = \"http\"\ninterval = 1.234\ntimeout = 1\nrise = 1\nfall = 1\n\
             http_path = \"/healthz?full=1\"\nhttp_status = 204\non_failure = \"remove\"\n",
        );
        let health = parse(&text).unwrap().services.remove(0).health;
        assert_eq!(
            health,
            HealthConfig {
                check: HealthCheckKind::Http,
                interval: Duration::from_millis(1234),
                timeout: Duration::from_secs(1),
                rise: 1,
                fall: 1,
                http_path: "/healthz?full=1".into(),
                http_status: 204,
                on_failure: OnFailure::Remove,
                udp_payload: String::new(),
                passive_fall: HealthConfig::DEFAULT_PASSIVE_FALL,
                sorry_server: None,
                via_vip: false,
                ..HealthConfig::default()
            }
        );
        // A short interval shortens the default timeout with it; equal is allowed.
        let text = service("[service.health]\ninterval = 0.5\n");
        assert_eq!(parse(&text).unwrap().services[0].health.timeout, Duration::from_millis(500));
        let text = service("[service.health]\ninterval = 3\ntimeout = 3\n");
        assert_eq!(parse(&text).unwrap().services[0].health.timeout, Duration::from_secs(3));
    }

    #[test]
    fn syntax_errors_and_unknown_keys_give_line_and_column() {
        let text = service("[[service.backend]]\naddr = \"10.1.1.11\"\nwieght = 2\n");
        assert_syntax(&text, "wieght", &["unknown field `wieght`", "service.backend", "column 1"]);
        let text = with_iface("[[servce]]\nvip = \"10.1.1.100\"\n");
        assert_syntax(&text, "servce", &["unknown field `servce`", "column 3"]);
        let text = with_iface("[conntrack]\ncapacity = 1\ncapacity = 2 # again\n");
        assert_syntax(&text, "# again", &["duplicate key"]);
        let text = with_iface("[[service]]\nvip = \"10.1.1.100\nport = 80\n");
        assert_syntax(&text, "vip", &[]);
        let text = with_iface(
            "[[service]]\nvip = \"10.1.1.100\"\nport = 80\nlocal_addrs = \"10.1.1.200\"\n",
        );
        assert_syntax(&text, "local_addrs", &["sequence", "service.local_addrs"]);
        let shown = parse(&text).unwrap_err().to_string();
        let line = line_of(&text, "local_addrs");
        assert!(shown.starts_with(&format!("{PATH}: line {line}: ")), "{shown}");
        let text = with_iface("[service]\nvip = \"10.1.1.100\"\n");
        assert_syntax(&text, "[service]", &["write [[service]]"]);
    }

    #[test]
    fn lines_and_columns_count_characters() {
        let cx = Context { text: "ab\nçd\n", path: PATH };
        assert_eq!(cx.line_column(0), (1, 1));
        assert_eq!(cx.line_column(3), (2, 1));
        assert_eq!(cx.line_column(5), (2, 2)); // after the two-byte 'ç'
        assert_eq!(cx.line_column(99), (3, 1)); // past the end: clamped
    }

    #[test]
    fn contains_and_netmask() {
        let interface = |addr: [u8; 4], prefix_len| InterfaceConfig {
            name: "eth0".into(),
            addr: Ipv4Addr::from(addr),
            prefix_len,
            mac: None,
            gateway: None,
            ipv6: None,
            mtu: InterfaceConfig::DEFAULT_MTU,
            tunnel_source: None,
        };
        let lan = interface([10, 1, 1, 10], 24);
        assert_eq!(lan.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(lan.contains(Ipv4Addr::new(10, 1, 1, 255)));
        assert!(!lan.contains(Ipv4Addr::new(10, 1, 2, 1)));
        let everything = interface([10, 1, 1, 10], 0);
        assert_eq!(everything.netmask(), Ipv4Addr::UNSPECIFIED);
        assert!(everything.contains(Ipv4Addr::new(192, 0, 2, 1)));
        let host = interface([10, 1, 1, 10], 32);
        assert!(host.contains(Ipv4Addr::new(10, 1, 1, 10)));
        assert!(!host.contains(Ipv4Addr::new(10, 1, 1, 11)));
        assert_eq!(interface([10, 1, 1, 10], 200).netmask(), Ipv4Addr::BROADCAST);
    }

    // IPv6 at the edges (issue 12): accepted by the config, refused by the data plane.

    const IFACE6: &str = "[[interface]]\n\
                          name = \"eth0\"\n\
                          addr = \"10.1.1.10/24\"\n\
                          addr6 = \"2001:db8:1::10/64\"\n\
                          gateway6 = \"fe80::1\"\n\
                          mac = \"02:00:00:00:00:01\"\n";

    /// A config with the dual-stack interface and one IPv6 service whose body is `body`.
    fn service6(body: &str) -> String {
        format!("{IFACE6}\n[[service]]\nvip = \"2001:db8:1::100\"\nport = 80\n{body}")
    }

    fn v6(text: &str) -> IpAddr {
        IpAddr::V6(text.parse().unwrap())
    }

    #[test]
    fn ipv6_services_parse_in_every_mode() {
        let text = format!(
            "{IFACE6}\n\
             [[neighbor]]\nip = \"fe80::1\"\nmac = \"02:00:00:00:00:fe\"\n\
             [[service]]\nvip = \"2001:db8:1::100\"\nport = 80\nscheduler = \"wlc\"\n\
             [service.health]\nsorry_server = \"[2001:db8:1::30]:80\"\n\
             [[service.backend]]\naddr = \"2001:db8:1::11\"\n\
             [[service]]\nvip = \"2001:db8:1::101\"\nport = 53\nproto = \"udp\"\nforward = \"nat\"\n\
             [service.health]\nsorry_server = \"2001:db8:2::30\"\n\
             [[service.backend]]\naddr = \"2001:db8:2::12\"\nport = 5353\n\
             [[service]]\nvip = \"2001:db8:1::102\"\nport = 443\nforward = \"fullnat\"\n\
             local_addrs = [\"2001:db8:1::200\", \"2001:db8:1::201\"]\n\
             [[service.backend]]\naddr = \"2001:db8:2::13\"\nport = 8443\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\n\
             [[service.backend]]\naddr = \"10.1.1.11\"\n"
        );
        let config = parse(&text).expect("a dual-stack config");
        let eth0 = &config.interfaces[0];
        let ipv6 = eth0.ipv6.expect("addr6");
        assert_eq!((ipv6.addr, ipv6.prefix_len), ("2001:db8:1::10".parse().unwrap(), 64));
        assert_eq!(ipv6.gateway, Some("fe80::1".parse().unwrap()));
        assert!(eth0.contains(v6("2001:db8:1::ffff")) && !eth0.contains(v6("2001:db8:2::1")));
        assert!(eth0.contains(Ipv4Addr::new(10, 1, 1, 11)));
        assert_eq!(config.neighbors[0].ip, v6("fe80::1"));
        let [dr, nat, fullnat, four] = &config.services[..] else { panic!("four services") };
        assert_eq!(dr.vip, v6("2001:db8:1::100"));
        assert_eq!(dr.backends[0].addr, v6("2001:db8:1::11"));
        assert_eq!(dr.health.sorry_server, Some("[2001:db8:1::30]:80".parse().unwrap()));
        assert_eq!(nat.health.sorry_server, Some("[2001:db8:2::30]:53".parse().unwrap()));
        assert_eq!(nat.backends[0].port, 5353);
        assert_eq!(fullnat.local_addrs, [v6("2001:db8:1::200"), v6("2001:db8:1::201")]);
        assert_eq!(four.vip, IpAddr::from([10, 1, 1, 100]));
        // The rendered config reads back the same.
        assert_eq!(parse(&config.to_toml()), Ok(config.clone()));
        let rendered = config.to_toml();
        assert!(rendered.contains("addr6 = \"2001:db8:1::10/64\"\ngateway6 = \"fe80::1\"\n"));
        assert!(rendered.contains("sorry_server = \"[2001:db8:1::30]:80\"\n"), "{rendered}");
        // Existing configs: no addr6, no IPv6 anywhere.
        assert_eq!(parse(&service("")).unwrap().interfaces[0].ipv6, None);
    }

    #[test]
    fn a_service_is_one_family_nat64_is_refused() {
        // An IPv6 VIP with an IPv4 real server: NAT64, refused naming both.
        let text = service6("forward = \"nat\"\n[[service.backend]]\naddr = \"10.1.1.11\"\n");
        let expected = assert_invalid(&text, "service[0].backend[0].addr", "10.1.1.11");
        assert_eq!(
            expected,
            "an IPv6 address, as service tcp [2001:db8:1::100]:80 is IPv6: NAT64 (IPv6 clients \
             to IPv4 real servers) is not supported"
        );
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            format!(
                "test.toml: line {}: service[0].backend[0].addr = \"10.1.1.11\": {expected}",
                line_of(&text, "10.1.1.11")
            )
        );
        // And the other way round.
        let text = format!(
            "{IFACE6}\n[[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"nat\"\n\
             [[service.backend]]\naddr = \"2001:db8:1::11\"\n"
        );
        let expected = assert_invalid(&text, "service[0].backend[0].addr", "2001:db8:1::11");
        assert_eq!(
            expected,
            "an IPv4 address, as service tcp 10.1.1.100:80 is IPv4: NAT46 (IPv4 clients to IPv6 \
             real servers) is not supported"
        );
        // Local addresses and sorry servers too.
        let text = service6(
            "forward = \"fullnat\"\nlocal_addrs = [\"2001:db8:1::200\", \"10.1.1.200\"]\n",
        );
        let expected = assert_invalid(&text, "service[0].local_addrs[1]", "local_addrs");
        assert!(expected.contains("NAT64"), "{expected}");
        let text = service6("[service.health]\nsorry_server = \"10.1.1.30:80\"\n");
        let expected = assert_invalid(&text, "service[0].health.sorry_server", "10.1.1.30");
        assert!(expected.starts_with("an IPv6 address, as service tcp"), "{expected}");
    }

    #[test]
    fn ipv6_addresses_are_checked_per_family() {
        // (vip, words of the refusal): not a host's address at all, or no VIP's.
        for (vip, words) in [
            ("::", "a unicast IPv4 or IPv6 address"),
            ("ff02::1", "a unicast IPv4 or IPv6 address"),
            ("fe80::100", "a unicast IPv4 or IPv6 address"),
            ("::ffff:10.1.1.100", "a unicast IPv4 or IPv6 address"),
            ("[2001:db8:1::100]", "a unicast IPv4 or IPv6 address"),
            ("2001:db8:1::100%eth0", "a unicast IPv4 or IPv6 address"),
            ("::1", "the loopback address ::1, and xlb answers NDP"),
            ("2001:db8:1::", "the subnet-router anycast address of interface[0] eth0's subnet"),
            ("2001:db8:1::10", "interface[0] eth0's own IPv6 address, line 4, and xlb answers NDP"),
            ("fe80::1", "a unicast IPv4 or IPv6 address"),
        ] {
            let text = format!("{IFACE6}\n[[service]]\nvip = \"{vip}\"\nport = 80\n");
            let expected = assert_invalid(&text, "service[0].vip", &format!("vip = \"{vip}\""));
            assert!(expected.contains(words), "{vip}: {expected}");
        }
        // A backend: link-local is refused (no interface scopes it), DR needs the subnet.
        let text = service6("[[service.backend]]\naddr = \"fe80::11\"\n");
        assert_invalid(&text, "service[0].backend[0].addr", "fe80::11");
        let text = service6("[[service.backend]]\naddr = \"2001:db8:2::11\"\n");
        let expected = assert_invalid(&text, "service[0].backend[0].addr", "2001:db8:2::11");
        assert!(
            expected.contains("(eth0 10.1.1.10/24 2001:db8:1::10/64)")
                && expected.contains("same link"),
            "{expected}"
        );
        // Probing through the VIP takes IPv4 policy routes.
        let text = service6("[service.health]\nvia_vip = true\n");
        let expected = assert_invalid(&text, "service[0].health.via_vip", "via_vip");
        assert!(expected.contains("is IPv4 only (its policy routes are)"), "{expected}");
        // Duplicates are found whatever the spelling.
        let text = service6(
            "[[service.backend]]\naddr = \"2001:db8:1::11\"\n\
             [[service.backend]]\naddr = \"2001:DB8:1:0::11\"\n",
        );
        let expected = assert_invalid(&text, "service[0].backend[1].addr", "DB8");
        assert_eq!(
            expected,
            "a real server not already in this service: [2001:db8:1::11]:80 is backend[0]"
        );
    }

    #[test]
    fn interface_addr6_is_cidr_with_prefix_up_to_128() {
        let iface = |extra: &str| {
            format!("[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n{extra}\n")
        };
        for bad in [
            "2001:db8::10/129",
            "2001:db8::10",
            "2001:db8::10/",
            "2001:db8::10/+64",
            "fe80::10/64",
            "ff02::1/64",
            "::/0",
            "10.1.1.10/24",
            "[2001:db8::10]/64",
        ] {
            let text = iface(&format!("addr6 = \"{bad}\""));
            let expected = assert_invalid(&text, "interface[0].addr6", "addr6");
            assert!(expected.contains("2001:db8:1::10/64") && expected.contains("0 to 128"));
        }
        for (cidr, prefix_len) in [("2001:db8::10/128", 128), ("2001:db8::10/0", 0)] {
            let text = iface(&format!("addr6 = \"{cidr}\""));
            assert_eq!(parse(&text).unwrap().interfaces[0].ipv6.unwrap().prefix_len, prefix_len);
        }
        // An IPv6 address in `addr` says where it belongs.
        let text = "[[interface]]\nname = \"eth0\"\naddr = \"2001:db8::10/64\"\n";
        let expected = assert_invalid(text, "interface[0].addr", "2001:db8::10/64");
        assert!(expected.contains("an IPv6 address goes in addr6"), "{expected}");
        // gateway6: on the subnet or link-local, not the interface's own, not without addr6.
        let text = iface("addr6 = \"2001:db8:1::10/64\"\ngateway6 = \"2001:db8:2::1\"");
        let expected = assert_invalid(&text, "interface[0].gateway6", "gateway6");
        assert!(expected.contains("inside 2001:db8:1::/64"), "{expected}");
        let text = iface("addr6 = \"2001:db8:1::10/64\"\ngateway6 = \"2001:db8:1::10\"");
        assert_invalid(&text, "interface[0].gateway6", "gateway6");
        let text = iface("addr6 = \"2001:db8:1::10/64\"\ngateway6 = \"10.1.1.1\"");
        assert_invalid(&text, "interface[0].gateway6", "gateway6");
        let text = iface("gateway6 = \"fe80::1\"");
        let expected = assert_invalid(&text, "interface[0].gateway6", "gateway6");
        assert!(expected.contains("without addr6"), "{expected}");
        let text = iface("addr6 = \"2001:db8:1::10/64\"\ngateway6 = \"2001:db8:1::1\"");
        let gateway = parse(&text).unwrap().interfaces[0].ipv6.unwrap().gateway;
        assert_eq!(gateway, Some("2001:db8:1::1".parse().unwrap()));
        // A VIP may not be the IPv6 gateway.
        let text = format!("{IFACE6}\n[[service]]\nvip = \"fe80::1\"\nport = 80\n");
        assert_invalid(&text, "service[0].vip", "vip = ");
    }

    // Property tests.

    prop_compose! {
        pub(crate) fn arb_health()(
            check in proptest::sample::select(HealthCheckKind::ALL.to_vec()),
            interval_ms in 10u64..1_000_000, // MIN_HEALTH_INTERVAL up
            timeout_permille in 1u64..=1000,
            rise in 1u32..,
            fall in 1u32..,
            http_path in "/[a-zA-Z0-9/._~?=&-]{0,16}",
            http_status in 100u16..600,
            on_failure in proptest::sample::select(OnFailure::ALL.to_vec()),
            udp_payload in "[a-zA-Z0-9 ._-]{0,16}",
            passive_fall in any::<u32>(),
            script in proptest::collection::vec("[a-zA-Z0-9 ._=\"\\\\/-]{0,12}", 0..3),
            dns_name in "(\\.|[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,12}){0,2}\\.?)",
            dns_type in proptest::sample::select(DNS_TYPES.map(|(_, n)| n).to_vec()),
            dns_expect in any::<Option<[u8; 4]>>(),
            tls_server_name in proptest::option::of("[a-z]{1,8}(\\.[a-z]{1,8}){0,2}"),
            tls_verify in any::<bool>(),
        ) -> HealthConfig {
            let timeout_ms = (interval_ms * timeout_permille / 1000).max(1);
            let http = check.gets();
            let https = check == HealthCheckKind::Https;
            let udp = check == HealthCheckKind::Udp;
            let dns = check == HealthCheckKind::Dns;
            HealthConfig {
                check,
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(timeout_ms),
                rise,
                fall,
                http_path: if http { http_path } else { "/".into() },
                http_status: if http { http_status } else { 200 },
                on_failure,
                udp_payload: if udp { udp_payload } else { String::new() },
                passive_fall,
                sorry_server: None,
                via_vip: false,
                script: if check == HealthCheckKind::Script {
                    [vec!["/usr/lib/xlb/check".to_string()], script].concat()
                } else {
                    Vec::new()
                },
                dns_name: if dns { dns_name } else { ".".into() },
                dns_type: if dns { dns_type } else { 2 },
                dns_expect: dns_expect
                    .filter(|_| dns && dns_type == 1)
                    .map(|ip| IpAddr::V4(Ipv4Addr::from(ip))),
                tls_server_name: tls_server_name.filter(|_| https),
                tls_verify: https && tls_verify,
                tls_ca_file: DEFAULT_TLS_CA_FILE.to_string(),
            }
        }
    }

    prop_compose! {
        /// A valid service; `index` keeps VIPs distinct. Real servers sit on 10.1.1.0/24.
        pub(crate) fn arb_service(index: u8)(
            port in 1u16..,
            udp in any::<bool>(),
            scheduler in proptest::sample::select(SchedulerKind::ALL.to_vec()),
            forward in proptest::sample::select(vec![ForwardMode::Dr, ForwardMode::Nat, ForwardMode::FullNat]),
            local_count in 1u8..4,
            backends in proptest::collection::vec((1u16.., 0u32..=65_535), 0..6),
            maglev_table_size in proptest::sample::select(vec![7usize, 251, 65_537, 1_000_003]),
            health in arb_health(),
            sorry_port in proptest::option::of(1u16..),
            via_vip in any::<bool>(),
            persistence in proptest::option::of((1u64..=Persistence::MAX_TIMEOUT_SECS, 1u8..=32)),
        ) -> ServiceConfig {
            let mut health = health;
            health.via_vip = via_vip
                && forward == ForwardMode::Dr
                && !matches!(health.check, HealthCheckKind::None | HealthCheckKind::Script);
            // 10.1.1.250 is no backend's address (they count up from 10.1.1.20).
            health.sorry_server = sorry_port.map(|sorry_port| {
                let sorry_port = if forward == ForwardMode::Dr { port } else { sorry_port };
                SocketAddr::from(([10, 1, 1, 250], sorry_port))
            });
            let local_addrs = match forward {
                ForwardMode::FullNat => (0..local_count).map(|i| IpAddr::from([10, 1, 1, 200 + i])).collect(),
                _ => vec![],
            };
            let backends = backends
                .into_iter()
                .zip(20u8..)
                .map(|((backend_port, weight), host)| BackendConfig {
                    addr: IpAddr::from([10, 1, 1, host]),
                    port: if forward == ForwardMode::Dr { port } else { backend_port },
                    weight,
                    down: false,
                })
                .collect();
            ServiceConfig {
                vip: IpAddr::from([10, 1, 2, index]),
                port,
                proto: if udp { Proto::Udp } else { Proto::Tcp },
                scheduler,
                forward,
                local_addrs,
                maglev_table_size,
                health,
                backends,
                persistence: persistence.map(|(secs, prefix_len)| Persistence {
                    timeout: Duration::from_secs(secs),
                    prefix_len,
                }),
                tunnel: None,
            }
        }
    }

    /// A valid config: one interface on 10.1.1.0/24 and up to three services.
    pub(crate) fn arb_config() -> impl Strategy<Value = Config> {
        let services = (0u8..4).prop_flat_map(|n| (0..n).map(arb_service).collect::<Vec<_>>());
        let conntrack =
            (1usize..10_000_000, 1u64..=1000, proptest::array::uniform5(1u64..1_000_000));
        (services, conntrack, any::<[u8; 6]>(), any::<bool>()).prop_map(
            |(services, (capacity, embryonic_permille, timeouts), mac_seed, with_gateway)| {
                let mac = [
                    mac_seed[0] & 0xfe | 0x02,
                    mac_seed[1],
                    mac_seed[2],
                    mac_seed[3],
                    mac_seed[4],
                    mac_seed[5],
                ];
                let [syn, established, closing, closed, udp] = timeouts.map(Duration::from_secs);
                Config {
                    interfaces: vec![InterfaceConfig {
                        name: "eth0".into(),
                        addr: Ipv4Addr::new(10, 1, 1, 10),
                        prefix_len: 24,
                        mac: Some(mac),
                        gateway: with_gateway.then_some(Ipv4Addr::new(10, 1, 1, 1)),
                        ipv6: None,
                        mtu: InterfaceConfig::DEFAULT_MTU,
                        tunnel_source: None,
                    }],
                    neighbors: vec![NeighborConfig { ip: IpAddr::from([10, 1, 1, 20]), mac }],
                    conntrack: ConntrackSettings {
                        capacity,
                        max_embryonic: (capacity * embryonic_permille as usize / 1000).max(1),
                        tcp_syn_timeout: syn,
                        tcp_established_timeout: established,
                        tcp_closing_timeout: closing,
                        tcp_closed_timeout: closed,
                        udp_timeout: udp,
                    },
                    dataplane: DataplaneSettings {
                        busy_poll: BusyPollMode::ALL[capacity % 3],
                        busy_poll_marker: (capacity % 2 == 0)
                            .then_some((capacity % 60_000) as u16 + 1),
                    },
                    fleet: crate::fleet::FleetMode::ALL[capacity % 3],
                    fleet_routes: None,
                    services,
                }
            },
        )
    }

    /// A valid dual-stack config: [`arb_config`]'s, its interface also on 2001:db8:1::/64
    /// (with an IPv6 gateway or not), and each service moved to IPv6 or not: every address
    /// `10.1.c.d` of the service becomes `2001:db8:1::c:d` (on the same link, so DR rules
    /// still hold); `via_vip` is IPv4's only.
    pub(crate) fn arb_dual_config() -> impl Strategy<Value = Config> {
        (arb_config(), any::<[bool; 4]>(), any::<bool>()).prop_map(|(mut config, six, gateway)| {
            let to6 = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => {
                    let [_, _, c, d] = ip.octets();
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, c.into(), d.into()))
                }
                ip => ip,
            };
            config.interfaces[0].ipv6 = Some(Ipv6Interface {
                addr: "2001:db8:1::1:a".parse().unwrap(),
                prefix_len: 64,
                gateway: gateway.then(|| "fe80::1".parse().unwrap()),
            });
            for (service, six) in config.services.iter_mut().zip(six) {
                if !six {
                    continue;
                }
                service.vip = to6(service.vip);
                service.local_addrs.iter_mut().for_each(|a| *a = to6(*a));
                service.backends.iter_mut().for_each(|b| b.addr = to6(b.addr));
                let sorry = &mut service.health.sorry_server;
                *sorry = sorry.map(|s| SocketAddr::new(to6(s.ip()), s.port()));
                service.health.via_vip = false;
            }
            config
        })
    }

    proptest! {
        #[test]
        fn valid_configs_round_trip(config in arb_config()) {
            let text = config.to_toml();
            prop_assert_eq!(parse(&text), Ok(config), "{}", text);
        }

        #[test]
        fn valid_dual_stack_configs_round_trip(config in arb_dual_config()) {
            let text = config.to_toml();
            prop_assert_eq!(parse(&text), Ok(config), "{}", text);
        }

        #[test]
        fn a_bad_weight_is_reported_at_its_own_key_and_line(
            shape in proptest::collection::vec(1usize..4, 1..5),
            pick in any::<(prop::sample::Index, prop::sample::Index)>(),
        ) {
            let service_index = pick.0.index(shape.len());
            let backend_index = pick.1.index(shape[service_index]);
            let mut text = with_iface("");
            for (s, &count) in shape.iter().enumerate() {
                let _ = write!(text, "[[service]]\nvip = \"10.1.1.{}\"\nport = 80\n", 100 + s);
                for b in 0..count {
                    let weight = if (s, b) == (service_index, backend_index) { 70_000 } else { 1 };
                    let _ = write!(text, "  [[service.backend]]\n  addr = \"10.1.1.{}\"\n  weight = {weight}\n", 20 + b);
                }
            }
            let key = format!("service[{service_index}].backend[{backend_index}].weight");
            match parse(&text) {
                Err(ConfigError::Invalid { key: got, line, value, .. }) => {
                    prop_assert_eq!(got, key);
                    prop_assert_eq!(line, line_of(&text, "70000"));
                    prop_assert_eq!(value, "70000");
                }
                other => prop_assert!(false, "expected Invalid, got {:?}", other),
            }
        }

        #[test]
        fn parse_never_panics_on_any_text(text in ".{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_a_mangled_example(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), "[\\[\\]\"'=#.,0-9a-z\n -]{0,3}"), 1..4),
        ) {
            let mut text = include_str!("../../examples/dr.toml").to_string();
            for (at, insert) in edits {
                let mut cut = at.index(text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let end = text[cut..].char_indices().nth(2).map_or(text.len(), |(i, _)| cut + i);
                text.replace_range(cut..end, &insert);
            }
            if let Err(error) = parse(&text) {
                // Every error but Io names a line inside the text.
                let line = match &error {
                    ConfigError::Syntax { line, .. } => *line,
                    ConfigError::Invalid { line, .. } | ConfigError::Missing { line, .. } => *line,
                    ConfigError::Io { .. } => 0,
                };
                prop_assert!((1..=text.lines().count() + 1).contains(&line), "{}", error);
            }
        }

        #[test]
        fn is_prime_matches_trial_division_by_everything(n in 0u64..20_000) {
            let naive = n >= 2 && (2..n).all(|d| n % d != 0);
            prop_assert_eq!(is_prime(n), naive);
        }

        #[test]
        fn contains_agrees_with_shifting(addr in any::<u32>(), other in any::<u32>(), prefix_len in 0u8..=32) {
            let interface = InterfaceConfig {
                name: "eth0".into(),
                addr: Ipv4Addr::from(addr),
                prefix_len,
                mac: None,
                gateway: None,
                ipv6: None,
                mtu: InterfaceConfig::DEFAULT_MTU,
                tunnel_source: None,
            };
            prop_assert!(interface.contains(interface.addr));
            let same = prefix_len == 0 || (addr >> (32 - u32::from(prefix_len))) == (other >> (32 - u32::from(prefix_len)));
            prop_assert_eq!(interface.contains(Ipv4Addr::from(other)), same);
        }
    }
}
