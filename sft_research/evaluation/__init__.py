"""Evaluation of fine-tuned models."""

from sft_research.evaluation.task_accuracy import GenerationConfig, TaskAccuracy, generate_greedy

__all__ = ["GenerationConfig", "TaskAccuracy", "generate_greedy"]
