"""The forgetting fixes as arms: the replay data (its mixture, and text never scored by the general-text probe), the
LoRA and replay arms' fit configs, and the mitigation suite."""

from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from sft_research.bench import GeneralTextProbe, LoRAArm, ObjectiveArm, ProbeContext, ReplayArm, Suite, TaskSpec
from sft_research.checkpoints.embedded import TINY_MODEL
from sft_research.checkpoints.names import load_tokenizer
from sft_research.data import DataSource, LengthConfig, Mixture, RawRecord, SFTDataModule, TextChunks
from sft_research.data.mixture import read_text
from sft_research.data.records import Text, parse_record
from sft_research.data.sampler import ResumableShuffleSampler

ROOT = Path(__file__).parents[1]
NOVEL = "reasoning_gym:in_the_year_2889.txt"


class Rows(DataSource):
    def __init__(self, name: str, rows: list[dict]):
        self.name, self.rows = name, rows

    def records(self) -> list[RawRecord]:
        return [RawRecord(self.name, i, row) for i, row in enumerate(self.rows, start=1)]


TASK = Rows("task", [{"prompt": f"{i} + 1 =", "completion": str(i + 1), "quality": 1.0} for i in range(60)])
TEXT = Rows("text", [{"text": f"piece {i}"} for i in range(100)])


def test_mixture_holds_the_text_fraction_overall_in_every_stretch_and_in_batches_on_average():
    records = Mixture(TASK, TEXT, text_fraction=0.25, seed=3).records()
    is_text = [record.source == "text" for record in records]
    assert len(records) == 80 and sum(is_text) == 20, "every task record, and text for 20 / 80 = 0.25 of all"
    assert [r.fields for r in records if r.source == "task"] == TASK.rows, "the task's records, each once, in order"
    assert len({r.fields["text"] for r in records if r.source == "text"}) == 20, "text drawn without replacement"
    assert all(sum(is_text[i : i + 8]) == 2 for i in range(0, 80, 8)), "spread evenly: 2 of every 8"
    # The trainer's sampler shuffles: over many epochs the mean text share of a batch of 8 is the fraction.
    sampler = ResumableShuffleSampler(len(records), 8, seed=0)
    shares = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        shares += [sum(is_text[i] for i in batch) / len(batch) for batch in sampler.batches()]
    assert sum(shares) / len(shares) == pytest.approx(0.25, abs=1e-9)
    assert min(shares) < 0.25 < max(shares), "a single batch varies around the fraction"


def test_mixture_is_seeded_and_checks_its_fraction():
    def texts(seed):
        return [r.fields["text"] for r in Mixture(TASK, TEXT, 0.25, seed).records() if r.source == "text"]

    assert texts(0) == texts(0) and texts(0) != texts(1)
    assert len(Mixture(TASK, TEXT, 0.0).records()) == 60
    with pytest.raises(ValueError, match=r"180 text records are needed .* has 100"):
        Mixture(TASK, TEXT, 0.75).records()
    with pytest.raises(ValueError, match=r"text_fraction must be in \[0, 1\)"):
        Mixture(TASK, TEXT, 1.0)


def test_mixed_records_train_as_sft_and_language_modelling():
    data = SFTDataModule(
        Mixture(TASK, TextChunks(NOVEL, TINY_MODEL, chunk_tokens=32), 0.25), tokenizer=TINY_MODEL, lengths=LengthConfig(max_length=128)
    )
    data.setup("fit")
    examples = data.train_examples
    text = [e for e in examples if isinstance(parse_record(e.raw), Text)]
    assert len(examples) == 80 and len(text) == 20
    assert all(all(e.sequences[0].completion_mask[1:]) for e in text), "every text token after the first is a target"
    assert all(not all(e.sequences[0].completion_mask) for e in examples if e not in text), "the prompt is not"


