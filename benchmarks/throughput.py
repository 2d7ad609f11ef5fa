"""Training throughput of the Sec. 4.2 CIFAR-10 nets: the conventional pipeline vs ours.

In one process, on the same data, model, batch (128) and precision (fp32 unless --precision), it
measures training images/s of three paths:
  1. conventional: a torchvision-style dataset of PIL images with RandomCrop(32, padding=4),
     RandomHorizontalFlip, ToTensor, Normalize, a DataLoader with 2 workers, a plain PyTorch loop (NCHW);
  2. ours + plain loop: CIFAR10DataModule's resident batches, the same loop, channels_last;
  3. ours through Lightning: `resnet_repro.training.train`, what `resnet-repro train` runs.
It also times an fp32 GEMM in the same run, so achieved GFLOP/s (3 x forward multiply-adds x 2 per
image) can be read against what this machine's matrix multiply reaches, and, on the CPU whatever --device,
the host time per iteration that path 3 adds to path 2 on a tiny net (resnet8, batch 4), where the step's
Python, hooks and logging weigh most. Every path runs under the same `torch.backends.cudnn.benchmark`
(--cudnn-benchmark, on as `resnet-repro train` sets it); a path that raises is recorded as failed in its row,
the others are measured and written, and the exit status is 1.

    python benchmarks/throughput.py            # resnet20/56/110, 3 repeats: ~13 min on 2 idle CPU cores
    python benchmarks/throughput.py --quick    # 1 repeat, fewer iterations: ~2 min
    python benchmarks/throughput.py --profile --models resnet20   # where path 3's time goes
    python benchmarks/throughput.py --precision bf16-mixed        # the same with bf16 autocast in all paths
    python benchmarks/throughput.py --compile                     # ... with torch.compile of the network

Writes results/benchmarks/throughput.md and throughput.csv (throughput-bf16-mixed.md, throughput-compile.md,
... for the speed options, whose effect on final error benchmarks/numerics.py measures). The goals on the 2-core CPU:
path 3 at least 1.25x path 1 for resnet20, within 5% of path 2, and resnet56 at >= 55% of the GEMM.
Run it on an otherwise idle machine: the tables record the share of the CPU other processes used
meanwhile and say so when the machine was busy (on 2 cores, other jobs make every number meaningless).
"""

import argparse
import dataclasses
import itertools
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resnet_repro.data.cifar10 import CIFAR10DataModule, DataConfig
from resnet_repro.data.sources import DATA_ENV, load_cifar10
from resnet_repro.errors import UserError, exit_status
from resnet_repro.flops import count_multiply_adds
from resnet_repro.models import build_model, model_info
from resnet_repro.rundir import provenance
from resnet_repro.spec import Schedule, TrainSpec
from resnet_repro.training import Hardware, RunOptions, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("resnet20", "resnet56", "resnet110")
PATHS = {
    "conventional": "(1) conventional: PIL + DataLoader, plain loop",
    "ours-plain": "(2) ours + plain loop",
    "ours-lightning": "(3) ours, Lightning (`resnet-repro train`)",
}
# The per-channel statistics conventional CIFAR-10 code copies around (path 1 only).
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
EVAL_IMAGES = 256  # path 3 always evaluates its last iterate (untimed): a small test set keeps that short
PROFILE_ITERS = 5
# The host-overhead figure: a net and batch small enough that the per-step work around the arithmetic shows.
HOST_MODEL, HOST_BATCH, HOST_WARMUP = "resnet8", 4, 5
HOST_PATHS = ("ours-plain", "ours-lightning")
CSV_COLUMNS = [
    "model",
    "path",
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "images_per_s_runs",
    "vs_conventional",
    "vs_ours_plain",
    "mult_adds",
    "gflops",
    "gemm_gflops",
    "gemm_fraction",
    "batch_size",
    "precision",
    "compile",
    "warmup_iters",
    "timed_iters",
    "repeats",
    "threads",
    "device",
    "other_cpu",
    "cudnn_benchmark",
    "error",
    "host_overhead_s",
    "host_plain_s",
    "host_lightning_s",
    "host_setup",
    "host_cpu",
    "host_error",
    "commit",
    "date",
]
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # Lightning's names


