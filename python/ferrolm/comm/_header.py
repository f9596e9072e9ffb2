"""The header every rank sends around the ring before any data moves (``all_reduce``).

It carries everything the ranks must agree on: the shape (not only the element count: (100, 100)
and (10000,) are different arguments), the dtype, scheme, block size, op and piece size, and a
"finite" flag. Headers come from peers, so every field is checked before it is used or shown.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.distributed as dist

__all__ = ["HEADER_WORDS", "STATUS_TAG", "build_header", "check_headers", "exchange_headers"]

_MAGIC = 0x46524C32  # "FRL2": the second header layout (with the shape)
#: Dimensions carried verbatim; longer shapes are compared through ``_HASH`` as well.
_SHOWN_DIMS = 16
# Word positions.
_NAMES = ("magic", "element count", "dtype", "scheme", "block_size", "op", "finite", "piece")
_NDIM, _HASH, _DIMS = 8, 9, 10
HEADER_WORDS = _DIMS + _SHOWN_DIMS
_TAG = 1 << 30
#: First tag of the closing status exchange (after the data, which uses tags below 2**30).
STATUS_TAG = _TAG + (1 << 20)


class _Waiter(Protocol):
    def wait(self, work: Any, what: str) -> None: ...

    def start(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any: ...


def _shape_hash(shape: tuple[int, ...]) -> int:
    # A deterministic 63-bit hash (Python's int-tuple hash is not salted, but spell it out).
    h = 1469598103934665603
    for d in (len(shape), *shape):
        h = ((h ^ d) * 1099511628211) & ((1 << 63) - 1)
    return h


def build_header(
    shape: tuple[int, ...],
    dtype_code: int,
    scheme_code: int,
    block: int,
    op_code: int,
    finite: bool,
    piece: int,
    device: torch.device,
) -> torch.Tensor:
    """This rank's header as an int64 tensor on ``device``."""
    n = 1
    for d in shape:
        n *= d
    dims = list(shape[:_SHOWN_DIMS]) + [-1] * (_SHOWN_DIMS - min(len(shape), _SHOWN_DIMS))
    words = [_MAGIC, n, dtype_code, scheme_code, block, op_code, int(finite), piece]
    words += [len(shape), _shape_hash(shape), *dims]
    return torch.tensor(words, dtype=torch.int64, device=device)


def exchange_headers(
    header: torch.Tensor,
    rank: int,
    world: int,
    group: Any,
    dl: _Waiter,
    tag0: int = _TAG,
    what: str = "exchanging headers",
) -> list[list[int]]:
    """Ring all-gather of a tiny int64 tensor per rank (``world - 1`` hops): the headers, and
    at the end of the ring each rank's status, so that all ranks fail or succeed together."""
    prev, nxt = (rank - 1) % world, (rank + 1) % world
    gprev = dist.get_global_rank(group, prev) if group is not None else prev
    gnext = dist.get_global_rank(group, nxt) if group is not None else nxt
    headers: dict[int, list[int]] = {rank: header.tolist()}
    current = header
    for step in range(world - 1):
        incoming = torch.empty_like(header)
        tag = tag0 + step
        recv = dl.start(
            f"{what} with rank {prev}",
            dist.irecv,
            incoming,
            src=gprev,
            group=group,
            tag=tag,
        )
        send = dl.start(
            f"{what} with rank {nxt}",
            dist.isend,
            current,
            dst=gnext,
            group=group,
            tag=tag,
        )
        dl.wait(recv, f"{what} with rank {prev}")
        dl.wait(send, f"{what} with rank {nxt}")
        headers[(rank - step - 1) % world] = incoming.tolist()
        current = incoming
    return [headers[r] for r in range(world)]


def _shape_of(h: list[int]) -> str:
    ndim = h[_NDIM]
    if not 0 <= ndim <= 64:
        return f"<a header claiming {ndim} dimensions>"
    dims = h[_DIMS : _DIMS + min(ndim, _SHOWN_DIMS)]
    more = ", ..." if ndim > _SHOWN_DIMS else ""
    return "(" + ", ".join(str(d) for d in dims) + ("," if ndim == 1 else "") + more + ")"


def check_headers(
    headers: list[list[int]],
    dtypes: tuple[torch.dtype, ...],
    schemes: tuple[str, ...],
    ops: tuple[str, ...],
    allow_nonfinite: bool = False,
) -> bool:
    """Raises the same ``ValueError`` on every rank when the ranks' arguments differ, a header
    is not one of ours, or some rank holds NaN/inf (every rank holds every header).

    With ``allow_nonfinite``, NaN/inf is no error: returns whether some rank holds them."""
    for r, h in enumerate(headers):
        if len(h) != HEADER_WORDS or h[0] != _MAGIC:
            raise ValueError(
                f"all_reduce: rank {r} sent a header that is not ferrolm's (magic "
                f"{h[0] if h else None:#x}, expected {_MAGIC:#x}); every rank must run the "
                "same ferrolm version"
            )
    first = headers[0]

    def show(i: int, v: int) -> str:
        table: dict[int, tuple[Any, ...]] = {2: dtypes, 3: schemes, 5: ops}
        if i in table:
            return str(table[i][v]) if 0 <= v < len(table[i]) else f"<code {v}>"
        return str(v)

    for r, h in enumerate(headers):
        for i, name in enumerate(_NAMES):
            if name != "finite" and h[i] != first[i]:
                shapes = f" (shapes {_shape_of(first)} and {_shape_of(h)})" if i == 1 else ""
                raise ValueError(
                    f"all_reduce arguments differ across ranks: rank 0 has {name} "
                    f"{show(i, first[i])}, rank {r} has {show(i, h[i])}{shapes}; every rank must "
                    "pass a tensor of the same shape and dtype with the same op/scheme/block_size"
                )
        if h[_NDIM:] != first[_NDIM:]:
            raise ValueError(
                f"all_reduce arguments differ across ranks: rank 0 has shape "
                f"{_shape_of(first)}, rank {r} has shape {_shape_of(h)}; every rank must "
                "pass a tensor of the same shape and dtype"
            )
    bad = [r for r, h in enumerate(headers) if h[6] == 0]
    if bad and not allow_nonfinite:
        raise ValueError(
            f"`tensor` must be finite on every rank, but rank(s) {bad} hold NaN or infinite "
            "values (int8 codes cannot carry them); nothing was reduced"
        )
    return bool(bad)
