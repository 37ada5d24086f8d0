"""Errors the user can act on: the CLI prints them as one line and exits with code 2."""


class NadaError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class NadaWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it as one line)."""


def one_line(
    e: BaseException, limit: int = 200, typed: bool = False, first_line: bool = False, last_line: bool = False
) -> str:
    """An exception as one short line for an error message: whitespace collapsed, cut at ``limit`` characters.

    ``typed`` puts the exception's class name in front; ``first_line`` keeps only the first non-empty line
    (torch's loading errors append paragraphs of advice that do not apply to nada's loaders); ``last_line``
    keeps only the last one (Ray's task errors put the remote traceback first and the cause last).
    """
    lines = [line for line in str(e).splitlines() if line.strip()]
    kept = lines[:1] if first_line else lines[-1:] if last_line else lines
    text = " ".join(" ".join(kept).split())
    if typed:
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    text = text or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
