"""Pairwise LLM judges on any engine of `core.engines`, the readers of their verdicts, and the named judges.

`PairwiseJudge` asks a judge model about (question, answer A, answer B) items with a benchmark's prompt and reads
its verdicts as the benchmark says (eval/benchmarks/: AlpacaEval 2's one weighted token, Arena-Hard's labels).
A verdict that cannot be read is None: counted by the scorers, never fatal.

Which judge: OpenAI shut the paper's judge (gpt-4-1106-preview) down on 2026-03-26, so the default (`judge:
gpt-4.1`) is the one both benchmarks moved to: AlpacaEval's `weighted_alpaca_eval_gpt4.1` (the paper's protocol,
logprob-weighted, with gpt-4.1) and arena-hard-auto v2.0's judge, gpt-4.1. `judge: paper` keeps the paper's for
a user with an archived deployment (`judge_base_url`). `check_judges` refuses a judge that cannot judge in one
line before any answer is generated. The references stay the benchmarks' files (gpt4_turbo, gpt-4-0314 answers).

`prefill: label` (tiny Arena-Hard judges): the reply is prefilled up to the verdict, so the judge only has to name
it. (The AlpacaEval judge needs no prefill: it is read from the first token's probabilities; greedy text alone
left 19 of 24 tiny judgments unreadable, SmolLM2 mostly writing "The best model identifier".)
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from core.engines import Sampling

ARENA_LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
# Arena-Hard's own reading: the double-bracket form first, then single brackets; the verdict is
# the label found, and two different labels in one judgment make it unreadable.
_ARENA_PATTERNS = (re.compile(r"\[\[([AB<>=]+)\]\]"), re.compile(r"\[([AB<>=]+)\]"))
PREFILLS = ("none", "label")

# The named judges, the retired models and the newer alpaca_eval annotator configs: data, in eval/data/judges.yaml.
REGISTRY_FILE = Path(__file__).resolve().parent / "data" / "judges.yaml"
_REGISTRY = yaml.safe_load(REGISTRY_FILE.read_text())
DEFAULT_JUDGE: str = _REGISTRY["default"]
JUDGES: dict[str, dict] = _REGISTRY["judges"]  # name -> {about, status, version, settings, ...}
# Refused without a call unless a base URL of the user's own (an archived deployment) serves them. gpt-4-0314's
# Arena-Hard answers stay: they are a file.
RETIRED: dict[str, str] = {m: str(d) for m, d in _REGISTRY["retired"]["models"].items()}
ALPACA_ANNOTATORS: dict[str, dict] = _REGISTRY["alpaca_annotators"]
# The identity of a named judge: a config may not give other values for these (the rest of its settings are
# defaults a config may change, e.g. arena_judge_max_tokens).
IDENTITY = ("judge_engine", "judge_model", "alpaca_annotator")
LOCAL_NAME = next(n for n, j in JUDGES.items() if j["status"] == "local" and j["settings"]["judge_engine"] == "vllm")


def _spelled(name: str) -> str:
    keys = ", ".join(f"{k} {v}" for k, v in JUDGES[name]["settings"].items() if k in ("judge_model", "alpaca_annotator"))
    return f"--judge {name} ({keys})"


REPLACEMENT = _spelled(DEFAULT_JUDGE)
LOCAL_JUDGE = f"--judge {LOCAL_NAME} ({JUDGES[LOCAL_NAME]['gpus']})"


def judge_named(name: str) -> dict:
    """The registry entry of judge `name`; ValueError naming the known ones."""
    if name not in JUDGES:
        raise ValueError(f"judge must be one of {', '.join(JUDGES)} (eval/data/judges.yaml), got {name!r}")
    return JUDGES[name]


def judge_name_of(jargs) -> str | None:
    """The registry name whose identity the config's judge has (the one it was given, or one that matches), or
    None for a judge of the user's own."""
    if jargs.judge:
        return jargs.judge
    own = {k: getattr(jargs, k) for k in IDENTITY}
    return next((n for n, j in JUDGES.items() if all(j["settings"].get(k) == v for k, v in own.items())), None)


def parse_arena_verdict(text: str | None) -> str | None:
    """The verdict label in a judgment, or None when there is none or it is ambiguous."""
    if not isinstance(text, str):
        return None
    for pattern in _ARENA_PATTERNS:
        found = {m.strip() for m in pattern.findall(text)}
        if found:
            return found.pop() if len(found) == 1 and found <= set(ARENA_LABELS) else None
    return None


