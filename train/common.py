"""What every trainer here shares (train/sft.py, train/dpo.py): the YAML parsing, the input checks, W&B, the CPU
precision rule, the tokenizer's pad token, and what is saved at the end (the model with its end-of-turn token, a
merged copy of a PEFT adapter, train_summary.json)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path


def parse(argv, data_cls, config_cls):
    """(data args, TRL config, ModelConfig) from `--config x.yaml` and `--key value` (see synth.config.parse)."""
    from trl import ModelConfig

    from synth.config import parse as parse_config

    return parse_config(list(sys.argv[1:] if argv is None else argv), (data_cls, config_cls, ModelConfig))


def check_model_inputs(training_args, model_args) -> None:
    """The dtype and the output folder, checked in a second (the model path by `models.resolve`)."""
    from trl import ModelConfig

    from synth.store import check_output_dir

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
        if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_PROJECT", "magpie-repro")
        os.environ.setdefault("WANDB_RUN_GROUP", group or Path(training_args.output_dir).parent.name)
        os.environ.setdefault("WANDB_DIR", str(Path(training_args.output_dir).parent))


def hardware_precision(model_args, training_args, tag: str = "train"):
    """`dtype: auto` on a CPU: the weights and the bf16 flag follow what the CPU computes natively.
    Where bf16 is only emulated (no AVX512-BF16/AMX), bf16 autocast made the tiny LoRA run slower
    than fp32 (benchmarks/sft_throughput.py), so it trains in fp32 and says so."""
    import torch

    from synth.engines import dtype_name

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
    from synth import models

    model_path = models.resolve(model_args.model_name_or_path)
    wandb_env(training_args, wandb_group)
    training_args = hardware_precision(model_args, training_args, tag)
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    return model_path, training_args


def fit(trainer_cls, model_path: str, training_args, model_args, dataset, tokenizer):
    """Build TRL's `trainer_cls` on `dataset` (PEFT and quantization from the ModelConfig) and train it, resuming
    from the last checkpoint in output_dir. Returns (trainer, train result, seconds)."""
    import time

    from transformers.trainer_utils import get_last_checkpoint
    from trl import get_peft_config, get_quantization_config

    trainer = trainer_cls(model=model_path, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=get_peft_config(model_args),
                          quantization_config=get_quantization_config(model_args))
    last = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last)
    return trainer, result, time.perf_counter() - t0


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
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"[{tag}] {describe(out)}")
    return 0
