"""Plain NumPy / torch references of the speculative-decoding core, for tests, benches and demo.

They are written for clarity and as baselines; the library itself uses the Rust core.
"""

from __future__ import annotations

import numpy as np
import torch


def numpy_sequoia_dp(p: np.ndarray, max_nodes: int, max_depth: int) -> np.ndarray:
    """Sequoia's DP in NumPy, vectorised over the split.

    Returns ``F`` as ``[max_nodes + 1, max_depth + 1]``.

    Same recurrence and the same feasible split range as the Rust core:
    ``T[m][l][b] = max_y T[y][l][b-1] + p_b F[m-y][l-1]``.
    """
    p = np.asarray(p, dtype=np.float64)
    width = len(p)
    n1 = max_nodes + 1
    cap = [1] * (max_depth + 1)
    for level in range(1, max_depth + 1):
        cap[level] = min(max_nodes, 1 + width * cap[level - 1])
    t = np.full((max_depth + 1, width + 1, n1), -np.inf)
    f = np.full((max_depth + 1, n1), -np.inf)
    t[:, 0, 1] = 1.0
    f[0, 1] = 1.0
    for level in range(1, max_depth + 1):
        c = cap[level - 1]
        prev_f = f[level - 1]
        for b in range(1, width + 1):
            pb = p[b - 1]
            prev_t = t[level, b - 1]
            out = t[level, b]
            first_cap = 1 + (b - 1) * c
            for m in range(2, n1):
                lo = max(b, m - c)
                hi = min(m - 1, first_cap)
                if lo > hi:
                    continue
                # y = lo..hi; the last subtree holds m - y nodes: m-lo down to m-hi
                out[m] = np.max(prev_t[lo : hi + 1] + pb * prev_f[m - hi : m - lo + 1][::-1])
        f[level] = t[level].max(axis=0)
    return f.T.copy()


def torch_ancestor_mask(parents: torch.Tensor) -> torch.Tensor:
    """``bool [n, n]`` ancestor mask with torch ops: one scatter per tree level."""
    n = parents.numel()
    mask = torch.eye(n, dtype=torch.bool)
    rows = torch.arange(n)
    cur = parents.clone()
    while True:
        valid = cur >= 0
        if not bool(valid.any()):
            return mask
        mask[rows[valid], cur[valid]] = True
        cur = torch.where(valid, parents[cur.clamp(min=0)], cur)


class TorchTreeState:
    """The state of a best-first tree builder held in torch tensors (the TreeBuilder baseline).

    Same semantics as :class:`ferrolm.speculative.TreeBuilder` up to tie-breaking: children scored
    ``score(parent) + log_decay + logprob``, the best ``max_width`` per row, the running
    top-``budget`` set kept.
    """

    def __init__(self, root_token: int, budget: int, max_width: int, log_decay: float = 0.0):
        self.budget, self.max_width, self.log_decay = budget, max_width, log_decay
        self.parent = torch.tensor([-1])
        self.token = torch.tensor([root_token])
        self.score = torch.tensor([0.0])
        self.depth = torch.tensor([0])
        self.alive = torch.tensor([True])
        self.expanded = torch.tensor([False])

    def frontier(self, k: int) -> torch.Tensor:
        """Best ``k`` alive, unexpanded nodes."""
        ok = self.alive & ~self.expanded
        idx = ok.nonzero().squeeze(1)
        order = torch.argsort(self.score[idx], descending=True, stable=True)[:k]
        return idx[order]

    def expand(
        self, parent_ids: torch.Tensor, child_tokens: torch.Tensor, child_logprobs: torch.Tensor
    ) -> torch.Tensor:
        """Inserts children; returns ``[m, w]`` new ids or -1."""
        m, w = child_tokens.shape
        self.expanded[parent_ids] = True
        take = min(self.max_width, w)
        lp, col = torch.topk(child_logprobs, take, dim=1)
        cand_score = (self.score[parent_ids].unsqueeze(1) + self.log_decay + lp).reshape(-1)
        alive_idx = self.alive.nonzero().squeeze(1)
        pool = torch.cat([self.score[alive_idx], cand_score])
        keep = torch.topk(pool, min(self.budget, pool.numel())).indices
        n_alive = alive_idx.numel()
        new_alive = torch.zeros(pool.numel(), dtype=torch.bool)
        new_alive[keep] = True
        kept_cand = new_alive[n_alive:].nonzero().squeeze(1)
        base = self.parent.numel()
        ids = torch.full((m * w,), -1, dtype=torch.int64)
        rows = kept_cand // take
        flat = rows * w + col.reshape(-1)[kept_cand]
        ids[flat] = base + torch.arange(kept_cand.numel())
        self.alive[alive_idx[~new_alive[:n_alive]]] = False
        self.parent = torch.cat([self.parent, parent_ids[rows]])
        self.token = torch.cat([self.token, child_tokens.reshape(-1)[flat]])
        self.score = torch.cat([self.score, cand_score[kept_cand]])
        self.depth = torch.cat([self.depth, self.depth[parent_ids[rows]] + 1])
        self.alive = torch.cat([self.alive, torch.ones(kept_cand.numel(), dtype=torch.bool)])
        self.expanded = torch.cat([self.expanded, torch.zeros(kept_cand.numel(), dtype=torch.bool)])
        return ids.reshape(m, w)

    def finalize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Breadth-first renumbering, siblings by score: ``(parents, tokens, old_to_new)``."""
        old_to_new = torch.full((self.parent.numel(),), -1, dtype=torch.int64)
        old_to_new[0] = 0
        order = [torch.tensor([0])]
        count = 1
        alive = self.alive
        for d in range(1, int(self.depth[alive].max()) + 1):
            level = (alive & (self.depth == d)).nonzero().squeeze(1)
            if level.numel() == 0:
                break
            by_score = level[torch.argsort(self.score[level], descending=True, stable=True)]
            by_parent = by_score[torch.argsort(old_to_new[self.parent[by_score]], stable=True)]
            old_to_new[by_parent] = torch.arange(count, count + by_parent.numel())
            count += by_parent.numel()
            order.append(by_parent)
        nodes = torch.cat(order)
        parents = torch.where(nodes == 0, -1, old_to_new[self.parent[nodes].clamp(min=0)])
        return parents, self.token[nodes], old_to_new
