//! VLAN tags: 802.1Q (`0x8100`) and 802.1ad (`0x88a8`) tagged frames, priority tags
//! (VLAN 0) included, are processed through an untagged view of themselves.
//!
//! Design: every step of the pipeline reads and writes at fixed offsets from a 14-byte
//! Ethernet header (`ETH_LEN`). Rather than carry a variable L2 length through every step,
//! a tagged frame is made to look untagged in place: its 12 MAC bytes are moved forward
//! over its tag(s) ([`untag`]), `frame[tags.len()..]` goes through the normal pipeline
//! (`CoreState::process`), then the (possibly rewritten) MACs are moved back and the tags
//! written again in between ([`retag`]). So every offset stays fixed, the rewrites are
//! those of untagged frames byte for byte, and a tagged frame leaves with the tags it came
//! with ("tag kept"). The cost lands where tags are: the one-pass classification of the
//! common frame (`classify`) already refuses any EtherType but IPv4 and IPv6, so a tagged frame
//! takes the step-by-step checks, and the untagged paths pay one compare on the
//! step-by-step path only (none on the classified fast path). The other candidate, an L2
//! length carried through classify, the rewrites, ICMP, ARP, NDP and tunnel mode, would put
//! a variable offset into every hot-path read for a case most boxes never see. Measured
//! (callgrind, `bench/pipeline.rs`, instructions per packet, this change against 2088bdb in
//! one build setup): DR hit 517.3 -> 518.3, NAT hit 651.0 -> 652.0, tunnel hit 906.5 ->
//! 917.5 (+1.2%: the emit queue's test for tags to insert into every wrapped copy).
//!
//! Frames the pipeline writes on its own while it processes a tagged frame (the ARP
//! requests and neighbour solicitations it asks, tunnel-wrapped copies, ICMP
//! "fragmentation needed", NDP answers too long for the solicitation's frame) carry that
//! frame's tags: the emit queue inserts them after the MACs
//! ([`super::emit::EmitQueue::set_tags`]). So an answer carries the tag of the frame it
//! answers, and a question for a next hop the tag of the frame that needs it. A frame held
//! for its next hop is held tagged ([`hold`]) and released as it was held, whoever resolves
//! the next hop (a tagged ARP reply, or one the steering program relays): it leaves as it
//! would have left at once. Outside a frame (gratuitous ARP, probes, refreshes) frames leave
//! untagged.
//!
//! What is supported, then: DR, NAT, FullNAT and tunnel mode with clients, VIPs, backends
//! (and next hops) on one VLAN of a trunk port, or several VLANs that each hold all of
//! their own. A forwarded frame keeps its VLAN: a VIP on VLAN 10 with backends on VLAN 20
//! is not served (the frames would leave on VLAN 10); that needs per-VLAN interface
//! configuration, not built.
//!
//! Invariants: at most two tags ([`MAX_TAGS`]): an outer 802.1ad or 802.1Q tag and an
//! inner 802.1Q one; a third TPID is dropped as `vlan_too_many_tags`, a frame cut inside its
//! tags (or before the EtherType after them) as `vlan_truncated`. [`retag`] after [`untag`]
//! with the same tags gives the frame back as it came, whatever the pipeline left in the
//! view's MAC bytes.

use crate::arp::{Hold, HoldQueue, MAX_HELD_FRAME};
use crate::family::Family;
use crate::report::DropReason;
use crate::snapshot::IfaceId;
use crate::time::Instant;
use crate::wire::EtherType;

use super::ETH_LEN;

/// Tags a frame may carry: an outer (S-tag or C-tag) and an inner C-tag.
pub(super) const MAX_TAGS: usize = 2;
/// Bytes of one tag: TPID and TCI.
const TAG_LEN: usize = 4;
/// Bytes of the most tags a frame may carry.
pub(super) const MAX_TAGS_LEN: usize = MAX_TAGS * TAG_LEN;
/// The 12 bytes of the destination and source MACs.
const MACS_LEN: usize = 12;

/// The tags of one frame as they sat in it (TPIDs and TCIs, in network order), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Tags {
    bytes: [u8; MAX_TAGS_LEN],
    len: u8,
}

impl Tags {
    pub(super) const NONE: Tags = Tags { bytes: [0; MAX_TAGS_LEN], len: 0 };

