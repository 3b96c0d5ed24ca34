//! How control builds the [`Snapshot`] workers read from a validated [`Config`]: interfaces
//! with their MACs, services with their schedulers and Maglev fallback tables built here,
//! off the hot path, and every backend's route. The snapshot types themselves live in
//! [`crate::snapshot`], which both control and the dataplane import; this module adds
//! control's constructors to them ([`Snapshot::build`], [`BackendId::of_config`]) because
//! only control knows the config.
//!
//! Both families are built alike (issue 12): an IPv6 service gets its scheduler and Maglev
//! table (over [`backend_identity`] of its backends' IPv6 addresses), its backends their
//! routes over the interfaces' IPv6 sides (`addr6`, `gateway6`), its FullNAT pool its IPv6
//! local addresses; static neighbours of both families go in. What `build` refuses, naming
//! the service (and the address): a service whose backends or local addresses are not all
//! of its VIP's family ([`SnapshotError::MixedFamilies`]; the config file refuses it first,
//! a config built in code may not), a VIP that is an interface's own address of either
//! family, an IPv6 service on a box with no interface IPv6 address (xlb solicits neighbours
//! from the interface's own address, never the VIP), and an IPv6 backend no interface
//! reaches (neither on an IPv6 subnet nor behind a `gateway6`). An IPv4 backend no interface
//! reaches is built as before, with the unspecified next hop.

use std::net::IpAddr;

use crate::conntrack::{ConntrackConfig, Timeouts};
use crate::control::config::{BackendConfig, Config, ConntrackSettings, ServiceConfig, endpoint};
use crate::family::V6;
use crate::flow::Proto;
use crate::hash::TableSecret;
use crate::persist::ServicePersistence;
use crate::sched::{BackendSpec, MaglevTable, SchedError, Scheduler};
use crate::snapshot::{
    Backend, BackendId, Interface, Interface6, Service, Snapshot, backend_identity, route_in,
};
use crate::wire::MacAddr;

/// Why a config could not become a snapshot.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("interface {name}: no `mac` given; replay needs the box's MAC for each interface")]
    MissingMac { name: String },
    #[error("service {}/{proto}: {source}", endpoint(*.vip, *.port))]
    Scheduler { vip: IpAddr, port: u16, proto: Proto, source: SchedError },
    #[error(
        "service {}: the VIP is interface {interface}'s own address; xlb answers {} \
         for VIPs itself and asks for backends from the interface address, so the two must \
         differ (a real server holding the VIP on lo ignores {} from its own address)",
        endpoint(*.vip, *.port), resolution(*.vip), resolution(*.vip)
    )]
    VipIsInterfaceAddr { vip: IpAddr, port: u16, interface: String },
    #[error("too many {what}: {count} (at most {max})")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error(
        "service {service}: {addr} is {} but the service is {}: a service's real servers and \
         local addresses are of its VIP's family (xlb does not translate between families)",
        family(*.addr), other_family(*.addr)
    )]
    MixedFamilies {
        /// `[2001:db8::10]:80/tcp`.
        service: String,
        addr: IpAddr,
    },
    #[error(
        "service {service}: no interface has an IPv6 address (addr6): xlb answers NDP for an \
         IPv6 VIP and solicits its real servers from the interface's own IPv6 address"
    )]
    NoIpv6Interface {
        /// `[2001:db8::10]:80/tcp`.
        service: String,
    },
    #[error(
        "service {service}: real server {backend} is on no interface's IPv6 subnet and no \
         interface has a gateway6: xlb cannot reach it"
    )]
    Unreachable {
        /// `[2001:db8::10]:80/tcp`.
        service: String,
        /// `[2001:db8:9::11]:80`.
        backend: String,
    },
}

/// How a family resolves neighbours: ARP or NDP.
fn resolution(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ARP" } else { "NDP" }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn other_family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv6" } else { "IPv4" }
}

/// `10.1.1.100:80/tcp`, `[2001:db8::10]:80/tcp`: how errors name a service.
fn service_name(service: &ServiceConfig) -> String {
    format!("{}/{}", endpoint(service.vip, service.port), service.proto)
}

