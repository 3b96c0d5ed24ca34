//! Fragments, IPv4 and IPv6, to a VIP (and the replies: to a FullNAT local address, from
//! a NAT backend): the first fragment (offset 0, the one with the ports) is balanced as its
//! datagram's flow, and the later ones follow it.
//!
//! Design: no reassembly. The first fragment goes through the normal flow step
//! ([`CoreState::transport`], [`CoreState::transport6`]: lookup, scheduling, rewrite),
//! which is correct for it as it stands: the rewrites touch only the IP header and the L4
//! header's ports and checksum, and an L4 checksum covers the whole datagram, so its
//! incremental update is right in the first fragment alone. Then the datagram's name —
//! IPv4: (source, destination, protocol, 16-bit identification), RFC 791; IPv6: (source,
//! destination, 32-bit identification), RFC 8200 §4.5 — is remembered with the flow's
//! 5-tuple in a small per-core table per family ([`FragmentTable`]: direct-mapped,
//! [`FRAGMENT_SLOTS`] entries, each valid [`FRAGMENT_TIMEOUT`]); a later fragment finds its
//! 5-tuple there, its flow in the connection tables (read only: a fragment carries no TCP
//! flags and does not refresh the flow), and is forwarded as the flow's packets are
//! ([`CoreState::later_fragment`], one step for both families): DR changes the MACs only;
//! NAT and FullNAT change the addresses and the TTL (the IPv4 checksum patched) or the hop
//! limit (IPv6 has no header checksum), never the bytes where a first fragment's ports
//! would be; tunnel mode wraps each fragment whole, as it wraps whole packets, so the real
//! server reassembles the inner datagram after decapsulation (an IPv4 piece without DF too
//! big for the tunnel is cut again, `tunnel`). A later fragment that comes before its first
//! one (or after its entry was overwritten or timed out, or its flow is gone) is dropped,
//! counted as `fragment_no_first`: it is not held. Per core is enough: RSS hashes fragments
//! of a datagram by addresses alone (a fragment has no ports), so they reach one queue.
//!
//! IPv6 ([`super::v6::parse::check`] reads the fragment header, [`Fragment6`]): the
//! fragment header may come after hop-by-hop, destination options and routing headers
//! (walked as for whole packets, and forwarded as they are); in a first fragment the walk
//! goes on after it (destination options there are walked too) to the TCP/UDP header,
//! which must be in the first fragment (RFC 7112). An atomic fragment (offset 0, no more
//! fragments, RFC 6946) is a whole packet: walked past, balanced as one, not remembered.
//!
//! Not covered (dropped as `fragment`; passed when merely from a NAT backend): ICMP and
//! ICMPv6 fragments (an echo request is answered by xlb itself, which would need the whole
//! datagram; ICMP errors are never this big: RFC 1812 caps IPv4's at 576 bytes, RFC 4443
//! IPv6's at 1280, which no link fragments), first fragments without their whole TCP
//! header or UDP header's 8 bytes, TCP fragments at offset 1 (RFC 1858's
//! overlapping-fragment attack; either family), a second fragment header in a first
//! fragment's chain; IPv4 fragments with options are `ip_options`. On an AF_XDP port the
//! steering program hands xlb a NAT backend's reply fragments: the first one by its ports,
//! the later ones because their first one was (its datagram remembered 2 s in a BPF LRU
//! map, `nat_frags` / `nat6_frags`); a later one that comes before its first is the
//! kernel's.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::conntrack::{Direction, Flow, Hit, Prepared};
use crate::family::{Family, V4, V6};
use crate::flow::{FlowKey, ForwardMode};
use crate::report::DropReason;
use crate::snapshot::{IfaceId, Owned, Snapshot};
use crate::time::Instant;
use crate::wire::ipv4::ip_proto;

use super::classify::{Class, Transport, fragment_l4_header};
use super::flows::{backend_of, translate};
use super::rewrite::route_addresses;
use super::tunnel::Tunnelled;
use super::v6::flows::Class6;
use super::v6::parse::Fragment6;
use super::v6::rewrite::route_addresses6;
use super::{CoreState, ETH_LEN, Verdict, reject};

/// Entries of a core's fragment table, per family (a power of two).
pub(super) const FRAGMENT_SLOTS: usize = 1024;
/// How long a first fragment's entry lets later fragments follow it. Fragments of one
/// datagram leave their sender back to back; Linux waits 30 s to reassemble, but an entry
/// this table keeps longer only gets in the way of the next datagram reusing the slot.
pub(super) const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(2);

/// What names a datagram's fragments: addresses and identification, and for IPv4 the
/// protocol (RFC 791). IPv6's is 0: RFC 8200 §4.5 names a datagram by its addresses and
/// 32-bit identification alone (its fragments' next headers may differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DatagramId<F: Family> {
    src: F::Addr,
    dst: F::Addr,
    proto: u8,
    ident: u32,
}

