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
from ferrolm._optional import is_tensor
from ferrolm.speculative._arrays import check_int, int_array

__all__ = [
    "Tree",
    "ancestor_mask",
    "ancestor_mask_batch",
    "ancestors",
    "children_by_rank",
    "children_table",
    "forest_children_table",
    "kv_compaction",
    "leaf_paths",
    "position_ids",
    "remap_compaction",
    "restrict",
    "subtree",
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


def forest_children_table(parents: Any, offsets: Any | None = None) -> Int32Array:
    """``int32 [n, k]`` children (global ids, rank order, -1 padded) of one tree or a CSR batch.

    Example:
        >>> forest_children_table([-1, 0, -1, 0, 0], [0, 2, 5]).tolist()
        [[1, -1], [-1, -1], [3, 4], [-1, -1], [-1, -1]]
    """
    p = int_array(parents, "parents")
    if offsets is None:
        return _native.speculative.children_table(p)
    return _native.speculative.children_table_batch(p, _offsets(offsets))


def children_by_rank(parents: Any, rank: Any) -> tuple[Int64Array, Int32Array]:
    """Children of every node ordered by ``rank`` (ties by id) as CSR ``(offsets, children)``.

    The children of node ``i`` are ``children[offsets[i]:offsets[i + 1]]``.

    Example:
        >>> offsets, children = children_by_rank([-1, 0, 0, 0], [0, 2, 0, 1])
        >>> offsets.tolist(), children.tolist()
        ([0, 3, 3, 3, 3], [2, 3, 1])
    """
    return _native.speculative.children_by_rank(
        int_array(parents, "parents"), int_array(rank, "rank")
    )


def ancestors(parents: Any, nodes: Any) -> tuple[Int64Array, Int32Array]:
    """Proper ancestors of each of ``nodes``, nearest first (root last), as CSR.

    Returns:
        ``(offsets, ancestors)``: the ancestors of ``nodes[k]`` are
        ``ancestors[offsets[k]:offsets[k + 1]]``.

    Example:
        >>> offsets, anc = ancestors([-1, 0, 0, 1], [3, 0])
        >>> offsets.tolist(), anc.tolist()
        ([0, 2, 2], [1, 0])
    """
    return _native.speculative.ancestors(int_array(parents, "parents"), int_array(nodes, "nodes"))


def restrict(parents: Any, keep: Any) -> tuple[Int32Array, Int32Array]:
    """The subtree of the root and the kept nodes whose ancestors are all kept.

    Args:
        parents: The tree.
        keep: ``bool [n]``; ``keep[0]`` is ignored (the root is always kept).

    Returns:
        ``(old, sub_parents)``: the kept node ids in increasing order and the subtree's parents
        (node ``k`` of the subtree is node ``old[k]``).

    Example:
        >>> old, sub = restrict([-1, 0, 0, 1, 2], [True, False, True, True, True])
        >>> old.tolist(), sub.tolist()
        ([0, 2, 4], [-1, 0, 1])
    """
    p = int_array(parents, "parents")
    k = np.asarray(keep.detach().cpu().numpy() if is_tensor(keep) else keep)
    if k.dtype != np.bool_ or k.ndim != 1:
        raise TypeError(f"`keep` must be a 1-D bool array, got dtype {k.dtype} shape {k.shape}")
    return _native.speculative.restrict(p, np.ascontiguousarray(k))


def subtree(tree: Tree, keep: Any) -> tuple[Tree, Int64Array]:
    """:func:`restrict` applied to a :class:`Tree`: ``(subtree, old ids)``.

    Tokens, depths and ranks are carried over from the kept nodes (a rank keeps its value even
    when a better-ranked sibling was dropped). Returns ``tree`` itself when every node is kept.

    Example:
        >>> t = Tree.from_parents([-1, 0, 0, 1], tokens=[5, 7, 8, 9])
        >>> sub, old = subtree(t, t.depth <= 1)
        >>> sub.parents.tolist(), sub.tokens.tolist(), old.tolist()
        ([-1, 0, 0], [5, 7, 8], [0, 1, 2])
    """
    old32, parents = restrict(tree.parents, keep)
    old = old32.astype(np.int64)
    if len(old) == tree.size:
        return tree, old
    return Tree(parents, tree.tokens[old], tree.depth[old], tree.rank[old]), old
