import pytest
import torch

from sft_research.data.collate import collate_examples
from sft_research.data.records import parse_record
from sft_research.data.sources import RawRecord
from sft_research.data.tokenize import ChatTokenizer
from sft_research.errors import DataError


def tokenize(tokenizer, fields, **kwargs):
    chat_tokenizer = ChatTokenizer(tokenizer, **kwargs)
    raw = RawRecord("data.jsonl", 3, fields)
    return chat_tokenizer, chat_tokenizer(raw, parse_record(raw))


def decode_masked(tokenizer, sequence, masked=True):
    return tokenizer.decode([t for t, m in zip(sequence.input_ids, sequence.completion_mask) if m == masked])


def test_chat_mask_covers_completion_and_end_of_turn_only(tiny_tokenizer):
    _, example = tokenize(tiny_tokenizer, {"prompt": "12 + 7 =", "completion": "19"})
    (sequence,) = example.sequences
    assert decode_masked(tiny_tokenizer, sequence) == "19<|im_end|>\n"
    assert decode_masked(tiny_tokenizer, sequence, masked=False) == "<|im_start|>user\n12 + 7 =<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.decode(sequence.input_ids) == tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "12 + 7 ="}, {"role": "assistant", "content": "19"}], tokenize=False
    )
    assert example.example_id == 2 and example.quality == 1.0


def test_multi_turn_loss_on_assistant_turns_only(tiny_tokenizer):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "1 + 1 ="},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "and 2 + 2 ="},
        {"role": "assistant", "content": "4"},
    ]
    _, example = tokenize(tiny_tokenizer, {"messages": messages})
    (sequence,) = example.sequences
    assert decode_masked(tiny_tokenizer, sequence) == "2<|im_end|>\n4<|im_end|>\n"
    assert tiny_tokenizer.decode(sequence.input_ids) == tiny_tokenizer.apply_chat_template(messages, tokenize=False)


def test_plain_format_appends_eos_to_the_completion(tiny_tokenizer):
    _, example = tokenize(tiny_tokenizer, {"prompt": "12 + 7 =", "completion": " 19"}, prompt_format="plain")
    (sequence,) = example.sequences
    assert decode_masked(tiny_tokenizer, sequence) == " 19<|im_end|>"
    assert sequence.input_ids[-1] == tiny_tokenizer.eos_token_id and sequence.completion_mask[-1]


def test_preference_records_give_chosen_then_rejected(tiny_tokenizer):
    _, example = tokenize(tiny_tokenizer, {"prompt": "1 + 1 =", "chosen": "2", "rejected": "3"})
    chosen, rejected = example.sequences
    assert decode_masked(tiny_tokenizer, chosen) == "2<|im_end|>\n"
    assert decode_masked(tiny_tokenizer, rejected) == "3<|im_end|>\n"


def test_collate_pads_and_shifts_the_mask_to_label_positions(tiny_tokenizer):
    chat_tokenizer = ChatTokenizer(tiny_tokenizer)
    raws = [
        RawRecord("d", 1, {"prompt": "1 + 1 =", "completion": "2"}),
        RawRecord("d", 2, {"prompt": "what is the capital of France?", "completion": "Paris, of course"}),
    ]
    examples = [chat_tokenizer(raw, parse_record(raw)) for raw in raws]
    batch = collate_examples(examples, tiny_tokenizer.pad_token_id)
    lengths = [len(e.sequences[0].input_ids) for e in examples]
    assert batch["input_ids"].shape == (2, 1, max(lengths))
    assert batch["loss_mask"].shape == (2, 1, max(lengths) - 1)
    for b, example in enumerate(examples):
        n = lengths[b]
        completion = torch.tensor(example.sequences[0].completion_mask)
        assert torch.equal(batch["loss_mask"][b, 0, : n - 1], completion[1:])
        assert not batch["loss_mask"][b, 0, n - 1 :].any()  # padding is never a target
        assert batch["attention_mask"][b, 0].sum() == n
        assert (batch["input_ids"][b, 0, n:] == tiny_tokenizer.pad_token_id).all()
    assert torch.equal(batch["example_id"], torch.tensor([0, 1]))


LONG_PROMPT = {"prompt": "the quick brown fox " * 20, "completion": "19"}
LONG_COMPLETION = {"prompt": "1 + 1 =", "completion": "the quick brown fox " * 20}


def test_over_long_prompt_under_each_policy(tiny_tokenizer):
    with pytest.raises(DataError, match=r"data.jsonl, row 3, field 'prompt': is \d+ tokens long, over max_length=32"):
        tokenize(tiny_tokenizer, LONG_PROMPT, max_length=32, truncation="error")
    with pytest.raises(DataError, match=r"row 3, field 'prompt': the prompt alone .* would leave no completion"):
        tokenize(tiny_tokenizer, LONG_PROMPT, max_length=32, truncation="truncate_completion")
    chat_tokenizer, example = tokenize(tiny_tokenizer, LONG_PROMPT, max_length=32, truncation="truncate_prompt")
    (sequence,) = example.sequences
    assert len(sequence.input_ids) == 32 and decode_masked(tiny_tokenizer, sequence) == "19<|im_end|>\n"
    assert chat_tokenizer.report.truncated == ["row 3"]
    chat_tokenizer, example = tokenize(tiny_tokenizer, LONG_PROMPT, max_length=32, truncation="drop")
    assert example is None and chat_tokenizer.report.dropped == ["row 3"]


