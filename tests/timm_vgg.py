"""timm's VGG, rebuilt here from its documented structure: the reference for timm-layout checkpoints.

timm is not installed (it would bring huggingface_hub into the lock), so this
module writes out what ``timm/models/vgg.py`` builds: torchvision's
``features``; ``pre_logits`` (``ConvMlp``): ``fc1``, a convolution with a
kernel the size of torchvision's pooled map (7×7) and no padding, ReLU,
dropout, ``fc2``, a 1×1 convolution, ReLU; ``head`` (``ClassifierHead``):
global average pooling, flatten, ``fc``. Before ``fc1``, a map smaller than
the kernel is average-pooled up to it (``F.adaptive_avg_pool2d`` to
``max(kernel, size)`` per side). Its ``state_dict()`` keys are timm's:
``features.N.*``, ``pre_logits.fc1.*``, ``pre_logits.fc2.*``, ``head.fc.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import vgg_torch
from parity.core.config import VGGConfig


class ConvMlp(nn.Module):
    """timm's ``pre_logits``: the two hidden layers as convolutions."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        first, second = config.hidden
        self.kernel = config.head_grid
        self.fc1 = nn.Conv2d(config.out_channels, first, self.kernel, bias=True)
        self.act1 = nn.ReLU(True)
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Conv2d(first, second, 1, bias=True)
        self.act2 = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (h, w) = self.kernel, x.shape[-2:]
        if h < kh or w < kw:
            x = F.adaptive_avg_pool2d(x, (max(kh, h), max(kw, w)))
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


class ClassifierHead(nn.Module):
    """timm's ``head`` with ``pool_type="avg"``: global average pool, flatten, linear."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(config.hidden[-1], config.num_classes)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.global_pool(x)))


class TimmVGG(nn.Module):
    """timm's ``VGG`` for a config with two hidden layers and an adaptive pool."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.features = vgg_torch.build_vgg(config, init_weights=False).features
        self.pre_logits = ConvMlp(config)
        self.head = ClassifierHead(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_logits(self.features(x)))
