"""Calibration: measure what speculation costs on this machine, then plan the tree.

:func:`calibrate_costs` measures, for one target/draft pair on the machine it runs on:

* the acceptance vector (:func:`~ferrolm.speculative.estimate_acceptance`, the target's own
  greedy or sampled continuations);
* the target's verification cost ``t_verify(n)`` at several tree sizes and the draft's cost per
  forward at several widths (:func:`~ferrolm.speculative.profile`), because on a CPU a forward
  over 8 nodes costs much more than over 1;
* the fixed cost of one iteration outside the two models (masks, cache compaction, the walk),
  from a short speculative run;
* what a prompt's prefill costs each model and what ``target.generate`` pays per token, from
  the acceptance estimate's own runs (:class:`~ferrolm.speculative.profile.PromptTiming`), so
  :meth:`Calibration.predict` can predict a whole job, prompts included, not only decoding;

and picks the tree ``(n, d)`` with the fewest predicted seconds per token
(:func:`~ferrolm.speculative.plan` with ``draft_widths``). ``(1, 0)`` means no speculation: the
generator then runs the target alone, one token per forward, without touching the draft.

Example:
    >>> cal = calibrate_costs(target, draft, prompts)  # doctest: +SKIP
    >>> cal.plan.n, cal.plan.d, cal.plan.speedup  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

from ferrolm.speculative.profile import PromptTiming, estimate_acceptance, profile
from ferrolm.speculative.sequoia import Plan, draft_level_widths, plan, sequoia_dp

__all__ = ["Calibration", "Prediction", "calibrate_costs", "extension"]

#: Tree sizes whose verification is measured by default.
DEFAULT_SIZES = (1, 2, 4, 8, 12, 16, 24, 32)
#: Draft forward widths measured by default.
DEFAULT_WIDTHS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate_costs` measured and the plan it chose.

    Attributes:
        plan: the chosen ``(n, d)`` and its predicted seconds per token and speedup over plain
            decoding with the same models on this machine.
        acceptance: ``p[k-1]``, P(the k-th ranked draft candidate is the target's token).
        sizes, verify_s: target seconds per forward over ``sizes[i]`` tree tokens.
        widths, draft_s: draft seconds per forward over ``widths[i]`` nodes.
        fixed_s: seconds per iteration outside the model forwards.
        autoregressive_s: seconds per token of plain decoding (one-token target forwards).
        level_widths: draft forward widths of the chosen tree (empty without speculation).
        seconds: wall time of the calibration.
        generate_s: seconds per new token of ``target.generate`` after its prefill, with the
            model as the user has it (no kernel routing).
        prefill_s: ``(a, b)`` per model, ``{"target": ..., "draft": ...}``: a forward over a
            prompt of ``L`` tokens costs ``a + b * L`` seconds (``a`` is one one-token forward,
            ``b`` is fitted on the calibration prompts). Empty when not measured.
    """

    plan: Plan
    acceptance: npt.NDArray[np.float64]
    sizes: npt.NDArray[np.int64]
    verify_s: npt.NDArray[np.float64]
    widths: npt.NDArray[np.int64]
    draft_s: npt.NDArray[np.float64]
    fixed_s: float
    autoregressive_s: float
    level_widths: npt.NDArray[np.int64]
    seconds: float
    generate_s: float
    prefill_s: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def predicted_speedup(self) -> float:
        """Predicted speedup of the chosen plan over plain ``target.generate``."""
        return self.generate_s / self.plan.s_per_token

    def prefill(self, model: str, prompt_tokens: int) -> float:
        """Predicted seconds of `model`'s (``"target"`` or ``"draft"``) prefill of a prompt."""
        a, b = self.prefill_s.get(model, (0.0, 0.0))
        return a + b * prompt_tokens

    def predict(self, prompt_tokens: Sequence[int], new_tokens: Sequence[int]) -> Prediction:
        """Predicted wall time of a whole job, prompts of these lengths each continued by the
        given number of tokens, with ``target.generate`` and with the adopted plan.

        Each prompt costs ``target.generate`` its prefill and then ``generate_s`` per further
        token; speculation pays the same target prefill, the draft's prefill of the prompt
        (without speculation, no draft at all) and then ``plan.s_per_token`` per further token.
        On prompts much longer than the decoded part the prefill dominates both, and the
        predicted speedup falls towards 1.
        """
        if len(prompt_tokens) != len(new_tokens):
            raise ValueError(
                f"`new_tokens` must have {len(prompt_tokens)} entries like `prompt_tokens`, "
                f"got {len(new_tokens)}"
            )
        base = spec = 0.0
        for length, new in zip(prompt_tokens, new_tokens):
            if length < 1 or new < 0:
                raise ValueError(
                    f"prompt lengths must be >= 1 and new tokens >= 0, got {length} and {new}"
                )
            if new == 0:
                continue
            rest = new - 1
            target = self.prefill("target", length)
            draft = self.prefill("draft", length) if self.plan.d > 0 else 0.0
            base += target + rest * self.generate_s
            spec += target + draft + rest * self.plan.s_per_token
        return Prediction(base, spec)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "plan": {
                "n": self.plan.n,
                "d": self.plan.d,
                "tokens_per_step": self.plan.tokens_per_step,
                "s_per_token": self.plan.s_per_token,
                "speedup_vs_plain_decoding": self.plan.speedup,
                "predicted_speedup_vs_generate": self.predicted_speedup,
            },
            "generate_s": self.generate_s,
            "acceptance": self.acceptance.tolist(),
            "verify_s": dict(zip(self.sizes.tolist(), self.verify_s.tolist())),
            "draft_s": dict(zip(self.widths.tolist(), self.draft_s.tolist())),
            "fixed_s": self.fixed_s,
            "autoregressive_s": self.autoregressive_s,
            "level_widths": self.level_widths.tolist(),
            "prefill_s": {k: list(v) for k, v in self.prefill_s.items()},
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Prediction:
    """:meth:`Calibration.predict`'s answer.

    Attributes:
        generate_s: predicted seconds of the job with ``target.generate``.
        speculative_s: predicted seconds with the calibrated plan.
    """

    generate_s: float
    speculative_s: float

    @property
    def speedup(self) -> float:
        """``generate_s / speculative_s`` (1.0 for an empty job)."""
        return self.generate_s / self.speculative_s if self.speculative_s > 0 else 1.0


