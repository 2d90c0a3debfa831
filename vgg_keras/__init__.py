"""torchvision's VGG family in Keras 3, with converted torchvision weights.

``vgg_keras.VGG16(weights="converted")``, the other seven presets and
``vgg_keras.AlexNet`` take keras.applications' arguments; :func:`build_vgg` builds any
:class:`parity.core.config.VGGConfig`. Importing this package never imports torch.
"""

from __future__ import annotations

from parity.core.config import PRESETS, VGGConfig
from vgg_keras.fine_tuning import freeze_batch_norm
from vgg_keras.model import build_vgg, preset_builder
from vgg_keras.openvino_precision import float32_predict
from vgg_keras.preprocessing import (
    ImageClassificationPreprocessor,
    decode_predictions,
    preprocess_images,
    preprocess_input,
    preprocessor_for,
)
from vgg_keras.recipes import CIFAR10_VGG16, PAPER_ALEXNET

__all__ = [
    "AlexNet",
    "CIFAR10_VGG16",
    "PAPER_ALEXNET",
    "VGG11",
    "VGG11_BN",
    "VGG13",
    "VGG13_BN",
    "VGG16",
    "VGG16_BN",
    "VGG19",
    "VGG19_BN",
    "PRESETS",
    "VGGConfig",
    "build_vgg",
    "freeze_batch_norm",
    "ImageClassificationPreprocessor",
    "decode_predictions",
    "preprocess_images",
    "preprocess_input",
    "preprocessor_for",
]

float32_predict()  # OpenVINO's CPU plugin otherwise runs predict in bfloat16 on CPUs with bf16

VGG11 = preset_builder("vgg11")
VGG11_BN = preset_builder("vgg11_bn")
VGG13 = preset_builder("vgg13")
VGG13_BN = preset_builder("vgg13_bn")
VGG16 = preset_builder("vgg16")
VGG16_BN = preset_builder("vgg16_bn")
VGG19 = preset_builder("vgg19")
VGG19_BN = preset_builder("vgg19_bn")
AlexNet = preset_builder("alexnet")
