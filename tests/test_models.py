"""Tests for resnet_repro.models: the paper's architectures (Sec. 3.3, 4.2, Table 1, Table 6)."""

import copy
import pickle

import pytest
import torch
import torchvision
from torch import nn

from resnet_repro.errors import UnknownModelError, UserError
from resnet_repro.flops import count_multiply_adds, count_parameters
from resnet_repro.models import (
    BasicBlock,
    Bottleneck,
    Projection,
    ZeroPadShortcut,
    build_model,
    from_torchvision_state_dict,
    layer_response_bns,
    list_models,
    model_info,
    register_model,
)
from resnet_repro.models.blocks import GlobalAvgPool

CIFAR_DEPTHS = [20, 32, 44, 56, 110]  # forward/backward; 1202 is checked by parameter count only
IMAGENET_DEPTHS = [18, 34, 50, 101, 152]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this file's small forwards on one thread, then restore the setting.

    On 2 cores shared with other processes, 2 OpenMP threads stall whenever a core is busy:
    the forward/backward tests took 61 s on 2 threads against 6 s on one (measured here).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def on_meta(name: str, **kwargs) -> nn.Module:
    """Build without allocating weights: enough for shapes, parameter and multiply-add counts."""
    with torch.device("meta"):
        return build_model(name, **kwargs)


def weighted_layers(model: nn.Module) -> int:
    """Convs and FCs on the main path, as the paper counts depth (shortcut projections excluded)."""
    shortcut_convs = {id(m) for p in model.modules() if isinstance(p, Projection) for m in p}
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in shortcut_convs for m in model.modules())


def gmacs(name: str, **kwargs) -> float:
    return count_multiply_adds(on_meta(name, **kwargs), model_info(name).input_size) / 1e9


# --- every registered architecture -----------------------------------------------------------


# Every depth of both families. Left out: resnet1202 (counts only here; test_model_table runs its
# forward on the meta device) and plain101/152, which differ from plain50 only in block counts
# and run a meta forward in the multiply-add tests below. They would add ~10 s on 2 cores.
FORWARD_BACKWARD = [n for n in list_models() if n not in ("resnet1202", "plain101", "plain152")]


@pytest.mark.parametrize("name", FORWARD_BACKWARD)
def test_build_model_forward_backward_every_architecture(name):
    torch.manual_seed(0)
    info = model_info(name)
    model = build_model(name)
    side = 32  # ImageNet nets too: conv5_x is then 1x1, enough for shapes and gradients
    out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, info.num_classes)
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_build_model_pickle_and_deepcopy_round_trip(name):
    model = on_meta(name)  # the structure is what can fail to pickle; meta keeps this fast
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert [type(m) for m in clone.modules()] == [type(m) for m in model.modules()]
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in clone.state_dict().items()} == shapes


