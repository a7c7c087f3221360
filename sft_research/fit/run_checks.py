"""A fit checked before any fit of its run trains: its settings (as ``sft-research fit`` checks them), its model's
architecture (from its config.json: max_length, LoRA targets, the FSDP wrap policy), its data's schema and record kind
against its objective (from the first rows), and its frozen models (their config.json, a frozen model's tokenizer
against the policy's). ``pipeline`` and ``bench`` check every stage and arm so before the first one trains;
``rehearse`` checks the config it rehearses so, with the architectures of the real models its stand-ins stand for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sft_research.checkpoints.names import load_tokenizer, model_config
from sft_research.data.records import Preference, RecordKind, parse_record, record_kind
from sft_research.data.tokenize import no_chat_template
from sft_research.errors import ConfigError, DataError
from sft_research.fit.lightning_cli import parse_fit
from sft_research.train.config_checks import check_architecture, check_max_length, is_task

FIRST_ROWS = 16  # rows of each data source read before training: enough to see its schema and record kind


@dataclass
class ModelFiles:
    """Where the checks read a model's config.json and tokenizer.

    Args:
        aliases: models that do not exist yet (an earlier stage's, ``<stage NAME>``), each with a model of the same
            architecture and tokenizer (the one that stage starts from).
        configs: config.json contents by model name, read in place of its files (a rehearsal's stand-ins: the real
            model's).
        chat_templates: the chat template (``data.template.chat_template``) that an earlier stage's fit saves with its model.
    """

    aliases: dict[str, str] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)
    chat_templates: dict[str, str] = field(default_factory=dict)

    def real(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def shown(self, name: str) -> str:
        """The name as messages show it: an earlier stage's model with the model it starts from."""
        return name if self.real(name) == name else f"{name} (from {self.real(name)})"

    def config(self, name: str) -> dict:
        name = self.real(name)
        return self.configs[name] if name in self.configs else model_config(name)

    def tokenizer(self, name: str):
        """The model's tokenizer; an earlier stage's is its start model's, with the chat template the nearest stage on
        the way set (its export saves the tokenizer its data rendered with)."""
        template = self.chat_templates.get(name)
        while name in self.aliases:
            name = self.aliases[name]
            template = template or self.chat_templates.get(name)
        tokenizer = load_tokenizer(name)
        if template is not None:
            from sft_research.data.datamodule import read_chat_template

            tokenizer.chat_template = read_chat_template(template)
        return tokenizer


def check_fit(config: dict, files: ModelFiles, records: RecordKind | None = None):
    """Every check of a fit config that needs no weights; returns the parsed config. ``records`` is the kind of
    records its training data must hold (None: the kind its objective trains on)."""
    parsed = parse_fit(config)
    if parsed.get("export_model") is False:
        raise ConfigError(
            "export_model false: what comes after this fit reads its final model (a pipeline's next stage or its result, IRFT's "
            "next round, the bench's evaluation, a rehearsal's reload); leave it out here"
        )
    name = parsed.model.pretrained.name_or_path
    check_architecture(parsed, files.shown(name), files.config(name))
    check_chat_template(parsed, files)
    objective = built(parsed.model.objective, "objective")
    check_records(parsed, objective, records)
    check_frozen(parsed, objective, files)
    return parsed


def check_chat_template(parsed, files: ModelFiles) -> None:
    """Data rendered as chat (``data.template.prompt_format``, the default) have a template:
    ``data.template.chat_template``, or the model's tokenizer's own."""
    template = parsed.data.template
    name = parsed.model.pretrained.name_or_path
    if template.prompt_format == "chat" and template.chat_template is None:
        if not getattr(files.tokenizer(name), "chat_template", None):
            raise ConfigError(no_chat_template(files.shown(name)))


def built(value, kind: str):
    """The object that a parsed ``class_path``/``init_args`` value of the fit config describes (``kind``: an
    ``objective`` or a data ``source``), built as the fit builds it."""
    from jsonargparse import ArgumentParser

    from sft_research.data.sources import DataSource
    from sft_research.objectives.base import Objective

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=Objective if kind == "objective" else DataSource)
    plain = value.as_dict() if hasattr(value, "as_dict") else value
    return parser.instantiate_classes(parser.parse_object({"value": plain})).value


def check_records(parsed, objective, records: RecordKind | None) -> None:
    """The first rows of the training data (and of held-out data that is not a task) parse, and the training rows are
    of the kind the objective trains on (or ``records``)."""
    from sft_research.data.datamodule import read_chat_template

    data = parsed.data
    if data.template.chat_template is not None:
        read_chat_template(data.template.chat_template)
    wanted = records or ("preference" if objective.sequences_per_example == 2 else "sft")
    for key in ("train", "val"):
        if data.get(key) is None or (key == "val" and is_task(data.val)):
            continue
        source = built(data.get(key), "source")
        rows = [parse_record(row, wanted) for row in first_rows(source)]
        if not rows:
            raise DataError(source.name, "has no records")
        if key == "train" and isinstance(rows[0], Preference) != (wanted == "preference"):
            what = "preference records (prompt/chosen/rejected)" if wanted == "preference" else "SFT or text records"
            reader = f"{type(objective).__name__} trains on" if records is None else "the stage reads"
            raise DataError(source.name, f"{reader} {what}, but this source holds {record_kind(rows[0])}")


def first_rows(source) -> list:
    from sft_research.data.sources import FileDataset

    if isinstance(source, FileDataset):
        limit = min(source.limit or FIRST_ROWS, FIRST_ROWS)
        return FileDataset(source.path, source.split, source.columns, source.templates, limit).records()
    return source.records()[:FIRST_ROWS]


def frozen_models(objective, reference: str, on_the_fly: bool = False) -> list[tuple[str, str, bool]]:
    """The frozen models an objective runs, as (role, name, run on the fly): its baselines, a frozen input's own
    model (a teacher), or the run's reference."""
    from sft_research.frozen.distributions import FrozenModelInput
    from sft_research.frozen.inputs import BaselineScores

    models = []
    for frozen in objective.frozen_inputs:
        fly = on_the_fly or frozen.on_the_fly_only
        if isinstance(frozen, BaselineScores):
            models += [("baseline", name, fly) for name in frozen.baselines]
        elif isinstance(frozen, FrozenModelInput) and frozen.frozen_model is not None:
            models.append((frozen.name, frozen.frozen_model, fly))
        else:
            models.append(("reference", reference, fly))
    return list(dict.fromkeys(models))


def check_frozen(parsed, objective, files: ModelFiles) -> None:
    """The frozen inputs' own checks (PoFT's baselines, a teacher's tokenizer), every frozen model's config.json, the
    positions of those that score the training tokens, and the reference's tokenizer, whose ids its log-probs are of."""
    policy = parsed.model.pretrained.name_or_path
    for frozen in objective.frozen_inputs:
        try:
            frozen.check(files.real(policy))
        except ValueError as error:  # the inputs' own refusals, raised where the module is built
            raise ConfigError(str(error)) from None
    reference = parsed.model.frozen.reference or policy
    for role, name, _ in frozen_models(objective, reference):
        architecture = files.config(name)
        if role != "baseline":  # baselines read the data through their own tokenizer, at any length
            check_max_length(name, architecture, parsed.data.lengths.max_length)
        if role == "reference" and files.real(name) != files.real(policy):
            ours, theirs = files.tokenizer(policy), files.tokenizer(name)
            if ours.get_vocab() != theirs.get_vocab():
                raise ConfigError(
                    f"model.frozen.reference {name}: another tokenizer than the model being trained ({policy}: {len(theirs)} "
                    f"against {len(ours)} tokens, or other ids): its log-probs would be of other tokens than the ones trained on"
                )
