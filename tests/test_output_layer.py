import torch

from sft_research.model.output_layer import LabelLogprobs, PositionOutput, TokenLogprobs, chunked_label_logprobs, output_layer


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


class Entropy(PositionOutput):
    name = "entropy"

    def __call__(self, logprobs, labels, frozen):
        return -(logprobs.exp() * logprobs).sum(-1)


def test_other_outputs_chunked_match_full_values_and_gradients():
    """Log-probs at given token ids and a reduction over the vocabulary, chunk by chunk, against autograd on the full
    logits; integer ids stay integers."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(29, 8, generator=g, requires_grad=True)
    weight = torch.randn(53, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 53, (29,), generator=g)
    ids = torch.randint(0, 53, (29, 4), generator=g)
    upstream = {"logps": torch.randn(29, generator=g), "at_ids": torch.randn(29, 4, generator=g), "entropy": torch.randn(29, generator=g)}
    outputs = (LabelLogprobs(), TokenLogprobs("at_ids", ids="teacher.ids"), Entropy())
    full = torch.log_softmax(hidden @ weight.T, -1)
    expected = {"logps": full.gather(-1, labels[:, None]).squeeze(-1), "at_ids": full.gather(-1, ids), "entropy": -(full.exp() * full).sum(-1)}
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
