//! A small reader for the header and metadata of GGUF files (llama.cpp's model format).
//!
//! Only the metadata key/value section and the tensor directory are read; tensor data is never
//! touched, so reading the tokenizer of a multi-gigabyte model costs a few megabytes of I/O.
//!
//! The file is hostile input. Every count and length read from it is checked, before anything
//! is allocated, against the bytes that actually remain after it (each element takes at least
//! its minimal encoded size) and against [`GgufLimits`]; vectors grow incrementally with
//! `try_reserve`, so a forged header (a sparse file claiming 2^39 entries, a 16 M-element array
//! in a 16 MB file) is one [`Error::Malformed`] naming the file and the field, never an abort
//! or an allocation the file cannot justify.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string (invalid UTF-8 is replaced with U+FFFD).
    String(String),
    /// An array of values of one type.
    Array(Vec<GgufValue>),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl GgufValue {
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer, if it is any integer type or a bool.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => i64::try_from(v).ok()?,
            GgufValue::I64(v) => v,
            GgufValue::Bool(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a bool (integers: non-zero is true).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => self.as_i64().map(|v| v != 0),
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name, e.g. `token_embd.weight`.
    pub name: String,
    /// Dimensions in GGUF order (fastest-varying first).
    pub dims: Vec<u64>,
    /// The ggml type id (0 = F32, 1 = F16, 2 = Q4_0, ...).
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

/// The header, metadata and tensor directory of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufMetadata {
    /// Format version (2 or 3).
    pub version: u32,
    /// Key/value pairs in file order.
    pub entries: Vec<(String, GgufValue)>,
    /// The tensor directory.
    pub tensors: Vec<GgufTensorInfo>,
}

/// Upper bounds on what a GGUF header may claim, checked before anything is allocated.
///
/// The defaults hold every published model with room to spare (the largest vocabularies have
/// about 260k tokens, i.e. about a million metadata values with scores, types and merges);
/// raise them with [`GgufMetadata::read_file_with_limits`] for an unusual file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufLimits {
    /// Most metadata key/value pairs (default 65,536).
    pub max_entries: u64,
    /// Most tensor directory entries (default 1,048,576).
    pub max_tensors: u64,
    /// Most metadata values in total, array elements included (default 4,194,304: each value
    /// takes 32 bytes in memory, so at most 128 MiB besides the strings' own bytes).
    pub max_values: u64,
    /// Longest string, key or tensor name, in bytes (default 16 MiB).
    pub max_string_bytes: u64,
}

impl Default for GgufLimits {
    fn default() -> Self {
        GgufLimits {
            max_entries: 1 << 16,
            max_tensors: 1 << 20,
            max_values: 1 << 22,
            max_string_bytes: 1 << 24,
        }
    }
}

/// Where a GGUF file's parts lie: what [`GgufMetadata::read_layout`] returns besides the
/// metadata, to find tensor data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufLayout {
    /// Size of the file in bytes.
    pub file_len: u64,
    /// Offset of the data section (the end of the header, rounded up to `alignment`).
    pub data_start: u64,
    /// The tensor data alignment (`general.alignment`, 32 when absent).
    pub alignment: u64,
}

