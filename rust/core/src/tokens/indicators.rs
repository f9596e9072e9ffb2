//! Weight-based indicators of under-trained tokens, on a row-major `[rows, dim]` float32 matrix.
//!
//! The unembedding rows of tokens that never occur in training all receive the same gradient
//! (pushing their logits down), so they drift together along one shared direction. Following
//! Magikarp, the dominant direction of the matrix (its first right singular vector, the part
//! every row shares) is projected out first; then each row's cosine distance to the mean of a
//! reference set of known-unused tokens ranks the vocabulary: small distance, likely untrained.

use rayon::prelude::*;

use crate::{Error, Result};

const ROWS_PER_TASK: usize = 256;

fn check_matrix(matrix: &[f32], rows: usize, dim: usize) -> Result<()> {
    if dim == 0 || rows == 0 {
        return Err(Error::value(
            "matrix",
            "a non-empty 2-D matrix",
            format!("shape [{rows}, {dim}]"),
        ));
    }
    if matrix.len() != rows * dim {
        return Err(Error::value(
            "matrix",
            format!("{rows} x {dim} = {} values", rows * dim),
            format!("{} values", matrix.len()),
        ));
    }
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    // Four independent f32 accumulators vectorise well; each chunk is then summed in f64.
    let mut acc = [0f32; 8];
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (x, y) in (&mut chunks_a).zip(&mut chunks_b) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut total: f64 = acc.iter().map(|&v| f64::from(v)).sum();
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        total += f64::from(*x) * f64::from(*y);
    }
    total
}

/// The L2 norm of every row.
pub fn row_norms(matrix: &[f32], rows: usize, dim: usize) -> Result<Vec<f32>> {
    check_matrix(matrix, rows, dim)?;
    Ok(matrix
        .par_chunks_exact(dim)
        .with_min_len(ROWS_PER_TASK)
        .map(|r| dot(r, r).sqrt() as f32)
        .collect())
}

/// The dominant right singular vector of the matrix (unit norm): the top eigenvector of `MᵀM`
/// by Lanczos iteration ([`super::lanczos`]) started from the mean row. The sign is fixed so
/// the mean row projects positively.
///
/// Each iteration is one pass over the matrix (`Σ (row·v) row`, accumulated in f64), at most
/// `iterations` of them; the iteration stops once no component of the vector moves by more
/// than float32 resolution (1e-7), which took 6 passes on Gemma-3's unembedding where power
/// iteration took 11.
pub fn dominant_direction(
    matrix: &[f32],
    rows: usize,
    dim: usize,
    iterations: usize,
) -> Result<Vec<f32>> {
    check_matrix(matrix, rows, dim)?;
    // Fixed blocks of rows, summed in order: the result does not depend on how rayon splits
    // the work (a fold's pieces do), so it is the same on every run and every thread count.
    // Lanczos would carry a last-bit difference into the answer when the top eigenvalue is
    // nearly repeated.
    const BLOCK_ROWS: usize = 4096;
    let sum_rows = |v: Option<&[f32]>| -> Vec<f64> {
        let blocks: Vec<Vec<f64>> = matrix
            .par_chunks(BLOCK_ROWS * dim)
            .map(|block| {
                let mut acc = vec![0f64; dim];
                for row in block.chunks_exact(dim) {
                    let w = v.map_or(1.0, |v| dot(row, v));
                    for (a, &x) in acc.iter_mut().zip(row) {
                        *a += w * f64::from(x);
                    }
                }
                acc
            })
            .collect();
        let mut total = vec![0f64; dim];
        for block in blocks {
            total.iter_mut().zip(block).for_each(|(t, b)| *t += b);
        }
        total
    };
    let mean = sum_rows(None);
    let v = match super::lanczos::unit(mean.clone()) {
        Some(v) => v,
        None => {
            let mut e = vec![0f64; dim];
            e[0] = 1.0;
            e
        }
    };
    let v = super::lanczos::top_eigenvector(v, iterations, 1e-7, |v| {
        let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let product = sum_rows(Some(&v32));
        product.iter().all(|x| x.is_finite()).then_some(product)
    });
    let sign: f64 = v.iter().zip(&mean).map(|(a, b)| a * b).sum();
    let sign = if sign < 0.0 { -1.0 } else { 1.0 };
    Ok(v.into_iter().map(|x| (sign * x) as f32).collect())
}

