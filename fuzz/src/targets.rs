//! One target per input format: its seeds (valid small inputs built here, in code) and the
//! call into the core's public entry point that must never panic, abort, hang or allocate more
//! than the input justifies.

use std::io::Write;

use base64::Engine;
use ferrolm_core::comm::{dequantize_packed, quantize_packed, Scheme};
use ferrolm_core::tokens::gguf::{write_metadata, GgufMetadata, GgufTensorInfo, GgufValue};
use ferrolm_core::tokens::sources::{
    byte_to_char, gguf_tokenizer_with_merges, load_json, tiktoken_tokenizer_with_merges,
};

use crate::mutate::Rng;

/// What a target found wrong with an input that did not crash (a broken promise).
pub type Finding = String;

/// A fuzz target.
pub struct Target {
    /// The name on the command line.
    pub name: &'static str,
    /// What it feeds and where.
    pub about: &'static str,
    /// Valid inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input; `Err` for a broken promise that is not a crash.
    pub run: fn(&[u8]) -> Result<(), Finding>,
    /// Whether the input is text (adds the number mutations).
    pub text: bool,
}

/// Every target.
pub const TARGETS: [Target; 6] = [
    Target {
        name: "gguf",
        about: "GgufMetadata::from_bytes (header, metadata, tensor directory)",
        seeds: gguf_seeds,
        run: run_gguf,
        text: false,
    },
    Target {
        name: "gguf-file",
        about: "GgufMetadata::read_file on a sparse file far larger than its bytes",
        seeds: gguf_seeds,
        run: run_gguf_file,
        text: false,
    },
    Target {
        name: "gguf-vocab",
        about: "sources::gguf_tokenizer_with_merges on parsed GGUF metadata",
        seeds: gguf_seeds,
        run: run_gguf_vocab,
        text: false,
    },
    Target {
        name: "tokenizer-json",
        about: "sources::load_json (tokenizer.json)",
        seeds: json_seeds,
        run: run_json,
        text: true,
    },
    Target {
        name: "tiktoken",
        about: "sources::tiktoken_tokenizer_with_merges (tiktoken rank files)",
        seeds: tiktoken_seeds,
        run: run_tiktoken,
        text: true,
    },
    Target {
        name: "wire",
        about: "comm::dequantize_packed (the int8 wire format of every scheme)",
        seeds: wire_seeds,
        run: run_wire,
        text: false,
    },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------------- GGUF

/// A byte-level BPE vocabulary: the 256 byte symbols and a few merges of them.
fn bpe_vocab() -> (Vec<String>, Vec<String>) {
    let chars = byte_to_char();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let pairs = [
        ("h", "e"),
        ("l", "l"),
        ("he", "ll"),
        ("Ġ", "w"),
        ("o", "r"),
        ("Ġw", "or"),
    ];
    let mut merges = Vec::new();
    for (a, b) in pairs {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
    }
    (tokens, merges)
}

fn strings(items: &[String]) -> GgufValue {
    GgufValue::Array(items.iter().cloned().map(GgufValue::String).collect())
}

fn gguf_seeds() -> Vec<Vec<u8>> {
    let (tokens, merges) = bpe_vocab();
    let n = tokens.len();
    let mut types = vec![GgufValue::I32(1); n];
    types[0] = GgufValue::I32(3);
    let gpt2 = GgufMetadata {
        version: 3,
        entries: vec![
            (
                "general.architecture".into(),
                GgufValue::String("llama".into()),
            ),
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".into(),
                GgufValue::String("default".into()),
            ),
            ("tokenizer.ggml.tokens".into(), strings(&tokens)),
            ("tokenizer.ggml.token_type".into(), GgufValue::Array(types)),
            ("tokenizer.ggml.merges".into(), strings(&merges)),
            ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(0)),
        ],
        tensors: vec![GgufTensorInfo {
            name: "token_embd.weight".into(),
            dims: vec![8, n as u64],
            ggml_type: 0,
            offset: 0,
        }],
    };
    // SentencePiece-style: pieces with scores, byte fallback tokens, an unknown token.
    let mut pieces = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    pieces.extend(["▁", "▁a", "▁the", "he", "llo", "▁hello"].map(String::from));
    let scores = (0..pieces.len())
        .map(|i| GgufValue::F32(-(i as f32)))
        .collect();
    let mut kinds = vec![GgufValue::I32(1); pieces.len()];
    kinds[0] = GgufValue::I32(2);
    kinds[1] = GgufValue::I32(3);
    kinds[2] = GgufValue::I32(3);
    for k in kinds.iter_mut().skip(3).take(256) {
        *k = GgufValue::I32(6);
    }
    let llama = GgufMetadata {
        version: 3,
        entries: vec![
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("llama".into()),
            ),
            ("tokenizer.ggml.tokens".into(), strings(&pieces)),
            ("tokenizer.ggml.scores".into(), GgufValue::Array(scores)),
            ("tokenizer.ggml.token_type".into(), GgufValue::Array(kinds)),
            (
                "general.nested".into(),
                GgufValue::Array(vec![GgufValue::U64(7), GgufValue::U64(9)]),
            ),
        ],
        tensors: Vec::new(),
    };
    vec![
        write_metadata(&gpt2),
        write_metadata(&llama),
        write_metadata(&unigram_seed()),
        write_metadata(&rwkv_seed()),
    ]
}

