//! Every conversion between NumPy arrays and Rust slices or vectors: borrowing contiguous
//! views, naming the argument in each error, and building result arrays.

use ferrolm_core::Error;
use numpy::ndarray::Dimension;
use numpy::prelude::*;
use numpy::{Element, PyArray1, PyArray2, PyReadonlyArray, PyReadonlyArray2, PyReadwriteArray};
use pyo3::prelude::*;

use crate::errors::to_py;

/// The one error for a strided array where a contiguous one is needed.
fn not_contiguous(arg: &str) -> PyErr {
    to_py(Error::value(
        arg,
        "contiguous",
        "a strided array; call .contiguous() or np.ascontiguousarray",
    ))
}

/// A contiguous (C order) view of an array of any rank, or a `ValueError` naming `arg`.
pub fn slice<'a, T: Element, D: Dimension>(
    arg: &str,
    array: &'a PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|_| not_contiguous(arg))
}

/// A contiguous (C order) mutable view of an array of any rank, or a `ValueError` naming `arg`.
pub fn slice_mut<'a, T: Element, D: Dimension>(
    arg: &str,
    array: &'a mut PyReadwriteArray<'_, T, D>,
) -> PyResult<&'a mut [T]> {
    array.as_slice_mut().map_err(|_| not_contiguous(arg))
}

/// A contiguous 2-D array as `(row-major data, rows, cols)`.
pub fn slice2<'a, T: Element>(
    arg: &str,
    array: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<(&'a [T], usize, usize)> {
    let shape = array.shape();
    let (rows, cols) = (shape[0], shape[1]);
    Ok((slice(arg, array)?, rows, cols))
}

/// `values` (row-major, `rows * cols` long) as a NumPy `[rows, cols]` array, without a copy.
pub fn to_2d<T: Element>(
    py: Python<'_>,
    values: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    PyArray1::from_vec(py, values).reshape([rows, cols])
}

/// A bool buffer seen as the bytes the core writes masks into.
pub fn bool_bytes(values: &mut [bool]) -> &mut [u8] {
    // SAFETY: bool and u8 have the same size and alignment, and the core only writes 0 or 1,
    // the two valid bool bit patterns.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), values.len()) }
}

/// A Python int as `usize`, or a `ValueError` (not pyo3's `OverflowError`) when negative; any
/// further range check is the core's.
pub fn non_negative(arg: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| to_py(Error::value(arg, "non-negative", value)))
}

/// Signed sizes or indices from NumPy as `usize`, or a `ValueError` naming the first negative.
pub fn unsigned(arg: &str, values: &[i64]) -> PyResult<Vec<usize>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            usize::try_from(v).map_err(|_| {
                to_py(Error::value(
                    arg,
                    "non-negative",
                    format!("{arg}[{i}] = {v}"),
                ))
            })
        })
        .collect()
}
