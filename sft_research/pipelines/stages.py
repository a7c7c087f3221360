"""Multi-stage runs (SFT then DPO; IRFT rounds) from one YAML, one stage after another, resumable.

Each stage is an ordinary fit (:mod:`sft_research.fit.lightning_cli`) whose config sits inline in the pipeline YAML and is checked by
the same parser. A stage writes its config, logs and final Hugging Face checkpoint under ``<output_dir>/<name>/``; a
stage whose checkpoint is there is done and is skipped when the pipeline runs again.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft_research.checkpoints.embedded import DEFAULT_MODEL
from sft_research.checkpoints.names import ModelLoadError
from sft_research.data.records import RecordKind
from sft_research.errors import ConfigError, DataError
from sft_research.fit.lightning_cli import parse_fit
from sft_research.fit.run import is_done, run_fit
from sft_research.fit.run_checks import ModelFiles, check_fit
from sft_research.train.curve_points import add_curve_points, curve_points

# A nested ``sft-research fit`` config, kept as plain data (its own parser checks it): an ``Any`` value type would
# let the pipeline's parser instantiate the classes inside it.
FitConfig = dict[str, str | int | float | bool | None | list | dict]


def placeholder(stage: str) -> str:
    """How an earlier stage's final model is named before it exists."""
    return f"<stage {stage}>"


@dataclass
class StageFit:
    """A fit that a stage will run, as it is checked before any stage trains.

    Args:
        config: its config, earlier stages' models named by :func:`placeholder`.
        records: the kind of records its training data holds (None: the kind its objective trains on).
    """

    config: FitConfig
    records: RecordKind | None = None


@contextlib.contextmanager
def named(where: str) -> Iterator[None]:
    """A user error raised within says where it was found first (``stage 'dpo': ...``)."""
    try:
        yield
    except DataError as error:
        raise DataError(f"{where}: {error.source}", error.reason, error.row, error.field, line=error.line) from None
    except (ConfigError, ModelLoadError) as error:
        raise type(error)(f"{where}: {error}") from None


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

    def fits(self) -> list[StageFit]:
        """The fits the stage will run, which the pipeline checks whole before any stage trains
        (:mod:`sft_research.fit.run_checks`); a stage that runs none lists none."""
        return []

    def frozen_from(self) -> list[str]:
        """Earlier stages whose final models this stage reads as frozen models (besides ``start_from``)."""
        return []

    @abstractmethod
    def run(self, stage_dir: Path, start_model: str | None, earlier: dict[str, Path]) -> None:
        """Runs the stage; ``earlier`` maps each earlier stage to its final model."""

    @abstractmethod
    def final_model(self, stage_dir: Path) -> Path: ...

    def steps(self) -> int:
        """The optimizer steps the stage trains for (its fits' ``trainer.max_steps``, which curves need)."""
        raise ValueError(f"stage {self.name!r} ({type(self).__name__}) does not say how many steps it trains")

    def add_curve_points(self, steps: list[int]) -> None:
        """Also export the model after these optimizer steps of the stage (counted from its start)."""
        if steps:
            raise ValueError(f"stage {self.name!r} ({type(self).__name__}) cannot export models along its training")

    def end_fit(self) -> str:
        """The name of the fit that ends the stage, as curves label it."""
        return self.name

    def curve(self, stage_dir: Path) -> list[tuple[str, int, Path]]:
        """The models along the stage's training, in order, as (fit, optimizer steps into the stage, model folder).
        By default only the final model; stages that export models along their fits list those too."""
        return [(self.end_fit(), self.steps(), self.final_model(stage_dir))]


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
            earlier_models = [str(earlier.get(name, placeholder(name))) for name in self.baselines_from]
            init["baselines"] = list(init.get("baselines") or []) + earlier_models
        return config

    def check(self) -> None:
        with named(f"stage {self.name!r}"):
            parse_fit(self.config({}))

    def fits(self) -> list[StageFit]:
        config = self.config({})
        if self.start_from is not None:
            config.setdefault("model", {}).setdefault("pretrained", {})["name_or_path"] = placeholder(self.start_from)
        return [StageFit(config)]

    def steps(self) -> int:
        return fit_steps(self.name, self.fit)

    def add_curve_points(self, steps: list[int]) -> None:
        self.fit = add_curve_points(self.fit, steps)

    def curve(self, stage_dir: Path) -> list[tuple[str, int, Path]]:
        return [(self.name, step, path) for step, path in curve_points(stage_dir)] + super().curve(stage_dir)

    def run(self, stage_dir: Path, start_model: str | None, earlier: dict[str, Path]) -> None:
        run_fit(self.config(earlier), stage_dir, start_model)

    def final_model(self, stage_dir: Path) -> Path:
        return stage_dir / "hf_model"


def fit_steps(name: str, fit: FitConfig) -> int:
    steps = (fit.get("trainer") or {}).get("max_steps")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"stage {name!r}: its fit sets no trainer.max_steps, which curves along training need")
    return steps


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

    def check(self, files: ModelFiles | None = None) -> None:
        """Every stage's every fit, checked before the first stage trains: settings, model architecture, data, frozen
        models (:func:`~sft_research.fit.run_checks.check_fit`). ``files`` says where models' files are read (the real
        ones by default)."""
        for stage in self.stages:
            stage.check()
        fits, files = self.stage_fits(files)
        for stage, fit in fits:
            with named(f"stage {stage.name!r}"):
                check_fit(fit.config, files, fit.records)

    def stage_fits(self, files: ModelFiles | None = None) -> tuple[list[tuple[Stage, StageFit]], ModelFiles]:
        """Every stage's fits, in order, and ``files`` (the real models' by default) made to read each stage's final
        model, which does not exist yet, as the model that stage starts from."""
        files = files or ModelFiles()
        files = dataclasses.replace(files, aliases=dict(files.aliases), chat_templates=dict(files.chat_templates))
        fits = []
        for stage in self.stages:
            own = stage.fits()
            fits += [(stage, fit) for fit in own]
            if own:
                pretrained = (own[0].config.get("model") or {}).get("pretrained") or {}
                files.aliases[placeholder(stage.name)] = pretrained.get("name_or_path", DEFAULT_MODEL)
                template = ((own[0].config.get("data") or {}).get("template") or {}).get("chat_template")
                if template is not None:  # saved with the stage's model, which later stages start from
                    files.chat_templates[placeholder(stage.name)] = template
        return fits, files

    def policy_stages(self) -> list[Stage]:
        """The stages the last stage's model trained through: the last, the one it started from, and so on, in
        order (a PoFT baseline stage, say, is not among them)."""
        by_name = {stage.name: stage for stage in self.stages}
        path = [self.stages[-1]]
        while path[-1].start_from is not None:
            path.append(by_name[path[-1].start_from])
        return path[::-1]

    def run(self, checked: bool = False) -> dict[str, Path]:
        """Runs the stages not done yet, after checking them all (unless ``checked`` already); returns every stage's
        final model."""
        if not checked:
            self.check()
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


def build_pipeline(args: list[str] | dict) -> Pipeline:
    """The :class:`Pipeline` that ``sft-research pipeline ARGS`` describes (``--config FILE`` and overrides), or a
    pipeline config given as a dict."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="sft-research pipeline", description=Pipeline.__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="a pipeline YAML")
    parser.add_class_arguments(Pipeline)
    parsed = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)
    init = parser.instantiate(parsed).as_dict()
    init.pop("config", None)
    return Pipeline(**init)
