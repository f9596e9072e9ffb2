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
mod packed;
pub mod sources;

use fast::{FastPath, Scratch};
pub use packed::PackedStrings;
use packed::{concat, concat_offsets, concat_strings, copy_strings};

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
    pub tokens: PackedStrings,
    /// The text of each token decoded alone.
    pub decoded: PackedStrings,
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

/// Every token's byte string (the containment report's input).
struct Surfaces {
    bytes: Vec<u8>,
    /// `bytes[offsets[i]..offsets[i + 1]]` is the surface of the `i`-th token (empty: none).
    offsets: Vec<u32>,
}

impl Surfaces {
    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// The scan of a run of consecutive ids, written into flat buffers (no allocation per token).
struct Chunk {
    tokens: PackedStrings,
    decoded: PackedStrings,
    category: Vec<Category>,
    single_byte: Vec<bool>,
    continuation: Vec<bool>,
    impossible: Vec<bool>,
    /// CSR offsets of each token's ids in `reencoded` (from 0).
    reencoded_offsets: Vec<u32>,
    reencoded: Vec<u32>,
    /// Each token's byte string, when the containment report needs them (else empty).
    surfaces: Surfaces,
    /// Tokens the library had to re-encode (no fast path, or the fast path declined).
    library: usize,
}

impl Chunk {
    /// Room for `n` tokens (their strings too unless `tokens_from_table`).
    fn with_capacity(n: usize, tokens_from_table: bool) -> Self {
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
/// per tokenizer (a [`PreparedTokenizer`] keeps it).
struct ScanFacts {
    /// One past the largest token id.
    vocab_size: usize,
    /// Per id: an added token marked special.
    special: Vec<bool>,
    traits: Traits,
    char_to_byte: AHashMap<char, u8>,
}

impl ScanFacts {
    fn new(tok: &Tokenizer) -> Self {
        let vocab_size = id_space(tok);
        let mut special = vec![false; vocab_size];
        for (id, t) in tok.get_added_tokens_decoder() {
            if let Some(slot) = special.get_mut(id as usize) {
                *slot = t.special;
            }
        }
        ScanFacts {
            vocab_size,
            special,
            traits: traits(tok),
            char_to_byte: sources::char_to_byte(),
        }
    }
}

/// What every token's scan shares.
struct ScanContext<'a> {
    tok: &'a Tokenizer,
    fast: Option<&'a FastPath>,
    facts: &'a ScanFacts,
    /// Keep each token's byte string (only the containment report reads it).
    surfaces: bool,
    /// The fast path's table holds every token's string: the report copies it whole.
    tokens_from_table: bool,
}

/// The per-token flags [`scan_one`] finds besides the texts.
struct TokenFlags {
    category: Category,
    single_byte: bool,
    continuation: bool,
    impossible: bool,
}

/// Scans token `id`, appending its results to `out`.
fn scan_one(cx: &ScanContext<'_>, id: u32, scratch: &mut Scratch, out: &mut Chunk) -> Result<()> {
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
    flags.category = match ids {
        [only] if *only == id => Category::Ok,
        [_] => Category::UnreachableSingle,
        _ => Category::UnreachableMulti,
    };
    if flags.category != Category::Ok {
        out.reencoded.extend_from_slice(ids);
    }
    Ok(flags)
}

/// Scans every token of `tok`: decode it alone, encode the text again, and categorise.
///
/// Runs in parallel over token ids (rayon). Special tokens are the added tokens marked
/// special. WordPiece continuation pieces (`##x`) are judged in word context: such a piece is
/// reachable when its text passes the normaliser and pre-tokenizer unchanged as one piece.
pub fn scan(tok: &Tokenizer, options: &ScanOptions) -> Result<ScanReport> {
    scan_with(tok, &ScanFacts::new(tok), None, options)
}

/// A tokenizer ready to scan: the `tokenizers` tokenizer plus, when its shape is recognised
/// (byte-level or SentencePiece-style BPE), an exact fast re-encoding path.
pub struct PreparedTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    facts: ScanFacts,
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
            facts: ScanFacts::new(&tokenizer),
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
        let mut report = scan_with(&self.tokenizer, &self.facts, fast, options)?;
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
    facts: &ScanFacts,
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
    let vocab_size = facts.vocab_size;
    if vocab_size == 0 {
        return Err(Error::value("tokenizer", "a non-empty vocabulary", "none"));
    }
    let cx = ScanContext {
        tok,
        fast,
        facts,
        surfaces: options.containment,
        tokens_from_table: fast.is_some_and(|f| f.token_table().len() == vocab_size),
    };
    // Runs of consecutive ids, each written into its own flat buffers, then joined in order.
    const CHUNK_IDS: usize = 2048;
    let chunks: Vec<Chunk> = (0..vocab_size.div_ceil(CHUNK_IDS))
        .into_par_iter()
        .map_init(Scratch::default, |scratch, c| {
            let ids = c * CHUNK_IDS..((c + 1) * CHUNK_IDS).min(vocab_size);
            let mut out = Chunk::with_capacity(ids.len(), cx.tokens_from_table);
            for id in ids {
                scan_one(&cx, id as u32, scratch, &mut out)?;
            }
            Ok(out)
        })
        .collect::<Result<_>>()?;

