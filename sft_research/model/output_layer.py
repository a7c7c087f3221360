"""The policy's output layer, chunk by chunk: the label tokens' log-probs, and any other per-position quantity of
the next-token distribution an objective reads (log-probs at other token ids, a reduction over the whole vocabulary
such as the KL to a frozen model's distribution), with gradients.

The ``[tokens, vocab]`` logits never exist whole: each chunk's logits are computed in the forward pass and computed
again in the backward, so memory grows with ``chunk_size x vocab``. Logits are computed in the weight's dtype (bf16
operands with float32 accumulation under bf16) and normalised in float32; the output weight's gradient is summed over
the chunks in float32. The label log-probs alone (most objectives) take a path whose backward is written out, which
``torch.compile`` traces whole; other outputs are differentiated by autograd chunk by chunk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch


class PositionOutput(ABC):
    """A per-position quantity of the next-token distribution, computed inside the output layer.

    Attributes:
        name: its key in ``ObjectiveInputs.outputs`` (``[B, S, T, ...]``, T over label positions).
        reads: the per-position frozen tensors it reads, as ``"<frozen input>"`` or ``"<frozen input>.<tensor>"``;
            they arrive sliced to the same positions as the log-probs.
        grad: False marks a diagnostic: computed without gradients, and skipped by the output layer's backward.
    """

    name: str
    reads: tuple[str, ...] = ()
    grad: bool = True

    @abstractmethod
    def __call__(self, logprobs: torch.Tensor, labels: torch.Tensor, frozen: dict[str, torch.Tensor]) -> torch.Tensor:
        """``logprobs``: ``[n, V]`` float32 log-softmax at n positions; ``labels``: ``[n]`` next tokens; returns ``[n, ...]``."""


class LabelLogprobs(PositionOutput):
    """``logps``: the log-prob of the next token, the quantity every objective reads."""

    name = "logps"

    def __call__(self, logprobs: torch.Tensor, labels: torch.Tensor, frozen: dict[str, torch.Tensor]) -> torch.Tensor:
        return logprobs.gather(-1, labels[:, None]).squeeze(-1)


class TokenLogprobs(PositionOutput):
    """The log-probs at the token ids a frozen input gives per position (``[n, K]`` integer ids -> ``[n, K]``), e.g. a
    teacher's top-k tokens.

    Args:
        name: the output's name.
        ids: the frozen tensor of token ids, ``"<frozen input>.<tensor>"``.
    """

    def __init__(self, name: str, ids: str):
        self.name, self.ids, self.reads = name, ids, (ids,)

    def __call__(self, logprobs: torch.Tensor, labels: torch.Tensor, frozen: dict[str, torch.Tensor]) -> torch.Tensor:
        return logprobs.gather(-1, frozen[self.ids].long())


class VocabularyReduction(PositionOutput):
    """A reduction of the next-token distribution over the whole vocabulary, one value per position (``[n]``).

    Args:
        name: the output's name; by default the class's (``entropy``, ``mean_logprob``).
        grad: False: a diagnostic, without gradients.
    """

    def __init__(self, name: str | None = None, grad: bool = True):
        # A second name lets one objective read the same reduction twice, e.g. with and without gradients.
        self.name, self.grad = name if name is not None else self.name, grad


class Entropy(VocabularyReduction):
    """The entropy ``-sum_v p_v log p_v`` of the next-token distribution (``[n]``)."""

    name = "entropy"

    def __call__(self, logprobs: torch.Tensor, labels: torch.Tensor, frozen: dict[str, torch.Tensor]) -> torch.Tensor:
        return -(logprobs.exp() * logprobs).sum(-1)


class MeanLogprob(VocabularyReduction):
    """The mean log-prob ``(1/V) sum_v log p_v`` over the whole vocabulary (``[n]``): minus the cross-entropy to the
    uniform distribution, label smoothing's second term."""

    name = "mean_logprob"

    def __call__(self, logprobs: torch.Tensor, labels: torch.Tensor, frozen: dict[str, torch.Tensor]) -> torch.Tensor:
        return logprobs.mean(-1)


