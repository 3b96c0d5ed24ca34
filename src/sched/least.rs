//! The least-load schedulers: `lc`, `wlc`, `sed`, `nq` and `lt`.
//!
//! Each picks the backend with the lowest cost, a ratio compared by cross-multiplication in
//! `u128` (no floats, no overflow: every numerator is below `2^72` and every denominator below
//! `2^32`). The IPVS kinds use IPVS's own formulas (`net/netfilter/ipvs/ip_vs_{lc,wlc,sed,nq}.c`),
//! so an `ipvsadm-save` file moved to xlb balances as it did:
//!
//! | kind | cost | origin |
//! |---|---|---|
//! | `lc`  | `active * 256 + inactive` | IPVS `lc` (`ip_vs_dest_conn_overhead`) |
//! | `wlc` | `(active * 256 + inactive) / weight` | IPVS `wlc`: idle backends tie, whatever their weights |
//! | `sed` | `(active + 1) / weight` | IPVS `sed`: the `+ 1` makes an idle heavy backend beat an idle light one |
//! | `nq`  | 0 for a backend with no active connection, else `(active + 1) / weight` | IPVS `nq` |
//! | `lt`  | `(active + 1) * response_time_us / weight` | NGINX Plus `least_time` |
//!
//! `active` and `inactive` are what [`super::PickContext`] gives; a missing entry counts as
//! 0. The pipeline gives IPVS's own counts: `active` the established TCP connections,
//! `inactive` the rest (handshakes, closing and closed connections — IPVS's SYN_RECV,
//! FIN_WAIT, TIME_WAIT... — and every UDP flow), one definition for the schedulers,
//! `ipvsadm -L -n` and the metrics ([`crate::conntrack::FlowState::is_active`]). They move
//! with each flow's TCP state, its expiry, eviction and port reuse, and are the box's: the
//! picking core's own, current, plus the other cores' from their last reports (every
//! [`crate::dataplane::worker::REPORT_EVERY`], 100 ms, plus control's loop: a burst of
//! new flows on another core is seen at most that late). Flows expired but not yet swept
//! still count until the sweep (a few buckets per poll iteration) removes them, where
//! `-L -n`, which reads the tables, leaves them out at once. In `lt` an unknown response time (0 or
//! missing) counts as the lowest known among the candidates (1 if none is known), so a new
//! backend gets tried rather than starved or flooded.
//!
//! # Invariants
//!
//! - Only the backends listed in `live` (weight > 0) are candidates; the result is one of them,
//!   or `None` when there are none.
//! - Ties go to the first candidate in `live` order rotated to start at `start`: callers
//!   advance `start` per pick, so idle backends share new flows round-robin instead of the
//!   lowest index taking every flow of a burst that arrives before the counts move (IPVS
//!   takes the first in its list; the rotation is xlb's, and changes no cost).
//! - No allocation, no panic.

/// Which cost to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Least {
    /// `lc`: the lowest IPVS overhead, `active * 256 + inactive`.
    Connections,
    /// `wlc`: the lowest IPVS overhead per unit of weight.
    WeightedConnections,
    /// `sed`: the shortest expected delay, `(active + 1) / weight`.
    ShortestExpectedDelay,
    /// `nq`: a backend with no active connection, else as `sed`.
    NeverQueue,
    /// `lt`: lowest expected response time per unit of weight.
    Time,
}

/// The inputs a pick compares, as [`super::PickContext`] gives them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loads<'a> {
    pub weights: &'a [u32],
    pub active: &'a [u32],
    pub inactive: &'a [u32],
    pub response_time_us: &'a [u32],
}

