"""`ferrolm generate` and `ferrolm speculative plan`: speculative decoding on the command line."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ferrolm._cli_common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    UsageError,
    bounded_float,
    bounded_int,
    check_output,
    logger,
    to_json,
    write_output,
)

_INT_MAX = 2**31 - 1
_MAX_ACCEPTANCE_BYTES = 1 << 20  # a vector of a few hundred numbers; anything larger is not one


def _load(path_or_name: str, role: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """A model directory (save_pretrained layout), a Hub id or a packaged fixture name."""
    from ferrolm._paths import resolve
    from ferrolm.testing.models import FIXTURES, load_pretrained

    device = getattr(args, "device", "cpu")
    dtype = _dtype(getattr(args, "dtype", "float32"))
    if path_or_name in FIXTURES:
        fixture, fixture_tokenizer = load_pretrained(path_or_name)
        return fixture.to(device=device, dtype=dtype), fixture_tokenizer
    revision = getattr(args, "revision" if role == "target" else "draft_revision", None)
    path = resolve(path_or_name, revision=revision, argument=f"--{role}")
    if not (path / "config.json").is_file():
        raise ValueError(
            f"--{role} must be a model directory with config.json, a Hub id or one of "
            f"{sorted(FIXTURES)}, got {path_or_name!r}"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("loading the %s model from %s", role, path)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    model.to(device).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def add_generate_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Registers `ferrolm generate`."""
    p = sub.add_parser(
        "generate",
        parents=parents,
        help="speculative generation with a target/draft pair of Hugging Face models",
        description="Generates text from PROMPT with the target model, drafting with the "
        "draft model (SpecExec, Sequoia or a chain); output is streamed and lossless. With "
        "--json - the text is not streamed: stdout holds the JSON result only.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("prompt", help="the prompt text")
    p.add_argument(
        "--target", required=True, help="target model: a directory, a Hub id or a fixture name"
    )
    p.add_argument(
        "--draft", required=True, help="draft model: a directory, a Hub id or a fixture name"
    )
    p.add_argument("--revision", help="Hub revision of --target (branch, tag or commit)")
    p.add_argument("--draft-revision", help="Hub revision of --draft")
    p.add_argument("--device", default="cpu", help="where both models run (cpu, cuda, cuda:1...)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="the models' weight dtype (default float32)",
    )
    p.add_argument("--method", choices=("specexec", "sequoia", "chain"), default="specexec")
    p.add_argument(
        "--draft-weights",
        choices=("float32", "bfloat16", "int8"),
        default=None,
        help="on a CPU, the weights ferrolm's kernel reads for the draft (a bfloat16 or int8 "
        "copy: a cheaper draft; the output stays the target's); default the draft's own",
    )
    p.add_argument(
        "--budget", type=bounded_int(1, 1 << 16), default=64, help="tree nodes per iteration"
    )
    p.add_argument(
        "--max-depth", type=bounded_int(1, 1 << 16), default=None, help="deepest draft token"
    )
    p.add_argument("--max-new-tokens", type=bounded_int(1, 1 << 20), default=128)
    p.add_argument(
        "--temperature",
        type=bounded_float(0.0, 1e4),
        default=None,
        help="0 = greedy, > 0 = sample; default: as the target's generation config says",
    )
    p.add_argument("--top-k", type=bounded_int(0, _INT_MAX), default=None)
    p.add_argument("--top-p", type=bounded_float(0.0, 1.0, low_open=True), default=None)
    p.add_argument("--min-p", type=bounded_float(0.0, 1.0), default=None)
    p.add_argument("--repetition-penalty", type=bounded_float(0.0, 1e4, low_open=True))
    p.add_argument("--seed", type=bounded_int(0, 2**63 - 1), default=0)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write the text, the new token ids and the statistics as JSON to FILE (-: stdout)",
    )
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """Body of `ferrolm generate`."""
    check_output(args.json, "--json")
    target, tokenizer = _load(args.target, "target", args)
    if tokenizer is None:
        raise ValueError("--target has no tokenizer files; save its tokenizer next to it")
    draft, draft_tokenizer = _load(args.draft, "draft", args)

    import torch

    from ferrolm import speculative

    gen = speculative.SpeculativeGenerator(
        target,
        draft,
        method=args.method,
        budget=args.budget,
        max_depth=args.max_depth,
        draft_weights=args.draft_weights,
        tokenizer=tokenizer,
        draft_tokenizer=draft_tokenizer,
    )
    if args.chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": args.prompt}], add_generation_prompt=True
        )
        if not isinstance(ids, list):
            ids = ids["input_ids"]
    else:
        ids = tokenizer(args.prompt).input_ids
    streamer = None
    if args.json != "-":
        from transformers import TextStreamer

        streamer = TextStreamer(tokenizer, skip_prompt=not args.chat, skip_special_tokens=True)
    sampling: dict[str, Any] = {}
    if args.temperature is not None:
        sampling["do_sample"] = args.temperature > 0
        if args.temperature > 0:
            sampling["temperature"] = args.temperature
    out = gen.generate(
        [list(ids)],
        max_new_tokens=args.max_new_tokens,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        generator=torch.Generator().manual_seed(args.seed),
        **sampling,
        streamer=streamer,
    )
    logger.info("[%s, budget %d] %s", args.method, args.budget, out.stats.summary())
    if args.json is not None:
        stats = out.stats
        result = {
            "prompt": args.prompt,
            "method": args.method,
            "budget": args.budget,
            "prompt_ids": [int(i) for i in ids],
            "new_tokens": [int(i) for i in out.new_tokens[0]],
            "text": tokenizer.decode(out.new_tokens[0], skip_special_tokens=True),
            "stats": {
                "tau": stats.tau,
                "tokens_per_s": stats.tokens_per_s,
                "new_tokens": stats.new_tokens,
                "target_forwards": stats.target_forwards,
                "draft_forwards": stats.draft_forwards,
                "draft_time_s": stats.draft_time_s,
                "verify_time_s": stats.verify_time_s,
                "total_time_s": stats.total_time_s,
            },
        }
        write_output(args.json, to_json(result))
    return EXIT_OK


