//! SpecExec best-first tree growth under a node budget.
//!
//! Every node has a score: the root 0, a child `score(parent) + log_decay + logprob`. With
//! `logprob <= 0` and `log_decay <= 0`, scores never rise along a path, and ties are broken by
//! insertion order (older first), so a child always ranks strictly below its parent. The
//! running top-`budget` set is therefore always closed under ancestors: evicting its worst
//! member never orphans a kept node. Two heaps make each step `O(c log n)` for `c` inserted
//! candidates: a min-heap of kept nodes (the eviction candidate on top) and a max-heap of
//! unexpanded nodes (the frontier, with lazy deletion).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::{Error, Result};

/// Log-probabilities above this are rejected; values in `(0, LOGPROB_SLACK]` are taken as 0
/// (rounding in a log-softmax can leave them slightly positive).
pub const LOGPROB_SLACK: f32 = 1e-4;

/// Growth limits of a [`TreeBuilder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuilderConfig {
    /// Most nodes in the tree, root included (at least 1).
    pub budget: usize,
    /// Deepest allowed node (root = depth 0).
    pub max_depth: usize,
    /// Most children kept per node (the best `max_width` of each expanded row).
    pub max_width: usize,
    /// Added to a child's score per level (<= 0); favours shallow trees when negative.
    pub log_decay: f32,
    /// Nodes whose score falls below this are never kept (early stop); `-inf` disables it.
    pub min_logprob: f32,
}

impl BuilderConfig {
    /// Checks the limits.
    pub fn validate(&self) -> Result<()> {
        if self.budget == 0 || self.budget > (i32::MAX as usize) {
            return Err(Error::value("budget", "in [1, 2^31)", self.budget));
        }
        if self.max_depth > u16::MAX as usize {
            return Err(Error::value("max_depth", "at most 65535", self.max_depth));
        }
        if self.max_width == 0 {
            return Err(Error::value("max_width", "at least 1", self.max_width));
        }
        if self.log_decay.is_nan() || self.log_decay > 0.0 || self.log_decay.is_infinite() {
            return Err(Error::value(
                "log_decay",
                "a finite value <= 0 (scores must not rise along a path)",
                self.log_decay,
            ));
        }
        if self.min_logprob.is_nan() || self.min_logprob > 0.0 {
            return Err(Error::value(
                "min_logprob",
                "<= 0 or -inf",
                self.min_logprob,
            ));
        }
        Ok(())
    }
}

/// Maps a finite or infinite f32 to a u32 with the same order.
#[inline]
fn order_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Heap key: higher is better (score first, then the older id).
#[inline]
fn key(score: f32, id: u32) -> u64 {
    ((order_bits(score) as u64) << 32) | (u32::MAX - id) as u64
}

#[inline]
fn key_id(k: u64) -> usize {
    (u32::MAX - (k & 0xffff_ffff) as u32) as usize
}

/// A finalized tree: the spec format plus each node's score.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalTree {
    /// `parents[0] = -1`, `parents[i] < i`.
    pub parents: Vec<i32>,
    /// Token of every node (the root's is the builder's root token).
    pub tokens: Vec<i32>,
    /// Depth of every node.
    pub depth: Vec<i32>,
    /// Rank among siblings (0 = highest draft log-prob).
    pub rank: Vec<i32>,
    /// Score of every node (cumulative draft log-prob plus decay).
    pub score: Vec<f32>,
}

/// SpecExec best-first tree growth: see the module documentation.
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    cfg: BuilderConfig,
    parent: Vec<i32>,
    token: Vec<i32>,
    score: Vec<f32>,
    depth: Vec<u16>,
    alive: Vec<bool>,
    expanded: Vec<bool>,
    first_child: Vec<i32>,
    last_child: Vec<i32>,
    next_sibling: Vec<i32>,
    kept: usize,
    worst: BinaryHeap<Reverse<u64>>,
    open: BinaryHeap<u64>,
}

