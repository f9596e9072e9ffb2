//! A small reader for the header and metadata of GGUF files (llama.cpp's model format).
//!
//! Only the metadata key/value section and the tensor directory are read; tensor data is never
//! touched, so reading the tokenizer of a multi-gigabyte model costs a few megabytes of I/O.
//! Every length read from the file is checked against the bytes that remain, so a truncated or
//! corrupted file gives [`Error::Malformed`] instead of a huge allocation or a panic.

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

impl GgufMetadata {
    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Reads the metadata of the GGUF file at `path`.
    pub fn read_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |e: std::io::Error| Error::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut reader = Reader {
            inner: BufReader::with_capacity(1 << 20, file),
            remaining: len,
            what: shown.clone(),
        };
        reader.metadata()
    }

    /// Parses GGUF metadata from an in-memory prefix of a file.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let mut reader = Reader {
            inner: bytes,
            remaining: bytes.len() as u64,
            what: what.to_owned(),
        };
        reader.metadata()
    }
}

struct Reader<R> {
    inner: R,
    remaining: u64,
    what: String,
}

const MAX_DIMS: u32 = 8;
const MAX_DEPTH: u32 = 4;

impl<R: Read> Reader<R> {
    fn malformed(&self, detail: impl Into<String>) -> Error {
        Error::malformed(self.what.clone(), detail)
    }

    fn bytes(&mut self, n: u64, during: &str) -> Result<Vec<u8>> {
        if n > self.remaining {
            return Err(self.malformed(format!(
                "truncated while reading {during}: needs {n} bytes, {} left",
                self.remaining
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.malformed(format!("truncated while reading {during}: {e}")))?;
        self.remaining -= n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, during: &str) -> Result<[u8; N]> {
        let v = self.bytes(N as u64, during)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
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
        let raw = self.bytes(n, during)?;
        Ok(match String::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
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
                // Every element takes at least one byte: a count beyond the bytes left is corrupt.
                if n > self.remaining {
                    return Err(self.malformed(format!(
                        "array `{key}` claims {n} elements but only {} bytes are left",
                        self.remaining
                    )));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.malformed(format!("unknown value type {other} for `{key}`"))),
        })
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
        let n_tensors = self.u64("the tensor count")?;
        let n_kv = self.u64("the metadata count")?;
        if n_kv > self.remaining || n_tensors > self.remaining {
            return Err(self.malformed(format!(
                "header claims {n_kv} metadata entries and {n_tensors} tensors, more than the file can hold"
            )));
        }
        let mut entries = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = self.string("a metadata key")?;
            let kind = self.u32(&key)?;
            let value = self.value(kind, &key, 0)?;
            entries.push((key, value));
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = self.string("a tensor name")?;
            let n_dims = self.u32(&name)?;
            if n_dims > MAX_DIMS {
                return Err(self.malformed(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64(&name)?);
            }
            let ggml_type = self.u32(&name)?;
            let offset = self.u64(&name)?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        Ok(GgufMetadata {
            version,
            entries,
            tensors,
        })
    }
}

/// Serialises metadata in GGUF v3 layout (no tensor data): used to build test fixtures.
pub fn write_metadata(meta: &GgufMetadata) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn kind(v: &GgufValue) -> u32 {
        match v {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }
    fn value(out: &mut Vec<u8>, v: &GgufValue) {
        match v {
            GgufValue::U8(x) => out.push(*x),
            GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::Bool(x) => out.push(u8::from(*x)),
            GgufValue::String(s) => string(out, s),
            GgufValue::Array(items) => {
                let inner = items.first().map_or(8, kind);
                out.extend_from_slice(&inner.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    value(out, item);
                }
            }
            GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(GGUF_MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(meta.tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(meta.entries.len() as u64).to_le_bytes());
    for (k, v) in &meta.entries {
        string(&mut out, k);
        out.extend_from_slice(&kind(v).to_le_bytes());
        value(&mut out, v);
    }
    for t in &meta.tensors {
        string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out
}

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
