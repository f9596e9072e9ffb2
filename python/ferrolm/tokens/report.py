"""The `ferrolm undertrained` report: scan, indicators and (optionally) verification."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import numpy as np

from ferrolm import _native
from ferrolm._paths import check_revision, is_hub_id, resolve, resolve_embeddings
from ferrolm._report import Report, Section
from ferrolm.tokens.indicators import Indicators, indicators, prepare_weights
from ferrolm.tokens.scan import CATEGORY_NAMES, SUMMARY_DEFINITIONS, ScanResult, scan
from ferrolm.tokens.verify import Verification, load_model, verify
from ferrolm.tokens.weights import NoWeightsError


@dataclass
class UndertrainedReport:
    """Everything `ferrolm undertrained` found, as data and as a printable report."""

    path: str
    scan: ScanResult
    indicators: Optional[Indicators]
    verification: Optional[Verification]
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    top: int = 20

    def _token(self, i: int) -> str:
        return repr(self.scan.decoded[i])

    def to_report(self) -> Report:
        """The human-readable report (Markdown tables via :class:`ferrolm._report.Report`)."""
        r = self.scan
        counts = r.counts()
        classes = list(SUMMARY_DEFINITIONS)
        summary = r.summary_class()
        s = Section(f"Tokenizer scan ({r.vocab_size} tokens)", ["class", "tokens", "meaning"])
        for name, meaning in SUMMARY_DEFINITIONS.items():
            s.add(name, counts[name], meaning)
        s.add("total", r.vocab_size, "classes are exclusive: special > single_byte > the rest")
        s.notes.append(f"source: {r.source}; scan took {self.timings_s.get('scan', 0):.2f} s")
        s.notes += [f"warning: {w}" for w in r.warnings] + r.notes
        sections = [s]
        ind = self.indicators
        if ind is not None:
            v = self.verification
            verified = {} if v is None else {int(t): k for k, t in enumerate(v.ids)}
            cols = ["rank", "id", "token", "cosine distance", "inside longer tokens", "scan"]
            if ind.embedding_norm is not None:
                cols.append("embedding norm")
            if v is not None:
                cols += ["p(repeat)", "confirmed"]
            t = Section(f"Most under-trained-looking tokens (top {self.top})", cols)
            for rank, i in enumerate(ind.candidates[: self.top], start=1):
                i = int(i)
                row: list[Any] = [rank, i, self._token(i), float(ind.cosine_distance[i])]
                if r.contained_count is not None:
                    inside = [self._token(j) for j in r.contained_in(i)[:2]]
                    row.append(f"{int(r.contained_count[i])} " + " ".join(inside))
                else:
                    row.append(None)
                row.append(classes[int(summary[i])])
                if ind.embedding_norm is not None:
                    row.append(float(ind.embedding_norm[i]))
                if v is not None:
                    k = verified.get(i)
                    row += (
                        [None, None]
                        if k is None
                        else [
                            float(v.max_probability[k]),
                            bool(v.confirmed[k]),
                        ]
                    )
                t.add(*row)
            t.notes += [
                f"reference set of known-unused tokens: {ind.reference_source}",
                f"{len(ind.candidates)} candidates: cosine distance below {ind.threshold:.4f}, "
                f"the {ind.percentile:g}% quantile over reachable tokens; special and reference "
                "tokens excluded",
                "embeddings tied: the input embedding is ranked"
                if ind.tied
                else "untied model: unembedding ranked, input-embedding norm shown",
                f"indicators took {self.timings_s.get('indicators', 0):.2f} s",
            ]
            t.notes += ind.notes
            sections.append(t)
            if v is not None:
                vs = Section("Verification", ["verified", "confirmed", "threshold", "tokens/s"])
                vs.add(len(v.ids), int(v.confirmed.sum()), v.threshold, v.tokens_per_second)
                vs.notes.append(
                    "confirmed = the model's probability of repeating the token when asked "
                    f"stays below {v.threshold:g} for every prompt template"
                )
                vs.notes += v.notes
                sections.append(vs)
        rep = Report(f"ferrolm undertrained {self.path}", sections)
        if self.notes:
            rep.sections[0].notes += self.notes
        return rep

    def _entry(self, i: int) -> dict[str, Any]:
        return {"id": i, "token": self.scan.tokens[i], "decoded": self.scan.decoded[i]}

    def to_dict(self) -> dict[str, Any]:
        """Plain data: counts, every candidate with its indicators, verification results.

        Every token id listed comes with its vocabulary string and decoded text, as
        ``{"id": 17, "token": "Ġthe", "decoded": " the"}``, so the report reads without a
        tokenizer at hand.
        """
        r = self.scan
        entry = self._entry
        out: dict[str, Any] = {
            "path": self.path,
            "vocab_size": r.vocab_size,
            "counts": r.counts(),
            "definitions": SUMMARY_DEFINITIONS,
            "timings_s": self.timings_s,
            "notes": r.notes + self.notes,
            "warnings": list(r.warnings),
            "tokens_by_class": {
                name: [entry(int(i)) for i in r.ids(name)]
                for name in SUMMARY_DEFINITIONS
                if name != "ok"
            },
        }
        ind = self.indicators
        if ind is not None:
            v = self.verification
            verified = {} if v is None else {int(t): k for k, t in enumerate(v.ids)}
            rows = []
            for i in ind.candidates:
                i = int(i)
                row: dict[str, Any] = {
                    "id": i,
                    "token": r.tokens[i],
                    "decoded": r.decoded[i],
                    "cosine_distance": float(ind.cosine_distance[i]),
                    "category": CATEGORY_NAMES[int(r.category[i])],
                    "single_byte": bool(r.single_byte[i]),
                }
                if r.contained_count is not None:
                    row["contained_in_count"] = int(r.contained_count[i])
                    row["contained_in"] = [entry(int(j)) for j in r.contained_in(i)]
                if ind.embedding_norm is not None:
                    row["embedding_norm"] = float(ind.embedding_norm[i])
                if i in verified and v is not None:
                    row["p_repeat"] = float(v.max_probability[verified[i]])
                    row["confirmed"] = bool(v.confirmed[verified[i]])
                rows.append(row)
            out["indicators"] = {
                "reference_source": ind.reference_source,
                "reference": [entry(int(x)) for x in ind.reference_ids],
                "percentile": ind.percentile,
                "threshold": ind.threshold,
                "tied": ind.tied,
                "notes": ind.notes,
                "candidates": rows,
            }
            if v is not None:
                out["verification"] = {
                    "threshold": v.threshold,
                    "verified": len(v.ids),
                    "confirmed": int(v.confirmed.sum()),
                    "tokens_per_second": v.tokens_per_second,
                    "notes": v.notes,
                }
        return out


T = TypeVar("T")


def _timed(fn: Callable[[Path], T], path: Path) -> tuple[T, float]:
    start = time.perf_counter()
    return fn(path), time.perf_counter() - start


def _on_one_thread(fn: Callable[[Path], T], path: Path) -> tuple[T, float]:
    # The weights' worker runs its native calls on one thread: the scan beside it is mostly
    # serial and keeps a core, and the scan's parallel parts get the rest.
    _native.set_thread_num_threads(1)
    try:
        return _timed(fn, path)
    finally:
        _native.set_thread_num_threads(None)


def _has_weights(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.safetensors")) or any(path.glob("*.gguf"))
    with open(path, "rb") as f:
        magic = f.read(4)
    return magic == b"GGUF" or path.suffix == ".safetensors"


def undertrained(
    path: str | Path,
    *,
    run_verify: bool = False,
    percentile: float = 2.0,
    threshold: float = 0.01,
    verify_top: int = 100,
    top: int = 20,
    batch_size: int = 64,
    progress: bool = False,
    device: Any = None,
    dtype: Any = None,
    revision: Optional[str] = None,
) -> UndertrainedReport:
    """Runs the whole pipeline on a model directory, GGUF file or tokenizer file.

    Weights are only read for a GGUF file or a directory with weights; without them the
    report holds the tokenizer scan alone. With ``run_verify`` the ``verify_top`` best
    candidates are checked with the model (converted and cached on first use), loaded on
    ``device`` with ``dtype`` (see :func:`~ferrolm.tokens.load_model`). A Hub id is resolved
    like ``from_pretrained`` at ``revision`` (a branch, tag or commit; default the main
    branch); without ``run_verify`` only its tokenizer and embedding shards are fetched.
    """
    from ferrolm._progress import progress_bar

    check_revision(revision)
    if not Path(path).exists() and is_hub_id(str(path)):
        # A Hub id: verification loads the model, else the embedding shards are enough.
        fetch = resolve if run_verify else resolve_embeddings
        path = fetch(str(path), revision=revision)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`path` does not exist: {path}")
    weights = _has_weights(path)
    stages = 1 + int(weights) + int(weights and run_verify)
    bar = progress_bar(stages, "scan", progress)
    timings: dict[str, float] = {}
    notes: list[str] = []
    # The weights' half of the indicators (reading, dequantizing, the dominant direction) does
    # not need the tokenizer: it runs on a worker thread while the scan runs here (both release
    # the GIL), which on a large vocabulary roughly halves the wall time.
    pool = ThreadPoolExecutor(1, thread_name_prefix="ferrolm-weights") if weights else None
    try:
        begin = time.perf_counter()
        prepared = None if pool is None else pool.submit(_on_one_thread, prepare_weights, path)
        result = scan(path, containment=True)
        timings["scan"] = time.perf_counter() - begin
        bar.update(1)
        ind = None
        ver = None
        if prepared is not None:
            bar.set_description("indicators")
            start = time.perf_counter()
            try:
                weights_ready, seconds = prepared.result()
                timings["read_weights"] = seconds
                ind = indicators(
                    weights_ready, scan=result, percentile=percentile, fallback="lowest_norm"
                )
            except NoWeightsError:
                weights = False
            timings["indicators"] = time.perf_counter() - start
            bar.update(1)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    if ind is not None and run_verify:
        bar.set_description("verify: loading model")
        start = time.perf_counter()
        model, tokenizer = load_model(path, device=device, dtype=dtype)
        timings["load_model"] = time.perf_counter() - start
        ids = ind.candidates[:verify_top]
        inner = progress_bar(3 * len(ids), "verify", progress)
        last = [0]

        def step(done: int) -> None:
            inner.update(done - last[0])
            last[0] = done

        ver = verify(
            model, tokenizer, ids, threshold=threshold, batch_size=batch_size, progress=step
        )
        inner.close()
        timings["verify"] = ver.seconds
        bar.update(1)
    if not weights and run_verify:
        notes.append("--verify ignored: no model weights at this path (tokenizer only)")
    if not weights:
        notes.append(
            "tokenizer only: no weight indicators (this path holds no embedding weights; pass a "
            "model directory or a GGUF file with weights)"
        )
    bar.close()
    return UndertrainedReport(str(path), result, ind, ver, timings_s=timings, notes=notes, top=top)


def summary_line(rep: UndertrainedReport) -> str:
    """One line for logs: counts per class and candidates found."""
    c = rep.scan.counts()
    parts = [f"{k}={v}" for k, v in c.items()]
    if rep.indicators is not None:
        parts.append(f"candidates={len(rep.indicators.candidates)}")
    if rep.verification is not None:
        parts.append(
            f"confirmed={int(np.sum(rep.verification.confirmed))}/{len(rep.verification.ids)}"
        )
    return " ".join(parts)
