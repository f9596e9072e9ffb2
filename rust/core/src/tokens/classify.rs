//! One token's scan: decode it alone, take its exact bytes where the tokenizer makes them
//! knowable, re-encode the text and categorise the token.

use ahash::AHashMap;
use tokenizers::{
    ModelWrapper, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer,
};

use super::containment::Surfaces;
use super::context::Separator;
use super::fast::{FastPath, Scratch};
use super::scan::id_space;
use super::{sources, Category, PackedStrings};
use crate::{Error, Result};

/// What the scanner needs to know about a tokenizer beyond its public `encode`/`decode`.
pub(super) struct Traits {
    /// The decoder maps GPT-2 byte characters back to bytes.
    byte_level: bool,
    /// The model falls back to `<0xNN>` byte tokens.
    byte_fallback: bool,
    /// WordPiece continuation prefix, if the model is WordPiece.
    continuation_prefix: Option<String>,
    /// The id of the lone `▁` token that SentencePiece-style tokenizers put in front of text
    /// (the decoder strips that space again, so re-encoding adds it back).
    prepended_id: Option<u32>,
    /// The normaliser or pre-tokenizer puts a `▁` in front of the text.
    prepends: bool,
}

fn traits(tok: &Tokenizer) -> Traits {
    let decoder = tok
        .get_decoder()
        .and_then(|d| serde_json::to_string(d).ok())
        .unwrap_or_default();
    let continuation_prefix = match tok.get_model() {
        // An empty prefix (the greedy byte match of rwkv vocabularies) marks no piece as a
        // continuation: every token can start a word.
        ModelWrapper::WordPiece(wp) if !wp.continuing_subword_prefix.is_empty() => {
            Some(wp.continuing_subword_prefix.clone())
        }
        _ => None,
    };
    let json = |v: Option<String>| v.unwrap_or_default();
    let normalizer = json(
        tok.get_normalizer()
            .and_then(|n| serde_json::to_string(n).ok()),
    );
    let pre_tokenizer = json(
        tok.get_pre_tokenizer()
            .and_then(|p| serde_json::to_string(p).ok()),
    );
    let prepends = normalizer.contains("\"Prepend\"")
        || (pre_tokenizer.contains("\"Metaspace\"") && !pre_tokenizer.contains("\"never\""));
    let prepended_id = if prepends {
        tok.token_to_id("\u{2581}")
    } else {
        None
    };
    Traits {
        prepended_id,
        prepends,
        byte_level: decoder.contains("\"ByteLevel\""),
        byte_fallback: decoder.contains("\"ByteFallback\""),
        continuation_prefix,
    }
}

pub(crate) fn byte_fallback_value(token: &str) -> Option<u8> {
    if token.len() != 6 {
        return None;
    }
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The exact bytes a token stands for, when the tokenizer makes them knowable: written to
/// `out`, returns whether it did.
fn token_bytes(
    token: &str,
    traits: &Traits,
    char_to_byte: &AHashMap<char, u8>,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    if traits.byte_fallback {
        if let Some(b) = byte_fallback_value(token) {
            out.push(b);
            return true;
        }
    }
    if traits.byte_level {
        for c in token.chars() {
            match char_to_byte.get(&c) {
                Some(&b) => out.push(b),
                None => return false,
            }
        }
        return true;
    }
    false
}

/// Whether `s` holds U+FFFD (a byte loop: `str::contains(char)` compares every window of
/// a short text through `memcmp`).
fn has_replacement_char(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(2)).any(|i| b[i] == 0xef && b[i + 1] == 0xbf && b[i + 2] == 0xbd)
}

fn impossible_in_utf8(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == 0xc0 || b == 0xc1 || b >= 0xf5)
}

/// Whether a continuation piece's text survives normalisation and pre-tokenization as one
/// unchanged word part: then greedy longest-match-first WordPiece picks the whole piece when
/// the word ends with it, so it can be produced.
fn continuation_reachable(tok: &Tokenizer, suffix: &str) -> Result<bool> {
    // The piece must survive inside a word: after a letter ("a"), normalisation must leave it
    // unchanged and the pre-tokenizer must not split it off (punctuation, CJK characters).
    let word = format!("a{suffix}");
    let mut normalized = tokenizers::NormalizedString::from(word.as_str());
    if let Some(n) = tok.get_normalizer() {
        n.normalize(&mut normalized)
            .map_err(|e| Error::Internal(format!("normalizer failed: {e}")))?;
    }
    if normalized.get() != word {
        return Ok(false);
    }
    let mut pre = PreTokenizedString::from(normalized);
    if let Some(p) = tok.get_pre_tokenizer() {
        p.pre_tokenize(&mut pre)
            .map_err(|e| Error::Internal(format!("pre-tokenizer failed: {e}")))?;
    }
    let splits = pre.get_splits(OffsetReferential::Original, OffsetType::Byte);
    Ok(splits.len() == 1 && splits[0].0 == word)
}

