"""The suites shipped with the package: each parses into a Suite, a sweep's every point too, a name finds them from
any folder, and a built wheel carries them."""

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from sft_research.bench import ObjectiveArm, Suite
from sft_research.bench.overrides import deep_merge
from sft_research.bench.probes import Metric, Probe, ProbeContext
from sft_research.bench.sweep import grid, point_config
from sft_research.cli.main import SUITES, suite_file
from sft_research.data.collate import collate_prompts
from sft_research.errors import ConfigError
from sft_research.model.generation import GenerationConfig, generate

SHIPPED = ["default", "gpu", "mitigation", "noise_sweep", "smoke"]


def parser() -> ArgumentParser:
    parser = ArgumentParser()
    parser.add_class_arguments(Suite, "suite", sub_configs=True)
    return parser


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_suite_parses_at_every_sweep_point(name):
    config = parser().parse_args(["--suite", suite_file(name)])
    suite = parser().instantiate(config).suite
    assert suite.arms and suite.measures().names[0] == "task_score"
    for point in grid(suite.sweep) if suite.sweep else []:
        plain = json.loads(parser().dump(config, format="json", skip_unset=False))["suite"]
        sub = parser().instantiate(parser().parse_object({"suite": point_config(plain, point)})).suite
        assert sub.sweep is None and sub.task.noise_fraction == point["task.noise_fraction"]


def test_a_name_finds_a_shipped_suite_and_a_wrong_one_lists_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sorted(p.stem for p in SUITES.glob("*.yaml")) == SHIPPED
    assert suite_file("smoke") == str(SUITES / "smoke.yaml")
    assert suite_file("my/suite.yaml") == "my/suite.yaml" and suite_file("mine.yaml") == "mine.yaml"
    with pytest.raises(
        ConfigError, match="--suite smok: neither a file nor a shipped suite \\(shipped: default, gpu, mitigation, noise_sweep, smoke\\)"
    ):
        suite_file("smok")


def test_a_built_wheel_carries_the_suites_and_the_rehearsal_stand_ins(tmp_path):
    """Built from a copy, so that the build leaves nothing in the checkout."""
    root, source = Path(__file__).parents[1], tmp_path / "source"
    shutil.copytree(root / "sft_research", source / "sft_research", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sft_research-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("sft_research/bench/suites/")) == [
        f"sft_research/bench/suites/{s}.yaml" for s in SHIPPED
    ]
    rehearsal = root / "sft_research" / "rehearsal"
    shipped = {str(p.relative_to(root)) for p in rehearsal.rglob("*") if p.is_file() and p.suffix in (".yaml", ".md", ".jsonl")}
    assert shipped and shipped <= set(names), "the stand-in models and dataset fixtures ship with the package"


@dataclass
class LengthProbe(Probe):
    """A researcher's own probe: the length in words of the model's greedy answers to the first task prompts."""

    prompts: int = 8

    name = "answer_length"
    metrics = (Metric("answer_length_change", "answer length change", higher_is_better=False),)

    def measure(self, model, context: ProbeContext) -> list[float]:
        prompts = context.task.eval_prompts()[: self.prompts]
        batch = collate_prompts([(i, context.chat_tokenizer.prompt_ids(p)) for i, p in enumerate(prompts)], context.tokenizer.pad_token_id)
        texts = generate(model, context.tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], GenerationConfig(16))
        return [float(len(text.split())) for text in texts]

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {"answer_length_change": [f - b for f, b in zip(finetuned, base)]}


