//! Int8 quantizers for the quantized all-reduce (INTELLECT-1 style).
//!
//! Three schemes, each with quantize, dequantize and dequantize-accumulate into fp32:
//! [`minmax`] (one affine code), [`blockwise`] (one affine code per block: the robust default on
//! heavy-tailed data) and [`intellect`] (INTELLECT-1's RMS grid with a codebook of bucket
//! means). [`packed`] puts any of them into one byte buffer for the wire and checks such a
//! buffer completely before anything decodes it; [`frame`] is the self-describing form of one
//! quantized tensor (a header with scheme, dtype and shape, then the packed buffer).
//!
//! The loops here are memory-bound: each one streams its input once, in parallel chunks, with
//! bodies simple enough for the compiler to vectorise.

pub mod blockwise;
pub mod frame;
pub mod intellect;
mod kernels;
pub mod minmax;
pub mod packed;

pub use blockwise::{dequantize_accumulate_blockwise, dequantize_blockwise, quantize_blockwise};
pub use frame::{frame_header, parse_frame, Frame};
pub use intellect::{dequantize_accumulate_intellect, dequantize_intellect, quantize_intellect};
pub use minmax::{
    dequantize_accumulate_minmax, dequantize_minmax, minmax_params, quantize_minmax, MinMax,
};
pub use packed::{
    all_finite, check_packed, check_params, dequantize_packed, is_poison, quantize_packed, Given,
    Scheme, POISON,
};

/// Elements per parallel work item: large enough to amortise scheduling, small enough to
/// balance load across threads and stay inside L2.
pub(crate) const CHUNK: usize = 1 << 16;
