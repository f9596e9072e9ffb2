//! The top eigenvector of a symmetric positive semi-definite operator, by Lanczos iteration.
//!
//! [`super::indicators::dominant_direction`] needs the top eigenvector of `MᵀM` for an
//! embedding matrix `M` of hundreds of thousands of rows. Every product with `MᵀM` is one pass
//! over the whole matrix, so the number of products is the cost. Power iteration improves by
//! the ratio `λ2 / λ1` per product (about ten products to float32 resolution on real
//! embeddings). Lanczos keeps every product: it takes the best vector of the whole Krylov space
//! they span, which converges much faster for the same products. The basis (one vector per
//! product, each as wide as the matrix) is fully reorthogonalised, so rounding cannot bring
//! back copies of the top vector. The small tridiagonal problem is solved by bisection for its
//! largest eigenvalue, then inverse iteration for that eigenvalue's vector.

/// The unit eigenvector of the largest eigenvalue, starting from the unit vector `start`.
///
/// `apply(v)` returns the operator times `v` (`None` stops the iteration: a product that is
/// not finite). At most `max_products` products are taken. The iteration stops once no
/// component of the estimate moves by more than `tolerance` from one product to the next, or
/// once the Krylov space is exhausted (it then holds the exact answer).
pub(super) fn top_eigenvector(
    start: Vec<f64>,
    max_products: usize,
    tolerance: f64,
    mut apply: impl FnMut(&[f64]) -> Option<Vec<f64>>,
) -> Vec<f64> {
    let width = start.len();
    let mut basis: Vec<Vec<f64>> = vec![start.clone()];
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    let mut best = start;
    for product in 0..max_products {
        let Some(mut w) = apply(&basis[product]) else {
            break;
        };
        alpha.push(dot(&w, &basis[product]));
        // Twice is enough: the second pass removes what rounding left after the first.
        for _ in 0..2 {
            for q in &basis {
                let c = dot(&w, q);
                w.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
            }
        }
        let mut estimate = vec![0.0; width];
        for (q, s) in basis.iter().zip(tridiagonal_top_vector(&alpha, &beta)) {
            estimate.iter_mut().zip(q).for_each(|(x, y)| *x += s * y);
        }
        let Some(mut estimate) = unit(estimate) else {
            break;
        };
        if dot(&estimate, &best) < 0.0 {
            estimate.iter_mut().for_each(|x| *x = -*x);
        }
        let moved = estimate
            .iter()
            .zip(&best)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        best = estimate;
        let scale = alpha.iter().fold(0f64, |m, a| m.max(a.abs()));
        let residual = norm(&w);
        // The space is exhausted (every direction found, or the rest is rounding noise; a NaN
        // residual also stops here).
        let significant = residual > 1e-13 * scale;
        let exhausted = basis.len() == width || !significant;
        if (product > 0 && moved < tolerance) || exhausted {
            break;
        }
        beta.push(residual);
        basis.push(w.into_iter().map(|x| x / residual).collect());
    }
    best
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `v` scaled to unit norm; `None` for a zero or non-finite vector.
pub(super) fn unit(v: Vec<f64>) -> Option<Vec<f64>> {
    let n = norm(&v);
    (n > 0.0 && n.is_finite()).then(|| v.into_iter().map(|x| x / n).collect())
}

/// The unit eigenvector of the largest eigenvalue of the symmetric tridiagonal matrix with
/// diagonal `a` and off-diagonal `b` (`b.len() + 1 == a.len()`, every `b` positive).
fn tridiagonal_top_vector(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = a.len();
    if n == 1 {
        return vec![1.0];
    }
    // Gershgorin bounds, then bisection on the Sturm count for the largest eigenvalue.
    let off = |i: usize| b.get(i).copied().unwrap_or(0.0) + if i > 0 { b[i - 1] } else { 0.0 };
    let mut lo = (0..n).map(|i| a[i] - off(i)).fold(f64::INFINITY, f64::min);
    let mut hi = (0..n)
        .map(|i| a[i] + off(i))
        .fold(f64::NEG_INFINITY, f64::max);
    let scale = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if eigenvalues_below(a, b, mid) == n {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // Inverse iteration just above the largest eigenvalue: `T - μI` is negative definite
    // there, so the elimination below needs no pivoting.
    let mu = hi + 1e-12 * scale;
    let mut x = vec![1.0; n];
    for _ in 0..3 {
        x = solve_shifted(a, b, mu, &x);
        let n = norm(&x);
        if !(n > 0.0 && n.is_finite()) {
            break;
        }
        x.iter_mut().for_each(|v| *v /= n);
    }
    x
}

/// How many eigenvalues of the tridiagonal matrix lie below `x` (the Sturm count).
fn eigenvalues_below(a: &[f64], b: &[f64], x: f64) -> usize {
    let mut count = 0;
    let mut q = 1.0;
    for i in 0..a.len() {
        let coupling = if i > 0 { b[i - 1] * b[i - 1] / q } else { 0.0 };
        q = a[i] - x - coupling;
        if q == 0.0 {
            q = -f64::EPSILON * (a[i].abs() + x.abs()).max(f64::MIN_POSITIVE);
        }
        if q < 0.0 {
            count += 1;
        }
    }
    count
}

/// Solves `(T - mu I) x = rhs` by tridiagonal elimination.
fn solve_shifted(a: &[f64], b: &[f64], mu: f64, rhs: &[f64]) -> Vec<f64> {
    let n = a.len();
    let mut diag: Vec<f64> = a.iter().map(|v| v - mu).collect();
    let mut r = rhs.to_vec();
    for i in 1..n {
        let f = b[i - 1] / diag[i - 1];
        diag[i] -= f * b[i - 1];
        r[i] -= f * r[i - 1];
    }
    let mut x = vec![0.0; n];
    x[n - 1] = r[n - 1] / diag[n - 1];
    for i in (0..n - 1).rev() {
        x[i] = (r[i] - b[i] * x[i + 1]) / diag[i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `Σ (row·v) row` over a row-major matrix: `MᵀM v`.
    fn gram_times(m: &[f64], dim: usize, v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; dim];
        for row in m.chunks(dim) {
            let w = dot(row, v);
            out.iter_mut().zip(row).for_each(|(o, x)| *o += w * x);
        }
        out
    }

    /// Power iteration run to convergence: the reference.
    fn power(m: &[f64], dim: usize) -> Vec<f64> {
        let mut v = unit(vec![1.0; dim]).unwrap();
        for _ in 0..20_000 {
            v = unit(gram_times(m, dim, &v)).unwrap();
        }
        v
    }

    #[test]
    fn tridiagonal_top_vector_of_a_known_matrix() {
        // [[2, 1, 0], [1, 2, 1], [0, 1, 2]]: largest eigenvalue 2 + √2, vector (1, √2, 1) / 2.
        let v = tridiagonal_top_vector(&[2.0, 2.0, 2.0], &[1.0, 1.0]);
        let s = std::f64::consts::SQRT_2;
        let expected = [0.5, s / 2.0, 0.5];
        let sign = v[0].signum();
        for (x, e) in v.iter().zip(expected) {
            assert!((sign * x - e).abs() < 1e-12, "{v:?}");
        }
    }

    #[test]
    fn takes_fewer_products_than_power_iteration() {
        // A spectrum with λ2/λ1 = 0.5: power iteration needs about 24 products for 1e-7.
        let dim = 40;
        let mut m = vec![0.0; dim * dim];
        for i in 0..dim {
            m[i * dim + i] = 0.5f64.powi(i as i32).sqrt();
        }
        let start = unit((0..dim).map(|i| 1.0 + i as f64 * 0.01).collect()).unwrap();
        let mut products = 0;
        let v = top_eigenvector(start, 100, 1e-12, |v| {
            products += 1;
            Some(gram_times(&m, dim, v))
        });
        assert!((v[0].abs() - 1.0).abs() < 1e-10, "{:?}", &v[..3]);
        assert!(products <= 16, "{products} products");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Equal to the top eigenvector that power iteration converges to (up to sign).
        #[test]
        fn equals_power_iteration(
            rows in 1usize..12, dim in 1usize..8, seed in 0u64..10_000,
        ) {
            let m: Vec<f64> = (0..rows * dim)
                .map(|i| (((i as u64 + 3) * (seed * 2 + 7919)) % 997) as f64 / 498.0 - 1.0 + 0.7)
                .collect();
            let start = unit(vec![1.0; dim]).unwrap();
            let v = top_eigenvector(start, 200, 1e-13, |v| Some(gram_times(&m, dim, v)));
            // Compared by the Rayleigh quotient (robust when the top eigenvalue is nearly
            // repeated), then by direction when it is well separated.
            let rq = |v: &[f64]| dot(v, &gram_times(&m, dim, v));
            let reference = power(&m, dim);
            let (got, want) = (rq(&v), rq(&reference));
            prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{} vs {}", got, want);
            prop_assert!((norm(&v) - 1.0).abs() < 1e-12);
        }
    }
}
