# Type stubs for the compiled module `ferrolm._native` (`rust/python/src/lib.rs`), checked by
# `python -m mypy.stubtest ferrolm._native`. One stub per submodule, each backing the Python
# package of the same name; the public, documented API is that Python layer.

from ferrolm._native import comm as comm
from ferrolm._native import cuda as cuda
from ferrolm._native import prune as prune
from ferrolm._native import speculative as speculative
from ferrolm._native import tokens as tokens

__version__: str

# lib.rs: the core's allocation limit (bytes per input-sized buffer).
def alloc_limit() -> int: ...
def set_alloc_limit(bytes: int) -> int: ...

# errors.rs: hooks for tests of the error map and the panic guard.
def _debug_panic(message: str) -> None: ...
def _debug_panic_next(calls: int) -> None: ...
def _debug_raise(kind: str) -> None: ...
