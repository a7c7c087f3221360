"""The paper notes' rehearsal reports are what `sft-research rehearse` reports for their configs today."""

import re
from pathlib import Path

import pytest
import yaml

from sft_research.rehearsal.plan import plan

REPO = Path(__file__).parents[1]
NOTES = sorted((REPO / "papers").glob("*.md"))
BLOCK = re.compile(r"```\n\$ sft-research rehearse --config (\S+)\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("note", NOTES, ids=lambda p: p.name)
def test_rehearsal_reports_in_the_notes_match_the_plan(note, tmp_path):
    blocks = BLOCK.findall(note.read_text())
    configs = {config for config, _ in blocks}
    experiment = REPO / "experiments" / note.stem
    if experiment.is_dir():
        assert configs == {str(p.relative_to(REPO)) for p in experiment.glob("*.yaml")}, "every config of the paper is rehearsed"
    for config, report in blocks:
        expected = plan(yaml.safe_load((REPO / config).read_text()), str(tmp_path)).changes
        assert report.splitlines() == [f"  {line}" for line in expected], config
