"""DivPrune scaffolding: the paper's selection routine in torch (the baseline of the demo and
the bench) and tiny random LLaVA / LLaVA-NeXT models built in-process (tests and demo)."""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["tiny_llava", "torch_divprune"]


def torch_divprune(x: torch.Tensor, k: int) -> torch.Tensor:
    """The DivPrune reference routine re-expressed in torch: ``k`` token indices of one image's
    ``[N, d]`` features, in greedy order.

    It builds the full cosine-distance matrix, takes the first pick by ``topk(2)`` per column,
    then at each step ``index_select``s the rows of the tokens chosen so far and takes a column
    ``min`` and an ``argmax``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
        >>> torch_divprune(x, 2).tolist()
        [3, 0]
    """
    xn = x / x.norm(dim=1, keepdim=True)
    cosine = 1.0 - torch.mm(xn, xn.t())
    picks = torch.empty(k, dtype=torch.long, device=x.device)
    for i in range(k):
        if i == 0:
            scores = torch.topk(cosine, 2, dim=0, largest=False).values[1, :]
        else:
            scores = torch.min(torch.index_select(cosine, 0, picks[:i]), dim=0).values
        picks[i] = torch.argmax(scores)
    return picks


def tiny_llava(
    *,
    image_size: int = 32,
    patch_size: int = 4,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 64,
    text_intermediate: int = 128,
    text_layers: int = 2,
    text_heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 128,
    image_token: int = 127,
    positions: int = 512,
    grid_pinpoints: Optional[list[list[int]]] = None,
) -> Any:
    """A random LLaVA model (LLaVA-NeXT when ``grid_pinpoints`` is given) in eval mode, with a
    CLIP vision tower and a Llama decoder; the weights are fixed by ``torch.manual_seed(0)``.

    Each image of ``image_size`` pixels square becomes ``(image_size // patch_size) ** 2``
    image tokens (LLaVA-NeXT adds the tiles of its grid). Needs ``transformers``.
    """
    import transformers

    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = transformers.LlamaConfig(
        hidden_size=text_hidden,
        intermediate_size=text_intermediate,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        max_position_embeddings=positions,
    )
    common: dict[str, Any] = {
        "vision_config": vision,
        "text_config": text,
        "image_token_index": image_token,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
    }
    model: Any
    if grid_pinpoints is None:
        model = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(**common))
    else:
        config = transformers.LlavaNextConfig(image_grid_pinpoints=grid_pinpoints, **common)
        model = transformers.LlavaNextForConditionalGeneration(config)
    return model.eval()


# Tiny random models of the other vision-language families, and their inputs -------------------

TINY_FAMILIES = (
    "llava",
    "llava_next",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "gemma3",
    "idefics3",
    "smolvlm",
    "paligemma",
    "vipllava",
)
"""The ``config.model_type`` of every model :func:`tiny_vlm` builds. VipLLaVA is not one of
:data:`ferrolm.prune.FAMILIES`: it stands for "any model that exposes image features and an
image token id", which :func:`ferrolm.prune.apply` handles generically."""

VOCAB = 128
IMAGE_TOKEN = 127
# Special ids of the tiny vocabulary: Qwen2-VL's video / vision-start / vision-end, Gemma 3's
# begin / end of image; Idefics3's tile markers reuse ids 3 and 4 (stand-ins for
# <fake_token_around_image> and the <row_i_col_j> tokens).
_VIDEO, _START, _END = 126, 125, 124
_TILE_OPEN, _TILE_CLOSE = 3, 4


def _llama_text(**extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 1024,
        "pad_token_id": 0,
        **extra,
    }


