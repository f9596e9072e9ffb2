"""`ferrolm.prune.apply` on tiny random models of every supported family, built in-process.

Each family's model has its real Hugging Face architecture at toy sizes
(`ferrolm.testing.prune.tiny_vlm`); prompts are batched, left-padded, with several images of
different token counts per row (`vlm_inputs`). VipLLaVA stands for the generic case.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ferrolm import prune
from ferrolm.testing import prune as testing_prune

transformers = pytest.importorskip("transformers")

FAMILIES = testing_prune.TINY_FAMILIES
IMAGE = testing_prune.IMAGE_TOKEN
# Row 0: two images; row 1: one image and a shorter prompt (left padding; its pruned length
# differs, so the rows are re-aligned).
ROWS = [[[1, 5], None, [6], None, [7, 8]], [[1], None, [9, 10, 11]]]
NAMES = {
    "llava": "LLaVA",
    "llava_next": "LLaVA-NeXT",
    "llava_onevision": "LLaVA-OneVision",
    "qwen2_vl": "Qwen2-VL",
    "qwen2_5_vl": "Qwen2.5-VL",
    "gemma3": "Gemma 3",
    "idefics3": "Idefics3 / SmolVLM",
    "smolvlm": "Idefics3 / SmolVLM",
    "paligemma": "PaliGemma",
    "vipllava": "generic (vipllava)",
}
MROPE = ("qwen2_vl", "qwen2_5_vl")

_models: dict[str, Any] = {}


def model_of(family: str) -> Any:
    if family not in _models:
        _models[family] = testing_prune.tiny_vlm(family)
    return _models[family]


def decoder_of(model: Any) -> torch.nn.Module:
    inner = model.model
    return inner.language_model if hasattr(inner, "language_model") else inner.text_model


def extend(family: str, inputs: dict[str, Any], nxt: torch.Tensor) -> dict[str, Any]:
    """The inputs with one more generated token per row, as a full (uncached) forward sees it."""
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], nxt], dim=1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(nxt)], dim=1)
    for name in ("mm_token_type_ids", "token_type_ids"):
        if name in inputs:
            # Generated tokens are text; PaliGemma marks them as the (causal) suffix.
            fill = 1 if family == "paligemma" else 0
            out[name] = torch.cat([inputs[name], torch.full_like(nxt, fill).to(inputs[name])], 1)
    return out


def image_features(model: Any, inputs: dict[str, Any]) -> list[torch.Tensor]:
    """Each image's (or Idefics3 tile's) projected features, computed without the handle and
    split by the placeholder runs of the prompt, in the order they fill it."""
    inner = model.model
    import inspect

    params = inspect.signature(inner.get_image_features).parameters
    pooled = inner.get_image_features(
        **{k: v for k, v in inputs.items() if k in params}, return_dict=True
    ).pooler_output
    pieces = [pooled] if isinstance(pooled, torch.Tensor) else list(pooled)
    flat = torch.cat([p.reshape(-1, p.shape[-1]) for p in pieces])
    runs: list[int] = []
    for row in inputs["input_ids"].tolist():
        prev = False
        for tok in row:
            if tok == IMAGE:
                if prev:
                    runs[-1] += 1
                else:
                    runs.append(1)
            prev = tok == IMAGE
    assert sum(runs) == flat.shape[0]
    return list(flat.split(runs))


def greedy_by_full_forwards(family: str, model: Any, inputs: dict[str, Any], steps: int):
    for _ in range(steps):
        logits = model(**inputs).logits
        inputs = extend(family, inputs, logits[:, -1].argmax(-1, keepdim=True))
    return inputs["input_ids"]


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_keep_one_gives_the_unpruned_logits_bit_for_bit(family):
    model = model_of(family)
    inputs = testing_prune.vlm_inputs(model, ROWS)
    ref = model(**inputs).logits
    with prune.apply(model, keep=1.0) as handle:
        out = model(**inputs).logits
    assert handle.family == NAMES[family]
    assert handle.last is not None
    assert handle.last.kept_tokens == inputs["input_ids"].shape[1]
    assert handle.last.kept_image_tokens == handle.last.image_tokens
    assert torch.equal(out, ref)


# LLaVA and LLaVA-NeXT: the same check is in test_prune_llava.py (through apply_to_llava, which
# is this handle restricted to them).
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("llava", "llava_next")])
@torch.no_grad()
def test_batched_multi_image_generate_equals_greedy_full_forwards(family):
    model = model_of(family)
    inputs = testing_prune.vlm_inputs(model, ROWS, seed=1)
    with prune.apply(model, keep=0.3) as handle:
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert handle.last is not None
        kept = handle.last.kept_image_tokens
        want = greedy_by_full_forwards(family, model, inputs, 3)
    assert kept == tuple(prune.keep_count(n, 0.3) for n in handle.last.image_tokens)
    assert kept != handle.last.image_tokens
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out, want)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_kept_tokens_are_the_divprune_selection_of_each_image(family):
    model = model_of(family)
    inputs = testing_prune.vlm_inputs(model, ROWS, seed=2)
    keep = 0.2
    feats = image_features(model, inputs)
    want = [prune.divprune(f, keep=keep).indices for f in feats]
    seen: dict[str, Any] = {}

    def rewritten(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if kwargs["input_ids"] is not None:
            seen["ids"] = kwargs["input_ids"]

    def embedded(module: Any, args: Any) -> None:
        # SmolVLM before transformers 5.21: ferrolm embeds the kept ids and merges itself.
        seen.setdefault("ids", args[0])

    def decoder_input(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen["embeds"] = kwargs["inputs_embeds"]
        seen["pos"] = kwargs["position_ids"]

    handle = prune.apply(model, keep=keep)
    hooks = [
        model.model.register_forward_pre_hook(rewritten, with_kwargs=True),
        decoder_of(model).register_forward_pre_hook(decoder_input, with_kwargs=True),
        model.model.get_input_embeddings().register_forward_pre_hook(embedded),
    ]
    try:
        model(**inputs)
    finally:
        for h in hooks:
            h.remove()
        handle.remove()
    assert handle.last is not None
    assert handle.last.kept_indices == tuple(tuple(w.tolist()) for w in want)
    # The decoder receives exactly the selected features, in order, at the kept placeholders.
    placed = seen["embeds"][seen["ids"] == IMAGE]
    assert torch.equal(placed, torch.cat([f[w] for f, w in zip(feats, want)]).to(placed.dtype))
    if family in MROPE:
        # M-RoPE: every kept token keeps its 3-D (time, height, width) position.
        ids = inputs["input_ids"]
        orig, _ = model.model.get_rope_index(
            ids,
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
        image_no = 0
        for b in range(ids.shape[0]):
            cols = []
            row = ids[b].tolist()
            j = 0
            while j < len(row):
                if row[j] != IMAGE:
                    cols.append(j) if inputs["attention_mask"][b, j] else None
                    j += 1
                    continue
                n = len(feats[image_no])
                cols += [j + int(i) for i in want[image_no]]
                image_no += 1
                j += n
            got = seen["pos"][-3:, b, -len(cols) :]
            assert torch.equal(got, orig[:, b, cols])


@torch.no_grad()
def test_qwen2_vl_kept_positions_without_a_mask_and_compacted_is_refused():
    model = model_of("qwen2_vl")
    inputs = testing_prune.vlm_inputs(model, [[[1, 2], None, [3]]], seed=3)
    inputs.pop("attention_mask")
    with pytest.raises(ValueError, match="'original' for Qwen2-VL"):
        prune.apply(model, keep=0.5, positions="compacted")
    assert not model.model._forward_pre_hooks
    with prune.apply(model, keep=0.25) as handle:
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert handle.last is not None
    assert handle.last.kept_image_tokens == (4,)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5, float("nan"), True, "0.5"])
def test_keep_outside_the_unit_interval_is_refused_and_nothing_changes(keep):
    model = model_of("gemma3")
    with pytest.raises(ValueError, match="`keep` must be a ratio in"):
        prune.apply(model, keep=keep)
    assert not model.model._forward_pre_hooks
    assert "_ferrolm_prune_handle" not in model.model.__dict__


def test_an_unsupported_model_is_refused_naming_the_families():
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=64,
    )
    llama = transformers.LlamaForCausalLM(config)
    with pytest.raises(TypeError, match=r"Qwen2-VL.*Gemma 3.*PaliGemma.*LlamaForCausalLM"):
        prune.apply(llama)
    assert not llama.model._forward_pre_hooks
    with pytest.raises(TypeError, match=r"LLaVA, LLaVA-NeXT\).*Gemma3ForConditionalGeneration"):
        prune.apply_to_llava(model_of("gemma3"))
    with pytest.raises(ValueError, match="`positions`"):
        prune.apply(model_of("gemma3"), positions="shifted")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`method`"):
        prune.apply(model_of("gemma3"), method="fast")  # type: ignore[arg-type]
    assert not model_of("gemma3").model._forward_pre_hooks


@torch.no_grad()
def test_inputs_are_not_mutated_and_double_application_is_refused():
    model = model_of("idefics3")
    inputs = testing_prune.vlm_inputs(model, ROWS)
    before = {k: v.clone() for k, v in inputs.items()}
    with prune.apply(model, keep=0.5):
        with pytest.raises(RuntimeError, match="already applied"):
            prune.apply(model)
        model(**inputs)
        encoded = {"image": model.model.get_image_features(pixel_values=inputs["pixel_values"])}
        mm = dict(encoded)
        rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
        model(**rest, mm_encoder_outputs=mm)
    assert mm.keys() == encoded.keys()
    assert mm["image"] is encoded["image"]
    assert all(torch.equal(inputs[k], v) for k, v in before.items())
    assert not model.model._forward_pre_hooks
    first = prune.apply(model)
    first.remove()
    second = prune.apply(model)
    first.remove()  # a stale handle leaves the newer one alone
    with pytest.raises(RuntimeError, match="already applied"):
        prune.apply(model)
    second.remove()
    assert not model.model._forward_pre_hooks


@torch.no_grad()
def test_bad_calls_while_applied_are_clear_errors():
    model = model_of("gemma3")
    inputs = testing_prune.vlm_inputs(model, ROWS)
    with prune.apply(model, keep=0.5):
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        with pytest.raises(ValueError, match="needs 2-D `input_ids`"):
            model(inputs_embeds=embeds, pixel_values=inputs["pixel_values"])
        short = dict(inputs, input_ids=inputs["input_ids"][:, 5:])
        short["attention_mask"] = inputs["attention_mask"][:, 5:]
        short["token_type_ids"] = inputs["token_type_ids"][:, 5:]
        with pytest.raises(ValueError, match=r"image tokens .* but the images have"):
            model(**short)
    qwen = model_of("qwen2_vl")
    q_inputs = testing_prune.vlm_inputs(qwen, ROWS)
    with prune.apply(qwen, keep=0.5):
        with pytest.raises(ValueError, match="videos"):
            qwen(**q_inputs, pixel_values_videos=torch.randn(64, 96), video_grid_thw=None)
        no_types = {k: v for k, v in q_inputs.items() if k != "mm_token_type_ids"}
        with pytest.raises(ValueError, match="mm_token_type_ids"):
            qwen(**no_types)


@torch.no_grad()
def test_qwen2_vl_beam_search_with_keep_one_changes_nothing_and_prunes_each_beam():
    model = model_of("qwen2_vl")
    inputs = testing_prune.vlm_inputs(model, ROWS, seed=4)
    kwargs = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0, "num_beams": 2}
    ref = model.generate(**inputs, **kwargs)
    with prune.apply(model, keep=1.0):
        assert torch.equal(model.generate(**inputs, **kwargs), ref)
    with prune.apply(model, keep=0.3) as handle:
        out = model.generate(**inputs, **kwargs)
    assert out.shape == ref.shape
    assert handle.last is not None
    assert handle.last.image_tokens == (16, 8) * 2 + (16,) * 2  # each row repeated per beam
