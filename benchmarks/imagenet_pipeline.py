"""Speed of the Sec. 3.4 ImageNet path on this machine: the JPEG training pipeline per worker, and the Table 1 nets.

No ImageNet is needed: it first generates JPEGs of ImageNet's typical size (500x375, quality 90, ~110 KB:
multi-scale smooth random fields plus pixel noise, synthetic but with ImageNet-like file sizes, which is
what JPEG decoding time follows), a few large photos (2000x1500) and those same photos pre-resized to
shorter side 480, into a temporary directory or --cache. Then it measures
  1. where a worker's time goes, in one process on one thread: reading the file, JPEG decoding, and a
     worker's whole item (`TrainImageBatches`: decode + resize to a random shorter side in [256, 480] +
     random 224 crop + flip, as uint8), and the device-side step (`on_after_batch_transfer`) on this CPU;
  2. training images/s of `ImageNetDataModule.train_dataloader()` (what training iterates) with 0 (the
     main process), 1, 2 ... DataLoader workers, per worker and per CPU-second of the workers;
  3. training images/s of ResNet-18/34/50 at 224 (forward + backward + SGD step, batch 32 = the paper's
     per-GPU batch, channels_last as `ClassifierModule`, fp32 unless --precision) on synthetic input.

    python benchmarks/imagenet_pipeline.py                # 4-8 min on 2 busy CPU cores, +1 min generating the JPEGs
    python benchmarks/imagenet_pipeline.py --cache ~/.cache/resnet-repro/jpeg-bench   # generate them once, keep them
    python benchmarks/imagenet_pipeline.py --workers 0,1,2,4,8 --only pipeline   # a bigger machine's cores
    python benchmarks/imagenet_pipeline.py --only training --precision bf16-mixed  # imagenet-training-bf16-mixed.md
    python benchmarks/imagenet_pipeline.py --smoke        # every step in seconds (tests), into a temp dir

Writes results/benchmarks/imagenet-pipeline.md/.csv (1 and 2) and imagenet-training.md/.csv (3; with
--precision P: imagenet-training-P.md). The target for the pipeline: at least 330 images/s per CPU core,
the per-core rate FFCV reports for full-resolution ImageNet JPEGs. As benchmarks/throughput.py, each page
records the share of the CPU other processes used meanwhile and says so when the machine was busy.
"""

import argparse
import importlib.util
import itertools
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.io import read_file

from resnet_repro.data.imagenet import (
    ILSVRC2012_SIZES,
    ImageNetConfig,
    ImageNetDataModule,
    TrainImageBatches,
    decode,
    discover,
)
from resnet_repro.errors import UserError, exit_status
from resnet_repro.flops import count_multiply_adds
from resnet_repro.models import build_model, model_info
from resnet_repro.rundir import provenance


def _sibling(name: str):
    """Another script of benchmarks/ as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# throughput.py's machine probes and training loop, so both benchmarks measure and label alike.
throughput = _sibling("throughput")

REPO = Path(__file__).resolve().parents[1]
TARGET_PER_CORE = 330  # images/s per CPU core: FFCV's per-core rate for full-resolution ImageNet JPEGs
BUSY = 0.1  # throughput.py's rule: other processes above 10% of the CPU make a run "busy"
PAPER_IMAGES = 600_000 * 256  # Sec. 3.4: up to 60e4 iterations of mini-batch 256
QUALITY = 90
CROP = 224
CLASSES = 8
DEFAULT_MODELS = ("resnet18", "resnet34", "resnet50")
PIPELINE_COLUMNS = [
    "set",
    "image_size",
    "jpeg_kb",
    "step",
    "workers",
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "images_per_s_per_worker",
    "images_per_cpu_s",
    "ms_per_image",
    "timed_images",
    "repeats",
    "batch_size",
    "torch_threads",
    "other_cpu",
    "other_cpu_run",
    "other_cpu_run_niced",
    "device",
    "commit",
    "date",
]
TRAINING_COLUMNS = [
    "model",
    "precision",
    "batch_size",
    "image_size",
    "channels_last",
    "images_per_s",
    "s_per_iter",
    "mult_adds",
    "gflops",
    "epoch_hours",
    "paper_schedule_days",
    "warmup_iters",
    "timed_iters",
    "threads",
    "other_cpu",
    "other_cpu_run",
    "other_cpu_run_niced",
    "device",
    "commit",
    "date",
]
STEPS = {
    "read": "read the file (page cache)",
    "decode": "read + JPEG decode to uint8 RGB",
    "item": "a worker's item: decode + resize [256, 480] + crop 224 + flip",
    "device": "on the device (here this CPU): to float, PCA colour, minus the mean",
}


# --- the generated JPEGs --------------------------------------------------------------------------


def natural_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth random fields at five scales plus pixel noise: JPEG sizes like photos' (~110 KB at 500x375, q90)."""
    image = np.full((height, width, 3), 128, np.int16)
    for cells, amplitude in ((2, 80), (8, 60), (32, 50), (125, 50), (250, 50)):  # cells across 500 pixels
        across = max(1, round(cells * width / 500))
        down = max(1, round(across * height / width))
        field = rng.integers(0, 256, (down + 1, across + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(field).resize((width, height), Image.BICUBIC), np.int16)
        image += (smooth - 128) * amplitude // 128
    image += rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def _resized(image: Image.Image, short: int) -> Image.Image:
    """`image` with its shorter side `short` (aspect kept), as an offline pre-resize tool writes it."""
    w, h = image.size
    scale = short / min(w, h)
    return image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)


