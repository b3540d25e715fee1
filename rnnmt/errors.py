"""The one exception type that the command line turns into a clear message and exit code 2."""


class RnnmtError(Exception):
    """A user-facing error: bad input, missing files, an invalid package. Its message says what to do."""
