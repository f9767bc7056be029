"""What a benchmark is, and the registry that finds one by name (as lm-eval registers its models).

    @register_benchmark("alpaca_eval")
    class AlpacaEval(JudgedBenchmark):
        ...

The name is the entry of a config's `benchmarks:`, the benchmark's folder under the evaluation's output_dir and
its key in results.json. Two kinds:

- JudgedBenchmark (AlpacaEval 2, Arena-Hard, WildBench): the model under test answers a prompt set and a judge
  compares each answer with a reference answer, or grades it alone (`needs_reference = False`: WildBench's
  WB-Score, no reference, one judgment per prompt). `evaluate` (eval/run.py) takes the configured ones through the
  same phases together, so that each model loads once for all of them: the answers (one engine), the references
  (one engine, for those that need them), the judgments (one judge), then each one's score. The object supplies
  what is its own at each phase.
- Benchmark: a job that runs by itself on the model under test (lm-eval's harness).

Both say what their results.json entry prints (`summary`), logs (`log_values`), puts in the paper's Table 1
(`table`, `measured`), puts in the table's "Beyond the paper" section beside published reference numbers
(`beyond`, `beyond_values`; eval/data/reference_scores.yaml) and, for a judged one, which judged pairs the report
shows (`pairs`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..judges import JudgePrompt

DATA = Path(__file__).resolve().parent.parent / "data"

BENCHMARKS: dict[str, Benchmark] = {}  # name -> the benchmark (stateless: every method takes what it reads)


def register_benchmark(name: str):
    def deco(cls):
        cls.name = name
        BENCHMARKS[name] = cls()
        return cls

    return deco


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {list(BENCHMARKS)}")
    return BENCHMARKS[name]


class Benchmark:
    name: str = ""
    judged = False
    table: tuple[tuple[str, str], ...] = ()  # (key, title) of the paper Table 1 columns it fills (eval/table.py)
    # (key, title) of the columns it fills in the table's "Beyond the paper" section: numbers the paper does not
    # report, printed beside eval/data/reference_scores.yaml's published ones under the same key, never as Table 1
    beyond: tuple[tuple[str, str], ...] = ()

    def run(self, margs, eargs, hargs) -> dict:
        """Its results.json entry, computed on the model under test (margs)."""
        raise NotImplementedError

    def summary(self, res: dict) -> str:
        """Its part of the one line `python -m eval run` ends with."""
        raise NotImplementedError

    def log_values(self, res: dict) -> dict:
        """What the tracker logs of its results.json entry: the plain numbers."""
        return {f"{self.name}/{k}": v for k, v in res.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def comparable(self, res: dict) -> bool:
        """Whether its results.json entry measures what the paper's numbers do (else the table shows no delta)."""
        return True

    def measured(self, res: dict) -> dict:
        """Its numbers in the paper table (the keys of `table`, and what the table prints beside them) from its
        results.json entry ({} where the benchmark did not run)."""
        return {}

    def beyond_values(self, res: dict) -> dict:
        """Its numbers in the "Beyond the paper" section (the keys of `beyond`) from its results.json entry ({} where
        the benchmark did not run or measured none of them)."""
        return {}

    def pairs(self, d: Path) -> list[dict]:
        """The judged pairs the report shows, from the evaluation folder d."""
        return []


@dataclass
class HeadToHead:
    """One judged benchmark's prompts, the model's answers and the references they are judged against."""
    prompts: list[dict]
    answers: dict[str, dict]  # prompt id -> the model's answer record (`response`)
    refs: dict[str, str]  # prompt id -> the reference answer ({} for a benchmark graded without references)
    model: str  # the two names, as results.json, the annotations and the scores carry them
    reference: str | None  # None: graded without references (needs_reference False)
    root: Path  # <output_dir>/<benchmark>


