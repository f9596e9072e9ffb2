"""The layout rules of docs/architecture.md: who may import whom, and how long a file may be.

Each capability package (``ferrolm.speculative``, ``ferrolm.prune``, ``ferrolm.comm``,
``ferrolm.tokens``) may import the shared private helpers at the top of ``ferrolm`` (``_native``,
``cuda``, ``_gguf_cache``, ...) but nothing from another capability, from the command line
(``ferrolm.cli``, ``ferrolm._cli_*``), from the demo (``ferrolm._demo``) or from
``ferrolm.testing``; ``ferrolm.testing`` may import anything but the command line. No Python
file in ``python/ferrolm`` is over 500 lines, no Rust source file over 600 (tests aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "ferrolm"
RUST_DIRS = ("rust", "cuda")
CAPABILITIES = ("speculative", "prune", "comm", "tokens")
MAX_LINES = 500
MAX_RUST_LINES = 600


def _imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """Every module an ``import`` in ``tree`` names, as absolute dotted names with line numbers.

    ``module`` is the dotted name of the parsed file, used to resolve relative imports;
    ``from a import b`` yields ``a.b`` as well as ``a``, since ``b`` may be a submodule.
    """
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def _forbidden(name: str, owner: str) -> bool:
    """Whether code in ``ferrolm.<owner>`` may not import the module ``name``."""
    parts = name.split(".")
    if parts[0] != "ferrolm" or len(parts) < 2:
        return False
    top = parts[1]
    cli = top == "cli" or top.startswith("_cli")
    if owner == "testing":
        return cli
    if top in CAPABILITIES:
        return top != owner
    return cli or top in ("testing", "_demo")


def boundary_violations(package: Path) -> list[str]:
    """``path:line: name`` for each import that breaks the package boundaries."""
    bad = []
    for owner in (*CAPABILITIES, "testing"):
        for path in sorted((package / owner).rglob("*.py")):
            rel = path.relative_to(package.parent).with_suffix("")
            module = ".".join(rel.parts)
            if path.name == "__init__.py":
                module = module.rsplit(".", 1)[0] + ".__init__"
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, name in _imported_modules(tree, module):
                if _forbidden(name, owner):
                    bad.append(f"{path.relative_to(package.parent)}:{line}: {name}")
    return bad


def long_files(package: Path, limit: int = MAX_LINES) -> list[str]:
    """``path: N lines`` for each Python file under ``package`` longer than ``limit`` lines."""
    out = []
    for path in sorted(package.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(package.parent)}: {n} lines")
    return out


def _rust_lines(path: Path) -> int:
    """Lines of a Rust source file before its first ``#[cfg(test)]`` item (tests aside)."""
    n = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#[cfg(test)]"):
            break
        n += 1
    return n


def long_rust_files(root: Path, limit: int = MAX_RUST_LINES) -> list[str]:
    """``path: N lines`` for each non-test Rust source file under ``root`` over ``limit``."""
    out = []
    for path in sorted(root.rglob("*.rs")):
        rel = path.relative_to(root)
        if path.name == "tests.rs" or "tests" in rel.parts[:-1] or "target" in rel.parts:
            continue
        n = _rust_lines(path)
        if n > limit:
            out.append(f"{rel}: {n} lines")
    return out


def test_capability_packages_import_nothing_from_each_other_the_cli_or_testing():
    assert boundary_violations(PACKAGE) == []


def test_no_python_file_in_the_package_is_over_500_lines():
    assert long_files(PACKAGE) == []


@pytest.mark.parametrize("top", RUST_DIRS)
def test_no_rust_source_file_is_over_600_lines_tests_aside(top):
    assert long_rust_files(ROOT / top) == []


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from ferrolm import prune\n", "ferrolm.prune"),
        ("import ferrolm.testing.launch\n", "ferrolm.testing.launch"),
        ("def f():\n    from ferrolm.cli import main\n", "ferrolm.cli"),
        ("from ferrolm._cli_speculative import x\n", "ferrolm._cli_speculative"),
        ("from ... import tokens\n", "ferrolm.tokens"),
        ("from ...testing import models\n", "ferrolm.testing"),
        ("from ferrolm._demo.comm import demo_section\n", "ferrolm._demo.comm"),
    ],
)
def test_the_boundary_check_catches_each_kind_of_import(tmp_path, source, found):
    _write(tmp_path, "ferrolm/comm/sub/mod.py", source)
    bad = boundary_violations(tmp_path / "ferrolm")
    assert any(b.endswith(f": {found}") for b in bad), bad
    assert all(b.startswith("ferrolm/comm/sub/mod.py:") for b in bad), bad


def test_the_boundary_check_keeps_the_cli_out_of_testing_and_nothing_else(tmp_path):
    _write(tmp_path, "ferrolm/testing/ok.py", "from ferrolm import comm, prune, _demo\n")
    _write(tmp_path, "ferrolm/testing/bad.py", "from ferrolm.cli import main\n")
    bad = boundary_violations(tmp_path / "ferrolm")
    assert "ferrolm/testing/bad.py:1: ferrolm.cli" in bad
    assert all(b.startswith("ferrolm/testing/bad.py:") for b in bad), bad


def test_the_boundary_check_allows_own_package_and_shared_private_helpers(tmp_path):
    source = (
        "from ferrolm import _native, cuda\n"
        "from ferrolm._gguf_cache import cache_root\n"
        "from ferrolm.tokens.scan import scan\n"
        "from . import weights\n"
        "import numpy\n"
    )
    _write(tmp_path, "ferrolm/tokens/mod.py", source)
    _write(tmp_path, "ferrolm/tokens/__init__.py", "from .mod import scan\n")
    assert boundary_violations(tmp_path / "ferrolm") == []


def test_the_size_check_counts_lines(tmp_path):
    _write(tmp_path, "ferrolm/a.py", "x = 1\n" * 501)
    _write(tmp_path, "ferrolm/b/c.py", "x = 1\n" * 500)
    assert long_files(tmp_path / "ferrolm") == ["ferrolm/a.py: 501 lines"]


def test_the_rust_size_check_leaves_tests_aside(tmp_path):
    _write(tmp_path, "src/big.rs", "fn f() {}\n" * 601)
    _write(tmp_path, "src/ok.rs", "fn f() {}\n" * 600 + "#[cfg(test)]\nmod tests {\n" + "\n" * 900)
    _write(tmp_path, "src/tests.rs", "fn f() {}\n" * 900)
    _write(tmp_path, "tests/it.rs", "fn f() {}\n" * 900)
    assert long_rust_files(tmp_path) == ["src/big.rs: 601 lines"]
