"""How many bytes a fit holds, from the model's config.json and the fit's settings: one estimator for the memory
plan of a rehearsal (:mod:`sft_research.rehearsal.memory_plan`: per GPU, at full scale) and the disk pre-check of
checkpoints (:mod:`sft_research.train.callbacks.preflight`: what a training state holds).

Counted as this project's step runs (``tests/test_memory.py`` checks it against the bytes of the tensors a tiny
model's step holds on the CPU):

* the training state: weights in their dtype, gradients in the weights' dtype, float32 master copies of low-precision
  trained weights (:mod:`~sft_research.train.master_weights`) and the optimizer's states (AdamW: two per weight, RMSprop:
  one, float32 where there are masters), each split over the processes where FSDP shards it;
* activations, what autograd keeps from a decoder layer of the Llama family (Llama, Mistral, Qwen2: RMSNorm in float32,
  SDPA attention, a gated MLP) per token: with activation checkpointing each layer's input, plus one layer recomputed
  in the backward;
* the output layer's chunks (:mod:`~sft_research.model.output_layer`), and its float32 weight gradient;
* under FSDP the units gathered at once (the causal LM's own weights, which stay gathered for the whole step, and two
  decoder layers), with their unsharded gradients;
* the dense document mask of packed batches under SDPA (none under FlexAttention), and the additive bias that SDPA
  makes of it in each layer;
* the optimizer step's float32 copies of the gradients (for the masters);
* frozen models (reference, baselines, teacher): every process loads each one whole, and runs it without gradients
  at ``model.frozen.batch_size`` sequences of ``data.lengths.max_length``.

Sequences are counted at ``data.lengths.max_length``: the plan is for the longest batch. The CUDA context and the caching
allocator's fragmentation (often a few GiB) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

GIB = 2**30
FLOAT32 = 4
INT64 = 8
OPTIMIZER_STATES = {"adamw": 2, "rmsprop": 1}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know of a causal LM.

    Args:
        parameters: every weight (with LoRA: the base model's and the adapters').
        trained: the weights that train (all of them, or LoRA's adapters and ``modules_to_save``).
        layer_parameters: the weights of one decoder layer.
        outer_parameters: the weights outside the decoder layers (embeddings, final norm, output layer).
        head_trained: whether the output layer trains (it then gets a float32 gradient).
    """

    parameters: int
    trained: int
    layer_parameters: int
    outer_parameters: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    head_trained: bool = True


def model_shape(architecture: dict, lora=None) -> ModelShape:
    """The shape of the causal LM a config.json describes, its weights counted on the meta device (no memory); with
    ``lora`` (a LoRA config: ``r``, ``target_modules``, ``modules_to_save``), the adapters train instead."""
    import torch

    from sft_research.train.config_checks import meta_model

    model = meta_model(architecture)
    config = model.config
    layers = next(module for module in model.modules() if isinstance(module, torch.nn.ModuleList))
    layer = sum(p.numel() for p in layers[0].parameters())
    parameters = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings()
    heads = config.num_attention_heads
    shape = ModelShape(
        parameters=parameters,
        trained=parameters,
        layer_parameters=layer,
        outer_parameters=parameters - layer * len(layers),
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        layers=len(layers),
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        vocab=config.vocab_size,
    )
    if lora is None:
        return shape
    adapters, saved = 0, 0
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and module is not head and lora_targets(leaf, lora.target_modules):
            adapters += lora.r * (module.in_features + module.out_features)
        if leaf in (lora.modules_to_save or ()):
            saved += sum(p.numel() for p in module.parameters())  # peft trains a copy beside the frozen original
    return replace(shape, parameters=parameters + adapters + saved, trained=adapters + saved, head_trained=False)


def lora_targets(leaf: str, target_modules) -> bool:
    return target_modules == "all-linear" or leaf in target_modules


