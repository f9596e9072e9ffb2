"""Measurements that feed the Sequoia planner: verify latency by tree size, and acceptance.

Example:
    >>> from ferrolm import speculative
    >>> lat = speculative.profile(target, [1, 16, 64, 128])  # doctest: +SKIP
    >>> p = speculative.estimate_acceptance(target, draft, prompts)  # doctest: +SKIP
    >>> table = speculative.sequoia_dp(p, max_nodes=128, max_depth=12)  # doctest: +SKIP
    >>> speculative.plan(table, lat.sizes, lat.latency_s, t_draft_s)  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ferrolm.speculative.hf import vocab_size
from ferrolm.speculative.kv_cache import RaggedKVCache
from ferrolm.speculative.sampling import gumbel_order, sampling_probs
from ferrolm.speculative.sequoia import acceptance_vector
from ferrolm.speculative.stats import GenerationStats
from ferrolm.speculative.tree import ancestor_mask, position_ids
from ferrolm.speculative.verify import choose_sequoia

__all__ = ["LatencyProfile", "PromptTiming", "estimate_acceptance", "profile"]


@dataclass(frozen=True)
class PromptTiming:
    """Wall times :func:`estimate_acceptance` measured on one prompt.

    Attributes:
        prompt_tokens: the prompt's length.
        new_tokens: tokens the target's ``generate`` added (fewer than asked at an EOS).
        generate_s: that ``target.generate`` call (its prefill, then one step per token).
        target_forward_s: one target forward over prompt and continuation, no cache.
        draft_forward_s: the same for the draft.
    """

    prompt_tokens: int
    new_tokens: int
    generate_s: float
    target_forward_s: float
    draft_forward_s: float


@dataclass(frozen=True)
class LatencyProfile:
    """Forward latency of a model by number of tree nodes, after `context` cached tokens.

    Attributes:
        sizes: int64 ``[k]`` tree sizes measured (ascending).
        latency_s: float64 ``[k]`` median seconds of one forward over that many tree nodes.
        context: committed tokens in the cache during the measurement.
    """

    sizes: np.ndarray
    latency_s: np.ndarray
    context: int


@torch.inference_mode()
def profile(
    model: Any, sizes: Sequence[int], *, context: int = 128, repeats: int = 3
) -> LatencyProfile:
    """Measures one tree-verify forward (4D mask, explicit positions) per tree size.

    The tree is a complete binary-ish shape of `n` nodes appended after `context` cached tokens;
    attention cost does not depend on the shape, only on `n` and the context.

    Args:
        model: a Hugging Face causal LM (sdpa or eager attention).
        sizes: tree sizes (>= 1).
        context: cached prefix length.
        repeats: timed runs per size (median reported); one warm-up run before the first.

    Returns:
        :class:`LatencyProfile`.
    """
    if len(sizes) == 0 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"`sizes` must be a non-empty list of ints >= 1, got {list(sizes)}")
    if context < 1:
        raise ValueError(f"`context` must be >= 1, got {context}")
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1, got {repeats}")
    sizes_sorted = sorted({int(s) for s in sizes})
    vocab = vocab_size(model)
    gen = torch.Generator().manual_seed(0)
    kv = RaggedKVCache(model, 1, GenerationStats())
    prefix = torch.randint(0, vocab, (1, context), generator=gen).numpy()
    attend = torch.ones(1, context, context, dtype=torch.bool).tril()
    kv.forward(prefix, np.arange(context)[None], attend, keep_last=1)
    kv.valid[:] = True
    latencies = []
    for n in sizes_sorted:
        parents = np.concatenate([[-1], np.arange(n - 1) // 2]).astype(np.int32)
        tokens = torch.randint(0, vocab, (1, n), generator=gen).numpy()
        positions = np.asarray(position_ids(parents, context), dtype=np.int64)[None]
        block = torch.from_numpy(np.asarray(ancestor_mask(parents), dtype=bool))
        times = []
        # One warm-up forward in all (the first size's): later sizes reuse the warm caches.
        for i in range(repeats + (1 if n == sizes_sorted[0] else 0)):
            attend = torch.ones(1, n, context + n, dtype=torch.bool)
            attend[0, :, context:] = block
            start = time.perf_counter()
            kv.forward(tokens, positions, attend, keep_last=n)
            if i > 0 or n != sizes_sorted[0]:
                times.append(time.perf_counter() - start)
            kv.compact(context, [np.zeros(0, dtype=np.int64)])
            kv.valid[:] = True
        latencies.append(statistics.median(times))
    return LatencyProfile(
        np.asarray(sizes_sorted, dtype=np.int64), np.asarray(latencies, dtype=np.float64), context
    )


def _as_token_lists(prompts: Sequence[Any]) -> list[list[int]]:
    out = []
    for i, p in enumerate(prompts):
        ids = p.reshape(-1).tolist() if isinstance(p, torch.Tensor) else [int(t) for t in p]
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        out.append(ids)
    if not out:
        raise ValueError("`prompts` must hold at least one prompt")
    return out


@torch.inference_mode()
def estimate_acceptance(
    target: Any,
    draft: Any,
    prompts: Sequence[Any],
    *,
    width: int = 8,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    timings: Optional[list[PromptTiming]] = None,
) -> np.ndarray:
    """Estimates Sequoia's acceptance vector ``p[k-1]`` for a target/draft pair, k = 1..width.

    For every prompt the target continues it (greedy, or sampled when `temperature` > 0); then at
    each position of the continuation a star tree of `width` draft candidates is verified the way
    generation will verify it: greedy takes the draft's top-`width` tokens and accepts the one
    equal to the target's argmax; sampling draws them without replacement from the draft and
    applies Sequoia's rule (``choose_sequoia``). ``p[k-1]`` is the fraction of positions
    where the k-th candidate was accepted (``acceptance_vector``).

    Args:
        target, draft: Hugging Face causal LMs sharing a vocabulary.
        prompts: token-id lists or 1-D tensors.
        width: candidates per position.
        max_new_tokens: continuation length per prompt.
        temperature, top_k, top_p: the sampling setting the vector is for (0 = greedy).
        generator: seeded generator for sampling.
        timings: a list that gets one :class:`PromptTiming` per prompt: the wall time of the
            target's ``generate`` and of each model's forward over the whole sequence, which
            is what a prompt's prefill costs (the planner's end-to-end prediction uses them).

    Returns:
        float64 ``[width]``.
    """
    if width < 1:
        raise ValueError(f"`width` must be >= 1, got {width}")
    if max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be >= 1, got {max_new_tokens}")
    if vocab_size(target) != vocab_size(draft):
        raise ValueError(
            f"target and draft must share one vocabulary: {vocab_size(target)} vs "
            f"{vocab_size(draft)} output tokens"
        )
    generator = generator or torch.Generator().manual_seed(0)
    target_device = next(target.parameters()).device
    draft_device = next(draft.parameters()).device
    ranks: list[int] = []
    for ids in _as_token_lists(prompts):
        prompt = torch.tensor([ids], device=target_device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=top_k or 0)
            kwargs["top_p"] = 1.0 if top_p is None else top_p
        else:
            kwargs["do_sample"] = False
        t0 = time.perf_counter()
        full = target.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            pad_token_id=0,
            **kwargs,
        )
        t1 = time.perf_counter()
        start = len(ids) - 1
        t_logits = target(full).logits[0, start:-1].float().cpu()
        t2 = time.perf_counter()
        d_logits = draft(full.to(draft_device)).logits[0, start:-1].float().cpu()
        if timings is not None:
            timings.append(
                PromptTiming(
                    len(ids),
                    int(full.shape[1]) - len(ids),
                    t1 - t0,
                    t2 - t1,
                    time.perf_counter() - t2,
                )
            )
        if temperature <= 0:
            choice = t_logits.argmax(-1)
            top = torch.topk(d_logits, width, dim=-1).indices
            hit = top == choice[:, None]
            found = hit.any(-1)
            ranks.extend(torch.where(found, hit.int().argmax(-1), -1).tolist())
            continue
        p = sampling_probs(t_logits, temperature, top_k, top_p)
        q = sampling_probs(d_logits, temperature, top_k, top_p)
        parents = np.concatenate([[-1], np.zeros(width, dtype=np.int32)]).astype(np.int32)
        for i in range(len(p)):
            k = min(width, int((q[i] > 0).sum()))
            children = gumbel_order(q[i], k, generator)
            tokens = np.concatenate([[0], children.numpy()]).astype(np.int32)
            star = parents[: k + 1]
            target_probs = torch.zeros(k + 1, p.shape[-1])
            draft_probs = torch.zeros(k + 1, p.shape[-1])
            target_probs[:] = p[i]
            draft_probs[:] = q[i]
            choice = np.asarray(choose_sequoia(star, tokens, target_probs, draft_probs, generator))
            accepted = np.flatnonzero(tokens[1:] == choice[0])
            ranks.append(int(accepted[0]) if len(accepted) else -1)
    return np.asarray(acceptance_vector(np.asarray(ranks, dtype=np.int64), width), dtype=np.float64)
