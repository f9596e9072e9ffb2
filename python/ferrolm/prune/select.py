"""`divprune`: max-min diversity token selection on NumPy arrays or torch tensors (CPU in Rust, GPU
in CUDA)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Optional, TypeVar, overload

import numpy as np
import numpy.typing as npt

from ferrolm import _native
from ferrolm._optional import is_tensor, lazy_module

if TYPE_CHECKING:
    import torch
else:
    # NumPy input never imports torch; tensor input has it loaded already.
    torch = lazy_module("torch")

__all__ = [
    "DEFAULT_KEEP",
    "METHODS",
    "Selection",
    "divprune",
    "keep_count",
    "objective",
    "uses_amx",
]

DEFAULT_KEEP = 0.098
"""DivPrune's default keep ratio for LLaVA 1.5 (56 of 576 image tokens)."""

METHODS = ("auto", "gram", "matrix_free")

ArrayT = TypeVar("ArrayT")


@dataclass(frozen=True)
class Selection(Generic[ArrayT]):
    """The tokens DivPrune keeps, as torch tensors for tensor input, NumPy arrays for NumPy input.

    Attributes:
        indices: ``int64`` token indices on the input's device, ``[k]`` for ``[N, d]`` input or
            ``[B, k]`` for ``[B, N, d]``; ascending unless ``order="greedy"``.
        objective: ``float32`` minimum cosine distance between two kept tokens (``inf`` when
            ``k == 1``), ``[]`` or ``[B]``, on the input's device.
    """

    indices: ArrayT
    objective: ArrayT


