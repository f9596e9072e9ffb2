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
    /// Whether loading widens (then a chunk of the tile is widened once, by the first group of
    /// rows, into an L1 buffer that the other groups read).
    const WIDENS: bool;

    /// The 8 weights at `p` as float32.
    ///
    /// # Safety
    /// The CPU has AVX2; `p..p + 8` is in bounds.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Load8 for f32 {
    const WIDENS: bool = false;

    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: 8 floats in bounds (the caller's contract); unaligned load.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Load8 for u16 {
    const WIDENS: bool = true;

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

impl Load8 for i8 {
    const WIDENS: bool = true;

    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: 8 bytes in bounds (the caller's contract); unaligned 64-bit load. Sign-
        // extending to 32 bits and converting is exact; the CPU has AVX2.
        unsafe {
            let b = _mm_loadl_epi64(p as *const __m128i);
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))
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

/// [`super::RowsFn`] for int8 weights (scaled per row at the store).
///
/// # Safety
/// As [`rows_f32`].
pub(super) unsafe fn rows_i8(job: &Job<'_, i8>, j0: usize, j1: usize) {
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
    // bfloat16 tiles in chunks: widened once per chunk (see `Load8::WIDENS`).
    let cached = W::WIDENS && chunked;
    // Uninitialised: only the widening modes touch it, writing each element before reading it
    // (a zeroed 3 KiB per tile would cost float32 tiles stores for nothing).
    let mut widened = std::mem::MaybeUninit::<Widened>::uninit();
    let wide = widened.as_mut_ptr() as *mut f32;
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
                let len = t1 - t0;
                let phase = match (q == 0, cached) {
                    (true, false) => FIRST,
                    (true, true) => FIRST_WIDEN,
                    (false, false) => LATER,
                    (false, true) => LATER_WIDENED,
                };
                macro_rules! run {
                    ($q:literal) => {
                        match phase {
                            FIRST => {
                                group::<W, R, $q, FIRST>(job, xq, stride, j, t0, len, acc_q, wide)
                            }
                            FIRST_WIDEN => group::<W, R, $q, FIRST_WIDEN>(
                                job, xq, stride, j, t0, len, acc_q, wide,
                            ),
                            LATER => {
                                group::<W, R, $q, LATER>(job, xq, stride, j, t0, len, acc_q, wide)
                            }
                            _ => group::<W, R, $q, LATER_WIDENED>(
                                job, xq, stride, j, t0, len, acc_q, wide,
                            ),
                        }
                    };
                }
                match (rows - q).min(MR) {
                    4 => run!(4),
                    3 => run!(3),
                    2 => run!(2),
                    _ => run!(1),
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
                if let Some(s) = job.scale {
                    total *= s[j + r];
                }
                if let Some(b) = job.bias {
                    total += b[j + r];
                }
                job.store(i + q, j + r, total);
            }
        }
    }
}

/// A chunk of a tile's rows widened to float32, `[NR][KC]`, aligned for vector loads.
#[repr(C, align(32))]
struct Widened([[f32; KC]; NR]);

/// How a group of rows gets the tile's weights (the `P` of [`group`]).
/// The first group: from `w`, prefetching ahead.
const FIRST: u8 = 0;
/// The first group of a widening tile: as [`FIRST`], and stores the widened chunk.
const FIRST_WIDEN: u8 = 1;
/// A later group: from `w` (in L1 by now), no prefetch.
const LATER: u8 = 2;
/// A later group of a widening tile: the float32 chunk [`FIRST_WIDEN`] stored.
const LATER_WIDENED: u8 = 3;

/// Adds `x[q, 0..len] * w[j + r, t0..t0 + len]` to the 8-lane partial sums `acc[q * NR + r]`,
/// where `x[q, ..]` starts at `xq + q * stride` and `acc` points at this group's first row;
/// `P` says where the weights come from and whether to prefetch them [`PREFETCH`] floats
/// ahead; `wide` is the `[NR][KC]` widened chunk.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn group<W: Load8, const R: usize, const Q: usize, const P: u8>(
    job: &Job<'_, W>,
    xq: *const f32,
    stride: usize,
    j: usize,
    t0: usize,
    len: usize,
    acc: *mut [f32; 8],
    wide: *mut f32,
) {
    let k = job.k;
    let wp = job.w.as_ptr().wrapping_add(t0);
    // SAFETY (whole body): `Q` rows of `len` floats from `xq` (stride `stride`) and rows
    // `j..j + R` of `w` from column `t0` exist, `len` is a multiple of 8 and
    // `t0 + len <= k - k % 8`, so every 8-wide load is within its row; `acc` has `Q * NR`
    // entries from this group's first row and `wide` is a 32-byte aligned `[NR][KC]` buffer
    // with `len <= KC`, filled by the first group before later ones read it (the caller's
    // contract, the widened modes only); prefetches never fault
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
                if P == LATER_WIDENED {
                    *v = _mm256_load_ps(wide.add(r * KC + t));
                    continue;
                }
                let p = wp.add((j + r) * k + t);
                if P == FIRST || P == FIRST_WIDEN {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH) as *const i8);
                }
                *v = W::load8(p);
                if P == FIRST_WIDEN {
                    _mm256_store_ps(wide.add(r * KC + t), *v);
                }
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
