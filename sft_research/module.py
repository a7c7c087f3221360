"""One LightningModule that trains any objective.

It asks the objective what it needs, computes the policy's label log-probs, splits each optimizer batch into
micro-batches (normalising by the whole batch's counts, so the split never changes the gradient), and logs the
loss, the objective's diagnostics, learning rate, gradient norm, tokens/s and peak memory.
"""

from __future__ import annotations

import random
import resource
import time
from functools import partial
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MeanMetric

from sft_research.data.errors import DataError
from sft_research.errors import ConfigError
from sft_research.files import atomic_dir
from sft_research.callbacks import StaleUpdates
from sft_research.master_weights import LOW_PRECISION
from sft_research.model.fsdp import check_fsdp_policy, check_fsdp_wrapping, finish_fsdp_backward, generation_ready, savable
from sft_research.evaluation.task_accuracy import TaskAccuracy
from sft_research.model.generation import GenerationConfig, generate
from sft_research.frozen.cache import frozen_label_logprobs
from sft_research.frozen.inputs import FrozenContext, ReferenceLogprobs
from sft_research.model.loading import ModelConfig, load_model
from sft_research.checkpoints.names import load_tokenizer, local_architecture
from sft_research.model.logprobs import sequence_logprobs
from sft_research.model.packing import packed_sequence_logprobs
from sft_research.objectives.base import Objective, ObjectiveInputs
from sft_research.objectives.sft import SFT, sft_loss
from sft_research.optim import OptimizerConfig, build_optimizer
from sft_research.preflight import check_output_dir, parameter_bytes


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite loss or gradient."""


class FineTuningModule(L.LightningModule):
    """Fine-tunes a pretrained causal LM with any :class:`Objective`.

    Args:
        pretrained: the model to start from.
        objective: the training objective, picked by class path (``--model.objective sft_research.objectives.SFT``).
        optimizer: AdamW and its schedule.
        micro_batch_size: examples per forward/backward pass; the optimizer batch is split into micro-batches of this
            size and their gradients accumulated. Defaults to the whole batch. Set as ``data.micro_batch_size`` on the
            command line, beside the global ``data.batch_size``.
        max_grad_norm: clip the gradient's global norm to this value (None: no clipping).
        generation: decoding settings for task evaluation.
        save_dir: where the final Hugging Face checkpoint goes; defaults to ``<log dir>/hf_model``.
        reference: the frozen reference model for objectives that need one; defaults to ``pretrained`` (the model
            at the start of this run).
        frozen_logprobs: ``cached`` computes frozen-model log-probs once before training and keeps them on disk for
            later runs; ``on_the_fly`` keeps the reference model in memory and runs it on every batch (same loss,
            for checking and for data too large to cache).
        frozen_batch_size: sequences per forward pass when computing frozen-model log-probs.
        packing: run each batch's real tokens as one padding-free sequence, attention kept within each example (FlexAttention
            with ``attn_implementation: flex_attention`` on GPUs, a dense document mask otherwise).
        logprob_chunk_size: compute label log-probs from the final hidden states this many tokens at a time, never
            materialising the full ``[tokens, vocab]`` logits (None: full logits).
        compile: ``torch.compile`` the model.
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
        max_grad_norm: float | None = 1.0,
        generation: GenerationConfig = GenerationConfig(),
        save_dir: str | None = None,
        reference: str | None = None,
        frozen_logprobs: Literal["cached", "on_the_fly"] = "cached",
        frozen_batch_size: int = 16,
        packing: bool = False,
        logprob_chunk_size: int | None = 1024,
        compile: bool = False,
        on_nonfinite: Literal["stop", "skip"] = "stop",
    ):
        super().__init__()
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ConfigError(f"data.micro_batch_size must be at least 1 (or null: the whole batch), got {micro_batch_size}")
        self.automatic_optimization = False
        self.pretrained = pretrained
        self.objective = objective
        self.optimizer_config = optimizer
        self.micro_batch_size = micro_batch_size
        self.max_grad_norm = max_grad_norm
        self.generation = generation
        self.save_dir = save_dir
        self.reference = ModelConfig(reference or pretrained.name_or_path, dtype=pretrained.dtype)
        self.frozen_logprobs = frozen_logprobs
        self.frozen_batch_size = frozen_batch_size
        self.on_nonfinite = on_nonfinite
        for frozen in objective.frozen_inputs:
            frozen.check(pretrained.name_or_path)
        self.packing, self.logprob_chunk_size, self.compile_model = packing, logprob_chunk_size, compile
        self.skipped_batches = 0
        self.val_uses_objective = False
        self.on_the_fly_reference: tuple = ()  # a tuple hides the frozen model from the optimizer and checkpoints
        self.model = None
        self.tokenizer = None
        self.val_accuracy, self.test_accuracy = TaskAccuracy(), TaskAccuracy()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def configure_model(self) -> None:
        if self.model is None:
            # from_pretrained returns eval mode; Lightning switches modes around evaluation but not into training.
            self.model = load_model(self.pretrained).train()
            if self.compile_model:
                self.model.compile()
            if self.tokenizer is None:
                self.tokenizer = load_tokenizer(self.pretrained.name_or_path)

    def setup(self, stage: str) -> None:
        # The data's tokenizer carries a configured chat template: generate with it and save it with the model.
        data_tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
        if data_tokenizer is not None:
            self.tokenizer = data_tokenizer
        data = self.trainer.datamodule
        device = self.trainer.strategy.root_device
        if stage == "fit":
            self.check_record_kind(data)
            uses_lora = self.pretrained.lora is not None
            check_fsdp_policy(self.trainer.strategy, local_architecture(self.pretrained.name_or_path), uses_lora)
            self.prepare_frozen_inputs(data, data.train_examples, device)
        if data is not None and data.val_examples and data.eval_task is None:
            # Held-out records of the kind the objective trains on are scored with its own loss (which may need frozen
            # inputs too); others (demonstrations held out for IRFT) with the NLL of their first completion.
            self.val_uses_objective = len(data.val_examples[0].sequences) == self.objective.sequences_per_example
            if self.val_uses_objective:
                self.prepare_frozen_inputs(data, data.val_examples, device)
            kind = f"{type(self.objective).__name__}'s own loss" if self.val_uses_objective else "the completion's NLL"
            rank_zero_info(f"val/loss: {kind} on the held-out records")

    def check_record_kind(self, data) -> None:
        """Before any model loads: the micro-batch fits each process's share of the batch, and the training records
        are of the kind the objective trains on."""
        share = data.batch_size // self.trainer.world_size
        if self.micro_batch_size is not None and self.micro_batch_size > share:
            raise ConfigError(
                f"data.micro_batch_size={self.micro_batch_size} is larger than each process's share of the batch "
                f"(data.batch_size={data.batch_size} over {self.trainer.world_size} processes: {share})"
            )
        found = len(data.train_examples[0].sequences)
        if found != self.objective.sequences_per_example:
            wanted = "preference records (prompt/chosen/rejected)" if self.objective.sequences_per_example == 2 else "SFT or text records"
            raise DataError(
                data.train_source.name,
                f"{type(self.objective).__name__} trains on {wanted}, but this source holds {data.kinds[data.train_source.name]}",
            )

    def prepare_frozen_inputs(self, data, examples: list, device: torch.device) -> None:
        """Attaches what the objective declared it needs from frozen models to every example."""
        label_logprobs = partial(self.shared_frozen_logprobs, device=device)
        context = FrozenContext(self.pretrained, self.reference, data.renderer, label_logprobs)
        for frozen in self.objective.frozen_inputs:
            if isinstance(frozen, ReferenceLogprobs) and self.frozen_logprobs == "on_the_fly":
                if not self.on_the_fly_reference:
                    self.on_the_fly_reference = (load_model(self.reference).to(device).eval().requires_grad_(False),)
                continue
            if all(frozen.name in example.frozen for example in examples):
                continue
            for example, value in zip(examples, frozen.compute(examples, context)):
                example.frozen[frozen.name] = value

    def shared_frozen_logprobs(self, config: ModelConfig, examples, pad_token_id: int, device) -> list[torch.Tensor]:
        """Frozen-model log-probs, computed once by the first process and read from the on-disk cache by the rest."""
        compute = partial(
            frozen_label_logprobs, config, examples, pad_token_id, self.frozen_batch_size, device, chunk_size=self.logprob_chunk_size
        )
        if self.trainer.world_size == 1:
            return compute()
        if self.trainer.is_global_zero:
            compute()
        self.trainer.strategy.barrier()
        return compute()

    def configure_callbacks(self) -> list[L.Callback]:
        return [StaleUpdates()]

    def configure_optimizers(self):
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer, scheduler = build_optimizer(parameters, self.optimizer_config, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def policy_logprobs(self, batch: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        """``[B, S, T]`` label log-probs of the batch's sequences under the model being trained (or ``model``)."""
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        b, s, length = input_ids.shape
        used = int(attention_mask.sum(-1).max())
        ids, mask = input_ids[..., :used].reshape(b * s, used), attention_mask[..., :used].reshape(b * s, used)
        if self.packing:
            logps = packed_sequence_logprobs(model or self.model, ids, mask, self.logprob_chunk_size)
        else:
            logps = sequence_logprobs(model or self.model, ids, mask, self.logprob_chunk_size)
        return torch.nn.functional.pad(logps.reshape(b, s, used - 1), (0, length - used))

    def objective_inputs(self, batch: dict[str, torch.Tensor], num_tokens: torch.Tensor, num_examples: float) -> ObjectiveInputs:
        if batch["input_ids"].shape[1] != self.objective.sequences_per_example:
            kinds = {1: "SFT records (prompt/completion or messages)", 2: "preference records (prompt/chosen/rejected)"}
            raise ValueError(
                f"{type(self.objective).__name__} trains on {kinds[self.objective.sequences_per_example]}, "
                f"but the data holds {kinds.get(batch['input_ids'].shape[1], 'other records')}"
            )
        frozen = {key.removeprefix("frozen/"): value for key, value in batch.items() if key.startswith("frozen/")}
        if self.on_the_fly_reference:
            with torch.no_grad():
                frozen["ref_logps"] = self.policy_logprobs(batch, model=self.on_the_fly_reference[0])
        missing = [f.name for f in self.objective.frozen_inputs if f.name not in frozen]
        if missing:
            raise ValueError(f"{type(self.objective).__name__} needs the frozen inputs {missing}, but the batch has none")
        return ObjectiveInputs(
            logps=self.policy_logprobs(batch),
            mask=batch["loss_mask"],
            quality=batch["quality"],
            num_tokens=num_tokens,
            num_examples=num_examples,
            frozen=frozen,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        start = time.perf_counter()
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        size = self.micro_batch_size or batch["input_ids"].shape[0]
        num_tokens, num_examples = self.global_counts(batch)
        loss = torch.zeros((), device=self.device)
        diagnostics: dict[str, list[torch.Tensor]] = {}
        for first in range(0, batch["input_ids"].shape[0], size):
            micro = {key: value[first : first + size] for key, value in batch.items()}
            output = self.objective(self.objective_inputs(micro, num_tokens, num_examples))
            self.manual_backward(output.loss)
            finish_fsdp_backward(self.trainer.strategy)
            loss += output.loss.detach()
            for name, value in output.diagnostics.items():
                diagnostics.setdefault(name, []).append(value.detach().float())
        grad_norm = self.clip_and_measure_gradients()
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            self.handle_nonfinite(batch, loss, grad_norm, diagnostics)
            optimizer.zero_grad(set_to_none=True)
            return loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log_diagnostics("train", diagnostics)
        self.log_dict(
            {
                "train/lr": lr,
                "train/grad_norm": grad_norm,
                "train/tokens_per_s": batch["attention_mask"].sum().item() / (time.perf_counter() - start),
                "train/peak_memory_gib": peak_memory_gib(self.device),
            }
        )
        return loss

    def global_counts(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        """Completion tokens and examples of the whole optimizer batch, over every micro-batch and process.

        Data-parallel strategies average gradients over the processes, so the counts are divided by their number:
        each process's loss is then its share of the global batch's loss, and the average of their gradients is the
        gradient of the global batch.
        """
        counts = torch.stack([batch["loss_mask"].sum().float(), torch.tensor(float(batch["input_ids"].shape[0]), device=self.device)])
        world = self.trainer.world_size
        if world > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum") / world
        return counts[0], counts[1].item()

    def handle_nonfinite(self, batch, loss, grad_norm, diagnostics: dict[str, list[torch.Tensor]]) -> None:
        means = {name: torch.cat(values).mean().item() for name, values in diagnostics.items()}
        report = (
            f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} at step {self.global_step}: "
            f"loss={loss.item()}, grad_norm={grad_norm.item()}, example ids {batch['example_id'].tolist()}, "
            f"diagnostics {means}"
        )
        if self.on_nonfinite == "stop":
            raise NonFiniteError(report + " (the last checkpoint is left as it was; on_nonfinite='skip' skips such batches)")
        self.skipped_batches += 1
        self.log("train/skipped_batches", float(self.skipped_batches))
        rank_zero_warn(f"skipped batch {self.skipped_batches}: {report}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped_batches"] = self.skipped_batches
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_batches = checkpoint.get("skipped_batches", 0)
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

    def on_fit_start(self) -> None:
        """Says what trains, and fails before the first step when a checkpoint could not be written or FSDP would
        stop in the first backward pass."""
        check_fsdp_wrapping(self.trainer.strategy, self.model, uses_lora=self.pretrained.lora is not None)
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        rank_zero_info(
            f"model: {self.pretrained.name_or_path}, {total / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trained), "
            f"objective: {type(self.objective).__name__}; final model: {self.hf_checkpoint_dir()}"
        )
        low_precision = {p.dtype for p in self.model.parameters() if p.requires_grad and p.dtype in LOW_PRECISION}
        if low_precision and not self.optimizer_config.master_weights:
            rank_zero_warn(
                f"the trained weights are {', '.join(map(str, low_precision))} and model.optimizer.master_weights is "
                f"false: updates smaller than half a unit in a weight's last place are lost (in bf16 at lr "
                f"{self.optimizer_config.lr:g}, most of them); keep float32 master weights (master_weights: true)"
            )
        size = parameter_bytes(self.model)
        check_output_dir(self.hf_checkpoint_dir().parent, size, "model output")
        callback = self.trainer.checkpoint_callback
        if callback is not None and callback.dirpath is not None:
            check_output_dir(Path(callback.dirpath), 3 * size, "checkpoint")  # weights and two Adam moments

    def clip_and_measure_gradients(self) -> torch.Tensor:
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

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
            scores = torch.tensor([task.score(int(i), text) for i, text in zip(batch["index"], texts)])
            accuracy.update(scores)
            self.log(f"{stage}/task_accuracy", accuracy, prog_bar=True, batch_size=len(texts))
        elif self.val_uses_objective:
            size = batch["input_ids"].shape[0]
            output = self.objective(self.objective_inputs(batch, batch["loss_mask"].sum(), float(size)))
            loss.update(output.loss, weight=size)
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size)
            for name, value in output.diagnostics.items():
                self.log(f"{stage}/{name}", value.float().mean(), batch_size=size, sync_dist=True)
        else:
            mask = batch["loss_mask"][:, 0]
            nll = sft_loss(self.policy_logprobs(batch)[:, 0], mask)
            loss.update(nll, weight=mask.sum())
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=mask.shape[0])

    def on_fit_end(self) -> None:
        target = self.hf_checkpoint_dir()  # every process asks: the log folder is agreed on collectively
        log_dir = self.trainer.log_dir if self.trainer.logger is not None else None  # a collective: every process asks
        lora = self.pretrained.lora
        merged = lora is not None and lora.merge
        if merged:
            # Training is over: the adapters are folded into the weights, and the plain model is what is saved.
            self.model = self.model.merge_and_unload()
            if self.trainer.is_global_zero:
                self.save_hf_checkpoint(target)
        else:
            self.export_hf_checkpoint(target)
        if self.trainer.is_global_zero:
            rank_zero_info(self.outputs_summary(target, log_dir) + (" (LoRA adapters merged)" if merged else ""))
        # The next stage, on every process, starts from this model: none goes on before it is on disk.
        self.trainer.strategy.barrier("final model written")

    def export_hf_checkpoint(self, target: Path) -> None:
        """Writes the policy as it is now to ``target`` (every process calls it; the main one writes): the full
        weights, in bf16 after bf16 training, or, while LoRA adapters train, the adapters, which load wherever a model
        path goes."""
        state = self.trainer.strategy.lightning_module_state_dict()  # gathered from every process under FSDP
        if self.trainer.is_global_zero:
            state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
            if self.pretrained.lora is not None:
                # peft saves what trains (adapters, modules_to_save): the frozen base weights are not cast for nothing.
                trained = {name for name, parameter in self.model.named_parameters() if parameter.requires_grad}
                state = {k: v for k, v in state.items() if k in trained}
            if "bf16" in str(self.trainer.precision):
                # Trained in bf16 (mixed keeps float32 master weights): the export is bf16, half the size.
                state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
            self.save_hf_checkpoint(target, state)

    def outputs_summary(self, model_dir: Path, log_dir: str | None) -> str:
        """One line: what this run wrote, and where."""
        size = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) / 2**20
        parts = [f"final model {model_dir} ({size:.1f} MB)"]
        if log_dir is not None:
            parts.insert(0, f"metrics and config in {log_dir}")
        callback = self.trainer.checkpoint_callback
        if callback is not None and callback.last_model_path:
            parts.append(f"training state {callback.last_model_path}")
        return "outputs: " + "; ".join(parts)

    def hf_checkpoint_dir(self) -> Path:
        if self.save_dir is not None:
            return Path(self.save_dir)
        if self.trainer.logger is not None:
            return Path(self.trainer.log_dir) / "hf_model"
        # Without a logger the run has no folder of its own: never the bare working folder, and always said.
        return Path(self.trainer.default_root_dir) / "runs" / "unlogged" / "hf_model"

    def save_hf_checkpoint(self, target: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Writes ``save_pretrained`` output under a temporary name and renames it, so no half-written folder remains."""
        with atomic_dir(target) as staging:
            savable(self.model, state_dict).save_pretrained(staging, state_dict=state_dict)
            self.tokenizer.save_pretrained(staging)


def rng_states() -> dict:
    # Plain types and tensors only, so that checkpoints load with torch.load(weights_only=True).
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def peak_memory_gib(device: torch.device) -> float:
    """Peak accelerator memory allocated, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
