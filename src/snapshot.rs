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

//!
//! # Families
//!
//! A snapshot holds one list of services and one of backends, whatever their family: a
//! service's `vip`, `local_addrs` and its backends' `addr` are [`IpAddr`]s, all of the
//! service's family (control's build refuses a mix), and the per-service and per-backend
//! state of the pipeline stays one list indexed like them. What the hot path looks up by
//! address is kept per family, in a [`FamilyIndex`] reached by [`Snapshot::family`]`::<F>()`
//! with addresses of that family only (`Ipv4Addr` or `Ipv6Addr`, never an enum to match on
//! every packet): what xlb owns, the NAT backends, services by VIP:port/proto, routes over
//! the interfaces' subnets of that family, and, indexed like [`Snapshot::backends`] and
//! [`Snapshot::services`], each backend's address and route and each service's FullNAT local
//! addresses. Invariants:
//! - a family's index answers only for its own family: `family::<V4>()` knows nothing of an
//!   IPv6 service and `family::<V6>()` nothing of an IPv4 one (`service_at` and `owned` say
//!   `None`, `local_addrs` is empty);
//! - its per-backend vectors have one entry per backend of the snapshot; a backend of the
//!   other family reads as the unspecified address with an unspecified next hop on
//!   interface 0, as an IPv4 backend no interface reaches always has;
//! - the IPv4 methods of [`Snapshot`] (`owned`, `service_at`, `route`, `is_nat_backend`,
//!   `announced_addrs`) are `family::<V4>()`'s, and what they answer for an IPv4-only
//!   snapshot is what they answered before IPv6 existed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use hashbrown::{HashMap, HashSet};

use crate::addr_map::AddrMap;
use crate::conntrack::ConntrackConfig;
use crate::conntrack::Flow;
use crate::family::{Family, V4, V6};
use crate::flow::{ForwardMode, Proto, Tunnel, TunnelSource};
use crate::hash::hash_bytes;
use crate::sched::{MaglevTable, Scheduler};
use crate::wire::MacAddr;

mod owners;
pub use owners::{
    OWNER_INTERFACE, OWNER_LOCAL, OWNER_NONE, OWNER_VIP, OwnerCode, OwnerLookup, OwnerTable,
    owner_code,
};

/// Index of an interface in [`Snapshot::interfaces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IfaceId(pub u8);

impl IfaceId {
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// One of the box's interfaces: its IPv4 side (always there), its IPv6 side (if it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: MacAddr,
    pub gateway: Option<Ipv4Addr>,
    /// The box's IPv6 address on this link, its subnet and IPv6 next hop, if any: the
    /// source of xlb's neighbour solicitations (never a VIP) and the routes of IPv6 backends.
    pub ipv6: Option<Interface6>,
    /// The link's MTU: tunnelled packets leaving here must fit it.
    pub mtu: u16,
    /// The outer source prefix of tunnel services leaving here that set none; none: `addr`.
    pub tunnel_source: Option<TunnelSource>,
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

    /// This interface's side of family `F` (IPv4: always; IPv6: when it has an address).
    #[inline]
    pub fn subnet<F: Indexed>(&self) -> Option<Subnet<F>> {
        F::subnet(self)
    }
}

/// One family's side of an interface: the box's own address on the link, the subnet's
/// prefix length, and the next hop for addresses off the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet<F: Family = V4> {
    pub addr: F::Addr,
    pub prefix_len: u8,
    pub gateway: Option<F::Addr>,
}

/// An interface's IPv6 side (`addr6`/`gateway6` in the config).
pub type Interface6 = Subnet<V6>;

impl<F: Indexed> Subnet<F> {
    /// True if `ip` is on this subnet.
    #[inline]
    pub fn contains(&self, ip: F::Addr) -> bool {
        F::same_prefix(ip, self.addr, self.prefix_len)
    }
}

