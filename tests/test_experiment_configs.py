"""The full-scale configs say what their paper notes say (devices, batches), and the shipped chat templates render.
That the configs run is tests/test_rehearsal.py's guarantee."""

import re
from pathlib import Path

import pytest
import yaml

from sft_research.fit.lightning_cli import parse_fit

FULL_SCALE = sorted(Path(__file__).parents[1].glob("experiments/*/full_scale.yaml"))
BASE_MODELS = ("mistralai/Mistral-7B-v0.1", "meta-llama/Meta-Llama-3-8B")  # no chat template of their own


def paper_setting(experiment: str, name: str, stage: str | None) -> str:
    """A value of the full-scale settings table of the experiment's papers/ note (``name (stage)`` rows first)."""
    note = (Path(__file__).parents[1] / "papers" / f"{experiment}.md").read_text()
    for row in ([f"{name} ({stage})"] if stage else []) + [name]:
        match = re.search(rf"^\| {re.escape(row)} \| ([^|]+) \|$", note, re.MULTILINE)
        if match:
            return match.group(1).strip()
    raise AssertionError(f"papers/{experiment}.md has no full-scale '{name}' row")


def fit_configs(path: Path) -> list[tuple[str | None, dict]]:
    config = yaml.safe_load(path.read_text())
    if "stages" in config:
        return [(stage["init_args"]["name"], stage["init_args"]["fit"]) for stage in config["stages"]]
    return [(None, config)]


@pytest.mark.parametrize("path", FULL_SCALE, ids=[p.parent.name for p in FULL_SCALE])
def test_full_scale_configs_build_for_their_world_size_as_their_paper_note_says(path):
    from sft_research.data.sampler import ResumableShuffleSampler

    experiment = path.parent.name
    for stage, fit in fit_configs(path):
        parsed = parse_fit(fit)
        world = parsed.trainer.devices * parsed.trainer.num_nodes
        batch, micro = parsed.data.batch_size, parsed.data.micro_batch_size
        for rank in range(world):  # a fake process count: what each process's sampler would see
            ResumableShuffleSampler(4 * batch, batch, 0, rank, world)
        per_process = batch // world
        assert micro is None or per_process % micro == 0, "each process splits its share into whole micro-batches"
        assert str(world) == paper_setting(experiment, "GPUs", stage)
        assert str(batch) == paper_setting(experiment, "global batch", stage)
        assert str(micro or per_process) == paper_setting(experiment, "micro-batch per GPU", stage)
        assert str(per_process // (micro or per_process)) == paper_setting(experiment, "accumulation steps", stage)
        strategy = parsed.trainer.strategy
        if not isinstance(strategy, str) and strategy.class_path.endswith("FSDPStrategy"):
            # the export gathers a full model whatever this says; no process gathers a whole training state
            assert strategy.init_args.state_dict_type == "sharded", "training states are saved sharded at scale"
        callbacks = [c.class_path for c in parsed.trainer.callbacks or []]
        assert "lightning.pytorch.callbacks.ModelCheckpoint" in callbacks, "a full-scale run keeps a last training state"
        if parsed.model.pretrained.name_or_path in BASE_MODELS:
            assert parsed.data.template.chat_template, "a base model needs the chat template its recipe uses"


@pytest.mark.parametrize("template", sorted(Path(__file__).parents[1].glob("experiments/templates/*.jinja")), ids=lambda p: p.name)
def test_shipped_chat_templates_render_prefix_by_prefix(template, tiny_model_dir, tmp_path):
    from sft_research.data import FileDataset, SFTDataModule, TemplateConfig
    from tests.conftest import write_jsonl

    rows = [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "1 + 1 ="},
                {"role": "assistant", "content": "2"},
            ]
        }
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), template=TemplateConfig(chat_template=str(template)))
    data.setup("fit")
    (example,) = data.train_examples
    sequence = example.sequences[0]
    trained = data.tokenizer.decode([t for t, m in zip(sequence.input_ids, sequence.completion_mask) if m])
    rendered = data.tokenizer.decode(sequence.input_ids)
    assert trained.startswith("2") and "1 + 1 =" not in trained, "the loss covers the answer and what ends its turn"
    assert rendered.index("be brief") < rendered.index("1 + 1 =") < rendered.rindex("2")
