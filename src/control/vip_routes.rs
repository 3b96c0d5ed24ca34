//! BGP route export (`[fleet] mode = "bgp"`, `route_table`): a `/32` route per VIP this box
//! can serve, in a kernel routing table a BGP speaker (bird2, `protocol kernel` importing
//! that table) announces to the routers, which spread the VIPs' flows over every box that
//! announces them (ECMP).
//!
//! Invariants:
//! - A VIP is routed while the running snapshot has a service on it with a backend that may
//!   take new flows (weight above 0: health checks took none of them out, `xlb ctl` drained
//!   none of them all); otherwise it is withdrawn, so the routers send its flows to the
//!   other boxes.
//! - Every route points at a TUN device the daemon creates (the dataplane's `Tun`) and
//!   [`VipRoutes`] holds open: when xlb
//!   exits, however it exits (SIGKILL included), the kernel deletes the device and the
//!   routes with it, so a dead box announces nothing (bird withdraws what left the table).
//!   A graceful stop drops [`VipRoutes`] before the workers stop.
//! - Routes are added and removed with the `ip` command in xlb's network namespace; an
//!   error names the command and leaves what succeeded in place.
//! - The routes follow the running config's `route_table` and `route_device`, at start and
//!   on every reload ([`change`]): a changed table or device closes the old device (its
//!   routes go with it) before the new one is created (it may take the old one's name), and
//!   the routes are made again there; no `route_table` any more closes the device.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use crate::control::probe_routes::ip;
use crate::fleet::RouteExport;
use crate::snapshot::Snapshot;

/// The VIPs `snapshot` can serve: those (IPv4) with a service that has a backend of weight
/// above 0.
pub fn wanted(snapshot: &Snapshot) -> BTreeSet<Ipv4Addr> {
    snapshot
        .services
        .iter()
        .filter(|service| snapshot.backends[service.backends.clone()].iter().any(|b| b.weight > 0))
        .filter_map(|service| match service.vip {
            IpAddr::V4(vip) => Some(vip),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// What a config (re)load does to the VIP routes of the running process ([`change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The same table and device: the routes stay where they are.
    Keep,
    /// No `route_table` any more: the device closes, the routes go.
    Stop,
    /// Routes through a new device with these settings; `replacing` says an old device
    /// (other settings) closes first.
    Start { settings: RouteExport, replacing: bool },
}

/// What to do when the running routes follow `running` (None: no routes) and the config
/// now says `wanted`.
pub fn change(running: Option<&RouteExport>, wanted: Option<&RouteExport>) -> Change {
    match (running, wanted) {
        (running, Some(wanted)) if running != Some(wanted) => {
            Change::Start { settings: wanted.clone(), replacing: running.is_some() }
        }
        (Some(_), None) => Change::Stop,
        _ => Change::Keep,
    }
}

/// The VIP routes of this process, through its own device `D` (held open, never read:
/// dropping it closes the device, and the kernel removes the routes with it).
#[derive(Debug)]
pub struct VipRoutes<D> {
    _device: D,
    settings: RouteExport,
    name: String,
    table: String,
    installed: BTreeSet<Ipv4Addr>,
}

impl<D> VipRoutes<D> {
    /// Routes through `device`, the device `settings` names (created by the caller); no
    /// route yet.
    pub fn new(settings: &RouteExport, device: D) -> VipRoutes<D> {
        VipRoutes {
            _device: device,
            settings: settings.clone(),
            name: settings.device.clone(),
            table: settings.table.to_string(),
            installed: BTreeSet::new(),
        }
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.name
    }

    /// The table and device these routes follow.
    pub fn settings(&self) -> &RouteExport {
        &self.settings
    }

    /// Makes the routes `wanted`: adds the new ones, removes the gone ones. Returns what
    /// changed (added, removed) for the log.
    pub fn sync(
        &mut self,
        wanted: &BTreeSet<Ipv4Addr>,
    ) -> Result<(Vec<Ipv4Addr>, Vec<Ipv4Addr>), String> {
        let mut errors = Vec::new();
        let removed: Vec<Ipv4Addr> = self.installed.difference(wanted).copied().collect();
        let added: Vec<Ipv4Addr> = wanted.difference(&self.installed).copied().collect();
        for vip in &removed {
            let route = format!("{vip}/32");
            match ip(&["route", "del", &route, "dev", &self.name, "table", &self.table]) {
                Ok(()) => {
                    self.installed.remove(vip);
                }
                Err(e) => errors.push(e),
            }
        }
        for vip in &added {
            let route = format!("{vip}/32");
            let args = ["route", "replace", &route, "dev", &self.name, "table", &self.table];
            match ip(&args) {
                Ok(()) => {
                    self.installed.insert(*vip);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok((added, removed)) } else { Err(errors.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload follows the config's table and device: same settings keep the routes, other
    /// settings (table or device) replace the device, none stops; starting needs settings.
    #[test]
    fn routes_follow_the_route_table_and_device_of_each_load() {
        let table = |table: u32, device: &str| RouteExport { table, device: device.into() };
        let (a, b, c) = (table(100, "xlb-vips"), table(101, "xlb-vips"), table(100, "vips0"));
        let cases = [
            (None, None, Change::Keep),
            (Some(&a), Some(&a), Change::Keep),
            (None, Some(&a), Change::Start { settings: a.clone(), replacing: false }),
            (Some(&a), Some(&b), Change::Start { settings: b.clone(), replacing: true }),
            (Some(&a), Some(&c), Change::Start { settings: c.clone(), replacing: true }),
            (Some(&a), None, Change::Stop),
        ];
        for (running, wanted, expected) in cases {
            assert_eq!(change(running, wanted), expected, "{running:?} -> {wanted:?}");
        }
    }

    /// A VIP is wanted while one of its services has a backend that takes new flows.
    #[test]
    fn vips_with_a_backend_that_takes_flows_are_wanted() {
        let text = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.2/24"
mac = "02:00:00:00:00:02"
[[service]]
vip = "10.1.1.10"
port = 80
  [[service.backend]]
  addr = "10.1.1.11"
  weight = 0
[[service]]
vip = "10.1.1.10"
port = 443
  [[service.backend]]
  addr = "10.1.1.11"
[[service]]
vip = "10.1.1.20"
port = 80
  [[service.backend]]
  addr = "10.1.1.11"
  weight = 0
[[service]]
vip = "10.1.1.30"
port = 80
"#;
        let config = crate::control::Config::parse(text, "t.toml").unwrap();
        let snapshot = Snapshot::build(&config, 1).unwrap();
        assert_eq!(wanted(&snapshot), BTreeSet::from([Ipv4Addr::new(10, 1, 1, 10)]));
    }
}
