//! Unit tests of the `t5` (UGM) and `rwkv` conversions on small hand-made vocabularies whose
//! expected encodings follow llama.cpp's `llm_tokenizer_ugm` / `llm_tokenizer_rwkv` by hand.

use super::super::gguf::{GgufMetadata, GgufValue};
use super::gguf_tokenizer_with_merges as convert;
use super::rwkv::unescape;
use super::ugm::check_charsmap;
use crate::Error;

fn meta(
    model: &str,
    tokens: &[&str],
    types: &[i32],
    extra: Vec<(&str, GgufValue)>,
) -> GgufMetadata {
    let mut entries = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::String(model.into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            GgufValue::Array(
                tokens
                    .iter()
                    .map(|t| GgufValue::String(t.to_string()))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(types.iter().map(|&t| GgufValue::I32(t)).collect()),
        ),
    ];
    entries.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    GgufMetadata {
        version: 3,
        entries,
        tensors: vec![],
    }
}

/// A unigram vocabulary: `<pad>`, `</s>`, `<unk>` (T5's order), then pieces with scores.
fn ugm(pieces: &[(&str, f32, i32)], extra: Vec<(&str, GgufValue)>) -> GgufMetadata {
    let mut tokens = vec!["<pad>", "</s>", "<unk>"];
    let mut types = vec![3, 3, 2];
    let mut scores = vec![0.0f32, 0.0, 0.0];
    for &(t, s, ty) in pieces {
        tokens.push(t);
        scores.push(s);
        types.push(ty);
    }
    let mut extra = extra;
    extra.push((
        "tokenizer.ggml.scores",
        GgufValue::Array(scores.into_iter().map(GgufValue::F32).collect()),
    ));
    meta("t5", &tokens, &types, extra)
}

fn flags(add_prefix: bool, merge: bool) -> Vec<(&'static str, GgufValue)> {
    vec![
        (
            "tokenizer.ggml.add_space_prefix",
            GgufValue::Bool(add_prefix),
        ),
        (
            "tokenizer.ggml.remove_extra_whitespaces",
            GgufValue::Bool(merge),
        ),
    ]
}

const PIECES: &[(&str, f32, i32)] = &[
    ("\u{2581}", -2.0, 1),   // 3
    ("a", -3.0, 1),          // 4
    ("b", -3.0, 1),          // 5
    ("\u{2581}a", -2.5, 1),  // 6
    ("ab", -4.0, 1),         // 7
    ("\u{2581}ab", -4.5, 1), // 8
    ("<sep>", 0.0, 4),       // 9 user-defined
    ("aab", -20.0, 1),       // 10: never better than a + ab
    ("A", -3.0, 1),          // 11
];

fn ids(m: &GgufMetadata, text: &str) -> Vec<u32> {
    let loaded = convert(m, "test").unwrap();
    loaded
        .tokenizer
        .encode_fast(text, false)
        .unwrap()
        .get_ids()
        .to_vec()
}

#[test]
fn ugm_viterbi_picks_the_best_total_score_and_fuses_unknowns() {
    let m = ugm(PIECES, flags(true, true));
    // ▁ab (-4.5) beats ▁a + b (-5.5) and ▁ + ab (-6).
    assert_eq!(ids(&m, "ab"), [8]);
    // a + ab (-7) beats aab (-20); the prefix ▁ stands alone.
    assert_eq!(ids(&m, "aab"), [6, 7]);
    // `x`, `y` have no token: one fused unknown token, as llama.cpp merges consecutive ones.
    assert_eq!(ids(&m, "xya"), [3, 2, 4]);
    // Control and unknown strings in text are special tokens, user-defined ones split out
    // before normalisation and never get the prefix.
    assert_eq!(ids(&m, "a</s>"), [6, 1]);
    assert_eq!(ids(&m, "a<sep>b"), [6, 9, 3, 5]);
}

