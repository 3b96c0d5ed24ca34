//! A fleet of balancers: whether this box speaks for its VIPs on the link.
//!
//! One xlb box answering ARP for its VIPs is today's model (`standalone`). Several boxes
//! with the same config cannot all do that: the last gratuitous ARP wins and the others'
//! answers steal the VIP back. So the config's global `[fleet] mode` says how the box takes
//! part:
//!
//! - `standalone` (the default): xlb answers ARP for its VIPs, announces them with
//!   gratuitous ARP and forwards their traffic.
//! - `bgp`: xlb is silent for its VIPs — it never answers ARP for them nor announces them —
//!   and forwards what reaches it: a router sends VIP traffic to the box's own MAC by a route
//!   (ECMP over a fleet), as Katran and Maglev run. Another host's ARP naming a VIP as its
//!   sender is not a conflict then (the VIP is not claimed on this link).
//! - `vrrp`: an active/standby pair driven by keepalived (`xlb ctl --active`,
//!   `xlb ctl --standby`). Active is standalone; standby is silent as `bgp` *and* drops the
//!   VIPs' traffic (counted as `standby`). A box starts standby and only keepalived makes it
//!   active, so two boxes never both speak for a VIP at start-up; a reload keeps the state,
//!   a restart starts standby again (keepalived's next transition decides).
//!
//! Invariants: FullNAT local addresses are the box's own (each box of a fleet has its own
//! pool): they are answered, probed and announced in every mode and state, and their
//! traffic (replies of FullNAT flows) is never dropped for the fleet's sake. The choice is
//! global, not per interface, because it is about the VIPs, which are the box's, not an
//! interface's, and because `vrrp` needs a state that the whole box shares.

use std::fmt;
use std::str::FromStr;

/// `[fleet] mode`: how this box takes part in a fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FleetMode {
    /// Alone on the link: answers and announces its VIPs (today's behaviour).
    #[default]
    Standalone,
    /// Behind routers that route the VIPs to the box: silent for the VIPs, forwarding.
    Bgp,
    /// One of a keepalived pair: standalone while active, silent and not forwarding while
    /// standby.
    Vrrp,
}

impl FleetMode {
    pub const ALL: [FleetMode; 3] = [FleetMode::Standalone, FleetMode::Bgp, FleetMode::Vrrp];

    /// The config's name: `standalone`, `bgp` or `vrrp`.
    pub const fn name(self) -> &'static str {
        match self {
            FleetMode::Standalone => "standalone",
            FleetMode::Bgp => "bgp",
            FleetMode::Vrrp => "vrrp",
        }
    }

    /// What the box does for its VIPs in this mode and VRRP state (the state matters in
    /// `vrrp` mode only).
    pub const fn presence(self, state: VrrpState) -> Presence {
        match (self, state) {
            (FleetMode::Standalone, _) | (FleetMode::Vrrp, VrrpState::Active) => {
                Presence { answer_vips: true, forward_vips: true }
            }
            (FleetMode::Bgp, _) => Presence { answer_vips: false, forward_vips: true },
            (FleetMode::Vrrp, VrrpState::Standby) => {
                Presence { answer_vips: false, forward_vips: false }
            }
        }
    }
}

impl fmt::Display for FleetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The VRRP state keepalived gives a box in `vrrp` mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum VrrpState {
    /// Keepalived's MASTER: answers, announces and forwards for the VIPs.
    Active,
    /// Keepalived's BACKUP or FAULT (and every box at start): silent, not forwarding.
    #[default]
    Standby,
}

impl VrrpState {
    pub const fn name(self) -> &'static str {
        match self {
            VrrpState::Active => "active",
            VrrpState::Standby => "standby",
        }
    }
}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VrrpState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "active" => Ok(VrrpState::Active),
            "standby" => Ok(VrrpState::Standby),
            other => Err(format!("fleet state {other:?}: expected active or standby")),
        }
    }
}

/// `[fleet] route_table` and `route_device` (bgp mode): xlb keeps a /32 route per VIP it can
/// serve in that kernel table, through a device of its own that dies with it
/// ([`crate::control::vip_routes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteExport {
    /// The kernel routing table (not 253, 254, 255).
    pub table: u32,
    /// The TUN device the routes point at (created by xlb; it must not exist).
    pub device: String,
}