def test_a_new_probe_is_one_class_listed_in_the_suite():
    """A probe defined outside the package, listed by class path, gets its metric into the summary, the paired
    comparison and the curves without an edit elsewhere."""
    from sft_research.bench.report import compare_to_reference, paired_markdown, summarize, summary_markdown

    config = parser().parse_object(
        {
            "suite": {
                "arms": [
                    {
                        "class_path": "sft_research.bench.ObjectiveArm",
                        "init_args": {"name": "sft", "objective": {"class_path": "sft_research.objectives.SFT"}},
                    }
                ],
                "probes": [{"class_path": "tests.test_bench_suites.LengthProbe", "init_args": {"prompts": 3}}],
            }
        }
    )
    suite = parser().instantiate(config).suite
    measures = suite.measures()
    assert measures.names == ["task_score", "answer_length_change"]
    base = {"task": [0.0, 1.0], "answer_length": [4.0, 4.0, 4.0]}
    rows = [
        {"arm": arm, "seed": 0, "wall_s": 1.0, "items": {"task": [1.0, 1.0], "answer_length": lengths}}
        for arm, lengths in (("sft", [6.0, 8.0, 7.0]), ("terse", [4.0, 5.0, 3.0]))
    ]
    for row in rows:
        row["metrics"] = {name: vars(e) for name, e in measures.estimates(row["items"], base).items()}
    table = summarize(rows, measures.estimates(base, base), ["sft", "terse"], measures.metrics)
    header = "| arm | runs | task score (chain_sum, verifier) | answer length change | verdict |"
    assert summary_markdown(table, measures.metrics).splitlines()[0] == header
    (terse,) = compare_to_reference(rows, base, ["sft", "terse"], measures, "sft")
    assert terse["answer_length_change"][0].mean == pytest.approx(-3.0)
    assert "lower is better: answer length change" in paired_markdown([terse], measures.metrics, "sft")


def test_a_sweep_reaches_settings_whose_default_is_none_and_probes_are_checked():
    """The config the bench command records keeps None settings, so a sweep can set them; a suite without probes and
    a probe whose compare() returns other metrics than it declares are refused."""
    config = parser().parse_args(["--suite", suite_file("smoke")])
    plain = json.loads(parser().dump(config, format="json", skip_unset=False))["suite"]
    assert plain["budget"]["precision"] is None and plain["budget"]["micro_batch_size"] is None
    point = point_config(plain, {"budget.micro_batch_size": 2})
    assert parser().instantiate(parser().parse_object({"suite": point})).suite.budget.micro_batch_size == 2
    with pytest.raises(ValueError, match="at least one forgetting probe"):
        Suite([ObjectiveArm("sft", {"class_path": "sft_research.objectives.SFT"})], probes=[])
    from sft_research.bench.evaluate import Measures

    class Misnamed(LengthProbe):
        def compare(self, finetuned, base):
            return {"length": [0.0]}

    with pytest.raises(
        ValueError, match=r"probe 'answer_length': compare\(\) returned metrics \['length'\], but it declares \['answer_length_change'\]"
    ):
        Measures([Misnamed()]).item_values({"answer_length": [1.0]}, {"answer_length": [1.0]})


def test_an_arm_changes_any_fit_setting_through_overrides_in_the_suite():
    """Overrides in a suite's YAML reach the arm's fit config, merged into the suite's settings and the arm's own
    change (LoRA's adapters and learning rate), and the fit parser accepts the result; nothing is trained."""
    config = yaml.safe_load(Path(suite_file("smoke")).read_text())
    config["arms"] = [
        {
            "class_path": "sft_research.bench.ObjectiveArm",
            "init_args": {"name": "sft", "objective": {"class_path": "sft_research.objectives.SFT"}},
        },
        {
            "class_path": "sft_research.bench.ObjectiveArm",
            "init_args": {
                "name": "tuned",
                "objective": {"class_path": "sft_research.objectives.SFT"},
                "overrides": {
                    "model": {"optimizer": {"weight_decay": 0.1}, "execution": {"packing": True, "logprob_chunk_size": 64}},
                    "trainer": {"max_steps": 3},
                },
            },
        },
        {
            "class_path": "sft_research.bench.LoRAArm",
            "init_args": {"name": "lora", "r": 4, "lr": 1e-3, "overrides": {"model": {"pretrained": {"lora": {"dropout": 0.1}}}}},
        },
    ]
    suite = parser().instantiate(parser().parse_object({"suite": config})).suite
    plain, tuned, lora = (fit_of(arm, suite) for arm in suite.arms)
    assert tuned["model"]["optimizer"] == {"lr": suite.budget.lr, "warmup_ratio": suite.budget.warmup_ratio, "weight_decay": 0.1}
    assert tuned["model"]["execution"] == {"packing": True, "logprob_chunk_size": 64} and tuned["trainer"]["max_steps"] == 3
    assert "execution" not in plain["model"] and plain["trainer"]["max_steps"] == suite.budget.max_steps
    assert tuned["data"] == plain["data"] and tuned["model"]["objective"] == plain["model"]["objective"]
    assert lora["model"]["pretrained"]["lora"] == {
        "r": 4,
        "alpha": 16,
        "dropout": 0.1,
        "target_modules": "all-linear",
        "modules_to_save": None,
        "merge": True,
    }
    assert lora["model"]["optimizer"]["lr"] == 1e-3


