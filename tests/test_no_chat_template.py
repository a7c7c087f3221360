"""A model whose tokenizer has no chat template, with data rendered as chat (the default): one line before any model
loads, from a fit and from a rehearsal (before it starts its processes), where a traceback came from each process."""

import json
import shutil

import pytest
import yaml

from sft_research.cli.main import console
from tests.conftest import SFT_ROWS, file_fit_args, write_jsonl


@pytest.fixture
def untemplated(tiny_model_dir, tmp_path):
    folder = tmp_path / "no_template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def run(monkeypatch, capsys, args: list[str]) -> list[str]:
    monkeypatch.setattr("sys.argv", ["sft-research", *args])
    with pytest.raises(SystemExit):
        console()
    return capsys.readouterr().err.splitlines()


def test_a_fit_says_so_in_one_line_before_the_model_loads(untemplated, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sft_research.train.module.load_model", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    (line,) = run(monkeypatch, capsys, ["fit", *file_fit_args(untemplated, path, tmp_path, 1)])
    said = f"sft-research: error: {untemplated}: its tokenizer has no chat template, which data.template.prompt_format 'chat'"
    assert line.startswith(said)
    assert "set data.template.chat_template (a Jinja file, or the template itself), or data.template.prompt_format plain" in line


def test_a_rehearsal_says_so_once_before_its_processes_start(untemplated, tmp_path, monkeypatch, capsys, private_cache):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    config = {
        "trainer": {"max_steps": 2, "accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        "model": {"pretrained": {"name_or_path": str(untemplated)}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(path)}}, "batch_size": 4},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    lines = run(monkeypatch, capsys, ["rehearse", "--config", str(tmp_path / "fit.yaml"), "--output_dir", str(tmp_path / "rehearsal")])
    (line,) = lines
    assert line.startswith("sft-research: error: ") and "its tokenizer has no chat template" in line
    assert not list((tmp_path / "rehearsal").rglob("version_*")), "no training process started"
