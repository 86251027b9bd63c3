"""Choose the device and numeric precision, and record why.

bf16 autocast is used on CUDA when the GPU supports it. On a CPU it is used only where a
measured bf16 matmul beats fp32: CPUs with AMX or AVX512-BF16 run it faster, others (AVX2
only) run it tens of times slower, so a name on a spec sheet is not trusted.
"""
from __future__ import annotations

import contextlib
import time

import torch


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device; use device: auto or cpu")
    return requested


def matmul_gflops(dtype, n: int = 256, reps: int = 3) -> float:
    """The best of `reps` timed n x n CPU matmuls in `dtype`, in GFLOP/s (all of torch's threads)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def pick_precision(requested: str, device: str) -> tuple[str, dict]:
    """('bf16' | 'fp32', evidence) where evidence is what the choice rests on."""
    if requested != "auto":
        return requested, {"reason": "set in config"}
    if device == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16" if ok else "fp32"), {"reason": "cuda bf16 support" if ok else "cuda without bf16"}
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    choice = "bf16" if bf16 > 1.2 * fp32 else "fp32"
    return choice, {"reason": "measured 256x256 matmul", "fp32_gflops": round(fp32, 2), "bf16_gflops": round(bf16, 2)}


def autocast(device: str, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()
