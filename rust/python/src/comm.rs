//! Bindings of `ferrolm_core::comm` (Python: `ferrolm._native.comm`, wrapped by `ferrolm.comm`).

use pyo3::prelude::*;

/// CPU quantization of gradients (wrapped by `ferrolm.comm`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod comm {
    use ferrolm_core::comm::{self as core, MinMax, Scheme};
    use numpy::{PyReadonlyArray1, PyReadwriteArray1};
    use pyo3::prelude::*;
    use pyo3::types::PyBool;

    use crate::arrays::{slice, slice_mut};
    use crate::errors::{detach, to_py};

    /// Quantizes `x` (float32) into `out` (uint8) with one affine code; returns `(min, scale)`.
    #[pyfunction]
    fn quantize_minmax(
        py: Python<'_>,
        x: PyReadonlyArray1<'_, f32>,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<(f32, f32)> {
        let x = slice("x", &x)?;
        let out = slice_mut("out", &mut out)?;
        let p = detach(py, || core::quantize_minmax(x, out))?;
        Ok((p.min, p.scale))
    }

    /// Writes `min + q * scale` into `out` (float32), or adds it when `accumulate`.
    #[pyfunction]
    #[pyo3(signature = (q, min, scale, out, *, accumulate=false))]
    fn dequantize_minmax(
        py: Python<'_>,
        q: PyReadonlyArray1<'_, u8>,
        min: f32,
        scale: f32,
        mut out: PyReadwriteArray1<'_, f32>,
        accumulate: bool,
    ) -> PyResult<()> {
        let q = slice("q", &q)?;
        let out = slice_mut("out", &mut out)?;
        let code = MinMax { min, scale };
        detach(py, || {
            if accumulate {
                core::dequantize_accumulate_minmax(q, code, out)
            } else {
                core::dequantize_minmax(q, code, out)
            }
        })
    }

    /// The names of the schemes, in the order of their wire codes.
    #[pyfunction]
    fn scheme_names() -> Vec<&'static str> {
        Scheme::NAMES.to_vec()
    }

    /// Validates `scheme` and `block_size` (any Python objects: the core's message shows the
    /// ones of the wrong kind) and returns the scheme's wire code.
    #[pyfunction]
    fn scheme_code(scheme: &Bound<'_, PyAny>, block_size: &Bound<'_, PyAny>) -> PyResult<u8> {
        // The reprs are only built for an argument of the wrong kind (this runs on every call).
        let (scheme_repr, block_repr);
        let name = match scheme.extract::<String>() {
            Ok(name) => Ok(name),
            Err(_) => {
                scheme_repr = scheme.repr()?.to_string();
                Err(scheme_repr.as_str())
            }
        };
        // `bool` is an `int` subclass in Python, but `True` is no block size.
        let block = match block_size.extract::<usize>() {
            Ok(block) if !block_size.is_instance_of::<PyBool>() => Ok(block),
            _ => {
                block_repr = block_size.repr()?.to_string();
                Err(block_repr.as_str())
            }
        };
        let scheme = Scheme::select(name.as_deref().map_err(|e| *e), block).map_err(to_py)?;
        Ok(scheme.code())
    }

    /// Bytes of the packed (wire) form of `n` values under `scheme` (`block` for "blockwise").
    #[pyfunction]
    fn packed_len(scheme: &str, block: usize, n: usize) -> PyResult<usize> {
        let scheme = Scheme::parse(scheme, block).map_err(to_py)?;
        Ok(scheme.packed_len(n))
    }

    /// Quantizes `x` (float32) into the packed uint8 buffer `out` (parameters, then codes).
    #[pyfunction]
    fn quantize_packed(
        py: Python<'_>,
        scheme: &str,
        block: usize,
        x: PyReadonlyArray1<'_, f32>,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<()> {
        let scheme = Scheme::parse(scheme, block).map_err(to_py)?;
        let x = slice("x", &x)?;
        let out = slice_mut("out", &mut out)?;
        detach(py, || core::quantize_packed(scheme, x, out))
    }

    /// Decodes the packed buffer into `out` (float32), adding into it when `accumulate`.
    #[pyfunction]
    fn dequantize_packed(
        py: Python<'_>,
        scheme: &str,
        block: usize,
        packed: PyReadonlyArray1<'_, u8>,
        mut out: PyReadwriteArray1<'_, f32>,
        accumulate: bool,
    ) -> PyResult<()> {
        let scheme = Scheme::parse(scheme, block).map_err(to_py)?;
        let packed = slice("packed", &packed)?;
        let out = slice_mut("out", &mut out)?;
        detach(py, || {
            core::dequantize_packed(scheme, packed, out, accumulate)
        })
    }

    /// Whether every value of `x` (float32) is finite.
    #[pyfunction]
    fn all_finite(py: Python<'_>, x: PyReadonlyArray1<'_, f32>) -> PyResult<bool> {
        let x = slice("x", &x)?;
        detach(py, || Ok(core::all_finite(x)))
    }
}
