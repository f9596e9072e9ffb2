"""Argument checks shared by ``ferrolm.speculative``: accept lists, NumPy arrays and CPU/GPU torch
tensors, return fresh contiguous NumPy arrays of the dtype the Rust core wants (inputs are
never modified)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ferrolm._optional import is_tensor


def _to_numpy(x: Any, arg: str) -> np.ndarray:
    if is_tensor(x):
        return np.asarray(x.detach().cpu().numpy())
    if isinstance(x, (np.ndarray, list, tuple, range)):
        return np.asarray(x)
    if isinstance(x, (int, np.integer)):
        raise TypeError(f"`{arg}` must be an array, got a scalar {type(x).__name__}")
    raise TypeError(f"`{arg}` must be a NumPy array, torch tensor or list, got {type(x).__name__}")


def _all_ints(a: npt.NDArray[Any]) -> bool:
    return a.size > 0 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in a.flat
    )


def _all_reals(a: npt.NDArray[Any]) -> bool:
    return a.size > 0 and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in a.flat
    )


def int_array(x: Any, arg: str, ndim: int = 1, dtype: type = np.int32) -> npt.NDArray[Any]:
    """``x`` as a C-contiguous integer array of ``dtype`` with ``ndim`` dimensions."""
    if type(x) is np.ndarray and x.dtype == dtype and x.ndim == ndim and x.flags.c_contiguous:
        return x
    a = _to_numpy(x, arg)
    if a.size == 0 and a.dtype == np.float64 and isinstance(x, (list, tuple)):
        a = a.astype(np.int64)
    if a.dtype == object and _all_ints(a):
        # Python ints past int64 make NumPy fall back to objects: a value out of range, not a
        # wrong type.
        big = next(int(v) for v in a.flat if not -(2**63) <= int(v) < 2**63)
        name = np.dtype(dtype).name
        raise ValueError(f"`{arg}` must fit in {name}, got {big}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"`{arg}` must hold integers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"`{arg}` must be {ndim}-D, got shape {a.shape}")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        bad = a.min() if a.min() < info.min else a.max()
        raise ValueError(f"`{arg}` must fit in {np.dtype(dtype).name}, got {bad}")
    return np.ascontiguousarray(a, dtype=dtype)


def float_array(x: Any, arg: str, ndim: int = 1, dtype: type = np.float64) -> npt.NDArray[Any]:
    """``x`` as a C-contiguous float array of ``dtype`` with ``ndim`` dimensions."""
    if type(x) is np.ndarray and x.dtype == dtype and x.ndim == ndim and x.flags.c_contiguous:
        return x
    a = _to_numpy(x, arg)
    if a.dtype == object and _all_reals(a):
        # Python ints past int64 (mixed with floats or not) make NumPy fall back to objects.
        try:
            a = a.astype(np.float64)
        except OverflowError:
            big = next(v for v in a.flat if isinstance(v, int) and abs(v) >= 2**1024)
            raise ValueError(
                f"`{arg}` must hold numbers within float64's range, got {big}"
            ) from None
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"`{arg}` must hold real numbers, got dtype {a.dtype}")
    if a.dtype == np.bool_:
        raise TypeError(f"`{arg}` must hold real numbers, got dtype bool")
    if a.ndim != ndim:
        raise ValueError(f"`{arg}` must be {ndim}-D, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


#: The largest integer any argument takes (the native layer's int64).
INT_MAX = 2**63 - 1


def check_int(x: Any, arg: str, minimum: int | None = None, maximum: int = INT_MAX) -> int:
    """``x`` as a Python int in ``[minimum, maximum]`` (a ``ValueError`` naming ``arg``, the
    range and the value otherwise, never a bare ``OverflowError``)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{arg}` must be an int, got {type(x).__name__}")
    v = int(x)
    if minimum is not None and v < minimum:
        raise ValueError(f"`{arg}` must be >= {minimum}, got {v}")
    if v > maximum:
        low = "" if minimum is None else f"in [{minimum}, {maximum}], i.e. "
        raise ValueError(f"`{arg}` must be an int {low}at most {maximum}, got {v}")
    return v


def check_float(x: Any, arg: str) -> float:
    """``x`` as a Python float; an int beyond float's range is a ``ValueError`` naming ``arg``
    (never a bare ``OverflowError``), a non-number a ``TypeError``. The range of the value is
    the caller's to check."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{arg}` must be a number, got {type(x).__name__}")
    try:
        return float(x)
    except OverflowError:
        raise ValueError(f"`{arg}` must be within float64's range, got {x}") from None


def check_optional_int(x: Any, arg: str, minimum: int) -> int | None:
    """``x`` as :func:`check_int` does, or ``None``."""
    return None if x is None else check_int(x, arg, minimum)


def check_acceptance(x: Any, arg: str) -> npt.NDArray[np.float64]:
    """``x`` as an acceptance vector: a non-empty 1-D float64 array of finite, non-negative
    probabilities summing to at most 1."""
    arr = float_array(x, arg)
    if arr.size == 0:
        raise ValueError(f"`{arg}` must be a non-empty acceptance vector, got an empty array")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"`{arg}` must hold finite probabilities, got {arg}[{bad}] = {arr[bad]}")
    if (arr < 0).any():
        bad = int(np.flatnonzero(arr < 0)[0])
        raise ValueError(f"`{arg}` must be non-negative, got {arg}[{bad}] = {arr[bad]}")
    if arr.sum() > 1 + 1e-6:
        raise ValueError(f"`{arg}` must sum to at most 1, got sum {arr.sum()}")
    return arr
