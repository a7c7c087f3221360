"""A suite's task: the data every arm trains on, its held-out items, and how an answer to one is scored.

Either a reasoning-gym task (the default: generated training records with a fraction of their answers corrupted, each
record's verifier score as its quality, held-out items scored by the verifier), or a task of yours: training data from
any source a fit reads (``task.train``: a file, a ``datasets`` folder, a hub id), held-out prompts with their
references (``task.heldout``) and a scorer (:mod:`sft_research.bench.scorers`).
"""

# No postponed annotations here: jsonargparse reads the field types to build the held-out source and the scorer.
import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sft_research.bench.heldout import HeldOutSet
from sft_research.bench.probes.task_score import TaskScore
from sft_research.bench.scorers import LmEvalTask, Scorer, Verifier
from sft_research.data.sources import DataSource
from sft_research.errors import ConfigError, DataError

# A training source as in a fit config's data.train: {"class_path": ..., "init_args": {...}}, sources nested in it.
SourceConfig = dict[str, str | dict]

# A reasoning-gym task's settings where the suite leaves them out; a task of yours has none of them.
REASONING_GYM_DEFAULTS = {"task": "chain_sum", "options": None, "train_size": 240, "noise_fraction": 0.25}
EVAL_SIZE = 100  # a reasoning-gym task's held-out items where the suite leaves eval_size out


