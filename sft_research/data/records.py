"""Checks one raw record and turns it into a typed record: the formats TRL users already have.

* prompt/completion strings (optionally with a ``quality`` score >= 0);
* ``messages`` conversations (roles system/user/assistant; the loss covers assistant turns);
* prompt/chosen/rejected preference records;
* plain ``text`` records (TRL's ``dataset_text_field``), trained on as language modelling.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from sft_research.data.sources import RawRecord
from sft_research.errors import DataError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One turn; ``trained`` false marks an assistant turn that is context, not target (one inside the prompt of a
    conversational prompt/completion record)."""

    role: str
    content: str
    trained: bool = True


@dataclass(frozen=True)
class Conversation:
    """A prompt/completion record is the conversation [user: prompt, assistant: completion]."""

    messages: tuple[Message, ...]
    quality: float = 1.0


@dataclass(frozen=True)
class Preference:
    """Two answers to one prompt; ``prompt`` holds the conversation before the answer.

    ``rejected_finished`` false marks a rejected answer that was cut (a sample stopped at its token limit): it is
    rendered without an end of turn, so that it is never trained on as a complete answer.
    """

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    quality: float = 1.0
    rejected_finished: bool = True


@dataclass(frozen=True)
class Text:
    """Plain text: every token is trained on (language modelling), with no chat template."""

    text: str
    quality: float = 1.0


Record = Conversation | Preference | Text


def record_kind(record: Record) -> str:
    return {
        Conversation: "SFT records (prompt/completion or messages)",
        Preference: "preference records (prompt/chosen/rejected)",
        Text: "plain text records",
    }[type(record)]


RecordKind = Literal["sft", "preference"]
SFT_FIELDS = ("messages", "completion")
PREFERENCE_FIELDS = ("chosen", "rejected")


def parse_record(record: RawRecord, kind: RecordKind | None = None) -> Record:
    """The typed record a raw row holds. A row that holds both an SFT record and a preference pair (UltraFeedback
    binarized: ``messages`` beside ``prompt``, ``chosen`` and ``rejected``) is read as ``kind``, the kind the objective
    trains on; without one it is an error that names the columns."""
    fields = record.fields
    quality = _quality(record)
    if _present(fields, "text") and not any(_present(fields, name) for name in ("messages", "prompt", *SFT_FIELDS, *PREFERENCE_FIELDS)):
        return Text(_text(record, "text"), quality)
    sft = [name for name in SFT_FIELDS if _present(fields, name)]
    pair = [name for name in PREFERENCE_FIELDS if _present(fields, name)]
    if sft and pair and kind is None:
        raise DataError(
            record.source,
            f"holds both an SFT record ({', '.join(sft)}) and a preference pair ({', '.join(pair)}), and nothing says "
            f"which to read (its columns: {sorted(fields)}); the objective's kind decides on the command line, or "
            "rename or drop columns with FileDataset's columns",
            row=record.row,
        )
    if pair and (kind == "preference" or not sft):
        return _preference(record, quality)
    if len(sft) > 1:
        raise DataError(record.source, f"holds both 'messages' and 'completion'; keep one (its columns: {sorted(fields)})", row=record.row)
    if _present(fields, "messages"):
        return Conversation(_messages(record), quality)
    if isinstance(fields.get("prompt"), list) or isinstance(fields.get("completion"), list):
        return _conversational_completion(record, quality)
    if _present(fields, "prompt") or _present(fields, "completion"):
        prompt = _text(record, "prompt", allow_empty=True)
        completion = _text(record, "completion")
        return Conversation((Message("user", prompt), Message("assistant", completion)), quality)
    raise DataError(
        record.source,
        "no known fields: expected 'messages', or 'prompt' and 'completion', or 'prompt', 'chosen' and 'rejected', "
        "or 'text'; "
        f"got {sorted(fields)}",
        row=record.row,
    )


