import torch

from sft_research.model.chunked_logprobs import chunked_label_logprobs


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
