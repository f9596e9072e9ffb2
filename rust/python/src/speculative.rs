//! Bindings of `ferrolm_core::speculative` (Python: `ferrolm.speculative`).

use ferrolm_core::speculative::{self, builder, sequoia, tree, BuilderConfig};
use numpy::prelude::*;
use numpy::{PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::arrays::slice;
use crate::errors::{detach, to_py};

type I32Array<'py> = Bound<'py, PyArray1<i32>>;
type I64Array<'py> = Bound<'py, PyArray1<i64>>;

fn slice2<'a, T: numpy::Element>(
    arg: &str,
    array: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<(&'a [T], usize, usize)> {
    let shape = array.shape();
    let (rows, cols) = (shape[0], shape[1]);
    let s = array.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "`{arg}` must be C-contiguous, got a strided array; call np.ascontiguousarray"
        ))
    })?;
    Ok((s, rows, cols))
}

fn to_2d<'py, T: numpy::Element>(
    py: Python<'py>,
    v: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyArray2<T>>> {
    PyArray1::from_vec(py, v).reshape([rows, cols])
}

/// Raises `ValueError` unless `parents` is a valid tree.
#[pyfunction]
pub fn speculative_validate_parents(
    py: Python<'_>,
    parents: PyReadonlyArray1<'_, i32>,
) -> PyResult<()> {
    let parents = slice("parents", &parents)?;
    detach(py, || tree::validate_parents(parents))
}

/// Raises `ValueError` unless `parents` + `offsets` is a valid CSR batch of trees.
#[pyfunction]
pub fn speculative_validate_batch(
    py: Python<'_>,
    parents: PyReadonlyArray1<'_, i32>,
    offsets: PyReadonlyArray1<'_, i64>,
) -> PyResult<usize> {
    let parents = slice("parents", &parents)?;
    let offsets = slice("offsets", &offsets)?;
    detach(py, || tree::validate_batch(parents, offsets))
}

/// Depth of every node.
#[pyfunction]
pub fn speculative_depths<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
) -> PyResult<I32Array<'py>> {
    let parents = slice("parents", &parents)?;
    let d = detach(py, || tree::depths(parents))?;
    Ok(PyArray1::from_vec(py, d))
}

/// Rank of every node among its siblings.
#[pyfunction]
pub fn speculative_ranks<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
) -> PyResult<I32Array<'py>> {
    let parents = slice("parents", &parents)?;
    let r = detach(py, || tree::ranks(parents))?;
    Ok(PyArray1::from_vec(py, r))
}

fn bool_bytes(s: &mut [bool]) -> &mut [u8] {
    // SAFETY: bool and u8 have the same size and alignment, and the core only writes 0 or 1.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), s.len()) }
}

/// Ancestor mask `bool [n, n]`.
#[pyfunction]
pub fn speculative_ancestor_mask<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
) -> PyResult<Bound<'py, PyArray2<bool>>> {
    let parents = slice("parents", &parents)?;
    tree::validate_parents(parents).map_err(to_py)?;
    let n = parents.len();
    // SAFETY: the array is C-contiguous and `ancestor_mask_into` writes every byte (0 or 1)
    // before Python can see it.
    let out = unsafe { PyArray2::<bool>::new(py, [n, n], false) };
    {
        let mut rw = out.readwrite();
        let bytes = bool_bytes(rw.as_slice_mut()?);
        detach(py, || tree::ancestor_mask_into(parents, bytes))?;
    }
    Ok(out)
}

/// Ancestor masks of a CSR batch, `bool [B, m, m]` padded with False.
#[pyfunction]
pub fn speculative_ancestor_mask_batch<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    offsets: PyReadonlyArray1<'py, i64>,
) -> PyResult<Bound<'py, PyArray3<bool>>> {
    let parents = slice("parents", &parents)?;
    let offsets = slice("offsets", &offsets)?;
    let b = tree::validate_batch(parents, offsets).map_err(to_py)?;
    let m = tree::max_tree_size(offsets);
    let out = PyArray3::<bool>::zeros(py, [b, m, m], false);
    {
        let mut rw = out.readwrite();
        let bytes = bool_bytes(rw.as_slice_mut()?);
        detach(py, || {
            tree::ancestor_mask_batch_into(parents, offsets, bytes)
        })?;
    }
    Ok(out)
}

/// Position ids `past_len + depth` (int64).
#[pyfunction]
pub fn speculative_position_ids<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    past_len: i64,
) -> PyResult<I64Array<'py>> {
    let parents = slice("parents", &parents)?;
    let v = detach(py, || tree::position_ids(parents, past_len))?;
    Ok(PyArray1::from_vec(py, v))
}

