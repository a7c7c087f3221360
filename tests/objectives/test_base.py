"""The interface every objective shares: the module's reductions by hand, the nll diagnostic it computes for the
objectives that ask for it, and records of the kind an objective declares (micro-batches and processes:
``test_contract.py``)."""

import math

import pytest
import torch

from sft_research.objectives import DPO, SFT, ObjectiveInputs, dft_token_losses, iw_sft_token_losses, reduce_losses, sft_token_losses
from sft_research.objectives.base import Objective, ObjectiveOutput, run_objective
from tests.conftest import PAIR_ROWS, SFT_ROWS, write_jsonl
from tests.objectives.conftest import fit_from_cli


def test_per_sequence_normalisation_by_hand():
    """Two answers of 1 and 3 tokens: the token-mean weighs the long one 3:1, the sequence-mean 1:1 (the official
    iw-SFT run's one sequence per GPU); micro-batches with the whole batch's counts add up to either."""
    logps = torch.tensor([[-1.0, 0.0, 0.0], [-2.0, -3.0, -4.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    nll = sft_token_losses(logps, mask)
    assert reduce_losses(nll, "tokens", mask).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert reduce_losses(nll, "sequences", mask).item() == pytest.approx((1 / 1 + (2 + 3 + 4) / 3) / 2)
    quality = torch.tensor([2.0, 0.5], dtype=torch.float64)
    assert reduce_losses(sft_token_losses(logps, mask, quality), "sequences", mask).item() == pytest.approx((2 * 1 + 0.5 * 3) / 2)
    ref = logps.detach() + torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    losses, weights = iw_sft_token_losses(logps, ref, mask)
    w = [math.exp(-0.5), 1.0]
    assert weights.tolist() == pytest.approx(w)
    assert reduce_losses(losses, "sequences", mask).item() == pytest.approx((w[0] * 1 + w[1] * 3) / 2)
    p = [math.exp(-1), math.exp(-2), math.exp(-3), math.exp(-4)]
    dft = reduce_losses(dft_token_losses(logps, mask), "sequences", mask)
    assert dft.item() == pytest.approx((p[0] * 1 + (p[1] * 2 + p[2] * 3 + p[3] * 4) / 3) / 2)
    halves = sum(reduce_losses(nll[i : i + 1], "sequences", mask[i : i + 1], num_examples=2) for i in range(2))
    assert halves.item() == pytest.approx(reduce_losses(nll, "sequences", mask).item())
    (grad,) = torch.autograd.grad(reduce_losses(nll, "sequences", mask), logps)
    torch.testing.assert_close(grad, torch.tensor([[-0.5, 0, 0], [-1 / 6, -1 / 6, -1 / 6]], dtype=torch.float64))


def test_each_reduction_divides_by_the_whole_batchs_counts():
    losses = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert reduce_losses(losses, "tokens", mask).item() == 6 / 3
    assert reduce_losses(losses, "tokens", mask, num_tokens=12).item() == 6 / 12
    assert reduce_losses(losses, "sequences", mask).item() == (3 / 2 + 3 / 1) / 2
    assert reduce_losses(losses, "sequences", mask, num_examples=5).item() == (3 / 2 + 3 / 1) / 5
    per_example = torch.tensor([0.5, 1.5], dtype=torch.float64)
    assert reduce_losses(per_example, "examples").item() == 1.0
    assert reduce_losses(per_example, "examples", num_examples=4).item() == 0.5
    with pytest.raises(ValueError, match=r"'tokens' reduces \[B, T\] per-token losses with their mask; got losses of shape \(2,\)"):
        reduce_losses(per_example, "tokens", mask)


class Penalised(Objective):
    """Token losses of 1 with a penalty of 2 per token at weight 0.25, and the nll the module computes."""

    logs_nll = True

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        mask = inputs.mask[:, 0].double()
        return ObjectiveOutput(mask, "sequences", {"own": inputs.quality}, penalties=((0.25, 2 * mask),))


def test_the_module_reduces_penalties_apart_and_adds_the_nll_the_objective_asks_for():
    logps = torch.tensor([[[-1.0, -3.0, -7.0]], [[-2.0, -5.0, -5.0]]], dtype=torch.float64)
    mask = torch.tensor([[[True, True, False]], [[False, True, True]]])
    output = run_objective(Penalised(), ObjectiveInputs(logps, mask, torch.tensor([0.5, 1.0])), num_tokens=4, num_examples=4)
    assert output.loss.item() == (1 + 1) / 4 + 0.25 * (2 + 2) / 4  # each sequence's mean, over the batch's 4 examples
    assert list(output.diagnostics) == ["nll", "own"]
    torch.testing.assert_close(output.diagnostics["nll"], torch.tensor([2.0, 5.0], dtype=torch.float64))
    assert not output.diagnostics["nll"].requires_grad


def test_dpo_logs_trls_summed_completion_logps_and_no_nll():
    logps = torch.tensor([[[-1.0, -2.0, -3.0], [-0.5, -0.5, -4.0]]])  # one pair: chosen, rejected
    mask = torch.tensor([[[True, True, False], [True, False, True]]])
    inputs = ObjectiveInputs(logps, mask, torch.ones(1), {"ref_logps": torch.zeros_like(logps)})
    diagnostics = run_objective(DPO(), inputs, mask.sum(), 1).diagnostics
    assert diagnostics["logps/chosen"].tolist() == [-3.0] and diagnostics["logps/rejected"].tolist() == [-4.5]
    assert "nll" not in diagnostics and not DPO.logs_nll and SFT.logs_nll


@pytest.mark.parametrize(
    "objective,rows,message",
    [
        ("sft_research.objectives.SFT", PAIR_ROWS, "SFT trains on SFT or text records, but this source holds preference records"),
        ("sft_research.objectives.DPO", SFT_ROWS, "DPO trains on preference records .*, but this source holds SFT records"),
    ],
)
def test_records_of_the_wrong_kind_fail_before_any_model_loads(tiny_model_dir, tmp_path, monkeypatch, objective, rows, message):
    from sft_research.data import DataError
    from sft_research.train import module

    path = write_jsonl(tmp_path / "d.jsonl", rows)
    monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("a model was loaded before the check"))
    with pytest.raises(DataError, match=f"{path}: {message}"):
        fit_from_cli(tiny_model_dir, path, tmp_path, objective)


def test_a_file_that_mixes_record_kinds_is_rejected_at_its_first_other_row(tiny_model_dir, tmp_path):
    from sft_research.data import DataError

    sft = [{"prompt": r["prompt"], "completion": r["completion"]} for r in SFT_ROWS]
    path = write_jsonl(tmp_path / "d.jsonl", sft[:3] + PAIR_ROWS[:1] + sft[3:])
    with pytest.raises(
        DataError, match=r"d.jsonl, row 4: mixes record kinds: the first row holds SFT records .*, this one preference records"
    ):
        fit_from_cli(tiny_model_dir, path, tmp_path, "sft_research.objectives.SFT")
