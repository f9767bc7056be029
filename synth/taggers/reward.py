"""Reward taggers: `instruct_reward` and `reward_difference`.

instruct_reward (paper section 4, the reference's `unitag.py --tag_mission reward`): a
sequence-classification reward model scores the rendered [user instruction, assistant response]
chat; the score is the first logit (FsfairX-LLaMA3-RM-v0.1). ArmoRM-Llama3-8B-v0.1, the
paper's DPO scorer, also works here; its custom code needs `trust_remote_code=True`, so it is
never loaded unless configured.

reward_difference (paper section 4): r(instruction, response) - r(instruction, base response),
where the base response comes from the base model (Llama-3-8B) prompted URIAL-style: a few
example exchanges in plain text, then the instruction. The reference repo has no code for this
step, so the prompt and stops below are ours. Two models, two taggers, one model per process:
`base_response` (the base model writes the answers) runs first, in a model group of its own, and
`reward_difference` (the reward model) scores them, reading them from base_response's part
(synth/tag.py puts the first before the second). It reuses a record's `instruct_reward` when the
same reward model wrote it: the input's, or instruct_reward's part when that tagger ran first on
the same settings, so each response is scored once.

Tiny profile: no reward model can be downloaded, so `reward_model: embedded:smollm2-135m-instruct`
selects `MeanLogProbScorer`. It is a real score from a real model, but a likelihood, not a
preference: fluent text scores high whether or not it answers well, and repetition is rewarded.
"""
from __future__ import annotations

import math

from core.engines import Sampling, document_prefix, shared_engine

from . import Tagger, register_tagger, tagger_engine

PAPER_RM = "sfairXC/FsfairX-LLaMA3-RM-v0.1"
PAPER_BASE = "meta-llama/Meta-Llama-3-8B"
STAND_IN = "embedded:smollm2-135m-instruct"
STAND_IN_LABEL = "stand-in: SmolLM2-135M-Instruct mean log-prob"
STAND_IN_NOTE = (
    "No reward model is reachable offline: the score is SmolLM2-135M-Instruct's mean log-probability "
    "per response token given the chat-templated instruction (a likelihood, not a preference; "
    "values are <= 0 and not on FsfairX's scale, so the paper's thresholds such as -12 do not apply)."
)


def _right_padded(seqs: list[list[int]], pad: int, device):
    """input_ids and attention_mask of `seqs`, padded on the right with `pad`."""
    import torch

    width = max(map(len, seqs))
    return (torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device),
            torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device))


# Names that transformers 5 removed and reward models' own code still imports. ArmoRM-Llama3-8B-v0.1 (the paper's
# DPO scorer) does `from transformers.models.llama.modeling_llama import LLAMA_INPUTS_DOCSTRING`, only to decorate
# its forward's docstring, so an empty docstring stands in. A name transformers has is never replaced. (ArmoRM also
# passes `past_key_values` and reads `config.use_return_dict`: deprecated in 5.25, still accepted.)
REMOVED_NAMES = {"transformers.models.llama.modeling_llama": {"LLAMA_INPUTS_DOCSTRING": "",
                                                               "LLAMA_START_DOCSTRING": ""}}


def restore_removed_names() -> None:
    """Put REMOVED_NAMES back where a model's own code imports them from (before that code loads)."""
    import importlib

    for module, names in REMOVED_NAMES.items():
        mod = importlib.import_module(module)
        for name, value in names.items():
            if not hasattr(mod, name):
                setattr(mod, name, value)


