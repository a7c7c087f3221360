"""Every kind of bad input stops with a DataError that names the file, the row and the field."""

import json
import math

import pytest

from sft_research.data import DataError, FileDataset, LengthConfig, SFTDataModule
from tests.conftest import file_fit_args, write_jsonl

GOOD = {"prompt": "1 + 1 =", "completion": "2"}


def load(tiny_model_dir, path, **kwargs):
    data = SFTDataModule(train=FileDataset(str(path)), tokenizer=str(tiny_model_dir), **kwargs)
    data.setup("fit")
    return data


def expect_error(tiny_model_dir, path, pattern, **kwargs):
    with pytest.raises(DataError, match=pattern) as info:
        load(tiny_model_dir, path, **kwargs)
    assert str(path) in str(info.value)
    return info.value


def test_good_jsonl_loads_every_row(tiny_model_dir, tmp_path):
    data = load(
        tiny_model_dir,
        write_jsonl(tmp_path / "d.jsonl", [{**GOOD, "quality": 1.0}, {"prompt": "2 + 2 =", "completion": "4", "quality": 0.5}] * 3),
    )
    assert len(data.train_examples) == 6
    assert [e.quality for e in data.train_examples] == [1.0, 0.5] * 3


def test_missing_column(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"prompt": "2 + 2 ="}])
    error = expect_error(tiny_model_dir, path, r"row 2, field 'completion': is missing")
    assert (error.row, error.field) == (2, "completion")


def test_no_known_columns(tiny_model_dir, tmp_path):
    expect_error(tiny_model_dir, write_jsonl(tmp_path / "d.jsonl", [{"question": "1+1", "answer": "2"}]), r"row 1: no known fields")


def test_column_of_wrong_type(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"prompt": "2 + 2 =", "completion": 4}])
    expect_error(tiny_model_dir, path, r"row 2, field 'completion': is a number here but a str in row 1")
    path = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "2 + 2 =", "completion": 4}])
    expect_error(tiny_model_dir, path, r"row 1, field 'completion': must be a string, got int")


def test_empty_completion(tiny_model_dir, tmp_path):
    expect_error(
        tiny_model_dir,
        write_jsonl(tmp_path / "d.jsonl", [GOOD, {"prompt": "x", "completion": "  "}]),
        r"row 2, field 'completion': is empty",
    )
    expect_error(
        tiny_model_dir,
        write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "a", "rejected": ""}]),
        r"row 1, field 'rejected': is empty",
    )


@pytest.mark.parametrize("truncation", ["error", "truncate_completion"])
def test_over_long_prompt_is_an_error(tiny_model_dir, tmp_path, truncation):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"prompt": "fox " * 50, "completion": "2"}])
    lengths = LengthConfig(max_length=24, truncation=truncation)
    expect_error(tiny_model_dir, path, r"row 2, field 'prompt': .*over max_length=24", lengths=lengths)


def test_over_long_prompt_dropped_or_truncated_is_counted(tiny_model_dir, tmp_path, caplog):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"prompt": "fox " * 50, "completion": "2"}])
    with pytest.warns(UserWarning, match="0 examples truncated and 1 dropped"):
        data = load(tiny_model_dir, path, lengths=LengthConfig(max_length=24, truncation="drop"))
    assert len(data.train_examples) == 1 and data.chat_tokenizer.report.dropped == ["row 2"]
    with pytest.warns(UserWarning, match="1 examples truncated and 0 dropped"):
        data = load(tiny_model_dir, path, lengths=LengthConfig(max_length=24, truncation="truncate_prompt"))
    assert len(data.train_examples) == 2 and data.chat_tokenizer.report.truncated == ["row 2"]


def test_every_example_dropped_is_an_error(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "fox " * 50, "completion": "2"}])
    with pytest.warns(UserWarning):
        expect_error(tiny_model_dir, path, r"every example was dropped", lengths=LengthConfig(max_length=24, truncation="drop"))


@pytest.mark.parametrize(
    "quality,message", [(math.nan, "got nan"), (-0.5, "got -0.5"), (math.inf, "got inf"), ("high", "is a str here but a number in row 1")]
)
def test_bad_quality(tiny_model_dir, tmp_path, quality, message):
    path = tmp_path / "d.jsonl"
    written = json.dumps(quality) if isinstance(quality, str) else str(quality).replace("nan", "NaN").replace("inf", "Infinity")
    path.write_text(
        '{"prompt": "a", "completion": "b", "quality": 1.0}\n' + f'{{"prompt": "a", "completion": "b", "quality": {written}}}\n'
    )
    expect_error(tiny_model_dir, path, rf"row 2, field 'quality': .*{message}")


def test_quality_missing_on_one_row(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**GOOD, "quality": 1.0}, GOOD])
    expect_error(tiny_model_dir, path, r"row 2, field 'quality': is missing")