def make_root(cache: Path, size: tuple[int, int], per_class: int) -> Path:
    """cache/WxH-...: train/<wnid>/*.JPEG (`per_class` for each of CLASSES) and one val image per class; reused."""
    root = cache / f"{size[0]}x{size[1]}-{CLASSES}x{per_class}-q{QUALITY}"

    def write(folder: Path, rng: np.random.Generator, i: int) -> None:
        natural_image(rng, *size).save(folder / f"{folder.name}_{i}.JPEG", quality=QUALITY)

    return _made(root, lambda: _each_image(root, per_class, write, np.random.default_rng(0)))


def pre_resize(source: Path, short: int) -> Path:
    """SOURCE-shortSHORT: the images of `source` decoded, resized to shorter side `short` and encoded again."""
    root = source.with_name(f"{source.name}-short{short}")

    def write(folder: Path, _rng, i: int) -> None:
        name = f"{folder.name}_{i}.JPEG"
        with Image.open(source / folder.relative_to(root) / name) as original:
            _resized(original.convert("RGB"), short).save(folder / name, quality=QUALITY)

    per_class = len(list((source / "train" / "n00000000").iterdir()))
    return _made(root, lambda: _each_image(root, per_class, write, None))


def _each_image(root: Path, per_class: int, write, rng) -> None:
    for split, count in (("train", per_class), ("val", 1)):
        for c in range(CLASSES):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                write(folder, rng, i)


def _made(root: Path, generate) -> Path:
    """`root`, generated unless an earlier run finished it (done.json, written last, describes it)."""
    if (root / "done.json").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)  # an earlier, interrupted generation
    generate()
    sizes = [p.stat().st_size for p in (root / "train").glob("*/*.JPEG")]
    with Image.open(next((root / "train").glob("*/*.JPEG"))) as first:
        width, height = first.size
    done = {"images": len(sizes), "kb_mean": np.mean(sizes) / 1e3, "kb_min": min(sizes) / 1e3}
    done.update(kb_max=max(sizes) / 1e3, width=width, height=height)
    (root / "done.json").write_text(json.dumps(done))
    return root


def describe(root: Path) -> dict:
    return json.loads((root / "done.json").read_text())


# --- 1. where a worker's time goes ------------------------------------------------------------------


def time_steps(root: Path, batch_size: int) -> dict[str, tuple[float, float, int]]:
    """{step: (images/s, images per CPU-second, images)} over one pass of `root`'s training images, one thread."""
    files = discover(ImageNetConfig(str(root), subset=CLASSES, workers=0))[0]["train"]
    batch = min(batch_size, len(files))
    items = TrainImageBatches(files, batch, seed=0, crop=CROP)
    batches = len(files) // batch
    order = [i for k in range(batches) for i in items.draws(k)["index"].tolist()]
    paths = [files.path(i) for i in order]
    for path in paths:
        read_file(path)  # into the page cache: the disk is not what this measures
    steps = {
        "read": lambda: [read_file(p) for p in paths],
        "decode": lambda: [decode(p) for p in paths],
        "item": lambda: [items[k] for k in range(batches)],
    }
    out = {}
    for step, work in steps.items():
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        out[step] = (len(paths) / (time.perf_counter() - wall), len(paths) / (time.process_time() - cpu), len(paths))
    return out