class JudgedBenchmark(Benchmark):
    judged = True
    label = ""  # its short name where the paper table names each benchmark's judge
    # Pairwise (True): the judge compares the answer with a reference answer (the benchmark's own, or generated).
    # Single-answer grading (False): the judge scores each answer alone; `load` returns {} as its references,
    # `evaluate` fetches or generates none, and `items` are one per prompt with answer_b "" (so that an empty
    # answer is "identical" and scored without a call).
    needs_reference = True

    # -- the prompt set, the answers and the references
    def load(self, source: str, limit: int | None = None, version: str | None = None) -> tuple[list[dict], dict | None]:
        """(prompts, the benchmark's own reference answers by prompt id, or None; {} where it needs none). `source`:
        hub, tiny, or a local .jsonl/.json; `version`: where the benchmark has several (Arena-Hard), None for its
        default."""
        raise NotImplementedError

    def prompt_set(self, bargs) -> tuple[list[dict], dict | None]:
        """`load` as the config asks."""
        raise NotImplementedError

    def decoding(self, bargs) -> dict:
        """max_tokens and repetition_penalty of the (greedy) answers, the model's and the generated references'."""
        raise NotImplementedError

    def hub_reference(self, bargs, prompts: list[dict]) -> str:
        """The name of the model whose answers `load` returned (reference: hub)."""
        raise NotImplementedError

    def references_folder(self, bargs) -> str:
        """Where generated references live under references_dir (then the reference model's name)."""
        return self.name

    # -- the judgments
    def annotator(self, jargs) -> str | None:
        """The alpaca_eval annotator config that judges this benchmark in that package; None: the judge here."""
        return None

    def games(self, prompts: list[dict], seed: int) -> list[list[tuple[int, bool]]]:
        """Per prompt, the judge's games: (game number, whether the model's answer is shown first)."""
        raise NotImplementedError

    def items(self, h: HeadToHead, seed: int) -> list[dict]:
        """The judge's work: one item per game, answer A the reference unless the game swaps the two."""
        items = []
        for p, games in zip(h.prompts, self.games(h.prompts, seed)):
            ref, ans = h.refs[p["id"]], h.answers[p["id"]]["response"]
            for game, swapped in games:
                a, b = (ans, ref) if swapped else (ref, ans)
                items.append({"id": p["id"], "game": game, "swapped": swapped, "question": p["instruction"],
                              "answer_a": a, "answer_b": b})
        return items

    def judge_prompt(self, *, max_tokens: int, prefill: str, prompt_file: str | None,
                     top_logprobs: int) -> JudgePrompt:
        """The judge's prompt and sampling (judges.PairwiseJudge asks for them with every judge setting)."""
        raise NotImplementedError

    def verdicts(self, engine, conversations: list[list[dict]], prompt: JudgePrompt) -> list[dict]:
        """{"judgment": the judge's text, "verdict": what it says, None where unreadable} per conversation."""
        raise NotImplementedError

    # -- the score
    def score(self, h: HeadToHead, judgments: list[dict] | None, eargs, jargs,
              bargs) -> dict:
        """Its results.json entry (files of its own under h.root); `judgments` None where `annotator` judged."""
        raise NotImplementedError

    def version(self, bargs) -> str:
        """The benchmark's version, recorded beside its numbers (a score is only compared with its version's)."""
        raise NotImplementedError

    def judge_record(self, jargs) -> dict:
        """Which judge scored it, as results.json and the table carry it: its name in eval/data/judges.yaml (None:
        a judge of the user's own), the model and a server of the user's own."""
        from ..judges import judge_name_of

        return {"judge_name": judge_name_of(jargs), "judge_model": jargs.judge_model,
                "judge_engine": jargs.judge_engine, "judge_base_url": jargs.judge_base_url}

    @property
    def judge_columns(self) -> tuple[str, ...]:
        """The paper table's CSV columns that say who judged it."""
        return (f"ours_judge_{self.name}",)


