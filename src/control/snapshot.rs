//! The immutable snapshot every worker reads: interfaces, services with their built
//! schedulers, backends with their precomputed next hops, the addresses xlb owns.
//!
//! Control builds a snapshot from a validated [`Config`] off the hot path (Maglev tables
//! included) and publishes it behind an `Arc`; a worker swaps to a new one between batches.
//! Nothing in a snapshot changes after it is built, so workers read it without locks.
//!
//! Indices are stable within one snapshot only: `Service::backends` is a range into
//! [`Snapshot::backends`], and a backend's [`Backend::service`] points back. The next
//! snapshot may renumber them (a service deleted before, a backend inserted or removed by a
//! health check). What stays is a backend's identity, [`BackendId`]: its service's
//! VIP:port/proto and its own address:port. Every piece of per-backend state that outlives a
//! snapshot is keyed by it, never by a position: connection tracking stores a backend's index
//! only as a hint, which [`Snapshot::backend_of_flow`] checks against the flow's identity and
//! looks up by identity when the hint is stale; workers carry per-backend counters over a swap
//! by identity; control sums reports and keeps `-Z` and rates by identity.

use std::net::Ipv4Addr;
use std::ops::Range;

use hashbrown::HashMap;

use crate::addr_map::AddrMap;

use crate::conntrack::Flow;
use crate::conntrack::{ConntrackConfig, Timeouts};
use crate::control::config::{BackendConfig, Config, ConntrackSettings, ServiceConfig};
use crate::dataplane::IfaceId;
use crate::flow::{ForwardMode, Proto};
use crate::hash::hash_bytes;
use crate::sched::{BackendSpec, MaglevTable, SchedError, Scheduler};
use crate::wire::MacAddr;

/// Why a config could not become a snapshot.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("interface {name}: no `mac` given; replay needs the box's MAC for each interface")]
    MissingMac { name: String },
    #[error("service {vip}:{port}/{proto}: {source}")]
    Scheduler { vip: Ipv4Addr, port: u16, proto: Proto, source: SchedError },
    #[error(
        "service {vip}:{port}: the VIP is interface {interface}'s own address; xlb answers ARP \
         for VIPs itself and asks for backends from the interface address, so the two must \
         differ (a real server holding the VIP on lo ignores ARP from its own address)"
    )]
    VipIsInterfaceAddr { vip: Ipv4Addr, port: u16, interface: String },
    #[error("too many {what}: {count} (at most {max})")]
    TooMany { what: &'static str, count: usize, max: usize },
}

/// One of the box's interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: MacAddr,
    pub gateway: Option<Ipv4Addr>,
}

impl Interface {
    /// True if `ip` is on this interface's subnet.
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = self.mask();
        (ip.to_bits() & mask) == (self.addr.to_bits() & mask)
    }

    /// The subnet mask of `prefix_len`, as a number.
    #[inline]
    pub fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0)
    }
}

/// A virtual service: VIP:port/proto, its scheduler and its backends.
#[derive(Debug, Clone)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
    pub forward: ForwardMode,
    pub scheduler: Scheduler,
    /// Weighted Maglev over the same backends, whatever the scheduler: the stateless
    /// fallback when connection tracking refuses a flow (a flood, a full table), so packets
    /// of an untracked flow still agree on a backend (Katran's policy). Built from the
    /// schedulable backends only (weight > 0 once health checks have drained or removed the
    /// down and the not-yet-probed ones), so DR never sends a mid-flow packet to a backend not
    /// known healthy; and because a restart resumes the kept verdicts and weights
    /// ([`crate::control::state`]), the new process builds the table the old one ran.
    pub fallback: MaglevTable,
    /// FullNAT source pool.
    pub local_addrs: Vec<Ipv4Addr>,
    /// Range into [`Snapshot::backends`].
    pub backends: Range<usize>,
}

/// What a backend is, whatever its position in a snapshot: its service's VIP:port/proto and
/// its own address:port (the same real server in two services is two backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub vip: Ipv4Addr,
    pub vport: u16,
    pub proto: Proto,
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl BackendId {
    /// A backend of a service of a config.
    pub fn of_config(service: &ServiceConfig, backend: &BackendConfig) -> BackendId {
        BackendId {
            vip: service.vip,
            vport: service.port,
            proto: service.proto,
            addr: backend.addr,
            port: backend.port,
        }
    }

    /// The backend a tracked flow was scheduled to.
    #[inline]
    pub fn of_flow(flow: &Flow) -> BackendId {
        BackendId {
            vip: flow.vip,
            vport: flow.vport,
            proto: flow.proto,
            addr: flow.backend_addr,
            port: flow.backend_port,
        }
    }
}

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{} -> {}:{}", self.vip, self.vport, self.proto, self.addr, self.port)
    }
}

