//! Tests of the table as a whole: directions, timeouts, TCP states through the table, removal,
//! sweeping, local port allocation, the eviction and flood policies, a model-based property
//! test, a reader/owner stress test, and the speed report.
//!
//! Every test but the reports is written once, generic over the family, and run for IPv4 and
//! IPv6 (`family_tests!` at the end: `conntrack::tests::v4::*`, `conntrack::tests::v6::*`).
//! The hosts of a test are numbered ([`Hosts::host`]); IPv6 spreads a host number over both
//! ends of the address, so hosts 0, 1 and 0x1_0000 differ only in their lowest bit or only in
//! their highest bits, and a packing that lost either half of an address would make their
//! keys (NAT replies to clients, FullNAT replies to local addresses) collide.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::tcp::{ACK, FIN, RST, SYN};
use super::*;
use crate::family::V6;
use crate::hash::mix64;

/// Which hosts an address numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Vip,
    Backend,
    Local,
}

/// Host number `n` of each kind, per family.
trait Hosts: Layout {
    fn host(kind: Kind, n: u32) -> Self::Addr;
    /// The number of a client address ([`Hosts::host`]'s inverse).
    fn client_number(addr: Self::Addr) -> u32;
}

impl Hosts for V4 {
    /// 10.0.0.0 + n, 192.0.2.1 + n, 172.16.0.1 + n, 198.51.100.1 + n.
    fn host(kind: Kind, n: u32) -> Ipv4Addr {
        let base = match kind {
            Kind::Client => 0x0a00_0000,
            Kind::Vip => 0xc000_0201,
            Kind::Backend => 0xac10_0001,
            Kind::Local => 0xc633_6401,
        };
        Ipv4Addr::from_bits(base + n)
    }

    fn client_number(addr: Ipv4Addr) -> u32 {
        addr.to_bits() - 0x0a00_0000
    }
}

/// Where IPv6 hosts' numbers start: one /64 per kind.
fn v6_base(kind: Kind) -> u128 {
    let net: u128 = match kind {
        Kind::Client => 0xc,
        Kind::Vip => 0x1,
        Kind::Backend => 0xb,
        Kind::Local => 0x10,
    };
    0x2001_0db8_0000_0000_0000_0000_0000_0000 | net << 64 | 1 << 40
}

impl Hosts for V6 {
    /// The kind's /64, with the low 16 bits of `n` in the address's lowest bits and the rest
    /// of `n` in its highest 16.
    fn host(kind: Kind, n: u32) -> Ipv6Addr {
        let spread = u128::from(n & 0xffff) | u128::from(n >> 16) << 112;
        Ipv6Addr::from_bits(v6_base(kind) ^ spread)
    }

    fn client_number(addr: Ipv6Addr) -> u32 {
        let bits = addr.to_bits() ^ v6_base(Kind::Client);
        (bits & 0xffff) as u32 | ((bits >> 112) as u32) << 16
    }
}

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

/// A flow of client number `client`, scheduled to backend `client % 4`.
fn flow<F: Hosts>(forward: ForwardMode, proto: Proto, client: u32, client_port: u16) -> Flow<F> {
    let client_addr = F::host(Kind::Client, client);
    let fullnat = forward == ForwardMode::FullNat;
    Flow {
        proto,
        forward,
        client_addr,
        client_port,
        vip: F::host(Kind::Vip, 0),
        vport: 80,
        backend_addr: F::host(Kind::Backend, client % 4),
        backend_port: 8080,
        local_addr: if fullnat { F::host(Kind::Local, 0) } else { client_addr },
        local_port: if fullnat { 20_000 + client as u16 } else { client_port },
        service: 0,
        backend: (client % 4) as u16,
    }
}

fn tcp<F: Hosts>(forward: ForwardMode, client: u32) -> Flow<F> {
    flow(forward, Proto::Tcp, client, 40_000)
}

fn timeouts() -> Timeouts {
    Timeouts {
        tcp_syn: Duration::from_secs(3),
        tcp_established: Duration::from_secs(20),
        tcp_closing: Duration::from_secs(5),
        tcp_closed: Duration::from_secs(1),
        udp: Duration::from_secs(4),
    }
}

/// The secret of every table these tests build: placements (and so failures) replay.
const SECRET: TableSecret = TableSecret::fixed(0x7465_7374);

/// The config of `capacity` flows, keyed with [`SECRET`].
fn fixed_config(capacity: usize) -> ConntrackConfig {
    ConntrackConfig { secret: SECRET, ..ConntrackConfig::with_capacity(capacity) }
}

/// The hash of `key` in a table keyed with [`SECRET`].
fn key_hash<F: Hosts>(key: &FlowKey<F>) -> u64 {
    table_hash(&SECRET, key)
}

fn table<F: Hosts>(capacity: usize) -> Conntrack<F> {
    Conntrack::<F>::new(&ConntrackConfig { timeouts: timeouts(), ..fixed_config(capacity) })
}

fn insert<F: Hosts>(
    ct: &mut Conntrack<F>,
    now: Instant,
    flow: Flow<F>,
    flags: Option<u8>,
) -> Result<FlowState, InsertError> {
    ct.insert(now, flow, flags, |evicted, _| panic!("unexpected eviction of {evicted:?}"))
}

/// Keys whose home slot lands in bucket 0 of `ct`: DR TCP flows of consecutive clients.
fn flows_in_bucket_zero<F: Hosts>(ct: &Conntrack<F>, count: usize) -> Vec<Flow<F>> {
    (0..)
        .map(|client| tcp(ForwardMode::Dr, client))
        .filter(|flow| ct.table.place(key_hash(&flow.original_key())).0 == 0)
        .take(count)
        .collect()
}

fn dr_tracks_only_the_original_direction<F: Hosts>() {
    let mut ct = table::<F>(16);
    let f = tcp(ForwardMode::Dr, 1);
    assert_eq!(insert(&mut ct, secs(1), f, Some(SYN)), Ok(FlowState::SynSeen));
    assert_eq!(f.reply_key(), None);
    let hit = ct.track(secs(2), &f.original_key(), Some(SYN)).expect("hit");
    assert_eq!(
        hit,
        Hit {
            direction: Direction::Original,
            flow: f,
            state: FlowState::SynSeen,
            previous: FlowState::SynSeen
        }
    );
    // What a NAT reply would look like is not tracked for DR.
    let would_be_reply = FlowKey {
        src_addr: f.backend_addr,
        dst_addr: f.client_addr,
        src_port: 8080,
        dst_port: 40_000,
        proto: Proto::Tcp,
    };
    assert_eq!(ct.track(secs(2), &would_be_reply, Some(ACK)), None);
    assert_eq!(ct.track(secs(2), &f.original_key().reversed(), Some(ACK)), None);
    assert_eq!((ct.len(), ct.embryonic(), ct.stats().inserted), (1, 1, 1));
}

fn nat_and_fullnat_track_both_directions<F: Hosts>() {
    for forward in [ForwardMode::Nat, ForwardMode::FullNat] {
        let mut ct = table::<F>(16);
        let f = tcp(forward, 7);
        let reply = f.reply_key().expect("reply key");
        assert_eq!(reply.src_addr, f.backend_addr);
        assert_eq!(reply.src_port, 8080);
        match forward {
            ForwardMode::FullNat => {
                assert_eq!((reply.dst_addr, reply.dst_port), (F::host(Kind::Local, 0), 20_007))
            }
            _ => assert_eq!((reply.dst_addr, reply.dst_port), (f.client_addr, 40_000)),
        }
        insert(&mut ct, secs(1), f, Some(SYN)).unwrap();
        let hit = ct.track(secs(1), &reply, Some(SYN | ACK)).expect("reply hit");
        assert_eq!((hit.direction, hit.flow, hit.state), (Direction::Reply, f, FlowState::SynSeen));
        let hit = ct.track(secs(1), &f.original_key(), Some(ACK)).expect("original hit");
        assert_eq!(
            (hit.direction, hit.state, hit.previous),
            (Direction::Original, FlowState::Established, FlowState::SynSeen)
        );
        // The state is shared: the reply direction now sees Established.
        assert_eq!(ct.track(secs(1), &reply, Some(ACK)).unwrap().previous, FlowState::Established);
        assert_eq!(ct.len(), 1, "a flow counts once even with two slots");
        assert!(ct.contains(secs(1), &reply) && ct.contains(secs(1), &f.original_key()));
    }
    // FullNAT replies go to the local address, not the client.
    let mut ct = table::<F>(16);
    let f = tcp(ForwardMode::FullNat, 3);
    insert(&mut ct, secs(1), f, Some(ACK)).unwrap();
    let to_client = FlowKey {
        src_addr: f.backend_addr,
        dst_addr: f.client_addr,
        src_port: 8080,
        dst_port: 40_000,
        proto: Proto::Tcp,
    };
    assert!(!ct.contains(secs(1), &to_client));
}

fn a_live_key_cannot_be_inserted_twice<F: Hosts>() {
    let mut ct = table::<F>(16);
    let f = tcp(ForwardMode::Nat, 1);
    insert(&mut ct, secs(1), f, Some(SYN)).unwrap();
    assert_eq!(insert(&mut ct, secs(1), f, Some(SYN)), Err(InsertError::Exists));
    // Another flow whose reply key is taken: same backend, same client address and port,
    // another vport.
    let clash = Flow { vport: 443, ..f };
    assert_ne!(clash.original_key(), f.original_key());
    assert_eq!(clash.reply_key(), f.reply_key());
    assert_eq!(insert(&mut ct, secs(1), clash, Some(SYN)), Err(InsertError::Exists));
    assert_eq!((ct.len(), ct.embryonic()), (1, 1));
    // Once the first flow has expired, the key is free again and the old flow is reported.
    let mut removed = Vec::new();
    assert_eq!(
        ct.insert(secs(10), clash, Some(SYN), |f, _| removed.push(*f)),
        Ok(FlowState::SynSeen)
    );
    assert_eq!(removed, vec![f]);
    assert_eq!((ct.len(), ct.embryonic(), ct.stats().expired), (1, 1, 1));
}

fn each_state_expires_after_its_own_timeout<F: Hosts>() {
    // (first packet's flags, proto, state, timeout)
    let t = timeouts();
    let cases = [
        (Some(SYN), Proto::Tcp, FlowState::SynSeen, t.tcp_syn),
        (Some(ACK), Proto::Tcp, FlowState::Established, t.tcp_established),
        (Some(FIN | ACK), Proto::Tcp, FlowState::Closing, t.tcp_closing),
        (Some(RST), Proto::Tcp, FlowState::Closed, t.tcp_closed),
        (None, Proto::Udp, FlowState::Udp, t.udp),
    ];
    for (flags, proto, state, timeout) in cases {
        let mut ct = table::<F>(16);
        let f = flow(ForwardMode::Nat, proto, 1, 5000);
        let start = secs(100);
        assert_eq!(insert(&mut ct, start, f, flags), Ok(state));
        let deadline = start.saturating_add(timeout);
        let just_after = Instant::from_nanos(deadline.as_nanos() + 1);
        assert!(ct.contains(deadline, &f.original_key()), "{state:?} alive at its timeout");
        assert!(ct.contains(deadline, &f.reply_key().unwrap()));
        assert!(!ct.contains(just_after, &f.original_key()), "{state:?} expired after it");
        assert!(!ct.contains(just_after, &f.reply_key().unwrap()));
        assert_eq!(ct.track(just_after, &f.original_key(), flags), None);
        assert_eq!(ct.track(just_after, &f.reply_key().unwrap(), flags), None);
        // A miss leaves the entry for sweep/insert, which report it.
        assert_eq!(ct.len(), 1);
    }
}

fn tracking_refreshes_last_seen_from_either_direction<F: Hosts>() {
    let mut ct = table::<F>(16);
    let f = tcp(ForwardMode::Nat, 1);
    insert(&mut ct, secs(0), f, Some(ACK)).unwrap();
    let reply = f.reply_key().unwrap();
    // Only reply packets for a while: the flow stays alive past its original timeout.
    for t in (15..=60).step_by(15) {
        assert!(ct.track(secs(t), &reply, Some(ACK)).is_some(), "alive at {t} s");
    }
    assert!(ct.contains(secs(80), &f.original_key()));
    assert!(!ct.contains(secs(81), &f.original_key()));
}

