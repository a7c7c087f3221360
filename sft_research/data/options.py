"""The data module's two groups of options: how records are rendered into tokens (``data.template``) and how long
the sequences may be (``data.lengths``)."""

from __future__ import annotations

from dataclasses import dataclass

from sft_research.data.tokenize import PromptFormat, Truncation


@dataclass
class TemplateConfig:
    """How records are rendered into tokens, and which of them the loss covers.

    Args:
        prompt_format: ``chat`` (the tokenizer's chat template) or ``plain`` (prompt + completion + EOS).
        chat_template: a Jinja chat template, or the path of a file holding one, for tokenizers that have none (base
            models such as Mistral-7B-v0.1) or to replace theirs; it is saved with the fine-tuned model.
        add_special_tokens: tokenize rendered conversations with the tokenizer's special tokens: BOS first for Llama
            and Mistral tokenizers (the alignment-handbook's SFT, TRL's DPO), whatever the chat template writes.
        auto_insert_empty_system_msg: give conversations without a system turn an empty one first when the chat
            template knows a system role (the alignment-handbook's option of this name).
        completion_only_loss: the loss covers completions and assistant turns (TRL's ``completion_only_loss`` and
            ``assistant_only_loss``); false: every token of the rendered conversation (the alignment-handbook's SFT).
    """

    prompt_format: PromptFormat = "chat"
    chat_template: str | None = None
    add_special_tokens: bool = False
    auto_insert_empty_system_msg: bool = False
    completion_only_loss: bool = True


@dataclass
class LengthConfig:
    """How long the training sequences may be, and what happens to longer ones.

    Args:
        max_length: longest training sequence, in tokens.
        truncation: what to do with longer examples (see :class:`~sft_research.data.tokenize.ChatTokenizer`).
        max_prompt_length: under ``truncation`` ``truncate_prompt``, ``trl_0_9`` or ``spin``, the prompt tokens kept
            at most when an example is too long (None: half of ``max_length``).
        pack_into_blocks: join the tokenized conversations, each followed by an EOS, and cut them into blocks of
            ``max_length`` tokens, which the batch then counts, as TRL 0.9.6's ``SFTTrainer(packing=True)`` (the
            alignment-handbook's SFT; :mod:`sft_research.data.blocks`): a conversation may run on into the next block
            and none is truncated. Attention stays inside each conversation (needs ``model.execution.packing``). The
            last batch of an epoch is filled with the first blocks again, as accelerate fills the handbook's. For SFT
            records and objectives that read no frozen model and no quality score.
    """

    max_length: int = 1024
    truncation: Truncation = "error"
    max_prompt_length: int | None = None
    pack_into_blocks: bool = False