def extension(cal: Calibration, max_extend: int) -> tuple[int, float, float]:
    """SpecExec's confidence-gated growth past the planned tree, priced by the calibration.

    A node of cumulative draft probability ``q`` added to the tree is worth
    ``q * plan.s_per_token`` (the time an accepted token saves) and costs ``dv``, the marginal
    verification cost per node around the plan's size: keep it when ``q >= dv / s_per_token``.
    Expanding the best node left costs one draft forward ``t_d`` (width 1) and its best child
    is expected at ``q * p1``: expand when ``q * p1 * s_per_token >= t_d + dv``.

    Returns:
        ``(extra forwards, gate log-probability, floor log-probability)``; ``(0, 0, -inf)``
        when `max_extend` is 0, there is no speculation, or the gate is out of reach (above
        probability 1).
    """
    n, d = cal.plan.n, cal.plan.d
    if max_extend <= 0 or d == 0 or cal.plan.s_per_token <= 0:
        return 0, 0.0, -math.inf
    sizes = cal.sizes.astype(np.float64)
    v = np.interp([n, n + max_extend], sizes, cal.verify_s)
    dv = max(float(v[1] - v[0]) / max_extend, 0.0)
    t_d = float(np.interp(1.0, cal.widths.astype(np.float64), cal.draft_s))
    p1 = float(cal.acceptance[0]) if len(cal.acceptance) else 0.0
    value = cal.plan.s_per_token
    if p1 <= 0:
        return 0, 0.0, -math.inf
    gate = (t_d + dv) / (p1 * value)
    if gate >= 1.0:
        return 0, 0.0, -math.inf
    floor = min(dv / value, gate)
    return max_extend, math.log(gate), math.log(floor) if floor > 0 else -math.inf


def replan(
    acceptance: Any,
    sizes: Any,
    verify_s: Any,
    widths: Any,
    draft_s: Any,
    *,
    fixed_s: float,
    max_depth: int,
) -> tuple[Plan, npt.NDArray[np.int64]]:
    """Plans from measured costs; returns the plan and its draft forward widths."""
    s = np.asarray(sizes, dtype=np.int64)
    tv = np.asarray(verify_s, dtype=np.float64)
    one = np.flatnonzero(s == 1)
    if len(one) == 0:
        raise ValueError(f"`sizes` must include 1 (plain decoding), got {s.tolist()}")
    table = sequoia_dp(acceptance, max_nodes=int(s.max()), max_depth=max_depth)
    chosen = plan(
        table,
        s,
        tv,
        np.asarray(draft_s, dtype=np.float64),
        t_autoregressive_s=float(tv[one[0]]) + fixed_s,
        draft_widths=np.asarray(widths, dtype=np.int64),
        t_fixed_s=fixed_s,
    )
    levels = (
        draft_level_widths(table, chosen.n, chosen.d)
        if chosen.d > 0
        else np.zeros(0, dtype=np.int64)
    )
    return chosen, levels


