//! ICMP: echo requests to a VIP or local address are answered; errors about a tracked flow
//! are sent on to that flow's peer, translated (outer header and quote).
//!
//! Invariants: an error only reads its flow ([`CoreState::peek`]): it never refreshes its
//! last-seen time nor moves its state, so forged errors cannot keep an idle flow alive.
//! Errors are never answered with errors.

use crate::flow::ForwardMode;
use crate::report::{DropReason, Stat};
use crate::snapshot::{IfaceId, Owned, Snapshot};
use crate::time::Instant;
use crate::wire::icmp::icmp_type;
use crate::wire::{IcmpPacket, Ipv4Packet};

use super::classify::quoted_transport;
use super::flows::{backend_of, translate};
use super::rewrite::{decrement_ttl, echo_reply, rewrite_quote};
use super::{CoreState, ETH_LEN, Verdict, reject};

impl CoreState {
    #[inline(never)]
    pub(super) fn icmp(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        ingress: IfaceId,
        frame: &mut [u8],
        owned: Option<Owned>,
        icmp_range: std::ops::Range<usize>,
    ) -> Verdict {
        let Ok(icmp) = IcmpPacket::new_checked(&frame[icmp_range.clone()]) else {
            return reject(owned, DropReason::Truncated);
        };
        match icmp.msg_type() {
            icmp_type::ECHO_REQUEST if owned.is_some() => {
                echo_reply(frame, icmp_range);
                self.counters.add(Stat::IcmpEchoReplies, 1);
                Verdict::Tx(ingress)
            }
            kind if crate::wire::icmp::is_error(kind) => {
                self.icmp_error(snapshot, now, frame, owned, icmp_range)
            }
            _ => reject(owned, DropReason::UnsupportedIcmp),
        }
    }

    /// An ICMP error quotes a packet (its header and 8 bytes) that went the *other* way. The
    /// flow is found by that quote reversed; the error then travels like a packet of that
    /// direction, and the quote is translated as the reverse of the same translation.
    fn icmp_error(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        frame: &mut [u8],
        owned: Option<Owned>,
        icmp_range: std::ops::Range<usize>,
    ) -> Verdict {
        let Some(quoted) = quoted_transport(&frame[icmp_range.clone()]) else {
            return reject(owned, DropReason::Truncated);
        };
        let key = quoted.key.reversed();
        // Anyone can send an error quoting a flow: it is forwarded, but it neither keeps the
        // flow alive nor moves its state.
        let Some(hit) = self.peek(now, &key, self.conntrack.hash(&key)) else {
            return reject(owned, DropReason::IcmpNoFlow);
        };
        let flow = hit.flow;
        if !flow.forward.keeps_packet() && !decrement_ttl(frame) {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let (src, dst) = translate(&flow, hit.direction);
        // Outer header: to the translated destination; from the translated source if the
        // error came from the flow's peer itself (a router's address is left alone).
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
            if ip.dst_addr() != dst.0 {
                ip.rewrite_dst_addr(dst.0);
            }
            if ip.src_addr() == key.src_addr && ip.src_addr() != src.0 {
                ip.rewrite_src_addr(src.0);
            }
        }
        // The quoted packet went the other way: its source is our destination and vice versa.
        let quote_start = icmp_range.start + 8;
        rewrite_quote(&mut frame[quote_start..icmp_range.end], flow.proto, dst, src);
        let icmp_range_start = icmp_range.start;
        let mut icmp = IcmpPacket::new_unchecked(&mut frame[icmp_range]);
        icmp.fill_checksum();
        self.counters.add(Stat::IcmpErrorsForwarded, 1);
        let backend = backend_of(snapshot, &flow);
        // Network, host, protocol or port unreachable (codes 0-3); not "fragmentation
        // needed" or "prohibited", which are about the path.
        let unreachable = frame.get(icmp_range_start) == Some(&icmp_type::DEST_UNREACHABLE)
            && frame.get(icmp_range_start + 1).is_some_and(|code| *code <= 3);
        if unreachable {
            self.count_unreachable(backend, hit.direction);
        }
        if flow.forward == ForwardMode::Tunnel {
            return self.encapsulate(snapshot, now, frame, &flow);
        }
        self.deliver(snapshot, now, frame, &flow, hit.direction, backend)
    }
}
