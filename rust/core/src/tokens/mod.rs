//! Under-trained token detection ("Fishing for Magikarp", Land & Bartolo 2024).
//!
//! Three pieces, each usable alone:
//! - [`scan`]: a parallel pass over a tokenizer's vocabulary that decodes every token and
//!   encodes the text again, sorting tokens into [`Category`]s (ok, special, undecodable,
//!   unreachable as one other token or as several), flagging single-byte tokens, and, for every
//!   token, listing the longer tokens that contain it ([`Containment`]).
//! - [`sources`]: builds the tokenizer from a `tokenizer.json`, a GGUF file's metadata (with
//!   the small reader in [`gguf`]) or a tiktoken rank file.
//! - [`indicators`]: weight-based indicators over an (un)embedding matrix: cosine distance to
//!   the mean of a reference set of unused tokens after removing the dominant direction, row
//!   norms, and groups of identical rows.

mod fast;
pub mod gguf;
pub mod indicators;
mod own_encoding;
pub mod sources;

use fast::{FastPath, Scratch};

use ahash::AHashMap;
use aho_corasick::{AhoCorasick, AhoCorasickKind};
use rayon::prelude::*;
use tokenizers::{
    ModelWrapper, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer,
};

use crate::{Error, Result};

/// What re-encoding a token's decoded text says about the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Category {
    /// Decoding then encoding gives the token back.
    Ok = 0,
    /// A special (control) token: never produced from plain text by design.
    Special = 1,
    /// Its bytes are not valid UTF-8 on their own (a partial character), so decoding it alone
    /// loses information. Such tokens are still produced inside longer texts.
    Undecodable = 2,
    /// The decoded text encodes to one different token (e.g. a duplicate string).
    UnreachableSingle = 3,
    /// The decoded text encodes to several tokens (or none): the token is never produced.
    UnreachableMulti = 4,
}

impl Category {
    /// All categories in code order.
    pub const ALL: [Category; 5] = [
        Category::Ok,
        Category::Special,
        Category::Undecodable,
        Category::UnreachableSingle,
        Category::UnreachableMulti,
    ];

    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Category::Ok => "ok",
            Category::Special => "special",
            Category::Undecodable => "undecodable",
            Category::UnreachableSingle => "unreachable_single",
            Category::UnreachableMulti => "unreachable_multi",
        }
    }
}

/// Options of [`scan`].
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Also compute, for every token, the longer tokens that contain it.
    pub containment: bool,
    /// How many containing tokens to keep per token (the count is always exact).
    pub max_examples: usize,
    /// Tokens longer than this (in bytes) are not searched for contained tokens; this bounds
    /// the number of matches on pathological vocabularies (long runs of one character).
    pub max_token_bytes: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            containment: true,
            max_examples: 5,
            max_token_bytes: 256,
        }
    }
}

/// For every token, the longer tokens whose text contains its text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Containment {
    /// Number of longer tokens containing each token.
    pub count: Vec<u32>,
    /// CSR offsets into [`Containment::examples`], length `vocab_size + 1`.
    pub offsets: Vec<u32>,
    /// Up to `max_examples` containing token ids per token, shortest text first.
    pub examples: Vec<u32>,
}

/// The result of [`scan`]: one entry per token id.
#[derive(Debug, Clone)]
pub struct ScanReport {
    /// The vocabulary string of each id (empty where the id is unused).
    pub tokens: Vec<String>,
    /// The text of each token decoded alone.
    pub decoded: Vec<String>,
    /// The category of each token.
    pub category: Vec<Category>,
    /// Whether the token stands for exactly one byte (byte-level or byte-fallback tokens).
    pub single_byte: Vec<bool>,
    /// Whether the token is a WordPiece continuation piece (`##x`), checked in word context.
    pub continuation: Vec<bool>,
    /// Whether the token's bytes can occur in no valid UTF-8 text at all (0xC0, 0xC1, 0xF5-0xFF):
    /// such undecodable tokens are certainly never seen in training text.
    pub impossible_bytes: Vec<bool>,
    /// CSR offsets into [`ScanReport::reencoded`], length `vocab_size + 1`.
    pub reencoded_offsets: Vec<u32>,
    /// For unreachable tokens: the ids their decoded text encodes to.
    pub reencoded: Vec<u32>,
    /// Containment of tokens in longer tokens, when requested.
    pub containment: Option<Containment>,
    /// Approximations made while building or scanning the tokenizer.
    pub notes: Vec<String>,
}

impl ScanReport {
    /// Number of token ids scanned.
    pub fn vocab_size(&self) -> usize {
        self.category.len()
    }

