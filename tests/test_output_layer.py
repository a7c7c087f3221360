import pytest
import torch

from sft_research.model.output_layer import Entropy, LabelLogprobs, MeanLogprob, TokenLogprobs, chunked_label_logprobs, output_layer


def reference(hidden, weight, labels):
    return torch.log_softmax((hidden @ weight.T).float(), -1).gather(-1, labels[:, None]).squeeze(-1)


def test_chunked_matches_full_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(101, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 101, (37,), generator=g)
    upstream = torch.randn(37, generator=g)
    expected = reference(hidden, weight, labels)
    (expected * upstream).sum().backward()
    expected_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    for chunk in (1, 5, 37, 64):
        got = chunked_label_logprobs(hidden, weight, labels, chunk)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        (got * upstream).sum().backward()
        torch.testing.assert_close(hidden.grad, expected_grads[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(weight.grad, expected_grads[1], rtol=0, atol=1e-5)
        hidden.grad, weight.grad = None, None


def test_other_outputs_chunked_match_full_values_and_gradients():
    """Log-probs at given token ids and the shipped reductions over the vocabulary (entropy, mean log-prob), chunk by
    chunk, against autograd on the full logits; integer ids stay integers."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(29, 8, generator=g, requires_grad=True)
    weight = torch.randn(53, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 53, (29,), generator=g)
    ids = torch.randint(0, 53, (29, 4), generator=g)
    upstream = {
        "logps": torch.randn(29, generator=g),
        "at_ids": torch.randn(29, 4, generator=g),
        "entropy": torch.randn(29, generator=g),
        "mean_logprob": torch.randn(29, generator=g),
    }
    outputs = (LabelLogprobs(), TokenLogprobs("at_ids", ids="teacher.ids"), Entropy(), MeanLogprob())
    full = torch.log_softmax(hidden @ weight.T, -1)
    expected = {
        "logps": full.gather(-1, labels[:, None]).squeeze(-1),
        "at_ids": full.gather(-1, ids),
        "entropy": -(full.exp() * full).sum(-1),
        "mean_logprob": full.sum(-1) / 53,
    }
    sum((expected[k] * upstream[k]).sum() for k in expected).backward()
    wanted = hidden.grad.clone(), weight.grad.clone()
    for chunk in (None, 1, 7, 64):
        hidden.grad = weight.grad = None
        got = output_layer(hidden, weight, labels, outputs, {"teacher.ids": ids}, chunk)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5, msg=name)
        sum((got[k] * upstream[k]).sum() for k in got).backward()
        torch.testing.assert_close(hidden.grad, wanted[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(weight.grad, wanted[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 4])
def test_a_diagnostic_output_has_no_gradient_and_leaves_the_others_alone(chunk):
    """``grad=False``: the value is the same, computed without gradients; the gradient is that of the label log-probs
    alone."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(11, 8, generator=g, requires_grad=True)
    weight = torch.randn(17, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 17, (11,), generator=g)
    got = output_layer(hidden, weight, labels, (LabelLogprobs(), Entropy("h", grad=False)), chunk_size=chunk)
    torch.testing.assert_close(got["h"], output_layer(hidden, weight, labels, (Entropy("h"),), chunk_size=chunk)["h"])
    assert not got["h"].requires_grad and got["logps"].requires_grad
    (with_diagnostic,) = torch.autograd.grad(got["logps"].sum(), weight)
    (alone,) = torch.autograd.grad(output_layer(hidden, weight, labels, chunk_size=chunk)["logps"].sum(), weight)
    torch.testing.assert_close(with_diagnostic, alone, rtol=0, atol=1e-6)


def test_a_vocabulary_reduction_is_named_after_its_class_unless_renamed():
    renamed = MeanLogprob("smoothing", grad=False)
    assert (renamed.name, renamed.grad) == ("smoothing", False)
    assert [(o.name, o.grad) for o in (Entropy(), MeanLogprob())] == [("entropy", True), ("mean_logprob", True)]


def test_the_bf16_output_layer_against_a_float64_reference():
    """bf16 operands with float32 accumulation, the log-sum-exp in float32: values and gradients within bf16's
    rounding of a float64 computation on the same (bf16) numbers."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(40, 32, generator=g).to(torch.bfloat16).requires_grad_(True)
    weight = (torch.randn(300, 32, generator=g) * 0.1).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, 300, (40,), generator=g)
    upstream = torch.randn(40, generator=g)
    h64, w64 = hidden.detach().double().requires_grad_(True), weight.detach().double().requires_grad_(True)
    expected = torch.log_softmax(h64 @ w64.T, -1).gather(-1, labels[:, None]).squeeze(-1)
    (expected * upstream.double()).sum().backward()
    got = chunked_label_logprobs(hidden, weight, labels, 16)
    assert got.dtype == torch.float32
    (got * upstream).sum().backward()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-2)
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    torch.testing.assert_close(hidden.grad.double(), h64.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.slow
def test_the_compiled_bf16_output_layer_keeps_no_float32_logits():
    """Compiled, the float32 log-sum-exp and softmax read the bf16 logits of a chunk in their own kernels: no buffer
    of float32 logits (or of their gradient) is allocated, forward or backward, and the values are the eager ones."""
    import re

    from torch._inductor.utils import run_and_get_code

    vocab, chunk = 1000, 128
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(256, 64, generator=g).to(torch.bfloat16).requires_grad_(True)
    weight = (torch.randn(vocab, 64, generator=g) * 0.1).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, vocab, (256,), generator=g)

    def step(hidden, weight, labels):
        out = chunked_label_logprobs(hidden, weight, labels, chunk)
        out.sum().backward()
        return out

    torch._dynamo.reset()
    got, code = run_and_get_code(torch.compile(step), hidden, weight, labels)
    buffers = re.findall(r"empty_strided_cpu\(\((\d+), (\d+)\), \(\d+, 1\), torch\.(\w+)\)", "\n".join(code))
    logits = [dtype for rows, columns, dtype in buffers if (int(rows), int(columns)) == (chunk, vocab)]
    assert logits and set(logits) == {"bfloat16"}, buffers
    eager = chunked_label_logprobs(hidden.detach(), weight.detach(), labels, chunk)
    torch.testing.assert_close(got.detach(), eager, rtol=0, atol=1e-2)
