"""Exception types shared by the package; the CLI turns them into one line and exit code 2."""


class DDRMError(ValueError):
    """Base class for user-facing errors (bad config, bad data, missing files)."""


class ConfigError(DDRMError):
    """A configuration key or value is not allowed."""


class DataError(DDRMError):
    """A dataset file is missing or malformed."""
