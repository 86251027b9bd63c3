"""The one error type users see: a message that names the file, field and fix."""


class ClbenchError(Exception):
    """A problem with the user's input or environment, reported before compute is spent."""


class ConfigError(ClbenchError):
    """A config file or value is wrong."""


class DataError(ClbenchError):
    """A dataset is missing or malformed."""


class TrainingDiverged(ClbenchError):
    """The loss became NaN or infinite."""


class StoreError(ClbenchError):
    """The results folder cannot be written (read-only, full) or is in use by another sweep."""
