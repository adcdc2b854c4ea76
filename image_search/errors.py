"""Errors a user can act on: the command line prints their message on one line, without a
traceback; the web API answers them with a 4xx and the same message."""


class UserError(Exception):
    """A problem the user can fix."""


class UsageError(UserError):
    """The command was called wrongly (a missing argument): exit status 2, as argparse's own."""


class ModelUnavailable(UserError, RuntimeError):
    """The model cannot be loaded; the message says why and what to do."""


class DeviceFailed(UserError, RuntimeError):
    """The model's device failed mid-run (a GPU that reset or fell off the bus): the process
    cannot go on, and exits non-zero so that its service manager restarts it."""


class BadValue(UserError, ValueError):
    """A value from a request, a saved album or a flag is not acceptable (400 on the web)."""


class UnknownImage(UserError, LookupError):
    """An image id the library does not hold (404 on the web)."""