impl TreeBuilder {
    /// A builder holding only the root (`root_token`, score 0).
    pub fn new(root_token: i32, cfg: BuilderConfig) -> Result<Self> {
        cfg.validate()?;
        if root_token < 0 {
            return Err(Error::value("root_token", "a token id >= 0", root_token));
        }
        let mut b = TreeBuilder {
            cfg,
            parent: Vec::with_capacity(cfg.budget * 2),
            token: Vec::with_capacity(cfg.budget * 2),
            score: Vec::with_capacity(cfg.budget * 2),
            depth: Vec::with_capacity(cfg.budget * 2),
            alive: Vec::with_capacity(cfg.budget * 2),
            expanded: Vec::with_capacity(cfg.budget * 2),
            first_child: Vec::with_capacity(cfg.budget * 2),
            last_child: Vec::with_capacity(cfg.budget * 2),
            next_sibling: Vec::with_capacity(cfg.budget * 2),
            kept: 0,
            worst: BinaryHeap::with_capacity(cfg.budget + 1),
            open: BinaryHeap::with_capacity(cfg.budget + 1),
        };
        b.insert(-1, root_token, 0.0, 0);
        Ok(b)
    }

    /// The limits this builder was made with.
    pub fn config(&self) -> BuilderConfig {
        self.cfg
    }

    /// Nodes currently in the tree (root included).
    pub fn size(&self) -> usize {
        self.kept
    }

    /// Nodes ever inserted (the length of the old-to-new map).
    pub fn num_inserted(&self) -> usize {
        self.parent.len()
    }

    /// Score of node `id` (old id), whether or not it is still kept.
    pub fn score(&self, id: usize) -> Option<f32> {
        self.score.get(id).copied()
    }

    fn insert(&mut self, parent: i32, token: i32, score: f32, depth: u16) -> i32 {
        let id = self.parent.len() as u32;
        self.parent.push(parent);
        self.token.push(token);
        self.score.push(score);
        self.depth.push(depth);
        self.alive.push(true);
        self.expanded.push(false);
        self.first_child.push(-1);
        self.last_child.push(-1);
        self.next_sibling.push(-1);
        if parent >= 0 {
            let p = parent as usize;
            let last = self.last_child[p];
            if last < 0 {
                self.first_child[p] = id as i32;
            } else {
                self.next_sibling[last as usize] = id as i32;
            }
            self.last_child[p] = id as i32;
        }
        self.kept += 1;
        let k = key(score, id);
        self.worst.push(Reverse(k));
        if (depth as usize) < self.cfg.max_depth {
            self.open.push(k);
        }
        id as i32
    }

    /// Score bits a newcomer must exceed to enter, or `None` while there is room.
    fn entry_bar(&self) -> Option<u32> {
        if self.kept < self.cfg.budget {
            None
        } else {
            self.worst.peek().map(|Reverse(k)| (k >> 32) as u32)
        }
    }

    fn could_grow(&self, score: f32) -> bool {
        let best_child = score + self.cfg.log_decay;
        if best_child < self.cfg.min_logprob {
            return false;
        }
        match self.entry_bar() {
            None => true,
            Some(bar) => order_bits(best_child) > bar,
        }
    }

    /// Up to `k` best unexpanded nodes (old ids, best first) whose children could still enter
    /// the tree: depth below `max_depth`, not below `min_logprob`, and better than the current
    /// worst node once the budget is full. Empty when growth is over.
    pub fn frontier(&mut self, k: usize) -> Vec<i32> {
        let mut out = Vec::with_capacity(k.min(self.open.len()));
        let mut keep = Vec::with_capacity(k.min(self.open.len()));
        while out.len() < k {
            let Some(top) = self.open.pop() else { break };
            let id = key_id(top);
            if !self.alive[id] || self.expanded[id] {
                continue;
            }
            keep.push(top);
            if !self.could_grow(self.score[id]) {
                break;
            }
            out.push(id as i32);
        }
        self.open.extend(keep);
        out
    }

    /// Whether [`TreeBuilder::frontier`] is empty.
    pub fn done(&mut self) -> bool {
        self.frontier(1).is_empty()
    }