def test_over_long_completion_under_each_policy(tiny_tokenizer):
    """The framework's rules (truncate_prompt: only the overflow, so a prompt within its budget keeps all of it and
    the completion keeps the rest of max_length); the DPO trainers' rule (spin, trl_0_9) is in the next test."""
    with pytest.raises(DataError, match=r"row 3, field 'completion': is \d+ tokens long"):
        tokenize(tiny_tokenizer, LONG_COMPLETION, max_length=32, truncation="error")
    chat_tokenizer, example = tokenize(tiny_tokenizer, LONG_COMPLETION, max_length=32, truncation="truncate_completion")
    (sequence,) = example.sequences
    assert len(sequence.input_ids) == 32 and any(sequence.completion_mask)
    assert chat_tokenizer.report.truncated == ["row 3"] and "1 truncated (row 3)" in chat_tokenizer.report.summary()
    chat_tokenizer, example = tokenize(tiny_tokenizer, LONG_COMPLETION, max_length=32, truncation="truncate_prompt", max_prompt_length=24)
    (sequence,) = example.sequences
    full = tokenize(tiny_tokenizer, LONG_COMPLETION, max_length=4096)[1].sequences[0]
    prompt_length = full.completion_mask.index(True)
    assert prompt_length <= 24, "the prompt fits its budget, so only the completion is cut"
    assert sequence.input_ids == full.input_ids[:32] and sequence.completion_mask == full.completion_mask[:32]
    assert (chat_tokenizer.report.prompt_cut, chat_tokenizer.report.completion_cut) == ([], ["row 3"])


def test_the_official_rule_cuts_completions_to_what_the_prompt_budget_leaves(tiny_tokenizer):
    """Where the two rules disagree. The DPO trainers' rule (``spin`` here, the SPIN collator's; ``trl_0_9`` cuts
    alike, tests/test_trainer_truncation.py) cuts a too-long example's completions to max_length - max_prompt_length
    tokens even when its prompt is shorter than its budget, and its prompt to max_prompt_length even when less would
    do; truncate_prompt cuts only the overflow. The trainer appends an EOS to each answer and counts it."""
    full = tokenize(tiny_tokenizer, LONG_COMPLETION, max_length=4096)[1].sequences[0]
    prompt_length = full.completion_mask.index(True)
    assert prompt_length < 24
    framework = tokenize(tiny_tokenizer, LONG_COMPLETION, max_length=32, truncation="truncate_prompt", max_prompt_length=24)[1].sequences[0]
    official = tokenize(tiny_tokenizer, LONG_COMPLETION, max_length=32, truncation="spin", max_prompt_length=24)[1].sequences[0]
    assert sum(framework.completion_mask) == 32 - prompt_length
    assert len(official.input_ids) == prompt_length + 8 and official.input_ids == full.input_ids[: prompt_length + 8]
    fields = {"prompt": "the quick brown fox " * 6, "completion": "jumps over the lazy dog"}
    full = tokenize(tiny_tokenizer, fields, max_length=4096)[1].sequences[0]
    prompt_length, completion = full.completion_mask.index(True), sum(full.completion_mask)
    max_length = len(full.input_ids) - 3  # 3 tokens over: truncate_prompt takes 3 from the prompt
    budget = prompt_length - 10
    framework = tokenize(tiny_tokenizer, fields, max_length=max_length, truncation="truncate_prompt", max_prompt_length=budget)[
        1
    ].sequences[0]
    official = tokenize(tiny_tokenizer, fields, max_length=max_length, truncation="spin", max_prompt_length=budget)[1].sequences[0]
    assert (framework.completion_mask.index(True), sum(framework.completion_mask)) == (prompt_length - 3, completion)
    assert (official.completion_mask.index(True), sum(official.completion_mask)) == (budget, completion + 1)
    assert official.input_ids[-completion - 1 :] == [*full.input_ids[-completion:], tiny_tokenizer.eos_token_id]
    assert official.input_ids[:budget] == full.input_ids[prompt_length - budget : prompt_length], "the prompt's end, no BOS kept"