fn tcp_states_through_the_table<F: Hosts>() {
    use FlowState::*;
    let f = tcp(ForwardMode::Nat, 1);
    let (original, reply) = (f.original_key(), f.reply_key().unwrap());
    let mut ct = table::<F>(16);
    assert_eq!(insert(&mut ct, secs(1), f, Some(SYN)), Ok(SynSeen));
    let mut step = |key: &FlowKey<F>, flags: u8| {
        let hit = ct.track(secs(1), key, Some(flags)).expect("hit");
        (hit.previous, hit.state)
    };
    assert_eq!(step(&reply, SYN | ACK), (SynSeen, SynSeen));
    assert_eq!(step(&original, ACK), (SynSeen, Established));
    assert_eq!(step(&reply, ACK | FIN), (Established, Closing));
    assert_eq!(step(&original, ACK), (Closing, Closing));
    assert_eq!(step(&original, RST), (Closing, Closed));
    // Port reuse: the client's new SYN reopens the same flow, same backend.
    assert_eq!(step(&original, SYN), (Closed, SynSeen));
    assert_eq!(ct.embryonic(), 1);
    assert_eq!(ct.track(secs(1), &original, Some(ACK)).unwrap().flow, f);
    assert_eq!(ct.embryonic(), 0);

    // Mid-stream pickup (e.g. after an LB restart): the first packet is not a SYN.
    let mut ct = table::<F>(16);
    for (client, flags) in [(1, Some(ACK)), (2, Some(ACK | 0x08)), (3, None), (4, Some(SYN | ACK))]
    {
        assert_eq!(insert(&mut ct, secs(1), tcp(ForwardMode::Dr, client), flags), Ok(Established));
    }
    assert_eq!(ct.embryonic(), 0);
}

fn remove_removes_both_directions<F: Hosts>() {
    let mut ct = table::<F>(16);
    let f = tcp(ForwardMode::FullNat, 9);
    let other = tcp(ForwardMode::FullNat, 10);
    insert(&mut ct, secs(1), f, Some(SYN)).unwrap();
    insert(&mut ct, secs(1), other, Some(SYN)).unwrap();
    assert_eq!(ct.remove(&f.reply_key().unwrap()), Some((f, FlowState::SynSeen)));
    assert!(!ct.contains(secs(1), &f.original_key()));
    assert!(!ct.contains(secs(1), &f.reply_key().unwrap()));
    assert_eq!(ct.track(secs(1), &f.reply_key().unwrap(), Some(ACK)), None);
    assert_eq!(ct.remove(&f.original_key()), None);
    assert!(ct.contains(secs(1), &other.reply_key().unwrap()), "the other flow is untouched");
    assert_eq!((ct.len(), ct.embryonic(), ct.stats().removed), (1, 1, 1));
    // Both slots are free again: the same flow goes back in.
    assert_eq!(insert(&mut ct, secs(1), f, Some(ACK)), Ok(FlowState::Established));
    assert_eq!(ct.remove(&f.original_key()), Some((f, FlowState::Established)));
    assert_eq!(ct.remove(&other.original_key()), Some((other, FlowState::SynSeen)));
    assert!(ct.is_empty());
    assert_eq!(ct.embryonic(), 0);
}

fn sweep_removes_expired_flows_and_reports_them<F: Hosts>() {
    let mut ct = table::<F>(64);
    let mut expected = Vec::new();
    for client in 0..30 {
        let f = tcp(
            [ForwardMode::Dr, ForwardMode::Nat, ForwardMode::FullNat][client as usize % 3],
            client,
        );
        // Every third flow is established (20 s); the rest are embryonic (3 s).
        let flags = if client % 3 == 0 { ACK } else { SYN };
        insert(&mut ct, secs(0), f, Some(flags)).unwrap();
        if flags == SYN {
            expected.push(f);
        }
    }
    assert_eq!(ct.embryonic(), 20);
    // Nothing has expired yet.
    let buckets = ct.table.bucket_count();
    assert_eq!(ct.sweep(secs(3), buckets, |f, _| panic!("{f:?} is not expired")), 0);
    // Sweep incrementally, one bucket at a time.
    let mut reported = Vec::new();
    let removed: usize = (0..buckets).map(|_| ct.sweep(secs(4), 1, |f, _| reported.push(*f))).sum();
    assert_eq!(removed, 20);
    let key = |f: &Flow<F>| (f.client_addr, f.forward.name());
    reported.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(reported, expected);
    assert_eq!((ct.len(), ct.embryonic(), ct.stats().expired), (10, 0, 20));
    for client in (0..30).step_by(3) {
        let f = tcp(ForwardMode::Dr, client);
        assert!(ct.track(secs(4), &f.original_key(), Some(ACK)).is_some());
    }
    // A budget larger than the table is one full pass.
    assert_eq!(ct.sweep(secs(100), usize::MAX, |_, _| {}), 10);
    assert!(ct.is_empty());
}

fn allocate_local_port_skips_live_reply_keys_and_runs_out<F: Hosts>() {
    let mut ct = table::<F>(64);
    let addrs = [F::host(Kind::Local, 0), F::host(Kind::Local, 1)];
    let range = PortRange { first: 5000, last: 5002 };
    let backend = F::host(Kind::Backend, 0);
    let mut taken = Vec::new();
    for client in 0..6 {
        let (local_addr, local_port) = ct
            .allocate_local_port(
                secs(1),
                Proto::Tcp,
                backend,
                8080,
                &addrs,
                range,
                u64::from(client) * 7,
                |_, _| {},
            )
            .expect("a free port");
        assert!((5000..=5002).contains(&local_port));
        assert!(
            !taken.contains(&(local_addr, local_port)),
            "{local_addr}:{local_port} given twice"
        );
        taken.push((local_addr, local_port));
        let f = Flow {
            local_addr,
            local_port,
            backend_addr: backend,
            ..tcp(ForwardMode::FullNat, client)
        };
        assert_eq!(insert(&mut ct, secs(1), f, Some(ACK)), Ok(FlowState::Established));
    }
    assert_eq!(
        ct.allocate_local_port(secs(1), Proto::Tcp, backend, 8080, &addrs, range, 0, |_, _| {}),
        None
    );
    // Another backend, port or protocol has its own space.
    assert!(
        ct.allocate_local_port(secs(1), Proto::Udp, backend, 8080, &addrs, range, 0, |_, _| {})
            .is_some()
    );
    assert!(
        ct.allocate_local_port(secs(1), Proto::Tcp, backend, 8081, &addrs, range, 0, |_, _| {})
            .is_some()
    );
    // Expired flows free their ports.
    assert!(
        ct.allocate_local_port(secs(30), Proto::Tcp, backend, 8080, &addrs, range, 0, |_, _| {})
            .is_some()
    );
    // Degenerate inputs.
    assert_eq!(
        ct.allocate_local_port(secs(1), Proto::Tcp, backend, 8080, &[], range, 0, |_, _| {}),
        None
    );
    let backwards = PortRange { first: 10, last: 9 };
    assert_eq!(
        ct.allocate_local_port(secs(1), Proto::Tcp, backend, 8080, &addrs, backwards, 0, |_, _| {}),
        None
    );
    let everything = PortRange { first: 0, last: u16::MAX };
    assert!(
        ct.allocate_local_port(
            secs(1),
            Proto::Tcp,
            backend,
            8080,
            &addrs,
            everything,
            u64::MAX,
            |_, _| {}
        )
        .is_some()
    );
}

/// Issue 10 item 6: a flood must not hold the FullNAT port pool. When every candidate port
/// is held, the least recently seen embryonic or unreplied UDP holder gives its port back;
/// established flows and replied UDP flows keep theirs.
fn allocate_local_port_takes_back_the_ports_of_evictable_flows<F: Hosts>() {
    let mut ct = table::<F>(64);
    let range = PortRange { first: 5000, last: 5003 };
    let backend = F::host(Kind::Backend, 0);
    let holder = |client: u32, port: u16, proto: Proto| Flow {
        local_addr: F::host(Kind::Local, 0),
        local_port: port,
        backend_addr: backend,
        ..flow(ForwardMode::FullNat, proto, client, 40_000)
    };
    // 5000 established, 5001 embryonic seen at 2 s, 5002 embryonic seen at 1 s, 5003 replied.
    insert(&mut ct, secs(1), holder(0, 5000, Proto::Tcp), Some(ACK)).unwrap();
    insert(&mut ct, secs(2), holder(1, 5001, Proto::Tcp), Some(SYN)).unwrap();
    insert(&mut ct, secs(1), holder(2, 5002, Proto::Tcp), Some(SYN)).unwrap();
    let udp = |port| Flow { proto: Proto::Udp, ..holder(3, port, Proto::Udp) };
    let mut taken = Vec::new();
    let mut allocate = |ct: &mut Conntrack<F>, proto| {
        ct.allocate_local_port(
            secs(2),
            proto,
            backend,
            8080,
            &[F::host(Kind::Local, 0)],
            range,
            0,
            |f, _| taken.push(f.local_port),
        )
    };
    assert_eq!(
        allocate(&mut ct, Proto::Tcp),
        Some((F::host(Kind::Local, 0), 5003)),
        "a free port first"
    );
    insert(&mut ct, secs(1), holder(3, 5003, Proto::Tcp), Some(ACK)).unwrap();
    assert_eq!(
        allocate(&mut ct, Proto::Tcp),
        Some((F::host(Kind::Local, 0), 5002)),
        "the oldest embryonic"
    );
    insert(&mut ct, secs(2), holder(4, 5002, Proto::Tcp), Some(ACK)).unwrap();
    assert_eq!(allocate(&mut ct, Proto::Tcp), Some((F::host(Kind::Local, 0), 5001)));
    insert(&mut ct, secs(2), holder(5, 5001, Proto::Tcp), Some(ACK)).unwrap();
    assert_eq!(allocate(&mut ct, Proto::Tcp), None, "only established holders left");
    assert_eq!(ct.stats().evicted_embryonic, 2);
    // UDP: an unreplied holder gives its port back, a replied one does not.
    for port in 5000..=5003 {
        insert(&mut ct, secs(1), Flow { client_port: port, ..udp(port) }, None).unwrap();
        let reply = Flow { client_port: port, ..udp(port) }.reply_key().unwrap();
        if port != 5002 {
            ct.track(secs(1), &reply, None).expect("the backend's reply");
        }
    }
    assert_eq!(allocate(&mut ct, Proto::Udp), Some((F::host(Kind::Local, 0), 5002)));
    assert_eq!(allocate(&mut ct, Proto::Udp), Some((F::host(Kind::Local, 0), 5002)), "now free");
    insert(&mut ct, secs(1), Flow { client_port: 1, ..udp(5002) }, None).unwrap();
    let reply = Flow { client_port: 1, ..udp(5002) }.reply_key().unwrap();
    ct.track(secs(1), &reply, None).unwrap();
    assert_eq!(allocate(&mut ct, Proto::Udp), None, "replied holders keep their ports");
    assert_eq!(taken, vec![5002, 5001, 5002]);
    assert_eq!(ct.stats().evicted_udp, 1);
}

fn allocate_local_port_gives_up_after_a_bounded_search<F: Hosts>() {
    let mut ct = table::<F>(1024);
    let backend = F::host(Kind::Backend, 0);
    let range = PortRange { first: 1000, last: 1999 };
    // Take ports 1000..1100 on the only address; a search starting at 1000 finds none within
    // its 64 candidates, one starting at 1090 finds 1100.
    for (i, port) in (1000..1100).enumerate() {
        let f = Flow {
            local_addr: F::host(Kind::Local, 0),
            local_port: port,
            backend_addr: backend,
            ..tcp(ForwardMode::FullNat, i as u32)
        };
        insert(&mut ct, secs(1), f, Some(ACK)).unwrap();
    }
    assert_eq!(
        ct.allocate_local_port(
            secs(1),
            Proto::Tcp,
            backend,
            8080,
            &[F::host(Kind::Local, 0)],
            range,
            0,
            |_, _| {}
        ),
        None
    );
    assert_eq!(
        ct.allocate_local_port(
            secs(1),
            Proto::Tcp,
            backend,
            8080,
            &[F::host(Kind::Local, 0)],
            range,
            90,
            |_, _| {}
        ),
        Some((F::host(Kind::Local, 0), 1100))
    );
}

fn full_bucket_reuses_expired_then_oldest_embryonic_then_refuses<F: Hosts>() {
    let mut ct = table::<F>(64);
    let flows = flows_in_bucket_zero(&ct, BUCKET_SLOTS + 3);
    let (bucket, extra) = flows.split_at(BUCKET_SLOTS);
    // Fill the bucket: one UDP-like short-lived flow (closed, 1 s), two embryonic flows seen
    // at 1 s and 2 s, the rest established.
    for (i, f) in bucket.iter().enumerate() {
        let (now, flags) = match i {
            0 => (secs(0), RST),
            1 => (secs(2), SYN),
            2 => (secs(1), SYN),
            _ => (secs(0), ACK),
        };
        insert(&mut ct, now, *f, Some(flags)).unwrap();
    }
    let mut evicted = Vec::new();
    // 1. The expired (closed) flow's slot goes first.
    assert_eq!(
        ct.insert(secs(3), extra[0], Some(ACK), |f, _| evicted.push(*f)),
        Ok(FlowState::Established)
    );
    assert_eq!(evicted, vec![bucket[0]]);
    // 2. Then the least recently seen embryonic flow (seen at 1 s), not the one seen at 2 s.
    assert_eq!(
        ct.insert(secs(3), extra[1], Some(ACK), |f, _| evicted.push(*f)),
        Ok(FlowState::Established)
    );
    assert_eq!(evicted, vec![bucket[0], bucket[2]]);
    assert!(ct.contains(secs(3), &bucket[1].original_key()));
    // 3. A new embryonic flow may displace the last embryonic one too.
    assert_eq!(
        ct.insert(secs(3), extra[2], Some(SYN), |f, _| evicted.push(*f)),
        Ok(FlowState::SynSeen)
    );
    assert_eq!(evicted, vec![bucket[0], bucket[2], bucket[1]]);
    // 4. Now only established flows (and the newest embryonic one)... make it established.
    ct.track(secs(3), &extra[2].original_key(), Some(ACK)).unwrap();
    let late = flows_in_bucket_zero(&ct, BUCKET_SLOTS + 4)[BUCKET_SLOTS + 3];
    assert_eq!(insert(&mut ct, secs(3), late, Some(SYN)), Err(InsertError::Full));
    assert_eq!(insert(&mut ct, secs(3), late, Some(ACK)), Err(InsertError::Full));
    let stats = ct.stats();
    assert_eq!((stats.expired, stats.evicted_embryonic, stats.refused_full), (1, 2, 2));
    for f in bucket.iter().skip(3).chain(extra) {
        assert!(ct.contains(secs(3), &f.original_key()), "{f:?} survived");
    }
}