def test_build_model_pickled_resnet_computes_the_same_function():
    torch.manual_seed(0)
    model = build_model("resnet20", shortcut="B").eval()  # option A and B modules both inside
    model.layer2[0].shortcut = ZeroPadShortcut(16, 32, 2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            assert torch.equal(clone(x), model(x))


@pytest.mark.parametrize("name", list_models())
def test_build_model_depth_counts_weighted_layers(name):
    assert weighted_layers(on_meta(name)) == model_info(name).depth


@pytest.mark.parametrize("name", list_models())
def test_build_model_has_no_dropout_and_no_conv_bias(name):
    modules = list(on_meta(name).modules())
    assert not any(isinstance(m, nn.Dropout) for m in modules)
    assert all(m.bias is None for m in modules if isinstance(m, nn.Conv2d))


# nn.AdaptiveAvgPool2d has no deterministic CUDA backward: `--deterministic` on a GPU raised in its backward.
@pytest.mark.parametrize("name", list_models())
def test_build_model_pools_without_adaptive_avg_pool(name):
    model = on_meta(name)
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert isinstance(model.avgpool, GlobalAvgPool)  # torchvision's name, which evaluation.py hooks


@pytest.mark.parametrize("name, side", [("resnet20", 32), ("resnet50", 64)])
def test_global_avg_pool_computes_what_adaptive_avg_pool_did(name, side):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        ours = model(x)
        keys = list(model.state_dict())
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        torch.testing.assert_close(ours, model(x))
    assert list(model.state_dict()) == keys  # pooling holds no state: checkpoints load either way


def _backward_ops(tensor: torch.Tensor) -> set[str]:
    """The names of the autograd nodes behind `tensor`: the backward kernels a GPU would run."""
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo += [next_node for next_node, _ in node.next_functions]
    return {type(node).__name__ for node in seen}


def test_build_model_trains_under_deterministic_algorithms():
    torch.manual_seed(0)
    model = build_model("resnet8")
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        out = model(torch.randn(2, 3, 32, 32))
        nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert all(p.grad is not None for p in model.parameters())
    # On a CPU every backward is deterministic; what a GPU would refuse shows in the graph's nodes.
    assert not any("AdaptiveAvgPool" in op for op in _backward_ops(out))


# --- Table 6 and Sec. 4.2: CIFAR-10 nets ------------------------------------------------------


@pytest.mark.parametrize(
    "depth, paper_millions",
    [(20, "0.27"), (32, "0.46"), (44, "0.66"), (56, "0.85"), (110, "1.7"), (1202, "19.4")],
)
def test_cifar_resnet_params_match_table6(depth, paper_millions):
    decimals = len(paper_millions.split(".")[1])
    ours = count_parameters(on_meta(f"resnet{depth}")) / 1e6
    assert f"{ours:.{decimals}f}" == paper_millions


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_cifar_plain_and_resnet_have_equal_params_under_option_a(depth):
    assert count_parameters(on_meta(f"plain{depth}")) == count_parameters(on_meta(f"resnet{depth}"))


def test_cifar_resnet_stages_have_paper_widths_and_map_sizes():
    model = build_model("resnet20").eval()
    shapes = []
    for stage in (model.layer1, model.layer2, model.layer3):
        stage.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape[1:]))
    model(torch.zeros(1, 3, 32, 32))
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    # n = 3 blocks per stage for 20 layers; stages 2 and 3 open with a stride-2 conv.
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [3, 3, 3]
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer3[0].conv1.stride == (2, 2)


def test_build_model_any_6n_plus_2_cifar_depth():
    for name, depth in (("resnet8", 8), ("plain14", 14), ("resnet26", 26)):
        model = build_model(name)
        assert weighted_layers(model) == depth
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert name not in list_models()  # buildable, but only the paper's depths are listed


def test_cifar_resnet_shortcut_b_adds_exactly_the_two_projections():
    # Option B projects where dims increase: 16->32 and 32->64 (1x1 conv + BN scale and shift).
    expected = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    added = count_parameters(on_meta("resnet20", shortcut="B")) - count_parameters(on_meta("resnet20"))
    assert added == expected == 2752


# --- Table 1 and Sec. 3.3: ImageNet nets ------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, torchvision_params",
    [
        ("resnet18", {"shortcut": "B"}, 11_689_512),
        ("resnet34", {"shortcut": "B"}, 21_797_672),
        ("resnet50", {}, 25_557_032),
        ("resnet101", {}, 44_549_160),
        ("resnet152", {}, 60_192_808),
    ],
)
def test_imagenet_option_b_params_equal_torchvision(name, kwargs, torchvision_params):
    assert count_parameters(on_meta(name, **kwargs)) == torchvision_params


@pytest.mark.parametrize(
    "name, paper_gmacs",
    [
        ("resnet18", 1.8),
        ("plain18", 1.8),
        ("resnet34", 3.6),
        ("plain34", 3.6),
        ("resnet101", 7.6),
        ("resnet152", 11.3),
    ],
)
def test_imagenet_multiply_adds_round_to_table1(name, paper_gmacs):
    assert round(gmacs(name), 1) == paper_gmacs


@pytest.mark.parametrize("depth", CIFAR_DEPTHS + IMAGENET_DEPTHS)
def test_plain_and_option_a_resnet_cost_the_same_multiply_adds(depth):
    # Sec. 3.3: identity shortcuts add neither parameters nor computation (the addition aside).
    assert gmacs(f"resnet{depth}", shortcut="A") == gmacs(f"plain{depth}") > 0


