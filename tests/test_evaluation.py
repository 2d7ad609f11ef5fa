"""The ImageNet test protocols (Sec. 3.4): crop geometry, flips, the fully-convolutional form, averaging; the
batched engine over a split, loading our checkpoints and torchvision's weights, and evaluations recorded beside
a run (on generated JPEGs and a 2-iteration run trained at a 32x32 crop)."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from test_data_imagenet import WNIDS, write_jpegs
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data.imagenet import CenterCropBatches, ImageNetConfig, decode, discover
from resnet_repro.errors import DataError, UserError
from resnet_repro.evaluation import (
    PROTOCOLS,
    Protocol,
    fully_convolutional_scores,
    get_protocol,
    score,
    score_split,
    top_k_errors,
    views,
)
from resnet_repro.models import build_model
from resnet_repro.testing import (
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    evaluate_checkpoint,
    evaluate_run,
    load_bench,
    read_probabilities,
)

# pytest shows every DeprecationWarning; torchvision 0.29 warns on each decode (see data.imagenet's filter).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

CROP = 32  # the tiny run's training crop (the protocols scale to it): 1/49 of the compute at 224


def train_tiny_run(root: Path, run_dir: Path) -> Path:
    """A 2-iteration resnet18 run on the generated ImageNet at a 32x32 crop: `run_dir` with its last.ckpt."""
    from resnet_repro.spec import Schedule, TrainSpec
    from resnet_repro.training import Hardware, RunOptions, train

    config = ImageNetConfig(str(root), subset=len(WNIDS), eval_batch_size=4, workers=0, crop=CROP, scale=(CROP, 40))
    spec = TrainSpec(
        model="resnet18",
        dataset="imagenet",
        data=config,
        schedule=Schedule(max_iters=2, milestones=(1,)),
        batch_size=4,
        log_every=1,
        eval_every=2,
        checkpoint_every=2,
    )
    threads = torch.get_num_threads()
    try:
        train(spec, RunOptions(run_dir, wandb="off", progress=False), Hardware("cpu", threads=1))
    finally:
        torch.set_num_threads(threads)
    return run_dir


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run directory to write into; its checkpoint hard-linked (read only, 90 MB)."""

    def copy(src, dst):
        return os.link(src, dst) if src.endswith(".ckpt") else shutil.copy2(src, dst)

    return Path(shutil.copytree(run_dir, dest, copy_function=copy))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its contents (checkpoints by size), to show that nothing was written."""
    return {
        str(p.relative_to(root)): str(p.stat().st_size).encode() if p.suffix == ".ckpt" else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    return write_jpegs(tmp_path_factory.mktemp("imagenet") / "root")


@pytest.fixture(scope="module")
def trained_run(imagenet_root, tmp_path_factory) -> Path:
    return train_tiny_run(imagenet_root, tmp_path_factory.mktemp("runs") / "resnet18-tiny")


def coordinate_image(height: int = 256, width: int = 320) -> torch.Tensor:
    """[3, H, W]: channel 0 holds the row, channel 1 the column, channel 2 a constant."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    return torch.stack([rows, cols, torch.ones(height, width)])


def test_ten_crops_are_the_four_corners_and_the_centre_and_their_mirror_images():
    image = coordinate_image()  # shorter side already 256: the resize keeps every pixel
    crops = views(image, PROTOCOLS["10crop"])
    assert len(crops) == 10 and all(c.shape == (3, 224, 224) for c in crops)
    corners = {(int(c[0, 0, 0]), int(c[1, 0, 0])) for c in crops[:5]}  # top-left pixel of each crop
    # AlexNet's: the corners and centre of the central 256x256 square of the 256x320 image (columns 32..287).
    assert corners == {(0, 32), (0, 64), (32, 32), (32, 64), (16, 48)}
    expected = [image[:, r : r + 224, c : c + 224] for r, c in corners]
    mirrored = [e.flip(-1) for e in expected]
    for crop in crops[:5]:
        assert any(torch.equal(crop, e) for e in expected)
    for crop in crops[5:]:
        assert any(torch.equal(crop, m) for m in mirrored)


