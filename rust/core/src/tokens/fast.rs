//! A fast, exact re-encoding path for the common tokenizer shapes.
//!
//! Scanning calls `decode` then `encode` once per token: through the `tokenizers` crate that is
//! several microseconds per token (per-character string allocations in BPE, alignment tracking
//! in normalizers, a full `Encoding` with offsets). For byte-level BPE (GPT-2, Llama 3, Qwen,
//! SmolLM) and SentencePiece-style BPE (Llama 2, Gemma) this module does the same work on
//! plain ids: a byte-table decoder, the `▁` normaliser, and BPE merges by rank with no
//! allocation per character. Anything it does not recognise (other decoders or normalisers,
//! dropout, subword prefixes, texts containing added tokens) falls back to the library; tests
//! check that both paths agree on every token of real vocabularies.

use ahash::AHashMap;
use serde_json::Value;
use tokenizers::{
    ModelWrapper, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer,
};

pub(super) use super::added_search::AddedTokenSearch;
use super::own_encoding::OwnEncodings;
use super::sources::char_to_byte;
use super::PackedStrings;

/// Ids no token has: [`OwnEncodings`] skips such a merge.
const NOT_A_MERGE: (u32, u32, u32) = (u32::MAX, u32::MAX, u32::MAX);

#[inline]
fn pair_key(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
}

/// Rank-ordered BPE merges over ids.
struct FastBpe {
    vocab: AHashMap<String, u32>,
    /// Ids of the single-character tokens (the starting symbols of every word): a direct
    /// table for the Basic Multilingual Plane (`u32::MAX` = none), a map above it.
    char_table: Vec<u32>,
    char_ids: AHashMap<char, u32>,
    /// `left << 32 | right -> (rank, merged)`.
    merges: AHashMap<u64, (u32, u32)>,
    /// Id of each `<0xNN>` token when the model falls back to bytes.
    byte_ids: Option<Box<[Option<u32>; 256]>>,
    ignore_merges: bool,
    unk: Option<(u32, bool)>,
    /// `(left, right, merged)` in rank order (the input of [`OwnEncodings`]); a rank whose
    /// pair merges at a later rank holds [`NOT_A_MERGE`].
    merge_list: Vec<(u32, u32, u32)>,
}

