//! The Gram-matrix algorithm: the full `N x N` cosine-distance matrix, then O(N) per pick.
//!
//! Only the upper block triangle is multiplied (tiles `(I, J)` with `J >= I`, in parallel),
//! and each tile is written to both `(I, J)` and its mirror `(J, I)`, so the matrix is exactly
//! symmetric and costs `N^2 d` flops instead of `2 N^2 d`.

use rayon::prelude::*;

use super::dots::distance_block;
use super::select::{greedy, nearest_neighbour_argmax, FirstChoice};
use crate::{Error, Result};

/// Rows per tile: a `TILE x d` panel of each operand stays in L2 for d up to a few thousand,
/// and `N = 576` still gives 6 tiles for 2 threads.
const TILE: usize = 192;

/// A raw view of the distance matrix that tiles write into from several threads.
struct SharedMatrix {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: tiles write disjoint regions (see `distance_matrix`), so sharing the pointer across
// rayon's threads cannot race.
unsafe impl Sync for SharedMatrix {}

/// The symmetric cosine-distance matrix `D = 1 - X X^T` of L2-normalised rows `x` (`[n, d]`).
pub(crate) fn distance_matrix(x: &[f32], n: usize, d: usize) -> Result<Vec<f32>> {
    let len = n
        .checked_mul(n)
        .ok_or_else(|| Error::value("features", "fewer tokens", format!("{n} tokens")))?;
    let mut dist = vec![0.0f32; len];
    let blocks = n.div_ceil(TILE);
    let pairs: Vec<(usize, usize)> = (0..blocks)
        .flat_map(|i| (i..blocks).map(move |j| (i, j)))
        .collect();
    let shared = SharedMatrix {
        ptr: dist.as_mut_ptr(),
        n,
    };
    pairs.into_par_iter().try_for_each(|(bi, bj)| {
        let (r0, r1) = (bi * TILE, ((bi + 1) * TILE).min(n));
        let (c0, c1) = (bj * TILE, ((bj + 1) * TILE).min(n));
        let (h, w) = (r1 - r0, c1 - c0);
        let mut tile = vec![0.0f32; h * w];
        distance_block(&x[r0 * d..r1 * d], &x[c0 * d..c1 * d], d, &mut tile, w)?;
        let shared = &shared;
        for r in 0..h {
            for c in 0..w {
                let (i, j) = (r0 + r, c0 + c);
                if bi == bj && j < i {
                    continue; // the mirror of the upper triangle fills it
                }
                let v = tile[r * w + c];
                // SAFETY: i, j < n. Tile (bi, bj) with bj >= bi writes the entries (i, j) of
                // its own block and their mirrors (j, i), which lie in block (bj, bi); no
                // other tile writes either block, and diagonal tiles write only j >= i and
                // mirrors. `dist` outlives the parallel loop.
                unsafe {
                    *shared.ptr.add(i * shared.n + j) = v;
                    *shared.ptr.add(j * shared.n + i) = v;
                }
            }
        }
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
        FirstChoice::MostIsolated => {
            let nn: Vec<f32> = dist
                .par_chunks(n)
                .enumerate()
                .map(|(i, row)| nearest_distance(row, i))
                .collect();
            nearest_neighbour_argmax(&nn)
        }
    };
    greedy(n, k, first, |c, _, out| {
        out.copy_from_slice(&dist[c * n..(c + 1) * n]);
        Ok(())
    })
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
