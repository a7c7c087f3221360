"""TRL's conversational prompt/completion records for SFT: prompt and completion as message lists (or one of them a
string). The loss is on the completion; an assistant turn inside the prompt is context."""

import pytest

from sft_research.cli.main import main
from sft_research.data.records import parse_record
from sft_research.data.sources import RawRecord
from sft_research.data.tokenize import ChatTokenizer
from sft_research.errors import DataError
from tests.conftest import file_fit_args, write_jsonl

HISTORY = [
    {"role": "system", "content": "You add numbers."},
    {"role": "user", "content": "1 + 1?"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": "2 + 2?"},
]
ANSWER = [{"role": "assistant", "content": "4"}]


def tokenized(tokenizer, fields):
    chat_tokenizer = ChatTokenizer(tokenizer)
    raw = RawRecord("d.jsonl", 1, fields)
    (sequence,) = chat_tokenizer(raw, parse_record(raw)).sequences
    return sequence


def trained_text(tokenizer, sequence) -> str:
    return tokenizer.decode([t for t, m in zip(sequence.input_ids, sequence.completion_mask) if m])


def test_the_completion_is_trained_and_the_prompts_assistant_turn_is_context(tiny_tokenizer):
    conversational = tokenized(tiny_tokenizer, {"prompt": HISTORY, "completion": ANSWER})
    as_messages = tokenized(tiny_tokenizer, {"messages": HISTORY + ANSWER})
    assert conversational.input_ids == as_messages.input_ids, "the same conversation, rendered the same"
    assert trained_text(tiny_tokenizer, conversational).startswith("4") and "2" not in trained_text(tiny_tokenizer, conversational)
    assert trained_text(tiny_tokenizer, as_messages).startswith("2"), "a messages record trains every assistant turn"
    assert set(i for i, m in enumerate(conversational.completion_mask) if m) < set(
        i for i, m in enumerate(as_messages.completion_mask) if m
    )


@pytest.mark.parametrize(
    "fields,plain",
    [
        ({"prompt": [{"role": "user", "content": "2 + 2?"}], "completion": "4"}, {"prompt": "2 + 2?", "completion": "4"}),
        ({"prompt": "2 + 2?", "completion": ANSWER}, {"prompt": "2 + 2?", "completion": "4"}),
    ],
)
def test_one_side_a_string_is_the_standard_record(tiny_tokenizer, fields, plain):
    got, expected = tokenized(tiny_tokenizer, fields), tokenized(tiny_tokenizer, plain)
    assert (got.input_ids, got.completion_mask) == (expected.input_ids, expected.completion_mask)


@pytest.mark.parametrize(
    "fields,field,message",
    [
        ({"prompt": HISTORY, "completion": [{"role": "user", "content": "4"}]}, "completion", "has no assistant turn"),
        ({"prompt": [{"role": "robot", "content": "hi"}], "completion": ANSWER}, r"prompt\[0\].role", "unknown chat role 'robot'"),
        ({"prompt": HISTORY, "completion": [{"role": "assistant", "content": " "}]}, r"completion\[0\].content", "empty assistant turn"),
    ],
)
def test_a_bad_conversational_record_names_its_row_and_field(fields, field, message):
    with pytest.raises(DataError, match=rf"d.jsonl, row 1, field '{field}': .*{message}"):
        parse_record(RawRecord("d.jsonl", 1, fields))


@pytest.mark.slow
def test_sft_trains_on_a_file_of_conversational_records(tiny_model_dir, tmp_path, private_cache):
    rows = [{"prompt": HISTORY, "completion": [{"role": "assistant", "content": str(2 * n)}]} for n in range(8)]
    path = write_jsonl(tmp_path / "conversational.jsonl", rows)
    cli = main(["fit", *file_fit_args(tiny_model_dir, path, tmp_path, 2)])
    assert cli.trainer.global_step == 2 and cli.datamodule.kinds[str(path)] == "SFT records (prompt/completion or messages)"
