"""`resnet-repro train MODEL`: one run with the paper's protocol by default: CIFAR-10 (Sec. 4.2) for the
6n+2 nets, ImageNet (Sec. 3.4) for the Table 1 nets; the model decides the dataset."""

import argparse
import dataclasses
import math
import re
import sys
import time
from pathlib import Path

from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.data.imagenet import ImageNetConfig
from resnet_repro.errors import EXIT_CTRL_C, EXIT_DIVERGED, EXIT_SIGTERM, EXIT_TIME_LIMIT, UserError
from resnet_repro.spec import TrainSpec, imagenet_lr

# The dataset a model family trains on (the paper's: CIFAR-10 for the 6n+2 nets, ImageNet for Table 1's).
FAMILY_DATASET = {"cifar": "cifar10", "imagenet": "imagenet"}


def _milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"milestones must be comma-separated iterations, e.g. 32000,48000; got {text!r}"
        ) from None


def parse_duration(text: str) -> float:
    """'540', '540s', '9m', '1.5h' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 540, 540s, 9m or 1.5h; got {text!r}")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that change a run's numbers; defaults: the paper's protocol of the model's dataset."""
    d = TrainSpec()
    parser.add_argument(
        "--iterations", type=int, default=None, help="stop after this many iterations (paper: 64000; ImageNet 600000)"
    )
    parser.add_argument(
        "--milestones",
        type=_milestones,
        default=None,
        help="iterations where lr is divided by 10 (paper: 32000,48000, i.e. 50%%,75%% of --iterations; "
        "ImageNet: 150000,300000, i.e. 25%%,50%%)",
    )
    parser.add_argument(
        "--lr",
        type=finite_float,
        default=None,
        help="base learning rate (paper: 0.1; ImageNet default 0.1 x batch / 256, the paper's at batch 256)",
    )
    parser.add_argument(
        "--lr-plateau",
        type=int,
        default=None,
        metavar="N",
        help="ImageNet's rule instead of milestones: lr /10 after N evaluations without improving the val error",
    )
    parser.add_argument(
        "--warmup",
        choices=["auto", "on", "off"],
        default="auto",
        help="lr 0.01 until train error < 80%% (auto: CIFAR nets of 110+ layers, as the paper)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="global mini-batch over all devices (paper: 128; ImageNet 256)"
    )
    parser.add_argument(
        "--shortcut", choices=["A", "B", "C"], default=None, help="shortcut option (default: the paper's for the net)"
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--eval-every", type=int, default=None, help="iterations between test evaluations")
    parser.add_argument("--log-every", type=int, default=None, help="iterations per logged train loss/error")
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument(
        "--precise-bn",
        type=int,
        default=0,
        metavar="IMAGES",
        help="after training, recompute BN statistics over this many training images (the paper's released "
        "ImageNet models did; e.g. 50000); 0: off",
    )
    cifar = parser.add_argument_group("CIFAR-10 (Sec. 4.2)")
    cifar.add_argument("--val-split", type=int, default=0, help="hold out N training images (the paper's: 5000)")
    cifar.add_argument("--normalize", choices=["per-pixel-mean", "per-channel"], default="per-pixel-mean")
    cifar.add_argument("--no-augment", dest="augment", action="store_false", help="disable crop+flip augmentation")
    add_imagenet_arguments(parser)


def add_imagenet_arguments(parser: argparse.ArgumentParser) -> None:
    """ImageNet data flags: which classes, how many loader processes (the rest of Sec. 3.4 is fixed)."""
    imagenet = parser.add_argument_group("ImageNet (Sec. 3.4)")
    imagenet.add_argument(
        "--subset", type=int, default=None, metavar="N", help="the first N classes only (small runs; recorded)"
    )
    imagenet.add_argument(
        "--workers", type=int, default=None, help="DataLoader processes decoding JPEGs (default: min(8, cores))"
    )


def add_hardware_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=None,
        help="CIFAR-10 source: torchvision root, ImageFolder dir or .tar/.tar.gz/.zip (default: $RESNET_REPRO_DATA); "
        "ImageNet: ROOT with train/<wnid>/ and val/<wnid>/",
    )
    parser.add_argument("--data-root", default=None, help="cache directory (default: ~/.cache/resnet-repro)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (Lightning)")
    parser.add_argument("--devices", default="1", help="device count or list (Lightning)")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="auto or ddp (multi-GPU / multi-node; see README)")
    parser.add_argument("--precision", default="32-true", help="32-true (the paper's, default), bf16-mixed, 16-mixed")
    parser.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (a speed option; numerics may differ slightly)",
    )
    parser.add_argument(
        "--wandb",
        choices=["on", "offline", "off"],
        default="on",
        help="on: online if logged in, else offline; off: local logs only",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--stop-after",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="checkpoint and stop once this much time has passed since the command started "
        "(540, 9m, 1.5h): for time-limited jobs; the same command resumes; exit status 3",
    )


