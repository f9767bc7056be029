#!/usr/bin/env bash
# MAGPIE-Pro (paper sections 2-4): Llama-3-70B-Instruct writes instructions from its pre-query template
# alone and answers them; taggers label every pair; a paper Table 5 preset filters; export writes
# the SFT set; then SFT (tiny: LoRA on the CPU; GPU: the paper's full fine-tune).
#   -> runs/magpie_pro/{instructions,responses,tagged,filtered,export,sft,eval}/ and table.md
#   bash recipes/magpie_pro.sh            # pro on 4+ GPUs, tiny without;  PROFILE=pro|tiny to force
# Hardware for `pro`: 4x A100/H100-80GB (paper: 614 GPU-hours for 1M pairs); fewer GPUs stop the recipe before
# anything runs (tensor parallel 4). The 8B taggers run one engine actor per GPU on a local Ray cluster, and from 8
# GPUs two 70B generators; SFT is the paper's full fine-tune under ZeRO-3, global batch 32 on any count.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_pro pro "$@"
run_sft magpie_pro pro magpie-pro-300k-filtered
run_eval runs/magpie_pro pro
run_report runs/magpie_pro                                 # runs/magpie_pro/report/index.html: data, samples, evaluation
