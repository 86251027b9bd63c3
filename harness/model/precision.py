"""Choose the device and numeric precision, and record why.

bf16 autocast is used on CUDA when the GPU computes bf16 natively (compute capability 8 or later; torch's own
check also counts a GPU that emulates it). On a CPU it is used only where a measured bf16 matmul beats fp32:
CPUs with AMX or AVX512-BF16 run it faster, others (AVX2 only) run it tens of times slower, so a name on a spec
sheet is not trusted.

Under bf16 the weights are stored by role (`place_weights`): the base model's frozen linear layers in bf16,
every trainable parameter in fp32 (the master weights the optimiser updates).
"""
from __future__ import annotations

import contextlib
import time
import weakref

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
    if device == "cuda":  # native bf16 only: torch counts a GPU that emulates it (a T4, a V100) by default
        ok = torch.cuda.is_bf16_supported(including_emulation=False)
        capability = ".".join(map(str, torch.cuda.get_device_capability()))
        return ("bf16" if ok else "fp32"), {"reason": "cuda bf16 support" if ok else "cuda without native bf16",
                                            "compute_capability": capability}
    fp32, bf16 = matmul_gflops([torch.float32, torch.bfloat16])
    choice = "bf16" if bf16 > 1.2 * fp32 else "fp32"
    return choice, {"reason": "measured 512x512 matmul, interleaved, best of 7", "fp32_gflops": round(fp32, 2),
                    "bf16_gflops": round(bf16, 2)}


def autocast(device: str, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def linear_layers(model) -> weakref.WeakSet:
    """The model's linear layers as loaded: the ones `place_weights` may store in bf16 (a method's own modules,
    added by its `prepare`, are not among them)."""
    return weakref.WeakSet(m for m in model.modules() if isinstance(m, torch.nn.Linear))


def place_weights(model, precision: str, base_linears: weakref.WeakSet, loading: bool = False) -> None:
    """Store each parameter in the dtype its role needs under `precision`, in place (the Parameter objects stay,
    so a method's references to them hold).

    bf16: the weight and bias of each of the base model's linear layers are stored in bf16 when the model is
    loaded (`loading`: before it goes to the device, so a model whose fp32 weights would not fit there can),
    and stay so while frozen; every other floating parameter and buffer is then fp32 (a checkpoint read in the
    bf16 it stores, `models.load(stored_dtype=True)`, gives the same model as one read in fp32). Autocast
    computes a linear layer in bf16 whatever its weights' dtype, so the model computes bit-for-bit the same
    function as with fp32 weights, with half their memory. A parameter that another module shares (a tied
    output embedding: the embedding lookup is not autocast), norms and embeddings are fp32. After `prepare` every
    trainable parameter is fp32: the master weights the optimiser updates, made from the bf16 copy exactly (a
    checkpoint stored in bf16, as hub models usually are, loses nothing; an fp32 one starts its training from its
    bf16 rounding, the weights autocast computed with).
    fp32: nothing changes."""
    if precision != "bf16":
        return
    shared = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for m in model.modules():
            for p in m.parameters(recurse=False):
                if not p.is_floating_point():  # a quantized base (QLoRA's NF4) keeps its storage
                    continue
                if p.requires_grad and not loading:
                    p.data = p.data.float()
                elif m in base_linears and id(p) not in shared:
                    p.data = p.data.to(torch.bfloat16)
                elif loading:
                    p.data = p.data.float()
        if loading:
            for b in model.buffers():
                if b.is_floating_point():
                    b.data = b.data.float()


def weight_dtypes(model) -> dict[str, int]:
    """Parameter elements by storage dtype (a tied weight once): what `place_weights` left, for the result."""
    counts: dict[str, int] = {}
    for p in model.parameters():
        name = str(p.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + p.numel()
    return dict(sorted(counts.items()))
