"""ferrolm.speculative.linear / route_linear: the small-batch Linear kernel against torch in
float64, its argument errors, and routing a tiny Hugging Face Qwen2 model through it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional
from transformers import Qwen2Config, Qwen2ForCausalLM

from ferrolm import speculative
from ferrolm._native import linalg as native
from ferrolm.speculative import fast_linear


@pytest.fixture(autouse=True, scope="module")
def _two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # exercises the split across the pool on the larger shapes
    yield
    torch.set_num_threads(threads)


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return functional.linear(x.double(), w.double(), None if b is None else b.double())


def assert_close(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any) -> None:
    """Within the float32 bound of a sum of k + 1 terms, relative to sum |terms|."""
    ref = reference(x, w, b)
    scale = functional.linear(
        x.double().abs(), w.double().abs(), None if b is None else b.double().abs()
    )
    k = x.shape[-1]
    tol = (k + 2) * torch.finfo(torch.float32).eps * scale + 1e-30
    assert out.dtype == torch.float32
    assert out.shape == ref.shape
    assert bool(((out.double() - ref).abs() <= tol).all()), (out.double() - ref).abs().max()


SHAPES = [((1, 64), 32), ((4, 100), 37), ((16, 1536), 256), ((2, 3, 77), 5), ((33, 129), 300)]


@pytest.mark.parametrize(("xshape", "n"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_float64_reference(
    xshape: tuple[int, ...], n: int, dtype: torch.dtype, with_bias: bool
) -> None:
    gen = torch.Generator().manual_seed(sum(xshape) + n)
    k = xshape[-1]
    x = torch.randn(xshape, generator=gen)
    w = torch.randn(n, k, generator=gen).to(dtype)
    b = torch.randn(n, generator=gen) if with_bias else None
    out = speculative.linear(x, w, b)
    assert_close(out, x, w, b)
    # Same values as torch's float32 product up to rounding.
    torch.testing.assert_close(out, functional.linear(x, w.float(), b), rtol=1e-4, atol=1e-4)


def test_nothing_the_caller_gave_is_mutated_and_strided_input_is_handled() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(5, 40, generator=gen)
    x = base[:, ::2]  # 20 columns, stride 2: not contiguous
    w = torch.randn(9, 20, generator=gen)
    b = torch.randn(9, generator=gen)
    before = (base.clone(), w.clone(), b.clone())
    out = speculative.linear(x, w, b)
    assert_close(out, x, w, b)
    for given, copy in zip((base, w, b), before):
        assert torch.equal(given, copy)
    # A transposed (strided) weight is read correctly too.
    wt = torch.randn(20, 9, generator=gen).t()
    assert_close(speculative.linear(x, wt), x, wt, None)


def test_bfloat16_bias_and_empty_inputs() -> None:
    x = torch.randn(3, 16)
    w = torch.randn(4, 16, dtype=torch.bfloat16)
    b = torch.randn(4).bfloat16()
    assert_close(speculative.linear(x, w, b), x, w, b.float())
    assert speculative.linear(torch.empty(0, 16), w).shape == (0, 4)
    assert speculative.linear(torch.empty(2, 0, 16), w).shape == (2, 0, 4)
    # in_features = 0: the output is the bias.
    out = speculative.linear(torch.empty(2, 0), torch.empty(4, 0), b)
    assert torch.equal(out, b.float().expand(2, 4))


def test_argument_errors_name_the_argument() -> None:
    x, w = torch.randn(2, 8), torch.randn(3, 8)
    with pytest.raises(TypeError, match=r"`x` must be float32, got torch\.float64"):
        speculative.linear(x.double(), w)
    with pytest.raises(
        TypeError, match=r"`weight` must be float32 or bfloat16, got torch\.float16"
    ):
        speculative.linear(x, w.half())
    with pytest.raises(TypeError, match=r"`bias` must be float32 or bfloat16, got torch\.int64"):
        speculative.linear(x, w, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"`weight` must be a torch\.Tensor, got ndarray"):
        speculative.linear(x, w.numpy())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`x` must have shape \[\.\.\., 8\]"):
        speculative.linear(torch.randn(2, 7), w)
    with pytest.raises(ValueError, match=r"`x` must have shape"):
        speculative.linear(torch.tensor(1.0), w)
    with pytest.raises(ValueError, match=r"`weight` must be 2-D"):
        speculative.linear(x, w[0])
    with pytest.raises(ValueError, match=r"`bias` must have shape \(3,\)"):
        speculative.linear(x, w, torch.zeros(4))
    with pytest.raises(RuntimeError, match=r"`x` must be on the CPU.*meta"):
        speculative.linear(x.to("meta"), w)
    with pytest.raises(RuntimeError, match="`weight` must be on the CPU"):
        speculative.linear(x, w.to("meta"))
    with pytest.raises(RuntimeError, match="no backward"):
        speculative.linear(x, w.requires_grad_())
    with torch.no_grad():
        assert_close(speculative.linear(x, w), x, w.detach(), None)


def test_native_binding_checks_shapes_and_dtypes() -> None:
    x = np.ones((2, 8), np.float32)
    w = np.ones((3, 8), np.float32)
    out = np.zeros((2, 3), np.float32)
    native.linear_f32(x, w, None, out)
    assert (out == 8).all()
    with pytest.raises(ValueError, match=r"`w` must be \[out_features, 8\].*got \[3, 7\]"):
        native.linear_f32(x, np.ones((3, 7), np.float32), None, out)
    with pytest.raises(ValueError, match=r"`out` must be of shape \[2, 3\], got \[3, 2\]"):
        native.linear_f32(x, w, None, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="`bias` must be of length 3"):
        native.linear_f32(x, w, np.ones(2, np.float32), out)
    with pytest.raises(ValueError, match="`out` must be contiguous"):
        native.linear_f32(x, w, None, np.zeros((2, 6), np.float32)[:, ::2])
    with pytest.raises(TypeError):
        native.linear_f32(x.astype(np.float64), w, None, out)
    with pytest.raises(TypeError):
        native.linear_bf16(x, w, None, out)  # float32 where bfloat16 bits (uint16) go
    # `out` aliasing an input is refused by rust-numpy's borrow checker, not computed wrongly.
    square = np.ones((3, 3), np.float32)
    with pytest.raises(Exception, match=r"borrow|[Aa]lread"):
        native.linear_f32(square, np.ones((3, 3), np.float32), None, square)


def test_a_panic_in_the_kernel_is_a_runtime_error_and_the_next_call_works() -> None:
    from ferrolm import _native

    x, w = np.ones((2, 8), np.float32), np.ones((3, 8), np.float32)
    out = np.zeros((2, 3), np.float32)
    _native._debug_panic_next(1)
    with pytest.raises(RuntimeError, match=r"internal error in ferrolm.*panic armed"):
        native.linear_f32(x, w, None, out)
    native.linear_bf16(x, np.full((3, 8), 0x3F80, np.uint16), None, out)  # bf16 1.0
    assert (out == 8).all()


def tiny_qwen(dtype: torch.dtype = torch.float32) -> Any:
    config = Qwen2Config(
        vocab_size=101,
        hidden_size=40,
        intermediate_size=76,  # not a multiple of 8: the kernel's tail path
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval().to(dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def snapshot(model: torch.nn.Module) -> tuple[Any, ...]:
    """Everything route_linear must leave as it found it."""
    return (
        [dict(m.__dict__) for m in model.modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
        [(k, v.data_ptr()) for k, v in model.state_dict().items()],
    )


def assert_restored(model: torch.nn.Module, before: tuple[Any, ...]) -> None:
    dicts, state, pointers = before
    after = snapshot(model)
    assert after[0] == dicts
    assert all(torch.equal(state[k], v) for k, v in after[1].items())
    assert after[2] == pointers
    assert not any("forward" in m.__dict__ for m in model.modules())


class CountingKernels:
    """Stands in for ``ferrolm._native.linalg`` and counts the kernel's calls and rows."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows: list[int] = []

    def _count(self, fn: Any) -> Any:
        def call(x: Any, *rest: Any) -> None:
            self.calls += 1
            self.rows.append(x.shape[0])
            fn(x, *rest)

        return call

    @property
    def linear_f32(self) -> Any:
        return self._count(native.linear_f32)

    @property
    def linear_bf16(self) -> Any:
        return self._count(native.linear_bf16)


