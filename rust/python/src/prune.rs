//! Bindings of `ferrolm_core::prune` (Python: `ferrolm._native.prune`, wrapped by
//! `ferrolm.prune`).

use pyo3::prelude::*;

/// DivPrune visual-token selection (wrapped by `ferrolm.prune`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod prune {
    use ferrolm_core::prune::{self as core, FirstPick, Method, Options, Order};
    use ferrolm_core::Error;
    use ferrolm_cuda::divprune::{divprune_f32, Buffers};
    use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray3, PyUntypedArrayMethods};
    use pyo3::prelude::*;

    use crate::arrays::{int_arg, opt_int_arg, slice, to_2d, unsigned};
    use crate::errors::{detach, to_py};

    fn options(
        first: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        greedy_order: bool,
        method: &str,
    ) -> PyResult<Options> {
        let first: Option<usize> = opt_int_arg("first", first)?;
        let seed: Option<u64> = opt_int_arg("seed", seed)?;
        let first = match (first, seed) {
            (Some(_), Some(_)) => {
                return Err(to_py(Error::value(
                    "first",
                    "None when `seed` is given (they are two ways to choose the first token)",
                    "both",
                )))
            }
            (Some(i), None) => FirstPick::Index(i),
            (None, Some(s)) => FirstPick::Seed(s),
            (None, None) => FirstPick::MostIsolated,
        };
        let method: Method = method.parse().map_err(to_py)?;
        let order = if greedy_order {
            Order::Greedy
        } else {
            Order::Sorted
        };
        Ok(Options {
            first,
            order,
            method,
        })
    }

    /// Keeps `k` tokens of each image of `features` (`[batch, n, d]` float32, C-contiguous);
    /// returns `(indices int64 [batch, k], objective float32 [batch])`.
    #[pyfunction]
    #[pyo3(signature = (features, k, *, first=None, seed=None, greedy_order=false, method="auto"))]
    #[allow(clippy::type_complexity)]
    fn divprune<'py>(
        py: Python<'py>,
        features: PyReadonlyArray3<'py, f32>,
        k: &Bound<'py, PyAny>,
        first: Option<&Bound<'py, PyAny>>,
        seed: Option<&Bound<'py, PyAny>>,
        greedy_order: bool,
        method: &str,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray1<f32>>)> {
        let k: usize = int_arg("k", k)?;
        let opts = options(first, seed, greedy_order, method)?;
        let shape = features.shape();
        let (batch, n, d) = (shape[0], shape[1], shape[2]);
        let x = slice("features", &features)?;
        let (indices, objective) = detach(py, || {
            let selections = core::select_batch(x, batch, n, d, k, &opts)?;
            let mut indices = Vec::with_capacity(batch * k);
            let mut objective = Vec::with_capacity(batch);
            for s in selections {
                indices.extend(s.indices.iter().map(|&i| i as i64));
                objective.push(s.objective);
            }
            Ok((indices, objective))
        })?;
        Ok((
            to_2d(py, indices, batch, k)?,
            PyArray1::from_vec(py, objective),
        ))
    }

    /// The minimum cosine distance between two of the tokens `indices` of `features`
    /// (`[n, d]` float32 given as `[1, n, d]`); `inf` for fewer than two.
    #[pyfunction]
    fn objective(
        py: Python<'_>,
        features: PyReadonlyArray3<'_, f32>,
        indices: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<f32> {
        let shape = features.shape();
        let (n, d) = (shape[1], shape[2]);
        if shape[0] != 1 {
            return Err(to_py(Error::value(
                "features",
                "one image",
                format!("{} images", shape[0]),
            )));
        }
        let x = slice("features", &features)?;
        let idx = slice("indices", &indices)?;
        detach(py, || core::objective(x, n, d, &unsigned("indices", idx)?))
    }

    /// Queues the CUDA selection (`ferrolm_cuda::divprune`) on `stream` of `device`; pointers
    /// are device addresses of tensors the Python layer allocated and checked.
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn cuda_divprune_f32(
        py: Python<'_>,
        device: usize,
        stream: usize,
        dist: u64,
        nn: u64,
        first: u64,
        mind: u64,
        out: u64,
        objective: u64,
        batch: u32,
        n: u32,
        k: u32,
        needs_nearest: bool,
    ) -> PyResult<()> {
        let launch = ferrolm_cuda::Launch { device, stream };
        let buffers = Buffers {
            dist,
            nn,
            first,
            mind,
            out,
            objective,
        };
        detach(py, || {
            divprune_f32(launch, buffers, batch, n, k, needs_nearest)
        })
    }

    /// The first token the CPU selection picks in each of `batch` images of `n` tokens when
    /// seeded with `seed` (int64 `[batch]`); the CUDA path launches with these.
    #[pyfunction]
    fn seeded_first_picks<'py>(
        py: Python<'py>,
        seed: &Bound<'py, PyAny>,
        batch: &Bound<'py, PyAny>,
        n: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let seed: u64 = int_arg("seed", seed)?;
        let (batch, n): (usize, usize) = (int_arg("batch", batch)?, int_arg("n", n)?);
        let picks = detach(py, || {
            let picks = core::seeded_first_picks(seed, batch, n)?;
            Ok(picks.into_iter().map(|i| i as i64).collect::<Vec<i64>>())
        })?;
        Ok(PyArray1::from_vec(py, picks))
    }

    /// Whether the CPU Gram algorithm runs on Intel AMX tiles in this process.
    #[pyfunction]
    fn amx_enabled() -> bool {
        core::amx_enabled()
    }
}
