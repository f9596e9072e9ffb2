//! The distance matrix on Intel AMX tiles, refined to float32 decisions by the greedy.
//!
//! AMX multiplies bf16 tiles into float32 accumulators (`TDPBF16PS`), several times the
//! float32 FMA throughput of a core. bf16 alone keeps 8 bits of every value, so each
//! normalised value is split into two bf16 terms, `x = h + l + r` with `h = bf16(x)`,
//! `l = bf16(x - h)`, `|l| <= 2^-9 |x|` and `|r| <= 2^-18 |x|`, and a dot product is accumulated
//! as `h.h' + h.l' + l.h'`. Every bf16 x bf16 product is exact in float32, so beyond float32
//! accumulation the only error is the dropped `l.l' + (h + l).r' + r.(h' + l') + r.r'`, at most
//! `3 * 2^-18 * (1 + 2^-7) * sum_k |x_k y_k|`, which is below 1.2e-5 for unit rows (Cauchy-Schwarz)
//! and far smaller for long rows, whose errors cancel. That is about 17 bits, not float32's 24,
//! so callers treat entries as approximations within [`EPS`] of the float32 values and
//! recompute the few decisions that fall inside that window in float32 (see
//! `gram::select_refined`).
//!
//! Layout: `h` and `l` go to row-major panels (the `A` operand, 16 rows x 32 values per tile)
//! and to VNNI panels (the `B` operand: for each block of 16 rows, pairs of consecutive values
//! interleaved across the block). Every panel row starts on a 64-byte boundary: unaligned
//! tile loads were measured 8x slower here. The 2x2 micro-kernel keeps four 16x16 float32
//! accumulators in tiles 0-3 and streams operands through tiles 4-7.
//!
//! Only Linux on x86-64 asks the kernel for the tile state (`arch_prctl`); anywhere else, or
//! when the CPU lacks AMX-BF16, or when `FERROLM_NO_AMX` is set to anything but `0` or the
//! empty string, [`enabled`] is false and callers use the float32 SGEMM path.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::gram::TILE;
use crate::buffer::{Plain, Scratch};
use crate::{Error, Result};

/// How far an entry of [`distance_matrix`] may be from a float32 dot product of the same rows:
/// the split's 1.2e-5 plus 3.4e-6 for the two computations' different float32 rounding.
pub(crate) const EPS: f32 = 1.0 / 65536.0;

/// Whether the AMX path is usable in this process (checked once).
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let off = std::env::var("FERROLM_NO_AMX").is_ok_and(|v| !v.is_empty() && v != "0");
        !off && imp::request_tiles()
    })
}

/// One 64-byte line of bf16 values: panels are built from these so that rows are aligned.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// One 64-byte line of float32 accumulators.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct LineF([f32; 16]);

// SAFETY: 32 u16 values and no padding: every bit pattern is a valid `Line`.
unsafe impl Plain for Line {}

/// A 64-byte aligned buffer of `len` bf16 values (`len` a multiple of 32), of unspecified
/// contents until [`pack`] writes every value.
struct Panel(Scratch<Line>);

impl Panel {
    fn new(len: usize) -> Result<Self> {
        Ok(Panel(Scratch::new(
            "features",
            "the bf16 copy of the features",
            len / 32,
        )?))
    }

    fn as_mut(&mut self) -> &mut [u16] {
        let len = self.0.len() * 32;
        // SAFETY: `Line` is `repr(C)` around `[u16; 32]` with no padding (64 bytes), so the
        // buffer is `len` initialised, suitably aligned u16 values.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u16>(), len) }
    }

    fn ptr(&self) -> *const u16 {
        self.0.as_ptr().cast::<u16>()
    }
}

/// `x` rounded to bf16, to nearest with ties to even (finite `x` only).
fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

fn bf16_to_f32(v: u16) -> f32 {
    f32::from_bits(u32::from(v) << 16)
}

