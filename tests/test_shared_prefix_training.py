"""Training with the tokens a batch's sequences share run once (``model.execution.shared_prefix``): where the prefix
stops, the same outputs, loss and gradients as every sequence run whole, and the settings it refuses."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from sft_research.data.collate import collate_examples, shared_tokens
from sft_research.data.tokenize import Sequence, TokenizedExample
from sft_research.model.execution import ExecutionConfig, batch_outputs, check_shared_prefix, trimmed
from sft_research.model.output_layer import LabelLogprobs, TokenLogprobs
from sft_research.model.shared_prefix import MIN_SHARED
from sft_research.objectives import SFT

SYSTEM = list(range(30, 30 + MIN_SHARED + 4))  # a system turn and instruction every example starts with


def sequence(prompt: list[int], completion: list[int]) -> Sequence:
    return Sequence(prompt + completion, [False] * len(prompt) + [True] * len(completion))


def test_the_shared_tokens_stop_before_the_first_completion_token_is_predicted():
    same = [sequence(SYSTEM + [1, 2], [3, 4]), sequence(SYSTEM + [1, 2], [5])]
    assert shared_tokens(same) == len(SYSTEM) + 1, "position len(SYSTEM) + 1 predicts the first completion token"
    assert shared_tokens([sequence(SYSTEM + [1], [3]), sequence(SYSTEM + [2, 2], [3])]) == len(SYSTEM)
    assert shared_tokens([sequence([], [7, 8, 9])]) == 0
    assert shared_tokens([Sequence([5, 6, 7], [False] * 3)]) == 2, "a token of its own is left"


def pair_batch() -> dict:
    examples = [
        TokenizedExample(0, [sequence(SYSTEM + [1, 2], [3, 4, 5]), sequence(SYSTEM + [1, 2], [6])], 1.0, None),
        TokenizedExample(1, [sequence(SYSTEM + [7], [8, 9]), sequence(SYSTEM + [7], [10, 11, 12, 13])], 1.0, None),
    ]
    return collate_examples(examples, pad_token_id=0)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def test_outputs_and_gradients_equal_those_of_whole_sequences(tiny):
    batch = pair_batch()
    teacher_ids = torch.arange(2 * 2 * 21 * 2).reshape(2, 2, 21, 2) % 40
    results = {}
    for shared in (False, True):
        execution = ExecutionConfig(logprob_chunk_size=4, shared_prefix=shared)
        tensors, _ = trimmed(batch, {}, execution, completion_only=True)
        assert ("prefix_length" in tensors) == shared
        tiny.zero_grad()
        reads = {"teacher.ids": teacher_ids[:, :, : tensors["input_ids"].shape[-1] - 1]}
        out = batch_outputs(tiny, tensors, (LabelLogprobs(), TokenLogprobs("others", "teacher.ids")), reads, execution)
        mask = tensors["loss_mask"]
        loss = -(out["logps"] * mask).sum() - 0.1 * (out["others"].sum(-1) * mask).sum()
        loss.backward()
        results[shared] = (out, mask, float(loss.detach()), [p.grad.clone() for p in tiny.parameters()])
    (whole, mask, whole_loss, whole_grads), (shared, _, shared_loss, shared_grads) = results[False], results[True]
    assert int(mask.sum()) == 3 + 1 + 2 + 4
    for name in ("logps", "others"):
        assert shared[name].shape == whole[name].shape
        torch.testing.assert_close(shared[name][mask], whole[name][mask], atol=1e-5, rtol=1e-5)
    assert shared_loss == pytest.approx(whole_loss, rel=1e-5)
    for shared_grad, whole_grad in zip(shared_grads, whole_grads):
        torch.testing.assert_close(shared_grad, whole_grad, atol=1e-5, rtol=1e-4)


def test_an_sft_fit_step_gives_the_same_loss_through_the_module(tiny_model_dir):
    from sft_research.model.loading import ModelConfig
    from sft_research.train.module import FineTuningModule

    batch = collate_examples(
        [TokenizedExample(i, [sequence(SYSTEM + [i + 1] * (i + 1), [40 + i, 41])], 1.0, None) for i in range(4)], pad_token_id=0
    )
    losses = []
    for shared in (False, True):
        module = FineTuningModule(ModelConfig(str(tiny_model_dir)), execution=ExecutionConfig(shared_prefix=shared))
        module.configure_model()
        losses.append(float(module.micro_loss(batch, batch["loss_mask"].sum(), torch.tensor(4.0), "train").loss.detach()))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize(
    "execution, world_size, checkpointing, named",
    [
        (ExecutionConfig(shared_prefix=True, packing=True), 1, False, "packing"),
        (ExecutionConfig(shared_prefix=True, compile=True), 1, False, "compile"),
        (ExecutionConfig(shared_prefix=True), 2, False, "2 processes"),
        (ExecutionConfig(shared_prefix=True), 1, True, "activation checkpointing"),
    ],
)
def test_settings_that_cannot_share_the_prefix_are_refused_by_name(execution, world_size, checkpointing, named):
    with pytest.raises(ValueError, match=named):
        check_shared_prefix(execution, SFT(), world_size, checkpointing)


def test_an_objective_reading_the_prompt_is_refused_and_the_default_is_left_alone():
    class PromptAware(SFT):
        reads_outside_mask = True

    with pytest.raises(ValueError, match="PromptAware"):
        check_shared_prefix(ExecutionConfig(shared_prefix=True), PromptAware(), 1, False)
    check_shared_prefix(ExecutionConfig(packing=True), PromptAware(), 2, True)
