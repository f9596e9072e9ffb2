"""Where each image's tokens lie in a prompt, and DivPrune run on each of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ferrolm import cuda as _cuda
from ferrolm.prune.select import divprune, keep_count

Method = Literal["auto", "gram", "matrix_free"]


@dataclass(frozen=True)
class Span:
    """One image's tokens: features ``[start, start + length)`` fill the placeholder columns
    ``flat`` (indices into ``input_ids.reshape(-1)``, ascending, all in one prompt row)."""

    start: int
    length: int
    flat: torch.Tensor


def image_spans(ids: torch.Tensor, image_token_id: int, lengths: list[int]) -> list[Span]:
    """Splits the image placeholders of ``ids`` ``[B, L]`` into images.

    An image ends where one feature piece ends (``lengths``, in fill order) or where the run of
    placeholders breaks (text between, or a new prompt row), so both an image per piece (LLaVA,
    Qwen2-VL, Gemma 3) and several tiles per piece (Idefics3's per-prompt features) come apart.

    Raises:
        ValueError: The number of placeholders differs from the number of features.
    """
    length = ids.shape[1]
    flat = (ids == image_token_id).reshape(-1).nonzero().squeeze(1)
    total = sum(lengths)
    if flat.numel() != total:
        raise ValueError(
            f"the prompt holds {flat.numel()} image tokens (id {image_token_id}) but the images "
            f"have {total} features ({lengths}); is an image-token span missing or cut?"
        )
    cuts = set()
    acc = 0
    for n in lengths:
        acc += n
        cuts.add(acc)
    if total > 1:
        prev, nxt = flat[:-1], flat[1:]
        breaks = ((nxt != prev + 1) | (nxt // length != prev // length)).nonzero().squeeze(1)
        cuts.update((breaks + 1).tolist())
    bounds = [0, *sorted(c for c in cuts if 0 < c < total), total]
    return [Span(a, b - a, flat[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def select_per_span(
    features: torch.Tensor, spans: list[Span], keep: float, method: Method
) -> list[torch.Tensor]:
    """DivPrune's kept indices (ascending, into each image's tokens) for every span.

    Images with the same token count are pruned together in one batched call.
    """
    out: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(spans)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(spans):
        groups.setdefault(s.length, []).append(i)
    feats = features.detach()
    for n, members in groups.items():
        k = keep_count(n, keep)
        if k == n:
            for i in members:
                out[i] = torch.arange(n, device=feats.device)
            continue
        stack = torch.stack([feats[spans[i].start : spans[i].start + n] for i in members])
        if stack.is_cuda and not _cuda.is_available():
            stack = stack.cpu()  # no usable NVRTC/driver for ferrolm's kernels: CPU path
        sel = divprune(stack, keep=keep, method=method).indices
        for row, i in enumerate(members):
            out[i] = sel[row].to(feats.device)
    return out


def pieces_of(pooled: Any) -> list[torch.Tensor]:
    """The image features as 2-D ``[n, hidden]`` pieces, in the order they fill the prompt."""
    if isinstance(pooled, torch.Tensor):
        if pooled.dim() == 2:
            return [pooled]
        if pooled.dim() == 3:
            return list(pooled.unbind(0))
    elif isinstance(pooled, (list, tuple)) and all(isinstance(p, torch.Tensor) for p in pooled):
        return [p.reshape(-1, p.shape[-1]) for p in pooled]
    raise ValueError(
        "DivPrune expected image features as a tensor [images, tokens, hidden] or a list of "
        f"tensors; got {type(pooled).__name__}"
    )


def repack(
    pooled: Any, pieces: list[torch.Tensor], features: torch.Tensor, kept: torch.Tensor
) -> Any:
    """The kept features in the container the model expects (the merge only needs their order)."""
    if isinstance(pooled, torch.Tensor):
        return features[kept].unsqueeze(0)
    out: list[torch.Tensor] = []
    start = 0
    for p in pieces:
        n = int(p.shape[0])
        inside = kept[(kept >= start) & (kept < start + n)] - start
        out.append(p[inside])
        start += n
    return type(pooled)(out) if isinstance(pooled, tuple) else out
