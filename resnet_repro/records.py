"""The only reader of run logs: run directories -> a `summary` and a `curves` pandas DataFrame.

Plots and tables are pure functions of these two frames (see plotting.py, tables.py).
"""

from pathlib import Path

import pandas as pd

from resnet_repro.errors import NoRunsError, UserError
from resnet_repro.models import model_info
from resnet_repro.rundir import RunDir

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
    # A resumed run keeps its earlier logs as metrics-0.csv, metrics-1.csv, ... (see rundir.py).
    frames = [_read_csv(p) for p in RunDir(run_dir).metrics_parts() if p.stat().st_size]
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
    return record, curves[["run_id", "model", "seed", "step", *METRICS]]


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable metrics log ({str(exc).splitlines()[0]}); {_MENDING}") from None


_MENDING = "restore it (results/runs/ holds the committed copies) or delete its run directory to retrain it"


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
        return f"imagenet ({source.get('kind')}, {source.get('train')} train / {source.get('val')} val{subset}) sha256:{str(source['sha256'])[:8]}"
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
        record, run_curves = read_run(run_dir)
        if finished_only and record.get("status") != "finished":
            continue
        rows.append(summary_row(record))
        curves.append(run_curves)
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
