"""The README's objective example, taken from README.md itself, trains and logs its diagnostics as the README says."""

import csv
import re
from pathlib import Path

import pytest

from tests.conftest import readme_block


@pytest.mark.slow
def test_the_readme_objective_example_runs_as_written(tiny_model_dir, tmp_path, monkeypatch):
    from sft_research.cli.main import main

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


@pytest.mark.slow  # two fits of 80 steps on the tiny random model, and their evaluation: 10 s
def test_the_readme_task_of_your_own_runs_and_prints_its_table(tmp_path, monkeypatch, capsys, private_cache):
    """The worked example, taken from README.md: the data script, the suite, and the summary table it prints, whose task
    column is the user's task."""
    from sft_research.cli.main import main

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (suite,) = [block for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if block.startswith("# my_suite.yaml")]
    start = readme.index("| arm | runs | task score (greetings, exact match)")
    table = readme[start:].split("\n\n", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(readme_block("# make_my_task.py"), {})
    (tmp_path / "my_suite.yaml").write_text(suite)
    main(["bench", "--suite", "my_suite.yaml", "--output_dir", "runs/my_task"])
    summary = (tmp_path / "runs" / "my_task" / "summary.md").read_text()
    assert summary.startswith(table + "\n") and table in capsys.readouterr().out
    header, _, base, sft, dft = table.splitlines()
    assert header.startswith("| arm | runs | task score (greetings, exact match) | general-text log-lik/token |")
    assert [row.split(" | ")[0] for row in (base, sft, dft)] == ["| base model", "| sft", "| dft"]
