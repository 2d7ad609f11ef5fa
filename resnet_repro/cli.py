"""The `resnet-repro` command: one subcommand per module in `resnet_repro.commands`."""

import importlib

from resnet_repro.errors import OneLineParser, exit_status

# Each module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMANDS = ["models", "train", "run", "evaluate", "report", "deviations"]


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="resnet-repro",
        description="Reproduce He et al. 2015, 'Deep Residual Learning for Image Recognition'.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f"resnet_repro.commands.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse blames the top-level parser, whose --help does not list the subcommand's flags
        OneLineParser(prog=f"{parser.prog} {args.command}").error(f"unrecognized arguments: {' '.join(unknown)}")
    return exit_status(f"resnet-repro {args.command}", lambda: args.func(args))
