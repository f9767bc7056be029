"""transformers `generate`, batched with left padding. CPU (the tiny profile) or GPU."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from .. import steplog
from .base import (
    Completion,
    Engine,
    EngineInfo,
    Sampling,
    Samplings,
    cut_at_stop,
    encode_prompt,
    per_prompt,
    sample_seed,
    seeded_picks,
)
from .dtype import dtype_name


def torch_dtype(dtype: str, device: str):
    import torch

    return getattr(torch, dtype_name(dtype, device))


def torch_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class HFEngine(Engine):
    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 32,
        revision: str | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        tokenizer=None,
        max_model_len: int | None = None,  # default: the model's max_position_embeddings
        template_kwargs: dict | None = None,  # the role's chat template variables (Engine.template_kwargs)
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .. import models

        built = time.perf_counter()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        path = models.resolve(model)
        device = torch_device(device)
        kw = dict(revision=revision, trust_remote_code=trust_remote_code)
        try:
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, **kw)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype(dtype, device), attn_implementation=attn_implementation, **kw
            ).to(device).eval()
        except OSError as e:
            raise FileNotFoundError(
                f"cannot load model {model!r}: {e.__class__.__name__}: {str(e).splitlines()[0]} "
                "(give a local path, a hub id reachable from here, or embedded:smollm2-135m-instruct)"
            ) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.device, self.batch_size, self.template_kwargs = device, batch_size, template_kwargs
        self.max_model_len = max_model_len or getattr(self.model.config, "max_position_embeddings", None)
        self.info = EngineInfo("hf", model, {"path": path, "dtype": str(self.model.dtype), "device": device,
                                             "max_model_len": self.max_model_len})
        self.stats = {"prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0, "calls": 0, "too_long": 0}
        self._lock = threading.Lock()
        steplog.fixed("hf engine", time.perf_counter() - built)

    def complete(self, prompts: Sequence[str], sampling: Samplings) -> list[list[Completion]]:
        with self._lock:  # shards in flight (core.shards.run) take turns: generate batches one call at a time
            return self._complete(prompts, sampling)

    def _complete(self, prompts: Sequence[str], sampling: Samplings) -> list[list[Completion]]:
        t0 = time.perf_counter()
        samplings = per_prompt(sampling, len(prompts))
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        out: list[list[Completion] | None] = [None] * len(prompts)
        # One batched pass per group of samplings that differ only in what a row carries itself (temperature,
        # top_p, seed, n: RowSampler samples each row from its own stream), in order of first use: a Table 7 mix
        # or prompts seeded one by one share batches, and the grouping changes no record.
        groups: dict[Sampling, list[int]] = {}
        for i in self.sendable(encoded, samplings, out):
            groups.setdefault(samplings[i].replace(seed=None, temperature=0.0, top_p=1.0, top_k=0, n=1), []).append(i)
        for s, idx in groups.items():
            for i, row in zip(idx, self._generate([encoded[i] for i in idx], s, [samplings[i] for i in idx])):
                out[i] = row
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["calls"] += 1
        return out  # type: ignore[return-value]

    def _generate(self, encoded: list[list[int]], sampling: Sampling, per: list[Sampling]) -> list[list[Completion]]:
        """`sampling`: what the rows share (lengths, stops, penalty); `per`: each prompt's own sampling."""
        import torch
        from transformers import LogitsProcessorList

        # n samples of a prompt = n rows (as the reference's hf path). Rows are batched in order
        # of prompt length so that left padding stays small.
        rows = [(i, j) for i in range(len(encoded)) for j in range(per[i].n)]
        rows.sort(key=lambda r: len(encoded[r[0]]))
        out: list[list[Completion | None]] = [[None] * s.n for s in per]
        # As vLLM: the model's own EOS always ends a sequence, plus the caller's stop ids.
        eos = self.model.generation_config.eos_token_id
        eos_ids = sorted(set([eos] if isinstance(eos, int) else eos or []) | set(sampling.stop_token_ids))
        stop_texts = list(sampling.stop) + [self.tokenizer.convert_ids_to_tokens(i) for i in eos_ids]
        gen_kw = dict(
            max_new_tokens=sampling.max_tokens,
            eos_token_id=eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            repetition_penalty=sampling.repetition_penalty if sampling.repetition_penalty != 1.0 else None,
        )
        # Greedy; where a row samples, greedy over RowSampler's one-token distributions.
        sampled = any(s.temperature > 0 for s in per)
        gen_kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            gen_kw.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.logprobs:
            gen_kw.update(output_logits=True, return_dict_in_generate=True)
        stop_or_pad = set(eos_ids)
        pairs = []  # (prompt, generated) tokens of each row, for the step log
        for start in range(0, len(rows), self.batch_size):
            t0 = time.perf_counter()
            batch = rows[start:start + self.batch_size]
            ids = [encoded[i] for i, _ in batch]
            width = max(len(x) for x in ids)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
            extra = {}
            if sampled:
                extra["logits_processor"] = LogitsProcessorList([RowSampler(
                    [None if per[i].seed is None else sample_seed(per[i].seed, j) for i, j in batch],
                    [per[i].temperature for i, _ in batch], [per[i].top_p for i, _ in batch],
                    [per[i].top_k for i, _ in batch])])
            with torch.inference_mode():
                gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **gen_kw, **extra)
            logits = None
            if sampling.logprobs:
                # Raw logits, before any processor: the model's own distribution, as vLLM reports it.
                logits, gen = torch.stack(gen.logits, 1).float().log_softmax(-1), gen.sequences
            gen = gen[:, width:].tolist()
            steplog.step(self, "hf", self.batch_size, len(batch), len(batch) * width, time.perf_counter() - t0,
                         steps=len(gen[0]))
            self.stats["prompt_tokens"] += sum(len(x) for x in ids)
            for r, ((i, j), toks) in enumerate(zip(batch, gen)):
                # A finished row is padded; its length is up to and including its first stop id.
                n_tok = next((k + 1 for k, t in enumerate(toks) if t in stop_or_pad), len(toks))
                raw = self.tokenizer.decode(toks[:n_tok], skip_special_tokens=False)
                text, stopped = cut_at_stop(raw, stop_texts)
                finished = stopped or n_tok < sampling.max_tokens
                top = None if logits is None else [self._top(logits[r, k], sampling.logprobs) for k in range(n_tok)]
                out[i][j] = Completion(text, n_tok, "stop" if finished else "length", top)
                self.stats["generated_tokens"] += n_tok
                pairs.append((len(ids[r]), n_tok))
        steplog.requests(self, pairs)
        return out  # type: ignore[return-value]

    def _top(self, logprobs, k: int) -> dict[str, float]:
        values, ids = logprobs.topk(k)
        out: dict[str, float] = {}
        for v, t in zip(values.tolist(), ids.tolist()):
            out.setdefault(self.tokenizer.decode([t]), v)  # two ids may decode alike: keep the likelier
        return out

    def close(self) -> None:
        import gc

        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _nucleus(probs, top_p, k: int = 256):
    """`probs` with every token outside each row's nucleus zeroed: the smallest set of likeliest tokens whose mass
    reaches top_p (a token is kept while the mass before it is below top_p). Rows whose nucleus lies in their k
    likeliest tokens (almost all: a model's top 256 hold 0.99 of its mass) are found by topk; only the others sort
    the whole vocabulary (2 ms a row here, against 0.3)."""
    vals, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)  # sorted, likeliest first
    out = probs.new_zeros(probs.shape).scatter(-1, idx, vals.masked_fill(vals.cumsum(-1) - vals >= top_p, 0.0))
    wide = (vals.sum(-1, keepdim=True) < top_p).squeeze(-1)
    if wide.any():
        sorted_p, order = probs[wide].sort(-1, descending=True)
        out[wide] = probs[wide].scatter(-1, order, sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p[wide],
                                                                        0.0))
    return out