# --- the three paths ------------------------------------------------------------------------------


class PILCifar(Dataset):
    """CIFAR-10 as torchvision's CIFAR10 serves it: HWC uint8 arrays, one PIL image per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def conventional_batches(arrays, batch_size: int, device: torch.device):
    """Endless (x, y) training batches from the pipeline most CIFAR-10 code uses."""
    augment = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )
    dataset = PILCifar(arrays.train_images, arrays.train_labels, augment)
    if len(dataset) < batch_size:
        raise UserError(f"--batch-size {batch_size} exceeds the {len(dataset)} training images")
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=2, pin_memory=device.type == "cuda"
    )
    for _ in itertools.count():  # a new iterator (and new workers) per epoch, as a plain loop does
        for x, y in loader:
            yield x.to(device), y.to(device)


def our_batches(arrays, batch_size: int, iterations: int, device: torch.device):
    """(x, y) training batches from CIFAR10DataModule without a trainer: draws, then gather+augment."""
    dm = CIFAR10DataModule(DataConfig(), batch_size=batch_size, max_iters=iterations, seed=0, arrays=arrays)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        x, y, _ = dm.on_after_batch_transfer(batch, 0)
        yield x, y


def plain_loop(
    model: torch.nn.Module, batches, warmup: int, timed: int, batch_size: int, device, precision: str = "32-true"
) -> float:
    """Images/s of the training loop users write (SGD momentum 0.9, wd 1e-4), over the timed iterations."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")  # what Lightning's 16-mixed adds
    dtype = AUTOCAST[precision]
    model.train()
    for i in range(warmup + timed):
        if i == warmup:
            start = _now(device)
        x, y = next(batches)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return timed * batch_size / (_now(device) - start)


class StampedDataModule(CIFAR10DataModule):
    """Our data module unchanged, except that it calls `marks[i]` when training iteration i begins."""

    def __init__(self, *args, marks: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.marks, self.iteration = marks, 0

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int):
        if batch["split"] == "train":
            if self.iteration in self.marks:
                self.marks[self.iteration]()
            self.iteration += 1
        return super().on_after_batch_transfer(batch, dataloader_idx)


