//! Reachability in context on random SentencePiece-style vocabularies: the fast path agrees
//! with the library, and no short natural context makes an "unreachable" token appear.

use proptest::prelude::*;
use tokenizers::Tokenizer;

use super::gguf::{GgufMetadata, GgufValue};
use super::{sources, Category, PreparedTokenizer, ScanOptions};

/// A SentencePiece GGUF with byte fallback, the pieces' single characters and `pieces`
/// (scored by position: earlier pieces merge first).
fn sentencepiece(pieces: &[String], add_space_prefix: bool) -> GgufMetadata {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for c in ["\u{2581}", "a", "b", "1", "."] {
        tokens.push(c.into());
        types.push(1);
    }
    for p in pieces {
        if !tokens.contains(p) {
            tokens.push(p.clone());
            types.push(1);
        }
    }
    let scores: Vec<GgufValue> = (0..tokens.len())
        .map(|i| GgufValue::F32(-(i as f32)))
        .collect();
    let array = |v: Vec<GgufValue>| GgufValue::Array(v);
    GgufMetadata {
        version: 3,
        entries: vec![
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("llama".into()),
            ),
            (
                "tokenizer.ggml.add_space_prefix".into(),
                GgufValue::Bool(add_space_prefix),
            ),
            (
                "tokenizer.ggml.tokens".into(),
                array(tokens.into_iter().map(GgufValue::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                array(types.into_iter().map(GgufValue::I32).collect()),
            ),
            ("tokenizer.ggml.scores".into(), array(scores)),
        ],
        tensors: vec![],
    }
}

/// Whether the library's encoding of `prefix + text + suffix` holds token `id` exactly over
/// the bytes of `text`.
fn emitted_in(tok: &Tokenizer, id: u32, prefix: &str, text: &str, suffix: &str) -> bool {
    let full = format!("{prefix}{text}{suffix}");
    let enc = tok.encode(full.as_str(), false).unwrap();
    let span = (prefix.len(), prefix.len() + text.len());
    enc.get_ids()
        .iter()
        .zip(enc.get_offsets())
        .any(|(&i, &o)| i == id && o == span)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn contexts_agree_with_the_library_and_no_short_context_does_better(
        pieces in proptest::collection::vec("[ab1.\u{2581}]{2,4}", 1..30),
        add_space_prefix in any::<bool>(),
    ) {
        let meta = sentencepiece(&pieces, add_space_prefix);
        let loaded = sources::gguf_tokenizer_with_merges(&meta, "sp").unwrap();
        let p = PreparedTokenizer::new(loaded.tokenizer, loaded.merges.as_deref(), vec![]);
        prop_assert!(p.has_fast_path());
        let opts = ScanOptions { containment: false, ..Default::default() };
        let fast = p.scan(&opts, true).unwrap();
        let slow = p.scan(&opts, false).unwrap();
        prop_assert_eq!(&fast.category, &slow.category);
        prop_assert_eq!(&fast.decoded, &slow.decoded);
        prop_assert_eq!(&fast.reencoded_offsets, &slow.reencoded_offsets);
        prop_assert_eq!(&fast.reencoded, &slow.reencoded);
        // The claim behind the contexts: when a separator applies, no other left or right
        // context (every string of up to two characters) emits an unreachable token.
        let with_separator = fast.notes.iter().any(|n| n.contains("after"));
        prop_assert!(!with_separator || add_space_prefix, "{:?}", fast.notes);
        if add_space_prefix && !with_separator {
            // Every candidate is continued by some merge: only the lone context is tried.
            return Ok(());
        }
        let tok = &p.tokenizer;
        let contexts: Vec<String> = ["", "a", "b", "1", ".", " "]
            .iter()
            .flat_map(|x| ["", "a", "b", "1", " "].iter().map(move |y| format!("{x}{y}")))
            .collect();
        for id in 0..fast.vocab_size() {
            let unreachable = matches!(
                fast.category[id],
                Category::UnreachableSingle | Category::UnreachableMulti
            );
            let token = &fast.tokens[id];
            if !unreachable || token.starts_with("<0x") || token.starts_with('<') {
                continue;
            }
            let text = token.replace('\u{2581}', " ");
            for before in &contexts {
                for after in ["", "a", " ", "1"] {
                    prop_assert!(
                        !emitted_in(tok, id as u32, before, &text, after),
                        "{:?} is emitted in {:?} + {:?} + {:?}", token, before, text, after
                    );
                }
            }
        }
    }
}

#[test]
fn a_cancel_that_fires_stops_the_scan_and_one_that_does_not_changes_nothing() {
    let meta = sentencepiece(&["ab".into(), "b1".into()], true);
    let loaded = sources::gguf_tokenizer_with_merges(&meta, "sp").unwrap();
    let p = PreparedTokenizer::new(loaded.tokenizer, loaded.merges.as_deref(), vec![]);
    let opts = ScanOptions::default();
    let polls = std::sync::atomic::AtomicUsize::new(0);
    let poll = || {
        polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    };
    for fast in [true, false] {
        let cancel = crate::Cancel::new(&poll, "scanning");
        std::thread::sleep(crate::cancel::POLL_INTERVAL);
        let err = p.scan_cancellable(&opts, fast, &cancel).unwrap_err();
        assert_eq!(err, crate::Error::Interrupted("scanning".into()));
        let never = crate::Cancel::never();
        let r = p.scan_cancellable(&opts, fast, &never).unwrap();
        assert_eq!(r.category, p.scan(&opts, fast).unwrap().category);
    }
    assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 2);
}
