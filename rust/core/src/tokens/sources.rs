//! Building a `tokenizers` tokenizer from the places vocabularies live: a `tokenizer.json`, the
//! metadata of a GGUF file, or a tiktoken rank file.
//!
//! GGUF and tiktoken vocabularies are translated into the `tokenizer.json` format and loaded
//! with the `tokenizers` crate, so one scanner serves all three, and the JSON can be handed to
//! the Python `tokenizers` package unchanged.

use std::path::Path;

use ahash::AHashMap;
use base64::Engine;
use serde_json::{json, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer,
};

use super::gguf::{GgufMetadata, GgufValue, GGUF_MAGIC};
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
        Some(b'{') => Ok(SourceKind::TokenizerJson),
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
    /// Approximations made while converting.
    pub notes: Vec<String>,
}

/// Loads a tokenizer from a `tokenizer.json`, GGUF or tiktoken file, detecting the format.
pub fn load(path: &Path) -> Result<Loaded> {
    let shown = path.display().to_string();
    let read = || {
        std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: shown.clone(),
            message: e.to_string(),
        })
    };
    match detect_kind(path)? {
        SourceKind::TokenizerJson => load_json(&read()?, &shown),
        SourceKind::Gguf => gguf_tokenizer_with_merges(&GgufMetadata::read_file(path)?, &shown),
        SourceKind::Tiktoken => tiktoken_tokenizer_with_merges(&read()?, &shown),
    }
}

/// Parses `tokenizer.json` text, keeping the BPE merges for the fast scan path.
pub fn load_json(json: &str, what: &str) -> Result<Loaded> {
    let tokenizer = tokenizer_from_json(json, what)?;
    let merges = if matches!(tokenizer.get_model(), ModelWrapper::BPE(_)) {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::malformed(what, format!("not valid JSON: {e}")))?;
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
    Ok(Loaded {
        tokenizer,
        merges,
        notes: Vec::new(),
    })
}

/// Loads a tokenizer from a `tokenizer.json`, GGUF or tiktoken file, detecting the format;
/// also returns notes on any approximation made while converting it.
pub fn load_tokenizer(path: &Path) -> Result<(Tokenizer, Vec<String>)> {
    let loaded = load(path)?;
    Ok((loaded.tokenizer, loaded.notes))
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
fn assemble(
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

fn bpe(
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
fn merges_from_priorities(
    tokens: &[(String, u32)],
    priority: impl Fn(u32) -> f64,
    skip: impl Fn(u32) -> bool,
) -> Vec<(String, String)> {
    let vocab: AHashMap<&str, u32> = tokens.iter().map(|(t, id)| (t.as_str(), *id)).collect();
    let mut merges: Vec<(f64, u32, u32, u32, &str, &str)> = Vec::new();
    for (token, id) in tokens {
        if skip(*id) {
            continue;
        }
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                if skip(l) || skip(r) {
                    continue;
                }
                merges.push((priority(*id), *id, l, r, left, right));
            }
        }
    }
    merges.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    merges
        .into_iter()
        .map(|m| (m.4.to_owned(), m.5.to_owned()))
        .collect()
}

const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split_regex(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

/// The pre-tokenizer of a byte-level BPE named by GGUF's `tokenizer.ggml.pre`, with a note when
/// the name is unknown and GPT-2's rule is used instead.
fn byte_level_pre_tokenizer(pre: &str) -> (Value, Option<String>) {
    match pre {
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            None,
        ),
        "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => (
            json!({"type": "Sequence", "pretokenizers": [split_regex(LLAMA3_PATTERN), byte_level(false)]}),
            None,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            json!({"type": "Sequence", "pretokenizers": [split_regex(QWEN2_PATTERN), byte_level(false)]}),
            None,
        ),
        "gpt-2" | "gpt2" | "default" | "" => (byte_level(true), None),
        other => (
            byte_level(true),
            Some(format!(
                "unknown pre-tokenizer `{other}`: GPT-2's splitting rule used instead, so a few \
                 tokens may be misclassified as unreachable"
            )),
        ),
    }
}

fn strings(meta: &GgufMetadata, key: &str, what: &str) -> Result<Vec<String>> {
    let arr = meta
        .get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| Error::malformed(what, format!("no string array `{key}`")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::malformed(what, format!("`{key}` holds a non-string")))
        })
        .collect()
}

