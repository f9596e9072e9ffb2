//! Int8 quantizers for the quantized all-reduce (INTELLECT-1 style).
//!
//! The loops here are memory-bound: each one streams its input once, in parallel chunks, with
//! bodies simple enough for the compiler to vectorise.

pub mod minmax;

pub use minmax::{
    dequantize_accumulate_minmax, dequantize_minmax, minmax_params, quantize_minmax, MinMax,
};

/// Elements per parallel work item: large enough to amortise scheduling, small enough to
/// balance load across threads and stay inside L2.
pub(crate) const CHUNK: usize = 1 << 16;
