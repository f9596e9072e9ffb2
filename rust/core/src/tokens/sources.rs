//! Building a `tokenizers` tokenizer from the places vocabularies live: a `tokenizer.json`, the
//! metadata of a GGUF file, or a tiktoken rank file.
//!
//! GGUF and tiktoken vocabularies are translated into the `tokenizer.json` format and loaded
//! with the `tokenizers` crate, so one scanner serves all three, and the JSON can be handed to
//! the Python `tokenizers` package unchanged.

use std::path::Path;

use ahash::AHashMap;
use rayon::prelude::*;
use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer,
};

use super::gguf::{GgufMetadata, GGUF_MAGIC};
pub use super::gguf_tokenizer::gguf_tokenizer_with_merges;
use crate::{Error, Result};

/// GPT-2's reversible map from bytes to printable characters, used by byte-level BPE.
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0u32..256 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let code = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        // Codes are below 0x200: always valid scalar values.
        table[b as usize] = char::from_u32(code).unwrap_or('\u{fffd}');
    }
    table
}

/// The inverse of [`byte_to_char`].
pub fn char_to_byte() -> AHashMap<char, u8> {
    byte_to_char()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// Which format a vocabulary file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A Hugging Face `tokenizer.json`.
    TokenizerJson,
    /// A GGUF model file (the tokenizer is in its metadata).
    Gguf,
    /// A tiktoken rank file: `base64(token) rank` per line.
    Tiktoken,
}

/// Guesses the format of the file at `path` from its first bytes.
pub fn detect_kind(path: &Path) -> Result<SourceKind> {
    use std::io::Read;
    let shown = path.display().to_string();
    let mut head = [0u8; 64];
    let mut file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let n = file.read(&mut head).map_err(|e| Error::Io {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let head = &head[..n];
    if head.starts_with(GGUF_MAGIC) {
        return Ok(SourceKind::Gguf);
    }
    let text = head.iter().skip_while(|b| b.is_ascii_whitespace()).copied();
    match text.clone().next() {
        // An array or a string is JSON too: load_json then says it is the wrong shape.
        Some(b'{' | b'[' | b'"') => Ok(SourceKind::TokenizerJson),
        Some(_) if head.contains(&b' ') => Ok(SourceKind::Tiktoken),
        _ => Err(Error::malformed(
            shown,
            "not a tokenizer.json, GGUF or tiktoken file (unrecognised first bytes)",
        )),
    }
}

/// A loaded tokenizer with its BPE merges (when it is a BPE) and conversion notes.
pub struct Loaded {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// BPE merges in rank order, when the model is a BPE.
    pub merges: Option<Vec<(String, String)>>,
    /// The same merges as ids `(left, right, merged)` in the model's vocabulary, when the
    /// loader derived them (the fast path then skips looking every string up again).
    pub merge_ids: Option<Vec<(u32, u32, u32)>>,
    /// One past the largest id of the model's vocabulary, when the loader knows it (saves a
    /// copy of the whole vocabulary to find it).
    pub n_ids: Option<usize>,
    /// Approximations made while converting.
    pub notes: Vec<String>,
    /// Assumptions that may make the result differ from the real tokenizer (an unknown
    /// pre-tokenizer label, a tiktoken file without a known encoding): shown to the user.
    pub warnings: Vec<String>,
}

/// The largest tokenizer.json or tiktoken file read (real ones are tens of megabytes).
pub const MAX_TEXT_FILE_BYTES: u64 = 1 << 30;

/// Reads a whole file with a size check first and a fallible allocation.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let shown = path.display().to_string();
    let io = |e: std::io::Error| Error::Io {
        path: shown.clone(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limit {
        return Err(Error::malformed(
            &shown,
            format!("{size} bytes is more than the {limit} bytes a tokenizer file may have"),
        ));
    }
    let mut data = Vec::new();
    data.try_reserve_exact(size as usize)
        .map_err(|_| Error::malformed(&shown, format!("cannot allocate {size} bytes")))?;
    file.take(limit + 1).read_to_end(&mut data).map_err(io)?;
    Ok(data)
}

/// `data` as UTF-8 text, or a [`Error::Malformed`] naming `what` and the line of the first
/// byte that is not UTF-8.
pub fn utf8_text(data: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(data).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        Error::malformed(
            what,
            format!("line {line}: not UTF-8 text (byte {})", at + 1),
        )
    })
}

/// Loads a tokenizer from a `tokenizer.json`, GGUF or tiktoken file, detecting the format.
pub fn load(path: &Path) -> Result<Loaded> {
    let shown = path.display().to_string();
    match detect_kind(path)? {
        SourceKind::TokenizerJson => load_json(
            &utf8_text(read_bytes(path, MAX_TEXT_FILE_BYTES)?, &shown)?,
            &shown,
        ),
        SourceKind::Gguf => gguf_tokenizer_with_merges(&GgufMetadata::read_file(path)?, &shown),
        SourceKind::Tiktoken => load_tiktoken(path, None),
    }
}

/// Loads a tiktoken rank file; `encoding` names its encoding (`cl100k_base`...), else the
/// file's stem is tried, else GPT-2's rules are assumed with a warning.
pub fn load_tiktoken(path: &Path, encoding: Option<&str>) -> Result<Loaded> {
    let data = read_bytes(path, MAX_TEXT_FILE_BYTES)?;
    super::tiktoken::from_rank_file(&data, encoding, &path.display().to_string())
}

/// The model types a `tokenizer.json` may have.
const JSON_MODELS: &[&str] = &["BPE", "WordPiece", "WordLevel", "Unigram"];

/// Checks the outline of a `tokenizer.json` (an object whose `model` has a known `type` and
/// a vocabulary) so that a file of the wrong shape gets one message that says what is wrong.
fn check_json_shape(value: &Value, what: &str) -> Result<()> {
    let bad = |detail: String| Error::malformed(what, detail);
    let obj = value.as_object().ok_or_else(|| {
        bad(format!(
            "a tokenizer.json is a JSON object, got {}",
            kind(value)
        ))
    })?;
    let model = obj
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("a tokenizer.json needs a `model` object".into()))?;
    let ty = model.get("type").and_then(Value::as_str);
    let ty = match ty {
        Some(t) => t,
        // Old files leave the type out; the library infers it from the fields.
        None if model.contains_key("merges") => "BPE",
        None if model.contains_key("vocab") => "WordPiece",
        None => return Err(bad("`model` has no `type` and no `vocab`".into())),
    };
    if !JSON_MODELS.contains(&ty) {
        return Err(Error::value(
            "model.type",
            format!("one of {}", JSON_MODELS.join(", ")),
            format!("{ty:?} in {what}"),
        ));
    }
    if model.get("vocab").is_none() {
        return Err(bad(format!("the {ty} model has no `vocab`")));
    }
    if let Some(normalizer) = obj.get("normalizer") {
        check_charsmaps(normalizer, what)?;
    }
    Ok(())
}

