//! Bindings of `ferrolm_core::linalg` (Python: `ferrolm._native.linalg`, wrapped by
//! `ferrolm.speculative.fast_linear`).

use pyo3::prelude::*;

/// Small-batch dense products (wrapped by `ferrolm.speculative.fast_linear`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod linalg {
    use ferrolm_core::linalg as core;
    use ferrolm_core::Error;
    use numpy::{
        Element, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyReadwriteArray2,
        PyUntypedArrayMethods,
    };
    use pyo3::prelude::*;

    use crate::arrays::{slice, slice_mut};
    use crate::errors::{detach, to_py};

    /// The borrowed operands of one product: `(x, m, k, w, n, bias, out)`.
    type Operands<'a, W> = (
        &'a [f32],
        usize,
        usize,
        &'a [W],
        usize,
        Option<&'a [f32]>,
        &'a mut [f32],
    );

    /// Borrows the arrays as slices; the 2-D shapes give `m, k, n`, and the core checks that
    /// they agree (`w`'s columns against `k`, `out`'s shape against `[m, n]`).
    fn operands<'a, W: Element>(
        x: &'a PyReadonlyArray2<'_, f32>,
        w: &'a PyReadonlyArray2<'_, W>,
        bias: Option<&'a PyReadonlyArray1<'_, f32>>,
        out: &'a mut PyReadwriteArray2<'_, f32>,
    ) -> PyResult<Operands<'a, W>> {
        let (m, k) = (x.shape()[0], x.shape()[1]);
        let (n, wk) = (w.shape()[0], w.shape()[1]);
        if wk != k {
            return Err(to_py(Error::value(
                "w",
                format!("[out_features, {k}] (x has {k} columns)"),
                format!("[{n}, {wk}]"),
            )));
        }
        let (om, on) = (out.shape()[0], out.shape()[1]);
        if (om, on) != (m, n) {
            return Err(to_py(Error::value(
                "out",
                format!("of shape [{m}, {n}]"),
                format!("[{om}, {on}]"),
            )));
        }
        let bias = bias.map(|b| slice("bias", b)).transpose()?;
        Ok((
            slice("x", x)?,
            m,
            k,
            slice("w", w)?,
            n,
            bias,
            slice_mut("out", out)?,
        ))
    }

    /// Writes `x @ w.T + bias` into `out`: `x` float32 `[m, k]`, `w` float32 `[n, k]`
    /// (`torch.nn.Linear.weight`), `bias` float32 `[n]` or None, `out` float32 `[m, n]`; all
    /// C-contiguous. Releases the GIL.
    #[pyfunction]
    #[pyo3(signature = (x, w, bias, out))]
    fn linear_f32(
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        w: PyReadonlyArray2<'_, f32>,
        bias: Option<PyReadonlyArray1<'_, f32>>,
        mut out: PyReadwriteArray2<'_, f32>,
    ) -> PyResult<()> {
        let (x, m, k, w, n, bias, out) = operands(&x, &w, bias.as_ref(), &mut out)?;
        detach(py, || core::linear_f32(x, m, k, w, n, bias, out))
    }

    /// [`linear_f32`] with bfloat16 weights given as their bits (`uint16` `[n, k]`).
    #[pyfunction]
    #[pyo3(signature = (x, w, bias, out))]
    fn linear_bf16(
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        w: PyReadonlyArray2<'_, u16>,
        bias: Option<PyReadonlyArray1<'_, f32>>,
        mut out: PyReadwriteArray2<'_, f32>,
    ) -> PyResult<()> {
        let (x, m, k, w, n, bias, out) = operands(&x, &w, bias.as_ref(), &mut out)?;
        detach(py, || core::linear_bf16(x, m, k, w, n, bias, out))
    }

    /// [`linear_f32`] with int8 weights (`int8` `[n, k]`) and one float32 scale per output
    /// feature (`scale` `[n]`), as [`quantize_rows_i8`] makes them.
    #[pyfunction]
    #[pyo3(signature = (x, w, scale, bias, out))]
    fn linear_i8(
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        w: PyReadonlyArray2<'_, i8>,
        scale: PyReadonlyArray1<'_, f32>,
        bias: Option<PyReadonlyArray1<'_, f32>>,
        mut out: PyReadwriteArray2<'_, f32>,
    ) -> PyResult<()> {
        let (x, m, k, w, n, bias, out) = operands(&x, &w, bias.as_ref(), &mut out)?;
        let scale = slice("scale", &scale)?;
        detach(py, || core::linear_i8(x, m, k, w, scale, n, bias, out))
    }

    /// Symmetric per-row int8 quantization of float32 weights `w` `[n, k]` into `q` (`int8`
    /// `[n, k]`) and `scale` (float32 `[n]`): `scale = max|row| / 127`, codes rounded. Raises
    /// ValueError naming `w` on a NaN or infinite weight. Releases the GIL.
    #[pyfunction]
    #[pyo3(signature = (w, q, scale))]
    fn quantize_rows_i8(
        py: Python<'_>,
        w: PyReadonlyArray2<'_, f32>,
        mut q: PyReadwriteArray2<'_, i8>,
        mut scale: PyReadwriteArray1<'_, f32>,
    ) -> PyResult<()> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        if q.shape() != [n, k] {
            return Err(to_py(Error::value(
                "q",
                format!("of shape [{n}, {k}] like w"),
                format!("{:?}", q.shape()),
            )));
        }
        let w = slice("w", &w)?;
        let q = slice_mut("q", &mut q)?;
        let scale = slice_mut("scale", &mut scale)?;
        detach(py, || core::quantize_rows_i8(w, n, k, q, scale))
    }
}
