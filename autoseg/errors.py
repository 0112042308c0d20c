"""The one exception type that tools turn into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user (a missing folder, a wrong config key, a bad shape in a file).

    The message is one line that says what is wrong and how to fix it. Tools catch it, print
    ``error: <message>`` to stderr and exit with status 2; the library raises it and never
    prints.
    """
