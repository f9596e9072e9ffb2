use proptest::prelude::*;

use super::*;

/// Pseudo-random features in [-0.5, 0.5) (an LCG, so tests need no rand crate).
fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9).wrapping_add(7);
    (0..n * d)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// The distance from every token to its nearest other token, for a distance function in f64.
fn nearest_f64(n: usize, dist: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| j != i)
                .map(|j| dist(i, j))
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// The plain reference: f64 dot products on normalised rows, the same greedy rules.
fn reference(x: &[f32], n: usize, d: usize, k: usize, first: Option<usize>) -> (Vec<usize>, f64) {
    let norm: Vec<Vec<f64>> = x
        .chunks(d)
        .map(|r| {
            let s: f64 = r.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            r.iter().map(|&v| f64::from(v) / s.sqrt()).collect()
        })
        .collect();
    let dist = |i: usize, j: usize| {
        1.0 - norm[i]
            .iter()
            .zip(&norm[j])
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    let first = first.unwrap_or_else(|| {
        let nn = nearest_f64(n, dist);
        let max = nn.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        nn.iter().position(|&v| v == max).unwrap()
    });
    let mut picks = vec![first];
    let mut mind: Vec<f64> = (0..n).map(|j| dist(first, j)).collect();
    mind[first] = f64::NEG_INFINITY;
    let mut objective = f64::INFINITY;
    while picks.len() < k {
        let max = mind.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let p = mind.iter().position(|&v| v == max).unwrap();
        objective = objective.min(max);
        picks.push(p);
        for (j, m) in mind.iter_mut().enumerate() {
            *m = m.min(dist(p, j));
        }
        mind[p] = f64::NEG_INFINITY;
    }
    (picks, objective)
}

fn opts(method: Method, order: Order) -> Options {
    Options {
        first: FirstPick::MostIsolated,
        order,
        method,
    }
}

#[test]
fn both_methods_match_the_reference_in_greedy_order() {
    for (n, d, k, seed) in [
        (50, 8, 10, 1),
        (300, 32, 30, 2),
        (700, 16, 200, 3),
        (257, 5, 257, 4),
    ] {
        let x = features(n, d, seed);
        let (want, want_obj) = reference(&x, n, d, k, None);
        for method in [Method::Gram, Method::MatrixFree, Method::Auto] {
            let s = select(&x, n, d, k, &opts(method, Order::Greedy)).unwrap();
            assert_eq!(s.indices, want, "n={n} d={d} k={k} {method:?}");
            assert!(
                (f64::from(s.objective) - want_obj).abs() < 1e-5,
                "{method:?}"
            );
        }
    }
}

#[test]
fn sorted_order_is_the_greedy_set_ascending() {
    let x = features(120, 12, 9);
    let g = select(&x, 120, 12, 20, &opts(Method::Auto, Order::Greedy)).unwrap();
    let s = select(&x, 120, 12, 20, &Options::default()).unwrap();
    let mut want = g.indices.clone();
    want.sort_unstable();
    assert_eq!(s.indices, want);
    assert_eq!(s.objective, g.objective);
}

#[test]
fn objective_function_agrees_with_the_selection() {
    let x = features(200, 10, 11);
    let s = select(&x, 200, 10, 25, &Options::default()).unwrap();
    let o = objective(&x, 200, 10, &s.indices).unwrap();
    assert!((o - s.objective).abs() < 1e-5);
    assert_eq!(objective(&x, 200, 10, &[3]).unwrap(), f32::INFINITY);
    assert_eq!(objective(&x, 200, 10, &[3, 3]).unwrap(), 0.0);
}

#[test]
fn first_pick_by_index_and_by_seed() {
    let x = features(90, 6, 5);
    let o = Options {
        first: FirstPick::Index(17),
        ..Options::default()
    };
    let s = select(
        &x,
        90,
        6,
        9,
        &Options {
            order: Order::Greedy,
            ..o
        },
    )
    .unwrap();
    assert_eq!(s.indices[0], 17);
    assert_eq!(s.indices, reference(&x, 90, 6, 9, Some(17)).0);
    let seeded = Options {
        first: FirstPick::Seed(42),
        order: Order::Greedy,
        method: Method::Auto,
    };
    let a = select(&x, 90, 6, 9, &seeded).unwrap();
    let b = select(&x, 90, 6, 9, &seeded).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.indices[0], (splitmix64(42) % 90) as usize);
}

