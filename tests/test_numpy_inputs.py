"""DivPrune and the quantizers on NumPy arrays (the torch-free base install) give exactly what the
tensor paths give on the same values; the tensor paths are checked against references in
tests/test_prune.py and tests/test_comm_quantize.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferrolm import comm, prune


@pytest.mark.parametrize("shape", [(300, 48), (3, 200, 24)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("method", ["gram", "matrix_free"])
def test_divprune_numpy_equals_torch(shape, dtype, method):
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    before = x.copy()
    for kwargs in ({"k": 17, "order": "greedy"}, {"keep": 0.25}, {"k": 5, "seed": 3}):
        got = prune.divprune(x, method=method, **kwargs)
        want = prune.divprune(torch.from_numpy(x), method=method, **kwargs)
        assert isinstance(got.indices, np.ndarray)
        assert got.indices.dtype == np.int64
        assert isinstance(got.objective, np.ndarray)
        assert got.objective.dtype == np.float32
        np.testing.assert_array_equal(got.indices, want.indices.numpy())
        np.testing.assert_array_equal(got.objective, want.objective.numpy())
    np.testing.assert_array_equal(x, before)


def test_divprune_numpy_any_strides_and_objective():
    x = np.random.default_rng(1).standard_normal((64, 200)).astype(np.float32)
    view = x.T[::2]  # [100, 64], not contiguous
    sel = prune.divprune(view, k=9)
    want = prune.divprune(torch.from_numpy(np.ascontiguousarray(view)), k=9)
    np.testing.assert_array_equal(sel.indices, want.indices.numpy())
    obj = prune.objective(view, sel.indices)
    assert obj == pytest.approx(float(sel.objective), abs=1e-6)
    assert obj == prune.objective(torch.from_numpy(np.ascontiguousarray(view)), want.indices)
    with pytest.raises(TypeError, match="`indices` must be a 1-D integer"):
        prune.objective(view, sel.indices.astype(np.float64))


@pytest.mark.parametrize("scheme", ["minmax", "blockwise", "intellect"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_quantize_numpy_equals_torch(scheme, dtype):
    x = np.random.default_rng(3).standard_t(2, size=(37, 29)).astype(dtype)
    before = x.copy()
    q = comm.quantize(x, scheme=scheme, block_size=64)
    t = comm.quantize(torch.from_numpy(x), scheme=scheme, block_size=64)
    assert isinstance(q.data, np.ndarray)
    assert q.data.dtype == np.uint8
    np.testing.assert_array_equal(q.data, t.data.numpy())
    np.testing.assert_array_equal(q.params, t.params.numpy())
    np.testing.assert_array_equal(q.payload, t.payload.numpy())
    assert q.shape == (37, 29)
    assert q.dtype == np.dtype(dtype)
    assert q.nbytes == t.nbytes
    y = comm.dequantize(q)
    assert isinstance(y, np.ndarray)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, comm.dequantize(t).numpy())
    # The serialised form is the same as the tensor's and decodes back to the same values.
    assert q.to_bytes() == t.to_bytes()
    back = comm.QuantizedTensor.from_bytes(q.to_bytes())
    np.testing.assert_array_equal(comm.dequantize(back).numpy(), y)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    ("make", "exception", "match"),
    [
        (lambda: np.array([1, 2, 3]), TypeError, "floating-point array"),
        (lambda: np.empty(0, np.float32), ValueError, "non-empty"),
        (lambda: np.array([1.0, np.nan], np.float32), ValueError, "finite"),
        (lambda: np.array([1.0, -np.inf]), ValueError, "finite"),
        (lambda: [1.0, 2.0], TypeError, "torch.Tensor or NumPy array"),
    ],
)
def test_quantize_numpy_bad_input(make, exception, match):
    with pytest.raises(exception, match=match):
        comm.quantize(make())
