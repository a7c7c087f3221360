"""iw-SFT against values computed by hand in float64, its gradients, its limit where it is plain SFT, and CLI fits
with a cached and an on-the-fly reference."""

import math

import pytest
import torch

from sft_research.checkpoints.tiny import build_tiny_checkpoint
from sft_research.objectives import iw_sft_token_losses, reduce_losses
from tests.conftest import SFT_ROWS, write_jsonl
from tests.objectives.conftest import fit_from_cli
from tests.objectives.test_sft import sft_token_mean


def random_batch(seed, b=5, t=9):
    g = torch.Generator().manual_seed(seed)
    logps = (-torch.rand(b, t, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    ref_logps = (logps.detach() + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.7).requires_grad_(True)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True
    return logps, ref_logps, mask


def iw_sft_token_mean(logps, ref_logps, mask, *args, **options):
    """The token-mean loss, reduced as the module reduces :class:`IwSFT`'s losses, and the weights."""
    losses, weights = iw_sft_token_losses(logps, ref_logps, mask, *args, **options)
    return reduce_losses(losses, "tokens", mask), weights


def masked(mask, i):
    return [t for t in range(mask.shape[1]) if mask[i, t]]


@pytest.mark.parametrize("temperature,max_weight", [(1.0, 16.0), (2.0, 1.5), (0.5, 16.0)])
def test_iw_sft_sequence_level_by_hand(temperature, max_weight):
    logps, ref, mask = random_batch(0)
    quality = torch.tensor([1.0, 0.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    loss, weights = iw_sft_token_mean(logps, ref, mask, temperature, max_weight, quality=quality)
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
    loss, weights = iw_sft_token_mean(logps, ref, mask, token_level=True, token_clip=0.2)
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
    loss, weights = iw_sft_token_mean(logps, ref, mask, token_level=token_level)
    loss.backward()
    assert ref.grad is None and not weights.requires_grad
    # d loss / d logps_it = -w_i / N on completion tokens: the weight is a constant.
    w = weights if token_level else weights[:, None].expand_as(logps)
    torch.testing.assert_close(logps.grad[mask], (-w / mask.sum())[mask])
    assert torch.all(logps.grad[~mask] == 0)


@pytest.mark.parametrize("token_level", [False, True])
def test_iw_sft_is_sft_at_step_zero(token_level):
    logps, _, mask = random_batch(3)
    loss, weights = iw_sft_token_mean(logps, logps.detach().clone(), mask, token_level=token_level)
    assert torch.allclose(weights[mask] if token_level else weights, torch.ones(()).double())
    sft = sft_token_mean(logps, mask)
    torch.testing.assert_close(loss, sft)
    quality = torch.ones(5, dtype=torch.float64)
    torch.testing.assert_close(iw_sft_token_mean(logps, logps.detach(), mask, quality=quality)[0], sft)


def test_iw_sft_is_right_for_any_batch_size():
    """The official broadcast is only right at B = 1: the batch loss must be the token-weighted sum of single losses."""
    logps, ref, mask = random_batch(4, b=3, t=3)  # T == B is where a wrong broadcast would pass silently
    loss, _ = iw_sft_token_mean(logps, ref, mask)
    singles = sum(iw_sft_token_mean(logps[i : i + 1], ref[i : i + 1], mask[i : i + 1])[0] * mask[i].sum() for i in range(3))
    torch.testing.assert_close(loss, singles / mask.sum())


@pytest.mark.slow
def test_iw_sft_trains_from_the_cli_and_starts_as_sft(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    _, logged = fit_from_cli(tiny_model_dir, path, tmp_path, "sft_research.objectives.IwSFT")
    assert len(logged) == 3
    for name in ("iw/weight", "iw/weight_min", "iw/weight_max", "iw/clipped_fraction", "loss", "nll"):
        assert all(math.isfinite(float(row[f"train/{name}"])) for row in logged), name
    assert float(logged[0]["train/iw/weight"]) == pytest.approx(1.0, abs=1e-4), "the first step is plain SFT"


@pytest.mark.slow
def test_token_level_iw_sft_with_quality_trains_from_the_cli(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    extra = ("--model.objective.token_level=true", "--model.objective.use_quality=true")
    _, logged = fit_from_cli(tiny_model_dir, path, tmp_path, "sft_research.objectives.IwSFT", *extra)
    assert len(logged) == 3
    for name in ("iw/weight", "iw/clipped_fraction", "loss"):
        assert all(math.isfinite(float(row[f"train/{name}"])) for row in logged), name
    assert float(logged[0]["train/iw/weight"]) == pytest.approx(1.0, abs=1e-4), "every token's weight is 1 at the start"


def cached_and_on_the_fly_losses(model_dir, rows, root, objective: str) -> dict[str, list[float]]:
    """The losses of two fits against a reference that differs from the start model, cached and run on the fly."""
    path = write_jsonl(root / "d.jsonl", rows)
    reference = build_tiny_checkpoint(root / "reference", seed=7)
    runs = {}
    for mode in ("cached", "on_the_fly"):
        _, logged = fit_from_cli(
            model_dir, path, root / mode, objective, f"--model.frozen.reference={reference}", f"--model.frozen.mode={mode}"
        )
        runs[mode] = [float(row["train/loss"]) for row in logged]
    return runs


@pytest.mark.slow
def test_cached_and_on_the_fly_reference_give_the_same_losses(tiny_model_dir, tmp_path):
    runs = cached_and_on_the_fly_losses(tiny_model_dir, SFT_ROWS, tmp_path, "sft_research.objectives.IwSFT")
    torch.testing.assert_close(runs["cached"], runs["on_the_fly"], rtol=0, atol=1e-5)