/// The first address of `service` (a real server, a local address, its sorry server) that
/// is not of its VIP's family.
fn check_family(service: &ServiceConfig) -> Result<(), SnapshotError> {
    let sorry = service.health.sorry_server.map(|s| s.ip());
    let addrs = service.backends.iter().map(|b| b.addr).chain(sorry);
    match addrs
        .chain(service.local_addrs.iter().copied())
        .find(|ip| ip.is_ipv4() != service.vip.is_ipv4())
    {
        Some(addr) => Err(SnapshotError::MixedFamilies { service: service_name(service), addr }),
        None => Ok(()),
    }
}

impl BackendId {
    /// A backend of a service of a config; a backend not of its service's family has none.
    pub fn of_config(
        service: &ServiceConfig,
        backend: &BackendConfig,
    ) -> Result<BackendId, SnapshotError> {
        if backend.addr.is_ipv4() != service.vip.is_ipv4() {
            return Err(SnapshotError::MixedFamilies {
                service: service_name(service),
                addr: backend.addr,
            });
        }
        Ok(BackendId {
            vip: service.vip,
            vport: service.port,
            proto: service.proto,
            addr: backend.addr,
            port: backend.port,
        })
    }
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
                    ipv6: i.ipv6.map(|v6| Interface6 {
                        addr: v6.addr,
                        prefix_len: v6.prefix_len,
                        gateway: v6.gateway,
                    }),
                    mtu: i.mtu,
                    tunnel_source: i.tunnel_source,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;

        let backend_total: usize = config.services.iter().map(|s| s.backends.len()).sum();
        for (what, count) in [("services", config.services.len()), ("backends", backend_total)] {
            if count > usize::from(u16::MAX) {
                return Err(SnapshotError::TooMany { what, count, max: usize::from(u16::MAX) });
            }
        }

