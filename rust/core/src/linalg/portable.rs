//! The fallback for CPUs without AVX2/FMA: the same loop structure as `avx2.rs` on plain
//! 8-lane arrays, which the compiler turns into SSE2 (x86-64) or NEON (aarch64) code.
//! Multiply and add stay separate: `f32::mul_add` is a slow library call on a CPU without FMA.

use super::{Job, Weight};

/// Rows of `x` that share one pass over a weight row.
const MR: usize = 4;

/// Computes columns `j0..j1` of every output row (see [`super::RowsFn`]).
///
/// # Safety
/// `j0 <= j1 <= job.n`, and the caller owns those columns.
pub(super) unsafe fn rows<W: Weight>(job: &Job<'_, W>, j0: usize, j1: usize) {
    let k = job.k;
    for j in j0..j1 {
        let wrow = &job.w[j * k..(j + 1) * k];
        let b = job.bias.map_or(0.0, |b| b[j]);
        let scale = job.scale.map(|s| s[j]);
        let mut i = 0;
        while i < job.m {
            let rows = MR.min(job.m - i);
            let mut sums = [0.0f32; MR];
            dots(&job.x[i * k..(i + rows) * k], k, wrow, &mut sums[..rows]);
            for (q, &s) in sums[..rows].iter().enumerate() {
                let s = scale.map_or(s, |f| s * f);
                // SAFETY: `i + q < m`, `j` is in the caller's range (this function's contract).
                unsafe { job.store(i + q, j, s + b) };
            }
            i += rows;
        }
    }
}

/// `sums[q] = x_q · wrow` for the `sums.len()` rows of `x` (each `k` long), in 8 interleaved
/// partial sums per row plus a sequential tail.
fn dots<W: Weight>(x: &[f32], k: usize, wrow: &[W], sums: &mut [f32]) {
    let k8 = k - k % 8;
    let mut lanes = [[0.0f32; 8]; MR];
    for t in (0..k8).step_by(8) {
        let mut wv = [0.0f32; 8];
        for (v, &e) in wv.iter_mut().zip(&wrow[t..t + 8]) {
            *v = e.to_f32();
        }
        for (q, acc) in lanes.iter_mut().enumerate().take(sums.len()) {
            let xs = &x[q * k + t..q * k + t + 8];
            for ((a, &xv), &wv) in acc.iter_mut().zip(xs).zip(&wv) {
                *a += xv * wv;
            }
        }
    }
    for (q, s) in sums.iter_mut().enumerate() {
        let l = &lanes[q];
        // The lane order of `avx2::hsum`.
        let mut total = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        for t in k8..k {
            total += x[q * k + t] * wrow[t].to_f32();
        }
        *s = total;
    }
}
