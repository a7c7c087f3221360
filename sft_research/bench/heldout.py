"""A task's held-out set: prompts with their reference answers, in the row format of training data.

Each row holds a ``prompt`` and its reference answer as ``completion`` (the same rows as prompt/completion training
data; ``FileDataset``'s ``columns`` renames others), and for multiple choice its options as ``choices``. Rows are
checked when the set is read, before any model loads: each bad one is one line naming the file, row and field.
"""

from __future__ import annotations

from sft_research.data.sources import RawRecord
from sft_research.errors import DataError


class HeldOutSet:
    """The held-out rows of a task, in order (none where an lm-eval scorer brings its own items); ``eval_prompts()``
    are what probes that read the task's prompts (the KL probe) see.

    Args:
        name: the set's name in messages (its file).
        records: its rows.
    """

    PROMPT, REFERENCE, CHOICES = "prompt", "completion", "choices"

    def __init__(self, name: str, records: list[RawRecord]):
        self.name, self.records = name, records
        self._prompts = [self.text(record, self.PROMPT) for record in records]

    @classmethod
    def of_reasoning_gym(cls, task) -> HeldOutSet:
        """A reasoning-gym task's held-out questions, each with the generator's answer as its reference."""
        rows = [{cls.PROMPT: entry["question"], cls.REFERENCE: entry["answer"]} for entry in task.heldout_entries]
        return cls(f"{task.name} (held out)", [RawRecord(f"{task.name} (held out)", row, fields) for row, fields in enumerate(rows, 1)])

    def eval_prompts(self) -> list[str]:
        return list(self._prompts)

    @staticmethod
    def text(record: RawRecord, field: str) -> str:
        """A field that must hold text."""
        value = record.fields.get(field)
        if value is None:
            hold = f"held-out rows hold '{HeldOutSet.PROMPT}' and '{HeldOutSet.REFERENCE}'"
            raise DataError(record.source, f"is missing ({hold})", record.row, field)
        if not isinstance(value, str):
            raise DataError(record.source, f"must be a string, got {type(value).__name__}", record.row, field)
        if field == HeldOutSet.PROMPT and not value.strip():
            raise DataError(record.source, "is empty: there is nothing to answer", record.row, field)
        return value
