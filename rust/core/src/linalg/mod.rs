//! Dense `Linear` layers for a few rows of input: `out = x · wᵀ + bias`.
//!
//! The shape this serves is a transformer's forward over a handful of tokens (one decoding
//! step, or a draft tree of 4-16 tokens being verified): `x` has `m` rows, `m` small, and the
//! weight matrix is large. That product is bound by reading the weights from memory, not by
//! arithmetic, so it should cost about the same for 1 row and for 16. BLAS libraries tuned for
//! large products do not behave that way (MKL took 3x longer for 4 rows than for 1 on the
//! AMD EPYC the project measures on). Here every weight row is read from RAM once, by one
//! thread, and used for every row of `x` while it sits in cache.
//!
//! Layout: `w` is `[n, k]` row-major, which is `torch.nn.Linear.weight` (`[out_features,
//! in_features]`) as it is stored, so the weights are never copied or transposed. Weights are
//! float32 ([`linear_f32`]), bfloat16 given as their bit patterns ([`linear_bf16`]), or int8
//! with one float32 scale per output feature ([`linear_i8`], made by [`quantize_rows_i8`]);
//! `x`, `bias` and `out` are float32 and sums are accumulated in float32.
//!
//! Work split: the `n` output features are cut into contiguous ranges run on the current rayon
//! pool (the bindings choose its size); each range owns the same columns of every output row.
//! Inside a range, a tile of a few weight rows meets up to four rows of `x` at a time in FMA
//! accumulators (`avx2.rs`, chosen at run time when the CPU has AVX2 and FMA) or in plain
//! 8-lane arrays that the compiler vectorises for the baseline target (`portable.rs`). Both
//! paths sum each output in 8 interleaved partial sums over `k`, so results differ from
//! another library's only by summation order.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod avx2;
mod portable;
#[cfg(test)]
mod tests;

/// A weight element type: float32, or bfloat16 stored as its 16 bits.
pub(crate) trait Weight: Copy + Send + Sync + 'static {
    /// The value as float32 (exact for both types).
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bfloat16 is the upper half of a float32: widening is a shift, with no rounding.
        f32::from_bits(u32::from(self) << 16)
    }
}

impl Weight for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // Exact: every int8 is a float32. The row's scale is applied to the finished sum.
        f32::from(self)
    }
}

/// Which implementation runs the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// AVX2+FMA when the CPU has them, else portable.
    Auto,
    /// The portable loops, whatever the CPU (for tests of the fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Portable,
}

/// `out[i, j] = sum_t x[i, t] * w[j, t] + bias[j]` for float32 weights.
///
/// `x` is `[m, k]`, `w` is `[n, k]` (torch's `Linear.weight` layout), `bias` is `[n]` or
/// absent, `out` is `[m, n]`, all row-major; every element of `out` is written. Runs on the
/// current rayon pool.
///
/// # Errors
/// [`Error::InvalidValue`] naming the argument when a slice length disagrees with the sizes or
/// a size product overflows. Nothing is written to `out` then.
pub fn linear_f32(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    linear_with(Path::Auto, x, m, k, w, n, bias, out)
}

/// [`linear_f32`] for bfloat16 weights given as their bit patterns (`torch.bfloat16` viewed
/// as 16-bit integers). Each weight is widened to float32 exactly; `x`, `bias`, `out` and the
/// sums are float32.
///
/// # Errors
/// As [`linear_f32`].
pub fn linear_bf16(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u16],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    linear_with(Path::Auto, x, m, k, w, n, bias, out)
}

/// [`linear_f32`] for int8 weights with one float32 scale per output feature (row of `w`):
/// `out[i, j] = scale[j] * sum_t x[i, t] * w[j, t] + bias[j]`, the sum over the integer
/// weights accumulated in float32. Reads a quarter of float32's bytes.
///
/// # Errors
/// As [`linear_f32`], and when `scale` does not have `n` entries.
#[allow(clippy::too_many_arguments)]
pub fn linear_i8(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[i8],
    scale: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    check_features("scale", scale.len(), n)?;
    linear_scaled(Path::Auto, x, m, k, w, Some(scale), n, bias, out)
}

