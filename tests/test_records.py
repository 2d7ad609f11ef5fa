"""Tests for resnet_repro.records: run directories (run.json + Lightning CSV logs) -> summary and curves."""

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_repro.errors import UserError
from resnet_repro.records import METRICS, data_copy, load_runs, read_run, summary_row

# Lightning's CSVLogger layout: one header over the union of keys, train and eval rows of a step apart,
# `step` = optimizer steps completed before the logging call (iteration - 1).
HEADER = ["epoch", "lr", "step", "test/error", "test/loss", "throughput", "train/error", "train/loss"]


def csv_rows(*rows: dict) -> str:
    lines = [",".join(HEADER)]
    lines += [",".join("" if row.get(col) is None else str(row[col]) for col in HEADER) for row in rows]
    return "\n".join(lines) + "\n"


def train_row(step: int, error: float, lr: float = 0.1) -> dict:
    return {"epoch": 0, "lr": lr, "step": step, "throughput": 900.0, "train/error": error, "train/loss": error / 40}


def eval_row(step: int, error: float) -> dict:
    return {"epoch": 0, "step": step, "test/error": error, "test/loss": error / 30}


def write_run(
    runs: Path,
    name: str,
    *,
    status: str = "finished",
    model: str = "resnet20",
    seed: int = 0,
    metrics: dict[str, str] | None = None,
    **extra,
) -> Path:
    run_dir = runs / name
    run_dir.mkdir(parents=True)
    record = {
        "run_id": name,
        "status": status,
        "spec": {"model": model, "seed": seed, "shortcut": None, "schedule": {"max_iters": 4}},
        **extra,
    }
    (run_dir / "run.json").write_text(json.dumps(record))
    for filename, text in (metrics or {}).items():
        (run_dir / filename).write_text(text)
    return run_dir


def test_read_run_merges_train_and_eval_rows_of_a_step(tmp_path):
    text = csv_rows(train_row(1, 80.0), train_row(3, 60.0), eval_row(3, 55.0))
    record, curves = read_run(write_run(tmp_path, "r", metrics={"metrics.csv": text}))
    assert record["run_id"] == "r"
    assert curves["step"].tolist() == [2, 4]
    last = curves.set_index("step").loc[4]
    assert (last["train/error"], last["test/error"], last["lr"]) == (60.0, 55.0, 0.1)
    assert math.isnan(curves.set_index("step").loc[2, "test/error"])


def test_read_run_step_is_the_iteration(tmp_path):
    # Lightning logs the metrics of iteration i (1-based) at step i - 1.
    text = csv_rows(train_row(19, 70.0), eval_row(19, 65.0), train_row(39, 50.0))
    _, curves = read_run(write_run(tmp_path, "r", metrics={"metrics.csv": text}))
    assert curves["step"].tolist() == [20, 40]


def test_read_run_has_every_metric_column_and_the_run_labels(tmp_path):
    _, curves = read_run(
        write_run(tmp_path, "r", model="plain56", seed=3, metrics={"metrics.csv": csv_rows(train_row(1, 90.0))})
    )
    assert list(curves.columns) == ["run_id", "model", "seed", "step", *METRICS]
    assert curves["val/error"].isna().all()  # not logged without a val split, but always a column
    assert (curves["run_id"].iloc[0], curves["model"].iloc[0], curves["seed"].iloc[0]) == ("r", "plain56", 3)


def test_read_run_without_metrics_gives_empty_curves(tmp_path):
    _, curves = read_run(write_run(tmp_path, "r"))
    assert len(curves) == 0 and "test/error" in curves.columns


def test_read_run_reads_the_parts_of_a_resumed_run_in_order(tmp_path):
    # training.py keeps each earlier log as metrics-K.csv; a step logged twice keeps its latest value.
    parts = {f"metrics-{k}.csv": csv_rows(train_row(2 * k + 1, 90.0 - k)) for k in range(11)}
    parts["metrics-2.csv"] = csv_rows(train_row(5, 88.0), train_row(21, 1.0))  # stale: redone after resuming
    parts["metrics-10.csv"] = csv_rows(train_row(21, 80.0))
    parts["metrics.csv"] = csv_rows(train_row(23, 70.0), eval_row(23, 69.0))
    _, curves = read_run(write_run(tmp_path, "r", metrics=parts))
    by_step = curves.set_index("step")
    assert by_step.index.tolist() == list(range(2, 25, 2))
    assert by_step.loc[22, "train/error"] == 80.0  # metrics-10 is newer than metrics-2, though it sorts first as text
    assert by_step.loc[24, "test/error"] == 69.0


