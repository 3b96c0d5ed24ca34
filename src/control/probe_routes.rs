//! Policy routes that let DR health probes reach each real server on the VIP, as clients do.
//!
//! A DR real server serves the VIP (held on its `lo`), so probing its own address can pass
//! while the VIP does not answer. To probe the VIP through one particular real server, the
//! probe socket carries a firewall mark ([`probe_mark`]: the real server's address), and
//! an `ip rule` sends packets with that mark to a routing table of the same number that
//! holds `VIP via RIP onlink` for every VIP the real server serves. The probe leaves from
//! the box's own address with the real server's MAC, exactly like a DR-forwarded packet;
//! the answer (from the VIP to the box's address) belongs to the kernel, which xlb's XDP
//! program leaves alone.
//!
//! Tunnel services (`forward = "tunnel"`) probe the same way, but their real servers' tables
//! route the VIP to a TUN device of the real server (`VIP dev xlbp… src BOX`), whose packets
//! [`crate::control::tunnel_probe`] wraps and sends; [`ProbeRoutes`] opens those devices
//! before it adds their routes and closes them after it removed them.
//!
//! The rules sit at preference [`RULE_PREF`], which marks them as xlb's: start-up removes
//! any left by a killed run (and flushes their tables); [`ProbeRoutes`] adds and removes
//! its own as the config changes, and removes them all when dropped. Done with the `ip`
//! command, in the network namespace xlb runs in.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use crate::control::config::Config;
use crate::control::health::probe_mark;
use crate::control::tunnel_probe::{self, Services, TunnelProbes};
use crate::flow::ForwardMode;
use std::collections::BTreeMap;

/// The `ip rule` preference of xlb's probe rules.
pub const RULE_PREF: u32 = 9786;

/// One route a probe needs, in `rip`'s table: `vip` via `rip` onlink on `dev` (DR), or,
/// with `src` (tunnel), `vip` through `rip`'s tunnel probe device `dev` from `src`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeRoute {
    pub rip: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub dev: String,
    pub src: Option<Ipv4Addr>,
}

/// What the probes through the VIP of a config need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    /// The policy routes.
    pub routes: BTreeSet<ProbeRoute>,
    /// The tunnel probe devices (by real server) and what they carry.
    pub tunnels: BTreeMap<Ipv4Addr, Services>,
}

/// What `config` needs: a route for every real server of every DR service whose health
/// check goes through the VIP (`via_vip`), on the interface whose subnet holds it; for a
/// tunnel service, a route through the real server's tunnel probe device, from the box's
/// address on the interface that reaches the real server (its subnet's, else the first with
/// a gateway, else the first). IPv4 only: the config refuses `via_vip` on an IPv6 service
/// (issue 12), so there is none to skip.
pub fn wanted(config: &Config) -> Wanted {
    let mut routes = BTreeSet::new();
    for service in &config.services {
        let IpAddr::V4(vip) = service.vip else { continue };
        if !service.health.via_vip {
            continue;
        }
        for backend in &service.backends {
            let IpAddr::V4(rip) = backend.addr else { continue };
            match service.forward {
                ForwardMode::Dr => {
                    if let Some(interface) = config.interface_for(rip) {
                        let dev = interface.name.clone();
                        routes.insert(ProbeRoute { rip, vip, dev, src: None });
                    }
                }
                ForwardMode::Tunnel => {
                    let interface = config
                        .interface_for(rip)
                        .or_else(|| config.interfaces.iter().find(|i| i.gateway.is_some()))
                        .or(config.interfaces.first());
                    if let Some(interface) = interface {
                        let dev = tunnel_probe::device_name(rip);
                        routes.insert(ProbeRoute { rip, vip, dev, src: Some(interface.addr) });
                    }
                }
                _ => {}
            }
        }
    }
    Wanted { routes, tunnels: tunnel_probe::wanted(config) }
}

/// The probe routes installed by this process.
#[derive(Debug, Default)]
pub struct ProbeRoutes {
    installed: BTreeSet<ProbeRoute>,
    /// The tunnel probe devices, if this process can open them (else tunnel routes fail).
    tunnels: Option<TunnelProbes>,
}

