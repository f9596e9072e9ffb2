"""DiLoCo (local SGD with an outer Nesterov step) and a DDP communication hook, both on the
int8 ring all-reduce.

DiLoCo: every rank takes ``sync_every`` (H) steps of its own inner optimizer; then the ranks
average the pseudo-gradient ``start_params - current_params`` with one int8 all-reduce and
apply it to the start parameters with outer SGD (Nesterov momentum), and every rank continues
from the same new parameters. Communication drops by a factor H (times 4 for int8).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import GradBucket

from ferrolm.comm import _work
from ferrolm.comm._transport import transport
from ferrolm.comm.allreduce import DEFAULT_PIECE, _validate, all_reduce, reduce_
from ferrolm.comm.quantize import DEFAULT_BLOCK_SIZE, SCHEMES

__all__ = ["DiLoCo", "Int8HookState", "int8_allreduce_hook"]


class DiLoCo:
    """Wraps a model and its inner optimizer for DiLoCo training over a process group.

    Args:
        model: The local replica (its trainable parameters are synchronised).
        inner_optimizer: The optimizer that steps every batch (e.g. AdamW).
        outer_lr: Outer SGD learning rate (DiLoCo / INTELLECT-1: 0.7).
        outer_momentum: Outer Nesterov momentum (0.9).
        sync_every: Inner steps between outer steps (H).
        group: Process group (default: the world group).
        scheme: Quantization scheme of the all-reduce, or ``None`` for exact fp32
            ``dist.all_reduce`` (a baseline).
        timeout: Seconds for each all-reduce (a dead peer raises ``CommTimeoutError``; the
            model then keeps its local parameters).
        block_size: Block size of the ``"blockwise"`` scheme.
        broadcast_initial: Copy rank 0's parameters to every rank first (ranks must start equal).

    Example:
        Every rank runs the same loop (here a group of one rank, see :func:`all_reduce`):

        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> model = torch.nn.Linear(4, 1)
        >>> diloco = DiLoCo(model, torch.optim.AdamW(model.parameters(), 1e-3), sync_every=50)
        >>> for _ in range(100):
        ...     model(torch.randn(8, 4)).square().mean().backward()
        ...     synced = diloco.step()  # inner step; True when it also synced all ranks
        ...     diloco.zero_grad()
        >>> diloco.outer_steps
        2
        >>> dist.destroy_process_group()
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inner_optimizer: torch.optim.Optimizer,
        outer_lr: float = 0.7,
        outer_momentum: float = 0.9,
        sync_every: int = 100,
        group: Any = None,
        scheme: str | None = "blockwise",
        timeout: float = 60.0,
        block_size: int = DEFAULT_BLOCK_SIZE,
        broadcast_initial: bool = True,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(inner_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"`inner_optimizer` must be a torch.optim.Optimizer, "
                f"got {type(inner_optimizer).__name__}"
            )
        if not isinstance(sync_every, int) or sync_every < 1:
            raise ValueError(f"`sync_every` must be a positive int, got {sync_every!r}")
        if not outer_lr > 0:
            raise ValueError(f"`outer_lr` must be positive, got {outer_lr!r}")
        if not 0 <= outer_momentum < 1:
            raise ValueError(f"`outer_momentum` must be in [0, 1), got {outer_momentum!r}")
        if scheme is not None and scheme not in SCHEMES:
            raise ValueError(
                f"`scheme` must be one of {', '.join(SCHEMES)} or None; got {scheme!r}"
            )
        if not dist.is_initialized():
            raise RuntimeError("DiLoCo needs an initialised torch.distributed process group")
        self.model = model
        self.inner = inner_optimizer
        self.sync_every = sync_every
        self.group = group
        # The int8 ring's settings, as the DDP hook takes them; None: exact fp32 all-reduce.
        self.ring = None if scheme is None else Int8HookState(group, scheme, timeout, block_size)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("`model` has no trainable parameters")
        if broadcast_initial:
            src = dist.get_global_rank(group, 0) if group is not None else 0
            for p in self.params:
                dist.broadcast(p.data, src=src, group=group)
        # The outer (global) parameters, in fp32, and their Nesterov SGD.
        self.outer_params = [p.detach().clone().float() for p in self.params]
        self.outer = torch.optim.SGD(
            self.outer_params, lr=outer_lr, momentum=outer_momentum, nesterov=True
        )
        self.inner_steps = 0
        self.outer_steps = 0

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs beyond the model and the inner optimizer: a copy of the outer
        parameters, the outer optimizer's state (Nesterov momentum) and the step counts.

        Save it with ``model.state_dict()`` and ``inner_optimizer.state_dict()``; a run resumed
        from the three (same ``sync_every``, same data order) continues bit-identically.

        Returns:
            A dict of tensors and ints, for ``torch.save``.
        """
        return {
            "outer_params": [o.detach().clone() for o in self.outer_params],
            "outer_optimizer": copy.deepcopy(self.outer.state_dict()),
            "inner_steps": self.inner_steps,
            "outer_steps": self.outer_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned (copies it in; ``state`` is not kept).

        Args:
            state: A dict from :meth:`state_dict` of a DiLoCo over the same parameters.

        Raises:
            ValueError: a key is missing, or the parameters' number, shapes or dtypes differ.
            TypeError: a field has the wrong type.
        """
        if not isinstance(state, dict):
            raise TypeError(f"`state` must be a dict from state_dict(), got {type(state).__name__}")
        missing = {"outer_params", "outer_optimizer", "inner_steps", "outer_steps"} - set(state)
        if missing:
            raise ValueError(f"`state` lacks {sorted(missing)}: not a DiLoCo.state_dict()")
        params = state["outer_params"]
        if not isinstance(params, (list, tuple)) or len(params) != len(self.outer_params):
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(
                f"`state['outer_params']` must hold {len(self.outer_params)} tensors, got {got}"
            )
        for i, (o, p) in enumerate(zip(self.outer_params, params)):
            if not isinstance(p, torch.Tensor) or p.shape != o.shape or p.dtype != o.dtype:
                shown = (p.dtype, tuple(p.shape)) if isinstance(p, torch.Tensor) else type(p)
                raise ValueError(
                    f"`state['outer_params'][{i}]` must be {o.dtype} of shape "
                    f"{tuple(o.shape)}, got {shown}"
                )
        counts = {k: state[k] for k in ("inner_steps", "outer_steps")}
        for k, v in counts.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise TypeError(f"`state[{k!r}]` must be a non-negative int, got {v!r}")
        self.outer.load_state_dict(state["outer_optimizer"])
        with torch.no_grad():
            for o, p in zip(self.outer_params, params):
                o.copy_(p)
        self.inner_steps = counts["inner_steps"]
        self.outer_steps = counts["outer_steps"]

    def zero_grad(self) -> None:
        """Clears the inner gradients."""
        self.inner.zero_grad(set_to_none=True)

    def step(self) -> bool:
        """One inner optimizer step; every ``sync_every``-th also runs the outer step.

        Returns:
            Whether this call synchronised the ranks.
        """
        self.inner.step()
        self.inner_steps += 1
        if self.inner_steps % self.sync_every:
            return False
        self.sync()
        return True

    @torch.no_grad()
    def sync(self) -> None:
        """The outer step: all-reduce the pseudo-gradients and apply outer Nesterov SGD."""
        deltas = [o - p.detach().float() for o, p in zip(self.outer_params, self.params)]
        flat = torch.cat([d.reshape(-1) for d in deltas])
        if self.ring is None:
            dist.all_reduce(flat, group=self.group)
            flat /= dist.get_world_size(self.group)
        else:
            self.ring.average(flat)
        offset = 0
        for o in self.outer_params:
            n = o.numel()
            o.grad = flat[offset : offset + n].view_as(o).clone()
            offset += n
        self.outer.step()
        self.outer.zero_grad(set_to_none=True)
        for o, p in zip(self.outer_params, self.params):
            p.copy_(o)
        self.outer_steps += 1


