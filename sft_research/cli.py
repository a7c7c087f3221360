"""The ``sft-research`` command: LightningCLI over :class:`FineTuningModule` and :class:`SFTDataModule`."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from jsonargparse import lazy_instance

from sft_research.data.datamodule import SFTDataModule
from sft_research.module import FineTuningModule


class SFTResearchCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The data must be tokenized by the model's own tokenizer.
        parser.link_arguments("model.pretrained.name_or_path", "data.tokenizer")


def main(args: list[str] | None = None) -> SFTResearchCLI:
    return SFTResearchCLI(
        FineTuningModule,
        SFTDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "num_sanity_val_steps": 0,
            "deterministic": True,
            "logger": lazy_instance(CSVLogger, save_dir="runs", name="sft"),
        },
        args=args,
    )


if __name__ == "__main__":
    main()
