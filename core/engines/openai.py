"""An OpenAI-compatible server (`vllm serve`, TGI, llama.cpp server, the OpenAI API itself).

The `openai` SDK's async client sends one request per prompt (or conversation), `concurrency` at a
time, so the server's own batching does the rest; it also does the timeouts and retries (408, 409,
429, 5xx and connection errors, with backoff or the server's Retry-After). `complete` uses
/completions (raw text: the pre-query template reaches the model untouched); `chat` uses
/chat/completions and the server's template.

The API key is read from the environment variable `api_key_env` at each call: it is never an
attribute, never in `info`, never in an error message.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import Completion, Engine, EngineInfo, Message, Sampling, Samplings, per_prompt, sample_seed

if TYPE_CHECKING:
    import openai  # imported when a request is sent, as hf and vllm import their libraries when they build


# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5*): requests without temperature, with max_completion_tokens
REASONING = re.compile(r"^(o\d|gpt-5)")


class ServerError(ValueError):
    """One line naming the URL and what to do: the CLIs print it as `error: ...` and exit 2."""


class OpenAIEngine(Engine):
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 600,  # a long response from a busy server can take minutes
        # The SDK's default. Its one retry budget covers refused connections too: 2 retries (0.5 s, then 1 s
        # backoff) give up on a dead port in about 1.5 s, and still ride out a short rate limit or server restart.
        max_retries: int = 2,
        concurrency: int = 8,
        tokenizer: str | None = None,  # only for render_chat (e.g. deriving a pre-query template)
        template_kwargs: dict | None = None,  # the role's chat template variables (Engine.template_kwargs)
    ):
        if concurrency <= 0 or max_retries < 0:
            raise ValueError(f"need concurrency > 0 and max_retries >= 0, got {concurrency} and {max_retries}")
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key_env, self.timeout = api_key_env, timeout
        self.max_retries, self.concurrency = max_retries, concurrency
        self.template_kwargs = template_kwargs
        if tokenizer:
            from transformers import AutoTokenizer

            from .. import models

            self.tokenizer = AutoTokenizer.from_pretrained(models.resolve(tokenizer))
        self.info = EngineInfo("openai", model, {"base_url": self.base_url, "api_key_env": api_key_env})
        self.stats = {"prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0, "calls": 0}

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.info.model!r}, base_url={self.base_url!r})"

    def _bodies(self, sampling: Sampling, extra: dict) -> list[dict]:
        """The requests of one prompt: one with `n` choices, or, seeded, n requests of one choice with seeds
        sample_seed(seed, j) (a server seeds the choices of one request seed + j, which other prompts' seeds can
        meet: see SEED_SCHEME)."""
        body = {
            "model": self.info.model, "n": sampling.n, "temperature": sampling.temperature,
            "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
        }
        if REASONING.match(self.info.model.rsplit("/", 1)[-1]):
            # OpenAI's reasoning models take only their default temperature and top_p, and count their hidden
            # reasoning in max_completion_tokens (max_tokens is refused)
            body = {"model": body["model"], "n": sampling.n, "max_completion_tokens": sampling.max_tokens}
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        # vLLM's server extensions; sent only when set, so that strict servers (OpenAI) accept
        # the plain requests. skip_special_tokens is left to the server's default (True).
        ext = {"repetition_penalty": sampling.repetition_penalty} if sampling.repetition_penalty != 1.0 else {}
        if sampling.stop_token_ids:
            ext["stop_token_ids"] = list(sampling.stop_token_ids)
        if sampling.top_k:
            ext["top_k"] = sampling.top_k
        if not sampling.skip_special_tokens:
            ext["skip_special_tokens"] = False
        ext = {**extra.pop("extra_body", {}), **ext}
        body = {**body, **extra} | ({"extra_body": ext} if ext else {})
        if sampling.seed is None:
            return [body]
        return [{**body, "n": 1, "seed": sample_seed(sampling.seed, j)} for j in range(sampling.n)]

    async def _send(self, path: str, bodies: list[dict], key: str | None) -> list:
        # A client per call: an async client belongs to the event loop it first ran on, and each call
        # runs its own loop. Servers without auth accept any key; "EMPTY" is vLLM's convention.
        import openai

        async with openai.AsyncOpenAI(api_key=key or "EMPTY", base_url=self.base_url, timeout=self.timeout,
                                      max_retries=self.max_retries) as client:
            create = client.completions.create if path == "/completions" else client.chat.completions.create
            slots = asyncio.Semaphore(self.concurrency)

            async def one(body):
                async with slots:
                    return await create(**body)

            tasks = [asyncio.ensure_future(one(b)) for b in bodies]
            try:
                return await asyncio.gather(*tasks)
            finally:  # after the first failure send nothing more, and let nothing outlive the client
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self, path: str, requests: list[list[dict]], text_of, top_of) -> list[list[Completion]]:
        """Send every prompt's requests at once; a prompt's completions are its requests' choices, in order."""
        import openai

        t0 = time.perf_counter()
        bodies = [b for group in requests for b in group]
        key = os.environ.get(self.api_key_env)
        try:
            responses = asyncio.run(self._send(path, bodies, key))
        except openai.APIError as e:
            raise self._error(e, path, key) from None
        result = []
        for body, resp in zip(bodies, responses):
            n = body["n"]
            choices = sorted(resp.choices or [], key=lambda c: c.index or 0)
            if len(choices) != n:
                raise ServerError(f"{self.base_url}{path}: asked for n={n} choices, got {len(choices)}")
            # The API reports generated tokens per request, not per choice: with n > 1 each
            # choice gets an even share (the total, which stats records, stays exact).
            total = (resp.usage and resp.usage.completion_tokens) or 0
            shares = [total // n + (k < total % n) for k in range(n)]
            result.append([Completion(text_of(c), share, "length" if c.finish_reason == "length" else "stop", top_of(c),
                                      _reasoning_of(c)) for c, share in zip(choices, shares)])
            self.stats["prompt_tokens"] += (resp.usage and resp.usage.prompt_tokens) or 0
            self.stats["generated_tokens"] += total
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["calls"] += 1
        rows, at = [], 0
        for group in requests:
            rows.append([c for row in result[at:at + len(group)] for c in row])
            at += len(group)
        return rows

    def _error(self, e: openai.APIError, path: str, key: str | None) -> ServerError:
        import openai

        url = f"{self.base_url}{path}"
        if isinstance(e, openai.APITimeoutError):
            return ServerError(f"{url}: no answer within {self.timeout:g} s, {self.max_retries + 1} attempts; "
                               "raise timeout or check the server")
        if isinstance(e, openai.APIConnectionError):
            # httpx's ConnectError (httpx2's in newer SDKs): refused, unresolvable or unreachable.
            if type(e.__cause__).__name__ == "ConnectError":
                return ServerError(f"no server at {self.base_url}; start it or fix base_url")
            return ServerError(f"{url}: connection failed, {self.max_retries + 1} attempts: {e.__cause__ or e}")
        body = getattr(e, "body", None)
        message = body.get("message", body) if isinstance(body, dict) else body or e.message
        message = " ".join(str(message).split())[:500]  # one line, even for an HTML error page
        message = message.replace(key, "***") if key else message  # should the server echo the key
        status = getattr(e, "status_code", "?")
        if status in (401, 403):
            message += f"; check {self.api_key_env}" + ("" if key else " (it is not set)")
        return ServerError(f"{url}: HTTP {status}: {message}")

    def complete(self, prompts: Sequence[str], sampling: Samplings) -> list[list[Completion]]:
        # the legacy completions API: logprobs is an int, answered as [{token: logprob}]
        requests = [self._bodies(s, {"prompt": p} | ({"logprobs": s.logprobs} if s.logprobs else {}))
                    for p, s in zip(prompts, per_prompt(sampling, len(prompts)))]
        return self._run("/completions", requests, lambda c: c.text or "",
                         lambda c: c.logprobs.top_logprobs if c.logprobs else None)

    def render_chat(self, conversation: Sequence[Message], add_generation_prompt: bool = True,
                    tools: list[dict] | None = None) -> str:
        if self.tokenizer is None:
            raise ValueError(
                f"the openai engine for {self.info.model} has no local tokenizer to render a chat "
                "template; pass tokenizer=<hub id or path of the served model>"
            )
        return super().render_chat(conversation, add_generation_prompt, tools)

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Samplings) -> list[list[Completion]]:
        # The server applies its model's chat template: no local tokenizer needed.
        # chat API: a flag plus top_logprobs (OpenAI allows at most 20)
        # A vLLM server takes the template's variables as chat_template_kwargs (sent only when set). The date is the
        # server's: its template's strftime_now reads the server's clock (date_string, where read, is sent).
        variables = {k: v for k, v in (self.template_kwargs or {}).items() if k != "template_date"}
        if self.template_kwargs and "template_date" in self.template_kwargs:
            from ..templates import template_day

            variables.setdefault("date_string", template_day(self.template_kwargs).strftime("%d %b %Y"))
        requests = [self._bodies(s, {"messages": list(c)}
                                 | ({"logprobs": True, "top_logprobs": s.logprobs} if s.logprobs else {})
                                 | ({"extra_body": {"chat_template_kwargs": variables}} if variables else {}))
                    for c, s in zip(conversations, per_prompt(sampling, len(conversations)))]
        return self._run("/chat/completions", requests, lambda c: c.message.content or "", _chat_top_logprobs)


def _reasoning_of(choice) -> str | None:
    """The reasoning a server parsed out of a chat answer (vLLM's --reasoning-parser: `reasoning_content`, or
    `reasoning` in newer releases); None for completions and for servers that leave it in the text."""
    message = getattr(choice, "message", None)
    value = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
    extra = getattr(message, "model_extra", None) or {}
    value = value or extra.get("reasoning_content") or extra.get("reasoning")
    return value if isinstance(value, str) else None


def _chat_top_logprobs(choice) -> list[dict[str, float]] | None:
    if not (choice.logprobs and choice.logprobs.content):
        return None
    return [{t.token: t.logprob for t in step.top_logprobs or []} for step in choice.logprobs.content]