def keep_count(n: int, keep: float) -> int:
    """Tokens kept out of ``n`` for a keep ratio: ``round(keep * n)`` (halves up), at least 1.

    Raises:
        ValueError: ``keep`` is not in (0, 1] or ``n < 1``.

    Example:
        >>> keep_count(576, DEFAULT_KEEP), keep_count(10, 0.25), keep_count(3, 0.01)
        (56, 3, 1)
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ValueError(f"`keep` must be a ratio in (0, 1], got {keep!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"`n` must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"`features` must hold at least one token, got {n}")
    if n >= 2**63:
        # `keep * n` would leave float's exact range (or overflow it) in silence.
        raise ValueError(f"`n` must be below 2**63, got {n}")
    n = int(n)
    return max(1, min(n, math.floor(keep * n + 0.5)))


def _check_features(features: Any) -> None:
    if isinstance(features, np.ndarray):
        if features.dtype not in (np.float32, np.float16):
            raise TypeError(
                f"`features` must be float32 or float16, got {features.dtype}; "
                "call .astype(np.float32)"
            )
    elif not is_tensor(features):
        raise TypeError(
            f"`features` must be a torch.Tensor or NumPy array, got {type(features).__name__}"
        )
    elif features.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(
            f"`features` must be float32, float16 or bfloat16, got {features.dtype}; call .float()"
        )
    if features.ndim not in (2, 3):
        raise ValueError(
            f"`features` must be [N, d] or [B, N, d], got shape {tuple(features.shape)}"
        )
    if (
        features.shape[-2] == 0
        or features.shape[-1] == 0
        or (features.ndim == 3 and features.shape[0] == 0)
    ):
        raise ValueError(f"`features` must be non-empty, got shape {tuple(features.shape)}")


def uses_amx() -> bool:
    """Whether the CPU Gram algorithm runs on Intel AMX tiles in this process.

    True on Linux x86-64 CPUs with AMX-BF16 (Sapphire Rapids and later) unless the environment
    variable ``FERROLM_NO_AMX`` is set to a non-empty value other than ``0`` before the first
    selection; then the float32 SGEMM path runs instead.
    """
    return bool(_native.prune.amx_enabled())


@overload
def divprune(
    features: torch.Tensor,
    keep: Optional[float] = None,
    *,
    k: Optional[int] = None,
    first: Optional[int] = None,
    seed: Optional[int] = None,
    order: Literal["sorted", "greedy"] = "sorted",
    method: Literal["auto", "gram", "matrix_free"] = "auto",
) -> Selection[torch.Tensor]: ...


@overload
def divprune(
    features: npt.NDArray[Any],
    keep: Optional[float] = None,
    *,
    k: Optional[int] = None,
    first: Optional[int] = None,
    seed: Optional[int] = None,
    order: Literal["sorted", "greedy"] = "sorted",
    method: Literal["auto", "gram", "matrix_free"] = "auto",
) -> Selection[npt.NDArray[Any]]: ...


def divprune(
    features: Any,
    keep: Optional[float] = None,
    *,
    k: Optional[int] = None,
    first: Optional[int] = None,
    seed: Optional[int] = None,
    order: Literal["sorted", "greedy"] = "sorted",
    method: Literal["auto", "gram", "matrix_free"] = "auto",
) -> Selection[Any]:
    """Selects a maximally diverse subset of tokens (DivPrune, greedy max-min).

    Distances are cosine distances ``1 - x_i . x_j`` between L2-normalised tokens. The first
    token is the most isolated one (its nearest other token is farthest), unless ``first`` or
    ``seed`` says otherwise; each further token is the one whose minimum distance to the kept
    set is largest. Arithmetic is float32: float16/bfloat16 input is upcast exactly. The input
    is never modified.

    Ties: scores are compared as computed in float32, and equal scores go to the lowest index
    (a token and its exact duplicate have bit-identical scores, so the lower copy is kept
    first). Candidates whose exact scores are equal or closer than float32 rounding (about
    ``1e-6`` for unit rows of a few hundred features) are ordered by their rounded values: the
    distance of a token to its own duplicate is ``1 - x.x``, which rounds to a tiny number of
    either sign rather than to 0, so the first pick among all-duplicated tokens, and the order
    in which duplicates of kept tokens follow once every distinct token is kept, may differ
    from an exact computation. On DINOv2 features of real photos the picks equal a float64
    greedy at every step (``tests/test_prune_real.py``).

    Args:
        features: ``[N, d]`` tokens of one image or ``[B, N, d]`` for a batch of images: a torch
            tensor (float32, float16 or bfloat16, on CPU or a CUDA device) or a NumPy array
            (float32 or float16; needs no torch). Any strides (a contiguous float32 copy is
            made when needed).
        keep: Ratio of tokens to keep, in (0, 1]: ``k = round(keep * N)``, at least 1. Default
            :data:`DEFAULT_KEEP` when ``k`` is not given.
        k: Number of tokens to keep per image instead of ``keep``, in ``1..N``.
        first: Index of the first token instead of DivPrune's most isolated token.
        seed: Draws the first token from a seed instead (image ``b`` uses ``seed + b``).
        order: ``"sorted"`` (ascending index, the order the tokens had) or ``"greedy"``.
        method: ``"gram"`` builds the ``N x N`` distance matrix (``N^2 d`` flops, ``4 N^2``
            bytes); ``"matrix_free"`` computes only the distance rows the picks need plus a
            pruned nearest-neighbour scan (O(N d) memory; fast on clustered features);
            ``"auto"`` uses ``"gram"`` up to N = 16384 tokens (it was faster at every keep ratio
            measured here), else ``"matrix_free"``. CUDA input always uses the Gram matrix.
            On CPUs with Intel AMX (see :func:`uses_amx`) the Gram matrix is computed on AMX
            tiles at about 17 bits, and every pick or objective within the approximation's
            error of another candidate is recomputed in float32, so the result is the float32
            one up to near-ties.

    Returns:
        The kept indices and the objective (minimum pairwise distance of the kept set): torch
        tensors for tensor input, NumPy arrays for NumPy input.

    Raises:
        TypeError: ``features`` is not a float32/float16/bfloat16 tensor or float32/float16
            NumPy array.
        ValueError: Bad shape, ``keep``/``k``/``first``/``seed``/``order``/``method`` out of
            range, NaN/inf values, or an all-zero token (cosine distance is undefined).
        RuntimeError: ``features`` is on a GPU but ferrolm's CUDA kernels cannot run there.

    Example:
        >>> import torch
        >>> from ferrolm import prune
        >>> x = torch.randn(576, 1024)
        >>> sel = prune.divprune(x, keep=0.098)
        >>> sel.indices.shape
        torch.Size([56])
        >>> kept = x[sel.indices]

        NumPy in, NumPy out (no torch needed):

        >>> import numpy as np
        >>> sel = prune.divprune(np.random.default_rng(0).standard_normal((576, 64), np.float32))
        >>> sel.indices.shape, sel.indices.dtype
        ((56,), dtype('int64'))
    """
    _check_features(features)
    n = features.shape[-2]
    if k is not None and keep is not None:
        raise ValueError("give either `keep` or `k`, not both")
    if k is None:
        k = keep_count(n, DEFAULT_KEEP if keep is None else keep)
    elif isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(
            f"`k` must be an integer between 1 and the number of tokens ({n}), got {k!r}"
        )
    if order not in ("sorted", "greedy"):
        raise ValueError(f"`order` must be 'sorted' or 'greedy', got {order!r}")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if first is not None and seed is not None:
        raise ValueError("give either `first` or `seed`, not both")
    if first is not None and (
        isinstance(first, bool) or not isinstance(first, int) or not 0 <= first < n
    ):
        raise ValueError(f"`first` must be a token index in 0..{n - 1}, got {first!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64
    ):
        raise ValueError(f"`seed` must be an integer in [0, 2**64), got {seed!r}")
    batched = features.ndim == 3
    if isinstance(features, np.ndarray):
        x_np = np.ascontiguousarray(features if batched else features[None], dtype=np.float32)
        idx_np, obj_np = _native.prune.divprune(
            x_np, k, first=first, seed=seed, greedy_order=order == "greedy", method=method
        )
        return Selection(idx_np, obj_np) if batched else Selection(idx_np[0], obj_np[0, ...])
    x = features.detach() if batched else features.detach().unsqueeze(0)
    if x.is_cuda:
        from ferrolm.prune._cuda import divprune_cuda

        indices, obj = divprune_cuda(x, k, first=first, seed=seed, greedy_order=order == "greedy")
    else:
        x32 = x.to(torch.float32).contiguous()
        idx_np, obj_np = _native.prune.divprune(
            x32.numpy(), k, first=first, seed=seed, greedy_order=order == "greedy", method=method
        )
        indices, obj = torch.from_numpy(idx_np), torch.from_numpy(obj_np)
    if not batched:
        indices, obj = indices[0], obj[0]
    return Selection(indices, obj)


def objective(
    features: torch.Tensor | npt.NDArray[Any], indices: torch.Tensor | npt.NDArray[Any]
) -> float:
    """The minimum cosine distance between two of the tokens ``indices`` of ``[N, d]`` features.

    Computed in float32 on CPU like :func:`divprune`; ``inf`` for fewer than two tokens.
    ``features`` and ``indices`` are torch tensors or NumPy arrays (NumPy needs no torch).

    Example:
        >>> import torch
        >>> from ferrolm import prune
        >>> x = torch.randn(100, 16)
        >>> sel = prune.divprune(x, k=10)
        >>> abs(prune.objective(x, sel.indices) - float(sel.objective)) < 1e-5
        True
    """
    _check_features(features)
    if features.ndim != 2:
        raise ValueError(f"`features` must be [N, d], got shape {tuple(features.shape)}")
    if isinstance(indices, np.ndarray):
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"`indices` must be a 1-D integer array, got {indices.dtype}")
        idx = np.ascontiguousarray(indices, dtype=np.int64)
    elif not is_tensor(indices) or indices.dim() != 1 or indices.dtype.is_floating_point:
        raise TypeError("`indices` must be a 1-D integer torch.Tensor or NumPy array")
    else:
        idx = np.ascontiguousarray(indices.detach().cpu().numpy().astype(np.int64))
    if isinstance(features, np.ndarray):
        x_np = np.ascontiguousarray(features[None], dtype=np.float32)
    else:
        x_np = features.detach().to("cpu", torch.float32).contiguous().unsqueeze(0).numpy()
    return float(_native.prune.objective(x_np, idx))
