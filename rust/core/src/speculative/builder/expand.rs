//! One expansion step: validation, the candidates that could enter, the plan (entry threshold
//! and entering children) and carrying it out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::keys::{key, key_id, kth_largest, order_bits, repeated_token};
use super::{TreeBuilder, LOGPROB_SLACK};
use crate::{Error, Result};

/// What one `expand` will do, decided before anything changes.
#[derive(Debug)]
pub(super) struct ExpandPlan {
    /// Keys below this leave the tree (`None`: everything fits).
    threshold: Option<u64>,
    /// Flat indices of the entering children, row-major in column order.
    entering: Vec<u64>,
}

/// The input of one expansion: the children of `parent_ids` as `[m, width]` row-major tokens
/// and draft log-probs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rows<'a> {
    pub(super) parent_ids: &'a [i32],
    pub(super) child_tokens: &'a [i32],
    pub(super) child_logprobs: &'a [f32],
    pub(super) width: usize,
}

impl<'a> Rows<'a> {
    /// The rows, once the children's arrays are checked to hold `width` entries per parent.
    pub(super) fn new(
        parent_ids: &'a [i32],
        child_tokens: &'a [i32],
        child_logprobs: &'a [f32],
        width: usize,
    ) -> Result<Self> {
        let m = parent_ids.len();
        crate::error::check_len("child_tokens", child_tokens.len(), m * width)?;
        crate::error::check_len("child_logprobs", child_logprobs.len(), m * width)?;
        Ok(Rows {
            parent_ids,
            child_tokens,
            child_logprobs,
            width,
        })
    }
}

impl TreeBuilder {
    /// Checks an expansion without changing anything.
    pub(super) fn validate_expand(&self, rows: Rows<'_>) -> Result<()> {
        let Rows {
            parent_ids,
            child_tokens,
            child_logprobs,
            ..
        } = rows;
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
        let rows = Rows::new(parent_ids, child_tokens, child_logprobs, width)?;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.expand_avx2(rows) };
        }
        self.expand_impl(rows)
    }

    /// [`TreeBuilder::expand`] compiled with AVX2 (the key passes vectorise 4 wide).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn expand_avx2(&mut self, rows: Rows<'_>) -> Result<Vec<i32>> {
        self.expand_impl(rows)
    }

    #[inline(always)]
    fn expand_impl(&mut self, rows: Rows<'_>) -> Result<Vec<i32>> {
        self.validate_expand(rows)?;
        let plan = self.plan_expand(rows)?;
        Ok(self.apply(rows, plan))
    }

    /// The children that could enter, as order keys in row-major column order (score bits,
    /// then the inverted flat index, which [`key_id`] reads back). Changes nothing.
    #[inline(always)]
    fn candidates(&self, rows: Rows<'_>) -> Vec<u64> {
        let Rows {
            parent_ids,
            child_logprobs,
            width,
            ..
        } = rows;
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
    pub(super) fn plan_expand(&self, rows: Rows<'_>) -> Result<ExpandPlan> {
        let Rows {
            child_tokens,
            width,
            ..
        } = rows;
        let mut candidates = self.candidates(rows);
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
    pub(super) fn apply(&mut self, rows: Rows<'_>, plan: ExpandPlan) -> Vec<i32> {
        let Rows {
            parent_ids,
            child_tokens,
            child_logprobs,
            width,
        } = rows;
        let mut out = vec![-1i32; parent_ids.len() * width];
        for &p in parent_ids {
            self.nodes[p as usize].expanded = true;
        }
        let cfg = self.cfg;
        let mut kept_keys: Vec<Reverse<u64>> = Vec::new();
        if let Some(threshold) = plan.threshold {
            kept_keys.reserve(self.worst.len().min(cfg.budget));
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
}
