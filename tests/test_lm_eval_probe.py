"""The lm-eval probe end to end on the tiny random model and a local two-task set written here (no hub): one value per
item in a fixed order, the same values twice, paired changes, clear errors, and lm-eval imported only when measuring."""

import copy
import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser

from sft_research.bench.arms import ObjectiveArm
from sft_research.bench.heldout import HeldOutSet
from sft_research.bench.probes import Probe, ProbeContext, TaskScore
from sft_research.bench.probes.lm_eval import LmEvalProbe, _task_order
from sft_research.bench.scorers import LmEvalTask
from sft_research.checkpoints.names import load_tokenizer
from sft_research.errors import ConfigError

# The first four items offer one answer three times: tied log-likelihoods, where lm-eval's argmax takes the first
# choice, so their accuracy is known whatever the weights (1 where the label is 0). The rest are real choices.
RIGGED = [(1, 2, 0), (3, 4, 2), (5, 1, 0), (2, 2, 1)]
REAL = [(7, 1), (4, 4), (6, 2), (9, 3), (5, 5), (8, 1), (3, 3), (2, 7)]
ROWS = [{"question": f"{a} + {b} =", "choices": [str(a + b)] * 3, "label": label, "answer": str(a + b)} for a, b, label in RIGGED] + [
    {"question": f"{a} + {b} =", "choices": [str(a + b), str(a + b + 1), str(a + b - 2)], "label": 0, "answer": str(a + b)} for a, b in REAL
]
LIMIT = 10  # of the 12 items per task
COMMON = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
  cache_dir: {cache}
test_split: test
doc_to_text: "{{{{question}}}}"
"""
CHOICE = """task: toy_choice
output_type: multiple_choice
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
"""
ANSWER = """task: toy_answer
output_type: generate_until
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
"""
GROUP = """group: toy_all
task:
  - toy_choice
  - toy_answer
"""


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory) -> Path:
    """A multiple-choice task (acc) and a generative one (exact_match) on the same local JSON-lines items, and a group
    of both."""
    root = tmp_path_factory.mktemp("lm_eval")
    items = root / "items.jsonl"
    items.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    folder = root / "tasks"
    folder.mkdir()
    common = COMMON.format(items=items, cache=root / "datasets_cache")  # the test's own datasets cache, not the user's
    (folder / "toy_choice.yaml").write_text(CHOICE + common)
    (folder / "toy_answer.yaml").write_text(ANSWER + common)
    (folder / "toy_all.yaml").write_text(GROUP)
    return folder


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def context(model, tiny_model_dir) -> ProbeContext:
    return ProbeContext(base=model, tokenizer=load_tokenizer(str(tiny_model_dir)), chat_tokenizer=None, task=None, batch_size=4)


@pytest.fixture(scope="module")
def probe(task_folder) -> LmEvalProbe:
    # Only the local tasks indexed (include_defaults false): indexing lm-eval's thousands of YAMLs takes seconds.
    return LmEvalProbe(tasks=["toy_choice", "toy_answer"], include_path=str(task_folder), include_defaults=False, limit=LIMIT)


@pytest.fixture(scope="module")
def measured(probe, model, context) -> list[float]:
    return probe.measure(model, context)


def test_one_value_per_item_task_by_task_in_doc_order(measured, probe, model, context):
    """Items of the first task, then the second, each by doc_id (the rigged items' accuracies are where they belong);
    a group's tasks in name order."""
    assert len(measured) == 2 * LIMIT
    assert set(measured) <= {0.0, 1.0}
    assert measured[: len(RIGGED)] == [float(label == 0) for _, _, label in RIGGED]
    swapped = replace(probe, tasks=["toy_answer", "toy_choice"]).measure(model, context)
    assert swapped == measured[LIMIT:] + measured[:LIMIT]
    assert replace(probe, tasks=["toy_all"]).measure(model, context) == swapped


def test_the_same_model_measures_the_same_and_compares_to_zero(measured, probe, model, context):
    """And lm-eval's reseeding of the global generators does not leak into the run that measures."""
    python, generator = random.getstate(), torch.get_rng_state()
    again = probe.measure(model, context)
    assert random.getstate() == python and torch.equal(torch.get_rng_state(), generator)
    assert again == measured
    changes = probe.compare(again, measured)
    assert list(changes) == [metric.name for metric in probe.metrics]
    assert changes == {"lm_eval_accuracy_change": [0.0] * len(measured), "lm_eval_flip_rate": [0.0] * len(measured)}


def test_compare_is_the_change_and_the_flips_from_right_to_wrong():
    assert LmEvalProbe(tasks=["arc_easy"]).compare([1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]) == {
        "lm_eval_accuracy_change": [0.0, -1.0, 1.0, 0.0],
        "lm_eval_flip_rate": [0.0, 1.0, 0.0, 0.0],
    }


def test_a_changed_model_changes_the_real_items_only(measured, probe, model, context):
    changed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator))
    values = probe.measure(changed, context)
    assert values[: len(RIGGED)] == measured[: len(RIGGED)]
    assert values[:LIMIT] != measured[:LIMIT]
    assert probe.compare(values, measured)["lm_eval_accuracy_change"] == [v - m for v, m in zip(values, measured)]


