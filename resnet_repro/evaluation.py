"""The paper's ImageNet test protocols (Sec. 3.4), as data: which views of an image are scored, and how.

- center: shorter side 256, the centre 224x224 crop (Fig. 4's bold curves);
- 10crop: shorter side 256, the four corner and the centre 224x224 crops and their horizontal flips,
  softmax scores averaged (Tables 2 and 3: "the standard 10-crop testing [21]");
- multiscale: the fully-convolutional form, the whole image with its shorter side at each of 224,
  256, 384, 480 and 640 and its flip, class scores averaged over positions, then softmax scores
  averaged over scales and flips (Table 4: "average the scores at multiple scales").

Views come from torchvision's resize and crops on tensors; only the scoring is ours.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from resnet_repro.errors import UserError


@dataclass(frozen=True)
class Protocol:
    """How an image is tested: the shorter side(s) it is resized to, the crop, and the views scored."""

    name: str
    short_sides: tuple[int, ...]
    crop: int | None  # None: the whole resized image, scored in the fully-convolutional form
    views: str  # "center", "ten" (corners + centre, and flips) or "full" (the image and its flip)
    used_for: str = ""


PROTOCOLS = {
    "center": Protocol("center", (256,), 224, "center", "Fig. 4's validation curves"),
    "10crop": Protocol("10crop", (256,), 224, "ten", "Tables 2 and 3"),
    "multiscale": Protocol("multiscale", (224, 256, 384, 480, 640), None, "full", "Table 4"),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown test protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def views(image: torch.Tensor, protocol: Protocol) -> list[torch.Tensor]:
    """The views of one image [C, H, W] that `protocol` scores, each [C, h, w], in a fixed order."""
    out = []
    for side in protocol.short_sides:
        resized = TF.resize(image, side, antialias=True)  # shorter side to `side`, aspect kept
        if protocol.crop is not None and protocol.crop > min(resized.shape[-2:]):
            raise UserError(
                f"a {protocol.crop}x{protocol.crop} crop does not fit an image resized to "
                f"{resized.shape[-1]}x{resized.shape[-2]}; use a crop of at most {min(resized.shape[-2:])}"
            )
        if protocol.views == "center":
            out.append(TF.center_crop(resized, [protocol.crop, protocol.crop]))
        elif protocol.views == "ten":
            # torchvision's order: the five crops (tl, tr, bl, br, centre), then the same five of the flip.
            out += list(TF.ten_crop(resized, [protocol.crop, protocol.crop]))
        else:
            out += [resized, TF.horizontal_flip(resized)]
    return out


def fully_convolutional_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class scores at every position of the last feature map, [B, classes, h, w]: the final FC applied
    as a 1x1 convolution before the global average pooling (the paper's fully-convolutional form)."""
    features = {}
    handle = model.avgpool.register_forward_hook(lambda module, inputs, output: features.update(x=inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    fc = model.fc
    return F.conv2d(features["x"], fc.weight[:, :, None, None], fc.bias)


def score(model: nn.Module, image: torch.Tensor, protocol: Protocol, normalize: Callable = lambda x: x) -> torch.Tensor:
    """The protocol's class probabilities for one image [C, H, W]: softmax scores averaged over its views.

    A view's scores are the fully-convolutional scores averaged over positions; for a crop the size the
    net was trained on this equals the ordinary forward pass (a test checks it).
    """
    probabilities = []
    for view in views(image, protocol):
        x = normalize(view.float())[None]
        logits = fully_convolutional_scores(model, x).mean(dim=(2, 3))
        probabilities.append(logits.softmax(dim=1)[0])
    return torch.stack(probabilities).mean(dim=0)


def top_k_errors(probabilities: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Top-k error (%) of [N, classes] probabilities against [N] labels, for each k."""
    ranked = probabilities.topk(max(ks), dim=1).indices
    hits = ranked == labels[:, None]
    return {k: 100.0 * (1 - hits[:, :k].any(dim=1).float().mean().item()) for k in ks}
