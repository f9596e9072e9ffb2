"""Reading a model's embedding and unembedding matrices without loading the model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import numpy.typing as npt

from ferrolm._optional import require

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


def _gguf_matrix(tensor: object) -> npt.NDArray[np.float32]:
    from gguf import quants

    # Quantized blocks (Q4_K, Q4_1, ...) and float tensors alike become float32.
    out = np.asarray(
        quants.dequantize(tensor.data, tensor.tensor_type),  # type: ignore[attr-defined]
        dtype=np.float32,
    )
    dims = [int(d) for d in tensor.shape]  # type: ignore[attr-defined]
    # GGUF lists dimensions fastest-first: [dim, vocab] is a row-major [vocab, dim] matrix.
    return np.ascontiguousarray(out.reshape(dims[::-1]))


def _read_gguf(path: Path) -> EmbeddingMatrices:
    require("gguf", "reading GGUF weights")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # the gguf package raises bare ValueErrors and struct errors
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from e
    by_name = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in by_name:
        raise ValueError(f"{path} has no `token_embd.weight` tensor (found: {sorted(by_name)[:8]})")
    emb = _gguf_matrix(by_name["token_embd.weight"])
    unemb = _gguf_matrix(by_name["output.weight"]) if "output.weight" in by_name else None
    return EmbeddingMatrices(
        emb, unemb, "token_embd.weight", "output.weight" if unemb is not None else None, str(path)
    )


def _read_safetensors(files: list[Path]) -> EmbeddingMatrices:
    require("safetensors", "reading safetensors weights")
    require("torch", "reading safetensors weights")  # safe_open(framework="pt")
    from safetensors import safe_open

    emb_name: Optional[str] = None
    unemb_name: Optional[str] = None
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a mapping
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

    def load(name: str) -> npt.NDArray[np.float32]:
        with safe_open(str(where[name]), framework="pt") as st:
            t = st.get_tensor(name)
        return np.ascontiguousarray(t.float().numpy())

    emb = load(emb_name)
    unemb = load(unemb_name) if unemb_name is not None else None
    return EmbeddingMatrices(emb, unemb, emb_name, unemb_name, str(files[0].parent))


def read_embeddings(model_path: str | Path) -> EmbeddingMatrices:
    """Reads the embedding (and untied unembedding) matrices of a model.

    Only these tensors are read: safetensors files are opened lazily, GGUF files are
    memory-mapped and the two tensors dequantized.

    Args:
        model_path: a GGUF file, a ``.safetensors`` file, or a directory with
            ``*.safetensors`` shards (a Hugging Face model directory) or one ``*.gguf`` file.

    Raises:
        FileNotFoundError: nothing readable at ``model_path``.
        ValueError: no embedding tensor, or a malformed file.

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
    if not path.exists():
        raise FileNotFoundError(f"`model_path` does not exist: {path}")
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors"))
        if shards:
            return _read_safetensors(shards)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return _read_gguf(ggufs[0])
        raise FileNotFoundError(f"no *.safetensors or *.gguf file in {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _read_gguf(path)
    if path.suffix == ".safetensors":
        return _read_safetensors([path])
    raise ValueError(f"`model_path` must be a GGUF or safetensors file, got {path.name}")