/// A family the snapshot keeps an index for, [`V4`] or [`V6`] (sealed, as [`Family`] is):
/// it picks the family's [`FamilyIndex`] and the family's side of an interface.
pub trait Indexed: Family {
    /// The snapshot's index of this family.
    fn index(snapshot: &Snapshot) -> &FamilyIndex<Self>;
    /// The interface's side of this family, if it has one.
    fn subnet(interface: &Interface) -> Option<Subnet<Self>>;
    /// `ip`, if it is of this family.
    fn of_ip(ip: IpAddr) -> Option<Self::Addr>;
    /// True if `a` and `b` agree in their first `prefix_len` bits.
    fn same_prefix(a: Self::Addr, b: Self::Addr, prefix_len: u8) -> bool;
}

impl Indexed for V4 {
    #[inline]
    fn index(snapshot: &Snapshot) -> &FamilyIndex<V4> {
        &snapshot.v4
    }

    #[inline]
    fn subnet(interface: &Interface) -> Option<Subnet<V4>> {
        Some(Subnet {
            addr: interface.addr,
            prefix_len: interface.prefix_len,
            gateway: interface.gateway,
        })
    }

    #[inline]
    fn of_ip(ip: IpAddr) -> Option<Ipv4Addr> {
        match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        }
    }

    #[inline]
    fn same_prefix(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        (a.to_bits() & mask) == (b.to_bits() & mask)
    }
}

impl Indexed for V6 {
    #[inline]
    fn index(snapshot: &Snapshot) -> &FamilyIndex<V6> {
        &snapshot.v6
    }

    #[inline]
    fn subnet(interface: &Interface) -> Option<Subnet<V6>> {
        interface.ipv6
    }

    #[inline]
    fn of_ip(ip: IpAddr) -> Option<Ipv6Addr> {
        match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(ip) => Some(ip),
        }
    }

    #[inline]
    fn same_prefix(a: Ipv6Addr, b: Ipv6Addr, prefix_len: u8) -> bool {
        let mask = u128::MAX.checked_shl(128u32.saturating_sub(u32::from(prefix_len))).unwrap_or(0);
        (a.to_bits() & mask) == (b.to_bits() & mask)
    }
}

/// A virtual service: VIP:port/proto, its scheduler and its backends, all of one family.
#[derive(Debug, Clone)]
pub struct Service {
    pub vip: IpAddr,
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
    /// FullNAT source pool, of the VIP's family (the hot path reads
    /// [`FamilyIndex::local_addrs`]).
    pub local_addrs: Vec<IpAddr>,
    /// Range into [`Snapshot::backends`].
    pub backends: Range<usize>,
    /// Persistence (`-p`): new connections of a client follow its template in the shared
    /// [`crate::persist::Templates`] before the scheduler is asked (None: off).
    pub persistence: Option<crate::persist::ServicePersistence>,
    /// How a tunnel service wraps packets: `Some` exactly when `forward` is tunnel.
    pub tunnel: Option<Tunnel>,
}

/// What a backend is, whatever its position in a snapshot: its service's VIP:port/proto and
/// its own address:port (the same real server in two services is two backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub vip: IpAddr,
    pub vport: u16,
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
}

impl BackendId {
    /// The backend a tracked (IPv4) flow was scheduled to.
    #[inline]
    pub fn of_flow(flow: &Flow) -> BackendId {
        BackendId {
            vip: IpAddr::V4(flow.vip),
            vport: flow.vport,
            proto: flow.proto,
            addr: IpAddr::V4(flow.backend_addr),
            port: flow.backend_port,
        }
    }
}

impl std::fmt::Display for BackendId {
    /// `10.1.1.10:80/tcp -> 10.1.1.11:80`, `[2001:db8::10]:80/tcp -> [2001:db8::11]:80`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            SocketAddr::new(self.vip, self.vport),
            self.proto,
            SocketAddr::new(self.addr, self.port)
        )
    }
}

/// A backend's identity in its family's own addresses: what the hot path compares a
/// tracked flow with (one fixed-size comparison, no address enum), beside the
/// family-agnostic [`BackendId`] it converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyBackendId<F: Family = V4> {
    pub vip: F::Addr,
    pub addr: F::Addr,
    pub vport: u16,
    pub port: u16,
    pub proto: Proto,
}