@pytest.fixture(scope="module")
def qwen() -> Any:
    return tiny_qwen()


def test_routed_qwen2_gives_the_same_logits_and_is_restored(
    qwen: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernels = CountingKernels()
    monkeypatch.setattr(fast_linear, "_native", kernels)
    linears = sum(isinstance(m, torch.nn.Linear) for m in qwen.modules())
    before = snapshot(qwen)
    gen = torch.Generator().manual_seed(1)
    for tokens in (1, 8, 40):
        ids = torch.randint(0, 101, (1, tokens), generator=gen)
        with torch.no_grad():
            plain = qwen(ids).logits
            calls = kernels.calls
            with speculative.route_linear(qwen, max_rows=16) as routed:
                fast = qwen(ids).logits
            assert routed == linears == 2 * 7 + 1  # q k v o gate up down per layer, lm_head
        # 40 rows is above max_rows: every layer then keeps its own forward.
        assert kernels.calls - calls == (linears if tokens <= 16 else 0)
        torch.testing.assert_close(fast, plain, rtol=0, atol=1e-4)
        assert_restored(qwen, before)


def test_greedy_generate_under_route_linear_equals_plain_generate(qwen: Any) -> None:
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    kwargs: dict[str, Any] = {"do_sample": False, "max_new_tokens": 12, "pad_token_id": 0}
    with torch.no_grad():
        plain = qwen.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        with speculative.route_linear(qwen):
            fast = qwen.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    assert fast.tolist() == plain.tolist()


def test_bfloat16_model_is_routed_within_bfloat16_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_qwen(torch.bfloat16)
    kernels = CountingKernels()
    monkeypatch.setattr(fast_linear, "_native", kernels)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        plain = model(ids).logits.float()
        with speculative.route_linear(model) as routed:
            fast = model(ids).logits.float()
    assert routed == 15
    assert kernels.calls == 15
    torch.testing.assert_close(fast, plain, rtol=0.05, atol=0.05)


def test_route_linear_restores_after_an_exception_and_keeps_hooks(qwen: Any) -> None:
    seen: list[tuple[int, ...]] = []
    handle = qwen.lm_head.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        before = snapshot(qwen)
        with torch.no_grad(), speculative.route_linear(qwen):
            assert "forward" in qwen.lm_head.__dict__
            qwen(torch.tensor([[1, 2]]))
            with pytest.raises(KeyError, match="inside"), speculative.route_linear(qwen):
                raise KeyError("inside")
            # The inner block ended by an exception; the outer one is still in place.
            assert "forward" in qwen.lm_head.__dict__
        with pytest.raises(KeyError, match="inside"), speculative.route_linear(qwen):
            raise KeyError("inside")
        assert seen == [(1, 2, 101)]  # the hook ran on the routed call
        assert_restored(qwen, before)
    finally:
        handle.remove()


def test_gradients_subclasses_and_patched_modules_keep_their_own_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernels = CountingKernels()
    monkeypatch.setattr(fast_linear, "_native", kernels)

    class Scaled(torch.nn.Linear):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(input)

    patched = torch.nn.Linear(8, 8)
    own = patched.forward

    def patch(input: torch.Tensor) -> torch.Tensor:
        return own(input) + 1

    patched.forward = patch  # type: ignore[method-assign]
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8), Scaled(8, 8), patched, torch.nn.Linear(8, 4, dtype=torch.float64)
    )
    x = torch.randn(3, 8, requires_grad=True)
    with speculative.route_linear(model) as routed:
        assert routed == 1  # only the plain float32 Linear
        y = model[2](model[1](model[0](x)))  # grad enabled, parameters require grad
        y.sum().backward()
        assert kernels.calls == 0
        assert x.grad is not None
        with torch.no_grad():
            model[0](x)
            # Another dtype goes to the module's own forward, which refuses it as before.
            with pytest.raises(RuntimeError, match="same dtype"):
                model[0](torch.randn(2, 8, dtype=torch.float64))
        assert kernels.calls == 1
    assert model[2].__dict__["forward"] is patch  # the other library's patch stays


