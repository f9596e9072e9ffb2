//! Under-trained token detection ("Fishing for Magikarp", Land & Bartolo 2024).
//!
//! Three pieces, each usable alone:
//! - [`scan()`]: a parallel pass over a tokenizer's vocabulary that decodes every token and
//!   encodes the text again, sorting tokens into [`Category`]s (ok, special, undecodable,
//!   unreachable as one other token or as several), flagging single-byte tokens, and, for every
//!   token, listing the longer tokens that contain it ([`Containment`]).
//! - [`sources`]: builds the tokenizer from a `tokenizer.json`, a GGUF file's metadata (with
//!   the small reader in [`gguf`], converted by [`gguf_tokenizer`] with the splitting rules of
//!   [`pretokenizers`]) or a tiktoken rank file ([`tiktoken`]).
//! - [`indicators`]: weight-based indicators over an (un)embedding matrix: cosine distance to
//!   the mean of a reference set of unused tokens after removing the dominant direction, row
//!   norms, and groups of identical rows.

mod added_search;
mod classify;
mod containment;
mod context;
pub mod dequant;
mod fast;
pub mod gguf;
pub mod gguf_tokenizer;
mod gguf_write;
pub mod indicators;
mod lanczos;
mod own_encoding;
mod packed;
pub mod pretokenizers;
mod report;
mod scan;
pub mod sources;
pub mod tiktoken;
pub mod weights;

pub use packed::PackedStrings;
pub use report::{Category, Containment, ScanOptions, ScanReport};
pub use scan::{scan, PreparedTokenizer};

#[cfg(test)]
mod context_tests;
#[cfg(test)]
mod tests;
