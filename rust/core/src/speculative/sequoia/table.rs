//! The solved table: [`sequoia_dp`] validates and solves, [`SequoiaTable`] reads values and
//! rebuilds optimal trees from it.

use super::bands::{solve, MIN_BAND};
use super::{validate_acceptance, ShapeTree, DEFAULT_MAX_WORK, MAX_NODES, MAX_TABLE_ENTRIES};
use crate::{Cancel, Error, Result};

/// The solved dynamic program: values for every size and depth, and optimal trees on demand.
#[derive(Debug, Clone)]
pub struct SequoiaTable {
    pub(super) p: Vec<f64>,
    pub(super) max_nodes: usize,
    pub(super) max_depth: usize,
    pub(super) cap: Vec<usize>,
    /// `t[(l * (B + 1) + b) * (N + 1) + m]`
    pub(super) t: Vec<f64>,
    /// `f[l * (N + 1) + m]`
    pub(super) f: Vec<f64>,
}

/// Solves the DP for every size up to `max_nodes` and depth up to `max_depth`.
///
/// The sizes are cut into bands that rayon's threads solve as a pipeline (see `solve_band`);
/// every band computes exactly what the sequential recurrence would, so the table does not
/// depend on the number of threads.
pub fn sequoia_dp(p: &[f64], max_nodes: usize, max_depth: usize) -> Result<SequoiaTable> {
    sequoia_dp_bounded(p, max_nodes, max_depth, DEFAULT_MAX_WORK, &Cancel::never())
}

/// The work estimate of a DP: `max_nodes^2 * min(max_depth, max_nodes) * len(p)` cell steps,
/// an upper bound of what the pruned scan does (saturating).
pub fn dp_work(width: usize, max_nodes: usize, max_depth: usize) -> u64 {
    (max_nodes as u64)
        .saturating_mul(max_nodes as u64)
        .saturating_mul(max_depth.min(max_nodes) as u64)
        .saturating_mul(width as u64)
}

/// [`sequoia_dp`] refusing more than `max_work` cell steps ([`dp_work`]; the default
/// [`DEFAULT_MAX_WORK`] is a few seconds) and stopping with [`Error::Interrupted`] when `cancel`
/// fires, checked once per row of every band.
pub fn sequoia_dp_bounded(
    p: &[f64],
    max_nodes: usize,
    max_depth: usize,
    max_work: u64,
    cancel: &Cancel<'_>,
) -> Result<SequoiaTable> {
    validate_acceptance(p)?;
    if max_nodes == 0 || max_nodes > MAX_NODES {
        return Err(Error::value(
            "max_nodes",
            format!("in [1, {MAX_NODES}]"),
            max_nodes,
        ));
    }
    let width = p.len();
    let entries = (max_depth + 1)
        .saturating_mul(width + 1)
        .saturating_mul(max_nodes + 1);
    if max_depth > 4096 || entries > MAX_TABLE_ENTRIES {
        return Err(Error::value(
            "max_depth",
            format!("small enough for a table of at most {MAX_TABLE_ENTRIES} entries"),
            format!("max_depth {max_depth} with max_nodes {max_nodes} and {width} ranks"),
        ));
    }
    let work = dp_work(width, max_nodes, max_depth);
    if work > max_work {
        return Err(Error::value(
            "max_work",
            format!(
                "at least the DP's work estimate max_nodes^2 * min(max_depth, max_nodes) * len(p) \
                 = {work} (raise max_work to allow it; the default {DEFAULT_MAX_WORK} takes a \
                 few seconds)"
            ),
            max_work,
        ));
    }
    let n1 = max_nodes + 1;
    let mut cap = vec![1usize; max_depth + 1];
    for l in 1..=max_depth {
        cap[l] = (1 + width.saturating_mul(cap[l - 1])).min(max_nodes);
    }
    let bands = rayon::current_num_threads().clamp(1, (n1 / MIN_BAND).max(1));
    solve(p, max_nodes, max_depth, cap, bands, cancel)
}

