"""The ``ferrolm demo`` section of Sequoia's DP and planner on the bundled acceptance vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferrolm import speculative
from ferrolm._report import Section
from ferrolm.speculative import load_acceptance_vector, plan, sequoia_dp, sequoia_heap
from ferrolm.testing.speculative import numpy_sequoia_dp
from ferrolm.testing.timing import best_of

ACCEPTANCE_FILE = Path(speculative.__file__).with_name("sequoia_acceptance_vector.txt")


def demo_section() -> Section:
    """Sequoia DP + planner on the Sequoia acceptance vector, ferrolm vs NumPy."""
    p = load_acceptance_vector(ACCEPTANCE_FILE)
    s = Section(
        f"Speculative decoding: Sequoia DP on the bundled acceptance vector ({len(p)} ranks)",
        ["item", "ferrolm (ms)", "NumPy (ms)", "speedup", "result"],
    )
    t_np = best_of(lambda: numpy_sequoia_dp(p, 256, 10), repeats=1)
    t_small = best_of(lambda: sequoia_dp(p, 256, 10), repeats=5)
    small = sequoia_dp(p, 256, 10)
    same = bool(np.array_equal(small.values(), numpy_sequoia_dp(p, 256, 10)))
    s.add(
        "DP n=256, D=10",
        t_small * 1e3,
        t_np * 1e3,
        t_np / t_small,
        f"F[256][10] = {small.value(256, 10):.3f}; tables bit-identical: {same}",
    )
    t_big = best_of(lambda: sequoia_dp(p, 1024, 10), repeats=3)
    table = sequoia_dp(p, 1024, 10)
    s.add(
        "DP n=1024, D=10",
        t_big * 1e3,
        None,
        None,
        f"F[1024][10] = {table.value(1024, 10):.3f} tokens/step",
    )
    for n, d in ((16, 4), (64, 6), (256, 10)):
        tree = table.tree(n, d)
        widths = np.bincount(tree.parents[1:], minlength=tree.size)
        s.add(
            f"optimal tree n={n}, d={d}",
            None,
            None,
            None,
            f"F = {table.value(n, d):.3f}; root children {int(widths[0])}, "
            f"depth {tree.depth.max()}",
        )
    sorted_p = np.sort(p)[::-1]
    _, heap_values = sequoia_heap(sorted_p, 1024, 10)
    dp_sorted = sequoia_dp(sorted_p, 1024, 10).values()[1:, 10]
    s.add(
        "heap fast path (p sorted)",
        best_of(lambda: sequoia_heap(sorted_p, 1024, 10), repeats=3) * 1e3,
        None,
        None,
        f"max |heap - DP| over n = {np.max(np.abs(heap_values - dp_sorted)):.1e}",
    )
    sizes = np.array([1, 16, 32, 64, 128, 256, 512, 1024])
    t_verify = 0.025 + 2e-5 * sizes  # illustrative cost model, not a measurement
    best = plan(table, sizes, t_verify, t_draft_s=0.004)
    s.add(
        "planner (illustrative costs)",
        None,
        None,
        None,
        f"n={best.n}, d={best.d}: {best.tokens_per_step:.2f} tokens/step, "
        f"predicted speedup {best.speedup:.2f}x",
    )
    s.notes.append(
        "NumPy baseline: the same recurrence vectorised over the split (one np.max per cell); "
        "timed once after a warm-up. Planner costs: t_verify(n) = 25 ms + 20 us * n, "
        "t_draft = 4 ms per level (a made-up model to show the API)."
    )
    return s
