//! The cost-aware planner: what one speculative iteration really costs on this machine.
//!
//! A Sequoia iteration of shape `(n, d)` runs the draft once over its pending tokens (the root),
//! then once per tree level `1..d` over that level's nodes that have children, then the target
//! once over all `n` nodes, plus a fixed cost outside the two models (masks, cache compaction,
//! the tree walk). On a GPU a draft forward costs the same at width 1 and 16; on a CPU it does
//! not, so the per-level cost is read from a curve measured at several widths.

use super::plan::Plan;
use super::table::SequoiaTable;
use crate::{Error, Result};

/// Measured costs, in seconds, that [`plan_costed`] weighs.
#[derive(Debug, Clone, Copy)]
pub struct Costs<'a> {
    /// Tree sizes whose verification was measured (each in `1..=table.max_nodes()`).
    pub verify_sizes: &'a [usize],
    /// One target forward over `verify_sizes[i]` tree tokens.
    pub verify_s: &'a [f64],
    /// Widths (nodes per draft forward) whose draft cost was measured, at least one.
    pub draft_widths: &'a [usize],
    /// One draft forward over `draft_widths[i]` nodes.
    pub draft_s: &'a [f64],
    /// Per-iteration cost outside the model forwards.
    pub fixed_s: f64,
    /// One step of plain decoding (what `generate` pays per token).
    pub autoregressive_s: f64,
}

fn check_times(arg: &'static str, times: &[f64], allow_zero: bool) -> Result<()> {
    for (i, &t) in times.iter().enumerate() {
        if !t.is_finite() || t < 0.0 || (!allow_zero && t == 0.0) {
            let want = if allow_zero {
                "finite times >= 0"
            } else {
                "finite times > 0"
            };
            return Err(Error::value(arg, want, format!("{arg}[{i}] = {t}")));
        }
    }
    Ok(())
}

/// Piecewise-linear curve through measured `(x, y)` points; flat below the first point and
/// extended with the last segment's (non-negative) slope above the last.
struct Curve {
    points: Vec<(f64, f64)>,
}

impl Curve {
    fn new(arg: &'static str, xs: &[usize], ys: &[f64]) -> Result<Self> {
        if xs.is_empty() {
            return Err(Error::value(arg, "at least one measured point", "none"));
        }
        crate::error::check_len(arg, ys.len(), xs.len())?;
        let mut points: Vec<(f64, f64)> = xs
            .iter()
            .map(|&x| x as f64)
            .zip(ys.iter().copied())
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in points.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::value(
                    arg,
                    "distinct sizes",
                    format!("{} twice", w[0].0),
                ));
            }
        }
        Ok(Self { points })
    }

    fn at(&self, x: f64) -> f64 {
        let p = &self.points;
        if x <= p[0].0 {
            return p[0].1;
        }
        let i = p.partition_point(|q| q.0 < x);
        if i < p.len() {
            let (a, b) = (p[i - 1], p[i]);
            return a.1 + (b.1 - a.1) / (b.0 - a.0) * (x - a.0);
        }
        let last = p[p.len() - 1];
        if p.len() == 1 {
            return last.1;
        }
        let prev = p[p.len() - 2];
        let slope = ((last.1 - prev.1) / (last.0 - prev.0)).max(0.0);
        last.1 + slope * (x - last.0)
    }
}

/// Widths of the draft forwards one iteration of the optimal `(n, d)` tree runs: 1 for the
/// root, then per level `1..d` the number of nodes that have children.
pub fn draft_level_widths(table: &SequoiaTable, n: usize, d: usize) -> Result<Vec<usize>> {
    let tree = table.tree(n, d)?;
    let depth = tree.depth.iter().copied().max().unwrap_or(0).max(0) as usize;
    let mut has_children = vec![false; tree.parents.len()];
    for &p in &tree.parents[1..] {
        has_children[p as usize] = true;
    }
    let mut widths = vec![0usize; depth.max(1)];
    for (i, &dep) in tree.depth.iter().enumerate() {
        if has_children[i] {
            widths[dep as usize] += 1;
        }
    }
    widths[0] = 1;
    Ok(widths)
}

