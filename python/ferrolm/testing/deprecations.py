"""Fails a test when ferrolm's own call into a library uses something that library deprecates.

``filterwarnings = error`` in pytest's configuration only sees the module a warning is
attributed to; Hugging Face libraries attribute theirs to their own frames (or log them with
``logger.warning_once`` instead of warning), and the configuration must ignore those, so a
deprecated call made *by ferrolm* would pass unnoticed. :class:`DeprecationGuard` looks at the
whole stack instead: a deprecation counts against ferrolm when the nearest frame outside the
third-party libraries (``transformers``, ``huggingface_hub``, ``tokenizers``, ``torch``,
``safetensors``, the standard library) belongs to the ``ferrolm`` package. The root
``conftest.py`` runs every test under one (the ``_no_deprecated_calls`` fixture below).

Example:
    >>> guard = DeprecationGuard()
    >>> with guard:
    ...     pass
    >>> guard.found
    []
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Optional

import pytest

__all__ = ["DeprecationGuard", "caused_by_ferrolm", "no_deprecated_calls"]

_FERROLM = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HERE = os.path.abspath(__file__)
_THIRD_PARTY = (
    "transformers",
    "huggingface_hub",
    "tokenizers",
    "torch",
    "safetensors",
    "accelerate",
)
_STDLIB = tuple(
    os.path.abspath(p)
    for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    if p
)
_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_LOGGERS = ("transformers", "huggingface_hub")


def _library_frame(filename: str) -> bool:
    path = os.path.abspath(filename)
    if path.startswith(_STDLIB) and "site-packages" not in path:
        return True
    parts = path.replace("\\", "/").split("/")
    return any(name in parts for name in _THIRD_PARTY) or "<frozen" in filename


def caused_by_ferrolm(stack: Sequence[traceback.FrameSummary]) -> Optional[str]:
    """Where in ferrolm a deprecation came from, or None.

    Args:
        stack: the stack at the moment of the warning, outermost frame first.

    Returns:
        ``"file:line"`` of the nearest frame outside the libraries when it belongs to ferrolm
        (this module and :mod:`ferrolm.testing` excepted), else None.
    """
    for frame in reversed(stack):
        path = os.path.abspath(frame.filename)
        if path == _HERE or path == os.path.abspath(logging.__file__):
            continue
        if _library_frame(frame.filename):
            continue
        inside = path.startswith(_FERROLM + os.sep)
        testing = path.startswith(os.path.join(_FERROLM, "testing") + os.sep)
        return f"{frame.filename}:{frame.lineno}" if inside and not testing else None
    return None


class _Handler(logging.Handler):
    def __init__(self, guard: DeprecationGuard) -> None:
        super().__init__(logging.WARNING)
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.guard.check_stack(message)


class DeprecationGuard:
    """Records deprecations caused by ferrolm frames while it is active (see the module doc).

    It watches ``warnings.warn`` calls of the deprecation categories, whatever filter then
    applies to them, and warning-level log records of ``transformers`` and ``huggingface_hub``
    that mention a deprecation.

    Attributes:
        found: ``"message (at file:line)"`` for every deprecation ferrolm caused.

    ``transformers`` logs some deprecations once per process (``warning_once``); entering a
    guard forgets which were logged, so that each guarded block sees its own.
    """

    def __init__(self) -> None:
        self.found: list[str] = []
        self._warn: Any = None
        self._handler = _Handler(self)

    def check_stack(self, message: str) -> None:
        """Records ``message`` if the current stack makes ferrolm its cause."""
        where = caused_by_ferrolm(traceback.extract_stack()[:-1])
        if where is not None:
            self.found.append(f"{message} (at {where})")

    def __enter__(self) -> DeprecationGuard:
        original = warnings.warn
        self._warn = original

        def warn(message: Any, category: Any = None, stacklevel: int = 1, **kwargs: Any) -> None:
            cls = category or (type(message) if isinstance(message, Warning) else UserWarning)
            caller = sys._getframe(1)
            while caller.f_back is not None and os.path.abspath(caller.f_code.co_filename) == _HERE:
                caller = caller.f_back  # through an enclosing guard's wrapper
            issuer = os.path.abspath(caller.f_code.co_filename)
            # ferrolm deprecating its own API to its users (e.g. an old argument name) is not
            # ferrolm calling a deprecated API: only warnings issued elsewhere are checked.
            own = issuer.startswith(_FERROLM + os.sep) and issuer != _HERE
            if isinstance(cls, type) and issubclass(cls, _CATEGORIES) and not own:
                self.check_stack(str(message))
            original(message, category, stacklevel + 1, **kwargs)

        warnings.warn = warn  # type: ignore[assignment]
        hf_logging = sys.modules.get("transformers.utils.logging")
        clear = getattr(getattr(hf_logging, "warning_once", None), "cache_clear", None)
        if clear is not None:
            clear()
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        warnings.warn = self._warn
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)


@pytest.fixture(autouse=True)
def no_deprecated_calls() -> Iterator[DeprecationGuard]:
    """Fails the test if ferrolm made a deprecated call into a library during it."""
    with DeprecationGuard() as guard:
        yield guard
    if guard.found:
        pytest.fail(
            "ferrolm used a deprecated API:\n" + "\n".join(sorted(set(guard.found))),
            pytrace=False,
        )
