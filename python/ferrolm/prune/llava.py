"""DivPrune inside Hugging Face LLaVA / LLaVA-NeXT: the LLaVA case of :func:`ferrolm.prune.apply`.

:func:`apply_to_llava` is :func:`~ferrolm.prune.apply` restricted to LLaVA-1.5 and LLaVA-NeXT:
any other model is refused. See :mod:`ferrolm.prune.families` for how the hook works and what the
position policies mean.
"""

from __future__ import annotations

from typing import Literal

import torch

from ferrolm.prune.families import FAMILIES, PruneHandle, PruneStats
from ferrolm.prune.select import DEFAULT_KEEP

__all__ = ["PruneHandle", "PruneStats", "apply_to_llava"]

_LLAVA = tuple(f for f in FAMILIES if f.model_types[0] in ("llava", "llava_next"))


def apply_to_llava(
    model: torch.nn.Module,
    keep: float = DEFAULT_KEEP,
    *,
    positions: Literal["compacted", "original"] = "compacted",
    method: Literal["auto", "gram", "matrix_free"] = "auto",
) -> PruneHandle:
    """Prunes the image tokens of a Hugging Face LLaVA / LLaVA-NeXT model with DivPrune.

    After this call every forward or ``generate`` call that carries images keeps
    ``round(keep * n)`` (at least 1) of each image's ``n`` projected tokens, chosen by
    :func:`~ferrolm.prune.divprune`, and drops the others before the first decoder layer, with
    their attention-mask and position-id columns. Text tokens are never dropped. Batches,
    several images per prompt and padded prompts work; logits come back for the pruned
    sequence (``L'`` positions instead of ``L``).

    Args:
        model: A ``LlavaForConditionalGeneration`` or ``LlavaNextForConditionalGeneration``
            (or their inner ``LlavaModel`` / ``LlavaNextModel``). Modified in place (a hook on
            this instance only) until the handle is removed.
        keep: Ratio of each image's tokens to keep, in (0, 1]; 1.0 changes nothing.
        positions: ``"compacted"`` renumbers the kept tokens consecutively; ``"original"``
            keeps their original position ids.
        method: Selection algorithm passed to :func:`~ferrolm.prune.divprune` (CPU only).

    Returns:
        A :class:`PruneHandle`: ``handle.remove()`` (or a ``with`` block) turns pruning off;
        ``handle.last`` reports the last prefill's counts.

    Raises:
        TypeError: ``model`` is not a LLaVA / LLaVA-NeXT model with an image-token span.
        ValueError: ``keep`` is not in (0, 1] or ``positions`` is unknown.
        RuntimeError: DivPrune is already applied to this model.

    Example:
        A tiny random LLaVA (64 image tokens per 32 x 32 image, image token id 127) stands in
        for ``LlavaForConditionalGeneration.from_pretrained(...)``:

        >>> from ferrolm import prune
        >>> from ferrolm.testing.prune import tiny_llava
        >>> model = tiny_llava()
        >>> ids = torch.tensor([[1, 2] + [127] * 64 + [3]])
        >>> pixels = torch.randn(1, 3, 32, 32)
        >>> handle = prune.apply_to_llava(model, keep=0.098)
        >>> out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=4)
        >>> handle.last.image_tokens, handle.last.kept_image_tokens
        ((64,), (6,))
        >>> handle.remove()
    """
    if positions is None:
        raise ValueError("`positions` must be 'compacted' or 'original', got None")
    return PruneHandle(model, keep, positions, method, families=_LLAVA)
