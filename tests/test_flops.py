"""Tests for resnet_repro.flops: parameter and multiply-add counts checked by hand arithmetic."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_repro.flops import count_multiply_adds, count_parameters
from resnet_repro.models import build_model


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8x8 in, 8x8 out
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False),  # 4x4 out
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_count_multiply_adds_tiny_net_by_hand():
    conv1 = (8 * 8 * 8) * (3 * 3 * 3)  # output elements x (in_channels x kh x kw)
    conv2 = (16 * 4 * 4) * (8 // 2 * 3 * 3)  # groups=2: each output sees 4 input channels
    fc = 10 * 16
    assert count_multiply_adds(tiny_net(), 8) == conv1 + conv2 + fc == 23_200


def test_count_multiply_adds_takes_a_non_square_shape():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(2 * 6 * 4, 5))
    assert count_multiply_adds(net, (1, 6, 4)) == (2 * 6 * 4) * 9 + 5 * 48


def test_count_parameters_tiny_net_by_hand():
    conv1 = 8 * 3 * 3 * 3 + 8  # weights + bias
    bn = 8 + 8  # scale and shift (running statistics are buffers, not parameters)
    conv2 = 16 * 4 * 3 * 3  # groups=2, no bias
    fc = 16 * 10 + 10
    assert count_parameters(tiny_net()) == conv1 + bn + conv2 + fc == 986


def test_count_multiply_adds_is_half_of_flop_counter_mode():
    # FlopCounterMode counts a multiply-add as 2 FLOPs; the paper's "FLOPs" are multiply-adds.
    for model, side in ((tiny_net(), 8), (build_model("resnet18", shortcut="B"), 64)):
        with FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, 3, side, side))
        assert count_multiply_adds(model, side) * 2 == counter.get_total_flops()


def test_count_multiply_adds_leaves_the_model_as_it_was():
    model = tiny_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_multiply_adds(model, 8)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats too


def test_count_multiply_adds_on_meta_equals_cpu():
    with torch.device("meta"):
        on_meta = build_model("resnet20", shortcut="B")
    assert count_multiply_adds(on_meta, 32) == count_multiply_adds(build_model("resnet20", shortcut="B"), 32)
