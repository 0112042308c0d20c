"""The one exception type that tools turn into a one-line message and a non-zero exit."""
import re


class UserError(Exception):
    """Bad input from the user (a missing folder, a wrong config key, a bad shape in a file).

    The message is one line that says what is wrong and how to fix it. Tools catch it, print
    ``error: <message>`` to stderr and exit with status 2; the library raises it and never
    prints.
    """


def problems_error(problems: list[str], context: str, shown: int = 3) -> UserError:
    """One UserError for a non-empty list of problems: the problem itself when there is one, else
    ``"<count> problems <context>: <the first shown>; and <n> more"``."""
    if len(problems) == 1:
        return UserError(problems[0])
    rest = len(problems) - shown
    return UserError(f"{len(problems)} problems {context}: {'; '.join(problems[:shown])}"
                     + (f"; and {rest} more" if rest > 0 else ""))


_WORKER_ORIGINAL = re.compile(r"^Caught UserError in DataLoader worker process \d+\..*^[\w.]*UserError: (.*?)\s*\Z",
                              re.DOTALL | re.MULTILINE)


def one_line(error: UserError) -> str:
    """The message of ``error``; for a UserError raised in a DataLoader worker process, which
    PyTorch raises again in the main process with the worker's whole traceback as its message, the
    original one-line message."""
    text = str(error)
    original = _WORKER_ORIGINAL.match(text)
    return original.group(1) if original else text


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a training run; the message says what the run directory keeps."""
