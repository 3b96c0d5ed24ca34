//! The IPv6 step of `CoreState::process`: who a frame is for, then its checks, then the
//! flow, ICMPv6 or NDP step; and the snapshot as the IPv6 steps see it ([`Side6`]).
//!
//! Invariants (as IPv4's `ipv4` step): a frame that cannot hold a fixed header is dropped
//! as `truncated`; a frame to the box's own address, to no address of xlb's (unless from a
//! NAT backend: maybe a reply), or to a group other than NDP for xlb's addresses is passed
//! to the kernel unchanged, before any other check (what is not xlb's is not xlb's to
//! judge); a frame for a VIP or local address is checked step by step and dropped with its
//! exact reason, one merely from a NAT backend is passed instead.

use std::net::Ipv6Addr;

use crate::family::V6;
use crate::snapshot::{IfaceId, Owned, Snapshot};
use crate::time::Instant;
use crate::wire::MacAddr;
use crate::wire::icmpv6::icmpv6_type;
use crate::wire::ipv4::ip_proto;

use super::super::{CoreState, Verdict, reject};
use super::flows::Class6;
use super::ndp::{Link6, Side6};
use super::parse::{Upper6, addresses, check, next_header_and_type};
use crate::report::DropReason;

/// The snapshot as the NDP steps see it on a box that may be silent for its VIPs
/// ([`crate::fleet`]): with `answer_vips` false a VIP is no address of ours, so a
/// solicitation for it is passed unanswered, it is never announced, and another host's
/// advertisement of it is no conflict. Local addresses are unaffected.
pub(in crate::dataplane::pipeline) struct Fleet6<'a> {
    pub snapshot: &'a Snapshot,
    pub answer_vips: bool,
}

impl Side6 for Fleet6<'_> {
    #[inline]
    fn owned6(&self, addr: Ipv6Addr) -> Option<Owned> {
        match self.snapshot.owned6(addr) {
            Some(Owned::Vip) if !self.answer_vips => None,
            owned => owned,
        }
    }

    #[inline]
    fn link6(&self, iface: IfaceId) -> Option<Link6> {
        self.snapshot.link6(iface)
    }

    fn announce_egress6(&self, addr: Ipv6Addr) -> Option<IfaceId> {
        self.snapshot.announce_egress6(addr)
    }

    fn is_own_mac(&self, mac: MacAddr) -> bool {
        self.snapshot.is_own_mac(mac)
    }

    fn on_some_link6(&self, ip: Ipv6Addr) -> bool {
        self.snapshot.on_some_link6(ip)
    }
}

impl Side6 for Snapshot {
    #[inline]
    fn owned6(&self, addr: Ipv6Addr) -> Option<Owned> {
        self.family::<V6>().owned(addr)
    }

    #[inline]
    fn link6(&self, iface: IfaceId) -> Option<Link6> {
        let interface = self.interfaces.get(iface.index())?;
        let addr = interface.ipv6.map(|side| (side.addr, side.prefix_len));
        Some(Link6 { mac: interface.mac, addr })
    }

    fn announce_egress6(&self, addr: Ipv6Addr) -> Option<IfaceId> {
        self.family::<V6>().route(addr).map(|route| route.egress)
    }

    fn is_own_mac(&self, mac: MacAddr) -> bool {
        self.interfaces.iter().any(|interface| interface.mac == mac)
    }

    fn on_some_link6(&self, ip: Ipv6Addr) -> bool {
        (0..self.interfaces.len())
            .filter_map(|index| self.link6(IfaceId(index as u8)))
            .any(|link| link.on_link(ip))
    }
}

/// Whether the frame is a neighbour solicitation or advertisement (next header 58 directly,
/// type 135 or 136): the NDP step judges the rest.
#[inline]
pub(in crate::dataplane::pipeline) fn is_ndp(frame: &[u8]) -> bool {
    matches!(
        next_header_and_type(frame),
        (ip_proto::ICMPV6, Some(icmpv6_type::NEIGHBOR_SOLICIT | icmpv6_type::NEIGHBOR_ADVERT))
    )
}

impl CoreState {
    /// An IPv6 frame to the ingress interface's MAC (or broadcast): see the module docs.
    #[inline(never)]
    pub(in crate::dataplane::pipeline) fn ipv6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
    ) -> Verdict {
        let Some((src, dst)) = addresses(frame) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        if is_ndp(frame) {
            return self.ndp6(snapshot, now, ingress, frame);
        }
        let six = snapshot.family::<V6>();
        let owned = match six.owned(dst) {
            Some(Owned::Interface(_)) => return Verdict::Pass,
            // A VRRP standby never forwards for the VIPs (`crate::fleet`).
            Some(Owned::Vip) if !self.presence.forward_vips => {
                return Verdict::Drop(DropReason::Standby);
            }
            Some(owned) => Some(owned),
            None if six.is_nat_backend(src) => None,
            None => return Verdict::Pass,
        };
        match check(frame) {
            Err(reason) => reject(owned, reason),
            Ok(Upper6::Transport { transport, l4 }) => match Class6::of_owner(owned) {
                Some(class) => self.transport6(snapshot, now, ingress, frame, class, transport, l4),
                None => Verdict::Pass,
            },
            Ok(Upper6::Icmp(icmp)) => self.icmp6(snapshot, now, ingress, frame, owned, icmp),
            // Fragments follow their first fragment's flow (`fragments`), as IPv4's.
            Ok(Upper6::Fragment(fragment)) => {
                self.fragment6(snapshot, now, ingress, frame, (src, dst), owned, fragment)
            }
        }
    }

    /// An IPv6 frame to a multicast MAC: NDP for xlb's addresses comes to their
    /// solicited-node groups (and advertisements to all nodes); anything else sent to a
    /// group is the kernel's.
    #[inline(never)]
    pub(in crate::dataplane::pipeline) fn ipv6_multicast(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
    ) -> Verdict {
        if !is_ndp(frame) {
            return Verdict::Pass;
        }
        self.ndp6(snapshot, now, ingress, frame)
    }

    fn ndp6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
    ) -> Verdict {
        let (emit, counters) = (&mut self.emit, &mut self.counters);
        let side = Fleet6 { snapshot, answer_vips: self.presence.answer_vips };
        self.v6.ndp(&side, now, ingress, frame, emit, counters)
    }
}
