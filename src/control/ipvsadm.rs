//! ipvsadm's command language over xlb's config: parse a command line, apply it to a
//! [`Config`], save a config as commands, and print ipvsadm's listings.
//!
//! `xlb ctl` sends its arguments to the running `xlb run` (see [`crate::control::socket`]),
//! whose control loop answers them with [`decide`] (or [`handle`]). Everything here is pure:
//! no I/O, no clock; the daemon supplies the figures a listing shows in a [`ListView`].
//!
//! # The language
//!
//! ipvsadm's verbs and options, short and long, as `ipvsadm(8)` documents them (short flags
//! may be bundled, `-Ln`; a value may be attached, `-w3`, `--weight=3`):
//! `-A|-E|-D -t|-u VIP:port [-s SCHED]`, `-a|-e|-d -t|-u VIP:port -r RIP[:port] [-g|-m|-b]
//! [-w WEIGHT]`, `-L|-l [-n] [--stats|--rate|-c] [-t|-u VIP:port]`, `-S [-n]`, `-R`
//! (commands on stdin, one a line, as `-S` writes them), `-C`, `-Z [-t|-u VIP:port]`.
//! Schedulers are IPVS's (`rr`, `wrr`, `lc`, `wlc`, `sed`, `nq`, `sh`, and `mh`, Maglev under
//! the name it was given) and xlb's (`maglev`, `random`, `wrandom`, `lt`); the least-load
//! ones use IPVS's formulas ([`crate::sched`]). Addresses are numeric only (`-n` is implied).
//! IPv6 is written as ipvsadm writes it, in brackets before a port: `-t [2001:db8::10]:80`,
//! `-r [2001:db8::11]:80` or `-r [2001:db8::11]` (the service port), and so printed by
//! `-L -n` (`TCP  [2001:db8::10]:80 wlc`) and saved by `-S`; `-z` takes a bare address of
//! either family. An IPv6 address without brackets is refused (`2001:db8::10:80` hides the
//! port), as is a `-t|-u` without a port. A snapshot with IPv6 services lists them so
//! ([`list`]: `-L -n`, `--stats`, `--rate`, `-t|-u`).
//!
//! FullNAT follows the FullNAT ipvsadm of Alibaba's LVS and of DPVS: `-b`/`--fullnat` is the
//! forwarding flag (upstream ipvsadm uses `-b` for `--sched-flags`, which xlb has no use
//! for), and the local address pool is edited with `-P|--add-laddr` and `-Q|--del-laddr`
//! `-t|-u VIP:port -z|--laddr LIP` (DPVS's `-F IFNAME` is accepted and ignored: xlb routes
//! local addresses itself).
//!
//! # Where xlb differs from ipvsadm, and why
//!
//! - xlb sets the forwarding method per *service* (one rewrite per service keeps the
//!   dataplane's per-packet work fixed), ipvsadm per real server. So `-a`'s `-g|-m|-b` must
//!   match the service's method, except on a service without real servers, whose method
//!   the first `-a` sets. `-A|-E` also take `-g|-m|-b` (an extension), and `-b` there with
//!   `-z LIP` (repeatable, or comma-separated) creates a FullNAT service with its pool, as a
//!   FullNAT service cannot exist without one. Leaving FullNAT drops the pool.
//! - `-A` without `-s` gives `wlc`, as ipvsadm does (a `[[service]]` of the config file
//!   without `scheduler` is still Maglev, xlb's default); `-E` without `-s` keeps the
//!   scheduler, and `-e` without `-w` keeps the weight.
//! - What xlb's config holds beyond ipvsadm's model has long options, used by `-A|-E` and
//!   written by `-S` only when not the default: `--maglev-table-size N`,
//!   `--health-check tcp|http|https|udp|icmp|script|dns|none`, `--health-interval SECS`,
//!   `--health-timeout SECS`, `--health-rise N`, `--health-fall N`, `--health-http-path PATH`,
//!   `--health-udp-payload-hex HEX`, `--health-passive-fall N`, `--sorry-server ADDR:PORT|none`,
//!   `--health-via-vip yes|no`, `--health-script-hex HEX` (the argv joined by NUL bytes),
//!   `--health-dns-name NAME`, `--health-dns-type TYPE`, `--health-dns-expect ADDR|none`,
//!   `--health-tls-server-name NAME|none`, `--health-tls-verify yes|no`,
//!   `--health-tls-ca-file PATH`,
//!   `--health-http-status CODE`, `--on-failure drain|remove`.
//! - `-i` (IP-in-IP) makes a tunnel service with IPIP and the config's defaults; the config's
//!   `encap`, `gue_port`, `tunnel_source` and `mss_clamp` are `--tunnel-encap ipip|gue`,
//!   `--tunnel-gue-port N`, `--tunnel-source PREFIX|none`, `--tunnel-mss-clamp N|none`
//!   (tunnel services only), which `-S` writes on the `# xlb:` line.
//! - Persistence is ipvsadm's `-p [TIMEOUT]` (an optional value: the next argument unless
//!   it is an option; 300 without) and `-M NETMASK` (dotted, or a prefix length; IPv6: a
//!   prefix length), printed as ipvsadm prints them (`-S`: ` -p 300 -M 255.255.255.0`
//!   after `-s`; `-L -n`: ` persistent 300 mask 255.255.255.0`; `-L -c`: templates in state
//!   `NONE`, [`template_entries`]). `-E` without `-p` keeps it, `-E -p N` keeps the mask, and
//!   `-p 0` (xlb's) turns it off. Persistence engines (`--pe`), persistent connections,
//!   firewall marks, thresholds, one-packet scheduling, `--set`
//!   and the sync daemon are refused with the reason, never silently ignored.
//! - `-R` is atomic: every line is parsed and applied to a copy, and the result is checked
//!   once; one bad line and nothing changes (ipvsadm applies lines until one fails).
//!
//! # Invariants
//!
//! - [`apply`] returns a config that passes [`Config::validate`] (the config file's own
//!   checks) or an error; the config it was given is never changed.
//! - [`save`] writes lines that [`parse`] reads back and that, applied in order to a config
//!   without services, give the same services (property-tested).
//! - Every error names the argument, service or real server at fault.
//!
//! Output formats follow ipvsadm 1.31's `list_all`, `print_title`, `print_service_entry`
//! and `print_conn` (`-L -n`, `--stats`/`--rate` with `--exact` numbers, `-c`), so that the
//! lines scripts split on whitespace are where they expect them: the `IP Virtual Server
//! version 1.2.1 (size=N)` line for a full listing only, services and real servers sorted
//! as ipvsadm sorts them unless `--nosort` ([`listing_order`]).
//!
//! `xlb ctl` takes `--socket PATH` anywhere on its line ([`take_socket`]), else
//! `$XLB_SOCKET`; a symlink named `ipvsadm` to xlb is `xlb ctl`. Every refusal printed
//! begins `xlb ctl: ` ([`REFUSAL_PREFIX`]); in `-R` it names the line and shows it.
//! `-S` writes xlb's own options of a service on a `# xlb: -E ...` line ([`save`]), which
//! ipvsadm's `-R` skips as a comment and xlb's reads ([`parse_restore`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::control::config::{
    Config, ConfigError, DEFAULT_MAGLEV_TABLE_SIZE, DNS_TYPES, HealthCheckKind, HealthConfig,
    OnFailure, ServiceConfig, TUNNEL_SOURCE_EXPECTED, dns_name_problem, dns_type_name, endpoint,
    netmask_prefix, parse_tunnel_source, seconds_text,
};
use crate::control::health::BackendStatus;
use crate::control::socket::{Request, Response};
use crate::control::stats::{self, BackendRates};
use crate::fleet::{FleetMode, VrrpState};
use crate::flow::{Encap, ForwardMode, Proto, Tunnel, TunnelSource};
use crate::persist::Persistence;
use crate::report::BackendCounters;
use crate::sched::SchedulerKind;
use crate::snapshot::Snapshot;

/// A virtual service's identity, ipvsadm's `-t|-u VIP:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId {
    /// TCP (`-t`) or UDP (`-u`).
    pub proto: Proto,
    /// The virtual IP, IPv4 or IPv6.
    pub vip: IpAddr,
    /// The virtual port.
    pub port: u16,
}

impl ServiceId {
    /// The identity of a configured service.
    pub fn of(service: &ServiceConfig) -> ServiceId {
        ServiceId { proto: service.proto, vip: service.vip, port: service.port }
    }

    /// ipvsadm's option for the protocol, `-t` or `-u`.
    pub fn flag(&self) -> &'static str {
        match self.proto {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
        }
    }

    fn find(&self, config: &Config) -> Option<usize> {
        config.services.iter().position(|s| ServiceId::of(s) == *self)
    }

    /// `10.1.1.10:80` or `[2001:db8::10]:80`, as ipvsadm writes `-t|-u`'s value.
    pub fn endpoint(&self) -> String {
        endpoint(self.vip, self.port)
    }

    /// `-t 10.1.1.10:80`, `-u [2001:db8::10]:53`.
    fn arg(&self) -> String {
        format!("{} {}", self.flag(), self.endpoint())
    }
}

impl fmt::Display for ServiceId {
    /// `10.1.1.10:80/tcp` or `[2001:db8::10]:80/tcp`, as xlb's other messages name services.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.endpoint(), self.proto)
    }
}

/// Health-check settings `-A|-E` may set; `None` keeps the current value (`-E`) or takes
/// the default (`-A`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthOptions {
    /// `--health-check`.
    pub check: Option<HealthCheckKind>,
    /// `--health-interval`.
    pub interval: Option<Duration>,
    /// `--health-timeout`.
    pub timeout: Option<Duration>,
    /// `--health-rise`.
    pub rise: Option<u32>,
    /// `--health-fall`.
    pub fall: Option<u32>,
    /// `--health-http-path`.
    pub http_path: Option<String>,
    /// `--health-http-status`.
    pub http_status: Option<u16>,
    /// `--on-failure`.
    pub on_failure: Option<OnFailure>,
    /// `--health-udp-payload-hex` (hex, so any bytes survive a `-S` line).
    pub udp_payload: Option<String>,
    /// `--health-passive-fall`.
    pub passive_fall: Option<u32>,
    /// `--sorry-server ADDR:PORT`, or `none` (`Some(None)`) to remove it.
    pub sorry_server: Option<Option<SocketAddr>>,
    /// `--health-via-vip yes|no` (DR and tunnel: probe the VIP through each real server).
    pub via_vip: Option<bool>,
    /// `--health-script-hex`: a script check's argv, its words joined by NUL bytes, in hex
    /// (so any argument survives a `-S` line).
    pub script: Option<Vec<String>>,
    /// `--health-dns-name`.
    pub dns_name: Option<String>,
    /// `--health-dns-type` (a name of [`DNS_TYPES`]).
    pub dns_type: Option<u16>,
    /// `--health-dns-expect ADDR`, or `none` (`Some(None)`).
    pub dns_expect: Option<Option<IpAddr>>,
    /// `--health-tls-server-name NAME`, or `none` (`Some(None)`).
    pub tls_server_name: Option<Option<String>>,
    /// `--health-tls-verify yes|no`.
    pub tls_verify: Option<bool>,
    /// `--health-tls-ca-file PATH`.
    pub tls_ca_file: Option<String>,
}

/// What `-A|-E` set on a service; `None` (or an empty list) keeps the current value (`-E`)
/// or takes the default (`-A`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceOptions {
    /// `-s`.
    pub scheduler: Option<SchedulerKind>,
    /// `-g|-m|-b` (xlb forwards per service).
    pub forward: Option<ForwardMode>,
    /// `-z`: FullNAT's local address pool, replacing the current one.
    pub local_addrs: Vec<IpAddr>,
    /// `--maglev-table-size`.
    pub maglev_table_size: Option<usize>,
    /// `--health-*`, `--on-failure`.
    pub health: HealthOptions,
    /// `-p [TIMEOUT]`: persistence in seconds (`-p` alone: 300, as ipvsadm); 0 (xlb's own)
    /// turns it off.
    pub persistent: Option<u64>,
    /// `-M NETMASK`: the persistence mask.
    pub netmask: Option<Netmask>,
    /// `--tunnel-*`: a tunnel service's settings.
    pub tunnel: TunnelOptions,
}

/// What `--tunnel-encap ipip|gue`, `--tunnel-gue-port N`, `--tunnel-source PREFIX|none` and
/// `--tunnel-mss-clamp N|none` set on a tunnel service (xlb's own: `-S` writes them on the
/// `# xlb:` line, as the config's `encap`, `gue_port`, `tunnel_source`, `mss_clamp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelOptions {
    /// `--tunnel-encap`: GUE (`true`) or IPIP.
    pub gue: Option<bool>,
    /// `--tunnel-gue-port`.
    pub gue_port: Option<u16>,
    /// `--tunnel-source`, or `none` (`Some(None)`).
    pub source: Option<Option<TunnelSource>>,
    /// `--tunnel-mss-clamp`, or `none` (`Some(None)`).
    pub mss_clamp: Option<Option<u16>>,
}

/// `-M`'s value: a dotted IPv4 netmask (`255.255.255.0`) or a prefix length (`24`; an
/// IPv6 service's only form, as ipvsadm's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netmask {
    /// The mask's length in bits.
    pub prefix_len: u8,
    /// Written dotted (IPv4 only).
    pub dotted: bool,
}

/// Which listing `-L` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListFormat {
    /// `-L -n`: services, real servers, forwarding, weights, active and inactive connections.
    #[default]
    Table,
    /// `--stats`: connections, packets and bytes since start (or `-Z`).
    Stats,
    /// `--rate`: the same per second.
    Rate,
    /// `-c`: the connection entries.
    Connections,
    /// `--health` (xlb's own): each checked real server's weight as configured and its
    /// health state apart from it (up, drained by the operator, down by its check, unknown),
    /// with its probe counts.
    Health,
}

/// The options of `-L`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Which listing.
    pub format: ListFormat,
    /// `-t|-u VIP:port`: only this service.
    pub service: Option<ServiceId>,
    /// `--nosort`: services and real servers in the config's order, not sorted as ipvsadm
    /// sorts them.
    pub nosort: bool,
}

/// One ipvsadm command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `-A`: add a virtual service (with no real servers).
    AddService {
        /// Which service.
        service: ServiceId,
        /// Its settings.
        options: ServiceOptions,
    },
    /// `-E`: change a virtual service's settings.
    EditService {
        /// Which service.
        service: ServiceId,
        /// What to change.
        options: ServiceOptions,
    },
    /// `-D`: delete a virtual service and its real servers.
    DeleteService {
        /// Which service.
        service: ServiceId,
    },
    /// `-a`: add a real server to a service.
    AddServer {
        /// Which service.
        service: ServiceId,
        /// The real server (its port defaults to the service port).
        server: SocketAddr,
        /// `-g|-m|-b`, if given.
        forward: Option<ForwardMode>,
        /// `-w`, if given (default 1).
        weight: Option<u32>,
    },
    /// `-e`: change a real server's weight.
    EditServer {
        /// Which service.
        service: ServiceId,
        /// Which real server.
        server: SocketAddr,
        /// `-g|-m|-b`, if given: must be the service's.
        forward: Option<ForwardMode>,
        /// `-w`, if given.
        weight: Option<u32>,
    },
    /// `-d`: remove a real server from a service.
    DeleteServer {
        /// Which service.
        service: ServiceId,
        /// Which real server.
        server: SocketAddr,
    },
    /// `-P` (DPVS's `--add-laddr`): add local addresses to a FullNAT service's pool.
    AddLocalAddrs {
        /// Which service.
        service: ServiceId,
        /// The addresses (`-z`).
        addrs: Vec<IpAddr>,
    },
    /// `-Q` (DPVS's `--del-laddr`): remove local addresses from a FullNAT service's pool.
    DeleteLocalAddrs {
        /// Which service.
        service: ServiceId,
        /// The addresses (`-z`).
        addrs: Vec<IpAddr>,
    },
    /// `-L`: print a listing.
    List(ListOptions),
    /// `-S`: print the services as commands `-R` restores.
    Save,
    /// `-R`: apply these commands, all or none. [`parse`] returns it empty: the commands
    /// come from the request's stdin ([`parse_restore`]).
    Restore(Vec<Command>),
    /// `-C`: delete every service.
    Clear,
    /// `-Z`: zero the counters of one service or all.
    Zero {
        /// Which service, or all.
        service: Option<ServiceId>,
    },
    /// `-h`: print the usage.
    Help,
    /// xlb's own, for keepalived's notify scripts (ipvsadm has none): `--active` and
    /// `--standby` set the box's VRRP state (`[fleet] mode = "vrrp"` only), `--fleet` (None)
    /// prints the fleet mode and state.
    Fleet(Option<VrrpState>),
}

impl Command {
    /// Whether the command changes the config (and so goes through [`apply`]).
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Command::List(_)
                | Command::Save
                | Command::Zero { .. }
                | Command::Help
                | Command::Fleet(_)
        )
    }
}

impl fmt::Display for Command {
    /// The command in ipvsadm's syntax, as [`save`] writes it and [`parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server_line = |f: &mut fmt::Formatter<'_>,
                           verb: &str,
                           service: &ServiceId,
                           server: &SocketAddr,
                           forward: &Option<ForwardMode>,
                           weight: &Option<u32>| {
            write!(f, "{verb} {} -r {server}", service.arg())?;
            if let Some(forward) = forward {
                write!(f, " {}", forward_flag(*forward))?;
            }
            if let Some(weight) = weight {
                write!(f, " -w {weight}")?;
            }
            Ok(())
        };
        let service_arg = ServiceId::arg;
        match self {
            Command::AddService { service, options } => {
                write!(f, "-A {}", service_arg(service))?;
                write_service_options(f, service, options)
            }
            Command::EditService { service, options } => {
                write!(f, "-E {}", service_arg(service))?;
                write_service_options(f, service, options)
            }
            Command::DeleteService { service } => write!(f, "-D {}", service_arg(service)),
            Command::AddServer { service, server, forward, weight } => {
                server_line(f, "-a", service, server, forward, weight)
            }
            Command::EditServer { service, server, forward, weight } => {
                server_line(f, "-e", service, server, forward, weight)
            }
            Command::DeleteServer { service, server } => {
                write!(f, "-d {} -r {server}", service_arg(service))
            }
            Command::AddLocalAddrs { service, addrs } => {
                write!(f, "-P {}", service_arg(service))?;
                addrs.iter().try_for_each(|a| write!(f, " -z {a}"))
            }
            Command::DeleteLocalAddrs { service, addrs } => {
                write!(f, "-Q {}", service_arg(service))?;
                addrs.iter().try_for_each(|a| write!(f, " -z {a}"))
            }
            Command::List(options) => {
                f.write_str("-L -n")?;
                match options.format {
                    ListFormat::Table => {}
                    ListFormat::Stats => f.write_str(" --stats")?,
                    ListFormat::Rate => f.write_str(" --rate")?,
                    ListFormat::Connections => f.write_str(" -c")?,
                    ListFormat::Health => f.write_str(" --health")?,
                }
                if options.nosort {
                    f.write_str(" --nosort")?;
                }
                match &options.service {
                    Some(service) => write!(f, " {}", service_arg(service)),
                    None => Ok(()),
                }
            }
            Command::Save => f.write_str("-S -n"),
            Command::Restore(_) => f.write_str("-R"),
            Command::Clear => f.write_str("-C"),
            Command::Zero { service } => match service {
                Some(service) => write!(f, "-Z {}", service_arg(service)),
                None => f.write_str("-Z"),
            },
            Command::Help => f.write_str("-h"),
            Command::Fleet(Some(VrrpState::Active)) => f.write_str("--active"),
            Command::Fleet(Some(VrrpState::Standby)) => f.write_str("--standby"),
            Command::Fleet(None) => f.write_str("--fleet"),
        }
    }
}

fn forward_flag(forward: ForwardMode) -> &'static str {
    match forward {
        ForwardMode::Dr => "-g",
        ForwardMode::Nat => "-m",
        ForwardMode::FullNat => "-b",
        ForwardMode::Tunnel => "-i",
    }
}

fn write_service_options(
    f: &mut fmt::Formatter<'_>,
    service: &ServiceId,
    options: &ServiceOptions,
) -> fmt::Result {
    if let Some(scheduler) = options.scheduler {
        write!(f, " -s {scheduler}")?;
    }
    f.write_str(&persistence_args(service.vip, options.persistent, options.netmask))?;
    if let Some(forward) = options.forward {
        write!(f, " {}", forward_flag(forward))?;
    }
    for addr in &options.local_addrs {
        write!(f, " -z {addr}")?;
    }
    if let Some(size) = options.maglev_table_size {
        write!(f, " --maglev-table-size {size}")?;
    }
    let t = &options.tunnel;
    if let Some(gue) = t.gue {
        write!(f, " --tunnel-encap {}", if gue { "gue" } else { "ipip" })?;
    }
    if let Some(port) = t.gue_port {
        write!(f, " --tunnel-gue-port {port}")?;
    }
    if let Some(source) = t.source {
        write!(f, " --tunnel-source {}", or_none(source))?;
    }
    if let Some(mss) = t.mss_clamp {
        write!(f, " --tunnel-mss-clamp {}", or_none(mss))?;
    }
    let h = &options.health;
    if let Some(check) = h.check {
        write!(f, " --health-check {check}")?;
    }
    if let Some(interval) = h.interval {
        write!(f, " --health-interval {}", seconds_text(interval))?;
    }
    if let Some(timeout) = h.timeout {
        write!(f, " --health-timeout {}", seconds_text(timeout))?;
    }
    if let Some(rise) = h.rise {
        write!(f, " --health-rise {rise}")?;
    }
    if let Some(fall) = h.fall {
        write!(f, " --health-fall {fall}")?;
    }
    if let Some(path) = &h.http_path {
        write!(f, " --health-http-path {path}")?;
    }
    if let Some(status) = h.http_status {
        write!(f, " --health-http-status {status}")?;
    }
    if let Some(on_failure) = h.on_failure {
        write!(f, " --on-failure {on_failure}")?;
    }
    if let Some(payload) = &h.udp_payload {
        write!(f, " --health-udp-payload-hex {}", hex_arg(payload.as_bytes()))?;
    }
    if let Some(passive_fall) = h.passive_fall {
        write!(f, " --health-passive-fall {passive_fall}")?;
    }
    if let Some(sorry) = h.sorry_server {
        write!(f, " --sorry-server {}", or_none(sorry))?;
    }
    if let Some(via_vip) = h.via_vip {
        write!(f, " --health-via-vip {}", yes_no(via_vip))?;
    }
    if let Some(script) = &h.script {
        write!(f, " --health-script-hex {}", hex_arg(script.join("\0").as_bytes()))?;
    }
    if let Some(name) = &h.dns_name {
        write!(f, " --health-dns-name {name}")?;
    }
    if let Some(dns_type) = h.dns_type {
        write!(f, " --health-dns-type {}", dns_type_name(dns_type))?;
    }
    if let Some(expect) = h.dns_expect {
        write!(f, " --health-dns-expect {}", or_none(expect))?;
    }
    if let Some(name) = &h.tls_server_name {
        write!(f, " --health-tls-server-name {}", or_none(name.as_ref()))?;
    }
    if let Some(verify) = h.tls_verify {
        write!(f, " --health-tls-verify {}", yes_no(verify))?;
    }
    if let Some(file) = &h.tls_ca_file {
        write!(f, " --health-tls-ca-file {file}")?;
    }
    Ok(())
}

