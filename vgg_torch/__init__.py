"""torchvision's VGG family and AlexNet, built from the shared config schema.

``vgg_torch.vgg16(*, weights=None, progress=True, **kwargs)``, the other
seven VGG builders and ``vgg_torch.alexnet`` have torchvision's signature (and accept its weights enums and
their names); their models' ``state_dict()`` equals torchvision's key for key.
:func:`build_vgg` builds any :class:`parity.core.config.VGGConfig`.
"""

from __future__ import annotations

from parity.core.config import ARCHS, VGGConfig
from vgg_torch.builders import (  # noqa: F401  (listed in __all__ through ARCHS)
    alexnet,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)
from vgg_torch.model import VGG, build_vgg
from vgg_torch.recipes import cifar10_vgg16, paper_alexnet

__all__ = ["VGG", "VGGConfig", "build_vgg", "cifar10_vgg16", "paper_alexnet", *ARCHS]
