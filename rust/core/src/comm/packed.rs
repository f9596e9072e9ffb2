//! One wire format for every scheme: a single byte buffer, the float32 parameters first
//! (little-endian) and then one code per value, so a quantized tensor travels as one message.
//!
//! | scheme      | parameters (float32)                        | then        |
//! |-------------|---------------------------------------------|-------------|
//! | `MinMax`    | `min, scale`                                | `n` codes   |
//! | `Blockwise` | `min_b, scale_b` for each of `ceil(n / block)` blocks | `n` codes |
//! | `Intellect` | the 256-entry codebook                      | `n` codes   |

use rayon::prelude::*;

use super::{blockwise, intellect, minmax, CHUNK};
use crate::error::{check_len, Error, Result};

/// An int8 quantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// One affine code for the whole buffer.
    MinMax,
    /// One affine code per block of `block` values.
    Blockwise {
        /// Values per block.
        block: usize,
    },
    /// INTELLECT-1's RMS-scaled grid with a codebook of bucket means.
    Intellect,
}

/// An argument as the caller gave it: its value, or how it prints when it is not of the
/// expected kind (a scheme name that is not a string, a block size that is not a non-negative
/// integer), so that the error can show it.
pub type Given<'a, T> = std::result::Result<T, &'a str>;

impl Scheme {
    /// Every scheme's name, in the order of the wire code: `NAMES[s.code()] == s.name()`.
    pub const NAMES: [&'static str; 3] = ["minmax", "blockwise", "intellect"];

    /// Parses `"minmax"`, `"blockwise"` (with `block`) or `"intellect"`.
    pub fn parse(name: &str, block: usize) -> Result<Self> {
        Self::select(Ok(name), Ok(block))
    }

    /// The one place a scheme is validated and chosen, for the CPU and the GPU paths alike:
    /// `name` must be one of [`Scheme::NAMES`], and `block` is checked only for `"blockwise"`
    /// (the other schemes ignore it, whatever it is).
    pub fn select(name: Given<'_, &str>, block: Given<'_, usize>) -> Result<Self> {
        let expected = "one of minmax, blockwise, intellect";
        match name {
            Ok("minmax") => Ok(Scheme::MinMax),
            Ok("blockwise") => {
                let block = block.map_err(blockwise::bad_block)?;
                blockwise::check_block(block)?;
                Ok(Scheme::Blockwise { block })
            }
            Ok("intellect") => Ok(Scheme::Intellect),
            Ok(other) => Err(Error::value("scheme", expected, format!("{other:?}"))),
            Err(shown) => Err(Error::value("scheme", expected, shown)),
        }
    }

    /// The scheme's name, as [`Scheme::parse`] takes it.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.code() as usize]
    }

    /// The scheme's code in wire headers: its index in [`Scheme::NAMES`].
    pub fn code(&self) -> u8 {
        match self {
            Scheme::MinMax => 0,
            Scheme::Blockwise { .. } => 1,
            Scheme::Intellect => 2,
        }
    }

    /// Number of float32 parameters in front of the codes for `n` values.
    pub fn num_params(&self, n: usize) -> usize {
        match self {
            Scheme::MinMax => 2,
            Scheme::Blockwise { block } => blockwise::num_blocks(n, *block).saturating_mul(2),
            Scheme::Intellect => intellect::LEVELS,
        }
    }

    /// Total bytes of the packed form of `n` values (saturating: a count so large that its
    /// packed form cannot exist gives `usize::MAX`, which no real buffer matches).
    pub fn packed_len(&self, n: usize) -> usize {
        self.try_packed_len(n).unwrap_or(usize::MAX)
    }

    /// Total bytes of the packed form of `n` values, or an error naming `n` when that size
    /// does not fit in memory at all.
    pub fn try_packed_len(&self, n: usize) -> Result<usize> {
        self.num_params(n)
            .checked_mul(4)
            .and_then(|head| head.checked_add(n))
            .filter(|&len| len <= isize::MAX as usize)
            .ok_or_else(|| {
                Error::value(
                    "n",
                    format!("a count whose packed {} form fits in memory", self.name()),
                    n,
                )
            })
    }
}

/// The byte every position of a "poisoned" piece holds: a rank that cannot quantize a piece (a
/// NaN or infinite value, or a sum that overflows float32) sends this instead, so that every
/// rank learns that the call failed. Its first parameter reads as NaN, which
/// [`check_params`] never accepts, so a poisoned piece is never decoded by mistake.
pub const POISON: u8 = 0xFF;

/// Whether `packed` is a poisoned piece (see [`POISON`]): its first parameter's bytes are all
/// [`POISON`].
pub fn is_poison(packed: &[u8]) -> bool {
    packed.len() >= 4 && packed[..4].iter().all(|&b| b == POISON)
}

