"""Errors a user can act on. Each message is one line that names the problem."""


class SanitizeError(Exception):
    """Base class of every error sanitize raises on purpose."""


class InputError(SanitizeError, ValueError):
    """The source cannot be used as it is: missing column, empty, one class, bad labels..."""


class SourceChangedError(InputError):
    """The source changed during the run; no output was written under a final name."""


class ConfigError(SanitizeError, ValueError):
    """An option is out of range, unknown, or inconsistent with another option."""


class OutputError(SanitizeError):
    """The output directory cannot be written, or another run holds it."""
