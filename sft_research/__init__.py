"""sft_research: supervised fine-tuning objectives behind one interface, trained from LightningCLI."""

__version__ = "0.1.0"
