"""What every trainer here shares (train/sft.py, train/dpo.py): the YAML parsing, the input checks, W&B, the CPU
precision rule, the tokenizer's pad token, the disk space a run needs and resuming from its last whole checkpoint,
and what is saved at the end (the model with its end-of-turn token, a merged copy of a PEFT adapter,
train_summary.json)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from core import models
from core.config import parse as parse_config
from core.engines import dtype_name
from core.store import check_output_dir
from core.tracking import offline_unless_configured


class DiskFull(RuntimeError):
    """The disk under output_dir filled up while saving: said in one line, not in the trainer's traceback."""


def parse(argv, data_cls, config_cls):
    """(data args, TRL config, ModelConfig) from `--config x.yaml` and `--key value` (see core.config.parse)."""
    from trl import ModelConfig

    return parse_config(list(sys.argv[1:] if argv is None else argv), (data_cls, config_cls, ModelConfig))


def check_model_inputs(training_args, model_args) -> None:
    """The dtype and the output folder, checked in a second (the model path by `models.resolve`)."""
    from trl import ModelConfig

    # argparse checks the choices of a command-line --dtype only; a YAML value arrives unchecked.
    dtypes = ModelConfig.__dataclass_fields__["dtype"].metadata["choices"]
    if model_args.dtype is not None and model_args.dtype not in dtypes:
        raise ValueError(f"dtype {model_args.dtype}: choose one of {', '.join(dtypes)}")
    check_output_dir(training_args.output_dir)


def closing_wandb(fn, *args):
    """Run `fn(*args)` and close the W&B run the trainer opened with the real outcome: left open, wandb would record
    exit code 0 at interpreter exit (a failed run in a process that carries on, as under pytest) and the next
    trainer in the process would log into it."""
    wandb = sys.modules.get("wandb")  # the trainer imports it; no run can be open if nothing has
    before = wandb.run if wandb else None
    exit_code = 1
    try:
        out = fn(*args)
        exit_code = 0
        return out
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None and wandb.run is not before:  # not a caller's own run
            wandb.run.finish(exit_code=exit_code)


def wandb_env(training_args, group: str | None) -> None:
    """Offline unless W&B is configured; one project, runs grouped by the recipe's run folder."""
    if "wandb" in (training_args.report_to or []):
        offline_unless_configured()
        os.environ.setdefault("WANDB_PROJECT", "magpie-repro")
        os.environ.setdefault("WANDB_RUN_GROUP", group or Path(training_args.output_dir).parent.name)
        os.environ.setdefault("WANDB_DIR", str(Path(training_args.output_dir).parent))


def hardware_precision(model_args, training_args, tag: str = "train"):
    """`dtype: auto` on a CPU: the weights and the bf16 flag follow what the CPU computes natively.
    Where bf16 is only emulated (no AVX512-BF16/AMX), bf16 autocast made the tiny LoRA run slower
    than fp32 (benchmarks/sft_throughput.py), so it trains in fp32 and says so."""
    import torch

    on_cpu = training_args.use_cpu or not torch.cuda.is_available()
    if model_args.dtype != "auto" or not on_cpu:
        return training_args
    model_args.dtype = dtype_name("auto", "cpu")
    if training_args.bf16 and model_args.dtype != "bfloat16":
        print(f"[{tag}] this CPU has no native bf16 (AVX512-BF16/AMX): training in float32 (bf16 off)", file=sys.stderr)
        # replace() reruns __post_init__, which sets accelerate's mixed precision from the flag.
        training_args = replace(training_args, bf16=False)
    return training_args


def prepare(model_args, training_args, wandb_group: str | None, tag: str):
    """What every trainer does before its data: resolve the model, set W&B up, pick the CPU precision and pass the
    ModelConfig's loading keys to the trainer. Returns (model path, training args)."""
    model_path = models.resolve(model_args.model_name_or_path)
    wandb_env(training_args, wandb_group)
    training_args = hardware_precision(model_args, training_args, tag)
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    return model_path, training_args


