"""Hostile or unsupported tokenizer files: one clear exception each, never a silent wrong scan.

tokenizer.json files with holes in their ids or of the wrong shape, GGUF vocabularies of a
model type ferrolm does not convert or with an unknown pre-tokenizer label, random bytes taken
for a tiktoken file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from ferrolm import tokens
from ferrolm.tokens.scan import OK

gguf = pytest.importorskip("gguf")


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's printable stand-ins for the 256 byte values.
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = {}, 256
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(extra)
            extra += 1
    return out


def write_vocab_gguf(
    path: Path,
    model: str,
    pre: Optional[str] = None,
    extra: tuple[str, ...] = ("ab",),
    merges: tuple[str, ...] = ("a b",),
) -> Path:
    """A vocab-only GGUF: the 256 byte tokens of GPT-2 plus ``extra``, written by ``gguf``."""
    table = _bytes_to_unicode()
    toks = [table[b] for b in range(256)] + list(extra)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(toks)
    writer.add_token_types([1] * len(toks))
    writer.add_token_merges(list(merges))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def _bpe_json(vocab: dict[str, int], **model: Any) -> str:
    return json.dumps(
        {
            "version": "1.0",
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": None,
            "model": {"type": "BPE", "vocab": vocab, "merges": [], **model},
        }
    )


# ---------------------------------------------------------------- tokenizer.json


def test_ids_with_a_hole_are_scanned_exactly(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(_bpe_json({"a": 0, "b": 1, "c": 5}))
    r = tokens.scan(path)
    # Every real id is scanned under its own id; the missing ids are reported as holes.
    assert r.vocab_size == 6
    assert r.tokens[5] == "c"
    assert r.decoded[5] == "c"
    assert r.category[5] == OK
    assert r.category[0] == OK
    assert [r.tokens[i] for i in (2, 3, 4)] == ["", "", ""]
    assert not np.any(r.category[[2, 3, 4]] == OK)
    assert any("3 id(s) below 5 have no token" in n for n in r.notes), r.notes


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1, 2, 3]", "a tokenizer.json is a JSON object, got an array"),
        ('"tokenizer"', "a JSON object, got a string"),
        ('{"version": "1.0"}', "needs a `model` object"),
        ('{"model": 3}', "needs a `model` object"),
        ('{"model": {"type": "BPE", "merges": []}}', "has no `vocab`"),
        ('{"model": {"dropout": null}}', "no `type` and no `vocab`"),
    ],
)
def test_tokenizer_json_of_the_wrong_shape_is_one_value_error(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        tokens.scan(path)
    assert str(path) in str(err.value)


def test_tokenizer_object_json_of_the_wrong_shape_is_one_value_error() -> None:
    class Fake:
        def __init__(self, text: str) -> None:
            self.text = text

        def to_str(self) -> str:
            return self.text

    with pytest.raises(ValueError, match="a JSON object, got an array"):
        tokens.scan(Fake("[1, 2, 3]"))
    with pytest.raises(ValueError, match=r"not a valid tokenizer\.json"):
        tokens.scan(Fake("{"))


def test_unsupported_tokenizer_json_model_type_names_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "SentencePieceTrie", "vocab": {"a": 0}}}')
    with pytest.raises(ValueError, match=r"`model\.type` must be one of BPE, WordPiece"):
        tokens.scan(path)


def test_tokenizer_json_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(b'{\n  "model":\n "\xff\xfe"}')
    with pytest.raises(ValueError, match="line 3: not UTF-8"):
        tokens.scan(path)


# ---------------------------------------------------------------- GGUF


@pytest.mark.parametrize("model", ["plamo2", "hybriddna", "no-such-model"])
def test_unsupported_gguf_model_type_is_one_value_error(tmp_path: Path, model: str) -> None:
    path = write_vocab_gguf(tmp_path / "v.gguf", model)
    with pytest.raises(ValueError, match=r"`tokenizer\.ggml\.model` must be one of gpt2, llama"):
        tokens.scan(path)


def test_unknown_pre_tokenizer_label_is_a_warning_not_a_silent_fallback(tmp_path: Path) -> None:
    path = write_vocab_gguf(tmp_path / "v.gguf", "gpt2", pre="no-such-splitter")
    r = tokens.scan(path, containment=False)
    assert len(r.warnings) == 1
    assert "no-such-splitter" in r.warnings[0]
    assert "default" in r.warnings[0]
    assert tokens.Scanner(path).warnings == r.warnings
    known = write_vocab_gguf(tmp_path / "k.gguf", "gpt2", pre="llama-bpe")
    assert tokens.scan(known, containment=False).warnings == []


def test_undertrained_report_carries_the_warning(tmp_path: Path) -> None:
    from ferrolm.tokens.report import UndertrainedReport

    path = write_vocab_gguf(tmp_path / "v.gguf", "gpt2", pre="no-such-splitter")
    r = tokens.scan(path, containment=False)
    rep = UndertrainedReport(str(path), r, None, None)
    assert rep.to_dict()["warnings"] == r.warnings
    assert (
        "warning: unknown pre-tokenizer label `no-such-splitter`" in rep.to_report().to_markdown()
    )


# ---------------------------------------------------------------- tiktoken


def test_random_bytes_as_a_tiktoken_file_are_a_value_error_naming_file_and_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ranks.tiktoken"
    rng = np.random.default_rng(0)
    data = b"YQ== 0\nYg== 1\n" + bytes(rng.integers(0, 256, 4096, dtype=np.uint8))
    path.write_bytes(data.replace(b"{", b"x"))
    with pytest.raises(ValueError, match=r"line 3") as err:
        tokens.scan(path)
    assert str(path) in str(err.value)
    assert not isinstance(err.value, OSError)


def test_random_bytes_with_a_space_first_line_are_not_an_os_error(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x93\x01 \xff" + os.urandom(512))
    with pytest.raises(ValueError, match=r"line 1: not UTF-8"):
        tokens.scan(path)
