"""The one error type that bad input data raises: it always says where (file, row, field) and what is wrong."""

from __future__ import annotations


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