fn numbers(meta: &GgufMetadata, key: &str, n: usize, what: &str) -> Result<Option<Vec<f64>>> {
    let Some(v) = meta.get(key) else {
        return Ok(None);
    };
    let arr = v
        .as_array()
        .ok_or_else(|| Error::malformed(what, format!("`{key}` is not an array")))?;
    if arr.len() != n {
        return Err(Error::malformed(
            what,
            format!("`{key}` has {} entries but there are {n} tokens", arr.len()),
        ));
    }
    arr.iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| Error::malformed(what, format!("`{key}` holds a non-number")))
        })
        .collect::<Result<Vec<f64>>>()
        .map(Some)
}

/// GGUF token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_UNUSED: i64 = 5;

/// Builds the tokenizer described by a GGUF file's tokenizer metadata.
///
/// Supported `tokenizer.ggml.model` values: `gpt2` (byte-level BPE with merges), `llama`
/// (SentencePiece-style BPE with byte fallback, merges derived from the scores) and `bert`
/// (WordPiece). Control and unused tokens become special added tokens; user-defined tokens
/// become added tokens.
pub fn gguf_tokenizer(meta: &GgufMetadata, what: &str) -> Result<(Tokenizer, Vec<String>)> {
    let loaded = gguf_tokenizer_with_merges(meta, what)?;
    Ok((loaded.tokenizer, loaded.notes))
}

