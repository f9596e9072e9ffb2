"""Speculative generation over Hugging Face causal LMs: SpecExec and Sequoia trees, and a chain.

One iteration of :class:`SpeculativeGenerator`:

1. **Draft.** The draft model grows a token tree rooted at the last committed token. SpecExec grows
   it best-first under a node budget (``spec.TreeBuilder``), Sequoia fills a static optimal shape
   (``spec.sequoia_dp``) with the draft's top-ranked (greedy) or sampled-without-replacement tokens,
   and ``chain`` is the classic single chain. Every draft forward appends a block of nodes after the
   committed prefix; each node sees the prefix and its own ancestors only.
2. **Verify.** ONE target forward over the whole tree, appended after the committed prefix, with a
   float additive 4D attention mask (0 = attend, dtype minimum = masked) of shape
   ``(B, 1, n, past + n)`` and explicit position ids ``past + depth``.
3. **Accept.** The target's choice at every node (argmax, one exact sample, or Sequoia's
   rejection rule) is walked down the tree (``spec.walk``); the accepted path plus one bonus
   token is committed.
4. **Compact.** The key/value entries of the accepted path are copied into place in both caches
   (an index-select / gather along the sequence dimension of every layer's keys and values) and the
   caches are cropped. Only public cache API is used (iterate the cache, ``crop``,
   ``batch_select_indices``), so it works with ``DynamicCache`` in transformers 4.42+ and 5.x.

Batches are ragged: rows have their own prompt length, tree and number of accepted tokens. The
shared cache keeps one sequence axis; slots a row does not use are masked out ("holes"), and a row
that stops (EOS or ``max_new_tokens``) is dropped from both caches.

Sampling warps logits in the order Hugging Face ``generate`` applies them: temperature, then
top-k, then top-p; the same warped distribution is used for the target (what is reproduced exactly)
and for the draft (what proposes). ``temperature=0`` means greedy. All modes are lossless: greedy
output equals ``target.generate(do_sample=False)`` token for token (up to floating-point ties), and
sampled output follows the target's warped distribution.

Example:
    >>> from ferrolm import speculative
    >>> gen = spec.SpeculativeGenerator(target, draft, budget=64)  # doctest: +SKIP
    >>> out = gen.generate(input_ids, max_new_tokens=128)  # doctest: +SKIP
    >>> out.sequences, out.stats.tau  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch

__all__ = [
    "DEFAULT_ACCEPTANCE",
    "GenerationStats",
    "SpeculativeGenerator",
    "SpeculativeOutput",
    "sampling_probs",
]

METHODS = ("specexec", "sequoia", "chain")

#: Prior acceptance vector used by Sequoia before calibration: P(the k-th ranked draft candidate
#: is the target's token), k = 1..8; a rough shape of small same-family pairs (top-1 near 0.7).
DEFAULT_ACCEPTANCE = np.array([0.7, 0.1, 0.05, 0.03, 0.02, 0.01, 0.01, 0.01])

_SUPPORTED_ATTENTION = ("sdpa", "eager")


def _spec() -> Any:
    # The tree core (`Tree`, `TreeBuilder`, `walk`, ...) lives in the package namespace; resolve it
    # at call time so this module has no import-order dependency on it.
    from ferrolm import speculative

    return speculative


def sampling_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
) -> torch.Tensor:
    """Warps logits into sampling probabilities: temperature, then top-k, then top-p (HF's order).

    Args:
        logits: float tensor ``[..., V]``.
        temperature: strictly positive divisor of the logits.
        top_k: keep the ``top_k`` largest logits (ties at the boundary are kept), or None.
        top_p: keep the smallest set of tokens whose probability reaches ``top_p`` (at least one),
            or None.

    Returns:
        float32 probabilities ``[..., V]`` summing to one.

    Example:
        >>> sampling_probs(torch.tensor([2.0, 1.0, 0.0]), temperature=1.0, top_k=2).tolist()[2]
        0.0
    """
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0 for sampling, got {temperature}")
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
    return scores.softmax(-1)


@dataclass
class GenerationStats:
    """What one :meth:`SpeculativeGenerator.generate` call did.

    Attributes:
        new_tokens: tokens generated over all rows.
        row_target_calls: target forwards summed over rows (a batched forward counts once per row
            still generating); ``tau`` divides by it.
        target_forwards: batched target forward calls.
        draft_forwards: batched draft forward calls.
        draft_time_s: wall time of the draft phase (tree growth, draft forwards included).
        verify_time_s: wall time of the verify phase (target forward, acceptance, cache compaction).
        forward_time_s: wall time inside the two models' forward calls only.
        total_time_s: wall time of the whole call.
        accepted_ranks: for every verified node on an accepted path that had children, the rank of
            the accepted child (0 = best) or -1 when none was accepted.
        tokens_per_call: new tokens committed per row per target forward.
    """

    new_tokens: int = 0
    row_target_calls: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0
    forward_time_s: float = 0.0
    total_time_s: float = 0.0
    accepted_ranks: list[int] = field(default_factory=list)
    tokens_per_call: list[int] = field(default_factory=list)

    @property
    def tau(self) -> float:
        """Generated tokens per target forward per row, bonus token included."""
        return self.new_tokens / self.row_target_calls if self.row_target_calls else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of wall time (all rows)."""
        return self.new_tokens / self.total_time_s if self.total_time_s > 0 else 0.0

    @property
    def overhead_fraction(self) -> float:
        """Share of the wall time spent outside the two models' forward calls."""
        if self.total_time_s <= 0:
            return 0.0
        return max(0.0, self.total_time_s - self.forward_time_s) / self.total_time_s

    def acceptance_vector(self, width: int = 8) -> np.ndarray:
        """P(the k-th ranked child is accepted), k = 1..width, via ``spec.acceptance_vector``."""
        ranks = np.asarray(self.accepted_ranks, dtype=np.int64)
        if len(ranks) == 0:
            return np.zeros(width)
        ranks = np.where(ranks < width, ranks, -1)  # accepted beyond `width`: not among the first
        return np.asarray(_spec().acceptance_vector(ranks, width), dtype=np.float64)

    def merge(self, other: GenerationStats) -> None:
        """Adds another call's counters to this one (for aggregates over prompts)."""
        for name in (
            "new_tokens",
            "row_target_calls",
            "target_forwards",
            "draft_forwards",
            "draft_time_s",
            "verify_time_s",
            "forward_time_s",
            "total_time_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.accepted_ranks.extend(other.accepted_ranks)
        self.tokens_per_call.extend(other.tokens_per_call)

    def summary(self) -> str:
        """One line: tau, tokens/s and the time split."""
        return (
            f"tau {self.tau:.2f} | {self.tokens_per_s:.2f} tok/s | draft {self.draft_time_s:.2f} s"
            f" | verify {self.verify_time_s:.2f} s | outside forwards "
            f"{100 * self.overhead_fraction:.1f}%"
        )


@dataclass
class SpeculativeOutput:
    """Result of :meth:`SpeculativeGenerator.generate`.

    Attributes:
        sequences: int64 ``[B, T + max_generated]``: the input ids as given (left-padded when the
            input was a list) followed by the new tokens, rows right-padded with ``pad_token_id``
            (the layout of ``target.generate``).
        new_tokens: the new tokens of each row (EOS included when it stopped the row).
        stats: counters and timings.
    """

    sequences: torch.Tensor
    new_tokens: list[list[int]]
    stats: GenerationStats


@dataclass
class _Row:
    index: int
    tokens: list[int]
    prompt_len: int
    max_new: int
    target_cached: int = 0
    draft_cached: int = 0
    done: bool = False

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass
class _Draft:
    """One row's drafted tree plus where its nodes' draft keys/values sit."""

    tree: Any
    slots: np.ndarray  # int64 [n]: draft-cache slot of each node, -1 if the draft never ran it
    draft_probs: Optional[torch.Tensor] = None  # [n, V] warped draft probs (sampled trees)


@dataclass
class _Accepted:
    """One row's verification result: pending chain length, accepted tree path, new tokens."""

    chain_len: int
    path: np.ndarray
    new_tokens: list[int]


def _forward_kwarg(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _logits_kwarg(model: Any) -> Optional[str]:
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def _context_length(model: Any) -> Optional[int]:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _vocab_size(model: Any) -> int:
    emb = model.get_output_embeddings()
    if emb is not None and hasattr(emb, "weight"):
        return int(emb.weight.shape[0])
    return int(model.config.vocab_size)


class _KV:
    """A model plus its DynamicCache and the per-row validity of every cache slot."""

    def __init__(self, model: Any, batch: int, stats: GenerationStats) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.cache = DynamicCache()
        self.valid = torch.zeros(batch, 0, dtype=torch.bool)
        self.cache_kw = _forward_kwarg(model)
        self.logits_kw = _logits_kwarg(model)
        self.stats = stats

    @property
    def length(self) -> int:
        return int(self.valid.shape[1])

    def forward(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        attend: torch.Tensor,
        keep_last: int,
    ) -> torch.Tensor:
        """Runs ids [B, m] at positions [B, m]; attend: bool [B, m, L + m]; returns the logits of
        the last `keep_last` block positions [B, keep_last, V] (float32, CPU)."""
        b, m = ids.shape
        mask = torch.zeros(attend.shape, dtype=self.dtype)
        mask.masked_fill_(~attend, torch.finfo(self.dtype).min)
        kwargs: dict[str, Any] = {
            "input_ids": torch.from_numpy(ids).to(self.device),
            "position_ids": torch.from_numpy(positions).to(self.device),
            "attention_mask": mask[:, None].to(self.device),
            self.cache_kw: self.cache,
            "use_cache": True,
        }
        if self.logits_kw is not None:
            kwargs[self.logits_kw] = keep_last
        start = time.perf_counter()
        logits = self.model(**kwargs).logits[:, -keep_last:]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats.forward_time_s += time.perf_counter() - start
        self.valid = torch.cat([self.valid, torch.zeros(b, m, dtype=torch.bool)], dim=1)
        return logits.float().cpu()

    def compact(self, start: int, keep: list[np.ndarray]) -> None:
        """Moves slots keep[b] (absolute, increasing, >= start) of each row to start, start+1, ...;
        crops the cache to start + max(len(keep[b])); the moved slots become valid."""
        width = max((len(k) for k in keep), default=0)
        end = self.length
        new_valid = torch.zeros(len(keep), start + width, dtype=torch.bool)
        new_valid[:, :start] = self.valid[:, :start]
        for b, k in enumerate(keep):
            new_valid[b, start : start + len(k)] = True
        if len(keep) == 1:
            index = torch.as_tensor(keep[0], dtype=torch.long, device=self.device)
            for layer in self.cache:
                for tensor in (layer[0], layer[1]):
                    tensor[:, :, start : start + width] = tensor.index_select(2, index)
        elif width > 0:
            rel = np.zeros((len(keep), width), dtype=np.int64)
            for b, k in enumerate(keep):
                if len(k):
                    rel[b, : len(k)] = k - start
                    rel[b, len(k) :] = k[-1] - start
            rel_t = torch.from_numpy(rel).to(self.device)
            for layer in self.cache:
                for tensor in (layer[0], layer[1]):
                    bsz, heads, _, dim = tensor.shape
                    index = rel_t[:, None, :, None].expand(bsz, heads, width, dim)
                    moved = torch.gather(tensor[:, :, start:end], 2, index)
                    tensor[:, :, start : start + width] = moved
        removed = end - (start + width)
        if removed > 0:
            self.cache.crop(-removed)
        self.valid = new_valid

    def defragment(self) -> None:
        """Squeezes the holes out of every row (a full gather) once they fill half the cache."""
        length = self.length
        if length < 64 or len(self.valid) < 2:
            return
        counts = self.valid.sum(1)
        if int(counts.max()) * 2 > length:
            return
        keep = [np.flatnonzero(row.numpy()).astype(np.int64) for row in self.valid]
        self.compact(0, keep)

    def select_rows(self, rows: list[int]) -> None:
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.valid = self.valid[torch.as_tensor(rows, dtype=torch.long)]


def _attend_prefix(valid: torch.Tensor, m: int) -> torch.Tensor:
    b, length = valid.shape
    attend = torch.zeros(b, m, length + m, dtype=torch.bool)
    attend[:, :, :length] = valid[:, None, :]
    return attend


def _chain_block(
    chains: list[list[int]], start_positions: list[int], pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Left-padded chain block: ids, positions [B, P], causal block mask [B, P, P], P."""
    width = max(len(c) for c in chains)
    ids = np.full((len(chains), width), pad, dtype=np.int64)
    pos = np.zeros((len(chains), width), dtype=np.int64)
    block = np.zeros((len(chains), width, width), dtype=bool)
    block[:, np.arange(width), np.arange(width)] = True
    for b, chain in enumerate(chains):
        s = width - len(chain)
        ids[b, s:] = chain
        pos[b, s:] = start_positions[b] + np.arange(len(chain))
        block[b, s:, s:] = np.tril(np.ones((len(chain), len(chain)), dtype=bool))
    return ids, pos, block, width


def _subtree_by_depth(tree: Any, max_depth: int, keep: Optional[np.ndarray] = None) -> Any:
    """The nodes of `tree` with depth <= max_depth (and keep[i] True), renumbered; a valid tree."""
    spec = _spec()
    ok = np.asarray(tree.depth) <= max_depth
    if keep is not None:
        ok &= keep
    parents = np.asarray(tree.parents)
    for i in range(1, len(parents)):  # closed under ancestors (parents come first)
        ok[i] = ok[i] and ok[parents[i]]
    if ok.all():
        return tree
    old = np.flatnonzero(ok)
    new_of = np.full(len(parents), -1, dtype=np.int32)
    new_of[old] = np.arange(len(old), dtype=np.int32)
    new_parents = np.where(parents[old] >= 0, new_of[np.maximum(parents[old], 0)], -1)
    return spec.Tree(
        parents=new_parents.astype(np.int32),
        tokens=np.asarray(tree.tokens)[old].astype(np.int32),
        depth=np.asarray(tree.depth)[old].astype(np.int32),
        rank=np.asarray(tree.rank)[old].astype(np.int32),
    )


def _check_attention(model: Any, role: str) -> None:
    impl = getattr(model.config, "_attn_implementation", None)
    if impl is not None and impl not in _SUPPORTED_ATTENTION:
        raise ValueError(
            f"`{role}` uses attn_implementation={impl!r}, which cannot take a custom 4D tree "
            "mask; load it with attn_implementation='sdpa' (or 'eager'), e.g. "
            "AutoModelForCausalLM.from_pretrained(path, attn_implementation='sdpa')"
        )


@torch.inference_mode()
def _probe_tree_mask(model: Any, role: str) -> None:
    """Checks that `model` honours a custom 4D mask and explicit position ids.

    Runs token c after [a, b] the ordinary way, then again as a tree block [b, x, c] where c
    must not see the sibling x; the two logits must agree.
    """
    vocab = _vocab_size(model)
    a, b, x, c = (1 % vocab, 2 % vocab, 3 % vocab, 4 % vocab)
    device = next(model.parameters()).device
    ref = model(input_ids=torch.tensor([[a, b, c]], device=device)).logits[0, -1].float()
    kv = _KV(model, 1, GenerationStats())
    kv.forward(np.array([[a]]), np.array([[0]]), _attend_prefix(kv.valid, 1) | True, keep_last=1)
    kv.valid[:] = True
    attend = _attend_prefix(kv.valid, 3)
    attend[0, :, 1:] = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    got = kv.forward(np.array([[b, x, c]]), np.array([[1, 2, 2]]), attend, keep_last=1)[0, -1]
    err = float((got - ref.cpu()).abs().max())
    scale = float(ref.abs().max()) + 1e-6
    if not err <= 1e-3 * scale + 1e-3:
        impl = getattr(model.config, "_attn_implementation", None)
        raise ValueError(
            f"`{role}` ({type(model).__name__}, attn_implementation={impl!r}) ignores custom 4D "
            f"attention masks or position ids (tree logits differ by {err:.3g}); load it with "
            "attn_implementation='sdpa' (or 'eager')"
        )


class SpeculativeGenerator:
    """Lossless speculative generation for a target/draft pair of Hugging Face causal LMs.

    Args:
        target: the model whose output is reproduced (``AutoModelForCausalLM``, sdpa or eager).
        draft: a smaller model with the same vocabulary and tokenizer.
        method: "specexec" (best-first dynamic tree), "sequoia" (static optimal tree) or
            "chain" (one chain of ``max_depth`` draft tokens).
        budget: tree size in nodes (the root included) for SpecExec and Sequoia.
        max_depth: deepest draft token (SpecExec, Sequoia; the chain length for "chain").
        max_width: children proposed per expanded node (SpecExec).
        expand_per_step: nodes the draft expands per forward (SpecExec); default ``budget // 8``.
        max_draft_steps: draft forwards per iteration after the root (SpecExec); default
            ``max_depth``. Growth also stops when no node could still enter the tree.
        acceptance: Sequoia acceptance vector ``p[k-1]`` = P(k-th ranked draft candidate is the
            target's token); default :data:`DEFAULT_ACCEPTANCE`. See :meth:`calibrate`.
        tree_shape: Sequoia ``(n, d)`` to use instead of ``(budget, max_depth)``.
        tokenizer, draft_tokenizer: when both are given their vocabularies must be identical.
        check_mask: probe both models once for 4D-mask support (a few tiny forwards).

    Raises:
        ValueError: unknown method, bad sizes, different vocabularies, or an attention
            implementation that cannot take a 4D mask (the message names the one to use).

    Example:
        >>> gen = SpeculativeGenerator(target, draft, method="sequoia", budget=64)  # doctest: +SKIP
        >>> out = gen.generate(tok("def fib(n):", return_tensors="pt").input_ids,
        ...                    max_new_tokens=64)  # doctest: +SKIP
        >>> print(out.stats.summary())  # doctest: +SKIP
    """

    def __init__(
        self,
        target: Any,
        draft: Any,
        method: str = "specexec",
        budget: int = 64,
        *,
        max_depth: Optional[int] = None,
        max_width: int = 8,
        expand_per_step: Optional[int] = None,
        max_draft_steps: Optional[int] = None,
        acceptance: Optional[Sequence[float]] = None,
        tree_shape: Optional[tuple[int, int]] = None,
        tokenizer: Any = None,
        draft_tokenizer: Any = None,
        check_mask: bool = True,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"`budget` must be an int >= 1, got {budget!r}")
        if max_depth is None:
            max_depth = 4 if method == "chain" else 12
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"`max_depth` must be an int >= 1, got {max_depth!r}")
        if not isinstance(max_width, int) or max_width < 1:
            raise ValueError(f"`max_width` must be an int >= 1, got {max_width!r}")
        for role, model in (("target", target), ("draft", draft)):
            if not hasattr(model, "config") or not callable(getattr(model, "forward", None)):
                raise TypeError(
                    f"`{role}` must be a Hugging Face causal LM (a PreTrainedModel), "
                    f"got {type(model).__name__}"
                )
            if getattr(model.config, "is_encoder_decoder", False):
                raise ValueError(f"`{role}` must be a decoder-only causal LM, got encoder-decoder")
            _check_attention(model, role)
        v_target, v_draft = _vocab_size(target), _vocab_size(draft)
        if v_target != v_draft:
            raise ValueError(
                f"target and draft must share one vocabulary: target has {v_target} output "
                f"tokens, draft has {v_draft}; pick a draft from the target's model family"
            )
        if (
            tokenizer is not None
            and draft_tokenizer is not None
            and tokenizer.get_vocab() != draft_tokenizer.get_vocab()
        ):
            raise ValueError(
                "`tokenizer` and `draft_tokenizer` map tokens to different ids; speculative "
                "decoding needs the draft to use the target's tokenizer"
            )
        self.target, self.draft = target, draft
        self.method, self.budget = method, budget
        self.max_depth, self.max_width = max_depth, max_width
        self.expand_per_step = expand_per_step or max(1, budget // 8)
        self.max_draft_steps = max_draft_steps or max_depth
        self.vocab_size = v_target
        self.tokenizer = tokenizer
        self.acceptance = np.asarray(
            DEFAULT_ACCEPTANCE if acceptance is None else acceptance, dtype=np.float64
        )
        if self.acceptance.ndim != 1 or len(self.acceptance) == 0:
            raise ValueError(
                f"`acceptance` must be a non-empty 1-D sequence, got shape {self.acceptance.shape}"
            )
        self.tree_shape = tree_shape
        self._static_shape: Optional[Any] = None
        self.context_length = _context_length(target)
        self._on_iteration: Optional[Any] = None
        self._generator: Optional[torch.Generator] = None
        self._sampling: Optional[tuple[float, Optional[int], Optional[float]]] = None
        self._draft_start = 0
        if check_mask:
            for role, model in (("target", target), ("draft", draft)):
                try:
                    _probe_tree_mask(model, role)
                except (KeyError, IndexError, TypeError, AttributeError, RuntimeError) as e:
                    import transformers

                    raise ValueError(
                        f"`{role}` ({type(model).__name__}) cannot run with a DynamicCache, a "
                        f"custom 4D mask and explicit position ids under transformers "
                        f"{transformers.__version__} ({type(e).__name__}: {e}); upgrade "
                        "transformers (checked: 5.24 for Llama, Qwen2, Mistral and GPT-2; 4.46 "
                        "for Llama, Qwen2 and Mistral) and use attn_implementation='sdpa' or "
                        "'eager'"
                    ) from e

    # ----------------------------------------------------------------------------- shapes

    def static_tree(self) -> Any:
        """The tree shape Sequoia or chain fills every iteration (tokens -1)."""
        if self._static_shape is None:
            spec = _spec()
            if self.method == "chain":
                d = self.max_depth
                self._static_shape = spec.Tree(
                    parents=np.arange(-1, d, dtype=np.int32),
                    tokens=np.full(d + 1, -1, dtype=np.int32),
                    depth=np.arange(d + 1, dtype=np.int32),
                    rank=np.zeros(d + 1, dtype=np.int32),
                )
            else:
                n, d = self.tree_shape or (self.budget, self.max_depth)
                table = spec.sequoia_dp(self.acceptance, max_nodes=n, max_depth=d)
                self._static_shape = table.tree(n, d)
        return self._static_shape

    def calibrate(
        self,
        prompts: Sequence[Any],
        *,
        sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        max_depth: Optional[int] = None,
    ) -> Any:
        """Measures acceptance and latencies on this device, then picks Sequoia's (n, d).

        Runs :func:`ferrolm.speculative.estimate_acceptance` on `prompts`,
        :func:`ferrolm.speculative.profile` on the target for `sizes` and on the draft for one
        expansion width, and sets ``acceptance`` and ``tree_shape`` from
        :func:`ferrolm.speculative.plan`.

        Returns:
            the ``spec.Plan`` chosen.
        """
        from ferrolm.speculative.profile import estimate_acceptance, profile

        spec = _spec()
        depth = max_depth or self.max_depth
        self.acceptance = estimate_acceptance(
            self.target,
            self.draft,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
        )
        sizes = sorted({int(s) for s in sizes if s >= 1} | {1})
        verify = profile(self.target, sizes)
        draft_step = profile(self.draft, [max(sizes) // max(depth, 1) or 1])
        table = spec.sequoia_dp(self.acceptance, max_nodes=max(sizes), max_depth=depth)
        chosen = spec.plan(table, sizes, verify.latency_s, float(draft_step.latency_s[0]))
        self.tree_shape = (int(chosen.n), max(1, int(chosen.d)))
        self._static_shape = None
        return chosen

    # ----------------------------------------------------------------------------- inputs

    def _rows(
        self, input_ids: Any, attention_mask: Any, max_new_tokens: int
    ) -> tuple[list[_Row], torch.Tensor]:
        if isinstance(input_ids, torch.Tensor):
            if input_ids.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"`input_ids` must be int64 or int32, got {input_ids.dtype}")
            if input_ids.ndim == 1:
                input_ids = input_ids[None]
            if input_ids.ndim != 2:
                raise ValueError(
                    f"`input_ids` must be [batch, length], got shape {tuple(input_ids.shape)}"
                )
            ids = input_ids.detach().cpu().long()
            if attention_mask is None:
                mask = torch.ones_like(ids, dtype=torch.bool)
            else:
                if tuple(attention_mask.shape) != tuple(ids.shape):
                    raise ValueError(
                        f"`attention_mask` must have the shape of `input_ids` {tuple(ids.shape)}, "
                        f"got {tuple(attention_mask.shape)}"
                    )
                mask = attention_mask.detach().cpu().bool()
            prompts = [ids[b][mask[b]].tolist() for b in range(len(ids))]
            layout = ids
        else:
            if isinstance(input_ids, (str, bytes)) or not isinstance(input_ids, Sequence):
                raise TypeError(
                    "`input_ids` must be a LongTensor [batch, length] or a list of token-id "
                    f"lists, got {type(input_ids).__name__}"
                )
            prompts = [
                [int(t) for t in (p.tolist() if isinstance(p, torch.Tensor) else p)]
                for p in input_ids
            ]
            layout = None
        if len(prompts) == 0:
            raise ValueError("`input_ids` must hold at least one prompt, got an empty batch")
        for b, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(
                    f"prompt {b} is empty: speculative decoding needs at least one token to "
                    "condition on (e.g. the BOS token)"
                )
            bad = [t for t in prompt if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(
                    f"prompt {b} has token ids outside [0, {self.vocab_size}): {bad[:5]}"
                )
            if self.context_length is not None and len(prompt) + max_new_tokens > (
                self.context_length
            ):
                raise ValueError(
                    f"prompt {b} has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} "
                    f"it exceeds the target's context of {self.context_length} positions: "
                    "shorten the prompt or lower max_new_tokens"
                )
        if layout is None:
            width = max(len(p) for p in prompts)
            layout = torch.zeros(len(prompts), width, dtype=torch.long)
            for b, prompt in enumerate(prompts):
                layout[b, width - len(prompt) :] = torch.tensor(prompt)
        rows = [_Row(b, list(p), len(p), max_new_tokens) for b, p in enumerate(prompts)]
        return rows, layout

    # ----------------------------------------------------------------------------- generate

    @torch.inference_mode()
    def generate(
        self,
        input_ids: Union[torch.Tensor, Sequence[Sequence[int]]],
        attention_mask: Optional[torch.Tensor] = None,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        eos_token_id: Union[int, Sequence[int], None] = None,
        pad_token_id: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        streamer: Any = None,
    ) -> SpeculativeOutput:
        """Generates up to `max_new_tokens` per row, stopping each row at EOS.

        Args:
            input_ids: int64 ``[B, T]`` (with `attention_mask` for padded rows; padding on either
                side) or a list of token-id lists of any lengths.
            attention_mask: 1 for real tokens, 0 for padding; default all ones.
            max_new_tokens: >= 0.
            temperature: 0 for greedy; > 0 samples from the target's warped distribution
                (temperature, then top-k, then top-p).
            top_k, top_p: sampling filters (ignored when greedy).
            eos_token_id: token id(s) that stop a row; default the target's generation config.
            pad_token_id: fills finished rows in ``sequences``; default the generation config's
                pad id, else the first EOS id, else 0.
            generator: a seeded ``torch.Generator`` (CPU) for sampling.
            streamer: an object with ``put(LongTensor)`` and ``end()`` (e.g. HF's
                ``TextStreamer``); gets the prompt, then each iteration's new tokens (batch 1).

        Returns:
            :class:`SpeculativeOutput`.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"`max_new_tokens` must be an int >= 0, got {max_new_tokens!r}")
        if not temperature >= 0:
            raise ValueError(f"`temperature` must be >= 0, got {temperature}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be an int >= 1 or None, got {top_k!r}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"`top_p` must be in (0, 1] or None, got {top_p!r}")
        rows, layout = self._rows(input_ids, attention_mask, max_new_tokens)
        if streamer is not None and len(rows) != 1:
            raise ValueError(f"`streamer` needs a batch of 1, got {len(rows)} rows")
        config = getattr(self.target, "generation_config", None)
        if eos_token_id is None and config is not None:
            eos_token_id = config.eos_token_id
        eos = (
            set()
            if eos_token_id is None
            else {int(eos_token_id)}
            if isinstance(eos_token_id, int)
            else {int(e) for e in eos_token_id}
        )
        if pad_token_id is None:
            pad_token_id = getattr(config, "pad_token_id", None) if config is not None else None
        if pad_token_id is None:
            pad_token_id = min(eos) if eos else 0
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        sampling = temperature > 0
        self._generator = generator
        self._sampling = (temperature, top_k, top_p) if sampling else None
        stats = GenerationStats()
        start = time.perf_counter()
        if streamer is not None:
            streamer.put(torch.tensor(rows[0].tokens))
        active = [r for r in rows if r.max_new > 0]
        if active:
            self._loop(active, eos, int(pad_token_id), generator, streamer, stats)
        if streamer is not None:
            streamer.end()
        stats.total_time_s = time.perf_counter() - start
        new = [r.tokens[r.prompt_len :] for r in rows]
        width = max((len(n) for n in new), default=0)
        tail = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
        for b, n in enumerate(new):
            tail[b, : len(n)] = torch.tensor(n, dtype=torch.long)
        return SpeculativeOutput(torch.cat([layout, tail], dim=1), new, stats)

    def _loop(
        self,
        rows: list[_Row],
        eos: set[int],
        pad: int,
        generator: torch.Generator,
        streamer: Any,
        stats: GenerationStats,
    ) -> None:
        target = _KV(self.target, len(rows), stats)
        draft = _KV(self.draft, len(rows), stats)
        while rows:
            t0 = time.perf_counter()
            drafts = self._draft(rows, draft, pad, stats)
            t1 = time.perf_counter()
            stats.draft_time_s += t1 - t0
            accepted = self._verify(rows, drafts, target, pad, generator, stats)
            self._commit_draft(rows, drafts, accepted, draft)
            for row, acc in zip(rows, accepted):
                new_tokens = acc.new_tokens[: row.max_new - row.generated]
                for i, token in enumerate(new_tokens):
                    if token in eos:
                        new_tokens = new_tokens[: i + 1]
                        row.done = True
                        break
                row.tokens.extend(new_tokens)
                row.target_cached += acc.chain_len + len(acc.path)
                if row.generated >= row.max_new:
                    row.done = True
                stats.new_tokens += len(new_tokens)
                stats.tokens_per_call.append(len(new_tokens))
                if streamer is not None:
                    streamer.put(torch.tensor(new_tokens, dtype=torch.long))
            stats.row_target_calls += len(rows)
            keep = [i for i, r in enumerate(rows) if not r.done]
            if len(keep) < len(rows):
                rows = [rows[i] for i in keep]
                if rows:
                    target.select_rows(keep)
                    draft.select_rows(keep)
            target.defragment()
            draft.defragment()
            stats.verify_time_s += time.perf_counter() - t1
            if self._on_iteration is not None:  # test hook: inspect caches between iterations
                self._on_iteration(rows, target, draft)

    # ----------------------------------------------------------------------------- draft

    def _depth_cap(self, row: _Row) -> int:
        # No point drafting past the tokens still wanted (the bonus token adds one); this also
        # keeps every position inside the context checked in `_rows`.
        return max(0, min(self.max_depth, row.max_new - row.generated - 1))

    def _draft_logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        if self._sampling is None:
            return torch.log_softmax(logits, dim=-1)
        return sampling_probs(logits, *self._sampling).log()

    def _draft_pending(
        self, rows: list[_Row], kv: _KV, pad: int, stats: GenerationStats
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Runs each row's committed tokens the draft has not seen (ending with the root);
        returns the root logits [B, V] and the root slots."""
        chains = [r.tokens[r.draft_cached :] for r in rows]
        ids, pos, block, width = _chain_block(chains, [r.draft_cached for r in rows], pad)
        length = kv.length
        attend = _attend_prefix(kv.valid, width)
        attend[:, :, length:] = torch.from_numpy(block)
        logits = kv.forward(ids, pos, attend, keep_last=1)[:, 0]
        stats.draft_forwards += 1
        for b, chain in enumerate(chains):
            kv.valid[b, length + width - len(chain) : length + width] = True
            rows[b].draft_cached += len(chain)
        root_slots = np.full(len(rows), length + width - 1, dtype=np.int64)
        return logits, root_slots

    def _run_nodes(
        self,
        kv: _KV,
        nodes: list[np.ndarray],
        tokens: list[np.ndarray],
        positions: list[np.ndarray],
        ancestor_slots: list[list[list[int]]],
        pad: int,
        stats: GenerationStats,
    ) -> tuple[torch.Tensor, list[np.ndarray]]:
        """One draft forward over mutually unrelated tree nodes (per row); each sees the committed
        prefix and the slots of its already-run ancestors. Returns logits [B, M, V], slots."""
        width = max(len(n) for n in nodes)
        length = kv.length
        ids = np.full((len(nodes), width), pad, dtype=np.int64)
        pos = np.zeros((len(nodes), width), dtype=np.int64)
        attend = _attend_prefix(kv.valid, width)
        attend[:, torch.arange(width), length + torch.arange(width)] = True
        rows_i: list[int] = []
        cols_i: list[int] = []
        slot_i: list[int] = []
        slots = []
        for b in range(len(nodes)):
            k = len(nodes[b])
            ids[b, :k] = tokens[b]
            pos[b, :k] = positions[b]
            for j, anc in enumerate(ancestor_slots[b]):
                rows_i.extend([b] * len(anc))
                cols_i.extend([j] * len(anc))
                slot_i.extend(anc)
            slots.append(length + np.arange(k, dtype=np.int64))
        if slot_i:
            attend[rows_i, cols_i, slot_i] = True
        logits = kv.forward(ids, pos, attend, keep_last=width)
        stats.draft_forwards += 1
        return logits, slots

    def _draft(self, rows: list[_Row], kv: _KV, pad: int, stats: GenerationStats) -> list[_Draft]:
        self._draft_start = kv.length
        if self.method == "specexec":
            return self._draft_specexec(rows, kv, pad, stats)
        return self._draft_static(rows, kv, pad, stats)

    def _draft_specexec(
        self, rows: list[_Row], kv: _KV, pad: int, stats: GenerationStats
    ) -> list[_Draft]:
        spec = _spec()
        root_logits, root_slots = self._draft_pending(rows, kv, pad, stats)
        width = min(self.max_width, self.vocab_size)
        builders: list[Optional[Any]] = []
        # Per row, by builder ("old") id: token, parent, depth, draft slot, ancestor slots.
        info: list[dict[str, list[Any]]] = []
        for b, row in enumerate(rows):
            cap = self._depth_cap(row)
            root = row.tokens[-1]
            node = {"token": [root], "parent": [-1], "depth": [0], "slot": [int(root_slots[b])]}
            node["anc"] = [[]]
            info.append(node)
            if cap == 0 or self.budget == 1:
                builders.append(None)
                continue
            builder = spec.TreeBuilder(root, self.budget, max_depth=cap, max_width=width)
            builders.append(builder)
            top = torch.topk(self._draft_logprobs(root_logits[b]), width)
            self._expand(builder, node, np.array([0], dtype=np.int32), top)
        for _ in range(self.max_draft_steps):
            frontier = [
                b_.frontier(self.expand_per_step) if b_ is not None else np.zeros(0, np.int32)
                for b_ in builders
            ]
            if all(len(f) == 0 for f in frontier):
                break
            live = [b for b in range(len(rows)) if len(frontier[b])]
            logits, slots = self._run_nodes_subset(kv, rows, live, frontier, info, pad, stats)
            for j, b in enumerate(live):
                for i, node_id in enumerate(frontier[b]):
                    info[b]["slot"][node_id] = int(slots[j][i])
                top = torch.topk(self._draft_logprobs(logits[j, : len(frontier[b])]), width)
                self._expand(builders[b], info[b], frontier[b], top)
        drafts = []
        for b, row in enumerate(rows):
            builder = builders[b]
            if builder is None:
                tree = spec.Tree(
                    parents=np.array([-1], dtype=np.int32),
                    tokens=np.array([row.tokens[-1]], dtype=np.int32),
                    depth=np.zeros(1, dtype=np.int32),
                    rank=np.zeros(1, dtype=np.int32),
                )
                drafts.append(_Draft(tree, np.array([root_slots[b]], dtype=np.int64)))
                continue
            tree, old_to_new = builder.finalize()
            old_to_new = np.asarray(old_to_new)
            slots = np.full(len(tree.parents), -1, dtype=np.int64)
            old_slots = np.asarray(info[b]["slot"], dtype=np.int64)
            kept = np.flatnonzero(old_to_new >= 0)
            slots[old_to_new[kept]] = old_slots[kept]
            drafts.append(_Draft(tree, slots))
        return drafts

    def _run_nodes_subset(
        self,
        kv: _KV,
        rows: list[_Row],
        live: list[int],
        frontier: list[np.ndarray],
        info: list[dict[str, list[Any]]],
        pad: int,
        stats: GenerationStats,
    ) -> tuple[torch.Tensor, list[np.ndarray]]:
        """`_run_nodes` for the rows in `live`; rows with nothing to expand get one pad query."""
        nodes, tokens, positions, ancestors = [], [], [], []
        live_set = set(live)
        for b in range(len(rows)):
            if b in live_set:
                ids = frontier[b]
                nodes.append(ids)
                tokens.append(np.asarray([info[b]["token"][i] for i in ids], dtype=np.int64))
                positions.append(
                    np.asarray(
                        [rows[b].draft_cached - 1 + info[b]["depth"][i] for i in ids],
                        dtype=np.int64,
                    )
                )
                ancestors.append([info[b]["anc"][i] for i in ids])
            else:
                nodes.append(np.zeros(0, dtype=np.int32))
                tokens.append(np.zeros(0, dtype=np.int64))
                positions.append(np.zeros(0, dtype=np.int64))
                ancestors.append([])
        logits, slots = self._run_nodes(kv, nodes, tokens, positions, ancestors, pad, stats)
        return logits[live], [slots[b] for b in live]

    def _expand(
        self, builder: Any, node: dict[str, list[Any]], parents: np.ndarray, top: Any
    ) -> None:
        child_tokens = top.indices.reshape(len(parents), -1)
        # -inf (filtered out by top-k / top-p) is never kept by the builder
        child_logprobs = top.values.reshape(len(parents), -1).float()
        ids = np.asarray(
            builder.expand(
                parents.astype(np.int32),
                child_tokens.numpy().astype(np.int64),
                child_logprobs.numpy().astype(np.float32),
            )
        )
        for r, parent in enumerate(parents):
            parent = int(parent)
            anc = node["anc"][parent] + ([node["slot"][parent]] if parent != 0 else [])
            for j in np.flatnonzero(ids[r] >= 0):
                new_id = int(ids[r, j])
                while len(node["token"]) <= new_id:  # ids the builder gave then dropped
                    for key, empty in (("token", -1), ("parent", -1), ("depth", 0), ("slot", -1)):
                        node[key].append(empty)
                    node["anc"].append([])
                node["token"][new_id] = int(child_tokens[r, j])
                node["parent"][new_id] = parent
                node["depth"][new_id] = node["depth"][parent] + 1
                node["slot"][new_id] = -1
                node["anc"][new_id] = anc

    def _draft_static(
        self, rows: list[_Row], kv: _KV, pad: int, stats: GenerationStats
    ) -> list[_Draft]:
        spec = _spec()
        shape = self.static_tree()
        root_logits, root_slots = self._draft_pending(rows, kv, pad, stats)
        trees, tokens, slots, probs, valid, children = [], [], [], [], [], []
        for b, row in enumerate(rows):
            tree = _subtree_by_depth(shape, self._depth_cap(row))
            n = len(tree.parents)
            trees.append(tree)
            tok = np.full(n, -1, dtype=np.int64)
            tok[0] = row.tokens[-1]
            tokens.append(tok)
            s = np.full(n, -1, dtype=np.int64)
            s[0] = root_slots[b]
            slots.append(s)
            probs.append(torch.zeros(n, self.vocab_size) if self._sampling is not None else None)
            valid.append(np.ones(n, dtype=bool))
            kids: list[list[int]] = [[] for _ in range(n)]
            for i in range(1, n):
                kids[int(tree.parents[i])].append(i)
            for i in range(n):
                kids[i].sort(key=lambda c, tree=tree: int(tree.rank[c]))
            children.append(kids)
        for b in range(len(rows)):
            self._fill_children(b, 0, root_logits[b], trees, tokens, probs, valid, children)
        max_depth = max(int(t.depth.max()) for t in trees)
        for level in range(1, max_depth):
            nodes = [
                np.asarray(
                    [
                        i
                        for i in np.flatnonzero(np.asarray(trees[b].depth) == level)
                        if valid[b][i] and children[b][i]
                    ],
                    dtype=np.int64,
                )
                for b in range(len(rows))
            ]
            if all(len(n) == 0 for n in nodes):
                break
            ancestors = []
            for b in range(len(rows)):
                parents = np.asarray(trees[b].parents)
                per_node = []
                for i in nodes[b]:
                    anc, p = [], int(parents[i])
                    while p > 0:
                        anc.append(int(slots[b][p]))
                        p = int(parents[p])
                    per_node.append(anc)
                ancestors.append(per_node)
            logits, new_slots = self._run_nodes(
                kv,
                [n for n in nodes],
                [tokens[b][nodes[b]] for b in range(len(rows))],
                [
                    np.full(len(nodes[b]), rows[b].draft_cached - 1 + level)
                    for b in range(len(rows))
                ],
                ancestors,
                pad,
                stats,
            )
            for b in range(len(rows)):
                for j, i in enumerate(nodes[b]):
                    slots[b][i] = new_slots[b][j]
                    self._fill_children(
                        b, int(i), logits[b, j], trees, tokens, probs, valid, children
                    )
        drafts = []
        for b in range(len(rows)):
            tree = spec.Tree(
                parents=np.asarray(trees[b].parents, dtype=np.int32),
                tokens=tokens[b].astype(np.int32),
                depth=np.asarray(trees[b].depth, dtype=np.int32),
                rank=np.asarray(trees[b].rank, dtype=np.int32),
            )
            if not valid[b].all():
                old = np.flatnonzero(valid[b])
                tree = _subtree_by_depth(tree, 10**9, valid[b])
                drafts.append(
                    _Draft(tree, slots[b][old], probs[b][old] if probs[b] is not None else None)
                )
            else:
                drafts.append(_Draft(tree, slots[b], probs[b]))
        return drafts

    def _fill_children(
        self,
        b: int,
        node: int,
        logits: torch.Tensor,
        trees: list[Any],
        tokens: list[np.ndarray],
        probs: list[Optional[torch.Tensor]],
        valid: list[np.ndarray],
        children: list[list[list[int]]],
    ) -> None:
        kids = children[b][node]
        if not kids:
            return
        ranks = [int(trees[b].rank[c]) for c in kids]
        needed = min(max(ranks) + 1, self.vocab_size)
        if self._sampling is None:
            order = torch.topk(logits, needed).indices
            available = needed
        else:
            q = sampling_probs(logits, *self._sampling)
            probs[b][node] = q  # type: ignore[index]
            # Gumbel-top-k: an ordered sample without replacement from q.
            u = torch.rand(q.shape, generator=self._generator).clamp_(min=1e-20)
            keys = q.log() - (-u.log()).log()
            order = torch.topk(keys, needed).indices
            available = int((q > 0).sum())
        for c, r in zip(kids, ranks):
            if r < available and r < len(order):
                tokens[b][c] = int(order[r])
            else:
                valid[b][c] = False

    # ----------------------------------------------------------------------------- verify

    def _verify(
        self,
        rows: list[_Row],
        drafts: list[_Draft],
        kv: _KV,
        pad: int,
        generator: torch.Generator,
        stats: GenerationStats,
    ) -> list[_Accepted]:
        """One target forward over every row's tree; returns per row (kept target slots, new
        tokens) and compacts the target cache."""
        spec = _spec()
        chains = [r.tokens[r.target_cached : -1] for r in rows]
        sizes = [len(d.tree.parents) for d in drafts]
        width_chain = max(len(c) for c in chains)
        width_tree = max(sizes)
        m = width_chain + width_tree
        length = kv.length
        ids = np.full((len(rows), m), pad, dtype=np.int64)
        pos = np.zeros((len(rows), m), dtype=np.int64)
        block = np.zeros((len(rows), m, m), dtype=bool)
        block[:, np.arange(m), np.arange(m)] = True
        for b, (row, chain, d) in enumerate(zip(rows, chains, drafts)):
            s = width_chain - len(chain)
            ids[b, s:width_chain] = chain
            pos[b, s:width_chain] = row.target_cached + np.arange(len(chain))
            block[b, s:width_chain, s:width_chain] = np.tril(
                np.ones((len(chain), len(chain)), dtype=bool)
            )
            n = sizes[b]
            t0 = width_chain
            ids[b, t0 : t0 + n] = d.tree.tokens
            pos[b, t0 : t0 + n] = spec.position_ids(d.tree.parents, len(row.tokens) - 1)
            block[b, t0 : t0 + n, s:width_chain] = True
            block[b, t0 : t0 + n, t0 : t0 + n] = spec.ancestor_mask(d.tree.parents)
        attend = _attend_prefix(kv.valid, m)
        attend[:, :, length:] = torch.from_numpy(block)
        logits = kv.forward(ids, pos, attend, keep_last=width_tree)
        stats.target_forwards += 1
        results = []
        keep = []
        for b, d in enumerate(drafts):
            n = sizes[b]
            node_logits = logits[b, :n]
            parents = np.asarray(d.tree.parents)
            tokens = np.asarray(d.tree.tokens)
            if self._sampling is None:
                choice = spec.choose_greedy(node_logits)
            else:
                target_probs = sampling_probs(node_logits, *self._sampling)
                if self.method == "specexec":
                    choice = spec.choose_sample(target_probs, generator)
                else:
                    assert d.draft_probs is not None
                    # Leaves have no draft distribution (nothing was sampled from them); any
                    # valid row will do, the rule only reads it for children.
                    empty = d.draft_probs.sum(-1) <= 0
                    draft_probs = torch.where(empty[:, None], target_probs, d.draft_probs)
                    choice = spec.choose_sequoia(
                        parents, tokens, target_probs, draft_probs, generator
                    )
            path, bonus = spec.walk(parents, tokens, np.asarray(choice, dtype=np.int64))
            path = np.asarray(path, dtype=np.int64)
            self._record_ranks(d.tree, path, stats)
            new_tokens = [int(t) for t in tokens[path[1:]]] + [int(bonus)]
            s = width_chain - len(chains[b])
            slots = np.concatenate(
                [length + np.arange(s, width_chain), length + width_chain + path]
            ).astype(np.int64)
            keep.append(slots)
            results.append(_Accepted(len(chains[b]), path, new_tokens))
        kv.compact(length, keep)
        return results

    @staticmethod
    def _record_ranks(tree: Any, path: np.ndarray, stats: GenerationStats) -> None:
        parents = np.asarray(tree.parents)
        has_children = np.zeros(len(parents), dtype=bool)
        has_children[parents[1:]] = True
        rank = np.asarray(tree.rank)
        for i, node in enumerate(path):
            if not has_children[node]:
                break
            stats.accepted_ranks.append(int(rank[path[i + 1]]) if i + 1 < len(path) else -1)

    def _commit_draft(
        self,
        rows: list[_Row],
        drafts: list[_Draft],
        accepted: list[_Accepted],
        kv: _KV,
    ) -> None:
        """Keeps in the draft cache the accepted nodes the draft already ran (the root is already
        committed), and drops the rest of this iteration's tree slots."""
        start = self._draft_start
        keep = []
        for b, (row, d, acc) in enumerate(zip(rows, drafts, accepted)):
            # Valid slots from `start` on are this iteration's pending chain (root included).
            committed = np.flatnonzero(kv.valid[b, start:].numpy()) + start
            slots = d.slots[acc.path[1:]]
            ran = slots[: int(np.argmax(slots < 0)) if (slots < 0).any() else len(slots)]
            keep.append(np.concatenate([committed, ran]).astype(np.int64))
            row.draft_cached += len(ran)
        kv.compact(start, keep)
