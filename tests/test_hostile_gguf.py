"""Malformed GGUF files: one clear ValueError, never an abort, a hang or an unjustified allocation.

Each file is built here (truncated, bit-flipped, sparse with huge counts, a dense 16 MB array,
tensors pointing past the end) and given to the API and to the CLI in a child process with a
5 s deadline. The child's own peak RSS is read with ``os.wait4`` (``RLIMIT_AS`` would break the
imports of the libraries the child loads) and must stay under 1 GB.

Each check starts a Python process that imports ferrolm (about a second on a loaded 2-core
machine), so the cases are chosen, not enumerated: exhaustive truncations and random bytes are
the Rust unit and property tests of ``rust/core/src/tokens/gguf.rs``.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="building GGUF files needs the gguf package")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import GGUFWriter  # noqa: E402

from ferrolm._cli_common import EXIT_INPUT  # noqa: E402
from ferrolm.testing.tokenizations import llama_cpp_models_dir  # noqa: E402

DEADLINE_S = 5.0
MAX_RSS_BYTES = 1 << 30
VOCAB_QWEN2 = llama_cpp_models_dir() / "ggml-vocab-qwen2.gguf"

# The child prints one JSON line per file: the exception it got (or none) and what it returned.
API_CHILD = """
import json, sys
from ferrolm import tokens
what = sys.argv[1]
for path in sys.argv[2:]:
    out = {"error": None}
    try:
        if what == "scan":
            out["vocab"] = tokens.scan(path, containment=False).vocab_size
        elif what == "indicators":
            out["candidates"] = len(tokens.indicators(path, fallback="lowest_norm").candidates)
        else:
            out["rows"] = tokens.read_embeddings(path).embedding.shape[0]
    except Exception as e:
        out["error"] = type(e).__name__
        out["message"] = str(e)
    print(json.dumps(out), flush=True)
"""


# The peak RSS of a child forked from a large process (pytest, after loading models) starts at
# its parent's: a small launcher, started first, spawns the real child and reports its usage.
LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
p.returncode = 0
with open(sys.argv[1], "w") as f:
    json.dump({"status": status, "maxrss_kb": usage.ru_maxrss}, f)
"""


def _run(argv: list[str], tmp: Path, deadline: float = DEADLINE_S) -> tuple[int, str, str, int]:
    """Runs ``argv``; returns (exit status or -signal, stdout, stderr, peak RSS in bytes)."""
    out_path, err_path, usage_path = tmp / "child.out", tmp / "child.err", tmp / "usage.json"
    usage_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-c", LAUNCHER, str(usage_path), *argv]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(launcher, stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{argv[1:]} did not finish within {deadline} s (a hang)")
    usage = json.loads(usage_path.read_text())
    status = usage["status"]
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return code, out_path.read_text(), err_path.read_text(), usage["maxrss_kb"] * 1024


def _api_many(what: str, paths: list[Path], tmp: Path) -> list[dict[str, Any]]:
    """`what` on each file in one child: every file within the deadline, all together."""
    argv = [sys.executable, "-c", API_CHILD, what, *map(str, paths)]
    code, out, err, rss = _run(argv, tmp)
    assert code == 0, f"the child died (status {code}): {err[-2000:]}"
    assert rss < MAX_RSS_BYTES, f"{what} on {paths[0].name}... peaked at {rss / 2**20:.0f} MiB"
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert len(results) == len(paths)
    return results


def _api(what: str, path: Path, tmp: Path) -> dict[str, Any]:
    return _api_many(what, [path], tmp)[0]


def _cli(path: Path, tmp: Path, deadline: float = DEADLINE_S) -> tuple[int, str]:
    argv = [sys.executable, "-m", "ferrolm.cli", "undertrained", str(path), "--no-progress"]
    code, _, err, rss = _run([*argv, "--json", str(tmp / "r.json")], tmp, deadline)
    assert code >= 0, f"the CLI was killed by signal {-code}: {err[-2000:]}"
    assert code != 134, err[-2000:]
    assert "panicked" not in err, err[-2000:]
    assert "PanicException" not in err, err[-2000:]
    assert rss < MAX_RSS_BYTES, f"the CLI on {path.name} peaked at {rss / 2**20:.0f} MiB"
    return code, err


