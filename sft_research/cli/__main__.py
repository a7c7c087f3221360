from sft_research.cli.main import console

console()
