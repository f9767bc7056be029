#!/usr/bin/env bash
# Paper Table 1, reproduced: evaluate every fine-tuned model this checkout has trained (the Magpie
# recipes' runs/<recipe>/sft and recipes/baselines.sh's runs/baselines/<set>/sft), plus the instruct
# model the paper compares against, then put each on its paper row beside the paper's numbers.
#   -> runs/<...>/eval/results.json, runs/paper_table/{table.md,table.csv,table.png} (+ a W&B table)
#
#   bash recipes/magpie_air.sh && bash recipes/baselines.sh   # train what you want compared
#   bash recipes/paper_table.sh                               # evaluate them all and build the table
#   bash recipes/paper_table.sh --alpaca_limit 100            # any eval config key as an override
#
# GPU (paper profile): answers with vLLM, gpt-4.1 judges (OPENAI_API_KEY; --judge paper: the paper's gpt-4-1106-preview
# on an archived deployment), the instruct row is
# meta-llama/Meta-Llama-3-8B-Instruct. tiny (no CUDA): SmolLM2 answers, references and judges; the
# instruct row is SmolLM2-135M-Instruct itself, the model the tiny data came from.
# Interrupted? Run it again: finished evaluations are reused, unfinished ones resume.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
profile="$(pick_profile air)"
evals=()
for dir in runs/magpie_air runs/magpie_pro runs/magpie_air_mt runs/magpie_pro_mt runs/baselines/*; do
  [ -f "$dir/sft/train_summary.json" ] || continue
  echo "[paper_table] evaluating $dir ($profile)" >&2
  run_eval "$dir" air "$@"
  evals+=("$dir/eval")
done
if [ "$profile" = tiny ]; then
  config=tiny instruct="embedded:smollm2-135m-instruct"
else
  config=paper instruct="meta-llama/Meta-Llama-3-8B-Instruct"
fi
echo "[paper_table] evaluating the instruct model $instruct" >&2
run_cmd python -m eval run --config "recipes/configs/eval/$config.yaml" --model "$instruct" --row llama-3-8b-instruct \
  --output_dir runs/instruct/eval "$@"
run_cmd python -m eval table "${evals[@]}" runs/instruct/eval --output runs/paper_table
