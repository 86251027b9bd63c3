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
        from ..core.errors import ConfigError

        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device; use device: auto or cpu")
    return requested


def matmul_gflops(dtypes, n: int = 512, reps: int = 7) -> list[float]:
    """The best of `reps` timed n x n CPU matmuls in each of `dtypes`, in GFLOP/s (all of torch's threads). The
    dtypes take turns, rep by rep, so a burst of load from another process slows all of them alike instead of
    deciding the comparison (a 3-rep measurement once chose fp32 on an AMX CPU while another run trained)."""
    pairs = [(torch.randn(n, n).to(d), torch.randn(n, n).to(d)) for d in dtypes]
    for a, b in pairs:
        a @ b
    best = [float("inf")] * len(dtypes)
    for _ in range(reps):
        for i, (a, b) in enumerate(pairs):
            t = time.perf_counter()
            a @ b
            best[i] = min(best[i], time.perf_counter() - t)
    return [2 * n**3 / t / 1e9 for t in best]


def pick_precision(requested: str, device: str) -> tuple[str, dict]:
    """('bf16' | 'fp32', evidence) where evidence is what the choice rests on."""
    if requested != "auto":
        return requested, {"reason": "set in config"}
    if device == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16" if ok else "fp32"), {"reason": "cuda bf16 support" if ok else "cuda without bf16"}
    fp32, bf16 = matmul_gflops([torch.float32, torch.bfloat16])
    choice = "bf16" if bf16 > 1.2 * fp32 else "fp32"
    return choice, {"reason": "measured 512x512 matmul, interleaved, best of 7", "fp32_gflops": round(fp32, 2),
                    "bf16_gflops": round(bf16, 2)}


def autocast(device: str, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()