def alpaca_preference(top_logprobs: dict[str, float] | None, text: str | None) -> float | None:
    """2 - P(m) / (P(m) + P(M)) from the first token's top log-probabilities, the tokens matched
    exactly as alpaca_eval's logprob parser does; the text's label where neither token is there;
    None where nothing can be read."""
    lp = {t: v for t, v in (top_logprobs or {}).items() if t in ("m", "M")}
    if lp:
        p_m = math.exp(lp.get("m", -math.inf))
        return 2.0 - p_m / (p_m + math.exp(lp.get("M", -math.inf)))
    label = parse_alpaca_verdict(text)
    return None if label is None else float(label)


def parse_alpaca_verdict(text: str | None) -> int | None:
    """1 when the judge named `m` (the first output shown), 2 for `M`, None for anything else."""
    token = text.strip().strip("\"'`*.:").split() if isinstance(text, str) else []
    return {"m": 1, "M": 2}.get(token[0].strip("\"'`*.:")) if token else None


def _fill(template: str, values: dict[str, str]) -> str:
    # One pass over the placeholders: an answer that happens to contain "{output_2}" stays as written.
    keys = "|".join(map(re.escape, values))
    return re.sub(r"\{(" + keys + r")\}", lambda m: values[m.group(1)], template)


@dataclass
class JudgePrompt:
    """A benchmark's judge prompt: chat messages with placeholders, filled in order from the item's `fields` (a
    pairwise judge: the question, answer A, answer B; WildBench's grader: the history, the question, the answer and
    the checklist), the judge's sampling, where the wording comes from (recorded with the judgments) and the text
    the judge's reply is prefilled with ("": none)."""
    messages: list[dict]
    placeholders: tuple[str, ...]
    sampling: Sampling
    source: str
    prefill: str = ""
    fields: tuple[str, ...] = ("question", "answer_a", "answer_b")

    def conversation(self, item: dict) -> list[dict]:
        values = dict(zip(self.placeholders, (item[f] for f in self.fields)))
        return [{**m, "content": _fill(m["content"], values)} for m in self.messages]


class PairwiseJudge:
    """`judge(items)` with items {"question", "answer_a", "answer_b"} -> [{"judgment", "verdict"}], on a judged
    benchmark's prompt (the registered object, eval.benchmarks.get_benchmark), its verdicts as it reads them (A and B in the order given; callers
    randomise the order)."""

    def __init__(self, engine, benchmark, max_tokens: int, prefill: str = "none",
                 prompt_file: str | None = None, top_logprobs: int = 5, names: tuple[str, str] | None = None):
        """`engine`: an engine, or a function that builds one when the first judgment is asked for
        (with `names` = (engine name, model) for `info()` meanwhile): a resumed run whose judgments
        are all on disk never loads the judge. Each benchmark takes the settings that are its own."""
        if prefill not in PREFILLS:
            raise ValueError(f"judge prefill must be one of {PREFILLS}, got {prefill!r}")
        self.benchmark = benchmark
        if not self.benchmark.judged:
            raise ValueError(f"no pairwise judge for {self.benchmark.name!r}")
        self._engine, self.prefill = engine, prefill
        self.names = names or (engine.info.name, engine.info.model)
        self.prompt = self.benchmark.judge_prompt(max_tokens=max_tokens, prefill=prefill, prompt_file=prompt_file,
                                                  top_logprobs=top_logprobs)

    @property
    def engine(self):
        if callable(self._engine):
            self._engine = self._engine()
        return self._engine

    def judge(self, items: list[dict]) -> list[dict]:
        if not items:
            return []
        conversations = [self.prompt.conversation(it) for it in items]
        return self.benchmark.verdicts(self.engine, conversations, self.prompt)

    def info(self) -> dict:
        return {"judge_model": self.names[1], "judge_engine": self.names[0],
                "prefill": self.prefill, "prompt": self.prompt.source, "sampling": self.prompt.sampling.to_dict()}


# ---------------------------------------------------------------------------------------------
# Which judge, and whether it can judge

