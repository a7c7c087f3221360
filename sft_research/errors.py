"""Errors in a run's settings, found before anything is loaded; the command line shows them as one line."""


class ConfigError(ValueError):
    """A setting that cannot work, named with the value it was given and what would."""
