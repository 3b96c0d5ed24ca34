//! Which snooped ARP and NDP control passes on to the workers, and what they say about VIP
//! conflicts.
//!
//! The steering program records the sender of every ARP on the wire (`arp_seen`, an LRU map
//! of [`crate::dataplane::io::afxdp::steer::ARP_SEEN_ENTRIES`] entries), and what every
//! neighbour solicitation and advertisement names (`ndp_seen`, as many entries). One
//! [`NeighborRelay`] per family ([`V4`], [`V6`]) does the same with each. Most senders are of
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
use std::time::{Duration, Instant as StdInstant};

use crate::family::{Family, V4};
use crate::log::{Level, LogBudget};
use crate::snapshot::{Indexed, Snapshot};
use crate::wire::EtherType;
use crate::wire::MacAddr;

/// Lines per [`LOG_INTERVAL`] about neighbours changing MAC, and about conflicts.
pub const LOG_LINES_PER_INTERVAL: u32 = 10;
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What xlb needs to hear about, and what it owns, in one family.
#[derive(Debug, Clone)]
pub struct Wanted<F: Family = V4> {
    /// Next hops to relay ARP (NDP) about.
    pub next_hops: HashSet<F::Addr>,
    /// VIPs and local addresses: ARP from another host with one of them as sender (NDP
    /// naming one of them) is a conflict.
    pub owned: HashSet<F::Addr>,
    /// The box's interface MACs (ARP from them is ours).
    pub our_macs: Vec<MacAddr>,
}

impl<F: Family> Default for Wanted<F> {
    fn default() -> Self {
        Wanted { next_hops: HashSet::new(), owned: HashSet::new(), our_macs: Vec::new() }
    }
}

/// The neighbour protocol of family `F`, for log lines.
fn protocol<F: Family>() -> &'static str {
    if F::ETHERTYPE == EtherType::IPV4 { "ARP" } else { "NDP" }
}

impl<F: Indexed> Wanted<F> {
    /// From the running snapshot and the next hops the workers are asking for: the next
    /// hops of the snapshot's backends and the gateways of family `F`, and its VIPs and local
    /// addresses.
    pub fn new(snapshot: &Snapshot, unresolved: impl IntoIterator<Item = F::Addr>) -> Self {
        let index = snapshot.family::<F>();
        // A backend of the other family has no route here (an unspecified next hop).
        let routes = index.backend_routes().iter().map(|r| r.next_hop);
        let mut next_hops: HashSet<F::Addr> = routes.filter(|&hop| hop != F::UNSPECIFIED).collect();
        next_hops.extend(index.subnets().iter().filter_map(|(_, subnet)| subnet.gateway));
        next_hops.extend(unresolved);
        Wanted {
            next_hops,
            owned: index.announced().into_iter().map(|(ip, _)| ip).collect(),
            our_macs: snapshot.interfaces.iter().map(|i| i.mac).collect(),
        }
    }
}

/// What one look at `arp_seen` (`ndp_seen`) gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<F: Family = V4> {
    /// To tell every worker: `ip` is at `mac`.
    pub relay: Vec<(F::Addr, MacAddr)>,
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

impl<F: Family> Default for Observed<F> {
    fn default() -> Self {
        Observed { relay: Vec::new(), lines: Vec::new() }
    }
}

/// Control's side of neighbour learning in one family. See the module docs.
#[derive(Debug)]
pub struct NeighborRelay<F: Family = V4> {
    /// What was last relayed per wanted address: MAC and the steering program's timestamp.
    relayed: HashMap<F::Addr, (MacAddr, u64)>,
    /// The latest claim per owned address.
    claims: HashMap<F::Addr, Claim>,
    moves: LogBudget,
    conflicts: LogBudget,
}

