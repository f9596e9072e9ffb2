"""The sampling warp shared by the target (what is reproduced) and the draft (what proposes).

Logits are warped in the order Hugging Face ``generate`` applies them: temperature, then top-k,
then top-p, then min-p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ferrolm.speculative._arrays import check_float, check_int

__all__ = ["Warp", "device_generator", "draft_logprobs", "gumbel_order", "sampling_probs"]


def sampling_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    min_p: Optional[float] = None,
) -> torch.Tensor:
    """Warps logits into sampling probabilities: temperature, top-k, top-p, min-p (HF's order).

    Args:
        logits: float tensor ``[..., V]``.
        temperature: strictly positive divisor of the logits.
        top_k: keep the ``top_k`` largest logits (ties at the boundary are kept); None or 0
            keeps all.
        top_p: keep the smallest set of tokens whose probability reaches ``top_p`` (at least one),
            in [0, 1], or None.
        min_p: drop tokens whose probability (after the filters before it) is below ``min_p``
            times the most likely token's, or None.

    Returns:
        float32 probabilities ``[..., V]`` summing to one.

    Raises:
        ValueError: ``temperature`` is not > 0, ``top_k`` is negative, ``top_p`` is outside
            [0, 1] (NaN included), or a number is beyond float's or int64's range.
        TypeError: a setting is not a number.

    Example:
        >>> sampling_probs(torch.tensor([2.0, 1.0, 0.0]), temperature=1.0, top_k=2).tolist()[2]
        0.0
    """
    temperature = check_float(temperature, "temperature")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0 for sampling, got {temperature}")
    if top_k is not None and check_int(top_k, "top_k", 0) == 0:
        top_k = None  # 0 switches top-k off, as in Hugging Face's generation config
    if top_p is not None and not 0.0 <= check_float(top_p, "top_p") <= 1.0:
        # A NaN would switch the filter off in silence.
        raise ValueError(f"`top_p` must be in [0, 1], got {top_p}")
    scores = logits.float() / temperature
    if top_k is not None and 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        remove = cumulative <= (1.0 - top_p)
        remove[..., -1] = False
        scores = scores.masked_fill(remove.scatter(-1, order, remove), -math.inf)
    if min_p is not None and min_p > 0.0:
        probs = scores.softmax(-1)
        # The most likely token always survives: its probability is its own maximum.
        scores = scores.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), -math.inf)
    return scores.softmax(-1)


@dataclass(frozen=True)
class Warp:
    """One sampling setting (``temperature`` > 0) of :func:`sampling_probs`.

    Example:
        >>> Warp(1.0, top_k=1).probs(torch.tensor([0.0, 3.0])).tolist()
        [0.0, 1.0]
    """

    temperature: float
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """:func:`sampling_probs` of ``logits`` under this setting."""
        return sampling_probs(logits, self.temperature, self.top_k, self.top_p, self.min_p)


def draft_logprobs(logits: torch.Tensor, warp: Optional[Warp]) -> torch.Tensor:
    """Log-probabilities the draft ranks candidates by: plain softmax when greedy, else warped."""
    if warp is None:
        return torch.log_softmax(logits, dim=-1)
    return warp.probs(logits).log()


def gumbel_order(q: torch.Tensor, k: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """An ordered sample of ``k`` tokens without replacement from ``q`` ``[V]`` (Gumbel-top-k).

    Tokens with zero probability come last, so only the first ``(q > 0).sum()`` are samples.
    """
    u = torch.rand(q.shape, generator=generator).clamp_(min=1e-20)
    keys = q.log() - (-u.log()).log()
    return torch.topk(keys, k).indices


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` itself on its own device type, else a generator on ``device`` seeded from it.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> device_generator(g, torch.device("cpu")) is g
        True
    """
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.Generator(device=device).manual_seed(seed)