def test_center_protocol_resizes_the_shorter_side_to_256_and_takes_the_centre_224():
    image = torch.rand(3, 300, 500)
    (crop,) = views(image, get_protocol("center"))
    assert crop.shape == (3, 224, 224)
    resized = torch.nn.functional.interpolate(image[None], size=(256, 426), mode="bilinear", antialias=True)[0]
    assert torch.allclose(crop, resized[:, 16:240, 101:325], atol=1e-5)


def test_multiscale_views_are_the_whole_image_and_its_flip_at_five_scales():
    image = torch.rand(3, 300, 400)
    out = views(image, PROTOCOLS["multiscale"])
    assert [min(v.shape[-2:]) for v in out] == [224, 224, 256, 256, 384, 384, 480, 480, 640, 640]
    assert torch.equal(out[1], out[0].flip(-1))
    assert out[-1].shape[-1] == 853  # the aspect ratio is kept: 400/300 * 640


@pytest.mark.parametrize("size", [224, 320])
def test_fully_convolutional_form_equals_the_ordinary_forward(size):
    model = build_model("resnet18").eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        scores = fully_convolutional_scores(model, x)
        assert scores.shape == (2, 1000, size // 32, size // 32)
        assert torch.allclose(scores.mean(dim=(2, 3)), model(x), atol=1e-4)


def test_score_averages_the_softmax_of_every_view():
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    image, protocol = torch.rand(3, 73, 90), PROTOCOLS["10crop"].scaled(64)  # a 64x64-trained net's 10 crops
    with torch.no_grad():
        probabilities = score(model, image, protocol)
        expected = torch.stack([model(v[None]).softmax(1)[0] for v in views(image, protocol)]).mean(0)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_a_crop_larger_than_the_image_and_an_unknown_protocol_are_user_errors():
    with pytest.raises(UserError, match="does not fit"):
        views(torch.rand(3, 120, 150), Protocol("tiny", (100,), 224, "center"))
    with pytest.raises(UserError, match="center, 10crop, multiscale"):
        get_protocol("12crop")


def test_top_k_errors_count_a_label_anywhere_in_the_top_k():
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 2])
    errors = top_k_errors(probabilities, labels, ks=(1, 2))
    assert errors[1] == pytest.approx(200 / 3) and errors[2] == pytest.approx(100 / 3)
    assert top_k_errors(probabilities, labels)[5] == 0.0  # 3 classes: the top 5 hold them all


def test_protocols_scale_to_another_training_crop_and_are_themselves_at_224():
    for protocol in PROTOCOLS.values():
        assert protocol.scaled(224) is protocol
    assert PROTOCOLS["10crop"].scaled(64) == Protocol("10crop", (73,), 64, "ten", "Tables 2 and 3")
    assert PROTOCOLS["multiscale"].scaled(112).short_sides == (112, 128, 192, 240, 320)
    assert PROTOCOLS["multiscale"].scaled(112).crop is None
    # The same geometry as the centre crops of the training curves (data.imagenet.CenterCropBatches).
    for crop in (32, 64, 100, 224, 288):
        assert PROTOCOLS["center"].scaled(crop) == CenterCropBatches(None, "test", torch.arange(1), 1, crop).protocol


