//! DivPrune: visual token pruning as a Max-Min Diversity Problem.
//!
//! Given `n` token features (`[n, d]`, row-major `f32`), [`select()`] keeps `k` of them so that
//! the kept set is as diverse as the greedy max-min heuristic can make it, measured by the
//! cosine distance `D(i, j) = 1 - x_i . x_j` of L2-normalised rows:
//!
//! 1. the first pick is the most isolated token: the one whose nearest other token is farthest
//!    (or a token given by index or drawn from a seed, see [`FirstPick`]);
//! 2. every further pick is the unchosen token whose minimum distance to the chosen set is
//!    largest (farthest-point sampling, a 1/2-approximation of the max-min optimum).
//!
//! A running minimum-distance vector makes each pick O(N) after its distance row is known; an
//! explicit mask keeps chosen tokens out; ties go to the lowest index; all arithmetic is `f32`.
//! Two algorithms compute the distance rows (see [`Method`]): the Gram matrix (`N^2 d` flops,
//! `4 N^2` bytes) or matrix-free (about `N K d` flops for the picks plus a pruned
//! nearest-neighbour scan for the first one). Both give the same picks unless two candidates are
//! within a float32 rounding error of each other. On CPUs with Intel AMX the Gram matrix is
//! computed on AMX tiles ([`amx_enabled`]), and every decision its approximation cannot settle
//! is recomputed in float32.
//!
//! Inputs with NaN or infinite values or an all-zero row are rejected (cosine distance is
//! undefined); duplicate tokens are fine: a duplicate of a kept token has distance 0 and is
//! only kept once every token at a positive distance is, in which case the objective is 0.

mod amx;
mod dots;
mod gram;
mod matrix_free;
mod select;

use rayon::prelude::*;

use crate::{Error, Result};
use select::FirstChoice;

/// How the first token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstPick {
    /// DivPrune's rule: the token whose nearest other token is farthest (ties: lowest index).
    #[default]
    MostIsolated,
    /// This token index.
    Index(usize),
    /// A token drawn from `seed` (splitmix64 of the seed, modulo `n`): reproducible.
    Seed(u64),
}

/// Order of the returned indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Ascending token index, the order the kept tokens had in the sequence.
    #[default]
    Sorted,
    /// The order in which the greedy picked them.
    Greedy,
}

/// Which algorithm computes the distances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// [`Method::Gram`] whenever the matrix takes at most 1 GiB (`n <= 16384`), otherwise
    /// [`Method::MatrixFree`]. Measured on i.i.d. Gaussian features (the worst case for the
    /// matrix-free pruning), the Gram algorithm was faster at every keep ratio from 2% to 50%
    /// for `n = 576` and `n = 2880`, so the keep ratio does not enter the choice.
    #[default]
    Auto,
    /// Build the full symmetric `n x n` distance matrix (only its upper half is multiplied).
    Gram,
    /// Compute only the distance rows the picks need, in blocks, plus a pruned scan for the
    /// first pick; memory O(n d).
    MatrixFree,
}

impl std::str::FromStr for Method {
    type Err = Error;

    /// Parses the method names the Python API takes: `"auto"`, `"gram"` or `"matrix_free"`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Method::Auto),
            "gram" => Ok(Method::Gram),
            "matrix_free" => Ok(Method::MatrixFree),
            other => Err(Error::value(
                "method",
                "one of 'auto', 'gram', 'matrix_free'",
                format!("{other:?}"),
            )),
        }
    }
}

/// Options of [`select()`] and [`select_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// How the first token is chosen.
    pub first: FirstPick,
    /// Order of the returned indices.
    pub order: Order,
    /// Which algorithm computes the distances.
    pub method: Method,
}

/// The kept tokens of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Indices of the kept tokens, in the requested [`Order`].
    pub indices: Vec<usize>,
    /// The minimum cosine distance between two kept tokens (`+inf` when one token is kept).
    pub objective: f32,
}

/// Largest distance matrix [`Method::Auto`] builds, in floats (1 GiB).
const GRAM_LIMIT: usize = 1 << 28;

