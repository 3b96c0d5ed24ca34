//! Bad input never panics the pipeline, and every frame gets exactly one counted verdict.
//!
//! Property tests feed arbitrary bytes and mutated good frames (bytes flipped, cut at any
//! offset) of every kind — DR, NAT and FullNAT flows in both directions, ARP, ICMP — through a
//! pipeline whose config has every forward mode.

use std::net::Ipv4Addr;
use std::sync::Arc;

use proptest::prelude::*;

use xlb::control::{Config, Snapshot};
use xlb::dataplane::{CoreSlot, IfaceId, Pipeline, Stat, Verdict};
use xlb::testkit::{self, ACK, Host, SYN, SYN_ACK};
use xlb::time::Instant;
use xlb::wire::MacAddr;

const LB: Host = Host::new([0x02, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
const CLIENT: Host = Host::new([0x02, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
const RS1: Host = Host::new([0x02, 0, 0, 0, 0, 0x11], [10, 1, 1, 11]);

const CONFIG: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
mac = "02:00:00:00:00:10"
gateway = "10.1.1.1"

[conntrack]
capacity = 4096

[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:00:00:00:11"

[[service]]
vip = "10.1.1.100"
port = 80
forward = "dr"
[[service.backend]]
addr = "10.1.1.11"
[[service.backend]]
addr = "10.1.1.13"

[[service]]
vip = "10.1.1.101"
port = 80
forward = "nat"
scheduler = "wlc"
[[service.backend]]
addr = "10.1.1.11"
port = 8080

[[service]]
vip = "10.1.1.102"
port = 53
proto = "udp"
forward = "fullnat"
scheduler = "rr"
local_addrs = ["10.1.1.200", "10.1.1.201"]
[[service.backend]]
addr = "10.1.1.11"
port = 5353
"#;

fn pipeline() -> Pipeline {
    let config = Config::parse(CONFIG, "robustness.toml").unwrap();
    Pipeline::new(Arc::new(Snapshot::build(&config, 1).unwrap()), CoreSlot::SINGLE)
}

/// Good frames of every kind the pipeline handles.
fn seeds() -> Vec<Vec<u8>> {
    let client = (CLIENT.ip, 40000);
    let dr = (Ipv4Addr::new(10, 1, 1, 100), 80);
    let nat = (Ipv4Addr::new(10, 1, 1, 101), 80);
    let fullnat = (Ipv4Addr::new(10, 1, 1, 102), 53);
    let dr_ack = testkit::tcp(RS1.mac, LB.mac, dr, client, ACK, &[0; 40]);
    vec![
        testkit::tcp(CLIENT.mac, LB.mac, client, dr, SYN, &[]),
        testkit::tcp(CLIENT.mac, LB.mac, client, nat, SYN, b"hello"),
        testkit::tcp(RS1.mac, LB.mac, (RS1.ip, 8080), client, SYN_ACK, &[]),
        testkit::udp(CLIENT.mac, LB.mac, client, fullnat, b"query"),
        testkit::udp(
            RS1.mac,
            LB.mac,
            (RS1.ip, 5353),
            (Ipv4Addr::new(10, 1, 1, 200), 1024),
            b"answer",
        ),
        testkit::arp(true, CLIENT.mac, CLIENT.ip, MacAddr::ZERO, dr.0),
        testkit::arp(
            false,
            MacAddr([2, 0, 0, 0, 0, 0x13]),
            Ipv4Addr::new(10, 1, 1, 13),
            LB.mac,
            LB.ip,
        ),
        testkit::icmp_echo(CLIENT.mac, LB.mac, CLIENT.ip, dr.0, 64, false, b"ping"),
        testkit::icmp_frag_needed(CLIENT.mac, LB.mac, CLIENT.ip, dr.0, 1400, &dr_ack, 8),
        testkit::icmp_frag_needed(RS1.mac, LB.mac, RS1.ip, CLIENT.ip, 1400, &dr_ack, 28),
    ]
}

fn check_counted(pipeline: &Pipeline) -> Result<(), TestCaseError> {
    let c = pipeline.counters();
    let verdicts = c.get(Stat::TxPackets)
        + c.get(Stat::PassPackets)
        + c.get(Stat::DropPackets)
        + c.get(Stat::HeldPackets);
    prop_assert_eq!(c.get(Stat::RxPackets), verdicts);
    Ok(())
}

/// A mutation of a good frame: flip some bytes, then maybe cut it short.
#[derive(Debug, Clone)]
struct Mutation {
    seed: usize,
    flips: Vec<(usize, u8)>,
    cut: Option<usize>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        0..10usize,
        prop::collection::vec((0..120usize, any::<u8>()), 0..6),
        prop::option::of(0..120usize),
    )
        .prop_map(|(seed, flips, cut)| Mutation { seed, flips, cut })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..20)) {
        let mut pipeline = pipeline();
        for (i, mut frame) in frames.into_iter().enumerate() {
            let original_len = frame.len();
            let verdict = pipeline.process(Instant::from_millis(i as u64), IfaceId(0), &mut frame);
            prop_assert_eq!(frame.len(), original_len);
            if let Verdict::Tx(iface) = verdict {
                prop_assert_eq!(iface, IfaceId(0));
            }
            pipeline.drain_emitted(|_, _| {});
            pipeline.maintain(Instant::from_millis(i as u64));
        }
        check_counted(&pipeline)?;
    }

    #[test]
    fn mutated_good_frames_never_panic(mutations in prop::collection::vec(mutation(), 1..30)) {
        let seeds = seeds();
        let mut pipeline = pipeline();
        // Open some flows first so that mutations hit tracked paths too.
        for (i, seed) in seeds.iter().enumerate() {
            let mut frame = seed.clone();
            pipeline.process(Instant::from_millis(i as u64), IfaceId(0), &mut frame);
        }
        for (i, m) in mutations.into_iter().enumerate() {
            let mut frame = seeds[m.seed].clone();
            for (at, value) in m.flips {
                if let Some(byte) = frame.get_mut(at) {
                    *byte ^= value;
                }
            }
            if let Some(cut) = m.cut {
                frame.truncate(cut);
            }
            let now = Instant::from_millis(100 + i as u64);
            pipeline.process(now, IfaceId(0), &mut frame);
            pipeline.drain_emitted(|_, _| {});
            pipeline.maintain(now);
        }
        check_counted(&pipeline)?;
    }

    /// A good frame passes through the pipeline twice (as another core's copy would): the
    /// outcome is the same both times and the checksums of what it sends stay valid.
    #[test]
    fn transmitted_frames_keep_valid_ip_checksums(seed in 0..10usize) {
        let mut pipeline = pipeline();
        let mut frame = seeds()[seed].clone();
        if let Verdict::Tx(_) = pipeline.process(Instant::from_secs(1), IfaceId(0), &mut frame) {
            let packet = etherparse::SlicedPacket::from_ethernet(&frame);
            prop_assert!(packet.is_ok(), "transmitted frame parses: {:?}", packet.err());
            if let Ok(etherparse::SlicedPacket { net: Some(etherparse::NetSlice::Ipv4(ip)), .. }) = packet {
                let header = ip.header().to_header();
                prop_assert_eq!(header.header_checksum, header.calc_header_checksum());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// `process_batch` is `process` on each frame in order: same verdicts, same bytes out,
    /// same frames sent on its own, same counters.
    #[test]
    fn a_batch_is_the_frames_one_by_one(mutations in prop::collection::vec(mutation(), 1..150)) {
        let seeds = seeds();
        let frames: Vec<Vec<u8>> = mutations
            .into_iter()
            .map(|m| {
                let mut frame = seeds[m.seed].clone();
                for (at, value) in m.flips {
                    if let Some(byte) = frame.get_mut(at) {
                        *byte ^= value;
                    }
                }
                if let Some(cut) = m.cut {
                    frame.truncate(cut);
                }
                frame
            })
            .collect();
        let now = Instant::from_secs(5);
        let mut one_by_one = pipeline();
        let mut singles = frames.clone();
        let single_verdicts: Vec<Verdict> =
            singles.iter_mut().map(|f| one_by_one.process(now, IfaceId(0), f)).collect();
        let mut single_emitted = Vec::new();
        one_by_one.drain_emitted(|_, f| single_emitted.push(f.to_vec()));

        let mut batched = pipeline();
        let mut batch = frames.clone();
        let mut refs: Vec<&mut [u8]> = batch.iter_mut().map(|f| f.as_mut_slice()).collect();
        let mut verdicts = vec![Verdict::Pass; refs.len()];
        batched.process_batch(now, IfaceId(0), &mut refs, &mut verdicts);
        let mut batch_emitted = Vec::new();
        batched.drain_emitted(|_, f| batch_emitted.push(f.to_vec()));

        prop_assert_eq!(verdicts, single_verdicts);
        prop_assert_eq!(batch, singles);
        prop_assert_eq!(batch_emitted, single_emitted);
        for stat in Stat::ALL {
            prop_assert_eq!(batched.counters().get(*stat), one_by_one.counters().get(*stat), "{}", stat);
        }
    }
}