@dataclass(frozen=True)
class Frozen:
    """A frozen model a fit runs: its role (reference, baseline, teacher), its shape, its weights' bytes each, and
    whether it runs on every batch, kept in memory beside the policy (else once before training, cached, before the
    policy loads)."""

    role: str
    name: str
    shape: ModelShape
    weight_bytes: int
    on_the_fly: bool = False


def fsdp_shards(sharding_strategy: str, processes: int, per_node: int) -> tuple[int, bool]:
    """How many ways an FSDP sharding strategy (``FULL_SHARD``, ``ShardingStrategy.HYBRID_SHARD``, ...) splits the
    training state over ``processes`` (``per_node`` of them a node), and whether it splits the weights too."""
    name = sharding_strategy.rsplit(".", 1)[-1].upper()
    if name == "NO_SHARD":
        return 1, False
    if "HYBRID" in name:
        return per_node, "ZERO2" not in name
    return processes, name != "SHARD_GRAD_OP"


@dataclass(frozen=True)
class FitShape:
    """The settings of a fit that decide its memory.

    Args:
        processes: processes (one a GPU).
        shards: how many ways FSDP splits the training state (1: not at all).
        shard_weights: FSDP splits the weights too (``FULL_SHARD``), not only gradients and optimizer states.
        offload: FSDP's CPU offload: weights, gradients, masters and optimizer states in host memory, the optimizer
            stepping on the CPU.
        fsdp: under FSDP (units gathered one at a time).
        weight_bytes: bytes of a stored weight (2 for bf16 weights, 4 for float32).
        compute_bytes: bytes of an activation (2 under bf16 or fp16 precision, mixed or true; else 4).
        autocast: mixed precision outside FSDP: the forward keeps a bf16 copy of every weight it casts.
        master_weights: ``model.optimizer.master_weights``.
        optimizer: ``adamw`` or ``rmsprop``.
        micro_batch: examples per forward and backward pass.
        accumulation: micro-batches per optimizer step in a process.
        sequences: sequences per example (2 for preference pairs).
        length: tokens per sequence (``data.lengths.max_length``).
        checkpointing: activation checkpointing.
        packing: padding-free packing (``model.execution.packing``).
        flex_attention: packing's document mask is a FlexAttention block mask (else a dense mask for SDPA).
        chunk: positions per output-layer chunk (None: the whole logits).
        frozen: the frozen models.
        frozen_batch: sequences per frozen forward pass.
        lora: LoRA adapters train (in float32), the weights frozen.
    """

    processes: int = 1
    shards: int = 1
    shard_weights: bool = False
    offload: bool = False
    fsdp: bool = False
    weight_bytes: int = 2
    compute_bytes: int = 2
    autocast: bool = False
    master_weights: bool = True
    optimizer: str = "adamw"
    micro_batch: int = 1
    accumulation: int = 1
    sequences: int = 1
    length: int = 1024
    checkpointing: bool = False
    packing: bool = False
    flex_attention: bool = False
    chunk: int | None = 1024
    frozen: tuple[Frozen, ...] = field(default_factory=tuple)
    frozen_batch: int = 16
    lora: bool = False

    @property
    def trained_bytes(self) -> int:
        """Bytes of a trained weight: peft keeps LoRA's adapters in float32 over bf16 weights."""
        return FLOAT32 if self.lora else self.weight_bytes

    @property
    def masters(self) -> bool:
        return self.master_weights and self.trained_bytes < FLOAT32

    @property
    def tokens(self) -> int:
        """Token positions in one micro-batch's forward pass."""
        return self.micro_batch * self.sequences * self.length


@dataclass(frozen=True)
class State:
    """A training state's bytes, whole (over every process): weights, gradients, masters, optimizer states."""

    weights: int
    gradients: int
    masters: int
    optimizer: int


