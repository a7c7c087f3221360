"""One fit from a config: the LightningCLI that parses and runs it, its run folder, resume and the checks of every
stage before the first trains. Below the pipelines and the command line, which both call it."""
