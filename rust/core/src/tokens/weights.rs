//! Reading embedding rows from model files without loading the model: GGUF tensors (float and
//! quantized, dequantized with [`super::dequant`]) and safetensors tensors (f32, f16, bf16).
//!
//! Only the bytes of the rows asked for are read, with positioned reads rather than a memory
//! map: a file truncated by another process while mapped would kill this one with `SIGBUS`,
//! while a short read is an ordinary error. Every offset and size comes from the file and is
//! checked against the file's length before anything is read or allocated.

use std::fs::File;
use std::path::Path;

use rayon::prelude::*;

use super::dequant::{dequantize_row, GgmlType};
use super::gguf::{GgufLimits, GgufMetadata, GgufTensorInfo};
use crate::buffer::try_zeroed;
use crate::{Error, Result};

/// The largest matrix returned, in float32 values (2^32: 16 GiB), unless the caller raises it.
pub const DEFAULT_MAX_VALUES: u64 = 1 << 32;

/// Rows of a 2-D tensor as a row-major float32 `[rows, dim]` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// The tensor's name in the file.
    pub name: String,
    /// The values, `rows * dim` of them.
    pub values: Vec<f32>,
    /// Number of rows read (at most the tensor's row count).
    pub rows: usize,
    /// Values per row.
    pub dim: usize,
    /// Rows the tensor holds in the file.
    pub total_rows: u64,
    /// The stored element type (e.g. `Q8_0`, `bf16`).
    pub dtype: String,
}

/// A model's input embedding and, when untied, its output embedding (unembedding).
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// The input embedding (`token_embd.weight`, `model.embed_tokens.weight`, ...).
    pub embedding: Rows,
    /// The unembedding (`output.weight`, `lm_head.weight`); None when tied to the embedding.
    pub unembedding: Option<Rows>,
}

fn io_error(path: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// Allocates `n` zeroed values, failing with an error (not an abort) when memory is short.
fn zeroed<T: Clone + Default>(n: usize, what: &str, during: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::malformed(
            what,
            format!("cannot allocate {n} values for {during}: out of memory"),
        )
    })?;
    v.resize(n, T::default());
    Ok(v)
}

/// Reads `out.len() / dim` rows of `row_bytes` bytes each, starting at byte `offset` of `file`,
/// and decodes them into `out`.
///
/// Rows are read and decoded in parallel pieces of a few hundred rows, each through a small
/// buffer that stays in cache: no copy of the whole tensor's raw bytes is ever held.
fn read_rows(
    file: &File,
    kind: GgmlType,
    offset: u64,
    row_bytes: usize,
    dim: usize,
    out: &mut [f32],
    what: &str,
) -> Result<()> {
    const ROWS_PER_PIECE: usize = 256;
    out.par_chunks_mut(ROWS_PER_PIECE * dim)
        .enumerate()
        .try_for_each(|(k, piece)| {
            let rows = piece.len() / dim;
            let mut raw: Vec<u8> = zeroed(rows * row_bytes, what, "a piece of rows")?;
            let at = offset + (k * ROWS_PER_PIECE * row_bytes) as u64;
            read_at(file, &mut raw, at).map_err(|e| {
                Error::malformed(
                    what,
                    format!("tensor data cannot be read at byte {at}: {e}"),
                )
            })?;
            for (r, o) in raw.chunks_exact(row_bytes).zip(piece.chunks_exact_mut(dim)) {
                dequantize_row(kind, r, o)?;
            }
            Ok(())
        })
}

/// Checks a rows-by-dim request against `max_values` before anything is allocated.
fn check_size(rows: u64, dim: u64, max_values: u64, name: &str, what: &str) -> Result<usize> {
    match rows.checked_mul(dim) {
        Some(n) if n <= max_values && usize::try_from(n).is_ok() => Ok(n as usize),
        _ => Err(Error::malformed(
            what,
            format!(
                "tensor `{name}` would need {rows} x {dim} float32 values, over the limit of \
                 {max_values} (raise `max_values` to read it)"
            ),
        )),
    }
}

