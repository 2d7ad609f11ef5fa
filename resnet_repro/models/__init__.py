"""The paper's networks: CIFAR-10 6n+2 nets (Sec. 4.2) and ImageNet nets (Table 1), by name."""

from resnet_repro.models.blocks import (
    SHORTCUT_OPTIONS,
    BasicBlock,
    Bottleneck,
    Projection,
    ZeroPadShortcut,
    layer_response_bns,
)
from resnet_repro.models.cifar import CifarResNet
from resnet_repro.models.imagenet import ImageNetResNet, from_torchvision_state_dict
from resnet_repro.models.registry import (
    FAMILIES,
    ModelInfo,
    build_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "FAMILIES",
    "SHORTCUT_OPTIONS",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ImageNetResNet",
    "ModelInfo",
    "Projection",
    "ZeroPadShortcut",
    "build_model",
    "from_torchvision_state_dict",
    "layer_response_bns",
    "list_models",
    "model_info",
    "register_model",
]
