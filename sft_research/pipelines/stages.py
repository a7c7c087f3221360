"""Multi-stage runs (SFT then DPO; IRFT rounds) from one YAML, one stage after another, resumable.

Each stage is an ordinary ``sft-research fit`` run whose config sits inline in the pipeline YAML and is checked by
the same parser. A stage writes its config, logs and final Hugging Face checkpoint under ``<output_dir>/<name>/``; a
stage whose checkpoint is there is done and is skipped when the pipeline runs again.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import yaml

# A nested ``sft-research fit`` config, kept as plain data (its own parser checks it): an ``Any`` value type would
# let the pipeline's parser instantiate the classes inside it.
FitConfig = dict[str, str | int | float | bool | None | list | dict]


def run_fit(config: dict[str, Any], run_dir: Path, start_model: str | None = None, run: bool = True):
    """Runs (or, with ``run=False``, only parses and builds) ``sft-research fit`` on ``config`` in ``run_dir``.

    The config is written to ``run_dir/fit.yaml``; logs go to ``run_dir/logs`` and the checkpoint to
    ``run_dir/hf_model``. ``start_model`` replaces the config's pretrained model, and, unless the config names
    another reference, becomes the frozen reference too.
    """
    from sft_research.cli import main

    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "fit.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["fit"] if run else []  # without running, LightningCLI takes no subcommand
    args += [
        f"--config={config_path}",
        f"--model.save_dir={run_dir / 'hf_model'}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.logger.init_args.name=logs",
    ]
    if start_model is not None:
        args.append(f"--model.pretrained.name_or_path={start_model}")
    return main(args, run=run)


def parse_fit(config: dict[str, Any]):
    """Checks a fit config with the ``sft-research fit`` parser, without building anything (no model, no devices)."""
    from sft_research.cli import SFTResearchCLI, cli_arguments

    class ParseOnly(SFTResearchCLI):
        def instantiate_classes(self) -> None:
            pass

    return ParseOnly(**cli_arguments(args=copy.deepcopy(config), run=False)).config


def is_done(run_dir: Path) -> bool:
    # The checkpoint folder is renamed into place only when complete.
    return (run_dir / "hf_model" / "config.json").is_file()


class Stage(ABC):
    """One stage of a pipeline.

    Args:
        name: the stage's folder under the pipeline's output folder, and how later stages refer to it.
        start_from: an earlier stage whose final model this stage starts from (and, by default, uses as its frozen
            reference); None starts from the config's own pretrained model.
    """

    def __init__(self, name: str, start_from: str | None = None):
        self.name, self.start_from = name, start_from

    @abstractmethod
    def check(self) -> None:
        """Parses the stage's config, so that a mistake in a late stage fails before the first one runs."""

    def frozen_from(self) -> list[str]:
        """Earlier stages whose final models this stage reads as frozen models (besides ``start_from``)."""
        return []

    @abstractmethod
    def run(self, stage_dir: Path, start_model: str | None, earlier: dict[str, Path]) -> None:
        """Runs the stage; ``earlier`` maps each earlier stage to its final model."""

    @abstractmethod
    def final_model(self, stage_dir: Path) -> Path: ...


class FitStage(Stage):
    """One ``sft-research fit`` run.

    Args:
        fit: the run's config, as in a ``sft-research fit --config`` YAML.
        baselines_from: earlier stages whose final models are the objective's frozen baseline models (PoFT's),
            after any the config lists itself.
    """

    def __init__(self, name: str, fit: FitConfig, start_from: str | None = None, baselines_from: list[str] | None = None):
        super().__init__(name, start_from)
        self.fit, self.baselines_from = fit, list(baselines_from or [])

    def frozen_from(self) -> list[str]:
        return self.baselines_from

    def config(self, earlier: dict[str, Path]) -> dict[str, Any]:
        config = copy.deepcopy(self.fit)
        if self.baselines_from:
            objective = config.setdefault("model", {}).setdefault("objective", {})
            if isinstance(objective, str):
                objective = config["model"]["objective"] = {"class_path": objective}
            init = objective.setdefault("init_args", {})
            init["baselines"] = list(init.get("baselines") or []) + [str(earlier.get(name, f"<stage {name}>")) for name in self.baselines_from]
        return config

    def check(self) -> None:
        parse_fit(self.config({}))

    def run(self, stage_dir: Path, start_model: str | None, earlier: dict[str, Path]) -> None:
        run_fit(self.config(earlier), stage_dir, start_model)

    def final_model(self, stage_dir: Path) -> Path:
        return stage_dir / "hf_model"


class Pipeline:
    """Stages run in order.

    Args:
        output_dir: where every stage writes its folder.
        stages: the stages (``FitStage``, ``IRFTStage``, or your own ``Stage`` subclass).
    """

    def __init__(self, output_dir: str, stages: list[Stage]):
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for index, stage in enumerate(stages):
            for earlier in ([stage.start_from] if stage.start_from is not None else []) + stage.frozen_from():
                if earlier not in names[:index]:
                    raise ValueError(f"stage {stage.name!r} reads the model of {earlier!r}, which is not an earlier stage")
        self.output_dir, self.stages = Path(output_dir), stages

    def run(self) -> dict[str, Path]:
        for stage in self.stages:
            stage.check()
        finals: dict[str, Path] = {}
        for stage in self.stages:
            stage_dir = self.output_dir / stage.name
            start = str(finals[stage.start_from]) if stage.start_from else None
            if is_done(stage.final_model(stage_dir).parent):
                print(f"stage {stage.name}: done already ({stage.final_model(stage_dir)}), skipped")
            else:
                print(f"stage {stage.name}: running in {stage_dir}")
                stage.run(stage_dir, start, dict(finals))
            finals[stage.name] = stage.final_model(stage_dir)
        return finals
