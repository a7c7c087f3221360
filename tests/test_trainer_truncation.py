"""``truncation: trl_0_9`` and ``spin`` keep exactly the ids (and train exactly the tokens) that TRL 0.9.6's
``DPOTrainer.tokenize_row`` and the SPIN collator keep, on rows that fit, cut the prompt, cut the answers, cut both, and
a pair of exactly ``max_length`` tokens (which both trainers cut, counting the EOS they append). The expected ids were
written by the real TRL 0.9.6 (``bash benchmarks/trl_0_9_fixture.sh``; the SPIN rule transcribed there by hand)."""

import json
from pathlib import Path

import pytest

from sft_research.checkpoints.names import load_tokenizer
from sft_research.data import FileDataset, LengthConfig, SFTDataModule
from sft_research.data.records import parse_record
from sft_research.data.sources import RawRecord
from sft_research.data.tokenize import ChatTokenizer
from sft_research.errors import ConfigError, DataError

REPO = Path(__file__).parents[1]
FIXTURE = json.loads((REPO / "tests/fixtures/trl_0_9_6.json").read_text())


@pytest.fixture(scope="module")
def smollm2():
    """The fixture's tokenizer: the embedded SmolLM2's, with the Zephyr template the handbook's recipe renders with."""
    tokenizer = load_tokenizer(FIXTURE["tokenizer"])
    tokenizer.chat_template = (REPO / FIXTURE["chat_template"]).read_text()
    return tokenizer


@pytest.mark.parametrize("mode", ["trl_0_9", "spin"])
@pytest.mark.parametrize("row", FIXTURE["pairs"], ids=[row["name"] for row in FIXTURE["pairs"]])
def test_the_kept_ids_and_trained_tokens_are_the_trainers(smollm2, mode, row):
    expected = row[mode]
    chat_tokenizer = ChatTokenizer(
        smollm2,
        max_length=expected["max_length"],
        truncation=mode,
        max_prompt_length=expected["max_prompt_length"],
        auto_insert_empty_system_msg=True,
    )
    raw = RawRecord("pairs.jsonl", 1, {key: row[key] for key in ("prompt", "chosen", "rejected")})
    chosen, rejected = chat_tokenizer(raw, parse_record(raw)).sequences
    for name, sequence in (("chosen", chosen), ("rejected", rejected)):
        assert sequence.input_ids == expected[name]["input_ids"], name
        assert sequence.completion_mask == expected[name]["labeled"], name
    cut = row["name"] != "fits"
    assert chat_tokenizer.report.truncated == (["row 1"] if cut else [])


@pytest.mark.parametrize("mode", ["trl_0_9", "spin"])
def test_the_fixture_cuts_the_prompt_the_answers_and_a_pair_of_exactly_max_length(smollm2, mode):
    """What each row exercises, read from the trainers' own output."""
    rows = {row["name"]: row[mode] for row in FIXTURE["pairs"]}

    def prompt_and_answer(kept):
        labeled = kept["chosen"]["labeled"]
        return labeled.index(True), len(labeled) - labeled.index(True)

    budget = rows["cuts the prompt"]["max_prompt_length"]
    assert prompt_and_answer(rows["cuts the prompt"])[0] == budget
    assert prompt_and_answer(rows["cuts the answers"])[1] == rows["cuts the answers"]["max_length"] - budget
    exact = rows["exactly max_length"]
    assert prompt_and_answer(exact)[0] == exact["max_prompt_length"], "a pair of exactly max_length loses prompt tokens"
    bos = [smollm2.bos_token_id] if mode == "trl_0_9" else []
    assert rows["fits"]["chosen"]["input_ids"][: len(bos)] == bos and exact["chosen"]["input_ids"][0] != smollm2.bos_token_id
    assert all(kept[name]["input_ids"][-1] == smollm2.eos_token_id for kept in (rows["fits"], exact) for name in ("chosen", "rejected"))


def test_the_retired_name_stops_in_one_line_naming_its_replacements(smollm2):
    with pytest.raises(ValueError, match="truncation 'trl_dpo' was no single trainer's rule: use 'trl_0_9' .* or 'spin'"):
        ChatTokenizer(smollm2, truncation="trl_dpo")
    with pytest.raises(ConfigError, match="^data.lengths.truncation 'trl_dpo' was no single trainer's rule: use 'trl_0_9'") as error:
        SFTDataModule(FileDataset("pairs.jsonl"), lengths=LengthConfig(truncation="trl_dpo"))
    assert "\n" not in str(error.value)


def test_the_trainer_rules_are_for_chat_records(smollm2, tiny_tokenizer):
    with pytest.raises(ValueError, match="truncation='spin' is a chat trainer's rule: it needs prompt_format='chat'"):
        ChatTokenizer(tiny_tokenizer, prompt_format="plain", truncation="spin")
    raw = RawRecord("text.jsonl", 2, {"text": "plain text"})
    with pytest.raises(DataError, match="row 2: truncation='trl_0_9' cuts a prompt and answers: a text record has none"):
        ChatTokenizer(smollm2, truncation="trl_0_9")(raw, parse_record(raw))


def test_an_unfinished_answer_gets_no_eos(smollm2):
    """A sample cut at its token limit (IRFT's) is never trained as the place to stop, under either rule."""
    raw = RawRecord("pairs.jsonl", 1, {"prompt": "1 + 1 =", "chosen": "2", "rejected": "3 and", "rejected_finished": False})
    for mode in ("trl_0_9", "spin"):
        chosen, rejected = ChatTokenizer(smollm2, truncation=mode)(raw, parse_record(raw)).sequences
        assert chosen.input_ids[-1] == smollm2.eos_token_id and smollm2.decode(rejected.input_ids).endswith("3 and")
