//! The immutable snapshot every worker reads: interfaces, services with their built
//! schedulers, backends with their precomputed next hops, the addresses xlb owns.
//!
//! Control builds a snapshot from a validated config off the hot path (Maglev tables
//! included; [`crate::control::snapshot`]) and publishes it behind an `Arc`; a worker swaps to
//! a new one between batches. Nothing in a snapshot changes after it is built, so workers
//! read it without locks.
//!
//! This module is shared ground: control builds these types and the dataplane reads them, so
//! they live in neither. It imports neither `control` nor `dataplane`, and the dataplane
//! never imports control (the crate's `layers` tests hold both to it). [`Snapshot::new`]
//! derives the look-up indices from the content it is given, so whoever builds a snapshot
//! cannot make them disagree.
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
use crate::conntrack::ConntrackConfig;
use crate::conntrack::Flow;
use crate::flow::{ForwardMode, Proto};
use crate::hash::hash_bytes;
use crate::sched::{MaglevTable, Scheduler};
use crate::wire::MacAddr;

/// Index of an interface in [`Snapshot::interfaces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IfaceId(pub u8);

impl IfaceId {
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
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
    /// Assembles a snapshot from its content and derives its look-up indices: services by
    /// VIP:port/proto, backends by identity, the addresses xlb owns (each interface's own,
    /// then every VIP and FullNAT local address not owned already, in service order), and
    /// the backends of NAT services. Every backend's response time starts unknown (0).
    ///
    /// Each service's `backends` must be a range of `backends` (control's build makes them
    /// so; a range out of bounds panics here, off the hot path).
    pub fn new(
        generation: u64,
        interfaces: Vec<Interface>,
        services: Vec<Service>,
        backends: Vec<Backend>,
        static_neighbors: Vec<(Ipv4Addr, MacAddr)>,
        conntrack: ConntrackConfig,
    ) -> Snapshot {
        let owned_count =
            interfaces.len() + services.iter().map(|s| 1 + s.local_addrs.len()).sum::<usize>();
        let mut owned = AddrMap::with_capacity(owned_count);
        for (index, interface) in interfaces.iter().enumerate() {
            owned.insert(interface.addr, Owned::Interface(IfaceId(index as u8)));
        }
        let mut service_index = HashMap::new();
        let mut backend_index = HashMap::with_capacity(backends.len());
        let mut nat_backends = AddrMap::with_capacity(backends.len());
        for (number, service) in services.iter().enumerate() {
            for (index, backend) in backends[service.backends.clone()].iter().enumerate() {
                backend_index.insert(backend.id, service.backends.start + index);
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
            service_index.insert((service.vip, service.port, service.proto), number);
        }
        let response_time_us = vec![0; backends.len()];
        Snapshot {
            generation,
            interfaces,
            services,
            backends,
            static_neighbors,
            conntrack,
            response_time_us,
            service_index,
            backend_index,
            owned,
            nat_backends,
        }
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
/// a gateway. `next_hop` is unspecified (0.0.0.0) when nothing reaches `ip`. Control routes
/// backends with it before their snapshot exists; [`Snapshot::route`] is the same look-up.
pub fn route_in(interfaces: &[Interface], ip: Ipv4Addr) -> Route {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_identity_is_stable() {
        let a = backend_identity(Ipv4Addr::new(10, 1, 1, 11), 80);
        // A literal: the Maglev permutation of every deployed backend depends on it.
        assert_eq!(a, 0x832d_4b74_aed5_0ddc);
        assert_ne!(a, backend_identity(Ipv4Addr::new(10, 1, 1, 11), 81));
        assert_ne!(a, backend_identity(Ipv4Addr::new(10, 1, 1, 12), 80));
    }
}
