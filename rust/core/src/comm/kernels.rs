//! The two hot loops shared by the affine quantizers, written with SSE2 intrinsics on x86-64
//! (part of the x86-64 baseline, so no runtime detection) and as plain loops elsewhere.
//! Both paths give bit-identical results: the same IEEE operations in the same order, and the
//! same NaN handling (`max(NaN, 0) = 0`).

/// Minimum, maximum and whether any value is NaN.
#[inline]
pub(crate) fn range(x: &[f32]) -> (f32, f32, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is always available on x86-64; loads are unaligned and in bounds.
        unsafe { sse2::range(x) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        scalar_range(x)
    }
}

/// `out[i] = clamp(trunc(max((x[i] - sub) * mul + add, 0)), 0, 255)`: the affine encode with
/// rounding folded into `add` (0.5 or 128.5).
#[inline]
pub(crate) fn encode(x: &[f32], sub: f32, mul: f32, add: f32, out: &mut [u8]) {
    debug_assert_eq!(x.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is always available on x86-64; `out` has `x.len()` bytes.
        unsafe { sse2::encode(x, sub, mul, add, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = encode_one(v, sub, mul, add);
        }
    }
}

/// Hints the CPU to fetch the cache line at `p` (a no-op off x86-64). `p` may point past the
/// end of an allocation: it is never dereferenced.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching never faults and SSE2 is always available on x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Elements ahead to prefetch in the scalar sweeps (4 KiB of float32).
pub(crate) const PREFETCH_AHEAD: usize = 1024;

/// `out[i] = min + q[i] * scale`, or `out[i] += min + q[i] * scale` with `accumulate`.
#[inline]
pub(crate) fn decode_affine(q: &[u8], min: f32, scale: f32, out: &mut [f32], accumulate: bool) {
    debug_assert_eq!(q.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is always available on x86-64; `out` has `q.len()` floats.
        unsafe { sse2::decode_affine(q, min, scale, out, accumulate) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        for (o, &c) in out.iter_mut().zip(q) {
            let v = min + f32::from(c) * scale;
            *o = if accumulate { *o + v } else { v };
        }
    }
}

#[inline(always)]
#[allow(clippy::manual_clamp)] // clamp() would keep NaN; max() maps it to 0
pub(crate) fn encode_one(v: f32, sub: f32, mul: f32, add: f32) -> u8 {
    let t = ((v - sub) * mul + add).max(0.0).min(255.0);
    // SAFETY: t is finite and within 0..=255, so it fits in i32.
    (unsafe { t.to_int_unchecked::<i32>() }) as u8
}

#[allow(dead_code)] // the reference path off x86-64, and for tests
pub(crate) fn scalar_range(x: &[f32]) -> (f32, f32, bool) {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    let mut nan = false;
    for &v in x {
        min = if v < min { v } else { min };
        max = if v > max { v } else { max };
        nan |= v.is_nan();
    }
    (min, max, nan)
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    use super::encode_one;

    /// Floats ahead of the current position to prefetch in the range sweep.
    const PREFETCH: usize = 1024;

    #[inline]
    pub(super) unsafe fn range(x: &[f32]) -> (f32, f32, bool) {
        let n = x.len();
        let p = x.as_ptr();
        let mut lo = [_mm_set1_ps(f32::INFINITY); 4];
        let mut hi = [_mm_set1_ps(f32::NEG_INFINITY); 4];
        let mut nan = _mm_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            // Software prefetch ~4 KiB ahead (wrapping_add: the address may lie past the end;
            // prefetching it is harmless and it is never dereferenced).
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + PREFETCH) as *const i8);
            for k in 0..4 {
                let v = _mm_loadu_ps(p.add(i + 4 * k));
                // minps(v, lo) returns lo when v is NaN: NaN never enters the range.
                lo[k] = _mm_min_ps(v, lo[k]);
                hi[k] = _mm_max_ps(v, hi[k]);
                nan = _mm_or_ps(nan, _mm_cmpunord_ps(v, v));
            }
            i += 16;
        }
        let l = _mm_min_ps(_mm_min_ps(lo[0], lo[1]), _mm_min_ps(lo[2], lo[3]));
        let h = _mm_max_ps(_mm_max_ps(hi[0], hi[1]), _mm_max_ps(hi[2], hi[3]));
        let mut lv = [0f32; 4];
        let mut hv = [0f32; 4];
        _mm_storeu_ps(lv.as_mut_ptr(), l);
        _mm_storeu_ps(hv.as_mut_ptr(), h);
        let mut min = lv[0].min(lv[1]).min(lv[2]).min(lv[3]);
        let mut max = hv[0].max(hv[1]).max(hv[2]).max(hv[3]);
        let mut has_nan = _mm_movemask_ps(nan) != 0;
        while i < n {
            let v = *p.add(i);
            min = if v < min { v } else { min };
            max = if v > max { v } else { max };
            has_nan |= v.is_nan();
            i += 1;
        }
        (min, max, has_nan)
    }

    #[inline]
    pub(super) unsafe fn decode_affine(
        q: &[u8],
        min: f32,
        scale: f32,
        out: &mut [f32],
        accumulate: bool,
    ) {
        let n = q.len().min(out.len());
        let p = q.as_ptr();
        let o = out.as_mut_ptr();
        let (vmin, vscale, zero) = (_mm_set1_ps(min), _mm_set1_ps(scale), _mm_setzero_si128());
        let mut i = 0;
        while i + 16 <= n {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + PREFETCH) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(o.wrapping_add(i + PREFETCH) as *const i8);
            let bytes = _mm_loadu_si128(p.add(i) as *const __m128i);
            let lo = _mm_unpacklo_epi8(bytes, zero);
            let hi = _mm_unpackhi_epi8(bytes, zero);
            let words = [
                _mm_unpacklo_epi16(lo, zero),
                _mm_unpackhi_epi16(lo, zero),
                _mm_unpacklo_epi16(hi, zero),
                _mm_unpackhi_epi16(hi, zero),
            ];
            for (k, w) in words.iter().enumerate() {
                // min + q * scale: a multiply then an add, as in the scalar path (no FMA).
                let v = _mm_add_ps(vmin, _mm_mul_ps(_mm_cvtepi32_ps(*w), vscale));
                let dst = o.add(i + 4 * k);
                let v = if accumulate {
                    _mm_add_ps(_mm_loadu_ps(dst), v)
                } else {
                    v
                };
                _mm_storeu_ps(dst, v);
            }
            i += 16;
        }
        while i < n {
            let v = min + f32::from(*p.add(i)) * scale;
            let dst = o.add(i);
            *dst = if accumulate { *dst + v } else { v };
            i += 1;
        }
    }

    #[inline]
    pub(super) unsafe fn encode(x: &[f32], sub: f32, mul: f32, add: f32, out: &mut [u8]) {
        let n = x.len().min(out.len());
        let p = x.as_ptr();
        let o = out.as_mut_ptr();
        let (vs, vm, va) = (_mm_set1_ps(sub), _mm_set1_ps(mul), _mm_set1_ps(add));
        let (zero, top) = (_mm_setzero_ps(), _mm_set1_ps(255.0));
        let mut i = 0;
        while i + 16 <= n {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + PREFETCH) as *const i8);
            let mut q = [_mm_setzero_si128(); 4];
            for (k, q) in q.iter_mut().enumerate() {
                let v = _mm_loadu_ps(p.add(i + 4 * k));
                let t = _mm_add_ps(_mm_mul_ps(_mm_sub_ps(v, vs), vm), va);
                // maxps(t, 0) returns 0 when t is NaN, like f32::max in the scalar path.
                let t = _mm_min_ps(_mm_max_ps(t, zero), top);
                *q = _mm_cvttps_epi32(t);
            }
            let lo = _mm_packs_epi32(q[0], q[1]);
            let hi = _mm_packs_epi32(q[2], q[3]);
            _mm_storeu_si128(o.add(i) as *mut __m128i, _mm_packus_epi16(lo, hi));
            i += 16;
        }
        while i < n {
            *o.add(i) = encode_one(*p.add(i), sub, mul, add);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn simd_paths_equal_scalar(
            x in proptest::collection::vec(prop_oneof![
                9 => -1e4f32..1e4,
                1 => Just(f32::NAN),
                1 => Just(f32::INFINITY),
            ], 0..200),
            sub in -10f32..10.0,
            mul in 0f32..100.0,
        ) {
            let (a, b, c) = range(&x);
            let (d, e, f) = scalar_range(&x);
            prop_assert_eq!(c, f);
            prop_assert_eq!(a.to_bits(), d.to_bits());
            prop_assert_eq!(b.to_bits(), e.to_bits());
            let mut out = vec![0u8; x.len()];
            encode(&x, sub, mul, 0.5, &mut out);
            for (o, &v) in out.iter().zip(&x) {
                prop_assert_eq!(*o, encode_one(v, sub, mul, 0.5));
            }
            let mut dec = vec![1.5f32; out.len()];
            decode_affine(&out, sub, mul, &mut dec, true);
            for (d, &c) in dec.iter().zip(&out) {
                prop_assert_eq!(d.to_bits(), (1.5 + (sub + f32::from(c) * mul)).to_bits());
            }
            decode_affine(&out, sub, mul, &mut dec, false);
            for (d, &c) in dec.iter().zip(&out) {
                prop_assert_eq!(d.to_bits(), (sub + f32::from(c) * mul).to_bits());
            }
        }
    }
}
