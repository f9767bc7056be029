#!/usr/bin/env bash
# MAGPIE-Pro (paper section 3): Llama-3-70B-Instruct, tensor parallel over 4 GPUs.
#   -> runs/magpie_pro/{instructions,responses}/
#   bash recipes/magpie_pro.sh            # pro with CUDA, tiny without;  PROFILE=pro|tiny to force
# Hardware for `pro`: 4x A100/H100-80GB (paper: 614 GPU-hours for 1M pairs).
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/bootstrap.sh
PROFILE="${PROFILE:-$(python -c 'import torch; print("pro" if torch.cuda.is_available() else "tiny")')}"
echo "[magpie_pro] profile: $PROFILE" >&2
python -m synth run --config "recipes/configs/synth/$PROFILE.yaml" --output_dir runs/magpie_pro "$@"
