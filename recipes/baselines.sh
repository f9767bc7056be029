#!/usr/bin/env bash
# The paper's Table 1 baselines: Llama-3-8B base fine-tuned on each public SFT set with the same
# recipe as the Magpie sets (paper Table 8).  -> runs/baselines/<set>/sft/
#
#   bash recipes/baselines.sh                   # every set; GPU: as run_sft (full fine-tune from 4 GPUs, else LoRA)
#   bash recipes/baselines.sh sharegpt wildchat # some of them
#
# GPU: each set comes from the hub (recipes/configs/sft/<set>.yaml). tiny (no CUDA): LoRA on the
# CPU for a few steps on the small local file of each set in its own schema (tests/fixtures/sft/),
# which proves every loader and the training path, not the paper's numbers.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
profile="$(pick_profile air)"
sets=("$@")
if [ ${#sets[@]} -eq 0 ]; then
  sets=(sharegpt evol-instruct openhermes-1 openhermes-2.5 tulu-v2-mix wildchat genqa ultrachat self-instruct-llama3)
fi
for set in "${sets[@]}"; do
  echo "[baselines] $set ($profile)" >&2
  out="runs/baselines/$set/sft"
  if [ "$profile" = tiny ]; then
    fixture="$(ls tests/fixtures/sft/"$set".* | head -n 1)"
    run_cmd python -m train.sft --config recipes/configs/sft/tiny.yaml --dataset "$set" --dataset_path "$fixture" \
      --output_dir "$out" --run_name "baseline-$set-tiny" --max_steps 2 --warmup_steps 0 --max_length 512 \
      --save_strategy no
  else
    launch_train train.sft "recipes/configs/sft/$set.yaml" recipes/configs/sft/variants/lora.yaml 32 1 \
      --dataset "$set" --output_dir "$out" --run_name "baseline-$set"
  fi
done
echo "[baselines] trained: ${sets[*]} -> runs/baselines/" >&2