def test_truncate_prompt_cuts_the_prompt_to_its_budget_then_the_completion(tiny_tokenizer):
    fields = {"prompt": "the quick brown fox " * 20, "completion": "jumps over the lazy dog " * 10}
    full = tokenize(tiny_tokenizer, fields, max_length=4096)[1].sequences[0]
    prompt_length = full.completion_mask.index(True)
    chat_tokenizer, example = tokenize(tiny_tokenizer, fields, max_length=48, truncation="truncate_prompt", max_prompt_length=16)
    (sequence,) = example.sequences
    assert len(sequence.input_ids) == 48
    assert sequence.completion_mask.index(True) == 16, "the prompt keeps exactly its budget"
    # The leading BOS stays (a model expects it first); the tokens after it are cut.
    assert full.input_ids[0] == tiny_tokenizer.bos_token_id
    cut = prompt_length - 16
    assert sequence.input_ids == full.input_ids[:1] + full.input_ids[cut + 1 : cut + 48]
    assert (chat_tokenizer.report.prompt_cut, chat_tokenizer.report.completion_cut) == (["row 3"], ["row 3"])
    assert "prompt cut in 1, completion cut in 1" in chat_tokenizer.report.summary()


def test_preference_pairs_share_one_prompt_cut(tiny_tokenizer):
    fields = {"prompt": "the quick brown fox " * 20, "chosen": "yes", "rejected": "no, the answer is " + "very long " * 6}
    full = tokenize(tiny_tokenizer, fields, max_length=4096)[1].sequences
    chat_tokenizer, example = tokenize(tiny_tokenizer, fields, max_length=48, truncation="truncate_prompt", max_prompt_length=24)
    chosen, rejected = example.sequences
    assert len(rejected.input_ids) <= 48 and len(chosen.input_ids) < len(rejected.input_ids)
    prompt = [ids[: s.completion_mask.index(True)] for ids, s in ((chosen.input_ids, chosen), (rejected.input_ids, rejected))]
    assert prompt[0] == prompt[1], "chosen and rejected see the same prompt"
    cut = full[1].completion_mask.index(True) - len(prompt[1])
    expected = full[0].input_ids[:1] + full[0].input_ids[cut + 1 :]  # the leading BOS stays
    assert chosen.input_ids == expected, "the short answer loses the same prompt tokens and nothing else"


def test_trl_conversational_preference_format(tiny_tokenizer):
    chosen = [{"role": "user", "content": "1 + 1 ="}, {"role": "assistant", "content": "2"}]
    rejected = [{"role": "user", "content": "1 + 1 ="}, {"role": "assistant", "content": "3"}]
    _, example = tokenize(tiny_tokenizer, {"prompt": None, "chosen": chosen, "rejected": rejected})
    _, standard = tokenize(tiny_tokenizer, {"prompt": "1 + 1 =", "chosen": "2", "rejected": "3"})
    assert [s.input_ids for s in example.sequences] == [s.input_ids for s in standard.sequences]
    with pytest.raises(DataError, match=r"row 3, field 'rejected': must share the conversation"):
        tokenize(tiny_tokenizer, {"chosen": chosen, "rejected": [{"role": "user", "content": "other"}, rejected[1]]})


def test_column_renames(tiny_model_dir, tmp_path):
    from sft_research.data import FileDataset
    from tests.conftest import write_jsonl

    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "1 + 1 =", "answer": "2"}])
    records = FileDataset(str(path), columns={"question": "prompt", "answer": "completion"}).records()
    assert records[0].fields == {"prompt": "1 + 1 =", "completion": "2"}
    with pytest.raises(DataError, match=r"has no column\(s\) \['query'\] to rename"):
        FileDataset(str(path), columns={"query": "prompt"}).records()


def sentencepiece_tokenizer():
    """A Llama-2-style tokenizer built offline: Unigram model, Metaspace word-start marker at every call's start."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    corpus = ["[INST] what is the sum of 12 and 7 [/INST] the answer is 19", "paris is the capital of france"] * 50
    raw.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    return tokenizer


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_sentencepiece_tokenization_is_the_joint_one(prompt_format):
    tokenizer = sentencepiece_tokenizer()
    prompt, answer = "what is the sum of 12 and 7", "the answer is 19"
    raw = RawRecord("d.jsonl", 1, {"prompt": prompt, "completion": answer})
    (sequence,) = ChatTokenizer(tokenizer, prompt_format=prompt_format)(raw, parse_record(raw)).sequences
    if prompt_format == "chat":
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        joint = tokenizer(text, add_special_tokens=False)["input_ids"]
        before = text[: text.index(answer)]
    else:
        joint = tokenizer(prompt + answer)["input_ids"] + [tokenizer.eos_token_id]
        before, text = prompt, prompt + answer
    # Tokenizing the two parts separately adds a word-start marker at the completion's start: not the joint ids.
    separate = (
        tokenizer(before, add_special_tokens=False)["input_ids"] + tokenizer(text[len(before) :], add_special_tokens=False)["input_ids"]
    )
    assert separate != tokenizer(text, add_special_tokens=False)["input_ids"]
    assert sequence.input_ids == joint
    completion = tokenizer.decode([t for t, m in zip(sequence.input_ids, sequence.completion_mask) if m])
    assert completion.replace(" ", "") == "theansweris19</s>"
