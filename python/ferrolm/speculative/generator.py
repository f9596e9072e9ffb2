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

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import numpy.typing as npt
import torch

from ferrolm.speculative._arrays import check_acceptance, check_int, check_optional_int
from ferrolm.speculative.drafters import (
    DRAFT_WEIGHTS,
    Drafter,
    RootDrafter,
    SpecExecDrafter,
    StaticDrafter,
)
from ferrolm.speculative.hf import check_causal_lm, context_length, vocab_size
from ferrolm.speculative.iteration import commit_draft, verify_trees
from ferrolm.speculative.kv_cache import RaggedKVCache, probe_tree_mask
from ferrolm.speculative.options import GenerationOptions, resolve_options, split_inputs
from ferrolm.speculative.planner import (
    DEFAULT_SIZES,
    DEFAULT_WIDTHS,
    Calibration,
    calibrate_costs,
    extension,
)
from ferrolm.speculative.rows import Row, check_context, prompt_rows
from ferrolm.speculative.sampling import Warp, device_generator
from ferrolm.speculative.sequoia import sequoia_dp
from ferrolm.speculative.stats import GenerationStats, SpeculativeOutput
from ferrolm.speculative.tree import Tree

__all__ = ["DEFAULT_ACCEPTANCE", "METHODS", "SpeculativeGenerator"]

Int64Array = npt.NDArray[np.int64]

#: Drafting methods: SpecExec's best-first tree, Sequoia's static tree, a single chain.
METHODS = ("specexec", "sequoia", "chain")

