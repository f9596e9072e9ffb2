"""Optional dependencies: imported on first use, and a missing one names the extra to install.

The base install is NumPy (+ tqdm): the tokenizer scan, the tree utilities, Sequoia, DivPrune and
the quantizers on NumPy arrays need nothing else. Torch and the Hugging Face stack are extras
(``pip install 'ferrolm[torch]'``, ``'ferrolm[hf]'``, ``'ferrolm[all]'``); a feature that needs one
imports it through :func:`require`, so that a missing package is an ``ImportError`` saying which
extra brings it rather than a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Callable

__all__ = ["EXTRAS", "is_tensor", "lazy_attributes", "lazy_module", "require"]

#: The extra of ``pyproject.toml`` that installs each optional top-level package.
EXTRAS: Mapping[str, str] = {
    "torch": "torch",
    "transformers": "hf",
    "safetensors": "hf",
    "gguf": "hf",
    "tokenizers": "hf",
    "accelerate": "hf",
    "PIL": "vision",
    "onnxruntime": "vision",
}


def missing_extra(package: str, feature: str) -> ImportError:
    """The error for ``feature`` used without ``package``: names the extra that installs it."""
    extra = EXTRAS.get(package, "all")
    return ImportError(
        f"{feature} needs `{package}`, which is not installed; "
        f"install it with: pip install 'ferrolm[{extra}]'",
        name=package,
    )


def require(module: str, feature: str | None = None) -> ModuleType:
    """Imports ``module`` (an optional dependency) or raises an ImportError naming its extra.

    Args:
        module: Dotted module name, e.g. ``"torch"`` or ``"torch.distributed"``.
        feature: What needs it, for the message (default: the module name).

    Raises:
        ImportError: The package is not installed; the message says
            ``pip install 'ferrolm[EXTRA]'``. An ImportError raised *inside* an installed
            package (a broken install) propagates unchanged.

    Example:
        >>> require("numpy").__name__
        'numpy'
    """
    package = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != package:
            raise  # the package is there but a submodule or one of its dependencies is not
        raise missing_extra(package, feature or f"`{module}`") from e


def is_tensor(x: object) -> bool:
    """Whether ``x`` is a ``torch.Tensor``, without importing torch.

    A tensor can only exist once torch is imported, so when it is not in ``sys.modules`` the
    answer is no and torch stays unloaded (importing it takes seconds).
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class _LazyModule(ModuleType):
    """A stand-in for a module that imports it, through :func:`require`, on first attribute use."""

    def __init__(self, module: str) -> None:
        super().__init__(module)
        self._ferrolm_target = module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)  # introspection (doctest, copy) must not import torch
        return getattr(require(self._ferrolm_target), attr)


def lazy_module(module: str) -> ModuleType:
    """A module object that imports ``module`` when one of its attributes is first used.

    For a capability module whose NumPy paths must work without torch but whose torch paths
    refer to ``torch.xxx`` throughout: ``torch = lazy_module("torch")`` at module level (with
    ``import torch`` under ``TYPE_CHECKING`` for the type checker).
    """
    return _LazyModule(module)


def lazy_attributes(
    package: str, where: Mapping[str, str], needs: str = "torch"
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports the submodule defining a name on first access.

    Args:
        package: The package's ``__name__``.
        where: Public name -> submodule (relative to ``package``) that defines it.
        needs: The optional package those submodules import at top level; a missing one is an
            ImportError naming its extra, raised when the name is used (``from ferrolm.comm
            import all_reduce`` included), not when the package is imported.
    """

    def module_getattr(name: str) -> Any:
        sub = where.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        require(needs, f"`{package}.{name}`")
        importlib.import_module(f"{package}.{sub}")
        # Bind every name whose submodule is loaded now, so later lookups skip this function,
        # and so a name equal to a submodule's (`speculative.profile`, a function in
        # `speculative/profile.py`) is the function, not the submodule the import bound there.
        pkg = sys.modules[package]
        for public, module in where.items():
            loaded = sys.modules.get(f"{package}.{module}")
            if loaded is not None:
                setattr(pkg, public, getattr(loaded, public))
        return getattr(pkg, name)

    return module_getattr
