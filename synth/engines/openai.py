"""An OpenAI-compatible server (`vllm serve`, TGI, llama.cpp server, the OpenAI API itself).

Standard library only: one POST per prompt (or conversation), `concurrency` at a time, so the
server's own batching does the rest. `complete` uses /completions (raw text: the pre-query
template reaches the model untouched); `chat` uses /chat/completions and the server's template.

The API key is read from the environment variable `api_key_env` at each request: it is never
an attribute, never in `info`, never in an error message.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .base import Completion, Engine, EngineInfo, Message, Sampling, register_engine

RETRY_STATUS = {408, 409, 429}  # and every 5xx


class ServerError(RuntimeError):
    pass


@register_engine("openai")
class OpenAIEngine(Engine):
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 600,  # a long response from a busy server can take minutes
        max_retries: int = 5,
        concurrency: int = 8,
        tokenizer: str | None = None,  # only for render_chat (e.g. deriving a pre-query template)
    ):
        if concurrency <= 0 or max_retries < 0:
            raise ValueError(f"need concurrency > 0 and max_retries >= 0, got {concurrency} and {max_retries}")
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key_env, self.timeout = api_key_env, timeout
        self.max_retries, self.concurrency = max_retries, concurrency
        if tokenizer:
            from transformers import AutoTokenizer

            from .. import models

            self.tokenizer = AutoTokenizer.from_pretrained(models.resolve(tokenizer))
        self.info = EngineInfo("openai", model, {"base_url": self.base_url, "api_key_env": api_key_env})
        self.stats = {"prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0, "calls": 0}

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.info.model!r}, base_url={self.base_url!r})"

    def _body(self, sampling: Sampling, index: int) -> dict:
        body = {
            "model": self.info.model, "n": sampling.n, "temperature": sampling.temperature,
            "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            # Offset per request as the vllm engine does: identical Magpie prompts with one seed
            # would all sample the same text.
            body["seed"] = sampling.seed + index
        # vLLM's server extensions; sent only when set, so that strict servers (OpenAI) accept
        # the plain requests. skip_special_tokens is left to the server's default (True).
        if sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty
        if sampling.stop_token_ids:
            body["stop_token_ids"] = list(sampling.stop_token_ids)
        return body

    def _post(self, path: str, body: dict) -> dict:
        url = f"{self.base_url}{path}"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                message = _server_message(e, key)
                if e.code < 500 and e.code not in RETRY_STATUS:
                    raise ServerError(f"{url}: HTTP {e.code}: {message}") from None
                failure = f"HTTP {e.code}: {message}"
                retry_after = e.headers.get("Retry-After")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                failure = f"{e.__class__.__name__}: {getattr(e, 'reason', e)}"
            if attempt < self.max_retries:
                # Exponential backoff (1, 2, 4, ... s, at most 60), or what the server asks for.
                wait = float(retry_after) if retry_after and retry_after.isdigit() else min(2 ** attempt, 60)
                time.sleep(wait)
        raise ServerError(f"{url}: gave up after {self.max_retries + 1} attempts; last: {failure}")

    def _run(self, path: str, bodies: list[dict], n: int, text_of, top_of=lambda c: None) -> list[list[Completion]]:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(self.concurrency) as pool:
            responses = list(pool.map(lambda b: self._post(path, b), bodies))
        result = []
        for resp in responses:
            choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != n:
                raise ServerError(f"{self.base_url}{path}: asked for n={n} choices, got {len(choices)}")
            usage = resp.get("usage") or {}
            # The API reports generated tokens per request, not per choice: with n > 1 each
            # choice gets an even share (the total, which stats records, stays exact).
            total = usage.get("completion_tokens", 0)
            shares = [total // len(choices) + (k < total % len(choices)) for k in range(len(choices))]
            result.append([
                Completion(text_of(c), share, "length" if c.get("finish_reason") == "length" else "stop", top_of(c))
                for c, share in zip(choices, shares)
            ])
            self.stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
            self.stats["generated_tokens"] += total
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["calls"] += 1
        return result

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
        bodies = [{**self._body(sampling, i), "prompt": p} for i, p in enumerate(prompts)]
        if sampling.logprobs:  # the legacy completions API: an int, answered as [{token: logprob}]
            for b in bodies:
                b["logprobs"] = sampling.logprobs
        return self._run("/completions", bodies, sampling.n, lambda c: c.get("text") or "",
                         lambda c: (c.get("logprobs") or {}).get("top_logprobs"))

    def render_chat(self, conversation: Sequence[Message], add_generation_prompt: bool = True) -> str:
        if self.tokenizer is None:
            raise ValueError(
                f"the openai engine for {self.info.model} has no local tokenizer to render a chat "
                "template; pass tokenizer=<hub id or path of the served model>"
            )
        return super().render_chat(conversation, add_generation_prompt)

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[list[Completion]]:
        # The server applies its model's chat template: no local tokenizer needed.
        bodies = [{**self._body(sampling, i), "messages": list(c)} for i, c in enumerate(conversations)]
        if sampling.logprobs:  # chat API: a flag plus top_logprobs (OpenAI allows at most 20)
            for b in bodies:
                b.update(logprobs=True, top_logprobs=sampling.logprobs)
        return self._run("/chat/completions", bodies, sampling.n,
                         lambda c: (c.get("message") or {}).get("content") or "", _chat_top_logprobs)


def _chat_top_logprobs(choice: dict) -> list[dict[str, float]] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    return [{t["token"]: t["logprob"] for t in step.get("top_logprobs") or []} for step in content]


def _server_message(error: urllib.error.HTTPError, key: str | None) -> str:
    """The server's own error message, on one line, with the key masked should it echo it."""
    raw = error.read().decode(errors="replace")
    try:
        err = json.loads(raw).get("error", raw)
        message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        message = raw or error.reason
    message = " ".join(str(message).split())[:500]
    return message.replace(key, "***") if key else message
