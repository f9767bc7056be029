"""A small, real OpenAI-compatible HTTP server backed by one of our engines, for tests.

    with serve(get_engine("hf", model="embedded:smollm2-135m-instruct"), api_key="k") as url:
        ...  # url == "http://127.0.0.1:<port>/v1"

Implements POST /v1/completions, POST /v1/chat/completions (rendered with the engine's chat
template, as vLLM's server does) and GET /v1/models, with vLLM's extra sampling fields.
`seen` collects the path of every request, `usage` (when given) the token counts of every answer; `faults` (status, headers) answer the next POSTs
before the engine does, to show what a client does with a rate limit or a failing server. `models`,
when given, are the only model names served: a request for another gets OpenAI's 404
`model_not_found` (what the API answers for a retired model); otherwise any name is answered.
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.engines.base import Engine, Sampling, encode_prompt


def _sampling(body: dict) -> Sampling:
    stop = body.get("stop") or ()
    return Sampling(
        temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
        max_tokens=body.get("max_tokens") or 16,  # the OpenAI API's default
        n=body.get("n", 1), stop=(stop,) if isinstance(stop, str) else stop,
        stop_token_ids=body.get("stop_token_ids") or (), seed=body.get("seed"),
        repetition_penalty=body.get("repetition_penalty", 1.0),
        # chat: logprobs=true + top_logprobs=k; completions: logprobs=k (the two OpenAI spellings)
        logprobs=body.get("top_logprobs") if body.get("logprobs") is True else body.get("logprobs") or None,
    )


def _handler(engine: Engine, api_key: str | None, lock: threading.Lock, seen: list, faults: list,
             models: tuple[str, ...] | None = None, usage: list | None = None):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None):
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, headers: dict | None = None):
            error = {"message": message, "type": "invalid_request_error", "code": status}
            self._send(status, {"error": error}, headers)

        def _authorized(self) -> bool:
            if api_key is None or self.headers.get("Authorization") == f"Bearer {api_key}":
                return True
            self._error(401, "Incorrect API key provided.")
            return False

        def do_GET(self):
            seen.append(self.path)
            if not self._authorized():
                return
            if self.path.rstrip("/") != "/v1/models":
                return self._error(404, f"no route {self.path}")
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"}
                                                        for m in models or (engine.info.model,)]})

        def do_POST(self):
            seen.append(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))  # read even when refused
            if faults:
                status, headers = faults.pop(0)
                return self._error(status, f"injected fault {status}", headers)
            if not self._authorized():
                return
            route = self.path.rstrip("/")
            if route not in ("/v1/completions", "/v1/chat/completions"):
                return self._error(404, f"no route {self.path}")
            try:
                body = json.loads(raw)
                if models is not None and body.get("model") not in models:  # OpenAI's words and code
                    error = {"message": f"The model `{body.get('model')}` does not exist or you do not have access "
                             "to it.", "type": "invalid_request_error", "param": None, "code": "model_not_found"}
                    return self._send(404, {"error": error})
                sampling = _sampling(body)
                if route == "/v1/completions":
                    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                else:
                    prompts = [engine.render_chat(body["messages"])]
            except (ValueError, KeyError, TypeError) as e:
                return self._error(400, f"{e.__class__.__name__}: {e}")
            with lock:  # our engines are not thread-safe; the HTTP server is
                results = engine.complete(prompts, sampling)
            choices = []
            for i, row in enumerate(results):  # OpenAI numbers choices prompt-major
                for j, c in enumerate(row):
                    choice = {"index": i * sampling.n + j, "finish_reason": c.finish_reason}
                    if route == "/v1/completions":
                        choice["text"] = c.text
                        if c.top_logprobs is not None:
                            choice["logprobs"] = {"top_logprobs": c.top_logprobs}
                    else:
                        choice["message"] = {"role": "assistant", "content": c.text}
                        if c.top_logprobs is not None:  # chat's shape: per token, a list of {token, logprob}
                            choice["logprobs"] = {"content": [
                                {"top_logprobs": [{"token": t, "logprob": v} for t, v in step.items()]}
                                for step in c.top_logprobs]}
                    choices.append(choice)
            prompt_tokens = sum(len(encode_prompt(engine.tokenizer, p)) for p in prompts)
            completion_tokens = sum(c.num_tokens for row in results for c in row)
            if usage is not None:
                usage.append({"path": self.path, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
            self._send(200, {
                "object": "text_completion" if route == "/v1/completions" else "chat.completion",
                "model": body.get("model", engine.info.model), "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            })

    return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that gives up on its other requests after the first failure (the openai engine does) closes
        # sockets this server is still answering: a normal end for a request, not a traceback on the test's stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(engine: Engine, api_key: str | None = None, seen: list | None = None, faults: list | None = None,
          models: tuple[str, ...] | None = None, usage: list | None = None):
    """Serve `engine` on 127.0.0.1 (a free port) in a background thread; yields the base URL."""
    seen, faults = [] if seen is None else seen, [] if faults is None else faults
    server = _Server(("127.0.0.1", 0), _handler(engine, api_key, threading.Lock(), seen, faults,
                                                 None if models is None else tuple(models), usage))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