        let mut services = Vec::with_capacity(config.services.len());
        let mut backends = Vec::with_capacity(backend_total);
        for (service_number, service) in config.services.iter().enumerate() {
            check_family(service)?;
            let vip = service.vip;
            let own = |i: &Interface| match vip {
                IpAddr::V4(vip) => i.addr == vip,
                IpAddr::V6(vip) => i.ipv6.is_some_and(|v6| v6.addr == vip),
            };
            if let Some(interface) = interfaces.iter().find(|i| own(i)) {
                return Err(SnapshotError::VipIsInterfaceAddr {
                    vip,
                    port: service.port,
                    interface: interface.name.clone(),
                });
            }
            if vip.is_ipv6() && interfaces.iter().all(|i| i.ipv6.is_none()) {
                return Err(SnapshotError::NoIpv6Interface { service: service_name(service) });
            }
            let specs: Vec<BackendSpec> = service
                .backends
                .iter()
                .map(|b| BackendSpec { id: backend_identity(b.addr, b.port), weight: b.weight })
                .collect();
            let scheduler_error = |source| SnapshotError::Scheduler {
                vip,
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
                let id = BackendId::of_config(service, backend)?;
                if let IpAddr::V6(addr) = id.addr
                    && route_in::<V6>(&interfaces, addr).next_hop.is_unspecified()
                {
                    return Err(SnapshotError::Unreachable {
                        service: service_name(service),
                        backend: endpoint(id.addr, id.port),
                    });
                }
                backends.push(Backend {
                    addr: id.addr,
                    port: backend.port,
                    weight: backend.weight,
                    id,
                    service: service_number,
                    down: backend.down,
                });
            }
            services.push(Service {
                vip,
                port: service.port,
                proto: service.proto,
                forward: service.forward,
                scheduler,
                fallback,
                local_addrs: service.local_addrs.clone(),
                backends: first..backends.len(),
                persistence: service
                    .persistence
                    .map(|p| ServicePersistence::new(vip, service.port, service.proto.number(), p)),
                tunnel: service.tunnel,
            });
        }
        let static_neighbors = config.neighbors.iter().map(|n| (n.ip, MacAddr(n.mac))).collect();
        let mut snapshot = Snapshot::new(
            generation,
            interfaces,
            services,
            backends,
            static_neighbors,
            conntrack_config(&config.conntrack),
        );
        snapshot.fleet = config.fleet;
        Ok(snapshot)
    }
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
        // One per process, so a reload's snapshot keys the same as the tables it meets.
        secret: TableSecret::process(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::V4;
    use crate::flow::ForwardMode;
    use crate::snapshot::{IfaceId, Owned, Route};
    use std::net::{Ipv4Addr, Ipv6Addr};

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
        let four = snapshot.family::<V4>();
        let routes: Vec<_> = snapshot.services[web]
            .backends
            .clone()
            .map(|i| four.backend_route(i).next_hop)
            .collect();
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
        config.services[0].vip = Ipv4Addr::new(10, 1, 1, 10).into();
        assert!(config.validate().is_err());
        let error = Snapshot::build(&config, 1).unwrap_err();
        assert!(matches!(error, SnapshotError::VipIsInterfaceAddr { .. }), "{error}");
        assert!(error.to_string().contains("eth0"));
    }

    /// Two families on one box: an IPv4 NAT service and an IPv6 FullNAT one with an on-link
    /// and an off-link backend, an IPv6 DR service, static neighbours of both families.
    fn dual_stack() -> String {
        let dual = TWO_SERVICES.replace(
            "gateway = \"10.1.1.1\"\n",
            "gateway = \"10.1.1.1\"\naddr6 = \"2001:db8:1::10/64\"\ngateway6 = \"fe80::1\"\n",
        );
        format!(
            "{dual}
            [[service]]
            vip = \"2001:db8:1::100\"
            port = 80
            forward = \"fullnat\"
            local_addrs = [\"2001:db8:1::200\", \"2001:db8:1::201\"]
            [[service.backend]]
            addr = \"2001:db8:1::11\"
            port = 8080
            [[service.backend]]
            addr = \"2001:db8:2::12\"
            port = 8080

            [[service]]
            vip = \"2001:db8:1::101\"
            port = 53
            proto = \"udp\"
            forward = \"nat\"
            [[service.backend]]
            addr = \"2001:db8:1::13\"
            port = 53

            [[neighbor]]
            ip = \"fe80::1\"
            mac = \"02:00:00:00:00:fe\"
            [[neighbor]]
            ip = \"10.1.1.1\"
            mac = \"02:00:00:00:00:fd\"
            "
        )
    }

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn a_dual_stack_config_builds_one_index_per_family() {
        let snapshot = Snapshot::build(&config(&dual_stack()), 1).unwrap();
        assert_eq!((snapshot.services.len(), snapshot.backends.len()), (4, 6));
        let (four, six) = (snapshot.family::<V4>(), snapshot.family::<V6>());
        // Services, each in its own family's index only.
        let web6 = six.service_at(v6("2001:db8:1::100"), 80, Proto::Tcp).unwrap();
        let dns6 = six.service_at(v6("2001:db8:1::101"), 53, Proto::Udp).unwrap();
        let web = four.service_at(Ipv4Addr::new(10, 1, 1, 100), 80, Proto::Tcp).unwrap();
        assert_eq!((web, web6, dns6), (0, 2, 3));
        assert_eq!(snapshot.services[web6].forward, ForwardMode::FullNat);
        assert_eq!(six.service_at(v6("2001:db8:1::100"), 80, Proto::Udp), None);
        assert_eq!(
            snapshot.service_at_ip("2001:db8:1::101".parse().unwrap(), 53, Proto::Udp),
            Some(dns6)
        );
        assert_eq!(snapshot.service_at_ip([10, 1, 1, 100].into(), 80, Proto::Tcp), Some(web));
        // Ownership: VIPs, local addresses, the interface's own address of each family.
        assert_eq!(six.owned(v6("2001:db8:1::100")), Some(Owned::Vip));
        assert_eq!(six.owned(v6("2001:db8:1::201")), Some(Owned::Local));
        assert_eq!(six.owned(v6("2001:db8:1::10")), Some(Owned::Interface(IfaceId(0))));
        assert_eq!(six.owned(v6("2001:db8:1::11")), None);
        assert_eq!(four.owned(Ipv4Addr::new(10, 1, 1, 10)), Some(Owned::Interface(IfaceId(0))));
        // Backends: addresses and routes of their family (on link: themselves; off link: the
        // gateway of their family), FullNAT local addresses per service.
        let backends = snapshot.services[web6].backends.clone();
        let addrs: Vec<Ipv6Addr> = backends.clone().map(|i| six.backend_addr(i)).collect();
        assert_eq!(addrs, [v6("2001:db8:1::11"), v6("2001:db8:2::12")]);
        let routes: Vec<Route<V6>> = backends.clone().map(|i| six.backend_route(i)).collect();
        assert_eq!(
            routes,
            [
                Route { egress: IfaceId(0), next_hop: v6("2001:db8:1::11") },
                Route { egress: IfaceId(0), next_hop: v6("fe80::1") }
            ]
        );
        assert_eq!(six.route(v6("2001:db8:1::99")).unwrap().next_hop, v6("2001:db8:1::99"));
        assert_eq!(six.route(v6("2001:db8:7::1")).unwrap().next_hop, v6("fe80::1"));
        assert_eq!(six.local_addrs(web6), [v6("2001:db8:1::200"), v6("2001:db8:1::201")]);
        assert!(six.local_addrs(web).is_empty() && six.local_addrs(dns6).is_empty());
        assert!(six.is_nat_backend(v6("2001:db8:1::13")));
        assert!(!six.is_nat_backend(v6("2001:db8:1::11")));
        let four_backend = snapshot.services[web].backends.start;
        assert_eq!(four.backend_addr(four_backend), Ipv4Addr::new(10, 1, 1, 11));
        assert_eq!(four.backend_route(four_backend).next_hop, Ipv4Addr::new(10, 1, 1, 11));
        assert_eq!(four.local_addrs(1), [Ipv4Addr::new(10, 1, 1, 200)]);
        // Announced: VIPs and local addresses of each family, on the interface reaching them.
        let announced: Vec<Ipv6Addr> = six.announced().into_iter().map(|(ip, _)| ip).collect();
        assert_eq!(
            announced,
            [
                v6("2001:db8:1::100"),
                v6("2001:db8:1::101"),
                v6("2001:db8:1::200"),
                v6("2001:db8:1::201")
            ]
        );
        assert!(six.announced().iter().all(|&(_, iface)| iface == IfaceId(0)));
        assert_eq!(four.announced(), snapshot.announced_addrs());
        assert_eq!(four.announced().len(), 3);
        // Static neighbours, per family.
        assert_eq!(six.static_neighbors(), [(v6("fe80::1"), MacAddr([2, 0, 0, 0, 0, 0xfe]))]);
        assert_eq!(
            four.static_neighbors(),
            [(Ipv4Addr::new(10, 1, 1, 1), MacAddr([2, 0, 0, 0, 0, 0xfd]))]
        );
        assert_eq!(snapshot.static_neighbors.len(), 2);
        // Identity: IPv6 backends are found by it, as IPv4 ones.
        for (index, backend) in snapshot.backends.iter().enumerate() {
            assert_eq!(snapshot.backend_at(&backend.id), Some(index));
        }
    }

    #[test]
    fn neither_family_answers_for_the_other() {
        let snapshot = Snapshot::build(&config(&dual_stack()), 1).unwrap();
        let (four, six) = (snapshot.family::<V4>(), snapshot.family::<V6>());
        let web6 = six.service_at(v6("2001:db8:1::100"), 80, Proto::Tcp).unwrap();
        let web = four.service_at(Ipv4Addr::new(10, 1, 1, 100), 80, Proto::Tcp).unwrap();
        // The IPv4 index has no IPv6 backend: unspecified address, nowhere to go.
        for index in snapshot.services[web6].backends.clone() {
            assert_eq!(four.backend_addr(index), Ipv4Addr::UNSPECIFIED);
            assert!(four.backend_route(index).next_hop.is_unspecified());
        }
        for index in snapshot.services[web].backends.clone() {
            assert_eq!(six.backend_addr(index), Ipv6Addr::UNSPECIFIED);
            assert!(six.backend_route(index).next_hop.is_unspecified());
        }
        assert!(four.local_addrs(web6).is_empty());
        assert!(six.local_addrs(1).is_empty());
        // The IPv4-mapped form of an IPv4 VIP is not the IPv4 service.
        let mapped = Ipv4Addr::new(10, 1, 1, 100).to_ipv6_mapped();
        assert_eq!(six.service_at(mapped, 80, Proto::Tcp), None);
        assert_eq!(six.owned(mapped), None);
        assert!(!six.is_nat_backend(Ipv4Addr::new(10, 1, 1, 11).to_ipv6_mapped()));
        // An IPv4-only snapshot has an empty IPv6 index.
        let plain = Snapshot::build(&config(TWO_SERVICES), 1).unwrap();
        let six = plain.family::<V6>();
        assert!(six.announced().is_empty() && six.subnets().is_empty());
        assert_eq!(six.route(v6("2001:db8:1::11")), None);
        assert_eq!(plain.family::<V4>().subnets().len(), 1);
    }

    #[test]
    fn ipv6_maglev_tables_hash_the_ipv6_identity() {
        let snapshot = Snapshot::build(&config(&dual_stack()), 1).unwrap();
        let web6 = snapshot.family::<V6>().service_at(v6("2001:db8:1::100"), 80, Proto::Tcp);
        let service = &snapshot.services[web6.unwrap()];
        let specs: Vec<BackendSpec> = snapshot
            .service_backends(web6.unwrap())
            .iter()
            .map(|b| BackendSpec { id: backend_identity(b.addr, b.port), weight: b.weight })
            .collect();
        let table = MaglevTable::build(&specs, service.fallback.size()).unwrap();
        assert_eq!(table.slots(), service.fallback.slots());
        assert_eq!(service.fallback.shares(2).iter().sum::<usize>(), service.fallback.size());
    }

    #[test]
    fn ipv6_refusals_name_the_service_and_address() {
        let dual = config(&dual_stack());
        // A VIP that is the interface's own IPv6 address.
        let mut own = dual.clone();
        own.services[2].vip = "2001:db8:1::10".parse().unwrap();
        let error = Snapshot::build(&own, 1).unwrap_err();
        assert!(matches!(error, SnapshotError::VipIsInterfaceAddr { .. }), "{error}");
        assert!(
            error.to_string().starts_with(
                "service [2001:db8:1::10]:80: the VIP is interface eth0's own address; xlb \
                 answers NDP for VIPs itself"
            ),
            "{error}"
        );
        // An IPv6 backend no interface reaches: off every IPv6 subnet, no gateway6.
        let mut text = dual_stack().replace("gateway6 = \"fe80::1\"\n", "");
        text = text.replace("ip = \"fe80::1\"", "ip = \"fe80::2\"");
        let error = Snapshot::build(&config(&text), 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "service [2001:db8:1::100]:80/tcp: real server [2001:db8:2::12]:8080 is on no \
             interface's IPv6 subnet and no interface has a gateway6: xlb cannot reach it"
        );
        // No interface IPv6 address at all.
        let mut bare = dual.clone();
        bare.interfaces[0].ipv6 = None;
        let error = Snapshot::build(&bare, 1).unwrap_err();
        assert_eq!(
            error,
            SnapshotError::NoIpv6Interface { service: "[2001:db8:1::100]:80/tcp".into() }
        );
        // A config built in code that mixes families is refused, not half converted.
        let mut mixed = config(TWO_SERVICES);
        mixed.services[0].backends[1].addr = "2001:db8:1::12".parse().unwrap();
        let error = Snapshot::build(&mixed, 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "service 10.1.1.100:80/tcp: 2001:db8:1::12 is IPv6 but the service is IPv4: a \
             service's real servers and local addresses are of its VIP's family (xlb does not \
             translate between families)"
        );
        assert_eq!(
            BackendId::of_config(&mixed.services[0], &mixed.services[0].backends[1]),
            Err(error)
        );
        let mut mixed = dual.clone();
        mixed.services[2].local_addrs[1] = "10.1.1.201".parse().unwrap();
        let error = Snapshot::build(&mixed, 1).unwrap_err();
        assert!(
            matches!(error, SnapshotError::MixedFamilies { addr, .. } if addr.is_ipv4()),
            "{error}"
        );
    }
}
