"""A suite's task: a reasoning-gym task as it always was (the default suite's data, held-out items and verifier are
those it had), or a task of yours from a file with held-out rows and a scorer; what only a reasoning-gym task has (its
noise, its verifier, the arms that need them) is refused by name."""

import json

import pytest
from jsonargparse import ArgumentParser

from sft_research.bench import ExactMatch, LmEvalTask, NumericMatch, Suite, TaskSpec, Verifier
from sft_research.bench.heldout import HeldOutSet
from sft_research.cli.main import suite_file
from sft_research.data import DataError, FileDataset, ReasoningGymTask
from sft_research.errors import ConfigError
from tests.conftest import write_jsonl


def parser() -> ArgumentParser:
    parser = ArgumentParser()
    parser.add_class_arguments(Suite, "suite", sub_configs=True)
    return parser


def default_suite() -> Suite:
    return parser().instantiate(parser().parse_args(["--suite", suite_file("default")])).suite


def test_the_default_suites_task_is_the_reasoning_gym_task_it_was():
    """Its training source as the harness always wrote it, held-out items from the same generator call, the verifier."""
    suite = default_suite()
    expected = {"task": "chain_sum", "options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}}
    expected |= {"train_size": 144, "eval_size": 100, "seed": 0, "noise_fraction": 0.25}
    assert suite.task.source() == {
        "class_path": "sft_research.data.ReasoningGymTask",
        "init_args": {**expected, "preference_pairs": False, "drop_corrupted": False},
    }
    assert list(suite.task.source()["init_args"]) == [*expected, "preference_pairs", "drop_corrupted"], "the order it was written in"
    evaluated = suite.task.evaluation_set()
    direct = ReasoningGymTask(**expected)
    assert isinstance(evaluated, ReasoningGymTask) and evaluated.heldout_entries == direct.heldout_entries
    assert evaluated.train_answers == direct.train_answers
    task_score = suite.measures().probes[0]
    assert task_score.scorer == Verifier() and task_score.max_new_tokens == 8
    assert task_score.metrics[0].label == "task score (chain_sum, verifier)"


def test_left_out_reasoning_gym_settings_keep_their_defaults():
    task = TaskSpec()
    assert task.source()["init_args"] == {
        "task": "chain_sum",
        "options": None,
        "train_size": 240,
        "eval_size": 100,
        "seed": 0,
        "noise_fraction": 0.25,
        "preference_pairs": False,
        "drop_corrupted": False,
    }
    assert TaskSpec(noise_fraction=0.0, task="gcd").source()["init_args"]["noise_fraction"] == 0.0


@pytest.fixture
def own_task(tmp_path) -> TaskSpec:
    train = write_jsonl(tmp_path / "capitals.jsonl", [{"prompt": f"Capital {i}?", "completion": f"City {i}"} for i in range(6)])
    heldout = write_jsonl(
        tmp_path / "capitals_heldout.jsonl", [{"prompt": f"Capital {i}?", "completion": f"City {i}"} for i in range(6, 9)]
    )
    train_source = {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(train)}}
    return TaskSpec(train=train_source, heldout=FileDataset(str(heldout)), scorer=ExactMatch(ignore_case=True), max_new_tokens=6)


def test_a_task_of_yours_trains_on_its_source_and_scores_its_held_out_rows(own_task):
    assert own_task.source() == own_task.train and own_task.source() is not own_task.train
    evaluated = own_task.evaluation_set()
    assert isinstance(evaluated, HeldOutSet) and evaluated.eval_prompts() == ["Capital 6?", "Capital 7?", "Capital 8?"]
    assert own_task.task_score().metrics[0].label == "task score (capitals, exact match)"
    named = TaskSpec(name="capitals of the world", train=own_task.train, heldout=own_task.heldout, scorer=own_task.scorer, eval_size=2)
    assert named.task_score().metrics[0].label == "task score (capitals of the world, exact match)"
    assert named.evaluation_set().eval_prompts() == ["Capital 6?", "Capital 7?"], "eval_size: the first rows"


