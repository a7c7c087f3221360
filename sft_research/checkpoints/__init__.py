"""Checkpoints by name: hub ids, local folders, and the embedded models built offline; their tokenizers."""
