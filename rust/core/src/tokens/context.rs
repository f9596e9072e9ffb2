//! Reachability in context: the texts a token's text is encoded in besides on its own.
//!
//! A token is *reachable* when some natural text makes the tokenizer emit it. The scan cannot
//! try every text, so it tries the contexts in which a token can occur and that are the most
//! favourable to it, chosen per tokenizer shape:
//!
//! - **Alone** (every tokenizer): the token's decoded text is the whole input. For tokenizers
//!   that put a `▁` in front of the text, a lone `▁` token left in front is dropped (the text
//!   does not start with a space, so that `▁` is the tokenizer's own).
//! - **After a separator** (tokenizers that put a `▁` in front of the text, SentencePiece
//!   style, with no pre-tokenizer to split words): a word-internal piece such as `er` never
//!   occurs at the start of a text, where the prepended `▁` merges into it (`▁er`). Inside a
//!   word it follows other characters. The scan puts one separator character `c` before the
//!   token's text and asks whether `encode(c + text)` is `encode(c)` followed by the token.
//!   `c` is a character that no merge continues past (no merge's left part ends with `c`, or
//!   without the merge list, no token holds `c` before another character; digits in Llama
//!   and Gemma vocabularies, which split digits): no merge can cross from `c` into the text,
//!   so the text is tokenized as if it began a word without a
//!   `▁`. No other left context does better, since a merge across the boundary only ever
//!   joins the text's first character to something before it, and the end of the text is
//!   the best right context for the same reason. The text used here is the one the token
//!   stands for after another token (a leading `▁` stays a space: decoders strip it only at
//!   the start of the output).
//!
//! Byte-level BPE (GPT-2 style) needs no second context: its split regexes have no
//! look-behind, so a left context that forms its own pre-token restarts the split at the
//! token's text exactly as at the start of a text, and a left context that joins the text's
//! first pre-token can only add merges across the boundary. WordPiece continuation pieces
//! (`##x`) are judged inside a word by [`super::classify`].

use tokenizers::Tokenizer;

use super::classify::byte_fallback_value;

use crate::{Error, Result};

/// Separator candidates, most natural first: digits, then ASCII punctuation.
const CANDIDATES: &str = "0123456789.,)]}:;!?\"'/-(";

/// The separator of the "after a separator" context for one tokenizer.
pub(super) struct Separator {
    /// The character put before a token's text.
    pub(super) ch: char,
    /// Its token (the model's single-character token).
    pub(super) id: u32,
    /// `encode(ch)`: the ids removed from the front of each context's encoding.
    pub(super) prefix_ids: Vec<u32>,
    /// `decode([id])`: removed from the front of `decode([id, token])` to get the text a
    /// token stands for after another token.
    pub(super) decoded: String,
}

impl Separator {
    /// The separator for `tok` when it prepends `▁` and has no pre-tokenizer; `None` when
    /// the context does not apply or no candidate qualifies.
    /// `merges`: the BPE merges, when known. (A candidate the library fails to encode or
    /// decode is passed over.)
    pub(super) fn find(
        tok: &Tokenizer,
        prepends: bool,
        n_ids: usize,
        merges: Option<&[(String, String)]>,
    ) -> Option<Self> {
        if !prepends || tok.get_pre_tokenizer().is_some() {
            return None;
        }
        // Candidates that some merge (or token) continues past.
        let mut continued = [false; 128];
        if let Some(merges) = merges {
            for (left, _) in merges {
                if let Some(c) = left.chars().next_back().filter(char::is_ascii) {
                    continued[c as usize] = true;
                }
            }
        }
        let added = tok.get_added_tokens_decoder();
        for id in (0..n_ids as u32).filter(|_| merges.is_none()) {
            if added.contains_key(&id) {
                continue;
            }
            // `<0xNN>` byte tokens stand for one byte: their spelling is not text.
            let Some(token) = tok
                .id_to_token(id)
                .filter(|t| byte_fallback_value(t).is_none())
            else {
                continue;
            };
            let mut chars = token.chars().peekable();
            while let Some(c) = chars.next() {
                if c.is_ascii() && chars.peek().is_some() {
                    continued[c as usize] = true;
                }
            }
        }
        CANDIDATES
            .chars()
            .filter(|&c| !continued[c as usize])
            .find_map(|ch| {
                let text = ch.to_string();
                let id = tok
                    .token_to_id(&text)
                    .filter(|id| !added.contains_key(id))?;
                let prefix_ids = tok.encode_fast(text.as_str(), false).ok()?;
                let decoded = tok.decode(&[id], false).ok()?;
                Some(Separator {
                    ch,
                    id,
                    prefix_ids: prefix_ids.get_ids().to_vec(),
                    decoded,
                })
            })
    }

    /// Writes `ch` followed by the text token `id` stands for after another token into
    /// `text` (cleared first), by the library's decoder; false when that decoding does not
    /// start with the separator's own text.
    pub(super) fn context_text(&self, tok: &Tokenizer, id: u32, text: &mut String) -> Result<bool> {
        let both = tok
            .decode(&[self.id, id], false)
            .map_err(|e| Error::Internal(format!("decoding token {id} failed: {e}")))?;
        text.clear();
        match both.strip_prefix(self.decoded.as_str()) {
            Some(rest) if !rest.is_empty() => {
                text.push(self.ch);
                text.push_str(rest);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The ids after the separator's own, when `ids` starts with them.
    pub(super) fn strip<'a>(&self, ids: &'a [u32]) -> Option<&'a [u32]> {
        ids.strip_prefix(self.prefix_ids.as_slice())
    }

    /// The note the report carries on what was tested (`sep`: the separator, if any).
    pub(super) fn note(sep: Option<&Self>) -> String {
        let Some(sep) = sep else {
            return "reachability: each token's text was encoded alone (for this tokenizer no \
                    other context can do better; WordPiece continuations inside a word)"
                .into();
        };
        format!(
            "reachability: each token's text was encoded alone and, for tokens that did not come \
             back, after {:?} (a character no merge continues past) with that character's tokens \
             removed, as word-internal pieces occur",
            sep.ch
        )
    }
}
