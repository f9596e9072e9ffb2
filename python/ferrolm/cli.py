"""The `ferrolm` command."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from ferrolm import __version__
from ferrolm._cli_common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    OneLineParser,
    add_common_options,
    bounded_float,
    bounded_int,
    check_output,
    check_stdout_once,
    common_parent,
    logger,
    progress_only_on_a_terminal,
    run_command,
    setup_logging,
    silence_stdout,
    write_output,
)

_INT_MAX = 2**31 - 1


def _doctor(args: argparse.Namespace) -> int:
    from ferrolm._doctor import doctor_section
    from ferrolm._report import Report

    if args.json_stdout:
        args.json = "-"
    check_output(args.json, "--json")
    report = Report("ferrolm doctor", [doctor_section()])
    if args.json != "-":
        print(report.to_markdown())
    write_output(args.json, report.to_json())
    statuses = {row[2] for row in report.sections[0].rows}
    return EXIT_FAILED if "error" in statuses else EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ferrolm._demo import run_demo

    check_stdout_once(args, "json", "markdown")
    check_output(args.json, "--json")
    check_output(args.markdown, "--markdown")
    report = run_demo(progress=logger.info)
    if "-" not in (args.json, args.markdown):
        print(report.to_markdown())
    write_output(args.json, report.to_json())
    write_output(args.markdown, report.to_markdown())
    return EXIT_OK


def _undertrained(args: argparse.Namespace) -> int:
    from ferrolm._cli_common import to_json
    from ferrolm.tokens.report import summary_line, undertrained

    check_stdout_once(args, "json", "markdown")
    check_output(args.json, "--json")
    check_output(args.markdown, "--markdown")
    rep = undertrained(
        args.path,
        run_verify=args.verify,
        percentile=args.percentile,
        threshold=args.threshold,
        verify_top=args.verify_top,
        top=args.top,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        device=args.device,
        dtype=args.dtype,
        revision=args.revision,
    )
    markdown = rep.to_report().to_markdown()
    if "-" not in (args.json, args.markdown):
        print(markdown)
    logger.info("%s", summary_line(rep))
    write_output(args.json, to_json(rep.to_dict()))
    write_output(args.markdown, markdown)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `ferrolm` command."""
    parser = OneLineParser(
        prog="ferrolm",
        description="Fast building blocks for LLM inference and training.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"ferrolm {__version__}")
    add_common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = [common_parent()]

    p = sub.add_parser(
        "doctor",
        parents=common,
        help="report versions, CPU threads, CUDA driver, GPU and NVRTC",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument(
        "--json", metavar="FILE", help="also write the report as JSON to FILE (-: stdout)"
    )
    p.add_argument("--json-stdout", action="store_true", help="the same as --json -")
    p.set_defaults(func=_doctor)

    p = sub.add_parser(
        "demo",
        parents=common,
        help="run every capability on built-in defaults",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument(
        "--json", metavar="FILE", help="also write the report as JSON to FILE (-: stdout)"
    )
    p.add_argument(
        "--markdown", metavar="FILE", help="also write the report as Markdown to FILE (-: stdout)"
    )
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "undertrained",
        parents=common,
        help="find under-trained (glitch) tokens of a model or tokenizer (Magikarp)",
        description="Scan a tokenizer (tokenizer.json, GGUF or tiktoken), rank tokens by weight "
        "indicators when weights are present, and optionally verify candidates with the model.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument(
        "path", help="a model directory, a GGUF file, a tokenizer file or a Hub id (org/name)"
    )
    p.add_argument(
        "--revision",
        default=None,
        help="for a Hub id: the branch, tag or commit to read (default the main branch)",
    )
    p.add_argument("--device", default=None, help="where --verify runs the model (default cpu)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="the model's dtype for --verify (default float32)",
    )
    p.add_argument("--verify", action="store_true", help="ask the model to repeat candidates")
    p.add_argument(
        "--json", metavar="FILE", help="write the full report as JSON to FILE (-: stdout)"
    )
    p.add_argument(
        "--markdown", metavar="FILE", help="write the Markdown summary to FILE (-: stdout)"
    )
    p.add_argument(
        "--percentile",
        type=bounded_float(0.0, 100.0, low_open=True),
        default=2.0,
        help="candidates lie below this percentile of reachable tokens, in (0, 100] (default 2)",
    )
    p.add_argument(
        "--threshold",
        type=bounded_float(0.0, 1.0, low_open=True),
        default=0.01,
        help="confirmed when p(repeat) stays below this, in (0, 1] (default 0.01)",
    )
    p.add_argument(
        "--verify-top",
        type=bounded_int(1, _INT_MAX),
        default=100,
        help="candidates to verify (100)",
    )
    p.add_argument(
        "--top",
        type=bounded_int(0, _INT_MAX),
        default=20,
        help="candidates shown in the table (20)",
    )
    p.add_argument(
        "--batch-size", type=bounded_int(1, 4096), default=64, help="verification batch size (64)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_undertrained)

    from ferrolm._cli_prune import add_prune_parser
    from ferrolm._cli_speculative import add_generate_parser, add_speculative_parser

    add_generate_parser(sub, common)
    add_speculative_parser(sub, common)
    add_prune_parser(sub, common)

    from ferrolm._cli_cache import add_cache_parser

    add_cache_parser(sub, common)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `ferrolm` console script: returns the exit code (see `--help`)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `ferrolm --help | head -1`: the reader left, stop quietly
        silence_stdout()
        return EXIT_FAILED


def quiet_openmp_threads() -> None:
    """Sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it or torch is already loaded.

    By default torch's OpenMP threads keep spinning after each operation; on a CPU without spare
    cores they then compete with the threads of ferrolm's Linear kernel, which runs between
    torch's operations during speculative generation (measured 1.3-1.8x on a routed forward,
    ``benches/bench_linear.py``). OpenMP reads the variable once, when torch loads, so this
    only works before that; the baselines of the same process run under the same setting.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _main(argv: Optional[list[str]]) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors: argparse has printed them
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("ferrolm: interrupted\n")
        return EXIT_INTERRUPTED
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.verbose, args.quiet)
    if getattr(args.func, "__name__", "") in ("_demo", "run_generate"):
        quiet_openmp_threads()
    with progress_only_on_a_terminal():
        return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
