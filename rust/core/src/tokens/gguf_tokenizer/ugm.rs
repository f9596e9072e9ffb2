//! llama.cpp's `t5` model type (UGM: a SentencePiece unigram model), rebuilt from the
//! `tokenizers` crate's parts as llama.cpp's `llm_tokenizer_ugm` encodes.
//!
//! What llama.cpp does, and how each step is reproduced:
//! - the text is first normalised by the precompiled charsmap (`Precompiled`), then spaces are
//!   handled per `tokenizer.ggml.remove_extra_whitespaces` and `add_space_prefix` and written
//!   as `▁` (a few `Replace`/`Prepend` steps, see [`whitespace`]);
//! - Viterbi over the normal, user-defined (score 0) and unused tokens with the token scores;
//!   a character no token covers alone is the unknown token scored `min(normal) - 10`, and
//!   runs of unknown tokens are fused (the crate's `Unigram` does the same);
//! - control and unknown tokens are special added tokens (split out as llama.cpp does with
//!   `parse_special`), user-defined tokens are split out before normalisation as llama.cpp
//!   always does.
//!
//! Known differences, each a note on the vocabularies it can affect: the crate's
//! `Precompiled` replaces a whole grapheme cluster shorter than 6 bytes by the mapping of its
//! shortest mapped prefix, where llama.cpp maps the longest prefix and keeps the rest, so a
//! mapped character followed by a combining mark inside one grapheme can normalise
//! differently; control, unknown and byte tokens stay in the model (their ids must hold) and
//! could be matched where normalisation creates their text; unused tokens scored below every
//! normal token lower the crate's unknown score (a warning when that can change a split).

use base64::Engine as _;
use serde_json::{json, Value};
use tokenizers::models::unigram::Unigram;

use super::super::gguf::{GgufMetadata, GgufValue};
use super::super::sources::{assemble, Loaded};
use super::{
    numbers, sentencepiece_decoder, TYPE_CONTROL, TYPE_UNKNOWN, TYPE_UNUSED, TYPE_USER_DEFINED,
};
use crate::{Error, Result};

const NORMAL: i64 = 1;
/// The largest charsmap accepted (real ones are a few hundred kilobytes).
const MAX_CHARSMAP_BYTES: usize = 64 << 20;
const SPACE: &str = "\u{2581}";

