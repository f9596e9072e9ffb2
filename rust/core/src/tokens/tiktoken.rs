//! tiktoken vocabularies: rank files, the public encodings' split patterns and special
//! tokens, and their conversion to a byte-level BPE `tokenizers` tokenizer.
//!
//! A rank file holds only `base64(token bytes) rank` lines: the split pattern and the special
//! tokens live in tiktoken's code, per encoding name. For the names OpenAI publishes they are
//! known (below); a bare file whose name is not one of them gets GPT-2's pattern and
//! `<|endoftext|>` after the last rank, with a warning naming that assumption.

use ahash::AHashMap;
use base64::Engine;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::pretokenizers::{byte_level, split_regex};
use super::sources::{assemble, bpe, byte_to_char, merges_from_priorities, Loaded};
use crate::{Error, Result};

/// GPT-2's split pattern as tiktoken writes it (`gpt2`, `r50k_base`, `p50k_base`).
const R50K_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// `cl100k_base` (possessive quantifiers keep a letter run from giving back its first char).
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
/// `o200k_base`: case-aware words with their contraction, digits by three.
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// The encoding names whose pattern and special tokens are known.
pub const ENCODING_NAMES: &[&str] = &[
    "gpt2",
    "r50k_base",
    "p50k_base",
    "cl100k_base",
    "o200k_base",
];

