//! NDP in the pipeline: what [`crate::dataplane::pipeline`]'s ARP step does for IPv4, for
//! IPv6, on [`crate::ndp`]'s parser and writers and the family-generic neighbour table and
//! hold queue ([`Core6`]).
//!
//! - A neighbour solicitation for a VIP or local address is answered with the box's MAC
//!   (solicited-node multicast or unicast, duplicate address detection probes from `::`
//!   included: defended to all nodes). The answer is written over the solicitation when the
//!   frame has room for it (`Tx` to the ingress); otherwise (a probe, or a solicitation
//!   without a source link-layer option, are 8 bytes shorter than the answer) it leaves
//!   through the emit queue and the solicitation's verdict is `ndp_answer_emitted`.
//! - Learning: a solicitation whose target is an address of ours (the box's own included)
//!   teaches its source; an advertisement to an address of ours, or for a next hop frames
//!   are held for, teaches its target; any other message only refreshes a neighbour already
//!   known or needed ([`crate::ndp::learn`]). Only neighbours on the ingress interface's
//!   link are learned: in its IPv6 prefix, or link-local (a gateway may be known by its
//!   link-local address). Frames held for a neighbour leave once it is learned.
//! - Another host advertising a VIP or local address as its own, or soliciting from one, is
//!   a conflict: never learned or answered, dropped as `ndp_conflict` and counted in
//!   `ndp_conflicts` (our own advertisement looped back is passed).
//! - A message [`crate::ndp::parse`] refuses (RFC 4861 §7.1) is dropped as `bad_ndp` if it is
//!   about an address of ours, else passed; everything not about a VIP or local address
//!   (solicitations for the box's own address, advertisements to it) goes on to the kernel
//!   after xlb learned from it, as ARP does.
//! - Next hops (backends, gateways, clients) are resolved by a solicitation from the egress
//!   interface's own IPv6 address, never a VIP, to the target's solicited-node group, while
//!   the frame waits in the hold queue ([`Core6::send`]).
//! - Unsolicited advertisements announce VIPs and local addresses, and duplicate address
//!   detection probes (RFC 4862, from `::`) ask whether another host has one before control
//!   announces it, paced like gratuitous ARP and ARP probes. The answer to a probe is an
//!   advertisement naming the address: another host's claim, a conflict as above.
//! - Bounded under a solicitation flood (any number of sources and MACs): each solicitation
//!   gets at most one answer, the same size (in place) or one emitted frame (the emit
//!   queue's capacity bounds those per batch, the rest count as `emit_overflow`); the
//!   neighbour table never grows past its capacity (strangers are evicted oldest-first, the
//!   next hops the snapshot needs never); solicitations for addresses not xlb's teach
//!   nothing (`a_solicitation_flood_at_an_ipv6_vip_keeps_state_and_answers_bounded` in
//!   `tests/robustness.rs`).

use std::net::Ipv6Addr;

use crate::arp::{Hold, Learned};
use crate::ndp::{self, NDP_FRAME_LEN, Ndp};
use crate::report::{Counters, DropReason, Stat};
use crate::snapshot::{IfaceId, Owned};
use crate::time::Instant;
use crate::wire::{EthernetFrame, MacAddr};

use super::super::emit::EmitQueue;
use super::super::neighbors::is_unicast;
use super::super::vlan;
use super::super::{NEIGHBOR_REFRESH, PACED_ARP_ROOM, REFRESH_PER_SCAN, Verdict};
use super::Core6;
use super::parse::L4;

/// An interface as the IPv6 steps see it: its MAC and its own IPv6 address, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) struct Link6 {
    pub mac: MacAddr,
    /// The box's own address on this link and its prefix length.
    pub addr: Option<(Ipv6Addr, u8)>,
}

