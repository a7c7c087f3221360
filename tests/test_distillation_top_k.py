"""Distillation's top-k mode compares the teacher's k most likely tokens and one bucket for the rest: a lower bound of
the whole distributions' divergence (merging tokens never raises an f-divergence), equal where the two tails are
proportional. The numbers are those the class docstring and the README quote."""

import pytest
import torch

from sft_research.objectives.distillation import generalized_jsd, with_rest


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
