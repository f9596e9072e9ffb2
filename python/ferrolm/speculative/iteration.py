"""One speculative iteration's verification and commit, on both ragged caches.

:func:`verify_trees` runs ONE target forward over every row's pending chain and draft tree,
picks each row's accepted path (greedy, exact sampling, or Sequoia's rule) and compacts the target
cache to it; :func:`commit_draft` keeps in the draft cache the accepted nodes the draft ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import numpy.typing as npt
import torch

from ferrolm.speculative.drafters import Draft
from ferrolm.speculative.kv_cache import RaggedKVCache, attend_prefix, chain_block
from ferrolm.speculative.options import GenerationOptions
from ferrolm.speculative.rows import Row
from ferrolm.speculative.stats import GenerationStats
from ferrolm.speculative.tree import ancestor_mask, position_ids, walk
from ferrolm.speculative.verify import choose_greedy, choose_sample, choose_sequoia

__all__ = ["Accepted", "commit_draft", "verify_trees"]

Int64Array = npt.NDArray[np.int64]


@dataclass
class Accepted:
    """One row's verification result: pending chain length, accepted tree path, new tokens."""

    chain_len: int
    path: Int64Array
    new_tokens: list[int]
    scores: Optional[torch.Tensor] = None


def verify_trees(
    method: str,
    rows: list[Row],
    drafts: list[Draft],
    kv: RaggedKVCache,
    opts: GenerationOptions,
    generator: torch.Generator,
    stats: GenerationStats,
) -> list[Accepted]:
    """One target forward over every row's pending chain and tree; picks the accepted path
    of every row and compacts the target cache to it."""
    chains = [r.tokens[r.target_cached : -1] for r in rows]
    sizes = [d.tree.size for d in drafts]
    width_tree = max(sizes)
    pad, warp = opts.pad, opts.warp
    chain_ids, chain_pos, chain_mask, width_chain = chain_block(
        chains, [r.target_cached for r in rows], pad
    )
    m = width_chain + width_tree
    length = kv.length
    ids = np.full((len(rows), m), pad, dtype=np.int64)
    pos = np.zeros((len(rows), m), dtype=np.int64)
    block = np.zeros((len(rows), m, m), dtype=bool)
    block[:, np.arange(m), np.arange(m)] = True
    ids[:, :width_chain] = chain_ids
    pos[:, :width_chain] = chain_pos
    block[:, :width_chain, :width_chain] = chain_mask
    t0 = width_chain
    for b, (row, chain, d) in enumerate(zip(rows, chains, drafts)):
        s, n = width_chain - len(chain), sizes[b]
        ids[b, t0 : t0 + n] = d.tree.tokens
        pos[b, t0 : t0 + n] = position_ids(d.tree.parents, len(row.tokens) - 1)
        block[b, t0 : t0 + n, s:width_chain] = True
        block[b, t0 : t0 + n, t0 : t0 + n] = ancestor_mask(d.tree.parents)
    attend = attend_prefix(kv.valid, m)
    attend[:, :, length:] = torch.from_numpy(block)
    # The logits stay on the target's device; only the chosen tokens come to the host.
    logits = kv.forward(ids, pos, attend, keep_last=width_tree, host=False)
    logits = opts.target_scores(
        logits,
        [(r.tokens, r.generated) for r in rows],
        [(d.tree.parents, d.tree.tokens, d.tree.depth) for d in drafts],
    )
    stats.target_forwards += 1
    results = []
    keep = []
    for b, d in enumerate(drafts):
        parents, tokens = d.tree.parents, d.tree.tokens
        node_logits = logits[b, : sizes[b]]
        if warp is None:
            choice = choose_greedy(node_logits)
        else:
            target_probs = warp.probs(node_logits)
            if method == "specexec":
                choice = choose_sample(target_probs, generator)
            else:
                assert d.draft_probs is not None
                # Leaves have no draft distribution (nothing was sampled from them); any
                # valid row will do, the rule only reads it for children.
                q = d.draft_probs.to(target_probs.device)
                draft_probs = torch.where((q.sum(-1) <= 0)[:, None], target_probs, q)
                choice = choose_sequoia(parents, tokens, target_probs, draft_probs, generator)
        path32, bonus = walk(parents, tokens, np.asarray(choice, dtype=np.int64))
        path = np.asarray(path32, dtype=np.int64)
        stats.record_ranks(d.tree.parents, d.tree.rank, path)
        new_tokens = [int(t) for t in tokens[path[1:]]] + [int(bonus)]
        s = width_chain - len(chains[b])
        slots = np.concatenate(
            [length + np.arange(s, width_chain), length + width_chain + path]
        ).astype(np.int64)
        keep.append(slots)
        scores = node_logits[torch.from_numpy(path)] if opts.stopping is not None else None
        results.append(Accepted(len(chains[b]), path, new_tokens, scores))
    kv.compact(length, keep)
    return results


def commit_draft(
    rows: list[Row],
    drafts: list[Draft],
    accepted: list[Accepted],
    kv: RaggedKVCache,
    start: int,
) -> None:
    """Keeps in the draft cache the accepted nodes the draft already ran (the root is already
    committed), and drops the rest of this iteration's tree slots; the iteration's slots
    began at ``start``."""
    keep = []
    for b, (row, d, acc) in enumerate(zip(rows, drafts, accepted)):
        # Valid slots from `start` on are this iteration's pending chain (root included).
        committed = np.flatnonzero(kv.valid[b, start:].numpy()) + start
        slots = d.slots[acc.path[1:]]
        ran = slots[: int(np.argmax(slots < 0)) if (slots < 0).any() else len(slots)]
        keep.append(np.concatenate([committed, ran]).astype(np.int64))
        row.draft_cached += len(ran)
    kv.compact(start, keep)
