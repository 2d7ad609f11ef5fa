"""The only reader of run logs: run directories -> a `summary` and a `curves` pandas DataFrame.

Plots and tables are pure functions of these two frames (see plotting.py, tables.py).
"""

import csv
import io
from pathlib import Path

import pandas as pd

from resnet_repro.errors import NoRunsError, UserError
from resnet_repro.models import model_info
from resnet_repro.rundir import MENDING, RunDir

METRICS = [
    "train/error",
    "train/loss",
    "test/error",
    "test/top5_error",
    "test/loss",
    "val/error",
    "val/top5_error",
    "val/loss",
    "lr",
    "throughput",
]


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """One run's record (run.json) and its curves (metrics.csv, one row per logged iteration)."""
    record = RunDir(run_dir).read_record()
    if record is None:
        raise UserError(f"{run_dir} has no run.json: it is not a run directory, or its run never started")
    return record, read_curves(run_dir, record)


def read_curves(run_dir: Path, record: dict) -> pd.DataFrame:
    """The curves of the run whose (checked) record is `record`: its metrics*.csv parts, one row per iteration."""
    # A resumed run keeps its earlier logs as metrics-0.csv, metrics-1.csv, ... (see rundir.py).
    frames = [_read_csv(p) for p in RunDir(run_dir).metrics_parts()]
    raw = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"step": []})
    # Lightning writes train and eval metrics of one step on separate rows, and a resumed run may log a
    # step twice (after its last checkpoint and again after resuming): keep the last value per step.
    present = [m for m in METRICS if m in raw.columns]
    curves = raw[["step", *present]].groupby("step", as_index=False).last() if len(raw) else raw
    for metric in METRICS:
        if metric not in curves.columns:
            curves[metric] = float("nan")
    # Lightning's `step` counts optimizer steps taken before the logging call: iteration = step + 1.
    curves = curves.assign(
        step=curves["step"].astype(int) + 1,
        run_id=record["run_id"],
        model=record["spec"]["model"],
        seed=record["spec"]["seed"],
    )
    return curves[["run_id", "model", "seed", "step", *METRICS]]


def _read_csv(path: Path) -> pd.DataFrame:
    """The `step` and METRICS columns of one Lightning metrics log, every cell checked.

    Parsed here rather than by pandas, which takes a first data row for a header, fills the missing cells of a
    row cut short with NaN and keeps a column with a stray word in it as text: each would be drawn as if fine.
    """
    try:
        text = path.read_bytes().decode()
        problem = "it is empty" if not text else None
        if problem is None and not text.endswith("\n"):  # Lightning ends every row with one: a write cut short
            problem = "its last line is cut off (the write that made it was interrupted)"
        rows = list(csv.reader(io.StringIO(text))) if problem is None else []
    except (UnicodeDecodeError, csv.Error) as exc:
        problem = f"not a readable metrics log ({str(exc).splitlines()[0]})"
        rows = []
    header = rows[0] if rows else []
    if problem is None and "step" not in header:
        problem = "its first line is not the header naming the columns (no `step` column)"
    columns = {name: header.index(name) for name in ["step", *METRICS] if name in header}
    values: dict[str, list[float]] = {name: [] for name in columns}
    for line, row in enumerate(rows[1:] if problem is None else [], start=2):
        if not row:
            continue  # a blank line carries nothing
        if len(row) != len(header):
            problem = f"line {line} has {len(row)} fields, the header {len(header)}"
            break
        for name, index in columns.items():
            cell = row[index].strip()
            try:
                number = float(cell) if cell else float("nan")
            except ValueError:
                problem = f"line {line}: {name} is {cell[:20]!r}, not a number"
                break
            if name == "step" and not (0 <= number < 2**53 and number.is_integer()):  # exact as a float
                problem = f"line {line}: step is {cell[:20]!r}, not an iteration count"
                break
            values[name].append(number)
        if problem is not None:
            break
    if problem is not None:
        raise UserError(f"{path} is not a usable metrics log: {problem}; {MENDING}")
    return pd.DataFrame(values, columns=list(columns), dtype=float)