fn check_shape(n: usize, d: usize, k: usize, len: usize, per: &str) -> Result<()> {
    if n == 0 {
        return Err(Error::value(
            "features",
            format!("at least one token {per}"),
            "0 tokens",
        ));
    }
    if d == 0 {
        return Err(Error::value(
            "features",
            "a feature size of at least 1",
            "feature size 0",
        ));
    }
    if k == 0 || k > n {
        return Err(Error::value(
            "k",
            format!("between 1 and the number of tokens ({n})"),
            k,
        ));
    }
    let need = n
        .checked_mul(d)
        .ok_or_else(|| Error::value("features", "a smaller shape", format!("[{n}, {d}]")))?;
    if len != need {
        return Err(Error::value(
            "features",
            format!("{need} values for shape [{n}, {d}]"),
            format!("{len} values"),
        ));
    }
    Ok(())
}

fn resolve_first(first: FirstPick, n: usize) -> Result<FirstChoice> {
    Ok(match first {
        FirstPick::MostIsolated => FirstChoice::MostIsolated,
        FirstPick::Index(i) if i < n => FirstChoice::Token(i),
        FirstPick::Index(i) => {
            return Err(Error::value("first", format!("a token index below {n}"), i))
        }
        FirstPick::Seed(seed) => FirstChoice::Token(seeded_index(seed, n)),
    })
}

/// Whether the Gram algorithm runs on Intel AMX tiles in this process (see the `amx` module:
/// a CPU with AMX-BF16, Linux granting the tile state, and `FERROLM_NO_AMX` unset). Either
/// way the picks are the float32 ones up to near-ties.
pub fn amx_enabled() -> bool {
    amx::enabled()
}

/// The splitmix64 output for `seed` (a well-mixed 64-bit hash).
pub fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The token among `n` that `seed` draws as the first pick.
fn seeded_index(seed: u64, n: usize) -> usize {
    (splitmix64(seed) % n as u64) as usize
}

/// The seed image `b` of a batch draws its first token from.
fn image_seed(seed: u64, b: usize) -> u64 {
    seed.wrapping_add(b as u64)
}

/// The first token [`select_batch`] picks in each of `batch` images of `n` tokens under
/// [`FirstPick::Seed`]`(seed)`: image `b` draws from `seed + b` (wrapping). The CUDA path takes
/// its first picks from here, so that CPU and GPU pick the same tokens.
///
/// # Errors
/// [`Error::InvalidValue`] when `n` is 0.
pub fn seeded_first_picks(seed: u64, batch: usize, n: usize) -> Result<Vec<usize>> {
    if n == 0 {
        return Err(Error::value(
            "features",
            "at least one token per image",
            "0 tokens",
        ));
    }
    let mut picks = crate::buffer::try_with_capacity("batch", "the first picks", batch)?;
    picks.extend((0..batch).map(|b| seeded_index(image_seed(seed, b), n)));
    Ok(picks)
}

fn uses_gram(method: Method, n: usize) -> bool {
    match method {
        Method::Gram => true,
        Method::MatrixFree => false,
        Method::Auto => n.saturating_mul(n) <= GRAM_LIMIT,
    }
}

/// Keeps `k` of the `n` tokens in `features` (`[n, d]`, row-major) by greedy max-min
/// cosine-distance selection (DivPrune).
///
/// # Errors
/// [`Error::InvalidValue`] when `n` or `d` is 0, `k` is not in `1..=n`, the slice length is not
/// `n * d`, a first index is out of range, or a row holds NaN/inf or is all zeros.
///
/// # Example
/// ```
/// use ferrolm_core::prune::{select, Options};
/// // Three 2-D tokens: two almost equal, one orthogonal. Keeping 2 drops a near-duplicate.
/// let x = [1.0, 0.0, 0.99, 0.01, 0.0, 1.0];
/// let s = select(&x, 3, 2, 2, &Options::default()).unwrap();
/// assert_eq!(s.indices, vec![0, 2]);
/// assert!((s.objective - 1.0).abs() < 1e-6);
/// ```
pub fn select(
    features: &[f32],
    n: usize,
    d: usize,
    k: usize,
    options: &Options,
) -> Result<Selection> {
    check_shape(n, d, k, features.len(), "")?;
    let first = resolve_first(options.first, n)?;
    let rescaled = dots::rescale_extreme_rows(features, n, d)?;
    let features = rescaled.as_deref().unwrap_or(features);
    let gram = uses_gram(options.method, n);
    let (mut indices, objective) = if gram && amx::enabled() {
        // The AMX path normalises while it packs: no normalised copy of the features.
        let norms = dots::row_norms(features, n, d)?;
        gram::select_refined(features, &norms, n, d, k, first)?
    } else {
        let x = dots::normalized_rows(features, n, d)?;
        if gram {
            gram::select(&x, n, d, k, first)?
        } else {
            matrix_free::select(&x, n, d, k, first)?
        }
    };
    if options.order == Order::Sorted {
        indices.sort_unstable();
    }
    Ok(Selection { indices, objective })
}

