"""Offline vLLM (`vllm.LLM`), the paper's engine: one GPU per 8B model, bf16, prefix caching.

vllm is an optional extra and is imported inside the constructor, so this module imports
anywhere; building the engine without vllm says what to install.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

from .base import Completion, Engine, EngineInfo, Sampling, encode_prompt, register_engine

INSTALL_HINT = "the vllm engine needs the GPU extra: pip install -e '.[gpu]' (vllm); on CPU use engine: hf"


@register_engine("vllm")
class VLLMEngine(Engine):
    def __init__(
        self,
        model: str,
        dtype: str = "bfloat16",  # the paper's models are released in bf16
        tensor_parallel_size: int = 1,
        # Magpie sends the same pre-query template over and over: its KV cache is computed once.
        enable_prefix_caching: bool = True,
        max_model_len: int = 4096,  # template + instruction + response fit well inside this
        gpu_memory_utilization: float = 0.9,  # vLLM's default
        seed: int = 0,
        trust_remote_code: bool = False,
        **llm_kwargs,  # anything else vllm.LLM takes (swap_space, enforce_eager, revision, ...)
    ):
        try:
            import vllm
        except ImportError:
            raise ImportError(INSTALL_HINT) from None

        from .. import models

        path = models.resolve(model)
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=path, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization, seed=seed,
            trust_remote_code=trust_remote_code, **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.info = EngineInfo("vllm", model, {
            "path": path, "dtype": dtype, "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len, "vllm": vllm.__version__,
        })
        self.stats = {"prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0, "calls": 0}

    def _params(self, sampling: Sampling, index: int):
        return self._vllm.SamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, stop=list(sampling.stop),
            stop_token_ids=list(sampling.stop_token_ids),
            # A per-request seed seeds each request alike: Magpie's prompts are all the same
            # template, so one seed for all would give N identical instructions. Offset by index.
            seed=None if sampling.seed is None else sampling.seed + index,
            repetition_penalty=sampling.repetition_penalty, skip_special_tokens=True,
            logprobs=sampling.logprobs,
        )

    def complete(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
        t0 = time.perf_counter()
        # Token ids, not text: given text, vLLM tokenizes with special tokens and would put a
        # second BOS in front of Llama-3's `<|begin_of_text|>` template (see encode_prompt).
        inputs = [{"prompt_token_ids": encode_prompt(self.tokenizer, p)} for p in prompts]
        params = [self._params(sampling, i) for i in range(len(prompts))]
        outputs = self.llm.generate(inputs, params, use_tqdm=len(prompts) > 1)
        result = []
        for out in outputs:  # vLLM returns outputs in the order of the inputs
            self.stats["prompt_tokens"] += len(out.prompt_token_ids)
            row = []
            for o in out.outputs:
                # vLLM says "stop" for EOS, stop ids and stop strings; "length" at max_tokens.
                reason = "length" if o.finish_reason == "length" else "stop"
                top = None
                if sampling.logprobs and o.logprobs is not None:  # ascending: the likelier wins a clash
                    top = [{lp.decoded_token: lp.logprob for lp in sorted(step.values(), key=lambda x: x.logprob)}
                           for step in o.logprobs]
                row.append(Completion(o.text, len(o.token_ids), reason, top))
                self.stats["generated_tokens"] += len(o.token_ids)
            result.append(row)
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["calls"] += 1
        return result

    def close(self) -> None:
        import contextlib
        import gc

        import torch

        # vLLM keeps the model in module-level parallel state; without tearing that down a
        # second LLM in the same process (e.g. the response model after the instruction
        # model) finds the GPU memory still held.
        del self.llm
        with contextlib.suppress(ImportError, AssertionError, RuntimeError):
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
