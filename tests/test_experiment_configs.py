"""Every experiment YAML parses with the command it is meant for (full-scale ones too, though they need GPUs)."""

from pathlib import Path

import pytest
import yaml

from sft_research.cli import build_pipeline
from sft_research.pipelines.stages import parse_fit

EXPERIMENTS = sorted(Path(__file__).parents[1].glob("experiments/**/*.yaml"))


def test_there_are_experiments():
    assert {path.parent.name for path in EXPERIMENTS} >= {"quickstart", "iw_sft", "poft", "dpo", "irft", "scale"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[str(p.relative_to(p.parents[1])) for p in EXPERIMENTS])
def test_experiment_config_parses(path):
    config = yaml.safe_load(path.read_text())
    if "stages" in config:
        pipeline = build_pipeline([f"--config={path}"])
        for stage in pipeline.stages:
            stage.check()
    else:
        parsed = parse_fit(config)
        assert parsed.model.objective.class_path.startswith("sft_research.objectives.")
