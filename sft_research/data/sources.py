"""Where training records come from: local files or hub datasets, read through Hugging Face ``datasets``.

A source yields :class:`RawRecord` objects that remember their origin (file and 1-based row), so every later
check can name the exact place of a bad record.
"""

from __future__ import annotations

import csv
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft_research.data.errors import DataError

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_COLUMNS = ("prompt", "completion", "chosen", "rejected")


@dataclass(frozen=True)
class RawRecord:
    source: str
    row: int
    fields: dict[str, Any]


class DataSource(ABC):
    """A named collection of training records."""

    name: str

    @abstractmethod
    def records(self) -> list[RawRecord]: ...


class FileDataset(DataSource):
    """Records from a local ``.json``/``.jsonl``/``.parquet``/``.csv`` file, a local dataset folder, or a hub id.

    Args:
        path: a local file or folder, or a Hugging Face hub dataset id such as ``trl-lib/Capybara``.
        split: the split to read.
        columns: renames columns to the record fields, e.g. ``{"question": "prompt", "answer": "completion"}``.
        limit: read only the first n rows.
    """

    def __init__(self, path: str, split: str = "train", columns: dict[str, str] | None = None, limit: int | None = None):
        self.path = path
        self.split = split
        self.columns = dict(columns or {})
        self.limit = limit
        self.name = path

    def records(self) -> list[RawRecord]:
        dataset = self._load()
        if self.limit is not None:
            dataset = dataset.select(range(min(self.limit, len(dataset))))
        missing = set(self.columns) - set(dataset.column_names)
        if missing:
            raise DataError(self.path, f"has no column(s) {sorted(missing)} to rename; its columns are {dataset.column_names}")
        return [
            RawRecord(self.path, i + 1, {self.columns.get(key, key): value for key, value in row.items()})
            for i, row in enumerate(dataset)
        ]

    def _load(self):
        import datasets

        path = Path(self.path).expanduser()
        builder = LOCAL_FORMATS.get(path.suffix.lower())
        if builder is None and not path.exists() and not _looks_like_hub_id(self.path):
            raise DataError(self.path, "no such file or folder")
        if builder is not None:
            if not path.is_file():
                raise DataError(self.path, "no such file")
            if path.stat().st_size == 0:
                raise DataError(self.path, "the file is empty")
            kwargs: dict[str, Any] = {}
            if builder == "json":
                # The JSON reader coerces mixed-type columns and reports errors without the row: check first.
                _check_json_rows(path)
            if builder == "csv":
                # pandas would otherwise turn a completion such as "42" into an integer.
                kwargs["converters"] = {column: str for column in _csv_columns(path) if column in TEXT_COLUMNS}
            try:
                return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
            except Exception as error:
                raise DataError(self.path, f"could not be read as {builder}: {error}") from error
        try:
            return datasets.load_dataset(str(path) if path.exists() else self.path, split=self.split)
        except Exception as error:
            if path.exists():
                raise DataError(self.path, f"could not be read as a dataset folder: {error}") from error
            raise DataError(
                self.path,
                "is not a local file or folder, and loading it as a hub dataset id failed "
                f"({type(error).__name__}: {error}). Without network access to the hub, download the dataset "
                "elsewhere and pass the local path.",
            ) from error


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))


def _csv_columns(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        return next(csv.reader(file), [])


def _check_json_rows(path: Path) -> None:
    """Raises a DataError naming the first row that is not valid UTF-8, not JSON, not an object, or whose field
    has another type than the same field in an earlier row."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        row = data[: error.start].count(b"\n") + 1
        raise DataError(str(path), f"is not valid UTF-8 ({error.reason})", row=row) from error
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(str(path), f"malformed JSON: {error.msg} at line {error.lineno}") from error
    else:
        rows = []
        for line in filter(str.strip, text.splitlines()):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(str(path), f"malformed JSON line: {error.msg} at column {error.colno}", row=len(rows) + 1) from error
    seen: dict[str, tuple[str, int]] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(str(path), f"must be a JSON object, got {type(row).__name__}", row=number)
        for field, value in row.items():
            if value is None:
                continue
            kind = "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__
            first_kind, first_row = seen.setdefault(field, (kind, number))
            if first_kind != kind:
                raise DataError(str(path), f"is a {kind} here but a {first_kind} in row {first_row}", row=number, field=field)
