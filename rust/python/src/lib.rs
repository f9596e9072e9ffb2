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
mod prune;
mod speculative;
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
    use crate::prune::prune;
    #[pymodule_export]
    use crate::speculative::speculative;
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