/// Checks every `Precompiled` normaliser's charsmap (also inside a `Sequence`): the
/// `tokenizers` crate indexes it without bounds checks, so a forged one would panic there.
fn check_charsmaps(normalizer: &Value, what: &str) -> Result<()> {
    use base64::Engine;
    match normalizer.get("type").and_then(Value::as_str) {
        Some("Precompiled") => {
            let text = normalizer
                .get("precompiled_charsmap")
                .and_then(Value::as_str)
                .unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    Error::malformed(what, format!("the Precompiled charsmap is not base64: {e}"))
                })?;
            // An empty charsmap is the crate's "no mapping": nothing to index.
            if !bytes.is_empty() {
                super::gguf_tokenizer::check_charsmap(&bytes).map_err(|e| {
                    Error::malformed(what, format!("the Precompiled charsmap is malformed: {e}"))
                })?;
            }
            Ok(())
        }
        Some("Sequence") => normalizer
            .get("normalizers")
            .and_then(Value::as_array)
            .map_or(Ok(()), |list| {
                list.iter().try_for_each(|n| check_charsmaps(n, what))
            }),
        _ => Ok(()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Token ids missing below the largest id: an explicit note (the scan reports them as ids no
/// text produces) instead of a silent shift.
fn holes(tok: &Tokenizer) -> Option<String> {
    let vocab = tok.get_vocab(true);
    let top = vocab.values().copied().max()?;
    let missing = (top as usize + 1).saturating_sub(vocab.len());
    (missing > 0).then(|| {
        let first = (0..top)
            .find(|&i| tok.id_to_token(i).is_none())
            .unwrap_or(top);
        format!(
            "{missing} id(s) below {top} have no token (the first is {first}): they are listed \
             as ids no text produces"
        )
    })
}

/// Parses `tokenizer.json` text, keeping the BPE merges for the fast scan path.
pub fn load_json(json: &str, what: &str) -> Result<Loaded> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Error::malformed(what, format!("not a valid tokenizer.json: {e}")))?;
    check_json_shape(&value, what)?;
    let tokenizer = tokenizer_from_json(json, what)?;
    let merges = if matches!(tokenizer.get_model(), ModelWrapper::BPE(_)) {
        value["model"]["merges"].as_array().and_then(|list| {
            list.iter()
                .map(|m| match m {
                    Value::String(s) => {
                        s.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned()))
                    }
                    Value::Array(p) if p.len() == 2 => {
                        Some((p[0].as_str()?.to_owned(), p[1].as_str()?.to_owned()))
                    }
                    _ => None,
                })
                .collect()
        })
    } else {
        None
    };
    let notes = holes(&tokenizer).into_iter().collect();
    Ok(Loaded {
        tokenizer,
        merges,
        merge_ids: None,
        n_ids: None,
        notes,
        warnings: Vec::new(),
    })
}