def training_state(parameters: int, trained: int, fit: FitShape) -> State:
    """The training state of a model of ``parameters`` weights, ``trained`` of them trained."""
    state_bytes = FLOAT32 if fit.masters else fit.trained_bytes
    return State(
        weights=parameters * fit.weight_bytes,
        gradients=trained * fit.trained_bytes,
        masters=trained * FLOAT32 if fit.masters else 0,
        optimizer=trained * OPTIMIZER_STATES[fit.optimizer] * state_bytes,
    )


def checkpoint_bytes(parameters: int, trained: int, fit: FitShape) -> int:
    """What a training state (a checkpoint) of a model of ``parameters`` weights, ``trained`` of them trained, holds
    over every process: the weights (the trained ones alone under LoRA, :mod:`~sft_research.checkpoints.training_state`),
    the float32 masters and the optimizer's states."""
    state = training_state(parameters, trained, fit)
    weights = state.weights if trained == parameters else trained * fit.trained_bytes
    return weights + state.masters + state.optimizer


def layer_activations(model: ModelShape, fit: FitShape, tokens: int) -> int:
    """What autograd keeps of one decoder layer's forward: both RMSNorms (their float32 input, the inverse root mean
    square, and two copies in the compute dtype), attention's queries, keys, values, output and log-sum-exp (SDPA's
    memory-efficient and flash kernels keep no attention matrix), and the gated MLP's four intermediates."""
    d, h = fit.compute_bytes, model.hidden
    norms = 2 * (FLOAT32 * h + FLOAT32 + 2 * d * h)
    attention = d * (2 * model.heads * model.head_dim + 2 * model.kv_heads * model.head_dim) + FLOAT32 * model.heads
    return tokens * (norms + attention + 4 * d * model.intermediate)


def outer_activations(model: ModelShape, fit: FitShape, tokens: int) -> tuple[int, int]:
    """What is kept outside the decoder layers: (token ids, labels and the rotary cosines and sines, kept to the
    end of the backward; the final norm's and the output layer's inputs, freed after the output layer's backward)."""
    d, h = fit.compute_bytes, model.hidden
    return tokens * (2 * INT64 + 2 * d * model.head_dim), tokens * (FLOAT32 * h + FLOAT32 + 2 * d * h)


def saved_layers(model: ModelShape, fit: FitShape, tokens: int, checkpointing: bool) -> int:
    """What the decoder layers keep for the backward: each layer's input under activation checkpointing, else all
    their activations."""
    per_layer = tokens * fit.compute_bytes * model.hidden if checkpointing else layer_activations(model, fit, tokens)
    return model.layers * per_layer


def activations(model: ModelShape, fit: FitShape, checkpointing: bool) -> int:
    """Every activation kept at once: the layers' (with one layer recomputed under checkpointing) and the rest."""
    tokens = fit.tokens
    recomputed = layer_activations(model, fit, tokens) if checkpointing else 0
    return saved_layers(model, fit, tokens, checkpointing) + recomputed + sum(outer_activations(model, fit, tokens))


def output_layer(model: ModelShape, fit: FitShape, tokens: int, trained: bool) -> int:
    """The output layer's backward, chunk by chunk: a chunk's softmax in float32 and its gradient (with the previous
    chunk's logit gradient, in the compute dtype, still held), and, where the output layer trains, its float32 weight
    gradient with each chunk's contribution (in the compute dtype, then in float32) added to it."""
    d, vocab = fit.compute_bytes, model.vocab
    rows = min(fit.chunk or tokens, tokens)
    softmax = 2 * rows * vocab * FLOAT32 + (rows * vocab * d if tokens > rows else 0)
    if not trained:
        return softmax
    weight = vocab * model.hidden
    return weight * FLOAT32 + max(softmax, rows * vocab * d + weight * (d + FLOAT32))


def layer_backward(model: ModelShape, fit: FitShape, tokens: int) -> int:
    """A decoder layer's backward beyond what its forward kept: the gradients of two of the MLP's intermediates and
    of the residual stream."""
    return tokens * fit.compute_bytes * (2 * model.intermediate + model.hidden)


