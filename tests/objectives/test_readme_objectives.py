"""The README's objectives, each one file written outside the package, taken from README.md itself: their first
step's gradient is autograd's on the full logits, padded and packed, chunked and not."""

import importlib
import math
import sys

import pytest
import torch

from tests.conftest import ROWS, readme_block, write_jsonl
from tests.objectives.conftest import first_step, fit_from_cli, full_logits_gradients


def readme_objective(tmp_path, monkeypatch, module: str, marker: str):
    """The README's block that holds ``marker``, written to ``my_objectives/<module>.py`` and imported."""
    package = tmp_path / "my_objectives"
    package.mkdir(exist_ok=True)
    (package / f"{module}.py").write_text(readme_block(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(f"my_objectives.{module}", None)
    return importlib.import_module(f"my_objectives.{module}")


EXECUTIONS = pytest.mark.parametrize(
    "execution",
    [{}, {"logprob_chunk_size": None}, {"packing": True}, {"packing": True, "logprob_chunk_size": 3}],
    ids=["chunked", "full", "packed", "packed-chunked"],
)


@pytest.mark.slow
@EXECUTIONS
def test_a_whole_distribution_objective_written_outside_the_package(execution, tiny_model_dir, reference_model, tmp_path, monkeypatch):
    """The README's KL-to-the-reference example."""
    objective = readme_objective(tmp_path, monkeypatch, "sft_reference_kl", "class SFTReferenceKL(Objective):").SFTReferenceKL(weight=0.5)
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    got, data = first_step(tiny_model_dir, reference_model, path, objective, tmp_path, **execution)

    def loss(logp, ref, labels, mask):
        kl = (logp.exp() * (logp - ref)).sum(-1)
        label = logp.gather(-1, labels[..., None]).squeeze(-1)
        return ((0.5 * kl - label) * mask).sum() / mask.sum()

    wanted = full_logits_gradients(tiny_model_dir, reference_model, data, loss)
    assert got.keys() == wanted.keys()
    for name in wanted:
        torch.testing.assert_close(got[name], wanted[name], rtol=0, atol=2e-5, msg=name)


@pytest.mark.slow
@EXECUTIONS
def test_the_readme_entropy_regularised_sft_is_autograds_on_full_logits(execution, tiny_model_dir, tmp_path, monkeypatch):
    objective = readme_objective(tmp_path, monkeypatch, "entropy_sft", "class EntropySFT(Objective):").EntropySFT(weight=0.3)
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    got, data = first_step(tiny_model_dir, tiny_model_dir, path, objective, tmp_path, **execution)

    def loss(logp, ref, labels, mask):
        entropy = -(logp.exp() * logp).sum(-1)
        label = logp.gather(-1, labels[..., None]).squeeze(-1)
        return (-(label + 0.3 * entropy) * mask).sum() / mask.sum()

    wanted = full_logits_gradients(tiny_model_dir, tiny_model_dir, data, loss)
    assert got.keys() == wanted.keys()
    for name in wanted:
        torch.testing.assert_close(got[name], wanted[name], rtol=0, atol=2e-5, msg=name)


@pytest.mark.slow
def test_the_readme_entropy_regularised_sft_trains_from_the_cli_and_logs_the_entropy(tiny_model_dir, tmp_path, monkeypatch, tiny_tokenizer):
    """One file of under 40 lines, as the README promises; its bonus holds the entropy above plain SFT's (weight 0)."""
    block = readme_block("class EntropySFT(Objective):")
    assert len(block.splitlines()) < 40
    readme_objective(tmp_path, monkeypatch, "entropy_sft", "class EntropySFT(Objective):")
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    entropies = {}
    for weight in (0.0, 5.0):
        objective = ("my_objectives.entropy_sft.EntropySFT", f"--model.objective.weight={weight}")
        _, logged = fit_from_cli(tiny_model_dir, path, tmp_path / str(weight), *objective, steps=4, lr=1e-2)
        assert len(logged) == 4 and all(math.isfinite(float(row["train/nll"])) for row in logged)
        entropies[weight] = [float(row["train/entropy"]) for row in logged]
        assert all(0 < h <= math.log(len(tiny_tokenizer)) for h in entropies[weight])
    assert entropies[0.0][0] == pytest.approx(entropies[5.0][0]), "the same model at the first step"
    assert entropies[5.0][-1] > entropies[0.0][-1] + 0.01
