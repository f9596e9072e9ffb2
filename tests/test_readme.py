"""The README's and the usage guide's code blocks match the API and the command line they show.

The snippets need multi-GB Hub models and GPUs, so they are not run; instead every Python block
must parse, every ``ferrolm`` name it uses must exist, and every call of a ferrolm function,
class or (for variables bound to a ferrolm class) method must bind to its signature: an unknown
keyword or a wrong argument count fails. Every ``ferrolm ...`` line of a bash block must parse
with the real argument parser. So a renamed argument or option cannot leave the tour behind.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from ferrolm.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "usage.md")
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[tuple[str, int, str]]:
    """``(file name, line, code)`` of each fenced block of ``language`` in the docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in _FENCE.finditer(text):
            if m[1] == language:
                out.append((doc.name, text.count("\n", 0, m.start()) + 2, m[2]))
    return out


def _bind(target: Any, call: ast.Call, method: bool) -> None:
    """Binds the shape of ``call`` (positional count, keyword names) to ``target``'s signature."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    splat = any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    )
    positional = [None] * (len([a for a in call.args if not isinstance(a, ast.Starred)]) + method)
    keywords = {k.arg: None for k in call.keywords if k.arg is not None}
    (signature.bind_partial if splat else signature.bind)(*positional, **keywords)


class _Checker(ast.NodeVisitor):
    """Resolves ferrolm names in one block and binds each call of them."""

    def __init__(self) -> None:
        self.modules: dict[str, Any] = {}  # local name -> ferrolm module or object
        self.instances: dict[str, type] = {}  # local name -> the ferrolm class it holds
        self.checked = 0

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "ferrolm":
                self.modules[alias.asname or alias.name.split(".")[0]] = importlib.import_module(
                    alias.name.split(".")[0]
                )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.module.split(".")[0] == "ferrolm":
            module = importlib.import_module(node.module)
            for alias in node.names:
                name = alias.asname or alias.name
                try:
                    self.modules[name] = importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    self.modules[name] = getattr(module, alias.name)

    def resolve(self, node: ast.expr) -> tuple[Any, bool] | None:
        """The ferrolm object an attribute chain names, and whether it is a bound method."""
        chain: list[str] = []
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        if node.id in self.modules:
            obj = self.modules[node.id]
            method = False
        elif node.id in self.instances and chain:
            obj = self.instances[node.id]
            method = True
        else:
            return None
        for i, attr in enumerate(chain):
            assert hasattr(obj, attr), f"{node.id}.{'.'.join(chain[: i + 1])} does not exist"
            obj = getattr(obj, attr)
        method = method and len(chain) == 1 and inspect.isfunction(obj)
        return obj, method

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        value = node.value
        if isinstance(value, ast.Call) and len(node.targets) == 1:
            found = self.resolve(value.func)
            target = node.targets[0]
            if found is not None and inspect.isclass(found[0]) and isinstance(target, ast.Name):
                self.instances[target.id] = found[0]

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.resolve(node)  # asserts that the name exists
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        found = self.resolve(node.func)
        if found is not None and callable(found[0]):
            obj, method = found
            try:
                _bind(obj, node, method)
            except TypeError as e:
                raise AssertionError(f"{ast.unparse(node)[:120]}: {e}") from None
            self.checked += 1
        self.generic_visit(node)


PYTHON = blocks("python")
BASH = blocks("bash")


def test_the_docs_have_the_blocks_this_checks() -> None:
    assert len(PYTHON) >= 10
    assert len(BASH) >= 5


@pytest.mark.parametrize(("doc", "line", "code"), PYTHON, ids=[f"{d}:{n}" for d, n, _ in PYTHON])
def test_python_blocks_match_the_api(doc: str, line: int, code: str) -> None:
    tree = ast.parse(code, filename=f"{doc}:{line}")
    checker = _Checker()
    checker.visit(tree)
    if checker.modules:
        assert checker.checked, "a block importing ferrolm calls nothing of it"


def _ferrolm_commands(code: str) -> list[list[str]]:
    commands = []
    for raw in code.replace("\\\n", " ").splitlines():
        words = shlex.split(raw, comments=True)
        for i, word in enumerate(words):
            if word in ("|", "&&", ">", ";"):
                words = words[:i]
                break
        if words and Path(words[0]).name == "ferrolm":
            commands.append(words[1:])
    return commands


COMMANDS = [(d, n, argv) for d, n, code in BASH for argv in _ferrolm_commands(code)]


def test_the_tour_shows_hub_ids_devices_generate_and_torchrun() -> None:
    """The API tour of issue 15's last item: hub ids and revisions, device=/dtype=, generate()
    fed by a tokenizer's padded batch, and a torchrun command."""
    readme = (ROOT / "README.md").read_text()
    tour = readme[readme.index("## Tour of the API") : readme.index("## The command line")]
    code = "\n".join(c for d, _, c in PYTHON + BASH if d == "README.md" and c in tour)
    assert 'gen.generate(**tok(prompts, return_tensors="pt", padding=True)' in code
    assert re.search(
        r'tokens\.load_model\("[\w.-]+/[\w.-]+".*device="cuda", dtype="bfloat16"', code
    )
    assert re.search(r'tokens\.scan\("[\w.-]+/[\w.-]+", revision=', code)
    assert re.search(r"^torchrun --standalone --nproc-per-node 2 examples/\w+\.py", code, re.M)
    assert re.search(r"^ferrolm undertrained [\w.-]+/[\w.-]+ --revision \S+ .*--device", code, re.M)


@pytest.mark.parametrize(
    ("doc", "line", "argv"), COMMANDS, ids=[" ".join(a) for _, _, a in COMMANDS]
)
def test_ferrolm_commands_parse(doc: str, line: int, argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            raise AssertionError(f"{doc}:{line}: {err.getvalue().strip()}") from None
    assert getattr(args, "func", None) is not None, f"{doc}:{line}: no command in {argv}"
