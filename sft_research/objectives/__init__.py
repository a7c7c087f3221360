"""Training objectives: pure loss functions of tensors, each wrapped by an :class:`Objective` class."""

from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, reduce_losses
from sft_research.objectives.dft import DFT, dft_token_losses
from sft_research.objectives.distillation import Distillation, generalized_jsd
from sft_research.objectives.dpo import DPO, dpo_losses
from sft_research.objectives.irft import IRFT
from sft_research.objectives.iw_sft import IwSFT, iw_sft_token_losses
from sft_research.objectives.poft import PoFT, poft_losses
from sft_research.objectives.sft import SFT, sft_token_losses
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
    "dft_token_losses",
    "dpo_losses",
    "generalized_jsd",
    "iw_sft_token_losses",
    "poft_losses",
    "reduce_losses",
    "sft_token_losses",
]
