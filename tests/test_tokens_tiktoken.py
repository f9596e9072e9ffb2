"""tiktoken vocabularies: named encodings, ``tiktoken.Encoding`` objects, bare rank files.

tiktoken itself is not installed: an Encoding is duck-typed (``_pat_str``,
``_mergeable_ranks``, ``_special_tokens``). Only GPT-2's rank file is available offline (from
openai-whisper); its ids are checked against llama.cpp's reference tokenizations of GPT-2, and
the other encodings' split patterns against the ``regex`` module's splits.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferrolm import tokens
from ferrolm._paths import package_file
from ferrolm.testing.tokenizations import reference_tokenizations, reference_vocab_names

regex = pytest.importorskip("regex")

GPT2 = package_file("whisper", "assets", "gpt2.tiktoken")
needs_gpt2 = pytest.mark.skipif(
    GPT2 is None, reason="needs openai-whisper==20250625 (gpt2.tiktoken; requirements/fixtures.txt)"
)
needs_reference = pytest.mark.skipif(
    "gpt-2" not in reference_vocab_names(),
    reason="llama.cpp reference tokenizations not installed (scripts/fetch-fixtures.sh)",
)

# tiktoken's public patterns (tiktoken_ext/openai_public.py), as the reference splits use them.
CL100K = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
)
O200K = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
R50K = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
TEXT = (
    "Hello world!  I've 12345 apples\n\n\tand 3.14159 pears?? HTTPServer's camelCase "
    "naïve café — 東京 ½ x\r\nend  "
)


@dataclass
class FakeEncoding:
    """What ``scan`` reads from a ``tiktoken.Encoding``."""

    name: str
    _pat_str: str
    _mergeable_ranks: dict[bytes, int]
    _special_tokens: dict[str, int]


def _pieces_encoding(pattern: str, specials: dict[str, int]) -> FakeEncoding:
    """The 256 bytes plus every piece ``regex`` splits ``TEXT`` into, each one rank.

    tiktoken takes a piece that is itself a token whole, so under the right split every piece
    encodes to exactly its own rank: the ids spell out the split.
    """
    ranks = {bytes([b]): b for b in range(256)}
    for piece in regex.findall(pattern, TEXT):
        ranks.setdefault(piece.encode(), len(ranks))
    return FakeEncoding("fake", pattern, ranks, specials)


@pytest.mark.parametrize("pattern", [R50K, CL100K, O200K], ids=["r50k", "cl100k", "o200k"])
def test_encoding_object_splits_with_its_own_pattern(pattern: str) -> None:
    enc = _pieces_encoding(pattern, {"<|endoftext|>": 100257, "<|endofprompt|>": 100276})
    expected = [enc._mergeable_ranks[p.encode()] for p in regex.findall(pattern, TEXT)]
    assert tokens.encode(enc, TEXT) == expected
    # Specials keep their own ids, holes between them included.
    ids = tokens.encode(enc, "<|endoftext|>ab<|endofprompt|>")
    assert ids[0] == 100257
    assert ids[-1] == 100276
    r = tokens.scan(enc, containment=False)
    assert r.vocab_size == 100277
    assert r.tokens[100257] == "<|endoftext|>"
    assert r.category[100257] == 1
    assert r.warnings == []


def test_patterns_differ_where_the_encodings_do() -> None:
    # cl100k groups digits by three, GPT-2 keeps a run whole: the same ranks split differently.
    enc = _pieces_encoding(R50K, {})
    assert len(tokens.encode(enc, " 12345")) == 1  # a piece of TEXT under GPT-2's split
    enc.__dict__["_pat_str"] = CL100K
    assert len(tokens.encode(enc, " 12345")) == 6  # " ", "123", "45": not ranked, so bytes


def test_bad_encoding_objects_are_type_and_value_errors() -> None:
    with pytest.raises(TypeError, match="_mergeable_ranks"):
        tokens.scan(FakeEncoding("x", R50K, {"a": 0}, {}))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="pattern"):
        tokens.scan(FakeEncoding("x", "(unclosed", {b"a": 0}, {}))
    with pytest.raises(ValueError, match="without gaps"):
        tokens.scan(FakeEncoding("x", R50K, {b"a": 0, b"b": 2}, {}))
    with pytest.raises(ValueError, match="special_tokens"):
        tokens.scan(FakeEncoding("x", R50K, {b"a": 0, b"b": 1}, {"<s>": 1}))


@needs_gpt2
@needs_reference
def test_gpt2_rank_file_reproduces_the_gpt2_reference_tokenizations() -> None:
    assert GPT2 is not None
    scanner = tokens.Scanner(GPT2)
    assert scanner.warnings == []  # the file name says gpt2
    for text, expected in reference_tokenizations("gpt-2"):
        assert scanner.encode(text) == expected, text


@needs_gpt2
def test_named_encoding_and_bare_rank_file(tmp_path: Path) -> None:
    assert GPT2 is not None
    bare = tmp_path / "ranks.tiktoken"
    shutil.copy(GPT2, bare)
    r = tokens.Scanner(bare)
    assert len(r.warnings) == 1
    assert "GPT-2's split pattern" in r.warnings[0]
    assert "50256" in r.warnings[0]
    named = tokens.Scanner(bare, encoding="r50k_base")
    assert named.warnings == []
    text = "Hello world, it's 2024!"
    assert named.encode(text) == r.encode(text) == tokens.Scanner(GPT2).encode(text)
    assert named.encode("<|endoftext|>") == [50256]
    with pytest.raises(ValueError, match="`encoding` must be one of"):
        tokens.Scanner(bare, encoding="cl200k")


@needs_gpt2
def test_encoding_object_equals_the_rank_file() -> None:
    assert GPT2 is not None
    ranks = {}
    for line in GPT2.read_text().splitlines():
        b64, rank = line.split()
        ranks[base64.b64decode(b64)] = int(rank)
    enc = FakeEncoding("gpt2", R50K, ranks, {"<|endoftext|>": 50256})
    text, _ = "I've got 12 apples.\n\n  Done", None
    assert tokens.encode(enc, text) == tokens.encode(GPT2, text)


def test_encoding_argument_is_checked(tmp_path: Path) -> None:
    ranks = tmp_path / "r.tiktoken"
    ranks.write_text("YQ== 0\nYg== 1\n")
    with pytest.raises(TypeError, match="`encoding` must be a str"):
        tokens.scan(ranks, encoding=5)  # type: ignore[arg-type]
    gguf_like = tmp_path / "m.gguf"
    gguf_like.write_bytes(b"GGUF" + bytes(20))
    with pytest.raises(ValueError, match="tiktoken rank files only"):
        tokens.scan(gguf_like, encoding="gpt2")
    r = tokens.scan(ranks, encoding="cl100k_base", containment=False)
    assert r.vocab_size == 100277
    assert r.warnings == []
