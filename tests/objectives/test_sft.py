"""SFT's loss against values computed by hand, its quality weights, and plain-text records trained from the CLI."""

import pytest
import torch

from sft_research.objectives import SFT, ObjectiveInputs, reduce_losses, sft_token_losses
from sft_research.objectives.base import run_objective
from tests.conftest import write_jsonl
from tests.objectives.conftest import fit_from_cli


def random_inputs(seed=0, b=4, t=7):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(b, t, generator=g, dtype=torch.float64) * 5
    mask = torch.rand(b, t, generator=g) > 0.4
    mask[:, 0] = True
    return logps, mask


def sft_token_mean(logps, mask, weights=None):
    """The SFT loss reduced as the module reduces :class:`SFT`'s losses: over the batch's completion tokens."""
    return reduce_losses(sft_token_losses(logps, mask, weights), "tokens", mask)


def test_sft_loss_matches_hand_computation():
    logps, mask = random_inputs()
    total, count = 0.0, 0
    for i in range(logps.shape[0]):
        for t in range(logps.shape[1]):
            if mask[i, t]:
                total -= logps[i, t].item()
                count += 1
    torch.testing.assert_close(sft_token_mean(logps, mask), torch.tensor(total / count, dtype=torch.float64), rtol=0, atol=1e-12)


def test_weighted_sft_loss_matches_hand_computation():
    logps, mask = random_inputs(1)
    weights = torch.tensor([0.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    expected = (
        sum(-weights[i].item() * logps[i, t].item() for i in range(4) for t in range(logps.shape[1]) if mask[i, t]) / mask.sum().item()
    )
    torch.testing.assert_close(sft_token_mean(logps, mask, weights), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_weights_of_ones_equal_plain_sft():
    logps, mask = random_inputs(2)
    ones = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(sft_token_losses(logps, mask, ones), sft_token_losses(logps, mask))


def test_masked_positions_do_not_matter_and_get_no_gradient():
    logps, mask = random_inputs(3)
    logps.requires_grad_(True)
    loss = sft_token_mean(logps, mask)
    loss.backward()
    assert torch.all(logps.grad[~mask] == 0)
    torch.testing.assert_close(logps.grad[mask], torch.full((int(mask.sum()),), -1.0 / mask.sum().item(), dtype=torch.float64))
    changed = logps.detach().clone()
    changed[~mask] = -1e9
    torch.testing.assert_close(sft_token_mean(changed, mask), loss.detach())


def test_objective_uses_quality_only_when_asked():
    logps, mask = random_inputs(5)
    quality = torch.tensor([0.0, 1.0, 0.5, 2.0], dtype=torch.float64)
    inputs = ObjectiveInputs(logps[:, None], mask[:, None], quality)
    torch.testing.assert_close(run_objective(SFT(), inputs, mask.sum(), 4).loss, sft_token_mean(logps, mask))
    out = run_objective(SFT(use_quality=True), inputs, mask.sum(), 4)
    torch.testing.assert_close(out.loss, sft_token_mean(logps, mask, quality))
    assert set(out.diagnostics) == {"nll", "quality"} and out.diagnostics["nll"].shape == (4,)


@pytest.mark.slow
def test_plain_text_records_train_every_token(tiny_model_dir, tmp_path, tiny_tokenizer):
    rows = [{"text": "the quick brown fox jumps over the lazy dog"}, {"text": "What is the capital of France? Paris."}]
    path = write_jsonl(tmp_path / "d.jsonl", rows * 4)
    cli, logged = fit_from_cli(tiny_model_dir, path, tmp_path, "sft_research.objectives.SFT", steps=2)
    (sequence,) = cli.datamodule.train_examples[0].sequences
    assert tiny_tokenizer.decode(sequence.input_ids) == rows[0]["text"] + tiny_tokenizer.eos_token
    assert all(sequence.completion_mask), "every token is a target (the first has no context and is never scored)"
    assert len(logged) == 2 and float(logged[1]["train/loss"]) < float(logged[0]["train/loss"])
