"""DiLoCo with the int8 all-reduce on 2 local processes (gloo on 127.0.0.1).

Each process trains its own replica of a small MLP on its own data shard with AdamW; every
``sync_every`` steps the replicas average their pseudo-gradients with ``ferrolm.comm``'s int8
ring all-reduce and take an outer Nesterov step. Run: ``python examples/diloco_two_processes.py``
(``examples/diloco_torchrun.py`` is the same under ``torchrun``, with checkpoints).
"""

from __future__ import annotations

import argparse
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ferrolm import comm


def train(rank: int, world: int, port: int, steps: int, sync_every: int) -> None:
    """One process: join the gloo group on 127.0.0.1, train, leave."""
    torch.set_num_threads(1)  # ferrolm's native threads follow torch's
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    run(rank, steps, sync_every)
    dist.destroy_process_group()


def run(rank: int, steps: int, sync_every: int) -> list[float]:
    """DiLoCo training inside an initialised group; returns the loss at each outer step."""
    torch.manual_seed(0)  # same initial model everywhere (DiLoCo also broadcasts rank 0's)
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 1))
    data = torch.Generator().manual_seed(100 + rank)  # each rank sees its own shard

    inner = torch.optim.AdamW(model.parameters(), lr=2e-3)
    diloco = comm.DiLoCo(model, inner, outer_lr=0.7, outer_momentum=0.9, sync_every=sync_every)
    losses = []
    for step in range(1, steps + 1):
        x = torch.randn(64, 32, generator=data)
        with torch.no_grad():
            y = teacher(x)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        synced = diloco.step()  # inner AdamW step; every `sync_every` steps: int8 outer step
        diloco.zero_grad()
        if synced:
            losses.append(loss.item())
            if rank == 0:
                print(f"step {step:4d}  outer step {diloco.outer_steps:3d}  loss {loss.item():.4f}")
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sync-every", type=int, default=25)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = 2
    mp.spawn(train, args=(world, port, args.steps, args.sync_every), nprocs=world, join=True)


if __name__ == "__main__":
    main()
