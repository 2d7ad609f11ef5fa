"""`resnet-repro evaluate`: what it prints and records, and one line with exit status 2 for each bad input."""

import json
import re
import shutil

import pytest
import torch
import torchvision
from test_data_imagenet import WNIDS, write_jpegs
from test_evaluation import copy_run, train_tiny_run, tree

from resnet_repro.cli import main
from resnet_repro.spec import TrainSpec

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def status(argv: list[str]) -> int:
    """The CLI's exit status, usage errors (argparse exits) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    return write_jpegs(tmp_path_factory.mktemp("imagenet") / "root")


@pytest.fixture(scope="module")
def trained_run(imagenet_root, tmp_path_factory):
    return train_tiny_run(imagenet_root, tmp_path_factory.mktemp("runs") / "resnet18-tiny")


def test_evaluate_prints_the_errors_and_records_them_in_the_runs_record(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    checkpoint = run / "checkpoints" / "last.ckpt"
    argv = ["evaluate", "resnet18", "--checkpoint", str(checkpoint), "--protocol", "10crop", "--limit", "3"]
    assert main([*argv, "--no-progress", "--keep-probabilities"]) == 0
    out = capsys.readouterr().out.splitlines()
    result = json.loads((run / "run.json").read_text())["evaluations"]["10crop"]
    assert out[0].startswith(
        f"resnet18 (iteration 2), 10crop: top-1 error {result['top1_error']:.2f}%, top-5 error "
        f"{result['top5_error']:.2f}% on 3 val images (the first 3: --limit 3) in "
    )
    assert out[1] == (
        "inputs normalised as in training: minus the checkpoint's per-pixel mean image "
        "(multiscale, whole images: its channel means)"
    )
    assert out[2] == f"recorded in {run / 'run.json'}; probabilities in {run / 'probabilities-10crop.pt'}"
    assert (result["images"], result["limit"], result["weights"], result["crop"]) == (3, 3, "checkpoint", 32)


def test_evaluate_records_torchvision_weights_beside_the_file_and_says_how_it_normalised(
    imagenet_root, tmp_path, capsys
):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    argv = ["evaluate", "resnet18", "--checkpoint", str(tmp_path / "resnet18.pth"), "--data", str(imagenet_root)]
    assert main([*argv, "--subset", "3", "--protocol", "center", "--limit", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("resnet18 (torchvision weights), center: top-1 error ")
    assert out[1] == (
        "inputs normalised as torchvision trained it: mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225] "
        "on [0, 1] pixels"
    )
    recorded = json.loads((tmp_path / "resnet18.pth.evaluations.json").read_text())
    assert list(recorded) == ["center"] and recorded["center"]["weights"] == "torchvision"
    assert "std [0.229, 0.224, 0.225]" in recorded["center"]["normalization"]
    assert (recorded["center"]["iteration"], recorded["center"]["crop"]) == (None, 224)


BAD_INPUTS = {
    "another net": (["resnet34"], "last.ckpt holds a resnet18, not a resnet34: pass resnet18 as MODEL"),
    "a CIFAR checkpoint": (["resnet18", "--checkpoint", "{cifar}"], "is a cifar10 checkpoint \\(resnet20\\)"),
    "an unreadable file": (["resnet18", "--checkpoint", "{garbage}"], "garbage.ckpt is not a readable checkpoint"),
    "not a checkpoint": (["resnet18", "--checkpoint", "{other}"], "other.pt is no ResNet state dict"),
    "no file": (["resnet18", "--checkpoint", "{missing}"], "no checkpoint at .*missing.ckpt"),
    "an unknown protocol": (["resnet18", "--protocol", "12crop"], "argument --protocol: invalid choice: '12crop'"),
    "fewer classes": (["resnet18", "--subset", "2"], "trained on 3 classes, not the 2 of "),
    "other classes": (["resnet18", "--data", "{renamed}"], "trained on 3 classes, not the 3 of .*or in another order"),
    "no data root": (["resnet18", "--data", "{nowhere}"], "ImageNet root .*nowhere is not a directory; pass --data"),
    "a zero limit": (["resnet18", "--limit", "0"], "--limit must be at least 1, got 0"),
    "torchvision weights without data": (["resnet18", "--checkpoint", "{torchvision}"], "pass --data ROOT"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_evaluate_refuses_a_bad_input_in_one_line_and_writes_nothing(
    trained_run, imagenet_root, tmp_path, capsys, case
):
    run = copy_run(trained_run, tmp_path / "run")
    files = {
        "cifar": tmp_path / "cifar.ckpt",
        "garbage": tmp_path / "garbage.ckpt",
        "other": tmp_path / "other.pt",
        "missing": tmp_path / "missing.ckpt",
        "nowhere": tmp_path / "nowhere",
        "renamed": tmp_path / "renamed",
        "torchvision": tmp_path / "resnet18.pth",
    }
    torch.save({"hyper_parameters": {"spec": TrainSpec(model="resnet20").to_dict()}, "state_dict": {}}, files["cifar"])
    files["garbage"].write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, files["other"])
    shutil.copytree(imagenet_root, files["renamed"])
    for split in ("train", "val"):
        (files["renamed"] / split / WNIDS[2]).rename(files["renamed"] / split / "n09999999")
    if case == "torchvision weights without data":
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), files["torchvision"])
    args, message = BAD_INPUTS[case]
    args = [a.format(**files) for a in args]
    defaults = {"--checkpoint": str(run / "checkpoints" / "last.ckpt"), "--protocol": "center"}
    argv = ["evaluate", *args, *(x for k, v in defaults.items() if k not in args for x in (k, v)), "--no-progress"]
    before = tree(tmp_path)
    assert status(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("resnet-repro evaluate: error: ")
    assert re.search(message, err), err
    assert tree(tmp_path) == before  # no run.json change, no record or probabilities beside the checkpoint


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_evaluate_on_cuda_without_a_cuda_device_is_one_line(trained_run, capsys):
    checkpoint = str(trained_run / "checkpoints" / "last.ckpt")
    before = tree(trained_run)
    assert main(["evaluate", "resnet18", "--checkpoint", checkpoint, "--protocol", "center", "--device", "cuda"]) == 2
    assert "this machine has no CUDA device: use --device cpu" in capsys.readouterr().err
    assert tree(trained_run) == before
