"""PyTorch VGG built from a :class:`parity.core.config.VGGConfig`.

The module tree mirrors torchvision's ``VGG`` exactly (``features``, ``avgpool``,
``classifier``, with the same ``nn.Sequential`` indices), so ``state_dict()``
keys and shapes equal torchvision's and its checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from parity.core.config import VGGConfig, layer_plan

__all__ = ["VGG", "build_vgg"]


class VGG(nn.Module):
    """A VGG (or AlexNet) network laid out as torchvision lays it out.

    Args:
        config: The network.
        init_weights: Whether to apply torchvision's VGG initialization
            (Kaiming normal, fan-out, for convs; N(0, 0.01) for linear layers;
            BN 1/0; zero biases) to a config whose ``init`` is ``"vgg"``.
            ``False``, or ``init="torch_default"`` (AlexNet), keeps PyTorch's
            defaults; ``False`` is also what loading needs.
    """

    def __init__(self, config: VGGConfig, init_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        features: list[nn.Module] = []
        classifier: list[nn.Module] = []
        for spec in layer_plan(config):
            target = features if spec.torch_name.startswith("features.") else classifier
            if spec.kind == "conv":
                target.append(
                    nn.Conv2d(
                        spec.in_features,
                        spec.out_features,
                        kernel_size=spec.kernel,
                        stride=spec.stride,
                        padding=spec.padding,
                    )
                )
            elif spec.kind == "bn":
                target.append(nn.BatchNorm2d(spec.out_features))
            elif spec.kind == "relu":
                target.append(nn.ReLU(inplace=True))
            elif spec.kind == "pool":
                target.append(nn.MaxPool2d(kernel_size=spec.kernel, stride=spec.stride))
            elif spec.kind == "dense":
                target.append(nn.Linear(spec.in_features, spec.out_features))
            elif spec.kind == "dropout":
                target.append(nn.Dropout(p=config.dropout))
        self.features = nn.Sequential(*features)
        self.avgpool: nn.Module = (
            nn.AdaptiveAvgPool2d(config.pool_size) if config.pool_size is not None else nn.Identity()
        )
        self.classifier = nn.Sequential(*classifier)
        if init_weights and config.init == "vgg":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Applies torchvision's VGG initialization to every layer."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Computes logits from an ``(N, C, H, W)`` batch."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def build_vgg(
    config: VGGConfig,
    *,
    num_classes: int | None = None,
    dropout: float | None = None,
    init_weights: bool = True,
) -> VGG:
    """Builds a VGG from a config.

    Args:
        config: The network.
        num_classes: Overrides ``config.num_classes``.
        dropout: Overrides ``config.dropout``.
        init_weights: Whether to apply torchvision's initialization.

    Returns:
        The model, in training mode as ``nn.Module``s start.

    Raises:
        ValueError: If an override is invalid.

    Examples:
        >>> from parity.core.config import PRESETS
        >>> model = build_vgg(PRESETS["vgg11"], num_classes=10).eval()
        >>> model(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    changes: dict[str, object] = {}
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if dropout is not None:
        changes["dropout"] = dropout
    return VGG(config.replace(**changes) if changes else config, init_weights=init_weights)
