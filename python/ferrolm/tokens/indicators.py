"""Weight-based indicators of under-trained tokens (Magikarp)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import numpy.typing as npt

from ferrolm import _native
from ferrolm.tokens.scan import ScanResult
from ferrolm.tokens.scan import scan as scan_tokenizer
from ferrolm.tokens.weights import EmbeddingMatrices, read_embeddings

#: Special tokens whose name says they are placeholders nobody trained.
UNUSED_NAME = re.compile(
    r"^(<\|?unused[_-]?\d*\|?>|\[unused\d*\]|<\|?pad(ding)?\|?>|\[PAD\]|<pad_?\d*>|<\|?reserved[_a-z]*\d*\|?>)$",
    re.IGNORECASE,
)
#: Rows shared by at least this many tokens are treated as never-updated initial values.
IDENTICAL_GROUP = 3


@dataclass
class Indicators:
    """Weight indicators for every token; lower ``cosine_distance`` = more under-trained.

    Attributes:
        cosine_distance: ``1 - cos`` between each unembedding row and the mean of the
            reference rows, after removing the matrix's dominant direction (float32, [vocab]).
        embedding_norm: L2 norm of each input-embedding row for untied models, else None.
        identical_rows: how many rows equal each row (1 = unique).
        reference_ids: the known-unused tokens whose mean defines "untrained".
        reference_source: how the reference set was chosen (readable text).
        tied: whether the input embedding doubles as the unembedding.
        percentile: candidates lie below this percentile of reachable tokens' distances.
        threshold: the distance at that percentile.
        candidates: ids below the threshold (excluding special and reference tokens), most
            under-trained first.
        notes: fallbacks and adjustments made (row padding, missing reference set, ...).
    """

    cosine_distance: npt.NDArray[np.float32]
    embedding_norm: Optional[npt.NDArray[np.float32]]
    identical_rows: npt.NDArray[np.uint32]
    reference_ids: npt.NDArray[np.uint32]
    reference_source: str
    tied: bool
    percentile: float
    threshold: float
    candidates: npt.NDArray[np.int64]
    notes: list[str] = field(default_factory=list)

    def ranking(self) -> npt.NDArray[np.int64]:
        """All token ids, most under-trained-looking (smallest distance) first."""
        return np.argsort(self.cosine_distance, kind="stable")


def find_reference(
    result: ScanResult, identical_rows: Optional[npt.NDArray[np.uint32]] = None
) -> tuple[npt.NDArray[np.uint32], str]:
    """Known-unused tokens found from a scan (and optionally identical weight rows).

    Takes the union of: special tokens named like placeholders (``<unused3>``,
    ``[unused7]``, ``<pad>``, ``[PAD]``, ``<|reserved_..|>``), unreachable non-special tokens,
    byte tokens holding a byte no UTF-8 text contains (0xC0, 0xC1, 0xF5-0xFF), and rows equal to
    at least two others. Partial UTF-8 tokens in general are NOT used: they occur inside every
    multi-byte character and are well trained.

    Returns:
        ``(ids, description)``; ``ids`` may be empty.

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> from ferrolm import tokens
        >>> bpe = models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "ba": 3}, merges=[("a", "b")])
        >>> ids, why = tokens.find_reference(tokens.scan(Tokenizer(bpe)))
        >>> ids.tolist(), why
        ([3], '1 unreachable tokens')
    """
    named = np.zeros(result.vocab_size, dtype=bool)
    for i in np.flatnonzero(result.special):
        named[i] = bool(UNUSED_NAME.match(result.tokens[int(i)]))
    unreachable = result.unreachable & ~result.special
    impossible = result.impossible_bytes & ~result.special
    parts = [
        ("unused/pad-named specials", named),
        ("unreachable tokens", unreachable),
        ("impossible-byte tokens", impossible),
    ]
    mask = named | unreachable | impossible
    if identical_rows is not None:
        identical = identical_rows[: result.vocab_size] >= IDENTICAL_GROUP
        parts.append((f"rows shared by >= {IDENTICAL_GROUP} tokens", identical))
        mask |= identical
    described = ", ".join(f"{int(m.sum())} {name}" for name, m in parts if m.any())
    return np.flatnonzero(mask).astype(np.uint32), described or "none found"


@dataclass(frozen=True)
class PreparedWeights:
    """The half of :func:`indicators` that needs only the weights, computed ahead of the scan.

    It does not depend on the tokenizer, so it can run while the tokenizer is scanned (both
    release the GIL); ``ferrolm undertrained`` does that. Pass it to :func:`indicators` as
    ``model``.

    Attributes:
        matrices: the (un)embedding matrices, every stored row.
        identical_rows: :func:`indicators`' ``identical_rows`` over the unembedding's rows.
        direction: the unembedding's dominant direction, or None when not asked for.
    """

    matrices: EmbeddingMatrices
    identical_rows: npt.NDArray[np.uint32]
    direction: Optional[npt.NDArray[np.float32]]


def _unembedding(mats: EmbeddingMatrices) -> npt.NDArray[np.float32]:
    return mats.embedding if mats.unembedding is None else mats.unembedding


def prepare_weights(
    model: Union[str, Path, EmbeddingMatrices],
    *,
    remove_dominant: bool = True,
    revision: Optional[str] = None,
) -> PreparedWeights:
    """Reads the weights and computes what :func:`indicators` needs from them alone.

    Args:
        model: a model directory, GGUF or safetensors file, Hub id, or
            :class:`EmbeddingMatrices`.
        remove_dominant: compute the dominant direction (as :func:`indicators` does by default).
        revision: for a Hub id, the branch, tag or commit to read (default the main branch).

    Raises:
        NoWeightsError: ``model`` holds no weights (a vocab-only GGUF file); a ValueError.
        ValueError: a malformed model file.

    Example:
        >>> emb = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
        >>> mats = EmbeddingMatrices(emb, None, "embed.weight", None, "in memory")
        >>> prepare_weights(mats).identical_rows.tolist()
        [1, 1, 1, 1]
    """
    if isinstance(model, EmbeddingMatrices):
        _no_revision(revision, model)
        mats = model
    else:
        mats = read_embeddings(model, revision=revision)
    unemb = np.ascontiguousarray(_unembedding(mats), dtype=np.float32)
    identical = _native.tokens.identical_row_counts(unemb)
    direction = _native.tokens.dominant_direction(unemb) if remove_dominant else None
    return PreparedWeights(mats, identical, direction)


def _no_revision(revision: Optional[str], model: object) -> None:
    if revision is not None:
        raise ValueError(
            f"`revision` goes with a Hub id `model`, not with a {type(model).__name__}"
        )


def _fit_rows(
    name: str,
    matrix: npt.NDArray[np.float32],
    vocab: int,
    notes: list[str],
    stored: Optional[int] = None,
) -> npt.NDArray[np.float32]:
    rows = matrix.shape[0] if stored is None else stored
    if rows < vocab:
        raise ValueError(
            f"`{name}` has {rows} rows but the tokenizer has {vocab} tokens; the weights and "
            "the tokenizer do not belong together"
        )
    if rows > vocab:
        notes.append(
            f"`{name}` has {rows - vocab} more rows than the vocabulary ({rows} vs {vocab}): "
            "padding rows ignored"
        )
    return np.ascontiguousarray(matrix[:vocab], dtype=np.float32)


def indicators(
    model: Union[str, Path, EmbeddingMatrices, PreparedWeights],
    scan: Optional[ScanResult] = None,
    *,
    percentile: float = 2.0,
    reference_ids: Optional[Sequence[int]] = None,
    fallback: Literal["error", "lowest_norm"] = "error",
    remove_dominant: bool = True,
    revision: Optional[str] = None,
) -> Indicators:
    """Weight indicators of under-trained tokens, without loading the model.

    Reads the (un)embedding matrices (safetensors or GGUF, dequantized), finds a reference
    set of known-unused tokens from the scan (see :func:`find_reference`), projects out the
    matrix's dominant direction (shared by all rows) and ranks every token by the cosine
    distance of its unembedding row to the reference mean. Candidates are tokens below the
    ``percentile``-th percentile of the distances of reachable ("ok") tokens.

    Args:
        model: a model directory, GGUF or safetensors file, a Hub id (``org/name``: only the
            tokenizer and the shards holding the (un)embedding are fetched, the index
            ``model.safetensors.index.json`` says which), :class:`EmbeddingMatrices`, or
            :class:`PreparedWeights` (from :func:`prepare_weights`, which reuses its work).
        scan: the tokenizer scan; by default the tokenizer next to / inside ``model`` (at
            ``revision`` for a Hub id).
        percentile: candidate threshold, in percent of reachable tokens (0, 100).
        reference_ids: use these ids as the reference set instead of finding one.
        fallback: when no reference set is found: ``"error"`` raises; ``"lowest_norm"`` uses
            the 0.5% of tokens with the smallest unembedding norm, noted in ``notes``.
        remove_dominant: project out the dominant direction first (Magikarp's recipe).
        revision: for a Hub id, the branch, tag or commit to read (default the main branch),
            resolved like ``from_pretrained`` (hub cache, ``HF_HOME``, ``HF_HUB_OFFLINE``);
            ignored for a local path.

    Raises:
        FileNotFoundError: ``model`` is neither a local path nor a Hub repository that can be
            found at ``revision`` (offline: in the cache).
        NoWeightsError: ``model`` holds no weights (a vocab-only GGUF file); a ValueError.
        ValueError: row count below the vocabulary size, no reference set (with
            ``fallback="error"``), a malformed model file, or bad arguments.

    Example:
        A toy vocabulary (its unreachable token ``"ba"`` is the reference set) with random
        weights; pass a model directory or file instead of ``mats`` for a real model:

        >>> from tokenizers import Tokenizer, models
        >>> from ferrolm import tokens
        >>> bpe = models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "ba": 3}, merges=[("a", "b")])
        >>> emb = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
        >>> mats = tokens.EmbeddingMatrices(emb, None, "embed.weight", None, "in memory")
        >>> ind = tokens.indicators(mats, scan=tokens.scan(Tokenizer(bpe)), percentile=50)
        >>> ind.reference_ids.tolist(), ind.reference_source
        ([3], '1 unreachable tokens')
        >>> ind.candidates.tolist()
        [0]
    """
    try:
        in_range = 0.0 < float(percentile) < 100.0
    except (OverflowError, TypeError, ValueError):
        in_range = False  # an int past float's range, or not a number: named below
    if not in_range:
        raise ValueError(f"`percentile` must be in (0, 100), got {percentile!r}")
    if fallback not in ("error", "lowest_norm"):
        raise ValueError(f"`fallback` must be 'error' or 'lowest_norm', got {fallback!r}")
    prepared = model if isinstance(model, PreparedWeights) else None
    if isinstance(model, (EmbeddingMatrices, PreparedWeights)):
        _no_revision(revision, model)
    if scan is None:
        if isinstance(model, (EmbeddingMatrices, PreparedWeights)):
            raise ValueError(f"`scan` is required when `model` is a {type(model).__name__}")
        scan = scan_tokenizer(model, containment=False, revision=revision)
    vocab = scan.vocab_size
    if isinstance(model, PreparedWeights):
        mats = model.matrices
    elif isinstance(model, EmbeddingMatrices):
        mats = model
    else:
        # Only the vocabulary's rows are read (and dequantized, in Rust): padding rows never are.
        mats = read_embeddings(model, max_rows=vocab, revision=revision)
    # The prepared analysis covers every stored row: it holds when those are the vocabulary's.
    reuse = prepared is not None and _unembedding(mats).shape[0] == vocab
    stored = mats.stored_rows or (None, None)
    notes: list[str] = []
    tied = mats.unembedding is None
    unemb = _fit_rows(
        mats.embedding_name if tied else str(mats.unembedding_name),
        mats.embedding if tied else mats.unembedding,  # type: ignore[arg-type]
        vocab,
        notes,
        stored[0] if tied else stored[1],
    )
    norm = None
    if not tied:
        emb = _fit_rows(mats.embedding_name, mats.embedding, vocab, notes, stored[0])
        norm = _native.tokens.row_norms(emb)
    if reuse and prepared is not None:
        identical = prepared.identical_rows
    else:
        identical = _native.tokens.identical_row_counts(unemb)
    if reference_ids is not None:
        raw = np.asarray(reference_ids)
        if raw.size and raw.dtype.kind not in "iuO":
            # A float id would be truncated to another token in silence.
            raise TypeError(f"`reference_ids` must hold integers, got dtype {raw.dtype}")
        try:
            given = np.asarray(reference_ids, dtype=np.int64)
        except (OverflowError, TypeError, ValueError):
            raise ValueError(
                f"`reference_ids` must be integer ids in [0, {vocab}), got {reference_ids!r}"
            ) from None
        if given.size == 0 or given.min() < 0 or given.max() >= vocab:
            raise ValueError(f"`reference_ids` must be non-empty ids in [0, {vocab})")
        ref = given.astype(np.uint32)
        source = f"{ref.size} ids given by the caller"
    else:
        ref, source = find_reference(scan, identical)
    if ref.size == 0:
        if fallback == "error":
            raise ValueError(
                "no reference set of unused tokens found (no unreachable, unused-named or "
                "identical-row tokens); pass `reference_ids=` or `fallback='lowest_norm'`"
            )
        norms = _native.tokens.row_norms(unemb)
        k = max(1, vocab // 200)
        ref = np.argsort(norms, kind="stable")[:k].astype(np.uint32)
        source = f"fallback: the {k} tokens with the smallest unembedding norm"
        notes.append(f"no reference set of unused tokens found; {source}")
    if not remove_dominant:
        direction = None
    elif reuse and prepared is not None and prepared.direction is not None:
        direction = prepared.direction
    else:
        direction = _native.tokens.dominant_direction(unemb)
    distance = _native.tokens.cosine_distance(unemb, ref, remove=direction)
    reachable = (scan.category == 0) & ~scan.single_byte
    pool = distance[reachable] if reachable.any() else distance
    threshold = float(np.percentile(pool, percentile))
    excluded = scan.special.copy()
    excluded[ref] = True
    order = np.argsort(distance, kind="stable")
    candidates = order[(distance[order] < threshold) & ~excluded[order]]
    return Indicators(
        cosine_distance=distance,
        embedding_norm=norm,
        identical_rows=identical,
        reference_ids=ref,
        reference_source=source,
        tied=tied,
        percentile=float(percentile),
        threshold=threshold,
        candidates=candidates.astype(np.int64),
        notes=notes,
    )