def test_route_linear_follows_a_replaced_weight_and_checks_arguments() -> None:
    layer = torch.nn.Linear(8, 3)
    x = torch.randn(2, 8)
    with torch.no_grad(), speculative.route_linear(layer):
        layer.weight = torch.nn.Parameter(torch.ones(3, 8))
        torch.testing.assert_close(layer(x), functional.linear(x, layer.weight, layer.bias))
        layer.weight.data = torch.zeros(3, 8)  # new storage under the same parameter
        torch.testing.assert_close(layer(x), layer.bias.expand(2, 3))
        layer.bias.data = torch.full((3,), 5.0)
        torch.testing.assert_close(layer(x), torch.full((2, 3), 5.0))
        layer.weight.data.fill_(1.0)  # in place: the kernel reads the same memory
        torch.testing.assert_close(layer(x), x.sum(-1, keepdim=True).expand(2, 3) + 5.0)
    with (
        pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module"),
        speculative.route_linear("model"),  # type: ignore[arg-type]
    ):
        pass
    with (
        pytest.raises(ValueError, match="`max_rows` must be at least 1, got 0"),
        speculative.route_linear(layer, max_rows=0),
    ):
        pass
    with (
        pytest.raises(TypeError, match="`max_rows` must be an int, got float"),
        speculative.route_linear(layer, max_rows=2.5),  # type: ignore[arg-type]
    ):
        pass


