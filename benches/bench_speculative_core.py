"""ferrolm.speculative core vs NumPy / torch baselines, same inputs in the same run.

- Sequoia DP (acceptance vector of 32 ranks, D = 10): ferrolm at n = 1024 (target <= 100 ms),
  and ferrolm vs the NumPy recurrence vectorised over the split at n = 256.
- TreeBuilder: one SpecExec step (expand 128 frontier nodes x 32 children into a full
  budget-1024 tree) and finalize, vs the same written with torch ops on CPU.
- Ancestor mask of a 1024-node tree (the Sequoia n = 1024, d = 10 shape) vs torch.

Run for real with `pytest benches/bench_speculative_core.py --benchmark-enable`; each ferrolm row
records `ratio_vs_baseline` in `extra_info` (the baseline is timed in the same session).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ferrolm import speculative
from ferrolm.testing.speculative import TorchTreeState, numpy_sequoia_dp, torch_ancestor_mask
from ferrolm.testing.timing import best_of

P = speculative.load_acceptance_vector(
    Path(speculative.__file__).with_name("sequoia_acceptance_vector.txt")
)
DEPTH = 10
BUDGET = 1024
WIDTH = 32
FRONTIER = 128


def record_ratio(benchmark, baseline_s: float) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.min > 0:
        benchmark.extra_info["baseline_min_s"] = baseline_s
        benchmark.extra_info["ratio_vs_baseline"] = baseline_s / stats.stats.min


# ----------------------------------------------------------------------------- Sequoia DP
@pytest.mark.benchmark(group="sequoia-dp-n1024-D10-B32")
def test_bench_ferrolm_sequoia_dp_n1024(benchmark):
    table = benchmark(speculative.sequoia_dp, P, 1024, DEPTH)
    assert table.value(1024, DEPTH) > table.value(256, DEPTH)


@pytest.mark.benchmark(group="sequoia-dp-n256-D10-B32")
def test_bench_ferrolm_sequoia_dp_n256(benchmark):
    table = benchmark(speculative.sequoia_dp, P, 256, DEPTH)
    if benchmark.enabled:
        record_ratio(benchmark, best_of(lambda: numpy_sequoia_dp(P, 256, DEPTH), 2))
    np.testing.assert_array_equal(table.values(), numpy_sequoia_dp(P, 256, DEPTH))


@pytest.mark.benchmark(group="sequoia-dp-n256-D10-B32")
def test_bench_numpy_sequoia_dp_n256(benchmark):
    benchmark.pedantic(numpy_sequoia_dp, args=(P, 256, DEPTH), rounds=2, iterations=1)


# ----------------------------------------------------------------------------- TreeBuilder
def grown_inputs(seed: int = 0):
    """Draft outputs for growing a budget-1024 tree to full, then one 128 x 32 step."""
    rng = np.random.default_rng(seed)

    def rows(m):
        lp = np.log(rng.dirichlet(np.full(WIDTH, 0.3), size=m) + 1e-9).astype(np.float32)
        tok = np.argsort(rng.random((m, 50_000)), axis=1)[:, :WIDTH].astype(np.int32)
        return tok, lp

    return [rows(1), rows(32), rows(FRONTIER)]


INPUTS = grown_inputs()


def ferrolm_grown() -> speculative.TreeBuilder:
    b = speculative.TreeBuilder(7, BUDGET, max_depth=16, max_width=WIDTH)
    for k, (tok, lp) in zip((1, 32), INPUTS[:2]):
        b.expand(b.frontier(k), tok, lp)
    return b


def torch_grown() -> TorchTreeState:
    s = TorchTreeState(7, BUDGET, WIDTH)
    for k, (tok, lp) in zip((1, 32), INPUTS[:2]):
        s.expand(s.frontier(k), torch.from_numpy(tok), torch.from_numpy(lp))
    return s


STEP_TOK, STEP_LP = INPUTS[2]
STEP_TOK_T, STEP_LP_T = torch.from_numpy(STEP_TOK), torch.from_numpy(STEP_LP)


def ferrolm_step(b: speculative.TreeBuilder) -> np.ndarray:
    return b.expand(b.frontier(FRONTIER), STEP_TOK, STEP_LP)


def torch_step(s: TorchTreeState) -> torch.Tensor:
    return s.expand(s.frontier(FRONTIER), STEP_TOK_T, STEP_LP_T)


def time_step(grow, step, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        state = grow()
        start = time.perf_counter()
        step(state)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.benchmark(group="treebuilder-expand-128x32-budget1024")
def test_bench_ferrolm_treebuilder_step(benchmark):
    benchmark.pedantic(ferrolm_step, setup=lambda: ((ferrolm_grown(),), {}), rounds=200)
    if benchmark.enabled:
        record_ratio(benchmark, time_step(torch_grown, torch_step, 50))
    b = ferrolm_grown()
    ids = ferrolm_step(b)
    assert b.size == BUDGET
    assert (ids >= 0).sum() > 0


@pytest.mark.benchmark(group="treebuilder-expand-128x32-budget1024")
def test_bench_torch_treebuilder_step(benchmark):
    benchmark.pedantic(torch_step, setup=lambda: ((torch_grown(),), {}), rounds=50)
    s = torch_grown()
    torch_step(s)
    assert int(s.alive.sum()) == BUDGET


def ferrolm_after_step() -> speculative.TreeBuilder:
    b = ferrolm_grown()
    ferrolm_step(b)
    return b


def torch_after_step() -> TorchTreeState:
    s = torch_grown()
    torch_step(s)
    return s


@pytest.mark.benchmark(group="treebuilder-finalize-1024")
def test_bench_ferrolm_treebuilder_finalize(benchmark):
    b = ferrolm_after_step()
    tree, _ = benchmark(b.finalize)
    if benchmark.enabled:
        s = torch_after_step()
        record_ratio(benchmark, best_of(s.finalize, 50))
    assert tree.size == BUDGET
    # the torch version keeps the same set (up to ties) and renumbers the same way
    parents_t, tokens_t, _ = torch_after_step().finalize()
    assert len(parents_t) == BUDGET
    assert sorted(tokens_t.tolist()) == sorted(tree.tokens.tolist())


@pytest.mark.benchmark(group="treebuilder-finalize-1024")
def test_bench_torch_treebuilder_finalize(benchmark):
    s = torch_after_step()
    benchmark(s.finalize)


# ----------------------------------------------------------------------------- ancestor mask
MASK_PARENTS = speculative.sequoia_dp(P, 1024, DEPTH).tree(1024, DEPTH).parents
MASK_PARENTS_T = torch.from_numpy(MASK_PARENTS.astype(np.int64))


@pytest.mark.benchmark(group="ancestor-mask-n1024")
def test_bench_ferrolm_ancestor_mask(benchmark):
    mask = benchmark(speculative.ancestor_mask, MASK_PARENTS)
    if benchmark.enabled:
        record_ratio(benchmark, best_of(lambda: torch_ancestor_mask(MASK_PARENTS_T), 50))
    np.testing.assert_array_equal(mask, torch_ancestor_mask(MASK_PARENTS_T).numpy())


@pytest.mark.benchmark(group="ancestor-mask-n1024")
def test_bench_torch_ancestor_mask(benchmark):
    benchmark(torch_ancestor_mask, MASK_PARENTS_T)
