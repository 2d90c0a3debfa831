"""The images full-integer int8 is calibrated on, through torchvision's ImageNet preprocessing.

``--quantize int8`` needs a representative set: each layer's activation range
is measured on it and fixed in the file. :func:`calibration_images` reads a
folder of the user's images (their domain is the best calibration);
:func:`default_calibration` is the built-in set: seven scikit-image pictures
that the export is *not* judged on (:data:`parity.photos.PHOTOS` are),
five crops of each (torchvision's ``FiveCrop``), 35 inputs in all.

Both return NCHW float32 in the preprocessing of
:func:`parity.photos.photo_batch` (resize to 256/224 of the size, center
crop, ImageNet mean and std). Imports torch, torchvision and PIL inside the
functions; the caller has imported torch first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from parity.cli import UsageError

__all__ = ["CALIBRATION_PICTURES", "IMAGE_SUFFIXES", "calibration_images", "check_calibration", "default_calibration"]

#: scikit-image pictures the built-in calibration set is cut from (none of them is judged).
CALIBRATION_PICTURES = ("retina", "colorwheel", "logo", "gravel", "brick", "grass", "motorcycle")
#: Files :func:`calibration_images` reads from a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


def check_calibration(calibration: str | os.PathLike[str] | None, quantize: str) -> Path | None:
    """Validates ``--calibration`` before anything loads.

    Raises:
        UsageError: If it is given without ``--quantize int8``, or is not a folder holding images.
    """
    if calibration is None:
        return None
    shown = f"--calibration {os.fspath(calibration)}"
    if quantize != "int8":
        raise UsageError(f"--calibration applies to --quantize int8 only. Received: --quantize {quantize} {shown}")
    folder = Path(calibration).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--calibration must name a folder of images. Received: {shown}")
    if not _image_files(folder):
        raise UsageError(
            f"--calibration holds no images ({', '.join(IMAGE_SUFFIXES)}): add some from your domain. Received: {shown}"
        )
    return folder


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _transform(size: int):
    from torchvision.transforms._presets import ImageClassification

    return ImageClassification(crop_size=size, resize_size=round(size * 256 / 224))


def _rgb_uint8(picture: np.ndarray) -> np.ndarray:
    """An ``HxWx3`` uint8 array from a grey, RGB or RGBA picture."""
    if picture.ndim == 2:
        picture = np.repeat(picture[:, :, None], 3, axis=2)
    return np.ascontiguousarray(picture[:, :, :3])


def calibration_images(folder: Path, size: int) -> np.ndarray:
    """Every image in ``folder`` (sorted by name), preprocessed: ``(n, 3, size, size)`` float32.

    Raises:
        UsageError: If an image cannot be read.
    """
    import torch

    from PIL import Image, UnidentifiedImageError

    transform = _transform(size)
    batch = []
    for path in _image_files(folder):
        try:
            with Image.open(path) as image:
                picture = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise UsageError(
                f"Cannot read calibration image {path.name} ({e}): remove or fix it. Received: --calibration {folder}"
            ) from None
        batch.append(transform(torch.from_numpy(picture.transpose(2, 0, 1).copy())))
    return torch.stack(batch).numpy()


def default_calibration(size: int) -> np.ndarray:
    """The built-in set: five crops of each of :data:`CALIBRATION_PICTURES`, ``(35, 3, size, size)`` float32.

    Each picture is resized so that its short side is ``256/224 * size`` and
    cut into torchvision's ``FiveCrop`` (corners and center) before the
    normalization, so the set holds 35 different views.
    """
    import torch
    from torchvision.transforms import v2

    from skimage import data as skimage_data

    resize = round(size * 256 / 224)
    crops = v2.Compose([v2.Resize(resize, antialias=True), v2.FiveCrop(size)])
    normalize = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    batch = []
    for name in CALIBRATION_PICTURES:
        picture = skimage_data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage_data, name)()
        image = torch.from_numpy(_rgb_uint8(picture).transpose(2, 0, 1).copy())
        batch.extend(normalize(crop) for crop in crops(image))
    return torch.stack(batch).numpy()