def dataset_of(model: str) -> str:
    """The dataset `model` trains on in the paper (an unknown name fails here, with the known ones)."""
    from resnet_repro.models import model_info

    return FAMILY_DATASET[model_info(model).family]


def data_config(dataset: str, args):
    """The dataset's config from the command line's data flags."""
    if dataset == "imagenet":
        if args.subset is not None and args.subset < 1:  # checked before a net with no outputs is built
            raise UserError(f"--subset must be at least 1 class, got {args.subset}")
        workers = {} if args.workers is None else {"workers": args.workers}
        return ImageNetConfig(data=args.data, subset=args.subset, **workers)
    return DataConfig(data=args.data, root=args.data_root)


def spec_from_args(args, model: str) -> TrainSpec:
    """The run the flags describe; each flag not given takes the paper's value for the model's dataset."""
    from resnet_repro.experiment import get_profile

    dataset = dataset_of(model)
    paper = get_profile("paper", dataset)
    iterations = args.iterations if args.iterations is not None else paper.schedule.max_iters
    batch_size = args.batch_size if args.batch_size is not None else paper.batch_size
    lr = args.lr if args.lr is not None else imagenet_lr(batch_size) if dataset == "imagenet" else paper.schedule.lr
    schedule = dataclasses.replace(paper.schedule, lr=lr, plateau=args.lr_plateau)
    if args.warmup != "auto" or dataset == "cifar10":
        schedule = dataclasses.replace(schedule, warmup=args.warmup)
    if args.milestones is None:  # the paper's shape over --iterations (at the paper's length: its own milestones)
        schedule = schedule.scaled(iterations)
        drops = schedule.milestones
        if args.lr_plateau is None and (min(drops) <= 0 or len(set(drops)) < len(drops)):
            raise UserError(
                f"--iterations {iterations} is too short for the default lr drops at "
                f"{', '.join(f'{m / paper.schedule.max_iters:.0%}' for m in paper.schedule.milestones)}: "
                "train longer, or give --milestones"
            )
    else:
        schedule = dataclasses.replace(schedule, max_iters=iterations, milestones=args.milestones)
    if args.lr_plateau is not None:
        if args.milestones is not None:
            raise UserError("--lr-plateau decides the lr drops itself: give it or --milestones, not both")
        schedule = dataclasses.replace(schedule, milestones=())  # the rule decides the drops
    if dataset == "imagenet":
        if args.val_split or args.normalize != "per-pixel-mean" or not args.augment or args.allow_partial:
            raise UserError(
                "--val-split, --normalize, --no-augment and --allow-partial are CIFAR-10 flags; "
                f"{model} trains on ImageNet (see --subset)"
            )
        data = data_config(dataset, args)
    else:
        if args.subset is not None or args.workers is not None:
            raise UserError(f"--subset and --workers are ImageNet flags; {model} trains on CIFAR-10")
        data = DataConfig(
            data=args.data,
            root=args.data_root,
            val_split=args.val_split,
            normalize=args.normalize,
            augment=args.augment,
            full=not args.allow_partial,
        )

    def given(value, default):
        return default if value is None else value

    return TrainSpec(
        model=model,
        shortcut=args.shortcut,
        schedule=schedule,
        batch_size=batch_size,
        seed=args.seed,
        dataset=dataset,
        data=data,
        log_every=given(args.log_every, paper.log_every if dataset == "imagenet" else TrainSpec.log_every),
        eval_every=given(args.eval_every, paper.eval_every if dataset == "imagenet" else TrainSpec.eval_every),
        checkpoint_every=given(
            args.checkpoint_every, paper.checkpoint_every if dataset == "imagenet" else TrainSpec.checkpoint_every
        ),
        precise_bn=args.precise_bn,
    )