impl SequoiaTable {
    /// Largest size solved.
    pub fn max_nodes(&self) -> usize {
        self.max_nodes
    }

    /// Largest depth solved.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The acceptance vector the table was solved for.
    pub fn acceptance(&self) -> &[f64] {
        &self.p
    }

    fn check(&self, n: usize, d: usize) -> Result<()> {
        if n == 0 || n > self.max_nodes {
            return Err(Error::value("n", format!("in [1, {}]", self.max_nodes), n));
        }
        if d > self.max_depth {
            return Err(Error::value("d", format!("in [0, {}]", self.max_depth), d));
        }
        Ok(())
    }

    /// `F[n][d]`: expected accepted nodes (root included) of the best tree of exactly `n` nodes
    /// and depth at most `d`; `-inf` when no such tree exists (`n` too large for `d` and B).
    pub fn value(&self, n: usize, d: usize) -> Result<f64> {
        self.check(n, d)?;
        Ok(self.f[d * (self.max_nodes + 1) + n])
    }

    /// All values as `[max_nodes + 1, max_depth + 1]` row-major (row 0 is `-inf`).
    pub fn values(&self) -> Vec<f64> {
        let n1 = self.max_nodes + 1;
        let d1 = self.max_depth + 1;
        let mut out = vec![f64::NEG_INFINITY; n1 * d1];
        for m in 0..n1 {
            for l in 0..d1 {
                out[m * d1 + l] = self.f[l * n1 + m];
            }
        }
        out
    }

    fn t_at(&self, m: usize, l: usize, b: usize) -> f64 {
        let n1 = self.max_nodes + 1;
        self.t[(l * (self.p.len() + 1) + b) * n1 + m]
    }

    pub(super) fn f_at(&self, m: usize, l: usize) -> f64 {
        self.f[l * (self.max_nodes + 1) + m]
    }

    /// Sizes of the root subtrees (rank order) of the optimal tree of `m` nodes, depth <= `l`.
    fn split(&self, m: usize, l: usize) -> Vec<usize> {
        let width = self.p.len();
        let target = self.f_at(m, l);
        let mut b = (0..=width)
            .find(|&b| self.t_at(m, l, b) == target)
            .unwrap_or(0);
        let mut sizes = vec![0usize; b];
        let mut rest = m;
        while b >= 1 {
            let c = self.cap[l - 1];
            let pb = self.p[b - 1];
            let lo = b.max(rest.saturating_sub(c));
            let hi = (rest - 1).min(1 + (b - 1).saturating_mul(c));
            let mut best = f64::NEG_INFINITY;
            let mut best_y = lo;
            for y in lo..=hi {
                let v = self.t_at(y, l, b - 1) + pb * self.f_at(rest - y, l - 1);
                if v > best {
                    best = v;
                    best_y = y;
                }
            }
            sizes[b - 1] = rest - best_y;
            rest = best_y;
            b -= 1;
        }
        sizes
    }

    /// The optimal tree of exactly `n` nodes and depth at most `d`, breadth-first with siblings
    /// in rank order.
    pub fn tree(&self, n: usize, d: usize) -> Result<ShapeTree> {
        self.check(n, d)?;
        if self.f_at(n, d) == f64::NEG_INFINITY {
            return Err(Error::value(
                "n",
                format!(
                    "at most {} nodes for depth {d} with {} ranks",
                    self.cap[d],
                    self.p.len()
                ),
                n,
            ));
        }
        let mut out = ShapeTree {
            parents: vec![-1],
            depth: vec![0],
            rank: vec![0],
        };
        let mut queue = vec![(n, d)];
        let mut head = 0;
        while head < queue.len() {
            let (m, l) = queue[head];
            if m > 1 {
                for (r, s) in self.split(m, l).into_iter().enumerate() {
                    out.parents.push(head as i32);
                    out.depth.push(out.depth[head] + 1);
                    out.rank.push(r as i32);
                    queue.push((s, l - 1));
                }
            }
            head += 1;
        }
        Ok(out)
    }
}