/// A real server of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    /// Its identity (`addr` and `port` included): what state that outlives the snapshot is
    /// keyed by.
    pub id: BackendId,
    /// Index of its service in [`Snapshot::services`].
    pub service: usize,
    /// Where packets for it leave, and whose MAC they go to.
    pub route: Route,
}

/// The interface and next hop towards an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub egress: IfaceId,
    pub next_hop: Ipv4Addr,
}

/// What xlb owns at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    /// A VIP of one or more services.
    Vip,
    /// A FullNAT local address.
    Local,
    /// The box's own interface address (the kernel answers for it).
    Interface(IfaceId),
}

/// Everything a worker needs to process packets, immutable.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub interfaces: Vec<Interface>,
    pub services: Vec<Service>,
    pub backends: Vec<Backend>,
    pub static_neighbors: Vec<(Ipv4Addr, MacAddr)>,
    pub conntrack: ConntrackConfig,
    /// Measured response time per backend, in µs (0 = unknown): the least-time scheduler's
    /// input, fed by the control side.
    pub response_time_us: Vec<u32>,
    service_index: HashMap<(Ipv4Addr, u16, Proto), usize>,
    backend_index: HashMap<BackendId, usize>,
    owned: AddrMap<Owned>,
    /// Backends of NAT services: a packet from one of them may be a reply to translate.
    nat_backends: AddrMap<()>,
}

