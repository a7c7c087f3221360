"""Datasets whose rows hold several kinds of records (UltraFeedback binarized: an SFT conversation and a preference
pair) are read as what the objective trains on, without a rename; an unresolved row stops with its columns named."""

import pytest

from sft_research.data import FileDataset, LengthConfig, SFTDataModule
from sft_research.data.records import Conversation, Preference, parse_record
from sft_research.data.sources import RawRecord
from sft_research.errors import DataError
from sft_research.fit.lightning_cli import parse_fit
from sft_research.rehearsal.fixtures import DATASETS

ULTRAFEEDBACK = str(DATASETS / "HuggingFaceH4--ultrafeedback_binarized")


def examples(tiny_model_dir, kind):
    data = SFTDataModule(
        FileDataset(ULTRAFEEDBACK, split="train_prefs"),
        tokenizer=str(tiny_model_dir),
        record_kind=kind,
        lengths=LengthConfig(max_length=4096),
    )
    data.setup("fit")
    return data


def test_ultrafeedback_reads_as_pairs_for_dpo_and_as_sft_records_for_sft(tiny_model_dir):
    pairs = examples(tiny_model_dir, "preference")
    assert len(pairs.train_examples) == 16
    assert all(len(e.sequences) == 2 and isinstance(e.record, Preference) for e in pairs.train_examples)
    first = pairs.train_examples[0]
    raw = first.raw.fields
    assert first.record.chosen == raw["chosen"][-1]["content"] and first.record.rejected == raw["rejected"][-1]["content"]
    sft = examples(tiny_model_dir, "sft")
    assert all(len(e.sequences) == 1 and isinstance(e.record, Conversation) for e in sft.train_examples)
    assert [m.content for m in sft.train_examples[0].record.messages] == [m["content"] for m in raw["messages"]]


def test_the_command_line_reads_rows_as_the_objective_trains():
    train = {"class_path": "sft_research.data.FileDataset", "init_args": {"path": ULTRAFEEDBACK, "split": "train_prefs"}}
    for objective, kind in (("DPO", "preference"), ("IRFT", "preference"), ("SFT", "sft"), ("IwSFT", "sft")):
        config = parse_fit({"model": {"objective": f"sft_research.objectives.{objective}"}, "data": {"train": train}})
        assert config.data.record_kind == kind, objective


def test_a_row_of_both_kinds_without_a_kind_stops_with_its_columns(tiny_model_dir):
    with pytest.raises(DataError) as info:
        examples(tiny_model_dir, None)
    message = str(info.value)
    assert "row 1" in message and "SFT record (messages)" in message and "preference pair (chosen, rejected)" in message
    assert "['chosen', 'messages', 'prompt', 'prompt_id', 'rejected', 'score_chosen', 'score_rejected']" in message


def test_rows_of_one_kind_read_the_same_whatever_the_kind_asked():
    sft = RawRecord("d.jsonl", 3, {"prompt": "1 + 1 =", "completion": "2"})
    pair = RawRecord("d.jsonl", 4, {"prompt": "1 + 1 =", "chosen": "2", "rejected": "3"})
    for kind in (None, "sft", "preference"):
        assert isinstance(parse_record(sft, kind), Conversation)
        assert isinstance(parse_record(pair, kind), Preference)
    both = RawRecord(
        "d.jsonl", 5, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "completion": "x"}
    )
    with pytest.raises(DataError, match="row 5: holds both 'messages' and 'completion'"):
        parse_record(both, "sft")
