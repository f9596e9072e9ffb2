"""The fuzz corpus and mutated seeds through the Python entry points that read bytes (issue 16).

``fuzz/regressions/*.bin`` are inputs that once broke the Rust core; ``cargo test -p
ferrolm-fuzz`` replays them against the core. Here the same bytes, and a few deterministic
mutants of valid files (truncated, bit-flipped, a length field set to all ones, extended into
a sparse file of up to 1 TiB), go through what a user calls: ``tokens.scan``,
``tokens.indicators``, ``tokens.read_embeddings`` and ``QuantizedTensor.from_bytes`` (then
``comm.dequantize``). Each must return or raise ``ValueError`` (``NoWeightsError`` is one);
all of them run in one child process under an address-space limit, each within 5 s and
growing the child's peak memory by less than 256 MiB.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from ferrolm import _native
from ferrolm.testing.isolated import Probe, run_probes

gguf = pytest.importorskip("gguf", reason="building GGUF seeds needs the gguf package")

REGRESSIONS = Path(__file__).resolve().parent.parent / "fuzz" / "regressions"
GROWTH_LIMIT = 256 << 20
#: The child imports numpy and ferrolm (no torch). 8 GiB of address space leaves room for the
#: thread stacks and malloc arenas of a many-core machine, and is far below what a trusted
#: forged length asks for (2^36 bytes and up); smaller over-allocations fail GROWTH_LIMIT.
ADDRESS_SPACE = 8 << 30
ALLOWED = (None, "ValueError", "NoWeightsError")
Replayed = tuple[dict[str, str], dict[str, Probe]]

SETUP = """
from pathlib import Path
import numpy as np
from ferrolm import comm, tokens
from ferrolm.comm.quantize import QuantizedTensor

def scan(p):
    return tokens.scan(p, containment=False).vocab_size

def indicators(p):
    return len(tokens.indicators(p, fallback="lowest_norm").candidates)

def read(p):
    return tokens.read_embeddings(p).embedding.shape

def frame(p):
    q = QuantizedTensor.from_bytes(Path(p).read_bytes(), numpy=True)
    out = comm.dequantize(q)
    # Accepted bytes must decode to finite values: NaN data passed on as success is the bug.
    assert np.isfinite(out).all(), "a frame was accepted and decoded to non-finite values"
    return out.shape
"""

# The fuzz driver's wire input: [scheme code, log2 block, accumulate, n (u32 LE)], then bytes.
WIRE_SCHEMES = {0: "minmax", 1: "blockwise", 2: "intellect"}


def _gguf_model(path: Path) -> bytes:
    """A byte-level BPE GGUF with a small Q8_0 embedding, written by the ``gguf`` package."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    toks = [chr(b) if b in printable else chr(next(extra)) for b in range(256)] + ["ab"]
    w.add_token_list(toks)
    w.add_token_types([1] * len(toks))
    w.add_token_merges(["a b"])
    emb = np.random.default_rng(0).standard_normal((len(toks), 32)).astype(np.float32)
    q8 = gguf.GGMLQuantizationType.Q8_0
    w.add_tensor("token_embd.weight", gguf.quants.quantize(emb, q8), raw_dtype=q8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def _tokenizer_json() -> bytes:
    vocab = {c: i for i, c in enumerate("abcdefgh")}
    vocab.update({"ab": 8, "abc": 9, "de": 10})
    model = {"type": "BPE", "vocab": vocab, "merges": ["a b", "ab c", "d e"]}
    return json.dumps({"version": "1.0", "added_tokens": [], "model": model}).encode()


def _tiktoken() -> bytes:
    import base64

    ranks = [bytes([b]) for b in range(256)] + [b"ab", b"abc"]
    return b"".join(base64.b64encode(t) + f" {i}\n".encode() for i, t in enumerate(ranks))


def _frame() -> bytes:
    from ferrolm import comm

    x = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)
    return comm.quantize(x, scheme="blockwise", block_size=16).to_bytes()


