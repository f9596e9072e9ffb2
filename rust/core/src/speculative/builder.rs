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

/// The first token seen twice, if any (tokens are >= 0). Small rows use an on-stack
/// open-addressing set (linear in the row), large ones a sort.
fn repeated_token(tokens: impl ExactSizeIterator<Item = i32>) -> Option<i32> {
    const SLOTS: usize = 128;
    if tokens.len() <= 8 {
        let mut seen = [0i32; 8];
        for (i, t) in tokens.enumerate() {
            if seen[..i].contains(&t) {
                return Some(t);
            }
            seen[i] = t;
        }
        return None;
    }
    if tokens.len() > SLOTS / 2 {
        let mut v: Vec<i32> = tokens.collect();
        v.sort_unstable();
        return v.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
    }
    let mut table = [-1i32; SLOTS];
    for t in tokens {
        let mut slot = ((t as u32).wrapping_mul(0x9E37_79B9) >> 25) as usize;
        loop {
            if table[slot] == -1 {
                table[slot] = t;
                break;
            }
            if table[slot] == t {
                return Some(t);
            }
            slot = (slot + 1) % SLOTS;
        }
    }
    None
}

/// The `k`-th largest (0-based) of the keys of `a` and `b` together. Radix selection, 11
/// bits at a time from the top (the sign, exponent and two mantissa bits of the score first):
/// a histogram pass over both sources, then only the keys of the bucket holding the answer are
/// gathered (no copy of everything), narrowed the same way and finished by a quickselect once
/// few are left.
#[inline(always)]
fn kth_largest(
    a: impl Iterator<Item = u64> + Clone,
    b: impl Iterator<Item = u64> + Clone,
    mut k: usize,
) -> u64 {
    const BITS: u32 = 11;
    const SMALL: usize = 128;
    const MASK: u64 = (1 << BITS) - 1;
    let mut hist = vec![0u32; 1 << BITS];
    /// The bucket holding the `k`-th largest; `k` becomes the rank inside it.
    fn pick(hist: &[u32], k: &mut usize) -> u64 {
        let mut bucket = hist.len() - 1;
        while *k >= hist[bucket] as usize {
            *k -= hist[bucket] as usize;
            bucket -= 1;
        }
        bucket as u64
    }
    let mut shift = 64 - BITS;
    for x in a.clone().chain(b.clone()) {
        hist[(x >> shift) as usize] += 1;
    }
    let top = pick(&hist, &mut k);
    let mut keys: Vec<u64> = Vec::with_capacity(hist[top as usize] as usize);
    for x in a {
        if x >> shift == top {
            keys.push(x);
        }
    }
    for x in b {
        if x >> shift == top {
            keys.push(x);
        }
    }
    while keys.len() > SMALL && shift >= BITS {
        shift -= BITS;
        hist.fill(0);
        for &x in &keys {
            hist[((x >> shift) & MASK) as usize] += 1;
        }
        let digit = pick(&hist, &mut k);
        keys.retain(|&x| (x >> shift) & MASK == digit);
    }
    keys.select_nth_unstable_by(k, |x, y| y.cmp(x));
    keys[k]
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

/// One inserted node (kept or evicted); children form a linked list in insertion order.
#[derive(Debug, Clone, Copy)]
struct Node {
    token: i32,
    score: f32,
    first_child: i32,
    last_child: i32,
    next_sibling: i32,
    depth: u16,
    alive: bool,
    expanded: bool,
}

/// What one `expand` will do, decided before anything changes.
#[derive(Debug)]
struct ExpandPlan {
    /// Keys below this leave the tree (`None`: everything fits).
    threshold: Option<u64>,
    /// Flat indices of the entering children, row-major in column order.
    entering: Vec<u64>,
}

/// SpecExec best-first tree growth: see the module documentation.
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    cfg: BuilderConfig,
    nodes: Vec<Node>,
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
            nodes: Vec::with_capacity(cfg.budget * 2),
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
        self.nodes.len()
    }

    /// Score of node `id` (old id), whether or not it is still kept.
    pub fn score(&self, id: usize) -> Option<f32> {
        self.nodes.get(id).map(|n| n.score)
    }

    /// Adds a node and links it under `parent`; returns its id and whether it can still be
    /// expanded (the caller puts those in `open`).
    fn add_node(&mut self, parent: i32, token: i32, score: f32, depth: u16) -> (i32, bool) {
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            token,
            score,
            first_child: -1,
            last_child: -1,
            next_sibling: -1,
            depth,
            alive: true,
            expanded: false,
        });
        if parent >= 0 {
            let p = parent as usize;
            let last = self.nodes[p].last_child;
            if last < 0 {
                self.nodes[p].first_child = id as i32;
            } else {
                self.nodes[last as usize].next_sibling = id as i32;
            }
            self.nodes[p].last_child = id as i32;
        }
        self.kept += 1;
        (id as i32, (depth as usize) < self.cfg.max_depth)
    }

    fn insert(&mut self, parent: i32, token: i32, score: f32, depth: u16) -> i32 {
        let (id, open) = self.add_node(parent, token, score, depth);
        let k = key(score, id as u32);
        if open {
            self.open.push(k);
        }
        self.worst.push(Reverse(k));
        id
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
            if !self.nodes[id].alive || self.nodes[id].expanded {
                continue;
            }
            keep.push(top);
            if !self.could_grow(self.nodes[id].score) {
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
        let n = self.nodes.len();
        let mut seen: Vec<i32> = parent_ids.to_vec();
        for (r, &p) in parent_ids.iter().enumerate() {
            if p < 0 || p as usize >= n {
                return Err(Error::value(
                    "parent_ids",
                    format!("node ids in [0, {n})"),
                    format!("parent_ids[{r}] = {p}"),
                ));
            }
            if self.nodes[p as usize].expanded {
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
        // Branch-free scans first (they vectorise); the position is only looked up on failure.
        let min_token = child_tokens.iter().fold(0i32, |acc, &t| acc.min(t));
        let bad_logprob = child_logprobs
            .iter()
            .fold(false, |acc, &x| acc | x.is_nan() | (x > LOGPROB_SLACK));
        if min_token < 0 {
            let i = child_tokens.iter().position(|&t| t < 0).unwrap_or(0);
            return Err(Error::value(
                "child_tokens",
                "token ids >= 0",
                format!("{} at flat index {i}", child_tokens[i]),
            ));
        }
        if bad_logprob {
            let i = child_logprobs
                .iter()
                .position(|&x| x.is_nan() || x > LOGPROB_SLACK)
                .unwrap_or(0);
            return Err(Error::value(
                "child_logprobs",
                "log-probabilities (<= 0, not NaN; -inf = probability 0)",
                format!("{} at flat index {i}", child_logprobs[i]),
            ));
        }
        Ok(())
    }

    /// Inserts the children of `parent_ids` (`[m, width]` row-major tokens and draft
    /// log-probs); returns `[m, width]` new old-ids, `-1` where a child was not kept.
    ///
    /// Each row keeps its `max_width` best children with a finite log-prob and a score not
    /// below `min_logprob`; then all candidates compete for the top-`budget` set (ties go to
    /// older nodes, then to earlier rows and ranks), evicting the worst nodes when full. New
    /// ids are given in row-major column order.
    pub fn expand(
        &mut self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<Vec<i32>> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.expand_avx2(parent_ids, child_tokens, child_logprobs, width) };
        }
        self.expand_impl(parent_ids, child_tokens, child_logprobs, width)
    }

    /// [`TreeBuilder::expand`] compiled with AVX2 (the key passes vectorise 4 wide).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn expand_avx2(
        &mut self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<Vec<i32>> {
        self.expand_impl(parent_ids, child_tokens, child_logprobs, width)
    }

    #[inline(always)]
    fn expand_impl(
        &mut self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<Vec<i32>> {
        self.validate_expand(parent_ids, child_tokens, child_logprobs, width)?;
        let plan = self.plan_expand(parent_ids, child_tokens, child_logprobs, width)?;
        Ok(self.apply(parent_ids, child_tokens, child_logprobs, width, plan))
    }

    /// The children that could enter, as order keys in row-major column order (score bits,
    /// then the inverted flat index, which [`key_id`] reads back). Changes nothing.
    #[inline(always)]
    fn candidates(&self, parent_ids: &[i32], child_logprobs: &[f32], width: usize) -> Vec<u64> {
        let cfg = self.cfg;
        // `order_bits(s) > bar_bits` is "beats the worst kept node"; without a full budget
        // every non-NaN score passes (the order bits of -inf are above 0).
        let bar_bits = self.entry_bar().unwrap_or(0);
        let min_bits = order_bits(cfg.min_logprob);
        let take = cfg.max_width.min(width);
        let mut candidates: Vec<u64> = Vec::with_capacity(parent_ids.len() * take);
        let mut row_keys: Vec<u64> = vec![0; width];
        for (r, &p) in parent_ids.iter().enumerate() {
            let node = self.nodes[p as usize];
            if !node.alive || node.depth as usize >= cfg.max_depth {
                continue;
            }
            let base = node.score + cfg.log_decay;
            let row = &child_logprobs[r * width..(r + 1) * width];
            // Common case first: every child that could enter is kept (`take` or fewer), so
            // they go straight into `candidates`. All keys are written in one vectorised pass;
            // only a row where some child fails is compacted (branch-free).
            let start = candidates.len();
            candidates.resize(start + width, 0);
            let dst = &mut candidates[start..];
            let flat0 = (r * width) as u32;
            let mut failed = 0u32;
            for (c, (&lp, d)) in row.iter().zip(dst.iter_mut()).enumerate() {
                let lp = lp.min(0.0);
                let ob = order_bits(base + lp);
                let pass = lp != f32::NEG_INFINITY && ob >= min_bits && ob > bar_bits;
                *d = ((ob as u64) << 32) | (u32::MAX - (flat0 + c as u32)) as u64;
                failed += u32::from(!pass);
            }
            let mut count = width;
            if failed > 0 {
                count = 0;
                for (c, &lp) in row.iter().enumerate() {
                    let lp = lp.min(0.0);
                    let ob = order_bits(base + lp);
                    let pass = lp != f32::NEG_INFINITY && ob >= min_bits && ob > bar_bits;
                    dst[count] = ((ob as u64) << 32) | (u32::MAX - (flat0 + c as u32)) as u64;
                    count += pass as usize;
                }
            }
            candidates.truncate(start + count);
            if count <= take {
                continue;
            }
            candidates.truncate(start);
            // Only children that could enter are ranked: scores are monotone in the log-prob,
            // so the survivors are exactly the row's best ones. Branch-free compaction.
            let mut count = 0;
            for (c, &lp) in row.iter().enumerate() {
                let lp = lp.min(0.0);
                let ob = order_bits(base + lp);
                let pass = lp != f32::NEG_INFINITY && ob >= min_bits && ob > bar_bits;
                row_keys[count] = ((order_bits(lp) as u64) << 32) | (u32::MAX - c as u32) as u64;
                count += pass as usize;
            }
            if count == 0 {
                continue;
            }
            let col = |k: u64| (u32::MAX - (k & 0xffff_ffff) as u32) as usize;
            let survivors = &mut row_keys[..count];
            let survivors = if count > take {
                survivors.select_nth_unstable_by(take - 1, |a, b| b.cmp(a));
                let kept = &mut survivors[..take];
                // Back to column order: among equal scores (equal log-probs) it is also the
                // rank order, so ties resolve exactly as ranks would.
                kept.sort_unstable_by_key(|&k| col(k));
                kept
            } else {
                survivors
            };
            for &k in survivors.iter() {
                let c = col(k);
                let s = base + child_logprobs[r * width + c].min(0.0);
                let flat = (r * width + c) as u32;
                candidates.push(((order_bits(s) as u64) << 32) | (u32::MAX - flat) as u64);
            }
        }
        candidates
    }

    /// Decides which candidates enter (without changing anything): the entry threshold when
    /// the budget overflows, and the entering children grouped by row in rank order. Fails
    /// when two entering siblings carry the same token.
    #[inline(always)]
    fn plan_expand(
        &self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<ExpandPlan> {
        let mut candidates = self.candidates(parent_ids, child_logprobs, width);
        let cfg = self.cfg;
        let base_id = self.nodes.len() as u64;
        // Candidates compete with a provisional id `base_id + flat index`: larger than every
        // existing id (old nodes win ties) and, among equal scores, ordered like the ids they
        // will get (row-major, then rank = column order for equal log-probs). Rewritten in
        // place; `flat = key_id(k) - base_id` recovers the flat index.
        for k in candidates.iter_mut() {
            let flat = u32::MAX as u64 - (*k & 0xffff_ffff);
            *k = (*k & !0xffff_ffff) | (u32::MAX as u64).saturating_sub(base_id + flat);
        }
        let flat_of = |k: u64| key_id(k) - base_id as usize;
        let threshold = if self.kept + candidates.len() > cfg.budget {
            let kept = self.worst.as_slice();
            Some(kth_largest(
                kept.iter().map(|&Reverse(k)| k),
                candidates.iter().copied(),
                cfg.budget - 1,
            ))
        } else {
            None
        };
        // The entering flat indices are compacted into `candidates` itself (they never
        // overtake the read position): no second buffer to allocate and bring into cache.
        let mut entering = candidates;
        let (mut i, mut w) = (0, 0);
        while i < entering.len() {
            let row = flat_of(entering[i]) / width;
            // Flat indices of this row end here (one division per row, not per candidate).
            let row_end = (row + 1) * width;
            let start = w;
            while i < entering.len() && flat_of(entering[i]) < row_end {
                let k = entering[i];
                i += 1;
                if threshold.is_none_or(|t| k >= t) {
                    entering[w] = flat_of(k) as u64;
                    w += 1;
                }
            }
            let group = &entering[start..w];
            if group.len() > 1 {
                if let Some(t) = repeated_token(group.iter().map(|&f| child_tokens[f as usize])) {
                    return Err(Error::value(
                        "child_tokens",
                        "distinct tokens among the siblings that enter the tree",
                        format!("token {t} twice in row {row}"),
                    ));
                }
            }
        }
        entering.truncate(w);
        Ok(ExpandPlan {
            threshold,
            entering,
        })
    }

    /// Carries out a plan: marks the parents expanded, evicts what falls below the threshold
    /// (one pass over the kept set and an `O(n)` heap rebuild, cheaper than a heap pop per
    /// eviction when a step replaces hundreds of nodes) and inserts the entering children.
    #[inline(always)]
    fn apply(
        &mut self,
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
        plan: ExpandPlan,
    ) -> Vec<i32> {
        let mut out = vec![-1i32; parent_ids.len() * width];
        for &p in parent_ids {
            self.nodes[p as usize].expanded = true;
        }
        let cfg = self.cfg;
        let mut kept_keys: Vec<Reverse<u64>> = Vec::new();
        if let Some(threshold) = plan.threshold {
            kept_keys.reserve(cfg.budget);
            for Reverse(k) in std::mem::take(&mut self.worst).into_vec() {
                if k >= threshold {
                    kept_keys.push(Reverse(k));
                } else {
                    self.nodes[key_id(k)].alive = false;
                    self.kept -= 1;
                }
            }
        }
        // Heap keys of the newcomers are gathered and added in one go: `extend` picks a
        // rebuild or sift-ups, whichever is cheaper for the batch.
        let mut open_keys: Vec<u64> = Vec::with_capacity(plan.entering.len());
        let mut new_keys: Vec<Reverse<u64>> = Vec::with_capacity(plan.entering.len());
        for &flat in &plan.entering {
            let flat = flat as usize;
            let p = parent_ids[flat / width] as usize;
            let s = self.nodes[p].score + cfg.log_decay + child_logprobs[flat].min(0.0);
            let depth = self.nodes[p].depth + 1;
            let (id, open) = self.add_node(p as i32, child_tokens[flat], s, depth);
            let k = key(s, id as u32);
            if open {
                open_keys.push(k);
            }
            new_keys.push(Reverse(k));
            out[flat] = id;
        }
        self.open.extend(open_keys);
        if plan.threshold.is_some() {
            kept_keys.extend(new_keys);
            self.worst = BinaryHeap::from(kept_keys);
        } else {
            self.worst.extend(new_keys);
        }
        out
    }

    /// The tree in breadth-first order with siblings in rank order, and the old-to-new map
    /// (`-1` for nodes that were evicted or never kept).
    pub fn finalize(&self) -> (FinalTree, Vec<i32>) {
        let n = self.kept;
        let mut old_to_new = vec![-1i32; self.nodes.len()];
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
        // Children were linked in insertion order; ranks follow the key (score, then id).
        let mut kids: Vec<u64> = Vec::new();
        let mut head = 0;
        while head < order.len() {
            let old = order[head] as usize;
            kids.clear();
            let mut c = self.nodes[old].first_child;
            while c >= 0 {
                let node = &self.nodes[c as usize];
                if node.alive {
                    kids.push(key(node.score, c as u32));
                }
                c = node.next_sibling;
            }
            if kids.len() > 1 {
                kids.sort_unstable_by(|a, b| b.cmp(a));
            }
            for (rank, &k) in kids.iter().enumerate() {
                let cu = key_id(k);
                old_to_new[cu] = order.len() as i32;
                order.push(cu as u32);
                t.parents.push(head as i32);
                t.rank.push(rank as i32);
            }
            head += 1;
        }
        for &old in &order {
            let old = old as usize;
            t.tokens.push(self.nodes[old].token);
            t.depth.push(self.nodes[old].depth as i32);
            t.score.push(self.nodes[old].score);
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
        let plans = self
            .trees
            .par_iter()
            .zip(inputs.par_iter())
            .map(|(tree, (p, tk, lp))| tree.plan_expand(p, tk, lp, width))
            .collect::<Vec<Result<_>>>()
            .into_iter()
            .enumerate()
            .map(|(t, r)| r.map_err(|e| prefix_tree(e, t)))
            .collect::<Result<Vec<_>>>()?;
        let results: Vec<Vec<i32>> = self
            .trees
            .par_iter_mut()
            .zip(inputs.par_iter())
            .zip(plans)
            .map(|((tree, (p, tk, lp)), plan)| tree.apply(p, tk, lp, width, plan))
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
}
