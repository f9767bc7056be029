#!/usr/bin/env bash
# The test suite: sets up (or reuses) .venv/, then runs pytest with the real embedded models.
#   bash tests/run.sh                 # everything
#   bash tests/run.sh -m "not slow"   # skip the end-to-end runs
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/bootstrap.sh
export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest tests "$@"
