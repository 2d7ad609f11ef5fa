"""The CIFAR-10 networks of Sec. 4.2: 6n+2 weighted layers, plain or residual.

A 3x3 conv with 16 filters, then three stages of 2n 3x3 layers with 16/32/64 filters on 32/16/8
maps (a stride-2 conv opens stages 2 and 3), global average pooling and a 10-way FC. The paper
uses option A shortcuts throughout, so plain and residual nets have the same parameters.
"""

from torch import nn

from resnet_repro.errors import UnknownModelError
from resnet_repro.models.blocks import BasicBlock, GlobalAvgPool, check_shortcut, init_weights, make_stage

STAGE_WIDTHS = (16, 32, 64)
PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)  # n = 3, 5, 7, 9, 18, 200


def blocks_per_stage(depth: int) -> int:
    """n for a 6n+2-layer net; UnknownModelError for any other depth."""
    if depth < 8 or (depth - 2) % 6:
        raise UnknownModelError(
            f"CIFAR depth {depth} is not 6n+2 with n >= 1: valid depths are 8, 14, 20, 26, 32, ... "
            f"(the paper's: {', '.join(map(str, PAPER_DEPTHS))})"
        )
    return (depth - 2) // 6


class CifarResNet(nn.Module):
    """A 6n+2-layer CIFAR-10 net; `shortcut=None` gives the plain net, "A"/"B"/"C" the ResNet."""

    def __init__(self, depth: int, shortcut: str | None = "A", num_classes: int = 10):
        super().__init__()
        n = blocks_per_stage(depth)
        check_shortcut(shortcut)
        self.depth = depth
        w1, w2, w3 = STAGE_WIDTHS
        self.conv1 = nn.Conv2d(3, w1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()  # not in-place: Fig. 7 hooks read bn1's output
        # layer1..layer3 are the paper's 32x32, 16x16 and 8x8 stages.
        self.layer1 = make_stage(BasicBlock, w1, w1, n, 1, shortcut)
        self.layer2 = make_stage(BasicBlock, w1, w2, n, 2, shortcut)
        self.layer3 = make_stage(BasicBlock, w2, w3, n, 2, shortcut)
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(w3, num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))
