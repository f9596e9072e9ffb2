"""The `ferrolm` command."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ferrolm import __version__


def _write(path: Optional[str], text: str) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"wrote {path}", file=sys.stderr)


def _doctor(args: argparse.Namespace) -> int:
    from ferrolm._doctor import doctor_section
    from ferrolm._report import Report

    report = Report("ferrolm doctor", [doctor_section()])
    print(report.to_json() if args.json_stdout else report.to_markdown())
    _write(args.json, report.to_json())
    statuses = {row[2] for row in report.sections[0].rows}
    return 1 if "error" in statuses else 0


def _demo(args: argparse.Namespace) -> int:
    from ferrolm._demo import run_demo

    report = run_demo(progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(report.to_markdown())
    _write(args.json, report.to_json())
    _write(args.markdown, report.to_markdown())
    return 0


def _undertrained(args: argparse.Namespace) -> int:
    import json

    from ferrolm.tokens.report import summary_line, undertrained

    rep = undertrained(
        args.path,
        run_verify=args.verify,
        percentile=args.percentile,
        threshold=args.threshold,
        verify_top=args.verify_top,
        top=args.top,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    markdown = rep.to_report().to_markdown()
    print(markdown)
    print(summary_line(rep), file=sys.stderr)
    _write(args.json, json.dumps(rep.to_dict(), indent=2, ensure_ascii=False))
    _write(args.markdown, markdown)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `ferrolm` command."""
    parser = argparse.ArgumentParser(
        prog="ferrolm",
        description="Fast building blocks for LLM inference and training.",
    )
    parser.add_argument("--version", action="version", version=f"ferrolm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="report versions, CPU threads, CUDA driver, GPU and NVRTC")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--json-stdout", action="store_true", help="print JSON instead of Markdown")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("demo", help="run every capability on built-in defaults")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown to FILE")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "undertrained",
        help="find under-trained (glitch) tokens of a model or tokenizer (Magikarp)",
        description="Scan a tokenizer (tokenizer.json, GGUF or tiktoken), rank tokens by weight "
        "indicators when weights are present, and optionally verify candidates with the model.",
    )
    p.add_argument("path", help="a model directory, a GGUF file, or a tokenizer file")
    p.add_argument("--verify", action="store_true", help="ask the model to repeat candidates")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON to FILE")
    p.add_argument("--markdown", metavar="FILE", help="write the Markdown summary to FILE")
    p.add_argument(
        "--percentile",
        type=float,
        default=2.0,
        help="candidates lie below this percentile of reachable tokens (default 2)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.01,
        help="confirmed when p(repeat) stays below this (default 0.01)",
    )
    p.add_argument("--verify-top", type=int, default=100, help="candidates to verify (100)")
    p.add_argument("--top", type=int, default=20, help="candidates shown in the table (20)")
    p.add_argument("--batch-size", type=int, default=64, help="verification batch size (64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_undertrained)

    from ferrolm._cli_speculative import add_generate_parser, add_speculative_parser

    add_generate_parser(sub)
    add_speculative_parser(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `ferrolm` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