def summary_row(record: dict) -> dict:
    """The flat row tables are built from: spec, provenance and last-iterate metrics."""
    spec, final, source = record["spec"], record.get("final", {}), record.get("data_source", {})
    model = spec["model"]
    info = model_info(model)
    return {
        "run_id": record["run_id"],
        "model": model,
        "family": info.family,
        "depth": info.depth,
        "residual": info.residual,
        # The option the net was built with: the spec's, else the model's default (None for a plain net).
        "shortcut": spec.get("shortcut") or info.shortcut,
        "warmup": spec["schedule"].get("warmup", "auto"),
        "seed": spec["seed"],
        "params": record.get("params"),
        "profile": record.get("profile", "custom"),
        "max_iters": spec["schedule"]["max_iters"],
        "status": record.get("status"),
        "iterations": record.get("iterations"),
        "final_train_error": final.get("train/error"),
        "final_test_error": final.get("test/error"),
        "final_test_top5_error": final.get("test/top5_error"),
        "final_test_loss": final.get("test/loss"),
        "final_val_error": final.get("val/error"),
        "wall_time_s": record.get("wall_time_s"),
        "data_copy": data_copy(source),
        # A run trained in several parts (resumed across sessions) names every part's commit and hardware.
        "commit": _of_every_part(record, "commit"),
        "hardware": _of_every_part(record, "hardware"),
        "warmup_end_iter": record.get("warmup_end_iter"),
        # How it ran, for the deviation ledger: BN normalises over batch_size / world_size images.
        "batch_size": spec.get("batch_size"),
        "world_size": record.get("world_size", 1),
        "precision": record.get("hardware_flags", {}).get("precision", "32-true"),
        "compile": record.get("hardware_flags", {}).get("compile", False),
        "precise_bn_images": record.get("precise_bn_images"),
        "lr_drops": ",".join(map(str, record.get("lr_drops") or [])),
        # Errors of the last iterate under the ImageNet test protocols it was scored with (`evaluations`).
        **{
            f"{protocol}_{k}_error": result.get(f"{k}_error")
            for protocol, result in sorted(record.get("evaluations", {}).items())
            for k in ("top1", "top5")
        },
    }


PART_SEPARATOR = " + "  # not in a commit or hardware string ("; " is, for DDP)


def _of_every_part(record: dict, key: str) -> str | None:
    values = [part.get(key) for part in record.get("parts", [])] or [record.get(key)]
    unique = [str(v) for v in dict.fromkeys(values) if v is not None]
    return PART_SEPARATOR.join(unique) if unique else None


def data_copy(source: dict) -> str:
    """A short label of the data a run used, e.g. 'cifar10-jpg q75 sha256:fdf0b4f6'."""
    if not source:
        return "unknown"
    if "listing_sha256" in source:  # ImageNet: a folder tree, identified by its listing
        subset = f", first {source['subset']} classes" if source.get("subset") else ""
        return f"imagenet ({source.get('kind')}, {source.get('train')} train / {source.get('val')} val{subset}) sha256:{str(source.get('sha256'))[:8]}"
    label = "cifar10-jpg q75" if source.get("jpeg_copy") else f"cifar10 ({source.get('kind', 'unknown')})"
    return f"{label} sha256:{str(source.get('sha256', ''))[:8]}"


def load_runs(
    runs_dir: Path, run_ids: list[str] | None = None, *, finished_only: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary and curves of the runs under `runs_dir` (optionally only `run_ids`)."""
    runs_dir = Path(runs_dir)
    dirs = sorted(p.parent for p in runs_dir.glob("*/run.json"))
    if run_ids is not None:
        wanted = set(run_ids)
        dirs = [d for d in dirs if d.name in wanted]
    rows, curves = [], []
    for run_dir in dirs:
        record = RunDir(run_dir).read_record()
        if record is None or (finished_only and record["status"] != "finished"):
            continue  # a run another process trains now may be mid-way through a write of its log: not read
        rows.append(summary_row(record))
        curves.append(read_curves(run_dir, record))
    if not rows:
        what = "finished runs" if finished_only else "runs"
        raise NoRunsError(f"no {what} logged under {runs_dir}: train them first (resnet-repro run ARTIFACT)")
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def load_responses(runs_dir: Path, run_ids: list[str]) -> pd.DataFrame:
    """Fig. 7's layer responses of finished runs: one row per (run, layer), layers numbered from 1."""
    rows = []
    for run in run_ids:
        record = RunDir(Path(runs_dir) / run).read_record()
        if record is None:
            continue
        for index, response in enumerate(record.get("layer_responses") or [], start=1):
            rows.append(
                {
                    "run_id": run,
                    "model": record["spec"]["model"],
                    "seed": record["spec"]["seed"],
                    "layer_index": index,
                    "layer": response["layer"],
                    "std": response["std"],
                }
            )
    return pd.DataFrame(rows, columns=["run_id", "model", "seed", "layer_index", "layer", "std"])