/// Reads the first `max_rows` rows (all when None) of a 2-D GGUF tensor as float32.
fn gguf_rows(
    file: &File,
    info: &GgufTensorInfo,
    data_start: u64,
    file_len: u64,
    max_rows: Option<u64>,
    max_values: u64,
    what: &str,
) -> Result<Rows> {
    let name = &info.name;
    let kind = GgmlType::from_id(info.ggml_type).ok_or_else(|| {
        Error::malformed(
            what,
            format!(
                "tensor `{name}` has ggml type {}, which ferrolm cannot dequantize (supported: \
                 F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
                info.ggml_type
            ),
        )
    })?;
    let (dim, total_rows) = match info.dims[..] {
        [d, r] => (d, r),
        [d] => (d, 1),
        _ => {
            return Err(Error::malformed(
                what,
                format!(
                    "tensor `{name}` has shape {:?}, expected 2 dimensions",
                    info.dims
                ),
            ))
        }
    };
    if dim == 0 || total_rows == 0 {
        return Err(Error::malformed(
            what,
            format!("tensor `{name}` is empty (shape {:?})", info.dims),
        ));
    }
    let row_bytes = kind.row_bytes(dim, what)?;
    let rows = max_rows.map_or(total_rows, |m| m.min(total_rows));
    let whole = row_bytes.checked_mul(total_rows);
    let end = whole
        .and_then(|b| b.checked_add(info.offset))
        .and_then(|b| b.checked_add(data_start));
    match end {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(Error::malformed(
                what,
                format!(
                    "tensor `{name}` ({} x {dim} {}) at data offset {} runs past the end of the \
                     file ({file_len} bytes, data from {data_start})",
                    total_rows,
                    kind.name(),
                    info.offset
                ),
            ))
        }
    }
    let n = check_size(rows, dim, max_values, name, what)?;
    let mut values: Vec<f32> = try_zeroed("model_path", &format!("`{name}` of {what}"), n)?;
    let dim = dim as usize;
    let start = data_start + info.offset;
    read_rows(
        file,
        kind,
        start,
        row_bytes as usize,
        dim,
        &mut values,
        what,
    )?;
    Ok(Rows {
        name: name.clone(),
        values,
        rows: rows as usize,
        dim,
        total_rows,
        dtype: kind.name().to_owned(),
    })
}

/// Reads `token_embd.weight` and, when present, `output.weight` from a GGUF file.
///
/// `max_rows` caps the rows read (pass the vocabulary size: padding rows are never read);
/// `max_values` caps each matrix's size. A file without `token_embd.weight` (a vocab-only
/// GGUF) returns `Ok(None)`.
pub fn read_gguf_embeddings(
    path: &Path,
    max_rows: Option<u64>,
    max_values: u64,
) -> Result<Option<Embeddings>> {
    let what = path.display().to_string();
    let (meta, layout) = GgufMetadata::read_tensor_directory(path, GgufLimits::default())?;
    let find = |name: &str| meta.tensors.iter().find(|t| t.name == name);
    let Some(emb) = find("token_embd.weight") else {
        return Ok(None);
    };
    for t in [Some(emb), find("output.weight")].into_iter().flatten() {
        if t.offset % layout.alignment != 0 {
            return Err(Error::malformed(
                &what,
                format!(
                    "tensor `{}` starts at data offset {}, not a multiple of the alignment {}",
                    t.name, t.offset, layout.alignment
                ),
            ));
        }
    }
    let file = File::open(path).map_err(io_error(&what))?;
    let read = |t: &GgufTensorInfo| {
        gguf_rows(
            &file,
            t,
            layout.data_start,
            layout.file_len,
            max_rows,
            max_values,
            &what,
        )
    };
    let embedding = read(emb)?;
    let unembedding = find("output.weight").map(read).transpose()?;
    Ok(Some(Embeddings {
        embedding,
        unembedding,
    }))
}

/// Header entry of one safetensors tensor: dtype, shape and byte range in the data section.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsEntry {
    /// Tensor name.
    pub name: String,
    /// Element type as the file spells it (`F32`, `F16`, `BF16`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte range `[begin, end)` relative to the end of the header.
    pub offsets: (u64, u64),
}

