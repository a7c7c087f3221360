"""The general-text probe: how well the model still models prose that no arm trains on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.bench.stats import differences
from sft_research.checkpoints.names import load_tokenizer
from sft_research.data.mixture import read_text
from sft_research.model.logprobs import label_logprobs

NOVEL = "reasoning_gym:in_the_year_2889.txt"


@dataclass
class GeneralTextProbe(Probe):
    """Mean log-likelihood per token of chunks of general text (plain text, no chat template), fine-tuned minus base.

    Args:
        source: a text file, or ``reasoning_gym:in_the_year_2889.txt`` (the public-domain Jules Verne story shipped in
            reasoning-gym's data folder).
        num_chunks: chunks scored, spread evenly over the text.
        chunk_tokens: tokens per chunk.
    """

    source: str = NOVEL
    num_chunks: int = 32
    chunk_tokens: int = 128

    name = "general_text"
    metrics = (Metric("general_text_loglik_change", "Δ general-text log-lik/token", higher_is_better=True),)
    value_label = "general-text log-lik/token"

    def text(self) -> str:
        """The whole text the chunks are cut from."""
        return read_text(self.source)

    def scored_spans(self, tokenizer_name: str) -> list[tuple[int, int]]:
        """The ``[start, end)`` character spans of the chunks that :meth:`measure` scores under the tokenizer of
        ``tokenizer_name``, in order, for training data cut from the same text to leave out (the replay arm's)."""
        encoded = load_tokenizer(tokenizer_name)(self.text(), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = encoded["offset_mapping"]
        return [(offsets[start][0], offsets[start + self.chunk_tokens - 1][1]) for start in self._chunk_starts(len(offsets))]

    def _chunk_starts(self, num_tokens: int) -> list[int]:
        """The first token of each chunk in a text of ``num_tokens`` tokens."""
        if num_tokens < self.num_chunks * self.chunk_tokens:
            raise ValueError(f"{self.source}: {num_tokens} tokens, too short for {self.num_chunks} chunks of {self.chunk_tokens}")
        step = (num_tokens - self.chunk_tokens) // max(1, self.num_chunks - 1)
        return [i * step for i in range(self.num_chunks)]

    @torch.no_grad()
    def measure(self, model, context: ProbeContext) -> list[float]:
        # The whole text is tokenized once and cut into chunks: it is never given to the model whole, so the
        # tokenizer's warning about sequences longer than the model's maximum does not apply.
        ids = context.tokenizer(self.text(), add_special_tokens=False, verbose=False)["input_ids"]
        chunks = torch.tensor([ids[start : start + self.chunk_tokens] for start in self._chunk_starts(len(ids))])
        values: list[float] = []
        for batch in chunks.to(model.device).split(min(context.batch_size, 8)):
            values += label_logprobs(model(input_ids=batch).logits, batch).mean(-1).tolist()
        return values

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {"general_text_loglik_change": differences(finetuned, base)}
