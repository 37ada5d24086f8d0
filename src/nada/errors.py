"""Errors the user can act on: the CLI prints them as one line and exits with code 2."""


class NadaError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class NadaWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it as one line)."""
