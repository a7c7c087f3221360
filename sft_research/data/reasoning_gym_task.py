"""Procedural tasks from ``reasoning-gym``, with their own answer verifiers, as a training source.

Training and held-out items come from one seeded generator, so a seed fixes both splits; held-out questions that
also occur in the training split are removed (and counted). A chosen fraction of training answers can be
corrupted to simulate noisy curation; every training record carries the verifier's score of its answer as
``quality``.
"""

from __future__ import annotations

import logging
import random

from sft_research.data.sources import RawRecord
from sft_research.data.task import VerifiableTask

log = logging.getLogger(__name__)


class ReasoningGymTask(VerifiableTask):
    """A reasoning-gym task.

    Args:
        task: the reasoning-gym dataset name, e.g. ``chain_sum``.
        options: the task's own generator options, e.g. ``{"min_terms": 2, "max_terms": 2}``.
        train_size: number of training records.
        eval_size: number of held-out prompts.
        seed: the generator seed; it fixes both splits and the corruption.
        noise_fraction: fraction of training answers replaced by a wrong answer.
        preference_pairs: make prompt/chosen/rejected records instead, with the right answer chosen over a wrong one
            (for DPO); ``noise_fraction`` then does not apply.
        drop_corrupted: train only on the records whose answer was not corrupted: the smaller clean set that a perfect
            filter would leave (how many were left out is logged; rows keep their numbers).
    """

    def __init__(
        self,
        task: str = "chain_sum",
        options: dict[str, int | float | str | bool] | None = None,
        train_size: int = 1000,
        eval_size: int = 100,
        seed: int = 0,
        noise_fraction: float = 0.0,
        preference_pairs: bool = False,
        drop_corrupted: bool = False,
    ):
        if not 0.0 <= noise_fraction <= 1.0:
            raise ValueError(f"noise_fraction must be in [0, 1], got {noise_fraction}")
        import reasoning_gym

        self.task, self.options, self.seed, self.noise_fraction = task, dict(options or {}), seed, noise_fraction
        self.preference_pairs, self.drop_corrupted = preference_pairs, drop_corrupted
        self.name = f"reasoning_gym:{task}"
        # Small tasks repeat questions: draw spare items so that the held-out split can skip training questions.
        spare = 4 * eval_size
        generator = reasoning_gym.create_dataset(task, size=train_size + eval_size + spare, seed=seed, **self.options)
        self._generator = generator
        entries = list(generator)
        self.train_entries = entries[:train_size]
        seen = {entry["question"] for entry in self.train_entries}
        unseen = [entry for entry in entries[train_size:] if entry["question"] not in seen]
        if len(unseen) < eval_size:
            raise ValueError(
                f"{self.name}: only {len(unseen)} of {eval_size + spare} candidate held-out items are not training "
                "questions; the task is too small for these sizes (widen its options or lower train_size)"
            )
        self.heldout_entries = unseen[:eval_size]
        skipped = entries[train_size:].index(self.heldout_entries[-1]) + 1 - eval_size
        if skipped:
            log.info("%s: skipped %d candidate held-out items that are training questions", self.name, skipped)
        self.train_answers = self._corrupt([entry["answer"] for entry in self.train_entries])

    def _corrupt(self, answers: list[str]) -> list[str]:
        rng = random.Random(self.seed + 1)
        chosen = rng.sample(range(len(answers)), round(self.noise_fraction * len(answers)))
        corrupted = list(answers)
        for index in chosen:
            corrupted[index] = self._wrong_answer(index, answers, rng)
        return corrupted

    def _wrong_answer(self, index: int, answers: list[str], rng: random.Random) -> str:
        entry = self.train_entries[index]
        for _ in range(100):
            try:
                candidate = str(int(answers[index]) + rng.choice([-1, 1]) * rng.randint(1, 10))
            except ValueError:
                candidate = rng.choice(answers)
            if self._generator.score_answer(candidate, entry) < 1.0:
                return candidate
        raise ValueError(f"{self.name}: could not find a wrong answer for training item {index}")

    def records(self) -> list[RawRecord]:
        if self.preference_pairs:
            rng = random.Random(self.seed + 2)
            answers = [entry["answer"] for entry in self.train_entries]
            return [
                RawRecord(
                    self.name,
                    row,
                    {"prompt": entry["question"], "chosen": entry["answer"], "rejected": self._wrong_answer(row - 1, answers, rng)},
                )
                for row, entry in enumerate(self.train_entries, start=1)
            ]
        records = [
            RawRecord(
                self.name,
                row,
                {
                    "prompt": entry["question"],
                    "completion": answer,
                    "quality": float(self._generator.score_answer(answer, entry)),
                },
            )
            for row, (entry, answer) in enumerate(zip(self.train_entries, self.train_answers), start=1)
            if not (self.drop_corrupted and answer != entry["answer"])
        ]
        if self.drop_corrupted:
            log.info(
                "%s: drop_corrupted left out %d corrupted of %d training records",
                self.name,
                len(self.train_entries) - len(records),
                len(self.train_entries),
            )
        return records

    def eval_prompts(self, split: str = "heldout") -> list[str]:
        return [entry["question"] for entry in self._entries(split)]

    def score(self, index: int, generation: str, split: str = "heldout") -> float:
        """The verifier's score of the generation's first line, or of that line's last word if it scores higher, so
        that a chatty "The answer is 7." counts as well as a bare "7"."""
        line = generation.strip().split("\n", 1)[0].strip()
        last_word = line.split()[-1].rstrip(".!,;:") if line else ""
        entry = self._entries(split)[index]
        return max(self._verify(answer, entry) for answer in (line, last_word))

    def _verify(self, answer: str, entry: dict) -> float:
        try:
            return float(self._generator.score_answer(answer, entry))
        except Exception:  # some verifiers raise on malformed answers (prime_factorization on "14 = 2"): wrong
            return 0.0

    def _entries(self, split: str) -> list[dict]:
        if split not in ("heldout", "train"):
            raise ValueError(f"split must be 'heldout' or 'train', got {split!r}")
        return self.heldout_entries if split == "heldout" else self.train_entries
