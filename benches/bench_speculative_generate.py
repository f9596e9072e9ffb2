"""Speculative generation vs Hugging Face: tau and wall-clock, ferrolm and baselines in one run.

Two modes:

* **Smoke** (default, what CI runs with ``--benchmark-disable``): tiny in-process Llama target and
  a noisy copy as draft, a few short prompts; checks the machinery end to end in seconds.
* **Real** (``FERROLM_BENCH_REAL=1``): Qwen2.5-Coder-1.5B-Instruct (target) and -0.5B (draft) from
  the packages listed in ``docs/fixtures.md`` (sha256-checked, converted once to
  ``~/.cache/ferrolm``; ~9 GB RAM in float32), one Spec-Bench prompt per category (13), 48
  greedy new tokens each.
  Measures tau (new tokens / target forward calls, counted with a forward hook on the target) for
  SpecExec and Sequoia at budgets 64 and 128, Sequoia at the planner's (n, d), and HF assisted
  generation (``assistant_model=``, its defaults), plus wall-clock vs plain ``generate``.
  The prompts come from ``$FERROLM_SPEC_BENCH`` (Spec-Bench's ``question.jsonl``, not shipped:
  see ``docs/fixtures.md``; the real mode skips without it).
  ``python benches/bench_speculative_generate.py --real [--spec-bench PATH]`` runs the same suite
  without pytest and prints a Markdown table (per category too).

Every row's output is checked token for token against plain greedy ``generate``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import torch

from ferrolm import speculative
from ferrolm._demo import generate as _generate_demo

REAL = os.environ.get("FERROLM_BENCH_REAL", "") not in ("", "0")
# Spec-Bench's prompts are not shipped with ferrolm (see docs/fixtures.md): the real mode reads
# them from $FERROLM_SPEC_BENCH (or `--spec-bench PATH` when run as a script) and skips without.
SPEC_BENCH_SOURCE = (
    "data/spec_bench/question.jsonl of the Spec-Bench repository "
    "(github.com/hemingkx/Spec-Bench, Apache-2.0; 480 prompts, sha256 "
    "4b6d33e79484f9841c487ee87d1cf6aa8c6066f61d5d482ff09e5a007fafdf04)"
)
_SPEC_BENCH_ENV = os.environ.get("FERROLM_SPEC_BENCH", "")
SPEC_BENCH: Optional[Path] = Path(_SPEC_BENCH_ENV) if _SPEC_BENCH_ENV else None
NEW_TOKENS = int(os.environ.get("FERROLM_BENCH_NEW_TOKENS", "48"))


@dataclass
class Result:
    """One method over the prompt set."""

    name: str
    new_tokens: int = 0
    target_calls: int = 0
    seconds: float = 0.0
    matches: int = 0
    per_category: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    overhead: Optional[float] = None
    draft_s: float = 0.0
    verify_s: float = 0.0

    @property
    def tau(self) -> float:
        return self.new_tokens / max(self.target_calls, 1)

    def category_tau(self) -> dict[str, float]:
        return {c: n / max(k, 1) for c, (n, k) in self.per_category.items()}

    def add(self, cat: str, new: list[int], calls: int, matched: bool) -> None:
        """Counts one prompt's output (`calls` target forwards) and prints progress."""
        self.matches += int(matched)
        self.new_tokens += len(new)
        self.target_calls += calls
        self.per_category[cat][0] += len(new)
        self.per_category[cat][1] += calls
        _progress(self, cat)


class CallCounter:
    """Counts forward calls of a module (a pre-hook; works for any generation loop)."""

    def __init__(self, model: Any) -> None:
        self.calls = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


# ---------------------------------------------------------------------------- models / prompts


def tiny_pair() -> tuple[Any, Any, list[tuple[str, list[int]]]]:
    target, draft = _generate_demo.tiny_pair(layers=2, positions=256, noise=0.1)
    rng = torch.Generator().manual_seed(2)
    prompts = [
        (f"p{i}", torch.randint(0, 256, (n,), generator=rng).tolist())
        for i, n in enumerate((5, 9, 14))
    ]
    return target, draft, prompts


def qwen_pair() -> tuple[Any, Any, Any]:
    from ferrolm.testing.models import fixture_available, load_pretrained

    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        if not fixture_available(name):
            pytest.skip(f"needs {name}: see ferrolm.testing.models.FIXTURES[{name!r}].pip")
    draft, _ = load_pretrained("qwen2.5-coder-0.5b")
    target, tokenizer = load_pretrained("qwen2.5-coder-1.5b")
    return target, draft, tokenizer


