"""Sequoia: the optimal static tree for an acceptance vector, and the hardware-aware planner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ferrolm import _native
from ferrolm.speculative._arrays import (
    check_acceptance,
    check_float,
    check_int,
    float_array,
    int_array,
)
from ferrolm.speculative.tree import Tree

__all__ = [
    "Plan",
    "SequoiaTable",
    "acceptance_vector",
    "draft_level_widths",
    "load_acceptance_vector",
    "plan",
    "sequoia_dp",
    "sequoia_heap",
    "tree_value",
]


def _p(p: Any) -> npt.NDArray[np.float64]:
    return check_acceptance(p, "p")


def _shape_tree(parents: np.ndarray, depth: np.ndarray, rank: np.ndarray) -> Tree:
    return Tree(parents, np.full(len(parents), -1, dtype=np.int32), depth, rank)


class SequoiaTable:
    """A solved Sequoia DP: ``F[n][d]`` for all sizes and depths, and optimal trees on demand.

    Made by :func:`sequoia_dp`.
    """

    def __init__(self, inner: _native.speculative.SequoiaTable) -> None:
        self._inner = inner

    @property
    def max_nodes(self) -> int:
        """Largest size solved."""
        return self._inner.max_nodes

    @property
    def max_depth(self) -> int:
        """Largest depth solved."""
        return self._inner.max_depth

    @property
    def acceptance(self) -> npt.NDArray[np.float64]:
        """The acceptance vector ``p`` the table was solved for."""
        return self._inner.acceptance()

    def value(self, n: int, d: int) -> float:
        """Expected accepted tokens per step (root included, i.e. with the bonus token) of the
        best tree of exactly ``n`` nodes and depth <= ``d``; ``-inf`` if none exists."""
        return self._inner.value(check_int(n, "n", 1), check_int(d, "d", 0))

    def values(self) -> npt.NDArray[np.float64]:
        """``float64 [max_nodes + 1, max_depth + 1]``; row 0 and infeasible cells are ``-inf``."""
        return self._inner.values()

    def tree(self, n: int, d: int) -> Tree:
        """The optimal static shape of exactly ``n`` nodes and depth <= ``d`` (breadth-first).

        ``tokens`` is -1 everywhere; ``rank`` says which draft candidate (0 = the draft's top-1,
        or the first sample) each node takes under its parent.
        """
        parents, depth, rank = self._inner.tree(check_int(n, "n", 1), check_int(d, "d", 0))
        return _shape_tree(parents, depth, rank)


#: Most DP cell steps :func:`sequoia_dp` takes on by default (a few seconds on two cores).
DEFAULT_MAX_WORK = 2**37


def sequoia_dp(
    p: Any, max_nodes: int, max_depth: int, *, max_work: int = DEFAULT_MAX_WORK
) -> SequoiaTable:
    """Solves Sequoia's dynamic program for every size up to ``max_nodes`` and depth up to
    ``max_depth``.

    The solve releases the GIL and stops with ``KeyboardInterrupt`` on Ctrl-C.

    Args:
        p: ``p[k-1]`` = probability that the ``k``-th ranked child is the accepted one.
            Non-negative, summing to at most 1; its length bounds the branching.
        max_nodes: Largest tree size (at most 65536).
        max_depth: Largest depth (root = 0).
        max_work: Refuse problems whose work estimate
            ``max_nodes**2 * min(max_depth, max_nodes) * len(p)`` exceeds this (``ValueError``);
            raise it to solve larger tables on purpose.

    Example:
        >>> t = sequoia_dp([0.6, 0.2, 0.1], max_nodes=16, max_depth=4)
        >>> round(t.value(1, 0), 3), t.tree(4, 2).parents.tolist()
        (1.0, [-1, 0, 0, 1])
    """
    arr = _p(p)
    return SequoiaTable(
        _native.speculative.sequoia_dp(
            arr,
            check_int(max_nodes, "max_nodes", 1),
            check_int(max_depth, "max_depth", 0),
            check_int(max_work, "max_work", 0),
        )
    )


def sequoia_heap(p: Any, n: int, d: int) -> tuple[Tree, npt.NDArray[np.float64]]:
    """The fast path for non-increasing ``p``: the ``n`` largest path products.

    Returns the tree (topological, siblings in rank order) and ``F[1..n][d]`` (``-inf`` past the
    largest feasible size). Equals the DP whenever ``p`` is non-increasing.

    Raises:
        ValueError: ``p`` increases somewhere (use :func:`sequoia_dp`).
    """
    arr = _p(p)
    parents, depth, rank, values = _native.speculative.sequoia_heap(
        arr, check_int(n, "n", 1), check_int(d, "d", 0)
    )
    return _shape_tree(parents, depth, rank), values


def tree_value(p: Any, parents: Any) -> float:
    """Expected accepted tokens per step of any tree under ``p`` (sum of path products)."""
    return _native.speculative.tree_value(_p(p), int_array(parents, "parents"))


@dataclass(frozen=True)
class Plan:
    """The planner's choice: tree size ``n`` and depth ``d`` with their predicted cost."""

    n: int
    d: int
    tokens_per_step: float
    s_per_token: float
    speedup: float


