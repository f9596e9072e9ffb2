"""Vocab-only GGUF files for the tokenizer types llama.cpp ships no reference files for.

llama.cpp converts RWKV "world" vocabularies (model type ``rwkv``) and SentencePiece unigram
models (``t5``: T5, mT5, XLM-RoBERTa...) but ships no ``ggml-vocab-*.gguf`` with reference
tokenizations for either. These helpers write such files from real vocabularies the way
llama.cpp's ``convert_hf_to_gguf.py`` does, so that ferrolm's conversion can be compared with
the vocabularies' own reference tokenizers:

- RWKV: ``rwkv_vocab_v20230424.txt`` from the ``rwkv`` package, whose ``TRIE_TOKENIZER`` is
  the reference encoder;
- unigram: a ``.model`` trained by the ``sentencepiece`` package (``nmt_nfkc`` charsmap),
  which is its own reference encoder.

Example:
    >>> rwkv_token_text(b"a\\n\\xe4'")
    "a\\\\n\\\\xe4'"
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# GGUF token types (llama.cpp's `llama_token_type`).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def rwkv_token_text(token: bytes) -> str:
    """How ``convert_hf_to_gguf.py`` writes an RWKV token: its bytes' ``repr`` without quotes."""
    return repr(token)[2:-1]


def read_rwkv_vocab(path: Path) -> list[bytes]:
    """The tokens of an ``rwkv_vocab_*.txt`` file (``id repr length`` per line), by id from 1."""
    tokens: list[bytes] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split(" ")
        value = ast.literal_eval(" ".join(parts[1:-1]))
        token = value.encode("utf-8") if isinstance(value, str) else value
        if int(parts[0]) != n or not isinstance(token, bytes) or len(token) != int(parts[-1]):
            raise ValueError(f"{path}: line {n} is not `{n} <repr> <length>`: {line[:60]!r}")
        tokens.append(token)
    return tokens


def write_rwkv_gguf(vocab_txt: Path, out: Path, vocab_size: int = 65536) -> Path:
    """Writes the vocab-only GGUF of an RWKV world vocabulary as ``convert_hf_to_gguf.py`` does.

    Id 0 is the control token ``<s>``, ids 1... the file's tokens, then ``[PAD{i}]`` unused
    tokens up to ``vocab_size``.
    """
    gguf = importlib.import_module("gguf")
    texts = ["<s>"] + [rwkv_token_text(t) for t in read_rwkv_vocab(vocab_txt)]
    types = [CONTROL] + [NORMAL] * (len(texts) - 1)
    for i in range(len(texts), vocab_size):
        texts.append(f"[PAD{i}]")
        types.append(UNUSED)
    writer = gguf.GGUFWriter(str(out), "rwkv6")
    writer.add_tokenizer_model("rwkv")
    writer.add_token_list([t.encode("utf-8") for t in texts])
    writer.add_token_types(types)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    _close(writer)
    return out


def _close(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---------------------------------------------------------------- SentencePiece


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(data: bytes) -> Iterable[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of a serialised protobuf message."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not expected in a SentencePiece model")
        yield number, wire, value


@dataclass
class NormalizerSpec:
    """The fields of a SentencePiece ``NormalizerSpec`` that llama.cpp reads."""

    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    user_defined: list[int] = field(default_factory=list)


def normalizer_spec(model: bytes) -> NormalizerSpec:
    """Reads the normaliser settings and user-defined piece ids of a serialised ``ModelProto``.

    (``ModelProto``: ``pieces = 1``, ``normalizer_spec = 3``; ``NormalizerSpec``:
    ``precompiled_charsmap = 2``, ``add_dummy_prefix = 3``, ``remove_extra_whitespaces = 4``,
    ``escape_whitespaces = 5``; ``SentencePiece.type = 3``, 4 for user-defined.)
    """
    spec = NormalizerSpec()
    piece_id = 0
    for number, wire, value in _fields(model):
        if number == 1 and wire == 2:
            kind = [v for n, w, v in _fields(value) if n == 3 and w == 0]
            if kind and kind[0] == USER_DEFINED:
                spec.user_defined.append(piece_id)
            piece_id += 1
        elif number == 3 and wire == 2:
            for n, w, v in _fields(value):
                if n == 2 and w == 2:
                    spec.precompiled_charsmap = bytes(v)
                elif w == 0 and n in (3, 4, 5):
                    name = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces"}.get(
                        n, "escape_whitespaces"
                    )
                    setattr(spec, name, bool(v))
    return spec


def train_unigram(
    sentences: list[str],
    vocab_size: int,
    user_defined: Optional[list[str]] = None,
    remove_extra_whitespaces: bool = True,
    add_dummy_prefix: bool = True,
) -> bytes:
    """A unigram ``.model`` trained by ``sentencepiece`` on ``sentences`` (``nmt_nfkc``)."""
    import io

    spm = importlib.import_module("sentencepiece")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        normalization_rule_name="nmt_nfkc",
        user_defined_symbols=user_defined or [],
        remove_extra_whitespaces=remove_extra_whitespaces,
        add_dummy_prefix=add_dummy_prefix,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        num_threads=1,
        minloglevel=2,
    )
    return buffer.getvalue()


