"""Core errors surface as the right Python exception with their message; panics never escape."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ferrolm import _native


@pytest.mark.parametrize(
    ("kind", "exception", "text"),
    [
        ("value", ValueError, "`arg` must be a value, got another"),
        ("type", TypeError, "`arg` must be float32, got int64"),
        ("malformed", ValueError, "file.json is malformed: truncated"),
        ("io", OSError, "missing.bin: No such file or directory"),
        ("device", RuntimeError, "no GPU"),
        ("timeout", TimeoutError, "timed out after 1.5 s while waiting for rank 1"),
        ("internal", RuntimeError, "internal error in ferrolm"),
    ],
)
def test_each_core_error_kind_maps_to_its_python_exception(kind, exception, text):
    with pytest.raises(exception) as info:
        _native._debug_raise(kind)
    assert text in str(info.value)


def test_a_rust_panic_becomes_runtime_error_not_panic_exception():
    with pytest.raises(RuntimeError, match=r"internal error in ferrolm.*boom 42") as info:
        _native._debug_panic("boom 42")
    # pyo3's PanicException derives from BaseException, not RuntimeError.
    assert type(info.value) is RuntimeError


def test_core_value_error_from_real_call_names_the_argument():
    x = np.array([1.0, np.nan], dtype=np.float32)
    with pytest.raises(ValueError, match="`tensor` must be finite"):
        _native.comm.quantize_minmax(x, np.empty(2, dtype=np.uint8))


def test_length_mismatch_is_value_error_naming_out():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="`out` must be of length 3, got length 2"):
        _native.comm.quantize_minmax(x, np.empty(2, dtype=np.uint8))


def test_strided_array_is_rejected_with_a_fix():
    x = np.ones(6, dtype=np.float32)[::2]
    with pytest.raises(ValueError, match="`x` must be contiguous"):
        _native.comm.quantize_minmax(x, np.empty(3, dtype=np.uint8))


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda a: _native.tokens.row_norms(a[:, ::2]), "matrix"),
        (lambda a: _native.prune.divprune(a[None, :, ::2], 1), "features"),
        (lambda a: _native.comm.all_finite(a[0, ::2]), "x"),
    ],
)
def test_every_rank_reports_a_strided_array_with_the_same_wording(call, arg):
    a = np.ones((3, 4), dtype=np.float32)
    wording = f"`{arg}` must be contiguous, got a strided array; call .contiguous() or np.asc"
    with pytest.raises(ValueError, match=re.escape(wording)) as info:
        call(a)
    assert "C-contiguous" not in str(info.value)