/// The scan of a run of consecutive ids, written into flat buffers (no allocation per token).
pub(super) struct Chunk {
    pub(super) tokens: PackedStrings,
    pub(super) decoded: PackedStrings,
    pub(super) category: Vec<Category>,
    pub(super) single_byte: Vec<bool>,
    pub(super) continuation: Vec<bool>,
    pub(super) impossible: Vec<bool>,
    /// CSR offsets of each token's ids in `reencoded` (from 0).
    pub(super) reencoded_offsets: Vec<u32>,
    pub(super) reencoded: Vec<u32>,
    /// Each token's byte string, when the containment report needs them (else empty).
    pub(super) surfaces: Surfaces,
    /// Tokens the library had to re-encode (no fast path, or the fast path declined).
    pub(super) library: usize,
}

impl Chunk {
    /// Room for `n` tokens (their strings too unless `tokens_from_table`).
    pub(super) fn with_capacity(n: usize, tokens_from_table: bool) -> Self {
        let token_capacity = if tokens_from_table { 0 } else { n };
        Chunk {
            tokens: PackedStrings::with_capacity(token_capacity, 8 * token_capacity),
            decoded: PackedStrings::with_capacity(n, 8 * n),
            category: Vec::with_capacity(n),
            single_byte: Vec::with_capacity(n),
            continuation: Vec::with_capacity(n),
            impossible: Vec::with_capacity(n),
            reencoded_offsets: Vec::from([0]),
            reencoded: Vec::new(),
            surfaces: Surfaces {
                bytes: Vec::new(),
                offsets: vec![0],
            },
            library: 0,
        }
    }
}

/// What the scan needs to know about a tokenizer besides `encode` and `decode`: found once
/// per tokenizer (a [`PreparedTokenizer`](super::PreparedTokenizer) keeps it).
pub(super) struct ScanFacts {
    /// One past the largest token id.
    pub(super) vocab_size: usize,
    /// Per id: an added token marked special.
    pub(super) special: Vec<bool>,
    pub(super) traits: Traits,
    pub(super) char_to_byte: AHashMap<char, u8>,
    /// The "after a separator" context, where it applies (see [`super::context`]).
    pub(super) separator: Option<Separator>,
}

impl ScanFacts {
    /// `merges`: the BPE merges in rank order, when known; `n_ids`: see [`id_space`].
    pub(super) fn new(
        tok: &Tokenizer,
        merges: Option<&[(String, String)]>,
        n_ids: Option<usize>,
    ) -> Self {
        let vocab_size = id_space(tok, n_ids);
        let mut special = vec![false; vocab_size];
        for (id, t) in tok.get_added_tokens_decoder() {
            if let Some(slot) = special.get_mut(id as usize) {
                *slot = t.special;
            }
        }
        let traits = traits(tok);
        ScanFacts {
            separator: Separator::find(tok, traits.prepends, vocab_size, merges),
            vocab_size,
            special,
            traits,
            char_to_byte: sources::char_to_byte(),
        }
    }
}

/// What every token's scan shares.
pub(super) struct ScanContext<'a> {
    pub(super) tok: &'a Tokenizer,
    pub(super) fast: Option<&'a FastPath>,
    pub(super) facts: &'a ScanFacts,
    /// Keep each token's byte string (only the containment report reads it).
    pub(super) surfaces: bool,
    /// The fast path's table holds every token's string: the report copies it whole.
    pub(super) tokens_from_table: bool,
}

/// The per-token flags [`scan_one`] finds besides the texts.
struct TokenFlags {
    category: Category,
    single_byte: bool,
    continuation: bool,
    impossible: bool,
}

/// Scans token `id`, appending its results to `out`.
pub(super) fn scan_one(
    cx: &ScanContext<'_>,
    id: u32,
    scratch: &mut Scratch,
    out: &mut Chunk,
) -> Result<()> {
    let flags = scan_texts(cx, id, scratch, out)?;
    if cx.surfaces {
        out.surfaces.offsets.push(out.surfaces.bytes.len() as u32);
    }
    if !cx.tokens_from_table {
        out.tokens.end_string();
    }
    out.decoded.end_string();
    out.category.push(flags.category);
    out.single_byte.push(flags.single_byte);
    out.continuation.push(flags.continuation);
    out.impossible.push(flags.impossible);
    out.reencoded_offsets.push(out.reencoded.len() as u32);
    Ok(())
}

