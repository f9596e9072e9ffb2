//! The self-describing form of one quantized tensor (`QuantizedTensor.to_bytes()` in Python):
//! a small header that says how to decode, then the packed buffer of [`super::packed`].
//!
//! | bytes        | field                                                    |
//! |--------------|----------------------------------------------------------|
//! | 0..4         | magic `FLQ1`                                             |
//! | 4            | scheme code (index in [`Scheme::NAMES`])                  |
//! | 5            | dtype code (index in [`DTYPES`]): the original dtype     |
//! | 6..10        | block size, u32 little-endian (used by `blockwise` only) |
//! | 10           | number of dimensions `d` (at most [`MAX_DIMS`])          |
//! | 11..11+8d    | the dimensions, i64 little-endian                        |
//! | then         | the packed buffer: parameters, then one code per value   |
//!
//! The bytes may come from anywhere, so [`parse_frame`] checks every field, computes the
//! element count with checked arithmetic and compares the packed length with the bytes
//! actually present before anyone allocates or decodes anything.

use super::packed::{check_packed, Scheme};
use crate::error::{Error, Result};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"FLQ1";

/// The original dtypes a frame can name, in the order of their codes.
pub const DTYPES: [&str; 4] = ["float32", "float16", "bfloat16", "float64"];

/// Most dimensions a frame may declare (torch's own limit is far lower in practice).
pub const MAX_DIMS: usize = 64;

/// Bytes of the fixed part of the header (before the dimensions).
const FIXED: usize = 11;

/// A checked frame header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The scheme the packed buffer uses.
    pub scheme: Scheme,
    /// The block size as written (meaningful for `blockwise`; kept as is for the others).
    pub block: u32,
    /// Index in [`DTYPES`] of the original dtype.
    pub dtype: u8,
    /// The original shape.
    pub shape: Vec<usize>,
    /// Number of values: the product of `shape`.
    pub numel: usize,
    /// Where the packed buffer starts in the frame.
    pub data_offset: usize,
}

fn field(name: &str, expected: impl Into<String>, got: impl std::fmt::Display) -> Error {
    Error::value(format!("buf {name}"), expected, got)
}

