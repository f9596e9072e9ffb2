"""The `ferrolm demo` section of DivPrune: selection speed and a tiny LLaVA prefill."""

from __future__ import annotations

import time
from typing import Any

import torch

from ferrolm import cuda as _cuda
from ferrolm._report import Section
from ferrolm.prune import DEFAULT_KEEP, apply_to_llava, divprune, keep_count
from ferrolm.testing.prune import tiny_llava, torch_divprune
from ferrolm.testing.timing import best_of

__all__ = ["demo_section"]


def _single_thread(fn: Any) -> Any:
    def run() -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)

    return run


def demo_section() -> Section:
    """DivPrune: keep 9.8% of 576 image tokens, ferrolm vs the paper's routine; tiny LLaVA."""
    s = Section(
        "DivPrune token pruning (576 x 1024 features, keep 9.8%)",
        ["path", "time (ms)", "vs baseline", "tokens", "note"],
    )
    n, d = 576, 1024
    k = keep_count(n, DEFAULT_KEEP)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    baseline = _single_thread(lambda: torch_divprune(x, k))
    t_torch = best_of(baseline)
    t_ours = best_of(lambda: divprune(x, k=k))
    same = sorted(baseline().tolist()) == divprune(x, k=k).indices.tolist()
    s.add("torch routine (1 thread)", t_torch * 1e3, 1.0, k, "cosine matrix + index_select loop")
    s.add(
        "ferrolm CPU",
        t_ours * 1e3,
        t_torch / t_ours,
        k,
        ("same tokens as torch" if same else "tokens differ from torch")
        + f"; {torch.get_num_threads()} threads",
    )
    if _cuda.is_available():
        xg = x.cuda().unsqueeze(0).repeat(8, 1, 1)

        def gpu() -> None:
            divprune(xg, k=k)
            torch.cuda.synchronize()

        s.add("ferrolm GPU (8 images)", best_of(gpu) * 1e3, None, k, "per batch of 8")
    else:
        s.add("ferrolm GPU", None, None, None, "skipped: no CUDA GPU")
    try:
        model = tiny_llava(
            image_size=96,
            vision_hidden=64,
            vision_layers=1,
            text_hidden=512,
            text_intermediate=1536,
            text_layers=4,
            text_heads=8,
            kv_heads=8,
            vocab=1000,
            image_token=999,
            positions=2048,
        )
    except ImportError:
        s.notes.append("LLaVA prefill skipped: transformers is not installed")
        return s
    ids = torch.tensor([[1, 2, 3] + [999] * 576 + [4, 5, 6, 7]])
    pix = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))

    @torch.no_grad()
    def prefill() -> int:
        return int(model(input_ids=ids, pixel_values=pix).logits.shape[1])

    start = time.perf_counter()
    full_len = prefill()
    t_full = best_of(prefill)
    with apply_to_llava(model, keep=DEFAULT_KEEP):
        pruned_len = prefill()
        t_pruned = best_of(prefill)
    s.add("tiny LLaVA prefill", t_full * 1e3, 1.0, full_len, "random weights, 4 x 512 decoder")
    s.add(
        "  with apply_to_llava",
        t_pruned * 1e3,
        t_full / t_pruned,
        pruned_len,
        "DivPrune keeps 56 of 576 image tokens",
    )
    s.notes.append(
        f"LLaVA part took {time.perf_counter() - start:.1f} s; best of 3 after a warm-up; "
        "features are i.i.d. Gaussian."
    )
    return s