impl<F: Family> DatagramId<F> {
    fn slot(&self) -> usize {
        let addrs = F::hash(F::key(self.src)) ^ F::hash(F::key(self.dst)).rotate_left(32);
        let word = addrs ^ (u64::from(self.ident) << 8 | u64::from(self.proto)).rotate_left(17);
        (crate::hash::mix64(word) as usize) & (FRAGMENT_SLOTS - 1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry<F: Family> {
    id: DatagramId<F>,
    key: FlowKey<F>,
    until: Instant,
}

/// Per-core table of the datagrams of family `F` whose first fragment was forwarded: their
/// flow's 5-tuple, for [`FRAGMENT_TIMEOUT`]. Direct-mapped: a newer datagram takes an older
/// one's slot (whose later fragments are then dropped, counted). Allocated once.
#[derive(Debug)]
pub(super) struct FragmentTable<F: Family> {
    slots: Box<[Option<Entry<F>>]>,
}

impl<F: Family> FragmentTable<F> {
    pub(super) fn new() -> Self {
        FragmentTable { slots: vec![None; FRAGMENT_SLOTS].into_boxed_slice() }
    }

    fn remember(&mut self, now: Instant, id: DatagramId<F>, key: FlowKey<F>) {
        self.slots[id.slot()] =
            Some(Entry { id, key, until: now.saturating_add(FRAGMENT_TIMEOUT) });
    }

    fn find(&self, now: Instant, id: &DatagramId<F>) -> Option<FlowKey<F>> {
        match self.slots[id.slot()] {
            Some(entry) if entry.id == *id && now < entry.until => Some(entry.key),
            _ => None,
        }
    }
}

/// Whether a first fragment's verdict forwarded it (sent, held for its next hop, wrapped):
/// then its later fragments may follow.
fn forwarded(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Tx(_) | Verdict::Held | Verdict::Encapsulated)
}

/// RFC 1858 §3.2: a TCP fragment at offset 1 (8 bytes) can only be meant to overwrite the
/// flags of the first fragment's header where it is reassembled. Either family.
fn overlaps_tcp_flags(protocol: u8, offset: u16) -> bool {
    offset == 1 && protocol == ip_proto::TCP
}

impl CoreState {
    /// An IPv4 fragment of class `class` (to a VIP, to a local address, from a NAT backend),
    /// its header checked (version, lengths, checksum) and without options: `packet` is
    /// `frame[ETH_LEN..ETH_LEN + total_len]`. What is refused from a NAT backend (not to an
    /// address of xlb's) is passed to the kernel, as its whole packets are.
    #[inline(never)]
    pub(super) fn fragment(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        total_len: usize,
        class: Class,
    ) -> Verdict {
        let refuse = |reason| match class {
            Class::FromNatBackend | Class::Other | Class::Ipv6 => Verdict::Pass,
            Class::ToVip | Class::ToLocal => Verdict::Drop(reason),
        };
        let packet = &frame[ETH_LEN..ETH_LEN + total_len];
        let id = DatagramId::<V4> {
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            proto: packet[9],
            ident: u32::from(u16::from_be_bytes([packet[4], packet[5]])),
        };
        let offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
        if !matches!(id.proto, ip_proto::TCP | ip_proto::UDP)
            || overlaps_tcp_flags(id.proto, offset)
        {
            return refuse(DropReason::Fragment);
        }
        if offset == 0 {
            // The TCP header whole, or the UDP header's 8 bytes: the ports.
            let Some((proto, src_port, dst_port, tcp_flags)) =
                fragment_l4_header(id.proto, &packet[20..])
            else {
                return refuse(DropReason::Fragment);
            };
            let key = FlowKey { src_addr: id.src, dst_addr: id.dst, src_port, dst_port, proto };
            let lookup = Prepared::new(self.conntrack.hash(&key));
            let transport = Transport { key, tcp_flags };
            let verdict = self.transport(snapshot, now, ingress, frame, class, transport, lookup);
            if forwarded(verdict) {
                self.fragments.remember(now, id, key);
            }
            return verdict;
        }
        self.later_fragment(snapshot, now, frame, &id).unwrap_or_else(refuse)
    }

    /// An IPv6 fragment (not atomic) that [`super::v6::parse::check`] read, to a VIP or
    /// local address (`owned`), or from a NAT backend (`owned` None): as IPv4's, the first
    /// balanced as its flow's packet (its extension headers forwarded as they are) and
    /// remembered, the later ones following it. `src` and `dst` are the packet's addresses.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fragment6(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        (src, dst): (Ipv6Addr, Ipv6Addr),
        owned: Option<Owned>,
        fragment: Fragment6,
    ) -> Verdict {
        let Some(class) = Class6::of_owner(owned) else { return Verdict::Pass };
        let id = DatagramId::<V6> { src, dst, proto: 0, ident: fragment.ident };
        if fragment.next_header == ip_proto::ICMPV6
            || overlaps_tcp_flags(fragment.next_header, fragment.offset)
        {
            return reject(owned, DropReason::Fragment);
        }
        if let Some((transport, l4)) = fragment.first {
            let key = transport.key;
            let verdict = self.transport6(snapshot, now, ingress, frame, class, transport, l4);
            if forwarded(verdict) {
                self.fragments6.remember(now, id, key);
            }
            return verdict;
        }
        self.later_fragment(snapshot, now, frame, &id).unwrap_or_else(|no| reject(owned, no))
    }

    /// A later fragment of datagram `id`, either family: forwarded as its first fragment's
    /// flow's packets are (DR: MACs; NAT and FullNAT: addresses and TTL or hop limit;
    /// tunnel: wrapped whole, the real server reassembling after decapsulation), or
    /// `Err(fragment_no_first)` when no first fragment was remembered or its flow is gone
    /// (the caller drops or passes it). The flow is read only: a fragment carries no TCP
    /// flags and does not refresh it.
    fn later_fragment<F: Fragmented>(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        id: &DatagramId<F>,
    ) -> Result<Verdict, DropReason> {
        let key = F::table(self).find(now, id).ok_or(DropReason::FragmentNoFirst)?;
        let hit = F::peek(self, now, &key).ok_or(DropReason::FragmentNoFirst)?;
        let flow = hit.flow;
        match flow.forward {
            ForwardMode::Tunnel => return Ok(self.tunnel(snapshot, now, frame, &flow)),
            ForwardMode::Dr => {}
            _ => {
                let (src, dst) = translate(&flow, hit.direction);
                if !F::route_addresses(frame, src.0, dst.0) {
                    return Ok(Verdict::Drop(DropReason::TtlExceeded));
                }
            }
        }
        let backend = backend_of(snapshot, &flow);
        self.count_forwarded(backend, hit.direction, frame.len() as u64);
        Ok(F::deliver(self, snapshot, now, frame, &flow, hit.direction, backend))
    }
}

/// A family whose fragments the pipeline forwards: its fragment table, connection lookup,
/// later fragments' rewrite and delivery.
trait Fragmented: Tunnelled {
    fn table(core: &mut CoreState) -> &mut FragmentTable<Self>;
    /// The flow of `key`, read only ([`CoreState::peek`], [`CoreState::peek6`]).
    fn peek(core: &CoreState, now: Instant, key: &FlowKey<Self>) -> Option<Hit<Self>>;
    /// [`route_addresses`] or [`route_addresses6`].
    fn route_addresses(frame: &mut [u8], src: Self::Addr, dst: Self::Addr) -> bool;
    /// [`CoreState::deliver`] or [`CoreState::deliver6`].
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        core: &mut CoreState,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<Self>,
        direction: Direction,
        backend: Option<usize>,
    ) -> Verdict;
}

