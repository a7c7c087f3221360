#!/usr/bin/env bash
# The GPU checks, as separate device calls on one H100/H200 (15 minutes of device time in all, starts included):
#   check.sh OUTPUT_DIR sft    call 1, at most 7 minutes: benchmarks/perf/step_anatomy.py on the GPU preset (packed
#                              SFT, compiled, with torch.cuda.set_sync_debug_mode("error") over the measured steps),
#                              then compare_trl.py's SFT rows: ours packed and compiled, and packed eager, against TRL's
#                              three strongest candidates (packed with FlexAttention, with Liger, compiled), with a
#                              torch.profiler summary of our step;
#   check.sh OUTPUT_DIR dpo    call 2, at once while the machine is warm, at most 5 minutes: DPO (ours compiled
#                              against TRL's default, Liger and compiled), batch 1 at 1k, 4k and 16k tokens, and the
#                              headline pair again (ours against TRL's fastest SFT setting of call 1);
#   check.sh OUTPUT_DIR tests  pytest -m gpu (tests/test_gpu.py): FlexAttention packing, chunked log-probs, compile,
#                              bf16, FSDP, frozen log-probs; junit XML in OUTPUT_DIR/pytest.xml.
# Each installs what the air-gapped machine lacks first (benchmarks/gpu/setup.sh; nothing when the machine is warm)
# and writes OUTPUT_DIR/check.log (everything printed), OUTPUT_DIR/check.json (each stage's exit status and seconds,
# and the figures) and the stages' own files (compare_trl.json, step_anatomy.json, sft_step_profile.txt).
#
# Before the GPU session, here (a machine with PyPI):  bash benchmarks/gpu/fetch_wheels.sh
# Then (about 17 MiB of carried files each; the command must start in the repo root):
#   run(command="bash benchmarks/gpu/check.sh $OUT sft", carry=[".gpu_wheels/pip", ".gpu_wheels/tokenizer"], timeout_s=420)
#   run(command="bash benchmarks/gpu/check.sh $OUT dpo", carry=[".gpu_wheels/pip", ".gpu_wheels/tokenizer"], timeout_s=300)
# On a machine without CUDA (or with DRY_RUN=1) each call rehearses its stages at toy sizes on the CPU:
#   DRY_RUN=1 bash benchmarks/gpu/check.sh /tmp/check_dry sft
# The per-setting budgets come from the 2026-11-27 H100 run (about 60 s a setting: process start, model, steps)
# plus compilation; call 1 keeps what TRL's fastest setting was in /tmp/check_trl_fastest for call 2.
set -uo pipefail
OUTPUT_DIR=${1:?usage: check.sh OUTPUT_DIR sft|dpo|tests}
CALL=${2:?usage: check.sh OUTPUT_DIR sft|dpo|tests}
cd "$(dirname "$0")/../.."
case $CALL in sft) BUDGET_S=${BUDGET_S:-400} ;; dpo) BUDGET_S=${BUDGET_S:-280} ;; tests) BUDGET_S=${BUDGET_S:-300} ;;
  *) echo "check.sh: the call is sft, dpo or tests, not $CALL" >&2; exit 2 ;; esac
source benchmarks/gpu/setup.sh
start_run check.log
echo "check.sh $CALL: DRY_RUN=$DRY_RUN, python $PY, output $OUTPUT_DIR, $(date -u +%FT%TZ)"
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

if [[ "$DRY_RUN" == 1 ]]; then
  PRESET=(--preset tiny --steps 6) LONG=(--long_context 64 128 --long_steps 2) ANATOMY=(--device cpu)
else
  PRESET=(--preset gpu --steps 20) LONG=(--long_context 1024 4096 16384 --long_steps 4) ANATOMY=(--device cuda --sync_debug)
fi
COMPARE=("$PY" benchmarks/perf/compare_trl.py "${PRESET[@]}" --tokenizer .gpu_wheels/tokenizer --json "$OUTPUT_DIR/compare_trl.json")
FASTEST=/tmp/check_trl_fastest
case $CALL in
  sft)
    stage step_anatomy 100 "$PY" benchmarks/perf/step_anatomy.py "${ANATOMY[@]}" --compile --objectives sft --json "$OUTPUT_DIR/step_anatomy.json"
    stage compare_trl $(left) "${COMPARE[@]}" --objectives sft --profile "$OUTPUT_DIR/sft_step_profile.txt" \
      --settings packed_compiled packed packed_flex packed_flex_liger packed_flex_compiled packed_sdpa packed_sdpa_compiled
    "$PY" - "$OUTPUT_DIR/compare_trl.json" "$FASTEST" <<'PYTHON'
import json, sys
from pathlib import Path
report = Path(sys.argv[1])
rows = [r for r in json.loads(report.read_text())["rows"] if r["framework"] == "trl"] if report.is_file() else []
if rows:
    Path(sys.argv[2]).write_text(max(rows, key=lambda r: r["tokens_per_s"])["setting"])
PYTHON
    ;;
  dpo)
    trl=$(cat "$FASTEST" 2>/dev/null || echo packed_flex_liger)
    [[ "$DRY_RUN" == 1 && ! -s "$FASTEST" ]] && trl=packed_sdpa
    stage compare_trl $(( $(left) - 60 )) "${COMPARE[@]}" --objectives dpo --settings cached_reference_compiled default liger compiled \
      "${LONG[@]}" --trl_long_setting "$trl"
    mv "$OUTPUT_DIR/compare_trl.json" "$OUTPUT_DIR/compare_trl_dpo.json" 2>/dev/null
    stage headline_repeat $(left) "${COMPARE[@]}" --objectives sft --settings packed_compiled "$trl"
    ;;
  tests)
    stage pytest $(left) "$PY" -m pytest -m gpu -q -p no:cacheprovider -rA --junitxml="$OUTPUT_DIR/pytest.xml"
    ;;
esac

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
figures = {path.stem: json.loads(path.read_text()) for path in sorted(out.glob("*.json")) if path.name != "check.json"}
compare = figures.get("compare_trl") or figures.get("compare_trl_dpo")
report = {"dry_run": dry_run, "wall_s": int(time.time()) - start, "stages": stages, "tests": tests, **figures}
(out / "check.json").write_text(json.dumps(report, indent=1) + "\n")
counts = {}
for test in tests.values():
    counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
print(f"\ncheck.sh done in {report['wall_s']}s: stages {stages}; tests {counts}; "
      f"compare_trl {'written' if compare else 'missing'} ({len(compare['jobs']) if compare else 0} jobs, {len(compare['rows']) if compare else 0} rows, "
      f"{len(compare['long_context']) if compare else 0} long-context rows)")
PYTHON
rm -f "$STAGES"