def _alpaca_eval_configs_dir() -> Path:
    # find_spec, not an import: importing alpaca_eval takes seconds and changes the root logger
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None:
        raise ImportError("alpaca_eval is not installed; pip install -e . installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "evaluators_configs"


def alpaca_annotator_configs(name: str) -> dict[str, dict]:
    """alpaca_eval annotator config `name` ({annotator: settings}): the installed package's, else ours."""
    path = _alpaca_eval_configs_dir() / name / "configs.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text())
    if name in ALPACA_ANNOTATORS:
        return {k: {**v, "completions_kwargs": dict(v["completions_kwargs"])} for k, v in ALPACA_ANNOTATORS[name].items()}
    raise ValueError(f"alpaca_annotator {name!r} is no alpaca_eval annotator config (none in {path.parent.parent} "
                     f"or eval/data/judges.yaml); use {JUDGES[DEFAULT_JUDGE]['settings']['alpaca_annotator']}, "
                     "or engine")


def alpaca_annotator_model(name: str) -> str | None:
    """The model an alpaca_eval annotator config calls (None where it names none)."""
    models = [c.get("completions_kwargs", {}).get("model_name") for c in alpaca_annotator_configs(name).values()]
    return next((m for m in models if m), None)


def write_alpaca_annotator(name: str, folder: Path, base_url: str | None = None) -> Path:
    """Annotator config `name` as a file alpaca_eval's PairwiseAnnotator reads: the prompt's path made absolute (our
    copies of newer configs then find the package's prompt) and, given judge_base_url, the server it calls."""
    configs = alpaca_annotator_configs(name)
    prompts = _alpaca_eval_configs_dir()
    for cfg in configs.values():
        prompt = prompts / str(cfg.get("prompt_template", ""))
        if prompt.is_file():
            cfg["prompt_template"] = str(prompt)
        if base_url and cfg.get("fn_completions") == "openai_completions":
            cfg["completions_kwargs"] = {**cfg.get("completions_kwargs", {}), "openai_api_base": base_url}
    path = Path(folder) / name / "configs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(configs, sort_keys=False))
    return path


def served_judges(jargs, benchmarks) -> list[tuple[str, str | None, str, bool]]:
    """(model, base URL or None for the client's default, the setting that names it, whether alpaca_eval calls it)
    of each judge a server answers for the judged `benchmarks`: the engine judge on `openai`, and the alpaca_eval
    annotators."""
    out = []
    annotators = [b.annotator(jargs) for b in benchmarks]
    if None in annotators and jargs.judge_engine == "openai":  # some benchmark is judged here
        out.append((jargs.judge_model, jargs.judge_base_url or os.environ.get("OPENAI_BASE_URL"), "judge_model", False))
    for name in dict.fromkeys(a for a in annotators if a):
        for cfg in alpaca_annotator_configs(name).values():
            if cfg.get("fn_completions") == "openai_completions":
                # alpaca_eval's own spelling of the base URL first (decoders/openai.py), then the SDK's
                url = jargs.judge_base_url or os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL")
                out.append((cfg["completions_kwargs"]["model_name"], url, f"alpaca_annotator {name}", True))
    return list(dict.fromkeys(out))


def check_judges(jargs, benchmarks, probe: bool = True) -> None:
    """Raise one ValueError line, before any answer is generated, when a judge of the judged `benchmarks` cannot
    judge: a model OpenAI no longer serves (without a call), no key, or a server that refuses the model, the key or
    the connection (one 1-token request: finding out after hours of generation would waste them)."""
    probed = set()
    for model, url, setting, by_alpaca_eval in served_judges(jargs, benchmarks):
        on_openai = urlparse(url or "https://api.openai.com/v1").hostname == "api.openai.com"
        if on_openai and model in RETIRED:
            raise ValueError(f"judge {model} ({setting}) was shut down by OpenAI on {RETIRED[model]}; judge with "
                             f"{REPLACEMENT}, or set judge_base_url to an archived deployment that still serves it")
        # alpaca_eval's client needs a key even for a local server; ours sends "EMPTY" there
        if (on_openai or by_alpaca_eval) and not os.environ.get("OPENAI_API_KEY"):
            raise ValueError(f"judge {model} ({setting}) is called through the OpenAI API and OPENAI_API_KEY is not "
                             f"set; export it, or judge locally: {LOCAL_JUDGE}")
        if probe and (model, url) not in probed:
            _probe(model, url, setting)
            probed.add((model, url))


def _probe(model: str, url: str | None, setting: str) -> None:
    from core.engines import get_engine

    engine = get_engine("openai", model=model, base_url=url)
    try:
        engine.chat([[{"role": "user", "content": "Reply with the letter m."}]], Sampling(temperature=0.0, max_tokens=1))
    except ValueError as e:  # the engine's ServerError: one line with the URL, the status and the server's words
        fix = (f"judge with {REPLACEMENT}" if model != JUDGES[DEFAULT_JUDGE]["settings"]["judge_model"]
               else f"fix the key or judge_base_url, or judge locally: {LOCAL_JUDGE}")
        raise ValueError(f"judge {model} ({setting}) cannot judge: {str(e).splitlines()[0].rstrip('.')}; {fix}") \
            from None
    finally:
        engine.close()
