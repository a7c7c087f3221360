"""Where records come from: JSON-lines errors name the line, wrong paths and unreachable hub ids say what is
accepted, dataset folders written by save_to_disk load, and the command line reports bad input in one line."""

import json
import sys

import pytest

from sft_research.data import DataError, FileDataset
from tests.conftest import write_jsonl

GOOD = '{"prompt": "1 + 1 =", "completion": "2"}\n'


@pytest.fixture
def offline(monkeypatch):
    import datasets
    import huggingface_hub

    # The libraries read these once at import; offline mode makes a hub lookup fail at once instead of retrying.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def no_hub(monkeypatch):
    """Fails the test if anything asks the hub (or the generic loader) for the path."""
    import datasets

    def load_dataset(path, *args, **kwargs):
        raise AssertionError(f"{path!r} was looked up with load_dataset")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_malformed_json_line_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD + "\n" + '{"prompt": "a", "completion": \n' + GOOD)
    with pytest.raises(DataError, match=r"line 3: malformed JSON \(.*\); expected one JSON object per line") as info:
        FileDataset(str(path)).records()
    assert str(path) in str(info.value) and info.value.line == 3


def test_json_line_that_is_not_an_object_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD + "\n\n[1, 2]\n")
    with pytest.raises(DataError, match=r"d.jsonl, line 4: must be a JSON object, got list; expected one JSON object per line"):
        FileDataset(str(path)).records()


def test_malformed_json_array_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "a" "completion": "b"}\n]\n')
    with pytest.raises(DataError, match=r"d.json, line 3: malformed JSON \(.*\); expected a JSON array of objects"):
        FileDataset(str(path)).records()


def test_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a\u2028b", "completion": "c"}\n' + GOOD, encoding="utf-8")
    assert [r.fields["prompt"] for r in FileDataset(str(path)).records()] == ["a\u2028b", "1 + 1 ="]


@pytest.mark.parametrize("name", ["./train", "train", "../train", "data/more/train", "~/no-such-sft-data-folder"])
def test_missing_local_path_is_not_looked_up_on_the_hub(tmp_path, monkeypatch, no_hub, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"no such file or folder; expected a \.jsonl, \.json, \.parquet or \.csv file") as info:
        FileDataset(name).records()
    assert str(info.value).startswith(f"{name}: ") and "owner/name" in str(info.value)


def test_missing_owner_name_path_offline_names_both_readings(tmp_path, monkeypatch, offline):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^data/mytrain: is neither an existing file or folder nor reachable as a hub dataset") as info:
        FileDataset("data/mytrain").records()
    assert "OfflineModeIsEnabled" in str(info.value) and ".jsonl" in str(info.value)


def test_hub_dataset_not_found_is_a_data_error(monkeypatch):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def load_dataset(path, *args, **kwargs):
        raise DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataError, match=r"^owner/name: is neither .*DatasetNotFoundError: Dataset 'owner/name' doesn't exist"):
        FileDataset("owner/name").records()


def test_existing_file_of_unknown_type(tmp_path, no_hub):
    path = tmp_path / "train.txt"
    path.write_text(GOOD)
    with pytest.raises(DataError, match=r"train.txt: unsupported file type \(\.txt\); expected a \.jsonl"):
        FileDataset(str(path)).records()


ROWS = [{"prompt": "1 + 1 =", "completion": "2"}, {"prompt": "2 + 2 =", "completion": "4"}]


def test_folder_written_by_dataset_save_to_disk(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    records = FileDataset(str(tmp_path / "saved"), columns={"completion": "answer"}, limit=1).records()
    assert [(r.source, r.row, r.fields) for r in records] == [(str(tmp_path / "saved"), 1, {"prompt": "1 + 1 =", "answer": "2"})]


def test_folder_written_by_dataset_dict_save_to_disk_reads_the_split(tmp_path):
    import datasets

    folder = str(tmp_path / "saved")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[1:])}).save_to_disk(folder)
    assert len(FileDataset(folder).records()) == 2
    assert [r.fields for r in FileDataset(folder, split="test").records()] == ROWS[1:]
    with pytest.raises(DataError, match=rf"^{folder}: has no split 'validation'; its splits are \['train', 'test'\]"):
        FileDataset(folder, split="validation").records()


