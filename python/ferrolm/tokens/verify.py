"""Verification with the model: can it repeat a candidate token when asked to?"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

from ferrolm._gguf_cache import cache_root, cached_checkpoint, convert_gguf
from ferrolm._optional import require
from ferrolm._paths import resolve

#: Prompts asking the model to repeat ``{token}``; the second item starts the answer, so the
#: next token the model predicts should be the candidate itself.
DEFAULT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("Please repeat the following string back to me exactly: «{token}»", "«"),
    ("Write this text once and nothing else.\nText: «{token}»", "«"),
    ('Can you say "{token}" for me? Just repeat it.', '"'),
)
_PLACEHOLDER = "\ue000"


@dataclass
class Verification:
    """Result of :func:`verify`.

    Attributes:
        ids: the candidate token ids, in the order given.
        probability: per template, the probability that the model's next token is the
            candidate (float32, ``[templates, len(ids)]``).
        max_probability: the best over templates, per candidate.
        confirmed: ``max_probability < threshold``: the model cannot repeat the token.
        threshold: the confirmation threshold.
        seconds: wall-clock time of the model calls.
        notes: fallbacks taken (e.g. no prefix sharing).
    """

    ids: npt.NDArray[np.int64]
    probability: npt.NDArray[np.float32]
    max_probability: npt.NDArray[np.float32]
    confirmed: npt.NDArray[np.bool_]
    threshold: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Candidates verified per second."""
        return len(self.ids) / self.seconds if self.seconds > 0 else float("inf")


