"""Training objectives: pure loss functions of tensors, each wrapped by an :class:`Objective` class."""

from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, reduce_losses
from sft_research.objectives.dft import DFT, dft_loss
from sft_research.objectives.distillation import Distillation, generalized_jsd
from sft_research.objectives.dpo import DPO, dpo_loss
from sft_research.objectives.irft import IRFT, irft_loss
from sft_research.objectives.iw_sft import IwSFT, iw_sft_loss
from sft_research.objectives.poft import PoFT, poft_loss
from sft_research.objectives.sft import SFT, sft_loss
from sft_research.objectives.sft_kl import SFTWithKL

__all__ = [
    "DFT",
    "DPO",
    "Distillation",
    "IRFT",
    "IwSFT",
    "Objective",
    "ObjectiveInputs",
    "ObjectiveOutput",
    "PoFT",
    "SFT",
    "SFTWithKL",
    "dft_loss",
    "dpo_loss",
    "generalized_jsd",
    "irft_loss",
    "iw_sft_loss",
    "poft_loss",
    "reduce_losses",
    "sft_loss",
]
