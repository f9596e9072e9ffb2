//! The text splitting (pre-tokenization) of every byte-level BPE family that llama.cpp knows,
//! keyed by the `tokenizer.ggml.pre` label that GGUF files carry.
//!
//! A GGUF file names its pre-tokenizer by a label (`llama-bpe`, `qwen2`, `deepseek-coder`...);
//! the splitting rule itself is not in the file. llama.cpp maps each label to a list of
//! regular expressions applied one after the other (each splits the pieces the previous one
//! left, keeping matches and the text between them as pieces), which is exactly a `Sequence`
//! of `Split { behavior: Isolated }` pre-tokenizers in the `tokenizers` crate. The table below
//! holds those lists as data (llama.cpp's `src/llama-vocab.cpp`, `llama-cpp-python` 0.3.36);
//! the reference tokenizations shipped with llama.cpp check the result (see
//! `tests/test_tokens_reference.py`).
//!
//! Non-ASCII characters are written as `\u{..}` escapes on purpose: an editor or a copy that
//! normalises Unicode (NFC turns U+2126 OHM SIGN into U+03A9) would silently change a range.

use serde_json::{json, Value};

/// One splitting rule: the regular expressions for a group of llama.cpp pre-tokenizer kinds.
struct SplitRule {
    /// llama.cpp's kind names (`LLAMA_VOCAB_PRE_TYPE_*`, lower case) sharing the rule.
    kinds: &'static [&'static str],
    /// The expressions, applied in order.
    regexes: &'static [&'static str],
    /// Whether pieces are mapped to GPT-2's byte characters before BPE (false: raw UTF-8, with
    /// spaces written as `▁`, SentencePiece style).
    byte_encode: bool,
}

/// llama.cpp implements these kinds with hand-written splitters (its `\p{Han}` handler for
/// Kimi-K2, `\p{AFMoE_digits}` for AFMoE): their expressions are triggers, not regexes.
const CUSTOM_KINDS: &[&str] = &["kimi_k2", "afmoe"];

