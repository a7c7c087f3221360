"""The report of one part of benchmarks/gpu/check.sh: OUTPUT_DIR/check.json and a one-line summary.

    python benchmarks/gpu/report.py OUTPUT_DIR PART DRY_RUN START

check.json holds each stage's exit status and seconds (from OUTPUT_DIR/.stages, one ``name status seconds`` line a
stage), every test's outcome (from pytest.xml) and the figures of the stages' own JSON files. The exit status is 1 if
a stage failed or ran out of its time limit, if no stage ran, or, on a GPU, if a test did not pass (a skipped GPU test
there means the part confirmed nothing).
"""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

OUTCOMES = ("failure", "error", "skipped")


def test_outcomes(junit: Path) -> dict[str, dict]:
    tests = {}
    if junit.is_file():
        for case in ET.parse(junit).iter("testcase"):
            marked = next((child for child in case if child.tag in OUTCOMES), None)
            tests[f"{case.get('classname')}::{case.get('name')}"] = {
                "outcome": marked.tag if marked is not None else "passed",
                "seconds": float(case.get("time", 0)),
                "detail": marked.get("message", "")[:500] if marked is not None else "",
            }
    return tests


def problems(stages: dict[str, dict], tests: dict[str, dict], dry_run: bool) -> list[str]:
    """What keeps the part from counting as done, in words; empty when it is done."""
    found = [
        f"stage {name} exited {stage['exit']}" + (" (its time limit)" if stage["exit"] in (124, 137) else "")
        for name, stage in stages.items()
        if stage["exit"]
    ]
    if not stages:
        found.append("no stage ran")
    if not dry_run:
        found += [f"{name}: {test['outcome']}" for name, test in tests.items() if test["outcome"] != "passed"]
    return found


def main(out: Path, part: str, dry_run: bool, start: int) -> int:
    stages_file = out / ".stages"
    lines = stages_file.read_text().splitlines() if stages_file.is_file() else []
    stages = {name: {"exit": int(status), "seconds": int(seconds)} for name, status, seconds in (line.split() for line in lines)}
    tests = test_outcomes(out / "pytest.xml")
    figures = {path.stem: json.loads(path.read_text()) for path in sorted(out.glob("*.json")) if path.name != "check.json"}
    found = problems(stages, tests, dry_run)
    report = {
        "part": part,
        "dry_run": dry_run,
        "wall_s": int(time.time()) - start,
        "done": not found,
        "problems": found,
        "stages": stages,
        "tests": tests,
        **figures,
    }
    (out / "check.json").write_text(json.dumps(report, indent=1) + "\n")
    counts: dict[str, int] = {}
    for test in tests.values():
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    compare = figures.get("compare_trl")
    measured = f"; compare_trl: {len(compare['rows'])} rows, {len(compare['long_context'])} long-context rows" if compare else ""
    print(
        f"\ncheck.sh {part} {'done' if not found else 'NOT done'} in {report['wall_s']}s{' (dry run)' if dry_run else ''}: "
        f"stages {stages}; tests {counts}{measured}"
    )
    for problem in found:
        print(f"  {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])))
