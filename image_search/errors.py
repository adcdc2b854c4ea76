"""Errors a user can act on: the CLI prints their message, without a traceback."""


class UserError(Exception):
    """A problem the user can fix."""


class ModelUnavailable(UserError, RuntimeError):
    """The model cannot be loaded; the message says why and what to do."""
