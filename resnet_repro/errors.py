"""User-facing errors: the CLI prints their message on one line and exits with status 2."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake in what the user asked for (bad path, unknown name, invalid option)."""


class UnknownModelError(UserError, KeyError):
    """A model name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(UserError):
    """A data source that is missing, corrupt or not CIFAR-10 shaped."""


def exit_status(prog: str, action: Callable[[], int | None]) -> int:
    """Run a command's `action`; a UserError becomes one line, `PROG: error: ...`, and exit status 2.

    The one place that turns user mistakes into exit statuses, for the CLI, the experiment scripts
    and the benchmarks alike.
    """
    try:
        return int(action() or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
