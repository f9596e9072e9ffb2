"""Speculative generation over Hugging Face causal LMs: SpecExec and Sequoia trees, and a chain.

One iteration of :class:`SpeculativeGenerator`:

1. **Draft.** The draft model grows a token tree rooted at the last committed token
   (:mod:`ferrolm.speculative.drafters`). SpecExec grows it best-first under a node budget,
   Sequoia fills a static optimal shape (``sequoia_dp``) with the draft's top-ranked (greedy) or
   sampled-without-replacement tokens, and ``chain`` is the classic single chain. Every draft
   forward appends a block of nodes after the committed prefix; each node sees the prefix and its
   own ancestors only.
2. **Verify.** ONE target forward over the whole tree, appended after the committed prefix, with a
   float additive 4D attention mask (0 = attend, dtype minimum = masked) of shape
   ``(B, 1, n, past + n)`` and explicit position ids ``past + depth``.
3. **Accept.** The target's choice at every node (argmax, one exact sample, or Sequoia's
   rejection rule) is walked down the tree (``walk``); the accepted path plus one bonus
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
    >>> gen = speculative.SpeculativeGenerator(target, draft, budget=64)  # doctest: +SKIP
    >>> out = gen.generate(input_ids, max_new_tokens=128)  # doctest: +SKIP
    >>> out.sequences, out.stats.tau  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt
import torch

from ferrolm.speculative._arrays import check_acceptance, check_int, check_optional_int
from ferrolm.speculative.drafters import Draft, Drafter, SpecExecDrafter, StaticDrafter
from ferrolm.speculative.hf import check_causal_lm, context_length, vocab_size
from ferrolm.speculative.kv_cache import RaggedKVCache, attend_prefix, chain_block, probe_tree_mask
from ferrolm.speculative.profile import estimate_acceptance, profile
from ferrolm.speculative.rows import Row, prompt_rows
from ferrolm.speculative.sampling import Warp
from ferrolm.speculative.sequoia import Plan, plan, sequoia_dp
from ferrolm.speculative.stats import GenerationStats, SpeculativeOutput
from ferrolm.speculative.tree import Tree, ancestor_mask, position_ids, walk
from ferrolm.speculative.verify import choose_greedy, choose_sample, choose_sequoia

__all__ = ["DEFAULT_ACCEPTANCE", "METHODS", "SpeculativeGenerator"]

Int64Array = npt.NDArray[np.int64]

#: Drafting methods: SpecExec's best-first tree, Sequoia's static tree, a single chain.
METHODS = ("specexec", "sequoia", "chain")

#: Prior acceptance vector used by Sequoia before calibration: P(the k-th ranked draft candidate
#: is the target's token), k = 1..8; a rough shape of small same-family pairs (top-1 near 0.7).
DEFAULT_ACCEPTANCE = np.array([0.7, 0.1, 0.05, 0.03, 0.02, 0.01, 0.01, 0.01])


@dataclass
class _Accepted:
    """One row's verification result: pending chain length, accepted tree path, new tokens."""

    chain_len: int
    path: Int64Array
    new_tokens: list[int]


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
        # Every plain argument is checked before the models are probed.
        expand = check_optional_int(expand_per_step, "expand_per_step", 1)
        steps = check_optional_int(max_draft_steps, "max_draft_steps", 1)
        p = check_acceptance(DEFAULT_ACCEPTANCE if acceptance is None else acceptance, "acceptance")
        if tree_shape is not None:
            if not isinstance(tree_shape, (tuple, list)) or len(tree_shape) != 2:
                raise TypeError(f"`tree_shape` must be a pair (n, d), got {tree_shape!r}")
            tree_shape = (
                check_int(tree_shape[0], "tree_shape[0]", 1),
                check_int(tree_shape[1], "tree_shape[1]", 0),
            )
        check_causal_lm(target, "target")
        check_causal_lm(draft, "draft")
        v_target, v_draft = vocab_size(target), vocab_size(draft)
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
        self.expand_per_step = expand or max(1, budget // 8)
        self.max_draft_steps = steps or max_depth
        self.vocab_size = v_target
        self.tokenizer = tokenizer
        self.acceptance = p
        self.tree_shape = tree_shape
        self._static_shape: Optional[Tree] = None
        self.context_length = context_length(target)
        # Test hook: called with (rows, target cache, draft cache) after every iteration.
        self._on_iteration: Optional[Callable[[list[Row], Any, Any], None]] = None
        if check_mask:
            probe_tree_mask(target, "target")
            probe_tree_mask(draft, "draft")

    # ----------------------------------------------------------------------------- shapes

    def static_tree(self) -> Tree:
        """The tree shape Sequoia or chain fills every iteration (tokens -1)."""
        if self._static_shape is None:
            if self.method == "chain":
                d = self.max_depth
                self._static_shape = Tree(
                    parents=np.arange(-1, d, dtype=np.int32),
                    tokens=np.full(d + 1, -1, dtype=np.int32),
                    depth=np.arange(d + 1, dtype=np.int32),
                    rank=np.zeros(d + 1, dtype=np.int32),
                )
            else:
                n, d = self.tree_shape or (self.budget, self.max_depth)
                table = sequoia_dp(self.acceptance, max_nodes=n, max_depth=d)
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
    ) -> Plan:
        """Measures acceptance and latencies on this device, then picks Sequoia's (n, d).

        Runs :func:`ferrolm.speculative.estimate_acceptance` on `prompts`,
        :func:`ferrolm.speculative.profile` on the target for `sizes` and on the draft for one
        expansion width, and sets ``acceptance`` and ``tree_shape`` from
        :func:`ferrolm.speculative.plan`.

        Returns:
            the :class:`~ferrolm.speculative.Plan` chosen.
        """
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
        table = sequoia_dp(self.acceptance, max_nodes=max(sizes), max_depth=depth)
        chosen = plan(table, sizes, verify.latency_s, float(draft_step.latency_s[0]))
        self.tree_shape = (int(chosen.n), max(1, int(chosen.d)))
        self._static_shape = None
        return chosen

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
        rows, layout = prompt_rows(
            input_ids, attention_mask, max_new_tokens, self.vocab_size, self.context_length
        )
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
        warp = Warp(temperature, top_k, top_p) if temperature > 0 else None
        stats = GenerationStats()
        start = time.perf_counter()
        if streamer is not None:
            streamer.put(torch.tensor(rows[0].tokens))
        active = [r for r in rows if r.max_new > 0]
        if active:
            self._loop(active, eos, int(pad_token_id), generator, warp, streamer, stats)
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
        rows: list[Row],
        eos: set[int],
        pad: int,
        generator: torch.Generator,
        warp: Optional[Warp],
        streamer: Any,
        stats: GenerationStats,
    ) -> None:
        target = RaggedKVCache(self.target, len(rows), stats)
        draft = RaggedKVCache(self.draft, len(rows), stats)
        drafter = self._drafter(warp, generator)
        while rows:
            t0 = time.perf_counter()
            draft_start = draft.length
            drafts = drafter.draft(rows, draft, pad, stats)
            t1 = time.perf_counter()
            stats.draft_time_s += t1 - t0
            accepted = self._verify(rows, drafts, target, pad, generator, warp, stats)
            self._commit_draft(rows, drafts, accepted, draft, draft_start)
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
            if self._on_iteration is not None:
                self._on_iteration(rows, target, draft)

    # ----------------------------------------------------------------------------- draft

    def _drafter(self, warp: Optional[Warp], generator: torch.Generator) -> Drafter:
        if self.method == "specexec":
            return SpecExecDrafter(
                self.vocab_size,
                self.max_depth,
                warp,
                generator,
                budget=self.budget,
                max_width=self.max_width,
                expand_per_step=self.expand_per_step,
                max_draft_steps=self.max_draft_steps,
            )
        shape = self.static_tree()
        return StaticDrafter(self.vocab_size, self.max_depth, warp, generator, shape=shape)

    # ----------------------------------------------------------------------------- verify

    def _verify(
        self,
        rows: list[Row],
        drafts: list[Draft],
        kv: RaggedKVCache,
        pad: int,
        generator: torch.Generator,
        warp: Optional[Warp],
        stats: GenerationStats,
    ) -> list[_Accepted]:
        """One target forward over every row's pending chain and tree; picks the accepted path
        of every row and compacts the target cache to it."""
        chains = [r.tokens[r.target_cached : -1] for r in rows]
        sizes = [d.tree.size for d in drafts]
        width_tree = max(sizes)
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
        logits = kv.forward(ids, pos, attend, keep_last=width_tree)
        stats.target_forwards += 1
        results = []
        keep = []
        for b, d in enumerate(drafts):
            node_logits = logits[b, : sizes[b]]
            parents, tokens = d.tree.parents, d.tree.tokens
            if warp is None:
                choice = choose_greedy(node_logits)
            else:
                target_probs = warp.probs(node_logits)
                if self.method == "specexec":
                    choice = choose_sample(target_probs, generator)
                else:
                    assert d.draft_probs is not None
                    # Leaves have no draft distribution (nothing was sampled from them); any
                    # valid row will do, the rule only reads it for children.
                    empty = d.draft_probs.sum(-1) <= 0
                    draft_probs = torch.where(empty[:, None], target_probs, d.draft_probs)
                    choice = choose_sequoia(parents, tokens, target_probs, draft_probs, generator)
            path32, bonus = walk(parents, tokens, np.asarray(choice, dtype=np.int64))
            path = np.asarray(path32, dtype=np.int64)
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
    def _record_ranks(tree: Tree, path: Int64Array, stats: GenerationStats) -> None:
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
        rows: list[Row],
        drafts: list[Draft],
        accepted: list[_Accepted],
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
