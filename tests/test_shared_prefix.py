"""Prompts' shared first tokens run once: the split, and generation and teacher-forced logits equal to those of the
full prompts."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import sft_research.model.generation as generation
from sft_research.data.collate import prompt_batches
from sft_research.data.tokenize import ChatTokenizer
from sft_research.model.shared_prefix import MIN_SHARED, continuation_logits, split_shared_prefix

PAD = 0


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.tensor([[PAD] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return ids, mask


def test_the_split_keeps_the_shared_tokens_once_and_each_rows_own_left_padded():
    shared = list(range(10, 10 + MIN_SHARED + 2))
    ids, mask = left_padded([shared + [1, 2, 3], shared + [4], shared + [5, 6]])
    split = split_shared_prefix(ids, mask, PAD)
    assert split.prefix.tolist() == shared
    assert split.ids.tolist() == [[1, 2, 3], [PAD, PAD, 4], [PAD, 5, 6]]
    assert split.mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    full_ids, full_mask = split.full()
    assert full_ids[1].tolist() == shared + [PAD, PAD, 4] and full_mask[1].tolist() == [1] * len(shared) + [0, 0, 1]


def test_every_row_keeps_a_token_of_its_own_and_short_prefixes_are_not_split():
    same = list(range(10, 10 + MIN_SHARED + 3))
    split = split_shared_prefix(*left_padded([same, same]), PAD)
    assert split.prefix.tolist() == same[:-1] and split.ids.tolist() == [[same[-1]], [same[-1]]]
    assert split_shared_prefix(*left_padded([[1] * (MIN_SHARED - 1) + [2], [1] * (MIN_SHARED - 1) + [3]]), PAD) is None
    assert split_shared_prefix(*left_padded([[7] + same, [8] + same]), PAD) is None, "only a prefix is shared"


@pytest.fixture(scope="module")
def chat_prompts(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    instruction = "State the final answer to the following arithmetic problem: "  # shared, like a task's instruction
    prompts = [instruction + "7 + 1 =", instruction + "12 + 30 =", instruction + "100 + 1 + 23 ="]
    batch = next(prompt_batches(ChatTokenizer(tiny_tokenizer), prompts, tiny_tokenizer.pad_token_id, 8))
    assert split_shared_prefix(batch["prompt_ids"], batch["prompt_attention_mask"], tiny_tokenizer.pad_token_id) is not None
    return model, batch["prompt_ids"], batch["prompt_attention_mask"]


def test_generation_from_the_shared_prefix_equals_generation_from_the_full_prompts(chat_prompts, tiny_tokenizer, monkeypatch):
    model, ids, mask = chat_prompts
    config = generation.GenerationConfig(max_new_tokens=12)
    shared = generation.generate_tokens(model, tiny_tokenizer, ids, mask, config)
    monkeypatch.setattr(generation, "split_shared_prefix", lambda *args: None)
    full = generation.generate_tokens(model, tiny_tokenizer, ids, mask, config)
    assert shared.shape == full.shape == (3, 12)
    assert torch.equal(shared, full)


def test_continuation_logits_equal_those_of_one_forward_over_the_full_sequences(chat_prompts, tiny_tokenizer):
    model, ids, mask = chat_prompts
    continuation = torch.tensor([[5, 6, 7], [8, 9, PAD], [10, PAD, PAD]])
    continuation_mask = continuation != PAD
    logits = continuation_logits(model, ids, mask, continuation, continuation_mask, tiny_tokenizer.pad_token_id)
    full_mask = torch.cat([mask, continuation_mask.long()], dim=1)
    with torch.no_grad():
        reference = model(
            input_ids=torch.cat([ids, continuation], dim=1), attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)
        ).logits[:, ids.shape[1] - 1 : -1]
    assert logits.shape == reference.shape == (3, 3, model.config.vocab_size)
    kept = continuation_mask
    torch.testing.assert_close(logits[kept], reference[kept], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("quantity", ["labels", "top_k"])
def test_frozen_outputs_from_the_shared_prefix_equal_one_forward_per_row(tiny_model_dir, quantity):
    from sft_research.frozen.quantities import LabelLogprobsQuantity, TopK, TopKQuantity
    from sft_research.model.logprobs import sequence_outputs
    from sft_research.model.output_layer import LabelLogprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    shared = list(range(20, 20 + MIN_SHARED + 4))
    rows = [shared + [3, 4, 5, 6], shared + [7], shared + [8, 9, 10]]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [PAD] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    computed = (LabelLogprobsQuantity() if quantity == "labels" else TopKQuantity(3))(model, ids, mask, 4)
    output = LabelLogprobs() if quantity == "labels" else TopK(3)
    with torch.no_grad():
        whole = sequence_outputs(model, ids, mask, (output,), {}, 4)[output.name]
    if quantity == "top_k":
        whole = {"ids": whole[..., 1].long(), "logps": whole[..., 0]}
    else:
        whole = {"logps": whole}
    for name, value in whole.items():
        real = mask[:, 1:].bool()
        assert computed[name].shape == value.shape
        torch.testing.assert_close(computed[name][real], value[real], atol=1e-4, rtol=1e-4)