def compute_outputs(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, outputs: Sequence[PositionOutput], frozen: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    return outputs_from_logits(hidden @ weight.T, labels, outputs, frozen)


def outputs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, outputs: Sequence[PositionOutput], frozen: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """The outputs at ``[n, V]`` logits, normalised in float32 (diagnostics without gradients)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return tuple(output_value(output, logprobs, labels, {name: frozen[name] for name in output.reads}) for output in outputs)


def output_value(output: PositionOutput, logprobs: torch.Tensor, labels: torch.Tensor, frozen: dict[str, torch.Tensor]) -> torch.Tensor:
    if output.grad:
        return output(logprobs, labels, frozen)
    with torch.no_grad():
        return output(logprobs, labels, frozen)


class _Chunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, outputs, chunk_size, names, *values):
        results: list[list[torch.Tensor]] = [[] for _ in outputs]
        with torch.no_grad():
            for first in range(0, hidden.shape[0], chunk_size):
                rows = slice(first, first + chunk_size)
                frozen = {name: value[rows] for name, value in zip(names, values)}
                for result, value in zip(results, compute_outputs(hidden[rows], weight, labels[rows], outputs, frozen)):
                    result.append(value)
        ctx.save_for_backward(hidden, weight, labels, *values)
        ctx.outputs, ctx.chunk_size, ctx.names = outputs, chunk_size, names
        joined = tuple(torch.cat(result) for result in results)
        ctx.mark_non_differentiable(*(value for value, output in zip(joined, outputs) if not output.grad))
        return joined

    @staticmethod
    def backward(ctx, *grad_outputs):
        hidden, weight, labels, *values = ctx.saved_tensors
        wants_hidden, wants_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # Diagnostics are not recomputed: they have no gradient to give.
        differentiable = [(output, grad) for output, grad in zip(ctx.outputs, grad_outputs) if output.grad and grad is not None]
        grad_hidden = torch.zeros_like(hidden) if wants_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants_weight else None
        for first in range(0, hidden.shape[0], ctx.chunk_size):
            rows = slice(first, first + ctx.chunk_size)
            with torch.enable_grad():
                chunk = hidden[rows].detach().requires_grad_(wants_hidden)
                head = weight.detach().requires_grad_(wants_weight)
                frozen = {name: value[rows] for name, value in zip(ctx.names, values)}
                produced = compute_outputs(chunk, head, labels[rows], [output for output, _ in differentiable], frozen)
                pairs = [(out, grad[rows]) for out, (_, grad) in zip(produced, differentiable) if out.requires_grad]
                if not pairs:
                    continue
                inputs = [t for t, wanted in ((chunk, wants_hidden), (head, wants_weight)) if wanted]
                grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
            grads = iter(grads)
            if wants_hidden:
                gradient = next(grads)
                if gradient is not None:
                    grad_hidden[rows] = gradient
            if wants_weight:
                gradient = next(grads)
                if gradient is not None:
                    grad_weight += gradient.float()
        weight_grad = grad_weight.to(weight.dtype) if grad_weight is not None else None
        return (grad_hidden, weight_grad, None, None, None, None, *[None] * len(values))


class _ChunkedLabelLogprobs(torch.autograd.Function):
    """The label log-probs alone, with their gradient written out (``onehot(label) - softmax``): no autograd inside
    the backward, so that ``torch.compile`` traces the whole step, and every matmul takes the weight's dtype (bf16
    operands, float32 accumulation), with the log-sum-exp and the softmax in float32."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size):
        out = []
        for first in range(0, hidden.shape[0], chunk_size):
            logits = hidden[first : first + chunk_size] @ weight.T
            chosen = logits.gather(-1, labels[first : first + chunk_size, None]).squeeze(-1).float()
            out.append(chosen - torch.logsumexp(logits.float(), dim=-1))
        ctx.save_for_backward(hidden, weight, labels)
        ctx.chunk_size = chunk_size
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad_out):
        # d logp[label] / d logits = onehot(label) - softmax: the softmax part goes through the GEMMs in the weight's
        # dtype, the one-hot part (one row per position) is added apart, exactly, so that no float32 copy of the
        # logits needs to be kept for a scatter (compiled, the cast fuses into the softmax's reductions).
        hidden, weight, labels = ctx.saved_tensors
        wants_hidden, wants_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden, grad_weight = [], torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants_weight else None
        for first in range(0, hidden.shape[0], ctx.chunk_size):
            chunk = hidden[first : first + ctx.chunk_size].to(weight.dtype)
            rows = labels[first : first + ctx.chunk_size]
            grad = grad_out[first : first + ctx.chunk_size, None]
            grad_logits = (-torch.softmax((chunk @ weight.T).float(), dim=-1) * grad).to(weight.dtype)
            if wants_hidden:
                grad_hidden.append((grad_logits @ weight + grad * weight[rows]).to(hidden.dtype))
            if wants_weight:
                grad_weight += (grad_logits.T @ chunk).float()
                grad_weight.index_add_(0, rows, grad * chunk.float())
        return (torch.cat(grad_hidden) if wants_hidden else None), (grad_weight.to(weight.dtype) if wants_weight else None), None, None


def output_layer(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    outputs: Sequence[PositionOutput] = (LabelLogprobs(),),
    frozen: dict[str, torch.Tensor] | None = None,
    chunk_size: int | None = 1024,
) -> dict[str, torch.Tensor]:
    """The ``outputs`` at ``[N, H]`` final hidden states whose next tokens are ``labels`` (``[N]``), through the output
    weight ``[V, H]``, ``chunk_size`` positions at a time (None: all at once); ``frozen`` holds the ``[N, ...]`` tensors
    the outputs read."""
    frozen = frozen or {}
    if chunk_size is None:
        values = compute_outputs(hidden, weight, labels, outputs, frozen)
    elif len(outputs) == 1 and isinstance(outputs[0], LabelLogprobs):
        values = (_ChunkedLabelLogprobs.apply(hidden, weight, labels, chunk_size),)
    else:
        names = tuple(frozen)
        values = _Chunked.apply(hidden, weight, labels, tuple(outputs), chunk_size, names, *(frozen[name] for name in names))
    return {output.name: value for output, value in zip(outputs, values)}


def chunked_label_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T)[i, labels[i]]`` for ``[N, H]`` hidden states, in float32, chunk by chunk."""
    return output_layer(hidden, weight, labels, (LabelLogprobs(),), chunk_size=chunk_size)["logps"]
