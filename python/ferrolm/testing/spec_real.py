"""Speculative generation on the real Qwen2.5-Coder pair against Hugging Face, in one run.

Used by ``ferrolm demo`` and ``benches/bench_speculative_generate.py --real``: plain greedy
``target.generate`` (the baseline every output is checked against, token for token), HF assisted
generation (``assistant_model=``, its defaults), and ferrolm's planned SpecExec and Sequoia
(``SpeculativeGenerator.calibrate`` on held-out prompts, then ``generate``). Reports tau (new
tokens per target forward, counted with a forward hook), wall-clock, and the planner's predicted
speedup next to the measured one.

The prompts are Spec-Bench's (``ferrolm/_demo/data/spec_bench_13.jsonl``: the first prompt of each
of its 13 categories, Apache-2.0), or any ``question.jsonl`` of the same format.

Example:
    >>> from ferrolm.testing.spec_real import load_prompts
    >>> [c for c, _ in load_prompts()][:3]
    ['writing', 'roleplay', 'reasoning']
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ferrolm._paths import package_file

__all__ = ["Result", "compare", "draft_options", "load_prompts", "tokenize_prompts"]

SHIPPED = ("_demo", "data", "spec_bench_13.jsonl")


def load_prompts(
    path: Optional[Path] = None, per_category: int = 1, skip: int = 0, split: str = "bench"
) -> list[tuple[str, str]]:
    """``(category, first turn)`` of Spec-Bench prompts: `per_category` per category after
    skipping `skip`; default the 13 shipped ones (``split="calibration"``: the 3 shipped
    held-out prompts; rows of a ``question.jsonl`` have no split and are all read)."""
    if path is None:
        found = package_file("ferrolm", *SHIPPED)
        if found is None:
            raise FileNotFoundError(
                f"ferrolm/{'/'.join(SHIPPED)} is missing from this installation"
            )
        path = found
    seen: dict[str, int] = defaultdict(int)
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        if q.get("split", split) != split:
            continue
        category = q["category"]
        text = q["prompt"] if "prompt" in q else q["turns"][0]
        seen[category] += 1
        if skip < seen[category] <= skip + per_category:
            out.append((category, text))
    return out


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[tuple[str, str]]
) -> list[tuple[str, list[int]]]:
    """Applies the chat template (one user turn, generation prompt added)."""
    out = []
    for category, text in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True
        )
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        out.append((category, [int(t) for t in ids]))
    return out


@dataclass
class Result:
    """One method over the prompt set."""

    name: str
    new_tokens: int = 0
    target_calls: int = 0
    seconds: float = 0.0
    matches: int = 0
    prompts: int = 0
    per_category: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    predicted_speedup: Optional[float] = None
    plan: Optional[dict[str, Any]] = None
    calibration_s: Optional[float] = None
    overhead: Optional[float] = None

    @property
    def tau(self) -> float:
        """New tokens per target forward."""
        return self.new_tokens / max(self.target_calls, 1)

    def category_tau(self) -> dict[str, float]:
        """tau per Spec-Bench category."""
        return {c: n / max(k, 1) for c, (n, k) in self.per_category.items()}

    def add(self, category: str, new: list[int], calls: int, matched: bool, seconds: float) -> None:
        """Counts one prompt's output."""
        self.prompts += 1
        self.matches += int(matched)
        self.new_tokens += len(new)
        self.target_calls += calls
        self.seconds += seconds
        self.per_category[category][0] += len(new)
        self.per_category[category][1] += calls

    def to_dict(
        self, baseline: Optional[Result] = None, assisted: Optional[Result] = None
    ) -> dict[str, Any]:
        """A JSON-ready row; ratios against the baseline and HF assisted when given."""
        row: dict[str, Any] = {
            "name": self.name,
            "tau": self.tau,
            "seconds": self.seconds,
            "identical_outputs": f"{self.matches}/{self.prompts}",
            "per_category_tau": self.category_tau(),
        }
        if baseline is not None:
            row["speedup_vs_generate"] = baseline.seconds / self.seconds
        if assisted is not None:
            row["tau_vs_hf_assisted"] = self.tau / assisted.tau
        for key in ("predicted_speedup", "plan", "calibration_s", "overhead"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        return row


class _Counter:
    """Counts forward calls of a module (a pre-hook works for any generation loop)."""

    def __init__(self, model: Any) -> None:
        self.calls = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def _run_hf(
    name: str,
    target: Any,
    prompts: Sequence[tuple[str, list[int]]],
    new_tokens: int,
    expected: dict[int, list[int]],
    **kwargs: Any,
) -> Result:
    import torch

    res = Result(name)
    counter = _Counter(target)
    try:
        for i, (category, ids) in enumerate(prompts):
            x = torch.tensor([ids])
            before = counter.calls
            start = time.perf_counter()
            out = target.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=new_tokens,
                **kwargs,
            )
            seconds = time.perf_counter() - start
            new = out[0, len(ids) :].tolist()
            expected.setdefault(i, new)
            res.add(category, new, counter.calls - before, new == expected[i], seconds)
    finally:
        counter.close()
    return res


