#!/usr/bin/env bash
# Issue #12's GPU checks in one invocation of at most 8 minutes on one H100:
#   1. installs what the air-gapped GPU machine lacks, from .gpu_wheels/pip (benchmarks/gpu/setup.sh), and the
#      repo itself (pip install --no-deps -e .);
#   2. pytest -m gpu (tests/test_gpu.py): FlexAttention packing, chunked log-probs, compile, bf16, FSDP, frozen
#      log-probs; junit XML in OUTPUT_DIR/pytest.xml;
#   3. benchmarks/perf/compare_trl.py --preset gpu: SFT and DPO against TRL (padded, packed, Liger, precomputed
#      reference; gradient checkpointing off unless a run runs out of memory), then batch 1 at 1k, 4k and 16k
#      tokens (ours packed against TRL's fastest SFT setting), with a torch.profiler summary of our SFT step;
#   4. writes OUTPUT_DIR/check.log (everything printed), OUTPUT_DIR/check.json (every figure, each stage's exit
#      status and seconds), OUTPUT_DIR/compare_trl.json and OUTPUT_DIR/sft_step_profile.txt.
#
# Before the GPU session, here (a machine with PyPI):  bash benchmarks/gpu/fetch_wheels.sh
# Then ONE device call (about 17 MiB of carried files; the command must start in the repo root):
#   run(command="bash benchmarks/gpu/check.sh $OUT", carry=[".gpu_wheels/pip", ".gpu_wheels/tokenizer"], timeout_s=560)
# On a machine without CUDA (or with DRY_RUN=1) it rehearses every step at toy sizes in a few minutes (after
# fetch_wheels.sh, which also saves the tokenizer that compare_trl.py is given):
#   DRY_RUN=1 bash benchmarks/gpu/check.sh /tmp/check_dry
# Stage 3's 300 s held the five SFT settings and no more on an H100 (2026-11-27, benchmarks/RESULTS.md); each job's
# figures are written to compare_trl.json as it finishes. COMPARE_OBJECTIVES picks the objectives (default "sft dpo"),
# e.g. COMPARE_OBJECTIVES=dpo for the DPO rows and the long-context runs in a call of their own.
set -uo pipefail
OUTPUT_DIR=${1:?usage: check.sh OUTPUT_DIR}
cd "$(dirname "$0")/../.."
source benchmarks/gpu/setup.sh
start_run check.log
echo "check.sh: DRY_RUN=$DRY_RUN, python $PY, output $OUTPUT_DIR, $(date -u +%FT%TZ)"
STAGES=$OUTPUT_DIR/.stages
: > "$STAGES"

stage() {  # stage NAME LIMIT_S COMMAND...: runs COMMAND under a time limit, records its exit status and seconds
  local name=$1 limit=$2 begin status
  shift 2
  (( limit > $(left) )) && limit=$(left)
  echo; echo "=== $name (limit ${limit}s, $(( $(date +%s) - START ))s in)"
  begin=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  status=$?
  echo "=== $name: exit $status after $(( $(date +%s) - begin ))s"
  echo "$name $status $(( $(date +%s) - begin ))" >> "$STAGES"
}

stage setup 120 bash -c "source benchmarks/gpu/setup.sh && install_missing"
"$PY" - <<'PYTHON'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
PYTHON

stage pytest 170 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rA --junitxml="$OUTPUT_DIR/pytest.xml"

if [[ "$DRY_RUN" == 1 ]]; then
  COMPARE=(--preset tiny --steps 4 --long_context 64 128 --long_steps 2)
else
  COMPARE=(--preset gpu --steps 20 --long_context 1024 4096 16384 --long_steps 4)
fi
read -ra objectives <<< "${COMPARE_OBJECTIVES:-sft dpo}"
COMPARE+=(--objectives "${objectives[@]}")
stage compare_trl 300 "$PY" benchmarks/perf/compare_trl.py "${COMPARE[@]}" --tokenizer .gpu_wheels/tokenizer \
  --json "$OUTPUT_DIR/compare_trl.json" --profile "$OUTPUT_DIR/sft_step_profile.txt"

"$PY" - "$OUTPUT_DIR" "$DRY_RUN" "$START" <<'PYTHON'
import json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path

out, dry_run, start = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
stages = {name: {"exit": int(status), "seconds": int(seconds)} for name, status, seconds in
          (line.split() for line in (out / ".stages").read_text().splitlines())}
tests = {}
if (out / "pytest.xml").is_file():
    for case in ET.parse(out / "pytest.xml").iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        detail = next((child.get("message", "")[:500] for child in case if child.tag in ("failure", "error", "skipped")), "")
        tests[f"{case.get('classname')}::{case.get('name')}"] = {"outcome": outcome, "seconds": float(case.get("time", 0)), "detail": detail}
compare = json.loads((out / "compare_trl.json").read_text()) if (out / "compare_trl.json").is_file() else None
report = {"dry_run": dry_run, "wall_s": int(time.time()) - start, "stages": stages, "tests": tests, "compare_trl": compare}
(out / "check.json").write_text(json.dumps(report, indent=1) + "\n")
counts = {}
for test in tests.values():
    counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
print(f"\ncheck.sh done in {report['wall_s']}s: stages {stages}; tests {counts}; "
      f"compare_trl {'written' if compare else 'missing'} ({len(compare['jobs']) if compare else 0} jobs, {len(compare['rows']) if compare else 0} rows, "
      f"{len(compare['long_context']) if compare else 0} long-context rows)")
PYTHON
rm -f "$STAGES"
