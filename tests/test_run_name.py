"""A run's default log folder is named after its objective and its training data, so that runs of different
objectives land apart; a name given in the config wins."""

import pytest

from sft_research.cli.main import main
from sft_research.fit.lightning_cli import parse_fit
from sft_research.fit.run_folders import run_name
from tests.conftest import PAIR_ROWS, file_fit_args, write_jsonl


@pytest.mark.parametrize(
    "objective,train,expected",
    [
        (None, {"class_path": "sft_research.data.ReasoningGymTask", "init_args": {"task": "chain_sum"}}, "sft-chain_sum"),
        (
            "sft_research.objectives.DPO",
            {"class_path": "sft_research.data.FileDataset", "init_args": {"path": "/data/pairs.jsonl"}},
            "dpo-pairs.jsonl",
        ),
        (
            "sft_research.objectives.IwSFT",
            {"class_path": "sft_research.data.FileDataset", "init_args": {"path": "HuggingFaceH4/ultrachat_200k"}},
            "iwsft-ultrachat_200k",
        ),
    ],
)
def test_default_name_is_objective_and_data(objective, train, expected):
    config = {"model": {"pretrained": {"name_or_path": "embedded:tiny-random"}}, "data": {"train": train}}
    if objective:
        config["model"]["objective"] = {"class_path": objective}
    assert run_name(parse_fit(config)) == expected


@pytest.mark.slow
def test_a_dpo_fit_logs_under_its_own_name_unless_told(tmp_path, private_cache):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    # file_fit_args ends with the logger's save_dir and the default root folder, which the TensorBoard run replaces.
    common = ["fit", "--model.objective=sft_research.objectives.DPO", *file_fit_args("embedded:tiny-random", pairs, tmp_path, steps=1)]
    main(common)
    main([*common, "--trainer.logger.init_args.name=mine"])
    assert (tmp_path / "dpo-pairs.jsonl" / "version_0" / "metrics.csv").is_file()
    assert (tmp_path / "mine" / "version_0" / "metrics.csv").is_file() and not (tmp_path / "sft").exists()
    tensorboard = tmp_path / "tensorboard"
    main(
        [
            *common[:-2],
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
            f"--trainer.logger.save_dir={tensorboard}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert list((tensorboard / "dpo-pairs.jsonl" / "version_0").glob("events.out.tfevents.*")), "TensorBoard files it there too"


@pytest.mark.slow
def test_runs_on_files_of_other_formats_land_apart_and_their_configs_repeat_them_from_anywhere(tmp_path, private_cache, monkeypatch):
    """pc.jsonl and pc.csv name two runs; each config.yaml holds absolute paths, and records the hyperparameters."""
    import csv

    import yaml

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "pc.jsonl", PAIR_ROWS)
    with open(tmp_path / "pc.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(PAIR_ROWS[0]))
        writer.writeheader()
        writer.writerows(PAIR_ROWS)
    for name in ("pc.jsonl", "pc.csv"):
        args = file_fit_args("embedded:tiny-random", name, tmp_path, steps=1)
        main(["fit", "--model.objective=sft_research.objectives.DPO", *args])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("dpo")) == ["dpo-pc.csv", "dpo-pc.jsonl"]
    config = yaml.safe_load((tmp_path / "dpo-pc.csv" / "version_0" / "config.yaml").read_text())
    assert config["data"]["train"]["init_args"]["path"] == str(tmp_path / "pc.csv")
    hparams = yaml.safe_load((tmp_path / "dpo-pc.csv" / "version_0" / "hparams.yaml").read_text())
    assert hparams["model.objective.class_path"] == "sft_research.objectives.DPO" and hparams["data.batch_size"] == 4


def test_a_run_that_fails_leaves_no_folder_behind(tmp_path, private_cache):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a"}])
    from sft_research.data import DataError

    with pytest.raises(DataError):
        main(["fit", *file_fit_args("embedded:tiny-random", path, tmp_path, steps=1)])
    assert not (tmp_path / "sft-bad.jsonl").exists()
