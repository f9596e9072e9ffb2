"""DivPrune inside Hugging Face vision-language models: one entry point for every family.

:func:`apply` recognises the model family (LLaVA, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL,
Qwen2.5-VL, Gemma 3, Idefics3 / SmolVLM, PaliGemma, or any model built like them) and prunes the
projected image tokens before they are merged into the prompt.

How it hooks in: one forward pre-hook on the instance's multimodal model (``model.model``), the
module that turns ``input_ids`` and images into the decoder's input. Every family in
transformers 5 takes pre-computed image features there (``mm_encoder_outputs``) and scatters them
into the positions of the image placeholder id. In a prefill the hook computes (or receives) the
image features, runs :func:`~ferrolm.prune.divprune` on each image's tokens and rewrites the
call as if the prompt had been written with only the kept placeholders: ``input_ids``,
``attention_mask``, ``token_type_ids`` / ``mm_token_type_ids`` and ``position_ids`` lose the
dropped columns and ``mm_encoder_outputs`` carries only the kept features. The model then does
everything else itself: the merge, Gemma 3's and PaliGemma's bidirectional image blocks (from
the pruned ``token_type_ids``), the decoder. Nothing in transformers is patched. (SmolVLM
under transformers 5.20, whose merge needs equal blocks of features, gets merged embeddings.)

Generation works because the hook remembers which prompt columns it dropped: later decode steps
drop the same columns from the (growing) attention mask and shift the position ids. Rows whose
prompts lose different numbers of tokens are re-aligned with extra left padding (attention 0).

"An image" is one contiguous run of image placeholders that one image's features fill: a whole
LLaVA-NeXT / OneVision image (base view and tiles), a Qwen2-VL image, a Gemma 3 or PaliGemma
image, and one tile (sub-image) of an Idefics3 / SmolVLM image, whose tiles are separate
placeholder runs in the prompt.

Position policy (``positions=``): ``"compacted"`` renumbers the kept tokens consecutively, as if
the prompt had been written without the pruned tokens (DivPrune's reference behaviour, the
default for 1-D rotary positions); ``"original"`` keeps every kept token's original position,
gaps included. Qwen2-VL and Qwen2.5-VL use ``"original"`` only: their M-RoPE gives each image
token a 3-D (time, height, width) position and the kept tokens keep theirs.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Optional

import torch

from ferrolm.prune._columns import ColumnMap, decode_inputs, prefill_columns
from ferrolm.prune._spans import Method, image_spans, pieces_of, repack, select_per_span
from ferrolm.prune.select import DEFAULT_KEEP, keep_count

__all__ = ["FAMILIES", "Family", "PruneHandle", "PruneStats", "apply"]


@dataclass(frozen=True)
class Family:
    """What :func:`apply` needs to know about one model family.

    Attributes:
        name: The family's name in messages.
        model_types: The ``config.model_type`` values of its multimodal model.
        mrope: 3-D rotary positions (Qwen2-VL's M-RoPE): only ``"original"`` positions.
        position_base: The model's first position when it numbers the prompt itself
            (PaliGemma counts from 1).
    """

    name: str
    model_types: tuple[str, ...]
    mrope: bool = False
    position_base: int = 0


FAMILIES: tuple[Family, ...] = (
    Family("LLaVA", ("llava",)),
    Family("LLaVA-NeXT", ("llava_next",)),
    Family("LLaVA-OneVision", ("llava_onevision",)),
    Family("Qwen2-VL", ("qwen2_vl",), mrope=True),
    Family("Qwen2.5-VL", ("qwen2_5_vl",), mrope=True),
    Family("Gemma 3", ("gemma3",)),
    Family("Idefics3 / SmolVLM", ("idefics3", "smolvlm")),
    Family("PaliGemma", ("paligemma",)),
)
"""The families :func:`apply` recognises by ``config.model_type``."""

_POLICIES = ("compacted", "original")
# Inputs of the multimodal model that :func:`apply` knows how to rewrite for a pruned prompt.
_REQUIRED_INPUTS = ("input_ids", "attention_mask", "position_ids", "mm_encoder_outputs")


def _supported() -> str:
    names = ", ".join(f.name for f in FAMILIES)
    return (
        f"{names}, and any model whose multimodal part has get_image_features, an image token "
        "id and a forward taking input_ids, attention_mask, position_ids and mm_encoder_outputs"
    )


@dataclass(frozen=True)
class PruneStats:
    """What the last prefill pruned.

    Attributes:
        prompt_tokens: Prompt length before pruning (``L``, including padding).
        kept_tokens: Prompt length after pruning (``L'``, including any added left padding).
        image_tokens: Image tokens per image, in the order the images fill the prompt.
        kept_image_tokens: Image tokens kept per image.
        kept_indices: For each image, the indices (ascending, into that image's tokens) of the
            tokens kept: the :func:`~ferrolm.prune.divprune` selection on its features.
    """

    prompt_tokens: int
    kept_tokens: int
    image_tokens: tuple[int, ...]
    kept_image_tokens: tuple[int, ...]
    kept_indices: tuple[tuple[int, ...], ...] = ()


def _image_token_id(config: Any) -> Optional[int]:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _find(model: Any, allowed: Optional[tuple[Family, ...]]) -> tuple[Any, Family]:
    """The multimodal module of ``model`` and its family, or a ``TypeError``."""
    candidates = [model]
    inner = getattr(model, "model", None)
    if isinstance(inner, torch.nn.Module):
        candidates.insert(0, inner)
    for module in candidates:
        if not isinstance(module, torch.nn.Module) or not hasattr(module, "get_image_features"):
            continue
        config = getattr(module, "config", None)
        if _image_token_id(config) is None:
            continue
        model_type = getattr(config, "model_type", None)
        family = next((f for f in FAMILIES if model_type in f.model_types), None)
        if allowed is not None:
            if family in allowed:
                return module, family
            continue
        if family is not None:
            return module, family
        params = inspect.signature(module.forward).parameters
        if hasattr(module, "get_rope_index") or not all(p in params for p in _REQUIRED_INPUTS):
            continue  # positions computed in a way the generic path cannot follow
        return module, Family(f"generic ({model_type})", ())
    names = ", ".join(f.name for f in allowed) if allowed is not None else _supported()
    raise TypeError(
        f"`model` must be a Hugging Face vision-language model of a supported family ({names}); "
        f"got {type(model).__name__}, which has no image-token span to prune"
    )


@dataclass
class _PromptState:
    """The column map of the last pruned prompt, reused by its decode steps."""

    columns: ColumnMap
    last_orig: torch.Tensor  # [B] original position of the last prompt token (max over axes)
    last_new: torch.Tensor  # [B] new position of the last prompt token


class PruneHandle:
    """Controls DivPrune on one model: returned by :func:`apply` and
    :func:`~ferrolm.prune.apply_to_llava`.

    Use :meth:`remove` (or leave a ``with`` block) to restore the model; set :attr:`enabled`
    to pause pruning without removing the hook. :attr:`last` describes the last prefill and
    :attr:`family` names the family recognised.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        keep: float,
        positions: Optional[str],
        method: Method,
        families: Optional[tuple[Family, ...]] = None,
    ) -> None:
        inner, family = _find(model, families)
        if positions is None:
            positions = "original" if family.mrope else "compacted"
        if positions not in _POLICIES:
            raise ValueError(f"`positions` must be 'compacted' or 'original', got {positions!r}")
        if family.mrope and positions != "original":
            raise ValueError(
                f"`positions` must be 'original' for {family.name}: its M-RoPE gives image "
                "tokens 3-D positions, which the kept tokens keep; got 'compacted'"
            )
        keep_count(1, keep)  # validates the ratio
        if method not in ("auto", "gram", "matrix_free"):
            raise ValueError(f"`method` must be 'auto', 'gram' or 'matrix_free', got {method!r}")
        if getattr(inner, "_ferrolm_prune_handle", None) is not None:
            raise RuntimeError(
                "DivPrune is already applied to this model; call .remove() on its handle first"
            )
        self.keep = keep
        self.positions = positions
        self.method = method
        self.family = family.name
        self.enabled = True
        self.last: Optional[PruneStats] = None
        self._family = family
        self._inner: Any = inner
        self._image_token_id = int(_image_token_id(inner.config))  # type: ignore[arg-type]
        self._signature = inspect.signature(inner.forward)
        self._feature_params = [
            name
            for name, p in inspect.signature(inner.get_image_features).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        self._state: Optional[_PromptState] = None
        # SmolVLM before transformers 5.21 cuts the image features into blocks of one fixed
        # length, which pruned tiles no longer have (5.21 replaced that merge by a scatter).
        self._own_merge = inner.config.model_type == "smolvlm" and hasattr(inner, "inputs_merger")
        self._hook = inner.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        inner._ferrolm_prune_handle = self

    def remove(self) -> None:
        """Removes the hook; the model behaves exactly as before :func:`apply`."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._inner.__dict__.get("_ferrolm_prune_handle") is self:  # not a later handle's
            del self._inner._ferrolm_prune_handle
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

    # the hook --------------------------------------------------------------------------------

    def _pre_hook(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Optional[tuple[tuple[Any, ...], dict[str, Any]]]:
        if not self.enabled:
            return None
        if args:
            bound = self._signature.bind_partial(*args, **kwargs)
            kwargs = dict(bound.arguments)
            for p in self._signature.parameters.values():
                if p.kind == p.VAR_KEYWORD:
                    kwargs.update(kwargs.pop(p.name, {}))
        encoded = kwargs.get("mm_encoder_outputs")
        image = encoded.get("image") if isinstance(encoded, dict) else None
        pixels = kwargs.get("pixel_values")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        if image is None and pixels is None:
            if self._state is not None and past > 0:
                return (), self._decode(kwargs, past)
            self._state = None
            return None
        ids = kwargs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError(
                "DivPrune needs 2-D `input_ids` to find the image tokens; calls with only "
                "`inputs_embeds` and images are not supported while it is applied"
            )
        if past != 0:
            raise ValueError(
                "DivPrune prunes images in the prefill only; got images with a non-empty cache"
            )
        video = kwargs.get("pixel_values_videos")
        if video is None and isinstance(encoded, dict):
            video = encoded.get("video")
        if video is not None:
            raise ValueError(
                "DivPrune prunes images only; got videos in the same call as images, which it "
                "does not support: pass them in a call without images, or remove the handle"
            )
        if image is None:
            wanted = {k: kwargs[k] for k in self._feature_params if k in kwargs}
            image = self._inner.get_image_features(**wanted, return_dict=True)
        return (), self._prefill(kwargs, ids, encoded, image)

    # the two cases ---------------------------------------------------------------------------

    def _prefill(
        self, kwargs: dict[str, Any], ids: torch.Tensor, encoded: Any, image: Any
    ) -> dict[str, Any]:
        pooled = getattr(image, "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"{type(self._inner).__name__}.get_image_features returned no pooler_output; "
                "DivPrune needs the projected image features"
            )
        pieces = pieces_of(pooled)
        spans = image_spans(ids, self._image_token_id, [int(p.shape[0]) for p in pieces])
        features = torch.cat(pieces, dim=0) if len(pieces) != 1 else pieces[0]
        selections = select_per_span(features, spans, self.keep, self.method)
        kept_rows = (
            torch.cat(
                [sel.to(features.device) + span.start for span, sel in zip(spans, selections)]
            )
            if spans
            else torch.zeros(0, dtype=torch.long, device=features.device)
        )
        new_image = copy.copy(image)
        new_image.pooler_output = repack(pooled, pieces, features, kept_rows)
        columns = prefill_columns(ids, self._image_token_id, spans, selections)
        out = dict(kwargs)
        out["pixel_values"] = None
        new_encoded = dict(encoded) if isinstance(encoded, dict) else {}
        new_encoded["image"] = new_image
        out["mm_encoder_outputs"] = new_encoded
        out["input_ids"] = columns.take(ids, fill=self._pad_id())
        if self._own_merge:
            # The scatter of later versions: the kept features, in order, over the kept
            # placeholders; the model then skips its own merge.
            embeds = self._inner.get_input_embeddings()(out["input_ids"])
            where = (out["input_ids"] == self._image_token_id).unsqueeze(-1)
            kept = features[kept_rows].to(embeds.device, embeds.dtype)
            out.update(inputs_embeds=embeds.masked_scatter(where, kept), input_ids=None)
            out["mm_encoder_outputs"] = None
        for name in ("token_type_ids", "mm_token_type_ids"):
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor) and value.shape == ids.shape:
                out[name] = columns.take(value, fill=0)
        if columns.new_len == ids.shape[1] and not bool(columns.pads.any()):
            self._state = None  # nothing dropped: positions and mask stay the caller's
        else:
            self._prefill_mask_and_positions(kwargs, out, ids, columns)
        self.last = PruneStats(
            prompt_tokens=ids.shape[1],
            kept_tokens=columns.new_len,
            image_tokens=tuple(s.length for s in spans),
            kept_image_tokens=tuple(int(s.numel()) for s in selections),
            kept_indices=tuple(tuple(int(i) for i in s.tolist()) for s in selections),
        )
        return out

    def _pad_id(self) -> int:
        config = self._inner.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        pad = getattr(text, "pad_token_id", None)
        if not isinstance(pad, int) or pad == self._image_token_id or pad < 0:
            pad = 0 if self._image_token_id != 0 else 1
        return pad

    def _prefill_mask_and_positions(
        self, kwargs: dict[str, Any], out: dict[str, Any], ids: torch.Tensor, cm: ColumnMap
    ) -> None:
        batch, length = ids.shape
        device = ids.device
        mask = kwargs.get("attention_mask")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
            raise ValueError(
                "DivPrune needs a 2-D attention mask (or none); got a prepared "
                f"{type(mask).__name__}, as generate makes for static caches"
            )
        mask_full = (
            torch.ones(batch, length, dtype=torch.long, device=device)
            if mask is None
            else mask.to(device)
        )
        new_mask = cm.take(mask_full, fill=0)
        dropped = cm.new_len < length or bool(cm.pads.any())
        pos = kwargs.get("position_ids")
        base = self._family.position_base
        if self._family.mrope:
            pos_orig = pos if pos is not None else self._mrope_positions(kwargs, ids)
            pos_orig = pos_orig.to(device)
            if pos_orig.dim() == 2:  # text-only positions: the same on the 3 axes
                pos_orig = pos_orig.expand(batch, -1).unsqueeze(0).expand(3, -1, -1)
            new_pos = cm.take(pos_orig, fill=0)
            spatial = pos_orig[-3:]  # the 3 M-RoPE axes (a 4th, leading row holds text positions)
            last_orig = spatial.amax(dim=0)[:, -1]
            last_new = last_orig
        else:
            if pos is None:
                pos_orig = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1) + base
                first = torch.full((batch,), base, dtype=torch.long, device=device)
            else:
                pos_orig = pos.to(device).expand(batch, -1)
                first = pos_orig.gather(1, mask_full.long().argmax(dim=1, keepdim=True))[:, 0]
            if self.positions == "original":
                new_pos = cm.take(pos_orig, fill=0)
            elif pos is None and mask is None and not bool(cm.pads.any()):
                new_pos = torch.arange(cm.new_len, device=device).unsqueeze(0).expand(batch, -1)
                new_pos = new_pos + base
            else:
                new_pos = (new_mask.long().cumsum(-1) - 1).clamp(min=0) + first.unsqueeze(1)
            last_orig = pos_orig[:, -1]
            last_new = new_pos[:, -1]
        self._state = _PromptState(cm, last_orig.clone(), last_new.clone())
        out["position_ids"] = new_pos
        # An explicit mask also keeps transformers from reading gaps in the positions as packed
        # sequences (it does so only when no mask is given).
        if mask is not None or (dropped and (bool(cm.pads.any()) or self.positions == "original")):
            out["attention_mask"] = new_mask.to(mask.dtype if mask is not None else torch.long)

    def _mrope_positions(self, kwargs: dict[str, Any], ids: torch.Tensor) -> torch.Tensor:
        """The unpruned prompt's 3-D positions, computed by the model's own ``get_rope_index``."""
        params = inspect.signature(self._inner.get_rope_index).parameters
        wanted = {k: v for k, v in kwargs.items() if k in params and k != "input_ids"}
        if wanted.get("mm_token_type_ids", 0) is None:
            raise ValueError(
                f"{self.family} needs `mm_token_type_ids` (returned by its processor) to compute "
                "the 3-D positions of the image tokens"
            )
        positions, deltas = self._inner.get_rope_index(ids, **wanted)
        # What the model itself would remember after this prefill.
        self._inner.rope_deltas = deltas
        return positions  # type: ignore[no-any-return]

    def _decode(self, kwargs: dict[str, Any], past: int) -> dict[str, Any]:
        st = self._state
        assert st is not None
        return decode_inputs(
            kwargs,
            past,
            st.columns,
            st.last_orig,
            st.last_new,
            original=self.positions == "original",
            mrope=self._family.mrope,
        )


def apply(
    model: torch.nn.Module,
    keep: float = DEFAULT_KEEP,
    *,
    positions: Optional[Literal["compacted", "original"]] = None,
    method: Literal["auto", "gram", "matrix_free"] = "auto",
) -> PruneHandle:
    """Prunes the image tokens of a Hugging Face vision-language model with DivPrune.

    After this call every forward or ``generate`` call that carries images keeps
    ``round(keep * n)`` (at least 1) of each image's ``n`` projected tokens, chosen by
    :func:`~ferrolm.prune.divprune` on that image's features, and drops the others before the
    first decoder layer, with their placeholder ids, attention-mask, token-type and position
    columns. Text tokens are never dropped. Batches, several images per prompt and padded
    prompts work; logits come back for the pruned sequence (``L'`` positions instead of ``L``).

    Supported: LLaVA, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL (3-D positions kept),
    Gemma 3, Idefics3 / SmolVLM (pruned per tile), PaliGemma, and any model whose multimodal
    part exposes ``get_image_features``, an image token id and a forward taking
    ``input_ids``, ``attention_mask``, ``position_ids`` and ``mm_encoder_outputs``.

    Args:
        model: The ``...ForConditionalGeneration`` model (or its inner multimodal model).
            Modified in place (a hook on this instance only) until the handle is removed.
        keep: Ratio of each image's tokens to keep, in (0, 1]; 1.0 changes nothing.
        positions: ``"compacted"`` renumbers the kept tokens consecutively; ``"original"``
            keeps their original position ids. ``None``: ``"original"`` for M-RoPE families
            (the only policy they take), ``"compacted"`` for the others.
        method: Selection algorithm passed to :func:`~ferrolm.prune.divprune` (CPU only).

    Returns:
        A :class:`PruneHandle`: ``handle.remove()`` (or a ``with`` block) turns pruning off;
        ``handle.last`` reports the last prefill's counts and selections.

    Raises:
        TypeError: ``model`` is not a vision-language model of a supported family.
        ValueError: ``keep`` is not in (0, 1], ``positions`` or ``method`` is unknown, or
            ``"compacted"`` was asked of an M-RoPE family.
        RuntimeError: DivPrune is already applied to this model.

    Example:
        A tiny random Qwen2-VL stands in for
        ``Qwen2VLForConditionalGeneration.from_pretrained(...)``; its inputs (16 image tokens
        for an 8 x 8 patch grid) stand in for its processor's output:

        >>> from ferrolm import prune
        >>> from ferrolm.testing.prune import tiny_vlm, vlm_inputs
        >>> model = tiny_vlm("qwen2_vl")
        >>> inputs = vlm_inputs(model, [[[1, 2], None, [3]]])
        >>> handle = prune.apply(model, keep=0.25)
        >>> out = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0)
        >>> handle.family, handle.last.image_tokens, handle.last.kept_image_tokens
        ('Qwen2-VL', (16,), (4,))
        >>> handle.remove()
    """
    return PruneHandle(model, keep, positions, method)