def _conversational_completion(record: RawRecord, quality: float) -> Conversation:
    """TRL's conversational prompt/completion: message lists (or one of them a string); the loss is on the completion's
    assistant turns, and assistant turns in the prompt are context."""
    fields = record.fields
    if isinstance(fields.get("prompt"), list):
        prompt = tuple(dataclasses.replace(m, trained=False) for m in _messages(record, "prompt", need_assistant=False))
    else:
        prompt = (Message("user", _text(record, "prompt", allow_empty=True), trained=False),)
    if isinstance(fields.get("completion"), list):
        completion = _messages(record, "completion")
    else:
        completion = (Message("assistant", _text(record, "completion")),)
    return Conversation((*prompt, *completion), quality)


def _preference(record: RawRecord, quality: float) -> Preference:
    """Standard (strings) or TRL's conversational form (message lists ending in the assistant's answer)."""
    finished = record.fields.get("rejected_finished", True)
    if not isinstance(finished, bool):
        raise _fail(record, "rejected_finished", f"must be true or false, got {finished!r}")
    return dataclasses.replace(_answers(record, quality), rejected_finished=finished)


def _answers(record: RawRecord, quality: float) -> Preference:
    if isinstance(record.fields.get("chosen"), list):
        chosen = _messages(record, "chosen")
        rejected = _messages(record, "rejected")
        for name, messages in (("chosen", chosen), ("rejected", rejected)):
            if messages[-1].role != "assistant":
                raise _fail(record, name, "must end with the assistant's answer")
        if isinstance(record.fields.get("prompt"), list):
            prompt = _messages(record, "prompt", need_assistant=False)
        elif chosen[:-1] != rejected[:-1]:
            raise _fail(record, "rejected", "must share the conversation before the answer with 'chosen'")
        else:
            prompt = chosen[:-1]
        return Preference(prompt, chosen[-1].content, rejected[-1].content, quality)
    prompt, chosen, rejected = (_text(record, name, allow_empty=name == "prompt") for name in ("prompt", "chosen", "rejected"))
    return Preference((Message("user", prompt),), chosen, rejected, quality)


def _present(fields: dict, name: str) -> bool:
    return fields.get(name) is not None


def _fail(record: RawRecord, field: str, message: str) -> DataError:
    return DataError(record.source, message, row=record.row, field=field)


def _text(record: RawRecord, field: str, allow_empty: bool = False) -> str:
    value = record.fields.get(field)
    if value is None:
        raise _fail(record, field, "is missing")
    if not isinstance(value, str):
        raise _fail(record, field, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _fail(record, field, "is empty: there is nothing to train on")
    return value


def _quality(record: RawRecord) -> float:
    if "quality" not in record.fields:
        return 1.0
    value = record.fields["quality"]
    if value is None:
        raise _fail(record, "quality", "is missing (other rows of this source have a quality score)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(record, "quality", f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise _fail(record, "quality", f"must be a finite number >= 0, got {value}")
    return float(value)


def _messages(record: RawRecord, field: str = "messages", need_assistant: bool = True) -> tuple[Message, ...]:
    value = record.fields.get(field)
    if not isinstance(value, list) or not value:
        raise _fail(record, field, "must be a non-empty list of {'role', 'content'} objects")
    messages = []
    for turn, message in enumerate(value):
        where = f"{field}[{turn}]"
        if not isinstance(message, dict):
            raise _fail(record, where, f"must be an object with 'role' and 'content', got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _fail(record, f"{where}.role", f"unknown chat role {role!r}; expected one of {list(ROLES)}")
        if not isinstance(content, str):
            raise _fail(record, f"{where}.content", f"must be a string, got {type(content).__name__}")
        if role == "assistant" and not content.strip():
            raise _fail(record, f"{where}.content", "is an empty assistant turn: there is nothing to train on")
        messages.append(Message(role, content))
    if need_assistant and not any(message.role == "assistant" for message in messages):
        raise _fail(record, field, "has no assistant turn: there is nothing to train on")
    return tuple(messages)