#[test]
fn seeded_first_picks_are_the_first_tokens_select_batch_picks() {
    let (b, n, d, k) = (4, 50, 5, 3);
    let x = features(b * n, d, 21);
    for seed in [0, 42, u64::MAX - 1] {
        let picks = seeded_first_picks(seed, b, n).unwrap();
        let opts = Options {
            first: FirstPick::Seed(seed),
            order: Order::Greedy,
            method: Method::Auto,
        };
        let firsts: Vec<usize> = select_batch(&x, b, n, d, k, &opts)
            .unwrap()
            .iter()
            .map(|s| s.indices[0])
            .collect();
        assert_eq!(picks, firsts, "seed {seed}");
    }
    // Image 1 of a batch seeded with u64::MAX draws from seed 0 (the seed wraps).
    assert_eq!(
        seeded_first_picks(u64::MAX, 2, 77).unwrap()[1],
        (splitmix64(0) % 77) as usize
    );
    assert!(seeded_first_picks(1, 2, 0).is_err());
    assert!(seeded_first_picks(1, 0, 5).unwrap().is_empty());
}

#[test]
fn method_names_parse_with_the_core_wording() {
    assert_eq!("auto".parse::<Method>().unwrap(), Method::Auto);
    assert_eq!("gram".parse::<Method>().unwrap(), Method::Gram);
    assert_eq!("matrix_free".parse::<Method>().unwrap(), Method::MatrixFree);
    let e = "fast".parse::<Method>().unwrap_err().to_string();
    assert_eq!(
        e,
        "`method` must be one of 'auto', 'gram', 'matrix_free', got \"fast\""
    );
}

