"""Rows that parse but teach less than they seem to, counted in the data report rather than passed over silently:
conversations that go on after their last assistant turn (what follows it is not trained on), and preference pairs
whose chosen and rejected answers are the same (DPO's loss is log 2 there, its gradient zero). Data made only of such
pairs trains nothing and stops the run."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn

from sft_research.data.records import Conversation, Preference, Record
from sft_research.data.sources import RawRecord
from sft_research.errors import DataError


def trailing_turns(records: list[RawRecord], parsed: list[Record]) -> list[int]:
    """The rows whose conversation has turns after its last assistant turn."""
    return [raw.row for raw, record in zip(records, parsed) if isinstance(record, Conversation) and record.messages[-1].role != "assistant"]


def identical_pairs(records: list[RawRecord], parsed: list[Record]) -> list[int]:
    """The rows whose preference pair has the same finished answer as chosen and as rejected."""
    return [
        raw.row
        for raw, record in zip(records, parsed)
        if isinstance(record, Preference) and record.chosen == record.rejected and record.rejected_finished
    ]


def rows_text(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def report_untrained(name: str, records: list[RawRecord], parsed: list[Record]) -> None:
    """Warns, with their count and rows, of the rows above; stops when every preference pair is identical."""
    trailing = trailing_turns(records, parsed)
    if trailing:
        rank_zero_warn(
            f"{name}, rows {rows_text(trailing)}, field 'messages': {len(trailing)} of {len(records)} conversations go on after "
            "their last assistant turn; those turns are not trained on (end each conversation with the answer to learn)"
        )
    identical = identical_pairs(records, parsed)
    if identical and len(identical) == len(records):
        raise DataError(
            name,
            f"every preference pair has the same chosen and rejected answer (rows {rows_text(identical)}): DPO's loss is log 2 "
            "on such a pair and its gradient zero, so nothing would be trained",
            field="rejected",
        )
    if identical:
        rank_zero_warn(
            f"{name}, rows {rows_text(identical)}, field 'rejected': {len(identical)} of {len(records)} preference pairs have the same "
            "chosen and rejected answer; they add log 2 to DPO's loss and nothing to its gradient"
        )
