"""DivPrune inside Hugging Face LLaVA / LLaVA-NeXT: prune projected image tokens before layer 0.

How it hooks in (no model code is copied or patched on the class; only the given instance):

* a forward pre-hook on the multimodal model (``model.model``) remembers the call's
  ``input_ids``, which say where the image tokens are;
* the instance's ``get_image_features`` is wrapped to learn how many tokens each image has
  (LLaVA-NeXT images differ), in the order ``masked_scatter`` fills them in;
* a forward pre-hook on the decoder (``model.model.language_model``) receives the merged
  ``inputs_embeds``, runs :func:`~ferrolm.prune.divprune` on each image's tokens and drops the
  rest, together with their columns of ``attention_mask`` and ``position_ids``.

Generation works because the hook remembers which prompt columns it dropped: in later decode
steps it drops the same columns from the (growing) 2-D attention mask and shifts the position
ids. Rows whose prompts hold different numbers of image tokens are re-aligned with extra left
padding (attention 0).

Position policy (``positions=``): ``"compacted"`` (default) renumbers the kept tokens
``0..L'-1`` as if the prompt had been written without the pruned tokens, as DivPrune's reference
implementation does; ``"original"`` keeps every kept token's original position (gaps where
tokens were dropped), and generation continues from the unpruned prompt length.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Literal, Optional

import torch

from ferrolm import cuda as _cuda
from ferrolm.prune.select import DEFAULT_KEEP, divprune, keep_count

__all__ = ["PruneHandle", "PruneStats", "apply_to_llava"]

_POLICIES = ("compacted", "original")


@dataclass(frozen=True)
class PruneStats:
    """What the last prefill pruned.

    Attributes:
        prompt_tokens: Prompt length before pruning (``L``, including padding).
        kept_tokens: Prompt length after pruning (``L'``, including any added left padding).
        image_tokens: Image tokens per image, in the order the images were given.
        kept_image_tokens: Image tokens kept per image.
    """

    prompt_tokens: int
    kept_tokens: int
    image_tokens: tuple[int, ...]
    kept_image_tokens: tuple[int, ...]


@dataclass
class _PromptState:
    """The column map of the last pruned prompt, reused by its decode steps."""

    prompt_len: int  # L
    new_len: int  # L'
    gather: torch.Tensor  # [B, L'] original column of each new column, -1 for added padding
    last_orig: torch.Tensor  # [B] original position of the last prompt token
    last_new: torch.Tensor  # [B] new position of the last prompt token


def _inner_model(model: torch.nn.Module) -> Any:
    inner: Any = getattr(model, "model", model)
    ok = (
        hasattr(inner, "language_model")
        and hasattr(inner, "get_image_features")
        and getattr(getattr(inner, "config", None), "image_token_id", None) is not None
    )
    if not ok:
        raise TypeError(
            "`model` must be a Hugging Face LlavaForConditionalGeneration or "
            "LlavaNextForConditionalGeneration (or their inner LlavaModel/LlavaNextModel) with "
            f"an image token id in its config; got {type(model).__name__}, which has no "
            "image-token span to prune"
        )
    return inner


class PruneHandle:
    """Controls DivPrune on one model: returned by :func:`apply_to_llava`.

    Use :meth:`remove` (or leave a ``with`` block) to restore the model; set :attr:`enabled`
    to pause pruning without removing the hooks. :attr:`last` describes the last prefill.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        keep: float,
        positions: str,
        method: Literal["auto", "gram", "matrix_free"],
    ) -> None:
        inner = _inner_model(model)
        if positions not in _POLICIES:
            raise ValueError(f"`positions` must be 'compacted' or 'original', got {positions!r}")
        keep_count(1, keep)  # validates the ratio
        if getattr(inner, "_ferrolm_prune_handle", None) is not None:
            raise RuntimeError(
                "DivPrune is already applied to this model; call .remove() on its handle first"
            )
        self.keep = keep
        self.positions = positions
        self.method = method
        self.enabled = True
        self.last: Optional[PruneStats] = None
        self._inner: Any = inner
        self._image_token_id = int(inner.config.image_token_id)
        self._input_ids: Optional[torch.Tensor] = None
        self._image_lengths: Optional[list[int]] = None
        self._state: Optional[_PromptState] = None
        self._original_get_image_features: Callable[..., Any] = inner.get_image_features
        # wraps(): generate() inspects the signature to route `pixel_values` to this method.
        original = self._original_get_image_features

        @functools.wraps(original)
        def get_image_features(*args: Any, **kwargs: Any) -> Any:
            return self._get_image_features(*args, **kwargs)

        inner.get_image_features = get_image_features
        self._hooks = [
            inner.register_forward_pre_hook(self._outer_pre_hook, with_kwargs=True),
            inner.language_model.register_forward_pre_hook(
                self._decoder_pre_hook, with_kwargs=True
            ),
        ]
        inner._ferrolm_prune_handle = self

    def remove(self) -> None:
        """Removes the hooks; the model behaves exactly as before :func:`apply_to_llava`."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._inner.__dict__.get("get_image_features") is not None:
            del self._inner.get_image_features
        self._inner._ferrolm_prune_handle = None
        self._state = None

    def __enter__(self) -> PruneHandle:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.remove()

    # hooks ---------------------------------------------------------------------------------

    def _get_image_features(self, *args: Any, **kwargs: Any) -> Any:
        out = self._original_get_image_features(*args, **kwargs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None and isinstance(out, (list, tuple)):
            pooled = out
        if pooled is not None:
            self._image_lengths = [int(t.shape[-2]) for t in pooled]
        return out

    def _outer_pre_hook(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._input_ids = kwargs.get("input_ids", args[0] if args else None)
        self._image_lengths = None
        encoded = kwargs.get("mm_encoder_outputs") or {}
        image = encoded.get("image") if isinstance(encoded, dict) else None
        if image is not None and getattr(image, "pooler_output", None) is not None:
            self._image_lengths = [int(t.shape[-2]) for t in image.pooler_output]

    def _decoder_pre_hook(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Optional[tuple[tuple[Any, ...], dict[str, Any]]]:
        if not self.enabled:
            return None
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return None
        # The decoder's cache argument is `cache` in current transformers, `past_key_values`
        # in 5.0.
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        if self._image_lengths is not None:
            ids = self._input_ids
            if ids is None:
                raise ValueError(
                    "DivPrune needs `input_ids` to find the image tokens; calls with only "
                    "`inputs_embeds` and images are not supported while it is applied"
                )
            if past != 0:
                raise ValueError(
                    "DivPrune prunes images in the prefill only; got images with a non-empty cache"
                )
            lengths = self._image_lengths
            self._image_lengths = None
            return args, self._prefill(ids, embeds, kwargs, lengths)
        if self._state is not None and past > 0:
            return args, self._decode(embeds, kwargs, past)
        self._state = None
        return None

    # the two cases -------------------------------------------------------------------------

    def _prefill(
        self,
        ids: torch.Tensor,
        embeds: torch.Tensor,
        kwargs: dict[str, Any],
        lengths: list[int],
    ) -> dict[str, Any]:
        batch, length, hidden = embeds.shape
        device = embeds.device
        image_mask = ids.to(device) == self._image_token_id
        positions = image_mask.reshape(-1).nonzero().squeeze(1)
        if positions.numel() != sum(lengths):
            raise ValueError(
                f"the prompt holds {positions.numel()} image tokens but the images have "
                f"{sum(lengths)} features ({lengths}); is the image-token span missing?"
            )
        keep_cols = ~image_mask
        kept: list[int] = []
        # Images of equal size are pruned together in one batched call.
        spans: dict[int, list[torch.Tensor]] = {}
        offset = 0
        for n in lengths:
            span = positions[offset : offset + n]
            offset += n
            rows = span // length
            if n and bool((rows != rows[0]).any()):
                raise ValueError("an image's tokens must lie in one prompt row")
            spans.setdefault(n, []).append(span)
            kept.append(keep_count(n, self.keep) if n else 0)
        for n, group in spans.items():
            if n == 0:
                continue
            span_t = torch.stack(group)  # [G, n] flat positions
            feats = embeds.detach().reshape(batch * length, hidden)[span_t]  # [G, n, hidden]
            if feats.is_cuda and not _cuda.is_available():
                feats = feats.cpu()  # no usable NVRTC/driver for ferrolm's kernels: CPU path
            sel = divprune(feats, keep=self.keep, method=self.method)
            chosen = span_t.gather(1, sel.indices.to(device))
            keep_cols.view(-1)[chosen.reshape(-1)] = True
        counts = keep_cols.sum(dim=1)
        new_len = int(counts.max())
        pads = new_len - counts  # left padding per row
        # gather[b, j]: original column feeding new column j (-1: padding).
        order = torch.argsort((~keep_cols).to(torch.int8), dim=1, stable=True)
        ar = torch.arange(new_len, device=device).unsqueeze(0)
        src = ar - pads.unsqueeze(1)
        gather = torch.where(src >= 0, order.gather(1, src.clamp(min=0)), torch.full_like(src, -1))
        valid = gather >= 0
        idx = gather.clamp(min=0)
        new_embeds = embeds.gather(1, idx.unsqueeze(-1).expand(-1, -1, hidden))
        new_embeds = new_embeds * valid.unsqueeze(-1).to(new_embeds.dtype)
        mask = kwargs.get("attention_mask")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
            raise ValueError("DivPrune needs a 2-D attention mask (or none)")
        if mask is None:
            mask_full = torch.ones(batch, length, dtype=torch.long, device=device)
        else:
            mask_full = mask.to(device)
        new_mask = mask_full.gather(1, idx) * valid.to(mask_full.dtype)
        pos = kwargs.get("position_ids")
        if pos is None:
            pos_orig = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)
        else:
            pos_orig = pos.to(device).expand(batch, -1)
        if self.positions == "original":
            new_pos = pos_orig.gather(1, idx) * valid.to(pos_orig.dtype)
        elif mask is None and bool((pads == 0).all()):
            new_pos = ar.expand(batch, -1)
        else:
            new_pos = (new_mask.long().cumsum(-1) - 1).clamp(min=0)
        self._state = _PromptState(
            prompt_len=length,
            new_len=new_len,
            gather=gather,
            last_orig=pos_orig[:, -1].clone(),
            last_new=new_pos[:, -1].clone(),
        )
        out = dict(kwargs)
        out["inputs_embeds"] = new_embeds
        out["position_ids"] = new_pos
        _renumber_cache_position(out, 0, new_len, device)
        if mask is not None or bool((pads > 0).any()):
            out["attention_mask"] = new_mask.to(mask.dtype if mask is not None else torch.long)
        self.last = PruneStats(length, new_len, tuple(lengths), tuple(kept))
        return out

    def _decode(self, embeds: torch.Tensor, kwargs: dict[str, Any], past: int) -> dict[str, Any]:
        st = self._state
        assert st is not None
        batch, steps = embeds.shape[:2]
        device = embeds.device
        out = dict(kwargs)
        mask = kwargs.get("attention_mask")
        valid = st.gather >= 0
        after = past - st.new_len  # tokens generated after the prompt so far
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
                raise ValueError("DivPrune needs a 2-D attention mask (or none)")
            if mask.shape[1] != st.prompt_len + after + steps:
                raise ValueError(
                    f"attention_mask has {mask.shape[1]} columns; DivPrune expected the "
                    f"unpruned prompt ({st.prompt_len}) plus {after + steps} generated tokens"
                )
            prompt = mask[:, : st.prompt_len].gather(1, st.gather.clamp(min=0)) * valid.to(
                mask.dtype
            )
            out["attention_mask"] = torch.cat([prompt, mask[:, st.prompt_len :]], dim=1)
        elif not bool(valid.all()):
            ones = torch.ones(batch, after + steps, dtype=torch.long, device=device)
            out["attention_mask"] = torch.cat([valid.long(), ones], dim=1)
        pos = kwargs.get("position_ids")
        step = torch.arange(steps, device=device).unsqueeze(0) + after + 1
        if pos is not None:
            # Callers (and generate) count positions on the unpruned prompt.
            shift = (st.last_orig - st.last_new).unsqueeze(1).to(pos.dtype)
            out["position_ids"] = pos if self.positions == "original" else pos - shift
        elif self.positions == "original":
            out["position_ids"] = st.last_orig.unsqueeze(1) + step
        else:
            out["position_ids"] = st.last_new.unsqueeze(1) + step
        _renumber_cache_position(out, past, steps, device)
        return out


def _renumber_cache_position(
    kwargs: dict[str, Any], past: int, steps: int, device: torch.device
) -> None:
    """Points ``cache_position`` at the slots of the pruned cache.

    Releases whose decoder takes ``past_key_values`` (transformers 5.0) also pass
    ``cache_position``, counted by ``generate`` on the unpruned sequence; the decoder builds its
    causal mask and writes the cache from it, so it must name ``past .. past+steps-1``.
    """
    if kwargs.get("cache_position") is not None:
        kwargs["cache_position"] = torch.arange(past, past + steps, device=device)


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
            (or their inner ``LlavaModel`` / ``LlavaNextModel``). Modified in place (hooks on
            this instance only) until the handle is removed.
        keep: Ratio of each image's tokens to keep, in (0, 1]; 1.0 changes nothing.
        positions: ``"compacted"`` renumbers the kept tokens consecutively; ``"original"``
            keeps their original position ids.
        method: Selection algorithm passed to :func:`~ferrolm.prune.divprune` (CPU only).

    Returns:
        A :class:`PruneHandle`: ``handle.remove()`` (or a ``with`` block) turns pruning off;
        ``handle.last`` reports the last prefill's counts.

    Raises:
        TypeError: ``model`` is not a LLaVA-style model with an image-token span.
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
    return PruneHandle(model, keep, positions, method)
