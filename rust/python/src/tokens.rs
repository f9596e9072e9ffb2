//! Bindings of `ferrolm_core::tokens` (Python: `ferrolm._native.tokens`, wrapped by
//! `ferrolm.tokens`).

use pyo3::prelude::*;

/// Tokenizer scans and embedding indicators (wrapped by `ferrolm.tokens`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod tokens {
    use std::path::PathBuf;

    use ferrolm_core::tokens::{
        indicators, sources, PackedStrings, PreparedTokenizer, ScanOptions, ScanReport,
    };
    use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyTuple};

    use crate::arrays::{slice, slice2};
    use crate::errors::detach;
    use ferrolm_core::Cancel;
    use std::sync::Mutex;

    /// `(uint8 UTF-8 array, uint32 offsets)`, both moved into NumPy without a copy: Python
    /// wraps the pair in a lazy sequence of `str` (`ferrolm.tokens.scan.PackedStrings`) instead
    /// of building one object per string here.
    fn packed_to_tuple<'py>(py: Python<'py>, p: PackedStrings) -> PyResult<Bound<'py, PyTuple>> {
        let text = p.text.into_bytes().into_pyarray(py);
        PyTuple::new(py, [text.into_any(), p.offsets.into_pyarray(py).into_any()])
    }

    fn report_to_dict<'py>(py: Python<'py>, r: ScanReport) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let category: Vec<u8> = r.category.iter().map(|&c| c as u8).collect();
        d.set_item("tokens", packed_to_tuple(py, r.tokens)?)?;
        d.set_item("decoded", packed_to_tuple(py, r.decoded)?)?;
        d.set_item("category", category.into_pyarray(py))?;
        d.set_item("single_byte", r.single_byte.into_pyarray(py))?;
        d.set_item("continuation", r.continuation.into_pyarray(py))?;
        d.set_item("impossible_bytes", r.impossible_bytes.into_pyarray(py))?;
        d.set_item("reencoded_offsets", r.reencoded_offsets.into_pyarray(py))?;
        d.set_item("reencoded", r.reencoded.into_pyarray(py))?;
        match r.containment {
            Some(c) => {
                d.set_item("contained_count", c.count.into_pyarray(py))?;
                d.set_item("contained_offsets", c.offsets.into_pyarray(py))?;
                d.set_item("contained_examples", c.examples.into_pyarray(py))?;
            }
            None => {
                d.set_item("contained_count", py.None())?;
                d.set_item("contained_offsets", py.None())?;
                d.set_item("contained_examples", py.None())?;
            }
        }
        d.set_item("notes", r.notes)?;
        Ok(d)
    }

    /// A tokenizer loaded once and scanned on demand (Python: `ferrolm.tokens.Scanner`).
    #[pyclass(name = "Scanner", frozen)]
    struct PyScanner {
        inner: PreparedTokenizer,
    }

    #[pymethods]
    impl PyScanner {
        /// Loads a tokenizer.json, GGUF or tiktoken file.
        #[staticmethod]
        fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
            let inner = detach(py, || PreparedTokenizer::from_file(&path))?;
            Ok(PyScanner { inner })
        }

        /// Parses `tokenizer.json` text.
        #[staticmethod]
        fn from_json(py: Python<'_>, json: String) -> PyResult<Self> {
            let inner = detach(py, || PreparedTokenizer::from_json(&json))?;
            Ok(PyScanner { inner })
        }

        /// Whether the exact fast re-encoding path applies to this tokenizer.
        #[getter]
        fn has_fast_path(&self) -> bool {
            self.inner.has_fast_path()
        }

        /// Number of ids, added tokens included.
        #[getter]
        fn vocab_size(&self) -> usize {
            self.inner.tokenizer.get_vocab_size(true)
        }

        /// Notes on approximations made while loading.
        #[getter]
        fn notes(&self) -> Vec<String> {
            self.inner.notes.clone()
        }

        /// The tokenizer as `tokenizer.json` text.
        fn to_json(&self, py: Python<'_>) -> PyResult<String> {
            detach(py, || {
                self.inner.tokenizer.to_string(false).map_err(|e| {
                    ferrolm_core::Error::Internal(format!("cannot serialise the tokenizer: {e}"))
                })
            })
        }

        /// Scans every token; returns a dict of per-token arrays.
        #[pyo3(signature = (*, containment = true, max_examples = 5, fast = true))]
        fn scan<'py>(
            &self,
            py: Python<'py>,
            containment: bool,
            max_examples: usize,
            fast: bool,
        ) -> PyResult<Bound<'py, PyDict>> {
            let opts = ScanOptions {
                containment,
                max_examples,
                ..ScanOptions::default()
            };
            // Python runs signal handlers on its main thread only: the scan checks `cancel` on
            // the calling thread between rounds of work, taking the GIL back briefly to run
            // `check_signals`; a handler that raises stops the scan.
            let raised: Mutex<Option<PyErr>> = Mutex::new(None);
            let poll = || {
                Python::attach(|py| py.check_signals()).is_err_and(|e| {
                    *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    true
                })
            };
            let report = detach(py, || {
                let cancel = Cancel::new(&poll, "scanning the vocabulary");
                self.inner.scan_cancellable(&opts, fast, &cancel)
            });
            let raised = raised.into_inner().unwrap_or_else(|p| p.into_inner());
            // A handler that raised wins even when the scan finished: the exception was taken
            // out of the interpreter by `check_signals` and must not be lost.
            match raised {
                Some(e) => Err(e),
                None => report_to_dict(py, report?),
            }
        }
    }

    /// The `tokenizer.json` text for a tokenizer.json, GGUF or tiktoken file, and notes on any
    /// approximation made while converting it.
    #[pyfunction]
    fn tokenizer_json(py: Python<'_>, path: PathBuf) -> PyResult<(String, Vec<String>)> {
        detach(py, || sources::tokenizer_json(&path))
    }

    /// The L2 norm of every row of a float32 matrix.
    #[pyfunction]
    fn row_norms<'py>(
        py: Python<'py>,
        matrix: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (m, rows, dim) = slice2("matrix", &matrix)?;
        let out = detach(py, || indicators::row_norms(m, rows, dim))?;
        Ok(out.into_pyarray(py))
    }

    /// The dominant right singular vector (unit norm) of a float32 matrix, by power iteration.
    #[pyfunction]
    #[pyo3(signature = (matrix, *, iterations = 30))]
    fn dominant_direction<'py>(
        py: Python<'py>,
        matrix: PyReadonlyArray2<'py, f32>,
        iterations: usize,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (m, rows, dim) = slice2("matrix", &matrix)?;
        let out = detach(py, || {
            indicators::dominant_direction(m, rows, dim, iterations)
        })?;
        Ok(out.into_pyarray(py))
    }

    /// Cosine distance of every row to the mean of the `reference` rows, after projecting out
    /// `remove` (a unit vector) if given.
    #[pyfunction]
    #[pyo3(signature = (matrix, reference, *, remove = None))]
    fn cosine_distance<'py>(
        py: Python<'py>,
        matrix: PyReadonlyArray2<'py, f32>,
        reference: PyReadonlyArray1<'py, u32>,
        remove: Option<PyReadonlyArray1<'py, f32>>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (m, rows, dim) = slice2("matrix", &matrix)?;
        let reference = slice("reference", &reference)?;
        let remove = match &remove {
            Some(r) => Some(slice("remove", r)?),
            None => None,
        };
        let out = detach(py, || {
            indicators::cosine_distance_to_reference(m, rows, dim, reference, remove)
        })?;
        Ok(out.into_pyarray(py))
    }

    /// For every row, how many rows (itself included) are exactly equal to it.
    #[pyfunction]
    fn identical_row_counts<'py>(
        py: Python<'py>,
        matrix: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let (m, rows, dim) = slice2("matrix", &matrix)?;
        let out = detach(py, || indicators::identical_row_counts(m, rows, dim))?;
        Ok(out.into_pyarray(py))
    }
}
