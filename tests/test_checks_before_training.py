"""`pipeline` and `bench` check every stage and arm before the first one trains (settings, architecture from the
model's config.json, the data's first rows against the objective, frozen models): a defect in the last stage or arm
stops the run before anything loads or trains, in one line that names where."""

import pytest
import yaml

from sft_research.checkpoints.names import ModelLoadError
from sft_research.cli.main import main
from sft_research.errors import ConfigError, DataError
from tests.conftest import PAIR_ROWS, SFT_ROWS, write_jsonl

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def nothing_loads(monkeypatch):
    """Any model load fails the test: the checks come before every stage's and arm's first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before every stage and arm was checked")

    monkeypatch.setattr("sft_research.train.module.load_model", refuse)
    monkeypatch.setattr("sft_research.frozen.cache.load_model", refuse)
    monkeypatch.setattr("sft_research.bench.evaluate.load_model", refuse, raising=False)


def fit(model, objective, data) -> dict:
    return {
        "trainer": {"max_steps": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "model": {"pretrained": {"name_or_path": str(model)}, "objective": objective},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data)}}, "batch_size": 4},
    }


def three_stages(tiny_model_dir, tmp_path, last: dict) -> dict:
    sft = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    stages = [
        ("sft", None, fit(tiny_model_dir, "sft_research.objectives.SFT", sft)),
        ("dpo", "sft", fit(tiny_model_dir, "sft_research.objectives.DPO", pairs)),
        ("last", "dpo", last),
    ]
    return {
        "output_dir": str(tmp_path / "run"),
        "stages": [
            {"class_path": "sft_research.pipelines.FitStage", "init_args": {"name": name, "start_from": start, "fit": config}}
            for name, start, config in stages
        ],
    }


@pytest.mark.parametrize(
    "defect,error,message",
    [
        # DPO on SFT records: before, found only once stages 1 and 2 had trained.
        ("records", DataError, r"stage 'last': .*sft.jsonl: DPO trains on preference records \(prompt/chosen/rejected\), but this"),
        # LoRA targets that the model (stage 2's, which does not exist yet: read as the model it started from) lacks.
        ("lora", ConfigError, r"stage 'last': --model.pretrained.lora.target_modules: \['qkv'\] match no module of <stage dpo> \(from "),
        ("length", ConfigError, r"stage 'last': --data.lengths.max_length 4096: <stage dpo> \(from .*\) takes at most 2048 positions"),
        ("reference", ModelLoadError, r"stage 'last': no-such-org/no-such-reference: its config.json could not be read"),
        ("schema", DataError, r"stage 'last': .*bad.jsonl, row 1: no known fields: expected 'messages'"),
    ],
)
def test_a_defect_in_the_last_stage_stops_the_pipeline_before_the_first_stage_starts(
    tiny_model_dir, tmp_path, nothing_loads, monkeypatch, defect, error, message
):
    from sft_research.checkpoints import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    sft, pairs = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS), write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    last = fit(tiny_model_dir, "sft_research.objectives.DPO", pairs)
    if defect == "records":
        last = fit(tiny_model_dir, "sft_research.objectives.DPO", sft)
    elif defect == "lora":
        last["model"]["pretrained"]["lora"] = {"r": 4, "target_modules": ["q_proj", "qkv"]}
    elif defect == "length":
        last["data"]["lengths"] = {"max_length": 4096}
    elif defect == "reference":
        last["model"]["frozen"] = {"reference": "no-such-org/no-such-reference"}
    elif defect == "schema":
        unknown = write_jsonl(tmp_path / "bad.jsonl", [{"question": "1 + 1", "answer": "2"}] * 4)
        last = fit(tiny_model_dir, "sft_research.objectives.DPO", unknown)
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(three_stages(tiny_model_dir, tmp_path, last)))
    with pytest.raises(error, match=message):
        main(["pipeline", f"--config={config}"])
    assert not (tmp_path / "run").exists(), "no stage started"


def test_a_reference_with_another_tokenizer_is_refused_before_any_stage(tiny_model_dir, tmp_path, nothing_loads):
    """DPO's reference log-probs are of the training tokens: a reference whose tokenizer has other ids cannot give
    them (here a tiny model whose tokenizer learnt 400 tokens, against the test model's 320)."""
    from sft_research.checkpoints.tiny import build_tiny_checkpoint

    other = build_tiny_checkpoint(tmp_path / "other", vocab_size=400)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    last = fit(tiny_model_dir, "sft_research.objectives.DPO", pairs)
    last["model"]["frozen"] = {"reference": str(other)}
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(three_stages(tiny_model_dir, tmp_path, last)))
    with pytest.raises(ConfigError, match=r"stage 'last': model.frozen.reference .*other: another tokenizer than the model being trained"):
        main(["pipeline", f"--config={config}"])
    assert not (tmp_path / "run").exists()


