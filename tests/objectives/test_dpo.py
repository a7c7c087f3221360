"""DPO's loss types against values computed by hand in float64, CLI fits that start at the reference's values, and
what held-out preference pairs report."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from sft_research.objectives import dpo_losses, reduce_losses
from tests.conftest import PAIR_ROWS, write_jsonl
from tests.objectives.conftest import fit_from_cli
from tests.objectives.test_iw_sft import cached_and_on_the_fly_losses


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
    losses, chosen, rejected = dpo_losses(pc, pr, rc, rr, beta, loss_type, eps, lc, lr)
    loss = reduce_losses(losses, "examples")
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
    losses, _, _ = dpo_losses(pc, pr, rc, rr, beta=0.1)
    h = (pc - rc) - (pr - rr)
    torch.testing.assert_close(reduce_losses(losses, "examples"), F.softplus(-0.1 * h).mean())


def test_ipo_needs_lengths():
    pc, pr, rc, rr = summed(9)
    with pytest.raises(ValueError, match="needs chosen_lengths"):
        dpo_losses(pc, pr, rc, rr, loss_type="ipo")


def preference_fit(model_dir, root, objective: str, *extra: str) -> tuple[list[float], list[dict]]:
    """A 3-step CLI fit on preference pairs: its losses and logged rows, every diagnostic finite."""
    _, logged = fit_from_cli(model_dir, write_jsonl(root / "d.jsonl", PAIR_ROWS), root, objective, *extra)
    assert len(logged) == 3
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "loss"):
        assert all(math.isfinite(float(row[f"train/{name}"])) for row in logged), name
    return [float(row["train/loss"]) for row in logged], logged


@pytest.mark.slow
def test_dpo_trains_from_the_cli_from_log_2(tiny_model_dir, tmp_path):
    """policy == reference at step 0: every margin is 0, so the sigmoid loss is -log sigmoid(0) = log 2; training then
    lowers it and separates chosen from rejected."""
    losses, logged = preference_fit(tiny_model_dir, tmp_path, "sft_research.objectives.DPO")
    assert float(logged[0]["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-4)
    assert losses[0] == pytest.approx(math.log(2), rel=1e-4)
    assert losses[-1] < losses[0] and float(logged[-1]["train/rewards/margins"]) > 0


@pytest.mark.slow
def test_ipo_trains_from_the_cli_from_its_margin_term(tiny_model_dir, tmp_path):
    """At step 0 every margin is 0, so IPO's loss is (0 - 1 / (2 beta))^2 = 25 at beta 0.1."""
    losses, logged = preference_fit(tiny_model_dir, tmp_path, "sft_research.objectives.DPO", "--model.objective.loss_type=ipo")
    assert float(logged[0]["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-4)
    assert losses[0] == pytest.approx(25.0, rel=1e-4)
    assert losses[-1] < losses[0] and float(logged[-1]["train/rewards/margins"]) > 0


@pytest.mark.slow
def test_cached_and_on_the_fly_reference_give_the_same_losses(tiny_model_dir, tmp_path):
    runs = cached_and_on_the_fly_losses(tiny_model_dir, PAIR_ROWS, tmp_path, "sft_research.objectives.DPO")
    torch.testing.assert_close(runs["cached"], runs["on_the_fly"], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_held_out_preference_pairs_report_what_dpo_users_read(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", PAIR_ROWS[:8])
    val = write_jsonl(tmp_path / "val.jsonl", PAIR_ROWS[8:])
    cli, _ = fit_from_cli(
        tiny_model_dir,
        train,
        tmp_path,
        "sft_research.objectives.DPO",
        "--data.val=sft_research.data.FileDataset",
        f"--data.val.path={val}",
        "--trainer.val_check_interval=1",
        steps=2,
    )
    with open(cli.trainer.logger.log_dir + "/metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/loss")]
    assert len(rows) == 2
    first, last = ({k: float(v) for k, v in row.items() if k.startswith("val/") and v} for row in (rows[0], rows[-1]))
    for name in ("val/loss", "val/rewards/accuracies", "val/rewards/margins", "val/rewards/chosen", "val/rewards/rejected"):
        assert name in first, name
    assert first["val/rewards/margins"] == pytest.approx(first["val/rewards/chosen"] - first["val/rewards/rejected"], abs=1e-5)
    assert 0.0 <= last["val/rewards/accuracies"] <= 1.0
    # One step from the reference, the held-out margins are still near 0, so the DPO loss is near log 2.
    assert first["val/loss"] == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(0.0)).item(), abs=0.05)
