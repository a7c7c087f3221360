"""Evaluates a model on a suite: per-item values of the task score and of every forgetting probe, and the metrics
that pair them with the base model's."""

from __future__ import annotations

from sft_research.bench.probes import Metric, Probe, ProbeContext
from sft_research.bench.stats import Estimate, mean_se
from sft_research.checkpoints.names import load_tokenizer
from sft_research.data.reasoning_gym_task import ReasoningGymTask
from sft_research.data.tokenize import Tokenizer
from sft_research.model.loading import ModelConfig, load_model
from sft_research.timings import timed

# One model's measurements: per probe name, one value per item.
Measurements = dict[str, list[float]]


class Measures:
    """The probes a suite measures with (the task score first) and the metrics they report."""

    def __init__(self, probes: list[Probe]):
        self.probes = probes
        self.metrics: list[Metric] = [metric for probe in probes for metric in probe.metrics]
        for kind, names in (("probe", [p.name for p in probes]), ("metric", [m.name for m in self.metrics])):
            if len(set(names)) != len(names):
                raise ValueError(f"a suite's probes need unique {kind} names, got {names}")

    @property
    def names(self) -> list[str]:
        return [metric.name for metric in self.metrics]

    def item_values(self, finetuned: Measurements, base: Measurements) -> dict[str, list[float]]:
        """Per metric, one value per item, in the same item order for every model (each probe's :meth:`compare`).
        Metrics are their means, and arms are compared item by item on them."""
        missing = [probe.name for probe in self.probes if probe.name not in finetuned or probe.name not in base]
        if missing:
            raise ValueError(f"no measurements of probe(s) {missing}: the results were written by other probes (start a new output_dir)")
        values = {}
        for probe in self.probes:
            compared = probe.compare(finetuned[probe.name], base[probe.name])
            declared = [metric.name for metric in probe.metrics]
            if list(compared) != declared:
                raise ValueError(f"probe {probe.name!r}: compare() returned metrics {list(compared)}, but it declares {declared}")
            values.update(compared)
        return values

    def estimates(self, finetuned: Measurements, base: Measurements) -> dict[str, Estimate]:
        """The mean of each metric's item values, with its item-level standard error."""
        return {name: mean_se(values) for name, values in self.item_values(finetuned, base).items()}


class Evaluator:
    """Holds the base model (the KL probe's π_0) and the evaluation data of a suite."""

    def __init__(self, suite, device):
        self.suite, self.device = suite, device
        spec = suite.task
        self.task = ReasoningGymTask(spec.task, spec.options, spec.train_size, spec.eval_size, spec.seed, spec.noise_fraction)
        self.measures = suite.measures()
        self.base = load_model(ModelConfig(suite.base_model)).to(device).eval()

    def evaluate(self, name_or_path: str, is_base: bool = False) -> Measurements:
        model = self.base if is_base else load_model(ModelConfig(name_or_path)).to(self.device).eval()
        tokenizer = load_tokenizer(name_or_path)
        context = ProbeContext(self.base, tokenizer, Tokenizer(tokenizer), self.task, self.suite.eval_batch_size)
        measured = {}
        for probe in self.measures.probes:
            with timed(f"evaluation: {probe.name}"):
                measured[probe.name] = probe.measure(model, context)
        return measured
