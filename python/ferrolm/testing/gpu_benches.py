"""The measurements of ``scripts/gpu-check.sh``: DivPrune and the int8 quantizers against their
torch routines on one device, the verification cost curve t(n) of random Llama models, and the
Sequoia plan that curve gives.

Each function returns plain JSON-ready dicts; :mod:`ferrolm.testing.gpu_check` runs them as
steps, records failures and writes the report. Sizes come from :class:`Sizes`: :data:`GPU` for a
real run (a ~1.2B-parameter target, a ~0.25B draft), :data:`DRY_RUN` for the CPU rehearsal.

Example:
    >>> DRY_RUN.curve_sizes[0], GPU.curve_sizes[-1]
    (1, 256)
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ferrolm import comm, prune
from ferrolm.testing.comm import torch_dequantize_accumulate, torch_quantize
from ferrolm.testing.prune import torch_divprune

__all__ = [
    "DRY_RUN",
    "GPU",
    "Sizes",
    "divprune_rows",
    "load_acceptance",
    "plan_from_curves",
    "plans",
    "quantize_rows",
    "verify_curve",
]

# Llama-3.2-1B's shapes (1.24B parameters with the tied 128k-token embedding) and a draft of a
# quarter of that: the Qwen2.5-Coder 1.5B/0.5B pair's size ratio, with a shared vocabulary.
_TARGET_1B = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": True,
}
_DRAFT_025B = {
    "vocab_size": 128256,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "tie_word_embeddings": True,
}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run.

    Attributes:
        divprune: ``(images, tokens, features)`` cases; ``divprune_keep`` of the tokens is kept.
        quant_numel: float32 element counts quantized per case.
        target, draft: ``LlamaConfig`` keyword arguments of the random models.
        dtype: the models' dtype.
        context: cached tokens before the measured tree.
        curve_sizes: tree sizes of the target's t(n).
        draft_sizes: tree-level widths of the draft's t(n).
        repeats: timed runs per measurement (median reported, after one warm-up).
        max_depth: deepest tree the planner considers.
    """

    divprune: tuple[tuple[int, int, int], ...]
    divprune_keep: float
    quant_numel: tuple[int, ...]
    target: dict[str, Any]
    draft: dict[str, Any]
    dtype: torch.dtype
    context: int
    curve_sizes: tuple[int, ...]
    draft_sizes: tuple[int, ...]
    repeats: int
    max_depth: int


GPU = Sizes(
    divprune=((1, 576, 1024), (8, 2880, 4096)),
    divprune_keep=0.1,
    quant_numel=(1 << 20, 1 << 26),
    target=_TARGET_1B,
    draft=_DRAFT_025B,
    dtype=torch.bfloat16,
    context=256,
    curve_sizes=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    draft_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    repeats=7,
    max_depth=24,
)