/// Why a command was refused. The message names the argument, service or real server.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CtlError {
    /// The command line itself is wrong (unknown option, bad value, missing option...).
    #[error("{0}")]
    Usage(String),
    /// No such service.
    #[error("service {0} does not exist (-A adds it)")]
    NoSuchService(ServiceId),
    /// `-A` of a service that exists.
    #[error("service {0} already exists (-E changes it)")]
    ServiceExists(ServiceId),
    /// No such real server in the service.
    #[error("service {service} has no real server {server} (-a adds it)")]
    NoSuchServer {
        /// The service.
        service: ServiceId,
        /// The real server asked for.
        server: SocketAddr,
    },
    /// `-a` of a real server the service has.
    #[error("service {service} already has real server {server} (-e changes it)")]
    ServerExists {
        /// The service.
        service: ServiceId,
        /// The real server.
        server: SocketAddr,
    },
    /// A real server's forwarding flag is not its service's.
    #[error(
        "service {service} forwards by {has}; xlb sets the forwarding method per service (one \
         rewrite per service, and DR's replies bypass the box where NAT's and FullNAT's come \
         back through it), so real server {server} cannot use {asked} ({hint})"
    )]
    ForwardMismatch {
        /// The service.
        service: ServiceId,
        /// The real server.
        server: SocketAddr,
        /// The service's method.
        has: ForwardMode,
        /// The method asked for.
        asked: ForwardMode,
        /// What to do instead.
        hint: &'static str,
    },
    /// A local-address (FullNAT pool) change that cannot be made.
    #[error("service {service}: {message}")]
    LocalAddrs {
        /// The service.
        service: ServiceId,
        /// What is wrong.
        message: String,
    },
    /// The resulting config breaks a rule of the config file.
    #[error("{what} = {value}: {expected}")]
    Invalid {
        /// The service, real server and setting at fault.
        what: String,
        /// The value.
        value: String,
        /// What is expected instead.
        expected: String,
    },
    /// One command of a `-R` failed; nothing was applied.
    #[error("{command}: {error}")]
    Restore {
        /// The failing command: `line N (the line)` when the restore text is known, else as
        /// ipvsadm syntax (`-R` for a rule broken by the whole result).
        command: String,
        /// Which command of the restore failed (0-based), when one did.
        index: Option<usize>,
        /// Why.
        error: Box<CtlError>,
    },
}

impl CtlError {
    /// The exit status `xlb ctl` gives: 2 for a bad command line (as ipvsadm), 1 for a
    /// command the running state refused.
    pub fn status(&self) -> i32 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Restore { error, .. } => error.status(),
            _ => 1,
        }
    }
}

// Parsing.

/// What an option is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Verb(Verb),
    Tcp,
    Udp,
    Scheduler,
    Real,
    Forward(ForwardMode),
    Weight,
    Numeric,
    Connection,
    Stats,
    Rate,
    Health,
    Exact,
    Sort,
    NoSort,
    Laddr,
    Ifname,
    MaglevSize,
    HealthCheck,
    HealthInterval,
    HealthTimeout,
    HealthRise,
    HealthFall,
    HealthPath,
    HealthStatus,
    HealthUdpPayload,
    HealthPassiveFall,
    SorryServer,
    HealthViaVip,
    TunnelEncap,
    TunnelGuePort,
    TunnelSourcePrefix,
    TunnelMssClamp,
    HealthScript,
    HealthDnsName,
    HealthDnsType,
    HealthDnsExpect,
    HealthTlsName,
    HealthTlsVerify,
    HealthTlsCaFile,
    OnFailure,
    /// `-p [TIMEOUT]`: its value is optional (the next argument, if it is no option).
    Persistent,
    Netmask,
    /// Recognised, refused, with the reason.
    Unsupported(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    AddService,
    EditService,
    DeleteService,
    AddServer,
    EditServer,
    DeleteServer,
    AddLaddr,
    DelLaddr,
    List,
    Save,
    Restore,
    Clear,
    Zero,
    Help,
    Active,
    Standby,
    Fleet,
}

struct Spec {
    short: Option<char>,
    long: &'static str,
    value: bool,
    key: Key,
}

const fn spec(short: Option<char>, long: &'static str, value: bool, key: Key) -> Spec {
    Spec { short, long, value, key }
}

const NO_PERSISTENCE: &str = "xlb's persistence is by client address only (-p, -M): no \
                              persistence engines nor persistent connections";
const NO_FWMARK: &str = "xlb has no firewall-mark services: use -t or -u VIP:port";
const NO_THRESHOLDS: &str = "xlb has no connection thresholds";
const NO_SET: &str =
    "xlb's timeouts are the config's [conntrack] table, read at start (restart xlb to change them)";
const NO_SYNC: &str = "xlb has no connection-sync daemon";

const SPECS: &[Spec] = &[
    spec(Some('A'), "add-service", false, Key::Verb(Verb::AddService)),
    spec(Some('E'), "edit-service", false, Key::Verb(Verb::EditService)),
    spec(Some('D'), "delete-service", false, Key::Verb(Verb::DeleteService)),
    spec(Some('a'), "add-server", false, Key::Verb(Verb::AddServer)),
    spec(Some('e'), "edit-server", false, Key::Verb(Verb::EditServer)),
    spec(Some('d'), "delete-server", false, Key::Verb(Verb::DeleteServer)),
    spec(Some('P'), "add-laddr", false, Key::Verb(Verb::AddLaddr)),
    spec(Some('Q'), "del-laddr", false, Key::Verb(Verb::DelLaddr)),
    spec(Some('L'), "list", false, Key::Verb(Verb::List)),
    spec(Some('l'), "list", false, Key::Verb(Verb::List)),
    spec(Some('S'), "save", false, Key::Verb(Verb::Save)),
    spec(Some('R'), "restore", false, Key::Verb(Verb::Restore)),
    spec(Some('C'), "clear", false, Key::Verb(Verb::Clear)),
    spec(Some('Z'), "zero", false, Key::Verb(Verb::Zero)),
    spec(Some('h'), "help", false, Key::Verb(Verb::Help)),
    spec(None, "active", false, Key::Verb(Verb::Active)),
    spec(None, "standby", false, Key::Verb(Verb::Standby)),
    spec(None, "fleet", false, Key::Verb(Verb::Fleet)),
    spec(Some('t'), "tcp-service", true, Key::Tcp),
    spec(Some('u'), "udp-service", true, Key::Udp),
    spec(Some('s'), "scheduler", true, Key::Scheduler),
    spec(Some('r'), "real-server", true, Key::Real),
    spec(Some('g'), "gatewaying", false, Key::Forward(ForwardMode::Dr)),
    spec(Some('m'), "masquerading", false, Key::Forward(ForwardMode::Nat)),
    spec(Some('b'), "fullnat", false, Key::Forward(ForwardMode::FullNat)),
    spec(Some('w'), "weight", true, Key::Weight),
    spec(Some('n'), "numeric", false, Key::Numeric),
    spec(Some('c'), "connection", false, Key::Connection),
    spec(None, "stats", false, Key::Stats),
    spec(None, "rate", false, Key::Rate),
    spec(None, "health", false, Key::Health),
    spec(Some('X'), "exact", false, Key::Exact),
    spec(None, "sort", false, Key::Sort),
    spec(None, "nosort", false, Key::NoSort),
    spec(Some('z'), "laddr", true, Key::Laddr),
    spec(Some('F'), "ifname", true, Key::Ifname),
    spec(None, "maglev-table-size", true, Key::MaglevSize),
    spec(None, "health-check", true, Key::HealthCheck),
    spec(None, "health-interval", true, Key::HealthInterval),
    spec(None, "health-timeout", true, Key::HealthTimeout),
    spec(None, "health-rise", true, Key::HealthRise),
    spec(None, "health-fall", true, Key::HealthFall),
    spec(None, "health-http-path", true, Key::HealthPath),
    spec(None, "health-http-status", true, Key::HealthStatus),
    spec(None, "on-failure", true, Key::OnFailure),
    spec(None, "health-udp-payload-hex", true, Key::HealthUdpPayload),
    spec(None, "health-passive-fall", true, Key::HealthPassiveFall),
    spec(None, "sorry-server", true, Key::SorryServer),
    spec(None, "health-via-vip", true, Key::HealthViaVip),
    spec(None, "tunnel-encap", true, Key::TunnelEncap),
    spec(None, "tunnel-gue-port", true, Key::TunnelGuePort),
    spec(None, "tunnel-source", true, Key::TunnelSourcePrefix),
    spec(None, "tunnel-mss-clamp", true, Key::TunnelMssClamp),
    spec(None, "health-script-hex", true, Key::HealthScript),
    spec(None, "health-dns-name", true, Key::HealthDnsName),
    spec(None, "health-dns-type", true, Key::HealthDnsType),
    spec(None, "health-dns-expect", true, Key::HealthDnsExpect),
    spec(None, "health-tls-server-name", true, Key::HealthTlsName),
    spec(None, "health-tls-verify", true, Key::HealthTlsVerify),
    spec(None, "health-tls-ca-file", true, Key::HealthTlsCaFile),
    spec(Some('f'), "fwmark-service", false, Key::Unsupported(NO_FWMARK)),
    spec(Some('p'), "persistent", false, Key::Persistent),
    spec(Some('M'), "netmask", true, Key::Netmask),
    spec(None, "persistent-conn", false, Key::Unsupported(NO_PERSISTENCE)),
    spec(None, "pe", false, Key::Unsupported(NO_PERSISTENCE)),
    spec(Some('i'), "ipip", false, Key::Forward(ForwardMode::Tunnel)),
    spec(Some('x'), "u-threshold", false, Key::Unsupported(NO_THRESHOLDS)),
    spec(Some('y'), "l-threshold", false, Key::Unsupported(NO_THRESHOLDS)),
    spec(None, "thresholds", false, Key::Unsupported(NO_THRESHOLDS)),
    spec(Some('o'), "ops", false, Key::Unsupported("xlb has no one-packet scheduling")),
    spec(None, "set", false, Key::Unsupported(NO_SET)),
    spec(None, "timeout", false, Key::Unsupported(NO_SET)),
    spec(None, "start-daemon", false, Key::Unsupported(NO_SYNC)),
    spec(None, "stop-daemon", false, Key::Unsupported(NO_SYNC)),
    spec(None, "daemon", false, Key::Unsupported(NO_SYNC)),
];

/// One option as given: how it was written (for messages), what it is, its value.
struct Given {
    name: String,
    key: Key,
    value: Option<String>,
}

fn usage(message: impl Into<String>) -> CtlError {
    CtlError::Usage(message.into())
}

/// Refuses an option xlb recognises but does not support, before its values (which may be
/// optional or several, as `-p [TIMEOUT]` and `--set TCP TCPFIN UDP`) confuse the rest.
fn unsupported(shown: &str, key: Key) -> Result<(), CtlError> {
    match key {
        Key::Unsupported(why) => Err(usage(format!("{shown} is not supported: {why}"))),
        _ => Ok(()),
    }
}

/// Splits a command line into options (bundled short flags, attached values).
fn tokenize(args: &[String]) -> Result<Vec<Given>, CtlError> {
    let mut given = Vec::new();
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        if let Some(long) = arg.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            let spec = SPECS.iter().find(|s| s.long == name).ok_or_else(|| {
                usage(format!("unknown option {arg:?} (xlb ctl -h lists the options)"))
            })?;
            let shown = format!("--{name}");
            unsupported(&shown, spec.key)?;
            let value = match (spec.value, attached) {
                (true, Some(value)) => Some(value),
                (true, None) => Some(
                    rest.next().cloned().ok_or_else(|| usage(format!("{shown} needs a value")))?,
                ),
                (false, Some(value)) if spec.key == Key::Persistent => Some(value),
                (false, Some(_)) => return Err(usage(format!("{shown} takes no value: {arg:?}"))),
                (false, None) if spec.key == Key::Persistent => optional_value(&mut rest),
                (false, None) => None,
            };
            given.push(Given { name: shown, key: spec.key, value });
        } else if let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) {
            for (at, flag) in flags.char_indices() {
                let spec = SPECS.iter().find(|s| s.short == Some(flag)).ok_or_else(|| {
                    usage(format!(
                        "unknown option -{flag} in {arg:?} (xlb ctl -h lists the options)"
                    ))
                })?;
                let shown = format!("-{flag}");
                unsupported(&shown, spec.key)?;
                if spec.key == Key::Persistent {
                    // ipvsadm's `-p [TIMEOUT]` (popt's optional argument): attached, or the
                    // next argument when it is no option.
                    let attached = &flags[at + flag.len_utf8()..];
                    let value = match attached.is_empty() {
                        true => optional_value(&mut rest),
                        false => Some(attached.to_string()),
                    };
                    given.push(Given { name: shown, key: spec.key, value });
                    break;
                }
                if !spec.value {
                    given.push(Given { name: shown, key: spec.key, value: None });
                    continue;
                }
                let attached = &flags[at + flag.len_utf8()..];
                let value = if attached.is_empty() {
                    rest.next().cloned().ok_or_else(|| usage(format!("{shown} needs a value")))?
                } else {
                    attached.to_string()
                };
                given.push(Given { name: shown, key: spec.key, value: Some(value) });
                break;
            }
        } else {
            return Err(usage(format!(
                "unexpected argument {arg:?}: ipvsadm's commands are options, like -L -n"
            )));
        }
    }
    Ok(given)
}

/// The environment variable naming the control socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "XLB_SOCKET";

/// Takes `--socket PATH` (or `--socket=PATH`) out of `args`, wherever it stands, as
/// `xlb ctl` reads it before the ipvsadm command line; `None` when absent. Given twice, or
/// without a path, is an error.
pub fn take_socket(args: &mut Vec<String>) -> Result<Option<String>, CtlError> {
    let mut found: Option<String> = None;
    let mut at = 0;
    while at < args.len() {
        let path = if args[at] == "--socket" {
            let path = args.get(at + 1).cloned().filter(|p| !p.is_empty());
            let path = path.ok_or_else(|| usage("--socket needs a path"))?;
            args.drain(at..at + 2);
            path
        } else if let Some(path) = args[at].strip_prefix("--socket=") {
            if path.is_empty() {
                return Err(usage("--socket needs a path"));
            }
            let path = path.to_string();
            args.remove(at);
            path
        } else {
            at += 1;
            continue;
        };
        if let Some(first) = &found {
            return Err(usage(format!("--socket given twice ({first} and {path})")));
        }
        found = Some(path);
    }
    Ok(found)
}

/// The next argument as an optional option value (`-p 300`), unless it is an option.
fn optional_value(rest: &mut std::iter::Peekable<std::slice::Iter<'_, String>>) -> Option<String> {
    rest.next_if(|next| !next.starts_with('-')).cloned()
}

/// Parses one ipvsadm command line (without the program name), e.g.
/// `["-a", "-t", "10.1.1.10:80", "-r", "10.1.1.11", "-g", "-w", "2"]`. (No arguments is
/// an error here; `xlb ctl` sends `-L -n` for them, as a bare `ipvsadm` lists.)
pub fn parse(args: &[String]) -> Result<Command, CtlError> {
    let given = tokenize(args)?;
    let mut verbs = given.iter().filter_map(|g| match g.key {
        Key::Verb(verb) => Some((verb, g.name.as_str())),
        _ => None,
    });
    let (verb, verb_name) = verbs.next().ok_or_else(|| {
        usage("no command given: expected one of -A -E -D -a -e -d -L -S -R -C -Z -P -Q (-h for help)")
    })?;
    if let Some((_, second)) = verbs.next() {
        return Err(usage(format!("two commands given, {verb_name} and {second}: give one")));
    }
    let mut options = Options { verb_name: verb_name.to_string(), given: Vec::new() };
    for g in given.into_iter().filter(|g| !matches!(g.key, Key::Verb(_))) {
        if g.key != Key::Laddr
            && let Some(earlier) = options.given.iter().find(|e| e.key == g.key)
        {
            return Err(usage(format!(
                "{} given twice (as {} and {})",
                g.name, earlier.name, g.name
            )));
        }
        options.given.push(g);
    }
    let command = match verb {
        Verb::AddService | Verb::EditService => {
            let service = options.service()?.ok_or_else(|| options.missing("-t|-u VIP:port"))?;
            let service_options = options.service_options()?;
            if verb == Verb::AddService {
                Command::AddService { service, options: service_options }
            } else {
                Command::EditService { service, options: service_options }
            }
        }
        Verb::DeleteService => {
            let service = options.service()?.ok_or_else(|| options.missing("-t|-u VIP:port"))?;
            Command::DeleteService { service }
        }
        Verb::AddServer | Verb::EditServer | Verb::DeleteServer => {
            let service = options.service()?.ok_or_else(|| options.missing("-t|-u VIP:port"))?;
            let server = options.real_server(service.port)?;
            if verb == Verb::DeleteServer {
                Command::DeleteServer { service, server }
            } else {
                let forward = options.forward();
                let weight = options.number(Key::Weight, 0, 65_535, "a weight from 0 to 65535")?;
                let weight = weight.map(|w| w as u32);
                if verb == Verb::AddServer {
                    Command::AddServer { service, server, forward, weight }
                } else {
                    Command::EditServer { service, server, forward, weight }
                }
            }
        }
        Verb::AddLaddr | Verb::DelLaddr => {
            let service = options.service()?.ok_or_else(|| options.missing("-t|-u VIP:port"))?;
            options.take(Key::Ifname);
            let addrs = options.laddrs()?;
            if addrs.is_empty() {
                return Err(options.missing("-z LIP"));
            }
            if verb == Verb::AddLaddr {
                Command::AddLocalAddrs { service, addrs }
            } else {
                Command::DeleteLocalAddrs { service, addrs }
            }
        }
        Verb::List => {
            options.take(Key::Numeric);
            options.take(Key::Exact);
            options.take(Key::Sort);
            let nosort = options.take(Key::NoSort).is_some();
            let formats = [
                (Key::Stats, ListFormat::Stats),
                (Key::Rate, ListFormat::Rate),
                (Key::Connection, ListFormat::Connections),
                (Key::Health, ListFormat::Health),
            ];
            let mut format = ListFormat::Table;
            let mut chosen: Option<String> = None;
            for (key, candidate) in formats {
                if let Some(g) = options.take(key) {
                    if let Some(first) = &chosen {
                        return Err(usage(format!("{first} and {} cannot be combined", g.name)));
                    }
                    chosen = Some(g.name);
                    format = candidate;
                }
            }
            let service = options.service()?;
            Command::List(ListOptions { format, service, nosort })
        }
        Verb::Save => {
            options.take(Key::Numeric);
            Command::Save
        }
        Verb::Restore => Command::Restore(Vec::new()),
        Verb::Clear => Command::Clear,
        Verb::Zero => Command::Zero { service: options.service()? },
        Verb::Help => Command::Help,
        Verb::Active => Command::Fleet(Some(VrrpState::Active)),
        Verb::Standby => Command::Fleet(Some(VrrpState::Standby)),
        Verb::Fleet => Command::Fleet(None),
    };
    options.finish()?;
    Ok(command)
}

/// The options of one command, consumed as the command reads them; what is left over is
/// not valid with the command.
struct Options {
    verb_name: String,
    given: Vec<Given>,
}

impl Options {
    fn take(&mut self, key: Key) -> Option<Given> {
        let at = self.given.iter().position(|g| g.key == key)?;
        Some(self.given.remove(at))
    }

    fn missing(&self, what: &str) -> CtlError {
        usage(format!("{} needs {what}", self.verb_name))
    }

    fn finish(self) -> Result<(), CtlError> {
        match self.given.first() {
            Some(g) => Err(usage(format!("{} cannot be used with {}", g.name, self.verb_name))),
            None => Ok(()),
        }
    }

    /// `-t|-u VIP:port`.
    fn service(&mut self) -> Result<Option<ServiceId>, CtlError> {
        let tcp = self.take(Key::Tcp);
        let udp = self.take(Key::Udp);
        let (g, proto) = match (tcp, udp) {
            (Some(t), Some(u)) => {
                return Err(usage(format!(
                    "{} and {} both given: one service at a time",
                    t.name, u.name
                )));
            }
            (Some(g), None) => (g, Proto::Tcp),
            (None, Some(g)) => (g, Proto::Udp),
            (None, None) => return Ok(None),
        };
        let value = g.value.unwrap_or_default();
        let expected = "VIP:port, numeric, like 10.1.1.10:80 or [2001:db8::10]:80";
        let vip = parse_endpoint(&value, None)
            .ok_or_else(|| usage(format!("{} {value}: expected {expected}", g.name)))?;
        Ok(Some(ServiceId { proto, vip: vip.ip(), port: vip.port() }))
    }

