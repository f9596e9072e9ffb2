"""Quantize / dequantize torch tensors with ferrolm's int8 codes, on CPU (Rust) or GPU (CUDA)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ferrolm import _native
from ferrolm import cuda as _cuda

__all__ = ["SCHEMES", "QuantizedTensor", "dequantize", "dequantize_accumulate", "quantize"]

SCHEMES = ("minmax",)


@dataclass(frozen=True)
class QuantizedTensor:
    """An int8-coded tensor: the bytes to send plus what is needed to decode them.

    Attributes:
        payload: ``uint8`` codes, flat, on the input's device.
        params: ``float32`` code parameters on the same device; for ``"minmax"`` ``[min, scale]``.
        scheme: The quantization scheme.
        shape: Shape of the original tensor.
        dtype: Dtype of the original tensor (decoding returns float32 unless asked otherwise).
    """

    payload: torch.Tensor
    params: torch.Tensor
    scheme: str
    shape: torch.Size
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: codes plus parameters."""
        return self.payload.numel() + self.params.numel() * 4


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"`scheme` must be one of {', '.join(SCHEMES)}; got {scheme!r}")


def _flat_float32(t: torch.Tensor, arg: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(
            f"`{arg}` must be a floating-point tensor (float32, float16, bfloat16), got {t.dtype}"
        )
    if t.numel() == 0:
        raise ValueError(f"`{arg}` must be non-empty, got shape {tuple(t.shape)}")
    # reshape copies only when needed; the caller's tensor is never written.
    return t.detach().to(torch.float32).reshape(-1).contiguous()


def quantize(t: torch.Tensor, scheme: str = "minmax") -> QuantizedTensor:
    """Quantizes ``t`` to int8 codes.

    Args:
        t: Any floating-point tensor on CPU or CUDA. It is not modified.
        scheme: ``"minmax"``: one affine code for the whole tensor, ``x ≈ min + q * scale``.

    Returns:
        The codes and their parameters, on ``t``'s device.

    Raises:
        TypeError: ``t`` is not a floating-point tensor.
        ValueError: ``t`` is empty or holds NaN or infinite values.
        RuntimeError: ``t`` is on a GPU but the CUDA driver or NVRTC is missing.
    """
    _check_scheme(scheme)
    x = _flat_float32(t, "t")
    if x.is_cuda:
        payload, params = _quantize_minmax_cuda(x)
    else:
        payload = torch.empty(x.numel(), dtype=torch.uint8)
        lo, scale = _native.comm_quantize_minmax(x.numpy(), payload.numpy())
        params = torch.tensor([lo, scale], dtype=torch.float32)
    return QuantizedTensor(payload, params, scheme, t.shape, t.dtype)


def _check_quantized(q: QuantizedTensor) -> None:
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"`q` must be a QuantizedTensor, got {type(q).__name__}")
    _check_scheme(q.scheme)


def dequantize(q: QuantizedTensor) -> torch.Tensor:
    """Decodes ``q`` to a float32 tensor of the original shape, on ``q``'s device."""
    _check_quantized(q)
    out = torch.empty(q.payload.numel(), dtype=torch.float32, device=q.payload.device)
    if out.is_cuda:
        _launch_cuda(_native.cuda_dequantize_minmax_f32, q, out)
    else:
        lo, scale = (float(v) for v in q.params[:2])
        _native.comm_dequantize_minmax(q.payload.numpy(), lo, scale, out.numpy())
    return out.reshape(q.shape)


def dequantize_accumulate(q: QuantizedTensor, acc: torch.Tensor) -> torch.Tensor:
    """Adds the decoded values of ``q`` into ``acc`` in place and returns ``acc``.

    Args:
        q: Codes from :func:`quantize`.
        acc: A contiguous float32 tensor with ``q``'s element count, on ``q``'s device.
            It is the only argument this function writes.
    """
    _check_quantized(q)
    if not isinstance(acc, torch.Tensor) or acc.dtype != torch.float32:
        got = acc.dtype if isinstance(acc, torch.Tensor) else type(acc).__name__
        raise TypeError(f"`acc` must be a float32 tensor, got {got}; call .float()")
    if acc.numel() != q.payload.numel():
        raise ValueError(
            f"`acc` must have {q.payload.numel()} elements like `q`, got {acc.numel()}"
        )
    if not acc.is_contiguous():
        raise ValueError("`acc` must be contiguous; call .contiguous() and accumulate into that")
    if acc.device != q.payload.device:
        raise ValueError(f"`acc` must be on {q.payload.device} like `q`, got {acc.device}")
    flat = acc.view(-1)
    if flat.is_cuda:
        _launch_cuda(_native.cuda_dequantize_accumulate_minmax_f32, q, flat)
    else:
        lo, scale = (float(v) for v in q.params[:2])
        _native.comm_dequantize_accumulate_minmax(q.payload.numpy(), lo, scale, flat.numpy())
    return acc


def _stream(device: torch.device) -> int:
    return int(torch.cuda.current_stream(device).cuda_stream)


def _quantize_minmax_cuda(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    _cuda.require_gpu("t", index)
    n = x.numel()
    payload = torch.empty(n, dtype=torch.uint8, device=x.device)
    params = torch.empty(4, dtype=torch.float32, device=x.device)
    partial = torch.empty(3 * _native.cuda_minmax_blocks(n), dtype=torch.float32, device=x.device)
    _native.cuda_quantize_minmax_f32(
        index,
        _stream(x.device),
        x.data_ptr(),
        payload.data_ptr(),
        params.data_ptr(),
        partial.data_ptr(),
        n,
    )
    # One device-to-host read of the non-finite flag: NaN/inf must not become silent codes.
    if params[3].item() != 0.0:
        raise ValueError("`t` must be finite: int8 quantization has no code for NaN or infinity")
    return payload, params[:2]


def _launch_cuda(kernel: object, q: QuantizedTensor, out: torch.Tensor) -> None:
    device = q.payload.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    _cuda.require_gpu("q", index)
    # The decoding kernels read params[0] (min) and params[1] (scale).
    params = q.params.to(device=device, dtype=torch.float32).contiguous()
    kernel(  # type: ignore[operator]
        index,
        _stream(device),
        q.payload.data_ptr(),
        params.data_ptr(),
        out.data_ptr(),
        q.payload.numel(),
    )