def check_reward_model(model: str, trust_remote_code: bool = False, key: str = "reward_model",
                       build: bool = True) -> None:
    """Fail in seconds, before any model loads or any sample is drawn, on a `key` that cannot score: a checkpoint
    whose config names no sequence-classification (reward) head, where transformers would silently add a randomly
    initialised one; a model with code of its own when `trust_remote_code` is off; with `build`, a model class that
    cannot be built (its own code importing what this transformers lacks: built on the meta device, no memory) or
    a tokenizer without a chat template. A hub id that cannot be reached now is left to the loading, which says
    why."""
    if model == STAND_IN:
        return
    import transformers
    from transformers import AutoConfig

    from core import models

    path = models.resolve(model)
    restore_removed_names()
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        if models.looks_local(model) or model.startswith(models.EMBEDDED_PREFIX):
            raise ValueError(f"{key} {model}: no model config there ({str(e).splitlines()[0][:120]})") from None
        return
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") or "Reward" in a for a in archs):
        names = ", ".join(archs) or "no architecture"
        raise ValueError(f"{key} {model} is not a sequence classifier (its config names {names}); give a reward model "
                         f"(paper: {PAPER_RM}, or ArmoRM-Llama3-8B-v0.1) or {STAND_IN} for the log-prob stand-in")
    prefix = key[: -len("model")] if key.endswith("model") else key + "_"
    if "AutoModelForSequenceClassification" in (getattr(config, "auto_map", None) or {}) and not trust_remote_code:
        raise ValueError(f"{key} {model} ships its own model code: set {prefix}trust_remote_code: true to run it")
    if not build:
        return
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with torch.device("meta"):
            AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001  (whatever its code raises, the model cannot score)
        raise ValueError(f"{key} {model} cannot be built with transformers {transformers.__version__} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); install a "
                         f"transformers release its code supports, or choose another reward model (paper: {PAPER_RM})"
                         ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ValueError(f"{key} {model}: no tokenizer there ({str(e).splitlines()[0][:120]})") from None
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{key} {model} has no chat template; a reward model scores rendered chats: give one "
                         "that has one")


def token_batches(lengths: list[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices of rows of these token lengths, in forward passes: longest first (a pass that does not fit in memory
    fails at once, not hours in), each at most `max_rows` rows and `max_tokens` padded tokens (rows x the longest);
    a row longer than `max_tokens` goes alone. Sorting by length keeps the padding small."""
    batches: list[list[int]] = []
    for k in sorted(range(len(lengths)), key=lambda k: -lengths[k]):  # stable: equal lengths keep input order
        if batches and len(batches[-1]) < max_rows and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches


class SequenceClassifierScorer:
    """A transformers reward model; the score is logits[:, 0] (or ArmoRM's `score`)."""

    def __init__(self, model: str, batch_size: int = 16, dtype: str = "bfloat16", device: str = "auto",
                 trust_remote_code: bool = False, max_length: int | None = None,
                 # Padded tokens per forward pass. An estimate, not a GPU measurement: an 8B model's activations
                 # take ~0.15 MB per token (bf16, one layer at a time, no KV cache), ~5 GB beside its 16 GB of weights.
                 max_batch_tokens: int = 32_768):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from core import models
        from core.engines.hf import torch_device, torch_dtype

        device, path = torch_device(device), models.resolve(model)
        # the loading below builds it; the check has put back the names its code may import (restore_removed_names)
        check_reward_model(model, trust_remote_code, build=False)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=torch_dtype(dtype, device), trust_remote_code=trust_remote_code).to(device).eval()
        except OSError as e:
            raise FileNotFoundError(
                f"cannot load reward model {model!r}: {str(e).splitlines()[0]} (give a local path or a "
                f"reachable hub id; offline, use reward_model: {STAND_IN} for the stand-in)") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"reward model {model!r} has no chat template; it must score rendered chats")
        self.label, self.device, self.batch_size, self.max_length = model, device, batch_size, max_length
        self.max_batch_tokens = max_batch_tokens

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        tok = self.tokenizer
        # The rendered template already holds BOS: add no second one (the reference strips it from
        # the text for the same reason).
        chats = ([{"role": "user", "content": i}, {"role": "assistant", "content": r}] for i, r in pairs)
        ids = [tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)["input_ids"][: self.max_length]
               for c in chats]
        # The model pools the last token that is not padding, found through pad_token_id; with
        # Llama-3's eos (<|eot_id|>) as pad that would be the token before the chat's final
        # <|eot_id|>. So pad with a special id that occurs in none of these sequences.
        candidates = [tok.pad_token_id, *tok.all_special_ids, tok.eos_token_id]
        scores: list[float] = [math.nan] * len(ids)
        for idx in token_batches([len(x) for x in ids], self.batch_size, self.max_batch_tokens):
            batch = [ids[k] for k in idx]
            used = set().union(*batch)
            pad = next((c for c in candidates if c is not None and c not in used), None)
            if pad is None:  # every candidate occurs: score one by one, no padding; -1 matches no token
                out = [self._forward([one], pad=-1)[0] for one in batch]
            else:
                out = self._forward(batch, pad)
            for k, score in zip(idx, out):
                scores[k] = score
        return scores

    def _forward(self, batch: list[list[int]], pad: int) -> list[float]:
        import torch

        input_ids, mask = _right_padded(batch, pad, self.device)
        self.model.config.pad_token_id = pad
        with torch.inference_mode():  # no KV cache: at 32K tokens an 8B model's would take 4 GB for nothing
            out = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        score = getattr(out, "score", None)  # ArmoRM: the gated preference score
        score = out.logits[:, 0] if score is None else score.reshape(len(batch), -1)[:, 0]
        return score.float().tolist()