def fit(trainer_cls, model_path: str, training_args, model_args, dataset, tokenizer, merge_adapter: bool = True):
    """Build TRL's `trainer_cls` on `dataset` (PEFT and quantization from the ModelConfig), check that output_dir's
    disk holds what the run will save, and train it, resuming from the last whole checkpoint in output_dir.
    Returns (trainer, train result, seconds)."""
    import time

    from trl import get_peft_config, get_quantization_config

    trainer = trainer_cls(model=model_path, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=get_peft_config(model_args),
                          quantization_config=get_quantization_config(model_args))
    last = resume_point(training_args.output_dir, remove_partial=trainer.accelerator.is_main_process)
    check_disk_space(trainer.model, training_args, model_args, merge_adapter)
    t0 = time.perf_counter()
    with saving(training_args.output_dir, "saving a checkpoint", trainer.accelerator.is_main_process):
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last)
    return trainer, result, time.perf_counter() - t0


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def free_bytes(path) -> int:
    """Free bytes on the disk that holds `path` (or would: its nearest existing parent)."""
    p = Path(path).expanduser().absolute()
    return shutil.disk_usage(next(d for d in (p, *p.parents) if d.exists())).free


# Saved beside each copy of the weights: tokenizer (tokenizer.json: SmolLM2 3.5 MB, Llama-3 9 MB), configs, trainer
# state. With it the tiny LoRA run (tests) is estimated at 379 MiB; it wrote 342 MiB (a checkpoint, adapter, merged/).
SMALL_FILES = 16 << 20


def save_bytes(model, training_args, model_args, merge_adapter: bool) -> tuple[int, int]:
    """(one checkpoint, the final outputs) in bytes, estimated from the model's parameters: the weights saved (the
    adapter's of a PEFT run), and in a checkpoint AdamW's two moments per trained parameter, in its dtype (under
    DeepSpeed fp32, with an fp32 master copy: 12 bytes, ~100 GB for an 8B full fine-tune, as the recipes say). A
    PEFT run's final outputs add the merged model. Each copy adds SMALL_FILES."""
    params = list(model.parameters())
    count = [getattr(p, "ds_numel", None) or p.numel() for p in params]  # ZeRO-3 leaves partitioned params empty
    weights = sum(n * p.element_size() for n, p in zip(count, params))
    trained = [(n, p) for n, p in zip(count, params) if p.requires_grad]
    trained_bytes = sum(n * p.element_size() for n, p in trained)
    saved = trained_bytes if model_args.use_peft else weights
    if training_args.deepspeed:
        optimizer = 12 * sum(n for n, _ in trained)
    elif "8bit" in str(training_args.optim):
        optimizer = 2 * sum(n for n, _ in trained)
    else:
        optimizer = 2 * trained_bytes
    no_save = str(getattr(training_args.save_strategy, "value", training_args.save_strategy)) == "no"
    checkpoint = 0 if no_save else SMALL_FILES + saved + (0 if training_args.save_only_model else optimizer)
    merged = model_args.use_peft and merge_adapter
    return checkpoint, SMALL_FILES + saved + (SMALL_FILES + weights - trained_bytes if merged else 0)


def check_disk_space(model, training_args, model_args, merge_adapter: bool) -> None:
    """Refuse to train when output_dir's disk cannot hold a checkpoint and the final model: a run on a full disk
    trained for minutes and then died at its first save."""
    checkpoint, final = save_bytes(model, training_args, model_args, merge_adapter)
    free = free_bytes(training_args.output_dir)
    if free < checkpoint + final:
        raise ValueError(
            f"output_dir {training_args.output_dir}: {_size(free)} free on its disk, and this run saves about "
            f"{_size(checkpoint + final)} ({free} < {checkpoint + final} bytes: a checkpoint {_size(checkpoint)}, "
            f"the final model {_size(final)}); free space or choose another output_dir")


def _whole(checkpoint: Path) -> bool:
    # The trainer writes trainer_state.json last (transformers Trainer._save_checkpoint): a checkpoint without a
    # readable one is a save that failed or was killed.
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def resume_point(output_dir, remove_partial: bool) -> str | None:
    """The last whole checkpoint in output_dir (None: start). Partial ones are removed (by the main process): they
    cannot be resumed from, and the space they hold is what the next save needs."""
    out = Path(output_dir)
    steps = sorted((int(d.name.split("-")[1]), d) for d in out.glob("checkpoint-*")
                   if d.is_dir() and d.name.split("-")[1].isdigit()) if out.is_dir() else []
    whole = [d for _, d in steps if _whole(d)]
    for _, d in steps:
        if remove_partial and not _whole(d):
            print(f"[train] {d} is a checkpoint whose save did not finish: removed", file=sys.stderr)
            shutil.rmtree(d, ignore_errors=True)
    return str(whole[-1]) if whole else None