impl Link6 {
    /// Whether `ip` can be a neighbour on this link: link-local, or in the link's prefix.
    pub fn on_link(&self, ip: Ipv6Addr) -> bool {
        if ip.is_unicast_link_local() {
            return true;
        }
        let Some((addr, prefix_len)) = self.addr else { return false };
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len.min(128))).unwrap_or(0);
        ip.to_bits() & mask == addr.to_bits() & mask
    }
}

/// An NDP frame xlb sends on control's request, paced (IPv6's `PacedArp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataplane::pipeline) enum Paced6 {
    /// An unsolicited advertisement announcing that the address is here.
    Announce(Ipv6Addr),
    /// A duplicate address detection probe: does another host have the address?
    Probe(Ipv6Addr),
}

/// What the IPv6 steps need of the snapshot: who owns an address, each interface's IPv6
/// side, and where an announced address lives.
pub(in crate::dataplane::pipeline) trait Side6 {
    /// The owner of `addr`, as `Snapshot::owned` for IPv4.
    fn owned6(&self, addr: Ipv6Addr) -> Option<Owned>;
    /// Interface `iface`, if the snapshot has it.
    fn link6(&self, iface: IfaceId) -> Option<Link6>;
    /// The interface a VIP or local address is announced on.
    fn announce_egress6(&self, addr: Ipv6Addr) -> Option<IfaceId>;
    /// Whether `mac` is one of the box's interfaces'.
    fn is_own_mac(&self, mac: MacAddr) -> bool;
    /// Whether `ip` can be a neighbour on some interface ([`Link6::on_link`]).
    fn on_some_link6(&self, ip: Ipv6Addr) -> bool;
}

/// True for VIPs and local addresses: what xlb answers NDP for.
#[inline]
fn answered(owned: Option<Owned>) -> bool {
    matches!(owned, Some(Owned::Vip | Owned::Local))
}

impl Core6 {
    /// A neighbour solicitation or advertisement (next header 58, type 135 or 136) received
    /// on `ingress`: see the module docs.
    #[allow(clippy::too_many_arguments)]
    pub fn ndp(
        &mut self,
        side: &impl Side6,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        emit: &mut EmitQueue,
        counters: &mut Counters,
    ) -> Verdict {
        let Some(link) = side.link6(ingress) else {
            return Verdict::Drop(DropReason::UnknownInterface);
        };
        let message = match ndp::parse(frame) {
            Ok(message) => message,
            Err(_) => {
                // The target, where a solicitation or advertisement has it.
                let target = frame.get(L4 + 8..L4 + 24).and_then(|t| <[u8; 16]>::try_from(t).ok());
                let ours = target.is_some_and(|t| answered(side.owned6(Ipv6Addr::from(t))));
                return if ours { Verdict::Drop(DropReason::BadNdp) } else { Verdict::Pass };
            }
        };
        let target = side.owned6(message.target());
        let (eth_src, src, dst) = match message {
            Ndp::Solicit(s) => (s.eth_src, s.src, s.dst),
            Ndp::Advert(a) => (a.eth_src, a.src, a.dst),
        };
        // Another host claims an address of ours: it advertises it, or speaks from it. Our
        // own advertisement looped back is the kernel's.
        let claimed = matches!(message, Ndp::Advert(_)) && answered(target);
        if claimed || answered(side.owned6(src)) {
            if side.is_own_mac(eth_src) {
                return Verdict::Pass;
            }
            counters.add(Stat::NdpConflicts, 1);
            return Verdict::Drop(DropReason::NdpConflict);
        }
        let wanted = match message {
            Ndp::Solicit(_) => target.is_some(),
            Ndp::Advert(a) => {
                side.owned6(dst).is_some() || self.hold.unresolved().any(|(hop, _)| hop == a.target)
            }
        };
        if message.neighbor().is_some_and(|(ip, _)| link.on_link(ip))
            && let Some((ip, mac, learned)) = ndp::learn(&mut self.neighbors, now, &message, wanted)
        {
            self.learned(side, ip, mac, learned, emit, counters);
        }
        let Ndp::Solicit(solicit) = message else { return Verdict::Pass };
        if !answered(target) {
            return Verdict::Pass;
        }
        if frame.len() >= NDP_FRAME_LEN {
            return match ndp::answer_solicit(frame, &solicit, link.mac) {
                Ok(len) => {
                    // Whatever followed the solicitation's message becomes padding.
                    frame[len..].fill(0);
                    counters.add(Stat::NdpAdvertsSent, 1);
                    Verdict::Tx(ingress)
                }
                Err(_) => Verdict::Drop(DropReason::BadNdp),
            };
        }
        // The answer does not fit the solicitation's frame: it leaves on its own.
        let mut answer = [0u8; NDP_FRAME_LEN];
        let Ok(len) = ndp::answer_solicit(&mut answer, &solicit, link.mac) else {
            return Verdict::Drop(DropReason::BadNdp);
        };
        let stat = if emit.push(ingress, &answer[..len]) {
            Stat::NdpAdvertsSent
        } else {
            Stat::EmitOverflow
        };
        counters.add(stat, 1);
        Verdict::Drop(DropReason::NdpAnswerEmitted)
    }

