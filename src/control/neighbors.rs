//! Which snooped ARP control passes on to the workers, and what it says about VIP conflicts.
//!
//! The steering program records the sender of every ARP on the wire (`arp_seen`, an LRU map
//! of [`crate::dataplane::io::afxdp::steer::ARP_SEEN_ENTRIES`] entries). Most senders are of
//! no use to xlb: on a large segment, or under a storm of gratuitous ARP, relaying them all
//! to every worker would fill every core's neighbour table with strangers. So
//! [`NeighborRelay`] passes on only what xlb needs ([`Wanted`]): the next hops of the running
//! snapshot (backends, gateways) and the next hops a worker is asking for (its report lists
//! them). Clients that ask for a VIP are learned by the workers themselves, from the request.
//!
//! It also watches for other hosts claiming an address xlb owns (sender = a VIP or local
//! address, MAC not one of ours): the daemon logs them (rate-limited) and does not announce
//! a VIP that another host answered a probe for ([`NeighborRelay::claimed_since`]).
//!
//! Invariants: every map here is bounded by the snapshot, not by the traffic: `relayed` holds
//! only wanted addresses, `claims` only owned ones (both pruned at every call); what a MAC
//! change or a conflict logs goes through a [`LogBudget`].

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as StdInstant};

use crate::family::V4;
use crate::log::{Level, LogBudget};
use crate::snapshot::Snapshot;
use crate::wire::MacAddr;

/// Lines per [`LOG_INTERVAL`] about neighbours changing MAC, and about conflicts.
pub const LOG_LINES_PER_INTERVAL: u32 = 10;
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What xlb needs to hear about, and what it owns.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Next hops to relay ARP about.
    pub next_hops: HashSet<Ipv4Addr>,
    /// VIPs and local addresses: ARP from another host with one of them as sender is a
    /// conflict.
    pub owned: HashSet<Ipv4Addr>,
    /// The box's interface MACs (ARP from them is ours).
    pub our_macs: Vec<MacAddr>,
}

impl Wanted {
    /// From the running snapshot and the next hops the workers are asking for.
    pub fn new(snapshot: &Snapshot, unresolved: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        let routes = snapshot.family::<V4>().backend_routes();
        let mut next_hops: HashSet<Ipv4Addr> = routes.iter().map(|r| r.next_hop).collect();
        next_hops.extend(snapshot.interfaces.iter().filter_map(|i| i.gateway));
        next_hops.extend(unresolved);
        Wanted {
            next_hops,
            owned: snapshot.announced_addrs().into_iter().map(|(ip, _)| ip).collect(),
            our_macs: snapshot.interfaces.iter().map(|i| i.mac).collect(),
        }
    }
}

/// What one look at `arp_seen` gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// To tell every worker: `ip` is at `mac`.
    pub relay: Vec<(Ipv4Addr, MacAddr)>,
    /// Lines to log, with their level (already rate-limited): a neighbour's MAC change is
    /// news (info), another host's claim on our address is trouble (warn).
    pub lines: Vec<(Level, String)>,
}

/// Another host's claim on an address of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    mac: MacAddr,
    seen_ns: u64,
    /// When control first saw this (MAC, time) pair.
    observed: StdInstant,
}

/// Control's side of neighbour learning. See the module docs.
#[derive(Debug)]
pub struct NeighborRelay {
    /// What was last relayed per wanted address: MAC and the steering program's timestamp.
    relayed: HashMap<Ipv4Addr, (MacAddr, u64)>,
    /// The latest claim per owned address.
    claims: HashMap<Ipv4Addr, Claim>,
    moves: LogBudget,
    conflicts: LogBudget,
}

impl Default for NeighborRelay {
    fn default() -> Self {
        Self::new()
    }
}

impl NeighborRelay {
    pub fn new() -> Self {
        NeighborRelay {
            relayed: HashMap::new(),
            claims: HashMap::new(),
            moves: LogBudget::new(LOG_LINES_PER_INTERVAL, LOG_INTERVAL),
            conflicts: LogBudget::new(LOG_LINES_PER_INTERVAL, LOG_INTERVAL),
        }
    }

    /// Looks at what the steering programs recorded (`entries`: sender address, MAC, when),
    /// and says what to relay and log.
    pub fn observe(
        &mut self,
        now: StdInstant,
        wanted: &Wanted,
        entries: &[(Ipv4Addr, MacAddr, u64)],
    ) -> Observed {
        let mut observed = Observed::default();
        self.relayed.retain(|ip, _| wanted.next_hops.contains(ip));
        self.claims.retain(|ip, _| wanted.owned.contains(ip));
        for &(ip, mac, seen_ns) in entries {
            if wanted.owned.contains(&ip) {
                if wanted.our_macs.contains(&mac) {
                    continue;
                }
                let known =
                    self.claims.get(&ip).is_some_and(|c| (c.mac, c.seen_ns) == (mac, seen_ns));
                if !known {
                    self.claims.insert(ip, Claim { mac, seen_ns, observed: now });
                    if self.conflicts.allow(now) {
                        observed.lines.push((Level::Warn, format!(
                            "ARP conflict: {mac} says it has {ip}, a VIP or local address of xlb's (counted in arp_conflicts)"
                        )));
                    }
                }
                continue;
            }
            if !wanted.next_hops.contains(&ip) {
                continue;
            }
            match self.relayed.insert(ip, (mac, seen_ns)) {
                Some(before) if before == (mac, seen_ns) => continue,
                Some((old, _)) if old != mac && self.moves.allow(now) => {
                    let line = format!("neighbour {ip} moved from {old} to {mac}");
                    observed.lines.push((Level::Info, line));
                }
                _ => {}
            }
            observed.relay.push((ip, mac));
        }
        if let Some(n) = self.moves.take_suppressed(now) {
            let line = format!("{n} more neighbour MAC change(s) not logged");
            observed.lines.push((Level::Info, line));
        }
        if let Some(n) = self.conflicts.take_suppressed(now) {
            observed.lines.push((Level::Warn, format!("{n} more ARP conflict(s) not logged")));
        }
        observed
    }

