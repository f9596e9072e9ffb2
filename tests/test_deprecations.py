"""ferrolm makes no call that the installed transformers deprecates, and the guard that every
test runs under (``ferrolm.testing.deprecations``) would notice one."""

from __future__ import annotations

import os
import traceback
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from test_speculative_generate import tiny_model

import ferrolm
from ferrolm.speculative.kv_cache import RaggedKVCache, attend_prefix
from ferrolm.speculative.stats import GenerationStats
from ferrolm.testing.deprecations import DeprecationGuard, caused_by_ferrolm

PACKAGE = os.path.dirname(os.path.abspath(ferrolm.__file__))


def run_step(kv: RaggedKVCache) -> None:
    kv.forward(np.array([[1, 2]]), np.array([[0, 1]]), attend_prefix(kv.valid, 2) | True, 1)


def test_the_cache_argument_is_the_current_one(no_deprecated_calls: DeprecationGuard) -> None:
    model = tiny_model("llama")
    kv = RaggedKVCache(model, 1, GenerationStats())
    with DeprecationGuard() as guard:
        run_step(kv)
    assert guard.found == []
    # The old keyword still works in transformers 5.x but is deprecated: the guard sees it.
    old = RaggedKVCache(model, 1, GenerationStats())
    old.cache_kw = "past_key_values"
    if old.cache_kw == RaggedKVCache(model, 1, GenerationStats()).cache_kw:
        pytest.skip("this transformers takes the cache as past_key_values")
    with DeprecationGuard() as guard, pytest.warns(FutureWarning, match="past_key_values"):
        run_step(old)
    assert any("past_key_values" in f and "kv_cache.py" in f for f in guard.found), guard.found
    no_deprecated_calls.found.clear()  # the test's own deliberate deprecated call
    # Cropping uses negative counts, the only form transformers 5.25 accepts.
    kv.compact(0, [np.array([0], dtype=np.int64)])
    assert kv.cache.get_seq_length() == 1


def test_a_deprecation_warning_from_a_ferrolm_frame_is_caught(
    no_deprecated_calls: DeprecationGuard,
) -> None:
    # A library function that deprecates itself, called from a ferrolm frame.
    library = os.path.join(os.path.dirname(torch.__file__), "_fake_library.py")
    scope: dict[str, Any] = {"warnings": warnings}
    exec(
        compile(
            "def old():\n    warnings.warn('`x` is deprecated', FutureWarning)", library, "exec"
        ),
        scope,
    )
    fake = os.path.join(PACKAGE, "speculative", "_fake_caller.py")
    code = compile("old()", fake, "exec")
    with DeprecationGuard() as guard, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ignored by the filters, still caught by the guard
        exec(code, scope)
    assert guard.found == [f"`x` is deprecated (at {fake}:1)"]
    no_deprecated_calls.found.clear()
    # ferrolm deprecating its own API to its users is not a deprecated call it makes.
    own = compile("warnings.warn('`z=` is deprecated: use `w=`', DeprecationWarning)", fake, "exec")
    with DeprecationGuard() as guard, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(own, {"warnings": warnings})
    assert guard.found == []
    # The same warning from the test's own frame is not ferrolm's doing.
    with DeprecationGuard() as guard, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.warn("`y` is deprecated", FutureWarning, stacklevel=1)
    assert guard.found == []


def frame(path: str, line: int = 1) -> Any:
    return traceback.FrameSummary(path, line, "f")


def test_the_cause_is_the_nearest_frame_outside_the_libraries() -> None:
    hf = os.path.join("site-packages", "transformers", "modeling_utils.py")
    torch_frame = os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "module.py")
    ours = os.path.join(PACKAGE, "speculative", "kv_cache.py")
    testing = os.path.join(PACKAGE, "testing", "models.py")
    test = os.path.abspath(__file__)
    assert caused_by_ferrolm([frame(test), frame(ours, 7), frame(torch_frame), frame(hf)]) == (
        f"{ours}:7"
    )
    assert caused_by_ferrolm([frame(ours), frame(test), frame(hf)]) is None
    assert caused_by_ferrolm([frame(ours), frame(testing), frame(hf)]) is None
    assert caused_by_ferrolm([frame(hf)]) is None