#[test]
fn batch_equals_images_one_by_one() {
    let (b, n, d, k) = (3, 64, 8, 7);
    let x = features(b * n, d, 13);
    let all = select_batch(&x, b, n, d, k, &Options::default()).unwrap();
    for (i, s) in all.iter().enumerate() {
        let one = select(&x[i * n * d..(i + 1) * n * d], n, d, k, &Options::default()).unwrap();
        assert_eq!(*s, one);
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_argument() {
    let x = features(10, 4, 1);
    let msg = |r: Result<Selection>| r.unwrap_err().to_string();
    assert!(msg(select(&x, 10, 4, 0, &Options::default())).contains("`k` must be between 1"));
    assert!(msg(select(&x, 10, 4, 11, &Options::default())).contains("got 11"));
    assert!(msg(select(&[], 0, 4, 1, &Options::default())).contains("0 tokens"));
    assert!(msg(select(&x, 10, 3, 2, &Options::default())).contains("values for shape"));
    let first = Options {
        first: FirstPick::Index(10),
        ..Options::default()
    };
    assert!(msg(select(&x, 10, 4, 2, &first)).contains("`first`"));
    let mut bad = x.clone();
    bad[4 * 6 + 1] = f32::INFINITY;
    assert!(msg(select(&bad, 10, 4, 2, &Options::default())).contains("token 6"));
    let mut zero = x.clone();
    zero[8..12].fill(0.0);
    assert!(msg(select(&zero, 10, 4, 2, &Options::default())).contains("all-zero row in token 2"));
    let e = select_batch(&bad, 2, 5, 4, 2, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("(image 1)"), "{e}");
}

#[test]
fn single_token_and_keep_all() {
    let x = features(1, 3, 2);
    let s = select(&x, 1, 3, 1, &Options::default()).unwrap();
    assert_eq!(s.indices, vec![0]);
    assert_eq!(s.objective, f32::INFINITY);
    let x = features(40, 3, 2);
    let s = select(&x, 40, 3, 40, &Options::default()).unwrap();
    assert_eq!(s.indices, (0..40).collect::<Vec<_>>());
}

#[test]
fn duplicates_come_last_and_zero_the_objective() {
    // 4 distinct directions, each present twice: k=4 keeps one of each, k=5 adds a duplicate.
    let base = [1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0];
    let x: Vec<f32> = base.iter().chain(base.iter()).copied().collect();
    let s = select(&x, 8, 2, 4, &Options::default()).unwrap();
    assert_eq!(s.indices, vec![0, 1, 2, 3]);
    assert!(s.objective > 0.99);
    let s = select(&x, 8, 2, 5, &Options::default()).unwrap();
    assert!(s.objective.abs() < 1e-6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn picks_are_distinct_and_objective_is_min_pairwise_distance(
        n in 1usize..60, d in 1usize..9, frac in 0.0f64..1.0, seed in 0u64..1000,
        gram in any::<bool>(),
    ) {
        let k = ((n as f64 * frac) as usize).clamp(1, n);
        let x = features(n, d, seed);
        let method = if gram { Method::Gram } else { Method::MatrixFree };
        let s = select(&x, n, d, k, &opts(method, Order::Greedy)).unwrap();
        let mut sorted = s.indices.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), k);
        let o = objective(&x, n, d, &s.indices).unwrap();
        prop_assert!(o == s.objective || (o - s.objective).abs() < 1e-5);
    }

    #[test]
    fn greedy_is_within_half_of_the_brute_force_optimum(
        n in 3usize..10, d in 2usize..5, seed in 0u64..1000, k in 2usize..4,
    ) {
        let x = features(n, d, seed);
        let s = select(&x, n, d, k, &Options::default()).unwrap();
        // every k-subset by bitmask
        let mut best = f32::NEG_INFINITY;
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != k { continue; }
            let idx: Vec<usize> = (0..n).filter(|&i| mask >> i & 1 == 1).collect();
            best = best.max(objective(&x, n, d, &idx).unwrap());
        }
        prop_assert!(s.objective <= best + 1e-6);
        // The 1/2 guarantee of farthest-point greedy holds for a metric. The cosine distance
        // 1 - cos is half the squared chord |x - y|^2 / 2, not a metric, but it orders pairs
        // like the chord does, so the picks are those of the chord metric: there,
        // chord(greedy) >= chord(optimum) / 2.
        let chord = |v: f32| (2.0 * v.max(0.0)).sqrt();
        prop_assert!(chord(s.objective) >= 0.5 * chord(best) - 1e-5,
            "greedy {} optimum {}", s.objective, best);
    }
}

/// True (and says so) where the AMX tests cannot run.
fn no_amx() -> bool {
    let off = !amx::enabled();
    if off {
        eprintln!("skipped: this CPU or kernel has no AMX-BF16 (or FERROLM_NO_AMX is set)");
    }
    off
}

/// Rows with a wide dynamic range: uniform values times per-column scales over six orders of
/// magnitude, plus (with `near_duplicates`) every 11th row a rescaled copy of another.
fn spread_features(n: usize, d: usize, seed: u64, near_duplicates: bool) -> Vec<f32> {
    let mut x = features(n, d, seed);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= 10f32.powi((i % d % 7) as i32 - 3);
    }
    if !near_duplicates {
        return x;
    }
    for i in (3..n).step_by(11) {
        let (src, dst) = x.split_at_mut(i * d);
        for (a, b) in dst[..d].iter_mut().zip(&src[(i - 3) * d..(i - 2) * d]) {
            *a = *b * (1.0 + 1e-6);
        }
    }
    x
}

