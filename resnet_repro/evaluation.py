"""The paper's ImageNet test protocols (Sec. 3.4), as data: which views of an image are scored, and how.

- center: shorter side 256, the centre 224x224 crop (Fig. 4's bold curves);
- 10crop: shorter side 256, the four corner and the centre 224x224 crops and their horizontal flips,
  softmax scores averaged (Tables 2 and 3: "the standard 10-crop testing [21]");
- multiscale: the fully-convolutional form, the whole image with its shorter side at each of 224,
  256, 384, 480 and 640 and its flip, class scores averaged over positions, then softmax scores
  averaged over scales and flips (Table 4: "average the scores at multiple scales").

Views come from torchvision's resize and crops on tensors; only the scoring is ours. Below them: a batched
engine that scores a whole val split. Loading the weights to test and recording the result: testing.py.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from resnet_repro.errors import UserError

# data.imagenet, spec, module and rundir import this module (through the data registry): they are imported
# where they are used, below.
if TYPE_CHECKING:
    from resnet_repro.data.imagenet import SplitFiles

# The paper's training crop: every protocol's geometry is given for nets trained on 224x224 inputs.
TRAIN_CROP = 224


@dataclass(frozen=True)
class Protocol:
    """How an image is tested: the shorter side(s) it is resized to, the crop, and the views scored."""

    name: str
    short_sides: tuple[int, ...]
    crop: int | None  # None: the whole resized image, scored in the fully-convolutional form
    views: str  # "center", "ten" (corners + centre, and flips) or "full" (the image and its flip)
    used_for: str = ""

    def scaled(self, crop: int) -> "Protocol":
        """The protocol for a net trained on crop x crop inputs: shorter sides and crop scaled by crop / 224
        (rounded; as data.imagenet.CenterCropBatches scales `center`); itself at 224."""
        if crop == TRAIN_CROP:
            return self
        if crop <= 0:
            raise UserError(f"a training crop must be positive, got {crop}")
        return replace(
            self,
            short_sides=tuple(round(side * crop / TRAIN_CROP) for side in self.short_sides),
            crop=None if self.crop is None else crop,
        )


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
            # AlexNet's [21] ten crops: the four corners and the centre of the central side x side square (AlexNet's
            # 256x256 image), and their mirror images. (fb.resnet.torch takes the corners of the whole resized
            # rectangle instead; the paper cites [21].) torchvision's order: tl, tr, bl, br, centre, then flipped.
            square = TF.center_crop(resized, [side, side])
            out += list(TF.ten_crop(square, [protocol.crop, protocol.crop]))
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
    """Top-k error (%) of [N, classes] probabilities against [N] labels, for each k (k above the class count:
    all classes, as the training curves' top-5 of a few-class subset)."""
    ranked = probabilities.topk(min(max(ks), probabilities.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    return {k: 100.0 * (1 - hits[:, :k].any(dim=1).float().mean().item()) for k in ks}


# --- a whole split, batched -----------------------------------------------------------------------------


class ProtocolViews(Dataset):
    """Map-style: item i is image `index[i]`'s views under `protocol`, decoded and cut as uint8 (in a
    DataLoader worker): {"x": [views of one size, stacked], "y": label}. One tensor [V, 3, crop, crop] for
    center and 10crop; for multiscale one [2, 3, h, w] per scale (the image and its flip)."""

    def __init__(self, files: "SplitFiles", protocol: Protocol, index: torch.Tensor | None = None):
        self.files, self.protocol = files, protocol
        self.index = torch.arange(len(files)) if index is None else index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        from resnet_repro.data.imagenet import decode

        k = int(self.index[i])
        try:
            cut = views(decode(self.files.path(k)), self.protocol)
        except UserError as exc:  # raised in the main process: from a worker it would be a wrapped traceback
            return {"error": exc}
        groups = [[cut[0]]]
        for view in cut[1:]:
            if view.shape == groups[-1][0].shape:
                groups[-1].append(view)
            else:
                groups.append([view])
        return {"x": [torch.stack(group) for group in groups], "y": self.files.labels[k]}


def _collate(items: list[dict]) -> dict:
    """Images whose views share their sizes into one batch, {"x": [[B, V, 3, h, w], ...], "y": [B]}; or an error."""
    for item in items:
        if "error" in item:
            return item
    groups = zip(*(item["x"] for item in items), strict=True)
    return {"x": [torch.stack(group) for group in groups], "y": torch.stack([item["y"] for item in items])}


def score_split(
    model: nn.Module,
    files: "SplitFiles",
    protocol: Protocol,
    normalize: Callable,
    *,
    index: torch.Tensor | None = None,
    batch_size: int = 25,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities [N, classes] (float32, CPU) under `protocol` of the images `index` of a split
    (default all), and their labels [N]: `score` for each image, batched.

    Args:
        normalize: uint8 views [n, 3, h, w] on the device -> the net's input.
        batch_size: images per batch for center and 10crop; multiscale goes image by image (sizes differ).
    """
    dataset = ProtocolViews(files, protocol, index)
    device = torch.device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size if protocol.crop is not None else 1,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    model = model.eval().to(device)
    probabilities, labels = [], []
    bar = tqdm(total=len(dataset), desc=f"{protocol.name} testing", unit="img", disable=None if progress else True)
    with torch.no_grad(), bar:
        for batch in loader:
            if "error" in batch:
                raise batch["error"] from None
            total, count = 0, 0
            for group in batch["x"]:  # [B, V, 3, h, w]: V views of one size per image
                b, v = group.shape[:2]
                x = normalize(group.to(device, non_blocking=True).flatten(0, 1))
                logits = fully_convolutional_scores(model, x.contiguous(memory_format=torch.channels_last))
                total = total + logits.mean(dim=(2, 3)).float().softmax(dim=1).view(b, v, -1).sum(dim=1)
                count += v
            probabilities.append((total / count).cpu())
            labels.append(batch["y"])
            bar.update(len(batch["y"]))
    return torch.cat(probabilities), torch.cat(labels)