def _expect_value_error(path: Path, tmp: Path, *needles: str) -> None:
    for what in ("scan", "indicators"):
        got = _api(what, path, tmp)
        assert got["error"] == "ValueError", (what, got)
        assert path.name in got["message"], got["message"]
        for needle in needles:
            assert needle in got["message"], (what, got["message"])
    code, err = _cli(path, tmp)
    assert code != 0
    assert (path.name in err and "ValueError" in err) or "error" in err.lower(), err[-2000:]
    # The CLI's promise (issue 16): one stderr line naming the file, the bad-input exit code.
    assert code == EXIT_INPUT, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("ferrolm: error: "), lines[0]
    assert path.name in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------- building files


def _byte_level_tokens() -> list[str]:
    # GPT-2's printable stand-ins for the 256 bytes, then two merged tokens.
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)] + ["ab", "abc"]


def _model(
    path: Path, *, weights: bool = True, rows: int = 258, dim: int = 64, claim_only: bool = False
) -> Path:
    """A byte-level BPE model; ``claim_only`` writes the tensor directory but no tensor data."""
    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    toks = _byte_level_tokens()
    w.add_token_list(toks)
    w.add_token_types([1] * len(toks))
    w.add_token_merges(["a b", "ab c"])
    if claim_only:
        nbytes = rows * dim // 32 * 34
        shape = (rows, dim // 32 * 34)  # a quantized tensor is described by its bytes
        w.add_tensor_info("token_embd.weight", shape, np.dtype(np.uint8), nbytes, Q.Q8_0)
    elif weights:
        rng = np.random.default_rng(0)
        emb = rng.standard_normal((rows, dim)).astype(np.float32)
        w.add_tensor("token_embd.weight", gguf.quants.quantize(emb, Q.Q8_0), raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    if claim_only:
        w.write_ti_data_to_file()
    else:
        w.write_tensors_to_file()
    w.close()
    return path


def _header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


# ---------------------------------------------------------------- the cases


def test_a_well_formed_model_passes_so_the_harness_can_tell(tmp_path: Path) -> None:
    path = _model(tmp_path / "good.gguf")
    assert _api("scan", path, tmp_path) == {"error": None, "vocab": 258}
    got = _api("indicators", path, tmp_path)
    assert got["error"] is None, got
    code, err = _cli(path, tmp_path)
    assert code == 0, err[-2000:]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["vocab_size"] == 258
    # Readable: every id listed comes with its vocabulary string and decoded text.
    single = {e["id"]: e for e in data["tokens_by_class"]["single_byte"]}
    assert len(single) == 256
    assert single[0x41] == {"id": 0x41, "token": "A", "decoded": "A"}
    assert single[0x20] == {"id": 0x20, "token": "Ġ", "decoded": " "}
    ind = data["indicators"]
    assert all(set(e) == {"id", "token", "decoded"} for e in ind["reference"])
    for row in ind["candidates"]:
        assert all(set(e) == {"id", "token", "decoded"} for e in row["contained_in"])
        assert row["token"] == _byte_level_tokens()[row["id"]]


def test_sparse_file_claiming_2_39_entries(tmp_path: Path) -> None:
    path = tmp_path / "sparse.gguf"
    path.write_bytes(_header(0, 1 << 39))
    os.truncate(path, 1 << 40)  # 1 TiB apparent size, nothing on disk
    _expect_value_error(path, tmp_path, "GgufLimits::max_entries")


def test_sparse_file_with_a_huge_array_and_huge_tensor_count(tmp_path: Path) -> None:
    path = tmp_path / "sparse_array.gguf"
    key = b"tokenizer.ggml.tokens"
    body = struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 8, 1 << 36)
    path.write_bytes(_header(0, 1) + body)
    os.truncate(path, 1 << 40)
    _expect_value_error(path, tmp_path, "GgufLimits::max_values")
    path = tmp_path / "sparse_tensors.gguf"
    path.write_bytes(_header(1 << 36, 0))
    os.truncate(path, 1 << 40)
    _expect_value_error(path, tmp_path, "GgufLimits::max_tensors")


def test_dense_16_mb_file_with_one_valid_16m_element_array(tmp_path: Path) -> None:
    path = tmp_path / "dense.gguf"
    key = b"tokenizer.ggml.scores"
    n = 1 << 24
    body = struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 0, n)
    path.write_bytes(_header(0, 1) + body + bytes(n))
    _expect_value_error(path, tmp_path, "GgufLimits::max_values")


