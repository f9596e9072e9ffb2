use proptest::prelude::*;

use super::*;

/// `x · wᵀ + bias` in float64, with `sum |x_t w_t| + |bias|` per output for the error bound.
fn reference<W: Weight>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let mut exact = vec![0.0; m * n];
    let mut scale = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for t in 0..k {
                let p = f64::from(x[i * k + t]) * f64::from(w[j * k + t].to_f32());
                s += p;
                a += p.abs();
            }
            if let Some(b) = bias {
                s += f64::from(b[j]);
                a += f64::from(b[j]).abs();
            }
            exact[i * n + j] = s;
            scale[i * n + j] = a;
        }
    }
    (exact, scale)
}

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn to_bf16(v: &[f32]) -> Vec<u16> {
    // Truncation is enough: the reference widens the same bits.
    v.iter().map(|x| (x.to_bits() >> 16) as u16).collect()
}

/// Runs `path` and checks every output against the float64 reference within the standard
/// bound for a float32 sum of `k + 1` terms: `(k + 2) * eps * sum |terms|`.
#[allow(clippy::too_many_arguments)]
fn check<W: Weight + KernelFor>(
    path: Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
) {
    let mut out = vec![f32::NAN; m * n];
    linear_with(path, x, m, k, w, n, bias, &mut out).unwrap();
    let (exact, scale) = reference(x, m, k, w, n, bias);
    let eps = f64::from(f32::EPSILON);
    for (idx, ((&o, &e), &a)) in out.iter().zip(&exact).zip(&scale).enumerate() {
        let tol = (k as f64 + 2.0) * eps * a + f64::from(f32::MIN_POSITIVE);
        assert!(
            (f64::from(o) - e).abs() <= tol,
            "{path:?} m={m} k={k} n={n} out[{}, {}] = {o}, reference {e}, tolerance {tol}",
            idx / n,
            idx % n,
        );
    }
}

const PATHS: [Path; 2] = [Path::Auto, Path::Portable];

#[test]
fn every_small_shape_matches_the_float64_reference_on_both_paths() {
    for m in [1, 2, 3, 4, 5, 7, 8, 9, 16, 33] {
        for k in [1, 7, 8, 9, 16, 17, 31, 64, 100] {
            for n in [1, 2, 3, 4, 5, 37] {
                let x = values(m * k, (m * 1000 + k) as u64);
                let w = values(n * k, (n * 7 + k) as u64);
                let b = values(n, n as u64);
                for path in PATHS {
                    check(path, &x, m, k, &w, n, Some(&b));
                    check(path, &x, m, k, &to_bf16(&w), n, None);
                }
            }
        }
    }
}

#[test]
fn large_matrices_split_across_threads_match_the_reference() {
    // 700 x 1000 float32 weights are 2.8 MB: more than one parallel task per thread. k = 1001
    // walks the AVX2 tiles in several chunks plus a tail; 37 rows are three panels of rows.
    let (k, n) = (1001, 700);
    let w = values(n * k, 2);
    let b = values(n, 3);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for m in [6, 37] {
        let x = values(m * k, m as u64);
        pool.install(|| {
            for path in PATHS {
                check(path, &x, m, k, &w, n, Some(&b));
                check(path, &x, m, k, &to_bf16(&w), n, Some(&b));
            }
        });
    }
}

#[test]
fn empty_dimensions_are_valid() {
    let mut out = vec![];
    linear_f32(&[], 0, 4, &[0.0; 8], 2, None, &mut out).unwrap();
    linear_f32(&[0.0; 4], 1, 4, &[], 0, None, &mut out).unwrap();
    // k = 0: every output is the bias.
    let mut out = vec![f32::NAN; 6];
    linear_f32(&[], 2, 0, &[], 3, Some(&[1.0, 2.0, 3.0]), &mut out).unwrap();
    assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
}

#[test]
fn nan_and_infinity_propagate() {
    let x = [1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let w = [1.0f32; 9];
    for path in PATHS {
        let mut out = [0.0f32; 1];
        linear_with(path, &x, 1, 9, &w, 1, None, &mut out).unwrap();
        assert!(out[0].is_nan(), "{path:?}");
        let mut out = [0.0f32; 1];
        linear_with(
            path,
            &[1.0; 9],
            1,
            9,
            &w,
            1,
            Some(&[f32::INFINITY]),
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0], f32::INFINITY, "{path:?}");
    }
}

