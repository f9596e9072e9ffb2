"""Lossless verification rules on torch tensors (CPU or GPU), vectorised over tree nodes.

Each function returns ``choice``: ``int64 [n]`` on the CPU, the token the target picks after every
node; :func:`ferrolm.speculative.walk` then gives the accepted path and the bonus token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ferrolm.speculative._arrays import int_array
from ferrolm.speculative.tree import forest_children_table

__all__ = ["choose_greedy", "choose_sample", "choose_sequoia"]


def _matrix(x: Any, arg: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"`{arg}` must be a floating-point tensor, got {x.dtype}; call .float()")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"`{arg}` must be 2-D [n, vocab] and non-empty, got shape {tuple(x.shape)}"
        )
    return x


def _probs(x: Any, arg: str) -> torch.Tensor:
    t = _matrix(x, arg).detach().float()
    if bool(((t < 0) | t.isnan()).any()):
        raise ValueError(f"`{arg}` must be probabilities (>= 0, no NaN)")
    if bool((t.sum(-1) <= 0).any()):
        raise ValueError(f"`{arg}` must have a positive sum in every row")
    return t


def _generator(generator: Any, device: torch.device) -> torch.Generator | None:
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator.device.type != device.type:
        raise RuntimeError(
            f"`generator` must be on the probabilities' device ({device.type}), "
            f"got {generator.device.type}"
        )
    return generator


def choose_greedy(target_logits: torch.Tensor) -> torch.Tensor:
    """Greedy verification: the target's argmax after every node (``int64 [n]``, CPU).

    Raises:
        ValueError: a row holds NaN.

    Example:
        >>> choose_greedy(torch.tensor([[0.1, 2.0], [3.0, 0.0]])).tolist()
        [1, 0]
    """
    logits = _matrix(target_logits, "target_logits")
    nan_rows = logits.isnan().any(-1)
    # argmax would pick the NaN: a broken forward pass must not pass for a confident choice.
    if bool(nan_rows.any()):
        row = int(nan_rows.nonzero()[0, 0])
        raise ValueError(f"`target_logits` must hold no NaN, got one in row {row}")
    return logits.argmax(-1).to("cpu", torch.int64)


def choose_sample(
    target_probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """SpecExec's exact sampling: one target sample per node (``int64 [n]``, CPU).

    Walking with these choices yields tokens distributed exactly as sampling from the target,
    whatever the draft tree holds.
    """
    p = _probs(target_probs, "target_probs")
    g = _generator(generator, p.device)
    return torch.multinomial(p, 1, generator=g).squeeze(1).to("cpu", torch.int64)


def choose_sequoia(
    parents: Any,
    tokens: Any,
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    generator: torch.Generator | None = None,
    replacement: bool = False,
    offsets: Any | None = None,
) -> torch.Tensor:
    """Sequoia (children sampled without replacement) or SpecInfer (with replacement) verification.

    At every node, in rank order, child ``x`` is accepted with probability
    ``min(1, r(x) / q(x))`` where ``r`` starts as the target distribution and ``q`` as the draft's;
    after a rejection ``r <- norm(max(r - q, 0))`` and, without replacement, ``x`` is removed from
    ``q`` (renormalised). If no child is accepted, the fallback is a sample from the final ``r``.
    Both rules are exact: the walk's tokens follow the target distribution.

    Args:
        parents: The tree (or a CSR batch of trees with ``offsets``).
        tokens: ``[n]`` token of every node; children of node ``i`` must have been sampled from
            ``draft_probs[i]`` (without replacement unless ``replacement``).
        target_probs: ``[n, V]`` target distribution after every node.
        draft_probs: ``[n, V]`` draft distribution after every node, same device.
        generator: Random source on the probabilities' device.
        replacement: ``True`` for SpecInfer's rule.
        offsets: CSR offsets when ``parents`` holds several trees (local parent ids).

    Returns:
        ``int64 [n]`` on the CPU: accepted child's token or the fallback token per node.
    """
    target = _probs(target_probs, "target_probs")
    draft = _probs(draft_probs, "draft_probs")
    if draft.shape != target.shape:
        raise ValueError(
            f"`draft_probs` must have shape {tuple(target.shape)}, got {tuple(draft.shape)}"
        )
    if draft.device != target.device:
        raise RuntimeError(
            f"`draft_probs` must be on {target.device} like `target_probs`, got {draft.device}"
        )
    n, vocab = target.shape
    tok = int_array(tokens, "tokens", dtype=np.int64)
    if len(tok) != n:
        raise ValueError(f"`tokens` must have {n} entries (rows of target_probs), got {len(tok)}")
    table = forest_children_table(parents, offsets)
    if table.shape[0] != n:
        raise ValueError(
            f"`parents` must describe {n} nodes (rows of target_probs), got {table.shape[0]}"
        )
    child_tokens = tok[table[table >= 0]]
    if ((child_tokens < 0) | (child_tokens >= vocab)).any():
        raise ValueError(f"`tokens` of non-root nodes must be in [0, {vocab})")
    g = _generator(generator, target.device)
    dev = target.device
    r = target / target.sum(-1, keepdim=True)
    q = draft / draft.sum(-1, keepdim=True)
    children = torch.from_numpy(table.astype(np.int64)).to(dev)
    tok_dev = torch.from_numpy(tok).to(dev)
    rows = torch.arange(n, device=dev)
    accepted = torch.zeros(n, dtype=torch.bool, device=dev)
    choice = torch.zeros(n, dtype=torch.int64, device=dev)
    for j in range(children.shape[1]):
        child = children[:, j]
        active = (child >= 0) & ~accepted
        x = tok_dev[child.clamp(min=0)].clamp(0, vocab - 1)
        rx = r[rows, x]
        qx = q[rows, x]
        u = torch.rand(n, generator=g, device=dev)
        # u < r/q without dividing; u < 1 makes r >= q always accept.
        take = active & (u * qx < rx)
        choice = torch.where(take, x, choice)
        accepted |= take
        rejected = (active & ~take).unsqueeze(1)
        residual = (r - q).clamp_min(0)
        mass = residual.sum(-1, keepdim=True)
        residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), r)
        r = torch.where(rejected, residual, r)
        if not replacement:
            removed = q.scatter(1, x.unsqueeze(1), 0.0)
            left = removed.sum(-1, keepdim=True)
            removed = torch.where(left > 0, removed / left.clamp_min(1e-30), removed)
            q = torch.where(rejected, removed, q)
    fallback = torch.multinomial(r, 1, generator=g).squeeze(1)
    return torch.where(accepted, choice, fallback).to("cpu", torch.int64)