def stop_status(stopped_by: str | None) -> int:
    """The exit status of a run stopped early: 3 at --stop-after (run again), 143 SIGTERM, 130 Ctrl-C."""
    return {"time limit": EXIT_TIME_LIMIT, "SIGTERM": EXIT_SIGTERM}.get(stopped_by, EXIT_CTRL_C)


def finite_float(text: str) -> float:
    """A float flag that must be a real number: `--lr nan` would train to NaN and write non-standard JSON."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def deadline(args) -> float | None:
    """--stop-after as an absolute time; commands call this first thing, so it counts from their start."""
    return None if args.stop_after is None else time.time() + args.stop_after


def hardware_from_args(args):
    from resnet_repro.training import Hardware

    return Hardware(
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=args.precision,
        deterministic=args.deterministic,
        threads=args.threads,
        compile=args.compile,
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model (CIFAR-10 or ImageNet, from the model; the paper's protocol by default)",
        description=__doc__,
    )
    parser.add_argument("model", help="e.g. resnet20, plain56, resnet110, resnet50 (see `resnet-repro models`)")
    add_spec_arguments(parser)
    add_hardware_arguments(parser)
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept a source without all 60,000 images (tests and tiny runs only)",
    )
    parser.add_argument("--out", default="runs", help="runs directory; the run goes to OUT/MODEL-sSEED")
    parser.add_argument("--name", default=None, help="run directory name (default: MODEL-sSEED)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.set_defaults(func=run)


def run(args) -> int:
    from resnet_repro.files import check_output_dir
    from resnet_repro.module import NonFiniteLossError
    from resnet_repro.tables import format_duration
    from resnet_repro.training import RunOptions, train

    stop_at = deadline(args)
    spec = spec_from_args(args, args.model)
    run_dir = Path(args.out) / (args.name or f"{args.model}-s{args.seed}")
    # Before the data is loaded and anything is created: a file named as --out, or too long a name or path.
    check_output_dir(Path(args.out), "--out")
    check_output_dir(run_dir, "--name" if args.name else "--out")
    options = RunOptions(
        run_dir=run_dir, resume=args.resume, wandb=args.wandb, progress=args.progress, deadline=stop_at
    )
    try:
        record = train(spec, options, hardware_from_args(args))
    except NonFiniteLossError as exc:
        print(f"resnet-repro train: stopped: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # under DDP every process returns here; one summary is enough
        return 0
    final = record["final"]
    where = f"logs in {run_dir}/ (metrics.csv, run.json)"
    if record["status"] == "interrupted":
        why = "stopped at the --stop-after time limit" if record["stopped_by"] == "time limit" else "interrupted"
        print(
            f"{args.model}: {why} at iteration {record['iterations']}; checkpoint saved, "
            f"continue with the same command plus --resume; {where}"
        )
        return stop_status(record["stopped_by"])
    print(
        f"{args.model} seed {spec.seed}: test error {final.get('test/error', float('nan')):.2f}% "
        f"(train {final.get('train/error', float('nan')):.2f}%) after {record['iterations']} iterations "
        f"in {format_duration(record['wall_time_s'])}; {where}"
    )
    return 0
