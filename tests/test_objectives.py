"""Each loss against values computed by hand in float64, its gradients, and its limit where it is plain SFT."""

import math

import pytest
import torch
import torch.nn.functional as F

from sft_research.objectives import dpo_loss, irft_loss, iw_sft_loss, poft_loss, sft_loss


def random_batch(seed, b=5, t=9):
    g = torch.Generator().manual_seed(seed)
    logps = (-torch.rand(b, t, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    ref_logps = (logps.detach() + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.7).requires_grad_(True)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True
    return logps, ref_logps, mask


def masked(mask, i):
    return [t for t in range(mask.shape[1]) if mask[i, t]]


@pytest.mark.parametrize("temperature,max_weight", [(1.0, 16.0), (2.0, 1.5), (0.5, 16.0)])
def test_iw_sft_sequence_level_by_hand(temperature, max_weight):
    logps, ref, mask = random_batch(0)
    quality = torch.tensor([1.0, 0.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    loss, weights = iw_sft_loss(logps, ref, mask, temperature, max_weight, quality=quality)
    total, count, expected_w = 0.0, 0, []
    for i in range(5):
        ts = masked(mask, i)
        d = sum(logps[i, t].item() - ref[i, t].item() for t in ts) / len(ts)
        w = min(max(math.exp(temperature * d), 0.0), max_weight)
        expected_w.append(w)
        total += quality[i].item() * w * sum(-logps[i, t].item() for t in ts)
        count += len(ts)
    torch.testing.assert_close(weights, torch.tensor(expected_w, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, torch.tensor(total / count, dtype=torch.float64), rtol=0, atol=1e-12)
    if max_weight == 1.5:
        assert (weights == 1.5).any(), "the clip was exercised"


def test_iw_sft_token_level_by_hand_and_clip_bounds():
    logps, ref, mask = random_batch(1)
    loss, weights = iw_sft_loss(logps, ref, mask, token_level=True, token_clip=0.2)
    total, count = 0.0, 0
    for i in range(5):
        for t in masked(mask, i):
            w = min(max(math.exp(logps[i, t].item() - ref[i, t].item()), 0.8), 1.2)
            torch.testing.assert_close(weights[i, t].item(), w, rtol=0, atol=1e-12)
            total += w * -logps[i, t].item()
            count += 1
    torch.testing.assert_close(loss.item(), total / count, rtol=0, atol=1e-12)
    assert torch.all(weights[mask] >= 0.8) and torch.all(weights[mask] <= 1.2)
    assert (weights[mask] == 0.8).any() and (weights[mask] == 1.2).any(), "both bounds were exercised"
    assert torch.all(weights[~mask] == 0)


@pytest.mark.parametrize("token_level", [False, True])
def test_iw_sft_gradient_flows_only_through_logps(token_level):
    logps, ref, mask = random_batch(2)
    loss, weights = iw_sft_loss(logps, ref, mask, token_level=token_level)
    loss.backward()
    assert ref.grad is None and not weights.requires_grad
    # d loss / d logps_it = -w_i / N on completion tokens: the weight is a constant.
    w = weights if token_level else weights[:, None].expand_as(logps)
    torch.testing.assert_close(logps.grad[mask], (-w / mask.sum())[mask])
    assert torch.all(logps.grad[~mask] == 0)


@pytest.mark.parametrize("token_level", [False, True])
def test_iw_sft_is_sft_at_step_zero(token_level):
    logps, _, mask = random_batch(3)
    loss, weights = iw_sft_loss(logps, logps.detach().clone(), mask, token_level=token_level)
    assert torch.allclose(weights[mask] if token_level else weights, torch.ones(()).double())
    torch.testing.assert_close(loss, sft_loss(logps, mask))
    quality = torch.ones(5, dtype=torch.float64)
    torch.testing.assert_close(iw_sft_loss(logps, logps.detach(), mask, quality=quality)[0], sft_loss(logps, mask))


def test_iw_sft_is_right_for_any_batch_size():
    """The official broadcast is only right at B = 1: the batch loss must be the token-weighted sum of single losses."""
    logps, ref, mask = random_batch(4, b=3, t=3)  # T == B is where a wrong broadcast would pass silently
    loss, _ = iw_sft_loss(logps, ref, mask)
    singles = sum(iw_sft_loss(logps[i : i + 1], ref[i : i + 1], mask[i : i + 1])[0] * mask[i].sum() for i in range(3))
    torch.testing.assert_close(loss, singles / mask.sum())


def test_poft_by_hand():
    logps, _, mask = random_batch(5)
    baseline = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.5], dtype=torch.float64)
    loss, weight = poft_loss(logps, mask, baseline, beta=2.0, gamma=0.3)
    total, expected_weight = 0.0, []
    for i in range(5):
        ts = masked(mask, i)
        r = sum(logps[i, t].item() for t in ts) / len(ts)
        z = 2.0 * (r - baseline[i].item()) + 0.3
        total += -math.log(1 / (1 + math.exp(-z)))
        expected_weight.append(1 / (1 + math.exp(-(baseline[i].item() - r))))
    torch.testing.assert_close(loss.item(), total / 5, rtol=0, atol=1e-12)
    torch.testing.assert_close(weight, torch.tensor(expected_weight, dtype=torch.float64), rtol=0, atol=1e-12)


def test_poft_gradient_flows_only_through_logps_and_tends_to_sequence_mean_sft():
    logps, _, mask = random_batch(6)
    baseline = torch.full((5,), 50.0, dtype=torch.float64, requires_grad=True)  # baselines far ahead: weight -> 1
    loss, weight = poft_loss(logps, mask, baseline)
    loss.backward()
    assert baseline.grad is None and not weight.requires_grad
    torch.testing.assert_close(weight, torch.ones(5, dtype=torch.float64))
    sequence_mean_sft = torch.stack([-(logps[i][mask[i]]).mean() for i in range(5)]).mean()
    (expected,) = torch.autograd.grad(sequence_mean_sft, logps)
    torch.testing.assert_close(logps.grad, expected)


def summed(seed, b=6):
    g = torch.Generator().manual_seed(seed)
    values = [(-torch.rand(b, generator=g, dtype=torch.float64) * 30) for _ in range(4)]
    values[0].requires_grad_(True)
    values[1].requires_grad_(True)
    values[2].requires_grad_(True)
    return values


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("hinge", 0.0), ("ipo", 0.0)])
def test_dpo_by_hand(loss_type, eps):
    pc, pr, rc, rr = summed(7)
    lc = torch.tensor([3.0, 5, 7, 2, 9, 4], dtype=torch.float64)
    lr = torch.tensor([6.0, 2, 8, 3, 1, 5], dtype=torch.float64)
    beta = 0.5
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta, loss_type, eps, lc, lr)
    total = 0.0
    for i in range(6):
        h = (pc[i].item() - rc[i].item()) - (pr[i].item() - rr[i].item())
        if loss_type == "sigmoid":
            total += -(1 - eps) * math.log(1 / (1 + math.exp(-beta * h))) - eps * math.log(1 / (1 + math.exp(beta * h)))
        elif loss_type == "hinge":
            total += max(0.0, 1 - beta * h)
        else:
            hb = (pc[i].item() - rc[i].item()) / lc[i].item() - (pr[i].item() - rr[i].item()) / lr[i].item()
            total += (hb - 1 / (2 * beta)) ** 2
    torch.testing.assert_close(loss.item(), total / 6, rtol=0, atol=1e-10)
    torch.testing.assert_close(chosen, beta * (pc - rc).detach())
    torch.testing.assert_close(rejected, beta * (pr - rr).detach())
    loss.backward()
    assert rc.grad is None and not chosen.requires_grad