/// `(path, bonus)` of one verification walk.
#[pyfunction]
pub fn speculative_walk<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    tokens: PyReadonlyArray1<'py, i32>,
    choice: PyReadonlyArray1<'py, i64>,
) -> PyResult<(I32Array<'py>, i64)> {
    let parents = slice("parents", &parents)?;
    let tokens = slice("tokens", &tokens)?;
    let choice = slice("choice", &choice)?;
    let (path, bonus) = detach(py, || tree::walk(parents, tokens, choice))?;
    Ok((PyArray1::from_vec(py, path), bonus))
}

/// Walks of a CSR batch: `(paths, path_offsets, bonus)`.
#[pyfunction]
pub fn speculative_walk_batch<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    offsets: PyReadonlyArray1<'py, i64>,
    tokens: PyReadonlyArray1<'py, i32>,
    choice: PyReadonlyArray1<'py, i64>,
) -> PyResult<(I32Array<'py>, I64Array<'py>, I64Array<'py>)> {
    let parents = slice("parents", &parents)?;
    let offsets = slice("offsets", &offsets)?;
    let tokens = slice("tokens", &tokens)?;
    let choice = slice("choice", &choice)?;
    let (paths, po, bonus) = detach(py, || tree::walk_batch(parents, offsets, tokens, choice))?;
    Ok((
        PyArray1::from_vec(py, paths),
        PyArray1::from_vec(py, po),
        PyArray1::from_vec(py, bonus),
    ))
}

/// Children of every node, `int32 [n, width]` padded with -1.
#[pyfunction]
pub fn speculative_children_table<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
) -> PyResult<Bound<'py, PyArray2<i32>>> {
    let parents = slice("parents", &parents)?;
    let n = parents.len();
    let (table, width) = detach(py, || tree::children_table(parents))?;
    to_2d(py, table, n, width)
}

/// `(src, dst)` cache positions that move the accepted path into place.
#[pyfunction]
pub fn speculative_kv_compaction<'py>(
    py: Python<'py>,
    path: PyReadonlyArray1<'py, i32>,
    past_len: i64,
) -> PyResult<(I64Array<'py>, I64Array<'py>)> {
    let path = slice("path", &path)?;
    let (s, d) = detach(py, || tree::kv_compaction(path, past_len))?;
    Ok((PyArray1::from_vec(py, s), PyArray1::from_vec(py, d)))
}

/// `(src, dst)` cache positions that compact a cache laid out by old ids to the new tree.
#[pyfunction]
pub fn speculative_remap_compaction<'py>(
    py: Python<'py>,
    old_to_new: PyReadonlyArray1<'py, i32>,
    past_len: i64,
) -> PyResult<(I64Array<'py>, I64Array<'py>)> {
    let map = slice("old_to_new", &old_to_new)?;
    let (s, d) = detach(py, || tree::remap_compaction(map, past_len))?;
    Ok((PyArray1::from_vec(py, s), PyArray1::from_vec(py, d)))
}

/// Root-to-leaf node ids, `int32 [leaves, max_depth + 1]` padded with -1.
#[pyfunction]
pub fn speculative_leaf_paths<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
) -> PyResult<Bound<'py, PyArray2<i32>>> {
    let parents = slice("parents", &parents)?;
    let (rows, width) = detach(py, || tree::leaf_paths(parents))?;
    let leaves = rows.len() / width;
    to_2d(py, rows, leaves, width)
}

type FinalArrays<'py> = (
    I32Array<'py>,
    I32Array<'py>,
    I32Array<'py>,
    I32Array<'py>,
    Bound<'py, PyArray1<f32>>,
    I32Array<'py>,
);

fn final_arrays<'py>(py: Python<'py>, t: builder::FinalTree, map: Vec<i32>) -> FinalArrays<'py> {
    (
        PyArray1::from_vec(py, t.parents),
        PyArray1::from_vec(py, t.tokens),
        PyArray1::from_vec(py, t.depth),
        PyArray1::from_vec(py, t.rank),
        PyArray1::from_vec(py, t.score),
        PyArray1::from_vec(py, map),
    )
}

fn config(
    budget: i64,
    max_depth: i64,
    max_width: i64,
    log_decay: f32,
    min_logprob: f32,
) -> PyResult<BuilderConfig> {
    let nonneg = |arg: &str, v: i64| -> PyResult<usize> {
        usize::try_from(v)
            .map_err(|_| PyValueError::new_err(format!("`{arg}` must be >= 0, got {v}")))
    };
    let cfg = BuilderConfig {
        budget: nonneg("budget", budget)?,
        max_depth: nonneg("max_depth", max_depth)?,
        max_width: nonneg("max_width", max_width)?,
        log_decay,
        min_logprob,
    };
    cfg.validate().map_err(to_py)?;
    Ok(cfg)
}

