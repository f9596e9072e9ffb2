//! Sequoia DP, heap and planner tests: brute force on small trees, the plain recurrence bit for
//! bit, and the heap against the DP.

use super::bands::solve;
use super::*;
use proptest::prelude::*;

/// The start of the acceptance vector the Sequoia paper measured (rounded): sorted-ish, with a
/// bump at rank 9, as real draft models give. The Python package ships the full vector.
const SEQUOIA_PREFIX: [f64; 12] = [
    0.634, 0.108, 0.057, 0.0225, 0.0195, 0.015, 0.0045, 0.003, 0.012, 0.0045, 0.0075, 0.0045,
];

/// Best value over every recursive tree (all parent arrays with parents[i] < i).
fn brute_force(p: &[f64], n: usize, d: usize) -> f64 {
    fn rec(p: &[f64], d: usize, parents: &mut Vec<i32>, n: usize, best: &mut f64) {
        if parents.len() == n {
            let depth = crate::speculative::tree::depths(parents).unwrap();
            let ranks = crate::speculative::tree::ranks(parents).unwrap();
            if depth.iter().any(|&x| x as usize > d) || ranks.iter().any(|&r| r as usize >= p.len())
            {
                return;
            }
            let v = tree_value(p, parents).unwrap();
            if v > *best {
                *best = v;
            }
            return;
        }
        for q in 0..parents.len() {
            parents.push(q as i32);
            rec(p, d, parents, n, best);
            parents.pop();
        }
    }
    let mut best = f64::NEG_INFINITY;
    rec(p, d, &mut vec![-1], n, &mut best);
    best
}

