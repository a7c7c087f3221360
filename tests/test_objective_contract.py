"""The contract every objective keeps, checked on every subclass of Objective the package ships (a new one is covered
as soon as it is imported): micro-batches with the whole batch's counts add up to the whole batch's loss and gradient,
the loss stays finite where sequences are short or log-probs extreme, and diagnostics are detached ``[B]`` tensors."""

import pytest
import torch

import sft_research.objectives as objectives
from sft_research.frozen import BaselineScores, FullDistribution, ReferenceLogprobs, TopKDistribution
from sft_research.model.output_layer import output_layer
from sft_research.objectives.base import Objective, ObjectiveInputs, run_objective

VOCAB, HIDDEN = 11, 5
# Constructor arguments of objectives that have required ones.
ARGUMENTS = {objectives.PoFT: {"baselines": ["a baseline"]}}


def subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


SHIPPED = sorted({cls for cls in subclasses(Objective) if cls.__module__.startswith("sft_research.")}, key=lambda c: c.__name__)
VARIANTS = [
    *[(cls, {}) for cls in SHIPPED],
    (objectives.Distillation, {"top_k": 3}),
    (objectives.Distillation, {"beta": 0.0}),
    (objectives.SFTWithKL, {"direction": "forward"}),
    (objectives.IwSFT, {"token_level": True, "normalize": "sequences"}),
    (objectives.DPO, {"loss_type": "ipo"}),
]


def test_every_shipped_objective_is_checked():
    names = {cls.__name__ for cls in SHIPPED}
    assert names >= {"SFT", "IwSFT", "PoFT", "DPO", "IRFT", "DFT", "Distillation", "SFTWithKL"}
    assert names == {
        name
        for name in objectives.__all__
        if isinstance(getattr(objectives, name), type) and issubclass(getattr(objectives, name), Objective)
    } - {"Objective"}


def frozen_value(frozen, b: int, s: int, t: int, g: torch.Generator):
    """What a frozen input would give a batch, drawn at random in its shape."""
    if isinstance(frozen, ReferenceLogprobs):
        return -torch.rand(b, s, t, generator=g, dtype=torch.float64) * 3
    if isinstance(frozen, BaselineScores):
        return -torch.rand(b, generator=g, dtype=torch.float64) * 3
    if isinstance(frozen, TopKDistribution):
        logps = torch.log_softmax(torch.randn(b, s, t, VOCAB, generator=g, dtype=torch.float64), -1).topk(frozen.k, dim=-1)
        return {"ids": logps.indices, "logps": logps.values}
    if isinstance(frozen, FullDistribution):
        frozen.head = (torch.nn.Linear(HIDDEN, VOCAB, bias=False).double(),)
        return {"hidden": torch.randn(b, s, t, HIDDEN, generator=g, dtype=torch.float64)}
    raise AssertionError(f"the contract test cannot make a {type(frozen).__name__}: teach frozen_value its shape")


def inputs_for(objective: Objective, hidden, weight, labels, mask, frozen, quality) -> ObjectiveInputs:
    """The objective's inputs from a random output layer: label log-probs and its position outputs, with gradients."""
    b, s, t, _ = hidden.shape
    reads = {}
    for output in objective.position_outputs:
        for read in output.reads:
            name, _, tensor = read.partition(".")
            value = frozen[name][tensor] if tensor else frozen[name]
            reads[read] = value.reshape(b * s * t, *value.shape[3:])
    from sft_research.model.output_layer import LabelLogprobs

    values = output_layer(
        hidden.reshape(-1, HIDDEN), weight, labels.reshape(-1), (LabelLogprobs(), *objective.position_outputs), reads, chunk_size=4
    )
    values = {name: value.reshape(b, s, t, *value.shape[1:]) for name, value in values.items()}
    return ObjectiveInputs(values.pop("logps"), mask, quality, frozen, values)


def batch(objective: Objective, seed: int, b: int = 6, t: int = 5, extreme: bool = False):
    g = torch.Generator().manual_seed(seed)
    s = objective.sequences_per_example
    hidden = torch.randn(b, s, t, HIDDEN, generator=g, dtype=torch.float64) * (30 if extreme else 1)
    labels = torch.randint(0, VOCAB, (b, s, t), generator=g)
    mask = torch.rand(b, s, t, generator=g) > 0.4
    mask[..., 0] = True
    mask[0, :, 1:] = False  # a one-token completion
    frozen = {f.name: frozen_value(f, b, s, t, g) for f in objective.frozen_inputs}
    quality = torch.rand(b, generator=g, dtype=torch.float64) * 2
    return hidden, labels, mask, frozen, quality


def sliced(frozen: dict, rows: slice) -> dict:
    return {name: {k: v[rows] for k, v in value.items()} if isinstance(value, dict) else value[rows] for name, value in frozen.items()}


@pytest.mark.parametrize("cls,arguments", VARIANTS, ids=lambda v: v.__name__ if isinstance(v, type) else str(v or ""))
@pytest.mark.parametrize("split", [1, 4])
def test_micro_batches_add_up_to_the_batch(cls, arguments, split):
    objective = cls(**{**ARGUMENTS.get(cls, {}), **arguments})
    hidden, labels, mask, frozen, quality = batch(objective, seed=split)
    weight = torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(9), dtype=torch.float64, requires_grad=True)
    num_tokens, num_examples = mask.sum(), float(hidden.shape[0])
    whole = run_objective(objective, inputs_for(objective, hidden, weight, labels, mask, frozen, quality), num_tokens, num_examples).loss
    (whole_grad,) = torch.autograd.grad(whole, weight)
    parts = 0.0
    for first in range(0, hidden.shape[0], split):
        rows = slice(first, first + split)
        part = inputs_for(objective, hidden[rows], weight, labels[rows], mask[rows], sliced(frozen, rows), quality[rows])
        parts = parts + run_objective(objective, part, num_tokens, num_examples).loss
    (parts_grad,) = torch.autograd.grad(parts, weight)
    # The output layer normalises in float32: the sums agree to its rounding.
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts_grad, whole_grad, rtol=1e-5, atol=1e-6)
    assert whole_grad.abs().sum() > 0, "the loss reaches the policy"


@pytest.mark.parametrize("cls,arguments", VARIANTS, ids=lambda v: v.__name__ if isinstance(v, type) else str(v or ""))
def test_the_loss_is_finite_and_diagnostics_are_per_example(cls, arguments):
    objective = cls(**{**ARGUMENTS.get(cls, {}), **arguments})
    for extreme in (False, True):
        hidden, labels, mask, frozen, quality = batch(objective, seed=3, extreme=extreme)
        weight = torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
        output = run_objective(objective, inputs_for(objective, hidden, weight, labels, mask, frozen, quality), mask.sum(), hidden.shape[0])
        assert output.loss.dim() == 0 and torch.isfinite(output.loss), f"extreme={extreme}"
        (grad,) = torch.autograd.grad(output.loss, weight)
        assert torch.isfinite(grad).all(), f"extreme={extreme}"
        assert output.diagnostics, "an objective logs something of its own"
        for name, value in output.diagnostics.items():
            assert value.shape == (hidden.shape[0],) and not value.requires_grad and torch.isfinite(value).all(), name
