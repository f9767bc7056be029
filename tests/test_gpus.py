"""Choices made by GPU count (core/gpus.py): the profile a recipe picks, the exact training launch lines, the global
batch they keep (paper Tables 8 and 9), and synthesis on a local Ray cluster, at 0, 1, 4 and 8 GPUs.

The recipes' own bash functions run (recipes/bootstrap.sh, sourced with MAGPIE_SETUP=0), with MAGPIE_GPUS setting
the count and MAGPIE_DRY_RUN=1 printing each command instead of running it; the printed lines are then read by
accelerate's own launch parser and by train.sft/train.dpo's own config parser.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

from core import gpus

SFT_LORA = "recipes/configs/sft/variants/lora.yaml"
DPO_LORA = "recipes/configs/dpo/variants/lora.yaml"
SFT_DATA = "--dataset runs/magpie_air/export --output_dir runs/magpie_air/sft --run_name magpie_air-sft"
DPO_DATA = ("--model_name_or_path runs/magpie_air/sft --dataset runs/magpie_air/preferences/export "
            "--output_dir runs/magpie_air/dpo --run_name magpie_air-dpo --row magpie-air-dpo")


def recipe(*calls: str, n: int | str, **env) -> subprocess.CompletedProcess:
    """Run recipe functions under `set -euo pipefail` as the recipes do, with `n` GPUs, commands printed."""
    base = {k: v for k, v in os.environ.items() if k not in ("PROFILE", "CUDA_VISIBLE_DEVICES")}
    env = {**base, "MAGPIE_SETUP": "0", "MAGPIE_DRY_RUN": "1", "MAGPIE_GPUS": str(n), **env}
    script = "set -euo pipefail; source recipes/bootstrap.sh; " + "; ".join(calls)
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)


def lines(*calls: str, n: int, **env) -> list[str]:
    done = recipe(*calls, n=n, **env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_count_reads_magpie_gpus_else_torch(monkeypatch):
    import torch

    for n in (0, 1, 4, 8):
        monkeypatch.setenv("MAGPIE_GPUS", str(n))
        assert gpus.count() == n
    monkeypatch.setenv("MAGPIE_GPUS", "four")
    with pytest.raises(ValueError, match="MAGPIE_GPUS='four': give the number of GPUs"):
        gpus.count()
    monkeypatch.delenv("MAGPIE_GPUS")
    assert gpus.count() == torch.cuda.device_count()


def test_count_without_a_gpu_driver_does_not_import_torch():
    """A synth process counts GPUs before it plans its engines: with no GPU driver's device node, the count is 0
    without torch's 1.4 s import (the stage process imports it where a model needs it)."""
    code = ("import os, sys; from core import gpus; n = gpus.count(); "
            "print(n, 'torch' in sys.modules, any(os.path.exists(d) for d in gpus._GPU_NODES))")
    env = {k: v for k, v in os.environ.items() if k != "MAGPIE_GPUS"}
    n, imported, nodes = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                                        text=True, check=True).stdout.split()
    import torch

    assert int(n) == torch.cuda.device_count()
    assert imported == nodes  # torch only where a driver's node says there may be GPUs to count


@pytest.mark.parametrize("n,air,pro", [(0, "tiny", "tiny"), (1, "air", None), (4, "air", "pro"), (8, "air", "pro")])
def test_pick_profile(n, air, pro):
    assert lines("pick_profile air", n=n) == [air]
    done = recipe("pick_profile pro", n=n)
    if pro is None:  # 70B over tensor parallel 4 cannot start on one GPU: the recipe stops, saying why
        assert done.returncode == 2 and not done.stdout
        assert done.stderr.strip() == ("error: profile pro needs 4 GPUs (tensor_parallel_size 4 in "
                                       "recipes/configs/synth/pro.yaml) and 1 is visible: run it on 4 GPUs, or "
                                       "choose PROFILE=air (one GPU) or PROFILE=tiny (CPU)")
    else:
        assert done.returncode == 0 and done.stdout.split() == [pro]
    assert lines("pick_profile pro", n=n, PROFILE="tiny") == ["tiny"]  # PROFILE forces it


def test_a_recipe_stops_before_running_anything_without_the_gpus_of_its_profile():
    done = recipe("run_recipe magpie_pro pro", "run_sft magpie_pro pro magpie-pro-300k-filtered", n=2)
    assert done.returncode == 2 and not done.stdout  # nothing was (dry-)run
    assert "profile pro needs 4 GPUs" in done.stderr


