#!/usr/bin/env bash
# MAGPIE-Pro (paper sections 2-4): Llama-3-70B-Instruct writes instructions from its pre-query template
# alone and answers them; taggers label every pair; a paper Table 5 preset filters; export writes
# the SFT set.  -> runs/magpie_pro/{instructions,responses,tagged,filtered,export}/
#   bash recipes/magpie_pro.sh            # pro with CUDA, tiny without;  PROFILE=pro|tiny to force
# Hardware for `pro`: 4x A100/H100-80GB (paper: 614 GPU-hours for 1M pairs).
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/bootstrap.sh
PROFILE="${PROFILE:-$(python -c 'import torch; print("pro" if torch.cuda.is_available() else "tiny")')}"
echo "[magpie_pro] profile: $PROFILE" >&2
python -m synth run --config "recipes/configs/synth/$PROFILE.yaml" --output_dir runs/magpie_pro "$@"
