#!/usr/bin/env bash
# MAGPIE-Air + DPO (paper Table 1, "+ DPO (Magpie-Air-DPO)"): the Air chain of recipes/magpie_air.sh (synthesis,
# tags, filter, SFT; finished stages are reused), then preference data from the tagged set (100K instructions,
# 5 responses each at T=0.8, scored by ArmoRM; chosen = best, rejected = worst), DPO from the SFT model (Table 9),
# AlpacaEval 2, Arena-Hard and lm-eval on the SFT and the DPO model, and both rows beside the paper's numbers.
#   -> runs/magpie_air/{...,sft,preferences,dpo,eval_dpo}/ and runs/magpie_air/table.md
#
#   bash recipes/magpie_air_dpo.sh                 # profile by hardware: air with a GPU, tiny without
#   PROFILE=tiny bash recipes/magpie_air_dpo.sh    # force a profile (tiny | air)
#   bash recipes/magpie_air_dpo.sh --pref_size 1000   # synthesis/preference config keys as overrides
#
# Hardware for `air`: as recipes/magpie_air.sh; SFT and DPO are the paper's full runs under DeepSpeed ZeRO-3 from 4
# GPUs (LoRA on fewer, global batch 32 and 128 on any count); the preference stage runs the generator on vLLM, then
# ArmoRM (8B, bf16) on one GPU. `tiny` runs on a CPU in minutes: SmolLM2-135M-Instruct
# samples, its mean log-prob stands in for ArmoRM, and DPO trains a LoRA adapter.
# Interrupted? Run the same command again: every stage resumes where it stopped.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_air air "$@"
run_sft magpie_air air magpie-air-300k-filtered
run_preferences magpie_air air "$@"
run_dpo magpie_air air magpie-air-dpo
run_eval runs/magpie_air air                            # the SFT row (reused when magpie_air.sh evaluated it)
MODEL=dpo EVAL=eval_dpo run_eval runs/magpie_air air       # the +DPO row, beside it in runs/magpie_air/table.md
run_report runs/magpie_air                                 # runs/magpie_air/report/index.html: data, samples, evaluation
