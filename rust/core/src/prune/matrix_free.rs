//! The matrix-free algorithm: O(N K d) work and O(N d + B N) memory for small keep ratios.
//!
//! Two ideas keep it fast while staying exact (same picks as the Gram algorithm up to the
//! rounding of individual dot products):
//!
//! * **First pick with pruning.** DivPrune starts from `argmax_i nn_i`, where `nn_i` is the
//!   distance from token `i` to its nearest other token, which naively needs all `N^2` dot
//!   products. Any computed distance `D(i, j)` is an upper bound of both `nn_i` and `nn_j`. We
//!   scan the columns block by block, compute the exact `nn` of the few tokens that look most
//!   isolated after the first block (a lower bound `L` of the maximum), and drop every token
//!   whose partial minimum falls below `L`: it can never be the argmax. On clustered features
//!   (real image tokens) almost every token is dropped after the first block; on i.i.d.
//!   Gaussian features about `N / ln N` columns per token remain.
//! * **Rows computed ahead, in blocks.** Each greedy step needs the distances from the new
//!   pick to all tokens (a matrix-vector product, memory-bound). Running minima only decrease,
//!   so the next picks are very likely among the current top-`B` tokens by running minimum:
//!   we compute the rows of those `B` tokens in one matrix-matrix product (compute-bound) and
//!   use them while the pick stays inside the block; otherwise the next block is computed.
//!   The running minima are always exact, so a miss costs time, never correctness.

use rayon::prelude::*;

use super::dots::{distance_block, distance_rows};
use super::select::{greedy, FirstChoice};
use crate::Result;

/// Columns per block of the pruned nearest-neighbour scan.
const COLUMN_BLOCK: usize = 256;
/// Tokens whose full rows seed the lower bound of the first pick.
const SEED_ROWS: usize = 8;
/// Rows computed ahead per block in the greedy loop.
const AHEAD: usize = 128;

/// The exact `argmax_i nn_i` (lowest index on ties) without computing all `N^2` distances.
pub(crate) fn most_isolated(x: &[f32], n: usize, d: usize) -> Result<usize> {
    if n == 1 {
        return Ok(0);
    }
    // partial[i]: min over the distances computed so far from i to other tokens (>= nn_i).
    let mut partial = vec![f32::INFINITY; n];
    let mut exact = vec![false; n];
    let mut active: Vec<usize> = (0..n).collect();
    let mut best: Option<(usize, f32)> = None;
    let mut seeded = false;
    for c0 in (0..n).step_by(COLUMN_BLOCK) {
        let c1 = (c0 + COLUMN_BLOCK).min(n);
        scan_block(x, d, &active, c0, c1, &mut partial)?;
        if !seeded {
            seeded = true;
            // Seed the bound with the exact nn of the most isolated-looking tokens.
            let mut order = active.clone();
            let take = SEED_ROWS.min(order.len());
            order.select_nth_unstable_by(take - 1, |&a, &b| {
                partial[b].total_cmp(&partial[a]).then(a.cmp(&b))
            });
            order.truncate(take);
            let rows = distance_rows(x, n, d, &order)?;
            for (r, &i) in order.iter().enumerate() {
                partial[i] = super::gram::nearest_distance(&rows[r * n..(r + 1) * n], i);
                exact[i] = true;
                best = better(best, i, partial[i]);
            }
        }
        let bound = best.map_or(f32::NEG_INFINITY, |b| b.1);
        active.retain(|&i| !exact[i] && partial[i] >= bound);
        if active.is_empty() {
            break;
        }
    }
    // Survivors were scanned against every column block: their partial minimum is exact.
    for &i in &active {
        best = better(best, i, partial[i]);
    }
    Ok(best.map_or(0, |b| b.0))
}

fn better(best: Option<(usize, f32)>, i: usize, value: f32) -> Option<(usize, f32)> {
    match best {
        Some((j, v)) if v > value || (v == value && j < i) => Some((j, v)),
        _ => Some((i, value)),
    }
}

