"""One LightningModule that trains any objective.

It asks the objective what it needs (frozen inputs, outputs of the policy's output layer), computes them, splits each
optimizer batch into micro-batches, reduces the objective's unreduced losses with the whole batch's counts (so the
split never changes the gradient), and logs the loss, the objective's diagnostics, the learning rate and the gradient
norm. Checks before the first step, RNG states, throughput and the compute record are callbacks
(:mod:`sft_research.train.callbacks`); the export of the final model is :mod:`sft_research.train.export`; frozen
inputs run through :mod:`sft_research.frozen.runner`.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MeanMetric

from sft_research.checkpoints.names import load_tokenizer, model_config
from sft_research.checkpoints.training_state import drop_frozen_weights, restore_frozen_weights
from sft_research.data.collate import micro_batches
from sft_research.errors import ConfigError
from sft_research.frozen.runner import FrozenConfig, FrozenInputs, batch_frozen, frozen_tensor
from sft_research.model.execution import ExecutionConfig, batch_outputs, check_shared_prefix, trimmed
from sft_research.model.fp32_buffers import restore_float32_buffers
from sft_research.model.fsdp import check_fsdp_policy, clip_grad_norm, finish_fsdp_backward, generation_ready
from sft_research.model.generation import GenerationConfig, generate
from sft_research.model.loading import ModelConfig, load_model
from sft_research.model.output_layer import LabelLogprobs
from sft_research.objectives.base import BatchLoss, Objective, ObjectiveInputs, reduce_losses, run_objective
from sft_research.objectives.sft import SFT, sft_token_losses
from sft_research.train.callbacks import ComputeRecord, Preflight, ResumeHint, RNGState, StaleUpdates, Throughput
from sft_research.train.callbacks.preflight import check_batch_and_records
from sft_research.train.callbacks.throughput import logged_step
from sft_research.train.export import export_final_model
from sft_research.train.nonfinite import NonFiniteError, nonfinite_report
from sft_research.train.optim import OptimizerConfig, build_optimizer
from sft_research.train.task_accuracy import TaskAccuracy


class FineTuningModule(L.LightningModule):
    """Fine-tunes a pretrained causal LM with any :class:`Objective`.

    Args:
        pretrained: the model to start from.
        objective: the training objective, picked by class path (``--model.objective sft_research.objectives.SFT``).
        optimizer: the optimizer, its schedule and gradient clipping.
        micro_batch_size: examples per forward/backward pass (None: the whole batch); set as ``data.micro_batch_size``.
        frozen: the reference model and how frozen models run (cached or on the fly).
        execution: packing, chunked output layer, compilation.
        generation: decoding settings for task evaluation.
        save_dir: where the final Hugging Face checkpoint goes; defaults to ``<log dir>/hf_model``.
        on_nonfinite: a non-finite loss or gradient ``stop``s the run (naming the step, the batch's example ids and
            the objective's diagnostics; the last checkpoint stays as it was) or ``skip``s that batch (counted and
            logged as ``train/skipped_batches``).
    """

    def __init__(
        self,
        pretrained: ModelConfig = ModelConfig(),
        objective: Objective = SFT(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        micro_batch_size: int | None = None,
        frozen: FrozenConfig = FrozenConfig(),
        execution: ExecutionConfig = ExecutionConfig(),
        generation: GenerationConfig = GenerationConfig(),
        save_dir: str | None = None,
        on_nonfinite: Literal["stop", "skip"] = "stop",
    ):
        super().__init__()
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ConfigError(f"data.micro_batch_size must be at least 1 (or null: the whole batch), got {micro_batch_size}")
        for frozen_input in objective.frozen_inputs:
            frozen_input.check(pretrained.name_or_path)
        self.automatic_optimization = False
        self.pretrained, self.objective, self.optimizer_config, self.micro_batch_size = pretrained, objective, optimizer, micro_batch_size
        self.frozen_config, self.execution, self.generation = frozen, execution, generation
        self.save_dir, self.on_nonfinite = save_dir, on_nonfinite
        self.reference = ModelConfig(frozen.reference or pretrained.name_or_path, dtype=pretrained.dtype)
        self.frozen: FrozenInputs | None = None
        self.examples: dict[str, dict[int, object]] = {}  # by stage and example id, for frozen inputs run on the fly
        self.skipped_batches, self.val_uses_objective = 0, False
        self.model = self.tokenizer = None
        self.val_accuracy, self.test_accuracy = TaskAccuracy(), TaskAccuracy()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def configure_model(self) -> None:
        if self.model is None:
            # from_pretrained returns eval mode; Lightning switches modes around evaluation but not into training.
            self.model = load_model(self.pretrained).train()
            # The policy's forward, output layer and the objective's loss as one compiled graph, per batch shape
            # (static: the data loader pads to a few lengths, and each gets its own graph).
            self.compute_loss = torch.compile(self.objective_loss, dynamic=False) if self.execution.compile else self.objective_loss
            if self.tokenizer is None:
                self.tokenizer = load_tokenizer(self.pretrained.name_or_path)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        # The data's tokenizer carries a configured chat template: generate with it and save it with the model.
        self.tokenizer = getattr(data, "tokenizer", None) or self.tokenizer
        if stage == "fit":
            check_batch_and_records(self, data)
            check_shared_prefix(self.execution, self.objective, self.trainer.world_size, self.pretrained.gradient_checkpointing)
            architecture = (model_config(self.pretrained.name_or_path).get("architectures") or [None])[0]
            check_fsdp_policy(self.trainer.strategy, architecture, self.pretrained.lora is not None)
            self.prepare_frozen(data, "train", data.train_examples)
        if data is not None and data.val_examples and data.eval_task is None:
            # Held-out records of the kind the objective trains on are scored with its own loss (which may need frozen
            # inputs too); others (demonstrations held out for IRFT) with the NLL of their first completion.
            self.val_uses_objective = len(data.val_examples[0].sequences) == self.objective.sequences_per_example
            if self.val_uses_objective:
                self.prepare_frozen(data, "val", data.val_examples)
            kind = f"{type(self.objective).__name__}'s own loss" if self.val_uses_objective else "the completion's NLL"
            rank_zero_info(f"val/loss: {kind} on the held-out records")

    def on_fit_start(self) -> None:
        restore_float32_buffers(self.model)  # after the precision's cast, before any step is compiled

    def prepare_frozen(self, data, stage: str, examples: list) -> None:
        self.frozen = self.frozen or FrozenInputs.for_fit(self, data.chat_tokenizer)
        self.frozen.attach(examples)
        self.examples[stage] = {example.example_id: example for example in examples}

    def configure_callbacks(self) -> list[L.Callback]:
        return [Preflight(), RNGState(), Throughput(), ComputeRecord(), StaleUpdates(), ResumeHint()]

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.optimizer_config, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def micro_loss(self, micro: dict, num_tokens: torch.Tensor, num_examples: torch.Tensor, stage: str) -> BatchLoss:
        """A micro-batch's share of the batch loss (``num_tokens`` and ``num_examples`` count the whole batch): its
        frozen inputs gathered (those run on the fly computed now), its tensors cut to the lengths known on the host,
        then the policy's outputs, the objective and the reduction, compiled as one function when ``execution.compile``."""
        frozen = batch_frozen(micro)
        if self.frozen is not None and any(self.frozen.on_the_fly(f) for f in self.objective.frozen_inputs):
            examples = [self.examples[stage][i] for i in micro["example_ids"]]
            frozen |= self.frozen.for_batch(examples, micro["input_ids"].shape[-1] - 1, self.device)
        missing = [f.name for f in self.objective.frozen_inputs if f.name not in frozen]
        if missing:
            raise ValueError(f"{type(self.objective).__name__} needs the frozen inputs {missing}, but the batch has none")
        tensors, frozen = trimmed(micro, frozen, self.execution, completion_only=not self.objective.reads_outside_mask)
        return self.compute_loss(tensors, frozen, num_tokens, num_examples)

    def objective_loss(self, tensors: dict, frozen: dict, num_tokens: torch.Tensor, num_examples: torch.Tensor) -> BatchLoss:
        reads = {read: frozen_tensor(frozen, read) for output in self.objective.position_outputs for read in output.reads}
        outputs = batch_outputs(self.model, tensors, (LabelLogprobs(), *self.objective.position_outputs), reads, self.execution)
        inputs = ObjectiveInputs(outputs.pop("logps"), tensors["loss_mask"], tensors["quality"], frozen, outputs)
        return run_objective(self.objective, inputs, num_tokens, num_examples)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One optimizer step over the batch's micro-batches. It waits for the device once, to check that the loss and
        gradient are finite; the logged values are read only on logging steps."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        num_tokens, num_examples = self.global_counts(batch)
        loss = torch.zeros((), device=self.device, dtype=torch.float32)  # not the bf16 default dtype of bf16-true
        diagnostics: dict[str, list[torch.Tensor]] = {}
        for micro in micro_batches(batch, self.micro_batch_size):
            output = self.micro_loss(micro, num_tokens, num_examples, "train")
            self.manual_backward(output.loss)
            finish_fsdp_backward(self.trainer.strategy)
            loss += output.loss.detach()
            for name, value in output.diagnostics.items():
                diagnostics.setdefault(name, []).append(value.detach().float())
        trained = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = clip_grad_norm(self.trainer.strategy, trained, self.optimizer_config.max_grad_norm)
        if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):  # the step's one wait for the device
            self.handle_nonfinite(batch, loss, grad_norm, diagnostics)
            optimizer.zero_grad(set_to_none=True)
            return loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        if logged_step(self.trainer, self.global_step):  # optimizer.step() has counted this step
            self.log("train/loss", loss, sync_dist=True)  # shown by StepProgressBar
            self.log_diagnostics("train", diagnostics)
            self.log_dict({"train/lr": lr, "train/grad_norm": grad_norm})
        return loss

    def global_counts(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Completion tokens and examples of the whole optimizer batch, over every micro-batch and process, divided by
        the number of processes: data-parallel strategies average the processes' gradients, so each one's loss is its
        share of the global batch's loss, and the average of their gradients is the gradient of the global batch."""
        counts = torch.stack([batch["loss_mask"].sum().float(), torch.full((), float(len(batch["lengths"])), device=self.device)])
        world = self.trainer.world_size
        if world > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum") / world
        return counts[0], counts[1]

    def handle_nonfinite(self, batch, loss, grad_norm, diagnostics: dict[str, list[torch.Tensor]]) -> None:
        report = nonfinite_report(self.global_step, batch["example_ids"], loss, grad_norm, diagnostics)
        if self.on_nonfinite == "stop":
            raise NonFiniteError(report + " (the last checkpoint is left as it was; on_nonfinite='skip' skips such batches)")
        self.skipped_batches += 1
        self.log("train/skipped_batches", float(self.skipped_batches))
        rank_zero_warn(f"skipped batch {self.skipped_batches}: {report}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped_batches"] = self.skipped_batches
        drop_frozen_weights(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_batches = checkpoint.get("skipped_batches", 0)
        restore_frozen_weights(self, checkpoint)

    def log_diagnostics(self, stage: str, diagnostics: dict[str, list[torch.Tensor]]) -> None:
        for name, values in diagnostics.items():
            value = torch.cat(values)
            self.log(f"{stage}/{name}", value.mean(), sync_dist=True)
            if name in self.objective.spread_diagnostics:
                self.log(f"{stage}/{name}_min", value.min(), sync_dist=True, reduce_fx="min")
                self.log(f"{stage}/{name}_max", value.max(), sync_dist=True, reduce_fx="max")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluate(batch, self.val_accuracy, self.val_loss, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluate(batch, self.test_accuracy, self.test_loss, "test")

    def evaluate(self, batch: dict[str, torch.Tensor], accuracy: TaskAccuracy, loss: MeanMetric, stage: str) -> None:
        if "prompt_ids" in batch:
            task = self.trainer.datamodule.eval_task
            with generation_ready(self.model):
                texts = generate(self.model, self.tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], self.generation)
            accuracy.update(torch.tensor([task.score(int(i), text) for i, text in zip(batch["index"], texts)]))
            self.log(f"{stage}/task_accuracy", accuracy, prog_bar=True, batch_size=len(texts))
        elif self.val_uses_objective:
            size = batch["input_ids"].shape[0]
            (micro,) = micro_batches(batch, None)
            output = self.micro_loss(micro, batch["loss_mask"].sum(), torch.full((), float(size), device=self.device), "val")
            loss.update(output.loss, weight=size)
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size)
            for name, value in output.diagnostics.items():
                self.log(f"{stage}/{name}", value.float().mean(), batch_size=size, sync_dist=True)
        else:
            (micro,) = micro_batches(batch, None)
            tensors, _ = trimmed(micro, {}, self.execution, completion_only=True)
            mask = tensors["loss_mask"][:, 0]
            logps = batch_outputs(self.model, tensors, (LabelLogprobs(),), {}, self.execution)["logps"][:, 0]
            nll = reduce_losses(sft_token_losses(logps, mask), "tokens", mask)
            loss.update(nll, weight=mask.sum())
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=mask.shape[0])

    def on_fit_end(self) -> None:
        export_final_model(self)