/// Loads a tokenizer from a `tokenizer.json`, GGUF or tiktoken file, detecting the format;
/// also returns notes on any approximation made while converting it (warnings included).
pub fn load_tokenizer(path: &Path) -> Result<(Tokenizer, Vec<String>)> {
    let loaded = load(path)?;
    let mut notes = loaded.notes;
    notes.extend(loaded.warnings);
    Ok((loaded.tokenizer, notes))
}

/// The `tokenizer.json` text for the file at `path`, plus notes on any approximation made.
pub fn tokenizer_json(path: &Path) -> Result<(String, Vec<String>)> {
    let (tok, notes) = load_tokenizer(path)?;
    let json = tok
        .to_string(false)
        .map_err(|e| Error::Internal(format!("cannot serialise the tokenizer: {e}")))?;
    Ok((json, notes))
}

/// Parses `tokenizer.json` text, with a [`Error::Malformed`] that names `what` on failure.
pub fn tokenizer_from_json(json: &str, what: &str) -> Result<Tokenizer> {
    json.parse::<Tokenizer>()
        .map_err(|e| Error::malformed(what, format!("not a valid tokenizer.json: {e}")))
}

/// Assembles a tokenizer from a model and (small) JSON descriptions of the other stages.
pub(super) fn assemble(
    model: impl Into<ModelWrapper>,
    normalizer: Value,
    pre_tokenizer: Value,
    decoder: Value,
    added: &[(String, bool)],
) -> Result<Tokenizer> {
    let bad = |stage: &str, e: serde_json::Error| Error::Internal(format!("bad {stage}: {e}"));
    let mut tok = Tokenizer::new(model);
    if !normalizer.is_null() {
        let n: NormalizerWrapper =
            serde_json::from_value(normalizer).map_err(|e| bad("normalizer", e))?;
        tok.with_normalizer(Some(n));
    }
    if !pre_tokenizer.is_null() {
        let p: PreTokenizerWrapper =
            serde_json::from_value(pre_tokenizer).map_err(|e| bad("pre-tokenizer", e))?;
        tok.with_pre_tokenizer(Some(p));
    }
    let d: DecoderWrapper = serde_json::from_value(decoder).map_err(|e| bad("decoder", e))?;
    tok.with_decoder(Some(d));
    let (special, plain): (Vec<_>, Vec<_>) = added.iter().partition(|(_, s)| *s);
    let special: Vec<AddedToken> = special
        .into_iter()
        .map(|(c, _)| AddedToken::from(c.clone(), true))
        .collect();
    let plain: Vec<AddedToken> = plain
        .into_iter()
        .map(|(c, _)| AddedToken::from(c.clone(), false).normalized(false))
        .collect();
    tok.add_special_tokens(&special);
    tok.add_tokens(&plain);
    Ok(tok)
}

pub(super) fn bpe(
    vocab: AHashMap<String, u32>,
    merges: Vec<(String, String)>,
    unk: Option<String>,
    byte_fallback: bool,
    ignore_merges: bool,
    what: &str,
) -> Result<BPE> {
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(byte_fallback)
        .fuse_unk(byte_fallback)
        .ignore_merges(ignore_merges);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    builder
        .build()
        .map_err(|e| Error::malformed(what, format!("invalid BPE vocabulary or merges: {e}")))
}

