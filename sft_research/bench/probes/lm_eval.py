"""The lm-eval probe: items of EleutherAI's lm-evaluation-harness tasks (MMLU, ARC, HellaSwag, ... or a folder of local
task YAMLs), scored one by one on the model in memory.

lm-eval 0.4 gives, with ``simple_evaluate(..., log_samples=True)``, ``results["samples"][task]``: one entry per
document and filter, with its ``doc_id``, its ``filter`` name, the names of its per-item ``metrics`` and each one's
value (``acc`` 0/1 for multiple choice, ``exact_match`` 0/1 for generation); and ``results["configs"][task]``, the
task's ``metric_list`` and ``filter_list`` in the order its YAML gives them. ``results["group_subtasks"]`` names the
children of groups such as ``mmlu``. lm-eval is imported only when a model is measured.
"""

import difflib
import functools
import importlib.util
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np
import torch

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.bench.stats import differences, flips
from sft_research.errors import ConfigError


@dataclass
class LmEvalProbe(Probe):
    """lm-eval accuracy, fine-tuned minus base, item by item, and the flip rate: the fraction of items the base model
    gets right and the fine-tuned model wrong (1 → 0).

    Each item's value is its task's primary per-item metric (the first of the task's ``metric_list``: ``acc`` for
    multiple choice, ``exact_match`` for generation) under its first filter. All tasks' items go into one list (so
    one mean over all items, not a mean of task means): the tasks named directly in the order given, a group's
    subtasks (e.g. ``mmlu``'s) in name order, then those of tags in name order; within a task by ``doc_id``.

    Args:
        tasks: lm-eval task, group or tag names (``lm-eval ls tasks``), e.g. ``["arc_easy", "hellaswag"]``.
        include_path: a folder of task YAMLs added to lm-eval's own (local tasks, or local copies of the data).
        include_defaults: also index lm-eval's own tasks; False: only ``include_path``'s (indexing lm-eval's thousands
            of YAMLs takes seconds per process).
        limit: items per task (the first ones); None: all.
        num_fewshot: few-shot examples per prompt; None: each task's own setting (0 where it has none).
        metric: the per-item metric to read instead of each task's first one (e.g. ``acc_norm`` for HellaSwag).
        apply_chat_template: render prompts with the tokenizer's chat template (lm-eval's option), for a chat model.
        name: the probe's name, the key of its items in ``results.jsonl`` and the prefix of its metrics
            (``<name>_accuracy_change``, ``<name>_flip_rate``): two lm-eval probes in one suite (a standard benchmark
            and a task of yours) need two names.
    """

    tasks: list[str] = field(default_factory=list)
    include_path: str | None = None
    include_defaults: bool = True
    limit: int | None = None
    num_fewshot: int | None = None
    metric: str | None = None
    apply_chat_template: bool = False
    name: str = "lm_eval"

    @property
    def metrics(self) -> tuple[Metric, ...]:
        shown = "lm-eval" if self.name == "lm_eval" else self.name
        return (
            Metric(f"{self.name}_accuracy_change", f"Δ {shown} accuracy", higher_is_better=True),
            Metric(f"{self.name}_flip_rate", f"{shown} flip rate (1→0)", higher_is_better=False),
        )

    @property
    def value_label(self) -> str:
        return f"{'lm-eval' if self.name == 'lm_eval' else self.name} accuracy"

    @property
    def who(self) -> str:
        """How messages name this probe."""
        return "LmEvalProbe" if self.name == "lm_eval" else f"LmEvalProbe {self.name!r}"

    def task_manager(self):
        """lm-eval's index of its tasks and ``include_path``'s, after checking this probe's settings (task names against it).

        Checked by :meth:`check`, before the base model loads, rather than when the suite is read: the command line
        shows a ConfigError from there as one line, but one raised while jsonargparse builds the suite inside its own
        error and traceback.
        """
        if importlib.util.find_spec("lm_eval") is None:
            raise ConfigError(f"{self.who}: lm-eval is not installed; pip install 'lm-eval>=0.4,<0.5'")
        if not self.tasks:
            raise ConfigError(f"{self.who}: tasks is empty; name at least one lm-eval task, e.g. [arc_easy]")
        include = None if self.include_path is None else str(Path(self.include_path).expanduser())
        if include is not None and not Path(include).is_dir():
            raise ConfigError(f"{self.who}: include_path {self.include_path!r} is not a folder (of lm-eval task YAMLs)")
        if not self.include_defaults and include is None:
            raise ConfigError(f"{self.who}: include_defaults is false but there is no include_path: no task to run")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{self.who}: limit {self.limit} must be at least 1 (items per task), or None for all")
        manager = _task_manager(include, self.include_defaults)
        known = set(manager.all_tasks)
        for task in self.tasks:
            if task not in known and not Path(task).is_file():
                hint = difflib.get_close_matches(task, manager.all_tasks, n=3)
                where = (
                    f"a task in include_path {include!r} (lm-eval's own are left out: include_defaults is false)"
                    if not self.include_defaults
                    else "an lm-eval task" + ("" if include is None else f" nor in include_path {include!r}")
                )
                raise ConfigError(f"{self.who}: tasks: {task!r} is not {where}" + (f"; did you mean {hint}?" if hint else ""))
        return manager

    def check(self, task) -> None:
        """The settings, and every task's data read once (from the hub, its local cache or local files): a hub data set
        that cannot be reached stops here, in one line, before the base model is evaluated, rather than in
        lm-eval's traceback after it."""
        manager = self.task_manager()
        from lm_eval.tasks import get_task_dict

        from sft_research.checkpoints.hub import cache_only_unless_reachable

        with cache_only_unless_reachable() as reachable:
            try:
                get_task_dict(list(self.tasks), manager)
            except Exception as error:  # datasets' and lm-eval's errors have no common base; each is said in one line
                where = "" if reachable else "the hub cannot be reached from here and it is not in the local cache; "
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise ConfigError(
                    f"{self.who}: the data of tasks {list(self.tasks)} could not be read ({where}{type(error).__name__}: {first}). "
                    "Without network access to the hub, read them where it can be reached once (they stay in the local cache), "
                    "or write a local task YAML over a local file (include_path)"
                ) from error

    def measure(self, model, context: ProbeContext) -> list[float]:
        manager = self.task_manager()  # first: it says so in one line if lm-eval is missing
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        with _global_rng_kept(model):
            results = lm_eval.simple_evaluate(
                model=HFLM(pretrained=model, tokenizer=context.tokenizer, batch_size=context.batch_size),
                tasks=list(self.tasks),
                num_fewshot=self.num_fewshot,
                limit=self.limit,
                log_samples=True,
                bootstrap_iters=0,  # no standard errors: the harness computes its own from the items
                apply_chat_template=self.apply_chat_template,
                task_manager=manager,
            )
        samples = results["samples"]
        return [
            v for task in _task_order(self.tasks, samples, results["group_subtasks"]) for v in self._values(task, samples[task], results)
        ]

    def _values(self, task: str, samples: list[dict], results: dict) -> list[float]:
        """One task's per-item values, by ``doc_id``."""
        if not samples:
            return []
        config = results["configs"][task]
        # A task with several filters (e.g. gsm8k's strict and flexible answer extraction) logs each document once per
        # filter; the first is the task's main one.
        filters = config.get("filter_list") or [{"name": samples[0]["filter"]}]
        metric = self.metric or (config.get("metric_list") or [{"metric": samples[0]["metrics"][0]}])[0]["metric"]
        rows = sorted((s for s in samples if s["filter"] == filters[0]["name"]), key=lambda s: s["doc_id"])
        if metric not in rows[0]:
            raise ConfigError(f"{self.who}: metric {metric!r} is not one of task {task!r}'s per-item metrics {rows[0]['metrics']}")
        if not isinstance(rows[0][metric], Real):
            raise ConfigError(
                f"{self.who}: task {task!r}'s metric {metric!r} has no per-item number (a corpus-level metric); choose another with metric"
            )
        return [float(row[metric]) for row in rows]

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        change, flip_rate = (metric.name for metric in self.metrics)
        return {change: differences(finetuned, base), flip_rate: flips(finetuned, base)}


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None, include_defaults: bool):
    """lm-eval's ``TaskManager``, built once per setting and process: it reads every task YAML (thousands: seconds), so
    edits to a folder's YAMLs show in the next process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _task_order(requested: list[str], samples: dict, groups: dict[str, list[str]]) -> list[str]:
    """The leaf tasks that have samples: those requested in their order, groups expanded (children in name order),
    then any others (tags' tasks) in name order."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in samples and name not in order:
            order.append(name)
        for child in sorted(groups.get(name, [])):
            visit(child)

    for name in requested:
        visit(name)
    return order + sorted(set(samples) - set(order))


@contextmanager
def _global_rng_kept(model):
    """``simple_evaluate`` reseeds Python's, NumPy's and torch's global generators (for its own determinism); the run
    that measures gets its generators' states back, so that what it draws next does not depend on the probe."""
    python, numpy = random.getstate(), np.random.get_state()
    devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
