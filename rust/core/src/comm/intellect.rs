//! INTELLECT-1's int8 code: a symmetric uniform grid around zero with
//! `scale = 6 * RMS / 256`, zero point 128 and codes clamped to `0..=255`, decoded through a
//! 256-entry codebook holding the mean of the inputs that fell into each bucket.
//!
//! Two streaming passes: one reduction (sum of squares) and one that writes the codes and
//! accumulates the bucket sums and counts. The bucket statistics are gathered on a small tile
//! that is still in L1 right after it was encoded, with four interleaved tables so consecutive
//! values in the same bucket do not serialise on one memory location.

use rayon::prelude::*;

use super::kernels::{prefetch, PREFETCH_AHEAD};
use super::CHUNK;
use crate::error::{check_len, Error, Result};

/// Number of codes (and codebook entries).
pub const LEVELS: usize = 256;
/// The code that stands for zero.
pub const ZERO_POINT: f32 = 128.0;
/// Half-width of the grid in RMS units: the grid spans `[-6 RMS / 2, +6 RMS / 2) * 256 / 256`.
pub const RMS_SPAN: f32 = 6.0;

const LANES: usize = 16;
const TILE: usize = 2048;

fn non_finite() -> Error {
    Error::value(
        "tensor",
        "finite (int8 quantization has no code for NaN or infinity)",
        "a tensor containing NaN or infinite values",
    )
}

/// Sum of squares of one chunk (f32 lanes, f64 total) and whether every value is finite.
fn chunk_sum_squares(x: &[f32]) -> (f64, bool) {
    let mut acc = [0f32; LANES];
    let mut finite = [true; LANES];
    let mut blocks = x.chunks_exact(LANES);
    for b in &mut blocks {
        prefetch(b.as_ptr().wrapping_add(PREFETCH_AHEAD));
        for i in 0..LANES {
            acc[i] += b[i] * b[i];
            finite[i] &= b[i].is_finite();
        }
    }
    let mut total: f64 = acc.iter().map(|&v| f64::from(v)).sum();
    let mut ok = finite.iter().all(|&f| f);
    for &v in blocks.remainder() {
        total += f64::from(v) * f64::from(v);
        ok &= v.is_finite();
    }
    (total, ok)
}

/// The grid step for `x`: `6 * RMS(x) / 256` (0 when `x` is all zeros).
pub fn intellect_scale(x: &[f32]) -> Result<f32> {
    if x.is_empty() {
        return Err(Error::value("tensor", "non-empty", "an empty tensor"));
    }
    let (ss, ok) = x
        .par_chunks(CHUNK)
        .map(chunk_sum_squares)
        .reduce(|| (0.0, true), |a, b| (a.0 + b.0, a.1 & b.1));
    if !ok || !ss.is_finite() {
        return Err(non_finite());
    }
    let rms = (ss / x.len() as f64).sqrt();
    let scale = (f64::from(RMS_SPAN) * rms / LEVELS as f64) as f32;
    if !scale.is_finite() {
        return Err(non_finite());
    }
    Ok(scale)
}

/// Per-tile bucket statistics: four interleaved tables (consecutive values update different
/// tables, so repeated buckets do not serialise), each entry a `(sum, count)` pair so one update
/// touches one cache line.
struct Buckets {
    t: [[(f32, u32); LEVELS]; 4],
}

impl Buckets {
    fn new() -> Box<Self> {
        Box::new(Buckets {
            t: [[(0.0, 0); LEVELS]; 4],
        })
    }

    fn add_tile(&mut self, x: &[f32], codes: &[u8]) {
        let mut xs = x.chunks_exact(4);
        let mut cs = codes.chunks_exact(4);
        for (x4, c4) in (&mut xs).zip(&mut cs) {
            for k in 0..4 {
                let e = &mut self.t[k][usize::from(c4[k])];
                e.0 += x4[k];
                e.1 += 1;
            }
        }
        for (&v, &c) in xs.remainder().iter().zip(cs.remainder()) {
            let e = &mut self.t[0][usize::from(c)];
            e.0 += v;
            e.1 += 1;
        }
    }

