"""DFT's loss against values computed by hand, its gradient in closed form, and a CLI fit (micro-batches:
tests/objectives/test_contract.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sft_research.objectives import DFT, ObjectiveInputs, dft_token_losses, reduce_losses
from sft_research.objectives.base import run_objective
from tests.conftest import write_jsonl
from tests.objectives.conftest import fit_from_cli
from tests.objectives.test_sft import sft_token_mean

PROBS = [[0.5, 0.25, 0.8], [0.1, 0.9, 0.6]]
MASK = [[True, True, False], [True, False, True]]


def random_batch(seed, b=6, t=7, vocab=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, vocab, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(vocab, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True
    return logits, labels, mask


def label_logps(logits, labels):
    return torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]


def test_dft_loss_by_hand():
    logps = torch.tensor(PROBS, dtype=torch.float64).log()
    mask = torch.tensor(MASK)
    losses = dft_token_losses(logps, mask)
    expected = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 0.1 * math.log(0.1) + 0.6 * math.log(0.6)) / 4
    assert reduce_losses(losses, "tokens", mask).item() == pytest.approx(expected, abs=1e-12)
    assert reduce_losses(losses, "tokens", mask, num_tokens=8).item() == pytest.approx(expected / 2, abs=1e-12)


def test_dft_gradient_is_the_probability_scaled_sft_gradient():
    logits, labels, mask = random_batch(0)
    (dft_grad,) = torch.autograd.grad(reduce_losses(dft_token_losses(label_logps(logits, labels), mask), "tokens", mask), logits)

    # Per token, SFT's gradient on the logits is (softmax - onehot) / N; DFT scales each token's by its p_t.
    probs = torch.softmax(logits.detach(), -1)
    onehot = F.one_hot(labels, logits.shape[-1]).double()
    p_label = probs.gather(-1, labels[..., None])
    closed_form = p_label * (probs - onehot) * mask[..., None] / mask.sum()
    torch.testing.assert_close(dft_grad, closed_form, rtol=0, atol=1e-12)

    # The same, token by token, from autograd on SFT: DFT's gradient is sum_t sg(p_t) * grad(SFT_t) = -grad(p) / N.
    logps = label_logps(logits, labels)
    per_token_sft = [
        torch.autograd.grad(-logps[i, t] / mask.sum(), logits, retain_graph=True)[0] * logps[i, t].exp().detach()
        for i, t in mask.nonzero().tolist()
    ]
    torch.testing.assert_close(dft_grad, torch.stack(per_token_sft).sum(0), rtol=0, atol=1e-12)
    (minus_prob_grad,) = torch.autograd.grad(-(label_logps(logits, labels).exp() * mask).sum() / mask.sum(), logits)
    torch.testing.assert_close(dft_grad, minus_prob_grad, rtol=0, atol=1e-12)


def test_dft_is_sft_where_the_model_is_certain():
    logps = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)  # p = 1 on every label token
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [False, True, False, True]])
    (dft_grad,) = torch.autograd.grad(reduce_losses(dft_token_losses(logps, mask), "tokens", mask), logps)
    (sft_grad,) = torch.autograd.grad(sft_token_mean(logps, mask), logps)
    torch.testing.assert_close(dft_grad, sft_grad)


def test_dft_objective_diagnostics_are_per_example():
    logps = torch.tensor(PROBS, dtype=torch.float64).log()[:, None]
    mask = torch.tensor(MASK)[:, None]
    output = run_objective(DFT(), ObjectiveInputs(logps, mask, torch.ones(2)), mask.sum(), 2)
    torch.testing.assert_close(output.diagnostics["dft/token_prob"], torch.tensor([0.375, 0.35], dtype=torch.float64))
    nll = torch.tensor([-(math.log(0.5) + math.log(0.25)) / 2, -(math.log(0.1) + math.log(0.6)) / 2], dtype=torch.float64)
    torch.testing.assert_close(output.diagnostics["nll"], nll)
    assert not any(value.requires_grad for value in output.diagnostics.values())


@pytest.mark.slow
def test_dft_trains_a_tiny_model_from_the_cli(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"{a} + {b} =", "completion": str(a + b)} for a, b in zip(range(1, 13), range(20, 8, -1))]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    _, logged = fit_from_cli(tiny_model_dir, path, tmp_path, "sft_research.objectives.DFT", steps=6, lr=1e-2)
    assert len(logged) == 6
    probs = [float(row["train/dft/token_prob"]) for row in logged]
    assert all(
        0 < float(row["train/dft/token_prob_min"]) <= p <= float(row["train/dft/token_prob_max"]) <= 1 for row, p in zip(logged, probs)
    )
    assert all(math.isfinite(float(row["train/loss"])) and math.isfinite(float(row["train/nll"])) for row in logged)
    assert probs[-1] > probs[0], "training raised the probability of the completion tokens"
