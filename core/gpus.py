"""How many GPUs the project may use here: the one count behind every choice made by GPU count (the recipes'
profile, the training launchers' processes and accumulation, synthesis on a local Ray cluster).

MAGPIE_GPUS sets it: the tests use 0, 1, 4 and 8, and a user can leave GPUs to other work (a local Ray cluster then
offers only that many, and one-GPU training sees only the first). Otherwise torch counts the CUDA devices that
CUDA_VISIBLE_DEVICES leaves visible.

    python -m core.gpus                   # the count
    python -m core.gpus profile pro       # the profile a recipe runs: pro, tiny without GPUs, or why it cannot
    python -m core.gpus ray air           # 1 when synthesis should run on a local Ray cluster, else 0
    python -m core.gpus split 32 1        # processes and gradient accumulation for a global batch of 32
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PROFILES = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "synth"


def count() -> int:
    """GPUs to use: MAGPIE_GPUS if set, else the CUDA devices torch sees (0 without torch or CUDA)."""
    given = os.environ.get("MAGPIE_GPUS", "").strip()
    if given:
        if not given.isdigit():
            raise ValueError(f"MAGPIE_GPUS={given!r}: give the number of GPUs to use (0, 1, 2, ...), or unset it to "
                             "count the visible CUDA devices")
        return int(given)
    if "torch" not in sys.modules and not any(os.path.exists(d) for d in _GPU_NODES):
        return 0  # no GPU driver's device here: torch would count none, and importing it costs 1.4 s on a CPU
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


# The device nodes a GPU torch needs to see one: NVIDIA's driver, ROCm's, and WSL2's (CUDA through /dev/dxg).
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def engine_sizes(profile: str) -> list[int]:
    """GPUs per engine of the profile's model roles (`*tensor_parallel_size` in its YAML), with 1 for the roles it
    leaves unset: every profile has those (its 8B taggers)."""
    from .config import read_config

    path = PROFILES / f"{profile}.yaml"
    if not path.is_file():
        raise ValueError(f"profile {profile!r}: no {path}; choose one of "
                         f"{', '.join(sorted(p.stem for p in PROFILES.glob('*.yaml')))}")
    cfg = read_config(path)  # include: resolved (tiny.yaml is air.yaml scaled down)
    return [int(v) for k, v in cfg.items() if k.endswith("tensor_parallel_size") and v] + [1]


def pick_profile(gpu_profile: str, gpus: int | None = None) -> str:
    """`tiny` without GPUs; `gpu_profile` when the GPUs hold its largest engine (pro: 70B over tensor parallel 4);
    between the two a ValueError that says what is missing (vLLM would fail on it after the install)."""
    gpus = count() if gpus is None else gpus
    if gpus == 0:
        return "tiny"
    need = max(engine_sizes(gpu_profile))
    if gpus < need:
        raise ValueError(f"profile {gpu_profile} needs {need} GPUs (tensor_parallel_size {need} in "
                         f"recipes/configs/synth/{gpu_profile}.yaml) and {gpus} {'is' if gpus == 1 else 'are'} "
                         f"visible: run it on {need} GPUs, or choose PROFILE=air (one GPU) or PROFILE=tiny (CPU)")
    return gpu_profile


def ray_local(profile: str, gpus: int | None = None) -> bool:
    """Whether synthesis should run on a local Ray cluster: when the GPUs exceed some role's engine (tensor parallel
    size), one process would leave GPUs idle; engine actors, one per engine's GPUs, share the shards instead."""
    gpus = count() if gpus is None else gpus
    return profile != "tiny" and gpus > min(engine_sizes(profile))


def split(global_batch: int, per_device: int, gpus: int) -> tuple[int, int]:
    """(processes, gradient_accumulation_steps) with processes x per_device x accumulation == global_batch: the
    most processes, up to `gpus`, that divide it. Warmup and the schedule count optimizer steps, so a GPU count that
    does not divide the batch leaves GPUs idle rather than change the recipe (paper Tables 8 and 9)."""
    if gpus < 1:
        raise ValueError(f"{gpus} GPUs: training on GPUs needs at least one (MAGPIE_GPUS, CUDA_VISIBLE_DEVICES)")
    rows, rest = divmod(global_batch, per_device)
    if rest or rows < 1:
        raise ValueError(f"a global batch of {global_batch} is not a whole number of per-device batches of "
                         f"{per_device}: change per_device_train_batch_size")
    processes = max(p for p in range(1, min(gpus, rows) + 1) if rows % p == 0)
    return processes, rows // processes


def main(argv: list[str]) -> int:
    try:
        if not argv:
            print(count())
        elif argv[0] == "profile" and len(argv) == 2:
            print(pick_profile(argv[1]))
        elif argv[0] == "ray" and len(argv) == 2:
            print(int(ray_local(argv[1])))
        elif argv[0] == "split" and len(argv) == 3:
            gpus = count()
            processes, accumulation = split(int(argv[1]), int(argv[2]), gpus)
            if processes < gpus:
                print(f"[gpus] {gpus} GPUs, {processes} used: {processes} x {argv[2]} x {accumulation} keeps the "
                      f"global batch at {argv[1]}", file=sys.stderr)
            print(processes, accumulation)
        else:
            print("usage: python -m core.gpus [profile PROFILE | ray PROFILE | split GLOBAL_BATCH PER_DEVICE]",
                  file=sys.stderr)
            return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
