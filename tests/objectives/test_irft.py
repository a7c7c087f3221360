"""IRFT's round loss is DPO's sigmoid loss on (demonstration, generation) pairs, and it trains from the CLI (its
rounds: tests/test_pipelines.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sft_research.objectives import dpo_loss, irft_loss
from tests.objectives.test_dpo import preference_fit, summed


def test_irft_is_dpo_on_demonstration_against_generation():
    pc, pr, rc, rr = summed(10)
    torch.testing.assert_close(irft_loss(pc, pr, rc, rr, 0.1)[0], dpo_loss(pc, pr, rc, rr, 0.1)[0])
    torch.testing.assert_close(irft_loss(pc, pr, rc, rr, 0.1)[0], F.softplus(-0.1 * ((pc - rc) - (pr - rr))).mean())


@pytest.mark.slow
def test_irft_trains_from_the_cli_from_log_2(tiny_model_dir, tmp_path):
    losses, logged = preference_fit(tiny_model_dir, tmp_path, "sft_research.objectives.IRFT")
    assert float(logged[0]["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-4)
    assert losses[0] == pytest.approx(math.log(2), rel=1e-4)
    assert losses[-1] < losses[0] and float(logged[-1]["train/rewards/margins"]) > 0