@dataclass
class TaskSpec:
    """The task every arm trains on, and its held-out evaluation.

    A reasoning-gym task by default; with ``train``, a task of yours, which needs ``heldout`` and a ``scorer``. The
    reasoning-gym settings (``task``, ``options``, ``train_size``, ``noise_fraction``) are refused by name with
    ``train``: the noise and the quality of its records are what its verifier says.

    Args:
        task: (reasoning-gym) the task; default ``chain_sum``.
        options: (reasoning-gym) its generator options.
        train_size: (reasoning-gym) training records; default 240.
        eval_size: held-out items scored: a reasoning-gym task generates them (default 100); of ``heldout``, the first
            ones (default: all).
        seed: the data seed (the same data for every arm and seed).
        noise_fraction: (reasoning-gym) fraction of training answers corrupted, each record's verifier score being its
            ``quality``; default 0.25.
        max_new_tokens: longest generated answer.
        name: the task's name in tables and plots; default: the reasoning-gym task's, or ``train``'s file name.
        train: the training data of a task of yours, as a fit config's ``data.train`` (e.g. ``{class_path:
            sft_research.data.FileDataset, init_args: {path: my_task.jsonl}}``).
        heldout: its held-out rows, a data source (``sft_research.data.FileDataset``): each a ``prompt`` with its
            reference answer as ``completion``, and ``choices`` for multiple choice
            (:class:`~sft_research.bench.heldout.HeldOutSet`).
        scorer: how an answer is scored (:mod:`sft_research.bench.scorers`); default: a reasoning-gym task's verifier.
            Another scorer on a reasoning-gym task scores its held-out answers against the generator's.
    """

    task: str | None = None
    options: dict[str, int | float | str | bool] | None = None
    train_size: int | None = None
    eval_size: int | None = None
    seed: int = 0
    noise_fraction: float | None = None
    max_new_tokens: int = 8
    name: str | None = None
    train: SourceConfig | None = None
    heldout: DataSource | None = None
    scorer: Scorer | None = None

    def reasoning_gym(self, setting: str):
        """A reasoning-gym setting, its default where the suite leaves it out."""
        value = getattr(self, setting)
        return REASONING_GYM_DEFAULTS[setting] if value is None else value

    @property
    def display_name(self) -> str:
        if self.name is not None:
            return self.name
        if self.train is None:
            return self.reasoning_gym("task")
        init = self.train.get("init_args") or {}
        path = init.get("path") if isinstance(init, dict) else None
        return Path(str(path).rstrip("/")).stem if path else str(self.train.get("class_path", "data")).rsplit(".", 1)[-1]

    def check(self) -> None:
        """The settings fit together; each problem is one line that names the setting."""
        if self.eval_size is not None and self.eval_size < 1:
            raise ConfigError(f"task.eval_size {self.eval_size}: at least 1 held-out item (or leave it out)")
        if self.train is None:
            if self.heldout is not None:
                raise ConfigError("task.heldout: a reasoning-gym task holds out its own items; give task.train too for a task of yours")
            return
        for setting, meaning in (
            ("noise_fraction", "corrupts a reasoning-gym task's answers, which its verifier tells wrong"),
            ("task", "names a reasoning-gym task (name a task of yours with task.name)"),
            ("options", "are a reasoning-gym task's generator options"),
            ("train_size", "is the number of records a reasoning-gym task generates"),
        ):
            if getattr(self, setting) is not None:
                raise ConfigError(f"task.{setting} {meaning}; task.train is a task of yours: leave it out")
        if self.scorer is None:
            raise ConfigError(
                "task.scorer: a task of yours (task.train) needs a scorer: ExactMatch, NumericMatch, MultipleChoice, LmEvalTask "
                "or CallableScorer (sft_research.bench.scorers)"
            )
        if self.heldout is None and not isinstance(self.scorer, LmEvalTask):
            raise ConfigError(
                "task.heldout: a task of yours (task.train) needs held-out rows, prompts with their references, e.g. "
                "{class_path: sft_research.data.FileDataset, init_args: {path: heldout.jsonl}}"
            )

    def scoring(self) -> Scorer:
        return Verifier() if self.scorer is None else self.scorer

    def task_score(self) -> TaskScore:
        """The probe that measures the task score, labelled with the task's name and its scorer."""
        return TaskScore(self.max_new_tokens, self.scoring(), self.display_name)

    def evaluation_set(self):
        """The held-out items probes and the scorer read, checked row by row: the reasoning-gym task itself (its
        verifier scores), its items as a held-out set (any other scorer), or ``heldout``'s rows."""
        self.check()
        if self.train is None:
            from sft_research.data.reasoning_gym_task import ReasoningGymTask

            rg = ReasoningGymTask(
                self.reasoning_gym("task"),
                self.options,
                self.reasoning_gym("train_size"),
                EVAL_SIZE if self.eval_size is None else self.eval_size,
                self.seed,
                self.reasoning_gym("noise_fraction"),
            )
            return rg if isinstance(self.scoring(), Verifier) else HeldOutSet.of_reasoning_gym(rg)
        if self.heldout is None:  # an lm-eval scorer's items are its task's own
            return HeldOutSet("task.heldout", [])
        records = self.heldout.records()[: self.eval_size]
        if not records:
            raise DataError(self.heldout.name, "has no held-out rows")
        return HeldOutSet(self.heldout.name, records)

    def source(self, preference_pairs: bool = False, drop_corrupted: bool = False) -> SourceConfig:
        """The training source of a fit: a reasoning-gym task as pairs of a right answer over a wrong one, or without its
        corrupted records, where an arm asks; a task of yours as it is (an arm that needs the verifier is refused)."""
        if self.train is not None:
            needs = "preference pairs of a right answer over a wrong one" if preference_pairs else "uncorrupted records"
            if preference_pairs or drop_corrupted:
                raise ConfigError(
                    f"this arm trains on a reasoning-gym task's {needs}, which its verifier tells apart; task.train is a task of "
                    "yours: train such an arm on data of yours through its overrides, or leave it out"
                )
            return copy.deepcopy(self.train)
        init = {
            "task": self.reasoning_gym("task"),
            "options": copy.deepcopy(self.options),
            "train_size": self.reasoning_gym("train_size"),
            "eval_size": EVAL_SIZE if self.eval_size is None else self.eval_size,
            "seed": self.seed,
            "noise_fraction": self.reasoning_gym("noise_fraction"),
        }
        return {
            "class_path": "sft_research.data.ReasoningGymTask",
            "init_args": {**init, "preference_pairs": preference_pairs, "drop_corrupted": drop_corrupted},
        }

    def clean_demonstrations(self) -> SourceConfig:
        """Other items of a reasoning-gym task than the training data's, none corrupted (PoFT's baseline)."""
        if self.train is not None:
            raise ConfigError(
                "PoFTArm's baseline trains on clean demonstrations of a reasoning-gym task (other items, none corrupted); "
                "task.train is a task of yours: leave the arm out"
            )
        return dataclasses.replace(self, noise_fraction=0.0, seed=self.seed + 1).source()
