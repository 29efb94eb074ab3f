"""The one error type of the command line (``fcos-d2``)."""

__all__ = ["CommandError"]


class CommandError(Exception):
    """A user's mistake (bad file, key, value or input): ``fcos-d2`` prints it as one line on
    stderr and exits with status 2."""
