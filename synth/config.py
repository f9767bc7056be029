"""Synthesis configuration: the stages' dataclasses, filled from a recipe YAML by TRL's `TrlParser` (core.config).

`python -m synth <verb> --config recipes/configs/synth/air.yaml --total_prompts 1000` : the YAML
sets the defaults, `--key value` (or `--key=value`) overrides them. One YAML carries the keys of
every synthesis stage; an unknown key is an error. Each default names its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from core.config import (
    ModelArgs,
    ResponseArgs,
    check_roles,
    require_choice,
    require_positive,
    require_sampling,
    role_args,
    with_roles,
)
from core.config import parse as parse_classes

from core.tools import load_tools

from .steering import Steering

TOOLS_DIR = Path(__file__).with_name("data") / "tools"  # the example tool schemas a `tools` name finds


def offered_tools(spec) -> list[dict]:
    """The tools of the `tools` key (core.tools.load_tools; a bare name is one of synth/data/tools/)."""
    return load_tools(spec, TOOLS_DIR)


def require_classifier_engine(obj, key: str) -> None:
    if getattr(obj, key) != "hf":
        raise ValueError(f"{key} must be hf (a reward model is a transformers sequence classifier), "
                         f"got {getattr(obj, key)!r}")


# Sampling mixes of paper Table 7: (temperature, top_p, weight).
MIXES = {
    # Air 3M: T in {1.0, 1.1, 1.2} x top_p in {1.0, 0.995, 0.99}, 300K each, plus T=1.25 at the
    # same three top_p values, 100K each.
    "air-3m": [(t, p, 3) for t in (1.0, 1.1, 1.2) for p in (1.0, 0.995, 0.99)]
    + [(1.25, p, 1) for p in (1.0, 0.995, 0.99)],
    # Pro 1M: 300K at (1.0, 1.0), (1.1, 0.995), (1.2, 0.995); 100K at (1.25, 0.99).
    "pro-1m": [(1.0, 1.0, 3), (1.1, 0.995, 3), (1.2, 0.995, 3), (1.25, 0.99, 1)],
}


@dataclass
class InstructionArgs:
    total_prompts: int = field(default=1000, metadata={"help": "raw instruction samples to draw (reference: total_prompts)"})
    n: int = field(default=200, metadata={"help": "samples per pre-query prompt per round (paper/reference: 200)"})
    mix: str = field(default="single", metadata={"help": "sampling mix: single, air-3m, pro-1m (paper Table 7)"})
    temperature: float = field(default=1.0, metadata={"help": "paper default 1.0 (used by mix=single)"})
    top_p: float = field(default=1.0, metadata={"help": "paper default 1.0 (used by mix=single)"})
    max_tokens: int = field(default=2048, metadata={"help": "reference gen_ins.py: 2048"})
    newline_stop: Optional[bool] = field(default=None, metadata={"help": "stop at the first newline; default: the family's (reference)"})
    sanitize: Optional[bool] = field(default=None, metadata={"help": "reference cleaning; default: on where the newline stop is off"})
    control: Optional[str] = field(default=None, metadata={"help": "math, code, translation or language:<Name> (paper section 5); default none"})
    system_prompt: Optional[str] = field(default=None, metadata={"help": "step-1 system prompt text (overrides control); paper default: none"})
    # Steering (synth/steering.py): each key is unset by default, as the paper samples the bare template. A list holds
    # texts, {text, weight} entries and data files (synth/data/*.yaml; `file.yaml:group` for one group).
    prefill: Optional[list[str]] = field(default=None, metadata={
        "help": "stubs put after the pre-query template, one drawn per record (MAGPIE-Prefill, KodCode: e.g. "
                "'Write a Python function that'); the instruction is the stub + what the model writes. Default none"})
    system_prompts: Optional[list[str]] = field(default=None, metadata={
        "help": "system turns drawn per record by weight (texts, {text, weight}, or a file such as "
                "synth/data/system_prompts.yaml); instead of control/system_prompt. Default none"})
    personas: Optional[list[str]] = field(default=None, metadata={
        "help": "who the user is, said in the system turn and drawn per record (e.g. synth/data/personas.yaml)"})
    topics: Optional[list[str]] = field(default=None, metadata={
        "help": "what the user asks about, said in the system turn and drawn per record (e.g. synth/data/topics.yaml)"})
    language: Optional[str] = field(default=None, metadata={
        "help": "the language the user writes in, said in the system turn (paper section 5); joins control "
                "math/code/translation and the other steering keys. Default none"})
    # Tool-call data (Magpie issue #31; core/tools.py): the pre-query template rendered with these tools in the
    # family's own tool format, so that the model asks for something they do; the answers are written with them and
    # their calls parsed into `tool_calls`. Unset by default: the paper renders no tools.
    tools: Optional[list[str]] = field(default=None, metadata={
        "help": "tool schemas offered to the model: JSON files or folders of them, or names of synth/data/tools/ "
                "(weather, calculator, search, calendar); each record carries them as `tools`. Default none"})
    seed: int = field(default=0, metadata={"help": "base seed; each round derives its own"})
    rounds_per_shard: int = field(default=10, metadata={
        "help": "rounds written per Parquet shard (resume granularity; part of the resume key: it fixes which "
                "rounds shard k holds)"})

    def __post_init__(self):
        require_positive(self, "total_prompts", "n", "max_tokens", "rounds_per_shard")
        require_sampling(self, "temperature", "top_p")
        require_choice(self, "mix", ("single", *MIXES))
        Steering.from_args(self)  # every steering value and data file checked before a model loads
        if isinstance(self.tools, str):  # one path from YAML or the command line
            self.tools = [self.tools]
        if self.tools:
            offered_tools(self.tools)  # a missing file or a malformed schema fails here, naming it


# The reference's multi-turn system prompt (exp/gen_mt.py), kept verbatim (typos included) so that
# MT runs condition the model exactly as the released MT sets did.
REFERENCE_MT_SYSTEM_PROMPT = (
    "You are a helpful Al assistant. The user will engage in a multi-round conversation with you, asking "
    "initial questions and following up with additional related questions. Your goal is to provide "
    "thorough,relevant and insightful responses to help the user with their queries."
)


@dataclass
class MultiTurnArgs:
    turns: int = field(default=2, metadata={"help": "conversation turns (released MT sets: 2)"})
    mt_system_prompt: str = field(default=REFERENCE_MT_SYSTEM_PROMPT, metadata={"help": "system turn while sampling follow-ups (reference gen_mt.py)"})
    mt_temperature: float = field(default=1.0, metadata={"help": "follow-up instruction sampling (reference: 1.0)"})
    mt_top_p: float = field(default=1.0, metadata={"help": "reference: 1.0"})
    mt_max_tokens: int = field(default=2048, metadata={"help": "follow-up instruction max tokens (reference: 2048)"})
    mt_batch_size: int = field(default=200, metadata={"help": "conversations per batch and shard"})

    def __post_init__(self):
        if self.turns < 2:
            raise ValueError(f"turns must be at least 2 for multi-turn, got {self.turns}")
        require_positive(self, "mt_max_tokens", "mt_batch_size")
        require_sampling(self, "mt_temperature", "mt_top_p")


JudgeModel = role_args("JudgeModel", "judge_", "the judge (task category, difficulty, input quality)",
                       model="meta-llama/Meta-Llama-3-8B-Instruct", model_help="paper: Llama-3-8B-Instruct")
GuardModel = role_args("GuardModel", "guard_", "the safety guard", model="meta-llama/Meta-Llama-Guard-2-8B",
                       model_help="paper's safety tagger: Llama-Guard-2-8B")
# The base model writes reward_difference's URIAL answers in a process of its own (tagger base_response): the reward
# model scores them in another, so vLLM takes its default share of the GPU.
BaseModel = role_args("BaseModel", "base_", "the base model of reward_difference (URIAL answers)",
                      model_help="paper: meta-llama/Meta-Llama-3-8B; needed by reward_difference")
RewardModel = role_args("RewardModel", "reward_", "the reward model (a sequence classifier)", engine="hf",
                        model="sfairXC/FsfairX-LLaMA3-RM-v0.1",
                        model_help="paper: sfairXC/FsfairX-LLaMA3-RM-v0.1; offline: embedded:smollm2-135m-instruct "
                                   "(mean log-prob stand-in)")


@with_roles
@dataclass
class TagArgs(JudgeModel, GuardModel, BaseModel, RewardModel):
    taggers: list[str] = field(default_factory=lambda: [
        "task_category", "difficulty", "input_quality", "instruct_reward", "llama_guard_2", "language",
        "min_neighbor_distance"], metadata={"help": "taggers to run, in order (python -m synth taggers lists them)"})
    judge_max_tokens: int = field(default=1024, metadata={"help": "reference unitag.py: 1024"})
    judge_prefill: str = field(default="json", metadata={"help": "json: reply prefilled with '{' (paper); label: prefilled up to the label, for tiny judges"})
    base_max_tokens: int = field(default=4096, metadata={"help": "base model's URIAL answers for reward_difference"})
    embedding_model: str = field(default="sentence-transformers/all-mpnet-base-v2", metadata={"help": "paper: all-mpnet-base-v2"})
    knn_k: int = field(default=500, metadata={"help": "neighbours searched (reference gen_dis.py: 500)"})
    repeat_threshold: float = field(default=0.05, metadata={"help": "squared L2 under which two instructions repeat (reference: 0.05)"})
    knn_index: str = field(default="auto", metadata={
        "help": "auto (exact up to 200K rows or on FAISS GPUs, ivf above), exact (the reference's IndexFlatL2) or "
                "ivf (k-means cells searched as a join; its recall@10 against exact is measured and kept in the "
                "manifest)"})
    knn_nprobe: Optional[int] = field(default=None, metadata={"help": "ivf: cells each row is compared with (default 16: "
                                                                      "recall@10 0.98 on the hardest set measured)"})
    tag_batch_size: int = field(default=256, metadata={
        "help": "records per tagging shard and tag() call, as set; a model tagger splits a call into batches "
                "of at most its own cap (judge/guard 64, reward 16: python -m synth taggers), said in the log"})

    def __post_init__(self):
        check_roles(self)
        require_positive(self, "judge_max_tokens", "knn_k", "tag_batch_size", "base_max_tokens")
        require_choice(self, "judge_prefill", ("json", "label"))
        require_choice(self, "knn_index", ("auto", "exact", "ivf"))
        if self.knn_nprobe is not None:
            require_positive(self, "knn_nprobe")
        require_classifier_engine(self, "reward_engine")


@dataclass
class FilterArgs:
    filter_preset: Optional[str] = field(default="air-300k-filtered", metadata={"help": "paper Table 5 preset (python -m synth presets)"})
    filter_expression: Optional[str] = field(default=None, metadata={"help": "an SQL condition over the tags (DuckDB), instead of or after the preset"})
    filter_size: Optional[int] = field(default=None, metadata={"help": "rows to keep (default: the preset's, e.g. 300K)"})
    filter_seed: int = field(default=0, metadata={"help": "seed of random presets (raw-300k)"})


@dataclass
class ExportArgs:
    export_name: Optional[str] = field(default=None, metadata={"help": "dataset name on the card (default: recipe + preset)"})
    push_to_hub: Optional[str] = field(default=None, metadata={"help": "hub repo id to push to; nothing is pushed without it"})
    export_format: str = field(default="native", metadata={
        "help": "native: TRL `messages` + our columns; magpie: the columns and types of the released Magpie-Align "
                "sets (uuid, conversations, model, *_generator, min_similar_uuid; DPO: responses, rewards_armorm, "
                "chosen, rejected), for the export and the preference export"})
    model_license: Optional[str] = field(default=None, metadata={
        "help": "the generator's licence on the cards, a Hub id (llama3.1) or a name (default: from the model's "
                "family, synth/export.py MODEL_LICENSES; unknown families say so)"})
    data_license: Optional[str] = field(default=None, metadata={
        "help": "the data's licence on the cards (default cc-by-nc-4.0, what the Magpie authors state for their "
                "released data)"})

    def __post_init__(self):
        require_choice(self, "export_format", ("native", "magpie"))


# The preference stage's scorer (paper: ArmoRM-Llama3-8B-v0.1, whose custom code needs trust_remote_code: the air and
# pro configs ask for it; the code default never runs remote code).
PreferenceRewardModel = role_args("PreferenceRewardModel", "pref_reward_", "the preference scorer (a sequence classifier)",
                                  engine="hf", model="RLHFlow/ArmoRM-Llama3-8B-v0.1",
                                  model_help="paper: RLHFlow/ArmoRM-Llama3-8B-v0.1 (needs pref_reward_trust_remote_code); "
                                             "offline: embedded:smollm2-135m-instruct (mean log-prob stand-in)")


@with_roles
@dataclass
class PreferenceArgs(PreferenceRewardModel):
    pref_preset: str = field(default="dpo-100k", metadata={
        "help": "filter preset picking the instructions from the tagged set (python -m synth presets; paper: 100K "
                "high-quality, category-diverse)"})
    pref_size: Optional[int] = field(default=None, metadata={"help": "instructions to pick (default: the preset's, 100K)"})
    pref_seed: int = field(default=0, metadata={"help": "seed of the selection and of the sampling"})
    pref_k: int = field(default=5, metadata={"help": "responses sampled per instruction (paper: 5)"})
    pref_temperature: float = field(default=0.8, metadata={"help": "paper: 0.8"})
    pref_top_p: float = field(default=1.0, metadata={"help": "paper silent; reference 1.0"})
    pref_max_tokens: int = field(default=4096, metadata={"help": "per response (paper's response limit: 4096)"})
    pref_batch_size: int = field(default=100, metadata={
        "help": "instructions per sampling shard (k responses each) and per scoring shard"})
    pref_export_name: Optional[str] = field(default=None, metadata={"help": "name on the card (default: <run>-dpo)"})

    def __post_init__(self):
        check_roles(self)
        require_positive(self, "pref_max_tokens", "pref_batch_size")
        require_sampling(self, "pref_temperature", "pref_top_p")
        if self.pref_k is None or self.pref_k < 2:
            raise ValueError(f"pref_k must be at least 2 (chosen and rejected are different samples), got {self.pref_k!r}")
        if self.pref_size is not None:
            require_positive(self, "pref_size")
        require_classifier_engine(self, "pref_reward_engine")


@dataclass
class RunArgs:
    stages: list[str] = field(default_factory=lambda: ["instructions", "responses", "tag", "filter", "export"],
                              metadata={"help": "stages `run` executes, in order"})
    output_dir: str = field(default="runs/magpie_air", metadata={"help": "the recipe's run folder; stages write subfolders"})
    profile: str = field(default="air", metadata={"help": "tiny, air or pro (recorded; the YAML sets the values)"})
    report_to: str = field(default="wandb", metadata={"help": "wandb or none"})
    wandb_project: str = field(default="magpie-repro", metadata={"help": "one project, runs grouped by recipe"})
    wandb_group: Optional[str] = field(default=None, metadata={"help": "default: the output_dir's name"})
    # Ray (core/cluster.py): the model stages' shards go to engine actors. Unset: one process, as always.
    ray_address: Optional[str] = field(default=None, metadata={
        "help": "run the model stages on Ray: auto (the running cluster), local (start one here), host:port or "
                "ray://host:10001; unset: this process"})
    ray_actors: Optional[int] = field(default=None, metadata={
        "help": "engine actors per stage (default: as many as the cluster holds, one CPU slot left to Ray Data)"})
    ray_cpus_per_actor: float = field(default=1.0, metadata={
        "help": "CPU slots per actor; a CPU engine runs that many torch threads (1: one per core, measured best)"})
    ray_gpus_per_actor: str = field(default="auto", metadata={
        "help": "tp: the role's tensor_parallel_size, required (air, pro); auto: tp on a cluster with GPUs, else "
                "CPU slots; or a number (0: CPU only)"})

    def __post_init__(self):
        if self.ray_actors is not None:
            require_positive(self, "ray_actors")
        require_positive(self, "ray_cpus_per_actor")
        if self.ray_gpus_per_actor not in ("auto", "tp"):
            try:
                if float(self.ray_gpus_per_actor) < 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"ray_gpus_per_actor must be auto, tp or a number >= 0; got "
                                 f"{self.ray_gpus_per_actor!r}") from None


for _cls in (ModelArgs, ResponseArgs, TagArgs, PreferenceArgs):
    _cls.engine_planned = True  # `engine: auto` is weighed against the run's planned work (synth.plan.choose_engines)

ALL = (ModelArgs, InstructionArgs, ResponseArgs, MultiTurnArgs, TagArgs, FilterArgs, ExportArgs, PreferenceArgs, RunArgs)


def parse(argv: list[str] | None = None):
    """The synthesis config (one instance of each of ALL) from `--config x.yaml` and `--key value` overrides."""
    from .plan import choose_engines

    parsed = parse_classes(argv, ALL)
    choose_engines(parsed)  # engine: auto, weighed against the work this run plans
    return parsed
