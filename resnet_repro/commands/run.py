"""`resnet-repro run ARTIFACT --profile P`: train an artifact's runs (cached, resumable), then render it."""

import argparse
import sys
import time
from pathlib import Path

from resnet_repro.commands.train import (
    add_hardware_arguments,
    add_imagenet_arguments,
    data_config,
    deadline,
    hardware_from_args,
    stop_status,
)
from resnet_repro.errors import EXIT_DIVERGED, EXIT_TIME_LIMIT, OneLineParser, UserError, exit_status
from resnet_repro.experiment import DATASET_PROFILES, Experiment, plan_variants, skipped_models
from resnet_repro.launcher import add_launcher_arguments, launcher_requested
from resnet_repro.spec import run_id

# End-to-end rate on the reference 2-core CPU, evaluations included: the four quick-profile runs (0.51
# PFLOP of training) took 82 min side by side; training alone reaches ~150 (results/benchmarks/).
# Used only to print rough cost estimates.
CPU_GFLOPS = 100.0
# A CIFAR-10 artifact runs its CPU-sized profile unless told otherwise; an ImageNet user has GPUs and wants the paper's.
DEFAULT_PROFILE = {"cifar10": "quick", "imagenet": "paper"}
# Training rate of ResNet-18/34/50 at 224x224 on the same 2-core CPU, 25-37 GFLOP/s while other processes used
# 67% of it (results/benchmarks/imagenet-training.md): a rough figure, for ImageNet runs.
IMAGENET_CPU_GFLOPS = 31.0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    profiles = "; ".join(f"{d}: {', '.join(p)}" for d, p in DATASET_PROFILES.items())
    parser.add_argument("--profile", default=None, help=f"{profiles} (default: quick for CIFAR-10, paper for ImageNet)")
    parser.add_argument(
        "--only", default=None, help="train just this run (a run id or model name), e.g. for one job of a cluster array"
    )
    parser.add_argument("--force", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--jobs", type=int, default=1, help="train this many runs at once on the device")
    parser.add_argument("--runs-dir", default="runs", help="where runs are logged and cached (default: runs/)")
    parser.add_argument("--results-dir", default="results", help="where figures and tables go (default: results/)")
    parser.add_argument("--list", action="store_true", help="list the runs and their estimated cost, train nothing")
    add_hardware_arguments(parser)
    add_imagenet_arguments(parser)
    parser.add_argument(
        "--members",
        default=None,
        help="an ensemble artifact's runs (table5): comma-separated model names or run ids (default: all)",
    )
    add_launcher_arguments(parser)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="train and render one paper artifact (fig1, fig6, table6, ...)", description=__doc__
    )
    parser.add_argument("artifact", nargs="?", help="artifact id; omit with --list to list them all")
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from resnet_repro.runner import list_experiments, load_experiment

    if args.artifact is None:
        if not args.list:
            raise UserError(f"name an artifact ({', '.join(list_experiments())}) or pass --list")
        known = sorted({name for profiles in DATASET_PROFILES.values() for name in profiles})
        if args.profile is not None and args.profile not in known:
            raise UserError(f"unknown profile {args.profile!r}: choose one of {', '.join(known)}")
        for artifact in list_experiments():
            experiment = load_experiment(artifact)
            name = args.profile or DEFAULT_PROFILE[experiment.dataset]
            if name in DATASET_PROFILES[experiment.dataset]:
                print_plan(experiment, name)
            else:
                names = ", ".join(DATASET_PROFILES[experiment.dataset])
                print(f"{artifact}: no {args.profile} profile ({experiment.dataset} profiles: {names})")
        return 0
    return execute(load_experiment(args.artifact), args)


def main(experiment: Experiment, argv=None) -> int:
    """Entry point of `python experiments/<artifact>.py`: the same flags as `resnet-repro run`."""
    parser = OneLineParser(prog=f"experiments/{experiment.id}.py", description=experiment.caption)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return exit_status(experiment.id, lambda: execute(experiment, args))


