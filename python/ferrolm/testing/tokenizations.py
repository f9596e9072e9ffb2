"""llama.cpp's reference tokenizations: vocab-only GGUF files with inputs and expected ids.

llama.cpp ships, for each tokenizer family it supports, a vocab-only ``ggml-vocab-NAME.gguf``
with ``.inp`` (inputs separated by a ``__ggml_vocab_test__`` line) and ``.out`` (one line of
expected ids per input, produced by the model's own Hugging Face tokenizer, no BOS/EOS added).
``scripts/fetch-fixtures.sh`` installs them from the ``llama-cpp-python`` sdist.

Example:
    >>> isinstance(reference_vocab_names(), list)
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

#: Environment variable naming the directory that holds the ``ggml-vocab-*`` files.
MODELS_ENV = "FERROLM_LLAMA_CPP_MODELS"
_SEPARATOR = "\n__ggml_vocab_test__\n"


def llama_cpp_models_dir() -> Path:
    """Where the reference files are looked for.

    ``$FERROLM_LLAMA_CPP_MODELS`` when set, else
    ``${XDG_CACHE_HOME:-~/.cache}/ferrolm/fixtures/llama.cpp/models`` (where
    ``scripts/fetch-fixtures.sh`` puts them). The directory may not exist.
    """
    override = os.environ.get(MODELS_ENV)
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ferrolm" / "fixtures" / "llama.cpp" / "models"


def reference_vocab_names(directory: Optional[Path] = None) -> list[str]:
    """Names (``gpt-2``, ``llama-spm``...) of the vocabularies with ``.inp`` and ``.out``."""
    root = llama_cpp_models_dir() if directory is None else directory
    if not root.is_dir():
        return []
    names = []
    for inp in sorted(root.glob("ggml-vocab-*.gguf.inp")):
        name = inp.name[len("ggml-vocab-") : -len(".gguf.inp")]
        if inp.with_suffix(".out").is_file() and (root / f"ggml-vocab-{name}.gguf").is_file():
            names.append(name)
    return names


def reference_gguf(name: str, directory: Optional[Path] = None) -> Path:
    """The vocab-only GGUF file of ``name``."""
    root = llama_cpp_models_dir() if directory is None else directory
    path = root / f"ggml-vocab-{name}.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"no reference vocabulary {name!r}: {path} is missing")
    return path


def reference_tokenizations(
    name: str, directory: Optional[Path] = None
) -> list[tuple[str, list[int]]]:
    """``(input text, expected ids)`` pairs of vocabulary ``name``.

    The ``.inp`` inputs are separated by ``\\n__ggml_vocab_test__\\n`` (a trailing separator
    leaves an empty last piece, which is not an input); the ``.out`` file has one line of
    space-separated ids per input (empty for the empty input).

    Raises:
        FileNotFoundError: the files are missing.
        ValueError: the two files disagree on the number of inputs.
    """
    gguf = reference_gguf(name, directory)
    inp = Path(f"{gguf}.inp").read_text(encoding="utf-8")
    out = Path(f"{gguf}.out").read_text(encoding="utf-8")
    texts = inp.split(_SEPARATOR)
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) == len(lines) + 1 and texts[-1] == "":
        texts.pop()
    if len(texts) != len(lines):
        raise ValueError(
            f"{gguf}.inp has {len(texts)} inputs but {gguf}.out has {len(lines)} lines"
        )
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]
