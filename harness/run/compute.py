"""What each stage and each run cost, as measured by the harness.

Device-hours = (training + evaluation wall seconds) x devices / 3600. On CUDA they are GPU-hours
with devices = 1 (a run holds one GPU); on a CPU they are CPU-hours with devices = the torch
threads the run used (torch.get_num_threads()), never reported as GPU-hours. A run whose training
is sharded over W workers (harness.run.sharded) holds 1 + W times that for its whole duration:
its own process's (which evaluates) and each worker's. Peak memory is the
CUDA allocator's peak of the stage on a GPU, the process's peak resident set so far on a CPU.
Run totals cover the trained stages; stage 0 (the base-model evaluation) is shared by every method
of a protocol and keeps its own `seconds`.
"""
from __future__ import annotations

import resource

import torch


def devices(device: str) -> tuple[str, int]:
    """(device name, how many of it the run uses)."""
    if device == "cuda":
        return torch.cuda.get_device_name(), 1
    return "cpu", torch.get_num_threads()


def start_stage(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _hours(device: str, seconds: float, count: int) -> dict:
    hours = seconds * count / 3600
    return {"gpu_hours": hours if device == "cuda" else None, "cpu_hours": None if device == "cuda" else hours}


def stage(device: str, train_seconds: float, eval_seconds: float, train_tokens: int, workers: int = 0) -> dict:
    """Compute record of one trained stage; call right after its evaluation. workers: the processes its
    training was sharded over (0: trained in this process)."""
    name, count = devices(device)
    count *= 1 + workers
    return {"device": device, "device_name": name, "device_count": count, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, **_hours(device, train_seconds + eval_seconds, count),
            "peak_memory_mb": peak_memory_mb(device), "train_tokens": train_tokens,
            "tokens_per_second": train_tokens / train_seconds if train_seconds else None}


def run(stages: list[dict], trainable_params: int, total_params: int) -> dict:
    """Run totals over the stages that have a compute record."""
    records = [s["compute"] for s in stages if "compute" in s]
    if not records:
        return {}
    device, name, count = records[-1]["device"], records[-1]["device_name"], records[-1]["device_count"]
    train = sum(r["train_seconds"] for r in records)
    evaluation = sum(r["eval_seconds"] for r in records)
    tokens = sum(r["train_tokens"] for r in records)
    hours = {k: sum(r[k] for r in records) if all(r[k] is not None for r in records) else None
             for k in ("gpu_hours", "cpu_hours")}
    return {"device": device, "device_name": name, "device_count": count, "stages": len(records),
            "train_seconds": train, "eval_seconds": evaluation, **hours,
            "peak_memory_mb": max(r["peak_memory_mb"] for r in records), "train_tokens": tokens,
            "tokens_per_second": tokens / train if train else None,
            "trainable_params": trainable_params, "trainable_share": trainable_params / total_params}


def training_flops_per_token(model, seq: int) -> float:
    """Training FLOPs per token, 6N + 12·L·d·seq (Chowdhery et al. 2022, PaLM, appendix B), with N the
    weights of every matmul (the tied LM head once; the embedding lookup is not a matmul): the numerator
    of model FLOPs utilisation."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in name)
    if cfg.tie_word_embeddings:
        n += model.get_input_embeddings().weight.numel()
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
