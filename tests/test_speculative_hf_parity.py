"""SpeculativeGenerator.generate as a drop-in for ``model.generate``.

Greedy outputs are compared with ``target.generate`` under the same options; sampled outputs are
compared (chi-square) with the exact distribution that Hugging Face's own processor classes give,
computed by enumeration on a 12-token model.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from test_speculative_generate import (  # the fixtures are used by name
    SMOLLM2_TOKENS,
    chi_square_pvalue,
    noisy_copy,
    smollm2,  # noqa: F401
    smollm2_expected,  # noqa: F401
    tiny_model,
)
from transformers import (
    BatchEncoding,
    GenerationConfig,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from ferrolm import speculative

METHODS = ("specexec", "sequoia", "chain")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BoostNext:
    """A sequence-dependent processor: favours the token after the last one (mod vocab)."""

    def __init__(self, bonus: float) -> None:
        self.bonus = bonus

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        nxt = (input_ids[:, -1] + 1) % scores.shape[-1]
        out = scores.clone()
        out[torch.arange(len(scores)), nxt] += self.bonus
        return out


class StopAfter(StoppingCriteria):
    """Stops a sequence once it holds ``token`` after the prompt."""

    def __init__(self, token: int, prompt_len: int) -> None:
        self.token, self.prompt_len = token, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return (input_ids[:, self.prompt_len :] == self.token).any(-1)


@pytest.fixture(scope="module")
def greedy_pair() -> tuple[Any, Any]:
    target = tiny_model("llama", seed=5)
    return target, noisy_copy(target, 0.3)


@pytest.mark.parametrize("method", METHODS)
def test_greedy_processors_and_stopping_equal_hf_generate(
    greedy_pair: tuple[Any, Any], method: str
) -> None:
    target, draft = greedy_pair
    gen = speculative.SpeculativeGenerator(target, draft, method=method, budget=12, max_depth=4)
    prompt = [3, 14, 15, 9, 2, 6]
    options: dict[str, Any] = {
        "repetition_penalty": 1.6,
        "no_repeat_ngram_size": 2,
        "max_new_tokens": 30,
        "do_sample": False,
        "pad_token_id": 0,
    }
    ids = torch.tensor([prompt])
    plain = target.generate(ids, attention_mask=torch.ones_like(ids), **options)[0, 6:].tolist()
    # The same options with a custom processor, an EOS list, min_new_tokens and a criterion.
    eos = [plain[3], plain[12]]
    stop = plain[20]
    extra: dict[str, Any] = {"eos_token_id": eos, "min_new_tokens": 5}

    def hf(**kw: Any) -> list[int]:
        out = target.generate(ids, attention_mask=torch.ones_like(ids), **options, **extra, **kw)
        return out[0, 6:].tolist()

    expected = hf(
        logits_processor=LogitsProcessorList([BoostNext(0.5)]),
        stopping_criteria=StoppingCriteriaList([StopAfter(stop, len(prompt))]),
    )
    got = gen.generate(
        ids,
        logits_processor=LogitsProcessorList([BoostNext(0.5)]),
        stopping_criteria=StoppingCriteriaList([StopAfter(stop, len(prompt))]),
        **options,
        **extra,
    )
    assert got.new_tokens[0] == expected
    assert gen.generate(ids, **options).new_tokens[0] == plain
    assert len(got.new_tokens[0]) >= 5  # min_new_tokens held the EOS ids back


def test_batch_encoding_and_tokenizer_outputs(greedy_pair: tuple[Any, Any]) -> None:
    target, draft = greedy_pair
    gen = speculative.SpeculativeGenerator(target, draft, budget=8, max_depth=3)
    prompts = [[5, 6, 7, 8], [9, 10]]
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    enc = BatchEncoding(
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    )
    expected = [gen.generate([p], max_new_tokens=6).new_tokens[0] for p in prompts]
    assert gen.generate(**enc, max_new_tokens=6).new_tokens == expected
    assert gen.generate(enc, max_new_tokens=6).new_tokens == expected
    ref = target.generate(
        ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0
    )
    assert gen.generate(**enc, max_new_tokens=6).sequences.tolist() == ref.tolist()


def test_defaults_come_from_the_generation_configs(greedy_pair: tuple[Any, Any]) -> None:
    target, draft = greedy_pair
    gen = speculative.SpeculativeGenerator(target, draft, budget=8, max_depth=3)
    prompt = torch.tensor([[1, 2, 3]])
    # No length anywhere: 20 new tokens, like model.generate (which warns about it).
    assert len(gen.generate(prompt).new_tokens[0]) == 20
    with pytest.warns(UserWarning, match="max_length"):
        expected = target.generate(prompt, attention_mask=torch.ones_like(prompt))
    assert gen.generate(prompt).sequences.tolist() == expected.tolist()
    assert len(gen.generate(prompt, max_length=8).new_tokens[0]) == 5
    config = GenerationConfig(max_new_tokens=4)
    assert len(gen.generate(prompt, generation_config=config).new_tokens[0]) == 4
    # An instruct model whose config samples, samples: rows of one prompt differ.
    saved = target.generation_config
    target.generation_config = GenerationConfig(
        do_sample=True, temperature=1.5, top_k=0, max_new_tokens=3, pad_token_id=0
    )
    try:
        out = gen.generate([[1, 2, 3]] * 40, generator=torch.Generator().manual_seed(0))
        assert len({tuple(t) for t in out.new_tokens}) > 5
        greedy = gen.generate([[1, 2, 3]] * 2, do_sample=False)
        assert greedy.new_tokens[0] == greedy.new_tokens[1]
    finally:
        target.generation_config = saved


def test_options_that_cannot_be_honoured_are_named(greedy_pair: tuple[Any, Any]) -> None:
    gen = speculative.SpeculativeGenerator(*greedy_pair, budget=8, max_depth=3)
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="num_beams"):
        gen.generate(ids, num_beams=4)
    with pytest.raises(ValueError, match="num_return_sequences"):
        gen.generate(ids, generation_config=GenerationConfig(num_return_sequences=2))
    with pytest.raises(ValueError, match="typical_p"):
        gen.generate(ids, typical_p=0.5, do_sample=True)
    with pytest.raises(ValueError, match=r"unknown option.*frobnicate"):
        gen.generate(ids, frobnicate=True)
    with pytest.raises(ValueError, match="temperature"):
        gen.generate(ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match=r"pixel_values.*unknown to generate"):
        gen.generate({"input_ids": ids, "pixel_values": ids})


# ---------------------------------------------------------------------------- sampling


def hf_marginals(model: Any, prompt: list[int], processors: LogitsProcessorList) -> list[Any]:
    """Exact distributions of tokens 1, 2, 3 when HF's `processors` shape every step."""
    vocab = model.config.vocab_size

    def step(seqs: list[list[int]]) -> torch.Tensor:
        ids = torch.tensor(seqs)
        scores = model(ids).logits[:, -1].float()
        return processors(ids, scores).double().softmax(-1)

    with torch.no_grad():
        p1 = step([prompt])[0]
        p2 = step([[*prompt, a] for a in range(vocab)])
        p3 = step([[*prompt, a, b] for a, b in itertools.product(range(vocab), repeat=2)])
    joint12 = p1[:, None] * p2
    p3 = p3.reshape(vocab, vocab, vocab)
    return [
        p1.numpy(),
        joint12.sum(0).numpy(),
        (joint12[:, :, None] * p3).sum((0, 1)).numpy(),
    ]