    /// Of `addrs`, those another host claimed (with its MAC) after `since`: it answered a
    /// probe, announced itself, or asked for something from that address.
    pub fn claimed_since(&self, since: StdInstant, addrs: &[Ipv4Addr]) -> Vec<(Ipv4Addr, MacAddr)> {
        addrs
            .iter()
            .filter_map(|ip| {
                let claim = self.claims.get(ip)?;
                (claim.observed > since).then_some((*ip, claim.mac))
            })
            .collect()
    }

    /// Addresses remembered (relayed next hops and claims): bounded by the snapshot.
    pub fn len(&self) -> usize {
        self.relayed.len() + self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
    const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x99]);

    fn wanted() -> Wanted {
        Wanted {
            next_hops: [Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 1)].into(),
            owned: [Ipv4Addr::new(10, 1, 1, 100)].into(),
            our_macs: vec![OURS],
        }
    }

    /// The storm: 5000 hosts' gratuitous ARP are not relayed and not remembered; a
    /// backend's is relayed once, and again only when it changes.
    #[test]
    fn only_needed_next_hops_are_relayed_and_memory_stays_bounded() {
        let mut relay = NeighborRelay::new();
        let now = StdInstant::now();
        let backend = Ipv4Addr::new(10, 1, 1, 11);
        let mut entries: Vec<_> = (0..5000u32)
            .map(|i| (Ipv4Addr::from_bits(0x0a01_6400 + i), OTHER, u64::from(i)))
            .collect();
        entries.push((backend, MacAddr([2, 0, 0, 0, 0, 0x11]), 7));
        let observed = relay.observe(now, &wanted(), &entries);
        assert_eq!(observed.relay, vec![(backend, MacAddr([2, 0, 0, 0, 0, 0x11]))]);
        assert_eq!(relay.len(), 1, "strangers are not remembered");
        assert!(relay.observe(now, &wanted(), &entries).relay.is_empty(), "nothing new");

        // A next hop a worker asks for is relayed from what was already seen.
        let client = Ipv4Addr::from_bits(0x0a01_6400 + 42);
        let mut asking = wanted();
        asking.next_hops.insert(client);
        assert_eq!(relay.observe(now, &asking, &entries).relay, vec![(client, OTHER)]);
        // Resolved: forgotten again.
        relay.observe(now, &wanted(), &entries);
        assert_eq!(relay.len(), 1);
    }

    /// A next hop flapping between two MACs is relayed every time, but logged at most
    /// LOG_LINES_PER_INTERVAL times per interval, then one line counts the rest.
    #[test]
    fn mac_flips_are_relayed_but_their_lines_are_rate_limited() {
        let mut relay = NeighborRelay::new();
        let t0 = StdInstant::now();
        let backend = Ipv4Addr::new(10, 1, 1, 11);
        let mut lines = Vec::new();
        let mut relayed = 0;
        for i in 0..1000u64 {
            let mac = if i % 2 == 0 { OTHER } else { OURS };
            let observed = relay.observe(t0, &wanted(), &[(backend, mac, i)]);
            relayed += observed.relay.len();
            lines.extend(observed.lines);
        }
        assert_eq!(relayed, 1000);
        assert_eq!(lines.len(), LOG_LINES_PER_INTERVAL as usize);
        let later = relay.observe(t0 + LOG_INTERVAL, &wanted(), &[]);
        let suppressed = 999 - LOG_LINES_PER_INTERVAL;
        let line = format!("{suppressed} more neighbour MAC change(s) not logged");
        assert_eq!(later.lines, vec![(Level::Info, line)]);
    }

    /// Another host's ARP with a VIP as sender is a conflict: logged, remembered for the
    /// probe's verdict, never relayed; our own is not.
    #[test]
    fn claims_on_an_owned_address_are_conflicts() {
        let mut relay = NeighborRelay::new();
        let vip = Ipv4Addr::new(10, 1, 1, 100);
        let t0 = StdInstant::now();
        let observed = relay.observe(t0, &wanted(), &[(vip, OURS, 1)]);
        assert_eq!(observed, Observed::default(), "our own announcement");
        let probe_sent = t0 + Duration::from_millis(1);
        let answered = probe_sent + Duration::from_millis(5);
        let observed = relay.observe(answered, &wanted(), &[(vip, OTHER, 2)]);
        assert!(observed.relay.is_empty());
        assert_eq!(observed.lines.len(), 1);
        assert_eq!(observed.lines[0].0, Level::Warn);
        assert!(observed.lines[0].1.contains("10.1.1.100"), "{:?}", observed.lines);
        assert_eq!(relay.claimed_since(probe_sent, &[vip]), vec![(vip, OTHER)]);
        assert!(relay.claimed_since(answered + Duration::from_millis(1), &[vip]).is_empty());
    }
}
