"""Evaluation of fine-tuned models."""

from sft_research.evaluation.task_accuracy import TaskAccuracy

__all__ = ["TaskAccuracy"]