    /// Number of tokens in `category`.
    pub fn count(&self, category: Category) -> usize {
        self.category.iter().filter(|&&c| c == category).count()
    }
}

/// What the scanner needs to know about a tokenizer beyond its public `encode`/`decode`.
struct Traits {
    /// The decoder maps GPT-2 byte characters back to bytes.
    byte_level: bool,
    /// The model falls back to `<0xNN>` byte tokens.
    byte_fallback: bool,
    /// WordPiece continuation prefix, if the model is WordPiece.
    continuation_prefix: Option<String>,
    /// The id of the lone `▁` token that SentencePiece-style tokenizers put in front of text
    /// (the decoder strips that space again, so re-encoding adds it back).
    prepended_id: Option<u32>,
}

fn traits(tok: &Tokenizer) -> Traits {
    let decoder = tok
        .get_decoder()
        .and_then(|d| serde_json::to_string(d).ok())
        .unwrap_or_default();
    let continuation_prefix = match tok.get_model() {
        ModelWrapper::WordPiece(wp) => Some(wp.continuing_subword_prefix.clone()),
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
        byte_level: decoder.contains("\"ByteLevel\""),
        byte_fallback: decoder.contains("\"ByteFallback\""),
        continuation_prefix,
    }
}

pub(crate) fn byte_fallback_value(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The exact bytes a token stands for, when the tokenizer makes them knowable.
fn token_bytes(token: &str, traits: &Traits, char_to_byte: &AHashMap<char, u8>) -> Option<Vec<u8>> {
    if traits.byte_fallback {
        if let Some(b) = byte_fallback_value(token) {
            return Some(vec![b]);
        }
    }
    if traits.byte_level {
        return token
            .chars()
            .map(|c| char_to_byte.get(&c).copied())
            .collect();
    }
    None
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

struct TokenResult {
    token: String,
    decoded: String,
    category: Category,
    single_byte: bool,
    continuation: bool,
    impossible: bool,
    reencoded: Vec<u32>,
    surface: Option<Vec<u8>>,
    /// The library had to re-encode this token (no fast path, or the fast path declined).
    library: bool,
}

/// What every token's scan shares.
struct ScanContext<'a> {
    tok: &'a Tokenizer,
    fast: Option<&'a FastPath>,
    special: AHashMap<u32, bool>,
    traits: Traits,
    char_to_byte: AHashMap<char, u8>,
    /// Keep each token's byte string (only the containment report reads it).
    surfaces: bool,
}

fn scan_one(cx: &ScanContext<'_>, id: u32, scratch: &mut Scratch) -> Result<TokenResult> {
    let (tok, fast, traits) = (cx.tok, cx.fast, &cx.traits);
    let mut r = TokenResult {
        token: String::new(),
        decoded: String::new(),
        category: Category::UnreachableMulti,
        single_byte: false,
        continuation: false,
        impossible: false,
        reencoded: Vec::new(),
        surface: None,
        library: false,
    };
    let token = match fast.and_then(|f| f.token(id)) {
        Some(t) => t.map(str::to_owned),
        None => tok.id_to_token(id),
    };
    let Some(token) = token else {
        // A hole in the id space: nothing can produce it.
        return Ok(r);
    };
    r.token = token;
    let decode_err = |e| Error::Internal(format!("decoding token {id} failed: {e}"));
    let is_special = cx.special.get(&id).copied().unwrap_or(false);
    r.decoded = match fast
        .filter(|_| !is_special)
        .and_then(|f| f.decode(&r.token))
    {
        Some(text) => text,
        None => tok.decode(&[id], false).map_err(decode_err)?,
    };
    if is_special {
        r.category = Category::Special;
        return Ok(r);
    }
    let bytes = token_bytes(&r.token, traits, &cx.char_to_byte);
    if let Some(b) = &bytes {
        r.single_byte = b.len() == 1;
        r.impossible = impossible_in_utf8(b);
    }
    if let Some(prefix) = &traits.continuation_prefix {
        if let Some(suffix) = r.token.strip_prefix(prefix.as_str()) {
            if !suffix.is_empty() {
                r.continuation = true;
                r.surface = Some(suffix.as_bytes().to_vec());
                r.decoded = suffix.to_owned();
                r.category = if continuation_reachable(tok, suffix)? {
                    Category::Ok
                } else {
                    Category::UnreachableMulti
                };
                return Ok(r);
            }
        }
    }
    let undecodable = match &bytes {
        Some(b) => std::str::from_utf8(b).is_err(),
        None => r.decoded.contains('\u{fffd}') && !r.token.contains('\u{fffd}'),
    };
    if cx.surfaces {
        r.surface = Some(bytes.unwrap_or_else(|| r.decoded.as_bytes().to_vec()));
    }
    if undecodable {
        r.category = Category::Undecodable;
        return Ok(r);
    }
    let fast_ok = fast
        .and_then(|f| f.encode(tok, id, &r.decoded, scratch))
        .is_some();
    let encoding;
    let mut ids: &[u32] = match fast_ok {
        true => &scratch.ids,
        false => {
            r.library = true;
            encoding = tok
                .encode_fast(r.decoded.as_str(), false)
                .map_err(|e| Error::Internal(format!("encoding token {id} failed: {e}")))?;
            encoding.get_ids()
        }
    };
    if let (Some(p), [first, rest @ ..]) = (traits.prepended_id, ids) {
        if *first == p && !rest.is_empty() && !r.decoded.starts_with(' ') {
            ids = rest;
        }
    }
    r.category = match ids {
        [only] if *only == id => Category::Ok,
        [_] => Category::UnreachableSingle,
        _ => Category::UnreachableMulti,
    };
    if r.category != Category::Ok {
        r.reencoded = ids.to_vec();
    }
    Ok(r)
}

/// Scans every token of `tok`: decode it alone, encode the text again, and categorise.
///
/// Runs in parallel over token ids (rayon). Special tokens are the added tokens marked
/// special. WordPiece continuation pieces (`##x`) are judged in word context: such a piece is
/// reachable when its text passes the normaliser and pre-tokenizer unchanged as one piece.
pub fn scan(tok: &Tokenizer, options: &ScanOptions) -> Result<ScanReport> {
    scan_with(tok, None, options)
}

/// A tokenizer ready to scan: the `tokenizers` tokenizer plus, when its shape is recognised
/// (byte-level or SentencePiece-style BPE), an exact fast re-encoding path.
pub struct PreparedTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    fast: Option<FastPath>,
    /// Approximations made while building it.
    pub notes: Vec<String>,
}

