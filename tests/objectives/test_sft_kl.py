"""SFT with a KL penalty to the base model: at the start the policy is the base model, and the step is SFT's."""

import pytest
import torch

from sft_research.objectives import SFT, SFTWithKL
from tests.conftest import ROWS, write_jsonl
from tests.objectives.conftest import first_step


@pytest.mark.slow
def test_sft_with_kl_is_sft_at_the_start_and_logs_the_kl(tiny_model_dir, tmp_path):
    """At the first step the policy is the base model: the KL and its gradient vanish, and the step is SFT's."""
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with_kl, _ = first_step(tiny_model_dir, tiny_model_dir, path, SFTWithKL(kl_weight=2.0), tmp_path / "kl")
    sft, _ = first_step(tiny_model_dir, tiny_model_dir, path, SFT(), tmp_path / "sft")
    for name in sft:
        torch.testing.assert_close(with_kl[name], sft[name], rtol=0, atol=1e-6, msg=name)