#[rustfmt::skip]
const RULES: &[SplitRule] = &[
    SplitRule {
        kinds: &["llama3"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["jais2"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["dbrx", "smaug"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["deepseek_llm"],
        regexes: &[
            "[\r\n]",
            "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
            "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
            "\\p{N}+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["deepseek3_llm", "hunyuan_dense", "joyai_llm", "hy_v4"],
        regexes: &[
            "\\p{N}{1,3}",
            "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["spark2_5"],
        regexes: &[
            "\\p{N}{1,3}",
            "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
            "\\p{N}",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["youtu"],
        regexes: &[
            "[\u{ac00}-\u{d7a3}\u{3131}-\u{318e}]+|[\u{ff01}\u{2026}\u{201c}\u{201d}\u{2018}\u{2019}\u{2014}\u{ff1a}\u{ff1b}\u{ff0c}\u{3001}-\u{303f}\u{fe30}-\u{fe4f}]+|[\u{3105}-\u{312f}]+|[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
            "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["deepseek_coder"],
        regexes: &[
            "[\r\n]",
            "\\s?\\p{L}+",
            "\\s?\\p{P}+",
            "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
            "\\p{N}",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["falcon"],
        regexes: &[
            "[\\p{P}\\$\\+<=>\\^~\\|`]+",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
            "[0-9][0-9][0-9]",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["starcoder", "refact", "command_r", "smollm", "codeshell", "exaone", "minerva", "mellum2"],
        regexes: &[
            "\\p{N}",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["gpt2", "mpt", "olmo", "jais", "trillion", "granite_docling"],
        regexes: &[
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["stablelm2", "qwen2", "hunyuan", "solar_open"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["qwen35"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["poro", "bloom", "gpt3_finnish"],
        regexes: &[
            " ?[^(\\s|.,!?\u{2026}\u{3002}\u{ff0c}\u{3001}\u{964}\u{6d4}\u{60c})]+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["chatglm4"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["viking"],
        regexes: &[
            " ?[^(\\s|.,!?\u{2026}\u{3002}\u{ff0c}\u{3001}\u{964}\u{6d4}\u{60c})]+",
            "\\p{N}",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["tekken"],
        regexes: &[
            "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["chameleon"],
        regexes: &[
            "<sentinel:[0-9]+>",
            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            "([\\t\\n]|    |  )",
            "\\p{N}",
            "[\\p{P}!-/:-@\\[-`{-~]",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["gpt4o", "minimax_m2"],
        regexes: &[
            "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["granite_emb_multi"],
        regexes: &[
            "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["tiny_aya"],
        regexes: &[
            "\\d{1,3}(?=(?:\\d{3})*\\b)",
            "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["kimi_k2"],
        regexes: &[
            "\\p{Han}+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["superbpe"],
        regexes: &[
            "\\p{N}+",
            "(?=(\\d{3})+(?!\\d))",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["bailingmoe"],
        regexes: &[
            "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["seed_coder"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["ufakzeka"],
        regexes: &[
            "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["grok_2"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["afmoe"],
        regexes: &[
            "\\p{AFMoE_digits}",
            "[\u{4e00}-\u{9fff}\u{3400}-\u{4dbf}\u{8c48}-\u{faff}\u{3040}-\u{309f}\u{30a0}-\u{30ff}\u{ff65}-\u{ff9f}\u{2f00}-\u{2fdf}\u{e40}-\u{e7f}\u{e80}-\u{eff}\u{1780}-\u{17ff}\u{1000}-\u{109f}\u{aa60}-\u{aa7f}\u{a9e0}-\u{a9ff}\u{ac00}-\u{d7af}\u{1100}-\u{11ff}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["laguna"],
        regexes: &[
            "[^\\n]+|[\\n]+",
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["exaone_moe"],
        regexes: &[
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["gemma4"],
        regexes: &[
            "[^\\n]+|[\\n]+",
        ],
        byte_encode: false,
    },
    SplitRule {
        kinds: &["sarvam_moe"],
        regexes: &[
            "[^\\n]+|[\\n]+",
        ],
        byte_encode: false,
    },
    SplitRule {
        kinds: &["minicpm5"],
        regexes: &[
            "\\p{N}{1,3}",
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ],
        byte_encode: true,
    },
    SplitRule {
        kinds: &["whitespace"],
        regexes: &[
            "\\S+",
        ],
        byte_encode: false,
    },
    SplitRule {
        kinds: &["default"],
        regexes: &[
            "[\\p{P}\\$\\+<=>\\^~\\|]+",
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
            "\\p{N}+",
            "[0-9][0-9][0-9]",
        ],
        byte_encode: true,
    },];

/// `tokenizer.ggml.pre` label -> (llama.cpp kind, whether a whole piece found in the
/// vocabulary is taken as one token before any merge: `ignore_merges`).
#[rustfmt::skip]
const LABELS: &[(&str, &str, bool)] = &[
    ("default", "default", false),
    ("minicpm5", "minicpm5", true),
    ("llama3", "llama3", true),
    ("llama-v3", "llama3", true),
    ("llama-bpe", "llama3", true),
    ("falcon3", "llama3", true),
    ("falcon-h1", "llama3", true),
    ("pixtral", "llama3", true),
    ("midm-2.0", "llama3", true),
    ("lfm2", "llama3", true),
    ("jina-v5-nano", "llama3", true),
    ("deepseek-llm", "deepseek_llm", false),
    ("deepseek-coder", "deepseek_coder", false),
    ("deepseek-v3", "deepseek3_llm", false),
    ("spark2_5", "spark2_5", false),
    ("youtu", "youtu", true),
    ("falcon", "falcon", false),
    ("mpt", "mpt", false),
    ("starcoder", "starcoder", false),
    ("gpt-2", "gpt2", false),
    ("phi-2", "gpt2", false),
    ("jina-es", "gpt2", false),
    ("jina-de", "gpt2", false),
    ("gigachat", "gpt2", false),
    ("jina-v2-es", "gpt2", false),
    ("jina-v2-de", "gpt2", false),
    ("a.x-4.0", "gpt2", false),
    ("mellum", "gpt2", false),
    ("modern-bert", "gpt2", false),
    ("jais-2", "jais2", false),
    ("gemma4", "gemma4", false),
    ("granite-embed-multi-311m", "gemma4", false),
    ("sarvam-moe", "sarvam_moe", false),
    ("jina-v1-en", "gpt2", false),
    ("jina-v2-code", "gpt2", false),
    ("roberta-bpe", "gpt2", false),
    ("whitespace", "whitespace", false),
    ("refact", "refact", false),
    ("command-r", "command_r", false),
    ("qwen2", "qwen2", false),
    ("deepseek-r1-qwen", "qwen2", false),
    ("kormo", "qwen2", false),
    ("f2llmv2", "qwen2", false),
    ("qwen35", "qwen35", false),
    ("stablelm2", "stablelm2", false),
    ("olmo", "olmo", false),
    ("dbrx", "dbrx", false),
    ("smaug-bpe", "smaug", false),
    ("poro-chat", "poro", false),
    ("chatglm-bpe", "chatglm4", false),
    ("glm4", "chatglm4", true),
    ("glm5", "chatglm4", true),
    ("viking", "viking", false),
    ("jais", "jais", false),
    ("tekken", "tekken", true),
    ("smollm", "smollm", false),
    ("codeshell", "codeshell", false),
    ("bloom", "bloom", false),
    ("gpt3-finnish", "gpt3_finnish", false),
    ("exaone", "exaone", false),
    ("exaone4", "gpt2", false),
    ("exaone-moe", "exaone_moe", false),
    ("chameleon", "chameleon", false),
    ("minerva-7b", "minerva", false),
    ("megrez", "qwen2", false),
    ("gpt-4o", "gpt4o", false),
    ("llama4", "gpt4o", false),
    ("kanana2", "gpt4o", false),
    ("talkie", "gpt4o", false),
    ("granite-embed-multi-97m", "granite_emb_multi", true),
    ("tiny_aya", "tiny_aya", false),
    ("cohere2moe", "tiny_aya", false),
    ("superbpe", "superbpe", false),
    ("trillion", "trillion", false),
    ("granite-docling", "granite_docling", false),
    ("bailingmoe", "bailingmoe", false),
    ("bailingmoe2", "bailingmoe", false),
    ("llada-moe", "bailingmoe", false),
    ("seed-coder", "seed_coder", false),
    ("hunyuan", "hunyuan", false),
    ("hunyuan-dense", "hunyuan_dense", false),
    ("hy_v4", "hy_v4", false),
    ("joyai-llm", "joyai_llm", false),
    ("kimi-k2", "kimi_k2", false),
    ("ufakzeka", "ufakzeka", false),
    ("grok-2", "grok_2", false),
    ("afmoe", "afmoe", false),
    ("laguna", "laguna", false),
    ("minimax-m2", "minimax_m2", false),
    ("solar-open", "solar_open", false),
    ("mellum2", "mellum2", false),];

/// Labels whose original tokenizer applies Unicode NFC before splitting (Qwen2's
/// `tokenizer.json` has an `NFC` normaliser; llama.cpp does not normalise, so its own
/// tokenizations differ from the model's on text that is not in NFC).
const NFC_LABELS: &[&str] = &["qwen2", "deepseek-r1-qwen"];

/// How a GGUF byte-level BPE vocabulary normalises and splits text before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreTokenization {
    /// llama.cpp's kind for the label (`default` when the label is unknown).
    pub kind: &'static str,
    /// The split expressions, applied in order.
    pub regexes: &'static [&'static str],
    /// Pieces go through GPT-2's byte-to-character map (false: raw UTF-8).
    pub byte_encode: bool,
    /// A piece that is itself a token is taken whole, before any merge.
    pub ignore_merges: bool,
    /// Text is put in Unicode NFC first.
    pub nfc: bool,
    /// Spaces are written as `▁` before merging (SentencePiece-style BPE).
    pub escape_whitespace: bool,
}

fn rule(kind: &str) -> Option<&'static SplitRule> {
    RULES.iter().find(|r| r.kinds.contains(&kind))
}

impl PreTokenization {
    /// The rule for a `tokenizer.ggml.pre` label, or llama.cpp's default rule and a warning
    /// that says so when the label is missing, unknown, or split by llama.cpp's hand-written
    /// code that no regular expression reproduces.
    pub fn for_label(label: Option<&str>) -> (Self, Option<String>) {
        let fallback = |why: String| {
            let default = rule("default").expect("the table has a default rule");
            let pre = PreTokenization {
                kind: "default",
                regexes: default.regexes,
                byte_encode: true,
                ignore_merges: false,
                nfc: false,
                escape_whitespace: false,
            };
            let warning = format!(
                "{why}: llama.cpp's default splitting rule is assumed, so tokens that the real \
                 tokenizer splits differently may be misclassified"
            );
            (pre, Some(warning))
        };
        let Some(label) = label.filter(|l| !l.is_empty()) else {
            return fallback("no pre-tokenizer label (`tokenizer.ggml.pre`) in the file".into());
        };
        let Some(&(_, kind, ignore_merges)) = LABELS.iter().find(|(l, _, _)| *l == label) else {
            return fallback(format!("unknown pre-tokenizer label `{label}`"));
        };
        if CUSTOM_KINDS.contains(&kind) {
            return fallback(format!(
                "pre-tokenizer `{label}` is split by hand-written code in llama.cpp that ferrolm \
                 does not reproduce"
            ));
        }
        let Some(r) = rule(kind) else {
            return fallback(format!("pre-tokenizer `{label}` has no splitting rule"));
        };
        let pre = PreTokenization {
            kind,
            regexes: r.regexes,
            byte_encode: r.byte_encode,
            ignore_merges,
            nfc: NFC_LABELS.contains(&label),
            escape_whitespace: matches!(kind, "gemma4" | "sarvam_moe"),
        };
        (pre, None)
    }

    /// The rule of llama.cpp's `gemma4` tokenizer model (SentencePiece-style BPE on raw UTF-8).
    pub fn gemma4() -> Self {
        let r = rule("gemma4").expect("the table has a gemma4 rule");
        PreTokenization {
            kind: "gemma4",
            regexes: r.regexes,
            byte_encode: false,
            ignore_merges: false,
            nfc: false,
            escape_whitespace: true,
        }
    }

    /// The `tokenizers` pre-tokenizer, as `tokenizer.json` data.
    pub fn pre_tokenizer(&self) -> Value {
        let mut steps: Vec<Value> = self.regexes.iter().map(|r| split_regex(r)).collect();
        if self.byte_encode {
            steps.push(byte_level(false));
        }
        json!({"type": "Sequence", "pretokenizers": steps})
    }

    /// The `tokenizers` normaliser, as `tokenizer.json` data (`null` for none).
    pub fn normalizer(&self) -> Value {
        let mut steps = Vec::new();
        if self.nfc {
            steps.push(json!({"type": "NFC"}));
        }
        if self.escape_whitespace {
            steps.push(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            );
        }
        match steps.len() {
            0 => Value::Null,
            _ => json!({"type": "Sequence", "normalizers": steps}),
        }
    }
}

/// GPT-2's byte-level stage; `use_regex` adds GPT-2's own split.
pub fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// A split on `pattern` that keeps the matches and the text between them as pieces.
pub fn split_regex(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

/// Every label llama.cpp knows, for tests and diagnostics.
pub fn known_labels() -> impl Iterator<Item = &'static str> {
    LABELS.iter().map(|(l, _, _)| *l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::PreTokenizerWrapper;

    #[test]
    fn every_label_has_a_rule_that_compiles() {
        for label in known_labels() {
            let (pre, warning) = PreTokenization::for_label(Some(label));
            let custom = LABELS
                .iter()
                .any(|(l, k, _)| *l == label && CUSTOM_KINDS.contains(k));
            assert_eq!(warning.is_some(), custom, "{label}: {warning:?}");
            let p: std::result::Result<PreTokenizerWrapper, _> =
                serde_json::from_value(pre.pre_tokenizer());
            assert!(p.is_ok(), "{label}: {:?}", p.err());
        }
    }

    #[test]
    fn unknown_and_missing_labels_warn_and_name_the_assumption() {
        let (pre, w) = PreTokenization::for_label(Some("no-such-label"));
        assert_eq!(pre.kind, "default");
        let w = w.unwrap();
        assert!(w.contains("no-such-label") && w.contains("default"), "{w}");
        assert!(PreTokenization::for_label(None)
            .1
            .unwrap()
            .contains("no pre-tokenizer"));
        assert!(PreTokenization::for_label(Some("kimi-k2")).1.is_some());
    }

    #[test]
    fn table_ranges_survived_unicode_normalisation() {
        // U+2126 OHM SIGN and U+212A KELVIN SIGN become other characters under NFC; the
        // deepseek-llm letter class lists them explicitly.
        let (pre, _) = PreTokenization::for_label(Some("deepseek-llm"));
        assert!(pre.regexes[1].contains("\u{2126}\u{2128}\u{212a}-\u{212d}"));
        assert!(PreTokenization::for_label(Some("qwen2")).0.nfc);
        assert!(
            PreTokenization::for_label(Some("llama-bpe"))
                .0
                .ignore_merges
        );
    }
}
