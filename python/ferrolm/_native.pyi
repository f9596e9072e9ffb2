# Type stubs for the compiled module `ferrolm._native`, checked by `python -m mypy.stubtest`.
# The public, documented API is the Python layer (ferrolm.cuda, ferrolm.comm, ...).

import numpy as np
import numpy.typing as npt

__version__: str

# errors.rs
def _debug_panic(message: str) -> None: ...
def _debug_raise(kind: str) -> None: ...

# cuda.rs
def cuda_nvrtc_available() -> bool: ...
def cuda_driver_available() -> bool: ...
def cuda_device_count() -> int: ...
def cuda_nvrtc_version() -> tuple[int, int]: ...
def cuda_driver_version() -> tuple[int, int]: ...
def cuda_kernel_names() -> list[str]: ...
def cuda_compile_all(arch: str | None = None) -> list[tuple[str, int]]: ...
def cuda_minmax_blocks(n: int) -> int: ...
def cuda_quantize_minmax_f32(
    device: int, stream: int, x: int, q: int, params: int, partial: int, n: int
) -> None: ...
def cuda_dequantize_minmax_f32(
    device: int, stream: int, q: int, params: int, out: int, n: int
) -> None: ...
def cuda_dequantize_accumulate_minmax_f32(
    device: int, stream: int, q: int, params: int, acc: int, n: int
) -> None: ...

# comm.rs
def comm_quantize_minmax(
    x: npt.NDArray[np.float32], out: npt.NDArray[np.uint8]
) -> tuple[float, float]: ...
def comm_dequantize_minmax(
    q: npt.NDArray[np.uint8], min: float, scale: float, out: npt.NDArray[np.float32]
) -> None: ...
def comm_dequantize_accumulate_minmax(
    q: npt.NDArray[np.uint8], min: float, scale: float, acc: npt.NDArray[np.float32]
) -> None: ...

# prune.rs
def prune_divprune(
    features: npt.NDArray[np.float32],
    k: int,
    *,
    first: int | None = None,
    seed: int | None = None,
    greedy_order: bool = False,
    method: str = "auto",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
def prune_objective(features: npt.NDArray[np.float32], indices: npt.NDArray[np.int64]) -> float: ...
def prune_cuda_divprune_f32(
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
