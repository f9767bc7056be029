#!/usr/bin/env bash
# MAGPIE-Air (paper sections 2-4): Llama-3-8B-Instruct writes instructions from its pre-query template
# alone and answers them; taggers label every pair; a paper Table 5 preset filters; export writes
# the SFT set; then SFT (tiny: LoRA on the CPU; GPU: the paper's full fine-tune); then AlpacaEval 2,
# Arena-Hard and lm-eval on the trained model, and its paper Table 1 row beside the paper's numbers.
#   -> runs/magpie_air/{instructions,responses,tagged,filtered,export,sft,eval}/ and runs/magpie_air/table.md
#
#   bash recipes/magpie_air.sh                      # profile by hardware: air with CUDA, tiny without
#   PROFILE=tiny bash recipes/magpie_air.sh         # force a profile (tiny | air)
#   bash recipes/magpie_air.sh --total_prompts 1000 # any config key as an override
#
# Hardware for `air`: one GPU with >= 24 GB runs it (paper: 4x A100-80GB, 206 GPU-hours for 3M).
# `tiny` runs on a CPU in minutes with SmolLM2-135M-Instruct, shipped inside a PyPI package.
# Interrupted? Run the same command again: it resumes where it stopped.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_air air "$@"
run_sft magpie_air air magpie-air-300k-filtered
run_eval runs/magpie_air air
run_report runs/magpie_air                                 # runs/magpie_air/report/index.html: data, samples, evaluation
