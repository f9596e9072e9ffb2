//! Bindings of `ferrolm_core::comm` (Python: `ferrolm.comm`).

use ferrolm_core::comm::{self, MinMax, Scheme};
use numpy::{PyReadonlyArray1, PyReadwriteArray1};
use pyo3::prelude::*;
use pyo3::types::PyBool;

use crate::arrays::{slice, slice_mut};
use crate::errors::detach;

/// Quantizes `x` (float32) into `out` (uint8) with one affine code; returns `(min, scale)`.
#[pyfunction]
pub fn comm_quantize_minmax(
    py: Python<'_>,
    x: PyReadonlyArray1<'_, f32>,
    mut out: PyReadwriteArray1<'_, u8>,
) -> PyResult<(f32, f32)> {
    let x = slice("x", &x)?;
    let out = slice_mut("out", &mut out)?;
    let p = detach(py, || comm::quantize_minmax(x, out))?;
    Ok((p.min, p.scale))
}

/// Writes `min + q * scale` into `out` (float32).
#[pyfunction]
pub fn comm_dequantize_minmax(
    py: Python<'_>,
    q: PyReadonlyArray1<'_, u8>,
    min: f32,
    scale: f32,
    mut out: PyReadwriteArray1<'_, f32>,
) -> PyResult<()> {
    let q = slice("q", &q)?;
    let out = slice_mut("out", &mut out)?;
    detach(py, || {
        comm::dequantize_minmax(q, MinMax { min, scale }, out)
    })
}

/// Adds `min + q * scale` into the float32 accumulator `acc`.
#[pyfunction]
pub fn comm_dequantize_accumulate_minmax(
    py: Python<'_>,
    q: PyReadonlyArray1<'_, u8>,
    min: f32,
    scale: f32,
    mut acc: PyReadwriteArray1<'_, f32>,
) -> PyResult<()> {
    let q = slice("q", &q)?;
    let acc = slice_mut("acc", &mut acc)?;
    detach(py, || {
        comm::dequantize_accumulate_minmax(q, MinMax { min, scale }, acc)
    })
}

/// The names of the schemes, in the order of their wire codes.
#[pyfunction]
pub fn comm_scheme_names() -> Vec<&'static str> {
    Scheme::NAMES.to_vec()
}

/// Validates `scheme` and `block_size` (any Python objects: the core's message shows the ones
/// of the wrong kind) and returns the scheme's wire code.
#[pyfunction]
pub fn comm_scheme_code(scheme: &Bound<'_, PyAny>, block_size: &Bound<'_, PyAny>) -> PyResult<u8> {
    let scheme_repr = scheme.repr()?.to_string();
    let block_repr = block_size.repr()?.to_string();
    let name = scheme.extract::<String>();
    let name = name.as_deref().map_err(|_| scheme_repr.as_str());
    // `bool` is an `int` subclass in Python, but `True` is no block size.
    let block = match block_size.is_instance_of::<PyBool>() {
        true => Err(block_repr.as_str()),
        false => block_size
            .extract::<usize>()
            .map_err(|_| block_repr.as_str()),
    };
    let scheme = Scheme::select(name, block).map_err(crate::errors::to_py)?;
    Ok(scheme.code())
}

/// Bytes of the packed (wire) form of `n` values under `scheme` (`block` for "blockwise").
#[pyfunction]
pub fn comm_packed_len(scheme: &str, block: usize, n: usize) -> PyResult<usize> {
    let scheme = Scheme::parse(scheme, block).map_err(crate::errors::to_py)?;
    Ok(scheme.packed_len(n))
}

/// Quantizes `x` (float32) into the packed uint8 buffer `out` (parameters, then codes).
#[pyfunction]
pub fn comm_quantize_packed(
    py: Python<'_>,
    scheme: &str,
    block: usize,
    x: PyReadonlyArray1<'_, f32>,
    mut out: PyReadwriteArray1<'_, u8>,
) -> PyResult<()> {
    let scheme = Scheme::parse(scheme, block).map_err(crate::errors::to_py)?;
    let x = slice("x", &x)?;
    let out = slice_mut("out", &mut out)?;
    detach(py, || comm::quantize_packed(scheme, x, out))
}

/// Decodes the packed buffer into `out` (float32), adding into it when `accumulate`.
#[pyfunction]
pub fn comm_dequantize_packed(
    py: Python<'_>,
    scheme: &str,
    block: usize,
    packed: PyReadonlyArray1<'_, u8>,
    mut out: PyReadwriteArray1<'_, f32>,
    accumulate: bool,
) -> PyResult<()> {
    let scheme = Scheme::parse(scheme, block).map_err(crate::errors::to_py)?;
    let packed = slice("packed", &packed)?;
    let out = slice_mut("out", &mut out)?;
    detach(py, || {
        comm::dequantize_packed(scheme, packed, out, accumulate)
    })
}

/// Whether every value of `x` (float32) is finite.
#[pyfunction]
pub fn comm_all_finite(py: Python<'_>, x: PyReadonlyArray1<'_, f32>) -> PyResult<bool> {
    let x = slice("x", &x)?;
    detach(py, || Ok(comm::all_finite(x)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(comm_quantize_minmax, m)?)?;
    m.add_function(wrap_pyfunction!(comm_dequantize_minmax, m)?)?;
    m.add_function(wrap_pyfunction!(comm_dequantize_accumulate_minmax, m)?)?;
    m.add_function(wrap_pyfunction!(comm_scheme_names, m)?)?;
    m.add_function(wrap_pyfunction!(comm_scheme_code, m)?)?;
    m.add_function(wrap_pyfunction!(comm_packed_len, m)?)?;
    m.add_function(wrap_pyfunction!(comm_quantize_packed, m)?)?;
    m.add_function(wrap_pyfunction!(comm_dequantize_packed, m)?)?;
    m.add_function(wrap_pyfunction!(comm_all_finite, m)?)?;
    Ok(())
}