/// Values of the depth per chunk. Panels are stored chunk by chunk, so that the 16 rows of an
/// `A` tile lie 2 KiB apart (few pages, few TLB misses) and one chunk of a 192-row tile pair
/// (2 x 192 rows x 1024 values x 2 terms x 2 bytes, 1.5 MiB) stays in L2 while the
/// micro-kernels sweep it.
const DEPTH_CHUNK: usize = 1024;

/// The two bf16 terms of every normalised value, in both operand layouts, chunk by chunk:
/// chunk `c` holds values `c * DEPTH_CHUNK ..` of every row, `width(c)` of them, at offset
/// `rows * c * DEPTH_CHUNK` of each panel. Within a chunk, the `A` panels are row-major
/// (`width` values per row) and the `B` panels hold one VNNI block per 16 rows: pair row `p`
/// of the block is `[x_r[2p], x_r[2p + 1]] for r in 0..16` (64 bytes).
struct Packed {
    /// Rows padded to a multiple of 32 (zero rows after `n`).
    rows: usize,
    /// Values per row padded to a multiple of 32 (zeros after `d`).
    depth: usize,
    a_hi: Panel,
    a_lo: Panel,
    b_hi: Panel,
    b_lo: Panel,
}

impl Packed {
    fn chunks(&self) -> usize {
        self.depth.div_ceil(DEPTH_CHUNK)
    }

    fn width(&self, chunk: usize) -> usize {
        DEPTH_CHUNK.min(self.depth - chunk * DEPTH_CHUNK)
    }

    fn offset(&self, chunk: usize) -> usize {
        self.rows * chunk * DEPTH_CHUNK
    }
}

/// Packs the two bf16 terms of `features[i] / norms[i]`.
fn pack(x: &[f32], norms: &[f32], n: usize, d: usize) -> Result<Packed> {
    let rows = n.div_ceil(32) * 32;
    let depth = d.div_ceil(32) * 32;
    let mut p = Packed {
        rows,
        depth,
        a_hi: Panel::new(rows.saturating_mul(depth))?,
        a_lo: Panel::new(rows.saturating_mul(depth))?,
        b_hi: Panel::new(rows.saturating_mul(depth))?,
        b_lo: Panel::new(rows.saturating_mul(depth))?,
    };
    let chunks = p.chunks();
    let mut tasks = Vec::with_capacity(chunks);
    let (mut ah, mut al) = (p.a_hi.as_mut(), p.a_lo.as_mut());
    let (mut bh, mut bl) = (p.b_hi.as_mut(), p.b_lo.as_mut());
    for c in 0..chunks {
        let w = DEPTH_CHUNK.min(depth - c * DEPTH_CHUNK);
        let len = rows * w;
        let (ah_c, ah_rest) = std::mem::take(&mut ah).split_at_mut(len);
        let (al_c, al_rest) = std::mem::take(&mut al).split_at_mut(len);
        let (bh_c, bh_rest) = std::mem::take(&mut bh).split_at_mut(len);
        let (bl_c, bl_rest) = std::mem::take(&mut bl).split_at_mut(len);
        (ah, al, bh, bl) = (ah_rest, al_rest, bh_rest, bl_rest);
        // One task per (chunk, block of 16 rows): it owns those rows of the chunk's A panels
        // and the block's VNNI rows of its B panels.
        for (block, (((ah, al), bh), bl)) in ah_c
            .chunks_mut(16 * w)
            .zip(al_c.chunks_mut(16 * w))
            .zip(bh_c.chunks_mut(16 * w))
            .zip(bl_c.chunks_mut(16 * w))
            .enumerate()
        {
            tasks.push((c, w, block, ah, al, bh, bl));
        }
    }
    tasks
        .into_par_iter()
        .for_each(|(c, w, block, ah, al, bh, bl)| {
            let k0 = c * DEPTH_CHUNK;
            let k1 = (k0 + w).min(d).max(k0);
            for r in 0..16 {
                let i = block * 16 + r;
                let (hi, lo) = (&mut ah[r * w..(r + 1) * w], &mut al[r * w..(r + 1) * w]);
                // The buffers hold stale values: padding rows and columns are zeroed here.
                let real = if i < n { k1 - k0 } else { 0 };
                hi[real..].fill(0);
                lo[real..].fill(0);
                if real == 0 {
                    continue;
                }
                split_row(&x[i * d + k0..i * d + k1], norms[i], hi, lo);
            }
            // VNNI: the block's rows as pairs of values, transposed from 16 rows x w/2 pairs
            // into w/2 pair rows x 16.
            for (a, b) in [(&*ah, &mut *bh), (&*al, &mut *bl)] {
                for (pair, dst) in b.chunks_exact_mut(32).enumerate() {
                    for r in 0..16 {
                        let at = r * w + 2 * pair;
                        dst[2 * r] = a[at];
                        dst[2 * r + 1] = a[at + 1];
                    }
                }
            }
        });
    Ok(p)
}

