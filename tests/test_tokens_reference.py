"""The converted tokenizers reproduce llama.cpp's reference tokenizations exactly.

llama.cpp ships, per tokenizer family, a vocab-only GGUF with inputs (``.inp``) and the ids the
model's own Hugging Face tokenizer gives them (``.out``, no BOS/EOS). ferrolm rebuilds each
tokenizer from the GGUF metadata alone (split rule of the ``tokenizer.ggml.pre`` label,
normalisers, byte fallback, added tokens); every input must come out with the expected ids.
``scripts/fetch-fixtures.sh`` installs the files (setup.sh runs it).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from ferrolm import _native, tokens
from ferrolm.testing.tokenizations import (
    MODELS_ENV,
    llama_cpp_models_dir,
    reference_gguf,
    reference_tokenizations,
    reference_vocab_names,
)

#: Every vocabulary of llama-cpp-python 0.3.36 that ships ``.inp``/``.out``.
EXPECTED = (
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
)
AVAILABLE = reference_vocab_names()
SKIP_REASON = (
    f"llama.cpp reference tokenizations not found in {llama_cpp_models_dir()} "
    f"(run scripts/fetch-fixtures.sh, or set {MODELS_ENV})"
)


def _path(name: str) -> Path:
    if name not in AVAILABLE:
        pytest.skip(SKIP_REASON)
    return reference_gguf(name)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | set(AVAILABLE)))
def test_conversion_reproduces_every_reference_tokenization(name: str) -> None:
    path = _path(name)
    cases = reference_tokenizations(name)
    assert len(cases) >= 40
    got, warnings = _native.tokens.encode_file(path, [text for text, _ in cases])
    assert warnings == []
    wrong = [
        f"{text[:40]!r}: expected {expected[:12]}, got {ids[:12]}"
        for (text, expected), ids in zip(cases, got)
        if ids != expected
    ]
    assert not wrong, f"{len(wrong)}/{len(cases)} inputs differ:\n" + "\n".join(wrong)


def test_scanner_and_module_functions_encode_alike() -> None:
    path = _path("llama-spm")
    cases = reference_tokenizations("llama-spm")[:12]
    texts = [text for text, _ in cases]
    expected = [ids for _, ids in cases]
    assert tokens.encode_batch(path, texts) == expected
    assert tokens.encode(path, texts[-1]) == expected[-1]
    scanner = tokens.Scanner(path)
    assert scanner.warnings == []
    assert [scanner.encode(t) for t in texts] == expected


def test_qwen2_normalises_to_nfc_so_compatibility_forms_are_never_produced() -> None:
    path = _path("qwen2")
    # U+1F77 (Greek iota with oxia) and U+F9E1 (a CJK compatibility ideograph) have tokens of
    # their own, but Qwen2's tokenizer puts text in NFC first, which replaces both.
    chars = ["\u1f77", "\uf9e1"]
    nfc = [unicodedata.normalize("NFC", c) for c in chars]
    assert nfc != chars
    got = tokens.encode_batch(path, chars + nfc)
    assert got[:2] == got[2:]
    assert [145341] not in got
    assert [145344] not in got


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deepseek-llm", "\tthis"),
        ("deepseek-coder", "\tthis"),
        ("deepseek-coder", " = "),
        ("deepseek-coder", "    <"),
    ],
)
def test_deepseek_splits_keep_their_own_word_pieces(name: str, text: str) -> None:
    # GPT-2's split rule (the old silent fallback) cuts these; deepseek's own rule keeps them.
    assert len(tokens.encode(_path(name), text)) == 1
