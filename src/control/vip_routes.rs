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

/// The VIP routes of this process, through its own device `D` (held open, never read:
/// dropping it closes the device, and the kernel removes the routes with it).
#[derive(Debug)]
pub struct VipRoutes<D> {
    _device: D,
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
            name: settings.device.clone(),
            table: settings.table.to_string(),
            installed: BTreeSet::new(),
        }
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.name
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
