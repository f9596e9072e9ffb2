# Stubs of `ferrolm._native.speculative` (`rust/python/src/speculative.rs`): draft trees,
# verification walks and Sequoia, wrapped by `ferrolm.speculative`.

from typing import final

import numpy as np
import numpy.typing as npt

def validate_parents(parents: npt.NDArray[np.int32]) -> None: ...
def validate_batch(parents: npt.NDArray[np.int32], offsets: npt.NDArray[np.int64]) -> int: ...
def depths(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...
def ranks(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...
def ancestor_mask(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]: ...
def ancestor_mask_batch(
    parents: npt.NDArray[np.int32], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]: ...
def position_ids(parents: npt.NDArray[np.int32], past_len: int) -> npt.NDArray[np.int64]: ...
def walk(
    parents: npt.NDArray[np.int32], tokens: npt.NDArray[np.int32], choice: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int32], int]: ...
def walk_batch(
    parents: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
    tokens: npt.NDArray[np.int32],
    choice: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def children_table(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...
def kv_compaction(
    path: npt.NDArray[np.int32], past_len: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def remap_compaction(
    old_to_new: npt.NDArray[np.int32], past_len: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def leaf_paths(parents: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]: ...
def children_table_batch(
    parents: npt.NDArray[np.int32], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.int32]: ...
def children_by_rank(
    parents: npt.NDArray[np.int32], rank: npt.NDArray[np.int32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]: ...
def ancestors(
    parents: npt.NDArray[np.int32], nodes: npt.NDArray[np.int32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]: ...
def restrict(
    parents: npt.NDArray[np.int32], keep: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]: ...

_FinalArrays = tuple[
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.float32],
    npt.NDArray[np.int32],
]

@final
class TreeBuilder:
    def __new__(
        cls,
        root_token: int,
        budget: int,
        max_depth: int | None = None,
        max_width: int | None = None,
        log_decay: float = 0.0,
        min_logprob: float = ...,
    ) -> TreeBuilder: ...
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
class BatchTreeBuilder:
    def __new__(
        cls,
        root_tokens: npt.NDArray[np.int32],
        budget: int,
        max_depth: int | None = None,
        max_width: int | None = None,
        log_decay: float = 0.0,
        min_logprob: float = ...,
    ) -> BatchTreeBuilder: ...
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
class SequoiaTable:
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

def sequoia_dp(
    p: npt.NDArray[np.float64], max_nodes: int, max_depth: int, max_work: int | None = None
) -> SequoiaTable: ...
def sequoia_heap(
    p: npt.NDArray[np.float64], n: int, d: int
) -> tuple[
    npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.float64]
]: ...
def tree_value(p: npt.NDArray[np.float64], parents: npt.NDArray[np.int32]) -> float: ...
def plan(
    table: SequoiaTable,
    sizes: npt.NDArray[np.int64],
    t_verify_s: npt.NDArray[np.float64],
    t_draft_s: float,
    t_autoregressive_s: float | None = None,
) -> tuple[int, int, float, float, float]: ...
def plan_costed(
    table: SequoiaTable,
    sizes: npt.NDArray[np.int64],
    t_verify_s: npt.NDArray[np.float64],
    draft_widths: npt.NDArray[np.int64],
    t_draft_s: npt.NDArray[np.float64],
    t_fixed_s: float,
    t_autoregressive_s: float,
) -> tuple[int, int, float, float, float]: ...
def draft_level_widths(table: SequoiaTable, n: int, d: int) -> npt.NDArray[np.int64]: ...
def acceptance_from_ranks(
    accepted_ranks: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.float64]: ...
