"""The column map of a pruned prompt: which original column feeds each new one, in the prefill
and in the decode steps that follow it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ferrolm.prune._spans import Span


@dataclass
class ColumnMap:
    """Original column of each column of the pruned prompt.

    Attributes:
        prompt_len: Columns before pruning (``L``).
        new_len: Columns after pruning (``L'``), including added left padding.
        gather: ``[B, L']`` original column of each new column, -1 for added padding.
        pads: ``[B]`` added left padding per row.
    """

    prompt_len: int
    new_len: int
    gather: torch.Tensor
    pads: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """``[B, L']`` True where a new column comes from an original one."""
        return self.gather >= 0

    def take(self, x: torch.Tensor, fill: int) -> torch.Tensor:
        """``x`` (``[B, L]`` or ``[R, B, L]``) on the new columns; added padding is ``fill``."""
        idx = self.gather.clamp(min=0).to(x.device)
        valid = self.valid.to(x.device)
        if x.dim() == 3:
            idx = idx.unsqueeze(0).expand(x.shape[0], -1, -1)
            valid = valid.unsqueeze(0)
        taken = x.gather(-1, idx)
        return torch.where(valid, taken, torch.full_like(taken, fill))


def prefill_columns(
    ids: torch.Tensor, image_token_id: int, spans: list[Span], selections: list[torch.Tensor]
) -> ColumnMap:
    """The column map keeping every text column and each image's selected tokens.

    Rows that end up shorter than the longest are left-padded, so each row keeps its last
    token in the last column (what ``generate`` continues from).
    """
    device = ids.device
    keep_cols = ids != image_token_id
    for span, sel in zip(spans, selections):
        keep_cols.view(-1)[span.flat.to(device)[sel.to(device)]] = True
    counts = keep_cols.sum(dim=1)
    new_len = int(counts.max()) if counts.numel() else 0
    pads = new_len - counts
    order = torch.argsort((~keep_cols).to(torch.int8), dim=1, stable=True)
    ar = torch.arange(new_len, device=device).unsqueeze(0)
    src = ar - pads.unsqueeze(1)
    gather = torch.where(src >= 0, order.gather(1, src.clamp(min=0)), torch.full_like(src, -1))
    return ColumnMap(ids.shape[1], new_len, gather, pads)


def decode_inputs(
    kwargs: dict[str, Any],
    past: int,
    cm: ColumnMap,
    last_orig: torch.Tensor,
    last_new: torch.Tensor,
    *,
    original: bool,
    mrope: bool,
) -> dict[str, Any]:
    """A decode step's inputs, counted by the caller on the unpruned prompt, made to fit the
    pruned cache: the prompt part of the attention mask loses the dropped columns and the
    position ids follow the position policy."""
    ids = kwargs.get("input_ids")
    embeds = kwargs.get("inputs_embeds")
    ref = ids if isinstance(ids, torch.Tensor) else embeds
    if not isinstance(ref, torch.Tensor):
        raise ValueError("DivPrune's decode step needs `input_ids` or `inputs_embeds`")
    batch, steps = ref.shape[:2]
    device = ref.device
    out = dict(kwargs)
    mask = kwargs.get("attention_mask")
    valid = cm.valid.to(device)
    after = past - cm.new_len  # tokens generated after the prompt so far
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise ValueError("DivPrune needs a 2-D attention mask (or none)")
        if mask.shape[1] != cm.prompt_len + after + steps:
            raise ValueError(
                f"attention_mask has {mask.shape[1]} columns; DivPrune expected the "
                f"unpruned prompt ({cm.prompt_len}) plus {after + steps} generated tokens"
            )
        prompt = cm.take(mask[:, : cm.prompt_len], fill=0)
        out["attention_mask"] = torch.cat([prompt, mask[:, cm.prompt_len :]], dim=1)
    elif not bool(valid.all()):
        ones = torch.ones(batch, after + steps, dtype=torch.long, device=device)
        out["attention_mask"] = torch.cat([valid.long(), ones], dim=1)
    pos = kwargs.get("position_ids")
    step = torch.arange(steps, device=device).unsqueeze(0) + after + 1
    last_orig = last_orig.to(device)
    if pos is not None:
        # Callers (and generate) count positions on the unpruned prompt.
        if not (original or mrope):
            shift = (last_orig - last_new.to(device)).unsqueeze(1).to(pos.dtype)
            out["position_ids"] = pos - shift
    elif mrope:
        out["position_ids"] = (last_orig.unsqueeze(1) + step).unsqueeze(0).expand(3, -1, -1)
    elif original:
        out["position_ids"] = last_orig.unsqueeze(1) + step
    else:
        out["position_ids"] = last_new.to(device).unsqueeze(1) + step
    return out