impl<F: Family> FamilyBackendId<F> {
    /// The backend a tracked flow was scheduled to.
    #[inline]
    pub fn of_flow(flow: &Flow<F>) -> FamilyBackendId<F> {
        FamilyBackendId {
            vip: flow.vip,
            addr: flow.backend_addr,
            vport: flow.vport,
            port: flow.backend_port,
            proto: flow.proto,
        }
    }
}

impl<F: Family> FamilyBackendId<F> {
    /// What a backend of the other family reads as in a family's index: no flow has the
    /// unspecified address as its VIP (flows are made for services only), so none matches.
    const NONE: FamilyBackendId<F> = FamilyBackendId {
        vip: F::UNSPECIFIED,
        addr: F::UNSPECIFIED,
        vport: 0,
        port: 0,
        proto: Proto::Tcp,
    };
}

impl<F: Family> From<FamilyBackendId<F>> for BackendId {
    fn from(id: FamilyBackendId<F>) -> BackendId {
        BackendId {
            vip: F::ip(id.vip),
            vport: id.vport,
            proto: id.proto,
            addr: F::ip(id.addr),
            port: id.port,
        }
    }
}

/// A real server of one service, of its service's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// Its identity (`addr` and `port` included): what state that outlives the snapshot is
    /// keyed by.
    pub id: BackendId,
    /// Index of its service in [`Snapshot::services`].
    pub service: usize,
    /// Down by health check (whatever its weight): a persistence template that names it
    /// dies, where one naming a backend drained by the operator (weight 0) lives on, as in
    /// IPVS (`expire_quiescent_template` = 0).
    pub down: bool,
}

/// The interface and next hop towards an address of family `F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<F: Family = V4> {
    pub egress: IfaceId,
    pub next_hop: F::Addr,
}

