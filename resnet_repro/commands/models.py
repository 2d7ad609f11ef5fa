"""`resnet-repro models`: print the model table (parameters, multiply-adds, the paper's numbers).

Examples:
    resnet-repro models                                 # aligned text table
    resnet-repro models --format csv --family cifar
    resnet-repro models --write-results results/table1  # rewrites results/table1/models.md, .csv
"""

import argparse
import sys

from resnet_repro.errors import UserError
from resnet_repro.model_table import FORMATS, model_table, render, write_results
from resnet_repro.models import FAMILIES


def register(subparsers) -> None:
    """Add the `models` subcommand."""
    parser = subparsers.add_parser(
        "models",
        help="list the architectures with parameters and multiply-adds",
        description="Print parameters and multiply-adds of every architecture beside the "
        "paper's numbers (Table 1, Table 6).",
        epilog="example: resnet-repro models --write-results results/table1",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument("--family", choices=FAMILIES, help="only CIFAR-10 or ImageNet nets")
    parser.add_argument(
        "--write-results",
        metavar="DIR",
        help="also write DIR/models.md and DIR/models.csv (the full table)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table; with --write-results also save it."""
    if args.write_results and args.family:
        raise UserError("--write-results saves the full table: drop --family")
    frame = model_table(args.family)
    command = "resnet-repro models" + (f" --family {args.family}" if args.family else "")
    print(render(frame, args.format, f"{command} --format {args.format}"), end="")
    if args.write_results:
        command = f"resnet-repro models --write-results {args.write_results}"
        paths = write_results(frame, args.write_results, command)
        print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0
