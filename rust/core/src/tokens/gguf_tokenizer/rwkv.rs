//! llama.cpp's `rwkv` model type (RWKV "world" vocabularies), rebuilt from the `tokenizers`
//! crate's parts as llama.cpp's `llm_tokenizer_rwkv` encodes.
//!
//! GGUF stores each RWKV token as the Python `repr` of its bytes without the quotes (`\n`,
//! `\xe4`, `\\`...); llama.cpp unescapes them ([`unescape`]) into a byte trie holding every
//! token and encodes by greedy longest match from the left. Here the bytes are written with
//! GPT-2's byte-to-character table (a `ByteLevel` pre-tokenizer that does not split) and a
//! `WordPiece` model with an empty continuation prefix does the greedy longest match over the
//! whole text; the `ByteLevel` decoder turns the characters back into bytes. Control tokens
//! are also special added tokens and user-defined ones added tokens, split out first as
//! llama.cpp does.
//!
//! `WordPiece` searches a piece from its end, so a long piece costs the square of its length:
//! the text is first cut before each space that no token spans (see [`space_boundaries`]),
//! which leaves word-sized pieces in ordinary text.
//!
//! A vocabulary without all 256 single bytes is refused: llama.cpp would emit its unknown id
//! (none by default) for a byte no token starts with, which no `tokenizers` model reproduces.

use ahash::AHashMap;
use serde_json::json;
use tokenizers::models::wordpiece::WordPiece;

use super::super::pretokenizers::byte_level;
use super::super::sources::{assemble, byte_to_char, Loaded};
use super::{TYPE_CONTROL, TYPE_USER_DEFINED};
use crate::{Error, Result};

/// llama.cpp's `llama_unescape_rwkv_token`, byte for byte: `\t`, `\n`, `\r`, `\xNN` (read
/// as lowercase hex: other digits give what llama.cpp's arithmetic gives) and `\c` for any
/// other `c`.
pub(crate) fn unescape(escaped: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let (mut escaping, mut hex_left, mut hex) = (false, 0u8, 0u8);
    for &c in escaped.as_bytes() {
        if hex_left > 0 {
            let digit = if c >= b'a' {
                c.wrapping_sub(b'a').wrapping_add(10)
            } else {
                c.wrapping_sub(b'0')
            };
            hex = (hex << 4).wrapping_add(digit);
            hex_left -= 1;
            if hex_left == 0 {
                out.push(hex);
                hex = 0;
            }
        } else if escaping {
            match c {
                b't' => out.push(b'\t'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b'x' => hex_left = 2,
                _ => out.push(c),
            }
            escaping = false;
        } else if c == b'\\' {
            escaping = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// A split before each space that no token can span: one whose previous byte never stands
/// before a space inside a token. No match crosses such a place, so the greedy match restarts
/// there anyway, and cutting the text keeps `WordPiece`'s search (quadratic in the length of
/// a piece) on word-sized pieces. `None` when every byte can precede a space.
fn space_boundaries(tokens: &[Vec<u8>]) -> Option<serde_json::Value> {
    let mut before_space = [false; 256];
    for t in tokens {
        for pair in t.windows(2) {
            if pair[1] == b' ' {
                before_space[pair[0] as usize] = true;
            }
        }
    }
    let mut class: String = (0u8..0x80)
        .filter(|&b| !before_space[b as usize])
        .map(|b| format!("\\x{{{b:02x}}}"))
        .collect();
    // A character of several bytes ends with a continuation byte (0x80-0xbf).
    if !before_space[0x80..0xc0].iter().any(|&b| b) {
        class.push_str("\\x{80}-\\x{10ffff}");
    }
    if class.is_empty() {
        return None;
    }
    Some(
        json!({"type": "Split", "pattern": {"Regex": format!("(?<=[{class}]) ")},
        "behavior": "MergedWithNext", "invert": false}),
    )
}

/// Builds the tokenizer of an `rwkv` vocabulary; see the module doc.
pub(super) fn convert(tokens: &[String], types: &[i64], what: &str) -> Result<Loaded> {
    let table = byte_to_char();
    let spell = |bytes: &[u8]| -> String { bytes.iter().map(|&b| table[b as usize]).collect() };
    let mut vocab: AHashMap<String, u32> = AHashMap::new();
    vocab
        .try_reserve(tokens.len())
        .map_err(|_| Error::malformed(what, format!("{} tokens: out of memory", tokens.len())))?;
    let mut added = Vec::new();
    let bytes_of: Vec<Vec<u8>> = tokens.iter().map(|t| unescape(t)).collect();
    for (id, token) in tokens.iter().enumerate() {
        // llama.cpp's trie keeps the last id of a repeated byte string.
        vocab.insert(spell(&bytes_of[id]), id as u32);
        match types[id] {
            TYPE_CONTROL => added.push((token.clone(), true)),
            TYPE_USER_DEFINED => added.push((token.clone(), false)),
            _ => {}
        }
    }
    let missing: Vec<String> = (0..=255u8)
        .filter(|&b| !vocab.contains_key(&table[b as usize].to_string()))
        .map(|b| format!("0x{b:02x}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::value(
            "tokenizer.ggml.tokens",
            "an rwkv vocabulary with a token for each of the 256 bytes",
            format!(
                "{} byte(s) without one (the first: {}) in {what}",
                missing.len(),
                missing[0]
            ),
        ));
    }
    let mut notes = Vec::new();
    let repeats = tokens.len() - vocab.len();
    if repeats > 0 {
        notes.push(format!(
            "{repeats} token(s) repeat another token's bytes; only the last id of each can be produced"
        ));
    }
    let unk = table[0].to_string();
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(unk)
        .continuing_subword_prefix(String::new())
        .max_input_chars_per_word(usize::MAX)
        .build()
        .map_err(|e| Error::malformed(what, format!("invalid rwkv vocabulary: {e}")))?;
    let bytes_pre = json!({"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": false, "use_regex": false});
    let pre = match space_boundaries(&bytes_of) {
        Some(split) => json!({"type": "Sequence", "pretokenizers": [split, bytes_pre]}),
        None => bytes_pre,
    };
    let tokenizer = assemble(
        model,
        serde_json::Value::Null,
        pre,
        byte_level(false),
        &added,
    )?;
    Ok(Loaded {
        tokenizer,
        merges: None,
        merge_ids: None,
        n_ids: None,
        notes,
        warnings: Vec::new(),
    })
}
