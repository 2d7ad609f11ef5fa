"""benchmarks/learning_check.py: its ILSVRC-layout tree built from a tiny CIFAR-10 archive, and its argument errors."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from resnet_repro.data.sources import CIFAR10_CLASSES
from resnet_repro.errors import UserError

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "learning_check.py"


@pytest.fixture(scope="module")
def check():
    """The script, imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("learning_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _images(out: Path, folder: str) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted((out / folder).iterdir())}


def test_learning_check_builds_the_ilsvrc_layout(check, tiny_cifar_archive, tmp_path):
    out = tmp_path / "tree"
    tree = check.build_tree(tiny_cifar_archive, out, 3, 2, progress=False)
    assert not tree["reused"] and tree["images"] == {"train": 30, "val": 20}
    train, val = _images(out, "train"), _images(out, "val")
    assert list(train) == list(val) == sorted(CIFAR10_CLASSES)
    # The first N of each class by file name, named <class>_<stem>.JPEG as ILSVRC's files.
    assert train["cat"] == ["cat_0000.JPEG", "cat_0001.JPEG", "cat_0002.JPEG"]
    assert val["cat"] == ["cat_0000.JPEG", "cat_0001.JPEG"]
    with Image.open(out / "train" / "cat" / "cat_0000.JPEG") as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (256, 256), "RGB")
    marker = json.loads((out / check.MARKER).read_text())
    assert marker["what"] == check.WHAT and marker["jpeg_quality"] == 90 and marker["shorter_side"] == 256
    assert not (tmp_path / "tree.partial").exists()


def test_learning_check_reuses_a_complete_tree_and_rebuilds_otherwise(check, tiny_cifar_archive, tmp_path):
    out = tmp_path / "tree"
    check.build_tree(tiny_cifar_archive, out, 2, 1, progress=False)
    first = (out / "train" / "dog" / "dog_0000.JPEG").stat().st_mtime_ns
    assert check.build_tree(tiny_cifar_archive, out, 2, 1, progress=False)["reused"]
    assert (out / "train" / "dog" / "dog_0000.JPEG").stat().st_mtime_ns == first
    # Other counts: the tree is rebuilt in full (the marker says it is this script's).
    assert not check.build_tree(tiny_cifar_archive, out, 1, 1, progress=False)["reused"]
    assert _images(out, "train")["dog"] == ["dog_0000.JPEG"]
    # An interrupted build (a staging folder, no marker) is thrown away and done again.
    (tmp_path / "tree.partial" / "train" / "dog").mkdir(parents=True)
    (tmp_path / "tree.partial" / "train" / "dog" / "junk.JPEG").write_bytes(b"half")
    (out / check.MARKER).unlink()
    (out / "train").rename(tmp_path / "elsewhere")
    (out / "val").rename(tmp_path / "elsewhere-val")
    assert not check.build_tree(tiny_cifar_archive, out, 1, 1, progress=False)["reused"]
    assert _images(out, "train")["dog"] == ["dog_0000.JPEG"] and not (tmp_path / "tree.partial").exists()


def test_learning_check_reads_a_folder_too(check, make_imagefolder, tmp_path):
    tree = check.build_tree(make_imagefolder(train=2, test=1, ext="jpg"), tmp_path / "tree", 2, 1, progress=False)
    assert tree["images"] == {"train": 20, "val": 10} and "listing_sha256" in tree["source"]


def test_learning_check_refuses_a_folder_it_did_not_build(check, tiny_cifar_archive, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a tree this script built"):
        check.build_tree(tiny_cifar_archive, tmp_path / "mine", 1, 1, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_learning_check_train_command(check, tmp_path):
    args = check.build_parser().parse_args(["--archive", "x.tar.gz", "--runs", str(tmp_path)])
    arguments = check.train_arguments(args, tmp_path / "tree", 10, "run")
    flags = dict(zip(arguments[2::2], arguments[3::2], strict=False))
    assert arguments[:2] == ["train", "resnet18"] and flags["--subset"] == "10" and flags["--wandb"] == "off"
    assert flags["--milestones"] == "150,225" and "--resume" not in arguments
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert "--resume" in check.train_arguments(args, tmp_path / "tree", 10, "run")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--archive", "{tmp}/missing.tar.gz"], "does not exist"),
        (["--train-per-class", "9"], "fewer than 9; pass --train-per-class 8 or fewer"),
        (["--train-per-class", "2", "--val-per-class", "5"], "pass --val-per-class 4 or fewer"),
        (["--iterations", "0"], "--iterations must be at least 1"),
        (["--milestones-percent", "75,50"], "increasing percentages"),
        (["--milestones-percent", "50,100"], "increasing percentages"),
    ],
)
def test_learning_check_argument_errors(check, tiny_cifar_archive, tmp_path, capsys, flags, message):
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    argv = ["--archive", str(tiny_cifar_archive), "--out", str(tmp_path / "tree"), "--runs", str(tmp_path / "runs")]
    assert check.main([*argv, *flags, "--build-only", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("learning_check: error: ") and message in err
    assert not (tmp_path / "runs").exists()
