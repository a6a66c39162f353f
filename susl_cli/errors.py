"""Domain errors. The library raises these; the CLI prints them as one line and exits non-zero.

Every message should say what was wrong (naming the bad value) and how to fix it.
"""


class SuslError(Exception):
    """Base class of every error a user can cause and fix."""

    exit_code = 2


class UsageError(SuslError):
    """A command-line value is malformed or out of range."""


class DataError(SuslError):
    """A dataset is missing, corrupt or inconsistent."""


class FileFormatError(SuslError):
    """A file is not what the command expects (wrong kind, version or layout)."""


class OutputError(SuslError):
    """An output cannot be written where asked (missing directory, exists, disk full)."""


class ConfigError(SuslError):
    """Impossible hyper-parameters."""


class DeviceError(SuslError):
    """The requested compute device is not available."""


class TrainingError(SuslError):
    """Training cannot go on (for example the loss became NaN)."""
