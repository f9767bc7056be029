"""What the judges of an evaluation will cost, estimated before the first paid call, and what they did cost.

    estimate(jargs, benches, heads)  -> one Estimate per judged benchmark: calls, input and output tokens, dollars
    python -m eval cost --config recipes/configs/eval/paper.yaml [--answers runs/x/eval]   the same, alone

Calls: one per judged pair (AlpacaEval: one per prompt; Arena-Hard: two, one per game), less the pairs whose two
answers are identical (a tie without a call) where the answers are known. Input tokens: the benchmark's judge
prompt with the question and both answers, counted with the judge's own tokenizer where it can be loaded (a local
judge, or a server of your own serving a model this machine can open), else with the price table's tiktoken
encoding plus OpenAI's chat formatting (3 tokens per message, 3 for the reply), else 4 characters per token (the
estimate says which). Before the model has answered, its answers are counted as long as the reference answers
(`basis: references`), or at their max_tokens where the references are not written yet either (`basis:
max_tokens`, an upper bound). Output tokens: the judge's max_tokens where it writes one token (AlpacaEval's
weighted judges) or a prefilled label; an Arena-Hard judgment free to reason is counted as the judge's own answer
(as long as the reference's) plus a 250-token comparison, capped at its max_tokens; a reasoning model's hidden
reasoning (gpt-5-nano's AlpacaEval annotator) at half its max_tokens. Dollars: eval/data/judge_prices.yaml (dated);
a model not in it (a local judge, a server of your own) costs nothing and still has its tokens counted.

What a run used is counted from the server's own `usage` (or the local engine's counts) shard by shard in the
judgments' manifest, and recorded beside the estimate in results.json (`judge_usage`, `judge_estimate`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .judges import alpaca_annotator_configs

PRICES = Path(__file__).resolve().parent / "data" / "judge_prices.yaml"
COMPARISON_TOKENS = 250  # an Arena-Hard judgment besides the judge's own answer (an assumption, named above)


@dataclass
class Estimate:
    benchmark: str
    judge_model: str
    calls: int
    input_tokens: int
    output_tokens: int
    usd: float | None  # None: no price (a local judge or an unknown model): nothing is paid to a provider
    counted_with: str  # the tokenizer, "o200k_base (tiktoken)", or "4 characters per token"
    basis: str  # the model's answers as counted: answers, references (stand-ins) or max_tokens (an upper bound)
    prices_as_of: str | None = None

    def line(self) -> str:
        money = f"${self.usd:,.2f}" if self.usd is not None else "no price (local or unlisted: $0)"
        return (f"{self.benchmark}: {self.calls:,} calls to {self.judge_model}, {self.input_tokens:,} input + "
                f"{self.output_tokens:,} output tokens, {money} (tokens by {self.counted_with}; answers counted "
                f"from {self.basis})")


@functools.lru_cache(maxsize=4)
def load_prices(path: str | None = None) -> dict:
    p = Path(path) if path else PRICES
    if not p.is_file():
        raise FileNotFoundError(f"judge_prices {p} does not exist; give a YAML like eval/data/judge_prices.yaml")
    data = yaml.safe_load(p.read_text()) or {}
    bad = [m for m, v in (data.get("models") or {}).items()
           if not isinstance(v, dict) or not all(isinstance(v.get(k), (int, float)) for k in ("input", "output"))]
    if "models" not in data or bad:
        raise ValueError(f"judge_prices {p}: every entry under `models` needs numeric input and output prices "
                         f"(USD per million tokens){f'; {bad[0]} has not' if bad else ''}")
    return data


class TokenCounter:
    """Counts a judge's tokens as its server will: its own tokenizer and chat template where one can be loaded,
    else the tiktoken encoding the price table names, else characters / 4."""

    def __init__(self, model: str, engine: str, prices: dict, tokenizer: str | None = None):
        self.tok, self.enc = None, None
        entry = prices.get("models", {}).get(model, {})
        if engine != "openai" or tokenizer or not entry:  # a model this machine may open
            try:
                from transformers import AutoTokenizer

                from core import models

                # what this machine has: a local judge's model is on disk once it has judged; before that (and
                # offline) the fallbacks count a judge that costs nothing anyway
                self.tok = AutoTokenizer.from_pretrained(models.resolve(tokenizer or model), local_files_only=True)
                self.name = tokenizer or model
                return
            except Exception:  # noqa: BLE001  (a hub id offline, an API model's name: the fallbacks below)
                self.tok = None
        encoding = entry.get("tokenizer")
        if encoding:
            try:
                import tiktoken

                self.enc = tiktoken.get_encoding(encoding)
                self.name = f"{encoding} (tiktoken)"
                return
            except Exception:  # noqa: BLE001, S110  (not installed, or its file cannot be downloaded)
                pass
        self.name = "4 characters per token"

    def text(self, text: str) -> int:
        if self.tok is not None:
            return len(self.tok(text, add_special_tokens=False)["input_ids"])
        if self.enc is not None:
            return len(self.enc.encode(text, disallowed_special=()))
        return math.ceil(len(text) / 4)

    def chat(self, messages: list[dict], prefill: str = "") -> int:
        if self.tok is not None and getattr(self.tok, "chat_template", None):
            rendered = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.text(rendered + prefill)
        # OpenAI's accounting of chat formatting: 3 tokens per message, 3 to prime the reply
        return sum(3 + self.text(m["content"]) for m in messages) + 3 + self.text(prefill)


def _judge_of(bench, jargs) -> tuple[str, str, int | None, bool]:
    """(model, engine, output tokens per call where fixed by the judge's settings, whether it reasons)."""
    annotator = bench.annotator(jargs)
    if annotator is None:
        return jargs.judge_model, jargs.judge_engine, None, False
    cfg = next(iter(alpaca_annotator_configs(annotator).values()))
    kw = cfg.get("completions_kwargs", {})
    engine = "openai" if cfg.get("fn_completions") == "openai_completions" else cfg.get("fn_completions", "?")
    return kw.get("model_name") or annotator, engine, kw.get("max_tokens"), "reasoning_effort" in kw


def estimate(jargs, benches, heads, seed: int = 0, known_answers: bool = True, answer_tokens: list | None = None,
             counters: dict | None = None) -> list[Estimate]:
    """One Estimate per judged benchmark of `benches` (eval.benchmarks objects), whose HeadToHead in `heads` holds
    the prompts, the answers and the references (the answers stand-ins where `known_answers` is False: then every
    pair counts as a call). `answer_tokens`: per benchmark, None or a length every answer is counted at (its
    max_tokens, where neither the answers nor the references are written yet)."""
    prices = load_prices(jargs.judge_prices)
    counters = {} if counters is None else counters
    out = []
    for b, h, fixed_len in zip(benches, heads, answer_tokens or [None] * len(heads)):
        model, engine, fixed_out, reasons = _judge_of(b, jargs)
        key = (model, engine)
        if key not in counters:
            counters[key] = TokenCounter(model, engine, prices, getattr(jargs, "judge_tokenizer", None))
        count = counters[key]
        prompt = b.judge_prompt(max_tokens=jargs.arena_judge_max_tokens, prefill=jargs.judge_prefill,
                                prompt_file=jargs.arena_judge_prompt_file, top_logprobs=jargs.alpaca_top_logprobs)
        max_out = fixed_out or prompt.sampling.max_tokens
        calls = tokens_in = tokens_out = 0
        single = not b.needs_reference  # one answer graded alone (WildBench): answer_b is empty
        frame: dict[str, int] = {}  # the prompt around empty answers, per prompt
        lengths: dict[str, int] = {}
        for it in b.items(h, seed):
            if (it["answer_a"] == "" if single else it["answer_a"] == it["answer_b"]) and known_answers:
                continue  # a tie (an empty answer) without a call
            if it["id"] not in frame:
                frame[it["id"]] = count.chat(prompt.conversation({**it, "answer_a": "", "answer_b": ""}),
                                             prompt.prefill)
            texts = [it["answer_a"]] if single else [it["answer_a"], it["answer_b"]]
            for text in texts:
                if text not in lengths:
                    lengths[text] = fixed_len if fixed_len is not None else count.text(text)
            calls += 1
            tokens_in += frame[it["id"]] + sum(lengths[t] for t in texts)
            if fixed_out is not None and reasons:
                tokens_out += max_out // 2
            elif fixed_out is not None or prompt.prefill or max_out <= 1:
                tokens_out += max_out
            elif single:  # its assessment of the one answer
                tokens_out += min(max_out, COMPARISON_TOKENS)
            else:  # free to reason: its own answer, as long as the reference's, then the comparison
                ref = it["answer_b"] if it.get("swapped") else it["answer_a"]
                tokens_out += min(max_out, lengths[ref] + COMPARISON_TOKENS)
        entry = prices.get("models", {}).get(model)
        paid = engine == "openai" and entry is not None
        usd = (tokens_in * entry["input"] + tokens_out * entry["output"]) / 1e6 if paid else None
        out.append(Estimate(b.name, model, calls, tokens_in, tokens_out, usd, count.name,
                            "answers" if known_answers else "max_tokens" if fixed_len is not None else "references",
                            str(prices.get("as_of")) if paid else None))
    return out


def total_usd(estimates: list[Estimate]) -> float:
    return sum(e.usd or 0.0 for e in estimates)


def summary(estimates: list[Estimate], title: str = "[eval] judge cost estimate") -> str:
    """The lines an evaluation prints before its first paid call."""
    as_of = next((e.prices_as_of for e in estimates if e.prices_as_of), None)
    head = f"{title}{f' (prices of {as_of})' if as_of else ''}: ${total_usd(estimates):,.2f} in all"
    return "\n".join([head, *(f"  {e.line()}" for e in estimates)])


def as_record(e: Estimate) -> dict:
    return asdict(e)


def usage(counts: dict) -> dict:
    """What the judge used, from a judgments manifest's counts (its shards' totals)."""
    return {"calls": counts.get("judge_calls"), "input_tokens": counts.get("judge_input_tokens"),
            "output_tokens": counts.get("judge_output_tokens")}