#[test]
fn ugm_spaces_follow_llama_cpp_for_every_flag_combination() {
    // remove_extra_whitespaces: each run of non-spaces gets one ▁, spaces vanish, and the ▁
    // comes even without add_space_prefix (llama.cpp prepends whenever it merges).
    for add_prefix in [true, false] {
        let m = ugm(PIECES, flags(add_prefix, true));
        assert_eq!(ids(&m, "  a   b  "), [6, 3, 5], "add_prefix={add_prefix}");
        assert_eq!(ids(&m, "   "), Vec::<u32>::new());
    }
    // Neither flag: each space is one ▁, nothing is added.
    let m = ugm(PIECES, flags(false, false));
    assert_eq!(ids(&m, "a  b"), [4, 3, 3, 5]);
    assert_eq!(ids(&m, " a"), [6]);
    assert_eq!(ids(&m, "  "), [3, 3]);
    // add_space_prefix alone: one more ▁ before the first non-space, none for only spaces.
    let m = ugm(PIECES, flags(true, false));
    assert_eq!(ids(&m, "a  b"), [6, 3, 3, 5]);
    assert_eq!(ids(&m, " a"), [3, 6]);
    assert_eq!(ids(&m, "  "), [3, 3]);
    // A literal ▁ is not a space: the prefix is still added in front of it.
    assert_eq!(ids(&m, "\u{2581}"), [3, 3]);
}

#[test]
fn ugm_unused_tokens_below_every_normal_score_warn_only_when_that_can_change_a_split() {
    let mut pieces = PIECES.to_vec();
    pieces.push(("[PAD1]", -1000.0, 5));
    // `<` (of `<pad>`) and `[` are in tokens without being ones: an unknown one could be
    // scored differently.
    let loaded = convert(&ugm(&pieces, flags(true, true)), "t").unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("'<'"), "{:?}", loaded.warnings);
    // With every character a token of its own, each path pays the same unknown scores.
    for c in [
        "[", "P", "D", "1", "]", "<", ">", "s", "/", "e", "p", "u", "n", "k", "d",
    ] {
        pieces.push((c, -5.0, 1));
    }
    let m = ugm(&pieces, flags(true, true));
    let loaded = convert(&m, "t").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    // The unused token itself loses to its characters one by one, as in llama.cpp.
    assert_eq!(ids(&m, "[PAD1]").len(), 7);
    assert_eq!(ids(&m, "xa"), [3, 2, 4]);
}

/// A one-block charsmap mapping `a` to `A` (root base 0; the `a` slot's child holds the
/// offset of `A\0` in the replacements).
fn charsmap_a_to_upper() -> Vec<u8> {
    let mut units = vec![0u32; 256];
    let child = 0x62u32;
    units[0x61] = 0x61 | (1 << 8) | ((0x61 ^ child) << 10);
    units[child as usize] = 0; // value: replacement at offset 0
    let mut bytes = ((units.len() * 4) as u32).to_le_bytes().to_vec();
    for u in units {
        bytes.extend(u.to_le_bytes());
    }
    bytes.extend(b"A\0");
    bytes
}

#[test]
fn ugm_charsmap_normalises_before_the_model() {
    let map = charsmap_a_to_upper();
    assert_eq!(check_charsmap(&map), Ok(()));
    let mut extra = flags(true, true);
    extra.push((
        "tokenizer.ggml.precompiled_charsmap",
        GgufValue::Array(map.iter().map(|&b| GgufValue::U8(b)).collect()),
    ));
    let m = ugm(PIECES, extra);
    assert_eq!(ids(&m, "ab"), [3, 11, 5]);
    assert!(convert(&m, "t")
        .unwrap()
        .notes
        .iter()
        .any(|n| n.contains("grapheme")));
}

