"""A new frozen-model quantity is one FrozenInput subclass: the objective declares it and receives it, batched."""

import lightning as L
import torch

from sft_research.data import FileDataset, SFTDataModule
from sft_research.frozen import FrozenContext, FrozenInput
from sft_research.model.loading import ModelConfig, load_model
from sft_research.module import FineTuningModule
from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput
from sft_research.objectives.sft import sft_loss
from sft_research.optim import OptimizerConfig
from tests.conftest import SFT_ROWS, write_jsonl


class ReferenceTopK(FrozenInput):
    """The reference model's k most likely next-token log-probs at every label position: ``[S, L - 1, k]``."""

    name = "reference_top_k"

    def __init__(self, k: int):
        self.k = k

    def compute(self, examples, context: FrozenContext) -> list[torch.Tensor]:
        model = load_model(context.reference).eval()
        with torch.no_grad():
            return [
                torch.stack([model(torch.tensor([s.input_ids])).logits[0, :-1].log_softmax(-1).topk(self.k).values for s in example.sequences])
                for example in examples
            ]


class RecordingObjective(Objective):
    """SFT that keeps what it was given."""

    def __init__(self):
        self.frozen_inputs = (ReferenceTopK(k=3),)
        self.seen: list[ObjectiveInputs] = []

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        self.seen.append(inputs)
        return ObjectiveOutput(sft_loss(inputs.logps[:, 0], inputs.mask[:, 0], num_tokens=inputs.num_tokens))


def test_an_objective_declares_a_new_frozen_quantity_and_receives_it(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS[:8])
    objective = RecordingObjective()
    module = FineTuningModule(ModelConfig(str(tiny_model_dir)), objective, OptimizerConfig(lr=1e-3), micro_batch_size=2)
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), batch_size=4)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, data)
    assert len(objective.seen) == 4  # 2 steps of 2 micro-batches
    reference = load_model(ModelConfig(str(tiny_model_dir))).eval()
    for inputs in objective.seen:
        top_k = inputs.frozen["reference_top_k"]
        b, s, t = inputs.logps.shape
        assert top_k.shape == (b, s, t, 3)
    # The first micro-batch's values are the reference's, at every real label position, and zero on padding.
    first = objective.seen[0]
    examples = {e.example_id: e for e in data.train_examples}
    batch_ids = [int(i) for i in next(iter(data.train_dataloader()))["example_id"][:2]]
    for row, example_id in enumerate(batch_ids):
        ids = torch.tensor([examples[example_id].sequences[0].input_ids])
        with torch.no_grad():
            expected = reference(ids).logits[0, :-1].log_softmax(-1).topk(3).values
        n = expected.shape[0]
        torch.testing.assert_close(first.frozen["reference_top_k"][row, 0, :n], expected, rtol=0, atol=1e-5)
        assert not first.frozen["reference_top_k"][row, 0, n:].any()