/// Updates `partial` with the distances between the `active` tokens and the tokens
/// `c0..c1` (both directions, the diagonal excluded).
fn scan_block(
    x: &[f32],
    d: usize,
    active: &[usize],
    c0: usize,
    c1: usize,
    partial: &mut [f32],
) -> Result<()> {
    let w = c1 - c0;
    let threads = rayon::current_num_threads().max(1);
    let per = active.len().div_ceil(4 * threads).clamp(16, 256);
    let cols = &x[c0 * d..c1 * d];
    // Each task: (its tokens, their row minima, column minima over its tokens).
    let results: Vec<(Vec<f32>, Vec<f32>)> = active
        .par_chunks(per)
        .map(|group| {
            let mut packed = vec![0.0f32; group.len() * d];
            for (dst, &i) in packed.chunks_mut(d).zip(group) {
                dst.copy_from_slice(&x[i * d..(i + 1) * d]);
            }
            let mut tile = vec![0.0f32; group.len() * w];
            distance_block(&packed, cols, d, &mut tile, w)?;
            let mut row_min = vec![f32::INFINITY; group.len()];
            let mut col_min = vec![f32::INFINITY; w];
            for (r, &i) in group.iter().enumerate() {
                let row = &tile[r * w..(r + 1) * w];
                let mut m = f32::INFINITY;
                for (c, (&v, cm)) in row.iter().zip(col_min.iter_mut()).enumerate() {
                    if c0 + c == i {
                        continue;
                    }
                    if v < m {
                        m = v;
                    }
                    if v < *cm {
                        *cm = v;
                    }
                }
                row_min[r] = m;
            }
            Ok((row_min, col_min))
        })
        .collect::<Result<_>>()?;
    for (group, (row_min, col_min)) in active.chunks(per).zip(results) {
        for (&i, m) in group.iter().zip(row_min) {
            partial[i] = partial[i].min(m);
        }
        for (c, m) in col_min.into_iter().enumerate() {
            partial[c0 + c] = partial[c0 + c].min(m);
        }
    }
    Ok(())
}

/// Greedy max-min selection of `k` of the `n` normalised rows `x` without an `N x N` matrix.
pub(crate) fn select(
    x: &[f32],
    n: usize,
    d: usize,
    k: usize,
    first: FirstChoice,
) -> Result<(Vec<usize>, f32)> {
    let first = match first {
        FirstChoice::Token(t) => t,
        FirstChoice::MostIsolated => most_isolated(x, n, d)?,
    };
    // slot[t]: the row of `block` holding token t's distances, if computed ahead.
    let mut slot = vec![usize::MAX; n];
    let mut members: Vec<usize> = Vec::new();
    let mut block: Vec<f32> = Vec::new();
    let mut remaining = k;
    greedy(n, k, first, |c, min_dist, out| {
        remaining -= 1;
        if slot[c] == usize::MAX {
            for &t in &members {
                slot[t] = usize::MAX;
            }
            // The pick plus the unchosen tokens with the largest running minima.
            let want = AHEAD.min(remaining.max(1));
            let mut order: Vec<usize> = (0..n)
                .filter(|&t| t != c && min_dist[t] != f32::NEG_INFINITY)
                .collect();
            let extra = (want - 1).min(order.len());
            if extra > 0 && extra < order.len() {
                order.select_nth_unstable_by(extra - 1, |&a, &b| {
                    min_dist[b].total_cmp(&min_dist[a]).then(a.cmp(&b))
                });
            }
            order.truncate(extra);
            members = std::iter::once(c).chain(order).collect();
            block = distance_rows(x, n, d, &members)?;
            for (r, &t) in members.iter().enumerate() {
                slot[t] = r;
            }
        }
        let r = slot[c];
        out.copy_from_slice(&block[r * n..(r + 1) * n]);
        Ok(())
    })
}

/// The argmax of the exact nearest-neighbour distances, by brute force (for tests).
#[cfg(test)]
pub(crate) fn most_isolated_brute_force(x: &[f32], n: usize, d: usize) -> usize {
    let all: Vec<usize> = (0..n).collect();
    let rows = distance_rows(x, n, d, &all).unwrap();
    let nn: Vec<f32> = (0..n)
        .map(|i| super::gram::nearest_distance(&rows[i * n..(i + 1) * n], i))
        .collect();
    super::select::argmax(&nn).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let raw: Vec<f32> = (0..n * d)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        super::super::dots::normalized_rows(&raw, n, d).unwrap()
    }

    #[test]
    fn pruned_first_pick_equals_brute_force() {
        for (n, d, seed) in [
            (700, 16, 1),
            (300, 64, 2),
            (1, 4, 3),
            (2, 3, 4),
            (513, 8, 5),
        ] {
            let x = features(n, d, seed);
            assert_eq!(
                most_isolated(&x, n, d).unwrap(),
                most_isolated_brute_force(&x, n, d),
                "n={n} d={d}"
            );
        }
    }
}
