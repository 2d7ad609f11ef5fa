"""`resnet-repro deviations`: every intentional departure from the paper, in the code and in the results."""

from pathlib import Path

from resnet_repro.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "deviations",
        help="list every departure from the paper (code markers and the results' runs)",
        description=__doc__,
    )
    parser.add_argument("--results-dir", default="results", help="whose rendered artifacts to list (default: results/)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from resnet_repro.deviations import ledger

    results = Path(args.results_dir)
    if not results.is_dir():
        raise UserError(
            f"no results directory {results}: render artifacts first (resnet-repro report) or pass --results-dir"
        )
    print(ledger(results))
    return 0
