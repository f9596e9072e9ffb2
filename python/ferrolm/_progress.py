"""Progress bars for long library calls, drawn only where a person is watching.

A bar is drawn on stderr only when the caller asked for one and stderr is a terminal: in a pipe,
a log file or CI, carriage-return redraws would be noise (and a `--json -` consumer must see
nothing but its document on stdout, which a bar never touches).
"""

from __future__ import annotations

import sys
from typing import Any


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A ``tqdm`` bar on stderr, disabled unless ``enabled`` and stderr is a terminal.

    Args:
        total: the number of steps.
        desc: the label shown before the bar.
        enabled: the caller's wish (e.g. a ``progress=`` argument); a bar is still only drawn
            on a terminal.

    Returns:
        A ``tqdm`` instance; a disabled one accepts ``update``/``close`` and draws nothing.

    Example:
        >>> bar = progress_bar(3, "scan")  # silent here: doctest's stderr is no terminal
        >>> bar.update(3); bar.close()
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        disable=not (enabled and stderr_is_terminal()),
        leave=False,
        file=sys.stderr,
    )
