"""`resnet-repro report [ARTIFACT]`: rebuild figures and tables from the logged runs alone (no training)."""

from pathlib import Path

from resnet_repro.errors import NoRunsError, UserError
from resnet_repro.experiment import DATASET_PROFILES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="rebuild figures, tables and results/README.md from logged runs", description=__doc__
    )
    parser.add_argument("artifact", nargs="?", help="artifact id (default: every artifact with finished runs)")
    names = sorted({name for profiles in DATASET_PROFILES.values() for name in profiles})
    parser.add_argument("--profile", default=None, help=f"one of {', '.join(names)} (default: every profile with runs)")
    parser.add_argument(
        "--members",
        default=None,
        help="an ensemble artifact's runs (table5): comma-separated model names or run ids (default: all)",
    )
    parser.add_argument(
        "--subset", type=int, default=None, metavar="N", help="ImageNet artifacts: the --subset the runs trained with"
    )
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="also copy the checkpoint of each run still in progress into RESULTS_DIR/runs/, so a clean clone "
        "on another machine resumes it (copy the run's folder into its --runs-dir and run the same command); "
        "a run's copy is removed once it finishes",
    )
    parser.add_argument(
        "--wandb",
        choices=["on", "offline", "off"],
        default="off",
        help="also log the figures and tables to the artifact's W&B group",
    )
    parser.set_defaults(func=run)


def _data(experiment, subset: int | None):
    """The dataset config that names the artifact's runs: ImageNet's --subset enters their ids."""
    if subset is None:
        return None
    if experiment.dataset != "imagenet":
        raise UserError(f"--subset is an ImageNet flag; {experiment.id} is a {experiment.dataset} artifact")
    from resnet_repro.data.imagenet import ImageNetConfig

    return ImageNetConfig(subset=subset)


def run(args) -> int:
    from resnet_repro.files import check_output_dir
    from resnet_repro.report import render_experiment, write_results_index
    from resnet_repro.runner import list_experiments, load_experiment

    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    if not runs_dir.is_dir():
        raise UserError(f"no runs directory {runs_dir}: train first (resnet-repro run ARTIFACT) or pass --runs-dir")
    check_output_dir(results_dir, "--results-dir")
    artifacts = [args.artifact] if args.artifact else list_experiments()
    known = {name for profiles in DATASET_PROFILES.values() for name in profiles}
    if args.profile is not None and args.profile not in known:
        raise UserError(f"unknown profile {args.profile!r}: choose one of {', '.join(sorted(known))}")
    members = tuple(m for m in (args.members or "").split(",") if m)
    rendered = []
    for artifact in artifacts:
        experiment = load_experiment(artifact)
        if args.subset is not None and experiment.dataset != "imagenet" and not args.artifact:
            continue  # --subset names ImageNet runs only
        profiles = [p for p in DATASET_PROFILES[experiment.dataset] if args.profile in (None, p)]
        if args.artifact and not profiles:
            raise UserError(
                f"{artifact} has no {args.profile} profile ({experiment.dataset}: "
                f"{', '.join(DATASET_PROFILES[experiment.dataset])})"
            )
        for profile in profiles:
            try:
                written = render_experiment(
                    experiment,
                    experiment.profile(profile),
                    runs_dir,
                    results_dir,
                    wandb=args.wandb,
                    members=members,
                    data=_data(experiment, args.subset),
                    keep_checkpoints=args.keep_checkpoints,
                )
            except NoRunsError:
                continue  # no finished runs of this artifact under this profile (a corrupt log is an error)
            rendered.append(f"{artifact} ({profile})")
            print(f"{artifact} ({profile}): " + ", ".join(str(p) for p in written))
    if not rendered:
        what = args.artifact or "any artifact"
        raise UserError(
            f"no finished runs of {what} under {runs_dir}"
            + (f" with profile {args.profile}" if args.profile else "")
            + ": train them first with resnet-repro run ARTIFACT --profile quick"
        )
    print(f"wrote {write_results_index(results_dir)}")
    return 0