/// Builds the header of a frame for `shape`, with the scheme named `scheme` (its block size
/// `block`), the original dtype named `dtype` (one of [`DTYPES`]).
pub fn frame_header(scheme: &str, block: u64, dtype: &str, shape: &[u64]) -> Result<Vec<u8>> {
    let block = u32::try_from(block)
        .map_err(|_| Error::value("block_size", "below 2**32 in a serialised tensor", block))?;
    let scheme = Scheme::parse(scheme, block as usize)?;
    let dtype = DTYPES
        .iter()
        .position(|&d| d == dtype)
        .ok_or_else(|| Error::value("dtype", format!("one of {}", DTYPES.join(", ")), dtype))?;
    if shape.len() > MAX_DIMS {
        return Err(Error::value(
            "shape",
            format!("at most {MAX_DIMS} dimensions"),
            shape.len(),
        ));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(FIXED + 8 * shape.len())
        .map_err(|_| Error::value("shape", "a header that fits in memory", shape.len()))?;
    out.extend_from_slice(&MAGIC);
    out.push(scheme.code());
    out.push(dtype as u8);
    out.extend_from_slice(&block.to_le_bytes());
    out.push(shape.len() as u8);
    for &d in shape {
        let d = i64::try_from(d).map_err(|_| Error::value("shape", "dimensions below 2**63", d))?;
        out.extend_from_slice(&d.to_le_bytes());
    }
    Ok(out)
}

/// Parses and checks a whole frame: every header field, the dimensions (non-negative, their
/// product computed with checked arithmetic, at least one value), the packed length against
/// the bytes present, and the packed parameters (finite, see [`check_packed`]). Each error
/// names the field.
pub fn parse_frame(buf: &[u8]) -> Result<Frame> {
    if buf.len() < FIXED {
        return Err(field(
            "header",
            format!("at least {FIXED} bytes"),
            format!("{} bytes", buf.len()),
        ));
    }
    if buf[..4] != MAGIC {
        return Err(field(
            "magic",
            format!(
                "{:?} (the start of a ferrolm quantized-tensor header)",
                "FLQ1"
            ),
            format!("{:?}", String::from_utf8_lossy(&buf[..4])),
        ));
    }
    let code = buf[4];
    let names = Scheme::NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{i} ({n})"))
        .collect::<Vec<_>>()
        .join(", ");
    let name = *Scheme::NAMES
        .get(usize::from(code))
        .ok_or_else(|| field("scheme code", format!("one of {names}"), code))?;
    let dtype = buf[5];
    if usize::from(dtype) >= DTYPES.len() {
        let known: Vec<String> = DTYPES
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{i} ({d})"))
            .collect();
        return Err(field(
            "dtype code",
            format!("one of {}", known.join(", ")),
            dtype,
        ));
    }
    let block = u32::from_le_bytes([buf[6], buf[7], buf[8], buf[9]]);
    let scheme = Scheme::parse(name, block as usize).map_err(|e| match e {
        Error::InvalidValue { expected, got, .. } => field("block size", expected, got),
        other => other,
    })?;
    let ndim = usize::from(buf[10]);
    if ndim > MAX_DIMS {
        return Err(field(
            "number of dimensions",
            format!("at most {MAX_DIMS}"),
            ndim,
        ));
    }
    let data_offset = FIXED + 8 * ndim;
    if buf.len() < data_offset {
        return Err(field(
            "shape",
            format!("{ndim} dimensions of 8 bytes after the {FIXED}-byte header"),
            format!("{} bytes in all", buf.len()),
        ));
    }
    let mut shape = Vec::new();
    shape
        .try_reserve_exact(ndim)
        .map_err(|_| field("shape", "a shape that fits in memory", ndim))?;
    let mut numel: usize = 1;
    for (i, b) in buf[FIXED..data_offset].chunks_exact(8).enumerate() {
        let d = i64::from_le_bytes(b.try_into().expect("chunks of 8 bytes"));
        let d = usize::try_from(d).map_err(|_| field(&format!("dimension {i}"), "≥ 0", d))?;
        numel = numel.checked_mul(d).ok_or_else(|| {
            field(
                "shape",
                "dimensions whose product fits in 64 bits",
                format!("dimension {i} = {d} after a product of {numel}"),
            )
        })?;
        shape.push(d);
    }
    if numel == 0 {
        return Err(field(
            "shape",
            "at least one value (quantized tensors are never empty)",
            format!("{shape:?}"),
        ));
    }
    let data = &buf[data_offset..];
    let expected = scheme.try_packed_len(numel).map_err(|_| {
        field(
            "shape",
            "a value count whose packed form fits in memory",
            format!("{shape:?}"),
        )
    })?;
    if data.len() != expected {
        return Err(field(
            "data",
            format!(
                "{expected} data bytes for shape {shape:?} under scheme {}",
                scheme.name()
            ),
            format!("{} bytes", data.len()),
        ));
    }
    check_packed(scheme, data, numel)?;
    Ok(Frame {
        scheme,
        block,
        dtype,
        shape,
        numel,
        data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::{dequantize_packed, quantize_packed};
    use proptest::prelude::*;

    fn frame(scheme: &str, shape: &[u64]) -> Vec<u8> {
        let n: u64 = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let s = Scheme::parse(scheme, 16).unwrap();
        let mut out = frame_header(scheme, 16, "float16", shape).unwrap();
        let head = out.len();
        out.resize(head + s.packed_len(x.len()), 0);
        quantize_packed(s, &x, &mut out[head..]).unwrap();
        out
    }

    fn err(buf: &[u8]) -> String {
        parse_frame(buf).unwrap_err().to_string()
    }

    #[test]
    fn round_trips_every_scheme() {
        for scheme in Scheme::NAMES {
            let buf = frame(scheme, &[3, 0x21]);
            let f = parse_frame(&buf).unwrap();
            assert_eq!(f.scheme.name(), scheme);
            assert_eq!((f.shape.clone(), f.numel, f.dtype), (vec![3, 33], 99, 1));
            assert_eq!(f.data_offset, 11 + 16);
        }
    }

    #[test]
    fn every_field_is_checked_and_named() {
        let good = frame("blockwise", &[40]);
        let mut b = good.clone();
        b[0] = b'X';
        assert!(err(&b).starts_with("`buf magic`"), "{}", err(&b));
        let mut b = good.clone();
        b[4] = 7;
        assert!(err(&b).starts_with("`buf scheme code`"), "{}", err(&b));
        let mut b = good.clone();
        b[5] = 9;
        assert!(err(&b).starts_with("`buf dtype code`"), "{}", err(&b));
        let mut b = good.clone();
        b[6] = 17;
        assert!(err(&b).starts_with("`buf block size`"), "{}", err(&b));
        let mut b = good.clone();
        b[10] = 200;
        assert!(err(&b).starts_with("`buf number of dimensions`"));
        let mut b = good.clone();
        b[11..19].copy_from_slice(&(-5i64).to_le_bytes());
        assert!(err(&b).starts_with("`buf dimension 0`"), "{}", err(&b));
        let mut b = good.clone();
        b[11..19].copy_from_slice(&(1i64 << 40).to_le_bytes());
        assert!(err(&b).starts_with("`buf data`"), "{}", err(&b));
        assert!(err(&good[..5]).starts_with("`buf header`"));
        assert!(err(&good[..15]).starts_with("`buf shape`"));
        assert!(err(&good[..good.len() - 1]).starts_with("`buf data`"));
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        // Two dimensions of 2^40: the product overflows no u64 check but is far beyond the
        // bytes present; three of them overflow 64 bits.
        let mut b = frame_header("minmax", 256, "float32", &[1 << 40, 1 << 20]).unwrap();
        b.extend_from_slice(&[0u8; 64]);
        assert!(err(&b).starts_with("`buf data`"), "{}", err(&b));
        let b = frame_header("minmax", 256, "float32", &[1 << 40, 1 << 40, 1 << 40]).unwrap();
        assert!(err(&b).starts_with("`buf shape`"), "{}", err(&b));
        let b = frame_header("minmax", 256, "float32", &[0, 4]).unwrap();
        assert!(err(&b).contains("at least one value"));
    }

    #[test]
    fn a_non_finite_parameter_anywhere_is_refused() {
        for (scheme, param) in [("minmax", 1), ("blockwise", 5), ("intellect", 200)] {
            let mut b = frame(scheme, &[64]);
            let at = 11 + 8 + 4 * param;
            b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
            let e = err(&b);
            assert!(e.starts_with("`packed"), "{scheme}: {e}");
        }
    }

    /// Decodes an accepted frame and checks that no value is NaN or infinite.
    fn decodes_finite(buf: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok(f) = parse_frame(buf) {
            let mut out = vec![0f32; f.numel];
            dequantize_packed(f.scheme, &buf[f.data_offset..], &mut out, false).unwrap();
            prop_assert!(
                out.iter().all(|v| v.is_finite()),
                "accepted but decodes non-finite"
            );
        }
        Ok(())
    }

    proptest! {
        // The wire format fuzzed: random bytes and random overwrites of valid frames are either
        // refused or decode to finite values; nothing panics and nothing allocates from a count
        // that the bytes present do not back (an accepted frame holds at least `numel` bytes).
        #[test]
        fn random_bytes_are_refused_or_decode_finite(
            buf in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            decodes_finite(&buf)?;
        }

        #[test]
        fn mutated_frames_are_refused_or_decode_finite(
            scheme in 0usize..3,
            rows in 1u64..6,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut buf = frame(Scheme::NAMES[scheme], &[rows, 40]);
            for (at, byte) in edits {
                let at = at % buf.len();
                buf[at] = byte;
            }
            decodes_finite(&buf)?;
        }

        #[test]
        fn random_packed_pieces_are_refused_or_decode_finite(
            scheme in 0usize..3,
            n in 1usize..300,
            seed in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let s = Scheme::parse(Scheme::NAMES[scheme], 16).unwrap();
            let packed: Vec<u8> = (0..s.packed_len(n)).map(|i| seed[i % seed.len()] ^ i as u8).collect();
            let mut out = vec![1f32; n];
            match dequantize_packed(s, &packed, &mut out, true) {
                Ok(()) => prop_assert!(out.iter().all(|v| v.is_finite())),
                Err(_) => prop_assert!(out.iter().all(|&v| v == 1.0), "untouched on error"),
            }
        }
    }
}
