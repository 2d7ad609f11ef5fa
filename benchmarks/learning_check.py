"""A learning check of the Sec. 3.4 ImageNet path on real photos: ResNet-18 on CIFAR-10 upscaled 8x.

No ImageNet is needed. The data is CIFAR-10 upscaled 8x into the ILSVRC folder layout; a learning check of
the pipeline, not an ImageNet result. Built once (reused while complete; an interrupted build is rebuilt):
OUT/train/<class>/<class>_NNNN.JPEG holds the first --train-per-class images (by file name) of each class of
CIFAR-10's training split (default 300) and OUT/val/<class>/ the first --val-per-class of its test split
(default 50), each resized with PIL's bicubic filter so its shorter side is 256 (32x32 -> 256x256) and saved
as JPEG quality 90. Then the real CLI trains ResNet-18 on it with Sec. 3.4's whole pipeline (shorter side
drawn from [256, 480], random 224 crop and flip, PCA colour shift, per-pixel mean) and tests the last
iterate under the three test protocols (each saving its per-image probabilities):

    resnet-repro train resnet18 --data OUT --subset 10 --iterations 300 --batch-size 32 --workers 1 \
        --eval-every 75 --log-every 15 --milestones 150,225 --out RUNS --name NAME --wandb off
    resnet-repro evaluate resnet18 --checkpoint RUNS/NAME/checkpoints/last.ckpt --protocol center|10crop|multiscale

Budget (defaults), sized for the 2-core Xeon (2.6 GHz, AVX-512 without BF16) this was written on, where ResNet-18
at 224 trains at ~4.5 img/s through the whole pipeline (~5 img/s for the network alone on synthetic input):
300 iterations of 32 images (9,600 images: each of the 3,000 training images ~3 times) at lr 0.1 x 32 / 256
= 0.0125 (Sec. 3.4's rule for the batch), divided by 10 at 50% and 75% of the run: ~37 min of training with
its centre-crop evaluations, then ~40 s (center, 500 images), ~5 min (10crop) and ~16 min (multiscale on the
first 200 val images: ~4.7 s each at five scales and flips; see --multiscale-limit). There it reached (seed 0):
train error 70.0%; val top-1 / top-5 error 62.8% / 12.0% (center), 63.4% / 11.4% (10crop), and on the first
200 images 76.5% / 14.0% (multiscale) against 68.0% / 13.5% (center); chance 90% / 50%. A faster machine
affords more: e.g. --train-per-class 1300 --val-per-class 100 --iterations 1500 --eval-every 250
--log-every 25 --multiscale-limit 0.
DEVIATION (the CLI's ImageNet default: /10 at 25% and 50%, for 600k iterations): a run of a few passes spends
most of itself before any plateau, so it takes the CIFAR shape (50%, 75%); --milestones-percent 25,50 restores
the CLI's.

    python benchmarks/learning_check.py --archive PATH/cifar10-jpg.tar.gz      # build, train, test: ~1 h
    python benchmarks/learning_check.py --archive PATH/cifar10-jpg.tar.gz --build-only

Chance on 10 classes: 90% top-1 error, 50% top-5 error. Writes nothing into the repository: OUT and RUNS
default to ~/.cache/resnet-repro-learning-check/; the summary is printed and saved as RUNS/NAME/learning-check.md.
"""

import argparse
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from resnet_repro.errors import DataError, UserError, exit_status
from resnet_repro.rundir import RunDir

WHAT = "CIFAR-10 upscaled 8x into the ILSVRC folder layout; a learning check of the pipeline, not an ImageNet result"
CACHE = Path.home() / ".cache" / "resnet-repro-learning-check"
MODEL = "resnet18"
SIDE = 256  # shorter side after upscaling: the center and 10crop protocols' test scale
QUALITY = 90
MARKER = "learning-check.json"  # written last: a tree without it is incomplete
SPLITS = {"train": "train", "test": "val"}  # CIFAR-10's split -> the ILSVRC folder it fills
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PROTOCOLS = ("center", "10crop", "multiscale")
CHANCE = {"top1": 90.0, "top5": 50.0}  # 10 classes: 9/10 wrong at top-1, 5/10 at top-5


