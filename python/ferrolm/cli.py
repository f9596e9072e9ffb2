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

    from ferrolm._cli_spec import add_generate_parser, add_spec_parser

    add_generate_parser(sub)
    add_spec_parser(sub)
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