def add_speculative_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Registers `ferrolm speculative plan`."""
    p = sub.add_parser(
        "speculative", parents=parents, help="speculative decoding tools", epilog=EXIT_CODES_HELP
    )
    spec_sub = p.add_subparsers(dest="spec_command", metavar="SUBCOMMAND")
    plan = spec_sub.add_parser(
        "plan",
        parents=parents,
        help="choose Sequoia's tree size and depth from acceptance and measured latencies",
        description="Prints the (n, d) minimising time per token, (d t_draft + t_verify(n)) / "
        "F[n][d], with its predicted tokens per step and speedup over plain decoding.",
        epilog=EXIT_CODES_HELP,
    )
    plan.add_argument(
        "--acceptance",
        help="file of p_1..p_B (whitespace separated); default: estimated from the models",
    )
    plan.add_argument(
        "--skip-first",
        action="store_true",
        help="the file's first number is unused (Sequoia's published acceptance_vector.txt)",
    )
    plan.add_argument("--target", help="target model directory: profiled for t_verify(n)")
    plan.add_argument("--draft", help="draft model directory: profiled for t_draft")
    plan.add_argument(
        "--latencies",
        help="instead of --target: 'n:seconds,...' verify latencies, e.g. '1:0.05,64:0.09'",
    )
    plan.add_argument(
        "--draft-latency",
        type=bounded_float(0.0, 3600.0, low_open=True),
        help="instead of --draft: seconds per step",
    )
    plan.add_argument("--sizes", default="1,2,4,8,16,32,64,128", help="tree sizes to consider")
    plan.add_argument("--max-depth", type=bounded_int(1, 64), default=12)
    plan.add_argument("--prompt", action="append", help="prompt(s) to estimate acceptance on")
    plan.add_argument(
        "--json", metavar="FILE", help="write the plan and its table as JSON to FILE (-: stdout)"
    )
    plan.set_defaults(func=run_plan)

    def no_subcommand(args: argparse.Namespace) -> int:
        raise UsageError(
            "speculative: a subcommand is required: plan (see `ferrolm speculative --help`)"
        )

    p.set_defaults(func=no_subcommand)


def _read_acceptance(path: str, skip_first: bool) -> np.ndarray:
    file = Path(path)
    size = file.stat().st_size
    if size > _MAX_ACCEPTANCE_BYTES:
        raise ValueError(
            f"--acceptance must be a small text file of numbers (at most "
            f"{_MAX_ACCEPTANCE_BYTES} bytes), got {size} bytes in {path}"
        )
    try:
        words = file.read_bytes().decode("ascii").split()
        values = np.array([float(w) for w in words], dtype=np.float64)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(
            f"--acceptance must be a text file of whitespace-separated numbers, got {path}"
        ) from None
    if skip_first:
        values = values[1:]
    if len(values) == 0:
        raise ValueError(f"--acceptance must hold at least one probability, got none in {path}")
    bad = [float(v) for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"--acceptance values must lie in [0, 1], got {bad[0]} in {path}")
    if values.sum() > 1 + 1e-6:  # p[k] is P(the k-th ranked child is the accepted one)
        raise ValueError(
            f"--acceptance values must sum to at most 1, got {values.sum():.6g} in {path}"
            + ("" if skip_first else " (is the first number unused? try --skip-first)")
        )
    return values


def _estimate_acceptance(args: argparse.Namespace, target: Any, draft: Any, tokenizer: Any) -> Any:
    from ferrolm import speculative

    if tokenizer is None:
        raise ValueError("--target has no tokenizer files; save its tokenizer next to it")
    prompts = args.prompt or ["def quicksort(items):", "The three laws of motion are"]
    return speculative.estimate_acceptance(target, draft, [tokenizer(p).input_ids for p in prompts])


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(not 1 <= s <= 1 << 16 for s in sizes):
        raise ValueError(f"--sizes must be integers in [1, 65536], got {text!r}")
    return sizes


def _parse_latencies(text: str) -> tuple[np.ndarray, np.ndarray]:
    sizes: list[int] = []
    latency: list[float] = []
    for item in (i for i in text.split(",") if i.strip()):
        n, sep, t = item.partition(":")
        try:
            size, seconds = int(n), float(t)
        except ValueError:
            size, seconds = 0, math.nan
        if not sep or not 1 <= size <= 1 << 16 or not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(
                f"--latencies must be 'n:seconds,...' with n in [1, 65536] and seconds > 0, "
                f"got {item!r}"
            )
        sizes.append(size)
        latency.append(seconds)
    if not sizes:
        raise ValueError(f"--latencies must name at least one 'n:seconds' pair, got {text!r}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"--latencies must name each tree size once, got {text!r}")
    return np.array(sizes, dtype=np.int64), np.array(latency, dtype=np.float64)


def run_plan(args: argparse.Namespace) -> int:
    """Body of `ferrolm speculative plan`."""
    check_output(args.json, "--json")
    if not args.latencies and not args.target:
        raise UsageError("give --latencies or --target to measure t_verify(n)")
    if args.draft_latency is None and not args.draft:
        raise UsageError("give --draft-latency or --draft to measure t_draft")
    if not args.acceptance and not (args.target and args.draft):
        raise UsageError("give --acceptance FILE, or --target and --draft to estimate it")
    # everything read from options and files is checked before any model is loaded
    candidate_sizes = _parse_sizes(args.sizes)
    p = _read_acceptance(args.acceptance, args.skip_first) if args.acceptance else None
    measured_sizes = _parse_latencies(args.latencies) if args.latencies else None

    from ferrolm import speculative

    target = draft = tokenizer = None
    if args.target:
        target, tokenizer = _load(args.target, "target", args)
    if args.draft:
        draft, _ = _load(args.draft, "draft", args)
    if p is None:
        p = _estimate_acceptance(args, target, draft, tokenizer)
    if measured_sizes is not None:
        sizes, latency = measured_sizes
    else:
        measured = speculative.profile(target, sorted(set(candidate_sizes) | {1}))
        sizes, latency = measured.sizes, measured.latency_s
    t_draft: Optional[float] = args.draft_latency
    if t_draft is None:
        t_draft = float(speculative.profile(draft, [8]).latency_s[0])
    order = np.argsort(sizes)
    sizes, latency = sizes[order], latency[order]
    table = speculative.sequoia_dp(p, max_nodes=int(sizes.max()), max_depth=args.max_depth)
    chosen = speculative.plan(table, sizes, latency, t_draft)
    rows = []
    for n, t in zip(sizes, latency):

        def rate(d: int, n: int = int(n), t: float = float(t)) -> float:
            return table.value(n, d) / (d * t_draft + t)

        best = max(range(args.max_depth + 1), key=rate)
        f = table.value(int(n), best)
        rows.append((int(n), float(t), best, float(f), (best * t_draft + t) / f))
    if args.json != "-":
        _print_plan(p, t_draft, rows, chosen)
    if args.json is not None:
        result = {
            "acceptance": [float(v) for v in p],
            "t_draft_s": t_draft,
            "max_depth": args.max_depth,
            "rows": [
                {"n": n, "t_verify_s": t, "best_d": d, "tokens_per_step": f, "s_per_token": s}
                for n, t, d, f, s in rows
            ],
            "chosen": {
                "n": chosen.n,
                "d": chosen.d,
                "tokens_per_step": chosen.tokens_per_step,
                "s_per_token": chosen.s_per_token,
                "speedup": chosen.speedup,
            },
        }
        write_output(args.json, to_json(result))
    return EXIT_OK


def _print_plan(p: np.ndarray, t_draft: float, rows: list[Any], chosen: Any) -> None:
    print(f"acceptance p[1..{len(p)}]: " + " ".join(f"{v:.3f}" for v in p[:8]) + " ...")
    print(f"t_draft = {1e3 * t_draft:.2f} ms per step")
    print("| n | t_verify (ms) | best d | tokens/step | ms/token |")
    print("|---|---|---|---|---|")
    for n, t, best, f, s in rows:
        print(f"| {n} | {1e3 * t:.2f} | {best} | {f:.2f} | {1e3 * s:.2f} |")
    print(
        f"chosen: n = {chosen.n}, d = {chosen.d}, {chosen.tokens_per_step:.2f} tokens/step, "
        f"{1e3 * chosen.s_per_token:.2f} ms/token, predicted speedup {chosen.speedup:.2f}x"
    )