def time_device_step(root: Path, batch_size: int, repeats: int) -> tuple[float, float, int]:
    """Images/s of `on_after_batch_transfer` (float, PCA shift, per-pixel mean, channels_last) on this CPU."""
    dm = _datamodule(root, 0, batch_size)
    batch = dm.train_dataloader().dataset[0]
    n = len(batch["x"])
    dm.on_after_batch_transfer(batch, 0)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        dm.on_after_batch_transfer(batch, 0)
    return repeats * n / (time.perf_counter() - wall), repeats * n / (time.process_time() - cpu), repeats * n


# --- 2. the training DataLoader ---------------------------------------------------------------------


def _datamodule(root: Path, workers: int, batch_size: int) -> ImageNetDataModule:
    """The training data module on `root`, with a zero mean image (computing the real one is not timed here)."""
    dm = ImageNetDataModule(
        ImageNetConfig(str(root), subset=CLASSES, workers=workers), batch_size=batch_size, max_iters=10**6, seed=0
    )
    dm.load_state_dict({"mean": torch.zeros(3, CROP, CROP)})  # as a checkpoint restores it: setup skips the mean
    dm.setup("fit")
    return dm


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes `pids` have used so far, from /proc; nan where unreadable."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def time_loader(root: Path, workers: int, batch_size: int, timed_batches: int) -> tuple[float, float, int]:
    """(images/s, images per CPU-second of the producing processes, images) of the training DataLoader.

    Untimed first: 2 batches per worker (+1), so start-up and the initially prefetched batches are behind it.
    """
    loader = _datamodule(root, workers, batch_size).train_dataloader()
    batches = iter(loader)
    for _ in range(2 * workers + 1):
        next(batches)
    pids = [w.pid for w in getattr(batches, "_workers", [])]  # the iterator's worker processes
    cpu = _cpu_of(pids) if workers else time.process_time()
    wall = time.perf_counter()
    images = sum(len(next(batches)["x"]) for _ in range(timed_batches))
    wall = time.perf_counter() - wall
    cpu = (_cpu_of(pids) if workers else time.process_time()) - cpu
    del batches  # shuts the workers down (and reaps them, so the busy-share arithmetic counts them as ours)
    return images / wall, images / cpu, images


# --- 3. the Table 1 nets -----------------------------------------------------------------------------


def time_model(name: str, batch_size: int, warmup: int, timed: int, precision: str, size: int = CROP) -> float:
    """Training images/s of one ImageNet net at `size` on synthetic input: throughput.py's plain loop, channels_last."""
    torch.manual_seed(0)
    net = build_model(name).to(memory_format=torch.channels_last)  # as ClassifierModule holds it
    x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model_info(name).num_classes, (batch_size,))
    return throughput.plain_loop(
        net, itertools.repeat((x, y)), warmup, timed, batch_size, torch.device("cpu"), precision
    )


# --- the measurements, in order -----------------------------------------------------------------------


class BusyMeter:
    """The share of the machine's CPU that processes other than this one (and its reaped children) used."""

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self.start, self.niced, self.wall = throughput._cpu_seconds(), _niced_seconds(), time.perf_counter()
        self.load_start = throughput._load()

    def others(self) -> float:
        end = throughput._cpu_seconds()
        busy = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return busy / (time.perf_counter() - self.wall) / self.cores

    def others_niced(self) -> float:
        """The part of `others` at low priority (nice > 0): it runs on cores this run leaves idle."""
        return (_niced_seconds() - self.niced) / (time.perf_counter() - self.wall) / self.cores


def _niced_seconds() -> float:
    """CPU seconds the machine has spent in user mode at nice > 0 (/proc/stat's "nice"); nan elsewhere."""
    try:
        return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[2]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _median_row(runs: list[tuple[float, float, int]]) -> dict:
    rates = [r[0] for r in runs]
    return {
        "images_per_s": statistics.median(rates),
        "images_per_s_min": min(rates),
        "images_per_s_max": max(rates),
        "images_per_cpu_s": statistics.median(r[1] for r in runs),
        "timed_images": runs[0][2],
        "repeats": len(runs),
    }