impl<F: Family> Default for NeighborRelay<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Family> NeighborRelay<F> {
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
        wanted: &Wanted<F>,
        entries: &[(F::Addr, MacAddr, u64)],
    ) -> Observed<F> {
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
                        let protocol = protocol::<F>();
                        // The pipeline counts ARP conflicts; NDP ones are the IPv6 pipeline's.
                        let counted =
                            if protocol == "ARP" { " (counted in arp_conflicts)" } else { "" };
                        observed.lines.push((Level::Warn, format!(
                            "{protocol} conflict: {mac} says it has {ip}, a VIP or local address of xlb's{counted}"
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
            let protocol = protocol::<F>();
            observed
                .lines
                .push((Level::Warn, format!("{n} more {protocol} conflict(s) not logged")));
        }
        observed
    }

    /// Of `addrs`, those another host claimed (with its MAC) after `since`: it answered a
    /// probe, announced itself, or asked for something from that address.
    pub fn claimed_since(&self, since: StdInstant, addrs: &[F::Addr]) -> Vec<(F::Addr, MacAddr)> {
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
    use std::net::Ipv4Addr;

    const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
    const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x99]);

    fn wanted() -> Wanted {
        Wanted {
            next_hops: [Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 1)].into(),
            owned: [Ipv4Addr::new(10, 1, 1, 100)].into(),
            our_macs: vec![OURS],
        }
    }

    /// The issue's storm: 5000 hosts' gratuitous ARP are not relayed and not remembered; a
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

    /// Each family wants its own next hops (backends' and gateways') and owns its own VIPs.
    #[test]
    fn each_family_wants_its_own_next_hops() {
        use crate::family::V6;
        use std::net::Ipv6Addr;
        let text = r#"
            [[interface]]
            name = "eth0"
            addr = "10.1.1.10/24"
            mac = "02:00:00:00:00:10"
            gateway = "10.1.1.1"
            addr6 = "2001:db8::10/64"
            gateway6 = "fe80::1"

            [[service]]
            vip = "10.1.1.100"
            port = 80
            [[service.backend]]
            addr = "10.1.1.11"

            [[service]]
            vip = "2001:db8::100"
            port = 80
            [[service.backend]]
            addr = "2001:db8::11"

            [[service]]
            vip = "2001:db8::101"
            port = 80
            forward = "nat"
            [[service.backend]]
            addr = "2001:db8:99::12"
        "#;
        let config = crate::control::Config::parse(text, "test.toml").unwrap();
        let snapshot = Snapshot::build(&config, 1).unwrap();
        let ip6 = |text: &str| text.parse::<Ipv6Addr>().unwrap();
        let v6 = Wanted::<V6>::new(&snapshot, [ip6("2001:db8::99")]);
        let expected: HashSet<Ipv6Addr> =
            ["2001:db8::11", "fe80::1", "2001:db8::99"].map(ip6).into();
        assert_eq!(v6.next_hops, expected, "the off-link backend goes through the gateway");
        assert_eq!(v6.owned, [ip6("2001:db8::100"), ip6("2001:db8::101")].into());
        assert_eq!(v6.our_macs, [OURS]);
        let v4 = Wanted::<V4>::new(&snapshot, []);
        let expected: HashSet<Ipv4Addr> =
            [Ipv4Addr::new(10, 1, 1, 11), Ipv4Addr::new(10, 1, 1, 1)].into();
        assert_eq!(v4.next_hops, expected);
        assert_eq!(v4.owned, [Ipv4Addr::new(10, 1, 1, 100)].into());
    }

    /// IPv6 goes the same way: snooped NDP about a wanted next hop is relayed, strangers
    /// are not remembered, another host naming a VIP is an NDP conflict.
    #[test]
    fn ndp_is_relayed_and_claims_seen_as_arp_is() {
        use crate::family::V6;
        use std::net::Ipv6Addr;
        let backend: Ipv6Addr = "2001:db8::21".parse().unwrap();
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let wanted =
            Wanted::<V6> { next_hops: [backend].into(), owned: [vip].into(), our_macs: vec![OURS] };
        let mut relay = NeighborRelay::<V6>::new();
        let now = StdInstant::now();
        let mut entries: Vec<_> = (1..100u128)
            .map(|i| (Ipv6Addr::from_bits(0x2001_0db8_0001 << 80 | i), OTHER, 1))
            .collect();
        entries.extend([(backend, OURS, 2), (vip, OURS, 3)]);
        let observed = relay.observe(now, &wanted, &entries);
        assert_eq!(observed, Observed { relay: vec![(backend, OURS)], lines: vec![] });
        assert_eq!(relay.len(), 1);
        let later = now + Duration::from_millis(1);
        let observed = relay.observe(later, &wanted, &[(vip, OTHER, 4)]);
        assert!(observed.relay.is_empty());
        assert_eq!(observed.lines.len(), 1);
        assert!(observed.lines[0].1.starts_with("NDP conflict"), "{:?}", observed.lines);
        assert!(observed.lines[0].1.contains("2001:db8::100"), "{:?}", observed.lines);
        assert_eq!(relay.claimed_since(now, &[vip]), vec![(vip, OTHER)]);
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