def execute(experiment: Experiment, args) -> int:
    from resnet_repro.files import check_output_dir
    from resnet_repro.report import render_experiment, write_results_index
    from resnet_repro.runner import run_experiment
    from resnet_repro.tables import format_duration

    stop_at = deadline(args)
    profile = experiment.profile(args.profile or DEFAULT_PROFILE[experiment.dataset])
    if args.list:
        print_plan(experiment, profile.name)
        return 0
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if experiment.dataset != "imagenet" and (args.subset is not None or args.workers is not None):
        raise UserError(f"--subset and --workers are ImageNet flags; {experiment.id} trains on {experiment.dataset}")
    data = data_config(experiment.dataset, args)
    if launcher_requested(args):  # --launcher (one cluster job per run) and --status: launcher.py
        from resnet_repro.launcher import launch

        return launch(experiment, profile, args, data)
    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    check_output_dir(runs_dir, "--runs-dir")  # before any run trains: a file named, too long a name or path
    check_output_dir(results_dir, "--results-dir")
    started = time.perf_counter()
    records = run_experiment(
        experiment,
        profile,
        runs_dir=runs_dir,
        data=data,
        hardware=hardware_from_args(args),
        only=args.only,
        force=args.force,
        jobs=args.jobs,
        wandb=args.wandb,
        progress=args.progress,
        deadline=stop_at,
    )
    stopped = [r for r in records if r["status"] in ("interrupted", "not started")]
    if stopped and all(r.get("stopped_by") == "time limit" for r in stopped):
        print(f"{experiment.id}: --stop-after time limit reached {_what_was_saved(stopped)}")
        return EXIT_TIME_LIMIT
    if stopped:
        print(f"{experiment.id}: interrupted {_what_was_saved(stopped)}")
        return stop_status(stopped[0].get("stopped_by"))
    elsewhere = [r for r in records if r["status"] == "running elsewhere"]
    if elsewhere:
        # Not done, so not 0; 2 as `train` of a run another process holds (its one line names the holder), not 3:
        # 3 says "run the same command again to continue", which a job array requeues at once, racing the holder.
        raise UserError(
            "; ".join(r["error"] for r in elsewhere)
            + f"; {experiment.id} is not rendered: run the same command again once that has finished"
        )
    diverged = _all_diverged(experiment, profile, data, runs_dir, args.only)
    if diverged:
        # Exit 1, as `train` of a run that diverged: there is nothing to draw, and a rerun would skip them again.
        print(f"{experiment.id} ({profile.name}): {diverged}", file=sys.stderr)
        return EXIT_DIVERGED
    if not is_global_zero():
        return 0  # under DDP every rank trains; one renders, or they would all write the same files at once
    if args.only is not None:
        print(
            f"trained {args.only}; render the artifact once all its runs are done: resnet-repro report {experiment.id} --profile {profile.name}"
        )
        return 0
    members = tuple(m for m in (args.members or "").split(",") if m)
    written = render_experiment(
        experiment, profile, runs_dir, results_dir, wandb=args.wandb, members=members, data=data
    )
    write_results_index(results_dir)
    print(
        f"{experiment.id} ({profile.name}) done in {format_duration(time.perf_counter() - started)}: "
        + ", ".join(str(p) for p in written)
    )
    return 0


def _what_was_saved(stopped: list[dict]) -> str:
    """Which stopped runs saved a checkpoint and which never started (and so saved nothing), for the stop message."""
    saved = [r["run_id"] for r in stopped if r["status"] == "interrupted"]
    waiting = [r["run_id"] for r in stopped if r["status"] == "not started"]
    said = [f"checkpoint saved for {', '.join(saved)}"] if saved else []
    if waiting:
        said.append(f"not started: {', '.join(waiting)}" if saved else "none had started, so nothing was saved")
    return (
        f"with {len(stopped)} run(s) unfinished ({', '.join(saved + waiting)}); {'; '.join(said)}. "
        "Run the same command again to continue."
    )


def _all_diverged(experiment: Experiment, profile, data, runs_dir: Path, only: str | None) -> str | None:
    """When every run this command trains diverged, what to say (the nets, where they diverged, what to change)."""
    from resnet_repro.experiment import plan_runs, select_runs
    from resnet_repro.rundir import RunDir

    specs = select_runs(plan_runs(experiment, profile, data), only)
    records = {run_id(s): RunDir(runs_dir / run_id(s)).read_record() or {} for s in specs}
    if not records or any(r.get("status") != "diverged" for r in records.values()):
        return None
    where = ", ".join(f"{rid} at iteration {r.get('diverged_at', '?')}" for rid, r in records.items())
    return (
        f"every run diverged ({where}), so there is nothing to draw. The {profile.name} profile's lr is too high for "
        f"these nets here: find one that trains with a lower --lr or warm-up (resnet-repro train {specs[0].model} "
        "--lr 0.01, or --warmup on, the paper's start for 110 layers); --force retrains the runs here, which helps "
        "only after changing --precision or --compile"
    )


