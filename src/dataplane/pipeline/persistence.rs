//! Persistence in the new-flow step: before a persistent service's scheduler is asked, the
//! client's template in the shared [`Templates`] table is followed ([`crate::persist`]).
//!
//! Invariants:
//! - A service without persistence costs one branch: its scheduler is asked as before.
//! - A template is followed only while the real server it names is in its service (found
//!   by address and port, the snapshot may have renumbered it) and not down by health
//!   check. Its weight does not matter: a drained real server (weight 0) keeps its
//!   persistent clients, as IPVS's does with `expire_quiescent_template` at its default 0.
//!   A removed or down one is replaced by the scheduler's pick, in the same slot.
//! - Every new connection that follows a template, or makes one, sets its expiry to
//!   `now + persistence` (never earlier than it was).
//! - When the table refuses (a full window, another core still writing the key), the
//!   connection is scheduled as without persistence, and counted
//!   (`persistent_table_full`, `persistent_busy`): never dropped.

use std::net::IpAddr;

use crate::persist::{Chosen, Claim, ServicePersistence, Templates};
use crate::report::{Counters, Stat};
use crate::snapshot::{Service, Snapshot};
use crate::time::Instant;

/// The backend (an index into the service's backends, as a scheduler's pick) for a new
/// connection of `client` (its address as an integer) to `service`: its template's, else
/// `schedule()`'s (which then makes the template).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pick(
    templates: &Templates,
    snapshot: &Snapshot,
    now: Instant,
    service: &Service,
    client: u128,
    counters: &mut Counters,
    schedule: impl FnOnce() -> Option<usize>,
) -> Option<usize> {
    match &service.persistence {
        None => schedule(),
        Some(persistence) => {
            persistent(templates, snapshot, now, service, persistence, client, counters, schedule)
        }
    }
}

#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn persistent(
    templates: &Templates,
    snapshot: &Snapshot,
    now: Instant,
    service: &Service,
    persistence: &ServicePersistence,
    client: u128,
    counters: &mut Counters,
    schedule: impl FnOnce() -> Option<usize>,
) -> Option<usize> {
    let key = persistence.key(client);
    let expires = now.saturating_add(persistence.timeout);
    let mut claim = templates.find_or_claim(now, &key);
    if let Claim::Follow(found) = &claim {
        match serving(snapshot, service, &found.chosen) {
            Some(pick) => {
                templates.refresh(found, expires);
                counters.add(Stat::PersistentFollowed, 1);
                return Some(pick);
            }
            // Its real server left the service or is down: pick anew, in its place.
            None => claim = templates.replace(now, &key, found),
        }
    }
    match claim {
        Claim::Claimed(claimed) => {
            let pick = schedule();
            match pick.and_then(|pick| chosen(snapshot, service, pick)) {
                Some(chosen) => templates.fill(claimed, &key, chosen, expires),
                None => templates.abandon(claimed),
            }
            pick
        }
        // Another core replaced the stale template first: follow its pick.
        Claim::Follow(found) => match serving(snapshot, service, &found.chosen) {
            Some(pick) => {
                templates.refresh(&found, expires);
                counters.add(Stat::PersistentFollowed, 1);
                Some(pick)
            }
            None => schedule(),
        },
        Claim::Busy => {
            counters.add(Stat::PersistentBusy, 1);
            schedule()
        }
        Claim::Full => {
            counters.add(Stat::PersistentTableFull, 1);
            schedule()
        }
    }
}

/// The address of `ip` as a template stores it (IPv4 in the low 32 bits).
#[inline]
pub(super) fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(ip) => u128::from(ip.to_bits()),
        IpAddr::V6(ip) => ip.to_bits(),
    }
}

/// What a template of `service` stores for its backend `pick`.
fn chosen(snapshot: &Snapshot, service: &Service, pick: usize) -> Option<Chosen> {
    let index = service.backends.start + pick;
    let backend = snapshot.backends.get(index)?;
    Some(Chosen { addr: ip_bits(backend.addr), port: backend.port, hint: index as u32 })
}

/// The pick (index into the service's backends) of the real server a template names, if it
/// still serves the service: in it, by address and port, and not down by health check.
fn serving(snapshot: &Snapshot, service: &Service, chosen: &Chosen) -> Option<usize> {
    let range = service.backends.clone();
    let is = |index: usize| {
        snapshot.backends.get(index).is_some_and(|backend| {
            ip_bits(backend.addr) == chosen.addr && backend.port == chosen.port
        })
    };
    let hint = chosen.hint as usize;
    let index = if range.contains(&hint) && is(hint) {
        hint
    } else {
        range.clone().find(|&index| is(index))?
    };
    let down = snapshot.backends.get(index).is_none_or(|backend| backend.down);
    (!down).then_some(index - range.start)
}
