"""One small call per capability, for an install that has NumPy but neither torch nor the HF stack.

Run by ``scripts/check-wheel.sh`` in a fresh virtualenv made from the built wheel (outside the
source tree, no Rust toolchain on PATH), and by ``tests/test_install.py`` in the dev environment
with the optional packages hidden (``--hide torch,transformers,...``). It proves that the base
features work on NumPy arrays and that each torch/HF feature raises an ``ImportError`` naming the
extra to install. Prints one line per check; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import base64
import importlib.abc
import importlib.util
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

OPTIONAL = ("torch", "transformers", "safetensors", "gguf", "tokenizers", "accelerate")


class _Hide(importlib.abc.MetaPathFinder):
    """Makes ``import NAME`` fail as if NAME were not installed."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def _check(label: str, fn: Callable[[], object]) -> None:
    result = fn()
    print(f"ok   {label}: {result}")


def _expect_extra(label: str, fn: Callable[[], object], extra: str) -> None:
    try:
        fn()
    except ImportError as e:
        want = f"pip install 'ferrolm[{extra}]'"
        if want not in str(e):
            raise AssertionError(f"{label}: ImportError does not name {want!r}: {e}") from e
        print(f"ok   {label}: ImportError naming [{extra}]")
        return
    raise AssertionError(f"{label}: expected an ImportError naming the [{extra}] extra")


def _tiktoken_file(folder: Path) -> Path:
    # A GPT-2 style rank file: the 256 bytes, then merges built from them.
    ranks = [bytes([b]) for b in range(256)] + [b"ab", b"abab", b"ba"]
    path = folder / "tiny.tiktoken"
    lines = [f"{base64.b64encode(t).decode()} {i}" for i, t in enumerate(ranks)]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hide", default="", help="comma-separated packages to hide")
    args = parser.parse_args(argv)
    hidden = [n for n in args.hide.split(",") if n]
    if hidden:
        sys.meta_path.insert(0, _Hide(hidden))
    for name in OPTIONAL:
        if name not in hidden and importlib.util.find_spec(name) is not None:
            raise AssertionError(f"`{name}` is installed: this check needs an install without it")

    import numpy as np

    import ferrolm
    from ferrolm import comm, prune, speculative, tokens

    print(f"ferrolm {ferrolm.__version__} from {Path(ferrolm.__file__).parent}")
    rng = np.random.default_rng(0)

    # speculative: Sequoia's DP, the tree utilities, the SpecExec builder.
    def sequoia() -> object:
        table = speculative.sequoia_dp([0.6, 0.2, 0.1], max_nodes=32, max_depth=6)
        tree = table.tree(8, 4)
        mask = speculative.ancestor_mask(tree.parents)
        assert mask.shape == (8, 8)
        assert mask.diagonal().all()
        pos = speculative.position_ids(tree.parents, past_len=10)
        assert pos[0] == 10
        return tree.parents.tolist()

    _check("speculative.sequoia_dp + ancestor_mask + position_ids", sequoia)

    def builder() -> object:
        b = speculative.TreeBuilder(root_token=1, budget=3)
        b.expand(b.frontier(1), np.array([[5, 6]]), np.log([[0.7, 0.2]]))
        tree, _ = b.finalize()
        assert tree.tokens.tolist()[0] == 1
        return tree.tokens.tolist()

    _check("speculative.TreeBuilder", builder)

    # prune: DivPrune on a NumPy array, NumPy out.
    def divprune() -> object:
        x = rng.standard_normal((64, 16)).astype(np.float32)
        sel = prune.divprune(x, k=6)
        assert isinstance(sel.indices, np.ndarray)
        assert sel.indices.shape == (6,)
        assert abs(prune.objective(x, sel.indices) - float(sel.objective)) < 1e-5
        return sel.indices.tolist()

    _check("prune.divprune(ndarray)", divprune)

    # comm: the three quantizers on NumPy arrays.
    def quantizers() -> object:
        x = rng.standard_normal(1000).astype(np.float32)
        errors = {}
        for scheme in comm.SCHEMES:
            q = comm.quantize(x, scheme=scheme)
            y = comm.dequantize(q)
            assert isinstance(y, np.ndarray)
            assert y.shape == x.shape
            errors[scheme] = round(float(np.linalg.norm(y - x) / np.linalg.norm(x)), 4)
        assert max(errors.values()) < 0.05, errors
        return errors

    _check("comm.quantize/dequantize(ndarray)", quantizers)

    # tokens: the scan of a tiktoken rank file.
    def scan() -> object:
        with tempfile.TemporaryDirectory() as tmp:
            r = tokens.scan(_tiktoken_file(Path(tmp)))
        counts = r.counts()
        assert len(r.decoded) >= 259, len(r.decoded)
        return {k: v for k, v in counts.items() if v}

    _check("tokens.scan(tiktoken file)", scan)

    # cuda: discovery answers without torch or a GPU.
    _check("cuda.kernel_names", lambda: ferrolm.cuda.kernel_names())

    if "torch" in sys.modules:
        raise AssertionError("a base feature imported torch")

    # What needs an extra says which one.
    if "torch" in hidden or importlib.util.find_spec("torch") is None:
        _expect_extra(
            "speculative.SpeculativeGenerator", lambda: speculative.SpeculativeGenerator, "torch"
        )
        _expect_extra("speculative.choose_greedy", lambda: speculative.choose_greedy, "torch")
        _expect_extra("prune.apply_to_llava", lambda: prune.apply_to_llava, "torch")
        _expect_extra("comm.all_reduce", lambda: comm.all_reduce, "torch")
        _expect_extra("from ferrolm.comm import DiLoCo", _import_diloco, "torch")
        _expect_extra("tokens.load_model", lambda: tokens.load_model("missing-model"), "torch")
    return 0


def _import_diloco() -> object:
    from ferrolm.comm import DiLoCo

    return DiLoCo


if __name__ == "__main__":
    sys.exit(main())