impl PreparedTokenizer {
    /// Prepares `tokenizer`; `merges` (its BPE merges in rank order) enable the fast path.
    pub fn new(
        tokenizer: Tokenizer,
        merges: Option<&[(String, String)]>,
        notes: Vec<String>,
    ) -> Self {
        let fast = merges.and_then(|m| FastPath::new(&tokenizer, m));
        PreparedTokenizer {
            tokenizer,
            fast,
            notes,
        }
    }

    /// Loads and prepares a `tokenizer.json`, GGUF or tiktoken file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let loaded = sources::load(path)?;
        Ok(Self::new(
            loaded.tokenizer,
            loaded.merges.as_deref(),
            loaded.notes,
        ))
    }

    /// Parses and prepares `tokenizer.json` text.
    pub fn from_json(json: &str) -> Result<Self> {
        let loaded = sources::load_json(json, "tokenizer")?;
        Ok(Self::new(
            loaded.tokenizer,
            loaded.merges.as_deref(),
            loaded.notes,
        ))
    }

    /// Whether the fast re-encoding path is in use.
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Scans every token (see [`scan`]); `use_fast` = false forces the library path.
    pub fn scan(&self, options: &ScanOptions, use_fast: bool) -> Result<ScanReport> {
        let fast = self.fast.as_ref().filter(|_| use_fast);
        let mut report = scan_with(&self.tokenizer, fast, options)?;
        report.notes.extend(self.notes.iter().cloned());
        Ok(report)
    }
}

/// One past the largest token id. Cheaper than `get_vocab` (which clones every string): the
/// model's size, the added tokens' largest id, then probe past the end for ids beyond a hole.
pub(crate) fn id_space(tok: &Tokenizer) -> usize {
    let added_max = tok
        .get_added_tokens_decoder()
        .keys()
        .max()
        .map_or(0, |&m| m as usize + 1);
    let mut size = tok.get_vocab_size(false).max(added_max);
    while tok.id_to_token(size as u32).is_some() {
        size += 1;
    }
    size
}