def test_imagenet_resnet50_multiply_adds_tell_stride_placement_apart():
    paper_stride = gmacs("resnet50")  # stride on the first 1x1, as the released Caffe models
    torchvision_stride = gmacs("resnet50", stride_in_1x1=False)
    # Table 1's 3.8 is our 3.86 truncated; torchvision's "v1.5" costs about 4.1.
    assert 3.8 <= paper_stride < 3.9
    assert round(torchvision_stride, 1) == 4.1
    assert gmacs("resnet34") / 19.6 == pytest.approx(0.18, abs=0.01)  # "only 18% of VGG-19"


def test_imagenet_default_shortcuts_follow_the_paper():
    assert model_info("resnet18").shortcut == model_info("resnet34").shortcut == "A"
    assert {model_info(f"resnet{d}").shortcut for d in (50, 101, 152)} == {"B"}

    def projections(model):
        return sum(isinstance(m, Projection) for m in model.modules())

    assert projections(on_meta("resnet34")) == 0
    assert projections(on_meta("resnet34", shortcut="B")) == 3
    assert projections(on_meta("resnet34", shortcut="C")) == 16  # 13 more than B (Sec. 3.3)
    assert projections(on_meta("resnet50")) == 4  # conv2_1 widens 64 -> 256 too


def test_imagenet_shortcut_params_by_hand():
    a, b, c = (count_parameters(on_meta("resnet34", shortcut=s)) for s in "ABC")
    assert a == count_parameters(on_meta("plain34"))  # option A adds no parameters

    def projection(c_in, c_out):
        return c_in * c_out + 2 * c_out  # 1x1 conv weights + BN scale and shift

    assert b - a == projection(64, 128) + projection(128, 256) + projection(256, 512)
    # C also projects the 13 identity shortcuts: 3, 3, 5 and 2 blocks in conv2_x..conv5_x.
    same = 3 * projection(64, 64) + 3 * projection(128, 128) + 5 * projection(256, 256)
    assert c - b == same + 2 * projection(512, 512)
    assert count_parameters(on_meta("resnet50", shortcut="A")) == count_parameters(on_meta("plain50"))


