"""The per-prompt state of a generation call, made from the ``generate`` inputs.

Example:
    >>> rows, layout = prompt_rows([[5, 6], [7]], None, 4, vocab_size=10, context_length=None)
    >>> [r.tokens for r in rows], layout.tolist()
    ([[5, 6], [7]], [[5, 6], [0, 7]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

__all__ = ["Row", "check_context", "prompt_rows"]


@dataclass
class Row:
    """One prompt being generated, and how much of it each model's cache holds.

    Attributes:
        index: the row of the input batch.
        tokens: the prompt followed by the tokens committed so far.
        prompt_len: tokens of the prompt.
        max_new: tokens still allowed in total (``max_new_tokens``).
        target_cached: leading ``tokens`` whose keys/values are in the target cache.
        draft_cached: leading ``tokens`` whose keys/values are in the draft cache.
        done: stopped (EOS or ``max_new``).
    """

    index: int
    tokens: list[int]
    prompt_len: int
    max_new: int
    target_cached: int = 0
    draft_cached: int = 0
    done: bool = False

    @property
    def generated(self) -> int:
        """Tokens committed after the prompt."""
        return len(self.tokens) - self.prompt_len


def prompt_rows(
    input_ids: Any,
    attention_mask: Any,
    max_new_tokens: int,
    vocab_size: int,
    context_length: Optional[int],
) -> tuple[list[Row], torch.Tensor]:
    """Checks the prompts of a ``generate`` call and makes one :class:`Row` per prompt.

    Args:
        input_ids: int64/int32 ``[B, T]`` or ``[T]`` (with ``attention_mask`` for padding on
            either side), or a list of token-id lists (or 1-D tensors) of any lengths.
        attention_mask: 1 for real tokens, 0 for padding, or None (all real).
        max_new_tokens: tokens each row may add.
        vocab_size: token ids must lie in ``[0, vocab_size)``.
        context_length: prompt plus ``max_new_tokens`` must fit in it (None: unchecked).

    Returns:
        ``(rows, layout)``: the rows, and the input ids laid out as ``[B, T]`` (as given, or the
        lists left-padded with 0), which the output sequences start with.

    Raises:
        TypeError: ids of the wrong type or dtype.
        ValueError: a bad shape, an empty batch or prompt, an id outside the vocabulary, or a
            prompt too long for the context.
    """
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"`input_ids` must be int64 or int32, got {input_ids.dtype}")
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if input_ids.ndim != 2:
            raise ValueError(
                f"`input_ids` must be [batch, length], got shape {tuple(input_ids.shape)}"
            )
        ids = input_ids.detach().cpu().long()
        if attention_mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        else:
            if tuple(attention_mask.shape) != tuple(ids.shape):
                raise ValueError(
                    f"`attention_mask` must have the shape of `input_ids` {tuple(ids.shape)}, "
                    f"got {tuple(attention_mask.shape)}"
                )
            mask = attention_mask.detach().cpu().bool()
        prompts = [ids[b][mask[b]].tolist() for b in range(len(ids))]
        layout = ids
    else:
        if isinstance(input_ids, (str, bytes)) or not isinstance(input_ids, Sequence):
            raise TypeError(
                "`input_ids` must be a LongTensor [batch, length] or a list of token-id "
                f"lists, got {type(input_ids).__name__}"
            )
        prompts = [
            [int(t) for t in (p.tolist() if isinstance(p, torch.Tensor) else p)] for p in input_ids
        ]
        layout = None
    if len(prompts) == 0:
        raise ValueError("`input_ids` must hold at least one prompt, got an empty batch")
    for b, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(
                f"prompt {b} is empty: speculative decoding needs at least one token to "
                "condition on (e.g. the BOS token)"
            )
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt {b} has token ids outside [0, {vocab_size}): {bad[:5]}")
    if layout is None:
        width = max(len(p) for p in prompts)
        layout = torch.zeros(len(prompts), width, dtype=torch.long)
        for b, prompt in enumerate(prompts):
            layout[b, width - len(prompt) :] = torch.tensor(prompt)
    rows = [Row(b, list(p), len(p), max_new_tokens) for b, p in enumerate(prompts)]
    check_context(rows, max_new_tokens, context_length)
    return rows, layout


def check_context(rows: list[Row], max_new_tokens: int, context_length: Optional[int]) -> None:
    """Sets every row's ``max_new`` after checking that prompt plus new tokens fit the context.

    Raises:
        ValueError: a prompt too long for the context (None: unchecked).
    """
    for row in rows:
        if context_length is not None and row.prompt_len + max_new_tokens > context_length:
            raise ValueError(
                f"prompt {row.index} has {row.prompt_len} tokens; with max_new_tokens="
                f"{max_new_tokens} it exceeds the target's context of {context_length} "
                "positions: shorten the prompt or lower max_new_tokens"
            )
        row.max_new = max_new_tokens
