"""Supervised fine-tuning with TRL's SFTTrainer, as the paper (Table 8; reference recipes/).

    accelerate launch --config_file recipes/accelerate/zero3.yaml -m train.sft \
        --config recipes/configs/sft/magpie-air-300k-filtered.yaml          # 4+ GPUs, full fine-tune
    python -m train.sft --config recipes/configs/sft/tiny.yaml             # one device, or this CPU

The config is TRL's own dataclasses (`SFTConfig`, `ModelConfig`) plus `DataArguments`, filled by
`TrlParser` from the YAML; `--key value` overrides. A PEFT run also writes `<output_dir>/merged/`,
a plain model that the synth `hf` engine (and vLLM) load, so evaluation can use it. An
interrupted run resumes from its last checkpoint in `output_dir`.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional


@dataclass
class DataArguments:
    dataset: str = field(default="magpie-air-300k-filtered", metadata={
        "help": "a registered SFT set (train.data.dataset_names()) or a Magpie export directory"})
    dataset_path: Optional[str] = field(default=None, metadata={
        "help": "local copy of the registered set (file or folder) instead of the hub"})
    max_samples: Optional[int] = field(default=None, metadata={"help": "a seeded subset, for quick runs"})
    dataset_seed: int = field(default=0, metadata={"help": "seed of the max_samples subset"})
    merge_adapter: bool = field(default=True, metadata={
        "help": "PEFT runs: also save <output_dir>/merged, the adapter merged into the base weights"})
    wandb_group: Optional[str] = field(default=None, metadata={"help": "W&B group (default: the recipe's run folder)"})


def parse(argv=None):
    """The three configs from `--config x.yaml` and `--key value` overrides (see synth.config.parse)."""
    from trl import ModelConfig, SFTConfig

    from synth.config import parse as parse_config

    return parse_config(list(sys.argv[1:] if argv is None else argv), (DataArguments, SFTConfig, ModelConfig))


def check_inputs(data_args: DataArguments, training_args, model_args) -> None:
    """Fail in a second on what can be checked without a model: the dataset, the dtype, the output folder
    (the model path is checked by `models.resolve`). Raises ValueError / FileNotFoundError that name the input."""
    from trl import ModelConfig

    from synth.store import check_output_dir

    from .data import find_source

    find_source(data_args.dataset, data_args.dataset_path)
    # argparse checks the choices of a command-line --dtype only; a YAML value arrives unchecked.
    dtypes = ModelConfig.__dataclass_fields__["dtype"].metadata["choices"]
    if model_args.dtype is not None and model_args.dtype not in dtypes:
        raise ValueError(f"dtype {model_args.dtype}: choose one of {', '.join(dtypes)}")
    check_output_dir(training_args.output_dir)


def train(data_args: DataArguments, training_args, model_args) -> dict:
    """Check the inputs, then fine-tune. The W&B run the trainer opens is closed here with the run's real
    outcome: left open, wandb would record exit code 0 at interpreter exit (a failed run in a process that
    carries on, as under pytest) and the next train() in the process would log into it."""
    check_inputs(data_args, training_args, model_args)
    wandb = sys.modules.get("wandb")  # the trainer imports it; no run can be open if nothing has
    before = wandb.run if wandb else None
    exit_code = 1
    try:
        out = _train(data_args, training_args, model_args)
        exit_code = 0
        return out
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None and wandb.run is not before:  # not a caller's own run
            wandb.run.finish(exit_code=exit_code)


def _train(data_args: DataArguments, training_args, model_args) -> dict:
    import torch
    from transformers import AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    from synth import models

    from .data import load_sft_dataset

    model_path = models.resolve(model_args.model_name_or_path)
    if "wandb" in (training_args.report_to or []):
        if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_PROJECT", "magpie-repro")
        os.environ.setdefault("WANDB_RUN_GROUP", data_args.wandb_group or Path(training_args.output_dir).parent.name)
        os.environ.setdefault("WANDB_DIR", str(Path(training_args.output_dir).parent))
    training_args = _hardware_precision(model_args, training_args)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "revision": model_args.model_revision, "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation, "dtype": dtype,
    }
    dataset = load_sft_dataset(data_args.dataset, path=data_args.dataset_path, max_samples=data_args.max_samples,
                               seed=data_args.dataset_seed)
    if len(dataset) == 0:
        raise ValueError(f"dataset {data_args.dataset!r} has no usable conversations")
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision,
                                              trust_remote_code=training_args.trust_remote_code)
    if tokenizer.pad_token is None:
        # Llama-3 base has none; the paper (and the reference's axolotl YAML) pads with <|end_of_text|>.
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = "<|end_of_text|>" if "<|end_of_text|>" in vocab else tokenizer.eos_token
    trainer = SFTTrainer(
        model=model_path, args=training_args, train_dataset=dataset.select_columns(["messages"]),
        processing_class=tokenizer, peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    last = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last)
    seconds = time.perf_counter() - t0
    # The trained model stops where it was taught to: at the end-of-turn token of the template.
    tokenizer = trainer.processing_class
    eot = [i for i in [tokenizer.convert_tokens_to_ids(tokenizer.eos_token)] if i is not None and i >= 0]
    trainer.model.generation_config.eos_token_id = eot
    trainer.model.generation_config.pad_token_id = tokenizer.pad_token_id
    trainer.save_model(training_args.output_dir)
    # `dataset` lets eval/ place the trained model on its paper Table 1 row.
    out = {"output_dir": training_args.output_dir, "dataset": data_args.dataset}
    if model_args.use_peft and data_args.merge_adapter and trainer.accelerator.is_main_process:
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
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    out.update(steps=trainer.state.global_step, first_loss=losses[0] if losses else None,
               last_loss=losses[-1] if losses else None, train_loss=result.training_loss, seconds=round(seconds, 1),
               examples=len(dataset), eos=tokenizer.eos_token, eos_token_ids=eot,
               tokens=int(tokens[-1]) if tokens else None, train_runtime=result.metrics.get("train_runtime"))
    if trainer.accelerator.is_main_process:
        (Path(training_args.output_dir) / "train_summary.json").write_text(json.dumps(out, indent=2))
    trainer.accelerator.end_training() if hasattr(trainer.accelerator, "end_training") else None
    return out


def _hardware_precision(model_args, training_args):
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
        print("[sft] this CPU has no native bf16 (AVX512-BF16/AMX): training in float32 (bf16 off)", file=sys.stderr)
        # replace() reruns __post_init__, which sets accelerate's mixed precision from the flag.
        training_args = replace(training_args, bf16=False)
    return training_args


def main(argv=None) -> int:
    try:
        data_args, training_args, model_args = parse(argv)
        out = train(data_args, training_args, model_args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"[sft] {out['steps']} steps on {out['examples']} conversations in {out['seconds']}s: loss "
          f"{out['first_loss']} -> {out['last_loss']}, eos {out['eos']!r} -> {out.get('merged', out['output_dir'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
