"""`ferrolm generate` with Hub ids, --revision, --device and --dtype; `ferrolm cache ls|clear`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_hub_ids import run_child, snapshot
from test_speculative_generate import _save_tiny_pair, hf_greedy, tiny_model

from ferrolm.cli import main


def test_generate_from_hub_ids_offline(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target_dir, draft_dir = _save_tiny_pair(tmp_path / "local")
    home = tmp_path / "hf_home"
    for repo, local in (("org/target", target_dir), ("org/draft", draft_dir)):
        shutil.copytree(local, snapshot(home / "hub", repo, "main", "d" * 40), dirs_exist_ok=True)
    # Another target at the tag v1 (other weights, same tokenizer), and a draft only at v1.
    other_dir = tmp_path / "local" / "other"
    tiny_model("llama", seed=22).save_pretrained(other_dir)
    AutoTokenizer.from_pretrained(target_dir).save_pretrained(other_dir)
    for repo, local, ref, commit in (
        ("org/target", other_dir, "v1", "e" * 40),
        ("org/draft-v1", Path(draft_dir), "v1", "f" * 40),
    ):
        shutil.copytree(local, snapshot(home / "hub", repo, ref, commit), dirs_exist_ok=True)
    prompt = "w3 w17 w42 w8"
    out32, out16, out_v1 = tmp_path / "f32.json", tmp_path / "bf16.json", tmp_path / "v1.json"
    common = ["generate", "--target", "org/target", "--draft", "org/draft", "--budget", "8"]
    common += ["--max-new-tokens", "6", "--device", "cpu", prompt]
    v1 = [*common, "--revision", "v1", "--draft", "org/draft-v1", "--draft-revision", "v1"]
    code = f"""
from ferrolm.cli import main
assert main({[*common, "--json", str(out32)]!r}) == 0
assert main({[*common, "--json", str(out16), "--dtype", "bfloat16"]!r}) == 0
assert main({[*v1, "--json", str(out_v1)]!r}) == 0
assert main({[*common, "--draft", "org/draft-v1"]!r}) == 3  # it has no main branch
assert main(["generate", "--target", "org/absent", "--draft", "org/draft", "hi"]) == 3
print("ok")
"""
    assert run_child(code, home, tmp_path).strip().endswith("ok")
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    ids = tokenizer(prompt).input_ids
    target = AutoModelForCausalLM.from_pretrained(target_dir).eval()
    other = AutoModelForCausalLM.from_pretrained(other_dir).eval()
    main_tokens = json.loads(out32.read_text())["new_tokens"]
    assert main_tokens == hf_greedy(target, ids, 6)
    assert json.loads(out_v1.read_text())["new_tokens"] == hf_greedy(other, ids, 6) != main_tokens
    assert len(json.loads(out16.read_text())["new_tokens"]) == 6


def entry(root: Path, name: str, size: int) -> None:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"\0" * size)


def test_cache_ls_and_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FERROLM_CACHE", str(tmp_path))
    entry(tmp_path, "tokens/a-0123-bf16", 1000)
    entry(tmp_path, "smollm2", 3000)
    assert main(["cache", "ls", "--json", "-"]) == 0
    listed: Any = json.loads(capsys.readouterr().out)
    assert listed["root"] == str(tmp_path)
    assert {e["name"]: e["bytes"] for e in listed["entries"]} == {
        "tokens/a-0123-bf16": 1002,
        "smollm2": 3002,
    }
    assert main(["cache", "clear"]) == 2
    assert main(["cache", "clear", "nope"]) == 2
    assert main(["cache", "clear", "smollm2"]) == 0
    assert not (tmp_path / "smollm2").exists()
    assert (tmp_path / "tokens/a-0123-bf16").exists()
    assert main(["cache", "clear", "--all"]) == 0
    capsys.readouterr()
    assert main(["cache", "ls"]) == 0
    assert "0 entries" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FERROLM_CACHE": "/f", "HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}, "/f"),
        ({"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}, "/h/ferrolm"),
        ({"XDG_CACHE_HOME": "/x"}, "/x/ferrolm"),
        ({"FERROLM_CACHE": ""}, str(Path.home() / ".cache" / "ferrolm")),
    ],
)
def test_cache_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    from ferrolm._gguf_cache import cache_root

    for name in ("FERROLM_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert str(cache_root()) == expected