def test_imagenet_stages_have_table1_output_sizes():
    model = on_meta("resnet50")
    shapes = []
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        stage.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape[1:]))
    count_multiply_adds(model, 224)
    assert shapes == [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [
        3,
        4,
        6,
        3,
    ]


def test_imagenet_bottleneck_stride_on_1x1_by_default_and_on_3x3_on_request():
    paper = on_meta("resnet50").layer2[0]
    v15 = on_meta("resnet50", stride_in_1x1=False).layer2[0]
    assert (paper.conv1.stride, paper.conv2.stride) == ((2, 2), (1, 1))
    assert (v15.conv1.stride, v15.conv2.stride) == ((1, 1), (2, 2))


@pytest.mark.parametrize("name, kwargs", [("resnet18", {"shortcut": "B"}), ("resnet50", {"stride_in_1x1": False})])
def test_imagenet_loads_torchvision_weights_and_computes_the_same_function(name, kwargs):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    ours = build_model(name, **kwargs).eval()
    ours.load_state_dict(from_torchvision_state_dict(reference.state_dict()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_imagenet_resnet50_with_paper_stride_differs_from_torchvision():
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    ours = build_model("resnet50").eval()
    ours.load_state_dict(from_torchvision_state_dict(reference.state_dict()))  # same shapes
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(ours(x), reference(x))


# --- blocks and shortcuts ---------------------------------------------------------------------


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    shortcut = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()
    assert count_parameters(shortcut) == 0


@pytest.mark.parametrize(
    "block",
    [
        BasicBlock(16, 16, shortcut="A"),
        BasicBlock(16, 16, shortcut="C"),
        Bottleneck(256, 64, shortcut="B"),
    ],
    ids=["basic-A", "basic-C", "bottleneck-B"],
)
def test_block_with_zero_last_bn_is_identity(block):
    # F(x) = 0 when the last BN scales by 0; the ReLU after the addition keeps x >= 0 unchanged.
    nn.init.zeros_(block.last_bn.weight)
    if isinstance(block.shortcut, Projection):
        # A projection is not the identity; make it so (1x1 conv = I, BN in eval = I).
        nn.init.dirac_(block.shortcut[0].weight)
        block.eval()
    x = torch.rand(2, block.conv1.in_channels, 8, 8)
    torch.testing.assert_close(block(x), x)


def test_plain_block_with_zero_last_bn_outputs_zero():
    block = BasicBlock(16, 16, shortcut=None)
    nn.init.zeros_(block.last_bn.weight)
    assert block.shortcut is None
    assert not block(torch.rand(2, 16, 8, 8)).any()


def test_blocks_name_their_last_bn():
    basic, bottleneck = BasicBlock(16, 16), Bottleneck(256, 64)
    assert basic.last_bn is basic.bn2 and bottleneck.last_bn is bottleneck.bn3


def test_layer_response_bns_lists_every_3x3_layer_in_forward_order():
    model = build_model("resnet20")
    names = [name for name, _ in layer_response_bns(model)]
    assert len(names) == 19  # 6n + 1 conv layers of 3x3 for n = 3
    assert names[:4] == ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1"]
    assert names[-1] == "layer3.2.bn2"
    # Projections are shortcuts, not layers: option B adds none to the list.
    assert len(layer_response_bns(build_model("resnet20", shortcut="B"))) == 19


def test_build_model_runs_in_channels_last():
    torch.manual_seed(0)
    for name in ("resnet20", "plain20"):
        model = build_model(name).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
            model = model.to(memory_format=torch.channels_last)
            out = model(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_build_model_uses_he_initialisation():
    conv = build_model("resnet110").layer3[5].conv2  # 64 filters of 3x3: fan_out = 576
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=0.01)


# --- registry and user errors -----------------------------------------------------------------


def test_list_models_holds_the_paper_nets_by_family():
    cifar, imagenet = list_models("cifar"), list_models("imagenet")
    assert {f"resnet{d}" for d in CIFAR_DEPTHS + [1202]} | {f"plain{d}" for d in CIFAR_DEPTHS} == set(cifar)
    assert {f"{kind}{d}" for kind in ("plain", "resnet") for d in IMAGENET_DEPTHS} == set(imagenet)
    assert list_models() == cifar + imagenet
    assert {model_info(n).input_size for n in cifar} == {32}
    assert {model_info(n).num_classes for n in imagenet} == {1000}


def test_register_model_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model(model_info("resnet20"))


@pytest.mark.parametrize(
    "name, kwargs, error, says",
    [
        ("resnet7", {}, UnknownModelError, "6n+2"),
        ("resnet100", {}, UnknownModelError, "18, 34, 50, 101, 152"),
        ("vgg19", {}, UnknownModelError, "plain<d> or resnet<d>"),
        ("plain20", {"shortcut": "C"}, UserError, "plain net"),
        ("plain34", {"shortcut": "A"}, UserError, "plain net"),
        ("resnet20", {"shortcut": "D"}, UserError, "valid are A"),
        ("resnet20", {"shortcut": None}, UserError, "without shortcuts is plain20"),
        ("resnet18", {"stride_in_1x1": False}, UserError, "does not take stride_in_1x1"),
        ("resnet20", {"width": 2}, UserError, "valid keyword arguments are shortcut, num_classes"),
    ],
)
def test_build_model_rejects_bad_requests_with_one_line(name, kwargs, error, says):
    with pytest.raises(error) as caught:
        build_model(name, **kwargs)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_list_models_rejects_unknown_family():
    with pytest.raises(UserError, match="valid are cifar, imagenet"):
        list_models("mnist")


def test_build_model_accepts_num_classes_and_explicit_defaults():
    assert build_model("resnet8", num_classes=100).fc.out_features == 100
    assert build_model("plain8", shortcut=None).layer1[0].shortcut is None
