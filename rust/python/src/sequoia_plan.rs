//! The Sequoia planners' bindings (exported from `ferrolm._native.speculative`).

use ferrolm_core::speculative::sequoia;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::arrays::{slice, unsigned};
use crate::errors::detach;
use crate::speculative::speculative::PySequoiaTable;

/// Planner: `(n, d, tokens_per_step, s_per_token, speedup)`.
#[pyfunction]
#[pyo3(signature = (table, sizes, t_verify_s, t_draft_s, t_autoregressive_s=None))]
pub(crate) fn plan(
    py: Python<'_>,
    table: &PySequoiaTable,
    sizes: PyReadonlyArray1<'_, i64>,
    t_verify_s: PyReadonlyArray1<'_, f64>,
    t_draft_s: f64,
    t_autoregressive_s: Option<f64>,
) -> PyResult<(usize, usize, f64, f64, f64)> {
    let sizes = slice("sizes", &sizes)?;
    let tv = slice("t_verify_s", &t_verify_s)?;
    let inner = &table.inner;
    let p = detach(py, || {
        let sizes = unsigned("sizes", sizes)?;
        sequoia::plan(inner, &sizes, tv, t_draft_s, t_autoregressive_s)
    })?;
    Ok((p.n, p.d, p.tokens_per_step, p.s_per_token, p.speedup))
}

/// Cost-aware planner: `(n, d, tokens_per_step, s_per_token, speedup)`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_costed(
    py: Python<'_>,
    table: &PySequoiaTable,
    sizes: PyReadonlyArray1<'_, i64>,
    t_verify_s: PyReadonlyArray1<'_, f64>,
    draft_widths: PyReadonlyArray1<'_, i64>,
    t_draft_s: PyReadonlyArray1<'_, f64>,
    t_fixed_s: f64,
    t_autoregressive_s: f64,
) -> PyResult<(usize, usize, f64, f64, f64)> {
    let sizes = slice("sizes", &sizes)?;
    let tv = slice("t_verify_s", &t_verify_s)?;
    let widths = slice("draft_widths", &draft_widths)?;
    let td = slice("t_draft_s", &t_draft_s)?;
    let inner = &table.inner;
    let p = detach(py, || {
        let sizes = unsigned("sizes", sizes)?;
        let widths = unsigned("draft_widths", widths)?;
        let costs = sequoia::Costs {
            verify_sizes: &sizes,
            verify_s: tv,
            draft_widths: &widths,
            draft_s: td,
            fixed_s: t_fixed_s,
            autoregressive_s: t_autoregressive_s,
        };
        sequoia::plan_costed(inner, &costs)
    })?;
    Ok((p.n, p.d, p.tokens_per_step, p.s_per_token, p.speedup))
}

/// Widths of the draft forwards of the optimal `(n, d)` tree: the root, then per level the
/// nodes that have children.
#[pyfunction]
pub(crate) fn draft_level_widths<'py>(
    py: Python<'py>,
    table: &PySequoiaTable,
    n: usize,
    d: usize,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let inner = &table.inner;
    let w = detach(py, || sequoia::draft_level_widths(inner, n, d))?;
    Ok(PyArray1::from_vec(
        py,
        w.into_iter().map(|x| x as i64).collect(),
    ))
}
