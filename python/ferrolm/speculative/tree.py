"""The draft-tree format and the helpers a model loop needs around it.

A tree of ``n`` nodes is a ``parents`` array: node 0 is the root (the last committed token, not
yet in the KV cache), ``parents[0] = -1``, ``0 <= parents[i] < i`` (topological), and siblings
appear in rank order (best first). Batches concatenate trees with CSR ``offsets``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ferrolm import _native
from ferrolm.speculative._arrays import check_int, int_array

__all__ = [
    "Tree",
    "ancestor_mask",
    "ancestor_mask_batch",
    "children_table",
    "kv_compaction",
    "leaf_paths",
    "position_ids",
    "remap_compaction",
    "validate_parents",
    "walk",
    "walk_batch",
]

Int32Array = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Tree:
    """A draft tree.

    Attributes:
        parents: ``int32 [n]``, ``parents[0] = -1``, ``parents[i] < i``.
        tokens: ``int32 [n]``; ``-1`` where not filled yet (Sequoia static shapes).
        depth: ``int32 [n]``, ``depth[0] = 0``.
        rank: ``int32 [n]``: index among siblings (0 = best), ``rank[0] = 0``.

    Example:
        >>> t = Tree.from_parents([-1, 0, 0, 1], tokens=[5, 7, 8, 9])
        >>> t.size, t.depth.tolist(), t.rank.tolist()
        (4, [0, 1, 1, 2], [0, 0, 1, 0])
    """

    parents: Int32Array
    tokens: Int32Array
    depth: Int32Array
    rank: Int32Array

    @property
    def size(self) -> int:
        """Number of nodes."""
        return len(self.parents)

    @classmethod
    def from_parents(cls, parents: Any, tokens: Any | None = None) -> Tree:
        """Builds a tree from ``parents`` (validated), computing depth and rank.

        Raises:
            ValueError: ``parents`` is empty, has a second root, a cycle, an index out of range
                or a parent after its child; ``tokens`` has the wrong length.
        """
        p = int_array(parents, "parents")
        depth = _native.speculative.depths(p)
        rank = _native.speculative.ranks(p)
        if tokens is None:
            tok = np.full(len(p), -1, dtype=np.int32)
        else:
            tok = int_array(tokens, "tokens")
            if len(tok) != len(p):
                raise ValueError(
                    f"`tokens` must have {len(p)} entries like `parents`, got {len(tok)}"
                )
        return cls(p, tok, depth, rank)


def validate_parents(parents: Any) -> None:
    """Raises ``ValueError`` naming the broken node unless ``parents`` is a valid tree."""
    _native.speculative.validate_parents(int_array(parents, "parents"))


def ancestor_mask(parents: Any) -> npt.NDArray[np.bool_]:
    """``bool [n, n]`` with ``mask[i, j]`` True iff ``j`` is ``i`` or an ancestor of ``i``.

    Built from bitsets in Rust. Turn it into an additive attention mask with
    ``torch.where(torch.from_numpy(mask), 0.0, float("-inf"))``.

    Example:
        >>> ancestor_mask([-1, 0, 0]).astype(int).tolist()
        [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    """
    return _native.speculative.ancestor_mask(int_array(parents, "parents"))


def _offsets(offsets: Any) -> Int64Array:
    return int_array(offsets, "offsets", dtype=np.int64)


def ancestor_mask_batch(parents: Any, offsets: Any) -> npt.NDArray[np.bool_]:
    """Masks of a CSR batch of trees, ``bool [B, m, m]`` padded with False (``m`` = largest)."""
    return _native.speculative.ancestor_mask_batch(int_array(parents, "parents"), _offsets(offsets))


def position_ids(parents: Any, past_len: int) -> Int64Array:
    """``int64 [n]`` position ids ``past_len + depth``."""
    past = check_int(past_len, "past_len", 0)
    return _native.speculative.position_ids(int_array(parents, "parents"), past)


def walk(parents: Any, tokens: Any, choice: Any) -> tuple[Int32Array, int]:
    """Descends from the root while a child carries the token the target chose.

    Args:
        parents: The tree.
        tokens: ``[n]`` token of every node.
        choice: ``int64 [n]``: the token the target picks after each node (greedy argmax, a
            target sample, or a Sequoia/SpecInfer outcome).

    Returns:
        ``(path, bonus)``: node ids from 0 to the last accepted node, and ``choice[path[-1]]``.
        The new tokens are ``tokens[path[1:]]`` followed by ``bonus``.

    Example:
        >>> path, bonus = walk([-1, 0, 0], [1, 5, 6], [6, 0, 9])
        >>> path.tolist(), bonus
        ([0, 2], 9)
    """
    return _native.speculative.walk(
        int_array(parents, "parents"),
        int_array(tokens, "tokens"),
        int_array(choice, "choice", dtype=np.int64),
    )


def walk_batch(
    parents: Any, offsets: Any, tokens: Any, choice: Any
) -> tuple[Int32Array, Int64Array, Int64Array]:
    """:func:`walk` over a CSR batch: ``(paths, path_offsets, bonus)`` with local node ids."""
    return _native.speculative.walk_batch(
        int_array(parents, "parents"),
        _offsets(offsets),
        int_array(tokens, "tokens"),
        int_array(choice, "choice", dtype=np.int64),
    )


def children_table(parents: Any) -> Int32Array:
    """``int32 [n, k]``: children of each node in rank order, padded with -1."""
    return _native.speculative.children_table(int_array(parents, "parents"))


def kv_compaction(path: Any, past_len: int) -> tuple[Int64Array, Int64Array]:
    """Cache positions ``(src, dst)`` that move the accepted ``path`` into place.

    The tree sits at ``past_len + node``; after acceptance, node ``path[k]`` belongs at
    ``past_len + k``. Only moving entries are returned; ``src > dst`` everywhere, so
    ``cache[..., dst, :] = cache[..., src, :]`` is safe in place.
    """
    return _native.speculative.kv_compaction(
        int_array(path, "path"), check_int(past_len, "past_len", 0)
    )


def remap_compaction(old_to_new: Any, past_len: int) -> tuple[Int64Array, Int64Array]:
    """``(src, dst)`` that compact a cache laid out by builder ids to the finalized tree."""
    return _native.speculative.remap_compaction(
        int_array(old_to_new, "old_to_new"), check_int(past_len, "past_len", 0)
    )


def leaf_paths(parents: Any) -> Int32Array:
    """EAGLE-style retrieval indices: ``int32 [leaves, max_depth + 1]``, root-to-leaf, -1 padded."""
    return _native.speculative.leaf_paths(int_array(parents, "parents"))
