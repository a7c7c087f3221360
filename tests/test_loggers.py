"""Loggers beyond the CSV logger: Weights & Biases offline (no account, no network) receives the run's metrics and
hyperparameters."""

import pytest

from sft_research.cli.main import main
from tests.conftest import SFT_ROWS, file_fit_args, write_jsonl

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.mark.slow
def test_a_fit_logs_to_weights_and_biases_offline(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    args = file_fit_args(tiny_model_dir, path, tmp_path, 3)[:-2]  # without the CSV logger's save_dir
    logger = [
        "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.init_args.offline=true",
        "--trainer.logger.init_args.project=sft",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = main(["fit", *args, *logger])
    run = cli.trainer.logger.experiment
    assert run.offline and run.summary["trainer/global_step"] == 2 and run.summary["train/loss"] > 0
    assert run.config["model.optimizer.lr"] == cli.model.optimizer_config.lr and run.config["data.batch_size"] == 4
    run.finish()
    (record,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert record.stat().st_size > 0, "the offline run's record, for `wandb sync` later"