fn embryonic_flows_beyond_the_limit_are_refused_as_a_flood<F: Hosts>() {
    let mut ct = Conntrack::<F>::new(&ConntrackConfig { max_embryonic: 10, ..fixed_config(100) });
    let results: Vec<_> =
        (0..50).map(|c| insert(&mut ct, secs(1), tcp(ForwardMode::Dr, c), Some(SYN))).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
    assert!(results[10..].iter().all(|r| *r == Err(InsertError::Flood)));
    assert_eq!((ct.embryonic(), ct.len(), ct.stats().refused_flood), (10, 10, 40));
    // Established flows (and UDP) are not limited by it.
    assert_eq!(
        insert(&mut ct, secs(1), tcp(ForwardMode::Dr, 100), Some(ACK)),
        Ok(FlowState::Established)
    );
    let udp = flow(ForwardMode::Nat, Proto::Udp, 101, 53);
    assert_eq!(insert(&mut ct, secs(1), udp, None), Ok(FlowState::Udp));
    // Completing a handshake makes room for one more.
    ct.track(secs(1), &tcp(ForwardMode::Dr, 0).original_key(), Some(ACK)).unwrap();
    assert_eq!(
        insert(&mut ct, secs(1), tcp(ForwardMode::Dr, 200), Some(SYN)),
        Ok(FlowState::SynSeen)
    );
    assert_eq!(
        insert(&mut ct, secs(1), tcp(ForwardMode::Dr, 201), Some(SYN)),
        Err(InsertError::Flood)
    );
}

/// Issue 10 item 6: NAT and FullNAT have no stateless answer, so at the SYN bound a new SYN
/// takes the place of the oldest embryonic flow instead of being refused.
fn nat_syns_beyond_the_limit_evict_the_oldest_embryonic_flow<F: Hosts>() {
    let mut ct = Conntrack::<F>::new(&ConntrackConfig { max_embryonic: 10, ..fixed_config(100) });
    for forward in [ForwardMode::Nat, ForwardMode::FullNat] {
        let base = if forward == ForwardMode::Nat { 0 } else { 1000 };
        let mut evicted = Vec::new();
        for c in 0..30 {
            let now = Instant::from_millis(1000 + u64::from(c));
            let result = ct.insert(now, tcp(forward, base + c), Some(SYN), |f, _| evicted.push(*f));
            assert_eq!(result, Ok(FlowState::SynSeen));
            assert!(ct.embryonic() <= 10);
        }
        // Each SYN past the tenth evicted the oldest one still there (in the second round,
        // the first round's ten went first).
        let oldest_first: Vec<Flow<F>> = (0..20).map(|c| tcp(forward, base + c)).collect();
        let from_before = if forward == ForwardMode::Nat { 0 } else { 10 };
        assert_eq!(evicted[from_before..], oldest_first[..]);
        for c in 20..30 {
            assert!(ct.contains(secs(2), &tcp(forward, base + c).original_key()));
        }
    }
    assert_eq!((ct.stats().refused_flood, ct.stats().evicted_embryonic), (0, 50));
    // A completed handshake leaves the queue: the next eviction skips it.
    let completed = tcp(ForwardMode::FullNat, 1020);
    ct.track(secs(2), &completed.original_key(), Some(ACK)).unwrap();
    let mut evicted = Vec::new();
    for c in 0..10 {
        ct.insert(secs(2), tcp(ForwardMode::Nat, 500 + c), Some(SYN), |f, _| evicted.push(*f))
            .unwrap();
    }
    assert!(!evicted.contains(&completed), "an established flow was evicted");
    assert!(ct.contains(secs(2), &completed.original_key()));
    assert_eq!(evicted.len(), 9);
}

/// A flow that another core moved out of its eviction class (a handshake completed, a UDP
/// reply seen, through a reader) is never evicted as if it were still in it: the owner
/// re-files it when it reaches the head of its queue.
fn flows_moved_by_readers_are_not_evicted<F: Hosts>() {
    let mut ct = Conntrack::<F>::new(&ConntrackConfig {
        max_embryonic: 4,
        timeouts: timeouts(),
        ..fixed_config(8)
    });
    let reader = ct.reader();
    let udp = |c: u32| flow(ForwardMode::Nat, Proto::Udp, c, 53);
    for c in 0..4 {
        insert(&mut ct, secs(1), tcp(ForwardMode::Nat, c), Some(SYN)).unwrap();
        insert(&mut ct, secs(1), udp(10 + c), None).unwrap();
    }
    // Another core completes the two oldest handshakes and sees replies to two UDP flows.
    for c in 0..2 {
        reader.track(secs(1), &tcp(ForwardMode::Nat, c).original_key(), Some(ACK)).unwrap();
        reader.track(secs(1), &udp(10 + c).reply_key().unwrap(), None).unwrap();
    }
    assert_eq!(ct.embryonic(), 2);
    let mut evicted = Vec::new();
    for c in 100..104 {
        let flags = if c % 2 == 0 { Some(SYN) } else { None };
        let f = if c % 2 == 0 { tcp(ForwardMode::Nat, c) } else { udp(c) };
        ct.insert(secs(2), f, flags, |f, _| evicted.push(*f)).unwrap();
    }
    for c in 0..2 {
        assert!(!evicted.contains(&tcp(ForwardMode::Nat, c)), "established {c} evicted");
        assert!(!evicted.contains(&udp(10 + c)), "replied {c} evicted");
    }
    assert_eq!(evicted.len(), 4);
    assert_eq!(ct.len(), 8);
}

/// Issue 10 item 6: a table full of UDP flows no backend answered gives the oldest of them
/// up to any new flow; replied UDP flows are kept until UDP holds more than half the table.
fn unreplied_udp_flows_make_room_and_replied_ones_stay<F: Hosts>() {
    let capacity = 100;
    let mut ct = table::<F>(capacity);
    let udp = |c: u32| flow(ForwardMode::Nat, Proto::Udp, c, 53);
    for c in 0..capacity as u32 {
        let now = Instant::from_millis(1000 + u64::from(c));
        insert(&mut ct, now, udp(c), None).unwrap();
        if c < 30 {
            // The backend answers the first 30 (the reply marks them on this core).
            ct.track(now, &udp(c).reply_key().unwrap(), None).unwrap();
        }
    }
    assert_eq!(ct.len(), capacity);
    let mut evicted = Vec::new();
    // A TCP SYN takes the place of the oldest unreplied flow (client 30).
    assert_eq!(
        ct.insert(secs(2), tcp(ForwardMode::Nat, 1000), Some(SYN), |f, _| evicted.push(*f)),
        Ok(FlowState::SynSeen)
    );
    assert_eq!(evicted, vec![udp(30)]);
    // A UDP flood churns unreplied flows only (and the SYN, the oldest evictable by last-seen
    // after a while).
    for c in 2000..2200 {
        let now = Instant::from_millis(2000 + u64::from(c));
        ct.insert(now, udp(c), None, |f, _| evicted.push(*f)).unwrap();
    }
    for c in 0..30 {
        assert!(ct.contains(secs(3), &udp(c).original_key()), "replied flow {c} evicted");
        assert!(!evicted.contains(&udp(c)));
    }
    assert_eq!(ct.stats().evicted_udp + ct.stats().evicted_embryonic, 201);
    // Established TCP flows take the unreplied flows' room; once only replied UDP flows
    // (30 of 100) and established flows are left, a new flow is refused.
    let mut established = 0;
    for c in 3000..3100 {
        match ct.insert(secs(4), tcp(ForwardMode::Dr, c), Some(ACK), |f, _| evicted.push(*f)) {
            Ok(_) => established += 1,
            Err(error) => assert_eq!(error, InsertError::Full),
        }
    }
    assert_eq!(established, 70);
    for c in 0..30 {
        assert!(ct.contains(secs(4), &udp(c).original_key()), "replied flow {c} evicted");
    }
    // UDP over half the table: its oldest replied flow makes room for a newcomer.
    let mut ct = table::<F>(capacity);
    for c in 0..capacity as u32 {
        insert(&mut ct, secs(1), udp(c), None).unwrap();
        ct.track(secs(1), &udp(c).reply_key().unwrap(), None).unwrap();
    }
    let mut evicted = Vec::new();
    assert!(
        ct.insert(secs(2), tcp(ForwardMode::Nat, 1), Some(SYN), |f, _| evicted.push(*f)).is_ok()
    );
    assert_eq!(evicted, vec![udp(0)]);
}

fn a_syn_flood_never_evicts_established_flows<F: Hosts>() {
    let capacity = 1000;
    // 400 established: the flood meets the embryonic limit first. 700: it meets the capacity
    // first, and the embryonic flows evict each other.
    for population in [400, 700] {
        let mut ct = table::<F>(capacity);
        let established: Vec<Flow<F>> = (0..population)
            .map(|c| tcp([ForwardMode::Dr, ForwardMode::Nat][c as usize % 2], c))
            .filter(|f| insert(&mut ct, secs(0), *f, Some(ACK)).is_ok())
            .collect();
        assert!(
            established.len() + 5 > population as usize,
            "only {} flows went in",
            established.len()
        );
        let mut outcomes = HashMap::new();
        for i in 0..50_000u32 {
            // Spoofed sources: random addresses and ports, NAT and DR.
            let h = mix64(u64::from(i));
            let f = Flow {
                client_addr: F::host(Kind::Client, 0x0100_0000 | (h as u32 & 0x00ff_ffff)),
                ..flow(
                    [ForwardMode::Dr, ForwardMode::Nat][i as usize % 2],
                    Proto::Tcp,
                    0,
                    (h >> 32) as u16,
                )
            };
            let now = Instant::from_millis(1000 + u64::from(i) / 10);
            let result = ct.insert(now, f, Some(SYN), |gone, _| {
                assert!(!established.contains(gone), "the flood evicted established {gone:?}");
            });
            *outcomes.entry(result).or_insert(0) += 1;
            assert!(ct.len() <= capacity);
            assert!(ct.embryonic() <= capacity / 2);
        }
        let now = Instant::from_millis(6000);
        for f in &established {
            for key in std::iter::once(f.original_key()).chain(f.reply_key()) {
                assert!(ct.track(now, &key, Some(ACK)).is_some(), "{key} lost");
            }
        }
        let stats = ct.stats();
        let count = |outcome| outcomes.get(&outcome).copied().unwrap_or(0);
        assert_eq!(count(Err(InsertError::Flood)), stats.refused_flood);
        assert_eq!(count(Err(InsertError::Full)), stats.refused_full);
        // At the SYN bound, DR SYNs are refused (the caller forwards them statelessly) and
        // NAT SYNs evict the oldest embryonic flow; at capacity, every SYN does.
        assert!(stats.evicted_embryonic > 0 && stats.refused_full == 0, "{stats:?}");
        assert_eq!(stats.refused_flood > 0, population == 400, "{stats:?}");
    }
}

fn len_never_exceeds_capacity<F: Hosts>() {
    let capacity = 100;
    let mut ct = table::<F>(capacity);
    let mut evicted = 0;
    let mut full = 0;
    for c in 0..1000 {
        let flags = if c % 2 == 0 { SYN } else { ACK };
        let forward = [ForwardMode::Dr, ForwardMode::Nat, ForwardMode::FullNat][c as usize % 3];
        match ct.insert(secs(1), tcp(forward, c), Some(flags), |_, _| evicted += 1) {
            Ok(_) => {}
            Err(InsertError::Full) => full += 1,
            Err(InsertError::Flood) => assert_eq!(ct.embryonic(), capacity / 2),
            Err(InsertError::Exists) => panic!("every flow is new"),
        }
        assert!(ct.len() <= capacity);
    }
    assert_eq!(ct.len(), capacity);
    assert!(full > 0 && evicted > 0);
    // At capacity with only established flows, nothing gets in; after they expire, it does.
    assert_eq!(insert(&mut ct, secs(2), tcp(ForwardMode::Dr, 5000), Some(ACK)).ok(), None);
    let mut reported = 0;
    assert!(
        ct.insert(secs(100), tcp(ForwardMode::Dr, 5000), Some(ACK), |_, _| { reported += 1 })
            .is_ok()
    );
    assert_eq!((ct.len(), reported), (capacity, 1));
}