def test_text_chunks_cut_pieces_of_the_token_count_around_excluded_spans():
    tokenizer = load_tokenizer(TINY_MODEL)
    text = read_text(NOVEL)
    exclude = [(1000, 2000), (30000, 30500)]
    chunks = TextChunks(NOVEL, TINY_MODEL, chunk_tokens=50, exclude=exclude)
    spans = chunks.spans()
    assert all(end <= first or start >= stop for start, end in spans for first, stop in exclude)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "in order, not overlapping"
    lengths = [len(tokenizer(text[start:end], add_special_tokens=False)["input_ids"]) for start, end in spans]
    assert max(lengths) <= 52 and sorted(lengths)[len(lengths) // 2] == 50, "pieces of 50 tokens (re-tokenized)"
    covered = sum(end - start for start, end in spans)
    assert covered > 0.95 * (len(text) - 1500), "the rest of the text is used"
    records = chunks.records()
    assert [r.fields["text"] for r in records] == [text[start:end] for start, end in spans] and records[0].row == 1


@pytest.mark.parametrize(
    "probe,repeated",
    [(GeneralTextProbe(NOVEL, num_chunks=16, chunk_tokens=128), True), (GeneralTextProbe(NOVEL, num_chunks=4, chunk_tokens=32), False)],
)
def test_replay_text_never_overlaps_what_the_probe_scores(probe, repeated):
    """The probe's own code picks its chunks: a stand-in model records what it is given, and every chunk is located
    in the text; no replay piece may share a character with one."""
    tokenizer = load_tokenizer(TINY_MODEL)
    scored: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        device = torch.device("cpu")

        def forward(self, input_ids):
            scored.extend(input_ids)
            return type("Output", (), {"logits": torch.zeros(*input_ids.shape, tokenizer.vocab_size)})()

    probe.measure(Recorder(), ProbeContext(base=None, tokenizer=tokenizer, chat_tokenizer=None, task=None, batch_size=8))
    text = read_text(NOVEL)
    chunks = [tokenizer.decode(ids) for ids in scored]
    located = [(text.index(chunk), text.index(chunk) + len(chunk)) for chunk in chunks]
    assert len(located) == probe.num_chunks and all(end - start > 20 for start, end in located)
    assert located == probe.scored_spans(TINY_MODEL), "the arm excludes exactly the probe's chunks"

    suite = Suite([ObjectiveArm("sft", {"class_path": "sft_research.objectives.SFT"})], base_model=TINY_MODEL, probes=[probe])
    mixture = ReplayArm("replay", text_fraction=0.5, chunk_tokens=80).source(suite)["init_args"]
    pieces = TextChunks(**mixture["text"]["init_args"]).spans()
    assert len(pieces) > 100
    assert all(end <= first or start >= stop for start, end in pieces for first, stop in located)
    # Nor the same words elsewhere: the licence repeats its sentences, and a piece of another copy is left out.
    windows = {chunk[i : i + 50] for chunk in chunks for i in range(len(chunk) - 49)}
    for start, end in pieces:
        piece = text[start:end]
        assert not any(chunk in piece or piece in chunk for chunk in chunks)
        assert not any(piece[i : i + 50] in windows for i in range(len(piece) - 49))
    unfiltered = TextChunks(**{**mixture["text"]["init_args"], "shared_characters": 10**6}).spans()
    assert (len(unfiltered) > len(pieces)) == repeated, "pieces left out for repeating the licence text the probe scores"


def fit_of(arm, suite: Suite) -> dict:
    (stage,) = arm.stages(suite, seed=1)
    stage.check()  # the fit parser accepts it
    return stage.fit


def test_lora_and_replay_arms_train_what_they_say():
    suite = Suite(
        [ObjectiveArm("sft", {"class_path": "sft_research.objectives.SFT"})],
        base_model=TINY_MODEL,
        task=TaskSpec(train_size=30, eval_size=5),
    )
    lora = fit_of(LoRAArm("lora", r=4, alpha=32, target_modules=["q_proj", "v_proj"], lr=1e-3), suite)
    assert lora["model"]["pretrained"] == {
        "name_or_path": TINY_MODEL,
        "lora": {"r": 4, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "modules_to_save": None, "merge": True},
    }
    assert lora["model"]["optimizer"]["lr"] == 1e-3 and lora["seed_everything"] == 1
    assert lora["data"] == fit_of(suite.arms[0], suite)["data"], "the same data as SFT"

    replay = fit_of(ReplayArm("replay", text_fraction=0.2, chunk_tokens=40), suite)
    mixture = replay["data"]["train"]
    assert mixture["class_path"] == "sft_research.data.Mixture"
    assert mixture["init_args"]["records"] == suite.task.source() and mixture["init_args"]["text_fraction"] == 0.2
    assert mixture["init_args"]["seed"] == suite.task.seed, "the same text for every training seed"
    chunks = mixture["init_args"]["text"]["init_args"]
    assert chunks["path"] == NOVEL and chunks["chunk_tokens"] == 40 and len(chunks["exclude"]) == suite.probe(GeneralTextProbe).num_chunks
    other = ReplayArm("replay", text="/some/other/text.txt").source(suite)["init_args"]["text"]["init_args"]
    assert other["exclude"] == [], "another text than the probe's has nothing to leave out"


def suite_config(name: str) -> dict:
    return yaml.safe_load((ROOT / "sft_research" / "bench" / "suites" / name).read_text())


def test_mitigation_suite_is_the_default_suite_with_the_fixes_as_arms():
    default, mitigation = suite_config("default.yaml"), suite_config("mitigation.yaml")
    for key in ("base_model", "task", "probes", "budget", "seeds", "eval_batch_size"):
        assert mitigation[key] == default[key], key
    assert [arm["init_args"]["name"] for arm in mitigation["arms"]] == ["sft", "lora", "replay", "dft", "kl_to_base"]
    assert mitigation["arms"][0] == default["arms"][0]
    parser = ArgumentParser()
    parser.add_class_arguments(Suite, "suite", sub_configs=True)
    suite = parser.instantiate_classes(parser.parse_object({"suite": mitigation})).suite
    assert [type(arm).__name__ for arm in suite.arms] == ["ObjectiveArm", "LoRAArm", "ReplayArm", "ObjectiveArm", "ObjectiveArm"]
    assert suite.arms[3].objective["class_path"] == "sft_research.objectives.DFT"
    assert [arm["init_args"]["name"] for arm in suite_config("smoke.yaml")["arms"]][-5:] == [
        "lora",
        "replay",
        "dft",
        "kl_to_base",
        "clean_data",
    ]
    assert "lora" not in [arm["init_args"]["name"] for arm in default["arms"]], "the default suite keeps its 15 minutes"