/// Symmetric per-row int8 quantization of float32 weights `w` (`[n, k]`, row-major) for
/// [`linear_i8`]: `scale[j] = max_t |w[j, t]| / 127` and `q[j, t] = round(w[j, t] / scale[j])`
/// (ties away from zero) in `-127..=127`; an all-zero row gets scale 0 and zero codes.
///
/// # Errors
/// [`Error::InvalidValue`] naming `w` (and the first row) when a weight is NaN or infinite,
/// or naming the argument whose length disagrees with `n x k`; nothing is written then.
pub fn quantize_rows_i8(
    w: &[f32],
    n: usize,
    k: usize,
    q: &mut [i8],
    scale: &mut [f32],
) -> Result<()> {
    let len = product("w", "n x k", n, k)?;
    for (arg, got) in [("w", w.len()), ("q", q.len())] {
        if got != len {
            return Err(Error::value(
                arg,
                format!("of length {len} ([{n}, {k}])"),
                format!("length {got}"),
            ));
        }
    }
    check_features("scale", scale.len(), n)?;
    if k == 0 {
        scale.fill(0.0);
        return Ok(());
    }
    if let Some(bad) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::value(
            "w",
            "finite weights",
            format!("{} at row {}, column {}", w[bad], bad / k, bad % k),
        ));
    }
    for ((row, codes), s) in w
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k))
        .zip(scale.iter_mut())
    {
        let max = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        if max == 0.0 {
            *s = 0.0;
            codes.fill(0);
            continue;
        }
        *s = max / 127.0;
        let inv = 127.0 / max;
        for (c, &v) in codes.iter_mut().zip(row) {
            *c = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
    Ok(())
}

/// `a * b`, or an [`Error::InvalidValue`] naming `arg` when it overflows.
fn product(arg: &str, what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| {
        Error::value(
            arg,
            format!("of a size that fits in memory ({what})"),
            format!("{a} x {b} elements, which overflows"),
        )
    })
}

/// An [`Error::InvalidValue`] naming `arg` unless it has one entry per output feature.
fn check_features(arg: &str, len: usize, n: usize) -> Result<()> {
    if len != n {
        return Err(Error::value(
            arg,
            format!("of length {n} (out_features)"),
            format!("length {len}"),
        ));
    }
    Ok(())
}

fn check_shapes<W>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
    out: &[f32],
) -> Result<()> {
    let shape = |len: usize, rows: usize, cols: usize| {
        (
            format!("of length {} ([{rows}, {cols}])", rows.saturating_mul(cols)),
            format!("length {len}"),
        )
    };
    let x_len = product("x", "m x k", m, k)?;
    let w_len = product("w", "n x k", n, k)?;
    let out_len = product("out", "m x n", m, n)?;
    if x.len() != x_len {
        let (e, g) = shape(x.len(), m, k);
        return Err(Error::value("x", e, g));
    }
    if w.len() != w_len {
        let (e, g) = shape(w.len(), n, k);
        return Err(Error::value("w", e, g));
    }
    if let Some(b) = bias {
        check_features("bias", b.len(), n)?;
    }
    if out.len() != out_len {
        let (e, g) = shape(out.len(), m, n);
        return Err(Error::value("out", e, g));
    }
    Ok(())
}

/// What one range of output features needs: shared, read-only inputs and the output base.
pub(crate) struct Job<'a, W> {
    pub(crate) x: &'a [f32],
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) w: &'a [W],
    pub(crate) n: usize,
    pub(crate) bias: Option<&'a [f32]>,
    /// Per output feature, the factor of the finished sum (int8 weights), else None.
    pub(crate) scale: Option<&'a [f32]>,
    /// `x` in chunks (see [`pack`]) when `m` > [`PACK_ROWS`], else empty (read by `avx2.rs`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) packed: &'a [f32],
    out: *mut f32,
}

/// Columns of `x` per chunk of the packed copy, and of the AVX2 tiles' walk over `k`.
pub(crate) const KC: usize = 256;

/// Inputs with more rows than this are packed: their rows are walked in several groups.
pub(crate) const PACK_ROWS: usize = 4;

/// The first `k - k % 8` columns of `x` as chunks of [`KC`] columns, every row's piece of
/// chunk `c` at `(c * m + row) * KC` (the last chunk padded to `KC`).
///
/// Row `i` of `x` starts `i * k` floats in, and for many `k` (1536 x 4 bytes = 1.5 x 4 KiB)
/// several rows then fall on the same L1 cache sets and evict one another while a tile walks
/// them in step; a chunk of the packed copy is one contiguous block instead. Costs one pass
/// over `x`, which is `m * k` floats against the `n * k` weights read.
fn pack(x: &[f32], m: usize, k: usize) -> Result<Packed> {
    let k8 = k - k % 8;
    let chunks = k8.div_ceil(KC);
    let len = chunks
        .checked_mul(m)
        .and_then(|v| v.checked_mul(KC))
        .and_then(|v| v.checked_add(ALIGN))
        .ok_or_else(|| Error::value("x", "of a size that fits in memory", "an overflow"))?;
    let mut buffer = crate::try_vec("x", "a chunked copy of x", len, 0.0f32)?;
    // 32-byte aligned vector loads never straddle two cache lines.
    let start = buffer.as_ptr().align_offset(ALIGN * 4).min(ALIGN);
    let packed = &mut buffer[start..start + len - ALIGN];
    for c in 0..chunks {
        let (t0, t1) = (c * KC, ((c + 1) * KC).min(k8));
        for i in 0..m {
            let dst = (c * m + i) * KC;
            packed[dst..dst + t1 - t0].copy_from_slice(&x[i * k + t0..i * k + t1]);
        }
    }
    Ok(Packed { buffer, start })
}

/// Floats of slack in a packed buffer for aligning its start to 32 bytes.
const ALIGN: usize = 8;