/// Writes the two bf16 terms of `src / norm` (multiplied by the reciprocal: the terms keep 17
/// bits, so the last bit of the division does not matter) to `hi` and `lo`.
fn split_row(src: &[f32], norm: f32, hi: &mut [u16], lo: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { split_row_avx2(src, norm, hi, lo) };
    }
    split_row_plain(src, norm, hi, lo);
}

#[inline(always)]
fn split_row_plain(src: &[f32], norm: f32, hi: &mut [u16], lo: &mut [u16]) {
    let inv = 1.0 / norm;
    for ((h, l), &v) in hi.iter_mut().zip(lo.iter_mut()).zip(src) {
        let v = v * inv;
        *h = bf16(v);
        *l = bf16(v - bf16_to_f32(*h));
    }
}

/// [`split_row_plain`] compiled for AVX2, which the compiler vectorises 8 lanes wide.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn split_row_avx2(src: &[f32], norm: f32, hi: &mut [u16], lo: &mut [u16]) {
    split_row_plain(src, norm, hi, lo);
}

/// The symmetric cosine-distance matrix `D = 1 - X X^T` of the rows of `features` (`[n, d]`)
/// divided by their `norms`, as [`super::gram::distance_matrix`] computes for normalised
/// rows, on AMX; an internal error when AMX is not [`enabled`].
pub(crate) fn distance_matrix(
    features: &[f32],
    norms: &[f32],
    n: usize,
    d: usize,
) -> Result<Scratch<f32>> {
    if !enabled() {
        return Err(Error::Internal(
            "the AMX distance matrix was called without AMX".to_string(),
        ));
    }
    let len = n
        .checked_mul(n)
        .ok_or_else(|| Error::value("features", "fewer tokens", format!("{n} tokens")))?;
    if features.len() != n * d || norms.len() != n {
        return Err(Error::Internal(format!(
            "amx::distance_matrix: {} values and {} norms for [{n}, {d}]",
            features.len(),
            norms.len()
        )));
    }
    let mut dist = Scratch::new("features", &super::gram::matrix_what(n), len)?;
    let packed = pack(features, norms, n, d)?;
    let blocks = packed.rows.div_ceil(TILE);
    let pairs: Vec<(usize, usize)> = (0..blocks)
        .flat_map(|i| (i..blocks).map(move |j| (i, j)))
        .collect();
    let shared = super::gram::SharedMatrix::new(&mut dist, n);
    pairs.into_par_iter().for_each_init(
        || vec![LineF([0.0; 16]); TILE * TILE / 16],
        |scratch, (bi, bj)| {
            let (r0, c0) = (bi * TILE, bj * TILE);
            let h = TILE.min(packed.rows - r0);
            let w = TILE.min(packed.rows - c0);
            let acc = scratch.as_mut_ptr().cast::<f32>();
            // SAFETY: `acc` holds TILE x TILE floats (row stride TILE), `h, w <= TILE` are
            // multiples of 32, and `tile_product` reads rows r0..r0+h and c0..c0+w of the
            // panels, which hold `packed.rows` rows.
            unsafe { imp::tile_product(&packed, r0, h, c0, w, acc, TILE) };
            // SAFETY: as above, the scratch is TILE x TILE initialised floats.
            let acc = unsafe { std::slice::from_raw_parts(acc.cast_const(), TILE * TILE) };
            let (rows, cols) = (h.min(n.saturating_sub(r0)), w.min(n.saturating_sub(c0)));
            // SAFETY: as in `gram::distance_matrix`, block (bi, bj) with bj >= bi owns its
            // entries and their mirrors; rows and columns past `n` (padding) are not written.
            unsafe {
                shared
                    .write_tile_and_mirror(acc, TILE, (r0, c0), (rows, cols), bi == bj, |v| 1.0 - v)
            };
        },
    );
    Ok(dist)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};

    use super::Packed;

    /// `ARCH_REQ_XCOMP_PERM`: ask the kernel for an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    /// The AMX tile data state component.
    const XFEATURE_XTILEDATA: libc::c_long = 18;

    /// True when the CPU has AMX-TILE and AMX-BF16 and the kernel grants this process the
    /// tile state.
    pub(super) fn request_tiles() -> bool {
        // Leaf 7 is only read when the maximum basic leaf reaches it.
        if __get_cpuid_max(0).0 < 7 {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        let amx_bf16 = leaf7.edx & (1 << 22) != 0;
        let amx_tile = leaf7.edx & (1 << 24) != 0;
        if !(amx_bf16 && amx_tile) {
            return false;
        }
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) takes two integers, touches no
        // memory of ours and only changes which state components this process may use.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        ret == 0
    }

    /// The 64-byte tile configuration (palette 1): tiles 0-7 are 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// `acc[r * ld + c] = x_{r0+r} . x_{c0+c}` for an `h x w` block (multiples of 32).
    ///
    /// # Safety
    /// [`super::enabled`] is true; `acc` is 64-byte aligned with room for `h` rows of stride
    /// `ld` (a multiple of 16) floats; rows `r0..r0+h` and `c0..c0+w` exist in `p`.
    pub(super) unsafe fn tile_product(
        p: &Packed,
        r0: usize,
        h: usize,
        c0: usize,
        w_cols: usize,
        acc: *mut f32,
        ld: usize,
    ) {
        // SAFETY: the configuration is valid for palette 1 (unused tiles are zero); tile
        // state is per thread, so every task configures it before use and releases it after.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
        for chunk in 0..p.chunks() {
            let (base, w) = (p.offset(chunk), p.width(chunk));
            for j in (0..w_cols).step_by(32) {
                for i in (0..h).step_by(32) {
                    let a = base + (r0 + i) * w;
                    let b = base + (c0 + j) * w;
                    // SAFETY: by the caller's contract the operand rows exist; a chunk's
                    // panels hold `rows * w` values, `w` per row, and `w / 32` steps of 32
                    // values (A) or 512 values (B, 16 pair rows of 32) stay inside them.
                    unsafe {
                        micro_kernel(
                            p.a_hi.ptr().add(a),
                            p.a_lo.ptr().add(a),
                            w * 2,
                            p.b_hi.ptr().add(b),
                            p.b_lo.ptr().add(b),
                            16 * w,
                            w / 32,
                            acc.add(i * ld + j),
                            ld * 4,
                            chunk == 0,
                        );
                    }
                }
            }
        }
        // SAFETY: returns the tiles to their initial state; no tile is live after this.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// A 32 x 32 block of accumulators over `steps` x 32 values of the depth.
    ///
    /// `a_*` point at the first of 32 rows (stride `a_stride` bytes, 64-byte aligned); `b_*` at
    /// the VNNI block of the first 16 columns, the next 16 columns `b_next` values further;
    /// `acc` at the block's first accumulator (stride `acc_stride` bytes). `zero` starts from
    /// zero instead of the stored accumulators.
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro_kernel(
        a_hi: *const u16,
        a_lo: *const u16,
        a_stride: usize,
        b_hi: *const u16,
        b_lo: *const u16,
        b_next: usize,
        steps: usize,
        acc: *mut f32,
        acc_stride: usize,
        zero: bool,
    ) {
        let acc_down = acc_stride / 4 * 16; // floats between rows 0 and 16 of the block
                                            // SAFETY (whole function): the caller guarantees every address below is inside its
                                            // panel and 64-byte aligned; tiles 0-7 are configured.
        unsafe {
            if zero {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            } else {
                asm!(
                    "tileloadd tmm0, [{c0} + {s}]",
                    "tileloadd tmm1, [{c1} + {s}]",
                    "tileloadd tmm2, [{c2} + {s}]",
                    "tileloadd tmm3, [{c3} + {s}]",
                    c0 = in(reg) acc,
                    c1 = in(reg) acc.add(16),
                    c2 = in(reg) acc.add(acc_down),
                    c3 = in(reg) acc.add(acc_down + 16),
                    s = in(reg) acc_stride,
                    options(nostack, readonly),
                );
            }
            let a_down = a_stride / 2 * 16; // values between rows 0 and 16
            for step in 0..steps {
                let (ah, al) = (a_hi.add(step * 32), a_lo.add(step * 32));
                let (bh, bl) = (b_hi.add(step * 512), b_lo.add(step * 512));
                asm!(
                    // h . h'
                    "tileloadd tmm4, [{ah0} + {sa}]",
                    "tileloadd tmm6, [{bh0} + {sb}]",
                    "tileloadd tmm5, [{ah1} + {sa}]",
                    "tileloadd tmm7, [{bh1} + {sb}]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    // h . l'
                    "tileloadd tmm6, [{bl0} + {sb}]",
                    "tileloadd tmm7, [{bl1} + {sb}]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    // l . h'
                    "tileloadd tmm4, [{al0} + {sa}]",
                    "tileloadd tmm6, [{bh0} + {sb}]",
                    "tileloadd tmm5, [{al1} + {sa}]",
                    "tileloadd tmm7, [{bh1} + {sb}]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    ah0 = in(reg) ah,
                    ah1 = in(reg) ah.add(a_down),
                    al0 = in(reg) al,
                    al1 = in(reg) al.add(a_down),
                    bh0 = in(reg) bh,
                    bh1 = in(reg) bh.add(b_next),
                    bl0 = in(reg) bl,
                    bl1 = in(reg) bl.add(b_next),
                    sa = in(reg) a_stride,
                    sb = in(reg) 64usize,
                    options(nostack, readonly),
                );
            }
            asm!(
                "tilestored [{c0} + {s}], tmm0",
                "tilestored [{c1} + {s}], tmm1",
                "tilestored [{c2} + {s}], tmm2",
                "tilestored [{c3} + {s}], tmm3",
                c0 = in(reg) acc,
                c1 = in(reg) acc.add(16),
                c2 = in(reg) acc.add(acc_down),
                c3 = in(reg) acc.add(acc_down + 16),
                s = in(reg) acc_stride,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::Packed;

    pub(super) fn request_tiles() -> bool {
        false
    }

    pub(super) unsafe fn tile_product(
        _: &Packed,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("AMX is never enabled on this platform")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_split_keeps_sixteen_bits() {
        for &v in &[1.0f32, -0.3, 0.015_625, 1e-3, 0.123_456_79, -7.5e-5] {
            let h = bf16(v);
            let l = bf16(v - bf16_to_f32(h));
            let back = bf16_to_f32(h) + bf16_to_f32(l);
            assert!((back - v).abs() <= v.abs() * 2f32.powi(-16), "{v}");
        }
        assert_eq!(bf16(1.0), 0x3f80);
        // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
        assert_eq!(bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
    }
}
