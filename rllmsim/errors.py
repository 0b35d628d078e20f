"""The one exception type for user mistakes.

Anything a user can get wrong (a flag, a config file, a trace row) raises `ConfigError` with a
single line that names the field and the fix. The CLI prints that line and exits with code 2;
every other exception is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """A user-facing configuration or input error, reported as one line with exit code 2."""
