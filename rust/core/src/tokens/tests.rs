//! Scanner tests on small synthetic tokenizers, one per category and per source format.

use std::collections::BTreeSet;

use base64::Engine;
use proptest::prelude::*;
use serde_json::json;

use super::gguf::{write_metadata, GgufMetadata, GgufValue};
use super::sources::{
    byte_to_char, gguf_tokenizer, load_tokenizer, tiktoken_tokenizer, tokenizer_from_json,
};
use super::*;
use crate::Error;
use tokenizers::Tokenizer;

fn from_value(v: serde_json::Value) -> Tokenizer {
    tokenizer_from_json(&v.to_string(), "test").unwrap()
}

fn by_token(report: &ScanReport, token: &str) -> usize {
    report
        .tokens
        .iter()
        .position(|t| t == token)
        .unwrap_or_else(|| panic!("no token {token:?}"))
}

fn tiktoken_text(extra: &[&[u8]]) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut lines = Vec::new();
    for b in 0..=255u8 {
        lines.push(format!("{} {}", engine.encode([b]), b));
    }
    for (i, t) in extra.iter().enumerate() {
        lines.push(format!("{} {}", engine.encode(t), 256 + i));
    }
    lines.join("\n")
}

/// A byte-level BPE with a special token, a token with no merge path and a partial character.
fn byte_level_tokenizer() -> Tokenizer {
    let table = byte_to_char();
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(table[b as usize].to_string(), json!(b));
    }
    let enc = |s: &[u8]| -> String { s.iter().map(|&b| table[b as usize]).collect() };
    vocab.insert(enc(b"ab"), json!(256));
    vocab.insert(enc(b"abc"), json!(257));
    vocab.insert(enc(b"xyz"), json!(258)); // no merge builds it
    vocab.insert(enc(" ab".as_bytes()), json!(259));
    vocab.insert(enc("\u{e9}".as_bytes()), json!(260)); // é = C3 A9, valid
    vocab.insert(enc(&[0xe2, 0x82]), json!(261)); // first two bytes of €: undecodable
    from_value(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 262, "content": "<|end|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab,
            "merges": [["a", "b"], ["ab", "c"], [enc(b" "), "ab".to_string()], [enc(&[0xc3]), enc(&[0xa9])], [enc(&[0xe2]), enc(&[0x82])]]}
    }))
}

#[test]
fn byte_level_categories_are_exact() {
    let tok = byte_level_tokenizer();
    let r = scan(&tok, &ScanOptions::default()).unwrap();
    assert_eq!(r.vocab_size(), 263);
    assert_eq!(r.category[262], Category::Special);
    assert_eq!(r.category[258], Category::UnreachableMulti);
    assert_eq!(
        &r.reencoded[r.reencoded_offsets[258] as usize..r.reencoded_offsets[259] as usize],
        &[b'x' as u32, b'y' as u32, b'z' as u32]
    );
    assert_eq!(r.category[261], Category::Undecodable);
    for id in [256, 257, 259, 260] {
        assert_eq!(r.category[id], Category::Ok, "token {id}");
    }
    // 128 ASCII bytes decode alone; the 128 high bytes are partial characters.
    assert_eq!(r.single_byte.iter().filter(|&&b| b).count(), 256);
    assert_eq!(r.count(Category::Undecodable), 129);
    assert_eq!(r.count(Category::Ok), 128 + 4);
    assert!(r.impossible_bytes[0xff] && r.impossible_bytes[0xc0] && !r.impossible_bytes[0x80]);
    assert_eq!(&r.decoded[259], " ab");
}

