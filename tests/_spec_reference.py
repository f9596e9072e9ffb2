"""Plain NumPy/torch reference of the `ferrolm.spec` tree-core contract (SPEC_CONTRACT.md).

Test-only. It lets the generation loop be tested against a slow, obviously-correct version of the
core, and is installed into ``ferrolm.spec`` by ``tests/conftest``-style fixtures only for names the
real (Rust) core does not provide yet.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch


@dataclass(frozen=True)
class Tree:
    parents: np.ndarray
    tokens: np.ndarray
    depth: np.ndarray
    rank: np.ndarray

    @property
    def size(self) -> int:
        return len(self.parents)


def ancestor_mask(parents: np.ndarray) -> np.ndarray:
    parents = np.asarray(parents)
    n = len(parents)
    mask = np.zeros((n, n), dtype=bool)
    for i in range(n):
        if parents[i] >= 0:
            mask[i] = mask[parents[i]]
        mask[i, i] = True
    return mask


def _depth(parents: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(parents), dtype=np.int32)
    for i in range(1, len(parents)):
        depth[i] = depth[parents[i]] + 1
    return depth


def position_ids(parents: np.ndarray, past_len: int) -> np.ndarray:
    return (past_len + _depth(np.asarray(parents))).astype(np.int64)


def walk(parents: np.ndarray, tokens: np.ndarray, choice: np.ndarray) -> tuple[np.ndarray, int]:
    children: dict[int, list[int]] = {}
    for i in range(1, len(parents)):
        children.setdefault(int(parents[i]), []).append(i)
    path = [0]
    cur = 0
    while True:
        nxt = next((c for c in children.get(cur, []) if tokens[c] == choice[cur]), None)
        if nxt is None:
            break
        path.append(nxt)
        cur = nxt
    return np.asarray(path, dtype=np.int32), int(choice[cur])


class TreeBuilder:
    def __init__(
        self,
        root_token: int,
        budget: int,
        max_depth: int = 16,
        max_width: int = 8,
        log_decay: float = 0.0,
        min_logprob: float = -math.inf,
    ) -> None:
        self.budget, self.max_depth, self.max_width = budget, max_depth, max_width
        self.log_decay, self.min_logprob = log_decay, min_logprob
        self.parent = [-1]
        self.token = [root_token]
        self.score = [0.0]
        self.depth = [0]
        self.kept = [True]
        self.expanded = [False]

    def _threshold(self) -> float:
        kept = sorted((self.score[i] for i in range(len(self.score)) if self.kept[i]), reverse=True)
        return kept[self.budget - 1] if len(kept) >= self.budget else -math.inf

    def frontier(self, k: int) -> np.ndarray:
        thr = self._threshold()
        cand = [
            i
            for i in range(len(self.score))
            if self.kept[i]
            and not self.expanded[i]
            and self.depth[i] < self.max_depth
            and self.score[i] + self.log_decay > thr
        ]
        cand.sort(key=lambda i: -self.score[i])
        return np.asarray(cand[:k], dtype=np.int32)

    def expand(self, parent_ids: Any, child_tokens: Any, child_logprobs: Any) -> np.ndarray:
        parent_ids = np.asarray(parent_ids)
        child_tokens = np.asarray(child_tokens)
        child_logprobs = np.asarray(child_logprobs, dtype=np.float64)
        out = np.full(child_tokens.shape, -1, dtype=np.int32)
        for r, p in enumerate(parent_ids):
            self.expanded[p] = True
            order = np.argsort(-child_logprobs[r], kind="stable")[: self.max_width]
            for j in order:
                s = self.score[p] + self.log_decay + child_logprobs[r, j]
                if s < self.min_logprob:
                    continue
                nid = len(self.score)
                self.parent.append(int(p))
                self.token.append(int(child_tokens[r, j]))
                self.score.append(float(s))
                self.depth.append(self.depth[p] + 1)
                self.kept.append(True)
                self.expanded.append(False)
                out[r, j] = nid
        # evict to the budget (lowest scores; they are leaves because scores fall along paths)
        kept = [i for i in range(len(self.score)) if self.kept[i]]
        if len(kept) > self.budget:
            kept.sort(key=lambda i: (-self.score[i], i))
            for i in kept[self.budget :]:
                self.kept[i] = False
        out = np.where(out >= 0, out, -1)
        for idx in np.ndindex(out.shape):
            if out[idx] >= 0 and not self.kept[out[idx]]:
                out[idx] = -1
        return out

    @property
    def size(self) -> int:
        return sum(self.kept)

    @property
    def done(self) -> bool:
        return len(self.frontier(1)) == 0

    def finalize(self) -> tuple[Tree, np.ndarray]:
        kept = [i for i in range(len(self.score)) if self.kept[i]]
        order = sorted(kept, key=lambda i: (self.depth[i], -self.score[i], i))
        old_to_new = np.full(len(self.score), -1, dtype=np.int32)
        for new, old in enumerate(order):
            old_to_new[old] = new
        parents = np.asarray([-1] + [old_to_new[self.parent[o]] for o in order[1:]], dtype=np.int32)
        tokens = np.asarray([self.token[o] for o in order], dtype=np.int32)
        depth = np.asarray([self.depth[o] for o in order], dtype=np.int32)
        rank = np.zeros(len(order), dtype=np.int32)
        seen: dict[int, int] = {}
        for i in range(1, len(order)):
            rank[i] = seen.get(int(parents[i]), 0)
            seen[int(parents[i])] = rank[i] + 1
        return Tree(parents, tokens, depth, rank), old_to_new


class SequoiaTable:
    """Heap construction: exact when p is non-increasing (the reference assumes that)."""

    def __init__(self, p: np.ndarray, max_nodes: int, max_depth: int) -> None:
        self.p = np.asarray(p, dtype=np.float64)
        self.max_nodes, self.max_depth = max_nodes, max_depth

    def _build(self, n: int, d: int) -> tuple[list[int], list[int], list[int], float]:
        parents, rank, depth = [-1], [0], [0]
        value = 1.0
        heap: list[tuple[float, int, int, int]] = []
        if d > 0 and len(self.p):
            heapq.heappush(heap, (-self.p[0], 0, 0, 0))
        while len(parents) < n and heap:
            negv, _, parent, r = heapq.heappop(heap)
            node = len(parents)
            parents.append(parent)
            rank.append(r)
            depth.append(depth[parent] + 1)
            value += -negv
            if r + 1 < len(self.p):
                heapq.heappush(heap, (negv / self.p[r] * self.p[r + 1], node, parent, r + 1))
            if depth[node] < d:
                heapq.heappush(heap, (negv * self.p[0], node, node, 0))
        return parents, rank, depth, value

    def value(self, n: int, d: int) -> float:
        return self._build(n, d)[3]

    def values(self) -> np.ndarray:
        out = np.zeros((self.max_nodes + 1, self.max_depth + 1))
        for n in range(1, self.max_nodes + 1):
            for d in range(self.max_depth + 1):
                out[n, d] = self.value(n, d)
        return out

    def tree(self, n: int, d: int) -> Tree:
        parents, rank, depth, _ = self._build(n, d)
        # renumber: topological with siblings in rank order (BFS by depth, parent, rank)
        order = sorted(range(len(parents)), key=lambda i: (depth[i], parents[i], rank[i]))
        new = {old: i for i, old in enumerate(order)}
        par = np.asarray([-1] + [new[parents[o]] for o in order[1:]], dtype=np.int32)
        return Tree(
            par,
            np.full(len(order), -1, dtype=np.int32),
            np.asarray([depth[o] for o in order], dtype=np.int32),
            np.asarray([rank[o] for o in order], dtype=np.int32),
        )


def sequoia_dp(p: Any, max_nodes: int, max_depth: int) -> SequoiaTable:
    return SequoiaTable(np.asarray(p), max_nodes, max_depth)


@dataclass(frozen=True)
class Plan:
    n: int
    d: int
    tokens_per_step: float
    s_per_token: float
    speedup: float


def plan(table: SequoiaTable, sizes: Any, t_verify_s: Any, t_draft_s: float) -> Plan:
    best: Optional[Plan] = None
    t_plain = float(t_verify_s[0])
    for n, tv in zip(sizes, t_verify_s):
        for d in range(0, table.max_depth + 1):
            f = table.value(int(n), d)
            spt = (d * t_draft_s + float(tv)) / f
            if best is None or spt < best.s_per_token:
                best = Plan(int(n), d, f, spt, t_plain / spt)
    assert best is not None
    return best


def acceptance_vector(accepted_ranks: Any, width: int) -> np.ndarray:
    ranks = np.asarray(accepted_ranks)
    p = np.zeros(width)
    if len(ranks):
        for k in range(width):
            p[k] = np.mean(ranks == k)
    return p


def choose_greedy(target_logits: torch.Tensor) -> np.ndarray:
    return target_logits.argmax(-1).cpu().numpy().astype(np.int64)


def choose_sample(target_probs: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    return (
        torch.multinomial(target_probs.float().cpu(), 1, generator=generator)[:, 0]
        .numpy()
        .astype(np.int64)
    )


def choose_sequoia(
    parents: np.ndarray,
    tokens: np.ndarray,
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    generator: torch.Generator,
    replacement: bool = False,
) -> np.ndarray:
    tp = target_probs.double().cpu()
    dp = draft_probs.double().cpu()
    n = len(parents)
    choice = np.zeros(n, dtype=np.int64)
    children: dict[int, list[int]] = {}
    for i in range(1, n):
        children.setdefault(int(parents[i]), []).append(i)
    for i in range(n):
        r = tp[i].clone()
        q = dp[i].clone()
        accepted = None
        for c in children.get(i, []):
            x = int(tokens[c])
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
            if q[x] > 0 and u < min(1.0, float(r[x] / q[x])):
                accepted = x
                break
            r = torch.clamp(r - q, min=0)
            r = r / r.sum()
            if not replacement:
                q[x] = 0
                q = q / q.sum() if q.sum() > 0 else q
        if accepted is None:
            accepted = int(torch.multinomial(r.float(), 1, generator=generator)[0])
        choice[i] = accepted
    return choice


NAMES = [
    "Tree",
    "ancestor_mask",
    "position_ids",
    "walk",
    "TreeBuilder",
    "sequoia_dp",
    "plan",
    "acceptance_vector",
    "choose_greedy",
    "choose_sample",
    "choose_sequoia",
]
