"""Library code speaks through the `ferrolm` logger and draws progress only on a terminal.

``print`` belongs to the command line (``ferrolm.cli``, ``ferrolm._cli_*``), which owns stdout;
everywhere else a message is a log record, so that ``--json -`` keeps stdout clean and a user
of the library chooses what to see. ``tqdm`` is only created by ``ferrolm._progress``, which
disables it when stderr is not a terminal.
"""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "ferrolm"


def _is_cli(path: Path) -> bool:
    return path.name == "cli.py" or path.name.startswith("_cli")


def offending_calls(package: Path) -> list[str]:
    """``path:line: name`` for each ``print(...)`` outside the CLI and each ``tqdm`` use
    outside ``_progress.py``."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(package.parent)
        for node in ast.walk(tree):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if call and node.func.id == "print" and not _is_cli(path):  # type: ignore[attr-defined]
                bad.append(f"{rel}:{node.lineno}: print")
            if isinstance(node, (ast.Import, ast.ImportFrom)) and path.name != "_progress.py":
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] == "tqdm" for n in names):
                    bad.append(f"{rel}:{node.lineno}: tqdm")
    return bad


def test_library_code_neither_prints_nor_draws_its_own_progress_bars() -> None:
    assert offending_calls(PACKAGE) == []


def test_the_check_finds_print_and_tqdm(tmp_path: Path) -> None:
    pkg = tmp_path / "ferrolm"
    (pkg / "tokens").mkdir(parents=True)
    (pkg / "tokens" / "a.py").write_text("def f():\n    print('x')\n")
    (pkg / "tokens" / "b.py").write_text("from tqdm.auto import tqdm\n")
    (pkg / "cli.py").write_text("print('ok')\n")
    (pkg / "_progress.py").write_text("import tqdm\n")
    assert offending_calls(pkg) == ["ferrolm/tokens/a.py:2: print", "ferrolm/tokens/b.py:1: tqdm"]


def test_library_log_records_reach_the_cli_handler(capsys: pytest.CaptureFixture[str]) -> None:
    from ferrolm._cli_common import setup_logging

    try:
        setup_logging(verbose=0, quiet=False)
        logging.getLogger("ferrolm._gguf_cache").info("converting x")
        logging.getLogger("ferrolm.tokens").debug("hidden at the default level")
        logging.getLogger("ferrolm").warning("careful")
        err = capsys.readouterr().err
        assert err.splitlines() == ["converting x", "ferrolm: warning: careful"]
        setup_logging(verbose=0, quiet=True)
        logging.getLogger("ferrolm").info("hidden with -q")
        assert capsys.readouterr().err == ""
    finally:
        logger = logging.getLogger("ferrolm")
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


_CHILD = """
import os, sys
import ferrolm.cli
from ferrolm._cli_common import progress_only_on_a_terminal

ferrolm.cli.build_parser().parse_args(["doctor"])
assert "tqdm" not in sys.modules, "the CLI imported tqdm before its command ran"
with progress_only_on_a_terminal():  # stderr is a pipe here
    from tqdm.auto import tqdm
    import huggingface_hub.utils as hub

    bar = tqdm(total=1)
    print(bar.disable, hub.are_progress_bars_disabled(), os.environ.get("TQDM_DISABLE"))
    bar.close()
print("TQDM_DISABLE" in os.environ)
"""


def test_third_party_bars_are_off_while_a_command_runs_off_a_terminal() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE",)}
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "0"  # a user's explicit choice wins...
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    # ...over the default; tqdm's own bar is off, and the variable is gone afterwards
    assert out.stdout.split() == ["True", "False", "1", "False"]
    assert out.stderr == ""