fn scan_with(
    tok: &Tokenizer,
    fast: Option<&FastPath>,
    options: &ScanOptions,
) -> Result<ScanReport> {
    // Padding and truncation settings (common in saved BERT tokenizers) would distort the
    // re-encoding of single tokens: scan a copy without them.
    let unpadded;
    let tok = if tok.get_padding().is_some() || tok.get_truncation().is_some() {
        let mut copy = tok.clone();
        copy.with_padding(None);
        copy.with_truncation(None)
            .map_err(|e| Error::Internal(format!("cannot disable truncation: {e}")))?;
        unpadded = copy;
        &unpadded
    } else {
        tok
    };
    let vocab_size = id_space(tok);
    if vocab_size == 0 {
        return Err(Error::value("tokenizer", "a non-empty vocabulary", "none"));
    }
    let special: AHashMap<u32, bool> = tok
        .get_added_tokens_decoder()
        .into_iter()
        .map(|(id, t)| (id, t.special))
        .collect();
    let cx = ScanContext {
        tok,
        fast,
        special,
        traits: traits(tok),
        char_to_byte: sources::char_to_byte(),
        surfaces: options.containment,
    };
    let results: Vec<TokenResult> = (0..vocab_size as u32)
        .into_par_iter()
        .with_min_len(256)
        .map_init(Scratch::default, |scratch, id| scan_one(&cx, id, scratch))
        .collect::<Result<_>>()?;

    let containment = if options.containment {
        Some(containment(
            &results,
            options.max_examples,
            options.max_token_bytes,
        )?)
    } else {
        None
    };
    let mut report = ScanReport {
        tokens: Vec::with_capacity(vocab_size),
        decoded: Vec::with_capacity(vocab_size),
        category: Vec::with_capacity(vocab_size),
        single_byte: Vec::with_capacity(vocab_size),
        continuation: Vec::with_capacity(vocab_size),
        impossible_bytes: Vec::with_capacity(vocab_size),
        reencoded_offsets: Vec::with_capacity(vocab_size + 1),
        reencoded: Vec::new(),
        containment,
        notes: Vec::new(),
    };
    report.reencoded_offsets.push(0);
    if fast.is_some() {
        let declined = results.iter().filter(|r| r.library).count();
        if declined > 0 {
            report.notes.push(format!(
                "{declined} token(s) re-encoded by the tokenizers library (their text holds an added token)"
            ));
        }
    }
    for r in results {
        report.tokens.push(r.token);
        report.decoded.push(r.decoded);
        report.category.push(r.category);
        report.single_byte.push(r.single_byte);
        report.continuation.push(r.continuation);
        report.impossible_bytes.push(r.impossible);
        report.reencoded.extend_from_slice(&r.reencoded);
        report.reencoded_offsets.push(report.reencoded.len() as u32);
    }
    Ok(report)
}

/// For every token, the longer tokens whose byte string contains its byte string.
///
/// Instead of comparing all pairs (quadratic in the vocabulary), one Aho-Corasick automaton
/// over all token strings finds, in a single pass over each token, every shorter token inside
/// it: the work is linear in the total length of the vocabulary plus the number of matches.
fn containment(
    results: &[TokenResult],
    max_examples: usize,
    max_bytes: usize,
) -> Result<Containment> {
    let n = results.len();
    let mut pattern_ids: Vec<u32> = Vec::with_capacity(n);
    let mut patterns: Vec<&[u8]> = Vec::with_capacity(n);
    for (id, r) in results.iter().enumerate() {
        if let Some(s) = r.surface.as_deref().filter(|s| !s.is_empty()) {
            pattern_ids.push(id as u32);
            patterns.push(s);
        }
    }
    let automaton = AhoCorasick::builder()
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(&patterns)
        .map_err(|e| Error::Internal(format!("cannot index the vocabulary: {e}")))?;
    let mut pairs: Vec<(u32, u32, u32)> = results
        .par_iter()
        .enumerate()
        .with_min_len(256)
        .flat_map_iter(|(outer, r)| {
            let mut found: Vec<(u32, u32, u32)> = Vec::new();
            if let Some(s) = r.surface.as_deref().filter(|s| s.len() <= max_bytes) {
                let len = s.len() as u32;
                for m in automaton.find_overlapping_iter(s) {
                    if m.len() < s.len() {
                        let inner = pattern_ids[m.pattern().as_usize()];
                        found.push((inner, len, outer as u32));
                    }
                }
            }
            found.sort_unstable();
            found.dedup();
            found
        })
        .collect();
    pairs.par_sort_unstable();
    let mut out = Containment {
        count: vec![0; n],
        offsets: Vec::with_capacity(n + 1),
        examples: Vec::new(),
    };
    out.offsets.push(0);
    let mut i = 0;
    for id in 0..n as u32 {
        let mut kept = 0;
        while i < pairs.len() && pairs[i].0 == id {
            out.count[id as usize] += 1;
            if kept < max_examples {
                out.examples.push(pairs[i].2);
                kept += 1;
            }
            i += 1;
        }
        out.offsets.push(out.examples.len() as u32);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
