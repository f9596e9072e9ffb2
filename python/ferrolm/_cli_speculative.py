"""`ferrolm generate` and `ferrolm speculative plan`: speculative decoding on the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np


def _load(path_or_name: str, role: str) -> tuple[Any, Any]:
    """A model directory (save_pretrained layout) or a packaged fixture name."""
    from ferrolm.testing.models import FIXTURES, load_pretrained

    if path_or_name in FIXTURES:
        return load_pretrained(path_or_name)
    path = Path(path_or_name)
    if not (path / "config.json").is_file():
        raise SystemExit(
            f"--{role} must be a model directory with config.json or one of {sorted(FIXTURES)}, "
            f"got {path_or_name!r}"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def add_generate_parser(sub: Any) -> None:
    """Registers `ferrolm generate`."""
    p = sub.add_parser(
        "generate",
        help="speculative generation with a target/draft pair of Hugging Face models",
        description="Generates text from PROMPT with the target model, drafting with the "
        "draft model (SpecExec, Sequoia or a chain); output is streamed and lossless.",
    )
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--target", required=True, help="target model directory (or fixture name)")
    p.add_argument("--draft", required=True, help="draft model directory (or fixture name)")
    p.add_argument("--method", choices=("specexec", "sequoia", "chain"), default="specexec")
    p.add_argument("--budget", type=int, default=64, help="tree nodes per iteration")
    p.add_argument("--max-depth", type=int, default=None, help="deepest draft token")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """Body of `ferrolm generate`."""
    import torch

    from ferrolm import speculative

    target, tokenizer = _load(args.target, "target")
    draft, draft_tokenizer = _load(args.draft, "draft")
    if tokenizer is None:
        raise SystemExit("--target has no tokenizer files; save its tokenizer next to it")
    gen = speculative.SpeculativeGenerator(
        target,
        draft,
        method=args.method,
        budget=args.budget,
        max_depth=args.max_depth,
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
    from transformers import TextStreamer

    out = gen.generate(
        [list(ids)],
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=torch.Generator().manual_seed(args.seed),
        streamer=TextStreamer(tokenizer, skip_prompt=not args.chat, skip_special_tokens=True),
    )
    print(f"[{args.method}, budget {args.budget}] {out.stats.summary()}", file=sys.stderr)
    return 0


def add_speculative_parser(sub: Any) -> None:
    """Registers `ferrolm speculative plan`."""
    p = sub.add_parser("speculative", help="speculative decoding tools")
    spec_sub = p.add_subparsers(dest="spec_command", metavar="SUBCOMMAND")
    plan = spec_sub.add_parser(
        "plan",
        help="choose Sequoia's tree size and depth from acceptance and measured latencies",
        description="Prints the (n, d) minimising time per token, (d t_draft + t_verify(n)) / "
        "F[n][d], with its predicted tokens per step and speedup over plain decoding.",
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
    plan.add_argument("--draft-latency", type=float, help="instead of --draft: seconds per step")
    plan.add_argument("--sizes", default="1,2,4,8,16,32,64,128", help="tree sizes to consider")
    plan.add_argument("--max-depth", type=int, default=12)
    plan.add_argument("--prompt", action="append", help="prompt(s) to estimate acceptance on")
    plan.set_defaults(func=run_plan)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _acceptance(args: argparse.Namespace, target: Any, draft: Any, tokenizer: Any) -> np.ndarray:
    from ferrolm import speculative

    if args.acceptance:
        values = np.array(Path(args.acceptance).read_text().split(), dtype=np.float64)
        return values[1:] if args.skip_first else values
    if target is None or draft is None:
        raise SystemExit("give --acceptance FILE, or --target and --draft to estimate it")
    prompts = args.prompt or ["def quicksort(items):", "The three laws of motion are"]
    return speculative.estimate_acceptance(target, draft, [tokenizer(p).input_ids for p in prompts])


def run_plan(args: argparse.Namespace) -> int:
    """Body of `ferrolm speculative plan`."""
    from ferrolm import speculative

    target = draft = tokenizer = None
    if args.target:
        target, tokenizer = _load(args.target, "target")
    if args.draft:
        draft, _ = _load(args.draft, "draft")
    p = _acceptance(args, target, draft, tokenizer)
    if args.latencies:
        pairs = [item.split(":") for item in args.latencies.split(",") if item]
        sizes = np.array([int(n) for n, _ in pairs])
        latency = np.array([float(t) for _, t in pairs])
    elif target is not None:
        sizes = np.array(sorted({int(s) for s in args.sizes.split(",")} | {1}))
        measured = speculative.profile(target, sizes.tolist())
        sizes, latency = measured.sizes, measured.latency_s
    else:
        raise SystemExit("give --latencies or --target to measure t_verify(n)")
    t_draft: Optional[float] = args.draft_latency
    if t_draft is None:
        if draft is None:
            raise SystemExit("give --draft-latency or --draft to measure t_draft")
        t_draft = float(speculative.profile(draft, [8]).latency_s[0])
    order = np.argsort(sizes)
    sizes, latency = sizes[order], latency[order]
    table = speculative.sequoia_dp(p, max_nodes=int(sizes.max()), max_depth=args.max_depth)
    chosen = speculative.plan(table, sizes, latency, t_draft)
    print(f"acceptance p[1..{len(p)}]: " + " ".join(f"{v:.3f}" for v in p[:8]) + " ...")
    print(f"t_draft = {1e3 * t_draft:.2f} ms per step")
    print("| n | t_verify (ms) | best d | tokens/step | ms/token |")
    print("|---|---|---|---|---|")
    for n, t in zip(sizes, latency):

        def rate(d: int, n: int = int(n), t: float = float(t)) -> float:
            return table.value(n, d) / (d * t_draft + t)

        best = max(range(args.max_depth + 1), key=rate)
        f = table.value(int(n), best)
        print(f"| {n} | {1e3 * t:.2f} | {best} | {f:.2f} | {1e3 * (best * t_draft + t) / f:.2f} |")
    print(
        f"chosen: n = {chosen.n}, d = {chosen.d}, {chosen.tokens_per_step:.2f} tokens/step, "
        f"{1e3 * chosen.s_per_token:.2f} ms/token, predicted speedup {chosen.speedup:.2f}x"
    )
    return 0
