"""Evaluates a model on a suite: per-item values of the task score and of every forgetting probe, and the metrics
that pair them with the base model's."""

from __future__ import annotations

from sft_research.bench.probes import Metric, Probe, ProbeContext
from sft_research.bench.stats import Estimate, mean_se
from sft_research.checkpoints.names import load_tokenizer
from sft_research.data.tokenize import ChatTokenizer
from sft_research.model.loading import ModelConfig, load_model
from sft_research.runs.timings import timed

# One model's measurements: per probe name, one value per item.
Measurements = dict[str, list[float]]


class Measures:
    """The probes a suite measures with (the task score first) and the metrics they report."""

    def __init__(self, probes: list[Probe]):
        self.probes = probes
        self.metrics: list[Metric] = [metric for probe in probes for metric in probe.metrics]
        # The summary's columns: per probe, the mean of its own measurement where it labels one, then its metrics.
        self.columns: list[Metric] = [column for probe in probes for column in (*value_column(probe), *probe.metrics)]
        for kind, names in (("probe", [p.name for p in probes]), ("metric", [m.name for m in self.columns])):
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

    def value_estimates(self, measured: Measurements) -> dict[str, Estimate]:
        """Per probe with a value column, the mean of its own measurement on one model, with its standard error."""
        return {column.name: mean_se(measured[probe.name]) for probe in self.probes for column in value_column(probe)}


def value_column(probe: Probe) -> list[Metric]:
    """The column of a probe's own measurement (``<name>_value``), if it labels one."""
    label = probe.value_label
    return [] if label is None else [Metric(f"{probe.name}_value", label, probe.metrics[0].higher_is_better)]


class Evaluator:
    """Holds the base model (the KL probe's π_0) and the evaluation data of a suite. The task's held-out rows, its
    scorer and every probe are checked before the base model loads (:meth:`Probe.check`): a bad row, a scorer that
    cannot score this task or a benchmark whose data cannot be reached stops in one line."""

    def __init__(self, suite, device):
        self.suite, self.device = suite, device
        self.task = suite.task.evaluation_set()
        self.measures = suite.measures()
        for probe in self.measures.probes:
            probe.check(self.task)
        self.base = load_model(ModelConfig(suite.base_model)).to(device).eval()

    def evaluate(self, name_or_path: str, is_base: bool = False) -> Measurements:
        model = self.base if is_base else load_model(ModelConfig(name_or_path)).to(self.device).eval()
        tokenizer = load_tokenizer(name_or_path)
        context = ProbeContext(self.base, tokenizer, ChatTokenizer(tokenizer), self.task, self.suite.eval_batch_size)
        measured = {}
        for probe in self.measures.probes:
            with timed(f"evaluation: {probe.name}"):
                measured[probe.name] = probe.measure(model, context)
        return measured
