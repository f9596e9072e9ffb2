"""What every `ferrolm` command shares: one-line errors, exit codes, logging and report output.

A command body raises; :func:`run_command` turns the exception into one ``ferrolm: error: ...``
line on stderr and an exit code (``--debug`` prints the traceback first). Reports go to stdout
or to ``--json FILE`` / ``--markdown FILE``, where ``-`` means stdout; when stdout carries a
machine-readable report, everything else (progress, logs, the human summary) goes to stderr or is
left out, so ``ferrolm ... --json - | jq`` sees exactly one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

logger = logging.getLogger("ferrolm")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MISSING_EXTRA = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 the command failed (doctor found a broken check, or an "
    "unexpected internal error); 2 usage error (bad or missing option); 3 bad input (a file "
    "or value ferrolm cannot use: missing, unreadable, malformed, out of range, too large); "
    "4 a missing optional dependency (the message names the extra to install); 130 "
    "interrupted (Ctrl-C). Errors are one line on stderr; --debug adds the traceback."
)

# the pip extra that brings each optional import, for an ImportError that does not name one
_EXTRAS = {
    "torch": "torch",
    "transformers": "hf",
    "safetensors": "hf",
    "gguf": "hf",
    "tokenizers": "hf",
    "accelerate": "hf",
}
_MAX_MESSAGE = 2000


class UsageError(Exception):
    """Options that parse one by one but do not fit together (exit code 2)."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Prints ``ferrolm: error: <command>: <message>`` and exits with 2."""
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        sys.stderr.write(f"ferrolm: error: {where}{message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


def add_common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--debug``, ``-v/--verbose`` and ``-q/--quiet``, accepted before or after the command.

    On subcommands the defaults are suppressed so that an option given before the command is
    not reset by the subcommand's default.
    """
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else default,
        help="on error, print the full traceback as well as the one-line message",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else default,
        help="more messages on stderr (-vv: debug messages)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else default,
        help="only warnings and errors on stderr",
    )


def common_parent() -> OneLineParser:
    """A parent parser holding the common options, for ``add_parser(..., parents=[...])``."""
    parent = OneLineParser(add_help=False)
    add_common_options(parent, top=False)
    return parent


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at set-up), so a
    replaced stderr (pytest's capture, a redirect) never receives stale writes."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # a logging failure must not become the command's failure
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"ferrolm: {record.levelname.lower()}: {message}"
        return message


def setup_logging(verbose: int, quiet: bool) -> None:
    """Sends the ``ferrolm`` logger to stderr: INFO by default, DEBUG with -vv, WARNING with -q."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


@contextlib.contextmanager
def progress_only_on_a_terminal() -> Iterator[None]:
    """Keeps third-party progress bars (tqdm, Hugging Face downloads and GGUF conversion) off a
    stderr that is not a terminal while a command runs, as ferrolm's own are; a setting already
    in the environment wins, and the environment is restored afterwards.

    tqdm and huggingface_hub read these variables when they are first imported, so this must be
    entered before the command imports them (the CLI imports neither before its commands run).
    """
    from ferrolm._progress import stderr_is_terminal

    names = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")
    added = [] if stderr_is_terminal() else [n for n in names if n not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _one_line(text: str) -> str:
    line = " / ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _describe(exc: BaseException) -> tuple[str, int]:
    """The message and exit code for an exception a command raised."""
    if isinstance(exc, UsageError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, ImportError):
        text = str(exc) or type(exc).__name__
        extra = _EXTRAS.get((exc.name or "").partition(".")[0])
        if extra and "ferrolm[" not in text:
            text += f" (install it with `pip install 'ferrolm[{extra}]'`)"
        return f"missing dependency: {text}", EXIT_MISSING_EXTRA
    if isinstance(exc, MemoryError):
        return f"out of memory: {exc}" if str(exc) else "out of memory", EXIT_INPUT
    if isinstance(exc, OSError):
        if exc.strerror and exc.filename is not None and str(exc).startswith("["):
            return f"{exc.strerror}: {exc.filename}", EXIT_INPUT
        return str(exc) or type(exc).__name__, EXIT_INPUT
    if isinstance(exc, (ValueError, TypeError, ArithmeticError, RuntimeError, LookupError)):
        # a bare KeyError's str is the repr of the key: say what it is
        text = str(exc) if not isinstance(exc, KeyError) else f"missing key {exc}"
        return text or type(exc).__name__, EXIT_INPUT
    return (
        f"{type(exc).__name__}: {exc} (unexpected: run with --debug for the traceback)",
        EXIT_FAILED,
    )


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs a command body and maps whatever it raises to one stderr line and an exit code."""
    debug = bool(getattr(args, "debug", False))
    try:
        return int(func(args))
    except BrokenPipeError:
        # the reader of our stdout went away (`| head`): stop quietly, as Unix tools do
        silence_stdout()
        return EXIT_FAILED
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        sys.stderr.write("ferrolm: interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except BaseException as exc:  # every error becomes one line; --debug keeps the traceback
        message, code = _describe(exc)
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"ferrolm: error: {_one_line(message)}\n")
        return code


def silence_stdout() -> None:
    """Points stdout's file descriptor at /dev/null, so that the interpreter's final flush
    after a closed pipe neither fails nor prints "Exception ignored"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def check_output(path: Optional[str], option: str) -> None:
    """Refuses an output path whose folder does not exist, before any long work starts."""
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} must be a file path, got the directory {path!r}")
    if not target.parent.is_dir():
        raise UsageError(f"{option}: the folder of {path!r} does not exist")


def check_stdout_once(args: argparse.Namespace, *options: str) -> None:
    """At most one of ``options`` (attribute names) may be ``-``: stdout holds one document."""
    dashes = [o for o in options if getattr(args, o, None) == "-"]
    if len(dashes) > 1:
        names = " and ".join("--" + o.replace("_", "-") for o in dashes)
        raise UsageError(f"only one report can go to stdout, got `-` for {names}")


def write_output(path: Optional[str], text: str) -> None:
    """Writes ``text`` to ``path`` (``-``: stdout); does nothing when ``path`` is None."""
    if path is None:
        return
    if path == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    logger.info("wrote %s", path)


def to_json(data: Any) -> str:
    """Indented JSON; NaN and infinities become null so that strict parsers accept it."""
    return json.dumps(_finite(data), indent=2, ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number between ``low`` and ``high`` (open ends as asked)."""
    span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (low < value if low_open else low <= value)
        ok = ok and (value < high if high_open else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text}")
        return value

    parse.__name__ = "number"
    return parse