/// Derives BPE merges from a vocabulary ordered by priority (`priority[i]`: lower merges first).
///
/// Every way of splitting a token into two vocabulary tokens becomes a merge, ranked by the
/// priority of the merged token. Applying these merges lowest-rank-first reproduces the
/// tiktoken / SentencePiece rule "merge the adjacent pair whose concatenation ranks best".
///
/// Runs in parallel (rayon): on a 262k-token vocabulary there are half a million merges.
pub(super) fn merges_from_priorities(
    tokens: &[(String, u32)],
    priority: impl Fn(u32) -> f64 + Sync,
    skip: impl Fn(u32) -> bool + Sync,
) -> DerivedMerges {
    let vocab: AHashMap<&str, u32> = tokens.iter().map(|(t, id)| (t.as_str(), *id)).collect();
    // (priority, id, left id, right id, merged id, left, right): the first four are distinct
    // per merge (a token splits once at each position), so the unstable sort is deterministic.
    type Merge<'a> = (f64, u32, u32, u32, u32, &'a str, &'a str);
    let mut merges: Vec<Merge<'_>> = tokens
        .par_iter()
        .with_min_len(1024)
        .filter(|(_, id)| !skip(*id))
        .flat_map_iter(|(token, id)| {
            let merged = vocab.get(token.as_str()).copied().unwrap_or(*id);
            let (vocab, skip, priority) = (&vocab, &skip, &priority);
            token.char_indices().skip(1).filter_map(move |(split, _)| {
                let (left, right) = token.split_at(split);
                let (&l, &r) = (vocab.get(left)?, vocab.get(right)?);
                (!skip(l) && !skip(r)).then(|| (priority(*id), *id, l, r, merged, left, right))
            })
        })
        .collect();
    merges.par_sort_unstable_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    DerivedMerges {
        ids: merges.iter().map(|m| (m.2, m.3, m.4)).collect(),
        pairs: merges
            .par_iter()
            .map(|m| (m.5.to_owned(), m.6.to_owned()))
            .collect(),
    }
}

/// Merges derived by [`merges_from_priorities`], as strings (for the library) and as ids.
pub(super) struct DerivedMerges {
    /// `(left, right)` in rank order.
    pub(super) pairs: Vec<(String, String)>,
    /// `(left, right, merged)` ids, in the same order.
    pub(super) ids: Vec<(u32, u32, u32)>,
}

/// Builds the tokenizer described by a GGUF file's tokenizer metadata, with notes on any
/// approximation (warnings included); see [`super::gguf_tokenizer`].
pub fn gguf_tokenizer(meta: &GgufMetadata, what: &str) -> Result<(Tokenizer, Vec<String>)> {
    let loaded = gguf_tokenizer_with_merges(meta, what)?;
    let mut notes = loaded.notes;
    notes.extend(loaded.warnings);
    Ok((loaded.tokenizer, notes))
}

/// Builds a byte-level BPE tokenizer from tiktoken rank file text, as a file whose encoding
/// is unknown: GPT-2's split and `<|endoftext|>` after the last rank (see
/// [`super::tiktoken`] for named encodings).
pub fn tiktoken_tokenizer(text: &str, what: &str) -> Result<Tokenizer> {
    Ok(tiktoken_tokenizer_with_merges(text, what)?.tokenizer)
}

/// [`tiktoken_tokenizer`], keeping the BPE merges and the warning about the assumption.
pub fn tiktoken_tokenizer_with_merges(text: &str, what: &str) -> Result<Loaded> {
    super::tiktoken::from_rank_file(text.as_bytes(), None, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_precompiled_charsmap_is_refused_before_the_library_indexes_it() {
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        // A size header that claims far more trie than the bytes hold, then a node pointing
        // past the end.
        let forged = engine.encode([8u8, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 0]);
        for normalizer in [
            serde_json::json!({"type": "Precompiled", "precompiled_charsmap": forged}),
            serde_json::json!({"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Precompiled", "precompiled_charsmap": forged},
            ]}),
        ] {
            let json = serde_json::json!({
                "version": "1.0",
                "normalizer": normalizer,
                "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"},
            })
            .to_string();
            match load_json(&json, "t.json") {
                Err(Error::Malformed { .. }) => {}
                other => panic!("expected a Malformed error, got {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn byte_table_is_a_bijection_with_gpt2_anchors() {
        let t = byte_to_char();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], '\u{120}'); // 'Ġ'
        assert_eq!(t[b'\n' as usize], '\u{10a}'); // 'Ċ'
        let inv = char_to_byte();
        assert_eq!(inv.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(inv[&t[b as usize]], b);
        }
    }

    #[test]
    fn merges_are_ordered_by_the_rank_of_the_merged_token() {
        let toks: Vec<(String, u32)> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        let derived = merges_from_priorities(&toks, f64::from, |_| false);
        let m: Vec<(&str, &str)> = derived
            .pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(m, vec![("a", "b"), ("b", "c"), ("a", "bc"), ("ab", "c")]);
        let id = |t: &str| toks.iter().find(|(s, _)| s == t).unwrap().1;
        let ids: Vec<(u32, u32, u32)> = m
            .iter()
            .map(|(a, b)| (id(a), id(b), id(&format!("{a}{b}"))))
            .collect();
        assert_eq!(derived.ids, ids);
    }
}
