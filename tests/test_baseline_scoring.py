"""PoFT's baselines score what the official scorer (``generate_preference_scores.py``, alignment-handbook-PoFT
@40d33d7) scores: each turn's content encoded as it is, whitespace included, and no system turn, also on a row the
target's truncation cut (whose target rendering has the empty system turn ``auto_insert_empty_system_msg`` adds)."""

from pathlib import Path

import yaml

from sft_research.data.records import Message, parse_record
from sft_research.data.sources import RawRecord
from sft_research.data.tokenize import ChatTokenizer
from sft_research.frozen.inputs import baseline_examples
from sft_research.rehearsal.standins import MODELS, stand_in_tokenizer

REPO = Path(__file__).parents[1]
ANSWER = " Paris is the capital.\n"


def scored(tokenizer, sequence) -> str:
    return tokenizer.decode([t for t, m in zip(sequence.input_ids, sequence.completion_mask) if m])


def test_the_scored_span_is_the_content_as_it_is(tiny_tokenizer):
    chat_tokenizer = ChatTokenizer(tiny_tokenizer, scaffolding_in_completion=False)
    sequence = chat_tokenizer.render((Message("user", "Which city is the capital of France?"), Message("assistant", ANSWER)))
    assert scored(tiny_tokenizer, sequence) == ANSWER


def test_the_llama3_baseline_template_is_the_official_hand_built_layout_untrimmed():
    """The official scorer builds Llama's input as BOS, then per turn its header, ``encode(content)`` and
    ``<|eot_id|>``: the shipped template renders exactly that text, the content not trimmed."""
    tokenizer = stand_in_tokenizer(yaml.safe_load((MODELS / "meta-llama--Llama-3.1-8B-Instruct.yaml").read_text())["tokenizer"])
    tokenizer.chat_template = (REPO / "experiments/templates/llama3.jinja").read_text()
    question = "  Which city is the capital of France? "
    chat_tokenizer = ChatTokenizer(tokenizer, scaffolding_in_completion=False)
    text, _ = chat_tokenizer.rendered_text((Message("user", question), Message("assistant", ANSWER)))
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    assert text == f"{tokenizer.bos_token}{header.format('user')}{question}<|eot_id|>{header.format('assistant')}{ANSWER}<|eot_id|>"
    assert scored(tokenizer, chat_tokenizer.render((Message("user", question), Message("assistant", ANSWER)))) == ANSWER


def test_a_baseline_scores_a_truncated_row_without_the_targets_empty_system_turn(tiny_tokenizer, tiny_model_dir):
    target = ChatTokenizer(tiny_tokenizer, max_length=64, truncation="truncate_completion", auto_insert_empty_system_msg=True)
    rows = [{"prompt": "1 + 1 =", "completion": "2"}, {"prompt": "1 + 1 =", "completion": "the quick brown fox " * 20}]
    examples = [target(raw, parse_record(raw)) for raw in (RawRecord("d.jsonl", i + 1, row) for i, row in enumerate(rows))]
    whole, cut = examples
    assert whole.sequences[0].kept_characters is None and cut.sequences[0].kept_characters is not None
    assert tiny_tokenizer.decode(cut.sequences[0].input_ids).startswith("<|im_start|>system\n<|im_end|>")
    kept = target.kept_messages(cut.record.messages, cut.sequences[0].kept_characters)
    assert [m.role for m in kept] == ["user", "assistant"] and "the quick brown fox ".startswith(kept[1].content[:20])
    for baseline in baseline_examples(str(tiny_model_dir), examples, target):
        assert tiny_tokenizer.decode(baseline.sequences[0].input_ids).startswith("<|im_start|>user\n1 + 1 =")