/// Cosine distance (`1 - cos`) of every row to the mean of the `reference` rows, after
/// projecting `remove` (a unit vector, or nothing) out of every row and of the mean.
///
/// Rows that are zero after the projection get distance 1 (no direction, no similarity).
pub fn cosine_distance_to_reference(
    matrix: &[f32],
    rows: usize,
    dim: usize,
    reference: &[u32],
    remove: Option<&[f32]>,
) -> Result<Vec<f32>> {
    check_matrix(matrix, rows, dim)?;
    if reference.is_empty() {
        return Err(Error::value(
            "reference",
            "at least one known-unused token id",
            "an empty set",
        ));
    }
    if let Some(&bad) = reference.iter().find(|&&r| r as usize >= rows) {
        return Err(Error::value(
            "reference",
            format!("token ids below {rows}"),
            bad,
        ));
    }
    if let Some(d) = remove {
        crate::error::check_len("remove", d.len(), dim)?;
    }
    let project = |row: &[f32]| -> Vec<f32> {
        match remove {
            Some(d) => {
                let p = dot(row, d) as f32;
                row.iter().zip(d).map(|(&x, &y)| x - p * y).collect()
            }
            None => row.to_vec(),
        }
    };
    let mut mean = vec![0f64; dim];
    for &r in reference {
        let start = r as usize * dim;
        for (m, x) in mean.iter_mut().zip(project(&matrix[start..start + dim])) {
            *m += f64::from(x);
        }
    }
    let mean: Vec<f32> = mean
        .iter()
        .map(|&m| (m / reference.len() as f64) as f32)
        .collect();
    let mean_norm = dot(&mean, &mean).sqrt();
    if mean_norm == 0.0 || !mean_norm.is_finite() {
        return Err(Error::value(
            "reference",
            "rows whose mean is a non-zero, finite vector",
            "a zero or non-finite mean",
        ));
    }
    Ok(matrix
        .par_chunks_exact(dim)
        .with_min_len(ROWS_PER_TASK)
        .map(|row| {
            let p = project(row);
            let n = dot(&p, &p).sqrt();
            if n == 0.0 {
                1.0
            } else {
                (1.0 - dot(&p, &mean) / (n * mean_norm)) as f32
            }
        })
        .collect())
}

