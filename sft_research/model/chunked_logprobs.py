"""Label log-probs from final hidden states without materialising the ``[tokens, vocab]`` float32 logits.

The output layer is applied to a chunk of tokens at a time; the backward pass recomputes each chunk's logits instead
of keeping them, so peak memory grows with ``chunk_size x vocab`` rather than ``tokens x vocab``.
"""

from __future__ import annotations

import torch


class _ChunkedLabelLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
        out = torch.empty(labels.shape, dtype=torch.float32, device=hidden.device)
        for first in range(0, hidden.shape[0], chunk_size):
            logits = (hidden[first : first + chunk_size] @ weight.T).float()
            rows = labels[first : first + chunk_size]
            out[first : first + chunk_size] = logits.gather(-1, rows[:, None]).squeeze(-1) - logits.logsumexp(-1)
        ctx.save_for_backward(hidden, weight, labels)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        hidden, weight, labels = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        for first in range(0, hidden.shape[0], ctx.chunk_size):
            chunk = hidden[first : first + ctx.chunk_size]
            logits = (chunk @ weight.T).float()
            # d log_softmax(z)_y / dz = onehot(y) - softmax(z), scaled by the incoming gradient.
            grad_logits = -torch.softmax(logits, -1)
            grad_logits.scatter_add_(-1, labels[first : first + ctx.chunk_size, None], torch.ones_like(grad_logits[:, :1]))
            grad_logits *= grad_out[first : first + ctx.chunk_size, None]
            if grad_hidden is not None:
                grad_hidden[first : first + ctx.chunk_size] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += grad_logits.T @ chunk.float()
        return grad_hidden, grad_weight.to(weight.dtype) if grad_weight is not None else None, None, None


def chunked_label_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T)[i, labels[i]]`` for ``[N, H]`` hidden states, in float32, chunk by chunk."""
    return _ChunkedLabelLogprobs.apply(hidden, weight, labels, chunk_size)