def _template_ids(tokenizer: Any, user: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids before and after the candidate for one template (chat format if any)."""
    message = user.format(token=_PLACEHOLDER)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = message + "\n"
    text = str(text) + answer
    before, sep, after = text.partition(_PLACEHOLDER)
    if not sep:
        raise ValueError("the chat template dropped the candidate placeholder")
    pre = list(tokenizer.encode(before, add_special_tokens=False))
    bos = getattr(tokenizer, "bos_token_id", None)
    if getattr(tokenizer, "add_bos_token", False) and bos is not None and pre[:1] != [bos]:
        pre = [bos, *pre]
    post = list(tokenizer.encode(after, add_special_tokens=False))
    return pre, post


def _probabilities_shared_prefix(
    model: Any, pre: list[int], post: list[int], batch: list[int], device: Any
) -> Any:
    import torch

    # transformers 5 renamed `past_key_values` to `cache` (the old name warns).
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    b = len(batch)
    prefix = torch.tensor([pre], device=device)
    cache = getattr(model(prefix, use_cache=True), name)
    cache.batch_repeat_interleave(b)
    suffix = torch.tensor([[t, *post] for t in batch], device=device)
    mask = torch.ones(b, len(pre) + suffix.shape[1], dtype=torch.long, device=device)
    # Only the last position's logits are read: skip the vocabulary projection elsewhere.
    params = inspect.signature(model.forward).parameters
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    logits = model(suffix, attention_mask=mask, use_cache=True, **{name: cache}, **keep).logits
    return logits[:, -1].float().softmax(-1)


def _probabilities_full(
    model: Any, pre: list[int], post: list[int], batch: list[int], device: Any
) -> Any:
    import torch

    ids = torch.tensor([[*pre, t, *post] for t in batch], device=device)
    logits = model(ids, use_cache=False).logits
    return logits[:, -1].float().softmax(-1)


def verify(
    model: Any,
    tokenizer: Any,
    candidates: Sequence[int] | npt.NDArray[np.integer[Any]],
    *,
    threshold: float = 0.01,
    batch_size: int = 64,
    share_prefix: bool = True,
    templates: Sequence[tuple[str, str]] = DEFAULT_TEMPLATES,
    progress: Optional[Callable[[int], None]] = None,
) -> Verification:
    """Asks the model to repeat each candidate and measures the probability that it does.

    Every template is a request to repeat a string plus the start of the answer; the
    candidate is inserted as a token id (never re-tokenized), and the probability of the model
    emitting the candidate next is read from one forward pass. Candidates of a batch share
    the prompt's prefix: it is computed once and its KV cache repeated across the batch. A
    token is confirmed under-trained when its best probability over templates stays below
    ``threshold``.

    Args:
        model: a Hugging Face causal LM (eval mode; any device).
        tokenizer: its Hugging Face tokenizer (the chat template is used when present).
        candidates: token ids to verify.
        threshold: confirmation threshold on the probability (default 0.01).
        batch_size: candidates per forward pass (1 = one prompt at a time).
        share_prefix: reuse the prefix KV cache across the batch (else full prompts).
        templates: ``(request with {token}, answer start)`` pairs.
        progress: called with the number of candidates finished after each batch.

    Returns:
        A :class:`Verification`.

    Raises:
        ValueError: bad threshold, batch size, templates, or ids outside the vocabulary.

    Example:
        >>> v = tokens.verify(model, tokenizer, ind.candidates[:20])  # doctest: +SKIP
        >>> v.confirmed.sum()  # doctest: +SKIP
    """
    require("torch", "`ferrolm.tokens.verify`")
    import torch

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1), got {threshold!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    if not templates:
        raise ValueError("`templates` must hold at least one (request, answer start) pair")
    ids = np.asarray(candidates, dtype=np.int64).reshape(-1)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(
            f"`candidates` must be token ids in [0, {vocab}), got values in "
            f"[{ids.min()}, {ids.max()}]"
        )
    device = next(model.parameters()).device
    notes: list[str] = []
    probability = np.zeros((len(templates), ids.size), dtype=np.float32)
    done = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for k, (user, answer) in enumerate(templates):
            if "{token}" not in user:
                raise ValueError(f"template {user!r} must contain '{{token}}'")
            pre, post = _template_ids(tokenizer, user, answer)
            for lo in range(0, ids.size, batch_size):
                batch = [int(t) for t in ids[lo : lo + batch_size]]
                if share_prefix and batch_size > 1:
                    try:
                        p = _probabilities_shared_prefix(model, pre, post, batch, device)
                    except (AttributeError, TypeError) as e:  # a model without a KV cache
                        share_prefix = False
                        notes.append(f"prefix sharing unavailable ({e}); full prompts used")
                        p = _probabilities_full(model, pre, post, batch, device)
                else:
                    p = _probabilities_full(model, pre, post, batch, device)
                rows = torch.arange(len(batch), device=p.device)
                picked = p[rows, torch.tensor(batch, device=p.device)]
                probability[k, lo : lo + len(batch)] = picked.cpu().numpy()
                done += len(batch)
                if progress is not None:
                    progress(done)
    seconds = time.perf_counter() - start
    best = probability.max(axis=0) if ids.size else np.zeros(0, dtype=np.float32)
    return Verification(
        ids=ids,
        probability=probability,
        max_probability=best,
        confirmed=best < threshold,
        threshold=float(threshold),
        seconds=seconds,
        notes=notes,
    )


def load_model(
    path: str | Path,
    *,
    revision: Optional[str] = None,
    device: Any = None,
    dtype: Any = None,
) -> tuple[Any, Any]:
    """Loads a causal LM and its tokenizer for :func:`verify`.

    ``path`` is a model directory, a GGUF file, or a Hugging Face Hub id (``org/name``) resolved
    like ``from_pretrained`` (hub cache, ``HF_HOME``, ``HF_HUB_OFFLINE``, `revision`); the
    user's environment is never changed. A GGUF file (or a directory or repository holding one
    and no ``config.json``) is converted with ``transformers`` once (slow: tens of seconds) and
    the bfloat16 result cached under :func:`~ferrolm._gguf_cache.cache_root` ``/tokens/``, keyed
    by the file's name, size and modification time; later loads take seconds. The cache keeps
    under ``FERROLM_CACHE_MAX_GB`` (default 50) by deleting the least recently used entries
    when a new conversion is written.

    Args:
        path: a directory, a GGUF file or a Hub id.
        revision: the Hub revision (branch, tag or commit); ignored for local paths.
        device: where to put the model (``"cuda"``, ``torch.device``...); default the CPU.
        dtype: ``torch.dtype`` or its name (``"bfloat16"``); default float32.

    Raises:
        FileNotFoundError: ``path`` is neither a local path nor a Hub model that can be found.
        TypeError: `dtype` is not a floating-point dtype.

    Example:
        >>> model, tok = tokens.load_model(
        ...     "HuggingFaceTB/SmolLM2-135M", device="cuda", dtype="bfloat16"
        ... )  # doctest: +SKIP
    """
    require("torch", "`ferrolm.tokens.load_model`")
    require("transformers", "`ferrolm.tokens.load_model`")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _dtype(dtype)
    target = torch.device(device) if device is not None else torch.device("cpu")
    local = resolve(path, revision=revision)
    if local.is_dir():
        ggufs = sorted(local.glob("*.gguf"))
        if (local / "config.json").is_file() or not ggufs:
            model: Any = AutoModelForCausalLM.from_pretrained(local, dtype=torch_dtype)
            return model.to(target).eval(), AutoTokenizer.from_pretrained(local)
        local = ggufs[0]
    real = local.resolve()  # a Hub snapshot links to its blob: key the cache on the file
    stat = real.stat()
    key = hashlib.sha256(f"{local.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()
    saved = cache_root() / "tokens" / f"{local.stem}-{key[:12]}-bf16"
    gguf = local
    # Held in use while it loads: a conversion in another process cannot evict it meanwhile.
    with cached_checkpoint(saved, lambda path: convert_gguf(gguf, path, dtype="bfloat16")):
        model = AutoModelForCausalLM.from_pretrained(saved, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(saved)
    return model.to(target).eval(), tokenizer


def _dtype(dtype: Any) -> Any:
    import torch

    if dtype is None:
        return torch.float32
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(
            f"`dtype` must be a floating-point torch.dtype or its name (e.g. 'bfloat16'), "
            f"got {dtype!r}"
        )
    return value
