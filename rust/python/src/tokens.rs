//! Bindings of `ferrolm_core::tokens` (Python: `ferrolm._native.tokens`, wrapped by
//! `ferrolm.tokens`).

use pyo3::prelude::*;

/// Tokenizer scans and embedding indicators (wrapped by `ferrolm.tokens`).
#[pymodule(submodule, module = "ferrolm._native")]
pub mod tokens {
    use std::path::PathBuf;

    use ferrolm_core::tokens::{
        indicators, sources, tiktoken, weights, PackedStrings, PreparedTokenizer, ScanOptions,
        ScanReport,
    };
    use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyTuple};

    use crate::arrays::{slice, slice2};
    use crate::errors::{detach, detach_cancellable};

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

        // --- Tokenizer loading and encoding (part D1: conversion, tiktoken) ---

        /// Loads a tiktoken rank file; `encoding` names its encoding (`cl100k_base`...).
        #[staticmethod]
        #[pyo3(signature = (path, *, encoding = None))]
        fn from_tiktoken_file(
            py: Python<'_>,
            path: PathBuf,
            encoding: Option<String>,
        ) -> PyResult<Self> {
            let inner = detach(py, || {
                let loaded = sources::load_tiktoken(&path, encoding.as_deref())?;
                Ok(PreparedTokenizer::from_loaded(loaded))
            })?;
            Ok(PyScanner { inner })
        }

        /// Builds a tiktoken encoding from its ranks, split pattern and special tokens.
        #[staticmethod]
        fn from_tiktoken_ranks(
            py: Python<'_>,
            ranks: Vec<(Vec<u8>, u32)>,
            pattern: String,
            special_tokens: Vec<(String, u32)>,
            name: String,
        ) -> PyResult<Self> {
            let inner = detach(py, || {
                let loaded = tiktoken::from_ranks(&ranks, &pattern, &special_tokens, &name)?;
                Ok(PreparedTokenizer::from_loaded(loaded))
            })?;
            Ok(PyScanner { inner })
        }

        /// Assumptions that may make this tokenizer differ from the real one.
        #[getter]
        fn warnings(&self) -> Vec<String> {
            self.inner.warnings.clone()
        }

        /// The ids of `text`, as the converted tokenizer encodes it.
        #[pyo3(signature = (text, *, add_special_tokens = false))]
        fn encode(
            &self,
            py: Python<'_>,
            text: String,
            add_special_tokens: bool,
        ) -> PyResult<Vec<u32>> {
            detach(py, || {
                let enc = self
                    .inner
                    .tokenizer
                    .encode(text.as_str(), add_special_tokens)
                    .map_err(|e| ferrolm_core::Error::Internal(format!("cannot encode: {e}")))?;
                Ok(enc.get_ids().to_vec())
            })
        }

        // --- end of part D1 ---

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
            // Ctrl-C stops the scan between rounds of work (see `detach_cancellable`).
            let report = detach_cancellable(py, "scanning the vocabulary", |cancel| {
                self.inner.scan_cancellable(&opts, fast, cancel)
            })?;
            report_to_dict(py, report)
        }
    }

    /// The ids of each text under the tokenizer converted from a tokenizer.json, GGUF or
    /// tiktoken file (`encoding` names a tiktoken file's encoding), and the conversion's
    /// warnings. Loads without preparing a scan (no fast path), so it is cheap to call once.
    #[pyfunction]
    #[pyo3(signature = (path, texts, *, encoding = None, add_special_tokens = false))]
    fn encode_file(
        py: Python<'_>,
        path: PathBuf,
        texts: Vec<String>,
        encoding: Option<String>,
        add_special_tokens: bool,
    ) -> PyResult<(Vec<Vec<u32>>, Vec<String>)> {
        detach(py, || {
            let loaded = match encoding.as_deref() {
                Some(name) => sources::load_tiktoken(&path, Some(name))?,
                None => sources::load(&path)?,
            };
            let ids = texts
                .iter()
                .map(|t| {
                    let enc = loaded
                        .tokenizer
                        .encode(t.as_str(), add_special_tokens)
                        .map_err(|e| {
                            ferrolm_core::Error::Internal(format!("cannot encode: {e}"))
                        })?;
                    Ok(enc.get_ids().to_vec())
                })
                .collect::<ferrolm_core::Result<Vec<_>>>()?;
            Ok((ids, loaded.warnings))
        })
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

    /// The dominant right singular vector (unit norm) of a float32 matrix, by Lanczos iteration
    /// (at most `iterations` passes over the matrix).
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

    // ---- Model weights: embedding rows from GGUF and safetensors files (read and
    // dequantized in the core; Python receives float32 matrices, never raw blocks).

    fn rows_to_dict<'py>(py: Python<'py>, r: weights::Rows) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("name", r.name)?;
        d.set_item("total_rows", r.total_rows)?;
        d.set_item("dtype", r.dtype)?;
        d.set_item("matrix", crate::arrays::to_2d(py, r.values, r.rows, r.dim)?)?;
        Ok(d)
    }

    /// `token_embd.weight` and `output.weight` (when untied) of a GGUF file, dequantized to
    /// float32: `{"embedding": {...}, "unembedding": {...} | None}`, or None for a vocab-only
    /// file. At most `max_rows` rows are read; `max_values` bounds each matrix.
    #[pyfunction]
    #[pyo3(signature = (path, *, max_rows = None, max_values = 4294967296))]
    // The signatures spell the default of `max_values` (weights::DEFAULT_MAX_VALUES, 2^32)
    // as a literal so the generated text signature, and the stub checked against it, show it.
    fn gguf_embeddings<'py>(
        py: Python<'py>,
        path: PathBuf,
        max_rows: Option<u64>,
        max_values: u64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let found = detach(py, || {
            weights::read_gguf_embeddings(&path, max_rows, max_values)
        })?;
        let Some(e) = found else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("embedding", rows_to_dict(py, e.embedding)?)?;
        match e.unembedding {
            Some(u) => d.set_item("unembedding", rows_to_dict(py, u)?)?,
            None => d.set_item("unembedding", py.None())?,
        }
        Ok(Some(d))
    }

    /// The tensors of a safetensors file: `[(name, dtype, shape)]`, from its checked header.
    #[pyfunction]
    fn safetensors_tensors(
        py: Python<'_>,
        path: PathBuf,
    ) -> PyResult<Vec<(String, String, Vec<u64>)>> {
        let (entries, _) = detach(py, || weights::safetensors_header(&path))?;
        Ok(entries
            .into_iter()
            .map(|e| (e.name, e.dtype, e.shape))
            .collect())
    }

    /// The first `max_rows` rows (all when None) of a 2-D F32/F16/BF16 safetensors tensor,
    /// as a float32 matrix.
    #[pyfunction]
    #[pyo3(signature = (path, name, *, max_rows = None, max_values = 4294967296))]
    fn safetensors_rows<'py>(
        py: Python<'py>,
        path: PathBuf,
        name: String,
        max_rows: Option<u64>,
        max_values: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let rows = detach(py, || {
            weights::safetensors_rows(&path, &name, max_rows, max_values)
        })?;
        rows_to_dict(py, rows)
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
