"""Where training records come from: local files or hub datasets, read through Hugging Face ``datasets``.

A source yields :class:`RawRecord` objects that remember their origin (file and 1-based row), so every later
check can name the exact place of a bad record.
"""

from __future__ import annotations

import csv
import json
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft_research.errors import DataError

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_COLUMNS = ("prompt", "completion", "chosen", "rejected")
ACCEPTED = (
    "expected a .jsonl, .json, .parquet or .csv file, a dataset folder (data files, or one written by "
    "save_to_disk), or a hub dataset id of the form owner/name"
)


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
        path: a local file or folder, or a Hugging Face hub dataset id such as ``trl-lib/Capybara``. A folder holds
            data files, or was written by ``save_to_disk``; a name without a slash, or one starting with ``./``,
            ``../``, ``/`` or ``~``, is always a local path.
        split: the split to read from a folder of data files, a ``DatasetDict`` folder or a hub dataset (a folder
            written by ``Dataset.save_to_disk`` holds one split, read whole).
        columns: renames columns to the record fields, e.g. ``{"question": "prompt", "answer": "completion"}``.
        templates: builds record fields from a row's columns (after ``columns``) with Python format strings, e.g.
            ``{"completion": "{reasoning}\nAnswer: {answer}"}``: what TRL's ``formatting_func`` does, as data.
        limit: read only the first n rows.
    """

    def __init__(
        self,
        path: str,
        split: str = "train",
        columns: dict[str, str] | None = None,
        templates: dict[str, str] | None = None,
        limit: int | None = None,
    ):
        self.path = path
        self.split = split
        self.columns = dict(columns or {})
        self.templates = dict(templates or {})
        self.limit = limit
        self.name = path

    def records(self) -> list[RawRecord]:
        dataset = self._load()
        if self.limit is not None:
            dataset = dataset.select(range(min(self.limit, len(dataset))))
        missing = set(self.columns) - set(dataset.column_names)
        if missing:
            raise DataError(self.path, f"has no column(s) {sorted(missing)} to rename; its columns are {dataset.column_names}")
        renamed = [self.columns.get(name, name) for name in dataset.column_names]
        for column, field in zip(dataset.column_names, renamed):
            kind = str(getattr(dataset.features[column], "dtype", ""))
            if field in TEXT_COLUMNS and kind.startswith(("timestamp", "date")):
                # A folder's or the hub's JSON files, read by the datasets JSON reader (a file is read as text).
                raise DataError(
                    self.path,
                    f"was read as {kind} by the datasets JSON reader, its text looking like dates; give its JSON file itself "
                    "(FileDataset reads a file's text as text)",
                    field=column,
                )
        for field, template in self.templates.items():
            named = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            if named - set(renamed):
                raise DataError(
                    self.path, f"the template of '{field}' names column(s) {sorted(named - set(renamed))}; its columns are {renamed}"
                )
        records = []
        for i, row in enumerate(dataset):
            fields = {self.columns.get(key, key): value for key, value in row.items()}
            for field, template in self.templates.items():
                empty = [name for _, name, _, _ in string.Formatter().parse(template) if name and fields[name] is None]
                if empty:
                    raise DataError(self.path, f"the template of '{field}' reads {empty}, missing in this row", row=i + 1, field=empty[0])
                fields[field] = template.format_map(fields)
            records.append(RawRecord(self.path, i + 1, fields))
        return records

    def _load(self):
        path = Path(self.path).expanduser()
        builder = LOCAL_FORMATS.get(path.suffix.lower())
        if path.is_dir():
            return self._load_folder(path)
        if path.is_file():
            if builder is None:
                raise DataError(self.path, f"unsupported file type ({path.suffix or 'no extension'}); {ACCEPTED}")
            return self._load_file(path, builder)
        if builder is not None:
            raise DataError(self.path, "no such file")
        if not could_be_hub_id(self.path):
            raise DataError(self.path, f"no such file or folder; {ACCEPTED}")
        return self._load_hub()

    def _load_file(self, path: Path, builder: str):
        import datasets

        if path.stat().st_size == 0:
            raise DataError(self.path, "the file is empty")
        kwargs: dict[str, Any] = {}
        if builder == "json":
            # Read here, not by the datasets JSON reader: it coerces mixed-type columns, reports errors without the row,
            # and reads text that looks like a date ("2003-07-25") as a timestamp. Parsed, the rows keep their JSON types.
            rows = _check_json_rows(path)
            columns = list(dict.fromkeys(name for row in rows for name in row))  # in the order they first appear
            try:
                return datasets.Dataset.from_dict({name: [row.get(name) for row in rows] for name in columns})
            except Exception as error:  # pyarrow's errors on nested values of several types have no common base
                raise DataError(self.path, f"could not be read as json: {error}") from error
        if builder == "csv":
            # pandas would otherwise turn a completion such as "42" into an integer.
            kwargs["converters"] = {column: str for column in _csv_columns(path) if column in TEXT_COLUMNS}
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except Exception as error:
            raise DataError(self.path, f"could not be read as {builder}: {error}") from error

    def _load_folder(self, path: Path):
        import datasets

        # load_dataset refuses folders written by save_to_disk, and load_from_disk reads nothing else.
        saved = any(
            (path / name).is_file() for name in (datasets.config.DATASETDICT_JSON_FILENAME, datasets.config.DATASET_STATE_JSON_FILENAME)
        )
        try:
            dataset = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(str(path), split=self.split)
        except Exception as error:
            raise DataError(self.path, f"could not be read as a dataset folder: {error}") from error
        if not isinstance(dataset, datasets.DatasetDict):
            return dataset
        if self.split not in dataset:
            raise DataError(self.path, f"has no split {self.split!r}; its splits are {list(dataset)}")
        return dataset[self.split]

    def _load_hub(self):
        import datasets

        from sft_research.checkpoints.hub import cache_only_unless_reachable

        with cache_only_unless_reachable() as reachable:
            try:
                return datasets.load_dataset(self.path, split=self.split)
            except OSError as error:  # offline, unreachable, no such dataset (ConnectionError, FileNotFoundError, ...)
                where = "" if reachable else "the hub cannot be reached from here and it is not in the local cache; "
                raise DataError(
                    self.path,
                    f"is neither an existing file or folder nor reachable as a hub dataset ({where}{type(error).__name__}: "
                    f"{str(error).splitlines()[0]}); {ACCEPTED}. Without network access to the hub, download the dataset "
                    "elsewhere and pass its local path.",
                ) from error
            except ValueError as error:  # reachable, but without this split or configuration
                raise DataError(self.path, f"could not be read as a hub dataset: {error}") from error


def could_be_hub_id(name: str) -> bool:
    """Hub dataset ids are ``owner/name``; a single name, or one starting with ./ ../ / or ~, is a local path."""
    owner, _, rest = name.partition("/")
    return bool(owner) and bool(rest) and "/" not in rest and not owner.startswith((".", "~"))


def _csv_columns(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        return next(csv.reader(file), [])


def _check_json_rows(path: Path) -> list[dict]:
    """The file's rows; a DataError naming where the file is first not valid UTF-8, not JSON, or not one object per
    record, or where a field first has another type than the same field in an earlier row."""
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
            raise DataError(
                str(path), f"malformed JSON ({error.msg} at column {error.colno}); expected a JSON array of objects", line=error.lineno
            ) from error
    else:
        rows = []
        # Split on "\n" alone, as the JSON-lines reader does: str.splitlines would also split inside strings at
        # characters such as U+2028, which JSON allows unescaped.
        for line, content in enumerate(text.split("\n"), start=1):
            if not content.strip():
                continue
            try:
                row = json.loads(content)
            except json.JSONDecodeError as error:
                raise DataError(
                    str(path), f"malformed JSON ({error.msg} at column {error.colno}); expected one JSON object per line", line=line
                ) from error
            if not isinstance(row, dict):
                raise DataError(str(path), f"must be a JSON object, got {type(row).__name__}; expected one JSON object per line", line=line)
            rows.append(row)
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
    return rows