#[test]
fn amx_distances_are_float32_accurate_and_symmetric() {
    if no_amx() {
        return;
    }
    for (n, d, seed) in [
        (1, 1, 1),
        (5, 3, 2),
        (33, 31, 3),
        (97, 64, 4),
        (250, 200, 5),
        (40, 4096, 6),
        (400, 33, 7),
    ] {
        for raw in [features(n, d, seed), spread_features(n, d, seed, true)] {
            let x = dots::normalized_rows(&raw, n, d).unwrap();
            let got = amx::distance_matrix(&x, &vec![1.0; n], n, d).unwrap();
            let fp32 = gram::distance_matrix(&x, n, d).unwrap();
            let mut worst = 0.0f64;
            for i in 0..n {
                for j in 0..n {
                    let (a, b) = (&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]);
                    let dot: f64 = a.iter().zip(b).map(|(&p, &q)| f64::from(p * q)).sum();
                    let abs: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(&p, &q)| f64::from((p * q).abs()))
                        .sum();
                    let err = (f64::from(got[i * n + j]) - (1.0 - dot)).abs();
                    // The split's bound plus float32 accumulation and the final `1 - dot`.
                    let bound = (3.05 * 2f64.powi(-18) + 3.0 * d as f64 * 2f64.powi(-24)) * abs
                        + 2f64.powi(-23);
                    assert!(
                        err <= bound,
                        "n={n} d={d} ({i}, {j}): error {err:e} > {bound:e}"
                    );
                    assert_eq!(got[i * n + j], got[j * n + i]);
                    worst = worst.max((got[i * n + j] - fp32[i * n + j]).abs().into());
                }
            }
            // The refinement window assumes every entry is within EPS of float32's.
            assert!(
                worst <= f64::from(amx::EPS),
                "n={n} d={d}: {worst:e} from float32"
            );
        }
    }
}

#[test]
fn amx_matrices_on_reused_scratch_memory_match_float32() {
    if no_amx() {
        return;
    }
    // Panels above the mapping threshold, then a case with more row and column padding that
    // reuses the first case's (stale) memory: padding must be rewritten as zeros.
    for (n, d, seed) in [(1100, 2016, 21), (1000, 2090, 22), (1100, 2016, 23)] {
        let raw = features(n, d, seed);
        let norms = dots::row_norms(&raw, n, d).unwrap();
        let got = amx::distance_matrix(&raw, &norms, n, d).unwrap();
        let x = dots::normalized_rows(&raw, n, d).unwrap();
        let want = gram::distance_matrix(&x, n, d).unwrap();
        let worst = got
            .iter()
            .zip(want.iter())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= amx::EPS, "n={n} d={d}: {worst:e}");
    }
}

/// Checks that every one of `picks` was a best choice of the greedy in f64 arithmetic, up to
/// `tol` (a near-tie that float32 rounding may decide either way); returns how many were not
/// the exact f64 argmax.
fn assert_greedy_up_to(x: &[f32], n: usize, d: usize, picks: &[usize], tol: f64) -> usize {
    let unit: Vec<f64> = dots::normalized_rows(x, n, d)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let dist = |i: usize, j: usize| {
        let (a, b) = (&unit[i * d..(i + 1) * d], &unit[j * d..(j + 1) * d]);
        1.0 - a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>()
    };
    let mut off = 0;
    let mut check = |values: &[f64], pick: usize, step: usize| {
        let best = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert!(
            values[pick] >= best - tol,
            "step {step}: {} < {best}",
            values[pick]
        );
        off += usize::from(values[pick] < best);
    };
    check(&nearest_f64(n, dist), picks[0], 0);
    let mut min_dist = vec![f64::INFINITY; n];
    for (step, w) in picks.windows(2).enumerate() {
        min_dist[w[0]] = f64::NEG_INFINITY;
        for (j, m) in min_dist.iter_mut().enumerate() {
            *m = m.min(dist(w[0], j));
        }
        check(&min_dist, w[1], step + 1);
    }
    off
}

#[test]
fn refined_amx_greedy_makes_float32_decisions() {
    if no_amx() {
        return;
    }
    // d = 16 and 700 tokens: the split matrix alone (17 bits) gets picks of this greedy wrong
    // by more than 1e-6; the refined greedy must be as close as float32.
    for (n, d, k, seed, spread) in [
        (700, 16, 200, 3, false),
        (700, 96, 300, 11, false),
        (300, 40, 120, 12, true),
        (64, 8, 64, 13, true),
    ] {
        let mut raw = if spread {
            spread_features(n, d, seed, true)
        } else {
            features(n, d, seed)
        };
        // Exact duplicates of a few tokens: ties the refinement must resolve.
        for i in [5usize, 17, 40] {
            let src = raw[i * d..(i + 1) * d].to_vec();
            raw[(i + 1) * d..(i + 2) * d].copy_from_slice(&src);
        }
        let norms = dots::row_norms(&raw, n, d).unwrap();
        let first = select::FirstChoice::MostIsolated;
        let (got, obj) = gram::select_refined(&raw, &norms, n, d, k, first).unwrap();
        let off = assert_greedy_up_to(&raw, n, d, &got, 1e-6);
        assert!(off <= 10, "n={n} d={d}: {off} near-tie picks");
        let want_obj = objective(&raw, n, d, &got).unwrap();
        assert!((obj - want_obj).abs() < 1e-6, "{obj} vs {want_obj}");
    }
}

