"""``sft-research data`` shows what training will see: the data report and examples with trained tokens marked."""

from sft_research.cli.main import main
from tests.conftest import PAIR_ROWS, write_jsonl


def test_data_command_marks_trained_tokens_and_reports(tiny_model_dir, tmp_path, capsys):
    rows = [{"prompt": "12 + 7 =", "completion": "19"}, {"prompt": "the quick brown fox " * 10, "completion": "jumps"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    text = main(
        [
            "data",
            "--examples",
            "2",
            f"--model.pretrained.name_or_path={tiny_model_dir}",
            "--data.train=sft_research.data.FileDataset",
            f"--data.train.path={path}",
            "--data.lengths.max_length=40",
            "--data.lengths.truncation=truncate_prompt",
            "--data.lengths.max_prompt_length=20",
        ]
    )
    assert text == capsys.readouterr().out.rstrip("\n")
    lines = text.splitlines()
    assert (
        lines[0] == f"{path}: 2 examples kept, 1 truncated (prompt cut in 1, completion cut in 0), 0 dropped; "
        "max_length 40, truncation 'truncate_prompt'"
    )
    assert lines[1].startswith("sequence tokens: min ") and lines[1].endswith("max 40")
    assert f"--- {path}, row 1 (quality 1)" in lines
    assert "<|im_start|>user\n12 + 7 =<|im_end|>\n<|im_start|>assistant\n⟦19<|im_end|>\n⟧" in text
    assert "⟦jumps<|im_end|>\n⟧" in text


def test_data_command_shows_chosen_and_rejected(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS[:2])
    text = main(
        [
            "data",
            "--examples",
            "1",
            f"--model.pretrained.name_or_path={tiny_model_dir}",
            "--model.objective=sft_research.objectives.DPO",
            "--data.train=sft_research.data.FileDataset",
            f"--data.train.path={path}",
        ]
    )
    assert "[chosen] <|im_start|>user\n1 + 20 =<|im_end|>\n<|im_start|>assistant\n⟦21<|im_end|>\n⟧" in text
    assert "[rejected] <|im_start|>user\n1 + 20 =<|im_end|>\n<|im_start|>assistant\n⟦24<|im_end|>\n⟧" in text