/// A packed copy of `x` inside a buffer with room to align it.
struct Packed {
    buffer: Vec<f32>,
    start: usize,
}

impl Packed {
    fn as_slice(&self) -> &[f32] {
        if self.buffer.is_empty() {
            return &[];
        }
        &self.buffer[self.start..self.buffer.len() - ALIGN + self.start]
    }
}

// SAFETY: `out` is only written through `Job::store`, and the ranges handed to the threads
// are disjoint sets of columns, so no element is written by two threads; the rest is shared
// read-only data.
unsafe impl<W: Sync> Sync for Job<'_, W> {}

impl<W> Job<'_, W> {
    /// Writes `out[i, j]`.
    ///
    /// # Safety
    /// `i < m`, `j < n`, and `j` lies in the range of output features owned by the caller.
    #[inline(always)]
    pub(crate) unsafe fn store(&self, i: usize, j: usize, value: f32) {
        // SAFETY: in bounds by the caller's contract (`out` has `m * n` elements, checked
        // before the job was built); no other thread owns column `j`.
        unsafe { *self.out.add(i * self.n + j) = value };
    }
}

/// Output features per parallel task: at least this many bytes of weights each, so that a
/// task (a few microseconds of rayon bookkeeping) carries ~20 us of memory traffic.
const MIN_TASK_BYTES: usize = 256 << 10;

/// Tasks per thread when the matrix is large: small enough tasks that a thread slowed by
/// another process does not hold up the whole product.
const TASKS_PER_THREAD: usize = 4;

/// Shape checks, then the product on `path`, split across the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_with<W: Weight + KernelFor>(
    path: Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    linear_scaled(path, x, m, k, w, None, n, bias, out)
}

/// [`linear_with`] with an optional per-feature scale of the sums (`scale.len() == n`, checked
/// by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_scaled<W: Weight + KernelFor>(
    path: Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    scale: Option<&[f32]>,
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    check_shapes(x, m, k, w, n, bias, out)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let packed = if m > PACK_ROWS {
        pack(x, m, k)?
    } else {
        Packed {
            buffer: Vec::new(),
            start: 0,
        }
    };
    let job = Job {
        x,
        m,
        k,
        w,
        n,
        bias,
        scale,
        packed: packed.as_slice(),
        out: out.as_mut_ptr(),
    };
    let rows = W::kernel(path);
    let row_bytes = k.max(1).saturating_mul(std::mem::size_of::<W>());
    let threads = rayon::current_num_threads().max(1);
    let per_task = (MIN_TASK_BYTES / row_bytes)
        .max(n.div_ceil(threads * TASKS_PER_THREAD))
        .max(1);
    if threads == 1 || per_task >= n {
        // SAFETY: `0..n` is every column and this thread is the only writer.
        unsafe { rows(&job, 0, n) };
        return Ok(());
    }
    let tasks = n.div_ceil(per_task);
    // The calling thread works too, taking ranges from a shared counter with `threads - 1`
    // helpers on the pool, instead of handing everything to the pool and sleeping until it
    // is done: no wake-up sits on the critical path at the start or the end, and when a core
    // is busy (torch's OpenMP threads spin for a while after each of torch's operations)
    // whoever runs takes the next range.
    let next = AtomicUsize::new(0);
    let work = || loop {
        let t = next.fetch_add(1, Ordering::Relaxed);
        if t >= tasks {
            break;
        }
        let j0 = t * per_task;
        let j1 = (j0 + per_task).min(n);
        // SAFETY: the counter hands task `t`, which alone owns columns `j0..j1` (the ranges
        // partition `0..n`), to one thread.
        unsafe { rows(&job, j0, j1) };
    };
    let work = &work;
    rayon::in_place_scope(|scope| {
        for _ in 1..threads.min(tasks) {
            scope.spawn(move |_| work());
        }
        work();
    });
    Ok(())
}

/// Computes columns `j0..j1` of every output row.
///
/// # Safety
/// `j0 <= j1 <= n`, and the caller owns those columns (no other thread writes them).
pub(crate) type RowsFn<W> = unsafe fn(&Job<'_, W>, usize, usize);

/// The implementation of [`RowsFn`] for a weight type on the chosen path.
pub(crate) trait KernelFor: Sized {
    /// The fastest implementation this CPU runs, or the portable one for [`Path::Portable`].
    fn kernel(path: Path) -> RowsFn<Self>;
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

impl KernelFor for f32 {
    fn kernel(path: Path) -> RowsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if path == Path::Auto && has_avx2_fma() {
            return avx2::rows_f32;
        }
        let _ = path;
        portable::rows::<f32>
    }
}

impl KernelFor for u16 {
    fn kernel(path: Path) -> RowsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if path == Path::Auto && has_avx2_fma() {
            return avx2::rows_bf16;
        }
        let _ = path;
        portable::rows::<u16>
    }
}

impl KernelFor for i8 {
    fn kernel(path: Path) -> RowsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if path == Path::Auto && has_avx2_fma() {
            return avx2::rows_i8;
        }
        let _ = path;
        portable::rows::<i8>
    }
}