def is_global_zero() -> bool:
    """Whether this process is global rank 0. Under DDP the launcher (Lightning's, torchrun or SLURM) runs this
    command in every process; Lightning sets the rank from the launcher's environment (RANK, LOCAL_RANK,
    SLURM_PROCID) at import and from the strategy once a run has trained."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def estimated_cost(model: str, iterations: int, batch_size: int, shortcut: str | None = None) -> float:
    """Training multiply-adds x 3 (forward + backward) x 2 FLOPs, for a rough time estimate."""
    return 3 * forward_flops(model, shortcut) * batch_size * iterations


def forward_flops(model: str, shortcut: str | None = None) -> float:
    """FLOPs (2 x multiply-adds) of one forward pass at the paper's input size."""
    import torch

    from resnet_repro.flops import count_multiply_adds
    from resnet_repro.models import build_model, model_info

    with torch.device("meta"):
        net = build_model(model, **({} if shortcut is None else {"shortcut": shortcut}))
    return 2 * count_multiply_adds(net, model_info(model).input_size)


# Forward passes per ILSVRC val image of each protocol, in units of one 224x224 crop: 10crop scores 10 crops;
# multiscale the whole image (4:3, ImageNet's usual shape) at shorter sides 224..640, and its flip.
PROTOCOL_PASSES = {
    "center": 1,
    "10crop": 10,
    "multiscale": 2 * sum((s / 224) ** 2 * 4 / 3 for s in (224, 256, 384, 480, 640)),
}
ILSVRC_VAL = 50_000


def testing_cost(spec, protocol: str | None) -> float:
    """FLOPs of an ImageNet run's evaluations: its centre-crop val curve, and the artifact's protocol once."""
    if spec.dataset != "imagenet":
        return 0.0
    evaluations = spec.schedule.max_iters // spec.eval_every + 1
    passes = evaluations * PROTOCOL_PASSES["center"] + (PROTOCOL_PASSES[protocol] if protocol else 0)
    return passes * ILSVRC_VAL * forward_flops(spec.model, spec.shortcut)


def print_plan(experiment: Experiment, profile_name: str) -> None:
    """The runs of an artifact under a profile, with an estimated CPU time."""
    profile = experiment.profile(profile_name)
    planned = plan_variants(experiment, profile)
    flops = [estimated_cost(s.model, s.schedule.max_iters, s.batch_size, s.shortcut) for _, s in planned]
    tests = [testing_cost(s, experiment.protocol) for _, s in planned]
    print(f"{experiment.id} [{profile.name}]: {experiment.caption.split('. ')[0].rstrip('.')}.")
    for (variant, spec), f, t in zip(planned, flops, tests, strict=True):
        label = f"  {variant.label}" if variant.label else ""
        testing = f" + {t / 1e15:.0f} PFLOP of testing" if t else ""
        print(f"  {run_id(spec):28s} {spec.schedule.max_iters:>6d} iterations  {f / 1e15:8.2f} PFLOP{testing}{label}")
    skipped = skipped_models(experiment, profile)
    if skipped:
        print(f"  not in this profile: {', '.join(skipped)}")
    total = sum(flops) + sum(tests)
    if experiment.dataset == "imagenet":
        print(
            f"  total {total / 1e15:.0f} PFLOP: about {total / (IMAGENET_CPU_GFLOPS * 1e9) / 86400 / 365:.1f} "
            f"years on a 2-core CPU at the {IMAGENET_CPU_GFLOPS:.0f} GFLOP/s measured for ResNet-18 at 224 on a busy one "
            "(results/benchmarks/imagenet-training.md); GPU rates are not measured yet"
        )
        return
    hours = total / (CPU_GFLOPS * 1e9) / 3600
    print(
        f"  total {total / 1e15:.2f} PFLOP: about {hours:.1f} h on a 2-core CPU at {CPU_GFLOPS:.0f} GFLOP/s "
        "(a GPU's rate for these small nets is not measured yet)"
    )