def judged_records(d: Path, name: str) -> tuple[list[dict], dict[str, dict], dict[str, str]]:
    """A judged benchmark's finished judgments in the evaluation folder d, its prompts and the model's answers by
    id (what `pairs` shows); nothing where the judgments are not finished."""
    from core import store

    jd = store.DatasetDir(d / name / "judgments")
    if not jd.complete:
        return [], {}, {}
    prompts = {p["id"]: p for p in store.DatasetDir(d / name / "prompts").records()}
    answers = {a["id"]: a["response"] for a in store.DatasetDir(d / name / "answers").records()}
    return jd.records(), prompts, answers


def judge_texts(engine, conversations: list[list[dict]], prompt: JudgePrompt, closing: str) -> list[str]:
    """The judge's replies to `conversations`. A prefilled reply (`prompt.prefill`, judge_prefill: label) is completed
    from the rendered chat plus the prefill, and returned whole: the prefill, the text, and `closing` (what the stop
    string cut, e.g. Arena-Hard's "]]")."""
    if prompt.prefill:
        prompts = [engine.render_chat(c) + prompt.prefill for c in conversations]
        return [prompt.prefill + o[0].text + closing for o in engine.complete(prompts, prompt.sampling)]
    return [o[0].text for o in engine.chat(conversations, prompt.sampling)]


def engine_judge(jargs) -> str:
    """The judge here, as results.json's `judge` names it."""
    return f"{jargs.judge_engine}:{jargs.judge_model}"


def outcome(score: float | None) -> str:
    """A judged pair from the model's side (score 1: the model's answer is better, 0: the reference's)."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return "unparsed"
    return "win" if score > 0.5 else "loss" if score < 0.5 else "tie"


# ---------------------------------------------------------------------------------------------
# Prompt files. A prompt record is {"id", "instruction", "index", ...extra fields}; `index` is the position in
# the set, which AlpacaEval's length-controlled GLM uses to look up each instruction's difficulty.

def hub_file(repo: str, filename: str, what: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset"))
    except Exception as e:  # noqa: BLE001  (offline, gated, moved: one message that says what to do)
        raise RuntimeError(
            f"cannot fetch {what} ({repo}/{filename}) from the hub: {type(e).__name__}: {str(e).splitlines()[0]}; "
            "give a local file instead (see recipes/configs/eval/tiny.yaml) or run where the hub can be reached"
        ) from None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n} is not valid JSON ({e.msg})") from None
    return rows


def _instruction(row: dict, path) -> str:
    # AlpacaEval rows carry `instruction`; Arena-Hard rows `prompt` (current) or `turns` (v0.1 files).
    for key in ("instruction", "prompt"):
        if isinstance(row.get(key), str):
            return row[key]
    if row.get("turns"):
        return row["turns"][0]["content"]
    raise ValueError(f"{path}: a row has no instruction, prompt or turns field: {sorted(row)}")


def prompt_records(rows: list[dict], path, limit: int | None) -> list[dict]:
    out = []
    for i, r in enumerate(rows[:limit] if limit else rows):
        rid = r.get("uid") or r.get("question_id") or f"{i:04d}"
        extra = {k: r[k] for k in ("dataset", "category", "subcategory", "cluster") if isinstance(r.get(k), str)}
        out.append({"id": str(rid), "instruction": _instruction(r, path), "index": i, **extra})
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: prompt ids are not unique")
    return out


def read_prompt_file(path: Path, limit: int | None) -> tuple[list[dict], dict | None]:
    """(prompts, reference answers by id where every row carries one as `output`, alpaca_eval's format, else None)."""
    if not path.exists():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    rows = json.loads(path.read_text()) if path.suffix == ".json" else read_jsonl(path)
    prompts = prompt_records(rows, path, limit)
    refs = {p["id"]: r["output"] for p, r in zip(prompts, rows) if isinstance(r.get("output"), str)}
    return prompts, (refs if len(refs) == len(prompts) else None)
