//! The Gram-matrix algorithm: the full `N x N` cosine-distance matrix, then O(N) per pick.
//!
//! Only the upper block triangle is multiplied (tiles `(I, J)` with `J >= I`, in parallel),
//! and each tile is written to both `(I, J)` and its mirror `(J, I)`, so the matrix is exactly
//! symmetric and costs `N^2 d` flops instead of `2 N^2 d`. The tiles come from float32 SGEMM
//! ([`distance_matrix`]) or, where the CPU has AMX, from bf16 tiles at about 17 bits
//! ([`super::amx::distance_matrix`]), whose near-tie decisions [`select_refined`] recomputes in
//! float32.

use rayon::prelude::*;

use super::amx;
use super::dots::{distance_block, dot};
use super::select::{argmax, greedy, greedy_with, nearest_neighbour_argmax, FirstChoice};
use crate::buffer::Scratch;
use crate::{Error, Result};

/// Rows per tile: a `TILE x d` panel of each operand stays in L2 for d up to a few thousand,
/// and `N = 576` still gives 6 tiles for 2 threads.
pub(crate) const TILE: usize = 192;

/// A raw view of the `n x n` distance matrix that tiles write into from several threads.
pub(crate) struct SharedMatrix {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: tiles write disjoint regions (see `distance_matrix`), so sharing the pointer across
// rayon's threads cannot race.
unsafe impl Sync for SharedMatrix {}

impl SharedMatrix {
    /// A view of `dist`, which must hold `n * n` floats.
    pub(crate) fn new(dist: &mut [f32], n: usize) -> Self {
        assert_eq!(
            dist.len(),
            n * n,
            "SharedMatrix: {} floats for n = {n}",
            dist.len()
        );
        SharedMatrix {
            ptr: dist.as_mut_ptr(),
            n,
        }
    }

    /// Writes the `rows x cols` tile `tile` (row stride `ld`, values mapped by `f`) at
    /// `(r0, c0)` and its transpose at `(c0, r0)`; a `diagonal` tile (`r0 == c0`) writes only
    /// its upper triangle and the mirror of that. Both are written row by row: the mirror
    /// reads the tile down its columns (it is in cache) instead of writing the matrix down
    /// its columns.
    ///
    /// # Safety
    /// The tile lies inside the matrix; no other thread writes or reads the tile's block or
    /// its mirror block meanwhile; the matrix outlives the view.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn write_tile_and_mirror(
        &self,
        tile: &[f32],
        ld: usize,
        (r0, c0): (usize, usize),
        (rows, cols): (usize, usize),
        diagonal: bool,
        f: impl Fn(f32) -> f32,
    ) {
        debug_assert!(r0 + rows <= self.n && c0 + cols <= self.n);
        let n = self.n;
        for r in 0..rows {
            let from = if diagonal { r } else { 0 };
            for c in from..cols {
                // SAFETY: inside the matrix and owned by the caller (see the contract).
                unsafe { *self.ptr.add((r0 + r) * n + c0 + c) = f(tile[r * ld + c]) };
            }
        }
        for c in 0..cols {
            let to = if diagonal { c } else { rows };
            for r in 0..to {
                // SAFETY: as above, the mirror entry.
                unsafe { *self.ptr.add((c0 + c) * n + r0 + r) = f(tile[r * ld + c]) };
            }
        }
    }
}

/// What the distance matrix is, for the error of a refused size.
pub(crate) fn matrix_what(n: usize) -> String {
    format!(
        "the {n} x {n} float32 distance matrix of method \"gram\" (\"matrix_free\" needs O(n d))"
    )
}

