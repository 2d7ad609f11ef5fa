"""Subcommands of the `resnet-repro` CLI; each module holds `register(subparsers)`."""
