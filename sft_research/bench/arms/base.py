"""The interface of an arm: one way of fine-tuning, turned into pipeline stages for a suite and a training seed.

A new arm is one subclass (importable by class path) listed under a suite's ``arms``. Most arms are one fit with one
thing changed: an :class:`ObjectiveArm` subclass whose :meth:`~ObjectiveArm.fit_overrides` says what, or a plain
:class:`ObjectiveArm` with ``overrides`` in the suite's YAML. See :mod:`sft_research.bench.arms.clean_data` for a
short example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from sft_research.bench.overrides import deep_merge
from sft_research.pipelines import FitStage, Stage
from sft_research.pipelines.stages import FitConfig

if TYPE_CHECKING:
    from sft_research.bench.suite import Suite

# An objective as in a fit config: {"class_path": ..., "init_args": {...}}; the fit parser checks it.
ObjectiveConfig = dict[str, str | dict[str, str | int | float | bool | None | list]]
SFT_OBJECTIVE: ObjectiveConfig = {"class_path": "sft_research.objectives.SFT"}


class Arm(ABC):
    """One way of fine-tuning, turned into pipeline stages for a suite and a seed.

    Args:
        name: the arm's name in the report.
    """

    def __init__(self, name: str):
        self.name = name

    def label(self, seed: int) -> str:
        return f"{self.name} · seed {seed}"

    @abstractmethod
    def stages(self, suite: Suite, seed: int) -> list[Stage]: ...


class ObjectiveArm(Arm):
    """One fit with an objective: the suite's fit config (:meth:`~sft_research.bench.suite.Suite.fit_config`) with
    what the arm changes laid over it. Its subclasses change one thing of the fit (:meth:`fit_overrides`).

    Args:
        objective: the objective, as in a fit config (``class_path`` and ``init_args``).
        lr: overrides the budget's learning rate.
        overrides: any fit settings, as in a fit config, laid over everything else (e.g.
            ``{model: {execution: {packing: true}}}``); mappings merge key by key, other values replace.
    """

    def __init__(self, name: str, objective: ObjectiveConfig, lr: float | None = None, overrides: FitConfig | None = None):
        super().__init__(name)
        self.objective, self.lr, self.overrides = objective, lr, overrides

    def fit_overrides(self, suite: Suite) -> FitConfig:
        """What this kind of arm changes in the suite's fit config; subclasses add their own change to this."""
        return {"model": {"optimizer": {"lr": self.lr}}} if self.lr is not None else {}

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        # The suite's YAML has the last word over what the arm's kind sets.
        overrides = deep_merge(self.fit_overrides(suite), self.overrides or {})
        return [FitStage("fit", suite.fit_config(self.label(seed), seed, self.objective, overrides))]