def test_summary_row_has_last_iterate_metrics_and_provenance():
    record = {
        "run_id": "resnet110-s1-abc",
        "status": "finished",
        "iterations": 64_000,
        "params": 1_700_000,
        "spec": {"model": "resnet110", "seed": 1, "shortcut": None, "schedule": {"max_iters": 64_000}},
        "final": {"train/error": 0.5, "test/error": 6.43, "test/loss": 0.3},
        "data_source": {"jpeg_copy": True, "sha256": "fdf0b4f6a0ce0e8a5d81"},
        "commit": "abc123",
        "warmup_end_iter": 400,
        "wall_time_s": 3600.0,
    }
    row = summary_row(record)
    assert (row["model"], row["depth"], row["residual"], row["shortcut"], row["seed"]) == (
        "resnet110",
        110,
        True,
        "A",
        1,
    )
    assert (row["final_test_error"], row["final_train_error"], row["warmup_end_iter"]) == (6.43, 0.5, 400)
    assert row["data_copy"] == "cifar10-jpg q75 sha256:fdf0b4f6" and row["commit"] == "abc123"
    assert summary_row({**record, "spec": {**record["spec"], "model": "plain20"}})["residual"] is False
    parts = [{"commit": "abc123", "hardware": "CPU A"}, {"commit": "def456", "hardware": "CPU A"}]
    resumed = summary_row({**record, "parts": [*parts, {"commit": "abc123", "hardware": "CPU B"}]})
    assert (resumed["commit"], resumed["hardware"]) == ("abc123 + def456", "CPU A + CPU B")  # each once, in order


@pytest.mark.parametrize(
    "source, label",
    [
        ({}, "unknown"),
        ({"jpeg_copy": True, "sha256": "fdf0b4f6a0"}, "cifar10-jpg q75 sha256:fdf0b4f6"),
        ({"jpeg_copy": False, "kind": "torchvision", "sha256": "1234567890"}, "cifar10 (torchvision) sha256:12345678"),
    ],
)
def test_data_copy_says_which_copy_a_run_used(source, label):
    assert data_copy(source) == label


def test_load_runs_keeps_finished_runs_unless_asked(tmp_path):
    metrics = {"metrics.csv": csv_rows(train_row(3, 50.0), eval_row(3, 45.0))}
    write_run(tmp_path, "a", metrics=metrics, final={"test/error": 45.0})
    write_run(tmp_path, "b", metrics=metrics, status="interrupted")
    write_run(tmp_path, "c", metrics=metrics, seed=1, final={"test/error": 44.0})
    summary, curves = load_runs(tmp_path)
    assert summary["run_id"].tolist() == ["a", "c"] and set(curves["run_id"]) == {"a", "c"}
    assert summary.set_index("run_id").loc["c", "final_test_error"] == 44.0
    summary, _ = load_runs(tmp_path, finished_only=False)
    assert summary["run_id"].tolist() == ["a", "b", "c"]
    summary, curves = load_runs(tmp_path, ["c"])
    assert summary["run_id"].tolist() == ["c"] and curves["step"].tolist() == [4]


def test_load_runs_without_runs_says_what_to_do(tmp_path):
    write_run(tmp_path, "a", status="running")
    with pytest.raises(UserError, match="no finished runs"):
        load_runs(tmp_path)
    with pytest.raises(UserError, match="no runs"):
        load_runs(tmp_path / "empty", finished_only=False)


def test_summary_row_shortcut_is_none_for_a_plain_net_and_the_option_for_a_residual_one():
    def row(model: str, shortcut=None) -> dict:
        spec = {"model": model, "seed": 0, "shortcut": shortcut, "schedule": {"max_iters": 4}}
        return summary_row({"run_id": model, "status": "finished", "spec": spec})

    assert row("plain20")["shortcut"] is None  # a plain net has no shortcuts, not option A
    assert row("resnet20")["shortcut"] == "A"  # the CIFAR default
    assert row("resnet20", "B")["shortcut"] == "B"