impl<F: Family> Route<F> {
    /// Where nothing leads: interface 0, the unspecified next hop.
    const NOWHERE: Route<F> = Route { egress: IfaceId(0), next_hop: F::UNSPECIFIED };
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

/// What the hot path looks up by address, for one family (see the module docs): built by
/// [`Snapshot::new`], reached by [`Snapshot::family`].
#[derive(Debug, Clone)]
pub struct FamilyIndex<F: Family> {
    /// The interfaces that have an address of this family, in interface order.
    subnets: Vec<(IfaceId, Subnet<F>)>,
    owned: AddrMap<Owned, F>,
    /// Backends of NAT services: a packet from one of them may be a reply to translate.
    nat_backends: AddrMap<(), F>,
    /// Services by VIP: each VIP's range in `service_ports` (one probe of the address map
    /// the owned addresses use, then a scan of that VIP's few ports; a new flow's lookup).
    services: AddrMap<(u32, u32), F>,
    /// Every service of this family as (port, protocol, service index), grouped by VIP.
    service_ports: Vec<(u16, Proto, usize)>,
    /// Per backend of the snapshot ([`FamilyBackendId::NONE`] for the other family's).
    backend_ids: Vec<FamilyBackendId<F>>,
    /// Per backend of the snapshot ([`Route::NOWHERE`] for the other family's).
    backend_routes: Vec<Route<F>>,
    /// Per service of the snapshot (empty for the other family's).
    local_addrs: Vec<Vec<F::Addr>>,
    static_neighbors: Vec<(F::Addr, MacAddr)>,
}

impl<F: Indexed> FamilyIndex<F> {
    /// The index of family `F` over a snapshot's content: each interface's own address,
    /// then every VIP and FullNAT local address not owned already, in service order (the
    /// first owner of an address wins).
    fn new(
        interfaces: &[Interface],
        services: &[Service],
        backends: &[Backend],
        static_neighbors: &[(IpAddr, MacAddr)],
    ) -> FamilyIndex<F> {
        let subnets: Vec<(IfaceId, Subnet<F>)> = interfaces
            .iter()
            .enumerate()
            .filter_map(|(index, interface)| Some((IfaceId(index as u8), F::subnet(interface)?)))
            .collect();
        let mine = |s: &&Service| F::of_ip(s.vip).is_some();
        let owned_count = subnets.len()
            + services.iter().filter(mine).map(|s| 1 + s.local_addrs.len()).sum::<usize>();
        let mut owned = AddrMap::new(owned_count);
        for &(id, subnet) in &subnets {
            owned.insert(subnet.addr, Owned::Interface(id));
        }
        let mut index = HashMap::new();
        let mut nat_backends = AddrMap::new(backends.len());
        let mut local_addrs = Vec::with_capacity(services.len());
        for (number, service) in services.iter().enumerate() {
            let locals: Vec<F::Addr> =
                service.local_addrs.iter().filter_map(|&ip| F::of_ip(ip)).collect();
            if let Some(vip) = F::of_ip(service.vip) {
                if service.forward == ForwardMode::Nat {
                    for backend in &backends[service.backends.clone()] {
                        if let Some(addr) = F::of_ip(backend.addr) {
                            nat_backends.insert(addr, ());
                        }
                    }
                }
                if owned.get(vip).is_none() {
                    owned.insert(vip, Owned::Vip);
                }
                for &local in &locals {
                    if owned.get(local).is_none() {
                        owned.insert(local, Owned::Local);
                    }
                }
                index.insert((vip, service.port, service.proto), number);
            }
            local_addrs.push(locals);
        }
        // Grouped by VIP, each group in one run of `service_ports` (the map keeps the last
        // service of a VIP:port/proto, as a map insert does).
        let mut entries: Vec<(F::Addr, u16, Proto, usize)> = index
            .into_iter()
            .map(|((vip, port, proto), number)| (vip, port, proto, number))
            .collect();
        entries.sort_unstable_by_key(|&(vip, port, proto, _)| (F::key(vip).into(), port, proto));
        let mut services_by_vip = AddrMap::new(entries.len());
        let mut service_ports = Vec::with_capacity(entries.len());
        for group in entries.chunk_by(|a, b| F::key(a.0) == F::key(b.0)) {
            let start = service_ports.len() as u32;
            service_ports
                .extend(group.iter().map(|&(_, port, proto, number)| (port, proto, number)));
            if let Some(&(vip, ..)) = group.first() {
                services_by_vip.insert(vip, (start, service_ports.len() as u32));
            }
        }
        let family_id = |id: &BackendId| {
            Some(FamilyBackendId {
                vip: F::of_ip(id.vip)?,
                addr: F::of_ip(id.addr)?,
                vport: id.vport,
                port: id.port,
                proto: id.proto,
            })
        };
        let backend_ids: Vec<FamilyBackendId<F>> =
            backends.iter().map(|b| family_id(&b.id).unwrap_or(FamilyBackendId::NONE)).collect();
        let backend_routes = backends
            .iter()
            .map(|b| match F::of_ip(b.addr) {
                Some(addr) => route_over(&subnets, addr),
                None => Route::NOWHERE,
            })
            .collect();
        let static_neighbors =
            static_neighbors.iter().filter_map(|&(ip, mac)| Some((F::of_ip(ip)?, mac))).collect();
        FamilyIndex {
            subnets,
            owned,
            nat_backends,
            services: services_by_vip,
            service_ports,
            backend_ids,
            backend_routes,
            local_addrs,
            static_neighbors,
        }
    }

    /// What xlb owns at `ip`, if anything.
    #[inline]
    pub fn owned(&self, ip: F::Addr) -> Option<Owned> {
        self.owned.get(ip)
    }

    /// True if `ip` is a backend of a NAT service (its packets may be replies to translate).
    #[inline]
    pub fn is_nat_backend(&self, ip: F::Addr) -> bool {
        !self.nat_backends.is_empty() && self.nat_backends.get(ip).is_some()
    }

