"""Each scorer against values computed by hand: exact and numeric match after their documented normalisation and
extraction, a function of yours, multiple choice by log-likelihood (a model whose log-probabilities are known), and the
reasoning-gym verifier; each bad held-out row is one line naming its file, row and field."""

import math
from types import SimpleNamespace

import pytest
import torch

import sft_research.bench.probes.verifier as verifier_module
from sft_research.bench.heldout import HeldOutSet
from sft_research.bench.probes import ProbeContext
from sft_research.bench.probes.verifier import greedy_answers
from sft_research.bench.scorers import CallableScorer, ExactMatch, MultipleChoice, NumericMatch, Verifier
from sft_research.bench.scorers.choice import continuation_logprobs
from sft_research.data import DataError, RawRecord, ReasoningGymTask
from sft_research.data.tokenize import ChatTokenizer
from sft_research.errors import ConfigError


def held_out(*rows: dict) -> HeldOutSet:
    return HeldOutSet("items.jsonl", [RawRecord("items.jsonl", row, fields) for row, fields in enumerate(rows, 1)])


ANY_ROW = held_out({"prompt": "q", "completion": "a"})


def word_recall(prompt: str, answer: str, reference: str) -> float:
    """A scorer of the tests' own: the share of the reference's words that the answer has."""
    words = reference.split()
    return sum(word in answer.split() for word in words) / len(words)


def two_arguments(answer, reference):
    return 1.0


def not_a_number(prompt, answer, reference):
    return "yes"


def test_exact_match_normalises_as_documented():
    plain = ExactMatch()
    assert plain.score("q", "  Paris \n", "Paris") == 1.0, "ends trimmed"
    assert plain.score("q", "The  capital\tis\nParis", "The capital is Paris") == 1.0, "runs of whitespace made one space"
    assert plain.score("q", "paris", "Paris") == 0.0 and ExactMatch(ignore_case=True).score("q", "paris", "PARIS") == 1.0
    assert plain.score("q", "Paris.", "Paris") == 0.0
    assert ExactMatch(ignore_punctuation=True).score("q", "it's 3 p.m.!", "its 3 pm") == 1.0
    assert ExactMatch(ignore_punctuation=True).score("q", "a - b", "a b") == 1.0, "punctuation out, then whitespace collapsed"
    assert ExactMatch(whitespace=False).score("q", " Paris", "Paris") == 0.0
    assert ExactMatch(whitespace=False).score("q", "Paris", "Paris") == 1.0
    assert plain.label == "exact match" and ExactMatch(extract="boxed").label == "exact match of boxed"


def test_answers_are_extracted_by_the_last_match():
    after = ExactMatch(extract="after_answer")
    assert after.score("q", "Let me think.\nAnswer: Paris\nDone.", "Paris") == 1.0, "the rest of the line"
    assert after.score("q", "answer: Rome. ANSWER:  Paris", "Paris") == 1.0, "the last one, any case"
    assert after.score("q", "Paris", "Paris") == 0.0, "nothing to extract: wrong"
    boxed = ExactMatch(extract="boxed")
    assert boxed.score("q", r"either \boxed{1} or \boxed{\frac{1}{2}}", r"\frac{1}{2}") == 1.0
    assert ExactMatch(extract=r"is (\w+)").score("q", "it is Paris, and Rome is far", "far") == 1.0, "a group: its text"
    assert ExactMatch(extract=r"\d+").score("q", "12 then 345", "345") == 1.0, "no group: the whole match"
    assert ExactMatch(extract="last_number").score("q", "about -1,234.5 units", "-1,234.5") == 1.0
    with pytest.raises(ConfigError, match=r"extract '\(unclosed': neither one of \['after_answer', 'boxed', 'last_number'\]"):
        ExactMatch(extract="(unclosed").check(held_out({"prompt": "q", "completion": "a"}))
    demonstration = held_out({"prompt": "q", "completion": "6 * 7 is 42.\nAnswer: 42"})
    (record,) = demonstration.records
    assert ExactMatch(extract="after_answer", extract_reference=True).reference(record) == "42"
    assert ExactMatch(extract="after_answer").reference(record) == "6 * 7 is 42.\nAnswer: 42"
    with pytest.raises(DataError, match=r"^items.jsonl, row 1, field 'completion': holds no match of extract 'boxed'"):
        ExactMatch(extract="boxed", extract_reference=True).check(demonstration)