def spec_bench_prompts(tokenizer: Any, per_category: int = 1, skip: int = 0) -> list[Any]:
    if SPEC_BENCH is None or not SPEC_BENCH.is_file():
        where = "FERROLM_SPEC_BENCH is not set" if SPEC_BENCH is None else f"no file {SPEC_BENCH}"
        pytest.skip(
            f"needs the Spec-Bench prompts ({where}): download {SPEC_BENCH_SOURCE} and set "
            "FERROLM_SPEC_BENCH to its path"
        )
    seen: dict[str, int] = defaultdict(int)
    out = []
    for line in SPEC_BENCH.read_text().splitlines():
        q = json.loads(line)
        c = q["category"]
        seen[c] += 1
        if skip < seen[c] <= skip + per_category:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": q["turns"][0]}], add_generation_prompt=True
            )
            if not isinstance(ids, list):
                ids = ids["input_ids"]
            out.append((c, list(ids)))
    return out


# ---------------------------------------------------------------------------- runners


def _progress(res: Result, cat: str) -> None:
    if os.environ.get("FERROLM_BENCH_PROGRESS"):
        print(
            f"  {res.name} [{cat}]: {res.new_tokens} tokens, {res.target_calls} target calls, "
            f"{res.seconds:.1f} s",
            flush=True,
        )


def run_hf(
    name: str,
    target: Any,
    prompts: list[Any],
    expected: dict[int, list[int]],
    **generate_kwargs: Any,
) -> Result:
    """Greedy ``target.generate`` over the prompts. The first run (``expected`` empty) records
    the reference continuations; later runs are checked against them."""
    record = not expected
    res = Result(name)
    counter = CallCounter(target)
    try:
        for i, (cat, ids) in enumerate(prompts):
            x = torch.tensor([ids])
            before = counter.calls
            start = time.perf_counter()
            out = target.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                **generate_kwargs,
            )
            res.seconds += time.perf_counter() - start
            new = out[0, len(ids) :].tolist()
            if record:
                expected[i] = new
            res.add(cat, new, counter.calls - before, matched=new == expected.get(i, new))
    finally:
        counter.close()
    return res


def run_ferrolm(
    name: str,
    gen: speculative.SpeculativeGenerator,
    prompts: list[Any],
    expected: dict[int, list[int]],
) -> Result:
    res = Result(name)
    counter = CallCounter(gen.target)
    stats = speculative.GenerationStats()
    try:
        for i, (cat, ids) in enumerate(prompts):
            before = counter.calls
            start = time.perf_counter()
            out = gen.generate([ids], max_new_tokens=NEW_TOKENS)
            res.seconds += time.perf_counter() - start
            new = out.new_tokens[0]
            res.add(cat, new, counter.calls - before, matched=new == expected.get(i, new))
            stats.merge(out.stats)
    finally:
        counter.close()
    res.overhead = stats.overhead_fraction
    res.draft_s, res.verify_s = stats.draft_time_s, stats.verify_time_s
    return res