/// The split pattern and special tokens `(text, id)` of a public tiktoken encoding.
pub fn named_encoding(name: &str) -> Result<(&'static str, Vec<(String, u32)>)> {
    let specials = |list: &[(&str, u32)]| list.iter().map(|&(s, id)| (s.to_owned(), id)).collect();
    Ok(match name {
        "gpt2" | "r50k_base" | "p50k_base" => (R50K_PATTERN, specials(&[("<|endoftext|>", 50256)])),
        "cl100k_base" => (
            CL100K_PATTERN,
            specials(&[
                ("<|endoftext|>", 100257),
                ("<|fim_prefix|>", 100258),
                ("<|fim_middle|>", 100259),
                ("<|fim_suffix|>", 100260),
                ("<|endofprompt|>", 100276),
            ]),
        ),
        "o200k_base" => (
            O200K_PATTERN,
            specials(&[("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)]),
        ),
        other => {
            return Err(Error::value(
                "encoding",
                format!("one of {}", ENCODING_NAMES.join(", ")),
                format!("{other:?}"),
            ))
        }
    })
}

/// Parses a rank file: `base64(token bytes) rank` per line, blank lines ignored.
///
/// Errors name `what` and the 1-based line: text that is not UTF-8, a line without two
/// fields, bad base64, a bad rank, an empty token.
pub fn parse_ranks(data: &[u8], what: &str) -> Result<Vec<(Vec<u8>, u32)>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut ranks = Vec::new();
    for (line_no, line) in data.split(|&b| b == b'\n').enumerate() {
        let bad = |detail: String| {
            Error::malformed(
                what,
                format!(
                    "line {}: {detail} (expected `base64 rank` lines)",
                    line_no + 1
                ),
            )
        };
        let line = std::str::from_utf8(line)
            .map_err(|e| bad(format!("not UTF-8 text (byte {})", e.valid_up_to() + 1)))?
            .trim();
        if line.is_empty() {
            continue;
        }
        let (b64, rank) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("no space in {:?}", short(line))))?;
        let bytes = engine
            .decode(b64)
            .map_err(|e| bad(format!("invalid base64 {:?}: {e}", short(b64))))?;
        let rank: u32 = rank
            .trim()
            .parse()
            .map_err(|_| bad(format!("invalid rank {:?}", short(rank))))?;
        if bytes.is_empty() {
            return Err(bad("empty token".into()));
        }
        ranks
            .try_reserve(1)
            .map_err(|_| bad("out of memory".into()))?;
        ranks.push((bytes, rank));
    }
    if ranks.is_empty() {
        return Err(Error::malformed(what, "no ranks in the file"));
    }
    Ok(ranks)
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Builds the byte-level BPE tokenizer of a tiktoken encoding.
///
/// `ranks` become ids (they must be `0..n` without gaps or repeats), merges are derived from
/// them (`merges_from_priorities`), `pattern` splits the text, and `specials` are special
/// added tokens at their own ids (outside the ranks).
pub fn from_ranks(
    ranks: &[(Vec<u8>, u32)],
    pattern: &str,
    specials: &[(String, u32)],
    what: &str,
) -> Result<Loaded> {
    let table = byte_to_char();
    let tokens: Vec<(String, u32)> = ranks
        .iter()
        .map(|(bytes, rank)| (bytes.iter().map(|&b| table[b as usize]).collect(), *rank))
        .collect();
    let n = tokens.len() as u32;
    let mut ids: Vec<u32> = tokens.iter().map(|t| t.1).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() as u32 != n || ids.last().copied() != Some(n - 1) {
        return Err(Error::malformed(
            what,
            format!("ranks must be 0..{n} without gaps or repeats"),
        ));
    }
    for (text, id) in specials {
        if *id < n {
            return Err(Error::value(
                "special_tokens",
                format!("ids at or above the {n} ranks"),
                format!("{text:?} at {id}"),
            ));
        }
    }
    let mut seen_ids: Vec<u32> = specials.iter().map(|s| s.1).collect();
    seen_ids.sort_unstable();
    seen_ids.dedup();
    if seen_ids.len() != specials.len() {
        return Err(Error::value(
            "special_tokens",
            "distinct ids",
            format!("{specials:?}"),
        ));
    }
    check_pattern(pattern)?;
    let derived = merges_from_priorities(&tokens, f64::from, |_| false);
    let merges = derived.pairs;
    let mut vocab: AHashMap<String, u32> = tokens.iter().cloned().collect();
    if vocab.len() != tokens.len() {
        return Err(Error::malformed(what, "the same token appears twice"));
    }
    // Special tokens sit in the model's vocabulary at their own ids (the library would number
    // added tokens from the end of the vocabulary otherwise); being added tokens too, they are
    // cut out of the text before the model sees it.
    for (text, id) in specials {
        if vocab.insert(text.clone(), *id).is_some() {
            return Err(Error::value(
                "special_tokens",
                "texts that are not also ranked tokens",
                format!("{text:?}"),
            ));
        }
    }
    // tiktoken returns a whole piece directly when it is in the vocabulary: ignore_merges.
    let model = bpe(vocab, merges.clone(), None, false, true, what)?;
    let pre = serde_json::json!({"type": "Sequence", "pretokenizers": [
        split_regex(pattern), byte_level(false)]});
    let added: Vec<(String, bool)> = specials.iter().map(|(t, _)| (t.clone(), true)).collect();
    let tokenizer: Tokenizer = assemble(model, Value::Null, pre, byte_level(true), &added)?;
    Ok(Loaded {
        tokenizer,
        merges: Some(merges),
        merge_ids: Some(derived.ids),
        n_ids: None,
        notes: Vec::new(),
        warnings: Vec::new(),
    })
}

fn check_pattern(pattern: &str) -> Result<()> {
    let p: std::result::Result<tokenizers::PreTokenizerWrapper, _> =
        serde_json::from_value(split_regex(pattern));
    p.map(|_| ()).map_err(|e| {
        Error::value(
            "pattern",
            "a regular expression",
            format!("{pattern:?} ({e})"),
        )
    })
}

/// Builds the tokenizer of a rank file, `name` naming its encoding when known (else the file
/// name's stem is tried, and then GPT-2's pattern is assumed with a warning).
pub fn from_rank_file(data: &[u8], name: Option<&str>, what: &str) -> Result<Loaded> {
    let ranks = parse_ranks(data, what)?;
    let stem = std::path::Path::new(what)
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| ENCODING_NAMES.contains(s));
    let mut warnings = Vec::new();
    let (pattern, specials) = match name.or(stem) {
        Some(name) => named_encoding(name)?,
        None => {
            let n = ranks.len() as u32;
            warnings.push(format!(
                "no known tiktoken encoding for {what}: GPT-2's split pattern and \
                 `<|endoftext|>` at id {n} (after the last rank) are assumed; pass the encoding \
                 name ({}) or a tiktoken.Encoding for another",
                ENCODING_NAMES.join(", ")
            ));
            (R50K_PATTERN, vec![("<|endoftext|>".to_owned(), n)])
        }
    };
    let mut loaded = from_ranks(&ranks, pattern, &specials, what)?;
    loaded.warnings = warnings;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e = parse_ranks(b"YQ== 0\nnot-base64! 1\n", "r.tiktoken").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_ranks(b"YQ== 0\n\xff\xfe 1\n", "r.tiktoken").unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("UTF-8"),
            "{e}"
        );
        let e = from_rank_file(b"YQ== 0\nYg== 5\n", None, "r.tiktoken")
            .err()
            .unwrap();
        assert!(e.to_string().contains("without gaps"), "{e}");
    }

    #[test]
    fn every_named_pattern_compiles() {
        for name in ENCODING_NAMES {
            let (pattern, specials) = named_encoding(name).unwrap();
            check_pattern(pattern).unwrap();
            assert!(!specials.is_empty());
        }
        assert!(named_encoding("p51k").is_err());
    }

    #[test]
    fn specials_keep_their_ids_and_a_bare_file_warns() {
        let ranks = b"YQ== 0\nYg== 1\nYWI= 2\n";
        let loaded = from_rank_file(ranks, None, "x.tiktoken").unwrap();
        assert!(
            loaded.warnings[0].contains("GPT-2"),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(loaded.tokenizer.token_to_id("<|endoftext|>"), Some(3));
        let specials = [("<|a|>".to_owned(), 7), ("<|b|>".to_owned(), 5)];
        let r = parse_ranks(ranks, "x").unwrap();
        let loaded = from_ranks(&r, CL100K_PATTERN, &specials, "x").unwrap();
        assert_eq!(loaded.tokenizer.token_to_id("<|a|>"), Some(7));
        assert_eq!(loaded.tokenizer.token_to_id("<|b|>"), Some(5));
        let enc = loaded.tokenizer.encode("ab<|a|>", false).unwrap();
        assert_eq!(enc.get_ids(), &[2, 7]);
        assert!(loaded.warnings.is_empty());
    }
}