def test_numeric_match_within_its_tolerances():
    last = NumericMatch()
    assert last.score("q", "The total is 1,234 apples", 1234.0) == 1.0
    assert last.score("q", "3 then 4", 3.0) == 0.0, "the last number"
    assert last.score("q", "no number at all", 3.0) == 0.0
    assert last.score("q", "x = -2.5e3", -2500.0) == 1.0
    assert NumericMatch(abs_tol=0.001).score("q", "3.141", 3.14159) == 1.0  # |3.141 - 3.14159| = 0.00059
    assert NumericMatch(abs_tol=0.0001).score("q", "3.141", 3.14159) == 0.0
    assert NumericMatch(rel_tol=0.01).score("q", "99", 100.0) == 1.0  # 1 <= 0.01 * 100
    assert NumericMatch(rel_tol=0.01).score("q", "98.9", 100.0) == 0.0  # 1.1 > 0.01 * 100
    assert NumericMatch(extract="boxed").score("q", r"\boxed{42}, not 7", 42.0) == 1.0
    assert NumericMatch(abs_tol=0.5, rel_tol=0.1).label == "numeric match (abs_tol 0.5, rel_tol 0.1)"
    rows = held_out(
        {"prompt": "a", "completion": 42},
        {"prompt": "b", "completion": "1,000"},
        {"prompt": "c", "completion": "so 6 * 7 = 42"},
        {"prompt": "d", "completion": "forty-two"},
    )
    one, two, three, four = rows.records
    assert [last.reference(r) for r in (one, two)] == [42.0, 1000.0]
    assert NumericMatch(extract_reference=True).reference(three) == 42.0
    with pytest.raises(DataError, match=r"^items.jsonl, row 3, field 'completion': is not a number: 'so 6 \* 7 = 42'"):
        last.reference(three)
    with pytest.raises(DataError, match=r"^items.jsonl, row 3, field 'completion'"):
        last.check(rows)


def test_a_function_of_yours_by_its_import_path():
    scorer = CallableScorer("tests.test_scorers.word_recall")
    assert scorer.score("q", "Paris is big", "Paris is the capital") == 0.5
    assert scorer.label == "word_recall"
    with pytest.raises(ConfigError, match=r"^task.scorer function 'tests.test_scorers.nope': module 'tests.test_scorers' has no 'nope'"):
        CallableScorer("tests.test_scorers.nope").check(ANY_ROW)
    with pytest.raises(ConfigError, match=r"^task.scorer function 'no_such_module.f': module 'no_such_module' cannot be imported"):
        CallableScorer("no_such_module.f").check(ANY_ROW)
    with pytest.raises(ConfigError, match=r"must take \(prompt, answer, reference\)"):
        CallableScorer("tests.test_scorers.two_arguments").check(ANY_ROW)
    with pytest.raises(ConfigError, match=r"returned 'yes' for the prompt 'q'; it must return a finite number"):
        CallableScorer("tests.test_scorers.not_a_number").score("q", "a", "b")


def test_held_out_rows_are_checked_before_any_model_loads():
    with pytest.raises(DataError, match=r"^items.jsonl, row 2, field 'prompt': is missing"):
        held_out({"prompt": "a", "completion": "b"}, {"question": "c", "completion": "d"})
    with pytest.raises(DataError, match=r"^items.jsonl, row 1, field 'completion': must be a string, got int"):
        ExactMatch().check(held_out({"prompt": "a", "completion": 7}))
    with pytest.raises(ConfigError, match="scores a held-out set of prompts and references"):
        ExactMatch().check(ReasoningGymTask("chain_sum", train_size=2, eval_size=2))
    with pytest.raises(ConfigError, match=r"^task.scorer Verifier scores a reasoning-gym task's answers"):
        Verifier().check(held_out({"prompt": "a", "completion": "b"}))


