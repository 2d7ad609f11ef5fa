"""The ImageNet networks of Table 1: plain and residual nets of 18, 34, 50, 101 and 152 layers.

A 7x7/2 conv with 64 filters and a 3x3/2 max pool, four stages (conv2_x..conv5_x, here
layer1..layer4 as in torchvision) of basic blocks (18/34) or bottlenecks (50/101/152), global
average pooling and a 1000-way FC. Our state-dict keys equal torchvision's once its `downsample`
is renamed `shortcut` (see `from_torchvision_state_dict`).
"""

from torch import nn

from resnet_repro.errors import UnknownModelError, UserError
from resnet_repro.models.blocks import (
    BasicBlock,
    Bottleneck,
    GlobalAvgPool,
    check_shortcut,
    init_weights,
    make_stage,
)

# Table 1: blocks per stage.
STAGE_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def default_shortcut(depth: int) -> str:
    """The paper's option: A for the 18/34-layer comparison (Table 2), B for 50/101/152."""
    return "A" if depth < 50 else "B"


class ImageNetResNet(nn.Module):
    """A Table 1 net; `shortcut=None` gives the plain net, "A"/"B"/"C" the ResNet.

    `stride_in_1x1` (bottleneck nets): each stage's stride-2 on the first 1x1, as the paper's released Caffe models
    (True), or on the 3x3, as torchvision's weights ("ResNet v1.5", False). The weights have the same shapes either
    way, so loading a state dict neither tells nor checks it: build the net with the placement its weights had.
    """

    def __init__(
        self,
        depth: int,
        shortcut: str | None,
        num_classes: int = 1000,
        stride_in_1x1: bool = True,
    ):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise UnknownModelError(
                f"ImageNet depth {depth} is not in Table 1: valid are {', '.join(map(str, STAGE_BLOCKS))}"
            )
        check_shortcut(shortcut)
        bottleneck = depth >= 50
        if not bottleneck and not stride_in_1x1:
            raise UserError(f"stride_in_1x1 applies only to bottleneck nets (50, 101, 152 layers), not {depth}")
        block = Bottleneck if bottleneck else BasicBlock
        block_kwargs = {"stride_in_1x1": stride_in_1x1} if bottleneck else {}
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (width, num_blocks) in enumerate(zip(STAGE_WIDTHS, STAGE_BLOCKS[depth], strict=True), 1):
            stride = 1 if index == 1 else 2  # conv3_1, conv4_1, conv5_1 downsample (Table 1)
            stage = make_stage(block, in_channels, width, num_blocks, stride, shortcut, **block_kwargs)
            setattr(self, f"layer{index}", stage)
            in_channels = width * block.expansion
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def from_torchvision_state_dict(state_dict: dict) -> dict:
    """Rename torchvision ResNet keys to ours (`downsample` -> `shortcut`).

    torchvision's nets are option B; its ResNet-50/101/152 (v1.5: the stride on the 3x3) need `stride_in_1x1=False`,
    and weights in this layout with the paper's placement (the stride on the first 1x1) need True. Nothing in the
    keys or shapes says which: the caller must (`resnet-repro evaluate --stride-on`).
    """
    return {key.replace(".downsample.", ".shortcut."): value for key, value in state_dict.items()}
