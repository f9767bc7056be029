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

import sys
from dataclasses import dataclass, field
from typing import Optional

from . import common


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
    """The three configs from `--config x.yaml` and `--key value` overrides (see core.config.parse)."""
    from trl import SFTConfig

    return common.parse(argv, DataArguments, SFTConfig)


def check_inputs(data_args: DataArguments, training_args, model_args) -> None:
    """Fail in a second on what can be checked without a model: the dataset, the dtype, the output folder
    (the model path is checked by `models.resolve`). Raises ValueError / FileNotFoundError that name the input."""
    from .data import find_source

    find_source(data_args.dataset, data_args.dataset_path)
    common.check_model_inputs(training_args, model_args)


def train(data_args: DataArguments, training_args, model_args) -> dict:
    """Check the inputs, then fine-tune (the W&B run is closed with the run's outcome: common.closing_wandb)."""
    check_inputs(data_args, training_args, model_args)
    return common.closing_wandb(_train, data_args, training_args, model_args)


def _train(data_args: DataArguments, training_args, model_args) -> dict:
    from trl import SFTTrainer

    from .data import load_sft_dataset

    model_path, training_args = common.prepare(model_args, training_args, data_args.wandb_group, "sft")
    dataset = load_sft_dataset(data_args.dataset, path=data_args.dataset_path, max_samples=data_args.max_samples,
                               seed=data_args.dataset_seed)
    if len(dataset) == 0:
        raise ValueError(f"dataset {data_args.dataset!r} has no usable conversations")
    tokenizer = common.load_tokenizer(model_path, model_args, training_args)
    trainer, result, seconds = common.fit(SFTTrainer, model_path, training_args, model_args,
                                          # `tools`: TRL renders a row's tool schemas into its chat template
                                          dataset.select_columns([c for c in ("messages", "tools")
                                                                  if c in dataset.column_names]),
                                          tokenizer, data_args.merge_adapter)
    # `dataset` lets eval/ place the trained model on its paper Table 1 row.
    out = {**common.save_outputs(trainer, model_path, training_args, model_args, data_args.merge_adapter),
           "dataset": data_args.dataset}
    losses, tokens = common.history(trainer, "loss"), common.history(trainer, "num_tokens")
    out.update(steps=trainer.state.global_step, first_loss=losses[0] if losses else None,
               last_loss=losses[-1] if losses else None, train_loss=result.training_loss, seconds=round(seconds, 1),
               examples=len(dataset), tokens=int(tokens[-1]) if tokens else None,
               train_runtime=result.metrics.get("train_runtime"))
    common.write_summary(trainer, out)
    return out


def _hardware_precision(model_args, training_args):  # the CPU precision rule (tests/test_engine_hf.py)
    return common.hardware_precision(model_args, training_args, "sft")


def main(argv=None) -> int:
    return common.cli(lambda a: train(*parse(a)), argv, "sft", lambda out: (
        f"{out['steps']} steps on {out['examples']} conversations in {out['seconds']}s: loss {out['first_loss']} -> "
        f"{out['last_loss']}, eos {out['eos']!r} -> {out.get('merged', out['output_dir'])}"))


if __name__ == "__main__":
    sys.exit(main())