impl GgufMetadata {
    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Reads the metadata of the GGUF file at `path` (default [`GgufLimits`]).
    pub fn read_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::read_file_with_limits(path, GgufLimits::default())
    }

    /// Reads the metadata of the GGUF file at `path`, refusing headers beyond `limits`.
    pub fn read_file_with_limits(path: impl AsRef<Path>, limits: GgufLimits) -> Result<Self> {
        Ok(Self::read_layout(path, limits)?.0)
    }

    /// Reads the metadata and finds where the tensor data starts.
    pub fn read_layout(path: impl AsRef<Path>, limits: GgufLimits) -> Result<(Self, GgufLayout)> {
        Self::read_layout_impl(path.as_ref(), limits, true)
    }

    /// Reads the tensor directory and the layout only: metadata arrays are checked and
    /// skipped, not stored (they come back empty), which makes finding tensors in a file with
    /// a large vocabulary cheap.
    pub fn read_tensor_directory(
        path: impl AsRef<Path>,
        limits: GgufLimits,
    ) -> Result<(Self, GgufLayout)> {
        Self::read_layout_impl(path.as_ref(), limits, false)
    }

    fn read_layout_impl(
        path: &Path,
        limits: GgufLimits,
        keep_arrays: bool,
    ) -> Result<(Self, GgufLayout)> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| Error::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut reader = Reader::new(BufReader::with_capacity(1 << 20, file), len, &shown, limits);
        reader.keep_arrays = keep_arrays;
        let meta = reader.metadata()?;
        let header_len = len - reader.remaining;
        let alignment = match meta.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_i64() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 20 => a as u64,
                _ => {
                    return Err(Error::malformed(
                        shown,
                        format!("`general.alignment` must be a power of two up to 2^20, got {v:?}"),
                    ))
                }
            },
        };
        let data_start = header_len.div_ceil(alignment) * alignment;
        let layout = GgufLayout {
            file_len: len,
            data_start,
            alignment,
        };
        Ok((meta, layout))
    }

    /// Parses GGUF metadata from an in-memory prefix of a file (default [`GgufLimits`]).
    ///
    /// This is the entry point of the fuzz targets: any byte string must give `Ok` or
    /// [`Error::Malformed`], quickly and within bounded memory.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        Reader::new(bytes, bytes.len() as u64, what, GgufLimits::default()).metadata()
    }
}

struct Reader<R> {
    inner: R,
    remaining: u64,
    what: String,
    limits: GgufLimits,
    values_left: u64,
    /// False: array elements are validated and skipped, the array comes back empty.
    keep_arrays: bool,
}

const MAX_DIMS: u32 = 8;
const MAX_DEPTH: u32 = 4;
/// Vectors start with room for at most this many items and grow as items are actually read.
const FIRST_RESERVE: u64 = 4096;

/// The fewest bytes one value of GGUF type `kind` takes in the file (None: no such type).
fn min_encoded_size(kind: u32) -> Option<u64> {
    Some(match kind {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,  // the length of an empty string
        9 => 12, // element type and count of an empty array
        _ => return None,
    })
}

/// Pushes with a fallible reservation: a failed allocation is an error, not an abort.
fn push<T>(v: &mut Vec<T>, item: T, what: &str, during: &str) -> Result<()> {
    if v.len() == v.capacity() {
        v.try_reserve(v.len().max(16))
            .map_err(|_| Error::malformed(what, format!("out of memory while reading {during}")))?;
    }
    v.push(item);
    Ok(())
}

fn reserve<T>(n: u64, what: &str, during: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve(n.min(FIRST_RESERVE) as usize)
        .map_err(|_| Error::malformed(what, format!("out of memory while reading {during}")))?;
    Ok(v)
}

impl<R: Read> Reader<R> {
    fn new(inner: R, len: u64, what: &str, limits: GgufLimits) -> Self {
        Reader {
            inner,
            remaining: len,
            what: what.to_owned(),
            limits,
            values_left: limits.max_values,
            keep_arrays: true,
        }
    }

    fn malformed(&self, detail: impl Into<String>) -> Error {
        Error::malformed(self.what.clone(), detail)
    }

    fn truncated(&self, n: u64, during: &str) -> Error {
        self.malformed(format!(
            "truncated while reading {during}: needs {n} bytes, {} left",
            self.remaining
        ))
    }

    fn fill(&mut self, buf: &mut [u8], during: &str) -> Result<()> {
        let n = buf.len() as u64;
        if n > self.remaining {
            return Err(self.truncated(n, during));
        }
        self.inner
            .read_exact(buf)
            .map_err(|e| self.malformed(format!("truncated while reading {during}: {e}")))?;
        self.remaining -= n;
        Ok(())
    }

    fn array<const N: usize>(&mut self, during: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.fill(&mut out, during)?;
        Ok(out)
    }