impl ProbeRoutes {
    /// Removes what a previous xlb left (rules at [`RULE_PREF`] and their tables).
    pub fn new() -> ProbeRoutes {
        if let Ok(out) =
            Command::new("ip").args(["rule", "show", "pref", &RULE_PREF.to_string()]).output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            for table in text.lines().filter_map(|l| l.split("lookup ").nth(1)) {
                let table = table.split_whitespace().next().unwrap_or_default();
                let _ = ip(&["route", "flush", "table", table]);
            }
            for _ in text.lines() {
                let _ = ip(&["rule", "del", "pref", &RULE_PREF.to_string()]);
            }
        }
        ProbeRoutes::default()
    }

    /// Opens tunnel probe devices with `tunnels` from now on.
    pub fn with_tunnels(mut self, tunnels: TunnelProbes) -> ProbeRoutes {
        self.tunnels = Some(tunnels);
        self
    }

    /// Makes the installed routes and tunnel probe devices `wanted`: opens new devices, adds
    /// new routes, removes gone routes, closes gone devices. Errors name the command; what
    /// succeeded stays.
    pub fn sync(&mut self, wanted: &Wanted) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Some(tunnels) = &mut self.tunnels
            && let Err(e) = tunnels.open(&wanted.tunnels)
        {
            errors.push(e);
        }
        self.sync_routes(&wanted.routes, &mut errors);
        if let Some(tunnels) = &mut self.tunnels {
            tunnels.close_unwanted(&wanted.tunnels);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    fn sync_routes(&mut self, wanted: &BTreeSet<ProbeRoute>, errors: &mut Vec<String>) {
        let rips = |set: &BTreeSet<ProbeRoute>| set.iter().map(|r| r.rip).collect::<BTreeSet<_>>();
        let (old_rips, new_rips) = (rips(&self.installed), rips(wanted));
        for route in self.installed.difference(wanted) {
            let table = probe_mark(route.rip).to_string();
            if let Err(e) = ip(&["route", "del", &format!("{}/32", route.vip), "table", &table]) {
                errors.push(e);
            }
        }
        for rip in old_rips.difference(&new_rips) {
            let mark = probe_mark(*rip).to_string();
            let pref = RULE_PREF.to_string();
            if let Err(e) = ip(&["rule", "del", "pref", &pref, "fwmark", &mark, "table", &mark]) {
                errors.push(e);
            }
        }
        for rip in new_rips.difference(&old_rips) {
            let mark = probe_mark(*rip).to_string();
            let pref = RULE_PREF.to_string();
            if let Err(e) = ip(&["rule", "add", "pref", &pref, "fwmark", &mark, "table", &mark]) {
                errors.push(e);
            }
        }
        for route in wanted.difference(&self.installed) {
            let table = probe_mark(route.rip).to_string();
            let vip = format!("{}/32", route.vip);
            let rip = route.rip.to_string();
            let result = match route.src {
                None => ip(&[
                    "route", "replace", &vip, "via", &rip, "dev", &route.dev, "onlink", "table",
                    &table,
                ]),
                Some(src) => ip(&[
                    "route",
                    "replace",
                    &vip,
                    "dev",
                    &route.dev,
                    "src",
                    &src.to_string(),
                    "table",
                    &table,
                ]),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        self.installed = wanted.clone();
    }
}

impl Drop for ProbeRoutes {
    fn drop(&mut self) {
        let _ = self.sync(&Wanted::default());
    }
}

pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr_and_tunnel_services_probing_through_the_vip_need_routes() {
        let text = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.2/24"

[[service]]
vip = "10.1.1.10"
port = 80
forward = "dr"
  [service.health]
  check = "http"
  via_vip = true
  [[service.backend]]
  addr = "10.1.1.11"
  [[service.backend]]
  addr = "10.1.1.12"

[[service]]
vip = "10.1.1.20"
port = 80
forward = "dr"
  [[service.backend]]
  addr = "10.1.1.11"
"#;
        let config = Config::parse(text, "t.toml").unwrap();
        let routes: Vec<_> = wanted(&config).routes.into_iter().collect();
        let route = |rip: [u8; 4]| ProbeRoute {
            rip: rip.into(),
            vip: Ipv4Addr::new(10, 1, 1, 10),
            dev: "eth0".into(),
            src: None,
        };
        assert_eq!(routes, vec![route([10, 1, 1, 11]), route([10, 1, 1, 12])]);

        let nat = text.replace(
            "forward = \"dr\"\n  [service.health]",
            "forward = \"nat\"\n  [service.health]",
        );
        assert!(Config::parse(&nat, "t.toml").is_err(), "via_vip is for DR and tunnel only");
        assert!(wanted(&config).tunnels.is_empty(), "DR needs no tunnel device");

        // Tunnel: the route goes into the real server's device, from the box's address;
        // a real server off every subnet is reached through the interface with a gateway.
        let tunnel = text
            .replace(
                "forward = \"dr\"\n  [service.health]",
                "forward = \"tunnel\"\n  [service.health]",
            )
            .replace("addr = \"10.1.1.12\"", "addr = \"192.0.2.12\"")
            .replace("addr = \"10.1.1.2/24\"", "addr = \"10.1.1.2/24\"\ngateway = \"10.1.1.1\"");
        let config = Config::parse(&tunnel, "t.toml").unwrap();
        let wanted = wanted(&config);
        let route = |rip: [u8; 4], dev: &str| ProbeRoute {
            rip: rip.into(),
            vip: Ipv4Addr::new(10, 1, 1, 10),
            dev: dev.into(),
            src: Some(Ipv4Addr::new(10, 1, 1, 2)),
        };
        assert_eq!(
            wanted.routes.into_iter().collect::<Vec<_>>(),
            vec![route([10, 1, 1, 11], "xlbp0a01010b"), route([192, 0, 2, 12], "xlbpc000020c")]
        );
        let rips: Vec<Ipv4Addr> = wanted.tunnels.keys().copied().collect();
        assert_eq!(rips, vec![Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(192, 0, 2, 12)]);
    }
}
