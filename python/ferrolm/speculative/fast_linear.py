"""``nn.Linear`` on the CPU for a few rows of input, through ferrolm's memory-bound kernel.

Verifying a draft tree of 4-16 tokens runs every Linear layer of the target on 4-16 rows. Such a
product is bound by reading the weight matrix, so it should cost about what one row costs; BLAS
libraries tuned for large products do not behave that way (on the AMD EPYC this project
measures on, MKL took 3x longer for 4 rows than for 1). The kernel in ``ferrolm-core``
(``rust/core/src/linalg``) reads each weight row from memory once for all rows of ``x``, on
float32 or bfloat16 weights, with float32 accumulation, on ``torch.get_num_threads()`` threads.

Numerics: each output is a float32 sum of the same products as ``F.linear``'s, in another order
(8 interleaved partial sums over the input features, fused multiply-adds where the CPU has FMA),
so results differ from MKL's by float32 rounding only: a few units in the last place relative to
``sum(|x * w|)``. Greedy decoding is unchanged unless two logits are within that distance.

Example:
    >>> import torch
    >>> from ferrolm.speculative import linear, route_linear
    >>> layer = torch.nn.Linear(64, 32)
    >>> x = torch.randn(2, 3, 64)
    >>> with torch.no_grad():
    ...     y = linear(x, layer.weight, layer.bias)                 # [2, 3, 32]
    ...     with route_linear(layer) as routed:                     # routed == 1
    ...         z = layer(x)                                        # through the kernel
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ferrolm._native import linalg as _native

__all__ = ["linear", "route_linear"]

_WEIGHT_DTYPES = (torch.float32, torch.bfloat16)

# (x [m, k] float32, w [n, k], bias [n] or None, out [m, n]) -> None
_Kernel = Callable[..., None]


def _tensor(value: Any, arg: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(value).__name__}")
    if value.device.type != "cpu":
        raise RuntimeError(
            f"`{arg}` must be on the CPU (this kernel is CPU-only), got {value.device}; "
            "use torch.nn.functional.linear on other devices"
        )
    return value


def _weight(weight: Any) -> tuple[npt.NDArray[Any], _Kernel]:
    """The weight as a NumPy view (float32, or bfloat16 bits as uint16) and its kernel."""
    w = _tensor(weight, "weight")
    if w.dtype not in _WEIGHT_DTYPES:
        raise TypeError(f"`weight` must be float32 or bfloat16, got {w.dtype}")
    if w.dim() != 2:
        raise ValueError(
            f"`weight` must be 2-D [out_features, in_features], got shape {tuple(w.shape)}"
        )
    w = w.detach().contiguous()
    if w.dtype == torch.bfloat16:
        return w.view(torch.int16).numpy().view(np.uint16), _native.linear_bf16
    return w.numpy(), _native.linear_f32


def _bias(bias: Any, n: int) -> npt.NDArray[np.float32] | None:
    """The bias as a float32 NumPy array of length ``n`` (a copy only for bfloat16)."""
    if bias is None:
        return None
    b = _tensor(bias, "bias")
    if b.dtype not in _WEIGHT_DTYPES:
        raise TypeError(f"`bias` must be float32 or bfloat16, got {b.dtype}")
    if tuple(b.shape) != (n,):
        raise ValueError(f"`bias` must have shape ({n},) (out_features), got {tuple(b.shape)}")
    array: npt.NDArray[np.float32] = b.detach().float().contiguous().numpy()
    return array


def _run(
    x: torch.Tensor,
    w: npt.NDArray[Any],
    bias: npt.NDArray[np.float32] | None,
    kernel: _Kernel,
) -> torch.Tensor:
    """``x [..., k]`` float32 (any strides) times ``w [n, k]``: a new float32 ``[..., n]``.

    Called once per Linear layer per forward, so it avoids torch calls that cost microseconds
    (the result is a NumPy array wrapped by ``torch.from_numpy``)."""
    n, k = w.shape
    lead = x.shape[:-1]
    if x.requires_grad:
        x = x.detach()
    if x.dim() != 2 or not x.is_contiguous():
        # An explicit row count: reshape(-1, 0) is ambiguous when in_features is 0.
        x = x.reshape(math.prod(lead), k).contiguous()
    out = np.empty((x.shape[0], n), np.float32)
    kernel(x.numpy(), w, bias, out)
    y = torch.from_numpy(out)
    return y if len(lead) == 1 else y.view(*lead, n)


# Lower-precision copies of weights, kept while the weight lives and reused by later
# `route_linear` blocks (generation enters one per call) until the weight changes. Keyed by id
# (a tensor's `==` is elementwise, so it cannot be a dict key); a finalizer drops the entry.
_COPIES: dict[int, tuple[Any, int, int, Any, Any]] = {}


def _quantize_int8(weight: torch.Tensor) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Per-row symmetric int8 codes and float32 scales of a float32/bfloat16 weight (core)."""
    w = weight.detach().float().contiguous().numpy()
    q = np.empty(w.shape, np.int8)
    scale = np.empty(w.shape[0], np.float32)
    _native.quantize_rows_i8(w, q, scale)
    return q, scale


