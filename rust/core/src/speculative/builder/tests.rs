//! Builder tests: hand-checked growth, a reference top-`budget` model, radix selection and the
//! batch builder.

use super::keys::{key, kth_largest};
use super::*;
use proptest::prelude::*;

fn cfg(budget: usize) -> BuilderConfig {
    BuilderConfig {
        budget,
        max_depth: 16,
        max_width: 8,
        log_decay: 0.0,
        min_logprob: f32::NEG_INFINITY,
    }
}

#[test]
fn bad_config_and_inputs_are_rejected() {
    assert!(TreeBuilder::new(0, cfg(0)).is_err());
    let mut c = cfg(4);
    c.log_decay = 0.5;
    assert!(TreeBuilder::new(0, c)
        .unwrap_err()
        .to_string()
        .contains("log_decay"));
    let mut b = TreeBuilder::new(1, cfg(4)).unwrap();
    assert!(b.expand(&[3], &[1, 2], &[-0.1, -0.2], 2).is_err());
    let e = b.expand(&[0], &[1, 2], &[f32::NAN, -0.2], 2).unwrap_err();
    assert!(e.to_string().contains("child_logprobs"));
    assert!(b.expand(&[0], &[1, 2], &[0.5, -0.2], 2).is_err());
    assert!(b.expand(&[0], &[1, 1], &[-0.1, -0.2], 2).is_err());
    assert!(b.expand(&[0, 0], &[1, 2], &[-0.1, -0.2], 1).is_err());
    assert_eq!(b.size(), 1);
    b.expand(&[0], &[1, 2], &[-0.1, -0.2], 2).unwrap();
    assert!(b
        .expand(&[0], &[3], &[-0.1], 1)
        .unwrap_err()
        .to_string()
        .contains("already"));
}

#[test]
fn small_growth_keeps_best_and_renumbers() {
    let mut b = TreeBuilder::new(7, cfg(4)).unwrap();
    assert_eq!(b.frontier(4), vec![0]);
    let ids = b
        .expand(&[0], &[10, 11, 12], &[-2.0, -0.1, f32::NEG_INFINITY], 3)
        .unwrap();
    // ids in column order; token 11 (-0.1) still ranks first
    assert_eq!(ids, vec![1, 2, -1]);
    assert_eq!(b.frontier(4), vec![2, 1]);
    let ids = b
        .expand(&[2, 1], &[20, 21, 30, 31], &[-0.5, -3.0, -0.1, -0.2], 2)
        .unwrap();
    // scores: 20 -> -0.6, 21 -> -3.1, 30 -> -2.1, 31 -> -2.2; budget 4 keeps root, 11, 20, 10
    assert_eq!(ids, vec![3, -1, -1, -1]);
    assert_eq!(b.size(), 4);
    let (t, map) = b.finalize();
    assert_eq!(t.parents, vec![-1, 0, 0, 1]);
    assert_eq!(t.tokens, vec![7, 11, 10, 20]);
    assert_eq!(t.rank, vec![0, 0, 1, 0]);
    assert_eq!(t.depth, vec![0, 1, 1, 2]);
    assert_eq!(map, vec![0, 2, 1, 3]);
    // only node 3's children could beat the worst kept score (-2.0)
    assert_eq!(b.frontier(8), vec![3]);
}

#[test]
fn min_logprob_and_depth_stop_growth() {
    let mut c = cfg(100);
    c.min_logprob = -1.0;
    c.max_depth = 2;
    let mut b = TreeBuilder::new(0, c).unwrap();
    b.expand(&[0], &[1, 2], &[-0.5, -1.5], 2).unwrap();
    assert_eq!(b.size(), 2);
    b.expand(&[1], &[3], &[-0.4], 1).unwrap();
    assert_eq!(b.size(), 3);
    assert!(b.done());
}

/// Reference: after each expansion the kept set is the top-`budget` of the previous kept
/// set and the new candidates (per-row `max_width` best, above `min_logprob`).
struct Reference {
    c: BuilderConfig,
    /// (score, alive, depth)
    nodes: Vec<(f32, bool, u16)>,
    expanded: Vec<bool>,
}

impl Reference {
    fn new(c: BuilderConfig) -> Self {
        Reference {
            c,
            nodes: vec![(0.0, true, 0)],
            expanded: vec![false],
        }
    }

    /// Returns, per flat candidate index, the reference node it became.
    fn step(&mut self, parents: &[usize], lps: &[f32], w: usize) -> Vec<Option<usize>> {
        let c = self.c;
        let mut made = vec![None; lps.len()];
        let mut cands: Vec<(f32, u16, usize)> = Vec::new();
        for (r, &p) in parents.iter().enumerate() {
            self.expanded[p] = true;
            let (ps, alive, d) = self.nodes[p];
            if !alive || d as usize >= c.max_depth {
                continue;
            }
            let mut row: Vec<(f32, usize)> = (0..w).map(|k| (lps[r * w + k], r * w + k)).collect();
            row.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
            for &(lp, flat) in row.iter().take(c.max_width) {
                let s = ps + c.log_decay + lp;
                if s >= c.min_logprob {
                    cands.push((s, d + 1, flat));
                }
            }
        }
        let mut all: Vec<(f32, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.1)
            .map(|(i, n)| (n.0, i))
            .collect();
        for &(s, d, flat) in &cands {
            made[flat] = Some(self.nodes.len());
            all.push((s, self.nodes.len()));
            self.nodes.push((s, false, d));
            self.expanded.push(false);
        }
        all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        for n in self.nodes.iter_mut() {
            n.1 = false;
        }
        for &(_, i) in all.iter().take(c.budget) {
            self.nodes[i].1 = true;
        }
        made
    }

