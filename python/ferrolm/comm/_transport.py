"""The pieces of ``all_reduce`` that face the caller and the transport: the deadline of one
call and its error, what ``op`` may be, and which backend of the group carries the tensor."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["CommTimeoutError", "Deadline", "op_name", "transport"]

#: Longest wait handed to one ``Work.wait`` (seconds): gloo converts it to milliseconds.
_MAX_WAIT = 1e8
#: What ``op`` may be, besides ``dist.ReduceOp.SUM``/``AVG``.
_OP_NAMES = {"sum": "sum", "avg": "avg", "mean": "avg"}


class CommTimeoutError(TimeoutError):
    """A peer did not deliver within the deadline (it died, stalled or left the group).

    After this error the process group may still hold unmatched messages of the failed call:
    destroy it and build a new one before communicating again. The caller's tensor is intact.
    """


class Deadline:
    """The deadline of one call: every wait of the call shares it."""

    def __init__(self, timeout: float, nccl: bool) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout
        self.nccl = nccl

    def wait(self, work: Any, what: str) -> None:
        left = self.end - time.monotonic()
        if self.nccl:
            # NCCL's wait() only orders streams; poll so the CPU deadline holds.
            while not work.is_completed():
                if time.monotonic() > self.end:
                    raise self._timeout(what, None)
                time.sleep(0.0002)
            work.wait()
            return
        if left <= 0:
            if work.is_completed():
                work.wait()
                return
            raise self._timeout(what, None)
        try:
            work.wait(timedelta(seconds=min(left, _MAX_WAIT)))
        except RuntimeError as e:  # gloo: "Timed out waiting ..." or "Connection closed by peer"
            raise self._timeout(what, e) from e

    def start(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Posts a send or receive. Our arguments are valid, so a ``RuntimeError`` here is the
        transport's: gloo raises "Connection closed by peer" at once when the peer has already
        exited, which is the same failure as a peer that dies during the wait."""
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:
            raise self._timeout(what, e) from e

    def _timeout(self, what: str, cause: Exception | None) -> CommTimeoutError:
        if cause is None or "Timed out" in str(cause):
            head = f"no result within timeout={self.timeout:g} s while {what}"
        else:
            head = f"lost the connection while {what} ({cause})"
        return CommTimeoutError(
            f"ferrolm.comm.all_reduce: {head}; a peer died, stalled or called with other "
            "arguments. The input tensor is unchanged."
        )


def op_name(op: Any) -> str:
    """``"sum"`` or ``"avg"`` for what ``dist.all_reduce`` users pass as ``op``."""
    if isinstance(op, str):
        name = _OP_NAMES.get(op.lower())
        if name is not None:
            return name
    elif op == dist.ReduceOp.SUM:
        return "sum"
    elif op == dist.ReduceOp.AVG:
        return "avg"
    hint = ""
    if isinstance(op, dist.ProcessGroup):
        hint = " (the second argument is `op`, as in torch.distributed.all_reduce: pass group=)"
    raise ValueError(
        "`op` must be torch.distributed.ReduceOp.SUM or .AVG, or one of 'sum', 'mean', 'avg'; "
        f"got {op!r}{hint}"
    )


def transport(tensor: torch.Tensor, group: Any) -> bool:
    """Whether ``tensor`` travels over NCCL on ``group`` (else gloo or another CPU backend).
    Reads backend strings with a device map (``"cpu:gloo,cuda:nccl"``, the default group)."""
    spec = str(dist.get_backend(group)).lower()
    device = tensor.device.type
    if ":" in spec:
        backends = dict(p.split(":", 1) for p in spec.split(",") if ":" in p)
    else:
        backends = {"cpu": spec, "cuda": spec}
    backend = backends.get(device)
    if backend is None:
        raise RuntimeError(
            f"`tensor` is on {device}, but the group's backend {spec!r} has none for it"
        )
    if backend == "nccl" and device != "cuda":
        raise RuntimeError("`tensor` must be a CUDA tensor on an NCCL group")
    if backend == "gloo" and device == "cuda":
        raise RuntimeError("`tensor` must be a CPU tensor on a gloo group (use NCCL for CUDA)")
    return backend == "nccl"