    fn u32(&mut self, during: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(during)?))
    }

    fn u64(&mut self, during: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(during)?))
    }

    fn string(&mut self, during: &str) -> Result<String> {
        let n = self.u64(during)?;
        if n > self.remaining {
            return Err(self.truncated(n, during));
        }
        if n > self.limits.max_string_bytes {
            return Err(self.malformed(format!(
                "a string in {during} claims {n} bytes, over the limit of {} (GgufLimits::max_string_bytes)",
                self.limits.max_string_bytes
            )));
        }
        let mut raw = Vec::new();
        raw.try_reserve_exact(n as usize)
            .map_err(|_| self.malformed(format!("out of memory reading {n} bytes of {during}")))?;
        raw.resize(n as usize, 0);
        self.fill(&mut raw, during)?;
        Ok(match String::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Consumes one value without storing it (strings are skipped, not allocated).
    fn skip_value(&mut self, kind: u32, key: &str, depth: u32) -> Result<()> {
        match kind {
            8 => {
                let n = self.u64(key)?;
                if n > self.remaining || n > self.limits.max_string_bytes {
                    return Err(self.truncated(n, key));
                }
                let skipped = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
                    .map_err(|e| self.malformed(format!("cannot read `{key}`: {e}")))?;
                if skipped != n {
                    return Err(self.truncated(n, key));
                }
                self.remaining -= n;
            }
            9 => {
                self.value(9, key, depth)?;
            }
            _ => {
                self.value(kind, key, depth)?;
            }
        }
        Ok(())
    }

    fn take_values(&mut self, n: u64, key: &str) -> Result<()> {
        if n > self.values_left {
            return Err(self.malformed(format!(
                "`{key}` takes the metadata over {} values (GgufLimits::max_values)",
                self.limits.max_values
            )));
        }
        self.values_left -= n;
        Ok(())
    }

    fn value(&mut self, kind: u32, key: &str, depth: u32) -> Result<GgufValue> {
        Ok(match kind {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => GgufValue::Bool(self.array::<1>(key)?[0] != 0),
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.malformed(format!("arrays nested too deeply in `{key}`")));
                }
                let inner = self.u32(key)?;
                let n = self.u64(key)?;
                let Some(size) = min_encoded_size(inner) else {
                    return Err(
                        self.malformed(format!("array `{key}` has unknown element type {inner}"))
                    );
                };
                // Every element takes at least `size` bytes: a count the bytes left cannot
                // hold is corrupt, whatever the file's apparent size.
                if n.checked_mul(size).is_none_or(|b| b > self.remaining) {
                    return Err(self.malformed(format!(
                        "truncated or corrupt: array `{key}` claims {n} elements of type {inner} but only {} bytes are left",
                        self.remaining
                    )));
                }
                self.take_values(n, key)?;
                if !self.keep_arrays {
                    for _ in 0..n {
                        self.skip_value(inner, key, depth + 1)?;
                    }
                    return Ok(GgufValue::Array(Vec::new()));
                }
                let mut items = reserve(n, &self.what, key)?;
                for _ in 0..n {
                    let item = self.value(inner, key, depth + 1)?;
                    push(&mut items, item, &self.what, key)?;
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.malformed(format!("unknown value type {other} for `{key}`"))),
        })
    }

    fn count(&mut self, during: &str, min_size: u64, limit: u64, field: &str) -> Result<u64> {
        let n = self.u64(during)?;
        if n > limit {
            return Err(self.malformed(format!(
                "{during} is {n}, over the limit of {limit} (GgufLimits::{field})"
            )));
        }
        if n.saturating_mul(min_size) > self.remaining {
            return Err(self.malformed(format!(
                "truncated or corrupt: {during} is {n}, more than the {} bytes left can hold",
                self.remaining
            )));
        }
        Ok(n)
    }

    fn metadata(&mut self) -> Result<GgufMetadata> {
        let magic = self.array::<4>("the magic number")?;
        if &magic != GGUF_MAGIC {
            return Err(self.malformed(format!(
                "not a GGUF file: starts with {magic:?}, expected b\"GGUF\""
            )));
        }
        let version = self.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(self.malformed(format!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        // A tensor entry takes at least 8 (name) + 4 (dims) + 4 (type) + 8 (offset) bytes, a
        // metadata entry 8 (key) + 4 (type) + 1 (smallest value).
        let n_tensors = self.u64("the tensor count")?;
        let n_kv = self.count(
            "the metadata count",
            13,
            self.limits.max_entries,
            "max_entries",
        )?;
        if n_tensors > self.limits.max_tensors {
            return Err(self.malformed(format!(
                "the tensor count is {n_tensors}, over the limit of {} (GgufLimits::max_tensors)",
                self.limits.max_tensors
            )));
        }
        if n_tensors.saturating_mul(24) > self.remaining {
            return Err(self.malformed(format!(
                "truncated or corrupt: the tensor count is {n_tensors}, more than the {} bytes left can hold",
                self.remaining
            )));
        }
        self.take_values(n_kv, "the metadata count")?;
        let mut entries = reserve(n_kv, &self.what, "the metadata")?;
        for _ in 0..n_kv {
            let key = self.string("a metadata key")?;
            let kind = self.u32(&key)?;
            let value = self.value(kind, &key, 0)?;
            push(&mut entries, (key, value), &self.what, "the metadata")?;
        }
        let mut tensors = reserve(n_tensors, &self.what, "the tensor directory")?;
        for _ in 0..n_tensors {
            let name = self.string("a tensor name")?;
            let n_dims = self.u32(&name)?;
            if n_dims > MAX_DIMS {
                return Err(self.malformed(format!(
                    "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64(&name)?);
            }
            let ggml_type = self.u32(&name)?;
            let offset = self.u64(&name)?;
            push(
                &mut tensors,
                GgufTensorInfo {
                    name,
                    dims,
                    ggml_type,
                    offset,
                },
                &self.what,
                "the tensor directory",
            )?;
        }
        Ok(GgufMetadata {
            version,
            entries,
            tensors,
        })
    }
}

pub use super::gguf_write::write_metadata;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> GgufMetadata {
        GgufMetadata {
            version: 3,
            entries: vec![
                (
                    "general.architecture".into(),
                    GgufValue::String("llama".into()),
                ),
                (
                    "tokenizer.ggml.model".into(),
                    GgufValue::String("gpt2".into()),
                ),
                (
                    "tokenizer.ggml.tokens".into(),
                    GgufValue::Array(vec![
                        GgufValue::String("a".into()),
                        GgufValue::String("b".into()),
                    ]),
                ),
                (
                    "tokenizer.ggml.scores".into(),
                    GgufValue::Array(vec![GgufValue::F32(0.5), GgufValue::F32(-1.0)]),
                ),
                ("x.count".into(), GgufValue::U64(7)),
                ("x.flag".into(), GgufValue::Bool(true)),
            ],
            tensors: vec![GgufTensorInfo {
                name: "token_embd.weight".into(),
                dims: vec![4, 2],
                ggml_type: 0,
                offset: 0,
            }],
        }
    }

    #[test]
    fn metadata_round_trips_through_the_writer() {
        let meta = sample();
        let bytes = write_metadata(&meta);
        let back = GgufMetadata::from_bytes(&bytes, "sample").unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.get("x.count").and_then(GgufValue::as_i64), Some(7));
        assert_eq!(back.get("x.flag").and_then(GgufValue::as_bool), Some(true));
    }

    #[test]
    fn every_truncation_is_a_malformed_error() {
        let bytes = write_metadata(&sample());
        for cut in 0..bytes.len() {
            let e = GgufMetadata::from_bytes(&bytes[..cut], "cut.gguf").unwrap_err();
            assert!(matches!(e, Error::Malformed { .. }), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn wrong_magic_and_version_are_rejected() {
        let mut bytes = write_metadata(&sample());
        bytes[0] = b'X';
        let e = GgufMetadata::from_bytes(&bytes, "f").unwrap_err();
        assert!(e.to_string().contains("not a GGUF file"), "{e}");
        let mut bytes = write_metadata(&sample());
        bytes[4] = 9;
        let e = GgufMetadata::from_bytes(&bytes, "f").unwrap_err();
        assert!(e.to_string().contains("unsupported GGUF version 9"), "{e}");
    }

    #[test]
    fn huge_claimed_lengths_fail_without_allocating() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(GGUF_MAGIC);
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&u64::MAX.to_le_bytes()); // key length
        let e = GgufMetadata::from_bytes(&bytes, "f").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut bytes = GGUF_MAGIC.to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&n_tensors.to_le_bytes());
        bytes.extend_from_slice(&n_kv.to_le_bytes());
        bytes
    }

    #[test]
    fn counts_beyond_the_limits_or_the_bytes_left_are_refused_before_allocating() {
        // A 1 TiB sparse file claiming 2^39 entries: over the limit, whatever the file size.
        let mut bytes = header(0, 1 << 39);
        bytes.resize(4096, 0);
        let e = GgufMetadata::from_bytes(&bytes, "sparse.gguf").unwrap_err();
        assert!(e.to_string().contains("GgufLimits::max_entries"), "{e}");
        let e = GgufMetadata::from_bytes(&header(1 << 30, 0), "t.gguf").unwrap_err();
        assert!(e.to_string().contains("GgufLimits::max_tensors"), "{e}");
        let e = GgufMetadata::from_bytes(&header(1000, 0), "t.gguf").unwrap_err();
        assert!(e.to_string().contains("more than the 0 bytes left"), "{e}");
    }

    #[test]
    fn a_valid_array_over_the_value_budget_is_refused_before_it_is_read() {
        // 16 M one-byte elements, all present: each would take 32 bytes as a GgufValue.
        let n: u64 = 1 << 24;
        let mut bytes = header(0, 1);
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.push(b'k');
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&n.to_le_bytes());
        bytes.resize(bytes.len() + n as usize, 7);
        let e = GgufMetadata::from_bytes(&bytes, "big.gguf").unwrap_err();
        assert!(e.to_string().contains("GgufLimits::max_values"), "{e}");
        // Arrays of strings need 8 bytes per element at least.
        let mut bytes = header(0, 1);
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.push(b'k');
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&8u32.to_le_bytes());
        bytes.extend_from_slice(&100u64.to_le_bytes());
        bytes.resize(bytes.len() + 799, 0);
        let e = GgufMetadata::from_bytes(&bytes, "s.gguf").unwrap_err();
        assert!(
            e.to_string().contains("claims 100 elements of type 8"),
            "{e}"
        );
    }

    #[test]
    fn strings_over_the_limit_and_unknown_array_types_are_refused() {
        let mut bytes = header(0, 1);
        bytes.extend_from_slice(&((1u64 << 24) + 1).to_le_bytes());
        let mut big = bytes.clone();
        big.resize(big.len() + (1 << 25), 0);
        let e = GgufMetadata::from_bytes(&big, "k.gguf").unwrap_err();
        assert!(
            e.to_string().contains("GgufLimits::max_string_bytes"),
            "{e}"
        );
        bytes.truncate(bytes.len() - 8);
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.push(b'k');
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&77u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let e = GgufMetadata::from_bytes(&bytes, "k.gguf").unwrap_err();
        assert!(e.to_string().contains("unknown element type 77"), "{e}");
    }

    proptest! {
        #[test]
        fn random_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = GGUF_MAGIC.to_vec();
            bytes.extend_from_slice(&3u32.to_le_bytes());
            bytes.extend_from_slice(&tail);
            let _ = GgufMetadata::from_bytes(&bytes, "fuzz");
        }

        #[test]
        fn string_arrays_round_trip(strings in proptest::collection::vec(".{0,12}", 1..20)) {
            let meta = GgufMetadata {
                version: 3,
                entries: vec![(
                    "tokenizer.ggml.tokens".into(),
                    GgufValue::Array(strings.iter().cloned().map(GgufValue::String).collect()),
                )],
                tensors: vec![],
            };
            let back = GgufMetadata::from_bytes(&write_metadata(&meta), "p").unwrap();
            prop_assert_eq!(back, meta);
        }
    }
}