class MeanLogProbScorer:
    """The tiny profile's stand-in: mean log p(response token | instruction, earlier tokens)."""

    label = STAND_IN_LABEL

    def __init__(self, engine):
        # Reuse the hf engine's loaded model and tokenizer (the judges' engine in the tiny profile).
        if not hasattr(engine, "model"):
            raise ValueError(f"the log-prob stand-in needs an hf engine, got {engine.info.name!r}")
        self.model, self.tokenizer = engine.model, engine.tokenizer
        self.batch_size = getattr(engine, "batch_size", 8)
        self.max_batch_tokens = 16_384  # padded tokens per pass: 64 rows of 256, the tiny profile's longest pairs

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        import torch

        tok = self.tokenizer
        rows = []
        for instruction, response in pairs:
            prompt = tok.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                             add_generation_prompt=True)
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            # The end-of-turn token counts: a reply that stops where an answer should stop scores better.
            r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append((p, r))
        scores: list[float] = [math.nan] * len(rows)
        # As the reward models: by length under a token budget (a batch of short pairs is not padded to a long one)
        for idx in token_batches([sum(map(len, r)) for r in rows], self.batch_size, self.max_batch_tokens):
            input_ids, mask = _right_padded([rows[k][0] + rows[k][1] for k in idx], 0, self.model.device)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
            for b, k in enumerate(idx):
                n_prompt, n_resp = len(rows[k][0]), len(rows[k][1])
                # Position t predicts token t+1: response tokens sit at n_prompt .. n_prompt+n_resp-1.
                scores[k] = logp[b, n_prompt - 1: n_prompt - 1 + n_resp].mean().item()
        return scores


_SCORERS: dict[tuple, object] = {}


def get_scorer(reward_model: str, batch_size: int = 16, engine=None, **rm_kwargs):
    """The scorer a `reward_model` string names, one per process (both reward taggers share it)."""
    if reward_model == STAND_IN:
        return MeanLogProbScorer(engine or shared_engine("hf", STAND_IN, batch_size=batch_size))
    key = (reward_model, batch_size, tuple(sorted(rm_kwargs.items())))
    if key not in _SCORERS:
        _SCORERS[key] = SequenceClassifierScorer(reward_model, batch_size=batch_size, **rm_kwargs)
    return _SCORERS[key]