def markdown(
    results: list[Result], baseline: Result, assisted: Optional[Result], n_prompts: int
) -> str:
    lines = [
        "| method | tau | tau / HF assisted | time (s) | vs generate | vs HF assisted | "
        "outside forwards | identical outputs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        tau_ratio = f"{r.tau / assisted.tau:.2f}x" if assisted else "-"
        vs_assisted = f"{assisted.seconds / r.seconds:.2f}x" if assisted else "-"
        overhead = "-" if r.overhead is None else f"{100 * r.overhead:.1f}%"
        lines.append(
            f"| {r.name} | {r.tau:.2f} | {tau_ratio} | {r.seconds:.1f} | "
            f"{baseline.seconds / r.seconds:.2f}x | {vs_assisted} | {overhead} | "
            f"{r.matches}/{n_prompts} |"
        )
    cats = sorted(baseline.per_category)
    lines += ["", "| method | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for r in results:
        ct = r.category_tau()
        lines.append(f"| {r.name} | " + " | ".join(f"{ct.get(c, 0):.2f}" for c in cats) + " |")
    return "\n".join(lines)


def suite(
    target: Any,
    draft: Any,
    prompts: list[Any],
    calibration: list[Any],
    budgets: tuple[int, ...],
    log: Callable[[str], None] = print,
) -> list[Result]:
    expected: dict[int, list[int]] = {}
    baseline = run_hf("target.generate (greedy)", target, prompts, expected)
    log(f"plain generate: {baseline.seconds:.1f} s, tau {baseline.tau:.2f}")
    assisted = run_hf(
        "HF assisted generation (assistant_model=, defaults)",
        target,
        prompts,
        expected,
        assistant_model=draft,
    )
    log(f"HF assisted: {assisted.seconds:.1f} s, tau {assisted.tau:.2f}")
    results = [baseline, assisted]
    configs: list[tuple[str, Any]] = [("planner", None)]
    for b in budgets:
        configs.append(
            (
                f"ferrolm sequoia budget {b}",
                lambda b=b, p=None: speculative.SpeculativeGenerator(
                    target, draft, method="sequoia", budget=b, acceptance=p, max_depth=12
                ),
            )
        )
        configs.append(
            (
                f"ferrolm specexec budget {b}",
                lambda b=b, p=None: speculative.SpeculativeGenerator(
                    target, draft, method="specexec", budget=b, expand_per_step=max(8, b // 6)
                ),
            )
        )
    p = None
    for name, make in configs:
        if make is None:  # calibrate on held-out prompts, then run the planner's tree
            planner = speculative.SpeculativeGenerator(target, draft, method="sequoia", budget=128)
            chosen = planner.calibrate(
                [ids for _, ids in calibration],
                sizes=(1, 2, 4, 8, 16, 32, 64),
                max_new_tokens=NEW_TOKENS,
            )
            p = planner.acceptance
            log(f"acceptance p[:8] = {[round(float(v), 3) for v in p[:8]]}; planner: {chosen}")
            d = max(1, chosen.d)
            name = f"ferrolm sequoia planner (n={chosen.n}, d={d})"
            gen = speculative.SpeculativeGenerator(
                target, draft, method="sequoia", acceptance=p, tree_shape=(chosen.n, d)
            )
        else:
            gen = make(p=p) if "sequoia" in name else make()
        r = run_ferrolm(name, gen, prompts, expected)
        log(
            f"{name}: {r.seconds:.1f} s, tau {r.tau:.2f}, outside forwards "
            f"{100 * (r.overhead or 0):.1f}%, identical {r.matches}/{len(prompts)}, "
            f"draft {r.draft_s:.1f} s, verify {r.verify_s:.1f} s, per category {r.category_tau()}"
        )
        results.append(r)
    log(markdown(results[:1] + results[2:] + results[1:2], baseline, assisted, len(prompts)))
    return results


# ---------------------------------------------------------------------------- pytest entry points


@pytest.fixture(scope="module")
def setup() -> Any:
    if REAL:
        target, draft, tokenizer = qwen_pair()
        torch.set_num_threads(int(os.environ.get("FERROLM_BENCH_THREADS", "2")))
        yield target, draft, spec_bench_prompts(tokenizer), spec_bench_prompts(tokenizer, 1, 1)[:3]
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    target, draft, prompts = tiny_pair()
    yield target, draft, prompts, prompts[:1]
    torch.set_num_threads(threads)


@pytest.mark.benchmark(group="spec-generate")
def bench_speculative_generate_suite(benchmark: Any, setup: Any) -> None:
    target, draft, prompts, calibration = setup
    budgets = (64, 128) if REAL else (16,)
    results = benchmark.pedantic(
        suite,
        args=(target, draft, prompts, calibration, budgets, lambda s: None),
        rounds=1,
        iterations=1,
    )
    baseline, assisted = results[0], results[1]
    for r in results:
        benchmark.extra_info[r.name] = {
            "tau": r.tau,
            "seconds": r.seconds,
            "identical": r.matches,
            "per_category_tau": r.category_tau(),
            "outside_forwards": r.overhead,
        }
    for r in results[2:]:
        assert r.matches == len(prompts), f"{r.name}: output differs from target.generate"
    benchmark.extra_info["tau_vs_assisted"] = {r.name: r.tau / assisted.tau for r in results[2:]}
    benchmark.extra_info["speedup_vs_generate"] = {
        r.name: baseline.seconds / r.seconds for r in results[2:]
    }


if __name__ == "__main__":
    if "--real" in sys.argv:
        os.environ["FERROLM_BENCH_REAL"] = "1"
        REAL = True
    if "--spec-bench" in sys.argv[:-1]:
        SPEC_BENCH = Path(sys.argv[sys.argv.index("--spec-bench") + 1])
    torch.set_num_threads(int(os.environ.get("FERROLM_BENCH_THREADS", "2")))
    if REAL:
        t, d, tok = qwen_pair()
        ps, cal = spec_bench_prompts(tok), spec_bench_prompts(tok, 1, 1)[:3]
        budgets: tuple[int, ...] = (64, 128)
    else:
        t, d, ps = tiny_pair()
        cal, budgets = ps[:1], (16,)
    start = time.perf_counter()
    suite(t, d, ps, cal, budgets, lambda s: print(s, flush=True))
    print(f"total {time.perf_counter() - start:.0f} s; torch threads {torch.get_num_threads()}")
