"""Models: loading pretrained causal LMs (with LoRA), their label log-probs, and generation."""

from sft_research.model.loading import LoraConfig, ModelConfig, load_model

__all__ = ["LoraConfig", "ModelConfig", "load_model"]