fn a_tiny_or_empty_table_never_panics<F: Hosts>() {
    let mut ct = table::<F>(0);
    assert_eq!(
        insert(&mut ct, secs(1), tcp(ForwardMode::Nat, 1), Some(SYN)),
        Err(InsertError::Flood)
    );
    assert_eq!(
        insert(&mut ct, secs(1), tcp(ForwardMode::Nat, 1), Some(ACK)),
        Err(InsertError::Full)
    );
    assert_eq!(ct.sweep(secs(1), 10, |_, _| {}), 0);
    assert!(ct.memory_bytes() > 0 && ct.is_empty() && ct.capacity() == 0);
    let mut one = table::<F>(1);
    assert!(insert(&mut one, secs(1), tcp(ForwardMode::FullNat, 1), Some(ACK)).is_ok());
    assert_eq!(
        insert(&mut one, secs(1), tcp(ForwardMode::FullNat, 2), Some(ACK)),
        Err(InsertError::Full)
    );
}

fn readers_see_and_update_the_owners_flows<F: Hosts>() {
    let mut ct = table::<F>(16);
    let reader = ct.reader();
    let f = tcp(ForwardMode::Nat, 1);
    let reply = f.reply_key().unwrap();
    assert_eq!(reader.track(secs(0), &reply, Some(ACK)), None);
    insert(&mut ct, secs(0), f, Some(SYN)).unwrap();
    let from_another_core = std::thread::scope(|s| {
        s.spawn(|| reader.clone().track(secs(2), &reply, Some(SYN | ACK))).join().unwrap()
    });
    assert_eq!(from_another_core.map(|hit| (hit.direction, hit.flow)), Some((Direction::Reply, f)));
    // The reader's refresh at 2 s keeps the embryonic flow (3 s) alive at 4 s.
    assert!(ct.contains(secs(4), &f.original_key()));
    // A reader's RST closes the flow for the owner too, and the embryonic count follows.
    assert_eq!(reader.track(secs(4), &reply, Some(RST)).unwrap().state, FlowState::Closed);
    assert_eq!(ct.embryonic(), 0);
    assert_eq!(
        ct.track(secs(4), &f.original_key(), Some(ACK)).unwrap().previous,
        FlowState::Closed
    );
    // After the owner removes it, the reader misses; an expired flow is a miss as well.
    ct.remove(&f.original_key());
    assert_eq!(reader.track(secs(4), &reply, Some(ACK)), None);
    insert(&mut ct, secs(4), f, Some(SYN)).unwrap();
    assert_eq!(reader.track(secs(8), &f.original_key(), Some(ACK)), None);
    assert!(format!("{reader:?}").contains("ConntrackReader"));
    assert!(format!("{ct:?}").contains("capacity"));
}

fn prefetching_is_harmless_for_any_hash_and_table<F: Hosts>() {
    let f = tcp(ForwardMode::Nat, 1);
    let unknown = tcp(ForwardMode::Nat, 2).original_key();
    let hashes = [0, 1, u64::MAX, key_hash(&f.original_key()), key_hash(&unknown)];
    for capacity in [0, 2, 16] {
        let mut ct = table::<F>(capacity);
        // Empty table.
        for hash in hashes {
            ct.prefetch_bucket(hash);
            ct.prefetch_record(&unknown, hash);
        }
        assert!(ct.is_empty());
        if capacity == 0 {
            continue;
        }
        insert(&mut ct, secs(0), f, Some(SYN)).unwrap();
        let before = (ct.len(), ct.embryonic(), ct.stats());
        for key in [f.original_key(), f.reply_key().unwrap(), unknown] {
            for hash in hashes {
                ct.prefetch_bucket(hash);
                ct.prefetch_record(&key, hash);
            }
        }
        // Nothing moved: the flow is still embryonic, its last-seen still 0 s (3 s timeout).
        assert_eq!((ct.len(), ct.embryonic(), ct.stats()), before);
        assert!(!ct.contains(secs(4), &f.original_key()));
    }
}

/// A bucket filled to every slot, then with slots freed at the front, the middle and the
/// end: the record pass (four slots tested directly, the rest by the occupancy) finds, for
/// every key of the bucket and for unknown ones, the slot a test of every slot finds; the
/// occupancy names exactly the used slots, and an insert takes the first free one.
fn the_record_pass_finds_what_a_full_scan_finds<F: Hosts>() {
    let mut ct = table::<F>(64);
    let flows = flows_in_bucket_zero(&ct, BUCKET_SLOTS + 1);
    let (bucket, late) = flows.split_at(BUCKET_SLOTS);
    for f in bucket {
        insert(&mut ct, secs(0), *f, Some(ACK)).unwrap();
    }
    let unknown = [late[0].original_key(), tcp(ForwardMode::Dr, 1 << 20).original_key()];
    let check = |ct: &Conntrack<F>| {
        assert!(ct.table.occupancy_is_exact());
        for key in bucket.iter().map(Flow::original_key).chain(unknown) {
            let hash = key_hash(&key);
            assert_eq!(ct.table.prefetch_record(hash), ct.table.first_with_fingerprint(hash));
        }
    };
    check(&ct);
    assert_eq!(ct.table.used_slots(0), 0xffff);
    assert_eq!(ct.table.free_position(0, None), None);
    for (i, f) in bucket.iter().enumerate().filter(|(i, _)| [0, 5, 9, 15].contains(i)) {
        ct.remove(&f.original_key()).unwrap();
        assert_eq!(ct.table.used_slots(0) & 1 << i, 0, "slot {i} freed");
        check(&ct);
    }
    assert_eq!(ct.table.used_slots(0), 0xffff & !(1 | 1 << 5 | 1 << 9 | 1 << 15));
    assert_eq!(ct.table.free_position(0, None), Some(0));
    assert_eq!(ct.table.free_position(0, Some(0)), Some(5));
    assert_eq!(ct.table.free_position(0, Some(BUCKET_SLOTS)), Some(0), "another bucket's");
    insert(&mut ct, secs(0), late[0], Some(ACK)).unwrap();
    assert_eq!(ct.table.used_slots(0) & 1, 1, "the first free slot taken");
    check(&ct);
}

/// What [`Conntrack::track_settled`] answers next to what [`Conntrack::track_prepared`]
/// answers on a table with the same history: `Settled` exactly for the hits that move
/// nothing and are not in the handshake (state = previous, not `SynSeen`: the pipeline
/// forwards those without looking at the state), `Moved` with the same hit for the other
/// hits, `Miss` for the misses.
fn track_settled_is_track_prepared_split<F: Hosts>(
    udp: bool,
    packets: Vec<(bool, u8, u8)>,
) -> Result<(), TestCaseError> {
    let (mut prepared_table, mut settled_table) = (table::<F>(64), table::<F>(64));
    let proto = if udp { Proto::Udp } else { Proto::Tcp };
    let nat = flow::<F>(ForwardMode::Nat, proto, 7, 40_000);
    let opening = (!udp).then_some(SYN);
    let mut now = 0;
    for ct in [&mut prepared_table, &mut settled_table] {
        let inserted = ct.insert(secs(now), nat, opening, |_, _| {});
        prop_assert!(inserted.is_ok());
    }
    for (reply, flags, wait) in packets {
        now += u64::from(wait % 4);
        let key = if reply { nat.reply_key().unwrap() } else { nat.original_key() };
        let flags = (!udp).then_some(flags & (SYN | ACK | FIN | RST));
        let want =
            prepared_table.track_prepared(secs(now), &key, Prepared::new(key_hash(&key)), flags);
        let got =
            settled_table.track_settled(secs(now), &key, Prepared::new(key_hash(&key)), flags);
        match got {
            Tracking::Settled { direction, flow } => {
                let hit = want.ok_or_else(|| TestCaseError::fail("settled on a miss"))?;
                prop_assert_eq!((direction, flow), (hit.direction, hit.flow));
                prop_assert!(hit.state == hit.previous && hit.state != FlowState::SynSeen);
            }
            Tracking::Moved(hit) => {
                prop_assert_eq!(Some(hit), want);
            }
            Tracking::Miss => prop_assert_eq!(want, None),
        }
    }
    Ok(())
}

fn an_insert_from_a_prepared_lookup_still_sees_the_key<F: Hosts>() {
    let mut ct = table::<F>(64);
    ct.begin_batch();
    let nat = tcp(ForwardMode::Nat, 1);
    let key = nat.original_key();
    // Prepared while the key was absent, then the key inserted in the same batch: the
    // prepared lookup no longer proves it absent.
    let before = ct.prepare(key_hash(&key));
    assert!(ct.proved_absent(&before).is_some(), "absent when the batch looked");
    assert_eq!(ct.insert(secs(0), nat, Some(SYN), |_, _| {}), Ok(FlowState::SynSeen));
    assert_eq!(ct.proved_absent(&before), None, "a slot was published into its bucket");
    assert_eq!(
        ct.insert_prepared(secs(0), &nat, before, Some(SYN), |_, _| {}),
        Err(InsertError::Exists)
    );
    // Prepared while the key is there but expired: the insert replaces it.
    let mut removed = Vec::new();
    let expired = ct.prepare(key_hash(&key));
    assert_eq!(ct.track_prepared(secs(100), &key, expired, Some(ACK)), None);
    let result = ct.insert_prepared(secs(100), &nat, expired, Some(SYN), |f, _| removed.push(*f));
    assert_eq!((result, removed, ct.stats().expired), (Ok(FlowState::SynSeen), vec![nat], 1));
    // Prepared in an earlier batch: proves nothing, the insert looks.
    let earlier = ct.prepare(key_hash(&key));
    ct.begin_batch();
    assert_eq!(ct.proved_absent(&earlier), None, "an earlier batch proves nothing");
    let again = ct.insert_prepared(secs(100), &nat, earlier, Some(SYN), |_, _| {});
    assert_eq!(again, Err(InsertError::Exists));
    // And a key the batch proved absent is inserted.
    let fresh = tcp(ForwardMode::Nat, 2);
    let prepared = ct.prepare(key_hash(&fresh.original_key()));
    assert_eq!(ct.track_prepared(secs(100), &fresh.original_key(), prepared, Some(SYN)), None);
    let proved = ct.proved_absent(&prepared).expect("nothing with its fingerprint in its bucket");
    assert_eq!(
        ct.insert_prepared(secs(100), &fresh, proved, Some(SYN), |_, _| {}),
        Ok(FlowState::SynSeen)
    );
    assert!(ct.contains(secs(100), &fresh.original_key()));
    // The key is there now: nothing proves it absent, and its insert is refused.
    let after = ct.prepare(key_hash(&fresh.original_key()));
    assert_eq!(ct.proved_absent(&after), None);
    let refused = ct.insert_prepared(secs(100), &fresh, after, Some(SYN), |_, _| {});
    assert_eq!(refused, Err(InsertError::Exists));
}

fn track_hashed_is_track_with_the_hash_computed_outside<F: Hosts>() {
    let mut ct = table::<F>(64);
    let reader = ct.reader();
    let flows = [tcp(ForwardMode::Dr, 1), tcp(ForwardMode::Nat, 2), tcp(ForwardMode::FullNat, 3)];
    for f in flows {
        insert(&mut ct, secs(0), f, Some(SYN)).unwrap();
    }
    let mut twin = table::<F>(64);
    for f in flows {
        insert(&mut twin, secs(0), f, Some(SYN)).unwrap();
    }
    let keys: Vec<FlowKey<F>> =
        flows.iter().flat_map(|f| std::iter::once(f.original_key()).chain(f.reply_key())).collect();
    for (step, flags) in [Some(ACK), Some(FIN | ACK), None, Some(RST)].into_iter().enumerate() {
        let now = secs(step as u64);
        for key in &keys {
            let hash = key_hash(key);
            let hit = twin.track(now, key, flags);
            assert!(hit.is_some(), "{key}");
            assert_eq!(ct.track_hashed(now, key, hash, flags), hit, "{key}");
        }
    }
    assert_eq!((ct.embryonic(), ct.stats()), (twin.embryonic(), twin.stats()));
    // Readers too.
    for key in &keys {
        let hit = twin.reader().track(secs(3), key, Some(ACK));
        assert!(hit.is_some(), "{key}");
        assert_eq!(reader.track_hashed(secs(3), key, key_hash(key), Some(ACK)), hit);
    }
}

