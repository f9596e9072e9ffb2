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
