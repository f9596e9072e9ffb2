# Stubs of `ferrolm._native.tokens` (`rust/python/src/tokens.rs`): tokenizer scans and embedding
# indicators, wrapped by `ferrolm.tokens`.

import os
from typing import Any, final

import numpy as np
import numpy.typing as npt

@final
class Scanner:
    @staticmethod
    def from_file(path: str | os.PathLike[str]) -> Scanner: ...
    @staticmethod
    def from_json(json: str) -> Scanner: ...
    @staticmethod
    def from_tiktoken_file(
        path: str | os.PathLike[str], *, encoding: str | None = None
    ) -> Scanner: ...
    @staticmethod
    def from_tiktoken_ranks(
        ranks: list[tuple[bytes, int]],
        pattern: str,
        special_tokens: list[tuple[str, int]],
        name: str,
    ) -> Scanner: ...
    @property
    def warnings(self) -> list[str]: ...
    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]: ...
    @property
    def has_fast_path(self) -> bool: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def notes(self) -> list[str]: ...
    def to_json(self) -> str: ...
    def scan(
        self, *, containment: bool = True, max_examples: int = 5, fast: bool = True
    ) -> dict[str, Any]: ...

def encode_file(
    path: str | os.PathLike[str],
    texts: list[str],
    *,
    encoding: str | None = None,
    add_special_tokens: bool = False,
) -> tuple[list[list[int]], list[str]]: ...
def tokenizer_json(path: str | os.PathLike[str]) -> tuple[str, list[str]]: ...
def row_norms(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def dominant_direction(
    matrix: npt.NDArray[np.float32], *, iterations: int = 30
) -> npt.NDArray[np.float32]: ...
def cosine_distance(
    matrix: npt.NDArray[np.float32],
    reference: npt.NDArray[np.uint32],
    *,
    remove: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]: ...
def identical_row_counts(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.uint32]: ...
def gguf_embeddings(
    path: str | os.PathLike[str], *, max_rows: int | None = None, max_values: int = 4294967296
) -> dict[str, Any] | None: ...
def safetensors_tensors(path: str | os.PathLike[str]) -> list[tuple[str, str, list[int]]]: ...
def safetensors_rows(
    path: str | os.PathLike[str],
    name: str,
    *,
    max_rows: int | None = None,
    max_values: int = 4294967296,
) -> dict[str, Any]: ...