@pytest.mark.parametrize("name", ["center", "10crop", "multiscale"])
def test_score_split_equals_score_image_by_image(imagenet_root, name):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=len(WNIDS)).eval()
    files = discover(ImageNetConfig(str(imagenet_root), subset=len(WNIDS)))[0]["val"]
    protocol = PROTOCOLS[name].scaled(CROP)
    mean = torch.rand(3, 1, 1)

    def normalize(x):
        return x.float() / 255 - mean

    index = torch.arange(2 if name == "multiscale" else len(files))  # multiscale: 10 whole images each
    workers = 1 if name == "10crop" else 0  # the views cut in a worker process too
    probabilities, labels = score_split(
        model, files, protocol, normalize, index=index, batch_size=4, workers=workers, progress=False
    )
    assert probabilities.shape == (len(index), len(WNIDS)) and probabilities.dtype == torch.float32
    assert torch.equal(labels, files.labels[index])
    with torch.no_grad():
        expected = torch.stack([score(model, decode(files.path(i)), protocol, normalize) for i in index.tolist()])
    assert torch.allclose(probabilities, expected, atol=1e-6)


def test_score_split_raises_a_crop_that_does_not_fit_and_a_broken_image_as_one_line(imagenet_root, tmp_path):
    model = build_model("resnet18", num_classes=len(WNIDS))
    files = discover(ImageNetConfig(str(imagenet_root), subset=len(WNIDS)))[0]["val"]
    with pytest.raises(UserError, match="a 224x224 crop does not fit an image resized to 133x100"):
        score_split(model, files, Protocol("tiny", (100,), 224, "center"), lambda x: x.float(), progress=False)
    root = Path(shutil.copytree(imagenet_root, tmp_path / "copy"))
    broken = root / "val" / WNIDS[0] / f"{WNIDS[0]}_1.JPEG"
    broken.write_bytes(broken.read_bytes()[:2000])
    files = discover(ImageNetConfig(str(root), subset=len(WNIDS)))[0]["val"]
    with pytest.raises(DataError, match=f"cannot decode image {broken} ") as info:
        score_split(model, files, PROTOCOLS["center"].scaled(CROP), lambda x: x.float(), workers=1, progress=False)
    assert "\n" not in str(info.value)