    // Joined in parallel: the outputs are fresh memory, and the copy's page faults are most
    // of its cost.
    let too_long = || Error::Internal("the vocabulary's text passes 4 GiB".into());
    let strings = |f: fn(&Chunk) -> &PackedStrings| {
        concat_strings(&chunks.iter().map(f).collect::<Vec<_>>()).ok_or_else(too_long)
    };
    let mut report = ScanReport {
        tokens: match fast.filter(|_| cx.tokens_from_table) {
            Some(f) => copy_strings(f.token_table()),
            None => strings(|c| &c.tokens)?,
        },
        decoded: strings(|c| &c.decoded)?,
        category: concat(&field(&chunks, |c| &c.category)),
        single_byte: concat(&field(&chunks, |c| &c.single_byte)),
        continuation: concat(&field(&chunks, |c| &c.continuation)),
        impossible_bytes: concat(&field(&chunks, |c| &c.impossible)),
        reencoded_offsets: concat_offsets(&field(&chunks, |c| &c.reencoded_offsets)),
        reencoded: concat(&field(&chunks, |c| &c.reencoded)),
        containment: None,
        notes: Vec::new(),
    };
    let library: usize = chunks.iter().map(|c| c.library).sum();
    if fast.is_some() && library > 0 {
        report.notes.push(format!(
            "{library} token(s) re-encoded by the tokenizers library (their text holds an added token)"
        ));
    }
    if options.containment {
        let surfaces = Surfaces {
            bytes: concat(&field(&chunks, |c| &c.surfaces.bytes)),
            offsets: concat_offsets(&field(&chunks, |c| &c.surfaces.offsets)),
        };
        drop(chunks);
        report.containment = Some(containment(
            &surfaces,
            options.max_examples,
            options.max_token_bytes,
        )?);
    }
    Ok(report)
}

/// For every token, the longer tokens whose byte string contains its byte string.
///
/// Instead of comparing all pairs (quadratic in the vocabulary), one Aho-Corasick automaton
/// over all token strings finds, in a single pass over each token, every shorter token inside
/// it: the work is linear in the total length of the vocabulary plus the number of matches.
/// One field of every chunk, in order.
fn field<T>(chunks: &[Chunk], f: impl Fn(&Chunk) -> &Vec<T>) -> Vec<&[T]> {
    chunks.iter().map(|c| f(c).as_slice()).collect()
}

fn containment(surfaces: &Surfaces, max_examples: usize, max_bytes: usize) -> Result<Containment> {
    let n = surfaces.offsets.len() - 1;
    let mut pattern_ids: Vec<u32> = Vec::with_capacity(n);
    let mut patterns: Vec<&[u8]> = Vec::with_capacity(n);
    for id in 0..n {
        let s = surfaces.get(id);
        if !s.is_empty() {
            pattern_ids.push(id as u32);
            patterns.push(s);
        }
    }
    let automaton = AhoCorasick::builder()
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(&patterns)
        .map_err(|e| Error::Internal(format!("cannot index the vocabulary: {e}")))?;
    let mut pairs: Vec<(u32, u32, u32)> = (0..n)
        .into_par_iter()
        .with_min_len(256)
        .flat_map_iter(|outer| {
            let mut found: Vec<(u32, u32, u32)> = Vec::new();
            let s = surfaces.get(outer);
            if s.len() <= max_bytes {
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
