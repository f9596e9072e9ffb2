# Stubs of `ferrolm._native.comm` (`rust/python/src/comm.rs`): CPU gradient quantization,
# wrapped by `ferrolm.comm`.

import numpy as np
import numpy.typing as npt

def quantize_minmax(
    x: npt.NDArray[np.float32], out: npt.NDArray[np.uint8]
) -> tuple[float, float]: ...
def dequantize_minmax(
    q: npt.NDArray[np.uint8],
    min: float,
    scale: float,
    out: npt.NDArray[np.float32],
    *,
    accumulate: bool = False,
) -> None: ...
def scheme_names() -> list[str]: ...
def scheme_code(scheme: object, block_size: object) -> int: ...
def packed_len(scheme: str, block: int, n: int) -> int: ...
def quantize_packed(
    scheme: str, block: int, x: npt.NDArray[np.float32], out: npt.NDArray[np.uint8]
) -> None: ...
def dequantize_packed(
    scheme: str,
    block: int,
    packed: npt.NDArray[np.uint8],
    out: npt.NDArray[np.float32],
    accumulate: bool,
) -> None: ...
def all_finite(x: npt.NDArray[np.float32]) -> bool: ...
