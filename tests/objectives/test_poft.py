"""PoFT against values computed by hand in float64, its limit where it is sequence-mean SFT, its baselines (each on
its own tokenizer and template), and a CLI fit."""

import math

import pytest
import torch

from sft_research.checkpoints.tiny import ZEPHYR_STYLE_TEMPLATE, build_tiny_checkpoint
from sft_research.data import FileDataset, LengthConfig, SFTDataModule
from sft_research.model.loading import ModelConfig, load_model
from sft_research.model.logprobs import sequence_logprobs
from sft_research.objectives import poft_losses, reduce_losses
from tests.conftest import SFT_ROWS, write_jsonl
from tests.objectives.conftest import fit_from_cli
from tests.objectives.test_iw_sft import masked, random_batch


def test_poft_by_hand():
    logps, _, mask = random_batch(5)
    baseline = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.5], dtype=torch.float64)
    losses, weight = poft_losses(logps, mask, baseline, beta=2.0, gamma=0.3)
    loss = reduce_losses(losses, "examples")
    total, expected_weight = 0.0, []
    for i in range(5):
        ts = masked(mask, i)
        r = sum(logps[i, t].item() for t in ts) / len(ts)
        z = 2.0 * (r - baseline[i].item()) + 0.3
        total += -math.log(1 / (1 + math.exp(-z)))
        expected_weight.append(1 / (1 + math.exp(-(baseline[i].item() - r))))
    torch.testing.assert_close(loss.item(), total / 5, rtol=0, atol=1e-12)
    torch.testing.assert_close(weight, torch.tensor(expected_weight, dtype=torch.float64), rtol=0, atol=1e-12)


def test_poft_gradient_flows_only_through_logps_and_tends_to_sequence_mean_sft():
    logps, _, mask = random_batch(6)
    baseline = torch.full((5,), 50.0, dtype=torch.float64, requires_grad=True)  # baselines far ahead: weight -> 1
    losses, weight = poft_losses(logps, mask, baseline)
    loss = reduce_losses(losses, "examples")
    loss.backward()
    assert baseline.grad is None and not weight.requires_grad
    torch.testing.assert_close(weight, torch.ones(5, dtype=torch.float64))
    sequence_mean_sft = torch.stack([-(logps[i][mask[i]]).mean() for i in range(5)]).mean()
    (expected,) = torch.autograd.grad(sequence_mean_sft, logps)
    torch.testing.assert_close(logps.grad, expected)


@pytest.mark.slow
def test_poft_trains_from_the_cli_against_another_baseline(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    baseline = build_tiny_checkpoint(tmp_path / "baseline", seed=5)
    _, logged = fit_from_cli(tiny_model_dir, path, tmp_path, "sft_research.objectives.PoFT", f"--model.objective.baselines=[{baseline}]")
    assert len(logged) == 3
    for name in ("poft/effective_weight", "poft/effective_weight_min", "poft/baseline_score", "loss"):
        assert all(math.isfinite(float(row[f"train/{name}"])) for row in logged), name
    # A baseline other than the start model: the per-example weights differ from 0.5 and from each other.
    weights = [float(row["train/poft/effective_weight"]) for row in logged]
    assert abs(weights[0] - 0.5) > 1e-3
    assert float(logged[0]["train/poft/effective_weight_max"]) > float(logged[0]["train/poft/effective_weight_min"]) + 1e-4


@pytest.mark.slow
def test_poft_baselines_use_their_own_tokenizer_and_template_and_score_content_only(tiny_model_dir, tmp_path):
    """Two baselines: one with the target's tokenizer, one with another vocabulary and another chat template; each
    scores the response's content through its own, without the end-of-turn tokens (the official scorer's rule)."""
    from sft_research.checkpoints.names import load_tokenizer
    from sft_research.data.tokenize import ChatTokenizer

    other = build_tiny_checkpoint(tmp_path / "other", seed=3, vocab_size=262, chat_template=ZEPHYR_STYLE_TEMPLATE)
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    same_tokenizer = build_tiny_checkpoint(tmp_path / "same_tokenizer", seed=9)
    cli, _ = fit_from_cli(
        tiny_model_dir, path, tmp_path, "sft_research.objectives.PoFT", f"--model.objective.baselines=[{same_tokenizer}, {other}]", steps=1
    )
    examples = cli.datamodule.train_examples
    scores = []
    for model_dir in (same_tokenizer, other):
        tokenizer = load_tokenizer(str(model_dir))
        model = load_model(ModelConfig(str(model_dir))).eval()
        row = []
        for example in examples:
            record = example.record
            text = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in record.messages], tokenize=False)
            start = text.rindex(record.messages[-1].content)
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = torch.tensor([encoded["input_ids"]])
            # the answer's own characters; not the end of turn, not the newline
            content = [s >= start and e <= start + len(record.messages[-1].content) and e > s for s, e in encoded["offset_mapping"]]
            with torch.no_grad():
                logps = sequence_logprobs(model, ids, torch.ones_like(ids))[0]
            row.append(float(logps[torch.tensor(content[1:])].mean()))
        scores.append(row)
    expected = [(a + b) / 2 for a, b in zip(*scores)]
    assert [float(e.frozen["baseline_score"]) for e in examples] == pytest.approx(expected, abs=1e-5)
    # The test could not pass with the target's template: through it, the other baseline reads other tokens.
    through_target = ChatTokenizer(load_tokenizer(str(other)))
    through_target.tokenizer.chat_template = load_tokenizer(str(tiny_model_dir)).chat_template
    own = ChatTokenizer(load_tokenizer(str(other)))
    assert all(own.render(e.record.messages).input_ids != through_target.render(e.record.messages).input_ids for e in examples)


