"""DiLoCo with the int8 all-reduce under ``torchrun``, with a checkpoint to resume from.

Run (one process per rank; torchrun sets ``OMP_NUM_THREADS=1`` per rank, and torch and
ferrolm's native threads both follow it)::

    torchrun --standalone --nproc-per-node 2 examples/diloco_torchrun.py --steps 300
    # stop it, then continue from the last outer step:
    torchrun --standalone --nproc-per-node 2 examples/diloco_torchrun.py --steps 600 \\
        --checkpoint 'ckpt-{rank}.pt'

Each rank trains its replica of a small MLP on its own data shard with AdamW; every
``--sync-every`` steps the replicas average their pseudo-gradients with ``ferrolm.comm``'s int8
ring all-reduce and take an outer Nesterov step.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist

import ferrolm
from ferrolm import comm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sync-every", type=int, default=25)
    parser.add_argument("--checkpoint", help="resume from / save to this file ({rank}: per rank)")
    parser.add_argument("--report", help="write this rank's summary to this path ({rank})")
    args = parser.parse_args()
    dist.init_process_group("gloo")  # torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR...
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 1))
    inner = torch.optim.AdamW(model.parameters(), lr=2e-3)
    diloco = comm.DiLoCo(model, inner, sync_every=args.sync_every, timeout=60.0)
    start = 0
    # Per rank: the inner optimizer's moments differ between ranks.
    path = args.checkpoint.format(rank=rank) if args.checkpoint else None
    if path and os.path.exists(path):
        ckpt = torch.load(path)
        model.load_state_dict(ckpt["model"])
        inner.load_state_dict(ckpt["inner"])
        diloco.load_state_dict(ckpt["diloco"])
        start = diloco.inner_steps
    losses = []
    for step in range(start, args.steps):
        # The data of a step depends on (rank, step) only, so a resumed run sees the same.
        data = torch.Generator().manual_seed(1_000_003 * rank + step)
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
                outer = diloco.outer_steps
                print(f"step {step + 1:4d}  outer step {outer:3d}  loss {loss.item():.4f}")
            if path:  # right after an outer step: a resumed run continues bit-identically
                state = {
                    "model": model.state_dict(),
                    "inner": inner.state_dict(),
                    "diloco": diloco.state_dict(),
                }
                torch.save(state, path)
    if args.report:
        params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        summary = {
            "rank": rank,
            "world": world,
            "torch_threads": torch.get_num_threads(),
            "ferrolm_threads": ferrolm.get_num_threads(),
            "outer_steps": diloco.outer_steps,
            "losses": losses,
            "checksum": float(params.double().sum()),
        }
        with open(args.report.format(rank=rank), "w") as f:
            json.dump(summary, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
