"""IRFT's round loss is DPO's sigmoid loss on (demonstration, generation) pairs, and it trains from the CLI (its
rounds: tests/test_pipelines.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sft_research.objectives import IRFT, ObjectiveInputs
from sft_research.objectives.base import run_objective
from tests.objectives.test_dpo import preference_fit, summed


def test_irft_is_dpo_on_demonstration_against_generation():
    """Summed log-probs of (demonstration, generation) as one-token sequences: the loss is the batch mean of
    -log sigma(beta h), h the demonstration's log-ratio to the round-start model minus the generation's."""
    demo, generated, start_demo, start_generated = summed(10)
    mask = torch.ones(6, 2, 1, dtype=torch.bool)
    reference = {"ref_logps": torch.stack([start_demo, start_generated], 1)[..., None]}
    inputs = ObjectiveInputs(torch.stack([demo, generated], 1)[..., None], mask, torch.ones(6), frozen=reference)
    output = run_objective(IRFT(0.1), inputs, mask[:, 0].sum(), 6)
    h = (demo - start_demo) - (generated - start_generated)
    torch.testing.assert_close(output.loss, F.softplus(-0.1 * h).mean())
    torch.testing.assert_close(output.diagnostics["rewards/chosen"], 0.1 * (demo - start_demo).detach())


@pytest.mark.slow
def test_irft_trains_from_the_cli_from_log_2(tiny_model_dir, tmp_path):
    losses, logged = preference_fit(tiny_model_dir, tmp_path, "sft_research.objectives.IRFT")
    assert float(logged[0]["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-4)
    assert losses[0] == pytest.approx(math.log(2), rel=1e-4)
    assert losses[-1] < losses[0] and float(logged[-1]["train/rewards/margins"]) > 0