#: Prior acceptance vector used by Sequoia before calibration: P(the k-th ranked draft candidate
#: is the target's token), k = 1..8; a rough shape of small same-family pairs (top-1 near 0.7).
DEFAULT_ACCEPTANCE = np.array([0.7, 0.1, 0.05, 0.03, 0.02, 0.01, 0.01, 0.01])


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
        tree_shape: Sequoia ``(n, d)`` to use instead of ``(budget, max_depth)``; ``d = 0``
            means no speculation, for every method: the target decodes alone, one token per
            forward, and the draft is never run (what :meth:`calibrate` adopts when no tree
            beats plain decoding).
        tokenizer, draft_tokenizer: when both are given their vocabularies must be identical.
        check_mask: probe both models once for 4D-mask support (a few tiny forwards).
        fast_linear: run both models' small Linear products (at most `fast_linear_rows` rows:
            tree verification and drafting) through ferrolm's small-M kernel
            (:func:`ferrolm.speculative.route_linear`) while generating and calibrating; on a CPU
            it makes a forward over a small tree cost about one token's. Default: on when the
            model's weights are on the CPU. The models are restored after every call.
        fast_linear_rows: the most rows sent to the kernel (larger products use torch's BLAS).
        draft_weights: "bfloat16" or "int8" gives the kernel a bfloat16 copy, or int8 codes
            with a scale per output feature, of the draft's Linear weights (a half or a quarter
            of the bytes a draft level reads; needs `fast_linear`). The target is never
            changed, so outputs stay exactly the target's; only acceptance may move a little.
        max_extend: after :meth:`calibrate` (or :meth:`adopt`), SpecExec may grow up to this
            many levels past the planned tree, one draft forward each, where the draft's best
            node left is likely enough to pay for the forward and its verification (priced from
            the calibration by :func:`ferrolm.speculative.planner.extension`); 0 turns it off.

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
        fast_linear: Optional[bool] = None,
        fast_linear_rows: int = 16,
        draft_weights: Optional[str] = None,
        max_extend: int = 4,
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
        # No speculation (asked for, or a calibration chose d = 0): the target runs alone.
        self._plain = tree_shape is not None and tree_shape[1] == 0
        self.calibration: Optional[Calibration] = None
        self.context_length = context_length(target)
        if fast_linear is not None and not isinstance(fast_linear, bool):
            raise TypeError(f"`fast_linear` must be a bool or None, got {fast_linear!r}")
        self.fast_linear_rows = check_int(fast_linear_rows, "fast_linear_rows", 1)
        on_cpu = all(next(m.parameters()).device.type == "cpu" for m in (target, draft))
        self.fast_linear = on_cpu if fast_linear is None else fast_linear
        if draft_weights not in DRAFT_WEIGHTS:
            raise ValueError(
                f"`draft_weights` must be None, 'float32', 'bfloat16' or 'int8', "
                f"got {draft_weights!r}"
            )
        if DRAFT_WEIGHTS[draft_weights] is not None and not self.fast_linear:
            raise ValueError(f"`draft_weights={draft_weights!r}` needs `fast_linear` (CPU models)")
        self.draft_weights = draft_weights
        self.max_extend = check_int(max_extend, "max_extend", 0)
        # SpecExec's confidence-gated growth past the plan (set by `adopt`): extra forwards,
        # their gate and the floor below which a node is not worth verifying.
        self._extend = (0, 0.0, -math.inf)
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
        sizes: Sequence[int] = DEFAULT_SIZES,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        max_depth: Optional[int] = None,
        progress: Optional[Callable[[str], None]] = None,
    ) -> Calibration:
        """Measures acceptance and costs on this machine and adopts the best plan.

        See :func:`ferrolm.speculative.planner.calibrate_costs`: the acceptance vector, the
        target's cost per tree size, the draft's cost per forward width and the fixed cost per
        iteration are measured, and the tree ``(n, d)`` with the fewest predicted seconds per
        token is chosen. Sequoia and chain then fill that shape; SpecExec uses ``budget = n``,
        ``max_depth = d``, ``d - 1`` draft forwards of the plan's widest level. When nothing beats
        plain decoding (``d = 0``) every method runs the target alone, one token per forward,
        and never calls the draft.

        Returns:
            the :class:`~ferrolm.speculative.planner.Calibration` (``.plan.speedup`` is the
            predicted speedup over plain decoding on this machine).
        """
        depth = max_depth or self.max_depth
        probe = [
            list(p.reshape(-1).tolist()) if isinstance(p, torch.Tensor) else list(p)
            for p in prompts[:1]
        ]

        def fixed_cost() -> float:
            # A short run of a small chain: what an iteration costs outside the two models.
            saved = (self.method, self.max_depth, self._plain)
            self.method, self.max_depth, self._plain = "chain", 2, False
            self._static_shape = None
            try:
                st = self.generate(probe, max_new_tokens=8, do_sample=False).stats
            finally:
                self.method, self.max_depth, self._plain = saved
                self._static_shape = None
            return max(0.0, st.total_time_s - st.forward_time_s) / max(st.target_forwards, 1)

        cal = calibrate_costs(
            self.target,
            self.draft,
            prompts,
            sizes=sizes,
            widths=widths,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            max_depth=depth,
            fixed_cost=fixed_cost,
            progress=progress,
            routed=self._routed,
        )
        self.adopt(cal)
        return cal

    def _routed(self) -> contextlib.ExitStack:
        """Routes both models' small Linear products through the kernel (when enabled)."""
        stack = contextlib.ExitStack()
        if self.fast_linear:
            from ferrolm.speculative.fast_linear import route_linear

            rows = self.fast_linear_rows
            stack.enter_context(route_linear(self.target, max_rows=rows))
            low = DRAFT_WEIGHTS[self.draft_weights]
            stack.enter_context(route_linear(self.draft, max_rows=rows, weights=low))
        return stack

    def adopt(self, cal: Calibration) -> None:
        """Uses a calibration's acceptance vector and plan (see :meth:`calibrate`)."""
        n, d = cal.plan.n, cal.plan.d
        self.acceptance = cal.acceptance
        self.calibration = cal
        self._plain = d == 0
        self._static_shape = None
        if d == 0:
            return
        self.tree_shape = (n, d)
        if self.method == "specexec":
            extra, gate, floor = extension(cal, self.max_extend)
            self._extend = (extra, gate, floor)
            self.budget, self.max_depth = n + extra, d + extra
            self.expand_per_step = max(1, int(cal.level_widths.max()))
            self.max_draft_steps = max(1, d - 1)
        elif self.method == "sequoia":
            self.max_depth = max(self.max_depth, d)
        else:
            self.max_depth = d

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
            with self._routed():
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
            accepted = verify_trees(self.method, rows, drafts, target, opts, on_target, stats)
            if not self._plain:
                commit_draft(rows, drafts, accepted, draft, draft_start)
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
                    if not self._plain:
                        draft.select_rows(keep)
            target.defragment()
            if not self._plain:
                draft.defragment()
            stats.verify_time_s += time.perf_counter() - t1
            if self._on_iteration is not None:
                self._on_iteration(rows, target, draft)

    # ----------------------------------------------------------------------------- draft

    def _drafter(self, warp: Optional[Warp], generator: torch.Generator) -> Drafter:
        if self._plain:
            return RootDrafter(self.vocab_size, 0, warp, generator)
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
                extend_steps=self._extend[0],
                extend_logprob=self._extend[1],
                min_logprob=self._extend[2],
            )
        shape = self.static_tree()
        return StaticDrafter(self.vocab_size, self.max_depth, warp, generator, shape=shape)
