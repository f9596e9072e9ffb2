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
    t_draft_s: float,
    t_autoregressive_s: float | None = None,
) -> Plan:
    """Picks ``(n, d)`` minimising ``(d * t_draft_s + t_verify_s(n)) / F[n][d]``.

    Args:
        table: From :func:`sequoia_dp`.
        sizes: Tree sizes whose verification time was measured.
        t_verify_s: Seconds of one target forward over ``sizes[i]`` tree tokens.
        t_draft_s: Seconds of one draft step (one tree level).
        t_autoregressive_s: Seconds of one plain decoding step; default ``t_verify_s`` of the
            smallest size (exact when 1 is among ``sizes``).

    Example:
        >>> t = sequoia_dp([0.7, 0.1], 64, 8)
        >>> plan(t, [1, 16, 64], [0.010, 0.011, 0.020], 0.001).n
        16
    """
    if not isinstance(table, SequoiaTable):
        raise TypeError(f"`table` must be a SequoiaTable, got {type(table).__name__}")
    s = int_array(sizes, "sizes", dtype=np.int64)
    tv = float_array(t_verify_s, "t_verify_s")
    if len(tv) != len(s):
        raise ValueError(f"`t_verify_s` must have {len(s)} entries like `sizes`, got {len(tv)}")
    t_ar = t_autoregressive_s
    n, d, tokens, spt, speedup = _native.speculative.plan(
        table._inner,
        s,
        tv,
        check_float(t_draft_s, "t_draft_s"),
        None if t_ar is None else check_float(t_ar, "t_autoregressive_s"),
    )
    return Plan(n, d, tokens, spt, speedup)


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
