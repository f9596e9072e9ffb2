//! Sequoia's dynamic program for the optimal static tree, its heap fast path, the planner and
//! the acceptance-vector estimate.
//!
//! `p[k-1]` is the probability that the `k`-th ranked child of a node is the accepted one.
//! `T[m][l][b]` is the best expected number of accepted nodes (root included) over trees of
//! exactly `m` nodes, depth at most `l` and `b` root children:
//! `T[1][l][0] = 1`, `T[m][l][b] = max_y T[y][l][b-1] + p_b F[m-y][l-1]`, and
//! `F[m][l] = max_b T[m][l][b]`. Cost `O(n^2 D B)`.
//!
//! Performance, all of it exact (every build and thread count gives bit-identical tables):
//! - the split `y` only ranges where both parts are feasible, and infeasible entries are
//!   `-inf`, so no `0 * -inf = NaN` can occur (layers with `p_b = 0` are window maxima);
//! - the small last subtrees (`1..=8` nodes), usually optimal when `p_b` is small, are
//!   evaluated for all sizes of a layer at once, vectorised across sizes;
//! - the rest of each cell is scanned from the top in growing blocks, skipping what a bound
//!   (`T` non-decreasing in the first part, `F` in the last subtree) proves cannot win, and
//!   stopping as soon as the whole remaining range cannot; `F[.][l-1]` is stored reversed so
//!   the scan reads two ascending slices with eight independent accumulators (AVX2 chosen at
//!   run time);
//! - sizes are cut into bands that rayon's threads run as a pipeline: cell `m` reads only
//!   sizes below `m`, so a band can run a row once the lower bands have finished the rows
//!   before it.
//!
//! Layout: `kernels` (the vectorised inner loops), `bands` (the pipeline that fills the
//! table), `table` ([`sequoia_dp`] and reading trees back), `heap` ([`sequoia_heap`]) and `plan`
//! ([`plan()`] and [`acceptance_from_ranks`]); shared checks and [`ShapeTree`] live here.

mod bands;
mod cost;
mod heap;
mod kernels;
mod plan;
mod table;

pub use cost::{draft_level_widths, plan_costed, Costs};
pub use heap::sequoia_heap;
pub use plan::{acceptance_from_ranks, plan, Plan};
pub use table::{dp_work, sequoia_dp, sequoia_dp_bounded, SequoiaTable};

use crate::{Error, Result};

/// Largest `max_nodes` accepted by [`sequoia_dp`].
pub const MAX_NODES: usize = 1 << 16;
/// Largest table (`(max_depth + 1) (B + 1) (max_nodes + 1)` entries) accepted by [`sequoia_dp`].
pub const MAX_TABLE_ENTRIES: usize = 1 << 27;
/// Most DP cell steps ([`dp_work`]) that [`sequoia_dp`] takes on unless the caller raises it:
/// 2^37. Measured here (2 shared AMD EPYC cores): `[0.6, 0.2]`, 8192 nodes, depth 600
/// (work 8.1e10) solved in 3.8 s; the DP prunes most of the estimated steps.
pub const DEFAULT_MAX_WORK: u64 = 1 << 37;

/// Checks an acceptance vector: non-empty, finite, non-negative, summing to at most 1.
pub fn validate_acceptance(p: &[f64]) -> Result<()> {
    if p.is_empty() {
        return Err(Error::value(
            "p",
            "a non-empty acceptance vector",
            "an empty array",
        ));
    }
    for (k, &v) in p.iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::value(
                "p",
                "finite probabilities",
                format!("p[{k}] = {v}"),
            ));
        }
        if v < 0.0 {
            return Err(Error::value(
                "p",
                "non-negative probabilities",
                format!("p[{k}] = {v}"),
            ));
        }
    }
    let sum: f64 = p.iter().sum();
    if sum > 1.0 + 1e-6 {
        return Err(Error::value(
            "p",
            "probabilities summing to at most 1",
            format!("sum {sum}"),
        ));
    }
    Ok(())
}

/// A static tree shape from the DP or the heap: parents, depth and rank (0-based).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeTree {
    /// `parents[0] = -1`, `parents[i] < i`.
    pub parents: Vec<i32>,
    /// Depth of every node.
    pub depth: Vec<i32>,
    /// Which draft candidate (0 = top-1) each node takes under its parent.
    pub rank: Vec<i32>,
}

/// Expected accepted nodes of any tree: the sum over nodes of the product of `p[rank]` along
/// the path from the root.
pub fn tree_value(p: &[f64], parents: &[i32]) -> Result<f64> {
    validate_acceptance(p)?;
    super::tree::validate_parents(parents)?;
    let ranks = super::tree::ranks(parents)?;
    let mut prod = vec![1.0f64; parents.len()];
    for i in 1..parents.len() {
        let r = ranks[i] as usize;
        let pr = if r < p.len() { p[r] } else { 0.0 };
        prod[i] = prod[parents[i] as usize] * pr;
    }
    Ok(prod.iter().sum())
}

#[cfg(test)]
mod tests;