def test_malformed_json_line(tiny_model_dir, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n')
    expect_error(tiny_model_dir, path, r"line 2: malformed JSON \(.*\); expected one JSON object per line")


def test_invalid_utf8(tiny_model_dir, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff\xfe", "completion": "b"}\n')
    expect_error(tiny_model_dir, path, r"row 2: is not valid UTF-8")


def test_unknown_chat_role(tiny_model_dir, tmp_path):
    messages = [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]
    expect_error(
        tiny_model_dir,
        write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}]),
        r"row 1, field 'messages\[1\].role': unknown chat role 'robot'",
    )


def test_conversation_without_assistant_turn(tiny_model_dir, tmp_path):
    expect_error(
        tiny_model_dir,
        write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]),
        r"row 1, field 'messages': has no assistant turn",
    )


def test_empty_file(tiny_model_dir, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("")
    expect_error(tiny_model_dir, path, r"the file is empty")


def test_wrong_path(tiny_model_dir, tmp_path):
    expect_error(tiny_model_dir, tmp_path / "missing.jsonl", r"no such file")
    expect_error(tiny_model_dir, tmp_path / "missing_dir" / "data", r"no such file or folder")


def test_hub_id_fails_with_a_clear_message(tiny_model_dir, monkeypatch):
    import datasets
    import huggingface_hub

    # The library reads these once at import; offline mode makes it fail at once instead of retrying the network.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        DataError, match=r"no-such-org/no-such-dataset: is neither an existing file or folder nor reachable as a hub dataset"
    ):
        load(tiny_model_dir, "no-such-org/no-such-dataset")


def test_csv_and_parquet_and_json_array(tiny_model_dir, tmp_path):
    import pandas as pd

    rows = [{"prompt": "1 + 1 =", "completion": "2", "quality": 1.0}, {"prompt": "5 - 7 =", "completion": "-2", "quality": 0.0}]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(pd.DataFrame(rows).to_json(orient="records"))
    for name in ("d.csv", "d.parquet", "d.json"):
        data = load(tiny_model_dir, tmp_path / name)
        assert [e.quality for e in data.train_examples] == [1.0, 0.0]
        completions = [
            data.tokenizer.decode([t for t, m in zip(s.input_ids, s.completion_mask) if m])
            for e in data.train_examples
            for s in e.sequences
        ]
        assert completions == ["2<|im_end|>\n", "-2<|im_end|>\n"]


def test_a_fit_stopped_by_bad_data_leaves_no_run_folder(tiny_model_dir, tmp_path):
    from sft_research.cli.main import main

    data = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"prompt": "x", "completion": "  "}])
    runs = tmp_path / "runs"
    with pytest.raises(DataError, match=r"row 2, field 'completion': is empty"):
        main(["fit", *file_fit_args(tiny_model_dir, data, runs, steps=1)])
    assert not (runs / "sft-d.jsonl").exists(), "its version folder (config only) is removed, and the name folder made for it"


def test_a_conversation_that_goes_on_after_its_answer_is_counted(tiny_model_dir, tmp_path):
    """Its turns after the last assistant turn are not trained on: the report says so, with the count and the rows."""
    answered = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [{"messages": answered}, {"messages": [*answered, {"role": "user", "content": "thanks"}]}] * 2
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    message = rf"^{path}, rows 2, 4, field 'messages': 2 of 4 conversations go on after their last assistant turn"
    with pytest.warns(UserWarning, match=message):
        data = load(tiny_model_dir, path)
    assert len(data.train_examples) == 4


def test_preference_pairs_with_one_answer_twice_are_counted_and_all_of_them_stop(tiny_model_dir, tmp_path):
    same = {"prompt": "1 + 1 =", "chosen": "2", "rejected": "2"}
    path = write_jsonl(tmp_path / "d.jsonl", [same, {"prompt": "2 + 2 =", "chosen": "4", "rejected": "5"}, same])
    with pytest.warns(
        UserWarning, match=rf"^{path}, rows 1, 3, field 'rejected': 2 of 3 preference pairs have the same chosen and rejected"
    ):
        data = load(tiny_model_dir, path)
    assert len(data.train_examples) == 3
    unfinished = {**same, "rejected_finished": False}  # a cut answer renders without its end of turn: another sequence
    path = write_jsonl(tmp_path / "all.jsonl", [{**same, "rejected_finished": True}] * 2 + [unfinished])
    with pytest.warns(UserWarning, match="rows 1, 2, field 'rejected'"):
        load(tiny_model_dir, path)
    path = write_jsonl(tmp_path / "all.jsonl", [same, same])
    error = expect_error(
        tiny_model_dir, path, r"field 'rejected': every preference pair has the same chosen and rejected answer \(rows 1, 2\)"
    )
    assert error.field == "rejected"
