//! Launchers for the int8 min-max quantization kernels (`kernels/quantize_minmax.cu`).
//!
//! All pointers are device addresses of tensors the caller allocated on `launch.device`;
//! the caller also checks lengths and dtypes. Work is queued on the caller's stream and
//! nothing here synchronises.

use cudarc::driver::PushKernelArg;
use ferrolm_core::{Error, Result};

use crate::kernels::QUANTIZE_MINMAX;
pub use crate::runtime::BLOCK;
use crate::runtime::{grid, launch_failed, Launch};

/// Upper bound on blocks for the grid-stride kernels and the partial reduction.
pub const MAX_BLOCKS: u32 = 1024;

/// Number of blocks for `n` elements, which is also the number of partial triples
/// `partial` must hold (`3 * blocks_for(n)` floats).
pub fn blocks_for(n: u64) -> u32 {
    n.div_ceil(u64::from(BLOCK)).clamp(1, u64::from(MAX_BLOCKS)) as u32
}

/// Quantizes `n` floats at `x` into bytes at `q`; writes `[min, scale, 1/scale, non_finite]`
/// to the four floats at `params`, using the `3 * blocks_for(n)` floats at `partial` as scratch.
pub fn quantize_minmax_f32(
    launch: Launch,
    x: u64,
    q: u64,
    params: u64,
    partial: u64,
    n: u64,
) -> Result<()> {
    if n == 0 {
        return Err(Error::value("tensor", "non-empty", "an empty tensor"));
    }
    let blocks = blocks_for(n);
    let (stream, partial_fn) = launch.function(&QUANTIZE_MINMAX, "minmax_partial_f32")?;
    let (_, finalize_fn) = launch.function(&QUANTIZE_MINMAX, "minmax_finalize_f32")?;
    let (_, quantize_fn) = launch.function(&QUANTIZE_MINMAX, "quantize_minmax_f32")?;
    // SAFETY: argument lists match the kernel signatures (pointers as u64 device addresses,
    // n as unsigned long long, parts as unsigned int); the caller guarantees the buffers.
    unsafe {
        stream
            .launch_builder(&partial_fn)
            .arg(&x)
            .arg(&n)
            .arg(&partial)
            .launch(grid(blocks))
            .map_err(launch_failed("minmax_partial_f32"))?;
        stream
            .launch_builder(&finalize_fn)
            .arg(&partial)
            .arg(&blocks)
            .arg(&params)
            .launch(grid(1))
            .map_err(launch_failed("minmax_finalize_f32"))?;
        stream
            .launch_builder(&quantize_fn)
            .arg(&x)
            .arg(&n)
            .arg(&params)
            .arg(&q)
            .launch(grid(blocks))
            .map_err(launch_failed("quantize_minmax_f32"))?;
    }
    Ok(())
}

/// Writes `min + q * scale` for `n` codes at `q` into the floats at `out`.
pub fn dequantize_minmax_f32(launch: Launch, q: u64, params: u64, out: u64, n: u64) -> Result<()> {
    elementwise(launch, "dequantize_minmax_f32", q, params, out, n)
}

/// Adds `min + q * scale` for `n` codes at `q` into the floats at `acc`.
pub fn dequantize_accumulate_minmax_f32(
    launch: Launch,
    q: u64,
    params: u64,
    acc: u64,
    n: u64,
) -> Result<()> {
    elementwise(
        launch,
        "dequantize_accumulate_minmax_f32",
        q,
        params,
        acc,
        n,
    )
}

fn elementwise(
    launch: Launch,
    name: &'static str,
    q: u64,
    params: u64,
    out: u64,
    n: u64,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (stream, f) = launch.function(&QUANTIZE_MINMAX, name)?;
    // SAFETY: (q, n, params, out) matches the kernel signature; the caller owns the buffers.
    unsafe {
        stream
            .launch_builder(&f)
            .arg(&q)
            .arg(&n)
            .arg(&params)
            .arg(&out)
            .launch(grid(blocks_for(n)))
            .map_err(launch_failed(name))?;
    }
    Ok(())
}