/// The symmetric cosine-distance matrix `D = 1 - X X^T` of L2-normalised rows `x` (`[n, d]`).
pub(crate) fn distance_matrix(x: &[f32], n: usize, d: usize) -> Result<Scratch<f32>> {
    let len = n
        .checked_mul(n)
        .ok_or_else(|| Error::value("features", "fewer tokens", format!("{n} tokens")))?;
    let mut dist = Scratch::new("features", &matrix_what(n), len)?;
    let blocks = n.div_ceil(TILE);
    let pairs: Vec<(usize, usize)> = (0..blocks)
        .flat_map(|i| (i..blocks).map(move |j| (i, j)))
        .collect();
    let shared = SharedMatrix::new(&mut dist, n);
    pairs.into_par_iter().try_for_each(|(bi, bj)| {
        let (r0, r1) = (bi * TILE, ((bi + 1) * TILE).min(n));
        let (c0, c1) = (bj * TILE, ((bj + 1) * TILE).min(n));
        let (h, w) = (r1 - r0, c1 - c0);
        let mut tile = vec![0.0f32; h * w];
        distance_block(&x[r0 * d..r1 * d], &x[c0 * d..c1 * d], d, &mut tile, w)?;
        // SAFETY: tile (bi, bj) with bj >= bi writes its own block and the mirror block
        // (bj, bi); no other tile writes either, and `dist` outlives the parallel loop.
        unsafe { shared.write_tile_and_mirror(&tile, w, (r0, c0), (h, w), bi == bj, |v| v) };
        Ok::<(), Error>(())
    })?;
    Ok(dist)
}

/// Greedy max-min selection of `k` of the `n` normalised rows `x` through the full matrix.
pub(crate) fn select(
    x: &[f32],
    n: usize,
    d: usize,
    k: usize,
    first: FirstChoice,
) -> Result<(Vec<usize>, f32)> {
    let dist = distance_matrix(x, n, d)?;
    let first = match first {
        FirstChoice::Token(t) => t,
        FirstChoice::MostIsolated => nearest_neighbour_argmax(&nearest_distances(&dist, n)),
    };
    greedy(n, k, first, |c, _, out| {
        out.copy_from_slice(&dist[c * n..(c + 1) * n]);
        Ok(())
    })
}

/// Float32 distances, computed only where the approximate AMX matrix cannot decide.
struct Exact<'a> {
    /// The features as given, and their rows' norms.
    features: &'a [f32],
    norms: &'a [f32],
    d: usize,
    n: usize,
    /// The approximate matrix, every entry within `EPS` of the float32 distance.
    dist: &'a [f32],
}

impl Exact<'_> {
    fn distance(&self, i: usize, j: usize) -> f32 {
        let (d, x) = (self.d, self.features);
        let raw = dot(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]);
        1.0 - raw / self.norms[i] / self.norms[j]
    }

    /// The float32 minimum distance from `c` to `others` (`+inf` when empty).
    ///
    /// Only the entries whose approximate distance is within `2 * EPS` of the approximate
    /// minimum can hold the float32 minimum (any other is more than `EPS` above the minimum
    /// entry's float32 value), so only those are computed: usually one.
    fn min_distance(&self, c: usize, others: impl Iterator<Item = usize> + Clone) -> f32 {
        let row = &self.dist[c * self.n..(c + 1) * self.n];
        let approx = others.clone().fold(f32::INFINITY, |m, q| m.min(row[q]));
        let limit = approx + 2.0 * amx::EPS;
        others
            .filter(|&q| row[q] <= limit)
            .fold(f32::INFINITY, |m, q| m.min(self.distance(c, q)))
    }
}