def _disk_full(e: BaseException | None, output_dir) -> bool:
    # safetensors says "StorageFull"; torch.save "file write failed", or on a tmpfs "basic_ios::clear: iostream
    # error" then "unexpected pos": no errno anywhere, so a disk left (nearly) full by the failed write counts too.
    for _ in range(8):  # the exception and what it was raised from
        if e is None:
            break
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) or any(
                s in str(e) for s in ("No space left on device", "StorageFull", "file write failed")):
            return True
        e = e.__cause__ or e.__context__
    return free_bytes(output_dir) < SMALL_FILES


@contextmanager
def saving(output_dir, what: str, main_process: bool = True, partial: Path | None = None):
    """A full disk met inside (a checkpoint, the final model) becomes one DiskFull line that says what to do; the
    save that failed (a checkpoint, or `partial`) is removed, so the run resumes from the last whole checkpoint."""
    try:
        yield
    except Exception as e:
        if not _disk_full(e, output_dir):
            raise
        if partial is not None and main_process:
            shutil.rmtree(partial, ignore_errors=True)
        last = resume_point(output_dir, remove_partial=main_process)
        resume = f"it resumes from {Path(last).name}" if last else "it starts again (no checkpoint was saved)"
        raise DiskFull(f"output_dir {output_dir}: the disk filled up while {what} ({_size(free_bytes(output_dir))} "
                       f"free now); free space and run the same command again: {resume}") from e


def model_init_kwargs(model_args, training_args) -> dict:
    import torch

    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    return {**(training_args.model_init_kwargs or {}), "revision": model_args.model_revision,
            "trust_remote_code": training_args.trust_remote_code,
            "attn_implementation": model_args.attn_implementation, "dtype": dtype}


def load_tokenizer(model_path: str, model_args, training_args):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision,
                                              trust_remote_code=training_args.trust_remote_code)
    if tokenizer.pad_token is None:
        # Llama-3 base has none; the paper (and the reference's axolotl YAML) pads with <|end_of_text|>.
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = "<|end_of_text|>" if "<|end_of_text|>" in vocab else tokenizer.eos_token
    return tokenizer


def save_outputs(trainer, model_path: str, training_args, model_args, merge_adapter: bool) -> dict:
    """Save the trained model so that it stops where it was taught to (the end-of-turn token of the template), and
    for a PEFT run also `<output_dir>/merged`, a plain model the engines load. Returns what was written."""
    import torch

    tokenizer = trainer.processing_class
    eot = [i for i in [tokenizer.convert_tokens_to_ids(tokenizer.eos_token)] if i is not None and i >= 0]
    trainer.model.generation_config.eos_token_id = eot
    trainer.model.generation_config.pad_token_id = tokenizer.pad_token_id
    with saving(training_args.output_dir, "saving the model", trainer.accelerator.is_main_process):
        trainer.save_model(training_args.output_dir)
    out = {"output_dir": training_args.output_dir, "eos": tokenizer.eos_token, "eos_token_ids": eot}
    if model_args.use_peft and merge_adapter and trainer.accelerator.is_main_process:
        merged = trainer.model
        if model_args.load_in_4bit or model_args.load_in_8bit:
            # QLoRA: merge into a bf16 copy of the base, not into the quantized weights.
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16,
                                                        revision=model_args.model_revision)
            merged = PeftModel.from_pretrained(base, training_args.output_dir)
        merged = merged.merge_and_unload()
        merged.generation_config.eos_token_id = eot
        merged_dir = Path(training_args.output_dir) / "merged"
        with saving(training_args.output_dir, "saving the merged model", partial=merged_dir):
            merged.save_pretrained(merged_dir)
            tokenizer.save_pretrained(merged_dir)
        out["merged"] = str(merged_dir)
    return out


def write_summary(trainer, out: dict) -> None:
    """train_summary.json in the output folder, with the W&B run's folder where one is open (offline: `wandb sync`
    it; a report links it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        out["wandb_run_dir"] = str(Path(wandb.run.dir).parent)
    if trainer.accelerator.is_main_process:
        (Path(out["output_dir"]) / "train_summary.json").write_text(json.dumps(out, indent=2, default=str))
    trainer.accelerator.end_training() if hasattr(trainer.accelerator, "end_training") else None


def history(trainer, key: str) -> list:
    return [h[key] for h in trainer.state.log_history if key in h]


def cli(run, argv, tag: str, describe) -> int:
    """A trainer's command line: one error line and exit 2 for bad input, a summary line on success."""
    try:
        out = run(argv)
    except (ValueError, FileNotFoundError, DiskFull) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"[{tag}] {describe(out)}")
    return 0