def lightning_run(
    model: str,
    arrays,
    warmup: int,
    timed: int,
    batch_size: int,
    device: torch.device,
    threads: int | None,
    run_dir: Path,
    marks: dict,
    precision: str = "32-true",
    compile: bool = False,
    cudnn_benchmark: bool | None = None,
) -> None:
    """`train()` as `resnet-repro train` calls it (W&B and the bar off), for warm-up + timed + 1 iterations.

    Iteration warmup+timed begins the untimed tail: the run's end, its checkpoint and its
    final-iterate evaluation (on EVAL_IMAGES test images) all fall outside the timed iterations.
    The Trainer sets `torch.backends.cudnn.benchmark` as train() asks (on); a `cudnn_benchmark` given
    overrides it when iteration 0 begins, so all iterations run under the setting the other paths have.
    """
    if cudnn_benchmark is not None:
        first = marks.get(0)
        marks = {**marks, 0: lambda: (_set_cudnn_benchmark(cudnn_benchmark), first and first())}
    iterations = warmup + timed + 1
    log_every = TrainSpec().log_every  # the default, so host syncs happen as often as in a user's run
    never = log_every * (iterations // log_every + 1)  # > iterations: no periodic eval or checkpoint
    spec = TrainSpec(
        model=model,
        schedule=Schedule().scaled(iterations),
        batch_size=batch_size,
        seed=0,
        eval_every=never,
        checkpoint_every=never,
    )
    small_test = dataclasses.replace(
        arrays, test_images=arrays.test_images[:EVAL_IMAGES], test_labels=arrays.test_labels[:EVAL_IMAGES]
    )
    dm = StampedDataModule(
        spec.data, batch_size=batch_size, max_iters=iterations, seed=spec.seed, arrays=small_test, marks=marks
    )
    hardware = Hardware(
        accelerator="gpu" if device.type == "cuda" else "cpu", threads=threads, precision=precision, compile=compile
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        train(spec, RunOptions(run_dir=run_dir, wandb="off", progress=False), hardware, datamodule=dm)


def measure(
    path: str, model: str, arrays, args, device: torch.device, scratch: Path, repeat: int
) -> tuple[float, bool]:
    """Training images/s of one path over `args.iters` iterations after `args.warmup`, and the
    `torch.backends.cudnn.benchmark` in effect over them (set to `args.cudnn_benchmark` first)."""
    warmup, timed, batch = args.warmup, args.iters[model], args.batch_size
    _set_cudnn_benchmark(args.cudnn_benchmark)
    if path == "ours-lightning":
        stamps = {}

        def start():
            stamps["cudnn_benchmark"] = torch.backends.cudnn.benchmark
            stamps.setdefault("start", _now(device))

        marks = {warmup: start, warmup + timed: lambda: stamps.setdefault("stop", _now(device))}
        lightning_run(
            model,
            arrays,
            warmup,
            timed,
            batch,
            device,
            args.threads,
            scratch / f"{model}-{repeat}",
            marks,
            args.precision,
            args.compile,
            args.cudnn_benchmark,
        )
        return timed * batch / (stamps["stop"] - stamps["start"]), stamps["cudnn_benchmark"]
    torch.manual_seed(0)
    net = build_model(model).to(device)
    if path == "conventional":
        batches = conventional_batches(arrays, batch, device)
    else:
        net = net.to(memory_format=torch.channels_last)  # as ClassifierModule does
        batches = our_batches(arrays, batch, warmup + timed, device)
    if args.compile:
        net.compile()  # in place, as `--compile` does in train(); compiling happens in the warm-up iterations
    try:
        rate = plain_loop(net, batches, warmup, timed, batch, device, args.precision)
        return rate, torch.backends.cudnn.benchmark
    finally:
        batches.close()  # shuts the DataLoader's workers down before the next measurement


def _set_cudnn_benchmark(on: bool) -> None:
    torch.backends.cudnn.benchmark = on


def _one_line(exc: BaseException) -> str:
    """'RuntimeError: first line of the message': what a failed measurement's row records."""
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text.splitlines()[0]}" if text else "")


def _failed(what: str, exc: Exception) -> str:
    """Print the traceback of a failed measurement (to stderr) and return its one-line error."""
    traceback.print_exception(exc)
    error = _one_line(exc)
    print(f"throughput: {what} failed: {error}; going on with the rest", file=sys.stderr, flush=True)
    return error


def host_overhead(args, arrays, scratch: Path) -> dict:
    """Seconds per iteration of paths 2 and 3 on HOST_MODEL at batch HOST_BATCH on the CPU (fp32, eager), and
    their difference: the host time per iteration the Lightning path adds (medians over args.repeats)."""
    cpu = torch.device("cpu")
    sized = argparse.Namespace(
        **{
            **vars(args),
            "warmup": HOST_WARMUP,
            "iters": {HOST_MODEL: args.host_iters},
            "batch_size": HOST_BATCH,
            "precision": "32-true",
            "compile": False,
        }
    )
    seconds, errors = {p: [] for p in HOST_PATHS}, {}
    for repeat in range(args.repeats):
        for path in HOST_PATHS[repeat % 2 :] + HOST_PATHS[: repeat % 2]:
            try:
                rate, _ = measure(path, HOST_MODEL, arrays, sized, cpu, scratch, f"host-{repeat}")
                seconds[path].append(HOST_BATCH / rate)
            except Exception as exc:  # a UserError too: the host figure is an extra, the table stands without it
                errors.setdefault(path, _failed(f"host overhead, {path}", exc))
    plain, lightning = (statistics.median(seconds[p]) if seconds[p] else math.nan for p in HOST_PATHS)
    print(
        f"throughput: host time per iteration on the CPU, {HOST_MODEL} batch {HOST_BATCH}: plain loop "
        f"{plain * 1e3:.2f} ms, Lightning {lightning * 1e3:.2f} ms, overhead {(lightning - plain) * 1e3:+.2f} ms",
        flush=True,
    )
    return {
        "host_overhead_s": lightning - plain,
        "host_plain_s": plain,
        "host_lightning_s": lightning,
        "host_setup": f"{HOST_MODEL} batch {HOST_BATCH} fp32, {HOST_WARMUP} warm-up + {args.host_iters} timed "
        f"iterations, {args.repeats} repeat(s)",
        "host_cpu": f"CPU {_cpu_model()}",
        "host_error": "; ".join(f"{p}: {e}" for p, e in errors.items()),
    }


def _now(device: torch.device) -> float:
    """perf_counter after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def gemm_gflops(n: int, device: torch.device) -> float:
    """GFLOP/s of fp32 n x n matrix products (2 n^3 floating-point operations each)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    products = 10 if device.type == "cuda" else 1  # one product takes milliseconds on a GPU
    start = _now(device)
    for _ in range(products):
        torch.mm(a, b)
    return products * 2 * n**3 / (_now(device) - start) / 1e9


# --- profiling ------------------------------------------------------------------------------------


def profile(model: str, arrays, args, device: torch.device, scratch: Path) -> None:
    """Print torch.profiler's top ops over PROFILE_ITERS iterations of path 3, after warm-up."""
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = torch.profiler.profile(activities=activities)
    stamps = {}

    def start():
        stamps["start"] = _now(device)
        prof.start()

    def stop():
        prof.stop()
        stamps["stop"] = _now(device)

    print(f"{model}: profiling {PROFILE_ITERS} iterations of path 3 after {args.warmup} warm-up", flush=True)
    lightning_run(
        model,
        arrays,
        args.warmup,
        PROFILE_ITERS,
        args.batch_size,
        device,
        args.threads,
        scratch / f"{model}-profile",
        {args.warmup: start, args.warmup + PROFILE_ITERS: stop},
        args.precision,
        args.compile,
        args.cudnn_benchmark,
    )
    averages = prof.key_averages()
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(averages.table(sort_by=sort_by, row_limit=25))
    wall = stamps["stop"] - stamps["start"]
    in_ops = sum(event.self_cpu_time_total for event in averages) / 1e6
    print(
        f"{model}: {wall / PROFILE_ITERS * 1e3:.1f} ms per iteration under the profiler; the main thread spent "
        f"{in_ops / PROFILE_ITERS * 1e3:.1f} ms of it inside torch ops, so about "
        f"{max(wall - in_ops, 0.0) / PROFILE_ITERS * 1e3:.1f} ms in Python (Lightning, our hooks, the loader)\n",
        flush=True,
    )


# --- records and rendering ------------------------------------------------------------------------


def summarise(raw: pd.DataFrame, gemm: list[float], mult_adds: dict[str, int], meta: dict) -> pd.DataFrame:
    """One row per (model, path): median and min/max images/s, ratios of medians, achieved GFLOP/s.

    A failed measurement (a raw row with an `error`) counts in no figure; its error is the row's `error`,
    and a path with no measurement left has NaN figures. Columns absent from `meta` are left empty.
    """
    rows = []
    gemm_median = statistics.median(gemm)
    for (model, path), runs in raw.groupby(["model", "path"], sort=False):
        values = runs["images_per_s"].dropna().tolist()
        median = statistics.median(values) if values else math.nan
        gflops = 3 * mult_adds[model] * 2 * median / 1e9  # backward ~ 2x forward
        errors = runs["error"].dropna().unique().tolist() if "error" in runs else []
        settings = runs["cudnn_benchmark"].dropna().unique().tolist() if "cudnn_benchmark" in runs else []
        rows.append(
            {
                "model": model,
                "path": path,
                "images_per_s": median,
                "images_per_s_min": min(values, default=math.nan),
                "images_per_s_max": max(values, default=math.nan),
                "images_per_s_runs": ";".join(f"{v:.1f}" for v in runs["images_per_s"]),
                "error": "; ".join(errors) or None,
                # what was in effect over the timed iterations; "mixed" would say the comparison is unfair
                "cudnn_benchmark": (bool(settings[0]) if len(settings) == 1 else "mixed") if settings else None,
                "timed_iters": runs["timed_iters"].iloc[0],
                "mult_adds": mult_adds[model],
                "gflops": gflops,
                "gemm_gflops": gemm_median,
                "gemm_fraction": gflops / gemm_median,
                **meta,
            }
        )
    table = pd.DataFrame(rows)
    medians = table.set_index(["model", "path"])["images_per_s"]
    for column, base in (("vs_conventional", "conventional"), ("vs_ours_plain", "ours-plain")):
        table[column] = [
            medians[m, p] / medians[m, base] if (m, base) in medians.index else float("nan")
            for m, p in zip(table["model"], table["path"], strict=True)
        ]
    return table.reindex(columns=CSV_COLUMNS)


def _cell(row) -> str:
    """'median [min–max]' images/s, or what failed (pipes escaped: the error stands in a Markdown table)."""
    failed = "" if pd.isna(row.error) else "failed: " + str(row.error).replace("|", "\\|")
    if pd.isna(row.images_per_s):
        return failed
    figure = f"{row.images_per_s:.1f} [{row.images_per_s_min:.1f}–{row.images_per_s_max:.1f}]"
    return f"{figure}; {failed}" if failed else figure


def _cudnn_line(table: pd.DataFrame) -> str:
    settings = table["cudnn_benchmark"].dropna().astype(str).unique().tolist()
    if len(settings) == 1 and settings[0] != "mixed":
        return f"cuDNN autotuning (`torch.backends.cudnn.benchmark`) {settings[0]} in every path."
    return f"cuDNN autotuning (`torch.backends.cudnn.benchmark`) DIFFERED between paths: {', '.join(settings)}."


def _host_paragraph(r) -> str:
    """The host time per iteration that path 3 adds to path 2 on a tiny net, measured on the CPU."""
    if pd.isna(r.host_overhead_s):
        failed = not pd.isna(r.host_error) and r.host_error
        return "Host overhead of the Lightning path: " + (
            f"failed ({r.host_error})." if failed else "not measured (--host-iters 0)."
        )
    return (
        f"Host overhead of the Lightning path: **{r.host_overhead_s * 1e3:+.2f} ms per iteration** "
        f"(path 3 {r.host_lightning_s * 1e3:.2f} ms − path 2 {r.host_plain_s * 1e3:.2f} ms per iteration, medians; "
        f"{r.host_setup}). This is a CPU figure, measured on {r.host_cpu} with {r.threads} torch thread(s) "
        "whatever the device above: the same data module and net through `train()` instead of the plain loop, "
        "so the difference is the per-step host work Lightning and our module's hooks and logging add. On a CPU "
        "the host also does the arithmetic, so it is added time; on a GPU it is hidden only while the kernels "
        "queued outlast it."
    )


def render(table: pd.DataFrame, gemm: list[float], info: dict) -> str:
    """throughput.md: the summary table, then how and where it was measured."""
    r = table.iloc[0]
    lines = [
        "# Training throughput: the conventional pipeline vs ours",
        "",
        f"Training images/s, batch {r.batch_size}, {numerics_label(r.precision, r['compile'])}, on "
        f"{info['device_name']}: median of {r.repeats} "
        f"repeat(s) [min–max], each {r.warmup_iters} warm-up + the timed iterations shown. Generated by "
        "`benchmarks/throughput.py`; ratios are ratios of medians. " + _cudnn_line(table),
        "",
        "| model | timed iters | " + " | ".join(PATHS.values()) + " | 3/1 | 3/2 | GFLOP/s (3) | of GEMM |",
        "|---|---:|" + "---:|" * (len(PATHS) + 4),
    ]
    for model, rows in table.groupby("model", sort=False):
        by_path = rows.set_index("path")
        cells = [_cell(by_path.loc[p]) if p in by_path.index else "–" for p in PATHS]
        ours = by_path.loc["ours-lightning"] if "ours-lightning" in by_path.index else None
        ours = ours if ours is not None and not pd.isna(ours.images_per_s) else None
        tail = (
            [
                f"{ours.vs_conventional:.2f}x",
                f"{ours.vs_ours_plain:.2f}x",
                f"{ours.gflops:.1f}",
                f"{100 * ours.gemm_fraction:.0f}%",
            ]
            if ours is not None
            else ["–"] * 4
        )
        lines.append(f"| {model} | {rows.timed_iters.iloc[0]} | " + " | ".join(cells + tail) + " |")
    lines += [
        "",
        f"fp32 GEMM {info['gemm_size']}x{info['gemm_size']} (2n³ FLOP per product), measured between the "
        f"training measurements: median {statistics.median(gemm):.1f} GFLOP/s [{min(gemm):.1f}–{max(gemm):.1f}] "
        f"over {len(gemm)} products. Achieved GFLOP/s = 3 x forward multiply-adds x 2 x images/s "
        "(backward counted as twice the forward); forward multiply-adds per image: "
        + ", ".join(f"{m} {v / 1e6:.1f}M" for m, v in dict(zip(table.model, table.mult_adds, strict=True)).items())
        + "."
        + (
            ""
            if r.precision == "32-true"
            else ' The GEMM stays fp32, so "of GEMM" compares reduced-precision '
            "training with fp32 matrix speed (it can exceed 100%)."
        ),
        "",
        _host_paragraph(r),
        "",
        "## What was measured",
        "",
        "1. **conventional**: a torchvision-CIFAR10-style dataset (HWC uint8 array, `PIL.Image.fromarray` per "
        "sample), `RandomCrop(32, padding=4)`, `RandomHorizontalFlip`, `ToTensor`, `Normalize` (per-channel), "
        "`DataLoader(num_workers=2, shuffle=True, drop_last=True)`, a plain loop (SGD momentum 0.9, "
        "weight decay 1e-4, cross-entropy), model in NCHW.",
        "2. **ours + plain loop**: `CIFAR10DataModule` (whole set resident, per-iteration index/crop/flip "
        "draws, gather + augment + per-pixel-mean normalisation in `on_after_batch_transfer`) driving the "
        "same loop, model in channels_last as `ClassifierModule` holds it.",
        "3. **ours, Lightning**: `resnet_repro.training.train` (the function behind `resnet-repro train`) with "
        "W&B and the progress bar off and the default logging interval. It runs warm-up + timed + 1 "
        "iterations; the timed interval runs from the start of iteration `warmup` to the start of iteration "
        "`warmup + timed` (stamped by a data-module subclass whose `on_after_batch_transfer` notes the time), "
        "so run set-up, the final checkpoint and the final-iterate evaluation that `train()` always does "
        f"(here on the first {EVAL_IMAGES} test images) are not timed.",
        "",
        "All paths use the same decoded images, model, batch and torch thread count in one process; the "
        "paths' order rotates between repeats. Paths 1 and 2 time the same interval with `perf_counter` "
        "(after a device synchronisation on a GPU).",
        "",
        "## Where",
        "",
        f"- command: `{info['command']}`",
        f"- date: {info['date']}; commit {info['commit']}",
        f"- hardware: {info['device_name']}; {info['cores']}",
        f"- torch threads: {info['threads']} (DataLoader workers use 1 each)",
        *(
            [
                f"- TF32 (off for fp32, as training does): convolutions {torch.backends.cudnn.allow_tf32}, "
                f"matmul and the GEMM {torch.backends.cuda.matmul.allow_tf32}"
            ]
            if info["cuda"]
            else []
        ),
        f"- other processes used {100 * info['others']:.0f}% of the CPU during the run (load average at start "
        f"{info['load_start']}, at the end {info['load_end']} including this run)"
        + (": the machine was busy, these numbers are not representative" if info["busy"] else ""),
        f"- versions: python {info['python']}, torch {info['torch']}, torchvision {info['torchvision']}, "
        f"lightning {info['lightning']}",
        f"- data: {info['data']}",
        "",
    ]
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated CIFAR nets")
    parser.add_argument(
        "--repeats", type=int, default=None, help="measurements per path and model (default 3; --quick 1)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed iterations before each measurement (default 3 on CPU, 20 on GPU; --quick 2)",
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="timed iterations per measurement (default per model: "
        "900/depth on CPU, 20000/depth on GPU, i.e. ~20-25 s each on 2 CPU cores; --quick: a quarter)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, a quarter of the iterations: a rough look in ~2 min"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="mini-batch (paper: 128)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for all paths (default: torch's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument(
        "--data", default=None, help=f"CIFAR-10 source (default: ${DATA_ENV}, else torchvision's download)"
    )
    parser.add_argument("--data-root", default=None, help="decoded-cache directory (default: ~/.cache/resnet-repro)")
    parser.add_argument(
        "--allow-partial", action="store_true", help="accept a source without all 60,000 images (tests)"
    )
    parser.add_argument("--gemm-size", type=int, default=4096, help="side of the reference fp32 GEMM")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks", help="where throughput.md/.csv go")
    parser.add_argument(
        "--precision",
        choices=list(AUTOCAST),
        default="32-true",
        help="autocast in all three paths, as `resnet-repro train --precision` (default: fp32)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network in all three paths")
    parser.add_argument(
        "--cudnn-benchmark",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch.backends.cudnn.benchmark in every path (default on, as `resnet-repro train` runs)",
    )
    parser.add_argument(
        "--host-iters",
        type=int,
        default=None,
        help=f"timed iterations of the host-overhead figure ({HOST_MODEL}, batch {HOST_BATCH}, on the CPU; "
        "default 100, --quick 25; 0: skip it)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile path 3 (torch.profiler, top ops) for each model; writes no results",
    )
    return parser


def numerics_label(precision: str, compile: bool) -> str:
    """'fp32', 'bf16-mixed', 'fp32 + torch.compile', ...: what the table's title says it measured."""
    return ("fp32" if precision == "32-true" else precision) + (" + torch.compile" if compile else "")


def output_stem(precision: str, compile: bool) -> str:
    """throughput (fp32, eager: the issue's figures), throughput-bf16-mixed, throughput-compile, ..."""
    options = ([] if precision == "32-true" else [precision]) + (["compile"] if compile else [])
    return "-".join(["throughput", *options])


def _settings(args, device: torch.device) -> None:
    """Fill in the defaults that depend on --quick and the device; check the rest."""
    gpu = device.type == "cuda"
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models:
        raise UserError("--models is empty: name at least one CIFAR net, e.g. resnet20")
    for model in args.models:
        if model_info(model).family != "cifar":  # UnknownModelError for a bad name
            raise UserError(
                f"{model} is an ImageNet net: this benchmark trains CIFAR-10 nets (resnet20, resnet56, ...)"
            )
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 20 if gpu else 3)
    per_model = {m: round((20_000 if gpu else 900) / model_info(m).depth) for m in args.models}
    args.iters = {
        m: args.iters if args.iters is not None else max(2, n // 4 if args.quick else n) for m, n in per_model.items()
    }
    args.host_iters = args.host_iters if args.host_iters is not None else (25 if args.quick else 100)
    if args.host_iters < 0:
        raise UserError("--host-iters must be >= 0")
    for name in ("repeats", "batch_size", "gemm_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or min(args.iters.values()) < 1:
        raise UserError("--warmup must be >= 0 and --iters >= 1")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    return torch.device(name)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its reaped children)."""
    t = os.times()
    ours = t.user + t.system + t.children_user + t.children_system
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), ours
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), ours


def measure_all(args, arrays, device: torch.device, scratch: Path) -> tuple[pd.DataFrame, list[float]]:
    """Every (model, repeat, path) measurement, paths interleaved, and a GEMM after each model's repeat."""
    gemm_gflops(args.gemm_size, device)  # warm-up: the first product allocates and initialises
    gemm = [gemm_gflops(args.gemm_size, device)]
    print(f"throughput: fp32 GEMM {args.gemm_size}^3: {gemm[0]:.1f} GFLOP/s", flush=True)
    raw, started = [], time.perf_counter()
    for model in args.models:
        for repeat in range(args.repeats):
            # Rotating the order spreads slow drifts (other jobs, heat) over all paths alike.
            order = list(PATHS)[repeat % len(PATHS) :] + list(PATHS)[: repeat % len(PATHS)]
            for path in order:
                rate, cudnn_benchmark, error = math.nan, None, None
                try:
                    rate, cudnn_benchmark = measure(path, model, arrays, args, device, scratch, repeat)
                except UserError:
                    raise  # a mistake in the command (exit status 2), not a failing path
                except Exception as exc:  # one failing path does not lose the others
                    error = _failed(f"{model} {path} (repeat {repeat + 1})", exc)
                raw.append(
                    {
                        "model": model,
                        "path": path,
                        "repeat": repeat,
                        "images_per_s": rate,
                        "timed_iters": args.iters[model],
                        "cudnn_benchmark": cudnn_benchmark,
                        "error": error,
                    }
                )
                print(
                    f"{model:>10}  repeat {repeat + 1}/{args.repeats}  {path:<15} "
                    + (f"{rate:8.1f} img/s" if error is None else "  FAILED")
                    + f"  ({args.iters[model]} timed iterations; {time.perf_counter() - started:4.0f} s so far)",
                    flush=True,
                )
            gemm.append(gemm_gflops(args.gemm_size, device))
    return pd.DataFrame(raw), gemm  # repeat 0 runs the paths in PATHS order, so groups come out in it


def run(args) -> int:
    device = _device(args.device)
    _settings(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision == "32-true":
        # As `resnet-repro train` does for fp32 (and the Lightning path would do half-way through): every path
        # in true fp32, none in TF32.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    cores = os.cpu_count() or 1
    load_start, cpu_start, wall_start = _load(), _cpu_seconds(), time.perf_counter()
    print(
        f"throughput: torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"load average {load_start} on {cores} cores",
        flush=True,
    )
    if load_start > 0.5 * cores:
        print("throughput: warning: the machine is busy; numbers will be low and noisy", flush=True)
    arrays = load_cifar10(args.data, args.data_root, full=not args.allow_partial)
    print(f"throughput: data {arrays.source['path']} ({arrays.source['train']} training images)", flush=True)
    ours = torch.backends.cudnn.benchmark  # every path sets it (Lightning's Trainer too); the caller's comes back
    try:
        with tempfile.TemporaryDirectory(prefix="throughput-") as scratch:
            if args.profile:
                for model in args.models:
                    profile(model, arrays, args, device, Path(scratch))
                return 0
            raw, gemm = measure_all(args, arrays, device, Path(scratch))
            host = host_overhead(args, arrays, Path(scratch)) if args.host_iters else {}
    finally:
        _set_cudnn_benchmark(ours)

    cpu_end = _cpu_seconds()
    # CPU time the machine spent beyond this process and its DataLoader workers: other people's jobs.
    others = ((cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / (time.perf_counter() - wall_start) / cores
    meta = provenance()
    source = arrays.source
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {_cpu_model()}"
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    mult_adds = {m: count_multiply_adds(build_model(m), model_info(m).input_size) for m in args.models}
    table = summarise(
        raw,
        gemm,
        mult_adds,
        {
            "batch_size": args.batch_size,
            "precision": args.precision,
            "compile": args.compile,
            "warmup_iters": args.warmup,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "device": device_name,
            "other_cpu": round(others, 3),
            "commit": meta["commit"],
            "date": date,
            **host,
        },
    )
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    info = {
        **meta,
        "date": date,
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "cores": f"{cores} logical cores ({usable} usable)",
        "load_start": load_start,
        "load_end": _load(),
        "others": others,
        "busy": not others < 0.1,
        "gemm_size": args.gemm_size,
        "cuda": device.type == "cuda",
        "command": "python benchmarks/throughput.py " + shlex.join(args.argv),
        "data": f"{source.get('known') or source['path']} (sha256 {source['sha256'][:12]}, "
        f"{source['train']} training images)",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(args.precision, args.compile)
    table.to_csv(args.out / f"{stem}.csv", index=False, float_format="%.4g")
    text = render(table, gemm, info)
    (args.out / f"{stem}.md").write_text(text)
    print(text.split("\n## ")[0], flush=True)
    print(f"throughput: wrote {args.out / stem}.md and {stem}.csv", flush=True)
    if info["busy"]:
        print(
            f"throughput: warning: other processes used {100 * others:.0f}% of the CPU meanwhile; "
            "measure again on an idle machine",
            flush=True,
        )
    failed = [f"{m} {p}" for m, p, e in zip(table.model, table.path, table.error, strict=True) if not pd.isna(e)]
    failed += ["the host-overhead figure"] if host.get("host_error") else []
    if failed:  # the last line, which gpu_session.py quotes
        print(f"throughput: error: {len(failed)} measurement(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, measure, write the tables; 2 on a user mistake, as the CLI does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return exit_status("throughput", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
