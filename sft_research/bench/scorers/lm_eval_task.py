"""An lm-eval-harness task as the task score: its per-item values of a metric you name."""

# No postponed annotations here: jsonargparse reads ``list[str]`` to build the scorer from a suite's YAML.
from dataclasses import dataclass, field

from sft_research.bench.probes.base import ProbeContext
from sft_research.bench.probes.lm_eval import LmEvalProbe
from sft_research.bench.scorers.base import Scorer


@dataclass
class LmEvalTask(Scorer):
    """The per-item ``metric`` of lm-eval tasks (a hub task, or a local task YAML in ``include_path``), scored by
    lm-eval on the model in memory exactly as :class:`~sft_research.bench.probes.LmEvalProbe` scores its items; the
    task score is their mean. The items are the lm-eval task's own, so a suite may leave ``task.heldout`` out (the KL
    probe, which reads held-out prompts, then has none). Its data are checked before any model loads.

    Args:
        tasks: lm-eval task, group or tag names.
        metric: the per-item metric, e.g. ``acc`` or ``exact_match``.
        include_path: a folder of task YAMLs added to lm-eval's own.
        include_defaults: also index lm-eval's own tasks.
        limit: items per task (the first ones); None: all.
        num_fewshot: few-shot examples per prompt; None: each task's own setting.
        apply_chat_template: render prompts with the tokenizer's chat template.
    """

    tasks: list[str] = field(default_factory=list)
    metric: str = "acc"
    include_path: str | None = None
    include_defaults: bool = True
    limit: int | None = None
    num_fewshot: int | None = None
    apply_chat_template: bool = False

    @property
    def label(self) -> str:
        return f"lm-eval {self.metric}"

    def probe(self) -> LmEvalProbe:
        return LmEvalProbe(
            tasks=list(self.tasks),
            include_path=self.include_path,
            include_defaults=self.include_defaults,
            limit=self.limit,
            num_fewshot=self.num_fewshot,
            metric=self.metric,
            apply_chat_template=self.apply_chat_template,
            name="task.scorer",
        )

    def check(self, task) -> None:
        self.probe().check(task)

    def measure(self, model, context: ProbeContext, max_new_tokens: int) -> list[float]:
        return self.probe().measure(model, context)