fn close(a: f64, b: f64) -> bool {
    (a == b) || (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn rejects_bad_acceptance_vectors_and_sizes() {
    assert!(sequoia_dp(&[], 4, 2).is_err());
    assert!(sequoia_dp(&[-0.1, 0.2], 4, 2)
        .unwrap_err()
        .to_string()
        .contains("non-negative"));
    assert!(sequoia_dp(&[0.7, 0.6], 4, 2)
        .unwrap_err()
        .to_string()
        .contains("at most 1"));
    assert!(sequoia_dp(&[f64::NAN], 4, 2)
        .unwrap_err()
        .to_string()
        .contains("finite"));
    assert!(sequoia_dp(&[0.5], 0, 2).is_err());
    let t = sequoia_dp(&[0.5, 0.2], 8, 2).unwrap();
    assert!(t.value(9, 1).is_err());
    assert!(t.value(3, 3).is_err());
    assert!(t
        .tree(8, 1)
        .unwrap_err()
        .to_string()
        .contains("at most 3 nodes"));
    assert!(sequoia_heap(&[0.2, 0.5], 4, 2).is_err());
}

#[test]
fn zero_entries_in_p_match_brute_force() {
    let p = [0.5, 0.0, 0.3, 0.0];
    let t = sequoia_dp(&p, 7, 3).unwrap();
    for n in 1..=7 {
        for d in 0..=3 {
            let brute = brute_force(&p, n, d);
            assert!(close(t.value(n, d).unwrap(), brute), "n {n} d {d}");
        }
    }
}

#[test]
fn chain_and_star_values() {
    let t = sequoia_dp(&[0.5], 5, 4).unwrap();
    // a chain: 1 + .5 + .25 + .125 + .0625
    assert!(close(t.value(5, 4).unwrap(), 1.9375));
    assert_eq!(t.value(5, 3).unwrap(), f64::NEG_INFINITY);
    let t = sequoia_dp(&[0.5, 0.3, 0.1], 4, 1).unwrap();
    assert!(close(t.value(4, 1).unwrap(), 1.9));
    let tree = t.tree(4, 1).unwrap();
    assert_eq!(tree.parents, vec![-1, 0, 0, 0]);
    assert_eq!(tree.rank, vec![0, 0, 1, 2]);
}

#[test]
fn dp_trees_achieve_their_values_on_the_sequoia_vector() {
    let p = SEQUOIA_PREFIX[..9].to_vec();
    let t = sequoia_dp(&p, 200, 8).unwrap();
    for &(n, d) in &[(1, 0), (7, 3), (64, 6), (200, 8), (80, 2)] {
        let tree = t.tree(n, d).unwrap();
        assert_eq!(tree.parents.len(), n);
        assert!(tree.depth.iter().all(|&x| x as usize <= d));
        assert_eq!(
            crate::speculative::tree::ranks(&tree.parents).unwrap(),
            tree.rank
        );
        assert!(close(
            tree_value(&p, &tree.parents).unwrap(),
            t.value(n, d).unwrap()
        ));
    }
    // more nodes or depth never hurt
    for n in 2..=200 {
        assert!(t.value(n, 8).unwrap() >= t.value(n - 1, 8).unwrap());
        assert!(t.value(n, 8).unwrap() >= t.value(n, 7).unwrap());
    }
}

#[test]
fn plan_prefers_cheap_verification() {
    let t = sequoia_dp(&[0.8, 0.1], 64, 6).unwrap();
    let sizes = [1, 8, 64];
    let pl = plan(&t, &sizes, &[1.0, 1.0, 1.0], 0.01, None).unwrap();
    assert_eq!(pl.n, 64);
    assert!(close(pl.speedup, 1.0 / pl.s_per_token));
    let pl = plan(&t, &sizes, &[1.0, 1.0, 100.0], 0.01, None).unwrap();
    assert_eq!(pl.n, 8);
    assert!(plan(&t, &[65], &[1.0], 0.0, None).is_err());
    assert!(plan(&t, &[8], &[-1.0], 0.0, None).is_err());
}

#[test]
fn acceptance_estimate_counts_ranks() {
    let p = acceptance_from_ranks(&[0, 0, 1, -1], 3).unwrap();
    assert_eq!(p, vec![0.5, 0.25, 0.0]);
    assert!(acceptance_from_ranks(&[3], 3).is_err());
    assert!(acceptance_from_ranks(&[], 3).is_err());
}

/// The recurrence with a full scan over every split and no pruning, window or bands.
fn plain_dp(p: &[f64], n: usize, d: usize) -> Vec<f64> {
    let w = p.len();
    let idx = |m: usize, l: usize, b: usize| (l * (w + 1) + b) * (n + 1) + m;
    let mut t = vec![f64::NEG_INFINITY; (d + 1) * (w + 1) * (n + 1)];
    let mut f = vec![f64::NEG_INFINITY; (d + 1) * (n + 1)];
    for l in 0..=d {
        t[idx(1, l, 0)] = 1.0;
    }
    f[1] = 1.0;
    for l in 1..=d {
        for b in 1..=w {
            for m in 2..=n {
                let mut best = f64::NEG_INFINITY;
                for y in 1..m {
                    let (a, fl) = (t[idx(y, l, b - 1)], f[(l - 1) * (n + 1) + m - y]);
                    if a > f64::NEG_INFINITY && fl > f64::NEG_INFINITY {
                        best = best.max(a + p[b - 1] * fl);
                    }
                }
                t[idx(m, l, b)] = best;
            }
        }
        for m in 0..=n {
            f[l * (n + 1) + m] = (0..=w)
                .map(|b| t[idx(m, l, b)])
                .fold(f[l * (n + 1) + m], f64::max);
        }
    }
    f
}

#[test]
fn bands_and_pruning_reproduce_the_plain_recurrence_bit_for_bit() {
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut uniform = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    for case in 0..6 {
        let p: Vec<f64> = if case == 0 {
            SEQUOIA_PREFIX.to_vec()
        } else {
            // Unsorted, with exact zeros (the p_b = 0 path) and a sum below 1.
            let raw: Vec<f64> = (0..3 + 2 * case)
                .map(|i| if i % 4 == 3 { 0.0 } else { uniform().powi(3) })
                .collect();
            let s = raw.iter().sum::<f64>() * (1.0 + uniform());
            raw.iter().map(|x| x / s).collect()
        };
        let (n, d) = (150 + 37 * case, 2 + case);
        let plain = plain_dp(&p, n, d);
        let cap = |w: usize| {
            let mut c = vec![1usize; d + 1];
            for l in 1..=d {
                c[l] = (1 + w.saturating_mul(c[l - 1])).min(n);
            }
            c
        };
        for bands in [1, 2, 3, 7] {
            let table = solve(&p, n, d, cap(p.len()), bands, &crate::Cancel::never()).unwrap();
            assert_eq!(table.f, plain, "case {case}, {bands} bands");
        }
    }
}

#[test]
fn work_beyond_the_limit_is_refused_and_the_limit_can_be_raised() {
    use super::{dp_work, sequoia_dp_bounded, DEFAULT_MAX_WORK};
    let e = sequoia_dp(&[0.6, 0.2], 65536, 600).unwrap_err();
    assert!(e.to_string().contains("`max_work`"), "{e}");
    let p = [0.6, 0.2];
    let work = dp_work(2, 64, 8);
    assert_eq!(work, 64 * 64 * 8 * 2);
    assert!(sequoia_dp_bounded(&p, 64, 8, work - 1, &crate::Cancel::never()).is_err());
    let t = sequoia_dp_bounded(&p, 64, 8, work, &crate::Cancel::never()).unwrap();
    assert_eq!(t.values(), sequoia_dp(&p, 64, 8).unwrap().values());
    assert!(DEFAULT_MAX_WORK >= dp_work(2, 8192, 600));
}

#[test]
fn a_cancelled_dp_stops_with_interrupted() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let polls = AtomicUsize::new(0);
    // Stop at the second poll: the solve is well under way by then.
    let poll = || polls.fetch_add(1, Ordering::Relaxed) >= 1;
    let cancel = crate::Cancel::new(&poll, "solving the Sequoia DP");
    let start = std::time::Instant::now();
    let e = super::sequoia_dp_bounded(&[0.6, 0.2], 8192, 600, u64::MAX, &cancel).unwrap_err();
    assert_eq!(e, Error::Interrupted("solving the Sequoia DP".into()));
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
}

proptest! {
    #[test]
    fn dp_equals_brute_force_for_small_trees(
        raw in prop::collection::vec(0.0f64..1.0, 1..4),
        n in 1usize..7,
        d in 0usize..4,
    ) {
        let s: f64 = raw.iter().sum::<f64>() + 0.1;
        let p: Vec<f64> = raw.iter().map(|x| x / s).collect();
        let t = sequoia_dp(&p, 7, 4).unwrap();
        let brute = brute_force(&p, n, d);
        prop_assert!(close(t.value(n, d).unwrap(), brute), "dp {} brute {}", t.value(n, d).unwrap(), brute);
        if brute > f64::NEG_INFINITY {
            let tree = t.tree(n, d).unwrap();
            prop_assert!(close(tree_value(&p, &tree.parents).unwrap(), brute));
        }
    }

    #[test]
    fn heap_equals_dp_for_sorted_p(
        raw in prop::collection::vec(0.0f64..1.0, 1..6),
        n in 1usize..120,
        d in 0usize..7,
    ) {
        let mut p: Vec<f64> = raw.clone();
        p.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let s: f64 = p.iter().sum::<f64>() + 0.05;
        let p: Vec<f64> = p.iter().map(|x| x / s).collect();
        let t = sequoia_dp(&p, 120, 6).unwrap();
        let d = d.min(6);
        let (tree, values) = sequoia_heap(&p, n, d).unwrap();
        for m in 1..=n {
            prop_assert!(close(values[m - 1], t.value(m, d).unwrap()), "m {} heap {} dp {}", m, values[m - 1], t.value(m, d).unwrap());
        }
        if values[n - 1] > f64::NEG_INFINITY {
            crate::speculative::tree::validate_parents(&tree.parents).unwrap();
            prop_assert_eq!(crate::speculative::tree::ranks(&tree.parents).unwrap(), tree.rank.clone());
            prop_assert!(close(tree_value(&p, &tree.parents).unwrap(), values[n - 1]));
        }
    }
}
