"""Errors a user can act on: the CLI prints their message as one line and exits 1."""


class LookalikeError(Exception):
    """A user-facing error; its message is a complete, single-line explanation."""


class ConfigError(LookalikeError):
    """The configuration is invalid."""


class ModelMissingError(LookalikeError):
    """A model file the pipeline needs is not on this machine."""


class ImageError(LookalikeError):
    """A file could not be turned into a model input (not an image, truncated, ...)."""


class TransientError(LookalikeError):
    """A step failed for a passing reason (out of memory): the file is tried again later,
    never stored as failed."""


class UnreadableFile(ImageError):
    """A file could not be read at all (gone, no permission): perhaps only for now."""


def first_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says (its type's name when it says nothing): a
    library's multi-line message made fit for a one-line error."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