def _low_copy(weight: torch.Tensor, dtype: Any) -> Any:
    """The weight as `dtype` (bfloat16: a tensor; int8: NumPy codes and scales), made once and
    reused while the weight is the same object, at the same address and version."""
    hit = _COPIES.get(id(weight))
    if (
        hit is not None
        and hit[0]() is weight
        and hit[1:4] == (weight.data_ptr(), weight._version, dtype)
    ):
        return hit[4]
    if dtype == torch.int8:
        copy: Any = _quantize_int8(weight)
    else:
        copy = weight.detach().to(dtype).contiguous()
    if hit is None or hit[0]() is not weight:
        weakref.finalize(weight, _COPIES.pop, id(weight), None)
    _COPIES[id(weight)] = (weakref.ref(weight), weight.data_ptr(), weight._version, dtype, copy)
    return copy


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` on the CPU through ferrolm's small-batch kernel.

    Same contract as ``torch.nn.functional.linear`` for a float32 ``x`` and a float32 or
    bfloat16 ``weight`` (widened exactly to float32), without autograd. Fastest for few rows
    (up to ~16); larger inputs work but a BLAS is then usually faster.

    Args:
        x: float32 ``[..., in_features]`` on the CPU, any strides (copied to contiguous rows
            only when they are not already).
        weight: ``[out_features, in_features]`` float32 or bfloat16 on the CPU (``nn.Linear``'s
            layout, read in place: never copied unless it is not contiguous).
        bias: ``[out_features]`` float32 or bfloat16 on the CPU, or None.

    Returns:
        A new float32 tensor ``[..., out_features]``.

    Raises:
        TypeError: an argument is not a tensor or has another dtype.
        RuntimeError: an argument is not on the CPU, or autograd would need a gradient
            (call it under ``torch.no_grad()``).
        ValueError: the shapes disagree; the message names the argument.
    """
    x = _tensor(x, "x")
    if x.dtype != torch.float32:
        raise TypeError(f"`x` must be float32, got {x.dtype}; call .float()")
    w, kernel = _weight(weight)
    if x.dim() == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"`x` must have shape [..., {w.shape[1]}] (weight's in_features), got {tuple(x.shape)}"
        )
    b = _bias(bias, w.shape[0])
    if _needs_grad(x, weight, bias):
        raise RuntimeError(
            "linear has no backward: call it under torch.no_grad() or on tensors that do not "
            "require grad"
        )
    return _run(x, w, b, kernel)


def _routable(module: torch.nn.Module) -> bool:
    """A plain ``nn.Linear`` (no subclass forward, no forward patched by another library such
    as accelerate's hooks) with a contiguous 2-D CPU weight of a kernel dtype."""
    if (
        not isinstance(module, torch.nn.Linear)
        or type(module).forward is not torch.nn.Linear.forward
    ):
        return False
    if "forward" in module.__dict__:
        return False
    w = module.weight
    return (
        isinstance(w, torch.Tensor)
        and w.device.type == "cpu"
        and w.dtype in _WEIGHT_DTYPES
        and w.dim() == 2
        and w.is_contiguous()
        and (module.bias is None or module.bias.device.type == "cpu")
    )


def _routed_forward(
    module: torch.nn.Linear, max_rows: int, weights: torch.dtype | None = None
) -> Callable[[torch.Tensor], Any]:
    """The replacement ``forward`` of one module: the kernel for small no-grad inputs of the
    weight's dtype, the module's own forward otherwise (and if its weight or bias was replaced,
    as a parameter or through ``.data``)."""
    original = module.forward
    params = module._parameters
    weight, bias = module.weight, module.bias
    pointers = (weight.data_ptr(), None if bias is None else bias.data_ptr())
    # A lower-precision copy for the kernel (a draft's weights); the module keeps its own.
    w: npt.NDArray[Any]
    kernel: _Kernel
    if weights == torch.int8:
        w, scale = _low_copy(weight, torch.int8)

        def kernel(x: Any, w: Any, b: Any, out: Any) -> None:
            _native.linear_i8(x, w, scale, b, out)

    else:
        stored = _low_copy(weight, weights) if weights not in (None, weight.dtype) else weight
        w, kernel = _weight(stored)
    b = _bias(bias, w.shape[0])
    k = w.shape[1]
    limit = max_rows * k
    dtype = weight.dtype

    def forward(input: torch.Tensor) -> Any:
        # Cheap checks first: this runs for every Linear of every forward.
        if (
            input.dtype != dtype
            or not input.is_cpu
            or input.dim() == 0
            or input.numel() > limit
            or input.shape[-1] != k
            or params["weight"] is not weight
            or params.get("bias") is not bias
            or weight.data_ptr() != pointers[0]
            or (bias is not None and bias.data_ptr() != pointers[1])
            or _needs_grad(input, weight, bias)
        ):
            return original(input)
        if dtype == torch.float32:
            return _run(input, w, b, kernel)
        # bfloat16 activations: the kernel sums in float32 and the result is rounded once.
        return _run(input.float(), w, b, kernel).to(dtype)

    return forward


@contextlib.contextmanager
def route_linear(
    model: torch.nn.Module, max_rows: int = 16, *, weights: torch.dtype | None = None
) -> Iterator[int]:
    """While active, runs the small products of ``model``'s Linear layers through the kernel.

    Every ``nn.Linear`` of ``model`` (itself included) whose weight is a contiguous CPU float32
    or bfloat16 tensor gets an instance ``forward`` that calls :func:`linear`'s kernel when the
    input has the weight's dtype, at most ``max_rows`` rows (``input.numel() //
    in_features``) and no gradient to track, and the module's own forward otherwise. Subclasses
    of ``nn.Linear`` with their own ``forward`` and modules whose ``forward`` another library
    already replaced are left alone. NumPy views of the weights are made once, on entry (so
    in-place changes to a weight are seen; a bfloat16 bias is copied to float32 on entry, so
    change biases outside the block).

    On exit, normal or by an exception, every module is as before: the instance ``forward`` is
    removed; parameters, buffers and hooks are never touched.

    The kernel runs on ``torch.get_num_threads()`` threads of ferrolm's own pool, between torch's
    operations. With libgomp's default wait policy torch's OpenMP threads spin for a while
    after each operation and compete with it when there are no spare cores: on a 2-core CPU
    setting ``OMP_WAIT_POLICY=PASSIVE`` in the environment before torch is imported made a
    routed 8-layer Qwen2-1.5B-shaped forward of 1 to 8 tokens 1.3x to 1.8x faster, and about 2x
    faster (plain torch too) while another process kept one core busy (AMD EPYC, 2 threads).
    For a single row the kernel only matches MKL (both wait on memory), so route the forwards
    of several rows, such as a draft tree's verification.

    Args:
        model: Any ``torch.nn.Module``, e.g. a Hugging Face causal LM.
        max_rows: The most rows sent to the kernel (>= 1). Above ~16 rows a BLAS is usually
            faster, and a prompt's prefill goes to the module's own forward.
        weights: ``torch.bfloat16`` to give the kernel a bfloat16 copy of every float32
            weight (made on the first entry, kept while the weight lives and is unchanged):
            half the bytes to read per product, so about half the time, at bfloat16's
            precision. ``torch.int8``: int8 codes with one float32 scale per output feature
            (``max |row| / 127``, rounded to nearest), a quarter of the bytes. Meant for a
            speculative draft, whose outputs only steer which tokens are proposed; never for a
            model whose outputs must be exact.

    Yields:
        The number of modules routed.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module`` or ``max_rows`` not an int.
        ValueError: ``max_rows`` is below 1.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int):
        raise TypeError(f"`max_rows` must be an int, got {type(max_rows).__name__}")
    if max_rows < 1:
        raise ValueError(f"`max_rows` must be at least 1, got {max_rows}")
    if weights not in (None, torch.float32, torch.bfloat16, torch.int8):
        raise TypeError(
            f"`weights` must be None, torch.float32, torch.bfloat16 or torch.int8, got {weights}"
        )
    routed: list[tuple[torch.nn.Module, Callable[[torch.Tensor], Any]]] = []
    try:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and _routable(module):
                forward = _routed_forward(module, max_rows, weights)
                module.forward = forward  # type: ignore[method-assign,assignment]
                routed.append((module, forward))
        yield len(routed)
    finally:
        for module, forward in routed:
            # Only ours: a forward someone else installed inside the block stays theirs.
            if module.__dict__.get("forward") is forward:
                del module.__dict__["forward"]