    /// Records `ip` at `mac` as learned outside the pipeline (relayed NDP), if it is on an
    /// interface's link and unicast, then releases what was held for it.
    pub fn learn(
        &mut self,
        side: &impl Side6,
        now: Instant,
        ip: Ipv6Addr,
        mac: MacAddr,
        emit: &mut EmitQueue,
        counters: &mut Counters,
    ) {
        if ip.is_unspecified() || ip.is_multicast() || !side.on_some_link6(ip) || !is_unicast(mac) {
            counters.add(Stat::NeighborsIgnored, 1);
            return;
        }
        let learned = self.neighbors.learn(now, ip, mac);
        self.learned(side, ip, mac, learned, emit, counters);
    }

    /// Counts what the table did with `ip` and releases the frames held for it.
    fn learned(
        &mut self,
        side: &impl Side6,
        ip: Ipv6Addr,
        mac: MacAddr,
        learned: Learned,
        emit: &mut EmitQueue,
        counters: &mut Counters,
    ) {
        match learned {
            Learned::New | Learned::NewEvicting | Learned::Updated => {
                counters.add(Stat::NeighborsLearned, 1);
                if learned == Learned::NewEvicting {
                    counters.add(Stat::NeighborsEvicted, 1);
                }
            }
            Learned::Full => return counters.add(Stat::NeighborTableFull, 1),
            Learned::Unchanged | Learned::Static => return,
        }
        self.hold.release(ip, |egress, held| {
            let mut eth = EthernetFrame::new_unchecked(&mut *held);
            eth.set_dst_addr(mac);
            if let Some(link) = side.link6(egress) {
                eth.set_src_addr(link.mac);
            }
            if emit.push_held(egress, held) {
                counters.add(Stat::ReleasedPackets, 1);
            } else {
                counters.add(Stat::EmitOverflow, 1);
            }
        });
    }

