"""Int8 ring all-reduce over the caller's ``torch.distributed`` process group.

Algorithm (world size ``W``, the flat tensor cut into ``W`` chunks, each chunk into pieces):

* header: every rank passes a small header around the ring, so each rank sees everyone's
  shape, dtype, scheme, block size, op and a "finite" flag, and all ranks raise the same clear
  error on a mismatch or a NaN/inf before any data moves (``_header.py``);
* reduce-scatter (``W - 1`` steps): rank ``r`` sends chunk ``r - s`` and receives chunk
  ``r - s - 1``; every outgoing partial sum is quantized, every incoming one is
  dequantize-accumulated in fp32 onto the local values;
* the owner of a finished chunk (``r + 1``) divides it (``op="avg"``), quantizes it ONCE and
  adopts the dequantized value;
* all-gather (``W - 1`` steps): the owner's bytes are forwarded verbatim around the ring, and
  every rank dequantizes the same bytes, so all ranks end bit-identical.

Every received piece is checked completely (length and every float parameter, in the core)
before it is decoded. A piece that cannot be quantized (NaN/inf, a float32 overflow) or that
arrives malformed is replaced by a "poisoned" piece, which travels on to every rank, so every
rank raises and none decodes garbage.

Everything is streamed per piece (receives posted ahead), so quantization overlaps transfer.
The caller's tensor is written once, at the very end, and only on success.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ferrolm import _native
from ferrolm.comm import _work
from ferrolm.comm._header import STATUS_TAG, build_header, check_headers, exchange_headers
from ferrolm.comm._transport import CommTimeoutError, Deadline, op_name, transport
from ferrolm.comm._work import AllReduceWork
from ferrolm.comm.quantize import DEFAULT_BLOCK_SIZE, SCHEMES, check_scheme, packed_len, quantize

__all__ = ["OPS", "AllReduceWork", "CommTimeoutError", "all_reduce"]

#: The reductions, by their wire code (the header carries the index).
OPS = ("avg", "sum")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Values per streamed piece: big enough that per-message overhead is small, small enough
#: that several pieces are in flight while one is being (de)quantized.
DEFAULT_PIECE = 1 << 20
_WINDOW = 16  # receives posted ahead: keeps a slow, deep link busy (16 x ~1 MB)


@dataclass(frozen=True)
class _Msg:
    phase: int  # 0 reduce-scatter, 1 all-gather
    step: int
    piece: int
    start: int  # element range in the flat tensor
    stop: int

    def tag(self, world: int) -> int:
        return ((self.phase * world + self.step) << 20) + self.piece


def _validate(
    tensor: Any, op: str, scheme: str, block_size: int, timeout: float, piece_size: int
) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"`tensor` must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _DTYPES:
        raise TypeError(f"`tensor` must be float32, float16 or bfloat16, got {tensor.dtype}")
    if tensor.numel() == 0:
        raise ValueError(f"`tensor` must be non-empty, got shape {tuple(tensor.shape)}")
    if not tensor.is_contiguous():
        raise ValueError(
            "`tensor` must be contiguous (the result is written in place); "
            "call .contiguous() and reduce that"
        )
    check_scheme(scheme, block_size)
    try:
        finite = isinstance(timeout, (int, float)) and math.isfinite(timeout)
    except OverflowError:  # an int past float's range: named below, not a bare OverflowError
        finite = False
    if not finite or timeout <= 0:
        raise ValueError(f"`timeout` must be a positive number of seconds, got {timeout!r}")
    if not isinstance(piece_size, int) or piece_size < 1 or piece_size >= 1 << 40:
        raise ValueError(f"`piece_size` must be a positive int below 2**40, got {piece_size!r}")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "`all_reduce` needs an initialised torch.distributed process group "
            "(call torch.distributed.init_process_group first)"
        )


def _is_finite(x: torch.Tensor) -> bool:
    if x.is_cuda:
        return bool(torch.isfinite(x).all())
    return _native.comm.all_finite(x.numpy())


def _bounds(n: int, world: int) -> list[tuple[int, int]]:
    base, extra = divmod(n, world)
    out, start = [], 0
    for c in range(world):
        stop = start + base + (1 if c < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def _pieces(start: int, stop: int, piece: int) -> list[tuple[int, int]]:
    return [(a, min(a + piece, stop)) for a in range(start, stop, piece)]


def _quantize_into(x: torch.Tensor, scheme: str, block: int) -> torch.Tensor:
    if x.numel() == 0:
        return torch.empty(0, dtype=torch.uint8, device=x.device)
    if x.is_cuda:
        return quantize(x, scheme, block).data
    out = torch.empty(packed_len(scheme, block, x.numel()), dtype=torch.uint8)
    _native.comm.quantize_packed(scheme, block, x.numpy(), out.numpy())
    return out


def _poison(n: int, device: torch.device) -> torch.Tensor:
    # All-ones bytes: the first parameter reads as NaN, which no valid packed piece has.
    return torch.full((n,), 0xFF, dtype=torch.uint8, device=device)


def _is_poison(data: torch.Tensor) -> bool:
    if data.is_cuda:
        return bool((data[:4] == 0xFF).all())
    return _native.comm.is_poison(data.numpy())


def _malformed(data: torch.Tensor, scheme: str, block: int, n: int) -> str | None:
    """Why a received (non-poisoned) piece of ``n`` values must not be decoded, or ``None``.
    Pieces come from a peer: its length and every float parameter are checked by the core."""
    if data.numel() != packed_len(scheme, block, n):
        return f"{data.numel()} bytes for {n} values"
    head = data[: data.numel() - n]
    try:
        _native.comm.check_params(scheme, block, head.cpu().numpy(), n)
    except ValueError as e:
        return str(e)
    return None


def _quantize_or_poison(x: torch.Tensor, scheme: str, block: int) -> tuple[torch.Tensor, bool]:
    try:
        return _quantize_into(x, scheme, block), False
    except ValueError:  # NaN or infinity in this piece (input or partial sum)
        return _poison(packed_len(scheme, block, x.numel()), x.device), True


def _decode_into(data: torch.Tensor, scheme: str, block: int, out: torch.Tensor, acc: bool) -> None:
    if out.numel() == 0:
        return
    if out.is_cuda:
        from ferrolm.comm.quantize import QuantizedTensor, _decode

        q = QuantizedTensor(data, scheme, torch.Size([out.numel()]), torch.float32, block)
        _decode(q, out, accumulate=acc)
        return
    _native.comm.dequantize_packed(scheme, block, data.numpy(), out.numpy(), acc)


def all_reduce(
    tensor: torch.Tensor,
    op: Any = dist.ReduceOp.SUM,
    group: Any = None,
    async_op: bool = False,
    *,
    scheme: str = "blockwise",
    timeout: float = 60.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    piece_size: int = DEFAULT_PIECE,
) -> Any:
    """All-reduces ``tensor`` in place with int8 codes on the wire (about 4x fewer bytes).

    The arguments are ``torch.distributed.all_reduce``'s, in its order and with its default
    (sum); the ring's own settings are keyword-only.

    Args:
        tensor: Contiguous float32/float16/bfloat16 tensor, CPU for gloo, CUDA for NCCL
            (a group with both, such as ``"cpu:gloo,cuda:nccl"``, takes either). The same shape
            and dtype on every rank. Overwritten with the result only on success.
        op: ``dist.ReduceOp.SUM`` (default) or ``dist.ReduceOp.AVG``, or the strings
            ``"sum"``, ``"avg"``/``"mean"``.
        group: The process group (default: the world group).
        async_op: Return at once with a work object whose ``wait()`` returns when ``tensor``
            holds the result (and raises the reduction's error). The ring then runs on one
            worker thread, in issue order; do not touch ``tensor`` before ``wait()``.
        scheme: ``"blockwise"`` (default), ``"minmax"`` or ``"intellect"``; see
            :func:`ferrolm.comm.quantize`.
        timeout: Seconds for the whole call. A peer that dies or stalls makes every other
            rank raise :class:`CommTimeoutError` within about this time.
        block_size: Values per block for ``"blockwise"``.
        piece_size: Values per streamed message.

    Returns:
        ``tensor``, holding the reduced values, bit-identical on every rank; with
        ``async_op=True`` an :class:`AllReduceWork` (``wait()``, ``is_completed()``,
        ``get_future()``).

    Raises:
        TypeError: not a tensor / unsupported dtype.
        ValueError: empty, non-contiguous, bad op/scheme/timeout, arguments that differ across
            ranks (shape, dtype, op, scheme, block or piece size), NaN/inf on any rank, a
            result that overflows ``tensor``'s dtype, or a malformed piece from a peer.
            NaN/inf policy: int8 codes cannot carry non-finite values, so EVERY rank raises
            ``ValueError`` and no tensor is changed; a group of one rank behaves the same. On
            CPU the check costs no extra pass: the quantizer detects them and the ring carries
            a "poisoned" piece to every rank; on CUDA a finiteness flag rides in the header
            exchange. (The DDP hook instead lets the non-finite values through, as torch's
            hooks do, so that ``GradScaler`` skips the step on every rank.) Overflow policy:
            the sum is accumulated in float32; when the result does not fit a
            float16/bfloat16 ``tensor`` (a sum of large values), every rank raises (they all
            hold the same bytes) and ``tensor`` is left unchanged rather than silently
            holding infinities.
        CommTimeoutError: a peer did not answer in time (the tensor is unchanged).
        RuntimeError: no initialised process group, or a tensor on a device that the group
            has no backend for.

    Example:
        Every rank runs the same code (``torchrun`` starts one process per rank); here the group
        has one rank, so the sum is the tensor itself, up to int8 rounding:

        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> grad = torch.randn(1_000_000)
        >>> out = all_reduce(grad, dist.ReduceOp.AVG, scheme="blockwise", timeout=30.0)
        >>> out is grad
        True
        >>> work = all_reduce(grad, async_op=True)  # overlaps with what follows
        >>> work.wait()
        True
        >>> dist.destroy_process_group()
    """
    name = op_name(op)
    _validate(tensor, name, scheme, block_size, timeout, piece_size)
    nccl = transport(tensor, group)
    args = (tensor, name, group, scheme, block_size, piece_size, float(timeout), nccl)
    if async_op:
        return AllReduceWork(_work.submit(lambda: reduce_(*args)))
    return _work.run_in_order(lambda: reduce_(*args))


def reduce_(
    tensor: torch.Tensor,
    op: str,
    group: Any,
    scheme: str,
    block_size: int,
    piece_size: int,
    timeout: float,
    nccl: bool,
    *,
    propagate: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """The reduction behind :func:`all_reduce` (arguments checked, run in issue order).

    ``propagate``: NaN/inf on any rank does not raise; every rank's result holds NaN where
    the non-finite values went (the whole tensor on CUDA), as a plain float all-reduce would
    hold inf/NaN there. ``residual`` (float32, ``tensor``'s size): error feedback; it is added
    to the input and then replaced by this call's quantization error, in input units.
    """
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    dl = Deadline(timeout, nccl)
    x = tensor.detach().reshape(-1)
    if x.dtype != torch.float32:
        x = x.float()
    if residual is not None:
        x = x + residual
        residual.zero_()
    # CUDA: one cheap device reduction up front. CPU: no extra pass over memory; a non-finite
    # value is caught by the quantizer and travels the ring as a poisoned piece instead.
    finite = _is_finite(x) if x.is_cuda else True
    header = build_header(
        tuple(tensor.shape),
        _DTYPES.index(tensor.dtype),
        SCHEMES.index(scheme),
        block_size if scheme == "blockwise" else 0,
        OPS.index(op),
        finite,
        piece_size,
        tensor.device,
    )
    headers = [header.tolist()]
    if world > 1:
        headers = exchange_headers(header, rank, world, group, dl)
    if check_headers(headers, _DTYPES, SCHEMES, OPS, allow_nonfinite=propagate):
        tensor.detach().fill_(float("nan"))  # CUDA, propagate: some rank holds NaN/inf
        return tensor
    if world == 1:
        # The same pipeline as a larger group, without peers: the owner of each finished piece
        # quantizes it once and adopts its decoded value (int8 rounding, NaN/inf refused).
        final = []
        for a, b in _pieces(0, x.numel(), piece_size):
            data, bad = _quantize_or_poison(x[a:b], scheme, block_size)
            _feedback(residual, x[a:b], data, bad, a, 1.0, scheme, block_size)
            final.append(((a, b), data))
        failed = any(_is_poison(data) for _, data in final)
        reason = None
    else:
        final, failed, reason = _ring(
            x, rank, world, group, op, scheme, block_size, piece_size, dl, residual
        )
    if reason is not None:
        raise ValueError(f"all_reduce: {reason}; every rank raises and nothing was changed")
    if failed and residual is not None:
        residual.zero_()  # a skipped step's error has no meaning for the next one
    if failed and not propagate:
        raise ValueError(
            "`tensor` must be finite on every rank, but some rank holds NaN or infinite values "
            "(or the sum overflows float32); int8 codes cannot carry them. Nothing was changed."
        )
    # Success: every piece's final bytes are here. Decode them straight into the caller's
    # tensor (through one float32 buffer when it is half precision).
    # detach(): the result is data, not part of any autograd graph (parameters work too).
    target = tensor.detach()
    out = target.view(-1) if tensor.dtype == torch.float32 else torch.empty_like(x)
    for (a, b), data in final:
        if failed and _is_poison(data):
            out[a:b].fill_(float("nan"))
        else:
            _decode_into(data, scheme, block_size, out[a:b], acc=False)
    if tensor.dtype == torch.float32:
        return tensor
    narrow = out.to(tensor.dtype)
    # Every rank decodes the same bytes, so every rank agrees on whether this overflows.
    if not propagate and not bool(torch.isfinite(narrow).all()):
        big = float(out.abs().max())
        raise ValueError(
            f"`tensor` ({tensor.dtype}): the {op} over {world} rank(s) reaches {big:.6g}, "
            f"beyond the largest finite {tensor.dtype} ({torch.finfo(tensor.dtype).max:.6g}); "
            'use op="avg" or reduce a float32 copy. Nothing was changed.'
        )
    target.copy_(narrow.view(tensor.shape))
    return tensor


def _feedback(
    residual: torch.Tensor | None,
    seg: torch.Tensor,
    data: torch.Tensor,
    bad: bool,
    start: int,
    weight: float,
    scheme: str,
    block: int,
) -> None:
    """Error feedback: adds ``weight * (seg - decoded(data))`` to ``residual[start:]``.

    Every quantization of the ring adds its error to the sum of one chunk, and the rank that
    quantized knows that error exactly; each rank keeps its own, so the next call's inputs
    carry all of them back and the errors of successive calls cancel instead of piling up.
    """
    if residual is None or bad or seg.numel() == 0:
        return
    decoded = torch.empty_like(seg)
    _decode_into(data, scheme, block, decoded, acc=False)
    residual[start : start + seg.numel()].add_(seg - decoded, alpha=weight)


def _ring(
    x: torch.Tensor,
    rank: int,
    world: int,
    group: Any,
    op: str,
    scheme: str,
    block: int,
    piece: int,
    dl: Deadline,
    residual: torch.Tensor | None = None,
) -> tuple[list[tuple[tuple[int, int], torch.Tensor]], bool, str | None]:
    """The final bytes of every piece, whether some piece was poisoned (NaN/inf somewhere:
    those pieces hold poison bytes on every rank), and why the call must fail when some rank
    received a malformed piece (then ``None`` only on ranks that know no more)."""
    bounds = _bounds(x.numel(), world)
    prev, nxt = (rank - 1) % world, (rank + 1) % world
    gprev = dist.get_global_rank(group, prev) if group is not None else prev
    gnext = dist.get_global_rank(group, nxt) if group is not None else nxt
    # Final bytes of every piece, kept (about 1 byte per value) and decoded into the caller's
    # tensor only once the whole call has succeeded.
    final: list[tuple[tuple[int, int], torch.Tensor]] = []
    scratch = torch.empty(min(piece, x.numel()), dtype=torch.float32, device=x.device)
    # The messages this rank receives, in the order it consumes them (the sender produces them
    # in the same order, which NCCL's in-order matching needs).
    expected: list[_Msg] = []
    for s in range(world - 1):
        c = (rank - s - 1) % world
        for p, (a, b) in enumerate(_pieces(*bounds[c], piece)):
            expected.append(_Msg(0, s, p, a, b))
    for t in range(world - 1):
        c = (rank - t) % world
        for p, (a, b) in enumerate(_pieces(*bounds[c], piece)):
            expected.append(_Msg(1, t, p, a, b))

    sends: deque[tuple[Any, torch.Tensor]] = deque()

    def send(msg: _Msg, data: torch.Tensor) -> None:
        # Never block here: a gloo send completes only once the peer posted the matching
        # receive, and the peer posts receives only as it consumes. Completed sends are
        # released as we go; the rest are awaited at the end.
        what = f"sending to rank {nxt}"
        work = dl.start(what, dist.isend, data, dst=gnext, group=group, tag=msg.tag(world))
        sends.append((work, data))
        while sends and sends[0][0].is_completed():
            sends.popleft()[0].wait()

    posted: deque[tuple[_Msg, Any, torch.Tensor]] = deque()
    next_post = 0

    def post_more() -> None:
        nonlocal next_post
        while next_post < len(expected) and len(posted) < _WINDOW:
            m = expected[next_post]
            size = packed_len(scheme, block, m.stop - m.start)
            buf = torch.empty(size, dtype=torch.uint8, device=x.device)
            what = f"receiving from rank {prev}"
            work = dl.start(what, dist.irecv, buf, src=gprev, group=group, tag=m.tag(world))
            posted.append((m, work, buf))
            next_post += 1

    post_more()
    poisoned = False
    reason: str | None = None
    # Step 0 of the reduce-scatter: this rank's own chunk, straight from the input.
    for p, (a, b) in enumerate(_pieces(*bounds[rank], piece)):
        data, bad = _quantize_or_poison(x[a:b], scheme, block)
        _feedback(residual, x[a:b], data, bad, a, 1.0, scheme, block)
        poisoned |= bad
        send(_Msg(0, 0, p, a, b), data)
    while posted:
        m, work, buf = posted.popleft()
        post_more()
        dl.wait(work, f"receiving from rank {prev}")
        if m.phase == 0:
            last = m.step == world - 2
            if _is_poison(buf):
                poisoned, data = True, buf
            else:
                # Partial sum of this piece = own values + decoded incoming partial sum (fp32).
                seg = scratch[: m.stop - m.start]
                seg.copy_(x[m.start : m.stop])
                try:
                    # The core checks the whole piece (length, every parameter) first.
                    _decode_into(buf, scheme, block, seg, acc=True)
                except ValueError as e:
                    # Forged or corrupted: poison it so that every rank fails, none decodes it.
                    reason = reason or f"rank {prev} sent a malformed piece ({e})"
                    data, bad = _poison(buf.numel(), buf.device), True
                else:
                    if last and op == "avg":
                        seg.div_(world)
                    # On the last step this rank owns the finished piece: it quantizes it once
                    # and everyone (this rank included) adopts the decoded value of these bytes.
                    data, bad = _quantize_or_poison(seg, scheme, block)
                    # The owner's error counts `world` times in a sum that is then averaged.
                    weight = float(world) if last and op == "avg" else 1.0
                    _feedback(residual, seg, data, bad, m.start, weight, scheme, block)
                poisoned |= bad
            if last:
                final.append(((m.start, m.stop), data))
                send(_Msg(1, 0, m.piece, m.start, m.stop), data)
            else:
                send(_Msg(0, m.step + 1, m.piece, m.start, m.stop), data)
        else:
            if _is_poison(buf):
                poisoned = True
            else:
                why = _malformed(buf, scheme, block, m.stop - m.start)
                if why is not None:
                    reason = reason or f"rank {prev} sent a malformed piece ({why})"
                    poisoned, buf = True, _poison(buf.numel(), buf.device)
            final.append(((m.start, m.stop), buf))
            if m.step < world - 2:
                send(_Msg(1, m.step + 1, m.piece, m.start, m.stop), buf)
    while sends:
        w, _ = sends.popleft()
        dl.wait(w, f"sending to rank {nxt}")
    # A malformed piece in the all-gather reaches only the ranks after the one that detected
    # it; one tiny exchange of every rank's status makes all ranks fail (or succeed) together.
    # 0: fine, 1: a poisoned piece (NaN/inf: the DDP hook lets it through), 2: malformed.
    code = 2 if reason is not None else int(poisoned)
    status = torch.tensor([code], dtype=torch.int64, device=x.device)
    flags = exchange_headers(status, rank, world, group, dl, STATUS_TAG, "agreeing on the result")
    malformed = [r for r, f in enumerate(flags) if f == [2]]
    if malformed and reason is None:
        reason = f"rank(s) {malformed} received a malformed piece"
    return final, any(f != [0] for f in flags), reason
