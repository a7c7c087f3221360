"""A new frozen-model quantity is one FrozenInput subclass: the objective declares it and receives it, batched; the
context caches it, or runs it on every batch, and counts it."""

import lightning as L
import pytest
import torch

from sft_research.data import FileDataset, SFTDataModule
from sft_research.frozen import FrozenContext, FrozenInput, TopKQuantity
from sft_research.frozen import cache as frozen_cache
from sft_research.frozen.cache import frozen_label_logprobs
from sft_research.frozen.runner import FrozenConfig
from sft_research.model.loading import ModelConfig, load_model
from sft_research.model.logprobs import sequence_logprobs
from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput
from sft_research.objectives.sft import sft_token_losses
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import SFT_ROWS, write_jsonl


class ReferenceTopK(FrozenInput):
    """The reference model's k most likely next tokens at every label position: ``ids`` and ``logps``, ``[S, L - 1, k]``."""

    name = "reference_top_k"

    def __init__(self, k: int):
        self.k = k

    def compute(self, examples, context: FrozenContext):
        return context.quantity(context.reference, examples, TopKQuantity(self.k), context.chat_tokenizer.tokenizer.pad_token_id)


class RecordingObjective(Objective):
    """SFT that keeps what it was given."""

    def __init__(self):
        self.frozen_inputs = (ReferenceTopK(k=3),)
        self.seen: list[ObjectiveInputs] = []

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        self.seen.append(inputs)
        return ObjectiveOutput(sft_token_losses(inputs.logps[:, 0], inputs.mask[:, 0]), "tokens")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cached", "on_the_fly"])
def test_an_objective_declares_a_new_frozen_quantity_and_receives_it(mode, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS[:8])
    objective = RecordingObjective()
    module = FineTuningModule(
        ModelConfig(str(tiny_model_dir)), objective, OptimizerConfig(lr=1e-3), micro_batch_size=2, frozen=FrozenConfig(mode=mode)
    )
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), batch_size=4, micro_batch_size=2)
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, data)
    assert len(objective.seen) == 4  # 2 steps of 2 micro-batches
    for inputs in objective.seen:
        top_k = inputs.frozen["reference_top_k"]
        b, s, t = inputs.logps.shape
        assert top_k["ids"].shape == top_k["logps"].shape == (b, s, t, 3) and top_k["ids"].dtype == torch.int64
    assert (tmp_path / "cache" / "frozen").is_dir() == (mode == "cached")
    # 8 examples scored once before training, or the 2 steps' 8 sequences on the fly.
    assert module.frozen.sequences(trainer) == 8
    # The first micro-batch's values are the reference's, at every real label position, and zero on padding.
    reference = load_model(ModelConfig(str(tiny_model_dir))).eval()
    first = objective.seen[0]
    examples = {e.example_id: e for e in data.train_examples}
    batch_ids = [int(i) for i in next(iter(data.train_dataloader()))["example_id"][:2]]
    for row, example_id in enumerate(batch_ids):
        ids = torch.tensor([examples[example_id].sequences[0].input_ids])
        with torch.no_grad():
            values, token_ids = reference(ids).logits[0, :-1].log_softmax(-1).topk(3)
        n = values.shape[0]
        torch.testing.assert_close(first.frozen["reference_top_k"]["logps"][row, 0, :n], values, rtol=0, atol=1e-5)
        assert torch.equal(first.frozen["reference_top_k"]["ids"][row, 0, :n], token_ids)
        assert not first.frozen["reference_top_k"]["logps"][row, 0, n:].any()


def test_frozen_logprobs_are_cached_checked_and_reused(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir))
    data.setup("fit")
    config = ModelConfig(str(tiny_model_dir))
    first = frozen_label_logprobs(config, data.train_examples, data.tokenizer.pad_token_id, batch_size=5)
    model = load_model(config).eval()
    for example, logps in zip(data.train_examples, first):
        ids = torch.tensor([example.sequences[0].input_ids])
        with torch.no_grad():
            expected = sequence_logprobs(model, ids, torch.ones_like(ids))
        torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)
    (cached,) = list((tmp_path / "cache" / "frozen").glob("*.safetensors"))

    monkeypatch.setattr(frozen_cache, "load_model", lambda *a, **k: pytest.fail("the cache should have been used"))
    again = frozen_label_logprobs(config, data.train_examples, data.tokenizer.pad_token_id, batch_size=3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    monkeypatch.undo()
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))

    cached.write_bytes(cached.read_bytes()[:100])  # a write killed half-way is never trusted
    repaired = frozen_label_logprobs(config, data.train_examples, data.tokenizer.pad_token_id)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(first, repaired))
    assert cached.stat().st_size > 100
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")], "no temporary files left"