class Bigram(torch.nn.Module):
    """A language model whose logits depend on the previous token alone (``table[token]``): every log-probability it
    gives is a log-softmax of one row of the table, computed by hand below."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def log_softmax_at(row: list[float], index: int) -> float:
    return row[index] - math.log(sum(math.exp(v) for v in row))


def test_continuations_are_scored_after_their_context_token_by_token():
    vocab = 6
    table = torch.zeros(vocab, vocab)
    table[3, 4], table[4, 5] = 2.0, -1.0
    uniform = -math.log(vocab)
    sums = continuation_logprobs(Bigram(table), [([1, 2, 3], [4, 5]), ([1], [2]), ([0, 0], [3, 4, 5])], pad_token_id=0, batch_size=2)
    rows = table.tolist()
    assert sums[0] == pytest.approx(log_softmax_at(rows[3], 4) + log_softmax_at(rows[4], 5))
    assert sums[1] == pytest.approx(uniform)
    assert sums[2] == pytest.approx(uniform + log_softmax_at(rows[3], 4) + log_softmax_at(rows[4], 5))


def test_multiple_choice_takes_the_most_likely_option(tiny_tokenizer):
    """The tiny tokenizer writes Paris in 2 tokens, Rome in 4, London in 5. Under a model that gives every token the
    same probability, an option's log-likelihood is -tokens * log V: the fewest tokens win; per character (acc_norm)
    Paris -0.4, Rome -1.0, London -0.83 (times log V)."""
    assert [len(tiny_tokenizer(o, add_special_tokens=False)["input_ids"]) for o in ("Paris", "Rome", "London")] == [2, 4, 5]
    task = held_out(
        {"prompt": "Capital of France?", "choices": ["Paris", "Rome", "London"], "completion": "Paris"},
        {"prompt": "Capital of France?", "choices": ["Rome", "Paris"], "completion": 1},
        {"prompt": "Capital of Italy?", "choices": ["Rome", "London"], "completion": "London"},
    )
    vocab = len(tiny_tokenizer)
    context = ProbeContext(base=None, tokenizer=tiny_tokenizer, chat_tokenizer=ChatTokenizer(tiny_tokenizer), task=task, batch_size=4)
    uniform = Bigram(torch.zeros(vocab, vocab))
    MultipleChoice().check(task)
    assert MultipleChoice().measure(uniform, context, max_new_tokens=1) == [1.0, 1.0, 0.0]
    assert MultipleChoice(length_normalized=True).measure(uniform, context, max_new_tokens=1) == [1.0, 1.0, 1.0]
    # A model that, after the assistant's header, prefers Rome's first token by e^20: Rome 20 - log(e^20 + V - 1) - 3 log V
    # = -17.3 against Paris' -log(e^20 + V - 1) - log V = -25.8 and London's -log(e^20 + V - 1) - 4 log V: Rome wins
    # wherever it is offered.
    header = context.chat_tokenizer.prompt_ids("Capital of France?")[-1]
    assert header == context.chat_tokenizer.prompt_ids("Capital of Italy?")[-1]
    table = torch.zeros(vocab, vocab)
    table[header, tiny_tokenizer("Rome", add_special_tokens=False)["input_ids"][0]] = 20.0
    assert MultipleChoice().measure(Bigram(table), context, max_new_tokens=1) == [0.0, 0.0, 0.0]
    assert MultipleChoice().label == "multiple choice"


def test_multiple_choice_rows_name_their_options_and_the_right_one():
    with pytest.raises(DataError, match=r"^items.jsonl, row 1, field 'choices': must list at least two options"):
        MultipleChoice().check(held_out({"prompt": "a", "choices": ["only"], "completion": "only"}))
    with pytest.raises(DataError, match=r"^items.jsonl, row 2, field 'completion': must be one of the row's 2 choices .*got 'c'"):
        MultipleChoice().check(
            held_out({"prompt": "a", "choices": ["a", "b"], "completion": 0}, {"prompt": "b", "choices": ["a", "b"], "completion": "c"})
        )
    with pytest.raises(DataError, match=r"row 1, field 'completion': must be one of the row's 2 choices .*got 2"):
        MultipleChoice().check(held_out({"prompt": "a", "choices": ["a", "b"], "completion": 2}))


@pytest.fixture
def scripted(monkeypatch):
    """The greedy answers the scorers read, given in order: what they then score is known by hand (the generation
    itself is tested in test_generation.py)."""
    answers: list[str] = []

    def generate(model, tokenizer, prompt_ids, attention_mask, config):
        return [answers.pop(0) for _ in range(len(prompt_ids))]

    monkeypatch.setattr(verifier_module, "generate", generate)
    return answers


def test_the_verifier_counts_only_full_scores(scripted, tiny_tokenizer):
    task = ReasoningGymTask("chain_sum", {"min_terms": 2, "max_terms": 2}, train_size=4, eval_size=4, seed=0)
    right = [entry["answer"] for entry in task.heldout_entries]
    scripted += [right[0], f"The answer is {right[1]}.", str(int(right[2]) + 1), "no idea"]
    context = ProbeContext(base=None, tokenizer=tiny_tokenizer, chat_tokenizer=ChatTokenizer(tiny_tokenizer), task=task, batch_size=3)
    Verifier().check(task)
    assert Verifier().measure(None, context, max_new_tokens=4) == [1.0, 1.0, 0.0, 0.0]


def test_generative_scorers_score_each_prompts_answer_against_its_reference(scripted, tiny_tokenizer):
    task = held_out(
        {"prompt": "2 + 2?", "completion": "4"},
        {"prompt": "Capital of France?", "completion": "Paris"},
        {"prompt": "3 * 3?", "completion": "9"},
    )
    context = ProbeContext(base=None, tokenizer=tiny_tokenizer, chat_tokenizer=ChatTokenizer(tiny_tokenizer), task=task, batch_size=2)
    scripted += ["It is 4.", " paris ", "9"]
    assert ExactMatch(ignore_case=True, ignore_punctuation=True).measure(None, context, 4) == [0.0, 1.0, 1.0]
    numbers = held_out(
        {"prompt": "2 + 2?", "completion": "4"}, {"prompt": "5 / 2?", "completion": 2.5}, {"prompt": "3 * 3?", "completion": "9"}
    )
    context = ProbeContext(base=None, tokenizer=tiny_tokenizer, chat_tokenizer=ChatTokenizer(tiny_tokenizer), task=numbers, batch_size=2)
    scripted += ["It is 4.", "about 3.1", "9.2 or so"]
    assert NumericMatch(abs_tol=0.5).measure(None, context, 4) == [1.0, 0.0, 1.0]  # |3.1 - 2.5| = 0.6, |9.2 - 9| = 0.2


def test_scorers_read_the_real_models_greedy_answers(tiny_model_dir, tiny_tokenizer):
    """The model's own greedy answers as references: exact match 1 on every item, 0 against other references."""
    from sft_research.model.loading import ModelConfig, load_model

    model = load_model(ModelConfig(str(tiny_model_dir))).eval()
    prompts = ["2 + 2 =", "Capital of France?", "State the final answer: 12 + 7 ="]
    chat_tokenizer = ChatTokenizer(tiny_tokenizer)
    probe = ProbeContext(base=None, tokenizer=tiny_tokenizer, chat_tokenizer=chat_tokenizer, task=None, batch_size=2)
    answers = greedy_answers(model, probe, prompts, max_new_tokens=5)
    own = held_out(*({"prompt": p, "completion": a} for p, a in zip(prompts, answers)))
    other = held_out(*({"prompt": p, "completion": a + " and more"} for p, a in zip(prompts, answers)))
    for task, expected in ((own, [1.0, 1.0, 1.0]), (other, [0.0, 0.0, 0.0])):
        context = ProbeContext(base=None, tokenizer=tiny_tokenizer, chat_tokenizer=chat_tokenizer, task=task, batch_size=2)
        assert ExactMatch(whitespace=False).measure(model, context, max_new_tokens=5) == expected
