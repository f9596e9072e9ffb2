//! Finding added tokens inside short texts (the fast path hands such texts to the library).

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// Finds whether a short text holds any of a set of strings (the added tokens).
///
/// Almost no token's text holds an added token, and one Aho-Corasick search costs more than
/// the few bytes it reads. So the search runs only when some byte of the text could start a
/// match: a byte that is a whole pattern, or two adjacent bytes that begin one.
pub(super) struct AddedTokenSearch {
    automaton: AhoCorasick,
    /// Bytes that are patterns on their own.
    single: [bool; 256],
    /// Bit `first << 8 | second` is set when a pattern starts with those two bytes.
    pairs: Box<[u64; 1024]>,
}

impl AddedTokenSearch {
    /// `None` (in `Some`) when there is nothing to look for; `None` when building fails.
    pub(super) fn new<S: AsRef<[u8]>>(patterns: &[S]) -> Option<Option<Self>> {
        if patterns.is_empty() {
            return Some(None);
        }
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .match_kind(MatchKind::LeftmostFirst)
            .build(patterns)
            .ok()?;
        let mut search = AddedTokenSearch {
            automaton,
            single: [false; 256],
            pairs: Box::new([0; 1024]),
        };
        for p in patterns {
            match p.as_ref() {
                [] => {}
                [b] => search.single[*b as usize] = true,
                [a, b, ..] => {
                    let bit = (*a as usize) << 8 | *b as usize;
                    search.pairs[bit / 64] |= 1 << (bit % 64);
                }
            }
        }
        Some(Some(search))
    }

    pub(super) fn is_match(&self, text: &str) -> bool {
        let b = text.as_bytes();
        let pair = |i: usize| {
            let bit = (b[i] as usize) << 8 | b[i + 1] as usize;
            self.pairs[bit / 64] & (1 << (bit % 64)) != 0
        };
        let maybe =
            (0..b.len()).any(|i| self.single[b[i] as usize] || (i + 1 < b.len() && pair(i)));
        maybe && self.automaton.is_match(text)
    }
}