def _mutants(seed: bytes, rng: np.random.Generator, count: int) -> list[tuple[bytes, int]]:
    """``count`` mutants of ``seed``, each with the sparse size to give its file (0 = none)."""
    out: list[tuple[bytes, int]] = []
    for k in range(count):
        data = bytearray(seed)
        kind = k % 4
        if kind == 0:  # cut short
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == 1:  # a few bits flipped, mostly in the header
            for _ in range(int(rng.integers(1, 5))):
                at = int(rng.integers(0, min(len(data), 512)))
                data[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # an 8-byte field (a count, a length, an offset) set to all ones
            at = int(rng.integers(4, min(len(data), 400) - 8))
            data[at : at + 8] = b"\xff" * 8
        else:  # a bit flipped in the counts, then a sparse tail claiming up to 1 TiB
            data[8 + int(rng.integers(0, 16))] ^= 1 << int(rng.integers(0, 8))
        out.append((bytes(data), 1 << int(rng.integers(20, 41)) if kind == 3 else 0))
    return out


def _write(path: Path, data: bytes, sparse_tail: int = 0) -> str:
    path.write_bytes(data)
    if sparse_tail:
        os.truncate(path, len(data) + sparse_tail)
    return str(path)


def _regression_files(tmp: Path) -> dict[str, tuple[str, list[str]]]:
    """Each corpus file as the file a user would hand over, and the entry points it reaches."""
    files: dict[str, tuple[str, list[str]]] = {}
    for src in sorted(REGRESSIONS.glob("*.bin")):
        data = src.read_bytes()
        stem = src.stem
        if stem.startswith("gguf"):
            # As the `gguf-file` target does: a hole after the bytes, sized by the last byte.
            tail = 1 << (data[-1] % 41) if stem.startswith("gguf-file") else 0
            path = _write(tmp / f"{stem}.gguf", data, tail)
            files[stem] = (path, ["scan", "indicators", "read"])
        elif stem.startswith("tokenizer-json"):
            (tmp / stem).mkdir()
            files[stem] = (_write(tmp / stem / "tokenizer.json", data), ["scan"])
        elif stem.startswith("tiktoken"):
            files[stem] = (_write(tmp / f"{stem}.tiktoken", data), ["scan"])
        elif stem.startswith("wire"):
            scheme = WIRE_SCHEMES.get(data[0] % 4)
            n = int.from_bytes(data[3:7], "little") % (1 << 22)
            block = 1 << (data[1] % 16)
            if scheme is None or n == 0:
                continue
            try:
                header = _native.comm.frame_header(scheme, block, "float32", [n])
            except ValueError:
                continue  # a block size no frame can carry: the core replay covers it
            files[stem] = (_write(tmp / f"{stem}.flq", header + data[7:]), ["frame"])
        else:
            raise AssertionError(f"{src.name}: no entry point known for this target")
    return files


def test_every_regression_file_has_an_entry_point(tmp_path: Path) -> None:
    names = {p.stem for p in REGRESSIONS.glob("*.bin")}
    assert names, "fuzz/regressions is empty"
    reached = _regression_files(tmp_path)
    # The wire regression's block size is one a frame carries, so every file is reached.
    assert set(reached) == names


def _probes(tmp: Path) -> dict[str, str]:
    probes: dict[str, str] = {}
    for stem, (path, calls) in _regression_files(tmp).items():
        for call in calls:
            probes[f"regression {stem} {call}"] = f"{call}({path!r})"
    rng = np.random.default_rng(20261204)
    seeds = {
        "gguf": (_gguf_model(tmp / "seed.gguf"), ".gguf", ["scan", "indicators", "read"]),
        "json": (_tokenizer_json(), "tokenizer.json", ["scan"]),
        "tiktoken": (_tiktoken(), ".tiktoken", ["scan"]),
        "frame": (_frame(), ".flq", ["frame"]),
    }
    for name, (seed, suffix, calls) in seeds.items():
        # The valid seed first: the harness must see it succeed.
        path = _write(tmp / f"{name}-seed{suffix}", seed)
        for call in calls:
            probes[f"seed {name} {call}"] = f"{call}({path!r})"
        for k, (data, tail) in enumerate(_mutants(seed, rng, 8)):
            # `from_bytes` takes the bytes, not a file: a sparse tail means nothing to it.
            path = _write(tmp / f"{name}-m{k}{suffix}", data, 0 if name == "frame" else tail)
            for call in calls:
                probes[f"mutant {name} {k} {call}"] = f"{call}({path!r})"
    return probes


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    probes = _probes(tmp_path_factory.mktemp("corpus"))
    return probes, run_probes(SETUP, probes, address_space=ADDRESS_SPACE)


def test_valid_seeds_succeed_so_the_harness_can_tell(replayed: Replayed) -> None:
    got = replayed[1]
    seeds = [name for name in got if name.startswith("seed ")]
    assert len(seeds) == 6
    for name in seeds:
        assert got[name].exc is None, f"{name}: {got[name].exc}: {got[name].msg}"


def test_corpus_and_mutants_give_a_result_or_one_value_error(
    replayed: Replayed,
) -> None:
    probes, got = replayed
    assert set(got) == set(probes)  # the child finished every probe: nothing aborted
    refused = 0
    for name, p in got.items():
        assert p.exc in ALLOWED, f"{name}: {p.exc}: {p.msg}"
        assert p.seconds < 5, f"{name} took {p.seconds:.1f} s"
        assert p.grown_bytes < GROWTH_LIMIT, f"{name} grew by {p.grown_bytes} bytes"
        refused += p.exc is not None
    # Most mutants are malformed: the error path, not only the happy one, was exercised.
    assert refused > len(got) // 2, refused


def test_the_sparse_regression_is_refused_for_its_string_length(
    replayed: Replayed,
) -> None:
    got = replayed[1]
    p = got["regression gguf-file-sparse-string-length scan"]
    assert p.exc == "ValueError", p.msg
    assert "gguf-file-sparse-string-length.gguf" in p.msg


def test_the_wire_regression_names_its_non_finite_parameter(replayed: Replayed) -> None:
    got = replayed[1]
    p = got["regression wire-blockwise-nan-min frame"]
    assert p.exc == "ValueError", p.msg
    assert "`packed" in p.msg or "`buf" in p.msg, p.msg


def test_the_frame_layout_assumed_here_is_the_cores() -> None:
    # The wire regression is wrapped in a frame header from the core; its fields must be the
    # ones the core reads back, or the replay above would test a different buffer.
    header = _native.comm.frame_header("blockwise", 16, "float32", [17])
    scheme, block, dtype, shape, offset = _native.comm.parse_frame(
        np.frombuffer(header + bytes(_native.comm.packed_len("blockwise", 16, 17)), np.uint8)
    )
    assert (scheme, block, dtype, shape, offset) == ("blockwise", 16, "float32", [17], len(header))
    assert struct.unpack_from("<q", header, len(header) - 8)[0] == 17
