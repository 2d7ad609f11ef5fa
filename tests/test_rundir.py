"""Tests for resnet_repro.rundir: the lock, the record, and what a restart clears."""

import copy
import datetime
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_repro import files, rundir
from resnet_repro.errors import UserError
from resnet_repro.rundir import RunDir
from resnet_repro.spec import TrainSpec

# A real record, as training writes it: a finished run committed with its logs (Fig. 7's layer responses too).
REAL_RECORD = min((Path(__file__).resolve().parents[1] / "results" / "runs").glob("resnet20-*/run.json"))


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


def killed_while_writing(path: Path) -> Path:
    """What kill -9 leaves while atomic_path writes `path` (a checkpoint, run.json): its temporary file."""
    code = (
        "import os, signal, sys\nfrom resnet_repro.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half a checkpoint')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", code, str(path)]).returncode == -9
    (left,) = path.parent.glob(f".{path.name}.*.tmp")
    return left


def test_rundir_lock_removes_the_temporary_files_of_writers_killed_mid_write(tmp_path):
    """A run starts or resumes under its lock: a dead writer's half-written checkpoint or record goes then."""
    run = RunDir(tmp_path / "run")
    run.checkpoint.parent.mkdir(parents=True)
    checkpoint, record = killed_while_writing(run.checkpoint), killed_while_writing(run.record_path)
    pid = int(files.TEMP_NAME.fullmatch(checkpoint.name)["pid"])
    older = run.checkpoint.with_name(f".last.ckpt.tmp-{pid}-1")  # as earlier versions named it: no host to judge by
    older.write_bytes(b"half a checkpoint")
    old = time.time() - 2 * files.STALE_TEMP_SECONDS
    os.utime(older, (old, old))
    live = run.checkpoint.with_name(f".last.ckpt.{files.host()}.{os.getpid()}.1.tmp")  # a live writer's: kept
    live.write_bytes(b"being written")
    run.lock()
    run.unlock()
    assert not checkpoint.exists() and not record.exists() and not older.exists()
    assert live.exists()


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
            "status": "finished",
            "spec": {
                "model": "resnet20",
                "seed": 0,
                "schedule": {"max_iters": 4},
                "data": {"data": "/data/cifar/cifar10-jpg.tar.gz", "root": "/scratch/cache"},
            },
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


def written(tmp_path: Path, record) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(exist_ok=True)
    run.record_path.write_text(record if isinstance(record, str) else json.dumps(record))
    return run


def real_record() -> dict:
    return json.loads(REAL_RECORD.read_text())


def without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda r: [1, 2, 3], "it holds a list, not an object of fields"),
        (lambda r: {}, "`run_id` is missing"),
        (lambda r: without(r, "spec"), "`spec` is missing"),
        (lambda r: {**r, "final": None}, "`final` should be an object, got null"),
        (lambda r: {**r, "spec": "resnet20"}, "`spec` should be an object, got a string ('resnet20')"),
        (lambda r: {**r, "status": "done"}, "`status` should be one of running, finished, interrupted, diverged"),
        (lambda r: {**r, "spec": {**r["spec"], "model": "resnet21"}}, "`spec.model` should be a model name"),
        (lambda r: {**r, "final": {"test/error": "12%"}}, "`final.test/error` should be a number, got a string"),
        (lambda r: {**r, "layer_responses": [{"layer": "x"}]}, "`layer_responses[0].std` is missing"),
        (lambda r: {**r, "spec": {**r["spec"], "colour": 1}}, "`spec` does not describe a run"),
    ],
    ids=["a list", "empty", "no spec", "final null", "spec a string", "status", "model", "final", "responses", "spec"],
)
def test_rundir_read_record_refuses_a_record_of_the_wrong_shape_naming_it_and_what_is_wrong(tmp_path, damage, problem):
    run = written(tmp_path, damage(real_record()))
    with pytest.raises(UserError) as raised:
        run.read_record()
    message = str(raised.value)
    assert message.startswith(f"{run.record_path} is not a valid run record: {problem}")
    assert "\n" not in message and message.endswith(rundir.MENDING)


def test_rundir_read_record_accepts_a_real_record_and_a_minimal_one(tmp_path):
    assert written(tmp_path, real_record()).read_record() == real_record()
    minimal = {
        "run_id": "r",
        "status": "running",
        "spec": {"model": "resnet8", "seed": 0, "schedule": {"max_iters": 4}},
    }
    assert written(tmp_path, minimal).read_record() == minimal


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def paths_in(value, prefix=()) -> list[tuple]:
    """Every place in a JSON value, as the keys and indices that lead to it."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    return [p for key, item in items for p in [(*prefix, key), *paths_in(item, (*prefix, key))]]


@st.composite
def damaged_records(draw) -> str:
    """run.json as a crash, a bad merge or a hand edit leaves it: anything, or a real record with one field
    removed or replaced (lists, wrong types, nulls, NaN), or cut off."""
    kind = draw(st.sampled_from(["anything", "field", "field", "field", "cut"]))
    if kind == "anything":
        return json.dumps(draw(JSON))
    record = real_record()
    record["layer_responses"] = (record.get("layer_responses") or [])[:2]  # so more damage lands elsewhere
    if kind == "cut":
        text = json.dumps(record)
        return text[: draw(st.integers(0, len(text)))]
    *parents, last = draw(st.sampled_from(paths_in(record)))
    holder = record
    for key in parents:
        holder = holder[key]
    if draw(st.booleans()):
        del holder[last]
    else:
        holder[last] = draw(JSON)
    return json.dumps(record)


def use_everywhere(run: RunDir, record: dict) -> None:
    """What each reader of a record does with it: the run cache, resume, copying, report rows and captions."""
    from resnet_repro.records import load_responses, read_curves, summary_row

    hardware = types.SimpleNamespace(devices="1", num_nodes=1, precision="32-true", compile=False)
    rundir.differences(record, TrainSpec(), "0" * 64, hardware)
    rundir.outcome(record), rundir.describe_progress(record), rundir.progress(record)
    json.dumps(rundir.shareable(copy.deepcopy(record)))
    row = summary_row(record)
    assert isinstance(row["model"], str) and isinstance(row["max_iters"], int)
    read_curves(run.path, record)
    responses = load_responses(run.path.parent, [run.name])
    assert all(isinstance(s, (int, float)) for s in responses["std"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=damaged_records())
def test_rundir_read_record_gives_a_usable_record_or_a_user_error_naming_the_file(tmp_path, text):
    run = written(tmp_path, text)
    try:
        record = run.read_record()
    except UserError as exc:
        assert str(run.record_path) in str(exc) and "\n" not in str(exc)
        return
    use_everywhere(run, record)
