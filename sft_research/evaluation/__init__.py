"""Evaluation of fine-tuned models."""

from sft_research.evaluation.task_accuracy import GenerationConfig, TaskAccuracy, generate

__all__ = ["GenerationConfig", "TaskAccuracy", "generate"]