def _siglip(image_size: int = 32, patch_size: int = 4) -> dict[str, Any]:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def tiny_vlm(model_type: str) -> Any:
    """A random ``...ForConditionalGeneration`` of the family ``model_type`` (one of
    :data:`TINY_FAMILIES`) in eval mode, with the family's real HF architecture at toy sizes:
    vocabulary 128, image placeholder id 127, 32 x 32 images (Qwen2-VL: 8 x 8 patch grids).
    The weights are fixed by ``torch.manual_seed(0)``. Needs ``transformers``.

    Image tokens per image: LLaVA 64; LLaVA-NeXT / OneVision depend on ``image_sizes``;
    Qwen2-VL / Qwen2.5-VL ``h * w / 4`` for a ``[1, h, w]`` grid; Gemma 3 16; Idefics3 /
    SmolVLM 16 per tile; PaliGemma 16; VipLLaVA 16.
    """
    import transformers as tf

    if model_type in ("llava", "llava_next"):
        pinpoints = [[32, 32], [32, 64], [64, 32]] if model_type == "llava_next" else None
        return tiny_llava(
            patch_size=8 if pinpoints else 4,
            vocab=VOCAB,
            image_token=IMAGE_TOKEN,
            positions=1024,
            grid_pinpoints=pinpoints,
        )
    torch.manual_seed(0)
    model: Any
    config: Any
    text: Any
    vision: Any
    if model_type == "llava_onevision":
        config = tf.LlavaOnevisionConfig(
            vision_config=tf.SiglipVisionConfig(**_siglip(patch_size=8)),
            text_config=tf.Qwen2Config(**_llama_text()),
            image_token_index=IMAGE_TOKEN,
            video_token_index=_VIDEO,
            image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
        )
        model = tf.LlavaOnevisionForConditionalGeneration(config)
    elif model_type in ("qwen2_vl", "qwen2_5_vl"):
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
        text = _llama_text(rope_parameters=rope, bos_token_id=1, eos_token_id=2)
        ids: dict[str, Any] = {
            "image_token_id": IMAGE_TOKEN,
            "video_token_id": _VIDEO,
            "vision_start_token_id": _START,
            "vision_end_token_id": _END,
        }
        common = {"depth": 2, "num_heads": 4, "patch_size": 4, "spatial_merge_size": 2}
        if model_type == "qwen2_vl":
            vision = {**common, "embed_dim": 32, "hidden_size": 64}
            model = tf.Qwen2VLForConditionalGeneration(
                tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
            )
        else:
            vision = {
                **common,
                "hidden_size": 32,
                "intermediate_size": 64,
                "out_hidden_size": 64,
                "window_size": 16,
                "fullatt_block_indexes": [1],
            }
            model = tf.Qwen2_5_VLForConditionalGeneration(
                tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
            )
    elif model_type == "gemma3":
        text = tf.Gemma3TextConfig(
            **_llama_text(head_dim=16, query_pre_attn_scalar=16, sliding_window=16),
        )
        config = tf.Gemma3Config(
            text_config=text,
            vision_config=tf.SiglipVisionConfig(**_siglip()),
            mm_tokens_per_image=16,
            image_token_index=IMAGE_TOKEN,
            boi_token_index=_START,
            eoi_token_index=_END,
        )
        model = tf.Gemma3ForConditionalGeneration(config)
        # Initialised to zeros (trained in real checkpoints), which would make every image
        # token the zero vector.
        with torch.no_grad():
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.2)
    elif model_type in ("idefics3", "smolvlm"):
        vision = _siglip()
        text = tf.LlamaConfig(**_llama_text())
        if model_type == "idefics3":
            config = tf.Idefics3Config(
                vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, scale_factor=2
            )
            model = tf.Idefics3ForConditionalGeneration(config)
        else:
            config = tf.SmolVLMConfig(
                vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, scale_factor=2
            )
            model = tf.SmolVLMForConditionalGeneration(config)
    elif model_type == "paligemma":
        text = tf.GemmaConfig(**_llama_text(head_dim=16))
        config = tf.PaliGemmaConfig(
            vision_config=tf.SiglipVisionConfig(**_siglip(patch_size=8)),
            text_config=text,
            image_token_index=IMAGE_TOKEN,
            projection_dim=64,
            hidden_size=64,
        )
        model = tf.PaliGemmaForConditionalGeneration(config)
    elif model_type == "vipllava":
        vision = tf.CLIPVisionConfig(**_siglip(patch_size=8), projection_dim=32)
        # The plural is the only name before transformers 5.23 (later ones alias it to
        # `vision_feature_layer`); an unknown name would leave the 5-layer default.
        layers: dict[str, Any] = {"vision_feature_layers": [-1, -2]}
        config = tf.VipLlavaConfig(
            vision_config=vision,
            text_config=tf.LlamaConfig(**_llama_text()),
            image_token_index=IMAGE_TOKEN,
            **layers,
        )
        model = tf.VipLlavaForConditionalGeneration(config)
    else:
        raise ValueError(f"`model_type` must be one of {TINY_FAMILIES}, got {model_type!r}")
    return model.eval()