@pytest.mark.parametrize(
    "filename, content",
    [
        ("metrics.csv", csv_rows(train_row(1, 80.0)) + "0,0.1,3,,,900.0,60.0,1.5,7,7\n"),  # too many fields
        ("metrics.csv", bytes(range(128, 256)) * 8),  # binary garbage
        ("metrics-0.csv", b"\x00\xff\xfe" * 100),
        ("run.json", '{"run_id": "b", "status": "fini'),  # cut off
    ],
    ids=["too many fields", "binary garbage", "garbage in an earlier part", "truncated run.json"],
)
def test_load_runs_corrupt_log_is_a_user_error_naming_it(tmp_path, filename, content):
    metrics = {"metrics.csv": csv_rows(train_row(3, 50.0), eval_row(3, 45.0))}
    write_run(tmp_path, "a", metrics=metrics)
    corrupt = write_run(tmp_path, "b", metrics=metrics) / filename
    corrupt.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as raised:
        load_runs(tmp_path)
    assert str(corrupt) in str(raised.value) and "\n" not in str(raised.value)
    assert "restore it" in str(raised.value)  # and says how to mend it


GOOD_LOG = csv_rows(train_row(1, 80.0), eval_row(1, 79.0), train_row(3, 60.0), eval_row(3, 55.0)).replace("\n", "\r\n")


@pytest.mark.parametrize(
    "content, problem",
    [
        (GOOD_LOG.split("\r\n", 1)[1], "its first line is not the header naming the columns (no `step` column)"),
        (GOOD_LOG.replace(",60.0,", ",6O.0,"), "line 4: train/error is '6O.0', not a number"),
        (GOOD_LOG[:-30], "its last line is cut off (the write that made it was interrupted)"),
        ("", "it is empty"),
        (GOOD_LOG + "0,0.1,5,,\r\n", "line 6 has 5 fields, the header 8"),
        (GOOD_LOG + ",0.1,,,,900.0,50.0,1.2\r\n", "line 6: step is '', not an iteration count"),
    ],
    ids=["no header", "a word for a number", "cut off", "empty", "a short row", "no step"],
)
def test_read_run_refuses_a_damaged_metrics_log_naming_it_and_what_is_wrong(tmp_path, content, problem):
    run_dir = write_run(tmp_path, "r", metrics={"metrics-0.csv": GOOD_LOG, "metrics.csv": content})
    with pytest.raises(UserError) as raised:
        read_run(run_dir)
    message = str(raised.value)
    assert message.startswith(f"{run_dir / 'metrics.csv'} is not a usable metrics log: {problem}; restore it")
    assert "\n" not in message


def test_read_run_reads_lightnings_own_log_with_its_crlf_rows(tmp_path):
    _, curves = read_run(write_run(tmp_path, "r", metrics={"metrics.csv": GOOD_LOG}))
    assert curves["step"].tolist() == [2, 4] and curves["test/error"].tolist() == [79.0, 55.0]


@st.composite
def damaged_logs(draw) -> bytes:
    """A metrics log as a kill, a full disk or an editor leaves it: cut off, a span replaced, or lines dropped."""
    data = GOOD_LOG.encode()
    kind = draw(st.sampled_from(["cut", "replaced", "dropped"]))
    if kind == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "dropped":
        lines = data.split(b"\r\n")
        keep = draw(st.lists(st.booleans(), min_size=len(lines), max_size=len(lines)))
        return b"\r\n".join(line for line, kept in zip(lines, keep, strict=True) if kept)
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 8)))
    return (
        data[:start]
        + draw(st.binary(max_size=6) | st.text(",.-e0123456789naif\r\n ", max_size=6).map(str.encode))
        + data[end:]
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged_logs())
def test_read_run_gives_numeric_curves_or_a_user_error_naming_the_log(tmp_path, data):
    run_dir = tmp_path / "r"
    if not run_dir.exists():
        write_run(tmp_path, "r")
    (run_dir / "metrics.csv").write_bytes(data)
    try:
        _, curves = read_run(run_dir)
    except UserError as exc:
        assert str(run_dir / "metrics.csv") in str(exc) and "\n" not in str(exc)
        return
    assert curves["step"].dtype.kind == "i" and (curves["step"] >= 1).all()
    assert all(curves[m].dtype.kind == "f" for m in METRICS)
