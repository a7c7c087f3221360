"""The replay arm: a data fix for forgetting, general text trained among the task's records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sft_research.bench.arms.base import SFT_OBJECTIVE, ObjectiveArm, ObjectiveConfig
from sft_research.bench.overrides import deep_merge
from sft_research.bench.probes import GeneralTextProbe
from sft_research.pipelines.stages import FitConfig

if TYPE_CHECKING:
    from sft_research.bench.suite import Suite
    from sft_research.bench.task import SourceConfig


class ReplayArm(ObjectiveArm):
    """An objective (SFT by default) with general text replayed among the task's records as plain language modelling,
    a data fix for forgetting: ``text_fraction`` of the training records are pieces of ``text``
    (:class:`~sft_research.data.Mixture`), the same pieces for every training seed.

    The general-text probe's own text is the default, with every chunk the probe scores left out (no piece touches
    one or repeats 50 characters of one elsewhere): reasoning-gym ships no other prose. The pieces come from the same
    story as the probe's chunks, so replay may raise the probe's log-likelihood more than unrelated general text
    would; the probe's items are never trained on.

    Args:
        text_fraction: the fraction of the training records that are text.
        text: a text file, or ``reasoning_gym:NAME``; None: the general-text probe's.
        chunk_tokens: tokens per text piece; with the start and end tokens it must fit the budget's ``max_length``.
        objective: the objective, as in a fit config.
        lr: overrides the budget's learning rate.
        overrides: any fit settings, laid over the rest (:class:`~sft_research.bench.arms.base.ObjectiveArm`).
    """

    def __init__(
        self,
        name: str,
        text_fraction: float = 0.25,
        text: str | None = None,
        chunk_tokens: int = 96,
        objective: ObjectiveConfig = SFT_OBJECTIVE,
        lr: float | None = None,
        overrides: FitConfig | None = None,
    ):
        super().__init__(name, objective, lr, overrides)
        self.text_fraction, self.text, self.chunk_tokens = text_fraction, text, chunk_tokens

    def source(self, suite: Suite) -> SourceConfig:
        """The training source: the suite task's records mixed with pieces of the text."""
        probe = suite.probe(GeneralTextProbe)
        if probe is None and self.text is None:
            raise ValueError(f"arm {self.name!r}: no text to replay (set text, or give the suite a GeneralTextProbe)")
        text = self.text or probe.source
        exclude = [list(span) for span in probe.scored_spans(suite.base_model)] if probe is not None and text == probe.source else []
        chunks = {"path": text, "tokenizer": suite.base_model, "chunk_tokens": self.chunk_tokens, "exclude": exclude}
        return {
            "class_path": "sft_research.data.Mixture",
            "init_args": {
                "records": suite.task.source(),
                "text": {"class_path": "sft_research.data.TextChunks", "init_args": chunks},
                "text_fraction": self.text_fraction,
                "seed": suite.task.seed,
            },
        }

    def fit_overrides(self, suite: Suite) -> FitConfig:
        return deep_merge(super().fit_overrides(suite), {"data": {"train": self.source(suite)}})
