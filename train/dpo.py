"""Direct preference optimisation with TRL's DPOTrainer: the paper's "+DPO" rows (Table 1; settings Table 9).

    accelerate launch --config_file recipes/accelerate/zero3.yaml -m train.dpo \
        --config recipes/configs/dpo/magpie-air-dpo.yaml                 # 4+ GPUs, full DPO from the SFT model
    python -m train.dpo --config recipes/configs/dpo/tiny.yaml          # LoRA on this CPU

The config is TRL's own dataclasses (`DPOConfig`, `ModelConfig`) plus `DPODataArguments` (the SFT trainer's data
keys, a preference set, `max_prompt_length` and the paper row), filled by `TrlParser` from the YAML; `--key value`
overrides. `model_name_or_path` is where DPO starts: an SFT output directory (a LoRA SFT's adapter directory
starts from its `merged/` model) or a hub id. What train/sft.py does at the end happens here too: the model is
saved to stop at its end-of-turn token, a PEFT run also writes `<output_dir>/merged/`, and `train_summary.json`
records the set and the paper row, so that `python -m eval run --model <output_dir>` lands on the +DPO row.
An interrupted run resumes from its last checkpoint in `output_dir`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from core import models

from . import common
from .sft import DataArguments


@dataclass
class DPODataArguments(DataArguments):
    dataset: str = field(default="magpie-air-dpo", metadata={
        "help": "a registered preference set (python -m train.data) or a local one, e.g. runs/<recipe>/preferences/export"})
    max_prompt_length: Optional[int] = field(default=1800, metadata={
        "help": "prompt tokens (chat template applied) a pair may have; longer pairs are dropped and counted "
                "(reference: 1800; TRL's DPOConfig no longer has this key)"})
    row: Optional[str] = field(default=None, metadata={
        "help": "the paper Table 1 row this model belongs on (magpie-air-dpo, magpie-pro-dpo, "
                "ultrachat-dpo-ultrafeedback); eval places the model there"})


def parse(argv=None):
    from trl import DPOConfig

    return common.parse(argv, DPODataArguments, DPOConfig)


def start_model(model: str) -> str:
    """The model DPO starts from, checked: a missing SFT output is an error that says to train it first; a LoRA SFT's
    output directory (an adapter) starts from the merged model train/sft.py wrote beside it."""
    if model is None:
        raise ValueError("model_name_or_path is not set: give the SFT model DPO starts from (runs/<recipe>/sft)")
    if not models.looks_local(model):
        return model
    p = Path(model).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"DPO start model {model} does not exist: fine-tune it first (train.sft, e.g. "
                                "bash recipes/magpie_air.sh) or give an SFT output directory or hub id")
    if p.is_dir() and not (p / "config.json").exists():
        if (p / "merged" / "config.json").exists():
            print(f"[dpo] {model} holds a LoRA adapter: starting from {p / 'merged'}", file=sys.stderr)
            return str(p / "merged")
        raise FileNotFoundError(f"DPO start model {model} has no config.json: an unfinished SFT run? Finish it "
                                "(rerun the same train.sft command) or give a model directory")
    return str(p)


def check_inputs(data_args: DPODataArguments, training_args, model_args) -> None:
    from .data import find_source

    model_args.model_name_or_path = start_model(model_args.model_name_or_path)
    find_source(data_args.dataset, data_args.dataset_path, kind="preference")
    common.check_model_inputs(training_args, model_args)
    if data_args.max_prompt_length is not None and training_args.max_length is not None \
            and data_args.max_prompt_length >= training_args.max_length:
        raise ValueError(f"max_prompt_length {data_args.max_prompt_length} leaves no room for a response in "
                         f"max_length {training_args.max_length}; lower it (reference: 1800 of 2048)")


def drop_long_prompts(dataset, tokenizer, limit: int | None):
    """Pairs whose templated prompt has more than `limit` tokens are dropped (a cut prompt asks another question);
    returns the kept pairs and how many were dropped."""
    if limit is None:
        return dataset, 0
    n = len(dataset)
    kept = dataset.filter(lambda p: len(prompt_ids(tokenizer, p)) <= limit, input_columns="prompt",
                          desc="prompt length", load_from_cache_file=False)
    return kept, n - len(kept)


def prompt_ids(tokenizer, messages, add_generation_prompt: bool = True) -> list[int]:
    """The token ids of `messages` through the chat template (transformers 5 returns a BatchEncoding here)."""
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def train(data_args: DPODataArguments, training_args, model_args) -> dict:
    check_inputs(data_args, training_args, model_args)
    return common.closing_wandb(_train, data_args, training_args, model_args)


def _train(data_args: DPODataArguments, training_args, model_args) -> dict:
    from trl import DPOTrainer

    from .data import find_source, load_dataset_drops, load_preference_dataset

    model_path, training_args = common.prepare(model_args, training_args, data_args.wandb_group, "dpo")
    dataset = load_preference_dataset(data_args.dataset, path=data_args.dataset_path,
                                      max_samples=data_args.max_samples, seed=data_args.dataset_seed)
    drops = dict(load_dataset_drops.get(find_source(data_args.dataset, data_args.dataset_path, "preference")[0].name, {}))
    tokenizer = common.load_tokenizer(model_path, model_args, training_args)
    dataset, too_long = drop_long_prompts(dataset, tokenizer, data_args.max_prompt_length)
    if too_long:
        drops["prompt_too_long"] = too_long
    if len(dataset) == 0:
        detail = ", ".join(f"{k} {v}" for k, v in drops.items()) or "the set is empty"
        raise ValueError(f"dataset {data_args.dataset_path or data_args.dataset} has no usable preference pairs "
                         f"(dropped: {detail}); check the preference stage's card or the set's schema")
    trainer, result, seconds = common.fit(DPOTrainer, model_path, training_args, model_args,
                                          dataset.select_columns(["prompt", "chosen", "rejected"]), tokenizer,
                                          data_args.merge_adapter)
    out = {**common.save_outputs(trainer, model_path, training_args, model_args, data_args.merge_adapter),
           "dataset": data_args.dataset_path or data_args.dataset, "row": data_args.row, "start_model": model_path}
    losses, tokens = common.history(trainer, "loss"), common.history(trainer, "num_tokens")
    margins, accuracies = common.history(trainer, "rewards/margins"), common.history(trainer, "rewards/accuracies")
    out.update(steps=trainer.state.global_step, pairs=len(dataset), dropped=drops,
               first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None, train_loss=result.training_loss,
               first_margin=margins[0] if margins else None, last_margin=margins[-1] if margins else None,
               last_accuracy=accuracies[-1] if accuracies else None, seconds=round(seconds, 1),
               train_runtime=result.metrics.get("train_runtime"), beta=training_args.beta,
               tokens=int(tokens[-1]) if tokens else None)
    common.write_summary(trainer, out)
    return out


def main(argv=None) -> int:
    return common.cli(lambda a: train(*parse(a)), argv, "dpo", lambda out: (
        f"{out['steps']} steps on {out['pairs']} pairs in {out['seconds']}s: loss {out['first_loss']} -> "
        f"{out['last_loss']}, reward margin {out['first_margin']} -> {out['last_margin']} -> "
        f"{out.get('merged', out['output_dir'])}"))


if __name__ == "__main__":
    sys.exit(main())
