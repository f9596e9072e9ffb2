"""Int8 communication for training over slow links (INTELLECT-1 style).

Example:
    >>> import torch
    >>> from ferrolm import comm
    >>> q = comm.quantize(torch.randn(1000), scheme="blockwise")
    >>> x = comm.dequantize(q)  # float32, within half a block step of the input
    >>> # inside an initialised torch.distributed group:
    >>> # comm.all_reduce(grad, dist.ReduceOp.AVG, scheme="blockwise", timeout=60.0)
"""

from typing import TYPE_CHECKING

from ferrolm._optional import lazy_attributes
from ferrolm.comm.quantize import (
    DEFAULT_BLOCK_SIZE,
    SCHEMES,
    QuantizedTensor,
    dequantize,
    dequantize_accumulate,
    quantize,
)

if TYPE_CHECKING:
    from ferrolm.comm.allreduce import OPS, AllReduceWork, CommTimeoutError, all_reduce
    from ferrolm.comm.diloco import DiLoCo, Int8HookState, int8_allreduce_hook

# The quantizers work on NumPy arrays without torch; the all-reduce, the DDP hook and DiLoCo
# run over torch.distributed and import torch on first use.
__getattr__ = lazy_attributes(
    __name__,
    {
        "OPS": "allreduce",
        "AllReduceWork": "allreduce",
        "CommTimeoutError": "allreduce",
        "all_reduce": "allreduce",
        "DiLoCo": "diloco",
        "Int8HookState": "diloco",
        "int8_allreduce_hook": "diloco",
    },
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "OPS",
    "SCHEMES",
    "AllReduceWork",
    "CommTimeoutError",
    "DiLoCo",
    "Int8HookState",
    "QuantizedTensor",
    "all_reduce",
    "dequantize",
    "dequantize_accumulate",
    "int8_allreduce_hook",
    "quantize",
]
