"""Distillation: the generalized JSD against TRL's, the first step's gradient against autograd on full logits, and
the top-k mode, which compares the teacher's k most likely tokens and one bucket for the rest: a lower bound of the
whole distributions' divergence (merging tokens never raises an f-divergence), equal where the two tails are
proportional. The numbers are those the class docstring and the README quote."""

import pytest
import torch

from sft_research.checkpoints.tiny import build_tiny_checkpoint
from sft_research.errors import ConfigError
from sft_research.model.loading import ModelConfig
from sft_research.objectives import Distillation
from sft_research.objectives.distillation import generalized_jsd, with_rest
from sft_research.train.module import FineTuningModule
from tests.conftest import ROWS, write_jsonl
from tests.objectives.conftest import first_step, full_logits_gradients


def divergences(student_logits, teacher_logits, k, beta):
    """(top-k with a rest bucket, whole distribution)."""
    student, teacher = torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1)
    ids = teacher.topk(k).indices
    bucketed = generalized_jsd(with_rest(student.gather(-1, ids)), with_rest(teacher.gather(-1, ids)), beta)
    return bucketed, generalized_jsd(student, teacher, beta)


def test_the_top_k_jsd_is_a_lower_bound_of_the_whole_distributions():
    generator = torch.Generator().manual_seed(0)
    student, teacher = 2 * torch.randn(50, generator=generator), 2 * torch.randn(50, generator=generator)
    bucketed, full = divergences(student, teacher, k=5, beta=0.5)
    assert (round(float(bucketed), 3), round(float(full), 3)) == (0.327, 0.537)  # the docstring's and README's figures


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_the_bound_holds_for_every_beta_and_k(beta, k):
    generator = torch.Generator().manual_seed(k)
    student, teacher = 3 * torch.randn(200, 50, generator=generator), 3 * torch.randn(200, 50, generator=generator)
    bucketed, full = divergences(student, teacher, k, beta)
    assert bool((bucketed <= full + 1e-6).all()) and bool((bucketed < full - 1e-3).any())


def test_tails_of_the_same_shape_lose_nothing():
    """Where the policy's tail is the teacher's scaled (only the top-k tokens and the rest's total differ), the bucket
    hides nothing: the two are equal."""
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(50, generator=generator)
    student = teacher.clone()
    student[teacher.topk(5).indices] += torch.randn(5, generator=generator)
    bucketed, full = divergences(student, teacher, k=5, beta=0.5)
    torch.testing.assert_close(bucketed, full)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_is_trls_on_the_same_tensors(beta, temperature):
    from trl.experimental.gkd import GKDTrainer

    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(3, 7, 50, generator=g, dtype=torch.float64), torch.randn(3, 7, 50, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[0, :2] = labels[2, 5:] = -100
    expected = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta, temperature=temperature)
    ours = generalized_jsd(torch.log_softmax(student / temperature, -1), torch.log_softmax(teacher / temperature, -1), beta)
    mask = labels != -100
    torch.testing.assert_close((ours * mask).sum() / mask.sum(), expected, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_distillation_from_the_whole_distribution_and_from_the_top_k(tiny_model_dir, reference_model, tmp_path):
    """Whole distribution on every batch: the first step's gradient is autograd's on full logits (beta 0.5). Top k
    cached: the teacher's k tokens and the rest of the mass; with k the whole vocabulary it is the same loss."""
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    whole, data = first_step(tiny_model_dir, tiny_model_dir, path, Distillation(str(reference_model), beta=0.5), tmp_path / "whole")
    wanted = full_logits_gradients(
        tiny_model_dir, reference_model, data, lambda lp, ref, labels, mask: (generalized_jsd(lp, ref, 0.5) * mask).sum() / mask.sum()
    )
    for name in wanted:
        torch.testing.assert_close(whole[name], wanted[name], rtol=0, atol=2e-5, msg=name)
    vocabulary = len(data.tokenizer)
    top_k, _ = first_step(
        tiny_model_dir, tiny_model_dir, path, Distillation(str(reference_model), beta=0.5, top_k=vocabulary), tmp_path / "top_k"
    )
    for name in wanted:
        torch.testing.assert_close(top_k[name], wanted[name], rtol=0, atol=1e-4, msg=name)


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model_dir, tmp_path):
    other = build_tiny_checkpoint(tmp_path / "other", vocab_size=262)
    with pytest.raises(ConfigError, match=r"another tokenizer than the model being trained"):
        FineTuningModule(ModelConfig(str(tiny_model_dir)), Distillation(str(other)))
