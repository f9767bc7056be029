#!/usr/bin/env bash
# MAGPIE-Air (paper sections 2-4): Llama-3-8B-Instruct writes instructions from its pre-query template
# alone and answers them; taggers label every pair; a paper Table 5 preset filters; export writes
# the SFT set; then SFT (tiny: LoRA on the CPU; GPU: LoRA on 1-3 GPUs, the full fine-tune from 4); then AlpacaEval 2,
# Arena-Hard and lm-eval on the trained model, and its paper Table 1 row beside the paper's numbers.
#   -> runs/magpie_air/{instructions,responses,tagged,filtered,export,sft,eval}/ and runs/magpie_air/table.md
#
#   bash recipes/magpie_air.sh                      # profile by hardware: air with a GPU, tiny without
#   PROFILE=tiny bash recipes/magpie_air.sh         # force a profile (tiny | air)
#   bash recipes/magpie_air.sh --total_prompts 1000 # any config key as an override
#
# Hardware for `air` (paper: 4x A100-80GB, 206 GPU-hours for 3M), by the GPUs core/gpus.py counts (MAGPIE_GPUS=N
# uses N of them):
#   1 GPU of 48-80 GB (A100/H100/L40S/A6000). Synthesis and tagging load one 8B model at a time (16 GB of bf16
#     weights, plus vLLM's cache), each in a process of its own; SFT runs the LoRA variant
#     (recipes/configs/sft/variants/lora.yaml: 48-80 GB, an estimate, not a measurement).
#   2+ GPUs: synthesis and tagging on a local Ray cluster, one engine actor per GPU; SFT under DDP with LoRA on 2-3
#     GPUs, the paper's full fine-tune (DeepSpeed ZeRO-3) from 4; the global batch stays 32 (Table 8).
# `tiny` runs on a CPU in minutes with SmolLM2-135M-Instruct, shipped inside a PyPI package.
# Interrupted? Run the same command again: it resumes where it stopped.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_air air "$@"
run_sft magpie_air air magpie-air-300k-filtered
run_eval runs/magpie_air air
run_report runs/magpie_air                                 # runs/magpie_air/report/index.html: data, samples, evaluation