/// The charsmap bytes of `tokenizer.ggml.precompiled_charsmap`, checked so that neither
/// llama.cpp's walk nor the crate's can index outside it (see [`check_charsmap`]).
fn charsmap(meta: &GgufMetadata, what: &str) -> Result<Option<Vec<u8>>> {
    const KEY: &str = "tokenizer.ggml.precompiled_charsmap";
    let Some(v) = meta.get(KEY) else {
        return Ok(None);
    };
    let arr = v
        .as_array()
        .ok_or_else(|| Error::malformed(what, format!("`{KEY}` is not an array")))?;
    if arr.is_empty() {
        return Ok(None);
    }
    if arr.len() > MAX_CHARSMAP_BYTES {
        return Err(Error::malformed(
            what,
            format!(
                "`{KEY}` has {} bytes, more than {MAX_CHARSMAP_BYTES}",
                arr.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(arr.len())
        .map_err(|_| Error::malformed(what, format!("`{KEY}`: out of memory")))?;
    for x in arr {
        bytes.push(match *x {
            GgufValue::U8(b) => b,
            GgufValue::I8(b) => b as u8,
            _ => {
                return Err(Error::malformed(
                    what,
                    format!("`{KEY}` must hold int8 or uint8 values"),
                ))
            }
        });
    }
    check_charsmap(&bytes)
        .map_err(|detail| Error::malformed(what, format!("`{KEY}`: {detail}")))?;
    Ok(Some(bytes))
}

/// Checks a precompiled charsmap: `u32` size of the XOR-compressed double array, the array,
/// then NUL-terminated UTF-8 replacements. Every node any input can reach is walked: all 255
/// child slots must lie inside the array and every leaf must point at a terminated
/// replacement that starts on a character boundary.
pub(crate) fn check_charsmap(bytes: &[u8]) -> std::result::Result<(), String> {
    let head: [u8; 4] = bytes
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or("shorter than its 4-byte size header")?;
    let blob = u32::from_le_bytes(head) as usize;
    if blob % 4 != 0 || blob == 0 {
        return Err(format!("array size {blob} is not a positive multiple of 4"));
    }
    if blob + 4 >= bytes.len() {
        return Err(format!(
            "array size {blob} leaves no replacement strings in {} bytes",
            bytes.len()
        ));
    }
    let units: Vec<u32> = bytes[4..4 + blob]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let replacements = std::str::from_utf8(&bytes[4 + blob..])
        .map_err(|e| format!("replacement strings are not UTF-8 ({e})"))?;
    let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
    let len = units.len();
    let mut seen = vec![false; len];
    let mut stack = vec![offset(units[0])];
    while let Some(node) = stack.pop() {
        if node >= len {
            return Err(format!("node {node} lies outside the {len}-entry array"));
        }
        if std::mem::replace(&mut seen[node], true) {
            continue;
        }
        for c in 1..=255usize {
            let slot = node ^ c;
            let unit = *units
                .get(slot)
                .ok_or_else(|| format!("slot {slot} lies outside the {len}-entry array"))?;
            if (unit & ((1 << 31) | 0xff)) as usize != c {
                continue;
            }
            let child = slot ^ offset(unit);
            if (unit >> 8) & 1 == 1 {
                let value = units
                    .get(child)
                    .ok_or_else(|| format!("leaf {child} lies outside the array"))?
                    & ((1 << 31) - 1);
                let at = value as usize;
                let ok = replacements.is_char_boundary(at)
                    && replacements.as_bytes()[at.min(replacements.len())..].contains(&0);
                if !ok {
                    return Err(format!(
                        "replacement offset {at} is not a terminated string"
                    ));
                }
            }
            stack.push(child);
        }
    }
    Ok(())
}

/// The normaliser: the charsmap, then llama.cpp's space handling (`normalize` in
/// `llm_tokenizer_ugm_session`, with whitespace escaped and never a suffix for UGM).
///
/// With `remove_extra_whitespaces`, every run of non-space text gets one `▁` in front and
/// spaces vanish (so a `▁` is prepended even without `add_space_prefix`). Without it, each
/// space becomes `▁`, and `add_space_prefix` adds one `▁` unless the text is only spaces.
fn whitespace(charsmap: Option<&[u8]>, merge: bool, add_prefix: bool) -> Value {
    let mut steps = Vec::new();
    if let Some(map) = charsmap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(map);
        steps.push(json!({"type": "Precompiled", "precompiled_charsmap": encoded}));
    }
    let replace_regex =
        |re: &str, to: &str| json!({"type": "Replace", "pattern": {"Regex": re}, "content": to});
    if merge {
        steps.push(replace_regex("^ +| +$", ""));
        steps.push(replace_regex(" +", SPACE));
        steps.push(json!({"type": "Prepend", "prepend": SPACE}));
    } else {
        if add_prefix {
            steps.push(json!({"type": "Prepend", "prepend": SPACE}));
            steps.push(replace_regex(&format!("^{SPACE}(?= *$)"), ""));
        }
        steps.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE}));
    }
    json!({"type": "Sequence", "normalizers": steps})
}