    fn totals(&self) -> (Vec<f64>, Vec<u64>) {
        let mut sum = vec![0f64; LEVELS];
        let mut count = vec![0u64; LEVELS];
        for table in &self.t {
            for (c, &(s, n)) in table.iter().enumerate() {
                sum[c] += f64::from(s);
                count[c] += u64::from(n);
            }
        }
        (sum, count)
    }
}

/// Quantizes `x` into `codes` and writes the 256-entry `codebook` (the mean input value of each
/// bucket; an empty bucket gets its grid centre `(c - 128) * scale`). Returns the scale.
///
/// Fails on an empty input, NaN or infinite values and mismatched buffer lengths.
pub fn quantize_intellect(x: &[f32], codes: &mut [u8], codebook: &mut [f32]) -> Result<f32> {
    check_len("codes", codes.len(), x.len())?;
    check_len("codebook", codebook.len(), LEVELS)?;
    let scale = intellect_scale(x)?;
    // A subnormal scale has no finite inverse: code everything as 128 (the codebook then holds
    // the mean, which is exact enough for values that small).
    let inverse = if scale > 0.0 && (1.0 / scale).is_finite() {
        1.0 / scale
    } else {
        0.0
    };
    let (sum, count) = codes
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .map(|(codes, x)| {
            let mut b = Buckets::new();
            for (c, x) in codes.chunks_mut(TILE).zip(x.chunks(TILE)) {
                // round(v / scale) + 128, clamped to 0..=255 (v - 0 == v for finite v).
                super::kernels::encode(x, 0.0, inverse, ZERO_POINT + 0.5, c);
                b.add_tile(x, c);
            }
            b.totals()
        })
        .reduce(
            || (vec![0f64; LEVELS], vec![0u64; LEVELS]),
            |mut a, b| {
                for c in 0..LEVELS {
                    a.0[c] += b.0[c];
                    a.1[c] += b.1[c];
                }
                a
            },
        );
    for (c, entry) in codebook.iter_mut().enumerate() {
        *entry = if count[c] > 0 {
            (sum[c] / count[c] as f64) as f32
        } else {
            (c as f32 - ZERO_POINT) * scale
        };
    }
    Ok(scale)
}

fn check_codebook(codebook: &[f32]) -> Result<&[f32; LEVELS]> {
    let table: &[f32; LEVELS] = codebook
        .try_into()
        .map_err(|_| Error::value("codebook", "256 float32 values", codebook.len()))?;
    check_entries(table)?;
    Ok(table)
}

/// Checks that every codebook entry is finite (a codebook from outside must never decode to
/// NaN or infinity), naming the first bad entry.
pub fn check_entries(codebook: &[f32]) -> Result<()> {
    match codebook.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::value(
            format!("codebook[{i}]"),
            "finite",
            format!("{:?}", codebook[i]),
        )),
    }
}

/// Writes `codebook[q]` into `out`.
pub fn dequantize_intellect(codes: &[u8], codebook: &[f32], out: &mut [f32]) -> Result<()> {
    let table = check_codebook(codebook)?;
    check_len("out", out.len(), codes.len())?;
    out.par_chunks_mut(CHUNK)
        .zip(codes.par_chunks(CHUNK))
        .for_each(|(o, c)| {
            for (o, c) in o.chunks_mut(16).zip(c.chunks(16)) {
                prefetch(c.as_ptr().wrapping_add(PREFETCH_AHEAD));
                prefetch(o.as_ptr().wrapping_add(PREFETCH_AHEAD));
                for (o, &c) in o.iter_mut().zip(c) {
                    *o = table[usize::from(c)];
                }
            }
        });
    Ok(())
}

