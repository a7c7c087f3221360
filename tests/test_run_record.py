"""A run folder says what ran (run.json: the commit, the library versions, the model's identity, no hash of its
weights), and a fit may leave its final model out, refused by name where a later step reads it."""

import json
import logging
import subprocess
from pathlib import Path

import pytest
import yaml

import sft_research
from sft_research.cli.main import main
from sft_research.errors import ConfigError
from sft_research.runs.run_record import model_identity, versions
from tests.conftest import SFT_ROWS, file_fit_args, write_jsonl
from tests.test_fit_checks import hub_cache_with_config

pytestmark = pytest.mark.usefixtures("private_cache")
ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_a_fit_writes_what_ran_beside_its_config(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    main(["fit", *file_fit_args(tiny_model_dir, path, tmp_path, 1)])
    (run,) = tmp_path.rglob("version_0")
    assert {"config.yaml", "run.json"} <= {p.name for p in run.iterdir()} and (run / "hf_model" / "config.json").is_file()
    record = json.loads((run / "run.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert record["git_commit"] == head
    assert record["versions"] == versions() and record["versions"]["sft_research"] == sft_research.__version__
    assert record["model"] == {"name": str(Path(tiny_model_dir).resolve()), "source": "local folder"}
    assert "reference" not in record, "the reference is the model itself"


def test_a_models_identity_is_its_name_and_where_it_came_from(tiny_model_dir, tmp_path, monkeypatch):
    hub_cache_with_config(tmp_path / "hub", "some-org/some-model", {"model_type": "llama"}, monkeypatch)
    assert model_identity("some-org/some-model") == {
        "name": "some-org/some-model",
        "source": "hub",
        "revision": "0123456789abcdef0123456789abcdef01234567",  # the cached snapshot it loads from
    }
    assert model_identity("other-org/not-cached")["revision"] is None
    assert model_identity("embedded:tiny-random") == {
        "name": "embedded:tiny-random",
        "source": "embedded",
        "sft_research": sft_research.__version__,
    }
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    assert model_identity(str(adapter)) == {
        "name": str(adapter.resolve()),
        "source": "local folder",
        "adapter_of": {"name": str(Path(tiny_model_dir).resolve()), "source": "local folder"},
    }


@pytest.mark.slow
def test_a_fit_without_its_final_model_says_what_it_wrote(tiny_model_dir, tmp_path, caplog):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    with caplog.at_level(logging.INFO):
        main(["fit", *file_fit_args(tiny_model_dir, path, tmp_path, 1), "--export_model=false"])
    (run,) = tmp_path.rglob("version_0")
    assert not list(tmp_path.rglob("hf_model")) and (run / "run.json").is_file() and (run / "metrics.csv").is_file()
    lines = [record.getMessage() for record in caplog.records]
    assert any(line.endswith("final model: none (export_model false)") for line in lines)
    assert lines[-1] == f"outputs: metrics and config in {run} (and what ran: run.json); no final model (export_model false)"


def fit(model, data) -> dict:
    return {
        "export_model": False,
        "trainer": {"max_steps": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "model": {"pretrained": {"name_or_path": str(model)}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data)}}, "batch_size": 4},
    }


REFUSED = r"export_model false: what comes after this fit reads its final model"


def test_leaving_the_model_out_is_refused_where_a_later_step_reads_it(tiny_model_dir, tmp_path):
    """A pipeline's stage (checked before the first trains), a bench arm, a rehearsal."""
    data = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    stage = {"class_path": "sft_research.pipelines.FitStage", "init_args": {"name": "sft", "fit": fit(tiny_model_dir, data)}}
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "stages": [stage]}))
    with pytest.raises(ConfigError, match=rf"stage 'sft': {REFUSED}"):
        main(["pipeline", f"--config={pipeline}"])
    assert not (tmp_path / "run").exists()
    suite = {
        "base_model": "embedded:tiny-random",
        "task": {"options": {"min_terms": 2, "max_terms": 2}, "train_size": 8, "eval_size": 4},
        "budget": {"max_steps": 1, "batch_size": 4, "max_length": 128, "accelerator": "cpu"},
        "arms": [
            {
                "class_path": "sft_research.bench.ObjectiveArm",
                "init_args": {
                    "name": "sft",
                    "objective": {"class_path": "sft_research.objectives.SFT"},
                    "overrides": {"export_model": False},
                },
            }
        ],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    with pytest.raises(ConfigError, match=rf"arm 'sft': stage 'fit': {REFUSED}"):
        main(["bench", f"--suite={tmp_path / 'suite.yaml'}", f"--output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out" / "base.json").exists()
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(fit(tiny_model_dir, data)))
    with pytest.raises(ConfigError, match=REFUSED):
        main(["rehearse", "--config", str(tmp_path / "fit.yaml"), "--output_dir", str(tmp_path / "rehearsal")])