# What run_sft / run_dpo launch, exactly: the paper's full runs under ZeRO-3 from 4 GPUs, LoRA on fewer.
LAUNCH = {
    (0, "sft"): f"python -m train.sft --config recipes/configs/sft/tiny.yaml {SFT_DATA}",
    (1, "sft"): f"env CUDA_VISIBLE_DEVICES=0 python -m train.sft --config {SFT_LORA} "
                f"--gradient_accumulation_steps 32 {SFT_DATA}",
    (2, "sft"): f"accelerate launch --config_file recipes/accelerate/multi_gpu.yaml --num_processes 2 -m train.sft "
                f"--config {SFT_LORA} --gradient_accumulation_steps 16 {SFT_DATA}",
    (4, "sft"): "accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 4 -m train.sft "
                "--config recipes/configs/sft/magpie-air-300k-filtered.yaml --gradient_accumulation_steps 8 "
                f"{SFT_DATA}",
    (8, "sft"): "accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 8 -m train.sft "
                "--config recipes/configs/sft/magpie-air-300k-filtered.yaml --gradient_accumulation_steps 4 "
                f"{SFT_DATA}",
    (0, "dpo"): f"python -m train.dpo --config recipes/configs/dpo/tiny.yaml {DPO_DATA}",
    (1, "dpo"): f"env CUDA_VISIBLE_DEVICES=0 python -m train.dpo --config {DPO_LORA} "
                f"--gradient_accumulation_steps 64 {DPO_DATA}",
    (2, "dpo"): f"accelerate launch --config_file recipes/accelerate/multi_gpu.yaml --num_processes 2 -m train.dpo "
                f"--config {DPO_LORA} --gradient_accumulation_steps 32 {DPO_DATA}",
    (4, "dpo"): "accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 4 -m train.dpo "
                f"--config recipes/configs/dpo/magpie-air-dpo.yaml --gradient_accumulation_steps 16 {DPO_DATA}",
    (8, "dpo"): "accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 8 -m train.dpo "
                f"--config recipes/configs/dpo/magpie-air-dpo.yaml --gradient_accumulation_steps 8 {DPO_DATA}",
}


@pytest.mark.parametrize("n", [0, 1, 2, 4, 8])
def test_training_launch_lines(n):
    got = lines("run_sft magpie_air air magpie-air-300k-filtered", "run_dpo magpie_air air magpie-air-dpo", n=n)
    assert got == [LAUNCH[n, "sft"], LAUNCH[n, "dpo"]]


def test_a_gpu_profile_forced_without_gpus_stops_before_training():
    done = recipe("run_sft magpie_air air magpie-air-300k-filtered", n=0, PROFILE="air")
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith("error: train.sft on a GPU profile needs a GPU and none is visible")


def test_one_gpu_training_sees_one_of_the_visible_gpus():
    # MAGPIE_GPUS=1 on a box with several: TRL refuses a single process that sees more than one.
    got = lines("run_sft magpie_air air magpie-air-300k-filtered", n=1, CUDA_VISIBLE_DEVICES="2,3")
    assert got[0].startswith("env CUDA_VISIBLE_DEVICES=2 python -m train.sft")


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_the_launch_lines_keep_the_papers_global_batch(kind):
    """Each launch line, read by accelerate's launch parser and the trainer's own config parser (YAML plus the
    line's overrides): processes x per-device batch x accumulation = 32 (Table 8) / 128 (Table 9)."""
    from accelerate.commands.launch import launch_command_parser

    if kind == "sft":
        from train.sft import parse
    else:
        from train.dpo import parse
    want = {"sft": 32, "dpo": 128}[kind]
    for n in (1, 2, 4, 8):
        argv = shlex.split(LAUNCH[n, kind])
        if argv[0] == "accelerate":
            launch = launch_command_parser().parse_args(argv[2:])
            processes, module, args = launch.num_processes, launch.training_script, launch.training_script_args
            assert launch.module and launch.config_file == (
                "recipes/accelerate/zero3.yaml" if n >= 4 else "recipes/accelerate/multi_gpu.yaml")
        else:  # env CUDA_VISIBLE_DEVICES=0 python -m train.X ...
            processes, module, args = 1, argv[4], argv[5:]
        assert module == f"train.{kind}"
        _, targs, model_args = parse([*args, "--use_cpu", "true"])
        assert processes * targs.per_device_train_batch_size * targs.gradient_accumulation_steps == want, n
        assert model_args.use_peft == (n < 4)  # LoRA below 4 GPUs, the paper's full run from 4


@pytest.mark.parametrize("batch,per_device", [(32, 1), (128, 2)])
def test_split_keeps_the_batch_on_any_gpu_count(batch, per_device):
    for n in range(1, 70):
        processes, accumulation = gpus.split(batch, per_device, n)
        assert processes * per_device * accumulation == batch and 1 <= processes <= n
    assert gpus.split(32, 1, 6) == (4, 8)  # 6 GPUs: 4 used rather than a batch of 36
    with pytest.raises(ValueError, match="needs at least one"):
        gpus.split(32, 1, 0)


# Synthesis: a local Ray cluster when the GPUs exceed some role's engine (air: every engine 1 GPU; pro: the 70B
# generator 4, its 8B taggers 1), one process otherwise.
@pytest.mark.parametrize("n,profile,ray", [(0, "air", False), (1, "air", False), (4, "air", True), (8, "air", True),
                                           (4, "pro", True), (8, "pro", True)])
def test_synthesis_on_local_ray_when_gpus_exceed_an_engine(n, profile, ray):
    got = lines(f"run_recipe magpie_{profile} {profile} --total_prompts 100",
                f"run_preferences magpie_{profile} {profile}", n=n)
    config = f"recipes/configs/synth/{profile if n else 'tiny'}.yaml"
    extra = " --ray_address local" if ray else ""
    assert got == [f"python -m synth run --config {config} --output_dir runs/magpie_{profile}{extra} "
                   "--total_prompts 100",
                   f"python -m synth preferences --config {config} --output_dir runs/magpie_{profile}{extra}"]
    assert gpus.ray_local(profile, n) == ray


def test_a_ray_address_given_to_a_recipe_wins():
    from synth.config import parse

    got = shlex.split(lines("run_recipe magpie_air air --ray_address host:6379", n=8)[0])
    assert got[-4:] == ["--ray_address", "local", "--ray_address", "host:6379"]
    run = next(p for p in parse(got[4:]) if hasattr(p, "ray_address"))
    assert run.ray_address == "host:6379"
