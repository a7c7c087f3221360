#!/usr/bin/env bash
# Writes tests/fixtures/trl_0_9_6.json: the ids that TRL 0.9.6's DPOTrainer.tokenize_row and the SPIN collator keep of
# fixed pairs, and the blocks TRL 0.9.6's ConstantLengthDataset packs (benchmarks/trl_0_9_fixture.py says what and
# how). TRL 0.9.6 needs transformers 4.x, so it runs in an environment of its own (TRL_VENV, default
# /tmp/trl-0.9.6-venv), made on first use; transformers 4.45.2 is the first 4.x whose tokenizers reads the
# tokenizer file saved here. A minute or two once installed:
#   bash benchmarks/trl_0_9_fixture.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TRL_VENV:-/tmp/trl-0.9.6-venv}
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.13.0  # first: trl's dependencies would otherwise pull a CUDA build
  "$VENV/bin/pip" install trl==0.9.6 transformers==4.45.2 accelerate==0.33.0 datasets==2.20.0 pyarrow==17.0.0 'numpy<2' rich
fi
TOKENIZER=$(.venv/bin/python -c "from sft_research.checkpoints.embedded import resolve_embedded; print(resolve_embedded('embedded:SmolLM2-135M-Instruct'))")
"$VENV/bin/python" benchmarks/trl_0_9_fixture.py --tokenizer "$TOKENIZER" --template experiments/templates/zephyr.jinja \
  --output tests/fixtures/trl_0_9_6.json
