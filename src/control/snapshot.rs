//! How control builds the [`Snapshot`] workers read from a validated [`Config`]: interfaces
//! with their MACs, services with their schedulers and Maglev fallback tables built here,
//! off the hot path, and every backend's route. The snapshot types themselves live in
//! [`crate::snapshot`], which both control and the dataplane import; this module adds
//! control's constructors to them ([`Snapshot::build`], [`BackendId::of_config`]) because
//! only control knows the config.
//!
//! The data plane is IPv4 only (issue 12 adds IPv6): the config's addresses are
//! [`IpAddr`]s, and [`Snapshot::build`] converts them with [`ipv4_of`], refusing an IPv6
//! service with [`SnapshotError::Ipv6NotForwarded`] (never dropping it). [`refuse_ipv6`] is
//! the same check alone, for `xlb run` to make before it changes anything. IPv6 static
//! neighbours and interface addresses (`addr6`, `gateway6`) are no service's and stay out of
//! the snapshot: nothing in an IPv4 snapshot could use them.

use std::net::{IpAddr, Ipv4Addr};

use crate::conntrack::{ConntrackConfig, Timeouts};
use crate::control::config::{BackendConfig, Config, ConntrackSettings, ServiceConfig, endpoint};
use crate::flow::Proto;
use crate::sched::{BackendSpec, MaglevTable, SchedError, Scheduler};
use crate::snapshot::{
    Backend, BackendId, Interface, Service, Snapshot, backend_identity, route_in,
};
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
    #[error(
        "service {service}: IPv6 services are not forwarded yet (issue 12): the config and \
         `xlb ctl` accept them, the data plane is IPv4 only"
    )]
    Ipv6NotForwarded {
        /// `[2001:db8::10]:80/tcp`.
        service: String,
    },
}

impl SnapshotError {
    fn ipv6_service(service: &ServiceConfig) -> SnapshotError {
        SnapshotError::Ipv6NotForwarded {
            service: format!("{}/{}", endpoint(service.vip, service.port), service.proto),
        }
    }
}

/// `ip`, an address of `service`, as the IPv4 address the data plane works with; an IPv6
/// one refuses the service (the data plane is IPv4 only until issue 12).
pub fn ipv4_of(service: &ServiceConfig, ip: IpAddr) -> Result<Ipv4Addr, SnapshotError> {
    match ip {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => Err(SnapshotError::ipv6_service(service)),
    }
}

/// The first service of `config` the IPv4 data plane cannot forward (an IPv6 one, or one
/// with an IPv6 address anywhere), as [`Snapshot::build`] would refuse it.
pub fn refuse_ipv6(config: &Config) -> Result<(), SnapshotError> {
    for service in &config.services {
        let sorry = service.health.sorry_server.map(|s| s.ip());
        let addrs = service.backends.iter().map(|b| b.addr).chain(sorry);
        for ip in addrs.chain(service.local_addrs.iter().copied()).chain([service.vip]) {
            ipv4_of(service, ip)?;
        }
    }
    Ok(())
}