def measure_pipeline(args, roots: dict[str, Path]) -> pd.DataFrame:
    """Rows of step timings (each image set) and DataLoader rates (each worker count), medians over repeats."""
    rows, started = [], time.perf_counter()
    for name, root in roots.items():
        meter = BusyMeter()
        runs = [time_steps(root, args.batch) for _ in range(args.repeats)]
        share = meter.others()
        for step in ("read", "decode", "item"):
            rows.append(
                {"set": name, "step": step, "workers": 0, "other_cpu": share, **_median_row([r[step] for r in runs])}
            )
            print(
                f"{name:>12}  {step:<7} {rows[-1]['images_per_s']:8.1f} img/s  ({time.perf_counter() - started:4.0f} s so far)",
                flush=True,
            )
    typical = roots["typical"]
    meter = BusyMeter()
    runs = [time_device_step(typical, args.batch, args.device_repeats) for _ in range(args.repeats)]
    rows.append({"set": "typical", "step": "device", "workers": 0, "other_cpu": meter.others(), **_median_row(runs)})
    by_workers: dict[int, list] = {w: [] for w in args.workers}
    shares: dict[int, list] = {w: [] for w in args.workers}
    for repeat in range(args.repeats):
        # Rotating the order spreads slow drifts (other jobs) over all worker counts alike, as throughput.py does.
        order = args.workers[repeat % len(args.workers) :] + args.workers[: repeat % len(args.workers)]
        for workers in order:
            meter = BusyMeter()
            by_workers[workers].append(time_loader(typical, workers, args.batch, args.loader_batches(workers)))
            shares[workers].append(meter.others())
            print(
                f"{'loader':>12}  {_workers(workers):<9}  repeat {repeat + 1}/{args.repeats}  "
                f"{by_workers[workers][-1][0]:8.1f} img/s  ({time.perf_counter() - started:4.0f} s so far)",
                flush=True,
            )
    for workers in args.workers:
        row = _median_row(by_workers[workers])
        rows.append(
            {
                "set": "typical",
                "step": "loader",
                "workers": workers,
                "other_cpu": statistics.mean(shares[workers]),
                **row,
            }
        )
    table = pd.DataFrame(rows)
    table["images_per_s_per_worker"] = table["images_per_s"] / table["workers"].clip(lower=1)
    table["ms_per_image"] = 1e3 / table["images_per_s"]
    return table


def measure_models(args) -> pd.DataFrame:
    rows = []
    for name in args.models:
        meter = BusyMeter()
        rate = time_model(name, args.model_batch, args.warmup, args.iters, args.precision, args.model_size)
        mult_adds = count_multiply_adds(build_model(name), args.model_size)
        rows.append(
            {
                "model": name,
                "images_per_s": rate,
                "s_per_iter": args.model_batch / rate,
                "mult_adds": mult_adds,
                "gflops": 3 * mult_adds * 2 * rate / 1e9,  # backward ~ 2x forward, as throughput.py counts
                "epoch_hours": ILSVRC2012_SIZES["train"] / rate / 3600,
                "paper_schedule_days": PAPER_IMAGES / rate / 86400,
                "other_cpu": meter.others(),
            }
        )
        print(
            f"{name:>12}  {rate:8.2f} img/s  ({args.model_batch / rate:.2f} s per iteration of {args.model_batch})",
            flush=True,
        )
    return pd.DataFrame(rows)


# --- rendering ------------------------------------------------------------------------------------


def _workers(n: int) -> str:
    return "the main process" if n == 0 else f"{int(n)} worker" + ("s" if n != 1 else "")


def _busy_line(share: float, load_start: float, load_end: float, niced: float = float("nan")) -> str:
    low = (
        f"; {100 * niced:.0f} points of it at low priority (nice > 0), which yields the CPU to this run"
        if niced >= 0.005
        else ""
    )
    line = (
        f"- other processes used {100 * share:.0f}% of the CPU during these measurements{low} (load average at "
        f"start {load_start}, at the end {load_end} including this run)"
    )
    return line + (
        ": the machine was busy, so these numbers are low and noisy (not representative)" if share >= BUSY else ""
    )


