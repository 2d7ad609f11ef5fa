"""Tests for resnet_repro.files: atomic writes that a full disk cannot half-do, and standard JSON."""

import builtins
import errno
import json
import math
import threading
from pathlib import Path

import pytest
import torch

from resnet_repro import files
from resnet_repro.cli import main
from resnet_repro.files import AtomicCheckpointIO, atomic_path, write_json


class _FillsUp:
    """A file whose disk fills midway through a write: half the bytes land, then ENOSPC."""

    def __init__(self, handle, path):
        self._handle, self._path = handle, path

    def write(self, data) -> int:
        self._handle.write(bytes(data)[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device", str(self._path))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.close()


def full_disk(monkeypatch) -> None:
    """From now on every file resnet_repro.files opens for writing hits a full disk."""

    def opener(file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return _FillsUp(handle, file) if "w" in mode else handle

    monkeypatch.setattr(files, "open", opener, raising=False)  # shadows the builtin in that module only


def checkpoint(step: int) -> dict:
    return {"global_step": step, "state_dict": {"weight": torch.full((256, 256), float(step))}}


def test_atomic_checkpoint_io_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(checkpoint(4), last)
    before = last.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(OSError) as raised:
        io.save_checkpoint(checkpoint(8), last)
    assert raised.value.errno == errno.ENOSPC
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"], "a temp file was left beside last.ckpt"


def test_atomic_checkpoint_io_full_disk_on_the_first_save_leaves_no_file(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    with pytest.raises(OSError):
        AtomicCheckpointIO().save_checkpoint(checkpoint(4), tmp_path / "checkpoints" / "last.ckpt")
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_write_json_full_disk_keeps_the_previous_record(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    write_json(path, {"status": "running", "iterations": 4})
    before = path.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(OSError):
        write_json(path, {"status": "finished", "iterations": 8, "padding": "x" * 10_000})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def _reject_non_standard(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def test_write_json_writes_nan_and_infinities_as_null(tmp_path):
    path = tmp_path / "run.json"
    write_json(
        path,
        {
            "final": {"test/loss": math.nan, "train/loss": math.inf, "test/error": 12.5},
            "curve": [1.0, -math.inf, (math.nan, 2)],
            "where": Path("runs/x"),
        },
    )
    # Python's own parser accepts NaN and Infinity; a standard one (jq, JavaScript) would reject the file.
    data = json.loads(path.read_text(), parse_constant=_reject_non_standard)
    assert data == {
        "final": {"test/loss": None, "train/loss": None, "test/error": 12.5},
        "curve": [1.0, None, [None, 2]],
        "where": "runs/x",
    }


def test_two_threads_writing_one_path_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "record.json"
    both_inside = threading.Barrier(2)
    temporaries = []

    def write(text):
        with atomic_path(target) as tmp:
            temporaries.append(tmp)
            tmp.write_text(text * 1000)
            both_inside.wait(timeout=10)  # both temporary files exist at once

    threads = [threading.Thread(target=write, args=(text,)) for text in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert temporaries[0] != temporaries[1]
    assert target.read_text() in ("a" * 1000, "b" * 1000)
    assert list(tmp_path.iterdir()) == [target]


LONG_NAME = "x" * 300  # over the 255 bytes a name takes on Linux filesystems
LONG_PATH = "/".join(["y" * 200] * 21)  # about 4.2 KB: over the 4096 bytes a path takes


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["train", "resnet8", "--out", "afile"], "cannot write in afile (--out): it is a file, not a directory"),
        (["train", "resnet8", "--out", "afile/runs"], "cannot write in afile/runs (--out): afile is a file, not a"),
        (["train", "resnet8", "--out", "runs", "--name", LONG_NAME], "(--name): the name xxxxxxxxxxxxxxxxxx...xx"),
        (["train", "resnet8", "--out", LONG_PATH], "(--out): its absolute path is 4"),
        (["run", "fig1", "--profile", "smoke", "--runs-dir", "afile"], "cannot write in afile (--runs-dir): it is a"),
        (["run", "fig1", "--profile", "smoke", "--results-dir", "afile"], "cannot write in afile (--results-dir): it"),
        (["run", "fig1", "--profile", "smoke", "--runs-dir", LONG_PATH], "(--runs-dir): its absolute path is 4"),
        (["report", "fig1", "--runs-dir", "runs-here", "--results-dir", "afile"], "in afile (--results-dir): it is"),
        (["report", "fig1", "--runs-dir", "runs-here", "--results-dir", LONG_NAME], "the name xxxxxxxxxxxxxxxxxx."),
    ],
    ids=[
        "train out file",
        "train out below a file",
        "train name",
        "train path",
        "run runs-dir",
        "run results-dir",
        "run path",
        "report results-dir",
        "report name",
    ],
)
def test_commands_refuse_an_output_directory_that_cannot_be_one_in_one_line_creating_nothing(
    tmp_path, monkeypatch, capsys, argv, problem
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "runs-here").mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert main([*argv, "--wandb", "off"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnet-repro {argv[0]}: error: "), lines
    assert problem in lines[0] and len(lines[0]) < 500  # a 4 KB path is cut in its middle
    assert sorted(tmp_path.rglob("*")) == before


def test_check_output_dir_takes_a_missing_or_existing_directory(tmp_path):
    files.check_output_dir(tmp_path, "--out")
    files.check_output_dir(tmp_path / "new" / "deeper", "--out")
    assert list(tmp_path.iterdir()) == []  # a check creates nothing
