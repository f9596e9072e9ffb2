//! What a scan returns: the categories, the options and the per-token report.

use super::PackedStrings;

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

/// Options of [`scan`](super::scan()).
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

/// The result of [`scan`](super::scan()): one entry per token id.
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