/// A `t5` (unigram) vocabulary with a one-block precompiled charsmap mapping `a` to `A`.
fn unigram_seed() -> GgufMetadata {
    let mut units = vec![0u32; 256];
    units[0x61] = 0x61 | (1 << 8) | ((0x61 ^ 0x62) << 10);
    let mut charsmap = 1024u32.to_le_bytes().to_vec();
    for u in units {
        charsmap.extend(u.to_le_bytes());
    }
    charsmap.extend(b"A\0");
    let pieces = [
        "<pad>",
        "</s>",
        "<unk>",
        "\u{2581}",
        "A",
        "b",
        "\u{2581}A",
        "<sep>",
        "[PAD1]",
    ];
    let kinds = [3, 3, 2, 1, 1, 1, 1, 4, 5];
    GgufMetadata {
        version: 3,
        entries: vec![
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("t5".into()),
            ),
            (
                "tokenizer.ggml.tokens".into(),
                strings(&pieces.map(String::from)),
            ),
            (
                "tokenizer.ggml.scores".into(),
                GgufValue::Array((0..9).map(|i| GgufValue::F32(-(i as f32))).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                GgufValue::Array(kinds.iter().map(|&k| GgufValue::I32(k)).collect()),
            ),
            (
                "tokenizer.ggml.add_space_prefix".into(),
                GgufValue::Bool(true),
            ),
            (
                "tokenizer.ggml.remove_extra_whitespaces".into(),
                GgufValue::Bool(true),
            ),
            (
                "tokenizer.ggml.precompiled_charsmap".into(),
                GgufValue::Array(charsmap.into_iter().map(GgufValue::U8).collect()),
            ),
        ],
        tensors: Vec::new(),
    }
}

/// An `rwkv` vocabulary: `<s>`, the 256 bytes escaped as llama.cpp's converter writes them,
/// a few longer tokens.
fn rwkv_seed() -> GgufMetadata {
    let mut tokens = vec!["<s>".to_string()];
    tokens.extend((0..=255u8).map(|b| match b {
        b'\\' => "\\\\".to_string(),
        b'\'' => "\\'".to_string(),
        0x20..=0x7e => (b as char).to_string(),
        _ => format!("\\x{b:02x}"),
    }));
    tokens.extend(["ab", "abc", "\\xe4\\xb8\\x80", "[PAD9]"].map(String::from));
    let mut kinds = vec![GgufValue::I32(1); tokens.len()];
    kinds[0] = GgufValue::I32(3);
    GgufMetadata {
        version: 3,
        entries: vec![
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("rwkv".into()),
            ),
            ("tokenizer.ggml.tokens".into(), strings(&tokens)),
            ("tokenizer.ggml.token_type".into(), GgufValue::Array(kinds)),
        ],
        tensors: Vec::new(),
    }
}

fn run_gguf(data: &[u8]) -> Result<(), Finding> {
    let _ = GgufMetadata::from_bytes(data, "fuzz.gguf");
    Ok(())
}

fn run_gguf_vocab(data: &[u8]) -> Result<(), Finding> {
    if let Ok(meta) = GgufMetadata::from_bytes(data, "fuzz.gguf") {
        let _ = gguf_tokenizer_with_merges(&meta, "fuzz.gguf");
    }
    Ok(())
}

