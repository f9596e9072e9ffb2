//! Launchers for the block-wise and INTELLECT-1 int8 kernels (`kernels/quantize_blockwise.cu`,
//! `kernels/quantize_intellect.cu`), writing and reading ferrolm's packed wire format
//! (float32 parameters, then one code per value).
//!
//! All pointers are device addresses of buffers the caller allocated on `launch.device` with
//! the sizes documented per function; the caller checks lengths and dtypes. Work is queued on
//! the caller's stream and nothing here synchronises.

use cudarc::driver::PushKernelArg;
use ferrolm_core::{Error, Result};

use crate::kernels::{QUANTIZE_BLOCKWISE, QUANTIZE_INTELLECT};
use crate::quantize::blocks_for;
use crate::runtime::{grid, launch_failed, Launch};

/// Most CUDA blocks the block-wise quantizer uses (each walks quantization blocks by stride).
pub const MAX_QUANT_BLOCKS: u64 = 65_535;

fn check_block(block: u32) -> Result<()> {
    if block < 16 || block % 16 != 0 {
        return Err(Error::value(
            "block_size",
            "a multiple of 16, at least 16",
            block,
        ));
    }
    Ok(())
}

/// Quantizes `n` floats at `x` in blocks of `block`: writes `2 * ceil(n / block)` floats of
/// parameters at `params`, `n` codes at `q`, and ORs 1 into the u32 at `bad` on NaN/inf.
pub fn quantize_blockwise_f32(
    launch: Launch,
    x: u64,
    n: u64,
    block: u32,
    params: u64,
    q: u64,
    bad: u64,
) -> Result<()> {
    check_block(block)?;
    if n == 0 {
        return Err(Error::value("tensor", "non-empty", "an empty tensor"));
    }
    let blocks = n.div_ceil(u64::from(block)).min(MAX_QUANT_BLOCKS) as u32;
    let (stream, f) = launch.function(&QUANTIZE_BLOCKWISE, "quantize_blockwise_f32")?;
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe {
        stream
            .launch_builder(&f)
            .arg(&x)
            .arg(&n)
            .arg(&block)
            .arg(&params)
            .arg(&q)
            .arg(&bad)
            .launch(grid(blocks))
            .map_err(launch_failed("quantize_blockwise_f32"))?;
    }
    Ok(())
}

/// Decodes `n` block-wise codes at `q` with the parameters at `params` into the floats at
/// `out` (adding into them when `accumulate`).
pub fn dequantize_blockwise_f32(
    launch: Launch,
    q: u64,
    n: u64,
    block: u32,
    params: u64,
    out: u64,
    accumulate: bool,
) -> Result<()> {
    check_block(block)?;
    if n == 0 {
        return Ok(());
    }
    let acc = i32::from(accumulate);
    let (stream, f) = launch.function(&QUANTIZE_BLOCKWISE, "dequantize_blockwise_f32")?;
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe {
        stream
            .launch_builder(&f)
            .arg(&q)
            .arg(&n)
            .arg(&block)
            .arg(&params)
            .arg(&out)
            .arg(&acc)
            .launch(grid(blocks_for(n)))
            .map_err(launch_failed("dequantize_blockwise_f32"))?;
    }
    Ok(())
}

/// Bytes of scratch [`quantize_intellect_f32`] needs for `n` values: per-block partial sums
/// (2 doubles each), 256 double bucket sums, 256 u64 counts and 4 floats of stats.
pub fn intellect_scratch_bytes(n: u64) -> u64 {
    16 * u64::from(blocks_for(n)) + 256 * 8 + 256 * 8 + 16
}

/// Quantizes `n` floats at `x` with INTELLECT-1's code: writes the 256-float codebook at
/// `codebook` and `n` codes at `q`, using the zero-initialised `scratch` (see
/// [`intellect_scratch_bytes`]); `stats` (inside scratch, last 16 bytes) gets
/// `[scale, 1/scale, non_finite]`.
pub fn quantize_intellect_f32(
    launch: Launch,
    x: u64,
    n: u64,
    codebook: u64,
    q: u64,
    scratch: u64,
) -> Result<()> {
    if n == 0 {
        return Err(Error::value("tensor", "non-empty", "an empty tensor"));
    }
    let parts = blocks_for(n);
    let partial = scratch;
    let sums = partial + 16 * u64::from(parts);
    let counts = sums + 256 * 8;
    let stats = counts + 256 * 8;
    let get = |name| launch.function(&QUANTIZE_INTELLECT, name);
    let (stream, partial_fn) = get("sumsq_partial_f64")?;
    let (_, scale_fn) = get("intellect_scale_f32")?;
    let (_, quant_fn) = get("quantize_intellect_f32")?;
    let (_, book_fn) = get("intellect_codebook_f32")?;
    // SAFETY: argument lists match the kernel signatures; the caller owns the buffers and
    // sized `scratch` with `intellect_scratch_bytes(n)`.
    unsafe {
        stream
            .launch_builder(&partial_fn)
            .arg(&x)
            .arg(&n)
            .arg(&partial)
            .launch(grid(parts))
            .map_err(launch_failed("sumsq_partial_f64"))?;
        stream
            .launch_builder(&scale_fn)
            .arg(&partial)
            .arg(&parts)
            .arg(&n)
            .arg(&stats)
            .launch(grid(1))
            .map_err(launch_failed("intellect_scale_f32"))?;
        stream
            .launch_builder(&quant_fn)
            .arg(&x)
            .arg(&n)
            .arg(&stats)
            .arg(&q)
            .arg(&sums)
            .arg(&counts)
            .launch(grid(parts))
            .map_err(launch_failed("quantize_intellect_f32"))?;
        stream
            .launch_builder(&book_fn)
            .arg(&sums)
            .arg(&counts)
            .arg(&stats)
            .arg(&codebook)
            .launch(grid(1))
            .map_err(launch_failed("intellect_codebook_f32"))?;
    }
    Ok(())
}

/// Decodes `n` codes at `q` through the 256-float `codebook` into `out` (adding when
/// `accumulate`).
pub fn dequantize_intellect_f32(
    launch: Launch,
    q: u64,
    n: u64,
    codebook: u64,
    out: u64,
    accumulate: bool,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let acc = i32::from(accumulate);
    let (stream, f) = launch.function(&QUANTIZE_INTELLECT, "dequantize_intellect_f32")?;
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe {
        stream
            .launch_builder(&f)
            .arg(&q)
            .arg(&n)
            .arg(&codebook)
            .arg(&out)
            .arg(&acc)
            .launch(grid(blocks_for(n)))
            .map_err(launch_failed("dequantize_intellect_f32"))?;
    }
    Ok(())
}
