use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use proptest::prelude::*;

use super::*;

const SERVICE: u64 = 0x5e41;

fn key(client: u128) -> TemplateKey {
    TemplateKey { service: SERVICE, client }
}

fn chosen(n: u32) -> Chosen {
    Chosen { addr: 0x0a01_0100 + u128::from(n), port: 80, hint: n }
}

fn at(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

/// What a new connection does with the table: follow, or claim and fill with `pick`.
fn connect(table: &Templates, now: Instant, key: &TemplateKey, pick: Chosen, ttl: u64) -> Claim {
    let claim = table.find_or_claim(now, key);
    match claim {
        Claim::Follow(found) => table.refresh(&found, now.saturating_add(Duration::from_secs(ttl))),
        Claim::Claimed(Claimed { slot, word }) => {
            let expires = now.saturating_add(Duration::from_secs(ttl));
            table.fill(Claimed { slot, word }, key, pick, expires);
        }
        Claim::Busy | Claim::Full => {}
    }
    claim
}

#[test]
fn a_second_connection_follows_the_first_until_expiry() {
    let table = Templates::new(64, 7);
    let client = key(0x0a00_0001);
    assert!(matches!(connect(&table, at(1), &client, chosen(1), 300), Claim::Claimed(_)));
    match connect(&table, at(100), &client, chosen(2), 300) {
        Claim::Follow(found) => assert_eq!(found.chosen, chosen(1)),
        other => panic!("expected to follow, got {other:?}"),
    }
    // Refreshed at 100 s: lives until 400 s, not 301 s.
    assert!(matches!(table.find_or_claim(at(399), &client), Claim::Follow(_)));
    let after = table.find_or_claim(at(400), &client);
    assert!(matches!(after, Claim::Claimed(_)), "expired at 400 s: {after:?}");
}

#[test]
fn another_service_or_client_has_its_own_template() {
    let table = Templates::new(64, 7);
    let _ = connect(&table, at(1), &key(1), chosen(1), 300);
    let other_service = TemplateKey { service: SERVICE + 1, client: 1 };
    assert!(matches!(table.find_or_claim(at(2), &other_service), Claim::Claimed(_)));
    assert!(matches!(table.find_or_claim(at(2), &key(2)), Claim::Claimed(_)));
}

#[test]
fn replace_claims_the_stale_template_s_slot() {
    let table = Templates::new(64, 7);
    let client = key(9);
    let _ = connect(&table, at(1), &client, chosen(1), 300);
    let Claim::Follow(found) = table.find_or_claim(at(2), &client) else { panic!("a template") };
    let Claim::Claimed(claimed) = table.replace(at(2), &client, &found) else {
        panic!("the stale slot is claimed again")
    };
    assert_eq!(claimed.slot, found.slot);
    table.fill(claimed, &client, chosen(2), at(302));
    let Claim::Follow(found) = table.find_or_claim(at(3), &client) else { panic!("a template") };
    assert_eq!(found.chosen, chosen(2));
    assert_eq!(table.entries(at(3)).len(), 1, "one template per key");
}

#[test]
fn a_flood_of_new_clients_never_evicts_a_live_template() {
    let table = Templates::new(256, 11);
    let mut kept = Vec::new();
    for client in 0..64u128 {
        if let Claim::Claimed(claimed) = table.find_or_claim(at(1), &key(client)) {
            table.fill(claimed, &key(client), chosen(client as u32), at(1000));
            kept.push(client);
        }
    }
    let mut full = 0;
    for client in 1_000..100_000u128 {
        match connect(&table, at(2), &key(client), chosen(0), 300) {
            Claim::Full => full += 1,
            Claim::Claimed(_) | Claim::Follow(_) => {}
            Claim::Busy => panic!("no other worker"),
        }
    }
    assert!(full > 90_000, "a full table refuses ({full} refusals)");
    for client in kept {
        match table.find_or_claim(at(3), &key(client)) {
            Claim::Follow(found) => assert_eq!(found.chosen, chosen(client as u32)),
            other => panic!("client {client} lost its template: {other:?}"),
        }
    }
    assert!(table.entries(at(3)).len() <= table.capacity(), "bounded");
    // Once the flood's templates expire, new clients get templates again.
    assert!(matches!(table.find_or_claim(at(400), &key(5_000_000)), Claim::Claimed(_)));
}

#[test]
fn keep_alive_extends_a_template_that_still_has_connections() {
    let table = Templates::new(64, 7);
    let client = key(3);
    let _ = connect(&table, at(1), &client, chosen(1), 300);
    assert!(!table.keep_alive(&client, &chosen(2), at(5_000)), "another real server's flow");
    assert!(!table.keep_alive(&key(4), &chosen(1), at(5_000)), "another client");
    assert!(table.entries(at(301)).is_empty(), "expired at 301 s");
    assert!(table.keep_alive(&client, &chosen(1), at(5_000)), "expired, not yet claimed: back");
    match table.find_or_claim(at(4_999), &client) {
        Claim::Follow(found) => assert_eq!(found.chosen, chosen(1)),
        other => panic!("kept alive until 5000 s: {other:?}"),
    }
}

#[test]
fn abandoned_slots_are_free_again() {
    let table = Templates::new(8, 3);
    let Claim::Claimed(claimed) = table.find_or_claim(at(1), &key(1)) else { panic!() };
    table.abandon(claimed);
    assert!(table.entries(at(1)).is_empty());
    assert!(matches!(table.find_or_claim(at(1), &key(1)), Claim::Claimed(_)));
}

/// Workers racing on the same clients (no template expires during the race): every worker
/// ends up with the same real server per client, whoever claimed first.
#[test]
fn racing_workers_settle_on_one_real_server_per_client() {
    const THREADS: u32 = 4;
    const CLIENTS: u128 = 2_000;
    let table = Arc::new(Templates::new(1 << 14, 5));
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (table, barrier) = (table.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut seen = Vec::new();
                for client in 0..CLIENTS {
                    let key = key(client);
                    let got = match table.find_or_claim(at(1), &key) {
                        Claim::Follow(found) => Some(found.chosen),
                        Claim::Claimed(claimed) => {
                            table.fill(claimed, &key, chosen(thread), at(1000));
                            Some(chosen(thread))
                        }
                        Claim::Busy => None,
                        Claim::Full => panic!("a large table is not full"),
                    };
                    seen.push(got);
                }
                seen
            })
        })
        .collect();
    let results: Vec<Vec<Option<Chosen>>> =
        handles.into_iter().map(|handle| handle.join().expect("no panic")).collect();
    for client in 0..CLIENTS as usize {
        let Claim::Follow(found) = table.find_or_claim(at(2), &key(client as u128)) else {
            panic!("client {client} has a template")
        };
        for result in &results {
            if let Some(got) = result[client] {
                assert_eq!(got, found.chosen, "client {client}: every worker follows one pick");
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A new connection of client `client` at the current time, which would pick `pick`.
    Connect { client: u8, pick: u8 },
    /// Its template's real server is gone: replace it with `pick`.
    Replace { client: u8, pick: u8 },
    /// Time passes.
    Advance { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..40, 0u8..4).prop_map(|(client, pick)| Op::Connect { client, pick }),
        1 => (0u8..40, 0u8..4).prop_map(|(client, pick)| Op::Replace { client, pick }),
        1 => (0u16..400).prop_map(|secs| Op::Advance { secs }),
    ]
}

proptest! {
    /// The table against a `HashMap` of live templates: the same follows, the same claims,
    /// the same listing; a refusal only when the key is not live and at least a window's
    /// worth of templates is.
    #[test]
    fn the_table_behaves_as_a_map_of_live_templates(
        ops in proptest::collection::vec(op(), 1..200),
        capacity in prop::sample::select(vec![8usize, 16, 64]),
    ) {
        const TTL: u64 = 300;
        let table = Templates::new(capacity, 42);
        let mut model: HashMap<TemplateKey, (Chosen, u64)> = HashMap::new();
        let mut now = 1u64;
        for op in ops {
            let time = at(now);
            let expires = now + TTL;
            model.retain(|_, (_, until)| *until > now);
            match op {
                Op::Connect { client, pick } => {
                    let key = key(u128::from(client));
                    let claim = connect(&table, time, &key, chosen(u32::from(pick)), TTL);
                    match (claim, model.get_mut(&key)) {
                        (Claim::Follow(found), Some((live, until))) => {
                            prop_assert_eq!(found.chosen, *live);
                            *until = expires;
                        }
                        (Claim::Claimed(_), None) => {
                            model.insert(key, (chosen(u32::from(pick)), expires));
                        }
                        (Claim::Full, None) => prop_assert!(model.len() >= WINDOW),
                        (claim, live) => prop_assert!(false, "{:?} with {:?} in the model", claim, live),
                    }
                }
                Op::Replace { client, pick } => {
                    let key = key(u128::from(client));
                    match table.find_or_claim(time, &key) {
                        Claim::Follow(found) => {
                            prop_assert!(model.contains_key(&key));
                            let Claim::Claimed(claimed) = table.replace(time, &key, &found) else {
                                return Err(TestCaseError::fail("a stale template is claimed again"));
                            };
                            table.fill(claimed, &key, chosen(u32::from(pick)), at(expires));
                            model.insert(key, (chosen(u32::from(pick)), expires));
                        }
                        Claim::Claimed(claimed) => {
                            prop_assert!(!model.contains_key(&key));
                            table.abandon(claimed);
                        }
                        Claim::Full => prop_assert!(model.len() >= WINDOW),
                        Claim::Busy => prop_assert!(false, "no other worker"),
                    }
                }
                Op::Advance { secs } => now += u64::from(secs),
            }
            let time = at(now);
            model.retain(|_, (_, until)| *until > now);
            let mut listed: Vec<(TemplateKey, Chosen, u64)> = table
                .entries(time)
                .into_iter()
                .map(|e| (e.key, e.chosen, now + e.remaining.as_secs()))
                .collect();
            listed.sort_by_key(|(k, _, _)| k.client);
            let mut expected: Vec<(TemplateKey, Chosen, u64)> =
                model.iter().map(|(k, (c, until))| (*k, *c, *until)).collect();
            expected.sort_by_key(|(k, _, _)| k.client);
            prop_assert_eq!(listed, expected);
        }
    }
}
