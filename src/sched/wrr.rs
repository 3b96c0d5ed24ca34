//! Smooth weighted round-robin, nginx's algorithm (`ngx_http_upstream_get_peer`, 2012).
//!
//! Each backend keeps a current weight. On every pick each backend with weight > 0 adds its
//! weight to its current weight, the one with the highest current weight wins (ties to the lowest
//! index) and the winner gives back the total weight `W`. Unlike IPVS's `wrr` it interleaves:
//! weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`.
//!
//! # Invariants
//!
//! - The current weights sum to 0 between picks, and a backend's is always above `-W`; so after
//!   `k` picks from all-zero current weights a backend of weight `w` has been picked at most
//!   `ceil(k * w / W)` times, and after `W` picks exactly `w` times (the current weights are all
//!   zero again: the sequence is periodic).
//! - Scaling every weight by the same factor leaves the sequence unchanged, so the period is
//!   `W / gcd(weights)`.
//!
//! Stepping costs `O(N)` per pick. When the period is at most [`CYCLE_MAX`] picks, control
//! precomputes one period and a pick is a cursor step: `O(1)`, and the per-core state is one
//! index. Longer periods step per-core current weights on the hot path.

/// The longest period precomputed (256 KiB of indices).
pub const CYCLE_MAX: u64 = 1 << 16;

/// One nginx step over the backends listed in `live` (indices into `weights` and `current`).
/// Returns the chosen index; `None` when `live` is empty or the slices are short.
pub(super) fn step(weights: &[u32], live: &[u32], current: &mut [i64]) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<(usize, i64)> = None;
    for &index in live {
        let index = index as usize;
        let (Some(&weight), Some(slot)) = (weights.get(index), current.get_mut(index)) else {
            continue;
        };
        *slot += i64::from(weight);
        total += i64::from(weight);
        if best.is_none_or(|(_, value)| *slot > value) {
            best = Some((index, *slot));
        }
    }
    let (index, _) = best?;
    if let Some(slot) = current.get_mut(index) {
        *slot -= total;
    }
    Some(index)
}

/// One period of the smooth WRR sequence, if it is at most [`CYCLE_MAX`] picks; else empty.
/// Built by control.
pub(super) fn cycle(weights: &[u32], live: &[u32]) -> Box<[u32]> {
    let divisor =
        live.iter().filter_map(|&i| weights.get(i as usize)).fold(0u32, |g, &w| gcd(g, w));
    if divisor == 0 {
        return Box::new([]);
    }
    let reduced: Vec<u32> = weights.iter().map(|&w| w / divisor).collect();
    let period: u64 =
        live.iter().filter_map(|&i| reduced.get(i as usize)).map(|&w| u64::from(w)).sum();
    if period > CYCLE_MAX {
        return Box::new([]);
    }
    let mut current = vec![0i64; weights.len()];
    (0..period)
        .filter_map(|_| step(&reduced, live, &mut current))
        .map(|index| index as u32)
        .collect()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live_of(weights: &[u32]) -> Vec<u32> {
        (0..weights.len() as u32).filter(|&i| weights[i as usize] > 0).collect()
    }

    fn stepped(weights: &[u32], picks: usize) -> Vec<usize> {
        let live = live_of(weights);
        let mut current = vec![0i64; weights.len()];
        (0..picks).map(|_| step(weights, &live, &mut current).unwrap()).collect()
    }

    #[test]
    fn interleaves_like_nginx() {
        // The example in nginx's commit message.
        assert_eq!(stepped(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn cycle_is_reduced_by_the_gcd() {
        let weights = [500, 100, 100, 0];
        let cycle = cycle(&weights, &live_of(&weights));
        assert_eq!(&cycle[..], &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn long_periods_are_not_precomputed() {
        let weights = [u32::MAX, 1];
        assert!(cycle(&weights, &live_of(&weights)).is_empty());
        assert!(cycle(&[0, 0], &[]).is_empty());
    }

    #[test]
    fn short_state_is_skipped_not_indexed() {
        let weights = [1, 1, 1];
        let mut current = vec![0i64; 1];
        assert_eq!(step(&weights, &live_of(&weights), &mut current), Some(0));
        assert_eq!(step(&weights, &[], &mut current), None);
    }

    proptest! {
        #[test]
        fn cycle_equals_stepping(weights in prop::collection::vec(0u32..=40, 1..12)) {
            let live = live_of(&weights);
            let cycle = cycle(&weights, &live);
            prop_assume!(!live.is_empty());
            let picks = stepped(&weights, 2 * cycle.len());
            for (k, &pick) in picks.iter().enumerate() {
                prop_assert_eq!(pick, cycle[k % cycle.len()] as usize);
            }
        }

        #[test]
        fn exact_after_total_and_smooth_in_every_prefix(
            weights in prop::collection::vec(0u32..=30, 1..12),
        ) {
            let total: u32 = weights.iter().sum();
            prop_assume!(total > 0);
            let picks = stepped(&weights, total as usize);
            let mut counts = vec![0u64; weights.len()];
            for (k, &pick) in picks.iter().enumerate() {
                counts[pick] += 1;
                let k = k as u64 + 1;
                for (&count, &weight) in counts.iter().zip(&weights) {
                    let bound = (k * u64::from(weight)).div_ceil(u64::from(total));
                    prop_assert!(count <= bound, "prefix {}: {} > {}", k, count, bound);
                }
            }
            let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
            prop_assert_eq!(counts, expected);
        }
    }
}
