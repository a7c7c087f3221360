"""The README's objective example, taken from README.md itself, trains and logs its diagnostics as the README says."""

import csv
from pathlib import Path

from tests.conftest import readme_block


def test_the_readme_objective_example_runs_as_written(tiny_model_dir, tmp_path, monkeypatch):
    from sft_research.cli import main

    package = tmp_path / "my_objectives"
    package.mkdir()
    (package / "tempered_sft.py").write_text(readme_block("class TemperedSFT(Objective):"))
    monkeypatch.syspath_prepend(str(tmp_path))  # what PYTHONPATH=. does for the command
    command = readme_block("--model.objective my_objectives.tempered_sft.TemperedSFT").split()
    objective_flags = command[command.index("--model.objective") :]
    cli = main(
        [
            "fit",
            *objective_flags,
            f"--model.pretrained.name_or_path={tiny_model_dir}",
            "--data.train=sft_research.data.ReasoningGymTask",
            "--data.train.train_size=8",
            "--data.train.eval_size=4",
            "--data.batch_size=4",
            "--trainer.max_steps=2",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--trainer.limit_val_batches=0",
            "--trainer.log_every_n_steps=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert type(cli.model.objective).__name__ == "TemperedSFT" and cli.model.objective.temperature == 1.5
    assert cli.trainer.global_step == 2
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/loss")]
    for row in rows:
        weight, low, high = (float(row[f"train/tempered/weight{s}"]) for s in ("", "_min", "_max"))
        assert 1.0 < low <= weight <= high, "p^(1/1.5 - 1) > 1 for p < 1"
        assert float(row["train/nll"]) > 0