#[test]
fn containment_lists_longer_tokens_shortest_first() {
    let tok = byte_level_tokenizer();
    let r = scan(&tok, &ScanOptions::default()).unwrap();
    let c = r.containment.as_ref().unwrap();
    let ab = 256;
    // "ab" is inside "abc" and " ab"; "a" is in "ab", "abc", " ab".
    assert_eq!(c.count[ab], 2);
    let ex = &c.examples[c.offsets[ab] as usize..c.offsets[ab + 1] as usize];
    assert_eq!(
        ex.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([257, 259])
    );
    assert_eq!(c.count[b'a' as usize], 3);
    assert_eq!(c.count[257], 0);
    // The special token takes no part.
    assert_eq!(c.count[262], 0);
    let none = scan(
        &tok,
        &ScanOptions {
            containment: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(none.containment.is_none());
}

fn wordpiece_tokenizer() -> Tokenizer {
    let words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[unused0]",
        "un",
        "##aff",
        "##able",
        "##!",
        "hello",
        "Hello",
        "!",
        "[",
        "]",
        "##0",
        "unused",
        "a",
        "##a",
    ];
    let vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i)))
        .collect();
    from_value(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    }))
}

#[test]
fn wordpiece_continuations_are_judged_in_word_context() {
    let tok = wordpiece_tokenizer();
    let r = scan(&tok, &ScanOptions::default()).unwrap();
    let cat = |t: &str| r.category[by_token(&r, t)];
    assert_eq!(cat("##aff"), Category::Ok);
    assert_eq!(cat("##able"), Category::Ok);
    assert_eq!(cat("##0"), Category::Ok);
    assert_eq!(cat("##a"), Category::Ok);
    assert!(r.continuation[by_token(&r, "##aff")]);
    // Punctuation is split off by the pre-tokenizer: "##!" can never be produced.
    assert_eq!(cat("##!"), Category::UnreachableMulti);
    // `[unused0]` is split into pieces; "Hello" is lowercased to "hello".
    assert_eq!(cat("[unused0]"), Category::UnreachableMulti);
    assert_eq!(cat("Hello"), Category::UnreachableSingle);
    assert_eq!(cat("hello"), Category::Ok);
    assert_eq!(cat("[PAD]"), Category::Special);
    assert_eq!(r.count(Category::Special), 3);
    // Continuations are compared without their "##": "a" is inside "##aff" and "##able" only
    // ("##a" has the same text, so it does not count as longer).
    let c = r.containment.as_ref().unwrap();
    let a = by_token(&r, "a");
    assert_eq!(c.count[a], 2);
}

fn sentencepiece_gguf(add_space_prefix: bool) -> GgufMetadata {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    let mut scores = vec![0f32, 0.0, 0.0];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in [
        ("\u{2581}", -1.0),
        ("h", -2.0),
        ("i", -2.0),
        ("\u{2581}h", -3.0),
        ("\u{2581}hi", -4.0),
        ("\n", -2.0),
        ("q", -2.0),
        ("qq", -9.0),
        ("qqq", -5.0),
        ("<unused0>", 0.0),
    ] {
        tokens.push(t.into());
        types.push(if t == "<unused0>" { 5 } else { 1 });
        scores.push(s);
    }
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
                GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
            ),
            (
                "tokenizer.ggml.scores".into(),
                GgufValue::Array(scores.into_iter().map(GgufValue::F32).collect()),
            ),
        ],
        tensors: vec![],
    }
}

#[test]
fn gguf_sentencepiece_byte_fallback_tokens() {
    let meta = sentencepiece_gguf(true);
    let (tok, notes) = gguf_tokenizer(&meta, "sp.gguf").unwrap();
    assert!(notes.is_empty());
    let r = scan(&tok, &ScanOptions::default()).unwrap();
    let cat = |t: &str| r.category[by_token(&r, t)];
    assert_eq!(cat("<s>"), Category::Special);
    assert_eq!(cat("<unused0>"), Category::Special);
    assert_eq!(cat("\u{2581}hi"), Category::Ok);
    assert_eq!(cat("\u{2581}h"), Category::Ok);
    // "\n" exists as a token, so its byte-fallback twin is never produced.
    assert_eq!(cat("<0x0A>"), Category::UnreachableSingle);
    // "Z" has no token: byte fallback produces <0x5A>.
    assert_eq!(cat("<0x5A>"), Category::Ok);
    assert_eq!(cat("<0xE2>"), Category::Undecodable);
    assert_eq!(r.single_byte.iter().filter(|&&b| b).count(), 256);
    // "qqq" outranks "qq" (better score), so "qq" is only built when nothing else applies.
    let encoded = tok.encode("qqq", false).unwrap();
    assert_eq!(encoded.get_tokens(), ["\u{2581}", "qqq"]);
}

