"""The min-max int8 quantizer (CPU path) against a plain NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ferrolm import comm


def reference_quantize(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = np.float32(x.min()), np.float32(x.max())
    scale = np.float32((hi - lo) / np.float32(255.0))
    # A subnormal range has an infinite inverse: codes are then 0 (at min) or 255, as in Rust.
    with np.errstate(all="ignore"):
        inv = np.float32(1.0) / scale if scale > 0 else np.float32(0.0)
        t = np.nan_to_num((x - lo) * inv + np.float32(0.5), nan=0.0)
    return np.minimum(np.floor(t), 255).astype(np.uint8), float(lo), float(scale)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.integers(1, 5000),
        elements=st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False),
    )
)
def test_codes_and_params_equal_numpy_reference(x):
    q = comm.quantize(torch.from_numpy(x))
    codes, lo, scale = reference_quantize(x)
    np.testing.assert_array_equal(q.payload.numpy(), codes)
    assert q.params.tolist() == [lo, scale]
    back = comm.dequantize(q).numpy()
    np.testing.assert_allclose(back, x, atol=scale * 0.5 * 1.0001 + 1e-6, rtol=0)


def test_shape_is_restored_and_input_untouched():
    x = torch.randn(3, 4, 5)
    before = x.clone()
    q = comm.quantize(x)
    assert comm.dequantize(q).shape == x.shape
    assert torch.equal(x, before)


def test_half_precision_input_is_accepted():
    x = torch.randn(100).to(torch.bfloat16)
    q = comm.quantize(x)
    assert q.dtype == torch.bfloat16
    assert comm.dequantize(q).dtype == torch.float32


def test_dequantize_accumulate_adds_in_place():
    x = torch.randn(1000)
    q = comm.quantize(x)
    acc = torch.full((1000,), 2.0)
    out = comm.dequantize_accumulate(q, acc)
    assert out is acc
    torch.testing.assert_close(acc, comm.dequantize(q) + 2.0, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("make", "exception", "match"),
    [
        (lambda: torch.tensor([1, 2, 3]), TypeError, "floating-point"),
        (lambda: torch.empty(0), ValueError, "non-empty"),
        (lambda: torch.tensor([1.0, float("inf")]), ValueError, "finite"),
        (lambda: [1.0, 2.0], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_rejected_clearly(make, exception, match):
    with pytest.raises(exception, match=match):
        comm.quantize(make())


def test_unknown_scheme_is_value_error():
    with pytest.raises(ValueError, match="`scheme` must be one of"):
        comm.quantize(torch.ones(3), scheme="int4")


def test_accumulator_checks():
    q = comm.quantize(torch.randn(10))
    with pytest.raises(TypeError, match="`acc` must be a float32 tensor"):
        comm.dequantize_accumulate(q, torch.zeros(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="`acc` must have 10 elements"):
        comm.dequantize_accumulate(q, torch.zeros(11))
    with pytest.raises(ValueError, match="contiguous"):
        comm.dequantize_accumulate(q, torch.zeros(20)[::2])