/// Picks the tree `(n, d)` with the fewest predicted seconds per token, where an iteration costs
/// `fixed_s + sum(draft(w) for w in draft_level_widths(n, d)) + verify(n)` and yields
/// `F[n][d]` tokens. Only measured verification sizes are considered; draft costs are
/// interpolated between measured widths. `(1, 0)`, no speculation, costs `autoregressive_s`
/// per token and is chosen when nothing beats it (speedup 1).
pub fn plan_costed(table: &SequoiaTable, costs: &Costs<'_>) -> Result<Plan> {
    if costs.verify_sizes.is_empty() {
        return Err(Error::value("sizes", "at least one tree size", "none"));
    }
    crate::error::check_len("t_verify_s", costs.verify_s.len(), costs.verify_sizes.len())?;
    check_times("t_verify_s", costs.verify_s, false)?;
    check_times("t_draft_s", costs.draft_s, false)?;
    check_times("t_fixed_s", &[costs.fixed_s], true)?;
    check_times("t_autoregressive_s", &[costs.autoregressive_s], false)?;
    for (i, &n) in costs.verify_sizes.iter().enumerate() {
        if n == 0 || n > table.max_nodes() {
            return Err(Error::value(
                "sizes",
                format!(
                    "sizes in [1, {}] (the table's max_nodes)",
                    table.max_nodes()
                ),
                format!("sizes[{i}] = {n}"),
            ));
        }
    }
    if let Some(i) = costs.draft_widths.iter().position(|&w| w == 0) {
        return Err(Error::value(
            "draft_widths",
            "widths >= 1",
            format!("draft_widths[{i}] = 0"),
        ));
    }
    let draft = Curve::new("draft_widths", costs.draft_widths, costs.draft_s)?;
    let t_ar = costs.autoregressive_s;
    let mut best = Plan {
        n: 1,
        d: 0,
        tokens_per_step: 1.0,
        s_per_token: t_ar,
        speedup: 1.0,
    };
    for (&n, &tv) in costs.verify_sizes.iter().zip(costs.verify_s) {
        if n < 2 {
            continue;
        }
        for d in 1..=table.max_depth() {
            let tokens = table.f_at(n, d);
            if !tokens.is_finite() || tokens <= 0.0 {
                continue;
            }
            let widths = draft_level_widths(table, n, d)?;
            let drafting: f64 = widths.iter().map(|&w| draft.at(w as f64)).sum();
            let s = (costs.fixed_s + drafting + tv) / tokens;
            if s < best.s_per_token {
                best = Plan {
                    n,
                    d,
                    tokens_per_step: tokens,
                    s_per_token: s,
                    speedup: t_ar / s,
                };
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speculative::sequoia::sequoia_dp;

    fn costs<'a>(sizes: &'a [usize], tv: &'a [f64], w: &'a [usize], td: &'a [f64]) -> Costs<'a> {
        Costs {
            verify_sizes: sizes,
            verify_s: tv,
            draft_widths: w,
            draft_s: td,
            fixed_s: 0.0,
            autoregressive_s: tv[0],
        }
    }

    #[test]
    fn curve_interpolates_and_extends() {
        let c = Curve::new("x", &[1, 4, 8], &[1.0, 2.5, 3.0]).unwrap();
        assert_eq!(c.at(0.0), 1.0);
        assert!((c.at(2.0) - 1.5).abs() < 1e-12);
        assert!((c.at(16.0) - 4.0).abs() < 1e-12);
        let flat = Curve::new("x", &[1, 2], &[2.0, 1.0]).unwrap();
        assert_eq!(
            flat.at(10.0),
            1.0,
            "a falling last segment is not extrapolated downwards"
        );
    }

    #[test]
    fn level_widths_count_parents_per_level() {
        let t = sequoia_dp(&[0.8], 5, 4).unwrap();
        // p has one rank: the only tree is a chain, one parent per level.
        assert_eq!(draft_level_widths(&t, 5, 4).unwrap(), vec![1, 1, 1, 1]);
        let t = sequoia_dp(&[0.5, 0.3, 0.1], 16, 3).unwrap();
        let tree = t.tree(16, 3).unwrap();
        let w = draft_level_widths(&t, 16, 3).unwrap();
        let parents: std::collections::BTreeSet<i32> = tree.parents[1..].iter().copied().collect();
        assert_eq!(w.iter().sum::<usize>(), parents.len());
    }

    #[test]
    fn flat_costs_match_the_simple_planner() {
        // Constant draft cost per level and no fixed cost: the simple planner's model.
        let t = sequoia_dp(&[0.7, 0.1], 64, 8).unwrap();
        let sizes = [1usize, 16, 64];
        let tv = [0.010, 0.011, 0.020];
        let got = plan_costed(&t, &costs(&sizes, &tv, &[1], &[0.001])).unwrap();
        let want = super::super::plan::plan(&t, &sizes, &tv, 0.001, None).unwrap();
        assert_eq!((got.n, got.d), (want.n, want.d));
        assert!((got.speedup - want.speedup).abs() < 1e-9);
    }

    #[test]
    fn expensive_verification_means_no_speculation() {
        let t = sequoia_dp(&[0.3, 0.1], 32, 6).unwrap();
        let p = plan_costed(&t, &costs(&[1, 8, 32], &[1.0, 5.0, 20.0], &[1], &[0.5])).unwrap();
        assert_eq!((p.n, p.d, p.speedup), (1, 0, 1.0));
    }

    #[test]
    fn wide_levels_cost_more_on_a_cpu_like_draft() {
        // A draft whose cost grows with width pushes the plan to narrower trees.
        let t = sequoia_dp(&[0.6, 0.15, 0.05], 32, 8).unwrap();
        let sizes = [1usize, 4, 8, 16, 32];
        let tv = [1.0, 1.05, 1.1, 1.2, 1.5];
        let flat = plan_costed(&t, &costs(&sizes, &tv, &[1], &[0.1])).unwrap();
        let steep = plan_costed(&t, &costs(&sizes, &tv, &[1, 8], &[0.1, 0.8])).unwrap();
        let widest = |p: &Plan| {
            *draft_level_widths(&t, p.n, p.d)
                .unwrap()
                .iter()
                .max()
                .unwrap()
        };
        assert!(widest(&steep) <= widest(&flat));
        assert!(steep.speedup <= flat.speedup);
        assert!(steep.speedup > 1.0);
    }

    #[test]
    fn bad_costs_are_errors() {
        let t = sequoia_dp(&[0.5], 8, 4).unwrap();
        assert!(plan_costed(&t, &costs(&[1], &[f64::NAN], &[1], &[0.1])).is_err());
        assert!(plan_costed(&t, &costs(&[1], &[1.0], &[], &[])).is_err());
        assert!(plan_costed(&t, &costs(&[1], &[1.0], &[0], &[0.1])).is_err());
        assert!(plan_costed(&t, &costs(&[9], &[1.0], &[1], &[0.1])).is_err());
        assert!(plan_costed(&t, &costs(&[1, 2], &[1.0], &[1], &[0.1])).is_err());
        assert!(plan_costed(&t, &costs(&[1], &[1.0], &[1, 1], &[0.1, 0.2])).is_err());
    }
}