    /// Bytes the tags take in the frame: 0, 4 or 8.
    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        usize::from(self.len)
    }

    #[inline(always)]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tags as they sit in the frame.
    #[inline(always)]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    /// The tags of `frame`, whose EtherType (bytes 12-13) is a TPID ([`is_tag`]): one or
    /// two, the EtherType after them in the frame. Errors: cut inside the tags or before the
    /// EtherType that follows them (`vlan_truncated`), a third TPID (`vlan_too_many_tags`).
    pub(super) fn parse(frame: &[u8]) -> Result<Tags, DropReason> {
        let mut tags = Tags::NONE;
        loop {
            let held = tags.len();
            let at = MACS_LEN + held;
            // The tag and the EtherType (or next TPID) after it.
            let Some(tag) = frame.get(at..at + TAG_LEN + 2) else {
                return Err(DropReason::VlanTruncated);
            };
            tags.bytes[held..held + TAG_LEN].copy_from_slice(&tag[..TAG_LEN]);
            tags.len += TAG_LEN as u8;
            if !is_tag(u16::from_be_bytes([tag[TAG_LEN], tag[TAG_LEN + 1]])) {
                return Ok(tags);
            }
            if tags.len() == MAX_TAGS_LEN {
                return Err(DropReason::VlanTooManyTags);
            }
        }
    }
}

/// Whether an EtherType is a VLAN tag's TPID (802.1Q or 802.1ad).
#[inline(always)]
pub(super) fn is_tag(ethertype: u16) -> bool {
    ethertype == EtherType::VLAN || ethertype == EtherType::QINQ
}

/// Makes `frame[tags.len()..]` an untagged frame: the MACs moved forward over `tags` (which
/// [`Tags::parse`] read from this frame, so the frame holds them and an EtherType).
#[inline]
pub(super) fn untag(frame: &mut [u8], tags: &Tags) {
    frame.copy_within(..MACS_LEN, tags.len());
}

/// Undoes [`untag`]: the view's MACs (as the pipeline left them) moved back to the front,
/// `tags` written after them.
#[inline]
pub(super) fn retag(frame: &mut [u8], tags: &Tags) {
    let len = tags.len();
    frame.copy_within(len..len + MACS_LEN, 0);
    frame[MACS_LEN..MACS_LEN + len].copy_from_slice(tags.bytes());
}

/// Inserts `tags` after the MACs of the `len`-byte untagged frame at the start of `slot`
/// (which has room for them): returns the tagged frame's length. A frame too short to hold
/// an Ethernet header is left as it is.
#[inline]
pub(super) fn insert(slot: &mut [u8], len: usize, tags: &Tags) -> usize {
    if tags.is_empty() || len < ETH_LEN {
        return len;
    }
    slot.copy_within(MACS_LEN..len, MACS_LEN + tags.len());
    slot[MACS_LEN..MACS_LEN + tags.len()].copy_from_slice(tags.bytes());
    len + tags.len()
}