#[test]
fn wrong_lengths_name_the_argument_and_leave_out_untouched() {
    let mut out = [7.0f32; 6];
    let cases: [(&str, Result<()>); 4] = [
        (
            "x",
            linear_f32(&[0.0; 5], 2, 3, &[0.0; 9], 3, None, &mut out),
        ),
        (
            "w",
            linear_f32(&[0.0; 6], 2, 3, &[0.0; 8], 3, None, &mut out),
        ),
        (
            "bias",
            linear_f32(&[0.0; 6], 2, 3, &[0.0; 9], 3, Some(&[0.0; 2]), &mut out),
        ),
        (
            "out",
            linear_f32(&[0.0; 6], 2, 3, &[0.0; 9], 3, None, &mut out[..5]),
        ),
    ];
    for (arg, result) in cases {
        match result {
            Err(Error::InvalidValue { arg: a, .. }) => assert_eq!(a, arg),
            other => panic!("{arg}: expected InvalidValue, got {other:?}"),
        }
    }
    assert_eq!(out, [7.0; 6]);
    let e = linear_f32(&[0.0; 5], 2, 3, &[0.0; 9], 3, None, &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`x` must be of length 6 ([2, 3]), got length 5"
    );
}

#[test]
fn overflowing_sizes_are_errors_not_panics() {
    let mut out = [0.0f32; 1];
    let e = linear_bf16(&[], usize::MAX, 2, &[], 1, None, &mut out).unwrap_err();
    assert!(
        matches!(e, Error::InvalidValue { ref arg, .. } if arg == "x"),
        "{e}"
    );
    let e = linear_bf16(&[0.0], 1, 1, &[], usize::MAX, None, &mut out).unwrap_err();
    assert!(
        matches!(e, Error::InvalidValue { ref arg, .. } if arg == "w"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_shapes_and_values_match_the_reference(
        m in 1usize..=33,
        k in 1usize..=80,
        n in 1usize..=37,
        seed in any::<u64>(),
        magnitude in -20i32..20,
        with_bias in any::<bool>(),
    ) {
        let s = 2f32.powi(magnitude);
        let x: Vec<f32> = values(m * k, seed).iter().map(|v| v * s).collect();
        let w = values(n * k, seed ^ 0x5555);
        let b = values(n, seed ^ 0xAAAA);
        let bias = with_bias.then_some(&b[..]);
        for path in PATHS {
            check(path, &x, m, k, &w, n, bias);
            check(path, &x, m, k, &to_bf16(&w), n, bias);
        }
    }
}

/// Runs the int8 product on `path` and checks it against `scale[j] * (x · q_j) + bias[j]` in
/// float64, within the float32 bound of `k + 2` terms (one more rounding: the scale).
#[allow(clippy::too_many_arguments)]
fn check_i8(
    path: Path,
    x: &[f32],
    m: usize,
    k: usize,
    q: &[i8],
    scale: &[f32],
    n: usize,
    bias: Option<&[f32]>,
) {
    let mut out = vec![f32::NAN; m * n];
    linear_scaled(path, x, m, k, q, Some(scale), n, bias, &mut out).unwrap();
    let (sums, sizes) = reference(x, m, k, q, n, None);
    let eps = f64::from(f32::EPSILON);
    for (idx, &o) in out.iter().enumerate() {
        let j = idx % n;
        let s = f64::from(scale[j]);
        let b = bias.map_or(0.0, |b| f64::from(b[j]));
        let want = s * sums[idx] + b;
        let tol =
            (k as f64 + 3.0) * eps * (s * sizes[idx] + b.abs()) + f64::from(f32::MIN_POSITIVE);
        assert!(
            (f64::from(o) - want).abs() <= tol,
            "{path:?} m={m} k={k} n={n} out[{}, {j}] = {o}, reference {want}, tolerance {tol}",
            idx / n,
        );
    }
}

fn quantized(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; n * k];
    let mut scale = vec![0.0f32; n];
    quantize_rows_i8(w, n, k, &mut q, &mut scale).unwrap();
    (q, scale)
}

#[test]
fn int8_weights_match_the_reference_on_every_shape_and_across_threads() {
    for m in [1, 3, 4, 5, 16, 33] {
        for k in [1, 7, 8, 9, 17, 64, 100] {
            for n in [1, 3, 4, 37] {
                let x = values(m * k, (m * 1000 + k) as u64);
                let (q, s) = quantized(&values(n * k, (n * 7 + k) as u64), n, k);
                let b = values(n, n as u64);
                for path in PATHS {
                    check_i8(path, &x, m, k, &q, &s, n, Some(&b));
                    check_i8(path, &x, m, k, &q, &s, n, None);
                }
            }
        }
    }
    let (k, n) = (1001, 700);
    let (q, s) = quantized(&values(n * k, 2), n, k);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for m in [1, 6, 37] {
        let x = values(m * k, m as u64);
        pool.install(|| {
            for path in PATHS {
                check_i8(path, &x, m, k, &q, &s, n, None);
            }
        });
    }
}

#[test]
fn quantize_rows_i8_rounds_each_row_to_its_own_scale() {
    let w = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -0.01];
    let (q, s) = quantized(&w, 3, 3);
    assert_eq!(s, [1.0 / 127.0, 0.0, 2.0 / 127.0]);
    // 63.5 rounds away from zero; the largest magnitude of a row is +-127.
    assert_eq!(q, [64, -127, 32, 0, 0, 0, 127, 64, -1]);
    let mut q = [0i8; 2];
    let mut s = [0.0f32; 1];
    for bad in [f32::NAN, f32::INFINITY] {
        let e = quantize_rows_i8(&[1.0, bad], 1, 2, &mut q, &mut s).unwrap_err();
        assert!(
            matches!(e, Error::InvalidValue { ref arg, .. } if arg == "w"),
            "{e}"
        );
        assert!(e.to_string().contains("row 0, column 1"), "{e}");
    }
    let e = quantize_rows_i8(&[1.0; 3], 1, 2, &mut q, &mut s).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { ref arg, .. } if arg == "w"));
    let e = quantize_rows_i8(&[1.0; 2], 1, 2, &mut [0i8; 3], &mut s).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { ref arg, .. } if arg == "q"));
    let e = quantize_rows_i8(&[1.0; 2], 1, 2, &mut q, &mut [0.0; 2]).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { ref arg, .. } if arg == "scale"));
    let mut out = [f32::NAN; 1];
    let e = linear_i8(&[1.0, 1.0], 1, 2, &[1, 1], &[1.0, 1.0], 1, None, &mut out).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { ref arg, .. } if arg == "scale"));
    assert!(out[0].is_nan());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn int8_products_stay_within_half_a_step_of_the_float32_ones(
        m in 1usize..=9,
        k in 1usize..=80,
        n in 1usize..=37,
        seed in any::<u64>(),
        magnitude in -20i32..20,
    ) {
        let s = 2f32.powi(magnitude);
        let w: Vec<f32> = values(n * k, seed ^ 0x5555).iter().map(|v| v * s).collect();
        let x = values(m * k, seed);
        let (q, scale) = quantized(&w, n, k);
        for (row, (codes, &f)) in w.chunks(k).zip(q.chunks(k).zip(&scale)) {
            for (&v, &c) in row.iter().zip(codes) {
                // Each weight within half a quantization step (and a float32 rounding).
                prop_assert!((f64::from(v) - f64::from(c) * f64::from(f)).abs()
                    <= 0.5 * f64::from(f) * (1.0 + 1e-5) + 1e-30);
            }
        }
        let mut exact = vec![0.0f32; m * n];
        let mut approx = vec![0.0f32; m * n];
        linear_f32(&x, m, k, &w, n, None, &mut exact).unwrap();
        linear_i8(&x, m, k, &q, &scale, n, None, &mut approx).unwrap();
        for (idx, (&e, &a)) in exact.iter().zip(&approx).enumerate() {
            let (i, j) = (idx / n, idx % n);
            let l1: f64 = x[i * k..(i + 1) * k].iter().map(|v| f64::from(v.abs())).sum();
            let bound = 0.5 * f64::from(scale[j]) * l1 * (1.0 + 1e-4)
                + (k as f64 + 3.0) * 2.0 * f64::from(f32::EPSILON) * f64::from(s) * l1
                + 1e-30;
            prop_assert!((f64::from(e) - f64::from(a)).abs() <= bound, "{e} vs {a}, bound {bound}");
        }
    }
}