@pytest.fixture(scope="module")
def sampling_pair() -> tuple[Any, Any]:
    target = tiny_model("llama", vocab=12, seed=2, std=0.5)
    return target, noisy_copy(target, 0.5)


@pytest.mark.parametrize("method", ["specexec", "sequoia"])
def test_sampling_with_processors_matches_hf_distribution(
    sampling_pair: tuple[Any, Any], method: str
) -> None:
    target, draft = sampling_pair
    prompt = [1, 5, 7]
    eos = 4
    # Every processor reads the node's own prefix: a wrong prefix changes the distribution.
    reference = LogitsProcessorList(
        [
            RepetitionPenaltyLogitsProcessor(1.8),
            MinNewTokensLengthLogitsProcessor(len(prompt), 3, eos),
            BoostNext(1.5),
            TemperatureLogitsWarper(0.8),
            TopKLogitsWarper(8),
            MinPLogitsWarper(0.05),
        ]
    )
    config = GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_k=8,
        min_p=0.05,
        repetition_penalty=1.8,
        min_new_tokens=3,
        eos_token_id=eos,
        pad_token_id=0,
    )
    gen = speculative.SpeculativeGenerator(target, draft, method=method, budget=8, max_depth=3)
    rows = 600
    out = gen.generate(
        [prompt] * rows,
        generation_config=config,
        logits_processor=[BoostNext(1.5)],
        max_new_tokens=3,
        generator=torch.Generator().manual_seed(7),
    )
    samples = np.asarray(out.new_tokens)
    assert samples.shape == (rows, 3)
    # The draft proposes without the processors, so it is accepted less often than usual.
    assert out.stats.tau > 1.02
    assert not (samples == eos).any()
    exact = hf_marginals(target, prompt, reference)
    for position in range(3):
        pvalue = chi_square_pvalue(samples[:, position], exact[position])
        assert pvalue > 1e-4, f"token {position + 1}: chi-square p = {pvalue:.2g}"
    # Power: without the processors the target's distribution differs visibly.
    plain = hf_marginals(
        target, prompt, LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(8)])
    )
    counts = np.bincount(samples[:, 1], minlength=12)
    from scipy.stats import chisquare

    assert (
        chisquare(counts + 0.5, (plain[1] + 1e-3) / (plain[1] + 1e-3).sum() * (rows + 6)).pvalue
        < 1e-4
    )


@pytest.mark.slow
def test_smollm2_tokenizer_output_equals_hf_generate(request: pytest.FixtureRequest) -> None:
    target, tokenizer, draft = request.getfixturevalue("smollm2")
    _, expected = request.getfixturevalue("smollm2_expected")
    texts = ["The capital of France is", "def fibonacci(n):\n    ", "1, 2, 3, 4, 5, 6,"]
    gen = speculative.SpeculativeGenerator(target, draft, budget=16, max_depth=4)
    batch = tokenizer(texts, return_tensors="pt", padding=True)  # right-padded, as it comes
    assert gen.generate(**batch, max_new_tokens=SMOLLM2_TOKENS).new_tokens == expected
