"""Errors a user can act on: the CLI prints their message, without a traceback."""


class UserError(Exception):
    """A problem the user can fix."""


class ModelUnavailable(UserError, RuntimeError):
    """The model cannot be loaded; the message says why and what to do."""


class DeviceFailed(UserError, RuntimeError):
    """The model's device failed mid-run (a GPU that reset or fell off the bus): the process
    cannot go on, and exits non-zero so that its service manager restarts it."""
