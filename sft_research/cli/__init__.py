"""The ``sft-research`` command: its subcommands, the data command, merging adapters, cached help."""
