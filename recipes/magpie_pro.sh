#!/usr/bin/env bash
# MAGPIE-Pro (paper sections 2-4): Llama-3-70B-Instruct writes instructions from its pre-query template
# alone and answers them; taggers label every pair; a paper Table 5 preset filters; export writes
# the SFT set; then SFT (tiny: LoRA on the CPU; GPU: the paper's full fine-tune).
#   -> runs/magpie_pro/{instructions,responses,tagged,filtered,export,sft,eval}/ and table.md
#   bash recipes/magpie_pro.sh            # pro with CUDA, tiny without;  PROFILE=pro|tiny to force
# Hardware for `pro`: 4x A100/H100-80GB (paper: 614 GPU-hours for 1M pairs).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_pro pro "$@"
run_sft magpie_pro pro magpie-pro-300k-filtered
run_eval runs/magpie_pro pro
run_report runs/magpie_pro                                 # runs/magpie_pro/report/index.html: data, samples, evaluation