    fn scores(&self) -> Vec<f32> {
        let mut s: Vec<f32> = self.nodes.iter().filter(|n| n.1).map(|n| n.0).collect();
        s.sort_by(|a, b| b.partial_cmp(a).unwrap());
        s
    }
}

proptest! {
    #[test]
    fn kth_largest_equals_sorting(
        scores in prop::collection::vec(-40.0f32..0.0, 1..3000),
        split in 0usize..3000,
        ties in 0usize..4,
        kq in 0.0f64..1.0,
    ) {
        // Clustered float scores with repeats (`ties` rounds them), as one step makes.
        let keys: Vec<u64> = scores
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let x = if ties > 0 { (x * ties as f32).round() / ties as f32 } else { x };
                key(x, (i % 97) as u32)
            })
            .collect();
        let split = split.min(keys.len());
        let k = ((keys.len() - 1) as f64 * kq) as usize;
        let mut sorted = keys.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let got = kth_largest(keys[..split].iter().copied(), keys[split..].iter().copied(), k);
        prop_assert_eq!(got, sorted[k]);
    }

    #[test]
    fn finalize_is_an_ancestor_closed_tree_of_the_best_scores(
        budget in 1usize..40,
        max_width in 1usize..5,
        decay in prop::sample::select(vec![0.0f32, -0.25]),
        min_lp in prop::sample::select(vec![f32::NEG_INFINITY, -3.0]),
        rounds in prop::collection::vec((1usize..6, prop::collection::vec(0u32..1000, 24)), 1..8),
    ) {
        let w = 4usize;
        let c = BuilderConfig { budget, max_depth: 5, max_width, log_decay: decay, min_logprob: min_lp };
        let mut b = TreeBuilder::new(0, c).unwrap();
        let mut reference = Reference::new(c);
        let mut ref_of = vec![0usize];
        for (k, raw) in rounds {
            let front = b.frontier(k);
            if front.is_empty() { break; }
            let m = front.len();
            // distinct logprobs per row avoid ties whose order the reference cannot see
            let lps: Vec<f32> = (0..m * w).map(|i| -((raw[i % 24] as f32) / 250.0) - (i as f32) * 1e-3).collect();
            let toks: Vec<i32> = (0..m * w).map(|i| (i % w) as i32).collect();
            let ids = b.expand(&front, &toks, &lps, w).unwrap();
            prop_assert_eq!(ids.len(), m * w);
            let parents_ref: Vec<usize> = front.iter().map(|&x| ref_of[x as usize]).collect();
            let made = reference.step(&parents_ref, &lps, w);
            let mut new_ids: Vec<(i32, usize)> =
                ids.iter().enumerate().filter(|(_, &id)| id >= 0).map(|(f, &id)| (id, f)).collect();
            new_ids.sort_unstable();
            for (id, flat) in new_ids {
                prop_assert_eq!(id as usize, ref_of.len());
                let Some(r) = made[flat] else { panic!("builder kept a non-candidate") };
                ref_of.push(r);
            }
        }
        let (t, map) = b.finalize();
        let n = t.parents.len();
        prop_assert_eq!(n, b.size());
        prop_assert!(n <= budget);
        crate::speculative::tree::validate_parents(&t.parents).unwrap();
        prop_assert_eq!(crate::speculative::tree::depths(&t.parents).unwrap(), t.depth.clone());
        prop_assert_eq!(crate::speculative::tree::ranks(&t.parents).unwrap(), t.rank.clone());
        for i in 1..n {
            prop_assert!(t.score[i] <= t.score[t.parents[i] as usize]);
            prop_assert!(t.depth[i] as usize <= 5);
        }
        let mut kept: Vec<i32> = map.iter().copied().filter(|&v| v >= 0).collect();
        kept.sort_unstable();
        prop_assert_eq!(kept, (0..n as i32).collect::<Vec<_>>());
        let mut got = t.score.clone();
        got.sort_by(|a, b| b.partial_cmp(a).unwrap());
        prop_assert_eq!(got, reference.scores());
    }
}

#[test]
fn batch_builder_matches_independent_builders() {
    let c = cfg(6);
    let mut batch = BatchTreeBuilder::new(&[1, 2], c).unwrap();
    let mut a = TreeBuilder::new(1, c).unwrap();
    let mut b = TreeBuilder::new(2, c).unwrap();
    let (tids, nids) = batch.frontier(2);
    assert_eq!((tids.clone(), nids.clone()), (vec![0, 1], vec![0, 0]));
    let toks = [5, 6, 7, 8];
    let lps = [-0.1, -0.2, -0.3, -0.05];
    let out = batch.expand(&tids, &nids, &toks, &lps, 2).unwrap();
    let ra = a.expand(&[0], &toks[..2], &lps[..2], 2).unwrap();
    let rb = b.expand(&[0], &toks[2..], &lps[2..], 2).unwrap();
    assert_eq!(out, [ra, rb].concat());
    let f = batch.finalize();
    assert_eq!(f[0], a.finalize());
    assert_eq!(f[1], b.finalize());
    assert!(batch.expand(&[2], &[0], &[1], &[-0.1], 1).is_err());
}