    /// `-r RIP[:port]`; the port defaults to the service port, as in ipvsadm.
    fn real_server(&mut self, service_port: u16) -> Result<SocketAddr, CtlError> {
        let g = self.take(Key::Real).ok_or_else(|| self.missing("-r RIP[:port]"))?;
        let value = g.value.unwrap_or_default();
        parse_endpoint(&value, Some(service_port)).ok_or_else(|| {
            usage(format!(
                "{} {value}: expected RIP[:port], numeric, like 10.1.1.11:80 or \
                 [2001:db8::11]:80",
                g.name
            ))
        })
    }

    /// `-g|-m|-b`: at most one.
    fn forward(&mut self) -> Option<ForwardMode> {
        let at = self.given.iter().position(|g| matches!(g.key, Key::Forward(_)))?;
        let g = self.given.remove(at);
        match g.key {
            Key::Forward(mode) => Some(mode),
            _ => None,
        }
    }

    /// Every `-z`, each an address or a comma-separated list.
    fn laddrs(&mut self) -> Result<Vec<IpAddr>, CtlError> {
        let mut addrs = Vec::new();
        while let Some(g) = self.take(Key::Laddr) {
            let value = g.value.unwrap_or_default();
            for part in value.split(',') {
                // An address alone has no port to tell apart: IPv6 needs no brackets here.
                let addr = IpAddr::from_str(part).map_err(|_| {
                    usage(format!(
                        "{} {value}: {part:?} is not an IPv4 address, like 10.1.1.200, nor an \
                         IPv6 address, like 2001:db8::200",
                        g.name
                    ))
                })?;
                addrs.push(addr);
            }
        }
        Ok(addrs)
    }

    fn number(
        &mut self,
        key: Key,
        min: u64,
        max: u64,
        expected: &str,
    ) -> Result<Option<u64>, CtlError> {
        let Some(g) = self.take(key) else { return Ok(None) };
        let value = g.value.unwrap_or_default();
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| usage(format!("{} {value}: expected {expected}", g.name)))
    }

    fn seconds(&mut self, key: Key) -> Result<Option<Duration>, CtlError> {
        let Some(g) = self.take(key) else { return Ok(None) };
        let value = g.value.unwrap_or_default();
        parse_seconds(&value).map(Some).ok_or_else(|| {
            usage(format!("{} {value}: expected seconds, more than 0, like 2 or 0.5", g.name))
        })
    }

    fn named<T>(
        &mut self,
        key: Key,
        from: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, CtlError> {
        let Some(g) = self.take(key) else { return Ok(None) };
        let value = g.value.unwrap_or_default();
        from(&value)
            .map(Some)
            .ok_or_else(|| usage(format!("{} {value}: expected {expected}", g.name)))
    }

    /// What `-A|-E` may set.
    fn service_options(&mut self) -> Result<ServiceOptions, CtlError> {
        let scheduler = self.take(Key::Scheduler).map(|g| {
            let value = g.value.unwrap_or_default();
            SchedulerKind::from_str(&value)
                .map_err(|why| usage(format!("{} {value}: {why}", g.name)))
        });
        let scheduler = scheduler.transpose()?;
        let forward = self.forward();
        let local_addrs = self.laddrs()?;
        let max = crate::control::config::MAX_MAGLEV_TABLE_SIZE as u64;
        let maglev_table_size = self
            .number(Key::MaglevSize, 2, max, &format!("a prime from 2 to {max}, like 65537"))?
            .map(|n| n as usize);
        let tunnel = self.tunnel_options()?;
        let check = self.named(
            Key::HealthCheck,
            |v| HealthCheckKind::ALL.into_iter().find(|k| k.name() == v),
            "tcp, http, https, udp, icmp, script, dns or none",
        )?;
        let on_failure = self.named(
            Key::OnFailure,
            |v| OnFailure::ALL.into_iter().find(|k| k.name() == v),
            "drain or remove",
        )?;
        let count = "a count of probes from 1 to 4294967295";
        let health = HealthOptions {
            check,
            interval: self.seconds(Key::HealthInterval)?,
            timeout: self.seconds(Key::HealthTimeout)?,
            rise: self.number(Key::HealthRise, 1, u64::from(u32::MAX), count)?.map(|n| n as u32),
            fall: self.number(Key::HealthFall, 1, u64::from(u32::MAX), count)?.map(|n| n as u32),
            http_path: self.named(Key::HealthPath, |v| Some(v.to_string()), "a path")?,
            http_status: self
                .number(Key::HealthStatus, 100, 599, "an HTTP status from 100 to 599")?
                .map(|n| n as u16),
            on_failure,
            udp_payload: self.named(
                Key::HealthUdpPayload,
                decode_hex,
                "hex bytes, or - for none",
            )?,
            passive_fall: self
                .number(Key::HealthPassiveFall, 0, u64::from(u32::MAX), "a count (0: off)")?
                .map(|n| n as u32),
            sorry_server: self.named(
                Key::SorryServer,
                |v| match v {
                    "none" => Some(None),
                    v => parse_endpoint(v, None).map(Some),
                },
                "ADDR:PORT ([ADDR]:PORT for IPv6), or none",
            )?,
            via_vip: self.named(Key::HealthViaVip, parse_yes_no, "yes or no")?,
            script: self.named(
                Key::HealthScript,
                |v| {
                    let argv = decode_hex(v)?;
                    Some(if argv.is_empty() {
                        Vec::new()
                    } else {
                        argv.split('\0').map(String::from).collect()
                    })
                },
                "the command's words joined by NUL bytes, in hex",
            )?,
            dns_name: self.named(
                Key::HealthDnsName,
                |v| dns_name_problem(v).is_none().then(|| v.to_string()),
                "a domain name, like example.com or . (the root)",
            )?,
            dns_type: self.named(
                Key::HealthDnsType,
                |v| DNS_TYPES.iter().find(|(name, _)| name.eq_ignore_ascii_case(v)).map(|t| t.1),
                "a DNS type: A, NS, CNAME, SOA, PTR, MX, TXT, AAAA or SRV",
            )?,
            dns_expect: self.named(
                Key::HealthDnsExpect,
                |v| match v {
                    "none" => Some(None),
                    v => v.parse::<IpAddr>().ok().map(Some),
                },
                "an address the answer must hold, or none",
            )?,
            tls_server_name: self.named(
                Key::HealthTlsName,
                |v| match v {
                    "none" => Some(None),
                    v => Some(Some(v.to_string())),
                },
                "a DNS name, or none",
            )?,
            tls_verify: self.named(Key::HealthTlsVerify, parse_yes_no, "yes or no")?,
            tls_ca_file: self.named(
                Key::HealthTlsCaFile,
                |v| v.starts_with('/').then(|| v.to_string()),
                "an absolute path",
            )?,
        };
        let persistent = match self.take(Key::Persistent) {
            None => None,
            Some(Given { value: None, .. }) => Some(Persistence::DEFAULT_TIMEOUT.as_secs()),
            Some(Given { name, value: Some(value), .. }) => {
                let max = Persistence::MAX_TIMEOUT_SECS;
                Some(value.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    usage(format!(
                        "{name} {value}: expected a timeout in seconds from 1 to {max} (0: off)"
                    ))
                })?)
            }
        };
        let netmask = self.named(
            Key::Netmask,
            |v| match netmask_prefix(v) {
                Some(prefix_len) => Some(Netmask { prefix_len, dotted: true }),
                None => v
                    .parse::<u8>()
                    .ok()
                    .filter(|n| (1..=128).contains(n))
                    .map(|prefix_len| Netmask { prefix_len, dotted: false }),
            },
            "a netmask like 255.255.255.0, or a prefix length (IPv6: 1 to 128)",
        )?;
        Ok(ServiceOptions {
            scheduler,
            forward,
            local_addrs,
            maglev_table_size,
            health,
            persistent,
            netmask,
            tunnel,
        })
    }

    /// `--tunnel-encap`, `--tunnel-gue-port`, `--tunnel-source`, `--tunnel-mss-clamp`.
    fn tunnel_options(&mut self) -> Result<TunnelOptions, CtlError> {
        let gue = self.named(
            Key::TunnelEncap,
            |v| match v {
                "ipip" => Some(false),
                "gue" => Some(true),
                _ => None,
            },
            "ipip or gue",
        )?;
        let gue_port = self
            .number(Key::TunnelGuePort, 1, 65535, "a UDP port from 1 to 65535")?
            .map(|n| n as u16);
        let source_expected = format!("{TUNNEL_SOURCE_EXPECTED}; or none");
        let source = self.named(
            Key::TunnelSourcePrefix,
            |v| if v == "none" { Some(None) } else { parse_tunnel_source(v).map(Some) },
            &source_expected,
        )?;
        let mss_clamp = self.named(
            Key::TunnelMssClamp,
            |v| match v {
                "none" => Some(None),
                _ => v.parse::<u16>().ok().filter(|m| (536..=9176).contains(m)).map(Some),
            },
            "an MSS from 536 to 9176 bytes, or none",
        )?;
        Ok(TunnelOptions { gue, gue_port, source, mss_clamp })
    }
}

/// Bytes as a `-hex` option's value: pairs of hex digits, `-` for none ([`decode_hex`]).
fn hex_arg(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".to_string();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `yes|no` option's value.
const fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// A `yes|no` option's value read back.
fn parse_yes_no(value: &str) -> Option<bool> {
    match value {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// An `X|none` option's value.
fn or_none<T: fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_string(), |value| value.to_string())
}

/// `--health-udp-payload-hex`: pairs of hex digits as text (`-`: empty).
fn decode_hex(text: &str) -> Option<String> {
    if text == "-" {
        return Some(String::new());
    }
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `ADDR:PORT` as ipvsadm writes it: IPv4 `10.1.1.10:80`, IPv6 in brackets
/// `[2001:db8::10]:80`; with a `default_port`, also the address alone (`10.1.1.11`,
/// `[2001:db8::11]`). An IPv6 address without brackets is refused: in `2001:db8::10:80` the
/// port cannot be told from the address. No scope (`%eth0`): a VIP or real server is no
/// link-local address.
fn parse_endpoint(text: &str, default_port: Option<u16>) -> Option<SocketAddr> {
    let (ip, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            let ip = IpAddr::V6(Ipv6Addr::from_str(ip).ok()?);
            match after.strip_prefix(':') {
                Some(port) => (ip, parse_port(port)?),
                None if after.is_empty() => (ip, default_port?),
                None => return None,
            }
        }
        None => match text.split_once(':') {
            Some((ip, port)) => (IpAddr::V4(Ipv4Addr::from_str(ip).ok()?), parse_port(port)?),
            None => (IpAddr::V4(Ipv4Addr::from_str(text).ok()?), default_port?),
        },
    };
    Some(SocketAddr::new(ip, port))
}

fn parse_port(text: &str) -> Option<u16> {
    Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))?
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
}

/// Seconds written as digits with up to nine decimals, exactly; more than zero.
fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    let secs = whole.parse::<u64>().ok()?;
    let nanos =
        if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse::<u32>().ok()? };
    Some(Duration::new(secs, nanos)).filter(|d| !d.is_zero())
}

/// Parses the text `-R` reads: one command a line, as [`save`] writes them; blank lines are
/// skipped, and so is everything from a `#` on, as ipvsadm's `-R` does, except that a line
/// starting with `# xlb:` is read as the command after it (what [`save`] writes for xlb's
/// own options: ipvsadm skips it, xlb applies it). A leading `ipvsadm` word is skipped.
/// Only commands that change the config may appear. An error names the line.
pub fn parse_restore(text: &str) -> Result<Vec<Command>, CtlError> {
    Ok(parse_restore_lines(text)?.into_iter().map(|line| line.command).collect())
}

/// One command of a `-R` text and where it stood.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreLine {
    /// The line number, from 1.
    pub number: usize,
    /// The line as written (trimmed).
    pub text: String,
    /// The command.
    pub command: Command,
}

impl RestoreLine {
    /// `line 4 (-a -t 10.1.1.10:80 -r 10.1.1.11)`, as refusals name it.
    fn name(&self) -> String {
        format!("line {} ({})", self.number, self.text)
    }
}

/// The prefix of the lines [`save`] writes for xlb's own options.
pub const XLB_LINE: &str = "# xlb:";

/// [`parse_restore`], keeping each command's line for messages.
pub fn parse_restore_lines(text: &str) -> Result<Vec<RestoreLine>, CtlError> {
    let mut commands = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        let body = match line.strip_prefix(XLB_LINE) {
            Some(xlb) => xlb,
            None => line.split('#').next().unwrap_or_default(),
        };
        if body.trim().is_empty() {
            continue;
        }
        let mut words: Vec<String> = body.split_whitespace().map(str::to_string).collect();
        if words.first().is_some_and(|w| w == "ipvsadm" || w.ends_with("/ipvsadm")) {
            words.remove(0);
        }
        let at_line = |error| CtlError::Restore {
            command: format!("line {} ({line})", index + 1),
            index: None,
            error: Box::new(error),
        };
        let command = parse(&words).map_err(at_line)?;
        if !command.is_change() || matches!(command, Command::Restore(_)) {
            return Err(at_line(usage(format!(
                "{} does not belong in a restore: only commands that change services do",
                words.first().map_or("", String::as_str)
            ))));
        }
        commands.push(RestoreLine { number: index + 1, text: line.to_string(), command });
    }
    Ok(commands)
}

// Applying.

/// Applies `command` to `config`: the new config, checked as a config file is, or an error
/// naming what is wrong. `config` itself is never changed. Commands that change nothing
/// (`-L`, `-S`, `-Z`, `-h`) return an equal config.
pub fn apply(config: &Config, command: &Command) -> Result<Config, CtlError> {
    let mut next = config.clone();
    change(&mut next, command)?;
    check(&next).map_err(|error| match command {
        Command::Restore(_) => {
            CtlError::Restore { command: "-R".into(), index: None, error: Box::new(error) }
        }
        _ => error,
    })?;
    Ok(next)
}

/// Checks a config with the config file's rules, naming services and real servers.
fn check(config: &Config) -> Result<(), CtlError> {
    config.validate().map_err(|error| match error {
        ConfigError::Invalid { key, value, expected, .. } => {
            CtlError::Invalid { what: describe_key(config, &key), value, expected }
        }
        ConfigError::Missing { key, expected, .. } => {
            CtlError::Invalid { what: describe_key(config, &key), value: "(none)".into(), expected }
        }
        other => CtlError::Invalid {
            what: "config".into(),
            value: String::new(),
            expected: other.to_string(),
        },
    })
}

/// `service[1].backend[0].port` as `service 10.1.1.10:80/tcp real server 10.1.1.11:80 port`.
fn describe_key(config: &Config, key: &str) -> String {
    let index = |text: &str| -> Option<(usize, String)> {
        let (number, rest) = text.split_once(']')?;
        Some((number.parse().ok()?, rest.to_string()))
    };
    let Some((s, rest)) = key.strip_prefix("service[").and_then(index) else {
        return key.to_string();
    };
    let Some(service) = config.services.get(s) else { return key.to_string() };
    let mut what = format!("service {}", ServiceId::of(service));
    let mut rest = rest;
    if let Some((b, after)) = rest.strip_prefix(".backend[").and_then(index)
        && let Some(backend) = service.backends.get(b)
    {
        what.push_str(&format!(" real server {}", endpoint(backend.addr, backend.port)));
        rest = after;
    }
    if let Some(setting) = rest.strip_prefix('.') {
        what.push(' ');
        what.push_str(setting);
    }
    what
}

/// Makes the change without the config file's value checks (those run once, after).
fn change(config: &mut Config, command: &Command) -> Result<(), CtlError> {
    match command {
        Command::AddService { service, options } => {
            if service.find(config).is_some() {
                return Err(CtlError::ServiceExists(*service));
            }
            let mut new = ServiceConfig {
                vip: service.vip,
                port: service.port,
                proto: service.proto,
                scheduler: SchedulerKind::Wlc,
                forward: ForwardMode::Dr,
                local_addrs: Vec::new(),
                maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
                health: HealthConfig::for_proto(service.proto),
                backends: Vec::new(),
                persistence: None,
                tunnel: None,
            };
            edit_service(&mut new, options, true)?;
            config.services.push(new);
        }
        Command::EditService { service, options } => {
            let at = service.find(config).ok_or(CtlError::NoSuchService(*service))?;
            edit_service(&mut config.services[at], options, false)?;
        }
        Command::DeleteService { service } => {
            let at = service.find(config).ok_or(CtlError::NoSuchService(*service))?;
            config.services.remove(at);
        }
        Command::AddServer { service, server, forward, weight } => {
            let at = service.find(config).ok_or(CtlError::NoSuchService(*service))?;
            let target = &mut config.services[at];
            if backend_at(target, server).is_some() {
                return Err(CtlError::ServerExists { service: *service, server: *server });
            }
            if let Some(asked) = *forward
                && asked != target.forward
            {
                if !target.backends.is_empty() {
                    return Err(mismatch(*service, *server, target.forward, asked));
                }
                set_forward(target, *service, asked, &[])?;
            }
            target.backends.push(crate::control::config::BackendConfig {
                addr: server.ip(),
                port: server.port(),
                weight: weight.unwrap_or(1),
                down: false,
            });
        }
        Command::EditServer { service, server, forward, weight } => {
            let at = service.find(config).ok_or(CtlError::NoSuchService(*service))?;
            let target = &mut config.services[at];
            let backend = backend_at(target, server)
                .ok_or(CtlError::NoSuchServer { service: *service, server: *server })?;
            if let Some(asked) = *forward
                && asked != target.forward
            {
                return Err(mismatch(*service, *server, target.forward, asked));
            }
            if let Some(weight) = weight {
                target.backends[backend].weight = *weight;
            }
        }
        Command::DeleteServer { service, server } => {
            let at = service.find(config).ok_or(CtlError::NoSuchService(*service))?;
            let target = &mut config.services[at];
            let backend = backend_at(target, server)
                .ok_or(CtlError::NoSuchServer { service: *service, server: *server })?;
            target.backends.remove(backend);
        }
        Command::AddLocalAddrs { service, addrs } => {
            let at = service.find(config).ok_or(CtlError::NoSuchService(*service))?;
            let target = &mut config.services[at];
            let refuse = |message: String| CtlError::LocalAddrs { service: *service, message };
            if target.forward != ForwardMode::FullNat {
                return Err(refuse(format!(
                    "it forwards by {}, and local addresses are FullNAT's source pool (-E {} \
                     -b -z LIP makes it FullNAT)",
                    target.forward,
                    service.arg(),
                )));
            }
            for addr in addrs {
                if target.local_addrs.contains(addr) {
                    return Err(refuse(format!("local address {addr} is already in its pool")));
                }
                target.local_addrs.push(*addr);
            }
        }
        Command::DeleteLocalAddrs { service, addrs } => {
            let at = service.find(config).ok_or(CtlError::NoSuchService(*service))?;
            let target = &mut config.services[at];
            let refuse = |message: String| CtlError::LocalAddrs { service: *service, message };
            for addr in addrs {
                let position = target.local_addrs.iter().position(|a| a == addr);
                let position = position
                    .ok_or_else(|| refuse(format!("local address {addr} is not in its pool")))?;
                target.local_addrs.remove(position);
            }
            if target.local_addrs.is_empty() && target.forward == ForwardMode::FullNat {
                return Err(refuse(
                    "that would empty its local address pool, and FullNAT needs one address at \
                     least (add another with -P first)"
                        .into(),
                ));
            }
        }
        Command::Restore(commands) => {
            for (index, command) in commands.iter().enumerate() {
                change(config, command).map_err(|error| CtlError::Restore {
                    command: command.to_string(),
                    index: Some(index),
                    error: Box::new(error),
                })?;
            }
        }
        Command::Clear => config.services.clear(),
        Command::List(_)
        | Command::Save
        | Command::Zero { .. }
        | Command::Help
        | Command::Fleet(_) => {}
    }
    Ok(())
}

fn backend_at(service: &ServiceConfig, server: &SocketAddr) -> Option<usize> {
    service.backends.iter().position(|b| b.addr == server.ip() && b.port == server.port())
}

fn mismatch(
    service: ServiceId,
    server: SocketAddr,
    has: ForwardMode,
    asked: ForwardMode,
) -> CtlError {
    CtlError::ForwardMismatch {
        service,
        server,
        has,
        asked,
        hint: "give the service's flag, or none; -E -g|-m|-b|-i changes the service's method; \
               real servers of another method need a service of their own, on another VIP \
               or port",
    }
}

/// Sets a service's forwarding method; FullNAT takes `local_addrs` (or keeps its pool),
/// the others drop the pool.
fn set_forward(
    service: &mut ServiceConfig,
    id: ServiceId,
    forward: ForwardMode,
    local_addrs: &[IpAddr],
) -> Result<(), CtlError> {
    match forward {
        ForwardMode::FullNat => {
            if !local_addrs.is_empty() {
                service.local_addrs = local_addrs.to_vec();
            }
            if service.local_addrs.is_empty() {
                return Err(CtlError::LocalAddrs {
                    service: id,
                    message: format!(
                        "FullNAT needs local addresses, its source pool: -E {} -b -z LIP \
                         makes the service FullNAT with one",
                        id.arg(),
                    ),
                });
            }
        }
        ForwardMode::Dr | ForwardMode::Nat | ForwardMode::Tunnel => {
            if !local_addrs.is_empty() {
                return Err(CtlError::LocalAddrs {
                    service: id,
                    message: format!(
                        "local addresses (-z) are FullNAT's source pool, and this service \
                         forwards by {forward}"
                    ),
                });
            }
            service.local_addrs.clear();
        }
    }
    service.forward = forward;
    // A tunnel service keeps its settings; one that becomes tunnel starts from IPIP.
    service.tunnel = match forward {
        ForwardMode::Tunnel => Some(service.tunnel.unwrap_or_default()),
        _ => None,
    };
    Ok(())
}