fn track_hashed_with_another_keys_hash_never_finds_that_keys_flow<F: Hosts>() {
    // One bucket: every hash lands where both flows are.
    let mut ct = table::<F>(2);
    let (f, g) = (tcp(ForwardMode::Dr, 1), tcp(ForwardMode::Dr, 2));
    insert(&mut ct, secs(0), f, Some(ACK)).unwrap();
    insert(&mut ct, secs(0), g, Some(ACK)).unwrap();
    let (fk, gk) = (f.original_key(), g.original_key());
    assert_eq!(ct.track_hashed(secs(1), &fk, key_hash(&gk), Some(ACK)), None);
    assert_eq!(ct.track_hashed(secs(1), &gk, key_hash(&fk), Some(ACK)), None);
    assert_eq!(
        ct.track_hashed(secs(1), &fk, key_hash(&fk), Some(ACK)).map(|hit| hit.flow),
        Some(f)
    );
}

/// Whatever hash a caller passes, a hit is always the flow of the key it asked for.
fn track_hashed_hits_only_the_asked_key<F: Hosts>(
    which: u32,
    hash: u64,
    use_own_hash: bool,
) -> Result<(), TestCaseError> {
    {
        let mut ct = table::<F>(4);
        let flows: Vec<Flow<F>> = (0..4).map(|i| tcp(ForwardMode::Nat, i)).collect();
        for f in &flows {
            insert(&mut ct, secs(0), *f, Some(ACK)).unwrap();
        }
        let keys: Vec<FlowKey<F>> =
            flows.iter().flat_map(|f| [f.original_key(), f.reply_key().unwrap()]).collect();
        let key = keys[which as usize];
        let hash = if use_own_hash { key_hash(&key) } else { hash };
        match ct.track_hashed(secs(1), &key, hash, Some(ACK)) {
            Some(hit) => {
                let found = match hit.direction {
                    Direction::Original => Some(hit.flow.original_key()),
                    Direction::Reply => hit.flow.reply_key(),
                };
                prop_assert_eq!(found, Some(key));
            }
            None => prop_assert!(!use_own_hash, "a live key missed with its own hash"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Model-based property test.

/// The model: a map from every key of every stored flow to the flow's original key, and the
/// flows with their state and last-seen.
struct Model<F: Hosts> {
    flows: HashMap<FlowKey<F>, (Flow<F>, FlowState, u64)>,
}

impl<F: Hosts> Model<F> {
    fn keys(flow: &Flow<F>) -> impl Iterator<Item = FlowKey<F>> {
        std::iter::once(flow.original_key()).chain(flow.reply_key())
    }

    fn find(&self, key: &FlowKey<F>) -> Option<(FlowKey<F>, Direction)> {
        self.flows.iter().find_map(|(original, (flow, _, _))| {
            if flow.original_key() == *key {
                Some((*original, Direction::Original))
            } else if flow.reply_key() == Some(*key) {
                Some((*original, Direction::Reply))
            } else {
                None
            }
        })
    }

    fn expired(&self, original: &FlowKey<F>, now: u64) -> bool {
        let (_, state, seen) = self.flows[original];
        now.saturating_sub(seen) > timeouts().of(state).as_nanos() as u64
    }

    fn track(&mut self, now: u64, key: &FlowKey<F>, flags: Option<u8>) -> Option<Hit<F>> {
        let (original, direction) = self.find(key)?;
        if self.expired(&original, now) {
            return None;
        }
        let (flow, state, seen) = self.flows.get_mut(&original)?;
        let previous = *state;
        *state = tcp::next_state(previous, direction, flags);
        *seen = (*seen).max(now);
        Some(Hit { direction, flow: *flow, state: *state, previous })
    }

    fn insert(
        &mut self,
        now: u64,
        flow: Flow<F>,
        flags: Option<u8>,
        removed: &mut Vec<Flow<F>>,
    ) -> Result<FlowState, InsertError> {
        for key in Self::keys(&flow) {
            if let Some((original, _)) = self.find(&key) {
                if !self.expired(&original, now) {
                    return Err(InsertError::Exists);
                }
                removed.push(self.flows.remove(&original).unwrap().0);
            }
        }
        let state = tcp::initial_state(flow.proto, flags);
        self.flows.insert(flow.original_key(), (flow, state, now));
        Ok(state)
    }
}

#[derive(Debug, Clone)]
enum Op<F: Hosts> {
    Insert(Flow<F>, Option<u8>),
    Track(FlowKey<F>, Option<u8>),
    Contains(FlowKey<F>),
    Remove(FlowKey<F>),
    Advance(u64),
    Sweep,
}

/// Host numbers that differ only in the lowest bit (0, 1) or, for IPv6, only in the
/// highest bits (0, 0x1_0000): see the module docs.
const NEAR_HOSTS: [u32; 3] = [0, 1, 0x1_0000];

fn arb_flow<F: Hosts>() -> impl Strategy<Value = Flow<F>> {
    (0..3usize, 0..2u16, 0..2u16, 0..2u8, 0..3usize, 0..3usize, 0..2u16, 0..3usize).prop_map(
        |(client, cport, vport, proto, forward, backend, lport, local)| {
            let client_addr = F::host(Kind::Client, NEAR_HOSTS[client]);
            Flow {
                proto: [Proto::Tcp, Proto::Udp][usize::from(proto)],
                forward: [ForwardMode::Dr, ForwardMode::Nat, ForwardMode::FullNat][forward],
                client_addr,
                client_port: 1000 + cport,
                vip: F::host(Kind::Vip, 0),
                vport: 80 + vport,
                backend_addr: F::host(Kind::Backend, NEAR_HOSTS[backend]),
                backend_port: 8080,
                local_addr: if forward == 2 {
                    F::host(Kind::Local, NEAR_HOSTS[local])
                } else {
                    client_addr
                },
                local_port: if forward == 2 { 3000 + lport } else { 1000 + cport },
                service: vport,
                backend: backend as u16,
            }
        },
    )
}

fn arb_flags() -> impl Strategy<Value = Option<u8>> {
    prop::sample::select(vec![
        None,
        Some(SYN),
        Some(SYN | ACK),
        Some(ACK),
        Some(ACK | 0x08),
        Some(FIN | ACK),
        Some(RST),
    ])
}

fn arb_key<F: Hosts>() -> impl Strategy<Value = FlowKey<F>> {
    (arb_flow(), any::<bool>()).prop_map(|(flow, reply)| match flow.reply_key() {
        Some(key) if reply => key,
        _ => flow.original_key(),
    })
}

fn arb_op<F: Hosts>() -> impl Strategy<Value = Op<F>> {
    prop_oneof![
        4 => (arb_flow(), arb_flags()).prop_map(|(f, flags)| Op::Insert(f, flags)),
        6 => (arb_key(), arb_flags()).prop_map(|(k, flags)| Op::Track(k, flags)),
        1 => arb_key().prop_map(Op::Contains),
        1 => arb_key().prop_map(Op::Remove),
        3 => (0..6_000u64).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

/// On a table too large to ever evict, the table behaves exactly like the model.
fn behaves_like_a_hash_map<F: Hosts>(ops: Vec<Op<F>>) -> Result<(), TestCaseError> {
    {
        let config = ConntrackConfig { timeouts: timeouts(), ..fixed_config(4096) };
        let mut ct = Conntrack::<F>::new(&config);
        // The same operations, with every track through `track_hashed` after both prefetches.
        let mut hashed = Conntrack::<F>::new(&config);
        let mut stale: HashMap<FlowKey<F>, Prepared> = HashMap::new();
        let mut model = Model { flows: HashMap::new() };
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Insert(flow, flags) => {
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    let result =
                        ct.insert(Instant::from_nanos(now), flow, flags, |f, _| got.push(*f));
                    prop_assert_eq!(result, model.insert(now, flow, flags, &mut want));
                    prop_assert_eq!(&got, &want);
                    got.clear();
                    // The new-flow path: the insert starts from the original key's lookup as
                    // it was last prepared (stale by every operation since), else a fresh one.
                    let key = flow.original_key();
                    let prepared =
                        stale.get(&key).copied().unwrap_or_else(|| hashed.prepare(key_hash(&key)));
                    prop_assert_eq!(
                        hashed.insert_prepared(
                            Instant::from_nanos(now),
                            &flow,
                            prepared,
                            flags,
                            |f, _| got.push(*f)
                        ),
                        result
                    );
                    prop_assert_eq!(got, want);
                }
                Op::Track(key, flags) => {
                    let want = model.track(now, &key, flags);
                    prop_assert_eq!(ct.track(Instant::from_nanos(now), &key, flags), want);
                    // The batch path: prefetches, then the lookup with the hash computed outside
                    // and the candidate slot of a lookup prepared when this key was last
                    // tracked (stale by every operation since), else of a fresh one.
                    let hash = key_hash(&key);
                    hashed.prefetch_bucket(hash);
                    hashed.prefetch_record(&key, hash);
                    let prepared = stale.remove(&key).unwrap_or_else(|| hashed.prepare(hash));
                    prop_assert_eq!(prepared.hash(), hash);
                    prop_assert_eq!(
                        hashed.track_prepared(Instant::from_nanos(now), &key, prepared, flags),
                        want
                    );
                    stale.insert(key, hashed.prepare(hash));
                }
                Op::Contains(key) => {
                    let want = model
                        .find(&key)
                        .is_some_and(|(original, _)| !model.expired(&original, now));
                    prop_assert_eq!(ct.contains(Instant::from_nanos(now), &key), want);
                }
                Op::Remove(key) => {
                    let want = model
                        .find(&key)
                        .and_then(|(original, _)| model.flows.remove(&original))
                        .map(|e| (e.0, e.1));
                    prop_assert_eq!(ct.remove(&key), want);
                    prop_assert_eq!(hashed.remove(&key), want);
                }
                Op::Advance(millis) => {
                    now += millis * 1_000_000;
                    // A new batch: lookups prepared before it prove nothing absent any more.
                    hashed.begin_batch();
                }
                Op::Sweep => {
                    let mut got = Vec::new();
                    let removed = ct.sweep(Instant::from_nanos(now), usize::MAX, |f, _| {
                        got.push(f.original_key())
                    });
                    prop_assert_eq!(
                        hashed.sweep(Instant::from_nanos(now), usize::MAX, |_, _| {}),
                        removed
                    );
                    let mut want: Vec<FlowKey<F>> =
                        model.flows.keys().copied().filter(|k| model.expired(k, now)).collect();
                    for key in &want {
                        model.flows.remove(key);
                    }
                    prop_assert_eq!(removed, want.len());
                    let order = |k: &FlowKey<F>| (k.src_addr, k.src_port, k.dst_port, k.proto);
                    got.sort_by_key(order);
                    want.sort_by_key(order);
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(ct.len(), model.flows.len());
            let embryonic =
                model.flows.values().filter(|(_, s, _)| *s == FlowState::SynSeen).count();
            prop_assert_eq!(ct.embryonic(), embryonic);
            prop_assert_eq!(
                (hashed.len(), hashed.embryonic(), hashed.stats()),
                (ct.len(), embryonic, ct.stats())
            );
            prop_assert_eq!(ct.stats().refused_full + ct.stats().evicted_embryonic, 0);
            prop_assert!(ct.table.occupancy_is_exact() && hashed.table.occupancy_is_exact());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The eviction rule against a model.

/// What the eviction model keeps per flow: state, last seen, whether a UDP flow's backend
/// answered, and when the flow entered its eviction class (a sequence number).
#[derive(Debug, Clone, Copy)]
struct Evictable<F: Hosts> {
    flow: Flow<F>,
    state: FlowState,
    seen: u64,
    replied: bool,
    entered: u64,
}

impl<F: Hosts> Evictable<F> {
    fn class(&self) -> Option<Class> {
        match (self.state, self.replied) {
            (FlowState::SynSeen, _) => Some(Class::Embryonic),
            (FlowState::Udp, false) => Some(Class::Unreplied),
            (FlowState::Udp, true) => Some(Class::Replied),
            _ => None,
        }
    }
}

/// The eviction rule of "Full tables and floods", written plainly over a map.
struct EvictionModel<F: Hosts> {
    flows: HashMap<FlowKey<F>, Evictable<F>>,
    capacity: usize,
    max_embryonic: usize,
    sequence: u64,
}

impl<F: Hosts> EvictionModel<F> {
    fn find(&self, key: &FlowKey<F>) -> Option<(FlowKey<F>, Direction)> {
        self.flows.iter().find_map(|(original, e)| {
            if e.flow.original_key() == *key {
                Some((*original, Direction::Original))
            } else if e.flow.reply_key() == Some(*key) {
                Some((*original, Direction::Reply))
            } else {
                None
            }
        })
    }

    fn expired(&self, original: &FlowKey<F>, now: u64) -> bool {
        let e = &self.flows[original];
        now.saturating_sub(e.seen) > timeouts().of(e.state).as_nanos() as u64
    }

    fn next(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// The flow longest in `class`.
    fn oldest(&self, class: Class) -> Option<FlowKey<F>> {
        let mut in_class: Vec<_> =
            self.flows.iter().filter(|(_, e)| e.class() == Some(class)).collect();
        in_class.sort_by_key(|(_, e)| e.entered);
        in_class.first().map(|(key, _)| **key)
    }

    fn track(&mut self, now: u64, key: &FlowKey<F>, flags: Option<u8>) -> Option<Hit<F>> {
        let (original, direction) = self.find(key)?;
        if self.expired(&original, now) {
            return None;
        }
        let sequence = self.next();
        let e = self.flows.get_mut(&original)?;
        let (class, previous) = (e.class(), e.state);
        e.state = tcp::next_state(previous, direction, flags);
        e.replied |= e.state == FlowState::Udp && direction == Direction::Reply;
        e.seen = e.seen.max(now);
        if e.class() != class {
            e.entered = sequence;
        }
        Some(Hit { direction, flow: e.flow, state: e.state, previous })
    }

    /// `evicted` is what the table reported: where the rule allows any expired flow, the
    /// model takes the one the table took if it is one of them.
    fn insert(
        &mut self,
        now: u64,
        flow: Flow<F>,
        flags: Option<u8>,
        evicted: &[Flow<F>],
        removed: &mut Vec<Flow<F>>,
    ) -> Result<FlowState, InsertError> {
        let keys = std::iter::once(flow.original_key()).chain(flow.reply_key());
        for key in keys {
            if let Some((original, _)) = self.find(&key) {
                if !self.expired(&original, now) {
                    return Err(InsertError::Exists);
                }
                removed.push(self.flows.remove(&original).unwrap().flow);
            }
        }
        let state = tcp::initial_state(flow.proto, flags);
        let embryonic = self.flows.values().filter(|e| e.state == FlowState::SynSeen).count();
        if state == FlowState::SynSeen && embryonic >= self.max_embryonic {
            let victim = match flow.forward {
                ForwardMode::Dr => None,
                _ => self.oldest(Class::Embryonic),
            };
            let Some(victim) = victim else { return Err(InsertError::Flood) };
            removed.push(self.flows.remove(&victim).unwrap().flow);
        }
        if self.flows.len() >= self.capacity {
            let expired: Vec<FlowKey<F>> =
                self.flows.keys().copied().filter(|k| self.expired(k, now)).collect();
            let victim = if let Some(first) = expired.first() {
                *expired.iter().find(|k| evicted.contains(&self.flows[*k].flow)).unwrap_or(first)
            } else {
                let seen = |key: &FlowKey<F>| self.flows[key].seen;
                let udp = self.flows.values().filter(|e| e.state == FlowState::Udp).count();
                match (self.oldest(Class::Embryonic), self.oldest(Class::Unreplied)) {
                    (Some(e), Some(u)) => {
                        if seen(&u) < seen(&e) {
                            u
                        } else {
                            e
                        }
                    }
                    (Some(victim), None) | (None, Some(victim)) => victim,
                    (None, None) if udp * 2 > self.capacity => match self.oldest(Class::Replied) {
                        Some(victim) => victim,
                        None => return Err(InsertError::Full),
                    },
                    (None, None) => return Err(InsertError::Full),
                }
            };
            removed.push(self.flows.remove(&victim).unwrap().flow);
        }
        let entered = self.next();
        self.flows.insert(
            flow.original_key(),
            Evictable { flow, state, seen: now, replied: false, entered },
        );
        Ok(state)
    }
}

/// On a table small enough to be full most of the time (4 flows, at most 2 embryonic:
/// one index bucket, so a bucket is never full before the table is), every insert
/// evicts exactly what the rule says, in the order it says, and refuses exactly when it
/// says.
fn evicts_by_the_rule<F: Hosts>(ops: Vec<Op<F>>) -> Result<(), TestCaseError> {
    {
        let config =
            ConntrackConfig { capacity: 4, max_embryonic: 2, timeouts: timeouts(), secret: SECRET };
        let mut ct = Conntrack::<F>::new(&config);
        prop_assert_eq!(ct.table.bucket_count(), 1);
        // The same operations, every track with a lookup prepared when the key was last
        // tracked: records are evicted and reused under it all the time here.
        let mut batched = Conntrack::<F>::new(&config);
        let mut stale: HashMap<FlowKey<F>, Prepared> = HashMap::new();
        let mut model =
            EvictionModel { flows: HashMap::new(), capacity: 4, max_embryonic: 2, sequence: 0 };
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Insert(flow, flags) => {
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    let result =
                        ct.insert(Instant::from_nanos(now), flow, flags, |f, _| got.push(*f));
                    prop_assert_eq!(result, model.insert(now, flow, flags, &got, &mut want));
                    prop_assert_eq!(got, want);
                    let key = flow.original_key();
                    let prepared =
                        stale.get(&key).copied().unwrap_or_else(|| batched.prepare(key_hash(&key)));
                    prop_assert_eq!(
                        batched.insert_prepared(
                            Instant::from_nanos(now),
                            &flow,
                            prepared,
                            flags,
                            |_, _| {}
                        ),
                        result
                    );
                }
                Op::Track(key, flags) => {
                    let want = model.track(now, &key, flags);
                    prop_assert_eq!(ct.track(Instant::from_nanos(now), &key, flags), want);
                    let hash = key_hash(&key);
                    let prepared = stale.remove(&key).unwrap_or_else(|| batched.prepare(hash));
                    prop_assert_eq!(
                        batched.track_prepared(Instant::from_nanos(now), &key, prepared, flags),
                        want
                    );
                    stale.insert(key, batched.prepare(hash));
                }
                Op::Contains(key) => {
                    let want = model
                        .find(&key)
                        .is_some_and(|(original, _)| !model.expired(&original, now));
                    prop_assert_eq!(ct.contains(Instant::from_nanos(now), &key), want);
                }
                Op::Remove(key) => {
                    let want = model
                        .find(&key)
                        .and_then(|(original, _)| model.flows.remove(&original))
                        .map(|e| (e.flow, e.state));
                    prop_assert_eq!(ct.remove(&key), want);
                    prop_assert_eq!(batched.remove(&key), want);
                }
                Op::Advance(millis) => {
                    now += millis * 1_000_000;
                    batched.begin_batch();
                }
                Op::Sweep => {
                    let removed = ct.sweep(Instant::from_nanos(now), usize::MAX, |_, _| {});
                    prop_assert_eq!(
                        batched.sweep(Instant::from_nanos(now), usize::MAX, |_, _| {}),
                        removed
                    );
                    let expired: Vec<FlowKey<F>> =
                        model.flows.keys().copied().filter(|k| model.expired(k, now)).collect();
                    for key in &expired {
                        model.flows.remove(key);
                    }
                    prop_assert_eq!(removed, expired.len());
                }
            }
            prop_assert!(ct.len() <= 4);
            prop_assert_eq!(ct.len(), model.flows.len());
            let embryonic = model.flows.values().filter(|e| e.state == FlowState::SynSeen).count();
            prop_assert_eq!(ct.embryonic(), embryonic);
            for class in [Class::Embryonic, Class::Unreplied, Class::Replied] {
                let in_class = model.flows.values().filter(|e| e.class() == Some(class)).count();
                prop_assert_eq!(ct.queues.len(class), in_class, "{:?}", class);
            }
            // One bucket of up to 8 used slots: the record pass's occupancy part is used.
            prop_assert!(ct.table.occupancy_is_exact() && batched.table.occupancy_is_exact());
            for key in model.flows.keys() {
                let hash = key_hash(key);
                prop_assert_eq!(
                    ct.table.prefetch_record(hash),
                    ct.table.first_with_fingerprint(hash)
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// IPVS's active and inactive connections, counted the pipeline's way.

/// Per backend hint (0..4, [`flow`]'s `client % 4`), the counts a core keeps
/// ([`ConnectionCount`]) from what the table tells it: an insert's state, a hit's move, a
/// removal's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts([ConnectionCount; 4]);

impl Counts {
    fn inserted<F: Hosts>(&mut self, flow: &Flow<F>, result: Result<FlowState, InsertError>) {
        if let Ok(state) = result {
            self.0[usize::from(flow.backend)].open(state);
        }
    }

    fn removed<F: Hosts>(&mut self, flow: &Flow<F>, state: FlowState) {
        self.0[usize::from(flow.backend)].close(state);
    }

    fn hit<F: Hosts>(&mut self, hit: Option<Hit<F>>) {
        if let Some(hit) = hit {
            self.0[usize::from(hit.flow.backend)].moved(hit.previous, hit.state);
        }
    }

    fn plus(self, other: Counts) -> Counts {
        Counts(std::array::from_fn(|i| self.0[i].plus(other.0[i])))
    }

    /// (active, inactive) per backend.
    fn pairs(self) -> [(i32, i32); 4] {
        self.0.map(|c| (c.active, c.inactive))
    }
}

/// Every flow the table holds (expired ones not yet removed too: they count until removed,
/// as the pipeline's counts do), counted afresh by its state.
fn recount<F: Hosts>(ct: &Conntrack<F>) -> Counts {
    let mut counts = Counts::default();
    for index in 0..ct.table.record_count() {
        let Some(view) = ct.table.record(index).map(|record| record.owner_view()) else {
            continue;
        };
        if let (Some(flow), Some(state)) = (view.flow(), view.state()) {
            counts.0[usize::from(flow.backend)].open(state);
        }
    }
    counts
}

/// A NAT connection's life, its reply side on another core: inactive while the handshake
/// runs, active once established, inactive again from the FIN (IPVS's FIN_WAIT, then
/// TIME_WAIT), gone when it expires; a UDP flow is inactive all its life. The owner and the
/// reader core each count what they do; their sum is the recount at every step.
fn connection_counts_move_with_states<F: Hosts>() {
    let mut ct = table::<F>(64);
    let reader = ct.reader();
    let (mut owner, mut other_core) = (Counts::default(), Counts::default());
    let f = tcp::<F>(ForwardMode::Nat, 1);
    let u = flow::<F>(ForwardMode::Nat, Proto::Udp, 2, 5353);
    let reply = f.reply_key().unwrap();
    let mut steps = Vec::new();
    let mut step = |owner: Counts, other_core: Counts, ct: &Conntrack<F>| {
        let sum = owner.plus(other_core);
        assert_eq!(sum, recount(ct), "the counts are the table's");
        steps.push((sum.pairs()[1], sum.pairs()[2]));
    };
    owner.inserted(&f, ct.insert(secs(1), f, Some(SYN), |_, _| panic!("no eviction")));
    owner.inserted(&u, ct.insert(secs(1), u, None, |_, _| panic!("no eviction")));
    step(owner, other_core, &ct);
    // The backend's SYN-ACK (on the other core) moves nothing; the client's ACK establishes.
    other_core.hit(reader.track(secs(1), &reply, Some(SYN | ACK)));
    step(owner, other_core, &ct);
    owner.hit(ct.track(secs(1), &f.original_key(), Some(ACK)));
    step(owner, other_core, &ct);
    // Data both ways moves nothing; the backend's FIN, on the other core, ends it.
    owner.hit(ct.track(secs(2), &f.original_key(), Some(ACK)));
    other_core.hit(reader.track(secs(2), &reply, Some(ACK)));
    step(owner, other_core, &ct);
    other_core.hit(reader.track(secs(3), &reply, Some(FIN | ACK)));
    step(owner, other_core, &ct);
    owner.hit(ct.track(secs(3), &f.original_key(), Some(FIN | ACK)));
    step(owner, other_core, &ct);
    // Expired (closing: 5 s; UDP: 4 s) but not yet removed: still counted; the sweep
    // removes both in the state they had.
    step(owner, other_core, &ct);
    let removed = ct.sweep(secs(20), usize::MAX, |flow, state| owner.removed(flow, state));
    assert_eq!(removed, 2);
    step(owner, other_core, &ct);
    assert_eq!(
        steps,
        [
            ((0, 1), (0, 1)), // SYN; UDP
            ((0, 1), (0, 1)), // SYN-ACK
            ((1, 0), (0, 1)), // ACK: established
            ((1, 0), (0, 1)), // data
            ((0, 1), (0, 1)), // the backend's FIN
            ((0, 1), (0, 1)), // the client's FIN
            ((0, 1), (0, 1)), // expired, not yet swept
            ((0, 0), (0, 0)), // swept
        ]
    );
    // Each core's part alone is no count: the other core moved the owner's flow.
    assert_eq!(owner.pairs()[1], (1, -1));
    assert_eq!(other_core.pairs()[1], (-1, 1));
    // RST, and port reuse (`remove`) and eviction report the state the flow had.
    let mut owner = Counts::default();
    let g = tcp::<F>(ForwardMode::Dr, 5);
    owner.inserted(&g, insert(&mut ct, secs(30), g, Some(SYN)));
    owner.hit(ct.track(secs(30), &g.original_key(), Some(ACK)));
    assert_eq!(owner.pairs()[1], (1, 0));
    owner.hit(ct.track(secs(30), &g.original_key(), Some(RST)));
    assert_eq!(owner.pairs()[1], (0, 1));
    let (flow, state) = ct.remove(&g.original_key()).unwrap();
    owner.removed(&flow, state);
    assert_eq!((owner, recount(&ct)), (Counts::default(), Counts::default()));
}

/// [`Op`]s, and a reader (another core) tracking as the owner does.
#[derive(Debug, Clone)]
enum CountOp<F: Hosts> {
    Table(Op<F>),
    ReaderTrack(FlowKey<F>, Option<u8>),
}

fn arb_count_op<F: Hosts>() -> impl Strategy<Value = CountOp<F>> {
    prop_oneof![
        6 => arb_op().prop_map(CountOp::Table),
        2 => (arb_key(), arb_flags()).prop_map(|(k, flags)| CountOp::ReaderTrack(k, flags)),
    ]
}

/// After any operations on a table small enough to evict (4 flows, 2 embryonic), with a
/// reader moving flows too, the counts kept from inserts, moves and removals (the owner's
/// and the reader's summed) equal a recount of the table.
fn connection_counts_equal_a_recount<F: Hosts>(ops: Vec<CountOp<F>>) -> Result<(), TestCaseError> {
    let config =
        ConntrackConfig { capacity: 4, max_embryonic: 2, timeouts: timeouts(), secret: SECRET };
    let mut ct = Conntrack::<F>::new(&config);
    let reader = ct.reader();
    let (mut owner, mut other_core) = (Counts::default(), Counts::default());
    let mut now = 0u64;
    for op in ops {
        let at = Instant::from_nanos(now);
        match op {
            CountOp::Table(Op::Insert(flow, flags)) => {
                let result = ct.insert(at, flow, flags, |f, state| owner.removed(f, state));
                owner.inserted(&flow, result);
            }
            CountOp::Table(Op::Track(key, flags)) => owner.hit(ct.track(at, &key, flags)),
            CountOp::ReaderTrack(key, flags) => other_core.hit(reader.track(at, &key, flags)),
            CountOp::Table(Op::Contains(key)) => {
                ct.contains(at, &key);
            }
            CountOp::Table(Op::Remove(key)) => {
                if let Some((flow, state)) = ct.remove(&key) {
                    owner.removed(&flow, state);
                }
            }
            CountOp::Table(Op::Advance(millis)) => now += millis * 1_000_000,
            CountOp::Table(Op::Sweep) => {
                ct.sweep(at, usize::MAX, |f, state| owner.removed(f, state));
            }
        }
        prop_assert_eq!(owner.plus(other_core), recount(&ct));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Concurrency.

/// A flow whose every field is a function of (`seed`, `port`), so a torn read shows.
fn checkable_flow<F: Hosts>(seed: u32, port: u16) -> Flow<F> {
    let h = mix64(u64::from(seed) << 16 | u64::from(port));
    let forward = [ForwardMode::Dr, ForwardMode::Nat, ForwardMode::FullNat]
        [(seed as usize + usize::from(port)) % 3];
    let client_addr = F::host(Kind::Client, seed);
    let fullnat = forward == ForwardMode::FullNat;
    Flow {
        proto: if h & 1 == 0 { Proto::Tcp } else { Proto::Udp },
        forward,
        client_addr,
        client_port: port,
        vip: F::host(Kind::Vip, (h >> 8) as u32 & 0xff),
        vport: 80,
        backend_addr: F::host(Kind::Backend, (h >> 16) as u32 & 0xffff),
        backend_port: port ^ 0x5a5a,
        local_addr: if fullnat { F::host(Kind::Local, seed & 0xff) } else { client_addr },
        // Unique per (seed, port) for seeds below 2^14 and ports below 4.
        local_port: if fullnat { (seed as u16) << 2 | port } else { port },
        service: (h >> 32) as u16,
        backend: seed as u16 ^ port,
    }
}

/// On x86 (total store order) this cannot tell a correct seqlock from one without its
/// version re-check: freeing a record stores its state before the next flow's words, and the
/// key check rejects what is left. It does catch wrong hits through stale slots, lost slot
/// and record bookkeeping, and a drifting embryonic count; the orderings themselves are
/// argued in `table.rs`.
fn readers_never_observe_a_torn_flow<F: Hosts>() {
    const SEEDS: u32 = 512;
    const PORTS: u16 = 4;
    let mut ct = Conntrack::<F>::new(&ConntrackConfig {
        capacity: 256,
        max_embryonic: 128,
        secret: SECRET,
        timeouts: Timeouts {
            tcp_syn: Duration::from_millis(20),
            tcp_established: Duration::from_millis(50),
            tcp_closing: Duration::from_millis(10),
            tcp_closed: Duration::from_millis(5),
            udp: Duration::from_millis(30),
        },
    });
    let now = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let reader = ct.reader();
    let random = |state: &mut u64| {
        *state = mix64(*state + 1);
        *state
    };

    let hits = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2u64)
            .map(|id| {
                let (reader, now, done) = (reader.clone(), &now, &done);
                s.spawn(move || {
                    let mut rng = id << 40;
                    let mut hits = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        let r = random(&mut rng);
                        let expected = checkable_flow(r as u32 % SEEDS, (r >> 32) as u16 % PORTS);
                        let key = match expected.reply_key() {
                            Some(reply) if r >> 40 & 1 == 1 => reply,
                            _ => expected.original_key(),
                        };
                        let flags = [ACK, FIN | ACK, RST, SYN][(r >> 48) as usize % 4];
                        let t = Instant::from_nanos(now.load(Ordering::Relaxed));
                        if let Some(hit) = reader.track(t, &key, Some(flags)) {
                            hits += 1;
                            assert_eq!(hit.flow, expected, "torn or wrong flow for {key}");
                            let found = match hit.direction {
                                Direction::Original => Some(hit.flow.original_key()),
                                Direction::Reply => hit.flow.reply_key(),
                            };
                            assert_eq!(found, Some(key));
                        }
                    }
                    hits
                })
            })
            .collect();

        let started = std::time::Instant::now();
        let mut rng = 99u64;
        let mut outcomes = [0u64; 4];
        while started.elapsed() < Duration::from_millis(700) {
            let t = now.fetch_add(20_000, Ordering::Relaxed) + 20_000;
            let t = Instant::from_nanos(t);
            let r = random(&mut rng);
            let f = checkable_flow(r as u32 % SEEDS, (r >> 32) as u16 % PORTS);
            match (r >> 56) % 8 {
                0..=3 => {
                    let flags = if r >> 50 & 1 == 0 { SYN } else { ACK };
                    let i = match ct.insert(t, f, Some(flags), |gone, _| {
                        assert_eq!(
                            *gone,
                            checkable_flow(F::client_number(gone.client_addr), gone.client_port)
                        )
                    }) {
                        Ok(_) => 0,
                        Err(InsertError::Exists) => 1,
                        Err(InsertError::Full) => 2,
                        Err(InsertError::Flood) => 3,
                    };
                    outcomes[i] += 1;
                }
                4 => {
                    if let Some((gone, _)) = ct.remove(&f.original_key()) {
                        assert_eq!(gone, f);
                    }
                }
                5 => {
                    ct.sweep(t, 4, |_, _| {});
                }
                _ => {
                    if let Some(hit) = ct.track(t, &f.original_key(), Some(ACK)) {
                        assert_eq!(hit.flow, f);
                    }
                }
            }
            assert!(ct.len() <= ct.capacity());
        }
        done.store(true, Ordering::Relaxed);
        assert!(outcomes[0] > 1000 && outcomes[2] + outcomes[3] > 0, "owner outcomes {outcomes:?}");
        readers.into_iter().map(|r| r.join().unwrap()).sum::<u64>()
    });
    assert!(hits > 1000, "readers hit only {hits} times");

    // The embryonic count stayed exact through racing transitions, and every record in use
    // is reachable through its slots.
    let views: Vec<_> = (0..ct.table.record_count())
        .filter_map(|i| ct.table.record(i)?.snapshot())
        .filter(|view| view.flow().is_some())
        .collect();
    let embryonic = views.iter().filter(|view| view.state() == Some(FlowState::SynSeen)).count();
    assert_eq!(ct.embryonic(), embryonic);
    assert_eq!(ct.len(), views.len());
    for view in &views {
        let flow = view.flow().unwrap();
        for key in std::iter::once(flow.original_key()).chain(flow.reply_key()) {
            assert_eq!(
                ct.table.lookup(&key, key_hash(&key)).and_then(|found| found.view.flow()),
                Some(flow)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Figures.

/// Run with `cargo test --release --lib conntrack_speed_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn conntrack_speed_report() {
    use std::hint::black_box;
    const FLOWS: u32 = 100_000;
    const LOOKUPS: usize = 2_000_000;
    let per = |elapsed: Duration, n: usize| elapsed.as_nanos() as f64 / n as f64;
    let dr = |i: u32| flow(ForwardMode::Dr, Proto::Tcp, i, 10_000 + (i % 50_000) as u16);
    let order: Vec<u32> =
        (0..LOOKUPS as u64).map(|i| (mix64(i) % u64::from(FLOWS)) as u32).collect();

    for forward in [ForwardMode::Dr, ForwardMode::Nat] {
        let mut ct = Conntrack::<V4>::new(&fixed_config(FLOWS as usize));
        let flows: Vec<Flow> = (0..FLOWS).map(|i| Flow { forward, ..dr(i) }).collect();
        let start = std::time::Instant::now();
        let mut refused = 0;
        for f in &flows {
            refused +=
                usize::from(ct.insert(Instant::from_secs(1), *f, Some(ACK), |_, _| {}).is_err());
        }
        let insert = per(start.elapsed(), flows.len());

        let keys: Vec<FlowKey> = order.iter().map(|&i| flows[i as usize].original_key()).collect();
        let now = Instant::from_secs(2);
        let start = std::time::Instant::now();
        for key in &keys {
            black_box(ct.track(now, black_box(key), Some(ACK)));
        }
        let hit = per(start.elapsed(), keys.len());

        let misses: Vec<FlowKey> = keys.iter().map(|k| FlowKey { dst_port: 81, ..*k }).collect();
        let start = std::time::Instant::now();
        for key in &misses {
            black_box(ct.track(now, black_box(key), Some(ACK)));
        }
        let miss = per(start.elapsed(), misses.len());

        let reader = ct.reader();
        let reply_keys: Vec<FlowKey> = order
            .iter()
            .map(|&i| flows[i as usize].reply_key().unwrap_or(flows[i as usize].original_key()))
            .collect();
        let start = std::time::Instant::now();
        for key in &reply_keys {
            black_box(reader.track(now, black_box(key), Some(ACK)));
        }
        let reader_hit = per(start.elapsed(), reply_keys.len());

        // Hot set: the same 1000 flows over and over (cache-resident).
        let start = std::time::Instant::now();
        for key in keys.iter().take(1000).cycle().take(LOOKUPS) {
            black_box(ct.track(now, black_box(key), Some(ACK)));
        }
        let hot = per(start.elapsed(), LOOKUPS);

        println!(
            "{forward}: {FLOWS} flows, {refused} refused, {:.0} bytes/flow of capacity; insert {insert:.1} ns, \
             track hit {hit:.1} ns (hot set {hot:.1} ns), miss {miss:.1} ns, reader hit ({}) {reader_hit:.1} ns",
            ct.memory_bytes() as f64 / FLOWS as f64,
            if forward == ForwardMode::Dr { "original" } else { "reply" },
        );
    }
}

/// How often an insert meets a full bucket when the table fills up with random flows. Run
/// with `--ignored --nocapture`; change `BUCKET_SLOTS` / `SLOTS_PER_FLOW` to compare.
#[test]
#[ignore]
fn conntrack_fill_report() {
    const CAPACITY: usize = 100_000;
    for forward in [ForwardMode::Dr, ForwardMode::Nat] {
        let mut ct = Conntrack::<V4>::new(&fixed_config(CAPACITY));
        let mut first_full = None;
        let mut i = 0u64;
        let mut full = 0;
        while ct.len() < CAPACITY && i < 4 * CAPACITY as u64 {
            let h = mix64(i);
            let f = Flow {
                client_addr: Ipv4Addr::from_bits(h as u32),
                ..flow(forward, Proto::Tcp, 0, (h >> 32) as u16)
            };
            if ct.insert(secs(1), f, Some(ACK), |_, _| {}) == Err(InsertError::Full) {
                full += 1;
                first_full.get_or_insert(ct.len());
            }
            i += 1;
        }
        println!(
            "{forward}: bucket {BUCKET_SLOTS} slots, {} slots for {CAPACITY} flows: first Full at {:?} flows, \
             {full} Full of {i} inserts to fill ({:.3} %)",
            ct.table.bucket_count() * BUCKET_SLOTS,
            first_full,
            100.0 * full as f64 / i as f64,
        );
    }
}

/// The batch API against one-at-a-time lookups: random hits among 100 000 DR flows, 64 per
/// batch as a poll loop gets them, with and without the two prefetch passes. Run with
/// `cargo test --release --lib conntrack_batch_report -- --ignored --nocapture`; for
/// instructions per hit, run the test binary under `valgrind --tool=callgrind
/// --collect-atstart=no --toggle-collect='*measured_loop*'` with `conntrack_batch_report
/// --ignored`.
#[test]
#[ignore]
fn conntrack_batch_report() {
    const FLOWS: u32 = 100_000;
    let lookups: usize =
        std::env::var("XLB_BATCH_LOOKUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let mut ct = Conntrack::<V4>::new(&fixed_config(FLOWS as usize));
    let flows: Vec<Flow> = (0..FLOWS)
        .map(|i| flow(ForwardMode::Dr, Proto::Tcp, i, 10_000 + (i % 50_000) as u16))
        .collect();
    for f in &flows {
        ct.insert(Instant::from_secs(1), *f, Some(ACK), |_, _| {}).unwrap();
    }
    let random: Vec<FlowKey> = (0..lookups as u64)
        .map(|i| flows[(mix64(i) % u64::from(FLOWS)) as usize].original_key())
        .collect();
    let hot: Vec<FlowKey> = random.iter().take(1000).cycle().take(lookups).copied().collect();

    type Loop = fn(&mut Conntrack, &[FlowKey]) -> usize;
    let variants: [(&str, Loop); 4] = [
        ("one at a time, track", measured_loop_track),
        ("batch, no prefetch", measured_loop_batch_plain),
        ("batch, bucket prefetch", measured_loop_batch_bucket),
        ("batch, both prefetches", measured_loop_batch_prefetch),
    ];
    for (set, keys) in [("100 000 random", &random), ("1 000 hot", &hot)] {
        for (name, run) in variants {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let start = std::time::Instant::now();
                let hits = run(&mut ct, keys);
                best = best.min(start.elapsed().as_nanos() as f64 / keys.len() as f64);
                assert_eq!(hits, keys.len(), "{name}: every lookup hits");
            }
            println!("{set} flows, {name}: {best:.1} ns per hit");
        }
    }
}

/// Packets per batch in `conntrack_batch_report`.
const BATCH: usize = 64;

/// The nanoseconds of batch `batch`: time moves on every batch, as it does in a poll loop,
/// so every hit refreshes last-seen.
fn batch_now(batch: usize) -> Instant {
    Instant::from_nanos(2_000_000_000 + batch as u64 * 1_000)
}

#[inline(never)]
fn measured_loop_track(ct: &mut Conntrack, keys: &[FlowKey]) -> usize {
    let mut hits = 0;
    for (batch, chunk) in keys.chunks(BATCH).enumerate() {
        for key in chunk {
            let hit = ct.track(batch_now(batch), std::hint::black_box(key), Some(ACK));
            // black_box: the caller uses the hit, so building it is part of the figure.
            hits += usize::from(std::hint::black_box(hit).is_some());
        }
    }
    hits
}

/// The passes of a batch before the lookups: every key's hash, then (`prefetch` >= 1) a
/// pass starting the bucket loads, then (`prefetch` >= 2) one starting the record loads.
/// Each prefetch pass is a tight loop of its own, so the core has many loads in flight.
#[inline(always)]
fn prepare_batch(ct: &Conntrack, chunk: &[FlowKey], hashes: &mut [u64; BATCH], prefetch: u8) {
    for (hash, key) in hashes.iter_mut().zip(chunk) {
        *hash = key_hash(std::hint::black_box(key));
    }
    if prefetch >= 1 {
        for hash in &hashes[..chunk.len()] {
            ct.prefetch_bucket(*hash);
        }
    }
    if prefetch >= 2 {
        for (key, hash) in chunk.iter().zip(hashes.iter()) {
            ct.prefetch_record(key, *hash);
        }
    }
}

/// The lookups of a batch; returns the hits.
#[inline(always)]
fn track_batch(ct: &mut Conntrack, keys: &[FlowKey], prefetch: u8) -> usize {
    let mut hashes = [0; BATCH];
    let mut hits = 0;
    for (batch, chunk) in keys.chunks(BATCH).enumerate() {
        prepare_batch(ct, chunk, &mut hashes, prefetch);
        let now = batch_now(batch);
        for (key, hash) in chunk.iter().zip(&hashes) {
            let hit = ct.track_hashed(now, key, *hash, Some(ACK));
            hits += usize::from(std::hint::black_box(hit).is_some());
        }
    }
    hits
}

#[inline(never)]
fn measured_loop_batch_plain(ct: &mut Conntrack, keys: &[FlowKey]) -> usize {
    track_batch(ct, keys, 0)
}

#[inline(never)]
fn measured_loop_batch_bucket(ct: &mut Conntrack, keys: &[FlowKey]) -> usize {
    track_batch(ct, keys, 1)
}

#[inline(never)]
fn measured_loop_batch_prefetch(ct: &mut Conntrack, keys: &[FlowKey]) -> usize {
    track_batch(ct, keys, 2)
}

/// A reader lists the live flows with their state and time left, and leaves out expired
/// and removed ones; `limit` bounds the list.
fn a_reader_lists_live_flows_with_time_left<F: Hosts>() {
    let mut ct = table::<F>(64);
    let reader = ct.reader();
    let established = tcp(ForwardMode::Dr, 1);
    let udp = flow(ForwardMode::Nat, Proto::Udp, 2, 5353);
    let removed = tcp(ForwardMode::Dr, 3);
    assert_eq!(insert(&mut ct, secs(10), established, Some(ACK)), Ok(FlowState::Established));
    assert_eq!(insert(&mut ct, secs(12), udp, None), Ok(FlowState::Udp));
    insert(&mut ct, secs(10), removed, Some(ACK)).unwrap();
    ct.remove(&removed.original_key());

    let mut listed = reader.entries(secs(13), 100);
    listed.sort_by_key(|(flow, _, _)| flow.client_addr);
    assert_eq!(
        listed,
        vec![
            (established, FlowState::Established, Duration::from_secs(17).as_nanos() as u64),
            (udp, FlowState::Udp, Duration::from_secs(3).as_nanos() as u64),
        ]
    );
    assert_eq!(reader.entries(secs(13), 1).len(), 1, "bounded");
    // The UDP flow's 4 s are over at 16 s and a bit; the TCP flow's 20 s are not.
    let later = reader.entries(Instant::from_nanos(secs(16).as_nanos() + 1), 100);
    assert_eq!(later.iter().map(|(f, _, _)| *f).collect::<Vec<_>>(), vec![established]);
}

fn memory_for_matches_the_table_allocated<F: Hosts>() {
    for capacity in [1, 3, 100, 1000, 4096, 100_000] {
        let ct = Conntrack::<F>::new(&fixed_config(capacity));
        assert_eq!(
            Conntrack::<F>::memory_for_capacity(capacity),
            ct.memory_bytes(),
            "capacity {capacity}"
        );
    }
    assert_eq!(Conntrack::memory_for(1000), Conntrack::<V4>::memory_for_capacity(1000));
    // Past the largest table, the figure is the largest table's.
    let max = ConntrackConfig::MAX_CAPACITY;
    assert_eq!(
        Conntrack::<F>::memory_for_capacity(max * 4),
        Conntrack::<F>::memory_for_capacity(max)
    );
}

// ---------------------------------------------------------------------------------------
// Every test above, for each family.

/// Instantiates the generic tests above for one family, in a module of its own.
macro_rules! family_tests {
    ($module:ident, $family:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn dr_tracks_only_the_original_direction() {
                super::dr_tracks_only_the_original_direction::<$family>();
            }

            #[test]
            fn nat_and_fullnat_track_both_directions() {
                super::nat_and_fullnat_track_both_directions::<$family>();
            }

            #[test]
            fn a_live_key_cannot_be_inserted_twice() {
                super::a_live_key_cannot_be_inserted_twice::<$family>();
            }

            #[test]
            fn each_state_expires_after_its_own_timeout() {
                super::each_state_expires_after_its_own_timeout::<$family>();
            }

            #[test]
            fn tracking_refreshes_last_seen_from_either_direction() {
                super::tracking_refreshes_last_seen_from_either_direction::<$family>();
            }

            #[test]
            fn tcp_states_through_the_table() {
                super::tcp_states_through_the_table::<$family>();
            }

            #[test]
            fn remove_removes_both_directions() {
                super::remove_removes_both_directions::<$family>();
            }

            #[test]
            fn sweep_removes_expired_flows_and_reports_them() {
                super::sweep_removes_expired_flows_and_reports_them::<$family>();
            }

            #[test]
            fn allocate_local_port_skips_live_reply_keys_and_runs_out() {
                super::allocate_local_port_skips_live_reply_keys_and_runs_out::<$family>();
            }

            #[test]
            fn allocate_local_port_takes_back_the_ports_of_evictable_flows() {
                super::allocate_local_port_takes_back_the_ports_of_evictable_flows::<$family>();
            }

            #[test]
            fn allocate_local_port_gives_up_after_a_bounded_search() {
                super::allocate_local_port_gives_up_after_a_bounded_search::<$family>();
            }

            #[test]
            fn full_bucket_reuses_expired_then_oldest_embryonic_then_refuses() {
                super::full_bucket_reuses_expired_then_oldest_embryonic_then_refuses::<$family>();
            }

            #[test]
            fn embryonic_flows_beyond_the_limit_are_refused_as_a_flood() {
                super::embryonic_flows_beyond_the_limit_are_refused_as_a_flood::<$family>();
            }

            #[test]
            fn nat_syns_beyond_the_limit_evict_the_oldest_embryonic_flow() {
                super::nat_syns_beyond_the_limit_evict_the_oldest_embryonic_flow::<$family>();
            }

            #[test]
            fn flows_moved_by_readers_are_not_evicted() {
                super::flows_moved_by_readers_are_not_evicted::<$family>();
            }

            #[test]
            fn unreplied_udp_flows_make_room_and_replied_ones_stay() {
                super::unreplied_udp_flows_make_room_and_replied_ones_stay::<$family>();
            }

            #[test]
            fn connection_counts_move_with_states() {
                super::connection_counts_move_with_states::<$family>();
            }

            #[test]
            fn a_syn_flood_never_evicts_established_flows() {
                super::a_syn_flood_never_evicts_established_flows::<$family>();
            }

            #[test]
            fn len_never_exceeds_capacity() {
                super::len_never_exceeds_capacity::<$family>();
            }

            #[test]
            fn a_tiny_or_empty_table_never_panics() {
                super::a_tiny_or_empty_table_never_panics::<$family>();
            }

            #[test]
            fn readers_see_and_update_the_owners_flows() {
                super::readers_see_and_update_the_owners_flows::<$family>();
            }

            #[test]
            fn prefetching_is_harmless_for_any_hash_and_table() {
                super::prefetching_is_harmless_for_any_hash_and_table::<$family>();
            }

            #[test]
            fn the_record_pass_finds_what_a_full_scan_finds() {
                super::the_record_pass_finds_what_a_full_scan_finds::<$family>();
            }

            #[test]
            fn an_insert_from_a_prepared_lookup_still_sees_the_key() {
                super::an_insert_from_a_prepared_lookup_still_sees_the_key::<$family>();
            }

            #[test]
            fn track_hashed_is_track_with_the_hash_computed_outside() {
                super::track_hashed_is_track_with_the_hash_computed_outside::<$family>();
            }

            #[test]
            fn track_hashed_with_another_keys_hash_never_finds_that_keys_flow() {
                super::track_hashed_with_another_keys_hash_never_finds_that_keys_flow::<$family>();
            }

            #[test]
            fn readers_never_observe_a_torn_flow() {
                super::readers_never_observe_a_torn_flow::<$family>();
            }

            #[test]
            fn a_reader_lists_live_flows_with_time_left() {
                super::a_reader_lists_live_flows_with_time_left::<$family>();
            }

            #[test]
            fn memory_for_matches_the_table_allocated() {
                super::memory_for_matches_the_table_allocated::<$family>();
            }

            proptest! {
                #[test]
                fn track_hashed_hits_only_the_asked_key(
                    which in 0..8u32,
                    hash in any::<u64>(),
                    use_own_hash in any::<bool>(),
                ) {
                    super::track_hashed_hits_only_the_asked_key::<$family>(which, hash, use_own_hash)?;
                }
            }

            proptest! {
                #[test]
                fn track_settled_is_track_prepared_split(
                    udp in any::<bool>(),
                    packets in prop::collection::vec((any::<bool>(), any::<u8>(), any::<u8>()), 1..40),
                ) {
                    super::track_settled_is_track_prepared_split::<$family>(udp, packets)?;
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

                #[test]
                fn behaves_like_a_hash_map(ops in prop::collection::vec(arb_op::<$family>(), 1..120)) {
                    super::behaves_like_a_hash_map(ops)?;
                }

                #[test]
                fn evicts_by_the_rule(ops in prop::collection::vec(arb_op::<$family>(), 1..160)) {
                    super::evicts_by_the_rule(ops)?;
                }

                #[test]
                fn connection_counts_equal_a_recount(
                    ops in prop::collection::vec(arb_count_op::<$family>(), 1..160),
                ) {
                    super::connection_counts_equal_a_recount(ops)?;
                }
            }
        }
    };
}

family_tests!(v4, V4);
family_tests!(v6, V6);
