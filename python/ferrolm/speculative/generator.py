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

Options resolve like ``model.generate`` (:mod:`ferrolm.speculative.options`); the target's scores
at every node go through HF's processors and warpers in HF's order, with the node's own prefix as
``input_ids``; the draft proposes under the warpers only. All modes are lossless: greedy output
equals ``target.generate(do_sample=False)`` token for token (up to floating-point ties), and
sampled output follows the target's processed distribution.

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
from typing import Any, Optional

import numpy as np
import numpy.typing as npt
import torch

from ferrolm.speculative._arrays import check_acceptance, check_int, check_optional_int
from ferrolm.speculative.drafters import Draft, Drafter, SpecExecDrafter, StaticDrafter
from ferrolm.speculative.hf import check_causal_lm, context_length, vocab_size
from ferrolm.speculative.kv_cache import RaggedKVCache, attend_prefix, chain_block, probe_tree_mask
from ferrolm.speculative.options import GenerationOptions, resolve_options, split_inputs
from ferrolm.speculative.profile import estimate_acceptance, profile
from ferrolm.speculative.rows import Row, check_context, prompt_rows
from ferrolm.speculative.sampling import Warp, device_generator
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
    scores: Optional[torch.Tensor] = None


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
        input_ids: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
        *,
        generation_config: Any = None,
        logits_processor: Optional[Sequence[Any]] = None,
        stopping_criteria: Any = None,
        generator: Optional[torch.Generator] = None,
        streamer: Any = None,
        **kwargs: Any,
    ) -> SpeculativeOutput:
        """Generates like ``target.generate``, stopping each row at EOS or a stopping criterion.

        Options resolve like ``model.generate`` (:mod:`ferrolm.speculative.options`): keyword
        argument, then `generation_config`, then the target's ``generation_config``, then the
        defaults of ``transformers`` (so ``max_new_tokens`` defaults to 20, or to a configured
        ``max_length`` minus the prompt, and an instruct model whose config samples, samples).

        Args:
            input_ids: int64 ``[B, T]`` (with `attention_mask` for padded rows; padding on either
                side), a list of token-id lists of any lengths, or a ``BatchEncoding``
                (``gen.generate(**tok(prompts, return_tensors="pt", padding=True))`` works too;
                ``token_type_ids`` is ignored).
            attention_mask: 1 for real tokens, 0 for padding; default all ones.
            generation_config: a ``transformers.GenerationConfig`` overriding the target's.
            logits_processor: processors ``(input_ids, scores) -> scores`` applied after the
                built-in ones; they must be pure functions of their arguments (each is called once
                per tree depth, with every node's prefix).
            stopping_criteria: a ``StoppingCriteriaList`` (or list of criteria), called per row
                with ``[1, length]`` ids and the processed scores of the last token.
            generator: a seeded ``torch.Generator`` (CPU) for sampling.
            streamer: an object with ``put(LongTensor)`` and ``end()`` (e.g. HF's
                ``TextStreamer``); gets the prompt, then each iteration's new tokens (batch 1).
            **kwargs: generation options: ``max_new_tokens``, ``max_length``, ``min_new_tokens``,
                ``min_length``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
                ``repetition_penalty``, ``no_repeat_ngram_size``, ``eos_token_id`` (an int or a
                list), ``pad_token_id`` (default the config's, else the first EOS id, else 0).

        Returns:
            :class:`SpeculativeOutput`.

        Raises:
            ValueError: an unknown option, one that cannot be honoured (beam search, several
                sequences per prompt, ...), a bad value or a bad prompt; the message names it.
        """
        ids, mask, options = split_inputs(input_ids, attention_mask, kwargs)
        rows, layout = prompt_rows(ids, mask, 0, self.vocab_size, None)
        opts = resolve_options(
            self.target,
            generation_config,
            int(layout.shape[1]),
            options,
            context=self.context_length,
            logits_processor=logits_processor,
            stopping_criteria=stopping_criteria,
        )
        check_context(rows, opts.max_new_tokens, self.context_length)
        if streamer is not None and len(rows) != 1:
            raise ValueError(f"`streamer` needs a batch of 1, got {len(rows)} rows")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        stats = GenerationStats()
        start = time.perf_counter()
        if streamer is not None:
            streamer.put(torch.tensor(rows[0].tokens))
        active = [r for r in rows if r.max_new > 0]
        if active:
            self._loop(active, opts, generator, streamer, stats)
        if streamer is not None:
            streamer.end()
        stats.total_time_s = time.perf_counter() - start
        new = [r.tokens[r.prompt_len :] for r in rows]
        width = max((len(n) for n in new), default=0)
        tail = torch.full((len(rows), width), opts.pad, dtype=torch.long)
        for b, n in enumerate(new):
            tail[b, : len(n)] = torch.tensor(n, dtype=torch.long)
        return SpeculativeOutput(torch.cat([layout, tail], dim=1), new, stats)

    def _loop(
        self,
        rows: list[Row],
        opts: GenerationOptions,
        generator: torch.Generator,
        streamer: Any,
        stats: GenerationStats,
    ) -> None:
        target = RaggedKVCache(self.target, len(rows), stats)
        draft = RaggedKVCache(self.draft, len(rows), stats)
        drafter = self._drafter(opts.warp, generator)
        eos = set(opts.eos)
        # The verification rules draw on the target's device, from a stream seeded by `generator`.
        on_target = device_generator(generator, target.device)
        while rows:
            t0 = time.perf_counter()
            draft_start = draft.length
            drafts = drafter.draft(rows, draft, opts.pad, stats)
            t1 = time.perf_counter()
            stats.draft_time_s += t1 - t0
            accepted = self._verify(rows, drafts, target, opts, on_target, stats)
            self._commit_draft(rows, drafts, accepted, draft, draft_start)
            for row, acc in zip(rows, accepted):
                new_tokens = acc.new_tokens[: row.max_new - row.generated]
                for i, token in enumerate(new_tokens):
                    scores = None if acc.scores is None else acc.scores[i]
                    if token in eos or opts.stops(row.tokens + new_tokens[: i + 1], scores):
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
        opts: GenerationOptions,
        generator: torch.Generator,
        stats: GenerationStats,
    ) -> list[_Accepted]:
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
                if self.method == "specexec":
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
            results.append(_Accepted(len(chains[b]), path, new_tokens, scores))
        kv.compact(length, keep)
        return results

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