def test_dpo_sigmoid_without_smoothing_is_softplus():
    pc, pr, rc, rr = summed(8)
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
    h = (pc - rc) - (pr - rr)
    torch.testing.assert_close(loss, F.softplus(-0.1 * h).mean())


def test_ipo_needs_lengths():
    pc, pr, rc, rr = summed(9)
    with pytest.raises(ValueError, match="needs chosen_lengths"):
        dpo_loss(pc, pr, rc, rr, loss_type="ipo")


def test_irft_is_dpo_on_demonstration_against_generation():
    pc, pr, rc, rr = summed(10)
    torch.testing.assert_close(irft_loss(pc, pr, rc, rr, 0.1)[0], dpo_loss(pc, pr, rc, rr, 0.1)[0])
    torch.testing.assert_close(irft_loss(pc, pr, rc, rr, 0.1)[0], F.softplus(-0.1 * ((pc - rc) - (pr - rr))).mean())


def test_per_sequence_normalisation_by_hand():
    """Two answers of 1 and 3 tokens: the token-mean weighs the long one 3:1, the sequence-mean 1:1 (the official
    iw-SFT run's one sequence per GPU); micro-batches with the whole batch's counts add up to either."""
    from sft_research.objectives import dft_loss

    logps = torch.tensor([[-1.0, 0.0, 0.0], [-2.0, -3.0, -4.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    assert sft_loss(logps, mask).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert sft_loss(logps, mask, normalize="sequences").item() == pytest.approx((1 / 1 + (2 + 3 + 4) / 3) / 2)
    quality = torch.tensor([2.0, 0.5], dtype=torch.float64)
    assert sft_loss(logps, mask, quality, normalize="sequences").item() == pytest.approx((2 * 1 + 0.5 * 3) / 2)
    ref = logps.detach() + torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    loss, weights = iw_sft_loss(logps, ref, mask, normalize="sequences")
    w = [math.exp(-0.5), 1.0]
    assert weights.tolist() == pytest.approx(w)
    assert loss.item() == pytest.approx((w[0] * 1 + w[1] * 3) / 2)
    p = [math.exp(-1), math.exp(-2), math.exp(-3), math.exp(-4)]
    assert dft_loss(logps, mask, normalize="sequences").item() == pytest.approx((p[0] * 1 + (p[1] * 2 + p[2] * 3 + p[3] * 4) / 3) / 2)
    halves = sum(sft_loss(logps[i : i + 1], mask[i : i + 1], normalize="sequences", num_examples=2) for i in range(2))
    assert halves.item() == pytest.approx(sft_loss(logps, mask, normalize="sequences").item())
    (grad,) = torch.autograd.grad(sft_loss(logps, mask, normalize="sequences"), logps)
    torch.testing.assert_close(grad, torch.tensor([[-0.5, 0, 0], [-1 / 6, -1 / 6, -1 / 6]], dtype=torch.float64))


def test_dpo_logs_trls_summed_completion_logps():
    from sft_research.objectives import DPO
    from sft_research.objectives.base import ObjectiveInputs

    logps = torch.tensor([[[-1.0, -2.0, -3.0], [-0.5, -0.5, -4.0]]])  # one pair: chosen, rejected
    mask = torch.tensor([[[True, True, False], [True, False, True]]])
    inputs = ObjectiveInputs(logps, mask, torch.ones(1), {"ref_logps": torch.zeros_like(logps)})
    diagnostics = DPO()(inputs).diagnostics
    assert diagnostics["logps/chosen"].tolist() == [-3.0] and diagnostics["logps/rejected"].tolist() == [-4.5]