impl FastBpe {
    /// `merge_ids`: `merges` as ids, when the loader has them (see `sources::Loaded`).
    fn new(
        tok: &Tokenizer,
        merges: &[(String, String)],
        merge_ids: Option<&[(u32, u32, u32)]>,
    ) -> Option<Self> {
        let ModelWrapper::BPE(bpe) = tok.get_model() else {
            return None;
        };
        if bpe.dropout.is_some()
            || bpe.continuing_subword_prefix.is_some()
            || bpe.end_of_word_suffix.is_some()
        {
            return None;
        }
        let vocab: AHashMap<String, u32> = bpe.get_vocab().into_iter().collect();
        let mut map = AHashMap::with_capacity(merges.len());
        let mut merge_list = Vec::with_capacity(merges.len());
        let mut joined = String::new();
        let n = merge_ids.map_or(merges.len(), <[_]>::len);
        if n != merges.len() {
            return None;
        }
        for rank in 0..n {
            let (l, r, merged) = match merge_ids {
                Some(ids) => ids[rank],
                None => {
                    let (a, b) = &merges[rank];
                    joined.clear();
                    joined.push_str(a);
                    joined.push_str(b);
                    (*vocab.get(a)?, *vocab.get(b)?, *vocab.get(joined.as_str())?)
                }
            };
            if let Some((earlier, _)) = map.insert(pair_key(l, r), (rank as u32, merged)) {
                // A pair listed twice merges at its last rank only (as in the library).
                merge_list[earlier as usize] = NOT_A_MERGE;
            }
            merge_list.push((l, r, merged));
        }
        let byte_ids = bpe.byte_fallback.then(|| {
            let mut ids = Box::new([None; 256]);
            for (b, slot) in ids.iter_mut().enumerate() {
                *slot = vocab.get(&format!("<0x{b:02X}>")).copied();
            }
            ids
        });
        let unk = match &bpe.unk_token {
            Some(u) => Some((*vocab.get(u)?, bpe.fuse_unk)),
            None => None,
        };
        let char_ids: AHashMap<char, u32> = vocab
            .iter()
            .filter_map(|(t, &id)| {
                let mut chars = t.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some((c, id)),
                    _ => None,
                }
            })
            .collect();
        let mut char_table = vec![u32::MAX; 1 << 16];
        for (&c, &id) in &char_ids {
            if let Some(slot) = char_table.get_mut(c as usize) {
                *slot = id;
            }
        }
        Some(FastBpe {
            char_table,
            char_ids,
            vocab,
            merges: map,
            byte_ids,
            ignore_merges: bpe.ignore_merges,
            unk,
            merge_list,
        })
    }

    /// Appends the ids of one pre-token to `out` (the symbols are merged in place there);
    /// `ranks` is scratch space. `None` when the library must decide (unknown chars).
    fn tokenize(
        &self,
        word: &str,
        out: &mut Vec<u32>,
        ranks: &mut Vec<Option<(u32, u32)>>,
    ) -> Option<()> {
        if word.is_empty() {
            return Some(());
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(word) {
                out.push(id);
                return Some(());
            }
        }
        let start = out.len();
        let symbols = out;
        let mut buf = [0u8; 4];
        let mut pending_unk = false;
        for c in word.chars() {
            let direct = self.char_table.get(c as usize).copied();
            let id = match direct {
                Some(u32::MAX) => None,
                Some(id) => Some(id),
                None => self.char_ids.get(&c).copied(),
            };
            if let Some(id) = id {
                symbols.push(id);
                pending_unk = false;
                continue;
            }
            if let Some(bytes) = &self.byte_ids {
                let utf8 = c.encode_utf8(&mut buf).as_bytes();
                if utf8.iter().all(|&b| bytes[b as usize].is_some()) {
                    symbols.extend(utf8.iter().filter_map(|&b| bytes[b as usize]));
                    pending_unk = false;
                    continue;
                }
            }
            let (unk, fuse) = self.unk?;
            if !(fuse && pending_unk) {
                symbols.push(unk);
            }
            pending_unk = true;
        }
        // Merge the leftmost lowest-ranked pair until none is left. Tokens are short, so a
        // linear scan over cached pair ranks beats the library's heap; each merge looks up only
        // the two pairs it creates (the merge table is large: lookups are cache misses).
        let pair = |l: u32, r: u32| self.merges.get(&pair_key(l, r)).copied();
        ranks.clear();
        ranks.extend(symbols[start..].windows(2).map(|w| pair(w[0], w[1])));
        loop {
            let mut best: Option<(u32, usize)> = None;
            for (i, r) in ranks.iter().enumerate() {
                if let Some((rank, _)) = r {
                    if best.is_none_or(|(b, _)| *rank < b) {
                        best = Some((*rank, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let word = &mut symbols[start..];
            let merged = ranks[i].map_or(word[i], |(_, m)| m);
            word[i] = merged;
            symbols.remove(start + i + 1);
            let word = &symbols[start..];
            ranks.remove(i);
            if i > 0 {
                ranks[i - 1] = pair(word[i - 1], merged);
            }
            if i < ranks.len() {
                ranks[i] = pair(merged, word[i + 1]);
            }
        }
        Some(())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Decoder {
    ByteLevel,
    /// Replace `▁` by a space, byte fallback, fuse; `strip`: remove one leading space.
    SentencePiece {
        strip: bool,
    },
}

#[derive(Clone, Copy, PartialEq)]
enum Normalizer {
    Identity,
    /// Replace spaces by `▁`; `prepend`: put one `▁` in front of non-empty text.
    SentencePiece {
        prepend: bool,
    },
}

fn json_of<T: serde::Serialize>(x: Option<&T>) -> Value {
    x.and_then(|x| serde_json::to_value(x).ok())
        .unwrap_or(Value::Null)
}

fn is_replace(v: &Value, from: &str, to: &str) -> bool {
    v["type"] == "Replace" && v["pattern"]["String"] == from && v["content"] == to
}

fn recognise_decoder(v: &Value) -> Option<Decoder> {
    if v["type"] == "ByteLevel" {
        return Some(Decoder::ByteLevel);
    }
    if v["type"] != "Sequence" {
        return None;
    }
    let parts = v["decoders"].as_array()?;
    let base = parts.len() >= 3
        && is_replace(&parts[0], "\u{2581}", " ")
        && parts[1]["type"] == "ByteFallback"
        && parts[2]["type"] == "Fuse";
    match parts.len() {
        3 if base => Some(Decoder::SentencePiece { strip: false }),
        4 if base
            && parts[3]["type"] == "Strip"
            && parts[3]["content"] == " "
            && parts[3]["start"] == 1
            && parts[3]["stop"] == 0 =>
        {
            Some(Decoder::SentencePiece { strip: true })
        }
        _ => None,
    }
}

fn recognise_normalizer(v: &Value) -> Option<Normalizer> {
    if v.is_null() {
        return Some(Normalizer::Identity);
    }
    let parts: Vec<&Value> = if v["type"] == "Sequence" {
        v["normalizers"].as_array()?.iter().collect()
    } else {
        vec![v]
    };
    match parts.as_slice() {
        [r] if is_replace(r, " ", "\u{2581}") => Some(Normalizer::SentencePiece { prepend: false }),
        [p, r]
            if p["type"] == "Prepend"
                && p["prepend"] == "\u{2581}"
                && is_replace(r, " ", "\u{2581}") =>
        {
            Some(Normalizer::SentencePiece { prepend: true })
        }
        _ => None,
    }
}

/// Buffers one scanning thread reuses from token to token (no allocation per token).
#[derive(Default)]
pub(crate) struct Scratch {
    /// The ids of the last [`FastPath::encode`].
    pub(crate) ids: Vec<u32>,
    ranks: Vec<Option<(u32, u32)>>,
    normalized: String,
    /// A token's bytes (byte-level decoding, the scan's byte-token checks).
    pub(crate) bytes: Vec<u8>,
    /// The text of the "after a separator" context.
    pub(crate) context: String,
}

/// The fast path for one tokenizer, when its shape is recognised.
pub(crate) struct FastPath {
    bpe: FastBpe,
    decoder: Decoder,
    normalizer: Normalizer,
    has_pre_tokenizer: bool,
    /// Added tokens searched for in the text before normalisation (all of them: the library
    /// looks for the non-normalised ones there) and after it (the normalised ones, in both
    /// forms). A text holding one goes to the library, which splits it off.
    added_in_text: Option<AddedTokenSearch>,
    added_in_normalized: Option<AddedTokenSearch>,
    char_to_byte: AHashMap<char, u8>,
    /// Every id's token string (model and added tokens), looked up once here and stored in
    /// one buffer: the library's `id_to_token` hashes into two maps and allocates per call.
    tokens: PackedStrings,
    /// Per id: whether `tokens` holds a string (false for holes in the id space).
    has_token: Vec<bool>,
    /// Per id: BPE is known to turn the token's text into the token (see [`OwnEncodings`]);
    /// false for added tokens, whose string may differ from the model's.
    own_encoding: Vec<bool>,
}

/// Appends `text` to `out` with every `from` replaced by `to`. A byte loop: the texts are a
/// few bytes long, too short for `str::replace`'s searcher to pay off.
fn push_replaced(out: &mut String, text: &str, from: char, to: char) {
    let mut buf = [0u8; 4];
    let from = from.encode_utf8(&mut buf).as_bytes();
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        // A match starts with a lead byte, so `i` is a character boundary.
        if bytes[i] == from[0] && bytes[i..].starts_with(from) {
            out.push_str(&text[start..i]);
            out.push(to);
            i += from.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[start..]);
}

impl Normalizer {
    /// Writes the normalised `text` to `out` (cleared first).
    fn apply(self, text: &str, out: &mut String) {
        out.clear();
        match self {
            Normalizer::Identity => out.push_str(text),
            Normalizer::SentencePiece { prepend } => {
                if prepend && !text.is_empty() {
                    out.push('\u{2581}');
                }
                push_replaced(out, text, ' ', '\u{2581}');
            }
        }
    }

    /// Whether `text` normalises to `target` (without writing the normalised text).
    fn maps_to(self, text: &str, target: &str) -> bool {
        const SPACE_MARK: &[u8] = "\u{2581}".as_bytes();
        match self {
            Normalizer::Identity => text == target,
            Normalizer::SentencePiece { prepend } => {
                let mut target = target.as_bytes();
                if prepend && !text.is_empty() {
                    match target.strip_prefix(SPACE_MARK) {
                        Some(rest) => target = rest,
                        None => return false,
                    }
                }
                for &b in text.as_bytes() {
                    let expected: &[u8] = if b == b' ' { SPACE_MARK } else { &[b] };
                    match target.strip_prefix(expected) {
                        Some(rest) => target = rest,
                        None => return false,
                    }
                }
                target.is_empty()
            }
        }
    }
}

impl FastPath {
    /// Builds the fast path, or `None` when the tokenizer has a shape it does not handle.
    /// `merge_ids` and `n_ids`: what the loader knows (see `sources::Loaded`), or `None`.
    pub(crate) fn new(
        tok: &Tokenizer,
        merges: &[(String, String)],
        merge_ids: Option<&[(u32, u32, u32)]>,
        n_ids: Option<usize>,
    ) -> Option<Self> {
        let decoder = recognise_decoder(&json_of(tok.get_decoder()))?;
        let normalizer = recognise_normalizer(&json_of(tok.get_normalizer()))?;
        let bpe = FastBpe::new(tok, merges, merge_ids)?;
        let added = tok.get_added_tokens_decoder();
        let in_text: Vec<&str> = added
            .values()
            .map(|t| t.content.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        let mut in_normalized: Vec<String> = Vec::new();
        for t in added
            .values()
            .filter(|t| t.normalized && !t.content.is_empty())
        {
            let mut normalized = String::new();
            normalizer.apply(&t.content, &mut normalized);
            in_normalized.push(t.content.clone());
            in_normalized.push(normalized);
        }
        let added_in_text = AddedTokenSearch::new(&in_text)?;
        let added_in_normalized = AddedTokenSearch::new(&in_normalized)?;
        let n_ids = super::scan::id_space(tok, n_ids);
        let mut tokens = PackedStrings::with_capacity(n_ids, 8 * n_ids);
        let mut has_token = vec![false; n_ids];
        for (id, has) in has_token.iter_mut().enumerate() {
            let token = tok.id_to_token(id as u32);
            *has = token.is_some();
            tokens.push(token.as_deref().unwrap_or(""));
        }
        let mut own_encoding = vec![false; n_ids];
        if !bpe.ignore_merges {
            let own = OwnEncodings::new(
                n_ids,
                bpe.char_ids.values().copied(),
                &bpe.merge_list,
                |l, r| bpe.merges.get(&pair_key(l, r)).map(|&(rank, _)| rank),
            );
            for (id, slot) in own_encoding.iter_mut().enumerate() {
                *slot = own.contains(id as u32);
            }
            for &id in added.keys() {
                if let Some(slot) = own_encoding.get_mut(id as usize) {
                    *slot = false;
                }
            }
        }
        Some(FastPath {
            tokens,
            has_token,
            own_encoding,
            bpe,
            decoder,
            normalizer,
            has_pre_tokenizer: tok.get_pre_tokenizer().is_some(),
            added_in_text,
            added_in_normalized,
            char_to_byte: char_to_byte(),
        })
    }

    /// Every id's string (empty for holes in the id space).
    pub(crate) fn token_table(&self) -> &PackedStrings {
        &self.tokens
    }

    /// The string of token `id`, as `Tokenizer::id_to_token` gives it (`None` beyond the
    /// table: the caller asks the library).
    pub(crate) fn token(&self, id: u32) -> Option<Option<&str>> {
        let has = *self.has_token.get(id as usize)?;
        Some(has.then(|| &self.tokens[id as usize]))
    }

    /// Appends the text of one (non-special) token decoded alone, as the library's decoder
    /// gives it, to `out`; false (and `out` unchanged) to ask the library.
    pub(crate) fn decode_into(&self, token: &str, out: &mut String, bytes: &mut Vec<u8>) -> bool {
        self.decode_at(token, out, bytes, true)
    }

    /// Writes `sep` then the text `token` stands for after another token (a leading space
    /// kept) into `out` (cleared first); false to ask the library.
    pub(crate) fn context_text(
        &self,
        sep: char,
        token: &str,
        out: &mut String,
        b: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        out.push(sep);
        self.decode_at(token, out, b, false)
    }

    /// [`Self::decode_into`]; `at_start`: the token starts the output (decoders strip there).
    fn decode_at(
        &self,
        token: &str,
        out: &mut String,
        bytes: &mut Vec<u8>,
        at_start: bool,
    ) -> bool {
        match self.decoder {
            Decoder::ByteLevel => {
                bytes.clear();
                for c in token.chars() {
                    match self.char_to_byte.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => return false,
                    }
                }
                out.push_str(&String::from_utf8_lossy(bytes));
            }
            Decoder::SentencePiece { strip } => {
                let start = out.len();
                if let Some(b) = super::classify::byte_fallback_value(token) {
                    out.push(if b < 0x80 { char::from(b) } else { '\u{fffd}' });
                } else {
                    push_replaced(out, token, '\u{2581}', ' ');
                }
                if strip && at_start && out[start..].starts_with(' ') {
                    out.remove(start);
                }
            }
        }
        true
    }

    /// Encodes `text`, the decoded text of token `id` (no special tokens added), into
    /// `scratch.ids`; `None` to ask the library.
    pub(crate) fn encode(
        &self,
        tok: &Tokenizer,
        id: u32,
        text: &str,
        scratch: &mut Scratch,
    ) -> Option<()> {
        if let Some(ac) = &self.added_in_text {
            if ac.is_match(text) {
                return None;
            }
        }
        // A text that normalises to the token's own string, which BPE is known to keep
        // whole, needs no BPE run (nor the normalised text, unless added tokens are looked
        // for in it).
        let own = self.own_encoding.get(id as usize).copied().unwrap_or(false);
        let own_text = self.token(id).flatten().filter(|_| own);
        scratch.ids.clear();
        if let Some(t) = own_text {
            let whole = !self.has_pre_tokenizer && self.added_in_normalized.is_none();
            if whole && self.normalizer.maps_to(text, t) {
                scratch.ids.push(id);
                return Some(());
            }
        }
        let normalized: &str = match self.normalizer {
            Normalizer::Identity => text,
            n => {
                n.apply(text, &mut scratch.normalized);
                &scratch.normalized
            }
        };
        if let Some(ac) = &self.added_in_normalized {
            if ac.is_match(normalized) {
                return None;
            }
        }
        let (out, ranks) = (&mut scratch.ids, &mut scratch.ranks);
        let mut word = |piece: &str, out: &mut Vec<u32>| match own_text {
            Some(t) if t == piece => {
                out.push(id);
                Some(())
            }
            _ => self.bpe.tokenize(piece, out, ranks),
        };
        if self.has_pre_tokenizer {
            let mut pre = PreTokenizedString::from(normalized);
            tok.get_pre_tokenizer()?.pre_tokenize(&mut pre).ok()?;
            for (piece, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::None) {
                word(piece, out)?;
            }
        } else {
            word(normalized, out)?;
        }
        Some(())
    }
}
