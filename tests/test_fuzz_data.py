"""The data pipeline under malformed records: it loads every record, or stops with a DataError; nothing else."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sft_research.data import DataError, FileDataset, LengthConfig, SFTDataModule

FIELDS = ["prompt", "completion", "messages", "chosen", "rejected", "quality", "other"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(min_size=2000, max_size=5000),  # longer than any max_length below
)
message = st.dictionaries(
    st.sampled_from(["role", "content", "name"]), st.one_of(st.sampled_from(["user", "assistant", "system", "robot"]), scalars), max_size=3
)
values = st.one_of(
    scalars, st.lists(message, max_size=3), st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2)
)
records = st.lists(st.dictionaries(st.sampled_from(FIELDS), values, min_size=1, max_size=4), min_size=1, max_size=5)


def load(tiny_model_dir, path):
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), lengths=LengthConfig(max_length=64, truncation="error"))
    data.setup("fit")
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=records)
def test_random_records_load_whole_or_fail_with_a_data_error(tiny_model_dir, tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    try:
        data = load(tiny_model_dir, path)
    except DataError as error:
        assert str(path) in str(error)
        return
    assert len(data.train_examples) == len(rows), "no record silently dropped"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_random_bytes_fail_with_a_data_error_or_load_whole(tiny_model_dir, tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_bytes(raw)
    try:
        data = load(tiny_model_dir, path)
    except DataError:
        return
    assert len(data.train_examples) == len([line for line in raw.decode().splitlines() if line.strip()])


def test_invalid_utf8_inside_a_valid_looking_line(tiny_model_dir, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "ok", "completion": "fine"}\n{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(DataError, match="row 2: is not valid UTF-8"):
        load(tiny_model_dir, path)