/// For every row, how many rows (itself included) hold exactly the same values.
///
/// Unused tokens are often left at one shared initial value (zeros, or a copy of one vector),
/// which makes large groups of identical rows a strong sign of untrained tokens.
pub fn identical_row_counts(matrix: &[f32], rows: usize, dim: usize) -> Result<Vec<u32>> {
    check_matrix(matrix, rows, dim)?;
    let hash = |row: &[f32]| -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for &x in row {
            // -0.0 and 0.0 compare equal: hash them alike.
            let bits = if x == 0.0 { 0 } else { x.to_bits() };
            h = (h ^ u64::from(bits)).wrapping_mul(0x100000001b3);
        }
        h
    };
    let mut keyed: Vec<(u64, u32)> = matrix
        .par_chunks_exact(dim)
        .enumerate()
        .with_min_len(ROWS_PER_TASK)
        .map(|(i, r)| (hash(r), i as u32))
        .collect();
    keyed.par_sort_unstable();
    let row = |i: u32| &matrix[i as usize * dim..(i as usize + 1) * dim];
    let mut counts = vec![1u32; rows];
    let mut start = 0;
    while start < keyed.len() {
        let mut end = start + 1;
        while end < keyed.len() && keyed[end].0 == keyed[start].0 {
            end += 1;
        }
        if end - start > 1 {
            // Same hash: group by exact equality (collisions are possible, if unlikely).
            let mut members: Vec<u32> = keyed[start..end].iter().map(|k| k.1).collect();
            while let Some(first) = members.first().copied() {
                let (same, rest): (Vec<u32>, Vec<u32>) =
                    members.into_iter().partition(|&m| row(m) == row(first));
                for &m in &same {
                    counts[m as usize] = same.len() as u32;
                }
                members = rest;
            }
        }
        start = end;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_cosine(m: &[f32], dim: usize, reference: &[u32]) -> Vec<f32> {
        let mut mean = vec![0f64; dim];
        for &r in reference {
            for k in 0..dim {
                mean[k] += f64::from(m[r as usize * dim + k]) / reference.len() as f64;
            }
        }
        m.chunks(dim)
            .map(|row| {
                let d: f64 = row.iter().zip(&mean).map(|(&a, b)| f64::from(a) * b).sum();
                let na: f64 = row
                    .iter()
                    .map(|&a| f64::from(a).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let nb: f64 = mean.iter().map(|b| b * b).sum::<f64>().sqrt();
                if na == 0.0 {
                    1.0
                } else {
                    (1.0 - d / (na * nb)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn dominant_direction_finds_a_shared_offset() {
        let dim = 4;
        let rows = 50;
        let mut m = Vec::new();
        for i in 0..rows {
            let noise = (i as f32 * 0.37).sin() * 0.1;
            m.extend_from_slice(&[3.0 + noise, 3.0 - noise, 0.05 * noise, 0.0]);
        }
        let v = dominant_direction(&m, rows, dim, 50).unwrap();
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!((v[0] - s).abs() < 1e-2 && (v[1] - s).abs() < 1e-2, "{v:?}");
    }

    #[test]
    fn identical_rows_are_counted_per_group() {
        let m = [0.0, 0.0, 1.0, 2.0, -0.0, 0.0, 1.0, 2.0, 1.0, 2.0, 5.0, 5.0];
        assert_eq!(
            identical_row_counts(&m, 6, 2).unwrap(),
            vec![2, 3, 2, 3, 3, 1]
        );
    }

    #[test]
    fn bad_shapes_and_references_are_rejected() {
        let m = [1.0f32; 6];
        assert!(row_norms(&m, 4, 2).is_err());
        assert!(cosine_distance_to_reference(&m, 3, 2, &[], None).is_err());
        let e = cosine_distance_to_reference(&m, 3, 2, &[3], None).unwrap_err();
        assert!(e.to_string().contains("token ids below 3"), "{e}");
        let z = [0.0f32; 6];
        assert!(cosine_distance_to_reference(&z, 3, 2, &[0], None).is_err());
    }

    proptest! {
        #[test]
        fn cosine_matches_a_naive_reference(
            rows in 2usize..30, dim in 1usize..20, seed in 0u64..1000,
        ) {
            let m: Vec<f32> = (0..rows * dim)
                .map(|i| (((i as u64 + 1) * (seed + 7919)) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let reference = [0u32, (rows - 1) as u32];
            let Ok(fast) = cosine_distance_to_reference(&m, rows, dim, &reference, None) else {
                return Ok(()); // a zero mean is rejected, checked above
            };
            let slow = naive_cosine(&m, dim, &reference);
            for (a, b) in fast.iter().zip(&slow) {
                prop_assert!((a - b).abs() < 1e-4, "{} vs {}", a, b);
            }
            let norms = row_norms(&m, rows, dim).unwrap();
            for (n, row) in norms.iter().zip(m.chunks(dim)) {
                let r: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                prop_assert!((n - r).abs() < 1e-4);
            }
        }

        #[test]
        fn removing_a_direction_makes_rows_orthogonal_to_it(rows in 2usize..20, dim in 2usize..10) {
            let m: Vec<f32> = (0..rows * dim).map(|i| ((i * 31 % 17) as f32) - 8.0).collect();
            let v = dominant_direction(&m, rows, dim, 100).unwrap();
            let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            prop_assert!((n - 1.0).abs() < 1e-3);
            // Distances are finite and within [0, 2].
            if let Ok(d) = cosine_distance_to_reference(&m, rows, dim, &[0], Some(&v)) {
                for x in d {
                    prop_assert!(x.is_finite() && (-1e-4..=2.0001).contains(&x));
                }
            }
        }
    }
}
