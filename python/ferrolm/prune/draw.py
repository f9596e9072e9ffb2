"""`draw`: a picture of the patches DivPrune kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ferrolm._optional import is_tensor, require
from ferrolm.prune.select import Selection
from ferrolm.prune.vision import as_rgb

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["draw", "patch_box"]

_OUTLINE = (255, 196, 0)


def patch_box(cell: int, grid: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box ``(left, top, right, bottom)`` (right/bottom exclusive) of patch ``cell``
    (row-major) of a ``grid = (rows, cols)`` laid over an image of ``size = (width, height)``.

    Cell edges are ``floor(i * width / cols)``, so the cells tile the image exactly.

    Example:
        >>> patch_box(5, (2, 4), (100, 50))
        (25, 25, 50, 50)
    """
    rows, cols = grid
    width, height = size
    r, c = divmod(cell, cols)
    return (
        c * width // cols,
        r * height // rows,
        (c + 1) * width // cols,
        (r + 1) * height // rows,
    )


def _indices(selection: Any, cells: int) -> np.ndarray:
    if isinstance(selection, Selection):
        selection = selection.indices
    if is_tensor(selection):
        selection = selection.detach().cpu().numpy()
    arr = np.asarray(selection)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(
            f"`selection` must be a Selection or a 1-D sequence of integer indices, got "
            f"{arr.dtype} with shape {arr.shape}"
        )
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= cells)]
    if bad.size:
        raise ValueError(
            f"`selection` indices must be patch indices in 0..{cells - 1}, got {int(bad[0])}"
        )
    return arr


def _grid(grid: Any, width: int, height: int) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        grid = (int(grid), int(grid))
    if (
        not isinstance(grid, tuple)
        or len(grid) != 2
        or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) for g in grid)
        or min(grid) < 1
    ):
        raise ValueError(f"`grid` must be a positive int or a (rows, cols) pair, got {grid!r}")
    rows, cols = int(grid[0]), int(grid[1])
    if rows > height or cols > width:
        raise ValueError(
            f"`image` must have at least one pixel per patch of the {rows} x {cols} grid, "
            f"got {width} x {height} pixels"
        )
    return rows, cols


def draw(
    image: Union[Image.Image, np.ndarray],
    selection: Any,
    grid: Union[int, tuple[int, int]] = 16,
    *,
    dim: float = 0.3,
    outline: bool = True,
) -> Image.Image:
    """The photo with the kept patches highlighted: the others darkened, the kept ones outlined.

    The grid is laid over the whole photo (cell edges at ``floor(i * width / cols)``, see
    :func:`patch_box`), which matches towers that resize the whole photo to their input, like
    those of :mod:`ferrolm.prune.vision`. Inside a kept patch every pixel but its one-pixel
    outline is the photo's own; every pixel of a patch that was not kept is
    ``round(dim * pixel)``.

    Args:
        image: A PIL image or a ``uint8`` array ``[H, W]``/``[H, W, 3]``; never modified.
        selection: The kept patches: a :class:`Selection` from :func:`divprune` on the
            ``rows * cols`` patch features, or any 1-D integer sequence of row-major patch
            indices (tensor, array, list).
        grid: ``(rows, cols)`` of the patch grid, or one int for a square grid.
        dim: Brightness of the patches that were not kept, in [0, 1).
        outline: Draw a one-pixel amber outline around each kept patch.

    Returns:
        A new RGB PIL image of the photo's size.

    Raises:
        ImportError: Pillow is missing (``pip install 'ferrolm[vision]'``).
        TypeError: ``image`` or ``selection`` has the wrong type.
        ValueError: The photo has fewer pixels than the grid has cells along a side (or is
            smaller than 16 x 16), ``grid`` is not positive, an index is outside the grid, or
            ``dim`` is outside [0, 1).

    Example:
        >>> import numpy as np
        >>> photo = np.full((64, 64, 3), 200, np.uint8)
        >>> out = draw(photo, [0, 5], grid=4)
        >>> out.size, out.getpixel((8, 8)), out.getpixel((40, 40))
        ((64, 64), (200, 200, 200), (60, 60, 60))
    """
    pil = require("PIL.Image", "`prune.draw`")
    draw_mod = require("PIL.ImageDraw", "`prune.draw`")
    if isinstance(dim, bool) or not isinstance(dim, (int, float)) or not 0.0 <= dim < 1.0:
        raise ValueError(f"`dim` must be a number in [0, 1), got {dim!r}")
    rgb = as_rgb(image)
    rows, cols = _grid(grid, rgb.width, rgb.height)
    kept = _indices(selection, rows * cols)
    pixels = np.asarray(rgb, dtype=np.uint8)
    mask = np.zeros(pixels.shape[:2], dtype=bool)
    boxes = [patch_box(int(cell), (rows, cols), rgb.size) for cell in np.unique(kept)]
    for left, top, right, bottom in boxes:
        mask[top:bottom, left:right] = True
    dark = np.rint(pixels.astype(np.float32) * dim).astype(np.uint8)
    out: Image.Image = pil.fromarray(np.where(mask[..., None], pixels, dark))
    if outline:
        pen = draw_mod.Draw(out)
        for left, top, right, bottom in boxes:
            pen.rectangle((left, top, right - 1, bottom - 1), outline=_OUTLINE, width=1)
    return out