class Int8HookState:
    """Settings of the int8 ring all-reduce: the state of :func:`int8_allreduce_hook`, and what
    :class:`DiLoCo` averages its pseudo-gradients with.

    Args:
        process_group: The group (default: the world group), torch's name for it in hook
            states. ``group=`` is a deprecated alias.
        scheme: Quantization scheme (see :func:`ferrolm.comm.quantize`).
        timeout: Seconds for each bucket's all-reduce.
        block_size: Block size of the ``"blockwise"`` scheme.
        error_feedback: Keep each bucket's quantization error and add it to the same bucket
            at the next step, so that the errors of successive steps cancel instead of
            accumulating (one extra dequantization per quantization; float32 residuals, 4
            bytes per gradient value). A step with NaN/inf drops the residuals.
    """

    def __init__(
        self,
        process_group: Any = None,
        scheme: str = "blockwise",
        timeout: float = 60.0,
        block_size: int = DEFAULT_BLOCK_SIZE,
        error_feedback: bool = False,
        *,
        group: Any = None,
    ) -> None:
        if group is not None:
            warnings.warn(
                "Int8HookState(group=...) is deprecated: use process_group=, torch's name",
                DeprecationWarning,
                stacklevel=2,
            )
            if process_group is not None and process_group is not group:
                raise ValueError("pass `process_group` or its old name `group`, not both")
            process_group = group
        if scheme not in SCHEMES:
            raise ValueError(f"`scheme` must be one of {', '.join(SCHEMES)}; got {scheme!r}")
        self.process_group = process_group
        self.scheme = scheme
        self.timeout = timeout
        self.block_size = block_size
        self.error_feedback = bool(error_feedback)
        #: Per bucket index: the float32 residual of error feedback.
        self.residuals: dict[int, torch.Tensor] = {}

    @property
    def group(self) -> Any:
        """Deprecated alias of :attr:`process_group`."""
        warnings.warn(
            "Int8HookState.group is deprecated: use .process_group, torch's name",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.process_group

    def __repr__(self) -> str:
        return (
            f"Int8HookState(process_group={self.process_group!r}, scheme={self.scheme!r}, "
            f"timeout={self.timeout!r}, block_size={self.block_size!r}, "
            f"error_feedback={self.error_feedback!r})"
        )

    def average(self, tensor: torch.Tensor) -> None:
        """Averages ``tensor`` in place over the group with the int8 ring all-reduce."""
        all_reduce(
            tensor,
            dist.ReduceOp.AVG,
            self.process_group,
            scheme=self.scheme,
            timeout=self.timeout,
            block_size=self.block_size,
        )

    def _residual(self, index: int, buf: torch.Tensor) -> torch.Tensor | None:
        if not self.error_feedback:
            return None
        r = self.residuals.get(index)
        # DDP rebuilds its buckets after the first step: a bucket of another size starts over.
        if r is None or r.numel() != buf.numel() or r.device != buf.device:
            r = torch.zeros(buf.numel(), dtype=torch.float32, device=buf.device)
            self.residuals[index] = r
        return r


def int8_allreduce_hook(
    state: Int8HookState, bucket: GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: averages each gradient bucket with the int8 ring all-reduce.

    Behaves like torch's own hooks: the reduction runs on a worker thread while backward
    goes on (buckets in the order DDP issues them, the same on every rank) and the returned
    future completes there; a NaN/inf in any rank's bucket makes the whole result non-finite
    on every rank (NaN where it went), so ``torch.amp.GradScaler`` skips the step everywhere
    instead of the hook raising inside ``backward()``. A timeout or a malformed piece fails
    the future, and DDP raises it.

    Example:
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
        >>> ddp.register_comm_hook(Int8HookState(), int8_allreduce_hook)
        >>> ddp(torch.randn(8, 4)).sum().backward()  # the gradients were all-reduced in int8
        >>> dist.destroy_process_group()
    """
    buf = bucket.buffer()
    group = state.process_group
    _validate(buf, "avg", state.scheme, state.block_size, state.timeout, DEFAULT_PIECE)
    nccl = transport(buf, group)
    residual = state._residual(bucket.index(), buf)

    # The worker thread must order its kernels after backward's, on the same stream.
    stream = torch.cuda.current_stream(buf.device) if buf.is_cuda else None

    def run() -> torch.Tensor:
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            return reduce_(
                buf,
                "avg",
                group,
                state.scheme,
                state.block_size,
                DEFAULT_PIECE,
                float(state.timeout),
                nccl,
                propagate=True,
                residual=residual,
            )

    fut: torch.futures.Future[torch.Tensor] = _work.submit(run)
    return fut


# DDP checks the hook's annotations as objects; `from __future__ import annotations` made
# them strings, so put the real ones back.
int8_allreduce_hook.__annotations__.update(
    {"bucket": GradBucket, "return": torch.futures.Future[torch.Tensor]}
)
