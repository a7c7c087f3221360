"""The contract every objective keeps, checked on every subclass of Objective the package ships (a new one is covered
as soon as it is imported): reduced by the module with the whole batch's counts, micro-batches of 1 and 2 add up to
the whole batch's loss and gradient, and 2 data-parallel processes give the 1-process gradient; the loss stays finite
where sequences are short or log-probs extreme, and diagnostics are detached ``[B]`` tensors."""

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

import sft_research.objectives as objectives
from sft_research.frozen import BaselineScores, FullDistribution, ReferenceLogprobs, TopKDistribution
from sft_research.model.output_layer import LabelLogprobs, output_layer
from sft_research.objectives.base import Objective, ObjectiveInputs, run_objective
from sft_research.train.module import FineTuningModule

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
        head = torch.nn.Linear(HIDDEN, VOCAB, bias=False).double()
        head.weight.data = torch.randn(VOCAB, HIDDEN, generator=g, dtype=torch.float64)  # the same in every process
        frozen.head = (head,)
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


def weight_of_the_output_layer() -> torch.Tensor:
    return torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(9), dtype=torch.float64, requires_grad=True)


def loss_and_gradient(objective: Objective, rows: slice, split: int | None, num_tokens, num_examples, seed: int):
    """The summed loss of the batch's ``rows`` run ``split`` examples at a time (None: at once) with the given counts,
    and its gradient on the output layer's weight."""
    hidden, labels, mask, frozen, quality = batch(objective, seed)
    hidden, labels, mask, frozen, quality = hidden[rows], labels[rows], mask[rows], sliced(frozen, rows), quality[rows]
    weight = weight_of_the_output_layer()
    loss = 0.0
    for first in range(0, hidden.shape[0], split or hidden.shape[0]):
        micro = slice(first, first + (split or hidden.shape[0]))
        inputs = inputs_for(objective, hidden[micro], weight, labels[micro], mask[micro], sliced(frozen, micro), quality[micro])
        loss = loss + run_objective(objective, inputs, num_tokens, num_examples).loss
    (gradient,) = torch.autograd.grad(loss, weight)
    return loss, gradient


def whole_batch(objective: Objective, seed: int):
    mask = batch(objective, seed)[2]
    return loss_and_gradient(objective, slice(None), None, mask.sum(), float(mask.shape[0]), seed)


def made(cls, arguments) -> Objective:
    return cls(**{**ARGUMENTS.get(cls, {}), **arguments})


@pytest.mark.parametrize("cls,arguments", VARIANTS, ids=lambda v: v.__name__ if isinstance(v, type) else str(v or ""))
@pytest.mark.parametrize("split", [1, 2, 4])
def test_micro_batches_add_up_to_the_batch(cls, arguments, split):
    objective = made(cls, arguments)
    whole, whole_grad = whole_batch(objective, seed=split)
    mask = batch(objective, seed=split)[2]
    parts, parts_grad = loss_and_gradient(objective, slice(None), split, mask.sum(), float(mask.shape[0]), seed=split)
    # The output layer normalises in float32: the sums agree to its rounding.
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts_grad, whole_grad, rtol=1e-5, atol=1e-6)
    assert whole_grad.abs().sum() > 0, "the loss reaches the policy"


def process_gradients(rank: int, world: int, init: str, out: str) -> None:
    """One of ``world`` gloo processes: its share of each variant's batch in micro-batches of 1, counted by the
    module's own ``global_counts``, and the gradient averaged over the processes as DDP averages it."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        strategy = SimpleNamespace(reduce=lambda tensor, reduce_op: (dist.all_reduce(tensor), tensor)[1])  # DDPStrategy's sum
        host = SimpleNamespace(trainer=SimpleNamespace(world_size=world, strategy=strategy), device=torch.device("cpu"))
        gradients = []
        for seed, (cls, arguments) in enumerate(VARIANTS):
            objective = made(cls, arguments)
            mask = batch(objective, seed)[2]
            share = slice(rank * len(mask) // world, (rank + 1) * len(mask) // world)
            num_tokens, num_examples = FineTuningModule.global_counts(host, {"loss_mask": mask[share], "lengths": [0] * len(mask[share])})
            _, gradient = loss_and_gradient(objective, share, 1, num_tokens, num_examples, seed)
            dist.all_reduce(gradient)
            gradients.append(gradient / world)
        if rank == 0:
            torch.save(gradients, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes, each importing torch and the package
def test_two_processes_give_the_one_process_gradient(tmp_path):
    torch.multiprocessing.spawn(process_gradients, args=(2, str(tmp_path / "init"), str(tmp_path / "gradients.pt")), nprocs=2)
    gradients = torch.load(tmp_path / "gradients.pt")
    assert len(gradients) == len(VARIANTS)
    for seed, ((cls, arguments), gradient) in enumerate(zip(VARIANTS, gradients)):
        _, expected = whole_batch(made(cls, arguments), seed)
        torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-6, msg=f"{cls.__name__} {arguments}")


@pytest.mark.parametrize("cls,arguments", VARIANTS, ids=lambda v: v.__name__ if isinstance(v, type) else str(v or ""))
def test_the_loss_is_finite_and_diagnostics_are_per_example(cls, arguments):
    objective = made(cls, arguments)
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
