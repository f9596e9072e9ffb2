//! Launchers for the int8 quantization kernels, the GPU twins of `ferrolm_core::comm`: min-max
//! (`kernels/quantize_minmax.cu`), block-wise (`kernels/quantize_blockwise.cu`) and
//! INTELLECT-1's code (`kernels/quantize_intellect.cu`). The block-wise and INTELLECT-1
//! launchers write and read ferrolm's packed wire format (float32 parameters, then one code
//! per value).
//!
//! All pointers are device addresses of buffers the caller allocated on `launch.device` with
//! the sizes documented per function; the caller also checks lengths and dtypes. Work is
//! queued on the caller's stream and nothing here synchronises.

use ferrolm_core::{Error, Result};

use crate::kernels::{KernelSource, QUANTIZE_BLOCKWISE, QUANTIZE_INTELLECT, QUANTIZE_MINMAX};
use crate::launch::{grid, KernelArg, Launch, BLOCK};

/// Upper bound on blocks for the grid-stride kernels and the partial reductions.
pub const MAX_BLOCKS: u32 = 1024;

/// Most CUDA blocks the block-wise quantizer uses (each walks quantization blocks by stride).
pub const MAX_QUANT_BLOCKS: u64 = 65_535;

/// Number of blocks for `n` elements, which is also the number of partial triples
/// `partial` must hold (`3 * blocks_for(n)` floats).
pub fn blocks_for(n: u64) -> u32 {
    n.div_ceil(u64::from(BLOCK)).clamp(1, u64::from(MAX_BLOCKS)) as u32
}

/// Quantizing needs at least one value (its range or scale would be undefined).
fn require_values(n: u64) -> Result<()> {
    if n == 0 {
        return Err(Error::value("tensor", "non-empty", "an empty tensor"));
    }
    Ok(())
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
    require_values(n)?;
    let blocks = blocks_for(n);
    let partial_fn = launch.kernel(&QUANTIZE_MINMAX, "minmax_partial_f32")?;
    let finalize_fn = launch.kernel(&QUANTIZE_MINMAX, "minmax_finalize_f32")?;
    let quantize_fn = launch.kernel(&QUANTIZE_MINMAX, "quantize_minmax_f32")?;
    // SAFETY: argument lists match the kernel signatures (pointers as u64 device addresses,
    // n as unsigned long long, parts as unsigned int); the caller guarantees the buffers.
    unsafe {
        partial_fn.launch(grid(blocks), &[&x, &n, &partial])?;
        finalize_fn.launch(grid(1), &[&partial, &blocks, &params])?;
        quantize_fn.launch(grid(blocks), &[&x, &n, &params, &q])
    }
}

/// Queues decoder `name` of `family` over `n` codes; decoding nothing is a no-op.
///
/// # Safety
///
/// As for [`crate::launch::Kernel::launch`]: `args` must match the kernel's parameters and
/// address live buffers of the sizes it uses.
unsafe fn decode(
    launch: Launch,
    family: &'static KernelSource,
    name: &'static str,
    n: u64,
    args: &[&dyn KernelArg],
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let f = launch.kernel(family, name)?;
    // SAFETY: this function's caller upholds the launch contract.
    unsafe { f.launch(grid(blocks_for(n)), args) }
}

/// Writes `min + q * scale` for `n` codes at `q` into the floats at `out`.
pub fn dequantize_minmax_f32(launch: Launch, q: u64, params: u64, out: u64, n: u64) -> Result<()> {
    let name = "dequantize_minmax_f32";
    // SAFETY: (q, n, params, out) matches the kernel signature; the caller owns the buffers.
    unsafe { decode(launch, &QUANTIZE_MINMAX, name, n, &[&q, &n, &params, &out]) }
}

/// Adds `min + q * scale` for `n` codes at `q` into the floats at `acc`.
pub fn dequantize_accumulate_minmax_f32(
    launch: Launch,
    q: u64,
    params: u64,
    acc: u64,
    n: u64,
) -> Result<()> {
    let name = "dequantize_accumulate_minmax_f32";
    // SAFETY: (q, n, params, acc) matches the kernel signature; the caller owns the buffers.
    unsafe { decode(launch, &QUANTIZE_MINMAX, name, n, &[&q, &n, &params, &acc]) }
}

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
    require_values(n)?;
    let blocks = n.div_ceil(u64::from(block)).min(MAX_QUANT_BLOCKS) as u32;
    let f = launch.kernel(&QUANTIZE_BLOCKWISE, "quantize_blockwise_f32")?;
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe { f.launch(grid(blocks), &[&x, &n, &block, &params, &q, &bad]) }
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
    let acc = i32::from(accumulate);
    let name = "dequantize_blockwise_f32";
    let args: [&dyn KernelArg; 6] = [&q, &n, &block, &params, &out, &acc];
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe { decode(launch, &QUANTIZE_BLOCKWISE, name, n, &args) }
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
    require_values(n)?;
    let parts = blocks_for(n);
    let partial = scratch;
    let sums = partial + 16 * u64::from(parts);
    let counts = sums + 256 * 8;
    let stats = counts + 256 * 8;
    let get = |name| launch.kernel(&QUANTIZE_INTELLECT, name);
    let partial_fn = get("sumsq_partial_f64")?;
    let scale_fn = get("intellect_scale_f32")?;
    let quant_fn = get("quantize_intellect_f32")?;
    let book_fn = get("intellect_codebook_f32")?;
    // SAFETY: argument lists match the kernel signatures; the caller owns the buffers and
    // sized `scratch` with `intellect_scratch_bytes(n)`.
    unsafe {
        partial_fn.launch(grid(parts), &[&x, &n, &partial])?;
        scale_fn.launch(grid(1), &[&partial, &parts, &n, &stats])?;
        quant_fn.launch(grid(parts), &[&x, &n, &stats, &q, &sums, &counts])?;
        book_fn.launch(grid(1), &[&sums, &counts, &stats, &codebook])
    }
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
    let acc = i32::from(accumulate);
    let name = "dequantize_intellect_f32";
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe {
        decode(
            launch,
            &QUANTIZE_INTELLECT,
            name,
            n,
            &[&q, &n, &codebook, &out, &acc],
        )
    }
}
