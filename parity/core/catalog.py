"""torchvision's published VGG and AlexNet weights, described without importing torchvision.

Everything about one set of weights lives in one :class:`WeightsRecord`: where
torchvision downloads it from, the hash its file name pins, the preprocessing it
was trained with, its parameter count and whether its classifier is usable. The
Keras side needs these facts (the converted-weights cache name, the preprocessing
pipeline) without PyTorch installed; ``tests/core/test_config.py`` checks every record
against torchvision's own ``Weights`` enums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from parity.core.config import ARCHS

__all__ = [
    "DEFAULT_WEIGHTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WEIGHTS",
    "Transforms",
    "WeightsRecord",
    "cache_dir",
    "get_weights_record",
]

#: torchvision's ImageNet channel means (RGB, for pixels scaled to [0, 1]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: torchvision's ImageNet channel standard deviations (RGB, pixels in [0, 1]).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Transforms:
    """torchvision's ``ImageClassification`` preset for a set of weights.

    Attributes:
        resize_size: The shorter image side is resized to this (bilinear, antialiased).
        crop_size: Side of the center crop taken after resizing.
        mean: Per-channel mean (RGB) subtracted from images scaled to [0, 1].
        std: Per-channel standard deviation (RGB) divided out after that.
    """

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class WeightsRecord:
    """One set of torchvision weights for one architecture.

    Attributes:
        arch: Architecture name, e.g. ``"vgg16"`` or ``"alexnet"``.
        name: torchvision's enum member name, e.g. ``"IMAGENET1K_V1"``.
        url: Download address (torchvision's).
        num_params: Trainable parameters, from torchvision's ``meta``.
        transforms: The preprocessing these weights expect.
        has_classifier: ``False`` where the checkpoint's classifier is NaN by
            design (vgg16 ``IMAGENET1K_FEATURES``): only ``include_top=False``
            models can use it, and the converter drops the classifier.
    """

    arch: str
    name: str
    url: str
    num_params: int
    transforms: Transforms = Transforms()
    has_classifier: bool = True

    @property
    def filename(self) -> str:
        """File name of the checkpoint in torch's hub cache (the last URL part)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """The sha256 prefix torch.hub checks on download (from the file name)."""
        return self.filename.rsplit("-", 1)[-1].split(".", 1)[0]

    @property
    def keras_filename(self) -> str:
        """File name of the converted weights in Keras' cache."""
        return f"vgg_parity_{self.arch}_{self.name.lower()}.weights.h5"


_BASE = "https://download.pytorch.org/models/"
_RECORDS = (
    WeightsRecord("vgg11", "IMAGENET1K_V1", _BASE + "vgg11-8a719046.pth", 132863336),
    WeightsRecord("vgg11_bn", "IMAGENET1K_V1", _BASE + "vgg11_bn-6002323d.pth", 132868840),
    WeightsRecord("vgg13", "IMAGENET1K_V1", _BASE + "vgg13-19584684.pth", 133047848),
    WeightsRecord("vgg13_bn", "IMAGENET1K_V1", _BASE + "vgg13_bn-abd245e5.pth", 133053736),
    WeightsRecord("vgg16", "IMAGENET1K_V1", _BASE + "vgg16-397923af.pth", 138357544),
    WeightsRecord(
        "vgg16",
        "IMAGENET1K_FEATURES",
        _BASE + "vgg16_features-amdegroot-88682ab5.pth",
        138357544,
        Transforms(mean=(0.48235, 0.45882, 0.40784), std=(1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)),
        has_classifier=False,
    ),
    WeightsRecord("vgg16_bn", "IMAGENET1K_V1", _BASE + "vgg16_bn-6c64b313.pth", 138365992),
    WeightsRecord("vgg19", "IMAGENET1K_V1", _BASE + "vgg19-dcbb9e9d.pth", 143667240),
    WeightsRecord("vgg19_bn", "IMAGENET1K_V1", _BASE + "vgg19_bn-c79401a0.pth", 143678248),
    WeightsRecord("alexnet", "IMAGENET1K_V1", _BASE + "alexnet-owt-7be5be79.pth", 61100840),
)

#: ``{arch: {weights name: record}}``; the first name per arch is its default.
WEIGHTS: dict[str, dict[str, WeightsRecord]] = {arch: {} for arch in ARCHS}
for _r in _RECORDS:
    WEIGHTS[_r.arch][_r.name] = _r

DEFAULT_WEIGHTS = "IMAGENET1K_V1"


def get_weights_record(arch: str, name: str = DEFAULT_WEIGHTS) -> WeightsRecord:
    """Looks up one set of published weights.

    Args:
        arch: Architecture name, e.g. ``"vgg16"`` or ``"alexnet"``.
        name: torchvision's weights name, e.g. ``"IMAGENET1K_V1"``.

    Returns:
        The record.

    Raises:
        ValueError: If the architecture or weights name is unknown.
    """
    if arch not in WEIGHTS:
        raise ValueError(f"`arch` must be one of {', '.join(WEIGHTS)}. Received: arch={arch!r}")
    try:
        return WEIGHTS[arch][name]
    except KeyError:
        raise ValueError(
            f"{arch} has published weights {', '.join(WEIGHTS[arch])}. Received: weights={name!r}"
        ) from None


def cache_dir() -> Path:
    """Keras' model cache, where converted torchvision weights live.

    Returns:
        ``$KERAS_HOME/models``, default ``~/.keras/models`` (as keras.utils.get_file).
    """
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models"