def test_torchvision_weights_predict_as_torchvision_does_on_the_centre_crop(imagenet_root, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    bench = load_bench(tmp_path / "resnet18.pth", "resnet18", data=str(imagenet_root), subset=len(WNIDS))
    assert (bench.weights, bench.crop, bench.iteration) == ("torchvision", 224, None)
    assert "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]" in bench.normalization
    index = torch.tensor([0, 3, 4])  # each class, landscape (500x375) and portrait images
    probabilities, _ = score_split(
        bench.model, bench.files, PROTOCOLS["center"], bench.normalize, index=index, progress=False
    )
    mean, std = torch.tensor(TORCHVISION_MEAN)[:, None, None], torch.tensor(TORCHVISION_STD)[:, None, None]
    crops = [TF.center_crop(TF.resize(decode(bench.files.path(i)), 256), 224) for i in index.tolist()]
    with torch.no_grad():
        expected = net(torch.stack([(c.float() / 255 - mean) / std for c in crops])).softmax(dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.equal(probabilities.topk(5).indices, expected.topk(5).indices)


def test_a_torchvision_state_dict_of_another_net_says_which_net_it_holds(imagenet_root, tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    for model, match in (
        ("resnet34", "resnet18.pth holds a resnet18, not a resnet34: pass resnet18 as MODEL"),
        ("plain18", "plain18 is a plain net \\(torchvision has none\\); .* holds a torchvision resnet18"),
        ("resnet20", "resnet20 is a CIFAR net"),
        (None, "does not name its net: pass MODEL \\(resnet18\\)"),
    ):
        with pytest.raises(UserError, match=match):
            load_bench(tmp_path / "resnet18.pth", model, data=str(imagenet_root), subset=len(WNIDS))
    with pytest.raises(UserError, match="pass --data ROOT"):
        load_bench(tmp_path / "resnet18.pth", "resnet18")


def test_outside_weights_of_a_bottleneck_net_are_loaded_with_the_stride_where_the_caller_says(imagenet_root, tmp_path):
    """The paper's placement (the first 1x1) and torchvision's (the 3x3) give weights of the same shapes: a state dict
    cannot tell them apart, so the caller must say which, and is never given the other silently."""
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "resnet50.pth")
    where = {"data": str(imagenet_root), "subset": len(WNIDS)}
    with pytest.raises(UserError) as refused:
        load_bench(tmp_path / "resnet50.pth", "resnet50", **where)
    assert "pass --stride-on 3x3 for torchvision's weights (its ResNet v1.5) or --stride-on 1x1" in str(refused.value)
    for placement, strides in (("3x3", ((1, 1), (2, 2))), ("1x1", ((2, 2), (1, 1)))):
        block = load_bench(tmp_path / "resnet50.pth", "resnet50", stride_on=placement, **where).model.layer2[0]
        assert (block.conv1.stride, block.conv2.stride) == strides, placement
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(UserError, match="--stride-on is for bottleneck nets"):
        load_bench(tmp_path / "resnet18.pth", "resnet18", stride_on="1x1", **where)


def test_evaluate_run_records_each_protocol_in_run_json_and_keeps_probabilities(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    record = json.loads((run / "run.json").read_text())
    center = evaluate_run(run, "center", progress=False)
    # The center protocol at the training crop is what training evaluated the last iterate on.
    assert center["top1_error"] == pytest.approx(record["final"]["test/error"], abs=1e-4)
    assert center["top5_error"] == pytest.approx(record["final"]["test/top5_error"], abs=1e-4)
    assert (center["images"], center["limit"], center["iteration"], center["weights"]) == (6, None, 2, "checkpoint")
    assert (center["short_sides"], center["crop"]) == ([37], CROP)
    assert center["data_listing_sha256"] == record["data_source"]["listing_sha256"]
    ten = evaluate_run(run, "10crop", limit=4, batch_size=3, keep_probabilities=True, progress=False)
    assert (ten["images"], ten["limit"], ten["batch_size"], ten["probabilities"]) == (
        4,
        4,
        3,
        "probabilities-10crop.pt",
    )
    evaluations = json.loads((run / "run.json").read_text())["evaluations"]
    assert evaluations == {"center": center, "10crop": ten}  # merged: the first protocol kept
    kept = read_probabilities(run, "10crop")
    assert kept["probabilities"].shape == (4, len(WNIDS)) and kept["probabilities"].dtype == torch.float16
    assert kept["labels"].dtype == torch.int64 and kept["classes"] == list(WNIDS)
    errors = top_k_errors(kept["probabilities"].float(), kept["labels"], ks=(1,))
    assert errors[1] == pytest.approx(ten["top1_error"], abs=1e-4)
    assert {p.name for p in run.iterdir()} - {p.name for p in trained_run.iterdir()} == {"probabilities-10crop.pt"}
    with pytest.raises(UserError, match="no probabilities-center.pt in .*--keep-probabilities"):
        read_probabilities(run, "center")
    resumed = {**json.loads((run / "run.json").read_text()), "evaluations": {}}  # a resumed run rewrites run.json
    (run / "run.json").write_text(json.dumps(resumed))
    with pytest.raises(UserError, match="is not of the run's recorded 10crop evaluation"):
        read_probabilities(run, "10crop")


def test_evaluate_checkpoint_outside_a_run_records_beside_it(trained_run, tmp_path):
    checkpoint = tmp_path / "tiny.ckpt"
    os.link(trained_run / "checkpoints" / "last.ckpt", checkpoint)
    first = evaluate_checkpoint(checkpoint, "multiscale", model="resnet18", limit=1, progress=False)
    assert first["short_sides"] == [32, 37, 55, 69, 91] and first["crop"] is None and first["batch_size"] == 1
    recorded = json.loads((tmp_path / "tiny.ckpt.evaluations.json").read_text())
    assert recorded == {"multiscale": first}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.ckpt", "tiny.ckpt.evaluations.json"]
