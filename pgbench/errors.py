"""Exceptions with messages meant for the person at the terminal.

Every error pgbench raises on bad input is one of these, and its message names the
file, key, or value that is wrong and what was expected instead.
"""


class PgbenchError(Exception):
    """Base class: a problem with the user's input, reported in one readable message."""


class CheckpointError(PgbenchError):
    """A checkpoint file is missing, damaged, or does not fit the expected layout/shapes."""


class TokenizerError(PgbenchError):
    """A tokenizer file is missing or lacks what PaliGemma needs (e.g. <loc>/<seg> tokens)."""


class ImageError(PgbenchError):
    """An image file is missing, unreadable, or of an unsupported kind."""


class ReferenceCaseError(PgbenchError):
    """A parity reference case directory does not follow FORMAT.md."""


class InputError(PgbenchError):
    """Inputs to the model or a metric do not fit (lengths, shapes, budgets)."""