impl Snapshot {
    /// Builds a snapshot from a validated config. `generation` tells snapshots apart.
    pub fn build(config: &Config, generation: u64) -> Result<Snapshot, SnapshotError> {
        if config.interfaces.len() > usize::from(u8::MAX) {
            return Err(SnapshotError::TooMany {
                what: "interfaces",
                count: config.interfaces.len(),
                max: usize::from(u8::MAX),
            });
        }
        let interfaces = config
            .interfaces
            .iter()
            .map(|i| {
                let mac =
                    i.mac.ok_or_else(|| SnapshotError::MissingMac { name: i.name.clone() })?;
                Ok(Interface {
                    name: i.name.clone(),
                    addr: i.addr,
                    prefix_len: i.prefix_len,
                    mac: MacAddr(mac),
                    gateway: i.gateway,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;

        let backend_total: usize = config.services.iter().map(|s| s.backends.len()).sum();
        for (what, count) in [("services", config.services.len()), ("backends", backend_total)] {
            if count > usize::from(u16::MAX) {
                return Err(SnapshotError::TooMany { what, count, max: usize::from(u16::MAX) });
            }
        }

        let owned_count = interfaces.len()
            + config.services.iter().map(|s| 1 + s.local_addrs.len()).sum::<usize>();
        let mut owned = AddrMap::with_capacity(owned_count);
        for (index, interface) in interfaces.iter().enumerate() {
            owned.insert(interface.addr, Owned::Interface(IfaceId(index as u8)));
        }
        let mut services = Vec::with_capacity(config.services.len());
        let mut backends = Vec::with_capacity(backend_total);
        let mut service_index = HashMap::new();
        let mut backend_index = HashMap::with_capacity(backend_total);
        let mut nat_backends = AddrMap::with_capacity(backend_total);
        for (service_number, service) in config.services.iter().enumerate() {
            if let Some(interface) = interfaces.iter().find(|i| i.addr == service.vip) {
                return Err(SnapshotError::VipIsInterfaceAddr {
                    vip: service.vip,
                    port: service.port,
                    interface: interface.name.clone(),
                });
            }
            let specs: Vec<BackendSpec> = service
                .backends
                .iter()
                .map(|b| BackendSpec { id: backend_identity(b.addr, b.port), weight: b.weight })
                .collect();
            let scheduler_error = |source| SnapshotError::Scheduler {
                vip: service.vip,
                port: service.port,
                proto: service.proto,
                source,
            };
            let scheduler = Scheduler::new(service.scheduler, &specs, service.maglev_table_size)
                .map_err(scheduler_error)?;
            let fallback =
                MaglevTable::build(&specs, service.maglev_table_size).map_err(scheduler_error)?;
            let first = backends.len();
            for backend in &service.backends {
                let id = BackendId::of_config(service, backend);
                backend_index.insert(id, backends.len());
                backends.push(Backend {
                    addr: backend.addr,
                    port: backend.port,
                    weight: backend.weight,
                    id,
                    service: service_number,
                    route: route_in(&interfaces, backend.addr),
                });
                if service.forward == ForwardMode::Nat {
                    nat_backends.insert(backend.addr, ());
                }
            }
            if owned.get(service.vip).is_none() {
                owned.insert(service.vip, Owned::Vip);
            }
            for local in &service.local_addrs {
                if owned.get(*local).is_none() {
                    owned.insert(*local, Owned::Local);
                }
            }
            service_index.insert((service.vip, service.port, service.proto), service_number);
            services.push(Service {
                vip: service.vip,
                port: service.port,
                proto: service.proto,
                forward: service.forward,
                scheduler,
                fallback,
                local_addrs: service.local_addrs.clone(),
                backends: first..backends.len(),
            });
        }
        let static_neighbors =
            config.neighbors.iter().map(|n| (n.ip, MacAddr(n.mac))).collect::<Vec<_>>();
        let response_time_us = vec![0; backends.len()];
        Ok(Snapshot {
            generation,
            interfaces,
            services,
            backends,
            static_neighbors,
            conntrack: conntrack_config(&config.conntrack),
            response_time_us,
            service_index,
            backend_index,
            owned,
            nat_backends,
        })
    }

    /// The service at VIP:port/proto.
    #[inline]
    pub fn service_at(&self, vip: Ipv4Addr, port: u16, proto: Proto) -> Option<usize> {
        self.service_index.get(&(vip, port, proto)).copied()
    }

    /// The index of the backend `id` in this snapshot.
    #[inline]
    pub fn backend_at(&self, id: &BackendId) -> Option<usize> {
        self.backend_index.get(id).copied()
    }

    /// The index in this snapshot of the backend a tracked flow was scheduled to: the flow's
    /// hint when it still names that backend (the common case, one comparison), else a
    /// look-up by identity (the backends were renumbered since), else `None` (it is gone).
    #[inline]
    pub fn backend_of_flow(&self, flow: &Flow) -> Option<usize> {
        let hint = usize::from(flow.backend);
        match self.backends.get(hint) {
            Some(backend) if backend.id == BackendId::of_flow(flow) => Some(hint),
            _ => self.backend_renumbered(flow),
        }
    }

    #[cold]
    #[inline(never)]
    fn backend_renumbered(&self, flow: &Flow) -> Option<usize> {
        self.backend_at(&BackendId::of_flow(flow))
    }

    /// What xlb owns at `ip`, if anything.
    #[inline]
    pub fn owned(&self, ip: Ipv4Addr) -> Option<Owned> {
        self.owned.get(ip)
    }

    /// True if `ip` is a backend of a NAT service (its packets may be replies to translate).
    #[inline]
    pub fn is_nat_backend(&self, ip: Ipv4Addr) -> bool {
        !self.nat_backends.is_empty() && self.nat_backends.get(ip).is_some()
    }

    /// The route towards `ip`, or `None` when no interface reaches it.
    #[inline]
    pub fn route(&self, ip: Ipv4Addr) -> Option<Route> {
        let route = route_in(&self.interfaces, ip);
        (!route.next_hop.is_unspecified()).then_some(route)
    }

    /// The backends of service `service`.
    pub fn service_backends(&self, service: usize) -> &[Backend] {
        self.services.get(service).map_or(&[], |s| &self.backends[s.backends.clone()])
    }

    /// Addresses xlb answers ARP for itself: every VIP and local address, with the interface
    /// to announce each on.
    pub fn announced_addrs(&self) -> Vec<(Ipv4Addr, IfaceId)> {
        let mut addrs: Vec<(Ipv4Addr, IfaceId)> = self
            .owned
            .iter()
            .filter(|(_, owned)| matches!(owned, Owned::Vip | Owned::Local))
            .map(|(ip, _)| (ip, route_in(&self.interfaces, ip).egress))
            .collect();
        addrs.sort();
        addrs
    }
}

/// The stable identity Maglev hashes for a backend: its address and port. The same backend
/// gets the same permutation in every process and after every restart.
pub fn backend_identity(addr: Ipv4Addr, port: u16) -> u64 {
    let mut bytes = [0u8; 6];
    bytes[..4].copy_from_slice(&addr.octets());
    bytes[4..].copy_from_slice(&port.to_be_bytes());
    hash_bytes(0x6261_636b_656e_6421, &bytes)
}

/// Route lookup: the first interface whose subnet holds `ip`, else the first interface with
/// a gateway. `next_hop` is unspecified (0.0.0.0) when nothing reaches `ip`.
fn route_in(interfaces: &[Interface], ip: Ipv4Addr) -> Route {
    if let Some(index) = interfaces.iter().position(|i| i.contains(ip)) {
        return Route { egress: IfaceId(index as u8), next_hop: ip };
    }
    interfaces
        .iter()
        .enumerate()
        .find_map(|(index, i)| {
            i.gateway.map(|gateway| Route { egress: IfaceId(index as u8), next_hop: gateway })
        })
        .unwrap_or(Route { egress: IfaceId(0), next_hop: Ipv4Addr::UNSPECIFIED })
}

fn conntrack_config(settings: &ConntrackSettings) -> ConntrackConfig {
    ConntrackConfig {
        capacity: settings.capacity,
        max_embryonic: settings.max_embryonic,
        timeouts: Timeouts {
            tcp_syn: settings.tcp_syn_timeout,
            tcp_established: settings.tcp_established_timeout,
            tcp_closing: settings.tcp_closing_timeout,
            tcp_closed: settings.tcp_closed_timeout,
            udp: settings.udp_timeout,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("valid config")
    }

    const TWO_SERVICES: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.10/24"
        mac = "02:00:00:00:00:01"
        gateway = "10.1.1.1"

        [[service]]
        vip = "10.1.1.100"
        port = 80
        scheduler = "wrr"
        forward = "nat"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 8080
        weight = 2
        [[service.backend]]
        addr = "10.1.2.12"
        port = 8080

        [[service]]
        vip = "10.1.1.101"
        port = 53
        proto = "udp"
        forward = "fullnat"
        local_addrs = ["10.1.1.200"]
        [[service.backend]]
        addr = "10.1.1.13"
        port = 53
    "#;

    #[test]
    fn builds_indices_routes_and_ownership() {
        let snapshot = Snapshot::build(&config(TWO_SERVICES), 7).unwrap();
        assert_eq!(snapshot.generation, 7);
        let web = snapshot.service_at(Ipv4Addr::new(10, 1, 1, 100), 80, Proto::Tcp).unwrap();
        let dns = snapshot.service_at(Ipv4Addr::new(10, 1, 1, 101), 53, Proto::Udp).unwrap();
        assert_eq!(snapshot.service_at(Ipv4Addr::new(10, 1, 1, 101), 53, Proto::Tcp), None);
        assert_eq!(snapshot.service_backends(web).len(), 2);
        assert_eq!(snapshot.service_backends(dns)[0].service, dns);
        // On-link backend: its own address is the next hop; off-link: the gateway.
        let routes: Vec<_> =
            snapshot.service_backends(web).iter().map(|b| b.route.next_hop).collect();
        assert_eq!(routes, [Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 1)]);
        assert_eq!(snapshot.owned(Ipv4Addr::new(10, 1, 1, 100)), Some(Owned::Vip));
        assert_eq!(snapshot.owned(Ipv4Addr::new(10, 1, 1, 200)), Some(Owned::Local));
        assert_eq!(snapshot.owned(Ipv4Addr::new(10, 1, 1, 10)), Some(Owned::Interface(IfaceId(0))));
        assert_eq!(snapshot.owned(Ipv4Addr::new(10, 1, 1, 11)), None);
        assert!(snapshot.is_nat_backend(Ipv4Addr::new(10, 1, 1, 11)));
        assert!(!snapshot.is_nat_backend(Ipv4Addr::new(10, 1, 1, 13)));
        assert_eq!(snapshot.announced_addrs().len(), 3);
    }

    #[test]
    fn replay_needs_interface_macs() {
        let text = TWO_SERVICES.replace("mac = \"02:00:00:00:00:01\"\n", "");
        let error = Snapshot::build(&config(&text), 1).unwrap_err();
        assert_eq!(error, SnapshotError::MissingMac { name: "eth0".into() });
        assert!(error.to_string().contains("eth0"));
    }

    #[test]
    fn a_vip_may_not_be_the_box_address() {
        // The config file's checks refuse it first; the snapshot refuses it on its own too.
        let mut config = config(TWO_SERVICES);
        config.services[0].vip = Ipv4Addr::new(10, 1, 1, 10);
        assert!(config.validate().is_err());
        let error = Snapshot::build(&config, 1).unwrap_err();
        assert!(matches!(error, SnapshotError::VipIsInterfaceAddr { .. }), "{error}");
        assert!(error.to_string().contains("eth0"));
    }

    #[test]
    fn backend_identity_is_stable() {
        let a = backend_identity(Ipv4Addr::new(10, 1, 1, 11), 80);
        // A literal: the Maglev permutation of every deployed backend depends on it.
        assert_eq!(a, 0x832d_4b74_aed5_0ddc);
        assert_ne!(a, backend_identity(Ipv4Addr::new(10, 1, 1, 11), 81));
        assert_ne!(a, backend_identity(Ipv4Addr::new(10, 1, 1, 12), 80));
    }
}