def test_poft_refuses_the_policy_start_or_no_baseline(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    with pytest.raises(ValueError, match=r"PoFT needs at least one baseline model that is not the model being trained at its start"):
        fit_from_cli(tiny_model_dir, path, tmp_path, "sft_research.objectives.PoFT", f"--model.objective.baselines=[{tiny_model_dir}]")
    from sft_research.objectives import PoFT

    with pytest.raises(ValueError, match="PoFT needs at least one baseline model"):
        PoFT(baselines=[])
    # The same checkpoint under another name: another path to the folder, or a copy of its files.
    import shutil

    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    for name in (f"{tiny_model_dir}/.", str(copy)):
        with pytest.raises(ValueError, match="not the model being trained at its start"):
            PoFT(baselines=[name]).frozen_inputs[0].check(str(tiny_model_dir))
    PoFT(baselines=[str(build_tiny_checkpoint(tmp_path / "other", seed=11))]).frozen_inputs[0].check(str(tiny_model_dir))


def test_baselines_score_the_part_of_a_cut_response_that_the_target_trains_on(tiny_model_dir, tmp_path):
    """Across two tokenizers and two templates: the baseline scores the characters of the answer that the target kept,
    and for a whole answer its content without the end of turn."""
    from sft_research.frozen.inputs import baseline_examples

    rows = [
        {"prompt": "1 + 1 =", "completion": "the quick brown fox jumps over the lazy dog " * 3},
        {"prompt": "2 + 2 =", "completion": "4"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = SFTDataModule(
        FileDataset(str(path)), tokenizer=str(tiny_model_dir), lengths=LengthConfig(max_length=40, truncation="truncate_completion")
    )
    data.setup("fit")
    cut, whole = data.train_examples
    kept = cut.sequences[0].kept_characters
    assert kept is not None and whole.sequences[0].kept_characters is None
    target_text = data.tokenizer.decode(cut.sequences[0].input_ids)
    kept_answer = target_text[target_text.index("the quick") :]
    baseline = build_tiny_checkpoint(tmp_path / "baseline", seed=4, vocab_size=262, chat_template=ZEPHYR_STYLE_TEMPLATE)
    scored = baseline_examples(str(baseline), data.train_examples, data.chat_tokenizer)
    from sft_research.checkpoints.names import load_tokenizer

    tokenizer = load_tokenizer(str(baseline))
    decoded = [tokenizer.decode([t for t, m in zip(s.sequences[0].input_ids, s.sequences[0].completion_mask) if m]) for s in scored]
    assert decoded == [kept_answer, "4"]
    assert tokenizer.decode(scored[0].sequences[0].input_ids).startswith("<|user|>\n1 + 1 =")
    assert tokenizer.eos_token_id not in scored[0].sequences[0].input_ids[-2:], "the cut answer is scored unfinished"
    assert scored[0].sequences[0].input_ids != cut.sequences[0].input_ids, "another tokenizer, other ids"
