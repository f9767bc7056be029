#!/usr/bin/env bash
# MAGPIE-Pro + DPO (paper Table 1, "+ DPO (Magpie-Pro-DPO)"): the Pro chain of recipes/magpie_pro.sh (synthesis,
# tags, filter, SFT; finished stages are reused), then preference data from the tagged set (100K instructions,
# 5 responses each at T=0.8, scored by ArmoRM; chosen = best, rejected = worst), DPO from the SFT model (Table 9),
# AlpacaEval 2, Arena-Hard and lm-eval on the SFT and the DPO model, and both rows beside the paper's numbers.
#   -> runs/magpie_pro/{...,sft,preferences,dpo,eval_dpo}/ and runs/magpie_pro/table.md
#
#   bash recipes/magpie_pro_dpo.sh                 # profile by hardware: pro on 4+ GPUs, tiny without
#   PROFILE=tiny bash recipes/magpie_pro_dpo.sh    # force a profile (tiny | pro)
#   bash recipes/magpie_pro_dpo.sh --pref_size 1000   # synthesis/preference config keys as overrides
#
# Hardware for `pro`: as recipes/magpie_pro.sh (4+ GPUs); SFT and DPO are the paper's full runs under DeepSpeed
# ZeRO-3, global batch 32 and 128 on any count; the preference stage runs the generator on vLLM, then ArmoRM (8B,
# bf16) on one GPU. `tiny` runs on a CPU in minutes: SmolLM2-135M-Instruct
# samples, its mean log-prob stands in for ArmoRM, and DPO trains a LoRA adapter.
# Interrupted? Run the same command again: every stage resumes where it stopped.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_pro pro "$@"
run_sft magpie_pro pro magpie-pro-300k-filtered
run_preferences magpie_pro pro "$@"
run_dpo magpie_pro pro magpie-pro-dpo
run_eval runs/magpie_pro pro                            # the SFT row (reused when magpie_pro.sh evaluated it)
MODEL=dpo EVAL=eval_dpo run_eval runs/magpie_pro pro       # the +DPO row, beside it in runs/magpie_pro/table.md
run_report runs/magpie_pro                                 # runs/magpie_pro/report/index.html: data, samples, evaluation