/// Applies `--tunnel-*` to a tunnel service (after `-i`, if given, made it one).
fn set_tunnel(
    service: &mut ServiceConfig,
    id: ServiceId,
    options: &TunnelOptions,
) -> Result<(), CtlError> {
    if *options == TunnelOptions::default() {
        return Ok(());
    }
    let invalid = |option: &str, value: String, expected: String| CtlError::Invalid {
        what: format!("service {id}: {option}"),
        value,
        expected,
    };
    let (proto, forward) = (service.proto, service.forward);
    let Some(tunnel) = service.tunnel.as_mut() else {
        return Err(invalid(
            "--tunnel-*",
            "given".into(),
            format!(
                "no tunnel settings: the service forwards by {forward} (-i makes it a tunnel service)"
            ),
        ));
    };
    let port = match tunnel.encap {
        Encap::Gue { port } => port,
        Encap::Ipip => Encap::GUE_PORT,
    };
    let gue = options.gue.unwrap_or(matches!(tunnel.encap, Encap::Gue { .. }));
    tunnel.encap = match (gue, options.gue_port) {
        (false, Some(asked)) => {
            return Err(invalid(
                "--tunnel-gue-port",
                asked.to_string(),
                "no GUE port: the service wraps in IPIP (--tunnel-encap gue for GUE)".into(),
            ));
        }
        (false, None) => Encap::Ipip,
        (true, asked) => Encap::Gue { port: asked.unwrap_or(port) },
    };
    if let Some(source) = options.source {
        tunnel.source = source;
    }
    if let Some(mss) = options.mss_clamp {
        if mss.is_some() && proto != Proto::Tcp {
            return Err(invalid(
                "--tunnel-mss-clamp",
                or_none(mss),
                "none: MSS clamping is for TCP services".into(),
            ));
        }
        tunnel.mss_clamp = mss;
    }
    Ok(())
}

fn edit_service(
    service: &mut ServiceConfig,
    options: &ServiceOptions,
    adding: bool,
) -> Result<(), CtlError> {
    let id = ServiceId::of(service);
    if let Some(scheduler) = options.scheduler {
        service.scheduler = scheduler;
    }
    match options.forward {
        Some(forward) => set_forward(service, id, forward, &options.local_addrs)?,
        None if !options.local_addrs.is_empty() => {
            let forward = service.forward;
            set_forward(service, id, forward, &options.local_addrs)?;
        }
        None => {}
    }
    if let Some(size) = options.maglev_table_size {
        service.maglev_table_size = size;
    }
    set_persistence(service, id, options)?;
    set_tunnel(service, id, &options.tunnel)?;
    let h = &options.health;
    let health = &mut service.health;
    if let Some(check) = h.check {
        health.check = check;
        let defaults = HealthConfig::default();
        if !check.gets() {
            health.http_path = defaults.http_path;
            health.http_status = defaults.http_status;
        }
        if check != HealthCheckKind::Https {
            health.tls_server_name = defaults.tls_server_name;
            health.tls_verify = defaults.tls_verify;
            health.tls_ca_file = defaults.tls_ca_file.clone();
        }
        if check != HealthCheckKind::Script {
            health.script = defaults.script;
        }
        if check != HealthCheckKind::Dns {
            health.dns_name = defaults.dns_name;
            health.dns_type = defaults.dns_type;
            health.dns_expect = defaults.dns_expect;
        }
    }
    if let Some(interval) = h.interval {
        health.interval = interval;
        // As in a config file: a short interval shortens the default timeout with it.
        if adding && h.timeout.is_none() {
            health.timeout = health.timeout.min(interval);
        }
    }
    if let Some(timeout) = h.timeout {
        health.timeout = timeout;
    }
    if let Some(rise) = h.rise {
        health.rise = rise;
    }
    if let Some(fall) = h.fall {
        health.fall = fall;
    }
    if let Some(path) = &h.http_path {
        health.http_path = path.clone();
    }
    if let Some(status) = h.http_status {
        health.http_status = status;
    }
    if let Some(on_failure) = h.on_failure {
        health.on_failure = on_failure;
    }
    if let Some(payload) = &h.udp_payload {
        health.udp_payload = payload.clone();
    }
    if let Some(passive_fall) = h.passive_fall {
        health.passive_fall = passive_fall;
    }
    if let Some(sorry) = h.sorry_server {
        health.sorry_server = sorry;
    }
    if let Some(via_vip) = h.via_vip {
        health.via_vip = via_vip;
    }
    if let Some(script) = &h.script {
        health.script = script.clone();
    }
    if let Some(name) = &h.dns_name {
        health.dns_name = name.clone();
    }
    if let Some(dns_type) = h.dns_type {
        health.dns_type = dns_type;
    }
    if let Some(expect) = h.dns_expect {
        health.dns_expect = expect;
    }
    if let Some(name) = &h.tls_server_name {
        health.tls_server_name = name.clone();
    }
    if let Some(verify) = h.tls_verify {
        health.tls_verify = verify;
        // The CA file is only for verifying (a config file says so too).
        if !verify {
            health.tls_ca_file = HealthConfig::default().tls_ca_file;
        }
    }
    if let Some(file) = &h.tls_ca_file {
        health.tls_ca_file = file.clone();
    }
    if !health.check.gets() && (h.http_path.is_some() || h.http_status.is_some()) {
        return Err(CtlError::Invalid {
            what: format!("service {id} health check"),
            value: health.check.to_string(),
            expected: "http or https: --health-http-path and --health-http-status apply only \
                       to --health-check http|https"
                .into(),
        });
    }
    Ok(())
}

/// `-p` and `-M` on a service: `-p N` turns persistence on (or changes its timeout; `-p 0`
/// turns it off), `-M` sets the mask of a service that is (or becomes) persistent; the
/// family decides which masks fit.
fn set_persistence(
    service: &mut ServiceConfig,
    id: ServiceId,
    options: &ServiceOptions,
) -> Result<(), CtlError> {
    let full: u8 = if service.vip.is_ipv4() { 32 } else { 128 };
    match options.persistent {
        Some(0) => service.persistence = None,
        Some(secs) => {
            let prefix_len = service.persistence.map_or(full, |p| p.prefix_len);
            service.persistence =
                Some(Persistence { timeout: Duration::from_secs(secs), prefix_len });
        }
        None => {}
    }
    let Some(mask) = options.netmask else { return Ok(()) };
    let invalid = |expected: &str| CtlError::Invalid {
        what: format!("service {id} persistence mask (-M)"),
        value: if mask.dotted {
            prefix_netmask(mask.prefix_len)
        } else {
            mask.prefix_len.to_string()
        },
        expected: expected.into(),
    };
    let Some(persistence) = service.persistence.as_mut() else {
        return Err(invalid("a persistent service: give -p [TIMEOUT] with -M"));
    };
    if mask.prefix_len > full || (mask.dotted && service.vip.is_ipv6()) {
        return Err(invalid(if service.vip.is_ipv4() {
            "a netmask like 255.255.255.0 or a prefix length from 1 to 32"
        } else {
            "a prefix length from 1 to 128 (an IPv6 service's mask)"
        }));
    }
    persistence.prefix_len = mask.prefix_len;
    Ok(())
}

/// The dotted IPv4 netmask of a prefix length (24: `255.255.255.0`).
fn prefix_netmask(prefix_len: u8) -> String {
    let bits = u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0);
    Ipv4Addr::from_bits(bits).to_string()
}

/// ipvsadm's persistence options of a service, as `-S` writes them after `-s`: ` -p 300`,
/// and ` -M 255.255.255.0` (IPv6: ` -M 64`) unless the mask is the whole address.
fn persistence_args(vip: IpAddr, persistent: Option<u64>, netmask: Option<Netmask>) -> String {
    let mut out = String::new();
    if let Some(secs) = persistent {
        out.push_str(&format!(" -p {secs}"));
    }
    match netmask {
        Some(mask) if vip.is_ipv4() && mask.dotted => {
            out.push_str(&format!(" -M {}", prefix_netmask(mask.prefix_len)));
        }
        Some(mask) => out.push_str(&format!(" -M {}", mask.prefix_len)),
        None => {}
    }
    out
}

// Saving.

/// The commands that rebuild `config`'s services from none, in order.
pub fn save_commands(config: &Config) -> Vec<Command> {
    let mut commands = Vec::new();
    for service in &config.services {
        let id = ServiceId::of(service);
        let defaults = HealthConfig::for_proto(service.proto);
        let h = &service.health;
        let differs = |same: bool| !same;
        let health = HealthOptions {
            check: differs(h.check == defaults.check).then_some(h.check),
            interval: differs(h.interval == defaults.interval).then_some(h.interval),
            timeout: differs(h.timeout == defaults.timeout).then_some(h.timeout),
            rise: differs(h.rise == defaults.rise).then_some(h.rise),
            fall: differs(h.fall == defaults.fall).then_some(h.fall),
            http_path: differs(h.http_path == defaults.http_path).then(|| h.http_path.clone()),
            http_status: differs(h.http_status == defaults.http_status).then_some(h.http_status),
            on_failure: differs(h.on_failure == defaults.on_failure).then_some(h.on_failure),
            udp_payload: differs(h.udp_payload == defaults.udp_payload)
                .then(|| h.udp_payload.clone()),
            passive_fall: differs(h.passive_fall == defaults.passive_fall)
                .then_some(h.passive_fall),
            sorry_server: h.sorry_server.map(Some),
            via_vip: h.via_vip.then_some(true),
            script: (!h.script.is_empty()).then(|| h.script.clone()),
            dns_name: differs(h.dns_name == defaults.dns_name).then(|| h.dns_name.clone()),
            dns_type: differs(h.dns_type == defaults.dns_type).then_some(h.dns_type),
            dns_expect: h.dns_expect.map(Some),
            tls_server_name: h.tls_server_name.clone().map(Some),
            tls_verify: h.tls_verify.then_some(true),
            tls_ca_file: differs(h.tls_ca_file == defaults.tls_ca_file)
                .then(|| h.tls_ca_file.clone()),
        };
        let options = ServiceOptions {
            scheduler: Some(service.scheduler),
            forward: (service.forward != ForwardMode::Dr).then_some(service.forward),
            local_addrs: service.local_addrs.clone(),
            maglev_table_size: (service.maglev_table_size != DEFAULT_MAGLEV_TABLE_SIZE)
                .then_some(service.maglev_table_size),
            health,
            persistent: service.persistence.map(|p| p.timeout.as_secs()),
            netmask: service
                .persistence
                .filter(|p| p.prefix_len < if service.vip.is_ipv4() { 32 } else { 128 })
                .map(|p| Netmask { prefix_len: p.prefix_len, dotted: service.vip.is_ipv4() }),
            tunnel: service.tunnel.map(saved_tunnel).unwrap_or_default(),
        };
        let (options, xlb_only) = split_xlb_only(options);
        commands.push(Command::AddService { service: id, options });
        if xlb_only != ServiceOptions::default() {
            commands.push(Command::EditService { service: id, options: xlb_only });
        }
        for backend in &service.backends {
            commands.push(Command::AddServer {
                service: id,
                server: SocketAddr::new(backend.addr, backend.port),
                forward: Some(service.forward),
                weight: Some(backend.weight),
            });
        }
    }
    commands
}

/// A tunnel service's settings as `-S` writes them: only what differs from `-i`'s defaults
/// (IPIP, GUE port 6080, no source prefix, no MSS clamp).
fn saved_tunnel(tunnel: Tunnel) -> TunnelOptions {
    let gue_port = match tunnel.encap {
        Encap::Gue { port } => Some(port),
        Encap::Ipip => None,
    };
    TunnelOptions {
        gue: gue_port.map(|_| true),
        gue_port: gue_port.filter(|&port| port != Encap::GUE_PORT),
        source: tunnel.source.map(Some),
        mss_clamp: tunnel.mss_clamp.map(Some),
    }
}

/// The schedulers IPVS has: `-S` writes the others on the `# xlb:` line.
fn ipvs_has(scheduler: SchedulerKind) -> bool {
    use SchedulerKind::*;
    matches!(scheduler, Rr | Wrr | Lc | Wlc | Sed | Nq | Sh | Mh)
}

/// Splits `-A`'s options into what ipvsadm also takes and xlb's own (health checks, the
/// Maglev table size, a scheduler IPVS lacks), which [`save`] writes as a `# xlb: -E` line.
fn split_xlb_only(options: ServiceOptions) -> (ServiceOptions, ServiceOptions) {
    let scheduler = options.scheduler.filter(|s| !ipvs_has(*s));
    let xlb = ServiceOptions {
        scheduler,
        maglev_table_size: options.maglev_table_size,
        health: options.health.clone(),
        tunnel: options.tunnel,
        ..ServiceOptions::default()
    };
    let ipvs = ServiceOptions {
        scheduler: options.scheduler.filter(|s| ipvs_has(*s)),
        maglev_table_size: None,
        health: HealthOptions::default(),
        tunnel: TunnelOptions::default(),
        ..options
    };
    (ipvs, xlb)
}

/// `ipvsadm -S -n`: one line per service and real server, which `-R` restores exactly.
/// xlb's own options of a service follow its `-A` line as a `# xlb: -E ...` line, which
/// ipvsadm's `-R` skips as a comment and xlb's applies: the file restores on an LVS box too
/// (with ipvsadm's default scheduler, `wlc`, where xlb's is one IPVS lacks).
///
/// ```text
/// -A -t 10.1.1.10:80 -s rr
/// # xlb: -E -t 10.1.1.10:80 --health-check http
/// -a -t 10.1.1.10:80 -r 10.1.1.11:80 -g -w 1
/// ```
pub fn save(config: &Config) -> String {
    let line = |command: &Command| match command {
        // save_commands writes -E only for xlb's own options.
        Command::EditService { .. } => format!("{XLB_LINE} {command}\n"),
        _ => format!("{command}\n"),
    };
    save_commands(config).iter().map(line).collect()
}

// Listing.

/// One connection entry for `-L -n -c`, as conntrack knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnEntry {
    /// TCP or UDP.
    pub proto: Proto,
    /// Seconds until the entry expires.
    pub expire_secs: u64,
    /// IPVS's state name: `ESTABLISHED`, `SYN_RECV`, `FIN_WAIT`, `CLOSE`, ..., or `UDP`.
    pub state: String,
    /// The client (IPv6 shown `[2001:db8::20]:4000`, as ipvsadm shows it).
    pub client: SocketAddr,
    /// The virtual service's VIP:port.
    pub r#virtual: SocketAddr,
    /// The real server.
    pub destination: SocketAddr,
}

/// Persistence templates as IPVS lists them among the connections (`-L -n -c`): state
/// `NONE`, the masked client with port 0, the service's VIP:port, the real server
/// (`TCP 05:00  NONE        192.0.2.0:0        10.1.1.10:80       10.1.1.11:80`), IPv6's in
/// brackets as its connections. A template of a service no longer in `snapshot` is left out.
pub fn template_entries(
    snapshot: &Snapshot,
    templates: &[crate::persist::Entry],
) -> Vec<ConnEntry> {
    let mut entries = Vec::with_capacity(templates.len());
    for template in templates {
        let of = |s: &&crate::snapshot::Service| {
            s.persistence.is_some_and(|p| p.service == template.key.service)
        };
        let Some(service) = snapshot.services.iter().find(of) else { continue };
        // A template keys its addresses as integers of the service's family.
        let addr = |bits: u128| match service.vip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from_bits(bits as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from_bits(bits)),
        };
        entries.push(ConnEntry {
            proto: service.proto,
            // IPVS shows what is left, rounded down to the second, as for connections.
            expire_secs: template.remaining.as_secs(),
            state: "NONE".into(),
            client: SocketAddr::new(addr(template.key.client), 0),
            r#virtual: SocketAddr::new(service.vip, service.port),
            destination: SocketAddr::new(addr(template.chosen.addr), template.chosen.port),
        });
    }
    entries
}

/// What a listing shows besides the snapshot: every per-backend vector is indexed like
/// [`Snapshot::backends`] (a missing entry counts as zero). The daemon fills in what the
/// listing's format needs and may leave the rest empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListView {
    /// Which listing, and of which service.
    pub options: ListOptions,
    /// Connections, packets and bytes, summed over cores (`--stats`).
    pub counters: Vec<BackendCounters>,
    /// Active connections (TCP established), summed over cores (`-L -n`).
    pub active: Vec<u64>,
    /// Inactive connections (every other state, and UDP), summed over cores (`-L -n`).
    pub inactive: Vec<u64>,
    /// Rates per second (`--rate`).
    pub rates: Vec<BackendRates>,
    /// Connection entries (`-c`).
    pub connections: Vec<ConnEntry>,
    /// Every monitored (service, real server), sorted by service then real server
    /// ([`crate::control::health::HealthMonitor::status`]; `--health`).
    pub health: Vec<BackendStatus>,
}

/// The first line of a full `-L` listing (not of `-L -t|-u VIP:port`), as ipvsadm prints
/// it: the IPVS version that ipvsadm 1.31 on any current kernel shows, and the connection
/// table's size. Scripts and monitoring that match this line match xlb's.
fn title(snapshot: &Snapshot) -> String {
    format!("IP Virtual Server version 1.2.1 (size={})\n", snapshot.conntrack.capacity)
}

/// The services of a listing and, per service, its real servers, as indices into
/// `snapshot.services` and `snapshot.backends`: only `only` if given, sorted as ipvsadm's
/// `ipvs_cmp_services` and `ipvs_cmp_dests` sort them unless `nosort` (then in the config's
/// order). Services: IPv4 before IPv6, TCP before UDP, then address and port numerically;
/// real servers: address, then port. (ipvsadm compares addresses by a subtraction that
/// wraps when they are 2^31 or more apart; xlb compares them as numbers.)
pub fn listing_order(
    snapshot: &Snapshot,
    only: Option<usize>,
    nosort: bool,
) -> Vec<(usize, Vec<usize>)> {
    let mut services: Vec<usize> =
        (0..snapshot.services.len()).filter(|i| only.is_none_or(|only| only == *i)).collect();
    if !nosort {
        services.sort_by_key(|&i| {
            let s = &snapshot.services[i];
            (s.vip.is_ipv6(), proto_number(s.proto), s.vip, s.port)
        });
    }
    services
        .into_iter()
        .map(|i| {
            let mut backends: Vec<usize> = snapshot.services[i].backends.clone().collect();
            if !nosort {
                backends.sort_by_key(|&b| {
                    snapshot.backends.get(b).map(|e| (e.addr.is_ipv6(), e.addr, e.port))
                });
            }
            (i, backends)
        })
        .collect()
}

/// The IP protocol number, by which ipvsadm sorts services (TCP 6 before UDP 17).
fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// The listing `view.options` asks for, in ipvsadm's format.
///
/// ```text
/// IP Virtual Server version 1.2.1 (size=1000000)
/// Prot LocalAddress:Port Scheduler Flags
///   -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
/// TCP  10.1.1.10:80 rr
///   -> 10.1.1.11:80                 Route   1      0          0
/// ```
pub fn list(snapshot: &Snapshot, view: &ListView) -> String {
    let only = view.options.service.and_then(|s| snapshot.service_at_ip(s.vip, s.port, s.proto));
    if view.options.service.is_some() && only.is_none() {
        return String::new();
    }
    let order = listing_order(snapshot, only, view.options.nosort);
    let head = if view.options.service.is_none() { title(snapshot) } else { String::new() };
    match view.options.format {
        ListFormat::Table => {
            let mut out = head;
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
            for (index, backends) in &order {
                let service = &snapshot.services[*index];
                out.push_str(&service_line(
                    service.proto,
                    service.vip,
                    service.port,
                    service.scheduler.kind(),
                ));
                if let Some(p) = &service.persistence {
                    // ipvsadm's flags after the scheduler: ` persistent 300 mask 255.255.255.0`.
                    out.pop();
                    out.push_str(&list_persistence(service.vip, p));
                    out.push('\n');
                }
                for &backend in backends {
                    let Some(entry) = snapshot.backends.get(backend) else { continue };
                    let figure = |v: &[u64]| v.get(backend).copied().unwrap_or(0);
                    out.push_str(&server_line(
                        entry.addr,
                        entry.port,
                        service.forward,
                        entry.weight,
                        [figure(&view.active), figure(&view.inactive)],
                    ));
                }
            }
            out
        }
        ListFormat::Stats => {
            let rows: Vec<[u64; 5]> = view.counters.iter().map(stats::stats_row).collect();
            head + &stats::ipvsadm_table_in(snapshot, stats::STATS_TITLES, &rows, &order)
        }
        ListFormat::Rate => {
            let rows: Vec<[u64; 5]> = view.rates.iter().map(BackendRates::row).collect();
            head + &stats::ipvsadm_table_in(snapshot, stats::RATE_TITLES, &rows, &order)
        }
        ListFormat::Connections => {
            let mut out = String::from("IPVS connection entries\n");
            out.push_str(&format!(
                "pro expire {:<11} {:<18} {:<18} {}\n",
                "state", "source", "virtual", "destination"
            ));
            let wanted = |c: &ConnEntry| {
                view.options.service.is_none_or(|s| {
                    s.proto == c.proto && c.r#virtual.ip() == s.vip && c.r#virtual.port() == s.port
                })
            };
            for c in view.connections.iter().filter(|c| wanted(c)) {
                let expire = format!("{:02}:{:02}", c.expire_secs / 60, c.expire_secs % 60);
                out.push_str(&format!(
                    "{:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
                    c.proto.name().to_uppercase(),
                    expire,
                    c.state,
                    c.client.to_string(),
                    c.r#virtual.to_string(),
                    c.destination
                ));
            }
            out
        }
        ListFormat::Health => title(snapshot) + &health_table(&view.health, view.options.service),
    }
}

