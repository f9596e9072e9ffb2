# Type stubs for the compiled module `ferrolm._native`, checked by `python -m mypy.stubtest`.
# The public, documented API is the Python layer (ferrolm.cuda, ferrolm.comm, ...).

from typing import final

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
def cuda_quantize_blockwise_f32(
    device: int, stream: int, x: int, n: int, block: int, params: int, q: int, bad: int
) -> None: ...
def cuda_dequantize_blockwise_f32(
    device: int, stream: int, q: int, n: int, block: int, params: int, out: int, accumulate: bool
) -> None: ...
def cuda_intellect_scratch_bytes(n: int) -> int: ...
def cuda_quantize_intellect_f32(
    device: int, stream: int, x: int, n: int, codebook: int, q: int, scratch: int
) -> None: ...
def cuda_dequantize_intellect_f32(
    device: int, stream: int, q: int, n: int, codebook: int, out: int, accumulate: bool
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

# spec.rs
def spec_validate_parents(parents: npt.NDArray[np.int32]) -> None: ...
def spec_validate_batch(parents: npt.NDArray[np.int32], offsets: npt.NDArray[np.int64]) -> int: ...
def spec_depths(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...
def spec_ranks(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...
def spec_ancestor_mask(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]: ...
def spec_ancestor_mask_batch(
    parents: npt.NDArray[np.int32], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]: ...
def spec_position_ids(parents: npt.NDArray[np.int32], past_len: int) -> npt.NDArray[np.int64]: ...
def spec_walk(
    parents: npt.NDArray[np.int32], tokens: npt.NDArray[np.int32], choice: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int32], int]: ...
def spec_walk_batch(
    parents: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
    tokens: npt.NDArray[np.int32],
    choice: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def spec_children_table(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...
def spec_kv_compaction(
    path: npt.NDArray[np.int32], past_len: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def spec_remap_compaction(
    old_to_new: npt.NDArray[np.int32], past_len: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def spec_leaf_paths(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...

_FinalArrays = tuple[
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.float32],
    npt.NDArray[np.int32],
]

@final
class SpecTreeBuilder:
    def __new__(
        cls,
        root_token: int,
        budget: int,
        max_depth: int = 16,
        max_width: int = 8,
        log_decay: float = 0.0,
        min_logprob: float = ...,
    ) -> SpecTreeBuilder: ...
    @property
    def size(self) -> int: ...
    @property
    def num_inserted(self) -> int: ...
    def done(self) -> bool: ...
    def frontier(self, k: int) -> npt.NDArray[np.int32]: ...
    def expand(
        self,
        parent_ids: npt.NDArray[np.int32],
        child_tokens: npt.NDArray[np.int32],
        child_logprobs: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.int32]: ...
    def finalize(self) -> _FinalArrays: ...

@final
class SpecBatchTreeBuilder:
    def __new__(
        cls,
        root_tokens: npt.NDArray[np.int32],
        budget: int,
        max_depth: int = 16,
        max_width: int = 8,
        log_decay: float = 0.0,
        min_logprob: float = ...,
    ) -> SpecBatchTreeBuilder: ...
    @property
    def sizes(self) -> list[int]: ...
    def done(self) -> bool: ...
    def frontier(self, k: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]: ...
    def expand(
        self,
        tree_ids: npt.NDArray[np.int32],
        parent_ids: npt.NDArray[np.int32],
        child_tokens: npt.NDArray[np.int32],
        child_logprobs: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.int32]: ...
    def finalize(self) -> list[_FinalArrays]: ...

@final
class SpecSequoiaTable:
    @property
    def max_nodes(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    def acceptance(self) -> npt.NDArray[np.float64]: ...
    def value(self, n: int, d: int) -> float: ...
    def values(self) -> npt.NDArray[np.float64]: ...
    def tree(
        self, n: int, d: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32]]: ...

def spec_sequoia_dp(
    p: npt.NDArray[np.float64], max_nodes: int, max_depth: int
) -> SpecSequoiaTable: ...
def spec_sequoia_heap(
    p: npt.NDArray[np.float64], n: int, d: int
) -> tuple[
    npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.float64]
]: ...
def spec_tree_value(p: npt.NDArray[np.float64], parents: npt.NDArray[np.int32]) -> float: ...
def spec_plan(
    table: SpecSequoiaTable,
    sizes: npt.NDArray[np.int64],
    t_verify_s: npt.NDArray[np.float64],
    t_draft_s: float,
    t_autoregressive_s: float | None = None,
) -> tuple[int, int, float, float, float]: ...
def spec_acceptance_from_ranks(
    accepted_ranks: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.float64]: ...
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
def comm_packed_len(scheme: str, block: int, n: int) -> int: ...
def comm_quantize_packed(
    scheme: str, block: int, x: npt.NDArray[np.float32], out: npt.NDArray[np.uint8]
def comm_dequantize_packed(
    scheme: str,
    block: int,
    packed: npt.NDArray[np.uint8],
    out: npt.NDArray[np.float32],
    accumulate: bool,
def comm_all_finite(x: npt.NDArray[np.float32]) -> bool: ...
