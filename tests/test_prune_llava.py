"""`ferrolm.prune.apply_to_llava` on tiny random LLaVA / LLaVA-NeXT models built in-process."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ferrolm import prune
from ferrolm.testing import prune as testing_prune

transformers = pytest.importorskip("transformers")

IMAGE = 127  # image token id of the tiny models
VOCAB = 128


def tiny_llava() -> Any:
    return testing_prune.tiny_llava(vocab=VOCAB, image_token=IMAGE)


def tiny_llava_next() -> Any:
    return testing_prune.tiny_llava(
        patch_size=8,
        vocab=VOCAB,
        image_token=IMAGE,
        positions=1024,
        grid_pinpoints=[[32, 32], [32, 64], [64, 32]],
    )


TOKENS_PER_IMAGE = 64  # (32 / 4)^2 patches, CLS dropped


def prompt(*parts: Any) -> list[int]:
    """Text ids and `None` for an image span."""
    ids: list[int] = []
    for p in parts:
        ids += [IMAGE] * TOKENS_PER_IMAGE if p is None else list(p)
    return ids


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


@torch.no_grad()
def test_keep_one_gives_the_unpruned_logits():
    model = tiny_llava()
    ids = torch.tensor([prompt([1, 5, 6], None, [7, 8, 9])])
    pix = torch.randn(1, 3, 32, 32)
    ref = model(input_ids=ids, pixel_values=pix).logits
    with prune.apply_to_llava(model, keep=1.0) as handle:
        out = model(input_ids=ids, pixel_values=pix).logits
    assert handle.last is not None
    assert handle.last.kept_tokens == ids.shape[1]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@torch.no_grad()
def test_pruning_shrinks_the_sequence_by_the_expected_count():
    model = tiny_llava()
    ids = torch.tensor([prompt([1, 5], None, [7], None, [8, 9])])
    pix = torch.randn(2, 3, 32, 32)
    handle = prune.apply_to_llava(model, keep=0.25)
    out = model(input_ids=ids, pixel_values=pix).logits
    kept = prune.keep_count(TOKENS_PER_IMAGE, 0.25)
    assert out.shape[1] == ids.shape[1] - 2 * (TOKENS_PER_IMAGE - kept)
    assert handle.last is not None
    assert handle.last.kept_image_tokens == (kept, kept)
    handle.remove()
    assert model(input_ids=ids, pixel_values=pix).logits.shape[1] == ids.shape[1]


@torch.no_grad()
def test_kept_tokens_are_the_divprune_selection_of_each_image():
    model = tiny_llava()
    ids = torch.tensor([prompt([1], None, [2])])
    pix = torch.randn(1, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}

    def capture(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen.update({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

    features = model.model.get_image_features(pixel_values=pix, return_dict=True).pooler_output[0]
    handle = prune.apply_to_llava(model, keep=0.1)
    hook = model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    model(input_ids=ids, pixel_values=pix)
    hook.remove()
    handle.remove()
    want = prune.divprune(features, keep=0.1).indices
    torch.testing.assert_close(seen["inputs_embeds"][0, 1:-1], features[want])
    assert seen["position_ids"].tolist() == [list(range(2 + len(want)))]


@torch.no_grad()
def test_original_position_policy_keeps_the_positions_of_kept_tokens():
    model = tiny_llava()
    ids = torch.tensor([prompt([1, 2], None, [3])])
    pix = torch.randn(1, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    handle = prune.apply_to_llava(model, keep=0.2, positions="original")
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.update(pos=kw["position_ids"]), with_kwargs=True
    )
    model(input_ids=ids, pixel_values=pix)
    hook.remove()
    handle.remove()
    pos = seen["pos"][0].tolist()
    assert pos[:2] == [0, 1]
    assert pos[-1] == ids.shape[1] - 1
    assert pos == sorted(pos)
    assert len(pos) == 3 + prune.keep_count(TOKENS_PER_IMAGE, 0.2)


def greedy_without_cache(model: Any, ids: torch.Tensor, mask: torch.Tensor, pix: Any, steps: int):
    """Greedy decoding by full forwards (no cache): the ground truth for `generate`."""
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pix).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return ids


@pytest.mark.parametrize("positions", ["compacted", "original"])
@torch.no_grad()
def test_batched_multi_image_generate_matches_full_forwards(positions):
    model = tiny_llava()
    # Row 0: two images; row 1: one image and a shorter prompt (left padding, and its pruned
    # length differs, so the hook re-aligns the rows).
    ids, mask = left_pad([prompt([1, 4], None, [5], None, [6, 7]), prompt([1], None, [9, 10, 11])])
    pix = torch.randn(3, 3, 32, 32)
    with prune.apply_to_llava(model, keep=0.3, positions=positions):
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=pix,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
        )
        want = greedy_without_cache(model, ids, mask, pix, 6)
    assert out.shape == (2, ids.shape[1] + 6)
    assert torch.equal(out, want)


@torch.no_grad()
def test_generate_with_keep_one_equals_unpruned_generate():
    model = tiny_llava()
    ids = torch.tensor([prompt([1, 5], None, [7])] * 2)
    pix = torch.randn(2, 3, 32, 32)
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    ref = model.generate(input_ids=ids, pixel_values=pix, **kwargs)
    with prune.apply_to_llava(model, keep=1.0):
        out = model.generate(input_ids=ids, pixel_values=pix, **kwargs)
    assert torch.equal(out, ref)


@torch.no_grad()
def test_disabled_handle_leaves_the_model_unchanged():
    model = tiny_llava()
    ids = torch.tensor([prompt([3], None, [4])])
    pix = torch.randn(1, 3, 32, 32)
    ref = model(input_ids=ids, pixel_values=pix).logits
    handle = prune.apply_to_llava(model, keep=0.1)
    handle.enabled = False
    torch.testing.assert_close(model(input_ids=ids, pixel_values=pix).logits, ref, rtol=0, atol=0)
    handle.remove()
    assert "get_image_features" not in model.model.__dict__


@torch.no_grad()
def test_llava_next_images_of_different_sizes_are_pruned_and_generate_runs():
    model = tiny_llava_next()
    sizes = torch.tensor([[32, 64], [30, 30]])
    pix = torch.randn(2, 3, 3, 32, 32)
    lengths = [
        f.shape[0]
        for f in model.model.get_image_features(
            pixel_values=pix, image_sizes=sizes, return_dict=True
        ).pooler_output
    ]
    rows = [[1, *([IMAGE] * lengths[0]), 5, 6], [1, *([IMAGE] * lengths[1]), 7]]
    ids, mask = left_pad(rows)
    with prune.apply_to_llava(model, keep=0.25) as handle:
        logits = model(
            input_ids=ids, attention_mask=mask, pixel_values=pix, image_sizes=sizes
        ).logits
        assert handle.last is not None
        kept = [prune.keep_count(n, 0.25) for n in lengths]
        assert handle.last.image_tokens == tuple(lengths)
        assert handle.last.kept_image_tokens == tuple(kept)
        pad = len(rows[0]) - len(rows[1])
        assert logits.shape[1] == max(3 + kept[0], pad + 2 + kept[1])
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=pix,
            image_sizes=sizes,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
        want = greedy_without_cache_next(model, ids, mask, pix, sizes, 4)
    assert torch.equal(out, want)


def greedy_without_cache_next(model, ids, mask, pix, sizes, steps):
    for _ in range(steps):
        logits = model(
            input_ids=ids, attention_mask=mask, pixel_values=pix, image_sizes=sizes
        ).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return ids


def test_a_model_without_an_image_token_span_is_rejected():
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=64,
    )
    with pytest.raises(TypeError, match="no image-token span"):
        prune.apply_to_llava(transformers.LlamaForCausalLM(config))


def test_bad_options_and_double_application_are_rejected():
    model = tiny_llava()
    with pytest.raises(ValueError, match="`keep` must be a ratio"):
        prune.apply_to_llava(model, keep=0.0)
    with pytest.raises(ValueError, match="`positions`"):
        prune.apply_to_llava(model, positions="shifted")  # type: ignore[arg-type]
    handle = prune.apply_to_llava(model)
    with pytest.raises(RuntimeError, match="already applied"):
        prune.apply_to_llava(model)
    handle.remove()
    prune.apply_to_llava(model).remove()


@torch.no_grad()
def test_image_features_without_enough_image_tokens_are_an_error():
    model = tiny_llava()
    ids = torch.tensor([[1, 2, IMAGE, IMAGE, 3]])
    with prune.apply_to_llava(model), pytest.raises(ValueError, match="image"):
        model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32))


@torch.no_grad()
def test_bfloat16_model_prunes_and_generates():
    model = tiny_llava().to(torch.bfloat16)
    ids = torch.tensor([prompt([1, 5], None, [7])] * 2)
    pix = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    with prune.apply_to_llava(model, keep=0.2) as handle:
        out = model.generate(
            input_ids=ids, pixel_values=pix, max_new_tokens=4, do_sample=False, pad_token_id=0
        )
    assert out.shape == (2, ids.shape[1] + 4)
    assert handle.last is not None
    kept = prune.keep_count(TOKENS_PER_IMAGE, 0.2)
    assert handle.last.kept_tokens == ids.shape[1] - (TOKENS_PER_IMAGE - kept)


@torch.no_grad()
def test_beam_search_runs_and_keep_one_changes_nothing():
    model = tiny_llava()
    ids, mask = left_pad([prompt([1, 4], None, [5], None, [6]), prompt([1], None, [9, 10])])
    pix = torch.randn(3, 3, 32, 32)
    kwargs = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pix,
        "max_new_tokens": 4,
        "do_sample": False,
        "pad_token_id": 0,
        "num_beams": 3,
        "num_return_sequences": 2,
    }
    ref = model.generate(**kwargs)
    with prune.apply_to_llava(model, keep=1.0):
        assert torch.equal(model.generate(**kwargs), ref)
    with prune.apply_to_llava(model, keep=0.3) as handle:
        out = model.generate(**kwargs)
    assert out.shape == (4, ids.shape[1] + 4)
    assert handle.last is not None
    assert handle.last.image_tokens == (TOKENS_PER_IMAGE,) * 9  # 3 images x 3 beams