def packing_mask(model: ModelShape, fit: FitShape) -> int:
    """A packed micro-batch's document mask: none to speak of under FlexAttention (a block mask); under SDPA a dense
    boolean ``[tokens, tokens]`` mask, and the additive bias SDPA makes of it in each layer (kept by every layer
    without activation checkpointing, by the layer being recomputed with it)."""
    if not fit.packing or fit.flex_attention:
        return 0
    square = fit.tokens**2
    return square + square * fit.compute_bytes * (1 if fit.checkpointing else model.layers)


def frozen_forward(frozen: Frozen, fit: FitShape) -> int:
    """A frozen model's forward pass without gradients at ``frozen_batch`` sequences: the residual stream and the
    hidden states, with the larger of a layer's attention (float32 norm, queries, keys, values) and its gated MLP (up
    to four intermediates at once), or with one output-layer chunk's logits and their float32 log-sum-exp."""
    shape, d = frozen.shape, fit.compute_bytes
    tokens = fit.frozen_batch * fit.length
    stream = 2 * d * shape.hidden
    attention = 2 * FLOAT32 * shape.hidden + d * (2 * shape.heads * shape.head_dim + 2 * shape.kv_heads * shape.head_dim)
    rows = min(fit.chunk or tokens, tokens)
    return tokens * stream + max(tokens * max(attention, 4 * d * shape.intermediate), rows * shape.vocab * (d + FLOAT32))


@dataclass(frozen=True)
class Term:
    name: str
    detail: str
    bytes: int


# What stays on the GPU for the whole training step, as opposed to what one phase of it holds.
PHASES = ("gradients", "activations", "output layer", "packing mask", "optimizer step")


@dataclass(frozen=True)
class Estimate:
    """A fit's memory per GPU.

    Attributes:
        terms: what its training step holds (states, activations, output layer, packing mask, optimizer step).
        training: the training step's peak: what stays for the whole step, and the larger of the backward pass's
            start (activations, the output layer's backward or a layer's, the packing mask; gradients too when
            micro-batches accumulate) and the optimizer step (gradients and their float32 copies).
        frozen: each cached frozen model's pass, its weights and its forward as two terms, run one model at a time
            before training; those run on the fly are counted in ``training``.
        host: host memory per process for what CPU offload keeps there.
        loading: host memory per process while the model loads: the whole model, before FSDP shards it.
        other_activations: the activations with activation checkpointing switched the other way.
    """

    terms: tuple[Term, ...]
    training: int
    frozen: tuple[tuple[Term, Term], ...]
    host: int
    loading: int
    other_activations: int

    @property
    def frozen_peak(self) -> int:
        return max((weights.bytes + forward.bytes for weights, forward in self.frozen), default=0)

    @property
    def peak(self) -> int:
        return max(self.training, self.frozen_peak)

    def term(self, name: str) -> int:
        return next((term.bytes for term in self.terms if term.name == name), 0)


