#!/usr/bin/env bash
# MAGPIE-Air-MT (paper section 3, Table 10): two-turn conversations from Llama-3-8B-Instruct.
#   -> runs/magpie_air_mt/{instructions,responses,multiturn,tagged,filtered,export,sft,eval}/ and table.md
#   bash recipes/magpie_air_mt.sh          # air with a GPU, tiny without; PROFILE=tiny|air to force
# The released MT sets were built from "300K difficult questions"; preset mt-300k is our reading
# of that (synth/filters.py says exactly what it keeps).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_air_mt air --stages instructions responses multiturn tag filter export --turns 2 --filter_preset mt-300k "$@"
run_sft magpie_air_mt air magpie-air-mt
run_eval runs/magpie_air_mt air
run_report runs/magpie_air_mt                                 # runs/magpie_air_mt/report/index.html: data, samples, evaluation
