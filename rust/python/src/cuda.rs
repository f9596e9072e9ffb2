//! Bindings of `ferrolm_cuda` (Python: `ferrolm._native.cuda`, wrapped by `ferrolm.cuda`).
//! Pointers arrive as integers from `tensor.data_ptr()` and streams from
//! `torch.cuda.current_stream().cuda_stream`; the Python layer checks devices, dtypes, sizes and
//! contiguity before calling these.

use pyo3::prelude::*;

/// NVRTC kernels and their launchers (wrapped by `ferrolm.cuda`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod cuda {
    use ferrolm_cuda::quantize::{self, Encoded};
    use ferrolm_cuda::Launch;
    use pyo3::prelude::*;

    use crate::errors::detach;

    /// Whether libnvrtc can be loaded.
    #[pyfunction]
    fn nvrtc_available() -> bool {
        ferrolm_cuda::nvrtc_available()
    }

    /// Whether the CUDA driver library can be loaded.
    #[pyfunction]
    fn driver_available() -> bool {
        ferrolm_cuda::driver_available()
    }

    /// Number of CUDA devices (RuntimeError without a driver).
    #[pyfunction]
    fn device_count(py: Python<'_>) -> PyResult<usize> {
        detach(py, ferrolm_cuda::device_count)
    }

    /// NVRTC's (major, minor) version.
    #[pyfunction]
    fn nvrtc_version(py: Python<'_>) -> PyResult<(i32, i32)> {
        detach(py, ferrolm_cuda::nvrtc_version)
    }

    /// The CUDA (major, minor) version the driver supports.
    #[pyfunction]
    fn driver_version(py: Python<'_>) -> PyResult<(i32, i32)> {
        detach(py, ferrolm_cuda::driver_version)
    }

    /// Names of the kernel families shipped in `cuda/kernels/`.
    #[pyfunction]
    fn kernel_names() -> Vec<&'static str> {
        ferrolm_cuda::kernel_sources()
            .iter()
            .map(|k| k.name)
            .collect()
    }

    /// The architecture a compile without one targets (`compute_XY`).
    #[pyfunction]
    fn default_arch(py: Python<'_>) -> PyResult<String> {
        detach(py, ferrolm_cuda::default_arch)
    }

    /// Compiles every kernel family with NVRTC; returns `(name, ptx_bytes)` pairs.
    #[pyfunction]
    #[pyo3(signature = (arch=None))]
    fn compile_all(py: Python<'_>, arch: Option<String>) -> PyResult<Vec<(&'static str, usize)>> {
        let compiled = detach(py, || ferrolm_cuda::compile_all(arch.as_deref()))?;
        Ok(compiled
            .into_iter()
            .map(|k| (k.name, k.ptx_bytes))
            .collect())
    }

    /// Number of blocks (and partial triples) the min-max reduction uses for `n` elements.
    #[pyfunction]
    fn minmax_blocks(n: u64) -> u32 {
        quantize::blocks_for(n)
    }

    /// Queues min-max quantization of `n` floats on `stream` of `device`.
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn quantize_minmax_f32(
        py: Python<'_>,
        device: usize,
        stream: usize,
        x: u64,
        q: u64,
        params: u64,
        partial: u64,
        n: u64,
    ) -> PyResult<()> {
        let (launch, into) = (Launch { device, stream }, Encoded { params, codes: q });
        detach(py, || {
            quantize::quantize_minmax_f32(launch, x, n, into, partial)
        })
    }

    /// Queues `out = min + q * scale` (`out +=` when `accumulate`) on `stream` of `device`.
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn dequantize_minmax_f32(
        py: Python<'_>,
        device: usize,
        stream: usize,
        q: u64,
        params: u64,
        out: u64,
        n: u64,
        accumulate: bool,
    ) -> PyResult<()> {
        let (launch, coded) = (Launch { device, stream }, Encoded { params, codes: q });
        detach(py, || {
            quantize::dequantize_minmax_f32(launch, coded, n, out, accumulate)
        })
    }

    /// Queues block-wise quantization (see `ferrolm_cuda::quantize::quantize_blockwise_f32`).
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn quantize_blockwise_f32(
        py: Python<'_>,
        device: usize,
        stream: usize,
        x: u64,
        n: u64,
        block: u32,
        params: u64,
        q: u64,
        bad: u64,
    ) -> PyResult<()> {
        let (launch, into) = (Launch { device, stream }, Encoded { params, codes: q });
        detach(py, || {
            quantize::quantize_blockwise_f32(launch, x, n, block, into, bad)
        })
    }

    /// Queues block-wise decoding (adding into `out` when `accumulate`).
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn dequantize_blockwise_f32(
        py: Python<'_>,
        device: usize,
        stream: usize,
        q: u64,
        n: u64,
        block: u32,
        params: u64,
        out: u64,
        accumulate: bool,
    ) -> PyResult<()> {
        let (launch, coded) = (Launch { device, stream }, Encoded { params, codes: q });
        detach(py, || {
            quantize::dequantize_blockwise_f32(launch, coded, n, block, out, accumulate)
        })
    }

    /// Bytes of zeroed scratch `quantize_intellect_f32` needs for `n` values.
    #[pyfunction]
    fn intellect_scratch_bytes(n: u64) -> u64 {
        quantize::intellect_scratch_bytes(n)
    }

    /// Queues INTELLECT-1 quantization (codebook + codes; stats in the last 16 scratch bytes).
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn quantize_intellect_f32(
        py: Python<'_>,
        device: usize,
        stream: usize,
        x: u64,
        n: u64,
        codebook: u64,
        q: u64,
        scratch: u64,
    ) -> PyResult<()> {
        let launch = Launch { device, stream };
        let into = Encoded {
            params: codebook,
            codes: q,
        };
        detach(py, || {
            quantize::quantize_intellect_f32(launch, x, n, into, scratch)
        })
    }

    /// Queues INTELLECT-1 decoding through the codebook (adding when `accumulate`).
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn dequantize_intellect_f32(
        py: Python<'_>,
        device: usize,
        stream: usize,
        q: u64,
        n: u64,
        codebook: u64,
        out: u64,
        accumulate: bool,
    ) -> PyResult<()> {
        let launch = Launch { device, stream };
        let coded = Encoded {
            params: codebook,
            codes: q,
        };
        detach(py, || {
            quantize::dequantize_intellect_f32(launch, coded, n, out, accumulate)
        })
    }
}
