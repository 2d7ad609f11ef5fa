"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class UserError(Exception):
    """A mistake in what the user asked for (bad path, unknown name, invalid option)."""


class UnknownModelError(UserError, KeyError):
    """A model name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(UserError):
    """A data source that is missing, corrupt or not CIFAR-10 shaped."""