/// Adds `codebook[q]` into the fp32 accumulator `acc`.
pub fn dequantize_accumulate_intellect(
    codes: &[u8],
    codebook: &[f32],
    acc: &mut [f32],
) -> Result<()> {
    let table = check_codebook(codebook)?;
    check_len("acc", acc.len(), codes.len())?;
    acc.par_chunks_mut(CHUNK)
        .zip(codes.par_chunks(CHUNK))
        .for_each(|(a, c)| {
            for (a, c) in a.chunks_mut(16).zip(c.chunks(16)) {
                prefetch(c.as_ptr().wrapping_add(PREFETCH_AHEAD));
                prefetch(a.as_ptr().wrapping_add(PREFETCH_AHEAD));
                for (a, &c) in a.iter_mut().zip(c) {
                    *a += table[usize::from(c)];
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        // Box-Muller over a small xorshift generator (tests only).
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (next(), next());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    }

    fn round_trip(x: &[f32]) -> (Vec<u8>, Vec<f32>, f32, Vec<f32>) {
        let mut q = vec![0u8; x.len()];
        let mut book = vec![0f32; LEVELS];
        let scale = quantize_intellect(x, &mut q, &mut book).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize_intellect(&q, &book, &mut y).unwrap();
        (q, book, scale, y)
    }

    #[test]
    fn gaussian_error_is_small_and_codebook_is_bucket_means() {
        let x = gaussian(200_000, 7);
        let (q, book, scale, y) = round_trip(&x);
        let ss: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
        let rms = (ss / x.len() as f64).sqrt();
        assert!((f64::from(scale) - 6.0 * rms / 256.0).abs() < 1e-6);
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let rel = (err / ss).sqrt();
        // About 0.7 % from rounding plus about 1.4 % from clipping the 0.27 % of values beyond 3 RMS.
        assert!(rel < 0.02, "relative L2 error {rel}");
        // Recompute a bucket mean directly.
        let c = 130u8;
        let members: Vec<f64> = x
            .iter()
            .zip(&q)
            .filter(|(_, &k)| k == c)
            .map(|(&v, _)| f64::from(v))
            .collect();
        let mean = members.iter().sum::<f64>() / members.len() as f64;
        assert!((f64::from(book[usize::from(c)]) - mean).abs() < 1e-5);
        // Unclipped values are within one step of their decoded value.
        for (a, (b, &k)) in x.iter().zip(y.iter().zip(&q)) {
            if k != 0 && k != 255 {
                assert!((a - b).abs() <= scale * 1.001 + 1e-6);
            }
        }
    }

    #[test]
    fn zeros_and_empty_buckets_and_errors() {
        let (q, book, scale, y) = round_trip(&[0.0; 100]);
        assert_eq!(scale, 0.0);
        assert!(q.iter().all(|&c| c == 128));
        assert!(y.iter().all(|&v| v == 0.0));
        assert_eq!(book[3], 0.0);
        let (_, book, scale, _) = round_trip(&[1.0, -1.0]);
        assert_eq!(book[100], (100.0 - 128.0) * scale);
        let mut q = [0u8; 2];
        let mut b = [0f32; LEVELS];
        assert!(quantize_intellect(&[1.0, f32::NAN], &mut q, &mut b).is_err());
        assert!(quantize_intellect(&[1.0, f32::INFINITY], &mut q, &mut b).is_err());
        assert!(quantize_intellect(&[], &mut [], &mut b).is_err());
        assert!(quantize_intellect(&[1.0, 2.0], &mut q, &mut [0f32; 3]).is_err());
        assert!(dequantize_intellect(&q, &[0f32; 3], &mut [0f32; 2]).is_err());
    }

    #[test]
    fn outliers_clip_to_the_end_codes() {
        let mut x = gaussian(10_000, 3);
        x[17] = 1e4;
        x[18] = -1e4;
        let (q, book, _, _) = round_trip(&x);
        assert_eq!(q[17], 255);
        assert_eq!(q[18], 0);
        assert!(book[255] > 1e3 && book[0] < -1e3);
    }

    proptest! {
        #[test]
        fn accumulate_equals_dequantize_plus_add(
            x in proptest::collection::vec(-1e3f32..1e3, 1..5000),
            base in -10.0f32..10.0,
        ) {
            let (q, book, scale, y) = round_trip(&x);
            let mut acc = vec![base; x.len()];
            dequantize_accumulate_intellect(&q, &book, &mut acc).unwrap();
            for i in 0..x.len() {
                prop_assert_eq!(acc[i], base + y[i]);
                if q[i] != 0 && q[i] != 255 {
                    prop_assert!((x[i] - y[i]).abs() <= scale * 1.01 + 1e-3);
                }
            }
        }
    }
}
