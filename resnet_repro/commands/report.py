"""`resnet-repro report [ARTIFACT]`: rebuild figures and tables from the logged runs alone (no training)."""

from pathlib import Path

from resnet_repro.errors import NoRunsError, UserError
from resnet_repro.experiment import PROFILES, get_profile


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="rebuild figures, tables and results/README.md from logged runs", description=__doc__
    )
    parser.add_argument("artifact", nargs="?", help="artifact id (default: every artifact with finished runs)")
    parser.add_argument(
        "--profile", default=None, help=f"one of {', '.join(PROFILES)} (default: every profile with runs)"
    )
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument(
        "--wandb",
        choices=["on", "offline", "off"],
        default="off",
        help="also log the figures and tables to the artifact's W&B group",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from resnet_repro.report import render_experiment, write_results_index
    from resnet_repro.runner import list_experiments, load_experiment

    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    if not runs_dir.is_dir():
        raise UserError(f"no runs directory {runs_dir}: train first (resnet-repro run ARTIFACT) or pass --runs-dir")
    artifacts = [args.artifact] if args.artifact else list_experiments()
    profiles = [get_profile(args.profile).name] if args.profile else list(PROFILES)
    rendered = []
    for artifact in artifacts:
        experiment = load_experiment(artifact)
        for profile in profiles:
            try:
                written = render_experiment(
                    experiment, experiment.profile(profile), runs_dir, results_dir, wandb=args.wandb
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