def _run_ferrolm(
    name: str,
    gen: Any,
    prompts: Sequence[tuple[str, list[int]]],
    new_tokens: int,
    expected: dict[int, list[int]],
) -> Result:
    res = Result(name)
    counter = _Counter(gen.target)
    outside, total = 0.0, 0.0
    try:
        for i, (category, ids) in enumerate(prompts):
            before = counter.calls
            out = gen.generate([ids], max_new_tokens=new_tokens, do_sample=False)
            new = out.new_tokens[0]
            res.add(
                category,
                new,
                counter.calls - before,
                new == expected.get(i, new),
                out.stats.total_time_s,
            )
            outside += out.stats.total_time_s - out.stats.forward_time_s
            total += out.stats.total_time_s
    finally:
        counter.close()
    res.overhead = outside / total if total > 0 else None
    return res


def _fixed_tree(method: str) -> Optional[tuple[str, dict[str, Any]]]:
    """The row name and generator arguments of an uncalibrated method ("plain", "specexec@16x8"),
    or None for a planned one."""
    if method == "plain":
        return "ferrolm, no speculation", {"tree_shape": (1, 0)}
    if "@" not in method:
        return None
    name, _, shape = method.partition("@")
    budget, depth = (int(v) for v in shape.split("x"))
    label = f"ferrolm {name}, fixed budget {budget}, depth {depth}"
    return label, {"method": name, "budget": budget, "max_depth": depth}


def _prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda line: log(prefix + line)


