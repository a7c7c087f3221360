"""Models: loading pretrained causal LMs, and the label log-probs that objectives are built from."""

from sft_research.model.loading import LoraConfig, ModelConfig, ModelLoadError, load_model, load_tokenizer

__all__ = ["LoraConfig", "ModelConfig", "ModelLoadError", "load_model", "load_tokenizer"]
