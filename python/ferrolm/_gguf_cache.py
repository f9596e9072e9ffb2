"""Converting a GGUF model to a cached float32 Hugging Face checkpoint, once.

Loading GGUF through ``transformers`` dequantizes every tensor and takes tens of seconds; the
speculative-decoding fixtures and ``ferrolm.tokens`` both convert once and reload the saved copy
in seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferrolm._optional import require

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where converted models are cached: ``$FERROLM_CACHE`` or ``~/.cache/ferrolm``."""
    return Path(os.environ.get("FERROLM_CACHE", Path.home() / ".cache" / "ferrolm"))


def convert_gguf(gguf: Path, saved: Path) -> None:
    """Writes ``gguf`` as a plain float32 checkpoint (model + tokenizer) to ``saved``.

    The copy is staged next to ``saved`` and renamed into place, so an interrupted conversion
    never leaves a half-written cache entry. A no-op when ``saved`` already holds a model.
    """
    if (saved / "config.json").is_file():
        return
    require("torch", "converting a GGUF model")
    require("transformers", "converting a GGUF model")
    # transformers reads GGUF through gguf and refuses to load one without accelerate.
    require("gguf", "converting a GGUF model")
    require("accelerate", "converting a GGUF model")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a float32 checkpoint in %s (once; tens of seconds)", gguf, saved)
    saved.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=saved.parent) as tmp:
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantized already: drop the quantizer record so save_pretrained
        # writes a plain float32 checkpoint (no second copy in memory).
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        staging = Path(tmp) / "out"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del model
        if saved.exists():
            shutil.rmtree(saved)
        staging.rename(saved)