/// A persistent service's flags on its `-L -n` line, as ipvsadm's `print_service_entry`
/// writes them: ` persistent 300`, then ` mask 255.255.255.0` (IPv6: ` mask 64`) unless
/// the mask keeps the whole address.
fn list_persistence(vip: IpAddr, p: &crate::persist::ServicePersistence) -> String {
    let mut out = format!(" persistent {}", p.timeout.as_secs());
    match vip {
        IpAddr::V4(_) if p.prefix_len < 32 => {
            out.push_str(&format!(" mask {}", prefix_netmask(p.prefix_len)));
        }
        IpAddr::V6(_) if p.prefix_len < 128 => out.push_str(&format!(" mask {}", p.prefix_len)),
        _ => {}
    }
    out
}

/// `-L --health`: every checked real server of every service (or of `only`) under its
/// service, with its weight as configured, its [`BackendState`] and its probe counts. A
/// removed backend (`on_failure = "remove"`) is listed, as the snapshot's table cannot.
///
/// ```text
/// Prot LocalAddress:Port
///   -> RemoteAddress:Port           Weight State   ProbesOK   ProbesFailed
/// TCP  10.1.1.10:80
///   -> 10.1.1.11:80                 1      down    0          3
/// ```
fn health_table(statuses: &[BackendStatus], only: Option<ServiceId>) -> String {
    let mut out = String::from("Prot LocalAddress:Port\n");
    out.push_str("  -> RemoteAddress:Port           Weight State   ProbesOK   ProbesFailed\n");
    let mut current = None;
    for status in statuses {
        let (vip, port, proto) = status.service;
        if only.is_some_and(|s| (s.vip, s.port, s.proto) != status.service) {
            continue;
        }
        if current != Some(status.service) {
            current = Some(status.service);
            out.push_str(&format!("{}  {}\n", proto.name().to_uppercase(), endpoint(vip, port)));
        }
        let (addr, backend_port) = status.backend;
        out.push_str(&format!(
            "  -> {:<28} {:<6} {:<7} {:<10} {}\n",
            endpoint(addr, backend_port),
            status.weight,
            status.state().name(),
            status.counters.probes_ok,
            status.counters.probes_failed
        ));
    }
    out
}

/// A service's line of `-L -n`: `TCP  10.1.1.10:80 rr`, `TCP  [2001:db8::10]:80 wlc`
/// (ipvsadm's `print_service_entry`: IPv6 in brackets).
fn service_line(proto: Proto, vip: IpAddr, port: u16, scheduler: SchedulerKind) -> String {
    format!("{}  {} {scheduler}\n", proto.name().to_uppercase(), endpoint(vip, port))
}

/// A real server's line of `-L -n`: `  -> 10.1.1.11:80                 Route   1      0    ...`,
/// the address as `[2001:db8::11]:80` for IPv6, padded to ipvsadm's 28 columns.
fn server_line(
    addr: IpAddr,
    port: u16,
    forward: ForwardMode,
    weight: u32,
    [active, inactive]: [u64; 2],
) -> String {
    format!(
        "  -> {:<28} {:<7} {:<6} {:<10} {:<10}\n",
        endpoint(addr, port),
        forward.ipvsadm_name(),
        weight,
        active,
        inactive
    )
}

// Serving requests.

/// What the control loop should do with a request, decided from the running config alone.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer this; nothing changes (an error, `-S`, `-h`).
    Reply(Response),
    /// Build a snapshot of `config` and publish it to every worker, then answer `reply`. If
    /// the snapshot cannot be built, answer with why (status 1) and keep running as before.
    Apply {
        /// The new config, already checked as a config file is (boxed: a config is large).
        config: Box<Config>,
        /// The answer once it is installed.
        reply: Response,
    },
    /// Fill a [`ListView`] for these options from the running snapshot and answer with
    /// [`list`].
    List(ListOptions),
    /// Zero the counters of one service, or all, then answer with an empty success.
    Zero(Option<ServiceId>),
    /// Set the VRRP state (the config is in `vrrp` mode), or only show it (None); answer
    /// with the fleet mode and state.
    Fleet(Option<VrrpState>),
}

/// Decides what `request` asks of the running `config` (the daemon's split: this part is
/// pure, [`handle`] or the daemon does the rest).
pub fn decide(config: &Config, request: &Request) -> Outcome {
    let command = match parse(&request.args) {
        Ok(Command::Restore(_)) => {
            let text = request.stdin.as_deref().unwrap_or_default();
            match parse_restore_lines(text) {
                Ok(lines) => return decide_restore(config, lines),
                Err(error) => return Outcome::Reply(refusal(&error)),
            }
        }
        Ok(command) => command,
        Err(error) => return Outcome::Reply(refusal(&error)),
    };
    match command {
        Command::List(options) => match options.service {
            Some(service) if service.find(config).is_none() => {
                Outcome::Reply(refusal(&CtlError::NoSuchService(service)))
            }
            _ => Outcome::List(options),
        },
        Command::Zero { service } => match service {
            Some(service) if service.find(config).is_none() => {
                Outcome::Reply(refusal(&CtlError::NoSuchService(service)))
            }
            _ => Outcome::Zero(service),
        },
        Command::Save => Outcome::Reply(Response::success(save(config))),
        Command::Help => Outcome::Reply(Response::success(HELP.to_string())),
        Command::Fleet(Some(state)) if config.fleet != FleetMode::Vrrp => {
            let why = format!(
                "--{state} needs [fleet] mode = \"vrrp\" in the config (this box runs {})",
                crate::fleet::describe(config.fleet, VrrpState::Standby)
            );
            Outcome::Reply(refused(why, 1))
        }
        Command::Fleet(set) => Outcome::Fleet(set),
        command => match apply(config, &command) {
            Ok(next) => {
                Outcome::Apply { config: Box::new(next), reply: Response::success(String::new()) }
            }
            Err(error) => Outcome::Reply(refusal(&error)),
        },
    }
}

/// `-R`: all lines or none; a refusal names the line at fault and shows it.
fn decide_restore(config: &Config, lines: Vec<RestoreLine>) -> Outcome {
    let named: Vec<String> = lines.iter().map(RestoreLine::name).collect();
    let command = Command::Restore(lines.into_iter().map(|line| line.command).collect());
    match apply(config, &command) {
        Ok(next) => {
            Outcome::Apply { config: Box::new(next), reply: Response::success(String::new()) }
        }
        Err(CtlError::Restore { index: Some(index), error, .. }) if index < named.len() => {
            let command = named[index].clone();
            Outcome::Reply(refusal(&CtlError::Restore { command, index: Some(index), error }))
        }
        Err(error) => Outcome::Reply(refusal(&error)),
    }
}

/// The prefix of every refusal `xlb ctl` prints, from the daemon or its own checks.
pub const REFUSAL_PREFIX: &str = "xlb ctl: ";

/// A refusal: `xlb ctl: ` and what is wrong, on stderr, with the error's exit status.
fn refusal(error: &CtlError) -> Response {
    refused(error.to_string(), error.status())
}

fn refused(why: String, status: i32) -> Response {
    Response { stdout: String::new(), stderr: format!("{REFUSAL_PREFIX}{why}\n"), status }
}

/// What [`handle`] needs from the running daemon.
pub trait Daemon {
    /// The snapshot the workers run.
    fn snapshot(&self) -> &Snapshot;
    /// The figures a listing of the running snapshot needs.
    fn view(&mut self, options: &ListOptions) -> ListView;
    /// Builds a snapshot of `config` and publishes it to every worker; an error (why the
    /// snapshot could not be built) leaves everything as it was.
    fn install(&mut self, config: &Config) -> Result<(), String>;
    /// Zeroes the counters of one service, or all.
    fn zero(&mut self, service: Option<ServiceId>);
    /// Sets the VRRP state (when given) and says the fleet mode and state
    /// ([`crate::fleet::describe`]).
    fn fleet(&mut self, set: Option<VrrpState>) -> String;
}

/// The control side's state: the running config and the daemon that runs it.
#[derive(Debug)]
pub struct CtlState<D> {
    /// The config the workers run (changed only when [`Daemon::install`] succeeds).
    pub config: Config,
    /// The daemon.
    pub daemon: D,
}

/// Serves one request: [`decide`], then whatever the outcome asks of the daemon.
pub fn handle<D: Daemon>(state: &mut CtlState<D>, request: Request) -> Response {
    match decide(&state.config, &request) {
        Outcome::Reply(reply) => reply,
        Outcome::Apply { config, reply } => match state.daemon.install(&config) {
            Ok(()) => {
                state.config = *config;
                reply
            }
            Err(why) => refused(format!("refused, nothing changed: {why}"), 1),
        },
        Outcome::List(options) => {
            let view = state.daemon.view(&options);
            Response::success(list(state.daemon.snapshot(), &view))
        }
        Outcome::Zero(service) => {
            state.daemon.zero(service);
            Response::success(String::new())
        }
        Outcome::Fleet(set) => Response::success(format!("{}\n", state.daemon.fleet(set))),
    }
}