/// [`gguf_tokenizer`], keeping the BPE merges.
pub fn gguf_tokenizer_with_merges(meta: &GgufMetadata, what: &str) -> Result<Loaded> {
    let model = meta
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| Error::malformed(what, "no `tokenizer.ggml.model`: no tokenizer inside"))?;
    let tokens = strings(meta, "tokenizer.ggml.tokens", what)?;
    let n = tokens.len();
    let types: Vec<i64> = numbers(meta, "tokenizer.ggml.token_type", n, what)?
        .map(|v| v.into_iter().map(|x| x as i64).collect())
        .unwrap_or_else(|| vec![1; n]);
    let mut notes = Vec::new();
    let mut added = Vec::new();
    let mut in_model: Vec<(String, u32)> = Vec::with_capacity(n);
    let mut seen: AHashMap<&str, u32> = AHashMap::with_capacity(n);
    for (id, (token, &ty)) in tokens.iter().zip(&types).enumerate() {
        let id = id as u32;
        match ty {
            TYPE_CONTROL | TYPE_UNUSED => added.push((token.clone(), true)),
            TYPE_USER_DEFINED => added.push((token.clone(), false)),
            _ => {}
        }
        // The model's vocabulary keeps every token (so ids stay dense); a repeated string keeps
        // its first id, and later copies can never be produced.
        if seen.insert(token.as_str(), id).is_none() {
            in_model.push((token.clone(), id));
        }
    }
    let vocab: AHashMap<String, u32> = in_model.iter().cloned().collect();
    let duplicates = n - in_model.len();
    if duplicates > 0 {
        notes.push(format!(
            "{duplicates} token string(s) appear more than once; only the first id of each can be produced"
        ));
    }
    let is_added = |id: u32| matches!(types[id as usize], TYPE_CONTROL | TYPE_UNUSED);
    let unk = types
        .iter()
        .position(|&t| t == TYPE_UNKNOWN)
        .map(|i| tokens[i].clone());
    let mut kept_merges = None;
    let tokenizer = match model {
        "gpt2" => {
            let merges: Vec<(String, String)> = strings(meta, "tokenizer.ggml.merges", what)?
                .iter()
                .map(|m| {
                    let (a, b) = m.split_once(' ').ok_or_else(|| {
                        Error::malformed(what, format!("merge {m:?} is not two tokens"))
                    })?;
                    Ok((a.to_owned(), b.to_owned()))
                })
                .collect::<Result<_>>()?;
            let pre = meta
                .get("tokenizer.ggml.pre")
                .and_then(GgufValue::as_str)
                .unwrap_or("default");
            let (pre_tokenizer, note) = byte_level_pre_tokenizer(pre);
            notes.extend(note);
            let ignore_merges = matches!(pre, "llama-bpe" | "llama3");
            let model = bpe(vocab, merges.clone(), unk, false, ignore_merges, what)?;
            kept_merges = Some(merges);
            assemble(model, Value::Null, pre_tokenizer, byte_level(true), &added)?
        }
        "llama" => {
            let scores = numbers(meta, "tokenizer.ggml.scores", n, what)?.ok_or_else(|| {
                Error::malformed(
                    what,
                    "no `tokenizer.ggml.scores` for a SentencePiece vocabulary",
                )
            })?;
            let add_prefix = meta
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(GgufValue::as_bool)
                .unwrap_or(true);
            let merges = merges_from_priorities(
                &in_model,
                |id| -scores[id as usize],
                |id| is_added(id) || types[id as usize] == 6,
            );
            let mut normalizers = Vec::new();
            if add_prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            normalizers.push(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            );
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if add_prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let model = bpe(vocab, merges.clone(), unk, true, false, what)?;
            kept_merges = Some(merges);
            assemble(
                model,
                json!({"type": "Sequence", "normalizers": normalizers}),
                Value::Null,
                json!({"type": "Sequence", "decoders": decoders}),
                &added,
            )?
        }
        "bert" => {
            let model = WordPiece::builder()
                .vocab(vocab)
                .unk_token(unk.unwrap_or_else(|| "[UNK]".into()))
                .continuing_subword_prefix("##".into())
                .build()
                .map_err(|e| {
                    Error::malformed(what, format!("invalid WordPiece vocabulary: {e}"))
                })?;
            assemble(
                model,
                json!({"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                    "strip_accents": null, "lowercase": true}),
                json!({"type": "BertPreTokenizer"}),
                json!({"type": "WordPiece", "prefix": "##", "cleanup": true}),
                &added,
            )?
        }
        other => {
            return Err(Error::value(
                "tokenizer.ggml.model",
                "one of gpt2, llama, bert",
                format!("{other:?}"),
            ))
        }
    };
    Ok(Loaded {
        tokenizer,
        merges: kept_merges,
        notes,
    })
}

/// Builds a byte-level BPE tokenizer (GPT-2 style) from a tiktoken rank file.
///
/// Each line is `base64(token bytes) rank`. Ranks become ids; merges are derived from the
/// ranks (see `merges_from_priorities`); GPT-2's pre-tokenizer splits the text, and the id
/// after the last rank is `<|endoftext|>`, a special token, as in GPT-2.
pub fn tiktoken_tokenizer(text: &str, what: &str) -> Result<Tokenizer> {
    Ok(tiktoken_tokenizer_with_merges(text, what)?.tokenizer)
}

/// [`tiktoken_tokenizer`], keeping the BPE merges.
pub fn tiktoken_tokenizer_with_merges(text: &str, what: &str) -> Result<Loaded> {
    let table = byte_to_char();
    let mut tokens: Vec<(String, u32)> = Vec::new();
    let engine = base64::engine::general_purpose::STANDARD;
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            |detail: String| Error::malformed(what, format!("line {}: {detail}", line_no + 1));
        let (b64, rank) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("expected `base64 rank`, got {line:?}")))?;
        let bytes = engine
            .decode(b64)
            .map_err(|e| bad(format!("invalid base64 {b64:?}: {e}")))?;
        let rank: u32 = rank
            .trim()
            .parse()
            .map_err(|_| bad(format!("invalid rank {rank:?}")))?;
        if bytes.is_empty() {
            return Err(bad("empty token".into()));
        }
        let token: String = bytes.iter().map(|&b| table[b as usize]).collect();
        tokens.push((token, rank));
    }
    if tokens.is_empty() {
        return Err(Error::malformed(what, "no ranks in the file"));
    }
    let n = tokens.len() as u32;
    let mut ids: Vec<u32> = tokens.iter().map(|t| t.1).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() as u32 != n || ids.last().copied() != Some(n - 1) {
        return Err(Error::malformed(
            what,
            format!("ranks must be 0..{n} without gaps or repeats"),
        ));
    }
    let merges = merges_from_priorities(&tokens, f64::from, |_| false);
    let vocab: AHashMap<String, u32> = tokens.iter().cloned().collect();
    if vocab.len() != tokens.len() {
        return Err(Error::malformed(what, "the same token appears twice"));
    }
    // tiktoken returns a whole pre-token directly when it is in the vocabulary: ignore_merges.
    let model = bpe(vocab, merges.clone(), None, false, true, what)?;
    let added = [("<|endoftext|>".to_owned(), true)];
    Ok(Loaded {
        tokenizer: assemble(
            model,
            Value::Null,
            byte_level(true),
            byte_level(true),
            &added,
        )?,
        merges: Some(merges),
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let m = merges_from_priorities(&toks, f64::from, |_| false);
        let m: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(m, vec![("a", "b"), ("b", "c"), ("a", "bc"), ("ab", "c")]);
    }

    #[test]
    fn tiktoken_errors_name_the_line() {
        let e = tiktoken_tokenizer("YQ== 0\nnot-base64! 1\n", "r.tiktoken").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = tiktoken_tokenizer("YQ== 0\nYg== 5\n", "r.tiktoken").unwrap_err();
        assert!(e.to_string().contains("without gaps"), "{e}");
    }
}