# --- the folder tree ---------------------------------------------------------------------------------


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _identity(source: Path) -> dict:
    """What the tree was built from: the archive's sha256, or a folder's listing (names and sizes)."""
    digest = hashlib.sha256()
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file():
                digest.update(f"{path.relative_to(source).as_posix()}\0{path.stat().st_size}\n".encode())
        return {"path": str(source.resolve()), "listing_sha256": digest.hexdigest()}
    if not source.is_file():
        raise UserError(f"--archive {source} does not exist: pass the CIFAR-10 ImageFolder .tar.gz or folder")
    with open(source, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"path": str(source.resolve()), "sha256": digest.hexdigest()}


def _source_files(source: Path) -> dict[tuple[str, str], dict[str, object]]:
    """(split, class) -> {file name: bytes or Path} of a CIFAR-10 ImageFolder archive or folder."""
    found: dict[tuple[str, str], dict[str, object]] = {}

    def add(parts: tuple[str, ...], content: object) -> None:
        if len(parts) >= 3 and parts[-3] in SPLITS and not any(_hidden(p) for p in parts):
            if parts[-1].lower().endswith(IMAGE_SUFFIXES):
                found.setdefault((parts[-3], parts[-2]), {})[parts[-1]] = content

    if source.is_dir():
        for path in source.rglob("*"):
            if path.is_file():
                add(path.relative_to(source).parts, path)
    else:
        try:
            if source.name.lower().endswith(".zip"):
                with zipfile.ZipFile(source) as zf:
                    for info in zf.infolist():
                        if not info.is_dir():
                            add(PurePosixPath(info.filename).parts, zf.read(info))
            else:
                with tarfile.open(source, "r:*") as tf:
                    for member in tf:
                        if member.isfile():
                            add(PurePosixPath(member.name).parts, tf.extractfile(member).read())
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DataError(f"cannot read archive {source} ({exc}); it is corrupt or truncated") from None
    if not found:
        raise DataError(f"{source} holds no train/<class>/*.jpg or test/<class>/*.jpg images (an ImageFolder copy)")
    return found


def _choose(found: dict, train_per_class: int, val_per_class: int, source: Path) -> list[tuple[str, str, str, object]]:
    """(folder, class, name, content) of the images to write: the first N per class of each split, by name."""
    classes = sorted({cls for split, cls in found if split == "train"})
    chosen = []
    for split, count in (("train", train_per_class), ("test", val_per_class)):
        for cls in classes:
            files = found.get((split, cls), {})
            if len(files) < count:
                flag = "--train-per-class" if split == "train" else "--val-per-class"
                raise DataError(
                    f"{source} has {len(files)} {split} images of class {cls!r}, fewer than {count}; "
                    f"pass {flag} {len(files)} or fewer"
                )
            chosen += [(SPLITS[split], cls, name, files[name]) for name in sorted(files)[:count]]
    return chosen


