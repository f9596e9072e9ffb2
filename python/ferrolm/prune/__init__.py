"""DivPrune: prune visual tokens by max-min diversity, on CPU (Rust) or GPU (CUDA).

Example:
    >>> import torch
    >>> from ferrolm import prune
    >>> sel = prune.divprune(torch.randn(576, 1024), keep=0.098)   # 56 diverse tokens
    >>> sel.indices.shape, sel.objective.dtype
    (torch.Size([56]), torch.float32)

For Hugging Face vision-language models (LLaVA, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL,
Qwen2.5-VL, Gemma 3, Idefics3 / SmolVLM, PaliGemma), one line prunes the image tokens of every
forward and ``generate`` call (see :func:`apply`; :func:`apply_to_llava` is its LLaVA case)::

    handle = prune.apply(model, keep=0.098)   # handle.remove() turns it off

On a photo, :class:`DinoV2Small` (or :class:`HFVisionTower`) gives patch features and
:func:`draw` shows what was kept (Pillow and onnxruntime: ``pip install 'ferrolm[vision]'``)::

    feats = prune.DinoV2Small()(photo)
    sel = prune.divprune(feats.features, keep=0.1)
    prune.draw(photo, sel, grid=feats.grid).save("kept.png")
"""

from typing import TYPE_CHECKING

from ferrolm._optional import lazy_attributes
from ferrolm.prune.draw import draw
from ferrolm.prune.select import (
    DEFAULT_KEEP,
    METHODS,
    Selection,
    divprune,
    keep_count,
    objective,
    uses_amx,
)
from ferrolm.prune.vision import DinoV2Small, HFVisionTower, PatchFeatures

if TYPE_CHECKING:
    from ferrolm.prune.families import FAMILIES, PruneHandle, PruneStats, apply
    from ferrolm.prune.llava import apply_to_llava

# DivPrune on NumPy arrays needs NumPy only; the model hooks need torch (imported on first use).
__getattr__ = lazy_attributes(
    __name__,
    {
        "FAMILIES": "families",
        "PruneHandle": "families",
        "PruneStats": "families",
        "apply": "families",
        "apply_to_llava": "llava",
    },
)

__all__ = [
    "DEFAULT_KEEP",
    "FAMILIES",
    "METHODS",
    "DinoV2Small",
    "HFVisionTower",
    "PatchFeatures",
    "PruneHandle",
    "PruneStats",
    "Selection",
    "apply",
    "apply_to_llava",
    "divprune",
    "draw",
    "keep_count",
    "objective",
    "uses_amx",
]