@pytest.mark.slow
def test_an_unknown_task_or_a_missing_folder_is_one_clear_line(task_folder, probe, model, context):
    with pytest.raises(ConfigError, match=r"^LmEvalProbe: tasks: 'arc_eazy' is not an lm-eval task; did you mean \['arc_easy'"):
        LmEvalProbe(tasks=["arc_eazy"]).measure(model, context)
    with pytest.raises(ConfigError, match=r"^LmEvalProbe: tasks: 'toy_choise' is not a task in include_path .*'toy_choice'"):
        replace(probe, tasks=["toy_choise"]).measure(model, context)
    with pytest.raises(ConfigError, match=r"^LmEvalProbe: include_path '/no/such/tasks' is not a folder"):
        LmEvalProbe(tasks=["toy_choice"], include_path="/no/such/tasks").measure(model, context)
    with pytest.raises(ConfigError, match=r"^LmEvalProbe: metric 'acc_norm' is not one of task 'toy_choice'"):
        replace(probe, tasks=["toy_choice"], limit=1, metric="acc_norm").measure(model, context)


def test_a_suite_lists_it_by_class_path(task_folder):
    parser = ArgumentParser()
    parser.add_argument("--probe", type=Probe)
    config = {
        "class_path": "sft_research.bench.probes.lm_eval.LmEvalProbe",
        "init_args": {"tasks": ["toy_choice"], "include_path": str(task_folder), "limit": 3},
    }
    probe = parser.instantiate_classes(parser.parse_object({"probe": config})).probe
    assert probe == LmEvalProbe(tasks=["toy_choice"], include_path=str(task_folder), limit=3)


def test_groups_expand_in_name_order_after_the_tasks_named():
    samples = dict.fromkeys(["arc_easy", "mmlu_b", "mmlu_a", "tagged"])
    assert _task_order(["mmlu", "arc_easy"], samples, {"mmlu": ["mmlu_b", "mmlu_a"]}) == ["mmlu_a", "mmlu_b", "arc_easy", "tagged"]


