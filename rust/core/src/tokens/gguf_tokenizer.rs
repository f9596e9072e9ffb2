//! The tokenizer described by a GGUF file's metadata, rebuilt as a `tokenizers` tokenizer
//! that encodes text as the model's own tokenizer does.
//!
//! llama.cpp's tokenizer model types: `gpt2` (byte-level BPE, split per the
//! `tokenizer.ggml.pre` label, see [`super::pretokenizers`]), `gemma4` (BPE with merges on raw
//! UTF-8, spaces written as `▁`, byte fallback), `llama` (SentencePiece BPE: score-ranked
//! merges, byte fallback, optional space prefix) and `bert` (WordPiece; GGUF writes word-start
//! pieces with a `▁` prefix and continuation pieces bare, the reverse of `##`), `t5`
//! (SentencePiece unigram with a precompiled charsmap, see [`ugm`]) and `rwkv` (greedy
//! longest match over byte-escaped tokens, see [`rwkv`]). The other types llama.cpp knows
//! (`plamo2`, `hybriddna`, `whitespace`, ...) are refused with one clear error.

use ahash::AHashMap;
use serde_json::{json, Value};
use tokenizers::models::wordpiece::WordPiece;

use super::gguf::{GgufMetadata, GgufValue};
use super::pretokenizers::PreTokenization;
use super::sources::{assemble, bpe, merges_from_priorities, Loaded};
use crate::{Error, Result};

mod rwkv;
mod ugm;
pub(crate) use ugm::check_charsmap;

/// GGUF token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_UNUSED: i64 = 5;
const TYPE_BYTE: i64 = 6;

/// The model types this module converts.
const SUPPORTED: &str = "gpt2, llama, bert, gemma4, t5, rwkv";

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

fn merges(meta: &GgufMetadata, what: &str) -> Result<Vec<(String, String)>> {
    strings(meta, "tokenizer.ggml.merges", what)?
        .iter()
        .map(|m| {
            // Split at the first space after the first character: a merge's left part may
            // itself be a space (raw-UTF-8 vocabularies).
            let first = m.chars().next().map_or(0, char::len_utf8);
            let at = m[first..].find(' ').map(|i| i + first);
            let (a, b) = at
                .map(|i| (&m[..i], &m[i + 1..]))
                .ok_or_else(|| Error::malformed(what, format!("merge {m:?} is not two tokens")))?;
            Ok((a.to_owned(), b.to_owned()))
        })
        .collect()
}

/// SentencePiece's decoder: `▁` back to spaces, `<0xNN>` pieces back to bytes.
fn sentencepiece_decoder(strip_prefix: bool) -> Value {
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if strip_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({"type": "Sequence", "decoders": decoders})
}