def arm(name: str, objective: str) -> dict:
    return {"class_path": "sft_research.bench.ObjectiveArm", "init_args": {"name": name, "objective": {"class_path": objective}}}


SUITE = {
    "base_model": "embedded:tiny-random",
    "task": {"task": "chain_sum", "options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}, "train_size": 8},
    "budget": {"max_steps": 1, "batch_size": 4, "max_length": 128, "accelerator": "cpu"},
    "arms": [
        arm("sft", "sft_research.objectives.SFT"),
        {"class_path": "sft_research.bench.SFTThenDPOArm", "init_args": {"name": "sft_then_dpo", "dpo_steps": 1}},
    ],
}


@pytest.mark.parametrize(
    "last_arm,error,message",
    [
        # A typo in the last arm's objective: before, found after the base model's evaluation and the first arm's run.
        (
            arm("typo", "sft_research.objectives.DPOO"),
            ConfigError,
            r"arm 'typo': stage 'fit': .*sft_research.objectives.DPOO",
        ),
        # DPO on the task's SFT records (no preference_pairs): the data's kind against the objective.
        (
            arm("dpo", "sft_research.objectives.DPO"),
            DataError,
            r"arm 'dpo': stage 'fit': reasoning_gym:chain_sum: DPO trains on preference records",
        ),
        (
            {"class_path": "sft_research.bench.LoRAArm", "init_args": {"name": "lora", "r": 4, "target_modules": ["qkv"]}},
            ConfigError,
            r"arm 'lora': stage 'fit': --model.pretrained.lora.target_modules: \['qkv'\] match no module of embedded:tiny-random",
        ),
    ],
)
def test_a_defect_in_the_last_arm_stops_the_suite_before_anything_is_evaluated(tmp_path, nothing_loads, last_arm, error, message):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "arms": [*SUITE["arms"], last_arm]}))
    with pytest.raises(error, match=message):
        main(["bench", f"--suite={suite}", f"--output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out" / "base.json").exists(), "the base model was not evaluated"
    assert not (tmp_path / "out" / "runs").exists(), "no arm started"


def test_a_later_stage_reads_the_chat_template_an_earlier_stage_saved_with_its_model(tmp_path, nothing_loads):
    """A base model without a chat template, given one by stage 1's data (saved with stage 1's model): stage 2, which
    starts from that model, renders with it, and passes the checks; without it, stage 1 itself stops them."""
    from sft_research.checkpoints.tiny import CHATML_TEMPLATE, build_tiny_checkpoint

    base = build_tiny_checkpoint(tmp_path / "base", chat_template=None)
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML_TEMPLATE)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    pipeline = three_stages(base, tmp_path, fit(base, "sft_research.objectives.DPO", pairs))
    pipeline["stages"][0]["init_args"]["fit"]["data"]["template"] = {"chat_template": str(template)}
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    from sft_research.pipelines.stages import build_pipeline

    build_pipeline([f"--config={config}"]).check()
    del pipeline["stages"][0]["init_args"]["fit"]["data"]["template"]
    config.write_text(yaml.safe_dump(pipeline))
    with pytest.raises(ConfigError, match=r"^stage 'sft': .*base: its tokenizer has no chat template"):
        build_pipeline([f"--config={config}"]).check()
