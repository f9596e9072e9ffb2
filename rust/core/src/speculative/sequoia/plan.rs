//! The hardware-aware planner over a solved table, and the acceptance-vector estimate from
//! observed ranks.

use super::table::SequoiaTable;
use crate::{Error, Result};

/// The planner's choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Tree size.
    pub n: usize,
    /// Tree depth (draft steps per verification).
    pub d: usize,
    /// Expected tokens per target call, `F[n][d]`.
    pub tokens_per_step: f64,
    /// Predicted seconds per generated token, `(d t_draft + t_verify(n)) / F[n][d]`.
    pub s_per_token: f64,
    /// `t_autoregressive / s_per_token`.
    pub speedup: f64,
}

/// Picks `(n, d)` minimising `(d * t_draft + t_verify(n)) / F[n][d]` over the measured `sizes`
/// and every depth of the table. `t_autoregressive` is the time of one plain decoding step;
/// `None` takes `t_verify` of the smallest size.
pub fn plan(
    table: &SequoiaTable,
    sizes: &[usize],
    t_verify: &[f64],
    t_draft: f64,
    t_autoregressive: Option<f64>,
) -> Result<Plan> {
    if sizes.is_empty() {
        return Err(Error::value("sizes", "at least one tree size", "none"));
    }
    crate::error::check_len("t_verify_s", t_verify.len(), sizes.len())?;
    if t_draft.is_nan() || t_draft < 0.0 || t_draft.is_infinite() {
        return Err(Error::value("t_draft_s", "a finite time >= 0", t_draft));
    }
    for (i, (&n, &tv)) in sizes.iter().zip(t_verify).enumerate() {
        if n == 0 || n > table.max_nodes {
            return Err(Error::value(
                "sizes",
                format!("sizes in [1, {}] (the table's max_nodes)", table.max_nodes),
                format!("sizes[{i}] = {n}"),
            ));
        }
        if tv.is_nan() || tv <= 0.0 || tv.is_infinite() {
            return Err(Error::value(
                "t_verify_s",
                "finite times > 0",
                format!("t_verify_s[{i}] = {tv}"),
            ));
        }
    }
    let smallest = (0..sizes.len()).min_by_key(|&i| sizes[i]).unwrap_or(0);
    let t_ar = t_autoregressive.unwrap_or(t_verify[smallest]);
    if t_ar.is_nan() || t_ar <= 0.0 || t_ar.is_infinite() {
        return Err(Error::value(
            "t_autoregressive_s",
            "a finite time > 0",
            t_ar,
        ));
    }
    let mut best: Option<Plan> = None;
    for (&n, &tv) in sizes.iter().zip(t_verify) {
        for d in 0..=table.max_depth {
            let tokens = table.f_at(n, d);
            if tokens <= 0.0 {
                continue;
            }
            let s = (d as f64 * t_draft + tv) / tokens;
            if best.is_none_or(|b| s < b.s_per_token) {
                best = Some(Plan {
                    n,
                    d,
                    tokens_per_step: tokens,
                    s_per_token: s,
                    speedup: t_ar / s,
                });
            }
        }
    }
    best.ok_or_else(|| Error::value("sizes", "at least one size with a feasible tree", "none"))
}

/// Estimates `p` from observed accepted ranks: `ranks[i]` is the 0-based rank of the child
/// accepted at one verified node, or `-1` when none of its children was accepted.
/// `p[k] = count(rank == k) / len(ranks)`.
pub fn acceptance_from_ranks(ranks: &[i64], width: usize) -> Result<Vec<f64>> {
    if width == 0 {
        return Err(Error::value("width", "at least 1", width));
    }
    if ranks.is_empty() {
        return Err(Error::value(
            "accepted_ranks",
            "at least one observation",
            "none",
        ));
    }
    let mut counts = crate::buffer::try_vec("width", "the acceptance vector", width, 0u64)?;
    for (i, &r) in ranks.iter().enumerate() {
        if r == -1 {
            continue;
        }
        if r < -1 || r as usize >= width {
            return Err(Error::value(
                "accepted_ranks",
                format!("ranks in [0, {width}) or -1 (none accepted)"),
                format!("accepted_ranks[{i}] = {r}"),
            ));
        }
        counts[r as usize] += 1;
    }
    let total = ranks.len() as f64;
    Ok(counts.into_iter().map(|c| c as f64 / total).collect())
}
