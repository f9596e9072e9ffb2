"""Draft-tree growth on the draft model's ragged cache: SpecExec (best-first) and static trees.

Both drafters first run each row's committed tokens the draft has not seen (ending with the
root, the last committed token), then append blocks of tree nodes after them; every node sees the
committed prefix and its own already-run ancestors only. A drafter returns one :class:`Draft`
per row: the tree and the draft-cache slot of every node it ran.

* :class:`SpecExecDrafter` grows a best-first tree under a node budget (``TreeBuilder``).
* :class:`StaticDrafter` fills a fixed shape (Sequoia's optimal tree, or a chain) level by
  level with the draft's top-ranked tokens (greedy) or an ordered sample without replacement.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import numpy.typing as npt
import torch

from ferrolm.speculative.builder import TreeBuilder
from ferrolm.speculative.kv_cache import RaggedKVCache, attend_prefix, chain_block
from ferrolm.speculative.rows import Row
from ferrolm.speculative.sampling import Warp, draft_logprobs, gumbel_order
from ferrolm.speculative.stats import GenerationStats
from ferrolm.speculative.tree import Tree, ancestors, children_by_rank, subtree

__all__ = ["DRAFT_WEIGHTS", "Draft", "Drafter", "RootDrafter", "SpecExecDrafter", "StaticDrafter"]

#: ``draft_weights`` option -> the weights ferrolm's kernel reads for the draft's Linear layers
#: (None: the draft's own).
DRAFT_WEIGHTS: dict[Optional[str], Optional[torch.dtype]] = {
    None: None,
    "float32": None,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
}

Int64Array = npt.NDArray[np.int64]
#: Per row: CSR ``(offsets [k + 1], cache slots)`` of the ancestors each new node attends to.
AncestorSlots = tuple[Int64Array, Int64Array]


@dataclass
class Draft:
    """One row's drafted tree plus where its nodes' draft keys/values sit.

    Attributes:
        tree: the draft tree; node 0 is the row's last committed token.
        slots: int64 ``[n]``: draft-cache slot of each node, -1 if the draft never ran it.
        draft_probs: ``[n, V]`` warped draft probabilities the children were sampled from
            (static trees under sampling), zero rows where nothing was sampled.
    """

    tree: Tree
    slots: Int64Array
    draft_probs: Optional[torch.Tensor] = None


@dataclass
class Drafter(ABC):
    """What both drafters share: the depth cap, the pending chain, and one block of nodes.

    Attributes:
        vocab_size: output tokens of the draft (equal to the target's).
        max_depth: deepest draft token.
        warp: the sampling setting, or None for greedy.
        generator: random source for sampled trees.
    """

    vocab_size: int
    max_depth: int
    warp: Optional[Warp]
    generator: Optional[torch.Generator]

    @abstractmethod
    def draft(
        self, rows: list[Row], kv: RaggedKVCache, pad: int, stats: GenerationStats
    ) -> list[Draft]:
        """Grows one tree per row on the draft cache ``kv``."""

    def depth_cap(self, row: Row) -> int:
        """Deepest useful draft token for ``row``.

        No point drafting past the tokens still wanted (the bonus token adds one); this also
        keeps every position inside the context the generator checked.
        """
        return max(0, min(self.max_depth, row.max_new - row.generated - 1))

    def run_pending(
        self, rows: list[Row], kv: RaggedKVCache, pad: int, stats: GenerationStats
    ) -> tuple[torch.Tensor, Int64Array]:
        """Runs each row's committed tokens the draft has not seen (ending with the root).

        Returns:
            the root logits ``[B, V]`` and the root slots ``[B]``.
        """
        chains = [r.tokens[r.draft_cached :] for r in rows]
        ids, pos, block, width = chain_block(chains, [r.draft_cached for r in rows], pad)
        length = kv.length
        attend = attend_prefix(kv.valid, width)
        attend[:, :, length:] = torch.from_numpy(block)
        logits = kv.forward(ids, pos, attend, keep_last=1)[:, 0]
        stats.draft_forwards += 1
        for b, chain in enumerate(chains):
            kv.valid[b, length + width - len(chain) : length + width] = True
            rows[b].draft_cached += len(chain)
        root_slots = np.full(len(rows), length + width - 1, dtype=np.int64)
        return logits, root_slots

    def run_nodes(
        self,
        kv: RaggedKVCache,
        tokens: list[Int64Array],
        positions: list[Int64Array],
        ancestor_slots: list[AncestorSlots],
        pad: int,
        stats: GenerationStats,
    ) -> tuple[torch.Tensor, list[Int64Array]]:
        """One draft forward over mutually unrelated tree nodes per row.

        Each node sees the committed prefix and the slots of its already-run ancestors.

        Returns:
            logits ``[B, M, V]`` and, per row, the slots the nodes now occupy.
        """
        width = max(len(t) for t in tokens)
        length = kv.length
        ids = np.full((len(tokens), width), pad, dtype=np.int64)
        pos = np.zeros((len(tokens), width), dtype=np.int64)
        attend = attend_prefix(kv.valid, width)
        attend[:, torch.arange(width), length + torch.arange(width)] = True
        rows_i, cols_i, slot_i, slots = [], [], [], []
        for b, (tok, (offsets, anc)) in enumerate(zip(tokens, ancestor_slots)):
            k = len(tok)
            ids[b, :k] = tok
            pos[b, :k] = positions[b]
            rows_i.append(np.full(len(anc), b, dtype=np.int64))
            cols_i.append(np.repeat(np.arange(k, dtype=np.int64), np.diff(offsets)))
            slot_i.append(anc)
            slots.append(length + np.arange(k, dtype=np.int64))
        index = [torch.from_numpy(np.concatenate(i)) for i in (rows_i, cols_i, slot_i)]
        attend[index[0], index[1], index[2]] = True
        logits = kv.forward(ids, pos, attend, keep_last=width)
        stats.draft_forwards += 1
        return logits, slots


def _csr(lists: list[list[int]]) -> AncestorSlots:
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in lists])
    flat = np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(offsets[-1]))
    return offsets, flat


@dataclass
class _Nodes:
    """SpecExec bookkeeping by builder id: token, parent, depth, draft slot, ancestor slots."""

    token: list[int]
    parent: list[int]
    depth: list[int]
    slot: list[int]
    anc: list[list[int]] = field(default_factory=lambda: [[]])
    # Cumulative draft log-probability of the path to each node (the root's is 0).
    score: list[float] = field(default_factory=lambda: [0.0])

    def grow_to(self, new_id: int) -> None:
        # The builder hands out ids it may later drop; keep every list indexable by id.
        while len(self.token) <= new_id:
            self.token.append(-1)
            self.parent.append(-1)
            self.depth.append(0)
            self.slot.append(-1)
            self.anc.append([])
            self.score.append(-np.inf)


@dataclass
class SpecExecDrafter(Drafter):
    """SpecExec: a best-first tree under a node budget, ``expand_per_step`` nodes per forward.

    After its ``max_draft_steps`` forwards, a tree may grow further where the draft is
    confident: up to ``extend_steps`` more forwards, each expanding a row's best unexpanded node
    only while that node's cumulative draft probability is at least ``exp(extend_logprob)``
    (the tree's budget and depth cap include those extra nodes; ``min_logprob`` keeps nodes too
    unlikely to pay for their verification out of the tree).

    Attributes:
        budget: tree size in nodes (the root included), extension included.
        max_width: children proposed per expanded node.
        expand_per_step: nodes the draft expands per forward.
        max_draft_steps: draft forwards per iteration after the root.
        extend_steps: the most confidence-gated forwards after those.
        extend_logprob: the gate, a cumulative log-probability.
        min_logprob: nodes scoring below this are never kept.
    """

    budget: int
    max_width: int
    expand_per_step: int
    max_draft_steps: int
    extend_steps: int = 0
    extend_logprob: float = 0.0
    min_logprob: float = -np.inf

    def draft(
        self, rows: list[Row], kv: RaggedKVCache, pad: int, stats: GenerationStats
    ) -> list[Draft]:
        """Grows one best-first tree per row; see :class:`Drafter`."""
        root_logits, root_slots = self.run_pending(rows, kv, pad, stats)
        width = min(self.max_width, self.vocab_size)
        builders: list[Optional[TreeBuilder]] = []
        info: list[_Nodes] = []
        for b, row in enumerate(rows):
            cap = self.depth_cap(row)
            root = row.tokens[-1]
            node = _Nodes([root], [-1], [0], [int(root_slots[b])])
            info.append(node)
            if cap == 0 or self.budget == 1:
                builders.append(None)
                continue
            builder = TreeBuilder(
                root, self.budget, max_depth=cap, max_width=width, min_logprob=self.min_logprob
            )
            builders.append(builder)
            top = torch.topk(draft_logprobs(root_logits[b], self.warp), width)
            self._expand(builder, node, np.array([0], dtype=np.int32), top)
        for _ in range(self.max_draft_steps):
            frontier = [
                b_.frontier(self.expand_per_step) if b_ is not None else np.zeros(0, np.int32)
                for b_ in builders
            ]
            if not self._step(rows, kv, pad, stats, builders, info, frontier, width):
                break
        for _ in range(self.extend_steps):
            # Only where the best node left is likely enough to pay for another forward.
            frontier = []
            for b_, node in zip(builders, info):
                best = b_.frontier(1) if b_ is not None else np.zeros(0, np.int32)
                if len(best) and node.score[int(best[0])] < self.extend_logprob:
                    best = best[:0]
                frontier.append(best)
            if not self._step(rows, kv, pad, stats, builders, info, frontier, width):
                break
        drafts = []
        for b, row in enumerate(rows):
            done = builders[b]
            if done is None:
                tree = Tree(
                    parents=np.array([-1], dtype=np.int32),
                    tokens=np.array([row.tokens[-1]], dtype=np.int32),
                    depth=np.zeros(1, dtype=np.int32),
                    rank=np.zeros(1, dtype=np.int32),
                )
                drafts.append(Draft(tree, np.array([root_slots[b]], dtype=np.int64)))
                continue
            tree, old_to_new = done.finalize()
            slots_new = np.full(len(tree.parents), -1, dtype=np.int64)
            old_slots = np.asarray(info[b].slot, dtype=np.int64)
            kept = np.flatnonzero(old_to_new >= 0)
            slots_new[old_to_new[kept]] = old_slots[kept]
            drafts.append(Draft(tree, slots_new))
        return drafts

    def _step(
        self,
        rows: list[Row],
        kv: RaggedKVCache,
        pad: int,
        stats: GenerationStats,
        builders: list[Optional[TreeBuilder]],
        info: list[_Nodes],
        frontier: list[npt.NDArray[np.int32]],
        width: int,
    ) -> bool:
        """One draft forward over each row's `frontier`; False (and no forward) when every
        frontier is empty."""
        if all(len(f) == 0 for f in frontier):
            return False
        live = [b for b in range(len(rows)) if len(frontier[b])]
        # Rows with nothing to expand still take part in the forward with one pad query.
        logits, slots = self.run_nodes(
            kv,
            [
                np.asarray([info[b].token[i] for i in f], dtype=np.int64)
                for b, f in enumerate(frontier)
            ],
            [
                np.asarray([rows[b].draft_cached - 1 + info[b].depth[i] for i in f], dtype=np.int64)
                for b, f in enumerate(frontier)
            ],
            [_csr([info[b].anc[i] for i in f]) for b, f in enumerate(frontier)],
            pad,
            stats,
        )
        for b in live:
            for i, node_id in enumerate(frontier[b]):
                info[b].slot[node_id] = int(slots[b][i])
            top = torch.topk(draft_logprobs(logits[b, : len(frontier[b])], self.warp), width)
            self._expand(builders[b], info[b], frontier[b], top)
        return True

    @staticmethod
    def _expand(
        builder: Optional[TreeBuilder],
        node: _Nodes,
        parents: npt.NDArray[np.int32],
        top: Any,
    ) -> None:
        assert builder is not None
        child_tokens = top.indices.reshape(len(parents), -1)
        # -inf (filtered out by top-k / top-p) is never kept by the builder
        child_logprobs = top.values.reshape(len(parents), -1).float().numpy()
        ids = np.asarray(
            builder.expand(
                parents.astype(np.int32),
                child_tokens.numpy().astype(np.int64),
                child_logprobs.astype(np.float32),
            )
        )
        for r, parent in enumerate(parents):
            parent = int(parent)
            anc = node.anc[parent] + ([node.slot[parent]] if parent != 0 else [])
            for j in np.flatnonzero(ids[r] >= 0):
                new_id = int(ids[r, j])
                node.grow_to(new_id)
                node.token[new_id] = int(child_tokens[r, j])
                node.parent[new_id] = parent
                node.depth[new_id] = node.depth[parent] + 1
                node.slot[new_id] = -1
                node.anc[new_id] = anc
                node.score[new_id] = node.score[parent] + float(child_logprobs[r, j])


@dataclass
class _Filling:
    """One row's static tree while its tokens are being drawn, level by level."""

    tree: Tree
    tokens: Int64Array
    slots: Int64Array
    probs: Optional[torch.Tensor]
    valid: npt.NDArray[np.bool_]
    child_offsets: Int64Array
    children: npt.NDArray[np.int32]

    def kids(self, node: int) -> npt.NDArray[np.int32]:
        """Children of ``node`` in rank order."""
        return self.children[self.child_offsets[node] : self.child_offsets[node + 1]]


@dataclass
class StaticDrafter(Drafter):
    """Fills a fixed tree shape (tokens -1) with draft tokens, one draft forward per level.

    Greedy trees take the draft's top-ranked tokens; sampled trees take an ordered sample without
    replacement (Gumbel-top-k) from the warped draft distribution, which Sequoia's verification
    rule needs. A node whose rank has no token (fewer tokens left than siblings) is dropped with
    its subtree.

    Attributes:
        shape: the tree to fill; rows cut it at their depth cap.
    """

    shape: Tree

    def draft(
        self, rows: list[Row], kv: RaggedKVCache, pad: int, stats: GenerationStats
    ) -> list[Draft]:
        """Fills one copy of the shape per row; see :class:`Drafter`."""
        root_logits, root_slots = self.run_pending(rows, kv, pad, stats)
        fills = []
        for b, row in enumerate(rows):
            tree, _ = subtree(self.shape, self.shape.depth <= self.depth_cap(row))
            n = tree.size
            tokens = np.full(n, -1, dtype=np.int64)
            tokens[0] = row.tokens[-1]
            slots = np.full(n, -1, dtype=np.int64)
            slots[0] = root_slots[b]
            probs = torch.zeros(n, self.vocab_size) if self.warp is not None else None
            offsets, children = children_by_rank(tree.parents, tree.rank)
            fills.append(_Filling(tree, tokens, slots, probs, np.ones(n, bool), offsets, children))
        for fill, logits in zip(fills, root_logits):
            self._fill_children(fill, 0, logits)
        max_depth = max(int(f.tree.depth.max()) for f in fills)
        for level in range(1, max_depth):
            nodes = []
            for f in fills:
                at_level = f.tree.depth == level
                # Below a dropped node nothing was drawn: drop the whole subtree.
                f.valid[at_level] &= f.valid[f.tree.parents[at_level]]
                has_kids = np.diff(f.child_offsets) > 0
                nodes.append(np.flatnonzero(at_level & f.valid & has_kids))
            if all(len(n) == 0 for n in nodes):
                break
            anc = [ancestors(f.tree.parents, n) for f, n in zip(fills, nodes)]
            logits, new_slots = self.run_nodes(
                kv,
                [f.tokens[n] for f, n in zip(fills, nodes)],
                [np.full(len(n), row.draft_cached - 1 + level) for row, n in zip(rows, nodes)],
                [(off, f.slots[a]) for f, (off, a) in zip(fills, anc)],
                pad,
                stats,
            )
            for b, (f, ran) in enumerate(zip(fills, nodes)):
                f.slots[ran] = new_slots[b]
                for j, i in enumerate(ran):
                    self._fill_children(f, int(i), logits[b, j])
        drafts = []
        for f in fills:
            tree = Tree(f.tree.parents, f.tokens.astype(np.int32), f.tree.depth, f.tree.rank)
            kept, old = subtree(tree, f.valid)
            if kept is tree:
                drafts.append(Draft(tree, f.slots, f.probs))
            else:
                probs = f.probs[torch.from_numpy(old)] if f.probs is not None else None
                drafts.append(Draft(kept, f.slots[old], probs))
        return drafts

    def _fill_children(self, fill: _Filling, node: int, logits: torch.Tensor) -> None:
        kids = fill.kids(node)
        if not len(kids):
            return
        ranks = fill.tree.rank[kids]
        needed = min(int(ranks.max()) + 1, self.vocab_size)
        if self.warp is None:
            order = torch.topk(logits, needed).indices
            available = needed
        else:
            q = self.warp.probs(logits)
            assert fill.probs is not None
            fill.probs[node] = q
            order = gumbel_order(q, needed, self.generator)
            available = int((q > 0).sum())
        drawn = (ranks < available) & (ranks < len(order))
        fill.tokens[kids[drawn]] = order.numpy()[ranks[drawn]]
        fill.valid[kids[~drawn]] = False


@dataclass
class RootDrafter(Drafter):
    """No speculation: every row's tree is its root alone and the draft never runs.

    Used when calibration finds that no tree beats plain decoding on this machine; the target
    then decodes one token per forward, as ``generate`` does.
    """

    def draft(
        self, rows: list[Row], kv: RaggedKVCache, pad: int, stats: GenerationStats
    ) -> list[Draft]:
        """One root-only tree per row; ``kv`` (the draft's cache) is left untouched."""
        out = []
        for row in rows:
            tree = Tree(
                parents=np.array([-1], dtype=np.int32),
                tokens=np.array([row.tokens[-1]], dtype=np.int32),
                depth=np.zeros(1, dtype=np.int32),
                rank=np.zeros(1, dtype=np.int32),
            )
            out.append(Draft(tree, np.full(1, -1, dtype=np.int64)))
        return out