#[test]
fn gguf_files_load_and_bad_ones_fail_clearly() {
    let dir = std::env::temp_dir().join(format!("ferrolm-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sp.gguf");
    let bytes = write_metadata(&sentencepiece_gguf(false));
    std::fs::write(&path, &bytes).unwrap();
    let (tok, _) = load_tokenizer(&path).unwrap();
    assert_eq!(tok.get_vocab_size(true), 3 + 256 + 10);
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_tokenizer(&path).err().unwrap();
    assert!(
        matches!(e, Error::Malformed { .. }) && e.to_string().contains("truncated"),
        "{e}"
    );
    let mut meta = sentencepiece_gguf(false);
    meta.entries[0].1 = GgufValue::String("plamo2".into());
    let e = gguf_tokenizer(&meta, "x").unwrap_err();
    assert!(e.to_string().contains("one of gpt2, llama, bert"), "{e}");
    meta.entries.remove(0);
    let e = gguf_tokenizer(&meta, "x").unwrap_err();
    assert!(e.to_string().contains("no tokenizer inside"), "{e}");
    std::fs::write(&path, b"{\"version\": ").unwrap();
    let e = load_tokenizer(&path).err().unwrap();
    assert!(e.to_string().contains("not a valid tokenizer.json"), "{e}");
    let e = load_tokenizer(&dir.join("missing.json")).err().unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gguf_gpt2_model_with_merges_matches_tokens() {
    let table = byte_to_char();
    let mut tokens: Vec<String> = (0..=255u8).map(|b| table[b as usize].to_string()).collect();
    tokens.extend([
        "ab".to_string(),
        "abc".to_string(),
        "<|im_start|>".to_string(),
    ]);
    let mut types = vec![1i32; 258];
    types.push(3);
    let meta = GgufMetadata {
        version: 3,
        entries: vec![
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".into(),
                GgufValue::String("smollm".into()),
            ),
            (
                "tokenizer.ggml.tokens".into(),
                GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
            ),
            (
                "tokenizer.ggml.merges".into(),
                GgufValue::Array(vec![
                    GgufValue::String("a b".into()),
                    GgufValue::String("ab c".into()),
                ]),
            ),
        ],
        tensors: vec![],
    };
    let (tok, _) = gguf_tokenizer(&meta, "g").unwrap();
    let r = scan(&tok, &ScanOptions::default()).unwrap();
    assert_eq!(r.count(Category::Special), 1);
    assert_eq!(
        r.count(Category::UnreachableMulti) + r.count(Category::UnreachableSingle),
        0
    );
    assert_eq!(r.count(Category::Undecodable), 128);
}

#[test]
fn tiktoken_ranks_build_a_gpt2_style_tokenizer() {
    let text = tiktoken_text(&[b"ab", b"abc", b" a", &[0xe2, 0x82], &[0xe2, 0x82, 0xac]]);
    let tok = tiktoken_tokenizer(&text, "r").unwrap();
    let r = scan(&tok, &ScanOptions::default()).unwrap();
    assert_eq!(r.vocab_size(), 262);
    assert_eq!(r.count(Category::Special), 1);
    assert_eq!(&r.tokens[261], "<|endoftext|>");
    assert_eq!(r.single_byte.iter().filter(|&&b| b).count(), 256);
    assert_eq!(r.count(Category::Undecodable), 129);
    assert_eq!(
        r.count(Category::UnreachableMulti) + r.count(Category::UnreachableSingle),
        0
    );
    assert_eq!(&r.decoded[260], "\u{20ac}");
    let ids = tok
        .encode("abc \u{20ac}", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids, vec![257, b' ' as u32, 260]);
}

fn naive_containment(r: &ScanReport) -> Vec<u32> {
    let surfaces: Vec<Option<Vec<u8>>> = (0..r.vocab_size())
        .map(|i| {
            (r.category[i] != Category::Special).then(|| {
                let table = sources::char_to_byte();
                r.tokens[i].chars().map(|c| table[&c]).collect()
            })
        })
        .collect();
    surfaces
        .iter()
        .map(|inner| {
            let Some(inner) = inner else { return 0 };
            surfaces
                .iter()
                .flatten()
                .filter(|outer| {
                    outer.len() > inner.len()
                        && outer.windows(inner.len()).any(|w| w == inner.as_slice())
                })
                .count() as u32
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn scan_invariants_hold_on_random_tiktoken_vocabularies(
        extra in proptest::collection::btree_set("[abc ]{2,5}", 0..25)
    ) {
        let extra: Vec<&[u8]> = extra.iter().map(|s| s.as_bytes()).collect();
        let tok = tiktoken_tokenizer(&tiktoken_text(&extra), "p").unwrap();
        let r = scan(&tok, &ScanOptions { max_examples: 100, ..Default::default() }).unwrap();
        prop_assert_eq!(Category::ALL.iter().map(|&c| r.count(c)).sum::<usize>(), r.vocab_size());
        for id in 0..r.vocab_size() {
            let ids = tok.encode(&r.decoded[id], false).unwrap().get_ids().to_vec();
            match r.category[id] {
                Category::Ok => prop_assert_eq!(ids, vec![id as u32]),
                Category::UnreachableSingle => prop_assert!(ids.len() == 1 && ids[0] != id as u32),
                Category::UnreachableMulti => prop_assert!(ids.len() != 1),
                _ => {}
            }
        }
        let c = r.containment.as_ref().unwrap();
        prop_assert_eq!(&c.count, &naive_containment(&r));
        for id in 0..r.vocab_size() {
            let n = (c.offsets[id + 1] - c.offsets[id]) as u32;
            prop_assert_eq!(n, c.count[id]);
        }
    }
}

fn assert_same_scan(a: &ScanReport, b: &ScanReport) {
    assert_eq!(a.category, b.category);
    assert_eq!(a.decoded, b.decoded);
    assert_eq!(a.reencoded_offsets, b.reencoded_offsets);
    assert_eq!(a.reencoded, b.reencoded);
}

#[test]
fn fast_path_agrees_with_the_library_on_sentencepiece() {
    for prefix in [false, true] {
        let meta = sentencepiece_gguf(prefix);
        let loaded = sources::gguf_tokenizer_with_merges(&meta, "sp").unwrap();
        assert!(loaded.merge_ids.is_some() && loaded.n_ids.is_some());
        // Without the loader's hints (merges looked up as strings) and with them (as ids).
        let plain =
            PreparedTokenizer::new(loaded.tokenizer.clone(), loaded.merges.as_deref(), vec![]);
        let hinted = PreparedTokenizer::from_loaded(loaded);
        let opts = ScanOptions::default();
        for p in [plain, hinted] {
            assert!(p.has_fast_path());
            assert_same_scan(
                &p.scan(&opts, true).unwrap(),
                &p.scan(&opts, false).unwrap(),
            );
        }
    }
}

#[test]
fn prepared_tokenizer_from_json_keeps_merges() {
    let tok = byte_level_tokenizer();
    let json = tok.to_string(false).unwrap();
    let p = PreparedTokenizer::from_json(&json).unwrap();
    assert!(p.has_fast_path());
    let opts = ScanOptions::default();
    assert_same_scan(
        &p.scan(&opts, true).unwrap(),
        &p.scan(&opts, false).unwrap(),
    );
    let wp =
        PreparedTokenizer::from_json(&wordpiece_tokenizer().to_string(false).unwrap()).unwrap();
    assert!(!wp.has_fast_path());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn fast_path_agrees_with_the_library_on_random_byte_level_vocabularies(
        extra in proptest::collection::btree_set("[ab c\u{e9}']{2,6}", 0..30)
    ) {
        let extra: Vec<&[u8]> = extra.iter().map(|s| s.as_bytes()).collect();
        let loaded = sources::tiktoken_tokenizer_with_merges(&tiktoken_text(&extra), "p").unwrap();
        prop_assert!(loaded.merge_ids.is_some());
        // The merges as ids, as `sources::load` hands them over.
        let p = PreparedTokenizer::from_loaded(loaded);
        prop_assert!(p.has_fast_path());
        let opts = ScanOptions { containment: false, ..Default::default() };
        let fast = p.scan(&opts, true).unwrap();
        let slow = p.scan(&opts, false).unwrap();
        prop_assert_eq!(&fast.category, &slow.category);
        prop_assert_eq!(&fast.decoded, &slow.decoded);
        prop_assert_eq!(&fast.reencoded, &slow.reencoded);
    }
}

/// A random BPE over a small alphabet: token texts and `(left, right, merged)` merges in rank
/// order. Repeated letters make the same pair occur several times in one text (the leftmost
/// wins), and shuffled ranks make runs where a part needs a merge that ranks after the whole.
fn random_bpe(
    letters: usize,
    steps: &[(usize, usize)],
    shuffle: Option<&[u32]>,
) -> (Vec<String>, Vec<(u32, u32, u32)>) {
    let mut texts: Vec<String> = "abcd".chars().take(letters).map(String::from).collect();
    let mut merges: Vec<(u32, u32, u32)> = Vec::new();
    for &(i, j) in steps {
        let (l, r) = ((i % texts.len()) as u32, (j % texts.len()) as u32);
        let text = format!("{}{}", texts[l as usize], texts[r as usize]);
        if text.len() > 10 || merges.iter().any(|m| (m.0, m.1) == (l, r)) {
            continue;
        }
        let merged = match texts.iter().position(|t| *t == text) {
            Some(m) => m as u32,
            None => {
                texts.push(text);
                texts.len() as u32 - 1
            }
        };
        merges.push((l, r, merged));
    }
    if let Some(keys) = shuffle {
        let mut keyed: Vec<(u32, (u32, u32, u32))> = merges
            .iter()
            .enumerate()
            .map(|(k, &m)| (keys.get(k).copied().unwrap_or(0), m))
            .collect();
        keyed.sort_by_key(|&(key, _)| key);
        merges = keyed.into_iter().map(|(_, m)| m).collect();
    }
    (texts, merges)
}

/// Plain BPE: merge the lowest-ranked adjacent pair, leftmost first, until none is left.
/// Returns the ids and the rank of every merge made, in order.
fn plain_bpe(texts: &[String], merges: &[(u32, u32, u32)], text: &str) -> (Vec<u32>, Vec<u32>) {
    let mut ids: Vec<u32> = text
        .chars()
        .map(|c| texts.iter().position(|t| *t == c.to_string()).unwrap() as u32)
        .collect();
    let rank = |l: u32, r: u32| merges.iter().position(|m| (m.0, m.1) == (l, r));
    let mut ranks = Vec::new();
    loop {
        let best = (0..ids.len().saturating_sub(1))
            .filter_map(|i| rank(ids[i], ids[i + 1]).map(|r| (r, i)))
            .min();
        let Some((r, i)) = best else { break };
        ids[i] = merges[r].2;
        ids.remove(i + 1);
        ranks.push(r as u32);
    }
    (ids, ranks)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn own_encodings_are_exactly_the_tokens_bpe_builds_with_non_decreasing_ranks(
        letters in 1usize..4,
        steps in proptest::collection::vec((0usize..40, 0usize..40), 1..40),
        keys in proptest::option::of(proptest::collection::vec(0u32..1000, 40)),
    ) {
        let (texts, merges) = random_bpe(letters, &steps, keys.as_deref());
        let own = own_encoding::OwnEncodings::new(
            texts.len(),
            0..letters as u32,
            &merges,
            |l, r| merges.iter().position(|m| (m.0, m.1) == (l, r)).map(|p| p as u32),
        );
        // The plain BPE must be the library's BPE (same tie rule).
        let vocab: serde_json::Map<String, serde_json::Value> =
            texts.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
        let merge_texts: Vec<[&str; 2]> = merges
            .iter()
            .map(|m| [texts[m.0 as usize].as_str(), texts[m.1 as usize].as_str()])
            .collect();
        let library = from_value(json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merge_texts}
        }));
        for (id, text) in texts.iter().enumerate() {
            let (ids, ranks) = plain_bpe(&texts, &merges, text);
            let encoded = library.encode(text.as_str(), false).unwrap();
            prop_assert_eq!(&ids, &encoded.get_ids().to_vec(), "text {:?}", text);
            let monotone = ranks.windows(2).all(|w| w[0] <= w[1]);
            let expected = ids == [id as u32] && monotone;
            prop_assert_eq!(
                own.contains(id as u32), expected,
                "token {:?}: plain BPE gives {:?} with ranks {:?}; merges {:?}",
                text, ids, ranks, merges
            );
        }
    }
}

