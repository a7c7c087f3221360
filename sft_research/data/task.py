"""A task: training records plus held-out prompts whose answers a verifier scores."""

from __future__ import annotations

from abc import abstractmethod

from sft_research.data.sources import DataSource


class VerifiableTask(DataSource):
    """A data source that also provides held-out prompts and a verifier for generated answers."""

    @abstractmethod
    def eval_prompts(self, split: str = "heldout") -> list[str]: ...

    @abstractmethod
    def score(self, index: int, generation: str, split: str = "heldout") -> float:
        """The verifier's score in [0, 1] of a generated answer to held-out prompt ``index``."""