impl BackendId {
    /// A backend of a service of a config; an IPv6 service has none (see [`ipv4_of`]).
    pub fn of_config(
        service: &ServiceConfig,
        backend: &BackendConfig,
    ) -> Result<BackendId, SnapshotError> {
        Ok(BackendId {
            vip: ipv4_of(service, service.vip)?,
            vport: service.port,
            proto: service.proto,
            addr: ipv4_of(service, backend.addr)?,
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
        refuse_ipv6(config)?;
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

        let mut services = Vec::with_capacity(config.services.len());
        let mut backends = Vec::with_capacity(backend_total);
        for (service_number, service) in config.services.iter().enumerate() {
            let vip = ipv4_of(service, service.vip)?;
            let local_addrs = service
                .local_addrs
                .iter()
                .map(|&ip| ipv4_of(service, ip))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(interface) = interfaces.iter().find(|i| i.addr == vip) {
                return Err(SnapshotError::VipIsInterfaceAddr {
                    vip,
                    port: service.port,
                    interface: interface.name.clone(),
                });
            }
            let specs: Vec<BackendSpec> = service
                .backends
                .iter()
                .map(|b| {
                    let id = backend_identity(ipv4_of(service, b.addr)?, b.port);
                    Ok(BackendSpec { id, weight: b.weight })
                })
                .collect::<Result<_, SnapshotError>>()?;
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
                backends.push(Backend {
                    addr: id.addr,
                    port: backend.port,
                    weight: backend.weight,
                    id,
                    service: service_number,
                    route: route_in(&interfaces, id.addr),
                });
            }
            services.push(Service {
                vip,
                port: service.port,
                proto: service.proto,
                forward: service.forward,
                scheduler,
                fallback,
                local_addrs,
                backends: first..backends.len(),
            });
        }
        // IPv6 neighbours wait for issue 12 (module docs).
        let static_neighbors = config
            .neighbors
            .iter()
            .filter_map(|n| match n.ip {
                IpAddr::V4(ip) => Some((ip, MacAddr(n.mac))),
                IpAddr::V6(_) => None,
            })
            .collect::<Vec<_>>();
        Ok(Snapshot::new(
            generation,
            interfaces,
            services,
            backends,
            static_neighbors,
            conntrack_config(&config.conntrack),
        ))
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{IfaceId, Owned};

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
        config.services[0].vip = Ipv4Addr::new(10, 1, 1, 10).into();
        assert!(config.validate().is_err());
        let error = Snapshot::build(&config, 1).unwrap_err();
        assert!(matches!(error, SnapshotError::VipIsInterfaceAddr { .. }), "{error}");
        assert!(error.to_string().contains("eth0"));
    }

    #[test]
    fn ipv6_services_are_refused_by_name_never_dropped() {
        let dual = TWO_SERVICES.replace(
            "gateway = \"10.1.1.1\"\n",
            "gateway = \"10.1.1.1\"\naddr6 = \"2001:db8:1::10/64\"\n",
        );
        // Interface IPv6 addresses and IPv6 neighbours alone do not stop an IPv4 snapshot.
        let text = format!("{dual}\n[[neighbor]]\nip = \"fe80::1\"\nmac = \"02:00:00:00:00:fe\"\n");
        let snapshot = Snapshot::build(&config(&text), 1).unwrap();
        assert_eq!(snapshot.services.len(), 2);
        assert!(snapshot.static_neighbors.is_empty());
        // An IPv6 service is refused, with its name, by `build` and by `refuse_ipv6` alike.
        let six = format!(
            "{dual}\n[[service]]\nvip = \"2001:db8:1::100\"\nport = 80\n\
             [[service.backend]]\naddr = \"2001:db8:1::11\"\n"
        );
        let six = config(&six);
        let error = Snapshot::build(&six, 1).unwrap_err();
        assert_eq!(
            error,
            SnapshotError::Ipv6NotForwarded { service: "[2001:db8:1::100]:80/tcp".into() }
        );
        assert_eq!(
            error.to_string(),
            "service [2001:db8:1::100]:80/tcp: IPv6 services are not forwarded yet (issue 12): \
             the config and `xlb ctl` accept them, the data plane is IPv4 only"
        );
        assert_eq!(refuse_ipv6(&six), Err(error));
        assert_eq!(refuse_ipv6(&config(&dual)), Ok(()));
        // A config built in code that mixes families is refused too, not half converted.
        let mut mixed = config(TWO_SERVICES);
        mixed.services[0].backends[1].addr = "2001:db8:1::12".parse().unwrap();
        let error = Snapshot::build(&mixed, 1).unwrap_err();
        assert_eq!(error, SnapshotError::Ipv6NotForwarded { service: "10.1.1.100:80/tcp".into() });
        assert!(BackendId::of_config(&mixed.services[0], &mixed.services[0].backends[1]).is_err());
    }
}
