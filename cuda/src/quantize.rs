//! Launchers for the int8 quantization kernels, the GPU twins of `ferrolm_core::comm`: min-max
//! (`kernels/quantize_minmax.cu`), block-wise (`kernels/quantize_blockwise.cu`) and
//! INTELLECT-1's code (`kernels/quantize_intellect.cu`). The block-wise and INTELLECT-1
//! launchers write and read ferrolm's packed wire format (float32 parameters, then one code
//! per value).
//!
//! All pointers are device addresses of buffers the caller allocated on `launch.device` with
//! the sizes documented per function; the caller also checks lengths and dtypes. Work is
//! queued on the caller's stream and nothing here synchronises.
//!
//! The decoders trust the parameters they read: parameters that came from outside (a peer, a
//! caller) must first pass `ferrolm_core::comm::check_params` on a host copy (the Python
//! wrapper does this), the same check the CPU decoders run, so a forged NaN or negative scale
//! is refused the same way on both paths.

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

/// Device addresses of one int8-quantized tensor: its float32 parameters and its `n` one-byte
/// codes. In ferrolm's packed wire format the parameters lead the buffer and the codes follow.
#[derive(Debug, Clone, Copy)]
pub struct Encoded {
    /// The float32 parameters: `[min, scale, ...]` (min-max), `[min, scale]` per block
    /// (block-wise) or the 256-float codebook (INTELLECT-1).
    pub params: u64,
    /// The one-byte codes, one per value.
    pub codes: u64,
}

/// Quantizing needs at least one value (its range or scale would be undefined).
fn require_values(n: u64) -> Result<()> {
    if n == 0 {
        return Err(Error::value("tensor", "non-empty", "an empty tensor"));
    }
    Ok(())
}

/// Quantizes `n` floats at `x` into `into`: the codes, and `[min, scale, 1/scale, non_finite]`
/// as the four parameter floats, using the `3 * blocks_for(n)` floats at `partial` as scratch.
pub fn quantize_minmax_f32(
    launch: Launch,
    x: u64,
    n: u64,
    into: Encoded,
    partial: u64,
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
        finalize_fn.launch(grid(1), &[&partial, &blocks, &into.params])?;
        quantize_fn.launch(grid(blocks), &[&x, &n, &into.params, &into.codes])
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

/// Writes `min + q * scale` for the `n` codes of `coded` into the floats at `out` (adding into
/// them when `accumulate`).
pub fn dequantize_minmax_f32(
    launch: Launch,
    coded: Encoded,
    n: u64,
    out: u64,
    accumulate: bool,
) -> Result<()> {
    // Two kernels rather than a flag: the minmax decoders predate the flag of the others.
    let name = if accumulate {
        "dequantize_accumulate_minmax_f32"
    } else {
        "dequantize_minmax_f32"
    };
    let args: [&dyn KernelArg; 4] = [&coded.codes, &n, &coded.params, &out];
    // SAFETY: (q, n, params, out) matches both kernels' signature; the caller owns the buffers.
    unsafe { decode(launch, &QUANTIZE_MINMAX, name, n, &args) }
}

/// The block size rule of the CPU twin (a multiple of 16 in `16..=2^24`), so both paths accept
/// exactly the same wire format.
fn check_block(block: u32) -> Result<()> {
    ferrolm_core::comm::blockwise::check_block(block as usize)
}

/// Quantizes `n` floats at `x` in blocks of `block` into `into` (`2 * ceil(n / block)`
/// parameter floats and `n` codes), and ORs 1 into the u32 at `bad` on NaN/inf.
pub fn quantize_blockwise_f32(
    launch: Launch,
    x: u64,
    n: u64,
    block: u32,
    into: Encoded,
    bad: u64,
) -> Result<()> {
    check_block(block)?;
    require_values(n)?;
    let blocks = n.div_ceil(u64::from(block)).min(MAX_QUANT_BLOCKS) as u32;
    let f = launch.kernel(&QUANTIZE_BLOCKWISE, "quantize_blockwise_f32")?;
    let args: [&dyn KernelArg; 6] = [&x, &n, &block, &into.params, &into.codes, &bad];
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe { f.launch(grid(blocks), &args) }
}

/// Decodes the `n` block-wise codes of `coded` into the floats at `out` (adding into them when
/// `accumulate`).
pub fn dequantize_blockwise_f32(
    launch: Launch,
    coded: Encoded,
    n: u64,
    block: u32,
    out: u64,
    accumulate: bool,
) -> Result<()> {
    check_block(block)?;
    let acc = i32::from(accumulate);
    let name = "dequantize_blockwise_f32";
    let args: [&dyn KernelArg; 6] = [&coded.codes, &n, &block, &coded.params, &out, &acc];
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe { decode(launch, &QUANTIZE_BLOCKWISE, name, n, &args) }
}

/// Bytes of scratch [`quantize_intellect_f32`] needs for `n` values: per-block partial sums
/// (2 doubles each), 256 double bucket sums, 256 u64 counts and 4 floats of stats.
pub fn intellect_scratch_bytes(n: u64) -> u64 {
    16 * u64::from(blocks_for(n)) + 256 * 8 + 256 * 8 + 16
}

/// Quantizes `n` floats at `x` with INTELLECT-1's code into `into` (the 256-float codebook and
/// `n` codes), using the zero-initialised `scratch` (see [`intellect_scratch_bytes`]); `stats`
/// (inside scratch, last 16 bytes) gets `[scale, 1/scale, non_finite]`.
pub fn quantize_intellect_f32(
    launch: Launch,
    x: u64,
    n: u64,
    into: Encoded,
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
        quant_fn.launch(grid(parts), &[&x, &n, &stats, &into.codes, &sums, &counts])?;
        book_fn.launch(grid(1), &[&sums, &counts, &stats, &into.params])
    }
}

/// Decodes the `n` codes of `coded` through its 256-float codebook into `out` (adding when
/// `accumulate`).
pub fn dequantize_intellect_f32(
    launch: Launch,
    coded: Encoded,
    n: u64,
    out: u64,
    accumulate: bool,
) -> Result<()> {
    let acc = i32::from(accumulate);
    let name = "dequantize_intellect_f32";
    let args: [&dyn KernelArg; 5] = [&coded.codes, &n, &coded.params, &out, &acc];
    // SAFETY: arguments match the kernel signature; the caller owns the buffers.
    unsafe { decode(launch, &QUANTIZE_INTELLECT, name, n, &args) }
}
