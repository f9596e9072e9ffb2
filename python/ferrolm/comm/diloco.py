"""DiLoCo (local SGD with an outer Nesterov step) and a DDP communication hook, both on the
int8 ring all-reduce.

DiLoCo: every rank takes ``sync_every`` (H) steps of its own inner optimizer; then the ranks
average the pseudo-gradient ``start_params - current_params`` with one int8 all-reduce and
apply it to the start parameters with outer SGD (Nesterov momentum), and every rank continues
from the same new parameters. Communication drops by a factor H (times 4 for int8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import GradBucket

from ferrolm.comm.allreduce import all_reduce
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
        self.scheme = scheme
        self.timeout = timeout
        self.block_size = block_size
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
        if self.scheme is None:
            dist.all_reduce(flat, group=self.group)
            flat /= dist.get_world_size(self.group)
        else:
            all_reduce(
                flat,
                group=self.group,
                op="avg",
                scheme=self.scheme,
                timeout=self.timeout,
                block_size=self.block_size,
            )
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


@dataclass
class Int8HookState:
    """State of :func:`int8_allreduce_hook`: which group, scheme and timeout to use."""

    group: Any = None
    scheme: str = "blockwise"
    timeout: float = 60.0
    block_size: int = DEFAULT_BLOCK_SIZE


def int8_allreduce_hook(
    state: Int8HookState, bucket: GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: averages each gradient bucket with the int8 ring all-reduce.

    The reduction runs synchronously inside the hook (no overlap with the rest of backward).

    Example:
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
        >>> ddp.register_comm_hook(Int8HookState(), int8_allreduce_hook)
        >>> ddp(torch.randn(8, 4)).sum().backward()  # the gradients were all-reduced in int8
        >>> dist.destroy_process_group()
    """
    buf = bucket.buffer()
    all_reduce(
        buf,
        group=state.group,
        op="avg",
        scheme=state.scheme,
        timeout=state.timeout,
        block_size=state.block_size,
    )
    fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    fut.set_result(buf)
    return fut


# DDP checks the hook's annotations as objects; `from __future__ import annotations` made
# them strings, so put the real ones back.
int8_allreduce_hook.__annotations__.update(
    {"bucket": GradBucket, "return": torch.futures.Future[torch.Tensor]}
)
