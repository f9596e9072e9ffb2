"""SpecExec best-first draft-tree growth under a node budget."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ferrolm import _native
from ferrolm.speculative._arrays import check_float, check_int, float_array, int_array
from ferrolm.speculative.tree import Tree

__all__ = ["BatchTreeBuilder", "TreeBuilder"]


def _limits(
    budget: int, max_depth: int, max_width: int, log_decay: float, min_logprob: float
) -> tuple[int, int, int, float, float]:
    """The limits as the native builders take them. Checks only the types here; the Rust core
    checks the ranges, in one wording."""
    check_int(budget, "budget")
    check_int(max_depth, "max_depth")
    check_int(max_width, "max_width")
    for value, arg in ((log_decay, "log_decay"), (min_logprob, "min_logprob")):
        if not isinstance(value, (int, float)):
            raise ValueError(f"`{arg}` must be a float, got {type(value).__name__}")
    decay, floor = check_float(log_decay, "log_decay"), check_float(min_logprob, "min_logprob")
    return int(budget), int(max_depth), int(max_width), decay, floor


def _children(child_tokens: Any, child_logprobs: Any, m: int) -> tuple[np.ndarray, np.ndarray]:
    tok = int_array(child_tokens, "child_tokens", ndim=2)
    lp = float_array(child_logprobs, "child_logprobs", ndim=2, dtype=np.float32)
    if tok.shape != lp.shape:
        raise ValueError(
            f"`child_logprobs` must have the shape of `child_tokens` {tok.shape}, got {lp.shape}"
        )
    if tok.shape[0] != m:
        raise ValueError(f"`child_tokens` must have {m} rows (one per parent), got {tok.shape[0]}")
    return tok, lp


def _tree(parts: tuple[np.ndarray, ...]) -> tuple[Tree, npt.NDArray[np.int32]]:
    parents, tokens, depth, rank, _score, old_to_new = parts
    return Tree(parents, tokens, depth, rank), old_to_new


class TreeBuilder:
    """SpecExec best-first growth of one draft tree under a node budget.

    Nodes get ids in insertion order ("old ids"); the root is id 0 with score 0. A child scores
    ``score(parent) + log_decay + logprob``; only the running top-``budget`` nodes are kept
    (scores fall along every path, so the kept set is always a tree).

    Args:
        root_token: Token of the root (the last committed token).
        budget: Most nodes in the tree, root included.
        max_depth: Deepest node (root = 0).
        max_width: Most children kept per node.
        log_decay: Per-level score penalty (<= 0).
        min_logprob: Early stop: nodes scoring below this are never kept.

    Example:
        >>> import numpy as np
        >>> b = TreeBuilder(root_token=1, budget=3)
        >>> b.expand(b.frontier(1), np.array([[5, 6]]), np.log([[0.7, 0.2]])).tolist()
        [[1, 2]]
        >>> tree, old_to_new = b.finalize()
        >>> tree.tokens.tolist()
        [1, 5, 6]
    """

    def __init__(
        self,
        root_token: int,
        budget: int,
        max_depth: int = 16,
        max_width: int = 8,
        log_decay: float = 0.0,
        min_logprob: float = -math.inf,
    ) -> None:
        check_int(root_token, "root_token")
        limits = _limits(budget, max_depth, max_width, log_decay, min_logprob)
        self._inner = _native.speculative.TreeBuilder(int(root_token), *limits)

    @property
    def size(self) -> int:
        """Nodes currently in the tree, root included."""
        return self._inner.size

    @property
    def num_inserted(self) -> int:
        """Nodes ever inserted: the length of the old-to-new map."""
        return self._inner.num_inserted

    @property
    def done(self) -> bool:
        """True when no node can grow any more (the frontier is empty)."""
        return self._inner.done()

    def frontier(self, k: int) -> npt.NDArray[np.int32]:
        """Up to ``k`` best unexpanded nodes (old ids, best first) whose children could still
        enter the tree; empty when growth is over."""
        return self._inner.frontier(check_int(k, "k", 0))

    def expand(
        self, parent_ids: Any, child_tokens: Any, child_logprobs: Any
    ) -> npt.NDArray[np.int32]:
        """Inserts draft children of ``parent_ids``.

        Args:
            parent_ids: ``[m]`` old ids, each expanded at most once.
            child_tokens: ``[m, w]`` distinct tokens per row.
            child_logprobs: ``[m, w]`` draft log-probs (<= 0; ``-inf`` = never kept; NaN raises),
                in any order: the builder ranks them. Torch tensors on any device are accepted.

        Returns:
            ``int32 [m, w]``: new old id of each child, or -1 where it was not kept.
        """
        parents = int_array(parent_ids, "parent_ids")
        tok, lp = _children(child_tokens, child_logprobs, len(parents))
        return self._inner.expand(parents, tok, lp)

    def finalize(self) -> tuple[Tree, npt.NDArray[np.int32]]:
        """The kept tree renumbered breadth-first (siblings in rank order) and ``old_to_new``
        (``int32 [num_inserted]``, -1 for dropped nodes)."""
        return _tree(self._inner.finalize())

    def scores(self) -> npt.NDArray[np.float32]:
        """Scores of the finalized tree's nodes (same order as :meth:`finalize`)."""
        return self._inner.finalize()[4]


