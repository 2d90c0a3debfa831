"""torchvision's VGG family, built from the shared config schema.

``vgg_torch.vgg16(num_classes=..., dropout=..., init_weights=...)`` and the other
seven presets return models whose ``state_dict()`` equals torchvision's key for
key; :func:`build_vgg` builds any :class:`parity.config.VGGConfig`.
"""

from __future__ import annotations

from functools import partial

from parity.config import PRESETS, VGGConfig
from vgg_torch.model import VGG, build_vgg

__all__ = ["VGG", "VGGConfig", "build_vgg", *PRESETS]

vgg11 = partial(build_vgg, PRESETS["vgg11"])
vgg11_bn = partial(build_vgg, PRESETS["vgg11_bn"])
vgg13 = partial(build_vgg, PRESETS["vgg13"])
vgg13_bn = partial(build_vgg, PRESETS["vgg13_bn"])
vgg16 = partial(build_vgg, PRESETS["vgg16"])
vgg16_bn = partial(build_vgg, PRESETS["vgg16_bn"])
vgg19 = partial(build_vgg, PRESETS["vgg19"])
vgg19_bn = partial(build_vgg, PRESETS["vgg19_bn"])
