# Stubs of `ferrolm._native.prune` (`rust/python/src/prune.rs`): DivPrune token selection,
# wrapped by `ferrolm.prune`.

import numpy as np
import numpy.typing as npt

def amx_enabled() -> bool: ...
def divprune(
    features: npt.NDArray[np.float32],
    k: int,
    *,
    first: int | None = None,
    seed: int | None = None,
    greedy_order: bool = False,
    method: str = "auto",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
def seeded_first_picks(seed: int, batch: int, n: int) -> npt.NDArray[np.int64]: ...
def objective(features: npt.NDArray[np.float32], indices: npt.NDArray[np.int64]) -> float: ...
def cuda_divprune_f32(
    device: int,
    stream: int,
    dist: int,
    nn: int,
    first: int,
    mind: int,
    out: int,
    objective: int,
    batch: int,
    n: int,
    k: int,
    needs_nearest: bool,
) -> None: ...
