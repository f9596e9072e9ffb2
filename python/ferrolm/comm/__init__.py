"""Int8 quantization for communication (INTELLECT-1 style).

Example:
    >>> import torch
    >>> from ferrolm import comm
    >>> q = comm.quantize(torch.randn(1000), scheme="minmax")
    >>> x = comm.dequantize(q)  # float32, within half a step of the input
"""

from ferrolm.comm.quantize import (
    SCHEMES,
    QuantizedTensor,
    dequantize,
    dequantize_accumulate,
    quantize,
)

__all__ = ["SCHEMES", "QuantizedTensor", "dequantize", "dequantize_accumulate", "quantize"]