/// Checks the float32 parameters `head` of a packed piece of `n` values (the bytes in front of
/// the codes) before anything decodes them: the length must be the scheme's, and every value
/// must be one that decodes to finite values (min-max and block-wise: finite `min`, finite
/// non-negative `scale`, finite `min + 255 * scale`; INTELLECT-1: every codebook entry finite).
/// The bytes come from a peer or a caller, so nothing here trusts them.
pub fn check_params(scheme: Scheme, head: &[u8], n: usize) -> Result<()> {
    let expected = 4 * scheme.num_params(n);
    if head.len() != expected {
        return Err(Error::value(
            "packed",
            format!("{expected} parameter bytes for {n} values"),
            format!("{} bytes", head.len()),
        ));
    }
    if is_poison(head) {
        return Err(Error::value(
            "packed",
            "a quantized piece",
            "a poisoned piece (a rank could not quantize NaN, infinite or overflowing values)",
        ));
    }
    let params = read_params(head);
    match scheme {
        Scheme::MinMax => minmax_of(&params).check("packed min, scale"),
        Scheme::Blockwise { .. } => blockwise::check_params(&params).map_err(in_packed),
        Scheme::Intellect => intellect::check_entries(&params).map_err(in_packed),
    }
}

/// Puts a parameter error in terms of the packed buffer it came from.
fn in_packed(e: Error) -> Error {
    match e {
        Error::InvalidValue { arg, expected, got } => Error::InvalidValue {
            arg: format!("packed {arg}"),
            expected,
            got,
        },
        other => other,
    }
}

/// Checks a whole packed piece of `n` values: its total length against the scheme's (with
/// checked arithmetic) and its parameters with [`check_params`]. [`dequantize_packed`] runs
/// this first; the GPU path runs it on a host copy of the parameters.
pub fn check_packed(scheme: Scheme, packed: &[u8], n: usize) -> Result<()> {
    let len = scheme.try_packed_len(n)?;
    if packed.len() != len {
        return Err(Error::value(
            "packed",
            format!("{len} bytes for {n} values under scheme {}", scheme.name()),
            format!("{} bytes", packed.len()),
        ));
    }
    check_params(scheme, &packed[..len - n], n)
}

