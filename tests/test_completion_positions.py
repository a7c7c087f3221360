"""The output layer runs at the completion positions only: the same log-probs and gradients there as over every
position, 0 elsewhere, and an objective that reads outside the mask still gets every position."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from sft_research.data.collate import collate_examples, label_positions
from sft_research.data.tokenize import Sequence, TokenizedExample
from sft_research.model.execution import ExecutionConfig, batch_outputs, trimmed
from sft_research.model.output_layer import LabelLogprobs, TokenLogprobs


def test_label_positions_are_those_whose_next_token_is_a_completion_token():
    assert label_positions([False, False, True, True, False]) == [1, 2]
    assert label_positions([True]) == []


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def batch_of(lengths_and_prompts: list[tuple[int, int]]) -> dict:
    examples = []
    for index, (length, prompt) in enumerate(lengths_and_prompts):
        ids = [(7 * index + 3 * t) % 50 + 5 for t in range(length)]
        examples.append(TokenizedExample(index, [Sequence(ids, [t >= prompt for t in range(length)])], 1.0, None))
    return collate_examples(examples, pad_token_id=0)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_completion_only_outputs_equal_the_full_ones_there_with_the_same_gradients(tiny, chunk_size):
    batch = batch_of([(9, 5), (12, 3), (6, 4)])
    execution = ExecutionConfig(logprob_chunk_size=chunk_size)
    ids_out = TokenLogprobs("others", "teacher.ids")
    results = {}
    for completion_only in (False, True):
        tensors, _ = trimmed(batch, {}, execution, completion_only=completion_only)
        assert ("scored" in tensors) == completion_only
        teacher_ids = torch.arange(3 * 11 * 2).reshape(3, 1, 11, 2) % 40
        tiny.zero_grad()
        out = batch_outputs(tiny, tensors, (LabelLogprobs(), ids_out), {"teacher.ids": teacher_ids}, execution)
        mask = tensors["loss_mask"]
        loss = -(out["logps"] * mask).sum() - (out["others"].sum(-1) * mask).sum()
        loss.backward()
        results[completion_only] = (out, mask, [p.grad.clone() for p in tiny.parameters()])
    (full, mask, full_grads), (only, _, only_grads) = results[False], results[True]
    assert int(mask.sum()) == 4 + 9 + 2
    for name in ("logps", "others"):
        torch.testing.assert_close(only[name][mask], full[name][mask])
        assert only[name][~mask].abs().sum() == 0 and full[name][~mask].abs().sum() > 0
    for only_grad, full_grad in zip(only_grads, full_grads):
        torch.testing.assert_close(only_grad, full_grad, atol=1e-5, rtol=1e-4)


def test_packed_and_compiled_batches_are_not_cut_to_their_completion():
    batch = collate_examples(
        [TokenizedExample(0, [Sequence([5, 6, 7, 8], [False, False, True, True])], 1.0, None)], pad_token_id=0, pack=True
    )
    batch["layout"] = batch.pop("layouts")[0]
    assert "scored" not in trimmed(batch, {}, ExecutionConfig(packing=True), completion_only=True)[0]
    assert "scored" not in trimmed(batch, {}, ExecutionConfig(compile=True), completion_only=True)[0]


def test_an_objective_that_reads_outside_the_mask_gets_every_position(tiny_model_dir, tmp_path):
    from sft_research.model.loading import ModelConfig
    from sft_research.objectives.base import BatchLoss
    from sft_research.objectives.sft import SFT
    from sft_research.train.module import FineTuningModule

    seen = {}

    class PromptAware(SFT):
        reads_outside_mask = True

        def __call__(self, inputs):
            seen["outside"] = inputs.logps[~inputs.mask].detach()
            return super().__call__(inputs)

    module = FineTuningModule(ModelConfig(str(tiny_model_dir)), objective=PromptAware())
    module.configure_model()
    batch = batch_of([(9, 5), (12, 3)])
    output = module.micro_loss(batch, batch["loss_mask"].sum(), torch.tensor(2.0), "train")
    assert isinstance(output, BatchLoss) and (seen["outside"] != 0).all()