/// Builds the tokenizer described by a GGUF file's tokenizer metadata (see the module doc).
/// Control and unused tokens become special added tokens; user-defined tokens become added
/// tokens. A pre-tokenizer label ferrolm does not know is a warning in [`Loaded::warnings`].
pub fn gguf_tokenizer_with_merges(meta: &GgufMetadata, what: &str) -> Result<Loaded> {
    let model = meta
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| Error::malformed(what, "no `tokenizer.ggml.model`: no tokenizer inside"))?;
    if !matches!(model, "gpt2" | "llama" | "bert" | "gemma4" | "t5" | "rwkv") {
        let known = matches!(
            model,
            "plamo2" | "hybriddna" | "whitespace" | "no_vocab" | "none" | "test"
        );
        let why = if known {
            " (a llama.cpp type ferrolm does not convert)"
        } else {
            ""
        };
        return Err(Error::value(
            "tokenizer.ggml.model",
            format!("one of {SUPPORTED}"),
            format!("{model:?}{why}"),
        ));
    }
    let tokens = strings(meta, "tokenizer.ggml.tokens", what)?;
    let n = tokens.len();
    if u32::try_from(n).is_err() {
        return Err(Error::malformed(
            what,
            format!("{n} tokens do not fit 32-bit ids"),
        ));
    }
    let types: Vec<i64> = numbers(meta, "tokenizer.ggml.token_type", n, what)?
        .map(|v| v.into_iter().map(|x| x as i64).collect())
        .unwrap_or_else(|| vec![1; n]);
    match model {
        "t5" => return ugm::convert(meta, &tokens, &types, what),
        "rwkv" => return rwkv::convert(&tokens, &types, what),
        _ => {}
    }
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let mut added = Vec::new();
    let mut in_model: Vec<(String, u32)> = Vec::new();
    in_model
        .try_reserve(n)
        .map_err(|_| Error::malformed(what, format!("{n} tokens: out of memory")))?;
    let mut seen: AHashMap<&str, u32> = AHashMap::new();
    for (id, (token, &ty)) in tokens.iter().zip(&types).enumerate() {
        let id = id as u32;
        match ty {
            TYPE_CONTROL | TYPE_UNUSED => added.push((token.clone(), true)),
            TYPE_USER_DEFINED => added.push((token.clone(), false)),
            _ => {}
        }
        // A repeated string keeps its first id; later copies can never be produced.
        if seen.insert(token.as_str(), id).is_none() {
            in_model.push((token.clone(), id));
        }
    }
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
    let label = meta.get("tokenizer.ggml.pre").and_then(GgufValue::as_str);
    let mut merge_ids = None;
    let (tokenizer, kept_merges) = match model {
        "gpt2" | "gemma4" => {
            let (pre, warning) = if model == "gemma4" {
                (PreTokenization::gemma4(), None)
            } else {
                PreTokenization::for_label(label)
            };
            warnings.extend(warning);
            let merges = merges(meta, what)?;
            let vocab: AHashMap<String, u32> = in_model.iter().cloned().collect();
            let byte_fallback = !pre.byte_encode;
            let model = bpe(
                vocab,
                merges.clone(),
                unk,
                byte_fallback,
                pre.ignore_merges,
                what,
            )?;
            let decoder = if pre.byte_encode {
                super::pretokenizers::byte_level(true)
            } else {
                sentencepiece_decoder(false)
            };
            let tok = assemble(
                model,
                pre.normalizer(),
                pre.pre_tokenizer(),
                decoder,
                &added,
            )?;
            (tok, Some(merges))
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
            let derived = merges_from_priorities(
                &in_model,
                |id| -scores[id as usize],
                |id| is_added(id) || types[id as usize] == TYPE_BYTE,
            );
            merge_ids = Some(derived.ids);
            let merges = derived.pairs;
            let mut normalizers = Vec::new();
            if add_prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            normalizers.push(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            );
            let vocab: AHashMap<String, u32> = in_model.iter().cloned().collect();
            let model = bpe(vocab, merges.clone(), unk, true, false, what)?;
            let tok = assemble(
                model,
                json!({"type": "Sequence", "normalizers": normalizers}),
                Value::Null,
                sentencepiece_decoder(add_prefix),
                &added,
            )?;
            (tok, Some(merges))
        }
        _ => {
            // "bert": undo GGUF's spelling (word starts `▁x`, continuations bare `x`) back to
            // WordPiece's (`x`, `##x`); bracketed names like `[CLS]` are kept as they are.
            let mut vocab: AHashMap<String, u32> = AHashMap::new();
            for (token, id) in &in_model {
                let bracketed = token.starts_with('[') && token.ends_with(']');
                let piece = if bracketed || is_added(*id) {
                    token.clone()
                } else if let Some(word) = token.strip_prefix('\u{2581}') {
                    word.to_owned()
                } else {
                    format!("##{token}")
                };
                vocab.entry(piece).or_insert(*id);
            }
            let unk = unk.unwrap_or_else(|| "[UNK]".into());
            let model = WordPiece::builder()
                .vocab(vocab)
                .unk_token(unk)
                .continuing_subword_prefix("##".into())
                .build()
                .map_err(|e| {
                    Error::malformed(what, format!("invalid WordPiece vocabulary: {e}"))
                })?;
            let tok = assemble(
                model,
                json!({"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                    "strip_accents": null, "lowercase": true}),
                json!({"type": "BertPreTokenizer"}),
                json!({"type": "WordPiece", "prefix": "##", "cleanup": true}),
                &added,
            )?;
            (tok, None)
        }
    };
    Ok(Loaded {
        tokenizer,
        merges: kept_merges,
        merge_ids,
        n_ids: Some(n),
        notes,
        warnings,
    })
}

#[cfg(test)]
mod tests;