    /// Checks an `expand` call without changing anything.
    pub fn validate_expand(
        &self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<()> {
        let m = parent_ids.len();
        crate::error::check_len("child_tokens", child_tokens.len(), m * width)?;
        crate::error::check_len("child_logprobs", child_logprobs.len(), m * width)?;
        let n = self.parent.len();
        let mut seen: Vec<i32> = parent_ids.to_vec();
        for (r, &p) in parent_ids.iter().enumerate() {
            if p < 0 || p as usize >= n {
                return Err(Error::value(
                    "parent_ids",
                    format!("node ids in [0, {n})"),
                    format!("parent_ids[{r}] = {p}"),
                ));
            }
            if self.expanded[p as usize] {
                return Err(Error::value(
                    "parent_ids",
                    "nodes not expanded before",
                    format!("parent_ids[{r}] = {p}, already expanded"),
                ));
            }
        }
        seen.sort_unstable();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::value(
                "parent_ids",
                "distinct node ids",
                format!("{} twice", w[0]),
            ));
        }
        if let Some(i) = child_tokens.iter().position(|&t| t < 0) {
            return Err(Error::value(
                "child_tokens",
                "token ids >= 0",
                format!("{} at flat index {i}", child_tokens[i]),
            ));
        }
        if let Some(i) = child_logprobs
            .iter()
            .position(|&x| x.is_nan() || x > LOGPROB_SLACK)
        {
            return Err(Error::value(
                "child_logprobs",
                "log-probabilities (<= 0, not NaN; -inf = probability 0)",
                format!("{} at flat index {i}", child_logprobs[i]),
            ));
        }
        for r in 0..m {
            let row = &child_tokens[r * width..(r + 1) * width];
            if width > 1 {
                let mut sorted = row.to_vec();
                sorted.sort_unstable();
                if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                    return Err(Error::value(
                        "child_tokens",
                        "distinct tokens within a row (siblings)",
                        format!("token {} twice in row {r}", w[0]),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Inserts the children of `parent_ids` (`[m, width]` row-major tokens and draft
    /// log-probs); returns `[m, width]` new old-ids, `-1` where a child was not kept.
    ///
    /// Each row keeps its `max_width` best children with a finite log-prob and a score not
    /// below `min_logprob`; then all candidates compete for the top-`budget` set, best first
    /// (score, then row, then rank within the row), evicting the worst nodes when full.
    pub fn expand(
        &mut self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<Vec<i32>> {
        self.validate_expand(parent_ids, child_tokens, child_logprobs, width)?;
        Ok(self.expand_unchecked(parent_ids, child_tokens, child_logprobs, width))
    }

    fn expand_unchecked(
        &mut self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Vec<i32> {
        let m = parent_ids.len();
        let mut out = vec![-1i32; m * width];
        let cfg = self.cfg;
        let bar = self.entry_bar();
        let take = cfg.max_width.min(width);
        // (order key, flat index): key = score bits, then the inverted candidate position.
        let mut candidates: Vec<(u64, u32)> = Vec::with_capacity(m * take);
        let mut row_keys: Vec<u64> = Vec::with_capacity(width);
        for (r, &p) in parent_ids.iter().enumerate() {
            let p = p as usize;
            self.expanded[p] = true;
            if !self.alive[p] || self.depth[p] as usize >= cfg.max_depth {
                continue;
            }
            let base = self.score[p] + cfg.log_decay;
            row_keys.clear();
            for c in 0..width {
                let lp = child_logprobs[r * width + c];
                if lp == f32::NEG_INFINITY {
                    continue;
                }
                row_keys
                    .push(((order_bits(lp.min(0.0)) as u64) << 32) | (u32::MAX - c as u32) as u64);
            }
            let kept_in_row = take.min(row_keys.len());
            if kept_in_row == 0 {
                continue;
            }
            if row_keys.len() > kept_in_row {
                row_keys.select_nth_unstable_by(kept_in_row - 1, |a, b| b.cmp(a));
                row_keys.truncate(kept_in_row);
            }
            row_keys.sort_unstable_by(|a, b| b.cmp(a));
            for (rank, &k) in row_keys.iter().enumerate() {
                let c = (u32::MAX - (k & 0xffff_ffff) as u32) as usize;
                let s = base + child_logprobs[r * width + c].min(0.0);
                if s < cfg.min_logprob {
                    break;
                }
                let sb = order_bits(s);
                if bar.is_some_and(|bar| sb <= bar) {
                    break;
                }
                let pos = (r * take + rank) as u32;
                candidates.push((
                    ((sb as u64) << 32) | (u32::MAX - pos) as u64,
                    (r * width + c) as u32,
                ));
            }
        }
        if candidates.is_empty() {
            return out;
        }
        let limit = cfg.budget.min(candidates.len());
        if candidates.len() > limit {
            candidates.select_nth_unstable_by(limit - 1, |a, b| b.0.cmp(&a.0));
            candidates.truncate(limit);
        }
        candidates.sort_unstable_by_key(|c| Reverse(c.0));
        for &(k, flat) in &candidates {
            let sb = (k >> 32) as u32;
            if self.kept >= cfg.budget {
                let Some(&Reverse(w)) = self.worst.peek() else {
                    break;
                };
                if sb <= (w >> 32) as u32 {
                    break;
                }
                self.worst.pop();
                self.alive[key_id(w)] = false;
                self.kept -= 1;
            }
            let flat = flat as usize;
            let r = flat / width;
            let p = parent_ids[r] as usize;
            let s = self.score[p] + cfg.log_decay + child_logprobs[flat].min(0.0);
            let depth = self.depth[p] + 1;
            out[flat] = self.insert(p as i32, child_tokens[flat], s, depth);
        }
        out
    }

    /// The tree in breadth-first order with siblings in rank order, and the old-to-new map
    /// (`-1` for nodes that were evicted or never kept).
    pub fn finalize(&self) -> (FinalTree, Vec<i32>) {
        let n = self.kept;
        let mut old_to_new = vec![-1i32; self.parent.len()];
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut t = FinalTree {
            parents: Vec::with_capacity(n),
            tokens: Vec::with_capacity(n),
            depth: Vec::with_capacity(n),
            rank: Vec::with_capacity(n),
            score: Vec::with_capacity(n),
        };
        order.push(0);
        old_to_new[0] = 0;
        t.parents.push(-1);
        t.rank.push(0);
        let mut head = 0;
        while head < order.len() {
            let old = order[head] as usize;
            let mut c = self.first_child[old];
            let mut rank = 0;
            while c >= 0 {
                let cu = c as usize;
                if self.alive[cu] {
                    old_to_new[cu] = order.len() as i32;
                    order.push(c as u32);
                    t.parents.push(head as i32);
                    t.rank.push(rank);
                    rank += 1;
                }
                c = self.next_sibling[cu];
            }
            head += 1;
        }
        for &old in &order {
            let old = old as usize;
            t.tokens.push(self.token[old]);
            t.depth.push(self.depth[old] as i32);
            t.score.push(self.score[old]);
        }
        (t, old_to_new)
    }
}

/// `B` independent [`TreeBuilder`]s driven together; expansions run in parallel over trees.
#[derive(Debug, Clone)]
pub struct BatchTreeBuilder {
    trees: Vec<TreeBuilder>,
}

impl BatchTreeBuilder {
    /// One builder per root token, all with the same limits.
    pub fn new(root_tokens: &[i32], cfg: BuilderConfig) -> Result<Self> {
        if root_tokens.is_empty() {
            return Err(Error::value("root_tokens", "at least one root", "none"));
        }
        let trees = root_tokens
            .iter()
            .map(|&t| TreeBuilder::new(t, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(BatchTreeBuilder { trees })
    }

    /// The builders.
    pub fn trees(&self) -> &[TreeBuilder] {
        &self.trees
    }

    /// Up to `k` frontier nodes per tree: `(tree index, old id)` pairs, tree by tree.
    pub fn frontier(&mut self, k: usize) -> (Vec<i32>, Vec<i32>) {
        let mut tree_ids = Vec::new();
        let mut node_ids = Vec::new();
        for (t, b) in self.trees.iter_mut().enumerate() {
            for id in b.frontier(k) {
                tree_ids.push(t as i32);
                node_ids.push(id);
            }
        }
        (tree_ids, node_ids)
    }

    /// Whether every tree is done.
    pub fn done(&mut self) -> bool {
        self.trees.iter_mut().all(|b| b.done())
    }

    /// Expands rows `r` of tree `tree_ids[r]` under node `parent_ids[r]`; same layout and
    /// result as [`TreeBuilder::expand`]. Nothing changes if any row is invalid.
    pub fn expand(
        &mut self,
        tree_ids: &[i32],
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<Vec<i32>> {
        let m = parent_ids.len();
        crate::error::check_len("tree_ids", tree_ids.len(), m)?;
        crate::error::check_len("child_tokens", child_tokens.len(), m * width)?;
        crate::error::check_len("child_logprobs", child_logprobs.len(), m * width)?;
        let b = self.trees.len();
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); b];
        for (r, &t) in tree_ids.iter().enumerate() {
            if t < 0 || t as usize >= b {
                return Err(Error::value(
                    "tree_ids",
                    format!("tree indices in [0, {b})"),
                    format!("tree_ids[{r}] = {t}"),
                ));
            }
            rows[t as usize].push(r);
        }
        let gather = |rs: &[usize]| {
            let parents: Vec<i32> = rs.iter().map(|&r| parent_ids[r]).collect();
            let mut toks = Vec::with_capacity(rs.len() * width);
            let mut lps = Vec::with_capacity(rs.len() * width);
            for &r in rs {
                toks.extend_from_slice(&child_tokens[r * width..(r + 1) * width]);
                lps.extend_from_slice(&child_logprobs[r * width..(r + 1) * width]);
            }
            (parents, toks, lps)
        };
        let inputs: Vec<_> = rows.iter().map(|rs| gather(rs)).collect();
        for (t, (p, tk, lp)) in inputs.iter().enumerate() {
            self.trees[t]
                .validate_expand(p, tk, lp, width)
                .map_err(|e| prefix_tree(e, t))?;
        }
        let results: Vec<Vec<i32>> = self
            .trees
            .par_iter_mut()
            .zip(inputs.par_iter())
            .map(|(tree, (p, tk, lp))| tree.expand_unchecked(p, tk, lp, width))
            .collect();
        let mut out = vec![-1i32; m * width];
        for (rs, res) in rows.iter().zip(results) {
            for (j, &r) in rs.iter().enumerate() {
                out[r * width..(r + 1) * width].copy_from_slice(&res[j * width..(j + 1) * width]);
            }
        }
        Ok(out)
    }

    /// Every tree finalized.
    pub fn finalize(&self) -> Vec<(FinalTree, Vec<i32>)> {
        self.trees.par_iter().map(|b| b.finalize()).collect()
    }
}

fn prefix_tree(e: Error, t: usize) -> Error {
    match e {
        Error::InvalidValue { arg, expected, got } => Error::InvalidValue {
            arg,
            expected,
            got: format!("{got} (tree {t})"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
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
        // rank order: token 11 (-0.1) inserted first
        assert_eq!(ids, vec![2, 1, -1]);
        assert_eq!(b.frontier(4), vec![1, 2]);
        let ids = b
            .expand(&[1, 2], &[20, 21, 30, 31], &[-0.5, -3.0, -0.1, -0.2], 2)
            .unwrap();
        // scores: 20 -> -0.6, 21 -> -3.1, 30 -> -2.1, 31 -> -2.2; budget 4 keeps root, 11, 20, 10
        assert_eq!(ids, vec![3, -1, -1, -1]);
        assert_eq!(b.size(), 4);
        let (t, map) = b.finalize();
        assert_eq!(t.parents, vec![-1, 0, 0, 1]);
        assert_eq!(t.tokens, vec![7, 11, 10, 20]);
        assert_eq!(t.rank, vec![0, 0, 1, 0]);
        assert_eq!(t.depth, vec![0, 1, 1, 2]);
        assert_eq!(map, vec![0, 1, 2, 3]);
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
                let mut row: Vec<(f32, usize)> =
                    (0..w).map(|k| (lps[r * w + k], r * w + k)).collect();
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
            crate::spec::tree::validate_parents(&t.parents).unwrap();
            prop_assert_eq!(crate::spec::tree::depths(&t.parents).unwrap(), t.depth.clone());
            prop_assert_eq!(crate::spec::tree::ranks(&t.parents).unwrap(), t.rank.clone());
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
}