# The target is large enough that a 64-token tree costs several times one token on a CPU (the
# curve's shape shows through the noise of a shared machine), small enough for seconds in all.
DRY_RUN = Sizes(
    divprune=((2, 96, 48),),
    divprune_keep=0.1,
    quant_numel=(1 << 14,),
    target={
        "vocab_size": 4096,
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
    draft={
        "vocab_size": 4096,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "tie_word_embeddings": True,
    },
    dtype=torch.float32,
    context=32,
    curve_sizes=(1, 4, 16, 64),
    draft_sizes=(1, 4, 16),
    repeats=7,
    max_depth=8,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _times(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after one warm-up, each ended by a device sync."""
    fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - start)
    return out


def _row(bench: str, case: str, impl: str, times: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "bench": bench,
        "case": case,
        "impl": impl,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": len(times),
        **extra,
    }


def _pair(rows: list[dict[str, Any]]) -> None:
    """Adds ``speedup_vs_torch`` (torch median / ferrolm median) to the ferrolm row of a pair."""
    theirs, ours = rows[-2], rows[-1]
    ours["torch_median_s"] = theirs["median_s"]
    ours["speedup_vs_torch"] = theirs["median_s"] / ours["median_s"]


def _torch_divprune_all(x: torch.Tensor, k: int) -> list[torch.Tensor]:
    return [torch_divprune(x[b], k) for b in range(x.shape[0])]


def divprune_rows(
    sizes: Sizes, device: torch.device, rows: Optional[list[dict[str, Any]]] = None
) -> list[dict[str, Any]]:
    """DivPrune on ``device``: the paper's torch routine, one image at a time, then ferrolm on
    the whole batch; the ferrolm row records whether both kept the same tokens per image and
    the two objectives (computed on the CPU in float32). Rows are appended to ``rows`` as they
    are measured (a run stopped half-way keeps them) and returned."""
    rows = [] if rows is None else rows
    for batch, n, d in sizes.divprune:
        gen = torch.Generator().manual_seed(n + d)
        x = torch.randn(batch, n, d, generator=gen).to(device)
        k = prune.keep_count(n, sizes.divprune_keep)
        case = f"{batch}x{n}x{d}-keep{k}"
        run_torch = partial(_torch_divprune_all, x, k)
        run_ferrolm = partial(prune.divprune, x, k=k)
        rows.append(_row("divprune", case, "torch", _times(run_torch, device, sizes.repeats)))
        rows.append(_row("divprune", case, "ferrolm", _times(run_ferrolm, device, sizes.repeats)))
        _pair(rows)
        theirs = [t.cpu() for t in run_torch()]
        picked = run_ferrolm().indices.cpu()
        x_cpu = x.float().cpu()
        same = [set(picked[b].tolist()) == set(theirs[b].tolist()) for b in range(batch)]
        rows[-1]["same_tokens_as_torch"] = f"{sum(same)}/{batch}"
        rows[-1]["objective"] = [prune.objective(x_cpu[b], picked[b]) for b in range(batch)]
        rows[-1]["objective_torch"] = [prune.objective(x_cpu[b], theirs[b]) for b in range(batch)]
    return rows


def quantize_rows(
    sizes: Sizes, device: torch.device, rows: Optional[list[dict[str, Any]]] = None
) -> list[dict[str, Any]]:
    """Every int8 scheme on ``device``: encode (torch ops vs ``comm.quantize``) and decode into
    an accumulator (torch ops vs ``comm.dequantize_accumulate``); each ferrolm encode row
    records the fraction of codes equal to torch's and its decode error (largest, and relative
    L2). Rows are appended to ``rows`` as they are measured and returned."""
    rows = [] if rows is None else rows
    for numel in sizes.quant_numel:
        x = torch.randn(numel, generator=torch.Generator().manual_seed(numel)).to(device)
        for scheme in comm.SCHEMES:
            case = f"{scheme}-{numel}"
            codes, params = torch_quantize(x, scheme)
            q = comm.quantize(x, scheme)
            encode: dict[str, Callable[[], object]] = {
                "torch": partial(torch_quantize, x, scheme),
                "ferrolm": partial(comm.quantize, x, scheme),
            }
            for impl, fn in encode.items():
                times = _times(fn, device, sizes.repeats)
                rows.append(_row("quantize", case, impl, times, numel=numel))
            _pair(rows)
            rows[-1]["codes_equal_torch"] = float((q.payload == codes).double().mean())
            decoded = comm.dequantize(q)
            rows[-1]["max_abs_decode_error"] = float((decoded - x).abs().max())
            rows[-1]["rel_l2_decode_error"] = float((decoded - x).norm() / x.norm())
            acc = torch.zeros_like(x)
            decode: dict[str, Callable[[], object]] = {
                "torch": partial(torch_dequantize_accumulate, codes, params, scheme, acc),
                "ferrolm": partial(comm.dequantize_accumulate, q, acc),
            }
            for impl, fn in decode.items():
                times = _times(fn, device, sizes.repeats)
                rows.append(_row("dequantize_accumulate", case, impl, times, numel=numel))
            _pair(rows)
    return rows


def random_llama(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    """A random ``LlamaForCausalLM`` built directly on ``device`` in ``dtype`` (sdpa)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    # PretrainedConfig takes the attention backend as an extra keyword.
    backend: dict[str, Any] = {"attn_implementation": "sdpa"}
    cfg = LlamaConfig(max_position_embeddings=4096, **config, **backend)
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        # Created where it runs, in its dtype: no float32 copy on the host first.
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model: Any = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    if next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    model.eval()
    return model


def verify_curve(
    config: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    sizes: Sequence[int],
    *,
    context: int,
    repeats: int,
) -> dict[str, Any]:
    """t(n) of a random Llama from ``ferrolm.speculative.profile`` (one tree-verify forward
    with a 4D tree mask over ``n`` tokens after ``context`` cached ones, median of
    ``repeats``).

    ``profile`` times the forward together with the copy of its ``n x vocab`` float32 logits
    to the host; the generator's verification keeps them on the device, so that copy is also
    timed alone (``logits_to_host_s``, zero on a CPU).
    """
    from ferrolm.speculative import profile

    start = time.perf_counter()
    model = random_llama(config, device, dtype)
    _sync(device)
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    try:
        lat = profile(model, list(sizes), context=context, repeats=repeats)
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    to_host = []
    for n in lat.sizes:
        logits = torch.empty(1, int(n), config["vocab_size"], device=device)
        to_host.append(statistics.median(_times(logits.cpu, device, repeats)))
    return {
        "config": dict(config),
        "parameters": int(params),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "build_s": build_s,
        "context": int(lat.context),
        "repeats": repeats,
        "sizes": [int(s) for s in lat.sizes],
        "latency_s": [float(t) for t in lat.latency_s],
        "logits_to_host_s": to_host,
    }


def _vector(values: Any, where: str) -> list[float]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: expected a non-empty list of numbers, got {values!r:.80}")
    out = [float(v) for v in values]
    if not all(math.isfinite(v) and v >= 0 for v in out) or sum(out) > 1 + 1e-9:
        raise ValueError(f"{where}: expected probabilities >= 0 summing to at most 1")
    return out


def load_acceptance(path: Path) -> dict[str, Any]:
    """The acceptance vector ``p`` (``p[k-1]``: the k-th ranked draft candidate is accepted).

    ``path`` is a JSON file holding a list, or an object whose ``"acceptance"`` entry is that
    list (its other entries are kept as ``meta``), or Sequoia's whitespace-separated text
    format (entry 0 unused). When ``path`` does not exist the Sequoia demo vector shipped with
    ferrolm is used and the result says so (``kind``: ``"file"`` or ``"sequoia-demo"``).
    """
    from ferrolm.speculative import load_acceptance_vector

    if not path.is_file():
        shipped = resources.files("ferrolm.speculative") / "sequoia_acceptance_vector.txt"
        with resources.as_file(shipped) as demo:
            p = [float(v) for v in load_acceptance_vector(demo)]
        return {
            "kind": "sequoia-demo",
            "path": "ferrolm/speculative/sequoia_acceptance_vector.txt",
            "reason": f"{path} not found",
            "acceptance": p,
        }
    if path.suffix != ".json":
        p = [float(v) for v in load_acceptance_vector(path)]
        return {"kind": "file", "path": str(path), "acceptance": p}
    data = json.loads(path.read_text())
    meta: dict[str, Any] = {}
    where = str(path)
    if isinstance(data, dict):
        meta = {k: v for k, v in data.items() if k != "acceptance"}
        data = data.get("acceptance")
        where += ' (an object: its "acceptance" entry)'
    p = _vector(data, where)
    return {"kind": "file", "path": str(path), "acceptance": p, "meta": meta}


def _interp(sizes: Sequence[int], times: Sequence[float], n: int) -> float:
    return float(np.interp(n, np.asarray(sizes, dtype=np.float64), np.asarray(times)))


def plan_from_curves(
    acceptance: dict[str, Any], target: dict[str, Any], draft: dict[str, Any], max_depth: int
) -> dict[str, Any]:
    """Sequoia's plan from the target's t(n), the draft's t(w) and ``acceptance``.

    The measured cost model of :func:`ferrolm.speculative.plan`: an iteration of tree ``(n, d)``
    costs the target's forward over ``n`` tokens plus one draft forward per level, each priced at
    the width that level of that tree really has (interpolated in the draft's t(w)), so every
    candidate tree is priced with its own draft cost.
    """
    from ferrolm.speculative import draft_level_widths, plan, sequoia_dp

    sizes, t_verify = target["sizes"], target["latency_s"]
    table = sequoia_dp(acceptance["acceptance"], max_nodes=max(sizes), max_depth=max_depth)
    t_ar = _interp(sizes, t_verify, 1)
    p = plan(
        table,
        sizes,
        t_verify,
        draft["latency_s"],
        t_autoregressive_s=t_ar,
        draft_widths=draft["sizes"],
    )
    levels = [int(w) for w in draft_level_widths(table, p.n, p.d)] if p.d > 0 else []
    tree = table.tree(p.n, p.d)
    return {
        "acceptance_kind": acceptance["kind"],
        "max_nodes": int(table.max_nodes),
        "max_depth": int(table.max_depth),
        "t_autoregressive_s": t_ar,
        "level_widths": levels,
        "t_draft_levels_s": [_interp(draft["sizes"], draft["latency_s"], w) for w in levels],
        "draft_width": max(levels, default=0),
        "t_verify_s": _interp(sizes, t_verify, p.n),
        "n": int(p.n),
        "d": int(p.d),
        "tokens_per_step": float(p.tokens_per_step),
        "s_per_token": float(p.s_per_token),
        "speedup": float(p.speedup),
        "tree_parents": [int(v) for v in tree.parents],
    }


def plans(
    acceptance: dict[str, Any], target: dict[str, Any], draft: dict[str, Any], max_depth: int
) -> dict[str, Any]:
    """:func:`plan_from_curves` on the curves as ``profile`` measured them, plus
    ``logits_on_device``: the plan when both models' times leave out the copy of their ``n x
    vocab`` logits to the host, as the generator runs them (verification and plain decoding
    keep the target's logits on the device; the drafters copy only each node's top-k). The
    draft shares the target's vocabulary, so its copy costs what the target's does at the same
    row count (interpolated in the target's ``logits_to_host_s``)."""
    out = plan_from_curves(acceptance, target, draft, max_depth)
    host = target["logits_to_host_s"]
    kept = [max(t - h, 1e-9) for t, h in zip(target["latency_s"], host)]
    kept_draft = [
        max(t - _interp(target["sizes"], host, w), 1e-9)
        for w, t in zip(draft["sizes"], draft["latency_s"])
    ]
    alt = plan_from_curves(
        acceptance,
        {**target, "latency_s": kept},
        {**draft, "latency_s": kept_draft},
        max_depth,
    )
    keys = ("n", "d", "tokens_per_step", "s_per_token", "speedup", "t_autoregressive_s")
    out["logits_on_device"] = {k: alt[k] for k in keys}
    return out