impl Least {
    /// The cheapest backend among `live` (indices into `weights`), scanning from `start`.
    pub(super) fn pick(self, live: &[u32], start: usize, loads: &Loads<'_>) -> Option<usize> {
        let unknown_time = match self {
            Least::Time => live
                .iter()
                .filter_map(|&i| loads.response_time_us.get(i as usize))
                .filter(|&&t| t > 0)
                .min()
                .copied()
                .unwrap_or(1),
            _ => 1,
        };
        let cost = |index: usize| -> (u128, u128) {
            let active = u128::from(loads.active.get(index).copied().unwrap_or(0));
            let inactive = u128::from(loads.inactive.get(index).copied().unwrap_or(0));
            let weight = u128::from(loads.weights.get(index).copied().unwrap_or(0));
            match self {
                Least::Connections => (active * 256 + inactive, 1),
                Least::WeightedConnections => (active * 256 + inactive, weight),
                Least::ShortestExpectedDelay => (active + 1, weight),
                Least::NeverQueue if active == 0 => (0, 1),
                Least::NeverQueue => (active + 1, weight),
                Least::Time => {
                    let time = match loads.response_time_us.get(index) {
                        Some(&t) if t > 0 => t,
                        _ => unknown_time,
                    };
                    ((active + 1) * u128::from(time), weight)
                }
            }
        };
        let (tail, head) = live.split_at_checked(start).unwrap_or((&[], live));
        let mut best: Option<(usize, (u128, u128))> = None;
        for &index in head.iter().chain(tail) {
            let index = index as usize;
            let (num, den) = cost(index);
            // num / den < best_num / best_den, with den > 0 for every live backend.
            if best.is_none_or(|(_, (best_num, best_den))| num * best_den < best_num * den) {
                best = Some((index, (num, den)));
            }
        }
        best.map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(kind: Least, weights: &[u32], active: &[u32], times: &[u32], start: usize) -> usize {
        pick_with(kind, weights, active, &[], times, start)
    }

    fn pick_with(
        kind: Least,
        weights: &[u32],
        active: &[u32],
        inactive: &[u32],
        times: &[u32],
        start: usize,
    ) -> usize {
        let live: Vec<u32> =
            (0..weights.len() as u32).filter(|&i| weights[i as usize] > 0).collect();
        let loads = Loads { weights, active, inactive, response_time_us: times };
        kind.pick(&live, start, &loads).unwrap()
    }

    #[test]
    fn lc_picks_fewest_active() {
        assert_eq!(pick(Least::Connections, &[1, 1, 1], &[5, 2, 9], &[], 0), 1);
        // Weight does not matter to lc, except 0 (draining).
        assert_eq!(pick(Least::Connections, &[1, 100, 1], &[5, 6, 9], &[], 0), 0);
        assert_eq!(pick(Least::Connections, &[1, 1, 0], &[5, 6, 0], &[], 0), 0);
    }

    #[test]
    fn lc_and_wlc_count_inactive_connections_as_ipvs_does() {
        // IPVS overhead a*256+i: 1*256+0 = 256 beats 0*256+300 = 300.
        assert_eq!(pick_with(Least::Connections, &[1, 1], &[1, 0], &[0, 300], &[], 0), 0);
        // ... and 0*256+255 beats 1*256.
        assert_eq!(pick_with(Least::Connections, &[1, 1], &[1, 0], &[0, 255], &[], 0), 1);
        // wlc: (a*256+i)/w: 256/1 vs 400/2 -> index 1.
        assert_eq!(pick_with(Least::WeightedConnections, &[1, 2], &[1, 1], &[0, 144], &[], 0), 1);
        // 256/1 vs 600/2 -> index 0.
        assert_eq!(pick_with(Least::WeightedConnections, &[1, 2], &[1, 1], &[0, 344], &[], 0), 0);
    }

    #[test]
    fn time_wait_flows_weigh_as_ipvs_weighs_them() {
        // Backend 0 holds 1000 connections in TIME_WAIT (inactive), backend 1 five
        // established: IPVS's overhead is 1000 against 5 * 256 = 1280, so lc and wlc take
        // backend 0; counting every connection alike would take backend 1.
        let (active, inactive) = ([0, 5], [1000, 0]);
        assert_eq!(pick_with(Least::Connections, &[1, 1], &active, &inactive, &[], 0), 0);
        assert_eq!(pick_with(Least::WeightedConnections, &[1, 1], &active, &inactive, &[], 0), 0);
        // Backend 1 at weight 2: 1280 / 2 = 640 < 1000.
        assert_eq!(pick_with(Least::WeightedConnections, &[1, 2], &active, &inactive, &[], 0), 1);
        // sed and nq read active connections only: backend 0 is idle.
        assert_eq!(pick_with(Least::ShortestExpectedDelay, &[1, 2], &active, &inactive, &[], 0), 0);
        assert_eq!(pick_with(Least::NeverQueue, &[1, 2], &active, &inactive, &[], 0), 0);
    }

    #[test]
    fn wlc_is_ipvs_wlc_and_sed_is_what_wlc_was() {
        // wlc: a/w: 5/1, 6/4, 2/1 -> index 1.
        assert_eq!(pick(Least::WeightedConnections, &[1, 4, 1], &[5, 6, 2], &[], 0), 1);
        // Idle: IPVS's wlc ties whatever the weights (the rotation decides); sed's +1 makes
        // the heaviest win.
        assert_eq!(pick(Least::WeightedConnections, &[1, 3, 2], &[], &[], 0), 0);
        assert_eq!(pick(Least::WeightedConnections, &[1, 3, 2], &[], &[], 2), 2);
        assert_eq!(pick(Least::ShortestExpectedDelay, &[1, 3, 2], &[], &[], 0), 1);
        // sed: (a+1)/w: 6/1, 7/4, 3/1 -> index 1; wlc there: 5, 1.5, 2 -> index 1 too.
        assert_eq!(pick(Least::ShortestExpectedDelay, &[1, 4, 1], &[5, 6, 2], &[], 0), 1);
        // Where they differ: a = 1, 3 with w = 1, 4: wlc 1 vs 0.75 -> 1; sed 2 vs 1 -> 1;
        // a = 0, 1 with w = 1, 4: wlc 0 vs 0.25 -> 0; sed 1 vs 0.5 -> 1.
        assert_eq!(pick(Least::WeightedConnections, &[1, 4], &[0, 1], &[], 0), 0);
        assert_eq!(pick(Least::ShortestExpectedDelay, &[1, 4], &[0, 1], &[], 0), 1);
        // Large values do not overflow: compared in u128.
        let big = u32::MAX;
        for kind in [Least::WeightedConnections, Least::ShortestExpectedDelay, Least::NeverQueue] {
            assert_eq!(pick_with(kind, &[big, 1], &[big, 0], &[big, 0], &[], 0), 1, "{kind:?}");
        }
    }

    #[test]
    fn nq_takes_an_idle_backend_first_else_sed() {
        // An idle light backend beats a busy heavy one (sed would take the heavy: 2/100 < 1/1).
        assert_eq!(pick(Least::NeverQueue, &[100, 1], &[1, 0], &[], 0), 1);
        assert_eq!(pick(Least::ShortestExpectedDelay, &[100, 1], &[1, 0], &[], 0), 0);
        // Inactive connections do not make a backend busy.
        assert_eq!(pick_with(Least::NeverQueue, &[100, 1], &[1, 0], &[0, 9], &[], 0), 1);
        // Nothing idle: sed's (a+1)/w: 2/1, 3/4 -> index 1.
        assert_eq!(pick(Least::NeverQueue, &[1, 4], &[1, 2], &[], 0), 1);
    }

    #[test]
    fn lt_weighs_response_time_and_tries_unknown_backends() {
        // (a+1)*t/w: 1*100/1, 3*20/1, 1*50/1 -> index 2.
        assert_eq!(pick(Least::Time, &[1, 1, 1], &[0, 2, 0], &[100, 20, 50], 0), 2);
        // Unknown time counts as the lowest known (20): 1*20 < 3*20.
        assert_eq!(pick(Least::Time, &[1, 1, 1], &[0, 2, 0], &[100, 20, 0], 0), 2);
        // Nothing known: every time counts as 1, so it is wlc.
        assert_eq!(pick(Least::Time, &[1, 1, 1], &[1, 1, 0], &[], 0), 2);
        assert_eq!(pick(Least::Time, &[1, 3, 1], &[1, 1, 0], &[], 0), 1);
        // A draining backend's fast time is not a candidate for the unknown-time floor.
        assert_eq!(pick(Least::Time, &[0, 1, 1], &[0, 0, 0], &[1, 0, 10], 0), 1);
    }

    #[test]
    fn ties_rotate_with_start() {
        for kind in [
            Least::Connections,
            Least::WeightedConnections,
            Least::ShortestExpectedDelay,
            Least::NeverQueue,
            Least::Time,
        ] {
            let picks: Vec<usize> =
                (0..5).map(|start| pick(kind, &[1, 0, 1, 1], &[], &[], start % 3)).collect();
            assert_eq!(picks, vec![0, 2, 3, 0, 2], "{kind:?}");
        }
    }

    #[test]
    fn nothing_live_is_none_and_start_out_of_range_is_harmless() {
        let loads = Loads { weights: &[0, 0], active: &[], inactive: &[], response_time_us: &[] };
        assert_eq!(Least::Connections.pick(&[], 0, &loads), None);
        let loads = Loads { weights: &[1, 1], ..loads };
        assert_eq!(Least::Connections.pick(&[0, 1], 7, &loads), Some(0));
    }
}
