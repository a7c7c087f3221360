"""Training objectives: pure loss functions of tensors, each wrapped by an :class:`Objective` class."""

from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput
from sft_research.objectives.sft import SFT, sft_loss

__all__ = ["Objective", "ObjectiveInputs", "ObjectiveOutput", "SFT", "sft_loss"]