/// [`select()`] for `batch` images at once: `features` is `[batch, n, d]` and every image keeps
/// `k` tokens. Images run in parallel; a [`FirstPick::Seed`] seeds image `b` with `seed + b`.
///
/// # Errors
/// As [`select()`]; `batch == 0` is an error. An error in one image names it.
pub fn select_batch(
    features: &[f32],
    batch: usize,
    n: usize,
    d: usize,
    k: usize,
    options: &Options,
) -> Result<Vec<Selection>> {
    if batch == 0 {
        return Err(Error::value(
            "features",
            "at least one image",
            "a batch of 0",
        ));
    }
    check_shape(n, d, k, features.len() / batch, "per image")?;
    if features.len() != batch * n * d {
        return Err(Error::value(
            "features",
            format!("{} values for shape [{batch}, {n}, {d}]", batch * n * d),
            format!("{} values", features.len()),
        ));
    }
    features
        .par_chunks(n * d)
        .enumerate()
        .map(|(b, image)| {
            let mut opts = *options;
            if let FirstPick::Seed(seed) = opts.first {
                opts.first = FirstPick::Seed(image_seed(seed, b));
            }
            select(image, n, d, k, &opts).map_err(|e| match e {
                Error::InvalidValue { arg, expected, got } => Error::InvalidValue {
                    arg,
                    expected,
                    got: format!("{got} (image {b})"),
                },
                other => other,
            })
        })
        .collect()
}

/// The objective of any kept set: the minimum cosine distance between two of `indices`
/// (`+inf` for fewer than two), with the same normalisation and `f32` arithmetic as [`select()`].
///
/// # Errors
/// As [`select()`] for `features`; an index `>= n` is an error. Repeated indices give 0.
pub fn objective(features: &[f32], n: usize, d: usize, indices: &[usize]) -> Result<f32> {
    check_shape(n, d, 1, features.len(), "")?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        return Err(Error::value(
            "indices",
            format!("token indices below {n}"),
            bad,
        ));
    }
    let rescaled = dots::rescale_extreme_rows(features, n, d)?;
    let x = dots::normalized_rows(rescaled.as_deref().unwrap_or(features), n, d)?;
    if indices.len() < 2 {
        return Ok(f32::INFINITY);
    }
    // A repeated index is a pair at distance 0; the other pairs are those of the distinct
    // indices, at most `n` of them, so neither memory nor time grows with repeats.
    let mut distinct =
        crate::buffer::try_with_capacity("indices", "the sorted indices", indices.len())?;
    distinct.extend_from_slice(indices);
    distinct.sort_unstable();
    distinct.dedup();
    let mut best = if distinct.len() < indices.len() {
        0.0f32
    } else {
        f32::INFINITY
    };
    let m = distinct.len();
    if m < 2 {
        return Ok(best);
    }
    let mut kept = crate::buffer::try_with_capacity("indices", "the kept rows", m * d)?;
    for &i in &distinct {
        kept.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    // Distance rows in blocks: O(block * m) memory instead of the m x m matrix.
    const BLOCK: usize = 256;
    for a0 in (0..m).step_by(BLOCK) {
        let rows: Vec<usize> = (a0..(a0 + BLOCK).min(m)).collect();
        let dist = dots::distance_rows(&kept, m, d, &rows)?;
        for (r, &a) in rows.iter().enumerate() {
            for &v in &dist[r * m + a + 1..(r + 1) * m] {
                best = best.min(v);
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests;
