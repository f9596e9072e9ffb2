"""The compiled module's layout, and the panic guard on every binding class and submodule.

``_native._debug_panic_next(n)`` makes the ``n``-th guarded call from now panic inside the guard,
before its core work starts; each test arms it, calls a real binding, and checks that the panic
arrives as a plain ``RuntimeError`` (never pyo3's ``PanicException``, a ``BaseException``) and
that the object it hit still works.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferrolm import _native

ARMED = "panic armed by _debug_panic_next"
SUBMODULES = ["comm", "cuda", "linalg", "prune", "speculative", "tokens"]


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    """Leaves the hook disarmed whatever a test did, so no other test sees a stray panic."""
    _native._debug_panic_next(0)
    yield
    _native._debug_panic_next(0)


def assert_guarded(call: Callable[[], Any]) -> None:
    """Arms the hook for the next guarded call, runs ``call`` and checks the exception."""
    _native._debug_panic_next(1)
    with pytest.raises(RuntimeError, match=rf"internal error in ferrolm.*{ARMED}") as info:
        call()
    assert type(info.value) is RuntimeError


def _word_level_json() -> str:
    return json.dumps(
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": None,
            "post_processor": None,
            "decoder": None,
            "model": {
                "type": "WordLevel",
                "vocab": {"a": 0, "bc": 1, "[UNK]": 2},
                "unk_token": "[UNK]",
            },
        }
    )


# Layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SUBMODULES)
def test_each_submodule_imports_by_its_dotted_name(name: str) -> None:
    module = importlib.import_module(f"ferrolm._native.{name}")
    assert module is getattr(_native, name)
    assert module.__name__ == f"ferrolm._native.{name}"


def test_the_stub_directory_does_not_shadow_the_extension() -> None:
    stubs = Path(_native.__file__).with_suffix("").with_suffix("")
    assert stubs.name == "_native"
    assert (stubs / "__init__.pyi").is_file()
    assert not (stubs / "__init__.py").exists()
    assert Path(_native.__file__).suffix == ".so"
    assert isinstance(_native.__version__, str)
    assert _native.__version__


@pytest.mark.parametrize(
    ("cls", "module"),
    [
        (_native.speculative.TreeBuilder, "ferrolm._native.speculative"),
        (_native.speculative.BatchTreeBuilder, "ferrolm._native.speculative"),
        (_native.speculative.SequoiaTable, "ferrolm._native.speculative"),
        (_native.tokens.Scanner, "ferrolm._native.tokens"),
    ],
)
def test_classes_live_in_their_submodule(cls: type, module: str) -> None:
    assert cls.__module__ == module


# The hook itself -----------------------------------------------------------------------------


def test_the_hook_counts_guarded_calls_and_fires_once() -> None:
    parents = np.array([-1, 0, 0, 1], dtype=np.int32)
    _native._debug_panic_next(2)
    first = _native.speculative.depths(parents)
    with pytest.raises(RuntimeError, match=ARMED):
        _native.speculative.depths(parents)
    np.testing.assert_array_equal(_native.speculative.depths(parents), first)


def test_zero_disarms_the_hook() -> None:
    _native._debug_panic_next(1)
    _native._debug_panic_next(0)
    assert _native.comm.all_finite(np.ones(3, dtype=np.float32))


# One function per submodule ------------------------------------------------------------------


def test_speculative_function_panic_is_runtime_error() -> None:
    parents = np.array([-1, 0, 0, 1], dtype=np.int32)
    assert_guarded(lambda: _native.speculative.ancestor_mask(parents))
    mask = _native.speculative.ancestor_mask(parents)
    assert mask.shape == (4, 4)
    assert mask.dtype == np.bool_
    assert mask[3].tolist() == [True, True, False, True]


def test_prune_function_panic_is_runtime_error() -> None:
    x = np.random.default_rng(0).standard_normal((1, 6, 4)).astype(np.float32)
    assert_guarded(lambda: _native.prune.divprune(x, 3))
    indices, objective = _native.prune.divprune(x, 3)
    assert indices.shape == (1, 3)
    assert objective.shape == (1,)


def test_comm_function_panic_is_runtime_error() -> None:
    x = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    out = np.empty(3, dtype=np.uint8)
    assert_guarded(lambda: _native.comm.quantize_minmax(x, out))
    lo, scale = _native.comm.quantize_minmax(x, out)
    assert (lo, scale) == pytest.approx((0.0, 2.0 / 255))
    back = np.full(3, 10.0, dtype=np.float32)
    _native.comm.dequantize_minmax(out, lo, scale, back, accumulate=True)
    np.testing.assert_allclose(back, x + 10.0, atol=scale)
    _native.comm.dequantize_minmax(out, lo, scale, back)
    np.testing.assert_allclose(back, x, atol=scale)


def test_tokens_function_panic_is_runtime_error() -> None:
    m = np.array([[3.0, 4.0], [0.0, 1.0]], dtype=np.float32)
    assert_guarded(lambda: _native.tokens.row_norms(m))
    np.testing.assert_allclose(_native.tokens.row_norms(m), [5.0, 1.0])


def test_cuda_function_panic_is_runtime_error() -> None:
    assert_guarded(_native.cuda.device_count)


# Every class ---------------------------------------------------------------------------------


def test_tree_builder_panic_is_runtime_error_and_the_builder_still_works() -> None:
    assert_guarded(lambda: _native.speculative.TreeBuilder(1, 4))
    b = _native.speculative.TreeBuilder(1, 4)
    children = (np.array([[5, 6]], dtype=np.int32), np.log([[0.7, 0.2]]).astype(np.float32))
    assert_guarded(lambda: b.expand(np.array([0], dtype=np.int32), *children))
    assert b.size == 1
    for method in (lambda: b.frontier(1), b.done, b.finalize):
        assert_guarded(method)
    assert b.expand(b.frontier(1), *children).tolist() == [[1, 2]]
    parents, tokens, _, _, _, old_to_new = b.finalize()
    assert parents.tolist() == [-1, 0, 0]
    assert tokens.tolist() == [1, 5, 6]
    assert old_to_new.tolist() == [0, 1, 2]


def test_batch_tree_builder_panic_is_runtime_error_and_the_builder_still_works() -> None:
    roots = np.array([1, 2], dtype=np.int32)
    assert_guarded(lambda: _native.speculative.BatchTreeBuilder(roots, 4))
    b = _native.speculative.BatchTreeBuilder(roots, 4)
    for method in (lambda: b.frontier(1), b.done, b.finalize):
        assert_guarded(method)
    trees, nodes = b.frontier(1)
    children = (np.array([[3], [4]], dtype=np.int32), np.log([[0.5], [0.9]]).astype(np.float32))
    assert_guarded(lambda: b.expand(trees, nodes, *children))
    assert b.sizes == [1, 1]
    b.expand(trees, nodes, *children)
    finished = b.finalize()
    assert [f[0].tolist() for f in finished] == [[-1, 0], [-1, 0]]
    assert [f[1].tolist() for f in finished] == [[1, 3], [2, 4]]


def test_sequoia_table_panic_is_runtime_error_and_the_table_still_works() -> None:
    p = np.array([0.6, 0.2], dtype=np.float64)
    assert_guarded(lambda: _native.speculative.sequoia_dp(p, 8, 3))
    table = _native.speculative.sequoia_dp(p, 8, 3)
    for method in (table.values, lambda: table.value(4, 2), lambda: table.tree(4, 2)):
        assert_guarded(method)
    sizes, times = np.array([1, 4], dtype=np.int64), np.array([1.0, 1.0])
    assert_guarded(lambda: _native.speculative.plan(table, sizes, times, 0.01))
    parents, _, _ = table.tree(4, 2)
    assert len(parents) == 4
    assert table.value(4, 2) == pytest.approx(table.values()[4, 2])


def test_scanner_panic_is_runtime_error_and_the_scanner_still_works() -> None:
    text = _word_level_json()
    assert_guarded(lambda: _native.tokens.Scanner.from_json(text))
    scanner = _native.tokens.Scanner.from_json(text)
    for method in (scanner.scan, scanner.to_json):
        assert_guarded(method)
    assert scanner.vocab_size == 3
    report = scanner.scan(containment=False)
    assert len(report["category"]) == 3
    assert json.loads(scanner.to_json())["model"]["vocab"]["bc"] == 1


# One check, one wording ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"budget": 0}, "budget"),
        ({"budget": -3}, "budget"),
        ({"budget": 4, "max_width": 0}, "max_width"),
        ({"budget": 4, "max_depth": -1}, "max_depth"),
        ({"budget": 4, "log_decay": 0.5}, "log_decay"),
        ({"budget": 4, "log_decay": math.nan}, "log_decay"),
        ({"budget": 4, "min_logprob": 0.25}, "min_logprob"),
    ],
)
def test_tree_builder_limits_are_checked_once_with_the_cores_wording(
    kwargs: dict[str, Any], arg: str
) -> None:
    from ferrolm import speculative

    with pytest.raises(ValueError, match=f"`{arg}` must be") as public:
        speculative.TreeBuilder(1, **kwargs)
    with pytest.raises(ValueError, match=arg) as native:
        _native.speculative.TreeBuilder(1, **kwargs)
    with pytest.raises(ValueError, match=arg) as batch:
        speculative.BatchTreeBuilder([1, 2], **kwargs)
    assert str(public.value) == str(native.value) == str(batch.value)
