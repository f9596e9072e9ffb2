"""Files shipped inside installed packages (the model and tokenizer fixtures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

__all__ = ["package_file"]


def package_file(package: str, *parts: str) -> Optional[Path]:
    """``<package dir>/<parts...>`` when ``package`` is installed and the path exists, else None.

    Every directory of a namespace package is searched, in import order.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root, *parts)
        if path.exists():
            return path
    return None
