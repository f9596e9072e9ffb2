//! `ferrolm._native`: the compiled half of ferrolm.
//!
//! One file per Python submodule, each a declarative `#[pymodule]` named after the package it
//! serves (`ferrolm._native.speculative` backs `ferrolm.speculative`, ...), so every
//! `#[pyfunction]`/`#[pyclass]` written inside is exported without a hand-kept list. Every
//! binding follows the same four steps: borrow or extract the arguments (`arrays`), release the
//! GIL around the core call under the panic guard (`errors::detach`), map the error
//! (`errors::to_py`), convert the result. No algorithm lives here.

// Each `foo.rs` holds the one Python submodule `foo`, so the module repeats its file's name.
#![allow(clippy::module_inception)]

use pyo3::prelude::*;

mod arrays;
mod comm;
mod cuda;
mod errors;
mod linalg;
mod prune;
mod sequoia_plan;
mod speculative;
mod threads;
mod tokens;

/// The compiled half of ferrolm: one submodule per Python package.
#[pymodule]
mod _native {
    use pyo3::prelude::*;
    use pyo3::types::PyModule;

    #[pymodule_export]
    use crate::comm::comm;
    #[pymodule_export]
    use crate::cuda::cuda;
    #[pymodule_export]
    use crate::errors::{_debug_panic, _debug_panic_next, _debug_raise};
    #[pymodule_export]
    use crate::linalg::linalg;
    #[pymodule_export]
    use crate::prune::prune;
    #[pymodule_export]
    use crate::speculative::speculative;
    #[pymodule_export]
    use crate::threads::_debug_pool_threads;
    #[pymodule_export]
    use crate::tokens::tokens;

    /// The largest single buffer, in bytes, that a native call sized by its input may allocate
    /// (16 GiB unless `set_alloc_limit` changed it). Larger requests raise `MemoryError`.
    #[pyfunction]
    fn alloc_limit() -> u64 {
        ferrolm_core::alloc_limit()
    }

    /// Sets the allocation limit (see `alloc_limit`) to `bytes` and returns the previous one.
    /// Raise it to ask for outputs larger than 16 GiB on a machine that has the memory; lower it
    /// to make oversized requests fail fast.
    #[pyfunction]
    fn set_alloc_limit(bytes: &Bound<'_, PyAny>) -> PyResult<u64> {
        let bytes: u64 = crate::arrays::int_arg("bytes", bytes)?;
        Ok(ferrolm_core::set_alloc_limit(bytes))
    }

    /// The number of threads native calls use: the count given to `set_num_threads`, else
    /// `torch.get_num_threads()` when torch is imported, else `OMP_NUM_THREADS`, else
    /// `RAYON_NUM_THREADS`, else the number of cores.
    #[pyfunction]
    fn get_num_threads(py: Python<'_>) -> usize {
        crate::threads::wanted(py)
    }

    /// Fixes the number of threads native calls use to `n` (1 to 4096); `None` returns to
    /// following torch and the environment (see `get_num_threads`).
    #[pyfunction]
    #[pyo3(signature = (n))]
    fn set_num_threads(n: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        crate::threads::set_explicit(thread_count(n)?);
        Ok(())
    }

    /// Fixes the number of threads of the native calls made from the calling thread alone
    /// (`None` clears it): a background thread working beside the main one takes `n` cores
    /// instead of all of them. It comes before every rule of `get_num_threads`.
    #[pyfunction]
    #[pyo3(signature = (n))]
    fn set_thread_num_threads(n: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        crate::threads::set_local(thread_count(n)?);
        Ok(())
    }

    fn thread_count(n: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
        // i64, not usize: a negative count gets the same message as any other bad count.
        let n: Option<i64> = crate::arrays::opt_int_arg("n", n)?;
        let max = crate::threads::MAX_THREADS;
        match n.map(usize::try_from) {
            None => Ok(None),
            Some(Ok(n)) if (1..=max).contains(&n) => Ok(Some(n)),
            Some(_) => {
                let expected = format!("a thread count in [1, {max}] or None");
                let got = n.map_or_else(String::new, |n| n.to_string());
                Err(crate::errors::to_py(ferrolm_core::Error::value(
                    "n", expected, got,
                )))
            }
        }
    }

    /// The package version (`ferrolm.__version__`); Python's dunder name, hence lower case.
    #[allow(non_upper_case_globals)]
    #[pymodule_export]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    /// Registers every submodule in `sys.modules` under its dotted name, so that
    /// `import ferrolm._native.speculative` (and stubtest) find it: an extension module is not a
    /// package, and Python would otherwise look for `_native/speculative` on disk.
    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let modules = m.py().import("sys")?.getattr("modules")?;
        for (_, value) in m.dict().iter() {
            if let Ok(sub) = value.cast::<PyModule>() {
                modules.set_item(sub.name()?, sub)?;
            }
        }
        Ok(())
    }
}