def upscale(data: bytes, where: str) -> bytes:
    """One image resized (PIL bicubic) so its shorter side is SIDE, as JPEG bytes of quality QUALITY."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot decode {where} ({exc}); remove or replace it") from None
    w, h = rgb.size
    size = (round(w * SIDE / min(w, h)), round(h * SIDE / min(w, h)))
    out = io.BytesIO()
    rgb.resize(size, Image.Resampling.BICUBIC).save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def _read_marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def build_tree(source: Path, out: Path, train_per_class: int, val_per_class: int, progress: bool = True) -> dict:
    """Build (or reuse) the ILSVRC-layout tree at `out`; its marker's contents, with "reused" and "seconds"."""
    from tqdm import tqdm

    started = time.perf_counter()
    wanted = {
        "what": WHAT,
        "source": _identity(source),
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "shorter_side": SIDE,
        "resize": "PIL bicubic",
        "jpeg_quality": QUALITY,
    }
    marker = _read_marker(out)
    if marker is not None and {k: marker.get(k) for k in wanted} == wanted:
        return {**marker, "reused": True, "seconds": time.perf_counter() - started}
    if out.exists() and marker is None and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"{out} exists and is not a tree this script built (no {MARKER}); remove it or pass another --out"
        )
    chosen = _choose(_source_files(source), train_per_class, val_per_class, source)
    staging = out.with_name(out.name + ".partial")
    if staging.exists():  # an interrupted build
        shutil.rmtree(staging)
    counts: dict[str, int] = {}
    for folder, cls, name, content in tqdm(chosen, desc="upscaling", unit="img", disable=not progress):
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        target = staging / folder / cls / f"{cls}_{Path(name).stem}.JPEG"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(upscale(data, f"{source}:{folder}/{cls}/{name}"))
        counts[folder] = counts.get(folder, 0) + 1
    record = {
        **wanted,
        "classes": sorted({cls for _, cls, _, _ in chosen}),
        "images": counts,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (staging / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    if out.exists():  # ours (an older marker) or empty
        shutil.rmtree(out)
    os.replace(staging, out)
    return {**record, "reused": False, "seconds": time.perf_counter() - started}


# --- training and testing through the CLI ------------------------------------------------------------


def _cli(arguments: list[str]) -> tuple[int, float]:
    """Run `resnet-repro ARGUMENTS` (this interpreter's) in a subprocess: exit status and wall seconds."""
    print(f"$ resnet-repro {shlex.join(arguments)}", flush=True)
    started = time.perf_counter()
    status = subprocess.call([sys.executable, "-m", "resnet_repro", *arguments])
    return status, time.perf_counter() - started


def milestones(args) -> list[int]:
    return [round(args.iterations * p / 100) for p in args.milestones_percent]


def train_arguments(args, out: Path, classes: int, name: str) -> list[str]:
    arguments = [
        "train",
        MODEL,
        "--data",
        str(out),
        "--subset",
        str(classes),
        "--iterations",
        str(args.iterations),
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--eval-every",
        str(args.eval_every),
        "--log-every",
        str(args.log_every),
        "--checkpoint-every",
        str(args.eval_every),
        "--milestones",
        ",".join(map(str, milestones(args))),
        "--seed",
        str(args.seed),
        "--out",
        str(args.runs),
        "--name",
        name,
        "--wandb",
        "off",
    ]
    if args.threads is not None:
        arguments += ["--threads", str(args.threads)]
    if not args.progress:
        arguments.append("--no-progress")
    if (args.runs / name / "checkpoints" / "last.ckpt").is_file():
        arguments.append("--resume")  # continues an interrupted run; a finished one is left as it is
    return arguments


def evaluate_arguments(args, checkpoint: Path, protocol: str) -> list[str]:
    arguments = ["evaluate", MODEL, "--checkpoint", str(checkpoint), "--protocol", protocol]
    # Per-image probabilities too: a --limit'ed multiscale test is then compared on the same images.
    arguments += ["--workers", str(args.workers), "--keep-probabilities"]
    if protocol == "multiscale" and args.multiscale_limit is not None:
        arguments += ["--limit", str(args.multiscale_limit)]
    if not args.progress:
        arguments.append("--no-progress")
    return arguments


def _evaluate_available() -> bool:
    probe = [sys.executable, "-m", "resnet_repro", "evaluate", "--help"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _errors(path: Path, n: int) -> dict:
    """Top-1 and top-5 error (%) of the first `n` images of an evaluation's saved probabilities, and their classes."""
    import torch

    saved = torch.load(path)
    probabilities, labels = saved["probabilities"][:n].float(), saved["labels"][:n]
    top = probabilities.topk(min(5, probabilities.shape[1]), dim=1).indices
    return {
        "top1": 100.0 * (top[:, 0] != labels).float().mean().item(),
        "top5": 100.0 * (top != labels[:, None]).all(dim=1).float().mean().item(),
        "classes": [saved["classes"][i] for i in labels.tolist()],
    }


def summary(tree: dict, out: Path, run_dir: Path, walls: dict) -> str:
    """The check's result as Markdown: data, budget, speed, the curves' ends, the protocols vs chance, wall times."""
    from resnet_repro.records import read_run
    from resnet_repro.tables import format_duration

    record, curves = read_run(run_dir)
    final, spec = record.get("final", {}), record["spec"]
    images = record.get("iterations", 0) * spec["batch_size"]
    logged = curves["throughput"].dropna()
    test = curves.dropna(subset=["test/error"])
    lines = [
        f"# Learning check of the ImageNet path: {MODEL} on {WHAT}",
        "",
        f"- data: `{out}`: {tree['images'].get('train')} train / {tree['images'].get('val')} val images, "
        f"{len(tree['classes'])} classes; CIFAR-10's first {tree['train_per_class']} train and "
        f"{tree['val_per_class']} test images per class from `{tree['source']['path']}`, upscaled (PIL bicubic) to "
        f"shorter side {tree['shorter_side']}, JPEG quality {tree['jpeg_quality']}",
        f"- run: `{run_dir}` ({record.get('status')}): {record.get('iterations')} iterations of batch "
        f"{spec['batch_size']} ({images:,} images, {images / max(1, tree['images'].get('train', 1)):.1f} passes), "
        f"lr {spec['schedule']['lr']:g} /10 at {', '.join(map(str, spec['schedule']['milestones']))}; "
        f"{record.get('hardware', '')}",
        f"- training speed: {images / record['wall_time_s']:.1f} img/s over the whole run (evaluations included); "
        f"{logged.median():.1f} img/s median of the logged intervals",
        f"- final train error (running mean of the last {spec['log_every']} iterations, augmented): "
        f"{final.get('train/error', float('nan')):.2f}%",
        "- centre-crop val error during training (top-1 / top-5, %): "
        + ", ".join(f"{int(r.step)}: {r['test/error']:.1f} / {r['test/top5_error']:.1f}" for _, r in test.iterrows()),
        "",
        "| protocol | val images | top-1 error | top-5 error | wall time |",
        "|---|---:|---:|---:|---:|",
    ]
    evaluations = record.get("evaluations") or {}
    for protocol in PROTOCOLS:
        if (result := evaluations.get(protocol)) is None:
            lines.append(f"| {protocol} | – | not run | not run | – |")
            continue
        wall = walls.get(protocol)
        lines.append(
            f"| {protocol} | {result['images']:,} | {result['top1_error']:.2f}% | {result['top5_error']:.2f}% | "
            f"{format_duration(wall) if wall is not None else format_duration(result['seconds']) + ' (earlier)'} |"
        )
    lines.append(f"| chance (10 classes) | | {CHANCE['top1']:.0f}% | {CHANCE['top5']:.0f}% | |")
    # A --limit'ed protocol is compared with the others on the same images, from the saved probabilities.
    limit = (evaluations.get("multiscale") or {}).get("limit")
    same = None
    if limit is not None and all((evaluations.get(p) or {}).get("probabilities") for p in PROTOCOLS):
        n = evaluations["multiscale"]["images"]
        same = {p: _errors(run_dir / evaluations[p]["probabilities"], n) for p in PROTOCOLS}
        lines += [
            "",
            f"On the first {n} val images, the ones multiscale tested (evaluate --limit takes them in class order: "
            f"{', '.join(sorted(set(same['multiscale']['classes'])))}), top-1 / top-5 error: "
            + "; ".join(f"{p} {e['top1']:.2f}% / {e['top5']:.2f}%" for p, e in same.items()),
        ]
    if "center" in evaluations:
        lines.append("")
        for protocol in PROTOCOLS[1:]:
            if (result := evaluations.get(protocol)) is None:
                continue
            on_same = result["images"] != evaluations["center"]["images"]
            if on_same and same is None:
                continue  # no per-image probabilities to compare on the same images
            parts = []
            for k in ("top1", "top5"):
                ours, theirs = (
                    (same[protocol][k], same["center"][k])
                    if on_same
                    else (result[f"{k}_error"], evaluations["center"][f"{k}_error"])
                )
                word = "beats" if ours < theirs else "ties" if ours == theirs else "loses to"
                parts.append(f"{k} {ours:.2f}% vs {theirs:.2f}% ({ours - theirs:+.2f} points: {word} it)")
            note = f" (on the same first {result['images']} val images)" if on_same else ""
            lines.append(f"- {protocol} vs the centre crop{note}: " + "; ".join(parts))
    lines += ["", "Wall times: " + "; ".join(f"{k} {format_duration(v)}" for k, v in walls.items()) + "."]
    return "\n".join(lines) + "\n"


def check(args) -> int:
    for flag, value in (
        ("--train-per-class", args.train_per_class),
        ("--val-per-class", args.val_per_class),
        ("--iterations", args.iterations),
        ("--batch-size", args.batch_size),
        ("--eval-every", args.eval_every),
        ("--log-every", args.log_every),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.workers < 0:
        raise UserError(f"--workers must be at least 0, got {args.workers}")
    if args.multiscale_limit is not None and args.multiscale_limit < 0:
        raise UserError(f"--multiscale-limit must be at least 0 (0: all), got {args.multiscale_limit}")
    args.multiscale_limit = args.multiscale_limit or None
    drops = args.milestones_percent
    if not all(0 < p < 100 for p in drops) or drops != sorted(set(drops)):
        raise UserError(f"--milestones-percent must be increasing percentages between 0 and 100, got {drops}")
    print(f"{WHAT}.", flush=True)
    tree = build_tree(args.archive, args.out, args.train_per_class, args.val_per_class, args.progress)
    how = "reused" if tree["reused"] else "built"
    print(
        f"{how} {args.out}: {tree['images']['train']} train / {tree['images']['val']} val images, "
        f"{len(tree['classes'])} classes, shorter side {SIDE}, JPEG q{QUALITY}, in {tree['seconds']:.0f} s",
        flush=True,
    )
    walls = {"build" if how == "built" else "build (reused)": tree["seconds"]}
    if args.build_only:
        return 0
    name = args.name or f"{MODEL}-i{args.iterations}-b{args.batch_size}-s{args.seed}"
    run_dir = args.runs / name
    status, walls["train"] = _cli(train_arguments(args, args.out, len(tree["classes"]), name))
    if status != 0:
        print(f"learning check: training stopped with exit status {status}; {run_dir} holds what it wrote")
        return status
    if not _evaluate_available():
        print("learning check: this resnet-repro has no `evaluate` command yet; the protocols are not tested")
    else:
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        record = RunDir(run_dir).read_record() or {}
        for protocol in PROTOCOLS:
            done = (record.get("evaluations") or {}).get(protocol) or {}
            limit = args.multiscale_limit if protocol == "multiscale" else None
            if (
                done.get("iteration") == record.get("iterations")
                and done.get("limit") == limit
                and done.get("probabilities")
            ):
                print(f"{protocol}: recorded earlier for iteration {done['iteration']} in {run_dir}/run.json; reused")
                continue
            status, walls[protocol] = _cli(evaluate_arguments(args, checkpoint, protocol))
            if status != 0:
                print(f"learning check: `evaluate --protocol {protocol}` failed with exit status {status}")
                del walls[protocol]
    text = summary(tree, args.out, run_dir, walls)
    (run_dir / "learning-check.md").write_text(text)
    print("\n" + text + f"\n(saved as {run_dir / 'learning-check.md'})")
    return 0


def _percentages(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated percentages such as 50,75; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/learning_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archive", type=Path, required=True, help="CIFAR-10 as an ImageFolder (train/, test/) .tar.gz, .zip or folder"
    )
    parser.add_argument("--out", type=Path, default=CACHE / "imagenet-layout", help="the ILSVRC-layout tree to build")
    parser.add_argument("--runs", type=Path, default=CACHE / "runs", help="runs directory of the training run")
    parser.add_argument("--name", default=None, help="run directory name (default: resnet18-iI-bB-sSEED)")
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--val-per-class", type=int, default=50, help="from CIFAR-10's test split")
    parser.add_argument("--build-only", action="store_true", help="build the tree and stop")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="lr follows it: 0.1 x batch / 256")
    parser.add_argument(
        "--milestones-percent",
        type=_percentages,
        default=[50.0, 75.0],
        help="lr /10 at these percentages of --iterations (the CLI's ImageNet default: 25,50)",
    )
    parser.add_argument("--eval-every", type=int, default=75, help="iterations between centre-crop val evaluations")
    parser.add_argument("--log-every", type=int, default=15, help="a divisor of --eval-every (checkpoints follow it)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader processes decoding JPEGs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of the training process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--multiscale-limit",
        type=int,
        default=200,
        help="test multiscale on the first N val images only (~3 s each on 2 CPU cores); they come class by class, "
        "so the three protocols are also compared on these N alone; 0: all",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.archive, args.out, args.runs = (p.expanduser() for p in (args.archive, args.out, args.runs))
    return exit_status("learning_check", lambda: check(args))


if __name__ == "__main__":
    raise SystemExit(main())
