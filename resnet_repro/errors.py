"""User-facing errors: the CLI prints their message on one line and exits with status 2."""

import argparse
import errno
import sys
from collections.abc import Callable

# Exit statuses of every command (the README lists them): 0 done, 1 a run diverged, 2 a mistake in the
# command or its inputs, 3 stopped at --stop-after with work left, 130 Ctrl-C, 143 SIGTERM.
EXIT_DIVERGED, EXIT_USER_ERROR, EXIT_TIME_LIMIT, EXIT_CTRL_C, EXIT_SIGTERM = 1, 2, 3, 130, 143
# The OS errors that mean "this machine cannot write there", said as such rather than as a traceback.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CANNOT_WRITE = _FULL | {errno.EROFS, errno.EACCES, errno.EPERM}
# The OS errors that mean "this path cannot be one": commands check their output paths first (see
# files.check_output_dir); these catch the paths no check foresaw, in one line.
_BAD_PATH = {errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class UserError(Exception):
    """A mistake in what the user asked for (bad path, unknown name, invalid option)."""


class UnknownModelError(UserError, KeyError):
    """A model name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(UserError):
    """A data source that is missing, corrupt or not CIFAR-10 shaped."""


class RunLockedError(UserError):
    """A run directory that another live process holds."""


class NoRunsError(UserError):
    """No logged runs of what was asked for (`report` then moves on to the next artifact)."""


def exit_status(prog: str, action: Callable[[], int | None]) -> int:
    """Run a command's `action`; a UserError becomes one line, `PROG: error: ...`, and exit status 2.

    The one place that turns user mistakes and the machine's refusals (a full disk, a read-only
    directory) into one line and an exit status, for the CLI, the experiment scripts and the benchmarks.
    """
    try:
        return int(action() or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.errno not in _CANNOT_WRITE | _BAD_PATH:
            raise
        where = shorten(exc.filename or "the output directory")
        if exc.errno in _BAD_PATH:
            print(f"{prog}: error: cannot use {where}: {exc.strerror}; name another path", file=sys.stderr)
            return EXIT_USER_ERROR
        if exc.errno in _FULL or exc.errno == errno.EROFS:
            remedy = "free space" if exc.errno in _FULL else "make it writable"
            print(
                f"{prog}: error: cannot write {where}: {exc.strerror}; {remedy} or write elsewhere "
                "(files written before this one are intact; a run continues with --resume)",
                file=sys.stderr,
            )
        else:  # EACCES and EPERM come from reads too
            print(
                f"{prog}: error: cannot access {where}: {exc.strerror}; fix its permissions or use another path",
                file=sys.stderr,
            )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_CTRL_C


def shorten(text, limit: int = 100) -> str:
    """`text` cut in its middle to about `limit` characters: a 4 KB path in a one-line message."""
    text = str(text)
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]}...{text[-half:]}"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says how to get help, not the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
