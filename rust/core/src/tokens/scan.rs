//! The scan of a whole vocabulary: [`scan`] and [`PreparedTokenizer`] run the per-token
//! classification in parallel chunks, join the chunks and add the containment report.

use rayon::prelude::*;
use tokenizers::Tokenizer;

use super::classify::{scan_one, Chunk, ScanContext, ScanFacts};
use super::containment::{containment, Surfaces};
use super::context::Separator;
use super::fast::{FastPath, Scratch};
use super::packed::{concat, concat_offsets, concat_strings, copy_strings};
use super::{sources, PackedStrings, ScanOptions, ScanReport};
use crate::{Cancel, Error, Result};

/// Scans every token of `tok`: decode it alone, encode the text again, and categorise.
///
/// Runs in parallel over token ids (rayon). Special tokens are the added tokens marked
/// special. A token is unreachable when none of the contexts it can occur in makes the
/// tokenizer emit it (see [`super::context`]: alone, and for SentencePiece-style tokenizers
/// after a separator no merge continues past). WordPiece continuation pieces (`##x`) are
/// judged in word context: such a piece is reachable when its text passes the normaliser and
/// pre-tokenizer unchanged as one piece.
pub fn scan(tok: &Tokenizer, options: &ScanOptions) -> Result<ScanReport> {
    scan_with(
        tok,
        &ScanFacts::new(tok, None, None),
        None,
        options,
        &Cancel::never(),
    )
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
    /// Assumptions that may make it differ from the real tokenizer (see `sources::Loaded`).
    pub warnings: Vec<String>,
}

impl PreparedTokenizer {
    /// Prepares `tokenizer`; `merges` (its BPE merges in rank order) enable the fast path.
    pub fn new(
        tokenizer: Tokenizer,
        merges: Option<&[(String, String)]>,
        notes: Vec<String>,
    ) -> Self {
        Self::with_hints(tokenizer, merges, None, None, notes)
    }

    /// [`Self::new`] with what the loader already knows (see [`sources::Loaded`]): the merges
    /// as ids and the id space. Both must describe `tokenizer`'s model.
    fn with_hints(
        tokenizer: Tokenizer,
        merges: Option<&[(String, String)]>,
        merge_ids: Option<&[(u32, u32, u32)]>,
        n_ids: Option<usize>,
        notes: Vec<String>,
    ) -> Self {
        // Independent of each other, and each mostly serial: built side by side.
        let (fast, facts) = rayon::join(
            || merges.and_then(|m| FastPath::new(&tokenizer, m, merge_ids, n_ids)),
            || ScanFacts::new(&tokenizer, merges, n_ids),
        );
        PreparedTokenizer {
            facts,
            tokenizer,
            fast,
            notes,
            warnings: Vec::new(),
        }
    }

    /// Loads and prepares a `tokenizer.json`, GGUF or tiktoken file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        Ok(Self::from_loaded(sources::load(path)?))
    }

    /// Parses and prepares `tokenizer.json` text.
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(Self::from_loaded(sources::load_json(json, "tokenizer")?))
    }

    /// Prepares a tokenizer loaded by [`sources`], keeping its notes and warnings.
    pub fn from_loaded(loaded: sources::Loaded) -> Self {
        let mut p = Self::with_hints(
            loaded.tokenizer,
            loaded.merges.as_deref(),
            loaded.merge_ids.as_deref(),
            loaded.n_ids,
            loaded.notes,
        );
        p.warnings = loaded.warnings;
        p
    }

    /// Whether the fast re-encoding path is in use.
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Scans every token (see [`scan`]); `use_fast` = false forces the library path.
    pub fn scan(&self, options: &ScanOptions, use_fast: bool) -> Result<ScanReport> {
        self.scan_cancellable(options, use_fast, &Cancel::never())
    }

    /// [`Self::scan`], checking `cancel` between runs of ids ([`Error::Interrupted`] once it
    /// fires).
    pub fn scan_cancellable(
        &self,
        options: &ScanOptions,
        use_fast: bool,
        cancel: &Cancel<'_>,
    ) -> Result<ScanReport> {
        let fast = self.fast.as_ref().filter(|_| use_fast);
        let mut report = scan_with(&self.tokenizer, &self.facts, fast, options, cancel)?;
        report.notes.extend(self.notes.iter().cloned());
        Ok(report)
    }
}

/// One past the largest token id. Cheaper than `get_vocab` (which clones every string): the
/// model's size, the added tokens' largest id, then probe past the end for ids beyond a hole.
/// `model_ids`: one past the model's largest id when the loader knows it (else the model's
/// vocabulary is copied to find it).
pub(crate) fn id_space(tok: &Tokenizer, model_ids: Option<usize>) -> usize {
    let added_max = tok
        .get_added_tokens_decoder()
        .keys()
        .max()
        .map_or(0, |&m| m as usize + 1);
    use tokenizers::Model;
    // The largest id, not the count: a vocabulary with holes still has its top ids scanned.
    let model_max = model_ids.unwrap_or_else(|| {
        tok.get_model()
            .get_vocab()
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1)
    });
    let mut size = tok.get_vocab_size(false).max(added_max).max(model_max);
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
    cancel: &Cancel<'_>,
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
    // They are scanned in rounds of a few per thread: between rounds the calling thread (the
    // one Python delivers signals to, blocked while rayon works) checks `cancel`, so Ctrl-C
    // stops even the library path within a round (tens of milliseconds).
    const CHUNK_IDS: usize = 2048;
    let n_chunks = vocab_size.div_ceil(CHUNK_IDS);
    let round = 4 * rayon::current_num_threads().max(1);
    let mut chunks: Vec<Chunk> = Vec::with_capacity(n_chunks);
    for first in (0..n_chunks).step_by(round) {
        cancel.check()?;
        let part: Vec<Chunk> = (first..(first + round).min(n_chunks))
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
        chunks.extend(part);
    }

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
    report.notes.push(Separator::note(facts.separator.as_ref()));
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
        cancel.check()?;
        report.containment = Some(containment(
            &surfaces,
            options.max_examples,
            options.max_token_bytes,
            cancel,
        )?);
    }
    Ok(report)
}

/// One field of every chunk, in order.
fn field<T>(chunks: &[Chunk], f: impl Fn(&Chunk) -> &Vec<T>) -> Vec<&[T]> {
    chunks.iter().map(|c| f(c).as_slice()).collect()
}