    /// Fills in the Ethernet header of `frame` towards `next_hop` through `egress`, or holds
    /// the frame and asks for the next hop's MAC (from the egress interface's own IPv6
    /// address: no address there, no question, and the frame expires held).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        side: &impl Side6,
        now: Instant,
        frame: &mut [u8],
        egress: IfaceId,
        next_hop: Ipv6Addr,
        emit: &mut EmitQueue,
        counters: &mut Counters,
    ) -> Verdict {
        let Some(link) = side.link6(egress) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        eth.set_src_addr(link.mac);
        if let Some(mac) = self.neighbors.lookup(next_hop) {
            eth.set_dst_addr(mac);
            return Verdict::Tx(egress);
        }
        match vlan::hold(&mut self.hold, now, next_hop, egress, frame, emit.tags()) {
            Hold::HeldAskNow => {
                self.solicit(link, egress, next_hop, emit, counters);
                Verdict::Held
            }
            Hold::Held => Verdict::Held,
            Hold::QueueFull | Hold::TooManyPending => Verdict::Drop(DropReason::NeighborHoldFull),
            Hold::TooLarge => Verdict::Drop(DropReason::NeighborFrameTooLarge),
        }
    }

    /// Queues a solicitation for `target` out of `egress` (`link`), from the link's own
    /// address; false if the emit queue is full (counted) or the link has no IPv6 address.
    fn solicit(
        &mut self,
        link: Link6,
        egress: IfaceId,
        target: Ipv6Addr,
        emit: &mut EmitQueue,
        counters: &mut Counters,
    ) -> bool {
        let Some((our_ip, _)) = link.addr else { return false };
        let asked = emit.push_with(egress, |buffer| {
            ndp::write_solicit(buffer, link.mac, our_ip, target).unwrap_or(0)
        });
        counters.add(if asked { Stat::NdpSolicitsSent } else { Stat::EmitOverflow }, 1);
        asked
    }

    /// Asks again for `next_hops` (with their egress) learned more than
    /// [`NEIGHBOR_REFRESH`] ago, at most [`REFRESH_PER_SCAN`] of them, each once (static
    /// entries never), as IPv4's `refresh_neighbors`.
    pub fn refresh(
        &mut self,
        side: &impl Side6,
        now: Instant,
        next_hops: impl Iterator<Item = (Ipv6Addr, IfaceId)>,
        emit: &mut EmitQueue,
        counters: &mut Counters,
    ) {
        let mut asked = [Ipv6Addr::UNSPECIFIED; REFRESH_PER_SCAN];
        let mut count = 0;
        for (next_hop, egress) in next_hops {
            let Some(neighbor) = self.neighbors.get(next_hop) else { continue };
            if neighbor.is_static
                || now.saturating_duration_since(neighbor.updated) < NEIGHBOR_REFRESH
                || asked[..count].contains(&next_hop)
            {
                continue;
            }
            let Some(link) = side.link6(egress) else { continue };
            if !self.solicit(link, egress, next_hop, emit, counters) {
                break;
            }
            asked[count] = next_hop;
            count += 1;
            if count == REFRESH_PER_SCAN {
                break;
            }
        }
    }

    /// Queues `requests` (unsolicited advertisements, duplicate address detection probes),
    /// each once.
    pub fn queue_paced(&mut self, requests: impl Iterator<Item = Paced6>) {
        for request in requests {
            if !self.paced.contains(&request) {
                self.paced.push_back(request);
            }
        }
    }

    /// Moves queued announcements and probes into the emit queue while it has room for
    /// paced frames; an address that is no longer a VIP or local address is skipped.
    pub fn send_paced(&mut self, side: &impl Side6, emit: &mut EmitQueue, counters: &mut Counters) {
        while emit.len() < PACED_ARP_ROOM {
            let Some(request) = self.paced.pop_front() else { return };
            let (Paced6::Announce(addr) | Paced6::Probe(addr)) = request;
            if !answered(side.owned6(addr)) {
                continue;
            }
            let Some(egress) = side.announce_egress6(addr) else { continue };
            let Some(link) = side.link6(egress) else { continue };
            let pushed = emit.push_with(egress, |buffer| {
                match request {
                    Paced6::Announce(_) => ndp::write_unsolicited(buffer, link.mac, addr),
                    Paced6::Probe(_) => ndp::write_probe(buffer, link.mac, addr),
                }
                .unwrap_or(0)
            });
            let stat = match (pushed, request) {
                (false, _) => Stat::EmitOverflow,
                (true, Paced6::Announce(_)) => Stat::UnsolicitedNdpSent,
                (true, Paced6::Probe(_)) => Stat::NdpProbesSent,
            };
            counters.add(stat, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::ConntrackConfig;
    use crate::testkit::{self, Host6, multicast_mac};
    use crate::wire::ndp::ALL_NODES;

    const fn v6(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)
    }
    const LB: Host6 = Host6::new([2, 0, 0, 0, 0, 0x10], v6(0x10));
    const CLIENT: Host6 = Host6::new([2, 0, 0, 0, 0, 0x20], v6(0x20));
    const RS: Host6 = Host6::new([2, 0, 0, 0, 0, 0x11], v6(0x11));
    const VIP: Ipv6Addr = v6(0x100);
    const LOCAL: Ipv6Addr = v6(0x200);

    /// One interface, 2001:db8:1::10/64, with one VIP and one local address.
    struct Box6;

    impl Side6 for Box6 {
        fn owned6(&self, addr: Ipv6Addr) -> Option<Owned> {
            match addr {
                VIP => Some(Owned::Vip),
                LOCAL => Some(Owned::Local),
                a if a == LB.ip => Some(Owned::Interface(IfaceId(0))),
                _ => None,
            }
        }
        fn link6(&self, iface: IfaceId) -> Option<Link6> {
            (iface == IfaceId(0)).then_some(Link6 { mac: LB.mac, addr: Some((LB.ip, 64)) })
        }
        fn announce_egress6(&self, _: Ipv6Addr) -> Option<IfaceId> {
            Some(IfaceId(0))
        }
        fn is_own_mac(&self, mac: MacAddr) -> bool {
            mac == LB.mac
        }
        fn on_some_link6(&self, ip: Ipv6Addr) -> bool {
            self.link6(IfaceId(0)).is_some_and(|link| link.on_link(ip))
        }
    }

    struct Fixture {
        core: Core6,
        emit: EmitQueue,
        counters: Counters,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                core: Core6::with_capacities(&ConntrackConfig::with_capacity(16), 64),
                emit: EmitQueue::new(),
                counters: Counters::new(0),
            }
        }

        fn receive(&mut self, frame: &mut [u8]) -> Verdict {
            let now = Instant::from_secs(1);
            let Fixture { core, emit, counters } = self;
            core.ndp(&Box6, now, IfaceId(0), frame, emit, counters)
        }

        fn emitted(&mut self) -> Vec<Vec<u8>> {
            let mut frames = Vec::new();
            self.emit.drain(|_, frame| frames.push(frame.to_vec()));
            frames
        }
    }

    fn advert(from: (MacAddr, Ipv6Addr), to: (MacAddr, Ipv6Addr), solicited: bool) -> Vec<u8> {
        testkit::neighbor_advertisement(from, to, from.1, from.0, solicited)
    }

    #[test]
    fn solicitations_for_our_addresses_are_answered_in_place_and_teach_the_solicitor() {
        let mut box6 = Fixture::new();
        for (target, unicast) in [(VIP, None), (LOCAL, None), (VIP, Some((VIP, LB.mac)))] {
            let mut frame = testkit::neighbor_solicitation(CLIENT.mac, CLIENT.ip, target, unicast);
            assert_eq!(box6.receive(&mut frame), Verdict::Tx(IfaceId(0)));
            let expected = testkit::neighbor_advertisement(
                (LB.mac, target),
                (CLIENT.mac, CLIENT.ip),
                target,
                LB.mac,
                true,
            );
            assert_eq!(frame, expected, "{target} {unicast:?}");
        }
        assert_eq!(box6.core.neighbors.lookup(CLIENT.ip), Some(CLIENT.mac));
        assert_eq!(box6.counters.get(Stat::NdpAdvertsSent), 3);
        assert!(box6.emitted().is_empty());
    }

    #[test]
    fn a_duplicate_address_probe_for_a_vip_is_defended_by_an_emitted_answer() {
        let mut box6 = Fixture::new();
        let mut probe =
            testkit::neighbor_solicitation(CLIENT.mac, Ipv6Addr::UNSPECIFIED, VIP, None);
        assert_eq!(box6.receive(&mut probe), Verdict::Drop(DropReason::NdpAnswerEmitted));
        let to_all = (multicast_mac(ALL_NODES), ALL_NODES);
        let expected = testkit::neighbor_advertisement((LB.mac, VIP), to_all, VIP, LB.mac, false);
        assert_eq!(box6.emitted(), vec![expected]);
        assert!(box6.core.neighbors.is_empty(), "a probe names no neighbour");
    }

    #[test]
    fn what_is_not_about_our_addresses_goes_to_the_kernel() {
        let mut box6 = Fixture::new();
        // For the box's own address: the kernel answers; xlb learns the solicitor.
        let mut own = testkit::neighbor_solicitation(CLIENT.mac, CLIENT.ip, LB.ip, None);
        let sent = own.clone();
        assert_eq!(box6.receive(&mut own), Verdict::Pass);
        assert_eq!(own, sent, "passed unchanged");
        assert_eq!(box6.core.neighbors.lookup(CLIENT.ip), Some(CLIENT.mac));
        // For another host: passed, nothing learned.
        let mut other = testkit::neighbor_solicitation(RS.mac, RS.ip, v6(0x99), None);
        assert_eq!(box6.receive(&mut other), Verdict::Pass);
        assert_eq!(box6.core.neighbors.lookup(RS.ip), None);
        // Refused by RFC 4861 §7.1 (forwarded: hop limit 254): about a VIP, a counted drop.
        let bad = |target| {
            testkit::with_hop_limit(
                testkit::neighbor_solicitation(RS.mac, RS.ip, target, None),
                254,
            )
        };
        assert_eq!(box6.receive(&mut bad(VIP)), Verdict::Drop(DropReason::BadNdp));
        assert_eq!(box6.receive(&mut bad(v6(0x99))), Verdict::Pass);
        assert!(box6.emitted().is_empty());
    }

    #[test]
    fn another_host_claiming_a_vip_is_a_conflict() {
        let mut box6 = Fixture::new();
        let claim = advert((RS.mac, VIP), (multicast_mac(ALL_NODES), ALL_NODES), false);
        assert_eq!(box6.receive(&mut claim.clone()), Verdict::Drop(DropReason::NdpConflict));
        let mut from_vip = testkit::neighbor_solicitation(RS.mac, VIP, RS.ip, None);
        assert_eq!(box6.receive(&mut from_vip), Verdict::Drop(DropReason::NdpConflict));
        assert_eq!(box6.counters.get(Stat::NdpConflicts), 2);
        assert_eq!(box6.core.neighbors.lookup(VIP), None);
        // Our own announcement, looped back: the kernel's.
        let ours = advert((LB.mac, VIP), (multicast_mac(ALL_NODES), ALL_NODES), false);
        assert_eq!(box6.receive(&mut ours.clone()), Verdict::Pass);
    }

    /// A frame to an unresolved next hop is held and a solicitation asks from the box's
    /// own address; the advertisement that answers releases it; then frames go at once.
    #[test]
    fn hold_solicit_learn_release() {
        let mut box6 = Fixture::new();
        let now = Instant::from_secs(1);
        let mut frame =
            testkit::tcp6(CLIENT.mac, LB.mac, (CLIENT.ip, 1), (VIP, 80), testkit::SYN, b"");
        let Fixture { core, emit, counters } = &mut box6;
        let verdict = core.send(&Box6, now, &mut frame, IfaceId(0), RS.ip, emit, counters);
        assert_eq!(verdict, Verdict::Held);
        let solicitation = testkit::neighbor_solicitation(LB.mac, LB.ip, RS.ip, None);
        assert_eq!(box6.emitted(), vec![solicitation]);
        // The answer, to the box's own address: learned, then passed on to the kernel.
        let mut answer = advert((RS.mac, RS.ip), (LB.mac, LB.ip), true);
        assert_eq!(box6.receive(&mut answer), Verdict::Pass);
        let mut released = frame.clone();
        released[..6].copy_from_slice(&RS.mac.0);
        released[6..12].copy_from_slice(&LB.mac.0);
        assert_eq!(box6.emitted(), vec![released.clone()]);
        let Fixture { core, emit, counters } = &mut box6;
        let verdict = core.send(&Box6, now, &mut frame, IfaceId(0), RS.ip, emit, counters);
        assert_eq!((verdict, frame), (Verdict::Tx(IfaceId(0)), released));
        // Unasked, an advertisement teaches nothing (RFC 4861 §7.2.5).
        let mut stray = advert((CLIENT.mac, CLIENT.ip), (LB.mac, v6(0x99)), true);
        assert_eq!(box6.receive(&mut stray), Verdict::Pass);
        assert_eq!(box6.core.neighbors.lookup(CLIENT.ip), None);
    }

    #[test]
    fn relayed_neighbours_off_link_are_ignored() {
        let mut box6 = Fixture::new();
        let now = Instant::from_secs(1);
        let Fixture { core, emit, counters } = &mut box6;
        let gateway_ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        core.learn(&Box6, now, gateway_ll, RS.mac, emit, counters);
        core.learn(&Box6, now, RS.ip, RS.mac, emit, counters);
        core.learn(
            &Box6,
            now,
            Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1),
            RS.mac,
            emit,
            counters,
        );
        core.learn(&Box6, now, CLIENT.ip, multicast_mac(ALL_NODES), emit, counters);
        assert_eq!(core.neighbors.len(), 2, "link-local and on the prefix");
        assert_eq!(counters.get(Stat::NeighborsIgnored), 2);
    }

    #[test]
    fn announcements_and_refreshes() {
        let mut box6 = Fixture::new();
        let Fixture { core, emit, counters } = &mut box6;
        let announce = [VIP, LB.ip, VIP].map(Paced6::Announce);
        core.queue_paced(announce.into_iter());
        core.send_paced(&Box6, emit, counters);
        let to_all = (multicast_mac(ALL_NODES), ALL_NODES);
        let expected = testkit::neighbor_advertisement((LB.mac, VIP), to_all, VIP, LB.mac, false);
        assert_eq!(box6.emitted(), vec![expected], "once, and only owned addresses");
        let Fixture { core, emit, counters } = &mut box6;
        let probes = [LOCAL, LB.ip, VIP, LOCAL].map(Paced6::Probe);
        core.queue_paced(probes.into_iter());
        core.send_paced(&Box6, emit, counters);
        let probe = |ip| testkit::neighbor_solicitation(LB.mac, Ipv6Addr::UNSPECIFIED, ip, None);
        assert_eq!(box6.emitted(), vec![probe(LOCAL), probe(VIP)], "probed once, owned only");
        assert_eq!(box6.counters.get(Stat::NdpProbesSent), 2);
        let Fixture { core, emit, counters } = &mut box6;
        core.learn(&Box6, Instant::from_secs(1), RS.ip, RS.mac, emit, counters);
        core.refresh(
            &Box6,
            Instant::from_secs(20),
            [(RS.ip, IfaceId(0))].into_iter(),
            emit,
            counters,
        );
        assert!(box6.emitted().is_empty(), "still fresh");
        let Fixture { core, emit, counters } = &mut box6;
        let twice = [(RS.ip, IfaceId(0)), (RS.ip, IfaceId(0))];
        core.refresh(&Box6, Instant::from_secs(40), twice.into_iter(), emit, counters);
        let solicitation = testkit::neighbor_solicitation(LB.mac, LB.ip, RS.ip, None);
        assert_eq!(box6.emitted(), vec![solicitation]);
    }
}
