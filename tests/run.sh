#!/usr/bin/env bash
# The test suite: sets up (or reuses) .venv/, then runs pytest with the real embedded models.
#   bash tests/run.sh                 # everything
#   bash tests/run.sh -m "not slow"   # skip the end-to-end runs
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/bootstrap.sh
# The report's browser test drives a real headless Chromium: Debian's package, installed here when absent (as root,
# or with sudo). Where it cannot be installed, that test skips and says why; everything else runs.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; }; }; then
    echo "[tests] installed chromium (Debian) for the report's browser test" >&2
  else
    echo "[tests] chromium is not installed and apt-get could not install it: the browser test will skip" >&2
  fi
fi
export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest tests --durations=30 "$@"