#[test]
fn hostile_charsmaps_are_malformed_errors_not_panics() {
    let good = charsmap_a_to_upper();
    let mut cases: Vec<Vec<u8>> = vec![
        vec![1, 2],                              // no size header
        vec![8, 0, 0, 0, 0, 0, 0, 0],            // no replacements after the array
        [&[6u8, 0, 0, 0][..], &[0; 8]].concat(), // size not a multiple of 4
        good[..good.len() - 1].to_vec(),         // replacement not terminated
    ];
    // The root's base points past the array.
    let mut far = good.clone();
    far[4..8].copy_from_slice(&(5000u32 << 10).to_le_bytes());
    cases.push(far);
    // The leaf's replacement offset points past the strings.
    let mut offset = good.clone();
    let at = 4 + 0x62 * 4;
    offset[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    cases.push(offset);
    // A shortened array: the `a` node's children would be read outside it.
    let mut short = vec![];
    short.extend(((0x70u32) * 4).to_le_bytes());
    short.extend(&good[4..4 + 0x70 * 4]);
    short.extend(b"A\0");
    cases.push(short);
    for (i, case) in cases.into_iter().enumerate() {
        assert!(check_charsmap(&case).is_err(), "case {i}");
        let mut extra = flags(true, true);
        extra.push((
            "tokenizer.ggml.precompiled_charsmap",
            GgufValue::Array(case.iter().map(|&b| GgufValue::U8(b)).collect()),
        ));
        let e = convert(&ugm(PIECES, extra), "t").err().unwrap();
        assert!(matches!(e, Error::Malformed { .. }), "case {i}: {e}");
        assert!(
            e.to_string().contains("precompiled_charsmap"),
            "case {i}: {e}"
        );
    }
}

#[test]
fn ugm_bad_scores_and_unknown_ids_are_errors() {
    let mut m = ugm(PIECES, flags(true, true));
    m.entries.push((
        "tokenizer.ggml.unknown_token_id".into(),
        GgufValue::U32(999),
    ));
    assert!(convert(&m, "t")
        .err()
        .unwrap()
        .to_string()
        .contains("unknown token id 999"));
    let m = ugm(&[("a", f32::NAN, 1)], vec![]);
    assert!(convert(&m, "t")
        .err()
        .unwrap()
        .to_string()
        .contains("score"));
}

#[test]
fn rwkv_tokens_unescape_as_llama_cpp_does() {
    assert_eq!(unescape(r"a\nb\tc\rd"), b"a\nb\tc\rd");
    assert_eq!(unescape(r"\xe4\xb8\x80"), "\u{4e00}".as_bytes());
    assert_eq!(unescape(r"\\\'"), b"\\'");
    assert_eq!(unescape(r"\x0a"), b"\n");
    // llama.cpp reads hex digits as lowercase only: `A` is 'A' - '0' = 17.
    assert_eq!(unescape(r"\xA0"), [(17u8 << 4)]);
}

fn rwkv(extra: &[(&str, i32)]) -> GgufMetadata {
    let mut tokens: Vec<String> = vec!["<s>".into()];
    let mut types = vec![3];
    for b in 0..=255u8 {
        tokens.push(match b {
            b'\\' => r"\\".into(),
            b'\'' => r"\'".into(),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        });
        types.push(1);
    }
    for &(t, ty) in extra {
        tokens.push(t.into());
        types.push(ty);
    }
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    meta("rwkv", &refs, &types, vec![])
}

#[test]
fn rwkv_is_a_greedy_longest_match_over_bytes() {
    let m = rwkv(&[
        ("ab", 1),
        ("abc", 1),
        ("bcd", 1),
        (r"\xe4\xb8\x80", 1),
        ("[PAD9]", 5),
        ("<u>", 4),
    ]);
    let byte = |b: u8| 1 + u32::from(b);
    // Greedy takes `abc` first, though `a` + `bcd` would cover more in fewer tokens.
    assert_eq!(ids(&m, "abcd"), [258, byte(b'd')]);
    assert_eq!(ids(&m, "ab"), [257]);
    assert_eq!(
        ids(&m, "\u{4e00}\u{4e01}"),
        [260, byte(0xe4), byte(0xb8), byte(0x81)]
    );
    // Unused tokens stay in llama.cpp's trie; control and user-defined ones are split out.
    assert_eq!(ids(&m, "[PAD9]"), [261]);
    assert_eq!(ids(&m, "a<s>b<u>"), [byte(b'a'), 0, byte(b'b'), 262]);
    let loaded = convert(&m, "t").unwrap();
    let text = loaded
        .tokenizer
        .decode(&[260, byte(b'\n'), 258], false)
        .unwrap();
    assert_eq!(text, "\u{4e00}\nabc");
}

#[test]
fn rwkv_cuts_only_before_spaces_no_token_spans() {
    // `a ` and `  ` put `a` and space before a space inside tokens: no cut after them.
    let m = rwkv(&[("a b", 1), ("  x", 1), ("b c", 1)]);
    let byte = |b: u8| 1 + u32::from(b);
    assert_eq!(ids(&m, "a b"), [257]);
    assert_eq!(ids(&m, "a  x"), [byte(b'a'), 258]);
    // `b` is followed by a space in `b c`: kept together; `c ` is a cut.
    assert_eq!(
        ids(&m, "b c c b"),
        [259, byte(b' '), byte(b'c'), byte(b' '), byte(b'b')]
    );
    let long = "word ".repeat(4000);
    assert_eq!(ids(&m, &long).len(), 4000 * 5);
}

#[test]
fn rwkv_without_every_byte_is_refused() {
    let mut m = rwkv(&[]);
    if let GgufValue::Array(tokens) = &mut m.entries[1].1 {
        tokens[1 + 0x41] = GgufValue::String("AA".into());
    }
    let e = convert(&m, "t").err().unwrap();
    assert!(matches!(e, Error::InvalidValue { .. }), "{e}");
    assert!(e.to_string().contains("0x41"), "{e}");
}
