//! Affine (min-max) int8 quantization: `q = round((x - min) / scale)`, `scale = (max - min) / 255`.

use rayon::prelude::*;

use super::CHUNK;
use crate::error::{check_len, Error, Result};

/// The two numbers that describe an affine int8 code: `x ≈ min + q * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    /// The value that code 0 stands for.
    pub min: f32,
    /// The step between consecutive codes; 0 when every input was equal.
    pub scale: f32,
}

impl MinMax {
    /// Builds the code for values spanning `[min, max]`.
    pub fn from_range(min: f32, max: f32) -> Self {
        let scale = (max - min) / 255.0;
        MinMax { min, scale }
    }

    /// Checks a code that came from outside (a peer, a caller): `min` and `scale` finite,
    /// `scale` not negative, and the largest value it stands for (`min + 255 * scale`) finite,
    /// so that no code decodes to NaN or infinity. `what` names the parameters in the error,
    /// e.g. "`packed` block 3".
    pub fn check(&self, what: &str) -> Result<()> {
        let top = self.min + 255.0 * self.scale;
        if self.min.is_finite() && self.scale.is_finite() && self.scale >= 0.0 && top.is_finite() {
            return Ok(());
        }
        Err(Error::value(
            what,
            "a finite min and a finite, non-negative scale whose codes decode to finite values",
            format!("min {:?} and scale {:?}", self.min, self.scale),
        ))
    }

    /// `1 / scale`, or 0 when the range is empty (every value then maps to code 0).
    pub fn inverse_scale(&self) -> f32 {
        if self.scale > 0.0 {
            1.0 / self.scale
        } else {
            0.0
        }
    }
}

/// Minimum, maximum and a NaN flag of one chunk (vectorised).
#[inline]
pub(crate) fn chunk_range(x: &[f32]) -> (f32, f32, bool) {
    super::kernels::range(x)
}

/// Computes the affine code for `x`: one parallel pass over the data.
///
/// Fails on an empty input and on NaN or infinite values (they have no int8 code).
pub fn minmax_params(x: &[f32]) -> Result<MinMax> {
    if x.is_empty() {
        return Err(Error::value("tensor", "non-empty", "an empty tensor"));
    }
    let (min, max, has_nan) = x.par_chunks(CHUNK).map(chunk_range).reduce(
        || (f32::INFINITY, f32::NEG_INFINITY, false),
        |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 | b.2),
    );
    if has_nan || !min.is_finite() || !max.is_finite() {
        return Err(Error::value(
            "tensor",
            "finite (int8 quantization has no code for NaN or infinity)",
            "a tensor containing NaN or infinite values",
        ));
    }
    let params = MinMax::from_range(min, max);
    if !params.scale.is_finite() {
        return Err(Error::value(
            "tensor",
            "a range (max - min) that fits in float32",
            format!("min {min} and max {max}"),
        ));
    }
    Ok(params)
}

/// Writes the codes of `x` under `(min, inverse_scale)` into `out` (rounding half up,
/// clamped to 0..=255; a NaN from `0 * inf` codes as 0).
#[inline]
pub(crate) fn encode_into(x: &[f32], min: f32, inverse_scale: f32, out: &mut [u8]) {
    super::kernels::encode(x, min, inverse_scale, 0.5, out);
}

/// Quantizes `x` into `out` and returns the code used.
pub fn quantize_minmax(x: &[f32], out: &mut [u8]) -> Result<MinMax> {
    check_len("out", out.len(), x.len())?;
    let params = minmax_params(x)?;
    let inverse_scale = params.inverse_scale();
    let min = params.min;
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| encode_into(x, min, inverse_scale, o));
    Ok(params)
}

/// Writes `min + q * scale` into `out`.
///
/// Fails when `params` could decode to NaN or infinity (see [`MinMax::check`]).
pub fn dequantize_minmax(q: &[u8], params: MinMax, out: &mut [f32]) -> Result<()> {
    check_len("out", out.len(), q.len())?;
    params.check("min, scale")?;
    out.par_chunks_mut(CHUNK)
        .zip(q.par_chunks(CHUNK))
        .for_each(|(o, q)| {
            super::kernels::decode_affine(q, params.min, params.scale, o, false);
        });
    Ok(())
}

/// Adds `min + q * scale` into the fp32 accumulator `acc`.
///
/// Fails when `params` could decode to NaN or infinity (see [`MinMax::check`]).
pub fn dequantize_accumulate_minmax(q: &[u8], params: MinMax, acc: &mut [f32]) -> Result<()> {
    check_len("acc", acc.len(), q.len())?;
    params.check("min, scale")?;
    acc.par_chunks_mut(CHUNK)
        .zip(q.par_chunks(CHUNK))
        .for_each(|(a, q)| {
            super::kernels::decode_affine(q, params.min, params.scale, a, true);
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.37 - 11.0)
            .collect();
        let mut q = vec![0u8; x.len()];
        let p = quantize_minmax(&x, &mut q).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize_minmax(&q, p, &mut y).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= p.scale * 0.5 + 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn extremes_map_to_codes_0_and_255() {
        let x = [-2.0f32, 0.5, 3.0];
        let mut q = [0u8; 3];
        quantize_minmax(&x, &mut q).unwrap();
        assert_eq!(q[0], 0);
        assert_eq!(q[2], 255);
    }

    #[test]
    fn constant_input_round_trips_exactly() {
        let x = [4.25f32; 7];
        let mut q = [9u8; 7];
        let p = quantize_minmax(&x, &mut q).unwrap();
        assert_eq!(p.scale, 0.0);
        let mut y = [0f32; 7];
        dequantize_minmax(&q, p, &mut y).unwrap();
        assert_eq!(y, x);
    }

    #[test]
    fn rejects_empty_nan_and_infinite_input() {
        let mut q = [0u8; 2];
        assert!(quantize_minmax(&[], &mut []).is_err());
        let e = quantize_minmax(&[1.0, f32::NAN], &mut q).unwrap_err();
        assert!(e.to_string().contains("NaN"));
        assert!(quantize_minmax(&[1.0, f32::INFINITY], &mut q).is_err());
        assert!(quantize_minmax(&[1.0, 2.0], &mut [0u8; 3]).is_err());
    }

    #[test]
    fn finds_range_across_chunk_boundaries() {
        let mut x = vec![0.0f32; CHUNK * 3 + 17];
        x[CHUNK + 5] = -7.0;
        x[CHUNK * 3 + 16] = 9.0;
        let p = minmax_params(&x).unwrap();
        assert_eq!(p.min, -7.0);
        assert_eq!(p.scale, 16.0 / 255.0);
    }

    proptest! {
        #[test]
        fn dequantize_accumulate_equals_dequantize_plus_add(
            x in proptest::collection::vec(-1e3f32..1e3, 1..3000),
            base in -10.0f32..10.0,
        ) {
            let mut q = vec![0u8; x.len()];
            let p = quantize_minmax(&x, &mut q).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_minmax(&q, p, &mut y).unwrap();
            let mut acc = vec![base; x.len()];
            dequantize_accumulate_minmax(&q, p, &mut acc).unwrap();
            for i in 0..x.len() {
                prop_assert_eq!(acc[i], base + y[i]);
                prop_assert!((x[i] - y[i]).abs() <= p.scale * 0.5 * 1.001 + 1e-3);
            }
        }
    }
}
