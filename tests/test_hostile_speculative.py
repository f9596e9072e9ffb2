"""Hostile input to ferrolm.speculative (issue 16): every reproducer gives the right exception
class naming the argument, with no abort, no hang, under 5 s and 1 GB each.

The reproducers that used to abort the process run in a child process
(:func:`ferrolm.testing.isolated.run_probes`), so a regression fails these tests instead of
killing pytest.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ferrolm import _native, speculative
from ferrolm.testing.isolated import interrupt_after, run_probes

SETUP = """
import numpy as np, torch
import ferrolm.speculative as spec

def grow(budget, steps=40, width=32):
    # A huge budget is only a ceiling: the tree grows past the initial room as rows arrive.
    b = spec.TreeBuilder(0, budget=budget, max_width=width, max_depth=64)
    for _ in range(steps):
        f = b.frontier(16)
        toks = np.arange(len(f) * width, dtype=np.int32).reshape(len(f), width) % width + 1
        lps = np.tile(-0.01 * np.arange(1, width + 1, dtype=np.float32), (len(f), 1))
        b.expand(f, toks, lps)
    assert b.size > 4096, b.size
"""

PROBES = {
    "tree_builder_huge_budget": "spec.TreeBuilder(0, budget=2**31 - 1)",
    "batch_builder_huge_budget": "spec.BatchTreeBuilder([0] * 64, budget=2**26)",
    "acceptance_vector_huge_width": "spec.acceptance_vector([0], width=2**40)",
    "ancestor_mask_200k_chain": "spec.ancestor_mask(np.arange(-1, 199_999, dtype=np.int32))",
    "ancestor_mask_batch_huge": (
        "spec.ancestor_mask_batch(np.arange(-1, 199_999, dtype=np.int32), [0, 200_000])"
    ),
    "children_table_star": (
        "spec.children_table(np.r_[-1, np.zeros(150_000, dtype=np.int32)].astype(np.int32))"
    ),
    "sequoia_dp_over_work": "spec.sequoia_dp([0.6, 0.2], 65536, 600)",
    "builder_grows_past_initial_room": "grow(2**31 - 1)",
}

#: (probe, exception class or None, words the message must hold)
EXPECTED = {
    "tree_builder_huge_budget": (None, []),
    "batch_builder_huge_budget": (None, []),
    "acceptance_vector_huge_width": ("MemoryError", ["`width`", "8796093022208 bytes"]),
    "ancestor_mask_200k_chain": ("MemoryError", ["`parents`", "40000000000 bytes"]),
    "ancestor_mask_batch_huge": ("MemoryError", ["`parents`", "bytes"]),
    "children_table_star": ("MemoryError", ["`parents`", "children table"]),
    "sequoia_dp_over_work": ("ValueError", ["`max_work`", "5153960755200"]),
    "builder_grows_past_initial_room": (None, []),
}


@pytest.fixture(scope="module")
def probes():
    return run_probes(SETUP, PROBES)


@pytest.mark.parametrize("name", list(PROBES))
def test_reproducer_is_a_clean_exception_within_5_s_and_1_gb(probes, name):
    exc, words = EXPECTED[name]
    got = probes[name]
    assert got.exc == exc, f"{name}: {got.exc}: {got.msg}"
    for w in words:
        assert w in got.msg, f"{name}: {got.msg}"
    assert got.seconds < 5, f"{name} took {got.seconds:.1f} s"
    assert got.grown_bytes < 1 << 30, f"{name} grew the process by {got.grown_bytes} bytes"


def test_the_alloc_limit_can_be_lowered_and_raised():
    import ferrolm

    before = ferrolm.alloc_limit()
    assert before == 16 << 30
    try:
        assert ferrolm.set_alloc_limit(1 << 20) == before
        with pytest.raises(MemoryError, match=r"`parents` needs 4000000 bytes.*limit of 1048576"):
            speculative.ancestor_mask(np.arange(-1, 1999, dtype=np.int32))
        ferrolm.set_alloc_limit(8 << 20)
        assert speculative.ancestor_mask(np.arange(-1, 1999, dtype=np.int32)).shape == (2000, 2000)
        with pytest.raises(ValueError, match="`bytes`"):
            ferrolm.set_alloc_limit(-1)
    finally:
        ferrolm.set_alloc_limit(before)


def test_sequoia_dp_takes_more_work_when_asked():
    with pytest.raises(ValueError, match="max_work"):
        speculative.sequoia_dp([0.6, 0.2], 64, 8, max_work=64 * 64 * 8 * 2 - 1)
    table = speculative.sequoia_dp([0.6, 0.2], 64, 8, max_work=64 * 64 * 8 * 2)
    assert table.values().shape == (65, 9)


def test_ctrl_c_interrupts_the_sequoia_dp_within_5_s():
    # Far more than the default work (about a minute here): only Ctrl-C ends it early.
    code = (
        "import time, ferrolm.speculative as spec\n"
        "print('ready', flush=True)\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    spec.sequoia_dp([0.6, 0.2], 16384, 600, max_work=2**62)\n"
        "    print('finished', time.perf_counter() - t)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', time.perf_counter() - t)\n"
    )
    last, after_signal = interrupt_after(code, 1.0)
    assert last.startswith("KeyboardInterrupt"), last
    assert after_signal < 5, f"exited {after_signal:.1f} s after SIGINT"


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: speculative.position_ids(np.array([-1, 0], np.int32), 2**63 - 1), "past_len"),
        (lambda: speculative.kv_compaction(np.array([0, 2], np.int32), 2**63 - 2), "past_len"),
        (lambda: speculative.remap_compaction(np.array([0, 1], np.int32), 2**63 - 1), "past_len"),
    ],
)
def test_positions_near_int64_max_are_refused_not_wrapped(call, arg):
    with pytest.raises(ValueError, match=f"`{arg}` must be at most"):
        call()


def test_positions_at_the_edge_are_exact():
    top = 2**63 - 1
    assert speculative.position_ids(np.array([-1, 0], np.int32), top - 1).tolist() == [
        top - 1,
        top,
    ]
    src, dst = speculative.kv_compaction(np.array([0, 2], np.int32), top - 2)
    assert (src.tolist(), dst.tolist()) == ([top], [top - 1])


def test_choose_greedy_refuses_a_nan_logit():
    logits = torch.tensor([[0.1, 2.0], [float("nan"), 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"`target_logits` must hold no NaN, got one in row 1"):
        speculative.choose_greedy(logits)
    assert speculative.choose_greedy(logits[[0, 2]]).tolist() == [1, 0]


@pytest.mark.parametrize(
    ("kwargs", "arg", "cls"),
    [
        ({"acceptance": [0.5, math.nan]}, "acceptance", ValueError),
        ({"acceptance": [0.5, -0.1]}, "acceptance", ValueError),
        ({"acceptance": [0.9, 0.5]}, "acceptance", ValueError),
        ({"max_draft_steps": -1}, "max_draft_steps", ValueError),
        ({"max_draft_steps": 0}, "max_draft_steps", ValueError),
        ({"expand_per_step": -5}, "expand_per_step", ValueError),
        ({"max_draft_steps": 2.5}, "max_draft_steps", TypeError),
        ({"tree_shape": (0, 3)}, "tree_shape[0]", ValueError),
        ({"tree_shape": 5}, "tree_shape", TypeError),
    ],
)
def test_generator_arguments_are_checked_before_the_models(kwargs, arg, cls):
    # The models are not even looked at: a bad plain argument is reported first.
    with pytest.raises(cls, match=f"`{arg.replace('[', '.').replace(']', '.')}`"):
        speculative.SpeculativeGenerator(None, None, **kwargs)


P = np.array([0.6, 0.2])
PARENTS = np.array([-1, 0], np.int32)
ROOTS = np.zeros(2, np.int32)
NATIVE_INT_ARGS = [
    ("budget", lambda v: _native.speculative.TreeBuilder(0, v)),
    ("root_token", lambda v: _native.speculative.TreeBuilder(v, 4)),
    ("max_depth", lambda v: _native.speculative.TreeBuilder(0, 4, v)),
    ("max_width", lambda v: _native.speculative.BatchTreeBuilder(ROOTS, 4, 2, v)),
    ("k", lambda v: _native.speculative.TreeBuilder(0, 4).frontier(v)),
    ("k", lambda v: _native.speculative.BatchTreeBuilder(ROOTS, 4).frontier(v)),
    ("past_len", lambda v: _native.speculative.position_ids(PARENTS, v)),
    ("past_len", lambda v: _native.speculative.kv_compaction(np.zeros(1, np.int32), v)),
    ("past_len", lambda v: _native.speculative.remap_compaction(np.zeros(1, np.int32), v)),
    ("max_nodes", lambda v: _native.speculative.sequoia_dp(P, v, 2)),
    ("max_depth", lambda v: _native.speculative.sequoia_dp(P, 4, v)),
    ("max_work", lambda v: _native.speculative.sequoia_dp(P, 4, 2, v)),
    ("n", lambda v: _native.speculative.sequoia_heap(P, v, 2)),
    ("d", lambda v: _native.speculative.sequoia_heap(P, 4, v)),
    ("n", lambda v: _native.speculative.sequoia_dp(P, 4, 2).value(v, 1)),
    ("d", lambda v: _native.speculative.sequoia_dp(P, 4, 2).tree(2, v)),
    ("width", lambda v: _native.speculative.acceptance_from_ranks(np.zeros(1, np.int64), v)),
    ("budget", lambda v: speculative.TreeBuilder(0, budget=v)),
    ("max_nodes", lambda v: speculative.sequoia_dp(P, v, 2)),
    ("past_len", lambda v: speculative.position_ids(PARENTS, v)),
    ("width", lambda v: speculative.acceptance_vector([0], width=v)),
]


@pytest.mark.parametrize(("arg", "call"), NATIVE_INT_ARGS)
@pytest.mark.parametrize("value", [2**64, 2**70, -(2**70)])
def test_integers_over_64_bits_name_the_argument_and_the_range(arg, call, value):
    with pytest.raises(ValueError, match=f"`{arg}`") as info:
        call(value)
    message = str(info.value)
    assert f"`{arg}`" in message, message
    assert str(value) in message, message
    assert any(r in message for r in ("in [", ">=", "at most")), message