/// Builds the tokenizer of a `t5` (UGM) vocabulary; see the module doc.
pub(super) fn convert(
    meta: &GgufMetadata,
    tokens: &[String],
    types: &[i64],
    what: &str,
) -> Result<Loaded> {
    let n = tokens.len();
    let scores: Vec<f64> = match numbers(meta, "tokenizer.ggml.scores", n, what)? {
        // llama.cpp keeps scores as f32 and sums them as f64.
        Some(s) => s.into_iter().map(|x| f64::from(x as f32)).collect(),
        None => vec![0.0; n],
    };
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::malformed(
            what,
            format!("token {i} has the score {}", scores[i]),
        ));
    }
    let flag = |key: &str| meta.get(key).and_then(GgufValue::as_bool).unwrap_or(false);
    let add_prefix = flag("tokenizer.ggml.add_space_prefix");
    let merge = flag("tokenizer.ggml.remove_extra_whitespaces");
    let unk = match meta.get("tokenizer.ggml.unknown_token_id") {
        Some(v) => v.as_i64().ok_or_else(|| {
            Error::malformed(what, "`tokenizer.ggml.unknown_token_id` is not an integer")
        })?,
        None => 2,
    };
    let unk = usize::try_from(unk)
        .ok()
        .filter(|&u| u < n)
        .ok_or_else(|| {
            Error::malformed(
                what,
                format!("unknown token id {unk} is not below the {n} tokens"),
            )
        })?;
    let map = charsmap(meta, what)?;

    let min_normal = tokens
        .iter()
        .zip(types.iter().zip(&scores))
        .filter(|(_, (&ty, _))| ty == NORMAL)
        .map(|(_, (_, &s))| s)
        .fold(f64::INFINITY, f64::min);
    // Every token keeps its string in the model (the added tokens and a saved tokenizer.json
    // find their ids through it). Tokens llama.cpp never matches inside text get the lowest
    // normal score, so that the crate's unknown score (the minimum over all entries, minus
    // 10) stays llama.cpp's.
    let filler = if min_normal.is_finite() {
        min_normal
    } else {
        0.0
    };
    let mut vocab: Vec<(String, f64)> = Vec::new();
    vocab
        .try_reserve_exact(n)
        .map_err(|_| Error::malformed(what, format!("{n} tokens: out of memory")))?;
    let mut added = Vec::new();
    let mut unmatched = 0usize;
    for (id, token) in tokens.iter().enumerate() {
        let score = match types[id] {
            NORMAL | TYPE_UNUSED => scores[id],
            // llama.cpp scores user-defined tokens 0 in its Viterbi.
            TYPE_USER_DEFINED => {
                added.push((token.clone(), false));
                0.0
            }
            ty => {
                if matches!(ty, TYPE_CONTROL | TYPE_UNKNOWN) {
                    added.push((token.clone(), true));
                }
                unmatched += 1;
                filler
            }
        };
        vocab.push((token.clone(), score));
    }
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    if unmatched > 0 {
        notes.push(format!(
            "{unmatched} control, unknown or byte token(s) stay in the unigram model to keep \
             their ids; llama.cpp never matches them inside text, so a text whose normalised \
             form spells one without the raw text doing so (e.g. fullwidth brackets) may \
             encode differently"
        ));
    }
    // An unused token scored below every normal token lowers the crate's unknown score.
    // That changes no segmentation when every character of every token is a token of its
    // own: then each path pays the unknown score once per uncovered character.
    let lowest = vocab.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
    if lowest < filler {
        let singles: ahash::AHashSet<char> = vocab
            .iter()
            .filter_map(|(t, _)| {
                let mut chars = t.chars();
                chars.next().filter(|_| chars.next().is_none())
            })
            .collect();
        let uncovered = vocab
            .iter()
            .flat_map(|(t, _)| t.chars())
            .find(|c| !singles.contains(c));
        if let Some(c) = uncovered {
            warnings.push(format!(
                "unused token(s) score below every normal token, and {c:?} appears in a token \
                 without being one: where it meets a character no token covers, that \
                 character is scored from the lower minimum (llama.cpp: the lowest normal \
                 score), so such text may split differently"
            ));
        }
    }
    if map.is_some() {
        notes.push(
            "unigram normalisation: a character the charsmap rewrites, followed by a combining \
             mark in one grapheme shorter than 6 bytes, is rewritten as the Hugging Face \
             tokenizer does (whole grapheme), which can differ from llama.cpp"
                .into(),
        );
    }
    let model = Unigram::from(vocab, Some(unk), false)
        .map_err(|e| Error::malformed(what, format!("invalid unigram vocabulary: {e}")))?;
    let tokenizer = assemble(
        model,
        whitespace(map.as_deref(), merge, add_prefix),
        Value::Null,
        sentencepiece_decoder(add_prefix),
        &added,
    )?;
    Ok(Loaded {
        tokenizer,
        merges: None,
        merge_ids: None,
        n_ids: None,
        notes,
        warnings,
    })
}
