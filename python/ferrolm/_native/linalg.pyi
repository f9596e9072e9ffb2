# Stubs of `ferrolm._native.linalg` (`rust/python/src/linalg.rs`): small-batch Linear products,
# wrapped by `ferrolm.speculative.fast_linear`.

import numpy as np
import numpy.typing as npt

def linear_f32(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None,
    out: npt.NDArray[np.float32],
) -> None: ...
def linear_bf16(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.uint16],
    bias: npt.NDArray[np.float32] | None,
    out: npt.NDArray[np.float32],
) -> None: ...
def linear_i8(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.int8],
    scale: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None,
    out: npt.NDArray[np.float32],
) -> None: ...
def quantize_rows_i8(
    w: npt.NDArray[np.float32],
    q: npt.NDArray[np.int8],
    scale: npt.NDArray[np.float32],
) -> None: ...