def write_unigram_gguf(model: bytes, out: Path, pads: int = 0) -> Path:
    """Writes the vocab-only GGUF of a SentencePiece unigram model as ``convert_hf_to_gguf.py``
    does for T5 (model ``t5``, scores, types, space flags, charsmap), with ``pads`` unused
    ``[PAD{i}]`` tokens (score -1000) after the model's pieces, as T5 checkpoints whose
    embedding is larger than the vocabulary get. User-defined pieces keep their type (the
    converter reads them from ``added_tokens.json``).
    """
    gguf = importlib.import_module("gguf")
    spm = importlib.import_module("sentencepiece")
    proc = spm.SentencePieceProcessor(model_proto=model)
    spec = normalizer_spec(model)
    tokens: list[bytes] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(proc.get_piece_size()):
        tokens.append(proc.id_to_piece(i).encode("utf-8"))
        scores.append(proc.get_score(i))
        if proc.is_unknown(i):
            types.append(UNKNOWN)
        elif proc.is_control(i):
            types.append(CONTROL)
        elif proc.is_unused(i):
            types.append(UNUSED)
        elif proc.is_byte(i):
            types.append(BYTE)
        elif i in spec.user_defined:
            types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
    for i in range(1, pads + 1):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(UNUSED)
    writer = gguf.GGUFWriter(str(out), "t5")
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(spec.add_dummy_prefix)
    writer.add_remove_extra_whitespaces(spec.remove_extra_whitespaces)
    if spec.precompiled_charsmap:
        writer.add_precompiled_charsmap(spec.precompiled_charsmap)
    writer.add_unk_token_id(proc.unk_id())
    _close(writer)
    return out


# ---------------------------------------------------------------- built, cached vocabularies

#: The pip line that installs what :func:`built_vocab` needs.
PIP_LINE = "pip install --no-deps rwkv==0.8.32 sentencepiece==0.2.3 (requirements/fixtures.txt)"

#: Lines in several scripts and with characters ``nmt_nfkc`` rewrites (fullwidth forms,
#: ligatures, compatibility digits, composed and decomposed accents), mixed into the training
#: text so that the unigram model has pieces and unknown characters of each kind.
MULTILINGUAL = [
    "Le café est très bon, naïve déjà vu à Noël.",
    "Cafe\u0301 decomposed, and ﬁne ﬂowers with ligatures.",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ ａｎｄ ｄｉｇｉｔｓ １２３ ① ② ③",
    "Straße, Größe, Übermäßig; ΑΘΗΝΑ αθήνα; Москва и Санкт-Петербург.",
    "日本語のテキストと中文文本。ｶﾀｶﾅ ﾊﾝｶｸ",
    "Tabs\tand\nnewlines   and    runs of spaces.",
    "Emoji 🦙 and symbols ™ © ½ ¼ ℃ №",
]


def _corpus() -> list[str]:
    import inspect
    import json
    import re
    import textwrap

    lines: list[str] = []
    for obj in (str, dict, list, set, bytes, re, json, textwrap, inspect, Path):
        doc = inspect.getdoc(obj) or ""
        lines.extend(line for line in doc.splitlines() if line.strip())
    return lines + MULTILINGUAL * 20


def _cache_dir() -> Path:
    import os

    root = Path(os.environ.get("FERROLM_CACHE", Path.home() / ".cache" / "ferrolm"))
    return root / "fixtures" / "built"


#: What :func:`built_vocab` can build: name -> description.
BUILT = {
    "rwkv-world": "RWKV world vocabulary (rwkv package), model type rwkv",
    "t5-unigram": "sentencepiece unigram model, nmt_nfkc, merged spaces, 8 [PAD] tokens",
    "t5-unigram-spaces": "sentencepiece unigram model, nmt_nfkc, spaces kept, no dummy prefix",
}


def reference_encoder(name: str, path: Path) -> Any:
    """A function ``text -> ids`` of the vocabulary's own reference tokenizer."""
    if name == "rwkv-world":
        trie = importlib.import_module("rwkv.rwkv_tokenizer").TRIE_TOKENIZER
        vocab = Path(importlib.import_module("rwkv").__file__ or "").parent
        encoder = trie(str(vocab / "rwkv_vocab_v20230424.txt"))
        return encoder.encode
    spm = importlib.import_module("sentencepiece")
    proc = spm.SentencePieceProcessor(model_proto=Path(f"{path}.model").read_bytes())
    return lambda text: proc.encode(text)


def built_vocab(name: str) -> Optional[Path]:
    """The vocab-only GGUF ``name`` (a key of :data:`BUILT`), built on first use and cached
    under ``$FERROLM_CACHE/fixtures/built``; None when ``rwkv``/``sentencepiece`` (see
    :data:`PIP_LINE`) or ``gguf`` is not installed. Unigram models keep their ``.model``
    beside the GGUF (``<path>.model``) for :func:`reference_encoder`.
    """
    import importlib.util

    needs = ("rwkv",) if name == "rwkv-world" else ("sentencepiece",)
    if any(importlib.util.find_spec(p) is None for p in (*needs, "gguf")):
        return None
    out = _cache_dir() / f"ggml-vocab-{name}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    if name == "rwkv-world":
        vocab = Path(importlib.import_module("rwkv").__file__ or "").parent
        write_rwkv_gguf(vocab / "rwkv_vocab_v20230424.txt", partial)
    elif name in ("t5-unigram", "t5-unigram-spaces"):
        merged = name == "t5-unigram"
        model = train_unigram(
            _corpus(),
            vocab_size=600,
            user_defined=["<sep>"],
            remove_extra_whitespaces=merged,
            add_dummy_prefix=merged,
        )
        Path(f"{out}.model").write_bytes(model)
        write_unigram_gguf(model, partial, pads=8 if merged else 0)
    else:
        raise ValueError(f"name must be one of {', '.join(BUILT)}, got {name!r}")
    partial.replace(out)
    return out
