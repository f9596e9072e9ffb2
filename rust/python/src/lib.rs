//! `ferrolm._native`: the compiled half of ferrolm.
//!
//! One file per Python submodule. Every binding follows the same four steps: borrow or
//! extract the arguments, release the GIL around the core call (`errors::detach`), map the
//! error, convert the result. No algorithm lives here.

use pyo3::prelude::*;

mod arrays;
mod comm;
mod cuda;
mod errors;
mod prune;
mod speculative;
mod tokens;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    cuda::register(m)?;
    comm::register(m)?;
    speculative::register(m)?;
    prune::register(m)?;
    tokens::register(m)?;
    Ok(())
}