    /// The service at VIP:port/proto.
    #[inline]
    pub fn service_at(&self, vip: F::Addr, port: u16, proto: Proto) -> Option<usize> {
        let (start, end) = self.services.get(vip)?;
        let ports = self.service_ports.get(start as usize..end as usize)?;
        ports.iter().find(|&&(p, q, _)| p == port && q == proto).map(|&(_, _, number)| number)
    }

    /// The route towards `ip`: the first interface whose subnet of this family holds it,
    /// else the first with a gateway of this family; `None` when no interface reaches it.
    #[inline]
    pub fn route(&self, ip: F::Addr) -> Option<Route<F>> {
        let route = route_over(&self.subnets, ip);
        (route.next_hop != F::UNSPECIFIED).then_some(route)
    }

    /// The address of backend `index` (the unspecified address for a backend of the other
    /// family, or an index out of range).
    #[inline]
    pub fn backend_addr(&self, index: usize) -> F::Addr {
        self.backend_ids.get(index).map_or(F::UNSPECIFIED, |id| id.addr)
    }

    /// The identity of backend `index` in this family's addresses (for a backend of the
    /// other family, unspecified addresses and ports), or `None` for an index out of range.
    #[inline]
    pub fn backend_id(&self, index: usize) -> Option<&FamilyBackendId<F>> {
        self.backend_ids.get(index)
    }

    /// True if backend `index` is the one `id` names (a backend of the other family, or an
    /// index out of range, is none).
    #[inline]
    pub fn backend_is(&self, index: usize, id: &FamilyBackendId<F>) -> bool {
        self.backend_ids.get(index) == Some(id)
    }

    /// The route to backend `index`, computed when the snapshot was built (the unspecified
    /// next hop when no interface reaches it, for a backend of the other family, or an index
    /// out of range).
    #[inline]
    pub fn backend_route(&self, index: usize) -> Route<F> {
        self.backend_routes.get(index).copied().unwrap_or(Route::NOWHERE)
    }

    /// Every backend's route, indexed like [`Snapshot::backends`] (see
    /// [`FamilyIndex::backend_route`]).
    #[inline]
    pub fn backend_routes(&self) -> &[Route<F>] {
        &self.backend_routes
    }

    /// Service `service`'s FullNAT local addresses (empty for a service of the other family).
    #[inline]
    pub fn local_addrs(&self, service: usize) -> &[F::Addr] {
        self.local_addrs.get(service).map_or(&[], Vec::as_slice)
    }

    /// Addresses xlb answers ARP (IPv4) or NDP (IPv6) for itself: every VIP and local address
    /// of this family, with the interface to announce each on, sorted.
    pub fn announced(&self) -> Vec<(F::Addr, IfaceId)> {
        let mut addrs: Vec<(F::Addr, IfaceId)> = self
            .owned
            .iter()
            .filter(|(_, owned)| matches!(owned, Owned::Vip | Owned::Local))
            .map(|(ip, _)| (ip, route_over(&self.subnets, ip).egress))
            .collect();
        addrs.sort();
        addrs
    }

    /// The static neighbours (`[[neighbor]]`) of this family.
    #[inline]
    pub fn static_neighbors(&self) -> &[(F::Addr, MacAddr)] {
        &self.static_neighbors
    }

    /// The interfaces that have an address of this family, with that side, in interface
    /// order.
    #[inline]
    pub fn subnets(&self) -> &[(IfaceId, Subnet<F>)] {
        &self.subnets
    }