def _where(info: dict, share: float, niced: float) -> list[str]:
    return [
        "## Where",
        "",
        f"- command: `{info['command']}`",
        f"- date: {info['date']}; commit {info['commit']}",
        f"- machine: CPU {info['cpu']}; {info['cores']}; native bf16: {info['bf16']}",
        _busy_line(share, info["load_start"], info["load_end"], niced),
        f"- versions: python {info['python']}, torch {info['torch']}, torchvision {info['torchvision']}, "
        f"lightning {info['lightning']}",
        "",
    ]


def render_pipeline(table: pd.DataFrame, sets: dict[str, dict], info: dict) -> str:
    """imagenet-pipeline.md: where a worker's time goes, then the DataLoader per worker count, then how."""
    steps = table[table.step != "loader"].set_index(["set", "step"])
    loader = table[table.step == "loader"]
    typical = sets["typical"]
    per_worker = loader.set_index("workers", drop=False)
    one = per_worker.loc[1] if 1 in per_worker.index else per_worker.iloc[0]
    verdict = "meets" if one.images_per_cpu_s >= TARGET_PER_CORE else "does not meet"
    lines = [
        "# ImageNet training pipeline: images/s per worker" + (" (smoke run: says nothing)" if info["smoke"] else ""),
        "",
        f"Target: at least {TARGET_PER_CORE} training images/s per CPU core (the per-core rate FFCV reports for "
        "full-resolution ImageNet JPEGs). "
        f"Measured: {one.images_per_s_per_worker:.0f} images/s with {_workers(one.workers)}, "
        f"{one.images_per_cpu_s:.0f} per CPU-second of the worker: this {verdict} the target"
        + (" on a busy machine (see Where)" if one.other_cpu >= BUSY else "")
        + ". Generated by `benchmarks/imagenet_pipeline.py`; median of "
        f"{int(one.repeats)} repeat(s) [min–max].",
        "",
        "## The training DataLoader, per worker count",
        "",
        f"`ImageNetDataModule.train_dataloader()` on {typical['images']} generated JPEGs of "
        f"{typical['width']}x{typical['height']} (what training iterates: each item a whole batch of "
        f"{info['batch']}, built by one worker; uint8 out, before the device step). Workers 0 = the main process "
        "(on one torch thread here). Per worker = images/s ÷ max(workers, 1); per CPU-second = images ÷ the CPU "
        "time the workers used in the timed interval (what one dedicated core would do; less affected by other "
        "processes than images/s).",
        "",
        "| workers | images/s | per worker | per CPU-second | ms/image | other processes' CPU |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in loader.iterrows():
        lines.append(
            f"| {int(r.workers)} | {r.images_per_s:.0f} [{r.images_per_s_min:.0f}–{r.images_per_s_max:.0f}] | "
            f"{r.images_per_s_per_worker:.0f} | {r.images_per_cpu_s:.0f} | {r.ms_per_image:.2f} | {100 * r.other_cpu:.0f}% |"
        )
    best = loader.images_per_cpu_s.max()
    lines += [
        "",
        f"At {best:.0f} images per worker CPU-second (the best row), a GPU that trains at 1,000 images/s needs "
        f"about {1000 / best:.1f} cores of workers to keep up; at the target, {1000 / TARGET_PER_CORE:.1f}.",
        "",
        "## Where a worker's time goes (one process, one thread)",
        "",
        "| images | JPEG size | step | images/s | per CPU-second | ms/image | of the item |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, made in sets.items():
        item_ms = steps.loc[(name, "item"), "ms_per_image"]
        for step in ("read", "decode", "item", "device"):
            if (name, step) not in steps.index:
                continue
            r = steps.loc[(name, step)]
            share = f"{100 * r.ms_per_image / item_ms:.0f}%" if step != "device" else "–"
            lines.append(
                f"| {name} {made['width']}x{made['height']} | {made['kb_mean']:.0f} KB | {STEPS[step]} | "
                f"{r.images_per_s:.0f} | {r.images_per_cpu_s:.0f} | {r.ms_per_image:.2f} | {share} |"
            )
    item = steps.loc[("typical", "item"), "ms_per_image"]
    decode_ms = steps.loc[("typical", "decode"), "ms_per_image"]
    lines += [
        "",
        f"For the typical images, JPEG decoding is {100 * decode_ms / item:.0f}% of a worker's item and the "
        f"resize + crop + flip (+ stacking the batch) the other {100 * (1 - decode_ms / item):.0f}%. "
        "The large set shows what a big photo costs and what pre-resizing its file to shorter side 480 "
        "saves; images already at or below 480 (ImageNet's typical 500x375) are unchanged by it.",
        "",
        "## What was measured",
        "",
        "- the images (generated, then reused; not photos): "
        + "; ".join(
            f"{name}: {m['images']} training JPEGs of {m['width']}x{m['height']}, quality {QUALITY}, "
            f"{m['kb_mean']:.0f} KB mean [{m['kb_min']:.0f}–{m['kb_max']:.0f}]"
            for name, m in sets.items()
        )
        + ". Content: smooth random fields at five scales plus ±12 pixel noise, tuned so file sizes match "
        "ImageNet's (~110 KB at 500x375); the pre-resized set is the large set decoded, resized (bicubic) and "
        "encoded again.",
        "- files are read from the page cache (read once before timing): the disk is not measured.",
        "- steps: `torchvision.io.read_file`; `resnet_repro.data.imagenet.decode`; `TrainImageBatches[i]`, the "
        "worker's item with its seeded draws; `ImageNetDataModule.on_after_batch_transfer` on one batch (on a GPU "
        "this runs there, not on the CPU).",
        f"- DataLoader: {info['warmup_note']}; then {info['timed_note']} timed.",
        f"- torch threads in the main process: {info['pipeline_threads']} (DataLoader workers use 1 each).",
        "",
        *_where(info, info["pipeline_share"], info["niced_share"]),
    ]
    return "\n".join(lines)


def render_training(table: pd.DataFrame, info: dict) -> str:
    """imagenet-training.md: training images/s of the Table 1 nets on this machine, and what a schedule costs."""
    label = "fp32" if info["precision"] == "32-true" else info["precision"]
    lines = [
        "# ImageNet training speed of the Table 1 nets" + (" (smoke run: says nothing)" if info["smoke"] else ""),
        "",
        f"Training images/s at {info['model_size']}x{info['model_size']}, batch {info['model_batch']}"
        + (" (the paper's per-GPU batch: 256 over 8 GPUs)" if info["model_batch"] == 32 else "")
        + f", {label}, channels_last, forward + backward + SGD step (momentum 0.9, weight decay 1e-4), on "
        f"{info['device']}, torch threads {info['threads']}: {info['warmup']} warm-up + {info['iters']} timed "
        "iteration(s) of synthetic input, so no data loading. Generated by `benchmarks/imagenet_pipeline.py`.",
        "",
        "| model | images/s | s/iteration | forward mult-adds | GFLOP/s | one epoch (1.28M images) | the paper's "
        "60e4 x 256 | other processes' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r.model} | {r.images_per_s:.1f} | {r.s_per_iter:.2f} | {r.mult_adds / 1e9:.2f}G | {r.gflops:.0f} | "
            f"{r.epoch_hours:.0f} h | {r.paper_schedule_days:.0f} days | {100 * r.other_cpu:.0f}% |"
        )
    fastest = table.images_per_s.max()
    lines += [
        "",
        f"Feeding even the fastest of these ({fastest:.0f} images/s) needs {fastest / TARGET_PER_CORE:.2f} cores "
        f"of the pipeline at the {TARGET_PER_CORE} images/s-per-core target: on a CPU the nets, not the JPEGs, set "
        "the pace, and ImageNet training needs GPUs. A GPU training at R images/s needs about R ÷ (the pipeline's "
        "images/s per worker, imagenet-pipeline.md) workers, each on its own core.",
        "",
        "GFLOP/s = 3 x forward multiply-adds x 2 x images/s (backward counted as twice the forward), as "
        "benchmarks/throughput.py computes it.",
        "",
        *_where(info, info["training_share"], info["niced_share"]),
    ]
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workers", default=None, help="DataLoader worker counts to measure (default 0,1,2; --smoke 0,1)"
    )
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated ImageNet nets")
    parser.add_argument(
        "--batch", type=int, default=None, help="pipeline batch per worker item (default 64; --smoke 4)"
    )
    parser.add_argument(
        "--images", type=int, default=None, help="timed images per DataLoader measurement (default 1536; --smoke 8)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="repeats of the pipeline measurements (default 3)")
    parser.add_argument("--model-batch", type=int, default=None, help="batch for the nets (default 32; --smoke 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per net")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per net (default 3; --smoke 1)")
    parser.add_argument(
        "--precision",
        choices=list(throughput.AUTOCAST),
        default="32-true",
        help="autocast for the nets, as `resnet-repro train --precision` (default: fp32)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for the nets (default: torch's; --smoke 1)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the generated JPEGs here (outside the repository; default: a temp dir)",
    )
    parser.add_argument("--out", type=Path, default=None, help="where the .md/.csv go (default results/benchmarks)")
    parser.add_argument("--smoke", action="store_true", help="every step in seconds on a few images; says nothing")
    parser.add_argument(
        "--only", choices=["pipeline", "training"], default=None, help="measure and write one page only"
    )
    return parser


def _settings(args) -> None:
    smoke = args.smoke
    args.workers = [int(w) for w in (args.workers or ("0,1" if smoke else "0,1,2")).split(",") if w.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in args.models:
        if model_info(name).family != "imagenet":  # UnknownModelError for a bad name
            raise UserError(f"{name} is a CIFAR net: this benchmark trains the ImageNet nets (resnet18, resnet50, ...)")
    defaults = {"batch": (4, 64), "images": (8, 1536), "repeats": (1, 3), "model_batch": (2, 32), "iters": (1, 3)}
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if smoke else full)
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.workers or min(args.workers) < 0 or args.warmup < 0:
        raise UserError("--workers needs counts >= 0 and --warmup must be >= 0")
    if args.threads is None and smoke:
        args.threads = 1  # smoke checks the plumbing: one thread keeps it short on a shared machine
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    args.per_class = 2 if smoke else 128
    args.large = ((800, 600), 1) if smoke else ((2000, 1500), 6)  # (size, per class)
    args.device_repeats = 2 if smoke else 20
    args.model_size = 64 if smoke else CROP  # smoke: the nets on 64x64 inputs, so the step takes seconds
    timed = -(-args.images // args.batch)
    args.loader_batches = lambda workers: max(timed, 2 * workers)
    if args.cache is not None:
        args.cache = args.cache.expanduser().resolve()
        if args.cache.is_relative_to(REPO):
            raise UserError(f"--cache {args.cache} is inside the repository; put the generated JPEGs elsewhere")
    if args.out is None:
        args.out = (
            Path(tempfile.mkdtemp(prefix="imagenet-pipeline-smoke-")) if smoke else REPO / "results" / "benchmarks"
        )


def _bf16() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return (
        "yes (" + ", ".join(found) + ")"
        if found
        else "no (neither avx512_bf16 nor amx_bf16): bf16 autocast is slow here"
    )


def _machine(args, meter: BusyMeter) -> dict:
    """What both pages say about where and how they were measured."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else meter.cores
    return {
        **provenance(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": throughput._cpu_model(),
        "device": f"CPU {throughput._cpu_model()}",
        "cores": f"{meter.cores} logical cores ({usable} usable)",
        "bf16": _bf16(),
        "load_start": meter.load_start,
        "command": "python benchmarks/imagenet_pipeline.py " + shlex.join(args.argv),
        "smoke": args.smoke,
    }


def _common(info: dict) -> dict:
    return {"device": info["device"], "commit": info["commit"], "date": info["date"]}


def run_pipeline(args, info: dict) -> float:
    """Generate (or reuse) the JPEGs, measure the pipeline, write imagenet-pipeline.md/.csv; the busy share."""
    scratch = None if args.cache else tempfile.TemporaryDirectory(prefix="imagenet-jpegs-")
    cache = args.cache or Path(scratch.name)
    try:
        made = time.perf_counter()
        large = make_root(cache, *args.large)
        roots = {
            "typical": make_root(cache, (500, 375), args.per_class),
            "large": large,
            "large, pre-resized to 480": pre_resize(large, 480),
        }
        sets = {name: describe(root) for name, root in roots.items()}
        for name, m in sets.items():
            print(
                f"imagenet_pipeline: {name}: {m['images']} JPEGs of {m['width']}x{m['height']}, "
                f"{m['kb_mean']:.0f} KB mean [{m['kb_min']:.0f}–{m['kb_max']:.0f}] in {cache}",
                flush=True,
            )
        print(f"imagenet_pipeline: images ready in {time.perf_counter() - made:.0f} s", flush=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the main process as one worker: per-core numbers
        meter = BusyMeter()
        try:
            table = measure_pipeline(args, roots)
        finally:
            torch.set_num_threads(threads)
        share, niced = meter.others(), meter.others_niced()
    finally:
        if scratch is not None:
            scratch.cleanup()
    table = table.assign(
        image_size=[f"{sets[s]['width']}x{sets[s]['height']}" for s in table["set"]],
        jpeg_kb=[sets[s]["kb_mean"] for s in table["set"]],
        batch_size=args.batch,
        torch_threads=1,
        other_cpu_run=share,
        other_cpu_run_niced=niced,
        **_common(info),
    )[PIPELINE_COLUMNS]
    timed = args.loader_batches(0)
    page = {
        **info,
        "load_end": throughput._load(),
        "batch": args.batch,
        "warmup_note": "2 batches per worker (+1) untimed, so start-up and the first prefetched batches are not timed",
        "timed_note": f"{timed} batches ({timed * args.batch} images) per measurement",
        "pipeline_threads": 1,
        "pipeline_share": share,
        "niced_share": niced,
    }
    table.to_csv(args.out / "imagenet-pipeline.csv", index=False, float_format="%.4g")
    (args.out / "imagenet-pipeline.md").write_text(render_pipeline(table, sets, page))
    print(f"imagenet_pipeline: wrote {args.out / 'imagenet-pipeline.md'} and .csv", flush=True)
    return share


def run_training(args, info: dict) -> float:
    """Time the nets, write imagenet-training[-PRECISION].md/.csv; the busy share."""
    if args.threads:
        torch.set_num_threads(args.threads)
    meter = BusyMeter()
    table = measure_models(args)
    share, niced = meter.others(), meter.others_niced()
    threads = torch.get_num_threads()
    table = table.assign(
        precision=args.precision,
        batch_size=args.model_batch,
        image_size=args.model_size,
        channels_last=True,
        warmup_iters=args.warmup,
        timed_iters=args.iters,
        threads=threads,
        other_cpu_run=share,
        other_cpu_run_niced=niced,
        **_common(info),
    )[TRAINING_COLUMNS]
    page = {
        **info,
        "load_end": throughput._load(),
        "training_share": share,
        "niced_share": niced,
        "precision": args.precision,
        "model_batch": args.model_batch,
        "model_size": args.model_size,
        "warmup": args.warmup,
        "iters": args.iters,
        "threads": threads,
    }
    stem = "imagenet-training" + ("" if args.precision == "32-true" else f"-{args.precision}")
    table.to_csv(args.out / f"{stem}.csv", index=False, float_format="%.4g")
    (args.out / f"{stem}.md").write_text(render_training(table, page))
    print(f"imagenet_pipeline: wrote {args.out / stem}.md and .csv", flush=True)
    return share


def run(args) -> int:
    _settings(args)
    meter = BusyMeter()
    print(
        f"imagenet_pipeline: torch {torch.__version__}, load average {meter.load_start} on {meter.cores} cores",
        flush=True,
    )
    if meter.load_start > 0.5 * meter.cores:
        print("imagenet_pipeline: warning: the machine is busy; numbers will be low and noisy", flush=True)
    info = _machine(args, meter)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"pipeline": run_pipeline, "training": run_training}
    for part, measure in parts.items():
        if args.only in (None, part) and (share := measure(args, info)) >= BUSY:
            print(
                f"imagenet_pipeline: warning: other processes used {100 * share:.0f}% of the CPU during the {part} "
                "measurements; measure again on an idle machine",
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, generate the JPEGs, measure, write the pages; 2 on a user mistake, as the CLI does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return exit_status("imagenet_pipeline", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
