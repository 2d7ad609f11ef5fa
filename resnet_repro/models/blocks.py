"""Building blocks of Sec. 3.2-3.3: basic and bottleneck blocks (Fig. 5) and shortcut options A/B/C.

A block built with `shortcut=None` is the plain counterpart: the same layers with the shortcut
removed, so plain and residual nets share one definition (Sec. 3.3, "Plain Network").
Naming is regular on purpose: every conv `convK` is followed by its BN `bnK`, and the BN that
closes the residual branch is `last_bn` (`bn2` in a basic block, `bn3` in a bottleneck).
"""

import torch.nn.functional as F
from torch import nn

from resnet_repro.errors import UserError

SHORTCUT_OPTIONS = ("A", "B", "C")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BN follows and has its own shift)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (BN follows)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity shortcut that subsamples by `stride` and appends zero channels.

    Channel layout: the input's channels come first, the new zero channels are appended at the end
    (out[:, :in_channels] = x[:, :, ::stride, ::stride], out[:, in_channels:] = 0).
    akamaster/pytorch_resnet_cifar10 instead pads (out - in) // 2 channels on *each* side, so its
    input channels sit in the middle: to load its option-A weights into ours, permute the output
    channels of each stage-entry block (and everything downstream) accordingly.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("option A can only add channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x):
        if self.stride > 1:
            # Same sampling grid as a stride-2 1x1 conv: keep the top-left pixel of each 2x2 cell.
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class GlobalAvgPool(nn.Module):
    """Global average pooling: the mean of each channel over its feature map, [N, C, H, W] -> [N, C, 1, 1].

    The same function as nn.AdaptiveAvgPool2d(1), written as a mean because that module has no deterministic
    CUDA backward kernel: `--deterministic` on a GPU would raise in its backward. The mean's backward is an
    expand, deterministic everywhere. A module (not a call in forward) keeps torchvision's `avgpool` name, on
    which the fully-convolutional evaluation hooks.
    """

    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class Projection(nn.Sequential):
    """Options B/C: projection shortcut W_s x (Eqn. 2), a 1x1 conv followed by BN."""

    # Same layout as torchvision's `downsample` (keys `0.weight`, `1.weight`, ...).
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def check_shortcut(option: str | None) -> None:
    """Raise UserError unless `option` is None (plain) or one of A, B, C."""
    if option is not None and option not in SHORTCUT_OPTIONS:
        raise UserError(
            f"unknown shortcut option {option!r}: valid are A (zero-padding identity), "
            "B (projections where dimensions increase), C (projections everywhere) (Sec. 3.3)"
        )


def make_shortcut(option: str | None, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The shortcut for one block under option A/B/C, or None for a plain block."""
    check_shortcut(option)
    if option is None:
        return None
    dims_increase = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and dims_increase):
        return Projection(in_channels, out_channels, stride)
    if dims_increase:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs (Fig. 5 left), used by the CIFAR nets and ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, shortcut: str | None = "A"):
        super().__init__()
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        # Not in-place: a forward hook on a BN (Fig. 7) must see its output before the ReLU.
        self.relu = nn.ReLU()
        self.shortcut = make_shortcut(shortcut, in_channels, width * self.expansion, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN that closes the residual branch F(x)."""
        return self.bn2

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)  # the second ReLU comes after the addition (Fig. 2)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 restore (Fig. 5 right), used by ResNet-50/101/152.

    `stride_in_1x1=True` puts the downsampling stride on the first 1x1 conv, as the paper's released
    Caffe models do; False puts it on the 3x3, as torchvision does ("ResNet v1.5").
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: str | None = "B",
        stride_in_1x1: bool = True,
    ):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        out_channels = width * self.expansion
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()  # not in-place, see BasicBlock
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN that closes the residual branch F(x)."""
        return self.bn3

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


def make_stage(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    width: int,
    num_blocks: int,
    stride: int,
    shortcut: str | None,
    **block_kwargs,
) -> nn.Sequential:
    """One stage: `num_blocks` blocks on one feature-map size; the first one downsamples."""
    blocks = []
    for index in range(num_blocks):
        blocks.append(block(in_channels, width, stride if index == 0 else 1, shortcut, **block_kwargs))
        in_channels = width * block.expansion
    return nn.Sequential(*blocks)


def init_weights(model: nn.Module) -> None:
    """He initialisation (Sec. 3.4, [13]) for convs; BN starts as the identity (gamma 1, beta 0)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            # [13] derives std = sqrt(2 / n) for either fan; fan_out follows torchvision and
            # fb.resnet.torch (n = k * k * out_channels).
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    # The final FC keeps PyTorch's default nn.Linear initialisation, as torchvision does.


def layer_response_bns(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BN after each 3x3 conv of the main path, in forward order: where Fig. 7 reads responses.

    Each output is a 3x3 layer's response "after BN and before other nonlinearity (ReLU/addition)".
    Projection shortcuts and 1x1/7x7 convs are left out.
    """
    found = []
    for prefix, module in model.named_modules():  # pre-order, children in forward order
        for name, conv in module.named_children():
            bn_name = "bn" + name.removeprefix("conv")
            bn = getattr(module, bn_name, None) if name.startswith("conv") else None
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and isinstance(bn, nn.BatchNorm2d):
                found.append((f"{prefix}.{bn_name}" if prefix else bn_name, bn))
    return found
