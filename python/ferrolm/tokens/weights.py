"""Reading a model's embedding and unembedding matrices without loading the model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import numpy.typing as npt

from ferrolm import _native
from ferrolm._paths import check_revision, is_hub_id, resolve_embeddings

_EMBEDDING = re.compile(
    r"(^|\.)(embed_tokens|word_embeddings|wte|tok_embeddings|token_embd|embedding)\.weight$"
)
_UNEMBEDDING = re.compile(r"(^|\.)(lm_head|output|embed_out)\.weight$")


@dataclass
class EmbeddingMatrices:
    """The (un)embedding matrices of a model as float32 ``[rows, dim]`` arrays.

    ``unembedding`` is None when the model ties it to ``embedding`` (or has no output head,
    like BERT encoders): the input embedding then serves as the unembedding.
    """

    embedding: npt.NDArray[np.float32]
    unembedding: Optional[npt.NDArray[np.float32]]
    embedding_name: str
    unembedding_name: Optional[str]
    source: str
    #: Rows each matrix holds in the file when fewer were read (``max_rows``); None: all read.
    stored_rows: Optional[tuple[int, Optional[int]]] = None


class NoWeightsError(ValueError):
    """The file holds a tokenizer but no embedding weights (e.g. a vocab-only GGUF file)."""


def _read_gguf(path: Path, max_rows: Optional[int], max_values: int) -> Optional[EmbeddingMatrices]:
    # Parsed, checked and dequantized in Rust (ferrolm_core::tokens::weights); no Python
    # dequantization and no `gguf` import.
    found = _native.tokens.gguf_embeddings(path, max_rows=max_rows, max_values=max_values)
    if found is None:
        return None
    emb = found["embedding"]
    unemb = found["unembedding"]
    return EmbeddingMatrices(
        emb["matrix"],
        None if unemb is None else unemb["matrix"],
        emb["name"],
        None if unemb is None else unemb["name"],
        str(path),
        (int(emb["total_rows"]), None if unemb is None else int(unemb["total_rows"])),
    )


def _read_safetensors(
    files: list[Path], max_rows: Optional[int], max_values: int
) -> EmbeddingMatrices:
    # Headers are parsed and bounds-checked in Rust, rows read by positioned reads: no torch,
    # no `safetensors` package, and a forged header is a ValueError naming the file.
    emb_name: Optional[str] = None
    unemb_name: Optional[str] = None
    where: dict[str, Path] = {}
    for f in files:
        for key, _dtype, _shape in _native.tokens.safetensors_tensors(f):
            where[key] = f
            shorter = emb_name is None or len(key) < len(emb_name)
            other = "position" in key or "token_type" in key
            if _EMBEDDING.search(key) and shorter and not other:
                emb_name = key
            if _UNEMBEDDING.search(key):
                unemb_name = key
    if emb_name is None:
        shown = [str(f) for f in files]
        raise ValueError(f"no token embedding tensor (e.g. `model.embed_tokens.weight`) in {shown}")

    stored: dict[str, int] = {}

    def load(name: str) -> npt.NDArray[np.float32]:
        rows = _native.tokens.safetensors_rows(
            where[name], name, max_rows=max_rows, max_values=max_values
        )
        stored[name] = int(rows["total_rows"])
        matrix: npt.NDArray[np.float32] = rows["matrix"]
        return matrix

    emb = load(emb_name)
    unemb = load(unemb_name) if unemb_name is not None else None
    return EmbeddingMatrices(
        emb,
        unemb,
        emb_name,
        unemb_name,
        str(files[0].parent),
        (stored[emb_name], None if unemb_name is None else stored[unemb_name]),
    )


def _is_count(x: object) -> bool:
    # The core reads both limits as u64: a float, or an int past 2**64, is named here rather
    # than becoming a bare OverflowError there.
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        return False
    return 1 <= int(x) < 2**64


def read_embeddings(
    model_path: str | Path,
    *,
    max_rows: Optional[int] = None,
    max_values: int = 1 << 32,
    revision: Optional[str] = None,
) -> EmbeddingMatrices:
    """Reads the embedding (and untied unembedding) matrices of a model.

    Only these tensors are read, by ferrolm's Rust core: the file's header is parsed and
    checked against the file's size, then the rows are read and (for GGUF) dequantized from
    F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K or Q6_K to float32, exactly as
    ``gguf.quants.dequantize`` does. Neither torch nor ``gguf`` is imported.

    Args:
        model_path: a GGUF file, a ``.safetensors`` file, a directory with
            ``*.safetensors`` shards (a Hugging Face model directory) or one ``*.gguf`` file,
            or a Hub id (``org/name``; only the shards holding these matrices are fetched).
        max_rows: read at most this many rows of each matrix (e.g. the vocabulary size, so
            padding rows are never read); all rows when None.
        max_values: refuse a matrix of more float32 values than this (default 2^32, 16 GiB),
            before anything is allocated.
        revision: for a Hub id, the branch, tag or commit to read (default the main branch),
            resolved like ``from_pretrained``; ignored for a local path.

    Raises:
        FileNotFoundError: nothing readable at ``model_path``, or the Hub repository (at
            ``revision``) is not found.
        NoWeightsError: a GGUF file without ``token_embd.weight`` (vocab-only); a ValueError.
        ValueError: no embedding tensor, a tensor type that cannot
            be dequantized, or a malformed file (each naming the file and the field).

    Example:
        >>> import tempfile
        >>> import torch
        >>> from safetensors.torch import save_file
        >>> weights = {
        ...     "model.embed_tokens.weight": torch.ones(4, 8),
        ...     "lm_head.weight": torch.eye(4, 8),
        ... }
        >>> with tempfile.TemporaryDirectory() as model_dir:
        ...     save_file(weights, f"{model_dir}/model.safetensors")
        ...     mats = read_embeddings(model_dir)
        >>> mats.embedding.shape, mats.unembedding_name, mats.unembedding[1, 1]
        ((4, 8), 'lm_head.weight', np.float32(1.0))
    """
    path = Path(model_path)
    if max_rows is not None and not _is_count(max_rows):
        raise ValueError(
            f"`max_rows` must be a positive integer below 2**64 or None, got {max_rows!r}"
        )
    if not _is_count(max_values):
        raise ValueError(f"`max_values` must be a positive integer below 2**64, got {max_values!r}")
    check_revision(revision)
    if not path.exists() and is_hub_id(str(model_path)):
        # the embedding shards only
        path = resolve_embeddings(str(model_path), revision=revision, argument="model_path")
    if not path.exists():
        raise FileNotFoundError(f"`model_path` does not exist: {path}")
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors"))
        if shards:
            return _read_safetensors(shards, max_rows, max_values)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            path = ggufs[0]
        else:
            raise FileNotFoundError(f"no *.safetensors or *.gguf file in {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        found = _read_gguf(path, max_rows, max_values)
        if found is None:
            raise NoWeightsError(
                f"{path} holds no weights (no `token_embd.weight` tensor): it is a vocab-only "
                "GGUF file; scan its tokenizer with `ferrolm.tokens.scan` instead"
            )
        return found
    if path.suffix == ".safetensors":
        return _read_safetensors([path], max_rows, max_values)
    raise ValueError(f"`model_path` must be a GGUF or safetensors file, got {path.name}")
