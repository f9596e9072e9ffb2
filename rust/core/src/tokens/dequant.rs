//! Dequantizing GGUF tensor rows to float32, bit for bit as the `gguf` Python package does.
//!
//! Each block is decoded with the same float32 operations, in the same order, as
//! `gguf.quants.dequantize` (no fused multiply-add: Rust never contracts `a * b + c`), so the
//! results are identical, not merely close.

use crate::{Error, Result};

/// The ggml tensor types whose rows can be dequantized here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// `F32` (0).
    F32,
    /// `F16` (1).
    F16,
    /// `Q4_0` (2): 32 values per block, one f16 scale.
    Q4_0,
    /// `Q4_1` (3): 32 values per block, f16 scale and minimum.
    Q4_1,
    /// `Q8_0` (8): 32 int8 values per block, one f16 scale.
    Q8_0,
    /// `Q4_K` (12): 256-value super-blocks with 6-bit sub-block scales and minimums.
    Q4K,
    /// `Q5_K` (13): like `Q4_K` with a fifth bit per value.
    Q5K,
    /// `Q6_K` (14): 256-value super-blocks, 6-bit values, int8 sub-block scales.
    Q6K,
    /// `BF16` (30).
    BF16,
}

/// Values per super-block of the K-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// The type for a ggml type id, or None when it is not supported here.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// The type's name as ggml spells it.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// `(values per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (QK_K, 144),
            GgmlType::Q5K => (QK_K, 176),
            GgmlType::Q6K => (QK_K, 210),
        }
    }

    /// Bytes taken by a row of `n` values, or an error when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: u64, what: &str) -> Result<u64> {
        let (values, bytes) = self.block();
        if n % values as u64 != 0 {
            return Err(Error::malformed(
                what,
                format!(
                    "a {} row of {n} values is not a whole number of {values}-value blocks",
                    self.name()
                ),
            ));
        }
        Ok(n / values as u64 * bytes as u64)
    }
}

/// An IEEE half-precision value widened exactly to f32 (every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise the mantissa into an f32 exponent.
            let shift = mant.leading_zeros() - 21;
            let m = (mant << shift) & 0x3ff;
            sign | ((113 - shift) << 23) | (m << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

fn half(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The 6-bit scales and minimums of a Q4_K/Q5_K super-block (12 packed bytes).
fn scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3f;
        mn[j] = s[j + 4] & 0x3f;
        sc[j + 4] = (s[j + 8] & 0x0f) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Dequantizes one row: `raw` holds whole blocks, `out` receives their values.
///
/// The caller sizes both from [`GgmlType::row_bytes`]; a mismatch is an internal error.
pub fn dequantize_row(kind: GgmlType, raw: &[u8], out: &mut [f32]) -> Result<()> {
    let (values, bytes) = kind.block();
    if raw.len() % bytes != 0 || raw.len() / bytes * values != out.len() {
        return Err(Error::Internal(format!(
            "dequantize_row: {} bytes of {} for {} values",
            raw.len(),
            kind.name(),
            out.len()
        )));
    }
    let blocks = raw.chunks_exact(bytes).zip(out.chunks_exact_mut(values));
    match kind {
        GgmlType::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in blocks {
                o[0] = half(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, o) in blocks {
                o[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        GgmlType::Q8_0 => {
            for (b, o) in blocks {
                let d = half(b, 0);
                for (x, &q) in o.iter_mut().zip(&b[2..34]) {
                    *x = d * f32::from(q as i8);
                }
            }
        }
        GgmlType::Q4_0 => {
            for (b, o) in blocks {
                let d = half(b, 0);
                for (j, &q) in b[2..18].iter().enumerate() {
                    o[j] = d * f32::from((q & 0x0f) as i8 - 8);
                    o[j + 16] = d * f32::from((q >> 4) as i8 - 8);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (b, o) in blocks {
                let d = half(b, 0);
                let m = half(b, 2);
                for (j, &q) in b[4..20].iter().enumerate() {
                    o[j] = d * f32::from(q & 0x0f) + m;
                    o[j + 16] = d * f32::from(q >> 4) + m;
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let five = kind == GgmlType::Q5K;
            for (b, o) in blocks {
                let d = half(b, 0);
                let dmin = half(b, 2);
                let (sc, mn) = scale_min(&b[4..16]);
                let (qh, qs) = if five {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[0..0], &b[16..144])
                };
                for j in 0..8 {
                    let dj = d * f32::from(sc[j]);
                    let mj = dmin * f32::from(mn[j]);
                    let chunk = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
                    let shift = 4 * (j % 2);
                    for l in 0..32 {
                        let mut q = (chunk[l] >> shift) & 0x0f;
                        if five {
                            q |= ((qh[l] >> j) & 1) << 4;
                        }
                        o[j * 32 + l] = dj * f32::from(q) - mj;
                    }
                }
            }
        }
        GgmlType::Q6K => {
            for (b, o) in blocks {
                let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = half(b, 208);
                for (e, x) in o.iter_mut().enumerate() {
                    let h = e / 128;
                    let low = (ql[h * 64 + e % 64] >> (4 * ((e % 128) / 64))) & 0x0f;
                    let high = (qh[h * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 0x03;
                    let q = ((low | (high << 4)) as i8) - 32;
                    let s = d * f32::from(scales[e / 16] as i8);
                    *x = s * f32::from(q);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn q8_0_block_is_scale_times_int8() {
        let mut raw = vec![0x00, 0x38]; // f16 0.5
        raw.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q8_0, &raw, &mut out).unwrap();
        assert_eq!(out[0], -8.0);
        assert_eq!(out[31], 7.5);
    }

    #[test]
    fn mismatched_sizes_are_internal_errors_not_panics() {
        let mut out = [0f32; 31];
        assert!(dequantize_row(GgmlType::Q8_0, &[0u8; 34], &mut out).is_err());
        assert!(GgmlType::Q4K.row_bytes(100, "f").is_err());
        assert_eq!(GgmlType::Q6K.row_bytes(512, "f").unwrap(), 420);
    }
}