fn write_params(params: &[f32], out: &mut [u8]) {
    for (dst, v) in out.chunks_exact_mut(4).zip(params) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn read_params(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Quantizes `x` into the packed buffer `out` (`scheme.packed_len(x.len())` bytes).
pub fn quantize_packed(scheme: Scheme, x: &[f32], out: &mut [u8]) -> Result<()> {
    check_len("out", out.len(), scheme.packed_len(x.len()))?;
    let (head, codes) = out.split_at_mut(4 * scheme.num_params(x.len()));
    let params = match scheme {
        Scheme::MinMax => {
            let p = minmax::quantize_minmax(x, codes)?;
            vec![p.min, p.scale]
        }
        Scheme::Blockwise { block } => {
            let mut p = vec![0f32; scheme.num_params(x.len())];
            blockwise::quantize_blockwise(x, block, codes, &mut p)?;
            p
        }
        Scheme::Intellect => {
            let mut p = vec![0f32; intellect::LEVELS];
            intellect::quantize_intellect(x, codes, &mut p)?;
            p
        }
    };
    write_params(&params, head);
    Ok(())
}

/// Decodes a packed buffer into `out`, overwriting it or (with `accumulate`) adding into it.
///
/// The buffer is checked completely first ([`check_packed`]): a forged or poisoned piece is an
/// error and `out` is left untouched.
pub fn dequantize_packed(
    scheme: Scheme,
    packed: &[u8],
    out: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let n = out.len();
    check_packed(scheme, packed, n)?;
    let (head, codes) = packed.split_at(4 * scheme.num_params(n));
    let params = read_params(head);
    match (scheme, accumulate) {
        (Scheme::MinMax, false) => minmax::dequantize_minmax(codes, minmax_of(&params), out),
        (Scheme::MinMax, true) => {
            minmax::dequantize_accumulate_minmax(codes, minmax_of(&params), out)
        }
        (Scheme::Blockwise { block }, false) => {
            blockwise::dequantize_blockwise(codes, block, &params, out)
        }
        (Scheme::Blockwise { block }, true) => {
            blockwise::dequantize_accumulate_blockwise(codes, block, &params, out)
        }
        (Scheme::Intellect, false) => intellect::dequantize_intellect(codes, &params, out),
        (Scheme::Intellect, true) => {
            intellect::dequantize_accumulate_intellect(codes, &params, out)
        }
    }
}

fn minmax_of(params: &[f32]) -> minmax::MinMax {
    minmax::MinMax {
        min: params[0],
        scale: params[1],
    }
}

/// Whether every value of `x` is finite (one parallel, vectorised pass).
pub fn all_finite(x: &[f32]) -> bool {
    const LANES: usize = 16;
    x.par_chunks(CHUNK).all(|c| {
        // v * 0 is 0 for finite v and NaN for NaN and +-inf; NaN survives the sums. Independent
        // lanes of plain multiply-adds vectorise.
        let mut acc = [0f32; LANES];
        let mut blocks = c.chunks_exact(LANES);
        for b in &mut blocks {
            for i in 0..LANES {
                acc[i] += b[i] * 0.0;
            }
        }
        let tail: f32 = blocks.remainder().iter().map(|&v| v * 0.0).sum();
        acc.iter().sum::<f32>() + tail == 0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_round_trips_through_one_buffer() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 31 % 977) as f32 - 488.0) * 0.01)
            .collect();
        for scheme in [
            Scheme::MinMax,
            Scheme::Blockwise { block: 256 },
            Scheme::Intellect,
        ] {
            let mut buf = vec![0u8; scheme.packed_len(x.len())];
            quantize_packed(scheme, &x, &mut buf).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_packed(scheme, &buf, &mut y, false).unwrap();
            let mut acc = vec![1.0f32; x.len()];
            dequantize_packed(scheme, &buf, &mut acc, true).unwrap();
            for i in 0..x.len() {
                assert!((x[i] - y[i]).abs() < 0.1, "{scheme:?}");
                assert_eq!(acc[i], 1.0 + y[i]);
            }
            assert!(dequantize_packed(scheme, &buf[1..], &mut y, false).is_err());
        }
    }

    #[test]
    fn parse_and_sizes() {
        assert_eq!(Scheme::parse("minmax", 0).unwrap().packed_len(10), 18);
        assert_eq!(
            Scheme::parse("blockwise", 16).unwrap().packed_len(33),
            33 + 4 * 6
        );
        assert_eq!(Scheme::parse("intellect", 0).unwrap().packed_len(1), 1025);
        assert!(Scheme::parse("blockwise", 10).is_err());
        assert!(Scheme::parse("int4", 16).is_err());
    }

    #[test]
    fn names_and_codes_agree() {
        for (code, name) in Scheme::NAMES.iter().enumerate() {
            let s = Scheme::parse(name, 64).unwrap();
            assert_eq!((s.code() as usize, s.name()), (code, *name));
        }
        assert_eq!(
            Scheme::parse("blockwise", 64).unwrap(),
            Scheme::Blockwise { block: 64 }
        );
    }

    #[test]
    fn select_shows_arguments_of_the_wrong_kind() {
        // A block size that is not an integer only matters to the blockwise scheme.
        assert_eq!(Scheme::select(Ok("minmax"), Err("2.0")), Ok(Scheme::MinMax));
        let e = Scheme::select(Ok("blockwise"), Err("2.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`block_size` must be a multiple of 16 between 16 and 16777216, got 2.0"
        );
        let e = Scheme::select(Err("None"), Ok(256)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`scheme` must be one of minmax, blockwise, intellect, got None"
        );
        let e = Scheme::parse("int4", 256).unwrap_err().to_string();
        assert!(e.ends_with("got \"int4\""), "{e}");
    }

    #[test]
    fn forged_parameters_are_refused_before_decoding() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).cos()).collect();
        for scheme in [
            Scheme::MinMax,
            Scheme::Blockwise { block: 16 },
            Scheme::Intellect,
        ] {
            let mut good = vec![0u8; scheme.packed_len(x.len())];
            quantize_packed(scheme, &x, &mut good).unwrap();
            let head = 4 * scheme.num_params(x.len());
            // Every parameter position, poisoned with NaN, +inf or a negative scale.
            for p in 0..head / 4 {
                for bad in [f32::NAN, f32::INFINITY, -1.0, 3e38] {
                    let mut b = good.clone();
                    b[4 * p..4 * p + 4].copy_from_slice(&bad.to_le_bytes());
                    let mut out = vec![7.0f32; x.len()];
                    let r = dequantize_packed(scheme, &b, &mut out, true);
                    if bad == -1.0 && (scheme == Scheme::Intellect || p % 2 == 0) {
                        // A negative min or codebook entry is a legitimate value.
                        assert!(r.is_ok(), "{scheme:?} {p}");
                        continue;
                    }
                    if bad == 3e38 && (scheme == Scheme::Intellect || p % 2 == 0) {
                        assert!(r.is_ok(), "{scheme:?} {p}");
                        continue;
                    }
                    assert!(r.is_err(), "{scheme:?} param {p} = {bad}");
                    assert!(out.iter().all(|&v| v == 7.0), "out untouched");
                }
            }
            let poison = vec![POISON; good.len()];
            assert!(is_poison(&poison) && !is_poison(&good));
            let e = check_packed(scheme, &poison, x.len()).unwrap_err();
            assert!(e.to_string().contains("poisoned"), "{e}");
        }
    }

    #[test]
    fn lengths_are_checked_arithmetic() {
        for scheme in [
            Scheme::MinMax,
            Scheme::Blockwise { block: 16 },
            Scheme::Intellect,
        ] {
            assert!(scheme.try_packed_len(usize::MAX).is_err());
            assert_eq!(scheme.packed_len(usize::MAX), usize::MAX);
            assert!(check_packed(scheme, &[0u8; 64], usize::MAX - 3).is_err());
        }
    }

    #[test]
    fn finiteness() {
        assert!(all_finite(&[1.0, -3.0, 0.0]));
        assert!(!all_finite(&[1.0, f32::NAN]));
        assert!(!all_finite(&[f32::NEG_INFINITY]));
        let mut big = vec![0.5f32; CHUNK * 2 + 3];
        assert!(all_finite(&big));
        big[CHUNK + 1] = f32::INFINITY;
        assert!(!all_finite(&big));
    }
}