impl Fragmented for V4 {
    fn table(core: &mut CoreState) -> &mut FragmentTable<V4> {
        &mut core.fragments
    }

    fn peek(core: &CoreState, now: Instant, key: &FlowKey) -> Option<Hit> {
        core.peek(now, key, core.conntrack.hash(key))
    }

    fn route_addresses(frame: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        route_addresses(frame, src, dst)
    }

    fn deliver(
        core: &mut CoreState,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow,
        direction: Direction,
        backend: Option<usize>,
    ) -> Verdict {
        core.deliver(snapshot, now, frame, flow, direction, backend)
    }
}

impl Fragmented for V6 {
    fn table(core: &mut CoreState) -> &mut FragmentTable<V6> {
        &mut core.fragments6
    }

    fn peek(core: &CoreState, now: Instant, key: &FlowKey<V6>) -> Option<Hit<V6>> {
        core.peek6(now, key, core.v6.conntrack.hash(key))
    }

    fn route_addresses(frame: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        route_addresses6(frame, src, dst)
    }

    fn deliver(
        core: &mut CoreState,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        flow: &Flow<V6>,
        direction: Direction,
        backend: Option<usize>,
    ) -> Verdict {
        core.deliver6(snapshot, now, frame, flow, direction, backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Proto;

    #[test]
    fn entries_follow_their_datagram_until_they_time_out_or_are_overwritten() {
        let mut table = FragmentTable::<V4>::new();
        let now = Instant::from_secs(10);
        let id = |ident| DatagramId::<V4> {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 100),
            proto: 17,
            ident,
        };
        let key = |port| FlowKey {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 100),
            src_port: port,
            dst_port: 53,
            proto: Proto::Udp,
        };
        table.remember(now, id(7), key(4000));
        assert_eq!(table.find(now, &id(7)), Some(key(4000)));
        assert_eq!(table.find(now, &id(8)), None, "another datagram");
        let other_proto = DatagramId { proto: 6, ..id(7) };
        assert_eq!(table.find(now, &other_proto), None, "another protocol");
        let late = now.saturating_add(FRAGMENT_TIMEOUT);
        assert_eq!(table.find(late, &id(7)), None, "timed out");
        // A datagram in the same slot takes it.
        let rival = (0..u32::from(u16::MAX))
            .map(id)
            .find(|other| other.slot() == id(7).slot() && *other != id(7));
        let rival = rival.expect("some identification shares the slot");
        table.remember(now, rival, key(5000));
        assert_eq!(table.find(now, &id(7)), None);
        assert_eq!(table.find(now, &rival), Some(key(5000)));
    }
}
