//! Bindings of `ferrolm_core::comm` (Python: `ferrolm._native.comm`, wrapped by `ferrolm.comm`).

use pyo3::prelude::*;

/// CPU quantization of gradients (wrapped by `ferrolm.comm`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod comm {
    use ferrolm_core::comm::{self as core, MinMax, Scheme};
    use ferrolm_core::Error;
    use numpy::{PyReadonlyArray1, PyReadwriteArray1};
    use pyo3::prelude::*;
    use pyo3::types::{PyBool, PyBytes, PyInt};

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
        min: &Bound<'_, PyAny>,
        scale: &Bound<'_, PyAny>,
        mut out: PyReadwriteArray1<'_, f32>,
        accumulate: bool,
    ) -> PyResult<()> {
        let (min, scale) = (float_arg("min", min)?, float_arg("scale", scale)?);
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

    /// The scheme that `scheme` and `block_size` (any Python objects: the core's message shows
    /// the ones of the wrong kind, a block size beyond 64 bits included) select.
    fn select(scheme: &Bound<'_, PyAny>, block_size: &Bound<'_, PyAny>) -> PyResult<Scheme> {
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
        Scheme::select(name.as_deref().map_err(|e| *e), block).map_err(to_py)
    }

    /// A count or size argument: a non-negative Python int below 2**64, or a `ValueError`
    /// (`TypeError` for a non-integer) naming `arg`, never a bare `OverflowError`.
    fn size_arg(arg: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
            let got = value.get_type().name()?.to_string();
            return Err(to_py(Error::dtype(arg, "an int", got)));
        }
        value.extract::<usize>().map_err(|_| {
            let shown = value
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "an int".to_owned());
            to_py(Error::value(
                arg,
                format!("a non-negative integer below 2**{}", usize::BITS),
                shown,
            ))
        })
    }

    /// A float32 parameter: a Python number, or an error naming `arg` (an int too large for a
    /// double is a `ValueError`, not a bare `OverflowError`; the core checks the value).
    fn float_arg(arg: &str, value: &Bound<'_, PyAny>) -> PyResult<f32> {
        if value.is_instance_of::<PyBool>() {
            return Err(to_py(Error::dtype(arg, "a float", "bool")));
        }
        match value.extract::<f64>() {
            // Out-of-range doubles become +-inf here and are refused by the core's check.
            Ok(v) => Ok(v as f32),
            Err(_) if value.is_instance_of::<PyInt>() => Err(to_py(Error::value(
                arg,
                "a finite float32 value",
                "an integer too large for a float",
            ))),
            Err(_) => {
                let got = value.get_type().name()?.to_string();
                Err(to_py(Error::dtype(arg, "a float", got)))
            }
        }
    }

    /// Validates `scheme` and `block_size` and returns the scheme's wire code.
    #[pyfunction]
    fn scheme_code(scheme: &Bound<'_, PyAny>, block_size: &Bound<'_, PyAny>) -> PyResult<u8> {
        Ok(select(scheme, block_size)?.code())
    }

    /// Bytes of the packed (wire) form of `n` values under `scheme` (`block` for "blockwise").
    #[pyfunction]
    fn packed_len(
        scheme: &Bound<'_, PyAny>,
        block: &Bound<'_, PyAny>,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let scheme = select(scheme, block)?;
        let n = size_arg("n", n)?;
        scheme.try_packed_len(n).map_err(to_py)
    }

    /// Checks the float32 parameters `head` (the bytes in front of the codes) of a packed
    /// piece of `n` values; the GPU path calls this on a host copy of them.
    #[pyfunction]
    fn check_params(
        py: Python<'_>,
        scheme: &Bound<'_, PyAny>,
        block: &Bound<'_, PyAny>,
        head: PyReadonlyArray1<'_, u8>,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let scheme = select(scheme, block)?;
        let n = size_arg("n", n)?;
        let head = slice("head", &head)?;
        detach(py, || core::check_params(scheme, head, n))
    }

    /// Whether the packed piece is a poisoned one (a rank could not quantize its values).
    #[pyfunction]
    fn is_poison(packed: PyReadonlyArray1<'_, u8>) -> PyResult<bool> {
        Ok(core::is_poison(slice("packed", &packed)?))
    }

    /// The header of a serialised quantized tensor (`QuantizedTensor.to_bytes`).
    #[pyfunction]
    fn frame_header<'py>(
        py: Python<'py>,
        scheme: &str,
        block: &Bound<'_, PyAny>,
        dtype: &str,
        shape: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let block = size_arg("block_size", block)? as u64;
        let dims = shape
            .iter()
            .map(|d| size_arg("shape", d).map(|d| d as u64))
            .collect::<PyResult<Vec<u64>>>()?;
        let head = core::frame_header(scheme, block, dtype, &dims).map_err(to_py)?;
        Ok(PyBytes::new(py, &head))
    }

    /// Parses and fully checks a serialised quantized tensor; returns
    /// `(scheme, block_size, dtype name, shape, offset of the packed buffer)`.
    #[pyfunction]
    fn parse_frame(
        py: Python<'_>,
        buf: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<(&'static str, u32, &'static str, Vec<usize>, usize)> {
        let buf = slice("buf", &buf)?;
        let f = detach(py, || core::parse_frame(buf))?;
        let dtype = core::frame::DTYPES[usize::from(f.dtype)];
        Ok((f.scheme.name(), f.block, dtype, f.shape, f.data_offset))
    }

    /// Quantizes `x` (float32) into the packed uint8 buffer `out` (parameters, then codes).
    #[pyfunction]
    fn quantize_packed(
        py: Python<'_>,
        scheme: &Bound<'_, PyAny>,
        block: &Bound<'_, PyAny>,
        x: PyReadonlyArray1<'_, f32>,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<()> {
        let scheme = select(scheme, block)?;
        let x = slice("x", &x)?;
        let out = slice_mut("out", &mut out)?;
        detach(py, || core::quantize_packed(scheme, x, out))
    }

    /// Decodes the packed buffer into `out` (float32), adding into it when `accumulate`; the
    /// buffer is checked completely first (a forged or poisoned one is a `ValueError`).
    #[pyfunction]
    fn dequantize_packed(
        py: Python<'_>,
        scheme: &Bound<'_, PyAny>,
        block: &Bound<'_, PyAny>,
        packed: PyReadonlyArray1<'_, u8>,
        mut out: PyReadwriteArray1<'_, f32>,
        accumulate: bool,
    ) -> PyResult<()> {
        let scheme = select(scheme, block)?;
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
