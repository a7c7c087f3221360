"""Runs of several stages: SFT then DPO, and IRFT's generate-then-train rounds."""

from sft_research.pipelines.irft import IRFTStage
from sft_research.pipelines.stages import FitStage, Pipeline, Stage

__all__ = ["FitStage", "IRFTStage", "Pipeline", "Stage"]