class RowSampler:
    """A logits processor that samples each row of a batch with its own temperature, top_p and seeded generator, as
    vLLM treats each request: transformers' sampling draws every row from one global generator with one setting, so
    a row's stream would depend on its batch and its place in it. vLLM's semantics (top_p: the smallest set of
    likeliest tokens whose mass reaches it; temperature 0: greedy); a row's pick is the inverse of its CDF at one
    uniform draw of its generator, and comes back as a one-token distribution, which greedy decoding then takes. A
    row without a seed draws from the global generator."""

    def __init__(self, seeds: list[int | None], temperatures: list[float], top_ps: list[float],
                 top_ks: list[int] | None = None):
        self.seeds, self.temperatures, self.top_ps = seeds, temperatures, top_ps
        self.top_ks = top_ks or [0] * len(seeds)  # vLLM's order: the k likeliest first, then the nucleus among them
        self.generators = None

    def __call__(self, input_ids, scores):
        import torch

        if self.generators is None:  # on the logits' device, made at the first step
            self.generators = [None if s is None else torch.Generator(scores.device).manual_seed(s) for s in self.seeds]
        temps = torch.tensor(self.temperatures, device=scores.device)
        logits = scores.float() / temps.clamp_min(1e-6)[:, None]
        rows = [r for r, t in enumerate(self.temperatures) if t > 0]  # greedy rows need no distribution
        for r in rows:
            if 0 < self.top_ks[r] < logits.shape[-1]:
                logits[r] = logits[r].masked_fill(logits[r] < logits[r].topk(self.top_ks[r]).values[-1], -float("inf"))
        probs = logits.softmax(-1)
        nucleus = [r for r in rows if self.top_ps[r] < 1]
        if nucleus:  # only where a row asks for a nucleus
            probs[nucleus] = _nucleus(probs[nucleus], torch.tensor([self.top_ps[r] for r in nucleus],
                                                                   device=scores.device)[:, None])
        picks = scores.argmax(-1)
        if rows:
            # One uniform draw per row from its own generator, then the inverse of the row's CDF, for all rows at once
            # (a multinomial per row cost 16 ms a step on 16 rows here: a third of a sampled stage's time; this 0.5)
            picks[rows] = seeded_picks(probs[rows], [self.generators[r] for r in rows])
        return torch.full_like(scores, -float("inf")).scatter(-1, picks[:, None], 0.0)
