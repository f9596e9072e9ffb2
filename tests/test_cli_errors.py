"""The `ferrolm` command on bad input: one stderr line, a documented exit code, no traceback.

Every case runs the real command in its own process (``python -m ferrolm``), so an uncaught
exception, a Rust panic or an abort would show up as a traceback or a wrong exit code. The
processes are started all at once and collected afterwards: each spends most of its life
starting Python, so together they take about as long as the slowest one.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ferrolm._cli_common import (
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_MISSING_EXTRA,
    EXIT_USAGE,
    run_command,
)
from ferrolm.cli import build_parser, main

USAGE, INPUT = EXIT_USAGE, EXIT_INPUT
HUGE = str(10**30)

# (id, argv, expected exit code, a fragment the one-line message must contain)
CASES: list[tuple[str, list[str], int, str]] = [
    ("no-such-command", ["frobnicate"], USAGE, "invalid choice"),
    ("unknown-option", ["doctor", "--frobnicate"], USAGE, "--frobnicate"),
    ("undertrained-no-path", ["undertrained"], USAGE, "path"),
    ("undertrained-missing-file", ["undertrained", "missing.gguf"], INPUT, "missing.gguf"),
    ("undertrained-empty-dir", ["undertrained", "emptydir"], INPUT, "emptydir"),
    ("undertrained-garbage-gguf", ["undertrained", "garbage.gguf"], INPUT, "garbage.gguf"),
    ("undertrained-garbage-json", ["undertrained", "tok/tokenizer.json"], INPUT, "tokenizer.json"),
    ("undertrained-truncated-gguf", ["undertrained", "trunc.gguf"], INPUT, "trunc.gguf"),
    ("undertrained-empty-file", ["undertrained", "empty.gguf"], INPUT, "empty.gguf"),
    ("undertrained-forged-count", ["undertrained", "huge.gguf"], INPUT, "huge.gguf"),
    ("undertrained-percentile-nan", ["undertrained", "x", "--percentile", "nan"], USAGE, "nan"),
    ("undertrained-percentile-0", ["undertrained", "x", "--percentile", "0"], USAGE, "(0, 100]"),
    ("undertrained-percentile-abc", ["undertrained", "x", "--percentile", "abc"], USAGE, "abc"),
    ("undertrained-top-negative", ["undertrained", "x", "--top", "-1"], USAGE, "--top"),
    ("undertrained-verify-top-huge", ["undertrained", "x", "--verify-top", HUGE], USAGE, HUGE),
    ("undertrained-threshold-2", ["undertrained", "x", "--threshold", "2"], USAGE, "--threshold"),
    (
        "undertrained-json-no-folder",
        ["undertrained", "garbage.gguf", "--json", "nofolder/out.json"],
        USAGE,
        "nofolder",
    ),
    (
        "undertrained-two-stdout",
        ["undertrained", "garbage.gguf", "--json", "-", "--markdown", "-"],
        USAGE,
        "stdout",
    ),
    ("doctor-json-is-dir", ["doctor", "--json", "emptydir"], USAGE, "directory"),
    ("plan-nothing", ["speculative", "plan"], USAGE, "--latencies"),
    ("speculative-no-subcommand", ["speculative"], USAGE, "subcommand is required"),
    (
        "plan-acceptance-missing",
        [
            "speculative",
            "plan",
            "--acceptance",
            "nope.txt",
            "--latencies",
            "1:0.1",
            "--draft-latency",
            "0.01",
        ],
        INPUT,
        "nope.txt",
    ),
    (
        "plan-acceptance-dir",
        [
            "speculative",
            "plan",
            "--acceptance",
            "emptydir",
            "--latencies",
            "1:0.1",
            "--draft-latency",
            "0.01",
        ],
        INPUT,
        "emptydir",
    ),
    (
        "plan-acceptance-garbage",
        [
            "speculative",
            "plan",
            "--acceptance",
            "garbage.gguf",
            "--latencies",
            "1:0.1",
            "--draft-latency",
            "0.01",
        ],
        INPUT,
        "--acceptance",
    ),
    (
        "plan-acceptance-sum",
        [
            "speculative",
            "plan",
            "--acceptance",
            "sum2.txt",
            "--latencies",
            "1:0.1",
            "--draft-latency",
            "0.01",
        ],
        INPUT,
        "sum to at most 1",
    ),
    (
        "plan-latencies-garbage",
        [
            "speculative",
            "plan",
            "--acceptance",
            "acc.txt",
            "--latencies",
            "1:x,8",
            "--draft-latency",
            "0.01",
        ],
        INPUT,
        "--latencies",
    ),
    (
        "plan-draft-latency-negative",
        ["speculative", "plan", "--draft-latency", "-1"],
        USAGE,
        "--draft-latency",
    ),
    ("plan-max-depth-huge", ["speculative", "plan", "--max-depth", HUGE], USAGE, "--max-depth"),
    (
        "generate-missing-target",
        ["generate", "hi", "--target", "nowhere", "--draft", "nowhere"],
        INPUT,
        "--target",
    ),
    (
        "generate-budget-0",
        ["generate", "hi", "--target", "a", "--draft", "b", "--budget", "0"],
        USAGE,
        "--budget",
    ),
    (
        "generate-temperature-inf",
        ["generate", "hi", "--target", "a", "--draft", "b", "--temperature", "inf"],
        USAGE,
        "--temperature",
    ),
    ("demo-two-stdout", ["demo", "--json", "-", "--markdown", "-"], USAGE, "stdout"),
]


def _inputs(root: Path) -> None:
    """The bad files the cases name: random bytes, a header cut short, an empty file..."""
    rng = random.Random(0)
    (root / "emptydir").mkdir()
    (root / "tok").mkdir()
    (root / "garbage.gguf").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    (root / "tok" / "tokenizer.json").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    (root / "trunc.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (root / "empty.gguf").write_bytes(b"")
    # a header that claims 2**39 metadata entries in a 92-byte file
    (root / "huge.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2**39) + bytes(64))
    (root / "acc.txt").write_text("0.5 0.2 0.1 0.05\n")
    (root / "sum2.txt").write_text("0.9 0.8 0.7\n")


def _ferrolm(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [sys.executable, "-m", "ferrolm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Runs every case (concurrently) and returns ``{id: (exit code, stdout, stderr)}``."""
    root = tmp_path_factory.mktemp("cli_errors")
    _inputs(root)
    procs = {name: _ferrolm(*argv, cwd=root) for name, argv, _, _ in CASES}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = (proc.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize(
    ("name", "code", "fragment"), [(c[0], c[2], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_stderr_line_and_an_exit_code(
    results: dict[str, tuple[int, str, str]], name: str, code: int, fragment: str
) -> None:
    returncode, stdout, stderr = results[name]
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ferrolm: error: "), stderr
    assert fragment in lines[0], stderr
    assert returncode == code, (returncode, stderr)
    assert stdout == ""


def test_debug_flag_shows_the_traceback_before_or_after_the_command(tmp_path: Path) -> None:
    for argv in (
        ["--debug", "undertrained", "missing.gguf"],
        ["undertrained", "x.gguf", "--debug"],
    ):
        proc = _ferrolm(*argv, cwd=tmp_path)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == EXIT_INPUT
        assert "Traceback (most recent call last)" in stderr
        assert "FileNotFoundError" in stderr
        assert stderr.splitlines()[-1].startswith("ferrolm: error: ")


@pytest.mark.slow  # the demo's first section (doctor) runs until the interrupt is handled
def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path) -> None:
    proc = _ferrolm("demo", cwd=tmp_path)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the demo logs "running: ..." before each section
    assert line.startswith("running:"), line
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert "Traceback" not in rest, rest
    assert rest.splitlines()[-1] == "ferrolm: interrupted", rest
    assert proc.returncode == EXIT_INTERRUPTED


# ---------------------------------------------------------- the mapping, exception by exception


def _raising(exc: BaseException) -> Any:
    def body(args: Any) -> int:
        raise exc

    return body


@pytest.mark.parametrize(
    ("exc", "code", "fragment"),
    [
        (ValueError("`k` must be >= 1, got 0"), EXIT_INPUT, "`k` must be >= 1, got 0"),
        (TypeError("`x` must be float32, got int8"), EXIT_INPUT, "float32"),
        (FileNotFoundError(2, "No such file or directory", "m.gguf"), EXIT_INPUT, "m.gguf"),
        (IsADirectoryError(21, "Is a directory", "d"), EXIT_INPUT, "Is a directory: d"),
        (MemoryError("`budget` of 2**40 nodes needs 8 TiB"), EXIT_INPUT, "out of memory"),
        (OverflowError("int too big to convert"), EXIT_INPUT, "int too big"),
        (RuntimeError("no CUDA driver"), EXIT_INPUT, "no CUDA driver"),
        (TimeoutError("peer 1 did not answer in 5 s"), EXIT_INPUT, "peer 1"),
        (KeyError("token_embd.weight"), EXIT_INPUT, "missing key 'token_embd.weight'"),
        (
            ModuleNotFoundError("No module named 'torch'", name="torch"),
            EXIT_MISSING_EXTRA,
            "[torch]",
        ),
        (
            ModuleNotFoundError("No module named 'transformers'", name="transformers"),
            EXIT_MISSING_EXTRA,
            "ferrolm[hf]",
        ),
        (ImportError("needs `pip install 'ferrolm[torch]'`"), EXIT_MISSING_EXTRA, "ferrolm[torch]"),
        (ValueError("line one\nline two\n\nline three"), EXIT_INPUT, "line one / line two / line"),
        (AssertionError("a ferrolm bug"), EXIT_FAILED, "--debug"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "ferrolm: interrupted"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_each_exception_class_maps_to_one_line(
    capsys: pytest.CaptureFixture[str], exc: BaseException, code: int, fragment: str
) -> None:
    args = build_parser().parse_args(["doctor"])
    assert run_command(_raising(exc), args) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert fragment in err
    if code != EXIT_INTERRUPTED:
        assert err.startswith("ferrolm: error: ")
    assert "Traceback" not in err


def test_a_very_long_message_is_cut_to_one_bounded_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["doctor"])
    assert run_command(_raising(ValueError("x" * 100_000)), args) == EXIT_INPUT
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert len(err) < 2100


def test_exit_codes_are_documented_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in ("0 success", "2 usage error", "3 bad input", "4 a missing optional", "130"):
        assert code in " ".join(out.split()), out
    assert main(["undertrained", "--help"]) == 0
    assert "130" in capsys.readouterr().out


def test_a_reader_that_goes_away_ends_the_command_quietly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `ferrolm ... --json - | head -c 10`: writing to the closed pipe raises BrokenPipeError
    args = build_parser().parse_args(["doctor"])
    assert run_command(_raising(BrokenPipeError(32, "Broken pipe")), args) == EXIT_FAILED
    assert capsys.readouterr().err == ""