def numpy_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 in NumPy: max |row| / 127, rounding half away from zero."""
    w64 = w.astype(np.float64)
    peak = np.abs(w).max(axis=1).astype(np.float32)
    scale = (peak / np.float32(127)).astype(np.float32)
    inv = np.where(peak > 0, np.float32(127) / np.where(peak > 0, peak, 1), 0).astype(np.float32)
    v = (w * inv[:, None]).astype(np.float32).astype(np.float64)
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127).astype(np.int8)
    assert np.isfinite(w64).all()
    return q, scale


@pytest.mark.parametrize(("xshape", "n"), SHAPES)
def test_int8_routing_equals_the_dequantized_weights_in_float64(
    xshape: tuple[int, ...], n: int
) -> None:
    torch.manual_seed(n)
    layer = torch.nn.Linear(xshape[-1], n)
    with torch.no_grad():
        layer.weight[0] = 0.0  # an all-zero row: scale 0, codes 0
    x = torch.randn(*xshape)
    q, scale = fast_linear._quantize_int8(layer.weight)
    want_q, want_scale = numpy_int8(layer.weight.detach().numpy())
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(scale, want_scale)
    assert scale[0] == 0
    dequantized = torch.from_numpy(q.astype(np.float32) * scale[:, None])
    before = layer.weight.detach().clone()
    with torch.no_grad(), speculative.route_linear(layer, max_rows=64, weights=torch.int8):
        got = layer(x)
    assert_close(got, x, dequantized, layer.bias.detach())
    assert torch.equal(layer.weight, before)
    assert layer.weight.dtype == torch.float32


def test_int8_binding_checks_its_arguments() -> None:
    w = np.ones((3, 8), np.float32)
    q = np.zeros((3, 8), np.int8)
    scale = np.zeros(3, np.float32)
    native.quantize_rows_i8(w, q, scale)
    assert (q == 127).all()
    np.testing.assert_allclose(scale, 1 / 127)
    bad = w.copy()
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"`w` must be finite weights, got NaN at row 1, column 5"):
        native.quantize_rows_i8(bad, q, scale)
    with pytest.raises(ValueError, match=r"`q` must be of shape \[3, 8\] like w"):
        native.quantize_rows_i8(w, np.zeros((3, 7), np.int8), scale)
    with pytest.raises(ValueError, match="`scale` must be of length 3"):
        native.quantize_rows_i8(w, q, np.zeros(2, np.float32))
    out = np.zeros((2, 3), np.float32)
    x = np.ones((2, 8), np.float32)
    native.linear_i8(x, q, scale, None, out)
    np.testing.assert_allclose(out, 8.0, rtol=1e-6)
    with pytest.raises(ValueError, match="`scale` must be of length 3"):
        native.linear_i8(x, q, np.ones(4, np.float32), None, out)
    with pytest.raises(TypeError):
        native.linear_i8(x, w, scale, None, out)  # float32 where int8 codes go
    layer = torch.nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight[0, 0] = float("inf")
    with (
        pytest.raises(ValueError, match="`w` must be finite weights"),
        speculative.route_linear(layer, weights=torch.int8),
    ):
        pass
    with (
        pytest.raises(TypeError, match=r"`weights` must be None, .*torch\.int8"),
        speculative.route_linear(layer, weights=torch.float16),
    ):
        pass
