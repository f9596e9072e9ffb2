"""Nothing in the repository points outside it.

A user of the package or a fresh clone has no notes folder next to the checkout and no build
machine's home: every tracked file must do without them. Data that cannot ship (Spec-Bench's
prompts) is found through an environment variable, and docs/fixtures.md says where to get it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# spelled in pieces so that this file does not match itself
OUTSIDE = re.compile(re.escape(".." + "/shared") + "|" + re.escape("/" + "work/"))


def outside_references(root: Path, files: list[str]) -> list[str]:
    """``path:line: text`` for each line of ``files`` (relative to ``root``) naming a place
    outside the repository."""
    hits = []
    for rel in files:
        path = root / rel
        if not path.is_file():  # a deleted file git still lists, or a submodule
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary fixtures
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{rel}:{n}: {line.strip()}")
    return hits


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (lists the tracked files)")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [name for name in out.decode("utf-8", "surrogateescape").split("\0") if name]


def test_no_tracked_file_points_outside_the_repository() -> None:
    assert outside_references(ROOT, _tracked_files()) == []


def test_the_check_finds_each_kind_of_outside_reference(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("see ../" + "shared/MODELS.md for the models\n")
    (tmp_path / "b.py").write_text('ok = "shared"\npath = "/' + 'work/fixtures/x.gguf"\n')
    (tmp_path / "c.txt").write_text("shared memory, a shared cache, ./shared\n")
    (tmp_path / "d.bin").write_bytes(b"\xff\xfe../" + b"shared")
    found = outside_references(tmp_path, ["a.md", "b.py", "c.txt", "d.bin", "gone.txt"])
    assert [f.split(": ")[0] for f in found] == ["a.md:1", "b.py:2"]
