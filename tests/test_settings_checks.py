"""Every setting that cannot work stops the command with one line naming it, before any model loads."""

import pytest

from tests.conftest import SFT_ROWS, write_jsonl


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--data.batch_size=0", "data.batch_size must be at least 1, got 0"),
        ("--data.batch_size=-4", "data.batch_size must be at least 1, got -4"),
        ("--data.micro_batch_size=0", "data.micro_batch_size must be at least 1"),
        (
            "--data.micro_batch_size=8",
            "data.micro_batch_size=8 is larger than each process's share of the batch (data.batch_size=4 over 1 processes: 4)",
        ),
        ("--model.optimizer.lr=0", "model.optimizer.lr must be positive, got 0"),
        ("--model.optimizer.lr=-1e-5", "model.optimizer.lr must be positive, got -1e-05"),
        # argparse reads "-1e-5" after a space as an option, not a value: the README says to write negative numbers with "=".
        (["--model.optimizer.lr", "-1e-5"], "argument --model.optimizer.lr: expected one argument"),
        ("--optimizer=Adam", "unrecognized arguments: --optimizer=Adam"),  # the module's own optimizer settings only
    ],
)
def test_impossible_settings_are_one_line_errors(tiny_model_dir, tmp_path, monkeypatch, capsys, flag, message):
    import sys

    from sft_research.cli.main import console
    from sft_research.train import module

    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("a model was loaded before the check"))
    argv = [
        "sft-research",
        "fit",
        f"--model.pretrained.name_or_path={tiny_model_dir}",
        "--data.train=sft_research.data.FileDataset",
        f"--data.train.path={path}",
        "--data.batch_size=4",
        "--trainer.max_steps=1",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        *([flag] if isinstance(flag, str) else flag),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit:
        console()
    assert exit.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(("sft-research: error: ", "error: ")) and message in last


def test_the_readme_says_to_write_negative_numbers_with_an_equals_sign():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "Negative numbers need the `=` form (`--model.optimizer.lr=-1e-5`" in readme


def test_one_is_task_reads_a_source_as_written_and_as_parsed():
    from jsonargparse import Namespace

    from sft_research.train.config_checks import is_task

    task, file = "sft_research.data.ReasoningGymTask", "sft_research.data.FileDataset"
    assert is_task({"class_path": task}) and is_task(Namespace(class_path=task, init_args=Namespace(task="chain_sum")))
    assert not is_task({"class_path": file}) and not is_task(Namespace(class_path=file)) and not is_task(None)


FILE_DATA = {"class_path": "sft_research.data.FileDataset", "init_args": {"path": "d.jsonl"}}


@pytest.mark.parametrize(
    "precision,dtype",
    [(None, "float32"), ("32-true", "float32"), ("bf16-mixed", "float32"), ("bf16-true", "bfloat16"), ("16-true", "float16")],
)
def test_the_weights_dtype_follows_the_precision(precision, dtype):
    from sft_research.fit.lightning_cli import parse_fit

    fit = {"trainer": {} if precision is None else {"precision": precision}, "data": {"train": FILE_DATA}}
    assert parse_fit(fit).model.pretrained.dtype == dtype
    # Naming the dtype the precision holds is allowed too.
    assert parse_fit({**fit, "model": {"pretrained": {"dtype": dtype}}}).model.pretrained.dtype == dtype


def test_a_dtype_the_precision_does_not_hold_is_refused_in_one_line():
    from sft_research.errors import ConfigError
    from sft_research.fit.lightning_cli import parse_fit

    train = FILE_DATA
    with pytest.raises(ConfigError) as error:
        parse_fit({"trainer": {"precision": "bf16-mixed"}, "model": {"pretrained": {"dtype": "bfloat16"}}, "data": {"train": train}})
    assert str(error.value) == (
        "--model.pretrained.dtype bfloat16 with --trainer.precision bf16-mixed: that precision holds the weights in float32; "
        "leave model.pretrained.dtype out, it follows trainer.precision"
    )
    with pytest.raises(ConfigError, match="--model.pretrained.dtype float32 with --trainer.precision bf16-true"):
        parse_fit({"trainer": {"precision": "bf16-true"}, "model": {"pretrained": {"dtype": "float32"}}, "data": {"train": train}})


def test_the_command_line_links_the_data_loaders_layout_to_the_modules_settings():
    from sft_research.errors import ConfigError
    from sft_research.fit.lightning_cli import parse_fit

    fit = {"model": {"execution": {"packing": True, "compile": True}}, "data": {"train": FILE_DATA, "micro_batch_size": 2}}
    data = parse_fit(fit).data
    assert (data.pack, data.pad_to_bucket, data.micro_batch_size) == (True, True, 2)
    data = parse_fit({"data": {"train": FILE_DATA}}).data
    assert (data.pack, data.pad_to_bucket, data.micro_batch_size) == (False, False, None)
    from sft_research.cli.main import main

    with pytest.raises(ConfigError, match='Linked "data.pack" must be given via "model.execution.packing"'):
        main(["fit", "--data.pack=true"])


def test_a_data_module_built_in_python_for_another_layout_than_the_modules_is_refused():
    from sft_research.data import FileDataset, SFTDataModule
    from sft_research.data.datamodule import check_batch_layout
    from sft_research.errors import ConfigError
    from sft_research.model.execution import ExecutionConfig
    from sft_research.model.loading import ModelConfig
    from sft_research.train.module import FineTuningModule

    module = FineTuningModule(ModelConfig(), micro_batch_size=2, execution=ExecutionConfig(packing=True))
    check_batch_layout(SFTDataModule(FileDataset("d.jsonl"), micro_batch_size=2, pack=True), module)
    with pytest.raises(ConfigError) as error:
        check_batch_layout(SFTDataModule(FileDataset("d.jsonl"), micro_batch_size=2), module)
    assert str(error.value) == (
        "SFTDataModule needs pack=True (not False), as the module's micro_batch_size, execution.packing and execution.compile: "
        "the command line links them; pass them when building both in Python"
    )
    with pytest.raises(ConfigError, match=r"needs micro_batch_size=2 \(not None\), pad_to_bucket=True \(not False\)"):
        check_batch_layout(
            SFTDataModule(FileDataset("d.jsonl"), pack=True),
            FineTuningModule(ModelConfig(), micro_batch_size=2, execution=ExecutionConfig(packing=True, compile=True)),
        )