class BatchTreeBuilder:
    """``B`` independent :class:`TreeBuilder` driven together (expansions run in parallel).

    Example:
        >>> import numpy as np
        >>> b = BatchTreeBuilder([1, 2], budget=4)
        >>> trees, nodes = b.frontier(1)
        >>> _ = b.expand(trees, nodes, np.array([[3], [4]]), np.log([[0.5], [0.9]]))
        >>> [t.tokens.tolist() for t, _ in b.finalize()]
        [[1, 3], [2, 4]]
    """

    def __init__(
        self,
        root_tokens: Any,
        budget: int,
        max_depth: int = 16,
        max_width: int = 8,
        log_decay: float = 0.0,
        min_logprob: float = -math.inf,
    ) -> None:
        roots = int_array(root_tokens, "root_tokens")
        if len(roots) == 0:
            raise ValueError("`root_tokens` must hold at least one token, got none")
        if roots.min() < 0:
            raise ValueError(f"`root_tokens` must be token ids >= 0, got {roots.min()}")
        limits = _limits(budget, max_depth, max_width, log_decay, min_logprob)
        self._inner = _native.speculative.BatchTreeBuilder(roots, *limits)

    @property
    def sizes(self) -> list[int]:
        """Kept nodes per tree."""
        return self._inner.sizes

    @property
    def done(self) -> bool:
        """True when every tree is done."""
        return self._inner.done()

    def frontier(self, k: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """``(tree_ids, node_ids)`` of up to ``k`` frontier nodes per tree."""
        return self._inner.frontier(check_int(k, "k", 0))

    def expand(
        self, tree_ids: Any, parent_ids: Any, child_tokens: Any, child_logprobs: Any
    ) -> npt.NDArray[np.int32]:
        """Like :meth:`TreeBuilder.expand`, row ``r`` going to tree ``tree_ids[r]``; nothing
        changes if any row is invalid."""
        trees = int_array(tree_ids, "tree_ids")
        parents = int_array(parent_ids, "parent_ids")
        if len(trees) != len(parents):
            raise ValueError(
                f"`tree_ids` must have {len(parents)} entries like `parent_ids`, got {len(trees)}"
            )
        tok, lp = _children(child_tokens, child_logprobs, len(parents))
        return self._inner.expand(trees, parents, tok, lp)

    def finalize(self) -> list[tuple[Tree, npt.NDArray[np.int32]]]:
        """One ``(tree, old_to_new)`` per tree."""
        return [_tree(parts) for parts in self._inner.finalize()]