impl RouteExport {
    pub const DEFAULT_DEVICE: &'static str = "xlb-vips";
}

/// What a box does for its VIPs (never for its local addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// Answer ARP for the VIPs, probe for them and announce them with gratuitous ARP.
    pub answer_vips: bool,
    /// Forward the VIPs' traffic (else it is dropped as `standby`).
    pub forward_vips: bool,
}

/// How `xlb ctl --fleet` and the log describe the box's part.
pub fn describe(mode: FleetMode, state: VrrpState) -> String {
    match mode {
        FleetMode::Vrrp => format!("fleet mode vrrp, state {state}"),
        mode => format!("fleet mode {mode}"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use super::*;
    use crate::dataplane::{CoreSlot, DropReason, IfaceId, Pipeline, Stat, Verdict};
    use crate::snapshot::Snapshot;
    use crate::testkit::{self, Host, SYN};
    use crate::time::Instant;
    use crate::wire::{ArpOperation, ArpPacket, MacAddr};

    const LB: Host = Host::new([2, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
    const CLIENT: Host = Host::new([2, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
    const PEER: Host = Host::new([2, 0, 0, 0, 0, 0x30], [10, 1, 1, 30]);
    const RS: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);
    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 200);
    const ETH: usize = 14;

    /// A DR service on VIP:80 and a FullNAT service on VIP:81 with local address LOCAL, in
    /// fleet mode `mode` (no `[fleet]` table for `None`).
    fn snapshot(mode: Option<&str>) -> Arc<Snapshot> {
        let fleet = mode.map(|m| format!("[fleet]\nmode = \"{m}\"\n")).unwrap_or_default();
        let text = format!(
            "{fleet}[[interface]]\nname = \"eth0\"\naddr = \"10.1.1.10/24\"\n\
             mac = \"02:00:00:00:00:10\"\n\
             [[neighbor]]\nip = \"10.1.1.11\"\nmac = \"02:00:00:00:00:11\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 80\nforward = \"dr\"\n\
             [[service.backend]]\naddr = \"10.1.1.11\"\n\
             [[service]]\nvip = \"10.1.1.100\"\nport = 81\nforward = \"fullnat\"\n\
             local_addrs = [\"10.1.1.200\"]\n[[service.backend]]\naddr = \"10.1.1.11\"\n"
        );
        let config = crate::control::Config::parse(&text, "fleet.toml").expect("valid");
        Arc::new(Snapshot::build(&config, 1).expect("builds"))
    }

    fn ask(pipeline: &mut Pipeline, target: Ipv4Addr) -> Verdict {
        let mut request = testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, target);
        pipeline.process(Instant::from_secs(1), IfaceId(0), &mut request)
    }

    fn syn(pipeline: &mut Pipeline, port: u16) -> (Verdict, Vec<u8>) {
        let mut frame = testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), (VIP, port), SYN, b"");
        (pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame), frame)
    }

    fn echo(pipeline: &mut Pipeline) -> Verdict {
        let mut frame = testkit::icmp_echo(CLIENT.mac, LB.mac, CLIENT.ip, VIP, 64, false, b"p");
        pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame)
    }

    /// The gratuitous ARP the pipeline sent, by announced address.
    fn announced(pipeline: &mut Pipeline) -> Vec<Ipv4Addr> {
        let mut addrs = Vec::new();
        for round in 0..4 {
            pipeline.maintain(Instant::from_millis(2000 + round));
            pipeline.drain_emitted(|_, frame| {
                let arp = ArpPacket::new_checked(&frame[ETH..]).expect("ARP");
                if arp.sender_proto_addr() == arp.target_proto_addr() {
                    addrs.push(arp.sender_proto_addr());
                }
            });
        }
        addrs.sort();
        addrs
    }

    #[test]
    fn modes_parse_and_default_to_standalone() {
        assert_eq!(snapshot(None).fleet, FleetMode::Standalone);
        for mode in FleetMode::ALL {
            assert_eq!(snapshot(Some(mode.name())).fleet, mode);
        }
    }

    /// Standalone answers ARP for the VIP and announces it; bgp passes the request to the
    /// kernel (which does not hold the VIP: nobody on this box answers) and announces only
    /// the local address, and still forwards the VIP's traffic routed to its MAC.
    #[test]
    fn bgp_mode_is_silent_for_vips_and_forwards() {
        let mut standalone = Pipeline::new(snapshot(None), CoreSlot::SINGLE);
        assert_eq!(ask(&mut standalone, VIP), Verdict::Tx(IfaceId(0)));
        standalone.announce(&[VIP, LOCAL]);
        assert_eq!(announced(&mut standalone), vec![VIP, LOCAL]);

        let mut bgp = Pipeline::new(snapshot(Some("bgp")), CoreSlot::SINGLE);
        assert_eq!(ask(&mut bgp, VIP), Verdict::Pass, "not answered");
        assert_eq!(bgp.counters().get(Stat::ArpRepliesSent), 0);
        assert_eq!(ask(&mut bgp, LOCAL), Verdict::Tx(IfaceId(0)), "the box's own");
        bgp.announce(&[VIP, LOCAL]);
        bgp.probe(&[VIP]);
        assert_eq!(announced(&mut bgp), vec![LOCAL]);
        assert_eq!(bgp.counters().get(Stat::ArpProbesSent), 0);
        let (verdict, frame) = syn(&mut bgp, 80);
        assert_eq!(verdict, Verdict::Tx(IfaceId(0)), "forwarded");
        assert_eq!(frame[0..6], RS.0, "to the real server");
        assert_eq!(echo(&mut bgp), Verdict::Tx(IfaceId(0)), "echo answered");
    }

    /// Another box's gratuitous ARP for a shared VIP is a conflict only where this box
    /// speaks for the VIP.
    #[test]
    fn a_peer_announcing_the_vip_is_a_conflict_only_for_a_box_that_speaks_for_it() {
        let peer_claim = || testkit::arp(true, PEER.mac, VIP, MacAddr::ZERO, VIP);
        let mut standalone = Pipeline::new(snapshot(None), CoreSlot::SINGLE);
        let verdict = standalone.process(Instant::from_secs(1), IfaceId(0), &mut peer_claim());
        assert_eq!(verdict, Verdict::Drop(DropReason::ArpConflict));
        let mut standby = Pipeline::new(snapshot(Some("vrrp")), CoreSlot::SINGLE);
        let verdict = standby.process(Instant::from_secs(1), IfaceId(0), &mut peer_claim());
        assert_eq!(verdict, Verdict::Pass);
        assert_eq!(standby.counters().get(Stat::ArpConflicts), 0);
    }

    /// VRRP: a box starts standby (silent, VIP traffic dropped as `standby`, the local
    /// address still answered); active answers and forwards, and becoming active announces
    /// every VIP at once; standby again is silent again; a reload keeps the state.
    #[test]
    fn vrrp_states_answer_forward_and_announce() {
        let mut pipeline = Pipeline::new(snapshot(Some("vrrp")), CoreSlot::SINGLE);
        assert_eq!(pipeline.vrrp_state(), VrrpState::Standby);
        assert_eq!(ask(&mut pipeline, VIP), Verdict::Pass);
        assert_eq!(ask(&mut pipeline, LOCAL), Verdict::Tx(IfaceId(0)));
        assert_eq!(syn(&mut pipeline, 80).0, Verdict::Drop(DropReason::Standby));
        assert_eq!(syn(&mut pipeline, 81).0, Verdict::Drop(DropReason::Standby));
        assert_eq!(echo(&mut pipeline), Verdict::Drop(DropReason::Standby));
        pipeline.announce(&[VIP, LOCAL]);
        assert_eq!(announced(&mut pipeline), vec![LOCAL]);

        pipeline.set_vrrp_state(VrrpState::Active);
        pipeline.announce(&[VIP]);
        assert_eq!(announced(&mut pipeline), vec![VIP], "gratuitous ARP on the transition");
        let mut request = testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, VIP);
        assert_eq!(pipeline.process(Instant::from_secs(3), IfaceId(0), &mut request), {
            Verdict::Tx(IfaceId(0))
        });
        let reply = ArpPacket::new_checked(&request[ETH..]).expect("ARP");
        assert_eq!(reply.operation(), ArpOperation::Reply);
        assert_eq!(reply.sender_hw_addr(), LB.mac);
        assert_eq!(syn(&mut pipeline, 80).0, Verdict::Tx(IfaceId(0)));
        assert_eq!(echo(&mut pipeline), Verdict::Tx(IfaceId(0)));

        pipeline.set_snapshot(snapshot(Some("vrrp")));
        assert_eq!(pipeline.vrrp_state(), VrrpState::Active, "a reload keeps the state");
        assert_eq!(ask(&mut pipeline, VIP), Verdict::Tx(IfaceId(0)));

        pipeline.set_vrrp_state(VrrpState::Standby);
        assert_eq!(ask(&mut pipeline, VIP), Verdict::Pass);
        assert_eq!(syn(&mut pipeline, 80).0, Verdict::Drop(DropReason::Standby));
        pipeline.announce(&[VIP]);
        assert_eq!(announced(&mut pipeline), Vec::<Ipv4Addr>::new());
    }

    /// IPv6 as IPv4: a solicitation for the VIP is answered by a standalone box and passed
    /// by a silent one, which never sends an unsolicited advertisement for it; a standby
    /// drops the VIP's traffic.
    #[test]
    fn ipv6_ndp_and_traffic_follow_the_fleet_mode() {
        use std::net::Ipv6Addr;
        let vip6: Ipv6Addr = "2001:db8:1::100".parse().unwrap();
        let client6: Ipv6Addr = "2001:db8:1::20".parse().unwrap();
        let snapshot6 = |mode: &str| {
            let text = format!(
                "[fleet]\nmode = \"{mode}\"\n[[interface]]\nname = \"eth0\"\n\
                 addr = \"10.1.1.10/24\"\nmac = \"02:00:00:00:00:10\"\n\
                 addr6 = \"2001:db8:1::10/64\"\n\
                 [[service]]\nvip = \"2001:db8:1::100\"\nport = 80\nforward = \"dr\"\n\
                 [[service.backend]]\naddr = \"2001:db8:1::11\"\n"
            );
            let config = crate::control::Config::parse(&text, "fleet6.toml").expect("valid");
            Arc::new(Snapshot::build(&config, 1).expect("builds"))
        };
        let solicit = |pipeline: &mut Pipeline| {
            let mut frame = testkit::neighbor_solicitation(CLIENT.mac, client6, vip6, None);
            pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame)
        };
        let adverts = |pipeline: &mut Pipeline| {
            pipeline.announce6(&[vip6]);
            pipeline.maintain(Instant::from_secs(2));
            pipeline.drain_emitted(|_, _| {});
            pipeline.counters().get(Stat::UnsolicitedNdpSent)
        };
        let mut standalone = Pipeline::new(snapshot6("standalone"), CoreSlot::SINGLE);
        assert_eq!(solicit(&mut standalone), Verdict::Tx(IfaceId(0)));
        assert_eq!(adverts(&mut standalone), 1);
        let mut bgp = Pipeline::new(snapshot6("bgp"), CoreSlot::SINGLE);
        assert_eq!(solicit(&mut bgp), Verdict::Pass);
        assert_eq!(adverts(&mut bgp), 0);
        let mut standby = Pipeline::new(snapshot6("vrrp"), CoreSlot::SINGLE);
        assert_eq!(solicit(&mut standby), Verdict::Pass);
        let mut syn = testkit::tcp6(CLIENT.mac, LB.mac, (client6, 4000), (vip6, 80), SYN, b"");
        let verdict = standby.process(Instant::from_secs(1), IfaceId(0), &mut syn);
        assert_eq!(verdict, Verdict::Drop(DropReason::Standby));
        standby.set_vrrp_state(VrrpState::Active);
        assert_eq!(solicit(&mut standby), Verdict::Tx(IfaceId(0)));
    }

    #[test]
    fn states_parse_and_describe() {
        assert_eq!("active".parse(), Ok(VrrpState::Active));
        assert_eq!("standby".parse(), Ok(VrrpState::Standby));
        assert!("master".parse::<VrrpState>().unwrap_err().contains("active or standby"));
        assert_eq!(describe(FleetMode::Vrrp, VrrpState::Active), "fleet mode vrrp, state active");
        assert_eq!(describe(FleetMode::Bgp, VrrpState::Standby), "fleet mode bgp");
    }
}
