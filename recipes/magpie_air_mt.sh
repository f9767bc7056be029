#!/usr/bin/env bash
# MAGPIE-Air-MT (paper section 3, Table 10): two-turn conversations from Llama-3-8B-Instruct.
#   -> runs/magpie_air_mt/{instructions,responses,multiturn,tagged,filtered,export}/
#   bash recipes/magpie_air_mt.sh          # air with CUDA, tiny without; PROFILE=tiny|air to force
# The released MT sets were built from "300K difficult questions"; preset mt-300k is our reading
# of that (synth/filters.py says exactly what it keeps).
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/bootstrap.sh
PROFILE="${PROFILE:-$(python -c 'import torch; print("air" if torch.cuda.is_available() else "tiny")')}"
echo "[magpie_air_mt] profile: $PROFILE" >&2
python -m synth run --config "recipes/configs/synth/$PROFILE.yaml" --output_dir runs/magpie_air_mt \
  --stages instructions responses multiturn tag filter export --turns 2 --filter_preset mt-300k "$@"