/// Writes the token's string and decoded text (and surface) into `out`, re-encodes, and
/// returns the flags. `out`'s per-token lists are pushed by the caller.
fn scan_texts(
    cx: &ScanContext<'_>,
    id: u32,
    scratch: &mut Scratch,
    out: &mut Chunk,
) -> Result<TokenFlags> {
    let (tok, fast, traits) = (cx.tok, cx.fast, &cx.facts.traits);
    let mut flags = TokenFlags {
        category: Category::UnreachableMulti,
        single_byte: false,
        continuation: false,
        impossible: false,
    };
    let library_token;
    let token = match fast.and_then(|f| f.token(id)) {
        Some(t) => t,
        None => {
            library_token = tok.id_to_token(id);
            library_token.as_deref()
        }
    };
    let Some(token) = token else {
        // A hole in the id space: nothing can produce it.
        return Ok(flags);
    };
    if !cx.tokens_from_table {
        out.tokens.text.push_str(token);
    }
    let decode_err = |e| Error::Internal(format!("decoding token {id} failed: {e}"));
    let is_special = cx.facts.special.get(id as usize).copied().unwrap_or(false);
    let decoded_start = out.decoded.text.len();
    let decoded_fast = !is_special
        && fast.is_some_and(|f| f.decode_into(token, &mut out.decoded.text, &mut scratch.bytes));
    if !decoded_fast {
        out.decoded
            .text
            .push_str(&tok.decode(&[id], false).map_err(decode_err)?);
    }
    if is_special {
        flags.category = Category::Special;
        return Ok(flags);
    }
    let has_bytes = token_bytes(token, traits, &cx.facts.char_to_byte, &mut scratch.bytes);
    if has_bytes {
        flags.single_byte = scratch.bytes.len() == 1;
        flags.impossible = impossible_in_utf8(&scratch.bytes);
    }
    if let Some(prefix) = &traits.continuation_prefix {
        if let Some(suffix) = token.strip_prefix(prefix.as_str()) {
            if !suffix.is_empty() {
                flags.continuation = true;
                if cx.surfaces {
                    out.surfaces.bytes.extend_from_slice(suffix.as_bytes());
                }
                out.decoded.text.truncate(decoded_start);
                out.decoded.text.push_str(suffix);
                flags.category = if continuation_reachable(tok, suffix)? {
                    Category::Ok
                } else {
                    Category::UnreachableMulti
                };
                return Ok(flags);
            }
        }
    }
    let decoded = &out.decoded.text[decoded_start..];
    let undecodable = match has_bytes {
        true => std::str::from_utf8(&scratch.bytes).is_err(),
        false => has_replacement_char(decoded) && !has_replacement_char(token),
    };
    if cx.surfaces {
        let surface = if has_bytes {
            &scratch.bytes[..]
        } else {
            decoded.as_bytes()
        };
        out.surfaces.bytes.extend_from_slice(surface);
    }
    if undecodable {
        flags.category = Category::Undecodable;
        return Ok(flags);
    }
    let fast_ok = fast
        .and_then(|f| f.encode(tok, id, decoded, scratch))
        .is_some();
    let encoding;
    let mut ids: &[u32] = match fast_ok {
        true => &scratch.ids,
        false => {
            out.library += 1;
            encoding = tok
                .encode_fast(decoded, false)
                .map_err(|e| Error::Internal(format!("encoding token {id} failed: {e}")))?;
            encoding.get_ids()
        }
    };
    if let (Some(p), [first, rest @ ..]) = (traits.prepended_id, ids) {
        if *first == p && !rest.is_empty() && !decoded.starts_with(' ') {
            ids = rest;
        }
    }
    flags.category = category_of(ids, id);
    if flags.category == Category::Ok {
        return Ok(flags);
    }
    let start = out.reencoded.len();
    out.reencoded.extend_from_slice(ids);
    if let Some(sep) = &cx.facts.separator {
        if let Some(category) = after_separator(cx, sep, id, token, scratch, out, start)? {
            flags.category = category;
        }
    }
    Ok(flags)
}

fn category_of(ids: &[u32], id: u32) -> Category {
    match ids {
        [only] if *only == id => Category::Ok,
        [_] => Category::UnreachableSingle,
        _ => Category::UnreachableMulti,
    }
}

/// The "after a separator" context (see [`super::context`]): encodes the separator followed
/// by the text `token` stands for after another token. When the encoding starts with the
/// separator's own ids, returns the category of the rest and leaves the rest (for an
/// unreachable token) in `out.reencoded[start..]` in place of the lone encoding; `None` when
/// the context gives no answer.
fn after_separator(
    cx: &ScanContext<'_>,
    sep: &Separator,
    id: u32,
    token: &str,
    scratch: &mut Scratch,
    out: &mut Chunk,
    start: usize,
) -> Result<Option<Category>> {
    let mut text = std::mem::take(&mut scratch.context);
    let fast_text = cx
        .fast
        .is_some_and(|f| f.context_text(sep.ch, token, &mut text, &mut scratch.bytes));
    if !fast_text && !sep.context_text(cx.tok, id, &mut text)? {
        scratch.context = text;
        return Ok(None);
    }
    let fast_ok = cx
        .fast
        .and_then(|f| f.encode(cx.tok, u32::MAX, &text, scratch))
        .is_some();
    let encoding;
    let ids: &[u32] = match fast_ok {
        true => &scratch.ids,
        false => {
            out.library += 1;
            encoding = cx
                .tok
                .encode_fast(text.as_str(), false)
                .map_err(|e| Error::Internal(format!("encoding token {id} failed: {e}")))?;
            encoding.get_ids()
        }
    };
    let answer = sep.strip(ids).map(|rest| {
        out.reencoded.truncate(start);
        let category = category_of(rest, id);
        if category != Category::Ok {
            out.reencoded.extend_from_slice(rest);
        }
        category
    });
    scratch.context = text;
    Ok(answer)
}
