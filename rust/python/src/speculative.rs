//! Bindings of `ferrolm_core::speculative` (Python: `ferrolm._native.speculative`, wrapped by
//! `ferrolm.speculative`).

use pyo3::prelude::*;

/// Draft trees, verification walks and Sequoia (wrapped by `ferrolm.speculative`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod speculative {
    use ferrolm_core::speculative::{self as core, builder, sequoia, tree, BuilderConfig};
    use numpy::{PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
    use pyo3::prelude::*;

    use crate::arrays::{int_arg, non_negative, opt_int_arg, slice, slice2, to_1d_pair, to_2d};
    use crate::errors::{detach, detach_cancellable};

    type I32Array<'py> = Bound<'py, PyArray1<i32>>;
    type I64Array<'py> = Bound<'py, PyArray1<i64>>;

    /// Raises `ValueError` unless `parents` is a valid tree.
    #[pyfunction]
    fn validate_parents(py: Python<'_>, parents: PyReadonlyArray1<'_, i32>) -> PyResult<()> {
        let parents = slice("parents", &parents)?;
        detach(py, || tree::validate_parents(parents))
    }

    /// Raises `ValueError` unless `parents` + `offsets` is a valid CSR batch of trees.
    #[pyfunction]
    fn validate_batch(
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
    fn depths<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
    ) -> PyResult<I32Array<'py>> {
        let parents = slice("parents", &parents)?;
        let d = detach(py, || tree::depths(parents))?;
        Ok(PyArray1::from_vec(py, d))
    }

    /// Rank of every node among its siblings.
    #[pyfunction]
    fn ranks<'py>(py: Python<'py>, parents: PyReadonlyArray1<'py, i32>) -> PyResult<I32Array<'py>> {
        let parents = slice("parents", &parents)?;
        let r = detach(py, || tree::ranks(parents))?;
        Ok(PyArray1::from_vec(py, r))
    }

    /// Ancestor mask `bool [n, n]`.
    #[pyfunction]
    fn ancestor_mask<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
    ) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let parents = slice("parents", &parents)?;
        let n = parents.len();
        // The core validates the tree before the fallible n * n allocation.
        let mask = detach(py, || tree::ancestor_mask(parents))?;
        to_2d(py, mask, n, n)
    }

    /// Ancestor masks of a CSR batch, `bool [B, m, m]` padded with False.
    #[pyfunction]
    fn ancestor_mask_batch<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
        offsets: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray3<bool>>> {
        let parents = slice("parents", &parents)?;
        let offsets = slice("offsets", &offsets)?;
        let (mask, b, m) = detach(py, || tree::ancestor_mask_batch(parents, offsets))?;
        PyArray1::from_vec(py, mask).reshape([b, m, m])
    }

    /// Position ids `past_len + depth` (int64).
    #[pyfunction]
    fn position_ids<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
        past_len: &Bound<'py, PyAny>,
    ) -> PyResult<I64Array<'py>> {
        let parents = slice("parents", &parents)?;
        let past_len: i64 = int_arg("past_len", past_len)?;
        let v = detach(py, || tree::position_ids(parents, past_len))?;
        Ok(PyArray1::from_vec(py, v))
    }

    /// `(path, bonus)` of one verification walk.
    #[pyfunction]
    fn walk<'py>(
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
    fn walk_batch<'py>(
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
    fn children_table<'py>(
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
    fn kv_compaction<'py>(
        py: Python<'py>,
        path: PyReadonlyArray1<'py, i32>,
        past_len: &Bound<'py, PyAny>,
    ) -> PyResult<(I64Array<'py>, I64Array<'py>)> {
        let path = slice("path", &path)?;
        let past_len: i64 = int_arg("past_len", past_len)?;
        Ok(to_1d_pair(
            py,
            detach(py, || tree::kv_compaction(path, past_len))?,
        ))
    }

    /// `(src, dst)` cache positions that compact a cache laid out by old ids to the new tree.
    #[pyfunction]
    fn remap_compaction<'py>(
        py: Python<'py>,
        old_to_new: PyReadonlyArray1<'py, i32>,
        past_len: &Bound<'py, PyAny>,
    ) -> PyResult<(I64Array<'py>, I64Array<'py>)> {
        let map = slice("old_to_new", &old_to_new)?;
        let past_len: i64 = int_arg("past_len", past_len)?;
        Ok(to_1d_pair(
            py,
            detach(py, || tree::remap_compaction(map, past_len))?,
        ))
    }

    /// Root-to-leaf node ids, `int32 [leaves, max_depth + 1]` padded with -1.
    #[pyfunction]
    fn leaf_paths<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let parents = slice("parents", &parents)?;
        let (rows, width) = detach(py, || tree::leaf_paths(parents))?;
        let leaves = rows.len() / width;
        to_2d(py, rows, leaves, width)
    }

    /// Children of a CSR batch, `int32 [total, width]` with global ids, padded with -1.
    #[pyfunction]
    fn children_table_batch<'py>(
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
    fn children_by_rank<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
        rank: PyReadonlyArray1<'py, i32>,
    ) -> PyResult<(I64Array<'py>, I32Array<'py>)> {
        let parents = slice("parents", &parents)?;
        let rank = slice("rank", &rank)?;
        Ok(to_1d_pair(
            py,
            detach(py, || tree::children_by_rank(parents, rank))?,
        ))
    }

    /// Proper ancestors of `nodes`, nearest first, as CSR `(offsets, ancestors)`.
    #[pyfunction]
    fn ancestors<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
        nodes: PyReadonlyArray1<'py, i32>,
    ) -> PyResult<(I64Array<'py>, I32Array<'py>)> {
        let parents = slice("parents", &parents)?;
        let nodes = slice("nodes", &nodes)?;
        Ok(to_1d_pair(
            py,
            detach(py, || tree::ancestors(parents, nodes))?,
        ))
    }

    /// `(old, parents)` of the subtree closed under ancestors of the kept nodes.
    #[pyfunction]
    fn restrict<'py>(
        py: Python<'py>,
        parents: PyReadonlyArray1<'py, i32>,
        keep: PyReadonlyArray1<'py, bool>,
    ) -> PyResult<(I32Array<'py>, I32Array<'py>)> {
        let parents = slice("parents", &parents)?;
        let keep = slice("keep", &keep)?;
        Ok(to_1d_pair(
            py,
            detach(py, || tree::restrict(parents, keep))?,
        ))
    }

    type FinalArrays<'py> = (
        I32Array<'py>,
        I32Array<'py>,
        I32Array<'py>,
        I32Array<'py>,
        Bound<'py, PyArray1<f32>>,
        I32Array<'py>,
    );

    fn final_arrays<'py>(
        py: Python<'py>,
        (t, map): (builder::FinalTree, Vec<i32>),
    ) -> FinalArrays<'py> {
        (
            PyArray1::from_vec(py, t.parents),
            PyArray1::from_vec(py, t.tokens),
            PyArray1::from_vec(py, t.depth),
            PyArray1::from_vec(py, t.rank),
            PyArray1::from_vec(py, t.score),
            PyArray1::from_vec(py, map),
        )
    }

    /// The builder limits as the core takes them; the core checks their ranges (one wording).
    /// `max_depth` and `max_width` default to 16 and 8 (`None` in the signature, so that every
    /// integer goes through `int_arg`).
    fn config(
        budget: &Bound<'_, PyAny>,
        max_depth: Option<&Bound<'_, PyAny>>,
        max_width: Option<&Bound<'_, PyAny>>,
        log_decay: f32,
        min_logprob: f32,
    ) -> PyResult<BuilderConfig> {
        let limit = |arg: &str, v: &Bound<'_, PyAny>| non_negative(arg, int_arg(arg, v)?);
        let or = |arg: &str, v: Option<&Bound<'_, PyAny>>, default: usize| {
            opt_int_arg::<i64>(arg, v)?.map_or(Ok(default), |v| non_negative(arg, v))
        };
        Ok(BuilderConfig {
            budget: limit("budget", budget)?,
            max_depth: or("max_depth", max_depth, 16)?,
            max_width: or("max_width", max_width, 8)?,
            log_decay,
            min_logprob,
        })
    }

    /// SpecExec best-first tree growth (see `ferrolm.speculative.TreeBuilder`).
    #[pyclass(name = "TreeBuilder")]
    struct PyTreeBuilder {
        inner: core::TreeBuilder,
    }

    #[pymethods]
    impl PyTreeBuilder {
        #[new]
        #[pyo3(signature = (root_token, budget, max_depth=None, max_width=None, log_decay=0.0, min_logprob=f32::NEG_INFINITY))]
        fn new(
            py: Python<'_>,
            root_token: &Bound<'_, PyAny>,
            budget: &Bound<'_, PyAny>,
            max_depth: Option<&Bound<'_, PyAny>>,
            max_width: Option<&Bound<'_, PyAny>>,
            log_decay: f32,
            min_logprob: f32,
        ) -> PyResult<Self> {
            let root_token: i32 = int_arg("root_token", root_token)?;
            let cfg = config(budget, max_depth, max_width, log_decay, min_logprob)?;
            let inner = detach(py, || core::TreeBuilder::new(root_token, cfg))?;
            Ok(PyTreeBuilder { inner })
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
        fn done(&mut self, py: Python<'_>) -> PyResult<bool> {
            let inner = &mut self.inner;
            detach(py, || Ok(inner.done()))
        }

        /// Up to `k` best expandable nodes.
        fn frontier<'py>(
            &mut self,
            py: Python<'py>,
            k: &Bound<'py, PyAny>,
        ) -> PyResult<I32Array<'py>> {
            let k: usize = int_arg("k", k)?;
            let inner = &mut self.inner;
            let ids = detach(py, || Ok(inner.frontier(k)))?;
            Ok(PyArray1::from_vec(py, ids))
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
            let lps = slice("child_logprobs", &child_logprobs)?;
            let inner = &mut self.inner;
            let ids = detach(py, || inner.expand(parents, toks, lps, w))?;
            to_2d(py, ids, m, w)
        }

        /// `(parents, tokens, depth, rank, score, old_to_new)`.
        fn finalize<'py>(&self, py: Python<'py>) -> PyResult<FinalArrays<'py>> {
            let inner = &self.inner;
            let finished = detach(py, || Ok(inner.finalize()))?;
            Ok(final_arrays(py, finished))
        }
    }

    /// `B` tree builders driven together (see `ferrolm.speculative.BatchTreeBuilder`).
    #[pyclass(name = "BatchTreeBuilder")]
    struct PyBatchTreeBuilder {
        inner: core::BatchTreeBuilder,
    }

    #[pymethods]
    impl PyBatchTreeBuilder {
        #[new]
        #[pyo3(signature = (root_tokens, budget, max_depth=None, max_width=None, log_decay=0.0, min_logprob=f32::NEG_INFINITY))]
        fn new(
            py: Python<'_>,
            root_tokens: PyReadonlyArray1<'_, i32>,
            budget: &Bound<'_, PyAny>,
            max_depth: Option<&Bound<'_, PyAny>>,
            max_width: Option<&Bound<'_, PyAny>>,
            log_decay: f32,
            min_logprob: f32,
        ) -> PyResult<Self> {
            let cfg = config(budget, max_depth, max_width, log_decay, min_logprob)?;
            let roots = slice("root_tokens", &root_tokens)?;
            let inner = detach(py, || core::BatchTreeBuilder::new(roots, cfg))?;
            Ok(PyBatchTreeBuilder { inner })
        }

        /// Kept nodes per tree.
        #[getter]
        fn sizes(&self) -> Vec<usize> {
            self.inner.trees().iter().map(|t| t.size()).collect()
        }

        /// Whether every tree is done.
        fn done(&mut self, py: Python<'_>) -> PyResult<bool> {
            let inner = &mut self.inner;
            detach(py, || Ok(inner.done()))
        }

        /// `(tree_ids, node_ids)` of up to `k` frontier nodes per tree.
        fn frontier<'py>(
            &mut self,
            py: Python<'py>,
            k: &Bound<'py, PyAny>,
        ) -> PyResult<(I32Array<'py>, I32Array<'py>)> {
            let k: usize = int_arg("k", k)?;
            let inner = &mut self.inner;
            Ok(to_1d_pair(py, detach(py, || Ok(inner.frontier(k)))?))
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
            let lps = slice("child_logprobs", &child_logprobs)?;
            let inner = &mut self.inner;
            let ids = detach(py, || inner.expand(trees, parents, toks, lps, w))?;
            to_2d(py, ids, m, w)
        }

        /// One `(parents, tokens, depth, rank, score, old_to_new)` per tree.
        fn finalize<'py>(&self, py: Python<'py>) -> PyResult<Vec<FinalArrays<'py>>> {
            let inner = &self.inner;
            let all = detach(py, || Ok(inner.finalize()))?;
            Ok(all.into_iter().map(|f| final_arrays(py, f)).collect())
        }
    }

    /// A solved Sequoia DP (see `ferrolm.speculative.SequoiaTable`).
    #[pyclass(name = "SequoiaTable", frozen)]
    pub(crate) struct PySequoiaTable {
        pub(crate) inner: sequoia::SequoiaTable,
    }

    #[pymethods]
    impl PySequoiaTable {
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
            PyArray1::from_slice(py, self.inner.acceptance())
        }

        /// `F[n][d]`.
        fn value(
            &self,
            py: Python<'_>,
            n: &Bound<'_, PyAny>,
            d: &Bound<'_, PyAny>,
        ) -> PyResult<f64> {
            let (n, d): (usize, usize) = (int_arg("n", n)?, int_arg("d", d)?);
            let inner = &self.inner;
            detach(py, || inner.value(n, d))
        }

        /// `float64 [max_nodes + 1, max_depth + 1]`.
        fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
            let inner = &self.inner;
            let v = detach(py, || Ok(inner.values()))?;
            to_2d(py, v, inner.max_nodes() + 1, inner.max_depth() + 1)
        }

        /// `(parents, depth, rank)` of the optimal tree.
        fn tree<'py>(
            &self,
            py: Python<'py>,
            n: &Bound<'py, PyAny>,
            d: &Bound<'py, PyAny>,
        ) -> PyResult<(I32Array<'py>, I32Array<'py>, I32Array<'py>)> {
            let (n, d): (usize, usize) = (int_arg("n", n)?, int_arg("d", d)?);
            let inner = &self.inner;
            let t = detach(py, || inner.tree(n, d))?;
            Ok((
                PyArray1::from_vec(py, t.parents),
                PyArray1::from_vec(py, t.depth),
                PyArray1::from_vec(py, t.rank),
            ))
        }
    }

    /// Solves the Sequoia DP; refuses more than `max_work` cell steps, stops on Ctrl-C.
    #[pyfunction]
    #[pyo3(signature = (p, max_nodes, max_depth, max_work=None))]
    fn sequoia_dp(
        py: Python<'_>,
        p: PyReadonlyArray1<'_, f64>,
        max_nodes: &Bound<'_, PyAny>,
        max_depth: &Bound<'_, PyAny>,
        max_work: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PySequoiaTable> {
        let p = slice("p", &p)?;
        let max_nodes: usize = int_arg("max_nodes", max_nodes)?;
        let max_depth: usize = int_arg("max_depth", max_depth)?;
        let max_work = opt_int_arg("max_work", max_work)?.unwrap_or(sequoia::DEFAULT_MAX_WORK);
        let inner = detach_cancellable(py, "solving the Sequoia DP", |cancel| {
            sequoia::sequoia_dp_bounded(p, max_nodes, max_depth, max_work, cancel)
        })?;
        Ok(PySequoiaTable { inner })
    }

    /// Heap fast path: `(parents, depth, rank, values)`.
    #[pyfunction]
    #[allow(clippy::type_complexity)]
    fn sequoia_heap<'py>(
        py: Python<'py>,
        p: PyReadonlyArray1<'py, f64>,
        n: &Bound<'py, PyAny>,
        d: &Bound<'py, PyAny>,
    ) -> PyResult<(
        I32Array<'py>,
        I32Array<'py>,
        I32Array<'py>,
        Bound<'py, PyArray1<f64>>,
    )> {
        let p = slice("p", &p)?;
        let (n, d): (usize, usize) = (int_arg("n", n)?, int_arg("d", d)?);
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
    fn tree_value(
        py: Python<'_>,
        p: PyReadonlyArray1<'_, f64>,
        parents: PyReadonlyArray1<'_, i32>,
    ) -> PyResult<f64> {
        let p = slice("p", &p)?;
        let parents = slice("parents", &parents)?;
        detach(py, || sequoia::tree_value(p, parents))
    }

    #[pymodule_export]
    use crate::sequoia_plan::{draft_level_widths, plan, plan_costed};

    /// Acceptance vector from observed accepted ranks (-1 = none accepted).
    #[pyfunction]
    fn acceptance_from_ranks<'py>(
        py: Python<'py>,
        accepted_ranks: PyReadonlyArray1<'py, i64>,
        width: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let r = slice("accepted_ranks", &accepted_ranks)?;
        let width: usize = int_arg("width", width)?;
        let p = detach(py, || sequoia::acceptance_from_ranks(r, width))?;
        Ok(PyArray1::from_vec(py, p))
    }
}