def test_a_suite_yaml_names_the_file_the_held_out_rows_and_the_scorer(own_task):
    config = {
        "arms": [
            {
                "class_path": "sft_research.bench.ObjectiveArm",
                "init_args": {"name": "sft", "objective": {"class_path": "sft_research.objectives.SFT"}},
            }
        ],
        "task": {
            "train": own_task.train,
            "heldout": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": own_task.heldout.path}},
            "scorer": {"class_path": "sft_research.bench.ExactMatch", "init_args": {"ignore_case": True}},
            "max_new_tokens": 6,
        },
    }
    parsed = parser().parse_object({"suite": config})
    suite = parser().instantiate(parsed).suite
    assert suite.task.scorer == ExactMatch(ignore_case=True) and suite.task.heldout.path == own_task.heldout.path
    assert suite.fit_config("sft", 0, {"class_path": "sft_research.objectives.SFT"})["data"]["train"] == own_task.train
    recorded = json.loads(parser().dump(parsed, format="json", skip_unset=False))["suite"]["task"]
    assert recorded["scorer"]["class_path"] == "sft_research.bench.ExactMatch"
    assert recorded["noise_fraction"] is None and recorded["train"] == own_task.train


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "noise_fraction",
            0.25,
            r"^task.noise_fraction corrupts a reasoning-gym task's answers, which its verifier tells wrong; task.train",
        ),
        ("task", "chain_sum", r"^task.task names a reasoning-gym task \(name a task of yours with task.name\)"),
        ("options", {"min_terms": 2}, r"^task.options are a reasoning-gym task's generator options"),
        ("train_size", 100, r"^task.train_size is the number of records a reasoning-gym task generates"),
        ("scorer", None, r"^task.scorer: a task of yours \(task.train\) needs a scorer"),
        ("heldout", None, r"^task.heldout: a task of yours \(task.train\) needs held-out rows"),
    ],
)
def test_what_only_a_reasoning_gym_task_has_is_refused_by_name(own_task, setting, value, message):
    with pytest.raises(ConfigError, match=message):
        TaskSpec(**{**vars(own_task), setting: value}).evaluation_set()


def test_an_lm_eval_scorer_brings_its_own_items_and_the_verifier_needs_a_reasoning_gym_task(own_task):
    lm_eval = TaskSpec(train=own_task.train, scorer=LmEvalTask(tasks=["toy"], metric="acc"))
    assert lm_eval.evaluation_set().eval_prompts() == []
    with pytest.raises(ConfigError, match=r"^task.scorer Verifier scores a reasoning-gym task's answers with its verifier"):
        TaskSpec(**{**vars(own_task), "scorer": Verifier()}).task_score().check(own_task.evaluation_set())
    with pytest.raises(ConfigError, match=r"^task.heldout: a reasoning-gym task holds out its own items"):
        TaskSpec(heldout=own_task.heldout).evaluation_set()


def test_another_scorer_on_a_reasoning_gym_task_reads_the_generators_answers():
    task = TaskSpec(options={"min_terms": 2, "max_terms": 2}, train_size=4, eval_size=3, scorer=NumericMatch())
    evaluated = task.evaluation_set()
    generated = ReasoningGymTask("chain_sum", {"min_terms": 2, "max_terms": 2}, 4, 3, 0, 0.25).heldout_entries
    assert evaluated.eval_prompts() == [entry["question"] for entry in generated]
    assert [NumericMatch().reference(record) for record in evaluated.records] == [float(entry["answer"]) for entry in generated]
    assert task.task_score().metrics[0].label == "task score (chain_sum, numeric match)"


def test_arms_that_need_the_verifier_are_refused_by_name_on_a_task_of_yours(own_task):
    from sft_research.bench import CleanDataArm, PoFTArm, SFTThenDPOArm

    suite = Suite([CleanDataArm("sft")], task=own_task, reference_arm="sft")
    for arm, message in (
        (CleanDataArm("clean"), r"^this arm trains on a reasoning-gym task's uncorrupted records"),
        (SFTThenDPOArm("dpo"), r"^this arm trains on a reasoning-gym task's preference pairs of a right answer over a wrong one"),
        (PoFTArm("poft"), r"^PoFTArm's baseline trains on clean demonstrations of a reasoning-gym task"),
    ):
        with pytest.raises(ConfigError, match=message):
            arm.stages(suite, seed=0)


def test_bad_held_out_rows_stop_before_any_model_loads(tmp_path, own_task):
    for rows, message in (
        ([{"prompt": "a", "completion": ["b"]}], r"row 1, field 'completion': must be a string, got list"),
        ([{"prompt": "a", "completion": "b"}, {"question": "c", "completion": "d"}], r"row 2, field 'prompt': is missing"),
    ):
        bad = write_jsonl(tmp_path / "bad.jsonl", rows)
        task = TaskSpec(**{**vars(own_task), "heldout": FileDataset(str(bad))})
        with pytest.raises(DataError, match=rf"^{bad}, {message}"):
            task.task_score().check(task.evaluation_set())


def test_the_evaluator_checks_the_scorer_before_the_base_model_loads(own_task, monkeypatch):
    """Settings that jsonargparse would otherwise meet while building the suite, inside its own traceback."""
    import torch

    import sft_research.bench.evaluate as evaluate
    from sft_research.bench import CallableScorer, ObjectiveArm

    monkeypatch.setattr(evaluate, "load_model", lambda *args: pytest.fail("the base model was loaded"))
    for scorer, message in (
        (CallableScorer("no_such_module.score"), r"^task.scorer function 'no_such_module.score': module 'no_such_module' cannot be"),
        (NumericMatch(extract="(\\d+"), r"^extract '\(\\\\d\+': neither one of \['after_answer', 'boxed', 'last_number'\]"),
    ):
        task = TaskSpec(**{**vars(own_task), "scorer": scorer})
        suite = Suite([ObjectiveArm("sft", {"class_path": "sft_research.objectives.SFT"})], base_model="embedded:tiny-random", task=task)
        with pytest.raises(ConfigError, match=message):
            evaluate.Evaluator(suite, torch.device("cpu"))