def vlm_inputs(model: Any, rows: list[list[Any]], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Model inputs for prompts of text and images, left-padded into one batch.

    Each row is a list of parts: a list of text ids (below 120), or ``None`` for one image
    with random pixels (``torch.manual_seed(seed)``), laid out as the family's processor
    would: placeholder runs wrapped in the family's markers, the per-image extras it needs
    (``image_sizes``, ``image_grid_thw``, ``mm_token_type_ids``, ``token_type_ids``). An
    Idefics3 / SmolVLM image has two tiles; LLaVA-NeXT / OneVision images alternate between
    two sizes and Qwen2-VL images between two grids, so images differ in token count.
    """
    model_type = model.config.model_type
    inner = model.model
    gen = torch.Generator().manual_seed(seed)
    n_images = sum(p is None for r in rows for p in r)
    extra: dict[str, torch.Tensor] = {}
    runs: list[list[int]] = []  # placeholder runs per image
    if model_type in ("llava", "vipllava"):
        extra["pixel_values"] = torch.randn(n_images, 3, 32, 32, generator=gen)
        runs = [[64 if model_type == "llava" else 16]] * n_images
    elif model_type in ("llava_next", "llava_onevision"):
        sizes = torch.tensor([[32, 64], [30, 30]] * n_images)[:n_images]
        pix = torch.randn(n_images, 3, 3, 32, 32, generator=gen)  # base view + up to 2 tiles
        feats = inner.get_image_features(pixel_values=pix, image_sizes=sizes, return_dict=True)
        runs = [[int(f.reshape(-1, f.shape[-1]).shape[0])] for f in feats.pooler_output]
        extra.update(pixel_values=pix, image_sizes=sizes)
    elif model_type in ("qwen2_vl", "qwen2_5_vl"):
        grids = torch.tensor([[1, 8, 8], [1, 4, 8]] * n_images)[:n_images]
        patches = int(grids.prod(-1).sum())
        extra["pixel_values"] = torch.randn(patches, 3 * 2 * 4 * 4, generator=gen)
        extra["image_grid_thw"] = grids
        runs = [[int(g.prod()) // 4] for g in grids]
    elif model_type == "gemma3":
        extra["pixel_values"] = torch.randn(n_images, 3, 32, 32, generator=gen)
        runs = [[16]] * n_images
    elif model_type in ("idefics3", "smolvlm"):
        per_row = [sum(p is None for p in r) * 2 for r in rows]
        pix = torch.zeros(len(rows), max(max(per_row), 1), 3, 32, 32)
        for i, n in enumerate(per_row):
            pix[i, :n] = torch.randn(n, 3, 32, 32, generator=gen)
        extra["pixel_values"] = pix
        runs = [[16, 16]] * n_images
    elif model_type == "paligemma":
        extra["pixel_values"] = torch.randn(n_images, 3, 32, 32, generator=gen)
        runs = [[16]] * n_images
    else:
        raise ValueError(f"no input layout for model type {model_type!r}")
    it = iter(runs)
    seqs: list[list[int]] = []
    kinds: list[list[int]] = []  # 1 on image placeholders
    for r in rows:
        ids: list[int] = []
        kind: list[int] = []
        for part in r:
            if part is not None:
                ids += list(part)
                kind += [0] * len(part)
                continue
            for tile, n in enumerate(next(it)):
                before = {
                    "qwen2_vl": [_START],
                    "qwen2_5_vl": [_START],
                    "gemma3": [_START],
                    "idefics3": [_TILE_OPEN, 10 + tile],
                    "smolvlm": [_TILE_OPEN, 10 + tile],
                }.get(model_type, [])
                after = {"qwen2_vl": [_END], "qwen2_5_vl": [_END], "gemma3": [_END]}.get(
                    model_type, []
                )
                after = after or ([_TILE_CLOSE] if model_type in ("idefics3", "smolvlm") else [])
                ids += before + [IMAGE_TOKEN] * n + after
                kind += [0] * len(before) + [1] * n + [0] * len(after)
        seqs.append(ids)
        kinds.append(kind)
    width = max(map(len, seqs))
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    kind_t = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (s, k) in enumerate(zip(seqs, kinds)):
        input_ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
        kind_t[i, width - len(k) :] = torch.tensor(k)
    out = {"input_ids": input_ids, "attention_mask": mask, **extra}
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        out["mm_token_type_ids"] = kind_t.int()
    elif model_type == "gemma3":
        out["token_type_ids"] = kind_t
    elif model_type == "paligemma":
        out["token_type_ids"] = torch.zeros_like(input_ids)  # the whole prompt is the prefix
    return out
