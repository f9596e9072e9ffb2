"""What the generator needs to know about a Hugging Face causal LM, read from its public API.

Example:
    >>> from types import SimpleNamespace
    >>> context_length(SimpleNamespace(config=SimpleNamespace(n_positions=1024)))
    1024
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

__all__ = [
    "SUPPORTED_ATTENTION",
    "check_causal_lm",
    "context_length",
    "forward_kwarg",
    "logits_kwarg",
    "vocab_size",
]

#: Attention implementations that take a custom 4D (tree) mask.
SUPPORTED_ATTENTION = ("sdpa", "eager")


def forward_kwarg(model: Any) -> str:
    """The keyword ``model.forward`` takes its KV cache by (``cache`` or ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def logits_kwarg(model: Any) -> Optional[str]:
    """The keyword that limits the logits to the last positions, or None if there is none."""
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def context_length(model: Any) -> Optional[int]:
    """The model's maximum number of positions, or None when its config does not say."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def vocab_size(model: Any) -> int:
    """Number of output tokens (the rows of the output embedding, else ``config.vocab_size``)."""
    emb = model.get_output_embeddings()
    if emb is not None and hasattr(emb, "weight"):
        return int(emb.weight.shape[0])
    return int(model.config.vocab_size)


def check_causal_lm(model: Any, role: str) -> None:
    """Raises unless ``model`` is a decoder-only HF model whose attention takes a 4D mask.

    Raises:
        TypeError: not a Hugging Face model.
        ValueError: an encoder-decoder, or an attention implementation outside
            :data:`SUPPORTED_ATTENTION` (the message names the one to use).
    """
    if not hasattr(model, "config") or not callable(getattr(model, "forward", None)):
        raise TypeError(
            f"`{role}` must be a Hugging Face causal LM (a PreTrainedModel), "
            f"got {type(model).__name__}"
        )
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"`{role}` must be a decoder-only causal LM, got encoder-decoder")
    impl = getattr(model.config, "_attn_implementation", None)
    if impl is not None and impl not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"`{role}` uses attn_implementation={impl!r}, which cannot take a custom 4D tree "
            "mask; load it with attn_implementation='sdpa' (or 'eager'), e.g. "
            "AutoModelForCausalLM.from_pretrained(path, attn_implementation='sdpa')"
        )
