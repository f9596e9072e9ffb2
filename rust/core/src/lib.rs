//! ferrolm-core: the algorithms behind ferrolm, in pure Rust.
//!
//! Nothing here knows about Python or CUDA. Functions take slices and plain structs and
//! return [`Result`]; the `ferrolm-python` crate borrows NumPy/torch buffers, releases the
//! GIL and calls into this crate, and maps [`Error`] to Python exceptions in one place.
#![deny(missing_docs)]

mod buffer;
pub mod cancel;
pub mod comm;
pub mod error;
pub mod linalg;
pub mod prune;
pub mod speculative;
pub mod tokens;

pub use buffer::{alloc_limit, set_alloc_limit, try_vec, try_with_capacity, DEFAULT_ALLOC_LIMIT};
pub use cancel::Cancel;
pub use error::{Error, Result};
