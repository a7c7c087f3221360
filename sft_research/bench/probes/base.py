"""The interface of a forgetting probe: what it is called, what it measures on a model, and how a fine-tuned model's
measurement compares with the base model's, item by item.

A new probe is one subclass (in its own file, importable by class path) listed under a suite's ``probes``; the
evaluation, ``results.jsonl``, the summary, the paired comparison and the plots pick up its metrics from
:attr:`Probe.metrics`. See :mod:`sft_research.bench.probes.general_text` for a short example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from sft_research.data.task import VerifiableTask

if TYPE_CHECKING:
    from sft_research.bench.heldout import HeldOutSet
from sft_research.data.tokenize import ChatTokenizer


@dataclass(frozen=True)
class Metric:
    """One number a probe reports per arm: its key in results rows, its label in tables and plots, and its direction
    (forgetting shows as a fall in log-likelihood and accuracy, and as a rise in flips and KL)."""

    name: str
    label: str
    higher_is_better: bool


@dataclass
class ProbeContext:
    """What a probe may use besides the model it measures.

    Args:
        base: the suite's base model (the model every arm starts from), already on the device.
        tokenizer: the measured model's tokenizer.
        chat_tokenizer: its chat rendering (prompts as the model was trained to see them).
        task: the suite's task: its held-out prompts (``eval_prompts()``), a reasoning-gym task or a
            :class:`~sft_research.bench.heldout.HeldOutSet`.
        batch_size: prompts per generation batch.
    """

    base: object
    tokenizer: object
    chat_tokenizer: ChatTokenizer
    task: VerifiableTask | HeldOutSet
    batch_size: int


class Probe(ABC):
    """A measurement of what a model knows, taken on the base model once and on every fine-tuned model.

    ``name`` keys the probe's per-item values in ``results.jsonl`` and ``base.json``; ``metrics`` are what
    :meth:`compare` returns, one value per item each, whose means the report shows. ``value_label``, where set, labels
    the mean of the measurement itself (an accuracy, a log-likelihood), which the summary shows for the base model and
    every arm beside the metrics that compare them.
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]
    value_label: ClassVar[str | None] = None

    def check(self, task) -> None:  # noqa: B027 (a hook: most probes have nothing to check)
        """Before any model loads: the probe's settings, and what it reads (``task``: the suite's held-out task, as
        :class:`ProbeContext`'s ``task``), each problem one line (a :class:`~sft_research.errors.ConfigError`)."""

    @abstractmethod
    def measure(self, model, context: ProbeContext) -> list[float]:
        """One value per item on ``model``, the items in the same order for every model."""

    @abstractmethod
    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        """Per metric of :attr:`metrics`, one value per item: the fine-tuned model's measurement against the base
        model's on the same items (e.g. the difference)."""
