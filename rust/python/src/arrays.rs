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

/// Two result vectors, such as a core CSR `(offsets, values)` or `(src, dst)` positions, as
/// two NumPy arrays, without a copy.
pub fn to_1d_pair<A: Element, B: Element>(
    py: Python<'_>,
    (a, b): (Vec<A>, Vec<B>),
) -> (Bound<'_, PyArray1<A>>, Bound<'_, PyArray1<B>>) {
    (PyArray1::from_vec(py, a), PyArray1::from_vec(py, b))
}

/// An integer type a binding takes from Python, with its accepted range.
pub trait IntArg: TryFrom<i128> + Copy {
    /// The smallest accepted value.
    const LO: i128;
    /// The largest accepted value.
    const HI: i128;
}

macro_rules! int_arg_types {
    ($($t:ty),*) => {$(
        impl IntArg for $t {
            const LO: i128 = <$t>::MIN as i128;
            const HI: i128 = <$t>::MAX as i128;
        }
    )*};
}
int_arg_types!(i32, u32, i64, u64, usize);

/// A Python integer argument as `T`: a `TypeError` for a non-integer and a `ValueError` for one
/// out of `T`'s range, both naming `arg`, the accepted range and the value. (pyo3's own
/// conversion raises a bare `OverflowError` that names neither.)
pub fn int_arg<T: IntArg>(arg: &str, value: &Bound<'_, PyAny>) -> PyResult<T> {
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(to_py(Error::dtype(arg, "an int", "a bool")));
    }
    let Ok(index) = value.call_method0("__index__") else {
        let kind = value.get_type().name()?;
        return Err(to_py(Error::dtype(arg, "an int", kind)));
    };
    let out_of_range = || {
        let shown = index
            .str()
            .map_or_else(|_| "an integer".to_owned(), |s| s.to_string());
        to_py(Error::value(
            arg,
            format!("an integer in [{}, {}]", T::LO, T::HI),
            shown,
        ))
    };
    let wide: i128 = index.extract().map_err(|_| out_of_range())?;
    T::try_from(wide).map_err(|_| out_of_range())
}

/// [`int_arg`] for an optional argument (`None` passes through).
pub fn opt_int_arg<T: IntArg>(arg: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<T>> {
    match value {
        Some(v) if !v.is_none() => int_arg(arg, v).map(Some),
        _ => Ok(None),
    }
}

/// A Python int as `usize`, or a `ValueError` (not pyo3's `OverflowError`) when negative; any
/// further range check is the core's.
pub fn non_negative(arg: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| to_py(Error::value(arg, "non-negative", value)))
}

/// Signed sizes or indices from NumPy as `usize`, or a `ValueError` naming the first negative;
/// allocated fallibly, so it can run inside the panic guard.
pub fn unsigned(arg: &str, values: &[i64]) -> ferrolm_core::Result<Vec<usize>> {
    let mut out = ferrolm_core::try_with_capacity(arg, "the indices as usize", values.len())?;
    for (i, &v) in values.iter().enumerate() {
        let u = usize::try_from(v)
            .map_err(|_| Error::value(arg, "non-negative", format!("{arg}[{i}] = {v}")))?;
        out.push(u);
    }
    Ok(out)
}
