import pytest
import torch

from sft_research.data import ReasoningGymTask
from sft_research.train.task_accuracy import TaskAccuracy

OPTIONS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def test_splits_are_fixed_by_the_seed_and_disjoint():
    a = ReasoningGymTask("chain_sum", OPTIONS, train_size=50, eval_size=20, seed=3)
    b = ReasoningGymTask("chain_sum", OPTIONS, train_size=50, eval_size=20, seed=3)
    c = ReasoningGymTask("chain_sum", OPTIONS, train_size=50, eval_size=20, seed=4)
    assert [r.fields for r in a.records()] == [r.fields for r in b.records()]
    assert a.eval_prompts() == b.eval_prompts() != c.eval_prompts()
    assert not set(a.eval_prompts()) & {r.fields["prompt"] for r in a.records()}
    assert len(a.eval_prompts()) == 20


@pytest.mark.parametrize("noise", [0.0, 0.25, 1.0])
def test_noise_corrupts_exactly_that_fraction_and_quality_records_the_verifier(noise):
    task = ReasoningGymTask("chain_sum", OPTIONS, train_size=40, eval_size=5, seed=0, noise_fraction=noise)
    records = task.records()
    true_answers = [entry["answer"] for entry in task.train_entries]
    wrong = [r.fields["completion"] != answer for r, answer in zip(records, true_answers)]
    assert sum(wrong) == round(noise * 40)
    scores = [task._generator.score_answer(r.fields["completion"], e) for r, e in zip(records, task.train_entries)]
    assert [r.fields["quality"] for r in records] == scores
    assert all((score < 1.0) == w for score, w in zip(scores, wrong))
    assert [r.row for r in records] == list(range(1, 41))


def test_score_reads_the_first_line_of_a_generation():
    task = ReasoningGymTask("chain_sum", OPTIONS, train_size=5, eval_size=5, seed=0)
    answer = task.heldout_entries[0]["answer"]
    assert task.score(0, f" {answer}\nmore text") == 1.0
    assert task.score(0, f"{int(answer) + 1}") == 0.0
    assert task.score(0, "") == 0.0
    assert task.score(0, f"The answer is {answer}.") == 1.0
    assert task.score(0, f"The answer is {int(answer) + 1}.") == 0.0


def test_task_accuracy_counts_full_scores_over_batches():
    metric = TaskAccuracy()
    metric.update(torch.tensor([1.0, 0.0, 1.0]))
    metric.update(torch.tensor([0.75]))  # partial credit is not a right answer
    assert metric.compute().item() == pytest.approx(2 / 4)


def test_preference_pairs_put_the_right_answer_over_a_wrong_one():
    task = ReasoningGymTask("chain_sum", OPTIONS, train_size=30, eval_size=5, seed=1, preference_pairs=True)
    for record, entry in zip(task.records(), task.train_entries):
        assert record.fields["chosen"] == entry["answer"]
        assert task._generator.score_answer(record.fields["rejected"], entry) < 1.0


def test_drop_corrupted_keeps_exactly_the_clean_records_of_the_noisy_set(caplog):
    noisy = ReasoningGymTask("chain_sum", train_size=40, eval_size=10, seed=3, noise_fraction=0.25).records()
    with caplog.at_level("INFO"):
        clean = ReasoningGymTask("chain_sum", train_size=40, eval_size=10, seed=3, noise_fraction=0.25, drop_corrupted=True).records()
    assert [(r.row, r.fields) for r in clean] == [(r.row, r.fields) for r in noisy if r.fields["quality"] == 1.0]
    assert len(clean) == 30 and all(r.fields["quality"] == 1.0 for r in clean)
    assert "drop_corrupted left out 10 corrupted of 40 training records" in caplog.text