def fit_of(arm, suite: Suite) -> dict:
    (stage,) = arm.stages(suite, seed=0)
    stage.check()  # the fit parser accepts it
    return stage.fit


def test_overrides_merge_mappings_and_replace_everything_else():
    task = {"class_path": "sft_research.data.ReasoningGymTask", "init_args": {"seed": 0, "noise_fraction": 0.25}}
    base = {
        "trainer": {"max_steps": 30, "callbacks": [{"class_path": "a.Bar"}]},
        "model": {"optimizer": {"lr": 1e-4}},
        "data": {"train": task},
    }
    merged = deep_merge(
        base,
        {"trainer": {"callbacks": []}, "model": {"optimizer": {"lr": 1e-3}}},
        {"data": {"train": {"init_args": {"noise_fraction": 0.0}}}},
    )
    assert merged == {
        "trainer": {"max_steps": 30, "callbacks": []},
        "model": {"optimizer": {"lr": 1e-3}},
        "data": {"train": {"class_path": "sft_research.data.ReasoningGymTask", "init_args": {"seed": 0, "noise_fraction": 0.0}}},
    }
    mixture = {"class_path": "sft_research.data.Mixture", "init_args": {"records": task, "text_fraction": 0.25}}
    assert deep_merge(base, {"data": {"train": mixture}})["data"]["train"] == mixture, "another class's settings replace the task's"
    merged["data"]["train"]["init_args"]["seed"] = 7
    assert base["data"]["train"]["init_args"] == {"seed": 0, "noise_fraction": 0.25}, "the inputs are left as they were"


def test_the_readmes_probe_and_arm_examples_run_as_they_stand(tiny_model_dir, tmp_path, monkeypatch):
    """The README's probe and arm, written as files of a package outside this one, listed by its suite YAML: the suite
    parses, the arms' fit configs carry what they change, and the probe measures a model and compares."""
    from sft_research.checkpoints.names import load_tokenizer
    from sft_research.data import ReasoningGymTask
    from sft_research.data.tokenize import ChatTokenizer
    from sft_research.model.loading import ModelConfig, load_model
    from tests.conftest import readme_block

    for package, marker in (("my_probes", "class AnswerLengthProbe(Probe):"), ("my_arms", "class WarmupArm(ObjectiveArm):")):
        block = readme_block(marker)
        name = block.splitlines()[0].removeprefix("# ")
        (tmp_path / package).mkdir()
        (tmp_path / name).write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (listing,) = [b for b in readme.split("```yaml\n")[1:] if "my_arms.warmup.WarmupArm" in b]
    config = {**yaml.safe_load(Path(suite_file("smoke")).read_text()), **yaml.safe_load(listing.split("```")[0])}
    suite = parser().instantiate(parser().parse_object({"suite": config})).suite
    assert suite.measures().names == ["task_score", "answer_length_change"]
    plain, overridden, warmup = (fit_of(arm, suite) for arm in suite.arms)
    assert overridden["model"]["optimizer"]["weight_decay"] == 0.1 and overridden["model"]["execution"] == {"packing": True}
    assert warmup["model"]["optimizer"]["warmup_ratio"] == 0.3 and plain["model"]["optimizer"]["warmup_ratio"] == suite.budget.warmup_ratio

    (probe,) = suite.probes
    tokenizer = load_tokenizer(str(tiny_model_dir))
    task = ReasoningGymTask("chain_sum", train_size=4, eval_size=16, seed=0)
    context = ProbeContext(base=None, tokenizer=tokenizer, chat_tokenizer=ChatTokenizer(tokenizer), task=task, batch_size=8)
    lengths = probe.measure(load_model(ModelConfig(str(tiny_model_dir))).eval(), context)
    assert len(lengths) == 16 and all(length >= 0 for length in lengths)
    assert probe.compare([3.0, 5.0], [4.0, 4.0]) == {"answer_length_change": [-1.0, 1.0]}
