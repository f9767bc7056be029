#!/usr/bin/env bash
# MAGPIE-Pro-MT (paper section 3, Table 10): two-turn conversations from Llama-3-70B-Instruct.
#   -> runs/magpie_pro_mt/{instructions,responses,multiturn,tagged,filtered,export,sft,eval}/ and table.md
#   bash recipes/magpie_pro_mt.sh          # pro on 4+ GPUs, tiny without; PROFILE=tiny|pro to force
# The released MT sets were built from "300K difficult questions"; preset mt-300k is our reading
# of that (synth/filters.py says exactly what it keeps).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
run_recipe magpie_pro_mt pro --stages instructions responses multiturn tag filter export --turns 2 --filter_preset mt-300k "$@"
run_sft magpie_pro_mt pro magpie-pro-mt
run_eval runs/magpie_pro_mt pro
run_report runs/magpie_pro_mt                                 # runs/magpie_pro_mt/report/index.html: data, samples, evaluation
