"""Every objective trains a tiny model end to end from LightningCLI, and frozen-model inputs are right and cached."""

import csv
import math

import pytest
import torch

from sft_research.checkpoints.tiny import ZEPHYR_STYLE_TEMPLATE, build_tiny_checkpoint
from sft_research.cli.main import main
from sft_research.data import FileDataset, SFTDataModule
from sft_research.frozen import cache as frozen
from sft_research.frozen.cache import frozen_label_logprobs
from sft_research.model.loading import ModelConfig, load_model
from sft_research.model.logprobs import sequence_logprobs
from tests.conftest import PAIR_ROWS, SFT_ROWS, file_fit_args, write_jsonl

pytestmark = pytest.mark.usefixtures("private_cache")


def fit(model_dir, data_path, tmp_path, objective, *extra, steps=3):
    cli = main(
        [
            "fit",
            *file_fit_args(model_dir, data_path, tmp_path, steps),
            f"--model.objective={objective}",
            "--model.optimizer.lr=1e-3",
            "--data.micro_batch_size=2",
            *extra,
        ]
    )
    with open(cli.trainer.logger.log_dir + "/metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/loss")]
    return cli, rows


CASES = [
    ("sft_research.objectives.IwSFT", SFT_ROWS, ["iw/weight", "iw/weight_min", "iw/weight_max", "iw/clipped_fraction"], []),
    (
        "sft_research.objectives.IwSFT",
        SFT_ROWS,
        ["iw/weight", "iw/clipped_fraction"],
        ["--model.objective.token_level=true", "--model.objective.use_quality=true"],
    ),
    ("sft_research.objectives.PoFT", SFT_ROWS, ["poft/effective_weight", "poft/effective_weight_min", "poft/baseline_score"], []),
    ("sft_research.objectives.DPO", PAIR_ROWS, ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"], []),
    ("sft_research.objectives.DPO", PAIR_ROWS, ["rewards/margins"], ["--model.objective.loss_type=ipo"]),
    ("sft_research.objectives.IRFT", PAIR_ROWS, ["rewards/accuracies", "rewards/margins"], []),
]


@pytest.mark.parametrize("objective,rows,diagnostics,extra", CASES, ids=[f"{c[0].split('.')[-1]}-{i}" for i, c in enumerate(CASES)])
def test_objective_trains_from_the_cli_and_logs_its_diagnostics(tiny_model_dir, tmp_path, objective, rows, diagnostics, extra):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    if "PoFT" in objective:
        extra = [*extra, f"--model.objective.baselines=[{build_tiny_checkpoint(tmp_path / 'baseline', seed=5)}]"]
    cli, logged = fit(tiny_model_dir, path, tmp_path, objective, *extra)
    assert len(logged) == 3
    for name in diagnostics:
        values = [float(row[f"train/{name}"]) for row in logged]
        assert all(torch.isfinite(torch.tensor(values))), name
    losses = [float(row["train/loss"]) for row in logged]
    assert all(torch.isfinite(torch.tensor(losses)))
    if "IwSFT" in objective and not extra:
        assert float(logged[0]["train/iw/weight"]) == pytest.approx(1.0, abs=1e-4), "the first step is plain SFT"
    if "PoFT" in objective:
        # A baseline other than the start model: the per-example weights differ from 0.5 and from each other.
        weights = [float(row["train/poft/effective_weight"]) for row in logged]
        assert abs(weights[0] - 0.5) > 1e-3
        assert float(logged[0]["train/poft/effective_weight_max"]) > float(logged[0]["train/poft/effective_weight_min"]) + 1e-4
    if "token_level=true" in " ".join(extra):
        assert float(logged[0]["train/iw/weight"]) == pytest.approx(1.0, abs=1e-4), "every token's weight is 1 at the start"
    if "DPO" in objective or "IRFT" in objective:
        # policy == reference at step 0: every margin is 0, so the sigmoid loss is -log sigmoid(0) = log 2 and IPO's
        # is (0 - 1 / (2 beta))^2 = 25 at beta 0.1; training then lowers it and separates chosen from rejected
        ipo = "--model.objective.loss_type=ipo" in extra
        assert float(logged[0]["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-4)
        assert losses[0] == pytest.approx(25.0 if ipo else math.log(2), rel=1e-4)
        assert losses[-1] < losses[0] and float(logged[-1]["train/rewards/margins"]) > 0


@pytest.mark.parametrize(
    "objective,rows,message",
    [
        ("sft_research.objectives.SFT", PAIR_ROWS, "SFT trains on SFT or text records, but this source holds preference records"),
        ("sft_research.objectives.DPO", SFT_ROWS, "DPO trains on preference records .*, but this source holds SFT records"),
    ],
)
def test_records_of_the_wrong_kind_fail_before_any_model_loads(tiny_model_dir, tmp_path, monkeypatch, objective, rows, message):
    from sft_research.data import DataError
    from sft_research.train import module

    path = write_jsonl(tmp_path / "d.jsonl", rows)
    monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("a model was loaded before the check"))
    with pytest.raises(DataError, match=f"{path}: {message}"):
        fit(tiny_model_dir, path, tmp_path, objective)


def test_a_file_that_mixes_record_kinds_is_rejected_at_its_first_other_row(tiny_model_dir, tmp_path):
    from sft_research.data import DataError

    sft = [{"prompt": r["prompt"], "completion": r["completion"]} for r in SFT_ROWS]
    path = write_jsonl(tmp_path / "d.jsonl", sft[:3] + PAIR_ROWS[:1] + sft[3:])
    with pytest.raises(
        DataError, match=r"d.jsonl, row 4: mixes record kinds: the first row holds SFT records .*, this one preference records"
    ):
        fit(tiny_model_dir, path, tmp_path, "sft_research.objectives.SFT")


def test_plain_text_records_train_every_token(tiny_model_dir, tmp_path, tiny_tokenizer):
    rows = [{"text": "the quick brown fox jumps over the lazy dog"}, {"text": "What is the capital of France? Paris."}]
    path = write_jsonl(tmp_path / "d.jsonl", rows * 4)
    cli, logged = fit(tiny_model_dir, path, tmp_path, "sft_research.objectives.SFT", steps=2)
    (sequence,) = cli.datamodule.train_examples[0].sequences
    assert tiny_tokenizer.decode(sequence.input_ids) == rows[0]["text"] + tiny_tokenizer.eos_token
    assert all(sequence.completion_mask), "every token is a target (the first has no context and is never scored)"
    assert len(logged) == 2 and float(logged[1]["train/loss"]) < float(logged[0]["train/loss"])


@pytest.mark.parametrize("objective,rows", [("sft_research.objectives.IwSFT", SFT_ROWS), ("sft_research.objectives.DPO", PAIR_ROWS)])
def test_cached_and_on_the_fly_reference_give_the_same_losses(tiny_model_dir, tmp_path, objective, rows):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    reference = build_tiny_checkpoint(tmp_path / "reference", seed=7)  # a reference that differs from the start model
    runs = {}
    for mode in ("cached", "on_the_fly"):
        _, logged = fit(
            tiny_model_dir, path, tmp_path / mode, objective, f"--model.frozen.reference={reference}", f"--model.frozen.mode={mode}"
        )
        runs[mode] = [float(row["train/loss"]) for row in logged]
    torch.testing.assert_close(runs["cached"], runs["on_the_fly"], rtol=0, atol=1e-5)


def test_frozen_logprobs_are_cached_checked_and_reused(tiny_model_dir, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir))
    data.setup("fit")
    config = ModelConfig(str(tiny_model_dir))
    first = frozen_label_logprobs(config, data.train_examples, data.tokenizer.pad_token_id, batch_size=5)
    model = load_model(config).eval()
    for example, logps in zip(data.train_examples, first):
        ids = torch.tensor([example.sequences[0].input_ids])
        with torch.no_grad():
            expected = sequence_logprobs(model, ids, torch.ones_like(ids))
        torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)
    (cached,) = list((tmp_path / "cache" / "frozen").glob("*.safetensors"))

    monkeypatch.setattr(frozen, "load_model", lambda *a, **k: pytest.fail("the cache should have been used"))
    again = frozen_label_logprobs(config, data.train_examples, data.tokenizer.pad_token_id, batch_size=3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    monkeypatch.undo()
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))

    cached.write_bytes(cached.read_bytes()[:100])  # a write killed half-way is never trusted
    repaired = frozen_label_logprobs(config, data.train_examples, data.tokenizer.pad_token_id)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(first, repaired))
    assert cached.stat().st_size > 100
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_poft_baselines_use_their_own_tokenizer_and_template_and_score_content_only(tiny_model_dir, tmp_path):
    """Two baselines: one with the target's tokenizer, one with another vocabulary and another chat template; each
    scores the response's content through its own, without the end-of-turn tokens (the official scorer's rule)."""
    from sft_research.checkpoints.names import load_tokenizer
    from sft_research.data.tokenize import ChatTokenizer

    other = build_tiny_checkpoint(tmp_path / "other", seed=3, vocab_size=262, chat_template=ZEPHYR_STYLE_TEMPLATE)
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    same_tokenizer = build_tiny_checkpoint(tmp_path / "same_tokenizer", seed=9)
    cli, logged = fit(
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
        fit(tiny_model_dir, path, tmp_path, "sft_research.objectives.PoFT", f"--model.objective.baselines=[{tiny_model_dir}]")
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
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), max_length=40, truncation="truncate_completion")
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


def test_held_out_preference_pairs_report_what_dpo_users_read(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", PAIR_ROWS[:8])
    val = write_jsonl(tmp_path / "val.jsonl", PAIR_ROWS[8:])
    cli, _ = fit(
        tiny_model_dir,
        train,
        tmp_path,
        "sft_research.objectives.DPO",
        "--data.val=sft_research.data.FileDataset",
        f"--data.val.path={val}",
        "--trainer.val_check_interval=1",
        steps=2,
    )
    with open(cli.trainer.logger.log_dir + "/metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/loss")]
    assert len(rows) == 2
    first, last = ({k: float(v) for k, v in row.items() if k.startswith("val/") and v} for row in (rows[0], rows[-1]))
    for name in ("val/loss", "val/rewards/accuracies", "val/rewards/margins", "val/rewards/chosen", "val/rewards/rejected"):
        assert name in first, name
    assert first["val/rewards/margins"] == pytest.approx(first["val/rewards/chosen"] - first["val/rewards/rejected"], abs=1e-5)
    assert 0.0 <= last["val/rewards/accuracies"] <= 1.0
    # One step from the reference, the held-out margins are still near 0, so the DPO loss is near log 2.
    assert first["val/loss"] == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(0.0)).item(), abs=0.05)
