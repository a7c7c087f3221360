"""The errors a user's input can cause, each said by the command line as one line: a setting that cannot work, bad
input data (always naming the file, row and field), a run that cannot succeed where it would write."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work, named with the value it was given and what would."""


class PreflightError(RuntimeError):
    """The run cannot succeed as configured (a folder it cannot write, a disk without room); the message says why."""


class DataError(ValueError):
    """Bad input data. ``row`` is 1-based (the n-th record of the source); ``field`` names the offending column;
    ``line`` is the 1-based line of a text file, for errors found before the file could be split into records."""

    def __init__(self, source: str, message: str, row: int | None = None, field: str | None = None, *, line: int | None = None):
        self.source, self.row, self.field, self.line, self.reason = source, row, field, line, message
        where = [str(source)]
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}")