/// SpecExec best-first tree growth (see `ferrolm.speculative.TreeBuilder`).
#[pyclass(name = "SpeculativeTreeBuilder", module = "ferrolm._native")]
pub struct SpeculativeTreeBuilder {
    inner: speculative::TreeBuilder,
}

#[pymethods]
impl SpeculativeTreeBuilder {
    #[new]
    #[pyo3(signature = (root_token, budget, max_depth=16, max_width=8, log_decay=0.0, min_logprob=f32::NEG_INFINITY))]
    fn new(
        root_token: i32,
        budget: i64,
        max_depth: i64,
        max_width: i64,
        log_decay: f32,
        min_logprob: f32,
    ) -> PyResult<Self> {
        let cfg = config(budget, max_depth, max_width, log_decay, min_logprob)?;
        let inner = speculative::TreeBuilder::new(root_token, cfg).map_err(to_py)?;
        Ok(SpeculativeTreeBuilder { inner })
    }

    /// Nodes currently kept.
    #[getter]
    fn size(&self) -> usize {
        self.inner.size()
    }

    /// Nodes ever inserted.
    #[getter]
    fn num_inserted(&self) -> usize {
        self.inner.num_inserted()
    }

    /// Whether the frontier is empty.
    fn done(&mut self) -> bool {
        self.inner.done()
    }

    /// Up to `k` best expandable nodes.
    fn frontier<'py>(&mut self, py: Python<'py>, k: usize) -> I32Array<'py> {
        PyArray1::from_vec(py, self.inner.frontier(k))
    }

    /// Inserts children; returns `int32 [m, w]` old ids or -1.
    fn expand<'py>(
        &mut self,
        py: Python<'py>,
        parent_ids: PyReadonlyArray1<'py, i32>,
        child_tokens: PyReadonlyArray2<'py, i32>,
        child_logprobs: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let parents = slice("parent_ids", &parent_ids)?;
        let (toks, m, w) = slice2("child_tokens", &child_tokens)?;
        let (lps, _, _) = slice2("child_logprobs", &child_logprobs)?;
        let inner = &mut self.inner;
        let ids = detach(py, || inner.expand(parents, toks, lps, w))?;
        to_2d(py, ids, m, w)
    }

    /// `(parents, tokens, depth, rank, score, old_to_new)`.
    fn finalize<'py>(&self, py: Python<'py>) -> FinalArrays<'py> {
        let (t, map) = self.inner.finalize();
        final_arrays(py, t, map)
    }
}

/// `B` tree builders driven together (see `ferrolm.speculative.BatchTreeBuilder`).
#[pyclass(name = "SpeculativeBatchTreeBuilder", module = "ferrolm._native")]
pub struct SpeculativeBatchTreeBuilder {
    inner: speculative::BatchTreeBuilder,
}

#[pymethods]
impl SpeculativeBatchTreeBuilder {
    #[new]
    #[pyo3(signature = (root_tokens, budget, max_depth=16, max_width=8, log_decay=0.0, min_logprob=f32::NEG_INFINITY))]
    fn new(
        root_tokens: PyReadonlyArray1<'_, i32>,
        budget: i64,
        max_depth: i64,
        max_width: i64,
        log_decay: f32,
        min_logprob: f32,
    ) -> PyResult<Self> {
        let cfg = config(budget, max_depth, max_width, log_decay, min_logprob)?;
        let roots = slice("root_tokens", &root_tokens)?;
        let inner = speculative::BatchTreeBuilder::new(roots, cfg).map_err(to_py)?;
        Ok(SpeculativeBatchTreeBuilder { inner })
    }

    /// Kept nodes per tree.
    #[getter]
    fn sizes(&self) -> Vec<usize> {
        self.inner.trees().iter().map(|t| t.size()).collect()
    }

    /// Whether every tree is done.
    fn done(&mut self) -> bool {
        self.inner.done()
    }

