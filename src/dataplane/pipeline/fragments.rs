//! IPv4 fragments to a VIP (and the replies: to a FullNAT local address, from a NAT
//! backend): the first fragment (offset 0, the one with the ports) is balanced as its
//! datagram's flow, and the later ones follow it.
//!
//! Design: no reassembly. The first fragment goes through the normal flow step
//! ([`CoreState::transport`]: lookup, scheduling, rewrite), which is correct for it as it
//! stands: the rewrites touch only the IPv4 header and the L4 header's ports and checksum,
//! and an L4 checksum covers the whole datagram, so its incremental update is right in the
//! first fragment alone. Then (source, destination, protocol, IP identification) is
//! remembered with the flow's 5-tuple in a small per-core table ([`FragmentTable`]:
//! direct-mapped, [`FRAGMENT_SLOTS`] entries, each valid [`FRAGMENT_TIMEOUT`]); a later
//! fragment finds its 5-tuple there, its flow in the connection tables (read only: a fragment
//! carries no TCP flags and does not refresh the flow), and is forwarded as the flow's
//! packets are: DR changes the MACs only; NAT and FullNAT change the addresses and the TTL
//! (the IPv4 checksum patched), never the bytes where a first fragment's ports would be.
//! A later fragment that comes before its first one (or after its entry was overwritten or
//! timed out, or its flow is gone) is dropped, counted as `fragment_no_first`: it is not
//! held. Per core is enough: RSS hashes fragments of a datagram by addresses alone (a
//! fragment has no ports), so they reach one queue.
//!
//! Not covered (still dropped as `fragment`): fragments to a tunnel service's VIP (the
//! wrapped copy would need the outer packet fragmented too), ICMP fragments, first
//! fragments cut inside their TCP header or before their UDP header's end, TCP fragments at
//! offset 1 (RFC 1858's overlapping-fragment attack); fragments with IPv4 options are
//! `ip_options`. What is refused from a NAT backend is passed to the kernel, as its whole
//! packets are. The steering program hands xlb no fragment from a NAT backend (a later one
//! has no ports to match), so on an AF_XDP port the NAT reply direction's fragments are
//! the kernel's: replay and the pipeline's callers see them balanced, `xlb run` does not.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::conntrack::Prepared;
use crate::flow::{FlowKey, ForwardMode, Proto};
use crate::report::DropReason;
use crate::snapshot::{IfaceId, Snapshot};
use crate::time::Instant;
use crate::wire::ipv4::ip_proto;

use super::classify::{Class, Transport};
use super::flows::{backend_of, translate};
use super::rewrite::route_addresses;
use super::{CoreState, ETH_LEN, Verdict};

/// Entries of a core's fragment table (a power of two).
pub(super) const FRAGMENT_SLOTS: usize = 1024;
/// How long a first fragment's entry lets later fragments follow it. Fragments of one
/// datagram leave their sender back to back; Linux waits 30 s to reassemble, but an entry
/// this table keeps longer only gets in the way of the next datagram reusing the slot.
pub(super) const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(2);

/// What names a datagram's fragments (RFC 791): addresses, protocol, identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DatagramId {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
}

impl DatagramId {
    fn slot(&self) -> usize {
        let word = (u64::from(self.src.to_bits()) << 32 | u64::from(self.dst.to_bits()))
            ^ (u64::from(self.ident) << 8 | u64::from(self.proto)).rotate_left(17);
        (crate::hash::mix64(word) as usize) & (FRAGMENT_SLOTS - 1)
    }
}

/// A first fragment as [`CoreState::fragment`] read it.
#[derive(Debug, Clone, Copy)]
struct FirstFragment {
    id: DatagramId,
    proto: Proto,
    total_len: usize,
    class: Class,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: DatagramId,
    key: FlowKey,
    until: Instant,
}

/// Per-core table of the datagrams whose first fragment was forwarded: their flow's 5-tuple,
/// for [`FRAGMENT_TIMEOUT`]. Direct-mapped: a newer datagram takes an older one's slot
/// (whose later fragments are then dropped, counted). Allocated once.
#[derive(Debug)]
pub(super) struct FragmentTable {
    slots: Box<[Option<Entry>]>,
}

impl FragmentTable {
    pub(super) fn new() -> Self {
        FragmentTable { slots: vec![None; FRAGMENT_SLOTS].into_boxed_slice() }
    }

