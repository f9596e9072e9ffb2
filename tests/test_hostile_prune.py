"""Hostile input to ferrolm.prune (issue 16): no abort, no silent wrong answer, every error
naming its argument. The reproducers that used to abort run in a child process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferrolm import _native, prune
from ferrolm.testing.isolated import run_probes

SETUP = """
import torch
import ferrolm.prune as prune
torch.manual_seed(0)
"""

PROBES = {
    "gram_of_100k_tokens": "prune.divprune(torch.randn(100_000, 2), k=2, method='gram')",
    "objective_of_120k_repeats": (
        "prune.objective(torch.randn(20, 8), torch.zeros(120_000, dtype=torch.long))"
    ),
}


@pytest.fixture(scope="module")
def probes():
    return run_probes(SETUP, PROBES)


def test_an_explicit_gram_matrix_too_large_is_a_memory_error_naming_features(probes):
    got = probes["gram_of_100k_tokens"]
    assert got.exc == "MemoryError", got.msg
    assert "`features` needs 40000000000 bytes" in got.msg
    assert "matrix_free" in got.msg
    assert got.seconds < 5
    assert got.grown_bytes < 1 << 30


def test_the_objective_of_many_repeats_needs_no_m_by_m_matrix(probes):
    got = probes["objective_of_120k_repeats"]
    assert got.exc is None, got.msg
    assert got.seconds < 5
    assert got.grown_bytes < 1 << 30
    x = torch.randn(20, 8)
    assert prune.objective(x, torch.zeros(120_000, dtype=torch.long)) == 0.0


def _unit_f64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    big = np.abs(x).max(axis=1, keepdims=True)
    # Scaled by the largest magnitude so that the float64 norm itself cannot overflow.
    return x / (np.linalg.norm(x / big, axis=1, keepdims=True) * big)


def _greedy_f64(x: np.ndarray, k: int, first: int) -> list[int]:
    """Greedy max-min over exact float64 cosine distances (the reference nobody here tuned)."""
    u = _unit_f64(x)
    dist = 1.0 - u @ u.T
    chosen = [first]
    min_d = dist[first].copy()
    while len(chosen) < k:
        masked = min_d.copy()
        masked[chosen] = -np.inf
        nxt = int(np.argmax(masked))
        chosen.append(nxt)
        min_d = np.minimum(min_d, dist[nxt])
    return chosen


@pytest.mark.parametrize("method", ["gram", "matrix_free"])
def test_rows_of_norm_near_1e38_or_denormal_pick_like_float64(method):
    rng = np.random.default_rng(4)
    base = rng.uniform(-0.5, 0.5, size=(48, 8))
    scales = np.array([3.0e38 / 0.5, 1e-41 / 0.5, 1e-30, 1.0] * 12)[:, None]
    x = (base * scales).astype(np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(np.sqrt(np.sum(x[0] * x[0])))  # float32 norms would overflow
    assert np.all(np.abs(x[1]) < np.finfo(np.float32).tiny)  # a row of denormals
    sel = prune.divprune(torch.from_numpy(x), k=16, first=0, order="greedy", method=method)
    assert sel.indices.tolist() == _greedy_f64(x, 16, first=0)
    # The same directions at ordinary scale pick the same tokens.
    plain = _unit_f64(x).astype(np.float32)
    again = prune.divprune(torch.from_numpy(plain), k=16, first=0, order="greedy", method=method)
    assert again.indices.tolist() == sel.indices.tolist()


@pytest.mark.parametrize(
    ("arg", "call"),
    [
        ("k", lambda v: _native.prune.divprune(np.ones((1, 4, 2), np.float32), v)),
        ("first", lambda v: _native.prune.divprune(np.ones((1, 4, 2), np.float32), 2, first=v)),
        ("seed", lambda v: _native.prune.divprune(np.ones((1, 4, 2), np.float32), 2, seed=v)),
        ("seed", lambda v: _native.prune.seeded_first_picks(v, 1, 4)),
        ("batch", lambda v: _native.prune.seeded_first_picks(0, v, 4)),
        ("n", lambda v: _native.prune.seeded_first_picks(0, 1, v)),
    ],
)
@pytest.mark.parametrize("value", [2**64, 2**70, -(2**70)])
def test_integers_over_64_bits_name_the_argument(arg, call, value):
    with pytest.raises(ValueError, match=f"`{arg}` must be an integer in \\[") as info:
        call(value)
    assert str(value) in str(info.value)


def test_a_huge_batch_of_first_picks_is_a_memory_error():
    with pytest.raises(MemoryError, match="`batch`"):
        _native.prune.seeded_first_picks(0, 2**62, 4)