def run_console(monkeypatch, tiny_model_dir, tmp_path, data_path):
    from sft_research.cli.main import console

    args = [
        "fit",
        f"--model.pretrained.name_or_path={tiny_model_dir}",
        "--data.train=sft_research.data.FileDataset",
        f"--data.train.path={data_path}",
        "--trainer.max_steps=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    monkeypatch.setattr(sys, "argv", ["sft-research", *args])
    console()


def test_console_reports_bad_data_in_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SFT_RESEARCH_DEBUG", raising=False)
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD + "{oops\n")
    with pytest.raises(SystemExit) as info:
        run_console(monkeypatch, tiny_model_dir, tmp_path, data)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"sft-research: error: {data}, line 2: malformed JSON (Expecting property name enclosed in double quotes at "
        "column 2); expected one JSON object per line (set SFT_RESEARCH_DEBUG=1 for the traceback)"
    )


def test_console_shows_the_traceback_in_debug_mode(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_RESEARCH_DEBUG", "1")
    with pytest.raises(DataError, match="no such file"):
        run_console(monkeypatch, tiny_model_dir, tmp_path, tmp_path / "missing.jsonl")


def test_console_leaves_other_errors_alone(monkeypatch):
    import sft_research.cli.main as cli

    def main():
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "main", main)
    monkeypatch.delenv("SFT_RESEARCH_DEBUG", raising=False)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.console()


def test_templates_build_fields_from_columns_as_a_formatting_func_would(tmp_path):
    rows = [{"question": "2 + 2 =", "thinking": "two and two", "attempt": "4"}, {"question": "1 + 1 =", "thinking": None, "attempt": "2"}]
    path = write_jsonl(tmp_path / "s1.jsonl", rows)
    source = FileDataset(
        str(path), columns={"question": "prompt"}, templates={"completion": "<think>{thinking}</think>\nAnswer: {attempt}"}, limit=1
    )
    (record,) = source.records()
    assert record.fields["prompt"] == "2 + 2 =" and record.fields["completion"] == "<think>two and two</think>\nAnswer: 4"
    with pytest.raises(DataError, match=r"row 2, field 'thinking': the template of 'completion' reads \['thinking'\], missing in this row"):
        FileDataset(str(path), templates={"completion": "{thinking} {attempt}"}).records()
    with pytest.raises(DataError, match=r"the template of 'completion' names column\(s\) \['answer'\]; its columns are"):
        FileDataset(str(path), templates={"completion": "{answer}"}).records()


def test_json_text_that_looks_like_a_date_stays_text(tmp_path, no_hub):
    """The datasets JSON reader would read "2003-07-25" as a timestamp (then refused as 'must be a string, got
    datetime'); a file's rows keep their JSON types, fields missing from a row read as None."""
    rows = [{"prompt": "When?", "completion": "2003-07-25"}, {"prompt": "And then?", "completion": "2004-07-25T10:00:00", "quality": 0.5}]
    for path in (write_jsonl(tmp_path / "dates.jsonl", rows), tmp_path / "dates.json"):
        if path.suffix == ".json":
            path.write_text(json.dumps(rows))
        assert [record.fields for record in FileDataset(str(path)).records()] == [
            {"prompt": "When?", "completion": "2003-07-25", "quality": None},
            {"prompt": "And then?", "completion": "2004-07-25T10:00:00", "quality": 0.5},
        ]


def test_a_folder_whose_dates_the_json_reader_changed_names_the_column(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"prompt": "When?", "answer": "2003-07-25"}])
    with pytest.raises(DataError, match=r"folder, field 'answer': was read as timestamp\[s\] by the datasets JSON reader"):
        FileDataset(str(folder), columns={"answer": "completion"}).records()