    /// `(tree_ids, node_ids)` of up to `k` frontier nodes per tree.
    fn frontier<'py>(&mut self, py: Python<'py>, k: usize) -> (I32Array<'py>, I32Array<'py>) {
        let (t, n) = self.inner.frontier(k);
        (PyArray1::from_vec(py, t), PyArray1::from_vec(py, n))
    }

    /// Inserts children of `(tree_ids[r], parent_ids[r])`; returns `int32 [m, w]`.
    fn expand<'py>(
        &mut self,
        py: Python<'py>,
        tree_ids: PyReadonlyArray1<'py, i32>,
        parent_ids: PyReadonlyArray1<'py, i32>,
        child_tokens: PyReadonlyArray2<'py, i32>,
        child_logprobs: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let trees = slice("tree_ids", &tree_ids)?;
        let parents = slice("parent_ids", &parent_ids)?;
        let (toks, m, w) = slice2("child_tokens", &child_tokens)?;
        let (lps, _, _) = slice2("child_logprobs", &child_logprobs)?;
        let inner = &mut self.inner;
        let ids = detach(py, || inner.expand(trees, parents, toks, lps, w))?;
        to_2d(py, ids, m, w)
    }

    /// One `(parents, tokens, depth, rank, score, old_to_new)` per tree.
    fn finalize<'py>(&self, py: Python<'py>) -> Vec<FinalArrays<'py>> {
        let inner = &self.inner;
        let all = py.detach(|| inner.finalize());
        all.into_iter()
            .map(|(t, map)| final_arrays(py, t, map))
            .collect()
    }
}

/// A solved Sequoia DP (see `ferrolm.speculative.SequoiaTable`).
#[pyclass(name = "SpeculativeSequoiaTable", module = "ferrolm._native", frozen)]
pub struct SpeculativeSequoiaTable {
    inner: sequoia::SequoiaTable,
}

#[pymethods]
impl SpeculativeSequoiaTable {
    /// Largest size solved.
    #[getter]
    fn max_nodes(&self) -> usize {
        self.inner.max_nodes()
    }

    /// Largest depth solved.
    #[getter]
    fn max_depth(&self) -> usize {
        self.inner.max_depth()
    }

    /// The acceptance vector.
    fn acceptance<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.inner.acceptance().to_vec())
    }

    /// `F[n][d]`.
    fn value(&self, n: usize, d: usize) -> PyResult<f64> {
        self.inner.value(n, d).map_err(to_py)
    }

    /// `float64 [max_nodes + 1, max_depth + 1]`.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let v = self.inner.values();
        to_2d(
            py,
            v,
            self.inner.max_nodes() + 1,
            self.inner.max_depth() + 1,
        )
    }

    /// `(parents, depth, rank)` of the optimal tree.
    fn tree<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        d: usize,
    ) -> PyResult<(I32Array<'py>, I32Array<'py>, I32Array<'py>)> {
        let inner = &self.inner;
        let t = detach(py, || inner.tree(n, d))?;
        Ok((
            PyArray1::from_vec(py, t.parents),
            PyArray1::from_vec(py, t.depth),
            PyArray1::from_vec(py, t.rank),
        ))
    }
}

/// Solves the Sequoia DP.
#[pyfunction]
pub fn speculative_sequoia_dp(
    py: Python<'_>,
    p: PyReadonlyArray1<'_, f64>,
    max_nodes: usize,
    max_depth: usize,
) -> PyResult<SpeculativeSequoiaTable> {
    let p = slice("p", &p)?;
    let inner = detach(py, || sequoia::sequoia_dp(p, max_nodes, max_depth))?;
    Ok(SpeculativeSequoiaTable { inner })
}

/// Heap fast path: `(parents, depth, rank, values)`.
#[pyfunction]
pub fn speculative_sequoia_heap<'py>(
    py: Python<'py>,
    p: PyReadonlyArray1<'py, f64>,
    n: usize,
    d: usize,
) -> PyResult<(
    I32Array<'py>,
    I32Array<'py>,
    I32Array<'py>,
    Bound<'py, PyArray1<f64>>,
)> {
    let p = slice("p", &p)?;
    let (t, values) = detach(py, || sequoia::sequoia_heap(p, n, d))?;
    Ok((
        PyArray1::from_vec(py, t.parents),
        PyArray1::from_vec(py, t.depth),
        PyArray1::from_vec(py, t.rank),
        PyArray1::from_vec(py, values),
    ))
}

/// Expected accepted nodes of a tree under `p`.
#[pyfunction]
pub fn speculative_tree_value(
    py: Python<'_>,
    p: PyReadonlyArray1<'_, f64>,
    parents: PyReadonlyArray1<'_, i32>,
) -> PyResult<f64> {
    let p = slice("p", &p)?;
    let parents = slice("parents", &parents)?;
    detach(py, || sequoia::tree_value(p, parents))
}

