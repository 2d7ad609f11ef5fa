"""Tests for resnet_repro.rundir: the lock, the record, and what a restart clears."""

import datetime
import os

import pytest

from resnet_repro import rundir
from resnet_repro.errors import UserError
from resnet_repro.rundir import RunDir


def test_rundir_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    # flock conflicts between two open file descriptions, so two RunDirs of one process stand in for two processes.
    first, second = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    first.lock()
    try:
        with pytest.raises(UserError, match=rf"being trained by another process \(pid {os.getpid()} on "):
            second.lock()
    finally:
        first.unlock()
    second.lock()  # released: the next process may take it
    second.unlock()


def test_rundir_read_record_of_a_corrupt_run_json_names_it(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.record_path.write_text('{"run_id": "run", "status": "fin')  # cut off mid-write
    with pytest.raises(UserError, match="is not a readable run record") as raised:
        run.read_record()
    assert str(run.record_path) in str(raised.value)


def test_rundir_clear_removes_logs_checkpoints_and_wandb_only(tmp_path):
    run = RunDir(tmp_path / "run")
    for name in ("run.json", "metrics.csv", "metrics-0.csv", "checkpoints/last.ckpt", "wandb/run-1/files.txt"):
        (run.path / name).parent.mkdir(parents=True, exist_ok=True)
        (run.path / name).write_text("x")
    (run.path / "notes.txt").write_text("mine")
    run.lock()
    try:
        run.clear()  # under the lock, as train() calls it
    finally:
        run.unlock()
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "notes.txt"]


def test_rundir_numbers_a_resumed_runs_metrics_after_the_highest_part(tmp_path):
    run = RunDir(tmp_path / "resnet20-s0")
    run.path.mkdir()
    for name in ("metrics-1.csv", "metrics-old.csv", "metrics.csv"):  # part 0 deleted; a stray file beside them
        (run.path / name).write_text("step\n1\n")
    run.keep_previous_metrics()
    assert sorted(p.name for p in run.path.glob("metrics*.csv")) == [
        "metrics-1.csv",
        "metrics-2.csv",
        "metrics-old.csv",
    ]
    assert [p.name for p in run.metrics_parts()] == ["metrics-1.csv", "metrics-2.csv"]


def test_rundir_copy_logs_cuts_machine_paths_to_file_names(tmp_path):
    run = RunDir(tmp_path / "runs" / "resnet20-s0")
    run.path.mkdir(parents=True)
    run.write_record(
        {
            "run_id": "resnet20-s0",
            "spec": {"data": {"data": "/data/cifar/cifar10-jpg.tar.gz", "root": "/scratch/cache"}},
            "data_source": {"path": "/data/cifar/cifar10-jpg.tar.gz", "cache": "/root/.cache/x/cifar10-ab.pt"},
        }
    )
    (run.path / "metrics.csv").write_text("step\n1\n")
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    run.copy_logs(tmp_path / "results" / "runs")
    copied = RunDir(tmp_path / "results" / "runs" / "resnet20-s0")
    record = copied.read_record()
    assert record["spec"]["data"] == {"data": "cifar10-jpg.tar.gz", "root": "cache"}
    assert record["data_source"] == {"path": "cifar10-jpg.tar.gz", "cache": "cifar10-ab.pt"}
    assert sorted(p.name for p in copied.path.iterdir()) == ["metrics.csv", "run.json"]  # never checkpoints


def test_records_are_stamped_in_local_time_with_the_utc_offset():
    stamp = datetime.datetime.strptime(rundir.timestamp(), "%Y-%m-%dT%H:%M:%S%z")
    now = datetime.datetime.now(datetime.timezone.utc)
    assert stamp.utcoffset() is not None
    assert abs((now - stamp).total_seconds()) < 5
