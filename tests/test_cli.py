"""The `ferrolm` command: --version, doctor, demo, and reports as JSON on stdout (`--json -`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ferrolm
from ferrolm._paths import package_file
from ferrolm.cli import main

GPT2 = package_file("whisper", "assets", "gpt2.tiktoken")


def _ferrolm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-m", "ferrolm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_version_flag_prints_the_package_version():
    out = subprocess.run(
        [sys.executable, "-m", "ferrolm.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"ferrolm {ferrolm.__version__}"


def test_python_dash_m_ferrolm_is_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "ferrolm", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"ferrolm {ferrolm.__version__}"


def test_doctor_reports_gpu_and_nvrtc_status_honestly(tmp_path, capsys):
    path = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    rows = {row[0]: row for row in report["sections"][0]["rows"]}
    assert rows["ferrolm"][1] == ferrolm.__version__
    assert rows["CPU threads"][1] >= 1
    if not ferrolm.cuda.driver_available():
        assert rows["CUDA driver"][2] == "missing"
        assert rows["GPUs"][1] == 0
    assert rows["NVRTC"][2] == ("ok" if ferrolm.cuda.nvrtc_available() else "missing")
    assert "| check | result | status |" in capsys.readouterr().out


def test_demo_runs_every_section_and_writes_json(tmp_path, capsys, monkeypatch):
    # The real pair takes minutes; tests/test_spec_real.py covers that code on a tiny pair.
    monkeypatch.setenv("FERROLM_DEMO_PAIR", "0")
    path = tmp_path / "demo.json"
    assert main(["demo", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    titles = [s["title"] for s in report["sections"]]
    assert titles[0] == "Environment"
    assert any("quantizer" in t for t in titles)
    assert all(s["columns"] != ["error"] for s in report["sections"]), report
    assert "# ferrolm demo" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "doctor" in capsys.readouterr().out


def test_json_dash_writes_the_report_to_stdout_not_to_a_file_named_dash(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["doctor", "--json", "-"]) in (0, 1)
    out = capsys.readouterr().out
    assert json.loads(out)["title"] == "ferrolm doctor"
    assert not (tmp_path / "-").exists()


def test_speculative_plan_json_on_stdout_is_the_plan_and_nothing_else(tmp_path):
    from ferrolm import speculative

    p = [0.55, 0.2, 0.08, 0.04, 0.02]
    (tmp_path / "acc.txt").write_text("0 " + " ".join(map(str, p)) + "\n")  # Sequoia's layout
    latencies = {1: 0.030, 4: 0.031, 16: 0.034, 64: 0.045}
    proc = _ferrolm(
        "speculative",
        "plan",
        "--acceptance",
        "acc.txt",
        "--skip-first",
        "--latencies",
        ",".join(f"{n}:{t}" for n, t in latencies.items()),
        "--draft-latency",
        "0.004",
        "--max-depth",
        "8",
        "--json",
        "-",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is exactly one JSON document
    table = speculative.sequoia_dp(np.array(p), max_nodes=64, max_depth=8)
    want = speculative.plan(table, list(latencies), list(latencies.values()), 0.004)
    chosen = report["chosen"]
    assert (chosen["n"], chosen["d"]) == (want.n, want.d)
    assert chosen["speedup"] == pytest.approx(want.speedup)
    assert report["acceptance"] == pytest.approx(p)
    assert [r["n"] for r in report["rows"]] == list(latencies)
    for row in report["rows"]:
        assert row["tokens_per_step"] == pytest.approx(table.value(row["n"], row["best_d"]))
    assert "chosen" not in proc.stderr  # the human table is not printed at all with --json -


def test_speculative_plan_prints_the_table_without_json(tmp_path, capsys):
    (tmp_path / "acc.txt").write_text("0.5 0.2 0.1\n")
    args = ["speculative", "plan", "--acceptance", str(tmp_path / "acc.txt")]
    assert main([*args, "--latencies", "1:0.05,8:0.06", "--draft-latency", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "| n | t_verify (ms) |" in out
    assert "chosen: n = " in out


@pytest.mark.skipif(GPT2 is None, reason="needs openai-whisper==20250625 (gpt2.tiktoken)")
def test_undertrained_json_on_stdout_matches_the_library_scan(tmp_path):
    from ferrolm import tokens

    proc = _ferrolm("undertrained", str(GPT2), "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["counts"] == tokens.scan(GPT2, containment=False).counts()
    assert report["vocab_size"] == 50257
    assert "| rank |" not in proc.stdout  # no Markdown mixed into the JSON
    # the one-line summary is a log message: on stderr, and gone with --quiet
    assert "single_byte=256" in proc.stderr
    quiet = _ferrolm("undertrained", str(GPT2), "--json", "-", "-q", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout) == {
        **report,
        "timings_s": json.loads(quiet.stdout)["timings_s"],
    }


@pytest.mark.skipif(GPT2 is None, reason="needs openai-whisper==20250625 (gpt2.tiktoken)")
def test_undertrained_markdown_dash_and_json_file(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["undertrained", str(GPT2), "--markdown", "-", "--json", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("# ") >= 1
    assert captured.out.lstrip().startswith("#")
    assert json.loads(path.read_text())["vocab_size"] == 50257
    assert f"wrote {path}" in captured.err


def test_progress_bar_is_silent_when_stderr_is_not_a_terminal(capsys):
    from ferrolm._progress import progress_bar

    bar = progress_bar(10, "scan", enabled=True)
    bar.update(10)
    bar.close()
    assert capsys.readouterr().err == ""
    assert bar.disable


def _tiny_model_dirs(root: Path) -> tuple[Path, Path, Any]:
    """A random tiny Llama target and a noisy draft saved with a byte-level tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ferrolm._demo.generate import tiny_pair

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)
    target, draft = tiny_pair(layers=2)
    dirs = root / "target", root / "draft"
    for model, d in zip((target, draft), dirs):
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)
    return dirs[0], dirs[1], target


@pytest.mark.slow  # loads torch and transformers in a subprocess, and two models
def test_generate_json_on_stdout_is_lossless_against_greedy_generate(tmp_path):
    import torch

    target_dir, draft_dir, target = _tiny_model_dirs(tmp_path)
    proc = _ferrolm(
        "generate",
        "hello world",
        "--target",
        str(target_dir),
        "--draft",
        str(draft_dir),
        "--method",
        "specexec",
        "--budget",
        "8",
        "--draft-weights",
        "int8",
        "--max-new-tokens",
        "12",
        "--json",
        "-",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    ids = torch.tensor([result["prompt_ids"]])
    with torch.no_grad():
        plain = target.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12
        )
    assert result["new_tokens"] == plain[0, ids.shape[1] :].tolist()
    assert result["stats"]["new_tokens"] == 12
    assert result["stats"]["tau"] >= 1.0
    assert isinstance(result["text"], str)