#[test]
fn own_encodings_follow_the_leftmost_rule_on_repeated_pairs() {
    let texts: Vec<String> = ["a", "aa", "aaa", "aaaa"].map(String::from).to_vec();
    let own = |merges: &[(u32, u32, u32)]| {
        let own = own_encoding::OwnEncodings::new(4, [0], merges, |l, r| {
            merges
                .iter()
                .position(|m| (m.0, m.1) == (l, r))
                .map(|p| p as u32)
        });
        (1..4).filter(|&id| own.contains(id)).collect::<Vec<u32>>()
    };
    // "aaa": the leftmost "a a" merges first, so only "aa a" can build "aaa".
    assert_eq!(plain_bpe(&texts, &[(0, 0, 1), (0, 1, 2)], "aaa").0, [1, 0]);
    assert_eq!(own(&[(0, 0, 1), (0, 1, 2)]), [1]);
    assert_eq!(own(&[(0, 0, 1), (1, 0, 2)]), [1, 2]);
    // "aaaa": both halves become "aa" (same rank, left first), then "aa aa".
    assert_eq!(own(&[(0, 0, 1), (1, 1, 3)]), [1, 3]);
}

#[test]
fn packed_strings_keep_each_string_whole() {
    let words = ["", "a", "b\u{20ac}", "\u{65e5}\u{672c}"];
    let mut packed: PackedStrings = words[..2].iter().collect();
    packed.append(&words[2..].iter().collect());
    assert_eq!(packed.len(), 4);
    assert_eq!(packed.iter().collect::<Vec<_>>(), words);
    assert_eq!(&packed[2], "b\u{20ac}");
    assert_eq!(packed.get(3), Some("\u{65e5}\u{672c}"));
    assert_eq!(packed.get(4), None);
    assert_eq!(packed, words.iter().collect());
    assert!(PackedStrings::default().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn added_token_search_finds_exactly_the_texts_holding_a_pattern(
        patterns in proptest::collection::vec("[ab<\n ]{1,3}", 1..6),
        texts in proptest::collection::vec("[ab<\n \u{e9}]{0,8}", 1..20),
    ) {
        let search = fast::AddedTokenSearch::new(&patterns).unwrap().unwrap();
        for text in &texts {
            let expected = patterns.iter().any(|p| text.contains(p.as_str()));
            prop_assert_eq!(search.is_match(text), expected, "{:?} in {:?}", patterns, text);
        }
    }
}