def estimate(model: ModelShape, fit: FitShape) -> Estimate:
    state, d, tokens = training_state(model.parameters, model.trained, fit), fit.compute_bytes, fit.tokens
    weight_shards = fit.shards if fit.shard_weights else 1
    on_gpu = 0 if fit.offload else 1  # offloaded, the training state lives in host memory
    head_trained = model.head_trained and model.trained > 0
    copies = model.trained * FLOAT32 // fit.shards if fit.masters else 0
    host = ", in host memory" if fit.offload else ""
    terms = [
        Term("weights", f"{dtype_name(fit.weight_bytes)}{share(weight_shards)}{host}", on_gpu * state.weights // weight_shards),
        Term("gradients", f"{dtype_name(fit.trained_bytes)}{share(fit.shards)}{host}", on_gpu * state.gradients // fit.shards),
        Term("float32 master weights", f"float32{share(fit.shards)}{host}", on_gpu * state.masters // fit.shards),
        Term(
            "optimizer states",
            f"{fit.optimizer}, {OPTIMIZER_STATES[fit.optimizer]} a trained weight{share(fit.shards)}{host}",
            on_gpu * state.optimizer // fit.shards,
        ),
    ]
    if fit.processes > 1 and not fit.fsdp:
        terms.append(Term("DDP gradient buckets", "a second copy of the gradients", state.gradients))
    if fit.fsdp:
        gathered = (model.outer_parameters + 2 * model.layer_parameters) * d
        unsharded = ((model.vocab * model.hidden if head_trained else 0) + (model.layer_parameters if model.trained else 0)) * d
        terms.append(Term("FSDP units gathered", "outer weights and 2 decoder layers, their unsharded gradients", gathered + unsharded))
    if fit.autocast:
        terms.append(Term("autocast weight copies", "bf16 copies of the weights", model.parameters * 2))
    how = f"{model.layers} layer inputs, 1 layer recomputed" if fit.checkpointing else f"all {model.layers} layers"
    kept = activations(model, fit, fit.checkpointing)
    terms.append(Term("activations", f"micro-batch {fit.micro_batch} x {fit.sequences * fit.length} tokens, {how}", kept))
    head = output_layer(model, fit, tokens, head_trained)
    chunks = f"{fit.chunk}-position chunks" if fit.chunk else "whole logits"
    terms.append(Term("output layer", f"{chunks} of {model.vocab} logits" + (", float32 weight gradient" if head_trained else ""), head))
    mask = packing_mask(model, fit)
    packing = "FlexAttention block mask" if fit.flex_attention else "dense, and SDPA's bias of it"
    terms.append(Term("packing mask", packing if fit.packing else "none: padded batches", mask))
    terms.append(Term("optimizer step", f"float32 copies of the gradients{host}", on_gpu * copies))
    # The backward's two peaks: its start, every activation kept and the output layer's backward running; and the
    # last decoder layer's backward (recomputed first under checkpointing), the final norm's and output layer's
    # inputs freed by then.
    layers, (ends, head_inputs) = saved_layers(model, fit, tokens, fit.checkpointing), outer_activations(model, fit, tokens)
    recomputed = layer_activations(model, fit, tokens) if fit.checkpointing else 0
    start = layers + ends + head_inputs + head
    last_layer = layers + ends + recomputed + layer_backward(model, fit, tokens)
    gradients = terms[1].bytes
    backward = max(start, last_layer) + mask + (gradients if fit.accumulation > 1 else 0)
    training = sum(term.bytes for term in terms if term.name not in PHASES) + max(backward, gradients + on_gpu * copies)
    kept = [f for f in fit.frozen if f.on_the_fly]
    if kept:  # on the fly: in memory for the whole fit, run one at a time on each batch
        training += sum(f.shape.parameters * f.weight_bytes for f in kept) + max(frozen_forward(f, fit) for f in kept)
    frozen = tuple(
        (
            Term(f"{f.role} {f.name}'s weights", "whole, on every process", f.shape.parameters * f.weight_bytes),
            Term(f"{f.role} {f.name}'s forward", f"{fit.frozen_batch} x {fit.length} tokens, no gradients", frozen_forward(f, fit)),
        )
        for f in fit.frozen
        if not f.on_the_fly
    )
    offloaded = state.weights // weight_shards + (state.gradients + state.masters + state.optimizer) // fit.shards + copies
    other = activations(model, fit, not fit.checkpointing)
    return Estimate(tuple(terms), training, frozen, offloaded if fit.offload else 0, state.weights, other)


def share(shards: int) -> str:
    return f", 1/{shards} each" if shards > 1 else ""


def dtype_name(size: int) -> str:
    return {2: "bf16", 4: "float32"}.get(size, f"{size} bytes")
