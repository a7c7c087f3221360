"""Data: sources → checked records → tokens with a completion mask → batches."""

from sft_research.data.datamodule import SFTDataModule
from sft_research.data.mixture import Mixture, TextChunks
from sft_research.data.options import LengthConfig, TemplateConfig
from sft_research.data.reasoning_gym_task import ReasoningGymTask
from sft_research.data.sources import DataSource, FileDataset, RawRecord
from sft_research.data.task import VerifiableTask
from sft_research.errors import DataError

__all__ = [
    "DataError",
    "DataSource",
    "FileDataset",
    "LengthConfig",
    "Mixture",
    "RawRecord",
    "ReasoningGymTask",
    "SFTDataModule",
    "TemplateConfig",
    "TextChunks",
    "VerifiableTask",
]