@pytest.mark.slow
def test_importing_the_harness_or_building_the_probe_leaves_lm_eval_unimported():
    """A subprocess: lm-eval is already imported here by the tests above."""
    code = (
        "import sys, sft_research.bench\n"
        "from sft_research.bench.probes.lm_eval import LmEvalProbe\n"
        "LmEvalProbe(tasks=['arc_easy'], limit=2)\n"
        "assert 'lm_eval' not in sys.modules, sorted(m for m in sys.modules if m.startswith('lm_eval'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_an_lm_eval_task_is_a_task_score_of_the_metric_named(task_folder, measured, model, context):
    """Its items are the lm-eval task's own: the multiple-choice task's accuracies, the rigged ones known."""
    scorer = LmEvalTask(tasks=["toy_choice"], metric="acc", include_path=str(task_folder), include_defaults=False, limit=LIMIT)
    task_score = TaskScore(scorer=scorer, task="toy")
    task_score.check(HeldOutSet("task.heldout", []))
    values = task_score.measure(model, context)
    assert values == measured[:LIMIT] and values[: len(RIGGED)] == [1.0, 0.0, 1.0, 0.0]
    assert [metric.label for metric in task_score.metrics] == ["task score (toy, lm-eval acc)"]
    with pytest.raises(ConfigError, match=r"^LmEvalProbe 'task.scorer': metric 'exact_match' is not one of task 'toy_choice'"):
        replace(task_score, scorer=replace(scorer, metric="exact_match", limit=1)).measure(model, context)


def test_two_lm_eval_probes_sit_in_one_suite_under_their_names(task_folder):
    """A standard benchmark and a task of yours: the default name keeps its keys, the other has its own."""
    from sft_research.bench.suite import Suite

    local = {"include_path": str(task_folder), "include_defaults": False, "limit": 3}
    parser = ArgumentParser()
    parser.add_class_arguments(Suite, "suite", sub_configs=True)
    arm = {
        "class_path": "sft_research.bench.ObjectiveArm",
        "init_args": {"name": "sft", "objective": {"class_path": "sft_research.objectives.SFT"}},
    }
    probes = [
        {"class_path": "sft_research.bench.LmEvalProbe", "init_args": {"tasks": ["toy_choice"], **local}},
        {"class_path": "sft_research.bench.LmEvalProbe", "init_args": {"name": "mine", "tasks": ["toy_answer"], **local}},
    ]
    suite = parser.instantiate(parser.parse_object({"suite": {"arms": [arm], "probes": probes}})).suite
    measures = suite.measures()
    assert [p.name for p in suite.probes] == ["lm_eval", "mine"]
    assert measures.names == ["task_score", "lm_eval_accuracy_change", "lm_eval_flip_rate", "mine_accuracy_change", "mine_flip_rate"]
    assert [m.label for m in measures.columns][1:] == [
        "lm-eval accuracy",
        "Δ lm-eval accuracy",
        "lm-eval flip rate (1→0)",
        "mine accuracy",
        "Δ mine accuracy",
        "mine flip rate (1→0)",
    ]
    assert measures.item_values(
        {"task": [1.0], "lm_eval": [1.0, 0.0], "mine": [0.0, 0.0]}, {"task": [0.0], "lm_eval": [1.0, 1.0], "mine": [1.0, 0.0]}
    ) == {
        "task_score": [1.0],
        "lm_eval_accuracy_change": [0.0, -1.0],
        "lm_eval_flip_rate": [0.0, 1.0],
        "mine_accuracy_change": [-1.0, 0.0],
        "mine_flip_rate": [1.0, 0.0],
    }
    with pytest.raises(ValueError, match="unique probe names"):
        Suite(
            [ObjectiveArm("sft", {"class_path": "sft_research.objectives.SFT"})],
            probes=[LmEvalProbe(tasks=["a"]), LmEvalProbe(tasks=["b"])],
        )


HUB_TASK = """task: toy_hub
dataset_path: nobody/no_such_dataset
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
"""


def test_a_hub_task_out_of_reach_stops_in_one_line_before_the_base_model_loads(tmp_path, monkeypatch):
    """Offline (this module's fixture), a task whose data set is on the hub and not in the cache."""
    import sft_research.bench.evaluate as evaluate
    from sft_research.bench import Suite, TaskSpec

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "toy_hub.yaml").write_text(HUB_TASK)
    probe = LmEvalProbe(tasks=["toy_hub"], include_path=str(folder), include_defaults=False, name="hub")
    expected = (
        r"^LmEvalProbe 'hub': the data of tasks \['toy_hub'\] could not be read \(the hub cannot be reached from here and it is "
        r"not in the local cache; "
    )
    with pytest.raises(ConfigError, match=expected) as caught:
        probe.check(None)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(evaluate, "load_model", lambda *args: pytest.fail("the base model was loaded"))
    suite = Suite(
        [ObjectiveArm("sft", {"class_path": "sft_research.objectives.SFT"})],
        base_model="embedded:tiny-random",
        task=TaskSpec(train_size=4, eval_size=2),
        probes=[probe],
    )
    with pytest.raises(ConfigError, match=expected):
        evaluate.Evaluator(suite, torch.device("cpu"))