/// `xlb ctl -h`.
pub const HELP: &str = "\
xlb ctl: ipvsadm's commands for a running xlb (numeric addresses only)
Usage: xlb ctl [--socket PATH] COMMAND [OPTIONS]   (or through a symlink named ipvsadm)
Commands:
  -A|-E -t|-u VIP:port [-s SCHED] [-g|-m|-i|-b [-z LIP]...] add or edit a virtual service
  -D -t|-u VIP:port                                       delete a virtual service
  -a|-e -t|-u VIP:port -r RIP[:port] [-g|-m|-i|-b] [-w W] add or edit a real server
  -d -t|-u VIP:port -r RIP[:port]                         delete a real server
  -P|-Q -t|-u VIP:port -z LIP                             add or delete a FullNAT local address
  -L|-l [-n] [--stats|--rate|-c|--health] [--nosort] [-t|-u VIP:port]  list (sorted as
                                                          ipvsadm sorts; --health: weight
                                                          and health state apart)
  -S [-n]                                                 save, as commands -R restores
  -R                                                      restore from stdin (all or nothing)
  -C                                                      delete every virtual service
  -Z [-t|-u VIP:port]                                     zero counters
  -h                                                      this help
  --active | --standby                                    VRRP state ([fleet] mode = \"vrrp\")
  --fleet                                                 print the fleet mode and state
The control socket: --socket PATH anywhere on the line, else $XLB_SOCKET, else
  /run/xlb/xlb.sock.
Schedulers: IPVS's rr, wrr, lc, wlc (the default of -A), sed, nq, sh, mh (Maglev);
  xlb's maglev, random, wrandom, lt.
Forwarding is per service in xlb: -g DR, -m NAT, -i tunnel (IPIP or GUE), -b FullNAT
  (with local addresses, -z).
IPv6 in brackets, as ipvsadm: -t [2001:db8::10]:80 -r [2001:db8::11]:80.
-A|-E also take --maglev-table-size N, --health-check tcp|http|https|udp|icmp|script|dns|none,
  --health-interval S, --health-timeout S, --health-rise N, --health-fall N,
  --health-udp-payload-hex HEX, --health-passive-fall N, --sorry-server ADDR:PORT|none,
  --health-via-vip yes|no, --health-script-hex HEX (argv joined by NUL bytes),
  --health-dns-name NAME, --health-dns-type TYPE, --health-dns-expect ADDR|none,
  --health-tls-server-name NAME|none, --health-tls-verify yes|no, --health-tls-ca-file PATH,
  --health-http-path P, --health-http-status N, --on-failure drain|remove,
  --tunnel-encap ipip|gue, --tunnel-gue-port N, --tunnel-source PREFIX|none,
  --tunnel-mss-clamp N|none (tunnel services: -i);
  -S writes them on \"# xlb: -E ...\" lines, which ipvsadm -R skips and xlb ctl -R reads.
Persistence: -A|-E ... -p [SECONDS] (300 if none; -p 0 turns it off) [-M NETMASK|PREFIX].
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::tests::{arb_config, arb_dual_config};
    use proptest::prelude::*;

    const BASE: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.2/24"
        mac = "02:00:0a:01:01:02"

        [[service]]
        vip = "10.1.1.10"
        port = 80
        scheduler = "rr"
        [[service.backend]]
        addr = "10.1.1.11"
        [[service.backend]]
        addr = "10.1.1.12"
        weight = 2
    "#;

    fn base() -> Config {
        Config::parse(BASE, "base.toml").unwrap()
    }

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn cmd(line: &str) -> Command {
        parse(&args(line)).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn parse_error(line: &str) -> String {
        match parse(&args(line)) {
            Err(error) => {
                assert_eq!(error.status(), 2, "{line}: {error}");
                error.to_string()
            }
            Ok(command) => panic!("{line}: parsed as {command:?}"),
        }
    }

    fn run(config: &Config, line: &str) -> Result<Config, CtlError> {
        apply(config, &cmd(line))
    }

    fn web() -> ServiceId {
        ServiceId { proto: Proto::Tcp, vip: Ipv4Addr::new(10, 1, 1, 10).into(), port: 80 }
    }

    /// The keepalived kinds' settings go through -A|-E and come back from -S; changing the
    /// check drops the old kind's settings, and turning verification off its CA file.
    #[test]
    fn keepalived_check_settings_go_through_edit_and_save() {
        let config = run(
            &base(),
            "-E -t 10.1.1.10:80 --health-check https --health-http-status 204 \
             --health-tls-server-name www.example.com --health-tls-verify yes \
             --health-tls-ca-file /etc/xlb/ca.pem",
        )
        .unwrap();
        let h = &config.services[0].health;
        assert_eq!((h.check, h.http_status, h.tls_verify), (HealthCheckKind::Https, 204, true));
        assert_eq!(
            (h.tls_server_name.as_deref(), h.tls_ca_file.as_str()),
            (Some("www.example.com"), "/etc/xlb/ca.pem")
        );
        let saved = save(&config);
        assert!(saved.contains(" --health-tls-server-name www.example.com --health-tls-verify yes --health-tls-ca-file /etc/xlb/ca.pem"), "{saved}");
        let unverified = run(&config, "-E -t 10.1.1.10:80 --health-tls-verify no").unwrap();
        assert_eq!(unverified.services[0].health.tls_ca_file, HealthConfig::default().tls_ca_file);
        // script: the argv in hex, NUL between words ("/bin/sh", "-c", "exit 0").
        let hex: String = "/bin/sh\0-c\0exit 0".bytes().map(|b| format!("{b:02x}")).collect();
        let config = run(
            &config,
            &format!("-E -t 10.1.1.10:80 --health-check script --health-script-hex {hex}"),
        )
        .unwrap();
        let h = &config.services[0].health;
        assert_eq!(
            (h.check, h.script.as_slice()),
            (HealthCheckKind::Script, &["/bin/sh", "-c", "exit 0"].map(String::from)[..])
        );
        assert_eq!((h.tls_server_name.clone(), h.tls_verify, h.http_status), (None, false, 200));
        assert!(save(&config).contains(&format!("--health-script-hex {hex}")));
        let config = run(
            &config,
            "-E -t 10.1.1.10:80 --health-check dns --health-dns-name example.com \
             --health-dns-type a --health-dns-expect 192.0.2.1",
        )
        .unwrap();
        let h = &config.services[0].health;
        assert!(h.script.is_empty());
        assert_eq!(
            (h.dns_name.as_str(), h.dns_type, h.dns_expect),
            ("example.com", 1, Some("192.0.2.1".parse().unwrap()))
        );
        assert!(save(&config).contains(
            "--health-dns-name example.com --health-dns-type A --health-dns-expect 192.0.2.1"
        ));
        for (line, marker) in [
            ("-E -t 10.1.1.10:80 --health-dns-type AXFR", "a DNS type"),
            ("-E -t 10.1.1.10:80 --health-dns-name a..b", "a domain name"),
            ("-E -t 10.1.1.10:80 --health-script-hex 0", "in hex"),
            ("-E -t 10.1.1.10:80 --health-tls-verify maybe", "yes or no"),
            ("-E -t 10.1.1.10:80 --health-check ping", "icmp"),
        ] {
            let words: Vec<String> = line.split(' ').map(String::from).collect();
            let error = parse(&words).and_then(|c| apply(&config, &c)).unwrap_err().to_string();
            assert!(error.contains(marker), "{line}: {error}");
        }
    }

    #[test]
    fn parses_ipvsadm_short_long_bundled_and_attached_forms() {
        let add = Command::AddService {
            service: web(),
            options: ServiceOptions {
                scheduler: Some(SchedulerKind::Rr),
                ..ServiceOptions::default()
            },
        };
        assert_eq!(cmd("-A -t 10.1.1.10:80 -s rr"), add);
        assert_eq!(cmd("--add-service --tcp-service=10.1.1.10:80 --scheduler rr"), add);
        assert_eq!(cmd("-At 10.1.1.10:80 -srr"), add);
        match cmd("-A -u 10.1.1.10:53 -s mh") {
            Command::AddService { service, options } => {
                assert_eq!(service.proto, Proto::Udp);
                assert_eq!(options.scheduler, Some(SchedulerKind::Mh));
            }
            other => panic!("{other:?}"),
        }
        let server = Command::AddServer {
            service: web(),
            server: "10.1.1.11:80".parse().unwrap(),
            forward: Some(ForwardMode::Dr),
            weight: Some(3),
        };
        assert_eq!(cmd("-a -t 10.1.1.10:80 -r 10.1.1.11 -g -w 3"), server);
        assert_eq!(cmd("-a -t 10.1.1.10:80 -r 10.1.1.11:80 -g -w3"), server);
        assert_eq!(
            cmd(
                "--add-server --tcp-service 10.1.1.10:80 --real-server 10.1.1.11 --gatewaying --weight=3"
            ),
            server
        );
        assert!(matches!(
            cmd("-e -t 10.1.1.10:80 -r 10.1.1.11:8080 --masquerading"),
            Command::EditServer { forward: Some(ForwardMode::Nat), weight: None, .. }
        ));
        assert!(matches!(
            cmd("-a -t 10.1.1.10:80 -r 10.1.1.11:8080 --fullnat"),
            Command::AddServer { forward: Some(ForwardMode::FullNat), .. }
        ));
        let list = |format, service| Command::List(ListOptions { format, service, nosort: false });
        assert_eq!(cmd("-L -n"), list(ListFormat::Table, None));
        assert_eq!(cmd("-Ln"), list(ListFormat::Table, None));
        assert_eq!(cmd("-l"), list(ListFormat::Table, None));
        assert_eq!(cmd("--list --numeric --stats"), list(ListFormat::Stats, None));
        assert_eq!(cmd("-L -n --rate --exact"), list(ListFormat::Rate, None));
        assert_eq!(cmd("-Lnc"), list(ListFormat::Connections, None));
        assert_eq!(cmd("-L -n -t 10.1.1.10:80"), list(ListFormat::Table, Some(web())));
        assert_eq!(cmd("-S -n"), Command::Save);
        assert_eq!(cmd("--save"), Command::Save);
        assert_eq!(cmd("-R"), Command::Restore(Vec::new()));
        assert_eq!(cmd("--clear"), Command::Clear);
        assert_eq!(cmd("-Z"), Command::Zero { service: None });
        assert_eq!(cmd("-D -t 10.1.1.10:80"), Command::DeleteService { service: web() });
        assert_eq!(
            cmd("-d -t 10.1.1.10:80 -r 10.1.1.12"),
            Command::DeleteServer { service: web(), server: "10.1.1.12:80".parse().unwrap() }
        );
        let laddrs: Vec<IpAddr> = vec![[10, 1, 1, 200].into(), [10, 1, 1, 201].into()];
        assert_eq!(
            cmd("-P -t 10.1.1.10:80 -z 10.1.1.200,10.1.1.201 -F dpdk0"),
            Command::AddLocalAddrs { service: web(), addrs: laddrs.clone() }
        );
        assert_eq!(
            cmd("--del-laddr -t 10.1.1.10:80 --laddr 10.1.1.200 -z 10.1.1.201"),
            Command::DeleteLocalAddrs { service: web(), addrs: laddrs }
        );
        match cmd(
            "-E -t 10.1.1.10:80 --health-interval 0.25 --health-check http --health-http-path /hz --on-failure remove --maglev-table-size 251",
        ) {
            Command::EditService { options, .. } => {
                assert_eq!(options.health.interval, Some(Duration::from_millis(250)));
                assert_eq!(options.health.check, Some(HealthCheckKind::Http));
                assert_eq!(options.health.http_path.as_deref(), Some("/hz"));
                assert_eq!(options.health.on_failure, Some(OnFailure::Remove));
                assert_eq!(options.maglev_table_size, Some(251));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_errors_name_the_argument() {
        let cases = [
            ("-L --bogus", "--bogus"),
            ("-L -k", "-k"),
            ("-A -t 10.1.1.10 -s rr", "-t 10.1.1.10: expected VIP:port"),
            ("-A -t 10.1.1.300:80", "-t 10.1.1.300:80"),
            ("-A -t www.example.com:80", "numeric"),
            ("-A -t 10.1.1.10:80 -s dh", "unknown scheduler \"dh\""),
            (
                "-a -t 10.1.1.10:80 -r 10.1.1.11 -w 70000",
                "-w 70000: expected a weight from 0 to 65535",
            ),
            ("-a -t 10.1.1.10:80 -r 10.1.1.11 -w -1", "-w -1"),
            ("-A -t 10.1.1.10:80 --pe sip", "--pe is not supported"),
            ("-A -t 10.1.1.10:80 -p 3000000", "-p 3000000: expected a timeout in seconds"),
            ("-A -t 10.1.1.10:80 -p 300 -M 255.0.255.0", "-M 255.0.255.0: expected a netmask"),
            ("-A -f 1", "-f is not supported"),
            ("-A -L", "two commands given, -A and -L"),
            ("-t 10.1.1.10:80", "no command given"),
            ("-A -t 10.1.1.10:80 -r 10.1.1.11", "-r cannot be used with -A"),
            ("-a -t 10.1.1.10:80", "-a needs -r RIP[:port]"),
            ("-A -s rr", "-A needs -t|-u VIP:port"),
            ("-L --stats --rate", "--stats and --rate cannot be combined"),
            ("-A -t 10.1.1.10:80 -s rr -s wrr", "-s given twice"),
            ("-A -t 10.1.1.10:80 -u 10.1.1.10:80", "-t and -u both given"),
            ("-L -n extra", "unexpected argument \"extra\""),
            ("-A -t", "-t needs a value"),
            ("--list=yes", "--list takes no value"),
            ("-E -t 10.1.1.10:80 --health-interval 0", "--health-interval 0: expected seconds"),
            ("-E -t 10.1.1.10:80 --health-interval 1.", "--health-interval 1."),
            ("-P -t 10.1.1.10:80", "-P needs -z LIP"),
            ("-P -t 10.1.1.10:80 -z 10.1.1.256", "\"10.1.1.256\" is not an IPv4 address"),
            ("-S --stats", "--stats cannot be used with -S"),
        ];
        for (line, expected) in cases {
            let message = parse_error(line);
            assert!(message.contains(expected), "{line}: {message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn adds_edits_and_deletes_services_and_real_servers() {
        let config = base();
        let config = run(&config, "-A -u 10.1.1.10:53 -s sh").unwrap();
        let dns = &config.services[1];
        assert_eq!(
            (dns.proto, dns.scheduler, dns.forward),
            (Proto::Udp, SchedulerKind::Sh, ForwardMode::Dr)
        );
        assert_eq!(dns.health, HealthConfig::for_proto(Proto::Udp));
        assert_eq!(dns.maglev_table_size, DEFAULT_MAGLEV_TABLE_SIZE);
        let config = run(&config, "-a -u 10.1.1.10:53 -r 10.1.1.11").unwrap();
        assert_eq!(config.services[1].backends[0].port, 53);
        assert_eq!(config.services[1].backends[0].weight, 1);
        let config = run(&config, "-e -t 10.1.1.10:80 -r 10.1.1.12 -w 0").unwrap();
        assert_eq!(config.services[0].backends[1].weight, 0);
        let config = run(&config, "-E -t 10.1.1.10:80 -s wlc").unwrap();
        assert_eq!(config.services[0].scheduler, SchedulerKind::Wlc);
        assert_eq!(config.services[0].backends.len(), 2, "-E keeps the real servers");
        let config = run(&config, "-d -t 10.1.1.10:80 -r 10.1.1.11").unwrap();
        assert_eq!(config.services[0].backends.len(), 1);
        let config = run(&config, "-D -t 10.1.1.10:80").unwrap();
        assert_eq!(config.services.len(), 1);
        let config = run(&config, "-C").unwrap();
        assert!(config.services.is_empty());
        assert_eq!(config.interfaces, base().interfaces, "-C clears services only");
        // Commands that change nothing.
        assert_eq!(run(&base(), "-L -n").unwrap(), base());
    }

    #[test]
    fn refusals_name_the_service_and_leave_the_config_alone() {
        let config = base();
        let refused = |line: &str| {
            let error = run(&config, line).unwrap_err();
            assert_eq!(error.status(), 1, "{line}: {error}");
            error.to_string()
        };
        assert_eq!(
            refused("-A -t 10.1.1.10:80"),
            "service 10.1.1.10:80/tcp already exists (-E changes it)"
        );
        assert_eq!(
            refused("-E -t 10.1.1.10:81 -s rr"),
            "service 10.1.1.10:81/tcp does not exist (-A adds it)"
        );
        assert_eq!(
            refused("-D -u 10.1.1.10:80"),
            "service 10.1.1.10:80/udp does not exist (-A adds it)"
        );
        assert_eq!(
            refused("-a -t 10.1.1.10:80 -r 10.1.1.11"),
            "service 10.1.1.10:80/tcp already has real server 10.1.1.11:80 (-e changes it)"
        );
        assert_eq!(
            refused("-e -t 10.1.1.10:80 -r 10.1.1.13 -w 1"),
            "service 10.1.1.10:80/tcp has no real server 10.1.1.13:80 (-a adds it)"
        );
        let message = refused("-a -t 10.1.1.10:80 -r 10.1.1.13:8080 -m");
        assert!(
            message.starts_with(
                "service 10.1.1.10:80/tcp forwards by dr; xlb sets the forwarding method per service"
            ),
            "{message}"
        );
        // Values are checked as a config file checks them, and named by service and server.
        let message = refused("-a -t 10.1.1.10:80 -r 10.1.1.13:8080 -g");
        assert!(message.starts_with("service 10.1.1.10:80/tcp real server 10.1.1.13:8080 port = 8080: the service port 80"), "{message}");
        let message = refused("-a -t 10.1.1.10:80 -r 10.9.9.9");
        assert!(message.contains("directly connected subnet"), "{message}");
        let message = refused("-E -t 10.1.1.10:80 --maglev-table-size 100");
        assert!(
            message.starts_with("service 10.1.1.10:80/tcp maglev_table_size = 100: a prime"),
            "{message}"
        );
        let message = refused("-E -t 10.1.1.10:80 --health-interval 0.5 --health-timeout 1");
        assert!(message.contains("health.timeout = 1: at most the interval"), "{message}");
        let message = refused("-E -t 10.1.1.10:80 --health-http-path /x");
        assert!(message.contains("--health-check http"), "{message}");
        let message = refused("-A -t 224.0.0.1:80");
        assert!(message.starts_with("service 224.0.0.1:80/tcp vip = \"224.0.0.1\""), "{message}");
        assert_eq!(config, base());
    }

    /// Issue 10, item 8: `-A`, `-a` and `-P` that would make a VIP or a local address
    /// another host's are refused, naming both uses, and change nothing.
    #[test]
    fn addresses_that_are_another_hosts_are_refused() {
        let config = base();
        let refused = |line: &str| {
            let error = run(&config, line).unwrap_err();
            assert_eq!(error.status(), 1, "{line}: {error}");
            error.to_string()
        };
        let fullnat = run(&config, "-A -t 10.1.1.20:80 -b -z 10.1.1.200").unwrap();
        // (command, its part, the other use)
        let cases = [
            (
                &config,
                "-A -t 10.1.1.11:80",
                "service 10.1.1.11:80/tcp vip",
                "real server 10.1.1.11:80 (backend[0]) of service[0] (tcp 10.1.1.10:80)",
            ),
            (
                &config,
                "-A -u 10.1.1.12:53",
                "service 10.1.1.12:53/udp vip",
                "real server 10.1.1.12:80",
            ),
            (
                &config,
                "-A -t 10.1.1.2:80",
                "service 10.1.1.2:80/tcp vip",
                "interface[0] eth0's own address",
            ),
            (
                &config,
                "-A -t 10.1.1.255:80",
                "service 10.1.1.255:80/tcp vip",
                "the broadcast address",
            ),
            (&config, "-A -t 10.1.1.0:80", "service 10.1.1.0:80/tcp vip", "the network address"),
            (&config, "-A -t 127.0.0.1:80", "service 127.0.0.1:80/tcp vip", "a loopback address"),
            (
                &config,
                "-a -t 10.1.1.10:80 -r 10.1.1.10",
                "service 10.1.1.10:80/tcp vip",
                "real server 10.1.1.10:80 (backend[2]) of service[0]",
            ),
            (
                &config,
                "-A -t 10.1.1.21:80 -b -z 10.1.1.2",
                "service 10.1.1.21:80/tcp local_addrs[0]",
                "interface[0] eth0's own address",
            ),
            (
                &config,
                "-A -t 10.1.1.21:80 -b -z 10.1.1.10",
                "service 10.1.1.21:80/tcp local_addrs[0]",
                "the vip of service[0] (tcp 10.1.1.10:80)",
            ),
            (
                &fullnat,
                "-P -t 10.1.1.20:80 -z 10.1.1.11",
                "service 10.1.1.20:80/tcp local_addrs[1]",
                "real server 10.1.1.11:80",
            ),
            (
                &fullnat,
                "-a -t 10.1.1.20:80 -r 10.1.1.200:8080 -b",
                "service 10.1.1.20:80/tcp local_addrs[0]",
                "real server 10.1.1.200:8080 (backend[0]) of service[1]",
            ),
        ];
        for (config, line, what, other) in cases {
            let error = run(config, line).unwrap_err();
            assert_eq!(error.status(), 1, "{line}: {error}");
            let message = error.to_string();
            assert!(message.starts_with(what), "{line}: {message}");
            assert!(message.contains(&format!("it is also {other}")), "{line}: {message}");
        }
        assert!(refused("-A -t 0.0.0.0:80").contains("unicast"));
        assert!(refused("-A -t 255.255.255.255:80").contains("unicast"));
    }

    #[test]
    fn forwarding_is_per_service_and_fullnat_needs_local_addresses() {
        let config = run(&base(), "-A -t 10.1.1.20:80 -s rr").unwrap();
        // The first real server of an empty service sets its method.
        let nat = run(&config, "-a -t 10.1.1.20:80 -r 10.1.1.11:8080 -m").unwrap();
        assert_eq!(nat.services[1].forward, ForwardMode::Nat);
        let nat = run(&nat, "-a -t 10.1.1.20:80 -r 10.1.1.12:8080").unwrap();
        assert_eq!(nat.services[1].backends.len(), 2, "no flag: the service's method");
        assert!(run(&nat, "-a -t 10.1.1.20:80 -r 10.1.1.13:8080 -m").is_ok());
        let error = run(&nat, "-e -t 10.1.1.20:80 -r 10.1.1.11:8080 -g").unwrap_err();
        assert!(matches!(
            error,
            CtlError::ForwardMismatch { has: ForwardMode::Nat, asked: ForwardMode::Dr, .. }
        ));
        // FullNAT without a pool is refused, with the way to get one.
        let error = run(&config, "-a -t 10.1.1.20:80 -r 10.1.1.11:8080 -b").unwrap_err();
        assert!(error.to_string().contains("-E -t 10.1.1.20:80 -b -z LIP"), "{error}");
        let error = run(&config, "-P -t 10.1.1.20:80 -z 10.1.1.200").unwrap_err();
        assert!(error.to_string().contains("forwards by dr"), "{error}");
        let error = run(&config, "-E -t 10.1.1.20:80 -m -z 10.1.1.200").unwrap_err();
        assert!(error.to_string().contains("FullNAT's source pool"), "{error}");
        let full = run(&config, "-E -t 10.1.1.20:80 -b -z 10.1.1.200").unwrap();
        assert_eq!(full.services[1].forward, ForwardMode::FullNat);
        assert_eq!(full.services[1].local_addrs, [Ipv4Addr::new(10, 1, 1, 200)]);
        let full = run(&full, "-P -t 10.1.1.20:80 -z 10.1.1.201,10.1.1.202").unwrap();
        assert_eq!(full.services[1].local_addrs.len(), 3);
        assert!(run(&full, "-P -t 10.1.1.20:80 -z 10.1.1.201").is_err(), "duplicate");
        let full = run(&full, "-Q -t 10.1.1.20:80 -z 10.1.1.200,10.1.1.201").unwrap();
        let error = run(&full, "-Q -t 10.1.1.20:80 -z 10.1.1.202").unwrap_err();
        assert!(error.to_string().contains("FullNAT needs one address"), "{error}");
        let full = run(&full, "-a -t 10.1.1.20:80 -r 10.1.1.11:8080 -b").unwrap();
        // Leaving FullNAT drops the pool.
        let dr = run(&full, "-E -t 10.1.1.20:80 -m").unwrap();
        assert!(dr.services[1].local_addrs.is_empty());
        // A service's method may change while it has real servers, if they fit it.
        let error = run(&dr, "-E -t 10.1.1.20:80 -g").unwrap_err();
        assert!(error.to_string().contains("DR rewrites only the destination MAC"), "{error}");
    }

    #[test]
    fn restore_is_all_or_nothing_and_names_the_failing_line() {
        let text = "-A -t 10.1.1.20:80 -s wrr\n\n# a comment\nipvsadm -a -t 10.1.1.20:80 -r 10.1.1.11 -g -w 5\n";
        let commands = parse_restore(text).unwrap();
        assert_eq!(commands.len(), 2);
        let config = apply(&base(), &Command::Restore(commands)).unwrap();
        assert_eq!(config.services[1].backends[0].weight, 5);

        let bad = "-A -t 10.1.1.20:80 -s wrr\n-a -t 10.1.1.21:80 -r 10.1.1.11\n";
        let error = apply(&base(), &Command::Restore(parse_restore(bad).unwrap())).unwrap_err();
        assert_eq!(
            error.to_string(),
            "-a -t 10.1.1.21:80 -r 10.1.1.11:80: service 10.1.1.21:80/tcp does not exist (-A adds it)"
        );
        let error = parse_restore("-C\n-A -t 10.1.1.20:80 -s bogus\n").unwrap_err();
        assert!(
            error.to_string().starts_with("line 2 (-A -t 10.1.1.20:80 -s bogus): -s bogus"),
            "{error}"
        );
        assert_eq!(error.status(), 2);
        let error = parse_restore("-L -n\n").unwrap_err();
        assert!(error.to_string().contains("does not belong in a restore"), "{error}");
        // A value error found once all lines are applied also refuses the whole restore.
        let late = "-C\n-A -t 10.1.1.20:80 -s wrr\n-a -t 10.1.1.20:80 -r 10.1.1.11:81 -g\n";
        let error = apply(&base(), &Command::Restore(parse_restore(late).unwrap())).unwrap_err();
        assert!(error.to_string().contains("real server 10.1.1.11:81 port = 81"), "{error}");
    }

    #[test]
    fn save_writes_ipvsadm_lines() {
        let config = run(&base(), "-A -t 10.1.1.20:443 -s wlc -b -z 10.1.1.200 --health-check http --health-http-path /healthz").unwrap();
        let config = run(&config, "-a -t 10.1.1.20:443 -r 10.1.2.30:8443 -w 7").unwrap();
        assert_eq!(
            save(&config),
            "-A -t 10.1.1.10:80 -s rr\n\
             -a -t 10.1.1.10:80 -r 10.1.1.11:80 -g -w 1\n\
             -a -t 10.1.1.10:80 -r 10.1.1.12:80 -g -w 2\n\
             -A -t 10.1.1.20:443 -s wlc -b -z 10.1.1.200\n\
             # xlb: -E -t 10.1.1.20:443 --health-check http --health-http-path /healthz\n\
             -a -t 10.1.1.20:443 -r 10.1.2.30:8443 -b -w 7\n"
        );
    }

    // IPv6 services (issue 12): written, read, saved and restored as ipvsadm does.

    const BASE6: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.2/24"
        addr6 = "2001:db8:1::2/64"
        mac = "02:00:0a:01:01:02"
    "#;

    fn base6() -> Config {
        Config::parse(BASE6, "base6.toml").unwrap()
    }

    fn web6() -> ServiceId {
        ServiceId { proto: Proto::Tcp, vip: "2001:db8:1::10".parse().unwrap(), port: 80 }
    }

    #[test]
    fn parses_ipv6_services_and_real_servers_in_brackets() {
        let add = Command::AddService {
            service: web6(),
            options: ServiceOptions {
                scheduler: Some(SchedulerKind::Wlc),
                ..ServiceOptions::default()
            },
        };
        assert_eq!(cmd("-A -t [2001:db8:1::10]:80 -s wlc"), add);
        assert_eq!(cmd("--add-service --tcp-service=[2001:db8:1::10]:80 -s wlc"), add);
        assert_eq!(web6().to_string(), "[2001:db8:1::10]:80/tcp");
        let server = Command::AddServer {
            service: web6(),
            server: "[2001:db8:1::11]:80".parse().unwrap(),
            forward: Some(ForwardMode::Dr),
            weight: Some(3),
        };
        assert_eq!(cmd("-a -t [2001:db8:1::10]:80 -r [2001:db8:1::11]:80 -g -w 3"), server);
        // The port defaults to the service's, as for IPv4.
        assert_eq!(cmd("-a -t [2001:db8:1::10]:80 -r [2001:db8:1::11] -g -w 3"), server);
        assert_eq!(server.to_string(), "-a -t [2001:db8:1::10]:80 -r [2001:db8:1::11]:80 -g -w 3");
        let laddrs: Vec<IpAddr> =
            vec!["2001:db8:1::200".parse().unwrap(), "2001:db8:1::201".parse().unwrap()];
        let add_laddrs = Command::AddLocalAddrs { service: web6(), addrs: laddrs };
        assert_eq!(cmd("-P -t [2001:db8:1::10]:80 -z 2001:db8:1::200,2001:db8:1::201"), add_laddrs);
        assert_eq!(
            add_laddrs.to_string(),
            "-P -t [2001:db8:1::10]:80 -z 2001:db8:1::200 -z 2001:db8:1::201"
        );
        match cmd("-E -u [2001:db8:1::10]:53 --sorry-server [2001:db8:1::30]:53") {
            Command::EditService { service, options } => {
                assert_eq!((service.proto, service.port), (Proto::Udp, 53));
                let sorry = "[2001:db8:1::30]:53".parse().unwrap();
                assert_eq!(options.health.sorry_server, Some(Some(sorry)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bracketless_ipv6_and_missing_ports_are_refused() {
        let service = "expected VIP:port, numeric, like 10.1.1.10:80 or [2001:db8::10]:80";
        let server = "expected RIP[:port], numeric, like 10.1.1.11:80 or [2001:db8::11]:80";
        for (line, expected) in [
            ("-A -t 2001:db8:1::10:80", format!("-t 2001:db8:1::10:80: {service}")),
            ("-A -t 2001:db8:1::10", format!("-t 2001:db8:1::10: {service}")),
            ("-A -t [2001:db8:1::10]", format!("-t [2001:db8:1::10]: {service}")),
            ("-A -t [2001:db8:1::10]:", format!("-t [2001:db8:1::10]:: {service}")),
            ("-A -t [2001:db8:1::10]80", format!("-t [2001:db8:1::10]80: {service}")),
            ("-A -t [2001:db8:1::10:80", format!("-t [2001:db8:1::10:80: {service}")),
            ("-A -t [10.1.1.10]:80", format!("-t [10.1.1.10]:80: {service}")),
            ("-A -t [fe80::1%eth0]:80", format!("-t [fe80::1%eth0]:80: {service}")),
            ("-a -t [2001:db8:1::10]:80 -r 2001:db8:1::11", format!("-r 2001:db8:1::11: {server}")),
            (
                "-a -t [2001:db8:1::10]:80 -r [2001:db8:1::11]:0",
                format!("-r [2001:db8:1::11]:0: {server}"),
            ),
            (
                "-P -t [2001:db8:1::10]:80 -z [2001:db8:1::200",
                "-z [2001:db8:1::200: \"[2001:db8:1::200\" is not an IPv4 address, like \
                 10.1.1.200, nor an IPv6 address, like 2001:db8::200"
                    .to_string(),
            ),
        ] {
            assert_eq!(parse_error(line), expected, "{line}");
        }
        // In a restore file, the line is named.
        let error = parse_restore(
            "-A -t [2001:db8:1::10]:80 -s wlc\n-a -t 2001:db8:1::10:80 -r [2001:db8:1::11]\n",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "line 2 (-a -t 2001:db8:1::10:80 -r [2001:db8:1::11]): -t 2001:db8:1::10:80: \
                 {service}"
            )
        );
    }

    #[test]
    fn saves_and_restores_ipv6_services_as_ipvsadm_does() {
        let lines = [
            "-A -t [2001:db8:1::10]:80 -s wlc",
            "-a -t [2001:db8:1::10]:80 -r [2001:db8:1::11]:80 -g -w 1",
            "-a -t [2001:db8:1::10]:80 -r [2001:db8:1::12]:80 -g -w 2",
            "-A -u [2001:db8:1::10]:53 -s rr -b -z 2001:db8:1::200",
            "# xlb: -E -u [2001:db8:1::10]:53 --sorry-server [2001:db8:2::30]:5353",
            "-a -u [2001:db8:1::10]:53 -r [2001:db8:2::13]:5353 -b -w 1",
            "-A -t 10.1.1.10:80 -s rr",
            "-a -t 10.1.1.10:80 -r 10.1.1.11:80 -g -w 1",
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let config = apply(&base6(), &Command::Restore(parse_restore(&text).unwrap())).unwrap();
        let [dr, fullnat, four] = &config.services[..] else { panic!("three services") };
        assert_eq!(dr.vip, "2001:db8:1::10".parse::<IpAddr>().unwrap());
        assert_eq!(dr.backends[1].weight, 2);
        assert_eq!(fullnat.forward, ForwardMode::FullNat);
        assert_eq!(fullnat.local_addrs, ["2001:db8:1::200".parse::<IpAddr>().unwrap()]);
        assert_eq!(four.vip, IpAddr::from([10, 1, 1, 10]));
        // -S writes what was restored, line for line (golden text).
        assert_eq!(save(&config), text);
        // The IPv4 lines of a config are as before.
        assert_eq!(
            save(&base()),
            "-A -t 10.1.1.10:80 -s rr\n\
             -a -t 10.1.1.10:80 -r 10.1.1.11:80 -g -w 1\n\
             -a -t 10.1.1.10:80 -r 10.1.1.12:80 -g -w 2\n"
        );
        // -e, -d and -D find IPv6 services and real servers.
        let config = run(&config, "-e -t [2001:db8:1::10]:80 -r [2001:db8:1::12] -w 5").unwrap();
        assert_eq!(config.services[0].backends[1].weight, 5);
        let config = run(&config, "-d -t [2001:db8:1::10]:80 -r [2001:db8:1::12]:80").unwrap();
        assert_eq!(config.services[0].backends.len(), 1);
        let config = run(&config, "-D -u [2001:db8:1::10]:53").unwrap();
        assert_eq!(config.services.len(), 2);
        // What the daemon installs: the IPv6 service as the IPv4 one (the FullNAT one's
        // real server, off-link with no IPv6 gateway, was unreachable).
        let snapshot = Snapshot::build(&config, 1).expect("builds");
        assert_eq!(snapshot.services.len(), 2);
        assert_eq!(snapshot.backends.len(), 2);
    }

    #[test]
    fn tunnel_real_servers_are_added_with_i_saved_and_restored() {
        let config = run(&base(), "-A -t 10.1.1.10:443 -s rr").unwrap();
        let config = run(&config, "-a -t 10.1.1.10:443 -r 192.0.2.11 -i -w 2").unwrap();
        let tunnel = &config.services[1];
        assert_eq!(tunnel.forward, ForwardMode::Tunnel);
        assert_eq!(tunnel.tunnel, Some(crate::flow::Tunnel::default()), "IPIP by default");
        assert_eq!(tunnel.backends[0].addr, IpAddr::from([192, 0, 2, 11]));
        // The service's method: -g on it is a mismatch; -i on the DR service too.
        let error = run(&config, "-a -t 10.1.1.10:443 -r 192.0.2.12 -g").unwrap_err();
        assert!(error.to_string().contains("-g|-m|-b|-i"), "{error}");
        assert!(run(&config, "-a -t 10.1.1.10:80 -r 10.1.1.13 -i").is_err());
        let saved = save(&config);
        assert!(
            saved.ends_with(
                "-A -t 10.1.1.10:443 -s rr -i\n-a -t 10.1.1.10:443 -r 192.0.2.11:443 -i -w 2\n"
            ),
            "{saved}"
        );
        let empty = Config { services: Vec::new(), ..base() };
        let restored = apply(&empty, &Command::Restore(parse_restore(&saved).unwrap())).unwrap();
        assert_eq!(restored.services, config.services);
        assert_eq!(
            server_line(IpAddr::from([192, 0, 2, 11]), 443, ForwardMode::Tunnel, 2, [0, 0]),
            "  -> 192.0.2.11:443               Tunnel  2      0          0         \n"
        );
        // The config file's tunnel settings through ctl, saved on the `# xlb:` line and
        // restored exactly (a GUE service must not come back as IPIP).
        let gue = run(
            &config,
            "-E -t 10.1.1.10:443 --tunnel-encap gue --tunnel-gue-port 5555 --tunnel-source \
             10.9.0.0/24 --tunnel-mss-clamp 1400",
        )
        .unwrap();
        let wanted = crate::flow::Tunnel {
            encap: Encap::Gue { port: 5555 },
            source: parse_tunnel_source("10.9.0.0/24"),
            mss_clamp: Some(1400),
        };
        assert_eq!(gue.services[1].tunnel, Some(wanted));
        let saved = save(&gue);
        assert!(
            saved.contains(
                "# xlb: -E -t 10.1.1.10:443 --tunnel-encap gue --tunnel-gue-port 5555 \
                 --tunnel-source 10.9.0.0/24 --tunnel-mss-clamp 1400\n"
            ),
            "{saved}"
        );
        let restored = apply(&empty, &Command::Restore(parse_restore(&saved).unwrap())).unwrap();
        assert_eq!(restored.services, gue.services);
        // Back to IPIP with the defaults; each refusal names what is wrong.
        let ipip = run(
            &gue,
            "-E -t 10.1.1.10:443 --tunnel-encap ipip --tunnel-source none --tunnel-mss-clamp none",
        )
        .unwrap();
        assert_eq!(ipip.services[1].tunnel, Some(crate::flow::Tunnel::default()));
        for (command, expected) in [
            (
                "-E -t 10.1.1.10:80 --tunnel-encap gue",
                "no tunnel settings: the service forwards by",
            ),
            ("-E -t 10.1.1.10:443 --tunnel-gue-port 5555", "no GUE port"),
        ] {
            let error = run(&ipip, command).unwrap_err().to_string();
            assert!(error.contains(expected), "{command}: {error}");
        }
        for (command, expected) in [
            ("-E -t 10.1.1.10:443 --tunnel-encap udp", "--tunnel-encap udp: expected ipip or gue"),
            ("-E -t 10.1.1.10:443 --tunnel-source 10.9.0.1/24", "--tunnel-source 10.9.0.1/24"),
            ("-E -t 10.1.1.10:443 --tunnel-mss-clamp 100", "an MSS from 536 to 9176"),
        ] {
            let error = parse_error(command);
            assert!(error.contains(expected), "{command}: {error}");
        }
        // Leaving tunnel mode forgets the tunnel settings.
        let config = run(&config, "-d -t 10.1.1.10:443 -r 192.0.2.11:443").unwrap();
        let config = run(&config, "-E -t 10.1.1.10:443 -m").unwrap();
        assert_eq!(config.services[1].tunnel, None);
    }

    /// An IPv6 tunnel service through ctl (issue 12): `-i` on an IPv6 service, its settings
    /// (an IPv6 `--tunnel-source`), `-S`/`-R` round trip, `-L -n`; an IPv4 real server or
    /// source prefix on it (6in4) refused by name.
    #[test]
    fn ipv6_tunnel_services_are_added_with_i_saved_restored_and_listed() {
        // A gateway: tunnel real servers may be anywhere routed.
        let routed = BASE6.replace("mac =", "gateway6 = \"2001:db8:1::1\"\nmac =");
        let base = Config::parse(&routed, "routed6.toml").unwrap();
        let config = run(&base, "-A -t [2001:db8::10]:80 -s rr").unwrap();
        let config = run(&config, "-a -t [2001:db8::10]:80 -r [2001:db8::1]:80 -i").unwrap();
        let tunnel = config.services.last().unwrap();
        assert_eq!(tunnel.forward, ForwardMode::Tunnel);
        assert_eq!(tunnel.tunnel, Some(crate::flow::Tunnel::default()), "IPIP by default");
        let config = run(
            &config,
            "-E -t [2001:db8::10]:80 --tunnel-encap gue --tunnel-source 2001:db8:9::/64 \
             --tunnel-mss-clamp 1380",
        )
        .unwrap();
        let wanted = crate::flow::Tunnel {
            encap: Encap::Gue { port: Encap::GUE_PORT },
            source: parse_tunnel_source("2001:db8:9::/64"),
            mss_clamp: Some(1380),
        };
        assert_eq!(config.services.last().unwrap().tunnel, Some(wanted));
        let saved = save(&config);
        assert!(
            saved.ends_with(
                "-A -t [2001:db8::10]:80 -s rr -i\n\
                 # xlb: -E -t [2001:db8::10]:80 --tunnel-encap gue --tunnel-source \
                 2001:db8:9::/64 --tunnel-mss-clamp 1380\n\
                 -a -t [2001:db8::10]:80 -r [2001:db8::1]:80 -i -w 1\n"
            ),
            "{saved}"
        );
        let empty = Config { services: Vec::new(), ..base };
        let restored = apply(&empty, &Command::Restore(parse_restore(&saved).unwrap())).unwrap();
        assert_eq!(restored.services, config.services);
        assert_eq!(
            server_line("2001:db8::1".parse().unwrap(), 80, ForwardMode::Tunnel, 1, [0, 0]),
            "  -> [2001:db8::1]:80             Tunnel  1      0          0         \n"
        );
        let listed = list(&snapshot_of(&config), &view(ListFormat::Table));
        assert!(
            listed.contains("TCP  [2001:db8::10]:80 rr\n  -> [2001:db8::1]:80             Tunnel"),
            "{listed}"
        );
        let error = run(&config, "-a -t [2001:db8::10]:80 -r 192.0.2.11:80 -i").unwrap_err();
        assert!(error.to_string().contains("6in4"), "{error}");
        let error =
            run(&config, "-E -t [2001:db8::10]:80 --tunnel-source 10.9.0.0/24").unwrap_err();
        assert!(error.to_string().contains("an IPv6 prefix"), "{error}");
    }

    #[test]
    fn ipv6_refusals_name_the_service_and_real_server() {
        let config = run(&base6(), "-A -t [2001:db8:1::10]:80 -s wlc -m").unwrap();
        let error = run(&config, "-a -t [2001:db8:1::10]:80 -r 10.1.1.11:8080 -m").unwrap_err();
        assert_eq!(
            error.to_string(),
            "service [2001:db8:1::10]:80/tcp real server 10.1.1.11:8080 addr = \"10.1.1.11\": an \
             IPv6 address, as service tcp [2001:db8:1::10]:80 is IPv6: NAT64 (IPv6 clients to \
             IPv4 real servers) is not supported"
        );
        let error = run(&config, "-a -t [2001:db8:1::11]:80 -r [2001:db8:1::11]").unwrap_err();
        assert_eq!(
            error.to_string(),
            "service [2001:db8:1::11]:80/tcp does not exist (-A adds it)"
        );
        let error = run(&config, "-a -t 10.1.1.99:80 -r [2001:db8:1::11]").unwrap_err();
        assert_eq!(error.to_string(), "service 10.1.1.99:80/tcp does not exist (-A adds it)");
        let error = run(&config, "-E -t [2001:db8:1::10]:80 -g --health-via-vip yes").unwrap_err();
        assert!(error.to_string().contains("is IPv4 only (its policy routes are)"), "{error}");
    }

    #[test]
    fn lists_ipv6_entries_like_ipvsadm_l_n() {
        let vip = "2001:db8::10".parse().unwrap();
        assert_eq!(
            service_line(Proto::Tcp, vip, 80, SchedulerKind::Wlc),
            "TCP  [2001:db8::10]:80 wlc\n"
        );
        assert_eq!(
            server_line("2001:db8::1".parse().unwrap(), 80, ForwardMode::Dr, 1, [0, 0]),
            "  -> [2001:db8::1]:80             Route   1      0          0         \n"
        );
        // IPv4 as before.
        assert_eq!(
            server_line(IpAddr::from([10, 1, 1, 11]), 80, ForwardMode::Nat, 2, [3, 4]),
            "  -> 10.1.1.11:80                 Masq    2      3          4         \n"
        );
        // A snapshot without the service lists nothing.
        let snapshot = snapshot_of(&base());
        let mut v = view(ListFormat::Table);
        v.options.service = Some(web6());
        assert_eq!(list(&snapshot, &v), "");
    }

    /// `--active`, `--standby` and `--fleet`: parsed (alone), printed back, answered with the
    /// mode and state; a state change is refused unless the config is in `vrrp` mode, and
    /// never touches the config.
    #[test]
    fn fleet_verbs_set_and_show_the_vrrp_state() {
        for (line, command) in [
            ("--active", Command::Fleet(Some(VrrpState::Active))),
            ("--standby", Command::Fleet(Some(VrrpState::Standby))),
            ("--fleet", Command::Fleet(None)),
        ] {
            assert_eq!(cmd(line), command);
            assert_eq!(command.to_string(), line);
            assert!(!command.is_change());
        }
        assert!(parse(&args("--active -t 10.1.1.10:80")).is_err());
        assert!(parse(&args("--active --standby")).is_err());

        let daemon_of = |config: &Config| FakeDaemon {
            snapshot: snapshot_of(config),
            refuse: None,
            installed: 0,
            zeroed: vec![],
            vrrp: VrrpState::Standby,
        };
        let vrrp = Config { fleet: FleetMode::Vrrp, ..base() };
        let mut state = CtlState { config: vrrp.clone(), daemon: daemon_of(&vrrp) };
        let shown = handle(&mut state, request("--fleet", None));
        assert_eq!(shown.stdout, "fleet mode vrrp, state standby\n");
        let response = handle(&mut state, request("--active", None));
        assert_eq!(
            (response.status, response.stdout.as_str()),
            (0, "fleet mode vrrp, state active\n")
        );
        assert_eq!(state.daemon.vrrp, VrrpState::Active);
        assert_eq!(handle(&mut state, request("--standby", None)).status, 0);
        assert_eq!(state.daemon.vrrp, VrrpState::Standby);
        assert_eq!((state.daemon.installed, &state.config), (0, &vrrp), "no config change");

        let mut state = CtlState { config: base(), daemon: daemon_of(&base()) };
        let response = handle(&mut state, request("--active", None));
        assert_eq!(response.status, 1);
        assert!(response.stderr.contains("[fleet] mode = \"vrrp\""), "{}", response.stderr);
        assert!(response.stderr.contains("standalone"), "{}", response.stderr);
        assert_eq!(state.daemon.vrrp, VrrpState::Standby);
        let shown = handle(&mut state, request("--fleet", None));
        assert_eq!(shown.stdout, "fleet mode standalone\n");
    }

    #[test]
    fn the_running_daemon_takes_an_ipv6_service() {
        let daemon = FakeDaemon {
            snapshot: snapshot_of(&base6()),
            refuse: None,
            installed: 0,
            zeroed: vec![],
            vrrp: VrrpState::Standby,
        };
        let mut state = CtlState { config: base6(), daemon };
        let response = handle(&mut state, request("-A -t [2001:db8:1::10]:80 -s wlc", None));
        assert_eq!(response.status, 0, "{response:?}");
        assert_eq!(state.daemon.installed, 1);
        assert_ne!(state.config, base6());
        let restore = "-A -t [2001:db8:1::20]:80 -s wlc\n";
        let response = handle(&mut state, request("-R", Some(restore)));
        assert_eq!(response.status, 0, "{response:?}");
        assert_eq!(state.daemon.installed, 2);
    }

    /// Every save line parses back to the command it was written from.
    fn check_lines_round_trip(config: &Config) -> Result<(), TestCaseError> {
        for command in save_commands(config) {
            let line = command.to_string();
            prop_assert_eq!(parse(&args(&line)), Ok(command), "{}", line);
        }
        Ok(())
    }

    /// `config`'s save lines parse back, and restored into a cleared config give `config`
    /// again; returns the saved text.
    fn save_then_restore(config: &Config) -> Result<String, TestCaseError> {
        check_lines_round_trip(config)?;
        let text = save(config);
        let commands =
            parse_restore(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let cleared = apply(config, &Command::Clear).unwrap();
        let restored = apply(&cleared, &Command::Restore(commands))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&restored, config, "{}", text);
        Ok(text)
    }

    proptest! {
        #[test]
        fn save_then_restore_gives_equal_services(config in arb_config()) {
            let text = save_then_restore(&config)?;
            // -C then -R as one restore file.
            let restored = apply(&config, &Command::Restore(parse_restore(&format!("-C\n{text}")).unwrap())).unwrap();
            prop_assert_eq!(restored, config);
        }

        #[test]
        fn save_then_restore_gives_equal_dual_stack_services(config in arb_dual_config()) {
            save_then_restore(&config)?;
        }

        #[test]
        fn parse_never_panics(words in proptest::collection::vec(
            prop_oneof![
                "-[A-Za-z]{1,3}",
                "--[a-z-]{2,12}(=[a-z0-9.:]{0,6})?",
                "[0-9.:,]{0,16}",
                proptest::sample::select(vec!["-A".to_string(), "-a".into(), "-t".into(), "10.1.1.10:80".into(), "-r".into(), "-w".into(), "-z".into(), "--health-interval".into()]),
            ],
            0..8,
        )) {
            if let Ok(command) = parse(&words) {
                let _ = apply(&base(), &command);
            }
        }
    }

    /// What `ipvsadm-save -n` writes on an LVS box with persistent services (ipvsadm
    /// 1.31's `print_service_entry` in FMT_RULE: `-p` after `-s`, `-M` when the mask is not
    /// 255.255.255.255).
    const LVS_SAVE: &str = "\
-A -t 10.1.1.20:443 -s wlc -p 300
-a -t 10.1.1.20:443 -r 10.1.1.11:443 -g -w 1
-a -t 10.1.1.20:443 -r 10.1.1.12:443 -g -w 1
-A -t 10.1.1.21:80 -s rr -p 1800 -M 255.255.255.0
-a -t 10.1.1.21:80 -r 10.1.1.11:80 -g -w 3
-a -t 10.1.1.21:80 -r 10.1.1.12:80 -g -w 0
-A -u 10.1.1.22:53 -s wrr -p 60
-a -u 10.1.1.22:53 -r 10.1.1.13:53 -g -w 1
";

    #[test]
    fn restores_an_ipvsadm_save_file_with_persistent_services() {
        let commands = parse_restore(LVS_SAVE).unwrap_or_else(|e| panic!("{e}"));
        let config = apply(&base(), &Command::Restore(commands)).unwrap_or_else(|e| panic!("{e}"));
        let persistence = |at: usize| {
            config.services[at].persistence.map(|p| (p.timeout.as_secs(), p.prefix_len))
        };
        assert_eq!(persistence(0), None, "the base service is untouched");
        assert_eq!(persistence(1), Some((300, 32)));
        assert_eq!(persistence(2), Some((1800, 24)));
        assert_eq!(persistence(3), Some((60, 32)));
        // -S writes them back as ipvsadm-save did.
        let saved = save(&config);
        assert!(saved.contains("-A -t 10.1.1.20:443 -s wlc -p 300\n"), "{saved}");
        assert!(saved.contains("-A -t 10.1.1.21:80 -s rr -p 1800 -M 255.255.255.0\n"), "{saved}");
        assert!(saved.contains("-A -u 10.1.1.22:53 -s wrr -p 60\n"), "{saved}");
        // -L -n shows them as ipvsadm's print_service_entry.
        let listed = list(&snapshot_of(&config), &view(ListFormat::Table));
        assert!(listed.contains("TCP  10.1.1.20:443 wlc persistent 300\n"), "{listed}");
        assert!(
            listed.contains("TCP  10.1.1.21:80 rr persistent 1800 mask 255.255.255.0\n"),
            "{listed}"
        );
        assert!(listed.contains("UDP  10.1.1.22:53 wrr persistent 60\n"), "{listed}");
        assert!(listed.contains("TCP  10.1.1.10:80 rr\n"), "{listed}");
    }

    #[test]
    fn p_takes_an_optional_timeout_and_e_changes_persistence() {
        let options = |line: &str| match cmd(line) {
            Command::AddService { options, .. } | Command::EditService { options, .. } => {
                (options.persistent, options.netmask.map(|m| m.prefix_len))
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(options("-A -t 10.1.1.20:80 -p"), (Some(300), None));
        assert_eq!(options("-A -t 10.1.1.20:80 -p -s rr"), (Some(300), None));
        assert_eq!(options("-A -t 10.1.1.20:80 -s rr -p 600"), (Some(600), None));
        assert_eq!(options("-A -t 10.1.1.20:80 -p600 -M 24"), (Some(600), Some(24)));
        assert_eq!(options("-A -t 10.1.1.20:80 --persistent=60"), (Some(60), None));
        assert_eq!(
            options("-A -t 10.1.1.20:80 --persistent -M 255.255.0.0"),
            (Some(300), Some(16))
        );
        let config = run(&base(), "-E -t 10.1.1.10:80 -p 120 -M 255.255.255.0").unwrap();
        let p = config.services[0].persistence.unwrap();
        assert_eq!((p.timeout.as_secs(), p.prefix_len), (120, 24));
        // -E -p keeps the mask; -E without -p keeps both; -p 0 turns persistence off.
        let config = run(&config, "-E -t 10.1.1.10:80 -p 30").unwrap();
        assert_eq!(config.services[0].persistence.map(|p| p.prefix_len), Some(24));
        let config = run(&config, "-E -t 10.1.1.10:80 -s wrr").unwrap();
        assert_eq!(config.services[0].persistence.map(|p| p.timeout.as_secs()), Some(30));
        let config = run(&config, "-E -t 10.1.1.10:80 -p 0").unwrap();
        assert_eq!(config.services[0].persistence, None);
        let error = run(&config, "-E -t 10.1.1.10:80 -M 24").unwrap_err().to_string();
        assert!(error.contains("-p [TIMEOUT]"), "{error}");
        let error = run(&config, "-E -t 10.1.1.10:80 -p -M 33").unwrap_err().to_string();
        assert!(error.contains("1 to 32"), "{error}");
    }

    #[test]
    fn lists_templates_among_the_connections_like_ipvsadm_lnc() {
        use crate::persist::{Chosen, Entry, TemplateKey};
        let config = run(&base(), "-E -t 10.1.1.10:80 -p 300 -M 255.255.255.0").unwrap();
        let snapshot = snapshot_of(&config);
        let tag = snapshot.services[0].persistence.unwrap().service;
        let template = Entry {
            key: TemplateKey { service: tag, client: u128::from(0xc000_0200u32) },
            chosen: Chosen { addr: u128::from(0x0a01_010cu32), port: 80, hint: 1 },
            remaining: Duration::from_secs(299),
        };
        let unknown = Entry { key: TemplateKey { service: tag ^ 1, ..template.key }, ..template };
        let mut v = view(ListFormat::Connections);
        v.connections = template_entries(&snapshot, &[template, unknown]);
        assert_eq!(
            list(&snapshot, &v),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination\n\
             TCP 04:59  NONE        192.0.2.0:0        10.1.1.10:80       10.1.1.12:80\n"
        );
    }

    // Listings.

    fn snapshot_of(config: &Config) -> Snapshot {
        Snapshot::build(config, 1).unwrap()
    }

    fn two_services() -> Config {
        let config = run(&base(), "-A -u 10.1.1.10:53 -s wrr -m").unwrap();
        run(&config, "-a -u 10.1.1.10:53 -r 10.1.2.13:5353 -w 4").unwrap()
    }

    fn view(format: ListFormat) -> ListView {
        ListView {
            options: ListOptions { format, ..ListOptions::default() },
            ..ListView::default()
        }
    }

    const HEAD: &str = "IP Virtual Server version 1.2.1 (size=1000000)\n";

    #[test]
    fn lists_like_ipvsadm_l_n() {
        let snapshot = snapshot_of(&two_services());
        let mut v = view(ListFormat::Table);
        v.active = vec![12, 3, 0];
        v.inactive = vec![1, 0, 250];
        let expected = String::from(HEAD)
            + "Prot LocalAddress:Port Scheduler Flags\n\
               \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
               TCP  10.1.1.10:80 rr\n\
               \x20 -> 10.1.1.11:80                 Route   1      12         1         \n\
               \x20 -> 10.1.1.12:80                 Route   2      3          0         \n\
               UDP  10.1.1.10:53 wrr\n\
               \x20 -> 10.1.2.13:5353               Masq    4      0          250       \n";
        assert_eq!(list(&snapshot, &v), expected);
        v.options.service = Some(ServiceId {
            proto: Proto::Udp,
            vip: Ipv4Addr::new(10, 1, 1, 10).into(),
            port: 53,
        });
        let one = list(&snapshot, &v);
        assert_eq!(one.lines().count(), 4, "{one}");
        assert!(one.contains("UDP  10.1.1.10:53 wrr") && !one.contains("TCP"));
    }

    /// `-L --health` shows the weight as configured and the state apart from it: a backend
    /// down by its check keeps its weight, a drained one (weight 0) passes its check; `-t`
    /// keeps one service; `--health` parses, and does not combine with `--stats`.
    #[test]
    fn lists_health_state_apart_from_the_weight() {
        use crate::control::health::{BackendHealth, HealthCounters, ProbeError};
        let snapshot = snapshot_of(&two_services());
        let web = (Ipv4Addr::new(10, 1, 1, 10).into(), 80, Proto::Tcp);
        let dns = (Ipv4Addr::new(10, 1, 1, 10).into(), 53, Proto::Udp);
        let failed = Err(ProbeError::Timeout(Duration::from_secs(1)));
        let mut down = BackendHealth::new();
        for _ in 0..3 {
            down.record_probe(&failed, &HealthConfig::default());
        }
        assert!(!down.is_up());
        let status = |service, backend: ([u8; 4], u16), weight, health, ok, failed| BackendStatus {
            service,
            backend: (Ipv4Addr::from(backend.0).into(), backend.1),
            weight,
            health,
            counters: HealthCounters { probes_ok: ok, probes_failed: failed, ..Default::default() },
        };
        let mut v = view(ListFormat::Health);
        v.health = vec![
            status(web, ([10, 1, 1, 11], 80), 1, down, 7, 3),
            status(web, ([10, 1, 1, 12], 80), 0, BackendHealth::new(), 9, 0),
            status(dns, ([10, 1, 2, 13], 5353), 4, BackendHealth::unknown(), 0, 0),
        ];
        let expected = String::from(HEAD)
            + "Prot LocalAddress:Port\n\
               \x20 -> RemoteAddress:Port           Weight State   ProbesOK   ProbesFailed\n\
               TCP  10.1.1.10:80\n\
               \x20 -> 10.1.1.11:80                 1      down    7          3\n\
               \x20 -> 10.1.1.12:80                 0      drained 9          0\n\
               UDP  10.1.1.10:53\n\
               \x20 -> 10.1.2.13:5353               4      unknown 0          0\n";
        assert_eq!(list(&snapshot, &v), expected);
        v.options.service = Some(ServiceId { proto: Proto::Udp, vip: dns.0, port: 53 });
        let one = list(&snapshot, &v);
        assert_eq!(one.lines().count(), 5, "{one}");
        assert!(one.contains("10.1.2.13:5353") && !one.contains("TCP"), "{one}");
        let words = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
        let health = ListOptions { format: ListFormat::Health, service: None, nosort: false };
        assert_eq!(parse(&words("-L -n --health")), Ok(Command::List(health)));
        let combined = parse(&words("-L --health --stats"));
        assert!(
            matches!(combined, Err(CtlError::Usage(ref why)) if why.contains("cannot be combined"))
        );
    }

    #[test]
    fn lists_stats_and_rates_with_ipvsadm_columns() {
        let snapshot = snapshot_of(&two_services());
        let mut v = view(ListFormat::Stats);
        let counters = |n: u64| BackendCounters {
            connections: n,
            in_packets: n * 10,
            in_bytes: n * 1000,
            out_packets: n * 9,
            out_bytes: n * 9000,
        };
        v.counters = vec![counters(1), counters(2), counters(123_456_789)];
        let stats = list(&snapshot, &v);
        let lines: Vec<&str> = stats.lines().collect();
        assert_eq!(lines[0], HEAD.trim_end());
        // ipvsadm: printf("%-33s %8s %8s %8s %8s %8s\n") for titles, "%-33s" for a service,
        // "  -> %-28s" for a real server, then print_largenum(--exact) per figure.
        let largenum = |n: u64| if n < 100_000_000 { format!("{n:>9}") } else { format!(" {n}") };
        let ipvsadm_row =
            |name: &str, figures: [u64; 5]| format!("{name:<33}") + &figures.map(largenum).concat();
        assert_eq!(
            lines[1],
            format!(
                "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
            )
        );
        assert_eq!(lines[2], "  -> RemoteAddress:Port");
        assert_eq!(lines[3], ipvsadm_row("TCP  10.1.1.10:80", [3, 30, 27, 3000, 27000]));
        assert_eq!(
            lines[4],
            ipvsadm_row(&format!("  -> {:<28}", "10.1.1.11:80"), [1, 10, 9, 1000, 9000])
        );
        assert_eq!(
            lines[6],
            ipvsadm_row(
                "UDP  10.1.1.10:53",
                [123_456_789, 1_234_567_890, 1_111_111_101, 123_456_789_000, 1_111_111_101_000]
            )
        );
        assert_eq!(lines.len(), 8);

        let mut v = view(ListFormat::Rate);
        let before = counters(0);
        v.rates = vec![
            BackendRates::between(&before, &counters(20), Duration::from_secs(2)),
            BackendRates::default(),
        ];
        let rate = list(&snapshot, &v);
        let lines: Vec<&str> = rate.lines().collect();
        assert_eq!(
            lines[1],
            format!(
                "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
            )
        );
        assert_eq!(lines[3], ipvsadm_row("TCP  10.1.1.10:80", [10, 100, 90, 10_000, 90_000]));
        assert_eq!(lines[5], ipvsadm_row(&format!("  -> {:<28}", "10.1.1.12:80"), [0; 5]));
        assert_eq!(
            lines[7],
            ipvsadm_row(&format!("  -> {:<28}", "10.1.2.13:5353"), [0; 5]),
            "a missing row is zeros"
        );
    }

    #[test]
    fn lists_connections_like_ipvsadm_lnc() {
        let snapshot = snapshot_of(&two_services());
        let mut v = view(ListFormat::Connections);
        v.connections = vec![
            ConnEntry {
                proto: Proto::Tcp,
                expire_secs: 899,
                state: "ESTABLISHED".into(),
                client: "192.0.2.7:51234".parse().unwrap(),
                r#virtual: "10.1.1.10:80".parse().unwrap(),
                destination: "10.1.1.11:80".parse().unwrap(),
            },
            ConnEntry {
                proto: Proto::Udp,
                expire_secs: 61,
                state: "UDP".into(),
                client: "192.0.2.8:5000".parse().unwrap(),
                r#virtual: "10.1.1.10:53".parse().unwrap(),
                destination: "10.1.2.13:5353".parse().unwrap(),
            },
        ];
        assert_eq!(
            list(&snapshot, &v),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination\n\
             TCP 14:59  ESTABLISHED 192.0.2.7:51234    10.1.1.10:80       10.1.1.11:80\n\
             UDP 01:01  UDP         192.0.2.8:5000     10.1.1.10:53       10.1.2.13:5353\n"
        );
        v.options.service = Some(web());
        assert_eq!(list(&snapshot, &v).lines().count(), 3);
    }

    /// A dual-stack snapshot lists its IPv6 service the ipvsadm way, in every format.
    #[test]
    fn lists_ipv6_services_of_a_snapshot_like_ipvsadm() {
        let mut config = run(&base6(), "-A -t 10.1.1.10:80 -s rr").unwrap();
        for line in [
            "-a -t 10.1.1.10:80 -r 10.1.1.11:80 -g -w 1",
            "-A -t [2001:db8:1::10]:80 -s wlc -m",
            "-a -t [2001:db8:1::10]:80 -r [2001:db8:1::11]:8080 -m -w 2",
            "-a -t [2001:db8:1::10]:80 -r [2001:db8:1::12]:8080 -m -w 0",
        ] {
            config = run(&config, line).unwrap();
        }
        let snapshot = snapshot_of(&config);
        let mut v = view(ListFormat::Table);
        v.active = vec![1, 7, 0];
        v.inactive = vec![0, 2, 5];
        let expected = String::from(HEAD)
            + "Prot LocalAddress:Port Scheduler Flags\n\
               \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
               TCP  10.1.1.10:80 rr\n\
               \x20 -> 10.1.1.11:80                 Route   1      1          0         \n\
               TCP  [2001:db8:1::10]:80 wlc\n\
               \x20 -> [2001:db8:1::11]:8080        Masq    2      7          2         \n\
               \x20 -> [2001:db8:1::12]:8080        Masq    0      0          5         \n";
        assert_eq!(list(&snapshot, &v), expected);
        // `-L -n -t [2001:db8:1::10]:80`: that service alone.
        v.options.service = Some(web6());
        let one = list(&snapshot, &v);
        assert_eq!(one.lines().count(), 5, "{one}");
        assert!(one.contains("TCP  [2001:db8:1::10]:80 wlc") && !one.contains("10.1.1.10"));
        // `--stats`: the service line sums its real servers, addresses in brackets.
        let mut v = view(ListFormat::Stats);
        let counters = |n: u64| BackendCounters {
            connections: n,
            in_packets: n * 10,
            in_bytes: n * 1000,
            out_packets: n * 9,
            out_bytes: n * 9000,
        };
        v.counters = vec![counters(1), counters(2), counters(3)];
        v.options.service = Some(web6());
        let stats = list(&snapshot, &v);
        let lines: Vec<&str> = stats.lines().collect();
        let row = |name: &str, figures: [u64; 5]| {
            format!("{name:<33}") + &figures.map(|n| format!("{n:>9}")).concat()
        };
        // (No version line: a listing of one service has none, as in ipvsadm.)
        assert_eq!(lines[2], row("TCP  [2001:db8:1::10]:80", [5, 50, 45, 5000, 45000]));
        assert_eq!(
            lines[3],
            row(&format!("  -> {:<28}", "[2001:db8:1::11]:8080"), [2, 20, 18, 2000, 18000])
        );
        assert_eq!(lines.len(), 5, "{stats}");
        // `--rate` likewise.
        let mut v = view(ListFormat::Rate);
        v.rates = vec![
            BackendRates::default(),
            BackendRates::between(&counters(0), &counters(4), Duration::from_secs(2)),
        ];
        let rate = list(&snapshot, &v);
        assert!(
            rate.contains(&row("TCP  [2001:db8:1::10]:80", [2, 20, 18, 2000, 18000])),
            "{rate}"
        );
    }

    // The handler.

    #[derive(Debug)]
    struct FakeDaemon {
        snapshot: Snapshot,
        refuse: Option<String>,
        installed: usize,
        zeroed: Vec<Option<ServiceId>>,
        vrrp: VrrpState,
    }

    impl Daemon for FakeDaemon {
        fn snapshot(&self) -> &Snapshot {
            &self.snapshot
        }
        fn view(&mut self, options: &ListOptions) -> ListView {
            ListView { options: *options, ..ListView::default() }
        }
        fn install(&mut self, config: &Config) -> Result<(), String> {
            if let Some(why) = &self.refuse {
                return Err(why.clone());
            }
            self.snapshot =
                Snapshot::build(config, self.snapshot.generation + 1).map_err(|e| e.to_string())?;
            self.installed += 1;
            Ok(())
        }
        fn zero(&mut self, service: Option<ServiceId>) {
            self.zeroed.push(service);
        }
        fn fleet(&mut self, set: Option<VrrpState>) -> String {
            if let Some(state) = set {
                self.vrrp = state;
            }
            crate::fleet::describe(self.snapshot.fleet, self.vrrp)
        }
    }

    fn request(line: &str, stdin: Option<&str>) -> Request {
        Request { args: args(line), stdin: stdin.map(str::to_string) }
    }

    #[test]
    fn handle_applies_lists_saves_and_refuses() {
        let daemon = FakeDaemon {
            snapshot: snapshot_of(&base()),
            refuse: None,
            installed: 0,
            zeroed: vec![],
            vrrp: VrrpState::Standby,
        };
        let mut state = CtlState { config: base(), daemon };
        let response = handle(&mut state, request("-a -t 10.1.1.10:80 -r 10.1.1.13 -w 4", None));
        assert_eq!(response, Response::success(String::new()));
        assert_eq!(state.daemon.installed, 1);
        assert_eq!(state.config.services[0].backends.len(), 3);
        let listing = handle(&mut state, request("-L -n", None));
        assert!(
            listing.stdout.contains("  -> 10.1.1.13:80                 Route   4"),
            "{}",
            listing.stdout
        );
        let saved = handle(&mut state, request("-S -n", None)).stdout;
        assert!(saved.contains("-a -t 10.1.1.10:80 -r 10.1.1.13:80 -g -w 4\n"), "{saved}");

        let response = handle(&mut state, request("-A -t 10.1.1.10:80", None));
        assert_eq!(response.status, 1);
        assert_eq!(
            response.stderr,
            "xlb ctl: service 10.1.1.10:80/tcp already exists (-E changes it)\n"
        );
        let response = handle(&mut state, request("-A --frobnicate", None));
        assert_eq!(response.status, 2);
        assert!(response.stderr.contains("--frobnicate"));
        let response = handle(&mut state, request("-L -n -t 10.1.1.99:80", None));
        assert_eq!(response.status, 1);

        // -C then -R of the saved text restores the same services.
        let before = state.config.clone();
        assert_eq!(handle(&mut state, request("-C", None)).status, 0);
        assert!(state.config.services.is_empty());
        assert_eq!(handle(&mut state, request("-R", Some(&saved))).status, 0);
        assert_eq!(state.config, before);

        // The daemon refuses (the snapshot cannot be built): nothing changes.
        state.daemon.refuse = Some("VIP is the interface address".into());
        let response = handle(&mut state, request("-D -t 10.1.1.10:80", None));
        assert_eq!(response.status, 1);
        assert_eq!(
            response.stderr,
            "xlb ctl: refused, nothing changed: VIP is the interface address\n"
        );
        assert_eq!(state.config, before);

        assert_eq!(handle(&mut state, request("-Z -t 10.1.1.10:80", None)).status, 0);
        assert_eq!(state.daemon.zeroed, [Some(web())]);
        assert!(handle(&mut state, request("-h", None)).stdout.contains("-A|-E"));
    }

    // Issue 15: ipvsadm's exact habits.

    #[test]
    fn schedulers_have_ipvs_names_and_a_bare_a_gives_wlc() {
        let config = run(&base(), "-A -t 10.1.1.20:80").unwrap();
        assert_eq!(config.services[1].scheduler, SchedulerKind::Wlc, "ipvsadm's default");
        for name in ["sed", "nq", "mh"] {
            let config = run(&base(), &format!("-A -t 10.1.1.20:80 -s {name}")).unwrap();
            assert_eq!(config.services[1].scheduler.name(), name);
            let listing = list(&snapshot_of(&config), &view(ListFormat::Table));
            assert!(listing.contains(&format!("TCP  10.1.1.20:80 {name}\n")), "{listing}");
            assert!(save(&config).contains(&format!("-A -t 10.1.1.20:80 -s {name}\n")));
        }
    }

    #[test]
    fn only_a_full_listing_has_the_ipvs_version_line() {
        let snapshot = snapshot_of(&two_services());
        for format in [ListFormat::Table, ListFormat::Stats, ListFormat::Rate] {
            let mut v = view(format);
            let all = list(&snapshot, &v);
            assert_eq!(all.lines().next(), Some("IP Virtual Server version 1.2.1 (size=1000000)"));
            v.options.service = Some(web());
            let one = list(&snapshot, &v);
            assert!(one.starts_with("Prot LocalAddress:Port"), "{format:?}: {one}");
        }
    }

    #[test]
    fn listings_sort_as_ipvsadm_unless_nosort() {
        let mut config = base6();
        for line in [
            "-A -u 10.1.1.9:53 -s rr",
            "-A -t [2001:db8:1::10]:80 -s rr",
            "-A -t 10.1.1.10:22 -s rr",
            "-A -t 10.1.1.9:443 -s rr -m",
            "-a -t 10.1.1.9:443 -r 10.1.1.12:443",
            "-a -t 10.1.1.9:443 -r 10.1.1.11:8443",
            "-a -t 10.1.1.9:443 -r 10.1.1.11:443",
            "-a -t 10.1.1.9:443 -r 10.1.1.100:443",
        ] {
            config = run(&config, line).unwrap();
        }
        let snapshot = snapshot_of(&config);
        let names = |text: &str| -> Vec<String> {
            text.lines()
                .skip(3)
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .collect()
        };
        let sorted = [
            "TCP 10.1.1.9:443 rr",
            "-> 10.1.1.11:443 Masq",
            "-> 10.1.1.11:8443 Masq",
            "-> 10.1.1.12:443 Masq",
            "-> 10.1.1.100:443 Masq",
            "TCP 10.1.1.10:22 rr",
            "UDP 10.1.1.9:53 rr",
            "TCP [2001:db8:1::10]:80 rr",
        ];
        let mut v = view(ListFormat::Table);
        assert_eq!(names(&list(&snapshot, &v)), sorted);
        v.options.nosort = true;
        assert_eq!(
            names(&list(&snapshot, &v)),
            [
                "UDP 10.1.1.9:53 rr",
                "TCP [2001:db8:1::10]:80 rr",
                "TCP 10.1.1.10:22 rr",
                "TCP 10.1.1.9:443 rr",
                "-> 10.1.1.12:443 Masq",
                "-> 10.1.1.11:8443 Masq",
                "-> 10.1.1.11:443 Masq",
                "-> 10.1.1.100:443 Masq",
            ]
        );
        // --stats sorts the same way; --nosort parses and prints back.
        let stats = list(&snapshot, &view(ListFormat::Stats));
        let firsts: Vec<&str> =
            stats.lines().skip(3).filter_map(|l| l.split_whitespace().nth(1)).collect();
        assert_eq!(firsts[..3], ["10.1.1.9:443", "10.1.1.11:443", "10.1.1.11:8443"]);
        assert_eq!(cmd("-L -n --nosort").to_string(), "-L -n --nosort");
        match cmd("-Ln --nosort") {
            Command::List(options) => assert!(options.nosort),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn save_puts_xlb_options_on_comment_lines_that_restore_reads_back() {
        let config = run(
            &base(),
            "-A -t 10.1.1.20:443 -s maglev -m --maglev-table-size 251 --health-check http \
             --health-http-path /healthz",
        )
        .unwrap();
        let config = run(&config, "-a -t 10.1.1.20:443 -r 10.1.2.30:8443 -w 7").unwrap();
        let config = run(&config, "-E -t 10.1.1.10:80 --health-rise 5").unwrap();
        let saved = save(&config);
        assert_eq!(
            saved,
            "-A -t 10.1.1.10:80 -s rr\n\
             # xlb: -E -t 10.1.1.10:80 --health-rise 5\n\
             -a -t 10.1.1.10:80 -r 10.1.1.11:80 -g -w 1\n\
             -a -t 10.1.1.10:80 -r 10.1.1.12:80 -g -w 2\n\
             -A -t 10.1.1.20:443 -m\n\
             # xlb: -E -t 10.1.1.20:443 -s maglev --maglev-table-size 251 --health-check http \
             --health-http-path /healthz\n\
             -a -t 10.1.1.20:443 -r 10.1.2.30:8443 -m -w 7\n"
        );
        // Every line ipvsadm reads (the comments aside) uses only ipvsadm's options.
        for line in saved.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains("--"), "{line}");
        }
        // -C then -R gives the same services back.
        let restored =
            apply(&config, &Command::Restore(parse_restore(&format!("-C\n{saved}")).unwrap()));
        assert_eq!(restored.unwrap(), config);
        // ipvsadm's own comments (after a #, anywhere) are skipped.
        let commands =
            parse_restore("-A -t 10.1.1.30:80 -s rr # web\n#-D -t 10.1.1.10:80\n").unwrap();
        assert_eq!(commands.len(), 1);
    }

    #[test]
    fn restore_refusals_name_the_line_and_begin_xlb_ctl() {
        let mut state = CtlState {
            config: base(),
            daemon: FakeDaemon {
                snapshot: snapshot_of(&base()),
                refuse: None,
                installed: 0,
                zeroed: vec![],
                vrrp: VrrpState::Standby,
            },
        };
        let text = "# saved\n-A -t 10.1.1.20:80 -s rr\n\n-a -t 10.1.1.20:80 -r 10.1.1.11\n\
                    -a -t 10.1.1.20:80 -r 10.1.1.11\n";
        let response = handle(&mut state, request("-R", Some(text)));
        assert_eq!(response.status, 1);
        assert_eq!(
            response.stderr,
            "xlb ctl: line 5 (-a -t 10.1.1.20:80 -r 10.1.1.11): service 10.1.1.20:80/tcp already \
             has real server 10.1.1.11:80 (-e changes it)\n"
        );
        let response = handle(&mut state, request("-D -t 10.1.1.99:80", None));
        assert!(response.stderr.starts_with("xlb ctl: service 10.1.1.99:80/tcp"), "{response:?}");
        let response = handle(&mut state, request("-A -s", None));
        assert!(response.stderr.starts_with("xlb ctl: -s needs a value"), "{response:?}");
        assert_eq!(state.config, base());
    }

    #[test]
    fn the_socket_option_is_taken_from_anywhere() {
        let mut words = args("-L --socket /tmp/a.sock -n");
        assert_eq!(take_socket(&mut words), Ok(Some("/tmp/a.sock".into())));
        assert_eq!(words, args("-L -n"));
        let mut words = args("-L -n --socket=/tmp/b.sock");
        assert_eq!(take_socket(&mut words), Ok(Some("/tmp/b.sock".into())));
        assert_eq!(words, args("-L -n"));
        let mut words = args("-L -n");
        assert_eq!(take_socket(&mut words), Ok(None));
        assert!(take_socket(&mut args("-L --socket")).is_err());
        assert!(take_socket(&mut args("--socket=/a -L --socket /b")).is_err());
    }

    #[test]
    fn mixed_forwarding_in_one_service_is_refused_with_the_reason() {
        let error = run(&base(), "-a -t 10.1.1.10:80 -r 10.1.1.13 -m").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("DR's replies bypass the box"), "{text}");
        assert!(text.contains("need a service of their own"), "{text}");
    }
}