    /// True if `ip` is on the subnet of an interface (directly reachable).
    #[inline]
    pub fn on_link(&self, ip: F::Addr) -> bool {
        self.subnets.iter().any(|(_, subnet)| subnet.contains(ip))
    }
}

/// Everything a worker needs to process packets, immutable.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub interfaces: Vec<Interface>,
    pub services: Vec<Service>,
    pub backends: Vec<Backend>,
    /// Static neighbours of both families, in config order (each family's are also in its
    /// [`FamilyIndex::static_neighbors`]).
    pub static_neighbors: Vec<(IpAddr, MacAddr)>,
    pub conntrack: ConntrackConfig,
    /// Measured response time per backend, in µs (0 = unknown): the least-time scheduler's
    /// input, fed by the control side.
    pub response_time_us: Vec<u32>,
    /// How the box takes part in a fleet (the config's `[fleet] mode`; standalone unless
    /// control's build sets it): whether the pipeline speaks for the VIPs.
    pub fleet: crate::fleet::FleetMode,
    /// Backends health checks took out of their service (`on_failure = "remove"`; control's
    /// build sets them, [`Snapshot::set_rescheduled`]): their flows go to another backend on
    /// their client's next packet ([`Snapshot::reschedules`]). A backend the operator removed
    /// is not among them: its flows finish where they are, as IPVS's by default.
    rescheduled: HashSet<BackendId>,
    backend_index: HashMap<BackendId, usize>,
    v4: FamilyIndex<V4>,
    v6: FamilyIndex<V6>,
    /// IPv4's owned addresses again, for the batch's first pass ([`Snapshot::owner_table`]).
    owners: OwnerTable,
}

impl Snapshot {
    /// Assembles a snapshot from its content and derives its look-up indices: backends by
    /// identity, and each family's [`FamilyIndex`]. Every backend's response time starts
    /// unknown (0).
    ///
    /// Each service's `backends` must be a range of `backends` (control's build makes them
    /// so; a range out of bounds panics here, off the hot path).
    pub fn new(
        generation: u64,
        interfaces: Vec<Interface>,
        services: Vec<Service>,
        backends: Vec<Backend>,
        static_neighbors: Vec<(IpAddr, MacAddr)>,
        conntrack: ConntrackConfig,
    ) -> Snapshot {
        let mut backend_index = HashMap::with_capacity(backends.len());
        for service in &services {
            for (index, backend) in backends[service.backends.clone()].iter().enumerate() {
                backend_index.insert(backend.id, service.backends.start + index);
            }
        }
        let v4 = FamilyIndex::new(&interfaces, &services, &backends, &static_neighbors);
        let v6 = FamilyIndex::new(&interfaces, &services, &backends, &static_neighbors);
        let owners = OwnerTable::new(v4.owned.iter());
        let response_time_us = vec![0; backends.len()];
        Snapshot {
            generation,
            interfaces,
            services,
            backends,
            static_neighbors,
            conntrack,
            response_time_us,
            fleet: crate::fleet::FleetMode::Standalone,
            rescheduled: HashSet::new(),
            backend_index,
            v4,
            v6,
            owners,
        }
    }

    /// IPv4's owned addresses as the batch's first pass looks them up: the same answers as
    /// [`Snapshot::owned`] (for every address when the table [is
    /// complete](OwnerTable::is_complete)), keyed by an address's bytes as they lie in a frame.
    #[inline]
    pub fn owner_table(&self) -> &OwnerTable {
        &self.owners
    }

    /// The index of family `F`: `snapshot.family::<V6>().service_at(vip, 80, Proto::Tcp)`.
    #[inline]
    pub fn family<F: Indexed>(&self) -> &FamilyIndex<F> {
        F::index(self)
    }

    /// The IPv4 service at VIP:port/proto.
    #[inline]
    pub fn service_at(&self, vip: Ipv4Addr, port: u16, proto: Proto) -> Option<usize> {
        self.v4.service_at(vip, port, proto)
    }