@register_tagger("instruct_reward")
class InstructRewardTagger(Tagger):
    fields = ("instruct_reward", "reward_model")

    def __init__(
        self,
        reward_model: str = PAPER_RM,  # paper; or ArmoRM-Llama3-8B-v0.1 with trust_remote_code
        batch_size: int = 16,  # rows per forward pass at most (max_batch_tokens bounds the memory)
        dtype: str = "bfloat16",  # FsfairX is released and used in bf16
        device: str = "auto",
        trust_remote_code: bool = False,  # ArmoRM needs True; never on unless configured
        max_length: int | None = None,  # tokens kept per chat; None keeps all (the reference)
        engine=None,  # stand-in only: the hf engine whose model scores
        max_batch_tokens: int | None = None,  # padded tokens per forward pass; None: SequenceClassifierScorer's
    ):
        super().__init__()
        self.reward_model, self.batch_size = reward_model, batch_size
        budget = {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}
        self.scorer = get_scorer(reward_model, batch_size=batch_size, engine=engine, dtype=dtype, device=device,
                                 trust_remote_code=trust_remote_code, max_length=max_length, **budget)
        self.stats = {"unscored": 0}

    def tag(self, records: list[dict]) -> list[dict]:
        scores = self._score([(r["instruction"], r["response"]) for r in records])
        return [{"instruct_reward": s, "reward_model": self.scorer.label} for s in scores]

    def _score(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        scores = [s if isinstance(s, float) and math.isfinite(s) else None for s in self.scorer.score(pairs)]
        self.count("unscored", sum(s is None for s in scores))
        return scores

    def info(self) -> dict:
        info = {"reward_model": self.scorer.label}
        if self.reward_model == STAND_IN:
            info["stand_in"] = STAND_IN_NOTE
        return info


# URIAL-style prompt (ours): a plain-text conversation with two example exchanges; the base model
# continues after the last "### Assistant:" and is stopped at the next "### User:".
URIAL_PROMPT = """The following is a conversation between a curious user and an AI assistant. The assistant gives helpful, accurate and detailed answers, says so when it is unsure, and declines harmful requests politely.

### User:
What causes the seasons on Earth?

### Assistant:
The seasons come from the tilt of Earth's axis, about 23.4 degrees, not from changes in our distance to the Sun. As Earth orbits, the hemisphere tilted toward the Sun gets more direct sunlight and longer days, which brings summer; the hemisphere tilted away gets slanted light and shorter days, which brings winter. Spring and autumn fall in between, when neither hemisphere leans toward the Sun.

### User:
Can you give me three tips for writing a clear email?

### Assistant:
Certainly:
1. Put the point first: say what you need in the opening sentence.
2. Keep it short: one topic per email, with short paragraphs.
3. End with a clear next step, such as a question or a deadline.

### User:
{instruction}

### Assistant:
"""
URIAL_STOPS = ("### User:", "\n### User", "\n\n\n\n")  # the next turn, or a model gone blank


BASE_STAND_IN_NOTE = ("SmolLM2-135M-Instruct, prompted URIAL-style without its chat template, answers in place of "
                      "the Llama-3-8B base model.")
BASE_KEYS = ("base_model", "base_engine", "base_max_tokens", "engine_kwargs")  # base_response's, in reward_difference's


@register_tagger("base_response")
class BaseResponseTagger(Tagger):
    """reward_difference's first half: the base model's URIAL-style answer to each instruction. A tagger of its own
    so that the base model runs in a process of its own (synth/tag.py), before the reward model scores."""

    fields = ("base_response",)
    columns = ("instruction",)

    def __init__(
        self,
        base_model: str = PAPER_BASE,  # paper: Llama-3-8B base answers the same instruction
        base_engine: str = "vllm",
        base_max_tokens: int = 2048,  # paper silent; long enough that a truncated base answer is rare
        batch_size: int = 16,
        engine=None,  # the base model's engine, if already built
        engine_kwargs: dict | None = None,  # the base model's engine settings (its ModelRole's)
    ):
        super().__init__()
        self.base_model, self.base_engine, self.batch_size = base_model, base_engine, batch_size
        self.engine = tagger_engine(engine, base_engine, base_model, batch_size, **(engine_kwargs or {}))
        self.sampling = Sampling(temperature=0.0, max_tokens=base_max_tokens, stop=URIAL_STOPS)

    def tag(self, records: list[dict]) -> list[dict]:
        bos = document_prefix(self.engine.tokenizer)  # Llama-3 base: <|begin_of_text|> (issue 10)
        prompts = [bos + URIAL_PROMPT.format(instruction=r["instruction"]) for r in records]
        return [{"base_response": outs[0].text.strip()} for outs in self.engine.complete(prompts, self.sampling)]

    def info(self) -> dict:
        info = {"base_model": self.base_model, "base_engine": self.base_engine,
                "base_prompt": "URIAL-style, 2 examples, greedy", "base_max_tokens": self.sampling.max_tokens}
        if self.base_model == STAND_IN:
            info["stand_in"] = BASE_STAND_IN_NOTE
        return info


@register_tagger("reward_difference")
class RewardDifferenceTagger(InstructRewardTagger):
    """reward_difference's second half: the reward model scores each record's `base_response` (the base_response
    tagger's, read from its part) and its response, unless instruct_reward scored it with the same model: `reads`
    names the taggers whose fields synth/tag.py joins onto the records first."""

    fields = ("base_reward", "reward_difference")

    def __init__(
        self,
        reward_model: str = PAPER_RM,
        batch_size: int = 16,
        dtype: str = "bfloat16",
        device: str = "auto",
        trust_remote_code: bool = False,
        max_length: int | None = None,
        engine=None,  # stand-in only: the hf engine whose model scores
        max_batch_tokens: int | None = None,
        base: dict | None = None,  # base_response's settings (BASE_KEYS): recorded, and part of the resume key
        reads: tuple[str, ...] = ("base_response",),  # + instruct_reward when it ran first on the same model
    ):
        super().__init__(reward_model, batch_size, dtype, device, trust_remote_code, max_length, engine,
                         max_batch_tokens)
        self.base, self.reads = dict(base or {}), tuple(reads)
        self.stats["reused_instruct_reward"] = 0

    @classmethod
    def split(cls, kwargs: dict) -> tuple[dict, dict]:
        """The kwargs of reward_difference as configured (reward model and base model together) as the two
        taggers' kwargs: (base_response's, reward_difference's)."""
        base = {k: v for k, v in kwargs.items() if k in BASE_KEYS}
        if "batch_size" in kwargs:
            base["batch_size"] = kwargs["batch_size"]
        return base, {k: v for k, v in kwargs.items() if k not in BASE_KEYS} | {"base": base}

    def tag(self, records: list[dict]) -> list[dict]:
        if any("base_response" not in r for r in records):
            raise ValueError("reward_difference scores the base model's answers: run the base_response tagger on "
                             "these records first (the tag stage does)")
        base = [r["base_response"] for r in records]
        # One scoring pass for the base responses and for any response not scored already.
        todo = [k for k, r in enumerate(records)
                if r.get("instruct_reward") is None or r.get("reward_model") != self.scorer.label]
        self.count("reused_instruct_reward", len(records) - len(todo))
        has_base = [k for k, b in enumerate(base) if b is not None]
        scores = self._score([(records[k]["instruction"], base[k]) for k in has_base]
                             + [(records[k]["instruction"], records[k]["response"]) for k in todo])
        base_scores = dict(zip(has_base, scores[: len(has_base)]))
        fresh = dict(zip(todo, scores[len(has_base):]))
        out = []
        for k, r in enumerate(records):
            rs = fresh[k] if k in fresh else r["instruct_reward"]
            bs = base_scores.get(k)
            out.append({"base_reward": bs, "reward_difference": rs - bs if rs is not None and bs is not None else None})
        return out

    def info(self) -> dict:  # the base model's stand-in note is base_response's
        return super().info() | {k: v for k, v in self.base.items() if k in ("base_model", "base_engine")}