/// Greedy max-min in f64 with exact cosine distances: the reference for extreme norms.
fn greedy_f64(x: &[f32], n: usize, d: usize, k: usize, first: usize) -> Vec<usize> {
    let unit: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let row: Vec<f64> = x[i * d..(i + 1) * d]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            // Scaled by the largest magnitude first, so that the f64 norm cannot overflow.
            let big = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let norm = row.iter().map(|v| (v / big).powi(2)).sum::<f64>().sqrt() * big;
            row.iter().map(|v| v / norm).collect()
        })
        .collect();
    let dist = |a: usize, b: usize| {
        1.0 - unit[a]
            .iter()
            .zip(&unit[b])
            .map(|(p, q)| p * q)
            .sum::<f64>()
    };
    let mut chosen = vec![first];
    let mut min_d: Vec<f64> = (0..n).map(|i| dist(first, i)).collect();
    while chosen.len() < k {
        let next = (0..n)
            .filter(|i| !chosen.contains(i))
            .max_by(|&a, &b| min_d[a].total_cmp(&min_d[b]).then(b.cmp(&a)))
            .unwrap();
        chosen.push(next);
        for (i, m) in min_d.iter_mut().enumerate() {
            *m = m.min(dist(next, i));
        }
    }
    chosen
}

#[test]
fn rows_of_extreme_norm_pick_as_their_directions_do() {
    let (n, d, k) = (40, 6, 12);
    let base = features(n, d, 11);
    let mut x = base.clone();
    // Rows scaled far beyond f32's norm range (norm ~1e38 to 3e38 x sqrt(d)) and into
    // denormals: the directions, and so the picks, must not change.
    for i in 0..n {
        let scale = match i % 4 {
            0 => 6.5e38,
            1 => 1e-41 / 0.5,
            2 => 1e-30,
            _ => 1.0,
        };
        for v in &mut x[i * d..(i + 1) * d] {
            *v = (f64::from(*v) * scale) as f32;
        }
    }
    let opts = Options {
        first: FirstPick::Index(0),
        order: Order::Greedy,
        method: Method::Gram,
    };
    let picked = select(&x, n, d, k, &opts).unwrap().indices;
    assert_eq!(picked, greedy_f64(&x, n, d, k, 0));
    let free = Options {
        method: Method::MatrixFree,
        ..opts
    };
    assert_eq!(select(&x, n, d, k, &free).unwrap().indices, picked);
}

#[test]
fn objective_of_many_repeated_indices_is_zero_without_an_m_by_m_matrix() {
    let x = features(20, 8, 3);
    assert_eq!(objective(&x, 20, 8, &vec![0; 120_000]).unwrap(), 0.0);
    let distinct: Vec<usize> = (0..20).collect();
    let with_repeat: Vec<usize> = (0..20).chain([5]).collect();
    assert!(objective(&x, 20, 8, &distinct).unwrap() > 0.0);
    assert_eq!(objective(&x, 20, 8, &with_repeat).unwrap().min(0.0), 0.0);
}

#[test]
fn an_oversized_gram_matrix_is_a_memory_error_naming_features() {
    let x = features(100_000, 2, 5);
    let opts = Options {
        method: Method::Gram,
        ..Options::default()
    };
    let e = select(&x, 100_000, 2, 2, &opts).unwrap_err();
    assert!(
        matches!(&e, Error::OutOfMemory { arg, .. } if arg == "features"),
        "{e}"
    );
}
