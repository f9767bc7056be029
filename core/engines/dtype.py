"""The dtype policy of every engine and of training: what `dtype: auto` means on this device."""
from __future__ import annotations


def cpu_computes_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX). Elsewhere oneDNN emulates
    it: on a Cascade Lake core without either, a bf16 matmul ran 46 GFLOP/s against 176 in fp32
    and SmolLM2's prefill took 3x longer; on the AVX512-BF16 cores it ran 416 against 177."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private but stable
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def dtype_name(dtype: str, device: str) -> str:
    """`auto` -> the fastest dtype that keeps the weights' precision class: bf16 (the paper's, and the
    released weights') on a GPU that has it and on a CPU that computes it natively, else float32."""
    if dtype != "auto":
        return dtype
    import torch

    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_computes_bf16() else "float32"
