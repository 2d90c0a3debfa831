"""scikit-image's photos through torchvision's ImageNet preprocessing: the real images judgements use.

Exports are judged on them (:mod:`parity.export.check`), and ``python -m
parity.report --inputs photos`` compares on them instead of random noise.
Importing this module imports neither torch nor scikit-image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PHOTOS", "photo_batch", "photos_available"]

#: The four photos of tests/vgg_keras/test_preprocessing.py and two more of scikit-image's.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def photos_available() -> bool:
    """Whether scikit-image, which holds the photos, is installed."""
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


def photo_batch(size: tuple[int, int]) -> np.ndarray | None:
    """scikit-image's six photos (:data:`PHOTOS`) through torchvision's ImageNet preprocessing, NCHW.

    At 224 x 224 this is torchvision's ``IMAGENET1K_V1`` transform (resize 256,
    center crop 224); at other square sizes the same with the crop and the
    resize scaled alike. The caller has imported torch before any TensorFlow.

    Args:
        size: ``(height, width)`` of the batch.

    Returns:
        A float32 array ``(6, 3, height, width)``; ``None`` if scikit-image is
        missing or the size is not square.

    Examples:
        >>> photo_batch((224, 224)).shape  # doctest: +SKIP
        (6, 3, 224, 224)
    """
    h, w = size
    if h != w or not photos_available():
        return None
    import torch
    from torchvision.transforms._presets import ImageClassification

    from skimage import data as skimage_data

    transform = ImageClassification(crop_size=h, resize_size=round(h * 256 / 224))
    images = [
        transform(torch.from_numpy(np.ascontiguousarray(getattr(skimage_data, n)().transpose(2, 0, 1)))) for n in PHOTOS
    ]
    return torch.stack(images).numpy()