    fn remember(&mut self, now: Instant, id: DatagramId, key: FlowKey) {
        self.slots[id.slot()] =
            Some(Entry { id, key, until: now.saturating_add(FRAGMENT_TIMEOUT) });
    }

    fn find(&self, now: Instant, id: &DatagramId) -> Option<FlowKey> {
        match self.slots[id.slot()] {
            Some(entry) if entry.id == *id && now < entry.until => Some(entry.key),
            _ => None,
        }
    }
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
        let id = DatagramId {
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            proto: packet[9],
            ident: u16::from_be_bytes([packet[4], packet[5]]),
        };
        let proto = match id.proto {
            ip_proto::TCP => Proto::Tcp,
            ip_proto::UDP => Proto::Udp,
            _ => return refuse(DropReason::Fragment),
        };
        let offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
        // RFC 1858 §3.2: a TCP fragment at offset 1 (8 bytes) can only be meant to
        // overwrite the flags of the first fragment's header where it is reassembled.
        if offset == 1 && proto == Proto::Tcp {
            return refuse(DropReason::Fragment);
        }
        if offset == 0 {
            let first = FirstFragment { id, proto, total_len, class };
            return match self.first_fragment(snapshot, now, ingress, frame, first) {
                Some(verdict) => verdict,
                None => refuse(DropReason::Fragment),
            };
        }
        let Some(key) = self.fragments.find(now, &id) else {
            return refuse(DropReason::FragmentNoFirst);
        };
        let hash = self.conntrack.hash(&key);
        let Some(hit) = self.peek(now, &key, hash) else {
            return refuse(DropReason::FragmentNoFirst);
        };
        let flow = hit.flow;
        if flow.forward != ForwardMode::Dr {
            let (src, dst) = translate(&flow, hit.direction);
            if !route_addresses(frame, src.0, dst.0) {
                return Verdict::Drop(DropReason::TtlExceeded);
            }
        }
        let backend = backend_of(snapshot, &flow);
        self.count_forwarded(backend, hit.direction, frame.len() as u64);
        self.deliver(snapshot, now, frame, &flow, hit.direction, backend)
    }

    /// The first fragment: balanced as a packet of its flow (its ports are there), then
    /// remembered for the later ones when it was forwarded. None when it is not one xlb
    /// balances (cut inside its transport header, to a tunnel service).
    fn first_fragment(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        first: FirstFragment,
    ) -> Option<Verdict> {
        let FirstFragment { id, proto, total_len, class } = first;
        let segment = &frame[ETH_LEN + 20..ETH_LEN + total_len];
        // The whole TCP header (its flags), or the UDP header (its length is the whole
        // datagram's: not checked against the fragment).
        let tcp_flags = match proto {
            Proto::Tcp => match segment.get(..20) {
                Some(tcp) if usize::from(tcp[12] >> 4) * 4 >= 20 => Some(tcp[13]),
                _ => return None,
            },
            Proto::Udp if segment.len() >= 8 => None,
            Proto::Udp => return None,
        };
        let key = FlowKey {
            src_addr: id.src,
            dst_addr: id.dst,
            src_port: u16::from_be_bytes([segment[0], segment[1]]),
            dst_port: u16::from_be_bytes([segment[2], segment[3]]),
            proto,
        };
        let tunnel = snapshot
            .service_at(key.dst_addr, key.dst_port, proto)
            .and_then(|index| snapshot.services.get(index))
            .is_some_and(|service| service.forward == ForwardMode::Tunnel);
        if tunnel {
            return None;
        }
        let lookup = Prepared::new(self.conntrack.hash(&key));
        let transport = Transport { key, tcp_flags };
        let verdict = self.transport(snapshot, now, ingress, frame, class, transport, lookup);
        if matches!(verdict, Verdict::Tx(_) | Verdict::Held) {
            self.fragments.remember(now, id, key);
        }
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_their_datagram_until_they_time_out_or_are_overwritten() {
        let mut table = FragmentTable::new();
        let now = Instant::from_secs(10);
        let id = |ident| DatagramId {
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
        let rival =
            (0..u16::MAX).map(id).find(|other| other.slot() == id(7).slot() && *other != id(7));
        let rival = rival.expect("some identification shares the slot");
        table.remember(now, rival, key(5000));
        assert_eq!(table.find(now, &id(7)), None);
        assert_eq!(table.find(now, &rival), Some(key(5000)));
    }
}