/// Holds the untagged view `frame` for `next_hop` as it will leave: with `tags` (those of
/// the frame being processed) inserted after its MACs, so the frame released later keeps
/// them whoever resolves the next hop (the emit queue adds none to a released frame). A
/// frame too large to hold with its tags is refused as one too large to hold.
pub(super) fn hold<F: Family>(
    queue: &mut HoldQueue<F>,
    now: Instant,
    next_hop: F::Addr,
    egress: IfaceId,
    frame: &[u8],
    tags: &Tags,
) -> Hold {
    if tags.is_empty() {
        return queue.hold(now, next_hop, egress, frame);
    }
    let mut copy = [0u8; MAX_HELD_FRAME];
    let Some(slot) = copy.get_mut(..frame.len() + tags.len()) else {
        return Hold::TooLarge;
    };
    slot[..frame.len()].copy_from_slice(frame);
    let len = insert(slot, frame.len(), tags);
    queue.hold(now, next_hop, egress, &copy[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[[u8; 4]], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut out: Vec<u8> = (1..=12).collect();
        for tag in tags {
            out.extend_from_slice(tag);
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn tags_parse_as_the_table_says() {
        const Q: [u8; 4] = [0x81, 0x00, 0x00, 0x0a];
        const PRIORITY: [u8; 4] = [0x81, 0x00, 0xa0, 0x00];
        const AD: [u8; 4] = [0x88, 0xa8, 0x00, 0x64];
        let cases: Vec<(&str, Vec<u8>, Result<usize, DropReason>)> = vec![
            ("802.1Q", frame(&[Q], 0x0800, &[0; 20]), Ok(4)),
            ("priority tag", frame(&[PRIORITY], 0x0806, &[0; 28]), Ok(4)),
            ("802.1ad + 802.1Q", frame(&[AD, Q], 0x0800, &[0; 20]), Ok(8)),
            ("802.1Q + 802.1Q", frame(&[Q, Q], 0x86dd, &[]), Ok(8)),
            ("third tag", frame(&[AD, Q, Q], 0x0800, &[0; 20]), Err(DropReason::VlanTooManyTags)),
            (
                "cut in the tag",
                frame(&[Q], 0x0800, &[])[..15].to_vec(),
                Err(DropReason::VlanTruncated),
            ),
            (
                "cut before the EtherType",
                frame(&[Q], 0x0800, &[])[..16].to_vec(),
                Err(DropReason::VlanTruncated),
            ),
            (
                "cut in the inner tag",
                frame(&[AD, Q], 0x0800, &[])[..19].to_vec(),
                Err(DropReason::VlanTruncated),
            ),
            (
                "no EtherType after the inner tag",
                frame(&[AD, Q], 0x0800, &[])[..20].to_vec(),
                Err(DropReason::VlanTruncated),
            ),
        ];
        for (what, frame, expected) in cases {
            let parsed = Tags::parse(&frame);
            assert_eq!(parsed.map(|tags| tags.len()), expected, "{what}");
            if let Ok(tags) = parsed {
                assert_eq!(tags.bytes(), &frame[12..12 + tags.len()], "{what}");
            }
        }
    }

    #[test]
    fn untag_then_retag_gives_the_frame_back_with_its_new_macs() {
        let tagged = frame(&[[0x88, 0xa8, 0, 5], [0x81, 0, 0, 6]], 0x0800, &[9; 20]);
        let untagged = frame(&[], 0x0800, &[9; 20]);
        let tags = Tags::parse(&tagged).expect("two tags");
        let mut work = tagged.clone();
        untag(&mut work, &tags);
        assert_eq!(&work[tags.len()..], &untagged[..]);
        retag(&mut work, &tags);
        assert_eq!(work, tagged);
        // MACs rewritten in the view come back at the front.
        untag(&mut work, &tags);
        work[tags.len()..tags.len() + 12].copy_from_slice(&[0xee; 12]);
        retag(&mut work, &tags);
        assert_eq!(&work[..12], &[0xee; 12]);
        assert_eq!(&work[12..], &tagged[12..]);
        // Inserting the tags into the untagged frame gives the tagged one.
        let mut slot = untagged.clone();
        slot.resize(untagged.len() + MAX_TAGS_LEN, 0);
        assert_eq!(insert(&mut slot, untagged.len(), &tags), tagged.len());
        assert_eq!(slot, tagged);
    }

    /// `frame` with `tags` inserted after its MACs.
    fn with_tags(frame: &[u8], tags: &Tags) -> Vec<u8> {
        let mut out = frame.to_vec();
        out.resize(frame.len() + tags.len(), 0);
        let len = insert(&mut out, frame.len(), tags);
        out.truncate(len);
        out
    }

    proptest::proptest! {
        // Each case builds two pipelines: 64 cases keep the test under ten seconds.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A tagged frame gets the verdict its untagged self gets, and leaves with the same
        /// bytes, its tags re-inserted; what the pipeline emits meanwhile (the ARP request
        /// of a held frame, an ARP answer) is the same, tagged alike; the counters agree.
        /// Frames held for an unknown next hop are released tagged, even when its MAC comes
        /// from outside any frame. Over DR and NAT, to the VIP and NAT replies, TCP, UDP, ARP
        /// and ICMP echo, a next hop known or not, one or two tags, and frames damaged anywhere past the
        /// EtherType (or in the MACs), cut or padded.
        #[test]
        fn a_tagged_frame_is_processed_as_its_untagged_self(
            nat in proptest::prelude::any::<bool>(),
            kind in 0u8..5,
            learn_backend in proptest::prelude::any::<bool>(),
            outer_tpid in proptest::prop_oneof![proptest::strategy::Just(0x8100u16), proptest::strategy::Just(0x88a8u16)],
            tcis in (proptest::prelude::any::<u16>(), proptest::option::of(proptest::prelude::any::<u16>())),
            damage in proptest::collection::vec((0usize..60, proptest::prelude::any::<u8>()), 0..3),
            cut in 0usize..24,
            pad in 0usize..4,
        ) {
            use std::sync::Arc;
            use crate::dataplane::pipeline::testutil::*;
            use crate::dataplane::pipeline::{CoreSlot, Pipeline};
            use crate::report::Stat;
            use crate::snapshot::IfaceId;
            use crate::testkit::{self, ACK, SYN};
            use crate::time::Instant;
            let snapshot = if nat {
                one_service_snapshot(&LB.mac.to_string(), "", "nat", 8080)
            } else {
                one_service_snapshot(&LB.mac.to_string(), "", "dr", 80)
            };
            let mut tag_bytes = vec![];
            tag_bytes.extend_from_slice(&outer_tpid.to_be_bytes());
            tag_bytes.extend_from_slice(&tcis.0.to_be_bytes());
            if let Some(inner) = tcis.1 {
                tag_bytes.extend_from_slice(&[0x81, 0x00]);
                tag_bytes.extend_from_slice(&inner.to_be_bytes());
            }
            let mut probe = vec![0; 12];
            probe.extend_from_slice(&tag_bytes);
            probe.extend_from_slice(&[0x08, 0x00]);
            let tags = Tags::parse(&probe).expect("one or two tags");
            let now = Instant::from_secs(1);
            let mut plain = Pipeline::new(Arc::clone(&snapshot), CoreSlot::SINGLE);
            let mut tagged = Pipeline::new(snapshot, CoreSlot::SINGLE);
            let backend = (RS.ip, if nat { 8080 } else { 80 });
            let mut frame = match kind {
                0 => testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, b""),
                1 => testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, b"query"),
                2 => testkit::tcp(RS.mac, LB.mac, backend, (CLIENT.ip, 4000), ACK, b"reply"),
                3 => testkit::arp(true, CLIENT.mac, CLIENT.ip, crate::wire::MacAddr::ZERO, VIP.0),
                _ => testkit::icmp_echo(CLIENT.mac, LB.mac, CLIENT.ip, VIP.0, 64, false, b"ping"),
            };
            for (at, byte) in &damage {
                // Not the EtherType: a TPID there would make the untagged frame tagged.
                if !(12..14).contains(at) && let Some(slot) = frame.get_mut(*at) {
                    *slot = *byte;
                }
            }
            let len = frame.len().saturating_sub(cut).max(ETH_LEN);
            frame.truncate(len);
            frame.resize(frame.len() + pad, 0);
            // An open flow first (its SYN or datagram, untagged and tagged), so that a reply
            // and data have one.
            let opener = if kind == 1 {
                testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, b"open")
            } else {
                testkit::tcp(CLIENT.mac, LB.mac, (CLIENT.ip, 4000), VIP, SYN, b"")
            };
            for (pipeline, frame) in [(&mut plain, opener.clone()), (&mut tagged, with_tags(&opener, &tags))] {
                pipeline.learn_neighbor(now, CLIENT.ip, CLIENT.mac);
                if learn_backend {
                    pipeline.learn_neighbor(now, RS.ip, RS.mac);
                }
                let mut frame = frame;
                pipeline.process(now, IfaceId(0), &mut frame);
            }
            let mut untagged_out = frame.clone();
            let mut tagged_out = with_tags(&frame, &tags);
            let verdict = plain.process(now, IfaceId(0), &mut untagged_out);
            let tagged_verdict = tagged.process(now, IfaceId(0), &mut tagged_out);
            proptest::prop_assert_eq!(tagged_verdict, verdict);
            proptest::prop_assert_eq!(&tagged_out, &with_tags(&untagged_out, &tags));
            let mut emitted = Vec::new();
            plain.drain_emitted(|egress, frame| emitted.push((egress, with_tags(frame, &tags))));
            let mut tagged_emitted = Vec::new();
            tagged.drain_emitted(|egress, frame| tagged_emitted.push((egress, frame.to_vec())));
            proptest::prop_assert_eq!(tagged_emitted, emitted);
            // The backend's MAC relayed from outside (no frame being processed): what was
            // held for it leaves as it was held, tagged.
            if !learn_backend {
                let mut released = Vec::new();
                plain.learn_neighbor(now, RS.ip, RS.mac);
                plain.drain_emitted(|egress, frame| released.push((egress, with_tags(frame, &tags))));
                let mut tagged_released = Vec::new();
                tagged.learn_neighbor(now, RS.ip, RS.mac);
                tagged.drain_emitted(|egress, frame| tagged_released.push((egress, frame.to_vec())));
                proptest::prop_assert_eq!(tagged_released, released);
            }
            for stat in Stat::ALL {
                // Bytes received count the tags.
                if *stat != Stat::RxBytes {
                    proptest::prop_assert_eq!(tagged.counters().get(*stat), plain.counters().get(*stat), "{}", stat);
                }
            }
            for reason in DropReason::ALL {
                proptest::prop_assert_eq!(tagged.counters().drops(*reason), plain.counters().drops(*reason));
            }
        }
    }
}