/// Planner: `(n, d, tokens_per_step, s_per_token, speedup)`.
#[pyfunction]
#[pyo3(signature = (table, sizes, t_verify_s, t_draft_s, t_autoregressive_s=None))]
pub fn speculative_plan(
    py: Python<'_>,
    table: &SpeculativeSequoiaTable,
    sizes: PyReadonlyArray1<'_, i64>,
    t_verify_s: PyReadonlyArray1<'_, f64>,
    t_draft_s: f64,
    t_autoregressive_s: Option<f64>,
) -> PyResult<(usize, usize, f64, f64, f64)> {
    let sizes = slice("sizes", &sizes)?;
    let tv = slice("t_verify_s", &t_verify_s)?;
    let sizes: Vec<usize> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            usize::try_from(s).map_err(|_| {
                PyValueError::new_err(format!("`sizes` must be >= 1, got sizes[{i}] = {s}"))
            })
        })
        .collect::<PyResult<_>>()?;
    let inner = &table.inner;
    let p = detach(py, || {
        sequoia::plan(inner, &sizes, tv, t_draft_s, t_autoregressive_s)
    })?;
    Ok((p.n, p.d, p.tokens_per_step, p.s_per_token, p.speedup))
}

/// Acceptance vector from observed accepted ranks (-1 = none accepted).
#[pyfunction]
pub fn speculative_acceptance_from_ranks<'py>(
    py: Python<'py>,
    accepted_ranks: PyReadonlyArray1<'py, i64>,
    width: usize,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let r = slice("accepted_ranks", &accepted_ranks)?;
    let p = detach(py, || sequoia::acceptance_from_ranks(r, width))?;
    Ok(PyArray1::from_vec(py, p))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(speculative_validate_parents, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_validate_batch, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_depths, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_ranks, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_ancestor_mask, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_ancestor_mask_batch, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_position_ids, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_walk, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_walk_batch, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_children_table, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_kv_compaction, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_remap_compaction, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_leaf_paths, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_sequoia_dp, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_sequoia_heap, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_tree_value, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_plan, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_acceptance_from_ranks, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_children_table_batch, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_children_by_rank, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_ancestors, m)?)?;
    m.add_function(wrap_pyfunction!(speculative_restrict, m)?)?;
    m.add_class::<SpeculativeTreeBuilder>()?;
    m.add_class::<SpeculativeBatchTreeBuilder>()?;
    m.add_class::<SpeculativeSequoiaTable>()?;
    Ok(())
}

/// Children of a CSR batch, `int32 [total, width]` with global ids, padded with -1.
#[pyfunction]
pub fn speculative_children_table_batch<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    offsets: PyReadonlyArray1<'py, i64>,
) -> PyResult<Bound<'py, PyArray2<i32>>> {
    let parents = slice("parents", &parents)?;
    let offsets = slice("offsets", &offsets)?;
    let (table, width) = detach(py, || tree::children_table_batch(parents, offsets))?;
    to_2d(py, table, parents.len(), width)
}

/// Children ordered by rank as CSR `(offsets, children)`.
#[pyfunction]
pub fn speculative_children_by_rank<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    rank: PyReadonlyArray1<'py, i32>,
) -> PyResult<(I64Array<'py>, I32Array<'py>)> {
    let parents = slice("parents", &parents)?;
    let rank = slice("rank", &rank)?;
    let (o, c) = detach(py, || tree::children_by_rank(parents, rank))?;
    Ok((PyArray1::from_vec(py, o), PyArray1::from_vec(py, c)))
}

/// Proper ancestors of `nodes`, nearest first, as CSR `(offsets, ancestors)`.
#[pyfunction]
pub fn speculative_ancestors<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    nodes: PyReadonlyArray1<'py, i32>,
) -> PyResult<(I64Array<'py>, I32Array<'py>)> {
    let parents = slice("parents", &parents)?;
    let nodes = slice("nodes", &nodes)?;
    let (o, a) = detach(py, || tree::ancestors(parents, nodes))?;
    Ok((PyArray1::from_vec(py, o), PyArray1::from_vec(py, a)))
}

/// `(old, parents)` of the subtree closed under ancestors of the kept nodes.
#[pyfunction]
pub fn speculative_restrict<'py>(
    py: Python<'py>,
    parents: PyReadonlyArray1<'py, i32>,
    keep: PyReadonlyArray1<'py, bool>,
) -> PyResult<(I32Array<'py>, I32Array<'py>)> {
    let parents = slice("parents", &parents)?;
    let keep = slice("keep", &keep)?;
    let (old, sub) = detach(py, || tree::restrict(parents, keep))?;
    Ok((PyArray1::from_vec(py, old), PyArray1::from_vec(py, sub)))
}