/// [`select`] on the AMX matrix, whose entries are within [`amx::EPS`] of float32 ones, from
/// the raw `features` and their row `norms` ([`super::dots::row_norms`]).
///
/// Every decision is the float32 one: where other candidates come within `2 * EPS` of the
/// best approximate value (a near-tie the approximation could get wrong), their float32
/// values decide (lowest index on ties), and the objective is likewise taken in float32 for
/// the picks within `2 * EPS` of the smallest value. A float32 value needs the dot products
/// of only the pairs within `2 * EPS` of the approximate minimum (see
/// [`Exact::min_distance`]), so a refined step costs a few `d`-long dot products.
pub(crate) fn select_refined(
    features: &[f32],
    norms: &[f32],
    n: usize,
    d: usize,
    k: usize,
    first: FirstChoice,
) -> Result<(Vec<usize>, f32)> {
    let dist = amx::distance_matrix(features, norms, n, d)?;
    let window = 2.0 * amx::EPS;
    let exact = Exact {
        features,
        norms,
        d,
        n,
        dist: &dist,
    };
    let first = match first {
        FirstChoice::Token(t) => t,
        FirstChoice::MostIsolated => {
            let nn = nearest_distances(&dist, n);
            let (best, value) = argmax(&nn);
            let close: Vec<usize> = (0..n).filter(|&i| nn[i] >= value - window).collect();
            if close.len() == 1 {
                best
            } else {
                let exact_nn: Vec<f32> = close
                    .par_iter()
                    .map(|&i| exact.min_distance(i, (0..n).filter(move |&j| j != i)))
                    .collect();
                close[argmax(&exact_nn).0]
            }
        }
    };
    // Whether each later pick's value is already float32.
    let mut refined = Vec::with_capacity(k);
    let mut close = Vec::new();
    let row = |c: usize, _: &[f32], out: &mut [f32]| {
        out.copy_from_slice(&dist[c * n..(c + 1) * n]);
        Ok(())
    };
    let (picks, values) = greedy_with(n, k, first, row, |min_dist, picks| {
        let (best, value) = argmax(min_dist);
        close.clear();
        close.extend((0..n).filter(|&j| min_dist[j] >= value - window));
        refined.push(close.len() > 1);
        if close.len() == 1 {
            return Ok((best, value));
        }
        let fresh: Vec<f32> = close
            .iter()
            .map(|&c| exact.min_distance(c, picks.iter().copied()))
            .collect();
        let (at, v) = argmax(&fresh);
        Ok((close[at], v))
    })?;
    let smallest = values.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let mut objective = f32::INFINITY;
    for (step, (&value, &is_exact)) in values.iter().zip(&refined).enumerate() {
        let value = if is_exact || value > smallest + window {
            value
        } else {
            exact.min_distance(picks[step + 1], picks[..=step].iter().copied())
        };
        objective = objective.min(value);
    }
    Ok((picks, objective))
}

/// The distance from every token to its nearest other token, from the full matrix.
fn nearest_distances(dist: &[f32], n: usize) -> Vec<f32> {
    dist.par_chunks(n)
        .enumerate()
        .map(|(i, row)| nearest_distance(row, i))
        .collect()
}

/// The smallest entry of `row` other than `row[skip]` (`+inf` for a single token).
pub(crate) fn nearest_distance(row: &[f32], skip: usize) -> f32 {
    let (left, right) = row.split_at(skip.min(row.len()));
    let right = right.get(1..).unwrap_or(&[]);
    left.iter()
        .chain(right)
        .fold(f32::INFINITY, |m, &v| if v < m { v } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_matrix_is_exactly_symmetric_with_near_zero_diagonal() {
        let (n, d) = (400, 9);
        let raw: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919) % 101) as f32 - 50.0)
            .collect();
        let x = super::super::dots::normalized_rows(&raw, n, d).unwrap();
        let dist = distance_matrix(&x, n, d).unwrap();
        for i in 0..n {
            assert!(dist[i * n + i].abs() < 1e-5);
            for j in 0..n {
                assert_eq!(dist[i * n + j], dist[j * n + i]);
            }
        }
    }

    #[test]
    fn nearest_distance_skips_the_token_itself() {
        assert_eq!(nearest_distance(&[0.0, 0.5, 0.2], 0), 0.2);
        assert_eq!(nearest_distance(&[0.3, 0.0, 0.2], 1), 0.2);
        assert_eq!(nearest_distance(&[0.0], 0), f32::INFINITY);
    }
}
