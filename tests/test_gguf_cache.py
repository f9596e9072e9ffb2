"""The conversion cache's size cap: least-recently-used eviction when a conversion is written,
never of the entry just written nor of one being loaded (by this or another process).

Entries are tiny directories (a ``config.json`` and some bytes), published through the same
``publish`` step that ``convert_gguf`` ends with.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

from ferrolm._gguf_cache import (
    DEFAULT_MAX_GB,
    LOCK_NAME,
    cache_entries,
    cache_limit,
    cached_checkpoint,
    convert_gguf,
    publish,
)
from ferrolm.cli import main

CONFIG = b"{}"


def entry(root: Path, name: str, size: int, used: Optional[float] = None) -> Path:
    """A cache entry of ``size`` bytes of weights, last used at ``used`` (epoch seconds)."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_bytes(CONFIG)
    (path / "model.safetensors").write_bytes(b"\0" * size)
    if used is not None:
        (path / LOCK_NAME).touch()
        os.utime(path / LOCK_NAME, (used, used))
    return path


def staged(root: Path, size: int) -> Path:
    """A finished conversion in a hidden staging directory, as ``convert_gguf`` leaves it."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".staging-{size}-{len(list(root.iterdir()))}"
    path.mkdir()
    (path / "config.json").write_bytes(CONFIG)
    (path / "model.safetensors").write_bytes(b"\1" * size)
    return path


def names(root: Path) -> set[str]:
    return {e.name for e in cache_entries(root)}


def cap(monkeypatch: pytest.MonkeyPatch, n_bytes: int) -> None:
    monkeypatch.setenv("FERROLM_CACHE_MAX_GB", repr(n_bytes / 1e9))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FERROLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FERROLM_CACHE_MAX_GB", raising=False)
    return tmp_path / "cache"


def test_least_recently_used_entries_go_first_until_the_cache_fits(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = entry(root, "a", 1000, used=100)
    entry(root, "tokens/b", 1000, used=300)
    entry(root, "c", 1000, used=200)
    # `a` was written last but used first: use decides, not the files' times.
    os.utime(a / "model.safetensors")
    cap(monkeypatch, 5500)
    publish(staged(root, 3000), root / "d")  # 3 x 1002 + 3002 = 6008 bytes: one must go
    assert names(root) == {"c", "tokens/b", "d"}
    assert (root / "d" / "model.safetensors").read_bytes() == b"\1" * 3000
    publish(staged(root, 1000), root / "e")  # 6008 again: `c` (used at 200) goes
    assert names(root) == {"tokens/b", "d", "e"}
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "staging or trash left"


def test_a_load_marks_the_entry_used(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = entry(root, "a", 1000, used=100)
    entry(root, "b", 1000, used=200)

    def no_conversion(path: Path) -> None:
        raise AssertionError(f"{path} is cached: nothing to convert")

    with cached_checkpoint(a, no_conversion) as got:
        assert got == a
    cap(monkeypatch, 2000)
    publish(staged(root, 400), root / "c")  # 2004 + 402 > 2000: `b` is now the oldest
    assert names(root) == {"a", "c"}


def test_cached_checkpoint_converts_a_missing_entry_once(root: Path) -> None:
    calls: list[Path] = []

    def convert(path: Path) -> None:
        calls.append(path)
        publish(staged(root, 10), path)

    for _ in range(2):
        with cached_checkpoint(root / "x", convert) as got:
            assert (got / "model.safetensors").read_bytes() == b"\1" * 10
    assert calls == [root / "x"]


def test_entries_in_use_and_the_new_entry_are_never_evicted(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a = entry(root, "a", 1000, used=100)
    entry(root, "b", 1000, used=200)
    cap(monkeypatch, 0)  # keep only the entry just written, if nothing else is in use
    with cached_checkpoint(a, lambda path: None), caplog.at_level(logging.WARNING):
        publish(staged(root, 5000), root / "big")  # over the cap on its own
    assert names(root) == {"a", "big"}
    assert "over FERROLM_CACHE_MAX_GB" in caplog.text
    publish(staged(root, 10), root / "small")  # `a` is free again: both older entries go
    assert names(root) == {"small"}


def test_an_entry_another_process_is_loading_is_not_evicted(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = entry(root, "a", 1000, used=100)
    entry(root, "b", 1000, used=200)
    holder = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from ferrolm._gguf_cache import cached_checkpoint
        with cached_checkpoint(Path({str(a)!r}), lambda p: None):
            print("holding", flush=True)
            sys.stdin.readline()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline() == b"holding\n"
            cap(monkeypatch, 0)  # everything but the new entry must go, if it can
            publish(staged(root, 400), root / "c")
            assert names(root) == {"a", "c"}, "the loading entry was evicted, or b was kept"
            assert main(["cache", "clear", "a"]) == 3  # not deleted under a running load
            assert a.is_dir()
        finally:
            proc.stdin.write(b"\n")
            proc.stdin.close()
    assert proc.returncode == 0
    publish(staged(root, 2000), root / "d")  # released: `a` is now evictable
    assert names(root) == {"d"}


def test_conversions_being_written_are_not_entries(root: Path) -> None:
    entry(root, "a", 10)
    staged(root, 10)
    (root / "tokens").mkdir()
    staged(root / "tokens", 10)
    assert names(root) == {"a"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, int(DEFAULT_MAX_GB * 1e9)),
        ("", int(DEFAULT_MAX_GB * 1e9)),
        ("2", 2_000_000_000),
        ("0.25", 250_000_000),
        ("0", 0),
        ("none", None),
        ("None", None),
        ("inf", None),
    ],
)
def test_cache_limit_reads_ferrolm_cache_max_gb(
    monkeypatch: pytest.MonkeyPatch, value: Optional[str], expected: Optional[int]
) -> None:
    if value is None:
        monkeypatch.delenv("FERROLM_CACHE_MAX_GB", raising=False)
    else:
        monkeypatch.setenv("FERROLM_CACHE_MAX_GB", value)
    assert cache_limit() == expected


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "1GB"])
def test_a_malformed_cap_is_named_before_any_conversion(
    root: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FERROLM_CACHE_MAX_GB", value)
    with pytest.raises(ValueError, match=f"FERROLM_CACHE_MAX_GB.*{value!r}"):
        cache_limit()
    with pytest.raises(ValueError, match="FERROLM_CACHE_MAX_GB"):
        convert_gguf(root / "absent.gguf", root / "out")
    assert main(["cache", "ls"]) == 3


def test_cache_ls_shows_the_cap_and_last_use(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry(root, "a", 10, used=1_000_000)
    cap(monkeypatch, 10**9)
    assert main(["cache", "ls", "--json", "-"]) == 0
    listed: Any = json.loads(capsys.readouterr().out)
    assert listed["max_bytes"] == 10**9
    assert [(e["name"], e["bytes"], e["last_used"]) for e in listed["entries"]] == [
        ("a", 12, 1_000_000)
    ]
    assert main(["cache", "ls"]) == 0
    assert "(cap 1 GB)" in capsys.readouterr().out
    assert main(["cache", "--help"]) == 0
    assert "FERROLM_CACHE_MAX_GB" in capsys.readouterr().out