def plan(
    table: SequoiaTable,
    sizes: Any,
    t_verify_s: Any,
    t_draft_s: Any,
    t_autoregressive_s: float | None = None,
    *,
    draft_widths: Any = None,
    t_fixed_s: float = 0.0,
) -> Plan:
    """Picks the tree ``(n, d)`` with the fewest predicted seconds per generated token.

    Simple model (a scalar `t_draft_s`, no `draft_widths`): an iteration costs
    ``d * t_draft_s + t_verify_s(n)`` and yields ``F[n][d]`` tokens.

    Measured model (`draft_widths` given, `t_draft_s` one time per width): an iteration costs
    ``t_fixed_s + sum(t_draft(w) for w in draft_level_widths(table, n, d)) + t_verify_s(n)``,
    the draft cost interpolated between measured widths. This is what a CPU needs, where a
    draft forward over 8 nodes costs much more than over 1. ``(1, 0)`` (no speculation, speedup
    1.0) is chosen when no tree beats plain decoding.

    Args:
        table: From :func:`sequoia_dp`.
        sizes: Tree sizes whose verification time was measured.
        t_verify_s: Seconds of one target forward over ``sizes[i]`` tree tokens.
        t_draft_s: Seconds of one draft step (one tree level), or one per `draft_widths`.
        t_autoregressive_s: Seconds of one plain decoding step; default ``t_verify_s`` of the
            smallest size (exact when 1 is among ``sizes``). Required by the measured model.
        draft_widths: Nodes per draft forward at which `t_draft_s` was measured.
        t_fixed_s: Seconds per iteration outside the model forwards (measured model).

    Example:
        >>> t = sequoia_dp([0.7, 0.1], 64, 8)
        >>> plan(t, [1, 16, 64], [0.010, 0.011, 0.020], 0.001).n
        16
        >>> plan(t, [1, 16, 64], [0.010, 0.011, 0.020], [0.001, 0.004],
        ...      t_autoregressive_s=0.010, draft_widths=[1, 8]).n
        16
    """
    if not isinstance(table, SequoiaTable):
        raise TypeError(f"`table` must be a SequoiaTable, got {type(table).__name__}")
    s = int_array(sizes, "sizes", dtype=np.int64)
    tv = float_array(t_verify_s, "t_verify_s")
    if len(tv) != len(s):
        raise ValueError(f"`t_verify_s` must have {len(s)} entries like `sizes`, got {len(tv)}")
    t_ar = t_autoregressive_s
    if draft_widths is None:
        n, d, tokens, spt, speedup = _native.speculative.plan(
            table._inner,
            s,
            tv,
            check_float(t_draft_s, "t_draft_s"),
            None if t_ar is None else check_float(t_ar, "t_autoregressive_s"),
        )
        return Plan(n, d, tokens, spt, speedup)
    widths = int_array(draft_widths, "draft_widths", dtype=np.int64)
    scalar = isinstance(t_draft_s, (int, float, np.integer, np.floating))
    td = float_array([t_draft_s] if scalar else t_draft_s, "t_draft_s")
    if len(td) != len(widths):
        raise ValueError(
            f"`t_draft_s` must have {len(widths)} entries like `draft_widths`, got {len(td)}"
        )
    if t_ar is None:
        if 1 not in s.tolist():
            raise ValueError(
                "`t_autoregressive_s` is required with `draft_widths` unless 1 is among `sizes`"
            )
        t_ar = float(tv[s.tolist().index(1)])
    n, d, tokens, spt, speedup = _native.speculative.plan_costed(
        table._inner,
        s,
        tv,
        widths,
        td,
        check_float(t_fixed_s, "t_fixed_s"),
        check_float(t_ar, "t_autoregressive_s"),
    )
    return Plan(n, d, tokens, spt, speedup)


def draft_level_widths(table: SequoiaTable, n: int, d: int) -> npt.NDArray[np.int64]:
    """Nodes per draft forward of the optimal ``(n, d)`` tree: 1 (the root), then per level
    ``1..d-1`` the nodes that have children.

    Example:
        >>> draft_level_widths(sequoia_dp([0.8], 5, 4), 5, 4).tolist()
        [1, 1, 1, 1]
    """
    if not isinstance(table, SequoiaTable):
        raise TypeError(f"`table` must be a SequoiaTable, got {type(table).__name__}")
    return _native.speculative.draft_level_widths(
        table._inner, check_int(n, "n", 1), check_int(d, "d", 0)
    )


def acceptance_vector(accepted_ranks: Any, width: int) -> npt.NDArray[np.float64]:
    """Estimates ``p`` from observations.

    Args:
        accepted_ranks: One entry per verified node: the 0-based rank of the child that was
            accepted, or -1 when none was.
        width: Length of ``p``.

    Example:
        >>> acceptance_vector([0, 0, 1, -1], width=2).tolist()
        [0.5, 0.25]
    """
    r = int_array(accepted_ranks, "accepted_ranks", dtype=np.int64)
    return _native.speculative.acceptance_from_ranks(r, check_int(width, "width", 1))


def load_acceptance_vector(path: str | Path) -> npt.NDArray[np.float64]:
    """Reads a whitespace-separated acceptance vector file in Sequoia's format (entry 0 unused)."""
    values = np.array(Path(path).read_text().split(), dtype=np.float64)
    if len(values) < 2:
        raise ValueError(
            f"{path}: expected at least 2 numbers (entry 0 is unused), got {len(values)}"
        )
    return _p(values[1:])