def calibrate_costs(
    target: Any,
    draft: Any,
    prompts: Sequence[Any],
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    max_depth: int = 12,
    context: Optional[int] = None,
    fixed_cost: Optional[Callable[[], float]] = None,
    progress: Optional[Callable[[str], None]] = None,
    routed: Optional[Callable[[], contextlib.AbstractContextManager[Any]]] = None,
) -> Calibration:
    """Measures acceptance and costs on this machine and plans the tree (see the module doc).

    Args:
        target, draft: Hugging Face causal LMs sharing a vocabulary.
        prompts: token-id lists or 1-D tensors (a few: each costs `max_new_tokens` target steps).
        sizes: tree sizes to measure verification at (1 is always added).
        widths: draft forward widths to measure.
        max_new_tokens: continuation length per prompt for the acceptance estimate.
        temperature: the sampling setting the plan is for (0 = greedy).
        max_depth: deepest tree considered.
        context: cached tokens during the latency measurements; default the mean prompt length
            plus `max_new_tokens`.
        fixed_cost: returns the measured seconds per iteration outside the model forwards;
            default 0.
        progress: called with a short line before each phase.
        routed: a context manager factory under which the models run as they will generate
            (e.g. with the Linear kernel routed); the plain one-token step ``target.generate``
            pays is measured outside it.

    Returns:
        :class:`Calibration`.
    """
    start = time.perf_counter()
    say = progress or (lambda _: None)
    size_list = sorted({int(s) for s in sizes if int(s) >= 1} | {1})
    width_list = sorted({int(w) for w in widths if int(w) >= 1})
    if not width_list:
        raise ValueError(f"`widths` must hold at least one int >= 1, got {list(widths)}")
    if context is None:
        lengths = [len(p) for p in prompts]
        context = int(np.mean(lengths)) + max_new_tokens if lengths else 128
    # Outside the routing: generate() runs the target as the user has it, and the whole-sequence
    # forwards (prefill-shaped, many rows) would not be routed anyway.
    say(f"acceptance on {len(prompts)} prompt(s), {max_new_tokens} target tokens each")
    timings: list[PromptTiming] = []
    acceptance = estimate_acceptance(
        target,
        draft,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        timings=timings,
    )
    with routed() if routed is not None else contextlib.nullcontext():
        say(f"target forward cost at {len(size_list)} tree sizes")
        verify = profile(target, size_list, context=context, repeats=2)
        say(f"draft forward cost at {len(width_list)} widths")
        drafting = profile(draft, width_list, context=context, repeats=2)
        fixed = fixed_cost() if fixed_cost is not None else 0.0
    chosen, levels = replan(
        acceptance,
        verify.sizes,
        verify.latency_s,
        drafting.sizes,
        drafting.latency_s,
        fixed_s=fixed,
        max_depth=max_depth,
    )
    one = int(np.flatnonzero(verify.sizes == 1)[0])
    step_t = float(verify.latency_s[one])
    step_d = float(drafting.latency_s[0]) if int(drafting.sizes[0]) == 1 else 0.0
    prefill, generate_s = _prefill_costs(timings, step_t, step_d)
    return Calibration(
        chosen,
        acceptance,
        verify.sizes,
        verify.latency_s,
        drafting.sizes,
        drafting.latency_s,
        fixed,
        step_t + fixed,
        levels,
        time.perf_counter() - start,
        step_t if generate_s is None else generate_s,
        prefill,
    )


def _prefill_costs(
    timings: Sequence[PromptTiming], step_t: float, step_d: float
) -> tuple[dict[str, tuple[float, float]], Optional[float]]:
    """Prefill models ``a + b * L`` for both models and ``target.generate``'s seconds per token
    after its prefill, from the acceptance estimate's timings (``None`` without data).

    ``a`` is one one-token forward; ``b`` is ``sum(t - a) / sum(L)`` over the whole-sequence
    forwards (a ratio of sums: longer prompts weigh more).
    """
    tokens = sum(t.prompt_tokens + t.new_tokens for t in timings)
    if not timings or tokens == 0:
        return {}, None
    b_t = max(0.0, sum(t.target_forward_s - step_t for t in timings) / tokens)
    b_d = max(0.0, sum(t.draft_forward_s - step_d for t in timings) / tokens)
    prefill = {"target": (step_t, b_t), "draft": (step_d, b_d)}
    steps = sum(t.new_tokens - 1 for t in timings if t.new_tokens > 1)
    decode = sum(
        t.generate_s - (step_t + b_t * t.prompt_tokens) for t in timings if t.new_tokens > 1
    )
    # Too little decoding to measure, or a prefill model that explains all of it: fall back to
    # the measured one-token step.
    generate_s = decode / steps if steps > 0 and decode > 0.5 * step_t * steps else None
    return prefill, generate_s
