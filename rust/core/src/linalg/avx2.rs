//! The AVX2+FMA tiles, chosen at run time by `super::KernelFor` when the CPU has both.
//!
//! A tile is `NR` consecutive weight rows against `MR` rows of `x` (`NR = 3`, `MR = 4`: 12
//! accumulators and 3 weight vectors fill the 16 YMM registers; the `x` vector is an FMA
//! memory operand). The loops over rows of `x` sit inside the loop over weight tiles, so a
//! tile is read from RAM once, by the first group of `x` rows, and from L1 by the others; the
//! tile is walked in chunks of `k` (see [`KC`]) so that fetching the next chunk overlaps the
//! arithmetic on this one.

use std::arch::x86_64::*;

use super::{Job, Weight, KC, PACK_ROWS};

/// Weight rows per tile.
const NR: usize = 3;
/// Rows of `x` per tile.
const MR: usize = 4;

/// A weight type that AVX2 widens to 8 float32 lanes.
trait Load8: Weight {
    /// The 8 weights at `p` as float32.
    ///
    /// # Safety
    /// The CPU has AVX2; `p..p + 8` is in bounds.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Load8 for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: 8 floats in bounds (the caller's contract); unaligned load.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Load8 for u16 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: 8 u16 = 16 bytes in bounds (the caller's contract); unaligned load. Zero-
        // extending each bf16 to 32 bits and shifting it into the upper half is the exact
        // float32 value; the CPU has AVX2 (the caller's contract).
        unsafe {
            let h = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
}

/// [`super::RowsFn`] for float32 weights.
///
/// # Safety
/// The CPU has AVX2 and FMA; `j0 <= j1 <= job.n`; the caller owns those columns.
pub(super) unsafe fn rows_f32(job: &Job<'_, f32>, j0: usize, j1: usize) {
    // SAFETY: forwarded contract.
    unsafe { rows(job, j0, j1) }
}

/// [`super::RowsFn`] for bfloat16 weights.
///
/// # Safety
/// As [`rows_f32`].
pub(super) unsafe fn rows_bf16(job: &Job<'_, u16>, j0: usize, j1: usize) {
    // SAFETY: forwarded contract.
    unsafe { rows(job, j0, j1) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn rows<W: Load8>(job: &Job<'_, W>, j0: usize, j1: usize) {
    let mut j = j0;
    // SAFETY (all calls): `j + rows <= j1`, within the caller's range.
    unsafe {
        while j + NR <= j1 {
            block::<W, NR>(job, j);
            j += NR;
        }
        match j1 - j {
            2 => block::<W, 2>(job, j),
            1 => block::<W, 1>(job, j),
            _ => {}
        }
    }
}

/// Weight rows `j..j + R` against every row of `x`, [`MB`] rows at a time.
#[inline(always)]
unsafe fn block<W: Load8, const R: usize>(job: &Job<'_, W>, j: usize) {
    let mut i = 0;
    while i < job.m {
        let rows = MB.min(job.m - i);
        // SAFETY: `i + rows <= m`; the weight rows are the caller's.
        unsafe { panel::<W, R>(job, i, rows, j) };
        i += rows;
    }
}

/// Rows of `x` whose partial sums one weight tile serves before it moves on (`MB x R` vector
/// accumulators, 1.5 KiB, live in L1 between chunks of `k`).
const MB: usize = 16;

// A panel of more than one group of [`MR`] rows walks `k` in chunks of `KC` floats, reading
// `x` from its packed copy (`super::pack`): the tile's chunk (3 KiB of float32) stays in L1
// while every group uses it, and the next chunk, asked for by software prefetch while the
// first group runs, arrives while the others compute, so that reading the weights overlaps
// the arithmetic.
const _: () = assert!(PACK_ROWS == MR);

/// Floats ahead of the current position at which the first group prefetches each weight row.
const PREFETCH: usize = KC;

/// `out[i + q, j + r]` for `q < rows <= MB`, `r < R`.
#[inline(always)]
unsafe fn panel<W: Load8, const R: usize>(job: &Job<'_, W>, i: usize, rows: usize, j: usize) {
    let k = job.k;
    let k8 = k - k % 8;
    let m = job.m;
    // An input of one group (m <= MR) is not packed and needs no chunks: its accumulators stay
    // in registers over all of `k`. Otherwise `x` is packed (`job.packed`, m > PACK_ROWS = MR).
    let chunked = m > MR;
    let kc = if chunked { KC } else { k8.max(8) };
    let mut acc = [[0.0f32; 8]; MB * NR];
    let mut t0 = 0;
    // SAFETY (whole body): `i + rows <= m` and `j + R <= n` (the caller's contract), so every
    // `group` call stays within `x`'s (or the packed copy's) and `w`'s rows and `acc`'s `MB`
    // rows; the CPU has AVX2+FMA.
    unsafe {
        while t0 < k8 {
            let t1 = (t0 + kc).min(k8);
            let mut q = 0;
            while q < rows {
                let acc_q = acc[q * NR..].as_mut_ptr();
                // Row `i + q` from column `t0`, and the distance between rows.
                let (xq, stride) = if chunked {
                    let c = t0 / KC;
                    (job.packed.as_ptr().add((c * m + i + q) * KC), KC)
                } else {
                    (job.x.as_ptr().add((i + q) * k + t0), k)
                };
                let first = q == 0;
                let len = t1 - t0;
                match (rows - q).min(MR) {
                    4 => group::<W, R, 4>(job, xq, stride, j, t0, len, acc_q, first),
                    3 => group::<W, R, 3>(job, xq, stride, j, t0, len, acc_q, first),
                    2 => group::<W, R, 2>(job, xq, stride, j, t0, len, acc_q, first),
                    _ => group::<W, R, 1>(job, xq, stride, j, t0, len, acc_q, first),
                }
                q += MR;
            }
            t0 = t1;
        }
        let xp = job.x.as_ptr();
        let wp = job.w.as_ptr();
        for q in 0..rows {
            for r in 0..R {
                let lanes = _mm256_loadu_ps(acc[q * NR + r].as_ptr());
                let mut total = hsum(lanes);
                for t in k8..k {
                    total += *xp.add((i + q) * k + t) * (*wp.add((j + r) * k + t)).to_f32();
                }
                if let Some(b) = job.bias {
                    total += b[j + r];
                }
                job.store(i + q, j + r, total);
            }
        }
    }
}

/// Adds `x[q, 0..len] * w[j + r, t0..t0 + len]` to the 8-lane partial sums `acc[q * NR + r]`,
/// where `x[q, ..]` starts at `xq + q * stride` and `acc` points at this group's first row;
/// `prefetch` asks for the weights [`PREFETCH`] floats ahead.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn group<W: Load8, const R: usize, const Q: usize>(
    job: &Job<'_, W>,
    xq: *const f32,
    stride: usize,
    j: usize,
    t0: usize,
    len: usize,
    acc: *mut [f32; 8],
    prefetch: bool,
) {
    let k = job.k;
    let wp = job.w.as_ptr().wrapping_add(t0);
    // SAFETY (whole body): `Q` rows of `len` floats from `xq` (stride `stride`) and rows
    // `j..j + R` of `w` from column `t0` exist, `len` is a multiple of 8 and
    // `t0 + len <= k - k % 8`, so every 8-wide load is within its row; `acc` has `Q * NR`
    // entries from this group's first row (the caller's contract); prefetches never fault
    // (wrapping arithmetic, possibly past the end, never dereferenced); the CPU has AVX2+FMA.
    unsafe {
        let mut sums = [[_mm256_setzero_ps(); R]; Q];
        for (q, a) in sums.iter_mut().enumerate() {
            for (r, s) in a.iter_mut().enumerate() {
                *s = _mm256_loadu_ps((*acc.add(q * NR + r)).as_ptr());
            }
        }
        let mut t = 0;
        while t < len {
            let mut wv = [_mm256_setzero_ps(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                let p = wp.add((j + r) * k + t);
                if prefetch {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH) as *const i8);
                }
                *v = W::load8(p);
            }
            for (q, a) in sums.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(xq.add(q * stride + t));
                for (r, s) in a.iter_mut().enumerate() {
                    *s = _mm256_fmadd_ps(xv, wv[r], *s);
                }
            }
            t += 8;
        }
        for (q, a) in sums.iter().enumerate() {
            for (r, s) in a.iter().enumerate() {
                _mm256_storeu_ps((*acc.add(q * NR + r)).as_mut_ptr(), *s);
            }
        }
    }
}

/// The sum of the 8 lanes, pairing lane `l` with `l + 4`, then `l + 2`, then `l + 1` (the
/// order the portable path uses).
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only AVX/SSE operations; the caller runs with AVX2.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}