/// The input written to a file whose size claims far more bytes than were written (a hole
/// costs no disk): counts are then "justified" by the file size but not by its contents.
fn run_gguf_file(data: &[u8]) -> Result<(), Finding> {
    let dir = std::env::temp_dir().join(format!("ferrolm-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.join("sparse.gguf");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("temp file: {e}"))?;
    file.write_all(data)
        .map_err(|e| format!("temp file: {e}"))?;
    // The hole's size comes from the input's last byte: 0 to 2^40 bytes.
    let hole = 1u64 << (data.last().copied().unwrap_or(0) % 41);
    file.set_len(data.len() as u64 + hole)
        .map_err(|e| format!("temp file: {e}"))?;
    drop(file);
    let _ = GgufMetadata::read_file(&path);
    Ok(())
}

// ------------------------------------------------------------------------ tokenizer.json

fn json_seeds() -> Vec<Vec<u8>> {
    let (tokens, merges) = bpe_vocab();
    let vocab: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}: {i}", json_string(t)))
        .collect();
    let merge_list: Vec<String> = merges.iter().map(|m| json_string(m)).collect();
    let bpe = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null,
"added_tokens": [{{"id": {n}, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
  "rstrip": false, "normalized": false, "special": true}}],
"normalizer": null,
"pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},
"post_processor": null,
"decoder": {{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}},
"model": {{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
  "vocab": {{{vocab}}}, "merges": [{merges}]}}}}"#,
        n = tokens.len(),
        vocab = vocab.join(", "),
        merges = merge_list.join(", "),
    );
    let wordpiece = r###"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
"normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
  "strip_accents": null, "lowercase": true},
"pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": null,
"decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
  "max_input_chars_per_word": 100,
  "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hello": 3, "world": 4, "##s": 5, "a": 6}}}"###;
    let unigram = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
"normalizer": null, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
"post_processor": null, "decoder": null,
"model": {"type": "Unigram", "unk_id": 0, "byte_fallback": false,
  "vocab": [["<unk>", 0.0], ["▁", -1.5], ["▁hello", -2.0], ["a", -3.0], ["b", -3.5], ["▁world", -2.5]]}}"#;
    vec![
        bpe.into_bytes(),
        wordpiece.as_bytes().to_vec(),
        unigram.as_bytes().to_vec(),
    ]
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn run_json(data: &[u8]) -> Result<(), Finding> {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = load_json(text, "fuzz/tokenizer.json");
    }
    Ok(())
}

// ------------------------------------------------------------------------------ tiktoken

fn tiktoken_seeds() -> Vec<Vec<u8>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut lines: Vec<String> = (0..=255u8)
        .map(|b| format!("{} {b}", engine.encode([b])))
        .collect();
    for (i, word) in ["he", "ll", "hell", "hello", " w", " wor", " world"]
        .iter()
        .enumerate()
    {
        lines.push(format!("{} {}", engine.encode(word), 256 + i));
    }
    vec![lines.join("\n").into_bytes()]
}

fn run_tiktoken(data: &[u8]) -> Result<(), Finding> {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tiktoken_tokenizer_with_merges(text, "fuzz.tiktoken");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------- wire

/// Wire input: `[scheme code, log2 block, accumulate, n (u32 LE)]` then the packed buffer.
const WIRE_HEADER: usize = 7;

fn scheme_of(code: u8, log_block: u8) -> Option<Scheme> {
    match code % 4 {
        0 => Some(Scheme::MinMax),
        1 => Scheme::parse("blockwise", 1usize << (log_block % 16)).ok(),
        2 => Some(Scheme::Intellect),
        _ => None,
    }
}

fn wire_seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(0x5eed);
    let mut seeds = Vec::new();
    for (code, log_block, n) in [(0u8, 0u8, 100usize), (1, 6, 300), (1, 4, 17), (2, 0, 700)] {
        let Some(scheme) = scheme_of(code, log_block) else {
            continue;
        };
        let x: Vec<f32> = (0..n)
            .map(|_| (rng.next_u64() % 2001) as f32 / 100.0 - 10.0)
            .collect();
        let mut packed = vec![0u8; scheme.packed_len(n)];
        if quantize_packed(scheme, &x, &mut packed).is_err() {
            continue;
        }
        let mut input = vec![code, log_block, 0];
        input.extend_from_slice(&(n as u32).to_le_bytes());
        input.extend_from_slice(&packed);
        seeds.push(input);
    }
    seeds
}

/// Decodes; a decode that reports success must give finite values (a forged header must be
/// an error, never NaN or inf data passed on as a result).
fn run_wire(data: &[u8]) -> Result<(), Finding> {
    if data.len() < WIRE_HEADER {
        return Ok(());
    }
    let Some(scheme) = scheme_of(data[0], data[1]) else {
        return Ok(());
    };
    let accumulate = data[2] & 1 == 1;
    let n = u32::from_le_bytes([data[3], data[4], data[5], data[6]]) as usize;
    // The output is the caller's buffer, sized by the caller (never by the peer's bytes): keep
    // the driver's own allocation bounded.
    let n = n % (1 << 22);
    let packed = &data[WIRE_HEADER..];
    let mut out = vec![0.0f32; n];
    if dequantize_packed(scheme, packed, &mut out, accumulate).is_ok() {
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "{} decode of {n} values reported success with out[{i}] = {}",
                scheme.name(),
                out[i]
            ));
        }
    }
    Ok(())
}