    /// The service at VIP:port/proto, of either family (for the edges: ctl, reports).
    pub fn service_at_ip(&self, vip: IpAddr, port: u16, proto: Proto) -> Option<usize> {
        match vip {
            IpAddr::V4(vip) => self.v4.service_at(vip, port, proto),
            IpAddr::V6(vip) => self.v6.service_at(vip, port, proto),
        }
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
    pub fn backend_of_flow<F: Indexed>(&self, flow: &Flow<F>) -> Option<usize> {
        let hint = usize::from(flow.backend);
        if self.family::<F>().backend_is(hint, &FamilyBackendId::of_flow(flow)) {
            return Some(hint);
        }
        self.backend_renumbered(flow)
    }

    /// Sets the backends whose flows are rescheduled (see [`Snapshot::reschedules`]): those
    /// health checks took out of their service. Any of them still in the snapshot is
    /// ignored (its flows stay).
    pub fn set_rescheduled(&mut self, removed: impl IntoIterator<Item = BackendId>) {
        self.rescheduled =
            removed.into_iter().filter(|id| !self.backend_index.contains_key(id)).collect();
    }

    /// True if a flow of `F` scheduled to a backend no longer in this snapshot is to be
    /// scheduled again on its client's next packet: its backend was taken out of its service
    /// by its health check (`on_failure = "remove"`, IPVS's `expire_nodest_conn`). Asked
    /// only of flows whose backend is gone ([`Snapshot::backend_of_flow`] is None): never on
    /// a settled hit.
    #[cold]
    pub fn reschedules<F: Indexed>(&self, flow: &Flow<F>) -> bool {
        !self.rescheduled.is_empty()
            && self.rescheduled.contains(&BackendId::from(FamilyBackendId::of_flow(flow)))
    }

    #[cold]
    #[inline(never)]
    fn backend_renumbered<F: Indexed>(&self, flow: &Flow<F>) -> Option<usize> {
        self.backend_at(&FamilyBackendId::of_flow(flow).into())
    }

    /// What xlb owns at IPv4 address `ip`, if anything.
    #[inline]
    pub fn owned(&self, ip: Ipv4Addr) -> Option<Owned> {
        self.v4.owned(ip)
    }

    /// True if `ip` is a backend of an IPv4 NAT service (its packets may be replies to
    /// translate).
    #[inline]
    pub fn is_nat_backend(&self, ip: Ipv4Addr) -> bool {
        self.v4.is_nat_backend(ip)
    }

    /// The route towards IPv4 address `ip`, or `None` when no interface reaches it.
    #[inline]
    pub fn route(&self, ip: Ipv4Addr) -> Option<Route> {
        self.v4.route(ip)
    }

    /// The backends of service `service`.
    pub fn service_backends(&self, service: usize) -> &[Backend] {
        self.services.get(service).map_or(&[], |s| &self.backends[s.backends.clone()])
    }

    /// IPv4 addresses xlb answers ARP for itself: every VIP and local address, with the
    /// interface to announce each on ([`FamilyIndex::announced`] of IPv4).
    pub fn announced_addrs(&self) -> Vec<(Ipv4Addr, IfaceId)> {
        self.v4.announced()
    }
}

/// The stable identity Maglev hashes for a backend: its address and port (IPv4: the 4
/// address bytes then the port's 2, big-endian, as always; IPv6: the 16 address bytes then
/// the port's 2). The same backend gets the same permutation in every process and after
/// every restart.
pub fn backend_identity(addr: IpAddr, port: u16) -> u64 {
    let mut bytes = [0u8; 18];
    let len = match addr {
        IpAddr::V4(addr) => {
            bytes[..4].copy_from_slice(&addr.octets());
            4
        }
        IpAddr::V6(addr) => {
            bytes[..16].copy_from_slice(&addr.octets());
            16
        }
    };
    bytes[len..len + 2].copy_from_slice(&port.to_be_bytes());
    hash_bytes(0x6261_636b_656e_6421, &bytes[..len + 2])
}

/// Route lookup over one family's interface sides: the first whose subnet holds `ip`, else
/// the first with a gateway; [`Route::NOWHERE`] when nothing reaches `ip`.
#[inline]
fn route_over<F: Indexed>(subnets: &[(IfaceId, Subnet<F>)], ip: F::Addr) -> Route<F> {
    if let Some(&(egress, _)) = subnets.iter().find(|(_, subnet)| subnet.contains(ip)) {
        return Route { egress, next_hop: ip };
    }
    subnets
        .iter()
        .find_map(|&(egress, subnet)| subnet.gateway.map(|next_hop| Route { egress, next_hop }))
        .unwrap_or(Route::NOWHERE)
}

/// Route lookup in family `F`: the first interface whose subnet of that family holds `ip`,
/// else the first interface with a gateway of that family. `next_hop` is unspecified
/// (0.0.0.0, ::) when nothing reaches `ip`. Control routes backends with it before their
/// snapshot exists; [`FamilyIndex::route`] is the same look-up.
pub fn route_in<F: Indexed>(interfaces: &[Interface], ip: F::Addr) -> Route<F> {
    let subnets: Vec<(IfaceId, Subnet<F>)> = interfaces
        .iter()
        .enumerate()
        .filter_map(|(index, interface)| Some((IfaceId(index as u8), F::subnet(interface)?)))
        .collect();
    route_over(&subnets, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_identity_is_stable() {
        let a = backend_identity(Ipv4Addr::new(10, 1, 1, 11).into(), 80);
        // A literal: the Maglev permutation of every deployed backend depends on it.
        assert_eq!(a, 0x832d_4b74_aed5_0ddc);
        assert_ne!(a, backend_identity(Ipv4Addr::new(10, 1, 1, 11).into(), 81));
        assert_ne!(a, backend_identity(Ipv4Addr::new(10, 1, 1, 12).into(), 80));
    }

    #[test]
    fn ipv6_backend_identity_is_stable() {
        let addr: IpAddr = "2001:db8::11".parse().unwrap();
        let a = backend_identity(addr, 80);
        // A literal, as IPv4's: IPv6 Maglev permutations depend on it.
        assert_eq!(a, 0x66b2_d7bc_93c4_7b6c);
        assert_ne!(a, backend_identity(addr, 81));
        assert_ne!(a, backend_identity("2001:db8::12".parse().unwrap(), 80));
        // The IPv4-mapped form of an IPv4 backend is another identity.
        assert_ne!(
            backend_identity("::ffff:10.1.1.11".parse().unwrap(), 80),
            backend_identity(Ipv4Addr::new(10, 1, 1, 11).into(), 80)
        );
    }

    #[test]
    fn backend_ids_bracket_ipv6_endpoints() {
        let v4 = BackendId {
            vip: Ipv4Addr::new(10, 1, 1, 10).into(),
            vport: 80,
            proto: Proto::Tcp,
            addr: Ipv4Addr::new(10, 1, 1, 11).into(),
            port: 8080,
        };
        assert_eq!(v4.to_string(), "10.1.1.10:80/tcp -> 10.1.1.11:8080");
        let v6 = BackendId {
            vip: "2001:db8::10".parse().unwrap(),
            vport: 80,
            proto: Proto::Udp,
            addr: "2001:db8::11".parse().unwrap(),
            port: 53,
        };
        assert_eq!(v6.to_string(), "[2001:db8::10]:80/udp -> [2001:db8::11]:53");
    }

    #[test]
    fn subnets_match_prefixes_of_their_family() {
        let six =
            Interface6 { addr: "2001:db8:1::10".parse().unwrap(), prefix_len: 64, gateway: None };
        assert!(six.contains("2001:db8:1::ffff".parse().unwrap()));
        assert!(!six.contains("2001:db8:2::10".parse().unwrap()));
        let all = Interface6 { prefix_len: 0, ..six };
        assert!(all.contains("fe80::1".parse().unwrap()));
        let host = Interface6 { prefix_len: 128, ..six };
        assert!(host.contains(six.addr) && !host.contains("2001:db8:1::11".parse().unwrap()));
        let four =
            Subnet::<V4> { addr: Ipv4Addr::new(10, 1, 1, 10), prefix_len: 24, gateway: None };
        assert!(four.contains(Ipv4Addr::new(10, 1, 1, 200)));
        assert!(!four.contains(Ipv4Addr::new(10, 1, 2, 1)));
    }
}