def test_every_truncation_of_the_header_is_a_value_error(tmp_path: Path) -> None:
    full = _model(tmp_path / "full.gguf", weights=False).read_bytes()
    # A few cuts through the header, the vocabulary and the tensor directory (not all: each
    # check starts a process).
    cuts = (8, 12, 23, 40, 100, len(full) // 3, len(full) - 5)
    paths = []
    for cut in cuts:
        paths.append(tmp_path / f"cut{cut}.gguf")
        paths[-1].write_bytes(full[:cut])
    for cut, got in zip(cuts, _api_many("scan", paths, tmp_path)):
        assert got["error"] == "ValueError", (cut, got)
        assert f"cut{cut}.gguf" in got["message"]
        assert any(w in got["message"] for w in ("truncated", "bytes are left")), got
    code, err = _cli(tmp_path / f"cut{len(full) // 3}.gguf", tmp_path)
    assert code != 0
    assert "truncated" in err


def test_bit_flipped_headers_never_crash(tmp_path: Path) -> None:
    full = bytearray(_model(tmp_path / "base.gguf").read_bytes())
    rng = np.random.default_rng(7)
    # Flip bits in the counts and in the first key/value and array headers, where a flip
    # turns into a huge length; every outcome is a result or a ValueError, nothing else.
    where = [8, 15, 16, 23, 24, 31, *rng.integers(24, 400, size=6).tolist()]
    paths = []
    for k, at in enumerate(where):
        data = bytearray(full)
        data[at] ^= 0x80
        paths.append(tmp_path / f"flip{k}.gguf")
        paths[-1].write_bytes(bytes(data))
    for at, got in zip(where, _api_many("scan", paths, tmp_path)):
        assert got["error"] in (None, "ValueError"), (at, got)


def test_tensor_pointing_past_the_end_is_refused_before_reading(tmp_path: Path) -> None:
    good = _model(tmp_path / "t.gguf").read_bytes()
    path = tmp_path / "short_data.gguf"
    path.write_bytes(good[: len(good) - 100])  # the tensor data is cut, the header is whole
    got = _api("indicators", path, tmp_path)
    assert got["error"] == "ValueError", got
    assert "runs past the end of the file" in got["message"], got
    # A 2^20 x 8192 Q8_0 tensor "present" in a 1 TiB sparse file: indicators read only the
    # vocabulary's 258 rows (quickly, in little memory); reading it all is over the default
    # limit of 2^32 values and refused before anything is allocated.
    path = _model(tmp_path / "sparse_tensor.gguf", rows=1 << 20, dim=8192, claim_only=True)
    os.truncate(path, 1 << 40)
    got = _api("indicators", path, tmp_path)
    # All its rows are zeros (sparse), so no reference direction exists: a clear ValueError.
    assert got["error"] == "ValueError", got
    assert "`reference` must be rows whose mean is a non-zero" in got["message"], got
    got = _api("read_embeddings", path, tmp_path)
    assert got["error"] == "ValueError", got
    assert "over the limit" in got["message"], got


def test_vocab_only_gguf_is_scanned_alone(tmp_path: Path) -> None:
    path = _model(tmp_path / "vocab_only.gguf", weights=False)
    got = _api("indicators", path, tmp_path)
    assert got["error"] == "NoWeightsError", got
    assert "no weights" in got["message"]
    assert "vocab-only" in got["message"]
    code, err = _cli(path, tmp_path)
    assert code == 0, err[-2000:]
    data = json.loads((tmp_path / "r.json").read_text())
    assert "indicators" not in data
    assert any("tokenizer only" in n for n in data["notes"])


@pytest.mark.skipif(not VOCAB_QWEN2.is_file(), reason="llama.cpp's vocab files are not here")
def test_llama_cpp_vocab_only_qwen2_is_scanned_by_the_cli(tmp_path: Path) -> None:
    # A real 151k-token vocabulary: a full scan, given more time than the hostile cases.
    code, err = _cli(VOCAB_QWEN2, tmp_path, deadline=60)
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["vocab_size"] > 150_000


def test_the_harness_sees_an_abort(tmp_path: Path) -> None:
    # Guards the guard: a child killed by SIGABRT must read as a signal, not as success.
    code, _, _, _ = _run([sys.executable, "-c", "import os; os.abort()"], tmp_path)
    assert code == -signal.SIGABRT