def compare(
    target: Any,
    draft: Any,
    prompts: Sequence[tuple[str, list[int]]],
    calibration: Sequence[tuple[str, list[int]]],
    *,
    new_tokens: int = 48,
    methods: Sequence[str] = ("specexec", "sequoia"),
    assisted: bool = True,
    log: Callable[[str], None] = lambda _: None,
    generator_options: Optional[dict[str, Any]] = None,
) -> list[Result]:
    """Runs the baseline, HF assisted generation and each planned ferrolm method (module doc);
    the method ``"plain"`` is ferrolm's generator told not to speculate (``tree_shape=(1, 0)``),
    and ``"specexec@16x8"`` (any method, budget and depth) runs that method on that fixed tree,
    uncalibrated: what a tree the planner did not choose gives.

    Returns:
        ``[baseline, assisted (if asked), ferrolm methods...]``; every output is checked against
        the baseline's (``Result.matches``).
    """
    from ferrolm import speculative

    expected: dict[int, list[int]] = {}
    baseline = _run_hf("target.generate (greedy)", target, prompts, new_tokens, expected)
    log(f"target.generate: {baseline.seconds:.1f} s")
    results = [baseline]
    if assisted:
        hf = _run_hf(
            "HF assisted generation", target, prompts, new_tokens, expected, assistant_model=draft
        )
        log(f"HF assisted: {hf.seconds:.1f} s, tau {hf.tau:.2f}")
        results.append(hf)
    cal_ids = [ids for _, ids in calibration]
    for method in methods:
        fixed = _fixed_tree(method)
        if fixed is not None:
            # An uncalibrated run: no speculation ("plain": what a plan of d = 0 costs against
            # generate) or a fixed tree the planner did not choose.
            label, shape = fixed
            gen = speculative.SpeculativeGenerator(
                target, draft, **shape, **(generator_options or {})
            )
            res = _run_ferrolm(label, gen, prompts, new_tokens, expected)
            log(
                f"{res.name}: {res.seconds:.1f} s, tau {res.tau:.2f}, "
                f"measured {baseline.seconds / res.seconds:.2f}x"
            )
            results.append(res)
            continue
        gen = speculative.SpeculativeGenerator(
            target, draft, method=method, **(generator_options or {})
        )
        cal = gen.calibrate(cal_ids, progress=_prefixed(log, f"  calibrate {method}: "))
        plan = cal.plan
        name = f"ferrolm {method}, planned (n={plan.n}, d={plan.d})"
        res = _run_ferrolm(name, gen, prompts, new_tokens, expected)
        # The whole job, prompts included, for the lengths the baseline really produced.
        job = cal.predict(
            [len(ids) for _, ids in prompts], [len(expected[i]) for i in range(len(prompts))]
        )
        res.predicted_speedup = job.speedup
        res.plan = cal.to_dict()
        res.calibration_s = cal.seconds
        log(
            f"{name}: {res.seconds:.1f} s, tau {res.tau:.2f}, "
            f"predicted {job.speedup:.2f}x ({job.speculative_s:.0f} s; decoding alone "
            f"{cal.predicted_speedup:.2f}x), "
            f"measured {baseline.seconds / res.seconds:.2f}x, calibration {cal.seconds:.0f} s"
        )
        results.append(res)
    return results


def draft_options(
    target: Any,
    draft: Any,
    prompts: Sequence[list[int]],
    *,
    options: Sequence[str] = ("float32", "bfloat16", "int8"),
    widths: Sequence[int] = (1, 2, 4, 8),
    new_tokens: int = 16,
    width: int = 8,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Per draft-weight option of the generator (``draft_weights=``): the draft's seconds per
    forward at each width, as the generator runs it (every Linear through the kernel with those
    weights), and its acceptance vector against the target's greedy continuations of
    `prompts` (top-`width` ranks; the continuations are computed once and shared).

    Returns:
        one dict per option: ``option``, ``widths``, ``seconds``, ``acceptance``,
        ``chain3`` (the expected tokens per iteration of a 3-deep chain, ``1 + p1 + p1^2 +
        p1^3`` with ``p1`` the top-1 acceptance).
    """
    import torch

    from ferrolm.speculative import acceptance_vector, profile, route_linear
    from ferrolm.speculative.drafters import DRAFT_WEIGHTS

    sequences, choices = [], []
    with torch.inference_mode():
        for ids in prompts:
            x = torch.tensor([ids])
            full = target.generate(
                x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=new_tokens
            )
            start = len(ids) - 1
            choices.append(target(full).logits[0, start:-1].argmax(-1))
            sequences.append((full, start))
    context = int(sum(len(p) for p in prompts) / max(len(prompts), 1)) + new_tokens
    rows = []
    for option in options:
        # Every product through the kernel, the whole-sequence forwards too: the acceptance of
        # the weights the generator drafts with.
        with (
            torch.inference_mode(),
            route_linear(draft, max_rows=1 << 30, weights=DRAFT_WEIGHTS[option]),
        ):
            cost = profile(draft, list(widths), context=context, repeats=repeats)
            ranks: list[int] = []
            for (full, start), choice in zip(sequences, choices):
                top = torch.topk(draft(full).logits[0, start:-1], width, dim=-1).indices
                hit = top == choice[:, None]
                ranks.extend(torch.where(hit.any(-1), hit.int().argmax(-1), -1).tolist())
        p = acceptance_vector(ranks, width)
        p1 = float(p[0])
        rows.append(
            {
                "option": option,
                "widths": [int(w) for w in cost.sizes],
                "seconds": [float(t) for t in cost.latency_s],
                "acceptance": [float(v) for v in p],
                "chain3": 1 + p1 + p1**2 + p1**3,
            }
        )
    return rows
