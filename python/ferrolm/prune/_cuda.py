"""The CUDA path of :func:`ferrolm.prune.divprune`: cuBLAS distances, selection in one launch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import torch

from ferrolm import _native
from ferrolm import cuda as _cuda

__all__ = ["distance_matrices", "divprune_cuda"]


def distance_matrices(x: torch.Tensor) -> torch.Tensor:
    """``1 - Xn Xn^T`` per image of ``x`` (``[B, N, d]``), float32, on ``x``'s device.

    Raises:
        ValueError: NaN/inf values or an all-zero token (checked on the device, one sync).
    """
    x32 = x.to(torch.float32)
    norms = torch.linalg.vector_norm(x32.double(), dim=-1)
    bad = ~torch.isfinite(norms) | (norms == 0)
    if bool(bad.any()):
        b, i = (int(v) for v in bad.nonzero()[0].tolist())
        what = "an all-zero row" if float(norms[b, i]) == 0 else "a NaN or infinite value"
        raise ValueError(
            f"`features` must hold finite, non-zero tokens (cosine distance), got {what} "
            f"in token {i} of image {b}"
        )
    xn = x32 * (1.0 / norms).to(torch.float32).unsqueeze(-1)
    with _ieee_float32_matmul():
        gram = torch.bmm(xn, xn.transpose(1, 2))
    return gram.neg_().add_(1.0)


@contextmanager
def _ieee_float32_matmul() -> Iterator[None]:
    """Full float32 matmuls (no TF32) like the CPU path, restoring the caller's setting."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        previous = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
    else:
        legacy = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = legacy


def divprune_cuda(
    x: torch.Tensor,
    k: int,
    *,
    first: Optional[int],
    seed: Optional[int],
    greedy_order: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selects for ``x`` (``[B, N, d]`` on a CUDA device); returns (indices, objective)."""
    device = x.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    _cuda.require_gpu("features", index)
    batch, n, _ = x.shape
    dist = distance_matrices(x).contiguous()
    if first is None and seed is not None:
        # The CPU path's own rule, so that both devices start from the same token.
        first_t = torch.from_numpy(_native.prune.seeded_first_picks(seed, batch, n)).to(device)
    else:
        fill = -1 if first is None else first
        first_t = torch.full((batch,), fill, dtype=torch.int64, device=device)
    nn = torch.empty(batch, n, dtype=torch.float32, device=device)
    mind = torch.empty(batch, n, dtype=torch.float32, device=device)
    out = torch.empty(batch, k, dtype=torch.int64, device=device)
    obj = torch.empty(batch, dtype=torch.float32, device=device)
    _native.prune.cuda_divprune_f32(
        index,
        int(torch.cuda.current_stream(device).cuda_stream),
        dist.data_ptr(),
        nn.data_ptr(),
        first_t.data_ptr(),
        mind.data_ptr(),
        out.data_ptr(),
        obj.data_ptr(),
        batch,
        n,
        k,
        first is None and seed is None,
    )
    if not greedy_order:
        out = out.sort(dim=-1).values
    return out, obj
