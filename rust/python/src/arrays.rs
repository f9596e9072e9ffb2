//! Borrowing NumPy arrays as contiguous slices, with errors that name the argument.

use numpy::{Element, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A contiguous view of a 1-D array, or a `ValueError` naming `arg`.
pub fn slice<'a, T: Element>(arg: &str, array: &'a PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|_| {
        PyValueError::new_err(format!("`{arg}` must be contiguous, got a strided array; call .contiguous() or np.ascontiguousarray"))
    })
}

/// A contiguous mutable view of a 1-D array, or a `ValueError` naming `arg`.
pub fn slice_mut<'a, T: Element>(
    arg: &str,
    array: &'a mut PyReadwriteArray1<'_, T>,
) -> PyResult<&'a mut [T]> {
    array.as_slice_mut().map_err(|_| {
        PyValueError::new_err(format!("`{arg}` must be contiguous, got a strided array; call .contiguous() or np.ascontiguousarray"))
    })
}