/// The largest safetensors header accepted (the format's own limit is 100 MB).
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Parses the JSON header of a safetensors file: the tensor entries and where data starts.
pub fn safetensors_header(path: &Path) -> Result<(Vec<SafetensorsEntry>, u64)> {
    let what = path.display().to_string();
    let bad = |detail: String| Error::malformed(&what, detail);
    let file = File::open(path).map_err(io_error(&what))?;
    let len = file.metadata().map_err(io_error(&what))?.len();
    let mut prefix = [0u8; 8];
    if len < 8 {
        return Err(bad(format!(
            "{len} bytes: too short for a safetensors header length"
        )));
    }
    read_at(&file, &mut prefix, 0).map_err(io_error(&what))?;
    let n = u64::from_le_bytes(prefix);
    if n > MAX_SAFETENSORS_HEADER || n > len - 8 {
        return Err(bad(format!(
            "the header claims {n} bytes, but the file holds {} after the length (limit {MAX_SAFETENSORS_HEADER})",
            len - 8
        )));
    }
    let mut header: Vec<u8> = zeroed(n as usize, &what, "the safetensors header")?;
    read_at(&file, &mut header, 8).map_err(io_error(&what))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("the header is not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("the header is not a JSON object".into()))?;
    let data_start = 8 + n;
    let data_len = len - data_start;
    let mut entries = Vec::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| {
            v.get(key)
                .ok_or_else(|| bad(format!("tensor `{name}` has no `{key}`")))
        };
        let dtype = field("dtype")?
            .as_str()
            .ok_or_else(|| bad(format!("tensor `{name}`: `dtype` is not a string")))?
            .to_owned();
        let numbers = |key: &str| -> Result<Vec<u64>> {
            field(key)?
                .as_array()
                .ok_or_else(|| bad(format!("tensor `{name}`: `{key}` is not a list")))?
                .iter()
                .map(|x| {
                    x.as_u64().ok_or_else(|| {
                        bad(format!(
                            "tensor `{name}`: `{key}` holds {x}, not a non-negative integer"
                        ))
                    })
                })
                .collect()
        };
        let shape = numbers("shape")?;
        let offsets = match numbers("data_offsets")?[..] {
            [a, b] if a <= b && b <= data_len => (a, b),
            ref other => {
                return Err(bad(format!(
                    "tensor `{name}`: `data_offsets` {other:?} is not a range within the {data_len} data bytes"
                )))
            }
        };
        entries
            .try_reserve(1)
            .map_err(|_| bad("out of memory".into()))?;
        entries.push(SafetensorsEntry {
            name: name.clone(),
            dtype,
            shape,
            offsets,
        });
    }
    Ok((entries, data_start))
}

/// Reads the first `max_rows` rows (all when None) of a 2-D f32/f16/bf16 safetensors tensor.
pub fn safetensors_rows(
    path: &Path,
    name: &str,
    max_rows: Option<u64>,
    max_values: u64,
) -> Result<Rows> {
    let what = path.display().to_string();
    let bad = |detail: String| Error::malformed(&what, detail);
    let (entries, data_start) = safetensors_header(path)?;
    let entry = entries
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
    let (kind, size) = match entry.dtype.as_str() {
        "F32" => (GgmlType::F32, 4u64),
        "F16" => (GgmlType::F16, 2),
        "BF16" => (GgmlType::BF16, 2),
        other => {
            return Err(bad(format!(
                "tensor `{name}` has dtype {other}; embeddings are read as F32, F16 or BF16"
            )))
        }
    };
    let (total_rows, dim) = match entry.shape[..] {
        [r, d] if r > 0 && d > 0 => (r, d),
        _ => {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}, expected 2 non-zero dimensions",
                entry.shape
            )))
        }
    };
    let stored = entry.offsets.1 - entry.offsets.0;
    if total_rows
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(size))
        != Some(stored)
    {
        return Err(bad(format!(
            "tensor `{name}`: shape {:?} of {} does not match its {stored} data bytes",
            entry.shape, entry.dtype
        )));
    }
    let rows = max_rows.map_or(total_rows, |m| m.min(total_rows));
    let n = check_size(rows, dim, max_values, name, &what)?;
    let file = File::open(path).map_err(io_error(&what))?;
    let mut values: Vec<f32> = try_zeroed("model_path", &format!("`{name}` of {what}"), n)?;
    let dim = dim as usize;
    let start = data_start + entry.offsets.0;
    read_rows(
        &file,
        kind,
        start,
        dim * size as usize,
        dim,
        &mut values,
        &what,
    )?;
    Ok(Rows {
        name: name.to_owned(),
        values,
        rows: rows as usize,
        dim,
        total_rows,
        dtype: entry.dtype.clone(),
    })
}
