"""DivPrune selection (`ferrolm.prune.divprune`) against a plain NumPy reference greedy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ferrolm.cuda
from ferrolm import _native, prune

TOL = 1e-5  # float32 rounding of 1 - x.y between two implementations' dot products


def distances(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.float32(1.0) - xn @ xn.T


def reference(x: np.ndarray, k: int, first: int | None = None) -> tuple[list[int], float]:
    """The greedy in plain float32 NumPy: picks in greedy order and the objective."""
    picks, objective, _ = follow_reference(x, k, first=first)
    return picks, objective


def follow_reference(
    x: np.ndarray, k: int, first: int | None = None, ours: list[int] | None = None
) -> tuple[list[int], float, int]:
    """Runs the NumPy greedy; with `ours`, checks each of our picks against it.

    A pick must be the reference's own choice, or, where other candidates are within `TOL` of
    the best value (a near-tie that float32 rounding may decide either way), one of those; the
    reference then continues from our pick. Returns (picks, objective, near-tie steps).
    """
    dist = distances(x)
    n = x.shape[0]
    near_ties = 0

    def choose(values: np.ndarray, step: int) -> int:
        nonlocal near_ties
        best = int(np.argmax(values))  # first maximum: the lowest index wins ties
        if ours is None:
            return best
        close = np.flatnonzero(values >= values[best] - TOL)
        near_ties += len(close) > 1
        assert ours[step] == best or ours[step] in close, (step, ours[step], best, close)
        return ours[step]

    if first is None:
        nn = dist.copy()
        np.fill_diagonal(nn, np.inf)
        first = choose(nn.min(axis=1), 0) if n > 1 else 0
    elif ours is not None:
        assert ours[0] == first
    chosen = np.zeros(n, dtype=bool)
    picks, objective = [first], np.inf
    chosen[first] = True
    min_dist = dist[first].copy()
    while len(picks) < k:
        masked = np.where(chosen, -np.inf, min_dist)
        p = choose(masked, len(picks))
        objective = min(objective, float(masked[p]))
        picks.append(p)
        chosen[p] = True
        min_dist = np.minimum(min_dist, dist[p])
    return picks, objective, near_ties


def min_pairwise_distance(x: np.ndarray, idx: list[int]) -> float:
    xn = x.astype(np.float64)
    xn /= np.linalg.norm(xn, axis=1, keepdims=True)
    sub = xn[idx]
    d = 1.0 - sub @ sub.T
    np.fill_diagonal(d, np.inf)
    return float(d.min()) if len(idx) > 1 else float("inf")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 160),
    d=st.integers(1, 40),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(["gram", "matrix_free", "auto"]),
)
def test_indices_equal_numpy_reference_in_float32(n, d, frac, seed, method):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    k = min(n, max(1, round(frac * n)))
    sel = prune.divprune(torch.from_numpy(x), k=k, order="greedy", method=method)
    assert sel.indices.dtype == torch.int64
    ours = sel.indices.tolist()
    _, want_obj, _ = follow_reference(x, k, ours=ours)
    assert float(sel.objective) == pytest.approx(want_obj, abs=TOL)
    sorted_sel = prune.divprune(torch.from_numpy(x), k=k, method=method)
    assert sorted_sel.indices.tolist() == sorted(ours)


@pytest.mark.parametrize(("n", "d", "keep"), [(576, 1024, 0.098), (700, 64, 0.5)])
def test_realistic_sizes_equal_reference(n, d, keep):
    x = np.random.default_rng(n).standard_normal((n, d)).astype(np.float32)
    k = prune.keep_count(n, keep)
    want, _ = reference(x, k)
    for method in ("gram", "matrix_free"):
        got = prune.divprune(torch.from_numpy(x), keep=keep, order="greedy", method=method)
        # Several steps here have runners-up within 1e-5 of the pick, yet the float32 dot
        # products of ferrolm and NumPy's BLAS agree closely enough to give the same picks.
        assert got.indices.tolist() == want, method


_FLOAT32_PATH = """
import sys, numpy as np, torch
from ferrolm import prune
assert not prune.uses_amx()
x = np.load(sys.argv[1])
sel = prune.divprune(torch.from_numpy(x), k=int(sys.argv[2]), order="greedy", method="gram")
print(" ".join(map(str, sel.indices.tolist())), float(sel.objective))
"""


@pytest.mark.skipif(not prune.uses_amx(), reason="this CPU has no AMX: one path only")
def test_amx_and_float32_paths_give_the_same_picks(tmp_path):
    import os
    import subprocess
    import sys

    # Two clustered sets (near-duplicates within clusters) and wide-range features: ties the
    # AMX approximation alone would misorder, which its float32 refinement must settle.
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((40, 256)).astype(np.float32)
    clustered = centres[rng.integers(0, 40, 900)] + 1e-3 * rng.standard_normal((900, 256))
    wide = rng.standard_normal((600, 48)) * np.logspace(-3, 3, 48)
    for i, x in enumerate([clustered.astype(np.float32), wide.astype(np.float32)]):
        k = x.shape[0] // 3
        path = tmp_path / f"x{i}.npy"
        np.save(path, x)
        env = dict(os.environ, FERROLM_NO_AMX="1")
        out = subprocess.run(
            [sys.executable, "-c", _FLOAT32_PATH, str(path), str(k)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        fp32_picks, fp32_obj = [int(v) for v in out[:-1]], float(out[-1])
        amx = prune.divprune(torch.from_numpy(x), k=k, order="greedy", method="gram")
        # Both are the NumPy greedy up to float32 near-ties, and agree on the objective.
        follow_reference(x, k, ours=fp32_picks)
        follow_reference(x, k, ours=amx.indices.tolist())
        assert float(amx.objective) == pytest.approx(fp32_obj, abs=TOL)


def test_batch_equals_images_one_by_one():
    x = torch.randn(4, 50, 16, generator=torch.Generator().manual_seed(1))
    sel = prune.divprune(x, k=9)
    assert sel.indices.shape == (4, 9)
    assert sel.objective.shape == (4,)
    for b in range(4):
        one = prune.divprune(x[b], k=9)
        assert torch.equal(sel.indices[b], one.indices)
        assert torch.equal(sel.objective[b], one.objective)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_objective_is_not_below_the_reference(dtype):
    gen = torch.Generator().manual_seed(3)
    for n, d, k in [(120, 32, 12), (300, 64, 60), (64, 8, 30)]:
        x = torch.randn(n, d, generator=gen).to(dtype)
        sel = prune.divprune(x, k=k)
        x64 = x.double().numpy()
        ref_idx, _ = reference(x.float().numpy(), k)
        ours = min_pairwise_distance(x64, sel.indices.tolist())
        theirs = min_pairwise_distance(x64, ref_idx)
        assert ours >= theirs - 1e-6


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 9), d=st.integers(2, 4), k=st.integers(2, 4), seed=st.integers(0, 10**6))
def test_greedy_is_within_half_of_the_brute_force_optimum(n, d, k, seed):
    # Farthest-point greedy is a 1/2-approximation for a metric. 1 - cos is not one, but it
    # orders pairs like the chord distance sqrt(2 (1 - cos)), which is: compare chords.
    k = min(k, n)
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    sel = prune.divprune(torch.from_numpy(x), k=k)
    best = max(min_pairwise_distance(x, list(c)) for c in itertools.combinations(range(n), k))
    ours = min_pairwise_distance(x, sel.indices.tolist())
    assert ours <= best + 1e-9
    assert np.sqrt(2 * max(ours, 0.0)) >= 0.5 * np.sqrt(2 * best) - 1e-6


def test_first_pick_by_index_and_seed():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(4))
    sel = prune.divprune(x, k=5, first=17, order="greedy")
    assert sel.indices[0] == 17
    follow_reference(x.numpy(), 5, first=17, ours=sel.indices.tolist())
    a = prune.divprune(x, k=5, seed=7, order="greedy")
    b = prune.divprune(x, k=5, seed=7, order="greedy")
    assert torch.equal(a.indices, b.indices)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 4), n=st.integers(1, 30), seed=st.integers(0, 2**64 - 1))
def test_seeded_first_picks_binding_equals_the_cpu_first_picks(batch, n, seed):
    # The CUDA path launches with these picks: they must be the CPU selection's first tokens,
    # including where `seed + b` wraps past 2**64.
    x = torch.randn(batch, n, 3, generator=torch.Generator().manual_seed(n))
    sel = prune.divprune(x, k=1, seed=seed, order="greedy")
    picks = _native.prune.seeded_first_picks(seed, batch, n)
    assert picks.dtype == np.int64
    assert picks.tolist() == sel.indices[:, 0].tolist()


def test_keep_ratio_rounds_half_up_and_keeps_at_least_one():
    assert prune.keep_count(576, 0.098) == 56
    assert prune.keep_count(2880, 0.1) == 288
    assert prune.keep_count(10, 0.05) == 1
    assert prune.keep_count(10, 0.25) == 3
    x = torch.randn(576, 8)
    assert prune.divprune(x).indices.shape == (56,)


def test_objective_matches_the_selection_and_single_token_is_inf():
    x = torch.randn(80, 10, generator=torch.Generator().manual_seed(5))
    sel = prune.divprune(x, k=8)
    assert prune.objective(x, sel.indices) == pytest.approx(float(sel.objective), abs=1e-5)
    assert prune.divprune(x, k=1).objective.item() == float("inf")


def test_duplicates_are_kept_last_with_objective_zero():
    base = torch.randn(5, 4, generator=torch.Generator().manual_seed(6))
    x = torch.cat([base, base])
    sel = prune.divprune(x, k=5)
    assert sorted(sel.indices.tolist()) == [0, 1, 2, 3, 4]
    assert float(sel.objective) > 0
    assert float(prune.divprune(x, k=6).objective) == pytest.approx(0.0, abs=1e-6)


def test_non_contiguous_input_is_accepted_and_never_modified():
    x = torch.randn(30, 40, generator=torch.Generator().manual_seed(8))
    view = x[:, ::2]  # strided [30, 20]
    assert not view.is_contiguous()
    before = x.clone()
    sel = prune.divprune(view, k=6)
    assert torch.equal(sel.indices, prune.divprune(view.contiguous(), k=6).indices)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    ("features", "kwargs", "error", "match"),
    [
        (torch.randn(10, 4), {"k": 0}, ValueError, "`k` must be an integer between 1"),
        (torch.randn(10, 4), {"k": 11}, ValueError, "got 11"),
        (torch.randn(10, 4), {"keep": 0.0}, ValueError, "`keep` must be a ratio"),
        (torch.randn(10, 4), {"keep": 1.5}, ValueError, "`keep` must be a ratio"),
        (torch.randn(10, 4), {"keep": 0.5, "k": 3}, ValueError, "either `keep` or `k`"),
        (torch.randn(10, 4), {"first": 10}, ValueError, "`first` must be a token index"),
        (torch.randn(10, 4), {"first": 1, "seed": 2}, ValueError, "either `first` or `seed`"),
        (torch.randn(10, 4), {"order": "random"}, ValueError, "`order`"),
        (torch.randn(10, 4), {"method": "exact"}, ValueError, "`method`"),
        (torch.randn(0, 4), {"k": 1}, ValueError, "non-empty"),
        (torch.randn(3, 0), {"k": 1}, ValueError, "non-empty"),
        (torch.randn(10), {"k": 1}, ValueError, r"\[N, d\] or \[B, N, d\]"),
        (torch.randn(2, 3, 4, 5), {"k": 1}, ValueError, r"\[N, d\] or \[B, N, d\]"),
        (torch.ones(10, 4, dtype=torch.int64), {"k": 1}, TypeError, "float32, float16"),
        (torch.randn(10, 4, dtype=torch.float64), {"k": 1}, TypeError, r"call \.float\(\)"),
        ([[1.0] * 4] * 10, {"k": 1}, TypeError, "torch.Tensor or NumPy array"),
        (np.ones((10, 4), dtype=np.float64), {"k": 1}, TypeError, r"call \.astype\(np\.float32\)"),
        (np.ones((10, 4), dtype=np.int32), {"k": 1}, TypeError, "float32 or float16"),
        (np.ones((10,), dtype=np.float32), {"k": 1}, ValueError, r"\[N, d\] or \[B, N, d\]"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(features, kwargs, error, match):
    with pytest.raises(error, match=match):
        prune.divprune(features, **kwargs)


@pytest.mark.parametrize(("value", "what"), [(float("nan"), "NaN"), (float("inf"), "infinite")])
def test_non_finite_features_are_rejected_with_their_token(value, what):
    x = torch.randn(2, 10, 4)
    x[1, 6, 2] = value
    with pytest.raises(ValueError, match=rf"{what}.*token 6.*image 1"):
        prune.divprune(x, k=3)


def test_zero_vector_is_rejected():
    x = torch.randn(10, 4)
    x[3] = 0
    with pytest.raises(ValueError, match="all-zero row in token 3"):
        prune.divprune(x, k=3)


def test_divprune_kernels_compile_with_nvrtc():
    if not ferrolm.cuda.nvrtc_available():
        pytest.skip("NVRTC not found")
    names = [k.name for k in ferrolm.cuda.compile_check()]
    assert "divprune" in names


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("n", "d", "k"), [(576, 1024, 56), (2880, 4096, 288), (300, 64, 150), (1, 8, 1), (97, 5, 97)]
)
def test_cuda_selection_equals_cpu_in_float32(n, d, k):
    x = torch.randn(3, n, d, generator=torch.Generator().manual_seed(n))
    cpu = prune.divprune(x, k=k, order="greedy")
    gpu = prune.divprune(x.cuda(), k=k, order="greedy")
    assert gpu.indices.device.type == "cuda"
    assert gpu.indices.shape == (3, k)
    for b in range(3):
        # cuBLAS and the CPU kernel round dot products differently: every GPU pick must be
        # the NumPy reference's pick up to a float32 near-tie, and the CPU's pick exactly.
        follow_reference(x[b].numpy(), k, ours=gpu.indices[b].tolist())
    assert torch.equal(gpu.indices.cpu(), cpu.indices)
    torch.testing.assert_close(gpu.objective.cpu(), cpu.objective, atol=1e-5, rtol=0)


@pytest.mark.gpu
def test_cuda_first_and_seed_and_half_precision():
    x = torch.randn(2, 200, 32, generator=torch.Generator().manual_seed(9))
    for kwargs in ({"first": 5}, {"seed": 11}):
        cpu = prune.divprune(x, k=20, order="greedy", **kwargs)
        gpu = prune.divprune(x.cuda(), k=20, order="greedy", **kwargs)
        assert torch.equal(gpu.indices.cpu(), cpu.indices)
    half = x.cuda().half()
    cpu = prune.divprune(half.cpu(), k=20)
    gpu = prune.divprune(half, k=20)
    assert torch.equal(gpu.indices.cpu(), cpu.indices)


@pytest.mark.gpu
def test_cuda_rejects_non_finite_features():
    x = torch.randn(10, 4, device="cuda")
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="token 2"):
        prune.divprune(x, k=3)
