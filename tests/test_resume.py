"""Exact resume after SIGKILL mid-epoch, and determinism."""

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SFT_ROWS, interruptible, readme_block, write_jsonl

MEASURED = {"train/tokens_per_s", "train/peak_memory_gib"}


def fit_command(model_dir, data, root, *extra):
    return [
        sys.executable,
        "-m",
        "sft_research.cli",
        "fit",
        f"--model.pretrained.name_or_path={model_dir}",
        "--model.optimizer.lr=1e-3",
        "--model.optimizer.warmup_ratio=0.2",
        "--data.micro_batch_size=3",
        "--data.train=sft_research.data.FileDataset",
        f"--data.train.path={data}",
        "--data.batch_size=5",
        "--trainer.max_steps=9",
        "--trainer.accelerator=cpu",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.save_top_k=0",
        f"--trainer.callbacks.dirpath={root / 'checkpoints'}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        *extra,
    ]


def losses(log_dir: Path) -> dict[int, float]:
    with open(log_dir / "metrics.csv") as file:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(file) if row.get("train/loss")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "d.jsonl", SFT_ROWS)  # 12 examples: 3 batches of 5 (last 2)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, data, tmp_path_factory) -> Path:
    """One uninterrupted run, for the determinism and resume tests to compare with."""
    root = tmp_path_factory.mktemp("reference")
    subprocess.run(fit_command(tiny_model_dir, data, root), check=True, capture_output=True)
    return root / "sft-d.jsonl" / "version_0"


def measured_rows(log_dir: Path) -> list[dict]:
    """Every logged value but the measurements of speed and memory, which no seed fixes."""
    with open(log_dir / "metrics.csv") as file:
        return [{k: v for k, v in row.items() if k not in MEASURED} for row in csv.DictReader(file)]


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(tiny_model_dir, data, reference, tmp_path):
    subprocess.run(fit_command(tiny_model_dir, data, tmp_path), check=True, capture_output=True)
    again = measured_rows(tmp_path / "sft-d.jsonl" / "version_0")
    assert again == measured_rows(reference)
    assert len([row for row in again if row["train/loss"]]) == 9


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_exactly(tiny_model_dir, data, reference, tmp_path):
    expected = losses(reference)

    killed = tmp_path / "killed"
    process = subprocess.Popen(fit_command(tiny_model_dir, data, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step_file = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while True:  # kill once the checkpoint of step 4 (mid-epoch: 3 batches an epoch) is written
        assert time.monotonic() < deadline and process.poll() is None
        names = os.listdir(killed / "checkpoints") if (killed / "checkpoints").exists() else []
        if any("step=4" in name for name in names) or (step_file.exists() and len(losses_if(killed)) >= 4):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()

    resumed = subprocess.run(fit_command(tiny_model_dir, data, killed, f"--ckpt_path={step_file}"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = losses(killed / "sft-d.jsonl" / "version_1")
    first = min(after)
    assert 0 < first < 8, f"resumed mid-run at step {first}"
    for step, loss in after.items():
        assert loss == pytest.approx(expected[step], abs=1e-6), step
    epochs = {
        int(row["step"]): row["epoch"]
        for row in csv.DictReader(open(killed / "sft-d.jsonl" / "version_1" / "metrics.csv"))
        if row.get("train/loss")
    }
    assert epochs[8] == "2", "epochs keep their length after a resume"
    assert max(after) == 8


def losses_if(root: Path) -> dict[int, float]:
    path = root / "sft-d.jsonl" / "version_0"
    return losses(path) if (path / "metrics.csv").exists() else {}


@pytest.mark.slow
def test_ddp_on_two_processes_gives_the_single_process_loss_curve(tiny_model_dir, data, tmp_path):
    """Two CPU processes (gloo), each with half of every global batch of 6, against one process."""
    curves = {}
    for name, extra in (("one", ["--trainer.devices=1"]), ("two", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        command = [
            arg.replace("--data.batch_size=5", "--data.batch_size=6") for arg in fit_command(tiny_model_dir, data, tmp_path / name, *extra)
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        curves[name] = losses(tmp_path / name / "sft-d.jsonl" / "version_0")
    assert len(curves["one"]) == 9 and curves["one"].keys() == curves["two"].keys()
    for step in curves["one"]:
        assert curves["two"][step] == pytest.approx(curves["one"][step], abs=1e-5), step


def readme_resume_commands() -> list[list[str]]:
    """The README's resume recipe, as argument lists."""
    block = readme_block("--ckpt_path last")
    commands = [shlex.split(c) for c in block.replace("\\\n", " ").strip().splitlines()]
    assert [c[:2] for c in commands] == [["sft-research", "fit"]] * 2
    return [c[1:] for c in commands]


@pytest.mark.slow
def test_the_readme_resume_recipe_continues_the_same_run_after_sigint(tiny_model_dir, data, tmp_path):
    max_steps = 100  # interrupted after about 25, resumed for the rest
    first, again = readme_resume_commands()
    assert again == first + ["--ckpt_path", "last"]
    # The tiny model and data instead of the quickstart's, checkpoints every step, and the logs under tmp_path.
    small = [
        f"--model.pretrained.name_or_path={tiny_model_dir}",
        "--data.train=sft_research.data.FileDataset",
        f"--data.train.path={data}",
        "--data.batch_size=4",
        f"--trainer.max_steps={max_steps}",
        "--trainer.accelerator=cpu",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks.every_n_train_steps=1",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    command = [sys.executable, "-m", "sft_research.cli"]
    run_dir = tmp_path / "quickstart" / "version_0"
    said = open(tmp_path / "interrupted.err", "w")
    process = subprocess.Popen(command + first + small, stdout=subprocess.DEVNULL, stderr=said, preexec_fn=interruptible)
    deadline = time.monotonic() + 300
    while len(losses(run_dir) if (run_dir / "metrics.csv").exists() else {}) < 5:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    said.close()
    assert "the same command with --ckpt_path last continues the run from it" in (tmp_path / "interrupted.err").read_text()
    interrupted = losses(run_dir)
    assert 5 <= len(interrupted) < max_steps // 5 and not (run_dir / "hf_model").exists()

    resumed = subprocess.run(command + again + small, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "quickstart").iterdir()) == ["version_0"], "the same run folder, not a new one"
    with open(run_dir / "metrics.csv") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]
    logged = [step for step in range(max_steps) if (step + 1) % 5 == 0]  # the quickstart logs every 5 steps
    assert steps == logged, "every logged step once: the metrics continue, none repeated or lost"
    assert (run_dir / "hf_model" / "config.json").is_file()
    assert "outputs: metrics and config in" in resumed.stderr + resumed.stdout


def test_resume_without_a_checkpoint_stops_and_says_where_it_looked(tiny_model_dir, data, tmp_path):
    from sft_research.cli.main import main
    from sft_research.errors import ConfigError

    (tmp_path / "sft-d.jsonl" / "version_0").mkdir(parents=True)
    with pytest.raises(
        ConfigError, match=r"--ckpt_path last: no last checkpoint of this run \(looked in .*version_0/checkpoints/last.ckpt\)"
    ):
        main(
            [
                "fit",
                f"--model.pretrained.name_or_path={tiny_model_dir}",
                "--data.train=sft_research.data.FileDataset",
                f"--data.train.path={data}",
                "--trainer.max_steps=2",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
                f"--trainer.default_root_dir={tmp_path}",
                "--ckpt_path=last",
            ]
        )
